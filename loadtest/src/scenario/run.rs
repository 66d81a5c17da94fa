//! `run`: a scenario file's users, each a connection that runs the file's steps
//! ([`Machine`]) on a worker, and the main thread's driver that opens and closes them as
//! the stages say (connection targets, arrival rates, churn). `subscribe` is the same
//! runner with steps made from its flags.
//!
//! A user is numbered `n` (its tag); a `connect` step closes its connection and dials
//! again on the same worker with the same `n`, so its data row stays. A user ends when
//! its steps are done, when an `expect` times out, when the driver closes it (ramping
//! down, churn) or when the server closes it (an error); the driver then sees it gone and,
//! in a target stage, opens another.
//!
//! Timers (sleep, think, timeouts) come from the [`Metronome`]: a tick on the worker's
//! own connection to it when the worker's earliest deadline is due.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringcast::proto::handshake::Request;
use ringcast::server::{ConnId, DialRequest, Handler, ServerHandle, Socket};
use ringcast::{CloseCode, Error, MessageType};

use super::{BoxError, Common, Watch, Window};
use crate::client::{self, instant_at, now_ns, ns_at, unix_ns_at, Fleet, Link};
use crate::data::{DataTable, Samples};
use crate::metronome::{Metronome, METRONOME};
use crate::monitor::Monitor;
use crate::report::{Figures, Report, RunFigures};
use crate::script::{Action, Env, Load, Machine, Program, Scenario, Wake};
use crate::stats::{Latency, ScriptTally, Tally};
use crate::stream::{StreamSpec, Streams};
use crate::target::Target;

/// The reason of the closes the driver makes (ramping down, churn): the handler tells
/// them from the server's by it.
const DRIVER_CLOSE: &str = "ringcast-load: done";

/// How long the workers' metronome connections may take to open.
const METRONOME_OPEN: Duration = Duration::from_secs(10);

/// Which latency is the run's main one (the report's `latency_us`, the thresholds').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Main {
    /// One-way latency of the server's stream.
    Stream,
    /// `expect` answers.
    Response,
    /// Dial to open.
    Connect,
}

/// What the workers share with the driver.
struct RunPlan {
    program: Arc<Program>,
    stream: Option<StreamSpec>,
    data: Option<Arc<DataTable>>,
    samples: Option<Arc<Samples>>,
    target: Arc<Target>,
    main: Main,
    metronome: Metronome,
    /// Metronome connections open.
    ticking: AtomicUsize,
    clock: Window,
    /// When the driver dialed each user that has not opened yet, by `n`.
    dialed_at: Mutex<HashMap<u64, u64>>,
}

/// How a user's connection is ending, as this side decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Not by this side (yet).
    No,
    /// Its steps closed it.
    Finished,
    /// An `expect` timed out.
    Failed,
    /// A `connect` step closed it to dial again.
    Reconnecting,
}

/// One user on this worker.
struct User {
    id: Option<ConnId>,
    machine: Machine,
    streams: Streams,
    ending: Ending,
    /// When its current connection was dialed.
    dialed_at: u64,
    /// The timer entry it has in the worker's set.
    armed: Option<u64>,
}

/// Where a user's actions go: its socket inside its own callback, or the engine's handle
/// from another (a timer tick).
enum Sink<'s, 'a> {
    Socket(&'s mut Socket<'a, ()>),
    Handle(&'s ServerHandle, ConnId),
}

impl Sink<'_, '_> {
    fn send(&mut self, kind: MessageType, payload: Vec<u8>) -> bool {
        match self {
            Sink::Socket(socket) => socket.send(kind, &payload).is_ok(),
            Sink::Handle(handle, id) => handle.send_to(*id, kind, payload).is_ok(),
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        match self {
            Sink::Socket(socket) => socket.close(CloseCode::from(code), reason),
            Sink::Handle(handle, id) => {
                let _ = handle.close(*id, CloseCode::from(code), reason);
            }
        }
    }
}

/// One worker's handler.
struct RunWorker {
    link: Link,
    plan: Arc<RunPlan>,
    worker: usize,
    users: HashMap<u64, User>,
    /// (due, user) of every armed timer.
    timers: BTreeSet<(u64, u64)>,
    tally: Tally,
    script: ScriptTally,
    seen: u64,
    sent: u64,
    rng: fastrand::Rng,
    actions: Vec<Action>,
    handle: Option<ServerHandle>,
}

impl RunWorker {
    fn new(link: Link, plan: Arc<RunPlan>, worker: usize) -> RunWorker {
        RunWorker {
            link,
            plan,
            worker,
            users: HashMap::new(),
            timers: BTreeSet::new(),
            tally: Tally::default(),
            script: ScriptTally::default(),
            seen: 0,
            sent: 0,
            rng: fastrand::Rng::new(),
            actions: Vec::new(),
            handle: None,
        }
    }

