//! State-of-the-world xDS over loopback with a raw tonic ADS client, rule by rule
//! (rules 1-11 of XDS-PROTOCOL.md), plus bad input and isolation between streams.

use std::sync::{Arc, Mutex};

use xds_cache::{Snapshot, SnapshotCache};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_core::google::rpc::Status as RpcStatus;
use xds_core::type_url::{CLUSTER, ENDPOINT, LISTENER};
use xds_server::{Callbacks, StreamInfo, XdsServer};
use xds_tests::{request, resource_names, AdsClient, TestServer};

fn cluster(name: &str, tag: &str) -> Cluster {
    Cluster { name: name.into(), alt_stat_name: tag.into(), ..Default::default() }
}

fn cla(name: &str, endpoints: usize) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![Default::default(); endpoints],
        ..Default::default()
    }
}

fn snapshot(clusters: &[(&str, &str)], endpoints: &[(&str, usize)]) -> Snapshot {
    let mut b = Snapshot::builder();
    for (n, t) in clusters {
        b = b.resource(&cluster(n, t));
    }
    for (n, e) in endpoints {
        b = b.resource(&cla(n, *e));
    }
    b.build()
}

#[tokio::test]
async fn rules_1_2_initial_response_nonce_and_ack() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1"), ("b", "1")], &[]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let r1 = c.recv().await;
    assert_eq!(r1.type_url, CLUSTER);
    assert_eq!(resource_names(&r1), ["a", "b"]);
    assert!(!r1.nonce.is_empty() && !r1.version_info.is_empty());
    // ACK: no answer while nothing changes.
    c.send(request(None, CLUSTER, &[], &r1.version_info, &r1.nonce)).await;
    c.expect_silence().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "2"), ("b", "1")], &[]));
    let r2 = c.recv().await;
    assert_ne!(r2.nonce, r1.nonce, "rule 1: nonces are unique per stream");
    assert_ne!(r2.version_info, r1.version_info);
}

#[tokio::test]
async fn rules_3_4_nack_keeps_state_and_is_not_answered_until_content_changes() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let good = c.recv().await;
    c.send(request(None, CLUSTER, &[], &good.version_info, &good.nonce)).await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "bad")], &[]));
    let bad = c.recv().await;
    // NACK: error_detail set, previous good version.
    let mut nack = request(None, CLUSTER, &[], &good.version_info, &bad.nonce);
    nack.error_detail = Some(RpcStatus { code: 3, message: "cluster a: invalid".into(), details: vec![] });
    c.send(nack).await;
    c.expect_silence().await;
    // The same bad content published again: still nothing (no NACK loop).
    server.cache.set_snapshot("n1", snapshot(&[("a", "bad")], &[]));
    c.expect_silence().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "fixed")], &[]));
    let fixed = c.recv().await;
    assert_ne!(fixed.version_info, bad.version_info);
}

#[tokio::test]
async fn rule_5_stale_nonce_is_not_answered() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[("a", 1), ("b", 1)]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), ENDPOINT, &["a"], "", "")).await;
    let r1 = c.recv().await;
    c.send(request(None, ENDPOINT, &["a"], &r1.version_info, &r1.nonce)).await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[("a", 2), ("b", 1)]));
    let r2 = c.recv().await;
    // A request still carrying the first nonce, asking for more names: stale, not answered.
    c.send(request(None, ENDPOINT, &["a", "b"], &r1.version_info, &r1.nonce)).await;
    c.expect_silence().await;
    // The same subscription with the current nonce is answered.
    c.send(request(None, ENDPOINT, &["a", "b"], &r2.version_info, &r2.nonce)).await;
    assert_eq!(resource_names(&c.recv().await), ["a", "b"]);
}

#[tokio::test]
async fn rule_6_first_request_without_node_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(None, CLUSTER, &[], "", "")).await;
    let status = c.recv_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node"), "{}", status.message());

    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some(""), CLUSTER, &[], "", "")).await;
    let status = c.recv_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node.id is empty"), "{}", status.message());
}

