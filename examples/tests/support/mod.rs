//! Helpers for the example-program tests: a program started on a free loopback port and
//! killed when dropped, and a dialer with deadlines.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::client::{ClientStream, Proxy};
use ringcast::{Conn, Dialer};

/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A program started on `127.0.0.1:0`, killed (by its PID) when dropped.
pub struct Program {
    pub child: Child,
    pub addr: String,
}

impl Program {
    /// Start `binary` with `--addr 127.0.0.1:0` and `args`; its first line names the
    /// address it listens on.
    pub fn start(binary: &str, args: &[&str]) -> Program {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the program");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
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

/// A dialer with a handshake timeout and no proxy.
pub fn dialer() -> Dialer {
    Dialer {
        proxy: Proxy::None,
        handshake_timeout: Some(WAIT),
        ..Dialer::default()
    }
}

/// Dial `url`; reads on the connection fail after [`WAIT`].
pub fn dial(url: &str) -> Result<Conn<ClientStream>, ringcast::Error> {
    let (mut conn, _) = dialer().dial(url, &[])?;
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    Ok(conn)
}
