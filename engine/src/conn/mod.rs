//! The blocking [`Conn`]: the seed's connection API over any [`Stream`].
//!
//! One reader and one writer at a time, as in the seed; here the borrow checker enforces
//! it (`&mut self`). The protocol work is all in [`crate::proto`]: this module only moves
//! bytes between the stream and the codec.

pub mod control;
pub mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{CloseError, Error};
use crate::pool::BufferPool;
use crate::proto::deflate::{Inflater, PerMessageDeflate, DEFAULT_COMPRESSION_LEVEL};
use crate::proto::{CloseCode, Decoder, Encoder, Event, MessageType, OpCode, ProtocolError, Role};

pub use control::{CloseHandler, Control, PingHandler, PongHandler};
pub use stream::Stream;

use control::ControlWrite;

/// The buffer size used when a setting says 0, as the seed's Dialer does.
pub const DEFAULT_BUFFER_SIZE: usize = 4096;

/// How long the default handlers and [`Conn::close_with`] wait to write a control frame
/// when no deadline is given: long enough for a slow link, short enough not to hang.
const CONTROL_WRITE_WAIT: Duration = Duration::from_secs(5);

/// Settings a connection starts with, filled in by the Upgrader or the Dialer.
#[derive(Clone, Default)]
pub(crate) struct ConnConfig {
    pub read_buffer_size: usize,
    pub write_buffer_size: usize,
    pub write_buffer_pool: Option<Arc<dyn BufferPool>>,
    pub subprotocol: Option<String>,
    pub compression: Option<PerMessageDeflate>,
    pub read_limit: Option<u64>,
}

/// A WebSocket connection over a blocking stream: the seed's `Conn`.
///
/// ```no_run
/// use std::net::TcpListener;
/// use ringcast::Upgrader;
///
/// # fn main() -> Result<(), ringcast::Error> {
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let (stream, _) = listener.accept()?;
/// let mut conn = Upgrader::default().upgrade(stream, &[])?;
/// loop {
///     let (message_type, payload) = conn.read_message()?;
///     conn.write_message(message_type, &payload)?;
/// }
/// # }
/// ```
pub struct Conn<S: Stream> {
    stream: S,
    role: Role,
    subprotocol: Option<String>,
    reader: ReadState,
    writer: WriteState,
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

struct ReadState {
    decoder: Decoder,
    inflater: Inflater,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    deadline: Option<Instant>,
    timeout_set: Option<Duration>,
    failure: Option<ReadFailure>,
    ping_handler: PingHandler,
    pong_handler: PongHandler,
    close_handler: CloseHandler,
}

struct WriteState {
    encoder: Encoder,
    compression_negotiated: bool,
    compress: bool,
    level: i32,
    buf: Option<Vec<u8>>,
    buffer_size: usize,
    pool: Option<Arc<dyn BufferPool>>,
    deadline: Option<Instant>,
    timeout_set: Option<Duration>,
    close_sent: bool,
    failure: Option<(io::ErrorKind, String)>,
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
    Message(MessageType, Vec<u8>),
    Ping(ControlPayload),
    Pong(ControlPayload),
    Close(CloseCode, String),
    Fail(ProtocolError),
}

impl<S: Stream> Conn<S> {
    /// Wrap a stream on which the opening handshake is done. `leftover` holds bytes read
    /// past the handshake (frames the peer sent at once).
    pub(crate) fn new(stream: S, role: Role, config: ConnConfig, leftover: &[u8]) -> Conn<S> {
        let read_size = nonzero(config.read_buffer_size).max(leftover.len());
        let mut buf = vec![0u8; read_size].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        let mut decoder = Decoder::new(match role {
            Role::Server => Role::Server,
            Role::Client => Role::Client,
        });
        if let Some(limit) = config.read_limit {
            decoder.set_read_limit(limit);
        }
        decoder.set_compression(config.compression.is_some());
        let write_size = nonzero(config.write_buffer_size);
        let buf_w = if config.write_buffer_pool.is_some() {
            None
        } else {
            Some(Vec::with_capacity(write_size))
        };
        Conn {
            stream,
            role,
            subprotocol: config.subprotocol,
            reader: ReadState {
                decoder,
                inflater: Inflater::new(),
                buf,
                pos: 0,
                end: leftover.len(),
                deadline: None,
                timeout_set: None,
                failure: None,
                ping_handler: control::default_ping_handler(),
                pong_handler: control::default_pong_handler(),
                close_handler: control::default_close_handler(),
            },
            writer: WriteState {
                encoder: Encoder::new(role),
                compression_negotiated: config.compression.is_some(),
                compress: config.compression.is_some(),
                level: DEFAULT_COMPRESSION_LEVEL,
                buf: buf_w,
                buffer_size: write_size,
                pool: config.write_buffer_pool,
                deadline: None,
                timeout_set: None,
                close_sent: false,
                failure: None,
            },
        }
    }

