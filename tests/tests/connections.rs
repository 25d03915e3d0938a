//! How `XdsServer::serve` runs connections: a connection's streams run on the connection's own
//! task, whatever the number of streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use xds_cache::{Snapshot, SnapshotCache};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::type_url::CLUSTER;
use xds_server::XdsServer;
use xds_tests::{request, AdsClient};

/// `clients` holds `streams` streams, each from a loopback client address.
fn assert_client_peers(clients: &xds_server::ClientRegistry, streams: usize) {
    let peers: Vec<String> = clients.clients().into_iter().flat_map(|c| c.streams).map(|s| s.peer).collect();
    assert_eq!(peers.len(), streams, "{peers:?}");
    for peer in peers {
        let addr: std::net::SocketAddr = peer.parse().expect("the client's address");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    }
}

/// An ADS stream on `channel` that has had its first response.
async fn open_stream(channel: &Channel) -> AdsClient {
    let mut stream = AdsClient::on(channel.clone()).await.expect("opened");
    stream.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    stream.recv().await;
    stream
}

#[tokio::test]
async fn the_streams_of_a_connection_are_not_tasks_of_their_own() {
    // The server on a runtime of its own, whose tasks are counted.
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("n1", Snapshot::builder().resource(&Cluster { name: "c".into(), ..Default::default() }).build());
    let listener = {
        let _entered = server_rt.enter();
        xds_server::bind("127.0.0.1:0".parse().expect("address")).expect("bind")
    };
    let addr = listener.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = XdsServer::builder().build(cache);
    let clients = server.clients();
    let served = server_rt.spawn(server.serve_with_listener(listener, async move {
        let _ = stopped.await;
    }));

    let channel = Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut streams = vec![open_stream(&channel).await];
    assert_client_peers(&clients, 1);
    let with_one = server_rt.metrics().num_alive_tasks();
    for _ in 0..24 {
        streams.push(open_stream(&channel).await);
    }
    let with_many = server_rt.metrics().num_alive_tasks();
    assert_client_peers(&clients, 25);
    assert_eq!(
        with_many, with_one,
        "25 streams on one connection take as many tasks as one ({with_one}: the server and the connection)"
    );
    assert!(with_one <= 3, "{with_one} tasks for one connection");

    drop(streams);
    let _ = stop.send(());
    // Well within the default drain timeout (5 s): the idle connection is closed at once.
    tokio::time::timeout(Duration::from_secs(3), served)
        .await
        .expect("server stops at once")
        .expect("joins")
        .expect("served");
    server_rt.shutdown_background();
}

#[tokio::test]
async fn shutdown_closes_idle_connections_without_waiting_for_the_drain_timeout() {
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("n1", Snapshot::builder().resource(&Cluster { name: "c".into(), ..Default::default() }).build());
    // A drain timeout far longer than the wait below: stopping within it means the idle
    // connection was closed at once (GOAWAY), not left until a timer woke it (5 s before the
    // connection task polled the codec after the shutdown call) or the drain timed out.
    let builder = XdsServer::builder().drain_timeout(Duration::from_secs(30));
    let server = xds_tests::TestServer::start_with(builder, cache).await;
    let channel =
        Endpoint::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    // One stream opened and closed: the connection stays, idle.
    drop(open_stream(&channel).await);
    tokio::time::timeout(Duration::from_secs(3), server.stop())
        .await
        .expect("an idle connection closes at once on shutdown")
        .expect("stopped");
    drop(channel);
}

