//! # xds-benches
//!
//! Benchmarks of the xDS library and the pieces of its load generator:
//!
//! - fixtures of the criterion benchmarks ([`cla`], [`endpoint_set`]);
//! - [`scenario`]: the configuration a load run serves (clusters, endpoints, one listener, one
//!   route configuration) and its numbered updates;
//! - [`serve`]: that scenario served by an [`XdsServer`](xds_server::XdsServer), in-process or
//!   in the `xds-load-server` binary;
//! - [`load`]: the `xds-load` generator (simulated Envoys over HTTP/2, SotW or delta ADS) and
//!   its report;
//! - [`procfs`]: CPU time and memory of a process from `/proc`.
//!
//! See `benches/README.md` for the scenarios, the commands and the figures measured.

use std::sync::Arc;

pub mod load;
pub mod procfs;
pub mod scenario;
pub mod serve;

use xds_core::envoy::config::core::v3::{address, socket_address::PortSpecifier, Address, SocketAddress};
use xds_core::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_core::{type_url, ResourceSet, XdsResource};

/// A ClusterLoadAssignment named `name` with `n` endpoints; `generation` changes the ports.
pub fn cla(name: &str, n: usize, generation: u32) -> ClusterLoadAssignment {
    let lb_endpoints = (0..n)
        .map(|i| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: format!("10.0.{}.{}", i / 250, i % 250),
                        port_specifier: Some(PortSpecifier::PortValue(8000 + generation)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(xds_core::google::protobuf::UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `clusters` endpoint sets of `endpoints` endpoints each.
pub fn endpoint_set(clusters: usize, endpoints: usize, generation: u32) -> Arc<ResourceSet> {
    Arc::new(ResourceSet::from_resources(
        type_url::ENDPOINT,
        (0..clusters).map(|c| cla(&format!("cluster-{c}"), endpoints, generation).encode_resource()),
    ))
}
