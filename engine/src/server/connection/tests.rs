//! The connection state machine against an in-memory peer: no socket, no thread, no
//! waiting. A fake driver carries out the machine's ops (a send's bytes land in the
//! peer's buffer, and complete at once unless the peer stalls), and time is an input, so
//! a 10 s handshake timeout takes no time at all.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::super::handle::{Command, Outgoing};
use super::super::stats::Counter;
use super::super::{Backpressure, ConnId, Handler, ServerConfig, Socket, UpgradeAnswer};
use super::{Machine, Op};
use crate::proto::deflate::Inflater;
use crate::proto::{CloseCode, Decoder, Encoder, Event, MessageType, OpCode, Role};
use crate::sys::{SendBuf, SocketFd};

/// What the handler was told, in order.
type Log = Rc<RefCell<Vec<String>>>;

/// Upgrade answers the handler kept ([`Handler::defer_upgrade`]), while deferring.
type Deferred = Rc<RefCell<Option<Vec<UpgradeAnswer>>>>;

/// Echoes each message; `close` closes with 1000, `big` answers 600 bytes. Defers every
/// upgrade while its second field holds a list.
struct Recorder(Log, Deferred);

impl Handler for Recorder {
    type Data = ();
    fn defer_upgrade(
        &mut self,
        _: &crate::proto::handshake::Request,
        answer: UpgradeAnswer,
    ) -> Option<UpgradeAnswer> {
        match self.1.borrow_mut().as_mut() {
            Some(kept) => {
                kept.push(answer);
                None
            }
            None => Some(answer),
        }
    }
    fn on_open(&mut self, _: &mut Socket<'_, ()>, _: &crate::proto::handshake::Request) {
        self.0.borrow_mut().push("open".into());
    }
    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        match payload {
            b"close" => socket.close(CloseCode::NORMAL_CLOSURE, "done"),
            _ => {
                let _ = socket.send(kind, payload);
            }
        }
    }
    fn on_close(&mut self, _: &mut Socket<'_, ()>, code: CloseCode, reason: &str) {
        self.0
            .borrow_mut()
            .push(format!("close {} {reason}", code.0));
    }
    fn on_drain(&mut self, _: &mut Socket<'_, ()>) {
        self.0.borrow_mut().push("drain".into());
    }
}

fn no_dial(_: &super::Pending) -> std::io::Result<SocketFd> {
    Ok(SocketFd::detached())
}

/// A worker's machine and the peers of its connections, in memory.
struct Pair {
    machine: Machine<Recorder>,
    log: Log,
    deferred: Deferred,
    /// What each connection's peer received, by slab key.
    wire: HashMap<u32, Vec<u8>>,
    /// Peers that read nothing: their sends stay in flight.
    stalled: HashSet<u32>,
    /// Sends in flight: (key, generation, bytes).
    in_flight: Vec<(u32, u32, usize)>,
    /// Sends started so far.
    sends: usize,
    listener_open: bool,
    client: Encoder,
}

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

impl Pair {
    fn new(config: ServerConfig) -> Pair {
        let log = Log::default();
        let deferred = Deferred::default();
        let shared = super::super::handle::Shared::detached(&config);
        let machine = Machine::new(
            0,
            Recorder(log.clone(), deferred.clone()),
            Arc::new(config),
            shared,
            true,
            no_dial,
        );
        Pair {
            machine,
            log,
            deferred,
            wire: HashMap::new(),
            stalled: HashSet::new(),
            in_flight: Vec::new(),
            sends: 0,
            listener_open: true,
            client: Encoder::new(Role::Client),
        }
    }

    fn generation(&self, key: u32) -> u32 {
        self.machine.core.conns[key as usize].generation
    }

    fn exists(&self, key: u32) -> bool {
        self.machine.core.conns.contains(key as usize)
    }

