//! From the registry to xDS resources.
//!
//! Every service becomes the four resources a proxyless gRPC client dialing `xds:///NAME`
//! walks (XDS-PROTOCOL.md rules 22-25, gRFC A27); Envoy uses the same Cluster and
//! ClusterLoadAssignment:
//!
//! ```text
//! Listener NAME ── api_listener: HttpConnectionManager { rds: ads, router filter }
//!   └─ RouteConfiguration NAME ── virtual host "*" ── route "/" ─► cluster NAME
//!        └─ Cluster NAME ── type EDS (ads), lb_policy, connect_timeout, HTTP/2 upstream for Envoy
//!             └─ ClusterLoadAssignment NAME ── one LocalityLbEndpoints per locality
//!                  (weight = sum of its endpoints' weights, >= 1) ── weighted endpoints
//! ```
//!
//! Every link is a hard requirement of the gRPC clients: without the router filter they NACK
//! the Listener; with an unsupported `lb_policy` they NACK the Cluster; a locality without a
//! `load_balancing_weight` of at least 1 is silently dropped and RPCs time out.
//!
//! Every Envoy listener of the registry becomes a Listener bound to its address and port, with
//! one filter chain holding an HttpConnectionManager (RDS over ADS, router filter, optional TLS
//! with certificates from SDS), and a RouteConfiguration of the same name. Every secret becomes
//! an SDS Secret with its PEM content inline.
//!
//! Envoy receives the services' API listeners too (it subscribes to every Listener); it skips
//! them with a warning ("only one ApiListener is allowed, and it can only be added via
//! bootstrap"), which does not reject the update.

use prost::{Message, Name};
use xds_cache::Snapshot;
use xds_core::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy};
use xds_core::envoy::config::cluster::v3::{load_balancing_policy, Cluster, LoadBalancingPolicy};
use xds_core::envoy::config::core::v3::{
    address, config_source, data_source, socket_address, transport_socket, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, DataSource, HealthStatus, Http1ProtocolOptions, Http2ProtocolOptions, Locality, Metadata,
    SocketAddress, TransportSocket, TypedExtensionConfig,
};
use xds_core::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_core::envoy::config::listener::v3::{filter, ApiListener, Filter, FilterChain, Listener};
use xds_core::envoy::config::route::v3::{
    header_matcher, route, route_action, route_match, weighted_cluster, HeaderMatcher, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use xds_core::envoy::extensions::filters::http::router::v3::Router;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use xds_core::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
use xds_core::envoy::extensions::load_balancing_policies::maglev::v3::Maglev;
use xds_core::envoy::extensions::load_balancing_policies::random::v3::Random;
use xds_core::envoy::extensions::load_balancing_policies::ring_hash::v3::{ring_hash, RingHash};
use xds_core::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use xds_core::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, secret, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    Secret, TlsCertificate,
};
use xds_core::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use xds_core::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use xds_core::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use xds_core::google::protobuf::{value, Any, BoolValue, Duration, ListValue, Struct, UInt32Value, Value};

use crate::registry::{self, Protocol, Registry, RouteTarget, SecretKind, Service};

/// The name of the router HTTP filter; gRPC clients require it last in the filter chain.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// The name of the HTTP connection manager network filter.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";

/// The name of the TLS transport socket.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The key of `typed_extension_protocol_options` that sets a cluster's upstream HTTP version.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The filter-metadata namespace endpoint metadata is published under (Envoy's subset load
/// balancer reads it).
pub const ENDPOINT_METADATA_NAMESPACE: &str = "envoy.lb";

/// The locality zone of endpoints that do not name one.
pub const DEFAULT_ZONE: &str = registry::DEFAULT_ZONE;

/// Packs a message into the `google.protobuf.Any` of `envoy-types` (not `prost_types`).
fn any<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

/// Resources fetched over the same ADS stream the client already has open.
fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn duration(d: std::time::Duration) -> Duration {
    Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 }
}

fn socket_address(ip: std::net::IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// An HTTP connection manager that fetches route configuration `route_name` over ADS and ends
/// with the router filter.
fn http_connection_manager(stat_prefix: &str, route_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The Listener for `xds:///NAME`: an API listener whose HTTP connection manager fetches the
/// route configuration `name` over ADS and ends with the router filter.
pub fn listener(name: &str) -> Listener {
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener { api_listener: Some(any(&http_connection_manager(name, name))) }),
        ..Default::default()
    }
}

