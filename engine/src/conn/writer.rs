//! [`MessageWriter`]: a message written as an `io::Write` (gorilla/websocket's
//! `NextWriter`).
//!
//! Bytes gather in the write buffer; each time it fills, a fragment goes out, so a
//! message larger than the buffer leaves as several frames. [`MessageWriter::close`]
//! sends the last frame. Compressed messages are the exception: each is compressed on
//! its own, whole, so they are gathered and sent as one frame at close (as are close,
//! ping and pong messages, which a control frame carries whole).
//!
//! On a split connection the write lock is taken per fragment, not for the writer's
//! life: a ping or a close from another thread goes out between two fragments, as RFC
//! 6455 section 5.4 allows.

use std::io::{self, Write};

use super::reader::into_io;
use crate::error::Error;
use crate::proto::{MessageType, OpCode};

/// What a message writer needs of the write path: an unsplit connection's write side,
/// or a split one's, locked for each call.
pub(crate) trait WritePath {
    /// Check that a message may be written; a buffer for it, the buffer size, and whether
    /// the message must go whole (compressed).
    fn begin(&mut self) -> Result<(Vec<u8>, usize, bool), Error>;
    /// Encode and send one frame of the message.
    fn fragment(
        &mut self,
        opcode: OpCode,
        fin: bool,
        may_compress: bool,
        payload: &[u8],
        frame: &mut Vec<u8>,
    ) -> Result<(), Error>;
    /// Send a control message gathered by a writer, within the data write deadline.
    fn control(&mut self, message_type: MessageType, payload: &[u8]) -> Result<(), Error>;
    /// Give the message buffer back.
    fn end(&mut self, buf: Vec<u8>);
}

/// A message being written. Close it to send the end; dropping it without `close` sends
/// the end too, but any error is lost.
pub struct MessageWriter<'a> {
    path: &'a mut dyn WritePath,
    message_type: MessageType,
    payload: Vec<u8>,
    frame: Vec<u8>,
    buffer_size: usize,
    /// Compressed or control: gathered and sent whole at close.
    whole: bool,
    sent_first: bool,
    closed: bool,
}

impl<'a> MessageWriter<'a> {
    pub(crate) fn new(
        path: &'a mut dyn WritePath,
        message_type: MessageType,
    ) -> Result<Self, Error> {
        let (payload, buffer_size, compress) = path.begin()?;
        Ok(MessageWriter {
            path,
            message_type,
            payload,
            frame: Vec::new(),
            buffer_size,
            whole: compress || message_type.is_control(),
            sent_first: false,
            closed: false,
        })
    }

    fn flush_frame(&mut self, fin: bool) -> Result<(), Error> {
        let opcode = if self.sent_first {
            OpCode::Continuation
        } else {
            self.message_type.opcode()
        };
        // Only a message sent whole, in one frame, may be compressed.
        let whole = fin && !self.sent_first;
        self.path
            .fragment(opcode, fin, whole, &self.payload, &mut self.frame)?;
        self.sent_first = true;
        self.payload.clear();
        Ok(())
    }

    /// Send the end of the message (`Close` on a gorilla/websocket message writer).
    pub fn close(mut self) -> Result<(), Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let result = if self.message_type.is_control() {
            self.path.control(self.message_type, &self.payload)
        } else {
            self.flush_frame(true)
        };
        let payload = std::mem::take(&mut self.payload);
        self.path.end(payload);
        result
    }
}

impl Write for MessageWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(into_io(Error::InvalidArgument("write after close".into())));
        }
        if self.message_type.is_control() && self.payload.len() + data.len() > 125 {
            return Err(into_io(Error::InvalidArgument(format!(
                "control message payload over 125 bytes ({})",
                self.payload.len() + data.len()
            ))));
        }
        if !self.whole
            && !self.payload.is_empty()
            && self.payload.len() + data.len() > self.buffer_size
        {
            self.flush_frame(false).map_err(into_io)?;
        }
        self.payload.extend_from_slice(data);
        Ok(data.len())
    }

    /// Sends what is gathered as a fragment (not the end of the message).
    fn flush(&mut self) -> io::Result<()> {
        if self.whole || self.payload.is_empty() || self.closed {
            return Ok(());
        }
        self.flush_frame(false).map_err(into_io)
    }
}

impl Drop for MessageWriter<'_> {
    fn drop(&mut self) {
        // Best effort, errors dropped (gorilla/websocket's NextWriter likewise closes a
        // writer the application left open).
        let _ = self.finish();
    }
}

impl std::fmt::Debug for MessageWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("message_type", &self.message_type)
            .finish_non_exhaustive()
    }
}