    /// A peer connects: returns its key.
    fn accept(&mut self) -> u32 {
        let key = self.machine.core.conns.vacant_key() as u32;
        self.machine.on_accept(Some(SocketFd::detached()), 1, true);
        self.turn();
        key
    }

    /// A peer connects and upgrades; its 101 is taken off the wire.
    fn open(&mut self) -> u32 {
        let key = self.accept();
        self.peer_sends(key, REQUEST);
        let wire = self.wire.remove(&key).expect("an answer");
        assert!(
            wire.starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&wire)
        );
        key
    }

    /// [`open`](Self::open), then subscribed to topic "t".
    fn open_subscriber(&mut self) -> u32 {
        let key = self.open();
        self.machine
            .core
            .subscribe(key as usize, b"t")
            .expect("subscribed");
        key
    }

    /// The peer's bytes arrive (one receive).
    fn peer_sends(&mut self, key: u32, bytes: &[u8]) {
        let mut bytes = bytes.to_vec();
        let generation = self.generation(key);
        let n = bytes.len() as i32;
        self.machine
            .on_recv(key, generation, n, Some(&mut bytes), true);
        self.machine.settle();
        self.turn();
    }

    /// The peer sends one frame (masked, as a client does).
    fn peer_frame(&mut self, key: u32, opcode: OpCode, payload: &[u8]) {
        let mut frame = Vec::new();
        self.client
            .encode_frame(opcode, true, false, payload, &mut frame);
        self.peer_sends(key, &frame);
    }

    /// The peer's close frame with `code`.
    fn peer_close(&mut self, key: u32, code: u16) {
        self.peer_frame(key, OpCode::Close, &code.to_be_bytes());
    }

    /// Another thread's command.
    fn command(&mut self, command: Command) {
        self.machine.command(command);
        self.turn();
    }

    fn id(&self, key: u32) -> ConnId {
        ConnId::new(0, key as usize, self.generation(key))
    }

    /// The clock moves on by `by`, then a loop turn runs.
    fn advance(&mut self, by: Duration) {
        self.machine.core.now += by;
        self.turn();
    }

    /// The end of a loop turn, then the ops, until the machine asks for nothing more
    /// (sends to peers that read complete at once, which may queue more).
    fn turn(&mut self) {
        while self.step() {}
    }

    /// One loop turn: its end, then its ops, carried out (sends to peers that read
    /// complete at once). Whether there were any.
    fn step(&mut self) -> bool {
        self.machine.end_turn();
        let ops: Vec<Op> = self.machine.ops.drain(..).collect();
        if ops.is_empty() {
            return false;
        }
        let mut completions = Vec::new();
        for op in ops {
            match op {
                Op::Send { key, generation } => {
                    let core = &mut self.machine.core;
                    let conn = &mut core.conns[key as usize];
                    let mut batch: Vec<SendBuf> = Vec::new();
                    conn.outbox.take_batch(&mut core.arena, &mut batch);
                    let wire = self.wire.entry(key).or_default();
                    let len: usize = batch.iter().map(|b| b.len()).sum();
                    batch.iter().for_each(|b| wire.extend_from_slice(b));
                    self.in_flight.push((key, generation, len));
                    self.sends += 1;
                    if !self.stalled.contains(&key) {
                        completions.push((key, generation, len));
                    }
                }
                Op::CloseListener => self.listener_open = false,
                Op::Accept | Op::Recv { .. } | Op::StopRecv { .. } => {}
                Op::Connect { .. } | Op::Close(_) => {}
            }
        }
        for (key, generation, len) in completions {
            self.complete(key, generation, len);
        }
        true
    }

    fn complete(&mut self, key: u32, generation: u32, len: usize) {
        self.in_flight
            .retain(|&(k, g, l)| (k, g, l) != (key, generation, len));
        self.machine.on_send(key, generation, len as i32);
        self.machine.settle();
    }

    /// A stalled peer starts reading: its sends in flight complete.
    fn peer_reads(&mut self, key: u32) {
        self.stalled.remove(&key);
        let done: Vec<_> = self
            .in_flight
            .iter()
            .copied()
            .filter(|&(k, _, _)| k == key)
            .collect();
        for (k, g, l) in done {
            self.complete(k, g, l);
        }
        self.turn();
    }

    /// The frames the peer received (and takes them off its wire).
    fn frames(&mut self, key: u32) -> Vec<(OpCode, Vec<u8>)> {
        let mut wire = self.wire.remove(&key).unwrap_or_default();
        let mut decoder = Decoder::new(Role::Client);
        let mut inflater = Inflater::new();
        let (mut frames, mut pos) = (Vec::new(), 0);
        while pos < wire.len() {
            let (used, event) = decoder
                .decode(&mut wire[pos..], &mut inflater)
                .expect("the server's frames are valid");
            pos += used;
            let frame = match event {
                Some(Event::Message(kind, payload)) => (kind.opcode(), payload.to_vec()),
                Some(Event::Ping(payload)) => (OpCode::Ping, payload.to_vec()),
                Some(Event::Pong(payload)) => (OpCode::Pong, payload.to_vec()),
                Some(Event::Close(body)) => {
                    let mut payload = Vec::new();
                    if let Some((code, reason)) = body {
                        payload.extend_from_slice(&code.0.to_be_bytes());
                        payload.extend_from_slice(reason.as_bytes());
                    }
                    (OpCode::Close, payload)
                }
                Some(Event::Part { .. }) | None => continue,
            };
            frames.push(frame);
        }
        frames
    }

    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn count(&self, counter: Counter) -> u64 {
        self.machine.core.counters.get(counter)
    }
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[test]
fn a_request_head_that_never_ends_is_dropped_at_the_handshake_timeout() {
    let mut pair = Pair::new(ServerConfig::default());
    let key = pair.accept();
    pair.peer_sends(key, &REQUEST[..40]);
    // The worker may sleep until the deadline, not past it (one 25 ms tick late at most).
    let now = pair.machine.core.now;
    let wait = pair.machine.wait_time(now).expect("a deadline is pending");
    assert!(wait <= Duration::from_millis(10_025), "{wait:?}");
    pair.advance(Duration::from_secs(9));
    assert!(pair.exists(key), "10 s by default");
    pair.advance(Duration::from_millis(1100));
    assert!(!pair.exists(key), "dropped at the timeout");
    assert_eq!(pair.count(Counter::ClosedHandshakeTimeout), 1);
    assert_eq!(pair.count(Counter::HandshakesFailed), 1);
    assert!(pair.frames(key).is_empty(), "no answer");
    assert!(pair.log().is_empty(), "never opened: no callback");
}

