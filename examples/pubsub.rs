//! `pubsub`: ringcast as the broadcast backend of a service. A plain std thread (standing
//! in for the service's own data source) publishes ticks to topics; browsers and other
//! clients subscribe by URL: `ws://HOST:PORT/ws?topic=NAME` (several `topic`s allowed).
//! A connected client may also send `+NAME` to subscribe and `-NAME` to unsubscribe.
//!
//! `cargo run --release --bin pubsub -- --topics prices,news --interval-ms 100`
//!
//! With `--redis redis://127.0.0.1:6379`, several `pubsub` nodes share their topics
//! through Redis: a subscriber on any node gets the ticks of every node (each tick then
//! names its node). `--metrics-addr ADDR` serves the counters (the engine's, then the
//! broker's) at `/metrics` on that address only (off by default; see the chat example).
//!
//! A tick is `{"topic":"ticks","seq":7,"ms":1700000000123}`: `seq` counts the publisher's
//! rounds (consecutive for each topic), `ms` is the round's wall-clock time. With
//! `--stamp`, each tick also carries `ts`, the Unix time in nanoseconds taken just before
//! that tick is published, so a subscriber on the same host can measure one-way latency:
//! `ringcast-load subscribe --url 'ws://127.0.0.1:8081/ws?topic=ticks' --seq-field seq
//! --ts-field ts --key-field topic` (or a scenario file, docs/loadtest.md).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringcast::proto::handshake::{HandshakeError, Request};
use ringcast::server::{Handler, HttpResponse, Server, ServerConfig, Socket};
use ringcast::{CloseCode, MessageType, Upgrader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The most topics one connection may ask for in its URL.
const MAX_URL_TOPICS: usize = 16;

/// Publish ticks to topics; clients subscribe over WebSocket.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Topics to publish to, comma-separated.
    #[arg(long, default_value = "ticks", value_delimiter = ',')]
    topics: Vec<String>,
    /// Milliseconds between two ticks of each topic.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Share topics with other nodes through this Redis (redis://HOST:PORT).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's id in Redis messages, decimal or 0x-hex (default: random).
    #[arg(long, value_parser = ringcast_examples::parse_node_id, requires = "redis")]
    node_id: Option<u64>,
    /// Stamp each tick with `ts`: the Unix time in nanoseconds just before it is
    /// published (for one-way latency, with `seq` for gaps).
    #[arg(long)]
    stamp: bool,
    /// Serve Prometheus counters at http://ADDR/metrics (keep it private). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// Subscribes each connection to the topics of its URL; `+NAME`/`-NAME` messages change
/// them later.
struct Subscriptions;

impl Handler for Subscriptions {
    type Data = ();

    fn on_upgrade(&mut self, request: &Request) -> Result<Vec<(String, String)>, HandshakeError> {
        let topics = ringcast_examples::query_params(&request.target, "topic");
        if request.path() != "/ws" {
            return Err(HandshakeError::new(404, "subscribe at /ws?topic=NAME"));
        }
        if topics.is_empty() || topics.len() > MAX_URL_TOPICS {
            return Err(HandshakeError::new(400, "give 1 to 16 topic parameters"));
        }
        Ok(Vec::new())
    }

    fn on_open(&mut self, socket: &mut Socket<'_, ()>, request: &Request) {
        for topic in ringcast_examples::query_params(&request.target, "topic") {
            if socket.subscribe(topic.as_bytes()).is_err() {
                return socket.close(CloseCode::POLICY_VIOLATION, "topic name too long");
            }
        }
    }

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, _kind: MessageType, payload: &[u8]) {
        match payload.split_first() {
            Some((b'+', topic)) if socket.subscribe(topic).is_err() => {
                socket.close(CloseCode::POLICY_VIOLATION, "topic name too long");
            }
            Some((b'-', topic)) => {
                socket.unsubscribe(topic);
            }
            _ => {}
        }
    }

    fn on_http(&mut self, _request: &Request) -> HttpResponse {
        HttpResponse::new(
            200,
            "text/plain; charset=utf-8",
            "subscribe with a WebSocket at /ws?topic=NAME (several topic parameters allowed)\n",
        )
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ringcast_examples::init_logs();
    let args = Args::parse();
    let broker = ringcast_examples::redis_broker(args.redis.as_deref(), args.node_id, None)?;
    let config = ServerConfig {
        addr: Some(args.addr),
        workers: args.workers,
        upgrader: Upgrader {
            enable_compression: true,
            // A public feed: any page may subscribe.
            check_origin: Some(std::sync::Arc::new(|_| true)),
            ..Upgrader::default()
        },
        broker: broker.clone().map(|b| b as _),
        ..ServerConfig::default()
    };
    let server = Server::new(config).start(|_| Subscriptions)?;
    ringcast_examples::shutdown_on_signals(&server)?;
    println!("listening on {}", server.local_addr().ok_or("no address")?);
    if let Some(metrics) = args.metrics_addr {
        let broker = broker.clone().map(|b| b as _);
        let bound = ringcast_examples::serve_metrics(metrics, &server, broker)?;
        println!("pubsub: metrics at http://{bound}/metrics");
    }

    // The service's data source: a plain thread with a handle, nothing async.
    let publisher = server.clone();
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let node = broker.as_ref().map(|b| format!("{:016x}", b.node_id()));
    let unix = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    };
    std::thread::spawn(move || {
        for seq in 0u64.. {
            let now = unix().as_millis();
            for topic in &args.topics {
                let mut tick = serde_json::json!({ "topic": topic, "seq": seq, "ms": now });
                if let Some(node) = &node {
                    tick["node"] = node.clone().into();
                }
                if args.stamp {
                    tick["ts"] = (unix().as_nanos() as u64).into();
                }
                if publisher
                    .publish(topic.as_bytes(), MessageType::Text, tick.to_string())
                    .is_err()
                {
                    return; // the server stopped
                }
            }
            std::thread::sleep(interval);
        }
    });
    // The engine attaches the broker at start and stops it once every worker has.
    server.wait();
    Ok(())
}
