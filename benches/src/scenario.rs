//! The configuration a load run serves: `clusters` EDS clusters of `endpoints` endpoints each,
//! one listener and one route configuration, shaped like what Envoy receives from a mesh.
//!
//! Updates are numbered by a *generation* that the resources carry where a client can see it:
//! an endpoint's port is [`BASE_PORT`] plus the generation of its last change, so a client that
//! decodes a `ClusterLoadAssignment` knows which update it holds (see [`cla_generation`]).

use std::sync::Arc;

use xds_cache::{Snapshot, SnapshotCache};
use xds_core::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy};
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::config::core::v3::{
    address, config_source, socket_address::PortSpecifier, Address, AggregatedConfigSource, ApiVersion, ConfigSource,
    SocketAddress,
};
use xds_core::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_core::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use xds_core::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use xds_core::envoy::extensions::filters::http::router::v3::Router;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use xds_core::google::protobuf::{Any, Duration, UInt32Value};
use xds_core::prost::{Message, Name};
use xds_core::{ResourceSet, XdsResource};

/// The port of an endpoint that never changed; an update of generation `g` sets `BASE_PORT + g`.
pub const BASE_PORT: u32 = 10_000;
/// The name of the listener.
pub const LISTENER_NAME: &str = "listener-0";
/// The name of the route configuration.
pub const ROUTE_NAME: &str = "route-0";
/// The node group every client of a load run belongs to.
pub const GROUP: &str = "load";
/// At most this many routes (one per cluster) in the route configuration.
pub const MAX_ROUTES: usize = 100;

/// What one update changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateKind {
    /// Every endpoint of every cluster (one new snapshot, every `ClusterLoadAssignment` changes).
    All,
    /// One endpoint of one cluster, through the per-resource path
    /// ([`SnapshotCache::upsert_resource`]); the cluster is `generation % clusters`.
    One,
}

/// The name of cluster `i` (and of its `ClusterLoadAssignment`).
pub fn cluster_name(i: usize) -> String {
    format!("cluster-{i}")
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// An EDS cluster fed over ADS, round robin.
pub fn cluster(i: usize) -> Cluster {
    Cluster {
        name: cluster_name(i),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ads()), service_name: String::new() }),
        lb_policy: LbPolicy::RoundRobin as i32,
        connect_timeout: Some(Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    }
}

/// The endpoints of cluster `i`: `n` endpoints on port `BASE_PORT + generation`, except the
/// first, on `BASE_PORT + first_generation` when that is later.
pub fn load_assignment(i: usize, n: usize, generation: u32, first_generation: u32) -> ClusterLoadAssignment {
    let lb_endpoints = (0..n)
        .map(|e| {
            let g = if e == 0 { generation.max(first_generation) } else { generation };
            LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: format!("10.{}.{}.{}", (i >> 8) & 255, i & 255, e % 250 + 1),
                            port_specifier: Some(PortSpecifier::PortValue(BASE_PORT + g)),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                load_balancing_weight: Some(UInt32Value { value: 1 }),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster_name(i),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The generation of a decoded `ClusterLoadAssignment`: the latest update it reflects.
pub fn cla_generation(cla: &ClusterLoadAssignment) -> u32 {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match ep.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(sa) => match sa.port_specifier {
                    Some(PortSpecifier::PortValue(p)) => Some(p.saturating_sub(BASE_PORT)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// A listener on port 10000 whose HTTP connection manager takes its routes from RDS over ADS.
pub fn listener() -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "ingress".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTE_NAME.into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: LISTENER_NAME.into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(PortSpecifier::PortValue(10_000)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One virtual host for every domain, one prefix route per cluster (at most [`MAX_ROUTES`]).
pub fn route_configuration(clusters: usize) -> RouteConfiguration {
    let routes = (0..clusters.min(MAX_ROUTES))
        .map(|i| Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix(format!("/{}", cluster_name(i)))),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster_name(i))),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    RouteConfiguration {
        name: ROUTE_NAME.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The shape of the served configuration and the state of its updates.
#[derive(Debug, Clone)]
pub struct Scenario {
    clusters: usize,
    endpoints: usize,
    generation: u32,
    /// Per cluster: the generation of all its endpoints, and of its first endpoint.
    cluster_generation: Vec<(u32, u32)>,
    /// The encoded clusters, listener and route configuration (they never change).
    fixed: Vec<xds_core::EncodedResource>,
}

impl Scenario {
    /// `clusters` clusters of `endpoints` endpoints each, at generation 0.
    pub fn new(clusters: usize, endpoints: usize) -> Self {
        let mut fixed: Vec<_> = (0..clusters).map(|i| cluster(i).encode_resource()).collect();
        fixed.push(listener().encode_resource());
        fixed.push(route_configuration(clusters).encode_resource());
        Self { clusters, endpoints, generation: 0, cluster_generation: vec![(0, 0); clusters], fixed }
    }

    /// Number of clusters.
    pub fn clusters(&self) -> usize {
        self.clusters
    }

    /// The generation of the latest update (0: none yet).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn encoded_cla(&self, i: usize) -> xds_core::EncodedResource {
        let (g, first) = self.cluster_generation[i];
        load_assignment(i, self.endpoints, g, first).encode_resource()
    }

    /// The full snapshot of the current generation.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::builder()
            .encoded_all(self.fixed.iter().cloned())
            .encoded_all((0..self.clusters).map(|i| self.encoded_cla(i)))
            .build()
    }

    /// Every `ClusterLoadAssignment` of the current generation, as a set.
    pub fn endpoint_set(&self) -> Arc<ResourceSet> {
        Arc::new(ResourceSet::from_resources(
            xds_core::type_url::ENDPOINT,
            (0..self.clusters).map(|i| self.encoded_cla(i)),
        ))
    }

    /// Advances to the next generation with `kind` and publishes it to `cache` (group
    /// [`GROUP`]). Returns the new generation and, for [`UpdateKind::One`], the changed cluster.
    pub fn update(&mut self, cache: &SnapshotCache, kind: UpdateKind) -> (u32, Option<usize>) {
        self.generation += 1;
        let g = self.generation;
        match kind {
            UpdateKind::All => {
                for c in &mut self.cluster_generation {
                    *c = (g, c.1);
                }
                cache.set_snapshot(GROUP, self.snapshot());
                (g, None)
            }
            UpdateKind::One => {
                let i = (g as usize) % self.clusters.max(1);
                if let Some(c) = self.cluster_generation.get_mut(i) {
                    c.1 = g;
                    cache.upsert_resource(GROUP, self.encoded_cla(i));
                }
                (g, Some(i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_visible_to_clients() {
        let cache = SnapshotCache::new();
        let mut s = Scenario::new(3, 4);
        cache.set_snapshot(GROUP, s.snapshot());
        let eds = |cache: &SnapshotCache, i: usize| {
            let snap = cache.snapshot(GROUP).expect("snapshot");
            let set = snap.get(xds_core::type_url::ENDPOINT).expect("eds").clone();
            cla_generation(&set.get(&cluster_name(i)).expect("cla").decode().expect("decodes"))
        };
        assert_eq!(eds(&cache, 0), 0);
        assert_eq!(s.update(&cache, UpdateKind::All), (1, None));
        assert_eq!((eds(&cache, 0), eds(&cache, 2)), (1, 1));
        assert_eq!(s.update(&cache, UpdateKind::One), (2, Some(2)));
        assert_eq!((eds(&cache, 1), eds(&cache, 2)), (1, 2));
        assert!(cache.snapshot(GROUP).expect("snapshot").missing().is_empty());
    }
}
