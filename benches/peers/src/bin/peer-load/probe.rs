//! What is read from `/proc` at the edges of the measured window: the server process's
//! CPU time and RSS (`--server-pid`), and the machine's TCP segments sent.

use std::fs;
use std::io;

/// The kernel reports `/proc/PID/stat` times in USER_HZ ticks, which is 100 on every
/// architecture Linux runs on today (the ABI fixed it; `getconf CLK_TCK` says 100).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time since it started, and its resident memory, now.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    /// utime: running its own code, seconds.
    pub user_s: f64,
    /// stime: the kernel working for it, seconds.
    pub system_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
}

impl ProcessSample {
    /// `user_s + system_s`.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.system_s
    }

    /// Reads process `pid`'s `/proc/PID/stat` and `/proc/PID/status`.
    pub fn read(pid: u32) -> io::Result<ProcessSample> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let (user, system) = cpu_ticks(&stat).ok_or_else(|| bad("unreadable /proc/PID/stat"))?;
        let rss_kib = vm_rss_kib(&status).ok_or_else(|| bad("no VmRSS in /proc/PID/status"))?;
        Ok(ProcessSample {
            user_s: user as f64 / TICKS_PER_SECOND,
            system_s: system as f64 / TICKS_PER_SECOND,
            rss_kib,
        })
    }
}

/// utime and stime, fields 14 and 15 of `/proc/PID/stat`. Field 2, the command name in
/// parentheses, may itself hold spaces and parentheses, so counting starts after the last
/// `)`: field 3 is the first there.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// The `VmRSS:` line of `/proc/PID/status`, in KiB.
fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's (network namespace's) TCP segments sent so far: `OutSegs` of the `Tcp:`
/// lines of `/proc/net/snmp`. On loopback every segment is counted once, by its sender,
/// whichever side that is: the server's deliveries and the clients' ACKs and requests
/// alike.
pub fn tcp_out_segs() -> Option<u64> {
    out_segs(&fs::read_to_string("/proc/net/snmp").ok()?)
}

/// `OutSegs` from the text of `/proc/net/snmp`: a `Tcp:` line of names, then a `Tcp:`
/// line of values in the same order.
fn out_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let column = names.split_whitespace().position(|n| n == "OutSegs")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 500 0 0 0 731 269 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some((731, 269)));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn rss_and_segments_parse() {
        assert_eq!(
            vm_rss_kib("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t    5120 kB\n"),
            Some(5120)
        );
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin InSegs OutSegs RetransSegs\n\
                    Tcp: 1 200 1000 2345 3\n\
                    Udp: InDatagrams\nUdp: 7\n";
        assert_eq!(out_segs(snmp), Some(2345));
        assert_eq!(out_segs("Tcp: OutSegs\n"), None);
    }

    #[test]
    fn this_process_and_machine_can_be_read() {
        let me = ProcessSample::read(std::process::id()).unwrap();
        assert!(me.rss_kib > 0);
        assert!(me.cpu_s() >= 0.0);
        assert!(tcp_out_segs().is_some());
    }
}
