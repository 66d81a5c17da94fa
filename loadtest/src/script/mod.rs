//! Scenario files: a small language in TOML for what each connection does and how many
//! connections there are over time. Not a scripting runtime: a list of steps (connect,
//! send, expect, sleep, think, loop, receive, close) run by a state machine per connection
//! ([`Machine`]), load stages (connection targets, arrival rates, churn), and where the
//! server's own stream carries its sequence numbers and timestamps.
//!
//! ```toml
//! url = "ws://127.0.0.1:8081/ws?topic=ticks"   # a template: {n}, data columns...
//! headers = ["Authorization: Bearer {token}"]
//! origin = "https://example.test"
//! data = "users.csv"          # relative to this file
//! duration = "10s"            # without [[stages]]: `connections` for `duration`
//! connections = 100
//!
//! [stream]                    # the server's own messages
//! seq = "seq"
//! ts = "ts"
//! key = "topic"
//!
//! [[steps]]
//! send_json = { type = "subscribe", topic = "news", id = "{n}" }
//! [[steps]]
//! expect = '"subscribed"'
//! timeout = "5s"
//! [[steps]]
//! receive = "end"
//! ```
//!
//! Every name is checked when the file is read (an unknown key, a bad duration, a
//! placeholder that names no column is an error with its place), so a run never stops
//! half-way on a typo.

mod machine;
mod program;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::data::{DataTable, Samples};
use crate::stream::{StreamSpec, TsUnit};
use crate::thresholds::{MaxLoss, Thresholds};

pub use machine::{Action, Env, Machine, Wake};
pub use program::Program;

/// The default `expect` timeout.
pub const EXPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A scenario file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The URL template.
    pub url: Option<String>,
    /// `Name: value` header lines.
    #[serde(default)]
    pub headers: Vec<String>,
    /// The Cookie header.
    pub cookie: Option<String>,
    /// The Origin header.
    pub origin: Option<String>,
    /// Subprotocols to offer.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// Offer permessage-deflate.
    #[serde(default)]
    pub compress: bool,
    /// A CSV file (relative to the scenario file).
    pub data: Option<PathBuf>,
    /// A file of message samples, one per line (relative to the scenario file).
    pub samples: Option<PathBuf>,
    /// Not measured, from the start.
    pub warmup: Option<Span>,
    /// Without stages: how long the run lasts.
    pub duration: Option<Span>,
    /// Without stages: connections kept open.
    pub connections: Option<u64>,
    /// The load over time.
    #[serde(default)]
    pub stages: Vec<StageSpec>,
    /// The server's own stream.
    pub stream: Option<StreamFile>,
    /// Limits that fail the run.
    #[serde(default)]
    pub thresholds: ThresholdsFile,
    /// Each connection's steps.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

impl File {
    /// Reads the scenario file at `path` (not checked yet: see [`Scenario::from_file`]).
    pub fn read(path: &Path) -> Result<File, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("scenario {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("scenario {}: {e}", path.display()))
    }
}

/// A duration: a number of seconds, or text such as `250ms`, `1.5s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let seconds = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(text) => parse_seconds(&text).map_err(serde::de::Error::custom)?,
        };
        Duration::try_from_secs_f64(seconds)
            .map(Span)
            .map_err(|_| serde::de::Error::custom(format!("{seconds}: not a duration")))
    }
}

/// `text` (`250ms`, `1.5s`, `2m`, `1h`, `10`) in seconds.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: a duration such as 250ms, 1.5s, 2m or 1h"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Ok(number * scale)
}

/// One stage as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// How long it lasts.
    pub duration: Span,
    /// Connections open at its end (a linear ramp from the previous stage's).
    pub target: Option<u64>,
    /// New connections per second (each runs its steps, then ends).
    pub rate: Option<f64>,
    /// Connections closed per second (a target stage replaces them: a reconnect storm).
    #[serde(default)]
    pub churn: f64,
}

/// `[stream]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFile {
    /// JSON path of the sequence number.
    pub seq: Option<String>,
    /// JSON path of the timestamp.
    pub ts: Option<String>,
    /// JSON path of the stream's key.
    pub key: Option<String>,
    /// A regex with named groups instead.
    pub regex: Option<String>,
    /// The timestamps' unit.
    #[serde(default)]
    pub ts_unit: TsUnit,
}

