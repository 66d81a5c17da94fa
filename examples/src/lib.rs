//! Shared bits of the example programs.

use std::sync::Arc;

use ringcast::server::{RedisBroker, RedisConfig, ServerHandle};

/// The Redis broker asked for on the command line (`--redis URL`, `--node-id ID`), or
/// `None` for a single node. A Redis that is down now is no error: the broker logs it
/// and keeps trying.
pub fn redis_broker(
    url: Option<&str>,
    node_id: Option<u64>,
) -> Result<Option<Arc<RedisBroker>>, ringcast::Error> {
    let Some(url) = url else {
        return Ok(None);
    };
    let config = RedisConfig {
        node_id,
        ..RedisConfig::default()
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

/// The keep-alive settings of a blocking peer, as the seed's examples set them: ping
/// every `ping_interval_ms`, give up on a peer silent for `pong_wait_ms`, bound each
/// write by `write_wait_ms`. Flatten it into a program's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Keepalive {
    /// How often to ping the peer, in milliseconds (the seed's pingPeriod).
    #[arg(long, default_value_t = 54_000)]
    pub ping_interval_ms: u64,
    /// How long the peer may stay silent (no message, no pong) before the connection is
    /// given up, in milliseconds; longer than the ping interval (the seed's pongWait).
    #[arg(long, default_value_t = 60_000)]
    pub pong_wait_ms: u64,
    /// How long one write may take, in milliseconds (the seed's writeWait).
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
