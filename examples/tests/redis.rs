//! Several chat nodes behind one load balancer, sharing rooms through a real
//! `redis-server` on loopback: each test starts its own Redis (no system service) and two
//! `chat` processes with `--redis`, and talks to them with ringcast's blocking Dialer.
//!
//! `redis-server` is found on PATH. Without it the tests print a note and pass, unless
//! `RINGCAST_REQUIRE_PEERS=1` (set by scripts/test-all, whose tools stage installs it).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::client::ClientStream;
use ringcast::{Conn, Dialer, MessageType};

mod common;

use common::text;

/// The Redis binary, or `None` (with a note) when the tests should skip.
fn redis_server_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("RINGCAST_REQUIRE_PEERS").as_deref() != Ok("1"),
            "redis-server is not on PATH (scripts/test-all installs Debian's redis-server)"
        );
        eprintln!("note: redis-server is not on PATH; skipping the multi-node Redis test");
    }
    found
}

/// A port free on loopback now (Redis needs a number; it is asked for again after a
/// restart, so it cannot be 0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Polls `condition` every 50 ms until it holds; fails after `limit`.
fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` of our own on loopback, without persistence; killed when dropped.
struct Redis {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(binary: PathBuf) -> Redis {
        let mut redis = Redis {
            binary,
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    fn restart(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(&self.binary)
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("redis url");
        wait_until("redis-server to answer", Duration::from_secs(10), || {
            client
                .get_connection_with_timeout(Duration::from_secs(1))
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
                .is_ok()
        });
    }

    /// Kills the server (by its PID) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("redis url");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis");
        con.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        con
    }

    /// How many connections are subscribed to `channel`.
    fn subscribers(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).expect("redis url");
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return 0;
        };
        if con.set_read_timeout(Some(Duration::from_secs(5))).is_err() {
            return 0;
        }
        redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query::<(String, i64)>(&mut con)
            .map_or(0, |(_, count)| count)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `chat` node on a free port with `--redis`, its counters on a metrics port of their
/// own; its log is kept; killed when dropped.
struct Node(common::Program);

impl Node {
    fn start(redis: &Redis) -> Node {
        Node::program(env!("CARGO_BIN_EXE_chat"), redis, &[])
    }

    fn program(binary: &str, redis: &Redis, args: &[&str]) -> Node {
        let url = redis.url();
        let mut all = vec![
            "--workers",
            "2",
            "--redis",
            &url,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        Node(common::Program::start(
            binary,
            &all,
            "warn,ringcast::server::redis=info",
        ))
    }

    fn join(&self, room: &str) -> Conn<ClientStream> {
        let dialer = Dialer {
            handshake_timeout: Some(Duration::from_secs(10)),
            ..Dialer::default()
        };
        let url = format!("ws://{}/ws?room={room}", self.0.addr);
        let (mut conn, _) = dialer.dial(&url, &[]).expect("dial");
        conn.set_read_deadline(Some(Instant::now() + Duration::from_secs(30)));
        let notice = text(&mut conn);
        assert!(notice.contains(r#""type":"join""#), "{notice}");
        conn
    }

    /// The broker's counters, from the node's `/metrics`.
    fn broker(&self) -> HashMap<String, f64> {
        self.0.redis_figures()
    }

    fn figure(&self, name: &str) -> f64 {
        self.broker()[name]
    }

    fn log(&self) -> String {
        self.0.log()
    }
}

/// The next chat line, past join and leave notices (which other nodes' joins send too).
fn said(conn: &mut Conn<ClientStream>) -> String {
    loop {
        let line = text(conn);
        let notice = serde_json::from_str::<serde_json::Value>(&line)
            .is_ok_and(|value| value.get("type").is_some());
        if !notice {
            return line;
        }
    }
}

fn say(conn: &mut Conn<ClientStream>, line: &str) {
    conn.write_message(MessageType::Text, line.as_bytes())
        .expect("send");
}

/// Both nodes have both links up (so publishes go out and subscriptions are in place).
fn wait_connected(nodes: &[&Node], limit: Duration) {
    for node in nodes {
        wait_until("the node's redis links to be up", limit, || {
            node.figure("connected") == 1.0
        });
    }
}

#[test]
fn two_nodes_share_a_room_and_each_message_arrives_once() {
    let Some(binary) = redis_server_binary() else {
        return;
    };
    let redis = Redis::start(binary);
    let (one, two) = (Node::start(&redis), Node::start(&redis));
    wait_connected(&[&one, &two], Duration::from_secs(10));
    let mut a = one.join("alpha");
    let mut b = two.join("alpha");
    let mut c = two.join("beta");
    wait_until(
        "both nodes to subscribe to alpha",
        Duration::from_secs(10),
        || {
            redis.subscribers("ringcast:room:alpha") == 2
                && redis.subscribers("ringcast:room:beta") == 1
        },
    );

    say(&mut a, "one");
    assert_eq!(said(&mut a), "one", "the sender's own node echoes it");
    assert_eq!(said(&mut b), "one", "the other node delivers it");
    // An answer from the other side: whatever either client gets before it is a copy.
    say(&mut b, "two");
    assert_eq!(said(&mut b), "two", "b got \"one\" once");
    assert_eq!(
        said(&mut a),
        "two",
        "a got \"one\" once: its node skipped its own copy"
    );

    // Nothing of alpha reached beta: c's next message is its own.
    say(&mut c, "beta only");
    assert_eq!(text(&mut c), "beta only");

    // Something on the channel that no node wrote is counted and skipped: a stranger's
    // text, and a close with a 1-byte body forged in a ringcast envelope (no broker may
    // close a room's members).
    let mut forged_close = Vec::new();
    ringcast::server::encode_envelope(0xbad, MessageType::Close, b"x", &mut forged_close);
    for payload in [&b"not an envelope"[..], &forged_close] {
        redis::cmd("PUBLISH")
            .arg("ringcast:room:alpha")
            .arg(payload)
            .exec(&mut redis.connection())
            .expect("publish");
    }
    for node in [&one, &two] {
        wait_until(
            "the strangers to be counted",
            Duration::from_secs(10),
            || node.figure("malformed_total") == 2.0,
        );
    }
    say(&mut a, "three");
    assert_eq!(said(&mut a), "three", "the stranger reached no client");
    assert_eq!(said(&mut b), "three", "the stranger reached no client");

    let (first, second) = (one.broker(), two.broker());
    assert!(first["skipped_own_total"] >= 1.0, "{first:?}");
    assert!(first["received_total"] >= 1.0, "{first:?}");
    assert!(second["received_total"] >= 1.0, "{second:?}");
    assert_eq!(
        second["topics"], 2.0,
        "alpha and beta have members on node two"
    );

    // The last member of beta leaves node two: the node leaves beta's channel.
    drop(c);
    wait_until(
        "node two to unsubscribe from beta",
        Duration::from_secs(10),
        || redis.subscribers("ringcast:room:beta") == 0,
    );
    assert_eq!(redis.subscribers("ringcast:room:alpha"), 2);
    assert_eq!(two.figure("topics"), 1.0);
}

#[test]
fn redis_outage_keeps_local_fan_out_and_traffic_resumes_after_restart() {
    let Some(binary) = redis_server_binary() else {
        return;
    };
    let mut redis = Redis::start(binary);
    let (one, two) = (Node::start(&redis), Node::start(&redis));
    wait_connected(&[&one, &two], Duration::from_secs(10));
    let mut a1 = one.join("alpha");
    let mut a2 = one.join("alpha");
    let mut b = two.join("alpha");
    wait_until("both nodes to subscribe", Duration::from_secs(10), || {
        redis.subscribers("ringcast:room:alpha") == 2
    });
    say(&mut a1, "before");
    for conn in [&mut a1, &mut a2, &mut b] {
        assert_eq!(said(conn), "before");
    }

    redis.kill();
    for node in [&one, &two] {
        wait_until(
            "both links to be seen down",
            Duration::from_secs(10),
            || {
                let figures = node.broker();
                figures["publisher_connected"] == 0.0 && figures["subscriber_connected"] == 0.0
            },
        );
    }
    // Local fan-out goes on; these cannot cross (they are dropped and counted).
    say(&mut a1, "during one");
    assert_eq!(said(&mut a1), "during one");
    assert_eq!(said(&mut a2), "during one", "the other member on node one");
    say(&mut b, "during two");
    assert_eq!(said(&mut b), "during two");

    redis.restart();
    wait_connected(&[&one, &two], Duration::from_secs(15));
    assert_eq!(
        redis.subscribers("ringcast:room:alpha"),
        2,
        "both nodes subscribed again"
    );
    say(&mut a1, "after");
    assert_eq!(
        said(&mut a1),
        "after",
        "\"during two\" was not delivered late"
    );
    assert_eq!(said(&mut a2), "after");
    assert_eq!(
        said(&mut b),
        "after",
        "\"during one\" was not delivered late"
    );
    say(&mut b, "after two");
    assert_eq!(said(&mut a1), "after two");
    assert_eq!(said(&mut b), "after two");

    for node in [&one, &two] {
        let figures = node.broker();
        assert!(figures["reconnects_total"] >= 1.0, "{figures:?}");
        assert!(figures["last_outage_seconds"] > 0.0, "{figures:?}");
        assert!(figures["last_outage_lost"] >= 1.0, "{figures:?}");
        assert!(figures["publish_drops_total"] >= 1.0, "{figures:?}");
        let log = node.log();
        assert!(log.contains("redis link lost"), "{log}");
        assert!(log.contains("redis link back after"), "{log}");
    }
}

#[test]
fn pubsub_subscribers_get_the_ticks_of_another_node() {
    let Some(binary) = redis_server_binary() else {
        return;
    };
    let redis = Redis::start(binary);
    let pubsub = env!("CARGO_BIN_EXE_pubsub");
    let ticker = [
        "--topics",
        "prices",
        "--interval-ms",
        "20",
        "--node-id",
        "0x1",
    ];
    let one = Node::program(pubsub, &redis, &ticker);
    let two = Node::program(pubsub, &redis, &["--topics", "news", "--node-id", "0x2"]);
    wait_connected(&[&one, &two], Duration::from_secs(10));
    let (mut sub, _) = Dialer::default()
        .dial(&format!("ws://{}/ws?topic=prices", two.0.addr), &[])
        .expect("dial");
    sub.set_read_deadline(Some(Instant::now() + Duration::from_secs(30)));
    // Node two publishes no prices: every tick comes from node one, through Redis, in order.
    let mut last = None;
    for _ in 0..5 {
        let tick: serde_json::Value = serde_json::from_str(&text(&mut sub)).expect("json");
        assert_eq!(tick["topic"], "prices");
        assert_eq!(tick["node"], "0000000000000001");
        let seq = tick["seq"].as_u64().expect("seq");
        assert!(last.is_none_or(|last| seq > last), "in order");
        last = Some(seq);
    }
    assert!(two.figure("received_total") >= 5.0);
}
