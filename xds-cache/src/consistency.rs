//! Consistency checks: does a snapshot hold everything its resources reference?
//!
//! Envoy waits for referenced resources before it uses a listener or a cluster ("warming"):
//! an EDS cluster without its ClusterLoadAssignment, or a listener whose HttpConnectionManager
//! names a RouteConfiguration that does not exist, stays unusable. The check names each missing
//! resource and who references it.

use std::fmt;

use xds_core::envoy::config::cluster::v3::{cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster};
use xds_core::envoy::config::listener::v3::Listener;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use xds_core::prost::{Message, Name};
use xds_core::{type_url, ResourceSet};

/// One reference the snapshot cannot satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Type URL of the missing resource.
    pub type_url: &'static str,
    /// Name of the missing resource.
    pub name: String,
    /// Who references it, e.g. `cluster "backend"`.
    pub referenced_by: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} (referenced by {}) is missing",
            type_url::short_name(self.type_url),
            self.name,
            self.referenced_by
        )
    }
}

pub(crate) fn describe(missing: &[Missing]) -> String {
    missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Lists what `clusters` and `listeners` reference but `endpoints` and `routes` lack.
///
/// Resources that do not decode are reported as missing themselves, since a client would reject
/// them too.
pub(crate) fn check(
    clusters: Option<&ResourceSet>,
    endpoints: Option<&ResourceSet>,
    listeners: Option<&ResourceSet>,
    routes: Option<&ResourceSet>,
) -> Vec<Missing> {
    let mut missing = Vec::new();
    let has = |set: Option<&ResourceSet>, name: &str| set.is_some_and(|s| s.contains(name));
    for r in clusters.into_iter().flat_map(ResourceSet::iter) {
        let Ok(cluster) = r.decode::<Cluster>() else {
            missing.push(undecodable(type_url::CLUSTER, r.name()));
            continue;
        };
        if cluster.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
            let service = cluster
                .eds_cluster_config
                .as_ref()
                .map(|c| c.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&cluster.name);
            if !has(endpoints, service) {
                missing.push(Missing {
                    type_url: type_url::ENDPOINT,
                    name: service.to_string(),
                    referenced_by: format!("cluster {:?}", cluster.name),
                });
            }
        }
    }
    for r in listeners.into_iter().flat_map(ResourceSet::iter) {
        let Ok(listener) = r.decode::<Listener>() else {
            missing.push(undecodable(type_url::LISTENER, r.name()));
            continue;
        };
        for route in rds_names(&listener) {
            if !has(routes, &route) {
                missing.push(Missing {
                    type_url: type_url::ROUTE,
                    name: route,
                    referenced_by: format!("listener {:?}", listener.name),
                });
            }
        }
    }
    missing
}

fn undecodable(type_url: &'static str, name: &str) -> Missing {
    Missing { type_url, name: name.to_string(), referenced_by: "itself: it does not decode".to_string() }
}

/// The RouteConfiguration names a listener's HttpConnectionManagers fetch over RDS, from the
/// `api_listener` and from every filter chain.
pub fn rds_names(listener: &Listener) -> Vec<String> {
    let hcm_url = HttpConnectionManager::type_url();
    let mut anys = Vec::new();
    if let Some(api) = listener.api_listener.as_ref().and_then(|a| a.api_listener.as_ref()) {
        anys.push(api);
    }
    for chain in listener.filter_chains.iter().chain(listener.default_filter_chain.iter()) {
        for filter in &chain.filters {
            if let Some(xds_core::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
                &filter.config_type
            {
                anys.push(any);
            }
        }
    }
    anys.into_iter()
        .filter(|any| any.type_url == hcm_url)
        .filter_map(|any| HttpConnectionManager::decode(any.value.as_slice()).ok())
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}
