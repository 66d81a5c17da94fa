//! `ringcast-load` against servers started in this test process: an echo server and a
//! chat-room broadcast (every text message to everyone, the sender included), both on
//! ringcast's engine with one worker. The binary runs with `--json`; the tests read its
//! one line and check counts (never speeds, which depend on the machine).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast::proto::handshake::Request;
use ringcast::server::Backend;
use ringcast::server::{ConnId, Handler, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{CloseCode, MessageType, PreparedMessage};
use serde_json::Value;

/// The longest any one run of the binary may take before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Echoes every message.
struct Echo;

impl Handler for Echo {
    type Data = ();
    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

/// One room: every text message goes to every member, the sender included, in the order
/// received. With `chatty`, messages go out two at a time joined by `\n` in one frame, as
/// gorilla's chat example joins what is queued for a client, and each join is announced
/// to the room with a JSON line, as ringcast's chat server does.
#[derive(Default)]
struct Room {
    members: Vec<ConnId>,
    chatty: bool,
    held: Option<Vec<u8>>,
}

impl Room {
    fn broadcast(&self, handle: &ServerHandle, payload: Vec<u8>) {
        let message = Arc::new(
            PreparedMessage::new(MessageType::Text, payload).expect("a text message is valid"),
        );
        for &id in &self.members {
            let _ = handle.send_prepared_to(id, message.clone());
        }
    }
}

impl Handler for Room {
    type Data = ();

    fn on_open(&mut self, socket: &mut Socket<'_, ()>, _request: &Request) {
        self.members.push(socket.id());
        if self.chatty {
            let notice = format!(r#"{{"type":"join","count":{}}}"#, self.members.len());
            self.broadcast(&socket.server(), notice.into_bytes());
        }
    }

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        if kind != MessageType::Text {
            return;
        }
        let handle = socket.server();
        if !self.chatty {
            return self.broadcast(&handle, payload.to_vec());
        }
        match self.held.take() {
            None => self.held = Some(payload.to_vec()),
            Some(mut first) => {
                first.push(b'\n');
                first.extend_from_slice(payload);
                self.broadcast(&handle, first);
            }
        }
    }

    fn on_close(&mut self, socket: &mut Socket<'_, ()>, _code: CloseCode, _reason: &str) {
        let id = socket.id();
        self.members.retain(|&m| m != id);
    }
}

fn start<H: Handler>(handler: impl Fn() -> H + Send + Sync + 'static) -> ServerHandle {
    let config = ServerConfig {
        addr: Some("127.0.0.1:0".parse().unwrap()),
        workers: 1,
        ..ServerConfig::default()
    };
    Server::new(config).start(move |_| handler()).unwrap()
}

fn url(server: &ServerHandle, path: &str) -> String {
    format!("ws://{}{path}", server.local_addr().unwrap())
}

/// Runs `ringcast-load ARGS --json` (the client engine on `backend`), killing it after
/// `RUN_LIMIT`, and returns its JSON line.
fn run(backend: Backend, args: &[&str]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args(args)
        .arg("--json")
        .env("RINGCAST_BACKEND", backend.name())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringcast-load {args:?} ran past {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "ringcast-load {args:?}: {status}\n{err}");
    assert_eq!(out.lines().count(), 1, "exactly one line of JSON: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn uint(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

fn int(report: &Value, field: &str) -> i64 {
    report[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[test]
fn echo_counts_every_message_on_both_backends() {
    let server = start(|| Echo);
    let url = url(&server, "/echo");
    for backend in Backend::ALL {
        let report = run(
            backend,
            &[
                "echo",
                "--url",
                &url,
                "--connections",
                "20",
                "--pipeline",
                "4",
                "--duration",
                "1",
                "--warmup",
                "0.2",
                "--workers",
                "1",
            ],
        );
        assert_eq!(report["scenario"], "echo");
        assert_eq!(uint(&report, "connections_open"), 20);
        assert!(uint(&report, "received") > 0, "{report}");
        assert_eq!(int(&report, "loss"), 0, "{report}");
        assert_eq!(uint(&report, "duplicates"), 0, "{report}");
        assert_eq!(uint(&report, "errors"), 0, "{report}");
        assert_eq!(
            uint(&report["latency_us"], "count"),
            uint(&report, "received")
        );
    }
    server.shutdown();
    server.wait();
}

#[test]
fn fanout_at_a_fixed_rate_delivers_everything_once_in_order() {
    let server = start(Room::default);
    let report = run(
        Backend::Uring,
        &[
            "fanout",
            "--url",
            &url(&server, "/ws"),
            "--room",
            "test",
            "--subscribers",
            "50",
            "--publishers",
            "1",
            "--rate",
            "200",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--size",
            "64",
            "--workers",
            "1",
        ],
    );
    assert_eq!(report["scenario"], "fanout");
    assert!(report["url"].as_str().unwrap().ends_with("/ws?room=test"));
    assert_eq!(uint(&report, "subscribers_open"), 50);
    // 200 per second for 2 s on a fixed schedule: exactly 400, however the machine runs.
    assert_eq!(uint(&report, "published"), 400, "{report}");
    assert_eq!(uint(&report, "expected"), 400 * 50);
    assert_eq!(uint(&report, "received"), 400 * 50, "{report}");
    assert_eq!(int(&report, "loss"), 0);
    assert_eq!(uint(&report, "duplicates"), 0);
    assert_eq!(uint(&report, "out_of_order"), 0);
    assert_eq!(uint(&report, "errors"), 0, "{report}");
    server.shutdown();
    server.wait();
}

#[test]
fn fanout_counts_each_line_of_a_joined_frame_and_leaves_notices_out() {
    let server = start(|| Room {
        chatty: true,
        ..Room::default()
    });
    let report = run(
        Backend::Uring,
        &[
            "fanout",
            "--url",
            &url(&server, "/ws?room=joined"),
            "--subscribers",
            "10",
            "--rate",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--workers",
            "1",
        ],
    );
    // 100 messages leave as 50 frames of two lines each.
    assert_eq!(uint(&report, "published"), 100, "{report}");
    assert_eq!(uint(&report, "received"), 100 * 10, "{report}");
    assert_eq!(uint(&report, "malformed"), 0);
    // Each subscriber hears the joins after its own: 10 + 9 + ... + 1 for the
    // subscribers, and the publisher's join (the 11th) reaches all of them.
    assert_eq!(uint(&report, "other_lines"), 55 + 10, "{report}");
    assert_eq!(uint(&report, "errors"), 0, "{report}");
    server.shutdown();
    server.wait();
}

#[test]
fn fanout_at_max_throughput_loses_nothing_and_draws_a_plot() {
    let server = start(Room::default);
    let plot = std::env::temp_dir().join(format!("ringcast-load-{}.svg", std::process::id()));
    let report = run(
        Backend::Uring,
        &[
            "fanout",
            "--url",
            &url(&server, "/ws?room=max"),
            "--subscribers",
            "20",
            "--publishers",
            "2",
            "--window",
            "8",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--workers",
            "2",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert!(report["rate"].is_null());
    assert!(uint(&report, "published") > 0, "{report}");
    assert_eq!(int(&report, "loss"), 0, "{report}");
    assert_eq!(uint(&report, "duplicates"), 0);
    assert_eq!(uint(&report, "out_of_order"), 0);
    assert_eq!(uint(&report, "errors"), 0, "{report}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
    server.shutdown();
    server.wait();
}

#[test]
fn conns_opens_every_connection_and_reads_the_server_process() {
    let server = start(|| Echo);
    let pid = std::process::id().to_string();
    let report = run(
        Backend::Uring,
        &[
            "conns",
            "--url",
            &url(&server, "/"),
            "--connections",
            "200",
            "--rate",
            "2000",
            "--hold",
            "0.2",
            "--server-pid",
            &pid,
            "--workers",
            "1",
        ],
    );
    assert_eq!(report["scenario"], "conns");
    assert_eq!(uint(&report, "opened"), 200, "{report}");
    assert_eq!(uint(&report, "failed"), 0);
    assert_eq!(uint(&report, "closed"), 0);
    assert_eq!(uint(&report["latency_us"], "count"), 200);
    let figures = &report["server"];
    assert_eq!(uint(figures, "pid").to_string(), pid);
    assert!(uint(figures, "rss_connected_kib") > 0);
    assert!(figures["rss_per_connection_bytes"].is_number());
    for key in [
        "user_cpu_s",
        "system_cpu_s",
        "user_cpu_s_per_million",
        "system_cpu_s_per_million",
    ] {
        assert!(figures[key].is_number(), "{key}: {figures}");
    }
    server.shutdown();
    server.wait();
}

#[test]
fn a_server_that_is_not_there_is_an_error_not_a_hang() {
    // A port nobody listens on: bind one, note it, and close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let report = run(
        Backend::Uring,
        &[
            "conns",
            "--url",
            &url,
            "--connections",
            "5",
            "--rate",
            "100",
            "--hold",
            "0",
            "--workers",
            "1",
        ],
    );
    assert_eq!(uint(&report, "opened"), 0);
    assert_eq!(uint(&report, "failed"), 5);
    assert_eq!(uint(&report, "errors"), 5);
    assert!(!report["error_samples"].as_array().unwrap().is_empty());
}
