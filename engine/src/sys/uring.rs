//! The io_uring backend: ring set-up with probed flags, SQE building, submit and wait, and the
//! in-flight table that owns every buffer the kernel may still read.
//!
//! Set-up tries `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | SUBMIT_ALL` and falls back a
//! step at a time to no flags; it requires kernel 6.0 (multishot receive) and the opcodes it
//! uses (checked with a probe). Operations:
//!
//! - accept: `IORING_OP_ACCEPT` multishot (5.19), accepted sockets non-blocking;
//! - recv: `IORING_OP_RECV` multishot (6.0) with buffers from the [`BufRing`] (5.19);
//! - send: `IORING_OP_SEND` for one frame, `IORING_OP_SENDMSG` with one iovec per frame
//!   for several, `MSG_NOSIGNAL`, short writes resumed by the driver;
//! - zero-copy send (when [`DriverConfig::zero_copy_min`] is set and a frame of the send is
//!   at least that large): `IORING_OP_SEND_ZC` (6.0) for one frame, `IORING_OP_SENDMSG_ZC`
//!   (6.1) for several, with `IORING_SEND_ZC_REPORT_USAGE` (6.2); each round posts its
//!   result (flagged `F_MORE`), then a notification (`F_NOTIF`) once the kernel has let go
//!   of the pages, whose bit 31 (`IORING_NOTIF_USAGE_ZC_COPIED`) says whether it copied
//!   after all. Registered buffers are not used: frames are ordinary heap memory (shared
//!   `Bytes`), which would have to be copied into a registered region first;
//! - connect: `IORING_OP_CONNECT`; close: `IORING_OP_CLOSE` hard-linked after one
//!   `IORING_OP_ASYNC_CANCEL` by `user_data` per request in flight on the fd (its receive
//!   or accept, its send, its connect: the driver keeps them by fd). A cancel by fd would
//!   walk every armed request of the ring (measured: closing 10 000 connections spent
//!   about 2 s in `io_cancel_req_match`); one by `user_data` looks in one hash bucket;
//!   stop_recv: an `IORING_OP_ASYNC_CANCEL` of the receive's `user_data`;
//! - waker: a one-shot `IORING_OP_POLL_ADD` on the waker's eventfd, re-armed after each
//!   wake-up (the eventfd itself is read with `read(2)`);
//! - timeouts: `io_uring_enter` with `EXT_ARG` and a timespec (5.11).
//!
//! Memory rule: a send's frames, iovecs and `msghdr`, and a connect's address, sit in
//! `slots` from the push of their SQE until their final CQE. For a zero-copy send that is
//! the notification of its last round, which may come long after the result the worker is
//! told of (the kernel holds the pages until the peer has acknowledged them): the worker
//! hears of the send when every byte is accounted for, and may start the next send on the
//! connection, while the slot keeps the frames until every round's notification is in.
//! `Drop` cancels everything still in the kernel and waits (with a deadline) until every
//! final CQE, notifications included, has come back; if the deadline passes, it leaks that
//! memory rather than free what the kernel may still touch.
//!
//! Every CQE that carries a provided buffer becomes a [`RecvBuf`] before anything else
//! looks at it, so a completion dropped for any reason (a stale or unknown `user_data`, a
//! driver-owned operation, teardown) gives its buffer back to the ring.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use slab::Slab;

use super::bufring::BufRing;
use super::socket::SockAddr;
#[cfg(test)]
use super::DriverStats;
use super::{
    Completion, DriverConfig, Internal, OpKind, Owner, RecvBuf, RecvBufInner, SendBuf, SocketFd,
    Token, Waker, ZeroCopyCounts, MAX_SEND_FRAMES,
};

/// The buffer group id of the receive ring (one ring per driver).
const RECV_GROUP: u16 = 0;

/// How long `Drop` waits for the kernel to give back cancelled operations.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// Finished send ops kept for reuse: a broadcast to thousands of connections starts one
/// send each, and reusing their buffers spares as many allocations. About 100 bytes each
/// plus the vectors they grew.
const SPARE_SENDS: usize = 1024;

/// No send in flight on an fd, in `Uring::send_by_fd`.
const NO_SEND: u32 = u32::MAX;

/// `IORING_SEND_ZC_REPORT_USAGE` (6.2), a zero-copy send's `zc_flags` bit: the notification's
/// result then tells whether the kernel copied the bytes after all.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;

/// `IORING_NOTIF_USAGE_ZC_COPIED`: bit 31 of a notification's result, under
/// `SEND_ZC_REPORT_USAGE`.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

