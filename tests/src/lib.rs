//! Helpers shared by the end-to-end tests: start a server on a loopback port, open a raw ADS
//! stream with the generated tonic client, send requests and read responses with bounded waits.

pub mod interop;
pub mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds_cache::SnapshotCache;
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_core::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use xds_server::{ServerBuilder, XdsServer};

/// How long a test waits for an expected response.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test listens to conclude that nothing is sent.
pub const SILENCE: Duration = Duration::from_millis(300);

/// A server on `127.0.0.1:<free port>`, stopped when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The cache it serves.
    pub cache: Arc<SnapshotCache>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), xds_server::Error>>>,
}

impl TestServer {
    /// Starts a server with default settings over a cache grouping nodes by id.
    pub async fn start() -> Self {
        Self::start_with(XdsServer::builder(), Arc::new(SnapshotCache::new())).await
    }

    /// Starts a server from a builder and a cache.
    pub async fn start_with(builder: ServerBuilder, cache: Arc<SnapshotCache>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = builder.build(cache.clone());
        let handle = tokio::spawn(server.serve_with_listener(listener, async move {
            let _ = rx.await;
        }));
        Self { addr, cache, shutdown: Some(tx), handle: Some(handle) }
    }

    /// Starts shutdown and waits (bounded) for the server to finish.
    pub async fn stop(mut self) -> Result<(), xds_server::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), handle).await.expect("server stops in time").expect("join")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A node with the given id.
pub fn node(id: &str) -> Node {
    Node { id: id.into(), ..Default::default() }
}

/// A SotW request.
pub fn request(node_id: Option<&str>, type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node_id.map(node),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// One raw ADS stream.
pub struct AdsClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

/// A connection of its own to the test server at `addr`.
pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connect to the test server")
}

impl AdsClient {
    /// Opens an ADS stream to `addr`, on a connection of its own.
    pub async fn connect(addr: SocketAddr) -> Result<Self, tonic::Status> {
        Self::on(channel(addr).await).await
    }

    /// Opens an ADS stream on `channel` (a connection shared with other streams).
    pub async fn on(channel: tonic::transport::Channel) -> Result<Self, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let rx = client.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { tx, rx })
    }

    /// Sends a request.
    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    /// The next message or error, waiting at most [`WAIT`].
    pub async fn next(&mut self) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        tokio::time::timeout(WAIT, self.rx.message()).await.expect("no response within the wait")
    }

    /// The next response; panics on error or timeout.
    pub async fn recv(&mut self) -> DiscoveryResponse {
        self.next().await.expect("response, not an error").expect("stream still open")
    }

    /// The status the stream ends with.
    pub async fn recv_error(&mut self) -> tonic::Status {
        match self.next().await {
            Err(status) => status,
            Ok(other) => panic!("expected an error status, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for [`SILENCE`].
    pub async fn expect_silence(&mut self) {
        if let Ok(msg) = tokio::time::timeout(SILENCE, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }
}

/// Names of the resources in a response, decoded by their type.
pub fn resource_names(r: &DiscoveryResponse) -> Vec<String> {
    use xds_core::envoy;
    use xds_core::prost::Message;
    r.resources
        .iter()
        .map(|any| match any.type_url.as_str() {
            xds_core::type_url::CLUSTER => {
                envoy::config::cluster::v3::Cluster::decode(any.value.as_slice()).expect("cluster").name
            }
            xds_core::type_url::ENDPOINT => {
                envoy::config::endpoint::v3::ClusterLoadAssignment::decode(any.value.as_slice())
                    .expect("cla")
                    .cluster_name
            }
            xds_core::type_url::LISTENER => {
                envoy::config::listener::v3::Listener::decode(any.value.as_slice()).expect("listener").name
            }
            xds_core::type_url::ROUTE => {
                envoy::config::route::v3::RouteConfiguration::decode(any.value.as_slice()).expect("route").name
            }
            other => panic!("unexpected type {other}"),
        })
        .collect()
}

/// A delta request.
pub fn delta_request(
    node_id: Option<&str>,
    type_url: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node_id.map(node),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// One raw delta ADS stream.
pub struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    /// Opens a delta ADS stream to `addr`, on a connection of its own.
    pub async fn connect(addr: SocketAddr) -> Result<Self, tonic::Status> {
        Self::on(channel(addr).await).await
    }

    /// Opens a delta ADS stream on `channel` (a connection shared with other streams).
    pub async fn on(channel: tonic::transport::Channel) -> Result<Self, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let rx = client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { tx, rx })
    }

    /// Sends a request.
    pub async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    /// The next response; panics on error or timeout.
    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no response within the wait")
            .expect("response, not an error")
            .expect("stream still open")
    }

    /// The status the stream ends with.
    pub async fn recv_error(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.rx.message()).await.expect("no response within the wait") {
            Err(status) => status,
            Ok(other) => panic!("expected an error status, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for [`SILENCE`].
    pub async fn expect_silence(&mut self) {
        if let Ok(msg) = tokio::time::timeout(SILENCE, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }

    /// ACKs a response.
    pub async fn ack(&self, type_url: &str, r: &DeltaDiscoveryResponse) {
        self.send(delta_request(None, type_url, &[], &[], &r.nonce)).await;
    }
}

/// The names of the resources in a delta response.
pub fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|x| x.name.clone()).collect()
}

/// A minimal HTTP/1.1 exchange over loopback (`Connection: close`): returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange).await.expect("HTTP answer in time");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    for _ in 0..100_000 {
        let Some((size, rest)) = body.split_once("\r\n") else { break };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
