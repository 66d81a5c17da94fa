//! An open (or closing) connection's input: frames decoded and handed on, compressed
//! messages inflated within a per-turn budget (the rest of the input waits, and past
//! `PAUSED_INPUT_MAX` reading stops), the peer's close answered, a protocol error closed
//! with its code.

use crate::proto::deflate::Inflater;
use crate::proto::{CloseCode, Decoder, Event, OpCode, ProtocolError};

use super::super::conn::{Paused, Phase};
use super::super::core::Cause;
use super::super::stats::Counter;
use super::super::Handler;
use super::{Machine, Op, PAUSED_INPUT_MAX};

impl<H: Handler> Machine<H> {
    // --- frames -----------------------------------------------------------------------

    /// Decodes what arrived on an open (or closing) connection and hands each event on.
    /// A connection whose inflation is paused keeps its input for later (and past
    /// [`PAUSED_INPUT_MAX`] stops reading, so TCP slows the peer down).
    pub(super) fn frames(&mut self, key: usize, input: &mut [u8]) {
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
    pub(super) fn decode(
        &mut self,
        key: usize,
        input: &mut [u8],
        inflater: &mut Inflater,
    ) -> Option<usize> {
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
                        self.callback(key, |h, s| h.on_message(s, message_type, payload));
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
    pub(super) fn pause(&mut self, key: usize, inflater: Inflater, stash: Vec<u8>) {
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
    pub(super) fn resume_paused(&mut self) {
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
    pub(super) fn pause_reading(&mut self, key: usize) {
        let conn = &mut self.core.conns[key];
        if conn.read_paused {
            return;
        }
        conn.read_paused = true;
        if conn.recv_armed {
            let generation = conn.generation;
            self.ops.push(Op::StopRecv {
                key: key as u32,
                generation,
            });
        }
    }

    /// Receives again once a paused connection has caught up.
    pub(super) fn resume_reading(&mut self, key: usize) {
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

    pub(super) fn peer_closed(&mut self, key: usize, code: Option<CloseCode>, reason: &str) {
        let conn = &mut self.core.conns[key];
        match conn.phase {
            Phase::Open => {
                // RFC 6455 section 5.5.1: answer with a close frame, echoing the code.
                let notify = code.unwrap_or(CloseCode::NO_STATUS_RECEIVED);
                self.core
                    .close_after_flush(key, code, notify, reason, Cause::Peer);
            }
            // Our close is answered: the socket closes once the queue is out, within
            // the close timeout that our close started.
            Phase::CloseSent => self.core.close_once_sent(key, false),
            _ => {}
        }
    }

    pub(super) fn protocol_error(&mut self, key: usize, err: ProtocolError) {
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
}
