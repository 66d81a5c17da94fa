//! `echo-server`: echoes every text and binary message back to its sender.
//!
//! It is also the server the Autobahn suite drives:
//! `cargo run --release --bin echo-server -- --addr 127.0.0.1:9001 [--backend uring|epoll|blocking|async] [--workers N] [--compress]`.
//! It prints `listening on ADDR` once it accepts connections and runs until killed.
//!
//! The blocking backend has the shape of gorilla/websocket's echo example, one thread per
//! connection (a goroutine there), with the bounds a server needs: at most `--max-conns`
//! connections (more are answered 503, as is one for which no thread can be made), an
//! idle timeout and a write timeout per connection.
//!
//! The async backend (the `async-echo` of docs/async.md) is the same server as tokio
//! tasks over `AsyncConn`, with the same bounds, on `--workers` runtime threads.
//!
//! It runs on the system allocator, not mimalloc like the chat: a thread per connection
//! that sits idle in `read` never gives mimalloc the chance to return its pages, and the
//! engine backends measured no slower and smaller without it (docs/decisions.md, "The
//! example echo server's allocator").

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ringcast::proto::handshake::HandshakeError;
use ringcast::server::{Handler, Server, ServerConfig, Socket};
use ringcast::{CloseCode, Error, MessageType, Upgrader};

mod echo_async;

/// Which I/O model serves the connections.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    /// The engine on io_uring (falls back to epoll where io_uring cannot be set up).
    Uring,
    /// The engine on epoll.
    Epoll,
    /// One thread per connection over the blocking `Conn`.
    Blocking,
    /// One tokio task per connection over `AsyncConn`.
    Async,
}

/// Echo every WebSocket message back to its sender.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: String,
    /// The I/O backend.
    #[arg(long, value_enum, default_value = "uring")]
    backend: Backend,
    /// Engine worker threads, or the async backend's runtime threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Negotiate permessage-deflate when clients offer it.
    #[arg(long)]
    compress: bool,
    /// Largest message accepted, in bytes (Autobahn sends up to 16 MiB).
    #[arg(long, default_value_t = 64 << 20)]
    read_limit: u64,
    /// The engine's bound on bytes queued for one connection (Autobahn echoes messages of
    /// up to 16 MiB back at once).
    #[arg(long, default_value_t = 64 << 20)]
    max_queued: usize,
    /// Blocking and async backends: the most connections served at once; more are
    /// answered 503.
    #[arg(long, default_value_t = 1024)]
    max_conns: usize,
    /// Blocking and async backends: close a connection that sent nothing for this many seconds
    /// (the engine's default idle timeout).
    #[arg(long, default_value_t = 120)]
    idle_timeout_secs: u64,
    /// Blocking and async backends: end a connection whose peer takes no echo for this
    /// many seconds.
    #[arg(long, default_value_t = 30)]
    write_timeout_secs: u64,
    /// Blocking backend: the stack of each connection thread, in KiB (Rust's default).
    #[arg(long, default_value_t = 2048)]
    thread_stack_kib: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match args.backend {
        Backend::Blocking => run_blocking(&args),
        Backend::Async => echo_async::run(&args),
        Backend::Uring => run_engine(&args, ringcast::server::Backend::Uring),
        Backend::Epoll => run_engine(&args, ringcast::server::Backend::Epoll),
    }
}

fn upgrader(args: &Args) -> Upgrader {
    Upgrader {
        enable_compression: args.compress,
        read_limit: Some(args.read_limit),
        handshake_timeout: Some(std::time::Duration::from_secs(10)),
        // Autobahn's and other test clients send an Origin of their own.
        check_origin: Some(Arc::new(|_| true)),
        // Write buffers shared between writes, as the seed advises for servers of many
        // mostly idle connections: an idle one holds none (the engine backends ignore it).
        write_buffer_pool: Some(Arc::new(ringcast::SimpleBufferPool::new(256))),
        ..Upgrader::default()
    }
}

/// Echoes on the engine: one handler per worker, no state.
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
        // A refusal (slow consumer) closes the connection; nothing else to do here.
        let _ = socket.send(kind, payload);
    }
}

fn run_engine(
    args: &Args,
    backend: ringcast::server::Backend,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig {
        addr: Some(args.addr.parse()?),
        workers: args.workers,
        backend,
        upgrader: upgrader(args),
        max_queued_bytes: args.max_queued,
        ..ServerConfig::default()
    };
    let server = Server::new(config).start(|_| Echo)?;
    println!("listening on {}", server.local_addr().ok_or("no address")?);
    for line in server.backends() {
        eprintln!("{line}");
    }
    server.wait();
    Ok(())
}

