//! gorilla/websocket's example programs, translated: `chat-client` against the `chat`
//! server and against a Python `websockets` echo server; `command` (a process per
//! connection) against ringcast's Dialer and a Python `websockets` client.
//!
//! Python comes from the venv `scripts/test-all` makes (`RINGCAST_PYTHON`); without it a
//! Python test says so and passes only when `RINGCAST_REQUIRE_PEERS` is unset.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use ringcast::{CloseCode, Error, MessageType};
use support::{dial, Program, WAIT};

const CHAT: &str = env!("CARGO_BIN_EXE_chat");
const AXUM_CHAT: &str = env!("CARGO_BIN_EXE_axum-chat");
const CHAT_CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");
const COMMAND: &str = env!("CARGO_BIN_EXE_command");

/// A running client program: its stdin, and its stdout and stderr as lines.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(source: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Client {
    fn start(mut command: Command) -> Client {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the client");
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        Client {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn chat_client(url: &str) -> Client {
        let mut command = Command::new(CHAT_CLIENT);
        command.args(["--url", url, "--ping-interval-ms", "100", "--verbose"]);
        let client = Client::start(command);
        assert_eq!(
            client.next(&client.stderr, "connected"),
            format!("connected to {url}")
        );
        client
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the client");
        stdin.flush().expect("flush");
    }

    /// The next line of `source`; fails after WAIT.
    fn next(&self, source: &mpsc::Receiver<String>, what: &str) -> String {
        source
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no {what} line from the client"))
    }

    /// Skip lines of `source` until one equal to `line`.
    fn wait_for(&self, source: &mpsc::Receiver<String>, line: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match source.recv_timeout(left) {
                Ok(got) if got == line => return,
                Ok(_) => {}
                Err(_) => panic!("no line {line:?} from the client"),
            }
        }
    }

    /// Ctrl-C, then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the client did not exit");
            thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next text message on `conn` that is not a join or leave notice.
fn chat_text(conn: &mut ringcast::Conn<ringcast::client::ClientStream>) -> String {
    loop {
        let (kind, payload) = conn.read_message().expect("a message");
        assert_eq!(kind, MessageType::Text);
        let text = String::from_utf8(payload).expect("utf-8");
        let notice =
            serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.get("type").is_some());
        if !notice {
            return text;
        }
    }
}

#[test]
fn chat_client_talks_to_chat_and_pings_while_its_read_loop_waits() {
    let chat = Program::start(CHAT, &[]);
    let url = format!("ws://{}/ws?room=seed", chat.addr);
    let mut client = Client::chat_client(&url);
    // Nobody says anything: the read loop is blocked, and the ticker's pings come back.
    for _ in 0..3 {
        client.wait_for(&client.stderr, "pong");
    }
    let mut other = dial(&url).unwrap();
    client.type_line("hello from the terminal");
    assert_eq!(chat_text(&mut other), "hello from the terminal");
    other
        .write_message(MessageType::Text, b"hello, terminal")
        .unwrap();
    client.wait_for(&client.stdout, "hello, terminal");
    // Ctrl-C: a close frame, the server's answer, a clean exit.
    let status = client.interrupt();
    assert!(status.success(), "{status}");
    client.wait_for(&client.stderr, "closed 1000 ");
}

/// The Python interpreter with `websockets`, or `None` (after saying why).
fn python() -> Option<String> {
    let python = std::env::var("RINGCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("RINGCAST_REQUIRE_PEERS").is_none(),
            "python websockets required but not installed (run scripts/test-all)"
        );
        eprintln!("SKIPPED: python websockets not installed (scripts/test-all installs it)");
        return None;
    }
    Some(python)
}

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/peers")
}

#[test]
fn chat_client_talks_to_a_python_websockets_echo_server() {
    let Some(python) = python() else { return };
    let mut command = Command::new(python);
    command.arg(peers_dir().join("py_server.py")).arg("30");
    let mut server = Client::start(command);
    let port = server
        .next(&server.stdout, "port")
        .strip_prefix("port ")
        .expect("port line")
        .to_owned();
    let mut client = Client::chat_client(&format!("ws://127.0.0.1:{port}/"));
    client.wait_for(&client.stderr, "pong");
    client.type_line("echo me, python");
    client.wait_for(&client.stdout, "echo me, python");
    let status = client.interrupt();
    assert!(status.success(), "{status}");
    server.wait_for(&server.stdout, "closed 1000");
    server.stdin.take();
}

