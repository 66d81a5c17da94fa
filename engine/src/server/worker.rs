//! [`Worker`]: the loop of one core. It owns its driver (ring or epoll), listener,
//! connections, arena, timers and handler; other threads reach it only through its
//! command channel and waker.
//!
//! One turn: wait for completions; hand each to its connection (accept, receive, send,
//! connect); take commands from other threads; fire due timers; then start one vectored
//! send per connection that has something queued. Callbacks the handler is owed
//! (`on_close`, `on_drain`) run right after the callback or completion that caused them,
//! and sockets are closed and removed only between completions, never under a callback.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;

use crate::error::Error;
use crate::proto::deflate::{DeflateSettings, Inflater, PerMessageDeflate};
use crate::proto::handshake::{self, HandshakeError, Request};
use crate::proto::{CloseCode, Decoder, Event, OpCode, ProtocolError, Role};
use crate::sys::{socket, Completion, Driver, OpKind, RecvBuf, SendBuf, SocketFd, Token};

use super::conn::{Paused, Phase};
use super::core::{Cause, Core, Notice};
use super::dial::Pending;
use super::fanout::deliver_pending;
use super::handle::{Command, Outgoing, Shared};
use super::stats::Counter;
use super::{Handler, ServerConfig, Socket};

/// The accept operation's token: the listener is not in the slab.
const ACCEPT: Token = Token::new(OpKind::Accept, u32::MAX, 0);
/// Input that may wait for a connection's paused inflation before reading from it stops.
const PAUSED_INPUT_MAX: usize = 64 * 1024;
/// First and longest pause of accepting after an error such as `EMFILE`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// One worker thread's state.
pub(crate) struct Worker<H: Handler> {
    handler: H,
    core: Core<H::Data>,
    driver: Driver,
    inflater: Inflater,
    commands: Receiver<Command>,
    listener: Option<SocketFd>,
    /// Accepting is paused until then (after an accept error).
    accept_resume: Option<Instant>,
    accept_backoff: Duration,
    /// Set by a shutdown: when the worker stops, whatever is left.
    shutdown_at: Option<Instant>,
    /// Plaintext opened from TLS records, reused between receives.
    plain: Vec<u8>,
    /// Timers due this turn, reused between turns.
    due: Vec<(u32, u32)>,
    /// The buffers of the send being built, reused between sends.
    batch: Vec<SendBuf>,
    /// Connections whose inflation paused at their budget, by slab key.
    paused: HashMap<u32, Paused>,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(
        index: usize,
        handler: H,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        driver: Driver,
        commands: Receiver<Command>,
        listener: Option<OwnedFd>,
    ) -> Self {
        Worker {
            handler,
            core: Core::new(index, config, shared),
            driver,
            inflater: Inflater::new(),
            commands,
            listener: listener.map(SocketFd::from),
            accept_resume: None,
            accept_backoff: ACCEPT_BACKOFF.0,
            shutdown_at: None,
            plain: Vec::new(),
            due: Vec::new(),
            batch: Vec::new(),
            paused: HashMap::new(),
        }
    }

    /// Runs until shut down. Only a failure of the ring itself ends it early.
    pub(crate) fn run(mut self) -> io::Result<()> {
        super::fanout::mark_worker_thread(&self.core.shared, self.core.worker);
        if let Some(listener) = &self.listener {
            self.driver.accept(listener, ACCEPT);
        }
        loop {
            let timeout = self.wait_time();
            if let Err(err) = self.driver.submit_and_wait(timeout) {
                // The ring itself failed: still tell the handler about every connection.
                self.stop();
                return Err(err);
            }
            self.core.now = Instant::now();
            while let Some(completion) = self.driver.next_completion() {
                self.dispatch(completion);
                self.settle();
            }
            self.take_commands();
            self.fire_timers();
            self.resume_accepting();
            self.resume_paused();
            self.settle();
            self.core.leave_some();
            self.flush();
            self.publish_stats();
            if self.finished() {
                break;
            }
        }
        self.stop();
        Ok(())
    }

