//! Incremental (delta) xDS over loopback with a raw tonic client, rule by rule (rules 12-18 and
//! 21 of XDS-PROTOCOL.md).

use xds_cache::Snapshot;
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_core::google::rpc::Status as RpcStatus;
use xds_core::type_url::{CLUSTER, ENDPOINT};
use xds_tests::{delta_names, delta_request, DeltaClient, TestServer};

fn cluster(name: &str, tag: &str) -> Cluster {
    Cluster { name: name.into(), alt_stat_name: tag.into(), ..Default::default() }
}

fn snapshot(clusters: &[(&str, &str)], endpoints: &[(&str, usize)]) -> Snapshot {
    let mut b = Snapshot::builder();
    for (n, t) in clusters {
        b = b.resource(&cluster(n, t));
    }
    for (n, e) in endpoints {
        b = b.resource(&ClusterLoadAssignment {
            cluster_name: n.to_string(),
            endpoints: vec![Default::default(); *e],
            ..Default::default()
        });
    }
    b.build()
}

#[tokio::test]
async fn wildcard_initial_update_delete_and_nonces() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1"), ("b", "1")], &[]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), CLUSTER, &[], &[], "")).await;
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), ["a", "b"]);
    assert!(!r1.nonce.is_empty());
    assert!(r1.resources.iter().all(|r| !r.version.is_empty()), "rule 17: each resource has its version");
    c.ack(CLUSTER, &r1).await;
    c.expect_silence().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "2")], &[]));
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["a"], "only what changed");
    assert_eq!(r2.removed_resources, ["b"], "rule 15: deletes in removed_resources");
    assert_ne!(r2.nonce, r1.nonce);
}

#[tokio::test]
async fn rules_13_14_subscribe_always_answered_missing_reported_and_sent_later() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1)]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), ENDPOINT, &["a", "x"], &[], "")).await;
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), ["a"]);
    assert_eq!(r1.removed_resources, ["x"], "rule 14: a missing name is reported");
    c.ack(ENDPOINT, &r1).await;
    // Rule 13: subscribing again an unchanged name is answered.
    c.send(delta_request(None, ENDPOINT, &["a"], &[], &r1.nonce)).await;
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["a"]);
    c.ack(ENDPOINT, &r2).await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("x", 1)]));
    assert_eq!(delta_names(&c.recv().await), ["x"], "rule 14: remembered and sent when it appears");
}

#[tokio::test]
async fn rule_12_subscription_with_stale_nonce_is_applied() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 1)]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), ENDPOINT, &["a"], &[], "")).await;
    let r1 = c.recv().await;
    c.ack(ENDPOINT, &r1).await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 2), ("b", 1)]));
    let _r2 = c.recv().await;
    c.send(delta_request(None, ENDPOINT, &["b"], &[], &r1.nonce)).await;
    assert_eq!(delta_names(&c.recv().await), ["b"]);
}

#[tokio::test]
async fn rule_15_wildcard_client_unsubscribing_one_name() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1"), ("b", "1")], &[]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), CLUSTER, &["*"], &[], "")).await;
    let r1 = c.recv().await;
    c.ack(CLUSTER, &r1).await;
    c.send(delta_request(None, CLUSTER, &[], &["b"], &r1.nonce)).await;
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["b"], "the wildcard still covers b: it is sent again");
}

#[tokio::test]
async fn rule_16_reconnect_with_initial_resource_versions_sends_only_differences() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1"), ("b", "1")], &[]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), CLUSTER, &[], &[], "")).await;
    let r1 = c.recv().await;
    let held: std::collections::HashMap<String, String> =
        r1.resources.iter().map(|r| (r.name.clone(), r.version.clone())).collect();
    drop(c);
    // While the client is away, a changes and b is deleted.
    server.cache.set_snapshot("n1", snapshot(&[("a", "2"), ("c", "1")], &[]));
    let mut c = DeltaClient::connect(server.addr).await.expect("reconnect");
    let mut req = delta_request(Some("n1"), CLUSTER, &[], &[], "");
    req.initial_resource_versions = held;
    c.send(req).await;
    let r = c.recv().await;
    assert_eq!(delta_names(&r), ["a", "c"]);
    assert_eq!(r.removed_resources, ["b"]);
}