#[test]
fn a_complete_head_upgrades_and_frames_echo() {
    let mut pair = Pair::new(ServerConfig::default());
    let key = pair.open();
    assert_eq!(pair.log(), ["open"]);
    pair.peer_frame(key, OpCode::Text, b"hello");
    assert_eq!(pair.frames(key), [(OpCode::Text, b"hello".to_vec())]);
    assert_eq!(pair.count(Counter::Connections), 1);
}

#[test]
fn a_head_arriving_a_byte_per_receive_upgrades_once_whole() {
    let mut pair = Pair::new(ServerConfig::default());
    let key = pair.accept();
    for byte in REQUEST.chunks(1) {
        assert!(
            !pair.wire.contains_key(&key),
            "answered before the head was whole"
        );
        pair.peer_sends(key, byte);
    }
    let wire = pair.wire.remove(&key).expect("an answer");
    assert!(wire.starts_with(b"HTTP/1.1 101"));
    pair.peer_frame(key, OpCode::Text, b"hello");
    assert_eq!(pair.frames(key), [(OpCode::Text, b"hello".to_vec())]);
}

/// A peer whose upgrade the handler defers: its request is in, nothing answered; the
/// answers the handler kept (taken back from the handler, their ids to answer with).
fn deferred_request(pair: &mut Pair) -> (u32, ConnId) {
    *pair.deferred.borrow_mut() = Some(Vec::new());
    let key = pair.accept();
    pair.peer_sends(key, REQUEST);
    let kept = pair.deferred.borrow_mut().as_mut().map(std::mem::take);
    let answers = kept.expect("deferring");
    assert_eq!(answers.len(), 1, "one request, one answer owed");
    let id = answers[0].id();
    // The test answers through the machine's command, as the answer's channel would.
    answers.into_iter().for_each(UpgradeAnswer::withdraw);
    assert!(
        !pair.wire.contains_key(&key),
        "nothing answered before the decision"
    );
    assert!(pair.log().is_empty());
    (key, id)
}

