//! The echo server's async backend: one tokio task per connection over `AsyncConn`,
//! with the blocking backend's bounds (`--max-conns`, answered 503 past it; an idle and
//! a write timeout per connection; the read limit).
//!
//! `/ws?room=NAME` is a chat room instead of an echo, as the benchmark peers serve it
//! (benches/peers): every text message goes to every member of the room, the sender
//! included, as one [`PreparedMessage`] (framed and compressed once) through a tokio
//! `broadcast` channel; a member 256 messages behind is closed with 1008. It is how
//! `AsyncConn` fans out, measured beside the peers by `scripts/bench-peers`.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use ringcast::{AsyncConn, CloseCode, Error, MessageType, PreparedMessage, Upgrader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, Semaphore};

use super::{is_timeout, log_end, server_full, upgrader, Args, Timeouts, REFUSALS_QUEUED};

/// Serve until killed, on `--workers` runtime threads (0: one per CPU).
pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.workers > 0 {
        runtime.worker_threads(args.workers);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&args.addr).await?;
    // A refusal reads the request (so closing does not reset the answer away) for one
    // second at most, and at most REFUSALS_QUEUED run at once.
    let refuser = Arc::new(Upgrader {
        handshake_timeout: Some(Duration::from_secs(1)),
        ..upgrader(args)
    });
    let upgrader = Arc::new(upgrader(args));
    let live = Arc::new(Semaphore::new(args.max_conns));
    let refusals = Arc::new(Semaphore::new(REFUSALS_QUEUED));
    let timeouts = Timeouts::new(args);
    let rooms = Arc::new(Rooms::default());
    println!("listening on {}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                // Out of descriptors: let some connections end before trying again.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Ok(permit) = Arc::clone(&live).try_acquire_owned() {
            let (upgrader, timeouts) = (Arc::clone(&upgrader), timeouts.clone());
            let rooms = Arc::clone(&rooms);
            tokio::spawn(async move {
                let _permit = permit;
                serve_one(&upgrader, stream, &timeouts, &rooms).await;
            });
        } else if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
            let refuser = Arc::clone(&refuser);
            tokio::spawn(async move {
                let _permit = permit;
                let _ = refuser
                    .upgrade_async_with(stream, |_| Err(server_full()))
                    .await;
            });
        } else {
            tracing::warn!("refusals queue full: a connection closed unanswered");
        }
    }
}

/// Upgrades, then echoes, or joins the room a `/ws?room=` request names.
async fn serve_one(upgrader: &Upgrader, stream: TcpStream, timeouts: &Timeouts, rooms: &Rooms) {
    let _ = stream.set_nodelay(true);
    let mut room = None;
    // Boxed, as the room member's future below: only the echo loop's state stays in
    // the task for the connection's life.
    let upgraded = Box::pin(upgrader.upgrade_async_with(stream, |request| {
        if request.path() == "/ws" {
            let name = ringcast_examples::query_param(&request.target, "room");
            room = Some(
                name.filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "lobby".into()),
            );
        }
        Ok(Vec::new())
    }));
    let mut conn: AsyncConn<TcpStream> = match upgraded.await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::debug!(%err, "handshake refused");
            return;
        }
    };
    conn.set_idle_timeout(Some(timeouts.idle));
    conn.set_write_timeout(Some(timeouts.write));
    match room {
        // Boxed: a task is as large as its largest state, and an echo connection should
        // not carry a room member's (its two halves' futures side by side).
        Some(room) => Box::pin(chat(conn, rooms, &room)).await,
        None => echo(conn).await,
    }
}

/// How many messages a member may fall behind its room before it is closed: the peers'
/// bound (gorilla/websocket's chat example's send channel).
const ROOM_QUEUE: usize = 256;

/// The rooms: a `broadcast` channel each, removed with its last member.
#[derive(Default)]
struct Rooms(Mutex<HashMap<String, broadcast::Sender<Arc<PreparedMessage>>>>);

impl Rooms {
    fn join(&self, name: &str) -> broadcast::Sender<Arc<PreparedMessage>> {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(name.to_owned());
        room.or_insert_with(|| broadcast::channel(ROOM_QUEUE).0)
            .clone()
    }

    fn leave(&self, name: &str) {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if rooms
            .get(name)
            .is_some_and(|room| room.receiver_count() == 0)
        {
            rooms.remove(name);
        }
    }
}

/// A member of `room`: its text messages go to the room; the room's messages go out on
/// the write half, in order, until it falls [`ROOM_QUEUE`] behind.
async fn chat(conn: AsyncConn<TcpStream>, rooms: &Rooms, room: &str) {
    let room_tx = rooms.join(room);
    let mut inbox = room_tx.subscribe();
    let (mut reader, mut writer) = conn.split();
    let reading = async {
        loop {
            let (kind, payload) = reader.read_message().await?;
            if kind == MessageType::Text {
                let message = PreparedMessage::new(kind, payload)?;
                let _ = room_tx.send(Arc::new(message));
            }
        }
    };
    let writing = async {
        loop {
            // What is queued goes out in one write: each message fed (framed once for the
            // room), then one flush.
            let mut next = inbox.recv().await;
            loop {
                match next {
                    Ok(message) => writer.feed_prepared_message(&message).await?,
                    Err(RecvError::Lagged(_)) => {
                        let close = writer.close_with(CloseCode::POLICY_VIOLATION, "too slow");
                        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
                        return Ok(());
                    }
                    Err(RecvError::Closed) => return Ok(()),
                }
                next = match inbox.try_recv() {
                    Ok(message) => Ok(message),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                };
            }
            writer.flush().await?;
        }
    };
    let ended: Result<(), Error> = tokio::select! {
        read = reading => read,
        written = writing => written,
    };
    if let Err(err) = ended {
        log_end(&err);
    }
    drop(inbox);
    rooms.leave(room);
}

async fn echo(mut conn: AsyncConn<TcpStream>) {
    let err: Error = loop {
        let result = match conn.read_message().await {
            Ok((message_type, payload)) => conn.write_message(message_type, &payload).await,
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            break err;
        }
    };
    log_end(&err);
    if is_timeout(&err) {
        let close = conn.close_with(CloseCode::GOING_AWAY, "idle");
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    }
}
