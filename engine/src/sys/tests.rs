//! The kernel boundary over real loopback sockets, once per backend: accept, multishot
//! receive, vectored sends and short writes resumed by the driver, buffer-ring exhaustion,
//! the cross-thread waker, the in-flight table on close and drop, `EMFILE` on accept (in a
//! child process), and zero-copy sends, whose frames live until the kernel's notifications
//! (io_uring; the same tests pass on epoll, which copies); and the split of the `user_data` space between the worker's tokens
//! and the driver's own operations.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const DEADLINE: Duration = Duration::from_secs(20);

// --- tokens and the user_data space ------------------------------------------------------

const KINDS: [OpKind; 5] = [
    OpKind::Accept,
    OpKind::Recv,
    OpKind::Send,
    OpKind::Connect,
    OpKind::Wake,
];

const INTERNALS: [Internal; 5] = [
    Internal::Send(u32::MAX),
    Internal::Connect(7),
    Internal::Wake,
    Internal::Cancel,
    Internal::Close,
];

#[test]
fn token_packs_kind_key_and_generation() {
    let t = Token::new(OpKind::Send, u32::MAX, 0x12_3456);
    assert_eq!(t.kind(), OpKind::Send);
    assert_eq!(t.key(), u32::MAX);
    assert_eq!(t.generation(), 0x12_3456);
    assert_eq!(Owner::decode(t.user_data()), Owner::Worker(t));
}

#[test]
fn token_generation_wraps_at_24_bits() {
    let t = Token::new(OpKind::Recv, 7, Token::MAX_GENERATION + 2);
    assert_eq!(t.generation(), 1);
    assert_eq!(t.kind(), OpKind::Recv);
}

/// The forged-token attack of issue 12 (a token whose tag byte is the driver's send tag,
/// handed to a close, freed a send still in the kernel) cannot be built: the only
/// constructor is `Token::new`, and no kind, key or generation gives a token with bit 63.
#[test]
fn no_token_decodes_as_a_driver_operation() {
    let corners = [
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0xffff,
        0x8000_0000,
        u32::MAX - 1,
        u32::MAX,
    ];
    let mut rng = fastrand::Rng::with_seed(12);
    let random = (0..100_000).map(|_| (rng.u32(..), rng.u32(..)));
    let all = corners
        .iter()
        .flat_map(|&k| corners.iter().map(move |&g| (k, g)))
        .chain(random);
    for (key, generation) in all {
        for kind in KINDS {
            let token = Token::new(kind, key, generation);
            assert_eq!(token.user_data() & DRIVER_BIT, 0, "{token:?}");
            assert_eq!(Owner::decode(token.user_data()), Owner::Worker(token));
        }
    }
}

#[test]
fn driver_operations_decode_as_the_driver_s_own() {
    for internal in INTERNALS {
        assert_ne!(internal.user_data() & DRIVER_BIT, 0, "{internal:?}");
        assert_eq!(Owner::decode(internal.user_data()), Owner::Driver(internal));
    }
}

#[test]
fn user_data_no_one_made_decodes_as_unknown() {
    // Kind bytes no token has (0, 6..=0x7f) and driver tags no operation has (5..=0x7f).
    for byte in (0u64..=0xff).filter(|&b| b == 0 || (6..=0x7f).contains(&b) || b >= 0x85) {
        let raw = (byte << 56) | 0x1234;
        assert_eq!(Owner::decode(raw), Owner::Unknown, "byte {byte:#x}");
    }
}

#[test]
fn backend_parses_its_names() {
    assert_eq!("uring".parse::<Backend>().ok(), Some(Backend::Uring));
    assert_eq!("EPOLL".parse::<Backend>().ok(), Some(Backend::Epoll));
    assert!("kqueue".parse::<Backend>().is_err());
    for b in Backend::ALL {
        assert_eq!(b.name().parse::<Backend>().ok(), Some(b));
    }
}

#[test]
fn a_detached_socket_lends_no_descriptor() {
    assert!(SocketFd::detached().as_fd().is_none());
}

// --- the driver over loopback --------------------------------------------------------------

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

fn driver(backend: Backend, config: &DriverConfig) -> Driver {
    Driver::new(backend, config).unwrap_or_else(|e| panic!("{backend} driver: {e}"))
}

