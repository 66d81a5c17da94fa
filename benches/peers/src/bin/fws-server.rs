//! Benchmark peer: tokio (multi-thread runtime) + hyper 1 + fastwebsockets.
//!
//! hyper serves HTTP/1.1 and fastwebsockets' `upgrade` feature performs the handshake.
//! `/echo` echoes text and binary messages, `/ws?room=NAME` broadcasts every text message
//! to every client of the room, the sender included, anything else is 404, and a plain
//! (non-upgrade) request for `/echo` or `/ws` is 400.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::upgrade::{is_upgrade_request, upgrade};
use fastwebsockets::{FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocket};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ringcast_peers::{parse_args, route, serve, Rooms, Route};
use tokio::io::BufWriter;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::mpsc;

/// A message in a room: the received payload, frozen once and shared (reference-counted)
/// by every client's writer, which frames it straight from there (`Payload::Borrowed`,
/// no copy).
type ChatRooms = Rooms<Bytes>;

type Ws = WebSocket<TokioIo<Upgraded>>;

fn main() {
    let opts = parse_args("fws-server");
    let rooms = Arc::new(ChatRooms::default());
    serve(&opts, move |stream, _peer| {
        connection(stream, rooms.clone())
    });
}

async fn connection(stream: TcpStream, rooms: Arc<ChatRooms>) {
    let service = service_fn(move |req| {
        let rooms = rooms.clone();
        async move { Ok::<_, Infallible>(request(req, rooms)) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = code;
    resp
}

fn request(mut req: Request<Incoming>, rooms: Arc<ChatRooms>) -> Response<Empty<Bytes>> {
    let target = route(req.uri().path_and_query().map_or("/", |pq| pq.as_str()));
    if target == Route::NotFound {
        return status(StatusCode::NOT_FOUND);
    }
    if !is_upgrade_request(&req) {
        return status(StatusCode::BAD_REQUEST);
    }
    let Ok((resp, fut)) = upgrade(&mut req) else {
        return status(StatusCode::BAD_REQUEST);
    };
    tokio::spawn(async move {
        let Ok(ws) = fut.await else { return };
        match target {
            Route::Echo => echo(ws).await,
            Route::Chat(room) => chat(ws, &rooms, &room).await,
            Route::NotFound => {}
        }
    });
    resp
}

/// Echo, as in fastwebsockets' own echo server: whole messages (fragments collected),
/// each written back as soon as it is read; pongs and the closing handshake are sent by
/// the library (auto_pong, auto_close are on by default).
async fn echo(ws: Ws) {
    let mut ws = FragmentCollector::new(ws);
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        let data = matches!(frame.opcode, OpCode::Text | OpCode::Binary);
        if frame.opcode == OpCode::Close || (data && ws.write_frame(frame).await.is_err()) {
            return;
        }
    }
}

/// Turns a received payload into shared bytes without copying where it can.
fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(b) => b.freeze(),
        Payload::Owned(v) => Bytes::from(v),
        other => Bytes::copy_from_slice(&other),
    }
}

/// Chat, with the socket split (fastwebsockets' `unstable-split`): the reader publishes
/// text messages to the room's broadcast channel; the frames the protocol obliges the
/// reader to send (pong, close reply) go to the writer through a small channel. The
/// writer writes every message already queued for this client into a `BufWriter` and
/// flushes once. A writer that lags more than `ROOM_QUEUE` messages behind drops its
/// client with a close frame, like the gorilla chat hub does.
async fn chat(ws: Ws, rooms: &ChatRooms, room: &str) {
    let (rd, mut wr) = ws.split(|io| {
        let (r, w) = tokio::io::split(io);
        (r, BufWriter::new(w))
    });
    let mut rd = FragmentCollectorRead::new(rd);
    let (tx, mut rx) = rooms.join(room);
    let (ctrl_tx, mut ctrl_rx) = mpsc::channel::<Frame<'static>>(4);
    {
        let reader = async move {
            let ctrl = &ctrl_tx;
            let mut obligated = |frame: Frame<'_>| {
                let owned = Frame::new(true, frame.opcode, None, frame.payload.to_vec().into());
                async move { ctrl.send(owned).await.map_err(|_| "writer is gone") }
            };
            while let Ok(frame) = rd.read_frame(&mut obligated).await {
                match frame.opcode {
                    OpCode::Text => {
                        // Err only when no receiver is left, and this client is one.
                        let _ = tx.send(into_bytes(frame.payload));
                    }
                    OpCode::Close => break,
                    _ => {}
                }
            }
            // The writer ends once it has sent what is queued in the control channel.
            drop(ctrl_tx);
        };
        let writer = async {
            'serve: loop {
                tokio::select! {
                    biased;
                    ctrl = ctrl_rx.recv() => {
                        let Some(frame) = ctrl else { return };
                        let close = frame.opcode == OpCode::Close;
                        let sent = wr.write_frame(frame).await.is_ok() && wr.flush().await.is_ok();
                        if !sent || close {
                            return;
                        }
                    }
                    msg = rx.recv() => {
                        let Ok(msg) = msg else { break 'serve };
                        if wr.write_frame(Frame::text(Payload::Borrowed(&msg))).await.is_err() {
                            return;
                        }
                        loop {
                            match rx.try_recv() {
                                Ok(msg) => {
                                    let frame = Frame::text(Payload::Borrowed(&msg));
                                    if wr.write_frame(frame).await.is_err() {
                                        return;
                                    }
                                }
                                Err(TryRecvError::Empty) => break,
                                Err(_) => break 'serve,
                            }
                        }
                        if wr.flush().await.is_err() {
                            return;
                        }
                    }
                }
            }
            // Lagged: close, bounded so a client that stopped reading cannot hold the task.
            let close = async {
                wr.write_frame(Frame::close_raw(Vec::new().into())).await?;
                wr.flush().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        };
        tokio::pin!(reader, writer);
        tokio::select! {
            _ = &mut writer => {}
            // Let the writer send the close reply (or see the channel closed), bounded.
            _ = &mut reader => {
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
            }
        }
    }
    rooms.leave(room, rx);
}