fn route_to(prefix: &str, headers: Vec<HeaderMatcher>, cluster: route_action::ClusterSpecifier) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_string())),
            headers,
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction { cluster_specifier: Some(cluster), ..Default::default() })),
        ..Default::default()
    }
}

/// The RouteConfiguration `name`: every authority and every path go to cluster `name`.
pub fn route_configuration(name: &str) -> RouteConfiguration {
    let route = route_to("/", Vec::new(), route_action::ClusterSpecifier::Cluster(name.to_string()));
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// How a Cluster asks for a registry policy: its `lb_policy`, and for some its
/// `load_balancing_policy`.
///
/// Round robin and ring hash go in `lb_policy`, which Envoy and every proxyless gRPC client
/// read. The others go in `load_balancing_policy`: a list in order of preference, from which
/// each client takes the first policy it implements (gRFC A52; Envoy 1.25 and later) and
/// ignores `lb_policy`. Envoy gets the policy asked for; a gRPC client without it gets ring hash
/// (for maglev, the other consistent hash) or round robin, where the policy in `lb_policy`
/// alone makes it NACK the Cluster (grpc-js: "unsupported lb_policy: LEAST_REQUEST"). Their
/// `lb_policy` stays `ROUND_ROBIN`: a client that reads only that field (an Envoy before 1.25,
/// an old gRPC) balances round robin rather than rejecting the Cluster.
pub fn lb_config(policy: registry::LbPolicy) -> (LbPolicy, Option<LoadBalancingPolicy>) {
    let preferences = |first: TypedExtensionConfig, fallbacks: &[TypedExtensionConfig]| {
        let policies = std::iter::once(first)
            .chain(fallbacks.iter().cloned())
            .map(|config| load_balancing_policy::Policy { typed_extension_config: Some(config) })
            .collect();
        (LbPolicy::RoundRobin, Some(LoadBalancingPolicy { policies }))
    };
    let round_robin = extension("envoy.load_balancing_policies.round_robin", &RoundRobin::default());
    match policy {
        registry::LbPolicy::RingHash => (LbPolicy::RingHash, None),
        registry::LbPolicy::LeastRequest => preferences(
            extension("envoy.load_balancing_policies.least_request", &LeastRequest::default()),
            &[round_robin],
        ),
        registry::LbPolicy::Random => {
            preferences(extension("envoy.load_balancing_policies.random", &Random::default()), &[round_robin])
        }
        registry::LbPolicy::Maglev => preferences(
            extension("envoy.load_balancing_policies.maglev", &Maglev::default()),
            // xxHash named: gRPC's ring hash takes no other, and not DEFAULT_HASH either.
            &[
                extension(
                    "envoy.load_balancing_policies.ring_hash",
                    &RingHash { hash_function: ring_hash::HashFunction::XxHash as i32, ..Default::default() },
                ),
                round_robin,
            ],
        ),
        registry::LbPolicy::RoundRobin => (LbPolicy::RoundRobin, None),
    }
}

/// A typed extension config named `name`.
fn extension<M: Message + Name>(name: &str, config: &M) -> TypedExtensionConfig {
    TypedExtensionConfig { name: name.to_string(), typed_config: Some(any(config)) }
}

/// The `HttpProtocolOptions` that make Envoy speak `protocol` to the endpoints.
fn http_protocol_options(protocol: Protocol) -> HttpProtocolOptions {
    use explicit_http_config::ProtocolConfig;
    let options = match protocol {
        Protocol::Http1 => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())),
        }),
        Protocol::Auto => UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http_protocol_options: Some(Http1ProtocolOptions::default()),
            http2_protocol_options: Some(Http2ProtocolOptions::default()),
            ..Default::default()
        }),
        // Http2 and any later addition: gRPC needs HTTP/2.
        _ => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())),
        }),
    };
    HttpProtocolOptions { upstream_protocol_options: Some(options), ..Default::default() }
}

