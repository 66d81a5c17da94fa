//! [`Runs`]: small published frames written once, side by side, into a buffer per frame
//! form, so that the frames one subscriber gets in a row leave as one part of that buffer.
//!
//! Without it, every delivery of a small frame pushes a shared frame onto the
//! subscriber's queue and the flush copies the queued frames into one buffer per
//! connection ([`Outbox::take_batch`]): at full fan-out speed (45 frames of 66 bytes per
//! send) that push, the gathering copy and the per-frame reference counting were about a
//! third of the server's user time (docs/decisions.md, "Fan-out: runs of published
//! frames"). Here a publish writes its frame once per form into the worker's run buffer;
//! a subscriber that takes it only moves the end of its open run ([`Outbox::push_run`]),
//! and the flush turns each open run into one slice of the frozen buffer
//! ([`Core::settle_runs`](super::core::Core)): one reference count per subscriber and
//! send, not one per frame.
//!
//! A run is contiguous by construction: a subscriber extends its run only with the frame
//! written right after it. Anything else queued for it (a reply, a frame of another topic
//! written in between, a frame too large for a run) first closes its run by copying it
//! out ([`Core`]'s queueing paths), so the order on the wire is the order queued.
//!
//! Memory: a part keeps its arena chunk alive. A connection opens a run only when nothing
//! of it waits and no part of it is in flight, so it holds at most one part at a time,
//! and a part stays only while its socket is full: at most one chunk
//! ([`Arena::DEFAULT_CHUNK_SIZE`]) per connection beyond its counted queue.
//!
//! [`Outbox::take_batch`]: super::outbox::Outbox::take_batch
//! [`Outbox::push_run`]: super::outbox::Outbox::push_run
//! [`Core`]: super::core::Core

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::outbox::{COALESCE_BUF_MAX, COALESCE_FRAME_MAX};
use crate::proto::deflate::DeflateSettings;
use crate::proto::Role;
use crate::sys::arena::Arena;
use crate::sys::SendBuf;

/// Frames up to this many bytes go into runs; larger ones are queued as shared frames
/// (the same bound as the flush's gathering copy: above it a frame is its own iovec).
pub(crate) const RUN_FRAME_MAX: usize = COALESCE_FRAME_MAX;

/// The room a run buffer is taken with from the arena (half a chunk: pooled memory).
const RUN_BUF: usize = COALESCE_BUF_MAX;

/// Bytes `start..end` of the run buffer of form `form`, written since the last settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) form: u16,
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Run {
    /// Its bytes.
    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// One frame form's buffer: what was written since the last settle, then spare room.
#[derive(Debug)]
struct Form {
    role: Role,
    compression: Option<DeflateSettings>,
    buf: BytesMut,
}

/// The run buffers of one worker, and the connections with a run open.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    forms: Vec<Form>,
    /// Connections that opened a run since the last settle (a key may repeat if its
    /// connection was replaced; the settle finds no open run the second time).
    members: Vec<u32>,
    /// The frozen buffers of the last settle, by form (`None`: nothing was written in
    /// it; the vector kept for its allocation).
    frozen: Vec<Option<Rc<Bytes>>>,
}

impl Runs {
    /// Writes `frame` at the end of its form's buffer. `None` when the frame is larger
    /// than [`RUN_FRAME_MAX`] or the buffer has no room left before the next settle: the
    /// frame is then queued as a shared frame.
    pub(crate) fn append(
        &mut self,
        arena: &mut Arena,
        role: Role,
        compression: Option<DeflateSettings>,
        frame: &[u8],
    ) -> Option<Run> {
        if frame.len() > RUN_FRAME_MAX || self.forms.len() > u16::MAX as usize {
            return None;
        }
        let index = match self
            .forms
            .iter()
            .position(|f| f.role == role && f.compression == compression)
        {
            Some(index) => index,
            None => {
                self.forms.push(Form {
                    role,
                    compression,
                    buf: BytesMut::new(),
                });
                self.forms.len() - 1
            }
        };
        let form = &mut self.forms[index];
        if form.buf.capacity() - form.buf.len() < frame.len() {
            if !form.buf.is_empty() {
                // Open runs point into what is written; it may not move before the settle.
                return None;
            }
            form.buf = arena.buffer(RUN_BUF);
        }
        let start = form.buf.len() as u32;
        form.buf.extend_from_slice(frame);
        Some(Run {
            form: index as u16,
            start,
            end: form.buf.len() as u32,
        })
    }

