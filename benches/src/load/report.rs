//! The report of a load run: JSON (`serde`) and a readable summary.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::procfs::ProcStats;

/// p50, p99 and max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `values` (nearest rank).
    pub fn of(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        let n = values.len();
        let rank = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            values[i].as_secs_f64() * 1e3
        };
        Self { count: n, p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: rank(1.0) }
    }
}

/// The initial synchronisation of every stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Initial {
    /// Streams that reached the full state (stalled ones included).
    pub streams_full: usize,
    /// Per stream: from opening the stream to holding the full state.
    pub convergence: Percentiles,
    /// Per stream: from the start of the run (first connection) to holding the full state.
    pub since_start: Percentiles,
    /// From the start of the run until the last stream held the full state, in seconds.
    pub wall_s: f64,
    /// Server CPU seconds from before the first connection until the server was idle again.
    pub server_cpu_s: f64,
    /// The generator's own CPU seconds over the same span (it shares the machine's cores).
    pub generator_cpu_s: f64,
    /// Bytes of responses received (protobuf size of every `DiscoveryResponse`).
    pub bytes: u64,
    /// Responses received.
    pub responses: u64,
    /// Resources received.
    pub resources: u64,
    /// Server resident memory before any stream connected, in bytes.
    pub server_rss_before: u64,
    /// Server resident memory once every stream held the full state, in bytes.
    pub server_rss_full: u64,
    /// `(server_rss_full - server_rss_before) / streams`, in bytes.
    pub server_rss_per_stream: f64,
}

/// One update.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Update {
    /// Its position in the run.
    pub index: usize,
    /// The generation it set.
    pub generation: u32,
    /// The changed cluster (`None`: every cluster).
    pub cluster: Option<String>,
    /// Streams (stalled ones excluded) that received it.
    pub streams_received: usize,
    /// Per stream: from the change to the stream holding it.
    pub latency: Percentiles,
    /// Server CPU seconds from just before the change until the server was idle again.
    pub server_cpu_s: f64,
    /// Endpoint responses of the update the server handed to HTTP/2 (`None`: not known, as
    /// for an external server).
    pub server_sent: Option<u64>,
    /// From the change until the server handed the last of them to HTTP/2, in milliseconds:
    /// the server's part of the latency (the rest is the transport and the clients' decoding).
    pub server_sent_last_ms: Option<f64>,
    /// The generator's own CPU seconds over the same span.
    pub generator_cpu_s: f64,
    /// The server's and the generator's CPU for the update spread over every core of the
    /// machine, in milliseconds: about the soonest the last stream could have had it here,
    /// whatever the server did, when both share the machine (the generator decodes every
    /// resource of every stream).
    pub cpu_floor_ms: f64,
    /// Bytes of responses received because of it.
    pub bytes: u64,
    /// Responses received because of it.
    pub responses: u64,
    /// Resources received because of it.
    pub resources: u64,
    /// Server resident memory after it, in bytes.
    pub server_rss_after: u64,
}

/// A whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Free text naming the run.
    pub label: String,
    /// Seconds since the Unix epoch at the start.
    pub unix_time: u64,
    /// CPUs of the machine.
    pub cpus: usize,
    /// The command line's settings.
    pub settings: serde_json::Value,
    /// Whether the server's CPU and memory figures include the load generator (in-process).
    pub server_includes_client: bool,
    /// The open-file limit the generator runs with.
    pub nofile_limit: u64,
    /// The initial synchronisation.
    pub initial: Initial,
    /// Every update.
    pub updates: Vec<Update>,
    /// Failed streams.
    pub errors: usize,
    /// A few distinct error texts.
    pub error_texts: Vec<String>,
    /// The server at the end.
    pub server_end: ProcStats,
    /// The generator at the end (its CPU is the client side's cost).
    pub client_end: ProcStats,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// [`Update::cpu_floor_ms`]: `server_cpu_s` and `generator_cpu_s` spread over `cpus`; an