#[tokio::test]
async fn the_services_mounted_on_an_applications_own_tonic_server_serve_streams() {
    use xds_tests::{delta_names, delta_request, resource_names, DeltaClient};
    // `XdsServer::serve` routes the discovery streams itself; `routes()` hands them to tonic's
    // router instead, with tonic's bodies: both paths serve the same protocol.
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("n1", Snapshot::builder().resource(&Cluster { name: "c".into(), ..Default::default() }).build());
    let server = XdsServer::builder().build(cache);
    let clients = server.clients();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    let served =
        tokio::spawn(tonic::transport::Server::builder().add_routes(server.routes()).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                let _ = stopped.await;
            },
        ));

    let mut sotw = AdsClient::connect(addr).await.expect("SotW stream opened");
    sotw.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let response = sotw.recv().await;
    assert_eq!(resource_names(&response), ["c"]);
    sotw.send(request(None, CLUSTER, &[], &response.version_info, &response.nonce)).await;
    sotw.expect_silence().await;

    let mut delta = DeltaClient::connect(addr).await.expect("delta stream opened");
    delta.send(delta_request(Some("n1"), CLUSTER, &["*"], &[], "")).await;
    assert_eq!(delta_names(&delta.recv().await), ["c"]);
    assert_client_peers(&clients, 2);

    drop((sotw, delta));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), served).await.expect("stops").expect("joins").expect("served");
}

/// The server's metrics as Prometheus text.
fn metrics_text(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text
}

/// The value of the metric line that starts with `series` (name and labels), if any.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads from a raw connection until the server closes it (bounded), returning what it sent.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    got
}

/// The types of the HTTP/2 frames in `bytes` (the server's side of a connection).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// Cluster `c` at a CDS version of our choosing.
fn snapshot(version: &str) -> Snapshot {
    padded_snapshot(version, String::new())
}

