//! The sidecar itself: registry file → snapshot → [`SnapshotCache`] → [`XdsServer`], with hot
//! reload, logging and graceful shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};
use xds_cache::{Snapshot, SnapshotCache, TypeRouter};
use xds_core::envoy::config::core::v3::HealthStatus;
use xds_core::{type_url, SingleGroup, XdsResource};
use xds_server::admin::{self, Admin};
use xds_server::{IdentityBinding, XdsServer};

use crate::cli::LogFormat;
use crate::health::HealthMonitor;
use crate::registry::{format_duration, HealthCheckKind, Registry, RegistryError, RouteTarget, SecretKind};
use crate::reload::{FileEvent, FileWatcher, DEFAULT_POLL_INTERVAL};
use crate::resources;
use crate::secrets::SecretSource;

/// The one node group: every client gets the same configuration, whatever its node id.
pub const GROUP: &str = "";

/// Why the sidecar could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry file is unreadable or invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The registry produced a snapshot with dangling references (a bug of this sidecar).
    #[error("{}: the registry does not produce a consistent configuration", path.display())]
    Inconsistent {
        /// The registry file.
        path: PathBuf,
        /// What is missing.
        #[source]
        source: xds_cache::Error,
    },
    /// The xDS address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file named on the command line cannot be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The xDS server failed while serving.
    #[error("the xDS server failed")]
    Server(#[source] xds_server::Error),
    /// The log filter or the logger could not be set up.
    #[error("cannot set up logging")]
    Logging(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// An error and its causes on one line, `outer: cause: root cause`, skipping a cause that
/// the message already quotes.
pub fn report(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Installs the global `tracing` subscriber, writing to standard error. `RUST_LOG`, when set
/// and not empty, wins over `level`.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), Error> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| Error::Logging(Box::new(e)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(Error::Logging)
}

/// A cache that gives every node the same configuration (group [`GROUP`]).
pub fn new_cache() -> Arc<SnapshotCache> {
    Arc::new(SnapshotCache::with_grouper(SingleGroup(GROUP.to_string())))
}

/// How the sidecar serves, besides its registry file and address.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether endpoints are health checked (`--no-health-checks` turns it off).
    pub health_checks: bool,
    /// How often the registry file (and the files it names) are checked for changes.
    pub poll_interval: Duration,
    /// Where the admin HTTP listener serves `/healthz`, `/ready`, `/config_dump`, `/clients` and
    /// `/metrics`; `None` turns it off.
    pub admin_addr: Option<SocketAddr>,
    /// TLS (and with a client CA, mutual TLS) on the xDS port.
    pub tls: Option<xds_server::TlsConfig>,
    /// `(identity, node id pattern)` pairs: with mutual TLS, the node ids each client
    /// certificate identity may claim. Empty: node ids are not checked.
    pub identity_bindings: Vec<(String, String)>,
    /// Connections served at a time on the xDS port; `None`: no limit
    /// ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: Option<usize>,
    /// How long a new connection may go without a request; `None`: for ever
    /// ([`xds_server::DEFAULT_FIRST_REQUEST_TIMEOUT`]).
    pub first_request_timeout: Option<Duration>,
    /// The most names of one type a stream may subscribe ([`xds_cache::DEFAULT_MAX_NAMES`]).
    pub max_subscribed_names: usize,
}

/// The sidecar's default limit of connections on its xDS port: ample for the proxies and gRPC
/// clients of one host, and below the 1,024 file descriptors a process is commonly allowed, so
/// a flood of connections is refused with a warning rather than making accepts fail.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;

/// Health checks on, the registry polled every [`DEFAULT_POLL_INTERVAL`].
impl Default for Options {
    fn default() -> Self {
        Self {
            health_checks: true,
            poll_interval: DEFAULT_POLL_INTERVAL,
            admin_addr: None,
            tls: None,
            identity_bindings: Vec::new(),
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            first_request_timeout: Some(xds_server::DEFAULT_FIRST_REQUEST_TIMEOUT),
            max_subscribed_names: xds_cache::DEFAULT_MAX_NAMES,
        }
    }
}

/// How long shutdown waits for the health checkers to stop.
const HEALTH_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The one owner of what the sidecar publishes: the registry being served and the health of
/// its endpoints.
///
/// Registry reloads and health changes are both applied by [`Controller::run`], one at a
/// time, so a health update built from an old registry can never overwrite a newer reload (see
/// [`crate::health`]).
#[derive(Debug)]
pub struct Controller {
    cache: Arc<SnapshotCache>,
    secrets: Arc<SecretSource>,
    reload_errors: Counter,
    path: PathBuf,
    registry: Option<Registry>,
    health: HealthMonitor,
    /// Services whose endpoints are all unhealthy and published healthy (panic mode).
    panicking: BTreeSet<String>,
}

impl Controller {
    /// A controller publishing to `cache` for the registry file `path`; its health checkers
    /// stop when `cancel` is cancelled (or [`shutdown`](Self::shutdown) runs).
    pub fn new(cache: Arc<SnapshotCache>, path: &Path, health_checks: bool, cancel: &CancellationToken) -> Self {
        Self {
            cache,
            secrets: Arc::new(SecretSource::default()),
            reload_errors: Counter::default(),
            path: path.to_owned(),
            registry: None,
            health: HealthMonitor::new(health_checks, cancel),
            panicking: BTreeSet::new(),
        }
    }

    /// The per-node SDS source this controller publishes secrets to.
    pub fn secrets(&self) -> Arc<SecretSource> {
        self.secrets.clone()
    }

    /// Counts rejected registry files (a metric).
    pub fn reload_errors(&self) -> Counter {
        self.reload_errors.clone()
    }

    /// The registry being served, once one was applied.
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// The health checkers.
    pub fn health(&self) -> &HealthMonitor {
        &self.health
    }

    /// Builds the snapshot of `registry` with the current health of its endpoints, checks its
    /// consistency, then (only if it is consistent) restarts the health checkers of changed
    /// endpoints, publishes the snapshot and logs what changed. On error nothing changes.
    pub fn apply(&mut self, registry: Registry) -> Result<(), Error> {
        // Taken first: a change after this point marks its service dirty again and is
        // published by the next health update, never lost.
        let dirty = self.health.table().take_dirty();
        let health: HashMap<&str, HashMap<SocketAddr, HealthStatus>> =
            registry.services.iter().map(|s| (s.name.as_str(), self.health.published(s).0)).collect();
        let snapshot = match resources::snapshot_with(&registry, |s, e| {
            health.get(s.name.as_str()).and_then(|h| h.get(&e.address)).copied().unwrap_or(HealthStatus::Healthy)
        }) {
            Ok(snapshot) => snapshot,
            Err(source) => {
                self.health.table().mark_dirty(dirty);
                return Err(Error::Inconsistent { path: self.path.clone(), source });
            }
        };
        for warning in registry.warnings() {
            warn!(file = %self.path.display(), "{warning}");
        }
        let sync = self.health.sync(&registry);
        let versions = versions(&snapshot);
        self.cache.set_snapshot(GROUP, snapshot);
        self.secrets.publish(&registry);
        let (services, endpoints, resources) =
            (registry.services.len(), registry.endpoint_count(), resources::resource_count(&registry));
        let file = self.path.display();
        match &self.registry {
            None => info!(
                file = %file, services, endpoints, listeners = registry.listeners.len(),
                secrets = registry.secrets.len(), resources, health_checkers = sync.started, %versions,
                "registry loaded"
            ),
            Some(previous) => {
                let changes = changes(previous, &registry);
                info!(
                    file = %file, services, endpoints, listeners = registry.listeners.len(),
                    secrets = registry.secrets.len(), resources, health_checkers_started = sync.started,
                    health_checkers_stopped = sync.stopped, %versions, %changes,
                    "registry reloaded"
                )
            }
        }
        self.registry = Some(registry);
        self.panicking.retain(|s| self.registry.as_ref().is_some_and(|r| r.service(s).is_some()));
        let names: Vec<String> = self.registry.iter().flat_map(|r| r.services.iter().map(|s| s.name.clone())).collect();
        self.log_panic(names);
        Ok(())
    }

    /// Republishes the ClusterLoadAssignments of `services` (whose endpoint health changed),
    /// and only those, in one update of the endpoint type.
    pub fn publish_health(&mut self, services: BTreeSet<String>) {
        let Some(registry) = &self.registry else { return };
        let assignments: Vec<_> = services
            .iter()
            .filter_map(|name| registry.service(name))
            .map(|s| {
                let (health, _) = self.health.published(s);
                resources::load_assignment_with(s, |e| health.get(&e.address).copied().unwrap_or(HealthStatus::Healthy))
                    .encode_resource()
            })
            .collect();
        if assignments.is_empty() {
            return;
        }
        // Only existing names are replaced: references between resources cannot change, so
        // the snapshot stays consistent.
        let version = self.cache.update_resources(GROUP, type_url::ENDPOINT, |set| {
            for cla in assignments {
                set.insert(cla);
            }
        });
        debug!(services = ?services, eds_version = %version, "published endpoint health");
        self.log_panic(services);
    }

    /// Logs services entering and leaving panic mode (every endpoint unhealthy).
    fn log_panic(&mut self, services: impl IntoIterator<Item = String>) {
        let Some(registry) = &self.registry else { return };
        for name in services {
            let Some(service) = registry.service(&name) else { continue };
            let (_, panic) = self.health.published(service);
            if panic && self.panicking.insert(name.clone()) {
                warn!(
                    service = %name,
                    endpoints = service.endpoints.len(),
                    "every endpoint of the service fails its health checks: publishing all of them as healthy \
                     (panic mode, as Envoy does below its healthy_panic_threshold) until one recovers"
                );
            } else if !panic && self.panicking.remove(&name) {
                info!(service = %name, "an endpoint of the service is healthy again: leaving panic mode");
            }
        }
    }

    /// Follows the registry file and the endpoints' health until `cancel` fires: polls the
    /// file every `interval` and applies each valid new version (an invalid one is logged and
    /// the last good configuration stays), and republishes endpoints whose health changed.
    /// Stops the health checkers before returning.
    pub async fn run(mut self, watcher: FileWatcher, interval: Duration, cancel: CancellationToken) {
        let table = self.health.table();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `None` once the watcher failed: health updates go on without reloads.
        let mut watcher = Some(watcher);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                dirty = table.changed() => self.publish_health(dirty),
                _ = ticks.tick(), if watcher.is_some() => {
                    if let Some(w) = watcher.take() {
                        watcher = self.poll(w).await;
                    }
                }
            }
        }
        self.shutdown().await;
        debug!("registry watcher stopped");
    }

    /// Polls the registry file once and applies what changed. Returns the watcher, or `None`
    /// when it failed.
    async fn poll(&mut self, watcher: FileWatcher) -> Option<FileWatcher> {
        // File system calls block; a slow or network file system must not stall a runtime worker.
        let polled = tokio::task::spawn_blocking(move || {
            let mut watcher = watcher;
            let event = watcher.poll();
            (watcher, event)
        })
        .await;
        let (watcher, event) = match polled {
            Ok(polled) => polled,
            Err(err) => {
                error!(error = %err, "the registry watcher failed; reloading is disabled");
                return None;
            }
        };
        match event {
            None => {}
            Some(FileEvent::Changed(Ok(registry))) => {
                if let Err(err) = self.apply(registry) {
                    self.reload_errors.inc();
                    error!(error = %report(&err), "rejected registry file; still serving the last good configuration");
                }
            }
            Some(FileEvent::Changed(Err(err))) => {
                self.reload_errors.inc();
                error!(error = %report(&err), "rejected registry file; still serving the last good configuration")
            }
            Some(FileEvent::Unavailable(err)) => warn!(
                file = %watcher.path().display(),
                error = %err,
                "registry file unavailable; still serving the last good configuration"
            ),
        }
        Some(watcher)
    }

    /// Stops the health checkers.
    pub async fn shutdown(self) {
        self.health.shutdown(HEALTH_SHUTDOWN_GRACE).await;
    }
}

