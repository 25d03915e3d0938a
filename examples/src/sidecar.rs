//! The sidecar itself: registry file → snapshot → [`SnapshotCache`] → [`XdsServer`], with hot
//! reload, logging and graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};
use xds_cache::{Snapshot, SnapshotCache};
use xds_core::{type_url, SingleGroup};
use xds_server::XdsServer;

use crate::cli::LogFormat;
use crate::registry::{Registry, RegistryError};
use crate::reload::{FileEvent, FileWatcher, DEFAULT_POLL_INTERVAL};
use crate::resources;

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
    /// The xDS server failed while serving.
    #[error("the xDS server failed")]
    Server(#[source] xds_server::Error),
    /// The log filter or the logger could not be set up.
    #[error("cannot set up logging")]
    Logging(#[source] Box<dyn std::error::Error + Send + Sync>),
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

/// Builds the registry's snapshot, checks it, publishes it and logs what is now served.
/// `previous` (the registry served so far) makes the log say what changed.
pub fn publish(
    cache: &SnapshotCache,
    path: &Path,
    registry: &Registry,
    previous: Option<&Registry>,
) -> Result<(), Error> {
    let snapshot =
        resources::snapshot(registry).map_err(|source| Error::Inconsistent { path: path.to_owned(), source })?;
    for service in registry.services.iter().filter(|s| s.endpoints.is_empty()) {
        warn!(service = %service.name, "service has no endpoints: its clients' RPCs fail until some are added");
    }
    let versions = versions(&snapshot);
    cache.set_snapshot(GROUP, snapshot);
    let resources = registry.services.len() * 4;
    match previous {
        None => info!(
            file = %path.display(),
            services = registry.services.len(),
            endpoints = registry.endpoint_count(),
            resources,
            %versions,
            "registry loaded"
        ),
        Some(previous) => {
            let changes = changes(previous, registry);
            info!(
                file = %path.display(),
                services = registry.services.len(),
                endpoints = registry.endpoint_count(),
                resources,
                %versions,
                %changes,
                "registry reloaded"
            )
        }
    }
    Ok(())
}

/// `LDS=… RDS=… CDS=… EDS=…`: the version of each type, as clients see them.
fn versions(snapshot: &Snapshot) -> String {
    [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT]
        .iter()
        .map(|t| format!("{}={}", type_url::short_name(t), snapshot.version(t).unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which services were added, removed or got other endpoints, for the reload log.
fn changes(previous: &Registry, next: &Registry) -> String {
    let before: BTreeMap<&str, _> = previous.services.iter().map(|s| (s.name.as_str(), &s.endpoints)).collect();
    let after: BTreeMap<&str, _> = next.services.iter().map(|s| (s.name.as_str(), &s.endpoints)).collect();
    let mut parts = Vec::new();
    let list = |names: Vec<&str>| names.join(",");
    let added: Vec<&str> = after.keys().filter(|n| !before.contains_key(*n)).copied().collect();
    let removed: Vec<&str> = before.keys().filter(|n| !after.contains_key(*n)).copied().collect();
    let changed: Vec<&str> =
        after.iter().filter(|(n, e)| before.get(*n).is_some_and(|old| old != *e)).map(|(n, _)| *n).collect();
    if !added.is_empty() {
        parts.push(format!("added {}", list(added)));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", list(removed)));
    }
    if !changed.is_empty() {
        parts.push(format!("endpoints changed for {}", list(changed)));
    }
    if parts.is_empty() {
        "no service changed".to_string()
    } else {
        parts.join("; ")
    }
}

/// Follows the registry file until `cancel` fires: polls it every `interval` and publishes
/// each valid new version; an invalid one is logged and the last good configuration stays.
pub async fn run_reloader(
    mut watcher: FileWatcher,
    cache: Arc<SnapshotCache>,
    mut current: Registry,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // File system calls block; a slow or network file system must not stall a runtime worker.
        let polled = tokio::task::spawn_blocking(move || {
            let event = watcher.poll();
            (watcher, event)
        })
        .await;
        let event;
        (watcher, event) = match polled {
            Ok(polled) => polled,
            Err(err) => {
                error!(error = %err, "the registry watcher failed; reloading is disabled");
                break;
            }
        };
        let path = watcher.path();
        match event {
            None => {}
            Some(FileEvent::Changed(Ok(registry))) => match publish(&cache, path, &registry, Some(&current)) {
                Ok(()) => current = registry,
                Err(err) => error!(
                    error = %report(&err),
                    "rejected registry file; still serving the last good configuration"
                ),
            },
            Some(FileEvent::Changed(Err(err))) => error!(
                error = %report(&err),
                "rejected registry file; still serving the last good configuration"
            ),
            Some(FileEvent::Unavailable(err)) => warn!(
                file = %path.display(),
                error = %err,
                "registry file unavailable; still serving the last good configuration"
            ),
        }
    }
    debug!("registry watcher stopped");
}

/// Loads the registry, serves it on `addr` and reloads it on change, until `shutdown`
/// completes. An invalid registry at start-up is an error: nothing is served.
pub async fn serve(
    config: &Path,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut watcher = FileWatcher::new(config);
    let registry = watcher.load()?;
    let cache = new_cache();
    publish(&cache, config, &registry, None)?;

    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(
        addr = %local,
        "xds-sidecar is serving; print a client bootstrap with `xds-sidecar bootstrap grpc --xds-addr {local}`"
    );

    let cancel = CancellationToken::new();
    let reloader = tokio::spawn(
        run_reloader(watcher, cache.clone(), registry, DEFAULT_POLL_INTERVAL, cancel.clone())
            .instrument(tracing::info_span!("reload", file = %config.display())),
    );
    let served = XdsServer::builder().build(cache).serve_with_listener(listener, shutdown).await;
    cancel.cancel();
    if let Err(err) = reloader.await {
        error!(error = %err, "the registry watcher task failed");
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
    let mut out = format!(
        "{}: OK, {} service(s), {} endpoint(s)\n",
        path.display(),
        registry.services.len(),
        registry.endpoint_count()
    );
    for service in &registry.services {
        let endpoints: Vec<String> = service.endpoints.iter().map(|e| e.to_string()).collect();
        let endpoints =
            if endpoints.is_empty() { "no endpoints (RPCs will fail)".to_string() } else { endpoints.join(", ") };
        out.push_str(&format!("  xds:///{} -> {}\n", service.name, endpoints));
    }
    out.push_str(&format!("versions: {}\n", versions(&snapshot)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> Registry {
        Registry::parse(text).expect("valid registry")
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
        let b = registry("services:\n  - {name: a, endpoints: [10.0.0.1:2]}\n  - {name: c, endpoints: []}\n");
        assert_eq!(changes(&a, &b), "added c; removed b; endpoints changed for a");
        assert_eq!(changes(&a, &a), "no service changed");
    }

    #[test]
    fn publish_serves_every_node_the_same_snapshot() {
        let cache = new_cache();
        let r = registry("services:\n  - {name: a, endpoints: [10.0.0.1:1]}\n");
        publish(&cache, Path::new("r.yaml"), &r, None).expect("published");
        let node = xds_core::envoy::config::core::v3::Node { id: "anyone".into(), ..Default::default() };
        assert_eq!(cache.group_of(&node), GROUP);
        let snapshot = cache.snapshot(GROUP).expect("snapshot");
        assert!(snapshot.get(type_url::LISTENER).is_some_and(|s| s.contains("a")));
    }

    #[test]
    fn check_describes_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, include_str!("../registry.yaml")).expect("write");
        let out = check(&path).expect("valid");
        assert!(out.contains("xds:///myservice -> 127.0.0.1:50051, 127.0.0.1:50052"), "{out}");
        std::fs::write(&path, "services: [{name: a, endpoints: [x]}]\n").expect("write");
        let err = check(&path).expect_err("invalid");
        assert!(report(&err).starts_with(&format!("{}:1:", path.display())), "{}", report(&err));
    }

    /// Edits in place and by rename reach the cache; a broken edit does not replace the last
    /// good configuration. (The poll interval is 20 ms; the 5 s budget is for loaded CI hosts.)
    #[tokio::test]
    async fn reloader_follows_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "services: [{name: a, endpoints: [10.0.0.1:1]}]\n").expect("write");
        let mut watcher = FileWatcher::new(&path);
        let first = watcher.load().expect("valid");
        let cache = new_cache();
        publish(&cache, &path, &first, None).expect("published");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_reloader(watcher, cache.clone(), first, Duration::from_millis(20), cancel.clone()));

        let listeners = |cache: &SnapshotCache| -> Vec<String> {
            cache
                .snapshot(GROUP)
                .and_then(|s| s.get(type_url::LISTENER).cloned())
                .map(|s| s.names().map(|n| n.to_string()).collect())
                .unwrap_or_default()
        };
        async fn eventually(mut ok: impl FnMut() -> bool) -> bool {
            for _ in 0..500 {
                if ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }

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
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the reloader stops when cancelled")
            .expect("no panic");
    }

    #[tokio::test]
    async fn invalid_registry_fails_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "services:\n  - name: a\n    endpoints: [1.2.3.4]\n").expect("write");
        let err = serve(&path, "127.0.0.1:0".parse().expect("addr"), async {}).await.expect_err("invalid registry");
        assert!(report(&err).starts_with(&format!("{}:3:", path.display())), "{}", report(&err));
    }
}
