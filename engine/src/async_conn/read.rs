//! The read side of an [`AsyncConn`](super::AsyncConn): the blocking `Conn`'s own read
//! state (decoder, inflater, read buffer, handlers, the error that ends reads for good)
//! driven by polls instead of blocking reads.
//!
//! Cancellation: every byte read and every piece of a message lives in the connection,
//! never in a future. A read that finds no bytes returns "pending" from deep inside the
//! read state without changing it, so a read future dropped at any point (a
//! `tokio::select!` that took another branch) loses nothing; the next read goes on from
//! the same byte. A message gathered partly by a dropped `read_message` is finished by
//! the next one.

use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::timer::Timer;
use super::write::WriteCore;
use crate::conn::control::ControlWrite;
use crate::conn::read::{is_pending, pending, Dst, ReadIo, ReadState};
use crate::error::Error;
use crate::proto::MessageType;

/// How long a failed read waits for what its handlers queued (the close answer) to go
/// out before it reports the error: the default handlers' write wait
/// (`HANDLER_WRITE_WAIT`, 1 s).
const ANSWER_WAIT: Duration = crate::conn::control::HANDLER_WRITE_WAIT;

/// A message whose first part was read.
struct Gathered {
    message_type: MessageType,
    bytes: Vec<u8>,
    /// How much of `bytes` a message reader already gave out.
    taken: usize,
    /// Who started it: `read_message` (which finishes it) or a message reader (after
    /// which a new read skips the rest of the message).
    by_reader: bool,
}

pub(crate) struct ReadSide {
    pub(crate) core: ReadCore,
    timer: Timer,
    /// When a failed read stops waiting for its handlers' answers to go out.
    answer_deadline: Option<Instant>,
}

/// The read state and the message in progress.
pub(crate) struct ReadCore {
    pub(crate) state: ReadState,
    gathered: Option<Gathered>,
    /// The `Stream` gave its last item.
    pub(crate) ended: bool,
}

/// Where a handler's answer (a pong, a close) goes: the write side of the same
/// connection, whole or split.
pub(crate) trait Answer<R> {
    /// Queue the frame (see [`WriteCore::queue_answer`]) and try to write it now.
    fn answer(
        &mut self,
        stream: &mut R,
        cx: &mut Context<'_>,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error>;
    /// Ready once what is queued is written.
    fn poll_flush(&mut self, stream: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
    /// Write what waits in the queue, if anything, without waiting: every read poll
    /// does, so a pong queued while the stream was full goes out once it has room even
    /// when nothing else writes (and a task woken for room gets it used).
    fn push_queued(&mut self, stream: &mut R, cx: &mut Context<'_>);
}

/// A connection not split writes its answers on the stream it reads.
impl<S: AsyncWrite + Unpin> Answer<S> for &mut WriteCore {
    fn answer(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        self.queue_answer(message_type, data)?;
        // A full stream is no error here: the queue goes out with the next poll.
        let _ = WriteCore::poll_flush(self, stream, cx);
        Ok(())
    }

    fn poll_flush(&mut self, stream: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        WriteCore::poll_flush(self, stream, cx)
    }

    fn push_queued(&mut self, stream: &mut S, cx: &mut Context<'_>) {
        if self.waiting() > 0 {
            let _ = WriteCore::poll_flush(self, stream, cx);
        }
    }
}

/// The read state's view of a stream and a write side, for one poll.
pub(crate) struct PollIo<'a, 'c, R, A> {
    stream: &'a mut R,
    timer: &'a mut Timer,
    cx: &'a mut Context<'c>,
    answer: &'a mut A,
}

impl<R, A: Answer<R>> ControlWrite for PollIo<'_, '_, R, A> {
    fn write_control(
        &mut self,
        message_type: MessageType,
        data: &[u8],
        _deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.answer.answer(self.stream, self.cx, message_type, data)
    }
}

impl<R: AsyncRead + Unpin, A: Answer<R>> ReadIo for PollIo<'_, '_, R, A> {
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match std::pin::Pin::new(&mut *self.stream).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => match deadline {
                Some(deadline) if self.timer.expired(deadline, self.cx) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "read deadline passed",
                )),
                _ => Err(pending()),
            },
        }
    }

    fn set_read_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        // Deadlines are polled (`read_by`), not set on the stream.
        Ok(())
    }
}

