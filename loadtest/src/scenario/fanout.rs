//! Fan-out: one room, publishers and subscribers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ringcast::proto::handshake::Request;
use ringcast::server::{ConnId, Handler, ServerHandle, Socket};
use ringcast::{CloseCode, Error, MessageType};

use super::{pace, BoxError, Common, Watch, Window, SETTLE};
use crate::client::{self, instant_at, now_ns, ns_at, Fleet, Link};
use crate::monitor::Monitor;
use crate::payload::{Payload, Stamp};
use crate::report::{FanoutFigures, Figures, Report};
use crate::stats::{Arrival, SeqTracker, Tally};

/// Tag bit of publisher connections; the rest of the tag is the publisher's id.
/// Subscribers' tags are their index.
const PUBLISHER: u64 = 1 << 63;

/// The fan-out scenario's settings.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// Subscriber connections.
    pub subscribers: u32,
    /// Publisher connections.
    pub publishers: u32,
    /// The messages' size and filler.
    pub payload: Payload,
    /// Publishes per second, all publishers together; `None`: max throughput.
    pub rate: Option<f64>,
    /// Max throughput: messages per publisher not yet delivered to every subscriber.
    pub window: u32,
    /// Warm-up, not measured.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long to wait after the window for deliveries still on their way.
    pub grace: Duration,
}

/// A shared counter alone on its cache lines, so that workers never write the same one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// One publisher's flow control in max-throughput mode.
///
/// The window counts messages not yet delivered to *every* subscriber. (Counting only
/// the publisher's own copy coming back, as a simpler generator would, lets the server
/// serve the publisher first while subscribers fall behind, until servers that shed slow
/// readers drop them: tt-server closed 593 of 1000 subscribers that way in a trial.)
/// Each worker publishes how far its own subscribers have all got (`FanoutPlan::done`);
/// whoever moves that forward releases the messages the window now allows, sending them
/// through [`ServerHandle::send_to`] on the publisher's connection. `busy` keeps one
/// releaser at a time, so messages enter the publisher's queue in sequence order;
/// `pending` makes the releaser look again when another was turned away meanwhile. Both
/// are tried, never waited on.
#[derive(Debug, Default)]
struct Gate {
    conn: OnceLock<ConnId>,
    /// The next sequence number to send (written only by the holder of `busy`).
    next_seq: AtomicU64,
    busy: AtomicBool,
    pending: AtomicBool,
}

/// What the fan-out workers share with the main thread.
#[derive(Debug)]
struct FanoutPlan {
    publishers: u32,
    workers: usize,
    payload: Payload,
    window: u32,
    max_throughput: bool,
    clock: Window,
    gates: Box<[Gate]>,
    /// `[worker * publishers + publisher]`: how many of the publisher's messages (from
    /// seq 0) every subscriber of the worker has received; `u64::MAX` for a worker
    /// without subscribers.
    done: Box<[Slot]>,
}

impl FanoutPlan {
    /// Sends what publisher `p`'s window allows, if no one else is at it; returns how
    /// many of the messages sent fall in the measured window.
    fn release(
        &self,
        p: usize,
        handle: &ServerHandle,
        rng: &mut fastrand::Rng,
        out: &mut Vec<u8>,
    ) -> (u64, u64) {
        let gate = &self.gates[p];
        let Some(&conn) = gate.conn.get() else {
            return (0, 0);
        };
        let (_, start, end) = self.clock.get();
        let (mut counted, mut errors) = (0, 0);
        gate.pending.store(true, Ordering::SeqCst);
        loop {
            if gate
                .busy
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return (counted, errors); // the holder will see `pending`
            }
            gate.pending.store(false, Ordering::SeqCst);
            let everyone = (0..self.workers)
                .map(|w| {
                    self.done[w * self.publishers as usize + p]
                        .0
                        .load(Ordering::SeqCst)
                })
                .min()
                .unwrap_or(0);
            let bound = everyone.saturating_add(u64::from(self.window));
            let mut seq = gate.next_seq.load(Ordering::SeqCst);
            while seq < bound {
                let time = now_ns();
                if time >= end {
                    break;
                }
                let stamp = Stamp {
                    sender: p as u32,
                    seq,
                    time,
                };
                self.payload.write(&stamp, rng, out);
                if handle
                    .send_to(conn, MessageType::Text, out.clone())
                    .is_err()
                {
                    errors += 1;
                    break;
                }
                seq += 1;
                if time >= start {
                    counted += 1;
                }
            }
            gate.next_seq.store(seq, Ordering::SeqCst);
            gate.busy.store(false, Ordering::SeqCst);
            if !gate.pending.load(Ordering::SeqCst) {
                return (counted, errors);
            }
        }
    }
}

