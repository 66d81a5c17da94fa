//! `ringcast-load`: drives any WebSocket server from ringcast's own engine, on the client
//! side (`ServerConfig { addr: None, .. }` and `ServerHandle::dial`), and reports
//! throughput, loss, latency percentiles and, given the server's pid, its CPU time and
//! memory.
//!
//! ```text
//! ringcast-load fanout --url ws://127.0.0.1:9001/ws?room=a --subscribers 1000 --publishers 1 \
//!     --size 64 [--rate 20] --duration 10 [--json] [--plot fanout.svg] [--server-pid PID]
//! ringcast-load echo   --url ws://127.0.0.1:9001/echo --connections 100 [--rate 20000]
//! ringcast-load conns  --url ws://127.0.0.1:9001/echo --connections 10000 --rate 2000 --hold 10
//! ringcast-load subscribe --url 'ws://127.0.0.1:8081/ws?topic=ticks' --seq-field seq --ts-field ts
//! ringcast-load run loadtest/scenarios/chat-room.toml [--max-p99 50] [--series run.csv]
//! ```
//!
//! The guide is docs/loadtest.md. Exit codes: 0, 1 when a threshold is not kept, 2 when
//! the run could not be made.
//!
//! - `main.rs`: the command line.
//! - `target.rs`, `template.rs`, `data.rs`: where and how each connection dials (URL and
//!   header templates, CSV data, TLS), and the values templates are filled with.
//! - `client.rs`: the fleet of client connections on the engine, the process clock.
//! - `payload.rs`: the stamped messages of `fanout` and `echo`, and their fillers.
//! - `scenario/`: one module per scenario (`fanout`, `echo`, `conns`, `run`).
//! - `script/`: scenario files: the format, the step compiler, the per-user state machine.
//! - `metronome.rs`: timer ticks for the workers' handlers.
//! - `stream.rs`: sequence numbers and timestamps of server-originated streams.
//! - `stats.rs`: histograms, timelines, sequence tracking, the server probe.
//! - `monitor.rs`, `report.rs`, `thresholds.rs`: progress line and time series, summary,
//!   JSON line and SVG plot, pass/fail.

mod client;
mod data;
mod metronome;
mod monitor;
mod payload;
mod report;
mod scenario;
mod script;
mod stats;
mod stream;
mod target;
mod template;
mod thresholds;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::FleetConfig;
use crate::data::{DataTable, Samples};
use crate::payload::{Filler, Payload};
use crate::report::Report;
use crate::scenario::{BoxError, Common};
use crate::script::StreamFile;
use crate::stream::TsUnit;
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
    /// Run a scenario file: each connection's steps (connect, send, expect, sleep,
    /// think, loop, receive, close), stages of connection targets or arrival rates, churn,
    /// and the server's own stream checked (docs/loadtest.md).
    Run(RunArgs),
    /// Subscribe connections to a stream the server publishes on its own, and check its
    /// sequence numbers and timestamps: gaps, duplicates, reordering, one-way latency.
    Subscribe(SubscribeArgs),
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

/// Where a server's stream carries its sequence numbers and timestamps.
#[derive(Debug, Args)]
#[command(next_help_heading = "Stream")]
struct StreamArgs {
    /// The JSON field holding each message's sequence number (a dotted path for a nested
    /// one: data.seq).
    #[arg(long, value_name = "PATH")]
    seq_field: Option<String>,
    /// The JSON field holding its send time, Unix time (for one-way latency).
    #[arg(long, value_name = "PATH")]
    ts_field: Option<String>,
    /// The JSON field naming its stream, when one connection gets several (each has its
    /// own sequence).
    #[arg(long, value_name = "PATH")]
    key_field: Option<String>,
    /// Or a regex whose named groups seq (required), ts and key hold them.
    #[arg(long, conflicts_with_all = ["seq_field", "ts_field", "key_field"])]
    regex: Option<String>,
    /// The timestamps' unit (auto: told by size, for Unix times of this century).
    #[arg(long, value_enum, default_value_t = TsUnit::Auto)]
    ts_unit: TsUnit,
}

impl StreamArgs {
    /// The `[stream]` these flags say, if they say one.
    fn file(&self) -> Option<StreamFile> {
        (self.seq_field.is_some() || self.regex.is_some()).then(|| StreamFile {
            seq: self.seq_field.clone(),
            ts: self.ts_field.clone(),
            key: self.key_field.clone(),
            regex: self.regex.clone(),
            ts_unit: self.ts_unit,
        })
    }
}

/// `run`'s arguments.
#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML).
    file: PathBuf,
    /// The server's URL, instead of the file's (a template, as the file's).
    #[arg(long)]
    url: Option<String>,
    /// Seconds of warm-up (not measured), instead of the file's.
    #[arg(long)]
    warmup: Option<f64>,
    /// Dials under way at once while a target stage ramps up.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[command(flatten)]
    stream: StreamArgs,
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    output: Output,
}

/// `subscribe`'s arguments.
#[derive(Debug, Args)]
struct SubscribeArgs {
    /// The stream's WebSocket URL, ws:// or wss://. A template: the connection's number n
    /// and the data file's columns, in braces, are filled in per connection.
    #[arg(long)]
    url: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    connections: u64,
    /// A message each connection sends once open, such as a subscribe request (a
    /// template; repeat for several, sent in order).
    #[arg(long = "send", value_name = "TEXT")]
    sends: Vec<String>,
    /// Then wait for a message matching this regex (the server's acknowledgement)
    /// before reading the stream.
    #[arg(long, value_name = "REGEX")]
    expect: Option<String>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before the measured window (the subscriptions settle).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Dials under way at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[command(flatten)]
    stream: StreamArgs,
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    output: Output,
}

