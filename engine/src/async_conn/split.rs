//! Owned halves of a split [`AsyncConn`]: an [`AsyncReadHalf`] (a `Stream`), an
//! [`AsyncWriteHalf`] (a `Sink`), and [`AsyncControlHandle`]s for pings and closes from
//! any task.
//!
//! The stream is split by tokio's `io::split`, so every stream splits (plain TCP, TLS,
//! a hyper upgrade). The write queue and the stream's write end sit behind one lock
//! that is held for a single poll, never across an await; the read half's handlers
//! (pongs, the close answer) and control handles queue their frames there, between the
//! writer's frames, and write them themselves when the writer is idle.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use super::read::{Answer, ReadCore, ReadSide};
use super::write::{SharedWrite, WriteCore, WritePath};
use super::{write, AsyncConn, Message};
use crate::error::Error;
use crate::proto::{CloseCode, MessageType};

type Shared<S> = Arc<Mutex<SharedWrite<WriteHalf<S>>>>;

/// Lock the shared write side. Nothing panics while holding it but a bug, and the
/// queue is whole between polls, so a poisoned lock is used as it is.
fn lock<W>(shared: &Mutex<SharedWrite<W>>) -> MutexGuard<'_, SharedWrite<W>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn split<S: AsyncRead + AsyncWrite + Unpin>(
    conn: AsyncConn<S>,
) -> (AsyncReadHalf<S>, AsyncWriteHalf<S>) {
    let (read_end, write_end) = tokio::io::split(conn.stream);
    let shared = Arc::new(Mutex::new(SharedWrite::new(conn.write, write_end)));
    (
        AsyncReadHalf {
            stream: read_end,
            read: conn.read,
            shared: Arc::clone(&shared),
            subprotocol: conn.subprotocol,
        },
        AsyncWriteHalf { shared },
    )
}

/// The reading half of a split [`AsyncConn`]: its read methods and a `Stream` of
/// [`Message`]s.
pub struct AsyncReadHalf<S> {
    stream: ReadHalf<S>,
    read: ReadSide,
    shared: Shared<S>,
    subprotocol: Option<String>,
}

/// The writing half of a split [`AsyncConn`]: its write methods and a `Sink` of
/// [`Message`]s.
pub struct AsyncWriteHalf<S> {
    shared: Shared<S>,
}

/// Writes control frames (a ping ticker, a close) from any task, between the frames the
/// write half writes.
pub struct AsyncControlHandle<S> {
    shared: Shared<S>,
}

impl<S> Clone for AsyncControlHandle<S> {
    fn clone(&self) -> Self {
        AsyncControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A split connection's handlers answer on the shared write side.
impl<R, W: AsyncWrite + Unpin> Answer<R> for &Mutex<SharedWrite<W>> {
    fn answer(
        &mut self,
        _stream: &mut R,
        cx: &mut Context<'_>,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), Error> {
        let mut shared = lock(self);
        shared.core.queue_answer(message_type, data)?;
        // A full stream is no error here: the writer (or the next read) sends it.
        let _ = shared.poll(cx, |core, io, cx| core.poll_flush(io, cx));
        Ok(())
    }

    fn poll_flush(&mut self, _stream: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(self).poll(cx, |core, io, cx| core.poll_flush(io, cx))
    }

    fn push_queued(&mut self, _stream: &mut R, cx: &mut Context<'_>) {
        let mut shared = lock(self);
        if shared.core.waiting() > 0 {
            let _ = shared.poll(cx, |core, io, cx| core.poll_flush(io, cx));
        }
    }
}

/// The shared write side as a write path: each call takes the lock for one poll.
impl<S: AsyncRead + AsyncWrite + Unpin> WritePath for Shared<S> {
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(self).poll(cx, |core, io, cx| core.poll_room(io, cx))
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(self).poll(cx, |core, io, cx| core.poll_flush(io, cx))
    }
    fn with_core(
        &mut self,
        f: &mut dyn FnMut(&mut WriteCore) -> Result<(), Error>,
    ) -> Result<(), Error> {
        f(&mut lock(self).core)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncReadHalf<S> {
    /// One poll of the read side; handlers answer on the shared write side.
    fn poll_read<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(
            &mut ReadCore,
            &mut super::read::PollIo<'_, '_, ReadHalf<S>, &Mutex<SharedWrite<WriteHalf<S>>>>,
        ) -> Poll<Result<T, Error>>,
    ) -> Poll<Result<T, Error>> {
        let AsyncReadHalf {
            stream,
            read,
            shared,
            ..
        } = self;
        read.poll(stream, cx, &**shared, f)
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// A handle to write control frames from any task.
    pub fn control_handle(&self) -> AsyncControlHandle<S> {
        AsyncControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    read_methods!(Half);
}

stream_via_poll_read!(AsyncReadHalf<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWriteHalf<S> {
    /// See [`AsyncConn::close`]: shut the stream's write direction down.
    pub async fn close(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| {
            lock(&self.shared).poll(cx, |core, io, cx| core.poll_shutdown(io, cx))
        })
        .await
    }

    /// A handle to write control frames from any task.
    pub fn control_handle(&self) -> AsyncControlHandle<S> {
        AsyncControlHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    fn with_write<R>(&mut self, f: impl FnOnce(&mut WriteCore) -> R) -> R {
        f(&mut lock(&self.shared).core)
    }

    write_methods!(Half);
}

impl<S: AsyncRead + AsyncWrite + Unpin> WritePath for AsyncWriteHalf<S> {
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll_room(cx)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        WritePath::poll_flush(&mut self.shared, cx)
    }
    fn with_core(
        &mut self,
        f: &mut dyn FnMut(&mut WriteCore) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.shared.with_core(f)
    }
}

sink_via_write_path!(AsyncWriteHalf<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncControlHandle<S> {
    /// Write a close, ping or pong frame (at most 125 bytes) and wait until it is
    /// written. It waits for room behind the frames already queued; to bound the wait,
    /// wrap it in `tokio::time::timeout` (a frame already queued still goes out).
    pub async fn write_control(&self, message_type: MessageType, data: &[u8]) -> Result<(), Error> {
        let mut shared = Arc::clone(&self.shared);
        write::send(&mut shared, |core| core.queue_control(message_type, data)).await
    }

    /// Send a close frame with `code` and `reason` (see [`AsyncConn::close_with`]).
    pub async fn close_with(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let payload = crate::conn::close_payload(code, reason)?;
        self.write_control(MessageType::Close, &payload).await
    }
}

impl<S> std::fmt::Debug for AsyncReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReadHalf").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for AsyncWriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWriteHalf").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for AsyncControlHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncControlHandle").finish_non_exhaustive()
    }
}