    fn in_window(&self, ns: u64) -> bool {
        let (_, start, end) = self.plan.clock.get();
        ns >= start && ns < end
    }

    /// Records a latency of `kind`: the main one also goes to the live series.
    fn record(&mut self, kind: Main, ns: u64) {
        if kind == self.plan.main {
            self.link.latency(&mut self.tally, ns);
        }
        let histogram: &mut Latency = match kind {
            Main::Stream => &mut self.script.stream,
            Main::Response => &mut self.script.response,
            Main::Connect => &mut self.script.connect,
        };
        histogram.record(ns);
    }

    /// Runs `f` on user `tag`'s machine, then carries out what it asked for through
    /// `sink` and re-arms its timer. Returns what `f` returned.
    fn drive<R>(
        &mut self,
        tag: u64,
        mut sink: Sink<'_, '_>,
        f: impl FnOnce(&mut Machine, &mut Env<'_>, &mut Vec<Action>) -> R,
    ) -> Option<R> {
        let plan = self.plan.clone();
        let user = self.users.get_mut(&tag)?;
        let mut actions = std::mem::take(&mut self.actions);
        let mut env = Env {
            data: plan.data.as_deref(),
            samples: plan.samples.as_deref(),
            rng: &mut self.rng,
        };
        let result = f(&mut user.machine, &mut env, &mut actions);
        let now = now_ns();
        let counted = {
            let (_, start, end) = plan.clock.get();
            now >= start && now < end
        };
        for action in actions.drain(..) {
            match action {
                Action::Send(kind, payload) => {
                    if sink.send(kind, payload) {
                        if counted {
                            self.tally.sent += 1;
                        }
                    } else {
                        self.tally.send_errors += 1;
                        self.link.live().errors.fetch_add(1, Ordering::Relaxed);
                    }
                    self.sent += 1;
                }
                Action::Connect(url) => {
                    user.ending = Ending::Reconnecting;
                    user.dialed_at = now;
                    sink.close(1000, "ringcast-load: reconnecting");
                    let handle = self
                        .handle
                        .get_or_insert_with(|| match &sink {
                            Sink::Socket(socket) => socket.server(),
                            Sink::Handle(handle, _) => (*handle).clone(),
                        })
                        .clone();
                    let request = plan
                        .target
                        .request_to(tag, tag, self.worker, url.as_deref());
                    if let Err(err) = handle.dial(request) {
                        // A bad URL from the step: the user ends here.
                        user.ending = Ending::Failed;
                        self.link.dial_failed(tag, &err);
                    }
                }
                Action::Close(code) => {
                    user.ending = Ending::Finished;
                    sink.close(code, "");
                }
                Action::Failed => {
                    if counted {
                        self.script.expect_timeouts += 1;
                    }
                    user.ending = Ending::Failed;
                    sink.close(1000, "ringcast-load: expect timed out");
                }
            }
        }
        self.actions = actions;
        let wanted = match user.machine.deadline() {
            Wake::At(at) if !user.machine.is_done() => Some(at),
            _ => None,
        };
        if wanted != user.armed {
            if let Some(old) = user.armed.take() {
                self.timers.remove(&(old, tag));
            }
            if let Some(at) = wanted {
                self.timers.insert((at, tag));
                user.armed = Some(at);
                plan.metronome.wake_at(self.worker, at);
            }
        }
        self.link.live().sent.store(self.sent, Ordering::Relaxed);
        Some(result)
    }

    /// A metronome tick: runs every timer that is due, then asks for the next tick.
    fn tick(&mut self, handle: &ServerHandle) {
        let now = now_ns();
        while let Some(&(at, tag)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(user) = self.users.get_mut(&tag) else {
                continue;
            };
            user.armed = None;
            let Some(id) = user.id else {
                continue;
            };
            self.drive(tag, Sink::Handle(handle, id), |m, env, out| {
                m.timer(now, env, out)
            });
        }
        if let Some(&(at, _)) = self.timers.first() {
            self.plan.metronome.wake_at(self.worker, at);
        }
    }

    /// User `tag` is gone: its streams' missing numbers are counted, its timer dropped.
    fn remove(&mut self, tag: u64) -> Option<User> {
        let user = self.users.remove(&tag)?;
        if let Some(at) = user.armed {
            self.timers.remove(&(at, tag));
        }
        user.streams.finish(&mut self.script.counts);
        Some(user)
    }
}

impl Handler for RunWorker {
    type Data = ();