/// Runs the driver until `f` says done, or panics at the deadline.
fn run_until(d: &mut Driver, what: &str, mut f: impl FnMut(&mut Driver, Completion) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = Instant::now();
        assert!(now < deadline, "deadline passed waiting for {what}");
        d.submit_and_wait(Some((deadline - now).min(Duration::from_millis(500))))
            .expect("submit_and_wait");
        while let Some(c) = d.next_completion() {
            if f(d, c) {
                return;
            }
        }
    }
}

/// Runs the driver until no more operations are in flight than `idle` (the waker's poll on
/// io_uring, measured on a fresh driver).
fn drain(d: &mut Driver, idle: usize, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while d.stats().ops_in_flight > idle {
        assert!(
            Instant::now() < deadline,
            "{what}: operations left in flight"
        );
        d.submit_and_wait(Some(Duration::from_millis(50)))
            .expect("submit_and_wait");
        while d.next_completion().is_some() {}
    }
}

fn local_addr(fd: &SocketFd) -> SocketAddr {
    socket::local_addr(fd.as_fd().expect("open")).expect("local addr")
}

/// A listening socket on a free loopback port.
fn listener() -> SocketFd {
    let mut listeners = socket::listeners(&loopback(), 1, 128).expect("listener");
    SocketFd::from(listeners.pop().expect("one listener"))
}

/// A listener on port 0 and a std client connected to it; returns (listener, accepted
/// socket, client).
fn accepted_pair(d: &mut Driver) -> (SocketFd, SocketFd, TcpStream) {
    let listener = listener();
    let addr = local_addr(&listener);
    d.accept(&listener, Token::new(OpKind::Accept, 0, 0));
    let client = TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut fd = None;
    run_until(d, "accept", |_, c| {
        assert_eq!(c.token.kind(), OpKind::Accept, "{c:?}");
        assert!(c.result >= 0, "accept failed: {c:?}");
        fd = c.socket;
        true
    });
    (
        listener,
        SocketFd::from(fd.expect("an accept carries its socket")),
        client,
    )
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn echo_over_loopback_with_multishot_recv_and_vectored_send() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let idle = d.stats().ops_in_flight;
        let (listener, fd, mut client) = accepted_pair(&mut d);
        let recv_token = Token::new(OpKind::Recv, 1, 7);
        d.recv(&fd, recv_token);
        client.write_all(b"hello, vectored world").expect("write");

        let mut got = Vec::new();
        run_until(&mut d, "recv", |_, c| {
            assert_eq!(c.token, recv_token);
            assert!(c.result > 0, "{backend}: {c:?}");
            assert!(c.more, "{backend}: multishot recv ended early: {c:?}");
            let mut buf = c.buffer.expect("recv completion carries a buffer");
            assert_eq!(buf.len(), c.result as usize);
            got.extend_from_slice(buf.as_mut_slice());
            got.len() >= 21
        });
        assert_eq!(got, b"hello, vectored world");

        // Echo it back as three frames in one vectored send.
        let frames = vec![
            Bytes::copy_from_slice(&got[..5]),
            Bytes::copy_from_slice(&got[5..14]),
            Bytes::copy_from_slice(&got[14..]),
        ];
        let send_token = Token::new(OpKind::Send, 1, 7);
        assert_eq!(d.send(&fd, send_token, frames), 3);
        run_until(&mut d, "send", |_, c| {
            assert_eq!(c.token, send_token, "{backend}: {c:?}");
            assert_eq!(c.result, 21, "{backend}: {c:?}");
            true
        });
        let mut echoed = [0u8; 21];
        client.read_exact(&mut echoed).expect("read echo");
        assert_eq!(&echoed, b"hello, vectored world");
        assert_eq!(d.stats().sends_in_flight, 0);

        // The peer closes: end of stream ends the multishot receive.
        drop(client);
        run_until(&mut d, "end of stream", |_, c| {
            assert_eq!(c.token, recv_token);
            if c.more {
                return false;
            }
            assert_eq!(c.result, 0, "{backend}: {c:?}");
            true
        });
        // Closing ends the listener's accept too: nothing is left in flight.
        d.close(fd);
        d.close(listener);
        drain(&mut d, idle, &format!("{backend}: close"));
    }
}

