//! The connections of one worker as a sans-IO state machine: each connection's phases
//! and transitions (handshake, open, closing, flushing, closed), with no kernel call.
//!
//! Inputs: completions as plain values ([`Machine::on_accept`], [`Machine::on_recv`] with
//! the received bytes, [`Machine::on_send`], [`Machine::on_connect`]), commands from other
//! threads ([`Machine::command`]), the clock (`core.now`, set by the caller each turn) for
//! timer expiries ([`Machine::end_turn`]), and the application's calls through a
//! [`Socket`] inside callbacks. Outputs: [`Op`]s in [`Machine::ops`], in order (arm a
//! receive, start a send of what a connection has queued, connect, close a socket, re-arm
//! or close the listener), and the handler's callbacks, which run here, at once: a
//! callback gets a [`Socket`] that borrows the worker's state, so the machine calls it
//! rather than returning it as an action (no copy of a received payload, no allocation
//! per message).
//!
//! The worker ([`super::worker`]) maps each completion of its driver to an input and each
//! op to a driver operation; the tests (`tests.rs`) run the same machine against an
//! in-memory peer instead, so handshake, close, timeout, backpressure and shutdown rules
//! are checked without sockets and without waiting (time is an input).
//!
//! - `mod.rs`: accept, receive, send, commands, timers, shutdown, and the bookkeeping of
//!   owed callbacks and doomed sockets;
//! - `handshake.rs`: the server's request head (upgrade, refusal, plain HTTP) and the
//!   client's dial (connect, request, response head);
//! - `frames.rs`: decoding an open connection's frames, the budgeted inflation, the
//!   peer's close and protocol errors.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::proto::deflate::Inflater;
use crate::proto::{CloseCode, OpCode, Role};
use crate::sys::{SocketFd, Token};

use super::coalesce::Corks;
use super::conn::{Paused, Phase};
use super::core::{Cause, Core, Notice};
use super::dial::Pending;
use super::fanout::deliver_pending;
use super::handle::{Command, Outgoing, Shared};
use super::stats::Counter;
use super::{Handler, ServerConfig, Socket};

mod frames;
mod handshake;
#[cfg(test)]
mod tests;

/// Input that may wait for a connection's paused inflation before reading from it stops.
const PAUSED_INPUT_MAX: usize = 64 * 1024;
/// The most sends a turn starts. A publish to 10 000 subscribers is 10 000 sends of about
/// 10 µs of kernel work each over loopback: started in one turn, they made a turn of about
/// 100 ms, and a publish arriving meanwhile waited for its end before reaching anyone.
/// In slices of about one submission of the ring, the next turn comes at once, takes the
/// new publish and queues it behind the connections not yet sent to, which then carry
/// both (docs/performance.md, "Issue 15: turns at 10 000 subscribers").
pub(crate) const SENDS_PER_TURN: usize = 1024;
/// First and longest pause of accepting after an error such as `EMFILE`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Makes the socket of an outgoing connection (bound, options set), not yet connected.
pub(crate) type DialSocket = fn(&Pending) -> io::Result<SocketFd>;

/// What the machine asks of the driver, in the order asked. A connection named by key and
/// generation may be gone by the time the op is carried out: the driver side then skips it.
#[derive(Debug)]
pub(crate) enum Op {
    /// Arm the listener's (multishot) accept again.
    Accept,
    /// Close the listener (a shutdown).
    CloseListener,
    /// Arm a (multishot) receive on the connection.
    Recv { key: u32, generation: u32 },
    /// Stop the connection's receive (its input waits for a paused inflation).
    StopRecv { key: u32, generation: u32 },
    /// Take the connection's next batch from its outbox ([`Outbox::take_batch`]) and send
    /// it; its completion goes to [`Machine::on_send`].
    ///
    /// [`Outbox::take_batch`]: super::outbox::Outbox::take_batch
    Send { key: u32, generation: u32 },
    /// Connect the connection's socket to `addr`.
    Connect {
        key: u32,
        generation: u32,
        addr: SocketAddr,
    },
    /// Close the socket (any operation still on it is cancelled).
    Close(SocketFd),
}