    /// Read the next data message whole: its type (text or binary) and payload. Ping,
    /// pong and close frames met on the way go to their handlers. A received close is
    /// returned as [`Error::Closed`]; after any error, every later read returns it again.
    pub fn read_message(&mut self) -> Result<(MessageType, Vec<u8>), Error> {
        loop {
            if let Some(failure) = &self.reader.failure {
                return Err(failure.to_error());
            }
            match self.decode_step() {
                Step::NeedMore => self.fill()?,
                Step::Message(message_type, payload) => return Ok((message_type, payload)),
                Step::Ping(data) => {
                    let handler = Arc::clone(&self.reader.ping_handler);
                    self.run_handler(|control| handler(data.as_slice(), control))?;
                }
                Step::Pong(data) => {
                    let handler = Arc::clone(&self.reader.pong_handler);
                    self.run_handler(|control| handler(data.as_slice(), control))?;
                }
                Step::Close(code, reason) => {
                    let handler = Arc::clone(&self.reader.close_handler);
                    let handled = self.run_handler(|control| handler(code, &reason, control));
                    self.reader.failure = Some(ReadFailure::Closed(CloseError { code, reason }));
                    handled?;
                }
                Step::Fail(err) => {
                    // RFC 6455 section 7.1.7: fail the connection with the rule's code.
                    let payload = crate::format_close_message(err.close_code(), &err.to_string());
                    let _ = self.write_control(MessageType::Close, &payload, None);
                    self.reader.failure = Some(ReadFailure::Protocol(err));
                }
            }
        }
    }

    /// Decode what is buffered into at most one step, copying out what must outlive the
    /// borrow of the read buffer.
    fn decode_step(&mut self) -> Step {
        let r = &mut self.reader;
        let input = &mut r.buf[r.pos..r.end];
        match r.decoder.decode(input, &mut r.inflater) {
            Err(err) => Step::Fail(err),
            Ok((used, event)) => {
                let step = match event {
                    None => Step::NeedMore,
                    Some(Event::Message(message_type, payload)) => {
                        Step::Message(message_type, payload.to_vec())
                    }
                    Some(Event::Part { message_type, .. }) => {
                        // Assembling mode never yields parts; treat one as a broken codec
                        // rather than panic on peer input.
                        let _ = message_type;
                        Step::Fail(ProtocolError::UnexpectedContinuation)
                    }
                    Some(Event::Ping(data)) => Step::Ping(ControlPayload::new(data)),
                    Some(Event::Pong(data)) => Step::Pong(ControlPayload::new(data)),
                    Some(Event::Close(None)) => {
                        Step::Close(CloseCode::NO_STATUS_RECEIVED, String::new())
                    }
                    Some(Event::Close(Some((code, reason)))) => {
                        Step::Close(code, reason.to_owned())
                    }
                };
                r.pos += used;
                if r.pos >= r.end {
                    r.pos = 0;
                    r.end = 0;
                }
                step
            }
        }
    }

