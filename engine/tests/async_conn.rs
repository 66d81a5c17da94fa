//! `AsyncConn` (feature `tokio`): messages through the read and write methods and
//! through the `Stream` and `Sink`, streaming readers and writers, handlers, closes,
//! limits, compression, prepared messages, JSON, deadlines, split halves over plain TCP
//! and TLS, and reads cancelled by `select!` that lose nothing.

mod async_support;
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_support::{guard, pair, pair_with, ReadyAfter, Trickle, WAIT};
use futures_util::{SinkExt, StreamExt};
use ringcast::async_conn::{CloseFrame, Message};
use ringcast::conn::Control;
use ringcast::{CloseCode, Dialer, Error, MessageType, PreparedMessage, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn compressing() -> (Upgrader, Dialer) {
    (
        Upgrader {
            enable_compression: true,
            ..Upgrader::default()
        },
        Dialer {
            enable_compression: true,
            ..async_support::dialer()
        },
    )
}

#[tokio::test]
async fn text_and_binary_round_trip_through_the_sink_and_the_stream() {
    let (mut server, mut client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    client.send(Message::from("héllo")).await.unwrap();
    client
        .send(Message::from(vec![0u8, 1, 254, 255]))
        .await
        .unwrap();
    for _ in 0..2 {
        let message = guard(server.next()).await.unwrap().unwrap();
        server.send(message).await.unwrap();
    }
    assert_eq!(
        guard(client.read_message()).await.unwrap(),
        (MessageType::Text, "héllo".as_bytes().to_vec())
    );
    assert_eq!(
        guard(client.next()).await.unwrap().unwrap(),
        Message::Binary(vec![0u8, 1, 254, 255].into())
    );
}

#[tokio::test]
async fn a_received_close_is_the_streams_last_item_after_the_handler_answered_it() {
    let (mut server, mut client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    client.close_with(CloseCode(4001), "bye").await.unwrap();
    let expected = Message::Close(Some(CloseFrame {
        code: CloseCode(4001),
        reason: "bye".into(),
    }));
    assert_eq!(guard(server.next()).await.unwrap().unwrap(), expected);
    assert!(guard(server.next()).await.is_none(), "the stream ended");
    // The default close handler answered with the same code.
    match guard(client.read_message()).await {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode(4001)),
        other => panic!("expected the close answer, got {other:?}"),
    }
    // A later write is refused: the close was sent.
    assert!(matches!(
        client.write_message(MessageType::Text, b"late").await,
        Err(Error::CloseSent)
    ));
}

#[tokio::test]
async fn the_close_handshake_returns_the_peers_close_and_times_out_on_a_silent_peer() {
    let (mut server, mut client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    let reader = tokio::spawn(async move {
        // The peer reads (so its close handler answers) and keeps reading.
        let result = server.read_message().await;
        (server, result)
    });
    let close = guard(client.close_handshake(CloseCode::NORMAL_CLOSURE, "done", WAIT))
        .await
        .unwrap();
    assert_eq!(close.code, CloseCode::NORMAL_CLOSURE);
    let (_server, result) = reader.await.unwrap();
    assert!(matches!(result, Err(Error::Closed(c)) if c.reason == "done"));

    // A peer that never reads never answers: the handshake gives up at its timeout.
    let (_silent, mut client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    let err = guard(client.close_handshake(CloseCode::GOING_AWAY, "", Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
}

#[tokio::test]
async fn pings_get_pongs_from_the_default_handler_and_custom_handlers_see_their_data() {
    let (mut server, mut client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    client.set_pong_handler(Some(Arc::new(move |data: &[u8], _: &mut Control<'_>| {
        let _ = tx.lock().map(|tx| tx.send(data.to_vec()));
        Ok(())
    })));
    client
        .write_control(MessageType::Ping, b"are you there")
        .await
        .unwrap();
    client
        .write_message(MessageType::Text, b"after the ping")
        .await
        .unwrap();
    // The server answers the ping while it reads the next message.
    let (_, text) = guard(server.read_message()).await.unwrap();
    assert_eq!(text, b"after the ping");
    server
        .write_message(MessageType::Text, b"echo")
        .await
        .unwrap();
    assert_eq!(guard(client.read_message()).await.unwrap().1, b"echo");
    assert_eq!(rx.try_recv().unwrap(), b"are you there");

    // A ping handler of the application's own replaces the pong.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    server.set_ping_handler(Some(Arc::new(move |data: &[u8], _: &mut Control<'_>| {
        log.lock().unwrap().push(data.to_vec());
        Ok(())
    })));
    client
        .write_control(MessageType::Ping, b"second")
        .await
        .unwrap();
    client.write_message(MessageType::Text, b"x").await.unwrap();
    guard(server.read_message()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [b"second".to_vec()]);
}

#[tokio::test]
async fn a_message_streams_through_a_writer_in_fragments_and_a_reader_in_pieces() {
    let dialer = Dialer {
        write_buffer_size: 16,
        ..async_support::dialer()
    };
    let (mut server, mut client) = pair(&Upgrader::default(), &dialer).await;
    let text: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut writer = client.next_writer(MessageType::Text).unwrap();
    for piece in text.as_bytes().chunks(37) {
        writer.write_all(piece).await.unwrap();
    }
    writer.finish().await.unwrap();
    let (kind, mut reader) = guard(server.next_reader()).await.unwrap();
    assert_eq!(kind, MessageType::Text);
    let mut got = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let n = guard(reader.read(&mut piece)).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&piece[..n]);
    }
    assert_eq!(got, text.as_bytes());

    // A reader dropped half way: the next read skips the rest of its message.
    client
        .write_message(MessageType::Binary, &[7u8; 100])
        .await
        .unwrap();
    client
        .write_message(MessageType::Text, b"next")
        .await
        .unwrap();
    {
        // A reader that goes out of scope half way through its message.
        let (_, mut reader) = guard(server.next_reader()).await.unwrap();
        let mut half = [0u8; 50];
        guard(reader.read_exact(&mut half)).await.unwrap();
    }
    assert_eq!(guard(server.read_message()).await.unwrap().1, b"next");
}