    fn on_open(&mut self, socket: &mut Socket<'_, ()>, _request: &Request) {
        let tag = socket.tag();
        if tag & METRONOME != 0 {
            self.plan.ticking.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = now_ns();
        let id = socket.id();
        let dialed_at = match self.users.get_mut(&tag) {
            Some(user) => {
                // A `connect` step's new connection.
                user.id = Some(id);
                user.ending = Ending::No;
                user.dialed_at
            }
            None => {
                let dialed_at = self
                    .plan
                    .dialed_at
                    .lock()
                    .map_or(None, |mut d| d.remove(&tag))
                    .unwrap_or(now);
                self.users.insert(
                    tag,
                    User {
                        id: Some(id),
                        machine: Machine::new(self.plan.program.clone(), tag),
                        streams: Streams::default(),
                        ending: Ending::No,
                        dialed_at,
                        armed: None,
                    },
                );
                dialed_at
            }
        };
        // Every (re)connection counts, warm-up included: most open then.
        self.record(Main::Connect, now.saturating_sub(dialed_at));
        self.link.opened(tag, id);
        self.drive(tag, Sink::Socket(socket), |m, env, out| {
            m.opened(now, env, out)
        });
    }

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, _kind: MessageType, payload: &[u8]) {
        let tag = socket.tag();
        if tag & METRONOME != 0 {
            let handle = self.handle.get_or_insert_with(|| socket.server()).clone();
            return self.tick(&handle);
        }
        let at = socket.received_at();
        let now = ns_at(at);
        let counted = self.in_window(now);
        self.seen += 1;
        if counted {
            self.tally.received += 1;
            let (origin, _, _) = self.plan.clock.get();
            self.tally.timeline.add(now.saturating_sub(origin), 1);
        }
        let plan = self.plan.clone();
        if let Some(spec) = &plan.stream {
            match (spec.locate(payload), self.users.get_mut(&tag)) {
                (Some(point), Some(user)) if counted => {
                    let latency =
                        user.streams
                            .observe(point, unix_ns_at(at), &mut self.script.counts);
                    if let Some(latency) = latency {
                        self.record(Main::Stream, latency);
                    }
                }
                (None, _) if counted => self.script.counts.other += 1,
                _ => {}
            }
        }
        let answered = self
            .drive(tag, Sink::Socket(socket), |m, env, out| {
                m.message(now, payload, env, out)
            })
            .flatten();
        if let Some(latency) = answered {
            if counted {
                self.script.expects_met += 1;
                self.record(Main::Response, latency);
            }
        }
        let live = self.link.live();
        live.seen.store(self.seen, Ordering::Relaxed);
        live.received.store(self.tally.received, Ordering::Relaxed);
    }

    fn on_close(&mut self, socket: &mut Socket<'_, ()>, code: CloseCode, reason: &str) {
        let tag = socket.tag();
        if tag & METRONOME != 0 {
            return;
        }
        let Some(ending) = self.users.get(&tag).map(|u| u.ending) else {
            return;
        };
        match ending {
            Ending::Reconnecting => self.link.reconnecting(),
            Ending::Finished | Ending::Failed => {
                self.remove(tag);
                self.link.finished(tag);
            }
            Ending::No if reason == DRIVER_CLOSE => {
                self.remove(tag);
                self.link.finished(tag);
            }
            Ending::No => {
                self.remove(tag);
                self.link.closed(tag, code.into(), reason);
            }
        }
    }

