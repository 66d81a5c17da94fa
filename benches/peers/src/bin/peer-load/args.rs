//! The command line, parsed by hand: `peer-load fanout|echo --url URL [flags]`. Flags
//! and defaults are ringcast-load's for the same scenarios, so scripts/bench-peers gives
//! both clients the same words.

use std::time::Duration;

/// tungstenite's `read_buffer_size` unless `--read-buffer` says otherwise. tungstenite
/// 0.30 zero-fills the free part of this buffer before every socket read (also one that
/// finds nothing), so its 128 KiB default costs a 128 KiB memset per read; at 1000
/// connections reading a few KB each, that was a sixth of this client's time. Its own
/// documentation suggests a small buffer for many connections with a light read load.
pub const READ_BUFFER: usize = 16 * 1024;

pub const USAGE: &str = "\
usage: peer-load fanout --url ws://127.0.0.1:PORT/ws?room=NAME [--subscribers N] [--publishers N]
                        [--size B] [--window W | --rate R] [COMMON]
       peer-load echo   --url ws://127.0.0.1:PORT/echo [--connections N] [--pipeline N]
                        [--size B] [COMMON]
COMMON: [--duration S] [--warmup S] [--grace S] [--connect-timeout S] [--concurrency N]
        [--read-buffer B] [--server-pid PID] [--json]

A load client on tokio (one current_thread runtime) and tokio-tungstenite, for comparing
with ringcast-load --workers 1. Loopback ws:// URLs only.

fanout: subscribers join first, then publishers; every publisher's message must reach
every subscriber (loss, duplicates, reordering and delivery latency are counted).
  --subscribers N      subscriber connections (100)
  --publishers N       publisher connections (1)
  --window W           max throughput: messages per publisher not yet delivered to EVERY
                       subscriber (16); ignored with --rate
  --rate R             publishes per second, all publishers together, on a fixed schedule
echo: every connection sends, waits for the echo, sends again.
  --connections N      connections (100)
  --pipeline N         messages in flight per connection (1)
both:
  --size B             message size in bytes (64)
  --duration S         seconds measured (10)      --warmup S   seconds before them (1)
  --grace S            seconds to wait after the window for messages on their way (2)
  --connect-timeout S  seconds connecting may take; the run goes on with what opened (60)
  --concurrency N      handshakes under way at once (256)
  --read-buffer B      tungstenite's read_buffer_size per connection (16384; its default,
                       131072, zero-fills that much before every socket read)
  --server-pid PID     sample the server's CPU time and RSS from /proc
  --json               one JSON line instead of the summary";

/// What every scenario takes.
#[derive(Debug, Clone)]
pub struct Common {
    pub url: String,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub grace: Duration,
    pub connect_timeout: Duration,
    pub concurrency: usize,
    /// tungstenite's `read_buffer_size`, bytes.
    pub read_buffer: usize,
    pub server_pid: Option<u32>,
    pub json: bool,
}

/// `fanout`'s own settings.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub subscribers: u32,
    pub publishers: u32,
    /// Publishes per second, all publishers together; `None`: max throughput.
    pub rate: Option<f64>,
    pub window: u32,
}

/// `echo`'s own settings.
#[derive(Debug, Clone)]
pub struct Echo {
    pub connections: u32,
    pub pipeline: u32,
}

/// The scenario asked for.
#[derive(Debug, Clone)]
pub enum Scenario {
    Fanout(Fanout),
    Echo(Echo),
}

/// The whole command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub common: Common,
    pub scenario: Scenario,
}

/// What [`parse`] found instead of options.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `-h` or `--help`.
    Help,
    /// A mistake, explained.
    Bad(String),
}

