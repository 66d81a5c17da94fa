//! Sockets and process limits: listeners with `SO_REUSEPORT`, socket options, address
//! conversion, `RLIMIT_NOFILE`, CPU pinning, and the `syscall!` helper
//! every raw call in `sys/` goes through.
//!
//! Descriptors are typed the I/O-safe way: fresh sockets come out as [`OwnedFd`] (a caller
//! that drops one closes it), and every function that acts on a socket it does not own
//! borrows it ([`BorrowedFd`]), so it cannot outlive the descriptor. Sockets the driver
//! works on become [`SocketFd`](super::SocketFd)s, closed only by
//! [`Driver::close`](super::Driver::close).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Calls a libc function and turns a `-1` return into the thread's `errno` as an
/// [`io::Error`]. Expands to an `unsafe` call: the call site states its `// SAFETY:`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// A socket address in the kernel's layout, as `connect(2)` and `bind(2)` take it.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    /// The kernel form of `addr`.
    pub fn from_std(addr: &SocketAddr) -> SockAddr {
        // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned for every sockaddr
                // type, `sin` is a valid value, and the two do not overlap.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for `sockaddr_in6`.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// The std form, or `None` for a family other than IPv4/IPv6.
    pub fn to_std(self) -> Option<SocketAddr> {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a `sockaddr_in`; the storage is
                // aligned for it and large enough.
                let sin: libc::sockaddr_in = unsafe {
                    std::ptr::read((&self.storage as *const libc::sockaddr_storage).cast())
                };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let sin6: libc::sockaddr_in6 = unsafe {
                    std::ptr::read((&self.storage as *const libc::sockaddr_storage).cast())
                };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Pointer to the kernel form, valid while `self` is neither moved nor dropped.
    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    /// Length of the kernel form in bytes.
    pub(crate) fn len(&self) -> libc::socklen_t {
        self.len
    }

    fn empty() -> SockAddr {
        SockAddr {
            // SAFETY: plain old data, all-zero is valid.
            storage: unsafe { mem::zeroed() },
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_std() {
            Some(a) => write!(f, "SockAddr({a})"),
            None => write!(f, "SockAddr(family {})", self.storage.ss_family),
        }
    }
}

fn domain(addr: &SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// A new non-blocking, close-on-exec TCP socket of `addr`'s family, for
/// [`Driver::connect`](super::Driver::connect) or a listener.
pub fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe {
        syscall!(socket(
            domain(addr),
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0
        ))
    }?;
    // SAFETY: `socket` just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_opt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    // SAFETY: `fd` is open for the borrow; `value` lives on this stack frame for the call,
    // and its size is passed with it.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t
        ))
    }
    .map(drop)
}

fn get_opt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is open for the borrow; `value` and `len` are valid for writes and `len`
    // holds the size of `value`.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len
        ))
    }?;
    Ok(value)
}

/// A listening socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, non-blocking and
/// close-on-exec. Several of them on one port share the incoming connections (the kernel
/// hashes each connection to one listener).
pub fn listen_reuseport(addr: &SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let fd = tcp_socket(addr)?;
    set_opt(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        1 as libc::c_int,
    )?;
    set_opt(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEPORT,
        1 as libc::c_int,
    )?;
    let raw = fd.as_raw_fd();
    let sa = SockAddr::from_std(addr);
    // SAFETY: `sa` outlives the call and `len` is its length.
    unsafe { syscall!(bind(raw, sa.as_ptr(), sa.len())) }?;
    // SAFETY: plain syscall on an fd we own.
    unsafe { syscall!(listen(raw, backlog)) }?;
    Ok(fd)
}

/// Binds `fd` to a local address before connecting (port 0: the kernel picks one). Sets
/// `IP_BIND_ADDRESS_NO_PORT` first, so the port is chosen at connect time and the same port
/// can serve connections to different servers.
pub fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    if addr.port() == 0 && addr.is_ipv4() {
        // Best effort: without it the bind still works, with fewer ports to go round.
        let _ = set_opt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1 as libc::c_int,
        );
    }
    let sa = SockAddr::from_std(addr);
    // SAFETY: `fd` is open for the borrow; `sa` outlives the call and `len` is its length.
    unsafe { syscall!(bind(fd.as_raw_fd(), sa.as_ptr(), sa.len())) }.map(drop)
}

/// `count` listeners on one address, one per worker. With port 0 the first one picks a free
/// port and the others bind that same port.
pub fn listeners(addr: &SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<OwnedFd>> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let this process share a port another server of the same
        // user already listens on, silently splitting its clients: a plain bind first
        // turns that into the usual "address in use".
        let probe = tcp_socket(addr)?;
        set_opt(
            probe.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1 as libc::c_int,
        )?;
        let sa = SockAddr::from_std(addr);
        // SAFETY: `sa` outlives the call and `len` is its length.
        unsafe { syscall!(bind(probe.as_raw_fd(), sa.as_ptr(), sa.len())) }?;
    }
    let mut out = Vec::with_capacity(count);
    let mut addr = *addr;
    for _ in 0..count {
        let fd = listen_reuseport(&addr, backlog)?;
        if addr.port() == 0 {
            addr = local_addr(fd.as_fd())?;
        }
        out.push(fd);
    }
    Ok(out)
}

