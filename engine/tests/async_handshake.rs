//! The async handshakes (feature `tokio`): `Upgrader::upgrade_async` (and from a head
//! another server parsed) with the Upgrader's checks, refusals and whole-handshake
//! timeout; `Dialer::dial_async` with the Dialer's settings: subprotocols, compression,
//! cookies, TLS, an HTTP proxy (tinyproxy), a SOCKS5 proxy (Dante), a custom connect
//! function, the whole-dial timeout.

mod async_support;
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_support::{dialer, guard};
use common::{Dante, Tinyproxy, SOCKS_PASSWORD, SOCKS_USER};
use ringcast::async_conn::{accept, connect};
use ringcast::client::{MemoryJar, Proxy};
use ringcast::proto::handshake::{parse_request, ErrorResponse, HandshakeError, Limits};
use ringcast::{Dialer, Error, MessageType, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(extra: &str) -> String {
    format!(
        "GET /chat?room=a HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Send `bytes` to `upgrader.upgrade_async` over an in-memory pipe; the server's result
/// and everything the client received until the server hung up or 1 s of silence.
async fn exchange(
    upgrader: &Upgrader,
    bytes: &[u8],
) -> (
    Result<ringcast::AsyncConn<tokio::io::DuplexStream>, Error>,
    String,
) {
    let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
    client_io.write_all(bytes).await.unwrap();
    let server = guard(upgrader.upgrade_async(server_io, &[])).await;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), client_io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && server.is_ok() {
            break;
        }
    }
    (server, String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_cross_origin_request_is_refused_403_unless_the_origin_check_allows_it() {
    let foreign = request("Origin: https://evil.example\r\n");
    let (server, answer) = exchange(&Upgrader::default(), foreign.as_bytes()).await;
    assert!(matches!(server, Err(Error::Handshake(e)) if e.status() == 403));
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    let open = Upgrader {
        check_origin: Some(Arc::new(|_| true)),
        ..Upgrader::default()
    };
    let (server, answer) = exchange(&open, foreign.as_bytes()).await;
    assert!(server.is_ok());
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
}

#[tokio::test]
async fn an_unsupported_version_is_answered_426_naming_version_13() {
    let old = request("").replace("Version: 13", "Version: 8");
    let (server, answer) = exchange(&Upgrader::default(), old.as_bytes()).await;
    assert!(matches!(server, Err(Error::Handshake(e)) if e.status() == 426));
    assert!(
        answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
}

#[tokio::test]
async fn the_error_responder_writes_the_refusal_and_oversized_heads_get_431() {
    let upgrader = Upgrader {
        error: Some(Arc::new(|_, err: &HandshakeError| {
            ErrorResponse::json(err.status(), format!(r#"{{"error":{}}}"#, err.status()))
        })),
        limits: Limits {
            max_head_bytes: 256,
            ..Limits::default()
        },
        ..Upgrader::default()
    };
    let huge = request(&format!("X-Filler: {}\r\n", "a".repeat(1000)));
    let (server, answer) = exchange(&upgrader, huge.as_bytes()).await;
    assert!(matches!(server, Err(Error::Handshake(e)) if e.status() == 431));
    assert!(
        answer.contains("Content-Type: application/json\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with(r#"{"error":431}"#), "{answer}");
}

#[tokio::test]
async fn inspect_refuses_with_its_own_status_or_adds_headers_to_the_101() {
    let upgrader = Upgrader::default();
    let dialer = dialer();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (server, client) = tokio::join!(
        upgrader.upgrade_async_with(server_io, |request| {
            assert_eq!(request.query(), Some("room=lobby"));
            Ok(vec![("Set-Cookie".into(), "session=s1; Path=/".into())])
        }),
        dialer.client_handshake_async(client_io, "ws://example.com/chat?room=lobby", &[]),
    );
    server.unwrap();
    let (_, response) = client.unwrap();
    assert_eq!(
        response.header("Set-Cookie"),
        Some(&b"session=s1; Path=/"[..])
    );

    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (server, client) = tokio::join!(
        upgrader.upgrade_async_with(server_io, |_| Err(HandshakeError::new(
            401,
            "sign in first"
        ))),
        dialer.client_handshake_async(client_io, "ws://example.com/chat", &[]),
    );
    assert!(matches!(server, Err(Error::Handshake(e)) if e.status() == 401));
    match client {
        Err(Error::Handshake(err)) => {
            let response = err.response().expect("the server's answer");
            assert_eq!(response.status, 401);
            assert_eq!(response.body, b"sign in first\n");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_head_another_server_parsed_upgrades_and_the_bytes_read_past_it_come_first() {
    // A client that sent its request and a masked "hi" in one write; the other server
    // read both.
    let mut sent = request("").into_bytes();
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    sent.extend_from_slice(&frame);
    let (head, used) = parse_request(&sent, &Limits::default()).unwrap().unwrap();
    let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
    let mut conn = Upgrader::default()
        .upgrade_request_async(server_io, &head, &sent[used..], &[])
        .await
        .unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, b"hi");
    let mut answer = [0u8; 12];
    client_io.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
}

/// A client that sends its request one byte every 500 ms cannot hold a 1 s handshake
/// timeout longer than that: the whole handshake is bounded, not each read.
#[tokio::test]
async fn a_client_dripping_its_request_is_cut_off_at_the_whole_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dripper = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        for byte in request("").bytes() {
            if tcp.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let upgrader = Upgrader {
        handshake_timeout: Some(Duration::from_secs(1)),
        ..Upgrader::default()
    };
    let started = Instant::now();
    let err = guard(upgrader.upgrade_async(tcp, &[])).await.unwrap_err();
    println!("dripping client cut off after {:?}", started.elapsed());
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    dripper.abort();
}

/// An async echo server for `conns` connections; the headers of each request go to the
/// returned list.
async fn echo_server(
    upgrader: Upgrader,
    conns: usize,
) -> (SocketAddr, Arc<Mutex<Vec<Vec<(String, String)>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        for _ in 0..conns {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let upgrader = upgrader.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let upgraded = upgrader
                    .upgrade_async_with(tcp, |request| {
                        let headers = request
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(&h.value).into_owned(),
                                )
                            })
                            .collect();
                        log.lock().unwrap().push(headers);
                        Ok(vec![("Set-Cookie".into(), "visit=1; Path=/".into())])
                    })
                    .await;
                let Ok(mut conn) = upgraded else { return };
                while let Ok((kind, payload)) = conn.read_message().await {
                    if conn.write_message(kind, &payload).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn dial_async_negotiates_subprotocol_and_compression_and_keeps_cookies() {
    let upgrader = Upgrader {
        subprotocols: vec!["chat.v2".into()],
        enable_compression: true,
        ..Upgrader::default()
    };
    let (addr, seen) = echo_server(upgrader, 2).await;
    let dialer = Dialer {
        subprotocols: vec!["chat.v1".into(), "chat.v2".into()],
        enable_compression: true,
        jar: Some(Arc::new(MemoryJar::default())),
        ..dialer()
    };
    let url = format!("ws://user:secret@{addr}/chat");
    let headers = [("Origin".to_string(), format!("http://{addr}"))];
    let (mut conn, response) = guard(dialer.dial_async(&url, &headers)).await.unwrap();
    assert_eq!(conn.subprotocol(), Some("chat.v2"));
    assert!(conn.compression_negotiated());
    assert_eq!(response.status, 101);
    let big = "compressible ".repeat(1000);
    conn.write_message(MessageType::Text, big.as_bytes())
        .await
        .unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, big.as_bytes());
    // The second dial sends the cookie the first one was given.
    let (_again, _) = guard(dialer.dial_async(&url, &headers)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(header(&seen[0], "cookie"), None);
    assert_eq!(header(&seen[1], "cookie"), Some("visit=1"));
    assert_eq!(
        header(&seen[0], "authorization"),
        Some("Basic dXNlcjpzZWNyZXQ=")
    );
    assert!(header(&seen[0], "sec-websocket-extensions")
        .is_some_and(|v| v.contains("permessage-deflate")));
}

#[tokio::test]
async fn a_non_101_answer_is_a_bad_handshake_with_status_headers_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = tcp.read(&mut head).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 403 Forbidden\r\nX-Why: origin\r\nContent-Length: 10\r\n\r\nno entry\r\n")
            .await;
    });
    match guard(dialer().dial_async(&format!("ws://{addr}/"), &[])).await {
        Err(Error::Handshake(err)) => {
            let response = err.response().expect("the response");
            assert_eq!(response.status, 403);
            assert_eq!(response.header("X-Why"), Some(&b"origin"[..]));
            assert_eq!(response.body, b"no entry\r\n");
        }
        other => panic!("expected a bad handshake, got {:?}", other.map(|_| ())),
    }
}

/// A server that answers one byte every 500 ms cannot hold a 1 s dial longer.
#[tokio::test]
async fn a_server_dripping_its_101_fails_dial_async_at_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = tcp.read(&mut head).await;
        for byte in b"HTTP/1.1 101 Switching Protocols\r\n\r\n" {
            if tcp.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let dialer = Dialer {
        handshake_timeout: Some(Duration::from_secs(1)),
        ..dialer()
    };
    let started = Instant::now();
    let err = guard(dialer.dial_async(&format!("ws://{addr}/"), &[]))
        .await
        .unwrap_err();
    println!("dripping server cut off after {:?}", started.elapsed());
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
}

#[tokio::test]
async fn wss_with_an_untrusted_certificate_fails_and_a_trusted_one_round_trips() {
    let (server_config, client_config) = common::tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = accept(tls).await else {
                    return;
                };
                while let Ok((kind, payload)) = conn.read_message().await {
                    let _ = conn.write_message(kind, &payload).await;
                }
            });
        }
    });
    let url = format!("wss://localhost:{port}/");
    let err = guard(dialer().dial_async(&url, &[])).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let trusting = Dialer {
        tls_client_config: Some(client_config),
        ..dialer()
    };
    let (mut conn, _) = guard(trusting.dial_async(&url, &[])).await.unwrap();
    conn.write_message(MessageType::Text, b"over tls")
        .await
        .unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, b"over tls");
}

#[tokio::test]
async fn dial_async_tunnels_through_a_real_http_proxy() {
    let Some(binary) = Tinyproxy::binary() else {
        return;
    };
    let (target, _) = echo_server(Upgrader::default(), 1).await;
    let tinyproxy = Tinyproxy::start(binary, target.port());
    let dialer = Dialer {
        proxy: Proxy::Fixed(
            url::Url::parse(&format!("http://127.0.0.1:{}", tinyproxy.port)).unwrap(),
        ),
        ..dialer()
    };
    let (mut conn, _) = guard(dialer.dial_async(&format!("ws://{target}/"), &[]))
        .await
        .unwrap();
    conn.write_message(MessageType::Text, b"via tinyproxy")
        .await
        .unwrap();
    assert_eq!(
        guard(conn.read_message()).await.unwrap().1,
        b"via tinyproxy"
    );
}

#[tokio::test]
async fn dial_async_tunnels_through_dante_socks5_and_a_wrong_password_is_a_clear_error() {
    let Some(dante) = Dante::start("username") else {
        return;
    };
    let (target, _) = echo_server(Upgrader::default(), 1).await;
    let dialer_for = |user_info: &str| Dialer {
        proxy: Proxy::Fixed(dante.url("socks5", user_info)),
        ..dialer()
    };
    let good = dialer_for(&format!("{SOCKS_USER}:{SOCKS_PASSWORD}@"));
    // By name: the proxy resolves it.
    let (mut conn, _) = guard(good.dial_async(&format!("ws://localhost:{}/", target.port()), &[]))
        .await
        .unwrap();
    conn.write_message(MessageType::Text, b"via dante")
        .await
        .unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, b"via dante");
    let bad = dialer_for(&format!("{SOCKS_USER}:wrong@"));
    match guard(bad.dial_async(&format!("ws://{target}/"), &[])).await {
        Err(Error::Io(err)) => {
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
            assert!(err.to_string().starts_with("socks5 proxy: "), "{err}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_custom_connect_function_opens_the_connection() {
    let (target, _) = echo_server(Upgrader::default(), 1).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&calls);
    let dialer = Dialer {
        connect: Some(Arc::new(move |host: &str, port: u16, _deadline| {
            log.lock().unwrap().push(format!("{host}:{port}"));
            std::net::TcpStream::connect(target)
        })),
        ..dialer()
    };
    let (mut conn, _) = guard(dialer.dial_async("ws://chat.invalid:4242/", &[]))
        .await
        .unwrap();
    conn.write_message(MessageType::Binary, &[4, 2])
        .await
        .unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, [4, 2]);
    assert_eq!(*calls.lock().unwrap(), ["chat.invalid:4242"]);
}

#[tokio::test]
async fn connect_and_accept_use_the_default_settings() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = accept(tcp).await.unwrap();
        let (kind, payload) = conn.read_message().await.unwrap();
        conn.write_message(kind, &payload).await.unwrap();
    });
    let (mut conn, _) = guard(connect(&format!("ws://{addr}/"))).await.unwrap();
    conn.write_message(MessageType::Text, b"defaults")
        .await
        .unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, b"defaults");
    guard(server).await.unwrap();
}
