//! [`Core`]: the part of a worker that handler callbacks reach through a
//! [`Socket`](super::Socket): the connection slab, the write arena, the flush and close
//! lists, the timers and the counters. No kernel calls happen here; the worker turns the
//! lists into operations at the end of each step.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use slab::Slab;

use crate::error::Error;
use crate::proto::close::write_close_payload;
use crate::proto::deflate::{with_deflater, DeflateSettings};
use crate::proto::encoder::FrameBuf;
use crate::proto::{CloseCode, Encoder, OpCode, Role};
use crate::sys::arena::Arena;
use crate::sys::{socket, SendBuf, SocketFd};

use super::conn::{Connection, Phase};
use super::handle::Shared;
use super::outbox::{Backpressure, Overflow};
use super::runs::Runs;
use super::stats::{Counter, Counters};
use super::timers::TimerWheel;
use super::topics::{OverLimit, Topics};
use super::ServerConfig;

/// Why a send was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closing or gone: nothing more is sent on it.
    #[error("connection is closing or closed")]
    Closed,
    /// The queue was over `max_queued_bytes`; under [`Backpressure::Drop`] the message
    /// was dropped for this connection (and counted).
    #[error("queue over its cap: message dropped for this connection")]
    Dropped,
    /// The queue was over `max_queued_bytes`; under [`Backpressure::Close`] the
    /// connection is being closed with 1008.
    #[error("queue over its cap: connection closed as a slow consumer")]
    SlowConsumer,
}

/// Why the engine closes a connection, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Peer,
    Server,
    Protocol,
    SlowConsumer,
    Idle,
    Shutdown,
}

impl Cause {
    fn counter(self) -> Counter {
        match self {
            Cause::Peer => Counter::ClosedByPeer,
            Cause::Server => Counter::ClosedByServer,
            Cause::Protocol => Counter::ClosedProtocolError,
            Cause::SlowConsumer => Counter::ClosedSlowConsumer,
            Cause::Idle => Counter::ClosedIdle,
            Cause::Shutdown => Counter::ClosedShutdown,
        }
    }
}

/// A callback the worker owes the handler, run as soon as the current one returns.
#[derive(Debug)]
pub(crate) enum Notice {
    Close {
        key: u32,
        generation: u32,
        code: CloseCode,
        reason: Box<str>,
    },
    Drain {
        key: u32,
        generation: u32,
    },
}

/// Subscriptions a worker leaves per loop turn for connections that have closed: a
/// connection with more topics leaves them over several turns, so that the others'
/// traffic waits for one slice (about 0.1-0.3 ms) at most, not for all of them.
pub(crate) const LEAVE_SLICE: usize = 1024;

/// Timer wheel resolution: timeouts fire at most this late.
pub(crate) const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(25);
/// Timer wheel slots: 4096 x 25 ms spans 102 s; later deadlines go round again.
const TIMER_SLOTS: usize = 4096;

/// The worker state reachable from callbacks.
pub(crate) struct Core<D> {
    pub(crate) worker: usize,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) conns: Slab<Connection<D>>,
    /// The slab's capacity once it outgrows `socket::EARLY_ROOM`: room for every
    /// connection the worker may hold ([`socket::table_room`]).
    slab_room: usize,
    next_generation: u32,
    pub(crate) arena: Arena,
    /// Small published frames written once per form, sent as one part per subscriber.
    pub(crate) runs: Runs,
    /// Connections with something new queued and not yet flushed, oldest first (a flush
    /// starts at most `SENDS_PER_TURN` sends; the rest wait here for the next turn).
    pub(crate) dirty: VecDeque<u32>,
    /// Connections to close and remove at the end of this step.
    pub(crate) doomed: Vec<u32>,
    pub(crate) notices: VecDeque<Notice>,
    pub(crate) counters: Counters,
    pub(crate) timers: TimerWheel,
    pub(crate) topics: Topics,
    /// Retired connections (socket closed) still leaving their topics, a slice per turn.
    leaving: VecDeque<u32>,
    /// The time of this loop turn (read once per turn).
    pub(crate) now: Instant,
    /// A publish is being delivered: the frames queued now are published ones, which a
    /// connection may hold for a fuller send (`coalesce.rs`).
    pub(crate) delivering: bool,
    /// When the bytes being handled were taken from the kernel: cleared by each receive
    /// completion, read from the clock on the first [`Socket::received_at`] after it.
    ///
    /// [`Socket::received_at`]: super::Socket::received_at
    pub(crate) received_at: Option<Instant>,
    /// Frames of accepted (server) connections, and masked frames of outgoing (client)
    /// ones.
    server_encoder: Encoder,
    client_encoder: Encoder,
    /// Compressed payloads are built here before going to the arena.
    scratch: Vec<u8>,
}