    /// How long the next wait may last: not at all while closed connections are still
    /// leaving their topics; else until the next timer, accept resumption or shutdown
    /// deadline; without bound when none is pending.
    fn wait_time(&self) -> Option<Duration> {
        if self.core.is_leaving() || !self.paused.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.core.timers.next_deadline(),
            self.accept_resume,
            self.shutdown_at,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn dispatch(&mut self, completion: Completion) {
        match completion.token.kind() {
            OpKind::Accept => self.on_accept(completion),
            OpKind::Recv => self.on_recv(completion),
            OpKind::Send => self.on_send(completion),
            OpKind::Connect => self.on_connect(completion),
            // Commands are taken every turn; the wake-up only ended the wait.
            OpKind::Wake => {}
        }
    }

    // --- accept ---------------------------------------------------------------------

    fn on_accept(&mut self, c: Completion) {
        if let Some(fd) = c.socket {
            self.accept_backoff = ACCEPT_BACKOFF.0;
            self.accepted(fd);
            if !c.more {
                self.rearm_accept();
            }
            return;
        }
        if c.result == -libc::ECANCELED || self.listener.is_none() {
            return;
        }
        // EMFILE, ENFILE, ENOBUFS...: the operation has ended; pause, then try again.
        self.core.counters.incr(Counter::AcceptErrors);
        let error = io::Error::from_raw_os_error(-c.result);
        tracing::warn!(worker = self.core.worker, %error, pause_ms = self.accept_backoff.as_millis() as u64, "accept failed; pausing");
        self.accept_resume = Some(self.core.now + self.accept_backoff);
        self.accept_backoff = (self.accept_backoff * 2).min(ACCEPT_BACKOFF.1);
    }

    fn accepted(&mut self, fd: OwnedFd) {
        self.core.counters.incr(Counter::Accepted);
        if self.shutdown_at.is_some() || self.core.conns.len() >= self.core.config.max_connections {
            self.core.counters.incr(Counter::Rejected);
            return drop(fd); // no operation runs on it yet: a plain close
        }
        let key = self.core.insert(
            SocketFd::from(fd),
            Role::Server,
            Phase::Handshake { head: Vec::new() },
        );
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
        conn.recv_armed = true;
        let token = Token::new(OpKind::Recv, key as u32, conn.generation);
        self.driver.recv(&conn.fd, token);
        self.core.arm_timer(key);
    }

    fn rearm_accept(&mut self) {
        if self.shutdown_at.is_none() {
            if let Some(listener) = &self.listener {
                self.driver.accept(listener, ACCEPT);
            }
        }
    }

    fn resume_accepting(&mut self) {
        if self.accept_resume.is_some_and(|at| at <= self.core.now) {
            self.accept_resume = None;
            self.rearm_accept();
        }
    }

    // --- receive --------------------------------------------------------------------

    fn on_recv(&mut self, c: Completion) {
        let (key, generation) = (c.token.key(), c.token.generation());
        let Some(conn) = self.core.get(key, generation) else {
            return; // a completion of a connection that is gone
        };
        if conn.doomed {
            return;
        }
        let key = key as usize;
        match c.result {
            n if n > 0 => {
                self.core.received_at = None;
                if let Some(buffer) = c.buffer {
                    self.received(key, buffer);
                }
                if !c.more {
                    self.recv_ended(key, generation);
                }
            }
            0 => self.peer_gone(key, None),
            // Buffers ran out, or a stop_recv (reading paused): the receive has ended.
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {
                if !c.more {
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
            self.driver
                .recv(&conn.fd, Token::new(OpKind::Recv, key as u32, generation));
        }
    }

    fn received(&mut self, key: usize, buffer: RecvBuf) {
        let conn = &mut self.core.conns[key];
        if conn.last_read != self.core.now {
            conn.inflated = 0; // the first receive of this turn: a new inflation budget
        }
        conn.last_read = self.core.now;
        if let Some(tls) = conn.tls.as_mut() {
            // Open the records into the worker's scratch buffer and go on with plaintext.
            let mut plain = std::mem::take(&mut self.plain);
            plain.clear();
            let opened = tls.open(buffer.as_slice(), &mut plain);
            drop(buffer);
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
        let mut buffer = buffer;
        self.received_plain(key, buffer.as_mut_slice());
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
        let deadline = self.core.now + self.core.config.close_timeout;
        let conn = &mut self.core.conns[key];
        if conn.outbox.is_empty() && !conn.sending {
            self.core.doom(key);
        } else {
            conn.phase = Phase::Flushing;
            conn.deadline = deadline;
            self.core.arm_timer(key);
        }
    }

    /// Bytes off the wire, or plaintext opened from TLS records.
    fn received_plain(&mut self, key: usize, bytes: &mut [u8]) {
        let conn = &mut self.core.conns[key];
        match &mut conn.phase {
            Phase::Handshake { head } => {
                head.extend_from_slice(bytes);
                self.request_head(key);
            }
            Phase::Dialing { head, .. } => {
                head.extend_from_slice(bytes);
                self.response_head(key);
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
            Phase::Handshake { .. } | Phase::CloseSent | Phase::Flushing => {}
        }
        self.core.doom(key);
    }

    // --- handshake, server side -------------------------------------------------------

    fn request_head(&mut self, key: usize) {
        let limits = self.core.config.upgrader.limits;
        let Phase::Handshake { head } = &mut self.core.conns[key].phase else {
            return;
        };
        match handshake::parse_request(head, &limits) {
            Ok(None) => {}
            Err(err) => self.refuse(key, None, err),
            Ok(Some((request, used))) => {
                let mut leftover = head[used..].to_vec();
                if handshake::is_websocket_upgrade(&request) {
                    self.upgrade(key, request, &mut leftover);
                } else {
                    self.http(key, &request);
                }
            }
        }
    }

    fn upgrade(&mut self, key: usize, request: Request, leftover: &mut [u8]) {
        let mut accepted = match self.core.config.upgrader.accept(&request) {
            Ok(accepted) => accepted,
            Err(err) => return self.refuse(key, Some(&request), err),
        };
        let extra = match self.handler.on_upgrade(&request).and_then(|extra| {
            self.core
                .config
                .upgrader
                .check_response_headers(&mut accepted, &request, &extra)?;
            Ok(extra)
        }) {
            Ok(extra) => extra,
            Err(err) => return self.refuse(key, Some(&request), err),
        };
        let mut response = Vec::with_capacity(256);
        handshake::write_response(&accepted, &extra, &mut response);
        self.core.queue_always(key, Bytes::from(response));
        let level = self.core.config.compression_level;
        let conn = &mut self.core.conns[key];
        conn.subprotocol = accepted.subprotocol.map(String::into_boxed_str);
        self.open(key, accepted.compression, level);
        Self::call(&mut self.handler, &mut self.core, key, |h, s| {
            h.on_open(s, &request)
        });
        self.settle_notices();
        if !leftover.is_empty() {
            self.frames(key, leftover);
        }
    }

    /// The handshake is done (either side): the connection is open.
    fn open(&mut self, key: usize, agreed: Option<PerMessageDeflate>, level: i32) {
        let now = self.core.now;
        let conn = &mut self.core.conns[key];
        conn.phase = Phase::Open;
        conn.opened = true;
        conn.last_read = now;
        conn.last_ping = now;
        conn.compression = agreed.map(|agreed| DeflateSettings {
            level,
            window_bits: match conn.role {
                Role::Server => agreed.server_max_window_bits,
                Role::Client => agreed.client_max_window_bits.flatten(),
            }
            .unwrap_or(15),
        });
        self.core.counters.incr(Counter::HandshakesOk);
        self.core.counters.incr(Counter::Connections);
        self.core.arm_timer(key);
    }

    fn refuse(&mut self, key: usize, request: Option<&Request>, err: HandshakeError) {
        tracing::debug!(worker = self.core.worker, status = err.status(), %err, "handshake refused");
        self.core.counters.incr(Counter::HandshakesFailed);
        let mut response = Vec::with_capacity(256);
        self.core
            .config
            .upgrader
            .write_refusal(request, &err, &mut response);
        self.answer_and_close(key, response);
    }

    fn http(&mut self, key: usize, request: &Request) {
        self.core.counters.incr(Counter::HttpRequests);
        let metrics = self.core.config.metrics_path.as_deref();
        let response = if request.method == "GET" && metrics == Some(request.path()) {
            // This worker's own counters are published first, so they are current.
            self.publish_stats();
            let handle = super::ServerHandle::from_shared(self.core.shared.clone());
            let workers: Vec<_> = (0..handle.workers())
                .map(|i| handle.worker_stats(i))
                .collect();
            let mut text = handle.stats().to_prometheus(&workers);
            if let Some(broker) = &self.core.shared.broker {
                broker.metrics(&mut text);
            }
            super::HttpResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
        } else {
            self.handler.on_http(request)
        };
        let mut out = Vec::with_capacity(256 + response.body.len());
        response.write_to(&mut out);
        self.answer_and_close(key, out);
    }

    fn answer_and_close(&mut self, key: usize, response: Vec<u8>) {
        self.core.queue_always(key, Bytes::from(response));
        let deadline = self.core.now + self.core.config.close_timeout;
        let conn = &mut self.core.conns[key];
        conn.phase = Phase::Flushing;
        conn.deadline = deadline;
        self.core.arm_timer(key);
    }

    // --- handshake, client side -------------------------------------------------------

    fn start_dial(&mut self, pending: Box<Pending>) {
        if self.shutdown_at.is_some() {
            self.core.counters.incr(Counter::DialsFailed);
            let error = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the engine is shutting down",
            );
            return self.handler.on_dial_error(pending.tag, Error::Io(error));
        }
        let fd = match socket::tcp_socket(&pending.addr).and_then(|fd| {
            // As for accepted sockets: frames are batched per turn, so Nagle only adds
            // latency (tens of ms when it meets the peer's delayed ACK).
            let _ = socket::set_nodelay(fd.as_fd());
            if let Some(source) = pending.source {
                socket::bind(fd.as_fd(), &std::net::SocketAddr::new(source, 0))?;
            }
            Ok(fd)
        }) {
            Ok(fd) => SocketFd::from(fd),
            Err(err) => {
                self.core.counters.incr(Counter::DialsFailed);
                self.handler.on_dial_error(pending.tag, Error::Io(err));
                return;
            }
        };
        let (addr, tag) = (pending.addr, pending.tag);
        let key = self
            .core
            .insert(fd, Role::Client, Phase::Connecting(pending));
        let deadline = self.core.now + self.core.config.handshake_timeout();
        let conn = &mut self.core.conns[key];
        conn.tag = tag;
        conn.deadline = deadline;
        let token = Token::new(OpKind::Connect, key as u32, conn.generation);
        self.driver.connect(&conn.fd, addr, token);
        self.core.arm_timer(key);
    }

    fn on_connect(&mut self, c: Completion) {
        let (key, generation) = (c.token.key(), c.token.generation());
        let Some(conn) = self.core.get(key, generation) else {
            return;
        };
        if conn.doomed {
            return;
        }
        let key = key as usize;
        if c.result < 0 {
            let error = io::Error::from_raw_os_error(-c.result);
            self.dial_failed(key, Error::Io(error));
            self.core.doom(key);
            return;
        }
        let conn = &mut self.core.conns[key];
        let Phase::Connecting(mut pending) = std::mem::replace(&mut conn.phase, Phase::Flushing)
        else {
            return;
        };
        // wss://: the ClientHello leaves with the request, which TLS holds until its
        // handshake is done (see `Tls::seal`).
        conn.tls = pending.tls.take();
        let mut request = Vec::with_capacity(256);
        handshake::write_request(&pending.client_request(), &mut request);
        conn.phase = Phase::Dialing {
            pending,
            head: Vec::new(),
        };
        self.core.queue_always(key, Bytes::from(request));
        self.rearm_recv(key, generation);
    }

    fn response_head(&mut self, key: usize) {
        let limits = self.core.config.upgrader.limits;
        let Phase::Dialing { pending, head } = &mut self.core.conns[key].phase else {
            return;
        };
        let (response, used) = match handshake::parse_response(head, &limits) {
            Ok(None) => return,
            Ok(Some(parsed)) => parsed,
            Err(err) => {
                self.dial_failed(key, Error::Handshake(err));
                return self.core.doom(key);
            }
        };
        let agreed = match handshake::validate_response(&response, &pending.client_request()) {
            Ok(agreed) => agreed,
            Err(err) => {
                self.dial_failed(key, Error::Handshake(err));
                return self.core.doom(key);
            }
        };
        let mut leftover = head[used..].to_vec();
        let request = pending.as_request();
        self.core.counters.incr(Counter::DialsOk);
        let level = self.core.config.compression_level;
        self.core.conns[key].subprotocol = agreed.subprotocol.map(String::into_boxed_str);
        self.open(key, agreed.compression, level);
        Self::call(&mut self.handler, &mut self.core, key, |h, s| {
            h.on_open(s, &request)
        });
        self.settle_notices();
        if !leftover.is_empty() {
            self.frames(key, &mut leftover);
        }
    }

    fn dial_failed(&mut self, key: usize, error: Error) {
        self.core.counters.incr(Counter::DialsFailed);
        self.core.counters.incr(Counter::HandshakesFailed);
        let tag = self.core.conns[key].tag;
        self.handler.on_dial_error(tag, error);
    }

    // --- frames -----------------------------------------------------------------------

    /// Decodes what arrived on an open (or closing) connection and hands each event on.
    /// A connection whose inflation is paused keeps its input for later (and past
    /// [`PAUSED_INPUT_MAX`] stops reading, so TCP slows the peer down).
    fn frames(&mut self, key: usize, input: &mut [u8]) {
        if self.core.conns[key].inflate_paused {
            if let Some(paused) = self.paused.get_mut(&(key as u32)) {
                paused.stash.extend_from_slice(input);
                if paused.stash.len() > PAUSED_INPUT_MAX {
                    self.pause_reading(key);
                }
            }
            return;
        }
        let mut inflater = std::mem::take(&mut self.inflater);
        match self.decode(key, input, &mut inflater) {
            Some(used) => {
                // The inflation in progress goes with the connection; the worker starts
                // a fresh inflater (it allocates nothing until used).
                let stash = input[used..].to_vec();
                self.pause(key, inflater, stash);
            }
            None => {
                inflater.trim();
                self.inflater = inflater;
            }
        }
    }

    /// Decodes `input` with `inflater` within the connection's inflation budget for this
    /// turn. `None` when done (all input used, or the connection stopped reading);
    /// `Some(used)` when a compressed message paused at the budget, `used` bytes in.
    fn decode(&mut self, key: usize, input: &mut [u8], inflater: &mut Inflater) -> Option<usize> {
        let read_limit = self.core.config.read_limit();
        let slice = self.core.config.max_inflate_per_turn;
        let conn = &mut self.core.conns[key];
        let role = conn.role;
        let budget = slice.saturating_sub(conn.inflated as usize);
        inflater.set_budget(budget);
        let mut decoder = match conn.decoder.take() {
            Some(partial) => *partial,
            None => {
                // Between messages a decoder is all settings: make one on the stack.
                let mut fresh = Decoder::new(role);
                fresh.set_compression(conn.compression.is_some());
                fresh.set_read_limit(read_limit);
                fresh
            }
        };
        let mut pos = 0;
        loop {
            let conn = &self.core.conns[key];
            if conn.doomed || !matches!(conn.phase, Phase::Open | Phase::CloseSent) {
                break;
            }
            let open = matches!(conn.phase, Phase::Open);
            let (used, event) = match decoder.decode(&mut input[pos..], inflater) {
                Ok(decoded) => decoded,
                Err(err) => {
                    self.protocol_error(key, err);
                    break;
                }
            };
            pos += used;
            let Some(event) = event else {
                break;
            };
            match event {
                Event::Message(message_type, payload) => {
                    self.core.counters.incr(Counter::MessagesIn);
                    self.core
                        .counters
                        .add(Counter::BytesIn, payload.len() as u64);
                    if open {
                        let mut socket = Socket::new(&mut self.core, key);
                        self.handler.on_message(&mut socket, message_type, payload);
                        self.settle_notices();
                    }
                }
                Event::Ping(payload) => {
                    if open {
                        let frame = self.core.encode(role, None, OpCode::Pong, payload);
                        self.core.queue_control(key, frame);
                    }
                }
                Event::Pong(_) | Event::Part { .. } => {}
                Event::Close(body) => {
                    let (code, reason) = match body {
                        Some((code, reason)) => (Some(code), reason.to_owned()),
                        None => (None, String::new()),
                    };
                    self.peer_closed(key, code, &reason);
                    break;
                }
            }
        }
        let paused = decoder.is_paused();
        if paused && budget > 0 {
            self.core.counters.incr(Counter::InflatePauses);
        }
        let conn = self.core.conns.get_mut(key)?;
        let spent = budget - inflater.budget();
        conn.inflated = conn.inflated.saturating_add(spent as u32);
        // Only a frame or message in progress is kept: an idle connection holds none.
        if !decoder.is_idle() {
            conn.decoder = Some(Box::new(decoder));
        }
        (paused && !conn.doomed).then_some(pos)
    }

    /// Parks a connection whose inflation paused at its budget, to go on next turn.
    fn pause(&mut self, key: usize, inflater: Inflater, stash: Vec<u8>) {
        let conn = &mut self.core.conns[key];
        conn.inflate_paused = true;
        let waiting = stash.len();
        let paused = Paused {
            generation: conn.generation,
            inflater,
            stash,
        };
        self.paused.insert(key as u32, paused);
        if waiting > PAUSED_INPUT_MAX {
            self.pause_reading(key);
        }
    }

    /// Goes on with the connections paused on an earlier turn (or earlier in this one,
    /// when their budget has come back): each decodes, within its budget, from where it
    /// stopped.
    fn resume_paused(&mut self) {
        let now = self.core.now;
        for (key, mut paused) in std::mem::take(&mut self.paused) {
            let Some(conn) = self
                .core
                .conns
                .get_mut(key as usize)
                .filter(|c| c.generation == paused.generation && !c.doomed)
            else {
                continue;
            };
            if conn.last_read != now {
                conn.inflated = 0; // a new turn: a new budget
            }
            conn.inflate_paused = false;
            let mut stash = std::mem::take(&mut paused.stash);
            match self.decode(key as usize, &mut stash, &mut paused.inflater) {
                Some(used) => {
                    stash.drain(..used);
                    paused.stash = stash;
                    self.core.conns[key as usize].inflate_paused = true;
                    self.paused.insert(key, paused);
                }
                None => self.resume_reading(key as usize),
            }
        }
    }

    /// Stops receiving on a connection whose waiting input passed [`PAUSED_INPUT_MAX`].
    fn pause_reading(&mut self, key: usize) {
        let conn = &mut self.core.conns[key];
        if conn.read_paused {
            return;
        }
        conn.read_paused = true;
        if conn.recv_armed {
            let token = Token::new(OpKind::Recv, key as u32, conn.generation);
            self.driver.stop_recv(&conn.fd, token);
        }
    }

    /// Receives again once a paused connection has caught up.
    fn resume_reading(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key).filter(|c| !c.doomed) else {
            return;
        };
        if conn.read_paused {
            conn.read_paused = false;
            if !conn.recv_armed {
                let generation = conn.generation;
                self.rearm_recv(key, generation);
            }
        }
    }

    fn peer_closed(&mut self, key: usize, code: Option<CloseCode>, reason: &str) {
        let conn = &mut self.core.conns[key];
        match conn.phase {
            Phase::Open => {
                // RFC 6455 section 5.5.1: answer with a close frame, echoing the code.
                let notify = code.unwrap_or(CloseCode::NO_STATUS_RECEIVED);
                self.core
                    .close_after_flush(key, code, notify, reason, Cause::Peer);
            }
            Phase::CloseSent => {
                if conn.outbox.is_empty() && !conn.sending {
                    self.core.doom(key);
                } else {
                    conn.phase = Phase::Flushing;
                }
            }
            _ => {}
        }
    }

    fn protocol_error(&mut self, key: usize, err: ProtocolError) {
        let conn = &self.core.conns[key];
        if matches!(conn.phase, Phase::Open) {
            let code = err.close_code();
            let reason = err.to_string();
            self.core
                .close_after_flush(key, Some(code), code, &reason, Cause::Protocol);
        } else {
            self.core.doom(key);
        }
    }

    // --- send -------------------------------------------------------------------------

    fn on_send(&mut self, c: Completion) {
        let (key, generation) = (c.token.key(), c.token.generation());
        let Some(conn) = self.core.get(key, generation) else {
            return;
        };
        if conn.doomed {
            return;
        }
        let key = key as usize;
        self.core.conns[key].sending = false;
        if c.result < 0 {
            return self.peer_gone(key, Some(io::Error::from_raw_os_error(-c.result)));
        }
        let sent = c.result as usize;
        self.core.counters.sub(Counter::QueuedBytes, sent as u64);
        let cap = self.core.config.max_queued_bytes;
        let conn = &mut self.core.conns[key];
        let drained = conn.outbox.sent(sent, cap);
        if !conn.outbox.is_empty() {
            if !conn.dirty {
                conn.dirty = true;
                self.core.dirty.push(key as u32);
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

    /// Starts one send per connection with something queued and no send in flight.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.core.dirty);
        for &key in &dirty {
            let Some(conn) = self.core.conns.get_mut(key as usize) else {
                continue;
            };
            conn.dirty = false;
            if conn.sending || conn.doomed || conn.outbox.is_empty() {
                continue;
            }
            let token = Token::new(OpKind::Send, key, conn.generation);
            conn.outbox
                .take_batch(&mut self.core.arena, &mut self.batch);
            self.driver.send(&conn.fd, token, self.batch.drain(..));
            conn.sending = true;
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.core.dirty.is_empty() {
            self.core.dirty = dirty;
        }
    }

    // --- commands, timers, shutdown -----------------------------------------------------

    /// Handles the commands other threads queued, then gives their bytes back to this
    /// worker's budget at once (one atomic operation per turn, which wakes whoever waits
    /// for room).
    fn take_commands(&mut self) {
        let mut freed = 0;
        while let Ok(command) = self.commands.try_recv() {
            freed += command.cost();
            match command {
                Command::Send { id, message } => self.send_to(id, message),
                Command::Close { id, code, reason } => {
                    if self.core.get(id.key() as u32, id.generation()).is_some() {
                        self.core.close(id.key(), code, &reason, Cause::Server);
                    }
                }
                Command::Dial(pending) => self.start_dial(pending),
                Command::Publish(publish) => {
                    self.core.deliver(&publish);
                }
                Command::Shutdown => self.begin_shutdown(),
            }
            self.settle();
        }
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
            Phase::Handshake { .. } if now >= conn.deadline => {
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
        if let Some(listener) = self.listener.take() {
            self.driver.close(listener);
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

    fn finished(&self) -> bool {
        self.shutdown_at
            .is_some_and(|at| self.core.conns.is_empty() || self.core.now >= at)
    }

    /// Closes whatever is left and hands the closes to the kernel.
    fn stop(&mut self) {
        let keys: Vec<usize> = self.core.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.core.doom(key);
        }
        self.settle();
        while self.core.is_leaving() {
            self.core.leave_some();
        }
        let _ = self.driver.submit();
        self.publish_stats();
    }

    // --- bookkeeping --------------------------------------------------------------------

    /// Runs owed callbacks, then closes and removes doomed sockets, until neither is left.
    fn settle(&mut self) {
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
            self.driver.close(fd);
            self.core.counters.sub(Counter::Sockets, 1);
            self.core
                .counters
                .sub(Counter::QueuedBytes, outbox.queued_bytes() as u64);
            self.core.retire(key);
        }
    }

    fn publish_stats(&mut self) {
        // Not `stats()`: on epoll that walks every descriptor.
        let shortages = self.driver.enobufs();
        self.core
            .counters
            .set(Counter::RecvBufferShortages, shortages);
        self.core.shared.workers[self.core.worker]
            .counters
            .publish(&self.core.counters);
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
