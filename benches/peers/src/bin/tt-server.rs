//! Benchmark peer: tokio (multi-thread runtime) + tokio-tungstenite.
//!
//! `/echo` echoes text and binary messages, `/ws?room=NAME` broadcasts every text message
//! to every client of the room, the sender included. A WebSocket handshake for any other
//! path is answered 404 from tungstenite's header callback. tungstenite refuses a request
//! that is not a WebSocket handshake before the callback sees its path; this server has
//! no plain-HTTP resource at any path, so it answers such a request 404 itself.

use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use ringcast_peers::{parse_args, route, serve, Rooms, Route};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::TryRecvError;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

/// A message in a room. `Message::Text` holds a reference-counted `Utf8Bytes`, so the
/// payload is received once and shared by every client's writer; tungstenite frames it
/// into each connection's write buffer.
type ChatRooms = Rooms<Message>;

/// The connection is borrowed, so that a request refused by the handshake can still be
/// answered.
type Ws<'a> = WebSocketStream<&'a mut TcpStream>;

const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n";

fn main() {
    let opts = parse_args("tt-server");
    let rooms = Arc::new(ChatRooms::default());
    serve(&opts, move |stream, _peer| {
        connection(stream, rooms.clone())
    });
}

// tungstenite's header callback has this error type (an HTTP response) by its signature.
#[allow(clippy::result_large_err)]
async fn connection(mut stream: TcpStream, rooms: Arc<ChatRooms>) {
    let mut target = Route::NotFound;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        target = route(req.uri().path_and_query().map_or("/", |pq| pq.as_str()));
        if target == Route::NotFound {
            let mut not_found = ErrorResponse::new(Some("not found\n".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            return Err(not_found);
        }
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(&mut stream, callback).await {
        Ok(ws) => ws,
        Err(Error::Protocol(
            ProtocolError::WrongHttpMethod
            | ProtocolError::MissingConnectionUpgradeHeader
            | ProtocolError::MissingUpgradeWebSocketHeader,
        )) => {
            // Not a WebSocket handshake.
            let _ = stream.write_all(NOT_FOUND).await;
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => return,
    };
    match target {
        Route::Echo => echo(ws).await,
        Route::Chat(room) => chat(ws, &rooms, &room).await,
        Route::NotFound => {}
    }
}

/// Echo: `forward` feeds each message to the sink and flushes only when no further input
/// is ready, so a burst of pipelined messages goes out in few writes. Pings are answered
/// and closes completed by tungstenite itself.
async fn echo(ws: Ws<'_>) {
    let (sink, stream) = ws.split();
    let _ = stream
        .try_filter(|msg| ready(msg.is_text() || msg.is_binary()))
        .forward(sink)
        .await;
}

/// Chat: the reader publishes each text message to the room's broadcast channel; the
/// writer takes every message already queued for this client, feeds them all and flushes
/// once. Both run in this task until either ends: the client closes or fails, or the
/// writer lags more than `ROOM_QUEUE` messages behind (then the client is dropped with a
/// close frame, like the gorilla chat hub does).
async fn chat(ws: Ws<'_>, rooms: &ChatRooms, room: &str) {
    let (tx, mut rx) = rooms.join(room);
    let (mut sink, mut stream) = ws.split();
    {
        let reader = async {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Text(_) => {
                        // Err only when no receiver is left, and this client is one.
                        let _ = tx.send(msg);
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        };
        let writer = async {
            // Lagged or closed: stop.
            while let Ok(msg) = rx.recv().await {
                if sink.feed(msg).await.is_err() {
                    return;
                }
                loop {
                    match rx.try_recv() {
                        Ok(msg) => {
                            if sink.feed(msg).await.is_err() {
                                return;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(_) => return,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = reader => {}
            _ = writer => {}
        }
    }
    rooms.leave(room, rx);
    // Completes the closing handshake the client started, or starts one for a client
    // that lagged; bounded so a client that stopped reading cannot hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
