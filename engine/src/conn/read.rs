//! The read side of a connection: the codec, the read buffer, the handlers, and the
//! loop that turns stream bytes into message parts. Shared by [`Conn`](super::Conn),
//! its readers and [`ReadHalf`](super::ReadHalf).

use std::io;
use std::time::{Duration, Instant};

use super::control::{self, Control, ControlWrite};
use super::{CloseHandler, PingHandler, PongHandler};
use crate::error::{CloseError, Error};
use crate::proto::deflate::Inflater;
use crate::proto::{CloseCode, Decoder, Event, MessageType, ProtocolError, Role};

/// What the read loop needs of the stream, and the write path its handlers answer on.
pub(crate) trait ReadIo: ControlWrite {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
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

/// Why reads fail for good: kept so every later read returns the same error.
#[derive(Debug, Clone)]
enum ReadFailure {
    Closed(CloseError),
    Protocol(ProtocolError),
    Io(io::ErrorKind, String),
}

impl ReadFailure {
    fn to_error(&self) -> Error {
        match self {
            ReadFailure::Closed(close) => Error::Closed(close.clone()),
            ReadFailure::Protocol(err) => Error::from(*err),
            ReadFailure::Io(kind, text) => Error::Io(io::Error::new(*kind, text.clone())),
        }
    }
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
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Bytes of a part that did not fit the caller's slice.
    pending: Vec<u8>,
    pending_pos: usize,
    /// The message being read, and whether its last part has been decoded.
    current: Option<MessageType>,
    last_seen: bool,
    pub(crate) deadline: Option<Instant>,
    timeout_set: Option<Duration>,
    failure: Option<ReadFailure>,
    pub(crate) ping_handler: PingHandler,
    pub(crate) pong_handler: PongHandler,
    pub(crate) close_handler: CloseHandler,
}

impl ReadState {
    pub(crate) fn new(role: Role, buffer_size: usize, leftover: &[u8]) -> ReadState {
        let mut buf = vec![0u8; buffer_size.max(leftover.len())].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        let mut decoder = Decoder::new(role);
        decoder.set_streaming(true);
        ReadState {
            decoder,
            inflater: Inflater::new(),
            buf,
            pos: 0,
            end: leftover.len(),
            pending: Vec::new(),
            pending_pos: 0,
            current: None,
            last_seen: false,
            deadline: None,
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

    /// One turn: decode one event (reading from the stream when the buffer is empty) and
    /// act on it. Data parts are returned; control frames are handled here.
    fn step<I: ReadIo>(&mut self, io: &mut I, dst: Dst<'_>) -> Result<Option<Step>, Error> {
        if let Some(failure) = &self.failure {
            return Err(failure.to_error());
        }
        match self.decode(dst) {
            Step::NeedMore => {
                self.fill(io)?;
                Ok(None)
            }
            part @ Step::Part { .. } => Ok(Some(part)),
            Step::Ping(data) => {
                let handler = self.ping_handler.clone();
                self.run_handler(io, |control| handler(data.as_slice(), control))?;
                Ok(None)
            }
            Step::Pong(data) => {
                let handler = self.pong_handler.clone();
                self.run_handler(io, |control| handler(data.as_slice(), control))?;
                Ok(None)
            }
            Step::Close(code, reason) => {
                let handler = self.close_handler.clone();
                let handled = self.run_handler(io, |control| handler(code, &reason, control));
                let close = CloseError { code, reason };
                self.failure = Some(ReadFailure::Closed(close.clone()));
                handled?;
                Err(Error::Closed(close))
            }
            Step::Fail(err) => {
                // RFC 6455 section 7.1.7: fail the connection with the rule's code.
                let payload = crate::format_close_message(err.close_code(), &err.to_string());
                let _ = io.write_control(MessageType::Close, &payload, None);
                self.failure = Some(ReadFailure::Protocol(err));
                Err(Error::from(err))
            }
        }
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
        // What the event borrowed is copied out by now.
        self.inflater.trim();
        self.pos += used;
        if self.pos >= self.end {
            self.pos = 0;
            self.end = 0;
        }
        step
    }

    /// Read more bytes from the stream into the (empty) read buffer.
    fn fill<I: ReadIo>(&mut self, io: &mut I) -> Result<(), Error> {
        let timeout = match self.deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.fail(io::ErrorKind::TimedOut, "read deadline passed"));
                }
                Some(left)
            }
        };
        if timeout != self.timeout_set {
            io.set_read_timeout(timeout)?;
            self.timeout_set = timeout;
        }
        match io.read(&mut self.buf[self.end..]) {
            Ok(0) => {
                // The peer went away without a close frame: the seed reports 1006.
                let close = CloseError {
                    code: CloseCode::ABNORMAL_CLOSURE,
                    reason: "unexpected eof".into(),
                };
                self.failure = Some(ReadFailure::Closed(close.clone()));
                Err(Error::Closed(close))
            }
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(self.fail(e.kind(), &e.to_string())),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, text: &str) -> Error {
        let failure = ReadFailure::Io(kind, text.to_owned());
        let err = failure.to_error();
        self.failure = Some(failure);
        err
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
