//! `autobahn-client`: runs every case that an Autobahn fuzzing server (kosoku) serves,
//! with ringcast's blocking Dialer and Conn (or, with `--async`, `Dialer::dial_async` and
//! `AsyncConn` on a tokio runtime), echoing what each case sends, then asks the server to
//! write its reports.
//!
//! `cargo run --release --bin autobahn-client -- --url ws://127.0.0.1:9001 [--compress] [--async]`

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
    /// Run the cases over `AsyncConn` (tokio) instead of the blocking `Conn`.
    #[arg(long = "async")]
    use_async: bool,
}

/// The connection each case runs over.
enum Client {
    Blocking(Dialer),
    Async(Dialer, tokio::runtime::Runtime),
}

impl Client {
    /// Dial `url` and echo every message until the connection ends; `first_only`: stop
    /// after reading the first message and return it instead.
    fn echo(&self, url: &str, first_only: bool) -> Result<Vec<u8>, Error> {
        match self {
            Client::Blocking(dialer) => {
                let (mut conn, _) = dialer.dial(url, &[])?;
                conn.set_read_deadline(Some(Instant::now() + CASE_DEADLINE));
                loop {
                    let (kind, payload) = conn.read_message()?;
                    if first_only {
                        return Ok(payload);
                    }
                    conn.write_message(kind, &payload)?;
                }
            }
            Client::Async(dialer, runtime) => runtime.block_on(async {
                let (mut conn, _) = dialer.dial_async(url, &[]).await?;
                conn.set_read_deadline(Some(Instant::now() + CASE_DEADLINE));
                loop {
                    let (kind, payload) = conn.read_message().await?;
                    if first_only {
                        return Ok(payload);
                    }
                    conn.write_message(kind, &payload).await?;
                }
            }),
        }
    }
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
    let agent = if args.use_async {
        format!("{agent}-async")
    } else {
        agent
    };
    let dialer = Dialer {
        proxy: Proxy::None,
        enable_compression: args.compress,
        handshake_timeout: Some(Duration::from_secs(10)),
        ..Dialer::default()
    };
    let client = if args.use_async {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Client::Async(dialer, runtime)
    } else {
        Client::Blocking(dialer)
    };

    let count = client.echo(&format!("{base}/getCaseCount"), true)?;
    let count: usize = String::from_utf8_lossy(&count).trim().parse()?;
    println!("running {count} cases as {agent}");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match client.echo(&url, false) {
            Ok(_)
            | Err(Error::Closed(_))
            | Err(Error::Protocol(_))
            | Err(Error::ReadLimit { .. }) => {}
            Err(err) => eprintln!("case {case}: {err}"),
        }
        if case % 50 == 0 {
            println!("{case}/{count}");
        }
    }

    // The server closes once the reports are written.
    let _ = client.echo(&format!("{base}/updateReports?agent={agent}"), false);
    println!("reports updated for {agent}");
    Ok(())
}
