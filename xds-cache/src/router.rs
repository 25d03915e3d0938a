//! [`TypeRouter`]: a [`ResourceSource`] that serves each type from its own source.
//!
//! Useful when types are stored differently: secrets grouped per node (so a node only ever
//! sees the secrets it may have) while listeners and clusters are shared by every node, or
//! endpoints in a per-resource cache fed by a service registry while the rest comes from files.

use std::collections::HashMap;
use std::sync::Arc;

use xds_core::envoy::config::core::v3::Node;
use xds_core::{async_trait, Error, ResourceSource, ResourceWatch};

/// Serves each type URL from the source routed to it, and every other type from a default
/// source (or refuses it).
///
/// ```
/// use std::sync::Arc;
/// use xds_cache::{SnapshotCache, TypeRouter};
/// use xds_core::{type_url, ByNodeId, SingleGroup};
///
/// let shared = Arc::new(SnapshotCache::with_grouper(SingleGroup::default()));
/// let secrets = Arc::new(SnapshotCache::with_grouper(ByNodeId));
/// let source = TypeRouter::new().route(type_url::SECRET, secrets).default_source(shared);
/// # let _ = source;
/// ```
#[derive(Default)]
pub struct TypeRouter {
    routes: HashMap<String, Arc<dyn ResourceSource>>,
    default: Option<Arc<dyn ResourceSource>>,
}

impl std::fmt::Debug for TypeRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeRouter").field("routes", &self.routes.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl TypeRouter {
    /// A router with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `type_url` from `source`.
    #[must_use]
    pub fn route(mut self, type_url: &str, source: Arc<dyn ResourceSource>) -> Self {
        self.routes.insert(type_url.to_string(), source);
        self
    }

    /// Serves every type without a route from `source`.
    #[must_use]
    pub fn default_source(mut self, source: Arc<dyn ResourceSource>) -> Self {
        self.default = Some(source);
        self
    }
}

#[async_trait]
impl ResourceSource for TypeRouter {
    async fn watch(&self, node: &Node, type_url: &str) -> Result<ResourceWatch, Error> {
        match self.routes.get(type_url).or(self.default.as_ref()) {
            Some(source) => source.watch(node, type_url).await,
            None => Err(Error::UnknownType(type_url.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Snapshot, SnapshotCache};
    use xds_core::envoy::config::cluster::v3::Cluster;
    use xds_core::envoy::extensions::transport_sockets::tls::v3::Secret;
    use xds_core::{type_url, ByNodeId, SingleGroup};

    #[tokio::test]
    async fn routes_by_type() {
        let shared = Arc::new(SnapshotCache::with_grouper(SingleGroup::default()));
        shared.set_snapshot(
            "",
            Snapshot::builder().resource(&Cluster { name: "c".into(), ..Default::default() }).build(),
        );
        let secrets = Arc::new(SnapshotCache::with_grouper(ByNodeId));
        secrets.set_snapshot(
            "a",
            Snapshot::builder().resource(&Secret { name: "a-cert".into(), ..Default::default() }).build(),
        );
        let router = TypeRouter::new().route(type_url::SECRET, secrets).default_source(shared);
        let a = Node { id: "a".into(), ..Default::default() };
        let b = Node { id: "b".into(), ..Default::default() };
        let names =
            |w: ResourceWatch| w.borrow().as_ref().map(|s| s.names().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(names(router.watch(&a, type_url::SECRET).await.expect("a")), Some(vec!["a-cert".to_string()]));
        assert_eq!(names(router.watch(&b, type_url::SECRET).await.expect("b")), None, "b has no secrets");
        assert_eq!(names(router.watch(&b, type_url::CLUSTER).await.expect("shared")), Some(vec!["c".to_string()]));
        assert!(TypeRouter::new().watch(&a, type_url::CLUSTER).await.is_err());
    }
}
