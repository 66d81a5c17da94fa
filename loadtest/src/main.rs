//! `ringcast-load`: drives any WebSocket server from ringcast's own engine, on the client
//! side (`ServerConfig { addr: None, .. }` and `ServerHandle::dial`), and reports
//! throughput, loss, latency percentiles and, given the server's pid, its CPU time and
//! memory.
//!
//! ```text
//! ringcast-load fanout --url ws://127.0.0.1:9001/ws?room=a --subscribers 1000 --publishers 1 \
//!     --size 64 [--rate 20] --duration 10 [--json] [--plot fanout.svg] [--server-pid PID]
//! ringcast-load echo   --url ws://127.0.0.1:9001/echo --connections 100 --pipeline 1 --duration 10
//! ringcast-load conns  --url ws://127.0.0.1:9001/echo --connections 10000 --rate 2000 --hold 10
//! ```
//!
//! - `main.rs`: the command line.
//! - `scenario.rs`: fan-out, echo and connection scenarios (their handlers and timing).
//! - `client.rs`: the fleet of client connections on the engine, the message format.
//! - `stats.rs`: histograms, timelines, sequence tracking, the server probe.
//! - `report.rs`: terminal summary, JSON line, SVG plot, progress line.

mod client;
mod data;
mod monitor;
mod payload;
mod report;
mod scenario;
mod stats;
mod stream;
mod target;
mod template;
mod thresholds;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::FleetConfig;
use crate::data::{DataTable, Samples};
use crate::payload::{Filler, Payload};
use crate::report::Report;
use crate::scenario::{BoxError, Common};
use crate::target::{Target, TargetSpec};
use crate::thresholds::{MaxLoss, Thresholds};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A WebSocket load generator on ringcast's engine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One room: publishers send, the server broadcasts to everyone in the room (sender
    /// included); count deliveries, loss, duplicates, reordering and latency.
    Fanout(FanoutArgs),
    /// Messages to an echo endpoint, a pipeline in flight per connection (closed loop) or
    /// at a fixed rate (open loop); count messages per second and round-trip latency.
    Echo(EchoArgs),
    /// Open many connections at a given rate, hold them idle, then close them; count
    /// connect latency, failures and the server's memory per connection.
    Conns(ConnsArgs),
}

/// How every connection dials (all subcommands).
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
struct Connection {
    /// A request header, `Name: value` (repeat for several). The value is a template,
    /// like the URL.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The Cookie header's value, e.g. `session=abc; theme=dark`.
    #[arg(long)]
    cookie: Option<String>,
    /// The Origin header's value (servers that check it refuse others with 403).
    #[arg(long)]
    origin: Option<String>,
    /// A subprotocol to offer (repeat for several, in order of preference).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Offer permessage-deflate.
    #[arg(long)]
    compress: bool,
    /// A CSV file with a header row: connection n fills the placeholders named after its
    /// columns, in the URL and headers, from row n % rows.
    #[arg(long, value_name = "CSV")]
    data: Option<PathBuf>,
    /// wss://: also trust the certificates in this PEM file (a private CA).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// wss://: check no certificate (a self-signed test server). The traffic is still
    /// encrypted, to a server nobody vouched for.
    #[arg(long)]
    insecure: bool,
    /// Local addresses to connect from, in turn (e.g. 127.0.0.1,127.0.0.2): one address
    /// has about 28 000 ephemeral ports towards one server port.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Engine worker threads of the load generator (0: one per CPU it may run on).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// What the run reports and where (all subcommands).
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
struct Output {
    /// Print one line of JSON on stdout instead of the summary (and no progress line).
    #[arg(long)]
    json: bool,
    /// Draw the latency distribution and the rate over time into this SVG file.
    #[arg(long, value_name = "SVG")]
    plot: Option<PathBuf>,
    /// Write a time series here, a row a second (open connections, rate, errors, latency
    /// percentiles): CSV when the name ends in .csv, JSON lines otherwise.
    #[arg(long, value_name = "FILE")]
    series: Option<PathBuf>,
    /// The server's process id: sample its CPU time (user and kernel) and RSS from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

/// What the messages of `fanout` and `echo` carry.
#[derive(Debug, Args)]
#[command(next_help_heading = "Payload")]
struct PayloadArgs {
    /// Message size in bytes: a stamp (`p=ID s=SEQ t=NS`) and the filler.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// The filler after the stamp: `pad` (x repeated: compresses to almost nothing) or
    /// `random` (random letters and digits: compresses to about 3/4, like tokens).
    #[arg(long, value_enum, default_value_t = FillerKind::Pad)]
    payload: FillerKind,
    /// Fill each message with a line of this file instead, chosen at random (chat lines,
    /// JSON documents), so that compression meets realistic text. The size is the line's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["size", "payload"])]
    payload_file: Option<PathBuf>,
}

/// `--payload`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FillerKind {
    /// `x` repeated.
    Pad,
    /// Random letters, digits, `-` and `_`.
    Random,
}

impl PayloadArgs {
    fn payload(&self) -> Result<Payload, BoxError> {
        let filler = match (&self.payload_file, self.payload) {
            (Some(path), _) => Filler::Samples(Arc::new(Samples::read(path)?)),
            (None, FillerKind::Pad) => Filler::Pad,
            (None, FillerKind::Random) => Filler::Random,
        };
        Ok(Payload {
            size: self.size,
            filler,
        })
    }
}

/// Limits that fail the run (exit code 1) when not kept.
#[derive(Debug, Args)]
#[command(next_help_heading = "Thresholds (exit code 1 when one is not kept)")]
struct Limits {
    /// The 99th percentile latency at most this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p99: Option<f64>,
    /// Loss at most this: a count (10) or a percentage of what was expected (0.1%).
    #[arg(long, value_name = "N|P%")]
    max_loss: Option<MaxLoss>,
    /// The scenario's rate (deliveries, echoes, connections or messages per second) at
    /// least this.
    #[arg(long, value_name = "PER_S")]
    min_rate: Option<f64>,
}

impl Limits {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            max_p99_ms: self.max_p99,
            max_loss: self.max_loss,
            min_rate: self.min_rate,
        }
    }
}

