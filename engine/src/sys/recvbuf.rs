//! [`RecvBuf`]: received bytes lent by the driver, given back when dropped.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use super::*;

/// Received bytes lent by the driver: a slot of the provided-buffer ring (io_uring) or the
/// worker's scratch buffer (epoll). Read them, then drop the handle: that gives the memory back for the next receive. Holding many of them starves
/// the receive path (io_uring completes receives with `-ENOBUFS`).
pub struct RecvBuf {
    pub(super) inner: RecvBufInner,
}

pub(super) enum RecvBufInner {
    Ring {
        ring: Rc<bufring::BufRing>,
        bid: u16,
        len: usize,
    },
    Scratch {
        home: Rc<Scratch>,
        buf: Option<Box<[u8]>>,
        len: usize,
    },
}

impl RecvBuf {
    /// The received bytes, writable (for unmasking in place).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.inner {
            RecvBufInner::Ring { ring, bid, len } => {
                let len = *len;
                // SAFETY: this handle holds the lease on `bid`: the kernel reported it for
                // this completion only, and it goes back to the ring only in our `Drop`;
                // `&mut self` makes this the only reference.
                unsafe { &mut ring.buffer_mut(*bid)[..len] }
            }
            RecvBufInner::Scratch { buf, len, .. } => match buf {
                Some(b) => &mut b[..*len],
                None => &mut [],
            },
        }
    }

    /// Number of bytes received.
    pub fn len(&self) -> usize {
        match &self.inner {
            RecvBufInner::Ring { len, .. } | RecvBufInner::Scratch { len, .. } => *len,
        }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        match &mut self.inner {
            RecvBufInner::Ring { ring, bid, .. } => ring.recycle(*bid),
            RecvBufInner::Scratch { home, buf, .. } => {
                if let Some(b) = buf.take() {
                    home.put(b);
                }
            }
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf").field("len", &self.len()).finish()
    }
}

/// The epoll backend's receive buffer: one per worker, lent out in a [`RecvBuf`] and put
/// back on drop. If the worker keeps one, the next receive allocates a replacement.
pub(crate) struct Scratch {
    pub(super) spare: Cell<Option<Box<[u8]>>>,
    pub(super) size: usize,
}

impl Scratch {
    pub(super) fn new(size: usize) -> Scratch {
        Scratch {
            spare: Cell::new(Some(vec![0; size].into_boxed_slice())),
            size,
        }
    }

    pub(super) fn take(&self) -> Box<[u8]> {
        self.spare
            .take()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    pub(super) fn put(&self, buf: Box<[u8]>) {
        self.spare.set(Some(buf));
    }
}
