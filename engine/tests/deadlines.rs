//! The handshake timeout bounds the whole opening handshake, on both sides, plain and
//! over TLS (`Upgrader::handshake_timeout` and `Dialer::handshake_timeout`): a
//! peer that sends one byte every half second, against a 1 s timeout. Before, each read
//! got the timeout afresh, and such a peer held a handshake for as long as it dripped.
//!
//! The tests assert on the outcome (a `TimedOut` error, the dripping peer cut off),
//! never on time: a generous guard fails them if the call hangs. Each prints how long
//! the handshake took (`cargo test --test deadlines -- --nocapture`).

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{drip, tls_configs, upgrade_request};
use ringcast::client::Proxy;
use ringcast::{Dialer, Error, Upgrader};

/// One byte every half second.
const STEP: Duration = Duration::from_millis(500);
/// The handshake timeout under test.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long a test may hang before it fails: far beyond the timeout, so a busy machine
/// never trips it, and far below what dripping the whole handshake would take.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// Runs `f` on a thread and returns its result with the time it took; fails the test
/// when it has not returned within [`HANG_GUARD`].
fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let started = Instant::now();
        let result = f();
        let _ = tx.send((started.elapsed(), result));
    });
    let (elapsed, result) = rx
        .recv_timeout(HANG_GUARD)
        .unwrap_or_else(|_| panic!("{what}: the handshake was still running after {HANG_GUARD:?}"));
    println!("{what}: the handshake ended after {elapsed:?} (timeout {TIMEOUT:?})");
    result
}

fn assert_timed_out<T>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Io(err)) if err.kind() == std::io::ErrorKind::TimedOut => {}
        Err(other) => panic!("{what}: expected a TimedOut error, got {other:?}"),
        Ok(_) => panic!("{what}: expected a TimedOut error, the handshake succeeded"),
    }
}

/// The first flight of a TLS client: its ClientHello.
fn client_hello() -> Vec<u8> {
    let (_, client) = tls_configs();
    let name = "localhost".try_into().expect("a valid name");
    let mut conn = rustls::ClientConnection::new(client, name).expect("client connection");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write to a vec");
    }
    hello
}

/// Read the client's first flight into `server` until it has an answer to send; that
/// answer (ServerHello to Finished) as bytes.
fn server_flight(tcp: &mut TcpStream, server: &mut rustls::ServerConnection) -> Vec<u8> {
    tcp.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    while !server.wants_write() {
        server.read_tls(tcp).expect("client hello");
        server.process_new_packets().expect("a valid client hello");
    }
    let mut flight = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut flight).expect("write to a vec");
    }
    flight
}

#[test]
fn server_handshake_timeout_bounds_a_client_dripping_its_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let request = upgrade_request(&addr.to_string());
    let dripper = drip(TcpStream::connect(addr).unwrap(), request.clone(), STEP);
    let (stream, _) = listener.accept().unwrap();
    let upgrader = Upgrader {
        handshake_timeout: Some(TIMEOUT),
        ..Upgrader::default()
    };
    let result = guarded("server, plain", move || {
        upgrader.upgrade(stream, &[]).map(|_| ())
    });
    assert_timed_out("server, plain", result);
    let sent = dripper.join().unwrap();
    assert!(
        sent < request.len(),
        "the client was cut off ({sent} bytes sent)"
    );
}

#[test]
fn server_handshake_timeout_bounds_a_client_dripping_its_tls_hello() {
    let (server_config, _) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let hello = client_hello();
    let dripper = drip(
        TcpStream::connect(listener.local_addr().unwrap()).unwrap(),
        hello.clone(),
        STEP,
    );
    let (tcp, _) = listener.accept().unwrap();
    let upgrader = Upgrader {
        handshake_timeout: Some(TIMEOUT),
        ..Upgrader::default()
    };
    let result = guarded("server, tls", move || {
        let tls = rustls::ServerConnection::new(server_config).unwrap();
        upgrader
            .upgrade(rustls::StreamOwned::new(tls, tcp), &[])
            .map(|_| ())
    });
    assert_timed_out("server, tls", result);
    let sent = dripper.join().unwrap();
    assert!(
        sent < hello.len(),
        "the client was cut off ({sent} bytes sent)"
    );
}

/// A server that reads the upgrade request's head, then answers with `answer`, a byte
/// every half second.
fn dripping_server(answer: &'static [u8]) -> (std::net::SocketAddr, thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        drip(tcp, answer.to_vec(), STEP).join().unwrap()
    });
    (addr, server)
}

const ANSWER: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

#[test]
fn client_handshake_timeout_bounds_a_server_dripping_its_101() {
    let (addr, server) = dripping_server(ANSWER);
    let dialer = Dialer {
        proxy: Proxy::None,
        handshake_timeout: Some(TIMEOUT),
        ..Dialer::default()
    };
    let result = guarded("client, plain", move || {
        dialer.dial(&format!("ws://{addr}/"), &[]).map(|_| ())
    });
    assert_timed_out("client, plain", result);
    let sent = server.join().unwrap();
    assert!(
        sent < ANSWER.len(),
        "the server was cut off ({sent} bytes sent)"
    );
}

#[test]
fn client_handshake_timeout_bounds_a_server_dripping_its_tls_hello() {
    let (server_config, client_config) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(server_config).unwrap();
        let flight = server_flight(&mut tcp, &mut tls);
        let len = flight.len();
        (drip(tcp, flight, STEP).join().unwrap(), len)
    });
    let dialer = Dialer {
        proxy: Proxy::None,
        handshake_timeout: Some(TIMEOUT),
        tls_client_config: Some(client_config),
        ..Dialer::default()
    };
    let result = guarded("client, tls", move || {
        dialer
            .dial(&format!("wss://localhost:{port}/"), &[])
            .map(|_| ())
    });
    assert_timed_out("client, tls", result);
    let (sent, len) = server.join().unwrap();
    assert!(
        sent < len,
        "the server was cut off ({sent} of {len} bytes sent)"
    );
}

#[test]
fn client_handshake_timeout_bounds_a_proxy_dripping_its_connect_answer() {
    const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let (proxy, server) = dripping_server(ESTABLISHED);
    let dialer = Dialer {
        proxy: Proxy::Fixed(url::Url::parse(&format!("http://{proxy}")).unwrap()),
        handshake_timeout: Some(TIMEOUT),
        ..Dialer::default()
    };
    let result = guarded("client, http proxy", move || {
        dialer.dial("ws://127.0.0.1:9/", &[]).map(|_| ())
    });
    assert_timed_out("client, http proxy", result);
    let sent = server.join().unwrap();
    assert!(
        sent < ESTABLISHED.len(),
        "the proxy was cut off ({sent} bytes sent)"
    );
}
