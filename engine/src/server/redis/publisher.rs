//! The publisher thread: this node's publishes, from a queue bounded in bytes, sent to
//! Redis with `PUBLISH` in pipelined batches on one connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::prepared::PreparedMessage;

use super::config::QUEUE_ENTRY_COST;
use super::envelope::encode_envelope;
use super::link::{Backoff, Ended, Link, Side};

/// The most publishes sent to Redis in one pipelined write.
pub(super) const MAX_BATCH: usize = 256;
/// The most payload bytes in one pipelined write (a single larger message goes alone):
/// the pipeline copies every envelope, so a batch of large messages must not multiply
/// the node's memory.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;

/// What waits in the publisher thread's queue.
pub(super) enum Queued {
    /// A publish of this node.
    Publish(Outbound),
    /// Nothing to send: look at the stop flag now (sent by `close`).
    Wake,
}

/// A publish of this node on its way to Redis.
pub(super) struct Outbound {
    pub(super) topic: Bytes,
    pub(super) message: Arc<PreparedMessage>,
}

impl Outbound {
    /// The bytes it holds in the queue.
    pub(super) fn cost(&self) -> usize {
        QUEUE_ENTRY_COST + self.topic.len() + self.message.payload().len()
    }
}

impl Link {
    /// Takes `publish` out of the queue's byte count.
    pub(super) fn dequeued(&self, publish: &Outbound) -> usize {
        let cost = publish.cost();
        self.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
        cost
    }
}

/// The publisher thread: connect, send batches until the connection fails, wait, again.
pub(super) fn run_publisher(link: &Link, queue: &Receiver<Queued>) {
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
pub(super) fn drop_while_waiting(link: &Link, queue: &Receiver<Queued>, wait: Duration) -> bool {
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
pub(super) fn serve_publisher(
    link: &Link,
    con: &mut redis::Connection,
    queue: &Receiver<Queued>,
) -> Ended {
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