/// in-process server's CPU already includes the generator's.
pub fn cpu_floor_ms(server_cpu_s: f64, generator_cpu_s: f64, server_includes_client: bool, cpus: usize) -> f64 {
    let work = if server_includes_client { server_cpu_s } else { server_cpu_s + generator_cpu_s };
    work / cpus.max(1) as f64 * 1e3
}

impl Report {
    /// A readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let i = &self.initial;
        let _ = writeln!(s, "== {} ==", self.label);
        let _ = writeln!(s, "settings: {}", self.settings);
        if self.server_includes_client {
            let _ = writeln!(s, "note: server in-process: CPU and RSS include the load generator");
        }
        let _ = writeln!(
            s,
            "initial: {} streams at full state; wall {:.2} s; per stream open->full p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            i.streams_full, i.wall_s, i.convergence.p50_ms, i.convergence.p99_ms, i.convergence.max_ms
        );
        let _ = writeln!(
            s,
            "         since start p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {:.1} MiB in {} responses ({} resources)",
            i.since_start.p50_ms,
            i.since_start.p99_ms,
            i.since_start.max_ms,
            mib(i.bytes),
            i.responses,
            i.resources
        );
        let _ = writeln!(
            s,
            "         server CPU {:.2} s (generator {:.2} s); RSS {:.1} -> {:.1} MiB ({:.1} KiB per stream)",
            i.server_cpu_s,
            i.generator_cpu_s,
            mib(i.server_rss_before),
            mib(i.server_rss_full),
            i.server_rss_per_stream / 1024.0
        );
        for u in &self.updates {
            let _ = writeln!(
                s,
                "update {} (gen {}, {}): {} streams; change->stream p50 {:.1} ms p99 {:.1} ms max {:.1} ms; server CPU {:.2} s (generator {:.2} s); {:.2} MiB in {} responses; RSS {:.1} MiB",
                u.index,
                u.generation,
                u.cluster.as_deref().unwrap_or("all clusters"),
                u.streams_received,
                u.latency.p50_ms,
                u.latency.p99_ms,
                u.latency.max_ms,
                u.server_cpu_s,
                u.generator_cpu_s,
                mib(u.bytes),
                u.responses,
                mib(u.server_rss_after)
            );
            let _ = writeln!(
                s,
                "         CPU floor {:.1} ms: the server's and the generator's CPU for it over {} cores",
                u.cpu_floor_ms, self.cpus
            );
            if let (Some(n), Some(ms)) = (u.server_sent, u.server_sent_last_ms) {
                let _ = writeln!(
                    s,
                    "         server handed {n} endpoint responses to HTTP/2, the last {ms:.1} ms after the change"
                );
            }
        }
        let _ = writeln!(
            s,
            "end: server CPU {:.2} s total, RSS {:.1} MiB (peak {:.1} MiB, {} threads); generator CPU {:.2} s, RSS {:.1} MiB",
            self.server_end.cpu_seconds,
            mib(self.server_end.rss_bytes),
            mib(self.server_end.peak_rss_bytes),
            self.server_end.threads,
            self.client_end.cpu_seconds,
            mib(self.client_end.rss_bytes)
        );
        let _ = writeln!(s, "errors: {} {:?}", self.errors, self.error_texts);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(v);
        assert_eq!((p.count, p.p50_ms, p.p99_ms, p.max_ms), (100, 50.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(Vec::new()).count, 0);
    }

    #[test]
    fn cpu_floor_spreads_both_processes_over_the_cores() {
        assert_eq!(cpu_floor_ms(0.5, 5.5, false, 2), 3000.0);
        // In-process: the server's figure is the generator's too.
        assert_eq!(cpu_floor_ms(6.0, 6.0, true, 2), 3000.0);
        assert_eq!(cpu_floor_ms(1.0, 0.0, false, 0), 1000.0);
    }
}