impl<D: Default> Core<D> {
    pub(crate) fn new(worker: usize, config: Arc<ServerConfig>, shared: Arc<Shared>) -> Self {
        let now = Instant::now();
        let slab_room = socket::table_room(config.max_connections);
        Core {
            worker,
            config,
            shared,
            conns: Slab::new(),
            slab_room,
            next_generation: 1,
            arena: Arena::default(),
            runs: Runs::default(),
            dirty: VecDeque::new(),
            doomed: Vec::new(),
            notices: VecDeque::new(),
            counters: Counters::default(),
            timers: TimerWheel::new(now, TIMER_TICK, TIMER_SLOTS),
            topics: Topics::default(),
            leaving: VecDeque::new(),
            now,
            delivering: false,
            received_at: None,
            server_encoder: Encoder::new(Role::Server),
            client_encoder: Encoder::new(Role::Client),
            scratch: Vec::new(),
        }
    }

    /// Adds a connection and returns its key.
    pub(crate) fn insert(&mut self, fd: SocketFd, role: Role, phase: Phase) -> usize {
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & crate::sys::Token::MAX_GENERATION;
        if self.next_generation == 0 {
            self.next_generation = 1;
        }
        let len = self.conns.len();
        if len == self.conns.capacity() && len >= socket::EARLY_ROOM && self.slab_room > len {
            self.conns.reserve_exact(self.slab_room - len);
        }
        let key = self
            .conns
            .insert(Connection::new(fd, generation, role, phase, self.now));
        self.counters.incr(Counter::Sockets);
        key
    }
}

impl<D> Core<D> {
    /// The connection at `key` if it is still the one of `generation`.
    pub(crate) fn get(&self, key: u32, generation: u32) -> Option<&Connection<D>> {
        self.conns
            .get(key as usize)
            .filter(|c| c.generation == generation)
    }

    /// Builds one whole frame in arena memory ([`Encoder::encode_message`]): compressed
    /// when `compression` is given and the frame is a data frame, masked when `role` is
    /// the client's.
    pub(crate) fn encode(
        &mut self,
        role: Role,
        compression: Option<DeflateSettings>,
        opcode: OpCode,
        payload: &[u8],
    ) -> Bytes {
        let encoder = match role {
            Role::Client => &mut self.client_encoder,
            Role::Server => &mut self.server_encoder,
        };
        let mut frame = ArenaFrame {
            arena: &mut self.arena,
            frame: BytesMut::new(),
        };
        match compression {
            Some(settings) if !opcode.is_control() => with_deflater(settings, |deflater| {
                encoder.encode_message(
                    opcode,
                    payload,
                    Some(deflater),
                    &mut self.scratch,
                    &mut frame,
                )
            }),
            _ => encoder.encode_message(opcode, payload, None, &mut self.scratch, &mut frame),
        }
        frame.frame.freeze()
    }

