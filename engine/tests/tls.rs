//! `wss://` served by the engine itself (rustls on each connection), on both backends:
//! the Dialer, Python websockets (in interop.rs) and Chromium (the browser stage) connect
//! with a self-signed certificate trusted by the test. The engine also dials `wss://`
//! itself (`DialRequest::tls`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringcast::server::{
    tls_config_from_pem, Backend, DialRequest, Handler, Server, ServerConfig, ServerHandle, Socket,
};
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

/// What the dialing engine's handler saw.
#[derive(Debug)]
enum Seen {
    Open(ringcast::server::ConnId),
    Message(Vec<u8>),
    DialError(u64, String),
}

/// The dialing side: reports opens, messages and dial errors.
struct Dialing(Sender<Seen>);

impl Handler for Dialing {
    type Data = ();
    fn on_open(
        &mut self,
        socket: &mut Socket<'_, ()>,
        _request: &ringcast::proto::handshake::Request,
    ) {
        let _ = self.0.send(Seen::Open(socket.id()));
    }
    fn on_message(&mut self, _socket: &mut Socket<'_, ()>, _kind: MessageType, payload: &[u8]) {
        let _ = self.0.send(Seen::Message(payload.to_vec()));
    }
    fn on_dial_error(&mut self, tag: u64, error: ringcast::Error) {
        let _ = self.0.send(Seen::DialError(tag, error.to_string()));
    }
}

fn next(rx: &Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the dialing engine reports within 10 s")
}

fn tls_server(backend: Backend, cert: &PathBuf, key: &PathBuf) -> ServerHandle {
    Server::new(ServerConfig {
        addr: Some("127.0.0.1:0".parse().expect("literal")),
        workers: 1,
        backend,
        tls: Some(tls_config_from_pem(cert, key).expect("pem files")),
        shutdown_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .start(|_| Echo)
    .expect("server")
}

#[test]
fn engine_dials_wss_and_refuses_an_untrusted_certificate_on_both_backends() {
    let (cert, key, client_config) = certificate("dial");
    for backend in Backend::ALL {
        let server = tls_server(backend, &cert, &key);
        let port = server.local_addr().expect("addr").port();
        let (tx, rx) = crossbeam_channel::unbounded();
        let client = Server::new(ServerConfig {
            addr: None,
            workers: 1,
            backend,
            shutdown_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        })
        .start(move |_| Dialing(tx.clone()))
        .expect("client engine");

        // Trusted: the handshake completes and frames go both ways, sealed and opened.
        client
            .dial(DialRequest {
                tls: Some(client_config.clone()),
                enable_compression: true,
                ..DialRequest::new(&format!("wss://localhost:{port}/echo"))
            })
            .expect("dial");
        let Seen::Open(id) = next(&rx) else {
            panic!("{backend}: expected the wss dial to open");
        };
        client
            .send_to(id, MessageType::Text, &b"over the engine's tls"[..])
            .expect("send");
        match next(&rx) {
            Seen::Message(payload) => assert_eq!(payload, b"over the engine's tls"),
            other => panic!("{backend}: {other:?}"),
        }
        // Larger than a TLS record (16 KiB): several records each way.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        client
            .send_to(id, MessageType::Binary, big.clone())
            .expect("send big");
        match next(&rx) {
            Seen::Message(payload) => assert!(payload == big, "{backend}: big echo differs"),
            other => panic!("{backend}: {other:?}"),
        }

        // Untrusted (webpki's roots do not know the self-signed certificate): the dial
        // fails with the certificate named, and the server counts a failed handshake.
        client
            .dial(DialRequest {
                tag: 9,
                ..DialRequest::new(&format!("wss://localhost:{port}/echo"))
            })
            .expect("dial");
        match next(&rx) {
            Seen::DialError(9, error) => {
                assert!(
                    error.to_lowercase().contains("certificate"),
                    "{backend}: {error}"
                )
            }
            other => panic!("{backend}: {other:?}"),
        }
        let start = Instant::now();
        while server.stats().handshakes_failed == 0 || client.stats().dials_failed == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{backend}: not counted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(client.stats().dials_failed, 1, "{backend}");
        assert_eq!(client.stats().dials_ok, 1, "{backend}");
        client.shutdown();
        client.wait();
        server.shutdown();
        server.wait();
    }
}
