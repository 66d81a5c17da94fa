//! The real peers of the interop tests (Python websockets, Node ws): finding them, and
//! running one as a child process whose output lines the test reads.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a peer may take for any one step.
pub const WAIT: Duration = Duration::from_secs(20);

/// Where the peer scripts are.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// The command for a peer, or `None` (after saying why) when it is not installed.
pub fn peer(kind: &str) -> Option<Command> {
    let found = match kind {
        "python" => {
            let python = std::env::var("RINGCAST_PYTHON").unwrap_or_else(|_| "python3".into());
            let ok = Command::new(&python)
                .args(["-c", "import websockets"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| Command::new(python))
        }
        _ => {
            let node_path = std::env::var("RINGCAST_NODE_PATH").ok();
            let mut probe = Command::new("node");
            probe.args(["-e", "require('ws')"]).stderr(Stdio::null());
            if let Some(path) = &node_path {
                probe.env("NODE_PATH", path);
            }
            probe.status().is_ok_and(|s| s.success()).then(|| {
                let mut node = Command::new("node");
                if let Some(path) = node_path {
                    node.env("NODE_PATH", path);
                }
                node
            })
        }
    };
    if found.is_none() {
        assert!(
            std::env::var_os("RINGCAST_REQUIRE_PEERS").is_none(),
            "{kind} peer required but not installed (run scripts/test-all)"
        );
        eprintln!("SKIPPED: {kind} peer not installed (scripts/test-all installs it)");
    }
    found
}

/// A child process killed and reaped when the test ends, whatever happens.
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Start `command` with its output piped to the test.
    pub fn spawn(mut command: Command) -> Peer {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    /// The next line the peer printed.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line from the peer in time")
    }

    /// Wait for the line that starts with `prefix`, returning the rest.
    pub fn wait_for(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {prefix:?} line from the peer"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Wait for the peer to exit; whether it succeeded.
    pub fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "peer did not exit in time");
            thread::sleep(Duration::from_millis(20));
        }
    }
}
