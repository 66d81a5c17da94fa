//! `ringcast-attack`: hostile clients against a WebSocket server process, one attack at a
//! time, each bounded in time and count, while a well-behaved client keeps asking the
//! server for answers and the server's resident memory is sampled from `/proc`.
//!
//! ```text
//! ringcast-attack --kind echo --name uring -- target/release/echo-server --backend uring --addr 127.0.0.1:0
//! ringcast-attack --kind chat --attack cross-worker-flood -- target/release/chat --addr 127.0.0.1:0
//! ringcast-attack --kind echo --pid 4242 --addr 127.0.0.1:9001 --attack slowloris
//! ```
//!
//! Given a command, it starts the server afresh for every attack (so each attack's memory
//! figures are its own, and a crash spoils no other) and stops it by its PID afterwards;
//! given `--pid` and `--addr`, it attacks a server already running. For each attack it
//! prints one line: survived (the server is alive, the well-behaved client got every
//! answer within the stall bound, and a new client is served afterwards), the resident
//! memory before, at its peak and after, the growth against the attack's bound, the
//! well-behaved client's longest round trip. It exits 1 when an attack did not pass.

mod attacks;
mod probe;
mod report;
mod target;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

use attacks::{Attack, Ctx, Kind};
use report::Row;
use target::{RssWatch, Server};

/// Attack a WebSocket server process and report whether it survived each attack.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Which program the server is (how to talk to it).
    #[arg(long, value_enum)]
    kind: Kind,
    /// A label for the table (the backend, say).
    #[arg(long, default_value = "server")]
    name: String,
    /// Run only this attack (repeat for several); default: every attack for the kind.
    #[arg(long = "attack", value_name = "NAME")]
    attacks: Vec<String>,
    /// List the attacks and exit.
    #[arg(long)]
    list: bool,
    /// How long each flood lasts, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// The longest the well-behaved client may wait for an answer, in milliseconds. A
    /// second on loopback is a denial of service; the worst seen under any attack that a
    /// server withstood was about 140 ms, on a shared 2-core machine (docs/testing.md).
    #[arg(long, default_value_t = 1000)]
    stall_ms: u64,
    /// The server's message limit in bytes (default: 4096 for the chat, 1 MiB otherwise).
    #[arg(long)]
    max_message: Option<usize>,
    /// The server's per-connection send queue bound in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_queued: usize,
    /// Attack this running server (with --addr) instead of starting one.
    #[arg(long, requires = "addr", conflicts_with = "command")]
    pid: Option<u32>,
    /// Where the running server of --pid listens.
    #[arg(long, requires = "pid")]
    addr: Option<SocketAddr>,
    /// Where the running server of --pid serves its counters (the chat's --metrics-addr);
    /// the cross-worker flood uses the per-worker counts to place its clients.
    #[arg(long, requires = "pid")]
    metrics_addr: Option<SocketAddr>,
    /// Also write each row as a JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The server command, after `--`: it must print its address on stdout.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let chosen: Vec<&Attack> = attacks::ALL
        .iter()
        .filter(|a| a.kinds.contains(&args.kind))
        .filter(|a| args.attacks.is_empty() || args.attacks.iter().any(|n| n == a.name))
        .collect();
    if args.list {
        for attack in attacks::ALL {
            let kinds: Vec<String> = attack
                .kinds
                .iter()
                .map(|k| format!("{k:?}").to_lowercase())
                .collect();
            println!("{:28} {} [{}]", attack.name, attack.about, kinds.join(", "));
        }
        return;
    }
    if let Some(unknown) = args
        .attacks
        .iter()
        .find(|n| !chosen.iter().any(|a| a.name == n.as_str()))
    {
        eprintln!("no attack {unknown:?} for {:?} (see --list)", args.kind);
        std::process::exit(2);
    }
    if args.pid.is_none() && args.command.is_empty() {
        eprintln!("give the server command after `--`, or --pid and --addr");
        std::process::exit(2);
    }
    let started = Instant::now();
    report::print_header(&args.name);
    let mut rows = Vec::new();
    for attack in chosen {
        let row = run(&args, attack);
        report::print_row(&row);
        if let Some(path) = &args.json {
            if let Err(err) = report::append_json(path, &row) {
                eprintln!("cannot write {}: {err}", path.display());
            }
        }
        rows.push(row);
    }
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!(
        "{}: {} attacks, {} passed, {failed} failed, {:.0} s",
        args.name,
        rows.len(),
        rows.len() - failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The well-behaved client's path and way of asking.
fn probe_of(kind: Kind) -> (&'static str, probe::Mode) {
    match kind {
        Kind::Echo => ("/ws", probe::Mode::Echo),
        Kind::Chat => ("/ws?room=probe", probe::Mode::Echo),
        Kind::Pubsub => ("/ws?topic=probe", probe::Mode::Ping),
    }
}

/// Runs one attack against a fresh server (or the running one) and measures it.
fn run(args: &Args, attack: &Attack) -> Row {
    let mut row = Row::new(&args.name, attack.name);
    let mut server = match (args.pid, args.addr) {
        (Some(pid), Some(addr)) => Server::running(pid, addr, args.metrics_addr),
        _ => match Server::spawn(&args.command) {
            Ok(server) => server,
            Err(why) => return row.failed(why),
        },
    };
    let stall = Duration::from_millis(args.stall_ms);
    let (path, mode) = probe_of(args.kind);
    // The server prints its address once it listens: the first connection may still
    // race its workers' start, so a few tries.
    let mut tries = 0;
    let probe = loop {
        match probe::Probe::start(server.addr, path, mode, stall) {
            Ok(probe) => break probe,
            Err(why) if tries == 20 => return row.failed(why),
            Err(_) => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    std::thread::sleep(Duration::from_millis(50));
    let ctx = Ctx {
        addr: server.addr,
        metrics: server.metrics,
        kind: args.kind,
        seconds: Duration::from_secs_f64(args.seconds),
        max_message: args.max_message.unwrap_or(match args.kind {
            Kind::Chat => 4096,
            _ => 1 << 20,
        }),
        max_queued: args.max_queued,
        // Leave room for the probe, the checks and the standard streams.
        fd_budget: target::open_file_limit().saturating_sub(64),
        io_timeout: Duration::from_secs(5),
    };
    row.bound = (attack.bound)(&ctx);
    row.before = server.rss().unwrap_or(0);
    let watch = RssWatch::start(server.pid, Duration::from_millis(5));
    let began = Instant::now();
    let outcome = (attack.run)(&ctx);
    row.seconds = began.elapsed().as_secs_f64();
    // Let the server finish what the attack left it (closes, reaps) before "after".
    std::thread::sleep(Duration::from_millis(200));
    row.after = server.rss().unwrap_or(0);
    let sampled = watch.stop();
    let hwm = if server.started_here() {
        server.hwm().unwrap_or(0)
    } else {
        0
    };
    row.peak = sampled.max(hwm).max(row.before).max(row.after);
    row.probe = probe.finish();
    row.alive = server.alive();
    row.fresh = if row.alive {
        probe::once(server.addr, path, mode, stall).err()
    } else {
        Some(format!(
            "the server exited ({}); its last lines: {}",
            server.exit().unwrap_or_else(|| "gone".into()),
            server.log_tail().join(" | ")
        ))
    };
    row.note = outcome.note;
    row.fault = outcome.fault;
    row
}
