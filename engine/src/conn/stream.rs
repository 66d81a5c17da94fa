//! [`Stream`]: what a blocking [`Conn`](super::Conn) needs of its transport, and
//! [`SplitStream`]: a stream that splits into a read end and a write end for two threads.
//!
//! `Read + Write`, plus the socket-level knobs a connection needs (those Go's `net.Conn`
//! gives gorilla/websocket): deadlines (as timeouts), addresses and shutdown. Implemented
//! here for `TcpStream` and (on Unix) `UnixStream`; [`tls`](super::tls) adds rustls
//! streams and the client module its `ClientStream`. Any other `Read + Write` becomes a
//! `Stream` with an empty impl block: every method has a default (no timeouts, no
//! addresses, no shutdown).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A byte stream a [`Conn`](super::Conn) can run over.
///
/// ```
/// use std::io::{Read, Write};
///
/// // Any Read + Write can carry a connection; this one has no timeouts, so deadlines
/// // are checked only between reads, and no addresses.
/// struct Pipe(std::collections::VecDeque<u8>);
/// impl Read for Pipe {
///     fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> { self.0.read(buf) }
/// }
/// impl Write for Pipe {
///     fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> { self.0.write(buf) }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
/// impl ringcast::conn::Stream for Pipe {}
///
/// // An empty pipe ends before a request comes: the upgrade says so.
/// let refused = ringcast::Upgrader::default().upgrade(Pipe(Default::default()), &[]);
/// assert!(matches!(refused, Err(ringcast::Error::Io(_))));
/// ```
pub trait Stream: Read + Write {
    /// Bound each read by `timeout` (`None`: block for ever). The default does nothing:
    /// a stream without timeouts can only be checked against a deadline between reads.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let _ = timeout;
        Ok(())
    }

    /// Bound each write by `timeout` (`None`: block for ever). The default does nothing.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let _ = timeout;
        Ok(())
    }

    /// Read some bytes, giving up once `deadline` passes. The caller has just set the
    /// read timeout to what was left of the deadline, so a stream whose `read` waits on
    /// its transport once (TCP) needs nothing more: that is the default. A stream whose
    /// one read may wait several times (TLS: a record arriving a byte at a time)
    /// overrides it to keep the whole call within `deadline`.
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        let _ = deadline;
        self.read(buf)
    }

    /// Write some of `buf`, giving up once `deadline` passes; as
    /// [`read_by`](Self::read_by), for writes.
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        let _ = deadline;
        self.write(buf)
    }

    /// The local address (default: an `Unsupported` error).
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(unsupported("local_addr"))
    }

    /// The peer's address (default: an `Unsupported` error).
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Err(unsupported("peer_addr"))
    }

    /// Shut both directions down: blocked reads and writes return at once (default: an
    /// `Unsupported` error, so that [`Conn::close`](super::Conn::close) says it could not).
    fn shutdown(&self) -> io::Result<()> {
        Err(unsupported("shutdown"))
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this stream has no {what}"),
    )
}

/// What the read half of a split connection reads from (see [`SplitStream`]). Every
/// [`Stream`] is one.
pub trait ReadEnd {
    /// See [`Stream::read_by`].
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize>;
    /// See [`Stream::set_read_timeout`].
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// What the write half of a split connection writes to (see [`SplitStream`]). Every
/// [`Stream`] is one.
pub trait WriteEnd {
    /// See [`Stream::write_by`].
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize>;
    /// See [`Stream::set_write_timeout`].
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Push out anything buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// See [`Stream::shutdown`].
    fn shutdown(&self) -> io::Result<()>;
}

impl<S: Stream> ReadEnd for S {
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        Stream::read_by(self, buf, deadline)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Stream::set_read_timeout(self, timeout)
    }
}

impl<S: Stream> WriteEnd for S {
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        Stream::write_by(self, buf, deadline)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Stream::set_write_timeout(self, timeout)
    }
    fn flush(&mut self) -> io::Result<()> {
        Write::flush(self)
    }
    fn shutdown(&self) -> io::Result<()> {
        Stream::shutdown(self)
    }
}

/// Shuts a split stream down from any thread, without waiting for the write lock.
pub type Closer = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

/// A stream that splits into independent ends, so that one thread reads while another
/// writes ([`Conn::split`](super::Conn::split)). Plain sockets clone their handle; a TLS
/// stream shares its session between the ends, locked only while records are sealed
/// or opened, never while a thread waits on the socket.
pub trait SplitStream: Stream + Sized {
    /// The end the read half reads from.
    type Reader: ReadEnd;
    /// The end the write half writes to.
    type Writer: WriteEnd;
    /// The two ends, and a [`Closer`] that shuts the stream down from anywhere.
    fn split_stream(self) -> io::Result<(Self::Reader, Self::Writer, Closer)>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }
    fn shutdown(&self) -> io::Result<()> {
        shutdown_tcp(self)
    }
}

/// Shut a TCP stream down both ways; already gone is not an error for the caller.
pub(crate) fn shutdown_tcp(tcp: &TcpStream) -> io::Result<()> {
    match TcpStream::shutdown(tcp, Shutdown::Both) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

impl SplitStream for TcpStream {
    type Reader = TcpStream;
    type Writer = TcpStream;
    fn split_stream(self) -> io::Result<(TcpStream, TcpStream, Closer)> {
        let reader = self.try_clone()?;
        let closer = self.try_clone()?;
        Ok((reader, self, Box::new(move || shutdown_tcp(&closer))))
    }
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::{Closer, SplitStream, Stream};

    /// A Unix-domain socket (a local relay, a socket a supervisor passed in). It has no
    /// IP addresses: `local_addr` and `peer_addr` are `Unsupported`.
    impl Stream for UnixStream {
        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            UnixStream::set_read_timeout(self, timeout)
        }
        fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            UnixStream::set_write_timeout(self, timeout)
        }
        fn shutdown(&self) -> io::Result<()> {
            shutdown_unix(self)
        }
    }

    fn shutdown_unix(stream: &UnixStream) -> io::Result<()> {
        match UnixStream::shutdown(stream, Shutdown::Both) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }

    impl SplitStream for UnixStream {
        type Reader = UnixStream;
        type Writer = UnixStream;
        fn split_stream(self) -> io::Result<(UnixStream, UnixStream, Closer)> {
            let reader = self.try_clone()?;
            let closer = self.try_clone()?;
            Ok((reader, self, Box::new(move || shutdown_unix(&closer))))
        }
    }
}

/// What is left of `deadline`: `Ok(None)` without one; a `TimedOut` error naming `what`
/// once it has passed.
pub(crate) fn time_left(deadline: Option<Instant>, what: &str) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what}: deadline passed"),
            )),
        },
    }
}

/// A socket timeout is `WouldBlock` on Unix and `TimedOut` on Windows: with a deadline
/// set, both are reported as `TimedOut`, as the docs promise.
pub(crate) fn timeout_kind(err: io::Error, deadline: Option<Instant>) -> io::Error {
    if deadline.is_some() && err.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, err.to_string())
    } else {
        err
    }
}
