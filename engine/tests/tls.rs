//! `wss://` served by the engine itself (rustls on each connection), on both backends:
//! the Dialer, Python websockets (in interop.rs) and Chromium (the browser stage) connect
//! with a self-signed certificate trusted by the test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast::server::Backend;
use ringcast::server::{tls_config_from_pem, Handler, Server, ServerConfig, Socket};
use ringcast::{Dialer, MessageType};

struct Echo;

impl Handler for Echo {
    type Data = ();
    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

/// A self-signed certificate for localhost written as PEM files, and a client config that
/// trusts it.
fn certificate(dir: &str) -> (PathBuf, PathBuf, Arc<rustls::ClientConfig>) {
    let dir = std::env::temp_dir().join(format!("ringcast-tls-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    (cert, key, Arc::new(client))
}

#[test]
fn engine_serves_wss_on_both_backends() {
    let (cert, key, client_config) = certificate("serve");
    for backend in Backend::ALL {
        let handle = Server::new(ServerConfig {
            addr: Some("127.0.0.1:0".parse().expect("literal")),
            workers: 2,
            backend,
            tls: Some(tls_config_from_pem(&cert, &key).expect("pem files")),
            upgrader: ringcast::Upgrader {
                enable_compression: true,
                ..Default::default()
            },
            shutdown_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        })
        .start(|_| Echo)
        .expect("server");
        let port = handle.local_addr().expect("addr").port();
        let dialer = Dialer {
            tls_client_config: Some(client_config.clone()),
            enable_compression: true,
            handshake_timeout: Some(Duration::from_secs(10)),
            ..Dialer::default()
        };
        let (mut conn, response) = dialer
            .dial(&format!("wss://localhost:{port}/"), &[])
            .expect("wss dial");
        assert_eq!(response.status, 101);
        conn.set_read_deadline(Some(Instant::now() + Duration::from_secs(10)));
        conn.write_message(MessageType::Text, b"over tls")
            .expect("send");
        assert_eq!(
            conn.read_message().expect("echo"),
            (MessageType::Text, b"over tls".to_vec())
        );
        // Larger than a TLS record (16 KiB) and than a receive buffer: many records.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        conn.write_message(MessageType::Binary, &big)
            .expect("send big");
        assert_eq!(
            conn.read_message().expect("echo big"),
            (MessageType::Binary, big)
        );
        drop(conn);

        // A client that does not speak TLS gets nothing useful, and the socket goes.
        let mut plain = TcpStream::connect(handle.local_addr().expect("addr")).expect("connect");
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/1.1"),
            "{backend}: plaintext answered"
        );
        let start = Instant::now();
        while handle.stats().sockets != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{backend}: sockets left"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(handle.stats().handshakes_failed >= 1);
        handle.shutdown();
        handle.wait();
    }
}

#[test]
fn bad_pem_files_are_refused_with_the_file_named() {
    let missing = std::env::temp_dir().join("ringcast-no-such-cert.pem");
    match tls_config_from_pem(&missing, &missing) {
        Err(ringcast::Error::InvalidArgument(message)) => {
            assert!(message.contains("ringcast-no-such-cert.pem"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
}
