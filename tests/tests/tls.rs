//! TLS and mutual TLS on the xDS port, with certificates generated here.

use std::sync::Arc;

use rcgen::SanType;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use xds_cache::{Snapshot, SnapshotCache};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_core::type_url::CLUSTER;
use xds_server::{TlsConfig, XdsServer};
use xds_tests::pki::{server_sans, Pki};
use xds_tests::{request, resource_names, TestServer, WAIT};

/// TLS with a certificate from `pki`, no client certificates.
fn server_only(pki: &Pki) -> TlsConfig {
    let (cert, key) = pki.leaf(server_sans());
    TlsConfig {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: None,
        client_auth_optional: false,
    }
}

async fn serve(tls: TlsConfig) -> TestServer {
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("n1", Snapshot::builder().resource(&Cluster { name: "a".into(), ..Default::default() }).build());
    TestServer::start_with(XdsServer::builder().tls(tls), cache).await
}

async fn fetch_clusters(server: &TestServer, tls: ClientTlsConfig) -> Result<Vec<String>, String> {
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request(Some("n1"), CLUSTER, &[], "", "")).await.map_err(|e| e.to_string())?;
    let mut stream =
        client.stream_aggregated_resources(ReceiverStream::new(rx)).await.map_err(|e| e.to_string())?.into_inner();
    let r = tokio::time::timeout(WAIT, stream.message())
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("closed")?;
    Ok(resource_names(&r))
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca() {
    let pki = Pki::new();
    let server = serve(server_only(&pki)).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    assert_eq!(fetch_clusters(&server, tls).await.expect("served over TLS"), ["a"]);
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(server_sans());
    let server = serve(TlsConfig {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        client_auth_optional: false,
    })
    .await;
    let base = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");

    assert!(fetch_clusters(&server, base.clone()).await.is_err(), "a client without a certificate is refused");

    let stranger = Pki::new();
    let (c, k) = stranger.leaf(vec![SanType::DnsName("client".try_into().expect("dns"))]);
    let untrusted = base.clone().identity(Identity::from_pem(c, k));
    assert!(fetch_clusters(&server, untrusted).await.is_err(), "a certificate from another CA is refused");

    let (c, k) = pki.leaf(vec![SanType::URI("spiffe://mesh/ns/default/sa/envoy".try_into().expect("uri"))]);
    let trusted = base.identity(Identity::from_pem(c, k));
    assert_eq!(fetch_clusters(&server, trusted).await.expect("trusted client served"), ["a"]);
}

async fn first_response(
    server: &TestServer,
    tls: ClientTlsConfig,
    node_id: &str,
) -> Result<Vec<String>, tonic::Status> {
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request(Some(node_id), CLUSTER, &[], "", "")).await.expect("send");
    let mut stream = client.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    let r = tokio::time::timeout(WAIT, stream.message()).await.expect("in time")?.expect("message");
    Ok(resource_names(&r))
}

#[tokio::test]
async fn certificate_identity_binds_the_node_ids_a_client_may_claim() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(server_sans());
    let cache = Arc::new(SnapshotCache::new());
    let cluster = |n: &str| Snapshot::builder().resource(&Cluster { name: n.into(), ..Default::default() }).build();
    cache.set_snapshot("envoy-1", cluster("for-envoy-1"));
    cache.set_snapshot("envoy-2", cluster("for-envoy-2"));
    let binding = xds_server::IdentityBinding::new().bind("spiffe://mesh/ns/default/sa/envoy-1", ["envoy-1"]);
    let server = TestServer::start_with(
        XdsServer::builder()
            .tls(TlsConfig {
                cert_pem: cert.into_bytes(),
                key_pem: key.into_bytes(),
                client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
                client_auth_optional: false,
            })
            .authorize_nodes(binding),
        cache,
    )
    .await;
    let (c, k) = pki.leaf(vec![SanType::URI("spiffe://mesh/ns/default/sa/envoy-1".try_into().expect("uri"))]);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
        .identity(Identity::from_pem(c, k));
    assert_eq!(first_response(&server, tls.clone(), "envoy-1").await.expect("its own node"), ["for-envoy-1"]);
    let refused = first_response(&server, tls, "envoy-2").await.expect_err("another node's id");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("may not claim node id \"envoy-2\""), "{}", refused.message());
}

#[tokio::test]
async fn unusable_tls_material_is_refused_at_start_with_what_is_wrong() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(server_sans());
    let cases = [
        (
            TlsConfig {
                cert_pem: b"not a pem".to_vec(),
                key_pem: key.clone().into(),
                client_ca_pem: None,
                client_auth_optional: false,
            },
            "server certificate chain",
        ),
        (
            TlsConfig {
                cert_pem: cert.clone().into(),
                key_pem: b"not a key".to_vec(),
                client_ca_pem: None,
                client_auth_optional: false,
            },
            "server private key",
        ),
        (
            TlsConfig {
                cert_pem: cert.clone().into(),
                key_pem: key.clone().into(),
                client_ca_pem: Some(b"no CA here".to_vec()),
                client_auth_optional: false,
            },
            "client CA bundle",
        ),
    ];
    for (tls, what) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let served = XdsServer::builder().tls(tls).build(SnapshotCache::new()).serve_with_listener(listener, async {});
        let err = tokio::time::timeout(WAIT, served).await.expect("returns at once").expect_err("refused");
        assert!(matches!(err, xds_server::Error::Tls(_)), "{err:?}");
        assert!(err.to_string().contains(what), "{err} should name the {what}");
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_holds_up_no_one() {
    let pki = Pki::new();
    let server = serve(server_only(&pki)).await;
    // Connects and sends nothing: its handshake waits on its own connection's task.
    let _stalled = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    assert_eq!(fetch_clusters(&server, tls).await, Ok(vec!["a".to_string()]));
}
