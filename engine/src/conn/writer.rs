//! [`MessageWriter`]: the seed's `NextWriter`, a message written as an `io::Write`.
//!
//! Bytes gather in the write buffer; each time it fills, a fragment goes out, so a
//! message larger than the buffer leaves as several frames. [`MessageWriter::close`]
//! sends the last frame. Compressed messages are the exception: each is compressed on
//! its own, whole, so they are gathered and sent as one frame at close.

use std::io::{self, Write};
use std::sync::MutexGuard;

use super::control::ControlWrite;
use super::reader::into_io;
use super::write::WriteSide;
use super::Stream;
use crate::error::Error;
use crate::proto::{MessageType, OpCode};

/// The write side a writer holds: borrowed from a `Conn`, or locked from a `WriteHalf`.
pub(crate) enum SideRef<'a, S> {
    Borrowed(&'a mut WriteSide<S>),
    Locked(MutexGuard<'a, WriteSide<S>>),
}

impl<S> SideRef<'_, S> {
    fn get(&mut self) -> &mut WriteSide<S> {
        match self {
            SideRef::Borrowed(side) => side,
            SideRef::Locked(guard) => guard,
        }
    }
}

/// A message being written. Close it to send the end; dropping it without `close` sends
/// the end too, but any error is lost.
pub struct MessageWriter<'a, S: Stream> {
    side: SideRef<'a, S>,
    message_type: MessageType,
    payload: Vec<u8>,
    frame: Vec<u8>,
    sent_first: bool,
    closed: bool,
}

impl<'a, S: Stream> MessageWriter<'a, S> {
    pub(crate) fn new(mut side: SideRef<'a, S>, message_type: MessageType) -> Result<Self, Error> {
        let w = side.get();
        w.check()?;
        let payload = w.state.take_buf();
        Ok(MessageWriter {
            side,
            message_type,
            payload,
            frame: Vec::new(),
            sent_first: false,
            closed: false,
        })
    }

    /// Whether the gathered bytes must wait for the close (compressed or control).
    fn whole_only(&mut self) -> bool {
        self.message_type.is_control() || self.side.get().state.compress
    }

    fn flush_frame(&mut self, fin: bool) -> Result<(), Error> {
        let opcode = if self.sent_first {
            OpCode::Continuation
        } else {
            self.message_type.opcode()
        };
        let side = self.side.get();
        self.frame.clear();
        // Only a message sent whole, in one frame, may be compressed.
        let whole = fin && !self.sent_first;
        side.encode_data(opcode, fin, whole, &self.payload, &mut self.frame);
        let deadline = side.state.deadline;
        side.send(&self.frame, deadline)?;
        self.sent_first = true;
        self.payload.clear();
        Ok(())
    }

    /// Send the end of the message (the seed's `Close` on the writer).
    pub fn close(mut self) -> Result<(), Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let result = if self.message_type.is_control() {
            let side = self.side.get();
            side.write_control(self.message_type, &self.payload, None)
        } else {
            self.flush_frame(true)
        };
        let payload = std::mem::take(&mut self.payload);
        self.side.get().state.give_buf(payload);
        result
    }
}

impl<S: Stream> Write for MessageWriter<'_, S> {
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
        let buffer_size = self.side.get().state.buffer_size;
        if !self.whole_only()
            && !self.payload.is_empty()
            && self.payload.len() + data.len() > buffer_size
        {
            self.flush_frame(false).map_err(into_io)?;
        }
        self.payload.extend_from_slice(data);
        Ok(data.len())
    }

    /// Sends what is gathered as a fragment (not the end of the message).
    fn flush(&mut self) -> io::Result<()> {
        if self.whole_only() || self.payload.is_empty() || self.closed {
            return Ok(());
        }
        self.flush_frame(false).map_err(into_io)
    }
}

impl<S: Stream> Drop for MessageWriter<'_, S> {
    fn drop(&mut self) {
        // Best effort, as the seed's NextWriter closing the previous writer.
        let _ = self.finish();
    }
}

impl<S: Stream> std::fmt::Debug for MessageWriter<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("message_type", &self.message_type)
            .finish_non_exhaustive()
    }
}
