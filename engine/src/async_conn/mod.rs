//! [`AsyncConn`]: a WebSocket connection over any tokio `AsyncRead + AsyncWrite`
//! (feature `tokio`), with async upgrades and dials, and (features `hyper`, `axum`)
//! upgrades inside a hyper or axum server.
//!
//! The protocol work is the same as the blocking [`Conn`](crate::Conn)'s, not a copy of
//! it: the same sans-IO [`proto`](crate::proto) codec, and the blocking connection's own
//! read and write state (streaming decoder, handlers, read limit, compression, the error
//! that ends reads for good), driven by polls. The handshakes make the same decisions
//! through the same [`Upgrader`](crate::Upgrader) and [`Dialer`](crate::Dialer)
//! settings. See `docs/async.md` for a side-by-side table against tokio-tungstenite's
//! and axum's API.
//!
//! - Reads are cancellation-safe: a read future dropped at any point (the branch a
//!   `tokio::select!` did not take) loses nothing; the next read goes on from the same
//!   byte, and a message partly gathered is finished by the next `read_message`.
//! - A write queues whole frames before it waits: dropped, it leaves its message queued
//!   whole (it goes out with the next write or read) or not at all.
//! - The `Stream` yields text and binary messages and, last, a received close; pings
//!   and pongs go to the ping and pong handlers (the default ping handler answers with a
//!   pong).
//!   The `Sink` takes every kind of [`Message`].
//!
//! ```no_run
//! use futures_util::{SinkExt, StreamExt};
//! use ringcast::Upgrader;
//!
//! # async fn serve() -> Result<(), ringcast::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! let upgrader = Upgrader { enable_compression: true, ..Upgrader::default() };
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let upgrader = upgrader.clone();
//!     tokio::spawn(async move {
//!         let Ok(mut conn) = upgrader.upgrade_async(stream, &[]).await else { return };
//!         while let Some(Ok(message)) = conn.next().await {
//!             if message.is_data() && conn.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! # let _ = serve;
//! ```

#[macro_use]
mod macros;

mod accept;
#[cfg(all(feature = "hyper", feature = "engine"))]
mod adopt;
#[cfg(feature = "axum")]
mod axum_ws;
mod connect;
#[cfg(feature = "hyper")]
mod hyper_upgrade;
mod message;
mod read;
mod reader;
mod split;
mod timer;
mod write;
mod writer;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::ConnConfig;
use crate::error::{CloseError, Error};
use crate::proto::{CloseCode, MessageType, Role};

pub use accept::accept;
#[cfg(all(feature = "hyper", feature = "engine"))]
pub use adopt::AdoptableSocket;
#[cfg(feature = "axum")]
pub use axum_ws::WebSocketUpgrade;
pub use connect::{connect, AsyncClientStream};
#[cfg(feature = "hyper")]
pub use hyper_upgrade::{HyperUpgrade, Refused, UpgradedConn};
pub use message::{CloseFrame, Message};
pub use reader::AsyncMessageReader;
pub use split::{AsyncControlHandle, AsyncReadHalf, AsyncWriteHalf};
pub use writer::AsyncMessageWriter;

use read::{ReadCore, ReadSide};
use write::{WriteCore, WritePath};

/// A WebSocket connection over a tokio stream: the blocking `Conn` (gorilla/websocket's
/// `Conn`), async. Made by [`Upgrader::upgrade_async`](crate::Upgrader::upgrade_async)
/// (and its siblings), [`Dialer::dial_async`](crate::Dialer::dial_async) or
/// [`Dialer::client_handshake_async`](crate::Dialer::client_handshake_async).
///
/// The blocking `Conn`'s methods (`read_message`, `next_reader`, `write_message`,
/// `next_writer`, JSON, prepared messages, handlers, deadlines, read limit) as `async fn`s,
/// plus a `futures` `Stream` of [`Message`]s and a `Sink` of them. [`split`](Self::split)
/// gives owned halves for two tasks, whatever the stream (plain TCP, TLS, an upgraded
/// hyper connection).
pub struct AsyncConn<S> {
    stream: S,
    read: ReadSide,
    write: WriteCore,
    subprotocol: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncConn<S> {
    /// Wrap a stream on which the opening handshake is done; `leftover` holds the bytes
    /// read past the handshake.
    pub(crate) fn new(stream: S, role: Role, config: ConnConfig, leftover: &[u8]) -> AsyncConn<S> {
        AsyncConn {
            stream,
            read: ReadSide::new(config.read_state(role, leftover)),
            write: WriteCore::new(config.write_state(role)),
            subprotocol: config.subprotocol,
        }
    }

    /// One poll of the read side; handlers answer on this connection's write queue.
    fn poll_read<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(
            &mut ReadCore,
            &mut read::PollIo<'_, '_, S, &mut WriteCore>,
        ) -> Poll<Result<T, Error>>,
    ) -> Poll<Result<T, Error>> {
        let AsyncConn {
            stream,
            read,
            write,
            ..
        } = self;
        read.poll(stream, cx, write, f)
    }

