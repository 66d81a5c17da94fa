//! What the load generator counts: latency histograms (hdrhistogram), per-second
//! timelines, sequence tracking for duplicates and reordering, the per-worker
//! [`Tally`] that holds them, [`ServerProbe`], the server process's CPU time and
//! resident memory read from `/proc`, and [`tcp_out_segs`], the TCP segments sent.
//!
//! A `Tally` belongs to one engine worker and is updated on that worker's thread only;
//! tallies meet once, at the end, through [`Tally::merge`]. Nothing here locks.

use std::fs;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::stream::StreamCounts;

/// The longest latency a histogram keeps apart from the rest: one hour, in nanoseconds.
/// Longer ones are recorded as this (a run never lasts that long).
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Latencies in nanoseconds, kept with three significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            histogram: Histogram::new_with_bounds(1, HIGHEST_NS, 3)
                .expect("1 ns to 1 h at 3 digits are valid histogram bounds"),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Latency {
    /// Records one latency of `ns` nanoseconds (0 counts as 1: the clock's floor).
    pub fn record(&mut self, ns: u64) {
        self.histogram.saturating_record(ns.max(1));
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// The percentiles, in microseconds (all 0 without samples).
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }

    /// The latency (µs) at each of `quantiles`, for a percentile curve.
    pub fn curve(&self, quantiles: &[f64]) -> Vec<(f64, f64)> {
        if self.histogram.is_empty() {
            return Vec::new();
        }
        quantiles
            .iter()
            .map(|&q| (q, self.histogram.value_at_quantile(q) as f64 / 1000.0))
            .collect()
    }
}

/// Buckets of a [`LiveHistogram`]: 8 exact ones for 0-7 ns, then 8 per power of two up
/// to 2^64 ns.
const LIVE_BUCKETS: usize = 8 + 61 * 8;

/// A coarse latency histogram one worker writes and the main thread reads while the run
/// goes on: counts never go down, so the samples of one second are the difference of two
/// snapshots. Each bucket spans 1/8 of a power of two, so a percentile read from it is
/// within about 6 % (the summary's percentiles come from the exact [`Latency`]). 3.9 KiB
/// per worker; recording is a load and a store (one writer), no lock.
#[derive(Debug)]
pub struct LiveHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LiveHistogram {
    fn default() -> Self {
        LiveHistogram {
            counts: (0..LIVE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LiveHistogram {
    /// Records `ns` (from the owning worker's thread only).
    pub fn record(&self, ns: u64) {
        let bucket = &self.counts[live_bucket(ns)];
        bucket.store(bucket.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds the counts so far to `into` (one entry per bucket).
    pub fn add_to(&self, into: &mut [u64]) {
        for (sum, count) in into.iter_mut().zip(self.counts.iter()) {
            *sum += count.load(Ordering::Relaxed);
        }
    }

    /// A zeroed snapshot to [`add_to`](Self::add_to).
    pub fn snapshot() -> Vec<u64> {
        vec![0; LIVE_BUCKETS]
    }
}

fn live_bucket(ns: u64) -> usize {
    if ns < 8 {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros() as usize; // 3 and up
    let sub = ((ns >> (exponent - 3)) & 7) as usize;
    8 + (exponent - 3) * 8 + sub
}

/// The middle of a bucket's span, in nanoseconds.
fn live_bucket_value(bucket: usize) -> f64 {
    if bucket < 8 {
        return bucket as f64;
    }
    let exponent = (bucket - 8) / 8 + 3;
    let sub = ((bucket - 8) % 8) as f64;
    (8.0 + sub + 0.5) * (1u64 << (exponent - 3)) as f64
}

/// Percentiles of one second read from two snapshots of summed [`LiveHistogram`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SecondLatency {
    /// Samples in the second.
    pub count: u64,
    /// Median, µs.
    pub p50: f64,
    /// 90th percentile, µs.
    pub p90: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// Largest (its bucket's middle), µs.
    pub max: f64,
}

impl SecondLatency {
    /// The samples of `now` that were not in `before`.
    pub fn between(before: &[u64], now: &[u64]) -> SecondLatency {
        let counts: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(n, b)| n.saturating_sub(*b))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return SecondLatency::default();
        }
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (bucket, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return live_bucket_value(bucket) / 1000.0;
                }
            }
            0.0
        };
        SecondLatency {
            count,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Events counted per second since the run's start (second 0 is the first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    seconds: Vec<u64>,
}

impl Timeline {
    /// Counts `n` events at `ns` nanoseconds after the start.
    pub fn add(&mut self, ns: u64, n: u64) {
        let second = (ns / 1_000_000_000) as usize;
        // A run lasts minutes; a bogus timestamp must not allocate gigabytes.
        if second > 86_400 {
            return;
        }
        if self.seconds.len() <= second {
            self.seconds.resize(second + 1, 0);
        }
        self.seconds[second] += n;
    }

    /// Adds another timeline, second by second.
    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize(other.seconds.len(), 0);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            *mine += theirs;
        }
    }

    /// The counts, one per second.
    pub fn seconds(&self) -> &[u64] {
        &self.seconds
    }
}

/// How a sequence number arrived, relative to those already seen from the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Above every number seen before (a gap before it may still fill in later).
    InOrder,
    /// Below the highest seen, and not seen before: overtaken by a later message.
    Late,
    /// Seen before.
    Duplicate,
}

/// The sequence numbers one receiver has seen from one sender: the highest, and a
/// 128-number window below it, so duplicates are told from late arrivals in 24 bytes.
/// A number more than 128 below the highest counts as late (it cannot be checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// One more than the highest number seen; 0 before the first.
    next: u64,
    /// Bit `i`: number `next - 1 - i` was seen.
    seen: u128,
}

