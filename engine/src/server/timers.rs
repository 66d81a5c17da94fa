//! [`TimerWheel`]: coarse timers for handshake, idle, ping and close timeouts.
//!
//! Deadlines live in the connections; the wheel only says when to look. Pushing a
//! deadline back (every received message does) costs nothing: when the slot comes up,
//! the worker compares the connection's real deadline with the clock and re-files it if
//! it is not due. Each connection is filed once at a time, so memory is one entry per
//! connection whatever the traffic.

use std::time::{Duration, Instant};

/// A hashed wheel of `slots` buckets of `tick` each.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<(u32, u32)>>,
    tick: Duration,
    /// The instant at which slot `cursor` is due.
    cursor_at: Instant,
    cursor: usize,
    /// Entries filed.
    len: usize,
}

impl TimerWheel {
    /// A wheel whose resolution is `tick` and which spans `slots * tick` before wrapping
    /// (later deadlines simply go round again).
    pub fn new(now: Instant, tick: Duration, slots: usize) -> TimerWheel {
        TimerWheel {
            slots: (0..slots.max(2)).map(|_| Vec::new()).collect(),
            tick,
            cursor_at: now + tick,
            cursor: 0,
            len: 0,
        }
    }

    /// File (key, generation) to be looked at around `at` (never before it).
    pub fn schedule(&mut self, key: u32, generation: u32, at: Instant) {
        let ahead = at.saturating_duration_since(self.cursor_at);
        let ticks = (ahead.as_nanos() / self.tick.as_nanos().max(1)) as usize;
        // A deadline past the wheel's span goes in the last slot and is re-filed then.
        let ticks = ticks.min(self.slots.len() - 1);
        let slot = (self.cursor + ticks) % self.slots.len();
        self.slots[slot].push((key, generation));
        self.len += 1;
    }

    /// When the next slot is due (how long `submit_and_wait` may sleep), or `None` when
    /// nothing is filed, so an idle worker sleeps until something happens.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.len > 0).then_some(self.cursor_at)
    }

    /// The number of entries filed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hand every entry of every slot due by `now` to `due`, which re-files what is not
    /// really due yet.
    pub fn expire(&mut self, now: Instant, mut due: impl FnMut(u32, u32, &mut Refile<'_>)) {
        if self.len == 0 {
            // Nothing to hand out: skip the empty slots in one step instead of one per tick.
            if self.cursor_at <= now {
                self.cursor_at = now + self.tick;
            }
            return;
        }
        let mut later = Vec::new();
        while self.cursor_at <= now {
            let entries = std::mem::take(&mut self.slots[self.cursor]);
            self.len -= entries.len();
            let mut refile = Refile { later: &mut later };
            for (key, generation) in &entries {
                due(*key, *generation, &mut refile);
            }
            // Keep the slot's allocation for reuse.
            let mut entries = entries;
            entries.clear();
            if self.slots[self.cursor].is_empty() {
                self.slots[self.cursor] = entries;
            }
            self.cursor = (self.cursor + 1) % self.slots.len();
            self.cursor_at += self.tick;
        }
        for (key, generation, at) in later {
            self.schedule(key, generation, at);
        }
    }
}

/// Lets an expiry callback file an entry again.
pub struct Refile<'a> {
    later: &'a mut Vec<(u32, u32, Instant)>,
}

impl Refile<'_> {
    /// Look at (key, generation) again around `at`.
    pub fn at(&mut self, key: u32, generation: u32, at: Instant) {
        self.later.push((key, generation, at));
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
        wheel.expire(t0 + Duration::from_millis(250), |k, _, _| fired.push(k));
        assert!(fired.is_empty());
        wheel.expire(t0 + Duration::from_millis(450), |k, _, _| fired.push(k));
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
            wheel.expire(now, |key, generation, refile| {
                if now >= due_at {
                    fired_at = Some(now);
                } else {
                    refile.at(key, generation, due_at);
                }
            });
        }
        let fired_at = fired_at.expect("fired");
        assert!(fired_at >= due_at && fired_at <= due_at + 2 * TICK);
    }

    #[test]
    fn next_deadline_advances_with_expiry() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, TICK, 8);
        wheel.schedule(1, 0, t0 + Duration::from_secs(1));
        let first = wheel.next_deadline().unwrap();
        wheel.expire(first, |_, _, _| {});
        assert_eq!(wheel.next_deadline(), Some(first + TICK));
    }

    #[test]
    fn empty_wheel_has_no_deadline_and_skips_idle_time() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0, TICK, 8);
        assert_eq!(wheel.next_deadline(), None);
        let later = t0 + Duration::from_secs(3600);
        wheel.expire(later, |_, _, _| panic!("nothing is filed"));
        wheel.schedule(4, 0, later + TICK);
        let mut fired = Vec::new();
        wheel.expire(later + 3 * TICK, |k, _, _| fired.push(k));
        assert_eq!(fired, vec![4]);
        assert!(wheel.is_empty());
    }
}
