//! Connections whose opening handshake another server completed, handed to a worker:
//! [`Adoption`] and [`ServerHandle::adopt`](super::ServerHandle::adopt).
//!
//! A tokio service (axum, hyper) that checks the request itself (a session, a token)
//! writes the 101 and then gives the TCP socket to the engine, which serves the
//! connection from then on as if it had accepted it: the handler's `on_open` with the
//! request, its messages, topics and fan-out. The feature-gated helpers that do this
//! from a route are `HyperUpgrade::adopt` and `WebSocketUpgrade::hand_to_engine`
//! (features `hyper`, `axum`).

use std::io;
use std::net::TcpStream;

use bytes::Bytes;

use crate::proto::deflate::PerMessageDeflate;
use crate::proto::handshake::Request;

/// A WebSocket connection whose 101 another server already wrote, for
/// [`ServerHandle::adopt`](super::ServerHandle::adopt).
///
/// Plain TCP only: a TLS session lives in the other server's TLS stack, and the engine
/// runs its own (terminate TLS in the engine with
/// [`ServerConfig::tls`](super::ServerConfig::tls) to have both).
#[derive(Debug)]
pub struct Adoption {
    /// The connection's socket, after the 101.
    pub socket: TcpStream,
    /// The upgrade request, given to [`Handler::on_open`](super::Handler::on_open)
    /// (the chat reads its room from the query, say).
    pub request: Request,
    /// Bytes the other server read past the request: frames the client sent at once.
    /// They are read before anything from the socket.
    pub read_past: Bytes,
    /// The subprotocol the 101 agreed on.
    pub subprotocol: Option<String>,
    /// The permessage-deflate parameters the 101 agreed on (`None`: no compression).
    pub compression: Option<PerMessageDeflate>,
    /// A number of the caller's choosing, given back by [`Socket::tag`](super::Socket::tag)
    /// (a user id, say).
    pub tag: u64,
    /// The worker to serve it; `None`: the workers in turn.
    pub worker: Option<usize>,
}

impl Adoption {
    /// An adoption of `socket` upgraded from `request`, with nothing read past it, no
    /// subprotocol, no compression and tag 0.
    pub fn new(socket: TcpStream, request: Request) -> Adoption {
        Adoption {
            socket,
            request,
            read_past: Bytes::new(),
            subprotocol: None,
            compression: None,
            tag: 0,
            worker: None,
        }
    }

    /// Readies the socket for a worker: non-blocking (the epoll backend reads until
    /// `EAGAIN`), `TCP_NODELAY` as accepted sockets have it.
    pub(crate) fn prepare(&self) -> io::Result<()> {
        self.socket.set_nonblocking(true)?;
        // As for accepted sockets: frames are batched per turn, so Nagle only adds latency.
        let _ = self.socket.set_nodelay(true);
        Ok(())
    }

    /// The heap this adoption keeps alive while it waits in a worker's channel.
    pub(crate) fn cost(&self) -> usize {
        let headers: usize = self
            .request
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        std::mem::size_of::<Adoption>()
            + self.request.method.len()
            + self.request.target.len()
            + headers
            + self.read_past.len()
            + self.subprotocol.as_ref().map_or(0, String::len)
    }
}
