//! [`AsyncMessageWriter`]: a text or binary message written as an `AsyncWrite`
//! (gorilla/websocket's `NextWriter`, without its control message types).
//!
//! Bytes gather up to the write buffer size; each time it fills, the next `poll_write`
//! queues it as a fragment (after waiting for room), so a message larger than the
//! buffer leaves as several frames and at most one buffer of it is held. A compressed
//! message is the exception: each is compressed on its own, whole, so it is gathered
//! and sent as one frame at the end. Control frames from the read side or a control
//! handle go out between fragments.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

use tokio::io::AsyncRead;

use super::write::{WriteCore, WritePath};
use super::{AsyncConn, AsyncWriteHalf};
use crate::conn::reader::into_io;
use crate::error::Error;
use crate::proto::{MessageType, OpCode};

/// What a message writer writes through: a whole connection or its write half.
pub(crate) enum Target<'a, S> {
    Conn(&'a mut AsyncConn<S>),
    Half(&'a mut AsyncWriteHalf<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> WritePath for Target<'_, S> {
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self {
            Target::Conn(conn) => conn.poll_room(cx),
            Target::Half(half) => half.poll_room(cx),
        }
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self {
            Target::Conn(conn) => WritePath::poll_flush(*conn, cx),
            Target::Half(half) => WritePath::poll_flush(*half, cx),
        }
    }
    fn with_core(
        &mut self,
        f: &mut dyn FnMut(&mut WriteCore) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match self {
            Target::Conn(conn) => conn.with_core(f),
            Target::Half(half) => half.with_core(f),
        }
    }
}

/// A message being written. [`finish`](Self::finish) (or `AsyncWriteExt::shutdown`)
/// sends its end and waits until it is written; dropping it unfinished queues the end
/// without waiting (it goes out with the connection's next write or read).
pub struct AsyncMessageWriter<'a, S: AsyncRead + AsyncWrite + Unpin> {
    path: Target<'a, S>,
    message_type: MessageType,
    payload: Vec<u8>,
    buffer_size: usize,
    /// Compressed: gathered and sent whole at the end.
    whole: bool,
    sent_first: bool,
    /// The end is queued.
    ended: bool,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> AsyncMessageWriter<'a, S> {
    pub(crate) fn new(mut path: Target<'a, S>, message_type: MessageType) -> Result<Self, Error> {
        if message_type.is_control() {
            return Err(Error::InvalidArgument(format!(
                "a message writer writes text or binary, not {message_type:?} (use write_control)"
            )));
        }
        let mut settings = (0, false);
        path.with_core(&mut |core| {
            core.state.check()?;
            settings = (core.state.buffer_size, core.state.compress);
            Ok(())
        })?;
        Ok(AsyncMessageWriter {
            path,
            message_type,
            payload: Vec::new(),
            buffer_size: settings.0,
            whole: settings.1,
            sent_first: false,
            ended: false,
        })
    }

    /// Send the end of the message and wait until it is written (`Close` on a
    /// gorilla/websocket message writer).
    pub async fn finish(mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_end(cx)).await
    }

    /// Queue the gathered bytes as the next frame; the last one when `fin`.
    fn queue(&mut self, fin: bool) -> Result<(), Error> {
        let opcode = if self.sent_first {
            OpCode::Continuation
        } else {
            self.message_type.opcode()
        };
        // Only a message sent whole, in one frame, may be compressed.
        let may_compress = fin && !self.sent_first;
        let payload = &self.payload;
        self.path
            .with_core(&mut |core| core.queue_fragment(opcode, fin, may_compress, payload))?;
        self.sent_first = true;
        self.payload.clear();
        if fin {
            self.ended = true;
        }
        Ok(())
    }

    /// Queue the end (after waiting for room), then flush.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.ended {
            ready!(self.path.poll_room(cx))?;
            self.queue(true)?;
        }
        self.path.poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AsyncMessageWriter<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Err(into_io(Error::InvalidArgument(
                "write after the end of the message".into(),
            ))));
        }
        if !this.whole && this.payload.len() >= this.buffer_size {
            ready!(this.path.poll_room(cx)).map_err(into_io)?;
            this.queue(false).map_err(into_io)?;
        }
        let n = if this.whole {
            data.len()
        } else {
            data.len().min(this.buffer_size - this.payload.len())
        };
        this.payload.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    /// Queues what is gathered as a fragment (not the end of the message), then flushes.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.whole && !this.ended && !this.payload.is_empty() {
            ready!(this.path.poll_room(cx)).map_err(into_io)?;
            this.queue(false).map_err(into_io)?;
        }
        this.path.poll_flush(cx).map_err(into_io)
    }

    /// Sends the end of the message.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_end(cx).map_err(into_io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Drop for AsyncMessageWriter<'_, S> {
    fn drop(&mut self) {
        if !self.ended {
            // Queued, not written: the connection's next write or read sends it. An
            // error here is the connection's, and its next call reports it.
            let _ = self.queue(true);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> std::fmt::Debug for AsyncMessageWriter<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncMessageWriter")
            .field("message_type", &self.message_type)
            .finish_non_exhaustive()
    }
}
