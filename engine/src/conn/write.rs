//! The write side of a connection: the encoder, the write buffer (owned or pooled),
//! compression settings, deadlines, and the close-sent state. Shared by
//! [`Conn`](super::Conn), [`MessageWriter`](super::MessageWriter) and
//! [`WriteHalf`](super::WriteHalf).
//!
//! A failed write breaks the write side for good: every later write returns the same
//! error. The exception is a control frame whose deadline passed before it started:
//! nothing of it went out, so the connection stays usable (gorilla/websocket's
//! `WriteControl` likewise returns a timeout that leaves the connection usable when it
//! could not get the connection in time).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::ControlWrite;
use super::read::ReadIo;
use super::stream::{time_left, timeout_kind, Stream, WriteEnd};
use super::writer::WritePath;
use crate::error::Error;
use crate::pool::BufferPool;
use crate::proto::deflate::{with_message_deflater, DeflateSettings};
use crate::proto::{Encoder, MessageType, OpCode, Role};

/// A write buffer larger than this many times the configured size (and than
/// [`MIN_KEPT_BUFFER`]) is dropped after its message rather than kept or pooled: one large
/// message must not pin its size for the connection's (or the pool's) life.
const KEPT_BUFFER_FACTOR: usize = 4;

/// Buffers up to this size are always kept, whatever the configured buffer size.
const MIN_KEPT_BUFFER: usize = 16 * 1024;

pub(crate) struct WriteState {
    pub(crate) role: Role,
    encoder: Encoder,
    pub(crate) compression_negotiated: bool,
    pub(crate) compress: bool,
    pub(crate) deflate: DeflateSettings,
    pub(crate) buf: Option<Vec<u8>>,
    pub(crate) buffer_size: usize,
    pool: Option<Arc<dyn BufferPool>>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) write_timeout: Option<Duration>,
    timeout_set: Option<Duration>,
    close_sent: bool,
    failure: Option<(io::ErrorKind, String)>,
}

/// A stream with the write state that goes with it.
pub(crate) struct WriteSide<W> {
    pub(crate) stream: W,
    pub(crate) state: WriteState,
}

/// What a deadline that passed before a frame started means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A data frame: the write side is broken for good.
    Data,
    /// A control frame: only reported; nothing of it went out.
    Control,
}

impl WriteState {
    pub(crate) fn new(
        role: Role,
        compression: Option<DeflateSettings>,
        buffer_size: usize,
        pool: Option<Arc<dyn BufferPool>>,
    ) -> WriteState {
        WriteState {
            role,
            encoder: Encoder::new(role),
            compression_negotiated: compression.is_some(),
            compress: compression.is_some(),
            deflate: compression.unwrap_or_default(),
            buf: if pool.is_some() {
                None
            } else {
                Some(Vec::with_capacity(buffer_size))
            },
            buffer_size,
            pool,
            deadline: None,
            write_timeout: None,
            timeout_set: None,
            close_sent: false,
            failure: None,
        }
    }

    pub(crate) fn set_compression_level(&mut self, level: i32) -> Result<(), Error> {
        if !(-2..=9).contains(&level) {
            return Err(Error::InvalidArgument(format!(
                "compression level {level} outside -2..=9"
            )));
        }
        self.deflate.level = level;
        Ok(())
    }

    pub(crate) fn take_buf(&mut self) -> Vec<u8> {
        let mut buf = match self.buf.take() {
            Some(buf) => buf,
            None => self
                .pool
                .as_ref()
                .and_then(|p| p.get())
                .unwrap_or_else(|| Vec::with_capacity(self.buffer_size)),
        };
        buf.clear();
        buf
    }

    pub(crate) fn give_buf(&mut self, buf: Vec<u8>) {
        let oversized =
            buf.capacity() > (KEPT_BUFFER_FACTOR * self.buffer_size).max(MIN_KEPT_BUFFER);
        match &self.pool {
            // An oversized buffer is dropped, never handed to the pool.
            Some(pool) => {
                if !oversized {
                    pool.put(buf);
                }
            }
            None if oversized => self.buf = Some(Vec::with_capacity(self.buffer_size)),
            None => self.buf = Some(buf),
        }
    }

    /// The deadline of a data write starting now: the write deadline, or the write
    /// timeout from now, whichever comes first.
    pub(crate) fn data_deadline(&self) -> Option<Instant> {
        let timeout = self.write_timeout.map(|t| Instant::now() + t);
        match (self.deadline, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl WriteState {
    /// Whether a frame may be written: not after a failure, not after a close was sent.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(err) = self.failure() {
            return Err(err);
        }
        if self.close_sent {
            return Err(Error::CloseSent);
        }
        Ok(())
    }

    /// Encode one frame of a data message into `out`; the first frame of a message may be
    /// compressed (only a whole message can be: each is compressed on its own).
    pub(crate) fn encode_data(
        &mut self,
        opcode: OpCode,
        fin: bool,
        may_compress: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        if self.compress && may_compress && fin {
            // One compressor per thread and level (they are large), not per connection.
            let mut compressed = Vec::new();
            with_message_deflater(self.deflate, data.len(), |deflater| {
                self.encoder
                    .encode_message(opcode, data, Some(deflater), &mut compressed, out)
            });
        } else {
            self.encoder.encode_frame(opcode, fin, false, data, out);
        }
    }

    /// Check a control frame and encode it into `out`; a close marks the close as sent.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))] // the async driver's queue
    pub(crate) fn encode_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        check_control(message_type, data)?;
        self.check()?;
        self.encoder
            .encode_frame(message_type.opcode(), true, false, data, out);
        if message_type == MessageType::Close {
            self.close_sent = true;
        }
        Ok(())
    }

