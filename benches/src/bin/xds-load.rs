//! `xds-load`: simulated Envoys against an xDS server; reports convergence and update latency,
//! bytes, and the server's CPU and memory. See `benches/README.md`.

use clap::Parser;
use xds_benches::load::{self, Options};

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

fn main() -> std::process::ExitCode {
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
