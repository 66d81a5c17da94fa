//! The attacks: each a function that runs against a server for a bounded time and count,
//! closes every connection it opened, and says what the server answered. Each has a bound
//! on how much the server's resident memory may grow while it runs, argued beside it.

mod frames;
mod handshake;
mod idle;
mod rooms;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire;

/// What a connection held open may cost: on the blocking backend a thread, with its
/// touched stack, its allocator's thread heap and its buffers (about 100 KiB measured);
/// on the engine far less.
pub const PER_CONNECTION: u64 = 128 << 10;

/// What `n` connections may cost while each holds a message up to the read limit: the
/// limit is what makes this bounded at all. Four times the limit each, for the bytes
/// received and the message assembled from them (or the inflater's output), each in a
/// buffer grown by doubling; the engine was measured at 3 times (docs/testing.md).
pub fn held_messages(ctx: &Ctx, n: usize) -> u64 {
    n as u64 * (4 * ctx.max_message as u64 + PER_CONNECTION)
}

/// Memory every attack may cost on top of its own bound: allocator arenas warming up,
/// thread stacks and the buffers each worker sets up on first use. Measured: the servers
/// grow 1-6 MiB under the lightest attacks (docs/testing.md).
pub const SLACK: u64 = 16 << 20;

/// The server programs this suite knows how to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `echo-server`: every message comes back to its sender.
    Echo,
    /// `chat`: rooms at `/ws?room=NAME`, a message reaches every member, sender included.
    Chat,
    /// `pubsub`: topics at `/ws?topic=NAME`, `+NAME` subscribes; it answers no data.
    Pubsub,
}

/// What an attack knows of its target.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Where it serves its counters, if it does (and the attacker may read them).
    pub metrics: Option<SocketAddr>,
    /// Which program it is.
    pub kind: Kind,
    /// How long a flood lasts.
    pub seconds: Duration,
    /// The server's message limit (its read limit), in bytes.
    pub max_message: usize,
    /// The server's per-connection send queue bound, in bytes.
    pub max_queued: usize,
    /// File descriptors this program may still open.
    pub fd_budget: usize,
    /// The bound on each read and write of an attacking client.
    pub io_timeout: Duration,
}

impl Ctx {
    /// The WebSocket path of room (or topic) `name`.
    pub fn path(&self, name: &str) -> String {
        match self.kind {
            Kind::Echo => "/ws".into(),
            Kind::Chat => format!("/ws?room={name}"),
            Kind::Pubsub => format!("/ws?topic={name}"),
        }
    }

    /// `wanted` connections, or fewer when the descriptors would not suffice.
    pub fn count(&self, wanted: usize) -> usize {
        wanted.min(self.fd_budget)
    }

    /// When a flood started now ends.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.seconds
    }
}

/// What an attack reports.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What the server answered, in a few words.
    pub note: String,
    /// A wrong answer that fails the attack even though the server survived (data lost).
    pub fault: Option<String>,
}

impl Outcome {
    /// An outcome that is only a note.
    pub fn note(note: impl Into<String>) -> Outcome {
        Outcome {
            note: note.into(),
            fault: None,
        }
    }
}

/// One attack.
pub struct Attack {
    /// Its name on the command line and in the table.
    pub name: &'static str,
    /// What it does.
    pub about: &'static str,
    /// The programs it applies to.
    pub kinds: &'static [Kind],
    /// The most the server's resident memory may grow (peak over before), in bytes.
    pub bound: fn(&Ctx) -> u64,
    /// Runs it.
    pub run: fn(&Ctx) -> Outcome,
}

const ALL_KINDS: &[Kind] = &[Kind::Echo, Kind::Chat, Kind::Pubsub];
const ECHO_AND_CHAT: &[Kind] = &[Kind::Echo, Kind::Chat];

