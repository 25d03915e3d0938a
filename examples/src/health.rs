//! Active health checking of the registry's endpoints.
//!
//! # What is checked
//!
//! Each endpoint of a service whose `health_check.kind` is not `none` gets one checker task.
//! Every `interval` it runs one check, bounded by `timeout` (at most `interval`, which the
//! registry enforces, so checks start on a fixed beat):
//!
//! - `tcp` (the default): a TCP connection is opened and closed;
//! - `grpc`: `grpc.health.v1.Health/Check` is called with `service_name`; only `SERVING`
//!   counts as a success (the standard health protocol; the connection is kept between checks).
//!
//! # Thresholds
//!
//! An endpoint starts *unknown* and is published healthy, so a restarted sidecar never removes
//! traffic before it knows anything. The first check decides at once (so an endpoint that is
//! down at start-up is marked within one `timeout`); after that, `unhealthy_threshold`
//! consecutive failures mark it unhealthy and `healthy_threshold` consecutive successes mark it
//! healthy again, as Envoy's active health checker does. With checks starting every `interval`,
//! a failing endpoint is published `UNHEALTHY` within `interval x unhealthy_threshold`.
//! Transitions are logged at `info` (the first "healthy" at `debug`, to keep start-up quiet).
//!
//! # Publishing, and when every endpoint of a service fails
//!
//! An endpoint's state goes into its `LbEndpoint.health_status` (`HEALTHY` or `UNHEALTHY`);
//! gRPC clients stop picking an `UNHEALTHY` endpoint and Envoy stops routing to it.
//!
//! When *every* checked endpoint of a service is unhealthy, the sidecar publishes them all as
//! `HEALTHY` and logs a warning ("panic mode"), until one recovers. The reference is Envoy's
//! panic threshold (`healthy_panic_threshold`, 50% by default): below it Envoy stops trusting
//! health and balances over all hosts, on the grounds that sending traffic to possibly-bad hosts
//! beats sending it nowhere. With 0% healthy Envoy would be in panic mode anyway, so for Envoy
//! the choice changes nothing. Proxyless gRPC clients have no panic mode: given only
//! `UNHEALTHY` endpoints they fail every RPC with `UNAVAILABLE`. Failing open gives them
//! Envoy's behaviour instead. When every endpoint looks down, the likeliest causes are the
//! checker's own view (a network partition between sidecar and backends, a backend that does
//! not implement the gRPC health service, a firewall) rather than a dead fleet, and if the
//! fleet really is dead the RPCs fail either way, with the real connection error. Above 0%
//! the true statuses are published, and Envoy applies its own panic threshold on top.
//!
//! # Design
//!
//! [`HealthMonitor`] owns the checker tasks (a [`TaskTracker`] and one child
//! [`CancellationToken`] each, so they end with the sidecar) and a shared [`HealthTable`].
//! Checkers write only state *changes* into the table, which marks the service dirty and wakes
//! the sidecar's controller task; that task, which also applies registry reloads, rebuilds the
//! ClusterLoadAssignments of the dirty services and publishes them alone
//! ([`SnapshotCache::update_resources`](xds_cache::SnapshotCache::update_resources)). One task
//! publishes everything, so a health update can never overwrite a newer reload. On a reload,
//! [`HealthMonitor::sync`] keeps the checkers (and the state) of endpoints whose service,
//! address and check settings are unchanged and restarts only the others; a table entry
//! carries the id of the checker that owns it, so a late write from a stopped checker is
//! ignored. At most [`MAX_CONCURRENT_CHECKS`] checks run at once.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};
use xds_core::envoy::config::core::v3::HealthStatus;

use crate::registry::{HealthCheck, HealthCheckKind, Registry, Service};

/// The most health checks in flight at once, over all endpoints.
pub const MAX_CONCURRENT_CHECKS: usize = 256;

/// What the checks of one endpoint have concluded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet (published healthy).
    Unknown,
    /// The last checks passed.
    Healthy,
    /// The last checks failed.
    Unhealthy,
}

