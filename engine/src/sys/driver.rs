//! [`Driver`]: one API over the two backends, its [`Backend`] and [`DriverConfig`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

/// Which kernel interface the engine's workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring: multishot accept and recv, provided-buffer ring, vectored sendmsg.
    Uring,
    /// epoll, level-triggered: readiness turned into the same completions.
    Epoll,
}

impl Backend {
    /// Every backend, for tests that run once per backend.
    pub const ALL: [Backend; 2] = [Backend::Uring, Backend::Epoll];

    /// The backend named by `RINGCAST_BACKEND` (`uring` or `epoll`), if set to one of them.
    pub fn from_env() -> Option<Backend> {
        std::env::var("RINGCAST_BACKEND")
            .ok()
            .and_then(|v| v.parse().ok())
    }

    /// The lowercase name, as `RINGCAST_BACKEND` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "epoll" => Ok(Backend::Epoll),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown backend {other:?}, expected uring or epoll"),
            )),
        }
    }
}

/// Sizes of one driver. Defaults suit a worker with thousands of connections.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Submission queue entries (io_uring). Default 1024: one turn may start a send on
    /// hundreds of connections; the queue is flushed early when it fills.
    pub ring_entries: u32,
    /// Completion queue entries (io_uring), at least `ring_entries`. Default 8192: multishot
    /// receives can post many completions per submission.
    pub cq_entries: u32,
    /// Buffers in the provided-buffer ring (io_uring), a power of two up to 32768.
    /// Default 256.
    pub recv_buffers: u16,
    /// Size of each provided buffer (io_uring; epoll uses `epoll_scratch_size`). Default
    /// 4 KiB: most WebSocket messages are small, and a large one arrives in several.
    pub recv_buffer_size: u32,
    /// Size of the epoll backend's single receive buffer. Default 64 KiB: one read per
    /// readable socket per turn, so larger reads cost fewer syscalls.
    pub epoll_scratch_size: usize,
    /// Readiness events fetched per `epoll_wait`. Default 256.
    pub epoll_events: usize,
    /// Send without copying (io_uring's `IORING_OP_SEND_ZC` for one buffer,
    /// `IORING_OP_SENDMSG_ZC` for several) every send that has a frame of at least this
    /// many bytes. Default `None`: every send copies.
    ///
    /// The largest frame decides, not the send's total: the copy saved is that frame's,
    /// while a send made only of small frames (a batch of chat lines) would pin a page per
    /// frame and use up the socket buffer's fragment slots for little gain. Every round of
    /// such a send goes zero-copy, the rest of a short write included. The frames stay in
    /// the driver until the kernel's notification says it let go of their pages (after
    /// the peer acknowledged the bytes, or the connection was torn down), which may be
    /// well after the send's completion; the worker may queue the next send on the
    /// connection meanwhile.
    ///
    /// Zero copy pays only for large frames, and the crossover depends on the machine and
    /// the route: over loopback the kernel copies the pages anyway when it delivers them to
    /// the local socket. The driver asks the kernel to report this
    /// (`IORING_SEND_ZC_REPORT_USAGE`) and counts both outcomes, which the engine shows as
    /// [`Stats::zero_copy_sent`](crate::server::Stats::zero_copy_sent) and
    /// [`Stats::zero_copy_copied`](crate::server::Stats::zero_copy_copied). Used only where the ring supports both
    /// opcodes and usage reports (kernel 6.2); ignored by the epoll backend, which keeps
    /// copying.
    pub zero_copy_min: Option<usize>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            ring_entries: 1024,
            cq_entries: 8192,
            recv_buffers: 256,
            recv_buffer_size: 4096,
            epoll_scratch_size: 64 * 1024,
            epoll_events: 256,
            zero_copy_min: None,
        }
    }
}

/// Most frames one [`Driver::send`] takes; the rest wait for the next send. Linux's
/// `UIO_MAXIOV`: a fan-out at full speed queues a hundred small frames per connection
/// between two sends, and each send saved is a TCP segment the kernel does not build.
pub const MAX_SEND_FRAMES: usize = 1024;

