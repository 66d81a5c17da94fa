//! [`AsyncMessageReader`]: one message as an `AsyncRead` (the reader gorilla/websocket's
//! `NextReader` returns), never gathered whole (except a compressed message, inflated
//! whole).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{AsyncConn, AsyncReadHalf};
use crate::conn::reader::into_io;
use crate::error::Error;

/// Where a message reader pulls bytes from: a whole connection or its read half.
pub(crate) trait ReadPath {
    /// The next bytes of the current message into `dst` (not empty); `Ok(0)` at its end.
    fn poll_part(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<Result<usize, Error>>;
}

/// What a message reader reads from: a whole connection or its read half.
pub(crate) enum Source<'a, S> {
    Conn(&'a mut AsyncConn<S>),
    Half(&'a mut AsyncReadHalf<S>),
}

/// One message as an `AsyncRead`, ending where the message ends. Dropping it early is
/// fine: the next read on the connection skips the rest of the message. Errors other
/// than I/O ones come wrapped in an `io::Error` (get them back with `into_inner` and
/// `downcast::<ringcast::Error>`).
pub struct AsyncMessageReader<'a, S> {
    source: Source<'a, S>,
}

impl<'a, S> AsyncMessageReader<'a, S> {
    pub(crate) fn new(source: Source<'a, S>) -> Self {
        AsyncMessageReader { source }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AsyncMessageReader<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = self.get_mut();
        let dst = buf.initialize_unfilled();
        let polled = match &mut this.source {
            Source::Conn(conn) => conn.poll_part(cx, dst),
            Source::Half(half) => half.poll_part(cx, dst),
        };
        match std::task::ready!(polled) {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(err) => Poll::Ready(Err(into_io(err))),
        }
    }
}

impl<S> std::fmt::Debug for AsyncMessageReader<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncMessageReader").finish_non_exhaustive()
    }
}