/// Counts consecutive results against the thresholds of a [`HealthCheck`]; no I/O.
#[derive(Debug, Clone)]
pub struct HealthState {
    status: Health,
    successes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl HealthState {
    /// An endpoint not checked yet.
    pub fn new(check: &HealthCheck) -> Self {
        Self {
            status: Health::Unknown,
            successes: 0,
            failures: 0,
            healthy_threshold: check.healthy_threshold.max(1),
            unhealthy_threshold: check.unhealthy_threshold.max(1),
        }
    }

    /// The current conclusion.
    pub fn status(&self) -> Health {
        self.status
    }

    /// Records one check result; returns the new status when it changed.
    pub fn record(&mut self, success: bool) -> Option<Health> {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = match self.status {
            // The first result decides (see the module docs).
            Health::Unknown if success => Health::Healthy,
            Health::Unknown => Health::Unhealthy,
            Health::Healthy if self.failures >= self.unhealthy_threshold => Health::Unhealthy,
            Health::Unhealthy if self.successes >= self.healthy_threshold => Health::Healthy,
            current => current,
        };
        (next != self.status).then(|| {
            self.status = next;
            next
        })
    }
}

/// The health published for a service's endpoints (in the service's order), and whether the
/// service is in panic mode: every endpoint unhealthy, so all are published healthy (see the
/// module docs).
pub fn published(statuses: &[Health]) -> (Vec<HealthStatus>, bool) {
    let panic = !statuses.is_empty() && statuses.iter().all(|s| *s == Health::Unhealthy);
    let published = statuses
        .iter()
        .map(|s| match s {
            Health::Unhealthy if !panic => HealthStatus::Unhealthy,
            _ => HealthStatus::Healthy,
        })
        .collect();
    (published, panic)
}

/// One checked endpoint: a service and an address (the same address in two services is
/// checked twice, as each service may check it differently).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// The service.
    pub service: String,
    /// The endpoint's address.
    pub address: SocketAddr,
}

#[derive(Debug)]
struct Entry {
    checker: u64,
    status: Health,
}

#[derive(Debug, Default)]
struct TableInner {
    entries: HashMap<EndpointKey, Entry>,
    dirty: BTreeSet<String>,
}

/// The latest health of every checked endpoint, shared by the checkers (writers) and the
/// controller (reader). The lock is held only to read or write a few fields, never across
/// `.await`.
#[derive(Debug, Default)]
pub struct HealthTable {
    inner: Mutex<TableInner>,
    changed: Notify,
}

impl HealthTable {
    fn lock(&self) -> MutexGuard<'_, TableInner> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The health of one endpoint ([`Health::Unknown`] when it is not checked).
    pub fn status(&self, service: &str, address: SocketAddr) -> Health {
        let key = EndpointKey { service: service.to_string(), address };
        self.lock().entries.get(&key).map_or(Health::Unknown, |e| e.status)
    }

    /// Records a change decided by checker `checker`; ignored when that checker no longer owns
    /// the endpoint. Marks the service dirty and wakes the controller.
    fn set(&self, key: &EndpointKey, checker: u64, status: Health) -> bool {
        let mut inner = self.lock();
        match inner.entries.get_mut(key) {
            Some(entry) if entry.checker == checker => entry.status = status,
            _ => return false,
        }
        inner.dirty.insert(key.service.clone());
        drop(inner);
        self.changed.notify_one();
        true
    }

    fn insert(&self, key: EndpointKey, checker: u64) {
        self.lock().entries.insert(key, Entry { checker, status: Health::Unknown });
    }

    fn remove(&self, key: &EndpointKey) {
        self.lock().entries.remove(key);
    }

    /// Takes the services whose endpoints changed since the last call.
    pub fn take_dirty(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.lock().dirty)
    }

    /// Puts services back in the dirty set (when publishing them failed).
    pub fn mark_dirty(&self, services: impl IntoIterator<Item = String>) {
        self.lock().dirty.extend(services);
    }

    /// Waits until some endpoint changed, then takes the dirty services (possibly none, when a
    /// reload already took them). Cancel-safe.
    pub async fn changed(&self) -> BTreeSet<String> {
        self.changed.notified().await;
        self.take_dirty()
    }
}

struct Running {
    check: HealthCheck,
    checker: u64,
    cancel: CancellationToken,
}

/// What [`HealthMonitor::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Checkers started (new endpoints, or changed check settings).
    pub started: usize,
    /// Checkers stopped (endpoints removed, or changed check settings).
    pub stopped: usize,
    /// Checkers kept with their state.
    pub kept: usize,
}

/// Owns the checker tasks of the sidecar and the table they feed (see the module docs).
pub struct HealthMonitor {
    enabled: bool,
    table: Arc<HealthTable>,
    checkers: HashMap<EndpointKey, Running>,
    next_checker: u64,
    limiter: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor").field("enabled", &self.enabled).field("checkers", &self.checkers.len()).finish()
    }
}

impl HealthMonitor {
    /// A monitor whose checkers stop when `parent` is cancelled. With `enabled` false it
    /// checks nothing and publishes every endpoint healthy (`--no-health-checks`).
    pub fn new(enabled: bool, parent: &CancellationToken) -> Self {
        Self {
            enabled,
            table: Arc::default(),
            checkers: HashMap::new(),
            next_checker: 0,
            limiter: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
            tracker: TaskTracker::new(),
            cancel: parent.child_token(),
        }
    }

    /// The table the checkers write to.
    pub fn table(&self) -> Arc<HealthTable> {
        self.table.clone()
    }

    /// The number of running checkers.
    pub fn checker_count(&self) -> usize {
        self.checkers.len()
    }