/// The connections of one worker as a state machine, with no I/O: see the module docs.
pub(crate) struct Machine<H: Handler> {
    pub(crate) handler: H,
    pub(crate) core: Core<H::Data>,
    inflater: Inflater,
    /// What the driver is to do next, in order.
    pub(crate) ops: Vec<Op>,
    /// Makes the socket of an outgoing connection (the worker's makes a real one).
    dial_socket: DialSocket,
    /// A listener is open (accepts are armed, or paused after an error).
    listening: bool,
    /// Accepting is paused until then (after an accept error).
    accept_resume: Option<Instant>,
    accept_backoff: Duration,
    /// Set by a shutdown: when the worker stops, whatever is left.
    shutdown_at: Option<Instant>,
    /// Plaintext opened from TLS records, reused between receives.
    plain: Vec<u8>,
    /// Timers due this turn, reused between turns.
    due: Vec<(u32, u32)>,
    /// Connections whose inflation paused at their budget, by slab key.
    paused: HashMap<u32, Paused>,
    /// Connections holding published frames for a fuller send.
    corks: Corks,
}

impl<H: Handler> Machine<H> {
    /// A worker's machine; `listening` when the worker has a listener, `dial_socket` to
    /// make the sockets of dials.
    pub(crate) fn new(
        index: usize,
        handler: H,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        listening: bool,
        dial_socket: DialSocket,
    ) -> Self {
        let corks = Corks::new(config.coalesce, Instant::now());
        Machine {
            handler,
            core: Core::new(index, config, shared),
            inflater: Inflater::new(),
            ops: Vec::new(),
            dial_socket,
            listening,
            accept_resume: None,
            accept_backoff: ACCEPT_BACKOFF.0,
            shutdown_at: None,
            plain: Vec::new(),
            due: Vec::new(),
            paused: HashMap::new(),
            corks,
        }
    }

    /// The end of a loop turn at `now`: commands are in; fire due timers, resume
    /// accepting and paused inflations, run owed callbacks, leave a slice of topics and
    /// start the sends.
    pub(crate) fn end_turn(&mut self) {
        self.fire_timers();
        self.resume_accepting();
        self.resume_paused();
        self.settle();
        self.core.leave_some();
        self.release_corks();
        self.flush();
    }

