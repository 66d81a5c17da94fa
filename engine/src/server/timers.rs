//! [`TimerWheel`]: coarse timers for handshake, idle, ping and close timeouts.
//!
//! Deadlines live in the connections; the wheel only says when to look. Pushing a
//! deadline back (every received message does) costs nothing: when the slot comes up,
//! the worker compares the connection's real deadline with the clock and re-files it if
//! it is not due. Each connection is filed once at a time, so memory is one entry per
//! connection whatever the traffic.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A hashed wheel of `slots` buckets of `tick` each.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    slots: Vec<Vec<(u32, u32)>>,
    tick: Duration,
    /// The instant at which slot `cursor` is due.
    cursor_at: Instant,
    cursor: usize,
    /// Entries filed.
    len: usize,
    /// How many slots from the cursor on are known to be empty: `next_deadline`'s scan
    /// resumes there. Shrinks when an entry is filed nearer; reset when the cursor moves.
    empty_ahead: Cell<usize>,
}

impl TimerWheel {
    /// A wheel whose resolution is `tick` and which spans `slots * tick` before wrapping
    /// (later deadlines simply go round again).
    pub(crate) fn new(now: Instant, tick: Duration, slots: usize) -> TimerWheel {
        TimerWheel {
            slots: (0..slots.max(2)).map(|_| Vec::new()).collect(),
            tick,
            cursor_at: now + tick,
            cursor: 0,
            len: 0,
            empty_ahead: Cell::new(0),
        }
    }

    /// File (key, generation) to be looked at around `at` (never before it).
    pub(crate) fn schedule(&mut self, key: u32, generation: u32, at: Instant) {
        let ahead = at.saturating_duration_since(self.cursor_at);
        let ticks = (ahead.as_nanos() / self.tick.as_nanos().max(1)) as usize;
        // A deadline past the wheel's span goes in the last slot and is re-filed then.
        let ticks = ticks.min(self.slots.len() - 1);
        let slot = (self.cursor + ticks) % self.slots.len();
        self.slots[slot].push((key, generation));
        self.len += 1;
        if ticks < self.empty_ahead.get() {
            self.empty_ahead.set(ticks);
        }
    }

    /// When the first slot holding entries is due (how long `submit_and_wait` may sleep),
    /// or `None` when nothing is filed, so a worker sleeps until something happens, not
    /// once per tick. The scan of empty slots is remembered, so asking every loop turn
    /// costs one look at one slot.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots.len();
        let mut ahead = self.empty_ahead.get();
        // `len > 0`: some slot holds an entry, so this ends within one round.
        while self.slots[(self.cursor + ahead) % n].is_empty() {
            ahead += 1;
        }
        self.empty_ahead.set(ahead);
        Some(self.cursor_at + self.tick * ahead as u32)
    }

    /// Hand every entry of every slot due by `now` to `due`. An entry handed out is no
    /// longer filed: the worker files the connection again ([`schedule`](Self::schedule))
    /// when its real deadline is not due yet.
    pub(crate) fn expire(&mut self, now: Instant, mut due: impl FnMut(u32, u32)) {
        if self.len == 0 {
            // Nothing to hand out: skip the empty slots in one step instead of one per tick.
            if self.cursor_at <= now {
                self.cursor_at = now + self.tick;
            }
            return;
        }
        while self.cursor_at <= now {
            let entries = std::mem::take(&mut self.slots[self.cursor]);
            self.len -= entries.len();
            for (key, generation) in &entries {
                due(*key, *generation);
            }
            // Keep the slot's allocation for reuse.
            let mut entries = entries;
            entries.clear();
            if self.slots[self.cursor].is_empty() {
                self.slots[self.cursor] = entries;
            }
            self.cursor = (self.cursor + 1) % self.slots.len();
            self.cursor_at += self.tick;
            self.empty_ahead.set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn entry_fires_at_its_slot_not_before() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, TICK, 64);
        wheel.schedule(1, 0, t0 + Duration::from_millis(350));
        let mut fired = Vec::new();
        wheel.expire(t0 + Duration::from_millis(250), |k, _| fired.push(k));
        assert!(fired.is_empty());
        wheel.expire(t0 + Duration::from_millis(450), |k, _| fired.push(k));
        assert_eq!(fired, vec![1]);
    }

    #[test]
    fn far_deadline_is_refiled_until_due() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, TICK, 4);
        let due_at = t0 + Duration::from_secs(2);
        wheel.schedule(9, 3, due_at);
        let mut fired_at = None;
        let mut now = t0;
        while fired_at.is_none() && now < t0 + Duration::from_secs(5) {
            now += TICK;
            let mut early = Vec::new();
            wheel.expire(now, |key, generation| {
                if now >= due_at {
                    fired_at = Some(now);
                } else {
                    early.push((key, generation));
                }
            });
            // As the worker does: a connection whose deadline is not due is filed again.
            for (key, generation) in early {
                wheel.schedule(key, generation, due_at);
            }
        }
        let fired_at = fired_at.expect("fired");
        assert!(fired_at >= due_at && fired_at <= due_at + 2 * TICK);
    }

    #[test]
    fn next_deadline_skips_empty_slots_and_follows_nearer_entries() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, TICK, 64);
        wheel.schedule(1, 0, t0 + Duration::from_millis(1000));
        let far = wheel.next_deadline().unwrap();
        assert_eq!(far, t0 + Duration::from_millis(1000), "not the next tick");
        wheel.schedule(2, 0, t0 + Duration::from_millis(300));
        let near = wheel.next_deadline().unwrap();
        assert_eq!(near, t0 + Duration::from_millis(300));
        let mut fired = Vec::new();
        wheel.expire(near, |k, _| fired.push(k));
        assert_eq!(fired, vec![2]);
        assert_eq!(wheel.next_deadline(), Some(far));
        wheel.expire(far, |k, _| fired.push(k));
        assert_eq!(fired, vec![2, 1]);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn empty_wheel_has_no_deadline_and_skips_idle_time() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, TICK, 8);
        assert_eq!(wheel.next_deadline(), None);
        let later = t0 + Duration::from_secs(3600);
        wheel.expire(later, |_, _| panic!("nothing is filed"));
        wheel.schedule(4, 0, later + TICK);
        let mut fired = Vec::new();
        wheel.expire(later + 3 * TICK, |k, _| fired.push(k));
        assert_eq!(fired, vec![4]);
        assert_eq!(wheel.next_deadline(), None, "nothing left filed");
    }
}