    fn checked(&self, service: &Service) -> bool {
        self.enabled && service.health_check.enabled()
    }

    /// The health that would be published for `service`'s endpoints once [`sync`](Self::sync)
    /// has run for a registry holding it: the table's state for endpoints whose checker is kept,
    /// unknown for the others. Returns the status per address and whether the service is in
    /// panic mode.
    pub fn published(&self, service: &Service) -> (HashMap<SocketAddr, HealthStatus>, bool) {
        if !self.checked(service) {
            return (service.addresses().map(|a| (a, HealthStatus::Healthy)).collect(), false);
        }
        let statuses: Vec<Health> = {
            let inner = self.table.lock();
            service
                .endpoints
                .iter()
                .map(|e| {
                    let key = EndpointKey { service: service.name.clone(), address: e.address };
                    match (self.checkers.get(&key), inner.entries.get(&key)) {
                        (Some(run), Some(entry))
                            if run.check == service.health_check && run.checker == entry.checker =>
                        {
                            entry.status
                        }
                        _ => Health::Unknown,
                    }
                })
                .collect()
        };
        let (published, panic) = published(&statuses);
        (service.addresses().zip(published).collect(), panic)
    }

    /// Starts and stops checkers so that exactly the checked endpoints of `registry` have one.
    /// Endpoints whose service, address and check settings are unchanged keep their checker and
    /// their state.
    pub fn sync(&mut self, registry: &Registry) -> SyncSummary {
        let mut wanted: HashMap<EndpointKey, &HealthCheck> = HashMap::new();
        for service in registry.services.iter().filter(|s| self.checked(s)) {
            for address in service.addresses() {
                wanted.insert(EndpointKey { service: service.name.clone(), address }, &service.health_check);
            }
        }
        let mut summary = SyncSummary::default();
        let table = self.table.clone();
        self.checkers.retain(|key, running| {
            let keep = wanted.get(key).is_some_and(|check| **check == running.check);
            if keep {
                summary.kept += 1;
            } else {
                running.cancel.cancel();
                table.remove(key);
                summary.stopped += 1;
            }
            keep
        });
        for (key, check) in wanted {
            if !self.checkers.contains_key(&key) {
                self.start(key, check.clone());
                summary.started += 1;
            }
        }
        summary
    }

    fn start(&mut self, key: EndpointKey, check: HealthCheck) {
        self.next_checker += 1;
        let checker = self.next_checker;
        let cancel = self.cancel.child_token();
        self.table.insert(key.clone(), checker);
        let span = tracing::info_span!("health", service = %key.service, endpoint = %key.address, kind = %check.kind);
        let task =
            run_checker(key.clone(), check.clone(), checker, self.table.clone(), self.limiter.clone(), cancel.clone());
        self.tracker.spawn(task.instrument(span));
        self.checkers.insert(key, Running { check, checker, cancel });
    }

    /// Stops every checker and waits (at most `grace`) for them to end.
    pub async fn shutdown(self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            warn!(remaining = self.tracker.len(), "health checkers did not stop in time");
        }
    }
}

/// Checks one endpoint every `check.interval` until cancelled, and writes state changes into
/// the table.
async fn run_checker(
    key: EndpointKey,
    check: HealthCheck,
    checker: u64,
    table: Arc<HealthTable>,
    limiter: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut probe = Probe::new(&check.kind, key.address, check.timeout);
    let mut state = HealthState::new(&check);
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            result = async {
                // Never closed; a closed semaphore would only lift the bound.
                let _permit = limiter.acquire().await.ok();
                match tokio::time::timeout(check.timeout, probe.check()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {:?}", check.timeout)),
                }
            } => result,
        };
        let before = state.status();
        match (state.record(result.is_ok()), &result) {
            // A newer checker owns the endpoint now (a reload replaced this one).
            (Some(status), _) if !table.set(&key, checker, status) => break,
            (Some(Health::Healthy), _) if before == Health::Unknown => debug!("endpoint is healthy"),
            (Some(Health::Healthy), _) => info!(successes = state.successes, "endpoint is healthy again"),
            (Some(_), Err(error)) => info!(failures = state.failures, %error, "endpoint is unhealthy"),
            (None, Err(error)) => debug!(failures = state.failures, %error, "health check failed"),
            _ => {}
        }
    }
    debug!("health checker stopped");
}

/// One kind of check against one endpoint.
enum Probe {
    Tcp(SocketAddr),
    Grpc { channel: Option<tonic::transport::Channel>, address: SocketAddr, service: String, timeout: Duration },
}

impl Probe {
    fn new(kind: &HealthCheckKind, address: SocketAddr, timeout: Duration) -> Self {
        match kind {
            HealthCheckKind::Grpc { service_name } => {
                Self::Grpc { channel: None, address, service: service_name.clone(), timeout }
            }
            _ => Self::Tcp(address),
        }
    }

