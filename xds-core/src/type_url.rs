//! The type URLs of the standard Envoy v3 resource types and what the protocol allows for each.
//!
//! Rules (from Envoy's `xds_protocol` docs and ../XDS-PROTOCOL.md rules 7 and 9):
//! - Listener, Cluster and ScopedRouteConfiguration are *full state* in SotW: a response holds
//!   every resource the client subscribes to, and a resource missing from a response is a delete.
//! - The same types allow the *legacy wildcard*: a first SotW request with no names means "all".
//!   Every type accepts the explicit wildcard name `*`.
//! - On ADS, make-before-break ordering sends clusters, then endpoints, then listeners, then
//!   routes ([`ResourceType::order`]).

use std::sync::{Arc, OnceLock};

/// `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `envoy.config.route.v3.ScopedRouteConfiguration` (SRDS).
pub const SCOPED_ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
/// `envoy.config.route.v3.VirtualHost` (VHDS).
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
/// `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `envoy.config.endpoint.v3.LbEndpoint` (LEDS).
pub const LB_ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint";
/// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// `envoy.service.runtime.v3.Runtime` (RTDS).
pub const RUNTIME: &str = "type.googleapis.com/envoy.service.runtime.v3.Runtime";
/// `envoy.config.core.v3.TypedExtensionConfig` (ECDS).
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// The `Any` type URL of `envoy.service.discovery.v3.Resource`, the TTL wrapper in SotW.
pub const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// What the protocol allows for one resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceType {
    /// The full type URL, `type.googleapis.com/...`.
    pub type_url: &'static str,
    /// The short name operators know it by: `LDS`, `CDS`, ...
    pub short_name: &'static str,
    /// Whether a first SotW request with no names means "everything" (legacy wildcard).
    pub legacy_wildcard: bool,
    /// Whether a SotW response must hold every subscribed resource (a missing one is a delete).
    pub full_state: bool,
    /// Make-before-break rank on ADS: lower is sent first.
    pub order: u8,
}

/// Every standard v3 resource type, in make-before-break order.
pub const ALL: &[ResourceType] = &[
    rt(CLUSTER, "CDS", true, 0),
    rt(ENDPOINT, "EDS", false, 1),
    rt(LB_ENDPOINT, "LEDS", false, 2),
    rt(LISTENER, "LDS", true, 3),
    rt(ROUTE, "RDS", false, 4),
    rt(SCOPED_ROUTE, "SRDS", true, 5),
    rt(VIRTUAL_HOST, "VHDS", false, 6),
    rt(SECRET, "SDS", false, 7),
    rt(RUNTIME, "RTDS", false, 8),
    rt(EXTENSION_CONFIG, "ECDS", false, 9),
];

const fn rt(type_url: &'static str, short_name: &'static str, full: bool, order: u8) -> ResourceType {
    ResourceType { type_url, short_name, legacy_wildcard: full, full_state: full, order }
}

/// Looks up a standard type URL. Returns `None` for a URL this library does not know.
pub fn lookup(type_url: &str) -> Option<&'static ResourceType> {
    ALL.iter().find(|t| t.type_url == type_url)
}

/// The type URL as an `Arc<str>`: for a standard type, one allocation shared by every caller
/// (every stream of a server holds its types' URLs; ten thousand streams share four), else a new one.
pub fn shared(type_url: &str) -> Arc<str> {
    static SHARED: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    match ALL.iter().position(|t| t.type_url == type_url) {
        Some(i) => SHARED.get_or_init(|| ALL.iter().map(|t| Arc::from(t.type_url)).collect())[i].clone(),
        None => type_url.into(),
    }
}

/// The short name of a type URL (`CDS`, ...), or the URL itself when it is not a standard type.
pub fn short_name(type_url: &str) -> &str {
    lookup(type_url).map_or(type_url, |t| t.short_name)
}

/// Make-before-break rank of a type URL; unknown types go last.
pub fn order(type_url: &str) -> u8 {
    lookup(type_url).map_or(u8::MAX, |t| t.order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn constants_match_generated_types() {
        use envoy_types::pb::envoy;
        assert_eq!(LISTENER, envoy::config::listener::v3::Listener::type_url());
        assert_eq!(ROUTE, envoy::config::route::v3::RouteConfiguration::type_url());
        assert_eq!(SCOPED_ROUTE, envoy::config::route::v3::ScopedRouteConfiguration::type_url());
        assert_eq!(VIRTUAL_HOST, envoy::config::route::v3::VirtualHost::type_url());
        assert_eq!(CLUSTER, envoy::config::cluster::v3::Cluster::type_url());
        assert_eq!(ENDPOINT, envoy::config::endpoint::v3::ClusterLoadAssignment::type_url());
        assert_eq!(LB_ENDPOINT, envoy::config::endpoint::v3::LbEndpoint::type_url());
        assert_eq!(SECRET, envoy::extensions::transport_sockets::tls::v3::Secret::type_url());
        assert_eq!(RUNTIME, envoy::service::runtime::v3::Runtime::type_url());
        assert_eq!(EXTENSION_CONFIG, envoy::config::core::v3::TypedExtensionConfig::type_url());
        assert_eq!(RESOURCE_WRAPPER, envoy::service::discovery::v3::Resource::type_url());
    }

    #[test]
    fn order_is_make_before_break() {
        assert!(order(CLUSTER) < order(ENDPOINT));
        assert!(order(ENDPOINT) < order(LISTENER));
        assert!(order(LISTENER) < order(ROUTE));
        assert_eq!(order("type.googleapis.com/unknown"), u8::MAX);
        assert!(lookup(LISTENER).is_some_and(|t| t.legacy_wildcard && t.full_state));
        assert!(lookup(ENDPOINT).is_some_and(|t| !t.legacy_wildcard));
    }

    #[test]
    fn standard_type_urls_are_shared() {
        let (a, b) = (shared(ENDPOINT), shared(ENDPOINT));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, ENDPOINT);
        let custom = "type.googleapis.com/example.Custom";
        assert_eq!(&*shared(custom), custom);
        assert!(!Arc::ptr_eq(&shared(custom), &shared(custom)));
    }
}
