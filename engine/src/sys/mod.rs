//! The kernel boundary, and the only home of `unsafe` in ringcast. Private to the crate:
//! the public API re-exports only what users configure ([`Backend`], [`DriverConfig`],
//! [`socket::raise_fd_limit`], through `ringcast::server`), so no safe function outside the
//! crate can name a kernel operation, a descriptor or a token.
//!
//! `sys` turns kernel operations into [`Completion`]s. It knows file descriptors, tokens and
//! buffers, never frames, connections or WebSocket: nothing else in the crate is imported
//! here.
//!
//! - [`Driver`]: one API over two backends, io_uring ([`Backend::Uring`]) and epoll
//!   ([`Backend::Epoll`]), used by one worker thread. Operations are started with
//!   [`accept`](Driver::accept), [`recv`](Driver::recv), [`send`](Driver::send),
//!   [`connect`](Driver::connect), [`stop_recv`](Driver::stop_recv) and
//!   [`close`](Driver::close); [`submit_and_wait`](Driver::submit_and_wait) hands them to
//!   the kernel and waits, and [`next_completion`](Driver::next_completion) hands the
//!   results out one at a time, so the worker may start new operations while it handles
//!   each one.
//! - [`SocketFd`]: a socket the driver works on. It owns its descriptor, and only
//!   [`Driver::close`] closes it (after cancelling what runs on it), so an operation never
//!   outlives its socket and lands on a descriptor that reused the number.
//! - [`Token`]: what the worker packs into each operation (kind, slab key, generation) and
//!   gets back in its completion. The driver's own operations live in a separate half of
//!   the 64-bit `user_data` space that no `Token` can reach (see [`Token`]).
//! - [`RecvBuf`]: received bytes, lent by the driver; dropping it gives the buffer back.
//! - [`SendBuf`]: bytes to send (`Bytes`, or an `Rc<Bytes>` shared by one thread's queues),
//!   owned by the driver while their send is in flight.
//! - [`Waker`]: wakes a worker blocked in `submit_and_wait` from any thread.
//! - [`arena::Arena`]: write buffers in reused fixed-size chunks.
//! - [`socket`]: listeners, socket options, fd limit, CPU pinning.
//!
//! # Contract shared by both backends
//!
//! - Every operation ends with exactly one completion whose [`more`](Completion::more) is
//!   `false`. Multishot operations (accept, recv) produce any number of completions with
//!   `more == true` before it. A worker that wants to keep accepting or receiving starts the
//!   operation again after a final completion (see [`Completion::more`]).
//! - Stale completions are rejected by the generation in the [`Token`], not by the driver:
//!   after [`Driver::close`] or [`Driver::stop_recv`] each operation still open on that
//!   socket ends with one last completion (usually `-ECANCELED`, sometimes its real result
//!   when it raced the cancel). The worker compares the token's generation with its slab
//!   entry and drops completions of a connection that is gone.
//! - A `Driver` is `!Send`: it is made on the thread that uses it (io_uring's
//!   `SINGLE_ISSUER` requires this).
//!
//! # A worker's turn
//!
//! ```text
//! let (mut driver, fell_back) = Driver::new_or_fallback(backend, &DriverConfig::default())?;
//! loop {
//!     driver.submit_and_wait(timers.next_deadline())?;
//!     while let Some(completion) = driver.next_completion() {
//!         match completion.token.kind() {
//!             OpKind::Wake => {} // commands are taken every turn
//!             // Accept, Recv, Send...: look up the slab entry by key, drop the completion
//!             // if the generation differs, else handle it (and start new operations).
//!             _ => {}
//!         }
//!     }
//! }
//! ```
//!
//! The unit tests (`sys/tests.rs`) drive both backends over real loopback sockets.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod arena;
mod bufring;
mod epoll;
mod sendbuf;
pub mod socket;
#[cfg(test)]
mod tests;
mod uring;

pub use sendbuf::SendBuf;

use socket::syscall;

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

/// What an operation was, as carried in its [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpKind {
    /// Multishot accept on a listener; the completion carries the new socket.
    Accept = 1,
    /// Multishot receive; `result` is a byte count, with a [`RecvBuf`].
    Recv = 2,
    /// Vectored send; `result` is the byte count written.
    Send = 3,
    /// Outgoing connect; `result` is 0 on success.
    Connect = 4,
    /// A [`Waker`] fired. The driver re-arms it itself.
    Wake = 5,
}

impl OpKind {
    /// The largest kind byte: below [`DRIVER_BIT`]'s byte, so no token reaches the
    /// driver's half of the tag space.
    const LAST: u8 = OpKind::Wake as u8;

