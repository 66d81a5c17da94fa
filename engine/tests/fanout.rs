//! Cross-worker fan-out over real sockets: 4 workers, 19 200 subscribers (as many as the
//! machine's hard limit of 20 000 descriptors per process leaves room for), 1000 messages
//! published from a plain thread. Every subscriber gets every message, once, in order; each
//! message is compressed once for the subscribers that agreed to compression.
//! The subscribers run on the engine's client side in a child process (this binary again).
//!
//! And the hand-off between workers bounded in bytes (issue 12): a client flooding a room
//! whose members are on another worker fills that worker's command queue up to
//! `max_handoff_bytes` and no further; the refused publishes are counted; a waiting
//! publish from a plain thread goes through once the worker makes room.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use ringcast::proto::handshake::Request;
use ringcast::server::Backend;
use ringcast::server::{DialRequest, Handler, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{Error, MessageType, PreparedMessage};

use common::{wait_stats, RawClient, Received};

const WORKERS: usize = 4;
const SUBSCRIBERS: u64 = 19_200;
const MESSAGES: u32 = 1000;
const TOPIC: &[u8] = b"ticks";

/// Server side: every connection subscribes to the topic.
struct Subscribe;

impl Handler for Subscribe {
    type Data = ();
    fn on_open(&mut self, socket: &mut Socket<'_, ()>, _request: &Request) {
        socket.subscribe(TOPIC).expect("topic name is short");
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_subscriber_on_every_worker_gets_every_message_in_order() {
    for backend in Backend::ALL {
        fan_out(backend);
    }
}

fn fan_out(backend: Backend) {
    let server = Server::new(ServerConfig {
        addr: Some("127.0.0.1:0".parse().expect("literal")),
        workers: WORKERS,
        backend,
        upgrader: ringcast::Upgrader {
            enable_compression: true,
            handshake_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        },
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    })
    .start(|_| Subscribe)
    .expect("server");
    let url = format!("ws://{}/", server.local_addr().expect("addr"));
    let mut child = common::spawn_child(
        "subscriber_half",
        &[
            ("RINGCAST_FANOUT_URL", &url),
            ("RINGCAST_BACKEND", backend.name()),
        ],
    );
    eprintln!("{backend}: {SUBSCRIBERS} subscribers on {WORKERS} workers");
    wait_until("every subscriber", Duration::from_secs(120), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("subscribers exited early: {status}");
        }
        server.subscribers(TOPIC) as u64 == SUBSCRIBERS
    });
    for worker in 0..WORKERS {
        let local = server.worker_stats(worker).connections;
        assert!(local > 0, "worker {worker} holds no subscriber");
    }
    // The publisher: a plain thread, as a service's data source would be.
    let publisher = {
        let server: ServerHandle = server.clone();
        std::thread::spawn(move || {
            let mut sent = Vec::with_capacity(MESSAGES as usize);
            for seq in 0..MESSAGES {
                let message = Arc::new(
                    PreparedMessage::new(MessageType::Text, format!("{seq} {}", "tick ".repeat(8)))
                        .expect("text"),
                );
                server
                    .publish_prepared(TOPIC, message.clone())
                    .expect("publish");
                sent.push(message);
            }
            sent
        })
    };
    let sent = publisher.join().expect("publisher");
    // The subscribers assert no loss, no duplicate and no disorder themselves.
    common::wait_child(child, Duration::from_secs(180), || {
        format!("server {:#?}", server.stats())
    });
    for message in &sent {
        // Half the subscribers agreed to compression: one compression serves them all.
        assert_eq!(message.compressions(), 1);
    }
    let stats = server.stats();
    assert_eq!(stats.publishes, u64::from(MESSAGES) * WORKERS as u64);
    assert_eq!(stats.deliveries, u64::from(MESSAGES) * SUBSCRIBERS);
    assert_eq!(stats.drops, 0);
    assert_eq!(stats.closes.slow_consumer, 0);
    server.shutdown();
    server.wait();
}

/// Counts each subscriber's messages; reports the first disorder or loss.
struct Subscriber {
    done: Sender<Result<u64, String>>,
}

impl Handler for Subscriber {
    /// The next sequence number expected.
    type Data = u32;

    fn on_message(&mut self, socket: &mut Socket<'_, u32>, _kind: MessageType, payload: &[u8]) {
        let text = std::str::from_utf8(payload).unwrap_or("");
        let seq: Option<u32> = text.split(' ').next().and_then(|s| s.parse().ok());
        let expected = *socket.data();
        if seq != Some(expected) {
            let _ = self.done.send(Err(format!(
                "subscriber {} expected {expected}, got {text:?}",
                socket.tag()
            )));
            return;
        }
        *socket.data() += 1;
        if *socket.data() == MESSAGES {
            let _ = self.done.send(Ok(socket.tag()));
        }
    }

    fn on_dial_error(&mut self, tag: u64, error: ringcast::Error) {
        let _ = self.done.send(Err(format!("subscriber {tag}: {error}")));
    }
}

#[test]
#[ignore = "run by every_subscriber_on_every_worker_gets_every_message_in_order in a child process"]
fn subscriber_half() {
    let url = std::env::var("RINGCAST_FANOUT_URL").expect("run by the server half");
    let backend = Backend::from_env().expect("RINGCAST_BACKEND set by the server half");
    let (done_tx, done_rx) = unbounded();
    let client = Server::new(ServerConfig {
        addr: None,
        workers: 2,
        backend,
        upgrader: ringcast::Upgrader {
            handshake_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        },
        ..ServerConfig::default()
    })
    .start(move |_| Subscriber {
        done: done_tx.clone(),
    })
    .expect("client engine");
    for tag in 0..SUBSCRIBERS {
        // Four source addresses: ports of one are not exhausted, and the option is used.
        let source = format!("127.0.0.{}", 1 + tag % 4).parse().expect("literal");
        client
            .dial(DialRequest {
                tag,
                enable_compression: tag % 2 == 1,
                source: Some(source),
                ..DialRequest::new(&url)
            })
            .expect("dial");
    }
    let mut finished = vec![false; SUBSCRIBERS as usize];
    let deadline = Instant::now() + Duration::from_secs(170);
    for count in 0..SUBSCRIBERS {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(Ok(tag)) => {
                assert!(!finished[tag as usize], "subscriber {tag} finished twice");
                finished[tag as usize] = true;
            }
            Ok(Err(problem)) => panic!("{problem}"),
            Err(_) => panic!("only {count} of {SUBSCRIBERS} subscribers got every message"),
        }
    }
    // Nothing more arrives: a duplicate would show up as a sequence number past the end.
    std::thread::sleep(Duration::from_millis(200));
    if let Ok(Err(problem)) = done_rx.try_recv() {
        panic!("{problem}");
    }
    client.shutdown();
    client.wait();
}

