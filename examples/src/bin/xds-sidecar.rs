//! `xds-sidecar`: serves a YAML service registry to proxyless gRPC clients and Envoy over xDS.
//!
//! Run `xds-sidecar --help`; the logic lives in the `xds_examples` library.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use xds_examples::cli::{BootstrapCommand, Cli, Command, ServeArgs};
use xds_examples::{bootstrap, sidecar};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Check(args)) => sidecar::check(&args.config).map(|summary| print!("{summary}")),
        Some(Command::Bootstrap(BootstrapCommand::Grpc(args))) => {
            let json = bootstrap::grpc_bootstrap(&args.xds_addr, &args.node_id, &args.zone);
            println!("{json:#}");
            Ok(())
        }
        Some(Command::Bootstrap(BootstrapCommand::Envoy(args))) => {
            print!("{}", bootstrap::envoy_bootstrap(&args.options()));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xds-sidecar: error: {}", sidecar::report(&err));
            ExitCode::FAILURE
        }
    }
}

/// Starts the runtime (with `--worker-threads`) and serves on it.
fn serve(args: ServeArgs) -> Result<(), sidecar::Error> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        runtime.worker_threads(usize::from(n));
    }
    runtime.enable_all().build().map_err(sidecar::Error::Runtime)?.block_on(serve_on_runtime(args))
}

async fn serve_on_runtime(args: ServeArgs) -> Result<(), sidecar::Error> {
    let Some(config) = args.config else {
        // clap already requires --config to serve; this guards against a change of definition.
        Cli::command().error(ErrorKind::MissingRequiredArgument, "--config FILE is required to serve").exit()
    };
    sidecar::init_logging(&args.log_level, args.log_format)?;
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| sidecar::Error::ReadFile { path: path.clone(), source })
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(xds_server::TlsConfig {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: args.tls_client_ca.as_ref().map(read).transpose()?,
            client_auth_optional: false,
        }),
        _ => None,
    };
    let options = sidecar::Options {
        health_checks: !args.no_health_checks,
        admin_addr: (!args.no_admin).then_some(args.admin_addr),
        tls,
        identity_bindings: args.bind_identity,
        max_connections: (args.max_connections > 0).then_some(args.max_connections),
        first_request_timeout: (args.first_request_timeout > 0)
            .then(|| std::time::Duration::from_secs(args.first_request_timeout)),
        max_subscribed_names: match args.max_subscribed_names {
            0 => usize::MAX,
            n => n,
        },
        ..sidecar::Options::default()
    };
    sidecar::serve_with(&config, args.xds_addr, options, sidecar::shutdown_signal()).await
}
