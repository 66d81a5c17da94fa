//! The engine beside tokio: a task publishing through `ServerHandle::publish_async`
//! waits for room in the byte-bounded hand-off instead of growing memory, a cancelled
//! publish publishes nothing, and `wait_async` completes once the workers stopped.
//!
//! Alone in its binary (but for the small shutdown test), so the memory the flood test
//! reads from /proc/self/status is this server's.

mod common;

use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use ringcast::server::{Backend, Handler, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{Error, MessageType};

use common::{wait_stats, RawClient, WAIT};

/// Blocks its worker inside the callback on a "stall" message until the test releases
/// it: a worker behind on its work, which does not drain its command queue meanwhile.
struct Stall {
    stalled: Sender<()>,
    release: Receiver<()>,
}

impl Handler for Stall {
    type Data = ();

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, _kind: MessageType, payload: &[u8]) {
        if payload == b"stall" {
            let _ = self.stalled.send(());
            // A hang guard, not a wait for time to pass: the test releases the worker.
            self.release
                .recv_timeout(Duration::from_secs(60))
                .expect("released by the test");
            let _ = socket.send(MessageType::Text, b"resumed");
        }
    }
}

/// A one-worker server with a `budget`-byte hand-off whose worker is stalled now, its
/// connection, and the sender that releases it.
fn stalled_server(budget: usize) -> (ServerHandle, RawClient, Sender<()>) {
    let (stalled_tx, stalled_rx) = unbounded();
    let (release_tx, release_rx) = unbounded();
    let server = Server::new(ServerConfig {
        addr: Some("127.0.0.1:0".parse().expect("literal")),
        workers: 1,
        backend: Backend::Epoll,
        max_handoff_bytes: budget,
        shutdown_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .start(move |_| Stall {
        stalled: stalled_tx.clone(),
        release: release_rx.clone(),
    })
    .expect("server");
    let mut client = RawClient::connect(server.local_addr().expect("addr"), "");
    client.text("stall");
    stalled_rx.recv_timeout(WAIT).expect("the worker stalls");
    (server, client, release_tx)
}

/// This process's resident memory in bytes (VmRSS of /proc/self/status).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// A task floods the handle with 64 MiB of publishes (4096 of 16 KiB) while the worker
/// drains nothing: the task waits for room with at most the 256 KiB budget queued, and
/// the process's memory grows by far less than the flood; once the worker runs again
/// every publish goes through, none refused. A publish cancelled while it waits
/// publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_flooding_the_handle_waits_for_room_and_memory_stays_bounded() {
    const BUDGET: usize = 256 * 1024;
    const FLOOD: u64 = 4096;
    const SIZE: usize = 16 * 1024;
    let (server, mut client, release) = stalled_server(BUDGET);
    let before = rss_bytes();

    let publisher = {
        let server = server.clone();
        tokio::spawn(async move {
            for seq in 0..FLOOD {
                let mut payload = vec![b'x'; SIZE];
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                server
                    .publish_async(b"flood", MessageType::Binary, payload)
                    .await
                    .expect("published once there is room");
            }
        })
    };
    let full = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            wait_stats(&server, "the publisher to wait for room", |s| {
                s.handoff_waiters == 1
            })
        })
        .await
        .unwrap()
    };
    assert!(!publisher.is_finished(), "the flood waits for the worker");
    assert!(
        full.handoff_bytes <= BUDGET as u64,
        "{} bytes queued over a {BUDGET}-byte budget",
        full.handoff_bytes
    );
    let grown = rss_bytes().saturating_sub(before);
    let flood_bytes = FLOOD * SIZE as u64;
    println!(
        "{} bytes queued, memory grew {grown} bytes while {flood_bytes} bytes waited to be published",
        full.handoff_bytes
    );
    assert!(
        grown < flood_bytes / 4,
        "memory grew {grown} bytes while a {flood_bytes}-byte flood waited"
    );

    // A publish given up on while it waits (its future dropped) publishes nothing. (As
    // large as the flood's: a smaller one could still fit the budget's rest.)
    let waited = tokio::time::timeout(
        Duration::from_millis(50),
        server.publish_async(b"flood", MessageType::Binary, vec![b'y'; SIZE]),
    )
    .await;
    assert!(waited.is_err(), "no room while the worker is stalled");

    release.send(()).expect("the worker waits");
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the flood finished once the worker drained")
        .expect("publisher task");
    let drained = tokio::task::spawn_blocking({
        let server = server.clone();
        move || {
            wait_stats(&server, "every publish handled", |s| {
                s.publishes == FLOOD && s.handoff_bytes == 0
            })
        }
    })
    .await
    .unwrap();
    assert_eq!(drained.handoffs_refused, 0, "nothing was refused");
    let peak = drained.handoff_peak_bytes;
    assert!(
        peak <= BUDGET as u64,
        "peak {peak} bytes over a {BUDGET}-byte budget"
    );
    assert_eq!(
        client.recv(),
        common::Received::Text("resumed".into()),
        "the stalled callback ended"
    );
    // Nothing more than the flood was handed over: the cancelled publish is not there.
    assert_eq!(server.stats().publishes, FLOOD);
    server.shutdown();
    server.wait_async().await;
}

/// A publish refused at once and one that waits see the same full queue: `publish`
/// fails with `QueueFull`, `publish_async` completes once the worker makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_a_full_queue_and_publish_async_waits_it_out() {
    const BUDGET: usize = 4 * 1024;
    let (server, _client, release) = stalled_server(BUDGET);
    let mut accepted = 0u64;
    loop {
        match server.publish(b"t", MessageType::Text, accepted.to_string()) {
            Ok(()) => accepted += 1,
            Err(Error::QueueFull { worker: 0, budget }) => {
                assert_eq!(budget, BUDGET);
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move { server.publish_async(b"t", MessageType::Text, "last").await })
    };
    release.send(()).expect("the worker waits");
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("published once the worker made room")
        .unwrap()
        .unwrap();
    let stats = tokio::task::spawn_blocking({
        let server = server.clone();
        move || {
            wait_stats(&server, "every publish handled", |s| {
                s.publishes == accepted + 1
            })
        }
    })
    .await
    .unwrap();
    assert_eq!(stats.handoffs_refused, 1);
    server.shutdown();
    server.wait_async().await;
}

/// `wait_async` completes once every worker has stopped: the port no longer accepts.
#[tokio::test]
async fn wait_async_completes_when_the_workers_have_stopped() {
    let server = Server::new(ServerConfig {
        addr: Some("127.0.0.1:0".parse().expect("literal")),
        workers: 2,
        backend: Backend::Epoll,
        shutdown_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .start(|_| Stall {
        stalled: unbounded().0,
        release: unbounded().1,
    })
    .expect("server");
    let addr = server.local_addr().expect("addr");
    server.shutdown();
    tokio::time::timeout(WAIT, server.wait_async())
        .await
        .expect("the workers stopped");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens once the workers stopped"
    );
    // A second wait, async or not, returns at once.
    server.wait_async().await;
    server.wait();
}
