//! Upgrades decided off the worker (`Handler::defer_upgrade`): a tokio task awaits a
//! "session store" and answers; the worker serves other connections meanwhile; a refusal
//! is the client's HTTP status; an answer dropped unsent refuses with 503.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use ringcast::proto::handshake::{HandshakeError, Request};
use ringcast::server::{
    Backend, Handler, Server, ServerConfig, ServerHandle, Socket, UpgradeAnswer,
};
use ringcast::{Dialer, Error, MessageType};

/// Looks the `token` query parameter up in a "store" on the tokio runtime (a short
/// sleep; `slow` waits until the test opens `gate`), then accepts (`good`, `slow`),
/// refuses (401), or drops the answer (`drop`). Echoes messages.
struct Sessions {
    runtime: tokio::runtime::Handle,
    gate: Arc<Notify>,
    /// Told when `slow`'s lookup starts.
    pending: mpsc::Sender<()>,
}

impl Handler for Sessions {
    type Data = ();

    fn defer_upgrade(&mut self, request: &Request, answer: UpgradeAnswer) -> Option<UpgradeAnswer> {
        let token = request
            .query()
            .and_then(|q| q.strip_prefix("token="))
            .unwrap_or("")
            .to_owned();
        let gate = self.gate.clone();
        if token == "slow" {
            let _ = self.pending.send(());
        }
        self.runtime.spawn(async move {
            if token == "slow" {
                // A hang guard, not a wait for time to pass: the test opens the gate.
                let _ = tokio::time::timeout(Duration::from_secs(60), gate.notified()).await;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = match token.as_str() {
                "good" | "slow" => answer.accept(vec![("X-User".into(), token)]),
                "drop" => {
                    drop(answer);
                    Ok(())
                }
                _ => answer.refuse(HandshakeError::new(401, "no such session")),
            };
        });
        None
    }

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        let _ = socket.send(kind, payload);
    }
}

fn server(
    runtime: &tokio::runtime::Runtime,
    backend: Backend,
    gate: &Arc<Notify>,
    pending: mpsc::Sender<()>,
) -> ServerHandle {
    let handle = runtime.handle().clone();
    let gate = gate.clone();
    let config = ServerConfig {
        addr: Some("127.0.0.1:0".parse().unwrap()),
        workers: 1,
        backend,
        shutdown_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    Server::new(config)
        .start(move |_| Sessions {
            runtime: handle.clone(),
            gate: gate.clone(),
            pending: pending.clone(),
        })
        .expect("server")
}

fn dial(
    server: &ServerHandle,
    token: &str,
) -> Result<ringcast::Conn<ringcast::client::ClientStream>, Error> {
    let dialer = Dialer {
        handshake_timeout: Some(Duration::from_secs(20)),
        proxy: ringcast::client::Proxy::None,
        ..Dialer::default()
    };
    let url = format!("ws://{}/ws?token={token}", server.local_addr().unwrap());
    let (mut conn, response) = dialer.dial(&url, &[])?;
    assert_eq!(response.header("x-user"), Some(token.as_bytes()));
    conn.set_read_deadline(Some(Instant::now() + Duration::from_secs(20)));
    Ok(conn)
}

fn status(result: Result<ringcast::Conn<ringcast::client::ClientStream>, Error>) -> Option<u16> {
    match result {
        Err(Error::Handshake(err)) => err.response().map(|r| r.status),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_tokio_task_decides_upgrades_while_the_worker_serves_others() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for backend in [Backend::Uring, Backend::Epoll] {
        let gate = Arc::new(Notify::new());
        let (pending, lookups) = mpsc::channel();
        let server = server(&runtime, backend, &gate, pending);
        // A slow lookup is pending while another client opens and echoes on the one worker.
        let slow = {
            let server = server.clone();
            std::thread::spawn(move || dial(&server, "slow"))
        };
        lookups
            .recv_timeout(Duration::from_secs(20))
            .expect("the slow lookup started");
        let mut good = dial(&server, "good").expect("good token");
        good.write_message(MessageType::Text, b"meanwhile").unwrap();
        assert_eq!(good.read_message().unwrap().1, b"meanwhile");
        assert!(
            !slow.is_finished(),
            "{backend:?}: the slow lookup is still pending"
        );
        gate.notify_one();
        let mut slow = slow
            .join()
            .unwrap()
            .expect("the slow one opens once decided");
        slow.write_message(MessageType::Text, b"late").unwrap();
        assert_eq!(slow.read_message().unwrap().1, b"late");
        assert_eq!(status(dial(&server, "bad")), Some(401), "{backend:?}");
        assert_eq!(status(dial(&server, "drop")), Some(503), "{backend:?}");
        server.shutdown();
        server.wait();
    }
}
