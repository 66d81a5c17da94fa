//! Helpers shared by the integration tests: a raw WebSocket client built on the proto
//! codec (so the Conn under test meets an independent peer), and deadlines.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringcast::proto::deflate::Inflater;
use ringcast::proto::{Decoder, Encoder, Event, OpCode, Role};
use ringcast::{Conn, Upgrader};

/// How long any single read in a test may block before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A client speaking raw frames through the proto codec.
pub struct RawClient {
    pub stream: TcpStream,
    pub encoder: Encoder,
    pub decoder: Decoder,
    inflater: Inflater,
    buf: Vec<u8>,
    pos: usize,
}

/// What the raw client received, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl RawClient {
    /// Connect and do the opening handshake by hand; `extra` lines go into the request.
    pub fn connect(addr: SocketAddr, extra: &str) -> RawClient {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let request = format!(
            "GET /test HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).expect("write request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("read response head");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut decoder = Decoder::new(Role::Client);
        decoder.set_compression(String::from_utf8_lossy(&head).contains("permessage-deflate"));
        RawClient {
            stream,
            encoder: Encoder::new(Role::Client),
            decoder,
            inflater: Inflater::new(),
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let mut out = Vec::new();
        self.encoder
            .encode_frame(opcode, fin, false, payload, &mut out);
        self.stream.write_all(&out).expect("send frame");
    }

    pub fn text(&mut self, text: &str) {
        self.send(OpCode::Text, true, text.as_bytes());
    }

    /// The next event from the server (panics after WAIT).
    pub fn recv(&mut self) -> Received {
        loop {
            let decoded = {
                let input = &mut self.buf[self.pos..];
                match self
                    .decoder
                    .decode(input, &mut self.inflater)
                    .expect("server broke a rule")
                {
                    (used, Some(event)) => {
                        let owned = match event {
                            Event::Message(ringcast::MessageType::Text, p) => {
                                Received::Text(String::from_utf8(p.to_vec()).expect("utf8"))
                            }
                            Event::Message(_, p) => Received::Binary(p.to_vec()),
                            Event::Ping(p) => Received::Ping(p.to_vec()),
                            Event::Pong(p) => Received::Pong(p.to_vec()),
                            Event::Close(None) => Received::Close(None, String::new()),
                            Event::Close(Some((code, reason))) => {
                                Received::Close(Some(code.0), reason.to_owned())
                            }
                            Event::Part { .. } => panic!("assembling decoder gave a part"),
                        };
                        Some((used, owned))
                    }
                    (used, None) => {
                        self.pos += used;
                        None
                    }
                }
            };
            match decoded {
                Some((used, event)) => {
                    self.pos += used;
                    return event;
                }
                None => {
                    self.buf.clear();
                    self.pos = 0;
                    let mut chunk = [0u8; 4096];
                    let n = self.stream.read(&mut chunk).expect("read from server");
                    assert!(n > 0, "server closed the stream");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// Raw frame headers as sent, for tests that check fragmentation: (fin, opcode, len).
    pub fn recv_raw_frame(&mut self) -> (bool, u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).expect("frame head");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).expect("len16");
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).expect("len64");
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).expect("payload");
        (head[0] & 0x80 != 0, head[0] & 0x0f, payload)
    }
}

/// A server Conn from `upgrader` and a raw client connected to it.
pub fn conn_pair(upgrader: Upgrader, extra: &str) -> (RawClient, Conn<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        upgrader.upgrade(stream, &[]).expect("upgrade")
    });
    let client = RawClient::connect(addr, extra);
    let mut conn = server.join().expect("server thread");
    conn.set_read_deadline(Some(std::time::Instant::now() + WAIT));
    (client, conn)
}