#[test]
fn a_deferred_upgrade_waits_for_its_answer_then_opens_with_the_frames_sent_meanwhile() {
    let mut pair = Pair::new(ServerConfig::default());
    let (key, id) = deferred_request(&mut pair);
    assert_eq!(id, pair.id(key));
    pair.peer_frame(key, OpCode::Text, b"early");
    assert!(!pair.wire.contains_key(&key), "still undecided");
    let headers = vec![("X-Session".to_owned(), "7".to_owned())];
    pair.command(Command::Decide {
        id,
        answer: Box::new(Ok(headers)),
    });
    let wire = pair.wire.remove(&key).expect("the 101");
    let head = String::from_utf8_lossy(&wire);
    assert!(
        head.starts_with("HTTP/1.1 101") && head.contains("X-Session: 7"),
        "{head}"
    );
    let frames = &wire[head.find("\r\n\r\n").unwrap() + 4..];
    pair.wire.insert(key, frames.to_vec());
    assert_eq!(pair.frames(key), [(OpCode::Text, b"early".to_vec())]);
    assert_eq!(pair.log(), ["open"]);
}

#[test]
fn a_deferred_upgrade_refused_answers_with_its_status_and_closes() {
    let mut pair = Pair::new(ServerConfig::default());
    let (key, id) = deferred_request(&mut pair);
    let refusal = crate::proto::handshake::HandshakeError::new(401, "log in first");
    pair.command(Command::Decide {
        id,
        answer: Box::new(Err(refusal)),
    });
    let wire = pair.wire.remove(&key).expect("the refusal");
    let answer = String::from_utf8_lossy(&wire);
    assert!(
        answer.starts_with("HTTP/1.1 401") && answer.contains("log in first"),
        "{answer}"
    );
    assert!(!pair.exists(key), "closed once the answer is out");
    assert!(pair.log().is_empty(), "never opened");
    assert_eq!(pair.count(Counter::HandshakesFailed), 1);
}

#[test]
fn an_undecided_upgrade_is_dropped_at_the_handshake_timeout_and_a_late_answer_does_nothing() {
    let mut pair = Pair::new(ServerConfig::default());
    let (key, id) = deferred_request(&mut pair);
    pair.advance(Duration::from_millis(10_100));
    assert!(!pair.exists(key), "dropped at the handshake timeout");
    assert_eq!(pair.count(Counter::ClosedHandshakeTimeout), 1);
    // The next connection (decided at once) takes the slot; the late answer names the
    // old generation.
    *pair.deferred.borrow_mut() = None;
    let next = pair.open();
    assert_eq!(next, key, "the slot is reused");
    pair.command(Command::Decide {
        id,
        answer: Box::new(Ok(Vec::new())),
    });
    assert!(
        pair.frames(next).is_empty(),
        "the late answer reached no one"
    );
    assert_eq!(pair.log(), ["open"], "only the new connection opened");
}

