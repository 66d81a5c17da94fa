//! Interop with real peers: Python `websockets` and Node `ws`, each once as the server
//! and once as the client of ringcast. Text, binary, fragmented and compressed messages,
//! ping/pong, and the close codes both sides see.
//!
//! The peers come from `scripts/test-all` (a venv and `npm ci`): it sets
//! `RINGCAST_PYTHON`, `RINGCAST_NODE_PATH` and `RINGCAST_REQUIRE_PEERS`. Run alone
//! without them, a test whose peer is missing says so and passes vacuously only when
//! `RINGCAST_REQUIRE_PEERS` is unset.

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use ringcast::client::Proxy;
use ringcast::conn::Control;
use ringcast::{CloseCode, Dialer, Error, MessageType, Upgrader};

#[path = "common/peers.rs"]
mod peers;

use peers::{peer, peers_dir, Peer, WAIT};

/// ringcast's Dialer against a peer's echo server: every kind of message, then the
/// server closes with 4001 on request.
fn ringcast_client_against(url: &str) {
    let dialer = Dialer {
        proxy: Proxy::None,
        enable_compression: true,
        write_buffer_size: 16,
        handshake_timeout: Some(WAIT),
        ..Dialer::default()
    };
    let (mut conn, _) = dialer.dial(url, &[]).expect("dial the peer");
    conn.set_read_deadline(Some(Instant::now() + WAIT));
    assert!(
        conn.compression_negotiated(),
        "permessage-deflate negotiated"
    );

    conn.write_message(MessageType::Text, "héllo peer".as_bytes())
        .unwrap();
    assert_eq!(
        conn.read_message().unwrap(),
        (MessageType::Text, "héllo peer".as_bytes().to_vec())
    );

    conn.write_message(MessageType::Binary, &[0, 1, 2, 254, 255])
        .unwrap();
    assert_eq!(
        conn.read_message().unwrap(),
        (MessageType::Binary, vec![0, 1, 2, 254, 255])
    );

    // Fragmented: uncompressed, so the 16-byte write buffer cuts it into frames.
    conn.enable_write_compression(false);
    let mut writer = conn.next_writer(MessageType::Text).unwrap();
    for part in ["fragments ", "of one ", "message ", "from ringcast"] {
        writer.write_all(part.as_bytes()).unwrap();
    }
    writer.close().unwrap();
    assert_eq!(
        conn.read_message().unwrap().1,
        b"fragments of one message from ringcast"
    );
    conn.enable_write_compression(true);

    let big = "compress me please ".repeat(5000);
    conn.write_message(MessageType::Text, big.as_bytes())
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, big.as_bytes());

    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    conn.set_pong_handler(Some(Arc::new(move |data: &[u8], _: &mut Control<'_>| {
        let _ = tx.lock().map(|tx| tx.send(data.to_vec()));
        Ok(())
    })));
    conn.write_control(MessageType::Ping, b"rc-ping", None)
        .unwrap();
    conn.write_message(MessageType::Text, b"after ping")
        .unwrap();
    assert_eq!(conn.read_message().unwrap().1, b"after ping");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"rc-ping");

    conn.write_message(MessageType::Text, b"close:4001:bye")
        .unwrap();
    match conn.read_message() {
        Err(Error::Closed(close)) => assert_eq!(
            (close.code, close.reason.as_str()),
            (CloseCode(4001), "bye")
        ),
        other => panic!("expected the peer's close 4001, got {other:?}"),
    }
}

/// A ringcast echo server for one peer client; returns its URL and the close code it
/// received.
fn ringcast_server() -> (String, mpsc::Receiver<Option<CloseCode>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let upgrader = Upgrader {
            enable_compression: true,
            ..Upgrader::default()
        };
        let mut conn = upgrader.upgrade(stream, &[]).expect("peer's upgrade");
        conn.set_read_deadline(Some(Instant::now() + WAIT));
        let code = loop {
            match conn.read_message() {
                Ok((kind, payload)) => {
                    if conn.write_message(kind, &payload).is_err() {
                        break None;
                    }
                }
                Err(Error::Closed(close)) => break Some(close.code),
                Err(_) => break None,
            }
        };
        let _ = tx.send(code);
    });
    (url, rx)
}

fn peer_client(mut command: Command, script: &str, expect_close: u16) {
    let (url, closed) = ringcast_server();
    command.arg(peers_dir().join(script)).arg(&url);
    let mut client = Peer::spawn(command);
    for check in [
        "compression negotiated",
        "text ok",
        "binary ok",
        "fragmented ok",
        "compressed ok",
        "ping ok",
    ] {
        assert_eq!(client.line(), check);
    }
    assert!(client.wait_exit(), "peer client failed");
    assert_eq!(
        closed.recv_timeout(WAIT).unwrap(),
        Some(CloseCode(expect_close))
    );
}

