//! Fan-out: one room; subscribers join, then publishers; every message a publisher sends
//! should reach every subscriber once, in order.
//!
//! Pacing, max throughput (`--window W`): a publisher keeps at most W of its messages
//! that have not yet reached **every** subscriber. A message counts as delivered when
//! the last subscriber has it: each subscriber counts its receptions into a ring per
//! publisher, and the publisher's `done` (messages from seq 0 that all subscribers have)
//! moves once a slot's count reaches the number of subscribers. Counting only the
//! publisher's own copy coming back would let a server serve the publisher first while
//! subscribers fall behind, until a server that sheds slow readers (the peers drop a
//! client 256 messages behind) closes them. ringcast-load paces the same way.
//!
//! Pacing, fixed rate (`--rate R`): message k is due at `origin + k / R` (publishers in
//! turn) and carries that time, so a send that leaves late shows as latency.

use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::rc::Rc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::args::{Common, Fanout};
use crate::run::{self, per_s, Phase, Samples, Shared, CLOSE_WAIT, SETTLE};
use crate::wire::{instant_at, now_ns, Arrival, Order, Stamp, Target, Ws};

/// One publisher's progress, as its subscribers see it.
#[derive(Debug)]
struct Flow {
    /// Messages (from seq 0) every subscriber has received.
    done: u64,
    /// Receptions of messages `done..done + len`, at `seq % len`.
    counts: Box<[u32]>,
}

/// What a fan-out run's tasks share besides [`Shared`].
struct Room {
    shared: Shared,
    fanout: Fanout,
    /// Subscribers open before publishing started and still open: whom `done` waits for.
    members: Cell<u32>,
    /// Per publisher.
    flows: Box<[RefCell<Flow>]>,
    /// Per publisher: rung when its `done` moves.
    moved: Box<[Notify]>,
    /// Message size, bytes.
    size: usize,
}

impl Room {
    fn max_throughput(&self) -> bool {
        self.fanout.rate.is_none()
    }

    /// A text frame at a subscriber: one message, or several joined by `\n` (go-peer,
    /// like gorilla's chat example, joins what is queued for a client into one frame).
    fn deliveries(&self, orders: &mut [Order], payload: &[u8], now: u64) {
        let (origin, start, end) = self.shared.window.get();
        let mut tally = self.shared.tally.borrow_mut();
        let mut lines = 0;
        for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(stamp) = Stamp::parse(line) else {
                if Stamp::looks_like_one(line) {
                    tally.malformed += 1;
                } else {
                    tally.other += 1; // the chat server's join notices
                }
                continue;
            };
            let Some(order) = orders.get_mut(stamp.sender as usize) else {
                tally.malformed += 1;
                continue;
            };
            lines += 1;
            let arrival = order.observe(stamp.seq);
            if arrival != Arrival::Duplicate && self.max_throughput() {
                self.reception(stamp.sender as usize, stamp.seq);
            }
            if stamp.time < start || stamp.time >= end {
                continue; // warm-up
            }
            match arrival {
                Arrival::Duplicate => {
                    tally.duplicates += 1;
                    continue;
                }
                Arrival::Late => tally.out_of_order += 1,
                Arrival::InOrder => {}
            }
            tally.received += 1;
            tally.record(now.saturating_sub(stamp.time));
        }
        tally.seen(now.saturating_sub(origin), lines);
    }

    /// Max throughput: a subscriber received message `seq` of publisher `p`.
    fn reception(&self, p: usize, seq: u64) {
        let mut flow = self.flows[p].borrow_mut();
        let ring = flow.counts.len() as u64;
        // The window keeps every message in flight within `ring` of `done`.
        if seq < flow.done || seq >= flow.done + ring {
            return;
        }
        flow.counts[(seq % ring) as usize] += 1;
        if self.advance(&mut flow) {
            self.moved[p].notify_one();
        }
    }

    /// Moves `done` past every message all members have; whether it moved.
    fn advance(&self, flow: &mut Flow) -> bool {
        let members = self.members.get();
        if members == 0 {
            return false; // nobody left to deliver to: the publisher waits out the window
        }
        let ring = flow.counts.len() as u64;
        let before = flow.done;
        while flow.counts[(flow.done % ring) as usize] >= members {
            flow.counts[(flow.done % ring) as usize] = 0;
            flow.done += 1;
        }
        flow.done != before
    }

    /// A member closed: the others may all be further on.
    fn member_left(&self) {
        self.members.set(self.members.get() - 1);
        for (flow, moved) in self.flows.iter().zip(self.moved.iter()) {
            if self.advance(&mut flow.borrow_mut()) {
                moved.notify_one();
            }
        }
    }
}

