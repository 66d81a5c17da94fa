//! Connections another server upgraded, handed to the engine (`ServerHandle::adopt`):
//! from a hyper service (`HyperUpgrade::adopt`, the downcast path), from an axum route
//! under `axum::serve` (`WebSocketUpgrade::hand_to_engine` with `AdoptableSocket`, the
//! kept-descriptor path), and directly. The engine serves them as its own: `on_open`
//! with the request and the tag, the agreed subprotocol and compression, the frames the
//! client sent along with its request, on both backends.

mod async_support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::time::Duration;

use async_support::{dialer, guard};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ringcast::async_conn::{AdoptableSocket, WebSocketUpgrade};
use ringcast::proto::handshake::Request;
use ringcast::server::{Adoption, Backend, Handler, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{MessageType, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Tells each connection how it was opened, then echoes.
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_open(&mut self, socket: &mut Socket<'_, ()>, request: &Request) {
        let hello = format!(
            "open {} tag={} sub={} deflate={}",
            request.target,
            socket.tag(),
            socket.subprotocol().unwrap_or("-"),
            socket.is_compressed()
        );
        let _ = socket.send(MessageType::Text, hello.as_bytes());
    }

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

/// An engine with no listener of its own, on `backend`.
fn engine(backend: Backend) -> ServerHandle {
    let config = ServerConfig {
        addr: None,
        workers: 1,
        backend,
        // Clients here do not all answer the closing handshake.
        shutdown_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    Server::new(config).start(|_| Echo).expect("engine starts")
}

fn stop(engine: ServerHandle) {
    engine.shutdown();
    engine.wait();
}

/// An upgrade request for `target` with `extra` header lines, then a masked text frame
/// "hi" in the same write.
fn request_and_frame(target: &str, extra: &str) -> Vec<u8> {
    let mut sent = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         {extra}\r\n"
    )
    .into_bytes();
    sent.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    sent
}

/// Sends `sent` on a new connection to `addr` and reads the response head and then
/// unmasked short text frames until `frames` of them came; gives the status and the
/// frames' texts.
async fn exchange(addr: std::net::SocketAddr, sent: &[u8], frames: usize) -> (String, Vec<String>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut head_end = None;
    let mut texts = Vec::new();
    guard(async {
        loop {
            if head_end.is_none() {
                head_end = got
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|at| at + 4);
            }
            if let Some(start) = head_end {
                texts = short_text_frames(&got[start..]);
                if texts.len() >= frames {
                    break;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
    })
    .await;
    let status = String::from_utf8_lossy(&got[9..12.min(got.len())]).into_owned();
    (status, texts)
}

/// The whole unmasked text frames of under 126 bytes at the front of `bytes`.
fn short_text_frames(mut bytes: &[u8]) -> Vec<String> {
    let mut texts = Vec::new();
    while bytes.len() >= 2 && bytes[0] == 0x81 && bytes[1] < 126 {
        let len = bytes[1] as usize;
        let Some(payload) = bytes.get(2..2 + len) else {
            break;
        };
        texts.push(String::from_utf8_lossy(payload).into_owned());
        bytes = &bytes[2 + len..];
    }
    texts
}

/// A hyper service over `TokioIo<TcpStream>`: the upgraded socket is downcast and handed
/// over with the bytes hyper read past the request, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_service_hands_its_socket_and_the_frame_sent_along_to_the_engine() {
    for backend in [Backend::Uring, Backend::Epoll] {
        let engine = engine(backend);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = engine.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let engine = served.clone();
                async move {
                    let upgrader = Upgrader {
                        subprotocols: vec!["chat".into()],
                        ..Upgrader::default()
                    };
                    let (response, upgrade) = match upgrader.upgrade_hyper(&mut request, &[]) {
                        Ok(upgraded) => upgraded,
                        Err(refused) => return Ok::<_, Infallible>(refused.into_response()),
                    };
                    tokio::spawn(async move {
                        upgrade.adopt(&engine, 42).await.expect("adopted");
                    });
                    Ok::<http::Response<Full<Bytes>>, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        let sent = request_and_frame("/ws?room=a", "Sec-WebSocket-Protocol: chat\r\n");
        let (status, texts) = exchange(addr, &sent, 2).await;
        assert_eq!(status, "101", "{backend:?}");
        assert_eq!(
            texts,
            ["open /ws?room=a tag=42 sub=chat deflate=false", "hi"],
            "{backend:?}: on_open saw the request, tag and subprotocol; the frame sent with \
             the request was echoed"
        );
        tokio::task::spawn_blocking(move || stop(engine))
            .await
            .unwrap();
    }
}

async fn hand_over(
    axum::extract::State(engine): axum::extract::State<ServerHandle>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let upgrader = Upgrader {
        enable_compression: true,
        ..Upgrader::default()
    };
    upgrade.hand_to_engine(&upgrader, &[], &engine, 7)
}

/// An axum app under `axum::serve`, with `AdoptableSocket` as its connect info.
async fn axum_server(engine: &ServerHandle, connect_info: bool) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", get(hand_over))
        .with_state(engine.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if connect_info {
        let service = app.into_make_service_with_connect_info::<AdoptableSocket>();
        tokio::spawn(async move { axum::serve(listener, service).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    addr
}

/// axum's `serve` hides the stream's type, so the socket kept at accept is handed over:
/// a compressed connection (ringcast's async client) and a raw client whose first frame
/// came with its request both get the engine's echo, and the plain route still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_route_under_axum_serve_hands_its_socket_to_the_engine() {
    for backend in [Backend::Uring, Backend::Epoll] {
        let engine = engine(backend);
        let addr = axum_server(&engine, true).await;
        let mut client_dialer = dialer();
        client_dialer.enable_compression = true;
        let (mut conn, _) = guard(client_dialer.dial_async(&format!("ws://{addr}/ws?room=z"), &[]))
            .await
            .expect("dial");
        let (_, hello) = guard(conn.read_message()).await.unwrap();
        assert_eq!(
            hello, b"open /ws?room=z tag=7 sub=- deflate=true",
            "{backend:?}"
        );
        for size in [5, 70_000] {
            let payload = vec![b'x'; size];
            guard(conn.write_message(MessageType::Binary, &payload))
                .await
                .unwrap();
            let (kind, echoed) = guard(conn.read_message()).await.unwrap();
            assert_eq!(
                (kind, echoed.len()),
                (MessageType::Binary, size),
                "{backend:?}"
            );
        }
        let (status, texts) = exchange(addr, &request_and_frame("/ws", ""), 2).await;
        assert_eq!(status, "101");
        assert_eq!(
            texts,
            ["open /ws tag=7 sub=- deflate=false", "hi"],
            "{backend:?}"
        );
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        guard(plain.read_to_string(&mut answer)).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        // The worker publishes its counters at the end of a loop turn, which may come
        // after the echo it sent in that turn has been read here.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while engine.stats().handshakes_ok < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            engine.stats().handshakes_ok,
            2,
            "{backend:?}: both opened in the engine"
        );
        tokio::task::spawn_blocking(move || stop(engine))
            .await
            .unwrap();
    }
}

/// Served without `AdoptableSocket`, a route that hands over says why with a 500, before
/// any 101: the connection is never upgraded and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_connect_info_the_route_answers_500_and_no_101() {
    let engine = engine(Backend::Uring);
    let addr = axum_server(&engine, false).await;
    let (status, _) = exchange(addr, &request_and_frame("/ws", ""), 0).await;
    assert_eq!(status, "500");
    tokio::task::spawn_blocking(move || stop(engine))
        .await
        .unwrap();
}

/// The plain `ServerHandle::adopt`: a socket whose handshake happened elsewhere (here,
/// none: the client just sends frames), served by the engine; after a shutdown, adopting
/// is an error, not a lost socket.
#[test]
fn a_socket_adopted_directly_is_served_and_a_stopped_engine_refuses() {
    let engine = engine(Backend::Uring);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (socket, _) = listener.accept().unwrap();
    let request = Request {
        method: "GET".into(),
        target: "/direct".into(),
        version: 1,
        headers: Vec::new(),
    };
    let adoption = Adoption {
        tag: 9,
        read_past: Bytes::from_static(&[0x81, 0x81, 0, 0, 0, 0, b'a']),
        ..Adoption::new(socket, request.clone())
    };
    engine.adopt(adoption).expect("adopted");
    client.write_all(&[0x81, 0x81, 0, 0, 0, 0, b'b']).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while short_text_frames(&got).len() < 3 {
        let n = client.read(&mut chunk).expect("the engine answers");
        assert!(n > 0, "the engine kept the connection");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        short_text_frames(&got),
        ["open /direct tag=9 sub=- deflate=false", "a", "b"]
    );
    stop(engine.clone());
    let (late, _) = {
        let mut other = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        other.write_all(b"x").unwrap();
        listener.accept().unwrap()
    };
    let refused = engine.adopt(Adoption::new(late, request));
    assert!(refused.is_err(), "a stopped engine refuses: {refused:?}");
}
