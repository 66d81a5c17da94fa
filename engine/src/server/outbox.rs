//! [`Outbox`]: the frames queued for one connection, shared not copied, with a cap.
//!
//! Frames are [`SendBuf`]s: a broadcast frame is one allocation referenced by every outbox
//! of the worker that queues it, counted without atomics. A flush *moves* up to
//! [`MAX_IOVECS`] buffers out of the queue into the driver's in-flight table, which sends
//! all of their bytes (the driver resumes short writes itself) and drops them when the
//! kernel is done with them; so a frame costs one reference count on the way in and one on
//! the way out. Bytes handed to the driver still count against the cap until their
//! completion reports them sent. The cap bounds what a slow reader can make the server
//! hold.
//!
//! One exception to "never a copy": when a batch holds several *small* frames in a row
//! (a broadcast burst: 60 frames of 66 bytes is typical at full fan-out speed), they are
//! copied into one arena buffer, up to [`COALESCE_BUF_MAX`] bytes. The kernel copies each
//! iovec of a send separately, and per piece that costs more than the bytes: measured on
//! the chat server at full fan-out, `_copy_from_iter` alone was 17 % of the server's CPU
//! with one iovec per frame, and copying in user space first cut the server's CPU per
//! delivery by 14 % (docs/decisions.md). Published small frames mostly skip both the push
//! and this copy: a connection's run of them lies in the worker's run buffer and joins the
//! queue as one slice of it ([`push_run`](Outbox::push_run), `runs.rs`).

use std::collections::VecDeque;

use super::runs::Run;
use crate::sys::arena::Arena;
use crate::sys::SendBuf;

/// Frames up to this many bytes are copied together with their neighbours when a batch is
/// taken; larger ones are moved as they are.
pub(crate) const COALESCE_FRAME_MAX: usize = 512;

/// The largest buffer small frames are copied into: half an arena chunk, so it is carved
/// from a pooled chunk and costs no allocation.
pub(crate) const COALESCE_BUF_MAX: usize = Arena::DEFAULT_CHUNK_SIZE / 2;

/// The most frames one send takes: what the driver takes in one send (Linux's `UIO_MAXIOV`).
pub(crate) const MAX_IOVECS: usize = crate::sys::MAX_SEND_FRAMES;

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

/// A frame did not fit under the cap: nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// The queue of one connection, and its cap rules: a data frame is refused past the cap
/// ([`push`](Outbox::push)), a ping or pong once the queue is at it
/// ([`push_control`](Outbox::push_control)), and a close or handshake answer never
/// ([`push_unbounded`](Outbox::push_unbounded)).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Frames not yet handed to the driver.
    frames: VecDeque<SendBuf>,
    /// Bytes not yet reported sent: those in `frames` and those in a send in flight.
    queued: usize,
    /// A data frame took the queue over half its cap: the connection is owed `on_drain`
    /// when a send brings it back to half or less.
    over_half: bool,
    /// Published frames queued after those in `frames`, still in the worker's run buffer
    /// (`runs.rs`): counted in `queued`, moved to `frames` as one part when settled.
    run: Option<Run>,
    /// A part of a run buffer waits here or is in the send in flight: no run opens until
    /// it is sent, so a queue keeps at most one arena chunk alive beyond its bytes.
    part_pinned: bool,
}

impl Outbox {
    /// Whether a data frame of `len` bytes fits under `cap`. An empty queue always takes
    /// one frame, however big, so a message larger than the cap can still be sent to a
    /// reader that keeps up.
    #[inline]
    fn has_room(&self, len: usize, cap: usize) -> bool {
        self.queued == 0 || self.queued + len <= cap
    }

    /// Queues data `frame` unless it would take the queue past `cap` bytes (an empty queue
    /// takes one frame of any size). `seal` turns the frame into its wire form (TLS
    /// records) and runs only once the frame is known to fit: a record sealed and then
    /// refused would break the record sequence. Returns the bytes queued.
    #[inline]
    pub(crate) fn push(
        &mut self,
        frame: SendBuf,
        cap: usize,
        seal: impl FnOnce(SendBuf) -> SendBuf,
    ) -> Result<usize, Overflow> {
        if !self.has_room(frame.len(), cap) {
            return Err(Overflow);
        }
        let frame = seal(frame);
        let len = frame.len();
        self.push_unbounded(frame);
        if self.queued > cap / 2 {
            self.over_half = true;
        }
        Ok(len)
    }