#[tokio::test]
async fn control_frames_go_out_between_the_fragments_of_a_message_being_written() {
    let upgrader = Upgrader {
        write_buffer_size: 8,
        ..Upgrader::default()
    };
    let (server, mut client) = pair(&upgrader, &async_support::dialer()).await;
    let (_server_reader, mut server_writer) = server.split();
    let pinger = server_writer.control_handle();
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&order);
    client.set_ping_handler(Some(Arc::new(move |_: &[u8], _: &mut Control<'_>| {
        log.lock().unwrap().push("ping".to_string());
        Ok(())
    })));
    let mut writer = server_writer.next_writer(MessageType::Text).unwrap();
    writer.write_all(b"first half; ").await.unwrap();
    writer.flush().await.unwrap();
    guard(pinger.write_control(MessageType::Ping, b"between"))
        .await
        .unwrap();
    writer.write_all(b"second half").await.unwrap();
    writer.finish().await.unwrap();
    let (_, mut reader) = guard(client.next_reader()).await.unwrap();
    let mut piece = [0u8; 4];
    loop {
        let n = guard(reader.read(&mut piece)).await.unwrap();
        if n == 0 {
            break;
        }
        order
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&piece[..n]).into_owned());
    }
    let order = order.lock().unwrap().clone();
    let ping = order
        .iter()
        .position(|p| p == "ping")
        .expect("the ping arrived");
    assert_eq!(order[..ping].concat(), "first half; ");
    assert_eq!(order[ping + 1..].concat(), "second half");
}

