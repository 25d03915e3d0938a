//! # xds-core
//!
//! The shared vocabulary of an xDS server:
//!
//! - [`envoy`]: the Envoy v3 generated messages and service stubs (from `envoy-types`), so
//!   downstream code depends on one crate;
//! - [`type_url`]: the type URL of every standard v3 resource type and what the protocol allows
//!   for it (legacy wildcard, full-state SotW, make-before-break order);
//! - [`XdsResource`] and [`EncodedResource`]: an Envoy message turned into a named, versioned
//!   resource, encoded once and shared by every stream;
//! - [`ResourceSet`]: the immutable set of resources of one type a source publishes;
//! - [`NodeGrouper`]: which configuration a client's `Node` receives;
//! - [`ResourceSource`]: the one trait an application implements to plug in its registry.
//!
//! Feature flags:
//!
//! - `json`: [`json`], the proto3 JSON mapping of every Envoy type (`@type` in `Any`s resolved).
//!
//! ```
//! use xds_core::{envoy::config::cluster::v3::Cluster, type_url, ResourceSet, XdsResource};
//!
//! let cluster = Cluster { name: "backend".into(), ..Default::default() };
//! let set = ResourceSet::from_resources(type_url::CLUSTER, [cluster.encode_resource()]);
//! assert_eq!(set.get("backend").unwrap().decode::<Cluster>().unwrap(), cluster);
//! ```

mod error;
#[cfg(feature = "json")]
pub mod json;
mod names;
mod node;
mod resource;
mod selection;
mod set;
mod source;
pub mod type_url;

pub use async_trait::async_trait;
pub use envoy_types::pb::envoy;
pub use envoy_types::pb::google;
pub use error::Error;
pub use names::{canonical_name, glob_matches, glob_parts, XDSTP};
pub use node::{has_client_feature, ByCluster, ByMetadata, ByNodeId, NodeGrouper, SingleGroup};
pub use resource::{content_version, EncodedResource, XdsResource};
pub use selection::{walk_rather_than_search, Changes, NameLists, Names, Selection};
pub use set::{Change, ResourceSet};
pub use source::{ResourceSource, ResourceWatch};
pub use {bytes, prost};
