//! The read side of a connection: the codec, the read buffer, the handlers, and the
//! loop that turns stream bytes into message parts. Shared by [`Conn`](super::Conn),
//! its readers and [`ReadHalf`](super::ReadHalf).
//!
//! Errors are permanent: once a read fails (a close, a broken rule, a deadline, an error
//! from a handler), every later read returns the same error. Memory a large message
//! needed (the decoder's gathering buffer, the inflater's, bytes a small `read` left
//! waiting) is given back when it ends.

use std::io;
use std::time::{Duration, Instant};

use super::control::{self, Control, ControlWrite};
use super::stream::timeout_kind;
use super::{CloseHandler, PingHandler, PongHandler};
use crate::error::{CloseError, Error};
use crate::proto::deflate::Inflater;
use crate::proto::{CloseCode, Decoder, Event, MessageType, ProtocolError, Role};

/// Buffers that grew past this for one message are freed when it ends, so an idle
/// connection holds no more than a small message needs.
pub(crate) const RELEASE_ABOVE: usize = 64 * 1024;

/// How long a close frame sent because the peer broke a rule may take: the connection
/// is failing, so it must not wait long.
const FAIL_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the read loop needs of the stream, and the write path its handlers answer on.
pub(crate) trait ReadIo: ControlWrite {
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize>;
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

/// The error a non-blocking driver's [`ReadIo`] returns when no bytes are there yet (its
/// stream said "pending"). Unlike every other read error it is not remembered: the read
/// state is as it was, and the same call made again goes on from there. The blocking
/// streams never return it.
#[derive(Debug)]
pub(crate) struct Pending;

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no bytes yet")
    }
}

impl std::error::Error for Pending {}

/// A [`Pending`] as an `io::Error`, for a [`ReadIo`] to return.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))] // only the async driver reads so
pub(crate) fn pending() -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, Pending)
}

/// Whether `err` is a [`Pending`].
pub(crate) fn is_pending(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<Pending>())
}