    fn on_dial_error(&mut self, tag: u64, error: Error) {
        if tag & METRONOME != 0 {
            return; // the driver sees too few ticking and says so
        }
        if let Ok(mut dialed) = self.plan.dialed_at.lock() {
            dialed.remove(&tag);
        }
        self.remove(tag);
        self.link.dial_failed(tag, &error);
    }
}

impl Drop for RunWorker {
    fn drop(&mut self) {
        let tags: Vec<u64> = self.users.keys().copied().collect();
        for tag in tags {
            self.remove(tag);
        }
        let mut tally = std::mem::take(&mut self.tally);
        tally.script = Some(Box::new(std::mem::take(&mut self.script)));
        self.link.report(tally);
    }
}

/// The driver's view of the users.
#[derive(Debug, Default)]
struct Users {
    /// Dialed and not ended.
    active: HashSet<u64>,
    /// Dialed and not open yet.
    dialing: HashSet<u64>,
    /// Closed by the driver, not ended yet.
    closing: HashSet<u64>,
    /// Users ever dialed.
    total: u64,
    /// Most connections open at once.
    peak_open: u64,
}

impl Users {
    /// Catches up with the fleet's events.
    fn update(&mut self, fleet: &mut Fleet) {
        for tag in fleet.roster.take_resolved() {
            self.dialing.remove(&tag);
        }
        for tag in fleet.roster.take_ended() {
            self.active.remove(&tag);
            self.dialing.remove(&tag);
            self.closing.remove(&tag);
        }
        self.peak_open = self.peak_open.max(fleet.roster.ids.len() as u64);
    }

    /// Users that count towards a target.
    fn live(&self) -> u64 {
        (self.active.len() - self.closing.len()) as u64
    }

    /// Dials a new user.
    fn dial(&mut self, fleet: &mut Fleet, plan: &RunPlan) -> Result<(), BoxError> {
        let n = fleet.next_n();
        if let Ok(mut dialed) = plan.dialed_at.lock() {
            dialed.insert(n, now_ns());
        }
        fleet.dial(n)?;
        self.active.insert(n);
        self.dialing.insert(n);
        self.total += 1;
        Ok(())
    }

