//! Upgrader settings and the rest of the Conn API, over real loopback sockets.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{conn_pair, Received, WAIT};
use ringcast::conn::Control;
use ringcast::proto::handshake::{ErrorResponse, HandshakeError};
use ringcast::proto::OpCode;
use ringcast::{CloseCode, Error, MessageType, Upgrader};

/// Run `upgrader` on one accepted stream while the test writes `request` raw; returns
/// what the server answered and the upgrade result.
fn raw_upgrade(upgrader: Upgrader, request: &[u8]) -> (String, Result<(), Error>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        upgrader.upgrade(stream, &[]).map(|_| ())
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        server.join().unwrap(),
    )
}

const REQUEST: &str =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[test]
fn handshake_timeout_ends_a_silent_client() {
    let upgrader = Upgrader {
        handshake_timeout: Some(Duration::from_millis(200)),
        ..Upgrader::default()
    };
    // Half a request, then nothing.
    let (answer, result) = raw_upgrade(upgrader, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(answer.is_empty());
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
}

#[test]
fn oversized_handshake_gets_431() {
    let mut request = String::from("GET / HTTP/1.1\r\nX-Big: ");
    request.push_str(&"a".repeat(40_000));
    let (answer, result) = raw_upgrade(Upgrader::default(), request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(matches!(result, Err(Error::Handshake(e)) if e.status() == 431));
}

#[test]
fn malformed_handshake_gets_400() {
    let (answer, result) = raw_upgrade(Upgrader::default(), b"NOT HTTP AT ALL\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(matches!(result, Err(Error::Handshake(_))));
}

#[test]
fn cross_origin_request_gets_403_by_default() {
    let request = format!("{REQUEST}Origin: http://evil.example\r\n\r\n");
    let (answer, _) = raw_upgrade(Upgrader::default(), request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
}

#[test]
fn check_origin_setting_overrides_the_default() {
    let upgrader = Upgrader {
        check_origin: Some(Arc::new(|request| {
            request.header("Origin") == Some(b"http://friend.example")
        })),
        ..Upgrader::default()
    };
    let request = format!("{REQUEST}Origin: http://friend.example\r\n\r\n");
    let (answer, result) = raw_upgrade(upgrader, request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    assert!(result.is_ok());
}

#[test]
fn error_responder_builds_the_refusal_without_writing_http() {
    let upgrader = Upgrader {
        error: Some(Arc::new(|_request, err: &HandshakeError| {
            ErrorResponse::text(err.status(), format!("custom {}", err.status()))
                .header("X-Why", err.message())
        })),
        ..Upgrader::default()
    };
    let request = REQUEST.replace("Version: 13", "Version: 8") + "\r\n";
    let (answer, _) = raw_upgrade(upgrader, request.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{answer}"
    );
    // What a 426 requires is added, and the length is counted for the caller.
    assert!(
        answer.contains("\r\nSec-WebSocket-Version: 13\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nContent-Length: 10\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nX-Why: unsupported websocket version"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\ncustom 426"), "{answer}");
}

#[test]
fn subprotocol_is_negotiated_and_reported() {
    let upgrader = Upgrader {
        subprotocols: vec!["v2.chat".into(), "v1.chat".into()],
        ..Upgrader::default()
    };
    let (_client, conn) = conn_pair(upgrader, "Sec-WebSocket-Protocol: v1.chat, v2.chat\r\n");
    assert_eq!(conn.subprotocol(), Some("v2.chat"));
}

#[test]
fn addresses_and_underlying_conn_are_the_streams() {
    let (client, conn) = conn_pair(Upgrader::default(), "");
    assert_eq!(
        conn.remote_addr().unwrap(),
        client.stream.local_addr().unwrap()
    );
    assert_eq!(
        conn.local_addr().unwrap(),
        client.stream.peer_addr().unwrap()
    );
    conn.underlying_conn().set_nodelay(true).unwrap();
    assert!(conn.underlying_conn().nodelay().unwrap());
}

#[test]
fn custom_close_handler_runs_and_default_reply_is_skipped() {
    let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
    let seen = Arc::new(Mutex::new(None));
    let seen_in = Arc::clone(&seen);
    conn.set_close_handler(Some(Arc::new(
        move |code: CloseCode, reason: &str, control: &mut Control<'_>| {
            *seen_in.lock().unwrap() = Some((code, reason.to_owned()));
            // Answer with our own code instead of echoing theirs.
            control.write_control(
                MessageType::Close,
                &ringcast::format_close_message(CloseCode(4001), "mine"),
                None,
            )
        },
    )));
    client.send(
        OpCode::Close,
        true,
        &ringcast::format_close_message(CloseCode(4000), "theirs"),
    );
    assert!(matches!(conn.read_message(), Err(Error::Closed(c)) if c.code == CloseCode(4000)));
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some((CloseCode(4000), "theirs".to_owned()))
    );
    assert_eq!(client.recv(), Received::Close(Some(4001), "mine".into()));
}

#[test]
fn custom_ping_handler_replaces_the_pong() {
    let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
    let default = conn.ping_handler();
    conn.set_ping_handler(Some(Arc::new(
        move |data: &[u8], control: &mut Control<'_>| {
            // Wrap the default: answer, then say something more.
            default(data, control)?;
            control.write_control(MessageType::Ping, b"and you?", None)
        },
    )));
    client.send(OpCode::Ping, true, b"hi");
    client.text("x");
    conn.read_message().unwrap();
    assert_eq!(client.recv(), Received::Pong(b"hi".to_vec()));
    assert_eq!(client.recv(), Received::Ping(b"and you?".to_vec()));
}

#[test]
fn write_compression_can_be_turned_off_per_message() {
    let upgrader = Upgrader {
        enable_compression: true,
        ..Upgrader::default()
    };
    let (mut client, mut conn) =
        conn_pair(upgrader, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    conn.enable_write_compression(false);
    conn.write_message(MessageType::Text, "plain plain plain plain".as_bytes())
        .unwrap();
    let (_, opcode_byte, _) = {
        let (fin, opcode, payload) = client.recv_raw_frame();
        (fin, opcode, payload)
    };
    assert_eq!(opcode_byte, 0x1);
    conn.enable_write_compression(true);
    conn.set_compression_level(9).unwrap();
    conn.write_message(MessageType::Text, "squeezed ".repeat(100).as_bytes())
        .unwrap();
    let mut head = [0u8; 2];
    client.stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0xC1, "RSV1 marks a compressed frame");
    assert!(
        (head[1] as usize) < 100,
        "900 bytes compress well below 100"
    );
}

#[test]
fn compression_level_outside_the_seed_range_is_refused() {
    let (_client, mut conn) = conn_pair(Upgrader::default(), "");
    assert!(matches!(
        conn.set_compression_level(10),
        Err(Error::InvalidArgument(_))
    ));
    assert!(conn.set_compression_level(-2).is_ok());
}

#[test]
fn passed_write_deadline_breaks_writes_for_good() {
    let (_client, mut conn) = conn_pair(Upgrader::default(), "");
    conn.set_write_deadline(Some(Instant::now() - Duration::from_millis(1)));
    assert!(matches!(
        conn.write_message(MessageType::Text, b"late"),
        Err(Error::Io(_))
    ));
    conn.set_write_deadline(None);
    assert!(matches!(
        conn.write_message(MessageType::Text, b"later"),
        Err(Error::Io(_))
    ));
}

#[test]
fn frames_sent_right_after_the_handshake_are_not_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut conn = Upgrader::default().upgrade(stream, &[]).unwrap();
        conn.set_read_deadline(Some(Instant::now() + WAIT));
        conn.read_message()
    });
    // The request and a frame in one write: the Upgrader must keep the leftover bytes.
    let mut bytes = format!("{REQUEST}\r\n").into_bytes();
    let mut frame = Vec::new();
    ringcast::proto::Encoder::new(ringcast::proto::Role::Client).encode_frame(
        OpCode::Text,
        true,
        false,
        b"early",
        &mut frame,
    );
    bytes.extend_from_slice(&frame);
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(&bytes).unwrap();
    let (kind, payload) = server.join().unwrap().unwrap();
    assert_eq!(
        (kind, payload.as_slice()),
        (MessageType::Text, &b"early"[..])
    );
}

#[test]
fn response_protocol_header_contradicting_the_negotiation_is_refused_with_500() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let upgrader = Upgrader {
            subprotocols: vec!["v2".into()],
            ..Upgrader::default()
        };
        let headers = [("Sec-WebSocket-Protocol".to_string(), "v1".to_string())];
        upgrader.upgrade(stream, &headers).map(|_| ())
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!("{REQUEST}Sec-WebSocket-Protocol: v1, v2\r\n\r\n");
    client.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = client.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
    match server.join().unwrap() {
        Err(Error::Handshake(err)) => {
            assert_eq!(err.status(), 500);
            assert!(err.message().contains("contradicts"), "{}", err.message());
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[test]
fn response_extensions_header_is_refused_with_500() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let headers = [(
            "Sec-WebSocket-Extensions".to_string(),
            "permessage-deflate".to_string(),
        )];
        Upgrader::default().upgrade(stream, &headers).map(|_| ())
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(format!("{REQUEST}\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = client.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
    assert!(!answer.contains("101"), "{answer}");
    assert!(matches!(server.join().unwrap(), Err(Error::Handshake(e)) if e.status() == 500));
}

/// A request head read and parsed by "another server" (here: by hand, with httparse),
/// handed to the Upgrader with the bytes read past it.
#[test]
fn upgrade_request_takes_a_head_another_server_parsed_and_the_bytes_past_it() {
    use ringcast::proto::handshake::{Header, Request};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        // The other server reads until the head is complete, and a bit beyond.
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        let (request, used) = loop {
            len += stream.read(&mut buf[len..]).unwrap();
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut fields);
            if let httparse::Status::Complete(used) = parsed.parse(&buf[..len]).unwrap() {
                let request = Request {
                    method: parsed.method.unwrap().to_owned(),
                    target: parsed.path.unwrap().to_owned(),
                    version: parsed.version.unwrap(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| Header {
                            name: h.name.to_owned(),
                            value: h.value.to_vec(),
                        })
                        .collect(),
                };
                break (request, used);
            }
        };
        assert!(ringcast::is_websocket_upgrade(&request));
        assert_eq!(ringcast::subprotocols(&request), ["chat"]);
        let upgrader = Upgrader {
            subprotocols: vec!["chat".into()],
            ..Upgrader::default()
        };
        let mut conn = upgrader
            .upgrade_request(stream, &request, &buf[used..len], &[])
            .unwrap();
        conn.set_read_deadline(Some(Instant::now() + WAIT));
        (conn.subprotocol().map(str::to_owned), conn.read_message())
    });
    // The request and a first frame in one write, as a fast client does.
    let mut bytes = format!("{REQUEST}Sec-WebSocket-Protocol: chat\r\n\r\n").into_bytes();
    ringcast::proto::Encoder::new(ringcast::proto::Role::Client).encode_frame(
        OpCode::Text,
        true,
        false,
        b"early",
        &mut bytes,
    );
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(&bytes).unwrap();
    let (subprotocol, message) = server.join().unwrap();
    assert_eq!(subprotocol.as_deref(), Some("chat"));
    assert_eq!(message.unwrap(), (MessageType::Text, b"early".to_vec()));
    let mut head = [0u8; 12];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[test]
fn refuse_with_answers_a_refusal_of_your_own_through_the_error_responder() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let upgrader = Upgrader {
            error: Some(Arc::new(|_request, err: &HandshakeError| {
                ErrorResponse::json(err.status(), r#"{"error":"full"}"#).header("Retry-After", "5")
            })),
            ..Upgrader::default()
        };
        upgrader.refuse_with(&mut stream, None, HandshakeError::new(503, "server full"))
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = String::new();
    let _ = client.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nRetry-After: 5\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n{\"error\":\"full\"}"), "{answer}");
    assert!(matches!(server.join().unwrap(), Error::Handshake(e) if e.status() == 503));
}
