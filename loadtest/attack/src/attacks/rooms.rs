//! Attacks on fan-out: readers that do not read, rooms by the thousand, a flood across
//! workers, and topics shared by the hundred thousand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{in_parallel, Ctx, Kind, Outcome};
use crate::wire::{self, Client, Ending};

/// Readers that never read. Echo: 8 clients send messages and never read the echoes.
/// Chat: 100 members of a room never read while one member floods it.
pub fn slow_consumers(ctx: &Ctx) -> Outcome {
    match ctx.kind {
        Kind::Chat => slow_room(ctx),
        _ => slow_echo(ctx),
    }
}

fn slow_echo(ctx: &Ctx) -> Outcome {
    let size = ctx.max_message.min(64 * 1024);
    let mut batch = Vec::new();
    for _ in 0..8 {
        wire::frame_into(&mut batch, wire::BINARY, true, false, &vec![0x5a; size]);
    }
    let (tally, batches) = super::flood_unread(ctx, "slow", 8, &batch);
    let sent = batches * batch.len() as u64;
    Outcome::note(format!("{} MiB sent unread: {tally}", sent >> 20))
}

/// Reads and drops everything `client` receives until `stop`, on a thread of the scope,
/// as fast as the socket gives it (raw reads, no framing: a reader this fast is never a
/// slow consumer); counts the bytes.
fn drain<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    client: Client,
    stop: &'s AtomicBool,
    bytes: &'s AtomicU64,
) {
    scope.spawn(move || {
        use std::io::Read;
        let mut stream = client.stream;
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = vec![0u8; 256 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(err) if wire::ending_of(&err) == Ending::Open => {}
                Err(_) => return,
            }
        }
    });
}

/// Sends `size`-byte text messages on `writer` in batches until `deadline`; the count.
fn flood(mut writer: Client, size: usize, deadline: Instant) -> u64 {
    let mut batch = Vec::new();
    for _ in 0..64 {
        wire::frame_into(&mut batch, wire::TEXT, true, false, &vec![b'f'; size]);
    }
    writer.flood(&batch, deadline).0 * 64
}

/// A second handle on the same connection, for a reader and a writer on two threads.
fn split(client: &Client, ctx: &Ctx) -> Option<Client> {
    let stream = client.stream.try_clone().ok()?;
    let mut twin = Client::from_stream(stream);
    twin.extensions = client.extensions.clone();
    let _ = twin.stream.set_read_timeout(Some(ctx.io_timeout));
    Some(twin)
}

fn slow_room(ctx: &Ctx) -> Outcome {
    let members: Vec<Client> = in_parallel(ctx.count(100), 4, |_| {
        Client::upgrade(ctx.addr, &ctx.path("slow"), "", ctx.io_timeout)
    })
    .into_iter()
    .filter_map(Result::ok)
    .collect();
    let Ok(publisher) = Client::upgrade(ctx.addr, &ctx.path("slow"), "", ctx.io_timeout) else {
        return Outcome::note("the publisher could not join");
    };
    let size = ctx.max_message.min(4096);
    let (stop, read) = (AtomicBool::new(false), AtomicU64::new(0));
    let sent = std::thread::scope(|scope| {
        let writer = split(&publisher, ctx);
        drain(scope, publisher, &stop, &read);
        let sent = writer.map_or(0, |writer| flood(writer, size, ctx.deadline()));
        stop.store(true, Ordering::Relaxed);
        sent
    });
    // Their endings would lie behind megabytes of unread frames: not read.
    Outcome::note(format!(
        "{sent} messages of {size} B to a room of {} members that never read",
        members.len()
    ))
}

/// Connections each alone in a room (or topic) of its own, held for the flood's time.
pub fn many_rooms(ctx: &Ctx) -> Outcome {
    let n = ctx.count(2000);
    let mut clients: Vec<Client> = in_parallel(n, 4, |i| {
        Client::upgrade(ctx.addr, &ctx.path(&format!("room{i}")), "", ctx.io_timeout)
    })
    .into_iter()
    .filter_map(Result::ok)
    .collect();
    let joined = clients.len();
    std::thread::sleep(ctx.seconds);
    let tally = wire::tally_now(&mut clients);
    Outcome::note(format!(
        "{joined} of {n} rooms held {:?}: {tally}",
        ctx.seconds
    ))
}

/// Two members flood a room of 40 more, all of them reading. With the server's counters
/// in reach (`--metrics-addr`: the per-worker connection counts the chat once served to
/// anyone), the members are placed on the last worker and the flooders on the first, so
/// that every message crosses between workers and the members' worker does all the
/// sending; without, the kernel spreads them.
pub fn cross_worker_flood(ctx: &Ctx) -> Outcome {
    let placed = ctx.metrics.and_then(|metrics| place(ctx, metrics, 40));
    let (members, flooders, placement) = match placed {
        Some((members, flooders)) => (
            members,
            flooders,
            "members on the last worker, flooders on the first",
        ),
        None => {
            let members = in_parallel(ctx.count(40), 4, |_| {
                Client::upgrade(ctx.addr, &ctx.path("flood"), "", ctx.io_timeout)
            })
            .into_iter()
            .filter_map(Result::ok)
            .collect();
            let flooders = (0..2)
                .filter_map(|_| {
                    Client::upgrade(ctx.addr, &ctx.path("flood"), "", ctx.io_timeout).ok()
                })
                .collect();
            (members, flooders, "placed by the kernel")
        }
    };
    let size = ctx.max_message.min(4096);
    let (stop, read) = (AtomicBool::new(false), AtomicU64::new(0));
    let member_count = members.len();
    let sent: u64 = std::thread::scope(|scope| {
        for member in members {
            drain(scope, member, &stop, &read);
        }
        let deadline = ctx.deadline();
        let writers: Vec<_> = flooders
            .into_iter()
            .filter_map(|flooder| {
                let writer = split(&flooder, ctx)?;
                drain(scope, flooder, &stop, &read);
                Some(scope.spawn(move || flood(writer, size, deadline)))
            })
            .collect();
        let sent = writers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
        stop.store(true, Ordering::Relaxed);
        sent
    });
    Outcome::note(format!(
        "{sent} messages of {size} B into a room of {member_count} readers ({placement}); {} MiB read",
        read.load(Ordering::Relaxed) >> 20
    ))
}

