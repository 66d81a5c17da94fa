//! What a run tells: the [`Report`] (every figure), printed as a terminal summary or as
//! one JSON line, drawn as an SVG ([`plot`]), and the live [`Progress`] line on stderr.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use plotters::prelude::*;
use serde::Serialize;

use crate::client::LiveTotals;
use crate::stats::{Latency, LatencySummary};
use crate::stream::StreamCounts;
use crate::thresholds::Check;

/// Every figure of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `fanout`, `echo` or `conns`.
    pub scenario: &'static str,
    /// The URL dialed.
    pub url: String,
    /// Load generator engine workers.
    pub workers: usize,
    /// What the load generator's engine ran on (first worker's backend line).
    pub client_backend: String,
    /// Seconds of warm-up before the measured window.
    pub warmup_s: f64,
    /// Seconds of the measured window.
    pub duration_s: f64,
    /// The scenario's own figures.
    #[serde(flatten)]
    pub figures: Figures,
    /// Latency percentiles (µs): delivery (fanout), round trip (echo) or connect (conns).
    pub latency_us: LatencySummary,
    /// The scenario's events per second from the start, warm-up included: deliveries,
    /// echoes, or connections opened.
    pub timeline: Vec<u64>,
    /// The server process's figures, with `--server-pid`.
    pub server: Option<ServerFigures>,
    /// Dial failures, unexpected closes, refused sends and malformed messages.
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// The limits checked (`--max-p99`, `--max-loss`, `--min-rate`), if any.
    pub thresholds: Vec<Check>,
    /// The full latency histogram, for the plot (not serialised).
    #[serde(skip)]
    pub latency: Latency,
}

/// The figures particular to each scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Figures {
    /// One room, publishers and subscribers.
    Fanout(FanoutFigures),
    /// Request and echo.
    Echo(EchoFigures),
    /// Connection ramp and idle hold.
    Conns(ConnsFigures),
    /// A scenario file (`run`) or a server's stream (`subscribe`).
    Run(RunFigures),
}

/// Fan-out figures. Deliveries are subscriber receptions of messages published inside
/// the measured window; publishers' receptions are not counted.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutFigures {
    /// Subscriber connections asked for.
    pub subscribers: u64,
    /// Publisher connections asked for.
    pub publishers: u64,
    /// Subscribers that were open when publishing started.
    pub subscribers_open: u64,
    /// Message size in bytes (with samples: each line's own).
    pub size: usize,
    /// The filler after each message's stamp: `pad`, `random` or `samples`.
    pub payload: &'static str,
    /// Publishes per second asked for (all publishers); `null` in max-throughput mode.
    pub rate: Option<f64>,
    /// Messages in flight per publisher in max-throughput mode.
    pub window: u64,
    /// Messages published inside the window.
    pub published: u64,
    /// `published × subscribers_open`.
    pub expected: u64,
    /// Deliveries counted (duplicates left out).
    pub received: u64,
    /// `expected − received` (negative would mean deliveries nobody published).
    pub loss: i64,
    /// Deliveries received twice.
    pub duplicates: u64,
    /// Deliveries overtaken by a later message of the same publisher.
    pub out_of_order: u64,
    /// Lines that start like this generator's messages but do not parse (errors).
    pub malformed: u64,
    /// Lines of the server's own, such as join notices (not errors).
    pub other_lines: u64,
    /// Sends refused by the load generator's engine.
    pub send_errors: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Connections the server closed during the run.
    pub closed: u64,
    /// `published / duration`.
    pub publishes_per_s: f64,
    /// `received / duration`.
    pub deliveries_per_s: f64,
    /// TCP segments sent on the machine in the measured window (`OutSegs` of
    /// `/proc/net/snmp`: on loopback the server's and the load generator's alike).
    pub out_segs: Option<u64>,
    /// `received / out_segs`.
    pub deliveries_per_segment: Option<f64>,
}

/// Echo figures.
#[derive(Debug, Clone, Serialize)]
pub struct EchoFigures {
    /// Connections asked for.
    pub connections: u64,
    /// Connections that were open when sending started.
    pub connections_open: u64,
    /// Messages in flight per connection (closed loop; 0 in an open loop).
    pub pipeline: u64,
    /// Messages per second asked for (open loop); `null` in a closed loop.
    pub rate: Option<f64>,
    /// Message size in bytes (with samples: each line's own).
    pub size: usize,
    /// The filler after each message's stamp: `pad`, `random` or `samples`.
    pub payload: &'static str,
    /// Messages sent inside the window.
    pub sent: u64,
    /// Echoes of those received (duplicates left out).
    pub received: u64,
    /// `sent − received`.
    pub loss: i64,
    /// Echoes received twice.
    pub duplicates: u64,
    /// Echoes overtaken by a later one on the same connection.
    pub out_of_order: u64,
    /// Lines that start like this generator's messages but do not parse (errors).
    pub malformed: u64,
    /// Lines of the server's own, such as join notices (not errors).
    pub other_lines: u64,
    /// Sends refused by the load generator's engine.
    pub send_errors: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Connections the server closed during the run.
    pub closed: u64,
    /// `received / duration`.
    pub messages_per_s: f64,
    /// TCP segments sent on the machine in the measured window (`OutSegs` of
    /// `/proc/net/snmp`: on loopback the server's and the load generator's alike).
    pub out_segs: Option<u64>,
    /// `received / out_segs`: echoes per segment (the name is fan-out's, for one column).
    pub deliveries_per_segment: Option<f64>,
}

