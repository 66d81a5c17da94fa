//! Redis as untrusted input: a fake Redis written here (a small RESP server on loopback)
//! stands in for a Redis on which anyone may `PUBLISH`. It pushes forged messages on the
//! channels a `chat` node subscribes to (oversized, control types, garbage, and RESP that
//! is not RESP at all) and stalls the publisher's link; the node must deliver none of the
//! forgeries, count them, keep its memory bounded, and stay up.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ringcast::client::ClientStream;
use ringcast::server::{encode_envelope, Broker, RedisBroker, RedisConfig};
use ringcast::{Conn, Dialer, MessageType, PreparedMessage};

mod common;

use common::text;

/// A hang guard for every wait; nothing here depends on timing.
const LIMIT: Duration = Duration::from_secs(20);

/// What the fake knows of its clients.
#[derive(Default)]
struct State {
    /// Per connection: a writer and the channels it subscribed to.
    subscribers: HashMap<usize, (TcpStream, HashSet<Vec<u8>>)>,
    /// `PUBLISH`es received: (channel, payload).
    published: Vec<(Vec<u8>, Vec<u8>)>,
    /// Connections accepted so far.
    connections: usize,
    /// While set, `PUBLISH` is read but never answered (a Redis that has stalled).
    stall_publish: bool,
}

/// A RESP server of a few commands on a loopback port, one thread per connection.
struct FakeRedis {
    addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl FakeRedis {
    fn start() -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = shared.clone();
                let id = {
                    let mut guard = state.0.lock().expect("state");
                    guard.connections += 1;
                    guard.connections
                };
                std::thread::spawn(move || serve(id, stream, &state));
            }
        });
        FakeRedis { addr, state }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Waits until `condition` holds of the state (checked on every change).
    fn wait(&self, what: &str, mut condition: impl FnMut(&State) -> bool) {
        let (lock, changed) = &*self.state;
        let deadline = Instant::now() + LIMIT;
        let mut state = lock.lock().expect("state");
        while !condition(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: not within {LIMIT:?}");
            state = changed.wait_timeout(state, left).expect("state").0;
        }
    }

    /// Waits until some connection subscribes to `channel`.
    fn wait_subscribed(&self, channel: &[u8]) {
        self.wait("a subscription", |state| {
            state
                .subscribers
                .values()
                .any(|(_, set)| set.contains(channel))
        });
    }

    /// Sends `payload` as a pub/sub message on `channel` to every subscriber of it.
    fn push(&self, channel: &[u8], payload: &[u8]) {
        let mut frame = Vec::new();
        array(&mut frame, &[b"message", channel, payload]);
        self.push_raw(channel, &frame);
    }

    /// Sends raw bytes to every subscriber of `channel`.
    fn push_raw(&self, channel: &[u8], bytes: &[u8]) {
        let state = self.state.0.lock().expect("state");
        for (stream, channels) in state.subscribers.values() {
            if channels.contains(channel) {
                (&*stream).write_all(bytes).expect("push to a subscriber");
            }
        }
    }

    fn stall_publishes(&self) {
        self.state.0.lock().expect("state").stall_publish = true;
    }

    fn published(&self) -> usize {
        self.state.0.lock().expect("state").published.len()
    }
}