/// The Cluster of a service: endpoints from EDS over ADS (service name = the service's name),
/// its load-balancing policy and connect timeout, and the HTTP version Envoy uses upstream
/// (proxyless gRPC clients ignore that option).
pub fn cluster(service: &Service) -> Cluster {
    let (lb_policy, load_balancing_policy) = lb_config(service.lb_policy);
    Cluster {
        name: service.name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ads()), service_name: service.name.clone() }),
        lb_policy: lb_policy as i32,
        load_balancing_policy,
        connect_timeout: Some(duration(service.connect_timeout)),
        typed_extension_protocol_options: [(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            any(&http_protocol_options(service.protocol)),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// A JSON value as a `google.protobuf.Value`.
fn proto_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => value::Kind::NullValue(0),
        serde_json::Value::Bool(b) => value::Kind::BoolValue(*b),
        serde_json::Value::Number(n) => value::Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => value::Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => {
            value::Kind::ListValue(ListValue { values: a.iter().map(proto_value).collect() })
        }
        serde_json::Value::Object(o) => {
            value::Kind::StructValue(Struct { fields: o.iter().map(|(k, v)| (k.clone(), proto_value(v))).collect() })
        }
    };
    Value { kind: Some(kind) }
}

fn lb_endpoint(endpoint: &registry::Endpoint, health: HealthStatus) -> LbEndpoint {
    let metadata = (!endpoint.metadata.is_empty()).then(|| Metadata {
        filter_metadata: [(
            ENDPOINT_METADATA_NAMESPACE.to_string(),
            Struct { fields: endpoint.metadata.iter().map(|(k, v)| (k.clone(), proto_value(v))).collect() },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value { value: endpoint.weight }),
        metadata,
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(endpoint.address.ip(), endpoint.address.port())),
            ..Default::default()
        })),
    }
}

/// The ClusterLoadAssignment of a service with every endpoint healthy (no health checking).
pub fn load_assignment(service: &Service) -> ClusterLoadAssignment {
    load_assignment_with(service, |_| HealthStatus::Healthy)
}

