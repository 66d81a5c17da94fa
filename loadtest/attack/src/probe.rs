//! The well-behaved client: one connection that keeps asking the server for an answer
//! during an attack and measures how long each takes. It fails when an answer does not
//! come within the stall bound, or the connection is closed under it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wire::{self, Client};

/// What the server answers the probe with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The same text message back (the echo server, and the chat's room, whose messages
    /// reach the sender too; other lines such as join notices are skipped).
    Echo,
    /// A pong for a ping (a server that answers no data, such as `pubsub`).
    Ping,
}

/// How a failure for want of an answer begins.
const NO_ANSWER: &str = "no answer within";

/// The time between two round trips.
const INTERVAL: Duration = Duration::from_millis(10);

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Answers received.
    pub round_trips: u64,
    /// The longest wait for an answer.
    pub max_rtt: Duration,
    /// Why it stopped before being told to, if it did.
    pub failure: Option<String>,
}

/// A probe running on its own thread.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Report>,
}

impl Probe {
    /// Connects at `path`, makes a first round trip, then keeps making them on a thread.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        mode: Mode,
        stall: Duration,
    ) -> Result<Probe, String> {
        let mut client = connect(addr, path, stall)?;
        let first = round_trip(&mut client, mode, 0, stall)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut report = Report {
                round_trips: 1,
                max_rtt: first,
                failure: None,
            };
            while !flag.load(Ordering::Relaxed) {
                match round_trip(&mut client, mode, report.round_trips, stall) {
                    Ok(rtt) => {
                        report.round_trips += 1;
                        report.max_rtt = report.max_rtt.max(rtt);
                    }
                    Err(why) => {
                        // A wait cut at the stall bound lasted at least that long.
                        if why.starts_with(NO_ANSWER) {
                            report.max_rtt = report.max_rtt.max(stall);
                        }
                        report.failure = Some(why);
                        break;
                    }
                }
                std::thread::sleep(INTERVAL);
            }
            report
        });
        Ok(Probe { stop, thread })
    }

    /// Stops the probe; what it saw.
    pub fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| Report {
            failure: Some("the probe thread panicked".into()),
            ..Report::default()
        })
    }
}

/// A new connection and one round trip on it: whether the server still serves newcomers.
pub fn once(addr: SocketAddr, path: &str, mode: Mode, stall: Duration) -> Result<Duration, String> {
    let mut client = connect(addr, path, stall)?;
    round_trip(&mut client, mode, 0, stall)
}

fn connect(addr: SocketAddr, path: &str, stall: Duration) -> Result<Client, String> {
    Client::upgrade(addr, path, "", stall).map_err(|e| format!("probe cannot connect: {e}"))
}

/// Sends one request and waits for its answer, at most `stall`.
fn round_trip(
    client: &mut Client,
    mode: Mode,
    seq: u64,
    stall: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let token = format!("probe {seq}");
    let (opcode, answer) = match mode {
        Mode::Echo => (wire::TEXT, wire::TEXT),
        Mode::Ping => (wire::PING, wire::PONG),
    };
    client
        .send(&wire::frame(opcode, token.as_bytes()))
        .map_err(|e| format!("probe send failed after {seq} round trips: {e}"))?;
    loop {
        let left = stall.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!("{NO_ANSWER} {stall:?} (round trip {seq})"));
        }
        client
            .stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let frame = match client.read_frame() {
            Ok(frame) => frame,
            Err(err) => {
                return Err(match wire::ending_of(&err) {
                    wire::Ending::Open => format!("{NO_ANSWER} {stall:?} (round trip {seq})"),
                    ending => format!("probe connection ended ({ending}) after {seq} round trips"),
                })
            }
        };
        match frame.opcode {
            op if op == answer && frame.payload == token.as_bytes() => return Ok(start.elapsed()),
            wire::PING => {
                let _ = client.send(&wire::frame(wire::PONG, &frame.payload));
            }
            wire::CLOSE => {
                return Err(format!(
                    "probe closed by the server ({:?}) after {seq} round trips",
                    frame.payload.get(..2)
                ))
            }
            _ => {} // a notice, another answer
        }
    }
}