#[test]
fn connect_then_send_to_a_std_listener() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let listener = TcpListener::bind(loopback()).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fd = SocketFd::from(socket::tcp_socket(&addr).expect("socket"));
        let token = Token::new(OpKind::Connect, 3, 1);
        d.connect(&fd, addr, token);
        run_until(&mut d, "connect", |_, c| {
            assert_eq!(c.token, token);
            assert_eq!(c.result, 0, "{backend}: {c:?}");
            true
        });
        let (mut peer, _) = listener.accept().expect("accept");
        peer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let send = Token::new(OpKind::Send, 3, 1);
        d.send(&fd, send, [Bytes::from_static(b"ping")]);
        run_until(&mut d, "send", |_, c| {
            assert_eq!((c.token, c.result), (send, 4), "{backend}");
            true
        });
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        let peer_addr = socket::peer_addr(fd.as_fd().expect("open")).expect("peer addr");
        assert_eq!(peer_addr, addr, "{backend}");
        d.close(fd);
        d.submit().expect("submit");
    }
}

/// Bytes in [`send_big`]'s send.
const BIG: usize = 4 << 20;

/// Shrinks `fd`'s send buffer to 16 KiB and sends `BIG` bytes as 64 frames of 64 KiB in
/// one send: more than the socket takes at once. Returns the send's token.
fn send_big(d: &mut Driver, fd: &SocketFd, data: &Bytes) -> Token {
    socket::set_send_buffer_size(fd.as_fd().expect("open"), 16 * 1024).expect("sndbuf");
    let token = Token::new(OpKind::Send, 9, 0);
    let frames = (0..BIG)
        .step_by(64 * 1024)
        .map(|at| data.slice(at..at + 64 * 1024));
    assert_eq!(d.send(fd, token, frames), 64);
    token
}

#[test]
fn a_send_larger_than_the_socket_buffer_completes_whole() {
    const TOTAL: usize = BIG;
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let (_listener, fd, client) = accepted_pair(&mut d);
        // A peer that starts reading late: the driver has to resume the write itself.
        let data = Bytes::from(pattern(TOTAL));
        let reader = late_reader(client, Duration::from_millis(50), TOTAL);
        let token = send_big(&mut d, &fd, &data);
        let mut completions = 0;
        run_until(&mut d, "the send's completion", |_, c| {
            assert_eq!(c.token, token);
            assert_eq!(
                c.result, TOTAL as i32,
                "{backend}: one completion, every byte"
            );
            completions += 1;
            true
        });
        assert_eq!(completions, 1);
        assert_eq!(d.stats().sends_in_flight, 0);
        let got = reader.join().expect("reader thread");
        assert!(got == data, "{backend}: bytes differ");
        d.close(fd);
    }
}

/// A peer that reads a little, then closes with unread bytes: a reset.
fn resetting_peer(client: TcpStream) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = client;
        let mut buf = vec![0u8; 64 * 1024];
        let n = client.read(&mut buf).expect("read");
        assert!(n > 0);
    })
}

/// Runs until the send of `token` completes, which must be with an error.
fn expect_send_error(d: &mut Driver, token: Token, backend: Backend) {
    run_until(d, "the send's completion", |_, c| {
        assert_eq!(c.token, token);
        assert!(
            c.result < 0,
            "{backend}: a send that could not finish reports an error, got {c:?}"
        );
        true
    });
}

#[test]
fn a_send_cut_short_by_the_peer_ends_with_an_error() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let (_listener, fd, client) = accepted_pair(&mut d);
        let data = Bytes::from(pattern(BIG));
        let reader = resetting_peer(client);
        let token = send_big(&mut d, &fd, &data);
        expect_send_error(&mut d, token, backend);
        reader.join().expect("reader thread");
        assert_eq!(d.stats().sends_in_flight, 0);
        d.close(fd);
    }
}