    /// Queues a ping or pong unless the queue is already at `cap`: a peer that pings
    /// without reading must not grow its queue without bound (RFC 6455 section 5.5.3
    /// lets a pong answer only the latest ping). Returns the bytes queued.
    #[inline]
    pub(crate) fn push_control(
        &mut self,
        frame: SendBuf,
        cap: usize,
        seal: impl FnOnce(SendBuf) -> SendBuf,
    ) -> Result<usize, Overflow> {
        if self.queued >= cap {
            return Err(Overflow);
        }
        let frame = seal(frame);
        let len = frame.len();
        self.push_unbounded(frame);
        Ok(len)
    }

    /// Queues published frame `run` (`runs.rs`) by extending this queue's open run when
    /// `run` was written right after it, or by opening one when nothing waits and no part
    /// is in flight. Returns whether a run was opened (the worker must settle it), or
    /// `None` when the frame is not for a run here (the caller closes the open run and
    /// queues the frame as a frame, with the cap's verdict).
    pub(crate) fn push_run(&mut self, run: Run, cap: usize) -> Option<bool> {
        let len = run.len();
        let room = self.has_room(len, cap);
        let opened = match &mut self.run {
            Some(open) if open.form == run.form && open.end == run.start => {
                if !room {
                    return None;
                }
                open.end = run.end;
                false
            }
            None if self.frames.is_empty() && !self.part_pinned => {
                self.run = Some(run);
                true
            }
            _ => return None,
        };
        self.queued += len;
        if self.queued > cap / 2 {
            self.over_half = true;
        }
        Some(opened)
    }

    /// Takes the open run, to settle it or to copy it out before another frame.
    pub(crate) fn take_run(&mut self) -> Option<Run> {
        self.run.take()
    }

    /// Queues the bytes of a run taken with [`take_run`](Outbox::take_run), counted
    /// already: a `part` of the run buffer, or a copy of them.
    pub(crate) fn push_settled(&mut self, frame: SendBuf, part: bool) {
        self.part_pinned |= part;
        self.enqueue(frame);
    }

    /// Appends `frame` to the deque, whose bytes are counted already.
    fn enqueue(&mut self, frame: SendBuf) {
        if self.frames.is_empty() {
            // An idle connection's deque has no allocation; this is its first frame.
            self.frames.reserve_exact(4);
        }
        self.frames.push_back(frame);
    }

    /// Queue `frame` whatever the cap (control frames: a close must get out).
    pub(crate) fn push_unbounded(&mut self, frame: impl Into<SendBuf>) {
        let frame = frame.into();
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.enqueue(frame);
    }

    /// Bytes not yet reported sent (queued here or in a send in flight).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether nothing waits, here or in a send in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Takes the next batch out of the queue into `out` (cleared first): up to
    /// [`MAX_IOVECS`] buffers, oldest first, to be moved into one send. Two or more small
    /// frames in a row become one buffer copied into `arena`; any other frame is moved
    /// as it is. The bytes stay counted until [`sent`](Outbox::sent). An open run must
    /// have been settled first.
    pub(crate) fn take_batch(&mut self, arena: &mut Arena, out: &mut Vec<SendBuf>) {
        debug_assert!(self.run.is_none(), "runs are settled before a flush");
        out.clear();
        if self.frames.len() == 1 {
            // The common case (one reply, one broadcast frame, one run): nothing to gather.
            out.extend(self.frames.pop_front());
            return;
        }
        while out.len() < MAX_IOVECS {
            let (count, bytes) = self.small_run();
            if count >= 2 {
                let mut buf = arena.buffer(bytes);
                for frame in self.frames.drain(..count) {
                    buf.extend_from_slice(&frame);
                }
                out.push(buf.freeze().into());
            } else if let Some(frame) = self.frames.pop_front() {
                out.push(frame);
            } else {
                break;
            }
        }
    }