/// Appends a RESP array of bulk strings.
fn array(out: &mut Vec<u8>, items: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
    for item in items {
        out.extend_from_slice(format!("${}\r\n", item.len()).as_bytes());
        out.extend_from_slice(item);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one command (a RESP array of bulk strings); `None` at the end of the stream or
/// on anything else.
fn read_command(reader: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let count: usize = line.strip_prefix('*')?.trim_end().parse().ok()?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.strip_prefix('$')?.trim_end().parse().ok()?;
        let mut item = vec![0; len + 2];
        reader.read_exact(&mut item).ok()?;
        item.truncate(len);
        items.push(item);
    }
    Some(items)
}

/// One client connection: answers the commands the `redis` crate sends (its connection
/// set-up, PING, PUBLISH, SUBSCRIBE, UNSUBSCRIBE) the way Redis 7 does over RESP2.
fn serve(id: usize, stream: TcpStream, state: &(Mutex<State>, Condvar)) {
    let (lock, changed) = state;
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream.try_clone().expect("clone");
    while let Some(command) = read_command(&mut reader) {
        let Some(name) = command.first() else { break };
        let mut out = Vec::new();
        {
            let mut state = lock.lock().expect("state");
            match name.to_ascii_uppercase().as_slice() {
                b"PUBLISH" if command.len() == 3 => {
                    state
                        .published
                        .push((command[1].clone(), command[2].clone()));
                    if !state.stall_publish {
                        out.extend_from_slice(b":0\r\n");
                    }
                }
                verb @ (b"SUBSCRIBE" | b"UNSUBSCRIBE") => {
                    let subscribing = verb == b"SUBSCRIBE";
                    let entry = state
                        .subscribers
                        .entry(id)
                        .or_insert_with(|| (stream.try_clone().expect("clone"), HashSet::new()));
                    let mut channels: Vec<Vec<u8>> = command[1..].to_vec();
                    if channels.is_empty() && !subscribing {
                        channels = entry.1.iter().cloned().collect();
                    }
                    let kind: &[u8] = if subscribing {
                        b"subscribe"
                    } else {
                        b"unsubscribe"
                    };
                    if channels.is_empty() {
                        out.extend_from_slice(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
                    }
                    for channel in channels {
                        if subscribing {
                            entry.1.insert(channel.clone());
                        } else {
                            entry.1.remove(&channel);
                        }
                        out.extend_from_slice(format!("*3\r\n${}\r\n", kind.len()).as_bytes());
                        out.extend_from_slice(kind);
                        out.extend_from_slice(format!("\r\n${}\r\n", channel.len()).as_bytes());
                        out.extend_from_slice(&channel);
                        out.extend_from_slice(format!("\r\n:{}\r\n", entry.1.len()).as_bytes());
                    }
                }
                b"PUNSUBSCRIBE" => {
                    out.extend_from_slice(b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n");
                }
                b"PING" if state.subscribers.contains_key(&id) => {
                    out.extend_from_slice(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
                }
                b"PING" => out.extend_from_slice(b"+PONG\r\n"),
                // CLIENT SETINFO and anything else of the set-up.
                _ => out.extend_from_slice(b"+OK\r\n"),
            }
            changed.notify_all();
        }
        if writer.write_all(&out).is_err() {
            break;
        }
    }
    let mut state = lock.lock().expect("state");
    state.subscribers.remove(&id);
    changed.notify_all();
}

/// A `chat` node with `--redis` on the fake, `--max-message 4096`, its counters on a
/// metrics port; killed when dropped.
struct Chat(common::Program);

impl Chat {
    fn start(redis: &FakeRedis) -> Chat {
        let url = redis.url();
        Chat(common::Program::start(
            env!("CARGO_BIN_EXE_chat"),
            &[
                "--workers",
                "2",
                "--max-message",
                "4096",
                "--node-id",
                "0x1",
                "--redis",
                &url,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            "warn",
        ))
    }

    fn join(&self, room: &str) -> Conn<ClientStream> {
        let dialer = Dialer {
            handshake_timeout: Some(LIMIT),
            ..Dialer::default()
        };
        let url = format!("ws://{}/ws?room={room}", self.0.addr);
        let (mut conn, _) = dialer.dial(&url, &[]).expect("dial");
        conn.set_read_deadline(Some(Instant::now() + LIMIT));
        assert!(text(&mut conn).contains(r#""type":"join""#));
        conn
    }

    /// Polls the broker's counter `name` until it reads `value`.
    fn wait_figure(&self, name: &str, value: f64) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let figures = self.0.redis_figures();
            if figures.get(name) == Some(&value) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} != {value}: {figures:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An envelope from node 2 (not the chat node, which is 1).
fn envelope(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_envelope(2, MessageType::Text, payload, &mut out);
    out[10] = kind;
    out
}

#[test]
fn forged_envelopes_from_redis_are_counted_and_never_reach_a_client() {
    let redis = FakeRedis::start();
    let mut chat = Chat::start(&redis);
    chat.wait_figure("connected", 1.0);
    let mut member = chat.join("alpha");
    // Pings would be answered by the Conn unseen: count them.
    let pings = Arc::new(Mutex::new(0usize));
    let seen = pings.clone();
    let answer = member.ping_handler();
    member.set_ping_handler(Some(Arc::new(move |data, control| {
        *seen.lock().expect("pings") += 1;
        answer(data, control)
    })));
    let channel = b"ringcast:room:alpha";
    redis.wait_subscribed(channel);

    let malformed: Vec<Vec<u8>> = vec![
        envelope(9, b"x"),        // ping with a 1-byte body
        envelope(8, b"x"),        // close with a 1-byte body: invalid on the wire
        envelope(8, b"\x03\xe8"), // a valid close 1000: still not a broker's to send
        envelope(10, b""),        // pong
        envelope(3, b"reserved"), // a reserved opcode
        envelope(1, b"\xff\xfe"), // text that is not UTF-8
        b"\xb7".to_vec(),         // shorter than a header
        b"not an envelope".to_vec(),
        {
            let mut newer = envelope(1, b"hi");
            newer[1] = 2;
            newer
        },
    ];
    let oversized = [envelope(1, &[b'a'; 4097]), envelope(2, &[0; 50_000])];
    for forged in &malformed {
        redis.push(channel, forged);
    }
    for forged in &oversized {
        redis.push(channel, forged);
    }
    // At the limit is allowed; then an ordinary line.
    redis.push(channel, &envelope(2, &[7; 4096]));
    redis.push(channel, &envelope(1, b"hello from node 2"));

    let (kind, payload) = member.read_message().expect("the 4096-byte message");
    assert_eq!((kind, payload.len()), (MessageType::Binary, 4096));
    assert_eq!(
        text(&mut member),
        "hello from node 2",
        "nothing forged came first"
    );
    assert_eq!(*pings.lock().expect("pings"), 0, "no forged ping arrived");
    chat.wait_figure("malformed_total", malformed.len() as f64);
    chat.wait_figure("oversized_total", oversized.len() as f64);
    chat.wait_figure("received_total", 2.0);

    // The node is up and its rooms work.
    assert!(chat.0.alive());
    let mut other = chat.join("alpha");
    other
        .write_message(MessageType::Text, b"still here")
        .expect("send");
    assert_eq!(text(&mut other), "still here");
    assert!(text(&mut member).contains(r#""type":"join""#));
    assert_eq!(text(&mut member), "still here");
}

#[test]
fn a_redis_speaking_garbage_is_a_failed_link_and_the_node_reconnects() {
    let redis = FakeRedis::start();
    let mut chat = Chat::start(&redis);
    chat.wait_figure("connected", 1.0);
    let mut member = chat.join("alpha");
    let channel = b"ringcast:room:alpha";
    redis.wait_subscribed(channel);
    // Not RESP: a negative bulk length, then noise.
    redis.push_raw(channel, b"$-7\r\n\x00\xff garbage \r\n*x\r\n");
    // The subscriber drops that connection and subscribes again on a new one.
    redis.wait("a reconnection", |state| {
        state.subscribers.len() == 1 && state.connections >= 3
    });
    redis.wait_subscribed(channel);
    chat.wait_figure("subscriber_connected", 1.0);
    redis.push(channel, &envelope(1, b"after the garbage"));
    assert_eq!(text(&mut member), "after the garbage");
    assert!(chat.0.alive());
}

#[test]
fn a_stalled_redis_holds_the_publish_queue_to_its_byte_bound() {
    let redis = FakeRedis::start();
    let bound = 64 * 1024;
    let config = RedisConfig {
        node_id: Some(7),
        publish_queue_bytes: bound,
        // Long enough that the stalled link is not given up during the test.
        io_timeout: Duration::from_secs(30),
        keepalive: Duration::from_secs(30),
        ..RedisConfig::default()
    };
    let broker = RedisBroker::connect(&redis.url(), config).expect("a broker");
    let deadline = Instant::now() + LIMIT;
    while !broker.stats().publisher_connected {
        assert!(Instant::now() < deadline, "the publisher did not connect");
        std::thread::sleep(Duration::from_millis(10));
    }
    redis.stall_publishes();
    // The first publish reaches the fake and is never answered: the link is stuck.
    let message =
        Arc::new(PreparedMessage::new(MessageType::Binary, vec![0u8; 1024]).expect("binary"));
    broker.publish(b"room", &message);
    redis.wait("the first publish", |state| !state.published.is_empty());
    let total = 1000;
    for _ in 1..total {
        broker.publish(b"room", &message);
    }
    let stats = broker.stats();
    let cost = 128 + 4 + 1024;
    assert!(
        stats.publish_queued_bytes <= bound as u64,
        "{} bytes queued over a bound of {bound}",
        stats.publish_queued_bytes
    );
    let queued = stats.publish_queued_bytes / cost;
    assert_eq!(queued * cost, stats.publish_queued_bytes, "whole entries");
    assert!(
        queued >= (bound / cost as usize - 1) as u64,
        "the queue filled: {queued}"
    );
    assert_eq!(
        stats.publish_drops + queued + redis.published() as u64,
        total as u64,
        "every publish sent, queued or dropped: {stats:?}"
    );
    // Control messages and oversized ones are never queued.
    let ping = Arc::new(PreparedMessage::new(MessageType::Ping, "x").expect("ping"));
    let drops = broker.stats().publish_drops;
    broker.publish(b"room", &ping);
    assert_eq!(broker.stats().publish_drops, drops + 1);
    assert_eq!(
        broker.stats().publish_queued_bytes,
        stats.publish_queued_bytes
    );
    // Not `close`: it would wait out the stalled command's 30 s timeout. Dropping the
    // broker stops its threads without waiting.
    drop(broker);
}
