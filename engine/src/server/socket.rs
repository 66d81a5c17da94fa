//! [`Socket`]: the handle a [`Handler`](super::Handler) callback gets for one connection.
//! It queues frames and closes; the worker sends at the end of the loop turn, so every
//! frame queued to one connection in one turn leaves in one vectored send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::error::Error;
use crate::prepared::PreparedMessage;
use crate::proto::{CloseCode, MessageType, OpCode};
use crate::sys::socket::peer_addr;

use super::core::{Cause, Core, SendError};
use super::fanout::deliver_pending;
use super::handle::Publish;
use super::handle::{check_topic, ServerHandle};
use super::ConnId;

/// One connection, inside a handler callback.
///
/// ```
/// use ringcast::server::{Handler, Socket};
/// use ringcast::{CloseCode, MessageType};
///
/// /// Counts messages per connection and closes after ten.
/// struct Counted;
///
/// impl Handler for Counted {
///     type Data = u32;
///     fn on_message(&mut self, socket: &mut Socket<'_, u32>, kind: MessageType, payload: &[u8]) {
///         *socket.data() += 1;
///         if *socket.data() == 10 {
///             socket.close(CloseCode::NORMAL_CLOSURE, "that will do");
///         } else {
///             let _ = socket.send(kind, payload);
///         }
///     }
/// }
/// # let _ = Counted;
/// ```
pub struct Socket<'a, D> {
    pub(crate) core: &'a mut Core<D>,
    pub(crate) key: usize,
}

impl<'a, D> Socket<'a, D> {
    pub(crate) fn new(core: &'a mut Core<D>, key: usize) -> Self {
        Socket { core, key }
    }

    fn conn(&self) -> &super::conn::Connection<D> {
        &self.core.conns[self.key]
    }

    /// This connection's id, valid server-wide (for [`ServerHandle::send_to`]). It carries
    /// a 24-bit generation, so it is not reused before its worker has opened 16.7 million
    /// more connections.
    pub fn id(&self) -> ConnId {
        ConnId::new(self.core.worker, self.key, self.conn().generation)
    }

