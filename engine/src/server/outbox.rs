//! [`Outbox`]: the frames queued for one connection, shared not copied, with a cap.
//!
//! Frames are `Bytes`: a broadcast frame is one allocation referenced by every outbox
//! that queues it. A flush hands the kernel up to [`MAX_IOVECS`] frames in one vectored
//! send; a partial send leaves an offset into the first frame, so the next flush resumes
//! exactly there. The cap bounds what a slow reader can make the server hold.

use std::collections::VecDeque;

use bytes::Bytes;

/// The most frames one send takes: what the driver takes in one send (Linux's UIO_MAXIOV
/// is 1024; 64 covers a loop turn).
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
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already sent.
    offset: usize,
    /// Unsent bytes in all frames.
    queued: usize,
}

impl Outbox {
    /// Queue `frame` unless it would take the queue past `cap` bytes. An empty queue
    /// always takes one frame, however big, so a message larger than the cap can still
    /// be sent to a reader that keeps up.
    pub fn push(&mut self, frame: Bytes, cap: usize) -> Result<(), Overflow> {
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
    pub fn push_unbounded(&mut self, frame: Bytes) {
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

    /// Unsent bytes.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The next batch to send: up to [`MAX_IOVECS`] frames, the first one cut where the
    /// last send stopped. The `Bytes` are clones (a refcount each) for the in-flight table.
    pub fn batch(&self, out: &mut Vec<Bytes>) {
        out.clear();
        for (i, frame) in self.frames.iter().take(MAX_IOVECS).enumerate() {
            if i == 0 && self.offset > 0 {
                out.push(frame.slice(self.offset..));
            } else {
                out.push(frame.clone());
            }
        }
    }

    /// `sent` bytes left: drop finished frames and remember where the next one starts.
    pub fn advance(&mut self, mut sent: usize) {
        self.queued = self.queued.saturating_sub(sent);
        while sent > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if sent >= left {
                sent -= left;
                self.offset = 0;
                self.frames.pop_front();
            } else {
                self.offset += sent;
                sent = 0;
            }
        }
        if self.frames.is_empty() {
            // Give the deque's memory back: an idle connection holds no write buffer.
            self.frames = VecDeque::new();
            self.offset = 0;
            self.queued = 0;
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
    fn partial_send_resumes_inside_the_first_frame() {
        let mut outbox = Outbox::default();
        outbox.push(Bytes::from_static(b"abcdef"), 1 << 20).unwrap();
        outbox.push(Bytes::from_static(b"gh"), 1 << 20).unwrap();
        outbox.advance(4);
        let mut batch = Vec::new();
        outbox.batch(&mut batch);
        assert_eq!(
            batch,
            vec![Bytes::from_static(b"ef"), Bytes::from_static(b"gh")]
        );
        outbox.advance(3);
        outbox.batch(&mut batch);
        assert_eq!(batch, vec![Bytes::from_static(b"h")]);
        outbox.advance(1);
        assert!(outbox.is_empty());
    }

    #[test]
    fn shared_frame_is_not_copied_per_outbox() {
        let frame = bytes(1000, 7);
        let (mut a, mut b) = (Outbox::default(), Outbox::default());
        a.push(frame.clone(), 1 << 20).unwrap();
        b.push(frame.clone(), 1 << 20).unwrap();
        let (mut ba, mut bb) = (Vec::new(), Vec::new());
        a.batch(&mut ba);
        b.batch(&mut bb);
        assert_eq!(ba[0].as_ptr(), frame.as_ptr());
        assert_eq!(bb[0].as_ptr(), frame.as_ptr());
    }

    #[test]
    fn batch_takes_at_most_max_iovecs_frames() {
        let mut outbox = Outbox::default();
        for _ in 0..(MAX_IOVECS + 10) {
            outbox.push(bytes(1, 0), 1 << 20).unwrap();
        }
        let mut batch = Vec::new();
        outbox.batch(&mut batch);
        assert_eq!(batch.len(), MAX_IOVECS);
    }

    #[test]
    fn drained_outbox_holds_no_memory() {
        let mut outbox = Outbox::default();
        outbox.push(bytes(10, 0), 100).unwrap();
        outbox.advance(10);
        assert_eq!(outbox.frames.capacity(), 0);
    }
}
