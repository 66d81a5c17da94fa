//! `peer-load`: a load client for scripts/bench-peers that is not built on ringcast:
//! tokio (one `current_thread` runtime, to compare with `ringcast-load --workers 1`) and
//! tokio-tungstenite. It runs ringcast-load's `fanout` and `echo` scenarios as
//! bench-peers uses them, with the same messages, the same pacing and the same JSON
//! field names, plus `client`, `out_segs` and `deliveries_per_segment`. See README.md.
//!
//! - `args.rs`: the command line.
//! - `wire.rs`: the clock, the stamped messages, the order check, dialling.
//! - `fanout.rs`, `echo.rs`: the scenarios.
//! - `run.rs`: what both share: state, phases, the measured window, the report.
//! - `probe.rs`: `/proc`: the server's CPU time and RSS, the machine's TCP segments.
//!
//! Exit codes: 0 after a run (its figures say how it went), 2 when it could not be made.

mod args;
mod echo;
mod fanout;
mod probe;
mod run;
mod wire;

use std::process::ExitCode;

use args::{Refusal, Scenario};

fn main() -> ExitCode {
    wire::now_ns(); // the clock starts here
    let opts = match args::parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(Refusal::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(Refusal::Bad(msg)) => {
            eprintln!("peer-load: {msg}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // Thousands of connections need more descriptors than the usual soft limit.
    ringcast_peers::raise_nofile_limit();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-load: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Every task is spawned on this set, so the state they share needs no locks.
    let local = tokio::task::LocalSet::new();
    let common = &opts.common;
    let result = local.block_on(&rt, async {
        match &opts.scenario {
            Scenario::Fanout(f) => fanout::run(common, f).await,
            Scenario::Echo(e) => echo::run(common, e).await,
        }
    });
    // Connections still closing are dropped here.
    drop(local);
    drop(rt);
    match result {
        Ok(report) if common.json => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", run::summary(&report));
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("peer-load: {msg}");
            ExitCode::from(2)
        }
    }
}
