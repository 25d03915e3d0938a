//! Secrets served per node: a node receives only the SDS secrets the registry allows it
//! (`secrets[].nodes`), never another node's private keys.
//!
//! Every node has its own channel holding exactly its secrets; a registry change recomputes
//! them. Combined with certificate-bound node ids (`--bind-identity`), a client cannot obtain
//! another node's secrets by claiming its id.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use xds_core::envoy::config::core::v3::Node;
use xds_core::{
    async_trait, type_url, EncodedResource, Error, ResourceSet, ResourceSource, ResourceWatch, XdsResource,
};

use crate::registry::Registry;
use crate::resources;

/// One secret and who may have it.
#[derive(Debug, Clone)]
struct Entry {
    nodes: Option<Vec<String>>,
    resource: EncodedResource,
}

fn allowed(patterns: Option<&[String]>, node_id: &str) -> bool {
    patterns.is_none_or(|ps| {
        ps.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => node_id.starts_with(prefix),
            None => p == node_id,
        })
    })
}

/// The per-node SDS source of the sidecar.
#[derive(Debug, Default)]
pub struct SecretSource {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `None` until the first registry is published: nodes wait instead of seeing no secrets.
    entries: Option<Vec<Entry>>,
    nodes: HashMap<String, watch::Sender<Option<Arc<ResourceSet>>>>,
}

impl State {
    fn set_for(&self, node_id: &str) -> Option<Arc<ResourceSet>> {
        let entries = self.entries.as_ref()?;
        Some(Arc::new(ResourceSet::from_resources(
            type_url::SECRET,
            entries.iter().filter(|e| allowed(e.nodes.as_deref(), node_id)).map(|e| e.resource.clone()),
        )))
    }
}

impl SecretSource {
    /// Publishes the registry's secrets to every node's channel (only where they changed).
    pub fn publish(&self, registry: &Registry) {
        let mut state = self.state.lock();
        state.entries = Some(
            registry
                .secrets
                .iter()
                .map(|s| Entry { nodes: s.nodes.clone(), resource: resources::secret(s).encode_resource() })
                .collect(),
        );
        state.nodes.retain(|_, sender| sender.receiver_count() > 0);
        for (node_id, sender) in &state.nodes {
            let set = state.set_for(node_id);
            sender.send_if_modified(|current| {
                let changed = current.as_ref().map(|c| c.version()) != set.as_ref().map(|s| s.version());
                if changed {
                    *current = set;
                }
                changed
            });
        }
    }
}

#[async_trait]
impl ResourceSource for SecretSource {
    async fn watch(&self, node: &Node, type_url: &str) -> Result<ResourceWatch, Error> {
        if type_url != type_url::SECRET {
            return Err(Error::UnknownType(type_url.to_string()));
        }
        let mut state = self.state.lock();
        if let Some(sender) = state.nodes.get(&node.id) {
            return Ok(sender.subscribe());
        }
        let (sender, rx) = watch::channel(state.set_for(&node.id));
        state.nodes.insert(node.id.clone(), sender);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nodes_see_only_their_secrets() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("c.pem"), "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")
            .expect("write");
        let yaml = "services: []\nsecrets:\n  - {name: a-cert, nodes: [envoy-a], validation_context: {trusted_ca: c.pem}}\n  - {name: fleet, nodes: ['fleet-*'], validation_context: {trusted_ca: c.pem}}\n  - {name: public, validation_context: {trusted_ca: c.pem}}\n";
        let registry = Registry::parse_in(yaml, dir.path()).expect("valid");
        let source = SecretSource::default();
        let node = |id: &str| Node { id: id.into(), ..Default::default() };
        let mut early = source.watch(&node("envoy-a"), type_url::SECRET).await.expect("watch");
        assert!(early.borrow_and_update().is_none(), "nothing before the first registry");
        source.publish(&registry);
        let names = |w: &ResourceWatch| {
            w.borrow().as_ref().map(|s| s.names().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap_or_default()
        };
        assert_eq!(names(&early), ["a-cert", "public"]);
        let b = source.watch(&node("envoy-b"), type_url::SECRET).await.expect("watch");
        assert_eq!(names(&b), ["public"]);
        let f = source.watch(&node("fleet-3"), type_url::SECRET).await.expect("watch");
        assert_eq!(names(&f), ["fleet", "public"]);
        assert!(source.watch(&node("x"), type_url::CLUSTER).await.is_err());
    }
}
