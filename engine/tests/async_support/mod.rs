//! Helpers of the async tests: a server and a client `AsyncConn` joined in memory or
//! over loopback TCP, and a stream that hands its bytes out in small random pieces.

#![allow(dead_code)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ringcast::client::Proxy;
use ringcast::{AsyncConn, Dialer, Upgrader};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// How long any one step of a test may take before it fails (a hang guard).
pub const WAIT: Duration = Duration::from_secs(20);

/// A dialer for tests: no proxy from the environment, a generous handshake timeout.
pub fn dialer() -> Dialer {
    Dialer {
        proxy: Proxy::None,
        handshake_timeout: Some(WAIT),
        ..Dialer::default()
    }
}

/// Run `future` with the hang guard.
pub async fn guard<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("the step finished within the hang guard")
}

/// A server and a client connection over an in-memory pipe of `capacity` bytes each way,
/// upgraded and dialed with the settings given; the server's stream is wrapped by `wrap`.
pub async fn pair_with<T, F>(
    upgrader: &Upgrader,
    dialer: &Dialer,
    capacity: usize,
    wrap: F,
) -> (AsyncConn<T>, AsyncConn<DuplexStream>)
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(DuplexStream) -> T,
{
    let (server_io, client_io) = tokio::io::duplex(capacity);
    let (server, client) = guard(async {
        tokio::join!(
            upgrader.upgrade_async(wrap(server_io), &[]),
            dialer.client_handshake_async(client_io, "ws://test/chat", &[]),
        )
    })
    .await;
    (
        server.expect("server upgrade"),
        client.expect("client handshake").0,
    )
}

/// A server and a client over an in-memory pipe, with these settings.
pub async fn pair(
    upgrader: &Upgrader,
    dialer: &Dialer,
) -> (AsyncConn<DuplexStream>, AsyncConn<DuplexStream>) {
    pair_with(upgrader, dialer, 64 * 1024, |io| io).await
}

/// A stream that gives out what it reads in pieces of 1 to `max` bytes and, one poll in
/// `pending_one_in`, says "pending" first (waking itself): every way a frame can be cut.
pub struct Trickle<S> {
    inner: S,
    max: usize,
    pending_one_in: u32,
    rng: fastrand::Rng,
}

impl<S> Trickle<S> {
    pub fn new(inner: S, max: usize, pending_one_in: u32, seed: u64) -> Trickle<S> {
        Trickle {
            inner,
            max,
            pending_one_in,
            rng: fastrand::Rng::with_seed(seed),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rng.u32(0..this.pending_one_in) == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let take = this.rng.usize(1..=this.max).min(buf.remaining());
        let mut small = ReadBuf::new(buf.initialize_unfilled_to(take));
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut small))?;
        let n = small.filled().len();
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A future ready on its `n + 1`-th poll, waking itself meanwhile: the other branch of a
/// `select!` that cancels a read after a given number of polls.
pub struct ReadyAfter(pub u32);

impl std::future::Future for ReadyAfter {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.0 == 0 {
            return Poll::Ready(());
        }
        this.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