#[test]
fn multishot_recv_rearms_after_enobufs() {
    const TOTAL: usize = 256 * 1024;
    for backend in Backend::ALL {
        let config = DriverConfig {
            recv_buffers: 2,
            recv_buffer_size: 512,
            epoll_scratch_size: 512,
            ..DriverConfig::default()
        };
        let mut d = driver(backend, &config);
        let (_listener, fd, client) = accepted_pair(&mut d);
        let token = Token::new(OpKind::Recv, 4, 2);
        d.recv(&fd, token);
        let data = pattern(TOTAL);
        let to_send = data.clone();
        let writer = std::thread::spawn(move || {
            let mut client = client;
            client.write_all(&to_send).expect("write");
            client
        });

        let mut got = Vec::with_capacity(TOTAL);
        // Hold the first buffers so the ring runs dry for certain, then let go.
        let mut held = Vec::new();
        let mut rearms = 0;
        run_until(&mut d, "all bytes received", |d, mut c| {
            assert_eq!(c.token, token);
            if let Some(mut buf) = c.buffer.take() {
                got.extend_from_slice(buf.as_mut_slice());
                if rearms == 0 && held.len() < 2 {
                    held.push(buf);
                }
            }
            if !c.more {
                assert!(
                    c.result > 0 || c.result == -libc::ENOBUFS,
                    "{backend}: recv ended with {c:?}"
                );
                held.clear();
                rearms += 1;
                d.recv(&fd, token);
            }
            got.len() >= TOTAL
        });
        assert!(got == data, "{backend}: bytes differ");
        if backend == Backend::Uring {
            assert!(d.stats().enobufs > 0, "ring never ran dry");
            assert!(rearms > 0);
        }
        drop(writer.join().expect("writer"));
        d.close(fd);
    }
}

#[test]
fn stop_recv_ends_the_receive_and_bytes_wait_in_the_socket() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let (_listener, fd, mut client) = accepted_pair(&mut d);
        let token = Token::new(OpKind::Recv, 5, 1);
        d.recv(&fd, token);
        d.stop_recv(&fd, token);
        run_until(&mut d, "the receive's final completion", |_, c| {
            assert_eq!(c.token, token);
            assert!(
                c.result == -libc::ECANCELED || c.result > 0,
                "{backend}: {c:?}"
            );
            !c.more
        });
        client.write_all(b"later").expect("write");
        // Nothing is received while stopped: the bytes stay in the socket.
        d.submit_and_wait(Some(Duration::from_millis(50)))
            .expect("wait");
        assert!(
            d.next_completion().is_none(),
            "{backend}: received while stopped"
        );
        d.recv(&fd, token);
        let mut got = Vec::new();
        run_until(&mut d, "the bytes after re-arming", |_, c| {
            if let Some(mut buf) = c.buffer {
                got.extend_from_slice(buf.as_mut_slice());
            }
            got.len() >= 5
        });
        assert_eq!(got, b"later", "{backend}");
        d.close(fd);
    }
}

#[test]
fn waker_from_another_thread_wakes_submit_and_wait() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let waker = d.waker();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let b2 = Arc::clone(&barrier);
        let t = std::thread::spawn(move || {
            b2.wait();
            waker.wake();
        });
        barrier.wait();
        let start = Instant::now();
        let mut woke = false;
        while !woke && start.elapsed() < DEADLINE {
            // Longer than the test deadline: only the wake-up can end this wait in time.
            d.submit_and_wait(Some(DEADLINE * 2)).expect("wait");
            while let Some(c) = d.next_completion() {
                assert_eq!(c.token, Token::WAKE, "{backend}: {c:?}");
                assert!(c.more);
                woke = true;
            }
        }
        assert!(woke, "{backend}: waker did not wake the driver");
        t.join().expect("waker thread");
    }
}

#[test]
fn wake_ups_coalesce() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let waker = d.waker();
        for round in 0..3 {
            for _ in 0..100 {
                waker.clone().wake();
            }
            let mut wakes = 0;
            run_until(&mut d, "wake", |_, c| {
                assert_eq!(c.token, Token::WAKE);
                wakes += 1;
                true
            });
            // Nothing else is pending: a zero-timeout turn must produce nothing.
            d.submit_and_wait(Some(Duration::ZERO)).expect("poll");
            while d.next_completion().is_some() {
                wakes += 1;
            }
            assert_eq!(wakes, 1, "{backend} round {round}: burst was not coalesced");
        }
    }
}

/// Frame bytes that run `on_drop` when the last handle to them drops.
struct DropHook<F: FnMut() + Send + 'static>(Vec<u8>, F);

impl<F: FnMut() + Send + 'static> AsRef<[u8]> for DropHook<F> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<F: FnMut() + Send + 'static> Drop for DropHook<F> {
    fn drop(&mut self) {
        (self.1)();
    }
}

/// A frame whose drop is observable.
fn tracked_frame(len: usize) -> (Bytes, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let bytes = Bytes::from_owner(DropHook(pattern(len), move || {
        flag.store(true, Ordering::SeqCst)
    }));
    (bytes, dropped)
}

