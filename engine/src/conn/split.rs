//! Splitting a connection into a [`ReadHalf`] and a [`WriteHalf`] for two threads, with
//! a [`ControlHandle`] that closes or writes control frames from any thread.
//!
//! A connection has one reader and one writer at a time, and may be closed or sent
//! control frames from anywhere (gorilla/websocket's rule, with `Close` and
//! `WriteControl`). Here the types say it: each half is owned by one thread; the write
//! path sits behind a [`WriteLock`] that the writer (per frame), the read half's
//! handlers (pong and close answers) and control handles share. A control write waits
//! for the lock no longer than its deadline, and a timeout there leaves the connection
//! usable. Every stream ringcast produces splits ([`SplitStream`]): TCP, Unix sockets,
//! TLS on either side, and the client's `ClientStream`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::ControlWrite;
use super::lock::WriteLock;
use super::read::{Dst, ReadIo, ReadState};
use super::reader::MessageReader;
use super::stream::{Closer, ReadEnd, SplitStream, WriteEnd};
use super::write::{check_control, WriteSide};
use super::writer::{MessageWriter, WritePath};
use super::{CloseHandler, PingHandler, PongHandler};
use crate::error::Error;
use crate::proto::{CloseCode, MessageType};

pub(crate) struct Shared<W> {
    pub(crate) side: WriteLock<WriteSide<W>>,
    closer: Closer,
}

impl<W> Shared<W> {
    pub(crate) fn new(side: WriteSide<W>, closer: Closer) -> Self {
        Shared {
            side: WriteLock::new(side),
            closer,
        }
    }
}

impl<W: WriteEnd> Shared<W> {
    /// A control frame from any thread: the lock is awaited until `deadline` at most,
    /// and giving up there is a timeout that leaves the connection as it was.
    fn write_control(
        &self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        check_control(message_type, data)?;
        match self.side.lock_by(deadline) {
            Some(mut side) => side.write_control(message_type, data, deadline),
            None => Err(Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "write_control: the write path stayed busy past the deadline",
            ))),
        }
    }
}

/// A split connection's write path, locked for each call a message writer makes, so
/// control frames from other threads go out between its fragments.
impl<W: WriteEnd> WritePath for Arc<Shared<W>> {
    fn begin(&mut self) -> Result<(Vec<u8>, usize, bool), Error> {
        self.side.lock().begin()
    }
    fn fragment(
        &mut self,
        opcode: crate::proto::OpCode,
        fin: bool,
        may_compress: bool,
        payload: &[u8],
        frame: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.side
            .lock()
            .fragment(opcode, fin, may_compress, payload, frame)
    }
    fn control(&mut self, message_type: MessageType, payload: &[u8]) -> Result<(), Error> {
        self.side.lock().control(message_type, payload)
    }
    fn end(&mut self, buf: Vec<u8>) {
        self.side.lock().end(buf);
    }
}

/// The reading half of a split connection.
pub struct ReadHalf<S: SplitStream> {
    pub(crate) stream: S::Reader,
    pub(crate) reader: ReadState,
    pub(crate) shared: Arc<Shared<S::Writer>>,
    pub(crate) subprotocol: Option<String>,
}

/// The writing half of a split connection.
pub struct WriteHalf<S: SplitStream> {
    pub(crate) shared: Arc<Shared<S::Writer>>,
}

/// Closes a connection or writes control frames from any thread.
pub struct ControlHandle<S: SplitStream> {
    shared: Arc<Shared<S::Writer>>,
}

impl<S: SplitStream> Clone for ControlHandle<S> {
    fn clone(&self) -> Self {
        ControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The read half's view of the stream: reads on its own end, answers on the shared
/// write path.
struct HalfIo<'a, R, W> {
    stream: &'a mut R,
    shared: &'a Shared<W>,
}

impl<R, W: WriteEnd> ControlWrite for HalfIo<'_, R, W> {
    fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.shared.write_control(message_type, data, deadline)
    }
}

impl<R: ReadEnd, W: WriteEnd> ReadIo for HalfIo<'_, R, W> {
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        self.stream.read_by(buf, deadline)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }
}

impl<S: SplitStream> ReadHalf<S> {
    fn io(&mut self) -> (&mut ReadState, HalfIo<'_, S::Reader, S::Writer>) {
        (
            &mut self.reader,
            HalfIo {
                stream: &mut self.stream,
                shared: &self.shared,
            },
        )
    }

    pub(crate) fn read_part(&mut self, dst: Dst<'_>) -> Result<usize, Error> {
        let (reader, mut io) = self.io();
        reader.read_part(&mut io, dst)
    }

    pub(crate) fn next_message(&mut self) -> Result<MessageType, Error> {
        let (reader, mut io) = self.io();
        reader.next_message(&mut io)
    }

    /// Read the next data message whole (see [`Conn::read_message`](super::Conn::read_message)).
    pub fn read_message(&mut self) -> Result<(MessageType, Vec<u8>), Error> {
        let message_type = self.next_message()?;
        let mut payload = Vec::new();
        while self.read_part(Dst::Vec(&mut payload))? > 0 {}
        Ok((message_type, payload))
    }

