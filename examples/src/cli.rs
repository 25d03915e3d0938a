//! The `xds-sidecar` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bootstrap::{self, HostPort};

/// The default address of the xDS server.
pub const DEFAULT_XDS_ADDR: &str = "127.0.0.1:18000";
/// Where the admin HTTP listener serves by default.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:19000";

const ABOUT: &str = "Serve a YAML service registry to proxyless gRPC clients over xDS";

const LONG_ABOUT: &str = "\
Serve a YAML service registry to proxyless gRPC clients over xDS (ADS, v3).

For every service NAME in the registry file, clients that dial the target xds:///NAME \
receive a Listener, a RouteConfiguration, a Cluster and a ClusterLoadAssignment named NAME \
that balance their RPCs over the listed endpoints. Envoy receives the same clusters and \
endpoints, plus the Envoy listeners, routes and SDS secrets of the registry. Every client gets \
the same configuration, whatever its node id.

Endpoints are health checked (TCP connect every 2 s by default, or the gRPC health \
protocol): one that fails is published UNHEALTHY, so clients stop using it, and HEALTHY again \
once it recovers. When every endpoint of a service fails, all are published HEALTHY (as Envoy's \
panic mode does). --no-health-checks publishes every endpoint HEALTHY.

The registry file is watched: edits (in place or by replacing the file) are served within \
a second, without restart. A file that does not parse or validate is reported as \
FILE:LINE:COL and the last good configuration stays in place; at start-up it is an error.";

const AFTER_HELP: &str = "\
Registry file (every setting: examples/registry-full.yaml):
  services:
    - name: myservice                               # target xds:///myservice
      endpoints: [127.0.0.1:50051, 127.0.0.1:50052] # IP:PORT, IPv6 as \"[::1]:50051\"

Examples:
  xds-sidecar --config registry.yaml
  xds-sidecar check --config registry.yaml
  xds-sidecar bootstrap grpc --node-id my-client > bootstrap.json
  GRPC_XDS_BOOTSTRAP=bootstrap.json my-grpc-client xds:///myservice
  xds-sidecar bootstrap envoy --node-id edge-1 > envoy.yaml && envoy -c envoy.yaml";

/// The `xds-sidecar` command line.
#[derive(Debug, Parser)]
#[command(
    name = "xds-sidecar",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Options of the default command, `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// A subcommand; without one, `xds-sidecar` serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry over xDS (the default command).
    Serve(ServeArgs),
    /// Validate a registry file, print what it would serve and exit (status 1 if invalid).
    Check(CheckArgs),
    /// Print the bootstrap configuration a client needs to reach this server.
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
}

/// Client kinds `bootstrap` can write for.
#[derive(Debug, Subcommand)]
pub enum BootstrapCommand {
    /// Print the JSON bootstrap of a proxyless gRPC client (gRFC A27).
    ///
    /// Save it to a file named by GRPC_XDS_BOOTSTRAP, or pass it inline with
    /// GRPC_XDS_BOOTSTRAP_CONFIG="$(xds-sidecar bootstrap grpc)".
    Grpc(GrpcBootstrapArgs),
    /// Print the YAML bootstrap of an Envoy proxy (`envoy -c FILE`).
    ///
    /// ADS over gRPC (or delta with --delta) to the sidecar, the control-plane cluster with
    /// HTTP/2 (and TLS with --tls-ca), and an admin listener on 127.0.0.1.
    Envoy(EnvoyBootstrapArgs),
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Registry file (YAML) listing the services and their endpoints.
    ///
    /// Watched while serving: changes are applied within a second; an invalid version is
    /// logged and ignored.
    #[arg(short, long, value_name = "FILE", required = true)]
    pub config: Option<PathBuf>,

    /// Address the xDS server listens on.
    #[arg(
        long,
        value_name = "IP:PORT",
        default_value = DEFAULT_XDS_ADDR,
        long_help = "Address the xDS server listens on.\n\nUse 0.0.0.0:18000 (or [::]:18000) to \
                     accept clients on every interface; port 0 picks a free port, shown in the logs."
    )]
    pub xds_addr: SocketAddr,

    /// Log verbosity when RUST_LOG is not set: off, error, warn, info, debug or trace.
    ///
    /// Per-module directives work too, e.g. "info,xds_server=debug" (debug shows every xDS
    /// request and response). RUST_LOG, when set, takes precedence.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Do not health check endpoints: publish every endpoint HEALTHY.
    ///
    /// Overrides every service's `health_check` (benchmarks use it).
    #[arg(long)]
    pub no_health_checks: bool,

    /// Address of the admin HTTP listener.
    ///
    /// It serves /healthz, /ready (200 once a valid registry is published), /config_dump (every
    /// resource as proto3 JSON with @type), /clients (each connected node: streams, versions
    /// sent and ACKed, last NACK with its error) and /metrics (Prometheus text format), and the
    /// gRPC Client Status Discovery Service (envoy.service.status.v3, plaintext HTTP/2, with gRPC
    /// reflection: grpcurl needs no .proto files) for tools that read CSDS.
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,

    /// Do not start the admin HTTP listener.
    #[arg(long)]
    pub no_admin: bool,

    /// Serve xDS over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA bundle (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// With mutual TLS, let a client certificate identity claim matching node ids:
    /// IDENTITY=NODE_PATTERN, e.g. spiffe://mesh/ns/prod/sa/frontend=frontend-* (repeatable).
    ///
    /// IDENTITY is a URI or DNS subject alternative name of the client certificate; NODE_PATTERN
    /// a node id, or a prefix ending in `*`. Once any binding is given, a client whose identity
    /// may not claim its node.id is refused with PERMISSION_DENIED, and since secrets are
    /// served per node (`secrets[].nodes` in the registry), no client can obtain another
    /// node's secrets.
    #[arg(long, value_name = "IDENTITY=NODE_PATTERN", value_parser = parse_binding, requires = "tls_client_ca")]
    pub bind_identity: Vec<(String, String)>,

    /// Threads serving xDS (default: one per CPU).
    ///
    /// Beside proxies on a small machine, fewer threads leave them the other cores. Measured on
    /// 2 cores shared with 10,000 simulated Envoys (benches/README.md): one thread spent about as
    /// much CPU as two, bringing them to full state and per update, and sent each update's last
    /// response 0.1-0.3 s later.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Connections the xDS port serves at a time; 0 for no limit.
    ///
    /// A connection beyond it is closed at once (its client retries with backoff), counted in
    /// the metric xds_connections_refused_total{reason="limit"} and, at most every 10 s,
    /// logged as a warning; the connections already served are untouched. The default suits
    /// the proxies of one host and stays below the common limit of 1,024 open files; raise it
    /// (and `ulimit -n`) when serving a fleet.
    #[arg(long, value_name = "N", default_value_t = crate::sidecar::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Seconds a new connection may go without sending a request before it is closed; 0 waits
    /// for ever.
    ///
    /// Counts from the moment the connection is accepted, TLS handshake included; a peer that
    /// connects and sends nothing holds a connection (and a place under --max-connections) no
    /// longer. Envoy and gRPC clients open their xDS stream as soon as they connect.
    #[arg(long, value_name = "SECONDS", default_value_t = xds_server::DEFAULT_FIRST_REQUEST_TIMEOUT.as_secs())]
    pub first_request_timeout: u64,

    /// The most resource names of one type one xDS stream may subscribe; 0 for no limit.
    ///
    /// A client going beyond it (a SotW request listing more, or delta requests adding up to
    /// more) has that stream closed with RESOURCE_EXHAUSTED, naming the type and the limit;
    /// other streams are untouched. Raise it if a proxy really subscribes more names of a type.
    #[arg(long, value_name = "N", default_value_t = xds_cache::DEFAULT_MAX_NAMES)]
    pub max_subscribed_names: usize,
}

fn parse_binding(text: &str) -> Result<(String, String), String> {
    match text.rsplit_once('=') {
        Some((identity, nodes)) if !identity.is_empty() && !nodes.is_empty() => {
            Ok((identity.to_string(), nodes.to_string()))
        }
        _ => Err(format!("expected IDENTITY=NODE_PATTERN, got {text:?}")),
    }
}

/// Options of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Registry file (YAML) to validate.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Options of `bootstrap grpc`.
#[derive(Debug, Clone, Args)]
pub struct GrpcBootstrapArgs {
    /// Address clients dial to reach the xDS server (the bootstrap's server_uri).
    ///
    /// Any gRPC target works, e.g. xds.example.internal:18000 or dns:///xds:18000.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_XDS_ADDR)]
    pub xds_addr: String,

    /// The client's node id (node.id), shown in the server's logs.
    ///
    /// Every client receives the same configuration whatever its id, but the id must not be
    /// empty.
    #[arg(long, value_name = "ID", default_value = bootstrap::DEFAULT_NODE_ID, value_parser = non_empty)]
    pub node_id: String,

    /// The client's locality zone (node.locality.zone).
    #[arg(long, value_name = "ZONE", default_value = bootstrap::DEFAULT_ZONE)]
    pub zone: String,
}

/// Options of `bootstrap envoy`.
#[derive(Debug, Clone, Args)]
pub struct EnvoyBootstrapArgs {
    /// Envoy's node id (node.id), shown in the server's logs.
    #[arg(long, value_name = "ID", default_value = bootstrap::DEFAULT_ENVOY_NODE_ID, value_parser = non_empty)]
    pub node_id: String,

    /// Envoy's node cluster (node.cluster).
    #[arg(long, value_name = "NAME", default_value = bootstrap::DEFAULT_ENVOY_CLUSTER, value_parser = non_empty)]
    pub cluster: String,

    /// Address Envoy dials to reach the xDS server: IP:PORT or DNS-NAME:PORT (IPv6 in brackets).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_XDS_ADDR)]
    pub xds_addr: HostPort,

    /// Use incremental xDS (api_type DELTA_GRPC) instead of state of the world (GRPC).
    #[arg(long)]
    pub delta: bool,

    /// CA bundle (PEM) the xDS server's certificate must chain to; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Envoy's client certificate (PEM), for mutual TLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Server name for SNI and the required DNS name of the server's certificate (defaults to
    /// the host of --xds-addr when it is a DNS name).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,

    /// Port of Envoy's admin listener, on 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = bootstrap::DEFAULT_ENVOY_ADMIN_PORT)]
    pub admin_port: u16,
}

impl EnvoyBootstrapArgs {
    /// The generator's options.
    pub fn options(&self) -> bootstrap::EnvoyBootstrapOptions {
        bootstrap::EnvoyBootstrapOptions {
            node_id: self.node_id.clone(),
            cluster: self.cluster.clone(),
            xds_addr: self.xds_addr.clone(),
            delta: self.delta,
            tls: self.tls_ca.as_ref().map(|ca| bootstrap::EnvoyTls {
                ca: ca.clone(),
                client_cert: self.tls_cert.clone().zip(self.tls_key.clone()),
                server_name: self.tls_server_name.clone(),
            }),
            admin_port: self.admin_port,
        }
    }
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Accepts a level name, or `tracing` directives (which contain `=` or `,`).
///
/// A bare word that is not a level would otherwise be taken as a target name and silently
/// log nothing useful.
fn parse_log_filter(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.contains('=') || value.contains(',') {
        return tracing_subscriber::EnvFilter::try_new(value)
            .map(|_| value.to_string())
            .map_err(|e| format!("invalid log directives: {e}"));
    }
    tracing_subscriber::filter::LevelFilter::from_str(value)
        .map(|_| value.to_string())
        .map_err(|_| "expected off, error, warn, info, debug or trace".to_string())
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xds-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        let cli = parse(&["--config", "r.yaml"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.config, Some(PathBuf::from("r.yaml")));
        assert_eq!(cli.serve.xds_addr, DEFAULT_XDS_ADDR.parse().expect("addr"));
        assert_eq!(cli.serve.log_format, LogFormat::Text);

        let cli = parse(&["serve", "-c", "r.yaml", "--log-format", "json", "--xds-addr", "[::1]:9"]).expect("parses");
        match cli.command {
            Some(Command::Serve(args)) => {
                assert_eq!(args.log_format, LogFormat::Json);
                assert_eq!(args.xds_addr, "[::1]:9".parse().expect("addr"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn config_is_required_to_serve() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["serve"]).is_err());
        assert!(parse(&["--config", "r.yaml", "--xds-addr", "localhost:1"]).is_err());
    }

    #[test]
    fn log_level_is_checked() {
        assert!(parse(&["-c", "r", "--log-level", "debug"]).is_ok());
        assert!(parse(&["-c", "r", "--log-level", "info,xds_server=trace"]).is_ok());
        assert!(parse(&["-c", "r", "--log-level", "verbose"]).is_err());
    }

    #[test]
    fn bootstrap_grpc_has_defaults() {
        let cli = parse(&["bootstrap", "grpc"]).expect("parses");
        match cli.command {
            Some(Command::Bootstrap(BootstrapCommand::Grpc(args))) => {
                assert_eq!(args.xds_addr, DEFAULT_XDS_ADDR);
                assert_eq!(args.node_id, bootstrap::DEFAULT_NODE_ID);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["bootstrap", "grpc", "--node-id", ""]).is_err());
    }

    #[test]
    fn worker_threads_are_positive_and_default_to_one_per_cpu() {
        assert_eq!(parse(&["-c", "r"]).expect("parses").serve.worker_threads, None);
        assert_eq!(parse(&["-c", "r", "--worker-threads", "1"]).expect("parses").serve.worker_threads, Some(1));
        assert!(parse(&["-c", "r", "--worker-threads", "0"]).is_err());
        assert!(parse(&["-c", "r", "--worker-threads", "many"]).is_err());
    }

    #[test]
    fn no_health_checks_flag() {
        assert!(!parse(&["-c", "r"]).expect("parses").serve.no_health_checks);
        assert!(parse(&["-c", "r", "--no-health-checks"]).expect("parses").serve.no_health_checks);
    }

    #[test]
    fn bootstrap_envoy_options() {
        let envoy = |args: &[&str]| match parse(&[&["bootstrap", "envoy"], args].concat()).map(|c| c.command) {
            Ok(Some(Command::Bootstrap(BootstrapCommand::Envoy(args)))) => Ok(args.options()),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        };
        let defaults = envoy(&[]).expect("parses");
        assert_eq!(defaults, bootstrap::EnvoyBootstrapOptions::default());

        let o = envoy(&[
            "--node-id",
            "n",
            "--cluster",
            "c",
            "--xds-addr",
            "xds.internal:443",
            "--delta",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "e.pem",
            "--tls-key",
            "k.pem",
            "--tls-server-name",
            "xds",
            "--admin-port",
            "9000",
        ])
        .expect("parses");
        assert_eq!((o.node_id.as_str(), o.cluster.as_str(), o.delta, o.admin_port), ("n", "c", true, 9000));
        assert_eq!(o.xds_addr.to_string(), "xds.internal:443");
        let tls = o.tls.expect("tls");
        assert_eq!(tls.client_cert, Some(("e.pem".into(), "k.pem".into())));
        assert_eq!(tls.server_name.as_deref(), Some("xds"));

        assert!(envoy(&["--tls-cert", "e.pem", "--tls-ca", "ca.pem"]).is_err(), "a certificate needs its key");
        assert!(envoy(&["--tls-key", "k.pem"]).is_err(), "a key needs its certificate");
        assert!(envoy(&["--tls-cert", "e.pem", "--tls-key", "k.pem"]).is_err(), "client TLS needs a CA");
        assert!(envoy(&["--xds-addr", "nope"]).is_err());
        assert!(envoy(&["--node-id", ""]).is_err());
    }
}