#[tokio::test]
async fn rule_18_nack_then_fix() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), CLUSTER, &["*"], &[], "")).await;
    let r1 = c.recv().await;
    c.ack(CLUSTER, &r1).await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "bad")], &[]));
    let bad = c.recv().await;
    let mut nack = delta_request(None, CLUSTER, &[], &[], &bad.nonce);
    nack.error_detail = Some(RpcStatus { code: 3, message: "a: bad".into(), details: vec![] });
    c.send(nack).await;
    c.expect_silence().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "good")], &[]));
    let fixed = c.recv().await;
    assert_eq!(delta_names(&fixed), ["a"]);
}

#[tokio::test]
async fn rule_21_xdstp_name_is_answered_as_requested() {
    let server = TestServer::start().await;
    let stored = "xdstp://auth/envoy.config.cluster.v3.Cluster/c1?a=1&b=2";
    server.cache.set_snapshot("n1", snapshot(&[(stored, "1")], &[]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    let asked = "xdstp://auth/envoy.config.cluster.v3.Cluster/c1?b=2&a=1";
    c.send(delta_request(Some("n1"), CLUSTER, &[asked], &[], "")).await;
    assert_eq!(delta_names(&c.recv().await), [asked]);
}

#[tokio::test]
async fn one_update_among_10000_sends_exactly_that_resource() {
    let server = TestServer::start().await;
    let names: Vec<String> = (0..10_000).map(|i| format!("cluster-{i}")).collect();
    let build = |changed: Option<&str>| {
        names
            .iter()
            .fold(Snapshot::builder(), |b, n| {
                let tag = if Some(n.as_str()) == changed { "2" } else { "1" };
                b.resource(&ClusterLoadAssignment {
                    cluster_name: n.clone(),
                    endpoints: vec![Default::default(); if tag == "2" { 2 } else { 1 }],
                    policy: None,
                    named_endpoints: Default::default(),
                })
                .resource(&cluster(n, tag))
            })
            .build()
    };
    server.cache.set_snapshot("n1", build(None));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), ENDPOINT, &["*"], &[], "")).await;
    let r1 = c.recv().await;
    assert_eq!(r1.resources.len(), 10_000);
    c.ack(ENDPOINT, &r1).await;
    server.cache.set_snapshot("n1", build(Some("cluster-4242")));
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["cluster-4242"]);
    assert!(r2.removed_resources.is_empty());
}