/// A fan-out connection's part.
#[derive(Debug, Default)]
enum Member {
    /// Not open yet, or opened after publishing started (not counted).
    #[default]
    Bystander,
    /// Counts what each publisher's messages do on the way to it.
    Subscriber(Box<[SeqTracker]>),
    /// Publishes (the main thread, the pacer or the flow control send on it). Its own
    /// messages come back to it, since the room includes the sender; they and other
    /// publishers' messages are ignored: publishers are not subscribers.
    Publisher,
}

/// How far one worker's subscribers have all got with one publisher's messages.
#[derive(Debug)]
struct Flow {
    /// Messages (from seq 0) every local subscriber has received.
    done: u64,
    /// Receptions of the messages after those, by `seq % counts.len()`.
    counts: Box<[u32]>,
}

/// One worker's fan-out handler.
struct FanoutWorker {
    link: Link,
    plan: Arc<FanoutPlan>,
    tally: Tally,
    seen: u64,
    /// Subscribers on this worker that were open when publishing started.
    local: u32,
    /// Max throughput: per publisher.
    flows: Vec<Flow>,
    /// Publishers whose `done` moved during the current callback.
    moved: Vec<usize>,
    handle: Option<ServerHandle>,
    rng: fastrand::Rng,
    out: Vec<u8>,
}

impl FanoutWorker {
    fn new(link: Link, plan: Arc<FanoutPlan>) -> FanoutWorker {
        let ring = (plan.window as usize).next_power_of_two() * 2;
        let flows = (0..plan.publishers)
            .map(|_| Flow {
                done: 0,
                counts: vec![0; ring].into_boxed_slice(),
            })
            .collect();
        FanoutWorker {
            link,
            plan,
            tally: Tally::default(),
            seen: 0,
            local: 0,
            flows,
            moved: Vec::new(),
            handle: None,
            rng: fastrand::Rng::new(),
            out: Vec::new(),
        }
    }

    /// A subscriber's frame: one message, or several joined by `\n` (gorilla's chat
    /// example joins what is queued for a client into one frame).
    fn deliveries(&mut self, from: &mut [SeqTracker], now: u64, payload: &[u8]) {
        let (origin, start, end) = self.plan.clock.get();
        let mut lines = 0;
        for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(stamp) = Stamp::parse(line) else {
                self.foreign(line);
                continue;
            };
            lines += 1;
            let Some(tracker) = from.get_mut(stamp.sender as usize) else {
                self.tally.malformed += 1;
                continue;
            };
            let arrival = tracker.observe(stamp.seq);
            if arrival != Arrival::Duplicate && self.plan.max_throughput {
                self.count_reception(stamp.sender as usize, stamp.seq);
            }
            if stamp.time < start || stamp.time >= end {
                continue;
            }
            match arrival {
                Arrival::Duplicate => {
                    self.tally.duplicates += 1;
                    continue;
                }
                Arrival::Late => self.tally.out_of_order += 1,
                Arrival::InOrder => {}
            }
            self.tally.received += 1;
            self.link
                .latency(&mut self.tally, now.saturating_sub(stamp.time));
        }
        self.seen += lines;
        self.tally.timeline.add(now.saturating_sub(origin), lines);
    }

    /// A line that is not one of ours: mangled, or the server's own.
    fn foreign(&mut self, line: &[u8]) {
        if Stamp::looks_like_one(line) {
            self.tally.malformed += 1;
        } else {
            self.tally.other += 1;
        }
    }

    /// Max throughput: one local subscriber received message `seq` of publisher `p`.
    fn count_reception(&mut self, p: usize, seq: u64) {
        let flow = &mut self.flows[p];
        let ring = flow.counts.len() as u64;
        // The window keeps every message in flight within `ring` of `done`.
        if seq < flow.done || seq >= flow.done + ring {
            return;
        }
        flow.counts[(seq % ring) as usize] += 1;
        if Self::advance(flow, self.local) && !self.moved.contains(&p) {
            self.moved.push(p);
        }
    }

    /// Moves `done` past every message all `local` subscribers have; whether it moved.
    fn advance(flow: &mut Flow, local: u32) -> bool {
        if local == 0 {
            return false; // nobody left to wait for: see `release_moved`
        }
        let ring = flow.counts.len() as u64;
        let before = flow.done;
        while flow.counts[(flow.done % ring) as usize] >= local {
            flow.counts[(flow.done % ring) as usize] = 0;
            flow.done += 1;
        }
        flow.done != before
    }

    /// Publishes this worker's progress for the publishers that moved, and sends what
    /// their windows now allow.
    fn release_moved(&mut self, socket: &Socket<'_, Member>) {
        if self.moved.is_empty() {
            return;
        }
        let handle = self.handle.get_or_insert_with(|| socket.server());
        let worker = socket.worker();
        for p in self.moved.drain(..) {
            let done = if self.local == 0 {
                u64::MAX
            } else {
                self.flows[p].done
            };
            self.plan.done[worker * self.plan.publishers as usize + p]
                .0
                .store(done, Ordering::SeqCst);
            let (counted, errors) = self.plan.release(p, handle, &mut self.rng, &mut self.out);
            self.tally.sent += counted;
            self.tally.send_errors += errors;
        }
        self.link
            .live()
            .sent
            .store(self.tally.sent, Ordering::Relaxed);
    }
}