/// Sends tracked 1 MiB frames to a peer that does not read until one send has to wait (no
/// completion right after submission). Returns the drop flag of that waiting frame.
fn send_until_one_waits(d: &mut Driver, fd: &SocketFd, token: Token) -> Arc<AtomicBool> {
    socket::set_send_buffer_size(fd.as_fd().expect("open"), 16 * 1024).expect("sndbuf");
    for _ in 0..64 {
        let (frame, dropped) = tracked_frame(1 << 20);
        d.send(fd, token, [frame]);
        d.submit().expect("submit");
        let mut completed = false;
        while let Some(c) = d.next_completion() {
            if c.token == token {
                assert!(c.result > 0, "{c:?}");
                completed = true;
            }
        }
        if !completed {
            assert_eq!(d.stats().sends_in_flight, 1, "a send waits in the table");
            assert!(!dropped.load(Ordering::SeqCst), "freed while in flight");
            return dropped;
        }
        assert!(
            dropped.load(Ordering::SeqCst),
            "completed send not released"
        );
    }
    panic!("no send ever had to wait");
}

#[test]
fn close_with_send_in_flight_keeps_the_buffer_until_its_completion() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let (_listener, fd, client) = accepted_pair(&mut d);
        let token = Token::new(OpKind::Send, 6, 3);
        let dropped = send_until_one_waits(&mut d, &fd, token);

        d.close(fd);
        if backend == Backend::Uring {
            // Nothing reaped yet: the kernel may still hold the iovec, so the frame is parked.
            assert!(
                !dropped.load(Ordering::SeqCst),
                "uring: freed before its completion"
            );
        }
        run_until(
            &mut d,
            &format!("{backend}: send completion after close"),
            |_, c| {
                if c.token != token {
                    return false;
                }
                assert!(!c.more);
                assert!(
                    c.result == -libc::ECANCELED || c.result >= 0,
                    "{backend}: {c:?}"
                );
                true
            },
        );
        assert_eq!(d.stats().sends_in_flight, 0);
        assert!(dropped.load(Ordering::SeqCst), "{backend}: frame leaked");
        drop(client);
    }
}

#[test]
fn dropping_the_driver_with_a_send_in_flight_drains_it() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let (_listener, fd, client) = accepted_pair(&mut d);
        d.recv(&fd, Token::new(OpKind::Recv, 8, 0));
        let dropped = send_until_one_waits(&mut d, &fd, Token::new(OpKind::Send, 8, 0));
        drop(d);
        assert!(
            dropped.load(Ordering::SeqCst),
            "{backend}: frame leaked on drop"
        );
        drop(client);
    }
}

const EMFILE_CHILD: &str = "RINGCAST_TEST_EMFILE_CHILD";

/// The child half of `accept_reports_emfile_and_can_be_rearmed`: does nothing unless run by
/// it, since it lowers this process's fd limit.
#[test]
fn emfile_child() {
    let Some(backend) = std::env::var(EMFILE_CHILD)
        .ok()
        .and_then(|b| b.parse::<Backend>().ok())
    else {
        return;
    };
    let mut d = driver(backend, &DriverConfig::default());
    let listener = listener();
    let addr = local_addr(&listener);
    let clients: Vec<SocketFd> = (0..2)
        .map(|_| SocketFd::from(socket::tcp_socket(&addr).expect("client socket")))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        d.connect(c, addr, Token::new(OpKind::Connect, i as u32, 0));
    }
    let mut connected = 0;
    run_until(&mut d, "client connects", |_, c| {
        assert_eq!(c.result, 0, "{c:?}");
        connected += 1;
        connected == clients.len()
    });

    // Use up every fd below a low limit.
    socket::set_fd_limit(256).expect("lower fd limit");
    let mut fillers = Vec::new();
    for _ in 0..1024 {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("filling fds: {e}"),
        }
    }
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "fds not exhausted"
    );

    let token = Token::new(OpKind::Accept, 0, 0);
    d.accept(&listener, token);
    run_until(&mut d, "EMFILE", |_, c| {
        assert_eq!(c.token, token);
        assert_eq!(c.result, -libc::EMFILE, "{c:?}");
        assert!(c.socket.is_none());
        assert!(!c.more, "an accept error must end the operation");
        true
    });
    // Ended means ended: no completion keeps coming while the worker backs off.
    d.submit_and_wait(Some(Duration::from_millis(50)))
        .expect("wait");
    assert!(d.next_completion().is_none(), "accept spun after EMFILE");

    fillers.clear();
    d.accept(&listener, token);
    run_until(&mut d, "accept after re-arm", |_, c| {
        assert_eq!(c.token, token);
        assert!(c.result >= 0, "{c:?}");
        assert!(c.socket.is_some());
        true
    });
    println!("EMFILE-CHILD-OK {backend}");
}