#[tokio::test]
async fn delta_first_request_without_node_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(None, CLUSTER, &[], &[], "")).await;
    assert_eq!(c.recv_error().await.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn per_type_delta_service() {
    use tokio_stream::wrappers::ReceiverStream;
    use xds_core::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut client = ClusterDiscoveryServiceClient::connect(format!("http://{}", server.addr)).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(delta_request(Some("n1"), "", &[], &[], "")).await.expect("send");
    let mut stream = client.delta_clusters(ReceiverStream::new(rx)).await.expect("open").into_inner();
    let r = tokio::time::timeout(xds_tests::WAIT, stream.message()).await.expect("in time").expect("ok").expect("msg");
    assert_eq!(r.type_url, CLUSTER);
    assert_eq!(delta_names(&r), ["a"]);
}

#[tokio::test]
async fn rule_20_ttl_and_heartbeats_over_delta() {
    use std::sync::Arc;
    use std::time::Duration;
    use xds_core::XdsResource;
    let cache = Arc::new(xds_cache::SnapshotCache::new());
    let server =
        TestServer::start_with(xds_server::XdsServer::builder().heartbeat_interval(Duration::from_millis(100)), cache)
            .await;
    let with_ttl = cluster("a", "1").encode_resource().with_ttl(Some(Duration::from_secs(2)));
    server.cache.set_snapshot("n1", Snapshot::builder().encoded(with_ttl.clone()).build());
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    c.send(delta_request(Some("n1"), CLUSTER, &["*"], &[], "")).await;
    let r1 = c.recv().await;
    assert_eq!(r1.resources[0].ttl.as_ref().map(|t| t.seconds), Some(2));
    assert!(r1.resources[0].resource.is_some());
    c.ack(CLUSTER, &r1).await;
    let hb = c.recv().await;
    assert_eq!(delta_names(&hb), ["a"]);
    assert!(hb.resources[0].resource.is_none(), "a heartbeat carries no body");
    assert_eq!(hb.resources[0].version, r1.resources[0].version);
    c.ack(CLUSTER, &hb).await;
    // The same resource without TTL: an update that clears the client's TTL.
    server.cache.set_snapshot("n1", Snapshot::builder().encoded(with_ttl.with_ttl(None)).build());
    let mut cleared = c.recv().await;
    for _ in 0..10 {
        if cleared.resources.first().is_some_and(|r| r.resource.is_some()) {
            break;
        }
        c.ack(CLUSTER, &cleared).await; // a heartbeat raced the update
        cleared = c.recv().await;
    }
    assert!(cleared.resources[0].ttl.is_none());
    assert!(cleared.resources[0].resource.is_some());
}

/// A stream whose subscription grows beyond the server's limit over several requests ends with
/// RESOURCE_EXHAUSTED naming the limit; a stream of the same node within it is untouched.
#[tokio::test]
async fn subscriptions_beyond_the_limit_end_that_stream_only() {
    let cache = std::sync::Arc::new(xds_cache::SnapshotCache::new());
    let builder = xds_server::XdsServer::builder().max_subscribed_names(2);
    let server = TestServer::start_with(builder, cache).await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 1), ("c", 1)]));
    let mut within = DeltaClient::connect(server.addr).await.expect("open");
    within.send(delta_request(Some("n1"), ENDPOINT, &["a", "b"], &[], "")).await;
    let w1 = within.recv().await;
    within.ack(ENDPOINT, &w1).await;

    let mut greedy = DeltaClient::connect(server.addr).await.expect("open");
    greedy.send(delta_request(Some("n1"), ENDPOINT, &["a", "b"], &[], "")).await;
    let g1 = greedy.recv().await;
    assert_eq!(delta_names(&g1), ["a", "b"]);
    greedy.ack(ENDPOINT, &g1).await;
    greedy.send(delta_request(None, ENDPOINT, &["c"], &[], &g1.nonce)).await;
    let status = greedy.recv_error().await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains(ENDPOINT) && status.message().contains("max_subscribed_names"),
        "the message names the type and the setting: {}",
        status.message()
    );

    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 2), ("b", 1), ("c", 1)]));
    assert_eq!(delta_names(&within.recv().await), ["a"], "the other stream still gets updates");
}

/// Delta subscriptions whose names add up over requests to more bytes than one request may carry
/// end that stream with RESOURCE_EXHAUSTED naming the setting.
#[tokio::test]
async fn subscriptions_beyond_a_requests_worth_of_bytes_end_the_stream() {
    let cache = std::sync::Arc::new(xds_cache::SnapshotCache::new());
    let builder = xds_server::XdsServer::builder().max_receive_message_size(4096);
    let server = TestServer::start_with(builder, cache).await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1)]));
    let mut c = DeltaClient::connect(server.addr).await.expect("open");
    let long: Vec<String> = (0..3).map(|i| format!("{i}{}", "x".repeat(1500))).collect();
    c.send(delta_request(Some("n1"), ENDPOINT, &["a", &long[0], &long[1]], &[], "")).await;
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), ["a"]);
    c.ack(ENDPOINT, &r1).await;
    c.send(delta_request(None, ENDPOINT, &[&long[2]], &[], &r1.nonce)).await;
    let status = c.recv_error().await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("max_receive_message_size"), "{}", status.message());
}
