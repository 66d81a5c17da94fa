//! EMFILE on accept: the worker backs off instead of spinning, and accepts again once
//! descriptors free up. Alone in its binary because it uses up the process's descriptors.

mod common;

use std::fs::File;
use std::net::TcpStream;
use std::time::Duration;

use ringcast::server::Backend;
use ringcast::server::{Handler, Server, ServerConfig, Socket};
use ringcast::MessageType;

use common::{wait_stats, RawClient, Received};

struct Echo;

impl Handler for Echo {
    type Data = ();
    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

fn soft_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write into.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit");
    limit.rlim_cur
}

/// A fresh non-blocking IPv4 TCP socket, made before the descriptors run out.
fn tcp_socket() -> std::os::fd::OwnedFd {
    // SAFETY: a plain syscall with constant arguments; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `socket` has just returned this descriptor and nothing else owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// Connects a socket made earlier (non-blocking), then hands it over as a std stream.
fn connect(socket: std::os::fd::OwnedFd, addr: std::net::SocketAddr) -> TcpStream {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("the test listens on IPv4");
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `fd` is an open socket and `sin` a valid sockaddr_in of the given size.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS),
        "connect: {err}"
    );
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false).expect("blocking");
    stream
}

#[test]
fn emfile_on_accept_backs_off_and_recovers() {
    const CLIENTS: usize = 10;
    for backend in Backend::ALL {
        let handle = Server::new(ServerConfig {
            addr: Some("127.0.0.1:0".parse().expect("literal")),
            workers: 1,
            backend,
            ..ServerConfig::default()
        })
        .start(|_| Echo)
        .expect("server");
        let addr = handle.local_addr().expect("addr");
        // The clients' sockets exist before the limit drops, so that it binds the
        // server's accepts only (connecting takes no new descriptor).
        let sockets: Vec<std::os::fd::OwnedFd> = (0..CLIENTS).map(|_| tcp_socket()).collect();
        // Use up every descriptor but two. (Lowering the limit instead would not do:
        // io_uring reads the limit when an accept is submitted, and the multishot accept
        // was submitted at start.)
        let limit = soft_limit();
        let mut fillers = Vec::new();
        loop {
            let file = File::open("/dev/null").expect("open");
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file) as u64;
            fillers.push(file);
            if fd + 3 >= limit {
                break;
            }
        }
        let mut clients = Vec::new();
        for socket in sockets {
            clients.push(connect(socket, addr));
        }
        let stats = wait_stats(&handle, "an accept error", |s| s.accept_errors > 0);
        assert_eq!(stats.accepted, 2, "{backend}: {stats:#?}");
        // A busy loop would fail thousands of times a second; backing off from 10 ms and
        // doubling fails a handful of times. (An upper bound only: a slow machine fails
        // fewer times, never more.)
        std::thread::sleep(Duration::from_millis(700));
        let errors = handle.stats().accept_errors;
        assert!(
            errors <= 12,
            "{backend}: {errors} accept errors in 0.7 s: a busy loop"
        );
        // Descriptors free up: the waiting clients are accepted and served.
        drop(fillers);
        wait_stats(&handle, "the rest to be accepted", |s| {
            s.accepted == CLIENTS as u64
        });
        drop(clients);
        let mut client = RawClient::connect(addr, "");
        client.text("back");
        assert_eq!(client.recv(), Received::Text("back".into()));
        drop(client);
        handle.shutdown();
        handle.wait();
    }
}