#[test]
fn a_client_sending_past_64_kib_before_the_decision_is_closed() {
    let mut pair = Pair::new(ServerConfig::default());
    let (key, _) = deferred_request(&mut pair);
    pair.peer_sends(key, &vec![0x82; 40 * 1024]);
    assert!(pair.exists(key), "40 KiB are kept for after the 101");
    pair.peer_sends(key, &vec![0x82; 40 * 1024]);
    assert!(
        !pair.exists(key),
        "80 KiB are more than a pipelining client sends"
    );
    assert_eq!(pair.count(Counter::HandshakesFailed), 1);
}

#[test]
fn the_peer_s_close_is_echoed_then_the_socket_closes() {
    let mut pair = Pair::new(ServerConfig::default());
    let key = pair.open();
    pair.peer_close(key, 1000);
    assert_eq!(
        pair.frames(key),
        [(OpCode::Close, 1000u16.to_be_bytes().to_vec())]
    );
    assert_eq!(pair.log(), ["open", "close 1000 "]);
    assert!(!pair.exists(key), "closed once the reply is sent");
    assert_eq!(pair.count(Counter::ClosedByPeer), 1);
    assert_eq!(pair.count(Counter::Connections), 0);
}

#[test]
fn the_server_s_close_waits_for_the_peer_s_answer() {
    let mut pair = Pair::new(ServerConfig::default());
    let key = pair.open();
    pair.peer_frame(key, OpCode::Text, b"close");
    assert_eq!(
        pair.frames(key),
        [(OpCode::Close, close_payload(1000, "done"))]
    );
    assert_eq!(
        pair.log(),
        ["open", "close 1000 done"],
        "on_close when it starts"
    );
    assert!(pair.exists(key), "waiting for the peer's close");
    pair.peer_frame(key, OpCode::Text, b"late");
    assert!(
        pair.frames(key).is_empty(),
        "nothing delivered or sent after our close"
    );
    pair.peer_close(key, 1000);
    assert!(!pair.exists(key));
    assert!(pair.frames(key).is_empty(), "no second close frame");
    assert_eq!(pair.count(Counter::ClosedByServer), 1);
    assert_eq!(pair.log().len(), 2, "on_close once");
}

