//! Timers for the engine's handlers. The engine calls a handler when something arrives
//! on one of its connections, never at a time of its choosing, yet scenario steps sleep,
//! think and time out. So each worker holds one extra WebSocket connection, to the
//! [`Metronome`]: a thread of this process with a listener on loopback, which sends that
//! connection an empty message whenever the worker's next deadline has come. A worker
//! publishes its deadline in its own atomic ([`Metronome::wake_at`]); the thread looks at
//! them every half millisecond and ticks only the workers that are due, so an idle run
//! costs no message at all, and a tick is at most about a millisecond late.
//!
//! The thread takes the deadline back (`u64::MAX`) before it ticks, and the worker
//! publishes its next one after handling the tick, so a deadline is never lost between
//! them. It uses only the public API: a blocking [`Upgrader`] on a std listener.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringcast::{Conn, MessageType, Upgrader};

use crate::client::now_ns;

/// The tag bit of the metronome connections; the rest of the tag is the worker.
pub const METRONOME: u64 = 1 << 62;

/// How often the thread looks at the deadlines.
const LOOK: Duration = Duration::from_micros(500);

/// The deadlines the workers publish, one per worker on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Deadline(AtomicU64);

/// The timer thread and its listener.
pub struct Metronome {
    addr: SocketAddr,
    deadlines: Arc<[Deadline]>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Metronome {
    /// Listens on loopback and starts the thread for `workers` workers.
    pub fn start(workers: usize) -> io::Result<Metronome> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let deadlines: Arc<[Deadline]> = (0..workers)
            .map(|_| Deadline(AtomicU64::new(u64::MAX)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (deadlines, stop) = (deadlines.clone(), stop.clone());
            std::thread::Builder::new()
                .name("metronome".into())
                .spawn(move || tick(listener, &deadlines, &stop))?
        };
        Ok(Metronome {
            addr,
            deadlines,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The URL worker `worker` dials (with tag `METRONOME | worker`).
    pub fn url(&self, worker: usize) -> String {
        format!("ws://{}/worker/{worker}", self.addr)
    }

    /// Asks for a tick of `worker` at `at` (on [`now_ns`]'s clock), unless an earlier
    /// one is already asked for.
    pub fn wake_at(&self, worker: usize, at: u64) {
        if let Some(deadline) = self.deadlines.get(worker) {
            deadline.0.fetch_min(at, Ordering::AcqRel);
        }
    }

    /// Stops the thread, which closes its connections (so the engine's shutdown does not
    /// wait for their closing handshakes). No tick comes after.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Metronome {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: accept each worker's connection, then tick the workers that are due.
fn tick(listener: TcpListener, deadlines: &[Deadline], stop: &AtomicBool) {
    let mut conns: Vec<Option<Conn<TcpStream>>> = (0..deadlines.len()).map(|_| None).collect();
    let upgrader = Upgrader {
        handshake_timeout: Some(Duration::from_secs(5)),
        ..Upgrader::default()
    };
    let mut last_look = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if conns.iter().any(Option::is_none) {
            accept(&listener, &upgrader, &mut conns);
        }
        let now = now_ns();
        for (worker, deadline) in deadlines.iter().enumerate() {
            let at = deadline.0.load(Ordering::Acquire);
            if at > now {
                continue;
            }
            // Take it back first: what the worker asks for after this tick stays.
            if deadline
                .0
                .compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue; // an earlier one came meanwhile: the next look sees it
            }
            if let Some(conn) = conns[worker].as_mut() {
                if conn.write_message(MessageType::Text, b"").is_err() {
                    conns[worker] = None; // the run is ending
                }
            }
        }
        let next = last_look + LOOK;
        last_look = Instant::now();
        if let Some(pause) = next.checked_duration_since(last_look) {
            std::thread::sleep(pause);
        }
    }
}

/// Accepts the connections waiting; each says its worker in its path.
fn accept(listener: &TcpListener, upgrader: &Upgrader, conns: &mut [Option<Conn<TcpStream>>]) {
    while let Ok((stream, _)) = listener.accept() {
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let mut worker = None;
        let upgraded = upgrader.upgrade_with(stream, |request| {
            worker = request
                .path()
                .strip_prefix("/worker/")
                .and_then(|w| w.parse::<usize>().ok());
            Ok(Vec::new())
        });
        if let (Ok(conn), Some(slot)) = (upgraded, worker.and_then(|w| conns.get_mut(w))) {
            *slot = Some(conn);
        }
    }
}
