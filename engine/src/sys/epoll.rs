//! The epoll backend: readiness turned into the same [`Completion`]s as io_uring's.
//!
//! Level-triggered, chosen so that one read per readable socket per turn is fair and
//! correct: data left in a socket is reported again by the next `epoll_wait`, and a burst on
//! one connection cannot starve the others. An fd is in the epoll set only while an
//! operation waits on it (accept or recv: `EPOLLIN`; a blocked send or a connect in
//! progress: `EPOLLOUT`), so a hung-up socket nobody waits on cannot spin the loop.
//!
//! - accept: on readiness, `accept4` in a loop (at most 64 per turn) until `EAGAIN`, one
//!   completion per fd; an error (`EMFILE`...) ends the operation and leaves the listener
//!   out of the set until the worker calls `accept` again.
//! - recv: on readiness, one `recv` into the worker's single scratch buffer, lent as a
//!   [`RecvBuf`]; an idle connection holds no buffer.
//! - send: `sendmsg` with `MSG_NOSIGNAL | MSG_DONTWAIT` at once; what the socket does not take
//!   (`EAGAIN`, or a short write) waits in the fd's entry and goes out on `EPOLLOUT`, so the
//!   completion reports every byte, as on io_uring, or an error. The kernel copies during
//!   each call, so no buffer outlives the operation on this backend, and
//!   `DriverConfig::zero_copy_min` is ignored: this backend always copies.
//! - connect: non-blocking `connect`, then `SO_ERROR` on `EPOLLOUT`.
//! - waker: the eventfd is in the set for the driver's lifetime.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use super::socket::{self, syscall, SockAddr};
#[cfg(test)]
use super::DriverStats;
use super::{
    Completion, DriverConfig, RecvBuf, RecvBufInner, Scratch, SendBuf, SocketFd, Token, Waker,
    MAX_SEND_FRAMES,
};

/// Epoll data of the waker's eventfd; every other entry carries its fd.
const WAKE_KEY: u64 = u64::MAX;

/// Accepts per listener per turn: level-triggered epoll reports the rest next turn.
const ACCEPTS_PER_TURN: usize = 64;

/// A send the socket has not taken all of yet.
struct PendingSend {
    token: Token,
    /// What is left to write, the first frame cut where the last write stopped.
    frames: Vec<SendBuf>,
    /// Bytes written so far.
    done: usize,
}

#[derive(Default)]
struct FdState {
    accept: Option<Token>,
    recv: Option<Token>,
    connect: Option<Token>,
    send: Option<PendingSend>,
    /// Events registered in the epoll set (0: not in the set).
    registered: u32,
}

impl FdState {
    fn wanted(&self) -> u32 {
        let mut ev = 0;
        if self.accept.is_some() || self.recv.is_some() {
            ev |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if self.send.is_some() || self.connect.is_some() {
            ev |= libc::EPOLLOUT as u32;
        }
        ev
    }
}

pub(crate) struct Epoll {
    epfd: OwnedFd,
    waker: Waker,
    scratch: Rc<Scratch>,
    fds: Vec<FdState>,
    events: Vec<libc::epoll_event>,
    n_events: usize,
    ev_cursor: usize,
    pending: VecDeque<Completion>,
    iov: Vec<libc::iovec>,
    spare_frames: Vec<Vec<SendBuf>>,
    sends_in_flight: usize,
}

/// Drops the first `n` bytes of `frames`: whole frames, then the front of the next.
fn drop_written(frames: &mut Vec<SendBuf>, mut n: usize) {
    let whole = frames.iter().take_while(|f| {
        let fits = f.len() <= n;
        if fits {
            n -= f.len();
        }
        fits
    });
    let whole = whole.count();
    frames.drain(..whole);
    if n > 0 {
        if let Some(first) = frames.first_mut() {
            first.advance(n);
        }
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Epoll {
    pub(crate) fn new(config: &DriverConfig) -> io::Result<Epoll> {
        // SAFETY: plain syscall with a constant flag.
        let fd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: `epoll_create1` just returned this fd and nothing else owns it.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let waker = Waker::new()?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_KEY,
        };
        // SAFETY: both fds are open and owned by this driver; `ev` is valid for the call.
        unsafe {
            syscall!(epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                waker.raw_fd(),
                &mut ev
            ))
        }?;
        Ok(Epoll {
            epfd,
            waker,
            scratch: Rc::new(Scratch::new(config.epoll_scratch_size.max(1))),
            fds: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; config.epoll_events.max(1)],
            n_events: 0,
            ev_cursor: 0,
            pending: VecDeque::new(),
            iov: Vec::with_capacity(MAX_SEND_FRAMES),
            spare_frames: Vec::new(),
            sends_in_flight: 0,
        })
    }