    fn from_u8(v: u8) -> Option<OpKind> {
        Some(match v {
            1 => OpKind::Accept,
            2 => OpKind::Recv,
            3 => OpKind::Send,
            4 => OpKind::Connect,
            5 => OpKind::Wake,
            _ => return None,
        })
    }
}

/// Bit 63 of `user_data`: set on the driver's own operations, clear on every [`Token`].
const DRIVER_BIT: u64 = 1 << 63;

const _: () = assert!(((OpKind::LAST as u64) << 56) & DRIVER_BIT == 0);

/// An operation's identity as the worker names it: its kind, a slab key and a 24-bit
/// generation, packed into io_uring's 64-bit `user_data` as bits 56..64 the kind,
/// 32..56 the generation, 0..32 the key.
///
/// The only constructor is [`Token::new`], whose kind byte is at most [`OpKind::LAST`]:
/// bit 63 of a token is always clear. The driver's own operations (the send and connect
/// slots of its in-flight table, the waker's poll, cancels) carry bit 63 set, so a token can
/// never be decoded as one of them, whatever key or generation it holds (tests:
/// `no_token_decodes_as_a_driver_operation`). There is no way to make a token from raw
/// bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    kind: OpKind,
    generation: u32,
    key: u32,
}

impl Token {
    /// The largest generation a token can carry; larger values wrap.
    pub const MAX_GENERATION: u32 = (1 << 24) - 1;

    /// The token of [`OpKind::Wake`] completions.
    pub const WAKE: Token = Token::new(OpKind::Wake, 0, 0);

    /// Packs a kind, a slab key and a generation (taken modulo 2^24).
    pub const fn new(kind: OpKind, key: u32, generation: u32) -> Token {
        Token {
            kind,
            generation: generation & Self::MAX_GENERATION,
            key,
        }
    }

    /// The operation kind.
    pub fn kind(self) -> OpKind {
        self.kind
    }

    /// The slab key.
    pub const fn key(self) -> u32 {
        self.key
    }

    /// The generation (24 bits).
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The packed form, as the kernel carries it: bit 63 clear.
    const fn user_data(self) -> u64 {
        ((self.kind as u64) << 56) | ((self.generation as u64) << 32) | self.key as u64
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Token({:?}, key {}, gen {})",
            self.kind, self.key, self.generation
        )
    }
}

/// The driver's own operations, in the half of the `user_data` space with bit 63 set:
/// bits 56..63 the tag, 0..32 a slot of the in-flight table where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    /// A send whose buffers sit in the in-flight table.
    Send(u32),
    /// A connect whose address sits in the in-flight table.
    Connect(u32),
    /// The poll of the waker's eventfd.
    Wake,
    /// A cancel request; its own completion is not reported.
    Cancel,
    /// A close; its completion is not reported.
    Close,
}

impl Internal {
    /// The packed form: bit 63 set.
    const fn user_data(self) -> u64 {
        let (tag, slot) = match self {
            Internal::Send(slot) => (0, slot),
            Internal::Connect(slot) => (1, slot),
            Internal::Wake => (2, 0),
            Internal::Cancel => (3, 0),
            Internal::Close => (4, 0),
        };
        DRIVER_BIT | ((tag as u64) << 56) | slot as u64
    }
}

/// Whose operation a completion's `user_data` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The worker's: handed out as a [`Completion`].
    Worker(Token),
    /// The driver's own: handled inside the driver.
    Driver(Internal),
    /// Neither (never submitted by this driver): dropped, its buffer given back.
    Unknown,
}

impl Owner {
    /// Splits the `user_data` space by bit 63, then checks the tag or kind byte.
    fn decode(raw: u64) -> Owner {
        let byte = (raw >> 56) as u8;
        let slot = raw as u32;
        if raw & DRIVER_BIT == 0 {
            return match OpKind::from_u8(byte) {
                Some(kind) => Owner::Worker(Token::new(kind, slot, (raw >> 32) as u32)),
                None => Owner::Unknown,
            };
        }
        Owner::Driver(match byte & 0x7f {
            0 => Internal::Send(slot),
            1 => Internal::Connect(slot),
            2 => Internal::Wake,
            3 => Internal::Cancel,
            4 => Internal::Close,
            _ => return Owner::Unknown,
        })
    }
}

/// A socket the [`Driver`] works on, owning its descriptor.
///
/// Made from an [`OwnedFd`], whose ownership it takes, and given up only to
/// [`Driver::close`], which cancels every operation still open on the socket before closing
/// it. Dropped any other way, it does *not* close the descriptor: operations the driver may
/// still run on it (a multishot receive, the rest of a short write) then go on acting on
/// the same socket, never on another descriptor that reused the number. That leaks the
/// descriptor, which is safe; the engine always closes through the driver.
#[derive(Debug)]
pub struct SocketFd(RawFd);