    /// Subscribes connection `key` to `topic`; false if it already was. O(1).
    pub(crate) fn subscribe(&mut self, key: usize, topic: &[u8]) -> Result<bool, Error> {
        let limit = self.config.max_topics_per_connection;
        match self.topics.subscribe(&mut self.conns, key, topic, limit) {
            Ok(Some(change)) => {
                self.shared.set_topic_counts(self.worker, [change]);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(OverLimit) => Err(Error::TopicLimit { limit }),
        }
    }

    /// Unsubscribes connection `key` from `topic`; false if it was not subscribed. O(1).
    pub(crate) fn unsubscribe(&mut self, key: usize, topic: &[u8]) -> bool {
        match self.topics.unsubscribe(&mut self.conns, key, topic) {
            Some(change) => {
                self.shared.set_topic_counts(self.worker, [change]);
                true
            }
            None => false,
        }
    }

    /// Takes connection `key` out of at most `budget` of its topics; returns whether none
    /// is left. One lock of the shared counts for the lot.
    fn leave_some_topics(&mut self, key: usize, budget: usize) -> bool {
        let mut changes = Vec::with_capacity(budget.min(self.conns[key].topics.len()));
        let done = self
            .topics
            .leave(&mut self.conns, key, budget, |name, count| {
                changes.push((name, count))
            });
        if !changes.is_empty() {
            self.shared.set_topic_counts(self.worker, changes);
        }
        done
    }

    /// Takes connection `key` out of every topic at once.
    pub(crate) fn leave_topics(&mut self, key: usize) {
        self.leave_some_topics(key, usize::MAX);
    }

    /// Lets go of connection `key`, whose socket is closed: its topics are left and its
    /// slab entry removed, at once when it has at most [`LEAVE_SLICE`] topics, else a
    /// slice per turn by [`leave_some`](Self::leave_some). Until then the entry stays,
    /// doomed (no publish reaches it, no command finds it open), so its key is not reused
    /// while topic lists still name it.
    pub(crate) fn retire(&mut self, key: usize) {
        if self.conns[key].topics.len() <= LEAVE_SLICE {
            self.leave_topics(key);
            self.conns.remove(key);
        } else {
            self.leaving.push_back(key as u32);
        }
    }

    /// Leaves up to [`LEAVE_SLICE`] topics of retired connections, oldest first, and
    /// removes each connection that has none left. Called once per loop turn.
    pub(crate) fn leave_some(&mut self) {
        let mut budget = LEAVE_SLICE;
        while budget > 0 {
            let Some(&key) = self.leaving.front() else {
                return;
            };
            let key = key as usize;
            let before = self.conns[key].topics.len();
            let done = self.leave_some_topics(key, budget);
            budget -= before - self.conns[key].topics.len();
            if done {
                self.leaving.pop_front();
                self.conns.remove(key);
            }
        }
    }

    /// Whether retired connections still have topics to leave.
    pub(crate) fn is_leaving(&self) -> bool {
        !self.leaving.is_empty()
    }

    /// Queues a data frame, under the connection's cap ([`Outbox::push`]) and the
    /// backpressure policy.
    ///
    /// [`Outbox::push`]: super::outbox::Outbox::push
    pub(crate) fn queue_data(
        &mut self,
        key: usize,
        frame: impl Into<SendBuf>,
    ) -> Result<(), SendError> {
        let cap = self.config.max_queued_bytes;
        self.close_run(key);
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
            return Err(SendError::Closed);
        };
        let tls = &mut conn.tls;
        match conn
            .outbox
            .push(frame.into(), cap, |frame| seal(tls, frame))
        {
            Ok(len) => {
                self.queued(key, len);
                Ok(())
            }
            Err(Overflow) => match self.config.backpressure {
                Backpressure::Drop => {
                    self.counters.incr(Counter::Drops);
                    Err(SendError::Dropped)
                }
                Backpressure::Close => {
                    self.close(
                        key,
                        CloseCode::POLICY_VIOLATION,
                        "slow consumer",
                        Cause::SlowConsumer,
                    );
                    Err(SendError::SlowConsumer)
                }
            },
        }
    }