    /// The bytes of `run`, written and not settled yet.
    pub(crate) fn bytes(&self, run: Run) -> &[u8] {
        self.forms
            .get(run.form as usize)
            .and_then(|form| form.buf.get(run.start as usize..run.end as usize))
            .unwrap_or_default()
    }

    /// `key` opened a run: the next settle closes it.
    pub(crate) fn joined(&mut self, key: u32) {
        self.members.push(key);
    }

    /// Whether a run was opened since the last settle.
    pub(crate) fn any_open(&self) -> bool {
        !self.members.is_empty()
    }

    /// Freezes what each form's buffer holds, for the runs being settled, and hands out
    /// the connections that opened one (give the list back with
    /// [`settled`](Runs::settled)). The buffers keep their spare room for the next runs.
    pub(crate) fn freeze(&mut self) -> Vec<u32> {
        self.frozen.clear();
        for form in &mut self.forms {
            let written = form.buf.split();
            self.frozen
                .push((!written.is_empty()).then(|| Rc::new(written.freeze())));
        }
        std::mem::take(&mut self.members)
    }

    /// The bytes of a run of the last [`freeze`](Runs::freeze), sharing the frozen buffer:
    /// the whole of it counted without atomics when the run is all of it (every
    /// subscriber of the one topic a turn published to), else a slice of it.
    pub(crate) fn part(&self, run: Run) -> Option<SendBuf> {
        let frozen = self.frozen.get(run.form as usize)?.as_ref()?;
        let range = run.start as usize..run.end as usize;
        if range == (0..frozen.len()) {
            return Some(SendBuf::Local(Rc::clone(frozen)));
        }
        (range.end <= frozen.len()).then(|| SendBuf::Shared(frozen.slice(range)))
    }

