//! Many client connections on ringcast's own engine: a [`Fleet`] is an engine started
//! without a listener (`ServerConfig { addr: None, .. }`) whose workers dial out
//! ([`ServerHandle::dial`]) and run the scenario's [`Handler`].
//!
//! Each worker's handler owns its counts (a [`Tally`]); it gives them back once, when
//! the engine stops and drops it (see [`Link::report`]). While the run goes on, the
//! handler stores running totals in its worker's own [`Live`] (one cache line per
//! worker, plain stores, no lock), which the progress line and the end-of-run grace
//! period read. Opens, dial failures and unexpected closes go to the main thread as
//! [`Event`]s: once per connection, never per message.
//!
//! Also here: the process-wide clock every timestamp is measured on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringcast::server::{ConnId, DriverConfig, Handler, Server, ServerConfig, ServerHandle};
use ringcast::{Error, Upgrader};

use crate::stats::{LiveHistogram, Tally};
use crate::target::Target;

/// The process-wide start: the monotonic clock, and the Unix time then in nanoseconds.
static START: OnceLock<(Instant, u64)> = OnceLock::new();

/// Nanoseconds since the process-wide start (the first call of this function or of
/// [`instant_at`]). Every timestamp in a message and every deadline is on this clock.
pub fn now_ns() -> u64 {
    start().elapsed().as_nanos() as u64
}

/// `at` in nanoseconds after the process-wide start (0 for an earlier instant).
pub fn ns_at(at: Instant) -> u64 {
    at.saturating_duration_since(start()).as_nanos() as u64
}

/// The `Instant` that is `ns` nanoseconds after the process-wide start.
pub fn instant_at(ns: u64) -> Instant {
    start() + Duration::from_nanos(ns)
}

/// Unix time now, in nanoseconds, on the monotonic clock from the process-wide start
/// (so it never steps back during a run, whatever NTP does).
pub fn unix_ns() -> u64 {
    unix_ns_at(Instant::now())
}

/// `at` as Unix time in nanoseconds (see [`unix_ns`]): when a server's timestamp is
/// compared with a message's arrival.
pub fn unix_ns_at(at: Instant) -> u64 {
    START.get_or_init(init).1 + ns_at(at)
}

fn start() -> Instant {
    START.get_or_init(init).0
}

fn init() -> (Instant, u64) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (Instant::now(), unix)
}

/// Running totals of one worker, written by that worker only, read by the main thread.
/// Aligned to its own cache lines so that workers never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Live {
    /// Messages received so far (every one, warm-up included), or connections opened.
    pub seen: AtomicU64,
    /// Messages received that count (inside the measured window, no duplicates).
    pub received: AtomicU64,
    /// Messages sent that count (inside the measured window).
    pub sent: AtomicU64,
    /// Open connections.
    pub open: AtomicU64,
    /// Dial failures, unexpected closes and refused sends.
    pub errors: AtomicU64,
    /// Latencies recorded so far, for the per-second series.
    pub latency: LiveHistogram,
}

/// The sums of every worker's [`Live`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTotals {
    /// See [`Live::seen`].
    pub seen: u64,
    /// See [`Live::received`].
    pub received: u64,
    /// See [`Live::sent`].
    pub sent: u64,
    /// See [`Live::open`].
    pub open: u64,
    /// See [`Live::errors`].
    pub errors: u64,
}

/// What a worker tells the main thread about a connection.
#[derive(Debug)]
pub enum Event {
    /// The connection with this tag opened and has this id.
    Opened {
        /// The dial's tag.
        tag: u64,
        /// The connection's id, for [`ServerHandle::send_to`].
        id: ConnId,
    },
    /// The dial with this tag failed.
    DialFailed {
        /// The dial's tag.
        tag: u64,
        /// Why.
        error: String,
    },
    /// The connection with this tag closed before the run's end.
    Closed {
        /// The dial's tag.
        tag: u64,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The connection with this tag ended as its scenario meant it to (its steps are
    /// done, or the run closed it): not an error.
    Finished {
        /// The dial's tag.
        tag: u64,
    },
}

/// A handler's way back to the fleet: its worker's [`Live`], the event channel, and the
/// channel its final [`Tally`] goes back on.
#[derive(Debug)]
pub struct Link {
    worker: usize,
    live: Arc<[Live]>,
    events: Sender<Event>,
    reports: Sender<Tally>,
    stopping: Arc<AtomicBool>,
}

impl Link {
    /// The worker this link belongs to.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// This worker's running totals.
    pub fn live(&self) -> &Live {
        &self.live[self.worker]
    }

    /// Notes that connection `tag` opened as `id`.
    pub fn opened(&self, tag: u64, id: ConnId) {
        self.live().open.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Event::Opened { tag, id });
    }

    /// Notes that the dial with `tag` failed.
    pub fn dial_failed(&self, tag: u64, error: &Error) {
        self.live().errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Event::DialFailed {
            tag,
            error: error.to_string(),
        });
    }

