//! [`Stream`]: what a blocking [`Conn`](super::Conn) needs of its transport.
//!
//! `Read + Write`, plus the socket-level knobs the seed's `net.Conn` offers: deadlines
//! (as timeouts), addresses and shutdown. Implemented for `TcpStream` here, and for TLS
//! streams where the client module adds them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// A byte stream a [`Conn`](super::Conn) can run over.
pub trait Stream: Read + Write {
    /// Bound each read by `timeout` (`None`: block for ever).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bound each write by `timeout` (`None`: block for ever).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Shut both directions down: blocked reads and writes return at once.
    fn shutdown(&self) -> io::Result<()>;
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
        match TcpStream::shutdown(self, Shutdown::Both) {
            // Already gone: shutting down twice is not an error for the caller.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}
