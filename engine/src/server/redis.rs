//! [`RedisBroker`]: several nodes share their publishes through Redis pub/sub (cargo
//! feature `redis`). It is a [`Broker`]: the engine calls it on worker threads, and it only
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
//!   [`ServerHandle::publish_local`]. Its reads time out every
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
//! the `redis` crate's blocking client; it never touches a worker's state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::error::Error;
use crate::prepared::PreparedMessage;

use super::{Broker, ServerHandle};

mod envelope;
mod stats;

pub use envelope::{decode_envelope, encode_envelope, Envelope, EnvelopeError};
pub use stats::RedisStats;

/// The most publishes sent to Redis in one pipelined write.
const MAX_BATCH: usize = 256;
/// The most payload bytes in one pipelined write (a single larger message goes alone):
/// the pipeline copies every envelope, so a batch of large messages must not multiply
/// the node's memory.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// What an entry of the publish queue costs beyond its topic and payload: the queue slot,
/// the message's `Arc` and the topic's `Bytes` header, rounded up. Charged so that a flood
/// of empty messages is bounded too.
const QUEUE_ENTRY_COST: usize = 128;

/// Settings of a [`RedisBroker`]. Build one with struct update syntax over
/// `RedisConfig::default()`; [`RedisBroker::connect`] checks them and names the field it
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
    /// [`connect`](RedisBroker::connect); two nodes with the same id would drop each
    /// other's messages, so set it only to make ids readable in logs, and keep them unique.
    pub node_id: Option<u64>,
    /// Put before each topic to make its Redis channel name. Default `ringcast:`, so the
    /// nodes' traffic is easy to tell from other users of the same Redis; nodes that
    /// should hear each other need the same prefix.
    pub channel_prefix: String,
    /// Bytes of publishes waiting for the publisher thread, at most: payloads, topics and
    /// 128 bytes per entry. Default 16 MiB: about 80 000 chat lines or 16 messages of 1 MiB,
    /// seconds of a busy node, so only a stalled Redis fills it. Past it, publishes are
    /// dropped and counted in [`RedisStats::publish_drops`] (workers never wait: a slow
    /// Redis must not slow local fan-out); [`RedisStats::publish_queued_bytes`] shows the
    /// fill.
    pub publish_queue_bytes: usize,
    /// The largest payload delivered from Redis, in bytes; larger envelopes are dropped and
    /// counted in [`RedisStats::oversized`], and this node sends none larger. Set it to the
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
    fn validate(&self) -> Result<(), Error> {
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

/// Exponential backoff: `min`, doubling to `max`, each wait drawn between its half and
/// its whole.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next attempt.
    fn next_wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Publisher,
    Subscriber,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Publisher => "publisher",
            Side::Subscriber => "subscriber",
        }
    }
}

/// The outage bookkeeping, changed only when a link goes down or comes up.
#[derive(Debug, Default)]
struct Outage {
    /// When the current outage began (the first link lost).
    since: Option<Instant>,
    /// Publishes lost (drops and failures) when it began.
    lost_at_start: u64,
    /// Both links have been up at least once.
    ever_connected: bool,
    last: Option<Duration>,
    last_lost: u64,
}

/// What the broker and its two threads share.
struct Link {
    node_id: u64,
    prefix: Vec<u8>,
    config: RedisConfig,
    client: redis::Client,
    /// The address, for logs (the URL may hold a password).
    addr: String,
    stop: AtomicBool,
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    topics: AtomicUsize,
    published: AtomicU64,
    publish_drops: AtomicU64,
    /// Bytes in the publisher's queue, by [`Queued::cost`].
    queued_bytes: AtomicUsize,
    publish_failures: AtomicU64,
    received: AtomicU64,
    skipped_own: AtomicU64,
    malformed: AtomicU64,
    oversized: AtomicU64,
    undelivered: AtomicU64,
    reconnects: AtomicU64,
    outage: Mutex<Outage>,
}

/// Why a thread left its connection.
enum Ended {
    /// The broker was closed or dropped: the thread ends.
    Stopped,
    /// The connection failed: connect again.
    Failed(redis::RedisError),
}

impl Link {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn lost(&self) -> u64 {
        self.publish_drops.load(Ordering::Relaxed) + self.publish_failures.load(Ordering::Relaxed)
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        // The bookkeeping is a few plain fields set together; a panic elsewhere leaves
        // them usable.
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flag(&self, side: Side) -> &AtomicBool {
        match side {
            Side::Publisher => &self.publisher_up,
            Side::Subscriber => &self.subscriber_up,
        }
    }

