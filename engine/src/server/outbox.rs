//! [`Outbox`]: the frames queued for one connection, shared not copied, with a cap.
//!
//! Frames are [`SendBuf`]s: a broadcast frame is one allocation referenced by every outbox
//! of the worker that queues it, counted without atomics. A flush *moves* up to [`MAX_IOVECS`] frames out of the queue into the
//! driver's in-flight table, which sends all of their bytes (the driver resumes short
//! writes itself) and drops the frames when the kernel is done with them; so a frame
//! costs one reference count on the way in and one on the way out, never a copy. Bytes
//! handed to the driver still count against the cap until their completion reports them
//! sent. The cap bounds what a slow reader can make the server hold.

use std::collections::VecDeque;

use crate::sys::SendBuf;

/// The most frames one send takes: what the driver takes in one send (Linux's `UIO_MAXIOV`).
pub const MAX_IOVECS: usize = crate::sys::MAX_SEND_FRAMES;

/// What to do with a connection whose queue is over its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Close it with 1008 "slow consumer" (the default: a peer that cannot keep up with
    /// a broadcast is better told than silently starved).
    #[default]
    Close,
    /// Drop the message for that connection only, and count it.
    Drop,
}

/// A frame did not fit under the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Bytes queued before the push.
    pub queued: usize,
    /// The size of the frame refused.
    pub frame: usize,
}

/// The queue of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Frames not yet handed to the driver.
    frames: VecDeque<SendBuf>,
    /// Bytes not yet reported sent: those in `frames` and those in a send in flight.
    queued: usize,
}

impl Outbox {
    /// Queue `frame` unless it would take the queue past `cap` bytes. An empty queue
    /// always takes one frame, however big, so a message larger than the cap can still
    /// be sent to a reader that keeps up.
    pub fn push(&mut self, frame: impl Into<SendBuf>, cap: usize) -> Result<(), Overflow> {
        let frame = frame.into();
        if self.queued > 0 && self.queued + frame.len() > cap {
            return Err(Overflow {
                queued: self.queued,
                frame: frame.len(),
            });
        }
        self.push_unbounded(frame);
        Ok(())
    }

    /// Queue `frame` whatever the cap (control frames: a close must get out).
    pub fn push_unbounded(&mut self, frame: impl Into<SendBuf>) {
        let frame = frame.into();
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        if self.frames.is_empty() {
            // An idle connection's deque has no allocation; this is its first frame.
            self.frames.reserve_exact(4);
        }
        self.frames.push_back(frame);
    }

    /// Bytes not yet reported sent (queued here or in a send in flight).
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether nothing waits, here or in a send in flight.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Takes the next batch out of the queue: up to [`MAX_IOVECS`] frames, oldest first, to
    /// be moved into one send. Their bytes stay counted until [`sent`](Outbox::sent).
    pub fn take_batch(&mut self) -> std::collections::vec_deque::Drain<'_, SendBuf> {
        let n = self.frames.len().min(MAX_IOVECS);
        self.frames.drain(..n)
    }

    /// A send of `bytes` bytes (all of a batch taken earlier) completed.
    pub fn sent(&mut self, bytes: usize) {
        self.queued = self.queued.saturating_sub(bytes);
        if self.queued == 0 {
            // Give the deque's memory back: an idle connection holds no write buffer.
            self.frames = VecDeque::new();
        }
    }

    /// Forget everything queued (the connection is gone).
    pub fn clear(&mut self) {
        *self = Outbox::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::rc::Rc;

    fn bytes(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn push_past_cap_is_refused_and_queue_is_unchanged() {
        let mut outbox = Outbox::default();
        outbox.push(bytes(60, 1), 100).unwrap();
        let err = outbox.push(bytes(50, 2), 100).unwrap_err();
        assert_eq!(
            err,
            Overflow {
                queued: 60,
                frame: 50
            }
        );
        assert_eq!(outbox.queued_bytes(), 60);
    }

    #[test]
    fn frame_larger_than_cap_fits_an_empty_queue() {
        let mut outbox = Outbox::default();
        outbox.push(bytes(500, 1), 100).unwrap();
        assert_eq!(outbox.queued_bytes(), 500);
    }

    #[test]
    fn bytes_in_flight_count_against_the_cap_until_sent() {
        let mut outbox = Outbox::default();
        outbox.push(bytes(60, 1), 100).unwrap();
        assert_eq!(outbox.take_batch().count(), 1);
        // Taken but not reported sent: still queued, so the cap still applies.
        assert_eq!(outbox.queued_bytes(), 60);
        assert!(outbox.push(bytes(50, 2), 100).is_err());
        outbox.push(bytes(40, 3), 100).unwrap();
        outbox.sent(60);
        assert_eq!(outbox.queued_bytes(), 40);
        let next: Vec<SendBuf> = outbox.take_batch().collect();
        assert_eq!(&next[0][..], &bytes(40, 3)[..]);
        outbox.sent(40);
        assert!(outbox.is_empty());
    }

    #[test]
    fn batches_keep_the_order_frames_were_queued_in() {
        let mut outbox = Outbox::default();
        for i in 0..(MAX_IOVECS + 10) {
            let n = i as u32;
            outbox
                .push(Bytes::copy_from_slice(&n.to_le_bytes()), 1 << 20)
                .unwrap();
        }
        let index = |f: SendBuf| u32::from_le_bytes(f[..].try_into().unwrap()) as usize;
        let first: Vec<usize> = outbox.take_batch().map(index).collect();
        let second: Vec<usize> = outbox.take_batch().map(index).collect();
        assert_eq!(first, (0..MAX_IOVECS).collect::<Vec<_>>());
        assert_eq!(second, (MAX_IOVECS..MAX_IOVECS + 10).collect::<Vec<_>>());
    }

    #[test]
    fn shared_frame_is_moved_not_copied() {
        let frame = Rc::new(bytes(1000, 7));
        let (mut a, mut b) = (Outbox::default(), Outbox::default());
        a.push(Rc::clone(&frame), 1 << 20).unwrap();
        b.push(Rc::clone(&frame), 1 << 20).unwrap();
        let ta: Vec<SendBuf> = a.take_batch().collect();
        let tb: Vec<SendBuf> = b.take_batch().collect();
        assert_eq!(ta[0].as_ptr(), frame.as_ptr());
        assert_eq!(tb[0].as_ptr(), frame.as_ptr());
        assert_eq!(Rc::strong_count(&frame), 3);
    }

    #[test]
    fn drained_outbox_holds_no_memory() {
        let mut outbox = Outbox::default();
        outbox.push(bytes(10, 0), 100).unwrap();
        drop(outbox.take_batch());
        outbox.sent(10);
        assert_eq!(outbox.frames.capacity(), 0);
    }
}