/// Turns Nagle's algorithm off: frames are batched by the engine already.
pub fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int)
}

/// Sets `SO_SNDBUF` (the kernel doubles the value and applies its minimum): the driver
/// tests make short writes with it.
#[cfg(test)]
pub fn set_send_buffer_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v)
}

/// The pending error of a socket (`SO_ERROR`), cleared by reading it; 0 if none.
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<i32> {
    get_opt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// getsockname(2) or getpeername(2): same arguments, same result.
type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn socket_name(fd: BorrowedFd<'_>, get: NameFn) -> io::Result<SocketAddr> {
    let mut sa = SockAddr::empty();
    // SAFETY: `fd` is open for the borrow; `sa.storage` is valid for `sa.len` bytes of
    // writes; `len` is updated in place; `get` is getsockname or getpeername, which write
    // nothing else.
    let res = unsafe {
        get(
            fd.as_raw_fd(),
            (&mut sa.storage as *mut libc::sockaddr_storage).cast(),
            &mut sa.len,
        )
    };
    if res == -1 {
        return Err(io::Error::last_os_error());
    }
    sa.to_std()
        .ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))
}

/// The local address of a socket.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    socket_name(fd, libc::getsockname)
}

/// The peer address of a connected socket.
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    socket_name(fd, libc::getpeername)
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid for writes.
    unsafe { syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)) }?;
    // `rlim_t` is u64 on the Linux targets we build for, but not in every libc.
    #[allow(clippy::unnecessary_cast)]
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Entries a table indexed by connection or descriptor grows to by doubling; past them it
/// takes [`table_room`] at once. Each doubling copies the table and leaves the old copy to
/// the allocator, which keeps it resident in a server that then sits idle; room reserved
/// and not yet written costs no RSS (docs/decisions.md).
pub(crate) const EARLY_ROOM: usize = 1024;

/// The most entries such a table takes room for at once.
pub(crate) const MAX_ROOM: usize = 1 << 16;

/// The room such a table takes once past [`EARLY_ROOM`]: the soft open-file limit (one
/// descriptor per entry), at most [`MAX_ROOM`] and at most `bound`.
pub(crate) fn table_room(bound: usize) -> usize {
    let fds = fd_limit()
        .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        .unwrap_or(0);
    bound.min(fds).min(MAX_ROOM)
}

/// Sets the soft `RLIMIT_NOFILE` (at most the hard limit). Returns the new soft limit.
pub fn set_fd_limit(soft: u64) -> io::Result<u64> {
    let (_, hard) = fd_limit()?;
    let soft = soft.min(hard);
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `lim` is a valid rlimit read by the call.
    unsafe { syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim)) }?;
    Ok(soft)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: one fd per connection adds up fast.
/// Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (_, hard) = fd_limit()?;
    set_fd_limit(hard)
}

/// Pins the calling thread to one CPU (`sched_setaffinity`).
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` was checked above, so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu set and its size is passed with it; pid 0 is this thread.
    unsafe {
        syscall!(sched_setaffinity(
            0,
            mem::size_of::<libc::cpu_set_t>(),
            &set
        ))
    }
    .map(drop)
}

/// The CPUs this thread may run on, in order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: plain old data.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is valid for writes of its size.
    unsafe {
        syscall!(sched_getaffinity(
            0,
            mem::size_of::<libc::cpu_set_t>(),
            &mut set
        ))
    }?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c < CPU_SETSIZE`, so the bit is inside `set`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_on_port_zero_share_the_first_port() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let ls = listeners(&addr, 3, 16).expect("listeners");
        let ports: Vec<u16> = ls
            .iter()
            .map(|l| local_addr(l.as_fd()).expect("addr").port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_port_another_server_listens_on_is_refused() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let first = listeners(&any, 2, 16).expect("listeners");
        let taken = local_addr(first[0].as_fd()).expect("addr");
        let err = listeners(&taken, 2, 16).expect_err("port in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn sockaddr_round_trips_both_families() {
        for s in ["10.1.2.3:8080", "[::1]:443", "[fe80::1%2]:9"] {
            let a: SocketAddr = s.parse().expect("literal");
            assert_eq!(SockAddr::from_std(&a).to_std(), Some(a));
        }
    }

    #[test]
    fn raising_the_fd_limit_never_lowers_it() {
        let (soft, hard) = fd_limit().expect("getrlimit");
        let raised = raise_fd_limit().expect("setrlimit");
        assert!(raised >= soft && raised == hard);
    }

    #[test]
    fn pinning_to_an_allowed_cpu_works() {
        let cpus = allowed_cpus().expect("affinity");
        assert!(!cpus.is_empty());
        // Pin a scratch thread, not the test harness's.
        let cpu = cpus[0];
        std::thread::spawn(move || pin_to_cpu(cpu))
            .join()
            .expect("thread")
            .expect("pin");
    }
}