    /// Queues bytes that are already on-the-wire form (TLS records from the handshake).
    pub(crate) fn queue_raw(&mut self, key: usize, bytes: Bytes) {
        let len = bytes.len();
        self.close_run(key);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.outbox.push_unbounded(bytes);
            self.queued(key, len);
        }
    }

    /// Queues a ping or pong unless the queue is already at its cap
    /// ([`Outbox::push_control`]); a refused one is counted as a drop. Returns whether it
    /// was queued.
    ///
    /// [`Outbox::push_control`]: super::outbox::Outbox::push_control
    pub(crate) fn queue_control(&mut self, key: usize, frame: Bytes) -> bool {
        let cap = self.config.max_queued_bytes;
        self.close_run(key);
        let queued = self.conns.get_mut(key).map(|conn| {
            let tls = &mut conn.tls;
            conn.outbox
                .push_control(frame.into(), cap, |frame| seal(tls, frame))
        });
        match queued {
            Some(Ok(len)) => {
                self.queued(key, len);
                true
            }
            _ => {
                self.counters.incr(Counter::Drops);
                false
            }
        }
    }

    /// Queues a frame whatever the cap: control frames and handshake answers must get out.
    pub(crate) fn queue_always(&mut self, key: usize, frame: Bytes) {
        self.close_run(key);
        if let Some(conn) = self.conns.get_mut(key) {
            let frame = seal(&mut conn.tls, frame.into());
            let len = frame.len();
            conn.outbox.push_unbounded(frame);
            self.queued(key, len);
        }
    }

    /// Closes the open run of `key` (`runs.rs`) before anything else is queued after it:
    /// its bytes are copied out of the run buffer into a frame of their own.
    fn close_run(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(run) = conn.outbox.take_run() {
            let mut frame = self.arena.buffer(run.len());
            frame.extend_from_slice(self.runs.bytes(run));
            conn.outbox.push_settled(frame.freeze().into(), false);
        }
    }

    /// Moves every open run into its queue as one part of the frozen run buffer. The
    /// worker calls it before it flushes: a queue is read only once this is done.
    pub(crate) fn settle_runs(&mut self) {
        if !self.runs.any_open() {
            return;
        }
        let members = self.runs.freeze();
        for &key in &members {
            let Some(conn) = self.conns.get_mut(key as usize) else {
                continue;
            };
            let Some(run) = conn.outbox.take_run() else {
                continue;
            };
            if let Some(part) = self.runs.part(run) {
                conn.outbox.push_settled(part, true);
            }
        }
        self.runs.settled(members);
    }

    pub(crate) fn queued(&mut self, key: usize, len: usize) {
        self.counters.incr(Counter::MessagesOut);
        self.counters.add(Counter::BytesOut, len as u64);
        self.counters.add(Counter::QueuedBytes, len as u64);
        let conn = &mut self.conns[key];
        conn.direct |= !self.delivering;
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push_back(key as u32);
        }
    }

    /// Starts the closing handshake from this side: a close frame with `code` and `reason`
    /// (cut to fit 123 bytes), `on_close` owed, then wait for the peer's close frame up to
    /// the close timeout. A connection not open yet is simply dropped.
    pub(crate) fn close(&mut self, key: usize, code: CloseCode, reason: &str, cause: Cause) {
        let Some(conn) = self.conns.get(key).filter(|c| !c.doomed) else {
            return;
        };
        if !conn.is_open() {
            if !matches!(conn.phase, Phase::CloseSent | Phase::Flushing) {
                self.counters.incr(cause.counter());
                self.doom(key);
            }
            return;
        }
        let reason = truncate_reason(reason);
        let frame = self.close_frame(key, Some(code), reason);
        self.queue_always(key, frame);
        self.counters.incr(cause.counter());
        let deadline = self.now + self.config.close_timeout;
        let conn = &mut self.conns[key];
        conn.phase = Phase::CloseSent;
        conn.deadline = deadline;
        self.notify_close(key, code, reason);
        self.arm_timer(key);
    }

    /// Fails the connection (a protocol error, a reply to the peer's close): send a close
    /// frame, owe `on_close`, then close the socket once the frame is out.
    pub(crate) fn close_after_flush(
        &mut self,
        key: usize,
        frame_code: Option<CloseCode>,
        notify_code: CloseCode,
        reason: &str,
        cause: Cause,
    ) {
        let reason = truncate_reason(reason);
        let frame = self.close_frame(key, frame_code, reason);
        self.queue_always(key, frame);
        self.counters.incr(cause.counter());
        let deadline = self.now + self.config.close_timeout;
        let conn = &mut self.conns[key];
        conn.phase = Phase::Flushing;
        conn.deadline = deadline;
        self.notify_close(key, notify_code, reason);
        self.arm_timer(key);
    }

    /// A close frame with `code` and `reason`, or with no body when `code` is `None`.
    fn close_frame(&mut self, key: usize, code: Option<CloseCode>, reason: &str) -> Bytes {
        let mut payload = Vec::with_capacity(2 + reason.len());
        if let Some(code) = code {
            write_close_payload(code, reason, &mut payload);
        }
        let role = self.conns[key].role;
        self.encode(role, None, OpCode::Close, &payload)
    }

    /// Owes the handler `on_close` for an opened connection, once: `opened` goes false
    /// here, so a second call does nothing.
    pub(crate) fn notify_close(&mut self, key: usize, code: CloseCode, reason: &str) {
        let conn = &mut self.conns[key];
        if conn.opened {
            conn.opened = false;
            self.counters.sub(Counter::Connections, 1);
            self.notices.push_back(Notice::Close {
                key: key as u32,
                generation: conn.generation,
                code,
                reason: reason.into(),
            });
        }
    }

    /// Closes the socket once what is queued has been sent: at once when nothing is
    /// queued or in flight, else the connection goes `Flushing` (nothing more is read or
    /// queued) and is closed by the send that empties its queue. `close_timeout` bounds
    /// the flush from now when `restart_deadline`; else the deadline already set stands
    /// (a close of ours that was waiting for the peer's).
    pub(crate) fn close_once_sent(&mut self, key: usize, restart_deadline: bool) {
        let deadline = self.now + self.config.close_timeout;
        let conn = &mut self.conns[key];
        if conn.outbox.is_empty() && !conn.sending {
            self.doom(key);
            return;
        }
        conn.phase = Phase::Flushing;
        if restart_deadline {
            conn.deadline = deadline;
            self.arm_timer(key);
        }
    }

    /// Lists the connection to be closed and removed at the end of this step.
    pub(crate) fn doom(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.doomed {
                conn.doomed = true;
                self.doomed.push(key as u32);
            }
        }
    }

    /// The next moment the connection needs looking at, if any.
    fn next_deadline(&self, conn: &Connection<D>) -> Option<Instant> {
        match conn.phase {
            Phase::Open => {
                let idle = self.config.idle_timeout.map(|t| conn.last_read + t);
                let ping = self
                    .config
                    .ping_interval
                    .map(|t| conn.last_read.max(conn.last_ping) + t);
                match (idle, ping) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => Some(conn.deadline),
        }
    }

    /// Files the connection in the timer wheel for its next deadline, unless it is
    /// already filed for that moment or an earlier one.
    pub(crate) fn arm_timer(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(at) = self.next_deadline(conn) else {
            return;
        };
        if conn.timer_at.is_some_and(|filed| filed <= at) {
            return;
        }
        let conn = &mut self.conns[key];
        conn.timer_seq = conn.timer_seq.wrapping_add(1);
        conn.timer_at = Some(at);
        let tag = conn.generation | (u32::from(conn.timer_seq) << 24);
        self.timers.schedule(key as u32, tag, at);
    }
}