/// `LDS=… RDS=… CDS=… EDS=… SDS=…`: the version of each type, as clients see them.
fn versions(snapshot: &Snapshot) -> String {
    [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT, type_url::SECRET]
        .iter()
        .map(|t| format!("{}={}", type_url::short_name(t), snapshot.version(t).unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What was added, removed or changed between two registries, for the reload log.
fn changes(previous: &Registry, next: &Registry) -> String {
    fn diff<'a, T: PartialEq + 'a>(
        kind: &str,
        before: impl Iterator<Item = (&'a str, &'a T)>,
        after: impl Iterator<Item = (&'a str, &'a T)>,
        parts: &mut Vec<String>,
    ) {
        let before: BTreeMap<&str, &T> = before.collect();
        let after: BTreeMap<&str, &T> = after.collect();
        let list = |names: Vec<&str>| names.join(",");
        let added: Vec<&str> = after.keys().filter(|n| !before.contains_key(*n)).copied().collect();
        let removed: Vec<&str> = before.keys().filter(|n| !after.contains_key(*n)).copied().collect();
        let changed: Vec<&str> =
            after.iter().filter(|(n, v)| before.get(*n).is_some_and(|old| old != *v)).map(|(n, _)| *n).collect();
        if !added.is_empty() {
            parts.push(format!("added {kind} {}", list(added)));
        }
        if !removed.is_empty() {
            parts.push(format!("removed {kind} {}", list(removed)));
        }
        if !changed.is_empty() {
            parts.push(format!("changed {kind} {}", list(changed)));
        }
    }
    let mut parts = Vec::new();
    let (a, b) = (previous, next);
    diff(
        "service",
        a.services.iter().map(|s| (s.name.as_str(), s)),
        b.services.iter().map(|s| (s.name.as_str(), s)),
        &mut parts,
    );
    diff(
        "listener",
        a.listeners.iter().map(|l| (l.name.as_str(), l)),
        b.listeners.iter().map(|l| (l.name.as_str(), l)),
        &mut parts,
    );
    diff(
        "secret",
        a.secrets.iter().map(|s| (s.name.as_str(), s)),
        b.secrets.iter().map(|s| (s.name.as_str(), s)),
        &mut parts,
    );
    if parts.is_empty() {
        "nothing changed".to_string()
    } else {
        parts.join("; ")
    }
}

/// Loads the registry, serves it on `addr` with health checks and reloads it on change, until
/// `shutdown` completes. An invalid registry at start-up is an error: nothing is served.
pub async fn serve(
    config: &Path,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with(config, addr, Options::default(), shutdown).await
}

/// [`serve`] with explicit [`Options`].
///
/// Shutdown (SIGTERM or ctrl-c through [`shutdown_signal`]) drains the xDS streams (the
/// server's graceful shutdown), then stops the registry watcher and the health checkers.
pub async fn serve_with(
    config: &Path,
    addr: SocketAddr,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut watcher = FileWatcher::new(config);
    let registry = watcher.load()?;
    let listener = xds_server::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);

    let cache = new_cache();
    let cancel = CancellationToken::new();
    let mut controller = Controller::new(cache.clone(), config, options.health_checks, &cancel);
    if let Err(err) = controller.apply(registry) {
        controller.shutdown().await;
        return Err(err);
    }
    if !options.health_checks {
        info!("health checks are off (--no-health-checks): every endpoint is published healthy");
    }
    info!(
        addr = %local,
        "xds-sidecar is serving; print a client bootstrap with `xds-sidecar bootstrap grpc --xds-addr {local}` \
         or `xds-sidecar bootstrap envoy --xds-addr {local}`"
    );

    let mut metrics = MetricsRegistry::default();
    metrics.register(
        "xds_sidecar_registry_reload_errors",
        "Registry files rejected (parse, validation or consistency errors)",
        controller.reload_errors(),
    );
    let source = TypeRouter::new().route(type_url::SECRET, controller.secrets()).default_source(cache.clone());
    let mut builder = XdsServer::builder()
        .metrics(&mut metrics)
        .max_connections(options.max_connections)
        .first_request_timeout(options.first_request_timeout)
        .max_subscribed_names(options.max_subscribed_names);
    if let Some(tls) = options.tls {
        builder = builder.tls(tls);
    }
    if !options.identity_bindings.is_empty() {
        let binding = options
            .identity_bindings
            .iter()
            .fold(IdentityBinding::new(), |b, (identity, nodes)| b.bind(identity.clone(), [nodes.clone()]));
        builder = builder.authorize_nodes(binding);
    }
    let server = builder.build(source);
    let admin_task = match options.admin_addr {
        Some(admin_addr) => {
            let admin_listener =
                TcpListener::bind(admin_addr).await.map_err(|source| Error::Bind { addr: admin_addr, source })?;
            let dump_cache = cache.clone();
            let admin = Admin::new(server.clients())
                .metrics(Arc::new(parking_lot::Mutex::new(metrics)))
                .config_dump(move || admin::snapshot_cache_dump(&dump_cache));
            // The first registry is valid and published (an invalid one stops start-up above).
            admin.set_ready(true);
            info!(addr = %admin_listener.local_addr().unwrap_or(admin_addr), "admin listener: /healthz /ready /config_dump /clients /metrics");
            let stop = cancel.clone();
            Some(tokio::spawn(async move {
                let served = axum::serve(admin_listener, admin::router(admin))
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(err) = served {
                    error!(error = %err, "the admin listener failed");
                }
            }))
        }
        None => None,
    };

    let task = tokio::spawn(
        controller
            .run(watcher, options.poll_interval, cancel.clone())
            .instrument(tracing::info_span!("registry", file = %config.display())),
    );
    let served = server.serve_with_listener(listener, shutdown).await;
    cancel.cancel();
    if let Err(err) = task.await {
        error!(error = %err, "the registry watcher task failed");
    }
    if let Some(admin_task) = admin_task {
        let _ = admin_task.await;
    }
    served.map_err(Error::Server)
}

/// Completes on ctrl-c (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("ctrl-c received, shutting down"),
        () = terminate => info!("SIGTERM received, shutting down"),
    }
}