    /// The next data message as a stream (see [`Conn::next_reader`](super::Conn::next_reader)).
    pub fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_>), Error> {
        let message_type = self.next_message()?;
        Ok((message_type, MessageReader { source: self }))
    }

    /// Read the next message and decode it as JSON.
    pub fn read_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Error> {
        let (_, payload) = self.read_message()?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// See [`Conn::set_read_limit`](super::Conn::set_read_limit).
    pub fn set_read_limit(&mut self, limit: u64) {
        self.reader.decoder_mut().set_read_limit(limit);
    }

    /// See [`Conn::read_limit`](super::Conn::read_limit).
    pub fn read_limit(&self) -> u64 {
        self.reader.decoder().read_limit()
    }

    /// See [`Conn::set_read_deadline`](super::Conn::set_read_deadline).
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.deadline = deadline;
    }

    /// See [`Conn::set_idle_timeout`](super::Conn::set_idle_timeout).
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.reader.set_idle_timeout(timeout);
    }

    /// See [`Conn::set_ping_handler`](super::Conn::set_ping_handler).
    pub fn set_ping_handler(&mut self, handler: Option<PingHandler>) {
        self.reader.ping_handler = handler.unwrap_or_else(super::control::default_ping_handler);
    }

    /// See [`Conn::ping_handler`](super::Conn::ping_handler).
    pub fn ping_handler(&self) -> PingHandler {
        Arc::clone(&self.reader.ping_handler)
    }

    /// See [`Conn::set_pong_handler`](super::Conn::set_pong_handler).
    pub fn set_pong_handler(&mut self, handler: Option<PongHandler>) {
        self.reader.pong_handler = handler.unwrap_or_else(super::control::default_pong_handler);
    }

    /// See [`Conn::pong_handler`](super::Conn::pong_handler).
    pub fn pong_handler(&self) -> PongHandler {
        Arc::clone(&self.reader.pong_handler)
    }

    /// See [`Conn::set_close_handler`](super::Conn::set_close_handler).
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.reader.close_handler = handler.unwrap_or_else(super::control::default_close_handler);
    }

    /// See [`Conn::close_handler`](super::Conn::close_handler).
    pub fn close_handler(&self) -> CloseHandler {
        Arc::clone(&self.reader.close_handler)
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// A handle to close or write control frames from any thread.
    pub fn control_handle(&self) -> ControlHandle<S> {
        ControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: SplitStream> WriteHalf<S> {
    /// See [`Conn::write_message`](super::Conn::write_message).
    pub fn write_message(&mut self, message_type: MessageType, data: &[u8]) -> Result<(), Error> {
        if message_type.is_control() {
            return self.write_control(message_type, data, None);
        }
        self.shared.side.lock().write_data(message_type, data)
    }

    /// See [`Conn::write_prepared_message`](super::Conn::write_prepared_message).
    pub fn write_prepared_message(
        &mut self,
        message: &crate::PreparedMessage,
    ) -> Result<(), Error> {
        self.shared.side.lock().write_prepared(message)
    }

    /// See [`Conn::next_writer`](super::Conn::next_writer). The write lock is taken for
    /// each fragment, so control frames from other threads go out between fragments.
    pub fn next_writer(&mut self, message_type: MessageType) -> Result<MessageWriter<'_>, Error> {
        MessageWriter::new(&mut self.shared, message_type)
    }

    /// Encode `value` as JSON and send it as a text message.
    pub fn write_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let payload = serde_json::to_vec(value)?;
        self.write_message(MessageType::Text, &payload)
    }

    /// See [`Conn::write_control`](super::Conn::write_control).
    pub fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.shared.write_control(message_type, data, deadline)
    }

    /// See [`Conn::set_write_deadline`](super::Conn::set_write_deadline).
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.shared.side.lock().state.deadline = deadline;
    }

    /// See [`Conn::set_write_timeout`](super::Conn::set_write_timeout).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.shared.side.lock().state.write_timeout = timeout;
    }

    /// See [`Conn::enable_write_compression`](super::Conn::enable_write_compression).
    pub fn enable_write_compression(&mut self, enable: bool) {
        let mut side = self.shared.side.lock();
        side.state.compress = enable && side.state.compression_negotiated;
    }

    /// See [`Conn::set_compression_level`](super::Conn::set_compression_level).
    pub fn set_compression_level(&mut self, level: i32) -> Result<(), Error> {
        self.shared.side.lock().state.set_compression_level(level)
    }

    /// A handle to close or write control frames from any thread.
    pub fn control_handle(&self) -> ControlHandle<S> {
        ControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: SplitStream> ControlHandle<S> {
    /// Write a close, ping or pong frame (see
    /// [`Conn::write_control`](super::Conn::write_control)). A message being written by
    /// the write half is not waited for: the frame goes out before its next fragment.
    /// When the write path stays busy (one large frame being written) past `deadline`,
    /// the call fails with `TimedOut` and the connection stays usable; `None` waits as
    /// long as it takes.
    pub fn write_control(
        &self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.shared.write_control(message_type, data, deadline)
    }

    /// Send a close frame with `code` and `reason` (see
    /// [`Conn::close_with`](super::Conn::close_with)).
    pub fn close_with(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let payload = super::close_payload(code, reason)?;
        let deadline = Some(Instant::now() + super::CLOSE_WRITE_WAIT);
        self.write_control(MessageType::Close, &payload, deadline)
    }

    /// Shut the stream down at once, without a close frame (gorilla/websocket's `Close`):
    /// blocked reads and writes on both halves return.
    pub fn close(&self) -> Result<(), Error> {
        (self.shared.closer)().map_err(Error::from)
    }
}

impl<S: SplitStream> std::fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<S: SplitStream> std::fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

impl<S: SplitStream> std::fmt::Debug for ControlHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle").finish_non_exhaustive()
    }
}