/// The frame as it goes on the wire: sealed into TLS records on a TLS connection.
fn seal(tls: &mut Option<Box<super::tls::Tls>>, frame: SendBuf) -> SendBuf {
    match tls.as_mut() {
        Some(tls) => tls.seal(&frame).into(),
        None => frame,
    }
}

/// A frame built in the worker's arena: room is taken once, for the whole frame.
struct ArenaFrame<'a> {
    arena: &'a mut Arena,
    frame: BytesMut,
}

impl FrameBuf for ArenaFrame<'_> {
    fn len(&self) -> usize {
        self.frame.len()
    }
    fn reserve(&mut self, additional: usize) {
        if self.frame.capacity() == 0 {
            self.frame = self.arena.buffer(additional);
        } else {
            self.frame.reserve(additional);
        }
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.frame.extend_from_slice(bytes);
    }
    fn written_mut(&mut self, start: usize) -> &mut [u8] {
        &mut self.frame[start..]
    }
}

/// A close reason must fit the 125-byte control payload with its 2-byte code; cut it at
/// a character boundary.
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A core with fake connections (no sockets): the real queueing path, measured or tested
/// in-process. Crate-internal; the bench module exposes it.
pub(crate) fn detached_core(max_queued_bytes: usize) -> Core<()> {
    detached_core_with(ServerConfig {
        max_queued_bytes,
        ..ServerConfig::default()
    })
}