#[test]
fn accept_reports_emfile_and_can_be_rearmed() {
    let exe = std::env::current_exe().expect("test binary");
    for backend in Backend::ALL {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "sys::tests::emfile_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EMFILE_CHILD, backend.name())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn child");
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{backend}: EMFILE child timed out");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_string(&mut out).expect("stdout");
        }
        if let Some(mut s) = child.stderr.take() {
            s.read_to_string(&mut err).expect("stderr");
        }
        assert!(
            status.success() && out.contains(&format!("EMFILE-CHILD-OK {backend}")),
            "{backend}: child failed ({status}):\n{out}\n{err}"
        );
    }
}

#[test]
fn backend_from_env_and_features() {
    for backend in Backend::ALL {
        let d = driver(backend, &DriverConfig::default());
        assert_eq!(d.backend(), backend);
        let features = d.features();
        assert!(features.starts_with(match backend {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        }));
    }
    let (d, why) =
        Driver::new_or_fallback(Backend::Uring, &DriverConfig::default()).expect("some backend");
    assert!(why.is_none() || d.backend() == Backend::Epoll);
}

/// An accept completion dropped unread closes its socket: the descriptor is owned by the
/// completion, not leaked.
#[test]
fn an_accept_completion_dropped_unread_closes_its_socket() {
    for backend in Backend::ALL {
        let mut d = driver(backend, &DriverConfig::default());
        let listener = listener();
        d.accept(&listener, Token::new(OpKind::Accept, 0, 0));
        let mut client = TcpStream::connect(local_addr(&listener)).expect("connect");
        client
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        run_until(&mut d, "accept", |_, c| {
            assert!(c.socket.is_some(), "{backend}: {c:?}");
            true // dropped here, socket and all
        });
        let mut byte = [0u8; 1];
        let n = client
            .read(&mut byte)
            .expect("end of stream, not a timeout");
        assert_eq!(n, 0, "{backend}: the accepted socket was closed");
        d.close(listener);
    }
}

// --- zero-copy sends -----------------------------------------------------------------------

/// Frames of at least this size go zero-copy in these tests (io_uring; epoll copies).
const ZC_MIN: usize = 64 * 1024;

fn zc_config() -> DriverConfig {
    DriverConfig {
        zero_copy_min: Some(ZC_MIN),
        ..DriverConfig::default()
    }
}

/// Not dropped yet, in a [`zc_tracked_frame`]'s record.
const ALIVE: u64 = u64::MAX;

/// Zero-copy notifications this thread's drivers are waiting for (always 0 on epoll).
fn zc_pending() -> u64 {
    uring::ZC_PENDING.with(|p| p.get())
}

/// A frame of `bytes` whose drop records how many zero-copy notifications this thread's
/// drivers were still waiting for at that moment ([`ALIVE`] until then).
fn zc_tracked_frame(bytes: Vec<u8>) -> (Bytes, Arc<AtomicU64>) {
    let record = Arc::new(AtomicU64::new(ALIVE));
    let at_drop = Arc::clone(&record);
    let bytes = Bytes::from_owner(DropHook(bytes, move || {
        at_drop.store(zc_pending(), Ordering::SeqCst)
    }));
    (bytes, record)
}

/// Runs the driver until every record says dropped.
fn run_until_dropped(d: &mut Driver, records: &[Arc<AtomicU64>], what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while records.iter().any(|r| r.load(Ordering::SeqCst) == ALIVE) {
        assert!(Instant::now() < deadline, "{what}: a frame was never freed");
        d.submit_and_wait(Some(Duration::from_millis(50)))
            .expect("submit_and_wait");
        while d.next_completion().is_some() {}
    }
}

/// Every frame dropped with no notification outstanding (`baseline`: what was pending
/// before the test's sends, 0 on a fresh thread).
fn assert_freed_after_notifications(records: &[Arc<AtomicU64>], baseline: u64, what: &str) {
    for (i, r) in records.iter().enumerate() {
        let at_drop = r.load(Ordering::SeqCst);
        assert_ne!(at_drop, ALIVE, "{what}: frame {i} never freed");
        assert_eq!(
            at_drop,
            baseline,
            "{what}: frame {i} freed with {} notification(s) outstanding",
            at_drop - baseline
        );
    }
}

