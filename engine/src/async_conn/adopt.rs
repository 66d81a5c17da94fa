//! Handing a connection a hyper or axum route upgraded to the engine (features `hyper`
//! and `engine`): [`HyperUpgrade::adopt`], and for axum's `serve`, [`AdoptableSocket`].
//!
//! hyper writes the 101 and then gives up the connection as an `Upgraded`. Two ways lead
//! from there to the TCP socket the engine needs:
//!
//! - a connection hyper served as `TokioIo<TcpStream>` (an own accept loop with hyper's
//!   `http1::Builder`): `Upgraded::downcast` gives the socket and the bytes hyper read
//!   past the request;
//! - axum's `serve` wraps the stream in a type of hyper-util's that cannot be named, so
//!   the downcast fails. There, [`AdoptableSocket`] (the connect info of
//!   `into_make_service_with_connect_info`) keeps a duplicate of the socket's
//!   descriptor from the moment the connection is accepted; after the 101 the bytes
//!   already read past the request are taken from the `Upgraded` until it has no more at
//!   once, it is dropped, and the duplicate goes to the engine.
//!
//! TLS connections cannot be handed over: their session lives in the tokio server's TLS
//! stack. A service that wants both terminates TLS in the engine
//! ([`ServerConfig::tls`](crate::server::ServerConfig::tls)) or in front of it.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};

use super::hyper_upgrade::HyperUpgrade;
use crate::error::Error;
use crate::server::{Adoption, ServerHandle};

/// The most taken from an `Upgraded` before the engine reads the rest from the socket:
/// more than hyper's read buffer holds (400 KiB at most by default), so everything hyper
/// read past the request is taken. A client sending without pause is not read further.
const READ_PAST_MAX: usize = 1024 * 1024;

/// A connection's socket, kept from its accept so that a route can hand it to the
/// engine once upgraded: the connect info of an axum app served with
/// `into_make_service_with_connect_info::<AdoptableSocket>()`, which
/// [`WebSocketUpgrade`](super::WebSocketUpgrade) finds on its own. It holds a duplicate of
/// the descriptor (one more open file per connection while it lives) and the peer's
/// address.
///
/// ```no_run
/// use axum::Router;
/// use ringcast::async_conn::AdoptableSocket;
///
/// # async fn run(app: Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<AdoptableSocket>()).await
/// # }
/// # let _ = run;
/// ```
#[derive(Clone, Debug)]
pub struct AdoptableSocket {
    fd: Option<Arc<OwnedFd>>,
    remote_addr: SocketAddr,
}

impl AdoptableSocket {
    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// A duplicate of the socket for an adoption; `None` when the duplicate could not be
    /// made at accept (`EMFILE`).
    pub(crate) fn socket(&self) -> Option<Arc<OwnedFd>> {
        self.fd.clone()
    }
}

#[cfg(feature = "axum")]
impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for AdoptableSocket
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        AdoptableSocket {
            fd: stream.io().as_fd().try_clone_to_owned().ok().map(Arc::new),
            remote_addr: *stream.remote_addr(),
        }
    }
}

impl HyperUpgrade {
    /// Awaits hyper's hand-over of the connection, then hands it to `engine`
    /// ([`ServerHandle::adopt`]) with the request, the agreed subprotocol and compression
    /// and `tag` (given back by [`Socket::tag`](crate::server::Socket::tag)). The
    /// connection must be one hyper served as `TokioIo<tokio::net::TcpStream>`; for
    /// axum's `serve` use [`WebSocketUpgrade::hand_to_engine`](super::WebSocketUpgrade::hand_to_engine)
    /// with [`AdoptableSocket`]. Features `hyper` and `engine`.
    pub async fn adopt(self, engine: &ServerHandle, tag: u64) -> Result<(), Error> {
        self.adopt_with(engine, tag, None).await
    }

    /// [`adopt`](Self::adopt), with the duplicate of the socket kept at accept for when
    /// the downcast fails.
    pub(crate) async fn adopt_with(
        self,
        engine: &ServerHandle,
        tag: u64,
        kept: Option<Arc<OwnedFd>>,
    ) -> Result<(), Error> {
        let upgraded = self
            .on_upgrade
            .await
            .map_err(|err| Error::Io(io::Error::other(format!("hyper upgrade: {err}"))))?;
        let (socket, read_past) = take_socket(upgraded, kept).await?;
        let adoption = Adoption {
            read_past,
            subprotocol: self.config.subprotocol,
            compression: self.config.compression,
            tag,
            ..Adoption::new(socket, self.request)
        };
        engine.adopt(adoption)
    }
}

/// The socket under `upgraded` and the bytes read past the request.
async fn take_socket(
    upgraded: Upgraded,
    kept: Option<Arc<OwnedFd>>,
) -> Result<(TcpStream, Bytes), Error> {
    let upgraded = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => {
            let socket = parts.io.into_inner().into_std()?;
            return Ok((socket, parts.read_buf));
        }
        Err(upgraded) => upgraded,
    };
    let Some(kept) = kept else {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            "the upgraded connection is not a plain TCP stream the engine can adopt: serve \
             hyper connections as TokioIo<TcpStream>, or axum with \
             into_make_service_with_connect_info::<AdoptableSocket>() (TLS cannot be handed over)",
        )));
    };
    // A duplicate of the same socket: another owner of it may still hold one (an axum
    // connect info cloned into a request), so it is duplicated again, not unwrapped.
    let fd = kept.try_clone()?;
    let read_past = read_ready(TokioIo::new(upgraded)).await?;
    // The upgraded stream is dropped here: tokio deregisters and closes its descriptor;
    // the socket stays open through `fd`.
    Ok((TcpStream::from(fd), read_past))
}

/// Whatever `stream` gives at once (what hyper read past the request, then what the
/// socket already holds), up to [`READ_PAST_MAX`]; stops at the first read that would
/// wait. The bytes left in the socket are the engine's to read, in order.
async fn read_ready(mut stream: TokioIo<Upgraded>) -> io::Result<Bytes> {
    let mut taken = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while taken.len() < READ_PAST_MAX {
        let room = chunk.len().min(READ_PAST_MAX - taken.len());
        let n = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut chunk[..room]);
            match Pin::new(&mut stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(buf.filled().len()))),
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Ready(Ok(None)),
            }
        })
        .await?;
        match n {
            // End of stream: the engine will see it too.
            Some(0) | None => break,
            Some(n) => taken.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(taken.freeze())
}
