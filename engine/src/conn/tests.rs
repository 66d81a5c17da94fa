//! Conn over real loopback sockets (the codec's own rules are tested in proto).

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::upgrade::Upgrader;

const WAIT: Duration = Duration::from_secs(10);

/// A raw client that has done the handshake by hand, and the server Conn.
fn pair(upgrader: Upgrader) -> (TcpStream, Conn<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        upgrader.upgrade(stream, &[]).unwrap()
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut client, &mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut conn = server.join().unwrap();
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    (client, conn)
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

fn read_frame(client: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    std::io::Read::read_exact(client, &mut head).unwrap();
    let mut payload = vec![0u8; (head[1] & 0x7f) as usize];
    std::io::Read::read_exact(client, &mut payload).unwrap();
    (head[0], payload)
}

#[test]
fn text_message_is_read_whole_and_echoed_unmasked() {
    let (mut client, mut conn) = pair(Upgrader::default());
    client.write_all(&masked(0x1, b"Hello")).unwrap();
    let (message_type, payload) = conn.read_message().unwrap();
    assert_eq!(
        (message_type, payload.as_slice()),
        (MessageType::Text, &b"Hello"[..])
    );
    conn.write_message(message_type, &payload).unwrap();
    assert_eq!(read_frame(&mut client), (0x81, b"Hello".to_vec()));
}

#[test]
fn ping_is_answered_by_default_handler_before_next_message() {
    let (mut client, mut conn) = pair(Upgrader::default());
    client.write_all(&masked(0x9, b"p1")).unwrap();
    client.write_all(&masked(0x2, b"data")).unwrap();
    let (message_type, payload) = conn.read_message().unwrap();
    assert_eq!(
        (message_type, payload),
        (MessageType::Binary, b"data".to_vec())
    );
    assert_eq!(read_frame(&mut client), (0x8A, b"p1".to_vec()));
}

#[test]
fn received_close_is_echoed_and_returned_as_close_error_every_time() {
    let (mut client, mut conn) = pair(Upgrader::default());
    client.write_all(&masked(0x8, b"\x03\xe8bye")).unwrap();
    for _ in 0..2 {
        match conn.read_message() {
            Err(Error::Closed(close)) => {
                assert_eq!(
                    (close.code, close.reason.as_str()),
                    (CloseCode::NORMAL_CLOSURE, "bye")
                )
            }
            other => panic!("expected close error, got {other:?}"),
        }
    }
    assert_eq!(read_frame(&mut client), (0x88, b"\x03\xe8".to_vec()));
    assert!(matches!(
        conn.write_message(MessageType::Text, b"late"),
        Err(Error::CloseSent)
    ));
}

#[test]
fn protocol_error_sends_its_close_code() {
    let (mut client, mut conn) = pair(Upgrader::default());
    // A ping with FIN clear: control frames must not be fragmented (1002).
    let mut frame = masked(0x9, b"x");
    frame[0] &= 0x7f;
    client.write_all(&frame).unwrap();
    assert!(matches!(conn.read_message(), Err(Error::Protocol(_))));
    let (head, payload) = read_frame(&mut client);
    assert_eq!(head, 0x88);
    assert_eq!(&payload[..2], &1002u16.to_be_bytes());
}

#[test]
fn message_over_read_limit_is_read_limit_error_with_1009() {
    let (mut client, mut conn) = pair(Upgrader::default());
    conn.set_read_limit(4);
    client.write_all(&masked(0x2, b"12345")).unwrap();
    assert!(matches!(
        conn.read_message(),
        Err(Error::ReadLimit { limit: 4 })
    ));
    let (_, payload) = read_frame(&mut client);
    assert_eq!(&payload[..2], &1009u16.to_be_bytes());
}

#[test]
fn peer_vanishing_is_abnormal_closure() {
    let (client, mut conn) = pair(Upgrader::default());
    drop(client);
    match conn.read_message() {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode::ABNORMAL_CLOSURE),
        other => panic!("expected 1006, got {other:?}"),
    }
}

