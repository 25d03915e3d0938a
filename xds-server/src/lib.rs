//! # xds-server
//!
//! The gRPC transport of an xDS server, built on tonic. It serves the aggregated discovery
//! service (ADS) and every per-type discovery service (LDS, RDS, SRDS, CDS, EDS, SDS, RTDS,
//! ECDS, ...) from one [`ResourceSource`](xds_core::ResourceSource), such as
//! [`xds_cache::SnapshotCache`].
//!
//! It is the thin async layer around the protocol state machines of `xds-cache`: each stream
//! feeds requests and the source's latest resources into its state machine and writes the
//! responses it returns, assembled from the resources' shared pre-encoded bytes; the encoded
//! body of a response is itself shared by every stream sent the same resources. A server
//! started with [`XdsServer::serve`] runs each connection (its HTTP/2 codec and every stream on
//! it) as one task, so a connection's streams never wait for each other across threads.
//!
//! ```no_run
//! use xds_cache::{Snapshot, SnapshotCache};
//! use xds_core::envoy::config::cluster::v3::Cluster;
//! use xds_server::XdsServer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = std::sync::Arc::new(SnapshotCache::new());
//! cache.set_snapshot("node-1", Snapshot::builder().resource(&Cluster { name: "a".into(), ..Default::default() }).build());
//! XdsServer::builder()
//!     .max_concurrent_streams(4096)
//!     .build(cache.clone())
//!     .serve("127.0.0.1:18000".parse()?, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Operations: [`admin`] is an HTTP router with `/clients`, `/config_dump`, `/metrics` and the
//! Client Status Discovery Service ([`csds`]); [`ServerBuilder::max_connections`],
//! [`ServerBuilder::first_request_timeout`], [`ServerBuilder::max_subscribed_names`] and
//! [`ServerBuilder::max_receive_message_size`] bound what unknown peers can hold.
//!
//! Logs: at `debug` level every request and response of every stream is logged with node,
//! type, version, nonce and names; NACKs are logged at `warn` with the client's error text.
//! They are `tracing` events: install a `tracing` subscriber to see them. An application that
//! logs through the `log` crate instead enables `tracing`'s `log` feature in its own manifest;
//! this library does not turn it on, as it costs every span of the HTTP/2 stack a check on
//! every poll (about 6% of the server's instructions under load).

pub mod admin;
mod auth;
mod body;
mod callbacks;
mod codec;
mod conn;
pub mod csds;
mod error;
mod fetch;
mod io;
mod metrics;
mod protocol;
mod requests;
mod server;
mod service;
mod status;
mod stream;
mod watches;

pub use auth::{IdentityBinding, NodeAuthorizer};
pub use callbacks::{Callbacks, NoCallbacks, ResponseInfo, StreamInfo, Variant};
pub use error::Error;
// Everything public in `server`: the builder, the server, `bind` (and `bind_reuse_port` where
// the platform has `SO_REUSEPORT`) and the defaults.
pub use server::*;
pub use service::{kind, ServiceKind, XdsService};
pub use status::{ClientRegistry, ClientStatus, NackStatus, StreamStatus, TypeStatus};