    /// Read more bytes from the stream into the (empty) read buffer.
    fn fill(&mut self) -> Result<(), Error> {
        let r = &mut self.reader;
        let timeout = match r.deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.fail_read(io::ErrorKind::TimedOut, "read deadline passed"));
                }
                Some(left)
            }
        };
        if timeout != r.timeout_set {
            self.stream.set_read_timeout(timeout)?;
            self.reader.timeout_set = timeout;
        }
        let r = &mut self.reader;
        match self.stream.read(&mut r.buf[r.end..]) {
            Ok(0) => {
                // The peer went away without a close frame: the seed reports 1006.
                let close = CloseError {
                    code: CloseCode::ABNORMAL_CLOSURE,
                    reason: "unexpected eof".into(),
                };
                self.reader.failure = Some(ReadFailure::Closed(close.clone()));
                Err(Error::Closed(close))
            }
            Ok(n) => {
                r.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(self.fail_read(e.kind(), &e.to_string())),
        }
    }

    fn fail_read(&mut self, kind: io::ErrorKind, text: &str) -> Error {
        let failure = ReadFailure::Io(kind, text.to_owned());
        let err = failure.to_error();
        self.reader.failure = Some(failure);
        err
    }

    fn run_handler<F>(&mut self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&mut Control<'_>) -> Result<(), Error>,
    {
        let mut writer = Writer {
            stream: &mut self.stream,
            state: &mut self.writer,
        };
        let mut control = Control {
            writer: &mut writer,
            read_deadline: &mut self.reader.deadline,
        };
        f(&mut control)
    }

    /// Write one message as a single frame. Text and binary go through compression when
    /// it was negotiated and is enabled; close, ping and pong go to
    /// [`write_control`](Self::write_control). Fails with [`Error::CloseSent`] once a
    /// close frame was sent.
    pub fn write_message(&mut self, message_type: MessageType, data: &[u8]) -> Result<(), Error> {
        if message_type.is_control() {
            return self.write_control(message_type, data, None);
        }
        let mut writer = Writer {
            stream: &mut self.stream,
            state: &mut self.writer,
        };
        writer.write_data(message_type, data)
    }

    /// Write a [`PreparedMessage`](crate::PreparedMessage): its wire form for this side
    /// and compression setting is built once and shared by every connection sending it,
    /// so the payload is neither copied nor compressed again here.
    pub fn write_prepared_message(
        &mut self,
        message: &crate::PreparedMessage,
    ) -> Result<(), Error> {
        let mut writer = Writer {
            stream: &mut self.stream,
            state: &mut self.writer,
        };
        writer.check()?;
        let compression = writer.state.compress.then_some(writer.state.level);
        let frame = message.frame(self.role, compression);
        if message.message_type() == MessageType::Close {
            writer.state.close_sent = true;
        }
        let deadline = writer.state.deadline;
        writer.send(&frame, deadline)
    }

    /// Write a close, ping or pong frame (at most 125 bytes of `data`), waiting at most
    /// until `deadline` (`None`: a few seconds). May be called between reads and writes;
    /// the seed allows it from any goroutine, here it takes `&mut self`.
    pub fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let mut writer = Writer {
            stream: &mut self.stream,
            state: &mut self.writer,
        };
        writer.write_control(message_type, data, deadline)
    }

    /// Send a close frame with `code` and `reason` (the polite way to end). Read on until
    /// the peer's close arrives as [`Error::Closed`], then drop the connection.
    pub fn close_with(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let payload = crate::format_close_message(code, reason);
        self.write_control(MessageType::Close, &payload, None)
    }

    /// Close the underlying stream without sending or waiting for a close frame, as the
    /// seed's `Close` does.
    pub fn close(&self) -> Result<(), Error> {
        self.stream.shutdown().map_err(Error::from)
    }

    /// The largest message accepted from the peer, in bytes (default 64 MiB; 0: none).
    /// A larger message fails the read with [`Error::ReadLimit`] and closes with 1009.
    pub fn set_read_limit(&mut self, limit: u64) {
        self.reader.decoder.set_read_limit(limit);
    }

    /// The read limit in force.
    pub fn read_limit(&self) -> u64 {
        self.reader.decoder.read_limit()
    }

    /// Reads fail with `TimedOut` after `deadline` (`None`: never). After a read timed
    /// out the connection is broken and every later read fails, as in the seed.
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.deadline = deadline;
    }

    /// Writes fail after `deadline` (`None`: never). After a write timed out the
    /// connection is broken and every later write fails.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.writer.deadline = deadline;
    }

    /// Set the handler for received pings; `None` restores the default (answer pong).
    pub fn set_ping_handler(&mut self, handler: Option<PingHandler>) {
        self.reader.ping_handler = handler.unwrap_or_else(control::default_ping_handler);
    }

    /// The current ping handler (to wrap it).
    pub fn ping_handler(&self) -> PingHandler {
        Arc::clone(&self.reader.ping_handler)
    }

    /// Set the handler for received pongs; `None` restores the default (nothing).
    pub fn set_pong_handler(&mut self, handler: Option<PongHandler>) {
        self.reader.pong_handler = handler.unwrap_or_else(control::default_pong_handler);
    }

    /// The current pong handler.
    pub fn pong_handler(&self) -> PongHandler {
        Arc::clone(&self.reader.pong_handler)
    }

    /// Set the handler for a received close; `None` restores the default (send a close
    /// frame back with the same code). Either way the read returns [`Error::Closed`].
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.reader.close_handler = handler.unwrap_or_else(control::default_close_handler);
    }

    /// The current close handler.
    pub fn close_handler(&self) -> CloseHandler {
        Arc::clone(&self.reader.close_handler)
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Which side of the connection this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether permessage-deflate was negotiated.
    pub fn compression_negotiated(&self) -> bool {
        self.writer.compression_negotiated
    }

    /// The local address of the stream.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The stream under the connection, to set socket options (the seed's
    /// `UnderlyingConn`). Reading or writing it directly breaks the framing.
    pub fn underlying_conn(&self) -> &S {
        &self.stream
    }

    /// Compress later text and binary messages (default: on when negotiated). No effect
    /// when compression was not negotiated.
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.writer.compress = enable && self.writer.compression_negotiated;
    }

    /// The compression level for later messages: the seed's flate levels -2..=9 (default
    /// 1), and libdeflate's 10..=12.
    pub fn set_compression_level(&mut self, level: i32) -> Result<(), Error> {
        if !(-2..=12).contains(&level) {
            return Err(Error::InvalidArgument(format!(
                "compression level {level} outside -2..=12"
            )));
        }
        self.writer.level = level;
        Ok(())
    }
}