#[tokio::test]
async fn a_message_over_the_read_limit_fails_the_read_and_closes_with_1009() {
    let upgrader = Upgrader {
        read_limit: Some(100),
        ..Upgrader::default()
    };
    let (mut server, mut client) = pair(&upgrader, &async_support::dialer()).await;
    assert_eq!(server.read_limit(), 100);
    client
        .write_message(MessageType::Binary, &[1u8; 101])
        .await
        .unwrap();
    assert!(matches!(
        guard(server.read_message()).await,
        Err(Error::ReadLimit { limit: 100 })
    ));
    // Every later read fails the same way: read errors are permanent.
    assert!(matches!(
        server.read_message().await,
        Err(Error::ReadLimit { .. })
    ));
    match guard(client.read_message()).await {
        Err(Error::Closed(close)) => assert_eq!(close.code, CloseCode::MESSAGE_TOO_BIG),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn compressed_messages_round_trip_and_a_prepared_message_compresses_once() {
    let (upgrader, dialer) = compressing();
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(pair(&upgrader, &dialer).await);
    }
    let text = "compress me please ".repeat(500);
    let prepared = PreparedMessage::new(MessageType::Text, text.clone()).unwrap();
    for (server, client) in &mut conns {
        assert!(server.compression_negotiated() && client.compression_negotiated());
        server.write_prepared_message(&prepared).await.unwrap();
        client
            .write_message(MessageType::Binary, text.as_bytes())
            .await
            .unwrap();
    }
    for (server, client) in &mut conns {
        assert_eq!(
            guard(client.read_message()).await.unwrap().1,
            text.as_bytes()
        );
        assert_eq!(
            guard(server.read_message()).await.unwrap().1,
            text.as_bytes()
        );
    }
    assert_eq!(
        prepared.compressions(),
        1,
        "one compression for ten connections"
    );
}

#[tokio::test]
async fn json_values_round_trip() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Move {
        piece: String,
        to: (u8, u8),
    }
    let (mut server, mut client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    let sent = Move {
        piece: "knight".into(),
        to: (5, 2),
    };
    client.write_json(&sent).await.unwrap();
    assert_eq!(guard(server.read_json::<Move>()).await.unwrap(), sent);
}

#[tokio::test]
async fn a_read_deadline_fails_reads_for_good_with_timed_out() {
    let (mut server, _client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    server.set_read_deadline(Some(Instant::now() + Duration::from_millis(100)));
    let err = guard(server.read_message()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    server.set_read_deadline(None);
    let again = server.read_message().await.unwrap_err();
    assert!(matches!(&again, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut));
}

#[tokio::test]
async fn a_write_timeout_breaks_the_write_side_when_the_peer_reads_nothing() {
    let (upgrader, dialer) = (Upgrader::default(), async_support::dialer());
    // 1 KiB of pipe: the peer, which never reads, stops taking bytes at once.
    let (mut server, _client) = pair_with(&upgrader, &dialer, 1024, |io| io).await;
    server.set_write_timeout(Some(Duration::from_millis(100)));
    let err = guard(server.write_message(MessageType::Binary, &[0u8; 64 * 1024]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    let again = server
        .write_message(MessageType::Text, b"x")
        .await
        .unwrap_err();
    assert!(matches!(&again, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut));
}

/// A split connection over TLS (tokio-rustls on both sides, loopback TCP): one task
/// reads, another writes, a third pings, and the reader's handler answers the peer's
/// pings on the shared write side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_over_tls_read_write_and_ping_from_three_tasks() {
    let (server_config, client_config) = common::tls_configs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(server_config)
            .accept(tcp)
            .await
            .unwrap();
        let conn = Upgrader::default().upgrade_async(tls, &[]).await.unwrap();
        // Echo with split halves: the reader forwards to the writer's task.
        let (mut reader, mut writer) = conn.split();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let writing = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                writer.send(message).await.unwrap();
            }
            writer
        });
        while let Some(Ok(message)) = reader.next().await {
            if message.is_close() {
                break;
            }
            tx.send(message).await.unwrap();
        }
        drop(tx);
        writing.await.unwrap();
    });
    let dialer = Dialer {
        tls_client_config: Some(client_config),
        ..async_support::dialer()
    };
    let (conn, _) = guard(dialer.dial_async(&format!("wss://localhost:{port}/"), &[]))
        .await
        .unwrap();
    let (mut reader, mut writer) = conn.split();
    let pongs = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&pongs);
    reader.set_pong_handler(Some(Arc::new(move |_: &[u8], _: &mut Control<'_>| {
        *count.lock().unwrap() += 1;
        Ok(())
    })));
    let pinger = writer.control_handle();
    let pinging = tokio::spawn(async move {
        for _ in 0..20 {
            pinger
                .write_control(MessageType::Ping, b"tick")
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    });
    let writing = tokio::spawn(async move {
        for i in 0..200 {
            writer
                .send(Message::from(format!("message {i}")))
                .await
                .unwrap();
        }
        writer
    });
    for i in 0..200 {
        let message = guard(reader.next()).await.unwrap().unwrap();
        assert_eq!(message, Message::from(format!("message {i}")));
    }
    pinging.await.unwrap();
    let mut writer = writing.await.unwrap();
    writer
        .close_with(CloseCode::NORMAL_CLOSURE, "")
        .await
        .unwrap();
    // The server's stream ends on our close; its default handler answered it.
    assert!(matches!(
        guard(reader.read_message()).await,
        Err(Error::Closed(_))
    ));
    guard(server).await.unwrap();
    assert_eq!(*pongs.lock().unwrap(), 20, "every ping answered");
}

