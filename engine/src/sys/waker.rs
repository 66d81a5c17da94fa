//! [`Waker`]: wakes a worker blocked in `submit_and_wait` from any thread.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::socket::syscall;

/// Wakes a worker blocked in [`Driver::submit_and_wait`](super::Driver::submit_and_wait) from any thread. Wake-ups coalesce:
/// a burst of `wake` calls before the worker runs costs one eventfd write.
#[derive(Clone)]
pub struct Waker {
    pub(super) inner: Arc<WakerInner>,
}

pub(super) struct WakerInner {
    pub(super) fd: std::os::fd::OwnedFd,
    /// Set by the first `wake` after the worker last consumed a wake-up.
    pub(super) pending: AtomicBool,
}

impl Waker {
    pub(super) fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall with constant flags.
        let fd = unsafe { syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) }?;
        // SAFETY: `eventfd` just returned this fd and nothing else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Waker {
            inner: Arc::new(WakerInner {
                fd,
                pending: AtomicBool::new(false),
            }),
        })
    }

    /// Wakes the worker. Whatever the caller published before this call (for example into a
    /// channel) is visible to the worker when it handles the [`OpKind::Wake`](super::OpKind::Wake) completion.
    pub fn wake(&self) {
        if self.inner.pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.inner.fd);
        // SAFETY: `one` is 8 readable bytes on this stack frame; the eventfd is owned by
        // `self.inner` and open while it lives. EAGAIN (counter saturated) already means
        // "a wake-up is pending", so the result is ignored.
        let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.inner.fd)
    }

    /// Called by the driver when it has consumed the eventfd: the next `wake` writes again.
    pub(super) fn rearm(&self) {
        // A swap, not a store: reading the `true` of every `wake` since the last re-arm makes
        // what those callers published before waking visible to this thread.
        self.inner.pending.swap(false, Ordering::SeqCst);
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker").field("fd", &self.raw_fd()).finish()
    }
}
