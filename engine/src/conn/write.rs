//! The write side of a connection: the encoder, the write buffer (owned or pooled),
//! compression settings, deadlines, and the close-sent state. Shared by
//! [`Conn`](super::Conn), [`MessageWriter`](super::MessageWriter) and
//! [`WriteHalf`](super::WriteHalf).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::ControlWrite;
use super::read::ReadIo;
use super::Stream;
use crate::error::Error;
use crate::pool::BufferPool;
use crate::proto::deflate::DeflateSettings;
use crate::proto::{Encoder, MessageType, OpCode, Role};

/// How long control frames wait to be written when no deadline is given: long enough for
/// a slow link, short enough that a stuck peer cannot hang a handler.
const CONTROL_WRITE_WAIT: Duration = Duration::from_secs(5);

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
    timeout_set: Option<Duration>,
    close_sent: bool,
    failure: Option<(io::ErrorKind, String)>,
}

/// A stream with the write state that goes with it.
pub(crate) struct WriteSide<S> {
    pub(crate) stream: S,
    pub(crate) state: WriteState,
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

    pub(crate) fn give_buf(&mut self, mut buf: Vec<u8>) {
        match &self.pool {
            Some(pool) => pool.put(buf),
            None => {
                // Keep the connection's own buffer, but not a huge one a big message grew.
                if buf.capacity() > 4 * self.buffer_size {
                    buf = Vec::with_capacity(self.buffer_size);
                }
                self.buf = Some(buf);
            }
        }
    }

    /// Append one frame of a data message: compressed (RSV1) when `compressed`.
    pub(crate) fn encode(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.encoder
            .encode_frame(opcode, fin, compressed, payload, out);
    }
}

impl<S: Stream> WriteSide<S> {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some((kind, text)) = &self.state.failure {
            return Err(Error::Io(io::Error::new(*kind, text.clone())));
        }
        if self.state.close_sent {
            return Err(Error::CloseSent);
        }
        Ok(())
    }

    /// Write a whole data message as one frame.
    pub(crate) fn write_data(
        &mut self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        self.check()?;
        let mut buf = self.state.take_buf();
        self.encode_data(message_type.opcode(), true, true, data, &mut buf);
        let result = self.send(&buf, self.state.deadline);
        self.state.give_buf(buf);
        result
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
        let s = &mut self.state;
        if s.compress && may_compress && fin {
            // One compressor per thread and level (they are large), not per connection.
            let mut compressed = Vec::with_capacity(data.len() / 2 + 64);
            crate::prepared::with_deflater(s.deflate, |d| d.compress(data, &mut compressed));
            s.encode(opcode, true, true, &compressed, out);
        } else {
            s.encode(opcode, fin, false, data, out);
        }
    }

    /// Write a prepared message's shared frame for this side and compression setting.
    pub(crate) fn write_prepared(&mut self, message: &crate::PreparedMessage) -> Result<(), Error> {
        self.check()?;
        let compression = self.state.compress.then_some(self.state.deflate);
        let frame = message.frame(self.state.role, compression);
        if message.message_type() == MessageType::Close {
            self.state.close_sent = true;
        }
        self.send(&frame, self.state.deadline)
    }

    /// Write bytes whole, within `deadline`. A failure breaks the write side for good.
    pub(crate) fn send(&mut self, bytes: &[u8], deadline: Option<Instant>) -> Result<(), Error> {
        let timeout = match deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.fail(io::ErrorKind::TimedOut, "write deadline passed"));
                }
                Some(left)
            }
        };
        if timeout != self.state.timeout_set {
            self.stream.set_write_timeout(timeout)?;
            self.state.timeout_set = timeout;
        }
        match self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e.kind(), &e.to_string())),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, text: &str) -> Error {
        self.state.failure = Some((kind, text.to_owned()));
        Error::Io(io::Error::new(kind, text.to_owned()))
    }
}

impl<S: Stream> ControlWrite for WriteSide<S> {
    fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
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
        self.check()?;
        let mut frame = Vec::with_capacity(2 + 4 + data.len());
        self.state
            .encode(message_type.opcode(), true, false, data, &mut frame);
        if message_type == MessageType::Close {
            self.state.close_sent = true;
        }
        let deadline = deadline.or_else(|| Some(Instant::now() + CONTROL_WRITE_WAIT));
        self.send(&frame, deadline)
    }
}

/// An unsplit connection reads through the same stream it writes to.
impl<S: Stream> ReadIo for WriteSide<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }
}