    /// How many small frames lead the queue, and their bytes, within one coalesced buffer.
    fn small_run(&self) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0);
        for frame in &self.frames {
            if frame.len() > COALESCE_FRAME_MAX || bytes + frame.len() > COALESCE_BUF_MAX {
                break;
            }
            count += 1;
            bytes += frame.len();
        }
        (count, bytes)
    }

    /// A send of `bytes` bytes (all of a batch taken earlier) completed. Returns whether
    /// this brought a queue that had gone over half of `cap` back to half or less (the
    /// connection is owed `on_drain`).
    pub(crate) fn sent(&mut self, bytes: usize, cap: usize) -> bool {
        // One send in flight at a time: with nothing left here, the part went with it.
        self.part_pinned &= !self.frames.is_empty();
        self.queued = self.queued.saturating_sub(bytes);
        if self.queued == 0 {
            // Give the deque's memory back: an idle connection holds no write buffer.
            self.frames = VecDeque::new();
        }
        let drained = self.over_half && self.queued <= cap / 2;
        if drained {
            self.over_half = false;
        }
        drained
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

    fn plain(frame: SendBuf) -> SendBuf {
        frame
    }

    fn take(outbox: &mut Outbox) -> Vec<SendBuf> {
        let mut out = Vec::new();
        outbox.take_batch(&mut Arena::default(), &mut out);
        out
    }

    #[test]
    fn push_past_cap_is_refused_and_queue_is_unchanged() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(60, 1)), 100, plain)
            .unwrap();
        let err = outbox
            .push(SendBuf::from(bytes(50, 2)), 100, plain)
            .unwrap_err();
        assert_eq!(err, Overflow);
        assert_eq!(outbox.queued_bytes(), 60);
    }

    #[test]
    fn a_queue_over_half_its_cap_reports_its_drain_once() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(40, 1)), 100, plain)
            .unwrap();
        assert!(!outbox.sent(40, 100), "never over half: no drain owed");
        outbox
            .push(SendBuf::from(bytes(60, 1)), 100, plain)
            .unwrap();
        outbox
            .push(SendBuf::from(bytes(30, 2)), 100, plain)
            .unwrap();
        assert!(!outbox.sent(30, 100), "60 left: still over half");
        assert!(outbox.sent(10, 100), "50 left: back to half");
        assert!(!outbox.sent(50, 100), "owed once");
    }

    #[test]
    fn control_frames_stop_at_the_cap_and_closes_never_do() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(90, 1)), 100, plain)
            .unwrap();
        assert_eq!(
            outbox.push_control(SendBuf::from(bytes(20, 2)), 100, plain),
            Ok(20)
        );
        assert_eq!(
            outbox.push_control(SendBuf::from(bytes(2, 3)), 100, plain),
            Err(Overflow)
        );
        outbox.push_unbounded(bytes(4, 8));
        assert_eq!(outbox.queued_bytes(), 114);
    }

    #[test]
    fn the_frame_is_sealed_only_once_it_fits() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(60, 1)), 100, plain)
            .unwrap();
        let mut sealed = 0;
        let mut seal = |frame: SendBuf| {
            sealed += 1;
            // A TLS record is larger than its plaintext.
            SendBuf::from(bytes(frame.len() + 22, 0))
        };
        assert_eq!(
            outbox.push(SendBuf::from(bytes(50, 2)), 100, &mut seal),
            Err(Overflow)
        );
        assert_eq!(
            outbox.push(SendBuf::from(bytes(40, 2)), 100, &mut seal),
            Ok(62)
        );
        assert_eq!(sealed, 1);
        assert_eq!(outbox.queued_bytes(), 122);
    }

    #[test]
    fn frame_larger_than_cap_fits_an_empty_queue() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(500, 1)), 100, plain)
            .unwrap();
        assert_eq!(outbox.queued_bytes(), 500);
    }

    #[test]
    fn bytes_in_flight_count_against_the_cap_until_sent() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(60, 1)), 100, plain)
            .unwrap();
        assert_eq!(take(&mut outbox).len(), 1);
        // Taken but not reported sent: still queued, so the cap still applies.
        assert_eq!(outbox.queued_bytes(), 60);
        assert!(outbox
            .push(SendBuf::from(bytes(50, 2)), 100, plain)
            .is_err());
        outbox
            .push(SendBuf::from(bytes(40, 3)), 100, plain)
            .unwrap();
        outbox.sent(60, usize::MAX);
        assert_eq!(outbox.queued_bytes(), 40);
        let next = take(&mut outbox);
        assert_eq!(&next[0][..], &bytes(40, 3)[..]);
        outbox.sent(40, usize::MAX);
        assert!(outbox.is_empty());
    }

    #[test]
    fn large_frames_keep_their_order_and_a_batch_its_iovec_limit() {
        let mut outbox = Outbox::default();
        let frame = |i: usize| {
            let mut f = vec![0u8; COALESCE_FRAME_MAX + 1];
            f[..4].copy_from_slice(&(i as u32).to_le_bytes());
            Bytes::from(f)
        };
        for i in 0..(MAX_IOVECS + 10) {
            outbox
                .push(SendBuf::from(frame(i)), usize::MAX, plain)
                .unwrap();
        }
        let index = |f: &SendBuf| u32::from_le_bytes(f[..4].try_into().unwrap()) as usize;
        let first: Vec<usize> = take(&mut outbox).iter().map(index).collect();
        let second: Vec<usize> = take(&mut outbox).iter().map(index).collect();
        assert_eq!(first, (0..MAX_IOVECS).collect::<Vec<_>>());
        assert_eq!(second, (MAX_IOVECS..MAX_IOVECS + 10).collect::<Vec<_>>());
    }

    #[test]
    fn small_frames_in_a_row_become_one_buffer_in_order() {
        let mut outbox = Outbox::default();
        let big = Rc::new(bytes(COALESCE_FRAME_MAX + 1, 9));
        let mut expected = Vec::new();
        for i in 0..3u8 {
            outbox
                .push(SendBuf::from(bytes(10, i)), usize::MAX, plain)
                .unwrap();
            expected.extend_from_slice(&[i; 10]);
        }
        outbox
            .push(SendBuf::from(Rc::clone(&big)), usize::MAX, plain)
            .unwrap();
        outbox
            .push(SendBuf::from(bytes(5, 7)), usize::MAX, plain)
            .unwrap();
        outbox
            .push(SendBuf::from(Rc::clone(&big)), usize::MAX, plain)
            .unwrap();
        let batch = take(&mut outbox);
        let lens: Vec<usize> = batch.iter().map(|b| b.len()).collect();
        assert_eq!(
            lens,
            [30, COALESCE_FRAME_MAX + 1, 5, COALESCE_FRAME_MAX + 1]
        );
        assert_eq!(&batch[0][..], &expected[..]);
        // Large frames and a lone small one are moved, not copied.
        assert_eq!(batch[1].as_ptr(), big.as_ptr());
        assert_eq!(batch[3].as_ptr(), big.as_ptr());
        assert_eq!(&batch[2][..], &[7; 5]);
        assert_eq!(outbox.queued_bytes(), 35 + 2 * (COALESCE_FRAME_MAX + 1));
    }

    #[test]
    fn a_coalesced_buffer_stays_within_its_bound() {
        let mut outbox = Outbox::default();
        let n = 3 * COALESCE_BUF_MAX / 100;
        let mut expected = Vec::new();
        for i in 0..n {
            outbox
                .push(SendBuf::from(bytes(100, i as u8)), usize::MAX, plain)
                .unwrap();
            expected.extend_from_slice(&[i as u8; 100]);
        }
        let batch = take(&mut outbox);
        assert!(batch.iter().all(|b| b.len() <= COALESCE_BUF_MAX));
        assert_eq!(batch.len(), n.div_ceil(COALESCE_BUF_MAX / 100));
        let joined: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(joined, expected);
    }

    #[test]
    fn shared_frame_is_moved_not_copied() {
        let frame = Rc::new(bytes(1000, 7));
        let (mut a, mut b) = (Outbox::default(), Outbox::default());
        a.push(SendBuf::from(Rc::clone(&frame)), 1 << 20, plain)
            .unwrap();
        b.push(SendBuf::from(Rc::clone(&frame)), 1 << 20, plain)
            .unwrap();
        let ta = take(&mut a);
        let tb = take(&mut b);
        assert_eq!(ta[0].as_ptr(), frame.as_ptr());
        assert_eq!(tb[0].as_ptr(), frame.as_ptr());
        assert_eq!(Rc::strong_count(&frame), 3);
    }

    #[test]
    fn drained_outbox_holds_no_memory() {
        let mut outbox = Outbox::default();
        outbox
            .push(SendBuf::from(bytes(10, 0)), 100, plain)
            .unwrap();
        drop(take(&mut outbox));
        outbox.sent(10, usize::MAX);
        assert_eq!(outbox.frames.capacity(), 0);
    }
}