/// A core with fake connections and the settings of `config`.
pub(crate) fn detached_core_with(config: ServerConfig) -> Core<()> {
    let shared = Shared::detached(&config);
    Core::new(0, Arc::new(config), shared)
}

impl Core<()> {
    /// Adds an open connection with no socket behind it.
    pub(crate) fn insert_detached(&mut self, compression: Option<DeflateSettings>) -> usize {
        let key = self.insert(SocketFd::detached(), Role::Server, Phase::Open);
        let conn = &mut self.conns[key];
        conn.opened = true;
        conn.compression = compression;
        key
    }

    /// Two detached connections, both subscribed to `topic`.
    #[cfg(test)]
    pub(crate) fn subscribed_pair(&mut self, topic: &[u8]) -> (usize, usize) {
        let pair = (self.insert_detached(None), self.insert_detached(None));
        for key in [pair.0, pair.1] {
            self.subscribe(key, topic).expect("under the limit");
        }
        pair
    }
}

#[cfg(test)]
mod tests {
    use super::super::handle::Publish;
    use super::*;
    use crate::prepared::PreparedMessage;
    use crate::proto::MessageType;

    fn publish(topic: &[u8], text: &str, origin: Option<super::super::ConnId>) -> Publish {
        Publish {
            topic: Bytes::copy_from_slice(topic),
            message: Arc::new(PreparedMessage::new(MessageType::Text, text.to_owned()).unwrap()),
            origin,
            include_origin: false,
        }
    }

    fn queued_frames(core: &mut Core<()>, key: usize) -> Vec<SendBuf> {
        core.settle_runs();
        let mut frames = Vec::new();
        core.conns[key]
            .outbox
            .take_batch(&mut core.arena, &mut frames);
        frames
    }

    #[test]
    fn one_topic_with_100_000_subscribers_gets_one_shared_compressed_frame() {
        let mut core = detached_core(1 << 20);
        let settings = DeflateSettings::default();
        let keys: Vec<usize> = (0..100_000)
            .map(|_| core.insert_detached(Some(settings)))
            .collect();
        for &key in &keys {
            assert!(core.subscribe(key, b"all").expect("under the limit"));
        }
        let message = publish(b"all", &"compressible ".repeat(20), None);
        assert_eq!(core.deliver(&message), 100_000);
        assert_eq!(
            message.message.compressions(),
            1,
            "one compression per publish"
        );
        let first = queued_frames(&mut core, keys[0]);
        assert_eq!(first.len(), 1);
        for &key in &keys[1..] {
            let frames = queued_frames(&mut core, key);
            assert_eq!(frames[0].as_ptr(), first[0].as_ptr(), "shared, not copied");
        }
        assert_eq!(core.counters.get(Counter::Deliveries), 100_000);
    }

    #[test]
    fn a_100_000_topics_with_one_subscriber_each_and_closing_leaves_them() {
        let mut core = detached_core(1 << 20);
        let keys: Vec<usize> = (0..100_000).map(|_| core.insert_detached(None)).collect();
        for (i, &key) in keys.iter().enumerate() {
            assert!(core
                .subscribe(key, format!("topic/{i}").as_bytes())
                .expect("under the limit"));
        }
        assert_eq!(core.topics.len(), 100_000);
        assert_eq!(core.deliver(&publish(b"topic/4242", "x", None)), 1);
        assert_eq!(queued_frames(&mut core, keys[4242]).len(), 1);
        assert!(queued_frames(&mut core, keys[4243]).is_empty());
        for &key in &keys {
            core.leave_topics(key);
        }
        assert_eq!(core.topics.len(), 0);
        assert_eq!(core.deliver(&publish(b"topic/4242", "x", None)), 0);
    }

    #[test]
    fn publisher_is_skipped_unless_it_asks() {
        let mut core = detached_core(1 << 20);
        let (a, _b) = core.subscribed_pair(b"room");
        let id_a = super::super::ConnId::new(0, a, core.conns[a].generation);
        assert_eq!(core.deliver(&publish(b"room", "hi", Some(id_a))), 1);
        assert!(queued_frames(&mut core, a).is_empty());
        let mut with_self = publish(b"room", "hi", Some(id_a));
        with_self.include_origin = true;
        assert_eq!(core.deliver(&with_self), 2);
    }