/// `fanout`'s arguments.
#[derive(Debug, Args)]
struct FanoutArgs {
    /// The server's WebSocket URL, ws:// or wss://. A template: the connection's number n
    /// and the data file's columns, in braces, are filled in per connection.
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
    /// The echo endpoint's URL, ws:// or wss://. A template: the connection's number n
    /// and the data file's columns, in braces, are filled in per connection.
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
    /// The server's WebSocket URL, ws:// or wss://. A template: the connection's number n
    /// and the data file's columns, in braces, are filled in per connection.
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
    // Many connections need many descriptors; the soft limit is often far below the hard.
    if let Err(err) = ringcast::server::raise_fd_limit() {
        eprintln!("ringcast-load: could not raise the open-file limit: {err}");
    }
    let (out, limits, mut report): (Output, Thresholds, Report) = match cli.command {
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
            (
                args.output,
                args.limits.thresholds(),
                scenario::fanout(&common, &plan)?,
            )
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
            (
                args.output,
                args.limits.thresholds(),
                scenario::echo(&common, &plan)?,
            )
        }
        Command::Conns(args) => {
            let common = common(&args.url, &args.connection, None, &args.output)?;
            let plan = scenario::Conns {
                connections: args.connections,
                rate: args.rate,
                hold: seconds("--hold", args.hold)?,
            };
            (
                args.output,
                args.limits.thresholds(),
                scenario::conns(&common, &plan)?,
            )
        }
        Command::Run(args) => {
            let mut file = script::File::read(&args.file)?;
            if let Some(url) = &args.url {
                file.url = Some(url.clone());
            }
            if let Some(warmup) = args.warmup {
                file.warmup = Some(script::Span(seconds("--warmup", warmup)?));
            }
            if let Some(stream) = args.stream.file() {
                file.stream = Some(stream);
            }
            let base = args.file.parent().unwrap_or(Path::new("."));
            let (common, scenario) =
                scenario_common(file, base, &args.connection, args.concurrency, &args.output)?;
            let limits = scenario.thresholds.overridden_by(&args.limits.thresholds());
            let report = scenario::run(&common, &scenario, "run")?;
            (args.output, limits, report)
        }
        Command::Subscribe(args) => {
            let stream = args
                .stream
                .file()
                .ok_or("subscribe needs --seq-field (or --regex): where the sequence number is")?;
            let mut steps: Vec<script::StepSpec> = args
                .sends
                .iter()
                .map(|text| script::StepSpec {
                    send: Some(text.clone()),
                    ..script::StepSpec::default()
                })
                .collect();
            steps.extend(args.expect.iter().map(|pattern| script::StepSpec {
                expect: Some(pattern.clone()),
                ..script::StepSpec::default()
            }));
            steps.push(script::StepSpec {
                receive: Some(toml::Value::String("end".into())),
                ..script::StepSpec::default()
            });
            let warmup = seconds("--warmup", args.warmup)?;
            let file = script::File {
                url: Some(args.url.clone()),
                connections: Some(args.connections),
                warmup: Some(script::Span(warmup)),
                duration: Some(script::Span(warmup + seconds("--duration", args.duration)?)),
                stream: Some(stream),
                steps,
                ..script::File::default()
            };
            let (common, scenario) = scenario_common(
                file,
                Path::new("."),
                &args.connection,
                args.concurrency,
                &args.output,
            )?;
            let report = scenario::run(&common, &scenario, "subscribe")?;
            (args.output, args.limits.thresholds(), report)
        }
    };
    report.thresholds = limits.check(&report);
    output(&out, &report)?;
    Ok(report.passed())
}

/// A scenario file with the command line's connection flags merged in (the command
/// line wins; its headers are added to the file's), checked, and the fleet settings for it.
fn scenario_common(
    mut file: script::File,
    base: &Path,
    connection: &Connection,
    concurrency: usize,
    output: &Output,
) -> Result<(Common, script::Scenario), BoxError> {
    file.headers.extend(connection.headers.iter().cloned());
    if connection.cookie.is_some() {
        file.cookie = connection.cookie.clone();
    }
    if connection.origin.is_some() {
        file.origin = connection.origin.clone();
    }
    if !connection.subprotocols.is_empty() {
        file.subprotocols = connection.subprotocols.clone();
    }
    file.compress |= connection.compress;
    if let Some(data) = &connection.data {
        file.data = Some(std::env::current_dir()?.join(data));
    }
    let url = file
        .url
        .clone()
        .ok_or("no URL: give --url, or url in the scenario file")?;
    let scenario = script::Scenario::from_file(file, base)?;
    let file = &scenario.file;
    let target = Target::new(TargetSpec {
        url,
        headers: file.headers.clone(),
        cookie: file.cookie.clone(),
        origin: file.origin.clone(),
        subprotocols: file.subprotocols.clone(),
        compress: file.compress,
        sources: connection.sources.clone(),
        data: scenario.data.clone(),
        ca: connection.ca.clone(),
        insecure: connection.insecure,
    })?;
    let common = Common {
        fleet: FleetConfig {
            target: Arc::new(target),
            workers: connection.workers,
        },
        server_pid: output.server_pid,
        json: output.json,
        series: output.series.clone(),
        concurrency,
        connect_timeout: Duration::from_secs(60),
    };
    Ok((common, scenario))
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
