//! `echo-server`: echoes every text and binary message back to its sender.
//!
//! It is also the server the Autobahn suite drives:
//! `cargo run --release --bin echo-server -- --addr 127.0.0.1:9001 --backend blocking [--compress]`.
//! It prints `listening on ADDR` once it accepts connections.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use clap::{Parser, ValueEnum};
use ringcast::{CloseCode, Error, Upgrader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which I/O model serves the connections.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
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
    #[arg(long, value_enum, default_value = "blocking")]
    backend: Backend,
    /// Negotiate permessage-deflate when clients offer it.
    #[arg(long)]
    compress: bool,
    /// Largest message accepted, in bytes (Autobahn sends up to 16 MiB).
    #[arg(long, default_value_t = 64 << 20)]
    read_limit: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match args.backend {
        Backend::Blocking => run_blocking(&args),
    }
}

fn run_blocking(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&args.addr)?;
    let upgrader = Arc::new(Upgrader {
        enable_compression: args.compress,
        read_limit: Some(args.read_limit),
        handshake_timeout: Some(std::time::Duration::from_secs(10)),
        // Autobahn's and other test clients send an Origin of their own.
        check_origin: Some(Arc::new(|_| true)),
        ..Upgrader::default()
    });
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
