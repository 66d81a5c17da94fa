//! `command`: runs a command for each WebSocket connection and joins the two: every
//! message received is written to the command's stdin as a line, every line it prints
//! comes back as a text message. It is gorilla/websocket's `command` example, over the
//! blocking API:
//!
//! - a read loop (the `ReadHalf`) pumping messages into the
//!   command's stdin, ended by a silent peer (`--pong-wait-ms`, any bytes count);
//! - a write loop (the `WriteHalf`) pumping the command's
//!   stdout out, each write bounded by `--write-wait-ms`;
//! - a ping ticker on a third thread (a `ControlHandle`);
//! - when the command ends, a close (1000); when the connection ends, the command's stdin
//!   is closed, and the command killed if it has not ended a second later.
//!
//! `cargo run --release --bin command -- --addr 127.0.0.1:8080 -- cat`
//!
//! It prints `listening on ADDR` once it accepts connections. At most `--max-conns`
//! connections run a command at once; more are answered 503.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use ringcast::conn::{ControlHandle, ReadHalf, WriteHalf};
use ringcast::proto::handshake::HandshakeError;
use ringcast::{CloseCode, MessageType, Upgrader};
use ringcast_examples::Keepalive;

/// Serve a command over WebSocket, one process per connection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[command(flatten)]
    keepalive: Keepalive,
    /// The most connections (and so processes) at once.
    #[arg(long, default_value_t = 64)]
    max_conns: usize,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ringcast_examples::init_logs();
    let args = Arc::new(Args::parse());
    let listener = TcpListener::bind(&args.addr)?;
    println!("listening on {}", listener.local_addr()?);
    let upgrader = Arc::new(Upgrader {
        handshake_timeout: Some(Duration::from_secs(10)),
        ..Upgrader::default()
    });
    let live = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if live.fetch_add(1, Ordering::AcqRel) >= args.max_conns {
            live.fetch_sub(1, Ordering::AcqRel);
            let _ = upgrader.refuse_with(&mut stream, None, HandshakeError::new(503, "busy"));
            continue;
        }
        let (args, upgrader, live) = (Arc::clone(&args), Arc::clone(&upgrader), Arc::clone(&live));
        let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
            if let Err(err) = serve(&args, &upgrader, stream) {
                tracing::info!(%err, "connection ended");
            }
            live.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(err) = spawned {
            // The closure, and the stream in it, are gone: the client sees a reset.
            tracing::warn!(%err, "no thread for a connection");
        }
    }
    Ok(())
}

fn serve(
    args: &Args,
    upgrader: &Upgrader,
    stream: TcpStream,
) -> Result<(), Box<dyn std::error::Error>> {
    let conn = upgrader.upgrade(stream, &[])?;
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut reader, mut writer) = conn.split()?;
    let write_wait = args.keepalive.write_wait();
    writer.set_write_timeout(Some(write_wait));
    reader.set_idle_timeout(Some(args.keepalive.pong_wait()));

    let (stop_ticker, ticker_stops) = mpsc::channel::<()>();
    let pinger = writer.control_handle();
    let interval = args.keepalive.ping_interval();
    thread::spawn(move || ping_ticker(&pinger, interval, write_wait, &ticker_stops));
    let pump_in = thread::spawn(move || pump_stdin(&mut reader, stdin));

    pump_stdout(&mut writer, stdout);
    // The command's output ended: say goodbye, and let the read loop hear the answer.
    let _ = writer
        .control_handle()
        .close_with(CloseCode::NORMAL_CLOSURE, "");
    drop(stop_ticker);
    let _ = pump_in.join();
    end(&mut child);
    Ok(())
}

/// Messages in, lines to the command. Returns (closing the command's stdin) when the
/// connection ends.
fn pump_stdin(reader: &mut ReadHalf<TcpStream>, mut stdin: std::process::ChildStdin) {
    while let Ok((_, message)) = reader.read_message() {
        if stdin
            .write_all(&message)
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush())
            .is_err()
        {
            // The command is gone; its output's end closes the connection.
            break;
        }
    }
}

/// Lines from the command out as text messages, until its output ends or a write fails.
fn pump_stdout(writer: &mut WriteHalf<TcpStream>, stdout: std::process::ChildStdout) {
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        if writer
            .write_message(MessageType::Text, text.as_bytes())
            .is_err()
        {
            break;
        }
    }
}

fn ping_ticker(
    pinger: &ControlHandle<TcpStream>,
    interval: Duration,
    write_wait: Duration,
    stop: &mpsc::Receiver<()>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let deadline = Some(Instant::now() + write_wait);
        if pinger
            .write_control(MessageType::Ping, b"", deadline)
            .is_err()
        {
            return;
        }
    }
}

/// Give the command a second to end after its stdin closed, then kill it.
fn end(child: &mut Child) {
    let give_up = Instant::now() + Duration::from_secs(1);
    while Instant::now() < give_up {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
