//! What the server processes spend: CPU time (user + system, from
//! `/proc/<pid>/stat`) and resident memory (`VmRSS`, from
//! `/proc/<pid>/status`), sampled at the edges of each phase.

use serde::{Deserialize, Serialize};

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    pub pid: u32,
    /// User + system CPU time, microseconds.
    pub cpu_us: u64,
    pub rss_bytes: u64,
}

/// The sum over every given server process, and each one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub cpu_us: u64,
    pub rss_bytes: u64,
    pub each: Vec<ProcSample>,
}

impl Snapshot {
    /// Read every pid; a pid that cannot be read is an error, since every
    /// number derived from the snapshot would be wrong without it.
    pub fn take(pids: &[u32]) -> Result<Snapshot, String> {
        let mut snapshot = Snapshot::default();
        for &pid in pids {
            let sample = sample(pid).map_err(|e| format!("cannot read /proc/{pid}: {e}"))?;
            snapshot.cpu_us += sample.cpu_us;
            snapshot.rss_bytes += sample.rss_bytes;
            snapshot.each.push(sample);
        }
        Ok(snapshot)
    }
}

pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| invalid("unreadable stat"))?;
    let rss_kb = rss_kb(&status).ok_or_else(|| invalid("no VmRSS in status"))?;
    Ok(ProcSample {
        pid,
        cpu_us: ticks.saturating_mul(1_000_000) / clock_ticks_per_second(),
        rss_bytes: rss_kb * 1024,
    })
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// `utime + stime` (fields 14 and 15) in clock ticks. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses itself,
/// so fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:   123456 kB` → 123456.
pub fn rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; no memory is shared.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_odd_process_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194304 1791 0 0 0 250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\twsgate\nVmPeak:\t  99999 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(rss_kb(status), Some(20480));
        assert_eq!(rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = Snapshot::take(&[std::process::id()]).expect("own /proc");
        assert!(me.rss_bytes > 0);
        assert_eq!(me.each.len(), 1);
        assert!(Snapshot::take(&[u32::MAX]).is_err());
    }
}