/// Python websockets clients against `axum-chat`: axum answers /health, /api/rooms and
/// the 401 of a socket without its token; the sockets it upgrades are handed to the
/// engine, whose rooms announce, broadcast (compressed for one client, not for the
/// other) and answer pings.
#[test]
fn python_websockets_clients_chat_through_axum_chat() {
    let Some(python) = python() else { return };
    let chat = Program::start(AXUM_CHAT, &["--workers", "2", "--token", "s3cret"]);
    let mut command = Command::new(python);
    command
        .arg(peers_dir().join("py_axum_chat.py"))
        .arg(&chat.addr)
        .arg("s3cret");
    let mut client = Client::start(command);
    for check in [
        "health ok",
        "no token 401",
        "join ok",
        "rooms ok",
        "messages ok",
        "ping ok",
        "leave ok",
    ] {
        let line = client.stdout.recv_timeout(WAIT).unwrap_or_else(|_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let why: Vec<String> = client.stderr.try_iter().collect();
            panic!(
                "no {check:?} from the Python client; its stderr:\n{}",
                why.join("\n")
            )
        });
        assert_eq!(line, check);
    }
    let status = client.child.wait().expect("wait");
    assert!(status.success(), "the Python checks passed: {status}");
}

#[test]
fn command_joins_cat_to_a_ringcast_client_and_closes_with_it() {
    let command = Program::start(COMMAND, &["--ping-interval-ms", "100", "--", "cat"]);
    let conn = dial(&format!("ws://{}/", command.addr)).unwrap();
    let (mut reader, mut writer) = conn.split().unwrap();
    let (pinged, pings) = mpsc::channel();
    let pinged = std::sync::Mutex::new(pinged);
    let answer = reader.ping_handler();
    reader.set_ping_handler(Some(std::sync::Arc::new(
        move |data: &[u8], control: &mut ringcast::conn::Control<'_>| {
            let _ = pinged.lock().unwrap().send(());
            answer(data, control)
        },
    )));
    let (tx, received) = mpsc::channel();
    thread::spawn(move || loop {
        let result = reader.read_message();
        let end = result.is_err();
        let _ = tx.send(result);
        if end {
            return;
        }
    });
    for line in ["first line", "second, with ünïcode"] {
        writer
            .write_message(MessageType::Text, line.as_bytes())
            .unwrap();
        let (_, echo) = received.recv_timeout(WAIT).unwrap().unwrap();
        assert_eq!(echo, line.as_bytes());
    }
    // The server's ticker pings while its read loop waits on us.
    pings.recv_timeout(WAIT).expect("a ping from the server");
    writer
        .control_handle()
        .close_with(CloseCode::NORMAL_CLOSURE, "")
        .unwrap();
    match received.recv_timeout(WAIT).unwrap() {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode::NORMAL_CLOSURE),
        other => panic!("expected close 1000, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn command_closes_the_connection_when_its_command_ends() {
    let command = Program::start(COMMAND, &["--", "head", "-n", "1"]);
    let mut conn = dial(&format!("ws://{}/", command.addr)).unwrap();
    conn.write_message(MessageType::Text, b"only line").unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"only line");
    match conn.read_message() {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode::NORMAL_CLOSURE),
        other => panic!("expected close 1000, got {:?}", other.map(|_| ())),
    }
}

const PY_COMMAND_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect

async def main(url):
    async with connect(url, open_timeout=10) as ws:
        for line in ["from python", "héllo"]:
            await ws.send(line)
            assert await asyncio.wait_for(ws.recv(), 10) == line
        print("echoed", flush=True)
        await ws.close(1000)
        print(f"closed {ws.close_code}", flush=True)

asyncio.run(main(sys.argv[1]))
"#;

#[test]
fn python_websockets_client_drives_command() {
    let Some(python) = python() else { return };
    let command = Program::start(COMMAND, &["--", "cat"]);
    let mut py = Command::new(python);
    py.args(["-c", PY_COMMAND_CLIENT, &format!("ws://{}/", command.addr)]);
    let mut client = Client::start(py);
    client.wait_for(&client.stdout, "echoed");
    client.wait_for(&client.stdout, "closed 1000");
    let status = client.child.wait().expect("wait");
    assert!(status.success(), "{status}");
}
