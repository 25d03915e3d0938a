//! Admin pages (`/healthz`, `/ready`, `/clients`, `/config_dump`, `/metrics`), REST-JSON
//! polling and unary fetch, against what a client actually holds.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use xds_cache::{Snapshot, SnapshotCache};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::google::rpc::Status as RpcStatus;
use xds_core::type_url::CLUSTER;
use xds_server::admin::{self, Admin};
use xds_server::XdsServer;
use xds_tests::{http, request, AdsClient, TestServer};

fn snapshot(tag: &str) -> Snapshot {
    Snapshot::builder().resource(&Cluster { name: "a".into(), alt_stat_name: tag.into(), ..Default::default() }).build()
}

#[tokio::test]
async fn admin_pages_show_what_clients_hold() {
    let mut registry = Registry::default();
    let builder = XdsServer::builder().metrics(&mut registry);
    let cache = Arc::new(SnapshotCache::new());
    // Build the server here to reach its client registry, then serve it like TestServer does.
    let server = builder.build(cache.clone());
    let clients = server.clients();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_with_listener(listener, async move {
        let _ = stopped.await;
    }));

    let dump_cache = cache.clone();
    let admin = Admin::new(clients)
        .metrics(Arc::new(Mutex::new(registry)))
        .config_dump(move || admin::snapshot_cache_dump(&dump_cache));
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_addr = admin_listener.local_addr().expect("addr");
    let ready = admin.clone();
    tokio::spawn(async move { axum::serve(admin_listener, admin::router(admin)).await });

    assert_eq!(http(admin_addr, "GET", "/healthz", "").await.0, 200);
    assert_eq!(http(admin_addr, "GET", "/ready", "").await.0, 503, "not ready before the first configuration");
    cache.set_snapshot("n1", snapshot("1"));
    ready.set_ready(true);
    assert_eq!(http(admin_addr, "GET", "/ready", "").await.0, 200);

    let mut c = AdsClient::connect(addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let r1 = c.recv().await;
    c.send(request(None, CLUSTER, &[], &r1.version_info, &r1.nonce)).await;
    cache.set_snapshot("n1", snapshot("2"));
    let r2 = c.recv().await;
    let mut nack = request(None, CLUSTER, &[], &r1.version_info, &r2.nonce);
    nack.error_detail = Some(RpcStatus { code: 3, message: "cluster a: bad alt_stat_name".into(), details: vec![] });
    c.send(nack).await;
    c.expect_silence().await;

    let (code, body) = http(admin_addr, "GET", "/clients", "").await;
    assert_eq!(code, 200);
    let clients: serde_json::Value = serde_json::from_str(&body).expect("json");
    let stream = &clients["clients"][0]["streams"][0];
    assert_eq!(clients["clients"][0]["node_id"], "n1");
    let cds = &stream["types"][CLUSTER];
    assert_eq!(cds["type"], "CDS", "{body}");
    assert_eq!(cds["responses"], 2, "{body}");
    assert_eq!(cds["last_sent_version"], r2.version_info.as_str(), "{body}");
    assert_eq!(cds["last_acked_version"], r1.version_info.as_str(), "{body}");
    assert_eq!(cds["last_nack"]["error"], "cluster a: bad alt_stat_name", "{body}");
    assert_eq!(cds["last_nack"]["rejected_version"], r2.version_info.as_str(), "{body}");
    assert!(stream["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{body}");

    let (code, body) = http(admin_addr, "GET", "/config_dump", "").await;
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).expect("json");
    let a = &dump["groups"]["n1"]["CDS"]["resources"][0];
    assert_eq!(a["resource"]["@type"], CLUSTER, "{body}");
    assert_eq!(a["resource"]["altStatName"], "2", "{body}");

    let (code, body) = http(admin_addr, "GET", "/metrics", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("xds_responses_total{type=\"CDS\"} 2"), "{body}");
    assert!(body.contains("xds_requests_total{type=\"CDS\",kind=\"nack\"} 1"), "{body}");
    assert!(body.contains("xds_streams_open{variant=\"sotw\"} 1"), "{body}");
    assert!(body.contains("xds_push_latency_seconds_count{type=\"CDS\"}"), "{body}");
    let _ = stop.send(());
}

#[tokio::test]
async fn rest_json_polling_answers_304_when_unchanged() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot("1"));
    let (code, body) = http(server.addr, "POST", "/v3/discovery:clusters", r#"{"node": {"id": "n1"}}"#).await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["resources"][0]["@type"], CLUSTER);
    assert_eq!(json["resources"][0]["name"], "a");
    let version = json["versionInfo"].as_str().expect("version").to_string();
    let again = format!(r#"{{"node": {{"id": "n1"}}, "versionInfo": "{version}"}}"#);
    assert_eq!(http(server.addr, "POST", "/v3/discovery:clusters", &again).await.0, 304);
    server.cache.set_snapshot("n1", snapshot("2"));
    assert_eq!(http(server.addr, "POST", "/v3/discovery:clusters", &again).await.0, 200);
    let (code, body) = http(server.addr, "POST", "/v3/discovery:clusters", r#"{"nod": 1}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed DiscoveryRequest JSON"), "{body}");
    let (code, body) = http(server.addr, "POST", "/v3/discovery:clusters", r#"{}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("node"), "{body}");
}

#[tokio::test]
async fn unary_fetch_returns_the_current_state() {
    use xds_core::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot("1"));
    let mut client = ClusterDiscoveryServiceClient::connect(format!("http://{}", server.addr)).await.expect("connect");
    let r = client.fetch_clusters(request(Some("n1"), "", &[], "", "")).await.expect("fetch").into_inner();
    assert_eq!(xds_tests::resource_names(&r), ["a"]);
}
