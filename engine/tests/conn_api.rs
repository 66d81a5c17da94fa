//! The Conn API beyond read_message/write_message (the rest of gorilla/websocket's Conn
//! methods), over real loopback sockets against a raw client built on the proto codec.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{conn_pair, tls_configs, Received, WAIT};
use ringcast::client::Proxy;
use ringcast::conn::Control;
use ringcast::proto::OpCode;
use ringcast::{join_messages, CloseCode, Dialer, Error, MessageType, PreparedMessage, Upgrader};

#[test]
fn next_reader_streams_a_fragmented_message_in_small_reads() {
    let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
    client.send(OpCode::Text, false, b"Hel");
    client.send(OpCode::Continuation, false, b"lo, ");
    client.send(OpCode::Continuation, true, b"world");
    let (message_type, mut reader) = conn.next_reader().unwrap();
    assert_eq!(message_type, MessageType::Text);
    let mut got = Vec::new();
    let mut small = [0u8; 3];
    loop {
        let n = reader.read(&mut small).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&small[..n]);
    }
    assert_eq!(got, b"Hello, world");
}

#[test]
fn next_reader_skips_the_unread_rest_of_the_previous_message() {
    let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
    client.send(OpCode::Binary, false, &[1; 100]);
    client.send(OpCode::Continuation, true, &[2; 100]);
    client.text("second");
    {
        let (_, mut reader) = conn.next_reader().unwrap();
        let mut one = [0u8; 1];
        reader.read_exact(&mut one).unwrap();
        assert_eq!(one, [1]);
    }
    let (message_type, payload) = conn.read_message().unwrap();
    assert_eq!(
        (message_type, payload.as_slice()),
        (MessageType::Text, &b"second"[..])
    );
}

#[test]
fn next_writer_larger_than_write_buffer_goes_out_as_fragments() {
    let upgrader = Upgrader {
        write_buffer_size: 64,
        ..Upgrader::default()
    };
    let (mut client, mut conn) = conn_pair(upgrader, "");
    let mut writer = conn.next_writer(MessageType::Binary).unwrap();
    for chunk in [[7u8; 40], [8u8; 40], [9u8; 40]] {
        writer.write_all(&chunk).unwrap();
    }
    writer.close().unwrap();
    let mut frames = Vec::new();
    loop {
        let (fin, opcode, payload) = client.recv_raw_frame();
        frames.push((fin, opcode, payload.len()));
        if fin {
            break;
        }
    }
    assert!(frames.len() >= 2, "{frames:?}");
    assert_eq!(frames[0].1, 0x2);
    assert!(frames[1..].iter().all(|f| f.1 == 0x0));
    assert_eq!(frames.iter().map(|f| f.2).sum::<usize>(), 120);
}

#[test]
fn json_round_trips_through_a_text_message() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Note {
        room: String,
        n: u32,
    }
    let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
    conn.write_json(&Note {
        room: "lobby".into(),
        n: 7,
    })
    .unwrap();
    let Received::Text(text) = client.recv() else {
        panic!("expected text")
    };
    client.text(&text);
    let note: Note = conn.read_json().unwrap();
    assert_eq!(
        note,
        Note {
            room: "lobby".into(),
            n: 7
        }
    );
}

#[test]
fn join_messages_puts_the_terminator_after_each_message() {
    let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
    client.text("one");
    client.text("two");
    client.send(
        OpCode::Close,
        true,
        &ringcast::format_close_message(CloseCode::NORMAL_CLOSURE, ""),
    );
    let mut joined = String::new();
    let err = join_messages(&mut conn, "\n")
        .read_to_string(&mut joined)
        .unwrap_err();
    assert_eq!(joined, "one\ntwo\n");
    let inner = err.into_inner().and_then(|e| e.downcast::<Error>().ok());
    assert!(matches!(inner.as_deref(), Some(Error::Closed(_))));
}

#[test]
fn prepared_message_is_sent_as_is_to_several_conns() {
    let message = PreparedMessage::new(MessageType::Text, "shared").unwrap();
    for _ in 0..3 {
        let (mut client, mut conn) = conn_pair(Upgrader::default(), "");
        conn.write_prepared_message(&message).unwrap();
        assert_eq!(client.recv(), Received::Text("shared".into()));
    }
}

#[test]
fn control_handle_closes_from_another_thread_while_reader_blocks() {
    let (mut client, conn) = conn_pair(Upgrader::default(), "");
    let (mut reader, mut writer) = conn.split().unwrap();
    let handle = writer.control_handle();
    let blocked = thread::spawn(move || reader.read_message());
    writer.write_message(MessageType::Text, b"before").unwrap();
    assert_eq!(client.recv(), Received::Text("before".into()));
    handle.close_with(CloseCode::GOING_AWAY, "bye").unwrap();
    assert_eq!(client.recv(), Received::Close(Some(1001), "bye".into()));
    handle.close().unwrap();
    let result = blocked.join().unwrap();
    assert!(result.is_err());
    assert!(matches!(
        writer.write_message(MessageType::Text, b"late"),
        Err(Error::CloseSent)
    ));
}

