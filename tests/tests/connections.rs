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
