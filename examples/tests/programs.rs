//! The example programs as users run them: the binary started, real clients (ringcast's
//! blocking Dialer) connected over loopback.

use std::process::Command;
use std::time::{Duration, Instant};

use ringcast::{Dialer, MessageType};

mod common;

use common::{get, text};

/// An example program on a free port with 2 workers, logging warnings only.
fn program(binary: &str, args: &[&str]) -> common::Program {
    let args: Vec<&str> = args.iter().copied().chain(["--workers", "2"]).collect();
    common::Program::start(binary, &args, "warn")
}

fn dial(url: &str) -> ringcast::Conn<ringcast::client::ClientStream> {
    let dialer = Dialer {
        handshake_timeout: Some(Duration::from_secs(10)),
        ..Dialer::default()
    };
    let (mut conn, _) = dialer.dial(url, &[]).expect("dial");
    conn.set_read_deadline(Some(Instant::now() + Duration::from_secs(10)));
    conn
}

#[test]
fn chat_rooms_broadcast_to_their_members_only() {
    let chat = program(env!("CARGO_BIN_EXE_chat"), &[]);
    let mut a = dial(&format!("ws://{}/ws?room=alpha", chat.addr));
    assert!(text(&mut a).contains(r#""type":"join""#));
    let mut b = dial(&format!("ws://{}/ws?room=alpha", chat.addr));
    let mut c = dial(&format!("ws://{}/ws?room=beta", chat.addr));
    assert!(text(&mut c).contains(r#""count":1"#), "c is alone in beta");
    // a hears b join; b hears its own join.
    assert!(text(&mut a).contains(r#""count":2"#));
    assert!(text(&mut b).contains(r#""count":2"#));
    a.write_message(MessageType::Text, b"hello alpha")
        .expect("send");
    assert_eq!(
        text(&mut a),
        "hello alpha",
        "the sender gets its message too"
    );
    assert_eq!(text(&mut b), "hello alpha");
    c.write_message(MessageType::Text, b"hello beta")
        .expect("send");
    assert_eq!(text(&mut c), "hello beta", "c sees only its room");
    drop(b);
    assert!(text(&mut a).contains(r#""type":"leave""#));
}

#[test]
fn a_room_past_the_announce_limit_tells_only_the_joiner() {
    let chat = program(env!("CARGO_BIN_EXE_chat"), &["--announce-limit", "2"]);
    let url = format!("ws://{}/ws?room=big", chat.addr);
    let mut a = dial(&url);
    assert!(text(&mut a).contains(r#""count":1"#));
    let mut b = dial(&url);
    assert!(
        text(&mut a).contains(r#""count":2"#),
        "2 is still announced"
    );
    assert!(text(&mut b).contains(r#""count":2"#));
    let mut c = dial(&url);
    assert!(
        text(&mut c).contains(r#""count":3"#),
        "the joiner hears its own join"
    );
    a.write_message(MessageType::Text, b"hi").expect("send");
    for (name, conn) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        assert_eq!(text(conn), "hi", "{name}: no notice of the third join");
    }
    drop(c);
    a.write_message(MessageType::Text, b"again").expect("send");
    assert_eq!(text(&mut a), "again", "nor of its leave");
    assert_eq!(text(&mut b), "again");
    drop(b);
    let leave = text(&mut a);
    assert!(
        leave.contains(r#""type":"leave""#) && leave.contains(r#""count":1"#),
        "back under the limit, leaves are announced: {leave}"
    );
}

/// The async echo server's rooms (what bench-peers measures `AsyncConn` fan-out with):
/// a text message reaches every member of its room, the sender included, and no one
/// else; other paths still echo.
#[test]
fn the_async_echo_server_broadcasts_to_rooms_and_echoes_elsewhere() {
    let server = program(env!("CARGO_BIN_EXE_echo-server"), &["--backend", "async"]);
    // A member is in its room once its own first message comes back to it.
    let join = |room: &str, hello: &str| {
        let mut conn = dial(&format!("ws://{}/ws?room={room}", server.addr));
        conn.write_message(MessageType::Text, hello.as_bytes())
            .expect("send");
        assert_eq!(text(&mut conn), hello);
        conn
    };
    let mut a = join("alpha", "a here");
    let mut b = join("alpha", "b here");
    assert_eq!(text(&mut a), "b here", "a hears b join the room");
    let mut c = join("beta", "c here");
    let mut echo = dial(&format!("ws://{}/", server.addr));
    a.write_message(MessageType::Text, b"to alpha")
        .expect("send");
    assert_eq!(text(&mut a), "to alpha");
    assert_eq!(text(&mut b), "to alpha");
    c.write_message(MessageType::Text, b"to beta")
        .expect("send");
    assert_eq!(text(&mut c), "to beta", "c hears only its own room");
    echo.write_message(MessageType::Text, b"plain")
        .expect("send");
    assert_eq!(text(&mut echo), "plain");
}

#[test]
fn chat_serves_its_page() {
    let chat = program(env!("CARGO_BIN_EXE_chat"), &[]);
    let page = get(&chat.addr, "/");
    assert!(page.starts_with("HTTP/1.1 200"));
    assert!(page.contains("<html"));
    // No counters on the public port: they would help an attacker aim at a worker.
    let metrics = get(&chat.addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 404"), "{metrics}");
    // The handler's on_upgrade refuses WebSocket requests off /ws with a 404.
    match Dialer::default().dial(&format!("ws://{}/elsewhere", chat.addr), &[]) {
        Err(ringcast::Error::Handshake(err)) => {
            assert_eq!(err.response().map(|r| r.status), Some(404))
        }
        other => panic!(
            "expected a 404 handshake error, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn chat_serves_its_counters_only_on_the_metrics_address() {
    let chat = program(
        env!("CARGO_BIN_EXE_chat"),
        &["--metrics-addr", "127.0.0.1:0"],
    );
    let metrics_addr = chat.metrics.clone().expect("a metrics address");
    let mut member = dial(&format!("ws://{}/ws?room=alpha", chat.addr));
    assert!(text(&mut member).contains(r#""type":"join""#));
    // The worker publishes its counters at the end of its turn: poll (a hang guard only).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = get(&metrics_addr, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        if metrics.contains("\nringcast_connections 1\n") || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(metrics.contains("\nringcast_connections 1\n"), "{metrics}");
    assert!(
        metrics.contains("ringcast_connections{worker=\"1\"}"),
        "{metrics}"
    );
    assert!(get(&metrics_addr, "/").starts_with("HTTP/1.1 404"));
    assert!(get(&chat.addr, "/metrics").starts_with("HTTP/1.1 404"));
}

#[test]
fn pubsub_delivers_ticks_of_the_topics_asked_for() {
    let pubsub = program(
        env!("CARGO_BIN_EXE_pubsub"),
        &["--topics", "a,b", "--interval-ms", "20"],
    );
    let mut sub = dial(&format!("ws://{}/ws?topic=a", pubsub.addr));
    let mut last = None;
    for _ in 0..5 {
        let tick: serde_json::Value = serde_json::from_str(&text(&mut sub)).expect("json");
        assert_eq!(tick["topic"], "a", "only topic a");
        let seq = tick["seq"].as_u64().expect("seq");
        if let Some(last) = last {
            assert!(seq > last, "in order");
        }
        last = Some(seq);
    }
    // Subscribe to b at run time: ticks of b follow.
    sub.write_message(MessageType::Text, b"+b").expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tick: serde_json::Value = serde_json::from_str(&text(&mut sub)).expect("json");
        if tick["topic"] == "b" {
            break;
        }
        assert!(Instant::now() < deadline, "no tick of b");
    }
}

#[test]
fn sigterm_closes_every_client_with_1001_then_exits() {
    let mut chat = program(env!("CARGO_BIN_EXE_chat"), &[]);
    let mut client = dial(&format!("ws://{}/ws", chat.addr));
    assert!(text(&mut client).contains(r#""type":"join""#));
    let status = Command::new("kill")
        .args(["-TERM", &chat.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    match client.read_message() {
        Err(ringcast::Error::Closed(close)) => {
            assert_eq!(close.code, ringcast::CloseCode::GOING_AWAY)
        }
        other => panic!("expected close 1001, got {:?}", other.map(|_| ())),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = chat.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "graceful exit, not killed: {exit}");
}