    /// The peer's address (asked of the kernel, so an idle connection does not store it).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        peer_addr(self.conn().fd.as_fd()?).ok()
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.conn().subprotocol.as_deref()
    }

    /// Whether permessage-deflate was agreed.
    pub fn is_compressed(&self) -> bool {
        self.conn().compression.is_some()
    }

    /// The tag given to [`ServerHandle::dial`] for an outgoing connection; 0 for accepted
    /// ones.
    pub fn tag(&self) -> u64 {
        self.conn().tag
    }

    /// When the bytes being handled were taken from the kernel, for latency measurements:
    /// every message of one receive gets the same instant. The clock is read on the first
    /// call after each receive, so a handler that never asks pays nothing, and one that asks
    /// for every message of a receive holding fifty pays one clock read. Outside
    /// `on_message` it is the time of the first call since the last receive.
    ///
    /// ```
    /// use ringcast::server::{Handler, Socket};
    /// use ringcast::MessageType;
    /// use std::time::Instant;
    ///
    /// /// Remembers when the last message arrived.
    /// struct LastSeen;
    ///
    /// impl Handler for LastSeen {
    ///     type Data = Option<Instant>;
    ///     fn on_message(&mut self, socket: &mut Socket<'_, Option<Instant>>, _: MessageType, _: &[u8]) {
    ///         let at = socket.received_at();
    ///         *socket.data() = Some(at);
    ///     }
    /// }
    /// # let _ = LastSeen;
    /// ```
    pub fn received_at(&mut self) -> Instant {
        *self.core.received_at.get_or_insert_with(Instant::now)
    }

    /// Bytes queued for this connection and not yet taken by the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.conn().outbox.queued_bytes()
    }

    /// Whether messages can still be sent (open, and no close started).
    pub fn is_open(&self) -> bool {
        self.conn().is_open()
    }

    /// The application's state for this connection.
    pub fn data(&mut self) -> &mut D {
        &mut self.core.conns[self.key].data
    }

    /// A handle to the whole server, to reach other connections or workers.
    pub fn server(&self) -> ServerHandle {
        ServerHandle::from_shared(self.core.shared.clone())
    }

    /// The index of the worker running this callback.
    pub fn worker(&self) -> usize {
        self.core.worker
    }

    /// Queues a message (compressed if the connection agreed to it). Fails when the
    /// connection is closing, or under backpressure (see [`SendError`]).
    pub fn send(&mut self, message_type: MessageType, payload: &[u8]) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        let conn = self.conn();
        let (role, compression) = (conn.role, conn.compression);
        let frame = self
            .core
            .encode(role, compression, message_type.opcode(), payload);
        self.core.queue_data(self.key, frame)
    }

    /// Queues a prepared message: its frame for this connection's side and compression is
    /// built once and shared with every other connection that sends it (no copy).
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        let conn = self.conn();
        let frame = message.frame(conn.role, conn.compression);
        self.core.queue_data(self.key, frame)
    }

    /// Queues a ping with `payload` (at most 125 bytes; longer is cut). Control frames skip
    /// the backpressure policy but not the cap: over it, they are dropped.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.control(OpCode::Ping, payload)
    }

    /// Queues a pong with `payload` (at most 125 bytes; longer is cut). Pings are answered
    /// by the engine; this is for unsolicited pongs (heartbeats).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.control(OpCode::Pong, payload)
    }

    fn control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        let payload = &payload[..payload.len().min(125)];
        let role = self.conn().role;
        let frame = self.core.encode(role, None, opcode, payload);
        if self.core.queue_control(self.key, frame) {
            Ok(())
        } else {
            Err(SendError::Dropped)
        }
    }

    /// Subscribes this connection to `topic` (a byte string of at most
    /// [`MAX_TOPIC_LEN`](super::MAX_TOPIC_LEN) bytes). Returns `false` if it already was.
    /// Fails with [`Error::TopicLimit`] when the connection already holds
    /// [`max_topics_per_connection`](super::ServerConfig::max_topics_per_connection)
    /// topics. A closing connection leaves its topics by itself. O(1), however many
    /// topics the connection has or subscribers the topic has.
    pub fn subscribe(&mut self, topic: &[u8]) -> Result<bool, Error> {
        check_topic(topic)?;
        self.core.subscribe(self.key, topic)
    }

    /// Unsubscribes this connection from `topic`; `false` if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &[u8]) -> bool {
        self.core.unsubscribe(self.key, topic)
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &[u8]) -> bool {
        self.core.topics.is_subscribed(self.key, topic)
    }

    /// Publishes a message to the other subscribers of `topic`, on every worker; this
    /// connection does not get it back even if subscribed. Returns the number of local
    /// deliveries (other workers deliver on their own turn).
    ///
    /// Never waits: when another worker's command queue holds
    /// [`max_handoff_bytes`](super::ServerConfig::max_handoff_bytes), the publish is
    /// refused whole (no subscriber on any worker gets it) with [`Error::QueueFull`], and
    /// counted in [`Stats::handoffs_refused`](super::Stats::handoffs_refused).
    pub fn publish(
        &mut self,
        topic: &[u8],
        message_type: MessageType,
        payload: &[u8],
    ) -> Result<usize, Error> {
        self.publish_copy(topic, message_type, payload, false)
    }

    /// Publishes a message to every subscriber of `topic`, this connection included when
    /// it is subscribed (a chat room echoing to its sender).
    pub fn publish_with_self(
        &mut self,
        topic: &[u8],
        message_type: MessageType,
        payload: &[u8],
    ) -> Result<usize, Error> {
        self.publish_copy(topic, message_type, payload, true)
    }

    /// The payload is borrowed from the caller: copy it once into a prepared message.
    fn publish_copy(
        &mut self,
        topic: &[u8],
        message_type: MessageType,
        payload: &[u8],
        include_self: bool,
    ) -> Result<usize, Error> {
        let message = PreparedMessage::new(message_type, Bytes::copy_from_slice(payload))?;
        self.publish_prepared(topic, Arc::new(message), include_self)
    }

    /// Publishes a prepared message to the subscribers of `topic`, this connection included
    /// only if `include_self`. The message crosses to each other worker once; every
    /// subscriber then gets the same frame bytes.
    pub fn publish_prepared(
        &mut self,
        topic: &[u8],
        message: Arc<PreparedMessage>,
        include_self: bool,
    ) -> Result<usize, Error> {
        check_topic(topic)?;
        let publish = Arc::new(Publish {
            topic: Bytes::copy_from_slice(topic),
            message,
            origin: Some(self.id()),
            include_origin: include_self,
        });
        // Publishes a handle made earlier in this callback reach this worker's
        // subscribers first (the ordering rule, `server::fanout`).
        deliver_pending(self.core);
        let shared = self.core.shared.clone();
        // The other workers first: when one has no room, nobody gets it. A callback never
        // waits for room (no deadline).
        let failed = match shared.publish(&publish, Some(self.core.worker), None) {
            Err(err @ Error::QueueFull { .. }) => return Err(err),
            Err(err) => Some(err), // a stopped worker: the others still get it
            Ok(()) => None,
        };
        shared.forward(&publish);
        let delivered = self.core.deliver(&publish);
        match failed {
            Some(err) => Err(err),
            None => Ok(delivered),
        }
    }

    /// Starts the closing handshake: a close frame with `code` and `reason` (cut to 123
    /// bytes), then `on_close` with the same code once this callback returns. The socket is
    /// closed when the peer answers, or after the close timeout.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.core.close(self.key, code, reason, Cause::Server);
    }
}

impl<D> std::fmt::Debug for Socket<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.id()).finish()
    }
}