#[tokio::test]
async fn empty_and_unknown_type_urls_get_clear_statuses() {
    let server = TestServer::start().await;
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), "", &[], "", "")).await;
    let status = c.recv_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("type_url is required"), "{}", status.message());

    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), "type.googleapis.com/not.A.Type", &[], "", "")).await;
    let status = c.recv_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("not.A.Type"), "{}", status.message());
}

#[tokio::test]
async fn rule_7_legacy_wildcard_then_explicit_names() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1"), ("b", "1")], &[]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let r1 = c.recv().await;
    assert_eq!(resource_names(&r1), ["a", "b"], "empty first CDS request is wildcard");
    c.send(request(None, CLUSTER, &["a"], &r1.version_info, &r1.nonce)).await;
    let r2 = c.recv().await;
    assert_eq!(resource_names(&r2), ["a"]);
    c.send(request(None, CLUSTER, &["*"], &r2.version_info, &r2.nonce)).await;
    let r3 = c.recv().await;
    assert_eq!(resource_names(&r3), ["a", "b"], "explicit * is wildcard");
}

#[tokio::test]
async fn rules_8_10_only_subscribed_names_new_names_answered_missing_names_remembered() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 1), ("c", 1)]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), ENDPOINT, &["a"], "", "")).await;
    let r1 = c.recv().await;
    assert_eq!(resource_names(&r1), ["a"], "rule 8: only what was asked for");
    c.send(request(None, ENDPOINT, &["a", "b"], &r1.version_info, &r1.nonce)).await;
    let r2 = c.recv().await;
    assert_eq!(resource_names(&r2), ["a", "b"], "rule 10: a new name is answered though nothing changed");
    c.send(request(None, ENDPOINT, &["a", "b", "x"], &r2.version_info, &r2.nonce)).await;
    c.expect_silence().await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 1), ("c", 1), ("x", 1)]));
    assert_eq!(resource_names(&c.recv().await), ["a", "b", "x"], "rule 10: x is sent when it appears");
}

#[tokio::test]
async fn rule_9_full_state_types_send_deletes_and_absent_names() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1"), ("b", "1")], &[]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let r1 = c.recv().await;
    c.send(request(None, CLUSTER, &[], &r1.version_info, &r1.nonce)).await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    assert_eq!(resource_names(&c.recv().await), ["a"], "b's absence deletes it");
    // Proxyless gRPC asks LDS by name; a missing listener is answered at once with none.
    c.send(request(None, LISTENER, &["nope"], "", "")).await;
    let r = c.recv().await;
    assert_eq!(r.type_url, LISTENER);
    assert!(r.resources.is_empty());
}

#[tokio::test]
async fn rule_11_unrelated_changes_send_nothing() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 1)]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), ENDPOINT, &["a"], "", "")).await;
    let r1 = c.recv().await;
    c.send(request(None, ENDPOINT, &["a"], &r1.version_info, &r1.nonce)).await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 2)]));
    c.expect_silence().await;
    // Another node's snapshot does not reach this stream either.
    server.cache.set_snapshot("n2", snapshot(&[], &[("a", 5)]));
    c.expect_silence().await;
}

#[tokio::test]
async fn nothing_is_sent_before_the_group_has_a_snapshot() {
    let server = TestServer::start().await;
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("late"), CLUSTER, &[], "", "")).await;
    c.expect_silence().await;
    server.cache.set_snapshot("late", snapshot(&[("a", "1")], &[]));
    assert_eq!(resource_names(&c.recv().await), ["a"]);
}

#[tokio::test]
async fn a_bad_stream_does_not_disturb_others() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut good = AdsClient::connect(server.addr).await.expect("open");
    good.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let r1 = good.recv().await;
    good.send(request(None, CLUSTER, &[], &r1.version_info, &r1.nonce)).await;
    let mut bad = AdsClient::connect(server.addr).await.expect("open");
    bad.send(request(None, "", &[], "", "")).await;
    assert_eq!(bad.recv_error().await.code(), tonic::Code::InvalidArgument);
    server.cache.set_snapshot("n1", snapshot(&[("a", "2")], &[]));
    assert_eq!(resource_names(&good.recv().await), ["a"]);
}

