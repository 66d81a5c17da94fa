//! `ringcast-load` against servers started in this test process: an echo server and a
//! chat-room broadcast (every text message to everyone, the sender included), both on
//! ringcast's engine with one worker. The binary runs with `--json`; the tests read its
//! one line and check counts and exit codes (never speeds, which depend on the machine).

mod common;

use std::sync::Arc;

use ringcast::proto::handshake::Request;
use ringcast::server::Backend;
use ringcast::server::{ConnId, Handler, Server, ServerConfig, ServerHandle, Socket};
use ringcast::{CloseCode, MessageType, PreparedMessage};

use common::{int, run, run_with, uint, Scratch};

/// Echoes every message.
struct Echo;

impl Handler for Echo {
    type Data = ();
    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

/// Greets each connection with what its request said (query and Authorization header),
/// then echoes.
struct Greeter;

impl Handler for Greeter {
    type Data = ();
    fn on_open(&mut self, socket: &mut Socket<'_, ()>, request: &Request) {
        let auth = String::from_utf8_lossy(request.header("authorization").unwrap_or(b"-"));
        let hello = format!("hello {} auth={auth}", request.query().unwrap_or("-"));
        let _ = socket.send(MessageType::Text, hello.as_bytes());
    }
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

#[test]
fn open_loop_echo_sends_on_schedule_whatever_the_echoes_do() {
    let server = start(|| Echo);
    let url = url(&server, "/echo");
    let report = run(
        Backend::Uring,
        &[
            "echo",
            "--url",
            &url,
            "--connections",
            "8",
            "--rate",
            "300",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--workers",
            "1",
            "--payload",
            "random",
            "--compress",
        ],
    );
    // 300 per second for 1 s on a fixed schedule: exactly 300 with a due time in the
    // window, however late the machine sends them.
    assert_eq!(report["rate"], 300.0);
    assert_eq!(uint(&report, "pipeline"), 0);
    assert_eq!(uint(&report, "sent"), 300, "{report}");
    assert_eq!(uint(&report, "received"), 300, "{report}");
    assert_eq!(int(&report, "loss"), 0);
    assert_eq!(report["payload"], "random");
    assert_eq!(uint(&report["latency_us"], "count"), 300);
    assert_eq!(uint(&report, "errors"), 0, "{report}");
    server.shutdown();
    server.wait();
}

#[test]
fn thresholds_not_kept_fail_the_run_with_exit_code_1() {
    let server = start(|| Echo);
    let url = url(&server, "/echo");
    let scratch = Scratch::new("thresholds");
    let series = scratch.path("series.csv");
    let args = |limits: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "echo",
            "--url",
            &url,
            "--connections",
            "4",
            "--rate",
            "100",
            "--duration",
            "1.2",
            "--warmup",
            "0",
            "--workers",
            "1",
            "--series",
            series.to_str().expect("utf-8 path"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(limits.iter().map(|a| a.to_string()));
        args
    };
    // Kept: a whole minute of p99, no loss, at least one echo a second.
    let kept = args(&["--max-p99", "60000", "--max-loss", "0", "--min-rate", "1"]);
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    let outcome = run_with(Backend::Uring, &kept);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let checks = outcome.report["thresholds"].as_array().expect("checks");
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c["pass"] == true), "{checks:?}");
    // The series: a header and a row a second, the last one partial.
    let text = std::fs::read_to_string(&series).expect("series written");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("t_s,open,rate,errors,latency_count,p50_us,p90_us,p99_us,max_us")
    );
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "{text}");
    assert!(rows.iter().all(|r| r.split(',').count() == 9), "{text}");

    // Not kept: no echo comes back within a nanosecond, nor a trillion a second.
    let failed = args(&[
        "--max-p99",
        "0.000001",
        "--min-rate",
        "1e12",
        "--max-loss",
        "0.5%",
    ]);
    let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
    let outcome = run_with(Backend::Uring, &failed);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let checks = outcome.report["thresholds"].as_array().expect("checks");
    let verdict = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {checks:?}"))["pass"]
            .clone()
    };
    assert_eq!(verdict("max_p99_ms"), false);
    assert_eq!(verdict("min_rate"), false);
    assert_eq!(verdict("max_loss"), true);
    // The run itself went well: only the limits failed it.
    assert_eq!(uint(&outcome.report, "errors"), 0);
    server.shutdown();
    server.wait();
}

