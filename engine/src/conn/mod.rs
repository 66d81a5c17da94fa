//! The blocking [`Conn`]: gorilla/websocket's connection API over any [`Stream`].
//!
//! One reader and one writer at a time (gorilla/websocket leaves that rule to the
//! application); here the borrow checker enforces it (`&mut self`), and [`Conn::split`]
//! gives a reader and a writer for two threads plus a [`ControlHandle`] for close and
//! control frames from anywhere. The protocol work is all in [`crate::proto`]: this
//! module only moves bytes between the stream and the codec.
//!
//! ## Deadlines and timeouts: gorilla/websocket's and ringcast's
//!
//! | gorilla/websocket | ringcast | a timeout... |
//! | --- | --- | --- |
//! | `SetReadDeadline(t)` | [`Conn::set_read_deadline`] | ends reads for good (`TimedOut`) |
//! | a pong handler pushing the read deadline | [`Conn::set_idle_timeout`]: any bytes from the peer push it | ends reads for good (`TimedOut`) |
//! | `SetWriteDeadline(t)` | [`Conn::set_write_deadline`] | ends writes for good |
//! | `SetWriteDeadline(now + writeWait)` before each write | [`Conn::set_write_timeout`] | ends writes for good |
//! | `WriteControl(.., deadline)`; zero: none | [`Conn::write_control`]`(.., Some(deadline))`; `None`: none | is reported; if the frame had not started, the connection stays usable |
//! | `Upgrader.HandshakeTimeout`, `Dialer.HandshakeTimeout` | the same fields: the whole handshake (DNS, connect, proxy, TLS, HTTP) | fails the handshake |

pub mod control;
mod lock;
pub(crate) mod read;
pub(crate) mod reader;
mod split;
pub mod stream;
pub mod tls;
pub(crate) mod write;
mod writer;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::pool::BufferPool;
use crate::proto::deflate::{DeflateSettings, PerMessageDeflate};
use crate::proto::{CloseCode, MessageType, Role};

pub use control::{CloseHandler, Control, PingHandler, PongHandler};
pub use reader::{join_messages, JoinMessages, MessageReader};
pub use split::{ControlHandle, ReadHalf, WriteHalf};
pub use stream::{Closer, ReadEnd, SplitStream, Stream, WriteEnd};
pub use writer::MessageWriter;

use control::ControlWrite;
use read::{Dst, ReadState};
use write::{WriteSide, WriteState};

/// The buffer size used when a buffer size setting is 0, on either side (gorilla/websocket's
/// `Dialer` uses the same default).
pub const DEFAULT_BUFFER_SIZE: usize = 4096;

/// How long [`Conn::close_with`] (and [`ControlHandle::close_with`]) wait to write the
/// close frame.
pub const CLOSE_WRITE_WAIT: Duration = Duration::from_secs(5);

/// A close payload for `close_with`: a reason that does not fit a control frame is an
/// error, never cut.
pub(crate) fn close_payload(code: CloseCode, reason: &str) -> Result<Vec<u8>, Error> {
    if reason.len() > crate::proto::close::MAX_REASON_BYTES {
        return Err(Error::InvalidArgument(format!(
            "close reason of {} bytes exceeds the {} a close frame can carry",
            reason.len(),
            crate::proto::close::MAX_REASON_BYTES
        )));
    }
    Ok(crate::format_close_message(code, reason))
}

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

impl ConnConfig {
    /// The read side a connection of side `role` starts with: the agreed compression,
    /// the read limit, and `leftover` (bytes read past the handshake) to decode first.
    /// Shared by every I/O model.
    pub(crate) fn read_state(&self, role: Role, leftover: &[u8]) -> ReadState {
        let mut reader = ReadState::new(role, nonzero(self.read_buffer_size), leftover);
        if let Some(limit) = self.read_limit {
            reader.decoder_mut().set_read_limit(limit);
        }
        reader
            .decoder_mut()
            .set_compression(self.compression.is_some());
        reader
    }

    /// The write side a connection of side `role` starts with.
    pub(crate) fn write_state(&self, role: Role) -> WriteState {
        // The window this side compresses with is the one the peer asked it to keep to.
        let deflate = self.compression.map(|agreed| DeflateSettings {
            window_bits: match role {
                Role::Server => agreed.server_max_window_bits,
                Role::Client => agreed.client_max_window_bits.flatten(),
            }
            .unwrap_or(15),
            ..DeflateSettings::default()
        });
        WriteState::new(
            role,
            deflate,
            nonzero(self.write_buffer_size),
            self.write_buffer_pool.clone(),
        )
    }
}

/// A WebSocket connection over a blocking stream (gorilla/websocket's `Conn`).
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
    side: WriteSide<S>,
    reader: ReadState,
    subprotocol: Option<String>,
}