    /// One check; the caller bounds its time.
    async fn check(&mut self) -> Result<(), String> {
        match self {
            Self::Tcp(address) => {
                tokio::net::TcpStream::connect(*address).await.map(drop).map_err(|e| format!("cannot connect: {e}"))
            }
            Self::Grpc { channel, address, service, timeout } => {
                let channel = match channel {
                    Some(channel) => channel.clone(),
                    None => {
                        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                            .map_err(|e| format!("invalid endpoint: {e}"))?
                            .connect_timeout(*timeout);
                        channel.insert(endpoint.connect_lazy()).clone()
                    }
                };
                grpc_health_check(channel, service).await
            }
        }
    }
}

/// The messages of `grpc.health.v1` (`grpc/health/v1/health.proto`), written out by hand: two
/// one-field messages do not justify generating code.
pub mod proto {
    /// `grpc.health.v1.HealthCheckRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckRequest {
        /// The service to ask about; empty for the whole server.
        #[prost(string, tag = "1")]
        pub service: String,
    }

    /// `grpc.health.v1.HealthCheckResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckResponse {
        /// A [`ServingStatus`].
        #[prost(enumeration = "ServingStatus", tag = "1")]
        pub status: i32,
    }

    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ServingStatus {
        /// `UNKNOWN`.
        Unknown = 0,
        /// `SERVING`: the only healthy answer.
        Serving = 1,
        /// `NOT_SERVING`.
        NotServing = 2,
        /// `SERVICE_UNKNOWN` (only for `Watch`).
        ServiceUnknown = 3,
    }

    /// The method path of `Check`.
    pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
}

/// Calls `grpc.health.v1.Health/Check`; only `SERVING` is a success.
async fn grpc_health_check(channel: tonic::transport::Channel, service: &str) -> Result<(), String> {
    use proto::{HealthCheckRequest, HealthCheckResponse, ServingStatus, CHECK_PATH};
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| format!("cannot connect: {e}"))?;
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(CHECK_PATH);
    let request = tonic::Request::new(HealthCheckRequest { service: service.to_string() });
    let response = grpc.unary(request, path, codec).await.map_err(|status| match status.code() {
        tonic::Code::Unimplemented => "the endpoint does not implement grpc.health.v1.Health".to_string(),
        tonic::Code::NotFound => format!("the endpoint does not know the service {service:?}"),
        _ => format!("Check failed: {}: {}", status.code(), status.message()),
    })?;
    match ServingStatus::try_from(response.get_ref().status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("status {other:?}")),
        Err(_) => Err(format!("unknown status {}", response.get_ref().status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck { healthy_threshold: healthy, unhealthy_threshold: unhealthy, ..HealthCheck::default() }
    }

    #[test]
    fn first_result_decides_then_thresholds_apply() {
        let mut s = HealthState::new(&check(2, 3));
        assert_eq!(s.status(), Health::Unknown);
        assert_eq!(s.record(true), Some(Health::Healthy));
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None, "a success resets the failure count");
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(Health::Unhealthy));
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), None, "a failure resets the success count");
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(Health::Healthy));

        let mut s = HealthState::new(&check(2, 2));
        assert_eq!(s.record(false), Some(Health::Unhealthy), "down at start-up: marked at the first check");
    }

    #[test]
    fn all_unhealthy_fails_open() {
        use Health::*;
        assert_eq!(published(&[]), (vec![], false));
        assert_eq!(
            published(&[Healthy, Unhealthy, Unknown]),
            (vec![HealthStatus::Healthy, HealthStatus::Unhealthy, HealthStatus::Healthy], false)
        );
        assert_eq!(published(&[Unhealthy, Unhealthy]), (vec![HealthStatus::Healthy, HealthStatus::Healthy], true));
        assert_eq!(published(&[Unhealthy]), (vec![HealthStatus::Healthy], true));
        assert_eq!(published(&[Unhealthy, Unknown]), (vec![HealthStatus::Unhealthy, HealthStatus::Healthy], false));
    }

    #[test]
    fn stale_checkers_cannot_write() {
        let table = HealthTable::default();
        let key = EndpointKey { service: "a".into(), address: "127.0.0.1:1".parse().expect("addr") };
        table.insert(key.clone(), 1);
        assert!(table.set(&key, 1, Health::Unhealthy));
        assert_eq!(table.take_dirty().into_iter().collect::<Vec<_>>(), vec!["a".to_string()]);
        table.insert(key.clone(), 2);
        assert!(!table.set(&key, 1, Health::Healthy), "checker 1 was replaced");
        assert_eq!(table.status("a", key.address), Health::Unknown);
        table.remove(&key);
        assert!(!table.set(&key, 2, Health::Healthy));
        assert!(table.take_dirty().is_empty());
    }
}
