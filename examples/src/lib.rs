//! Shared bits of the example programs.

pub mod chat;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ringcast::server::{Broker, RedisBroker, RedisConfig, ServerHandle};

/// The Redis broker asked for on the command line (`--redis URL`, `--node-id ID`), or
/// `None` for a single node. `max_message` is the server's read limit: larger messages
/// from Redis are dropped (`None`: the broker's default, 1 MiB). A Redis that is down now
/// is no error: the broker logs it and keeps trying.
pub fn redis_broker(
    url: Option<&str>,
    node_id: Option<u64>,
    max_message: Option<u64>,
) -> Result<Option<Arc<RedisBroker>>, ringcast::Error> {
    let Some(url) = url else {
        return Ok(None);
    };
    let defaults = RedisConfig::default();
    let config = RedisConfig {
        node_id,
        max_message: max_message.unwrap_or(defaults.max_message),
        ..defaults
    };
    let broker = RedisBroker::connect(url, config)?;
    tracing::info!(node = %format_args!("{:016x}", broker.node_id()), "sharing topics through redis");
    Ok(Some(broker))
}

/// Reads a node id given as decimal or as hex with `0x` (`--node-id 0x2a`).
pub fn parse_node_id(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("node id {text:?}: {e}"))
}

/// The keep-alive settings of a blocking peer: ping every `ping_interval_ms`, give up on a
/// peer silent for `pong_wait_ms`, bound each write by `write_wait_ms`. The defaults are
/// those of gorilla/websocket's chat example. Flatten it into a program's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Keepalive {
    /// How often to ping the peer, in milliseconds (pingPeriod in gorilla/websocket's
    /// chat example).
    #[arg(long, default_value_t = 54_000)]
    pub ping_interval_ms: u64,
    /// How long the peer may stay silent (no message, no pong) before the connection is
    /// given up, in milliseconds; longer than the ping interval (pongWait in
    /// gorilla/websocket's chat example).
    #[arg(long, default_value_t = 60_000)]
    pub pong_wait_ms: u64,
    /// How long one write may take, in milliseconds (writeWait in gorilla/websocket's
    /// chat example).
    #[arg(long, default_value_t = 10_000)]
    pub write_wait_ms: u64,
}

impl Keepalive {
    /// The ping interval.
    pub fn ping_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ping_interval_ms)
    }
    /// The longest silence accepted from the peer.
    pub fn pong_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.pong_wait_ms)
    }
    /// The longest one write may take.
    pub fn write_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.write_wait_ms)
    }
}

/// Logs to stderr at `info` (or what `RUST_LOG` says), as every example does.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Starts a thread that turns the first SIGINT or SIGTERM into a graceful shutdown of
/// `server` (close 1001 to every connection, wait for the answers, stop). A second signal
/// ends the process at once.
pub fn shutdown_on_signals(server: &ServerHandle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let server = server.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = signals.forever();
            if let Some(signal) = seen.next() {
                tracing::info!(signal, "shutting down: closing every connection with 1001");
                server.shutdown();
            }
            if seen.next().is_some() {
                std::process::exit(130);
            }
        })?;
    Ok(())
}

/// The value of query parameter `name` in a request target (`/ws?room=a%20b` gives
/// `a b`), percent-decoded.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Every value of query parameter `name`, in order (`?topic=a&topic=b`).
pub fn query_params(target: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// Serves `GET /metrics` on a listener of its own at `addr` (the engine's counters, server
/// wide and per worker, then the broker's), from one thread, one request at a time, each
/// bounded by 2 s. Returns the address bound (port 0 picks one).
///
/// The counters stay off the public port on purpose: the per-worker connection counts tell
/// an attacker which worker its next connection lands on, and so how to place itself to
/// flood another worker. Bind this to loopback or a private interface.
pub fn serve_metrics(
    addr: SocketAddr,
    server: &ServerHandle,
    broker: Option<Arc<dyn Broker>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let server = server.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(err) = answer_metrics(stream, &server, broker.as_deref()) {
                            tracing::debug!(%err, "metrics request failed");
                        }
                    }
                    // EMFILE and the like: the next accept may succeed.
                    Err(err) => {
                        tracing::warn!(%err, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(bound)
}

/// The longest request head the metrics listener reads.
const MAX_METRICS_HEAD: usize = 8192;

/// Answers one request of the metrics listener and closes.
fn answer_metrics(
    mut stream: TcpStream,
    server: &ServerHandle,
    broker: Option<&dyn Broker>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_METRICS_HEAD {
            return Ok(());
        }
        // Only the new bytes (and the 3 before them) can complete the blank line.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") {
        let workers: Vec<_> = (0..server.workers())
            .map(|i| server.worker_stats(i))
            .collect();
        let mut text = server.stats().to_prometheus(&workers);
        if let Some(broker) = broker {
            broker.metrics(&mut text);
        }
        ("200 OK", text)
    } else {
        ("404 Not Found", "metrics are at /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param("/ws?room=a%20b&x=1", "room").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param("/ws", "room"), None);
        assert_eq!(query_params("/ws?topic=a&topic=b", "topic"), ["a", "b"]);
    }

    #[test]
    fn node_ids_are_decimal_or_hex() {
        assert_eq!(parse_node_id("42"), Ok(42));
        assert_eq!(parse_node_id("0x2a"), Ok(42));
        assert!(parse_node_id("x").is_err());
    }
}