impl<S: Stream> Conn<S> {
    /// Wrap a stream on which the opening handshake is done. `leftover` holds bytes read
    /// past the handshake (frames the peer sent at once).
    pub(crate) fn new(stream: S, role: Role, config: ConnConfig, leftover: &[u8]) -> Conn<S> {
        let reader = config.read_state(role, leftover);
        let state = config.write_state(role);
        Conn {
            side: WriteSide { stream, state },
            reader,
            subprotocol: config.subprotocol,
        }
    }

    /// Read the next data message whole: its type (text or binary) and payload. Ping,
    /// pong and close frames met on the way go to their handlers. A received close is
    /// returned as [`Error::Closed`]; after any error, every later read returns it again.
    pub fn read_message(&mut self) -> Result<(MessageType, Vec<u8>), Error> {
        let message_type = self.reader.next_message(&mut self.side)?;
        let mut payload = Vec::new();
        while self
            .reader
            .read_part(&mut self.side, Dst::Vec(&mut payload))?
            > 0
        {}
        Ok((message_type, payload))
    }

    /// The next data message as an `io::Read` that ends with the message
    /// (gorilla/websocket's `NextReader`); its bytes are not gathered. An unread rest is
    /// skipped by the next read. A compressed message is the exception: it is gathered
    /// whole, then inflated, before its first byte is handed out.
    pub fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_>), Error> {
        let message_type = self.reader.next_message(&mut self.side)?;
        Ok((message_type, MessageReader { source: self }))
    }

    /// Read the next message and decode it as JSON (gorilla/websocket's `ReadJSON`).
    pub fn read_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Error> {
        let (_, payload) = self.read_message()?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// Write one message as a single frame. Text and binary go through compression when
    /// it was negotiated and is enabled; close, ping and pong go to
    /// [`write_control`](Self::write_control). Fails with [`Error::CloseSent`] once a
    /// close frame was sent.
    pub fn write_message(&mut self, message_type: MessageType, data: &[u8]) -> Result<(), Error> {
        if message_type.is_control() {
            return self.write_control(message_type, data, None);
        }
        self.side.write_data(message_type, data)
    }

    /// A writer for the next message (gorilla/websocket's `NextWriter`): bytes gather in
    /// the write buffer and leave as a fragment each time it fills; `close` sends the end.
    /// A compressed message, or a close, ping or pong, is gathered whole and goes out as
    /// one frame at `close`.
    pub fn next_writer(&mut self, message_type: MessageType) -> Result<MessageWriter<'_>, Error> {
        MessageWriter::new(&mut self.side, message_type)
    }

    /// Encode `value` as JSON and send it as a text message (gorilla/websocket's
    /// `WriteJSON`).
    pub fn write_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let payload = serde_json::to_vec(value)?;
        self.write_message(MessageType::Text, &payload)
    }

    /// Write a [`PreparedMessage`](crate::PreparedMessage): its wire form for this side
    /// and compression setting is built once and shared by every connection sending it,
    /// so the payload is neither copied nor compressed again here.
    pub fn write_prepared_message(
        &mut self,
        message: &crate::PreparedMessage,
    ) -> Result<(), Error> {
        self.side.write_prepared(message)
    }

    /// Write a close, ping or pong frame (at most 125 bytes of `data`), waiting at most
    /// until `deadline` (`None`: no deadline, what a zero `time.Time` means to
    /// gorilla/websocket's `WriteControl`). A deadline already past when the frame is
    /// about to be written is reported (`TimedOut`) and leaves the connection usable, since
    /// nothing was written; a deadline that passes while the frame is being written breaks
    /// the write side for good, as any failed write does. To call it from another thread,
    /// use [`split`](Self::split) and a [`ControlHandle`].
    pub fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.side.write_control(message_type, data, deadline)
    }

    /// Send a close frame with `code` and `reason` (the polite way to end), waiting at
    /// most [`CLOSE_WRITE_WAIT`]. Read on until the peer's close arrives as
    /// [`Error::Closed`], then drop the connection. A reason longer than the 123 bytes a
    /// close frame carries is refused with [`Error::InvalidArgument`].
    pub fn close_with(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let payload = close_payload(code, reason)?;
        let deadline = Some(Instant::now() + CLOSE_WRITE_WAIT);
        self.write_control(MessageType::Close, &payload, deadline)
    }

    /// Shut the underlying stream down (both directions) without sending or waiting for a
    /// close frame, like gorilla/websocket's `Close`. A stream without a shutdown (a
    /// `Stream` impl that keeps the default) returns an `Unsupported` error.
    pub fn close(&self) -> Result<(), Error> {
        Stream::shutdown(&self.side.stream).map_err(Error::from)
    }

    /// The largest message accepted from the peer, in bytes (default 64 MiB; 0: none).
    /// A larger message fails the read with [`Error::ReadLimit`] and closes with 1009.
    pub fn set_read_limit(&mut self, limit: u64) {
        self.reader.decoder_mut().set_read_limit(limit);
    }

    /// The read limit in force.
    pub fn read_limit(&self) -> u64 {
        self.reader.decoder().read_limit()
    }

    /// Reads fail with an `Io` error of kind `TimedOut` after `deadline` (`None`:
    /// never). After a read timed out, reads end for good: every later read returns the
    /// same error (writes are not affected).
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.deadline = deadline;
    }

    /// Reads fail with `TimedOut` once the peer has sent nothing for `timeout` (`None`:
    /// no idle timeout). It does the job of a read deadline that a pong handler pushes
    /// back (the gorilla/websocket idiom), kept for you, except that any bytes from the
    /// peer count, not only pongs, so a peer that answers pings stays. It applies
    /// together with [`set_read_deadline`](Self::set_read_deadline) (the earlier wins),
    /// and ends reads for good like it.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.reader.set_idle_timeout(timeout);
    }

    /// Writes fail after `deadline` (`None`: never). After a write timed out the
    /// connection is broken and every later write fails.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.side.state.deadline = deadline;
    }

    /// Each data write (a message, a writer's fragment, a prepared message) must end
    /// within `timeout` of its start (`None`: no bound but the write deadline), as
    /// gorilla/websocket code gets by calling `SetWriteDeadline(time.Now().Add(writeWait))`
    /// before every write. A write that times out breaks the write side for good, as a
    /// deadline does.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.side.state.write_timeout = timeout;
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
        self.side.state.role
    }

    /// Whether permessage-deflate was negotiated.
    pub fn compression_negotiated(&self) -> bool {
        self.side.state.compression_negotiated
    }

    /// The local address of the stream.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Stream::local_addr(&self.side.stream)
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> io::Result<SocketAddr> {
        Stream::peer_addr(&self.side.stream)
    }

    /// The stream under the connection, to set socket options (gorilla/websocket's
    /// `UnderlyingConn`). Reading or writing it directly breaks the framing.
    pub fn underlying_conn(&self) -> &S {
        &self.side.stream
    }

    /// Compress later text and binary messages (default: on when negotiated). No effect
    /// when compression was not negotiated.
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.side.state.compress = enable && self.side.state.compression_negotiated;
    }

    /// The compression level for later messages, on the flate scale gorilla/websocket
    /// takes (Go's `compress/flate` levels, -2..=9; default 1). A level outside that range
    /// is refused with [`Error::InvalidArgument`].
    pub fn set_compression_level(&mut self, level: i32) -> Result<(), Error> {
        self.side.state.set_compression_level(level)
    }
}

