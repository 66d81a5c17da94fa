//! A raw WebSocket client over a plain `TcpStream`: what an attacker writes, byte for
//! byte (bad frames included), and a small reader of what the server sends back. No
//! ringcast code on the client side, so the client cannot be kinder than an attacker.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The key of every handshake (RFC 6455 section 1.3's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The most payload this reader takes in one frame from the server.
const MAX_READ_FRAME: u64 = 64 << 20;

/// Opcodes (RFC 6455 section 5.2).
pub const CONTINUATION: u8 = 0x0;
/// A text frame.
pub const TEXT: u8 = 0x1;
/// A binary frame.
pub const BINARY: u8 = 0x2;
/// A close frame.
pub const CLOSE: u8 = 0x8;
/// A ping frame.
pub const PING: u8 = 0x9;
/// A pong frame.
pub const PONG: u8 = 0xA;

/// An upgrade request for `path`, with `extra` header lines (each ending in `\r\n`).
pub fn request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A frame header with any length (even those RFC 6455 forbids) and, when `masked`, the
/// fixed mask key [`MASK`].
pub fn header(first: u8, len: u64, masked: bool) -> Vec<u8> {
    let bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    match len {
        0..=125 => out.push(bit | len as u8),
        126..=0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
    }
    out
}

/// The mask key of every frame this client sends. A constant: masking protects proxies
/// from a browser's script, not the server from an attacker.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Appends a masked client frame: `opcode`, FIN when `fin`, RSV1 when `compressed`.
pub fn frame_into(out: &mut Vec<u8>, opcode: u8, fin: bool, compressed: bool, payload: &[u8]) {
    let first = opcode | if fin { 0x80 } else { 0 } | if compressed { 0x40 } else { 0 };
    out.extend_from_slice(&header(first, payload.len() as u64, true));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// A masked, final client frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    frame_into(&mut out, opcode, true, false, payload);
    out
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ending {
    /// A close frame with this code (1005 when it had none).
    Closed(u16),
    /// An HTTP status instead of a 101.
    Refused(u16),
    /// The stream ended without a close frame.
    Eof,
    /// The server reset the connection.
    Reset,
    /// Nothing within the deadline: the server still holds the connection open.
    Open,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Closed(code) => write!(f, "close {code}"),
            Ending::Refused(status) => write!(f, "HTTP {status}"),
            Ending::Eof => f.write_str("end of stream"),
            Ending::Reset => f.write_str("reset"),
            Ending::Open => f.write_str("still open"),
        }
    }
}

/// A frame from the server.
#[derive(Debug)]
pub struct Frame {
    /// The opcode.
    pub opcode: u8,
    /// The last frame of its message.
    pub fin: bool,
    /// The payload (unmasked: the server does not mask).
    pub payload: Vec<u8>,
}

/// One client connection.
pub struct Client {
    /// The socket, for writes of any bytes.
    pub stream: TcpStream,
    /// Bytes read and not yet used.
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    pub extensions: Option<String>,
}

