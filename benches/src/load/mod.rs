//! The load generator behind `xds-load`: S simulated Envoys over C HTTP/2 connections against a
//! server started in this process, in a child process (`xds-load-server`), or already running.
//!
//! A run: start (or find) the server; open every stream with at most `connect_concurrency`
//! connecting at a time; wait until every stream holds the full state; then trigger each update
//! and wait until every stream has it, reading the server's CPU and memory from `/proc` around
//! each phase. Every wait is bounded by a timeout; only loopback addresses are used.

mod client;
mod control;
mod record;
mod report;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OnceCell, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub use client::{Target, Variant, MAX_RESPONSE_BYTES};
pub use control::ServerControl;
pub use record::Recorder;
pub use report::{Initial, Percentiles, Report, Update};

use crate::procfs::{self, ProcStats};
use crate::scenario::{cluster_name, UpdateKind};

/// The environment variable (and value) that turns off mimalloc's returning of freed memory to
/// the kernel in the generator (`xds-load` sets it for itself; the server child never inherits it).
pub const GENERATOR_PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "-1");

/// Where the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ServerMode {
    /// A child process running `xds-load-server`: CPU and memory are the server's alone.
    Spawn,
    /// In this process (CPU and memory figures include the load generator).
    InProcess,
    /// Already running at `--addr` (figures from `--server-pid` if given; no updates).
    External,
}

/// Settings of a run (the command line of `xds-load`).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Options {
    /// Free text naming the run in the report.
    #[arg(long, default_value = "xds-load")]
    pub label: String,
    /// Streams (simulated Envoys), not counting stalled ones.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// HTTP/2 connections the streams share round-robin (equal to `--streams`: one connection
    /// per stream).
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// SotW or delta ADS.
    #[arg(long, value_enum, default_value_t = Variant::Sotw)]
    pub variant: Variant,
    /// Clusters in the scenario (spawn and in-process).
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Endpoints per cluster.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Where the server runs.
    #[arg(long, value_enum, default_value_t = ServerMode::Spawn)]
    pub server: ServerMode,
    /// The `xds-load-server` binary (default: next to this executable).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Worker threads of the spawned server's runtime (`xds-load-server --worker-threads`;
    /// default: one per CPU).
    #[arg(long, value_name = "N")]
    pub server_threads: Option<u16>,
    /// Single-threaded runtimes the spawned server serves on (`xds-load-server --shards`; 1:
    /// one runtime of `--server-threads` workers).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub server_shards: usize,
    /// Address of an external server (loopback only).
    #[arg(long, default_value = "127.0.0.1:18000")]
    pub addr: SocketAddr,
    /// Process id of an external server, for its CPU and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Updates to trigger after the initial synchronisation.
    #[arg(long, default_value_t = 3)]
    pub updates: usize,
    /// What each update changes.
    #[arg(long, value_enum, default_value_t = UpdateKind::All)]
    pub update_kind: UpdateKind,
    /// Pause between updates, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub update_pause_ms: u64,
    /// Streams connecting (connection set-up and stream opening) at the same time.
    #[arg(long, default_value_t = 512)]
    pub connect_concurrency: usize,
    /// Seconds every stream gets to reach the full state.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Seconds every stream gets to receive one update.
    #[arg(long, default_value_t = 60)]
    pub update_timeout_s: u64,
    /// Extra streams, each on its own connection, that stop reading once they hold the full
    /// state (slow clients).
    #[arg(long, default_value_t = 0)]
    pub stall: usize,
    /// HTTP/2 stream and connection window of the stalled streams' connections, in bytes.
    #[arg(long, default_value_t = 16_384)]
    pub stall_window: u32,
    /// Quiet time, in milliseconds, after which the server counts as idle for CPU readings.
    #[arg(long, default_value_t = 300)]
    pub settle_ms: u64,
}

/// Raises the open-file limit as far as allowed; returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    const WANTED: u64 = 262_144;
    let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED);
    let _ = rlimit::increase_nofile_limit(WANTED);
    rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0)
}

fn settings(o: &Options) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

fn stats(pid: Option<u32>) -> ProcStats {
    pid.and_then(procfs::read).unwrap_or_default()
}

/// Waits until `done()` or the deadline, polling every few milliseconds. Returns whether done.
async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Records a failure of the run as a whole (not of one stream): the report counts it as an
/// error and `xds-load` exits non-zero.
fn run_failed(recorder: &Recorder, text: String) {
    eprintln!("error: {text}");
    recorder.error(usize::MAX, text);
}

