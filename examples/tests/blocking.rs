//! `echo-server --backend blocking`: one thread per connection, with a connection cap
//! that answers 503 (also when no thread can be made), an idle timeout, and echoes. And
//! `--backend async` (tokio tasks over `AsyncConn`) with the same cap and idle timeout.

mod support;

use std::time::{Duration, Instant};

use ringcast::{CloseCode, Error, MessageType};
use support::{dial, Program, WAIT};

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");

fn status_of(result: Result<ringcast::Conn<ringcast::client::ClientStream>, Error>) -> u16 {
    match result {
        Err(Error::Handshake(err)) => err.status(),
        Err(other) => panic!("expected a refused handshake, got {other:?}"),
        Ok(_) => panic!("expected a refused handshake, the dial succeeded"),
    }
}

#[test]
fn connections_past_the_cap_are_answered_503_and_a_freed_place_is_taken_again() {
    for backend in ["blocking", "async"] {
        capped(backend);
    }
}

fn capped(backend: &str) {
    let server = Program::start(ECHO, &["--backend", backend, "--max-conns", "2"]);
    let url = format!("ws://{}/", server.addr);
    let mut first = dial(&url).unwrap();
    let second = dial(&url).unwrap();
    first.write_message(MessageType::Text, b"echo").unwrap();
    assert_eq!(first.read_message().unwrap().1, b"echo");
    assert_eq!(status_of(dial(&url)), 503);
    // Closing one frees its place once its thread has ended.
    drop(second);
    let started = Instant::now();
    let mut third = loop {
        match dial(&url) {
            Ok(conn) => break conn,
            Err(Error::Handshake(err)) if err.status() == 503 => {
                assert!(
                    started.elapsed() < WAIT,
                    "{backend}: the place was never freed"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => panic!("unexpected dial error {other:?}"),
        }
    };
    third
        .write_message(MessageType::Binary, &[1, 2, 3])
        .unwrap();
    assert_eq!(third.read_message().unwrap().1, [1, 2, 3]);
}

#[test]
fn a_connection_no_thread_can_be_made_for_is_answered_503_and_the_server_goes_on() {
    // A stack larger than the machine's memory: every thread spawn fails.
    let server = Program::start(
        ECHO,
        &["--backend", "blocking", "--thread-stack-kib", "1073741824"],
    );
    let url = format!("ws://{}/", server.addr);
    for _ in 0..3 {
        assert_eq!(status_of(dial(&url)), 503);
    }
}

#[test]
fn an_idle_connection_is_closed_with_1001() {
    for backend in ["blocking", "async"] {
        idle(backend);
    }
}

fn idle(backend: &str) {
    let server = Program::start(ECHO, &["--backend", backend, "--idle-timeout-secs", "1"]);
    let mut conn = dial(&format!("ws://{}/", server.addr)).unwrap();
    conn.write_message(MessageType::Text, b"still here")
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"still here");
    // Then silence: the server says goodbye within its idle timeout.
    match conn.read_message() {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode::GOING_AWAY, "{backend}"),
        other => panic!(
            "{backend}: expected close 1001, got {:?}",
            other.map(|_| ())
        ),
    }
}