/// Every attack, in the order they run.
pub const ALL: &[Attack] = &[
    Attack {
        name: "slowloris",
        about: "200 handshakes sent one byte per 100 ms, never finished",
        kinds: ALL_KINDS,
        // A socket and, on the blocking backend, a thread per connection.
        bound: |ctx| SLACK + ctx.count(200) as u64 * PER_CONNECTION,
        run: handshake::slowloris,
    },
    Attack {
        name: "huge-headers",
        about: "32 requests with a 1 MiB header line",
        kinds: ALL_KINDS,
        // The head limit (8 KiB by default) stops the reading: the megabyte is never held.
        bound: |ctx| SLACK + ctx.count(32) as u64 * PER_CONNECTION,
        run: handshake::huge_headers,
    },
    Attack {
        name: "many-headers",
        about: "32 requests with 10 000 headers each",
        kinds: ALL_KINDS,
        bound: |ctx| SLACK + ctx.count(32) as u64 * PER_CONNECTION,
        run: handshake::many_headers,
    },
    Attack {
        name: "bad-extension-offers",
        about: "malformed, repeated and endless permessage-deflate offers",
        kinds: ALL_KINDS,
        bound: |_| SLACK,
        run: handshake::bad_extension_offers,
    },
    Attack {
        name: "half-open-flood",
        about: "1000 connections that send nothing",
        kinds: ALL_KINDS,
        bound: |ctx| SLACK + ctx.count(1000) as u64 * PER_CONNECTION,
        run: handshake::half_open_flood,
    },
    Attack {
        name: "connect-close-churn",
        about: "connect, upgrade, close, from 4 threads, up to 5000 times",
        kinds: ALL_KINDS,
        // Closed connections must give everything back; what churns in flight is small.
        bound: |_| SLACK + (16 << 20),
        run: handshake::connect_close_churn,
    },
    Attack {
        name: "length-2^63",
        about: "100 frames announcing 2^63-1 (or 2^64-1) bytes",
        kinds: ALL_KINDS,
        // Refused from the header alone: nothing is allocated for the payload.
        bound: |ctx| SLACK + ctx.count(100) as u64 * PER_CONNECTION,
        run: frames::length_2_63,
    },
    Attack {
        name: "endless-fragments",
        about: "8 messages whose fragments never end (large ones, and empty ones)",
        kinds: ALL_KINDS,
        // Each message is refused at the read limit: at most that much is held.
        bound: |ctx| SLACK + held_messages(ctx, 8),
        run: frames::endless_fragments,
    },
    Attack {
        name: "unmasked-frames",
        about: "200 clients sending unmasked frames",
        kinds: ALL_KINDS,
        bound: |ctx| SLACK + ctx.count(200) as u64 * PER_CONNECTION,
        run: frames::unmasked,
    },
    Attack {
        name: "bad-utf8",
        about: "200 text messages that are not UTF-8 (whole, and split across fragments)",
        kinds: ALL_KINDS,
        bound: |ctx| SLACK + ctx.count(200) as u64 * PER_CONNECTION,
        run: frames::bad_utf8,
    },
    Attack {
        name: "deflate-bomb",
        about: "compressed messages inflating to 64 MiB, from 4 clients, again and again",
        kinds: ALL_KINDS,
        // Inflation stops at the read limit.
        bound: |ctx| SLACK + held_messages(ctx, 4),
        run: frames::deflate_bomb,
    },
    Attack {
        name: "ping-flood",
        about: "8 clients sending pings without reading the pongs",
        kinds: ALL_KINDS,
        // Pongs queue up to the per-connection bound, then are dropped or the connection
        // closed; a queued frame costs about twice its bytes.
        bound: |ctx| SLACK + 8 * 2 * ctx.max_queued as u64,
        run: frames::ping_flood,
    },
    Attack {
        name: "reset-mid-frame",
        about: "200 clients reset in the middle of a frame",
        kinds: ALL_KINDS,
        bound: |ctx| SLACK + ctx.count(200) as u64 * PER_CONNECTION,
        run: frames::reset_mid_frame,
    },
    Attack {
        name: "pipelined-after-upgrade",
        about: "20 clients sending 200 messages and a close in the handshake's own write",
        kinds: ALL_KINDS,
        bound: |_| SLACK,
        run: frames::pipelined,
    },
    Attack {
        name: "large-unfinished-messages",
        about: "16 messages stopped 1 KiB short of the read limit, then held",
        kinds: ALL_KINDS,
        // Held legitimately, up to the read limit.
        bound: |ctx| SLACK + held_messages(ctx, ctx.count(16)),
        run: frames::large_unfinished,
    },
    Attack {
        name: "slow-consumers",
        about: "clients that send (or are sent) messages and never read",
        kinds: ECHO_AND_CHAT,
        // Each connection's queue is bounded by max_queued; a broadcast frame is shared by
        // every queue that holds it, so a room costs its frames once.
        bound: |ctx| SLACK + 8 * 2 * ctx.max_queued as u64,
        run: rooms::slow_consumers,
    },
    Attack {
        name: "many-rooms",
        about: "2000 connections, each alone in a room of its own",
        kinds: &[Kind::Chat, Kind::Pubsub],
        // A connection and a topic: a few KiB each.
        bound: |ctx| SLACK + ctx.count(2000) as u64 * (8 << 10),
        run: rooms::many_rooms,
    },
    Attack {
        name: "cross-worker-flood",
        about: "2 clients flooding a room whose 40 members are spread over the workers",
        kinds: &[Kind::Chat],
        // The hand-off between workers must be bounded in bytes; members' queues hold
        // shared frames. 64 MiB is far above both and far below the 400 MB it took when
        // the hand-off was unbounded.
        bound: |_| SLACK + (64 << 20),
        run: rooms::cross_worker_flood,
    },
    Attack {
        name: "shared-topics-then-close",
        about: "2 clients share up to 100 000 topics, then one leaves",
        kinds: &[Kind::Pubsub],
        // Two subscriptions per topic and the topic itself: about 512 bytes per topic.
        bound: |_| SLACK + 100_000 * 512,
        run: rooms::shared_topics_then_close,
    },
    Attack {
        name: "idle-after-big-compressed",
        about: "100 clients each send one 900 KiB compressed message, then idle",
        kinds: &[Kind::Echo],
        // What an idle connection keeps after a big message must be small: 512 KiB each
        // (the target: 300 such connections under 150 MB).
        bound: |ctx| SLACK + ctx.count(100) as u64 * (512 << 10),
        run: idle::big_compressed,
    },
    Attack {
        name: "idle-after-big-plain",
        about: "100 clients each send one 900 KiB plain message, then idle",
        kinds: &[Kind::Echo],
        bound: |ctx| SLACK + ctx.count(100) as u64 * (512 << 10),
        run: idle::big_plain,
    },
];