/// Server side of the hand-off tests: tells each client its worker; `join` subscribes to
/// the room; `stall` blocks this worker inside the callback until the test releases it;
/// `flood N` publishes N numbered messages to the room from the callback.
struct Room {
    worker: usize,
    stalled: Sender<usize>,
    release: Receiver<()>,
}

const ROOM: &[u8] = b"room";

impl Handler for Room {
    type Data = ();

    fn on_open(&mut self, socket: &mut Socket<'_, ()>, _request: &Request) {
        let _ = socket.send(
            MessageType::Text,
            format!("worker {}", self.worker).as_bytes(),
        );
    }

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, _kind: MessageType, payload: &[u8]) {
        let text = std::str::from_utf8(payload).unwrap_or("");
        if text == "join" {
            socket.subscribe(ROOM).expect("short topic");
            let _ = socket.send(MessageType::Text, b"joined");
        } else if text == "stall" {
            let _ = self.stalled.send(self.worker);
            // A hang guard, not a wait for time to pass: the test releases the worker.
            self.release
                .recv_timeout(Duration::from_secs(30))
                .expect("released by the test");
            let _ = socket.send(MessageType::Text, b"resumed");
        } else if let Some(n) = text.strip_prefix("flood ") {
            let n: usize = n.parse().expect("count");
            let mut accepted = 0;
            for seq in 0..n {
                match socket.publish(ROOM, MessageType::Text, seq.to_string().as_bytes()) {
                    Ok(_) => accepted += 1,
                    Err(Error::QueueFull { .. }) => {}
                    Err(other) => panic!("publish failed: {other}"),
                }
            }
            let reply = format!("flooded {accepted}");
            let _ = socket.send(MessageType::Text, reply.as_bytes());
        }
    }
}