#[cfg(test)]
thread_local! {
    /// Zero-copy SQEs of this thread's drivers whose notification has not come back (nor
    /// will: those the kernel ended without one are counted out too). The tests read it
    /// when a frame drops, to check that no notification was outstanding then.
    pub(super) static ZC_PENDING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A send in flight: the frames it owns, and what of them the kernel has not taken yet;
/// everything the kernel reads is kept at stable addresses (heap buffers, a boxed header).
struct SendOp {
    token: Token,
    fd: RawFd,
    /// Set when the fd is cancelled or closed: a short write is then not resumed (the fd
    /// number may already name another socket).
    stopped: bool,
    /// Bytes written by earlier rounds of this send (a short write is resumed here).
    done: usize,
    frames: Vec<SendBuf>,
    /// One entry per frame; `iov[first..]` is what is left, its head cut where the last
    /// write stopped.
    iov: Vec<libc::iovec>,
    first: usize,
    /// Made on the first vectored send: a one-frame send needs none.
    msg: Option<Box<libc::msghdr>>,
    /// Every round goes out with `SEND_ZC` / `SENDMSG_ZC`.
    zc: bool,
    /// Zero-copy rounds whose result said a notification follows (`F_MORE`).
    zc_rounds: u32,
    /// Notifications come back.
    zc_notifs: u32,
    /// A notification said the kernel copied after all.
    zc_copied: bool,
    /// The worker has been told of the send; the slot waits only for notifications.
    reported: bool,
}

impl SendOp {
    fn new(token: Token) -> SendOp {
        SendOp {
            token,
            fd: -1,
            stopped: false,
            done: 0,
            // Grown to what sends need (up to MAX_SEND_FRAMES), then reused.
            frames: Vec::new(),
            iov: Vec::new(),
            first: 0,
            msg: None,
            zc: false,
            zc_rounds: 0,
            zc_notifs: 0,
            zc_copied: false,
            reported: false,
        }
    }

    /// Whether bytes are left after `written` more went out; moves past them.
    fn advance(&mut self, mut written: usize) -> bool {
        self.done += written;
        while let Some(iov) = self.iov.get_mut(self.first) {
            if iov.iov_len > written {
                // SAFETY: `written` < the entry's length, so the pointer stays inside the
                // frame the entry describes.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(written) }.cast();
                iov.iov_len -= written;
                return true;
            }
            written -= iov.iov_len;
            self.first += 1;
        }
        false
    }

    /// The SQE for what is left: a plain `send` for one buffer (no message header for the
    /// kernel to copy in), a vectored `sendmsg` for several; their zero-copy forms, asking
    /// for a usage report, when `zc` is set.
    fn entry(&mut self) -> squeue::Entry {
        let flags = libc::MSG_NOSIGNAL;
        let left = &self.iov[self.first..];
        match left {
            [one] if one.iov_len <= u32::MAX as usize => {
                let (buf, len) = (one.iov_base.cast::<u8>(), one.iov_len as u32);
                if self.zc {
                    opcode::SendZc::new(Fd(self.fd), buf, len)
                        .flags(flags)
                        .zc_flags(SEND_ZC_REPORT_USAGE)
                        .build()
                } else {
                    opcode::Send::new(Fd(self.fd), buf, len)
                        .flags(flags)
                        .build()
                }
            }
            _ => {
                // SAFETY: `msghdr` is plain old data; all-zero is a valid empty header.
                let msg = self
                    .msg
                    .get_or_insert_with(|| Box::new(unsafe { std::mem::zeroed() }));
                msg.msg_name = std::ptr::null_mut();
                msg.msg_namelen = 0;
                msg.msg_iov = left.as_ptr().cast_mut();
                msg.msg_iovlen = left.len();
                msg.msg_control = std::ptr::null_mut();
                msg.msg_controllen = 0;
                msg.msg_flags = 0;
                let msg: *const libc::msghdr = &**msg;
                if self.zc {
                    // SENDMSG_ZC reads its zc_flags from the SQE's ioprio, as SEND_ZC does.
                    opcode::SendMsgZc::new(Fd(self.fd), msg)
                        .flags(flags as u32)
                        .ioprio(SEND_ZC_REPORT_USAGE)
                        .build()
                } else {
                    opcode::SendMsg::new(Fd(self.fd), msg)
                        .flags(flags as u32)
                        .build()
                }
            }
        }
    }
}

enum Slot {
    Send(SendOp),
    Connect {
        token: Token,
        fd: RawFd,
        _addr: Box<SockAddr>,
    },
}

impl Completion {
    /// The one completion of a single-shot operation.
    fn last(token: Token, result: i32) -> Completion {
        Completion {
            token,
            result,
            more: false,
            buffer: None,
            socket: None,
        }
    }
}

/// Kernel facts found at set-up, for [`Uring::features`].
struct Setup {
    kernel: (u32, u32),
    flags: &'static str,
    sq: u32,
    cq: u32,
    send_zc: bool,
    sendmsg_zc: bool,
    bundles: bool,
    msg_ring: bool,
}

impl Setup {
    /// Zero-copy sends as this driver makes them: both opcodes, and usage reports (6.2;
    /// an older kernel would refuse the flag with `EINVAL`).
    fn zero_copy(&self) -> bool {
        self.send_zc && self.sendmsg_zc && self.kernel >= (6, 2)
    }
}

pub(crate) struct Uring {
    // Declared first so the ring closes before the memory below is released.
    ring: IoUring,
    bufs: Rc<BufRing>,
    waker: Waker,
    slots: Slab<Slot>,
    spare_sends: Vec<SendOp>,
    /// SQEs that did not fit in a full submission queue; pushed at the next submit.
    backlog: VecDeque<squeue::Entry>,
    cqes: Vec<cqueue::Entry>,
    cursor: usize,
    /// SQEs pushed whose final CQE has not come back.
    in_kernel: usize,
    sends_in_flight: usize,
    /// The slot of the send in flight on each fd (`NO_SEND`: none); one at a time per fd.
    send_by_fd: Vec<u32>,
    /// The `user_data` of the last receive, accept or connect started on each fd (0:
    /// none), for the close to cancel by `user_data`. A receive's or accept's may be
    /// stale (it ended): its cancel then finds nothing, and no other request has it (a
    /// token's generation tells connections apart); a connect's is cleared when it ends,
    /// since its slot is reused.
    reader_by_fd: Vec<u64>,
    enobufs: u64,
    /// Sends with a frame of at least this many bytes go zero-copy; `None` when not asked
    /// for or not supported.
    zero_copy_min: Option<usize>,
    zero_copy: ZeroCopyCounts,
    /// Zero-copy SQEs pushed, and those whose notification came (or that ended without
    /// one), for the tests' stats.
    zc_submitted: u64,
    zc_notified: u64,
    closing: bool,
    setup: Setup,
}

fn kernel_version() -> (u32, u32) {
    // SAFETY: `utsname` is plain old data; `uname` fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is valid for writes.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return (0, 0);
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let release = String::from_utf8_lossy(&release);
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn build_ring(config: &DriverConfig) -> io::Result<(IoUring, &'static str)> {
    let cq = config.cq_entries.max(config.ring_entries);
    type Step = (&'static str, fn(&mut io_uring::Builder));
    let steps: [Step; 5] = [
        ("SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN|SUBMIT_ALL", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_submit_all();
        }),
        ("SINGLE_ISSUER|DEFER_TASKRUN|SUBMIT_ALL", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_submit_all();
        }),
        ("SINGLE_ISSUER|COOP_TASKRUN|SUBMIT_ALL", |b| {
            b.setup_single_issuer()
                .setup_coop_taskrun()
                .setup_submit_all();
        }),
        ("COOP_TASKRUN", |b| {
            b.setup_coop_taskrun();
        }),
        ("none", |_| {}),
    ];
    let mut last = io::Error::from(io::ErrorKind::Unsupported);
    for (name, apply) in steps {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq).setup_clamp();
        apply(&mut b);
        match b.build(config.ring_entries) {
            Ok(ring) => return Ok((ring, name)),
            // EINVAL: a flag this kernel does not know; try fewer. Anything else (EPERM from
            // seccomp or the sysctl, ENOSYS, ENOMEM) will not get better with fewer flags.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

impl Uring {
    pub(crate) fn new(config: &DriverConfig) -> io::Result<Uring> {
        let kernel = kernel_version();
        if kernel < (6, 0) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "kernel {}.{} lacks multishot receive (needs 6.0)",
                    kernel.0, kernel.1
                ),
            ));
        }
        let (ring, flags) = build_ring(config)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks EXT_ARG timeouts",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let needed = [
            ("accept", opcode::AcceptMulti::CODE),
            ("recv", opcode::RecvMulti::CODE),
            ("send", opcode::Send::CODE),
            ("sendmsg", opcode::SendMsg::CODE),
            ("connect", opcode::Connect::CODE),
            ("close", opcode::Close::CODE),
            ("async_cancel", opcode::AsyncCancel2::CODE),
            ("poll_add", opcode::PollAdd::CODE),
        ];
        for (name, code) in needed {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring opcode {name} not supported"),
                ));
            }
        }
        let bufs = Rc::new(BufRing::new(
            &ring.submitter(),
            config.recv_buffers,
            config.recv_buffer_size,
            RECV_GROUP,
        )?);
        let setup = Setup {
            kernel,
            flags,
            sq: ring.params().sq_entries(),
            cq: ring.params().cq_entries(),
            send_zc: probe.is_supported(opcode::SendZc::CODE),
            sendmsg_zc: probe.is_supported(opcode::SendMsgZc::CODE),
            bundles: ring.params().is_feature_recvsend_bundle(),
            msg_ring: probe.is_supported(opcode::MsgRingData::CODE),
        };
        let mut this = Uring {
            ring,
            bufs,
            waker: Waker::new()?,
            slots: Slab::new(),
            spare_sends: Vec::new(),
            backlog: VecDeque::new(),
            cqes: Vec::with_capacity(setup.cq as usize),
            cursor: 0,
            in_kernel: 0,
            sends_in_flight: 0,
            send_by_fd: Vec::new(),
            reader_by_fd: Vec::new(),
            enobufs: 0,
            zero_copy_min: config.zero_copy_min.filter(|_| setup.zero_copy()),
            zero_copy: ZeroCopyCounts::default(),
            zc_submitted: 0,
            zc_notified: 0,
            closing: false,
            setup,
        };
        this.arm_waker();
        Ok(this)
    }

    pub(crate) fn features(&self) -> String {
        let s = &self.setup;
        let mut unused = Vec::new();
        if s.kernel >= (6, 12) {
            unused.push("incremental buffer consumption");
        }
        let zero_copy = match (self.zero_copy_min, s.zero_copy()) {
            (Some(min), _) => format!(
                "send_zc/sendmsg_zc with usage reports for sends with a frame of {min} B or more, "
            ),
            (None, true) => {
                unused.push("send_zc/sendmsg_zc (DriverConfig::zero_copy_min unset)");
                String::new()
            }
            (None, false) => String::new(),
        };
        if s.bundles {
            unused.push("recv/send bundles");
        }
        if s.msg_ring {
            unused.push("msg_ring (eventfd waker instead)");
        }
        format!(
            "io_uring on kernel {}.{}: setup {}, sq {} cq {}; using multishot accept, multishot recv \
             with a provided-buffer ring of {} x {} B, send/sendmsg resuming short writes, {}connect, \
             close cancelling by user_data, poll waker, \
             EXT_ARG timeouts; available but unused: {}",
            s.kernel.0,
            s.kernel.1,
            s.flags,
            s.sq,
            s.cq,
            self.bufs.count(),
            self.bufs.buffer_size(),
            zero_copy,
            unused.join(", ")
        )
    }

    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }

    pub(crate) fn enobufs(&self) -> u64 {
        self.enobufs
    }

    pub(crate) fn zero_copy(&self) -> ZeroCopyCounts {
        self.zero_copy
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> DriverStats {
        DriverStats {
            sends_in_flight: self.sends_in_flight,
            ops_in_flight: self.in_kernel,
            enobufs: self.enobufs,
            zc_submitted: self.zc_submitted,
            zc_notified: self.zc_notified,
            zero_copy: self.zero_copy,
        }
    }

    /// Queues one SQE. Every SQE pushed here gets one final CQE, counted in `in_kernel`.
    ///
    /// # Safety
    ///
    /// Every buffer the entry points to stays valid and unmoved until the entry's final
    /// completion has been reaped (the caller keeps it in `slots`, or it is `'static`).
    unsafe fn push(&mut self, entry: squeue::Entry) {
        self.in_kernel += 1;
        if self.backlog.is_empty() {
            // SAFETY: the caller keeps the entry's buffers alive until its completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel, then try once more.
            let _ = self.ring.submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: entries in the backlog were pushed by `push`, whose caller keeps their
            // buffers alive until completion.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    fn arm_waker(&mut self) {
        let entry = opcode::PollAdd::new(Fd(self.waker.raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Internal::Wake.user_data());
        // SAFETY: a poll reads no user memory; the eventfd lives in `self.waker`, and the
        // ring is drained before the `Waker` clone in `self` drops.
        unsafe { self.push(entry) };
    }

    /// Notes `user_data` as the reading request (or connect) in flight on `fd`.
    fn reading(&mut self, fd: RawFd, user_data: u64) {
        if let Ok(i) = usize::try_from(fd) {
            if self.reader_by_fd.len() <= i {
                self.reader_by_fd.resize(i + 1, 0);
            }
            self.reader_by_fd[i] = user_data;
        }
    }

    pub(crate) fn accept(&mut self, listener: RawFd, token: Token) {
        self.reading(listener, token.user_data());
        let entry = opcode::AcceptMulti::new(Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(token.user_data());
        // SAFETY: multishot accept is given no address buffer; it reads no user memory.
        unsafe { self.push(entry) };
    }

    pub(crate) fn recv(&mut self, fd: RawFd, token: Token) {
        self.reading(fd, token.user_data());
        let entry = opcode::RecvMulti::new(Fd(fd), self.bufs.group())
            .build()
            .user_data(token.user_data());
        // SAFETY: the receive writes only into ring buffers, which `self.bufs` keeps mapped
        // (and `Drop` drains or leaks them).
        unsafe { self.push(entry) };
    }

    pub(crate) fn send<I>(&mut self, fd: RawFd, token: Token, frames: I) -> usize
    where
        I: IntoIterator,
        I::Item: Into<SendBuf>,
    {
        let mut op = self.spare_sends.pop().unwrap_or_else(|| SendOp::new(token));
        op.token = token;
        op.fd = fd;
        op.stopped = false;
        op.done = 0;
        op.first = 0;
        op.zc_rounds = 0;
        op.zc_notifs = 0;
        op.zc_copied = false;
        op.reported = false;
        op.frames.clear();
        op.iov.clear();
        op.frames
            .extend(frames.into_iter().take(MAX_SEND_FRAMES).map(Into::into));
        op.zc = self
            .zero_copy_min
            .is_some_and(|min| op.frames.iter().any(|f| f.len() >= min));
        let zc = op.zc;
        let taken = op.frames.len();
        for f in &op.frames {
            op.iov.push(libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            });
        }
        let entry = op.entry();
        let slot = self.slots.insert(Slot::Send(op));
        self.sends_in_flight += 1;
        if let Ok(i) = usize::try_from(fd) {
            if self.send_by_fd.len() <= i {
                self.send_by_fd.resize(i + 1, NO_SEND);
            }
            self.send_by_fd[i] = slot as u32;
        }
        // SAFETY: the msghdr (boxed), the iovec array (a Vec's heap buffer) and the frames'
        // bytes (refcounted `Bytes`, whose heap memory moving them does not move) all live
        // in `self.slots[slot]` until the final CQE removes the slot in `complete` (for a
        // zero-copy send, the notification of its last round).
        unsafe { self.push_send(entry.user_data(Internal::Send(slot as u32).user_data()), zc) };
        taken
    }

    /// Queues a round of a send, counting zero-copy rounds.
    ///
    /// # Safety
    ///
    /// As for [`push`](Self::push): the send's slot keeps what the entry points to until
    /// its final CQE.
    unsafe fn push_send(&mut self, entry: squeue::Entry, zc: bool) {
        if zc {
            self.zc_submitted += 1;
            #[cfg(test)]
            ZC_PENDING.with(|p| p.set(p.get() + 1));
        }
        // SAFETY: the caller's promise, passed on.
        unsafe { self.push(entry) };
    }

    /// A zero-copy round is over for the kernel: its notification came, or it ended
    /// without one.
    fn zc_round_done(&mut self) {
        self.zc_notified += 1;
        #[cfg(test)]
        ZC_PENDING.with(|p| p.set(p.get().saturating_sub(1)));
    }

    pub(crate) fn connect(&mut self, fd: RawFd, addr: SocketAddr, token: Token) {
        let addr = Box::new(SockAddr::from_std(&addr));
        let (ptr, len) = (addr.as_ptr(), addr.len());
        let slot = self.slots.insert(Slot::Connect {
            token,
            fd,
            _addr: addr,
        });
        let user_data = Internal::Connect(slot as u32).user_data();
        self.reading(fd, user_data);
        let entry = opcode::Connect::new(Fd(fd), ptr, len)
            .build()
            .user_data(user_data);
        // SAFETY: the boxed address lives in `self.slots[slot]` until the final CQE.
        unsafe { self.push(entry) };
    }

    fn cancel_entry(user_data: u64) -> squeue::Entry {
        opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data))
            .build()
            .user_data(Internal::Cancel.user_data())
    }

    pub(crate) fn stop_recv(&mut self, _fd: RawFd, token: Token) {
        // The receive is the only request in flight with this user_data: the worker keeps
        // one receive per connection, and the generation tells connections apart.
        let entry = Self::cancel_entry(token.user_data());
        // SAFETY: a cancel reads no user memory.
        unsafe { self.push(entry) };
    }

    /// The send in flight on `fd`, if any, ends at its next completion. Returns its
    /// `user_data`.
    fn stop_send(&mut self, fd: RawFd) -> Option<u64> {
        let slot = usize::try_from(fd)
            .ok()
            .and_then(|i| self.send_by_fd.get_mut(i))?;
        let slot = std::mem::replace(slot, NO_SEND);
        let Some(Slot::Send(op)) = self.slots.get_mut(slot as usize) else {
            return None;
        };
        op.stopped = true;
        Some(Internal::Send(slot).user_data())
    }

    pub(crate) fn close(&mut self, fd: SocketFd) {
        // From here the kernel's close owns the descriptor: `fd` is consumed.
        let fd = fd.raw();
        let send = self.stop_send(fd);
        let reader = usize::try_from(fd)
            .ok()
            .and_then(|i| self.reader_by_fd.get_mut(i))
            .map_or(0, std::mem::take);
        let cancels = [send, (reader != 0).then_some(reader)];
        let cancels = cancels.iter().flatten();
        // Hard links: the close waits for each cancel whatever its result (-ENOENT when
        // the request had ended), so the requests end before the fd goes.
        let close = opcode::Close::new(Fd(fd))
            .build()
            .user_data(Internal::Close.user_data());
        // Keep the linked chain in one submission: a link cut at the queue's end is lost.
        if self.backlog.is_empty() {
            let free = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if free < 3 {
                let _ = self.ring.submit();
            }
        }
        // SAFETY: no entry reads user memory. They are pushed back to back; if the queue
        // fills between them, `push` keeps the order through the backlog.
        unsafe {
            for &user_data in cancels {
                self.push(Self::cancel_entry(user_data).flags(squeue::Flags::IO_HARDLINK));
            }
            self.push(close);
        }
    }

    fn submit_inner(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        self.flush_backlog();
        let res = match timeout {
            Some(d) if want > 0 => {
                let ts = Timespec::from(d);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submitter().submit_and_wait(want),
        };
        if !self.backlog.is_empty() {
            // The queue was full: it is empty now, so hand over what waited.
            self.flush_backlog();
            let _ = self.ring.submit();
        }
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Timer expired, signal, or completions must be reaped first.
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.submit_inner(0, None)
    }

    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let ready = self.cursor < self.cqes.len() || !self.ring.completion().is_empty();
        if ready || timeout == Some(Duration::ZERO) {
            // Zero timeout still enters with GETEVENTS so deferred task work runs.
            return self.submit_inner(usize::from(!ready), Some(Duration::ZERO));
        }
        self.submit_inner(1, timeout)
    }

    fn reap(&mut self) {
        if self.cursor < self.cqes.len() {
            return;
        }
        self.cqes.clear();
        self.cursor = 0;
        self.cqes.extend(self.ring.completion());
        #[cfg(test)]
        self.bufs.note_reported(
            self.cqes
                .iter()
                .filter(|cqe| cqueue::buffer_select(cqe.flags()).is_some())
                .count(),
        );
    }

    pub(crate) fn next_completion(&mut self) -> Option<Completion> {
        loop {
            self.reap();
            let cqe = self.cqes.get(self.cursor)?.clone();
            self.cursor += 1;
            if let Some(c) = self.complete(cqe.user_data(), cqe.result(), cqe.flags()) {
                return Some(c);
            }
        }
    }

    /// Turns one CQE into a completion for the worker, or handles it here (`None`).
    fn complete(&mut self, raw: u64, result: i32, flags: u32) -> Option<Completion> {
        let more = cqueue::more(flags);
        if !more {
            self.in_kernel = self.in_kernel.saturating_sub(1);
        }
        // The buffer belongs to the ring again as soon as this handle drops, whoever the
        // completion turns out to be for.
        let buffer = cqueue::buffer_select(flags).map(|bid| RecvBuf {
            inner: RecvBufInner::Ring {
                ring: Rc::clone(&self.bufs),
                bid,
                len: usize::try_from(result).unwrap_or(0),
            },
        });
        match Owner::decode(raw) {
            Owner::Worker(token) => Some(self.worker_completion(token, result, more, buffer)),
            Owner::Driver(internal) => {
                drop(buffer);
                self.driver_completion(internal, result, flags)
            }
            // Never submitted by this driver: nothing to report, the buffer goes back.
            Owner::Unknown => None,
        }
    }

    fn worker_completion(
        &mut self,
        token: Token,
        result: i32,
        more: bool,
        buffer: Option<RecvBuf>,
    ) -> Completion {
        // A buffer with no bytes goes straight back (its drop recycles it).
        let buffer = buffer.filter(|_| result > 0);
        let mut socket = None;
        match token.kind() {
            OpKind::Recv if result == -libc::ENOBUFS => self.enobufs += 1,
            OpKind::Accept if result >= 0 => {
                // SAFETY: the kernel has just installed this descriptor for this accept;
                // nothing else in the process knows its number, so it is ours to own.
                let fd = unsafe { OwnedFd::from_raw_fd(result) };
                // Frames are batched by the engine; Nagle would only add latency. A socket
                // that is not TCP refuses the option, which is fine.
                let _ = super::socket::set_nodelay(fd.as_fd());
                socket = Some(fd);
            }
            _ => {}
        }
        Completion {
            token,
            result,
            more,
            buffer,
            socket,
        }
    }

    fn driver_completion(
        &mut self,
        internal: Internal,
        result: i32,
        flags: u32,
    ) -> Option<Completion> {
        let slot = match internal {
            Internal::Send(slot) => return self.send_completion(slot, result, flags),
            Internal::Connect(slot) => slot as usize,
            Internal::Wake => return self.woken(result),
            Internal::Cancel | Internal::Close => return None,
        };
        if cqueue::more(flags) {
            // Connect posts a single CQE; nothing else to do.
            return None;
        }
        // A connect's user_data names a connect slot; anything else there is left alone.
        let Some(&Slot::Connect { token, fd, .. }) = self.slots.get(slot) else {
            return None;
        };
        self.slots.remove(slot);
        // Its slot may serve another connect now: the close must not cancel that one.
        let user_data = Internal::Connect(slot as u32).user_data();
        if let Some(reader) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.reader_by_fd.get_mut(i))
            .filter(|r| **r == user_data)
        {
            *reader = 0;
        }
        Some(Completion::last(token, result))
    }

    /// A CQE of a send: a round's result, or a zero-copy round's notification.
    fn send_completion(&mut self, raw_slot: u32, result: i32, flags: u32) -> Option<Completion> {
        let slot = raw_slot as usize;
        let user_data = Internal::Send(raw_slot).user_data();
        let closing = self.closing;
        let Some(Slot::Send(op)) = self.slots.get_mut(slot) else {
            return None;
        };
        if cqueue::notif(flags) {
            // The kernel has let go of one zero-copy round's pages.
            op.zc_notifs += 1;
            op.zc_copied |= result as u32 & NOTIF_USAGE_ZC_COPIED != 0;
            let done = op.reported && op.zc_notifs >= op.zc_rounds;
            self.zc_round_done();
            if done {
                self.release_send(slot);
            }
            return None;
        }
        let zc = op.zc;
        if zc {
            if cqueue::more(flags) {
                // A notification follows this result; the slot waits for it.
                op.zc_rounds += 1;
            } else {
                // Ended before any page was pinned: no notification will come.
                self.zc_round_done();
            }
        } else if cqueue::more(flags) {
            // A copying send posts a single CQE; a flagged one is not its last.
            return None;
        }
        let Some(Slot::Send(op)) = self.slots.get_mut(slot) else {
            return None;
        };
        if zc && result == -libc::EOPNOTSUPP && !op.stopped && !closing {
            // A socket without zero-copy support (not TCP or UDP): copy instead.
            op.zc = false;
            let entry = op.entry().user_data(user_data);
            // SAFETY: as in `send`: the slot keeps everything the entry points to until
            // the final CQE.
            unsafe { self.push_send(entry, false) };
            return None;
        }
        if result > 0 && op.advance(result as usize) && !op.stopped && !closing {
            // A short write: the socket had room for part. Send the rest; the worker hears
            // of this send once every byte is out.
            let entry = op.entry().user_data(user_data);
            // SAFETY: as in `send`: the slot keeps everything the entry points to until
            // the final CQE (the last round's notification, for a zero-copy send).
            unsafe { self.push_send(entry, zc) };
            return None;
        }
        let result = if op.stopped && op.first < op.iov.len() {
            // Cut short by a cancel or close: report that, not a count.
            -libc::ECANCELED
        } else if result > 0 {
            // Every byte is out: report them all, over every round.
            i32::try_from(op.done).unwrap_or(i32::MAX)
        } else if result == 0 {
            // Nothing taken with bytes left: the connection is gone. (An error after
            // earlier rounds stays an error: part went out.)
            -libc::EPIPE
        } else {
            result
        };
        // The worker hears of the send now, and may start the next one on this fd; the
        // frames stay in the slot until every notification of its rounds is in.
        op.reported = true;
        let token = op.token;
        let fd = op.fd;
        let done = op.zc_notifs >= op.zc_rounds;
        if let Some(by_fd) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.send_by_fd.get_mut(i))
            .filter(|s| **s == raw_slot)
        {
            *by_fd = NO_SEND;
        }
        if done {
            self.release_send(slot);
        }
        Some(Completion::last(token, result))
    }

    /// Frees a send the kernel is done with (its final CQE, or every notification, came):
    /// drops its frames and keeps the op for reuse.
    fn release_send(&mut self, slot: usize) {
        let Some(Slot::Send(mut op)) = self.slots.try_remove(slot) else {
            return;
        };
        self.sends_in_flight -= 1;
        if op.zc_rounds > 0 {
            if op.zc_copied {
                self.zero_copy.copied += 1;
            } else {
                self.zero_copy.sent += 1;
            }
        }
        op.frames.clear();
        if self.spare_sends.len() < SPARE_SENDS {
            self.spare_sends.push(op);
        }
    }

    /// The waker's poll fired: consume the eventfd and re-arm the poll.
    fn woken(&mut self, result: i32) -> Option<Completion> {
        let mut counter = 0u64;
        // SAFETY: `counter` is 8 writable bytes; the eventfd is non-blocking, so a
        // read with nothing pending returns EAGAIN at once.
        let _ = unsafe { libc::read(self.waker.raw_fd(), (&mut counter as *mut u64).cast(), 8) };
        self.waker.rearm();
        if self.closing || result < 0 && result != -libc::EINTR {
            return None;
        }
        self.arm_waker();
        Some(Completion {
            token: Token::WAKE,
            result: 0,
            more: true,
            buffer: None,
            socket: None,
        })
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.closing = true;
        // Completions reaped but never taken: handling them gives their buffers back to
        // the ring, closes accepted sockets nobody took, and frees finished sends.
        while let Some(c) = self.next_completion() {
            drop(c);
        }
        if self.in_kernel > 0 {
            let entry = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(Internal::Cancel.user_data());
            // SAFETY: a cancel reads no user memory.
            unsafe { self.push(entry) };
        }
        let deadline = Instant::now() + DRAIN_DEADLINE;
        while self.in_kernel > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.submit_inner(1, Some(deadline - now)).is_err() {
                break;
            }
            while let Some(c) = self.next_completion() {
                drop(c);
            }
        }
        if self.in_kernel > 0 {
            // The kernel may still read or write this memory: leak it rather than free it.
            tracing::warn!(
                ops = self.in_kernel,
                "io_uring operations did not drain; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(Rc::clone(&self.bufs));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;

    use super::*;

    /// A connected pair over loopback: the server side as a driver socket, and the client.
    fn pair() -> (SocketFd, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("non-blocking");
        (SocketFd::from(OwnedFd::from(server)), client)
    }

    fn small_ring() -> Uring {
        let config = DriverConfig {
            recv_buffers: 16,
            recv_buffer_size: 512,
            ..DriverConfig::default()
        };
        Uring::new(&config).expect("io_uring")
    }

    /// Runs the ring until the kernel has reported `n` buffers in all, handing every
    /// completion to `f`.
    fn until_reported(ring: &mut Uring, n: u64, mut f: impl FnMut(Completion)) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ring.bufs.counts().0 < n {
            assert!(Instant::now() < deadline, "the kernel reported no buffer");
            ring.submit_and_wait(Some(Duration::from_millis(100)))
                .expect("submit_and_wait");
            while let Some(c) = ring.next_completion() {
                f(c);
            }
        }
    }

    /// A receive whose `user_data` is in neither half of the space the driver hands out
    /// (the tags 0x85-0xFF, and a kind byte no token has) is not handed to the
    /// worker, and every buffer it filled goes back to the ring: twenty receives through a
    /// ring of 16 buffers would have starved it.
    #[test]
    fn a_receive_with_unknown_user_data_gives_its_buffers_back() {
        for forged in [0xff_u64 << 56 | 42, 0x85 << 56, 0x06 << 56 | 7] {
            let mut ring = small_ring();
            let (fd, mut client) = pair();
            let entry = opcode::RecvMulti::new(Fd(fd.raw()), ring.bufs.group())
                .build()
                .user_data(forged);
            // SAFETY: the receive writes only into ring buffers, which `ring.bufs` keeps.
            unsafe { ring.push(entry) };
            for round in 1..=20u64 {
                client.write_all(b"stray bytes").expect("write");
                until_reported(&mut ring, round, |c| {
                    panic!("{forged:#x}: handed to the worker: {c:?}")
                });
                let (reported, returned) = ring.bufs.counts();
                assert_eq!(reported, returned, "{forged:#x}: a buffer was kept");
            }
            assert_eq!(ring.enobufs, 0);
            ring.close(fd);
        }
    }

    /// Teardown returns every buffer: completions reaped but never taken give theirs
    /// back when the driver drops, and a buffer the worker still holds goes back when it
    /// is dropped after the driver.
    #[test]
    fn dropping_the_driver_gives_back_the_buffers_of_completions_never_taken() {
        let mut ring = small_ring();
        let (fd, mut client) = pair();
        ring.recv(fd.raw(), Token::new(OpKind::Recv, 1, 1));
        // 4 KiB through 512-byte buffers: several completions in the queue at once.
        client.write_all(&[7u8; 4096]).expect("write");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ring.ring.completion().len() < 3 {
            assert!(Instant::now() < deadline, "no completions queued");
            ring.submit_and_wait(Some(Duration::from_millis(100)))
                .expect("submit_and_wait");
        }
        // Reaps them all, hands out the first; the others wait, never taken.
        let held = ring
            .next_completion()
            .and_then(|c| c.buffer)
            .expect("a receive with a buffer");
        assert!(ring.cursor < ring.cqes.len(), "completions left untaken");
        let bufs = Rc::clone(&ring.bufs);
        ring.close(fd);
        drop(ring);
        let (reported, returned) = bufs.counts();
        assert_eq!(reported - returned, 1, "only the held buffer is out");
        drop(held);
        let (reported, returned) = bufs.counts();
        assert_eq!(reported, returned);
    }
}
