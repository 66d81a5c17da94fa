//! Echo: request and echo, each connection keeping a pipeline of messages in flight.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast::proto::handshake::Request;
use ringcast::server::{ConnId, Handler, Socket};
use ringcast::{CloseCode, Error, MessageType};

use super::{pace, BoxError, Common, Watch, Window, SETTLE};
use crate::client::{instant_at, now_ns, ns_at, Fleet, Link};
use crate::monitor::Monitor;
use crate::payload::{Payload, Stamp};
use crate::report::{EchoFigures, Figures, Report};
use crate::stats::{Arrival, SeqTracker, Tally};

/// The echo scenario's settings.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Connections.
    pub connections: u32,
    /// Messages in flight per connection (closed loop).
    pub pipeline: u32,
    /// Open loop: messages per second, all connections together, on a fixed schedule
    /// whatever the echoes do; `None`: closed loop, `pipeline` in flight.
    pub rate: Option<f64>,
    /// The messages' size and filler.
    pub payload: Payload,
    /// Warm-up, not measured.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long to wait after the window for echoes still on their way.
    pub grace: Duration,
}

/// What the echo workers share with the main thread.
#[derive(Debug)]
struct EchoPlan {
    payload: Payload,
    pipeline: u32,
    /// Open loop: an echo releases nothing.
    open_loop: bool,
    clock: Window,
}

/// An echo connection's part: its index (the sender id in its messages), its next
/// sequence number, and what came back so far.
#[derive(Debug, Default)]
struct EchoConn {
    index: u32,
    next_seq: u64,
    tracker: SeqTracker,
}

/// One worker's echo handler: in a closed loop each echo that comes back releases the next
/// message, so every connection keeps `pipeline` in flight; in an open loop the pacer
/// sends and the handler only counts.
struct EchoWorker {
    link: Link,
    plan: Arc<EchoPlan>,
    tally: Tally,
    seen: u64,
    rng: fastrand::Rng,
    out: Vec<u8>,
}

impl Handler for EchoWorker {
    type Data = EchoConn;

    fn on_open(&mut self, socket: &mut Socket<'_, EchoConn>, _request: &Request) {
        let tag = socket.tag();
        *socket.data() = EchoConn {
            index: tag as u32,
            // The main thread sends the first `pipeline` messages.
            next_seq: u64::from(self.plan.pipeline),
            tracker: SeqTracker::default(),
        };
        self.link.opened(tag, socket.id());
    }

    fn on_message(
        &mut self,
        socket: &mut Socket<'_, EchoConn>,
        _kind: MessageType,
        payload: &[u8],
    ) {
        let now = ns_at(socket.received_at());
        let (origin, start, end) = self.plan.clock.get();
        let mut release = 0;
        for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let conn = socket.data();
            let stamp = match Stamp::parse(line) {
                Some(stamp) if stamp.sender == conn.index => stamp,
                Some(_) => {
                    self.tally.malformed += 1;
                    continue;
                }
                None if Stamp::looks_like_one(line) => {
                    self.tally.malformed += 1;
                    continue;
                }
                None => {
                    self.tally.other += 1;
                    continue;
                }
            };
            self.seen += 1;
            let arrival = conn.tracker.observe(stamp.seq);
            if arrival == Arrival::Duplicate {
                if stamp.time >= start && stamp.time < end {
                    self.tally.duplicates += 1;
                }
                continue;
            }
            if !self.plan.open_loop {
                release += 1;
            }
            if stamp.time >= start && stamp.time < end {
                if arrival == Arrival::Late {
                    self.tally.out_of_order += 1;
                }
                self.tally.received += 1;
                self.link
                    .latency(&mut self.tally, now.saturating_sub(stamp.time));
            }
            self.tally.timeline.add(now.saturating_sub(origin), 1);
        }
        for _ in 0..release {
            if now >= end {
                break;
            }
            let conn = socket.data();
            let stamp = Stamp {
                sender: conn.index,
                seq: conn.next_seq,
                time: now,
            };
            conn.next_seq += 1;
            self.plan
                .payload
                .write(&stamp, &mut self.rng, &mut self.out);
            if socket.send(MessageType::Text, &self.out).is_err() {
                self.tally.send_errors += 1;
                self.link.live().errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if now >= start {
                self.tally.sent += 1;
            }
        }
        let live = self.link.live();
        live.seen.store(self.seen, Ordering::Relaxed);
        live.received.store(self.tally.received, Ordering::Relaxed);
        live.sent.store(self.tally.sent, Ordering::Relaxed);
    }

    fn on_close(&mut self, socket: &mut Socket<'_, EchoConn>, code: CloseCode, reason: &str) {
        self.link.closed(socket.tag(), code.into(), reason);
    }

    fn on_dial_error(&mut self, tag: u64, error: Error) {
        self.link.dial_failed(tag, &error);
    }
}

impl Drop for EchoWorker {
    fn drop(&mut self) {
        self.link.report(std::mem::take(&mut self.tally));
    }
}