impl<S: Stream> std::fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("role", &self.side.state.role)
            .field("subprotocol", &self.subprotocol)
            .field("compression", &self.side.state.compression_negotiated)
            .finish_non_exhaustive()
    }
}

impl<S: SplitStream> Conn<S> {
    /// Split into a reader and a writer for two threads (every stream ringcast makes
    /// splits: TCP, Unix sockets, TLS on either side, a dialed `ClientStream`). Both can
    /// hand out [`ControlHandle`]s to close or write control frames from any thread;
    /// those go out between the fragments of a message being written.
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// use ringcast::{Dialer, MessageType};
    ///
    /// # fn main() -> Result<(), ringcast::Error> {
    /// let (conn, _) = Dialer::default().dial("wss://example.com/chat", &[])?;
    /// let (mut reader, mut writer) = conn.split()?;
    /// let pinger = writer.control_handle();
    /// std::thread::spawn(move || loop {
    ///     std::thread::sleep(Duration::from_secs(30));
    ///     let deadline = Some(Instant::now() + Duration::from_secs(10));
    ///     if pinger.write_control(MessageType::Ping, b"", deadline).is_err() {
    ///         break;
    ///     }
    /// });
    /// std::thread::spawn(move || while let Ok((_, text)) = reader.read_message() {
    ///     println!("{}", String::from_utf8_lossy(&text));
    /// });
    /// writer.write_message(MessageType::Text, b"hello")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn split(self) -> io::Result<(ReadHalf<S>, WriteHalf<S>)> {
        let WriteSide { stream, state } = self.side;
        let (read_end, write_end, closer) = stream.split_stream()?;
        let side = WriteSide {
            stream: write_end,
            state,
        };
        let shared = Arc::new(split::Shared::new(side, closer));
        Ok((
            ReadHalf {
                stream: read_end,
                reader: self.reader,
                shared: Arc::clone(&shared),
                subprotocol: self.subprotocol,
            },
            WriteHalf { shared },
        ))
    }
}

fn nonzero(size: usize) -> usize {
    if size == 0 {
        DEFAULT_BUFFER_SIZE
    } else {
        size
    }
}

#[cfg(test)]
mod tests;