/// The ClusterLoadAssignment of a service, with each endpoint's published health from `health`.
///
/// Endpoints are grouped by locality, in order of first appearance; each locality's
/// `load_balancing_weight` is the sum of its endpoints' weights (at least 1, which the registry
/// guarantees fits in a `u32`), so localities receive traffic in proportion to their capacity.
pub fn load_assignment_with(
    service: &Service,
    health: impl Fn(&registry::Endpoint) -> HealthStatus,
) -> ClusterLoadAssignment {
    let mut localities: Vec<(&registry::Locality, Vec<LbEndpoint>, u32)> = Vec::new();
    for endpoint in &service.endpoints {
        let lb = lb_endpoint(endpoint, health(endpoint));
        match localities.iter_mut().find(|(l, _, _)| **l == endpoint.locality) {
            Some((_, endpoints, weight)) => {
                endpoints.push(lb);
                *weight = weight.saturating_add(endpoint.weight);
            }
            None => localities.push((&endpoint.locality, vec![lb], endpoint.weight)),
        }
    }
    ClusterLoadAssignment {
        cluster_name: service.name.clone(),
        endpoints: localities
            .into_iter()
            .map(|(locality, lb_endpoints, weight)| LocalityLbEndpoints {
                locality: Some(Locality {
                    region: locality.region.clone(),
                    zone: locality.zone.clone(),
                    sub_zone: locality.sub_zone.clone(),
                }),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value { value: weight.max(1) }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig { name: name.to_string(), sds_config: Some(ads()) }
}

/// An Envoy listener: bound to its address and port, one filter chain with an HTTP connection
/// manager fetching the RouteConfiguration of the listener's name over ADS, and TLS with
/// certificates fetched over SDS when the listener has `tls`.
pub fn envoy_listener(l: &registry::Listener) -> Listener {
    let hcm = http_connection_manager(&l.name, &l.name);
    let transport_socket = l.tls.as_ref().map(|tls| {
        let context = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds(&tls.certificate)],
                validation_context_type: tls
                    .client_ca
                    .as_deref()
                    .map(|ca| common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(ca))),
                ..Default::default()
            }),
            require_client_certificate: tls.client_ca.as_ref().map(|_| BoolValue { value: true }),
            ..Default::default()
        };
        TransportSocket {
            name: TLS_TRANSPORT_SOCKET.to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
        }
    });
    Listener {
        name: l.name.clone(),
        address: Some(socket_address(l.address, l.port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HCM_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            transport_socket,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The RouteConfiguration of an Envoy listener: one virtual host for its domains, its routes
/// in order (first match wins).
pub fn envoy_route_configuration(l: &registry::Listener) -> RouteConfiguration {
    let routes = l
        .routes
        .iter()
        .map(|r| {
            let headers = r
                .headers
                .iter()
                .map(|h| HeaderMatcher {
                    name: h.name.clone(),
                    header_match_specifier: Some(match &h.exact {
                        Some(value) => header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Exact(value.clone())),
                            ..Default::default()
                        }),
                        None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                    }),
                    ..Default::default()
                })
                .collect();
            let cluster = match &r.target {
                RouteTarget::Service(s) => route_action::ClusterSpecifier::Cluster(s.clone()),
                RouteTarget::Split(split) => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: split
                        .iter()
                        .map(|b| weighted_cluster::ClusterWeight {
                            name: b.service.clone(),
                            weight: Some(UInt32Value { value: b.weight }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
            };
            route_to(&r.prefix, headers, cluster)
        })
        .collect();
    RouteConfiguration {
        name: l.name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: l.name.clone(),
            domains: l.domains.clone(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn inline(pem: &registry::PemFile) -> DataSource {
    DataSource { specifier: Some(data_source::Specifier::InlineString(pem.pem.clone())), ..Default::default() }
}

/// The SDS Secret of a registry secret, with the PEM content inline.
pub fn secret(s: &registry::Secret) -> Secret {
    let kind = match &s.kind {
        SecretKind::TlsCertificate { certificate_chain, private_key } => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(certificate_chain)),
            private_key: Some(inline(private_key)),
            ..Default::default()
        }),
        SecretKind::ValidationContext { trusted_ca } => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(trusted_ca)),
            ..Default::default()
        }),
    };
    Secret { name: s.name.clone(), r#type: Some(kind) }
}

/// The number of resources a registry becomes.
pub fn resource_count(registry: &Registry) -> usize {
    registry.services.len() * 4 + registry.listeners.len() * 2 + registry.secrets.len()
}

/// Builds the snapshot of a whole registry, every endpoint healthy, and checks that every
/// reference resolves.
pub fn snapshot(registry: &Registry) -> Result<Snapshot, xds_cache::Error> {
    snapshot_with(registry, |_, _| HealthStatus::Healthy)
}

/// Builds the snapshot of a whole registry, each endpoint's published health from `health`,
/// and checks that every reference resolves ([`Snapshot::check_consistency`]) before returning it.
///
/// Listeners, routes, clusters, endpoints and secrets are always present, even when empty, so
/// removing the last service deletes it from clients rather than leaving them with stale
/// configuration.
pub fn snapshot_with(
    registry: &Registry,
    health: impl Fn(&Service, &registry::Endpoint) -> HealthStatus,
) -> Result<Snapshot, xds_cache::Error> {
    use xds_core::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
    let builder = Snapshot::builder()
        .empty_type(CLUSTER)
        .empty_type(ENDPOINT)
        .empty_type(LISTENER)
        .empty_type(ROUTE)
        .empty_type(SECRET);
    let builder = registry.services.iter().fold(builder, |b, s| {
        b.resource(&listener(&s.name))
            .resource(&route_configuration(&s.name))
            .resource(&cluster(s))
            .resource(&load_assignment_with(s, |e| health(s, e)))
    });
    let builder = registry
        .listeners
        .iter()
        .fold(builder, |b, l| b.resource(&envoy_listener(l)).resource(&envoy_route_configuration(l)));
    let snapshot = registry.secrets.iter().fold(builder, |b, s| b.resource(&secret(s))).build();
    snapshot.check_consistency()?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_core::type_url;

    fn registry() -> Registry {
        Registry::parse(
            "services:\n  - name: myservice\n    endpoints: [127.0.0.1:50051, \"[::1]:50052\"]\n  - name: other\n    endpoints: []\n",
        )
        .expect("valid registry")
    }

    fn addr_of(e: &LbEndpoint) -> (String, u32) {
        match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address { address: Some(address::Address::SocketAddress(sa)) }),
                ..
            })) => match sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => (sa.address.clone(), p),
                _ => panic!("no port"),
            },
            other => panic!("unexpected host identifier {other:?}"),
        }
    }

    #[test]
    fn snapshot_is_consistent_and_complete() {
        let snapshot = snapshot(&registry()).expect("consistent");
        for t in [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT] {
            let set = snapshot.get(t).expect("type present");
            assert_eq!(set.len(), 2, "{t}");
            assert!(set.contains("myservice") && set.contains("other"), "{t}");
        }
        assert_eq!(snapshot.get(type_url::SECRET).map(|s| s.len()), Some(0));
        let empty = super::snapshot(&Registry::default()).expect("consistent");
        assert_eq!(empty.get(type_url::LISTENER).map(|s| s.len()), Some(0));
        assert_eq!(empty.get(type_url::CLUSTER).map(|s| s.len()), Some(0));
    }

    #[test]
    fn snapshot_versions_follow_content() {
        let a = snapshot(&registry()).expect("consistent");
        let b = snapshot(&registry()).expect("consistent");
        assert_eq!(a.version(type_url::ENDPOINT), b.version(type_url::ENDPOINT));
        let mut changed = registry();
        changed.services[0].endpoints.pop();
        let c = snapshot(&changed).expect("consistent");
        assert_ne!(a.version(type_url::ENDPOINT), c.version(type_url::ENDPOINT));
        assert_eq!(a.version(type_url::LISTENER), c.version(type_url::LISTENER));
    }

    #[test]
    fn listener_holds_rds_over_ads_and_the_router_filter() {
        let snapshot = snapshot(&registry()).expect("consistent");
        let listener: Listener = snapshot
            .get(type_url::LISTENER)
            .and_then(|s| s.get("myservice"))
            .expect("listener")
            .decode()
            .expect("decodes");
        assert_eq!(listener.name, "myservice");
        let any = listener.api_listener.and_then(|a| a.api_listener).expect("api_listener");
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm decodes");
        match hcm.route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
                assert_eq!(rds.route_config_name, "myservice");
                let source = rds.config_source.expect("config source");
                assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
                assert!(matches!(source.config_source_specifier, Some(config_source::ConfigSourceSpecifier::Ads(_))));
            }
            other => panic!("expected rds, got {other:?}"),
        }
        assert_eq!(hcm.http_filters.len(), 1);
        let router = &hcm.http_filters[0];
        assert_eq!(router.name, ROUTER_FILTER);
        match &router.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => {
                assert_eq!(any.type_url, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
                Router::decode(any.value.as_slice()).expect("router decodes");
            }
            other => panic!("expected a typed router config, got {other:?}"),
        }
    }

    #[test]
    fn route_and_cluster_point_at_the_service() {
        let route = route_configuration("myservice");
        let vh = &route.virtual_hosts[0];
        assert_eq!(vh.domains, vec!["*"]);
        assert!(matches!(
            &vh.routes[0].action,
            Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c)),
                ..
            })) if c == "myservice"
        ));
        let cluster = cluster(&registry().services[0]);
        assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin as i32);
        assert_eq!(cluster.cluster_discovery_type, Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)));
        assert_eq!(cluster.connect_timeout, Some(Duration { seconds: 1, nanos: 0 }));
        let eds = cluster.eds_cluster_config.expect("eds config");
        assert_eq!(eds.service_name, "myservice");
        assert!(eds.eds_config.is_some());
        let options = &cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        assert_eq!(options.type_url, format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"));
        let options = HttpProtocolOptions::decode(options.value.as_slice()).expect("decodes");
        assert!(matches!(
            options.upstream_protocol_options,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_))
            }))
        ));
    }

    #[test]
    fn cluster_carries_policy_and_timeout() {
        let r = Registry::parse(
            "services:\n  - {name: a, endpoints: [], lb_policy: maglev, connect_timeout: 1500ms, protocol: http1}\n  - {name: b, endpoints: [], lb_policy: least_request, protocol: auto}\n  - {name: c, endpoints: [], lb_policy: ring_hash}\n  - {name: d, endpoints: [], lb_policy: random}\n",
        )
        .expect("valid");
        let clusters: Vec<Cluster> = r.services.iter().map(cluster).collect();
        // The policies in order of preference, each client taking the first it implements.
        let preferences = |c: &Cluster| -> Vec<String> {
            let listed = c.load_balancing_policy.as_ref().map(|p| p.policies.clone()).unwrap_or_default();
            listed
                .iter()
                .map(|p| p.typed_extension_config.as_ref().and_then(|t| t.typed_config.as_ref()).expect("typed"))
                .map(|any| any.type_url.rsplit('.').nth(2).expect("a package").to_string())
                .collect()
        };
        assert_eq!(preferences(&clusters[0]), ["maglev", "ring_hash", "round_robin"]);
        assert_eq!(clusters[0].connect_timeout, Some(Duration { seconds: 1, nanos: 500_000_000 }));
        assert_eq!(preferences(&clusters[1]), ["least_request", "round_robin"]);
        assert_eq!((clusters[2].lb_policy, preferences(&clusters[2]).len()), (LbPolicy::RingHash as i32, 0));
        assert_eq!(preferences(&clusters[3]), ["random", "round_robin"]);
        let options = |c: &Cluster| {
            HttpProtocolOptions::decode(c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].value.as_slice())
                .expect("decodes")
                .upstream_protocol_options
        };
        assert!(matches!(
            options(&clusters[0]),
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(_))
            }))
        ));
        assert!(matches!(options(&clusters[1]), Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))));
    }

    #[test]
    fn load_assignment_has_weighted_locality_and_healthy_endpoints() {
        let registry = registry();
        let cla = load_assignment(&registry.services[0]);
        assert_eq!(cla.cluster_name, "myservice");
        assert_eq!(cla.endpoints.len(), 1);
        let locality = &cla.endpoints[0];
        assert_eq!(locality.load_balancing_weight, Some(UInt32Value { value: 2 }));
        assert_eq!(locality.locality.as_ref().map(|l| l.zone.as_str()), Some(DEFAULT_ZONE));
        let addrs: Vec<(String, u32)> = locality
            .lb_endpoints
            .iter()
            .map(|e| {
                assert_eq!(e.health_status, HealthStatus::Healthy as i32);
                assert_eq!(e.load_balancing_weight, Some(UInt32Value { value: 1 }));
                assert_eq!(e.metadata, None);
                addr_of(e)
            })
            .collect();
        assert_eq!(addrs, vec![("127.0.0.1".to_string(), 50051), ("::1".to_string(), 50052)]);
        // No endpoints: no locality at all (never a locality of weight 0).
        assert!(load_assignment(&registry.services[1]).endpoints.is_empty());
    }

    #[test]
    fn endpoints_are_grouped_by_locality_with_summed_weights() {
        let r = Registry::parse(
            "services:\n  - name: a\n    endpoints:\n      - {address: 10.0.0.1:1, weight: 2, zone: z1}\n      - {address: 10.0.0.2:1, weight: 3, locality: {region: r, zone: z2}}\n      - {address: 10.0.0.3:1, weight: 5, zone: z1, metadata: {version: v2, tags: [a, b]}}\n      - 10.0.0.4:1\n",
        )
        .expect("valid");
        let service = &r.services[0];
        let cla = load_assignment_with(service, |e| {
            if e.address.port() == 1 && e.weight == 3 {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Healthy
            }
        });
        let summary: Vec<(String, String, u32, Vec<String>)> = cla
            .endpoints
            .iter()
            .map(|l| {
                let loc = l.locality.clone().expect("locality");
                (
                    loc.region,
                    loc.zone,
                    l.load_balancing_weight.as_ref().map_or(0, |w| w.value),
                    l.lb_endpoints.iter().map(|e| addr_of(e).0).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("".into(), "z1".into(), 7, vec!["10.0.0.1".into(), "10.0.0.3".into()]),
                ("r".into(), "z2".into(), 3, vec!["10.0.0.2".into()]),
                ("".into(), DEFAULT_ZONE.into(), 1, vec!["10.0.0.4".into()]),
            ]
        );
        assert_eq!(cla.endpoints[1].lb_endpoints[0].health_status, HealthStatus::Unhealthy as i32);
        let e = &cla.endpoints[0].lb_endpoints[1];
        assert_eq!(e.load_balancing_weight, Some(UInt32Value { value: 5 }));
        let md = &e.metadata.as_ref().expect("metadata").filter_metadata[ENDPOINT_METADATA_NAMESPACE];
        assert_eq!(md.fields["version"], Value { kind: Some(value::Kind::StringValue("v2".into())) });
        assert!(matches!(&md.fields["tags"].kind, Some(value::Kind::ListValue(l)) if l.values.len() == 2));
    }

    #[test]
    fn envoy_listeners_routes_and_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("c.pem"), pem).expect("write");
        let r = Registry::parse_in(
            "services:\n  - {name: a, endpoints: [10.0.0.1:1]}\n  - {name: b, endpoints: [10.0.0.2:1]}\nsecrets:\n  - {name: cert, tls_certificate: {certificate_chain: c.pem, private_key: c.pem}}\n  - {name: ca, validation_context: {trusted_ca: c.pem}}\nlisteners:\n  - name: web\n    address: 127.0.0.1\n    port: 8443\n    domains: [example.org]\n    tls: {certificate: cert, client_ca: ca}\n    routes:\n      - {prefix: /b, headers: [{name: x-env, exact: prod}, {name: x-debug}], service: b}\n      - {split: [{service: a, weight: 3}, {service: b, weight: 1}]}\n",
            dir.path(),
        )
        .expect("valid");
        let snapshot = snapshot(&r).expect("consistent");
        assert_eq!(snapshot.get(type_url::LISTENER).map(|s| s.len()), Some(3));
        assert_eq!(snapshot.get(type_url::SECRET).map(|s| s.len()), Some(2));
        assert_eq!(resource_count(&r), 12);

        let l: Listener =
            snapshot.get(type_url::LISTENER).and_then(|s| s.get("web")).expect("web").decode().expect("decodes");
        assert_eq!(l.address, Some(socket_address("127.0.0.1".parse().expect("ip"), 8443)));
        assert!(l.api_listener.is_none());
        let chain = &l.filter_chains[0];
        assert_eq!(chain.filters[0].name, HCM_FILTER);
        assert_eq!(xds_cache::rds_names(&l), vec!["web".to_string()]);
        let ts = chain.transport_socket.as_ref().expect("tls");
        assert_eq!(ts.name, TLS_TRANSPORT_SOCKET);
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else { panic!("typed config") };
        let tls = DownstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
        assert_eq!(tls.require_client_certificate, Some(BoolValue { value: true }));
        let common = tls.common_tls_context.expect("common");
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "cert");
        assert!(matches!(
            common.validation_context_type,
            Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(ref s)) if s.name == "ca"
        ));

        let rc = envoy_route_configuration(&r.listeners[0]);
        let vh = &rc.virtual_hosts[0];
        assert_eq!(vh.domains, vec!["example.org"]);
        let m = vh.routes[0].r#match.as_ref().expect("match");
        assert_eq!(m.path_specifier, Some(route_match::PathSpecifier::Prefix("/b".into())));
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers[1].header_match_specifier, Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)));
        match &vh.routes[1].action {
            Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(w)),
                ..
            })) => {
                let weights: Vec<(&str, u32)> =
                    w.clusters.iter().map(|c| (c.name.as_str(), c.weight.as_ref().map_or(0, |w| w.value))).collect();
                assert_eq!(weights, vec![("a", 3), ("b", 1)]);
            }
            other => panic!("expected weighted clusters, got {other:?}"),
        }

        let s: Secret =
            snapshot.get(type_url::SECRET).and_then(|s| s.get("cert")).expect("cert").decode().expect("decodes");
        match s.r#type {
            Some(secret::Type::TlsCertificate(c)) => assert_eq!(
                c.certificate_chain.and_then(|d| d.specifier),
                Some(data_source::Specifier::InlineString(pem.to_string()))
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}