    /// Gives back the member list taken by [`freeze`](Runs::freeze), emptied, and lets
    /// the frozen buffers go (the parts hold them now).
    pub(crate) fn settled(&mut self, mut members: Vec<u32>) {
        members.clear();
        self.members = members;
        self.frozen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::prepared::PreparedMessage;
    use crate::proto::MessageType;
    use crate::server::core::{detached_core, detached_core_with, Core};
    use crate::server::handle::Publish;
    use crate::server::outbox::Backpressure;
    use crate::server::ServerConfig;
    use crate::sys::SendBuf;

    fn publish(core: &mut Core<()>, topic: &[u8], text: &str) -> usize {
        core.deliver(&Publish {
            topic: Bytes::copy_from_slice(topic),
            message: Arc::new(PreparedMessage::new(MessageType::Text, text.to_owned()).unwrap()),
            origin: None,
            include_origin: false,
        })
    }

    /// What the flush hands the driver for `key`: its next batch, after the settle.
    fn batch(core: &mut Core<()>, key: usize) -> Vec<SendBuf> {
        core.settle_runs();
        let mut out = Vec::new();
        core.conns[key].outbox.take_batch(&mut core.arena, &mut out);
        out
    }

    fn wire(batch: &[SendBuf]) -> Vec<u8> {
        batch.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// A text frame as the server sends it.
    fn text(s: &str) -> Vec<u8> {
        let mut frame = vec![0x81, s.len() as u8];
        frame.extend_from_slice(s.as_bytes());
        frame
    }

    fn texts(all: &[&str]) -> Vec<u8> {
        all.iter().flat_map(|s| text(s)).collect()
    }

    /// Completes the send of `batch`, taken from `key`.
    fn sent(core: &mut Core<()>, key: usize, batch: &[SendBuf]) {
        core.conns[key].outbox.sent(wire(batch).len(), usize::MAX);
    }

    #[test]
    fn publishes_in_a_row_leave_as_one_shared_part_per_subscriber() {
        let mut core = detached_core(1 << 20);
        let keys: Vec<usize> = (0..3).map(|_| core.insert_detached(None)).collect();
        for &key in &keys {
            core.subscribe(key, b"room").expect("under the limit");
        }
        for m in ["a", "b", "c", "d"] {
            assert_eq!(publish(&mut core, b"room", m), 3);
        }
        let batches: Vec<Vec<SendBuf>> = keys.iter().map(|&k| batch(&mut core, k)).collect();
        for b in &batches {
            assert_eq!(b.len(), 1, "one buffer per send");
            assert_eq!(wire(b), texts(&["a", "b", "c", "d"]));
            assert_eq!(b[0].as_ptr(), batches[0][0].as_ptr(), "shared, not copied");
            assert!(
                matches!(b[0], SendBuf::Local(_)),
                "all of the buffer: counted without atomics"
            );
        }
    }

    #[test]
    fn a_reply_between_publishes_keeps_its_place() {
        let mut core = detached_core(1 << 20);
        let (x, y) = core.subscribed_pair(b"room");
        publish(&mut core, b"room", "1");
        core.queue_data(x, Bytes::from(text("reply")))
            .expect("open");
        publish(&mut core, b"room", "2");
        assert_eq!(wire(&batch(&mut core, x)), texts(&["1", "reply", "2"]));
        assert_eq!(wire(&batch(&mut core, y)), texts(&["1", "2"]));
    }

    #[test]
    fn frames_of_another_topic_in_between_keep_the_order() {
        let mut core = detached_core(1 << 20);
        let (both, only_a) = (core.insert_detached(None), core.insert_detached(None));
        for topic in [&b"a"[..], b"b"] {
            core.subscribe(both, topic).expect("under the limit");
        }
        core.subscribe(only_a, b"a").expect("under the limit");
        for (topic, m) in [(&b"a"[..], "a1"), (b"b", "b1"), (b"a", "a2"), (b"b", "b2")] {
            publish(&mut core, topic, m);
        }
        let all = batch(&mut core, both);
        assert_eq!(wire(&all), texts(&["a1", "b1", "a2", "b2"]));
        assert_eq!(all.len(), 1, "the frames lie side by side: one part");
        assert_eq!(wire(&batch(&mut core, only_a)), texts(&["a1", "a2"]));
    }

    #[test]
    fn a_compressed_and_a_plain_subscriber_each_get_their_own_form_whole() {
        use crate::proto::deflate::DeflateSettings;
        let mut core = detached_core(1 << 20);
        let plain = core.insert_detached(None);
        let deflate = core.insert_detached(Some(DeflateSettings::default()));
        for key in [plain, deflate] {
            core.subscribe(key, b"room").expect("under the limit");
        }
        for m in ["x", "y"] {
            publish(&mut core, b"room", m);
        }
        assert_eq!(wire(&batch(&mut core, plain)), texts(&["x", "y"]));
        let compressed = batch(&mut core, deflate);
        assert_eq!(compressed.len(), 1, "its frames lie side by side too");
        let frames = wire(&compressed);
        assert_eq!(frames[0], 0xc1, "final text frame with RSV1: compressed");
        assert_ne!(frames, texts(&["x", "y"]));
    }

    #[test]
    fn a_run_past_the_cap_is_cut_like_queued_frames_would_be() {
        let cap = 3 * text("m0").len();
        let config = ServerConfig {
            max_queued_bytes: cap,
            backpressure: Backpressure::Drop,
            ..ServerConfig::default()
        };
        let mut core = detached_core_with(config);
        let key = core.insert_detached(None);
        core.subscribe(key, b"room").expect("under the limit");
        let delivered: usize = (0..5)
            .map(|i| publish(&mut core, b"room", &format!("m{i}")))
            .sum();
        assert_eq!(delivered, 3, "three fit under the cap, two are dropped");
        assert_eq!(core.conns[key].outbox.queued_bytes(), cap);
        assert_eq!(wire(&batch(&mut core, key)), texts(&["m0", "m1", "m2"]));

        // With the default rule the slow consumer is closed after what fitted.
        let mut core = detached_core(cap);
        let key = core.insert_detached(None);
        core.subscribe(key, b"room").expect("under the limit");
        for i in 0..4 {
            publish(&mut core, b"room", &format!("m{i}"));
        }
        assert!(!core.conns[key].is_open(), "closed as a slow consumer");
        let out = wire(&batch(&mut core, key));
        assert!(out.starts_with(&texts(&["m0", "m1", "m2"])));
        assert_eq!(
            out[texts(&["m0", "m1", "m2"]).len()],
            0x88,
            "then its close frame"
        );
    }

    #[test]
    fn a_connection_holds_one_part_at_a_time() {
        let mut core = detached_core(1 << 20);
        let key = core.insert_detached(None);
        core.subscribe(key, b"room").expect("under the limit");
        publish(&mut core, b"room", "1");
        core.settle_runs();
        // A part waits: the next publish is queued as a frame of its own, not a new run.
        publish(&mut core, b"room", "2");
        assert!(!core.runs.any_open());
        let first = batch(&mut core, key);
        assert_eq!(wire(&first), texts(&["1", "2"]));
        // The part is in flight: still no run.
        publish(&mut core, b"room", "3");
        assert!(!core.runs.any_open());
        sent(&mut core, key, &first);
        let second = batch(&mut core, key);
        assert_eq!(wire(&second), texts(&["3"]));
        sent(&mut core, key, &second);
        publish(&mut core, b"room", "4");
        assert!(
            core.runs.any_open(),
            "all sent: the next publish opens a run"
        );
        assert_eq!(wire(&batch(&mut core, key)), texts(&["4"]));
    }

    #[test]
    fn frames_of_one_form_lie_side_by_side_and_forms_apart() {
        let mut arena = Arena::default();
        let mut runs = Runs::default();
        let deflate = Some(DeflateSettings::default());
        let a = runs
            .append(&mut arena, Role::Server, None, b"\x81\x01a")
            .unwrap();
        let z = runs
            .append(&mut arena, Role::Server, deflate, b"\xc1\x02zz")
            .unwrap();
        let b = runs
            .append(&mut arena, Role::Server, None, b"\x81\x01b")
            .unwrap();
        assert_eq!((a.form, a.end), (b.form, b.start), "b follows a");
        assert_ne!(z.form, a.form);
        assert_eq!(runs.bytes(b), b"\x81\x01b");
        runs.joined(7);
        let members = runs.freeze();
        assert_eq!(members, [7]);
        let whole = Run { end: b.end, ..a };
        assert_eq!(&runs.part(whole).unwrap()[..], b"\x81\x01a\x81\x01b");
        assert_eq!(&runs.part(b).unwrap()[..], b"\x81\x01b");
        assert_eq!(&runs.part(z).unwrap()[..], b"\xc1\x02zz");
        runs.settled(members);
        assert!(!runs.any_open());
        // After a settle the offsets start again in the spare room.
        let c = runs.append(&mut arena, Role::Server, None, b"c").unwrap();
        assert_eq!((c.start, c.end), (0, 1));
    }

    #[test]
    fn large_frames_and_a_full_buffer_are_refused_until_the_settle() {
        let mut arena = Arena::default();
        let mut runs = Runs::default();
        let big = vec![0u8; RUN_FRAME_MAX + 1];
        assert_eq!(runs.append(&mut arena, Role::Server, None, &big), None);
        let frame = vec![1u8; RUN_FRAME_MAX];
        let fits = RUN_BUF / RUN_FRAME_MAX;
        for _ in 0..fits {
            assert!(runs
                .append(&mut arena, Role::Server, None, &frame)
                .is_some());
        }
        assert_eq!(runs.append(&mut arena, Role::Server, None, &frame), None);
        let members = runs.freeze();
        runs.settled(members);
        assert!(
            runs.append(&mut arena, Role::Server, None, &frame)
                .is_some(),
            "a settled buffer is replaced"
        );
    }
}