/// Cluster `c` at a CDS version of our choosing, `padding` as its stat name.
fn padded_snapshot(version: &str, padding: String) -> Snapshot {
    let cluster = Cluster { name: "c".into(), alt_stat_name: padding, ..Default::default() };
    Snapshot::builder().version(CLUSTER, version).resource(&cluster).build()
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 7;

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_those_served_keep_their_streams() {
    use tokio::io::AsyncWriteExt;
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("n1", snapshot("1"));
    let mut registry = prometheus_client::registry::Registry::default();
    let builder = XdsServer::builder().max_connections(Some(2)).metrics(&mut registry);
    let server = xds_tests::TestServer::start_with(builder, cache.clone()).await;

    // Two connections, one stream each: the limit.
    let mut first = AdsClient::connect(server.addr).await.expect("first connection");
    let mut second = AdsClient::connect(server.addr).await.expect("second connection");
    let mut acks = Vec::new();
    for stream in [&mut first, &mut second] {
        stream.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
        let response = stream.recv().await;
        acks.push(request(None, CLUSTER, &[], &response.version_info, &response.nonce));
    }
    for (stream, ack) in [&mut first, &mut second].into_iter().zip(acks) {
        stream.send(ack).await;
    }

    // A third is closed before a byte is read, even one that speaks HTTP/2, and a gRPC client
    // sees it fail.
    let mut third = tokio::net::TcpStream::connect(server.addr).await.expect("the kernel accepts");
    let _ = third.write_all(HTTP2_PREFACE).await;
    let _ = third.write_all(EMPTY_SETTINGS).await;
    assert!(read_until_closed(&mut third, Duration::from_secs(5)).await.is_empty(), "nothing served");
    assert!(AdsClient::connect(server.addr).await.is_err(), "a gRPC client is refused too");
    let text = metrics_text(&registry);
    assert!(metric(&text, r#"xds_connections_refused_total{reason="limit"}"#) >= Some(2.0), "{text}");
    assert_eq!(metric(&text, "xds_connections_open"), Some(2.0), "{text}");

    // The two served lose nothing: both have the next version.
    cache.set_snapshot("n1", snapshot("2"));
    for stream in [&mut first, &mut second] {
        assert_eq!(stream.recv().await.version_info, "2");
    }

    // Once one ends, its place goes to the next connection (the server notices the close a
    // moment later: bounded retries).
    drop(first);
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(stream) = AdsClient::connect(server.addr).await {
            admitted = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut admitted = admitted.expect("a connection is served once one has ended");
    admitted.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    assert_eq!(admitted.recv().await.version_info, "2");
    drop((second, admitted));
    server.stop().await.expect("stopped");
}

#[tokio::test]
async fn a_connection_that_sends_no_request_in_time_is_closed_and_one_that_did_is_kept() {
    use tokio::io::AsyncWriteExt;
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot("n1", snapshot("1"));
    let timeout = Duration::from_millis(300);
    let mut registry = prometheus_client::registry::Registry::default();
    let builder = XdsServer::builder().first_request_timeout(Some(timeout)).metrics(&mut registry);
    let server = xds_tests::TestServer::start_with(builder, cache.clone()).await;

    // A stream opened at once, then idle for several timeouts: kept.
    let mut stream = AdsClient::connect(server.addr).await.expect("connects");
    stream.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let response = stream.recv().await;
    stream.send(request(None, CLUSTER, &[], &response.version_info, &response.nonce)).await;

    // A peer that connects and sends nothing: closed.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.expect("connects");
    assert!(read_until_closed(&mut silent, Duration::from_secs(10)).await.is_empty());
    // One that completes the HTTP/2 handshake but opens no stream: a GOAWAY, then closed.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.expect("connects");
    idle.write_all(HTTP2_PREFACE).await.expect("preface");
    idle.write_all(EMPTY_SETTINGS).await.expect("settings");
    let frames = frame_types(&read_until_closed(&mut idle, Duration::from_secs(10)).await);
    assert!(frames.contains(&GOAWAY), "frames {frames:?}");

    tokio::time::sleep(timeout * 3).await;
    cache.set_snapshot("n1", snapshot("2"));
    assert_eq!(stream.recv().await.version_info, "2", "the stream's connection was kept");
    let text = metrics_text(&registry);
    assert_eq!(metric(&text, r#"xds_connections_refused_total{reason="no_request"}"#), Some(2.0), "{text}");
    drop(stream);
    server.stop().await.expect("stopped");
}

/// Cluster `c` with a body far larger than an HTTP/2 window, tagged `tag`.
fn large_snapshot(tag: usize) -> Snapshot {
    padded_snapshot(&tag.to_string(), format!("{tag}:{}", "x".repeat(256 * 1024)))
}

/// Streams whose clients stop reading (their HTTP/2 windows full, mid-response; one SotW, one
/// delta) hold up neither the other streams of their connection, which share its task, nor
/// those of other connections: each update reaches them while the stalled streams still wait
/// to be read.
#[tokio::test]
async fn streams_that_stop_reading_hold_up_no_other_stream() {
    let server = xds_tests::TestServer::start().await;
    server.cache.set_snapshot("n1", large_snapshot(0));
    let connect = || async {
        Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .initial_stream_window_size(Some(16 * 1024))
            .connect()
            .await
            .expect("connect")
    };
    let shared = connect().await;
    let stalled = AdsClient::on(shared.clone()).await.expect("opened");
    stalled.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
    let stalled_delta = xds_tests::DeltaClient::on(shared.clone()).await.expect("opened");
    stalled_delta.send(xds_tests::delta_request(Some("n1"), CLUSTER, &[], &[], "")).await;
    let mut healthy =
        vec![AdsClient::on(shared).await.expect("opened"), AdsClient::on(connect().await).await.expect("opened")];
    let mut acks = Vec::new();
    for stream in &mut healthy {
        stream.send(request(Some("n1"), CLUSTER, &[], "", "")).await;
        let r = stream.recv().await;
        assert_eq!(r.version_info, "0");
        acks.push(r);
    }
    for tag in 1..=5 {
        server.cache.set_snapshot("n1", large_snapshot(tag));
        for (stream, last) in healthy.iter_mut().zip(&mut acks) {
            stream.send(request(None, CLUSTER, &[], &last.version_info, &last.nonce)).await;
            let r = stream.recv().await;
            assert_eq!(r.version_info, tag.to_string(), "each update reaches the streams that read");
            *last = r;
        }
    }
    drop((stalled, stalled_delta));
}