/// Validates a registry file and describes what it would serve (the `check` command).
pub fn check(path: &Path) -> Result<String, Error> {
    let registry = Registry::load(path)?;
    let snapshot =
        resources::snapshot(&registry).map_err(|source| Error::Inconsistent { path: path.to_owned(), source })?;
    Ok(describe(path, &registry, &snapshot))
}

/// The `check` report: what each service, listener and secret becomes, and the warnings.
fn describe(path: &Path, registry: &Registry, snapshot: &Snapshot) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{}: OK, {} service(s), {} endpoint(s), {} listener(s), {} secret(s)\n",
        path.display(),
        registry.services.len(),
        registry.endpoint_count(),
        registry.listeners.len(),
        registry.secrets.len()
    );
    for service in &registry.services {
        let endpoints: Vec<String> = service
            .endpoints
            .iter()
            .map(|e| {
                let mut details = Vec::new();
                if e.weight != 1 {
                    details.push(format!("weight {}", e.weight));
                }
                if e.locality != Default::default() {
                    details.push(e.locality.to_string());
                }
                if details.is_empty() {
                    e.address.to_string()
                } else {
                    format!("{} ({})", e.address, details.join(", "))
                }
            })
            .collect();
        let endpoints =
            if endpoints.is_empty() { "no endpoints (RPCs will fail)".to_string() } else { endpoints.join(", ") };
        let h = &service.health_check;
        let health = match h.kind {
            HealthCheckKind::None => "no health checks".to_string(),
            _ => format!(
                "{} health checks every {} (timeout {}, down after {}, up after {})",
                h.kind,
                format_duration(h.interval),
                format_duration(h.timeout),
                h.unhealthy_threshold,
                h.healthy_threshold
            ),
        };
        let _ = writeln!(out, "  xds:///{} -> {}", service.name, endpoints);
        let _ = writeln!(
            out,
            "      {}, connect timeout {}, {}",
            service.lb_policy.as_str(),
            format_duration(service.connect_timeout),
            health
        );
    }
    for l in &registry.listeners {
        let tls = match &l.tls {
            Some(t) if t.client_ca.is_some() => " (mutual TLS)",
            Some(_) => " (TLS)",
            None => "",
        };
        let address = SocketAddr::new(l.address, l.port);
        let _ = writeln!(out, "  listener {} on {address}{tls}, domains {}", l.name, l.domains.join(","));
        for r in &l.routes {
            let headers: Vec<String> = r
                .headers
                .iter()
                .map(|h| match &h.exact {
                    Some(v) => format!("{}={v}", h.name),
                    None => format!("{} present", h.name),
                })
                .collect();
            let condition = if headers.is_empty() {
                r.prefix.clone()
            } else {
                format!("{} if {}", r.prefix, headers.join(" and "))
            };
            let target = match &r.target {
                RouteTarget::Service(s) => s.clone(),
                RouteTarget::Split(split) => {
                    let total: u64 = split.iter().map(|b| u64::from(b.weight)).sum();
                    split
                        .iter()
                        .map(|b| format!("{} {:.0}%", b.service, 100.0 * b.weight as f64 / total.max(1) as f64))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let _ = writeln!(out, "      {condition} -> {target}");
        }
    }
    for secret in &registry.secrets {
        let what = match &secret.kind {
            SecretKind::TlsCertificate { certificate_chain, .. } => {
                format!("tls_certificate from {}", certificate_chain.path.display())
            }
            SecretKind::ValidationContext { trusted_ca } => {
                format!("validation_context from {}", trusted_ca.path.display())
            }
        };
        let _ = writeln!(out, "  secret {}: {what}", secret.name);
    }
    for warning in registry.warnings() {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "versions: {}", versions(snapshot));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use tokio::task::JoinHandle;
    use xds_core::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};

    fn registry(text: &str) -> Registry {
        Registry::parse(text).expect("valid registry")
    }

    /// Waits (at most 5 s) for a cancelled controller task: it must stop, without a panic.
    async fn joined<T>(task: JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the controller and its checkers stop when cancelled")
            .expect("no panic")
    }

    /// Polls `ok` every 10 ms for at most 5 s (for loaded CI hosts; it normally takes far less).
    async fn eventually(mut ok: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn report_joins_causes_once() {
        let err = Error::Bind {
            addr: "127.0.0.1:1".parse().expect("addr"),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(report(&err), "cannot listen on 127.0.0.1:1: address in use");
    }

    #[test]
    fn changes_are_summarised() {
        let a = registry("services:\n  - {name: a, endpoints: [10.0.0.1:1]}\n  - {name: b, endpoints: []}\n");
        let b = registry(
            "services:\n  - {name: a, endpoints: [10.0.0.1:2]}\n  - {name: c, endpoints: []}\nlisteners:\n  - {name: l, port: 80, routes: [{service: c}]}\n",
        );
        assert_eq!(changes(&a, &b), "added service c; removed service b; changed service a; added listener l");
        assert_eq!(changes(&a, &a), "nothing changed");
    }

    #[tokio::test]
    async fn apply_serves_every_node_the_same_snapshot() {
        let cache = new_cache();
        let cancel = CancellationToken::new();
        let mut controller = Controller::new(cache.clone(), Path::new("r.yaml"), false, &cancel);
        controller.apply(registry("services:\n  - {name: a, endpoints: [10.0.0.1:1]}\n")).expect("published");
        let node = xds_core::envoy::config::core::v3::Node { id: "anyone".into(), ..Default::default() };
        assert_eq!(cache.group_of(&node), GROUP);
        let snapshot = cache.snapshot(GROUP).expect("snapshot");
        assert!(snapshot.get(type_url::LISTENER).is_some_and(|s| s.contains("a")));
        assert_eq!(controller.health().checker_count(), 0, "health checks are off");
        controller.shutdown().await;
    }

    #[test]
    fn check_describes_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, include_str!("../registry.yaml")).expect("write");
        let out = check(&path).expect("valid");
        assert!(out.contains("xds:///myservice -> 127.0.0.1:50051, 127.0.0.1:50052"), "{out}");
        assert!(out.contains("round_robin, connect timeout 1s, tcp health checks every 2s"), "{out}");
        std::fs::write(&path, "services: [{name: a, endpoints: [x]}]\n").expect("write");
        let err = check(&path).expect_err("invalid");
        assert!(report(&err).starts_with(&format!("{}:1:", path.display())), "{}", report(&err));

        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-full.yaml");
        let out = check(&full).unwrap_or_else(|e| panic!("{}", report(&e)));
        assert!(out.contains("listener ingress on 0.0.0.0:10000"), "{out}");
        assert!(out.contains("payments 90%, payments-canary 10%"), "{out}");
        assert!(out.contains("grpc(payments.v1.Payments) health checks every 5s"), "{out}");
        assert!(!out.contains("warning"), "{out}");
    }

    /// Edits in place and by rename reach the cache; a broken edit does not replace the last
    /// good configuration. (The poll interval is 20 ms; the 5 s budget is for loaded CI hosts.)
    #[tokio::test]
    async fn controller_follows_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "services: [{name: a, endpoints: [10.0.0.1:1]}]\n").expect("write");
        let mut watcher = FileWatcher::new(&path);
        let first = watcher.load().expect("valid");
        let cache = new_cache();
        let cancel = CancellationToken::new();
        let mut controller = Controller::new(cache.clone(), &path, false, &cancel);
        controller.apply(first).expect("published");
        let task = tokio::spawn(controller.run(watcher, Duration::from_millis(20), cancel.clone()));

        let listeners = |cache: &SnapshotCache| -> Vec<String> {
            cache
                .snapshot(GROUP)
                .and_then(|s| s.get(type_url::LISTENER).cloned())
                .map(|s| s.names().map(|n| n.to_string()).collect())
                .unwrap_or_default()
        };

        // In place.
        std::fs::write(&path, "services: [{name: b, endpoints: [10.0.0.1:1]}]\n").expect("write");
        assert!(eventually(|| listeners(&cache) == ["b"]).await, "{:?}", listeners(&cache));

        // Broken: the last good configuration stays.
        std::fs::write(&path, "services: [{name: c, endpoints: [nope]}]\n").expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(listeners(&cache), ["b"]);

        // Replaced by rename.
        let tmp = dir.path().join("r.yaml.new");
        std::fs::write(&tmp, "services: [{name: d, endpoints: [10.0.0.1:1]}]\n").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert!(eventually(|| listeners(&cache) == ["d"]).await, "{:?}", listeners(&cache));

        cancel.cancel();
        joined(task).await;
    }

    /// A renewed certificate is re-read and served without a registry edit.
    #[tokio::test]
    async fn controller_rereads_changed_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = |serial: &str| format!("-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n");
        std::fs::write(dir.path().join("ca.pem"), cert("one")).expect("write");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "services: []\nsecrets:\n  - {name: ca, validation_context: {trusted_ca: ca.pem}}\n")
            .expect("write");
        let mut watcher = FileWatcher::new(&path);
        let first = watcher.load().expect("valid");
        let cache = new_cache();
        let cancel = CancellationToken::new();
        let mut controller = Controller::new(cache.clone(), &path, false, &cancel);
        controller.apply(first).expect("published");
        let task = tokio::spawn(controller.run(watcher, Duration::from_millis(20), cancel.clone()));
        let ca = |cache: &SnapshotCache| -> String {
            use xds_core::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
            let secret: Option<Secret> = cache
                .snapshot(GROUP)
                .and_then(|s| s.get(type_url::SECRET).and_then(|set| set.get("ca")).and_then(|r| r.decode().ok()));
            match secret.and_then(|s| s.r#type) {
                Some(secret::Type::ValidationContext(v)) => format!("{:?}", v.trusted_ca),
                other => format!("{other:?}"),
            }
        };
        assert!(ca(&cache).contains("one"), "{}", ca(&cache));
        std::fs::write(dir.path().join("ca.pem"), cert("two")).expect("write");
        assert!(eventually(|| ca(&cache).contains("two")).await, "{}", ca(&cache));
        cancel.cancel();
        joined(task).await;
    }

    #[tokio::test]
    async fn invalid_registry_fails_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "services:\n  - name: a\n    endpoints: [1.2.3.4]\n").expect("write");
        let err = serve(&path, "127.0.0.1:0".parse().expect("addr"), async {}).await.expect_err("invalid registry");
        assert!(report(&err).starts_with(&format!("{}:3:", path.display())), "{}", report(&err));
    }

    // ---- health checks, against real loopback listeners -----------------------------------

    /// A TCP backend on loopback that accepts and drops connections until stopped; it can be
    /// started again on the same port.
    struct TcpBackend {
        addr: SocketAddr,
        task: Option<JoinHandle<()>>,
    }

    impl TcpBackend {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            Self { addr, task: Some(Self::accept(listener)) }
        }

        fn accept(listener: TcpListener) -> JoinHandle<()> {
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    drop(conn);
                }
            })
        }

        async fn stop(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
                let _ = task.await; // the listener is closed once the task is gone
            }
        }

        async fn restart(&mut self) {
            let listener = TcpListener::bind(self.addr).await.expect("rebind the same port");
            self.task = Some(Self::accept(listener));
        }
    }

    impl Drop for TcpBackend {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }

    /// The published health of each endpoint of service `name`, by port.
    fn published(cache: &SnapshotCache, name: &str) -> Vec<(u16, HealthStatus)> {
        use xds_core::envoy::config::core::v3::{address, socket_address};
        let Some(cla) = cache
            .snapshot(GROUP)
            .and_then(|s| s.get(type_url::ENDPOINT).and_then(|set| set.get(name).cloned()))
            .and_then(|r| r.decode::<ClusterLoadAssignment>().ok())
        else {
            return Vec::new();
        };
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| {
                let port = match &e.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                        match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                            Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
                                Some(socket_address::PortSpecifier::PortValue(p)) => p as u16,
                                _ => 0,
                            },
                            _ => 0,
                        }
                    }
                    _ => 0,
                };
                (port, HealthStatus::try_from(e.health_status).unwrap_or(HealthStatus::Unknown))
            })
            .collect()
    }

    const FAST: &str = "health_check: {interval: 50ms, timeout: 50ms, healthy_threshold: 2, unhealthy_threshold: 2}";

    fn service_yaml(name: &str, ports: &[u16], health: &str) -> String {
        let endpoints: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        format!("  - name: {name}\n    endpoints: [{}]\n    {health}\n", endpoints.join(", "))
    }

    /// Runs a controller (health checks on) over a registry file in a temporary folder.
    struct Harness {
        cache: Arc<SnapshotCache>,
        cancel: CancellationToken,
        task: Option<JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        async fn start(services: &str, health_checks: bool) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("r.yaml");
            std::fs::write(&path, format!("services:\n{services}")).expect("write");
            let mut watcher = FileWatcher::new(&path);
            let registry = watcher.load().expect("valid");
            let cache = new_cache();
            let cancel = CancellationToken::new();
            let mut controller = Controller::new(cache.clone(), &path, health_checks, &cancel);
            controller.apply(registry).expect("consistent");
            let task = tokio::spawn(controller.run(watcher, Duration::from_millis(20), cancel.clone()));
            Self { cache, cancel, task: Some(task), _dir: dir }
        }

        async fn expect(&self, name: &str, want: &[(u16, HealthStatus)], what: &str) {
            let ok = eventually(|| published(&self.cache, name) == want).await;
            assert!(ok, "{what}: published {:?}, expected {want:?}", published(&self.cache, name));
        }

        async fn stop(mut self) {
            self.cancel.cancel();
            if let Some(task) = self.task.take() {
                joined(task).await;
            }
        }
    }

    use HealthStatus::{Healthy as H, Unhealthy as U};

    /// A backend that stops accepting connections is published UNHEALTHY within
    /// interval x threshold (plus scheduling slack), and HEALTHY again once it recovers.
    #[tokio::test]
    async fn tcp_check_marks_a_dead_endpoint_unhealthy_and_back() {
        let a = TcpBackend::start().await;
        let mut b = TcpBackend::start().await;
        let (pa, pb) = (a.addr.port(), b.addr.port());
        let h = Harness::start(&service_yaml("svc", &[pa, pb], FAST), true).await;
        h.expect("svc", &[(pa, H), (pb, H)], "both up").await;

        b.stop().await;
        let started = std::time::Instant::now();
        h.expect("svc", &[(pa, H), (pb, U)], "b down").await;
        // 2 failures, 50 ms apart: well under a second, even on a loaded host.
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

        b.restart().await;
        h.expect("svc", &[(pa, H), (pb, H)], "b back").await;
        h.stop().await;
    }

    /// Every endpoint down: all are published HEALTHY (panic mode, see `crate::health`); as
    /// soon as one recovers, the truth is published again.
    #[tokio::test]
    async fn all_endpoints_down_fails_open() {
        let mut a = TcpBackend::start().await;
        let mut b = TcpBackend::start().await;
        let (pa, pb) = (a.addr.port(), b.addr.port());
        let h = Harness::start(&service_yaml("svc", &[pa, pb], FAST), true).await;
        h.expect("svc", &[(pa, H), (pb, H)], "both up").await;

        b.stop().await;
        h.expect("svc", &[(pa, H), (pb, U)], "b down").await;
        a.stop().await;
        // `b` stays down, so "all healthy" can only come from panic mode once `a` is marked.
        h.expect("svc", &[(pa, H), (pb, H)], "all down: panic mode publishes all").await;
        a.restart().await;
        h.expect("svc", &[(pa, H), (pb, U)], "a back: b is unhealthy again").await;
        h.stop().await;
    }

    /// `health_check: {kind: none}` and `--no-health-checks` publish dead endpoints healthy.
    #[tokio::test]
    async fn checks_can_be_turned_off() {
        let mut dead = TcpBackend::start().await;
        let alive = TcpBackend::start().await;
        let (pd, pa) = (dead.addr.port(), alive.addr.port());
        dead.stop().await;
        let services = format!(
            "{}{}",
            service_yaml("checked", &[pa, pd], FAST),
            service_yaml("unchecked", &[pa, pd], "health_check: {kind: none}")
        );
        let h = Harness::start(&services, true).await;
        h.expect("checked", &[(pa, H), (pd, U)], "checked service").await;
        assert_eq!(published(&h.cache, "unchecked"), [(pa, H), (pd, H)]);
        h.stop().await;

        let h = Harness::start(&services, false).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(published(&h.cache, "checked"), [(pa, H), (pd, H)], "--no-health-checks");
        h.stop().await;
    }

    /// A reload keeps the state of unchanged endpoints (no flap back to healthy) and checks
    /// new ones; changed check settings restart the checker.
    #[tokio::test]
    async fn reload_keeps_the_health_of_unchanged_endpoints() {
        let mut dead = TcpBackend::start().await;
        let alive = TcpBackend::start().await;
        let extra = TcpBackend::start().await;
        let (pd, pa, pe) = (dead.addr.port(), alive.addr.port(), extra.addr.port());
        dead.stop().await;

        let cache = new_cache();
        let cancel = CancellationToken::new();
        let mut controller = Controller::new(cache.clone(), Path::new("r.yaml"), true, &cancel);
        controller.apply(registry(&format!("services:\n{}", service_yaml("svc", &[pa, pd], FAST)))).expect("ok");
        assert_eq!(controller.health().checker_count(), 2);
        let table = controller.health().table();
        // Drive the controller by hand: wait for the dead endpoint to be marked.
        let marked = async {
            loop {
                let dirty = table.changed().await;
                controller.publish_health(dirty);
                if published(&cache, "svc") == [(pa, H), (pd, U)] {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), marked).await.expect("dead endpoint marked unhealthy");

        // Add an endpoint: the two others keep their checkers and their state.
        let next = registry(&format!("services:\n{}", service_yaml("svc", &[pa, pd, pe], FAST)));
        controller.apply(next).expect("ok");
        assert_eq!(published(&cache, "svc"), [(pa, H), (pd, U), (pe, H)], "no flap on reload");
        assert_eq!(controller.health().table().status("svc", dead.addr), Health::Unhealthy);
        assert_eq!(controller.health().checker_count(), 3);

        // Other check settings: that service's checkers restart from "unknown".
        let slower = FAST.replace("interval: 50ms", "interval: 60ms");
        controller.apply(registry(&format!("services:\n{}", service_yaml("svc", &[pa, pd, pe], &slower)))).expect("ok");
        assert_eq!(controller.health().table().status("svc", dead.addr), Health::Unknown);
        assert_eq!(published(&cache, "svc"), [(pa, H), (pd, H), (pe, H)]);

        // Removing the service stops its checkers.
        controller.apply(registry("services: []\n")).expect("ok");
        assert_eq!(controller.health().checker_count(), 0);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), controller.shutdown()).await.expect("checkers stop");
    }

    /// The gRPC health protocol: only SERVING is healthy; NOT_SERVING marks the endpoint
    /// unhealthy, SERVING again brings it back.
    #[tokio::test]
    async fn grpc_check_follows_the_serving_status() {
        async fn health_server(
            service: &'static str,
        ) -> (SocketAddr, tonic_health::server::HealthReporter, CancellationToken, JoinHandle<()>) {
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let stop = CancellationToken::new();
            let token = stop.clone();
            let task = tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                    .await;
            });
            (addr, reporter, stop, task)
        }

        let (a, _ra, stop_a, task_a) = health_server("pay.v1.Pay").await;
        let (b, mut rb, stop_b, task_b) = health_server("pay.v1.Pay").await;
        let health = "health_check: {kind: grpc, service_name: pay.v1.Pay, interval: 50ms, timeout: 50ms, healthy_threshold: 2, unhealthy_threshold: 2}";
        let h = Harness::start(&service_yaml("pay", &[a.port(), b.port()], health), true).await;
        h.expect("pay", &[(a.port(), H), (b.port(), H)], "both serving").await;

        rb.set_service_status("pay.v1.Pay", tonic_health::ServingStatus::NotServing).await;
        h.expect("pay", &[(a.port(), H), (b.port(), U)], "b not serving").await;
        rb.set_service_status("pay.v1.Pay", tonic_health::ServingStatus::Serving).await;
        h.expect("pay", &[(a.port(), H), (b.port(), H)], "b serving again").await;

        // An unknown service name is a failure too (NOT_FOUND).
        rb.clear_service_status("pay.v1.Pay").await;
        h.expect("pay", &[(a.port(), H), (b.port(), U)], "b forgot the service").await;

        h.stop().await;
        for (stop, task) in [(stop_a, task_a), (stop_b, task_b)] {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("server stops").expect("no panic");
        }
    }
}
