//! `AsyncConn` against other implementations over loopback: tokio-tungstenite as client
//! and as server, and Python websockets (found as in `interop.rs`: `RINGCAST_PYTHON`,
//! set by `scripts/test-all`; without it a missing peer is reported and the Python
//! tests pass vacuously unless `RINGCAST_REQUIRE_PEERS` is set).

mod async_support;
#[path = "common/peers.rs"]
mod peers;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_support::{dialer, guard, WAIT};
use futures_util::{SinkExt, StreamExt};
use ringcast::async_conn::{CloseFrame, Message};
use ringcast::conn::Control;
use ringcast::{CloseCode, Dialer, Error, MessageType, Upgrader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TungCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TungClose;
use tokio_tungstenite::tungstenite::Message as Tung;

/// An `AsyncConn` echo server for one client: data messages come back (in 16-byte
/// fragments through a message writer when `fragment`), and the close code it received
/// is the result.
async fn async_conn_echo(
    listener: TcpListener,
    upgrader: Upgrader,
    fragment: bool,
) -> Option<CloseCode> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut conn = upgrader.upgrade_async(stream, &[]).await.expect("upgrade");
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    loop {
        match conn.read_message().await {
            Ok((kind, payload)) => {
                let written = if fragment {
                    let mut writer = conn.next_writer(kind).unwrap();
                    let written = writer.write_all(&payload).await;
                    match written {
                        Ok(()) => writer.finish().await,
                        Err(err) => Err(Error::Io(err)),
                    }
                } else {
                    conn.write_message(kind, &payload).await
                };
                if written.is_err() {
                    return None;
                }
            }
            Err(Error::Closed(close)) => return Some(close.code),
            Err(_) => return None,
        }
    }
}

/// tokio-tungstenite's client: text, binary, a large message, a ping, and a close with
/// 4002 that the server's default close handler echoes; the server answers in
/// fragments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_tungstenite_client_talks_to_an_async_conn_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrader = Upgrader {
        write_buffer_size: 16,
        ..Upgrader::default()
    };
    let server = tokio::spawn(async_conn_echo(listener, upgrader, true));

    let (mut ws, response) = guard(tokio_tungstenite::connect_async(format!("ws://{addr}/")))
        .await
        .expect("tokio-tungstenite connects");
    assert_eq!(response.status(), 101);
    let big = "large message ".repeat(20_000);
    let sent = [
        Tung::text("héllo ringcast"),
        Tung::binary(vec![0u8, 1, 2, 254, 255]),
        Tung::text(big.clone()),
    ];
    for message in sent.iter().cloned() {
        guard(ws.send(message)).await.unwrap();
    }
    for expected in &sent {
        let got = guard(ws.next()).await.expect("open").unwrap();
        assert_eq!(&got, expected);
    }
    guard(ws.send(Tung::Ping(b"tung-ping".to_vec().into())))
        .await
        .unwrap();
    let pong = guard(ws.next()).await.expect("open").unwrap();
    assert_eq!(pong, Tung::Pong(b"tung-ping".to_vec().into()));

    let close = TungClose {
        code: TungCode::from(4002),
        reason: "from tungstenite".into(),
    };
    guard(ws.close(Some(close))).await.unwrap();
    // The server's default close handler answers with the same code.
    let reply = guard(ws.next()).await.expect("the close reply").unwrap();
    match reply {
        Tung::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("expected the close reply, got {other:?}"),
    }
    assert_eq!(
        guard(server).await.unwrap(),
        Some(CloseCode(4002)),
        "the server saw the client's close"
    );
}

