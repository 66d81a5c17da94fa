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
//! Also here: the process-wide clock every timestamp is measured on, and the text of the
//! messages the scenarios send ([`Stamp`]).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringcast::server::DriverConfig;
use ringcast::server::{ConnId, DialRequest, Handler, Server, ServerConfig, ServerHandle};
use ringcast::{Error, Upgrader};

use crate::stats::Tally;

static START: OnceLock<Instant> = OnceLock::new();

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

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// What each message the load generator sends says about itself: who sent it, its
/// number in that sender's sequence, and when it was (meant to be) sent.
///
/// On the wire it is one line of text, `p=3 s=1234 t=5678`, padded with `x` to the
/// message size: `p=3 s=1234 t=5678 xxxxxxxx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sender: publisher id, or connection index for echo.
    pub sender: u32,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// Send time, in nanoseconds on [`now_ns`]'s clock.
    pub time: u64,
}

impl Stamp {
    /// Replaces `out` with this stamp padded with `x` to `size` bytes (longer when the
    /// stamp itself does not fit).
    pub fn write(&self, size: usize, out: &mut Vec<u8>) {
        out.clear();
        let _ = write!(out, "p={} s={} t={}", self.sender, self.seq, self.time);
        if out.len() < size {
            out.push(b' ');
            out.resize(size.max(out.len()), b'x');
        }
    }

    /// Whether `line` starts the way this load generator's messages do (so one that does
    /// not parse was mangled, rather than being the server's own).
    pub fn looks_like_one(line: &[u8]) -> bool {
        line.starts_with(b"p=")
    }

    /// The stamp at the start of `line`, if it is one of ours.
    pub fn parse(line: &[u8]) -> Option<Stamp> {
        let rest = line.strip_prefix(b"p=")?;
        let (sender, rest) = number(rest)?;
        let (seq, rest) = number(rest.strip_prefix(b" s=")?)?;
        let (time, rest) = number(rest.strip_prefix(b" t=")?)?;
        if !(rest.is_empty() || rest[0] == b' ') {
            return None;
        }
        Some(Stamp {
            sender: u32::try_from(sender).ok()?,
            seq,
            time,
        })
    }
}

/// A decimal number at the start of `bytes`, and what follows it.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &bytes[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &bytes[digits..]))
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
    /// The `ws://` URL every connection dials.
    pub url: String,
    /// Engine workers (0: one per CPU this process may run on).
    pub workers: usize,
    /// Offer permessage-deflate.
    pub compress: bool,
    /// Subprotocols to offer.
    pub subprotocols: Vec<String>,
    /// Local addresses to connect from, in turn (empty: the kernel's choice).
    pub sources: Vec<IpAddr>,
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
    /// The first few error messages, for the report.
    pub samples: Vec<String>,
    /// Tags of dials that opened or failed since [`Fleet::connect_all`] last looked.
    resolved: Vec<u64>,
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
                self.dial_failures += 1;
                self.sample(format!("dial: {error}"));
            }
            Event::Closed { tag, code, reason } => {
                self.ids.remove(&tag);
                self.closed += 1;
                self.sample(format!("closed by the server: {code} {reason}"));
            }
        }
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

    /// Opens connection number `index` with `tag`: its worker and source address are
    /// chosen by `index`, in turn.
    pub fn dial(&self, index: usize, tag: u64) -> Result<(), Error> {
        let source = (!self.config.sources.is_empty())
            .then(|| self.config.sources[index % self.config.sources.len()]);
        self.handle.dial(DialRequest {
            url: self.config.url.clone(),
            tag,
            subprotocols: self.config.subprotocols.clone(),
            enable_compression: self.config.compress,
            source,
            worker: Some(index % self.workers()),
            ..DialRequest::default()
        })
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
                self.dial(dialed, tags[dialed])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_padded_to_the_size_and_parses_back() {
        let stamp = Stamp {
            sender: 3,
            seq: 1234,
            time: 5678,
        };
        let mut out = Vec::new();
        stamp.write(64, &mut out);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with(b"p=3 s=1234 t=5678 xxx"));
        assert_eq!(Stamp::parse(&out), Some(stamp));
    }

    #[test]
    fn stamp_longer_than_the_size_is_sent_whole() {
        let stamp = Stamp {
            sender: 1,
            seq: 2,
            time: 3,
        };
        let mut out = Vec::new();
        stamp.write(4, &mut out);
        assert_eq!(out, b"p=1 s=2 t=3");
        assert_eq!(Stamp::parse(&out), Some(stamp));
    }

    #[test]
    fn foreign_lines_are_not_stamps() {
        for line in [
            &b""[..],
            b"hello",
            b"p=1 s=2",
            b"p=1 s=2 t=",
            b"p=1 s=2 t=3x",
            b"p=99999999999 s=1 t=1",
            b"p=1 s=99999999999999999999999 t=1",
        ] {
            assert_eq!(
                Stamp::parse(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