    /// A prepared message's shared frame for this side and compression setting; a close
    /// message marks the close as sent.
    pub(crate) fn prepared_frame(
        &mut self,
        message: &crate::PreparedMessage,
    ) -> Result<bytes::Bytes, Error> {
        self.check()?;
        let compression = self.compress.then_some(self.deflate);
        let frame = message.frame(self.role, compression);
        if message.message_type() == MessageType::Close {
            self.close_sent = true;
        }
        Ok(frame)
    }

    /// The error that broke the write side for good, if one did.
    pub(crate) fn failure(&self) -> Option<Error> {
        self.failure
            .as_ref()
            .map(|(kind, text)| Error::Io(io::Error::new(*kind, text.clone())))
    }

    /// Whether a close frame was sent (or queued, by a non-blocking driver).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))] // the async driver's queue
    pub(crate) fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Remember `err` so every later write fails with it, and return it.
    pub(crate) fn fail(&mut self, err: io::Error) -> Error {
        self.failure = Some((err.kind(), err.to_string()));
        Error::Io(err)
    }
}

impl<W: WriteEnd> WriteSide<W> {
    pub(crate) fn check(&self) -> Result<(), Error> {
        self.state.check()
    }

    /// Write a whole data message as one frame.
    pub(crate) fn write_data(
        &mut self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        self.check()?;
        let mut buf = self.state.take_buf();
        self.state
            .encode_data(message_type.opcode(), true, true, data, &mut buf);
        let deadline = self.state.data_deadline();
        let result = self.send(&buf, deadline, Frame::Data);
        self.state.give_buf(buf);
        result
    }

    /// Write a prepared message's shared frame for this side and compression setting.
    /// (A prepared close counts as sent even if its write fails: a failed data write
    /// breaks the write side for good anyway.)
    pub(crate) fn write_prepared(&mut self, message: &crate::PreparedMessage) -> Result<(), Error> {
        let frame = self.state.prepared_frame(message)?;
        let deadline = self.state.data_deadline();
        self.send(&frame, deadline, Frame::Data)
    }

    /// Write `bytes` whole by `deadline`. Any failure breaks the write side for good,
    /// except a control frame whose deadline passed before it started: nothing of it
    /// went out, so the connection stays usable.
    fn send(&mut self, bytes: &[u8], deadline: Option<Instant>, frame: Frame) -> Result<(), Error> {
        if let Err(err) = time_left(deadline, "write") {
            return Err(match frame {
                Frame::Control => Error::Io(err),
                Frame::Data => self.fail(err),
            });
        }
        let mut written = 0;
        while written < bytes.len() {
            let left = time_left(deadline, "write").map_err(|e| self.fail(e))?;
            if left != self.state.timeout_set {
                self.stream
                    .set_write_timeout(left)
                    .map_err(|e| self.fail(e))?;
                self.state.timeout_set = left;
            }
            match self.stream.write_by(&bytes[written..], deadline) {
                Ok(0) => {
                    let err = io::Error::new(io::ErrorKind::WriteZero, "the stream took no bytes");
                    return Err(self.fail(err));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(timeout_kind(e, deadline))),
            }
        }
        self.stream
            .flush()
            .map_err(|e| self.fail(timeout_kind(e, deadline)))
    }

    fn fail(&mut self, err: io::Error) -> Error {
        self.state.fail(err)
    }
}

impl<W: WriteEnd> ControlWrite for WriteSide<W> {
    fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        check_control(message_type, data)?;
        self.check()?;
        let mut frame = Vec::new();
        let opcode = message_type.opcode();
        self.state
            .encoder
            .encode_message(opcode, data, None, &mut Vec::new(), &mut frame);
        self.send(&frame, deadline, Frame::Control)?;
        if message_type == MessageType::Close {
            self.state.close_sent = true;
        }
        Ok(())
    }
}

impl<W: WriteEnd> WritePath for WriteSide<W> {
    fn begin(&mut self) -> Result<(Vec<u8>, usize, bool), Error> {
        self.check()?;
        Ok((
            self.state.take_buf(),
            self.state.buffer_size,
            self.state.compress,
        ))
    }

    fn fragment(
        &mut self,
        opcode: OpCode,
        fin: bool,
        may_compress: bool,
        payload: &[u8],
        frame: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.check()?;
        frame.clear();
        self.state
            .encode_data(opcode, fin, may_compress, payload, frame);
        let deadline = self.state.data_deadline();
        self.send(frame, deadline, Frame::Data)
    }

    fn control(&mut self, message_type: MessageType, payload: &[u8]) -> Result<(), Error> {
        let deadline = self.state.data_deadline();
        self.write_control(message_type, payload, deadline)
    }

    fn end(&mut self, buf: Vec<u8>) {
        self.state.give_buf(buf);
    }
}

/// A control frame is close, ping or pong with at most 125 bytes (RFC 6455 section 5.5).
pub(crate) fn check_control(message_type: MessageType, data: &[u8]) -> Result<(), Error> {
    if !message_type.is_control() {
        return Err(Error::InvalidArgument(format!(
            "write_control takes close, ping or pong, not {message_type:?}"
        )));
    }
    if data.len() > 125 {
        return Err(Error::InvalidArgument(format!(
            "control frame payload of {} bytes exceeds 125",
            data.len()
        )));
    }
    Ok(())
}

/// An unsplit connection reads through the same stream it writes to.
impl<S: Stream> ReadIo for WriteSide<S> {
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        Stream::read_by(&mut self.stream, buf, deadline)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        Stream::set_read_timeout(&self.stream, timeout)
    }
}