/// Where the bytes of a message part go.
pub(crate) enum Dst<'a> {
    /// As much as fits; the rest waits in the pending buffer.
    Slice(&'a mut [u8]),
    /// All of it, appended.
    Vec(&'a mut Vec<u8>),
    /// Nowhere: the rest of a message nobody reads.
    Discard,
}

/// A control payload copied out of the read buffer (at most 125 bytes), so that a
/// handler can write to the connection while it runs.
struct ControlPayload {
    bytes: [u8; 125],
    len: usize,
}

impl ControlPayload {
    fn new(data: &[u8]) -> Self {
        let mut bytes = [0u8; 125];
        let len = data.len().min(125);
        bytes[..len].copy_from_slice(&data[..len]);
        ControlPayload { bytes, len }
    }
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

enum Step {
    NeedMore,
    Part {
        message_type: MessageType,
        first: bool,
        last: bool,
        copied: usize,
    },
    Ping(ControlPayload),
    Pong(ControlPayload),
    Close(CloseCode, String),
    Fail(ProtocolError),
}

pub(crate) struct ReadState {
    decoder: Decoder,
    inflater: Inflater,
    /// The read buffer: empty (not allocated) while a non-blocking stream has nothing to
    /// give, so an idle async connection holds none.
    buf: Box<[u8]>,
    /// Its size when allocated.
    buffer_size: usize,
    pos: usize,
    end: usize,
    /// Bytes of a part that did not fit the caller's slice.
    pending: Vec<u8>,
    /// Bytes of the wire taken since the last message ended.
    message_wire: usize,
    pending_pos: usize,
    /// The message being read, and whether its last part has been decoded.
    current: Option<MessageType>,
    last_seen: bool,
    pub(crate) deadline: Option<Instant>,
    /// Reads fail once the peer has sent nothing for this long.
    pub(crate) idle_timeout: Option<Duration>,
    /// When bytes last arrived (set while an idle timeout is in force).
    last_heard: Instant,
    timeout_set: Option<Duration>,
    /// Why reads fail for good: every later read returns (a copy of) it.
    failure: Option<Error>,
    pub(crate) ping_handler: PingHandler,
    pub(crate) pong_handler: PongHandler,
    pub(crate) close_handler: CloseHandler,
}

impl ReadState {
    pub(crate) fn new(role: Role, buffer_size: usize, leftover: &[u8]) -> ReadState {
        let buf = if leftover.is_empty() {
            Box::default()
        } else {
            leftover.to_vec().into_boxed_slice()
        };
        let mut decoder = Decoder::new(role);
        decoder.set_streaming(true);
        ReadState {
            decoder,
            inflater: Inflater::new(),
            buf,
            buffer_size: buffer_size.max(1),
            pos: 0,
            end: leftover.len(),
            pending: Vec::new(),
            message_wire: 0,
            pending_pos: 0,
            current: None,
            last_seen: false,
            deadline: None,
            idle_timeout: None,
            last_heard: Instant::now(),
            timeout_set: None,
            failure: None,
            ping_handler: control::default_ping_handler(),
            pong_handler: control::default_pong_handler(),
            close_handler: control::default_close_handler(),
        }
    }

    pub(crate) fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    pub(crate) fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The bytes of buffer the read side holds between messages (the fixed read buffer
    /// aside): what a large message may leave behind.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.pending.capacity() + self.inflater.held_bytes()
    }

    /// The size of the read buffer held now (0: none).
    #[cfg(all(test, feature = "tokio"))]
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_timeout = timeout;
        self.last_heard = Instant::now();
    }

    /// Skip what is left of the current message, then wait for the first part of the
    /// next data message (handling control frames on the way) and return its type.
    pub(crate) fn next_message<I: ReadIo>(&mut self, io: &mut I) -> Result<MessageType, Error> {
        while self.current.is_some() {
            self.read_part(io, Dst::Discard)?;
        }
        loop {
            if let Some(Step::Part {
                message_type,
                first: true,
                last,
                ..
            }) = self.step(io, Dst::Slice(&mut []))?
            {
                self.current = Some(message_type);
                self.last_seen = last;
                return Ok(message_type);
            }
        }
    }

    /// Read the next bytes of the current message into `dst`; `Ok(0)` at its end (for a
    /// `Slice` destination, only when the slice is not empty).
    pub(crate) fn read_part<I: ReadIo>(
        &mut self,
        io: &mut I,
        mut dst: Dst<'_>,
    ) -> Result<usize, Error> {
        if self.current.is_none() {
            return Ok(0);
        }
        loop {
            if self.pending_pos < self.pending.len() {
                // Never decode past bytes still waiting: they come first.
                return Ok(self.take_pending(&mut dst));
            }
            if self.last_seen {
                self.current = None;
                self.last_seen = false;
                self.release_large_buffers();
                return Ok(0);
            }
            let dst_now = match &mut dst {
                Dst::Slice(s) => Dst::Slice(s),
                Dst::Vec(v) => Dst::Vec(v),
                Dst::Discard => Dst::Discard,
            };
            if let Some(Step::Part { last, copied, .. }) = self.step(io, dst_now)? {
                self.last_seen = last;
                if copied > 0 {
                    return Ok(copied);
                }
            }
        }
    }

    fn take_pending(&mut self, dst: &mut Dst<'_>) -> usize {
        let pending = &self.pending[self.pending_pos..];
        if pending.is_empty() {
            return 0;
        }
        let n = match dst {
            Dst::Slice(s) => {
                let n = s.len().min(pending.len());
                s[..n].copy_from_slice(&pending[..n]);
                n
            }
            Dst::Vec(v) => {
                v.extend_from_slice(pending);
                pending.len()
            }
            Dst::Discard => pending.len(),
        };
        self.pending_pos += n;
        if self.pending_pos >= self.pending.len() {
            self.pending.clear();
            self.pending_pos = 0;
        }
        n
    }

    /// Free what one large message made the read side hold: the decoder's gathering
    /// buffer (a compressed or fragmented message), the waiting bytes of a part a small
    /// `read` could not take. The inflater's buffers go as soon as their output is copied
    /// out (in `decode`).
    fn release_large_buffers(&mut self) {
        if self.pending.capacity() > RELEASE_ABOVE {
            self.pending = Vec::new();
            self.pending_pos = 0;
        }
        if self.message_wire > RELEASE_ABOVE {
            self.decoder.release_idle_memory();
        }
        self.message_wire = 0;
    }

    /// One turn: decode one event (reading from the stream when the buffer is empty) and
    /// act on it. Data parts are returned; control frames are handled here.
    fn step<I: ReadIo>(&mut self, io: &mut I, dst: Dst<'_>) -> Result<Option<Step>, Error> {
        if let Some(failure) = &self.failure {
            return Err(failure.duplicate());
        }
        match self.decode(dst) {
            Step::NeedMore => {
                self.fill(io)?;
                Ok(None)
            }
            part @ Step::Part { .. } => Ok(Some(part)),
            Step::Ping(data) => {
                let handler = self.ping_handler.clone();
                let handled = self.run_handler(io, |control| handler(data.as_slice(), control));
                self.keep_failure(handled).map(|()| None)
            }
            Step::Pong(data) => {
                let handler = self.pong_handler.clone();
                let handled = self.run_handler(io, |control| handler(data.as_slice(), control));
                self.keep_failure(handled).map(|()| None)
            }
            Step::Close(code, reason) => {
                let handler = self.close_handler.clone();
                let handled = self.run_handler(io, |control| handler(code, &reason, control));
                let closed = Error::Closed(CloseError { code, reason });
                // A handler's own error is what the caller hears; either way reads end.
                Err(self.remember(handled.err().unwrap_or(closed)))
            }
            Step::Fail(err) => {
                // RFC 6455 section 7.1.7: fail the connection with the rule's code.
                let mut payload = crate::format_close_message(err.close_code(), "");
                let reason = err.to_string();
                if reason.len() <= crate::proto::close::MAX_REASON_BYTES {
                    payload.extend_from_slice(reason.as_bytes());
                }
                let deadline = Some(Instant::now() + FAIL_CLOSE_WAIT);
                let _ = io.write_control(MessageType::Close, &payload, deadline);
                Err(self.remember(Error::from(err)))
            }
        }
    }

    /// Keep `err` as the reason every later read fails, and return it.
    fn remember(&mut self, err: Error) -> Error {
        self.failure = Some(err.duplicate());
        err
    }

    /// A handler's error ends reads for good, as every other read error does.
    fn keep_failure(&mut self, handled: Result<(), Error>) -> Result<(), Error> {
        handled.map_err(|err| self.remember(err))
    }

    /// Decode what is buffered into at most one step, copying out what must outlive the
    /// borrow of the read buffer.
    fn decode(&mut self, dst: Dst<'_>) -> Step {
        let input = &mut self.buf[self.pos..self.end];
        let (used, event) = match self.decoder.decode(input, &mut self.inflater) {
            Err(err) => return Step::Fail(err),
            Ok(decoded) => decoded,
        };
        let step = match event {
            None => Step::NeedMore,
            Some(Event::Part {
                message_type,
                data,
                first,
                last,
            }) => {
                let copied = copy_part(dst, data, &mut self.pending);
                Step::Part {
                    message_type,
                    first,
                    last,
                    copied,
                }
            }
            // The decoder is in streaming mode: whole messages come as one last part.
            Some(Event::Message(message_type, data)) => {
                let copied = copy_part(dst, data, &mut self.pending);
                Step::Part {
                    message_type,
                    first: true,
                    last: true,
                    copied,
                }
            }
            Some(Event::Ping(data)) => Step::Ping(ControlPayload::new(data)),
            Some(Event::Pong(data)) => Step::Pong(ControlPayload::new(data)),
            Some(Event::Close(None)) => Step::Close(CloseCode::NO_STATUS_RECEIVED, String::new()),
            Some(Event::Close(Some((code, reason)))) => Step::Close(code, reason.to_owned()),
        };
        // What the event borrowed is copied out by now: a large inflation's buffers go.
        if self.inflater.held_bytes() > RELEASE_ABOVE {
            self.inflater.release_memory();
        }
        // Every byte since the last message ended counts: a compressed message is
        // gathered by the decoder before its one part comes out.
        self.message_wire += used;
        self.pos += used;
        if self.pos >= self.end {
            self.pos = 0;
            self.end = 0;
        }
        step
    }

    /// When the next read must end: the read deadline, or the idle timeout after the
    /// last bytes heard, whichever comes first; and what to call it when it passes.
    fn read_deadline(&self) -> (Option<Instant>, &'static str) {
        let idle = self.idle_timeout.map(|t| self.last_heard + t);
        match (self.deadline, idle) {
            (Some(read), Some(idle)) if idle < read => (Some(idle), "idle timeout"),
            (Some(read), _) => (Some(read), "read deadline"),
            (None, Some(idle)) => (Some(idle), "idle timeout"),
            (None, None) => (None, "read deadline"),
        }
    }

    /// Read more bytes from the stream into the (empty) read buffer.
    fn fill<I: ReadIo>(&mut self, io: &mut I) -> Result<(), Error> {
        let (deadline, what) = self.read_deadline();
        let timeout = match deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.timed_out(what));
                }
                Some(left)
            }
        };
        if timeout != self.timeout_set {
            io.set_read_timeout(timeout)?;
            self.timeout_set = timeout;
        }
        // Empty here (`decode` took every byte), so the buffer is made anew when there is
        // none, or after the leftover of the handshake was read.
        if self.buf.len() != self.buffer_size {
            self.buf = vec![0u8; self.buffer_size].into_boxed_slice();
        }
        match io.read_by(&mut self.buf[self.end..], deadline) {
            // The peer went away without a close frame: a close with 1006 (abnormal
            // closure), as gorilla/websocket reports it.
            Ok(0) => Err(self.remember(abnormal_closure("unexpected eof"))),
            Ok(n) => {
                self.end += n;
                if self.idle_timeout.is_some() {
                    self.last_heard = Instant::now();
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            // Nothing yet on a non-blocking stream: nothing happened, nothing to remember;
            // the empty buffer goes until bytes come (an idle connection holds none).
            Err(e) if is_pending(&e) => {
                self.buf = Box::default();
                Err(Error::Io(e))
            }
            // A TLS stream reports a drop without close_notify so; it is a 1006 too.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.remember(abnormal_closure("unexpected eof")))
            }
            Err(e) => {
                let e = timeout_kind(e, deadline);
                if e.kind() == io::ErrorKind::TimedOut {
                    return Err(self.timed_out(what));
                }
                Err(self.remember(Error::Io(e)))
            }
        }
    }

    /// Reads end for good once a deadline (or the idle timeout) passed: every later read
    /// returns this `TimedOut` error.
    fn timed_out(&mut self, what: &str) -> Error {
        let err = io::Error::new(io::ErrorKind::TimedOut, format!("{what} passed"));
        self.remember(Error::Io(err))
    }

    fn run_handler<I, F>(&mut self, io: &mut I, f: F) -> Result<(), Error>
    where
        I: ReadIo,
        F: FnOnce(&mut Control<'_>) -> Result<(), Error>,
    {
        let mut control = Control {
            writer: io,
            read_deadline: &mut self.deadline,
        };
        f(&mut control)
    }
}

fn abnormal_closure(reason: &str) -> Error {
    Error::Closed(CloseError {
        code: CloseCode::ABNORMAL_CLOSURE,
        reason: reason.into(),
    })
}

/// Put a part's bytes where `dst` says; what a slice cannot hold waits in `pending`.
fn copy_part(dst: Dst<'_>, data: &[u8], pending: &mut Vec<u8>) -> usize {
    match dst {
        Dst::Slice(s) => {
            let n = s.len().min(data.len());
            s[..n].copy_from_slice(&data[..n]);
            pending.extend_from_slice(&data[n..]);
            n
        }
        Dst::Vec(v) => {
            v.extend_from_slice(data);
            data.len()
        }
        Dst::Discard => data.len(),
    }
}
