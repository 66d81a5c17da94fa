//! What the example tests share: start a program and learn its addresses, read text
//! messages, fetch a page, read the counters.

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringcast::client::ClientStream;
use ringcast::{Conn, MessageType};

/// An example program started on a free port (`--addr 127.0.0.1:0`), its stderr kept;
/// killed when dropped.
pub struct Program {
    pub child: Child,
    /// Where it serves (from its first line of output).
    pub addr: String,
    /// Where `--metrics-addr` put the counters (its second line), when that was given.
    pub metrics: Option<String>,
    log: Arc<Mutex<String>>,
}

impl Program {
    /// Starts `binary` with `args`, `--addr 127.0.0.1:0` and the log filter `log`.
    pub fn start(binary: &str, args: &[&str], log: &str) -> Program {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the program");
        // Read the log on a thread, so a full pipe never stalls the program.
        let kept = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = kept.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        // "listening on ADDR" or "chat: open http://ADDR/ ..."
        let addr = address_in(&line);
        // Then "NAME: metrics at http://ADDR/metrics".
        let metrics = args.contains(&"--metrics-addr").then(|| {
            line.clear();
            stdout.read_line(&mut line).expect("the metrics line");
            address_in(&line)
        });
        Program {
            child,
            addr,
            metrics,
            log: kept,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The broker's counters from its metrics address, `ringcast_redis_` taken off.
    pub fn redis_figures(&self) -> HashMap<String, f64> {
        let metrics = self
            .metrics
            .as_deref()
            .expect("started with --metrics-addr");
        let response = get(metrics, "/metrics");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .lines()
            .filter_map(|line| line.strip_prefix("ringcast_redis_"))
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// It has not exited.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first socket address in a line of a program's output.
pub fn address_in(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| {
            let w = w.trim_start_matches("http://").trim_end_matches('/');
            let w = w.strip_suffix("/metrics").unwrap_or(w);
            w.parse::<SocketAddr>().ok()
        })
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// The whole answer to `GET path` on `addr`.
pub fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// The next message, which must be text.
pub fn text(conn: &mut Conn<ClientStream>) -> String {
    let (kind, payload) = conn.read_message().expect("a message");
    assert_eq!(kind, MessageType::Text);
    String::from_utf8(payload).expect("utf8")
}
