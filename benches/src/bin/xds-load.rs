//! `xds-load`: simulated Envoys against an xDS server; reports convergence and update latency,
//! bytes, and the server's CPU and memory. See `benches/README.md`.

use std::os::unix::process::CommandExt;

use clap::Parser;
use xds_benches::load::{self, Options, GENERATOR_PURGE_DELAY};

/// The generator decodes every resource it receives into its Envoy type; mimalloc keeps that
/// allocation cost from crowding out the server it shares the machine with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for the xDS server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Print the report as JSON (one line) instead of the summary.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// mimalloc hands freed memory back to the kernel after 10 ms by default. The generator frees
/// every stream's decoded endpoints and decodes the next ones on every update (hundreds of MiB),
/// so the kernel zeroed the same (huge) pages again and again: 8% of the generator's samples and
/// 10-15% of its CPU per update, on the cores the server shares. mimalloc reads its options from
/// the environment when the process starts, so the generator starts itself again with purging
/// off, unless the variable is set already.
fn keep_freed_memory() {
    if std::env::var_os(GENERATOR_PURGE_DELAY.0).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(GENERATOR_PURGE_DELAY.0, GENERATOR_PURGE_DELAY.1)
        .exec();
    eprintln!(
        "xds-load: could not restart with {}={} ({err}); going on",
        GENERATOR_PURGE_DELAY.0, GENERATOR_PURGE_DELAY.1
    );
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xds-load: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(load::run(cli.options)) {
        Ok(report) => {
            let json = serde_json::to_string(&report).unwrap_or_default();
            if let Some(path) = &cli.json_out {
                if let Err(e) = std::fs::write(path, format!("{json}\n")) {
                    eprintln!("xds-load: {}: {e}", path.display());
                }
            }
            if cli.json {
                println!("{json}");
            } else {
                print!("{}", report.summary());
            }
            if report.errors > 0 {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("xds-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