    pub(crate) fn features(&self) -> String {
        format!(
            "epoll, level-triggered; one {} B receive buffer per worker; sendmsg with MSG_NOSIGNAL",
            self.scratch.size
        )
    }

    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> DriverStats {
        let ops = self
            .fds
            .iter()
            .map(|s| {
                usize::from(s.accept.is_some())
                    + usize::from(s.recv.is_some())
                    + usize::from(s.connect.is_some())
                    + usize::from(s.send.is_some())
            })
            .sum();
        DriverStats {
            sends_in_flight: self.sends_in_flight,
            ops_in_flight: ops,
            enobufs: 0,
            // Zero copy is io_uring's only: `DriverConfig::zero_copy_min` is ignored here.
            ..DriverStats::default()
        }
    }

    fn state(&mut self, fd: RawFd) -> Option<&mut FdState> {
        let i = usize::try_from(fd).ok()?;
        if i >= self.fds.len() {
            if i >= self.fds.capacity() && i >= socket::EARLY_ROOM {
                // Room for every descriptor the process may open, not another doubling.
                let room = socket::table_room(usize::MAX).max(i + 1);
                self.fds.reserve_exact(room - self.fds.len());
            }
            self.fds.resize_with(i + 1, FdState::default);
        }
        self.fds.get_mut(i)
    }