/// Connection figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConnsFigures {
    /// Connections asked for.
    pub connections: u64,
    /// Dials per second asked for.
    pub rate: f64,
    /// Seconds the connections were held open after the ramp.
    pub hold_s: f64,
    /// Connections that opened.
    pub opened: u64,
    /// Dials that failed.
    pub failed: u64,
    /// Connections that closed before the end of the hold.
    pub closed: u64,
    /// Messages the server sent to the idle connections (not errors).
    pub messages: u64,
    /// Seconds from the first dial to the last open or failure.
    pub ramp_s: f64,
    /// `opened / ramp_s`.
    pub connects_per_s: f64,
}

/// Figures of a scenario file's run. Messages count inside the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// Stages in the scenario.
    pub stages: usize,
    /// What `latency_us` is: `stream one-way`, `expect response` or `connect`.
    pub latency_of: &'static str,
    /// Users (connections with their steps) started.
    pub users: u64,
    /// Connections that opened, reconnections included.
    pub connections_opened: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Users that ended as the scenario meant (steps done, ramped down, churned).
    pub finished: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Connections the server closed (errors).
    pub closed: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Sends refused by the load generator's engine.
    pub send_errors: u64,
    /// `expect` steps that got their messages.
    pub expects_met: u64,
    /// `expect` steps that timed out (errors).
    pub expect_timeouts: u64,
    /// `received / duration`.
    pub messages_per_s: f64,
    /// The server's stream, when measured.
    pub stream: Option<StreamCounts>,
    /// Stream messages per second, when measured.
    pub stream_messages_per_s: Option<f64>,
    /// Dial to open, µs.
    pub connect_latency_us: LatencySummary,
    /// `expect` answers, µs.
    pub response_latency_us: LatencySummary,
    /// The stream's one-way latency, µs.
    pub stream_latency_us: LatencySummary,
}

/// The server process's CPU time and memory over the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerFigures {
    /// Its process id.
    pub pid: u32,
    /// CPU seconds (user + system) it used in the measured window (for `conns`: from the
    /// first dial to the connections' first idle second).
    pub cpu_s: f64,
    /// The scenario's unit (deliveries, echoes, connections) per server CPU-second.
    pub per_cpu_s: f64,
    /// Server CPU-seconds per million of the scenario's unit.
    pub cpu_s_per_million: f64,
    /// The user part of `cpu_s`: the server's own code.
    pub user_cpu_s: f64,
    /// The system part of `cpu_s`: the kernel working for the server. On loopback this
    /// includes the receiving client's TCP work, which the kernel charges to the sender.
    pub system_cpu_s: f64,
    /// `user_cpu_s` per million of the scenario's unit.
    pub user_cpu_s_per_million: f64,
    /// `system_cpu_s` per million of the scenario's unit.
    pub system_cpu_s_per_million: f64,
    /// RSS before the first dial, KiB.
    pub rss_before_kib: u64,
    /// RSS with every connection open (for `conns`: after one idle second), KiB.
    pub rss_connected_kib: u64,
    /// RSS at the end of the measured window, KiB.
    pub rss_after_kib: u64,
    /// `(rss_connected − rss_before) / open connections`, in bytes.
    pub rss_per_connection_bytes: f64,
}

impl Report {
    /// The scenario's rate, per second: deliveries (fanout), echoes (echo), connections
    /// opened during the ramp (conns), stream messages or else messages received (run,
    /// subscribe).
    pub fn rate(&self) -> f64 {
        match &self.figures {
            Figures::Fanout(f) => f.deliveries_per_s,
            Figures::Echo(f) => f.messages_per_s,
            Figures::Conns(f) => f.connects_per_s,
            Figures::Run(f) => f.stream_messages_per_s.unwrap_or(f.messages_per_s),
        }
    }

