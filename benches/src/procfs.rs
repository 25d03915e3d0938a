//! CPU time and memory of a process, read from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use std::time::Duration;

/// What a process has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcStats {
    /// User plus system CPU time, in seconds (resolution: one clock tick, usually 10 ms).
    pub cpu_seconds: f64,
    /// Resident set size now, in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size, in bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// Clock ticks per second for `/proc/<pid>/stat` times. Linux has used 100 on every
/// mainstream architecture for decades; `getconf CLK_TCK` would tell otherwise.
const CLOCK_TICKS: f64 = 100.0;

/// Reads the stats of `pid`. `None` when the process is gone or `/proc` is unreadable.
pub fn read(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let threads: u64 = fields.get(17)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Some(ProcStats {
        cpu_seconds: (utime + stime) as f64 / CLOCK_TICKS,
        rss_bytes: kib("VmRSS:"),
        peak_rss_bytes: kib("VmHWM:"),
        threads,
    })
}

/// Waits until `pid` has used no CPU for `quiet` (checked every `quiet`), at most `max`;
/// returns the last stats. Used to let a server finish processing ACKs before reading its CPU.
pub async fn settle(pid: u32, quiet: Duration, max: Duration) -> Option<ProcStats> {
    let deadline = tokio::time::Instant::now() + max;
    let mut last = read(pid)?;
    loop {
        tokio::time::sleep(quiet).await;
        let now = read(pid)?;
        if now.cpu_seconds - last.cpu_seconds < 0.015 || tokio::time::Instant::now() >= deadline {
            return Some(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let s = read(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes / 2);
        assert!(s.threads >= 1);
    }
}
