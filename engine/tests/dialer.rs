//! The Dialer against in-process servers (ringcast's Upgrader, hand-written bad servers,
//! a rustls server), a real HTTP proxy (tinyproxy) and a real SOCKS5 proxy (Dante), each
//! on a loopback port 0.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{tls_configs, Dante, Tinyproxy, SOCKS_PASSWORD, SOCKS_USER};
use ringcast::client::{CancelToken, ClientStream, MemoryJar, Proxy};
use ringcast::conn::Control;
use ringcast::proto::handshake::HandshakeError;
use ringcast::{CloseCode, Conn, Dialer, Error, MessageType, Upgrader};

const WAIT: Duration = Duration::from_secs(10);

fn dialer() -> Dialer {
    Dialer {
        proxy: Proxy::None,
        handshake_timeout: Some(WAIT),
        ..Dialer::default()
    }
}

/// An echo server on its own thread for `conns` connections; the request of each
/// handshake is sent back through the channel for inspection.
fn echo_server(
    upgrader: Upgrader,
    conns: usize,
) -> (SocketAddr, mpsc::Receiver<Vec<(String, String)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..conns {
            let (stream, _) = listener.accept().unwrap();
            let tx = tx.clone();
            let upgrader = upgrader.clone();
            thread::spawn(move || {
                let conn = upgrader.upgrade_with(stream, |request| {
                    let headers = request
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.clone(),
                                String::from_utf8_lossy(&h.value).into_owned(),
                            )
                        })
                        .collect();
                    let _ = tx.send(headers);
                    Ok(vec![("Set-Cookie".into(), "session=abc; Path=/".into())])
                });
                let Ok(mut conn) = conn else { return };
                conn.set_read_deadline(Some(Instant::now() + WAIT));
                while let Ok((kind, payload)) = conn.read_message() {
                    if conn.write_message(kind, &payload).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A server that answers the first connection with `answer` (raw bytes), then keeps the
/// socket open for a while.
fn raw_server(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(&answer);
        let _ = stream.flush();
        thread::sleep(Duration::from_millis(500));
    });
    addr
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn text_and_binary_round_trip() {
    let (addr, _) = echo_server(Upgrader::default(), 1);
    let (mut conn, response) = dialer().dial(&format!("ws://{addr}/echo"), &[]).unwrap();
    assert_eq!(response.status, 101);
    conn.write_message(MessageType::Text, b"hello").unwrap();
    assert_eq!(
        conn.read_message().unwrap(),
        (MessageType::Text, b"hello".to_vec())
    );
    conn.write_message(MessageType::Binary, &[0, 1, 2, 255])
        .unwrap();
    assert_eq!(
        conn.read_message().unwrap(),
        (MessageType::Binary, vec![0, 1, 2, 255])
    );
    conn.close_with(CloseCode::NORMAL_CLOSURE, "done").unwrap();
    assert!(
        matches!(conn.read_message(), Err(Error::Closed(c)) if c.code == CloseCode::NORMAL_CLOSURE)
    );
}

#[test]
fn subprotocol_compression_and_headers_are_negotiated() {
    let upgrader = Upgrader {
        subprotocols: vec!["v2".into()],
        enable_compression: true,
        ..Upgrader::default()
    };
    let (addr, requests) = echo_server(upgrader, 1);
    let dialer = Dialer {
        subprotocols: vec!["v1".into(), "v2".into()],
        enable_compression: true,
        ..dialer()
    };
    let headers = [
        ("Origin".to_string(), format!("http://{addr}")),
        ("X-Trace".into(), "42".into()),
    ];
    let (mut conn, _) = dialer.dial(&format!("ws://{addr}/"), &headers).unwrap();
    assert_eq!(conn.subprotocol(), Some("v2"));
    assert!(conn.compression_negotiated());
    let big = "compressible ".repeat(1000);
    conn.write_message(MessageType::Text, big.as_bytes())
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, big.as_bytes());
    let seen = requests.recv_timeout(WAIT).unwrap();
    assert_eq!(header(&seen, "X-Trace"), Some("42"));
    assert_eq!(header(&seen, "Host"), Some(addr.to_string().as_str()));
}