#[tokio::test]
async fn a_write_cancelled_while_the_stream_is_full_sends_its_message_whole_later() {
    let (upgrader, dialer) = (Upgrader::default(), async_support::dialer());
    let (mut server, mut client) = pair_with(&upgrader, &dialer, 64, |io| io).await;
    let big = vec![9u8; 10_000];
    // The pipe takes 64 bytes: the write is queued whole, then cancelled while it waits.
    tokio::select! {
        biased;
        _ = server.write_message(MessageType::Binary, &big) => panic!("a 64-byte pipe took 10 kB"),
        () = ReadyAfter(0) => {}
    }
    // Cancelled before it even queued: nothing of it goes out.
    let (mut room, dropped) = (true, b"never sent");
    for _ in 0..3 {
        tokio::select! {
            biased;
            _ = server.write_message(MessageType::Text, dropped) => room = false,
            () = ReadyAfter(0) => {}
        }
    }
    assert!(room, "no room while 10 kB wait");
    let reading = tokio::spawn(async move {
        let first = client.read_message().await.unwrap();
        let second = client.read_message().await.unwrap();
        (first, second)
    });
    server
        .write_message(MessageType::Text, b"after")
        .await
        .unwrap();
    let (first, second) = guard(reading).await.unwrap();
    assert_eq!(first, (MessageType::Binary, big));
    assert_eq!(second, (MessageType::Text, b"after".to_vec()));
}

/// A split connection's writer waits on a full stream while its reader answers pings
/// on the same stream: whichever task the stream wakes, the writer still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waiting_on_a_full_stream_finishes_while_its_reader_answers_pings() {
    let (upgrader, dialer) = (Upgrader::default(), async_support::dialer());
    let (server, mut client) = pair_with(&upgrader, &dialer, 1024, |io| io).await;
    let (mut reader, mut writer) = server.split();
    let writing = tokio::spawn(async move {
        for i in 0..10u8 {
            writer
                .write_message(MessageType::Binary, &[i; 32 * 1024])
                .await
                .unwrap();
        }
        writer
    });
    let reading = tokio::spawn(async move {
        // Reads the pings (answering each), then the close.
        let result = reader.read_message().await;
        (reader, result)
    });
    let pongs = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&pongs);
    client.set_pong_handler(Some(Arc::new(move |_: &[u8], _: &mut Control<'_>| {
        *count.lock().unwrap() += 1;
        Ok(())
    })));
    for _ in 0..50 {
        client.write_control(MessageType::Ping, b"p").await.unwrap();
        tokio::task::yield_now().await;
    }
    for i in 0..10u8 {
        let (_, payload) = guard(client.read_message()).await.unwrap();
        assert_eq!(payload, [i; 32 * 1024]);
    }
    let _writer = guard(writing).await.unwrap();
    client
        .close_with(CloseCode::NORMAL_CLOSURE, "")
        .await
        .unwrap();
    let (_reader, result) = guard(reading).await.unwrap();
    assert!(matches!(result, Err(Error::Closed(_))));
    // The pongs came between the data messages (some may have been dropped while more
    // than 64 KiB waited; the first ones found room).
    assert!(*pongs.lock().unwrap() > 0);
}

/// Messages a reader must rebuild across any cut: short ones in one frame, longer ones
/// in 16-byte fragments, pings between them.
fn message(n: u32) -> String {
    let pad = "x".repeat((n % 41) as usize);
    format!("m{n:07}{pad}")
}

/// How many messages the cancellation test sends: `RINGCAST_CANCEL_MESSAGES`, else a
/// million in a release build (the documented run:
/// `cargo test --release -p ringcast --features tokio --test async_conn -- reads_cancelled`)
/// and 200 000 in a debug build (a million takes about 23 s there on a busy 2-core
/// machine).
fn cancel_test_messages() -> u32 {
    match std::env::var("RINGCAST_CANCEL_MESSAGES") {
        Ok(count) => count.parse().expect("RINGCAST_CANCEL_MESSAGES is a count"),
        Err(_) if cfg!(debug_assertions) => 200_000,
        Err(_) => 1_000_000,
    }
}