#[tokio::test]
async fn per_type_service_serves_its_type() {
    use tokio_stream::wrappers::ReceiverStream;
    use xds_core::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut client = ClusterDiscoveryServiceClient::connect(format!("http://{}", server.addr)).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request(Some("n1"), "", &[], "", "")).await.expect("send");
    let mut stream = client.stream_clusters(ReceiverStream::new(rx)).await.expect("open").into_inner();
    let r = tokio::time::timeout(xds_tests::WAIT, stream.message()).await.expect("in time").expect("ok").expect("msg");
    assert_eq!(r.type_url, CLUSTER);
    assert_eq!(resource_names(&r), ["a"]);
    // The wrong type on a per-type stream is refused.
    tx.send(request(None, LISTENER, &[], "", "")).await.expect("send");
    let err = tokio::time::timeout(xds_tests::WAIT, stream.message()).await.expect("in time").expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[derive(Default)]
struct Recorder {
    acks: Mutex<Vec<String>>,
    nacks: Mutex<Vec<String>>,
}

struct Recording(Arc<Recorder>);

impl Callbacks for Recording {
    fn on_request(
        &self,
        _s: &StreamInfo,
        req: &xds_core::envoy::service::discovery::v3::DiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        if req.node.as_ref().is_some_and(|n| n.id == "forbidden") {
            return Err(tonic::Status::permission_denied("node forbidden is not allowed here"));
        }
        Ok(())
    }
    fn on_ack(&self, _s: &StreamInfo, _t: &str, version: &str) {
        self.0.acks.lock().expect("lock").push(version.to_string());
    }
    fn on_nack(&self, _s: &StreamInfo, _t: &str, nack: &xds_cache::Nack) {
        self.0.nacks.lock().expect("lock").push(nack.detail.clone());
    }
}

#[tokio::test]
async fn callbacks_observe_acks_and_nacks_and_can_veto() {
    let rec = Arc::new(Recorder::default());
    let cache = Arc::new(SnapshotCache::new());
    let server = TestServer::start_with(XdsServer::builder().callbacks(Recording(rec.clone())), cache).await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let r1 = c.recv().await;
    c.send(request(None, CLUSTER, &[], &r1.version_info, &r1.nonce)).await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "2")], &[]));
    let r2 = c.recv().await;
    let mut nack = request(None, CLUSTER, &[], &r1.version_info, &r2.nonce);
    nack.error_detail = Some(RpcStatus { code: 3, message: "no".into(), details: vec![] });
    c.send(nack).await;
    c.expect_silence().await;
    assert_eq!(*rec.acks.lock().expect("lock"), std::slice::from_ref(&r1.version_info));
    assert_eq!(*rec.nacks.lock().expect("lock"), ["no"]);

    let mut vetoed = AdsClient::connect(server.addr).await.expect("open");
    vetoed.send(request(Some("forbidden"), CLUSTER, &[], "", "")).await;
    let status = vetoed.recv_error().await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("not allowed"));
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[("a", "1")], &[]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    c.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let _ = c.recv().await;
    let stopping = tokio::spawn(server.stop());
    let status = c.recv_error().await;
    assert_eq!(status.code(), tonic::Code::Unavailable);
    stopping.await.expect("join").expect("server stopped cleanly");
}

#[tokio::test]
async fn large_requests_are_accepted() {
    let server = TestServer::start().await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1)]));
    let mut c = AdsClient::connect(server.addr).await.expect("open");
    // About 8 MB of names: twice gRPC's usual 4 MiB limit (and half the default limit of names).
    let names: Vec<String> = (0..50_000).map(|i| format!("{i:0>160}")).chain(["a".to_string()]).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.send(request(Some("n1"), ENDPOINT, &refs, "", "")).await;
    assert_eq!(resource_names(&c.recv().await), ["a"]);
}

