//! Echo: every connection sends `pipeline` messages, and each echo that comes back sends
//! the next (a closed loop). Latency is the round trip, from the moment a message is
//! handed to tungstenite to the moment its echo is read.

use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::args::{Common, Echo};
use crate::run::{self, per_s, Phase, Samples, Shared, SETTLE};
use crate::wire::{now_ns, Arrival, Order, Stamp, Target, Ws};

/// What the echo tasks share.
struct Echoes {
    shared: Shared,
    pipeline: u32,
    size: usize,
}

impl Echoes {
    /// Feeds the next message of connection `index` to its sink; whether that worked.
    async fn feed(&self, ws: &mut Ws, index: u32, seq: &mut u64) -> bool {
        let (_, start, end) = self.shared.window.get();
        let time = now_ns();
        if time >= end {
            return false;
        }
        let stamp = Stamp {
            sender: index,
            seq: *seq,
            time,
        };
        if let Err(e) = ws.feed(Message::text(stamp.text(self.size))).await {
            self.shared.send_failed(format!("connection {index}: {e}"));
            return false;
        }
        *seq += 1;
        if time >= start {
            self.shared.sent.set(self.shared.sent.get() + 1);
        }
        true
    }

    /// A text frame at connection `index`: counts its echoes; how many came back (each
    /// releases the next message).
    fn echoes(&self, index: u32, order: &mut Order, payload: &[u8], now: u64) -> u32 {
        let (origin, start, end) = self.shared.window.get();
        let mut tally = self.shared.tally.borrow_mut();
        let mut back = 0;
        for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let stamp = match Stamp::parse(line) {
                Some(stamp) if stamp.sender == index => stamp,
                None if !Stamp::looks_like_one(line) => {
                    tally.other += 1;
                    continue;
                }
                _ => {
                    tally.malformed += 1;
                    continue;
                }
            };
            let arrival = order.observe(stamp.seq);
            let counted = stamp.time >= start && stamp.time < end;
            if arrival == Arrival::Duplicate {
                tally.duplicates += u64::from(counted);
                continue;
            }
            back += 1;
            if counted {
                if arrival == Arrival::Late {
                    tally.out_of_order += 1;
                }
                tally.received += 1;
                tally.record(now.saturating_sub(stamp.time));
            }
        }
        tally.seen(now.saturating_sub(origin), u64::from(back));
        back
    }
}

/// Connection `index`: dial, wait for the start, then keep its pipeline full until the
/// window ends; read the last echoes until the run stops.
async fn connection(
    echoes: Rc<Echoes>,
    index: u32,
    target: Rc<Target>,
    gate: Rc<Semaphore>,
    deadline: Instant,
) {
    let shared = &echoes.shared;
    let dialled = timeout_at(deadline.into(), async {
        let _slot = gate.acquire().await;
        target.dial().await
    })
    .await;
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
    let mut phase = shared.phase.subscribe();
    if shared.window.started() {
        return run::close(&mut ws).await; // too late to be counted
    }
    shared.book.borrow_mut().opened += 1;
    // An echo server sends nothing unasked, so nothing needs reading until the start.
    let running = phase
        .wait_for(|p| *p >= Phase::Running)
        .await
        .is_ok_and(|p| *p == Phase::Running);
    if !running {
        return run::close(&mut ws).await;
    }
    let (mut order, mut seq) = (Order::default(), 0u64);
    for _ in 0..echoes.pipeline {
        if !echoes.feed(&mut ws, index, &mut seq).await {
            break;
        }
    }
    if let Err(e) = ws.flush().await {
        shared.send_failed(format!("connection {index}: {e}"));
    }
    let ended = {
        let mut stop = pin!(phase.wait_for(|p| *p == Phase::Stopping));
        loop {
            tokio::select! {
                biased;
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(_))) if shared.stopping() => break None,
                    Some(Ok(Message::Text(text))) => {
                        let back = echoes.echoes(index, &mut order, text.as_bytes(), now_ns());
                        let mut fed = 0;
                        for _ in 0..back {
                            if !echoes.feed(&mut ws, index, &mut seq).await {
                                break;
                            }
                            fed += 1;
                        }
                        if fed > 0 {
                            if let Err(e) = ws.flush().await {
                                shared.send_failed(format!("connection {index}: {e}"));
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => shared.tally.borrow_mut().other += 1,
                    Some(Ok(Message::Close(frame))) => break Some(format!("closed by the server: {frame:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(format!("read: {e}")),
                    None => break Some("connection ended".to_owned()),
                },
                _ = &mut stop => break None,
            }
        }
    };
    match ended {
        Some(why) if !shared.stopping() => shared.book.borrow_mut().closed(why),
        Some(_) => {}
        None => run::close(&mut ws).await,
    }
}

/// Runs the echo scenario; the report.
pub async fn run(common: &Common, echo: &Echo) -> Result<Value, String> {
    let target = Rc::new(Target::new(&common.url, common.read_buffer)?);
    let mut samples = Samples::new(common.server_pid)?;
    let echoes = Rc::new(Echoes {
        shared: Shared::new(),
        pipeline: echo.pipeline,
        size: common.size,
    });
    let shared = &echoes.shared;
    samples.before = samples.server();

    let mut tasks = JoinSet::new();
    let gate = Rc::new(Semaphore::new(common.concurrency));
    let deadline = Instant::now() + common.connect_timeout;
    for index in 0..echo.connections {
        tasks.spawn_local(connection(
            echoes.clone(),
            index,
            target.clone(),
            gate.clone(),
            deadline,
        ));
    }
    shared.dials(u64::from(echo.connections), deadline).await;
    sleep(SETTLE).await;
    let open = shared.book.borrow().opened;
    if open == 0 {
        let why = format!(
            "no connection opened within {:?}; {}",
            common.connect_timeout,
            shared.book.borrow().samples.join("; ")
        );
        shared.stop(&mut tasks).await;
        return Err(why);
    }
    samples.connected = samples.server();

    let (start, end) = shared.go(common);
    samples.window(start, end).await;
    let grace_end = Instant::now() + common.grace;
    while Instant::now() < grace_end && shared.tally.borrow().received < shared.sent.get() {
        sleep(Duration::from_millis(20)).await;
    }
    shared.stop(&mut tasks).await;

    let sent = shared.sent.get();
    let (received, figures) = {
        let tally = shared.tally.borrow();
        let book = shared.book.borrow();
        let figures = json!({
            "connections": echo.connections,
            "connections_open": open,
            "pipeline": echo.pipeline,
            "rate": null,
            "size": common.size,
            "payload": "pad",
            "sent": sent,
            "received": tally.received,
            "loss": sent as i64 - tally.received as i64,
            "duplicates": tally.duplicates,
            "out_of_order": tally.out_of_order,
            "malformed": tally.malformed,
            "other_lines": tally.other,
            "send_errors": shared.send_errors.get(),
            "dial_failures": book.dial_failures,
            "closed": book.closed,
            "messages_per_s": per_s(common, tally.received),
        });
        (tally.received, figures)
    };
    let Value::Object(figures) = figures else {
        unreachable!("json! of an object")
    };
    Ok(run::report(
        "echo", common, figures, shared, &samples, received, open,
    ))
}
