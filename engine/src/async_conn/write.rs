//! The write side of an [`AsyncConn`](super::AsyncConn): whole frames queued in one
//! buffer, then written as the stream takes them.
//!
//! The encoding (compression, masking, close-sent state, the failure that breaks the
//! write side for good) is the blocking [`Conn`](crate::Conn)'s own `WriteState`; only
//! the I/O differs. Every write queues whole frames before it waits for the stream, so a
//! write future dropped at any point leaves either its whole message queued (it goes out
//! with the next write or read) or nothing: never half a frame. The queue only ever
//! holds whole frames, so a control frame from the read side or a control handle is
//! appended between two frames of a message being written.
//!
//! Bounds: a data write first waits until less than the write buffer size is waiting
//! (the queue holds at most that plus one message); a pong or ping that a handler
//! queues finds at most [`CONTROL_ROOM`] waiting or is dropped (RFC 6455 section 5.5.3
//! lets a pong answer only the latest ping); a close always goes in, once.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use tokio::io::AsyncWrite;

use super::timer::Timer;
use crate::conn::write::WriteState;
use crate::error::Error;
use crate::proto::{MessageType, OpCode};

/// The most bytes that may wait to be written for a handler's pong or ping to be queued
/// after them; past it the frame is dropped, not queued.
pub(crate) const CONTROL_ROOM: usize = 64 * 1024;

pub(crate) struct WriteCore {
    pub(crate) state: WriteState,
    /// Whole frames, from `sent` on still to be written.
    out: Vec<u8>,
    sent: usize,
    /// When the data frames waiting must be out (the write deadline or timeout).
    deadline: Option<Instant>,
    timer: Timer,
    /// Bytes were written since the stream was last flushed (TLS keeps records back).
    unflushed: bool,
    /// Bytes written in all, so that a shared write side can tell progress.
    written: u64,
}

impl WriteCore {
    pub(crate) fn new(state: WriteState) -> WriteCore {
        WriteCore {
            state,
            out: Vec::new(),
            sent: 0,
            deadline: None,
            timer: Timer::default(),
            unflushed: false,
            written: 0,
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn waiting(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Append to the queue with `f`, the queue's buffer taken from the write state (its
    /// own or the pool's) when the queue was empty.
    fn append<R>(&mut self, f: impl FnOnce(&mut WriteState, &mut Vec<u8>) -> R) -> R {
        if self.out.is_empty() {
            self.out = self.state.take_buf();
        }
        f(&mut self.state, &mut self.out)
    }

    /// Data frames queued now must be out by the write deadline in force now.
    fn bound(&mut self) {
        if let Some(deadline) = self.state.data_deadline() {
            self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        }
    }

    /// Queue a whole data message as one frame.
    pub(crate) fn queue_data(
        &mut self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        self.state.check()?;
        self.append(|state, out| state.encode_data(message_type.opcode(), true, true, data, out));
        self.bound();
        Ok(())
    }

    /// Queue one frame of a message written in pieces.
    pub(crate) fn queue_fragment(
        &mut self,
        opcode: OpCode,
        fin: bool,
        may_compress: bool,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.state.check()?;
        self.append(|state, out| state.encode_data(opcode, fin, may_compress, payload, out));
        self.bound();
        Ok(())
    }

    /// Queue a prepared message's shared frame for this side and compression setting.
    pub(crate) fn queue_prepared(&mut self, message: &crate::PreparedMessage) -> Result<(), Error> {
        let frame = self.state.prepared_frame(message)?;
        self.append(|_, out| out.extend_from_slice(&frame));
        self.bound();
        Ok(())
    }

    /// Queue a control frame the application writes (it waited for room first).
    pub(crate) fn queue_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        self.append(|state, out| state.encode_control(message_type, data, out))
    }

    /// Queue a control frame a ping, pong or close handler writes: a pong or ping that
    /// finds more than [`CONTROL_ROOM`] waiting is dropped with a `TimedOut` error (the
    /// default handlers ignore it, as they ignore a pong the blocking `Conn` could not
    /// write in time); a close always goes in.
    pub(crate) fn queue_answer(
        &mut self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        if message_type != MessageType::Close && self.waiting() > CONTROL_ROOM {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} bytes wait to be written: {message_type:?} frame dropped",
                    self.waiting()
                ),
            )));
        }
        self.queue_control(message_type, data)
    }

    /// Ready once less than a write buffer's worth waits: room for the next message.
    pub(crate) fn poll_room<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if let Some(err) = self.state.failure() {
            return Poll::Ready(Err(err));
        }
        if self.waiting() >= self.state.buffer_size {
            ready!(self.poll_write_out(io, cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Ready once everything queued is written and the stream flushed.
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_out(io, cx))?;
        if self.unflushed {
            if let Err(err) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                return Poll::Ready(Err(self.state.fail(err)));
            }
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Write what is queued; a write deadline that passes first breaks the write side.
    fn poll_write_out<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if let Some(err) = self.state.failure() {
            return Poll::Ready(Err(err));
        }
        while self.sent < self.out.len() {
            match Pin::new(&mut *io).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    let err = io::Error::new(io::ErrorKind::WriteZero, "the stream took no bytes");
                    return Poll::Ready(Err(self.state.fail(err)));
                }
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    self.written += n as u64;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.state.fail(e))),
                Poll::Pending => {
                    if let Some(deadline) = self.deadline {
                        if self.timer.expired(deadline, cx) {
                            let err =
                                io::Error::new(io::ErrorKind::TimedOut, "write deadline passed");
                            return Poll::Ready(Err(self.state.fail(err)));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        if !self.out.is_empty() || self.out.capacity() > 0 {
            // All out: the buffer goes back (kept, pooled, or dropped when one large
            // message grew it).
            let out = std::mem::take(&mut self.out);
            self.sent = 0;
            self.state.give_buf(out);
        }
        self.deadline = None;
        Poll::Ready(Ok(()))
    }

    /// Shut the stream's write direction down (TLS: close_notify), after what is queued.
    pub(crate) fn poll_shutdown<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        // What was queued goes first; a broken write side still shuts down.
        let _ = ready!(self.poll_flush(io, cx));
        Poll::Ready(ready!(Pin::new(&mut *io).poll_shutdown(cx)).map_err(Error::Io))
    }
}