/// Sends raw bytes as a request message.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The status a refused stream ends with: at once, or as its first message.
async fn refusal<T: std::fmt::Debug>(
    result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> tonic::Status {
    match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            tokio::time::timeout(xds_tests::WAIT, stream.message()).await.expect("in time").expect_err("refused")
        }
    }
}

#[tokio::test]
async fn malformed_request_gets_invalid_argument() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    let garbage = futures::stream::iter([vec![0xff_u8, 0xff, 0xff, 0xff]]);
    let status = refusal(grpc.streaming(tonic::Request::new(garbage), path, RawCodec).await).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed request"), "{}", status.message());
}

#[tokio::test]
async fn streams_sent_the_same_update_each_get_it_whole_with_their_own_nonces() {
    // Large enough (40 CLAs x 30 endpoints) that the response body is encoded once and shared.
    let server = TestServer::start().await;
    let names: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let endpoints = |n: usize| refs.iter().map(|c| (*c, n)).collect::<Vec<_>>();
    server.cache.set_snapshot("n1", snapshot(&[], &endpoints(30)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = AdsClient::connect(server.addr).await.expect("open");
        c.send(request(Some("n1"), ENDPOINT, &refs, "", "")).await;
        let first = c.recv().await;
        c.send(request(None, ENDPOINT, &refs, &first.version_info, &first.nonce)).await;
        clients.push((c, first));
    }
    server.cache.set_snapshot("n1", snapshot(&[], &endpoints(31)));
    let mut bodies = Vec::new();
    for (c, first) in &mut clients {
        let update = c.recv().await;
        assert_ne!(update.nonce, first.nonce, "rule 1");
        assert_ne!(update.version_info, first.version_info);
        assert_eq!(resource_names(&update), refs);
        use xds_core::prost::Message;
        let cla = ClusterLoadAssignment::decode(update.resources[0].value.as_slice()).expect("a ClusterLoadAssignment");
        assert_eq!(cla.endpoints.len(), 31, "the new version");
        bodies.push(update.resources);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every stream got the same resources");
}

#[tokio::test]
async fn compressed_requests_are_refused_with_a_clear_status() {
    use xds_core::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let server = TestServer::start().await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr)).await.expect("connect");
    let requests = futures::stream::iter([request(Some("n1"), CLUSTER, &[], "", "")]);
    let mut req = tonic::Request::new(requests);
    req.metadata_mut().insert("grpc-encoding", "gzip".parse().expect("header value"));
    let status = refusal(client.stream_aggregated_resources(req).await).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("uncompressed"), "{}", status.message());
}

/// A request listing more names than the server's limit ends that stream with
/// RESOURCE_EXHAUSTED naming the setting, counted in the metrics; another stream is untouched.
#[tokio::test]
async fn a_request_listing_more_names_than_the_limit_ends_that_stream_only() {
    let mut registry = prometheus_client::registry::Registry::default();
    let builder = XdsServer::builder().max_subscribed_names(2).metrics(&mut registry);
    let server = TestServer::start_with(builder, Arc::new(SnapshotCache::new())).await;
    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 1), ("b", 1), ("c", 1)]));
    let mut within = AdsClient::connect(server.addr).await.expect("open");
    within.send(request(Some("n1"), ENDPOINT, &["a", "b"], "", "")).await;
    let w1 = within.recv().await;
    within.send(request(None, ENDPOINT, &["a", "b"], &w1.version_info, &w1.nonce)).await;

    let mut greedy = AdsClient::connect(server.addr).await.expect("open");
    greedy.send(request(Some("n1"), ENDPOINT, &["a", "b", "c"], "", "")).await;
    let status = greedy.recv_error().await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("max_subscribed_names"), "{}", status.message());
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).expect("encodes");
    assert!(metrics.contains(r#"xds_streams_failed_total{variant="sotw",code="resource_exhausted"} 1"#), "{metrics}");

    server.cache.set_snapshot("n1", snapshot(&[], &[("a", 2), ("b", 1), ("c", 1)]));
    assert_eq!(resource_names(&within.recv().await), ["a", "b"], "the other stream still gets updates");
}
