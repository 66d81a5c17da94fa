//! Raw bytes as what a peer sends after the opening handshake, read by the blocking
//! `Conn` whole (`read_message`) or in small reads (`next_reader`), with compression
//! negotiated or not, in either role:
//!
//! - the server side: `Upgrader::upgrade` over an in-memory stream that yields a valid
//!   request and then the bytes, cut into reads of a size the first byte chooses;
//! - the client side: `Dialer::client_handshake` over an in-memory stream that answers
//!   the request the `Dialer` wrote (its key, its offer) with a 101 from the `Upgrader`,
//!   then yields the bytes, cut the same way.
//!
//! Nothing may panic or hang; no message exceeds the read limit; text is UTF-8; once a
//! read fails, every later read fails too.
#![no_main]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringcast::conn::Stream;
use ringcast::proto::handshake::{self, Limits};
use ringcast::{Conn, Dialer, MessageType, Upgrader};

const LIMIT: u64 = 1 << 16;
/// A hang guard only: every byte is there at once, so reads never wait.
const DEADLINE: Duration = Duration::from_secs(10);

fuzz_target!(|data: &[u8]| {
    let [flags, frames @ ..] = data else {
        return;
    };
    let compression = flags & 1 != 0;
    let streaming = flags & 2 != 0;
    let chunk = usize::from(flags >> 3) + 1;
    if flags & 4 == 0 {
        let stream = Memory::new(request(compression), frames, chunk);
        let upgrader = Upgrader {
            enable_compression: compression,
            read_limit: Some(LIMIT),
            check_origin: Some(Arc::new(|_| true)),
            ..Upgrader::default()
        };
        let conn = upgrader.upgrade(stream, &[]).expect("a valid request");
        read_all(conn, streaming);
    } else {
        let stream = Memory::answering(compression, frames, chunk);
        let dialer = Dialer {
            enable_compression: compression,
            read_limit: Some(LIMIT),
            handshake_timeout: Some(DEADLINE),
            ..Dialer::default()
        };
        let (mut conn, _) = dialer
            .client_handshake(stream, "ws://example.com/chat", &[])
            .expect("the answer to its own request is valid");
        conn.set_read_deadline(Some(Instant::now() + DEADLINE));
        read_all(conn, streaming);
    }
});

/// Reads until the first error, checking each message; then once more.
fn read_all<S: Stream>(mut conn: Conn<S>, streaming: bool) {
    loop {
        let read = if streaming {
            read_in_pieces(&mut conn)
        } else {
            conn.read_message()
        };
        match read {
            Ok((kind, payload)) => {
                assert!(payload.len() as u64 <= LIMIT, "{} bytes", payload.len());
                match kind {
                    MessageType::Text => assert!(std::str::from_utf8(&payload).is_ok()),
                    MessageType::Binary => {}
                    other => panic!("a data read returned {other:?}"),
                }
            }
            Err(_) => break,
        }
    }
    assert!(
        conn.read_message().is_err(),
        "a read after an error succeeded"
    );
}

/// `next_reader`, then reads of 7 bytes until the end of the message.
fn read_in_pieces<S: Stream>(
    conn: &mut Conn<S>,
) -> Result<(MessageType, Vec<u8>), ringcast::Error> {
    let (kind, mut reader) = conn.next_reader()?;
    let mut payload = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let n = reader.read(&mut piece).map_err(ringcast::Error::Io)?;
        if n == 0 {
            return Ok((kind, payload));
        }
        payload.extend_from_slice(&piece[..n]);
        assert!(
            payload.len() as u64 <= LIMIT,
            "{} bytes streamed",
            payload.len()
        );
    }
}

/// A valid upgrade request, offering permessage-deflate when asked.
fn request(compression: bool) -> Vec<u8> {
    let mut head = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n"
        .to_vec();
    if compression {
        head.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// An in-memory stream: what the peer sends, handed out `chunk` bytes per read; what the
/// Conn writes (the request, pongs, a close) is kept only until a request is answered.
struct Memory {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
    /// The client side: the frames that follow the 101, until the request is answered.
    answer: Option<Answer>,
    written: Vec<u8>,
}

/// What the server half of a client-side stream sends once the request is complete.
struct Answer {
    compression: bool,
    frames: Vec<u8>,
}

impl Memory {
    /// The server side's stream: the request, then the frames.
    fn new(mut input: Vec<u8>, frames: &[u8], chunk: usize) -> Memory {
        input.extend_from_slice(frames);
        Memory {
            input,
            pos: 0,
            chunk,
            answer: None,
            written: Vec::new(),
        }
    }

    /// The client side's stream: nothing to read until the request written to it is
    /// answered with a 101 (permessage-deflate accepted when `compression`), then the
    /// frames.
    fn answering(compression: bool, frames: &[u8], chunk: usize) -> Memory {
        Memory {
            input: Vec::new(),
            pos: 0,
            chunk,
            answer: Some(Answer {
                compression,
                frames: frames.to_vec(),
            }),
            written: Vec::new(),
        }
    }

    /// Once the request written so far is whole, the 101 and the frames become the input.
    fn answer_request(&mut self) -> io::Result<()> {
        let Some(answer) = &self.answer else {
            return Ok(());
        };
        let Some((request, _)) = handshake::parse_request(&self.written, &Limits::default())
            .map_err(io::Error::other)?
        else {
            return Ok(());
        };
        let upgrader = Upgrader {
            enable_compression: answer.compression,
            ..Upgrader::default()
        };
        let accepted = upgrader.accept(&request).map_err(io::Error::other)?;
        handshake::write_response(&accepted, &[], &mut self.input);
        self.input.extend_from_slice(&answer.frames);
        self.answer = None;
        self.written = Vec::new();
        Ok(())
    }
}

impl Read for Memory {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Memory {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.answer.is_some() {
            self.written.extend_from_slice(buf);
            self.answer_request()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Memory {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(([127, 0, 0, 1], 1).into())
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(([127, 0, 0, 1], 2).into())
    }
    fn shutdown(&self) -> io::Result<()> {
        Ok(())
    }
}
