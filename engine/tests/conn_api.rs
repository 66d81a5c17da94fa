//! The seed's Conn API beyond read_message/write_message, over real loopback sockets
//! against a raw client built on the proto codec.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;

use common::{conn_pair, Received, WAIT};
use ringcast::proto::OpCode;
use ringcast::{join_messages, CloseCode, Error, MessageType, PreparedMessage, Upgrader};

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