fn nonzero(size: usize) -> usize {
    if size == 0 {
        DEFAULT_BUFFER_SIZE
    } else {
        size
    }
}

/// The write side with the stream borrowed: what both `Conn` and handlers write through.
struct Writer<'a, S: Stream> {
    stream: &'a mut S,
    state: &'a mut WriteState,
}

impl<S: Stream> Writer<'_, S> {
    fn check(&self) -> Result<(), Error> {
        if let Some((kind, text)) = &self.state.failure {
            return Err(Error::Io(io::Error::new(*kind, text.clone())));
        }
        if self.state.close_sent {
            return Err(Error::CloseSent);
        }
        Ok(())
    }

    fn write_data(&mut self, message_type: MessageType, data: &[u8]) -> Result<(), Error> {
        self.check()?;
        let mut buf = self.take_buf();
        buf.clear();
        let s = &mut *self.state;
        if s.compress {
            // One compressor per thread and level (they are large), not per connection.
            let mut compressed = Vec::with_capacity(data.len() / 2 + 64);
            crate::prepared::with_deflater(s.level, |d| d.compress(data, &mut compressed));
            s.encoder
                .encode_frame(message_type.opcode(), true, true, &compressed, &mut buf);
        } else {
            s.encoder
                .encode_frame(message_type.opcode(), true, false, data, &mut buf);
        }
        let deadline = self.state.deadline;
        let result = self.send(&buf, deadline);
        self.give_buf(buf);
        result
    }

    fn take_buf(&mut self) -> Vec<u8> {
        match self.state.buf.take() {
            Some(buf) => buf,
            None => self
                .state
                .pool
                .as_ref()
                .and_then(|p| p.get())
                .unwrap_or_else(|| Vec::with_capacity(self.state.buffer_size)),
        }
    }

    fn give_buf(&mut self, mut buf: Vec<u8>) {
        match &self.state.pool {
            Some(pool) => pool.put(buf),
            None => {
                // Keep the connection's own buffer, but not a huge one a big message grew.
                if buf.capacity() > 4 * self.state.buffer_size {
                    buf = Vec::with_capacity(self.state.buffer_size);
                }
                self.state.buf = Some(buf);
            }
        }
    }

    fn send(&mut self, bytes: &[u8], deadline: Option<Instant>) -> Result<(), Error> {
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

impl<S: Stream> ControlWrite for Writer<'_, S> {
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
        let opcode: OpCode = message_type.opcode();
        self.state
            .encoder
            .encode_frame(opcode, true, false, data, &mut frame);
        if message_type == MessageType::Close {
            self.state.close_sent = true;
        }
        let deadline = deadline.or_else(|| Some(Instant::now() + CONTROL_WRITE_WAIT));
        let result = self.send(&frame, deadline);
        // Control writes bound themselves; the message deadline stays the user's.
        result
    }
}

#[cfg(test)]
mod tests;
