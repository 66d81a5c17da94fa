//! [`WriteLock`]: the lock around a split connection's write path, which a waiter can
//! give up on at a deadline: a control write waits for the writer until its deadline at
//! most, then returns a timeout that leaves the connection usable (as gorilla/websocket's
//! `WriteControl` does).
//!
//! The value is moved out while held and back on release, so no thread ever holds the
//! inner mutex while it writes to the network, and a panicking holder gives the value
//! back as its guard unwinds.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

pub(crate) struct WriteLock<T> {
    slot: Mutex<Option<Box<T>>>,
    freed: Condvar,
}

/// The value while one thread holds it; back in the lock when dropped.
pub(crate) struct Held<'a, T> {
    lock: &'a WriteLock<T>,
    value: Option<Box<T>>,
}

impl<T> WriteLock<T> {
    pub(crate) fn new(value: T) -> WriteLock<T> {
        WriteLock {
            slot: Mutex::new(Some(Box::new(value))),
            freed: Condvar::new(),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Box<T>>> {
        // Nothing runs under this mutex but a take or a put back, so a poisoned one
        // still holds a whole value (or none).
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait as long as it takes.
    pub(crate) fn lock(&self) -> Held<'_, T> {
        self.lock_by(None)
            .expect("a wait without a deadline ends only with the value")
    }

    /// Wait until `deadline` at most; `None` when it passed first.
    pub(crate) fn lock_by(&self, deadline: Option<Instant>) -> Option<Held<'_, T>> {
        let mut slot = self.slot();
        loop {
            if let Some(value) = slot.take() {
                return Some(Held {
                    lock: self,
                    value: Some(value),
                });
            }
            slot = match deadline {
                None => self.freed.wait(slot).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    if left.is_zero() {
                        return None;
                    }
                    self.freed
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_deref().expect("held until dropped")
    }
}

impl<T> DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_deref_mut().expect("held until dropped")
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            *self.lock.slot() = Some(value);
            self.lock.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_waiter_gives_up_at_its_deadline_and_the_value_stays() {
        let lock = WriteLock::new(7);
        let held = lock.lock();
        assert!(lock
            .lock_by(Some(Instant::now() + Duration::from_millis(20)))
            .is_none());
        drop(held);
        assert_eq!(*lock.lock(), 7);
    }

    #[test]
    fn a_waiter_gets_the_value_when_the_holder_lets_go() {
        let lock = std::sync::Arc::new(WriteLock::new(0u32));
        let mut held = lock.lock();
        let other = std::sync::Arc::clone(&lock);
        let waiter = std::thread::spawn(move || {
            let mut value = other.lock();
            *value += 1;
            *value
        });
        *held = 41;
        drop(held);
        assert_eq!(waiter.join().unwrap(), 42);
    }
}