impl SeqTracker {
    /// One more than the highest number seen: the next number in order (0 before the
    /// first).
    pub fn expected(&self) -> u64 {
        self.next
    }

    /// Notes `seq` and says how it arrived.
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.next = seq + 1;
            return Arrival::InOrder;
        }
        let back = self.next - 1 - seq;
        if back >= 128 {
            return Arrival::Late;
        }
        let bit = 1u128 << back;
        if self.seen & bit != 0 {
            Arrival::Duplicate
        } else {
            self.seen |= bit;
            Arrival::Late
        }
    }
}

/// One engine worker's counts. Which fields a scenario fills is its own business; the
/// rest stay 0.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Messages sent (publishes, echo requests) with a timestamp inside the measured window.
    pub sent: u64,
    /// Messages received (deliveries, echoes) sent inside the measured window, duplicates
    /// left out.
    pub received: u64,
    /// Messages received a second time.
    pub duplicates: u64,
    /// Messages that arrived after a later one from the same sender.
    pub out_of_order: u64,
    /// Received lines that start like this load generator's messages but do not parse,
    /// or name a sender that does not exist: a server that mangles messages.
    pub malformed: u64,
    /// Received lines of the server's own (a chat server's join notices, say): not
    /// counted as deliveries, not errors.
    pub other: u64,
    /// Sends the engine refused (connection closing, queue full).
    pub send_errors: u64,
    /// Latency of each counted message: delivery, round trip, or connect, by scenario.
    pub latency: Latency,
    /// Received messages (or opened connections) per second since the start, warm-up
    /// included.
    pub timeline: Timeline,
    /// What scenario files count besides.
    pub script: Option<Box<ScriptTally>>,
}

/// What a scenario file's run counts besides a [`Tally`]'s own fields (whose `latency` is
/// then the main one of these three: the stream's, else the answers', else connecting).
#[derive(Debug, Clone, Default)]
pub struct ScriptTally {
    /// Time from dial to open, every (re)connection.
    pub connect: Latency,
    /// `expect` steps: time from the start of the wait to the matching message.
    pub response: Latency,
    /// One-way latency of the server's stream.
    pub stream: Latency,
    /// What the stream looked like.
    pub counts: StreamCounts,
    /// `expect` steps that got their messages.
    pub expects_met: u64,
    /// `expect` steps that timed out.
    pub expect_timeouts: u64,
}

impl ScriptTally {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &ScriptTally) {
        self.connect.merge(&other.connect);
        self.response.merge(&other.response);
        self.stream.merge(&other.stream);
        self.counts.merge(&other.counts);
        self.expects_met += other.expects_met;
        self.expect_timeouts += other.expect_timeouts;
    }
}

impl Tally {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.malformed += other.malformed;
        self.other += other.other;
        self.send_errors += other.send_errors;
        self.latency.merge(&other.latency);
        self.timeline.merge(&other.timeline);
        if let Some(theirs) = &other.script {
            self.script
                .get_or_insert_with(Default::default)
                .merge(theirs);
        }
    }
}

/// CPU time and resident memory of one process, at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, all threads, since the process started, in seconds.
    pub cpu_seconds: f64,
    /// The user part of `cpu_seconds`: time spent running the process's own code.
    pub user_seconds: f64,
    /// The system part of `cpu_seconds`: time the kernel spent working for the process
    /// (system calls, and the TCP work charged to it).
    pub system_seconds: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Reads a server process's figures from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct ServerProbe {
    pid: u32,
    ticks_per_second: f64,
}

impl ServerProbe {
    /// A probe of process `pid`; fails when there is no such process to read.
    pub fn new(pid: u32) -> io::Result<ServerProbe> {
        // SAFETY: sysconf only reads a configuration value; it takes no pointer and has no
        // precondition.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let probe = ServerProbe {
            pid,
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        };
        probe.sample()?;
        Ok(probe)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's CPU time and RSS now.
    pub fn sample(&self) -> io::Result<ProcessSample> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let ticks = parse_cpu_ticks(&stat).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat")
        })?;
        let rss_kib = parse_rss_kib(&status).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status")
        })?;
        Ok(ProcessSample {
            cpu_seconds: (ticks.user + ticks.system) as f64 / self.ticks_per_second,
            user_seconds: ticks.user as f64 / self.ticks_per_second,
            system_seconds: ticks.system as f64 / self.ticks_per_second,
            rss_kib,
        })
    }
}

/// A process's CPU time since it started, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTicks {
    /// utime: running the process's own code.
    user: u64,
    /// stime: the kernel working for the process.
    system: u64,
}