    /// How long the next wait may last, from `now` (the clock as the worker is about to
    /// wait): not at all while closed connections are still leaving their topics or
    /// connections wait for a send this turn had no room for; else
    /// until the next timer, accept resumption or shutdown deadline; without bound when
    /// none is pending.
    pub(crate) fn wait_time(&self, now: Instant) -> Option<Duration> {
        if self.core.is_leaving() || !self.paused.is_empty() || !self.core.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.core.timers.next_deadline(),
            self.corks.deadline(),
            self.accept_resume,
            self.shutdown_at,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(now))
    }

    // --- accept ---------------------------------------------------------------------

    /// An accept completed: `socket` is the new connection, else `result` the error;
    /// `more` when the multishot accept goes on.
    pub(crate) fn on_accept(&mut self, socket: Option<SocketFd>, result: i32, more: bool) {
        if let Some(fd) = socket {
            self.accept_backoff = ACCEPT_BACKOFF.0;
            self.accepted(fd);
            if !more {
                self.rearm_accept();
            }
            return;
        }
        if result == -libc::ECANCELED || !self.listening {
            return;
        }
        // EMFILE, ENFILE, ENOBUFS...: the operation has ended; pause, then try again.
        self.core.counters.incr(Counter::AcceptErrors);
        let error = io::Error::from_raw_os_error(-result);
        tracing::warn!(worker = self.core.worker, %error, pause_ms = self.accept_backoff.as_millis() as u64, "accept failed; pausing");
        self.accept_resume = Some(self.core.now + self.accept_backoff);
        self.accept_backoff = (self.accept_backoff * 2).min(ACCEPT_BACKOFF.1);
    }

    fn accepted(&mut self, fd: SocketFd) {
        self.core.counters.incr(Counter::Accepted);
        if self.shutdown_at.is_some() || self.core.conns.len() >= self.core.config.max_connections {
            self.core.counters.incr(Counter::Rejected);
            return self.ops.push(Op::Close(fd));
        }
        let key = self
            .core
            .insert(fd, Role::Server, Phase::Handshake { head: Vec::new() });
        let deadline = self.core.now + self.core.config.handshake_timeout();
        let tls = match &self.core.config.tls {
            Some(config) => match super::tls::Tls::new(config.clone()) {
                Ok(tls) => Some(tls),
                Err(err) => {
                    tracing::warn!(%err, "tls session could not be set up");
                    self.core.counters.incr(Counter::HandshakesFailed);
                    return self.core.doom(key);
                }
            },
            None => None,
        };
        let conn = &mut self.core.conns[key];
        conn.deadline = deadline;
        conn.tls = tls;
        let generation = conn.generation;
        self.rearm_recv(key, generation);
        self.core.arm_timer(key);
    }

    fn rearm_accept(&mut self) {
        if self.shutdown_at.is_none() && self.listening {
            self.ops.push(Op::Accept);
        }
    }

    fn resume_accepting(&mut self) {
        if self.accept_resume.is_some_and(|at| at <= self.core.now) {
            self.accept_resume = None;
            self.rearm_accept();
        }
    }

    // --- receive --------------------------------------------------------------------

    /// A receive completed with `result` (bytes, 0 at end of stream, or an error), its
    /// bytes in `buffer`; `more` when the multishot receive goes on.
    pub(crate) fn on_recv(
        &mut self,
        key: u32,
        generation: u32,
        result: i32,
        buffer: Option<&mut [u8]>,
        more: bool,
    ) {
        let Some(conn) = self.core.get(key, generation) else {
            return; // a completion of a connection that is gone
        };
        if conn.doomed {
            return;
        }
        let key = key as usize;
        match result {
            n if n > 0 => {
                self.core.received_at = None;
                if let Some(buffer) = buffer {
                    self.received(key, buffer);
                }
                if !more {
                    self.recv_ended(key, generation);
                }
            }
            0 => self.peer_gone(key, None),
            // Buffers ran out, or a stop_recv (reading paused): the receive has ended.
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {
                if !more {
                    self.recv_ended(key, generation);
                }
            }
            e => self.peer_gone(key, Some(io::Error::from_raw_os_error(-e))),
        }
    }

    /// A receive's final completion: start it again, unless reading is paused (then
    /// `resume_reading` does once the connection has caught up).
    fn recv_ended(&mut self, key: usize, generation: u32) {
        let Some(conn) = self.core.conns.get_mut(key) else {
            return;
        };
        conn.recv_armed = false;
        if !conn.read_paused {
            self.rearm_recv(key, generation);
        }
    }

    fn rearm_recv(&mut self, key: usize, generation: u32) {
        if let Some(conn) = self
            .core
            .conns
            .get_mut(key)
            .filter(|c| c.generation == generation && !c.doomed)
        {
            conn.recv_armed = true;
            self.ops.push(Op::Recv {
                key: key as u32,
                generation,
            });
        }
    }

    fn received(&mut self, key: usize, buffer: &mut [u8]) {
        let conn = &mut self.core.conns[key];
        if conn.last_read != self.core.now {
            conn.inflated = 0; // the first receive of this turn: a new inflation budget
        }
        conn.last_read = self.core.now;
        if let Some(tls) = conn.tls.as_mut() {
            // Open the records into the worker's scratch buffer and go on with plaintext.
            let mut plain = std::mem::take(&mut self.plain);
            plain.clear();
            let opened = tls.open(buffer, &mut plain);
            if let Some(records) = tls.take_output() {
                self.core.queue_raw(key, records); // handshake messages or an alert
            }
            match opened {
                Ok(()) if !plain.is_empty() => self.received_plain(key, &mut plain),
                Ok(()) => {}
                Err(err) => self.tls_failed(key, err),
            }
            plain.clear();
            self.plain = plain;
            return;
        }
        self.received_plain(key, buffer);
    }

    /// A TLS record or handshake failed: the alert (if any) goes out, then the socket.
    fn tls_failed(&mut self, key: usize, err: Error) {
        tracing::debug!(worker = self.core.worker, %err, "tls failed");
        match self.core.conns[key].phase {
            // A wss:// dial: the handler hears why (an untrusted certificate, say).
            Phase::Dialing { .. } => self.dial_failed(key, err),
            Phase::Handshake { .. } => self.core.counters.incr(Counter::HandshakesFailed),
            Phase::Open => {
                self.core.counters.incr(Counter::ClosedProtocolError);
                self.core
                    .notify_close(key, CloseCode::TLS_HANDSHAKE, "tls failure");
            }
            _ => {}
        }
        self.core.close_once_sent(key, true);
    }

    /// Bytes off the wire, or plaintext opened from TLS records.
    fn received_plain(&mut self, key: usize, bytes: &mut [u8]) {
        let conn = &mut self.core.conns[key];
        match &mut conn.phase {
            Phase::Handshake { head } => {
                let from = head.len();
                head.extend_from_slice(bytes);
                self.request_head(key, from);
            }
            Phase::Dialing { head, .. } => {
                let from = head.len();
                head.extend_from_slice(bytes);
                self.response_head(key, from);
            }
            Phase::Deciding(deciding) => {
                if deciding.leftover.len() + bytes.len() > PAUSED_INPUT_MAX {
                    // Frames before the 101 beyond what a pipelining client sends.
                    self.core.counters.incr(Counter::HandshakesFailed);
                    return self.core.doom(key);
                }
                deciding.leftover.extend_from_slice(bytes);
            }
            Phase::Open | Phase::CloseSent => self.frames(key, bytes),
            // Bytes after our final answer, or before connecting: nothing to do with them.
            Phase::Flushing | Phase::Connecting(_) => {}
        }
    }

    /// The peer's side ended (end of stream or an error) without a closing handshake.
    fn peer_gone(&mut self, key: usize, error: Option<io::Error>) {
        let conn = &self.core.conns[key];
        match &conn.phase {
            Phase::Open => {
                self.core.counters.incr(Counter::ClosedAbnormal);
                self.core.notify_close(key, CloseCode::ABNORMAL_CLOSURE, "");
            }
            Phase::Connecting(_) | Phase::Dialing { .. } => {
                let error = error.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the handshake",
                    )
                });
                self.dial_failed(key, Error::Io(error));
            }
            Phase::Handshake { .. } | Phase::Deciding(_) | Phase::CloseSent | Phase::Flushing => {}
        }
        self.core.doom(key);
    }

    // --- send -------------------------------------------------------------------------

    /// A send completed with `result` (bytes sent, all of its batch, or an error).
    pub(crate) fn on_send(&mut self, key: u32, generation: u32, result: i32) {
        let Some(conn) = self.core.get(key, generation) else {
            return;
        };
        if conn.doomed {
            return;
        }
        let key = key as usize;
        self.core.conns[key].sending = false;
        if result < 0 {
            return self.peer_gone(key, Some(io::Error::from_raw_os_error(-result)));
        }
        let sent = result as usize;
        self.core.counters.sub(Counter::QueuedBytes, sent as u64);
        let cap = self.core.config.max_queued_bytes;
        let conn = &mut self.core.conns[key];
        // The bound also counts from here: a send that waited for the peer's window
        // (a slow reader) is as recent as its completion, so the next frames join a send
        // rather than leave one by one behind it (`coalesce.rs`).
        conn.sent_at = self.corks.stamp(self.core.now);
        let drained = conn.outbox.sent(sent, cap);
        if !conn.outbox.is_empty() {
            if !conn.dirty {
                conn.dirty = true;
                self.core.dirty.push_back(key as u32);
            }
        } else if matches!(conn.phase, Phase::Flushing) {
            self.core.doom(key);
            return;
        }
        if drained && conn.is_open() {
            self.core.notices.push_back(Notice::Drain {
                key: key as u32,
                generation,
            });
        }
    }

    /// Starts one send per connection with something queued and no send in flight (the
    /// driver gathers each one's batch: [`Op::Send`]), but for connections that hold
    /// their published frames for a fuller send (`coalesce.rs`). At most
    /// [`SENDS_PER_TURN`] start per turn, oldest first; the rest stay listed for the next
    /// turn, which comes without a wait ([`wait_time`](Self::wait_time)).
    fn flush(&mut self) {
        self.core.settle_runs();
        let now = self.core.now;
        let mut started = 0;
        while started < SENDS_PER_TURN {
            let Some(key) = self.core.dirty.pop_front() else {
                break;
            };
            let Some(conn) = self.core.conns.get_mut(key as usize) else {
                continue;
            };
            conn.dirty = false;
            if conn.sending || conn.doomed || conn.outbox.is_empty() {
                continue;
            }
            let generation = conn.generation;
            if self
                .corks
                .holds(now, conn.sent_at, conn.outbox.queued_bytes(), conn.direct)
            {
                if !conn.held {
                    conn.held = true;
                    self.corks.hold(key, generation, now, conn.sent_at);
                }
                continue;
            }
            conn.sending = true;
            conn.held = false;
            conn.direct = false;
            conn.sent_at = self.corks.stamp(now);
            self.ops.push(Op::Send { key, generation });
            started += 1;
        }
    }

    /// Held connections whose bound has come are flushed this turn.
    fn release_corks(&mut self) {
        let conns = &self.core.conns;
        self.corks.release_due(self.core.now, |key, generation| {
            let conn = conns.get(key as usize)?;
            (conn.generation == generation && conn.held).then_some(conn.sent_at)
        });
        for (key, _) in self.corks.released.drain(..) {
            let conn = &mut self.core.conns[key as usize];
            conn.held = false;
            if !conn.dirty {
                conn.dirty = true;
                self.core.dirty.push_back(key);
            }
        }
    }

    // --- commands, timers, shutdown -----------------------------------------------------

    /// Handles one command another thread queued.
    pub(crate) fn command(&mut self, command: Command) {
        match command {
            Command::Send { id, message } => self.send_to(id, message),
            Command::Close { id, code, reason } => {
                if self.core.get(id.key() as u32, id.generation()).is_some() {
                    self.core.close(id.key(), code, &reason, Cause::Server);
                }
            }
            Command::Dial(pending) => self.start_dial(pending),
            Command::Adopt(adoption) => self.adopt(*adoption),
            Command::Decide { id, answer } => self.decided(id, *answer),
            Command::Publish(publish) => {
                self.core.deliver(&publish);
            }
            Command::Shutdown => self.begin_shutdown(),
        }
        self.settle();
    }

    /// Gives the bytes of the commands handled this turn back to this worker's budget at
    /// once (one atomic operation per turn, which wakes whoever waits for room).
    pub(crate) fn commands_handled(&mut self, freed: usize) {
        if freed > 0 {
            let budget = &self.core.shared.workers[self.core.worker].budget;
            let before = budget.release(freed) as u64;
            if before > self.core.counters.get(Counter::HandoffPeakBytes) {
                self.core.counters.set(Counter::HandoffPeakBytes, before);
            }
        }
    }

    fn send_to(&mut self, id: super::ConnId, message: Outgoing) {
        let key = id.key();
        let Some(conn) = self.core.get(key as u32, id.generation()) else {
            self.core.counters.incr(Counter::Drops);
            return;
        };
        if !conn.is_open() {
            self.core.counters.incr(Counter::Drops);
            return;
        }
        let (role, compression) = (conn.role, conn.compression);
        let frame = match message {
            Outgoing::Message(message_type, payload) => {
                self.core
                    .encode(role, compression, message_type.opcode(), &payload)
            }
            Outgoing::Prepared(prepared) => prepared.frame(role, compression),
        };
        // Refusals are counted by the core (drops, slow-consumer closes).
        let _ = self.core.queue_data(key, frame);
    }

    fn fire_timers(&mut self) {
        let now = self.core.now;
        let mut due = std::mem::take(&mut self.due);
        self.core
            .timers
            .expire(now, |key, tag| due.push((key, tag)));
        for &(key, tag) in &due {
            self.timer(key as usize, tag);
        }
        due.clear();
        self.due = due;
    }

    fn timer(&mut self, key: usize, tag: u32) {
        let generation = tag & Token::MAX_GENERATION;
        let now = self.core.now;
        let Some(conn) = self.core.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation || u32::from(conn.timer_seq) != tag >> 24 || conn.doomed {
            return; // superseded by a later filing, or another connection
        }
        conn.timer_at = None;
        let config = self.core.config.clone();
        match conn.phase {
            Phase::Handshake { .. } | Phase::Deciding(_) if now >= conn.deadline => {
                tracing::debug!(worker = self.core.worker, "handshake timeout");
                self.core.counters.incr(Counter::ClosedHandshakeTimeout);
                self.core.counters.incr(Counter::HandshakesFailed);
                return self.core.doom(key);
            }
            Phase::Connecting(_) | Phase::Dialing { .. } if now >= conn.deadline => {
                let error = io::Error::new(io::ErrorKind::TimedOut, "handshake timed out");
                self.dial_failed(key, Error::Io(error));
                return self.core.doom(key);
            }
            Phase::CloseSent | Phase::Flushing if now >= conn.deadline => {
                return self.core.doom(key);
            }
            Phase::Open => {
                if config
                    .idle_timeout
                    .is_some_and(|t| now >= conn.last_read + t)
                {
                    self.core
                        .close(key, CloseCode::GOING_AWAY, "idle timeout", Cause::Idle);
                    return;
                }
                if config
                    .ping_interval
                    .is_some_and(|t| now >= conn.last_read.max(conn.last_ping) + t)
                {
                    conn.last_ping = now;
                    let role = conn.role;
                    let frame = self.core.encode(role, None, OpCode::Ping, &[]);
                    self.core.queue_control(key, frame);
                }
            }
            _ => {}
        }
        self.core.arm_timer(key);
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.shutdown_at = Some(self.core.now + self.core.config.shutdown_timeout);
        self.accept_resume = None;
        if std::mem::take(&mut self.listening) {
            self.ops.push(Op::CloseListener);
        }
        let keys: Vec<usize> = self.core.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if matches!(
                self.core.conns[key].phase,
                Phase::Connecting(_) | Phase::Dialing { .. }
            ) {
                let error = io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the engine is shutting down",
                );
                self.dial_failed(key, Error::Io(error));
            }
            self.core.close(
                key,
                CloseCode::GOING_AWAY,
                "server shutting down",
                Cause::Shutdown,
            );
        }
    }

    /// Whether a shutdown is done: no socket left, or its timeout passed.
    pub(crate) fn finished(&self) -> bool {
        self.shutdown_at
            .is_some_and(|at| self.core.conns.is_empty() || self.core.now >= at)
    }

    /// Closes whatever is left (the driver then hands the closes to the kernel).
    pub(crate) fn stop(&mut self) {
        let keys: Vec<usize> = self.core.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.core.doom(key);
        }
        self.settle();
        while self.core.is_leaving() {
            self.core.leave_some();
        }
        self.publish_stats();
    }

    // --- bookkeeping --------------------------------------------------------------------

    /// Runs owed callbacks, then closes and removes doomed sockets, until neither is left.
    pub(crate) fn settle(&mut self) {
        loop {
            self.settle_notices();
            if self.core.doomed.is_empty() {
                break;
            }
            self.reap();
        }
    }

    fn settle_notices(&mut self) {
        loop {
            // Publishes a handle made inside the callback just run reach this worker's
            // subscribers now, in order (`server::fanout`).
            deliver_pending(&mut self.core);
            let Some(notice) = self.core.notices.pop_front() else {
                break;
            };
            match notice {
                Notice::Close {
                    key,
                    generation,
                    code,
                    reason,
                } => {
                    if self.core.get(key, generation).is_some() {
                        Self::call(&mut self.handler, &mut self.core, key as usize, |h, s| {
                            h.on_close(s, code, &reason)
                        });
                    }
                }
                Notice::Drain { key, generation } => {
                    if self.core.get(key, generation).is_some_and(|c| c.is_open()) {
                        Self::call(&mut self.handler, &mut self.core, key as usize, |h, s| {
                            h.on_drain(s)
                        });
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        let doomed = std::mem::take(&mut self.core.doomed);
        for key in doomed {
            let key = key as usize;
            let Some(conn) = self.core.conns.get(key) else {
                continue;
            };
            if conn.opened {
                // Closed without a word from either side (reset, timeout): 1006.
                self.core.counters.incr(Counter::ClosedAbnormal);
                self.core.notify_close(key, CloseCode::ABNORMAL_CLOSURE, "");
                self.settle_notices();
            }
            let conn = &mut self.core.conns[key];
            let fd = std::mem::replace(&mut conn.fd, SocketFd::detached());
            let outbox = std::mem::take(&mut conn.outbox);
            // Whatever it held for reading goes now, not when its topics are left.
            conn.inflate_paused = false;
            conn.decoder = None;
            self.paused.remove(&(key as u32));
            self.ops.push(Op::Close(fd));
            self.core.counters.sub(Counter::Sockets, 1);
            self.core
                .counters
                .sub(Counter::QueuedBytes, outbox.queued_bytes() as u64);
            self.core.retire(key);
        }
    }

    /// Publishes this worker's counters for the handles.
    pub(crate) fn publish_stats(&mut self) {
        self.core.shared.workers[self.core.worker]
            .counters
            .publish(&self.core.counters);
    }

    /// Runs a callback of the handler for connection `key`, then the callbacks it made
    /// owed (`on_close`, `on_drain`) and the publishes its handle made: the one way an
    /// event reaches the handler (`settle_notices` itself runs the owed ones).
    fn callback(&mut self, key: usize, f: impl FnOnce(&mut H, &mut Socket<'_, H::Data>)) {
        Self::call(&mut self.handler, &mut self.core, key, f);
        self.settle_notices();
    }

    /// Calls the handler with a socket for `key` (split borrows: the handler and the core
    /// are separate fields).
    fn call(
        handler: &mut H,
        core: &mut Core<H::Data>,
        key: usize,
        f: impl FnOnce(&mut H, &mut Socket<'_, H::Data>),
    ) {
        let mut socket = Socket::new(core, key);
        f(handler, &mut socket);
    }
}