/// Counters of one driver, for the tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Sends whose buffers the kernel may still read (the in-flight table).
    pub sends_in_flight: usize,
    /// Operations submitted whose final completion has not come back yet (io_uring), or
    /// registrations waiting for readiness (epoll).
    pub ops_in_flight: usize,
    /// Receive completions that found the buffer ring empty (`-ENOBUFS`).
    pub enobufs: u64,
    /// Zero-copy SQEs submitted (one per round of a zero-copy send; io_uring only).
    pub zc_submitted: u64,
    /// Zero-copy SQEs whose notification has come back, or that the kernel ended without
    /// one (a failure before any byte was pinned). Equal to `zc_submitted` when the kernel
    /// holds no page of any send.
    pub zc_notified: u64,
    /// Finished zero-copy sends, by what the kernel reported.
    pub zero_copy: ZeroCopyCounts,
}

/// Zero-copy sends of one driver (see [`DriverConfig::zero_copy_min`]), counted once per
/// send when its last notification comes back; always zero on epoll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroCopyCounts {
    /// Sends whose every notification said the kernel sent from the frames' own pages.
    pub sent: u64,
    /// Sends for which the kernel copied the bytes after all
    /// (`IORING_NOTIF_USAGE_ZC_COPIED` in a notification: loopback, a device without
    /// scatter-gather, a send that failed before any byte went).
    pub copied: u64,
}

/// One worker's kernel interface. See the [module docs](self) for the contract.
pub struct Driver {
    pub(super) inner: Inner,
}

pub(super) enum Inner {
    // Boxed: the ring is large and the enum is moved around at set-up.
    Uring(Box<uring::Uring>),
    Epoll(epoll::Epoll),
}

macro_rules! dispatch {
    ($self:ident, $d:ident => $e:expr) => {
        match &mut $self.inner {
            Inner::Uring($d) => $e,
            Inner::Epoll($d) => $e,
        }
    };
}

impl Driver {
    /// A driver on `backend`. An io_uring set-up failure (kernel too old, `io_uring_disabled`
    /// sysctl, seccomp returning `EPERM`/`ENOSYS`) is returned as is; see
    /// [`Driver::new_or_fallback`].
    pub fn new(backend: Backend, config: &DriverConfig) -> io::Result<Driver> {
        let inner = match backend {
            Backend::Uring => Inner::Uring(Box::new(uring::Uring::new(config)?)),
            Backend::Epoll => Inner::Epoll(epoll::Epoll::new(config)?),
        };
        Ok(Driver { inner })
    }

    /// A driver on `backend`, or on epoll if io_uring cannot be set up. The second value is
    /// the reason for the fallback, for the caller to log once.
    pub fn new_or_fallback(
        backend: Backend,
        config: &DriverConfig,
    ) -> io::Result<(Driver, Option<io::Error>)> {
        match Driver::new(backend, config) {
            Ok(d) => Ok((d, None)),
            Err(e) if backend == Backend::Uring => {
                Ok((Driver::new(Backend::Epoll, config)?, Some(e)))
            }
            Err(e) => Err(e),
        }
    }

