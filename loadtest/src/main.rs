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
mod report;
mod scenario;
mod stats;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::FleetConfig;
use crate::report::Report;
use crate::scenario::{BoxError, Common};

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
    /// Each connection keeps a number of messages in flight to an echo endpoint; count
    /// messages per second and round-trip latency.
    Echo(EchoArgs),
    /// Open many connections at a given rate, hold them idle, then close them; count
    /// connect latency, failures and the server's memory per connection.
    Conns(ConnsArgs),
}

/// What every scenario shares.
#[derive(Debug, Args)]
struct Target {
    /// The server's WebSocket URL (ws:// only).
    #[arg(long)]
    url: String,
    /// Engine worker threads of the load generator (0: one per CPU it may run on).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Local addresses to connect from, in turn (e.g. 127.0.0.1,127.0.0.2): one address
    /// has about 28 000 ephemeral ports towards one server port.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Offer permessage-deflate.
    #[arg(long)]
    compress: bool,
    /// A subprotocol to offer (repeat for several, in order of preference).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// The server's process id: sample its CPU time (user and kernel) and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one line of JSON on stdout instead of the summary (and no progress line).
    #[arg(long)]
    json: bool,
    /// Draw the latency distribution and the rate over time into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Handshakes under way at once while connecting (fanout, echo).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds connecting may take before the run goes on with what opened (fanout, echo).
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
}

/// `fanout`'s arguments.
#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    target: Target,
    /// Set the URL's `room` query parameter to this.
    #[arg(long)]
    room: Option<String>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    subscribers: u32,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Message size in bytes (text: `p=ID s=SEQ t=NS` padded with `x`).
    #[arg(long, default_value_t = 64)]
    size: usize,
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
}

/// `echo`'s arguments.
#[derive(Debug, Args)]
struct EchoArgs {
    #[command(flatten)]
    target: Target,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    connections: u32,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the window for echoes on their way.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
}

/// `conns`'s arguments.
#[derive(Debug, Args)]
struct ConnsArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: u32,
    /// Dials per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds to hold the connections open once all are open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
}

fn main() -> ExitCode {
    client::now_ns(); // the process-wide clock starts here
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringcast-load: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), BoxError> {
    // Many connections need many descriptors; the soft limit is often far below the hard.
    if let Err(err) = ringcast::server::raise_fd_limit() {
        eprintln!("ringcast-load: could not raise the open-file limit: {err}");
    }
    let (target, report) = match cli.command {
        Command::Fanout(args) => {
            let mut common = common(&args.target)?;
            if let Some(room) = &args.room {
                common.fleet.url = with_room(&common.fleet.url, room)?;
            }
            let plan = scenario::Fanout {
                subscribers: args.subscribers,
                publishers: args.publishers,
                size: args.size,
                rate: args.rate,
                window: args.window,
                warmup: seconds("--warmup", args.warmup)?,
                duration: seconds("--duration", args.duration)?,
                grace: seconds("--grace", args.grace)?,
            };
            (args.target, scenario::fanout(&common, &plan)?)
        }
        Command::Echo(args) => {
            let common = common(&args.target)?;
            let plan = scenario::Echo {
                connections: args.connections,
                pipeline: args.pipeline,
                size: args.size,
                warmup: seconds("--warmup", args.warmup)?,
                duration: seconds("--duration", args.duration)?,
                grace: seconds("--grace", args.grace)?,
            };
            (args.target, scenario::echo(&common, &plan)?)
        }
        Command::Conns(args) => {
            let common = common(&args.target)?;
            let plan = scenario::Conns {
                connections: args.connections,
                rate: args.rate,
                hold: seconds("--hold", args.hold)?,
            };
            (args.target, scenario::conns(&common, &plan)?)
        }
    };
    output(&target, &report)
}

fn common(target: &Target) -> Result<Common, BoxError> {
    Ok(Common {
        fleet: FleetConfig {
            url: target.url.clone(),
            workers: target.workers,
            compress: target.compress,
            subprotocols: target.subprotocols.clone(),
            sources: target.sources.clone(),
        },
        server_pid: target.server_pid,
        json: target.json,
        concurrency: target.concurrency,
        connect_timeout: seconds("--connect-timeout", target.connect_timeout)?,
    })
}

fn output(target: &Target, report: &Report) -> Result<(), BoxError> {
    if target.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &target.plot {
        report::plot(report, path).map_err(|e| format!("--plot {}: {e}", path.display()))?;
        if !target.json {
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
/// there); other parameters are kept.
fn with_room(url: &str, room: &str) -> Result<String, BoxError> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    let others: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, _)| name != "room")
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (name, value) in &others {
            query.append_pair(name, value);
        }
        query.append_pair("room", room);
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_added_or_replaced() {
        assert_eq!(
            with_room("ws://127.0.0.1:9/ws", "a").unwrap(),
            "ws://127.0.0.1:9/ws?room=a"
        );
        assert_eq!(
            with_room("ws://127.0.0.1:9/ws?room=x&k=1", "b").unwrap(),
            "ws://127.0.0.1:9/ws?k=1&room=b"
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
