//! [`Connection`]: what a worker keeps per socket in its slab, and the [`Phase`] it is in.
//!
//! An open, idle connection holds no read buffer and no write buffer: the decoder frees
//! its message buffer between messages, the outbox frees its queue when drained, and
//! received bytes live in the driver's shared buffers only while they are decoded.

use std::time::Instant;

use crate::proto::deflate::{DeflateSettings, Inflater};
use crate::proto::{Decoder, Role};
use crate::sys::SocketFd;

use super::dial::Pending;
use super::outbox::Outbox;

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading the HTTP request head (server side); `head` holds what came so far.
    Handshake { head: Vec<u8> },
    /// The request was checked; the handler deferred its decision
    /// ([`Handler::defer_upgrade`](super::Handler::defer_upgrade)) and the answer has not
    /// come yet.
    Deciding(Box<Deciding>),
    /// Connecting (client side).
    Connecting(Box<Pending>),
    /// Request sent, reading the response head (client side).
    Dialing {
        pending: Box<Pending>,
        head: Vec<u8>,
    },
    /// WebSocket open both ways.
    Open,
    /// This side sent a close frame; waiting for the peer's, until `deadline`.
    CloseSent,
    /// Sending what is queued (an HTTP answer, a close reply), then closing the socket.
    Flushing,
}

/// An upgrade waiting for a deferred answer: the request, what the upgrader agreed, and
/// the bytes that came after the request meanwhile.
#[derive(Debug)]
pub(crate) struct Deciding {
    pub(crate) request: crate::proto::handshake::Request,
    pub(crate) accepted: crate::proto::handshake::Accepted,
    pub(crate) leftover: Vec<u8>,
}

/// A connection whose compressed message ran out of its inflation budget for this turn:
/// the inflation in progress, and the input that came after it, decoded on a later turn.
/// Kept by the worker beside the slab (few connections are ever paused), so an idle
/// connection pays only a flag.
#[derive(Debug)]
pub(crate) struct Paused {
    pub(crate) generation: u32,
    pub(crate) inflater: Inflater,
    pub(crate) stash: Vec<u8>,
}

/// One socket of a worker.
#[derive(Debug)]
pub(crate) struct Connection<D> {
    /// The socket, closed only through the driver when the connection is removed.
    pub(crate) fd: SocketFd,
    pub(crate) generation: u32,
    pub(crate) role: Role,
    pub(crate) phase: Phase,
    /// The decoder of a frame or message in progress; `None` between messages, when a
    /// fresh one (built from the settings, no allocation) would be the same.
    pub(crate) decoder: Option<Box<Decoder>>,
    pub(crate) outbox: Outbox,
    /// Agreed permessage-deflate settings for what this side sends.
    pub(crate) compression: Option<DeflateSettings>,
    pub(crate) subprotocol: Option<Box<str>>,
    /// The application's per-connection state.
    pub(crate) data: D,
    /// Topics subscribed to: (topic id, place in its subscriber list).
    pub(crate) topics: Vec<(u32, u32)>,
    /// TLS state, for a server with TLS or a `wss://` dial.
    pub(crate) tls: Option<Box<super::tls::Tls>>,
    /// Its inflation paused at the budget: the worker keeps a [`Paused`] for it.
    pub(crate) inflate_paused: bool,
    /// Bytes inflated for this connection in the turn of `last_read`.
    pub(crate) inflated: u32,
    /// A receive is in flight (started and its final completion not seen).
    pub(crate) recv_armed: bool,
    /// Reading is stopped while too much input waits for a paused inflation.
    pub(crate) read_paused: bool,
    /// The caller's tag of an outgoing connection (0 for accepted ones).
    pub(crate) tag: u64,
    /// A send is in flight (at most one, so bytes stay in order).
    pub(crate) sending: bool,
    /// When the last send started or, once it did, completed, as a
    /// [`Corks`](super::coalesce::Corks) stamp.
    pub(crate) sent_at: u32,
    /// A frame other than a published one (a reply, a control frame, an answer) was
    /// queued since the last send: the next send goes at once.
    pub(crate) direct: bool,
    /// Holding its published frames for a fuller send (listed in the worker's corks).
    pub(crate) held: bool,
    /// Listed in the worker's flush list for this turn.
    pub(crate) dirty: bool,
    /// `on_open` ran and `on_close` is not yet owed: it must run exactly once.
    pub(crate) opened: bool,
    /// Listed to be closed and removed at the end of this step.
    pub(crate) doomed: bool,
    /// Bumped whenever the connection is filed in the timer wheel anew; older entries are
    /// then ignored.
    pub(crate) timer_seq: u8,
    /// When the connection is filed in the timer wheel for, if it is.
    pub(crate) timer_at: Option<Instant>,
    /// When the current phase must end (handshake, close wait, flush).
    pub(crate) deadline: Instant,
    /// When something was last received.
    pub(crate) last_read: Instant,
    /// When the last automatic ping went out.
    pub(crate) last_ping: Instant,
}

impl<D: Default> Connection<D> {
    pub(crate) fn new(
        fd: SocketFd,
        generation: u32,
        role: Role,
        phase: Phase,
        now: Instant,
    ) -> Self {
        Connection {
            fd,
            generation,
            role,
            phase,
            decoder: None,
            outbox: Outbox::default(),
            compression: None,
            subprotocol: None,
            data: D::default(),
            topics: Vec::new(),
            tls: None,
            inflate_paused: false,
            inflated: 0,
            recv_armed: false,
            read_paused: false,
            tag: 0,
            sending: false,
            sent_at: 0,
            direct: false,
            held: false,
            dirty: false,
            opened: false,
            doomed: false,
            timer_seq: 0,
            timer_at: None,
            deadline: now,
            last_read: now,
            last_ping: now,
        }
    }
}

impl<D> Connection<D> {
    /// Whether data messages may still be queued.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open) && !self.doomed
    }
}
