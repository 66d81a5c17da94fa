//! [`RedisBroker`]: several nodes share their publishes through Redis pub/sub (cargo
//! feature `redis`). It is a [`Broker`](super::Broker): the engine calls it on worker threads, and it only
//! hands work over to its own two threads, so a worker never waits on Redis.
//!
//! - The publisher thread takes this node's publishes from a queue bounded in bytes
//!   ([`publish_queue_bytes`](RedisConfig::publish_queue_bytes); a publish that does not
//!   fit is dropped and counted, so workers never wait) and sends them with `PUBLISH`, in
//!   batches, on one connection: messages from one publishing thread keep their order on
//!   every node.
//! - The subscriber thread holds a dedicated pub/sub connection, subscribed to the channels
//!   of the topics that have local subscribers (the engine reports the first and the last
//!   one), and delivers what other nodes publish with
//!   [`ServerHandle::publish_local`](super::ServerHandle::publish_local). Its reads time out every
//!   [`poll_interval`](RedisConfig::poll_interval) to apply subscription changes.
//! - Each message travels in an [envelope](encode_envelope) that names the node that
//!   published it, so a node skips its own messages when Redis sends them back.
//! - What comes from Redis is untrusted input: anyone who may `PUBLISH` there writes to
//!   the channels. Only envelopes of data messages (text, binary) up to
//!   [`max_message`](RedisConfig::max_message) bytes are delivered; the rest is dropped
//!   and counted ([`RedisStats::malformed`], [`RedisStats::oversized`]).
//! - When Redis goes away, local fan-out goes on; publishes meanwhile are dropped and
//!   counted, both threads reconnect with exponential backoff, the subscriber subscribes
//!   again to every topic with local subscribers, and the outage (its length, the
//!   publishes lost) is logged and kept in [`RedisStats`].
//!
//! This module may use the public side of the engine (the handle, prepared messages) and

mod broker;
mod config;
mod envelope;
mod link;
mod publisher;
mod stats;
mod subscriber;

pub use broker::RedisBroker;
pub use config::RedisConfig;
pub use envelope::{decode_envelope, encode_envelope, Envelope, EnvelopeError};
pub use stats::RedisStats;

#[cfg(test)]
mod tests {
    use super::super::Broker;
    use std::sync::Arc;
    use std::time::Duration;

    use super::config::QUEUE_ENTRY_COST;
    use super::link::Backoff;
    use super::*;
    use crate::error::Error;
    use crate::prepared::PreparedMessage;
    use crate::proto::MessageType;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_each_step() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = Backoff::new(min, max);
        let mut ceiling = min;
        for _ in 0..12 {
            let wait = backoff.next_wait();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} within {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(max);
        }
        assert_eq!(ceiling, max);
        backoff.reset();
        assert!(backoff.next_wait() <= min);
    }

    #[test]
    fn config_refusal_names_the_field() {
        let config = RedisConfig {
            reconnect_max: Duration::from_millis(10),
            ..RedisConfig::default()
        };
        match RedisBroker::connect("redis://127.0.0.1:1", config) {
            Err(Error::InvalidArgument(message)) => assert!(message.starts_with("reconnect_max")),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        for (field, config) in [
            (
                "max_message",
                RedisConfig {
                    max_message: 0,
                    ..RedisConfig::default()
                },
            ),
            (
                "publish_queue_bytes",
                RedisConfig {
                    publish_queue_bytes: QUEUE_ENTRY_COST - 1,
                    ..RedisConfig::default()
                },
            ),
        ] {
            match RedisBroker::connect("redis://127.0.0.1:1", config) {
                Err(Error::InvalidArgument(message)) => assert!(message.starts_with(field)),
                other => panic!("expected InvalidArgument for {field}, got {other:?}"),
            }
        }
        // Not a Redis URL; TLS is not built in (no TLS feature of the redis crate).
        for url in ["http://127.0.0.1:1", "rediss://127.0.0.1:1"] {
            match RedisBroker::connect(url, RedisConfig::default()) {
                Err(Error::InvalidArgument(message)) => assert!(message.starts_with("redis url")),
                other => panic!("expected InvalidArgument for {url}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unreachable_redis_is_not_an_error_and_publishes_are_counted_as_dropped() {
        // Port 1 on loopback: nothing listens, connections are refused at once.
        let config = RedisConfig {
            node_id: Some(42),
            ..RedisConfig::default()
        };
        let broker = RedisBroker::connect("redis://127.0.0.1:1", config).expect("a broker");
        let message = Arc::new(PreparedMessage::new(MessageType::Text, "lost").expect("text"));
        broker.subscribe(b"room");
        broker.publish(b"room", &message);
        let stats = broker.stats();
        assert_eq!(stats.node_id, 42);
        assert!(!stats.connected);
        assert_eq!(stats.publish_drops, 1);
        assert_eq!(stats.down_for, None, "never connected: no outage yet");
        broker.close();
    }
}
