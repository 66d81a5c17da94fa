//! `chat-client`: a terminal client for the `chat` server (or any WebSocket server that
//! takes text): lines typed go out as text messages, messages received are printed.
//!
//! The shape of gorilla/websocket's example clients, over ringcast's blocking API:
//!
//! - a read loop on its own thread (the `ReadHalf`), which
//!   prints what arrives and runs the pong handler; a peer silent for `--pong-wait-ms`
//!   (no message, no pong) ends it (`set_idle_timeout`);
//! - a write loop on the main thread (the `WriteHalf`), fed
//!   by stdin and by a ping ticker every `--ping-interval-ms`, each write bounded by
//!   `--write-wait-ms`: pings go out while the read loop is blocked waiting;
//! - a clean close on Ctrl-C (or the end of stdin): a close frame (1000), then the read
//!   loop waits up to a second for the server's answer.
//!
//! `cargo run --release --bin chat-client -- --url 'ws://127.0.0.1:8080/ws?room=lobby'`
//!
//! Status lines (connected, closed, and with `--verbose` each pong) go to stderr.

use std::io::{BufRead, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use ringcast::client::ClientStream;
use ringcast::conn::{Control, ReadHalf};
use ringcast::{CloseCode, Dialer, Error, MessageType};
use ringcast_examples::Keepalive;

/// Chat from the terminal: stdin lines out, messages in.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    #[command(flatten)]
    keepalive: Keepalive,
    /// Print a line on stderr for each pong.
    #[arg(long)]
    verbose: bool,
}

/// What the write loop hears about.
enum Event {
    /// A line typed on stdin.
    Line(String),
    /// Ctrl-C, SIGTERM, or the end of stdin: close cleanly.
    Quit,
    /// The read loop ended, with this error.
    ReadEnded(Error),
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("chat-client: {err}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<i32, Box<dyn std::error::Error>> {
    let dialer = Dialer {
        handshake_timeout: Some(Duration::from_secs(10)),
        ..Dialer::default()
    };
    let (conn, _) = dialer.dial(&args.url, &[])?;
    eprintln!("connected to {}", args.url);
    let (mut reader, mut writer) = conn.split()?;
    let write_wait = args.keepalive.write_wait();
    writer.set_write_timeout(Some(write_wait));

    let (events, heard) = mpsc::channel();
    start_signals(events.clone())?;
    start_stdin(events.clone());
    reader.set_idle_timeout(Some(args.keepalive.pong_wait()));
    if args.verbose {
        reader.set_pong_handler(Some(std::sync::Arc::new(
            |_: &[u8], _: &mut Control<'_>| {
                eprintln!("pong");
                Ok(())
            },
        )));
    }
    thread::Builder::new()
        .name("read loop".into())
        .spawn(move || {
            let err = read_loop_until_error(&mut reader);
            let _ = events.send(Event::ReadEnded(err));
        })?;

    // The write loop, with the ping ticker.
    let interval = args.keepalive.ping_interval();
    let mut next_ping = Instant::now() + interval;
    loop {
        let wait = next_ping.saturating_duration_since(Instant::now());
        match heard.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {
                let deadline = Some(Instant::now() + write_wait);
                writer.write_control(MessageType::Ping, b"", deadline)?;
                next_ping = Instant::now() + interval;
            }
            Ok(Event::Line(line)) => writer.write_message(MessageType::Text, line.as_bytes())?,
            Ok(Event::ReadEnded(err)) => return Ok(report(&err)),
            Ok(Event::Quit) | Err(RecvTimeoutError::Disconnected) => {
                writer
                    .control_handle()
                    .close_with(CloseCode::NORMAL_CLOSURE, "")?;
                // The server answers the close; the read loop then ends.
                let give_up = Instant::now() + Duration::from_secs(1);
                while let Ok(event) =
                    heard.recv_timeout(give_up.saturating_duration_since(Instant::now()))
                {
                    if let Event::ReadEnded(err) = event {
                        return Ok(report(&err));
                    }
                }
                eprintln!("closed (no answer from the server)");
                return Ok(0);
            }
        }
    }
}

/// Print every message until the connection ends; the error that ended it.
fn read_loop_until_error(reader: &mut ReadHalf<ClientStream>) -> Error {
    let stdout = std::io::stdout();
    loop {
        match reader.read_message() {
            Ok((MessageType::Text, text)) => {
                let mut out = stdout.lock();
                let _ = out.write_all(&text);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
            Ok((_, data)) => println!("<{} bytes of binary>", data.len()),
            Err(err) => return err,
        }
    }
}

/// Say how the connection ended; the exit status (0 for a normal close).
fn report(err: &Error) -> i32 {
    match err.as_close() {
        Some(close) => {
            eprintln!("closed {} {}", close.code, close.reason);
            i32::from(ringcast::is_unexpected_close_error(
                err,
                &[CloseCode::NORMAL_CLOSURE, CloseCode::GOING_AWAY],
            ))
        }
        None => {
            eprintln!("connection lost: {err}");
            1
        }
    }
}

fn start_stdin(events: mpsc::Sender<Event>) {
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if events.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = events.send(Event::Quit);
    });
}

fn start_signals(events: mpsc::Sender<Event>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = events.send(Event::Quit);
            }
        })?;
    Ok(())
}