#[test]
fn headers_the_handshake_owns_are_refused() {
    let err = dialer()
        .dial(
            "ws://127.0.0.1:1/",
            &[("Sec-WebSocket-Key".into(), "x".into())],
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(matches!(
        dialer().dial("http://127.0.0.1:1/", &[]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn user_info_becomes_basic_authorization() {
    let (addr, requests) = echo_server(Upgrader::default(), 1);
    let (_conn, _) = dialer()
        .dial(&format!("ws://alice:s3cret@{addr}/"), &[])
        .unwrap();
    let seen = requests.recv_timeout(WAIT).unwrap();
    assert_eq!(
        header(&seen, "Authorization"),
        Some("Basic YWxpY2U6czNjcmV0")
    );
}

#[test]
fn cookies_set_by_the_server_are_sent_on_the_next_dial() {
    let (addr, requests) = echo_server(Upgrader::default(), 2);
    let dialer = Dialer {
        jar: Some(Arc::new(MemoryJar::default())),
        ..dialer()
    };
    let url = format!("ws://{addr}/chat");
    let _first = dialer.dial(&url, &[]).unwrap();
    assert_eq!(
        header(&requests.recv_timeout(WAIT).unwrap(), "Cookie"),
        None
    );
    let _second = dialer.dial(&url, &[]).unwrap();
    assert_eq!(
        header(&requests.recv_timeout(WAIT).unwrap(), "Cookie"),
        Some("session=abc")
    );
}

fn handshake_error(err: Error) -> HandshakeError {
    match err {
        Error::Handshake(e) => e,
        other => panic!("expected a bad handshake, got {other:?}"),
    }
}

#[test]
fn non_101_answer_is_a_bad_handshake_with_status_headers_and_body() {
    let addr = raw_server(
        b"HTTP/1.1 403 Forbidden\r\nX-Why: no token\r\nContent-Length: 9\r\n\r\nforbidden".to_vec(),
    );
    let err = handshake_error(dialer().dial(&format!("ws://{addr}/"), &[]).unwrap_err());
    let response = err.response().expect("the response is kept");
    assert_eq!(response.status, 403);
    assert_eq!(response.header("x-why"), Some(&b"no token"[..]));
    assert_eq!(response.body, b"forbidden");
}

#[test]
fn wrong_accept_is_a_bad_handshake() {
    let addr = raw_server(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
            .to_vec(),
    );
    let err = handshake_error(dialer().dial(&format!("ws://{addr}/"), &[]).unwrap_err());
    assert_eq!(err.status(), 101);
}

#[test]
fn garbage_answer_is_a_clear_error() {
    let addr = raw_server(b"\x00\x01garbage\r\n\r\n".to_vec());
    let err = handshake_error(dialer().dial(&format!("ws://{addr}/"), &[]).unwrap_err());
    assert_eq!(err.status(), 400);
}

#[test]
fn close_mid_handshake_is_an_io_error() {
    let addr = raw_server(b"HTTP/1.1 101 Switching".to_vec());
    let dialer = Dialer {
        handshake_timeout: Some(Duration::from_millis(2000)),
        ..dialer()
    };
    assert!(matches!(
        dialer.dial(&format!("ws://{addr}/"), &[]),
        Err(Error::Io(_))
    ));
}

#[test]
fn silent_server_fails_at_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dialer = Dialer {
        handshake_timeout: Some(Duration::from_millis(300)),
        ..dialer()
    };
    let err = dialer.dial(&format!("ws://{addr}/"), &[]).unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{err:?}"
    );
    drop(listener);
}

#[test]
fn ten_megabyte_header_block_fails_at_the_head_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\n");
        let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
        for _ in 0..10_000 {
            if stream.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let err = handshake_error(dialer().dial(&format!("ws://{addr}/"), &[]).unwrap_err());
    assert_eq!(err.status(), 431);
}

#[test]
fn two_gigabyte_frame_after_the_handshake_is_refused_not_allocated() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let Ok(conn) = Upgrader::default().upgrade(stream, &[]) else {
            return;
        };
        // A binary frame header declaring 2 GiB, written raw under the Conn.
        let mut raw = conn.underlying_conn().try_clone().unwrap();
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(2u64 << 30).to_be_bytes());
        let _ = raw.write_all(&frame);
        thread::sleep(Duration::from_millis(500));
    });
    let (mut conn, _) = dialer().dial(&format!("ws://{addr}/"), &[]).unwrap();
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    assert!(matches!(conn.read_message(), Err(Error::ReadLimit { .. })));
}