    /// A connection, with every read and write bounded by the I/O timeout.
    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.config.io_timeout)?;
        con.set_read_timeout(Some(self.config.io_timeout))?;
        con.set_write_timeout(Some(self.config.io_timeout))?;
        Ok(con)
    }

    fn channel(&self, topic: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(topic);
    }

    /// `side` is up; when both are, an outage ends (or the first connection is made).
    fn link_up(&self, side: Side) {
        let mut outage = self.outage();
        self.flag(side).store(true, Ordering::Relaxed);
        if !(self.publisher_up.load(Ordering::Relaxed)
            && self.subscriber_up.load(Ordering::Relaxed))
        {
            return;
        }
        let since = outage.since.take();
        if !outage.ever_connected {
            outage.ever_connected = true;
            tracing::info!(
                addr = %self.addr,
                node = %format_args!("{:016x}", self.node_id),
                "redis broker connected"
            );
            return;
        }
        let Some(since) = since else {
            return;
        };
        let lasted = since.elapsed();
        let lost = self.lost().saturating_sub(outage.lost_at_start);
        outage.last = Some(lasted);
        outage.last_lost = lost;
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            addr = %self.addr,
            outage_ms = lasted.as_millis() as u64,
            publishes_lost = lost,
            "redis link back after {lasted:.1?}: {lost} publishes of this node were not sent, \
             and what other nodes published meanwhile did not reach this node"
        );
    }

    /// `side` went down with `err`; the first link lost starts an outage.
    fn link_down(&self, side: Side, err: &redis::RedisError) {
        let mut outage = self.outage();
        self.flag(side).store(false, Ordering::Relaxed);
        if outage.since.is_some() || !outage.ever_connected {
            tracing::debug!(link = side.name(), %err, "redis link down");
            return;
        }
        outage.since = Some(Instant::now());
        outage.lost_at_start = self.lost();
        tracing::warn!(
            addr = %self.addr,
            link = side.name(),
            %err,
            "redis link lost: local fan-out goes on, publishes are dropped until it is back; reconnecting"
        );
    }

    /// A connection attempt failed: said once per run of failures, then quietly.
    fn connect_failed(&self, side: Side, err: &redis::RedisError, first: bool) {
        if first {
            tracing::warn!(addr = %self.addr, link = side.name(), %err, "cannot reach redis; retrying with backoff");
        } else {
            tracing::debug!(addr = %self.addr, link = side.name(), %err, "cannot reach redis");
        }
    }
}

/// What waits in the publisher thread's queue.
enum Queued {
    /// A publish of this node.
    Publish(Outbound),
    /// Nothing to send: look at the stop flag now (sent by `close`).
    Wake,
}

/// A publish of this node on its way to Redis.
struct Outbound {
    topic: Bytes,
    message: Arc<PreparedMessage>,
}

impl Outbound {
    /// The bytes it holds in the queue.
    fn cost(&self) -> usize {
        QUEUE_ENTRY_COST + self.topic.len() + self.message.payload().len()
    }
}

impl Link {
    /// Takes `publish` out of the queue's byte count.
    fn dequeued(&self, publish: &Outbound) -> usize {
        let cost = publish.cost();
        self.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
        cost
    }
}

/// What the engine and the application tell the subscriber thread.
enum Control {
    Subscribe(Bytes),
    Unsubscribe(Bytes),
    Attach(ServerHandle),
}

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
    link: Arc<Link>,
    outbound: Sender<Queued>,
    controls: Sender<Control>,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
    /// that arrive before are counted in [`RedisStats::undelivered`].
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