/// How connecting goes when many connections open at once.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connecting")]
struct Connecting {
    /// Handshakes under way at once while connecting.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds connecting may take before the run goes on with what opened.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    connect_timeout: f64,
}

/// `fanout`'s arguments.
#[derive(Debug, Args)]
struct FanoutArgs {
    /// The server's WebSocket URL, ws:// or wss://. A template: the connection's number n and the data
    /// file's columns, in braces, are filled in per connection.
    #[arg(long)]
    url: String,
    /// Set the URL's `room` query parameter to this.
    #[arg(long)]
    room: Option<String>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    subscribers: u32,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Publishes per second, all publishers together, on a fixed schedule (latency
    /// counts from the scheduled time). Without it: max throughput, `--window` messages
    /// in flight per publisher.
    #[arg(long)]
    rate: Option<f64>,
    /// Max throughput: messages in flight per publisher (a publisher sends the next one
    /// when one of its own comes back).
    #[arg(long, default_value_t = 16)]
    window: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the window for deliveries on their way.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    connecting: Connecting,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    output: Output,
}

/// `echo`'s arguments.
#[derive(Debug, Args)]
struct EchoArgs {
    /// The echo endpoint's URL, ws:// or wss://. A template: the connection's number n and the data
    /// file's columns, in braces, are filled in per connection.
    #[arg(long)]
    url: String,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    connections: u32,
    /// Closed loop: messages in flight per connection (each echo releases the next).
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// Open loop: messages per second, all connections together in turn, on a fixed
    /// schedule whatever the echoes do. Latency counts from each message's scheduled
    /// time, so a server that falls behind shows it (no coordinated omission).
    #[arg(long, conflicts_with = "pipeline")]
    rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the window for echoes on their way.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    connecting: Connecting,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    output: Output,
}

/// `conns`'s arguments.
#[derive(Debug, Args)]
struct ConnsArgs {
    /// The server's WebSocket URL, ws:// or wss://. A template: the connection's number n and the data
    /// file's columns, in braces, are filled in per connection.
    #[arg(long)]
    url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: u32,
    /// Dials per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds to hold the connections open once all are open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    output: Output,
}

fn main() -> ExitCode {
    client::now_ns(); // the process-wide clock starts here
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1), // a threshold was not kept; the report says which
        Err(err) => {
            eprintln!("ringcast-load: {err}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; whether every threshold was kept.
fn run(cli: Cli) -> Result<bool, BoxError> {
    if let Err(err) = client::raise_fd_limit() {
        eprintln!("ringcast-load: could not raise the open-file limit: {err}");
    }
    let (out, limits, mut report) = match cli.command {
        Command::Fanout(args) => {
            let url = match &args.room {
                Some(room) => with_room(&args.url, room),
                None => args.url.clone(),
            };
            let common = common(&url, &args.connection, Some(&args.connecting), &args.output)?;
            let plan = scenario::Fanout {
                subscribers: args.subscribers,
                publishers: args.publishers,
                payload: args.payload.payload()?,
                rate: args.rate,
                window: args.window,
                warmup: seconds("--warmup", args.warmup)?,
                duration: seconds("--duration", args.duration)?,
                grace: seconds("--grace", args.grace)?,
            };
            (args.output, args.limits, scenario::fanout(&common, &plan)?)
        }
        Command::Echo(args) => {
            let common = common(
                &args.url,
                &args.connection,
                Some(&args.connecting),
                &args.output,
            )?;
            let plan = scenario::Echo {
                connections: args.connections,
                pipeline: args.pipeline,
                rate: args.rate,
                payload: args.payload.payload()?,
                warmup: seconds("--warmup", args.warmup)?,
                duration: seconds("--duration", args.duration)?,
                grace: seconds("--grace", args.grace)?,
            };
            (args.output, args.limits, scenario::echo(&common, &plan)?)
        }
        Command::Conns(args) => {
            let common = common(&args.url, &args.connection, None, &args.output)?;
            let plan = scenario::Conns {
                connections: args.connections,
                rate: args.rate,
                hold: seconds("--hold", args.hold)?,
            };
            (args.output, args.limits, scenario::conns(&common, &plan)?)
        }
    };
    report.thresholds = limits.thresholds().check(&report);
    output(&out, &report)?;
    Ok(report.passed())
}

/// The settings every scenario shares, from the command line.
fn common(
    url: &str,
    connection: &Connection,
    connecting: Option<&Connecting>,
    output: &Output,
) -> Result<Common, BoxError> {
    let data = match &connection.data {
        Some(path) => Some(Arc::new(DataTable::read(path)?)),
        None => None,
    };
    let target = Target::new(TargetSpec {
        url: url.to_owned(),
        headers: connection.headers.clone(),
        cookie: connection.cookie.clone(),
        origin: connection.origin.clone(),
        subprotocols: connection.subprotocols.clone(),
        compress: connection.compress,
        sources: connection.sources.clone(),
        data,
        ca: connection.ca.clone(),
        insecure: connection.insecure,
    })?;
    let (concurrency, connect_timeout) = match connecting {
        Some(c) => (
            c.concurrency,
            seconds("--connect-timeout", c.connect_timeout)?,
        ),
        None => (256, Duration::from_secs(60)),
    };
    Ok(Common {
        fleet: FleetConfig {
            target: Arc::new(target),
            workers: connection.workers,
        },
        server_pid: output.server_pid,
        json: output.json,
        series: output.series.clone(),
        concurrency,
        connect_timeout,
    })
}

fn output(output: &Output, report: &Report) -> Result<(), BoxError> {
    if output.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &output.plot {
        report::plot(report, path).map_err(|e| format!("--plot {}: {e}", path.display()))?;
        if !output.json {
            println!("plot written to {}", path.display());
        }
    }
    Ok(())
}

/// `value` seconds, refused when negative or not a number.
fn seconds(flag: &str, value: f64) -> Result<Duration, BoxError> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{flag} {value}: not a duration").into())
}

/// `url` with its `room` query parameter set to `room` (added, or replacing the one
/// there); other parameters are kept. Done on the text, so placeholders such as `{n}`
/// stay as they are.
fn with_room(url: &str, room: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let encoded: String = url::form_urlencoded::byte_serialize(room.as_bytes()).collect();
    let mut out = match base.split_once('?') {
        Some((path, query)) => {
            let mut kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && *p != "room" && !p.starts_with("room="))
                .collect();
            let pair = format!("room={encoded}");
            kept.push(&pair);
            format!("{path}?{}", kept.join("&"))
        }
        None => format!("{base}?room={encoded}"),
    };
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_added_or_replaced() {
        assert_eq!(
            with_room("ws://127.0.0.1:9/ws", "a"),
            "ws://127.0.0.1:9/ws?room=a"
        );
        assert_eq!(
            with_room("ws://127.0.0.1:9/ws?room=x&k=1", "b c"),
            "ws://127.0.0.1:9/ws?k=1&room=b+c"
        );
        assert_eq!(
            with_room("ws://127.0.0.1:9/{n}?u={n}", "r"),
            "ws://127.0.0.1:9/{n}?u={n}&room=r"
        );
    }

    #[test]
    fn command_line_parses() {
        Cli::try_parse_from([
            "ringcast-load",
            "fanout",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--sources",
            "127.0.0.1,127.0.0.2",
            "--rate",
            "20",
        ])
        .unwrap();
        assert!(Cli::try_parse_from(["ringcast-load", "echo"]).is_err());
    }
}
