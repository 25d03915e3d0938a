//! [`Snapshot`]: an immutable, versioned configuration for one node group.

use std::collections::BTreeMap;
use std::sync::Arc;

use xds_core::{type_url, EncodedResource, ResourceSet, XdsResource};

use crate::consistency::{self, Missing};
use crate::Error;

/// Every resource of a node group, one [`ResourceSet`] (with its own version) per type.
///
/// Built once with [`Snapshot::builder`], then shared: setting it on a
/// [`SnapshotCache`](crate::SnapshotCache) publishes each changed type to the streams watching it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    sets: BTreeMap<Arc<str>, Arc<ResourceSet>>,
}

impl Snapshot {
    /// Starts a snapshot.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The resources of one type, if the snapshot has that type.
    pub fn get(&self, type_url: &str) -> Option<&Arc<ResourceSet>> {
        self.sets.get(type_url)
    }

    /// The version of one type, if the snapshot has that type.
    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.get(type_url).map(|s| s.version())
    }

    /// This snapshot with one type's set replaced (the other sets are shared, not copied).
    pub fn with_set(&self, set: Arc<ResourceSet>) -> Snapshot {
        let mut sets = self.sets.clone();
        sets.insert(set.type_url().into(), set);
        Snapshot { sets }
    }

    /// Takes over `previous`'s name strings and unchanged resources, type by type (see
    /// [`ResourceSet::adopt`]).
    pub(crate) fn adopt(&mut self, previous: &Snapshot) {
        for (t, set) in &mut self.sets {
            if let Some(old) = previous.sets.get(t).filter(|old| !Arc::ptr_eq(old, set)) {
                Arc::make_mut(set).adopt(old);
            }
        }
    }

    /// Every type with its resources.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ResourceSet>)> {
        self.sets.iter().map(|(k, v)| (&**k, v))
    }

    /// Every resource the snapshot's clusters and listeners reference but it does not hold:
    /// the ClusterLoadAssignment of each EDS cluster and the RouteConfiguration of each RDS
    /// listener. Empty when consistent.
    pub fn missing(&self) -> Vec<Missing> {
        consistency::check(
            self.get(type_url::CLUSTER).map(|s| &**s),
            self.get(type_url::ENDPOINT).map(|s| &**s),
            self.get(type_url::LISTENER).map(|s| &**s),
            self.get(type_url::ROUTE).map(|s| &**s),
        )
    }

    /// Checks that every referenced resource is present (see [`Snapshot::missing`]).
    ///
    /// ```
    /// use xds_cache::Snapshot;
    /// use xds_core::envoy::config::cluster::v3::{cluster::{ClusterDiscoveryType, DiscoveryType}, Cluster};
    ///
    /// let eds = Cluster {
    ///     name: "backend".into(),
    ///     cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
    ///     ..Default::default()
    /// };
    /// let err = Snapshot::builder().resource(&eds).build().check_consistency().unwrap_err();
    /// assert!(err.to_string().contains("EDS \"backend\" (referenced by cluster \"backend\") is missing"));
    /// ```
    pub fn check_consistency(&self) -> Result<(), Error> {
        let missing = self.missing();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Inconsistent(missing))
        }
    }
}

/// Builds a [`Snapshot`] resource by resource.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    sets: BTreeMap<Arc<str>, ResourceSet>,
    versions: BTreeMap<Arc<str>, Arc<str>>,
}

impl SnapshotBuilder {
    /// Adds an Envoy message (encoded once, here).
    #[must_use]
    pub fn resource<M: XdsResource>(self, message: &M) -> Self {
        self.encoded(message.encode_resource())
    }

    /// Adds an already-encoded resource. A later resource of the same type and name replaces
    /// an earlier one.
    #[must_use]
    pub fn encoded(mut self, resource: EncodedResource) -> Self {
        self.sets
            .entry(resource.type_url().into())
            .or_insert_with(|| ResourceSet::empty(resource.type_url()))
            .insert(resource);
        self
    }

    /// Adds many resources.
    #[must_use]
    pub fn encoded_all(self, resources: impl IntoIterator<Item = EncodedResource>) -> Self {
        resources.into_iter().fold(self, Self::encoded)
    }

    /// Declares a type with no resources, so that full-state clients (LDS, CDS) are told there
    /// are none.
    #[must_use]
    pub fn empty_type(mut self, type_url: &str) -> Self {
        self.sets.entry(type_url.into()).or_insert_with(|| ResourceSet::empty(type_url));
        self
    }

    /// Sets an explicit version for one type instead of the content-derived one.
    #[must_use]
    pub fn version(mut self, type_url: &str, version: &str) -> Self {
        self.versions.insert(type_url.into(), version.into());
        self
    }

    /// Finishes the snapshot.
    pub fn build(mut self) -> Snapshot {
        for t in self.versions.keys() {
            self.sets.entry(t.clone()).or_insert_with(|| ResourceSet::empty(t.clone()));
        }
        let sets = self
            .sets
            .into_iter()
            .map(|(t, set)| {
                let version = self.versions.get(&t).cloned();
                (t, Arc::new(set.with_version(version)))
            })
            .collect();
        Snapshot { sets }
    }
}