/// One subscriber: dial (a handshake slot from `gate`, by `deadline`), then read every
/// message until the run stops.
async fn subscriber(room: Rc<Room>, target: Rc<Target>, gate: Rc<Semaphore>, deadline: Instant) {
    let dialled = timeout_at(deadline.into(), async {
        let _slot = gate.acquire().await;
        target.dial().await
    })
    .await;
    let shared = &room.shared;
    shared.dials_done.set(shared.dials_done.get() + 1);
    let mut ws = match dialled {
        Ok(Ok(ws)) => ws,
        Ok(Err(why)) => return shared.book.borrow_mut().dial_failed(why),
        Err(_) => {
            return shared
                .book
                .borrow_mut()
                .dial_failed("connect timeout".into())
        }
    };
    shared.book.borrow_mut().opened += 1;
    // One that opened after publishing started reads along but is not counted.
    let member = !shared.window.started();
    if member {
        room.members.set(room.members.get() + 1);
    }
    let mut orders = vec![Order::default(); room.fanout.publishers as usize];
    let mut phase = shared.phase.subscribe();
    let mut stop = pin!(phase.wait_for(|p| *p == Phase::Stopping));
    let ended = loop {
        tokio::select! {
            biased;
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(_))) if shared.stopping() => break None,
                Some(Ok(Message::Text(text))) => {
                    if member {
                        room.deliveries(&mut orders, text.as_bytes(), now_ns());
                    }
                }
                Some(Ok(Message::Binary(_))) => shared.tally.borrow_mut().other += 1,
                Some(Ok(Message::Close(frame))) => break Some(format!("closed by the server: {frame:?}")),
                Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
                Some(Err(e)) => break Some(format!("read: {e}")),
                None => break Some("connection ended".to_owned()),
            },
            _ = &mut stop => break None,
        }
    };
    match ended {
        Some(why) if !shared.stopping() => {
            shared.book.borrow_mut().closed(why);
            if member {
                room.member_left();
            }
        }
        Some(_) => {}
        None => run::close(&mut ws).await,
    }
}

/// Publisher `p`: sends as its window or the rate allows until the window ends, reading
/// (and dropping) what the room sends it meanwhile, since a peer drops a client that
/// does not read; then waits for the stop and closes.
async fn publisher(room: Rc<Room>, p: usize, ws: Ws) {
    let shared = &room.shared;
    let (mut sink, mut stream) = ws.split();
    let reader = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    if !shared.stopping() {
                        shared
                            .book
                            .borrow_mut()
                            .closed(format!("publisher {p} closed by the server"));
                    }
                    // Wait for the stop rather than ending the select below.
                    std::future::pending::<()>().await;
                }
                Some(Ok(_)) => {}
            }
        }
    };
    let mut phase = shared.phase.subscribe();
    let writer = async {
        if phase.wait_for(|p| *p >= Phase::Running).await.is_err() {
            return;
        }
        if *phase.borrow() == Phase::Running {
            match room.fanout.rate {
                Some(rate) => paced(&room, p, rate, &mut sink).await,
                None => windowed(&room, p, &mut sink).await,
            }
        }
        let _ = phase.wait_for(|p| *p == Phase::Stopping).await;
        let _ = timeout(CLOSE_WAIT, sink.close()).await;
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

type Sink = futures_util::stream::SplitSink<Ws, Message>;

/// Max throughput: sends while fewer than `window` messages are short of a subscriber.
async fn windowed(room: &Room, p: usize, sink: &mut Sink) {
    let shared = &room.shared;
    let (_, start, end) = shared.window.get();
    let window = u64::from(room.fanout.window);
    let mut out_of_time = pin!(sleep_until(instant_at(end).into()));
    let mut seq = 0u64;
    loop {
        let bound = room.flows[p].borrow().done.saturating_add(window);
        let mut fed = false;
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
            if let Err(e) = sink.feed(Message::text(stamp.text(room.size))).await {
                return shared.send_failed(format!("publisher {p}: {e}"));
            }
            fed = true;
            seq += 1;
            if time >= start {
                shared.sent.set(shared.sent.get() + 1);
            }
        }
        if fed {
            if let Err(e) = sink.flush().await {
                return shared.send_failed(format!("publisher {p}: {e}"));
            }
        }
        if now_ns() >= end {
            return;
        }
        tokio::select! {
            _ = room.moved[p].notified() => {}
            _ = &mut out_of_time => return,
        }
    }
}

