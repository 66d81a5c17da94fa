//! `autobahn-client`: runs every case that an Autobahn fuzzing server (kosoku) serves,
//! with ringcast's blocking Dialer and Conn, echoing what each case sends, then asks the
//! server to write its reports.
//!
//! `cargo run --release --bin autobahn-client -- --url ws://127.0.0.1:9001 [--compress]`

use std::time::{Duration, Instant};

use clap::Parser;
use ringcast::client::Proxy;
use ringcast::{Dialer, Error};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run the Autobahn client cases against a fuzzing server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The fuzzing server, such as ws://127.0.0.1:9001.
    #[arg(long)]
    url: String,
    /// Offer permessage-deflate.
    #[arg(long)]
    compress: bool,
    /// The agent name in the reports (default: ringcast, or ringcast-deflate).
    #[arg(long)]
    agent: Option<String>,
}

/// The longest one case may run; the suite's own case timeouts are shorter.
const CASE_DEADLINE: Duration = Duration::from_secs(120);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_owned();
    let agent = args.agent.clone().unwrap_or_else(|| {
        if args.compress {
            "ringcast-deflate".into()
        } else {
            "ringcast".into()
        }
    });
    let dialer = Dialer {
        proxy: Proxy::None,
        enable_compression: args.compress,
        handshake_timeout: Some(Duration::from_secs(10)),
        ..Dialer::default()
    };

    let (mut conn, _) = dialer.dial(&format!("{base}/getCaseCount"), &[])?;
    let (_, count) = conn.read_message()?;
    let count: usize = String::from_utf8_lossy(&count).trim().parse()?;
    drop(conn);
    println!("running {count} cases as {agent}");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match run_case(&dialer, &url) {
            Ok(())
            | Err(Error::Closed(_))
            | Err(Error::Protocol(_))
            | Err(Error::ReadLimit { .. }) => {}
            Err(err) => eprintln!("case {case}: {err}"),
        }
        if case % 50 == 0 {
            println!("{case}/{count}");
        }
    }

    let (mut conn, _) = dialer.dial(&format!("{base}/updateReports?agent={agent}"), &[])?;
    // The server closes once the reports are written.
    while conn.read_message().is_ok() {}
    println!("reports updated for {agent}");
    Ok(())
}

/// Echo every message of one case until the connection ends.
fn run_case(dialer: &Dialer, url: &str) -> Result<(), Error> {
    let (mut conn, _) = dialer.dial(url, &[])?;
    conn.set_read_deadline(Some(Instant::now() + CASE_DEADLINE));
    loop {
        let (kind, payload) = conn.read_message()?;
        conn.write_message(kind, &payload)?;
    }
}
