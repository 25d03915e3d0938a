//! # xds-examples
//!
//! Two users of the library, written the way an application would:
//!
//! - **`xds-sidecar`** (`src/bin/xds-sidecar.rs`): serves a YAML service registry to proxyless
//!   gRPC clients and Envoy. Its parts live in this library so they are unit tested:
//!   [`registry`] (the file format and its validation), [`resources`] (the xDS resources a
//!   registry becomes), [`health`] (active health checks of the endpoints), [`reload`] (hot
//!   reload by polling), [`sidecar`] (the controller that publishes, serving, logging),
//!   [`bootstrap`] (the gRPC JSON and Envoy YAML bootstraps) and [`cli`]. `examples/README.md`
//!   documents the registry schema; `examples/registry-full.yaml` uses every setting.
//! - **`custom-source`** (`src/bin/custom-source.rs`): the smallest application that
//!   implements [`xds_core::ResourceSource`] itself instead of using a cache.
//!
//! ```
//! use xds_examples::{registry::Registry, resources};
//!
//! let registry = Registry::parse("services:\n  - name: myservice\n    endpoints: [127.0.0.1:50051]\n")?;
//! let snapshot = resources::snapshot(&registry)?; // Listener, route, cluster and endpoints
//! assert_eq!(snapshot.get(xds_core::type_url::LISTENER).map(|s| s.len()), Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bootstrap;
pub mod cli;
pub mod health;
pub mod registry;
pub mod reload;
pub mod resources;
pub mod secrets;
pub mod sidecar;
