//! Admin pages (`/healthz`, `/ready`, `/clients`, `/config_dump`, `/metrics`), REST-JSON
//! polling and unary fetch, against what a client actually holds.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use xds_cache::{Snapshot, SnapshotCache};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::google::rpc::Status as RpcStatus;
use xds_core::type_url::CLUSTER;
use xds_server::admin::{self, Admin};
use xds_server::{ClientRegistry, XdsServer};
use xds_tests::{http, request, AdsClient, TestServer};

fn snapshot(tag: &str) -> Snapshot {
    Snapshot::builder().resource(&Cluster { name: "a".into(), alt_stat_name: tag.into(), ..Default::default() }).build()
}

/// Serves `server`, and on a second loopback port the admin router of what `admin` makes of its
/// clients: (xDS address, admin address, the admin pages' handle, what stops the xDS server).
async fn serve_with_admin(
    server: XdsServer,
    admin: impl FnOnce(Arc<ClientRegistry>) -> Admin,
) -> (SocketAddr, SocketAddr, Admin, oneshot::Sender<()>) {
    let admin = admin(server.clients());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve_with_listener(listener, async move {
        let _ = stopped.await;
    }));
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_addr = admin_listener.local_addr().expect("addr");
    let handle = admin.clone();
    tokio::spawn(async move { axum::serve(admin_listener, admin::router(admin)).await });
    (addr, admin_addr, handle, stop)
}

#[tokio::test]
async fn admin_pages_show_what_clients_hold() {
    let mut registry = Registry::default();
    let builder = XdsServer::builder().metrics(&mut registry);
    let cache = Arc::new(SnapshotCache::new());
    let dump_cache = cache.clone();
    let (addr, admin_addr, ready, stop) = serve_with_admin(builder.build(cache.clone()), |clients| {
        Admin::new(clients)
            .metrics(Arc::new(Mutex::new(registry)))
            .config_dump(move || admin::snapshot_cache_dump(&dump_cache))
    })
    .await;

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

#[tokio::test]
async fn csds_on_the_admin_port_reports_each_clients_status_per_type() {
    use xds_core::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, NodeMatcher, StringMatcher};
    use xds_core::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    use xds_core::envoy::service::status::v3::{ClientStatusRequest, ClientStatusResponse, ConfigStatus};
    use xds_core::type_url::ENDPOINT;

    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("gw-1", snapshot("1"));
    let (addr, admin_addr, _, stop) = serve_with_admin(XdsServer::builder().build(cache.clone()), Admin::new).await;
    let mut csds =
        ClientStatusDiscoveryServiceClient::connect(format!("http://{admin_addr}")).await.expect("CSDS over h2c");
    let by_id = |pattern: MatchPattern| ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher { ignore_case: false, match_pattern: Some(pattern) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let cds_of = |r: &ClientStatusResponse| {
        let config = r.config.iter().find(|c| c.node.as_ref().is_some_and(|n| n.id == "gw-1")).expect("gw-1 listed");
        config.generic_xds_configs.iter().find(|g| g.type_url == CLUSTER).cloned().expect("CDS listed")
    };

    // Sent, not yet ACKed: STALE. Endpoints of a cluster that does not exist: NOT_SENT.
    let mut c = AdsClient::connect(addr).await.expect("open");
    c.send(request(Some("gw-1"), CLUSTER, &[], "", "")).await;
    let r1 = c.recv().await;
    c.send(request(None, ENDPOINT, &["x"], "", "")).await;
    c.expect_silence().await;
    let all = csds.fetch_client_status(ClientStatusRequest::default()).await.expect("fetch").into_inner();
    assert_eq!(cds_of(&all).config_status, ConfigStatus::Stale as i32, "{all:?}");
    assert_eq!(cds_of(&all).version_info, "", "nothing ACKed yet");
    let eds = all.config[0].generic_xds_configs.iter().find(|g| g.type_url == ENDPOINT).expect("EDS listed");
    assert_eq!(eds.config_status, ConfigStatus::NotSent as i32, "{all:?}");

    // ACKed: SYNCED at that version, with when.
    c.send(request(None, CLUSTER, &[], &r1.version_info, &r1.nonce)).await;
    c.expect_silence().await;
    let acked = csds.fetch_client_status(ClientStatusRequest::default()).await.expect("fetch").into_inner();
    let cds = cds_of(&acked);
    assert_eq!((cds.config_status, cds.version_info.as_str()), (ConfigStatus::Synced as i32, r1.version_info.as_str()));
    assert!(cds.last_updated.is_some_and(|t| t.seconds > 0));

    // NACKed: ERROR, the client's error text and the rejected version; still at the ACKed one.
    cache.set_snapshot("gw-1", snapshot("2"));
    let r2 = c.recv().await;
    let mut nack = request(None, CLUSTER, &[], &r1.version_info, &r2.nonce);
    nack.error_detail = Some(RpcStatus { code: 3, message: "cluster a: bad alt_stat_name".into(), details: vec![] });
    c.send(nack).await;
    c.expect_silence().await;

    // Over the streaming method, with node matchers: one answer per request.
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    let mut answers = csds
        .stream_client_status(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    requests.send(by_id(MatchPattern::Prefix("gw-".into()))).await.expect("send");
    let nacked = answers.message().await.expect("answer").expect("one");
    let cds = cds_of(&nacked);
    assert_eq!((cds.config_status, cds.version_info.as_str()), (ConfigStatus::Error as i32, r1.version_info.as_str()));
    let failure = cds.error_state.expect("the NACK");
    assert_eq!(
        (failure.details.as_str(), failure.version_info.as_str()),
        ("cluster a: bad alt_stat_name", r2.version_info.as_str())
    );
    requests.send(by_id(MatchPattern::Exact("gw-2".into()))).await.expect("send");
    assert!(answers.message().await.expect("answer").expect("one").config.is_empty(), "no such node");
    let metadata = ClientStatusRequest {
        node_matchers: vec![NodeMatcher { node_metadatas: vec![Default::default()], ..Default::default() }],
        ..Default::default()
    };
    requests.send(metadata).await.expect("send");
    let refused = answers.message().await.expect_err("metadata matchers are refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    let _ = stop.send(());
}

#[tokio::test]
async fn grpc_reflection_on_the_admin_port_lists_csds_and_describes_envoys_types() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cache = Arc::new(SnapshotCache::new());
    let (_, admin_addr, _, stop) = serve_with_admin(XdsServer::builder().build(cache), Admin::new).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("h2c to the admin port");
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request| ServerReflectionRequest { message_request: Some(request), ..Default::default() };
    let requests = tokio_stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("envoy.service.status.v3.ClientStatusDiscoveryService".into())),
    ]);
    let mut answers = reflection.server_reflection_info(requests).await.expect("stream").into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.expect("answer").and_then(|a| a.message_response)
    else {
        panic!("a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["envoy.service.status.v3.ClientStatusDiscoveryService"], "only what the port serves");
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.expect("answer").and_then(|a| a.message_response)
    else {
        panic!("the file declaring CSDS");
    };
    assert!(!files.file_descriptor_proto.is_empty(), "its file and what it imports");
    let _ = stop.send(());
}