/// The answer to a connection past `--max-conns`.
fn server_full() -> HandshakeError {
    HandshakeError::new(503, "server full, try again later")
}

/// Answers 503 on a thread of its own, so that the accept loop never waits on a client.
/// Holds at most [`REFUSALS_QUEUED`] connections; past that, one is closed unanswered.
struct Refuser {
    queue: mpsc::SyncSender<TcpStream>,
}

/// How many connections may wait for their 503.
const REFUSALS_QUEUED: usize = 64;

impl Refuser {
    fn start(upgrader: &Upgrader) -> io::Result<Refuser> {
        // A refusal reads the request (so closing does not reset the answer away) for
        // one second at most.
        let upgrader = Upgrader {
            handshake_timeout: Some(Duration::from_secs(1)),
            ..upgrader.clone()
        };
        let (queue, refused) = mpsc::sync_channel::<TcpStream>(REFUSALS_QUEUED);
        thread::Builder::new()
            .name("refuser".into())
            .spawn(move || {
                for stream in refused {
                    let _ = upgrader.upgrade_with(stream, |_| Err(server_full()));
                }
            })?;
        Ok(Refuser { queue })
    }

    fn refuse(&self, stream: TcpStream) {
        if self.queue.try_send(stream).is_err() {
            tracing::warn!("refusals queue full: a connection closed unanswered");
        }
    }
}

/// One live connection, counted until its thread ends.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The timeouts of each connection.
#[derive(Clone)]
struct Timeouts {
    idle: Duration,
    write: Duration,
}

impl Timeouts {
    fn new(args: &Args) -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(args.idle_timeout_secs),
            write: Duration::from_secs(args.write_timeout_secs),
        }
    }
}

/// Log why a connection ended (at debug level; a normal close is not logged).
fn log_end(err: &Error) {
    match err {
        Error::Closed(_) => {
            if ringcast::is_unexpected_close_error(
                err,
                &[CloseCode::NORMAL_CLOSURE, CloseCode::GOING_AWAY],
            ) {
                tracing::debug!(%err, "closed");
            }
        }
        Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            tracing::debug!(%err, "timed out");
        }
        _ => tracing::debug!(%err, "connection ended"),
    }
}

/// Whether `err` is a timeout (idle, or a peer that takes no writes): the connection
/// says so with a 1001 close before it ends.
fn is_timeout(err: &Error) -> bool {
    matches!(err, Error::Io(io) if io.kind() == io::ErrorKind::TimedOut)
}

fn run_blocking(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&args.addr)?;
    let upgrader = Arc::new(upgrader(args));
    let refuser = Refuser::start(&upgrader)?;
    let live = Arc::new(AtomicUsize::new(0));
    let timeouts = Timeouts::new(args);
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                // Out of descriptors: let some connections end before trying again.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if live.load(Ordering::Acquire) >= args.max_conns {
            refuser.refuse(stream);
            continue;
        }
        live.fetch_add(1, Ordering::AcqRel);
        let counted = Live(Arc::clone(&live));
        // Kept to answer 503 if no thread can be made for the connection.
        let spare = stream.try_clone();
        let (upgrader, timeouts) = (Arc::clone(&upgrader), timeouts.clone());
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(args.thread_stack_kib * 1024)
            .spawn(move || {
                let _counted = counted;
                serve(&upgrader, stream, &timeouts);
            });
        match (spawned, spare) {
            (Ok(_), _) => {}
            (Err(err), Ok(spare)) => {
                tracing::warn!(%err, "no thread for a connection: answered 503");
                refuser.refuse(spare);
            }
            (Err(err), Err(_)) => tracing::warn!(%err, "no thread for a connection"),
        }
    }
    Ok(())
}

fn serve(upgrader: &Upgrader, stream: TcpStream, timeouts: &Timeouts) {
    let _ = stream.set_nodelay(true);
    let mut conn = match upgrader.upgrade(stream, &[]) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::debug!(%err, "handshake refused");
            return;
        }
    };
    conn.set_idle_timeout(Some(timeouts.idle));
    conn.set_write_timeout(Some(timeouts.write));
    let err = loop {
        let result = conn
            .read_message()
            .and_then(|(message_type, payload)| conn.write_message(message_type, &payload));
        if let Err(err) = result {
            break err;
        }
    };
    log_end(&err);
    if is_timeout(&err) {
        let payload = ringcast::format_close_message(CloseCode::GOING_AWAY, "idle");
        let deadline = Some(Instant::now() + Duration::from_secs(1));
        let _ = conn.write_control(MessageType::Close, &payload, deadline);
    }
}