/// `AsyncConn` (through `Dialer::dial_async`, with the `Sink` and `Stream`) against
/// tokio-tungstenite's echo server: whole messages, a message sent in 16-byte fragments,
/// a ping whose pong reaches the pong handler, and a close with 4001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_conn_client_talks_to_a_tokio_tungstenite_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let mut closed = None;
        // Read on after the close: tungstenite sends its reply on the next poll.
        while let Some(Ok(message)) = ws.next().await {
            if let Tung::Close(frame) = &message {
                closed = frame.as_ref().map(|f| u16::from(f.code));
            } else if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
            {
                break;
            }
        }
        closed
    });

    let dialer = Dialer {
        write_buffer_size: 16,
        ..dialer()
    };
    let (mut conn, _) = guard(dialer.dial_async(&format!("ws://{addr}/"), &[]))
        .await
        .expect("dial tokio-tungstenite");
    conn.send(Message::from("héllo tungstenite")).await.unwrap();
    conn.send(Message::from(vec![9u8, 8, 7])).await.unwrap();
    assert_eq!(
        guard(conn.next()).await.unwrap().unwrap(),
        Message::from("héllo tungstenite")
    );
    assert_eq!(
        guard(conn.next()).await.unwrap().unwrap(),
        Message::from(vec![9u8, 8, 7])
    );

    let text = "fragments of one message from AsyncConn";
    let mut writer = conn.next_writer(MessageType::Text).unwrap();
    writer.write_all(text.as_bytes()).await.unwrap();
    writer.finish().await.unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, text.as_bytes());

    let pongs = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&pongs);
    conn.set_pong_handler(Some(Arc::new(move |data: &[u8], _: &mut Control<'_>| {
        seen.lock().unwrap().push(data.to_vec());
        Ok(())
    })));
    conn.write_control(MessageType::Ping, b"rc-ping")
        .await
        .unwrap();
    conn.send(Message::from("after ping")).await.unwrap();
    assert_eq!(guard(conn.read_message()).await.unwrap().1, b"after ping");
    assert_eq!(*pongs.lock().unwrap(), [b"rc-ping".to_vec()]);

    let close = guard(conn.close_handshake(CloseCode(4001), "bye", WAIT))
        .await
        .expect("tokio-tungstenite answers the close");
    assert_eq!(close.code, CloseCode(4001));
    assert_eq!(guard(server).await.unwrap(), Some(4001));
}

/// Python websockets' client (compression, fragments, a ping, a close with 4002)
/// against an `AsyncConn` server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_talks_to_an_async_conn_server() {
    let Some(mut python) = peers::peer("python") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let upgrader = Upgrader {
        enable_compression: true,
        ..Upgrader::default()
    };
    let server = tokio::spawn(async_conn_echo(listener, upgrader, false));
    python
        .arg(peers::peers_dir().join("py_client.py"))
        .arg(&url);
    let checks = tokio::task::spawn_blocking(move || {
        let mut client = peers::Peer::spawn(python);
        let lines: Vec<String> = (0..6).map(|_| client.line()).collect();
        (lines, client.wait_exit())
    });
    let (lines, exited_ok) = guard(checks).await.unwrap();
    assert_eq!(
        lines,
        [
            "compression negotiated",
            "text ok",
            "binary ok",
            "fragmented ok",
            "compressed ok",
            "ping ok"
        ]
    );
    assert!(exited_ok, "the Python client's checks passed");
    assert_eq!(guard(server).await.unwrap(), Some(CloseCode(4002)));
}

/// An `AsyncConn` client with compression against Python websockets' echo server; the
/// server closes with 4001 when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_conn_client_talks_to_a_python_websockets_server() {
    let Some(mut python) = peers::peer("python") else {
        return;
    };
    python
        .arg(peers::peers_dir().join("py_server.py"))
        .arg("30");
    let (server, port) = guard(tokio::task::spawn_blocking(move || {
        let server = peers::Peer::spawn(python);
        let port = server.wait_for("port ");
        (server, port)
    }))
    .await
    .unwrap();
    let dialer = Dialer {
        enable_compression: true,
        ..dialer()
    };
    let (mut conn, _) = guard(dialer.dial_async(&format!("ws://127.0.0.1:{port}/"), &[]))
        .await
        .expect("dial Python websockets");
    assert!(conn.compression_negotiated());
    let big = "compress me please ".repeat(5000);
    for message in [
        Message::from("héllo python"),
        Message::from(vec![0u8, 1, 2, 254, 255]),
        Message::from(big.as_str()),
    ] {
        conn.send(message.clone()).await.unwrap();
        assert_eq!(guard(conn.next()).await.unwrap().unwrap(), message);
    }
    conn.send(Message::from("close:4001:bye")).await.unwrap();
    let last = guard(conn.next()).await.unwrap().unwrap();
    assert_eq!(
        last,
        Message::Close(Some(CloseFrame {
            code: CloseCode(4001),
            reason: "bye".into()
        }))
    );
    let closed = tokio::task::spawn_blocking(move || server.wait_for("closed"));
    assert_eq!(guard(closed).await.unwrap(), "4001");
}