impl Handler for FanoutWorker {
    type Data = Member;

    fn on_open(&mut self, socket: &mut Socket<'_, Member>, _request: &Request) {
        let tag = socket.tag();
        let started = self.plan.clock.get().1 != u64::MAX;
        *socket.data() = if tag & PUBLISHER != 0 {
            Member::Publisher
        } else if started {
            Member::Bystander
        } else {
            self.local += 1;
            let trackers = vec![SeqTracker::default(); self.plan.publishers as usize];
            Member::Subscriber(trackers.into_boxed_slice())
        };
        self.link.opened(tag, socket.id());
    }

    fn on_message(&mut self, socket: &mut Socket<'_, Member>, _kind: MessageType, payload: &[u8]) {
        // One clock read per receive, not per message: the messages of one receive reached
        // this process together.
        let arrival = ns_at(socket.received_at());
        if let Member::Subscriber(from) = socket.data() {
            self.deliveries(from, arrival, payload);
            let live = self.link.live();
            live.seen.store(self.seen, Ordering::Relaxed);
            live.received.store(self.tally.received, Ordering::Relaxed);
            self.release_moved(socket);
        }
    }

    fn on_close(&mut self, socket: &mut Socket<'_, Member>, code: CloseCode, reason: &str) {
        self.link.closed(socket.tag(), code.into(), reason);
        if matches!(socket.data(), Member::Subscriber(_)) {
            // One subscriber fewer to wait for: the others may have all got further.
            self.local -= 1;
            for p in 0..self.flows.len() {
                if Self::advance(&mut self.flows[p], self.local) || self.local == 0 {
                    self.moved.push(p);
                }
            }
            *socket.data() = Member::Bystander;
            if self.plan.max_throughput && self.plan.clock.get().1 != u64::MAX {
                self.release_moved(socket);
            } else {
                self.moved.clear();
            }
        }
    }

    fn on_dial_error(&mut self, tag: u64, error: Error) {
        self.link.dial_failed(tag, &error);
    }
}

impl Drop for FanoutWorker {
    fn drop(&mut self) {
        self.link.report(std::mem::take(&mut self.tally));
    }
}

