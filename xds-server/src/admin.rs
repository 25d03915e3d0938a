//! An admin HTTP router (axum): `/healthz`, `/ready`, `/config_dump`, `/clients`, `/metrics`,
//! and the gRPC Client Status Discovery Service ([`crate::csds`]) on the same port (HTTP/2
//! without TLS, as `grpcurl -plaintext` and gRPC clients with insecure credentials speak it),
//! with gRPC server reflection over every Envoy type, so `grpcurl` needs no .proto files.
//!
//! Mount it on its own listener (the sidecar serves it on 127.0.0.1:19000):
//!
//! ```no_run
//! # async fn run(server: &xds_server::XdsServer, cache: std::sync::Arc<xds_cache::SnapshotCache>) {
//! use std::sync::Arc;
//! let admin = xds_server::admin::Admin::new(server.clients())
//!     .config_dump(move || xds_server::admin::snapshot_cache_dump(&cache));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:19000").await.unwrap();
//! axum::serve(listener, xds_server::admin::router(admin)).await.unwrap();
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use xds_cache::SnapshotCache;

use crate::csds::ClientStatusService;
use crate::status::ClientRegistry;

/// The paths of CSDS's methods.
const CSDS_METHODS: &str = "/envoy.service.status.v3.ClientStatusDiscoveryService/{*method}";
/// The paths of gRPC server reflection, both versions (grpcurl asks v1 first, older tools
/// v1alpha).
const REFLECTION_METHODS: &str = "/grpc.reflection.v1.ServerReflection/{*method}";
const REFLECTION_ALPHA_METHODS: &str = "/grpc.reflection.v1alpha.ServerReflection/{*method}";

type DumpFn = dyn Fn() -> Value + Send + Sync;

/// What the admin pages show.
#[derive(Clone)]
pub struct Admin {
    clients: Arc<ClientRegistry>,
    registry: Option<Arc<Mutex<Registry>>>,
    ready: Arc<AtomicBool>,
    dump: Option<Arc<DumpFn>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("ready", &self.ready.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin pages for a server's clients (see [`XdsServer::clients`](crate::XdsServer::clients)).
    /// Not ready until [`Admin::set_ready`] is called.
    pub fn new(clients: Arc<ClientRegistry>) -> Self {
        Self { clients, registry: None, ready: Arc::new(AtomicBool::new(false)), dump: None }
    }

    /// Serves this Prometheus registry on `/metrics`.
    #[must_use]
    pub fn metrics(mut self, registry: Arc<Mutex<Registry>>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Serves what `dump` returns on `/config_dump`.
    #[must_use]
    pub fn config_dump(mut self, dump: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        self.dump = Some(Arc::new(dump));
        self
    }

    /// `/ready` answers 200 from now on (call it once the first valid configuration is
    /// published, so a restarted control plane never hands out empty configuration).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Every resource of every group of a cache as proto3 JSON with `@type`, by group and type.
pub fn snapshot_cache_dump(cache: &SnapshotCache) -> Value {
    let mut groups = serde_json::Map::new();
    for group in cache.groups() {
        let Some(snapshot) = cache.snapshot(&group) else { continue };
        let mut types = serde_json::Map::new();
        for (type_url, set) in snapshot.iter() {
            let resources: Vec<Value> = set
                .iter()
                .map(|r| {
                    let mut body = xds_core::json::to_json(type_url, &r.value())
                        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
                    if let Value::Object(map) = &mut body {
                        map.insert("@type".into(), Value::String(type_url.to_string()));
                    }
                    json!({ "name": r.name(), "version": r.version(), "resource": body })
                })
                .collect();
            types.insert(
                xds_core::type_url::short_name(type_url).to_string(),
                json!({ "type_url": type_url, "version": set.version(), "resources": resources }),
            );
        }
        groups.insert(group, Value::Object(types));
    }
    json!({ "groups": groups })
}

/// The admin router.
pub fn router(admin: Admin) -> Router {
    let csds = ClientStatusService::new(admin.clients.clone()).into_server();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(xds_core::json::descriptor_set())
            .with_service_name("envoy.service.status.v3.ClientStatusDiscoveryService")
    };
    let mut router = Router::new().route_service(CSDS_METHODS, csds);
    // The descriptors ship with envoy-types: failing to read them is a packaging bug, and the
    // admin pages are more use without reflection than not served at all.
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => {
            router = router.route_service(REFLECTION_METHODS, v1).route_service(REFLECTION_ALPHA_METHODS, v1alpha);
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "gRPC reflection is off: Envoy's descriptors did not load")
        }
    }
    router
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/config_dump", get(config_dump))
        .route("/clients", get(clients))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn ready(State(admin): State<Admin>) -> Response {
    if admin.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no valid configuration loaded yet\n").into_response()
    }
}

fn json_response(value: &Value) -> Response {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], text + "\n").into_response()
}

async fn config_dump(State(admin): State<Admin>) -> Response {
    match &admin.dump {
        Some(dump) => json_response(&dump()),
        None => (StatusCode::NOT_FOUND, "no configuration dump is configured\n").into_response(),
    }
}

async fn clients(State(admin): State<Admin>) -> Response {
    json_response(&json!({ "clients": admin.clients.clients() }))
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let Some(registry) = &admin.registry else {
        return (StatusCode::NOT_FOUND, "no metrics registry is configured\n").into_response();
    };
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry.lock()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
