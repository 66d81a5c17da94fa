//! What both scenarios share: the state their tasks update (one thread, so `Cell` and
//! `RefCell`), the phases, the measured window and its samples from `/proc`, and the
//! report (one JSON line with ringcast-load's field names, or a summary).
//!
//! A run is: connect, settle, then the window's origin; `warmup` later the measured
//! window starts, and `duration` after that it ends. Only messages *sent* inside the
//! window count, wherever they arrive; after it the run waits up to `grace` for the last
//! of them, then closes every connection (at most [`CLOSE_WAIT`]) and reports.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until};

use crate::args::Common;
use crate::probe::{tcp_out_segs, ProcessSample};
use crate::wire::{instant_at, now_ns, Ws};

/// Pause between the last open and the first message: a server may put a client in its
/// room just after the handshake (ringcast-load waits as long).
pub const SETTLE: Duration = Duration::from_millis(500);

/// How long the closing handshakes at the end may take altogether.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The closing handshake of `ws`, bounded by [`CLOSE_WAIT`].
pub async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// How many error messages the report keeps.
const SAMPLES: usize = 5;

/// The longest latency kept apart from the rest, ns (one hour).
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Where a run is; every task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Dialling and settling.
    Connecting,
    /// The window's origin is set: send.
    Running,
    /// Close and end.
    Stopping,
}

/// The measured window on [`now_ns`]'s clock; `u64::MAX` until set.
#[derive(Debug)]
pub struct Window {
    origin: Cell<u64>,
    start: Cell<u64>,
    end: Cell<u64>,
}

impl Window {
    /// Sets the origin to now; returns the start and end.
    fn set(&self, warmup: Duration, duration: Duration) -> (u64, u64) {
        let origin = now_ns();
        let start = origin + warmup.as_nanos() as u64;
        let end = start + duration.as_nanos() as u64;
        self.origin.set(origin);
        self.start.set(start);
        self.end.set(end);
        (start, end)
    }

    /// Origin, start and end.
    pub fn get(&self) -> (u64, u64, u64) {
        (self.origin.get(), self.start.get(), self.end.get())
    }

    /// Whether sending has started.
    pub fn started(&self) -> bool {
        self.origin.get() != u64::MAX
    }
}

/// What the receiving side counts.
#[derive(Debug)]
pub struct Tally {
    /// Messages sent inside the window received (duplicates left out): deliveries to
    /// subscribers, or echoes.
    pub received: u64,
    pub duplicates: u64,
    /// Received after a later message of the same sender.
    pub out_of_order: u64,
    /// Lines that begin like a stamp but do not parse, or name no sender of this run.
    pub malformed: u64,
    /// The server's own lines (the chat server's join notices): not errors.
    pub other: u64,
    /// Latency of every message counted in `received`, ns.
    pub latency: Histogram<u64>,
    /// Stamped lines received per second since the origin, warm-up included.
    pub timeline: Vec<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            malformed: 0,
            other: 0,
            latency: Histogram::new_with_bounds(1, HIGHEST_NS, 3)
                .expect("1 ns to 1 h at 3 digits are valid bounds"),
            timeline: Vec::new(),
        }
    }

    /// A counted message's latency.
    pub fn record(&mut self, ns: u64) {
        self.latency.saturating_record(ns.max(1));
    }

    /// `lines` stamped lines received `since_origin` ns after the origin.
    pub fn seen(&mut self, since_origin: u64, lines: u64) {
        if lines == 0 {
            return;
        }
        let second = (since_origin / 1_000_000_000).min(86_400) as usize;
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, 0);
        }
        self.timeline[second] += lines;
    }
}

/// What happened to the connections.
#[derive(Debug, Default)]
pub struct Book {
    /// Connections whose handshake completed.
    pub opened: u64,
    pub dial_failures: u64,
    /// Connections that ended before the run closed them (errors).
    pub closed: u64,
    pub samples: Vec<String>,
}

impl Book {
    pub fn dial_failed(&mut self, why: String) {
        self.dial_failures += 1;
        self.keep(why);
    }

    pub fn closed(&mut self, why: String) {
        self.closed += 1;
        self.keep(why);
    }

    pub fn keep(&mut self, why: String) {
        if self.samples.len() < SAMPLES {
            self.samples.push(why);
        }
    }
}