/// The zero-copy path ran on io_uring (and every notification is in), and not on epoll:
/// a test cannot pass by copying silently.
fn assert_zero_copy_ran(d: &Driver, backend: Backend, sends: u64, what: &str) {
    let s = d.stats();
    match backend {
        Backend::Uring => {
            assert!(s.zc_submitted > 0, "{what}: no zero-copy submission");
            assert_eq!(
                s.zc_notified, s.zc_submitted,
                "{what}: notifications missing"
            );
            assert_eq!(
                s.zero_copy.sent + s.zero_copy.copied,
                sends,
                "{what}: zero-copy sends counted: {s:?}"
            );
            assert_eq!(d.zero_copy(), s.zero_copy);
        }
        Backend::Epoll => {
            assert_eq!(
                (s.zc_submitted, s.zc_notified, s.zero_copy),
                (0, 0, ZeroCopyCounts::default()),
                "{what}: epoll copies"
            );
        }
    }
    assert_eq!(s.sends_in_flight, 0, "{what}: a send left in the table");
}

/// A zero-copy driver on `backend` and an accepted connection whose send buffer is 16 KiB
/// (listener, socket, client).
fn zc_connection(backend: Backend) -> (Driver, SocketFd, SocketFd, TcpStream) {
    let mut d = driver(backend, &zc_config());
    let (listener, fd, client) = accepted_pair(&mut d);
    socket::set_send_buffer_size(fd.as_fd().expect("open"), 16 * 1024).expect("sndbuf");
    (d, listener, fd, client)
}

/// Sends one tracked frame of `BIG` bytes with a token of key `key`; returns the frame's
/// record, the notifications pending before the send, and the token.
fn send_tracked_big(d: &mut Driver, fd: &SocketFd, key: u32) -> (Arc<AtomicU64>, u64, Token) {
    let baseline = zc_pending();
    let (frame, record) = zc_tracked_frame(pattern(BIG));
    let token = Token::new(OpKind::Send, key, 1);
    d.send(fd, token, [frame]);
    (record, baseline, token)
}

/// A reader on its own thread that starts after `delay` and reads until `total` bytes.
fn late_reader(
    mut client: TcpStream,
    delay: Duration,
    total: usize,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let mut got = Vec::with_capacity(total);
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < total {
            let n = client.read(&mut buf).expect("read");
            assert!(n > 0, "early end of stream");
            got.extend_from_slice(&buf[..n]);
        }
        got
    })
}

/// A frame over the threshold goes zero-copy on io_uring, and is freed only once its
/// notification is in: never while the kernel may still send from its pages, even after
/// the worker has been told of the send. A frame under the threshold copies.
#[test]
fn a_zero_copy_frame_is_freed_only_after_its_notification() {
    const LEN: usize = 256 * 1024;
    for backend in Backend::ALL {
        let mut d = driver(backend, &zc_config());
        let (_listener, fd, client) = accepted_pair(&mut d);
        let reader = late_reader(client, Duration::ZERO, LEN + 100);
        let baseline = zc_pending();
        let (frame, record) = zc_tracked_frame(pattern(LEN));
        let token = Token::new(OpKind::Send, 20, 1);
        d.send(&fd, token, [frame]);
        run_until(&mut d, "the zero-copy send's completion", |d, c| {
            assert_eq!((c.token, c.result), (token, LEN as i32), "{backend}");
            let s = d.stats();
            if s.zc_notified < s.zc_submitted {
                assert_eq!(
                    record.load(Ordering::SeqCst),
                    ALIVE,
                    "{backend}: freed at the completion, its notification outstanding"
                );
                assert_eq!(s.sends_in_flight, 1, "{backend}: the slot waits");
            }
            true
        });
        run_until_dropped(&mut d, std::slice::from_ref(&record), backend.name());
        assert_freed_after_notifications(&[record], baseline, backend.name());
        assert_zero_copy_ran(&d, backend, 1, backend.name());

        // Under the threshold: an ordinary copying send.
        let before = d.stats().zc_submitted;
        let small = Bytes::from(pattern(100));
        d.send(&fd, token, [small]);
        run_until(&mut d, "the small send", |_, c| {
            assert_eq!((c.token, c.result), (token, 100), "{backend}");
            true
        });
        assert_eq!(
            d.stats().zc_submitted,
            before,
            "{backend}: small frame went zero-copy"
        );
        let got = reader.join().expect("reader");
        let mut want = pattern(LEN);
        want.extend_from_slice(&pattern(100));
        assert!(got == want, "{backend}: bytes differ");
        d.close(fd);
    }
}