/// A fixed rate: the publishers take turns, message k due at `origin + k / rate`.
async fn paced(room: &Room, p: usize, rate: f64, sink: &mut Sink) {
    let shared = &room.shared;
    let (origin, start, end) = shared.window.get();
    let interval = 1e9 / rate;
    let publishers = u64::from(room.fanout.publishers);
    for seq in 0u64.. {
        let k = seq * publishers + p as u64;
        let due = origin + (k as f64 * interval) as u64;
        if due >= end {
            return;
        }
        if due > now_ns() {
            sleep_until(instant_at(due).into()).await;
        }
        let stamp = Stamp {
            sender: p as u32,
            seq,
            time: due,
        };
        if let Err(e) = sink.send(Message::text(stamp.text(room.size))).await {
            return shared.send_failed(format!("publisher {p}: {e}"));
        }
        if due >= start {
            shared.sent.set(shared.sent.get() + 1);
        }
    }
}

/// Runs the fan-out scenario; the report.
pub async fn run(common: &Common, fanout: &Fanout) -> Result<Value, String> {
    let target = Rc::new(Target::new(&common.url, common.read_buffer)?);
    let mut samples = Samples::new(common.server_pid)?;
    let ring = (fanout.window as usize).next_power_of_two() * 2;
    let room = Rc::new(Room {
        shared: Shared::new(),
        fanout: fanout.clone(),
        members: Cell::new(0),
        flows: (0..fanout.publishers)
            .map(|_| {
                RefCell::new(Flow {
                    done: 0,
                    counts: vec![0; ring].into_boxed_slice(),
                })
            })
            .collect(),
        moved: (0..fanout.publishers).map(|_| Notify::new()).collect(),
        size: common.size,
    });
    let shared = &room.shared;
    samples.before = samples.server();

    // Subscribers first: every one is in the room before the first publish.
    let mut tasks = JoinSet::new();
    let gate = Rc::new(Semaphore::new(common.concurrency));
    let deadline = Instant::now() + common.connect_timeout;
    for _ in 0..fanout.subscribers {
        tasks.spawn_local(subscriber(
            room.clone(),
            target.clone(),
            gate.clone(),
            deadline,
        ));
    }
    shared.dials(u64::from(fanout.subscribers), deadline).await;
    let deadline = Instant::now() + common.connect_timeout;
    let mut publishers = 0u64;
    for p in 0..fanout.publishers as usize {
        match timeout_at(deadline.into(), target.dial()).await {
            Ok(Ok(ws)) => {
                shared.book.borrow_mut().opened += 1;
                publishers += 1;
                tasks.spawn_local(publisher(room.clone(), p, ws));
            }
            Ok(Err(why)) => shared.book.borrow_mut().dial_failed(why),
            Err(_) => shared
                .book
                .borrow_mut()
                .dial_failed("publisher: connect timeout".into()),
        }
    }
    sleep(SETTLE).await;
    let subscribers_open = room.members.get();
    if publishers == 0 || subscribers_open == 0 {
        let why = format!(
            "{subscribers_open} of {} subscribers and {publishers} of {} publishers opened within {:?}; {}",
            fanout.subscribers,
            fanout.publishers,
            common.connect_timeout,
            shared.book.borrow().samples.join("; ")
        );
        shared.stop(&mut tasks).await;
        return Err(why);
    }
    samples.connected = samples.server();

    let (start, end) = shared.go(common);
    samples.window(start, end).await;

    // Grace: until every expected delivery has come, or time is up.
    let grace_end = Instant::now() + common.grace;
    while Instant::now() < grace_end
        && shared.tally.borrow().received < shared.sent.get() * u64::from(subscribers_open)
    {
        sleep(std::time::Duration::from_millis(20)).await;
    }
    shared.stop(&mut tasks).await;

    let published = shared.sent.get();
    let expected = published * u64::from(subscribers_open);
    let (received, figures) = {
        let tally = shared.tally.borrow();
        let book = shared.book.borrow();
        let figures = json!({
            "subscribers": fanout.subscribers,
            "publishers": fanout.publishers,
            "subscribers_open": subscribers_open,
            "size": common.size,
            "payload": "pad",
            "rate": fanout.rate,
            "window": fanout.window,
            "published": published,
            "expected": expected,
            "received": tally.received,
            "loss": expected as i64 - tally.received as i64,
            "duplicates": tally.duplicates,
            "out_of_order": tally.out_of_order,
            "malformed": tally.malformed,
            "other_lines": tally.other,
            "send_errors": shared.send_errors.get(),
            "dial_failures": book.dial_failures,
            "closed": book.closed,
            "publishes_per_s": per_s(common, published),
            "deliveries_per_s": per_s(common, tally.received),
        });
        (tally.received, figures)
    };
    let Value::Object(figures) = figures else {
        unreachable!("json! of an object")
    };
    Ok(run::report(
        "fanout",
        common,
        figures,
        shared,
        &samples,
        received,
        u64::from(subscribers_open) + publishers,
    ))
}