    /// Closes up to `count` open users, not already closing; returns how many.
    fn close(&mut self, fleet: &Fleet, count: u64) -> u64 {
        let chosen: Vec<(u64, ConnId)> = self
            .active
            .iter()
            .filter(|tag| !self.closing.contains(tag))
            .filter_map(|tag| Some((*tag, *fleet.roster.ids.get(tag)?)))
            .take(count as usize)
            .collect();
        for &(tag, id) in &chosen {
            let _ = fleet
                .handle()
                .close(id, CloseCode::NORMAL_CLOSURE, DRIVER_CLOSE);
            self.closing.insert(tag);
        }
        chosen.len() as u64
    }
}

/// Runs `scenario` with the fleet settings of `common`.
pub fn run(common: &Common, scenario: &Scenario, name: &'static str) -> Result<Report, BoxError> {
    let workers = client::worker_count(common.fleet.workers);
    let main = match &scenario.stream {
        Some(spec) if spec.has_ts() => Main::Stream,
        _ if scenario.program.expects_any() => Main::Response,
        _ => Main::Connect,
    };
    let plan = Arc::new(RunPlan {
        program: scenario.program.clone(),
        stream: scenario.stream.clone(),
        data: scenario.data.clone(),
        samples: scenario.samples.clone(),
        target: common.fleet.target.clone(),
        main,
        metronome: Metronome::start(workers).map_err(|e| format!("timer thread: {e}"))?,
        ticking: AtomicUsize::new(0),
        clock: Window::default(),
        dialed_at: Mutex::new(HashMap::new()),
    });
    let mut watch = Watch::new(common.server_pid)?;
    let shared = plan.clone();
    let mut fleet = Fleet::start(common.fleet.clone(), move |link| {
        let worker = link.worker();
        RunWorker::new(link, shared.clone(), worker)
    })?;
    for worker in 0..workers {
        fleet.handle().dial(DialRequest {
            tag: METRONOME | worker as u64,
            worker: Some(worker),
            ..DialRequest::new(&plan.metronome.url(worker))
        })?;
    }
    let ready = Instant::now() + METRONOME_OPEN;
    while plan.ticking.load(Ordering::Relaxed) < workers {
        if Instant::now() >= ready {
            plan.metronome.stop();
            fleet.stop();
            return Err("the workers' timer connections did not open".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut monitor = Monitor::new(common, "messages/s")?;
    watch.before = watch.sample();
    let total = scenario.duration();
    let origin = now_ns();
    let warmup = scenario.warmup.min(total);
    let (start, end) = plan.clock.set(origin, warmup, total - warmup);

    let mut users = Users::default();
    let mut stage_start = origin;
    let mut sampled_start = false;
    for stage in &scenario.stages {
        let stage_ns = stage.duration.as_nanos() as u64;
        let stage_end = stage_start + stage_ns;
        users.update(&mut fleet);
        let from = match stage.load {
            Load::Target { from, .. } => from.unwrap_or(users.live()),
            Load::Rate(_) => 0,
        };
        let (mut arrived, mut churned, mut last) = (0u64, 0.0f64, stage_start);
        loop {
            let now = now_ns();
            if !sampled_start && now >= start {
                watch.start = watch.sample();
                sampled_start = true;
            }
            if now >= stage_end {
                break;
            }
            users.update(&mut fleet);
            let into = (now - stage_start) as f64 / stage_ns.max(1) as f64;
            match stage.load {
                Load::Target { to, .. } => {
                    let wanted = from as f64 + (to as f64 - from as f64) * into;
                    let wanted = wanted.round() as u64;
                    let live = users.live();
                    if wanted > live {
                        let room = common.concurrency.saturating_sub(users.dialing.len()) as u64;
                        for _ in 0..(wanted - live).min(room) {
                            users.dial(&mut fleet, &plan)?;
                        }
                    } else if wanted < live {
                        users.close(&fleet, live - wanted);
                    }
                }
                Load::Rate(rate) => {
                    let due = (rate * (now - stage_start) as f64 / 1e9) as u64;
                    while arrived < due {
                        users.dial(&mut fleet, &plan)?;
                        arrived += 1;
                    }
                }
            }
            churned += stage.churn * (now - last) as f64 / 1e9;
            last = now;
            if churned >= 1.0 {
                let closed = users.close(&fleet, churned as u64);
                churned -= closed as f64;
            }
            if watch.connected.is_none() && users.dialing.is_empty() && !users.active.is_empty() {
                watch.connected = watch.sample();
            }
            let pause = (Instant::now() + Duration::from_millis(10)).min(instant_at(stage_end));
            fleet.wait_until(pause, |fl| monitor.tick(fl));
        }
        stage_start = stage_end;
    }
    if !sampled_start {
        watch.start = watch.sample();
    }
    if watch.connected.is_none() {
        watch.connected = watch.sample();
    }
    watch.end = watch.sample();
    users.update(&mut fleet);
    monitor.finish(&fleet)?;
    plan.metronome.stop();
    let backend = fleet.backends().into_iter().next().unwrap_or_default();
    let (mut tally, roster) = fleet.finish();
    let script = tally.script.take().map(|s| *s).unwrap_or_default();

    let seconds = (end - start) as f64 / 1e9;
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let stream = plan.stream.as_ref().map(|_| script.counts);
    let errors = roster.dial_failures + roster.closed + tally.send_errors + script.expect_timeouts;
    let summary = |l: &Latency| l.summary();
    let stream_received = stream.map_or(0, |s| s.received);
    Ok(Report {
        scenario: name,
        url: common.fleet.target.url().to_owned(),
        workers,
        client_backend: backend,
        warmup_s: warmup.as_secs_f64(),
        duration_s: seconds,
        figures: Figures::Run(RunFigures {
            stages: scenario.stages.len(),
            latency_of: match main {
                Main::Stream => "stream one-way",
                Main::Response => "expect response",
                Main::Connect => "connect",
            },
            users: users.total,
            connections_opened: roster.opened,
            peak_open: users.peak_open,
            finished: roster.finished,
            dial_failures: roster.dial_failures,
            closed: roster.closed,
            sent: tally.sent,
            received: tally.received,
            send_errors: tally.send_errors,
            expects_met: script.expects_met,
            expect_timeouts: script.expect_timeouts,
            messages_per_s: per_s(tally.received),
            stream,
            stream_messages_per_s: stream.map(|_| per_s(stream_received)),
            connect_latency_us: summary(&script.connect),
            response_latency_us: summary(&script.response),
            stream_latency_us: summary(&script.stream),
        }),
        latency_us: tally.latency.summary(),
        timeline: tally.timeline.seconds().to_vec(),
        server: watch.figures(tally.received, users.peak_open),
        errors,
        error_samples: roster.samples,
        thresholds: Vec::new(),
        latency: tally.latency,
    })
}
