//! [`RedisConfig`]: the broker's settings, checked once.

use std::time::Duration;

use crate::error::Error;

/// What an entry of the publish queue costs beyond its topic and payload: the queue slot,
/// the message's `Arc` and the topic's `Bytes` header, rounded up. Charged so that a flood
/// of empty messages is bounded too.
pub(super) const QUEUE_ENTRY_COST: usize = 128;

/// Settings of a [`RedisBroker`](super::RedisBroker). Build one with struct update syntax over
/// `RedisConfig::default()`; [`RedisBroker::connect`](super::RedisBroker::connect) checks them and names the field it
/// refuses.
///
/// ```
/// use std::time::Duration;
/// use ringcast::server::RedisConfig;
/// let config = RedisConfig {
///     channel_prefix: "chat:".into(),
///     reconnect_max: Duration::from_secs(2),
///     ..RedisConfig::default()
/// };
/// assert_eq!(config.publish_queue_bytes, 16 << 20);
/// assert_eq!(config.max_message, 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// This node's id in the envelopes. Default `None`: a random 64-bit number, drawn at
    /// [`connect`](super::RedisBroker::connect); two nodes with the same id would drop each
    /// other's messages, so set it only to make ids readable in logs, and keep them unique.
    pub node_id: Option<u64>,
    /// Put before each topic to make its Redis channel name. Default `ringcast:`, so the
    /// nodes' traffic is easy to tell from other users of the same Redis; nodes that
    /// should hear each other need the same prefix.
    pub channel_prefix: String,
    /// Bytes of publishes waiting for the publisher thread, at most: payloads, topics and
    /// 128 bytes per entry. Default 16 MiB: about 80 000 chat lines or 16 messages of 1 MiB,
    /// seconds of a busy node, so only a stalled Redis fills it. Past it, publishes are
    /// dropped and counted in [`RedisStats::publish_drops`](super::RedisStats::publish_drops) (workers never wait: a slow
    /// Redis must not slow local fan-out); [`RedisStats::publish_queued_bytes`](super::RedisStats::publish_queued_bytes) shows the
    /// fill.
    pub publish_queue_bytes: usize,
    /// The largest payload delivered from Redis, in bytes; larger envelopes are dropped and
    /// counted in [`RedisStats::oversized`](super::RedisStats::oversized), and this node sends none larger. Set it to the
    /// server's read limit ([`Upgrader::read_limit`](crate::Upgrader::read_limit)): a
    /// message a node would refuse from its own clients must not reach them through Redis
    /// either (the chat example passes its `--max-message`). Default 1 MiB, the engine's
    /// own default read limit.
    pub max_message: u64,
    /// The first wait before connecting again after a failed attempt. Default 100 ms.
    pub reconnect_min: Duration,
    /// The longest wait between two attempts (the wait doubles up to it, each one drawn
    /// between its half and its whole, so restarted nodes do not all knock at once).
    /// Default 5 s: a Redis back after a restart is found within seconds.
    pub reconnect_max: Duration,
    /// How long the subscriber thread blocks on its connection before it applies waiting
    /// subscribe and unsubscribe changes. Default 50 ms: a new room hears other nodes
    /// almost at once, and an idle node wakes 20 times a second.
    pub poll_interval: Duration,
    /// The bound on connecting and on each command's answer; past it the link counts as
    /// down. Default 2 s: far above a healthy Redis's answers, short enough to notice a
    /// dead one.
    pub io_timeout: Duration,
    /// Ping Redis on a connection that was quiet for this long, so a dead link is noticed
    /// before traffic needs it. Default 1 s.
    pub keepalive: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            node_id: None,
            channel_prefix: "ringcast:".into(),
            publish_queue_bytes: 16 << 20,
            max_message: 1 << 20,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            io_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(1),
        }
    }
}

impl RedisConfig {
    /// Checks the settings; the error names the field.
    pub(super) fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, why: &str| Err(Error::InvalidArgument(format!("{field}: {why}")));
        if self.publish_queue_bytes < QUEUE_ENTRY_COST {
            return bad(
                "publish_queue_bytes",
                "below 128, the cost of one queued publish",
            );
        }
        if self.max_message == 0 {
            return bad("max_message", "must be above 0");
        }
        if self.reconnect_min.is_zero() {
            return bad("reconnect_min", "must be above zero");
        }
        if self.reconnect_max < self.reconnect_min {
            return bad("reconnect_max", "below reconnect_min");
        }
        for (field, value) in [
            ("poll_interval", self.poll_interval),
            ("io_timeout", self.io_timeout),
            ("keepalive", self.keepalive),
        ] {
            if value.is_zero() {
                return bad(field, "must be above zero");
            }
        }
        Ok(())
    }
}