impl From<String> for Refusal {
    fn from(msg: String) -> Self {
        Refusal::Bad(msg)
    }
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, Refusal> {
    let mut args = args.into_iter();
    let scenario = match args.next().as_deref() {
        Some("-h" | "--help") => return Err(Refusal::Help),
        Some(s @ ("fanout" | "echo")) => s.to_owned(),
        Some(other) => return Err(Refusal::Bad(format!("unknown scenario {other:?}"))),
        None => return Err(Refusal::Bad("no scenario (fanout or echo)".into())),
    };
    let mut common = Common {
        url: String::new(),
        size: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        grace: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(60),
        concurrency: 256,
        read_buffer: READ_BUFFER,
        server_pid: None,
        json: false,
    };
    let mut fanout = Fanout {
        subscribers: 100,
        publishers: 1,
        rate: None,
        window: 16,
    };
    let mut echo = Echo {
        connections: 100,
        pipeline: 1,
    };
    let fan = scenario == "fanout";
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match key.as_str() {
            "-h" | "--help" => return Err(Refusal::Help),
            "--json" if inline.is_none() => {
                common.json = true;
                continue;
            }
            _ => {}
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(Refusal::Bad(format!("{key} needs a value"))),
        };
        match (key.as_str(), fan) {
            ("--url", _) => common.url = value,
            ("--size", _) => common.size = number(&key, &value)?,
            ("--duration", _) => common.duration = seconds(&key, &value)?,
            ("--warmup", _) => common.warmup = seconds(&key, &value)?,
            ("--grace", _) => common.grace = seconds(&key, &value)?,
            ("--connect-timeout", _) => common.connect_timeout = seconds(&key, &value)?,
            ("--concurrency", _) => common.concurrency = positive(&key, &value)?,
            ("--read-buffer", _) => {
                common.read_buffer = number(&key, &value)?;
                if !(1024..=64 << 20).contains(&common.read_buffer) {
                    return Err(Refusal::Bad(format!("{key} {value}: 1024 to 64 MiB")));
                }
            }
            ("--server-pid", _) => common.server_pid = Some(number(&key, &value)?),
            ("--subscribers", true) => fanout.subscribers = positive(&key, &value)?,
            ("--publishers", true) => fanout.publishers = positive(&key, &value)?,
            ("--window", true) => fanout.window = positive(&key, &value)?,
            ("--rate", true) => {
                let rate: f64 = number(&key, &value)?;
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err(Refusal::Bad(format!("{key} {value}: not a positive rate")));
                }
                fanout.rate = Some(rate);
            }
            ("--connections", false) => echo.connections = positive(&key, &value)?,
            ("--pipeline", false) => echo.pipeline = positive(&key, &value)?,
            _ => {
                return Err(Refusal::Bad(format!(
                    "unknown argument {key:?} for {scenario}"
                )))
            }
        }
    }
    if common.url.is_empty() {
        return Err(Refusal::Bad("--url is required".into()));
    }
    let scenario = if fan {
        Scenario::Fanout(fanout)
    } else {
        Scenario::Echo(echo)
    };
    Ok(Options { common, scenario })
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, Refusal> {
    value
        .parse()
        .map_err(|_| Refusal::Bad(format!("{key} {value:?}: not a number")))
}

fn positive<T: std::str::FromStr + Default + PartialOrd>(
    key: &str,
    value: &str,
) -> Result<T, Refusal> {
    let n: T = number(key, value)?;
    if n > T::default() {
        Ok(n)
    } else {
        Err(Refusal::Bad(format!("{key} {value}: must be at least 1")))
    }
}

fn seconds(key: &str, value: &str) -> Result<Duration, Refusal> {
    let s: f64 = number(key, value)?;
    // At most a day: every run ends by itself.
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| *d <= Duration::from_secs(86_400))
        .ok_or_else(|| Refusal::Bad(format!("{key} {value}: not a duration in seconds")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn bench_peers_fanout_line_parses() {
        let o = parse(words(
            "fanout --subscribers 1000 --publishers 1 --size 64 --window 128 --duration 8 \
             --warmup 2 --connect-timeout 60 --url ws://127.0.0.1:1/ws?room=bench \
             --server-pid 77 --json",
        ))
        .unwrap();
        assert!(o.common.json);
        assert_eq!(o.common.server_pid, Some(77));
        assert_eq!(o.common.duration, Duration::from_secs(8));
        let Scenario::Fanout(f) = o.scenario else {
            panic!("not fanout")
        };
        assert_eq!((f.subscribers, f.publishers, f.window), (1000, 1, 128));
        assert_eq!(f.rate, None);
    }

    #[test]
    fn bench_peers_echo_line_parses() {
        let o = parse(words(
            "echo --connections 100 --pipeline 1 --size 64 --duration=8 --warmup 2 \
             --url ws://127.0.0.1:1/echo",
        ))
        .unwrap();
        assert_eq!(o.common.duration, Duration::from_secs(8));
        assert!(matches!(
            o.scenario,
            Scenario::Echo(Echo {
                connections: 100,
                pipeline: 1
            })
        ));
    }

    #[test]
    fn mistakes_are_refused() {
        assert_eq!(parse(words("--help")).unwrap_err(), Refusal::Help);
        for bad in [
            "",
            "conns --url ws://127.0.0.1:1/",
            "fanout",
            "fanout --url ws://127.0.0.1:1/ --rate 0",
            "fanout --url ws://127.0.0.1:1/ --subscribers 0",
            "fanout --url ws://127.0.0.1:1/ --connections 3",
            "echo --url ws://127.0.0.1:1/ --window 3",
            "echo --url ws://127.0.0.1:1/ --duration -1",
            "echo --url",
        ] {
            assert!(
                matches!(parse(words(bad)), Err(Refusal::Bad(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