    /// What was lost, and out of how many: deliveries (fanout), echoes (echo),
    /// connections that did not open (conns), stream messages missing, or else `expect`s
    /// that timed out (run, subscribe).
    pub fn loss(&self) -> (i64, u64) {
        match &self.figures {
            Figures::Fanout(f) => (f.loss, f.expected),
            Figures::Echo(f) => (f.loss, f.sent),
            Figures::Conns(f) => (f.connections as i64 - f.opened as i64, f.connections),
            Figures::Run(f) => match f.stream {
                Some(s) => (s.missing as i64, s.received - s.duplicates + s.missing),
                None => (f.expect_timeouts as i64, f.expects_met + f.expect_timeouts),
            },
        }
    }

    /// Whether every threshold checked was kept.
    pub fn passed(&self) -> bool {
        self.thresholds.iter().all(|c| c.pass)
    }

    /// The report as one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report is plain numbers and strings")
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        let mut line = |text: String| {
            s.push_str(&text);
            s.push('\n');
        };
        line(format!(
            "{} {} — {} worker(s), {:.1} s measured after {:.1} s warm-up",
            self.scenario, self.url, self.workers, self.duration_s, self.warmup_s
        ));
        match &self.figures {
            Figures::Fanout(f) => {
                let mode = f
                    .rate
                    .map_or(format!("max throughput, window {}", f.window), |r| {
                        format!("{r} msg/s")
                    });
                line(format!(
                    "  {} subscribers ({} open), {} publishers, {} B {}, {mode}",
                    f.subscribers, f.subscribers_open, f.publishers, f.size, f.payload
                ));
                line(format!(
                    "  published {} ({:.0}/s), deliveries {} of {} expected ({:.0}/s)",
                    f.published, f.publishes_per_s, f.received, f.expected, f.deliveries_per_s
                ));
                line(format!(
                    "  loss {}, duplicates {}, out of order {}, malformed {}, server's own lines {}",
                    f.loss, f.duplicates, f.out_of_order, f.malformed, f.other_lines
                ));
            }
            Figures::Echo(f) => {
                let mode = f.rate.map_or(format!("pipeline {}", f.pipeline), |r| {
                    format!("open loop at {r} msg/s")
                });
                line(format!(
                    "  {} connections ({} open), {mode}, {} B {}",
                    f.connections, f.connections_open, f.size, f.payload
                ));
                line(format!(
                    "  sent {}, echoed {} ({:.0} msg/s), loss {}, duplicates {}, out of order {}",
                    f.sent, f.received, f.messages_per_s, f.loss, f.duplicates, f.out_of_order
                ));
            }
            Figures::Conns(f) => {
                line(format!(
                    "  {} connections at {}/s: {} opened, {} failed, {} closed during a {:.0} s hold",
                    f.connections, f.rate, f.opened, f.failed, f.closed, f.hold_s
                ));
                line(format!(
                    "  ramp {:.2} s ({:.0} connections/s)",
                    f.ramp_s, f.connects_per_s
                ));
            }
            Figures::Run(f) => {
                line(format!(
                    "  {} users in {} stage(s): {} connections opened ({} at most at once), {} finished, {} dial failures, {} closed by the server",
                    f.users, f.stages, f.connections_opened, f.peak_open, f.finished, f.dial_failures, f.closed
                ));
                line(format!(
                    "  messages sent {}, received {} ({:.0}/s); expects met {}, timed out {}",
                    f.sent, f.received, f.messages_per_s, f.expects_met, f.expect_timeouts
                ));
                if let Some(st) = &f.stream {
                    line(format!(
                        "  stream: {} messages ({:.0}/s), gaps {}, missing {}, duplicates {}, reordered {}, clock ahead {}, not the stream's {}",
                        st.received,
                        f.stream_messages_per_s.unwrap_or(0.0),
                        st.gaps,
                        st.missing,
                        st.duplicates,
                        st.reordered,
                        st.clock_ahead,
                        st.other
                    ));
                }
                for (what, l) in [
                    ("connect", &f.connect_latency_us),
                    ("response", &f.response_latency_us),
                ] {
                    if l.count > 0 && f.latency_of != what && !f.latency_of.ends_with(what) {
                        line(format!(
                            "  {what} latency µs: p50 {:.1}  p99 {:.1}  max {:.1}  ({} samples)",
                            l.p50, l.p99, l.max, l.count
                        ));
                    }
                }
            }
        }
        let what = match &self.figures {
            Figures::Fanout(_) => "delivery",
            Figures::Echo(_) => "round trip",
            Figures::Conns(_) => "connect",
            Figures::Run(f) => f.latency_of,
        };
        line(format!(
            "  {what} latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples)",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        ));
        if let Some(v) = &self.server {
            line(format!(
                "  server {}: {:.2} CPU-s (user {:.2}, kernel {:.2}), {:.0} per CPU-s ({:.3} CPU-s per million), RSS {} -> {} -> {} KiB, {:.0} B per connection",
                v.pid,
                v.cpu_s,
                v.user_cpu_s,
                v.system_cpu_s,
                v.per_cpu_s,
                v.cpu_s_per_million,
                v.rss_before_kib,
                v.rss_connected_kib,
                v.rss_after_kib,
                v.rss_per_connection_bytes
            ));
        }
        line(format!("  errors {}", self.errors));
        for sample in &self.error_samples {
            line(format!("    {sample}"));
        }
        for check in &self.thresholds {
            line(format!(
                "  threshold {} {}: {} {}",
                check.name,
                check.limit,
                check.value,
                if check.pass { "ok" } else { "FAILED" }
            ));
        }
        s
    }
}