#[test]
fn cancelled_dial_returns_promptly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    let (tx, rx) = mpsc::channel();
    let dial = thread::spawn(move || {
        let dialer = Dialer {
            handshake_timeout: Some(Duration::from_secs(30)),
            ..dialer()
        };
        let result = dialer
            .dial_cancellable(&format!("ws://{addr}/"), &[], &cancel)
            .map(|_| ());
        tx.send(()).unwrap();
        result
    });
    // The server accepts and then says nothing; cancel once the dial waits on it.
    let (_held, _) = listener.accept().unwrap();
    canceller.cancel();
    rx.recv_timeout(WAIT)
        .expect("the dial returned well before its 30 s timeout");
    let err = dial.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionAborted),
        "{err:?}"
    );
}

#[test]
fn deadline_bounds_the_dial() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let err = dialer()
        .dial_with_deadline(
            &format!("ws://{addr}/"),
            &[],
            Instant::now() + Duration::from_millis(200),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

#[test]
fn custom_connect_function_is_used() {
    let (addr, _) = echo_server(Upgrader::default(), 1);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let dialer = Dialer {
        // Dial a name that does not resolve; the function knows where it lives.
        connect: Some(Arc::new(
            move |host: &str, _port: u16, _deadline: Option<Instant>| {
                assert_eq!(host, "echo.invalid");
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                TcpStream::connect(addr)
            },
        )),
        ..dialer()
    };
    let (mut conn, _) = dialer.dial("ws://echo.invalid/", &[]).unwrap();
    conn.write_message(MessageType::Text, b"via connect fn")
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"via connect fn");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn wss_with_a_self_signed_certificate_round_trips() {
    let (server_config, client_config) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let tls = rustls::ServerConnection::new(server_config).unwrap();
        let stream = rustls::StreamOwned::new(tls, tcp);
        let Ok(mut conn) = Upgrader::default().upgrade(stream, &[]) else {
            return;
        };
        while let Ok((kind, payload)) = conn.read_message() {
            if conn.write_message(kind, &payload).is_err() {
                break;
            }
        }
    });
    let dialer = Dialer {
        tls_client_config: Some(client_config),
        ..dialer()
    };
    let (mut conn, _) = dialer
        .dial(&format!("wss://localhost:{port}/secure"), &[])
        .unwrap();
    conn.write_message(MessageType::Text, b"over tls").unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"over tls");
}

#[test]
fn wss_with_an_untrusted_certificate_fails() {
    let (server_config, _) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let tls = rustls::ServerConnection::new(server_config).unwrap();
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        let mut buf = [0u8; 16];
        let _ = stream.read(&mut buf);
    });
    // The default roots (webpki) do not know the test certificate.
    let err = dialer()
        .dial(&format!("wss://localhost:{port}/"), &[])
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

#[test]
fn proxy_gets_connect_with_basic_auth_and_tunnels() {
    let (target, _) = echo_server(Upgrader::default(), 1);
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    // A minimal proxy: read the CONNECT head, answer 200, then relay both ways.
    thread::spawn(move || {
        let (mut client, _) = proxy.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        tx.send(String::from_utf8(head).unwrap()).unwrap();
        let upstream = TcpStream::connect(target).unwrap();
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
        let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        thread::spawn(move || std::io::copy(&mut u2, &mut c2));
        let mut upstream = upstream;
        let _ = std::io::copy(&mut client, &mut upstream);
    });
    let dialer = Dialer {
        proxy: Proxy::Fixed(url::Url::parse(&format!("http://bob:p%40ss@{proxy_addr}")).unwrap()),
        ..dialer()
    };
    let (mut conn, _) = dialer.dial(&format!("ws://{target}/"), &[]).unwrap();
    let head = rx.recv_timeout(WAIT).unwrap();
    assert!(
        head.starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
        "{head}"
    );
    // base64("bob:p@ss")
    assert!(
        head.contains("Proxy-Authorization: Basic Ym9iOnBAc3M=\r\n"),
        "{head}"
    );
    conn.write_message(MessageType::Text, b"through the tunnel")
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"through the tunnel");
}

