//! Counters: each worker counts in plain integers on its own thread and publishes them to
//! shared atomics once per loop turn, so the hot path pays no atomic operation per event.
//! [`ServerHandle::stats`](super::ServerHandle::stats) sums the workers into a [`Stats`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::handoff::Budget;

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
    /// Receives that found the provided-buffer ring empty (copied from the driver).
    RecvBufferShortages,
    /// Gauge: the most bytes of commands seen queued for this worker at once.
    HandoffPeakBytes,
    /// Inflations paused at a connection's per-turn budget.
    InflatePauses,
    /// Zero-copy sends the kernel sent from the frames' pages (copied from the driver).
    ZeroCopySent,
    /// Zero-copy sends the kernel copied after all (copied from the driver).
    ZeroCopyCopied,
}

const COUNTERS: usize = Counter::ZeroCopyCopied as usize + 1;

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

    pub(crate) fn set(&mut self, counter: Counter, value: u64) {
        self.values[counter as usize] = value;
    }

    pub(crate) fn sub(&mut self, counter: Counter, n: u64) {
        let v = &mut self.values[counter as usize];
        *v = v.saturating_sub(n);
    }

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
    /// Receives that found the io_uring provided-buffer ring empty and were re-armed
    /// (`ENOBUFS`): many mean `DriverConfig::recv_buffers` is too small for the load.
    pub recv_buffer_shortages: u64,
    /// Bytes of commands (publishes, sends, closes, dials) queued for the workers now and
    /// not handled yet: at most [`max_handoff_bytes`](super::ServerConfig::max_handoff_bytes)
    /// per worker.
    pub handoff_bytes: u64,
    /// The most bytes of commands seen queued for a worker at once (summed over workers in
    /// the server-wide figure).
    pub handoff_peak_bytes: u64,
    /// Commands refused because a worker's command queue held its
    /// [`max_handoff_bytes`](super::ServerConfig::max_handoff_bytes) (a refused publish
    /// counts once, on the first worker found full).
    pub handoffs_refused: u64,
    /// Callers of [`ServerHandle::publish_timeout`](super::ServerHandle::publish_timeout)
    /// waiting now for a worker to make room: publishers held back by slow workers.
    pub handoff_waiters: u64,
    /// Times a connection's compressed message used up its
    /// [`max_inflate_per_turn`](super::ServerConfig::max_inflate_per_turn) and was left
    /// to finish on a later turn: large compressed messages, or decompression bombs.
    pub inflate_pauses: u64,
    /// Sends that went out with io_uring zero copy
    /// ([`send_zero_copy`](super::ServerConfig::send_zero_copy)) and that the kernel sent
    /// from the frames' own pages, counted when its last notification came back.
    pub zero_copy_sent: u64,
    /// Zero-copy sends that the kernel copied after all (its notification said
    /// `IORING_NOTIF_USAGE_ZC_COPIED`): always the case over loopback, and on a device
    /// without scatter-gather. Many of these and few
    /// [`zero_copy_sent`](Self::zero_copy_sent) mean zero copy only adds its cost here.
    pub zero_copy_copied: u64,
}

/// Metric name, kind and help of each figure, in the order written.
const METRICS: &[(&str, &str, &str)] = &[
    ("connections", "gauge", "Open WebSocket connections."),
    (
        "sockets",
        "gauge",
        "Sockets held: open, handshaking or closing.",
    ),
    (
        "queued_bytes",
        "gauge",
        "Bytes queued for sending, all connections together.",
    ),
    ("accepted_total", "counter", "TCP connections accepted."),
    (
        "accept_errors_total",
        "counter",
        "Accept failures such as EMFILE, each followed by a back-off.",
    ),
    (
        "rejected_total",
        "counter",
        "Sockets closed at once because a worker held max_connections.",
    ),
    (
        "handshakes_total",
        "counter",
        "Opening handshakes by result.",
    ),
    (
        "http_requests_total",
        "counter",
        "Plain HTTP requests answered.",
    ),
    ("messages_in_total", "counter", "Data messages received."),
    (
        "bytes_in_total",
        "counter",
        "Payload bytes of the data messages received.",
    ),
    (
        "messages_out_total",
        "counter",
        "Frames and HTTP answers queued for sending.",
    ),
    ("bytes_out_total", "counter", "Bytes queued for sending."),
    (
        "publishes_total",
        "counter",
        "Publishes handled, once per worker.",
    ),
    (
        "deliveries_total",
        "counter",
        "Published frames queued on subscribers.",
    ),
    (
        "drops_total",
        "counter",
        "Messages dropped for a connection (backpressure, gone, control over the cap).",
    ),
    ("closes_total", "counter", "Connections closed, by cause."),
    ("dials_total", "counter", "Outgoing connections by result."),
    (
        "recv_buffer_shortages_total",
        "counter",
        "Receives that found the provided-buffer ring empty (ENOBUFS).",
    ),
    (
        "handoff_bytes",
        "gauge",
        "Bytes of commands queued for the workers and not handled yet.",
    ),
    (
        "handoff_peak_bytes",
        "gauge",
        "The most bytes of commands seen queued for a worker at once.",
    ),
    (
        "handoffs_refused_total",
        "counter",
        "Commands refused because a worker's command queue was at its byte budget.",
    ),
    (
        "handoff_waiters",
        "gauge",
        "Publishers waiting for a worker's command queue to have room.",
    ),
    (
        "inflate_pauses_total",
        "counter",
        "Compressed messages paused at a connection's per-turn inflation budget.",
    ),
    (
        "zero_copy_sends_total",
        "counter",
        "io_uring zero-copy sends by what the kernel did: sent from the frames' pages, or copied.",
    ),
];

