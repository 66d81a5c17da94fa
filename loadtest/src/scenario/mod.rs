//! The scenarios, one module each: [`fanout`](mod@fanout) (one room, publishers and
//! subscribers), [`echo`](mod@echo) (request and echo, closed or open loop),
//! [`conns`](mod@conns) (a ramp of idle connections) and [`run`](mod@run) (a scenario
//! file, and `subscribe`). Each one starts a [`Fleet`](crate::client::Fleet) with its own
//! [`Handler`](ringcast::server::Handler), connects, measures, and returns a
//! [`Report`](crate::report::Report). What they share is here: the settings every scenario takes ([`Common`]),
//! the measured window ([`Window`]) and the server probe's samples ([`Watch`]).
//!
//! Time on every path is [`now_ns`]: a message carries the time it was meant to be sent,
//! and latency is counted from there, so a late send (the generator's or the server's
//! fault) shows as latency instead of vanishing (no coordinated omission). A run is
//! warm-up, then the measured window; only messages *sent* inside the window count,
//! wherever they arrive, and the run waits a grace period after the window for the last
//! of them.

mod conns;
mod echo;
mod fanout;
mod run;

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringcast::server::{ConnId, ServerHandle};
use ringcast::MessageType;

use crate::client::{now_ns, FleetConfig};
use crate::payload::{Payload, Stamp};
use crate::report::ServerFigures;
use crate::stats::{tcp_out_segs, ProcessSample, ServerProbe};

pub use conns::{conns, Conns};
pub use echo::{echo, Echo};
pub use fanout::{fanout, Fanout};
pub use run::run;

/// A boxed error for the command line.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Pause between the last open and the first message: servers may register a client in
/// its room just after the handshake, and a message sent before that would count as lost.
pub(crate) const SETTLE: Duration = Duration::from_millis(500);

/// Settings every scenario shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// Where and how to connect.
    pub fleet: FleetConfig,
    /// The server process to sample (CPU time, RSS), if any.
    pub server_pid: Option<u32>,
    /// JSON output: no progress line.
    pub json: bool,
    /// Where to write the time series, if anywhere.
    pub series: Option<PathBuf>,
    /// Handshakes under way at once while connecting (fanout, echo).
    pub concurrency: usize,
    /// How long connecting may take before the scenario goes on with what opened
    /// (fanout, echo).
    pub connect_timeout: Duration,
}

/// What the window of a run is, on [`now_ns`]'s clock. Set once by the main thread when
/// sending starts; read by every worker.
#[derive(Debug)]
pub(crate) struct Window {
    /// When sending started: second 0 of the timeline.
    origin: AtomicU64,
    /// The end of the warm-up.
    start: AtomicU64,
    /// The end of the measured window: nothing is sent from here on.
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            origin: AtomicU64::new(0),
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    pub(crate) fn set(&self, origin: u64, warmup: Duration, duration: Duration) -> (u64, u64) {
        let start = origin + warmup.as_nanos() as u64;
        let end = start + duration.as_nanos() as u64;
        self.origin.store(origin, Ordering::Relaxed);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        (start, end)
    }

    /// The origin, start and end.
    pub(crate) fn get(&self) -> (u64, u64, u64) {
        (
            self.origin.load(Ordering::Relaxed),
            self.start.load(Ordering::Relaxed),
            self.end.load(Ordering::Relaxed),
        )
    }
}

/// The server process's samples over a run.
pub(crate) struct Watch {
    probe: Option<ServerProbe>,
    pub(crate) before: Option<ProcessSample>,
    pub(crate) connected: Option<ProcessSample>,
    pub(crate) start: Option<ProcessSample>,
    pub(crate) end: Option<ProcessSample>,
    /// TCP segments sent (`OutSegs`) at the start and the end of the measured window.
    segs: (Option<u64>, Option<u64>),
}