#[test]
fn proxy_refusal_is_a_bad_handshake_with_the_proxy_response() {
    let addr = raw_server(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n".to_vec(),
    );
    let dialer = Dialer {
        proxy: Proxy::Fixed(url::Url::parse(&format!("http://{addr}")).unwrap()),
        ..dialer()
    };
    let err = handshake_error(dialer.dial("ws://example.invalid/", &[]).unwrap_err());
    assert_eq!(err.status(), 407);
}

/// A real HTTP proxy (Debian's tinyproxy) on loopback, stopped by PID at the end.
#[test]
fn real_tinyproxy_tunnels_the_connection() {
    let Some(binary) = Tinyproxy::binary() else {
        return;
    };
    let (target, _) = echo_server(Upgrader::default(), 1);
    let tinyproxy = Tinyproxy::start(binary, target.port());
    let port = tinyproxy.port;
    let dialer = Dialer {
        proxy: Proxy::Fixed(url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap()),
        ..dialer()
    };
    let (mut conn, _) = dialer.dial(&format!("ws://{target}/"), &[]).unwrap();
    conn.write_message(MessageType::Text, b"via tinyproxy")
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"via tinyproxy");
}

#[test]
fn host_header_given_by_the_caller_replaces_the_urls() {
    let (addr, requests) = echo_server(Upgrader::default(), 1);
    let headers = [("Host".to_string(), "chat.example".to_string())];
    let (_conn, _) = dialer().dial(&format!("ws://{addr}/"), &headers).unwrap();
    let seen = requests.recv_timeout(WAIT).unwrap();
    assert_eq!(header(&seen, "Host"), Some("chat.example"));
    assert_eq!(
        seen.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count(),
        1
    );
}

#[test]
fn client_handshake_runs_over_a_stream_you_already_have() {
    let (addr, requests) = echo_server(Upgrader::default(), 1);
    // Connected by the caller: client_handshake takes a stream you already have.
    let stream = TcpStream::connect(addr).unwrap();
    let dialer = Dialer {
        subprotocols: vec!["v1".into()],
        ..dialer()
    };
    let headers = [("X-Trace".to_string(), "own-stream".to_string())];
    let (mut conn, response) = dialer
        .client_handshake(stream, "ws://chat.example/room?x=1", &headers)
        .unwrap();
    assert_eq!(response.status, 101);
    let seen = requests.recv_timeout(WAIT).unwrap();
    assert_eq!(header(&seen, "Host"), Some("chat.example"));
    assert_eq!(header(&seen, "X-Trace"), Some("own-stream"));
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    conn.write_message(MessageType::Text, b"over my own stream")
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"over my own stream");
}

/// Split a dialed connection: the read half blocks on its thread while the write half
/// sends and a control handle pings from a third thread; then a close from the handle.
fn exercise_split(conn: Conn<ClientStream>) {
    let (mut reader, mut writer) = conn.split().unwrap();
    let (tx, pongs) = mpsc::channel();
    let tx = Mutex::new(tx);
    reader.set_pong_handler(Some(Arc::new(move |data: &[u8], _: &mut Control<'_>| {
        let _ = tx.lock().unwrap().send(data.to_vec());
        Ok(())
    })));
    reader.set_read_deadline(Some(Instant::now() + WAIT));
    let reading = thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match reader.read_message() {
                Ok((_, payload)) => got.push(payload),
                Err(err) => return (got, err),
            }
        }
    });
    let pinger = writer.control_handle();
    let pinging = thread::spawn(move || {
        pinger.write_control(
            MessageType::Ping,
            b"are you there",
            Some(Instant::now() + WAIT),
        )
    });
    for n in 0..3 {
        writer
            .write_message(MessageType::Text, format!("message {n}").as_bytes())
            .unwrap();
    }
    pinging.join().unwrap().unwrap();
    assert_eq!(pongs.recv_timeout(WAIT).unwrap(), b"are you there");
    writer
        .control_handle()
        .close_with(CloseCode::NORMAL_CLOSURE, "bye")
        .unwrap();
    let (got, err) = reading.join().unwrap();
    assert_eq!(
        got,
        (0..3)
            .map(|n| format!("message {n}").into_bytes())
            .collect::<Vec<_>>()
    );
    assert!(
        matches!(&err, Error::Closed(c) if c.code == CloseCode::NORMAL_CLOSURE),
        "{err:?}"
    );
}