fn peer_server(mut command: Command, script: &str) {
    command.arg(peers_dir().join(script)).arg("30");
    let server = Peer::spawn(command);
    let port = server.wait_for("port ");
    ringcast_client_against(&format!("ws://127.0.0.1:{port}/"));
    assert_eq!(server.wait_for("closed"), "4001");
}

#[test]
fn ringcast_client_talks_to_python_websockets_server() {
    if let Some(python) = peer("python") {
        peer_server(python, "py_server.py");
    }
}

#[test]
fn python_websockets_client_talks_to_ringcast_server() {
    if let Some(python) = peer("python") {
        peer_client(python, "py_client.py", 4002);
    }
}

#[test]
fn ringcast_client_talks_to_node_ws_server() {
    if let Some(node) = peer("node") {
        peer_server(node, "node_server.js");
    }
}

#[test]
fn node_ws_client_talks_to_ringcast_server() {
    if let Some(node) = peer("node") {
        peer_client(node, "node_client.js", 4003);
    }
}

/// The engine's echo handler for peer clients: reports the close code each connection got.
#[cfg(feature = "engine")]
struct EngineEcho {
    closed: crossbeam_channel::Sender<u16>,
}

#[cfg(feature = "engine")]
impl ringcast::server::Handler for EngineEcho {
    type Data = ();
    fn on_message(
        &mut self,
        socket: &mut ringcast::server::Socket<'_, ()>,
        kind: MessageType,
        payload: &[u8],
    ) {
        let _ = socket.send(kind, payload);
    }
    fn on_close(
        &mut self,
        _socket: &mut ringcast::server::Socket<'_, ()>,
        code: CloseCode,
        _: &str,
    ) {
        let _ = self.closed.send(code.0);
    }
}

/// A self-signed certificate for localhost as PEM files in a temporary directory.
#[cfg(feature = "engine")]
fn localhost_pem() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ringcast-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// Python websockets and Node ws as clients of the engine (not the blocking Conn), on both
/// backends, over plain TCP and over TLS served by the engine. The peers trust the test's
/// certificate through their standard variables (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS).
#[cfg(feature = "engine")]
#[test]
fn python_and_node_clients_talk_to_the_engine_plain_and_over_tls() {
    use ringcast::server::Backend;
    use ringcast::server::{tls_config_from_pem, Server, ServerConfig};
    let (cert, key) = localhost_pem();
    let peers: Vec<(Command, &str, u16)> = [
        peer("python").map(|c| (c, "py_client.py", 4002)),
        peer("node").map(|c| (c, "node_client.js", 4003)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut runs = 0;
    for backend in Backend::ALL {
        for tls in [false, true] {
            let (tx, closed) = crossbeam_channel::unbounded();
            let handle = Server::new(ServerConfig {
                addr: Some("127.0.0.1:0".parse().unwrap()),
                workers: 2,
                backend,
                tls: tls.then(|| tls_config_from_pem(&cert, &key).unwrap()),
                upgrader: Upgrader {
                    enable_compression: true,
                    ..Upgrader::default()
                },
                shutdown_timeout: std::time::Duration::from_secs(1),
                ..ServerConfig::default()
            })
            .start(move |_| EngineEcho { closed: tx.clone() })
            .expect("engine");
            let port = handle.local_addr().unwrap().port();
            let url = match tls {
                true => format!("wss://localhost:{port}/"),
                false => format!("ws://127.0.0.1:{port}/"),
            };
            for (command, script, expect_close) in &peers {
                let mut command = Command::new(command.get_program());
                command
                    .envs(peer_env(script))
                    .env("SSL_CERT_FILE", &cert)
                    .env("NODE_EXTRA_CA_CERTS", &cert)
                    .arg(peers_dir().join(script))
                    .arg(&url);
                let mut client = Peer::spawn(command);
                for check in [
                    "compression negotiated",
                    "text ok",
                    "binary ok",
                    "fragmented ok",
                    "compressed ok",
                    "ping ok",
                ] {
                    assert_eq!(client.line(), check, "{script} on {backend}, tls {tls}");
                }
                assert!(
                    client.wait_exit(),
                    "{script} failed on {backend}, tls {tls}"
                );
                assert_eq!(closed.recv_timeout(WAIT).unwrap(), *expect_close);
                runs += 1;
            }
            handle.shutdown();
            handle.wait();
        }
    }
    if !peers.is_empty() {
        assert_eq!(runs, 4 * peers.len());
    }
}

/// The environment a peer command was given by `peer()` (NODE_PATH for node).
#[cfg(feature = "engine")]
fn peer_env(script: &str) -> Vec<(String, String)> {
    match script.ends_with(".js") {
        true => std::env::var("RINGCAST_NODE_PATH")
            .map(|p| vec![("NODE_PATH".to_string(), p)])
            .unwrap_or_default(),
        false => Vec::new(),
    }
}