#[test]
fn a_peer_that_never_answers_our_close_is_dropped_at_the_close_timeout() {
    let mut pair = Pair::new(ServerConfig {
        close_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let key = pair.open();
    let id = pair.id(key);
    pair.command(Command::Close {
        id,
        code: CloseCode::GOING_AWAY,
        reason: "bye".into(),
    });
    assert_eq!(
        pair.frames(key),
        [(OpCode::Close, close_payload(1001, "bye"))]
    );
    pair.advance(Duration::from_millis(4900));
    assert!(pair.exists(key));
    pair.advance(Duration::from_millis(200));
    assert!(!pair.exists(key), "dropped at the close timeout");
    assert_eq!(pair.log(), ["open", "close 1001 bye"], "no second on_close");
}

#[test]
fn a_stream_that_ends_without_a_close_is_1006() {
    let mut pair = Pair::new(ServerConfig::default());
    let key = pair.open();
    let generation = pair.generation(key);
    pair.machine.on_recv(key, generation, 0, None, false);
    pair.machine.settle();
    pair.turn();
    assert!(!pair.exists(key));
    assert_eq!(pair.log(), ["open", "close 1006 "]);
    assert_eq!(pair.count(Counter::ClosedAbnormal), 1);
}

/// Sends `n` binary messages of `len` bytes to connection `key` from another thread.
fn send_from_outside(pair: &mut Pair, key: u32, n: usize, len: usize) {
    for _ in 0..n {
        let id = pair.id(key);
        let message = Outgoing::Message(MessageType::Binary, vec![7u8; len].into());
        pair.command(Command::Send { id, message });
    }
}

#[test]
fn past_the_cap_a_slow_reader_is_closed_as_a_slow_consumer() {
    let mut pair = Pair::new(ServerConfig {
        max_queued_bytes: 1000,
        ..ServerConfig::default()
    });
    let key = pair.open();
    pair.stalled.insert(key);
    send_from_outside(&mut pair, key, 2, 400);
    assert!(pair.exists(key) && pair.log() == ["open"]);
    send_from_outside(&mut pair, key, 1, 400);
    assert_eq!(pair.log(), ["open", "close 1008 slow consumer"]);
    assert_eq!(pair.count(Counter::ClosedSlowConsumer), 1);
    // The close frame goes out past the cap, after what was queued.
    pair.peer_reads(key);
    let frames = pair.frames(key);
    assert_eq!(frames.len(), 3);
    assert_eq!(
        frames[2],
        (OpCode::Close, close_payload(1008, "slow consumer"))
    );
}

#[test]
fn under_the_drop_policy_past_the_cap_is_dropped_and_the_drain_follows() {
    let mut pair = Pair::new(ServerConfig {
        max_queued_bytes: 1000,
        backpressure: Backpressure::Drop,
        ..ServerConfig::default()
    });
    let key = pair.open();
    pair.stalled.insert(key);
    send_from_outside(&mut pair, key, 3, 400);
    assert_eq!(pair.count(Counter::Drops), 1, "the third is dropped");
    assert_eq!(pair.log(), ["open"], "still open, no drain yet");
    pair.peer_reads(key);
    assert_eq!(pair.log(), ["open", "drain"]);
    assert_eq!(pair.frames(key).len(), 2);
    send_from_outside(&mut pair, key, 1, 400);
    assert_eq!(pair.frames(key).len(), 1, "it takes messages again");
}

#[test]
fn pings_of_a_peer_that_never_reads_stop_at_the_cap() {
    let mut pair = Pair::new(ServerConfig {
        max_queued_bytes: 100,
        ..ServerConfig::default()
    });
    let key = pair.open();
    pair.stalled.insert(key);
    for _ in 0..100 {
        pair.peer_frame(key, OpCode::Ping, b"0123456789");
    }
    assert!(pair.machine.core.conns[key as usize].outbox.queued_bytes() < 100 + 12);
    assert!(pair.count(Counter::Drops) >= 90);
    assert!(pair.exists(key), "pongs are dropped, the connection stays");
}

#[test]
fn an_idle_connection_gets_pings_then_is_closed() {
    let mut pair = Pair::new(ServerConfig {
        ping_interval: Some(Duration::from_secs(1)),
        idle_timeout: Some(Duration::from_secs(3)),
        ..ServerConfig::default()
    });
    let key = pair.open();
    pair.advance(Duration::from_millis(1100));
    assert_eq!(pair.frames(key), [(OpCode::Ping, Vec::new())]);
    pair.peer_frame(key, OpCode::Pong, b"");
    pair.advance(Duration::from_millis(2000));
    assert_eq!(
        pair.frames(key),
        [(OpCode::Ping, Vec::new())],
        "a pong counts"
    );
    assert!(pair.log() == ["open"]);
    pair.advance(Duration::from_millis(1100));
    let frames = pair.frames(key);
    assert_eq!(
        frames.last(),
        Some(&(OpCode::Close, close_payload(1001, "idle timeout")))
    );
    assert_eq!(pair.log(), ["open", "close 1001 idle timeout"]);
    assert_eq!(pair.count(Counter::ClosedIdle), 1);
}

#[test]
fn shutdown_closes_the_listener_and_every_connection_with_1001() {
    let mut pair = Pair::new(ServerConfig {
        shutdown_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let (open, answers) = (pair.open(), pair.open());
    let handshaking = pair.accept();
    pair.command(Command::Shutdown);
    assert!(!pair.listener_open, "the listener is closed");
    assert!(!pair.exists(handshaking), "handshaking sockets are dropped");
    for key in [open, answers] {
        let going_away = (OpCode::Close, close_payload(1001, "server shutting down"));
        assert_eq!(pair.frames(key), [going_away]);
    }
    assert_eq!(
        pair.log()
            .iter()
            .filter(|e| *e == "close 1001 server shutting down")
            .count(),
        2
    );
    let late = pair.accept();
    assert!(!pair.exists(late), "no new connection during a shutdown");
    assert_eq!(pair.count(Counter::Rejected), 1);
    pair.peer_close(answers, 1001);
    assert!(!pair.exists(answers));
    assert!(!pair.machine.finished(), "one peer has not answered yet");
    pair.advance(Duration::from_millis(5100));
    assert!(pair.machine.finished(), "done at the shutdown timeout");
    pair.machine.stop();
    assert!(pair.machine.core.conns.is_empty());
    assert_eq!(pair.count(Counter::ClosedShutdown), 3);
}

// --- coalescing (`coalesce.rs`) -----------------------------------------------------

const BOUND: Duration = Duration::from_micros(300);

/// A machine that coalesces within [`BOUND`], and a connection subscribed to "t".
fn coalescing() -> (Pair, u32) {
    let mut pair = Pair::new(ServerConfig {
        coalesce: BOUND,
        ..ServerConfig::default()
    });
    let key = pair.open_subscriber();
    (pair, key)
}

/// [`coalescing`], the connection idle for the bound, then sent "1" (taken off its wire):
/// the next published frames are held.
fn just_sent() -> (Pair, u32) {
    let (mut pair, key) = coalescing();
    pair.advance(BOUND);
    publish(&mut pair, "1");
    assert_eq!(texts(pair.frames(key)), ["1"]);
    (pair, key)
}

fn publish(pair: &mut Pair, text: &str) {
    pair.command(publish_command(text));
}

/// A publish of `text` to topic "t", as another thread's command.
fn publish_command(text: &str) -> Command {
    let message = crate::prepared::PreparedMessage::new(MessageType::Text, text.to_owned());
    let publish = super::super::handle::Publish {
        topic: bytes::Bytes::from_static(b"t"),
        message: Arc::new(message.expect("a message")),
        origin: None,
        include_origin: false,
    };
    Command::Publish(Arc::new(publish))
}

fn texts(frames: Vec<(OpCode, Vec<u8>)>) -> Vec<String> {
    frames
        .into_iter()
        .map(|(_, payload)| String::from_utf8(payload).expect("text"))
        .collect()
}

#[test]
fn coalescing_never_holds_a_lone_message_on_an_idle_connection() {
    let (mut pair, key) = coalescing();
    pair.advance(BOUND);
    publish(&mut pair, "lone");
    assert_eq!(
        texts(pair.frames(key)),
        ["lone"],
        "sent in the turn it was published"
    );
    // Idle again for the bound: the next lone one goes at once too.
    pair.advance(BOUND);
    publish(&mut pair, "again");
    assert_eq!(texts(pair.frames(key)), ["again"]);
}

#[test]
fn published_frames_after_a_send_wait_for_the_bound_then_leave_in_order_in_one_send() {
    let (mut pair, key) = coalescing();
    pair.advance(BOUND);
    publish(&mut pair, "1");
    assert_eq!(texts(pair.frames(key)), ["1"]);
    let sends = pair.sends;
    for text in ["2", "3", "4"] {
        pair.advance(Duration::from_micros(50));
        publish(&mut pair, text);
        assert!(pair.frames(key).is_empty(), "{text} is held");
    }
    // The worker may sleep until the bound, not past it.
    let now = pair.machine.core.now;
    let wait = pair
        .machine
        .wait_time(now)
        .expect("a held connection is due");
    assert_eq!(wait, Duration::from_micros(150));
    pair.advance(wait);
    assert_eq!(
        texts(pair.frames(key)),
        ["2", "3", "4"],
        "in order, at the bound"
    );
    assert_eq!(pair.sends, sends + 1, "in one send");
}

#[test]
fn the_bound_counts_from_the_completion_of_a_send_that_waited_for_the_peer() {
    let (mut pair, key) = coalescing();
    pair.advance(BOUND);
    pair.stalled.insert(key);
    publish(&mut pair, "1");
    assert_eq!(texts(pair.frames(key)), ["1"], "idle: sent at once");
    // The peer reads only after twice the bound: the send completes then.
    pair.machine.core.now += 2 * BOUND;
    pair.peer_reads(key);
    publish(&mut pair, "2");
    assert!(
        pair.frames(key).is_empty(),
        "a send just completed: held, though it started two bounds ago"
    );
    pair.advance(BOUND);
    assert_eq!(
        texts(pair.frames(key)),
        ["2"],
        "at the bound after the completion"
    );
}

#[test]
fn a_direct_frame_takes_the_held_ones_with_it_in_order() {
    let (mut pair, key) = just_sent();
    pair.advance(Duration::from_micros(10));
    publish(&mut pair, "held");
    assert!(pair.frames(key).is_empty());
    // A reply (the Recorder echoes) is not held, nor what waits before it.
    pair.peer_frame(key, OpCode::Text, b"reply");
    assert_eq!(texts(pair.frames(key)), ["held", "reply"]);
}

#[test]
fn a_segment_s_worth_of_published_frames_goes_without_waiting() {
    let (mut pair, key) = just_sent();
    let big = "x".repeat(super::super::coalesce::SEGMENT_BYTES);
    pair.advance(Duration::from_micros(10));
    publish(&mut pair, &big);
    assert_eq!(texts(pair.frames(key)), [big]);
}

#[test]
fn a_held_connection_that_goes_away_is_forgotten() {
    let (mut pair, key) = just_sent();
    pair.advance(Duration::from_micros(10));
    publish(&mut pair, "held");
    let generation = pair.generation(key);
    pair.machine.on_recv(key, generation, 0, None, false); // the peer is gone
    pair.machine.settle();
    pair.turn();
    assert!(!pair.exists(key));
    pair.advance(BOUND);
    assert_eq!(pair.machine.corks.deadline(), None, "nothing held is due");
}

// --- turns of a large fan-out -------------------------------------------------------

#[test]
fn a_fan_out_larger_than_a_turn_goes_out_over_turns_and_a_publish_meanwhile_joins_the_rest() {
    use super::SENDS_PER_TURN;
    let mut pair = Pair::new(ServerConfig::default());
    let keys: Vec<u32> = (0..SENDS_PER_TURN + 10)
        .map(|_| pair.open_subscriber())
        .collect();
    let (first, rest) = keys.split_at(SENDS_PER_TURN);
    let sends = pair.sends;
    pair.machine.command(publish_command("1"));
    assert!(pair.step());
    assert_eq!(pair.sends, sends + SENDS_PER_TURN, "one turn's worth");
    let now = pair.machine.core.now;
    assert_eq!(
        pair.machine.wait_time(now),
        Some(Duration::ZERO),
        "the rest wait for no timer"
    );
    for &key in first {
        assert_eq!(texts(pair.frames(key)), ["1"], "the oldest first");
    }
    for &key in rest {
        assert!(pair.frames(key).is_empty(), "not this turn");
    }
    // A publish arrives before the next turn: the connections not yet sent to take it
    // in the same send as the first; those already sent to, after them.
    pair.machine.command(publish_command("2"));
    let sends = pair.sends;
    assert!(pair.step());
    assert_eq!(pair.sends, sends + SENDS_PER_TURN);
    for &key in rest {
        assert_eq!(texts(pair.frames(key)), ["1", "2"], "in order, in one send");
    }
    pair.turn();
    assert_eq!(pair.sends, sends + keys.len(), "one send each");
    for &key in first {
        assert_eq!(texts(pair.frames(key)), ["2"]);
    }
    let now = pair.machine.core.now;
    assert_ne!(
        pair.machine.wait_time(now),
        Some(Duration::ZERO),
        "all sent"
    );
}
