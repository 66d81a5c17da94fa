//! What the broker and its two threads share ([`Link`]): the connection settings,
//! the counters, the outage bookkeeping, and the reconnect [`Backoff`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::RedisConfig;

/// Exponential backoff: `min`, doubling to `max`, each wait drawn between its half and
/// its whole.
#[derive(Debug)]
pub(super) struct Backoff {
    pub(super) min: Duration,
    pub(super) max: Duration,
    pub(super) next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next attempt.
    pub(super) fn next_wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Publisher,
    Subscriber,
}

impl Side {
    pub(super) fn name(self) -> &'static str {
        match self {
            Side::Publisher => "publisher",
            Side::Subscriber => "subscriber",
        }
    }
}

/// The outage bookkeeping, changed only when a link goes down or comes up.
#[derive(Debug, Default)]
pub(super) struct Outage {
    /// When the current outage began (the first link lost).
    pub(super) since: Option<Instant>,
    /// Publishes lost (drops and failures) when it began.
    pub(super) lost_at_start: u64,
    /// Both links have been up at least once.
    pub(super) ever_connected: bool,
    pub(super) last: Option<Duration>,
    pub(super) last_lost: u64,
}

/// What the broker and its two threads share.
pub(super) struct Link {
    pub(super) node_id: u64,
    pub(super) prefix: Vec<u8>,
    pub(super) config: RedisConfig,
    pub(super) client: redis::Client,
    /// The address, for logs (the URL may hold a password).
    pub(super) addr: String,
    pub(super) stop: AtomicBool,
    pub(super) publisher_up: AtomicBool,
    pub(super) subscriber_up: AtomicBool,
    pub(super) topics: AtomicUsize,
    pub(super) published: AtomicU64,
    pub(super) publish_drops: AtomicU64,
    /// Bytes in the publisher's queue, by `Queued::cost`.
    pub(super) queued_bytes: AtomicUsize,
    pub(super) publish_failures: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) skipped_own: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) oversized: AtomicU64,
    pub(super) undelivered: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) outage: Mutex<Outage>,
}

/// Why a thread left its connection.
pub(super) enum Ended {
    /// The broker was closed or dropped: the thread ends.
    Stopped,
    /// The connection failed: connect again.
    Failed(redis::RedisError),
}

impl Link {
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(super) fn lost(&self) -> u64 {
        self.publish_drops.load(Ordering::Relaxed) + self.publish_failures.load(Ordering::Relaxed)
    }

    pub(super) fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        // The bookkeeping is a few plain fields set together; a panic elsewhere leaves
        // them usable.
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn flag(&self, side: Side) -> &AtomicBool {
        match side {
            Side::Publisher => &self.publisher_up,
            Side::Subscriber => &self.subscriber_up,
        }
    }

    /// A connection, with every read and write bounded by the I/O timeout.
    pub(super) fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.config.io_timeout)?;
        con.set_read_timeout(Some(self.config.io_timeout))?;
        con.set_write_timeout(Some(self.config.io_timeout))?;
        Ok(con)
    }

    pub(super) fn channel(&self, topic: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(topic);
    }

    /// `side` is up; when both are, an outage ends (or the first connection is made).
    pub(super) fn link_up(&self, side: Side) {
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
    pub(super) fn link_down(&self, side: Side, err: &redis::RedisError) {
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
    pub(super) fn connect_failed(&self, side: Side, err: &redis::RedisError, first: bool) {
        if first {
            tracing::warn!(addr = %self.addr, link = side.name(), %err, "cannot reach redis; retrying with backoff");
        } else {
            tracing::debug!(addr = %self.addr, link = side.name(), %err, "cannot reach redis");
        }
    }
}
