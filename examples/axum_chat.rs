//! `axum-chat`: the chat rooms of `chat`, behind an axum router on one port. axum serves
//! the HTTP side; every WebSocket is checked in an axum route, then handed to the
//! engine, whose workers serve it from then on (rooms, fan-out, pings, backpressure).
//!
//! - `GET /health`: `{"status":"ok","workers":N,"connections":N,"rooms":N}`.
//! - `GET /`: the chat page (examples/chat/index.html).
//! - `GET /ws?room=NAME`: the WebSocket (room `lobby` when none is given). Checked in the
//!   route (room name; with `--token`, a `token` query parameter, 401 without it), then
//!   upgraded by axum (hyper writes the 101) and handed to an engine worker
//!   (`WebSocketUpgrade::hand_to_engine`). Each connection's `Socket::tag` is its number.
//! - `GET /api/rooms`: `{"rooms":[{"room":"lobby","members":3},...]}`, largest first, at
//!   most 1000.
//!
//! The rooms behave as `chat`'s (examples/src/chat.rs): every text message goes to the
//! whole room, the sender included; joins and leaves are announced as JSON lines.
//! Plain TCP only: a TLS connection cannot be handed from axum to the engine (`chat`
//! serves TLS in the engine itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use ringcast::async_conn::{AdoptableSocket, WebSocketUpgrade};
use ringcast::server::{Server, ServerConfig, ServerHandle};
use ringcast::Upgrader;
use ringcast_examples::chat::{self, ChatRooms, RoomArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The most rooms `/api/rooms` lists.
const ROOMS_LISTED: usize = 1000;

/// The chat rooms behind an axum router: /health, the page, /ws?room=, /api/rooms.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    rooms: RoomArgs,
    /// Require `?token=TOKEN` on /ws (401 without it): where a real service would await
    /// its session store.
    #[arg(long)]
    token: Option<String>,
}

/// What the routes share.
#[derive(Clone)]
struct App {
    engine: ServerHandle,
    upgrader: Arc<Upgrader>,
    token: Option<Arc<str>>,
    next_user: Arc<AtomicU64>,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json")];
    (status, headers, value.to_string()).into_response()
}

async fn page() -> Response {
    let headers = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    (headers, chat::PAGE).into_response()
}

async fn health(State(app): State<App>) -> Response {
    let stats = app.engine.stats();
    let rooms = app
        .engine
        .topics()
        .iter()
        .filter(|(topic, _)| chat::topic_room(topic).is_some())
        .count();
    json(
        StatusCode::OK,
        serde_json::json!({
            "status": "ok",
            "workers": app.engine.workers(),
            "connections": stats.connections,
            "rooms": rooms,
        }),
    )
}

async fn rooms(State(app): State<App>) -> Response {
    let mut rooms: Vec<(String, usize)> = app
        .engine
        .topics()
        .into_iter()
        .filter_map(|(topic, members)| Some((chat::topic_room(&topic)?.to_owned(), members)))
        .collect();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(ROOMS_LISTED);
    let rooms: Vec<_> = rooms
        .into_iter()
        .map(|(room, members)| serde_json::json!({ "room": room, "members": members }))
        .collect();
    json(StatusCode::OK, serde_json::json!({ "rooms": rooms }))
}

async fn ws(State(app): State<App>, upgrade: WebSocketUpgrade) -> Response {
    let target = &upgrade.request().target;
    if let Err(err) = chat::requested_room(target) {
        return (StatusCode::BAD_REQUEST, err.message().to_owned()).into_response();
    }
    if let Some(token) = &app.token {
        let given = ringcast_examples::query_param(target, "token");
        if given.as_deref() != Some(&**token) {
            return (StatusCode::UNAUTHORIZED, "a valid token is needed").into_response();
        }
    }
    let user = app.next_user.fetch_add(1, Ordering::Relaxed);
    upgrade.hand_to_engine(&app.upgrader, &[], &app.engine, user)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ringcast_examples::init_logs();
    let args = Args::parse();
    let upgrader = args.rooms.upgrader();
    // No listener of its own: every connection comes from the router.
    let config = ServerConfig {
        addr: None,
        workers: args.rooms.workers,
        upgrader: upgrader.clone(),
        ..ServerConfig::default()
    };
    let config = args.rooms.engine(config);
    let announce_limit = args.rooms.announce_limit;
    let engine = Server::new(config).start(move |_| ChatRooms::new(announce_limit))?;
    ringcast_examples::shutdown_on_signals(&engine)?;
    let app = App {
        engine: engine.clone(),
        upgrader: Arc::new(upgrader),
        token: args.token.map(Arc::from),
        next_user: Arc::new(AtomicU64::new(1)),
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route("/health", get(health))
        .route("/api/rooms", get(rooms))
        .route("/ws", get(ws))
        .with_state(app);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.rooms.addr).await?;
        let addr = listener.local_addr()?;
        println!("axum-chat: open http://{addr}/ in a browser (rooms: http://{addr}/?room=NAME)");
        let stopped = {
            let engine = engine.clone();
            async move { engine.wait_async().await }
        };
        // A signal shuts the engine down (every WebSocket gets 1001); the router stops
        // with it.
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<AdoptableSocket>(),
        )
        .with_graceful_shutdown(stopped)
        .await
    })?;
    engine.wait();
    Ok(())
}
