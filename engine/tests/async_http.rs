//! Upgrades inside a real axum server and a real hyper server on loopback: the route or
//! service answers plain HTTP beside the WebSocket, the `Upgrader`'s checks refuse bad
//! upgrades with their status, and bytes a client sent along with its request are not
//! lost.

mod async_support;

use std::convert::Infallible;

use async_support::{dialer, guard, WAIT};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ringcast::async_conn::WebSocketUpgrade;
use ringcast::{CloseCode, Dialer, MessageType, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request for `target` with `extra` header lines.
fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// Send `request` on a new connection to `addr`; what came back until the end of the
/// response head (and `body_bytes` more), or until the server hung up.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], body_bytes: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    guard(async {
        loop {
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                if answer.len() >= end + 4 + body_bytes {
                    break;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
    })
    .await;
    answer
}

fn status(answer: &[u8]) -> &str {
    std::str::from_utf8(&answer[9..12]).unwrap()
}

/// The echo loop every upgraded connection here runs.
async fn echo<S>(mut conn: ringcast::AsyncConn<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Ok((kind, payload)) = conn.read_message().await {
        if conn.write_message(kind, &payload).await.is_err() {
            break;
        }
    }
}

/// The route: upgrades with compression, and names the room of its query in a header of
/// the 101.
async fn ws_route(upgrade: WebSocketUpgrade) -> Response {
    let room = upgrade
        .request()
        .target
        .split_once("room=")
        .map_or("none", |(_, room)| room)
        .to_owned();
    let upgrader = Upgrader {
        enable_compression: true,
        ..Upgrader::default()
    };
    upgrade.on_upgrade(&upgrader, &[("X-Room".into(), room)], echo)
}

async fn axum_server() -> std::net::SocketAddr {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", get(ws_route));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_route_upgrades_beside_a_plain_route_on_one_port() {
    let addr = axum_server().await;
    let health = raw_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        2,
    )
    .await;
    assert_eq!(status(&health), "200");
    assert!(health.ends_with(b"\r\n\r\nok"));

    let dialer = Dialer {
        enable_compression: true,
        ..dialer()
    };
    let (mut conn, response) = guard(dialer.dial_async(&format!("ws://{addr}/ws?room=lobby"), &[]))
        .await
        .expect("upgrade through axum");
    assert_eq!(response.header("x-room"), Some(&b"lobby"[..]));
    assert!(conn.compression_negotiated());
    let big = "through axum ".repeat(10_000);
    for (kind, payload) in [
        (MessageType::Text, big.as_bytes()),
        (MessageType::Binary, &[1u8, 2, 3][..]),
    ] {
        conn.write_message(kind, payload).await.unwrap();
        assert_eq!(
            guard(conn.read_message()).await.unwrap(),
            (kind, payload.to_vec())
        );
    }
    let close = guard(conn.close_handshake(CloseCode::NORMAL_CLOSURE, "", WAIT))
        .await
        .unwrap();
    assert_eq!(close.code, CloseCode::NORMAL_CLOSURE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_route_refuses_bad_upgrades_with_the_upgraders_status() {
    let addr = axum_server().await;
    // Not an upgrade at all.
    let plain = raw_exchange(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        0,
    )
    .await;
    assert_eq!(status(&plain), "400");
    // Another site's page.
    let foreign = upgrade_request(
        "/ws",
        "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n",
    );
    assert_eq!(
        status(&raw_exchange(addr, foreign.as_bytes(), 0).await),
        "403"
    );
    // An old protocol version: 426 naming the one spoken.
    let old = upgrade_request("/ws", "Sec-WebSocket-Version: 8\r\n");
    let answer = raw_exchange(addr, old.as_bytes(), 0).await;
    assert_eq!(status(&answer), "426");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.contains("sec-websocket-version: 13"), "{text}");
}

/// A hyper 1 service (`service_fn` over `http1` with upgrades): a client that sends its
/// request and its first frame in one write gets that frame echoed, so the bytes hyper
/// read past the request reach the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_service_upgrades_and_keeps_the_frame_sent_with_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(
            |mut request: http::Request<hyper::body::Incoming>| async move {
                let (response, upgrade) = match Upgrader::default().upgrade_hyper(&mut request, &[])
                {
                    Ok(upgraded) => upgraded,
                    Err(refused) => return Ok::<_, Infallible>(refused.into_response()),
                };
                tokio::spawn(async move {
                    if let Ok(conn) = upgrade.await {
                        echo(conn).await;
                    }
                });
                Ok::<http::Response<Full<Bytes>>, Infallible>(response)
            },
        );
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    });
    let mut sent = upgrade_request("/", "Sec-WebSocket-Version: 13\r\n").into_bytes();
    // A masked text frame "hi", in the same write as the request.
    sent.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    let answer = raw_exchange(addr, &sent, 4).await;
    assert_eq!(status(&answer), "101");
    // The echo: an unmasked text frame "hi" right after the 101's head.
    assert!(answer.ends_with(&[0x81, 0x02, b'h', b'i']), "{answer:?}");
}