/// Percentiles drawn on the latency curve, spaced evenly in "nines".
fn curve_quantiles() -> Vec<f64> {
    (0..=100)
        .map(|i| 1.0 - 10f64.powf(-(i as f64) * 0.05))
        .collect()
}

/// Draws `report` as an SVG at `path`: the latency percentile curve above, the rate per
/// second below.
pub fn plot(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);

    let what = match &report.figures {
        Figures::Fanout(_) => "delivery latency",
        Figures::Echo(_) => "round-trip latency",
        Figures::Conns(_) => "connect latency",
        Figures::Run(f) => match f.latency_of {
            "stream one-way" => "one-way latency",
            "expect response" => "response latency",
            _ => "connect latency",
        },
    };
    let curve: Vec<(f64, f64)> = report
        .latency
        .curve(&curve_quantiles())
        .into_iter()
        .map(|(q, us)| (nines(q), us.max(1.0)))
        .collect();
    let top_y = curve.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let bottom_y = (curve.iter().map(|p| p.1).fold(top_y, f64::min) / 1.5).max(1.0);
    let max_x = curve.iter().map(|p| p.0).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("{} — {what} (µs) by percentile", report.scenario),
            ("sans-serif", 20),
        )
        .margin(15)
        .margin_right(40)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, (bottom_y..top_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("µs")
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))?;

    let unit = match &report.figures {
        Figures::Fanout(_) => "deliveries/s",
        Figures::Echo(_) => "echoes/s",
        Figures::Conns(_) => "connections opened/s",
        Figures::Run(_) => "messages received/s",
    };
    let rates: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .enumerate()
        .map(|(s, &n)| (s as f64, n as f64))
        .collect();
    let top_rate = rates.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let span = (rates.len() as f64).max(1.0);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("{unit}, second by second (warm-up shaded)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..span, 0f64..top_rate)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(unit)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    // The warm-up, shaded: its second(s) are not in the figures.
    if report.warmup_s > 0.0 {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (report.warmup_s, top_rate)],
            BLACK.mix(0.06).filled(),
        )))?;
    }
    let steps: Vec<(f64, f64)> = rates
        .iter()
        .flat_map(|&(s, n)| [(s, n), (s + 1.0, n)])
        .collect();
    chart.draw_series(AreaSeries::new(steps, 0.0, BLUE.mix(0.25)).border_style(BLUE))?;
    root.present()?;
    Ok(())
}

/// `q` as "nines": 0.9 → 1, 0.99 → 2, 0.999 → 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

/// The percentile at `x` nines, for an axis label.
fn percentile_label(x: f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    let digits = (x - 2.0).ceil().clamp(0.0, 6.0) as usize;
    format!("{p:.digits$}%")
}

/// The live progress line on stderr: once a second, elapsed time, the current rate,
/// open connections and errors. Off under `--json` and when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    unit: &'static str,
    start: Instant,
    last: Option<(Instant, u64)>,
}

impl Progress {
    /// A progress line counting `unit` (such as "deliveries/s").
    pub fn new(json: bool, unit: &'static str) -> Progress {
        Progress {
            enabled: !json && io::stderr().is_terminal(),
            unit,
            start: Instant::now(),
            last: None,
        }
    }

    /// Redraws the line if a second has passed since the last time.
    pub fn tick(&mut self, totals: LiveTotals) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let Some((at, seen)) = self.last else {
            self.last = Some((now, totals.seen));
            return;
        };
        let elapsed = now - at;
        if elapsed.as_millis() < 1000 {
            return;
        }
        let rate = totals.seen.saturating_sub(seen) as f64 / elapsed.as_secs_f64();
        self.last = Some((now, totals.seen));
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{:6.1} s] {:>10.0} {}  connections {}  errors {}",
            (now - self.start).as_secs_f64(),
            rate,
            self.unit,
            totals.open,
            totals.errors
        );
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
        self.enabled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_reads_in_nines() {
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(0.0), "0%");
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
    }
}
