//! [`ResourceSet`]: the immutable set of resources of one type that a source publishes for one
//! node group.
//!
//! A set is a persistent ordered map (`imbl::OrdMap`): cloning it is O(1), replacing one resource
//! is O(log n) and shares everything else, and [`ResourceSet::diff`] skips the shared parts, so
//! the cost of an update follows what changed, not the size of the type.

use std::sync::Arc;

use imbl::OrdMap;
use std::borrow::Cow;

use crate::names::canonical_name;

use crate::resource::EncodedResource;
use crate::selection::{walk_rather_than_search, Changes, NameLists, Names, Selection, Selections};

/// One resource of a set: the set's own string for its canonical name, and the resource.
type SetEntry<'a> = (&'a Arc<str>, &'a Arc<EncodedResource>);

/// The resources of one type for one node group, with a set version.
///
/// The set version is derived from content by default: it is a hash over every
/// `(name, resource version)` pair, kept incrementally, so an unchanged set keeps its version
/// across rebuilds, replicas and restarts. An explicit version can replace it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSet {
    type_url: Arc<str>,
    resources: OrdMap<Arc<str>, Arc<EncodedResource>>,
    digest: u64,
    /// How many resources carry a TTL (heartbeats are only needed when some do).
    ttl_count: usize,
    explicit_version: Option<Arc<str>>,
    version: Arc<str>,
    /// What streams picked from the set, shared between them (see [`ResourceSet::select`]).
    selections: Selections,
}

/// One difference between two sets (see [`ResourceSet::diff`]); it holds the newer set's
/// resource, or the gone canonical name, shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The name is new or its version changed: the resource in the newer set.
    Upsert(Arc<EncodedResource>),
    /// The name is gone (its canonical name).
    Remove(Arc<str>),
}

impl ResourceSet {
    /// An empty set of the given type.
    pub fn empty(type_url: impl Into<Arc<str>>) -> Self {
        let mut set = Self {
            type_url: type_url.into(),
            resources: OrdMap::new(),
            digest: 0,
            ttl_count: 0,
            explicit_version: None,
            version: Arc::from(""),
            selections: Selections::default(),
        };
        set.refresh_version();
        set
    }

    /// Builds a set from resources. A later resource with the same name replaces an earlier one.
    pub fn from_resources(type_url: impl Into<Arc<str>>, resources: impl IntoIterator<Item = EncodedResource>) -> Self {
        let mut set = Self::empty(type_url);
        for r in resources {
            set.insert(r);
        }
        set
    }

    /// Inserts or replaces one resource, in O(log n).
    ///
    /// A resource of another type is a caller bug; it is stored under this set's type anyway.
    pub fn insert(&mut self, resource: EncodedResource) {
        debug_assert_eq!(resource.type_url(), &*self.type_url, "resource type differs from set type");
        let resource = Arc::new(resource);
        self.digest ^= entry_hash(&resource);
        self.ttl_count += usize::from(resource.ttl().is_some());
        let key: Arc<str> = match canonical_name(resource.name()) {
            Cow::Borrowed(_) => resource.name_arc().clone(),
            Cow::Owned(canonical) => canonical.into(),
        };
        self.selections = Selections::default();
        if let Some(old) = self.resources.insert(key, resource) {
            self.digest ^= entry_hash(&old);
            self.ttl_count -= usize::from(old.ttl().is_some());
        }
        self.refresh_version();
    }

