//! The default ping, pong and close handlers (they behave as gorilla/websocket's do), and
//! [`Control`], the handle a handler gets to answer the peer.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::proto::{CloseCode, MessageType};

/// What a handler may do while it runs: write a control frame, move the read deadline.
pub struct Control<'a> {
    pub(crate) writer: &'a mut dyn ControlWrite,
    pub(crate) read_deadline: &'a mut Option<Instant>,
}

impl Control<'_> {
    /// Write a close, ping or pong frame (see [`Conn::write_control`](super::Conn::write_control));
    /// `None`: no deadline.
    pub fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.writer.write_control(message_type, data, deadline)
    }

    /// Set the connection's read deadline (a pong handler typically pushes it back).
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        *self.read_deadline = deadline;
    }
}

/// The write side as a handler sees it, whatever the stream type.
pub(crate) trait ControlWrite {
    fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error>;
}

/// Called with each ping's application data. Shared (`Arc`) so that
/// [`Conn::ping_handler`](super::Conn::ping_handler) can hand the current one back to be
/// wrapped.
pub type PingHandler = Arc<dyn Fn(&[u8], &mut Control<'_>) -> Result<(), Error> + Send + Sync>;

/// Called with each pong's application data.
pub type PongHandler = PingHandler;

/// Called with a received close frame's code ([`CloseCode::NO_STATUS_RECEIVED`] when the
/// frame had no body) and reason, before the read method returns [`Error::Closed`].
pub type CloseHandler =
    Arc<dyn Fn(CloseCode, &str, &mut Control<'_>) -> Result<(), Error> + Send + Sync>;

/// How long the default ping and close handlers wait to write their answer: 1 s, as
/// gorilla/websocket's default handlers do.
pub const HANDLER_WRITE_WAIT: Duration = Duration::from_secs(1);

/// The default ping handler: answer with a pong carrying the same data, waiting at
/// most [`HANDLER_WRITE_WAIT`] for the write path (a writer may be in the middle of a
/// message). A close already sent, or a pong that could not go out in time, is not an
/// error: the read goes on.
pub fn default_ping_handler() -> PingHandler {
    Arc::new(|data, control| {
        let deadline = Some(Instant::now() + HANDLER_WRITE_WAIT);
        match control.write_control(MessageType::Pong, data, deadline) {
            Err(Error::CloseSent) => Ok(()),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => Ok(()),
            other => other,
        }
    })
}

/// The default pong handler: does nothing.
pub fn default_pong_handler() -> PongHandler {
    Arc::new(|_, _| Ok(()))
}

/// The default close handler: send a close frame back with the same code (and no text; an
/// empty close when the peer sent no code), waiting at most [`HANDLER_WRITE_WAIT`]. Its
/// write errors are ignored: the read returns [`Error::Closed`] either way.
pub fn default_close_handler() -> CloseHandler {
    Arc::new(|code, _reason, control| {
        let payload = crate::format_close_message(code, "");
        let deadline = Some(Instant::now() + HANDLER_WRITE_WAIT);
        let _ = control.write_control(MessageType::Close, &payload, deadline);
        Ok(())
    })
}
