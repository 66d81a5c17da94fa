//! What the tests of `ringcast-load` share: running the binary with a time limit and
//! reading its JSON line, and starting the example programs (`chat`, `pubsub`), which
//! `cargo test --workspace` builds beside this package's binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::server::Backend;
use serde_json::Value;

/// The longest any one run of the binary may take before the test kills it.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// What a run of the binary gave.
pub struct Outcome {
    /// Its exit code.
    pub code: i32,
    /// Its JSON line (`Null` when it printed none).
    pub report: Value,
    /// What it said on stderr.
    pub stderr: String,
}

/// Runs `ringcast-load ARGS --json` (the client engine on `backend`), killing it after
/// `RUN_LIMIT`.
pub fn run_with(backend: Backend, args: &[&str]) -> Outcome {
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
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringcast-load {args:?} ran past {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut stderr) = (String::new(), String::new());
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    let report = match out.lines().count() {
        0 => Value::Null,
        1 => serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
        _ => panic!("more than one line on stdout: {out}"),
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        report,
        stderr,
    }
}

/// Runs `ringcast-load ARGS --json`, which must succeed, and returns its JSON line.
pub fn run(backend: Backend, args: &[&str]) -> Value {
    let outcome = run_with(backend, args);
    assert_eq!(
        outcome.code, 0,
        "ringcast-load {args:?}: exit {}\n{}",
        outcome.code, outcome.stderr
    );
    outcome.report
}

pub fn uint(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

pub fn int(report: &Value, field: &str) -> i64 {
    report[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

/// A file in a directory of this test process's own, removed with it.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ringcast-load-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    /// `name` in the directory, written with `text`.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An example program (`chat`, `pubsub`) started on a free loopback port with one
/// worker, killed when dropped.
pub struct Program {
    child: Child,
    /// Its address, from the first line it prints.
    pub addr: String,
}

impl Program {
    pub fn start(name: &str, args: &[&str]) -> Program {
        let binary = example(name);
        let mut child = Command::new(&binary)
            .args(["--addr", "127.0.0.1:0", "--workers", "1"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        // "listening on ADDR" or "chat: open https://ADDR/ ..."
        let addr = line
            .split_whitespace()
            .find_map(|w| {
                let w = w
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                w.trim_end_matches('/').parse::<std::net::SocketAddr>().ok()
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

/// The example binary `name`, built beside `ringcast-load` (by `cargo test --workspace`,
/// or `cargo build -p ringcast-examples --bins` before `cargo test -p ringcast-load`).
fn example(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_ringcast-load"))
        .parent()
        .expect("a directory")
        .to_owned();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p ringcast-examples --bins` first \
         (cargo test --workspace builds it)",
        path.display()
    );
    path
}
