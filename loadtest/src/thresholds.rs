//! Pass or fail: `--max-p99`, `--max-loss` and `--min-rate` checked against a finished
//! run's [`Report`]. A failed check makes the process exit with code 1 after the report is
//! printed, so a CI job fails on a regression; a run that could not be made at all exits
//! with 2.
//!
//! What each figure is, by scenario:
//!
//! | scenario | p99 of | loss | rate |
//! | --- | --- | --- | --- |
//! | `fanout` | delivery latency | deliveries expected but not received | deliveries/s |
//! | `echo` | round trip | messages sent but not echoed | echoes/s |
//! | `conns` | connect latency | connections that did not open | connections opened/s (ramp) |
//! | `run`, `subscribe` | one-way latency of the stream, else expect latency, else connect | stream messages missing in the sequence | messages received/s |

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::report::Report;

/// How much loss is allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxLoss {
    /// At most this many.
    Count(u64),
    /// At most this percentage of what was expected.
    Percent(f64),
}

impl FromStr for MaxLoss {
    type Err = String;

    fn from_str(text: &str) -> Result<MaxLoss, String> {
        let bad = || format!("{text:?}: a count (10) or a percentage (0.1%)");
        match text.strip_suffix('%') {
            Some(number) => {
                let percent: f64 = number.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(bad());
                }
                Ok(MaxLoss::Percent(percent))
            }
            None => text.trim().parse().map(MaxLoss::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for MaxLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxLoss::Count(n) => write!(f, "{n}"),
            MaxLoss::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The limits a run must keep.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// The 99th percentile latency at most this many milliseconds.
    pub max_p99_ms: Option<f64>,
    /// Loss at most this.
    pub max_loss: Option<MaxLoss>,
    /// The scenario's rate at least this per second.
    pub min_rate: Option<f64>,
}

/// One limit checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `max_p99_ms`, `max_loss` or `min_rate`.
    pub name: &'static str,
    /// The limit, as given.
    pub limit: String,
    /// What the run measured.
    pub value: String,
    /// Whether the run kept the limit.
    pub pass: bool,
}

impl Thresholds {
    /// These limits, each replaced by `other`'s where it sets one (the command line over
    /// a scenario file).
    pub fn overridden_by(&self, other: &Thresholds) -> Thresholds {
        Thresholds {
            max_p99_ms: other.max_p99_ms.or(self.max_p99_ms),
            max_loss: other.max_loss.or(self.max_loss),
            min_rate: other.min_rate.or(self.min_rate),
        }
    }

    /// Checks `report` against every limit set.
    pub fn check(&self, report: &Report) -> Vec<Check> {
        let mut checks = Vec::new();
        if let Some(limit) = self.max_p99_ms {
            let latency = &report.latency_us;
            let p99_ms = latency.p99 / 1000.0;
            checks.push(Check {
                name: "max_p99_ms",
                limit: format!("{limit}"),
                // No sample at all is not a pass: the run measured nothing.
                value: if latency.count == 0 {
                    "no samples".into()
                } else {
                    format!("{p99_ms:.3}")
                },
                pass: latency.count > 0 && p99_ms <= limit,
            });
        }
        if let Some(limit) = self.max_loss {
            let (lost, expected) = report.loss();
            let pass = match limit {
                MaxLoss::Count(n) => lost <= n as i64,
                MaxLoss::Percent(p) => {
                    expected > 0 && lost as f64 <= p / 100.0 * expected as f64
                        || expected == 0 && lost <= 0
                }
            };
            let value = if expected > 0 {
                format!(
                    "{lost} of {expected} ({:.3}%)",
                    lost as f64 * 100.0 / expected as f64
                )
            } else {
                format!("{lost} of {expected}")
            };
            checks.push(Check {
                name: "max_loss",
                limit: limit.to_string(),
                value,
                pass,
            });
        }
        if let Some(limit) = self.min_rate {
            let rate = report.rate();
            checks.push(Check {
                name: "min_rate",
                limit: format!("{limit}"),
                value: format!("{rate:.1}"),
                pass: rate >= limit,
            });
        }
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_limits_parse_as_counts_or_percentages() {
        assert_eq!("10".parse(), Ok(MaxLoss::Count(10)));
        assert_eq!("0.5%".parse(), Ok(MaxLoss::Percent(0.5)));
        assert!("-1".parse::<MaxLoss>().is_err());
        assert!("150%".parse::<MaxLoss>().is_err());
        assert!("lots".parse::<MaxLoss>().is_err());
    }
}