#[test]
fn read_half_answers_pings_through_the_shared_write_path() {
    let (mut client, conn) = conn_pair(Upgrader::default(), "");
    let (mut reader, _writer) = conn.split().unwrap();
    client.send(OpCode::Ping, true, b"are you there");
    client.text("msg");
    let pump = thread::spawn(move || reader.read_message().map(|(_, p)| p));
    assert_eq!(client.recv(), Received::Pong(b"are you there".to_vec()));
    assert_eq!(pump.join().unwrap().unwrap(), b"msg");
    let _ = WAIT;
}

#[test]
fn compressed_echo_round_trips_when_negotiated() {
    let upgrader = Upgrader {
        enable_compression: true,
        ..Upgrader::default()
    };
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
    let (mut client, mut conn) = conn_pair(upgrader, offer);
    assert!(conn.compression_negotiated());
    let text = "compress me ".repeat(50);
    conn.write_message(MessageType::Text, text.as_bytes())
        .unwrap();
    assert_eq!(client.recv(), Received::Text(text));
    let shared = Arc::new(PreparedMessage::new(MessageType::Text, "p".repeat(300)).unwrap());
    conn.write_prepared_message(&shared).unwrap();
    assert_eq!(client.recv(), Received::Text("p".repeat(300)));
    assert_eq!(shared.compressions(), 1);
}

#[test]
fn ping_from_another_thread_goes_out_between_fragments_of_a_message_being_written() {
    let upgrader = Upgrader {
        write_buffer_size: 16,
        ..Upgrader::default()
    };
    let (mut client, conn) = conn_pair(upgrader, "");
    let (_reader, mut writer) = conn.split().unwrap();
    let pinger = writer.control_handle();
    let mut message = writer.next_writer(MessageType::Text).unwrap();
    message.write_all(b"first fragment, ").unwrap();
    message.flush().unwrap();
    // Mid-message, another thread pings with a 200 ms deadline.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let deadline = Some(Instant::now() + Duration::from_millis(200));
        let _ = tx.send(pinger.write_control(MessageType::Ping, b"between", deadline));
    });
    rx.recv_timeout(WAIT)
        .expect("the ping did not wait for the message to end")
        .expect("the ping went out");
    message.write_all(b"then the rest").unwrap();
    message.close().unwrap();
    let frames: Vec<(bool, u8, Vec<u8>)> = (0..3).map(|_| client.recv_raw_frame()).collect();
    assert_eq!(
        frames,
        [
            (false, 0x1, b"first fragment, ".to_vec()),
            (true, 0x9, b"between".to_vec()),
            (true, 0x0, b"then the rest".to_vec()),
        ]
    );
}

#[test]
fn control_write_that_times_out_waiting_for_the_writer_leaves_the_connection_usable() {
    let (mut client, conn) = conn_pair(Upgrader::default(), "");
    let (_reader, mut writer) = conn.split().unwrap();
    let pinger = writer.control_handle();
    // A message far larger than the socket buffers: its one frame holds the write path
    // until the client reads.
    let big = vec![7u8; 32 << 20];
    let writing = thread::spawn(move || {
        writer
            .write_message(MessageType::Binary, &big)
            .map(|()| writer)
    });
    let (tx, rx) = mpsc::channel();
    let pings = thread::spawn(move || {
        // Until the writer holds the path, pings go straight out; then one times out.
        let mut sent = 0;
        loop {
            let deadline = Some(Instant::now() + Duration::from_millis(200));
            match pinger.write_control(MessageType::Ping, b"p", deadline) {
                Ok(()) => sent += 1,
                Err(err) => {
                    let _ = tx.send((sent, err));
                    return pinger;
                }
            }
        }
    });
    let (sent, err) = rx
        .recv_timeout(WAIT)
        .expect("a ping gave up at its deadline");
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    let pinger = pings.join().unwrap();
    for _ in 0..sent {
        assert_eq!(client.recv(), Received::Ping(b"p".to_vec()));
    }
    assert_eq!(client.recv(), Received::Binary(vec![7u8; 32 << 20]));
    let mut writer = writing.join().unwrap().expect("the big message went out");
    // The timed-out ping broke nothing.
    writer.write_message(MessageType::Text, b"after").unwrap();
    pinger
        .write_control(MessageType::Ping, b"again", None)
        .unwrap();
    assert_eq!(client.recv(), Received::Text("after".into()));
    assert_eq!(client.recv(), Received::Ping(b"again".to_vec()));
}

