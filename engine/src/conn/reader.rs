//! [`MessageReader`] (the seed's `NextReader`) and [`JoinMessages`] (its
//! `JoinMessages`): messages read as `io::Read` streams, never gathered whole.

use std::io::{self, Read};

use super::read::Dst;
use super::{Conn, ReadHalf, Stream};
use crate::error::Error;

/// Where a reader pulls message bytes from: a whole connection or its read half.
pub(crate) enum Source<'a, S: Stream> {
    Conn(&'a mut Conn<S>),
    Half(&'a mut ReadHalf<S>),
}

impl<S: Stream> Source<'_, S> {
    fn read_part(&mut self, dst: Dst<'_>) -> Result<usize, Error> {
        match self {
            Source::Conn(conn) => conn.reader.read_part(&mut conn.side, dst),
            Source::Half(half) => half.read_part(dst),
        }
    }

    fn next_message(&mut self) -> Result<crate::MessageType, Error> {
        match self {
            Source::Conn(conn) => conn.reader.next_message(&mut conn.side),
            Source::Half(half) => half.next_message(),
        }
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
pub struct MessageReader<'a, S: Stream> {
    pub(crate) source: Source<'a, S>,
}

impl<S: Stream> Read for MessageReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.source.read_part(Dst::Slice(buf)).map_err(into_io)
    }
}

impl<S: Stream> std::fmt::Debug for MessageReader<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader").finish_non_exhaustive()
    }
}

/// Successive messages as one `io::Read`, each followed by a terminator (the seed's
/// `JoinMessages`). Reading returns the error that ends the connection, a close
/// included.
pub struct JoinMessages<'a, S: Stream> {
    source: Source<'a, S>,
    term: Vec<u8>,
    /// Inside a message; else between messages.
    in_message: bool,
    /// How much of the terminator is still to be given out.
    term_left: usize,
}

impl<S: Stream> Read for JoinMessages<'_, S> {
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

impl<S: Stream> std::fmt::Debug for JoinMessages<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinMessages").finish_non_exhaustive()
    }
}

/// Read `conn`'s successive messages as one stream, `term` after each (the seed's
/// `JoinMessages`).
pub fn join_messages<'a, S: Stream>(conn: &'a mut Conn<S>, term: &str) -> JoinMessages<'a, S> {
    JoinMessages {
        source: Source::Conn(conn),
        term: term.as_bytes().to_vec(),
        in_message: false,
        term_left: 0,
    }
}

impl<S: Stream> ReadHalf<S> {
    /// This half's successive messages as one stream, `term` after each.
    pub fn join_messages(&mut self, term: &str) -> JoinMessages<'_, S> {
        JoinMessages {
            source: Source::Half(self),
            term: term.as_bytes().to_vec(),
            in_message: false,
            term_left: 0,
        }
    }
}
