//! Fewer, fuller sends for fan-out: [`Corks`].
//!
//! A connection that sent less than [`ServerConfig::coalesce`](super::ServerConfig::coalesce)
//! ago and has only published frames waiting (fewer than [`SEGMENT_BYTES`]) holds them
//! until that much time has passed since its last send: the publishes of the next turns
//! join them, and leave in one send (one TCP segment) instead of one each. A send counts
//! as made both when it starts and when it completes, so one that waited for a slow
//! reader's window is as recent as its completion. Everything else goes at once, as
//! without coalescing:
//!
//! - a connection that has not sent for `coalesce` (idle): a lone message is never held;
//! - a direct frame (a reply through `Socket::send`, a control frame, a close, a handshake
//!   answer) takes the held frames with it, in order;
//! - a segment's worth of bytes.
//!
//! Nothing is reordered: held frames stay in the connection's outbox, in order, and only
//! the moment of the send moves. The bound is kept by the worker's wait: it wakes at the
//! earliest moment a held connection is due.

use std::time::{Duration, Instant};

/// About one TCP segment of payload on an Ethernet path (1500-byte MTU, IPv4 and TCP
/// headers with timestamps): once this much is queued, holding it longer saves no segment.
pub(crate) const SEGMENT_BYTES: usize = 1448;

/// The connections holding their frames, and when the first of them is due.
#[derive(Debug)]
pub(crate) struct Corks {
    /// The bound in microseconds; 0: coalescing is off.
    delay_us: u32,
    /// Where the connections' send stamps count from.
    epoch: Instant,
    /// Held connections: (slab key, generation). An entry whose connection sent or went
    /// away meanwhile is dropped when next looked at.
    held: Vec<(u32, u32)>,
    /// The earliest moment a held connection is due.
    until: Option<Instant>,
    /// The connections [`release_due`](Self::release_due) found due, for the worker to
    /// flush.
    pub(crate) released: Vec<(u32, u32)>,
}

impl Corks {
    pub(crate) fn new(delay: Duration, now: Instant) -> Corks {
        Corks {
            delay_us: u32::try_from(delay.as_micros()).unwrap_or(u32::MAX),
            epoch: now,
            held: Vec::new(),
            until: None,
            released: Vec::new(),
        }
    }

    /// `now` as a send stamp: microseconds since the epoch, wrapping (every 71 minutes;
    /// a wrapped comparison can hold a connection once more, never past the bound twice).
    pub(crate) fn stamp(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// When the connection that last sent at stamp `sent_at` is due.
    fn due(&self, now: Instant, sent_at: u32) -> Instant {
        let since = self.stamp(now).wrapping_sub(sent_at);
        now + Duration::from_micros(u64::from(self.delay_us.saturating_sub(since)))
    }

    /// Whether a connection holds its frames now: coalescing is on, it has only
    /// published frames waiting (`direct` is false), fewer than [`SEGMENT_BYTES`] of
    /// them, and it sent (at stamp `sent_at`) less than the bound ago.
    pub(crate) fn holds(&self, now: Instant, sent_at: u32, queued: usize, direct: bool) -> bool {
        self.delay_us != 0
            && !direct
            && queued < SEGMENT_BYTES
            && self.stamp(now).wrapping_sub(sent_at) < self.delay_us
    }

    /// Lists connection `key` as holding, due the bound after its send at `sent_at`.
    pub(crate) fn hold(&mut self, key: u32, generation: u32, now: Instant, sent_at: u32) {
        self.held.push((key, generation));
        let due = self.due(now, sent_at);
        self.until = Some(self.until.map_or(due, |until| until.min(due)));
    }

    /// The earliest moment a held connection is due, for the worker's wait.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// At `now`, once the earliest deadline has come: asks `state` of each listed
    /// connection whether it still holds (its send stamp) or not (`None`: it sent or went
    /// away; dropped from the list), and moves each one now due to
    /// [`released`](Self::released). The rest stay listed, and the deadline becomes the
    /// earliest of theirs.
    pub(crate) fn release_due(
        &mut self,
        now: Instant,
        mut state: impl FnMut(u32, u32) -> Option<u32>,
    ) {
        if self.until.is_none_or(|until| until > now) {
            return;
        }
        let mut until: Option<Instant> = None;
        let mut held = std::mem::take(&mut self.held);
        let mut released = std::mem::take(&mut self.released);
        held.retain(|&(key, generation)| {
            let Some(sent_at) = state(key, generation) else {
                return false;
            };
            let due = self.due(now, sent_at);
            if due <= now {
                released.push((key, generation));
                return false;
            }
            until = Some(until.map_or(due, |u| u.min(due)));
            true
        });
        self.held = held;
        self.released = released;
        self.until = until;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_micros(300);

    #[test]
    fn off_holds_nothing() {
        let now = Instant::now();
        let corks = Corks::new(Duration::ZERO, now);
        assert!(!corks.holds(now, corks.stamp(now), 10, false));
    }

    #[test]
    fn only_recent_senders_with_published_frames_under_a_segment_hold() {
        let start = Instant::now();
        let corks = Corks::new(BOUND, start);
        let sent = corks.stamp(start);
        let soon = start + Duration::from_micros(100);
        assert!(corks.holds(soon, sent, 64, false), "sent 100 µs ago: held");
        assert!(
            !corks.holds(soon, sent, 64, true),
            "a direct frame goes at once"
        );
        assert!(
            !corks.holds(soon, sent, SEGMENT_BYTES, false),
            "a segment's worth goes"
        );
        let later = start + BOUND;
        assert!(
            !corks.holds(later, sent, 64, false),
            "idle for the bound: at once"
        );
    }

    #[test]
    fn held_connections_are_released_at_their_bound_and_gone_ones_dropped() {
        let start = Instant::now();
        let mut corks = Corks::new(BOUND, start);
        let early = corks.stamp(start);
        let late = corks.stamp(start + Duration::from_micros(200));
        corks.hold(1, 1, start, early);
        corks.hold(2, 1, start + Duration::from_micros(200), late);
        corks.hold(3, 1, start, early);
        assert_eq!(corks.deadline(), Some(start + BOUND));
        // Before the first deadline nothing is looked at.
        corks.release_due(start + Duration::from_micros(299), |_, _| unreachable!());
        assert!(corks.released.is_empty());
        // Connection 3 sent meanwhile (a direct frame took its held ones).
        let sends = [(1, early), (2, late)];
        let state = |key: u32, _| sends.iter().find(|s| s.0 == key).map(|s| s.1);
        corks.release_due(start + BOUND, state);
        assert_eq!(corks.released, [(1, 1)]);
        assert_eq!(corks.deadline(), Some(start + Duration::from_micros(500)));
        corks.released.clear();
        corks.release_due(start + Duration::from_micros(500), state);
        assert_eq!(corks.released, [(2, 1)]);
        assert_eq!(corks.deadline(), None);
    }
}