async fn settled(pid: Option<u32>, o: &Options) -> ProcStats {
    match pid {
        Some(pid) => {
            procfs::settle(pid, Duration::from_millis(o.settle_ms), Duration::from_secs(30)).await.unwrap_or_default()
        }
        None => ProcStats::default(),
    }
}

/// One connection slot: streams sharing it use clones of one `Channel` (one HTTP/2 connection).
struct Slot {
    cell: OnceCell<Channel>,
    endpoint: Endpoint,
}

impl Slot {
    fn new(addr: SocketAddr, window: Option<u32>) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(w) = window {
            endpoint = endpoint.initial_stream_window_size(w).initial_connection_window_size(w);
        }
        Ok(Self { cell: OnceCell::new(), endpoint })
    }

    async fn channel(&self) -> Result<Channel, String> {
        self.cell
            .get_or_try_init(|| async {
                tokio::time::timeout(Duration::from_secs(15), self.endpoint.connect())
                    .await
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| format!("connect: {e}"))
            })
            .await
            .cloned()
    }
}

/// Runs the load described by `o` and returns its report.
pub async fn run(o: Options) -> Result<Report, String> {
    if !o.addr.ip().is_loopback() {
        return Err(format!("{}: only loopback addresses are allowed", o.addr));
    }
    if o.streams == 0 || o.connections == 0 {
        return Err("--streams and --connections must be at least 1".into());
    }
    let nofile_limit = raise_fd_limit();
    let mut control = ServerControl::start(&o).await?;
    let addr = control.addr();
    let pid = control.pid();
    let client_pid = std::process::id();
    let total = o.streams + o.stall;
    let updates = if control.can_update() { o.updates } else { 0 };
    let (target_tx, target_rx) = watch::channel(Target::default());
    let stop = CancellationToken::new();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = settled(pid, &o).await;
    let generator_before = stats(Some(client_pid));
    let recorder = Arc::new(Recorder::new(total, updates));
    let connections = o.connections.min(o.streams);
    let mut slots = Vec::with_capacity(connections + o.stall);
    for i in 0..connections + o.stall {
        slots.push(Arc::new(Slot::new(addr, (i >= connections).then_some(o.stall_window))?));
    }
    let admission = Arc::new(Semaphore::new(o.connect_concurrency.max(1)));
    let bytes_at = |r: &Recorder| r.totals();
    let (b0, r0, n0) = bytes_at(&recorder);
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let slot =
            if i < o.streams { slots[i % connections].clone() } else { slots[connections + (i - o.streams)].clone() };
        let ctx = client::StreamCtx {
            index: i,
            node_id: format!("envoy-{i}"),
            variant: o.variant,
            recorder: recorder.clone(),
            target: target_rx.clone(),
            stop: stop.clone(),
            stall: i >= o.streams,
        };
        let admission = admission.clone();
        tasks.spawn(async move {
            let Ok(permit) = admission.acquire_owned().await else { return };
            let channel = tokio::select! {
                () = ctx.stop.cancelled() => return,
                c = slot.channel() => c,
            };
            match channel {
                Ok(channel) => client::run(channel, ctx, Some(permit)).await,
                Err(e) => {
                    drop(permit);
                    ctx.recorder.error(ctx.index, e);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(o.timeout_s);
    let all_full = wait_until(deadline, || recorder.full_count() + recorder.errors() >= total).await;
    let full_at = recorder.full_at(0..total);
    let wall = full_at.iter().max().copied().unwrap_or_default();
    let full_stats = stats(pid);
    let after_initial = settled(pid, &o).await;
    let generator_after = stats(Some(client_pid));
    let (b1, r1, n1) = bytes_at(&recorder);
    let initial = Initial {
        streams_full: recorder.full_count(),
        convergence: Percentiles::of(recorder.convergence(0..total)),
        since_start: Percentiles::of(full_at),
        wall_s: wall.as_secs_f64(),
        server_cpu_s: after_initial.cpu_seconds - before.cpu_seconds,
        generator_cpu_s: generator_after.cpu_seconds - generator_before.cpu_seconds,
        bytes: b1 - b0,
        responses: r1 - r0,
        resources: n1 - n0,
        server_rss_before: before.rss_bytes,
        server_rss_full: full_stats.rss_bytes,
        server_rss_per_stream: full_stats.rss_bytes.saturating_sub(before.rss_bytes) as f64 / total as f64,
    };
    if !all_full {
        run_failed(
            &recorder,
            format!("only {} of {total} streams reached the full state in time", recorder.full_count()),
        );
    }

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let server_includes_client = o.server == ServerMode::InProcess;
    let mut update_reports = Vec::new();
    for index in 0..updates {
        if index > 0 {
            tokio::time::sleep(Duration::from_millis(o.update_pause_ms)).await;
        }
        let generation = control.generation() + 1;
        let cluster = match o.update_kind {
            UpdateKind::All => None,
            UpdateKind::One => Some(cluster_name(generation as usize % o.clusters.max(1))),
        };
        let _ = target_tx.send(Target { index: Some(index), generation, cluster: cluster.clone() });
        let before = stats(pid);
        let generator_before = stats(Some(client_pid));
        let (b0, r0, n0) = bytes_at(&recorder);
        let t0 = recorder.start().elapsed();
        let applied = control.update(o.update_kind).await?;
        if applied != generation {
            return Err(format!("the server applied generation {applied}, expected {generation}"));
        }
        let deadline = Instant::now() + Duration::from_secs(o.update_timeout_s);
        let live = o.streams;
        let errors_before = recorder.errors();
        if !wait_until(deadline, || recorder.update_count(index) + recorder.errors() >= live).await {
            // A stream that never gets an update is a server bug, not a slow run: fail the run.
            run_failed(
                &recorder,
                format!(
                    "update {index}: {} of {live} streams had it after {} s ({} stream errors meanwhile)",
                    recorder.update_count(index),
                    o.update_timeout_s,
                    recorder.errors() - errors_before
                ),
            );
        }
        let after = settled(pid, &o).await;
        let generator_after = stats(Some(client_pid));
        let sent = control.sent().await?;
        let (b1, r1, n1) = bytes_at(&recorder);
        let latencies = recorder.update_at(index, 0..o.streams).into_iter().map(|t| t.saturating_sub(t0)).collect();
        let server_cpu_s = after.cpu_seconds - before.cpu_seconds;
        let generator_cpu_s = generator_after.cpu_seconds - generator_before.cpu_seconds;
        update_reports.push(Update {
            index,
            generation,
            cluster,
            streams_received: recorder.update_count(index),
            latency: Percentiles::of(latencies),
            server_cpu_s,
            generator_cpu_s,
            cpu_floor_ms: report::cpu_floor_ms(server_cpu_s, generator_cpu_s, server_includes_client, cpus),
            server_sent: sent.map(|(n, _)| n),
            server_sent_last_ms: sent.map(|(_, last)| last.as_secs_f64() * 1000.0),
            bytes: b1 - b0,
            responses: r1 - r0,
            resources: n1 - n0,
            server_rss_after: after.rss_bytes,
        });
    }

    let server_end = stats(pid);
    let client_end = stats(Some(client_pid));
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    control.stop().await;
    Ok(Report {
        label: o.label.clone(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        cpus,
        settings: settings(&o),
        server_includes_client,
        nofile_limit,
        initial,
        updates: update_reports,
        errors: recorder.errors(),
        error_texts: recorder.error_texts(),
        server_end,
        client_end,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    /// A small run against a server in this process: every stream reaches the full state and
    /// receives each update, and the server's send clock saw every update response.
    async fn small_run(variant: &str) -> Report {
        let o = Cli::parse_from([
            "xds-load",
            "--server",
            "in-process",
            "--addr",
            "127.0.0.1:0",
            "--variant",
            variant,
            "--streams",
            "12",
            "--connections",
            "3",
            "--clusters",
            "4",
            "--endpoints",
            "2",
            "--updates",
            "2",
            "--update-pause-ms",
            "10",
            "--settle-ms",
            "50",
            "--timeout-s",
            "30",
            "--update-timeout-s",
            "30",
        ])
        .options;
        run(o).await.expect("the run completes")
    }

    fn check(r: &Report) {
        assert_eq!(r.errors, 0, "{:?}", r.error_texts);
        assert_eq!(r.initial.streams_full, 12);
        assert_eq!(r.updates.len(), 2);
        for u in &r.updates {
            assert_eq!(u.streams_received, 12, "update {}", u.index);
            assert_eq!(u.server_sent, Some(12), "update {}: one endpoint response per stream", u.index);
            assert!(u.server_sent_last_ms.is_some_and(|ms| ms > 0.0));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sotw_run_converges_and_counts_update_responses() {
        check(&small_run("sotw").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delta_run_converges_and_counts_update_responses() {
        check(&small_run("delta").await);
    }
}