    #[test]
    fn subscriptions_match_a_model_under_random_churn() {
        use std::collections::HashSet;
        let mut core = detached_core(1 << 20);
        let keys: Vec<usize> = (0..50).map(|_| core.insert_detached(None)).collect();
        let topics: Vec<Vec<u8>> = (0..8).map(|t| format!("t{t}").into_bytes()).collect();
        let mut model: HashSet<(usize, usize)> = HashSet::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let (k, t) = (rng.usize(..keys.len()), rng.usize(..topics.len()));
            let key = keys[k];
            match rng.u8(..3) {
                0 => assert_eq!(
                    core.subscribe(key, &topics[t]).expect("under the limit"),
                    model.insert((k, t))
                ),
                1 => assert_eq!(core.unsubscribe(key, &topics[t]), model.remove(&(k, t))),
                _ => {
                    core.leave_topics(key);
                    model.retain(|&(mk, _)| mk != k);
                }
            }
        }
        for (t, topic) in topics.iter().enumerate() {
            for (k, &key) in keys.iter().enumerate() {
                assert_eq!(
                    core.topics.is_subscribed(key, topic),
                    model.contains(&(k, t))
                );
            }
            let expected = model.iter().filter(|&&(_, mt)| mt == t).count();
            let delivered = core.deliver(&publish(topic, "m", None));
            assert_eq!(delivered, expected);
        }
    }

    #[test]
    fn topic_counts_are_published_for_the_handle() {
        let mut core = detached_core(1 << 20);
        let (a, b) = core.subscribed_pair(b"t");
        fn core_counts(core: &Core<()>) -> Option<usize> {
            core.shared.workers[0]
                .topic_counts
                .lock()
                .unwrap()
                .get(&b"t"[..])
                .copied()
        }
        assert_eq!(core_counts(&core), Some(2));
        core.leave_topics(a);
        assert_eq!(core_counts(&core), Some(1));
        core.unsubscribe(b, b"t");
        assert_eq!(core_counts(&core), None);
    }

    /// Subscribes `keys` to topics `t/0`.. `t/{n-1}`; returns the records visited.
    fn subscribe_all(core: &mut Core<()>, keys: &[usize], n: usize) -> u64 {
        let before = core.topics.visits;
        for i in 0..n {
            let name = format!("t/{i}");
            for &key in keys {
                assert!(core
                    .subscribe(key, name.as_bytes())
                    .expect("under the limit"));
            }
        }
        core.topics.visits - before
    }

    /// Two connections share `n` topics; the first closes (retired as the worker does):
    /// returns the records visited to leave them, and the turns taken. Between turns the
    /// other connection keeps getting every topic's publishes, the closed one none.
    fn close_one_of_two_sharing(n: usize) -> (u64, u64, usize) {
        let mut core = detached_core_with(ServerConfig {
            max_topics_per_connection: n,
            ..ServerConfig::default()
        });
        let (a, b) = (core.insert_detached(None), core.insert_detached(None));
        let subscribe = subscribe_all(&mut core, &[a, b], n);
        let before = core.topics.visits;
        core.doom(a);
        core.retire(a);
        let mut turns = 0;
        while core.is_leaving() {
            let left = core.conns[a].topics.len();
            core.leave_some();
            turns += 1;
            if let Some(conn) = core.conns.get(a) {
                // One slice per turn, no more.
                assert_eq!(conn.topics.len(), left - LEAVE_SLICE);
            }
            let last = format!("t/{}", n - 1);
            assert_eq!(core.deliver(&publish(last.as_bytes(), "m", None)), 1);
        }
        let leave = core.topics.visits - before;
        assert!(
            core.conns.get(a).is_none(),
            "removed once its topics are left"
        );
        assert_eq!(core.topics.len(), n, "the other connection keeps them all");
        for i in (0..n).step_by(997) {
            let name = format!("t/{i}");
            assert!(core.topics.is_subscribed(b, name.as_bytes()));
            assert_eq!(core.deliver(&publish(name.as_bytes(), "m", None)), 1);
        }
        (subscribe, leave, turns)
    }

    /// Issue 12: a connection sharing n topics with another took about n²/2 steps to
    /// close (25.8 s at 300 000 on the worker's thread). Now each subscription costs a
    /// constant number of record visits to make and to leave, and the leave runs a slice
    /// per turn.
    #[test]
    fn two_connections_sharing_300_000_topics_close_in_linear_steps() {
        const N: usize = 300_000;
        let (subscribe, leave, turns) = close_one_of_two_sharing(N);
        assert!(
            subscribe <= 3 * 2 * N as u64,
            "subscribe visited {subscribe}"
        );
        assert!(leave <= 5 * N as u64, "leave visited {leave}");
        assert_eq!(turns, N.div_ceil(LEAVE_SLICE));
        // And the cost grows linearly: 100 times the topics, 100 times the visits.
        let (small_subscribe, small_leave, _) = close_one_of_two_sharing(N / 100);
        assert_eq!(subscribe, 100 * small_subscribe);
        assert_eq!(leave, 100 * small_leave);
    }

    #[test]
    fn unsubscribing_300_000_topics_in_any_order_is_linear() {
        const N: usize = 300_000;
        let mut core = detached_core_with(ServerConfig {
            max_topics_per_connection: N,
            ..ServerConfig::default()
        });
        let (a, b) = (core.insert_detached(None), core.insert_detached(None));
        subscribe_all(&mut core, &[a, b], N);
        let mut order: Vec<usize> = (0..N).collect();
        fastrand::Rng::with_seed(12).shuffle(&mut order);
        let before = core.topics.visits;
        for &i in &order {
            assert!(core.unsubscribe(a, format!("t/{i}").as_bytes()));
        }
        let visits = core.topics.visits - before;
        assert!(visits <= 7 * N as u64, "unsubscribe visited {visits}");
        assert!(core.conns[a].topics.is_empty());
        for i in (0..N).step_by(997) {
            assert!(!core.topics.is_subscribed(a, format!("t/{i}").as_bytes()));
            assert_eq!(
                core.deliver(&publish(format!("t/{i}").as_bytes(), "m", None)),
                1
            );
        }
    }

    #[test]
    fn subscribing_past_the_topic_limit_is_refused() {
        let mut core = detached_core_with(ServerConfig {
            max_topics_per_connection: 3,
            ..ServerConfig::default()
        });
        let key = core.insert_detached(None);
        for topic in [&b"a"[..], b"b", b"c"] {
            assert!(core.subscribe(key, topic).expect("under the limit"));
        }
        match core.subscribe(key, b"d") {
            Err(Error::TopicLimit { limit: 3 }) => {}
            other => panic!("expected TopicLimit, got {other:?}"),
        }
        assert!(!core.topics.is_subscribed(key, b"d"));
        assert_eq!(
            core.topics.len(),
            3,
            "no topic made for a refused subscription"
        );
        // Already subscribed is not a new subscription, even at the limit.
        assert!(!core.subscribe(key, b"a").expect("not new"));
        assert!(core.unsubscribe(key, b"b"));
        assert!(core.subscribe(key, b"d").expect("room again"));
    }

    #[test]
    fn the_slab_takes_its_room_at_once_past_the_first_thousand() {
        let mut core = detached_core(1 << 20);
        core.slab_room = 5000;
        for _ in 0..=socket::EARLY_ROOM {
            core.insert_detached(None);
        }
        let room = core.conns.capacity();
        assert!((5000..2 * 5000).contains(&room), "capacity {room}");
        for _ in socket::EARLY_ROOM + 1..5000 {
            core.insert_detached(None);
        }
        // Filled to its room without another copy.
        assert_eq!(core.conns.capacity(), room);
        assert_eq!(core.conns.len(), 5000);
    }

    #[test]
    fn the_slab_room_is_bounded_by_the_settings() {
        assert!(socket::table_room(10) <= 10);
        assert!(socket::table_room(usize::MAX) <= socket::MAX_ROOM);
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let cut = truncate_reason(&reason);
        assert!(cut.len() <= 123);
        assert!(reason.starts_with(cut));
    }
}