/// A zero-copy send larger than the socket buffer goes out in several rounds, each with
/// its own notification, arrives whole and in order, and its frames are freed only after
/// the last notification.
#[test]
fn a_zero_copy_send_larger_than_the_socket_buffer_arrives_whole() {
    const FRAMES: usize = 16;
    const FRAME: usize = 256 * 1024;
    const TOTAL: usize = FRAMES * FRAME;
    for backend in Backend::ALL {
        let (mut d, _listener, fd, client) = zc_connection(backend);
        let data = pattern(TOTAL);
        let (frames, records): (Vec<Bytes>, Vec<_>) = data
            .chunks(FRAME)
            .map(|chunk| zc_tracked_frame(chunk.to_vec()))
            .unzip();
        // A peer that starts reading late: the driver has to resume the write itself.
        let reader = late_reader(client, Duration::from_millis(50), TOTAL);
        let baseline = zc_pending();
        let token = Token::new(OpKind::Send, 21, 1);
        assert_eq!(d.send(&fd, token, frames), FRAMES);
        let mut completions = 0;
        run_until(&mut d, "the send's completion", |_, c| {
            assert_eq!((c.token, c.result), (token, TOTAL as i32), "{backend}");
            completions += 1;
            true
        });
        assert_eq!(completions, 1);
        run_until_dropped(&mut d, &records, backend.name());
        assert_freed_after_notifications(&records, baseline, backend.name());
        assert_zero_copy_ran(&d, backend, 1, backend.name());
        if backend == Backend::Uring {
            assert!(
                d.stats().zc_submitted > 1,
                "uring: one round only, the socket buffer took it all"
            );
        }
        let got = reader.join().expect("reader thread");
        assert!(got == data, "{backend}: bytes differ");
        d.close(fd);
    }
}

/// A zero-copy send cut short by the peer's reset ends with an error, and its frame is
/// freed only after the notifications of every round it made.
#[test]
fn a_zero_copy_send_cut_short_by_a_reset_frees_its_frame_after_the_notifications() {
    for backend in Backend::ALL {
        let (mut d, _listener, fd, client) = zc_connection(backend);
        let reader = resetting_peer(client);
        let (record, baseline, token) = send_tracked_big(&mut d, &fd, 22);
        expect_send_error(&mut d, token, backend);
        reader.join().expect("reader thread");
        run_until_dropped(&mut d, std::slice::from_ref(&record), backend.name());
        assert_freed_after_notifications(&[record], baseline, backend.name());
        assert_zero_copy_ran(&d, backend, 1, backend.name());
        d.close(fd);
    }
}

/// Dropping the driver with a zero-copy send in flight (pages in the socket, the
/// notification outstanding) waits for the notifications before it frees the frame.
#[test]
fn dropping_the_driver_with_a_zero_copy_send_in_flight_waits_for_its_notifications() {
    for backend in Backend::ALL {
        let (mut d, _listener, fd, client) = zc_connection(backend);
        let (record, baseline, _) = send_tracked_big(&mut d, &fd, 23);
        // Let the kernel take what the socket holds; the peer does not read yet.
        for _ in 0..5 {
            d.submit_and_wait(Some(Duration::from_millis(10)))
                .expect("submit_and_wait");
            if let Some(c) = d.next_completion() {
                panic!("{backend}: the send cannot have finished: {c:?}");
            }
        }
        assert_eq!(
            record.load(Ordering::SeqCst),
            ALIVE,
            "{backend}: freed early"
        );
        if backend == Backend::Uring {
            let s = d.stats();
            assert!(
                s.zc_submitted > s.zc_notified,
                "uring: nothing outstanding: {s:?}"
            );
            assert!(zc_pending() > baseline);
        }
        // The peer reads what was sent while the driver drains, then stops (the socket is
        // not closed: a `SocketFd` dropped without `Driver::close` stays open).
        let reader = std::thread::spawn(move || {
            let mut client = client;
            std::thread::sleep(Duration::from_millis(100));
            client
                .set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
        });
        drop(d);
        assert_freed_after_notifications(&[record], baseline, backend.name());
        reader.join().expect("reader thread");
    }
}