/// A million messages (see [`cancel_test_messages`]) through a server whose reads are
/// cancelled by `select!` after a random number of polls (0..=3), over a stream that
/// hands bytes out 1 to 24 at a time and sometimes says "pending" first: every message
/// arrives once, in order, intact, whether read by `read_message` or by the `Stream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_through_reads_cancelled_at_random_lose_nothing() {
    let messages = cancel_test_messages();
    let dialer = Dialer {
        write_buffer_size: 16,
        ..async_support::dialer()
    };
    let (mut server, mut client) = pair_with(&Upgrader::default(), &dialer, 64 * 1024, |io| {
        Trickle::new(io, 24, 3, 0x5eed)
    })
    .await;
    let writer = tokio::spawn(async move {
        for n in 0..messages {
            let text = message(n);
            if n % 10 == 0 {
                // Fragmented: the 16-byte write buffer cuts it into frames.
                let mut writer = client.next_writer(MessageType::Text).unwrap();
                writer.write_all(text.as_bytes()).await.unwrap();
                writer.finish().await.unwrap();
            } else {
                client.feed(Message::Text(text)).await.unwrap();
            }
            if n % 1000 == 0 {
                client
                    .write_control(MessageType::Ping, &n.to_be_bytes())
                    .await
                    .unwrap();
            }
        }
        client.flush().await.unwrap();
        client
    });
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut next, mut cancelled) = (0u32, 0u64);
    let started = Instant::now();
    while next < messages {
        let got = if rng.bool() {
            tokio::select! {
                biased;
                read = server.read_message() => Some(read.map(|(_, payload)| payload)),
                () = ReadyAfter(rng.u32(0..4)) => None,
            }
        } else {
            tokio::select! {
                biased;
                item = server.next() => Some(item.expect("stream open").map(|m| m.as_bytes().to_vec())),
                () = ReadyAfter(rng.u32(0..4)) => None,
            }
        };
        match got {
            None => cancelled += 1,
            Some(payload) => {
                let payload = payload.unwrap();
                assert_eq!(payload, message(next).as_bytes(), "message {next}");
                next += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(600), "hang guard");
    }
    let _client = writer.await.unwrap();
    println!(
        "{messages} messages, {cancelled} reads cancelled, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // About one read in three was cancelled: far more often than not mid-message.
    assert!(
        cancelled > u64::from(messages / 4),
        "reads were cancelled: {cancelled}"
    );
}

/// Prepared messages fed without waiting, then one flush: every one arrives in order
/// (compressed for one connection, plain for the other: each gets its own form), from
/// the whole connection and from a split write half.
#[tokio::test]
async fn prepared_messages_fed_then_flushed_arrive_whole_and_in_order() {
    let compressing = Upgrader {
        enable_compression: true,
        ..Upgrader::default()
    };
    let mut compressing_dialer = async_support::dialer();
    compressing_dialer.enable_compression = true;
    let (mut plain, mut plain_client) = pair(&Upgrader::default(), &async_support::dialer()).await;
    let (deflating, mut deflating_client) = pair(&compressing, &compressing_dialer).await;
    let (_reader, mut deflating) = deflating.split();
    let messages: Vec<Arc<PreparedMessage>> = (0..20)
        .map(|i| {
            let text = format!("message {i} {}", "again ".repeat(i));
            Arc::new(PreparedMessage::new(MessageType::Text, text).expect("prepared"))
        })
        .collect();
    for message in &messages {
        guard(plain.feed_prepared_message(message))
            .await
            .expect("fed");
        guard(deflating.feed_prepared_message(message))
            .await
            .expect("fed");
    }
    guard(plain.flush()).await.expect("flushed");
    guard(deflating.flush()).await.expect("flushed");
    for message in &messages {
        for client in [&mut plain_client, &mut deflating_client] {
            let (kind, payload) = guard(client.read_message()).await.expect("a message");
            assert_eq!(
                (kind, &payload[..]),
                (MessageType::Text, &message.payload()[..])
            );
        }
    }
}