impl Watch {
    pub(crate) fn new(pid: Option<u32>) -> Result<Watch, BoxError> {
        let probe = match pid {
            Some(pid) => Some(
                ServerProbe::new(pid)
                    .map_err(|e| format!("--server-pid {pid}: cannot read /proc: {e}"))?,
            ),
            None => None,
        };
        Ok(Watch {
            probe,
            before: None,
            connected: None,
            start: None,
            end: None,
            segs: (None, None),
        })
    }

    /// The start of the measured window: the server and the TCP segments sent so far.
    pub(crate) fn window_start(&mut self) {
        self.segs.0 = tcp_out_segs();
        self.start = self.sample();
    }

    /// The end of the measured window: the same.
    pub(crate) fn window_end(&mut self) {
        self.segs.1 = tcp_out_segs();
        self.end = self.sample();
    }

    /// TCP segments sent in the window (by every connection on the machine, both
    /// directions on loopback), and `units` (deliveries, echoes) per segment.
    pub(crate) fn segments(&self, units: u64) -> (Option<u64>, Option<f64>) {
        match self.segs {
            (Some(a), Some(b)) if b > a => (Some(b - a), Some(units as f64 / (b - a) as f64)),
            (Some(a), Some(b)) if b == a => (Some(0), None),
            _ => (None, None),
        }
    }

    pub(crate) fn sample(&self) -> Option<ProcessSample> {
        self.probe.as_ref().and_then(|p| p.sample().ok())
    }

    /// The figures, with `units` of work done in the window and `connections` open.
    pub(crate) fn figures(&self, units: u64, connections: u64) -> Option<ServerFigures> {
        let probe = self.probe.as_ref()?;
        let (before, connected) = (self.before?, self.connected?);
        let (start, end) = (self.start?, self.end?);
        let cpu_s = (end.cpu_seconds - start.cpu_seconds).max(0.0);
        let user_cpu_s = (end.user_seconds - start.user_seconds).max(0.0);
        let system_cpu_s = (end.system_seconds - start.system_seconds).max(0.0);
        let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Some(ServerFigures {
            pid: probe.pid(),
            cpu_s,
            per_cpu_s: per(units as f64, cpu_s),
            cpu_s_per_million: per(cpu_s * 1e6, units as f64),
            user_cpu_s,
            system_cpu_s,
            user_cpu_s_per_million: per(user_cpu_s * 1e6, units as f64),
            system_cpu_s_per_million: per(system_cpu_s * 1e6, units as f64),
            rss_before_kib: before.rss_kib,
            rss_connected_kib: connected.rss_kib,
            rss_after_kib: end.rss_kib,
            rss_per_connection_bytes: per(
                (connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0,
                connections as f64,
            ),
        })
    }
}

/// Sends `rate` messages per second over `senders` (sender id, connection) in turn, from
/// a plain thread, on a fixed schedule: message `k` is due at `origin + k / rate` and
/// carries that time, whenever it actually leaves, so a late send (the generator's or the
/// server's fault) counts as latency (no coordinated omission). Stops at `end`. Returns
/// (messages sent with a due time in `[start, end)`, refused sends).
pub(crate) fn pace(
    handle: ServerHandle,
    publishers: Vec<(u32, ConnId)>,
    rate: f64,
    payload: Payload,
    (origin, start, end): (u64, u64, u64),
) -> (u64, u64) {
    let interval = 1e9 / rate;
    let mut seqs = vec![0u64; publishers.len()];
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut rng = fastrand::Rng::new();
    let mut out = Vec::with_capacity(payload.size);
    let mut k: u64 = 0;
    loop {
        let due = origin + (k as f64 * interval) as u64;
        if due >= end {
            return (sent, errors);
        }
        let now = now_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
            continue;
        }
        let slot = (k % publishers.len() as u64) as usize;
        let (id, conn) = publishers[slot];
        let stamp = Stamp {
            sender: id,
            seq: seqs[slot],
            time: due,
        };
        payload.write(&stamp, &mut rng, &mut out);
        if handle.send_to(conn, MessageType::Text, out.clone()).is_ok() {
            seqs[slot] += 1;
            if due >= start {
                sent += 1;
            }
        } else {
            errors += 1;
        }
        k += 1;
    }
}
