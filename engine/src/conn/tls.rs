//! TLS (rustls) under a blocking [`Conn`](super::Conn): reads and writes bounded by their
//! deadline as a whole, and a session split between a reader and a writer thread.
//!
//! rustls's own `Stream` loops on the socket until a record is whole, so a peer that
//! sends a record a byte at a time holds one `read` as long as it likes, whatever the
//! socket timeout. Here the session is driven by hand: each socket read or write is
//! bounded by what is left of the deadline, and the deadline is checked between them.
//! The same loops run the TLS handshake, so a handshake timeout bounds it too.
//!
//! Split ([`SplitStream`]): both ends share the session behind a lock that is held only
//! while records are opened or sealed, never while a thread waits on the socket; the
//! reader waits on its own handle of the socket, and sealed records go out under a
//! second lock taken before the session's is released, so they leave in order.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::DerefMut;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::{ConnectionCommon, ServerConnection, SideData, StreamOwned};

use super::stream::{
    shutdown_tcp, time_left, timeout_kind, Closer, ReadEnd, SplitStream, Stream, WriteEnd,
};

/// Bound the next socket read by what is left of `deadline` (none without one). Set
/// every time: the read and write paths of one socket arm it with different deadlines.
fn arm_read(sock: &TcpStream, deadline: Option<Instant>) -> io::Result<()> {
    sock.set_read_timeout(time_left(deadline, "tls read")?)
}

fn arm_write(sock: &TcpStream, deadline: Option<Instant>) -> io::Result<()> {
    sock.set_write_timeout(time_left(deadline, "tls write")?)
}

/// Open what arrived; a TLS error sends its alert (best effort) and is `InvalidData`.
fn process<D: SideData>(conn: &mut ConnectionCommon<D>, sock: &mut TcpStream) -> io::Result<()> {
    if let Err(err) = conn.process_new_packets() {
        let _ = conn.write_tls(sock);
        return Err(io::Error::new(io::ErrorKind::InvalidData, err));
    }
    Ok(())
}

/// Write everything the session holds for the peer, by `deadline`.
fn flush<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    sock: &mut TcpStream,
    deadline: Option<Instant>,
) -> io::Result<()> {
    while conn.wants_write() {
        arm_write(sock, deadline)?;
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timeout_kind(e, deadline)),
        }
    }
    Ok(())
}

/// One read from the socket into the session (0 at end of stream), then open it.
fn read_once<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    sock: &mut TcpStream,
    deadline: Option<Instant>,
) -> io::Result<usize> {
    arm_read(sock, deadline)?;
    let n = loop {
        match conn.read_tls(sock) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timeout_kind(e, deadline)),
            Ok(n) => break n,
        }
    };
    process(conn, sock)?;
    Ok(n)
}

/// Run the TLS handshake to its end by `deadline`.
pub(crate) fn handshake<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    sock: &mut TcpStream,
    deadline: Option<Instant>,
) -> io::Result<()> {
    while conn.is_handshaking() {
        flush(conn, sock, deadline)?;
        if conn.is_handshaking() && conn.wants_read() && read_once(conn, sock, deadline)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the tls handshake",
            ));
        }
    }
    flush(conn, sock, deadline)
}

/// Read plaintext by `deadline` (handshaking first if the session still is): `Ok(0)`
/// after the peer's close_notify, `UnexpectedEof` when the socket ends without one.
pub(crate) fn read<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    sock: &mut TcpStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        flush(conn, sock, deadline)?;
        read_once(conn, sock, deadline)?;
    }
}

/// Seal `buf` (or as much as the session takes) and write it out by `deadline`.
pub(crate) fn write<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    sock: &mut TcpStream,
    buf: &[u8],
    deadline: Option<Instant>,
) -> io::Result<usize> {
    if conn.is_handshaking() {
        handshake(conn, sock, deadline)?;
    }
    flush(conn, sock, deadline)?;
    let n = conn.writer().write(buf)?;
    flush(conn, sock, deadline)?;
    Ok(n)
}

/// A server-side TLS stream, so an [`Upgrader`](crate::Upgrader) can serve `wss://`.
/// Build it with `rustls::StreamOwned::new(ServerConnection::new(config)?, tcp)`; the
/// TLS handshake then runs within the upgrader's handshake timeout.
impl Stream for StreamOwned<ServerConnection, TcpStream> {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        read(&mut self.conn, &mut self.sock, buf, deadline)
    }
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        write(&mut self.conn, &mut self.sock, buf, deadline)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }
    fn shutdown(&self) -> io::Result<()> {
        shutdown_tcp(&self.sock)
    }
}

impl SplitStream for StreamOwned<ServerConnection, TcpStream> {
    type Reader = TlsReader<ServerConnection>;
    type Writer = TlsWriter<ServerConnection>;
    fn split_stream(self) -> io::Result<(Self::Reader, Self::Writer, Closer)> {
        split(self.conn, self.sock)
    }
}