/// Runs the echo scenario.
pub fn echo(common: &Common, e: &Echo) -> Result<Report, BoxError> {
    if e.connections == 0 {
        return Err("echo needs at least one connection".into());
    }
    if e.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    let mut watch = Watch::new(common.server_pid)?;
    let plan = Arc::new(EchoPlan {
        payload: e.payload.clone(),
        pipeline: e.pipeline.max(1),
        open_loop: e.rate.is_some(),
        clock: Window::default(),
    });
    let shared = plan.clone();
    let mut fleet = Fleet::start(common.fleet.clone(), move |link| EchoWorker {
        link,
        plan: shared.clone(),
        tally: Tally::default(),
        seen: 0,
        rng: fastrand::Rng::new(),
        out: Vec::new(),
    })?;
    let mut monitor = Monitor::new(common, "echoes/s")?;
    watch.before = watch.sample();
    let tags: Vec<u64> = (0..u64::from(e.connections)).collect();
    fleet.connect_all(&tags, common.concurrency, common.connect_timeout, |fl| {
        monitor.tick(fl)
    })?;
    fleet.wait_until(Instant::now() + SETTLE, |fl| monitor.tick(fl));
    let mut open: Vec<(u64, ConnId)> = fleet
        .roster
        .ids
        .iter()
        .map(|(&tag, &id)| (tag, id))
        .collect();
    open.sort_unstable();
    if open.is_empty() {
        let why = format!(
            "no connection opened within {:?}; {}",
            common.connect_timeout,
            fleet.roster.samples.join("; ")
        );
        fleet.stop();
        return Err(why.into());
    }
    watch.connected = watch.sample();

    let origin = now_ns();
    let (start, end) = plan.clock.set(origin, e.warmup, e.duration);
    let mut first_sent = 0u64;
    let (mut rng, mut out) = (fastrand::Rng::new(), Vec::new());
    let pacer = e.rate.map(|rate| {
        let senders = open.iter().map(|&(tag, id)| (tag as u32, id)).collect();
        let (handle, payload) = (fleet.handle().clone(), plan.payload.clone());
        std::thread::spawn(move || pace(handle, senders, rate, payload, (origin, start, end)))
    });
    for &(tag, conn) in open.iter().filter(|_| pacer.is_none()) {
        for seq in 0..u64::from(plan.pipeline) {
            let time = now_ns();
            let stamp = Stamp {
                sender: tag as u32,
                seq,
                time,
            };
            plan.payload.write(&stamp, &mut rng, &mut out);
            fleet
                .handle()
                .send_to(conn, MessageType::Text, out.clone())?;
            if time >= start {
                first_sent += 1;
            }
        }
    }
    fleet.wait_until(instant_at(start), |fl| monitor.tick(fl));
    watch.window_start();
    fleet.wait_until(instant_at(end), |fl| monitor.tick(fl));
    watch.window_end();
    let (paced, pace_errors) = match pacer {
        Some(thread) => thread.join().map_err(|_| "the pacing thread panicked")?,
        None => (0, 0),
    };
    let grace_end = Instant::now() + e.grace;
    while Instant::now() < grace_end {
        let totals = fleet.totals();
        if totals.received >= totals.sent + first_sent + paced {
            break;
        }
        fleet.wait_until(
            (Instant::now() + Duration::from_millis(20)).min(grace_end),
            |fl| monitor.tick(fl),
        );
    }
    monitor.finish(&fleet)?;
    let backend = fleet.backends().into_iter().next().unwrap_or_default();
    let workers = fleet.workers();
    let (tally, roster) = fleet.finish();

    let sent = tally.sent + first_sent + paced;
    let send_errors = tally.send_errors + pace_errors;
    let seconds = e.duration.as_secs_f64();
    let errors = roster.dial_failures + roster.closed + send_errors + tally.malformed;
    let (out_segs, deliveries_per_segment) = watch.segments(tally.received);
    Ok(Report {
        scenario: "echo",
        url: common.fleet.target.url().to_owned(),
        workers,
        client_backend: backend,
        warmup_s: e.warmup.as_secs_f64(),
        duration_s: seconds,
        figures: Figures::Echo(EchoFigures {
            connections: u64::from(e.connections),
            connections_open: open.len() as u64,
            pipeline: if plan.open_loop {
                0
            } else {
                u64::from(plan.pipeline)
            },
            rate: e.rate,
            size: e.payload.size,
            payload: e.payload.kind(),
            sent,
            received: tally.received,
            loss: sent as i64 - tally.received as i64,
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            malformed: tally.malformed,
            other_lines: tally.other,
            send_errors,
            dial_failures: roster.dial_failures,
            closed: roster.closed,
            messages_per_s: if seconds > 0.0 {
                tally.received as f64 / seconds
            } else {
                0.0
            },
            out_segs,
            deliveries_per_segment,
        }),
        latency_us: tally.latency.summary(),
        timeline: tally.timeline.seconds().to_vec(),
        server: watch.figures(tally.received, open.len() as u64),
        errors,
        error_samples: roster.samples,
        thresholds: Vec::new(),
        latency: tally.latency,
    })
}
