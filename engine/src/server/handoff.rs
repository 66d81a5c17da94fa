//! The hand-off to a worker, bounded in bytes: [`Budget`].
//!
//! Every command another thread (or another worker) puts on a worker's channel first
//! reserves its size in that worker's [`Budget`], and the worker gives the bytes back once
//! per loop turn, after handling what it took. A publish kept in the pending list of a
//! worker's own thread is charged to that worker's budget the same way.
//!
//! Policy when a worker's budget is full:
//!
//! - a plain call ([`ServerHandle::publish`](super::ServerHandle::publish), `send_to`,
//!   `close`, `dial`, and [`Socket::publish`](super::Socket::publish) inside a callback)
//!   is refused with [`Error::QueueFull`](crate::Error::QueueFull) and counted in
//!   [`Stats::handoffs_refused`](super::Stats::handoffs_refused); a publish is refused
//!   whole (every worker or none), so no subscriber sees it when any could not;
//! - a waiting call ([`ServerHandle::publish_timeout`](super::ServerHandle::publish_timeout))
//!   registers a [`Waker`] with the full worker and sleeps until that worker frees bytes,
//!   up to its timeout. On a worker thread it never waits: two full workers waiting on
//!   each other would never drain.
//!
//! The waiters are [`std::task::Waker`]s, so an `async` publish can wait the same way (its
//! task's waker in the registry) without a thread of its own.
//!
//! The budget is accounted per command, never per subscriber: one atomic add per command
//! per worker on the sending side, one atomic subtract per loop turn on the worker's.
//!
//! [`ServerHandle::publish`]: super::ServerHandle::publish
//! [`Socket::publish`]: super::Socket::publish

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::Thread;

/// One worker's command-queue budget in bytes, and who waits for room in it.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    /// Bytes reserved by commands not yet handled by the worker.
    used: AtomicUsize,
    /// Wakers of callers waiting for room; all woken when the worker frees bytes.
    waiters: Mutex<Vec<Waker>>,
    /// `waiters.len()`, read without the lock by the worker after each release.
    waiting: AtomicUsize,
    /// Commands refused because the budget was full.
    refused: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Callers waiting for room now.
    pub(crate) fn waiters(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Commands refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves `cost` bytes if they fit. An empty queue takes one command whatever its
    /// size, so that a message larger than the budget can still go to a worker that keeps
    /// up (as a connection's queue does with a frame larger than `max_queued_bytes`).
    pub(crate) fn try_reserve(&self, cost: usize) -> bool {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used != 0 && used.saturating_add(cost) > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + cost,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives `bytes` back; returns what was reserved just before. Called by the worker once
    /// per turn for the commands it handled (so its return value is the high-water mark
    /// since the worker's last release: reservations only grow in between, but for a
    /// publish that rolls back what it reserved on other workers when one is full), and by
    /// such a roll-back. Wakes every waiter when there are any.
    pub(crate) fn release(&self, bytes: usize) -> usize {
        let before = self.used.fetch_sub(bytes, Ordering::SeqCst);
        // After the subtraction: a waiter that registered before it is seen here, and one
        // that registers after it finds the room when it checks again.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let waiters = {
                let mut list = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
                self.waiting.fetch_sub(list.len(), Ordering::SeqCst);
                std::mem::take(&mut *list)
            };
            for waker in waiters {
                waker.wake();
            }
        }
        before
    }

    /// Asks to be woken when the worker next frees bytes. The caller checks for room again
    /// after registering, then sleeps.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut list = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Takes back a waker registered by a caller that stops waiting (it got room
    /// without being woken, or its deadline passed), so that callers giving up while the
    /// worker stays full do not pile up in the list.
    pub(crate) fn unregister(&self, waker: &Waker) {
        let mut list = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let before = list.len();
        list.retain(|w| !w.will_wake(waker));
        self.waiting
            .fetch_sub(before - list.len(), Ordering::SeqCst);
    }
}

/// Wakes a thread parked in a waiting call.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(Unpark(std::thread::current())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn reservations_stop_at_the_budget_and_an_empty_queue_takes_one_of_any_size() {
        let budget = Budget::new(100);
        assert!(budget.try_reserve(60));
        assert!(budget.try_reserve(40));
        assert!(!budget.try_reserve(1));
        assert_eq!(budget.release(100), 100);
        assert!(budget.try_reserve(500), "an empty queue takes one command");
        assert!(!budget.try_reserve(1));
        assert_eq!(budget.used(), 500);
    }

    #[test]
    fn a_release_wakes_each_registered_waiter_once() {
        let budget = Budget::new(10);
        assert!(budget.try_reserve(10));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        budget.register(&waker);
        budget.register(&waker); // the same waker is kept once
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 1);
        budget.release(5);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 0);
        budget.release(5); // nobody waits: no wake-up, no lock
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waiter_that_gives_up_is_taken_off_the_list() {
        let budget = Budget::new(10);
        let gone = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let stays = Waker::from(Arc::clone(&count));
        budget.register(&gone);
        budget.register(&stays);
        budget.unregister(&gone);
        budget.unregister(&gone); // twice: nothing more to take
        assert_eq!(budget.waiters(), 1);
        budget.release(0);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(budget.waiters(), 0);
    }

    #[test]
    fn a_waiter_on_another_thread_is_unparked_by_a_release() {
        let budget = Arc::new(Budget::new(10));
        assert!(budget.try_reserve(10));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let waiting = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                let waker = thread_waker();
                let mut told = false;
                loop {
                    budget.register(&waker);
                    if budget.try_reserve(10) {
                        return;
                    }
                    if !told {
                        ready_tx.send(()).expect("test thread waits");
                        told = true;
                    }
                    // A hang guard, not a signal: the release unparks this thread.
                    std::thread::park_timeout(std::time::Duration::from_secs(20));
                }
            })
        };
        ready_rx.recv().expect("waiter registered");
        budget.release(10);
        waiting.join().expect("waiter got its room");
        assert_eq!(budget.used(), 10);
    }
}