impl StreamFile {
    /// The spec, checked.
    pub fn spec(&self) -> Result<StreamSpec, String> {
        match (&self.regex, &self.seq) {
            (Some(regex), None) if self.ts.is_none() && self.key.is_none() => {
                StreamSpec::regex(regex, self.ts_unit)
            }
            (None, Some(seq)) => {
                StreamSpec::json(seq, self.ts.as_deref(), self.key.as_deref(), self.ts_unit)
            }
            (None, None) => Err("give the seq field (or a regex)".into()),
            _ => Err("give either a regex or JSON fields, not both".into()),
        }
    }
}

/// `[thresholds]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsFile {
    /// See [`Thresholds::max_p99_ms`].
    pub max_p99_ms: Option<f64>,
    /// A count or a percentage, as `--max-loss` takes.
    pub max_loss: Option<toml::Value>,
    /// See [`Thresholds::min_rate`].
    pub min_rate: Option<f64>,
}

impl ThresholdsFile {
    fn thresholds(&self) -> Result<Thresholds, String> {
        let max_loss = match &self.max_loss {
            None => None,
            Some(toml::Value::Integer(n)) if *n >= 0 => Some(MaxLoss::Count(*n as u64)),
            Some(toml::Value::String(text)) => {
                Some(text.parse().map_err(|e| format!("max_loss {e}"))?)
            }
            Some(other) => return Err(format!("max_loss {other}: a count or \"P%\"")),
        };
        Ok(Thresholds {
            max_p99_ms: self.max_p99_ms,
            max_loss,
            min_rate: self.min_rate,
        })
    }
}

/// One step as written: exactly one action key, and the options that go with it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// (Re)connect: close this connection and open a new one for the same user (its `{n}`
    /// and data row stay), then go on; `true`, or another URL template.
    pub connect: Option<toml::Value>,
    /// A text message (a template).
    pub send: Option<String>,
    /// A binary message (a template; `{bytes:N}` allowed).
    pub send_binary: Option<String>,
    /// A JSON text message from a TOML value (strings are templates).
    pub send_json: Option<toml::Value>,
    /// Wait for messages matching this regex.
    pub expect: Option<String>,
    /// `expect`: how many matching messages (default 1).
    pub count: Option<u32>,
    /// `expect`: how long to wait (default 10 s); then the connection fails and closes.
    pub timeout: Option<Span>,
    /// Pause.
    pub sleep: Option<Span>,
    /// Pause a random time: `"2s"` or `["1s", "3s"]`.
    pub think: Option<ThinkSpec>,
    /// Repeat `steps` this many times (0: until the run ends).
    #[serde(rename = "loop")]
    pub repeat: Option<u64>,
    /// `loop`'s steps.
    pub steps: Option<Vec<StepSpec>>,
    /// Stay and read for this long, or `"end"`: until the run ends.
    pub receive: Option<toml::Value>,
    /// Close with this code (1000 if `true`).
    pub close: Option<toml::Value>,
}

/// `think`'s value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ThinkSpec {
    /// A fixed pause.
    Fixed(Span),
    /// Uniformly between the two.
    Between([Span; 2]),
}

/// How many connections there are over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Keep `from` at the stage's start, `to` at its end (a linear ramp).
    Target {
        /// At the start (`None`: as many as are open then).
        from: Option<u64>,
        /// At the end.
        to: u64,
    },
    /// Start this many connections per second.
    Rate(f64),
}

/// One stage, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// How long it lasts.
    pub duration: Duration,
    /// Connections over the stage.
    pub load: Load,
    /// Connections closed per second.
    pub churn: f64,
}

/// A scenario file read and checked, with its files loaded.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file as written (target settings are merged with the command line's).
    pub file: File,
    /// The data file's rows.
    pub data: Option<Arc<DataTable>>,
    /// The samples file's lines.
    pub samples: Option<Arc<Samples>>,
    /// The steps, compiled.
    pub program: Arc<Program>,
    /// The stages (one, from `connections` and `duration`, when the file has none).
    pub stages: Vec<Stage>,
    /// Not measured, from the start.
    pub warmup: Duration,
    /// The server's stream, if measured.
    pub stream: Option<StreamSpec>,
    /// Limits from the file.
    pub thresholds: Thresholds,
}

