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
mod snapshot;
mod sotw;
mod types;

pub use cache::SnapshotCache;
pub use consistency::{rds_names, Missing};
pub use delta::{DeltaResource, DeltaResponse, DeltaStream};
pub use error::Error;
pub use router::TypeRouter;
pub use snapshot::{Snapshot, SnapshotBuilder};
pub use sotw::{Nack, RequestInfo, RequestKind, SotwResponse, SotwStream, SOTW_TTL_FEATURES, WILDCARD};

/// The most names of one type a stream may subscribe by default: far above what a proxy of the
/// largest meshes subscribes, low enough that one peer cannot grow a stream's state without
/// bound over many delta requests. See [`SotwStream::with_max_names`].
pub const DEFAULT_MAX_NAMES: usize = 100_000;

/// The most bytes of names of one type a delta stream may subscribe by default, over all its
/// requests: 64 MiB, what one request may carry by default (a SotW stream's subscription is one
/// request's). See [`DeltaStream::with_max_name_bytes`].
pub const DEFAULT_MAX_NAME_BYTES: usize = 64 * 1024 * 1024;