impl Stats {
    /// The figures in the Prometheus text format (version 0.0.4), every name prefixed
    /// with `ringcast_`. `workers`, when given, adds one series per worker with a
    /// `worker` label next to the server-wide one.
    ///
    /// ```
    /// use ringcast::server::Stats;
    /// let text = Stats::default().to_prometheus(&[]);
    /// assert!(text.contains("ringcast_connections 0\n"));
    /// assert!(text.contains("ringcast_closes_total{cause=\"slow_consumer\"} 0\n"));
    /// ```
    pub fn to_prometheus(&self, workers: &[Stats]) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(4096);
        for &(name, kind, help) in METRICS {
            let _ = writeln!(out, "# HELP ringcast_{name} {help}");
            let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
            let series = std::iter::once((None, self))
                .chain(workers.iter().enumerate().map(|(i, s)| (Some(i), s)));
            for (worker, stats) in series {
                for (labels, value) in stats.metric(name) {
                    let mut all: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                    if let Some(worker) = worker {
                        all.push(format!("worker=\"{worker}\""));
                    }
                    if all.is_empty() {
                        let _ = writeln!(out, "ringcast_{name} {value}");
                    } else {
                        let _ = writeln!(out, "ringcast_{name}{{{}}} {value}", all.join(","));
                    }
                }
            }
        }
        out
    }

    /// The series of metric `name`: label pairs and value.
    fn metric(&self, name: &str) -> Vec<(Vec<(&'static str, &'static str)>, u64)> {
        let one = |v: u64| vec![(Vec::new(), v)];
        let c = &self.closes;
        match name {
            "connections" => one(self.connections),
            "sockets" => one(self.sockets),
            "queued_bytes" => one(self.queued_bytes),
            "accepted_total" => one(self.accepted),
            "accept_errors_total" => one(self.accept_errors),
            "rejected_total" => one(self.rejected),
            "handshakes_total" => vec![
                (vec![("result", "ok")], self.handshakes_ok),
                (vec![("result", "failed")], self.handshakes_failed),
            ],
            "http_requests_total" => one(self.http_requests),
            "messages_in_total" => one(self.messages_in),
            "bytes_in_total" => one(self.bytes_in),
            "messages_out_total" => one(self.messages_out),
            "bytes_out_total" => one(self.bytes_out),
            "publishes_total" => one(self.publishes),
            "deliveries_total" => one(self.deliveries),
            "drops_total" => one(self.drops),
            "closes_total" => [
                ("peer", c.by_peer),
                ("server", c.by_server),
                ("protocol_error", c.protocol_error),
                ("slow_consumer", c.slow_consumer),
                ("idle", c.idle),
                ("handshake_timeout", c.handshake_timeout),
                ("shutdown", c.shutdown),
                ("abnormal", c.abnormal),
            ]
            .into_iter()
            .map(|(cause, v)| (vec![("cause", cause)], v))
            .collect(),
            "dials_total" => vec![
                (vec![("result", "ok")], self.dials_ok),
                (vec![("result", "failed")], self.dials_failed),
            ],
            "recv_buffer_shortages_total" => one(self.recv_buffer_shortages),
            "handoff_bytes" => one(self.handoff_bytes),
            "handoff_peak_bytes" => one(self.handoff_peak_bytes),
            "handoffs_refused_total" => one(self.handoffs_refused),
            "handoff_waiters" => one(self.handoff_waiters),
            "inflate_pauses_total" => one(self.inflate_pauses),
            "zero_copy_sends_total" => vec![
                (vec![("result", "zero_copy")], self.zero_copy_sent),
                (vec![("result", "copied")], self.zero_copy_copied),
            ],
            _ => Vec::new(),
        }
    }

    pub(crate) fn add_worker(&mut self, w: &SharedCounters, budget: &Budget) {
        use Counter as C;
        self.handoff_bytes += budget.used() as u64;
        self.handoffs_refused += budget.refused();
        self.handoff_waiters += budget.waiters() as u64;
        self.handoff_peak_bytes += w.get(C::HandoffPeakBytes);
        self.inflate_pauses += w.get(C::InflatePauses);
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
        self.recv_buffer_shortages += w.get(C::RecvBufferShortages);
        self.zero_copy_sent += w.get(C::ZeroCopySent);
        self.zero_copy_copied += w.get(C::ZeroCopyCopied);
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
        let budget = Budget::new(100);
        stats.add_worker(&a, &budget);
        stats.add_worker(&b, &budget);
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
