//! `chat`: the chat-room server. `cargo run --release --bin chat` and open the URL it
//! prints.
//!
//! - `GET /` serves the page (examples/chat/index.html); `/ws?room=NAME` is the WebSocket
//!   (room `lobby` when none is given).
//! - Every text message from a client goes to every client of its room, the sender
//!   included, unchanged. gorilla/websocket's chat example also sends every message to
//!   every client, the sender included, so clients written for it work here. Rooms are
//!   topics, so a message crosses to each other worker once, whatever the number of
//!   listeners.
//! - Joins and leaves are announced to the room as JSON lines:
//!   `{"type":"join","room":"lobby","count":3}`; the joining client gets its own. A room
//!   of more than `--announce-limit` members (1000) tells only the joining client: telling
//!   everyone would cost n²/2 messages as a room of n fills (50 million for 10 000).
//! - Messages are at most `--max-message` bytes (4096): a larger one closes the
//!   connection with 1009.
//! - `--redis redis://127.0.0.1:6379` makes this server one node of several: rooms are
//!   shared through Redis pub/sub, so clients of different nodes (behind one load
//!   balancer) talk to each other. Join and leave notices travel too, but their `count`
//!   is the joining node's own (the members connected to that node). Messages from Redis
//!   are held to `--max-message` too; anything else there (control frames, garbage) is
//!   dropped and counted.
//! - `--metrics-addr 127.0.0.1:9090` serves the counters (the engine's, then the
//!   broker's) at `/metrics` on that address only. Off by default, and never on the
//!   public port: the per-worker connection counts would tell an attacker which worker
//!   its connections land on, and so how to flood a room across workers.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ringcast::proto::handshake::{HandshakeError, Request};
use ringcast::server::{Handler, HttpResponse, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{CloseCode, MessageType, Upgrader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAGE: &str = include_str!("index.html");
const MAX_ROOM_LEN: usize = 64;

/// A chat-room server: a page at `/`, WebSocket rooms at `/ws?room=NAME`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_message: u64,
    /// Refuse permessage-deflate (on by default: browsers offer it).
    #[arg(long)]
    no_compression: bool,
    /// Serve https:// and wss:// with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Rooms larger than this announce a join only to the joining client, and no leaves.
    #[arg(long, default_value_t = 1000)]
    announce_limit: usize,
    /// Share rooms with other nodes through this Redis (redis://HOST:PORT).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's id in Redis messages, decimal or 0x-hex (default: random).
    #[arg(long, value_parser = ringcast_examples::parse_node_id, requires = "redis")]
    node_id: Option<u64>,
    /// Serve Prometheus counters at http://ADDR/metrics (keep it private: per-worker
    /// counts help an attacker aim at a worker). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// One per worker; the room of each connection is its data.
struct Chat {
    server: Option<ServerHandle>,
    announce_limit: usize,
}

fn room_topic(room: &str) -> Vec<u8> {
    format!("room:{room}").into_bytes()
}

fn notice(kind: &str, room: &str, count: usize) -> String {
    serde_json::json!({ "type": kind, "room": room, "count": count }).to_string()
}

impl Chat {
    fn count(&mut self, socket: &Socket<'_, String>, topic: &[u8]) -> usize {
        self.server
            .get_or_insert_with(|| socket.server())
            .subscribers(topic)
    }
}

impl Handler for Chat {
    type Data = String;

    fn on_upgrade(&mut self, request: &Request) -> Result<Vec<(String, String)>, HandshakeError> {
        if request.path() != "/ws" {
            return Err(HandshakeError::new(404, "the WebSocket is at /ws"));
        }
        let room = ringcast_examples::query_param(&request.target, "room").unwrap_or_default();
        if room.len() > MAX_ROOM_LEN {
            return Err(HandshakeError::new(400, "room names are at most 64 bytes"));
        }
        Ok(Vec::new())
    }

    fn on_open(&mut self, socket: &mut Socket<'_, String>, request: &Request) {
        let room = ringcast_examples::query_param(&request.target, "room")
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "lobby".to_owned());
        let topic = room_topic(&room);
        if socket.subscribe(&topic).is_err() {
            return socket.close(CloseCode::POLICY_VIOLATION, "bad room");
        }
        let count = self.count(socket, &topic);
        let joined = notice("join", &room, count);
        if count <= self.announce_limit {
            let _ = socket.publish_with_self(&topic, MessageType::Text, joined.as_bytes());
        } else {
            let _ = socket.send(MessageType::Text, joined.as_bytes());
        }
        *socket.data() = room;
    }

    fn on_message(&mut self, socket: &mut Socket<'_, String>, kind: MessageType, payload: &[u8]) {
        if kind != MessageType::Text {
            return; // the room is for text: binary messages are dropped
        }
        let topic = room_topic(socket.data());
        let _ = socket.publish_with_self(&topic, MessageType::Text, payload);
    }

    fn on_close(&mut self, socket: &mut Socket<'_, String>, _code: CloseCode, _reason: &str) {
        let room = std::mem::take(socket.data());
        if room.is_empty() {
            return;
        }
        let topic = room_topic(&room);
        // Still subscribed until the socket is gone, so one less than counted.
        let count = self.count(socket, &topic).saturating_sub(1);
        if count >= self.announce_limit {
            return; // its join was not announced either
        }
        let _ = socket.publish(
            &topic,
            MessageType::Text,
            notice("leave", &room, count).as_bytes(),
        );
    }

    fn on_http(&mut self, request: &Request) -> HttpResponse {
        match (request.method.as_str(), request.path()) {
            ("GET", "/") | ("GET", "/index.html") => {
                HttpResponse::new(200, "text/html; charset=utf-8", PAGE)
            }
            ("GET", "/ws") => HttpResponse::upgrade_required(),
            _ => HttpResponse::not_found(),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ringcast_examples::init_logs();
    let args = Args::parse();
    let broker = ringcast_examples::redis_broker(
        args.redis.as_deref(),
        args.node_id,
        Some(args.max_message),
    )?;
    let config = ServerConfig {
        addr: Some(args.addr),
        workers: args.workers,
        upgrader: Upgrader {
            enable_compression: !args.no_compression,
            read_limit: Some(args.max_message),
            handshake_timeout: Some(Duration::from_secs(10)),
            // The page is served from this origin; other sites' pages may not join.
            check_origin: None,
            ..Upgrader::default()
        },
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(ringcast::server::tls_config_from_pem(cert, key)?),
            _ => None,
        },
        // No /metrics on the public port: see --metrics-addr.
        broker: broker.clone().map(|b| b as _),
        ..ServerConfig::default()
    };
    let announce_limit = args.announce_limit;
    let server = Server::new(config).start(move |_| Chat {
        server: None,
        announce_limit,
    })?;
    ringcast_examples::shutdown_on_signals(&server)?;
    let addr = server.local_addr().ok_or("no address")?;
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("chat: open {scheme}://{addr}/ in a browser (rooms: {scheme}://{addr}/?room=NAME)");
    if let Some(metrics) = args.metrics_addr {
        let broker = broker.clone().map(|b| b as _);
        let bound = ringcast_examples::serve_metrics(metrics, &server, broker)?;
        println!("chat: metrics at http://{bound}/metrics");
    }
    // The engine attaches the broker at start and stops it once every worker has.
    server.wait();
    Ok(())
}