#[test]
fn a_run_that_cannot_be_made_exits_with_2() {
    let outcome = run_with(
        Backend::Uring,
        &["echo", "--url", "http://127.0.0.1:1/", "--connections", "1"],
    );
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("ws://"), "{}", outcome.stderr);
}

#[test]
fn scenario_steps_send_expect_loop_and_reconnect_with_each_users_data() {
    let server = start(|| Greeter);
    let scratch = Scratch::new("steps");
    scratch.write("users.csv", "name,token\nann,a1\nbob,b2\n");
    let scenario = scratch.write(
        "steps.toml",
        &format!(
            r#"
url = "ws://{}/echo?user={{name}}"
headers = ["Authorization: Bearer {{token}}"]
data = "users.csv"
duration = "1.5s"
connections = 4

# Each user's own row: ann goes with a1, bob with b2.
[[steps]]
expect = "^hello user=(ann auth=Bearer a1|bob auth=Bearer b2)$"

[[steps]]
loop = 3
steps = [
  {{ send_json = {{ user = "{{name}}", n = "{{n}}", seq = "{{seq}}" }} }},
  {{ expect = '"seq":\d', timeout = "5s" }},
  {{ think = ["1ms", "5ms"] }},
]

[[steps]]
connect = true

[[steps]]
expect = "^hello user=(ann auth=Bearer a1|bob auth=Bearer b2)$"

[[steps]]
send = "back {{n}}"

[[steps]]
expect = "^back "

[[steps]]
receive = "end"
"#,
            server.local_addr().expect("addr")
        ),
    );
    let report = run(
        Backend::Uring,
        &["run", scenario.to_str().expect("utf-8"), "--workers", "2"],
    );
    assert_eq!(report["scenario"], "run");
    assert_eq!(report["latency_of"], "expect response");
    // Four users, each connected twice (the connect step), stay until the end.
    assert_eq!(uint(&report, "users"), 4, "{report}");
    assert_eq!(uint(&report, "connections_opened"), 8, "{report}");
    // Three rounds and one more message each, every one answered, and two greetings.
    assert_eq!(uint(&report, "sent"), 16, "{report}");
    assert_eq!(uint(&report, "expects_met"), 24, "{report}");
    assert_eq!(uint(&report, "expect_timeouts"), 0);
    assert_eq!(uint(&report["response_latency_us"], "count"), 24);
    assert_eq!(uint(&report["connect_latency_us"], "count"), 8);
    assert_eq!(uint(&report, "errors"), 0, "{report}");
    server.shutdown();
    server.wait();
}

#[test]
fn an_expect_that_times_out_is_counted_and_ends_its_user() {
    let server = start(|| Echo);
    let scratch = Scratch::new("timeout");
    let scenario = scratch.write(
        "timeout.toml",
        &format!(
            r#"
url = "ws://{}/echo"
duration = "1s"
connections = 2

[[steps]]
send = "ping"

[[steps]]
expect = "pong"
timeout = "200ms"

[[steps]]
receive = "end"
"#,
            server.local_addr().expect("addr")
        ),
    );
    let outcome = run_with(
        Backend::Uring,
        &[
            "run",
            scenario.to_str().expect("utf-8"),
            "--workers",
            "1",
            "--max-loss",
            "0",
        ],
    );
    let report = &outcome.report;
    // The echo says "ping", never "pong": each user times out once, ends, and the target
    // opens another in its place until the run ends.
    assert!(uint(report, "expect_timeouts") >= 2, "{report}");
    assert_eq!(uint(report, "expects_met"), 0);
    assert_eq!(uint(report, "finished"), uint(report, "expect_timeouts"));
    assert!(uint(report, "users") > 2, "{report}");
    // Timeouts are this run's loss: --max-loss 0 fails it.
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    server.shutdown();
    server.wait();
}
