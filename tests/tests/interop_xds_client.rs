//! Interoperability with a client nobody here wrote: tonic's `xds-client` crate, speaking ADS
//! (SotW) to our server in-process over loopback.
//!
//! The snapshot holds what a proxyless gRPC client needs for the target `xds:///myservice`
//! (XDS-PROTOCOL.md rules 22-25): a Listener whose `api_listener` is an HttpConnectionManager
//! (RDS over ADS, router filter last), a RouteConfiguration, an EDS Cluster (ADS, round robin)
//! and a ClusterLoadAssignment with a weighted locality. The client's resource types validate
//! like a proxyless gRPC client does, so an ACK means "a gRPC client would accept this".
//!
//! Checked: the client receives and decodes all four resources and ACKs each type's version;
//! a changed cluster reaches it and is ACKed; a cluster it must reject is NACKed (the server
//! sees the client's error text) and a fixed one is ACKed again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use xds_cache::{Nack, Snapshot, SnapshotCache};
use xds_client::resource::TypeUrl;
use xds_client::{
    ClientConfig, Node, ProstCodec, Resource, ResourceEvent, ResourceWatcher, TokioRuntime, TonicTransportBuilder,
    XdsClient,
};
use xds_core::bytes::Bytes;
use xds_core::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::config::core::v3::address::Address as AddressKind;
use xds_core::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use xds_core::envoy::config::core::v3::socket_address::PortSpecifier;
use xds_core::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Locality, SocketAddress,
};
use xds_core::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use xds_core::envoy::config::endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints};
use xds_core::envoy::config::listener::v3::{ApiListener, Listener};
use xds_core::envoy::config::route::v3::route::Action;
use xds_core::envoy::config::route::v3::route_action::ClusterSpecifier;
use xds_core::envoy::config::route::v3::route_match::PathSpecifier;
use xds_core::envoy::config::route::v3::{Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost};
use xds_core::envoy::extensions::filters::http::router::v3::Router;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
};
use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use xds_core::prost::{Message, Name};
use xds_core::type_url;
use xds_server::{Callbacks, StreamInfo, XdsServer};

/// The client's node id, also the cache group its snapshot is stored under.
const NODE_ID: &str = "xds-client-interop";
/// The service: Listener, RouteConfiguration, Cluster and ClusterLoadAssignment share it.
const SERVICE: &str = "myservice";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// Every wait on the client or the server is bounded by this.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Resources as a proxyless gRPC client needs them.

fn any<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn listener() -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: SERVICE.into(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.into(),
            config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: SERVICE.into(),
        api_listener: Some(ApiListener { api_listener: Some(any(&hcm)) }),
        ..Default::default()
    }
}