/// The state every task of a run shares.
#[derive(Debug)]
pub struct Shared {
    pub window: Window,
    pub tally: RefCell<Tally>,
    pub book: RefCell<Book>,
    pub phase: watch::Sender<Phase>,
    /// Messages sent with a stamp inside the window: publishes, or echo requests.
    pub sent: Cell<u64>,
    /// Sends that failed.
    pub send_errors: Cell<u64>,
    /// Dial attempts finished, opened or not.
    pub dials_done: Cell<u64>,
    /// Set with [`Phase::Stopping`]: nothing is counted from then on (a task may still
    /// have messages ready before it sees the phase, such as the chat server's leave
    /// notices as the others close).
    stopped: Cell<bool>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            window: Window {
                origin: Cell::new(u64::MAX),
                start: Cell::new(u64::MAX),
                end: Cell::new(u64::MAX),
            },
            tally: RefCell::new(Tally::new()),
            book: RefCell::new(Book::default()),
            phase: watch::Sender::new(Phase::Connecting),
            sent: Cell::new(0),
            send_errors: Cell::new(0),
            dials_done: Cell::new(0),
            stopped: Cell::new(false),
        }
    }

    /// A failed send.
    pub fn send_failed(&self, why: String) {
        self.send_errors.set(self.send_errors.get() + 1);
        self.book.borrow_mut().keep(why);
    }

    /// Whether the run is closing its connections: an end is not an error, and nothing
    /// more is counted.
    pub fn stopping(&self) -> bool {
        self.stopped.get()
    }

    /// Waits until `dials` dial attempts have finished or `deadline` has passed.
    pub async fn dials(&self, dials: u64, deadline: Instant) {
        while self.dials_done.get() < dials && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sets the window (origin now) and lets every task send.
    pub fn go(&self, common: &Common) -> (u64, u64) {
        let window = self.window.set(common.warmup, common.duration);
        self.phase.send_replace(Phase::Running);
        window
    }

    /// Tells every task to close its connection and waits for them, at most
    /// [`CLOSE_WAIT`]; the ones still going are dropped with the runtime.
    pub async fn stop(&self, tasks: &mut JoinSet<()>) {
        self.stopped.set(true);
        self.phase.send_replace(Phase::Stopping);
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// The samples taken from `/proc` during a run.
#[derive(Debug, Default)]
pub struct Samples {
    pid: Option<u32>,
    /// The server, before the first dial.
    pub before: Option<ProcessSample>,
    /// The server, with every connection open.
    pub connected: Option<ProcessSample>,
    /// The server at the start and the end of the measured window.
    start: Option<ProcessSample>,
    end: Option<ProcessSample>,
    /// `OutSegs` at the start and the end of the measured window.
    segs_start: Option<u64>,
    segs_end: Option<u64>,
}

impl Samples {
    /// Samples for server `pid`, if any; fails when it cannot be read.
    pub fn new(pid: Option<u32>) -> Result<Samples, String> {
        if let Some(pid) = pid {
            ProcessSample::read(pid)
                .map_err(|e| format!("--server-pid {pid}: cannot read /proc: {e}"))?;
        }
        Ok(Samples {
            pid,
            ..Samples::default()
        })
    }

    /// The server now (`None` without `--server-pid`, or once it is gone).
    pub fn server(&self) -> Option<ProcessSample> {
        self.pid.and_then(|pid| ProcessSample::read(pid).ok())
    }

    /// Waits for the start of the window and samples the server and the segments there,
    /// side by side; then the same at the end.
    pub async fn window(&mut self, start: u64, end: u64) {
        sleep_until(instant_at(start).into()).await;
        self.segs_start = tcp_out_segs();
        self.start = self.server();
        sleep_until(instant_at(end).into()).await;
        self.segs_end = tcp_out_segs();
        self.end = self.server();
    }

    /// `OutSegs` sent in the window, and `units` per segment.
    fn segments(&self, units: u64) -> (Option<u64>, Option<f64>) {
        let segs = match (self.segs_start, self.segs_end) {
            (Some(a), Some(b)) if b >= a => b - a,
            _ => return (None, None),
        };
        (Some(segs), (segs > 0).then(|| units as f64 / segs as f64))
    }

    /// The server's figures, ringcast-load's `server` object: `units` of work in the
    /// window (deliveries, echoes), `connections` open.
    fn server_figures(&self, units: u64, connections: u64) -> Option<Value> {
        let pid = self.pid?;
        let (before, connected) = (self.before?, self.connected?);
        let (start, end) = (self.start?, self.end?);
        let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let units = units as f64;
        let cpu_s = (end.cpu_s() - start.cpu_s()).max(0.0);
        let user_cpu_s = (end.user_s - start.user_s).max(0.0);
        let system_cpu_s = (end.system_s - start.system_s).max(0.0);
        Some(json!({
            "pid": pid,
            "cpu_s": cpu_s,
            "per_cpu_s": per(units, cpu_s),
            "cpu_s_per_million": per(cpu_s * 1e6, units),
            "user_cpu_s": user_cpu_s,
            "system_cpu_s": system_cpu_s,
            "user_cpu_s_per_million": per(user_cpu_s * 1e6, units),
            "system_cpu_s_per_million": per(system_cpu_s * 1e6, units),
            "rss_before_kib": before.rss_kib,
            "rss_connected_kib": connected.rss_kib,
            "rss_after_kib": end.rss_kib,
            "rss_per_connection_bytes":
                per((connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0, connections as f64),
        }))
    }
}

/// What the client runs on, for the report's `client_backend`.
pub const BACKEND: &str = "tokio current_thread, tokio-tungstenite 0.30";

/// The report, ringcast-load's JSON fields for the same scenario: the common ones, the
/// scenario's own `figures` at the top level (as ringcast-load flattens them), and
/// `client`, `out_segs` and `deliveries_per_segment` (`units` per segment: deliveries in
/// fanout, echoes in echo).
pub fn report(
    scenario: &str,
    common: &Common,
    figures: Map<String, Value>,
    shared: &Shared,
    samples: &Samples,
    units: u64,
    connections: u64,
) -> Value {
    let tally = shared.tally.borrow();
    let book = shared.book.borrow();
    let h = &tally.latency;
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency = if h.is_empty() {
        json!({"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0})
    } else {
        json!({
            "count": h.len(),
            "mean": h.mean() / 1000.0,
            "p50": us(h.value_at_quantile(0.50)),
            "p90": us(h.value_at_quantile(0.90)),
            "p99": us(h.value_at_quantile(0.99)),
            "p999": us(h.value_at_quantile(0.999)),
            "max": us(h.max()),
        })
    };
    let (out_segs, per_segment) = samples.segments(units);
    let errors = book.dial_failures + book.closed + shared.send_errors.get() + tally.malformed;
    let mut out = json!({
        "client": "peer-load",
        "scenario": scenario,
        "url": common.url,
        "workers": 1,
        "client_backend": BACKEND,
        "read_buffer": common.read_buffer,
        "warmup_s": common.warmup.as_secs_f64(),
        "duration_s": common.duration.as_secs_f64(),
        "latency_us": latency,
        "timeline": tally.timeline,
        "server": samples.server_figures(units, connections),
        "errors": errors,
        "error_samples": book.samples,
        "thresholds": [],
        "out_segs": out_segs,
        "deliveries_per_segment": per_segment,
    });
    if let Value::Object(map) = &mut out {
        map.extend(figures);
    }
    out
}

/// A few lines for a person, from the report.
pub fn summary(r: &Value) -> String {
    let n = |key: &str| r[key].as_f64().unwrap_or(0.0);
    let mut s = format!(
        "peer-load {} {} ({}), {:.1} s measured after {:.1} s warm-up\n",
        r["scenario"].as_str().unwrap_or("?"),
        r["url"].as_str().unwrap_or("?"),
        BACKEND,
        n("duration_s"),
        n("warmup_s")
    );
    if r["scenario"] == "fanout" {
        let mode = match r["rate"].as_f64() {
            Some(rate) => format!("{rate} msg/s"),
            None => format!("max throughput, window {}", r["window"]),
        };
        s += &format!(
            "  {} subscribers ({} open), {} publishers, {} B, {mode}\n",
            r["subscribers"], r["subscribers_open"], r["publishers"], r["size"]
        );
        s += &format!(
            "  published {} ({:.0}/s), deliveries {} of {} expected ({:.0}/s)\n",
            r["published"],
            n("publishes_per_s"),
            r["received"],
            r["expected"],
            n("deliveries_per_s")
        );
    } else {
        s += &format!(
            "  {} connections ({} open), pipeline {}, {} B\n  sent {}, echoed {} ({:.0} msg/s)\n",
            r["connections"],
            r["connections_open"],
            r["pipeline"],
            r["size"],
            r["sent"],
            r["received"],
            n("messages_per_s")
        );
    }
    s += &format!(
        "  loss {}, duplicates {}, out of order {}, malformed {}, server's own lines {}\n",
        r["loss"], r["duplicates"], r["out_of_order"], r["malformed"], r["other_lines"]
    );
    let l = &r["latency_us"];
    s += &format!(
        "  latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)\n",
        l["p50"], l["p90"], l["p99"], l["p999"], l["max"], l["count"]
    );
    s += &format!(
        "  TCP segments sent (whole machine): {}, {:.2} per segment\n",
        r["out_segs"],
        n("deliveries_per_segment")
    );
    if let Some(v) = r["server"].as_object() {
        s += &format!(
            "  server {}: {:.2} CPU-s (kernel {:.2}), {:.3} CPU-s per million, RSS {} -> {} -> {} KiB\n",
            v["pid"],
            v["cpu_s"].as_f64().unwrap_or(0.0),
            v["system_cpu_s"].as_f64().unwrap_or(0.0),
            v["cpu_s_per_million"].as_f64().unwrap_or(0.0),
            v["rss_before_kib"],
            v["rss_connected_kib"],
            v["rss_after_kib"]
        );
    }
    s += &format!("  errors {}\n", r["errors"]);
    for e in r["error_samples"].as_array().into_iter().flatten() {
        s += &format!("    {}\n", e.as_str().unwrap_or_default());
    }
    s
}

/// `n` per second of `common`'s measured window.
pub fn per_s(common: &Common, n: u64) -> f64 {
    let s = common.duration.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}
