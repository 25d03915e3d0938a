//! From registry services to the four xDS resources a proxyless gRPC client needs.
//!
//! A client dialing `xds:///NAME` walks this chain (XDS-PROTOCOL.md rules 22-25, gRFC A27):
//!
//! ```text
//! Listener NAME ── api_listener: HttpConnectionManager { rds: ads, router filter }
//!   └─ RouteConfiguration NAME ── virtual host "*" ── route "/" ─► cluster NAME
//!        └─ Cluster NAME ── type EDS (ads), ROUND_ROBIN
//!             └─ ClusterLoadAssignment NAME ── one locality, weight 1 ── endpoints
//! ```
//!
//! Every link is a hard requirement of the clients: without the router filter they NACK the
//! Listener; with an unsupported `lb_policy` they NACK every Cluster; a locality without a
//! `load_balancing_weight` of at least 1 is silently dropped and RPCs time out.

use prost::{Message, Name};
use xds_cache::Snapshot;
use xds_core::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus,
    Locality, SocketAddress,
};
use xds_core::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_core::envoy::config::listener::v3::{ApiListener, Listener};
use xds_core::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use xds_core::envoy::extensions::filters::http::router::v3::Router;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use xds_core::google::protobuf::{Any, Duration, UInt32Value};

use crate::registry::{Registry, Service};

/// The name of the router HTTP filter; gRPC clients require it last in the filter chain.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// The locality zone every endpoint is placed in.
pub const DEFAULT_ZONE: &str = "default";

/// The cluster connect timeout.
pub const CONNECT_TIMEOUT_SECONDS: i64 = 1;

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

/// The Listener for `xds:///NAME`: an API listener whose HTTP connection manager fetches the
/// route configuration `name` over ADS and ends with the router filter.
pub fn listener(name: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener { api_listener: Some(any(&hcm)) }),
        ..Default::default()
    }
}

/// The RouteConfiguration `name`: every authority and every path go to cluster `name`.
pub fn route_configuration(name: &str) -> RouteConfiguration {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    };
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

/// The Cluster `name`: endpoints from EDS over ADS (service name `name`), round robin.
pub fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ads()), service_name: name.to_string() }),
        lb_policy: LbPolicy::RoundRobin as i32,
        connect_timeout: Some(Duration { seconds: CONNECT_TIMEOUT_SECONDS, nanos: 0 }),
        ..Default::default()
    }
}

/// The ClusterLoadAssignment of a service: its endpoints, healthy, weight 1, in one locality
/// of weight 1 (a locality without a weight is dropped by gRPC clients).
pub fn load_assignment(service: &Service) -> ClusterLoadAssignment {
    let lb_endpoints = service
        .endpoints
        .iter()
        .map(|addr| LbEndpoint {
            health_status: HealthStatus::Healthy as i32,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: addr.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(addr.port()))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: service.name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality { zone: DEFAULT_ZONE.to_string(), ..Default::default() }),
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Builds the snapshot of a whole registry and checks that every reference resolves.
///
/// All four types are always present, even when empty, so removing the last service deletes
/// it from clients rather than leaving them with stale configuration.
pub fn snapshot(registry: &Registry) -> Result<Snapshot, xds_cache::Error> {
    use xds_core::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
    let builder = Snapshot::builder().empty_type(CLUSTER).empty_type(ENDPOINT).empty_type(LISTENER).empty_type(ROUTE);
    let snapshot = registry
        .services
        .iter()
        .fold(builder, |b, s| {
            b.resource(&listener(&s.name))
                .resource(&route_configuration(&s.name))
                .resource(&cluster(&s.name))
                .resource(&load_assignment(s))
        })
        .build();
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

    #[test]
    fn snapshot_is_consistent_and_complete() {
        let snapshot = snapshot(&registry()).expect("consistent");
        for t in [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT] {
            let set = snapshot.get(t).expect("type present");
            assert_eq!(set.len(), 2, "{t}");
            assert!(set.contains("myservice") && set.contains("other"), "{t}");
        }
        let empty = super::snapshot(&Registry { services: vec![] }).expect("consistent");
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
        let cluster = cluster("myservice");
        assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin as i32);
        assert_eq!(cluster.cluster_discovery_type, Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)));
        let eds = cluster.eds_cluster_config.expect("eds config");
        assert_eq!(eds.service_name, "myservice");
        assert!(eds.eds_config.is_some());
    }

    #[test]
    fn load_assignment_has_weighted_locality_and_healthy_endpoints() {
        let registry = registry();
        let cla = load_assignment(&registry.services[0]);
        assert_eq!(cla.cluster_name, "myservice");
        assert_eq!(cla.endpoints.len(), 1);
        let locality = &cla.endpoints[0];
        assert!(locality.load_balancing_weight.as_ref().is_some_and(|w| w.value >= 1));
        assert_eq!(locality.locality.as_ref().map(|l| l.zone.as_str()), Some(DEFAULT_ZONE));
        let addrs: Vec<(String, u32)> = locality
            .lb_endpoints
            .iter()
            .map(|e| {
                assert_eq!(e.health_status, HealthStatus::Healthy as i32);
                assert_eq!(e.load_balancing_weight, Some(UInt32Value { value: 1 }));
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
            })
            .collect();
        assert_eq!(addrs, vec![("127.0.0.1".to_string(), 50051), ("::1".to_string(), 50052)]);
    }
}