fn route_configuration() -> RouteConfiguration {
    RouteConfiguration {
        name: SERVICE.into(),
        virtual_hosts: vec![VirtualHost {
            name: SERVICE.into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(SERVICE.into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cluster(connect_timeout_secs: i64, lb_policy: LbPolicy) -> Cluster {
    Cluster {
        name: SERVICE.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ads()), service_name: String::new() }),
        lb_policy: lb_policy as i32,
        connect_timeout: Some(PbDuration { seconds: connect_timeout_secs, nanos: 0 }),
        ..Default::default()
    }
}

fn load_assignment(ports: &[u32]) -> ClusterLoadAssignment {
    let endpoint = |port: u32| LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    ClusterLoadAssignment {
        cluster_name: SERVICE.into(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality { zone: "z".into(), ..Default::default() }),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            lb_endpoints: ports.iter().copied().map(endpoint).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn snapshot(cluster: &Cluster) -> Snapshot {
    Snapshot::builder()
        .resource(&listener())
        .resource(&route_configuration())
        .resource(cluster)
        .resource(&load_assignment(&[50051, 50052]))
        .build()
}

// ---------------------------------------------------------------------------------------------
// The client side: resource types that validate the way a proxyless gRPC client does
// (gRFC A27), reduced to what the test asserts.

fn invalid(message: impl Into<String>) -> xds_client::Error {
    xds_client::Error::Validation(message.into())
}

fn is_ads(source: Option<&ConfigSource>) -> bool {
    matches!(source.and_then(|s| s.config_source_specifier.as_ref()), Some(ConfigSourceSpecifier::Ads(_)))
}

/// A Listener as a gRPC client sees it.
#[derive(Debug)]
struct GrpcListener {
    name: String,
    route_config_name: String,
    filters: Vec<String>,
}

impl Resource for GrpcListener {
    type Message = Listener;
    const TYPE_URL: TypeUrl = TypeUrl::new(type_url::LISTENER);

    fn deserialize(bytes: Bytes) -> xds_client::Result<Listener> {
        Ok(Listener::decode(bytes)?)
    }

    fn name(message: &Listener) -> &str {
        &message.name
    }

    fn validate(message: Listener) -> xds_client::Result<Self> {
        let api = message.api_listener.and_then(|a| a.api_listener).ok_or_else(|| invalid("no api_listener"))?;
        if api.type_url != HttpConnectionManager::type_url() {
            return Err(invalid(format!("api_listener is a {}", api.type_url)));
        }
        let hcm = HttpConnectionManager::decode(api.value.as_slice())?;
        let route_config_name = match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) if is_ads(rds.config_source.as_ref()) => rds.route_config_name,
            other => return Err(invalid(format!("route specifier is not RDS over ADS: {other:?}"))),
        };
        let router_last = hcm.http_filters.last().is_some_and(
            |f| matches!(&f.config_type, Some(ConfigType::TypedConfig(c)) if c.type_url == Router::type_url()),
        );
        if !router_last {
            return Err(invalid("the last HTTP filter is not the router"));
        }
        let filters = hcm.http_filters.into_iter().map(|f| f.name).collect();
        Ok(Self { name: message.name, route_config_name, filters })
    }
}

/// A RouteConfiguration as a gRPC client sees it: the cluster of the virtual host matching
/// the service.
#[derive(Debug)]
struct GrpcRoute {
    name: String,
    cluster: String,
}

impl Resource for GrpcRoute {
    type Message = RouteConfiguration;
    const TYPE_URL: TypeUrl = TypeUrl::new(type_url::ROUTE);
    const ALL_RESOURCES_REQUIRED_IN_SOTW: bool = false;

    fn deserialize(bytes: Bytes) -> xds_client::Result<RouteConfiguration> {
        Ok(RouteConfiguration::decode(bytes)?)
    }

    fn name(message: &RouteConfiguration) -> &str {
        &message.name
    }

    fn validate(message: RouteConfiguration) -> xds_client::Result<Self> {
        let host = message
            .virtual_hosts
            .iter()
            .find(|h| h.domains.iter().any(|d| d == "*" || d == SERVICE))
            .ok_or_else(|| invalid(format!("no virtual host matches {SERVICE}")))?;
        let cluster = host
            .routes
            .iter()
            .find_map(|r| match &r.action {
                Some(Action::Route(RouteAction { cluster_specifier: Some(ClusterSpecifier::Cluster(c)), .. })) => {
                    Some(c.clone())
                }
                _ => None,
            })
            .ok_or_else(|| invalid("no route to a cluster"))?;
        Ok(Self { name: message.name, cluster })
    }
}

/// A Cluster as a gRPC client sees it; only EDS over ADS with round robin is accepted.
#[derive(Debug)]
struct GrpcCluster {
    name: String,
    connect_timeout_secs: i64,
}

impl Resource for GrpcCluster {
    type Message = Cluster;
    const TYPE_URL: TypeUrl = TypeUrl::new(type_url::CLUSTER);

    fn deserialize(bytes: Bytes) -> xds_client::Result<Cluster> {
        Ok(Cluster::decode(bytes)?)
    }

    fn name(message: &Cluster) -> &str {
        &message.name
    }

    fn validate(message: Cluster) -> xds_client::Result<Self> {
        if message.cluster_discovery_type != Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
            return Err(invalid("cluster type is not EDS"));
        }
        if !is_ads(message.eds_cluster_config.as_ref().and_then(|c| c.eds_config.as_ref())) {
            return Err(invalid("EDS config source is not ADS"));
        }
        if message.lb_policy != LbPolicy::RoundRobin as i32 {
            return Err(invalid(format!("unsupported lb_policy {:?}", message.lb_policy())));
        }
        Ok(Self { name: message.name, connect_timeout_secs: message.connect_timeout.map_or(0, |d| d.seconds) })
    }
}

/// A ClusterLoadAssignment as a gRPC client sees it: the endpoints of weighted localities.
#[derive(Debug)]
struct GrpcEndpoints {
    name: String,
    addresses: Vec<String>,
}

impl Resource for GrpcEndpoints {
    type Message = ClusterLoadAssignment;
    const TYPE_URL: TypeUrl = TypeUrl::new(type_url::ENDPOINT);
    const ALL_RESOURCES_REQUIRED_IN_SOTW: bool = false;

    fn deserialize(bytes: Bytes) -> xds_client::Result<ClusterLoadAssignment> {
        Ok(ClusterLoadAssignment::decode(bytes)?)
    }

    fn name(message: &ClusterLoadAssignment) -> &str {
        &message.cluster_name
    }

    fn validate(message: ClusterLoadAssignment) -> xds_client::Result<Self> {
        let mut addresses = Vec::new();
        // A locality without a weight is dropped by gRPC clients (XDS-PROTOCOL.md rule 25).
        for locality in message.endpoints.iter().filter(|l| l.load_balancing_weight.is_some_and(|w| w.value >= 1)) {
            for endpoint in &locality.lb_endpoints {
                let Some(HostIdentifier::Endpoint(Endpoint { address: Some(address), .. })) = &endpoint.host_identifier
                else {
                    return Err(invalid("endpoint without an address"));
                };
                let Some(AddressKind::SocketAddress(socket)) = &address.address else {
                    return Err(invalid("endpoint address is not a socket address"));
                };
                let Some(PortSpecifier::PortValue(port)) = socket.port_specifier else {
                    return Err(invalid("endpoint without a port"));
                };
                addresses.push(format!("{}:{port}", socket.address));
            }
        }
        if addresses.is_empty() {
            return Err(invalid("no endpoint in a weighted locality"));
        }
        Ok(Self { name: message.cluster_name, addresses })
    }
}

/// The next resource a watcher receives (ambient errors, such as a first connection attempt
/// racing the server's start, are skipped). Panics on a rejected or missing resource.
async fn next_resource<T: Resource + std::fmt::Debug>(watcher: &mut ResourceWatcher<T>, what: &str) -> Arc<T> {
    let wait = async {
        loop {
            match watcher.next().await {
                Some(ResourceEvent::ResourceChanged { result: Ok(resource), done }) => {
                    drop(done);
                    return resource;
                }
                Some(ResourceEvent::ResourceChanged { result: Err(error), .. }) => {
                    panic!("{what}: the client rejected or lost the resource: {error}")
                }
                Some(ResourceEvent::AmbientError { error, .. }) => eprintln!("{what}: ambient error: {error}"),
                None => panic!("{what}: the xds-client worker stopped"),
            }
        }
    };
    timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("{what}: no resource within {WAIT:?}"))
}

