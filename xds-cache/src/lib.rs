//! # xds-cache
//!
//! The state of an xDS server, with no I/O:
//!
//! - [`Snapshot`] and [`SnapshotCache`]: immutable, versioned configuration per node group; the
//!   cache is a [`ResourceSource`](xds_core::ResourceSource), the default one;
//! - consistency checks ([`Snapshot::check_consistency`]);
//! - [`SotwStream`]: the deterministic state-of-the-world protocol state machine of one stream.
//!   It takes requests and resource sets and returns responses; every protocol rule is unit
//!   tested against it without a network.
//!
//! ```
//! use std::sync::Arc;
//! use xds_cache::{Snapshot, SotwStream};
//! use xds_core::envoy::config::{cluster::v3::Cluster, core::v3::Node};
//! use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
//! use xds_core::type_url;
//!
//! let snapshot = Snapshot::builder().resource(&Cluster { name: "a".into(), ..Default::default() }).build();
//! let mut stream = SotwStream::ads();
//! stream.on_request(&DiscoveryRequest {
//!     node: Some(Node { id: "n1".into(), ..Default::default() }),
//!     type_url: type_url::CLUSTER.into(),
//!     ..Default::default()
//! }).unwrap();
//! stream.on_resources(type_url::CLUSTER, snapshot.get(type_url::CLUSTER).cloned());
//! let response = stream.next_response().unwrap();
//! assert_eq!(response.resources[0].name(), "a");
//! assert!(stream.next_response().is_none()); // one response per request
//! ```

mod ack;
mod cache;
mod consistency;
mod delta;
mod error;
mod router;
mod settings;
mod snapshot;
mod sotw;
mod types;

pub use cache::SnapshotCache;
pub use consistency::{rds_names, Missing};
pub use delta::{DeltaResource, DeltaResponse, DeltaStream};
pub use error::Error;
pub use router::TypeRouter;
pub use settings::{StreamSettings, DEFAULT_MAX_NAMES, DEFAULT_MAX_NAME_BYTES};
pub use snapshot::{Snapshot, SnapshotBuilder};
pub use sotw::{Nack, RequestInfo, RequestKind, SotwResponse, SotwStream, SOTW_TTL_FEATURES, WILDCARD};
