//! [`SnapshotCache`]: one [`Snapshot`] per node group, published to streams through watch
//! channels.
//!
//! Concurrency: the group map is behind a read-write lock taken only to find or insert a group;
//! each group has its own mutex, held only while its channels are updated. Publishing to a watch
//! channel never waits for a reader, so setting a snapshot for one group never blocks other
//! groups or any stream, and no lock is held while responses are written.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use xds_core::envoy::config::core::v3::Node;
use xds_core::{
    async_trait, type_url, ByNodeId, EncodedResource, NodeGrouper, ResourceSet, ResourceSource, ResourceWatch,
};

use crate::Snapshot;

type Sender = watch::Sender<Option<Arc<ResourceSet>>>;

/// Configuration for every node group, one immutable [`Snapshot`] each; the default
/// [`ResourceSource`].
///
/// ```
/// use xds_cache::{Snapshot, SnapshotCache};
/// use xds_core::envoy::config::cluster::v3::Cluster;
///
/// let cache = SnapshotCache::new(); // groups nodes by node.id
/// let snapshot = Snapshot::builder().resource(&Cluster { name: "a".into(), ..Default::default() }).build();
/// cache.set_snapshot("node-1", snapshot);
/// assert!(cache.snapshot("node-1").is_some());
/// ```
pub struct SnapshotCache {
    grouper: Arc<dyn NodeGrouper>,
    groups: RwLock<HashMap<String, Arc<Group>>>,
}

#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    snapshot: Option<Arc<Snapshot>>,
    senders: HashMap<Arc<str>, Sender>,
}

impl GroupState {
    fn value_for(&self, type_url: &str) -> Option<Arc<ResourceSet>> {
        let snapshot = self.snapshot.as_ref()?;
        Some(snapshot.get(type_url).cloned().unwrap_or_else(|| Arc::new(ResourceSet::empty(type_url))))
    }

    fn idle(&self) -> bool {
        self.snapshot.is_none() && self.senders.values().all(|s| s.receiver_count() == 0)
    }
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache").field("groups", &self.groups.read().len()).finish()
    }
}

impl SnapshotCache {
    /// A cache that groups nodes by `node.id`.
    pub fn new() -> Self {
        Self::with_grouper(ByNodeId)
    }

    /// A cache that groups nodes with `grouper`.
    pub fn with_grouper(grouper: impl NodeGrouper) -> Self {
        Self { grouper: Arc::new(grouper), groups: RwLock::new(HashMap::new()) }
    }

    /// The group a node belongs to.
    pub fn group_of(&self, node: &Node) -> String {
        self.grouper.group(node)
    }

    fn group(&self, key: &str) -> Arc<Group> {
        if let Some(g) = self.groups.read().get(key) {
            return g.clone();
        }
        let mut groups = self.groups.write();
        if groups.len() >= 1024 && groups.len().is_power_of_two() {
            // Forget groups nobody set and nobody watches (clients with made-up node ids).
            groups.retain(|_, g| !g.state.lock().idle());
        }
        groups.entry(key.to_string()).or_default().clone()
    }

    /// Replaces a group's snapshot and publishes every type whose version changed.
    ///
    /// Types absent from the snapshot are published as empty, so full-state clients delete
    /// what they held. Streams of other groups are not touched.
    ///
    /// Names and resources equal to the previous snapshot's are taken over from it (see
    /// [`ResourceSet::adopt`]), so rebuilding the whole snapshot for a small change costs
    /// streams no more than the change.
    pub fn set_snapshot(&self, group: &str, mut snapshot: Snapshot) {
        let g = self.group(group);
        // Outside the lock: a concurrent replacement only makes the adoption less useful.
        let previous = g.state.lock().snapshot.clone();
        if let Some(previous) = previous {
            snapshot.adopt(&previous);
        }
        let mut state = g.state.lock();
        state.snapshot = Some(Arc::new(snapshot));
        for (t, sender) in &state.senders {
            let value = state.value_for(t);
            sender.send_if_modified(|current| {
                let changed = match (current.as_ref(), value.as_ref()) {
                    (Some(a), Some(b)) => a.version() != b.version() || a.len() != b.len(),
                    (None, None) => false,
                    _ => true,
                };
                if changed {
                    *current = value;
                }
                changed
            });
        }
    }

    /// Changes the resources of one type of a group in place and publishes that type only.
    ///
    /// The per-resource path: the set is persistent, so the cost is that of the change
    /// (O(log n) per resource touched), not of the whole type, and only the streams watching this
    /// group and type wake up; among them only those subscribed to a changed name (or by
    /// wildcard) receive a response. A group without a snapshot gets one holding just this type.
    /// Returns the new version of the type.
    pub fn update_resources(&self, group: &str, type_url: &str, change: impl FnOnce(&mut ResourceSet)) -> Arc<str> {
        let g = self.group(group);
        let mut state = g.state.lock();
        let current = state.snapshot.clone().unwrap_or_default();
        let mut set = current.get(type_url).map_or_else(|| ResourceSet::empty(type_url), |s| (**s).clone());
        change(&mut set);
        let version = set.version_arc().clone();
        let set = Arc::new(set);
        state.snapshot = Some(Arc::new(current.with_set(set.clone())));
        if let Some(sender) = state.senders.get(type_url) {
            sender.send_if_modified(|current| {
                let changed = current.as_ref().is_none_or(|c| c.version() != set.version() || c.len() != set.len());
                if changed {
                    *current = Some(set.clone());
                }
                changed
            });
        }
        for (t, sender) in &state.senders {
            // Other types of a group that had no snapshot become empty, not "unknown".
            if &**t != type_url && sender.borrow().is_none() {
                sender.send_replace(state.value_for(t));
            }
        }
        version
    }

