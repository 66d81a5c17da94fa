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
//! - `--zero-copy-min BYTES` sends messages of at least that size with io_uring's zero-copy
//!   send (off by default; ignored on epoll). Over loopback the kernel copies anyway, so
//!   measure on the real network; the counters show `zero_copy_sends_total` by result.

use std::net::SocketAddr;

use clap::Parser;
use ringcast::server::{Server, ServerConfig};
use ringcast_examples::chat::{ChatRooms, RoomArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A chat-room server: a page at `/`, WebSocket rooms at `/ws?room=NAME`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    rooms: RoomArgs,
    /// Serve https:// and wss:// with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ringcast_examples::init_logs();
    let args = Args::parse();
    let broker = ringcast_examples::redis_broker(
        args.redis.as_deref(),
        args.node_id,
        Some(args.rooms.max_message),
    )?;
    let config = ServerConfig {
        addr: Some(args.rooms.addr),
        workers: args.rooms.workers,
        upgrader: args.rooms.upgrader(),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(ringcast::server::tls_config_from_pem(cert, key)?),
            _ => None,
        },
        // No /metrics on the public port: see --metrics-addr.
        broker: broker.clone().map(|b| b as _),
        ..ServerConfig::default()
    };
    let config = args.rooms.engine(config);
    let announce_limit = args.rooms.announce_limit;
    let server = Server::new(config).start(move |_| ChatRooms::new(announce_limit))?;
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
