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

use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd};

pub mod arena;
mod bufring;
mod driver;
mod epoll;
mod recvbuf;
mod sendbuf;
pub mod socket;
#[cfg(test)]
mod tests;
mod token;
mod uring;
mod waker;

pub use driver::*;
pub use recvbuf::*;
pub use sendbuf::SendBuf;
pub use token::*;
pub use waker::*;

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