/// Keeps reading a watcher in the background, as a gRPC channel does. Necessary: the client
/// reads the next response only once every watcher has taken the previous one (ADS flow
/// control, gRFC A88), so one unread watcher stalls every type.
fn drain<T: Resource + std::fmt::Debug>(mut watcher: ResourceWatcher<T>, what: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = watcher.next().await {
            match event {
                ResourceEvent::ResourceChanged { result: Ok(_), .. } => {}
                ResourceEvent::ResourceChanged { result: Err(error), .. } => eprintln!("{what}: rejected: {error}"),
                ResourceEvent::AmbientError { error, .. } => eprintln!("{what}: ambient error: {error}"),
            }
        }
    })
}

/// The next error a watcher receives for its resource (a NACKed update).
async fn next_rejection<T: Resource + std::fmt::Debug>(watcher: &mut ResourceWatcher<T>, what: &str) -> String {
    let wait = async {
        loop {
            match watcher.next().await {
                Some(ResourceEvent::ResourceChanged { result: Err(error), .. }) => return error.to_string(),
                Some(ResourceEvent::ResourceChanged { result: Ok(resource), .. }) => {
                    panic!("{what}: expected a rejection, the client accepted {resource:?}")
                }
                Some(ResourceEvent::AmbientError { error, .. }) => eprintln!("{what}: ambient error: {error}"),
                None => panic!("{what}: the xds-client worker stopped"),
            }
        }
    };
    timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("{what}: no rejection within {WAIT:?}"))
}