    /// Notes that connection `tag` closed; an error unless the fleet is stopping.
    pub fn closed(&self, tag: u64, code: u16, reason: &str) {
        self.live().open.fetch_sub(1, Ordering::Relaxed);
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        self.live().errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Event::Closed {
            tag,
            code,
            reason: reason.to_owned(),
        });
    }

    /// Records a latency of `ns` in the worker's counts and in its running totals.
    pub fn latency(&self, tally: &mut Tally, ns: u64) {
        tally.latency.record(ns);
        self.live().latency.record(ns);
    }

    /// Notes that connection `tag` ended as its scenario meant it to.
    pub fn finished(&self, tag: u64) {
        self.live().open.fetch_sub(1, Ordering::Relaxed);
        let _ = self.events.send(Event::Finished { tag });
    }

    /// Notes that a connection closed to be dialed again for the same user (its next
    /// open is reported as usual).
    pub fn reconnecting(&self) {
        self.live().open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hands the worker's counts back (from the handler's `Drop`, once the engine stops).
    pub fn report(&self, tally: Tally) {
        let _ = self.reports.send(tally);
    }
}

/// The number of engine workers `workers` asks for: itself, or for 0 one per CPU this
/// process may run on (so `taskset -c 1` gives one).
pub fn worker_count(workers: usize) -> usize {
    if workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        workers
    }
}

/// Where and how the fleet's connections dial.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The URL, headers, TLS... of every dial.
    pub target: Arc<Target>,
    /// Engine workers (0: one per CPU this process may run on).
    pub workers: usize,
}

/// What the main thread has learnt from the events so far.
#[derive(Debug, Default)]
pub struct Roster {
    /// Open connections by tag.
    pub ids: HashMap<u64, ConnId>,
    /// Connections that opened, ever.
    pub opened: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Connections that closed before the run's end.
    pub closed: u64,
    /// Connections that ended as their scenario meant them to.
    pub finished: u64,
    /// The first few error messages, for the report.
    pub samples: Vec<String>,
    /// Tags of dials that opened or failed since [`take_resolved`](Self::take_resolved).
    resolved: Vec<u64>,
    /// Tags of connections (or dials) that ended since [`take_ended`](Self::take_ended).
    ended: Vec<u64>,
}

impl Roster {
    const SAMPLES: usize = 5;

    fn note(&mut self, event: Event) {
        match event {
            Event::Opened { tag, id } => {
                self.ids.insert(tag, id);
                self.opened += 1;
                self.resolved.push(tag);
            }
            Event::DialFailed { tag, error } => {
                self.resolved.push(tag);
                self.ended.push(tag);
                self.dial_failures += 1;
                self.sample(format!("dial: {error}"));
            }
            Event::Closed { tag, code, reason } => {
                self.ids.remove(&tag);
                self.ended.push(tag);
                self.closed += 1;
                self.sample(format!("closed by the server: {code} {reason}"));
            }
            Event::Finished { tag } => {
                self.ids.remove(&tag);
                self.ended.push(tag);
                self.finished += 1;
            }
        }
    }

    /// The tags of dials that opened or failed since the last call.
    pub fn take_resolved(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.resolved)
    }

    /// The tags of connections that ended (closed, finished, or failed to dial) since the
    /// last call.
    pub fn take_ended(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.ended)
    }

    fn sample(&mut self, message: String) {
        if self.samples.len() < Self::SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }
}

/// Client connections on the engine, their events, and their counts.
pub struct Fleet {
    handle: ServerHandle,
    config: FleetConfig,
    /// Connections dialed so far: the next one's number (`{n}`).
    dialed: u64,
    live: Arc<[Live]>,
    events: Receiver<Event>,
    reports: Receiver<Tally>,
    stopping: Arc<AtomicBool>,
    /// What the events said so far.
    pub roster: Roster,
}

impl Fleet {
    /// Starts the engine, one handler per worker made by `factory` from its [`Link`].
    pub fn start<H, F>(config: FleetConfig, factory: F) -> Result<Fleet, Error>
    where
        H: Handler,
        F: Fn(Link) -> H + Send + Sync + 'static,
    {
        let workers = worker_count(config.workers);
        let live: Arc<[Live]> = (0..workers).map(|_| Live::default()).collect();
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let stopping = Arc::new(AtomicBool::new(false));
        let engine = ServerConfig {
            addr: None,
            workers,
            upgrader: Upgrader {
                // go-peer joins queued chat lines into one frame; let big ones through.
                read_limit: Some(64 << 20),
                handshake_timeout: Some(Duration::from_secs(10)),
                ..Upgrader::default()
            },
            // Open-loop publishers can run ahead of a slow server; measure that as
            // latency, not as closed connections.
            max_queued_bytes: 64 << 20,
            // The load generator's own pings would be traffic the scenario did not ask
            // for; the servers' pings are still answered.
            idle_timeout: None,
            ping_interval: None,
            // Fan-out floods thousands of sockets at once: a receive buffer for each of
            // them in one turn (16 MiB) keeps multishot receives from running dry.
            driver: DriverConfig {
                recv_buffers: 4096,
                ..DriverConfig::default()
            },
            close_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(3),
            ..ServerConfig::default()
        };
        let (live2, stopping2) = (live.clone(), stopping.clone());
        let handle = Server::new(engine).start(move |worker| {
            factory(Link {
                worker,
                live: live2.clone(),
                events: events_tx.clone(),
                reports: reports_tx.clone(),
                stopping: stopping2.clone(),
            })
        })?;
        Ok(Fleet {
            handle,
            config,
            dialed: 0,
            live,
            events,
            reports,
            stopping,
            roster: Roster::default(),
        })
    }

