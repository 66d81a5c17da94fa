//! One row per attack: the verdict and its figures, as a table line and as JSON.

use std::io::Write;
use std::path::Path;

use crate::probe;

/// What one attack did to the server.
#[derive(Debug, Default)]
pub struct Row {
    /// The server's label.
    pub target: String,
    /// The attack's name.
    pub attack: String,
    /// The server process still ran afterwards.
    pub alive: bool,
    /// Why a new client was not served afterwards, if it was not.
    pub fresh: Option<String>,
    /// What the well-behaved client saw during the attack.
    pub probe: probe::Report,
    /// Resident memory before, at the peak and after, in bytes.
    pub before: u64,
    /// The highest resident memory while the attack ran.
    pub peak: u64,
    /// Resident memory once the attack's connections were gone.
    pub after: u64,
    /// The most the memory may grow, in bytes.
    pub bound: u64,
    /// How long the attack ran.
    pub seconds: f64,
    /// What the server answered.
    pub note: String,
    /// A wrong answer (lost data), if any.
    pub fault: Option<String>,
    /// Why the attack could not run at all.
    pub setup: Option<String>,
}

impl Row {
    /// An empty row for `attack` on `target`.
    pub fn new(target: &str, attack: &str) -> Row {
        Row {
            target: target.into(),
            attack: attack.into(),
            ..Row::default()
        }
    }

    /// The attack could not even start (the server did not come up).
    pub fn failed(mut self, why: String) -> Row {
        self.setup = Some(why);
        self
    }

    /// The server is alive, the well-behaved client got every answer in time, a new
    /// client is served.
    pub fn survived(&self) -> bool {
        self.setup.is_none() && self.alive && self.probe.failure.is_none() && self.fresh.is_none()
    }

    /// How much the memory grew at its peak.
    pub fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.before)
    }

    /// Survived, within the memory bound, no wrong answer.
    pub fn passed(&self) -> bool {
        self.survived() && self.growth() <= self.bound && self.fault.is_none()
    }

    /// One word: `ok`; `DEAD` (the process is gone or never came up), `STALLED` (the
    /// well-behaved client or a new one was not served), `MEMORY` (grew over the bound),
    /// `WRONG` (a wrong answer, such as data lost).
    pub fn verdict(&self) -> &'static str {
        if self.setup.is_some() || !self.alive {
            "DEAD"
        } else if !self.survived() {
            "STALLED"
        } else if self.growth() > self.bound {
            "MEMORY"
        } else if self.fault.is_some() {
            "WRONG"
        } else {
            "ok"
        }
    }

    /// Why it did not pass, in a few words.
    fn why(&self) -> Option<String> {
        if let Some(setup) = &self.setup {
            return Some(setup.clone());
        }
        if !self.alive {
            return Some(self.fresh.clone().unwrap_or_else(|| "server exited".into()));
        }
        if let Some(failure) = &self.probe.failure {
            return Some(format!("well-behaved client: {failure}"));
        }
        if let Some(why) = &self.fresh {
            return Some(format!("new client: {why}"));
        }
        if self.growth() > self.bound {
            return Some(format!(
                "memory grew {} over a bound of {}",
                mib(self.growth()),
                mib(self.bound)
            ));
        }
        self.fault.clone()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The table's header.
pub fn print_header(target: &str) {
    println!("attacks on {target}");
    println!(
        "{:10} {:27} {:8} {:>24} {:>15} {:>9} {:>6}  note",
        "target",
        "attack",
        "result",
        "RSS MiB before/peak/after",
        "growth/bound",
        "max rtt",
        "rtts"
    );
}

/// One line of the table (and a second with the reason when it did not pass).
pub fn print_row(row: &Row) {
    let result = row.verdict();
    let m = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{:10} {:27} {:8} {:>24} {:>15} {:>7}ms {:>6}  {} ({:.1} s)",
        row.target,
        row.attack,
        result,
        format!(
            "{:.1}/{:.1}/{:.1}",
            m(row.before),
            m(row.peak),
            m(row.after)
        ),
        format!("{:.1}/{:.0}", m(row.growth()), m(row.bound)),
        row.probe.max_rtt.as_millis(),
        row.probe.round_trips,
        row.note,
        row.seconds
    );
    if let Some(why) = row.why() {
        println!("{:10} {:27} -> {why}", "", "");
    }
}

/// Appends the row as one JSON object on a line of `path`.
pub fn append_json(path: &Path, row: &Row) -> std::io::Result<()> {
    let value = serde_json::json!({
        "target": row.target,
        "attack": row.attack,
        "passed": row.passed(),
        "verdict": row.verdict(),
        "survived": row.survived(),
        "rss_before": row.before,
        "rss_peak": row.peak,
        "rss_after": row.after,
        "growth_bound": row.bound,
        "probe_max_rtt_ms": row.probe.max_rtt.as_secs_f64() * 1000.0,
        "probe_round_trips": row.probe.round_trips,
        "seconds": row.seconds,
        "note": row.note,
        "why": row.why(),
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{value}")
}
