//! [`SendBuf`]: bytes on their way to a socket, owned by a send until its completion.

use std::ops::Deref;
use std::rc::Rc;

use bytes::{Buf, Bytes};

/// Bytes to send: the unit a send moves into the driver's in-flight table and drops when
/// the kernel is done with them.
///
/// A broadcast frame sits in many queues of one worker at once. As [`Bytes`] every queue
/// would count it with an atomic increment and decrement; [`SendBuf::Local`] counts it
/// with plain ones, since a worker's queues and driver never leave its thread.
#[derive(Debug, Clone)]
pub enum SendBuf {
    /// Bytes of their own, or shared across threads.
    Shared(Bytes),
    /// Shared by the queues of one thread, counted without atomics.
    Local(Rc<Bytes>),
}

impl SendBuf {
    /// Drops the first `n` bytes (at most all of them). A local buffer becomes a shared
    /// slice of the same memory: its other holders still need the whole.
    pub fn advance(&mut self, n: usize) {
        match self {
            SendBuf::Shared(bytes) => bytes.advance(n.min(bytes.len())),
            SendBuf::Local(rc) => *self = SendBuf::Shared(rc.slice(n.min(rc.len())..)),
        }
    }
}

impl Deref for SendBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SendBuf::Shared(bytes) => bytes,
            SendBuf::Local(rc) => rc,
        }
    }
}

impl From<Bytes> for SendBuf {
    fn from(bytes: Bytes) -> SendBuf {
        SendBuf::Shared(bytes)
    }
}

impl From<Rc<Bytes>> for SendBuf {
    fn from(rc: Rc<Bytes>) -> SendBuf {
        SendBuf::Local(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_a_local_buffer_leaves_its_other_holders_whole() {
        let frame = Rc::new(Bytes::from_static(b"abcdef"));
        let mut cut = SendBuf::Local(Rc::clone(&frame));
        cut.advance(4);
        assert_eq!(&cut[..], b"ef");
        assert_eq!(&frame[..], b"abcdef");
        cut.advance(10);
        assert!(cut.is_empty());
    }

    #[test]
    fn advancing_a_shared_buffer_moves_its_start() {
        let mut buf = SendBuf::from(Bytes::from_static(b"abc"));
        buf.advance(1);
        assert_eq!(&buf[..], b"bc");
    }

    #[test]
    fn local_buffers_share_one_frame_without_atomics() {
        let frame = Rc::new(Bytes::from_static(b"\x81\x02hi"));
        let queued: Vec<SendBuf> = (0..3).map(|_| SendBuf::Local(Rc::clone(&frame))).collect();
        assert_eq!(&queued[2][..], b"\x81\x02hi");
        assert_eq!(Rc::strong_count(&frame), 4);
        let own: SendBuf = Bytes::from_static(b"\x8a\x00").into();
        assert_eq!(own.len(), 2);
    }

    #[test]
    fn a_send_buffer_is_no_bigger_than_bytes() {
        assert_eq!(std::mem::size_of::<SendBuf>(), std::mem::size_of::<Bytes>());
    }
}