/// Runs the fan-out scenario.
pub fn fanout(common: &Common, f: &Fanout) -> Result<Report, BoxError> {
    if f.subscribers == 0 || f.publishers == 0 {
        return Err("fanout needs at least one subscriber and one publisher".into());
    }
    if f.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    let mut watch = Watch::new(common.server_pid)?;
    let workers = client::worker_count(common.fleet.workers);
    let plan = Arc::new(FanoutPlan {
        publishers: f.publishers,
        workers,
        payload: f.payload.clone(),
        window: f.window.max(1),
        max_throughput: f.rate.is_none(),
        clock: Window::default(),
        gates: (0..f.publishers).map(|_| Gate::default()).collect(),
        done: (0..workers * f.publishers as usize)
            .map(|_| Slot::default())
            .collect(),
    });
    let shared = plan.clone();
    let mut fleet = Fleet::start(common.fleet.clone(), move |link| {
        FanoutWorker::new(link, shared.clone())
    })?;
    let mut monitor = Monitor::new(common, "deliveries/s")?;
    watch.before = watch.sample();

    // Subscribers first: every one is in the room before the first publish.
    let subscribers: Vec<u64> = (0..u64::from(f.subscribers)).collect();
    let publishers: Vec<u64> = (0..u64::from(f.publishers))
        .map(|i| PUBLISHER | i)
        .collect();
    for tags in [&subscribers, &publishers] {
        fleet.connect_all(tags, common.concurrency, common.connect_timeout, |fl| {
            monitor.tick(fl)
        })?;
    }
    fleet.wait_until(Instant::now() + SETTLE, |fl| monitor.tick(fl));
    let mut per_worker = vec![0u64; workers];
    for (&tag, id) in &fleet.roster.ids {
        if tag & PUBLISHER == 0 {
            per_worker[id.worker()] += 1;
        }
    }
    let subscribers_open: u64 = per_worker.iter().sum();
    let open_publishers: Vec<(u32, ConnId)> = (0..f.publishers)
        .filter_map(|i| {
            let id = fleet.roster.ids.get(&(PUBLISHER | u64::from(i)))?;
            Some((i, *id))
        })
        .collect();
    if open_publishers.is_empty() || subscribers_open == 0 {
        let why = format!(
            "{subscribers_open} of {} subscribers and {} of {} publishers opened within {:?}; {}",
            f.subscribers,
            open_publishers.len(),
            f.publishers,
            common.connect_timeout,
            fleet.roster.samples.join("; ")
        );
        fleet.stop();
        return Err(why.into());
    }
    for (w, &count) in per_worker.iter().enumerate() {
        if count == 0 {
            for p in 0..f.publishers as usize {
                plan.done[w * f.publishers as usize + p]
                    .0
                    .store(u64::MAX, Ordering::SeqCst);
            }
        }
    }
    for &(p, conn) in &open_publishers {
        let _ = plan.gates[p as usize].conn.set(conn);
    }
    watch.connected = watch.sample();

    let origin = now_ns();
    let (start, end) = plan.clock.set(origin, f.warmup, f.duration);
    let (mut first_sent, mut first_errors) = (0u64, 0u64);
    let pacer = match f.rate {
        Some(rate) => {
            let (handle, publishers, payload) = (
                fleet.handle().clone(),
                open_publishers.clone(),
                f.payload.clone(),
            );
            Some(std::thread::spawn(move || {
                pace(handle, publishers, rate, payload, (origin, start, end))
            }))
        }
        None => {
            // Max throughput: each publisher's first window; deliveries release the rest.
            let (mut rng, mut out) = (fastrand::Rng::new(), Vec::new());
            for &(p, _) in &open_publishers {
                let (counted, errors) =
                    plan.release(p as usize, fleet.handle(), &mut rng, &mut out);
                first_sent += counted;
                first_errors += errors;
            }
            None
        }
    };
    fleet.wait_until(instant_at(start), |fl| monitor.tick(fl));
    watch.window_start();
    fleet.wait_until(instant_at(end), |fl| monitor.tick(fl));
    watch.window_end();
    let (paced, pace_errors) = match pacer {
        Some(thread) => thread.join().map_err(|_| "the pacing thread panicked")?,
        None => (0, 0),
    };

    // Grace: until every expected delivery has arrived, or time is up.
    let grace_end = Instant::now() + f.grace;
    while Instant::now() < grace_end {
        let totals = fleet.totals();
        let published = totals.sent + paced + first_sent;
        if totals.received >= published * subscribers_open {
            break;
        }
        fleet.wait_until(
            (Instant::now() + Duration::from_millis(20)).min(grace_end),
            |fl| monitor.tick(fl),
        );
    }
    monitor.finish(&fleet)?;
    let backend = fleet.backends().into_iter().next().unwrap_or_default();
    let (tally, roster) = fleet.finish();

    let published = tally.sent + paced + first_sent;
    let expected = published * subscribers_open;
    let seconds = f.duration.as_secs_f64();
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let send_errors = tally.send_errors + pace_errors + first_errors;
    let errors = roster.dial_failures + roster.closed + send_errors + tally.malformed;
    let (out_segs, deliveries_per_segment) = watch.segments(tally.received);
    Ok(Report {
        scenario: "fanout",
        url: common.fleet.target.url().to_owned(),
        workers,
        client_backend: backend,
        warmup_s: f.warmup.as_secs_f64(),
        duration_s: seconds,
        figures: Figures::Fanout(FanoutFigures {
            subscribers: u64::from(f.subscribers),
            publishers: u64::from(f.publishers),
            subscribers_open,
            size: f.payload.size,
            payload: f.payload.kind(),
            rate: f.rate,
            window: u64::from(plan.window),
            published,
            expected,
            received: tally.received,
            loss: expected as i64 - tally.received as i64,
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            malformed: tally.malformed,
            other_lines: tally.other,
            send_errors,
            dial_failures: roster.dial_failures,
            closed: roster.closed,
            publishes_per_s: per_s(published),
            deliveries_per_s: per_s(tally.received),
            out_segs,
            deliveries_per_segment,
        }),
        latency_us: tally.latency.summary(),
        timeline: tally.timeline.seconds().to_vec(),
        server: watch.figures(
            tally.received,
            subscribers_open + open_publishers.len() as u64,
        ),
        errors,
        error_samples: roster.samples,
        thresholds: Vec::new(),
        latency: tally.latency,
    })
}
