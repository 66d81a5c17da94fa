//! Splitting a connection into a [`ReadHalf`] and a [`WriteHalf`] for two threads, with
//! a [`ControlHandle`] that closes or writes control frames from any thread.
//!
//! The seed allows one reader and one writer at a time, and `Close` / `WriteControl`
//! from anywhere. Here the types say it: each half is owned by one thread; the write
//! path sits behind a lock that the writer, the read half's handlers (pong and close
//! answers) and control handles share. Splitting needs a stream that can be cloned
//! into independent handles, such as `TcpStream`.

use std::io;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::control::ControlWrite;
use super::read::{Dst, ReadIo, ReadState};
use super::reader::{MessageReader, Source};
use super::write::WriteSide;
use super::writer::{MessageWriter, SideRef};
use super::{CloseHandler, PingHandler, PongHandler, Stream};
use crate::error::Error;
use crate::proto::{CloseCode, MessageType};

/// A stream that can be cloned into independent handles on the same connection.
pub trait SplitStream: Stream + Sized {
    /// Another handle on the same stream.
    fn try_clone(&self) -> io::Result<Self>;
}

impl SplitStream for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
}

pub(crate) struct Shared<S> {
    pub(crate) side: Mutex<WriteSide<S>>,
    closer: S,
}

impl<S> Shared<S> {
    pub(crate) fn new(side: WriteSide<S>, closer: S) -> Self {
        Shared {
            side: Mutex::new(side),
            closer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriteSide<S>> {
        // A writer that panicked leaves the state whole (every field is set atomically
        // with respect to a frame being sent), so keep going.
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reading half of a split connection.
pub struct ReadHalf<S: Stream> {
    pub(crate) stream: S,
    pub(crate) reader: ReadState,
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) subprotocol: Option<String>,
}

/// The writing half of a split connection.
pub struct WriteHalf<S: Stream> {
    pub(crate) shared: Arc<Shared<S>>,
}

/// Closes a connection or writes control frames from any thread.
pub struct ControlHandle<S: Stream> {
    shared: Arc<Shared<S>>,
}

impl<S: Stream> Clone for ControlHandle<S> {
    fn clone(&self) -> Self {
        ControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The read half's view of the stream: reads on its own handle, answers on the shared
/// write path.
struct HalfIo<'a, S> {
    stream: &'a mut S,
    shared: &'a Shared<S>,
}

impl<S: Stream> ControlWrite for HalfIo<'_, S> {
    fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.shared
            .lock()
            .write_control(message_type, data, deadline)
    }
}

impl<S: Stream> ReadIo for HalfIo<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }
}

impl<S: Stream> ReadHalf<S> {
    fn io(&mut self) -> (&mut ReadState, HalfIo<'_, S>) {
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
    pub fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_, S>), Error> {
        let message_type = self.next_message()?;
        Ok((
            message_type,
            MessageReader {
                source: Source::Half(self),
            },
        ))
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

    /// See [`Conn::set_read_deadline`](super::Conn::set_read_deadline).
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.deadline = deadline;
    }

    /// See [`Conn::set_ping_handler`](super::Conn::set_ping_handler).
    pub fn set_ping_handler(&mut self, handler: Option<PingHandler>) {
        self.reader.ping_handler = handler.unwrap_or_else(super::control::default_ping_handler);
    }

    /// See [`Conn::set_pong_handler`](super::Conn::set_pong_handler).
    pub fn set_pong_handler(&mut self, handler: Option<PongHandler>) {
        self.reader.pong_handler = handler.unwrap_or_else(super::control::default_pong_handler);
    }

    /// See [`Conn::set_close_handler`](super::Conn::set_close_handler).
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.reader.close_handler = handler.unwrap_or_else(super::control::default_close_handler);
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

impl<S: Stream> WriteHalf<S> {
    /// See [`Conn::write_message`](super::Conn::write_message).
    pub fn write_message(&mut self, message_type: MessageType, data: &[u8]) -> Result<(), Error> {
        let mut side = self.shared.lock();
        if message_type.is_control() {
            side.write_control(message_type, data, None)
        } else {
            side.write_data(message_type, data)
        }
    }

    /// See [`Conn::write_prepared_message`](super::Conn::write_prepared_message).
    pub fn write_prepared_message(
        &mut self,
        message: &crate::PreparedMessage,
    ) -> Result<(), Error> {
        self.shared.lock().write_prepared(message)
    }

    /// See [`Conn::next_writer`](super::Conn::next_writer). Control frames from other
    /// threads wait until the writer is closed.
    pub fn next_writer(
        &mut self,
        message_type: MessageType,
    ) -> Result<MessageWriter<'_, S>, Error> {
        MessageWriter::new(SideRef::Locked(self.shared.lock()), message_type)
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
        self.shared
            .lock()
            .write_control(message_type, data, deadline)
    }

    /// See [`Conn::set_write_deadline`](super::Conn::set_write_deadline).
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.shared.lock().state.deadline = deadline;
    }

    /// See [`Conn::enable_write_compression`](super::Conn::enable_write_compression).
    pub fn enable_write_compression(&mut self, enable: bool) {
        let mut side = self.shared.lock();
        side.state.compress = enable && side.state.compression_negotiated;
    }

    /// See [`Conn::set_compression_level`](super::Conn::set_compression_level).
    pub fn set_compression_level(&mut self, level: i32) -> Result<(), Error> {
        self.shared.lock().state.set_compression_level(level)
    }

    /// A handle to close or write control frames from any thread.
    pub fn control_handle(&self) -> ControlHandle<S> {
        ControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Stream> ControlHandle<S> {
    /// Write a close, ping or pong frame; waits for a message being written to finish.
    pub fn write_control(
        &self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.shared
            .lock()
            .write_control(message_type, data, deadline)
    }

    /// Send a close frame with `code` and `reason`.
    pub fn close_with(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let payload = crate::format_close_message(code, reason);
        self.write_control(MessageType::Close, &payload, None)
    }

    /// Shut the stream down at once, without a close frame (the seed's `Close`):
    /// blocked reads and writes on both halves return.
    pub fn close(&self) -> Result<(), Error> {
        self.shared.closer.shutdown().map_err(Error::from)
    }
}

impl<S: Stream> std::fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<S: Stream> std::fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

impl<S: Stream> std::fmt::Debug for ControlHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle").finish_non_exhaustive()
    }
}