#[test]
fn dialed_ws_conn_splits_into_a_reader_a_writer_and_a_pinger() {
    let (addr, _) = echo_server(Upgrader::default(), 1);
    let (conn, _) = dialer().dial(&format!("ws://{addr}/"), &[]).unwrap();
    exercise_split(conn);
}

#[test]
fn dialed_wss_conn_splits_into_a_reader_a_writer_and_a_pinger() {
    let (server_config, client_config) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let tls = rustls::ServerConnection::new(server_config).unwrap();
        let Ok(mut conn) = Upgrader::default().upgrade(rustls::StreamOwned::new(tls, tcp), &[])
        else {
            return;
        };
        conn.set_read_deadline(Some(Instant::now() + WAIT));
        while let Ok((kind, payload)) = conn.read_message() {
            if conn.write_message(kind, &payload).is_err() {
                break;
            }
        }
    });
    let dialer = Dialer {
        tls_client_config: Some(client_config),
        ..dialer()
    };
    let (conn, _) = dialer
        .dial(&format!("wss://localhost:{port}/"), &[])
        .unwrap();
    exercise_split(conn);
}

#[test]
fn unsupported_proxy_scheme_is_a_clear_error_before_anything_is_sent() {
    for scheme in ["https", "socks4"] {
        let dialer = Dialer {
            proxy: Proxy::Fixed(url::Url::parse(&format!("{scheme}://127.0.0.1:9")).unwrap()),
            ..dialer()
        };
        match dialer.dial("ws://example.invalid/", &[]) {
            Err(Error::InvalidArgument(text)) => {
                assert!(text.contains("unsupported proxy scheme"), "{text}")
            }
            other => panic!(
                "{scheme}: expected InvalidArgument, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn socks5_proxy_dante_tunnels_with_username_and_password() {
    let Some(dante) = Dante::start("username") else {
        return;
    };
    let (target, _) = echo_server(Upgrader::default(), 1);
    let dialer = Dialer {
        proxy: Proxy::Fixed(dante.url("socks5", &format!("{SOCKS_USER}:{SOCKS_PASSWORD}@"))),
        ..dialer()
    };
    let (mut conn, _) = dialer.dial(&format!("ws://{target}/"), &[]).unwrap();
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    conn.write_message(MessageType::Text, b"via dante").unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"via dante");
}

#[test]
fn socks5_proxy_dante_refuses_a_wrong_password_with_a_clear_error() {
    let Some(dante) = Dante::start("username") else {
        return;
    };
    let (target, _) = echo_server(Upgrader::default(), 1);
    for user_info in [format!("{SOCKS_USER}:wrong@"), String::new()] {
        let dialer = Dialer {
            proxy: Proxy::Fixed(dante.url("socks5", &user_info)),
            ..dialer()
        };
        match dialer.dial(&format!("ws://{target}/"), &[]) {
            Err(Error::Io(err)) => {
                assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
                assert!(err.to_string().starts_with("socks5 proxy: "), "{err}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn socks5h_proxy_dante_resolves_the_name_and_reports_a_refused_target() {
    let Some(dante) = Dante::start("none") else {
        return;
    };
    let (target, _) = echo_server(Upgrader::default(), 1);
    let dialer = Dialer {
        proxy: Proxy::Fixed(dante.url("socks5h", "")),
        ..dialer()
    };
    // The name goes to the proxy (ATYP domain), which resolves it.
    let (mut conn, _) = dialer
        .dial(&format!("ws://localhost:{}/", target.port()), &[])
        .unwrap();
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    conn.write_message(MessageType::Binary, &[1, 9, 2, 8])
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, [1, 9, 2, 8]);
    // A port nothing listens on: the proxy's refusal, by its RFC 1928 reply.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    match dialer.dial(&format!("ws://127.0.0.1:{port}/"), &[]) {
        Err(Error::Io(err)) => {
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}")
        }
        other => panic!("expected connection refused, got {:?}", other.map(|_| ())),
    }
}
