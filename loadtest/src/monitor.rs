//! What the main thread watches while a run goes on: the live progress line on stderr,
//! and the time series (`--series FILE`): once a second, one row with the open
//! connections, the scenario's rate, the errors so far and that second's latency
//! percentiles. The file is CSV when its name ends in `.csv`, JSON lines otherwise.
//!
//! | column | meaning |
//! | --- | --- |
//! | `t_s` | seconds since the run started (the end of the second the row covers) |
//! | `open` | connections open |
//! | `rate` | the scenario's unit per second over the row: deliveries, echoes, connections opened, messages received |
//! | `errors` | errors so far (dial failures, unexpected closes, refused sends...) |
//! | `latency_count` | latency samples recorded in the row's second |
//! | `p50_us` `p90_us` `p99_us` `max_us` | their percentiles, within about 6 % |

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::Fleet;
use crate::report::Progress;
use crate::scenario::{BoxError, Common};
use crate::stats::{LiveHistogram, SecondLatency};

/// The progress line and the series of one run.
pub struct Monitor {
    progress: Progress,
    series: Option<Series>,
}

impl Monitor {
    /// Watches a run counting `unit` (such as "deliveries/s"); opens the series file.
    pub fn new(common: &Common, unit: &'static str) -> Result<Monitor, BoxError> {
        let series = match &common.series {
            Some(path) => Some(
                Series::create(path).map_err(|e| format!("--series {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Monitor {
            progress: Progress::new(common.json, unit),
            series,
        })
    }

    /// Redraws the progress line and writes a row when a second has passed.
    pub fn tick(&mut self, fleet: &Fleet) {
        let totals = fleet.totals();
        self.progress.tick(totals);
        if let Some(series) = &mut self.series {
            if series.last.elapsed() >= Duration::from_secs(1) {
                series.row(fleet);
            }
        }
    }

    /// Clears the progress line; writes the last (partial) row and flushes the series.
    pub fn finish(&mut self, fleet: &Fleet) -> Result<(), BoxError> {
        self.progress.finish();
        if let Some(series) = &mut self.series {
            if series.last.elapsed() >= Duration::from_millis(100) {
                series.row(fleet);
            }
            series
                .finish()
                .map_err(|e| format!("--series {}: {e}", series.path.display()))?;
        }
        Ok(())
    }
}

/// The series file and what its next row is measured from.
struct Series {
    path: PathBuf,
    out: BufWriter<File>,
    csv: bool,
    start: Instant,
    last: Instant,
    seen: u64,
    latency: Vec<u64>,
    /// The first write error, reported at the end.
    error: Option<io::Error>,
}

/// One row of the series.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
struct Row {
    t_s: f64,
    open: u64,
    rate: f64,
    errors: u64,
    latency_count: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Row {
    const CSV_HEADER: &'static str =
        "t_s,open,rate,errors,latency_count,p50_us,p90_us,p99_us,max_us";

    fn write(&self, csv: bool, out: &mut impl Write) -> io::Result<()> {
        if csv {
            writeln!(
                out,
                "{:.3},{},{:.1},{},{},{:.1},{:.1},{:.1},{:.1}",
                self.t_s,
                self.open,
                self.rate,
                self.errors,
                self.latency_count,
                self.p50_us,
                self.p90_us,
                self.p99_us,
                self.max_us
            )
        } else {
            serde_json::to_writer(&mut *out, self)?;
            writeln!(out)
        }
    }
}

impl Series {
    fn create(path: &Path) -> io::Result<Series> {
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let mut out = BufWriter::new(File::create(path)?);
        if csv {
            writeln!(out, "{}", Row::CSV_HEADER)?;
        }
        let now = Instant::now();
        Ok(Series {
            path: path.to_owned(),
            out,
            csv,
            start: now,
            last: now,
            seen: 0,
            latency: LiveHistogram::snapshot(),
            error: None,
        })
    }

    /// Writes the row of the time since the last one.
    fn row(&mut self, fleet: &Fleet) {
        let row = self.measure(fleet);
        if let Err(err) = row.write(self.csv, &mut self.out) {
            self.error.get_or_insert(err);
        }
    }

    /// The row from the last one to now; the next one starts here.
    fn measure(&mut self, fleet: &Fleet) -> Row {
        let now = Instant::now();
        let totals = fleet.totals();
        let mut latency = LiveHistogram::snapshot();
        fleet.latency_counts(&mut latency);
        let second = SecondLatency::between(&self.latency, &latency);
        let elapsed = (now - self.last).as_secs_f64();
        let row = Row {
            t_s: (now - self.start).as_secs_f64(),
            open: totals.open,
            rate: if elapsed > 0.0 {
                totals.seen.saturating_sub(self.seen) as f64 / elapsed
            } else {
                0.0
            },
            errors: totals.errors,
            latency_count: second.count,
            p50_us: second.p50,
            p90_us: second.p90,
            p99_us: second.p99,
            max_us: second.max,
        };
        self.last = now;
        self.seen = totals.seen;
        self.latency = latency;
        row
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            t_s: 2.0,
            open: 10,
            rate: 1234.5,
            errors: 1,
            latency_count: 99,
            p50_us: 10.0,
            p90_us: 20.0,
            p99_us: 30.0,
            max_us: 40.0,
        }
    }

    #[test]
    fn csv_rows_match_the_header() {
        let mut out = Vec::new();
        row().write(true, &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, "2.000,10,1234.5,1,99,10.0,20.0,30.0,40.0\n");
        assert_eq!(
            line.trim().split(',').count(),
            Row::CSV_HEADER.split(',').count()
        );
    }

    #[test]
    fn json_rows_are_one_object_per_line() {
        let mut out = Vec::new();
        row().write(false, &mut out).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["open"], 10);
        assert_eq!(value["p99_us"], 30.0);
        assert!(out.ends_with(b"}\n"));
    }
}
