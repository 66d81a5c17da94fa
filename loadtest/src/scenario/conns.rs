//! Connections: a ramp of idle connections, held, then closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast::proto::handshake::Request;
use ringcast::server::{Handler, Socket};
use ringcast::{CloseCode, Error, MessageType};

use super::{BoxError, Common, Watch};
use crate::client::{instant_at, now_ns, Fleet, Link};
use crate::monitor::Monitor;
use crate::report::{ConnsFigures, Figures, Report};
use crate::stats::Tally;

/// The connection scenario's settings.
#[derive(Debug, Clone)]
pub struct Conns {
    /// Connections to open.
    pub connections: u32,
    /// Dials per second.
    pub rate: f64,
    /// How long to hold them open, idle, once all are open.
    pub hold: Duration,
}

/// One worker's handler for the connection scenario. A dial's tag is the time it was
/// started, so its connect latency (TCP and handshake) is known when it opens.
struct ConnsWorker {
    link: Link,
    origin: Arc<AtomicU64>,
    tally: Tally,
    opened: u64,
}

impl Handler for ConnsWorker {
    type Data = ();

    fn on_open(&mut self, socket: &mut Socket<'_, ()>, _request: &Request) {
        let now = now_ns();
        let tag = socket.tag();
        self.link.latency(&mut self.tally, now.saturating_sub(tag));
        let origin = self.origin.load(Ordering::Relaxed);
        self.tally.timeline.add(now.saturating_sub(origin), 1);
        self.tally.received += 1;
        self.opened += 1;
        self.link.live().seen.store(self.opened, Ordering::Relaxed);
        self.link.opened(tag, socket.id());
    }

    fn on_message(&mut self, _socket: &mut Socket<'_, ()>, _kind: MessageType, _payload: &[u8]) {
        // Idle connections send nothing; what a server sends them is its own business.
        self.tally.other += 1;
    }

    fn on_close(&mut self, socket: &mut Socket<'_, ()>, code: CloseCode, reason: &str) {
        self.link.closed(socket.tag(), code.into(), reason);
    }

    fn on_dial_error(&mut self, tag: u64, error: Error) {
        self.link.dial_failed(tag, &error);
    }
}

impl Drop for ConnsWorker {
    fn drop(&mut self) {
        self.link.report(std::mem::take(&mut self.tally));
    }
}

/// Runs the connection scenario: dial `connections` at `rate` per second (open loop: a
/// dial is never held back by slow earlier ones), wait for each to open or fail, let them
/// sit idle a second and sample the server, hold them, then close them.
pub fn conns(common: &Common, c: &Conns) -> Result<Report, BoxError> {
    if !(c.rate > 0.0 && c.rate.is_finite()) {
        return Err("--rate must be a positive number".into());
    }
    let mut watch = Watch::new(common.server_pid)?;
    let origin = Arc::new(AtomicU64::new(0));
    let shared = origin.clone();
    let mut fleet = Fleet::start(common.fleet.clone(), move |link| ConnsWorker {
        link,
        origin: shared.clone(),
        tally: Tally::default(),
        opened: 0,
    })?;
    let mut monitor = Monitor::new(common, "connections/s")?;
    watch.before = watch.sample();
    watch.start = watch.before;

    let first = now_ns();
    origin.store(first, Ordering::Relaxed);
    let interval = 1e9 / c.rate;
    let total = c.connections as usize;
    let mut dialed = 0usize;
    while dialed < total {
        let now = now_ns();
        while dialed < total && first + (dialed as f64 * interval) as u64 <= now {
            fleet.dial(now_ns())?;
            dialed += 1;
        }
        if dialed < total {
            let due = instant_at(first + (dialed as f64 * interval) as u64);
            fleet.wait_until(due.min(Instant::now() + Duration::from_millis(50)), |fl| {
                monitor.tick(fl)
            });
        }
    }
    // Every dial ends in an open or a failure within the handshake timeout (10 s).
    let settle_end = Instant::now() + Duration::from_secs(15);
    while (fleet.roster.opened + fleet.roster.dial_failures) < total as u64
        && Instant::now() < settle_end
    {
        fleet.poll_events(Duration::from_millis(50));
        monitor.tick(&fleet);
    }
    let ramp_s = (now_ns() - first) as f64 / 1e9;
    fleet.wait_until(Instant::now() + Duration::from_secs(1), |fl| {
        monitor.tick(fl)
    });
    watch.connected = watch.sample();
    watch.end = watch.connected;
    fleet.wait_until(Instant::now() + c.hold, |fl| monitor.tick(fl));
    let after_hold = watch.sample();
    monitor.finish(&fleet)?;
    let backend = fleet.backends().into_iter().next().unwrap_or_default();
    let workers = fleet.workers();
    let (tally, roster) = fleet.finish();

    let opened = tally.received;
    let mut server = watch.figures(opened, opened);
    if let (Some(server), Some(after)) = (server.as_mut(), after_hold) {
        server.rss_after_kib = after.rss_kib;
    }
    Ok(Report {
        scenario: "conns",
        url: common.fleet.target.url().to_owned(),
        workers,
        client_backend: backend,
        warmup_s: 0.0,
        duration_s: c.hold.as_secs_f64(),
        figures: Figures::Conns(ConnsFigures {
            connections: u64::from(c.connections),
            rate: c.rate,
            hold_s: c.hold.as_secs_f64(),
            opened,
            failed: roster.dial_failures,
            closed: roster.closed,
            messages: tally.other,
            ramp_s,
            connects_per_s: if ramp_s > 0.0 {
                opened as f64 / ramp_s
            } else {
                0.0
            },
        }),
        latency_us: tally.latency.summary(),
        timeline: tally.timeline.seconds().to_vec(),
        server,
        errors: roster.dial_failures + roster.closed,
        error_samples: roster.samples,
        thresholds: Vec::new(),
        latency: tally.latency,
    })
}
