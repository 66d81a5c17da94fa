//! [`RedisBroker`](super::RedisBroker): the [`Broker`] the engine calls on its worker threads; it only
//! hands work to its two threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::error::Error;
use crate::prepared::PreparedMessage;

use super::super::{Broker, ServerHandle};
use super::config::RedisConfig;
use super::link::{Link, Outage};
use super::publisher::{run_publisher, Outbound, Queued};
use super::stats::RedisStats;
use super::subscriber::{run_subscriber, Control};

/// A [`Broker`] over Redis pub/sub: this node's publishes go to Redis once, and what other
/// nodes publish on topics with local subscribers comes back through
/// [`ServerHandle::publish_local`]. Needs the cargo feature `redis`.
///
/// ```no_run
/// use ringcast::server::{Handler, RedisBroker, RedisConfig, Server, ServerConfig};
/// # struct Chat;
/// # impl Handler for Chat { type Data = (); }
/// let broker = RedisBroker::connect("redis://127.0.0.1:6379", RedisConfig::default())?;
/// let config = ServerConfig {
///     addr: Some("127.0.0.1:8080".parse().unwrap()),
///     broker: Some(broker.clone()),
///     ..ServerConfig::default()
/// };
/// // The engine attaches the broker when it starts and closes it when it has stopped.
/// let server = Server::new(config).start(|_| Chat)?;
/// server.wait();
/// # Ok::<(), ringcast::Error>(())
/// ```
pub struct RedisBroker {
    pub(super) link: Arc<Link>,
    pub(super) outbound: Sender<Queued>,
    pub(super) controls: Sender<Control>,
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisBroker {
    /// Starts the broker's two threads, which connect to the Redis at `url`
    /// (`redis://[:PASSWORD@]HOST:PORT[/DB]`). A Redis that cannot be reached now is not an
    /// error: it is logged, and the threads keep trying with backoff (publishes are dropped
    /// and counted until then). Errors: a malformed URL, or a [`RedisConfig`] field out of
    /// range.
    pub fn connect(url: &str, config: RedisConfig) -> Result<Arc<RedisBroker>, Error> {
        config.validate()?;
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidArgument(format!("redis url: {e}")))?;
        let addr = client.get_connection_info().addr().to_string();
        let node_id = config
            .node_id
            .unwrap_or_else(|| getrandom::u64().unwrap_or_else(|_| fastrand::u64(..)));
        // Bounded in bytes by `queued_bytes` (see `publish`), not in entries.
        let (outbound, outbound_rx) = crossbeam_channel::unbounded();
        // Subscription changes are rare and must not be lost: unbounded.
        let (controls, controls_rx) = crossbeam_channel::unbounded();
        let link = Arc::new(Link {
            node_id,
            prefix: config.channel_prefix.clone().into_bytes(),
            config,
            client,
            addr,
            stop: AtomicBool::new(false),
            publisher_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
            topics: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            publish_drops: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            publish_failures: AtomicU64::new(0),
            received: AtomicU64::new(0),
            skipped_own: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            outage: Mutex::new(Outage {
                since: Some(Instant::now()),
                ..Outage::default()
            }),
        });
        let publisher = {
            let link = link.clone();
            std::thread::Builder::new()
                .name("redis-publisher".into())
                .spawn(move || run_publisher(&link, &outbound_rx))?
        };
        let subscriber = {
            let link = link.clone();
            std::thread::Builder::new()
                .name("redis-subscriber".into())
                .spawn(move || run_subscriber(&link, &controls_rx))?
        };
        Ok(Arc::new(RedisBroker {
            link,
            outbound,
            controls,
            threads: Mutex::new(vec![publisher, subscriber]),
        }))
    }

    /// Delivers messages from other nodes to `server`'s subscribers from now on. The
    /// engine calls it (through [`Broker::attach`]) when `Server::start` returns; messages
    /// that arrive before are counted in [`RedisStats::undelivered`](super::RedisStats::undelivered).
    pub fn attach(&self, server: ServerHandle) {
        // The thread is gone only after close: nothing left to deliver then.
        let _ = self.controls.send(Control::Attach(server));
    }