    fn done(&mut self, token: Token, result: i32) {
        self.pending.push_back(Completion {
            token,
            result,
            more: false,
            buffer: None,
            socket: None,
        });
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `ev` is valid for the call; a bad fd is reported as an error.
        unsafe { syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev)) }.map(drop)
    }

    /// Brings the epoll set in line with what waits on `fd`. On failure every operation
    /// waiting on `fd` ends with the error.
    fn update(&mut self, fd: RawFd) {
        let Some(st) = self.state(fd) else { return };
        let (want, have) = (st.wanted(), st.registered);
        if want == have {
            return;
        }
        let res = if want == 0 {
            // ENOENT/EBADF: the fd was closed behind our back, which removed it already.
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0);
            Ok(())
        } else if have == 0 {
            self.ctl(libc::EPOLL_CTL_ADD, fd, want).or_else(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    self.ctl(libc::EPOLL_CTL_MOD, fd, want)
                } else {
                    Err(e)
                }
            })
        } else {
            self.ctl(libc::EPOLL_CTL_MOD, fd, want).or_else(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    self.ctl(libc::EPOLL_CTL_ADD, fd, want)
                } else {
                    Err(e)
                }
            })
        };
        match res {
            Ok(()) => {
                if let Some(st) = self.state(fd) {
                    st.registered = want;
                }
            }
            Err(e) => {
                if let Some(st) = self.state(fd) {
                    st.registered = 0;
                }
                self.fail_all(fd, -errno(&e));
            }
        }
    }

    /// Ends every operation waiting on `fd` with `result`.
    fn fail_all(&mut self, fd: RawFd, result: i32) {
        let Some(st) = self.state(fd) else { return };
        let tokens = [st.accept.take(), st.recv.take(), st.connect.take()];
        let send = st.send.take();
        for t in tokens.into_iter().flatten() {
            self.done(t, result);
        }
        if let Some(send) = send {
            self.sends_in_flight -= 1;
            self.recycle_frames(send.frames);
            self.done(send.token, result);
        }
    }

    fn recycle_frames(&mut self, mut frames: Vec<SendBuf>) {
        frames.clear();
        if self.spare_frames.len() < 64 {
            self.spare_frames.push(frames);
        }
    }

    pub(crate) fn accept(&mut self, listener: RawFd, token: Token) {
        match self.state(listener) {
            Some(st) => st.accept = Some(token),
            None => return self.done(token, -libc::EBADF),
        }
        self.update(listener);
    }

    pub(crate) fn recv(&mut self, fd: RawFd, token: Token) {
        match self.state(fd) {
            Some(st) => st.recv = Some(token),
            None => return self.done(token, -libc::EBADF),
        }
        self.update(fd);
    }

    /// One `sendmsg` of all `frames`: bytes written, or the error.
    fn write(&mut self, fd: RawFd, frames: &[SendBuf]) -> io::Result<usize> {
        self.iov.clear();
        self.iov.extend(frames.iter().map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        }));
        // SAFETY: plain old data; all-zero is an empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = self.iov.as_mut_ptr();
        msg.msg_iovlen = self.iov.len();
        // SAFETY: `msg` points at `self.iov`, whose entries point into `frames`; all of them
        // outlive this synchronous call, which only reads them.
        let n = unsafe { syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)) }?;
        Ok(n as usize)
    }

    pub(crate) fn send<I>(&mut self, fd: RawFd, token: Token, frames: I) -> usize
    where
        I: IntoIterator,
        I::Item: Into<SendBuf>,
    {
        let mut batch = self.spare_frames.pop().unwrap_or_default();
        batch.extend(frames.into_iter().take(MAX_SEND_FRAMES).map(Into::into));
        let taken = batch.len();
        if self.state(fd).is_some_and(|st| st.send.is_some()) {
            // One send per connection at a time keeps bytes in order.
            self.recycle_frames(batch);
            self.done(token, -libc::EALREADY);
            return taken;
        }
        let send = PendingSend {
            token,
            frames: batch,
            done: 0,
        };
        if let Some(waiting) = self.write_some(fd, send) {
            match self.state(fd) {
                Some(st) => st.send = Some(waiting),
                None => {
                    self.recycle_frames(waiting.frames);
                    self.done(token, -libc::EBADF);
                    return taken;
                }
            }
            self.sends_in_flight += 1;
            self.update(fd);
        }
        taken
    }

    /// Writes what the socket takes now. Returns the send when it must wait for `EPOLLOUT`;
    /// otherwise it has completed (every byte written, or an error).
    fn write_some(&mut self, fd: RawFd, mut send: PendingSend) -> Option<PendingSend> {
        loop {
            match self.write(fd, &send.frames) {
                Ok(n) => {
                    send.done += n;
                    drop_written(&mut send.frames, n);
                    if send.frames.is_empty() {
                        self.recycle_frames(send.frames);
                        self.done(send.token, send.done as i32);
                        return None;
                    }
                    // A short write: the socket is full; the next call says EAGAIN.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(send),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.recycle_frames(send.frames);
                    self.done(send.token, -errno(&e));
                    return None;
                }
            }
        }
    }

    pub(crate) fn connect(&mut self, fd: RawFd, addr: SocketAddr, token: Token) {
        let sa = SockAddr::from_std(&addr);
        // SAFETY: `sa` outlives the call and `len` is its length.
        match unsafe { syscall!(connect(fd, sa.as_ptr(), sa.len())) } {
            Ok(_) => self.done(token, 0),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                match self.state(fd) {
                    Some(st) => st.connect = Some(token),
                    None => return self.done(token, -libc::EBADF),
                }
                self.update(fd);
            }
            Err(e) => self.done(token, -errno(&e)),
        }
    }

    pub(crate) fn stop_recv(&mut self, fd: RawFd, token: Token) {
        match self.state(fd) {
            Some(st) if st.recv == Some(token) => st.recv = None,
            _ => return,
        }
        self.update(fd);
        self.done(token, -libc::ECANCELED);
    }

    pub(crate) fn close(&mut self, fd: SocketFd) {
        let raw = fd.raw();
        self.fail_all(raw, -libc::ECANCELED);
        self.update(raw);
        if let Some(st) = self.state(raw) {
            *st = FdState::default();
        }
        // SAFETY: `fd` owned the descriptor and is consumed here; nothing waits on it any
        // more (its state was just cleared), so closing it cannot redirect an operation.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    }

    pub(crate) fn submit(&mut self) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.pending.is_empty() || self.ev_cursor < self.n_events {
            return Ok(());
        }
        let ms = match timeout {
            None => -1,
            // Round up so a 0.5 ms deadline does not become a busy poll.
            Some(d) => i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        // SAFETY: `events` is valid for `len` entries of writes.
        let res = unsafe {
            syscall!(epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms
            ))
        };
        self.ev_cursor = 0;
        self.n_events = match res {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                self.n_events = 0;
                return Err(e);
            }
        };
        Ok(())
    }

    pub(crate) fn next_completion(&mut self) -> Option<Completion> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(c);
            }
            if self.ev_cursor >= self.n_events {
                return None;
            }
            let ev = self.events[self.ev_cursor];
            self.ev_cursor += 1;
            self.handle(ev.u64, ev.events);
        }
    }

    fn handle(&mut self, key: u64, revents: u32) {
        if key == WAKE_KEY {
            let mut counter = 0u64;
            // SAFETY: `counter` is 8 writable bytes; the eventfd is non-blocking.
            let _ =
                unsafe { libc::read(self.waker.raw_fd(), (&mut counter as *mut u64).cast(), 8) };
            self.waker.rearm();
            self.pending.push_back(Completion {
                token: Token::WAKE,
                result: 0,
                more: true,
                buffer: None,
                socket: None,
            });
            return;
        }
        let fd = key as RawFd;
        let in_ready = revents
            & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
            != 0;
        let out_ready = revents & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        let Some(st) = self.state(fd) else { return };
        let (accept, recv, connect, sending) = (st.accept, st.recv, st.connect, st.send.is_some());
        if in_ready {
            if let Some(token) = accept {
                self.accept_ready(fd, token);
            } else if let Some(token) = recv {
                self.recv_ready(fd, token);
            }
        }
        if out_ready {
            if let Some(token) = connect {
                // SAFETY: a connect of this driver waits on `fd`: its owner gives it up
                // only through `close`, which clears that state first, so it is open.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                let res = match socket::take_error(borrowed) {
                    Ok(0) => 0,
                    Ok(err) => -err,
                    Err(e) => -errno(&e),
                };
                if let Some(st) = self.state(fd) {
                    st.connect = None;
                }
                self.done(token, res);
            }
            if sending {
                self.send_ready(fd);
            }
        }
        self.update(fd);
    }

    fn accept_ready(&mut self, fd: RawFd, token: Token) {
        for _ in 0..ACCEPTS_PER_TURN {
            // SAFETY: no address is asked for; a bad fd is an error.
            let res = unsafe {
                syscall!(accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
                ))
            };
            match res {
                Ok(new_fd) => {
                    // SAFETY: `accept4` has just made this descriptor; nothing else in the
                    // process knows its number, so it is ours to own.
                    let socket = unsafe { OwnedFd::from_raw_fd(new_fd) };
                    // As on io_uring: frames are batched, Nagle only adds latency.
                    let _ = socket::set_nodelay(socket.as_fd());
                    self.pending.push_back(Completion {
                        token,
                        result: new_fd,
                        more: true,
                        buffer: None,
                        socket: Some(socket),
                    })
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    _ => {
                        // EMFILE and friends: stop, so the worker backs off before re-arming.
                        if let Some(st) = self.state(fd) {
                            st.accept = None;
                        }
                        self.done(token, -errno(&e));
                        break;
                    }
                },
            }
        }
    }

    fn recv_ready(&mut self, fd: RawFd, token: Token) {
        let mut buf = self.scratch.take();
        // SAFETY: `buf` is valid for `len` bytes of writes for the call.
        let res = unsafe {
            syscall!(recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT
            ))
        };
        match res {
            Ok(n) if n > 0 => self.pending.push_back(Completion {
                token,
                result: n as i32,
                more: true,
                buffer: Some(RecvBuf {
                    inner: RecvBufInner::Scratch {
                        home: Rc::clone(&self.scratch),
                        buf: Some(buf),
                        len: n as usize,
                    },
                }),
                socket: None,
            }),
            Ok(_) => {
                self.scratch.put(buf);
                if let Some(st) = self.state(fd) {
                    st.recv = None;
                }
                self.done(token, 0);
            }
            Err(e) => {
                self.scratch.put(buf);
                if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                    return;
                }
                if let Some(st) = self.state(fd) {
                    st.recv = None;
                }
                self.done(token, -errno(&e));
            }
        }
    }

    fn send_ready(&mut self, fd: RawFd) {
        let Some(send) = self.state(fd).and_then(|st| st.send.take()) else {
            return;
        };
        match self.write_some(fd, send) {
            Some(waiting) => {
                if let Some(st) = self.state(fd) {
                    st.send = Some(waiting);
                }
            }
            None => self.sends_in_flight -= 1,
        }
    }
}
