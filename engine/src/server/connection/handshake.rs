//! The opening handshake, both sides: the server reads a request head and upgrades,
//! refuses or answers plain HTTP; the client connects, sends its request and reads the
//! response head. Either way the connection ends up `Open` (`Machine::open`) or closing.

use std::io;
use std::os::fd::OwnedFd;

use bytes::Bytes;

use crate::error::Error;
use crate::proto::deflate::{DeflateSettings, PerMessageDeflate};
use crate::proto::handshake::{self, Accepted, HandshakeError, Request};
use crate::proto::Role;
use crate::sys::SocketFd;

use super::super::adopt::Adoption;
use super::super::conn::{Deciding, Phase};
use super::super::deferred::UpgradeAnswer;
use super::super::dial::Pending;
use super::super::stats::Counter;
use super::super::Handler;
use super::{Machine, Op};

impl<H: Handler> Machine<H> {
    // --- handshake, server side -------------------------------------------------------

    /// The request head grew; the bytes before `from` ended no head.
    pub(super) fn request_head(&mut self, key: usize, from: usize) {
        let limits = self.core.config.upgrader.limits;
        let Phase::Handshake { head } = &mut self.core.conns[key].phase else {
            return;
        };
        if !handshake::head_may_be_whole(head, from, &limits) {
            return;
        }
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

    pub(super) fn upgrade(&mut self, key: usize, request: Request, leftover: &mut [u8]) {
        let accepted = match self.core.config.upgrader.accept(&request) {
            Ok(accepted) => accepted,
            Err(err) => return self.refuse(key, Some(&request), err),
        };
        let generation = self.core.conns[key].generation;
        let id = super::super::ConnId::new(self.core.worker, key, generation);
        let answer = UpgradeAnswer::new(self.core.shared.clone(), id);
        match self.handler.defer_upgrade(&request, answer) {
            Some(answer) => answer.withdraw(),
            None => {
                let deciding = Deciding {
                    request,
                    accepted,
                    leftover: leftover.to_vec(),
                };
                self.core.conns[key].phase = Phase::Deciding(Box::new(deciding));
                return;
            }
        }
        let extra = self.handler.on_upgrade(&request);
        self.finish_upgrade(key, request, accepted, extra, leftover);
    }

    /// The answer to a deferred upgrade came: finish it, if the connection still waits.
    pub(super) fn decided(
        &mut self,
        id: super::super::ConnId,
        answer: Result<Vec<(String, String)>, HandshakeError>,
    ) {
        let key = id.key();
        let Some(conn) = self.core.get(key as u32, id.generation()) else {
            return; // gone: timed out, or the client left
        };
        if conn.doomed || !matches!(conn.phase, Phase::Deciding(_)) {
            return;
        }
        let Phase::Deciding(deciding) =
            std::mem::replace(&mut self.core.conns[key].phase, Phase::Flushing)
        else {
            return;
        };
        let Deciding {
            request,
            accepted,
            mut leftover,
        } = *deciding;
        self.finish_upgrade(key, request, accepted, answer, &mut leftover);
    }

    /// The handler's decision on a checked request: the 101 and `on_open`, then the bytes
    /// that came after the request; or the refusal.
    fn finish_upgrade(
        &mut self,
        key: usize,
        request: Request,
        mut accepted: Accepted,
        decision: Result<Vec<(String, String)>, HandshakeError>,
        leftover: &mut [u8],
    ) {
        let extra = match decision.and_then(|extra| {
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
        self.callback(key, |h, s| h.on_open(s, &request));
        if !leftover.is_empty() {
            self.frames(key, leftover);
        }
    }

    /// A connection whose 101 another server wrote ([`Adoption`]): open at once, as an
    /// upgrade the engine accepted would be, then the bytes read past its request.
    pub(super) fn adopt(&mut self, adoption: Adoption) {
        let Adoption {
            socket,
            request,
            read_past,
            subprotocol,
            compression,
            tag,
            worker: _,
        } = adoption;
        let fd = SocketFd::from(OwnedFd::from(socket));
        if self.shutdown_at.is_some() || self.core.conns.len() >= self.core.config.max_connections {
            self.core.counters.incr(Counter::Rejected);
            return self.ops.push(Op::Close(fd));
        }
        let key = self.core.insert(fd, Role::Server, Phase::Flushing);
        let conn = &mut self.core.conns[key];
        conn.tag = tag;
        conn.subprotocol = subprotocol.map(String::into_boxed_str);
        let generation = conn.generation;
        self.rearm_recv(key, generation);
        let level = self.core.config.compression_level;
        self.open(key, compression, level);
        self.callback(key, |h, s| h.on_open(s, &request));
        if !read_past.is_empty() {
            self.frames(key, &mut read_past.to_vec());
        }
    }

    /// The handshake is done (either side): the connection is open.
    pub(super) fn open(&mut self, key: usize, agreed: Option<PerMessageDeflate>, level: i32) {
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

    pub(super) fn refuse(&mut self, key: usize, request: Option<&Request>, err: HandshakeError) {
        tracing::debug!(worker = self.core.worker, status = err.status(), %err, "handshake refused");
        self.core.counters.incr(Counter::HandshakesFailed);
        let mut response = Vec::with_capacity(256);
        self.core
            .config
            .upgrader
            .write_refusal(request, &err, &mut response);
        self.answer_and_close(key, response);
    }

    pub(super) fn http(&mut self, key: usize, request: &Request) {
        self.core.counters.incr(Counter::HttpRequests);
        let metrics = self.core.config.metrics_path.as_deref();
        let response = if request.method == "GET" && metrics == Some(request.path()) {
            // This worker's own counters are published first, so they are current.
            self.publish_stats();
            let handle = super::super::ServerHandle::from_shared(self.core.shared.clone());
            let workers: Vec<_> = (0..handle.workers())
                .map(|i| handle.worker_stats(i))
                .collect();
            let mut text = handle.stats().to_prometheus(&workers);
            if let Some(broker) = &self.core.shared.broker {
                broker.metrics(&mut text);
            }
            super::super::HttpResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
        } else {
            self.handler.on_http(request)
        };
        let mut out = Vec::with_capacity(256 + response.body.len());
        response.write_to(&mut out);
        self.answer_and_close(key, out);
    }

    pub(super) fn answer_and_close(&mut self, key: usize, response: Vec<u8>) {
        self.core.queue_always(key, Bytes::from(response));
        let deadline = self.core.now + self.core.config.close_timeout;
        let conn = &mut self.core.conns[key];
        conn.phase = Phase::Flushing;
        conn.deadline = deadline;
        self.core.arm_timer(key);
    }

    // --- handshake, client side -------------------------------------------------------

    pub(super) fn start_dial(&mut self, pending: Box<Pending>) {
        if self.shutdown_at.is_some() {
            self.core.counters.incr(Counter::DialsFailed);
            let error = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the engine is shutting down",
            );
            return self.handler.on_dial_error(pending.tag, Error::Io(error));
        }
        let fd = match (self.dial_socket)(&pending) {
            Ok(fd) => fd,
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
        let generation = conn.generation;
        self.ops.push(Op::Connect {
            key: key as u32,
            generation,
            addr,
        });
        self.core.arm_timer(key);
    }

    /// A connect completed with `result` (0, or an error).
    pub(crate) fn on_connect(&mut self, key: u32, generation: u32, result: i32) {
        let Some(conn) = self.core.get(key, generation) else {
            return;
        };
        if conn.doomed {
            return;
        }
        let key = key as usize;
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
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

    /// The response head grew; the bytes before `from` ended no head.
    pub(super) fn response_head(&mut self, key: usize, from: usize) {
        let limits = self.core.config.upgrader.limits;
        let Phase::Dialing { pending, head } = &mut self.core.conns[key].phase else {
            return;
        };
        if !handshake::head_may_be_whole(head, from, &limits) {
            return;
        }
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
        self.callback(key, |h, s| h.on_open(s, &request));
        if !leftover.is_empty() {
            self.frames(key, &mut leftover);
        }
    }

    pub(super) fn dial_failed(&mut self, key: usize, error: Error) {
        self.core.counters.incr(Counter::DialsFailed);
        self.core.counters.incr(Counter::HandshakesFailed);
        let tag = self.core.conns[key].tag;
        self.handler.on_dial_error(tag, error);
    }
}