    /// The engine, to send to connections from the main thread.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The number of engine workers.
    pub fn workers(&self) -> usize {
        self.live.len()
    }

    /// What the engine runs on (backend and kernel features), per worker.
    pub fn backends(&self) -> Vec<String> {
        self.handle.backends()
    }

    /// The number (`{n}`) the next dial gets.
    pub fn next_n(&self) -> u64 {
        self.dialed
    }

    /// Opens the next connection with `tag` and returns its number `n` (0, 1, 2... in
    /// the order of dials): its URL and headers are filled in for `n`, and its worker and
    /// source address are chosen by `n`, in turn.
    pub fn dial(&mut self, tag: u64) -> Result<u64, Error> {
        let n = self.dialed;
        let worker = (n % self.workers() as u64) as usize;
        self.handle
            .dial(self.config.target.request(n, tag, worker))?;
        self.dialed += 1;
        Ok(n)
    }

    /// Dials one connection per tag, keeping at most `concurrency` handshakes under way
    /// (a burst of thousands of SYNs would overflow the server's accept queue and
    /// measure the kernel's retransmit timer), until every dial has opened or failed, or
    /// `timeout` has passed. `tick` runs between waits (the progress line).
    pub fn connect_all(
        &mut self,
        tags: &[u64],
        concurrency: usize,
        timeout: Duration,
        mut tick: impl FnMut(&Fleet),
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut pending: HashSet<u64> = tags.iter().copied().collect();
        self.roster.resolved.clear();
        let mut dialed = 0usize;
        loop {
            for tag in self.roster.resolved.drain(..) {
                pending.remove(&tag);
            }
            let done = tags.len() - pending.len();
            while dialed < tags.len() && dialed - done < concurrency.max(1) {
                self.dial(tags[dialed])?;
                dialed += 1;
            }
            if done >= tags.len() || Instant::now() >= deadline {
                return Ok(());
            }
            self.poll_events(Duration::from_millis(50));
            tick(self);
        }
    }

    /// Waits up to `timeout` for events and notes every one that came.
    pub fn poll_events(&mut self, timeout: Duration) {
        if let Ok(event) = self.events.recv_timeout(timeout) {
            self.roster.note(event);
        }
        while let Ok(event) = self.events.try_recv() {
            self.roster.note(event);
        }
    }

    /// Notes events until `deadline`, running `tick` between waits.
    pub fn wait_until(&mut self, deadline: Instant, mut tick: impl FnMut(&Fleet)) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            self.poll_events((deadline - now).min(Duration::from_millis(100)));
            tick(self);
        }
    }

    /// Adds every worker's latency counts so far to `into` (from
    /// [`LiveHistogram::snapshot`]).
    pub fn latency_counts(&self, into: &mut [u64]) {
        for live in self.live.iter() {
            live.latency.add_to(into);
        }
    }

    /// Every worker's running totals, summed.
    pub fn totals(&self) -> LiveTotals {
        let mut t = LiveTotals::default();
        for live in self.live.iter() {
            t.seen += live.seen.load(Ordering::Relaxed);
            t.received += live.received.load(Ordering::Relaxed);
            t.sent += live.sent.load(Ordering::Relaxed);
            t.open += live.open.load(Ordering::Relaxed);
            t.errors += live.errors.load(Ordering::Relaxed);
        }
        t
    }

    /// Closes every connection (close 1001, waiting a bounded time for the servers'
    /// answers), stops the engine, and returns every worker's counts merged. Closes from
    /// here on are not errors.
    pub fn stop(mut self) -> Tally {
        self.stopping.store(true, Ordering::Relaxed);
        self.poll_events(Duration::ZERO);
        self.handle.shutdown();
        self.handle.wait();
        let mut tally = Tally::default();
        // Every worker thread has ended, so every handler has been dropped and reported.
        while let Ok(worker) = self.reports.try_recv() {
            tally.merge(&worker);
        }
        tally
    }

    /// [`stop`](Self::stop) that also returns what the events said.
    pub fn finish(mut self) -> (Tally, Roster) {
        self.poll_events(Duration::ZERO);
        let roster = std::mem::take(&mut self.roster);
        (self.stop(), roster)
    }
}