fn assert_timed_out(result: Result<(MessageType, Vec<u8>), Error>) {
    match result {
        Err(Error::Io(err)) => assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}"),
        other => panic!("expected a TimedOut error, got {other:?}"),
    }
}

#[test]
fn read_deadline_passing_breaks_reads_for_good_with_timed_out() {
    let (_client, mut conn) = pair(Upgrader::default());
    conn.set_read_deadline(Some(Instant::now() + Duration::from_millis(50)));
    // The socket reports its timeout as WouldBlock on Unix: the docs promise TimedOut.
    assert_timed_out(conn.read_message());
    conn.set_read_deadline(None);
    assert_timed_out(conn.read_message());
}

#[test]
fn idle_timeout_ends_reads_once_the_peer_is_silent_and_bytes_push_it_back() {
    let (mut client, mut conn) = pair(Upgrader::default());
    conn.set_read_deadline(None);
    conn.set_idle_timeout(Some(Duration::from_millis(300)));
    // The message is there before the idle timeout: it is read.
    client.write_all(&masked(0x1, b"alive")).unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"alive");
    // Then silence: the read ends, for good, with TimedOut.
    assert_timed_out(conn.read_message());
    client.write_all(&masked(0x1, b"too late")).unwrap();
    assert_timed_out(conn.read_message());
}

/// A ping or pong (`opcode`) whose handler fails with `InvalidArgument(said)`, then a
/// text message: every later read returns the handler's error, the message never.
fn control_handler_error_ends_reads_for_good(opcode: u8, said: &'static str) {
    let (mut client, mut conn) = pair(Upgrader::default());
    let handler: PingHandler =
        Arc::new(move |_: &[u8], _: &mut Control<'_>| Err(Error::InvalidArgument(said.into())));
    if opcode == 0x9 {
        conn.set_ping_handler(Some(handler));
    } else {
        conn.set_pong_handler(Some(handler));
    }
    client.write_all(&masked(opcode, b"p")).unwrap();
    client
        .write_all(&masked(0x1, b"after the control frame"))
        .unwrap();
    for _ in 0..2 {
        // A handler's error is permanent: every later read returns it.
        match conn.read_message() {
            Err(Error::InvalidArgument(text)) => assert_eq!(text, said),
            other => panic!("expected the handler's error, got {other:?}"),
        }
    }
}

#[test]
fn ping_handler_error_ends_reads_for_good() {
    control_handler_error_ends_reads_for_good(0x9, "no pings here");
}

#[test]
fn pong_handler_error_ends_reads_for_good() {
    control_handler_error_ends_reads_for_good(0xA, "no pongs here");
}

#[test]
fn close_handler_error_is_what_every_later_read_returns() {
    let (mut client, mut conn) = pair(Upgrader::default());
    conn.set_close_handler(Some(Arc::new(
        |_: CloseCode, _: &str, _: &mut Control<'_>| {
            Err(Error::InvalidArgument("no closing".into()))
        },
    )));
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    client.write_all(&masked(0x8, &body)).unwrap();
    for _ in 0..2 {
        // Not `Closed`: the handler's error replaces it, for this read and the next.
        match conn.read_message() {
            Err(Error::InvalidArgument(text)) => assert_eq!(text, "no closing"),
            other => panic!("expected the handler's error, got {other:?}"),
        }
    }
}