/// utime and stime (fields 14 and 15 of `/proc/PID/stat`). The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 (state) is the first here
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// The `VmRSS:` line of `/proc/PID/status`, in KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// TCP segments this network namespace has sent so far: `OutSegs` of the `Tcp:` lines of
/// `/proc/net/snmp`; `None` where it cannot be read. On loopback every segment counts once,
/// by its sender: the server's, the load generator's, and any other program's.
pub fn tcp_out_segs() -> Option<u64> {
    parse_out_segs(&fs::read_to_string("/proc/net/snmp").ok()?)
}

/// `OutSegs` from `/proc/net/snmp`: a `Tcp:` line of names, then one of values.
fn parse_out_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let column = names.split_whitespace().position(|n| n == "OutSegs")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_in_order_late_and_duplicate_are_told_apart() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Arrival::InOrder);
        assert_eq!(t.observe(2), Arrival::InOrder);
        assert_eq!(t.observe(1), Arrival::Late);
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(2), Arrival::Duplicate);
        assert_eq!(t.observe(0), Arrival::Duplicate);
        assert_eq!(t.observe(3), Arrival::InOrder);
    }

    #[test]
    fn sequence_far_below_the_window_counts_as_late() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1000), Arrival::InOrder);
        assert_eq!(t.observe(5), Arrival::Late);
        assert_eq!(t.observe(5), Arrival::Late);
        assert_eq!(t.observe(999), Arrival::Late);
        assert_eq!(t.observe(999), Arrival::Duplicate);
    }

    #[test]
    fn jump_past_the_window_forgets_it() {
        let mut t = SeqTracker::default();
        t.observe(1);
        assert_eq!(t.observe(500), Arrival::InOrder);
        assert_eq!(t.observe(499), Arrival::Late);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(
            parse_cpu_ticks(stat),
            Some(CpuTicks {
                user: 250,
                system: 50
            })
        );
    }

    #[test]
    fn truncated_stat_is_unreadable() {
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2 3 4 5 6 7 8 9 10 250"), None);
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(1234));
    }

    #[test]
    fn out_segs_are_read_by_column() {
        let snmp =
            "Ip: Forwarding\nIp: 1\nTcp: RtoMin InSegs OutSegs\nTcp: 200 7 42\nUdp: X\nUdp: 1\n";
        assert_eq!(parse_out_segs(snmp), Some(42));
        assert_eq!(parse_out_segs("Tcp: InSegs\nTcp: 7\n"), None);
        assert!(tcp_out_segs().is_some());
    }

    #[test]
    fn own_process_can_be_probed() {
        let probe = ServerProbe::new(std::process::id()).unwrap();
        let sample = probe.sample().unwrap();
        assert!(sample.rss_kib > 0);
    }

    #[test]
    fn own_process_user_and_system_add_up_to_its_cpu_time() {
        let sample = ServerProbe::new(std::process::id())
            .unwrap()
            .sample()
            .unwrap();
        let sum = sample.user_seconds + sample.system_seconds;
        assert!(
            (sum - sample.cpu_seconds).abs() < 1e-9,
            "user {} + system {} != total {}",
            sample.user_seconds,
            sample.system_seconds,
            sample.cpu_seconds
        );
    }

    #[test]
    fn timelines_add_second_by_second() {
        let mut a = Timeline::default();
        a.add(500_000_000, 2);
        a.add(2_100_000_000, 1);
        let mut b = Timeline::default();
        b.add(0, 1);
        a.merge(&b);
        assert_eq!(a.seconds(), &[3, 0, 1]);
    }

    #[test]
    fn live_buckets_cover_every_value_in_order_within_a_sixteenth() {
        let mut last = 0;
        for ns in (0..10_000u64).chain([1 << 20, 3_000_000_007, u64::MAX / 3, u64::MAX]) {
            let bucket = live_bucket(ns);
            assert!(bucket < LIVE_BUCKETS && bucket >= last, "{ns}");
            last = bucket;
            let middle = live_bucket_value(bucket);
            assert!(
                (middle - ns as f64).abs() <= ns as f64 / 16.0 + 0.5,
                "{ns} -> {middle}"
            );
        }
    }

    #[test]
    fn one_seconds_percentiles_come_from_the_difference_of_snapshots() {
        let live = LiveHistogram::default();
        for _ in 0..100 {
            live.record(1_000_000); // 1 ms, before the second
        }
        let mut before = LiveHistogram::snapshot();
        live.add_to(&mut before);
        for us in 1..=100u64 {
            live.record(us * 1000);
        }
        let mut now = LiveHistogram::snapshot();
        live.add_to(&mut now);
        let second = SecondLatency::between(&before, &now);
        assert_eq!(second.count, 100);
        assert!((second.p50 - 50.0).abs() < 4.0, "{second:?}");
        assert!((second.p99 - 99.0).abs() < 7.0, "{second:?}");
        assert!((second.max - 100.0).abs() < 7.0, "{second:?}");
    }

    #[test]
    fn latency_summary_is_in_microseconds() {
        let mut l = Latency::default();
        for us in 1..=1000u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
    }
}