    /// The backend this driver runs on.
    pub fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Uring(_) => Backend::Uring,
            Inner::Epoll(_) => Backend::Epoll,
        }
    }

    /// One line describing the backend and the kernel features in use, to log once.
    pub fn features(&self) -> String {
        match &self.inner {
            Inner::Uring(u) => u.features(),
            Inner::Epoll(e) => e.features(),
        }
    }

    /// A handle that wakes this driver from another thread.
    pub fn waker(&self) -> Waker {
        match &self.inner {
            Inner::Uring(u) => u.waker(),
            Inner::Epoll(e) => e.waker(),
        }
    }

    /// Counters: in-flight sends and operations, `ENOBUFS` seen (for the tests: the worker
    /// reads [`enobufs`](Self::enobufs) only).
    #[cfg(test)]
    pub fn stats(&self) -> DriverStats {
        match &self.inner {
            Inner::Uring(u) => u.stats(),
            Inner::Epoll(e) => e.stats(),
        }
    }

    /// Receives that found the buffer ring empty (`ENOBUFS`) so far; always 0 on epoll.
    /// O(1), unlike `stats` (for the tests), so a worker may read it every turn.
    pub fn enobufs(&self) -> u64 {
        match &self.inner {
            Inner::Uring(u) => u.enobufs(),
            Inner::Epoll(_) => 0,
        }
    }

    /// Zero-copy sends so far ([`DriverConfig::zero_copy_min`]); always zero on epoll. O(1),
    /// for the worker's counters.
    pub fn zero_copy(&self) -> ZeroCopyCounts {
        match &self.inner {
            Inner::Uring(u) => u.zero_copy(),
            Inner::Epoll(_) => ZeroCopyCounts::default(),
        }
    }

    /// Starts accepting on `listener` (multishot). Each accepted connection is one
    /// completion carrying the new socket ([`Completion::socket`]). An error (`-EMFILE`,
    /// `-ENFILE`, ...) ends the operation (`more == false`) so it cannot spin: back off,
    /// then call `accept` again.
    pub fn accept(&mut self, listener: &SocketFd, token: Token) {
        dispatch!(self, d => d.accept(listener.raw(), token))
    }

    /// Starts receiving on `fd` (multishot). Each completion with `result > 0` carries a
    /// [`RecvBuf`]; `result == 0` is end of stream.
    pub fn recv(&mut self, fd: &SocketFd, token: Token) {
        dispatch!(self, d => d.recv(fd.raw(), token))
    }

    /// Ends the receive started on `fd` with `token`: it finishes with one final completion
    /// (`-ECANCELED`, or its real result when it raced the stop), and bytes that arrive
    /// meanwhile wait in the socket, so TCP flow control slows the peer down. Start it
    /// again with [`recv`](Self::recv) once its final completion has come.
    pub fn stop_recv(&mut self, fd: &SocketFd, token: Token) {
        dispatch!(self, d => d.stop_recv(fd.raw(), token))
    }

    /// Sends the concatenation of `frames` on `fd`: one `send` for one frame, one vectored
    /// `sendmsg` for several (`MSG_NOSIGNAL`); on io_uring their zero-copy forms when a
    /// frame is at least [`DriverConfig::zero_copy_min`] bytes, in which case the frames
    /// are dropped only once the kernel has notified that it let go of their pages (after
    /// the completion). Takes at most [`MAX_SEND_FRAMES`] frames and
    /// returns how many it took. The driver owns the frames until the completion and resumes
    /// a short write itself once the socket has room, so the completion's `result` is every
    /// byte offered or `-errno` (a failure after part went out is still a failure).
    /// Have at most one send in flight per connection, so bytes stay in order.
    pub fn send<I>(&mut self, fd: &SocketFd, token: Token, frames: I) -> usize
    where
        I: IntoIterator,
        I::Item: Into<SendBuf>,
    {
        dispatch!(self, d => d.send(fd.raw(), token, frames))
    }

    /// Connects `fd` (from [`socket::tcp_socket`]) to `addr`; the completion's `result` is 0
    /// once connected or `-errno`.
    pub fn connect(&mut self, fd: &SocketFd, addr: SocketAddr, token: Token) {
        dispatch!(self, d => d.connect(fd.raw(), addr, token))
    }

    /// Cancels every operation on `fd`, then closes it. Each cancelled operation ends with
    /// one final completion (see the module docs); the close itself is not reported.
    /// Buffers of a send still in flight stay in the driver's in-flight table until the
    /// kernel lets go of them, and a short write is not resumed after this call.
    pub fn close(&mut self, fd: SocketFd) {
        if fd.raw() < 0 {
            return; // detached: nothing to close
        }
        dispatch!(self, d => d.close(fd))
    }

    /// Hands started operations to the kernel and waits until at least one completion is
    /// ready, the timeout passes, or a [`Waker`] fires. Returns at once when completions are
    /// already waiting. `None` waits without a deadline.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        dispatch!(self, d => d.submit_and_wait(timeout))
    }

    /// Hands started operations to the kernel without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        dispatch!(self, d => d.submit())
    }

    /// The next ready completion, if any. The driver may be used (new operations started)
    /// between calls.
    pub fn next_completion(&mut self) -> Option<Completion> {
        dispatch!(self, d => d.next_completion())
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("backend", &self.backend())
            .finish()
    }
}
