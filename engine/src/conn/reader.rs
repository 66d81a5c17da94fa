//! [`MessageReader`] (the reader gorilla/websocket's `NextReader` returns) and
//! [`JoinMessages`] (its `JoinMessages`): messages read as `io::Read` streams, never
//! gathered whole (except compressed messages, which are inflated whole).

use std::io::{self, Read};

use super::read::Dst;
use super::{Conn, ReadHalf, SplitStream, Stream};
use crate::error::Error;
use crate::MessageType;

/// Where a reader pulls message bytes from: a whole connection or its read half.
pub(crate) trait Source {
    /// The next bytes of the current message; `Ok(0)` at its end.
    fn read_part(&mut self, dst: Dst<'_>) -> Result<usize, Error>;
    /// Skip the rest of the current message and wait for the next one.
    fn next_message(&mut self) -> Result<MessageType, Error>;
}

impl<S: Stream> Source for Conn<S> {
    fn read_part(&mut self, dst: Dst<'_>) -> Result<usize, Error> {
        self.reader.read_part(&mut self.side, dst)
    }
    fn next_message(&mut self) -> Result<MessageType, Error> {
        self.reader.next_message(&mut self.side)
    }
}

impl<S: SplitStream> Source for ReadHalf<S> {
    fn read_part(&mut self, dst: Dst<'_>) -> Result<usize, Error> {
        ReadHalf::read_part(self, dst)
    }
    fn next_message(&mut self) -> Result<MessageType, Error> {
        ReadHalf::next_message(self)
    }
}

/// A ringcast error carried through `io::Read`: I/O errors come back as they were, the
/// rest wrapped (get them back with `err.into_inner()` and `downcast::<Error>()`).
pub(crate) fn into_io(err: Error) -> io::Error {
    match err {
        Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

/// One message as an `io::Read`, ending (`Ok(0)`) where the message ends. Dropping it
/// early is fine: the next read on the connection skips the rest of the message.
pub struct MessageReader<'a> {
    pub(crate) source: &'a mut dyn Source,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.source.read_part(Dst::Slice(buf)).map_err(into_io)
    }
}

impl std::fmt::Debug for MessageReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader").finish_non_exhaustive()
    }
}

/// Successive messages as one `io::Read`, each followed by a terminator
/// (gorilla/websocket's `JoinMessages`). Reading returns the error that ends the
/// connection, a close included.
pub struct JoinMessages<'a> {
    source: &'a mut dyn Source,
    term: Vec<u8>,
    /// Inside a message; else between messages.
    in_message: bool,
    /// How much of the terminator is still to be given out.
    term_left: usize,
}

impl Read for JoinMessages<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.term_left > 0 {
                let start = self.term.len() - self.term_left;
                let n = self.term_left.min(buf.len());
                buf[..n].copy_from_slice(&self.term[start..start + n]);
                self.term_left -= n;
                return Ok(n);
            }
            if !self.in_message {
                self.source.next_message().map_err(into_io)?;
                self.in_message = true;
            }
            match self.source.read_part(Dst::Slice(buf)).map_err(into_io)? {
                0 => {
                    self.in_message = false;
                    self.term_left = self.term.len();
                }
                n => return Ok(n),
            }
        }
    }
}

impl std::fmt::Debug for JoinMessages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinMessages").finish_non_exhaustive()
    }
}

/// Read `conn`'s successive messages as one stream, `term` after each
/// (gorilla/websocket's `JoinMessages`).
pub fn join_messages<'a, S: Stream>(conn: &'a mut Conn<S>, term: &str) -> JoinMessages<'a> {
    JoinMessages {
        source: conn,
        term: term.as_bytes().to_vec(),
        in_message: false,
        term_left: 0,
    }
}

impl<S: SplitStream> ReadHalf<S> {
    /// This half's successive messages as one stream, `term` after each.
    pub fn join_messages(&mut self, term: &str) -> JoinMessages<'_> {
        JoinMessages {
            source: self,
            term: term.as_bytes().to_vec(),
            in_message: false,
            term_left: 0,
        }
    }
}