// ---------------------------------------------------------------------------------------------
// The server side: ACKs and NACKs as our server saw them.

/// What the server saw of the client's replies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// `Callbacks::on_ack`: the client accepted `version`.
    Ack { type_url: String, version: String },
    /// `Callbacks::on_nack`: the client rejected `rejected_version` for `detail`.
    Nack { type_url: String, rejected_version: String, detail: String },
    /// A request carrying `error_detail`, as it arrived: `version_info` must be the last
    /// version the client accepted (XDS-PROTOCOL.md rule 3).
    NackRequest { type_url: String, version_info: String },
}

/// Records every ACK and NACK the server sees, in order.
struct Recorder(watch::Sender<Vec<Seen>>);

impl Callbacks for Recorder {
    fn on_request(&self, _stream: &StreamInfo, request: &DiscoveryRequest) -> Result<(), tonic::Status> {
        if request.error_detail.is_some() {
            let seen =
                Seen::NackRequest { type_url: request.type_url.clone(), version_info: request.version_info.clone() };
            self.0.send_modify(|all| all.push(seen));
        }
        Ok(())
    }

    fn on_ack(&self, _stream: &StreamInfo, type_url: &str, version: &str) {
        let seen = Seen::Ack { type_url: type_url.into(), version: version.into() };
        self.0.send_modify(|all| all.push(seen));
    }

    fn on_nack(&self, _stream: &StreamInfo, type_url: &str, nack: &Nack) {
        let seen = Seen::Nack {
            type_url: type_url.into(),
            rejected_version: nack.rejected_version.to_string(),
            detail: nack.detail.clone(),
        };
        self.0.send_modify(|all| all.push(seen));
    }
}

/// Waits until the server has seen something `wanted` accepts; returns it.
async fn wait_for_seen(seen: &mut watch::Receiver<Vec<Seen>>, what: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
    let found = match timeout(WAIT, seen.wait_for(|all| all.iter().any(&wanted))).await {
        Ok(Ok(all)) => all.iter().find(|s| wanted(s)).cloned(),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("the server saw no {what} within {WAIT:?}; it saw: {:#?}", *seen.borrow()))
}

/// Waits until the server has seen an ACK of `version` of `type_url`.
async fn wait_for_ack(seen: &mut watch::Receiver<Vec<Seen>>, type_url: &str, version: &str) {
    let what = format!("ACK of {type_url} version {version}");
    wait_for_seen(seen, &what, |s| matches!(s, Seen::Ack { type_url: t, version: v } if t == type_url && v == version))
        .await;
}

