//! `echo-server`: echoes every text and binary message back to its sender.
//!
//! It is also the server the Autobahn suite drives:
//! `cargo run --release --bin echo-server -- --addr 127.0.0.1:9001 [--backend uring|epoll|blocking] [--workers N] [--compress]`.
//! It prints `listening on ADDR` once it accepts connections and runs until killed.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use clap::{Parser, ValueEnum};
use ringcast::server::{Handler, Server, ServerConfig, Socket};
use ringcast::{CloseCode, Error, MessageType, Upgrader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which I/O model serves the connections.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    /// The engine on io_uring (falls back to epoll where io_uring cannot be set up).
    Uring,
    /// The engine on epoll.
    Epoll,
    /// One thread per connection over the blocking `Conn`.
    Blocking,
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
    /// Engine worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Negotiate permessage-deflate when clients offer it.
    #[arg(long)]
    compress: bool,
    /// Largest message accepted, in bytes (Autobahn sends up to 16 MiB).
    #[arg(long, default_value_t = 64 << 20)]
    read_limit: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match args.backend {
        Backend::Blocking => run_blocking(&args),
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
        // Autobahn echoes messages of up to 16 MiB back at once.
        max_queued_bytes: 64 << 20,
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

fn run_blocking(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&args.addr)?;
    let upgrader = Arc::new(upgrader(args));
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                continue;
            }
        };
        let upgrader = Arc::clone(&upgrader);
        thread::spawn(move || serve(&upgrader, stream));
    }
    Ok(())
}

fn serve(upgrader: &Upgrader, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut conn = match upgrader.upgrade(stream, &[]) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::debug!(%err, "handshake refused");
            return;
        }
    };
    loop {
        let result = conn
            .read_message()
            .and_then(|(message_type, payload)| conn.write_message(message_type, &payload));
        match result {
            Ok(()) => {}
            Err(err @ Error::Closed(_)) => {
                if ringcast::is_unexpected_close_error(
                    &err,
                    &[CloseCode::NORMAL_CLOSURE, CloseCode::GOING_AWAY],
                ) {
                    tracing::debug!(%err, "closed");
                }
                return;
            }
            Err(err) => {
                tracing::debug!(%err, "connection ended");
                return;
            }
        }
    }
}