#[test]
fn write_timeout_bounds_a_write_the_peer_does_not_take_and_breaks_writes() {
    let (_client, mut conn) = pair(Upgrader::default());
    conn.set_write_timeout(Some(Duration::from_millis(200)));
    // Far more than the socket buffers hold, to a client that never reads.
    let big = vec![0u8; 64 << 20];
    match conn.write_message(MessageType::Binary, &big) {
        Err(Error::Io(err)) => assert_eq!(err.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("expected a TimedOut error, got {other:?}"),
    }
    assert!(matches!(
        conn.write_message(MessageType::Text, b"later"),
        Err(Error::Io(_))
    ));
}

#[test]
fn close_with_a_reason_over_123_bytes_is_refused_not_cut() {
    let (_client, mut conn) = pair(Upgrader::default());
    let err = conn
        .close_with(CloseCode::GOING_AWAY, &"r".repeat(124))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // A payload from format_close_message that does not fit is refused at the write.
    let payload = crate::format_close_message(CloseCode::GOING_AWAY, &"r".repeat(124));
    assert!(matches!(
        conn.write_control(MessageType::Close, &payload, None),
        Err(Error::InvalidArgument(_))
    ));
    // Nothing went out: the connection can still close properly.
    conn.close_with(CloseCode::GOING_AWAY, &"r".repeat(123))
        .unwrap();
}

#[test]
fn write_control_rejects_data_types_and_long_payloads() {
    let (_client, mut conn) = pair(Upgrader::default());
    assert!(matches!(
        conn.write_control(MessageType::Text, b"x", None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        conn.write_control(MessageType::Ping, &[0u8; 126], None),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn custom_pong_handler_sees_pong_data_and_can_move_deadline() {
    let (mut client, mut conn) = pair(Upgrader::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    conn.set_pong_handler(Some(Arc::new(
        move |data: &[u8], control: &mut Control<'_>| {
            control.set_read_deadline(Some(Instant::now() + WAIT));
            tx.lock().unwrap().send(data.to_vec()).unwrap();
            Ok(())
        },
    )));
    client.write_all(&masked(0xA, b"pong!")).unwrap();
    client.write_all(&masked(0x1, b"after")).unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"after");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"pong!");
}

#[test]
fn pooled_conn_does_not_pool_a_buffer_one_large_message_grew() {
    let pool = Arc::new(crate::pool::SimpleBufferPool::new(4));
    let upgrader = Upgrader {
        write_buffer_pool: Some(pool.clone()),
        ..Upgrader::default()
    };
    let (mut client, mut conn) = pair(upgrader);
    let big = vec![1u8; 4 << 20];
    let reading = thread::spawn(move || {
        let mut frame = vec![0u8; 10 + (4 << 20)];
        std::io::Read::read_exact(&mut client, &mut frame).unwrap();
        client
    });
    conn.write_message(MessageType::Binary, &big).unwrap();
    let _client = reading.join().unwrap();
    assert_eq!(pool.idle(), 0, "the 4 MiB buffer was dropped, not pooled");
    conn.write_message(MessageType::Text, b"small").unwrap();
    assert_eq!(pool.idle(), 1);
    assert!(pool.idle_bytes() <= 64 * 1024);
}

#[test]
fn pooled_conn_holds_no_write_buffer_between_messages() {
    let pool = Arc::new(crate::pool::SimpleBufferPool::new(4));
    let upgrader = Upgrader {
        write_buffer_pool: Some(pool.clone()),
        ..Upgrader::default()
    };
    let (mut client, mut conn) = pair(upgrader);
    assert!(conn.side.state.buf.is_none());
    conn.write_message(MessageType::Text, b"one").unwrap();
    assert!(conn.side.state.buf.is_none());
    assert_eq!(pool.idle(), 1);
    assert_eq!(read_frame(&mut client).1, b"one");
}

/// A stream that reads nothing and keeps what is written: a Conn with no socket. It
/// records the write timeouts it is given.
#[derive(Default)]
struct MemStream {
    written: Vec<u8>,
    write_timeouts: std::cell::RefCell<Vec<Option<Duration>>>,
}

impl std::io::Read for MemStream {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(0)
    }
}

impl std::io::Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stream for MemStream {
    fn set_read_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.write_timeouts.borrow_mut().push(timeout);
        Ok(())
    }
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(([127, 0, 0, 1], 1).into())
    }
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(([127, 0, 0, 1], 2).into())
    }
    fn shutdown(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn prepared_message_to_1000_compressing_conns_compresses_once() {
    let compression = crate::proto::deflate::negotiate(&crate::proto::deflate::parse_offers([
        &b"permessage-deflate"[..],
    ]));
    let config = ConnConfig {
        compression,
        ..ConnConfig::default()
    };
    let mut conns: Vec<Conn<MemStream>> = (0..1000)
        .map(|_| Conn::new(MemStream::default(), Role::Server, config.clone(), &[]))
        .collect();
    let text = "the same news for a thousand subscribers ".repeat(20);
    let message = crate::PreparedMessage::new(MessageType::Text, text.clone()).unwrap();
    for conn in &mut conns {
        assert!(conn.compression_negotiated());
        conn.write_prepared_message(&message).unwrap();
    }
    assert_eq!(message.compressions(), 1);
    // Every connection got the same compressed frame, which decodes to the text.
    let first = conns[0].underlying_conn().written.clone();
    assert!(conns.iter().all(|c| c.underlying_conn().written == first));
    assert_eq!(first[0], 0xC1, "RSV1: compressed");
    let mut decoder = crate::proto::Decoder::new(Role::Client);
    decoder.set_compression(true);
    let mut inflater = crate::proto::deflate::Inflater::new();
    let mut wire = first;
    let (_, event) = decoder.decode(&mut wire, &mut inflater).unwrap();
    assert_eq!(
        event,
        Some(crate::proto::Event::Message(
            MessageType::Text,
            text.as_bytes()
        ))
    );
}

#[test]
fn write_control_without_a_deadline_sets_no_timeout() {
    let mut conn = Conn::new(
        MemStream::default(),
        Role::Server,
        ConnConfig::default(),
        &[],
    );
    conn.write_control(MessageType::Ping, b"x", None).unwrap();
    // No deadline means no timeout at all (it used to be 5 s).
    let timeouts = conn.underlying_conn().write_timeouts.borrow().clone();
    assert!(timeouts.iter().all(Option::is_none), "{timeouts:?}");
    assert_eq!(conn.underlying_conn().written, b"\x89\x01x");
}

#[test]
fn write_control_past_its_deadline_is_reported_and_the_connection_stays_usable() {
    let mut conn = Conn::new(
        MemStream::default(),
        Role::Server,
        ConnConfig::default(),
        &[],
    );
    let past = Some(Instant::now() - Duration::from_millis(1));
    match conn.write_control(MessageType::Ping, b"late", past) {
        Err(Error::Io(err)) => assert_eq!(err.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    conn.write_message(MessageType::Text, b"still fine")
        .unwrap();
    assert_eq!(conn.underlying_conn().written, b"\x81\x0astill fine");
}

#[test]
fn a_large_compressed_message_leaves_no_large_read_buffers_behind() {
    let compression = crate::proto::deflate::negotiate(&crate::proto::deflate::parse_offers([
        &b"permessage-deflate"[..],
    ]));
    // A 900 KiB text of digits, compressed by a client.
    let text: Vec<u8> = (0..900 * 1024u32)
        .map(|i| b'0' + (i * 7 % 10) as u8)
        .collect();
    let mut compressed = Vec::new();
    crate::proto::deflate::Deflater::new(1)
        .unwrap()
        .compress(&text, &mut compressed);
    let mut wire = Vec::new();
    crate::proto::Encoder::new(Role::Client).encode_frame(
        crate::proto::OpCode::Text,
        true,
        true,
        &compressed,
        &mut wire,
    );
    let config = ConnConfig {
        compression,
        ..ConnConfig::default()
    };
    let mut conn = Conn::new(
        ReplayStream(std::io::Cursor::new(wire)),
        Role::Server,
        config,
        &[],
    );
    let (kind, payload) = conn.read_message().unwrap();
    assert_eq!((kind, payload.len()), (MessageType::Text, text.len()));
    assert_eq!(payload, text);
    assert!(
        conn.reader.held_bytes() <= read::RELEASE_ABOVE,
        "{} bytes held after the message",
        conn.reader.held_bytes()
    );
}

/// A stream that replays bytes, then ends.
struct ReplayStream(std::io::Cursor<Vec<u8>>);

impl std::io::Read for ReplayStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for ReplayStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stream for ReplayStream {}
