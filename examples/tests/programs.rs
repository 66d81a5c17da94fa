//! The example programs as users run them: the binary started, real clients (ringcast's
//! blocking Dialer) connected over loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::{Dialer, MessageType};

/// A program started on a free port, killed when dropped.
struct Program {
    child: Child,
    addr: String,
}

impl Program {
    fn start(binary: &str, args: &[&str]) -> Program {
        let mut child = Command::new(binary)
            .args(args)
            .args(["--addr", "127.0.0.1:0", "--workers", "2"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the program");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        // "listening on ADDR" or "chat: open http://ADDR/ ..."
        let addr = line
            .split_whitespace()
            .find_map(|w| {
                let w = w.trim_start_matches("http://").trim_end_matches('/');
                w.parse::<std::net::SocketAddr>().ok()
            })
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Program { child, addr }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn text(conn: &mut ringcast::Conn<ringcast::client::ClientStream>) -> String {
    let (kind, payload) = conn.read_message().expect("a message");
    assert_eq!(kind, MessageType::Text);
    String::from_utf8(payload).expect("utf8")
}

#[test]
fn chat_rooms_broadcast_to_their_members_only() {
    let chat = Program::start(env!("CARGO_BIN_EXE_chat"), &[]);
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
    let chat = Program::start(env!("CARGO_BIN_EXE_chat"), &["--announce-limit", "2"]);
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

#[test]
fn chat_serves_its_page() {
    let chat = Program::start(env!("CARGO_BIN_EXE_chat"), &[]);
    let mut stream = std::net::TcpStream::connect(&chat.addr).expect("connect");
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut page = String::new();
    std::io::Read::read_to_string(&mut stream, &mut page).expect("read");
    assert!(page.starts_with("HTTP/1.1 200"));
    assert!(page.contains("<html"));
    // The engine serves the counters for operators.
    let mut scrape = std::net::TcpStream::connect(&chat.addr).expect("connect");
    std::io::Write::write_all(&mut scrape, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut metrics = String::new();
    std::io::Read::read_to_string(&mut scrape, &mut metrics).expect("read");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("\nringcast_connections 0\n"), "{metrics}");
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
fn pubsub_delivers_ticks_of_the_topics_asked_for() {
    let pubsub = Program::start(
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
    let mut chat = Program::start(env!("CARGO_BIN_EXE_chat"), &[]);
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
