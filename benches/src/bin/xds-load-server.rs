//! `xds-load-server`: serves a load scenario and applies updates on command, so that its CPU
//! time and memory can be measured apart from the load generator.
//!
//! Line protocol: it prints `listening ADDR` once serving; then, per line on standard input,
//! `all` (change every endpoint of every cluster) or `one` (change one endpoint of one cluster)
//! answered by `updated GENERATION CLUSTER|-` once published; `sent`, answered by
//! `sent RESPONSES MICROSECONDS`: how many endpoint responses of the latest update the server has
//! handed to HTTP/2 and how long after the change the last one was; `quit` or the end of input
//! stops it.

use std::net::SocketAddr;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use xds_benches::load::raise_fd_limit;
use xds_benches::scenario::{cluster_name, Scenario, UpdateKind};
use xds_benches::serve::LoadServer;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves an xDS load scenario.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Clusters.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Endpoints per cluster.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Listen address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Count every request and response in Prometheus metrics, as a deployment would (to
    /// measure what the counting costs; `xds-load --server-bin` a script that adds this flag).
    #[arg(long)]
    metrics: bool,
    /// Worker threads of the server's runtime (default: one per CPU, tokio's default). On a
    /// machine it shares with the load generator, one worker spends less CPU on waking and
    /// stealing between workers: see benches/README.md.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// Serve on this many single-threaded runtimes of the server's own instead (2 or more):
    /// each connection and its streams on one thread, the connections spread by the kernel.
    #[arg(long, value_name = "N", default_value_t = 1)]
    shards: usize,
}

async fn serve(cli: Cli) -> Result<(), String> {
    if !cli.addr.ip().is_loopback() {
        return Err(format!("{}: only loopback addresses are allowed", cli.addr));
    }
    raise_fd_limit();
    let mut server =
        LoadServer::start_sharded(cli.addr, Scenario::new(cli.clusters, cli.endpoints), cli.metrics, cli.shards)
            .await
            .map_err(|e| format!("listen on {}: {e}", cli.addr))?;
    let mut out = tokio::io::stdout();
    let say = |line: String| format!("{line}\n").into_bytes();
    out.write_all(&say(format!("listening {}", server.addr))).await.map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let kind = match line.trim() {
            "all" => UpdateKind::All,
            "one" => UpdateKind::One,
            "quit" => break,
            "sent" => {
                let (count, last) = server.clock.sent();
                out.write_all(&say(format!("sent {count} {}", last.as_micros()))).await.map_err(|e| e.to_string())?;
                out.flush().await.map_err(|e| e.to_string())?;
                continue;
            }
            other => {
                eprintln!("xds-load-server: unknown command {other:?} (all, one, sent, quit)");
                continue;
            }
        };
        let (generation, cluster) = server.update(kind);
        let cluster = cluster.map_or_else(|| "-".to_string(), cluster_name);
        out.write_all(&say(format!("updated {generation} {cluster}"))).await.map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())?;
    }
    server.stop().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs only when asked for (RUST_LOG), to standard error: standard output is the line
    // protocol, and a subscriber that filters everything out would still cost CPU per span.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xds-load-server: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xds-load-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