#[test]
fn read_half_keeps_the_handlers_and_the_read_limit() {
    let upgrader = Upgrader {
        read_limit: Some(1234),
        ..Upgrader::default()
    };
    let (mut client, mut conn) = conn_pair(upgrader, "");
    let pongs = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&pongs);
    let pong: ringcast::conn::PongHandler = Arc::new(move |data: &[u8], _: &mut Control<'_>| {
        seen.lock().unwrap().push(data.to_vec());
        Ok(())
    });
    conn.set_pong_handler(Some(Arc::clone(&pong)));
    let (mut reader, _writer) = conn.split().unwrap();
    assert_eq!(reader.read_limit(), 1234);
    reader.set_read_limit(99);
    assert_eq!(reader.read_limit(), 99);
    assert!(Arc::ptr_eq(&reader.pong_handler(), &pong));
    // Wrap the current ping handler, which the getter hands back for that.
    let default_ping = reader.ping_handler();
    let pings = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&pings);
    reader.set_ping_handler(Some(Arc::new(
        move |data: &[u8], control: &mut Control<'_>| {
            *counted.lock().unwrap() += 1;
            default_ping(data, control)
        },
    )));
    let _close = reader.close_handler();
    client.send(OpCode::Ping, true, b"hi");
    client.send(OpCode::Pong, true, b"yo");
    client.text("x");
    assert_eq!(reader.read_message().unwrap().1, b"x");
    assert_eq!(*pings.lock().unwrap(), 1);
    assert_eq!(*pongs.lock().unwrap(), [b"yo".to_vec()]);
    assert_eq!(client.recv(), Received::Pong(b"hi".to_vec()));
}

/// A server-side TLS connection splits: the read half blocks on its thread while the
/// write half sends and a control handle pings, then closes.
#[test]
fn tls_server_conn_splits_into_a_reader_a_writer_and_a_pinger() {
    let (server_config, client_config) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let tls =
            rustls::StreamOwned::new(rustls::ServerConnection::new(server_config).unwrap(), tcp);
        let conn = Upgrader::default().upgrade(tls, &[]).unwrap();
        let (mut reader, mut writer) = conn.split().unwrap();
        let pinger = writer.control_handle();
        reader.set_read_deadline(Some(Instant::now() + WAIT));
        let reading = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match reader.read_message() {
                    Ok((_, payload)) => got.push(payload),
                    Err(err) => return (got, err),
                }
            }
        });
        writer
            .write_message(MessageType::Text, b"from the write half")
            .unwrap();
        pinger
            .write_control(MessageType::Ping, b"tls ping", Some(Instant::now() + WAIT))
            .unwrap();
        reading.join().unwrap()
    });
    let dialer = Dialer {
        proxy: Proxy::None,
        tls_client_config: Some(client_config),
        handshake_timeout: Some(WAIT),
        ..Dialer::default()
    };
    let (mut client, _) = dialer
        .dial(&format!("wss://localhost:{port}/"), &[])
        .unwrap();
    client.set_read_deadline(Some(Instant::now() + WAIT));
    let (tx, pings) = mpsc::channel();
    let tx = Mutex::new(tx);
    client.set_ping_handler(Some(Arc::new(
        move |data: &[u8], control: &mut Control<'_>| {
            let _ = tx.lock().unwrap().send(data.to_vec());
            // As the default handler: after our close, no pong is owed.
            match control.write_control(MessageType::Pong, data, None) {
                Err(Error::CloseSent) => Ok(()),
                other => other,
            }
        },
    )));
    assert_eq!(client.read_message().unwrap().1, b"from the write half");
    client
        .write_message(MessageType::Text, b"to the read half")
        .unwrap();
    client
        .close_with(CloseCode::NORMAL_CLOSURE, "done")
        .unwrap();
    let closed = client.read_message();
    assert!(
        matches!(&closed, Err(Error::Closed(c)) if c.code == CloseCode::NORMAL_CLOSURE),
        "{closed:?}"
    );
    assert_eq!(pings.recv_timeout(WAIT).unwrap(), b"tls ping");
    let (got, err) = server.join().unwrap();
    assert_eq!(got, [b"to the read half".to_vec()]);
    assert!(matches!(err, Error::Closed(c) if c.code == CloseCode::NORMAL_CLOSURE));
}

/// A Unix socket carries a connection both ways, and splits.
#[cfg(unix)]
#[test]
fn unix_socket_pair_carries_a_split_connection() {
    use std::os::unix::net::UnixStream;
    let (server_end, client_end) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        let conn = Upgrader::default().upgrade(server_end, &[]).unwrap();
        let (mut reader, mut writer) = conn.split().unwrap();
        reader.set_read_deadline(Some(Instant::now() + WAIT));
        let (kind, payload) = reader.read_message().unwrap();
        writer.write_message(kind, &payload).unwrap();
        reader.read_message()
    });
    let dialer = Dialer {
        handshake_timeout: Some(WAIT),
        ..Dialer::default()
    };
    let (mut conn, response) = dialer
        .client_handshake(client_end, "ws://local/socket", &[])
        .unwrap();
    assert_eq!(response.status, 101);
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    conn.write_message(MessageType::Binary, &[1, 2, 3]).unwrap();
    assert_eq!(
        conn.read_message().unwrap(),
        (MessageType::Binary, vec![1, 2, 3])
    );
    conn.close_with(CloseCode::NORMAL_CLOSURE, "").unwrap();
    assert!(matches!(server.join().unwrap(), Err(Error::Closed(_))));
}