    /// Removes one resource by name, in O(log n). Returns whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.resources.remove(&*canonical_name(name)) {
            Some(old) => {
                self.selections = Selections::default();
                self.digest ^= entry_hash(&old);
                self.ttl_count -= usize::from(old.ttl().is_some());
                self.refresh_version();
                true
            }
            None => false,
        }
    }

    /// Sets an explicit set version instead of the content-derived one; `None` goes back to
    /// the derived version.
    #[must_use]
    pub fn with_version(mut self, version: Option<Arc<str>>) -> Self {
        self.explicit_version = version;
        self.refresh_version();
        self
    }

    fn refresh_version(&mut self) {
        self.version = match &self.explicit_version {
            Some(v) => v.clone(),
            None => format!("{:016x}", self.digest ^ (self.resources.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .into(),
        };
    }

    /// The type URL of every resource in the set.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// The set version (`version_info` of SotW responses).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The set version as a shared string.
    pub fn version_arc(&self) -> &Arc<str> {
        &self.version
    }

    /// Looks up one resource (`xdstp://` names in any context-parameter order).
    pub fn get(&self, name: &str) -> Option<&Arc<EncodedResource>> {
        self.resources.get(&*canonical_name(name))
    }

    /// Whether the set holds a resource with this name.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Resources whose canonical names start with `prefix`, in order (for collection globs).
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Arc<EncodedResource>)> + 'a {
        let start: Arc<str> = prefix.into();
        self.resources.range(start..).take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Whether any resource carries a TTL.
    pub fn has_ttl(&self) -> bool {
        self.ttl_count > 0
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// All resources, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<EncodedResource>> {
        self.resources.values()
    }

    /// All canonical names, ordered.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.resources.keys()
    }

    /// All resources with their canonical names, ordered by name.
    pub fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<EncodedResource>)> {
        self.resources.iter()
    }

    /// Every resource, ordered by name, as one shared [`Selection`] (picked on first use).
    pub fn all(&self) -> Selection {
        self.selections.all(|| self.resources.values().cloned().collect())
    }

    /// The resources named by `names` (canonical names, sorted, each once; names the set does
    /// not hold are skipped), ordered by name.
    ///
    /// Streams that subscribe the same names get the same [`Selection`]: the set keeps the last
    /// few it was asked for, so one stream picks the resources and the others share them. On
    /// return `names` is the list the selection was kept with (shared by those streams), or
    /// holds the set's own strings for the names it found: later sets that
    /// [`adopt`](Self::adopt) this one recognise them by address.
    pub fn select(&self, names: &mut Names) -> Selection {
        self.selections.named(names, |names| self.pick(names))
    }

    /// [`select`](Self::select) for streams that share `lists`: when `names` comes back as
    /// another list (the set's own strings instead of a request's), `lists` keeps it in place of
    /// the equal list, so the streams that subscribe these names next start from it and are
    /// recognised by address.
    pub fn select_shared(&self, names: &mut Names, lists: Option<&NameLists>) -> Selection {
        let before = names.clone();
        let selection = self.select(names);
        if let Some(lists) = lists.filter(|_| !Arc::ptr_eq(&before, names)) {
            lists.prefer(names);
        }
        selection
    }

    /// The set's entry (its own name string and the resource) for each of the ascending
    /// canonical `names` (`None` where the set holds none), found by walking the set alongside
    /// them when they are not many fewer than its resources, else by one search each. Names that
    /// are the set's own strings are recognised by address.
    pub fn find_sorted<'a>(
        &'a self,
        names: impl IntoIterator<Item = &'a Arc<str>> + 'a,
    ) -> impl Iterator<Item = (&'a Arc<str>, Option<SetEntry<'a>>)> + 'a {
        let names = names.into_iter();
        let lookups = names.size_hint().0;
        let mut entries = walk_rather_than_search(self.len(), lookups).then(|| self.resources.iter().peekable());
        names.map(move |name| {
            let found = match &mut entries {
                Some(entries) => {
                    while entries.next_if(|(n, _)| !Arc::ptr_eq(n, name) && ***n < **name).is_some() {}
                    entries.next_if(|(n, _)| Arc::ptr_eq(n, name) || ***n == **name)
                }
                None => self.resources.get_key_value(name),
            };
            (name, found)
        })
    }

    /// The resources named by `names`; names found are replaced by the set's own strings.
    fn pick(&self, names: &mut Names) -> Selection {
        let mut picked = Vec::with_capacity(names.len().min(self.len()));
        // The set's strings for names held as other strings: (position, string).
        let mut own: Vec<(usize, Arc<str>)> = Vec::new();
        for (i, (key, found)) in self.find_sorted(names.iter()).enumerate() {
            if let Some((name, resource)) = found {
                if !Arc::ptr_eq(name, key) {
                    own.push((i, name.clone()));
                }
                picked.push(resource.clone());
            }
        }
        if !own.is_empty() {
            let mut renamed = names.to_vec();
            for (i, name) in own {
                renamed[i] = name;
            }
            *names = renamed.into();
        }
        picked.into()
    }

    /// Takes over `previous`'s copies of what the two sets share: the name string of every
    /// resource in both, and the resource itself where it is equal (same name, version and
    /// bytes). Content and version do not change.
    ///
    /// A source that rebuilds its whole snapshot for each change otherwise hands every stream new
    /// strings for the names it subscribed to, and each stream must compare them by content;
    /// with the previous set's strings they are recognised by address. Unchanged resources stay
    /// the same objects, so encoded bodies built from them stay shared. Costs one ordered pass
    /// over both sets (and a rebuild when something was taken over).
    pub fn adopt(&mut self, previous: &ResourceSet) {
        if self.type_url != previous.type_url {
            return;
        }
        let mut old = previous.resources.iter().peekable();
        let mut taken = false;
        let entries: Vec<(Arc<str>, Arc<EncodedResource>)> = self
            .resources
            .iter()
            .map(|(name, resource)| {
                while old.next_if(|(n, _)| ***n < **name).is_some() {}
                match old.peek() {
                    Some(&(n, o)) if **n == **name => {
                        let same_name = Arc::ptr_eq(n, name);
                        let same = Arc::ptr_eq(o, resource) || **o == **resource;
                        taken |= !same_name || (same && !Arc::ptr_eq(o, resource));
                        (n.clone(), if same { o.clone() } else { resource.clone() })
                    }
                    _ => (name.clone(), resource.clone()),
                }
            })
            .collect();
        if taken {
            self.resources = entries.into_iter().collect();
            self.selections = Selections::default();
        }
    }

    /// What changed from `older` to `self`, as [`diff`](Self::diff) finds it, shared: the set
    /// keeps the answer for the last few older sets it was asked about, so the streams that
    /// last sent the same set share one diff.
    pub fn changes_since(&self, older: &Arc<ResourceSet>) -> Changes {
        self.selections.changes_since(older, || self.diff(older).into())
    }

    /// What changed from `older` to `self`: upserts and removals, ordered by name.
    ///
    /// Subtrees shared between the two sets are skipped, so diffing two versions of a large set
    /// that differ in a few resources costs in proportion to those few.
    pub fn diff(&self, older: &ResourceSet) -> Vec<Change> {
        older
            .resources
            .diff(&self.resources)
            .filter_map(|d| match d {
                imbl::ordmap::DiffItem::Add(_, new) => Some(Change::Upsert(new.clone())),
                imbl::ordmap::DiffItem::Update { old, new } => {
                    (old.1.version() != new.1.version()).then(|| Change::Upsert(new.1.clone()))
                }
                imbl::ordmap::DiffItem::Remove(name, _) => Some(Change::Remove(name.clone())),
            })
            .collect()
    }
}