    /// The whole closing handshake (RFC 6455 section 7): send a close with `code` and
    /// `reason` (unless one was sent), read on, dropping data messages, until the peer's
    /// close comes back, then shut the stream down. The peer's close, or `TimedOut`
    /// when it did not come within `timeout` (the stream is shut down either way).
    pub async fn close_handshake(
        &mut self,
        code: CloseCode,
        reason: &str,
        timeout: Duration,
    ) -> Result<CloseError, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let handshake = async {
            if !self.write.state.close_sent() {
                self.close_with(code, reason).await?;
            }
            loop {
                match self.read_message().await {
                    Ok(_) => {}
                    Err(Error::Closed(close)) => return Ok(close),
                    Err(err) => return Err(err),
                }
            }
        };
        let result = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(result) => result,
            Err(_) => Err(Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("close handshake: no close from the peer within {timeout:?}"),
            ))),
        };
        // Bounded too: a TLS close_notify waits for room like any write.
        let _ = tokio::time::timeout(CLOSE_SHUTDOWN_WAIT, self.close()).await;
        result
    }

    /// Shut the stream's write direction down without a close frame (TLS sends its
    /// close_notify), after what is queued. Unlike gorilla/websocket's `Close`, it writes
    /// what is queued first and leaves the read direction open; dropping the connection
    /// closes the stream.
    pub async fn close(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.write.poll_shutdown(&mut self.stream, cx)).await
    }

    /// Split into owned halves for two tasks: a reader (a `Stream`) and a writer (a
    /// `Sink`), with the connection's read methods and its write methods respectively.
    /// Control frames the reader's handlers answer with (pongs, the close reply), and those
    /// of [`AsyncControlHandle`]s, go out between the writer's frames. Works for every
    /// stream (tokio's `io::split`).
    pub fn split(self) -> (AsyncReadHalf<S>, AsyncWriteHalf<S>) {
        split::split(self)
    }

    /// The stream under the connection (gorilla/websocket's `UnderlyingConn`), to read its
    /// addresses or options. Reading or writing it directly breaks the framing.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Which side of the connection this is.
    pub fn role(&self) -> Role {
        self.write.state.role
    }

    /// Whether permessage-deflate was negotiated.
    pub fn compression_negotiated(&self) -> bool {
        self.write.state.compression_negotiated
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    fn with_write<R>(&mut self, f: impl FnOnce(&mut WriteCore) -> R) -> R {
        f(&mut self.write)
    }

    read_methods!(Conn);
    write_methods!(Conn);
}

impl AsyncConn<tokio::net::TcpStream> {
    /// The local address of the TCP stream.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
}

/// How long [`AsyncConn::close_handshake`] may spend shutting the stream down.
const CLOSE_SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

impl<S: AsyncRead + AsyncWrite + Unpin> WritePath for AsyncConn<S> {
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.write.poll_room(&mut self.stream, cx)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.write.poll_flush(&mut self.stream, cx)
    }
    fn with_core(
        &mut self,
        f: &mut dyn FnMut(&mut WriteCore) -> Result<(), Error>,
    ) -> Result<(), Error> {
        f(&mut self.write)
    }
}

/// A read's outcome as the `Stream`'s item: data messages, then a received close as
/// the last item (`None` after it), or an error as the last item.
pub(crate) fn stream_item(
    ended: &mut bool,
    polled: Poll<Result<(MessageType, Vec<u8>), Error>>,
) -> Poll<Option<Result<Message, Error>>> {
    let item = match std::task::ready!(polled) {
        Ok((message_type, payload)) => Message::data(message_type, payload),
        Err(Error::Closed(close)) if close.code != CloseCode::ABNORMAL_CLOSURE => {
            *ended = true;
            Ok(Message::closed(&close))
        }
        Err(err) => {
            *ended = true;
            Err(err)
        }
    };
    Poll::Ready(Some(item))
}

stream_via_poll_read!(AsyncConn<S>);
sink_via_write_path!(AsyncConn<S>);

impl<S> std::fmt::Debug for AsyncConn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConn")
            .field("role", &self.write.state.role)
            .field("subprotocol", &self.subprotocol)
            .field("compression", &self.write.state.compression_negotiated)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// An idle connection holds no read buffer: it is made when bytes come and let go
    /// when the stream has no more, so a server of many quiet connections does not keep a
    /// buffer for each.
    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        let (server_io, mut client_io) = tokio::io::duplex(1024);
        let mut conn = AsyncConn::new(server_io, Role::Server, ConnConfig::default(), &[]);
        assert_eq!(
            conn.read.core.state.buffer_bytes(),
            0,
            "none before any read"
        );
        // A masked text frame "hi".
        let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        client_io.write_all(&frame).await.unwrap();
        let read = conn.read_message().await.unwrap();
        assert_eq!(read, (MessageType::Text, b"hi".to_vec()));
        // A read that finds nothing, cancelled (as in a `select!`).
        let idle = tokio::time::timeout(Duration::from_millis(20), conn.read_message()).await;
        assert!(idle.is_err(), "nothing to read");
        assert_eq!(conn.read.core.state.buffer_bytes(), 0, "let go while idle");
        client_io.write_all(&frame).await.unwrap();
        let read = conn.read_message().await.unwrap();
        assert_eq!(read, (MessageType::Text, b"hi".to_vec()), "and made again");
    }
}
