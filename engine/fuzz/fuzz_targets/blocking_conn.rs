//! Raw bytes as what a peer sends after the opening handshake, read by the blocking
//! `Conn` whole (`read_message`) or in small reads (`next_reader`), with compression
//! negotiated or not, in either role:
//!
//! - the server side: `Upgrader::upgrade` over an in-memory stream that yields a valid
//!   request and then the bytes, cut into reads of a size the first byte chooses;
//! - the client side: the `Dialer` over loopback TCP, against a thread of this process
//!   that answers the handshake and then sends the bytes (the library has no public way
//!   yet to run the client handshake over an in-memory stream).
//!
//! Nothing may panic or hang; no message exceeds the read limit; text is UTF-8; once a
//! read fails, every later read fails too.
#![no_main]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};
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
    if flags & 4 == 0 {
        let chunk = usize::from(flags >> 3) + 1;
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
        let conn = dial(compression, frames);
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
    assert!(conn.read_message().is_err(), "a read after an error succeeded");
}

/// `next_reader`, then reads of 7 bytes until the end of the message.
fn read_in_pieces<S: Stream>(conn: &mut Conn<S>) -> Result<(MessageType, Vec<u8>), ringcast::Error> {
    let (kind, mut reader) = conn.next_reader()?;
    let mut payload = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let n = reader.read(&mut piece).map_err(ringcast::Error::Io)?;
        if n == 0 {
            return Ok((kind, payload));
        }
        payload.extend_from_slice(&piece[..n]);
        assert!(payload.len() as u64 <= LIMIT, "{} bytes streamed", payload.len());
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

/// The server side's stream: the request and the frames, handed out `chunk` bytes per
/// read; what the Conn writes (pongs, a close) is counted and dropped.
struct Memory {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
    written: usize,
}

impl Memory {
    fn new(mut input: Vec<u8>, frames: &[u8], chunk: usize) -> Memory {
        input.extend_from_slice(frames);
        Memory {
            input,
            pos: 0,
            chunk,
            written: 0,
        }
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
        self.written += buf.len();
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

/// What the peer thread sends on its next connection.
struct Job {
    compression: bool,
    frames: Vec<u8>,
}

/// The peer thread's address and its queue of jobs, started once.
fn peer() -> &'static (SocketAddr, Mutex<Sender<Job>>) {
    static PEER: OnceLock<(SocketAddr, Mutex<Sender<Job>>)> = OnceLock::new();
    PEER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let (jobs, queue) = channel::<Job>();
        std::thread::spawn(move || {
            for job in queue {
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                // A failed answer is the client's failure to see; the loop goes on.
                let _ = answer(stream, &job);
            }
        });
        (addr, Mutex::new(jobs))
    })
}

/// Answers one client: the 101 for its request, the frames, end of stream; then reads
/// what the client sends back until it hangs up.
fn answer(mut stream: TcpStream, job: &Job) -> io::Result<()> {
    stream.set_read_timeout(Some(DEADLINE))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let request = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Ok(Some((request, _))) = handshake::parse_request(&head, &Limits::default()) {
            break request;
        }
    };
    let upgrader = Upgrader {
        enable_compression: job.compression,
        ..Upgrader::default()
    };
    let accepted = upgrader.accept(&request).map_err(io::Error::other)?;
    let mut out = Vec::new();
    handshake::write_response(&accepted, &[], &mut out);
    out.extend_from_slice(&job.frames);
    stream.write_all(&out)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    while stream.read(&mut buf)? > 0 {}
    Ok(())
}

/// A client `Conn` whose server sends `frames` right after the 101.
fn dial(compression: bool, frames: &[u8]) -> Conn<ringcast::client::ClientStream> {
    let (addr, jobs) = peer();
    jobs.lock()
        .expect("the job queue")
        .send(Job {
            compression,
            frames: frames.to_vec(),
        })
        .expect("the peer thread runs");
    let dialer = Dialer {
        enable_compression: compression,
        read_limit: Some(LIMIT),
        handshake_timeout: Some(DEADLINE),
        ..Dialer::default()
    };
    let (mut conn, _) = dialer
        .dial(&format!("ws://{addr}/"), &[])
        .expect("the peer's answer is valid");
    conn.set_read_deadline(Some(Instant::now() + DEADLINE));
    conn
}
