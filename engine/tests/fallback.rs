//! Where io_uring cannot be set up (here: a seccomp filter that answers `io_uring_setup`
//! with EPERM, as container runtimes' default profiles do), the engine runs the same
//! workers on epoll. The filter is installed in a child process (this binary again), so
//! the other tests keep their io_uring.

mod common;

use std::time::Duration;

use ringcast::server::Backend;
use ringcast::server::{Handler, Server, ServerConfig, Socket};
use ringcast::MessageType;

use common::{RawClient, Received};

struct Echo;

impl Handler for Echo {
    type Data = ();
    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

#[test]
fn io_uring_blocked_by_seccomp_falls_back_to_epoll() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_with_io_uring_blocked",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("RINGCAST_FALLBACK_CHILD", "1")
        .env_remove("RINGCAST_BACKEND")
        .output()
        .expect("run the child");
    assert!(
        output.status.success(),
        "the child with io_uring blocked failed"
    );
    // A filter that matched nothing would pass too: the child must have run its test.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
#[ignore = "run by io_uring_blocked_by_seccomp_falls_back_to_epoll in a child process"]
fn child_with_io_uring_blocked() {
    assert!(
        std::env::var_os("RINGCAST_FALLBACK_CHILD").is_some(),
        "only as a child: it blocks io_uring for the whole process"
    );
    block_io_uring_setup();
    let handle = Server::new(ServerConfig {
        addr: Some("127.0.0.1:0".parse().expect("literal")),
        workers: 2,
        backend: Backend::Uring,
        shutdown_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .start(|_| Echo)
    .expect("the server starts anyway");
    for line in handle.backends() {
        assert!(line.starts_with("epoll"), "{line}");
    }
    let mut client = RawClient::connect(handle.local_addr().expect("addr"), "");
    client.text("still echoing");
    assert_eq!(client.recv(), Received::Text("still echoing".into()));
    drop(client);
    handle.shutdown();
    handle.wait();
}

/// A seccomp filter: `io_uring_setup` fails with EPERM, everything else is allowed.
fn block_io_uring_setup() {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    // offsetof(struct seccomp_data, nr) and (.., arch)
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        op(ld, 0, 0, ARCH),
        op(jeq, 1, 0, AUDIT_ARCH),
        op(ret, 0, 0, SECCOMP_RET_ALLOW), // another ABI: leave it alone
        op(ld, 0, 0, NR),
        op(jeq, 0, 1, libc::SYS_io_uring_setup as u32),
        op(ret, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(ret, 0, 0, SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl with constant arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS");
    // SAFETY: `program` points at `filter`, both alive for the call; the kernel copies them.
    // TSYNC applies the filter to every thread of the process (the test harness has several).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &program as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
}