/// The publisher thread: connect, send batches until the connection fails, wait, again.
fn run_publisher(link: &Link, queue: &Receiver<Queued>) {
    let mut backoff = Backoff::new(link.config.reconnect_min, link.config.reconnect_max);
    let mut first_failure = true;
    loop {
        if link.stopped() {
            return;
        }
        let mut con = match link.connect() {
            Ok(con) => con,
            Err(err) => {
                link.connect_failed(Side::Publisher, &err, first_failure);
                first_failure = false;
                if !drop_while_waiting(link, queue, backoff.next_wait()) {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        first_failure = true;
        link.link_up(Side::Publisher);
        match serve_publisher(link, &mut con, queue) {
            Ended::Stopped => return,
            Ended::Failed(err) => link.link_down(Side::Publisher, &err),
        }
    }
}

/// Waits `wait` before the next connection attempt, dropping (and counting) publishes
/// that were queued before the link was seen down. `false`: stop the thread.
fn drop_while_waiting(link: &Link, queue: &Receiver<Queued>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if link.stopped() {
            return false;
        }
        // `close` wakes this wait with a `Wake`; the keepalive bounds it all the same.
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(link.config.keepalive);
        match queue.recv_timeout(slice) {
            Ok(Queued::Publish(publish)) => {
                link.dequeued(&publish);
                link.publish_drops.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Queued::Wake) => {}
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => return true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Sends queued publishes in pipelined batches; pings when idle for the keepalive.
fn serve_publisher(link: &Link, con: &mut redis::Connection, queue: &Receiver<Queued>) -> Ended {
    let mut batch: Vec<Outbound> = Vec::with_capacity(MAX_BATCH);
    let (mut channel, mut envelope) = (Vec::new(), Vec::new());
    loop {
        let mut batch_bytes = 0;
        match queue.recv_timeout(link.config.keepalive) {
            Ok(Queued::Publish(publish)) => {
                batch_bytes += link.dequeued(&publish);
                batch.push(publish);
            }
            Ok(Queued::Wake) => {
                if link.stopped() {
                    return Ended::Stopped;
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                if link.stopped() {
                    return Ended::Stopped;
                }
                if let Err(err) = redis::cmd("PING").exec(con) {
                    return Ended::Failed(err);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
        }
        while batch.len() < MAX_BATCH && batch_bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(Queued::Publish(publish)) => {
                    batch_bytes += link.dequeued(&publish);
                    batch.push(publish);
                }
                // The stop flag is looked at after this batch.
                Ok(Queued::Wake) => {}
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let mut pipe = redis::pipe();
        for Outbound { topic, message } in &batch {
            link.channel(topic, &mut channel);
            envelope.clear();
            encode_envelope(
                link.node_id,
                message.message_type(),
                message.payload(),
                &mut envelope,
            );
            // The pipeline copies its arguments, so the two buffers are reused.
            pipe.cmd("PUBLISH")
                .arg(&channel[..])
                .arg(&envelope[..])
                .ignore();
        }
        let count = batch.len() as u64;
        batch.clear();
        // Counted first, so whoever sees a message arrive sees it counted.
        link.published.fetch_add(count, Ordering::Relaxed);
        if let Err(err) = pipe.exec(con) {
            link.published.fetch_sub(count, Ordering::Relaxed);
            link.publish_failures.fetch_add(count, Ordering::Relaxed);
            return Ended::Failed(err);
        }
        if link.stopped() {
            return Ended::Stopped;
        }
    }
}

/// What the subscriber thread keeps across connections.
struct Subscriber {
    /// Topics with local subscribers: subscribed on every new connection.
    wanted: HashSet<Bytes>,
    server: Option<ServerHandle>,
    /// `wanted` changed since the connection last followed it.
    dirty: bool,
}

impl Subscriber {
    /// Takes every waiting control message. `false`: the broker is gone.
    fn absorb(&mut self, link: &Link, controls: &Receiver<Control>) -> bool {
        loop {
            match controls.try_recv() {
                Ok(control) => self.apply(link, control),
                Err(TryRecvError::Empty) => return !link.stopped(),
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, link: &Link, control: Control) {
        match control {
            Control::Subscribe(topic) => {
                self.wanted.insert(topic);
                self.dirty = true;
            }
            Control::Unsubscribe(topic) => {
                self.wanted.remove(&topic);
                self.dirty = true;
            }
            Control::Attach(server) => self.server = Some(server),
        }
        link.topics.store(self.wanted.len(), Ordering::Relaxed);
    }

    /// Delivers one message from Redis to this node's subscribers.
    fn deliver(&mut self, link: &Link, message: &redis::Msg) {
        // The channel is the prefix and the topic.
        let Some(mut topic) = message
            .get_channel::<Vec<u8>>()
            .ok()
            .filter(|channel| channel.starts_with(&link.prefix))
        else {
            link.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        topic.drain(..link.prefix.len());
        let envelope = match decode_envelope(message.get_payload_bytes(), link.config.max_message) {
            Ok(envelope) => envelope,
            Err(err) => {
                let counter = match err {
                    EnvelopeError::TooLarge { .. } => &link.oversized,
                    _ => &link.malformed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%err, "dropped a message from redis");
                return;
            }
        };
        if envelope.node_id == link.node_id {
            link.skipped_own.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(server) = &self.server else {
            link.undelivered.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let prepared = match PreparedMessage::new(
            envelope.message_type,
            Bytes::copy_from_slice(envelope.payload),
        ) {
            Ok(prepared) => prepared,
            Err(_) => {
                link.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // Counted first, so whoever sees the message delivered sees it counted.
        link.received.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = server.publish_local(&topic, Arc::new(prepared)) {
            link.received.fetch_sub(1, Ordering::Relaxed);
            if let Error::Io(_) | Error::QueueFull { .. } = err {
                // A worker (or the whole server) stopped, or a worker's command queue was
                // full (then no worker got it; the engine counts the refusal too).
                link.undelivered.fetch_add(1, Ordering::Relaxed);
            } else {
                // A topic longer than the engine takes.
                link.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The subscriber thread: connect, subscribe to every wanted topic, deliver until the
/// connection fails, wait, again.
fn run_subscriber(link: &Link, controls: &Receiver<Control>) {
    let mut state = Subscriber {
        wanted: HashSet::new(),
        server: None,
        dirty: false,
    };
    let mut backoff = Backoff::new(link.config.reconnect_min, link.config.reconnect_max);
    let mut first_failure = true;
    loop {
        if !state.absorb(link, controls) {
            return;
        }
        let mut con = match link.connect() {
            Ok(con) => con,
            Err(err) => {
                link.connect_failed(Side::Subscriber, &err, first_failure);
                first_failure = false;
                if !absorb_while_waiting(link, controls, &mut state, backoff.next_wait()) {
                    return;
                }
                continue;
            }
        };
        first_failure = true;
        match serve_subscriber(link, &mut con, controls, &mut state, &mut backoff) {
            Ended::Stopped => return,
            Ended::Failed(err) => link.link_down(Side::Subscriber, &err),
        }
    }
}

/// Waits `wait`, keeping up with subscription changes. `false`: stop the thread.
fn absorb_while_waiting(
    link: &Link,
    controls: &Receiver<Control>,
    state: &mut Subscriber,
    wait: Duration,
) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if link.stopped() {
            return false;
        }
        // Look at the stop flag as often as a connected subscriber does.
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(link.config.poll_interval);
        match controls.recv_timeout(slice) {
            Ok(control) => state.apply(link, control),
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => return true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Holds one pub/sub connection: subscribes, follows changes, delivers, pings when quiet.
fn serve_subscriber(
    link: &Link,
    con: &mut redis::Connection,
    controls: &Receiver<Control>,
    state: &mut Subscriber,
    backoff: &mut Backoff,
) -> Ended {
    let mut pubsub = con.as_pubsub();
    // Nothing is subscribed on a new connection.
    let mut subscribed: HashSet<Bytes> = HashSet::new();
    if let Err(err) = follow(link, &mut pubsub, &state.wanted, &mut subscribed) {
        return Ended::Failed(err);
    }
    state.dirty = false;
    link.link_up(Side::Subscriber);
    backoff.reset();
    let mut quiet_since = Instant::now();
    loop {
        if !state.absorb(link, controls) {
            return Ended::Stopped;
        }
        if state.dirty {
            state.dirty = false;
            if let Err(err) = follow(link, &mut pubsub, &state.wanted, &mut subscribed) {
                return Ended::Failed(err);
            }
        }
        match pubsub.get_message() {
            Ok(message) => {
                quiet_since = Instant::now();
                state.deliver(link, &message);
            }
            Err(err) if err.is_timeout() => {
                if quiet_since.elapsed() >= link.config.keepalive {
                    let pong = with_io_timeout(link, &mut pubsub, |p| p.ping::<redis::Value>());
                    if let Err(err) = pong {
                        return Ended::Failed(err);
                    }
                    quiet_since = Instant::now();
                }
            }
            Err(err) => return Ended::Failed(err),
        }
    }
}

/// The most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const MAX_CHANNELS_PER_COMMAND: usize = 1024;

/// Makes the connection's subscriptions those of `wanted`: subscribes to the new topics'
/// channels and unsubscribes from the old ones, in commands of many channels each.
fn follow(
    link: &Link,
    pubsub: &mut redis::PubSub<'_>,
    wanted: &HashSet<Bytes>,
    subscribed: &mut HashSet<Bytes>,
) -> redis::RedisResult<()> {
    let channels = |topics: Vec<&Bytes>| -> Vec<Vec<u8>> {
        topics
            .into_iter()
            .map(|topic| {
                let mut channel = Vec::new();
                link.channel(topic, &mut channel);
                channel
            })
            .collect()
    };
    let add = channels(wanted.difference(subscribed).collect());
    let remove = channels(subscribed.difference(wanted).collect());
    with_io_timeout(link, pubsub, |pubsub| {
        for chunk in add.chunks(MAX_CHANNELS_PER_COMMAND) {
            pubsub.subscribe(chunk)?;
        }
        for chunk in remove.chunks(MAX_CHANNELS_PER_COMMAND) {
            pubsub.unsubscribe(chunk)?;
        }
        Ok(())
    })?;
    subscribed.clone_from(wanted);
    Ok(())
}

/// Runs `command` on the pub/sub connection with the I/O timeout for its answer, then
/// puts back the poll interval, which bounds the waits for messages.
fn with_io_timeout<T>(
    link: &Link,
    pubsub: &mut redis::PubSub<'_>,
    command: impl FnOnce(&mut redis::PubSub<'_>) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    pubsub.set_read_timeout(Some(link.config.io_timeout))?;
    let result = command(pubsub);
    pubsub.set_read_timeout(Some(link.config.poll_interval))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
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
