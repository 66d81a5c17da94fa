//! Cross-worker fan-out over real sockets: 4 workers, 19 200 subscribers (as many as the
//! machine's hard limit of 20 000 descriptors per process leaves room for), 1000 messages
//! published from a plain thread. Every subscriber gets every message, once, in order; each
//! message is compressed once for the subscribers that agreed to compression.
//! The subscribers run on the engine's client side in a child process (this binary again).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use ringcast::proto::handshake::Request;
use ringcast::server::Backend;
use ringcast::server::{DialRequest, Handler, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{MessageType, PreparedMessage};

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
