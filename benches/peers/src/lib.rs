//! What the peer servers share: command line, file-descriptor limit, runtime, listener,
//! routing of the request target, and shutdown on SIGINT/SIGTERM.
//!
//! Every peer serves the same contract (see README.md): `/echo` echoes, `/ws?room=NAME`
//! is a chat-room broadcast (room `lobby` when none is given), anything else is 404.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// How many messages a client may fall behind its room before it is dropped. The same
/// bound as the send channel of the gorilla/websocket chat example (256).
pub const ROOM_QUEUE: usize = 256;

/// Room used when `/ws` has no (or an empty) `room` parameter.
pub const DEFAULT_ROOM: &str = "lobby";

/// Command-line options common to every peer.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Worker threads of the tokio runtime.
    pub workers: usize,
}

/// Parses `--addr HOST:PORT` (default 127.0.0.1:9001) and `--workers N` (default 1);
/// prints usage and exits on `--help` or a bad argument.
pub fn parse_args(name: &str) -> Options {
    let usage = format!(
        "usage: {name} [--addr HOST:PORT] [--workers N]\n\
         \n\
         Serves /echo (echo) and /ws?room=NAME (chat-room broadcast); anything else is 404.\n\
         --addr     address to listen on (default 127.0.0.1:9001)\n\
         --workers  tokio worker threads (default 1)"
    );
    let fail = |msg: &str| -> ! {
        eprintln!("{name}: {msg}\n{usage}");
        std::process::exit(2);
    };
    let mut opts = Options {
        addr: "127.0.0.1:9001".parse().expect("default address"),
        workers: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| fail(&format!("{key} needs a value")))
        };
        match key.as_str() {
            "--addr" => {
                let v = value();
                opts.addr = v
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("bad address {v:?}")));
            }
            "--workers" => {
                let v = value();
                opts.workers = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => fail(&format!("bad worker count {v:?}")),
                };
            }
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            _ => fail(&format!("unknown argument {arg:?}")),
        }
    }
    opts
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, so a benchmark with many connections
/// is not capped at the usual 1024. Failure is reported, not fatal.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        eprintln!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the rlimit we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            eprintln!(
                "setrlimit(RLIMIT_NOFILE): {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// What a request target asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/echo`
    Echo,
    /// `/ws?room=NAME`
    Chat(String),
    /// Anything else: answered with 404.
    NotFound,
}

/// Routes a request target (path and optional query). The room name is taken as it
/// appears in the query (not percent-decoded): it is only a key.
pub fn route(target: &str) -> Route {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/echo" => Route::Echo,
        "/ws" => {
            let room = query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(k, _)| *k == "room")
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty())
                .unwrap_or(DEFAULT_ROOM);
            Route::Chat(room.to_string())
        }
        _ => Route::NotFound,
    }
}

/// The chat rooms: one `tokio::sync::broadcast` channel per room, created by its first
/// client and removed when its last client leaves.
///
/// A message is stored once in the room's ring (capacity [`ROOM_QUEUE`]) and every
/// client's writer reads it from there. Senders never wait: a client whose writer falls
/// more than `ROOM_QUEUE` messages behind (it does not read fast enough) sees
/// `RecvError::Lagged` and is disconnected, as the gorilla chat hub drops a client whose
/// send channel is full.
pub struct Rooms<T> {
    map: Mutex<HashMap<String, broadcast::Sender<T>>>,
}

impl<T: Clone> Default for Rooms<T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Rooms<T> {
    /// Joins room `name`: the sender to publish with and this client's receiver.
    pub fn join(&self, name: &str) -> (broadcast::Sender<T>, broadcast::Receiver<T>) {
        let mut map = self.map.lock().expect("rooms lock");
        let tx = map
            .entry(name.to_string())
            .or_insert_with(|| broadcast::channel(ROOM_QUEUE).0);
        (tx.clone(), tx.subscribe())
    }

    /// Leaves room `name`, removing the room when this was its last client.
    pub fn leave(&self, name: &str, rx: broadcast::Receiver<T>) {
        let mut map = self.map.lock().expect("rooms lock");
        drop(rx);
        if map.get(name).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(name);
        }
    }
}

/// Builds the runtime, binds, prints `listening on ADDR` and hands every accepted
/// connection (TCP_NODELAY set) to `handle` in its own task, until SIGINT or SIGTERM.
pub fn serve<F, Fut>(opts: &Options, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let addr = opts.addr;
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        let local = listener.local_addr().expect("local address");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {local}");
        let _ = out.flush();
        drop(out);

        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(handle(stream, peer));
                    }
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    });
    // Open connections are simply dropped.
    rt.shutdown_timeout(Duration::from_millis(100));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_removed_with_their_last_client() {
        let rooms = Rooms::<u32>::default();
        let (tx, rx_a) = rooms.join("a");
        let (_, rx_b) = rooms.join("a");
        tx.send(7).unwrap();
        rooms.leave("a", rx_a);
        assert_eq!(rooms.map.lock().unwrap().len(), 1);
        rooms.leave("a", rx_b);
        assert!(rooms.map.lock().unwrap().is_empty());
    }

    #[test]
    fn routes() {
        assert_eq!(route("/echo"), Route::Echo);
        assert_eq!(route("/echo?x=1"), Route::Echo);
        assert_eq!(route("/ws"), Route::Chat("lobby".into()));
        assert_eq!(route("/ws?room="), Route::Chat("lobby".into()));
        assert_eq!(route("/ws?room=a"), Route::Chat("a".into()));
        assert_eq!(route("/ws?x=1&room=b&y"), Route::Chat("b".into()));
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/ws/x"), Route::NotFound);
    }
}