impl From<OwnedFd> for SocketFd {
    fn from(fd: OwnedFd) -> SocketFd {
        SocketFd(fd.into_raw_fd())
    }
}

impl SocketFd {
    /// A socket that names no descriptor, for connections without one (in-process tests
    /// and benches): every operation on it fails with `EBADF`.
    pub const fn detached() -> SocketFd {
        SocketFd(-1)
    }

    /// The descriptor, borrowed for as long as `self`; `None` when detached.
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: `self` owns the descriptor and keeps it open until `Driver::close`
        // consumes it, so it is open for the borrow; -1 (detached) is excluded.
        (self.0 >= 0).then(|| unsafe { BorrowedFd::borrow_raw(self.0) })
    }

    /// The descriptor's number, for the backends; valid while `self` lives.
    fn raw(&self) -> RawFd {
        self.0
    }
}

/// The result of one operation, or one shot of a multishot operation.
#[derive(Debug)]
pub struct Completion {
    /// The token the operation was started with ([`Token::WAKE`] for wake-ups).
    pub token: Token,
    /// Bytes transferred, the accepted descriptor's number, or 0 on success; `-errno` on
    /// failure (`-libc::ECANCELED` after a close or `stop_recv`, `-libc::ENOBUFS` when the
    /// receive buffers ran out).
    pub result: i32,
    /// `true` when the operation goes on and more completions will come; `false` on its last
    /// completion. For [`OpKind::Recv`] and [`OpKind::Accept`]: after a final completion,
    /// start it again to keep going, unless `result` is 0 (end of stream) or an error to act on
    /// (`-ENOBUFS` on recv means "buffers ran out, re-arm"; `-EMFILE`/`-ENFILE` on accept
    /// means "back off, then re-arm").
    pub more: bool,
    /// The received bytes of an [`OpKind::Recv`] completion with `result > 0`.
    pub buffer: Option<RecvBuf>,
    /// The accepted socket of an [`OpKind::Accept`] completion with `result >= 0`
    /// (non-blocking, close-on-exec, `TCP_NODELAY` set), owned by the caller from now on:
    /// dropping the completion closes it.
    pub socket: Option<OwnedFd>,
}

/// Received bytes lent by the driver: a slot of the provided-buffer ring (io_uring) or the
/// worker's scratch buffer (epoll). Read them, then drop the handle: that gives the memory back for the next receive. Holding many of them starves
/// the receive path (io_uring completes receives with `-ENOBUFS`).
pub struct RecvBuf {
    inner: RecvBufInner,
}

enum RecvBufInner {
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
    spare: Cell<Option<Box<[u8]>>>,
    size: usize,
}

impl Scratch {
    fn new(size: usize) -> Scratch {
        Scratch {
            spare: Cell::new(Some(vec![0; size].into_boxed_slice())),
            size,
        }
    }

    fn take(&self) -> Box<[u8]> {
        self.spare
            .take()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    fn put(&self, buf: Box<[u8]>) {
        self.spare.set(Some(buf));
    }
}

/// Wakes a worker blocked in [`Driver::submit_and_wait`] from any thread. Wake-ups coalesce:
/// a burst of `wake` calls before the worker runs costs one eventfd write.
#[derive(Clone)]
pub struct Waker {
    inner: Arc<WakerInner>,
}

struct WakerInner {
    fd: std::os::fd::OwnedFd,
    /// Set by the first `wake` after the worker last consumed a wake-up.
    pending: AtomicBool,
}

impl Waker {
    fn new() -> io::Result<Waker> {
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
    /// channel) is visible to the worker when it handles the [`OpKind::Wake`] completion.
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

    fn raw_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.inner.fd)
    }

    /// Called by the driver when it has consumed the eventfd: the next `wake` writes again.
    fn rearm(&self) {
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
}

/// One worker's kernel interface. See the [module docs](self) for the contract.
pub struct Driver {
    inner: Inner,
}

enum Inner {
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
    /// O(1), unlike [`stats`](Self::stats), so a worker may read it every turn.
    pub fn enobufs(&self) -> u64 {
        match &self.inner {
            Inner::Uring(u) => u.enobufs(),
            Inner::Epoll(_) => 0,
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
    /// `sendmsg` for several (`MSG_NOSIGNAL`). Takes at most [`MAX_SEND_FRAMES`] frames and
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