/// The open connections per worker, from the counters at `metrics`.
fn worker_connections(metrics: std::net::SocketAddr) -> Option<Vec<u64>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let mut counts = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("ringcast_connections{worker=\"") else {
            continue;
        };
        let (worker, value) = rest.split_once("\"} ")?;
        let worker: usize = worker.parse().ok()?;
        if counts.len() <= worker {
            counts.resize(worker + 1, 0);
        }
        counts[worker] = value.trim().parse().ok()?;
    }
    (counts.len() >= 2).then_some(counts)
}

/// Connects to the flood room until `members` connections sit on the last worker and 2
/// on the first, telling each one's worker by which count rose; at most 10 times as many
/// tries. The misplaced ones are closed.
fn place(
    ctx: &Ctx,
    metrics: std::net::SocketAddr,
    members: usize,
) -> Option<(Vec<Client>, Vec<Client>)> {
    let mut counts = worker_connections(metrics)?;
    let last = counts.len() - 1;
    let (mut placed, mut flooders, mut misplaced) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..(members + 2) * 10 {
        if placed.len() == members && flooders.len() == 2 {
            break;
        }
        let client = Client::upgrade(ctx.addr, &ctx.path("flood"), "", ctx.io_timeout).ok()?;
        // The counters are published at the end of a worker's turn: poll a little.
        let deadline = Instant::now() + Duration::from_secs(1);
        let now = loop {
            let now = worker_connections(metrics)?;
            if now.iter().sum::<u64>() > counts.iter().sum::<u64>() || Instant::now() > deadline {
                break now;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let worker = (0..now.len()).find(|&w| now[w] > counts.get(w).copied().unwrap_or(0));
        counts = now;
        match worker {
            Some(w) if w == last && placed.len() < members => placed.push(client),
            Some(0) if flooders.len() < 2 => flooders.push(client),
            _ => misplaced.push(client),
        }
    }
    (placed.len() == members && flooders.len() == 2).then_some((placed, flooders))
}

/// Two clients subscribe to the same topics, up to 100 000 each (`+NAME` messages), then
/// one leaves: the server must drop its subscriptions without stalling others.
pub fn shared_topics_then_close(ctx: &Ctx) -> Outcome {
    let topics = 100_000;
    let subscribe = |client: &mut Client| -> Result<Duration, String> {
        let start = Instant::now();
        let mut batch = Vec::new();
        for i in 0..topics {
            wire::frame_into(
                &mut batch,
                wire::TEXT,
                true,
                false,
                format!("+t{i}").as_bytes(),
            );
            if batch.len() > 64 * 1024 || i + 1 == topics {
                client
                    .send(&batch)
                    .map_err(|e| format!("cut at topic {i}: {e}"))?;
                batch.clear();
            }
        }
        // The pong comes after every subscription before it was handled.
        client
            .send(&wire::frame(wire::PING, b"subscribed"))
            .map_err(|e| e.to_string())?;
        let deadline = start + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("subscriptions not handled within 30 s".into());
            }
            let _ = client.stream.set_read_timeout(Some(left));
            match client.read_frame() {
                Ok(frame) if frame.opcode == wire::PONG && frame.payload == b"subscribed" => {
                    return Ok(start.elapsed())
                }
                Ok(frame) if frame.opcode == wire::CLOSE => {
                    return Err(format!("closed by the server: {:?}", frame.payload))
                }
                Ok(_) => {}
                Err(err) => return Err(format!("ended: {}", wire::ending_of(&err))),
            }
        }
    };
    let clients: Vec<Client> = (0..2)
        .filter_map(|_| Client::upgrade(ctx.addr, &ctx.path("shared"), "", ctx.io_timeout).ok())
        .collect();
    let mut clients = clients.into_iter();
    let (Some(mut stays), Some(leaves)) = (clients.next(), clients.next()) else {
        return Outcome::note("could not connect two clients");
    };
    let took = in_parallel(2, 2, |i| {
        // Each thread works on its own client: take them out of their slots.
        let client = if i == 0 { &stays } else { &leaves };
        let stream = client.stream.try_clone();
        stream.map_err(|e| e.to_string()).and_then(|stream| {
            let mut twin = Client::from_stream(stream);
            subscribe(&mut twin)
        })
    });
    let describe = |r: &Result<Duration, String>| match r {
        Ok(took) => format!("subscribed in {} ms", took.as_millis()),
        Err(why) => why.clone(),
    };
    // The leaving client goes away without a close frame, as a crashed client would.
    drop(leaves.stream.shutdown(std::net::Shutdown::Both));
    std::thread::sleep(Duration::from_millis(500).max(ctx.seconds / 2));
    let stayed = stays.ended_now();
    Outcome::note(format!(
        "{topics} topics each: {}, {}; the one that stayed: {stayed}",
        describe(&took[0]),
        describe(&took[1])
    ))
}