/// A server of `workers` workers with a `budget`-byte hand-off, running [`Room`]; the
/// receivers of its stall signals and the sender that releases a stalled worker.
fn room_server(
    backend: Backend,
    workers: usize,
    budget: usize,
) -> (ServerHandle, Receiver<usize>, Sender<()>) {
    let (stalled_tx, stalled_rx) = unbounded();
    let (release_tx, release_rx) = unbounded();
    let server = Server::new(ServerConfig {
        addr: Some("127.0.0.1:0".parse().expect("literal")),
        workers,
        backend,
        max_handoff_bytes: budget,
        shutdown_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .start(move |worker| Room {
        worker,
        stalled: stalled_tx.clone(),
        release: release_rx.clone(),
    })
    .expect("server");
    (server, stalled_rx, release_tx)
}

/// A client on worker `want` (connections are spread by the kernel: connect until one
/// lands there).
fn client_on(server: &ServerHandle, want: usize) -> RawClient {
    let addr = server.local_addr().expect("addr");
    for _ in 0..200 {
        let mut client = RawClient::connect(addr, "");
        if client.recv() == Received::Text(format!("worker {want}")) {
            return client;
        }
    }
    panic!("no connection landed on worker {want}");
}

fn expect_text(client: &mut RawClient, text: &str) {
    assert_eq!(client.recv(), Received::Text(text.to_owned()));
}

#[test]
fn a_flood_into_a_room_on_another_worker_stays_within_the_handoff_budget() {
    const BUDGET: usize = 64 * 1024;
    const FLOOD: usize = 5000;
    for backend in Backend::ALL {
        let (server, stalled, release) = room_server(backend, 2, BUDGET);
        let mut member = client_on(&server, 1);
        let mut flooder = client_on(&server, 0);
        member.text("join");
        expect_text(&mut member, "joined");
        // The members' worker stops draining its queue, as a worker behind on its work.
        member.text("stall");
        assert_eq!(stalled.recv_timeout(common::WAIT), Ok(1));
        flooder.text(&format!("flood {FLOOD}"));
        let Received::Text(reply) = flooder.recv() else {
            panic!("{backend}: no flood reply");
        };
        let accepted: usize = reply["flooded ".len()..].parse().expect("count");
        let queued = server.worker_stats(1);
        assert!(
            accepted > 0 && accepted < FLOOD,
            "{backend}: {accepted} accepted"
        );
        assert!(
            queued.handoff_bytes <= BUDGET as u64,
            "{backend}: {} bytes queued for the stalled worker",
            queued.handoff_bytes
        );
        assert_eq!(
            queued.handoffs_refused,
            (FLOOD - accepted) as u64,
            "{backend}"
        );
        release.send(()).expect("worker waits");
        expect_text(&mut member, "resumed");
        // Once full, the queue refused every later publish: the member gets the first
        // ones, each once, in order.
        for seq in 0..accepted {
            expect_text(&mut member, &seq.to_string());
        }
        let drained = wait_stats(&server, "the stalled worker to drain", |s| {
            s.handoff_bytes == 0
        });
        assert_eq!(drained.handoffs_refused, (FLOOD - accepted) as u64);
        let peak = server.worker_stats(1).handoff_peak_bytes;
        assert!(
            peak > 0 && peak <= BUDGET as u64,
            "{backend}: peak {peak} bytes over a {BUDGET}-byte budget"
        );
        server.shutdown();
        server.wait();
    }
}

#[test]
fn publish_timeout_waits_for_the_worker_to_make_room() {
    const BUDGET: usize = 4 * 1024;
    for backend in Backend::ALL {
        let (server, stalled, release) = room_server(backend, 1, BUDGET);
        let mut member = client_on(&server, 0);
        member.text("join");
        expect_text(&mut member, "joined");
        member.text("stall");
        assert_eq!(stalled.recv_timeout(common::WAIT), Ok(0));
        // Fill the stalled worker's queue from this thread.
        let mut accepted = 0;
        loop {
            match server.publish(ROOM, MessageType::Text, accepted.to_string()) {
                Ok(()) => accepted += 1,
                Err(Error::QueueFull { worker: 0, budget }) => {
                    assert_eq!(budget, BUDGET);
                    break;
                }
                Err(other) => panic!("{backend}: {other}"),
            }
        }
        // A wait that ends before the worker makes room is refused too.
        match server.publish_timeout(ROOM, MessageType::Text, "late", Duration::from_millis(20)) {
            Err(Error::QueueFull { .. }) => {}
            other => panic!("{backend}: expected QueueFull, got {other:?}"),
        }
        let waiting = {
            let server = server.clone();
            std::thread::spawn(move || {
                server.publish_timeout(ROOM, MessageType::Text, "last", Duration::from_secs(30))
            })
        };
        wait_stats(&server, "the publisher to wait for room", |s| {
            s.handoff_waiters == 1
        });
        release.send(()).expect("worker waits");
        waiting
            .join()
            .expect("publisher thread")
            .expect("published once the worker made room");
        expect_text(&mut member, "resumed");
        for seq in 0..accepted {
            expect_text(&mut member, &seq.to_string());
        }
        expect_text(&mut member, "last");
        assert_eq!(server.stats().handoffs_refused, 2, "{backend}");
        server.shutdown();
        server.wait();
    }
}