fn entry_hash(r: &EncodedResource) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(r.name().as_bytes());
    h.update(&[0]);
    h.update(r.version().as_bytes());
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::type_url::CLUSTER;

    fn res(name: &str, body: &[u8]) -> EncodedResource {
        EncodedResource::new(CLUSTER, name, body.to_vec())
    }

    #[test]
    fn version_depends_on_content_not_insertion_order() {
        let a = ResourceSet::from_resources(CLUSTER, [res("a", b"1"), res("b", b"2")]);
        let b = ResourceSet::from_resources(CLUSTER, [res("b", b"2"), res("a", b"1")]);
        assert_eq!(a.version(), b.version());
        let c = ResourceSet::from_resources(CLUSTER, [res("b", b"2"), res("a", b"3")]);
        assert_ne!(a.version(), c.version());
        assert_ne!(ResourceSet::empty(CLUSTER).version(), a.version());
    }

    #[test]
    fn find_sorted_walks_or_searches_alike() {
        let set = ResourceSet::from_resources(CLUSTER, (0..100).map(|i| res(&format!("c{i:03}"), b"x")));
        let own = |name: &str| set.names().find(|n| &***n == name).cloned().expect("held");
        // Few names in a large set are searched, many walked; missing names before, between and
        // after the set's; the set's own strings and other strings alike.
        let few: Vec<Arc<str>> = vec!["a".into(), "c005".into(), "c0055".into(), own("c050"), "zz".into()];
        let mut many: Vec<Arc<str>> = (0..120).map(|i| Arc::from(format!("c{i:03}").as_str())).collect();
        many[7] = own("c007");
        many.insert(0, "b".into());
        for names in [few, many] {
            let found: Vec<(String, Option<String>)> =
                set.find_sorted(&names).map(|(n, r)| (n.to_string(), r.map(|(_, r)| r.name().to_string()))).collect();
            let expected: Vec<(String, Option<String>)> =
                names.iter().map(|n| (n.to_string(), set.get(n).map(|r| r.name().to_string()))).collect();
            assert_eq!(found, expected);
            assert!(found.iter().any(|(_, r)| r.is_some()) && found.iter().any(|(_, r)| r.is_none()));
        }
    }

    #[test]
    fn insert_and_remove_restore_the_version() {
        let mut a = ResourceSet::from_resources(CLUSTER, [res("a", b"1")]);
        let before = a.version().to_string();
        a.insert(res("b", b"2"));
        assert_ne!(a.version(), before);
        assert!(a.remove("b"));
        assert!(!a.remove("b"));
        assert_eq!(a.version(), before);
    }

    #[test]
    fn diff_reports_only_changes() {
        let old = ResourceSet::from_resources(CLUSTER, (0..1000).map(|i| res(&format!("c{i}"), b"x")));
        let mut new = old.clone();
        new.insert(res("c5", b"y"));
        new.remove("c7");
        new.insert(res("c9", b"x")); // same content: not a change
        new.insert(res("zz", b"z"));
        let d = new.diff(&old);
        let names: Vec<String> = d
            .iter()
            .map(|c| match c {
                Change::Upsert(r) => format!("+{}", r.name()),
                Change::Remove(n) => format!("-{n}"),
            })
            .collect();
        assert_eq!(names, ["+c5", "-c7", "+zz"]);
    }

    #[test]
    fn adopt_takes_over_names_and_equal_resources_only() {
        let old = ResourceSet::from_resources(CLUSTER, [res("a", b"1"), res("b", b"2"), res("gone", b"3")]);
        let mut new = ResourceSet::from_resources(CLUSTER, [res("a", b"1"), res("b", b"changed"), res("new", b"4")]);
        let version = new.version().to_string();
        new.adopt(&old);
        assert_eq!(new.version(), version, "content and version are unchanged");
        assert_eq!(new.names().map(|n| &**n).collect::<Vec<_>>(), ["a", "b", "new"]);
        let name = |s: &ResourceSet, n: &str| s.entries().find(|(k, _)| &***k == n).map(|(k, _)| k.clone());
        for n in ["a", "b"] {
            assert!(
                Arc::ptr_eq(&name(&new, n).expect("in new"), &name(&old, n).expect("in old")),
                "{n}: the old name string"
            );
        }
        assert!(Arc::ptr_eq(new.get("a").expect("a"), old.get("a").expect("a")), "an equal resource is the old object");
        assert_eq!(&new.get("b").expect("b").value()[..], b"changed", "a changed resource stays new");
        assert!(!old.contains("new") && !new.contains("gone"));
    }

    fn names(names: &[&str]) -> Names {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn selected(s: &Selection) -> Vec<&str> {
        s.iter().map(|r| r.name()).collect()
    }

    #[test]
    fn select_picks_named_resources_in_order_by_walk_and_by_search() {
        let set = ResourceSet::from_resources(CLUSTER, (0..100).map(|i| res(&format!("c{i:03}"), b"x")));
        // 3 names among 100: searched; 50 names among 100: walked.
        let mut few = names(&["c007", "c050", "missing", "c099"]);
        assert_eq!(selected(&set.select(&mut few)), ["c007", "c050", "c099"]);
        let listed: Vec<String> = (0..100).step_by(2).map(|i| format!("c{i:03}")).chain(["zz".into()]).collect();
        let mut many: Names = listed.iter().map(|n| Arc::from(n.as_str())).collect();
        let picked = set.select(&mut many);
        assert_eq!(picked.len(), 50);
        assert!(picked.iter().zip(&listed).all(|(r, n)| r.name() == n));
        // Names found become the set's own strings, in both ways; a missing one stays.
        for list in [&few, &many] {
            for n in list.iter() {
                let own = set.names().find(|k| *k == n);
                assert_eq!(own.is_some_and(|k| Arc::ptr_eq(k, n)), own.is_some(), "{n}");
            }
        }
        assert!(set.select(&mut names(&[])).is_empty());
        assert!(ResourceSet::empty(CLUSTER).select(&mut names(&["a"])).is_empty());
    }

    #[test]
    fn streams_selecting_the_same_names_share_the_selection_and_the_names() {
        let set = ResourceSet::from_resources(CLUSTER, (0..10).map(|i| res(&format!("c{i}"), b"x")));
        let mut first = names(&["c1", "c2", "c5"]);
        let mut second = names(&["c1", "c2", "c5"]);
        let a = set.select(&mut first);
        let b = set.select(&mut second);
        assert!(Arc::ptr_eq(&a, &b), "one selection");
        assert!(Arc::ptr_eq(&first, &second), "one list of names");
        let mut other = names(&["c1", "c2"]);
        assert!(!Arc::ptr_eq(&set.select(&mut other), &a));
        assert!(Arc::ptr_eq(&set.all(), &set.all()));
        assert_eq!(set.all().len(), 10);
        // A changed set (a clone being edited) picks anew.
        let mut changed = set.clone();
        changed.insert(res("c2", b"y"));
        let c = changed.select(&mut first);
        assert!(!Arc::ptr_eq(&c, &a));
        assert_eq!(&c[1].value()[..], b"y");
        assert_eq!(changed.all().len(), 10);
        assert!(!Arc::ptr_eq(&changed.all(), &set.all()));
        assert_eq!(set, set.clone(), "selections are not part of a set's value");
    }

    #[test]
    fn selections_kept_are_bounded() {
        let set = ResourceSet::from_resources(CLUSTER, (0..20).map(|i| res(&format!("c{i:02}"), b"x")));
        let mut lists: Vec<Names> = (0..20).map(|i| names(&[&format!("c{i:02}")])).collect();
        let picked: Vec<Selection> = lists.iter_mut().map(|l| set.select(l)).collect();
        assert!(picked.iter().zip(0..).all(|(s, i)| selected(s) == [format!("c{i:02}")]));
        assert_eq!(set.selections.named.len(), crate::selection::KEPT);
        // The most recent are kept, the oldest picked anew.
        assert!(Arc::ptr_eq(&set.select(&mut names(&["c19"])), &picked[19]));
        assert!(!Arc::ptr_eq(&set.select(&mut names(&["c00"])), &picked[0]));
    }

    #[test]
    fn changes_since_an_older_set_are_shared_and_match_the_diff() {
        let old = Arc::new(ResourceSet::from_resources(CLUSTER, (0..100).map(|i| res(&format!("c{i:02}"), b"x"))));
        let mut next = (*old).clone();
        next.insert(res("c05", b"y"));
        next.remove("c07");
        next.insert(res("new", b"z"));
        let next = Arc::new(next);
        let a = next.changes_since(&old);
        let b = next.changes_since(&old);
        assert!(Arc::ptr_eq(&a, &b), "streams that sent the same set share one answer");
        let expected = next.diff(&old);
        assert_eq!(&a[..], &expected[..]);
        assert_eq!(a.len(), 3);
        // Against another older set (equal content, another object): its own answer.
        let twin = Arc::new((*old).clone());
        let c = next.changes_since(&twin);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(&c[..], &expected[..]);
        // A set changed in place forgets its answers.
        let mut edited = (*next).clone();
        edited.insert(res("c06", b"w"));
        assert_eq!(edited.changes_since(&old).len(), 4);
        // Bounded: answers for the oldest sets asked about are dropped.
        let others: Vec<Arc<ResourceSet>> = (0..10).map(|_| Arc::new((*old).clone())).collect();
        for o in &others {
            next.changes_since(o);
        }
        assert!(!Arc::ptr_eq(&next.changes_since(&old), &a), "computed again");
    }

    #[test]
    fn explicit_version_wins() {
        let a = ResourceSet::from_resources(CLUSTER, [res("a", b"1")]).with_version(Some("v1".into()));
        assert_eq!(a.version(), "v1");
    }
}
