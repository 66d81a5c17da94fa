//! [`RedisStats`]: the counters of a [`RedisBroker`](super::RedisBroker) and their
//! Prometheus text.

use std::time::Duration;

/// The counters of a [`RedisBroker`](super::RedisBroker), as
/// [`RedisBroker::stats`](super::RedisBroker::stats) returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// This node's id in the envelopes.
    pub node_id: u64,
    /// Both links are up: the publisher's connection and the subscriber's (subscribed to
    /// every topic with local subscribers).
    pub connected: bool,
    /// The publisher's connection is up (as of its last command or ping).
    pub publisher_connected: bool,
    /// The subscriber's connection is up and subscribed.
    pub subscriber_connected: bool,
    /// Topics with local subscribers, so subscribed on Redis while connected.
    pub topics: u64,
    /// Outages that ended: both links were up, one went down, and both are back.
    pub reconnects: u64,
    /// Messages of this node sent to Redis.
    pub published: u64,
    /// Messages of this node not sent: the publisher's link was down, its queue was full
    /// ([`publish_queue_bytes`](super::RedisConfig::publish_queue_bytes)), or the message
    /// is one other nodes would refuse (a control message, or over
    /// [`max_message`](super::RedisConfig::max_message)).
    pub publish_drops: u64,
    /// Bytes waiting in the publisher's queue now (payloads, topics and a fixed cost per
    /// entry), at most [`publish_queue_bytes`](super::RedisConfig::publish_queue_bytes).
    pub publish_queued_bytes: u64,
    /// Messages of this node handed to a connection that then failed (lost with it).
    pub publish_failures: u64,
    /// Messages from other nodes delivered to this node's subscribers.
    pub received: u64,
    /// Messages of this node that Redis sent back, skipped (already delivered locally).
    pub skipped_own: u64,
    /// Messages on a subscribed channel that are not a well-formed envelope of a data
    /// message (another program publishing there, an unknown version, a close, ping or
    /// pong, text that is not UTF-8), dropped.
    pub malformed: u64,
    /// Envelopes whose payload exceeds [`max_message`](super::RedisConfig::max_message),
    /// dropped.
    pub oversized: u64,
    /// Messages from other nodes that did not reach every worker: they came before
    /// [`attach`](super::RedisBroker::attach), or after the server (or one of its workers)
    /// stopped.
    pub undelivered: u64,
    /// How long the last outage that ended lasted (from the first link lost to both
    /// back). Messages other nodes published in that window did not reach this node.
    pub last_outage: Option<Duration>,
    /// This node's publishes lost in the last outage that ended (drops and failures).
    pub last_outage_lost: u64,
    /// How long the outage going on now has lasted; `None` while connected (and before
    /// the first connection).
    pub down_for: Option<Duration>,
}

impl RedisStats {
    /// The figures in the Prometheus text format, every name prefixed with
    /// `ringcast_redis_`, to serve next to [`Stats::to_prometheus`](crate::server::Stats::to_prometheus).
    ///
    /// ```
    /// use ringcast::server::RedisStats;
    /// let text = RedisStats::default().to_prometheus();
    /// assert!(text.contains("ringcast_redis_connected 0\n"));
    /// assert!(text.contains("ringcast_redis_publish_drops_total 0\n"));
    /// assert!(text.contains("ringcast_redis_oversized_total 0\n"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let seconds = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let figures: [(&str, &str, &str, String); 17] = [
            (
                "connected",
                "gauge",
                "1 when the publisher and the subscriber links are both up.",
                u64::from(self.connected).to_string(),
            ),
            (
                "publisher_connected",
                "gauge",
                "1 when the publisher link is up.",
                u64::from(self.publisher_connected).to_string(),
            ),
            (
                "subscriber_connected",
                "gauge",
                "1 when the subscriber link is up and subscribed.",
                u64::from(self.subscriber_connected).to_string(),
            ),
            (
                "topics",
                "gauge",
                "Topics with local subscribers.",
                self.topics.to_string(),
            ),
            (
                "reconnects_total",
                "counter",
                "Outages that ended.",
                self.reconnects.to_string(),
            ),
            (
                "published_total",
                "counter",
                "Messages of this node sent to Redis.",
                self.published.to_string(),
            ),
            (
                "publish_drops_total",
                "counter",
                "Messages of this node not sent: link down, queue full, or refused by other nodes.",
                self.publish_drops.to_string(),
            ),
            (
                "publish_queued_bytes",
                "gauge",
                "Bytes waiting in the publisher's queue.",
                self.publish_queued_bytes.to_string(),
            ),
            (
                "publish_failures_total",
                "counter",
                "Messages of this node lost with a failing connection.",
                self.publish_failures.to_string(),
            ),
            (
                "received_total",
                "counter",
                "Messages from other nodes delivered locally.",
                self.received.to_string(),
            ),
            (
                "skipped_own_total",
                "counter",
                "Messages of this node sent back by Redis, skipped.",
                self.skipped_own.to_string(),
            ),
            (
                "malformed_total",
                "counter",
                "Messages on a subscribed channel that are not an envelope of a data message.",
                self.malformed.to_string(),
            ),
            (
                "oversized_total",
                "counter",
                "Envelopes over the message limit, dropped.",
                self.oversized.to_string(),
            ),
            (
                "undelivered_total",
                "counter",
                "Messages from other nodes that did not reach every worker.",
                self.undelivered.to_string(),
            ),
            (
                "last_outage_seconds",
                "gauge",
                "Length of the last outage that ended.",
                seconds(self.last_outage).to_string(),
            ),
            (
                "last_outage_lost",
                "gauge",
                "Publishes of this node lost in the last outage that ended.",
                self.last_outage_lost.to_string(),
            ),
            (
                "down_seconds",
                "gauge",
                "Length of the outage going on now (0 when connected).",
                seconds(self.down_for).to_string(),
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (name, kind, help, value) in figures {
            let _ = writeln!(out, "# HELP ringcast_redis_{name} {help}");
            let _ = writeln!(out, "# TYPE ringcast_redis_{name} {kind}");
            let _ = writeln!(out, "ringcast_redis_{name} {value}");
        }
        out
    }
}
