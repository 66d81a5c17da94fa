//! The server under attack: a process this program starts (and stops, by its PID), or one
//! already running that it is pointed at; its memory read from `/proc/PID/status`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The last lines a started server wrote on stderr, kept to explain a crash.
const LOG_LINES: usize = 20;

/// A server process and where it listens.
pub struct Server {
    /// Its process id.
    pub pid: u32,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Where it serves its counters, when it printed a line with "metrics at ADDR".
    pub metrics: Option<SocketAddr>,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `command` (program and arguments) and waits for the first address it prints
    /// on stdout ("listening on ADDR", "chat: open http://ADDR/ ..."), at most 30 s; a
    /// second line with "metrics at ADDR" (the chat's `--metrics-addr`) is waited for too
    /// when the command asks for one.
    pub fn spawn(command: &[String]) -> Result<Server, String> {
        let (program, args) = command.split_first().ok_or("no server command")?;
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = kept.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        // Read stdout on a thread for good, so a chatty server never blocks on a full pipe.
        let (found, addresses) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = address_in(&line) {
                    let _ = found.send((line.contains("metrics at"), addr));
                }
            }
        });
        let mut server = Server {
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            child: Some(child),
            log,
        };
        let wants_metrics = args.iter().any(|a| a == "--metrics-addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut listening = None;
        while listening.is_none() || (wants_metrics && server.metrics.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match addresses.recv_timeout(left) {
                Ok((true, addr)) => server.metrics = Some(addr),
                Ok((false, addr)) => listening = listening.or(Some(addr)),
                Err(_) => return Err(format!("{program} printed no address within 30 s")),
            }
        }
        server.addr = listening.expect("the loop waits for it");
        Ok(server)
    }

    /// A server started by someone else.
    pub fn running(pid: u32, addr: SocketAddr, metrics: Option<SocketAddr>) -> Server {
        Server {
            pid,
            addr,
            metrics,
            child: None,
            log: Arc::default(),
        }
    }

    /// Whether this program started it (so its peak RSS is its own since start).
    pub fn started_here(&self) -> bool {
        self.child.is_some()
    }

    /// The process still runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => std::path::Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }

    /// How it ended, when it did (for the report).
    pub fn exit(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status.to_string())
    }

    /// The last lines of its stderr.
    pub fn log_tail(&self) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> Option<u64> {
        status_kib(self.pid, "VmRSS:").map(|kib| kib * 1024)
    }

    /// The process's peak resident memory since it started, in bytes.
    pub fn hwm(&self) -> Option<u64> {
        status_kib(self.pid, "VmHWM:").map(|kib| kib * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first socket address in a line, with or without `http://` and a path.
pub fn address_in(line: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|word| {
        let word = word
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let word = word.split('/').next().unwrap_or(word);
        word.parse().ok()
    })
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Samples a process's resident memory every few milliseconds and keeps the highest.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl RssWatch {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (flag, high) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    high.fetch_max(kib * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(every.saturating_sub(start.elapsed()));
            }
        });
        RssWatch { stop, peak, thread }
    }

    /// Stops sampling; the highest resident memory seen, in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The soft open-file limit of this process (from `/proc/self/limits`).
pub fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_the_examples_first_lines() {
        let want: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(address_in("listening on 127.0.0.1:8080"), Some(want));
        assert_eq!(
            address_in("chat: open http://127.0.0.1:8080/ in a browser (rooms: ...)"),
            Some(want)
        );
        assert_eq!(address_in("nothing here"), None);
    }

    #[test]
    fn this_process_has_a_resident_size_and_a_file_limit() {
        assert!(status_kib(std::process::id(), "VmRSS:").is_some_and(|kib| kib > 0));
        assert!(open_file_limit() > 0);
    }
}