/// `n` clients in `room` each send `batch` over and over until the flood's end, reading
/// nothing; how they ended, and the batches sent whole.
pub fn flood_unread(ctx: &Ctx, room: &str, n: usize, batch: &[u8]) -> (wire::Tally, u64) {
    let deadline = ctx.deadline();
    let results = in_parallel(n, n, |_| {
        let mut client = match wire::Client::upgrade(ctx.addr, &ctx.path(room), "", ctx.io_timeout)
        {
            Ok(client) => client,
            Err(err) => return (wire::ending_of(&err), 0),
        };
        let (batches, cut) = client.flood(batch, deadline);
        let ending = match cut {
            wire::Ending::Open => client.ended_now(),
            cut => cut,
        };
        (ending, batches)
    });
    let mut tally = wire::Tally::default();
    for (ending, _) in &results {
        tally.add(*ending);
    }
    (tally, results.iter().map(|r| r.1).sum())
}

/// Runs `work(i)` for `i` in `0..n` on `threads` threads; the results in order of `i`.
pub fn in_parallel<T: Send>(n: usize, threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let work = &work;
        let chunks: Vec<_> = results
            .chunks_mut(n.div_ceil(threads).max(1))
            .enumerate()
            .map(|(c, chunk)| {
                let start = c * n.div_ceil(threads).max(1);
                scope.spawn(move || {
                    for (offset, slot) in chunk.iter_mut().enumerate() {
                        *slot = Some(work(start + offset));
                    }
                })
            })
            .collect();
        for chunk in chunks {
            let _ = chunk.join();
        }
    });
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_names_are_unique_and_each_applies_somewhere() {
        let mut names: Vec<&str> = ALL.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|a| !a.kinds.is_empty()));
    }

    #[test]
    fn parallel_work_keeps_the_order_of_its_inputs() {
        assert_eq!(
            in_parallel(10, 3, |i| i * 2),
            (0..10).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert!(in_parallel(0, 4, |i| i).is_empty());
    }
}
