//! Node identity and grouping: which stored configuration a client's `Node` receives.
//!
//! Many clients usually share one configuration (every sidecar of a service, every proxyless
//! client of a tenant). A [`NodeGrouper`] maps a `Node` to the key its configuration is stored
//! under; sources keep one set per group, not per node.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::core::v3::Node;

/// Maps a client's `Node` to the group key its configuration is stored under.
pub trait NodeGrouper: Send + Sync + 'static {
    /// The group key for this node.
    fn group(&self, node: &Node) -> String;

    /// The group key for this node, borrowed from the node or the grouper where it can be: a
    /// source looks the group up for every type every stream watches. Defaults to
    /// [`group`](Self::group); the same key.
    fn group_key<'a>(&'a self, node: &'a Node) -> Cow<'a, str> {
        Cow::Owned(self.group(node))
    }
}

impl<F> NodeGrouper for F
where
    F: Fn(&Node) -> String + Send + Sync + 'static,
{
    fn group(&self, node: &Node) -> String {
        self(node)
    }
}

/// Groups by `node.id`: every node has its own configuration (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByNodeId;

impl NodeGrouper for ByNodeId {
    fn group(&self, node: &Node) -> String {
        node.id.clone()
    }

    fn group_key<'a>(&'a self, node: &'a Node) -> Cow<'a, str> {
        Cow::Borrowed(&node.id)
    }
}

/// Groups by `node.cluster` (Envoy's `--service-cluster`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByCluster;

impl NodeGrouper for ByCluster {
    fn group(&self, node: &Node) -> String {
        node.cluster.clone()
    }

    fn group_key<'a>(&'a self, node: &'a Node) -> Cow<'a, str> {
        Cow::Borrowed(&node.cluster)
    }
}

/// Groups by a string field of `node.metadata`; nodes without it get `fallback`.
#[derive(Debug, Clone)]
pub struct ByMetadata {
    /// The top-level metadata key to read.
    pub key: String,
    /// The group of nodes whose metadata lacks the key or holds a non-string there.
    pub fallback: String,
}

impl NodeGrouper for ByMetadata {
    fn group(&self, node: &Node) -> String {
        self.group_key(node).into_owned()
    }

    fn group_key<'a>(&'a self, node: &'a Node) -> Cow<'a, str> {
        use envoy_types::pb::google::protobuf::value::Kind;
        node.metadata
            .as_ref()
            .and_then(|m| m.fields.get(&self.key))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or(&self.fallback)
            .into()
    }
}

/// Puts every node in one group: every client gets the same configuration.
#[derive(Debug, Clone, Default)]
pub struct SingleGroup(pub String);

impl NodeGrouper for SingleGroup {
    fn group(&self, _node: &Node) -> String {
        self.0.clone()
    }

    fn group_key<'a>(&'a self, _node: &'a Node) -> Cow<'a, str> {
        Cow::Borrowed(&self.0)
    }
}

/// Whether the node advertises a client feature (`Node.client_features`), such as
/// `xds.config.supports-resource-ttl`.
pub fn has_client_feature(node: &Node, feature: &str) -> bool {
    node.client_features.iter().any(|f| f == feature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

    #[test]
    fn groupers() {
        let mut node = Node { id: "n1".into(), cluster: "c1".into(), ..Default::default() };
        assert_eq!(ByNodeId.group(&node), "n1");
        assert_eq!(ByCluster.group(&node), "c1");
        let by_meta = ByMetadata { key: "tenant".into(), fallback: "default".into() };
        assert_eq!(by_meta.group(&node), "default");
        node.metadata = Some(Struct {
            fields: [("tenant".to_string(), Value { kind: Some(Kind::StringValue("t9".into())) })].into(),
        });
        assert_eq!(by_meta.group(&node), "t9");
        assert_eq!(SingleGroup("all".into()).group(&node), "all");
        let f = |n: &Node| format!("{}/{}", n.cluster, n.id);
        assert_eq!(f.group(&node), "c1/n1");
    }

    #[test]
    fn every_grouper_keys_a_node_as_it_groups_it_and_the_standard_ones_without_a_copy() {
        let plain = Node { id: "n1".into(), cluster: "c1".into(), ..Default::default() };
        let mut tagged = plain.clone();
        tagged.metadata = Some(Struct {
            fields: [("tenant".to_string(), Value { kind: Some(Kind::StringValue("t9".into())) })].into(),
        });
        let by_meta = ByMetadata { key: "tenant".into(), fallback: "default".into() };
        let single = SingleGroup("all".into());
        let f = |n: &Node| format!("{}/{}", n.cluster, n.id);
        let groupers: [&dyn NodeGrouper; 5] = [&ByNodeId, &ByCluster, &by_meta, &single, &f];
        for (i, grouper) in groupers.into_iter().enumerate() {
            for node in [&plain, &tagged] {
                let key = grouper.group_key(node);
                assert_eq!(key, grouper.group(node), "grouper {i}");
                // Only the closure has to build its key.
                assert_eq!(matches!(key, Cow::Borrowed(_)), i < 4, "grouper {i}");
            }
        }
    }
}
