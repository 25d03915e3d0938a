//! The sidecar as operators see it: the admin listener answers with what clients actually hold,
//! an invalid registry edit is counted and leaves clients working, and secrets reach only the
//! nodes the registry allows.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use xds_core::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use xds_core::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
use xds_core::type_url::{CLUSTER, SECRET};
use xds_examples::sidecar::{self, Options};
use xds_tests::{http, request, resource_names, AdsClient};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";

fn registry(endpoint: &str) -> String {
    format!(
        "services:\n  - name: myservice\n    endpoints: [\"{endpoint}\"]\n    health_check: {{kind: none}}\n\
         secrets:\n  - {{name: a-cert, nodes: [envoy-a], validation_context: {{trusted_ca: ca.pem}}}}\n  \
         - {{name: public, validation_context: {{trusted_ca: ca.pem}}}}\n"
    )
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test]
async fn admin_reload_errors_and_per_node_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), CA).expect("ca");
    let config = dir.path().join("registry.yaml");
    write(&config, &registry("127.0.0.1:50051"));
    let (xds, admin) = (free_port(), free_port());
    let options = Options { admin_addr: Some(admin), poll_interval: Duration::from_millis(50), ..Options::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let path = config.clone();
    let sidecar = tokio::spawn(async move {
        sidecar::serve_with(&path, xds, options, async move {
            let _ = stopped.await;
        })
        .await
    });
    wait_for_port(xds).await;
    wait_for_port(admin).await;

    assert_eq!(http(admin, "GET", "/healthz", "").await.0, 200);
    assert_eq!(http(admin, "GET", "/ready", "").await.0, 200);

    let mut c = AdsClient::connect(xds).await.expect("open");
    c.send(request(Some("envoy-b"), CLUSTER, &[], "", "")).await;
    let cds = c.recv().await;
    assert_eq!(resource_names(&cds), ["myservice"]);
    c.send(request(None, CLUSTER, &[], &cds.version_info, &cds.nonce)).await;
    // Node envoy-b asks for both secrets and gets only the one every node may have.
    c.send(request(None, SECRET, &["a-cert", "public"], "", "")).await;
    let sds = c.recv().await;
    assert_eq!(sds.type_url, SECRET);
    let names: Vec<String> = sds
        .resources
        .iter()
        .map(|a| {
            use xds_core::prost::Message;
            xds_core::envoy::extensions::transport_sockets::tls::v3::Secret::decode(a.value.as_slice())
                .expect("secret")
                .name
        })
        .collect();
    assert_eq!(names, ["public"], "envoy-b must not receive envoy-a's secret");
    let mut a = AdsClient::connect(xds).await.expect("open");
    a.send(request(Some("envoy-a"), SECRET, &["a-cert", "public"], "", "")).await;
    assert_eq!(a.recv().await.resources.len(), 2);

    let (code, body) = http(admin, "GET", "/clients", "").await;
    assert_eq!(code, 200);
    let clients: serde_json::Value = serde_json::from_str(&body).expect("json");
    let b = clients["clients"].as_array().expect("list").iter().find(|c| c["node_id"] == "envoy-b").expect("envoy-b");
    assert_eq!(b["streams"][0]["types"][CLUSTER]["last_acked_version"], cds.version_info.as_str(), "{body}");

    // The same, over CSDS on the admin port: envoy-b's clusters are SYNCED at that version.
    let mut csds =
        ClientStatusDiscoveryServiceClient::connect(format!("http://{admin}")).await.expect("CSDS on the admin port");
    let status = csds.fetch_client_status(ClientStatusRequest::default()).await.expect("fetch").into_inner();
    let b = status.config.iter().find(|c| c.node.as_ref().is_some_and(|n| n.id == "envoy-b")).expect("envoy-b");
    let clusters = b.generic_xds_configs.iter().find(|g| g.type_url == CLUSTER).expect("CDS");
    assert_eq!(clusters.version_info, cds.version_info);
    assert_eq!(clusters.config_status, ConfigStatus::Synced as i32);

    let (code, body) = http(admin, "GET", "/config_dump", "").await;
    assert_eq!(code, 200);
    assert!(
        body.contains(
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        ),
        "Any expanded with its @type"
    );

    // An invalid edit: counted, logged, and the last good configuration stays.
    write(&config, "services:\n  - name: myservice\n    endpoint: [\"127.0.0.1:1\"]\n");
    let mut counted = false;
    for _ in 0..100 {
        let (_, metrics) = http(admin, "GET", "/metrics", "").await;
        if metrics.contains("xds_sidecar_registry_reload_errors_total 1") {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "the rejected file is counted in /metrics");
    c.expect_silence().await;
    write(&config, &registry("127.0.0.1:50052"));
    let (_, metrics) = http(admin, "GET", "/metrics", "").await;
    assert!(metrics.contains("xds_responses_total{type=\"CDS\"}"), "{metrics}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), sidecar).await.expect("stops").expect("join").expect("clean exit");
}