    /// Adds or replaces one resource of a group (see [`SnapshotCache::update_resources`]).
    pub fn upsert_resource(&self, group: &str, resource: EncodedResource) -> Arc<str> {
        let type_url = resource.type_url().to_string();
        self.update_resources(group, &type_url, |set| set.insert(resource))
    }

    /// Removes one resource of a group (see [`SnapshotCache::update_resources`]).
    pub fn remove_resource(&self, group: &str, type_url: &str, name: &str) -> Arc<str> {
        self.update_resources(group, type_url, |set| {
            set.remove(name);
        })
    }

    /// Removes a group's snapshot. Its streams keep what they have and wait for a new one.
    ///
    /// The group's channels stay open (its streams keep watching), so a later snapshot reaches
    /// them; a group nobody watches is forgotten.
    pub fn clear_snapshot(&self, group: &str) {
        let Some(g) = self.groups.read().get(group).cloned() else { return };
        let mut state = g.state.lock();
        state.snapshot = None;
        state.senders.retain(|_, sender| sender.receiver_count() > 0);
        for sender in state.senders.values() {
            sender.send_replace(None);
        }
    }

    /// The current snapshot of a group.
    pub fn snapshot(&self, group: &str) -> Option<Arc<Snapshot>> {
        self.groups.read().get(group).and_then(|g| g.state.lock().snapshot.clone())
    }

    /// The groups that have a snapshot, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .groups
            .read()
            .iter()
            .filter(|(_, g)| g.state.lock().snapshot.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Follows one type of a group. Standard types are always accepted; other type URLs only
    /// when the group's snapshot holds them.
    pub fn watch_group(&self, group: &str, type_url: &str) -> Result<ResourceWatch, xds_core::Error> {
        let g = self.group(group);
        let mut state = g.state.lock();
        let known =
            type_url::lookup(type_url).is_some() || state.snapshot.as_ref().is_some_and(|s| s.get(type_url).is_some());
        if !known {
            return Err(xds_core::Error::UnknownType(type_url.to_string()));
        }
        if let Some(sender) = state.senders.get(type_url) {
            return Ok(sender.subscribe());
        }
        let (sender, rx) = watch::channel(state.value_for(type_url));
        state.senders.insert(type_url.into(), sender);
        Ok(rx)
    }
}

#[async_trait]
impl ResourceSource for SnapshotCache {
    async fn watch(&self, node: &Node, type_url: &str) -> Result<ResourceWatch, xds_core::Error> {
        self.watch_group(&self.grouper.group_key(node), type_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_core::envoy::config::cluster::v3::Cluster;
    use xds_core::envoy::config::listener::v3::Listener;
    use xds_core::XdsResource;

    fn cluster(name: &str) -> Cluster {
        Cluster { name: name.into(), ..Default::default() }
    }

    #[test]
    fn watch_before_snapshot_sees_none_then_the_snapshot() {
        let cache = SnapshotCache::new();
        let mut rx = cache.watch_group("g", type_url::CLUSTER).expect("watch");
        assert!(rx.borrow().is_none());
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("a")).build());
        assert!(rx.has_changed().expect("open"));
        assert_eq!(rx.borrow_and_update().as_ref().map(|s| s.len()), Some(1));
    }

