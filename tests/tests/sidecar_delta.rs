//! The sidecar's configuration served over delta ADS (what Envoy gets with
//! `api_type: DELTA_GRPC`): every type answers, and a registry edit reaches the client as a
//! delta of exactly the changed resources.

use xds_core::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use xds_examples::registry::Registry;
use xds_examples::{resources, sidecar};
use xds_tests::{delta_names, delta_request, DeltaClient, TestServer};

const REGISTRY: &str = "services:\n  - name: myservice\n    endpoints: [\"127.0.0.1:50051\", \"127.0.0.1:50052\"]\n  - name: other\n    endpoints: [\"127.0.0.1:50061\"]\n";

#[tokio::test]
async fn sidecar_configuration_over_delta_ads() {
    let cache = sidecar::new_cache();
    let registry = Registry::parse(REGISTRY).expect("valid registry");
    cache.set_snapshot("", resources::snapshot(&registry).expect("consistent"));
    let server = TestServer::start_with(xds_server::XdsServer::builder(), cache.clone()).await;
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    // Envoy's order: wildcard CDS and LDS, then EDS and RDS for what they reference.
    c.send(delta_request(Some("envoy-1"), CLUSTER, &[], &[], "")).await;
    let cds = c.recv().await;
    assert_eq!(delta_names(&cds), ["myservice", "other"]);
    c.ack(CLUSTER, &cds).await;
    c.send(delta_request(None, ENDPOINT, &["myservice", "other"], &[], "")).await;
    let eds = c.recv().await;
    assert_eq!(delta_names(&eds), ["myservice", "other"]);
    c.ack(ENDPOINT, &eds).await;
    c.send(delta_request(None, LISTENER, &[], &[], "")).await;
    let lds = c.recv().await;
    assert_eq!(delta_names(&lds), ["myservice", "other"]);
    c.ack(LISTENER, &lds).await;
    c.send(delta_request(None, ROUTE, &["myservice"], &[], "")).await;
    let rds = c.recv().await;
    assert_eq!(delta_names(&rds), ["myservice"]);
    c.ack(ROUTE, &rds).await;

    // An endpoint of one service changes: exactly its ClusterLoadAssignment is sent.
    let edited = REGISTRY.replace("50052", "50053");
    cache.set_snapshot("", resources::snapshot(&Registry::parse(&edited).expect("valid")).expect("consistent"));
    let update = c.recv().await;
    assert_eq!(update.type_url, ENDPOINT);
    assert_eq!(delta_names(&update), ["myservice"]);
    assert!(update.removed_resources.is_empty());
    c.ack(ENDPOINT, &update).await;
    c.expect_silence().await;
}