fn version_of(cache: &SnapshotCache, type_url: &str) -> String {
    cache.snapshot(NODE_ID).and_then(|s| s.version(type_url).map(str::to_string)).expect("type in the snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_client_receives_acks_and_follows_updates() {
    let cache = Arc::new(SnapshotCache::new());
    cache.set_snapshot(NODE_ID, snapshot(&cluster(1, LbPolicy::RoundRobin)));
    let (seen_tx, mut seen) = watch::channel(Vec::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = XdsServer::builder().callbacks(Recorder(seen_tx)).build(cache.clone());
    let server = tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));

    let node = Node::new("grpc", "1.0").with_id(NODE_ID);
    let config = ClientConfig::new(node, format!("http://{addr}")).with_target(format!("xds:///{SERVICE}"));
    let client = XdsClient::builder(config, TonicTransportBuilder::new(), ProstCodec, TokioRuntime).build();

    // Subscribe the way a gRPC channel does: LDS, then what each resource names.
    let mut lds = client.watch::<GrpcListener>(SERVICE).await;
    let got = next_resource(&mut lds, "Listener").await;
    assert_eq!(got.name, SERVICE);
    assert_eq!(got.route_config_name, SERVICE);
    assert_eq!(got.filters, [ROUTER_FILTER]);

    let mut rds = client.watch::<GrpcRoute>(&got.route_config_name).await;
    let route = next_resource(&mut rds, "RouteConfiguration").await;
    assert_eq!((route.name.as_str(), route.cluster.as_str()), (SERVICE, SERVICE));

    let mut cds = client.watch::<GrpcCluster>(&route.cluster).await;
    let got = next_resource(&mut cds, "Cluster").await;
    assert_eq!((got.name.as_str(), got.connect_timeout_secs), (SERVICE, 1));

    let mut eds = client.watch::<GrpcEndpoints>(SERVICE).await;
    let got = next_resource(&mut eds, "ClusterLoadAssignment").await;
    assert_eq!(got.name, SERVICE);
    assert_eq!(got.addresses, ["127.0.0.1:50051", "127.0.0.1:50052"]);

    // From here on only the cluster is read in the foreground.
    let drains = [drain(lds, "Listener"), drain(rds, "RouteConfiguration"), drain(eds, "ClusterLoadAssignment")];

    for t in [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT] {
        wait_for_ack(&mut seen, t, &version_of(&cache, t)).await;
    }
    assert!(seen.borrow().iter().all(|s| matches!(s, Seen::Ack { .. })), "unexpected NACK: {:#?}", *seen.borrow());

    // A changed cluster reaches the client and is ACKed.
    let v1 = version_of(&cache, type_url::CLUSTER);
    cache.set_snapshot(NODE_ID, snapshot(&cluster(2, LbPolicy::RoundRobin)));
    let v2 = version_of(&cache, type_url::CLUSTER);
    assert_ne!(v1, v2, "a changed cluster has a new version");
    let got = next_resource(&mut cds, "updated Cluster").await;
    assert_eq!(got.connect_timeout_secs, 2);
    wait_for_ack(&mut seen, type_url::CLUSTER, &v2).await;

    // A cluster the client must reject is NACKed with its reason; the NACK request carries the
    // last version the client accepted.
    cache.set_snapshot(NODE_ID, snapshot(&cluster(3, LbPolicy::Maglev)));
    let v3 = version_of(&cache, type_url::CLUSTER);
    let rejection = next_rejection(&mut cds, "Maglev Cluster").await;
    assert!(rejection.contains("lb_policy"), "{rejection}");
    let nack = wait_for_seen(&mut seen, "NACK of the Maglev cluster", |s| matches!(s, Seen::Nack { .. })).await;
    let Seen::Nack { type_url: t, rejected_version, detail } = nack else { unreachable!("matched above") };
    assert_eq!((t.as_str(), rejected_version.as_str()), (type_url::CLUSTER, v3.as_str()));
    assert!(detail.contains("lb_policy"), "the server keeps the client's error text: {detail}");
    let request = wait_for_seen(&mut seen, "NACK request", |s| matches!(s, Seen::NackRequest { .. })).await;
    assert_eq!(request, Seen::NackRequest { type_url: type_url::CLUSTER.into(), version_info: v2.clone() });

    // Fixed: accepted and ACKed again.
    cache.set_snapshot(NODE_ID, snapshot(&cluster(4, LbPolicy::RoundRobin)));
    let got = next_resource(&mut cds, "fixed Cluster").await;
    assert_eq!(got.connect_timeout_secs, 4);
    wait_for_ack(&mut seen, type_url::CLUSTER, &version_of(&cache, type_url::CLUSTER)).await;

    for task in drains {
        task.abort();
    }
    drop((cds, client));
    let _ = stop.send(());
    timeout(WAIT, server).await.expect("server stops").expect("server task").expect("server ran without error");
}