/// The session both ends of a split TLS stream share.
struct Session<C> {
    conn: Mutex<C>,
    /// The socket sealed records leave by; taken before `conn` is released.
    send: Mutex<TcpStream>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole rustls calls run under these locks; a panic inside one is a rustls bug,
    // and the session it leaves is the one there is.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C, D> Session<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
{
    /// Seal what `conn` holds for the peer and write it out, in order, by `deadline`.
    fn send(
        &self,
        mut conn: MutexGuard<'_, C>,
        sealed: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        sealed.clear();
        while conn.wants_write() {
            conn.write_tls(sealed)?;
        }
        if sealed.is_empty() {
            return Ok(());
        }
        let mut sock = lock(&self.send);
        drop(conn);
        let mut written = 0;
        while written < sealed.len() {
            arm_write(&sock, deadline)?;
            match sock.write(&sealed[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timeout_kind(e, deadline)),
            }
        }
        Ok(())
    }
}

/// Split a TLS session over `sock` into a reader, a writer and a closer.
pub(crate) fn split<C, D>(
    conn: C,
    sock: TcpStream,
) -> io::Result<(TlsReader<C>, TlsWriter<C>, Closer)>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
{
    let reader_sock = sock.try_clone()?;
    let closer = sock.try_clone()?;
    let session = Arc::new(Session {
        conn: Mutex::new(conn),
        send: Mutex::new(sock),
    });
    Ok((
        TlsReader {
            session: Arc::clone(&session),
            sock: reader_sock,
            raw: vec![0; RAW_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
        },
        TlsWriter {
            session,
            sealed: Vec::new(),
            broken: None,
        },
        Box::new(move || shutdown_tcp(&closer)),
    ))
}

/// How much the reader takes from the socket at once.
const RAW_CHUNK: usize = 4096;

/// The read end of a split TLS stream: waits on its own handle of the socket, opens
/// records under the session lock.
pub struct TlsReader<C> {
    session: Arc<Session<C>>,
    sock: TcpStream,
    /// Bytes read from the socket the session has not taken yet.
    raw: Box<[u8]>,
    start: usize,
    end: usize,
}

/// The write end of a split TLS stream: seals under the session lock, writes after it.
pub struct TlsWriter<C> {
    session: Arc<Session<C>>,
    sealed: Vec<u8>,
    /// A failed write leaves records half sent: every later write fails with its error.
    broken: Option<(io::ErrorKind, String)>,
}

impl<C, D> ReadEnd for TlsReader<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
{
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        loop {
            {
                let mut conn = lock(&self.session.conn);
                while self.start < self.end {
                    match conn.read_tls(&mut &self.raw[self.start..self.end]) {
                        // After the peer's close_notify nothing more is read.
                        Ok(0) => self.start = self.end,
                        Ok(n) => self.start += n,
                        // The plaintext buffer is full: hand some out first.
                        Err(e) if e.kind() == io::ErrorKind::Other => break,
                        Err(e) => return Err(e),
                    }
                    if let Err(err) = conn.process_new_packets() {
                        let mut alert = Vec::new();
                        let _ = self.session.send(conn, &mut alert, deadline);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, err));
                    }
                }
                match conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
                if conn.wants_write() {
                    // Answers the session owes the peer (a key update, an alert).
                    self.session.send(conn, &mut Vec::new(), deadline)?;
                }
            }
            if self.start < self.end {
                continue;
            }
            arm_read(&self.sock, deadline)?;
            let n = match self.sock.read(&mut self.raw) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(timeout_kind(e, deadline)),
                Ok(n) => n,
            };
            if n == 0 {
                // Tell the session the stream ended; its reader reports how.
                let mut conn = lock(&self.session.conn);
                conn.read_tls(&mut &[][..])?;
                let _ = conn.process_new_packets();
                return match conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    done => done,
                };
            }
            self.start = 0;
            self.end = n;
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
}

impl<C, D> WriteEnd for TlsWriter<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
{
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        if let Some((kind, text)) = &self.broken {
            return Err(io::Error::new(*kind, text.clone()));
        }
        let mut conn = lock(&self.session.conn);
        let n = conn.writer().write(buf)?;
        let sent = self.session.send(conn, &mut self.sealed, deadline);
        if self.sealed.capacity() > 64 * 1024 {
            self.sealed = Vec::new();
        }
        match sent {
            Ok(()) => Ok(n),
            Err(e) => {
                self.broken = Some((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }

    /// Each socket write is armed with its own deadline as it starts.
    fn set_write_timeout(&self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn shutdown(&self) -> io::Result<()> {
        shutdown_tcp(&lock(&self.session.send))
    }
}

impl<C> std::fmt::Debug for TlsReader<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReader").finish_non_exhaustive()
    }
}

impl<C> std::fmt::Debug for TlsWriter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsWriter").finish_non_exhaustive()
    }
}