    /// This node's id in the envelopes.
    pub fn node_id(&self) -> u64 {
        self.link.node_id
    }

    /// The counters, read now.
    pub fn stats(&self) -> RedisStats {
        let link = &self.link;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let outage = link.outage();
        let publisher_connected = link.publisher_up.load(Ordering::Relaxed);
        let subscriber_connected = link.subscriber_up.load(Ordering::Relaxed);
        RedisStats {
            node_id: link.node_id,
            connected: publisher_connected && subscriber_connected,
            publisher_connected,
            subscriber_connected,
            topics: link.topics.load(Ordering::Relaxed) as u64,
            reconnects: get(&link.reconnects),
            published: get(&link.published),
            publish_drops: get(&link.publish_drops),
            publish_queued_bytes: link.queued_bytes.load(Ordering::Relaxed) as u64,
            publish_failures: get(&link.publish_failures),
            received: get(&link.received),
            skipped_own: get(&link.skipped_own),
            malformed: get(&link.malformed),
            oversized: get(&link.oversized),
            undelivered: get(&link.undelivered),
            last_outage: outage.last,
            last_outage_lost: outage.last_lost,
            down_for: outage
                .since
                .filter(|_| outage.ever_connected)
                .map(|since| since.elapsed()),
        }
    }

    /// Stops both threads and waits for them: at most about
    /// [`io_timeout`](RedisConfig::io_timeout) (a command under way) plus the
    /// [`poll_interval`](RedisConfig::poll_interval). Publishes after this are dropped. Dropping the last `Arc` stops the threads too,
    /// without waiting; but a broker attached to a server is held by that server, so call
    /// this after [`ServerHandle::wait`] to end it before the process does.
    pub fn close(&self) {
        self.link.stop.store(true, Ordering::Relaxed);
        // A busy publisher looks at the flag after each batch; an idle one wakes for this.
        let _ = self.outbound.try_send(Queued::Wake);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            // A thread that panicked has printed why; the other still ends.
            let _ = thread.join();
        }
    }
}

impl Broker for RedisBroker {
    fn attach(&self, server: ServerHandle) {
        RedisBroker::attach(self, server);
    }

    fn detach(&self) {
        self.close();
    }

    fn metrics(&self, out: &mut String) {
        out.push_str(&self.stats().to_prometheus());
    }

    fn subscribe(&self, topic: &[u8]) {
        let _ = self
            .controls
            .send(Control::Subscribe(Bytes::copy_from_slice(topic)));
    }

    fn unsubscribe(&self, topic: &[u8]) {
        let _ = self
            .controls
            .send(Control::Unsubscribe(Bytes::copy_from_slice(topic)));
    }

    fn publish(&self, topic: &[u8], message: &Arc<PreparedMessage>) {
        let link = &self.link;
        // While the link is down, queueing would only delay the drop. What other nodes
        // would refuse (control messages, payloads over the limit) is not sent at all.
        if !link.publisher_up.load(Ordering::Relaxed)
            || link.stopped()
            || message.message_type().is_control()
            || message.payload().len() as u64 > link.config.max_message
        {
            link.publish_drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let publish = Outbound {
            topic: Bytes::copy_from_slice(topic),
            message: message.clone(),
        };
        // Reserve its bytes first: publishers on several threads cannot overshoot together.
        let cost = publish.cost();
        let before = link.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        if before + cost > link.config.publish_queue_bytes {
            link.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            link.publish_drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(refused) = self.outbound.try_send(Queued::Publish(publish)) {
            // Only after close: the publisher thread is gone.
            if let Queued::Publish(publish) = refused.into_inner() {
                link.dequeued(&publish);
            }
            link.publish_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // The threads see their channels close too; the flag makes them quicker about it.
        self.link.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("addr", &self.link.addr)
            .field("node_id", &format_args!("{:016x}", self.link.node_id))
            .finish_non_exhaustive()
    }
}