/// Polls a server's stats until `done` holds; fails the test after WAIT.
#[cfg(feature = "engine")]
pub fn wait_stats(
    handle: &ringcast::server::ServerHandle,
    what: &str,
    done: impl Fn(&ringcast::server::Stats) -> bool,
) -> ringcast::server::Stats {
    let start = std::time::Instant::now();
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {stats:#?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A child process that ran this test binary on one test: it must have passed, and run
/// that test (a filter that matched nothing would pass too).
pub fn assert_child_passed(child: &mut std::process::Child, status: std::process::ExitStatus) {
    assert!(status.success(), "the child test failed: {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("piped"), &mut stdout)
        .expect("child output");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Runs ignored test `test` of this test binary in a child process with `envs`, its
/// standard output kept for [`wait_child`] to check.
pub fn spawn_child(test: &str, envs: &[(&str, &str)]) -> std::process::Child {
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([test, "--exact", "--ignored", "--nocapture"])
        // Its own test summary would be counted as this binary's: keep it to check it.
        .stdout(std::process::Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    command.spawn().expect("spawn the child test")
}

/// Waits up to `limit` for a child from [`spawn_child`] and checks that it ran its test
/// and passed; on timeout kills it and fails with `context()`.
pub fn wait_child(mut child: std::process::Child, limit: Duration, context: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child test did not finish: {}", context());
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_child_passed(&mut child, status);
}

/// A self-signed certificate for "localhost", a rustls server config with it, and a
/// client config that trusts it.
pub fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Writes `bytes` to `stream` one at a time, `every` apart, on a thread of its own,
/// until they run out or the peer is gone; the thread returns how many went out.
pub fn drip(mut stream: TcpStream, bytes: Vec<u8>, every: Duration) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        for (sent, byte) in bytes.iter().enumerate() {
            if stream.write_all(&[*byte]).is_err() {
                return sent;
            }
            thread::sleep(every);
        }
        bytes.len()
    })
}

/// The upgrade request a test client sends, as bytes.
pub fn upgrade_request(host: &str) -> Vec<u8> {
    format!(
        "GET /test HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// How long a proxy the tests start may take to listen (or to stop).
const PROXY_START: Duration = Duration::from_secs(10);

/// Wait until the proxy `child` (called `name`) accepts on `port`; fail if it exits or
/// takes longer than [`PROXY_START`].
fn wait_listening(child: &mut std::process::Child, port: u16, name: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited: {status}");
        }
        assert!(started.elapsed() < PROXY_START, "{name} did not start");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A real HTTP proxy (Debian's tinyproxy) on a loopback port that allows CONNECT to one
/// port, stopped by PID when dropped.
pub struct Tinyproxy {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Tinyproxy {
    /// The installed binary, or `None` (after saying why) when it is not installed.
    pub fn binary() -> Option<&'static str> {
        let found = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        if found.is_none() {
            assert!(
                std::env::var_os("RINGCAST_REQUIRE_PEERS").is_none(),
                "tinyproxy is required but not installed"
            );
            eprintln!("SKIPPED: tinyproxy not installed (scripts/test-all installs it)");
        }
        found
    }

    /// Start `binary`, allowing tunnels to `connect_port`.
    pub fn start(binary: &str, connect_port: u16) -> Tinyproxy {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let dir =
            std::env::temp_dir().join(format!("ringcast-tinyproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!("Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nConnectPort {connect_port}\nMaxClients 10\nLogLevel Error\n"),
        )
        .unwrap();
        let mut child = std::process::Command::new(binary)
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(&mut child, port, "tinyproxy");
        Tinyproxy { child, port, dir }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The SOCKS5 user the tests sign in as: `scripts/test-all` (tools stage) creates this
/// system user, with this password, for Dante's username method (RFC 1929), which checks
/// the system's password database.
pub const SOCKS_USER: &str = "ringcast-socks";
pub const SOCKS_PASSWORD: &str = "ringcast-socks-1928";

/// A real SOCKS5 server (Debian's `dante-server`) on a loopback port, stopped by PID
/// when dropped. `None` (after saying why) when it is not installed.
pub struct Dante {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Dante {
    pub fn start(method: &str) -> Option<Dante> {
        let binary = "/usr/sbin/danted";
        let ready = std::path::Path::new(binary).exists()
            && (method == "none"
                || std::process::Command::new("id")
                    .arg(SOCKS_USER)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()));
        if !ready {
            assert!(
                std::env::var_os("RINGCAST_REQUIRE_PEERS").is_none(),
                "dante-server and the user {SOCKS_USER} are required (scripts/test-all tools)"
            );
            eprintln!("SKIPPED: dante-server or user {SOCKS_USER} missing (scripts/test-all installs them)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-dante-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("danted.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 socksmethod: {method}\nclientmethod: none\nuser.privileged: root\n\
                 user.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }}\n"
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(binary)
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("danted.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(&mut child, port, "danted");
        Some(Dante { child, port, dir })
    }

    pub fn url(&self, scheme: &str, user_info: &str) -> url::Url {
        url::Url::parse(&format!("{scheme}://{user_info}127.0.0.1:{}", self.port)).unwrap()
    }
}

impl Drop for Dante {
    fn drop(&mut self) {
        // SIGTERM: danted stops its worker processes too.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + PROXY_START;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
