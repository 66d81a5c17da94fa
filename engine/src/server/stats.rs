//! Counters: each worker counts in plain integers on its own thread and publishes them to
//! shared atomics once per loop turn, so the hot path pays no atomic operation per event.
//! [`ServerHandle::stats`](super::ServerHandle::stats) sums the workers into a [`Stats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter or gauge of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    /// Gauge: open WebSocket connections (handshake done).
    Connections,
    /// Gauge: sockets in the slab (handshaking, open or closing).
    Sockets,
    /// Gauge: bytes queued for sending, all connections together.
    QueuedBytes,
    Accepted,
    AcceptErrors,
    /// Accepted sockets closed at once because the worker was at its connection cap.
    Rejected,
    HandshakesOk,
    HandshakesFailed,
    HttpRequests,
    MessagesIn,
    BytesIn,
    MessagesOut,
    BytesOut,
    Publishes,
    Deliveries,
    Drops,
    ClosedByPeer,
    ClosedByServer,
    ClosedProtocolError,
    ClosedSlowConsumer,
    ClosedIdle,
    ClosedHandshakeTimeout,
    ClosedShutdown,
    ClosedAbnormal,
    DialsOk,
    DialsFailed,
}

const COUNTERS: usize = Counter::DialsFailed as usize + 1;

/// A worker's own counters (not shared).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: [u64; COUNTERS],
}

impl Counters {
    pub(crate) fn add(&mut self, counter: Counter, n: u64) {
        self.values[counter as usize] += n;
    }

    pub(crate) fn incr(&mut self, counter: Counter) {
        self.add(counter, 1);
    }

    pub(crate) fn sub(&mut self, counter: Counter, n: u64) {
        let v = &mut self.values[counter as usize];
        *v = v.saturating_sub(n);
    }

    #[cfg(test)]
    pub(crate) fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }
}

/// A worker's counters as other threads read them.
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    values: [AtomicU64; COUNTERS],
}

impl SharedCounters {
    /// Copies the worker's counters (once per loop turn).
    pub(crate) fn publish(&self, counters: &Counters) {
        for (shared, value) in self.values.iter().zip(counters.values.iter()) {
            shared.store(*value, Ordering::Relaxed);
        }
    }

    fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }
}

/// Why connections were closed, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseCounts {
    /// The peer sent a close frame first.
    pub by_peer: u64,
    /// The application closed them ([`Socket::close`](super::Socket::close),
    /// [`ServerHandle::close`](super::ServerHandle::close)).
    pub by_server: u64,
    /// The peer broke the protocol (1002, 1007, 1009...).
    pub protocol_error: u64,
    /// Their queue went over the cap under [`Backpressure::Close`](super::Backpressure::Close)
    /// (1008).
    pub slow_consumer: u64,
    /// Nothing was received for the idle timeout.
    pub idle: u64,
    /// The opening handshake did not complete in time (the connection never opened).
    pub handshake_timeout: u64,
    /// Graceful shutdown (1001).
    pub shutdown: u64,
    /// The stream ended or failed without a close frame (1006).
    pub abnormal: u64,
}

/// Counters of a whole server (or one worker), as [`ServerHandle::stats`] returns them.
///
/// [`ServerHandle::stats`]: super::ServerHandle::stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: u64,
    /// Sockets held: open connections plus those handshaking or closing.
    pub sockets: u64,
    /// Bytes queued for sending now, all connections together.
    pub queued_bytes: u64,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Accept failures (such as `EMFILE`), each followed by a back-off.
    pub accept_errors: u64,
    /// Sockets closed at once because a worker held its maximum of connections.
    pub rejected: u64,
    /// Opening handshakes completed (server and client side).
    pub handshakes_ok: u64,
    /// Opening handshakes refused or failed.
    pub handshakes_failed: u64,
    /// Plain HTTP requests answered through [`Handler::on_http`](super::Handler::on_http).
    pub http_requests: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Payload bytes of the data messages received.
    pub bytes_in: u64,
    /// Frames queued for sending (data and control), and HTTP answers (101s, errors,
    /// pages) and client requests.
    pub messages_out: u64,
    /// Bytes of the frames queued for sending.
    pub bytes_out: u64,
    /// Messages published (through a socket or the handle), counted once per worker
    /// that delivered them.
    pub publishes: u64,
    /// Published messages queued to subscribers.
    pub deliveries: u64,
    /// Messages dropped for a connection under [`Backpressure::Drop`](super::Backpressure::Drop),
    /// or sent to a connection that was gone.
    pub drops: u64,
    /// Closes by cause.
    pub closes: CloseCounts,
    /// Outgoing connections that opened.
    pub dials_ok: u64,
    /// Outgoing connections that failed to connect or to complete the handshake.
    pub dials_failed: u64,
}

impl Stats {
    pub(crate) fn add_worker(&mut self, w: &SharedCounters) {
        use Counter as C;
        self.connections += w.get(C::Connections);
        self.sockets += w.get(C::Sockets);
        self.queued_bytes += w.get(C::QueuedBytes);
        self.accepted += w.get(C::Accepted);
        self.accept_errors += w.get(C::AcceptErrors);
        self.rejected += w.get(C::Rejected);
        self.handshakes_ok += w.get(C::HandshakesOk);
        self.handshakes_failed += w.get(C::HandshakesFailed);
        self.http_requests += w.get(C::HttpRequests);
        self.messages_in += w.get(C::MessagesIn);
        self.bytes_in += w.get(C::BytesIn);
        self.messages_out += w.get(C::MessagesOut);
        self.bytes_out += w.get(C::BytesOut);
        self.publishes += w.get(C::Publishes);
        self.deliveries += w.get(C::Deliveries);
        self.drops += w.get(C::Drops);
        self.closes.by_peer += w.get(C::ClosedByPeer);
        self.closes.by_server += w.get(C::ClosedByServer);
        self.closes.protocol_error += w.get(C::ClosedProtocolError);
        self.closes.slow_consumer += w.get(C::ClosedSlowConsumer);
        self.closes.idle += w.get(C::ClosedIdle);
        self.closes.handshake_timeout += w.get(C::ClosedHandshakeTimeout);
        self.closes.shutdown += w.get(C::ClosedShutdown);
        self.closes.abnormal += w.get(C::ClosedAbnormal);
        self.dials_ok += w.get(C::DialsOk);
        self.dials_failed += w.get(C::DialsFailed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_counters_sum_across_workers() {
        let (a, b) = (SharedCounters::default(), SharedCounters::default());
        let mut counters = Counters::default();
        counters.add(Counter::MessagesIn, 3);
        counters.incr(Counter::ClosedSlowConsumer);
        a.publish(&counters);
        counters.incr(Counter::MessagesIn);
        b.publish(&counters);
        let mut stats = Stats::default();
        stats.add_worker(&a);
        stats.add_worker(&b);
        assert_eq!(stats.messages_in, 7);
        assert_eq!(stats.closes.slow_consumer, 2);
    }

    #[test]
    fn gauge_never_goes_below_zero() {
        let mut counters = Counters::default();
        counters.add(Counter::QueuedBytes, 5);
        counters.sub(Counter::QueuedBytes, 9);
        assert_eq!(counters.get(Counter::QueuedBytes), 0);
    }
}