impl Client {
    /// Connects, with reads and writes bounded by `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            extensions: None,
        })
    }

    /// A client on a stream already connected (a clone of another client's, for a reader
    /// and a writer on two threads).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            extensions: None,
        }
    }

    /// Connects and upgrades at `path` with `extra` header lines; an error when the
    /// server answers anything but 101.
    pub fn upgrade(
        addr: SocketAddr,
        path: &str,
        extra: &str,
        timeout: Duration,
    ) -> io::Result<Client> {
        let mut client = Client::connect(addr, timeout)?;
        client.stream.write_all(&request(path, extra))?;
        match client.read_head()? {
            101 => Ok(client),
            status => Err(io::Error::other(format!("HTTP {status} instead of 101"))),
        }
    }

    /// Reads an HTTP response head; returns its status. Bytes after it stay buffered.
    pub fn read_head(&mut self) -> io::Result<u16> {
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io::Error::other("response head over 64 KiB"));
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        self.extensions = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, value)| value.trim().to_owned());
        head.split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP response: {head:?}")))
    }

    /// Whether the server agreed to permessage-deflate.
    pub fn compressed(&self) -> bool {
        self.extensions
            .as_deref()
            .is_some_and(|e| e.contains("permessage-deflate"))
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one frame from the server.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let head = self.take(2)?;
        let opcode = head[0] & 0x0F;
        let fin = head[0] & 0x80 != 0;
        let mut len = u64::from(head[1] & 0x7F);
        if len == 126 {
            len = u64::from(u16::from_be_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            ));
        } else if len == 127 {
            len = u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
        }
        if head[1] & 0x80 != 0 {
            return Err(io::Error::other("a masked frame from the server"));
        }
        if len > MAX_READ_FRAME {
            return Err(io::Error::other(format!("a frame of {len} bytes")));
        }
        let payload = self.take(len as usize)?;
        Ok(Frame {
            opcode,
            fin,
            payload,
        })
    }

    /// Sends `batch` over and over until `deadline`, resuming after a write that timed
    /// out where it stopped (so frames stay whole while the server pushes back); returns
    /// the batches sent whole and how the sending ended (`Open`: the deadline came).
    pub fn flood(&mut self, batch: &[u8], deadline: Instant) -> (u64, Ending) {
        // Short writes: a server that stops reading must not hold the flood past its end.
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)));
        let (mut pos, mut batches) = (0, 0);
        while Instant::now() < deadline {
            match self.stream.write(&batch[pos..]) {
                Ok(0) => return (batches, Ending::Eof),
                Ok(n) => {
                    pos += n;
                    if pos == batch.len() {
                        pos = 0;
                        batches += 1;
                    }
                }
                Err(err) => match ending_of(&err) {
                    Ending::Open => {}
                    ending => return (batches, ending),
                },
            }
        }
        (batches, Ending::Open)
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// How the connection stands now, without waiting: what the server already sent is
    /// read (answering pings, skipping data) and the last word taken.
    pub fn ended_now(&mut self) -> Ending {
        // Socket timeouts count in kernel ticks (4 ms or more): a non-blocking read is
        // the only way to look without waiting.
        if self.stream.set_nonblocking(true).is_err() {
            return Ending::Reset;
        }
        // A bound on reading what is already there (a reader that never read may have
        // megabytes waiting).
        let ending = self.ending(Duration::from_millis(50));
        let _ = self.stream.set_nonblocking(false);
        ending
    }

    /// Reads until the connection ends or `wait` passes, answering pings and skipping
    /// data; tells how it ended.
    pub fn ending(&mut self, wait: Duration) -> Ending {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return Ending::Open;
            }
            match self.read_frame() {
                Ok(frame) if frame.opcode == CLOSE => {
                    let code = match frame.payload.get(..2) {
                        Some(code) => u16::from_be_bytes([code[0], code[1]]),
                        None => 1005,
                    };
                    return Ending::Closed(code);
                }
                Ok(ping) if ping.opcode == PING => {
                    let _ = self.send(&frame(PONG, &ping.payload));
                }
                Ok(_) => {}
                Err(err) => return ending_of(&err),
            }
        }
    }
}

/// How an I/O error ends a connection.
pub fn ending_of(err: &io::Error) -> Ending {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => Ending::Eof,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Ending::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ending::Open,
        _ => Ending::Reset,
    }
}

/// How each of `clients` stands now ([`Client::ended_now`]).
pub fn tally_now<'a>(clients: impl IntoIterator<Item = &'a mut Client>) -> Tally {
    let mut tally = Tally::default();
    for client in clients {
        tally.add(client.ended_now());
    }
    tally
}

/// Tallies endings: "200 close 1002" or "150 close 1009, 50 reset".
#[derive(Debug, Default)]
pub struct Tally(std::collections::BTreeMap<Ending, usize>);

impl Tally {
    /// Counts one ending.
    pub fn add(&mut self, ending: Ending) {
        *self.0.entry(ending).or_default() += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Tally) {
        for (ending, count) in &other.0 {
            *self.0.entry(*ending).or_default() += count;
        }
    }

    /// How many ended this way.
    pub fn count(&self, ending: Ending) -> usize {
        self.0.get(&ending).copied().unwrap_or(0)
    }

    /// How many in all.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        let parts: Vec<String> = self.0.iter().map(|(e, n)| format!("{n} {e}")).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_encode_every_length_form() {
        assert_eq!(header(0x81, 5, false), [0x81, 5]);
        assert_eq!(header(0x81, 126, false), [0x81, 126, 0, 126]);
        let huge = header(0x81, 1 << 63, true);
        assert_eq!(huge[1], 0x80 | 127);
        assert_eq!(&huge[2..10], &(1u64 << 63).to_be_bytes());
        assert_eq!(&huge[10..], &MASK);
    }

    #[test]
    fn frames_are_masked_with_the_key() {
        let bytes = frame(TEXT, b"Hello");
        assert_eq!(&bytes[..2], &[0x81, 0x85]);
        let unmasked: Vec<u8> = bytes[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(unmasked, b"Hello");
    }
}