    #[test]
    fn unchanged_type_is_not_republished_and_missing_type_is_empty() {
        let cache = SnapshotCache::new();
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("a")).build());
        let mut clusters = cache.watch_group("g", type_url::CLUSTER).expect("watch");
        let mut listeners = cache.watch_group("g", type_url::LISTENER).expect("watch");
        assert_eq!(listeners.borrow_and_update().as_ref().map(|s| s.len()), Some(0));
        clusters.borrow_and_update();
        let l = Listener { name: "l".into(), ..Default::default() };
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("a")).resource(&l).build());
        assert!(!clusters.has_changed().expect("open"));
        assert!(listeners.has_changed().expect("open"));
    }

    #[test]
    fn a_rebuilt_snapshot_keeps_the_previous_names_and_unchanged_resources() {
        let cache = SnapshotCache::new();
        let build = |b_port: u32| {
            let b = Cluster {
                name: "b".into(),
                per_connection_buffer_limit_bytes: Some(xds_core::google::protobuf::UInt32Value { value: b_port }),
                ..Default::default()
            };
            Snapshot::builder().resource(&cluster("a")).resource(&b).build()
        };
        cache.set_snapshot("g", build(1));
        let mut clusters = cache.watch_group("g", type_url::CLUSTER).expect("watch");
        let before = clusters.borrow_and_update().clone().expect("set");
        cache.set_snapshot("g", build(2));
        let after = clusters.borrow_and_update().clone().expect("set");
        assert_ne!(after.version(), before.version());
        for (old, new) in before.names().zip(after.names()) {
            assert!(Arc::ptr_eq(old, new), "{new}: the name string is the previous snapshot's");
        }
        assert!(Arc::ptr_eq(before.get("a").expect("a"), after.get("a").expect("a")), "unchanged: the same object");
        assert!(!Arc::ptr_eq(before.get("b").expect("b"), after.get("b").expect("b")), "changed: the new one");
    }

    #[test]
    fn groups_are_independent() {
        let cache = SnapshotCache::new();
        let other = cache.watch_group("other", type_url::CLUSTER).expect("watch");
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("a")).build());
        assert!(!other.has_changed().expect("open"));
        assert_eq!(cache.groups(), ["g"]);
    }

    #[test]
    fn per_resource_updates_publish_one_type_and_share_the_rest() {
        let cache = SnapshotCache::new();
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("a")).resource(&cluster("b")).build());
        let mut clusters = cache.watch_group("g", type_url::CLUSTER).expect("watch");
        let mut listeners = cache.watch_group("g", type_url::LISTENER).expect("watch");
        let before = clusters.borrow_and_update().clone().expect("set");
        listeners.borrow_and_update();
        cache.upsert_resource("g", Cluster { name: "c".into(), ..Default::default() }.encode_resource());
        assert!(!listeners.has_changed().expect("open"), "other types are not woken");
        let after = clusters.borrow_and_update().clone().expect("set");
        assert_eq!(after.len(), 3);
        let changes: Vec<String> = after
            .diff(&before)
            .into_iter()
            .map(|c| match c {
                xds_core::Change::Upsert(r) => r.name().to_string(),
                xds_core::Change::Remove(n) => format!("-{n}"),
            })
            .collect();
        assert_eq!(changes, ["c"]);
        assert!(Arc::ptr_eq(before.get("a").expect("a"), after.get("a").expect("a")), "unchanged resources are shared");
        cache.remove_resource("g", type_url::CLUSTER, "a");
        assert_eq!(clusters.borrow_and_update().as_ref().map(|s| s.len()), Some(2));
        // Removing what is not there publishes nothing.
        cache.remove_resource("g", type_url::CLUSTER, "zzz");
        assert!(!clusters.has_changed().expect("open"));
        assert_eq!(cache.snapshot("g").and_then(|s| s.get(type_url::CLUSTER).map(|s| s.len())), Some(2));
    }

    #[test]
    fn per_resource_update_of_a_new_group() {
        let cache = SnapshotCache::new();
        let mut listeners = cache.watch_group("g", type_url::LISTENER).expect("watch");
        cache.upsert_resource("g", Cluster { name: "c".into(), ..Default::default() }.encode_resource());
        assert!(listeners.has_changed().expect("open"));
        assert_eq!(listeners.borrow_and_update().as_ref().map(|s| s.len()), Some(0));
    }

    #[test]
    fn streams_watching_a_cleared_group_see_its_next_snapshot() {
        let cache = SnapshotCache::new();
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("a")).build());
        let mut rx = cache.watch_group("g", type_url::CLUSTER).expect("watch");
        rx.borrow_and_update();
        cache.clear_snapshot("g");
        assert!(rx.borrow_and_update().is_none());
        assert!(cache.groups().is_empty());
        cache.set_snapshot("g", Snapshot::builder().resource(&cluster("b")).build());
        assert!(rx.has_changed().expect("still open"));
        assert_eq!(rx.borrow_and_update().as_ref().map(|s| s.len()), Some(1));
    }

    #[test]
    fn unknown_type_is_refused() {
        let cache = SnapshotCache::new();
        let err = cache.watch_group("g", "type.googleapis.com/foo.Bar").expect_err("unknown");
        assert!(err.to_string().contains("foo.Bar"));
    }

    #[test]
    fn grouping_by_cluster_shares_one_snapshot() {
        let cache = SnapshotCache::with_grouper(xds_core::ByCluster);
        cache.set_snapshot("mesh", Snapshot::builder().resource(&cluster("a")).build());
        let n1 = Node { id: "1".into(), cluster: "mesh".into(), ..Default::default() };
        let n2 = Node { id: "2".into(), cluster: "mesh".into(), ..Default::default() };
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let a = rt.block_on(cache.watch(&n1, type_url::CLUSTER)).expect("watch");
        let b = rt.block_on(cache.watch(&n2, type_url::CLUSTER)).expect("watch");
        let (a, b) = (a.borrow().clone().expect("set"), b.borrow().clone().expect("set"));
        assert!(Arc::ptr_eq(&a, &b));
    }
}