/// A read error, or "pending" when the stream had no bytes yet.
fn poll_result<T>(result: Result<T, Error>) -> Poll<Result<T, Error>> {
    match result {
        Err(Error::Io(err)) if is_pending(&err) => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl ReadSide {
    pub(crate) fn new(state: ReadState) -> ReadSide {
        ReadSide {
            core: ReadCore {
                state,
                gathered: None,
                ended: false,
            },
            timer: Timer::default(),
            answer_deadline: None,
        }
    }

    /// One poll of `f` over the read core, reading from `stream`, handlers answering
    /// through `answer`. A read error is reported once the answers are out (the close
    /// a failed read sends, the close a received close is answered with), or
    /// [`ANSWER_WAIT`] after it, whichever comes first.
    pub(crate) fn poll<R, A, T, F>(
        &mut self,
        stream: &mut R,
        cx: &mut Context<'_>,
        mut answer: A,
        f: F,
    ) -> Poll<Result<T, Error>>
    where
        R: AsyncRead + Unpin,
        A: Answer<R>,
        F: FnOnce(&mut ReadCore, &mut PollIo<'_, '_, R, A>) -> Poll<Result<T, Error>>,
    {
        answer.push_queued(stream, cx);
        let polled = {
            let mut io = PollIo {
                stream: &mut *stream,
                timer: &mut self.timer,
                cx: &mut *cx,
                answer: &mut answer,
            };
            f(&mut self.core, &mut io)
        };
        match polled {
            Poll::Ready(Err(err)) => {
                let deadline = *self
                    .answer_deadline
                    .get_or_insert_with(|| Instant::now() + ANSWER_WAIT);
                if answer.poll_flush(stream, cx).is_pending() && !self.timer.expired(deadline, cx) {
                    // The read state keeps the error: the next poll finds it again.
                    return Poll::Pending;
                }
                Poll::Ready(Err(err))
            }
            other => other,
        }
    }
}

impl ReadCore {
    /// The next data message, whole.
    pub(crate) fn poll_message<I: ReadIo>(
        &mut self,
        io: &mut I,
    ) -> Poll<Result<(MessageType, Vec<u8>), Error>> {
        if self.gathered.as_ref().is_some_and(|g| g.by_reader) {
            // A message reader was dropped before the end: the rest is skipped.
            self.gathered = None;
        }
        if self.gathered.is_none() {
            let message_type = std::task::ready!(poll_result(self.state.next_message(io)))?;
            self.gathered = Some(Gathered {
                message_type,
                bytes: Vec::new(),
                taken: 0,
                by_reader: false,
            });
        }
        loop {
            let Some(gathered) = self.gathered.as_mut() else {
                unreachable!("a message is gathered from here on");
            };
            let read = self.state.read_part(io, Dst::Vec(&mut gathered.bytes));
            match std::task::ready!(poll_result(read)) {
                Ok(0) => {
                    let Gathered {
                        message_type,
                        mut bytes,
                        taken,
                        ..
                    } = self.gathered.take().expect("matched just above");
                    bytes.drain(..taken);
                    return Poll::Ready(Ok((message_type, bytes)));
                }
                Ok(_) => {}
                Err(err) => {
                    self.gathered = None;
                    return Poll::Ready(Err(err));
                }
            }
        }
    }

    /// The type of the next data message, for a message reader.
    pub(crate) fn poll_next_message<I: ReadIo>(
        &mut self,
        io: &mut I,
    ) -> Poll<Result<MessageType, Error>> {
        match &mut self.gathered {
            // A dropped `read_message` gathered part of this one: the reader gives
            // those bytes first.
            Some(gathered) if !gathered.by_reader => {
                gathered.by_reader = true;
                return Poll::Ready(Ok(gathered.message_type));
            }
            Some(_) => self.gathered = None,
            None => {}
        }
        let message_type = std::task::ready!(poll_result(self.state.next_message(io)))?;
        self.gathered = Some(Gathered {
            message_type,
            bytes: Vec::new(),
            taken: 0,
            by_reader: true,
        });
        Poll::Ready(Ok(message_type))
    }

    /// The next bytes of the message a reader reads; `Ok(0)` at its end.
    pub(crate) fn poll_part<I: ReadIo>(
        &mut self,
        io: &mut I,
        dst: &mut [u8],
    ) -> Poll<Result<usize, Error>> {
        let Some(gathered) = self.gathered.as_mut().filter(|g| g.by_reader) else {
            // Another read took over the connection since: this reader's message is over.
            return Poll::Ready(Ok(0));
        };
        if gathered.taken < gathered.bytes.len() {
            let n = dst.len().min(gathered.bytes.len() - gathered.taken);
            dst[..n].copy_from_slice(&gathered.bytes[gathered.taken..gathered.taken + n]);
            gathered.taken += n;
            return Poll::Ready(Ok(n));
        }
        match std::task::ready!(poll_result(self.state.read_part(io, Dst::Slice(dst)))) {
            Ok(0) => {
                self.gathered = None;
                Poll::Ready(Ok(0))
            }
            Ok(n) => Poll::Ready(Ok(n)),
            Err(err) => {
                self.gathered = None;
                Poll::Ready(Err(err))
            }
        }
    }
}