/// The write side shared by the halves of a split connection (and its control
/// handles): the queue and the stream's write end, behind one lock that is held for one
/// poll at a time, never across an await.
///
/// Several tasks may wait on the stream (the writer for room, the reader to get a pong
/// out), but a tokio stream wakes only the last task that polled it for writing. So a
/// task that finds the stream full leaves its waker here, and the task that next makes
/// progress wakes the others.
pub(crate) struct SharedWrite<W> {
    pub(crate) core: WriteCore,
    pub(crate) io: W,
    waiting: Vec<Waker>,
}

impl<W: AsyncWrite + Unpin> SharedWrite<W> {
    pub(crate) fn new(core: WriteCore, io: W) -> SharedWrite<W> {
        SharedWrite {
            core,
            io,
            waiting: Vec::new(),
        }
    }

    /// Run one poll of the write core and keep the waiting tasks' wake-ups.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WriteCore, &mut W, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let before = self.core.written;
        let polled = f(&mut self.core, &mut self.io, cx);
        if self.core.written != before || polled.is_ready() {
            for waker in self.waiting.drain(..) {
                if !waker.will_wake(cx.waker()) {
                    waker.wake();
                }
            }
        }
        if polled.is_pending() && !self.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiting.push(cx.waker().clone());
        }
        polled
    }
}

/// What writers need of a connection's write side, whole or split: room, the queue,
/// and a flush.
pub(crate) trait WritePath {
    /// See [`WriteCore::poll_room`].
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
    /// See [`WriteCore::poll_flush`].
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
    /// Run `f` on the write core (to queue frames or change settings).
    fn with_core(
        &mut self,
        f: &mut dyn FnMut(&mut WriteCore) -> Result<(), Error>,
    ) -> Result<(), Error>;
}

/// Wait for room, queue with `queue`, then wait until it is written.
pub(crate) async fn send<P: WritePath + ?Sized>(
    path: &mut P,
    mut queue: impl FnMut(&mut WriteCore) -> Result<(), Error>,
) -> Result<(), Error> {
    poll_fn(|cx| path.poll_room(cx)).await?;
    path.with_core(&mut queue)?;
    poll_fn(|cx| path.poll_flush(cx)).await
}

/// Queue a message of the Sink kind: data or control.
pub(crate) fn queue_message(core: &mut WriteCore, message: &super::Message) -> Result<(), Error> {
    use super::Message;
    match message {
        Message::Text(text) => core.queue_data(MessageType::Text, text.as_bytes()),
        Message::Binary(data) => core.queue_data(MessageType::Binary, data),
        Message::Ping(data) => core.queue_control(MessageType::Ping, data),
        Message::Pong(data) => core.queue_control(MessageType::Pong, data),
        Message::Close(frame) => {
            let payload = match frame {
                Some(frame) => crate::conn::close_payload(frame.code, &frame.reason)?,
                None => Vec::new(),
            };
            core.queue_control(MessageType::Close, &payload)
        }
    }
}

/// The Sink's close: a normal close (1000) unless a close was sent, then a flush.
pub(crate) fn poll_sink_close<P: WritePath + ?Sized>(
    path: &mut P,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    path.with_core(&mut |core| {
        if core.state.close_sent() {
            return Ok(());
        }
        let payload = crate::format_close_message(crate::CloseCode::NORMAL_CLOSURE, "");
        core.queue_control(MessageType::Close, &payload)
    })?;
    path.poll_flush(cx)
}