impl Scenario {
    /// Checks a scenario built in code (the `subscribe` shorthand) or read from a file.
    pub fn from_file(file: File, base: &Path) -> Result<Scenario, String> {
        let data = match &file.data {
            Some(path) => Some(Arc::new(DataTable::read(&base.join(path))?)),
            None => None,
        };
        let samples = match &file.samples {
            Some(path) => Some(Arc::new(Samples::read(&base.join(path))?)),
            None => None,
        };
        let program = Program::compile(&file.steps, data.as_deref(), samples.is_some())?;
        let stages = stages(&file)?;
        let stream = file
            .stream
            .as_ref()
            .map(|s| s.spec().map_err(|e| format!("[stream]: {e}")))
            .transpose()?;
        let thresholds = file
            .thresholds
            .thresholds()
            .map_err(|e| format!("[thresholds]: {e}"))?;
        Ok(Scenario {
            warmup: file.warmup.map_or(Duration::ZERO, |s| s.0),
            data,
            samples,
            program: Arc::new(program),
            stages,
            stream,
            thresholds,
            file,
        })
    }

    /// The whole run's length.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }
}

/// The stages of `file`, checked.
fn stages(file: &File) -> Result<Vec<Stage>, String> {
    if file.stages.is_empty() {
        let duration = file
            .duration
            .ok_or("give `duration` (and `connections`), or [[stages]]")?;
        let connections = file.connections.unwrap_or(1);
        return Ok(vec![Stage {
            duration: duration.0,
            load: Load::Target {
                from: Some(connections),
                to: connections,
            },
            churn: 0.0,
        }]);
    }
    if file.duration.is_some() || file.connections.is_some() {
        return Err("`duration` and `connections` are for a file without [[stages]]".into());
    }
    let mut previous: Option<u64> = Some(0);
    let mut out = Vec::new();
    for (i, stage) in file.stages.iter().enumerate() {
        let at = |e: &str| format!("stage {}: {e}", i + 1);
        if !(stage.churn >= 0.0 && stage.churn.is_finite()) {
            return Err(at("churn must be a number of connections per second"));
        }
        let load = match (stage.target, stage.rate) {
            (Some(to), None) => {
                let load = Load::Target { from: previous, to };
                previous = Some(to);
                load
            }
            (None, Some(rate)) if rate > 0.0 && rate.is_finite() => {
                previous = None;
                Load::Rate(rate)
            }
            (None, Some(_)) => return Err(at("rate must be a positive number")),
            _ => return Err(at("give either target (connections) or rate (per second)")),
        };
        out.push(Stage {
            duration: stage.duration.0,
            load,
            churn: stage.churn,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Scenario::from_file(file, Path::new("."))
    }

    #[test]
    fn durations_read_as_seconds_or_with_a_unit() {
        assert_eq!(parse_seconds("250ms"), Ok(0.25));
        assert_eq!(parse_seconds("1.5s"), Ok(1.5));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert_eq!(parse_seconds("3"), Ok(3.0));
        assert!(parse_seconds("3 weeks").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn a_file_without_stages_holds_its_connections() {
        let scenario = parse(
            r#"
            url = "ws://127.0.0.1:1/"
            duration = 5
            connections = 20
            [[steps]]
            receive = "end"
            "#,
        )
        .unwrap();
        assert_eq!(
            scenario.stages,
            [Stage {
                duration: Duration::from_secs(5),
                load: Load::Target {
                    from: Some(20),
                    to: 20
                },
                churn: 0.0
            }]
        );
        assert!(scenario.stream.is_none());
    }

    #[test]
    fn stages_ramp_from_the_previous_target() {
        let scenario = parse(
            r#"
            [[stages]]
            duration = "2s"
            target = 10
            [[stages]]
            duration = "1s"
            rate = 5
            churn = 1
            [[stages]]
            duration = "1s"
            target = 0
            "#,
        )
        .unwrap();
        let loads: Vec<_> = scenario.stages.iter().map(|s| s.load.clone()).collect();
        assert_eq!(
            loads,
            [
                Load::Target {
                    from: Some(0),
                    to: 10
                },
                Load::Rate(5.0),
                Load::Target { from: None, to: 0 }
            ]
        );
        assert_eq!(scenario.duration(), Duration::from_secs(4));
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let file = File::read(&path).unwrap();
                let scenario = Scenario::from_file(file, &dir)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(scenario.stream.is_some(), "{}", path.display());
                read += 1;
            }
        }
        assert!(read >= 2);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("duration = 1\n[[steps]]\nsned = 'x'", "sned"),
            ("connections = 1", "duration"),
            ("duration = '1 fortnight'", "fortnight"),
            ("[[stages]]\nduration = 1", "target"),
            ("[[stages]]\nduration = 1\nrate = -2", "positive"),
            ("duration = 1\n[stream]\nts = 't'", "seq"),
            ("duration = 1\n[thresholds]\nmax_loss = 'many'", "max_loss"),
            ("duration = 1\n[[steps]]\nsend = '{who}'", "who"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
