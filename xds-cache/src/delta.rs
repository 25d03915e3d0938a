//! The incremental (delta) protocol state machine of one stream, without I/O.
//!
//! Driven like [`SotwStream`](crate::SotwStream): requests in ([`DeltaStream::on_request`]),
//! the latest resource set of each type in ([`DeltaStream::on_resources`]), responses out when
//! the transport can take one ([`DeltaStream::next_response`]).
//!
//! What the client holds is remembered as the resource set our last response brought it to
//! (`base`, shared with the source, never copied) plus the subscription. The next response is
//! the [`ResourceSet::diff`] between `base` and the latest set, restricted to what the client
//! subscribes to, plus every name it newly asked for: the cost follows what changed, not the
//! size of the type, and a stream holds no per-resource copy of the index.
//!
//! Rules implemented here (numbers from the project's XDS-PROTOCOL.md; source: Envoy's
//! `xds_protocol` documentation, "Incremental xDS"):
//!
//! 12. Every response has a nonce; the nonce only correlates ACK/NACK. Subscription changes in a
//!     request with a stale nonce are still applied.
//! 13. `resource_names_subscribe` / `resource_names_unsubscribe` edit the subscription; every
//!     name in `resource_names_subscribe` is answered, even if already subscribed and unchanged.
//! 14. A subscribed name that does not exist is reported in `removed_resources`, remembered, and
//!     sent if it appears later.
//! 15. Deletes go in `removed_resources`. Unsubscribing an unknown name gets no reply, except
//!     that a wildcard client unsubscribing one name gets that resource (or a removal), since
//!     the wildcard still covers it and the client dropped it.
//! 16. On reconnect `initial_resource_versions` tells what the client holds: only differences
//!     and removals are sent.
//! 17. Each resource carries its name and its own version; a name appears at most once per
//!     response.
//! 18. A NACK keeps the client's last good state and is not answered with the same content: the
//!     rejected resources are sent again only when they change.
//! 21. `xdstp://` names are compared in canonical form (context parameters in any order) and
//!     answered with exactly the name the client asked for; `.../*` subscribes a collection.
//!
//! Wildcard: `*` in `resource_names_subscribe`, or (legacy) a first request with no names for a
//! type that allows it (LDS, CDS, SRDS); the legacy wildcard ends when explicit names are
//! subscribed, an explicit `*` only when `*` is unsubscribed.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use xds_core::{canonical_name, glob_matches, glob_parts, type_url, Change, EncodedResource, NameLists, ResourceSet};

use crate::ack::AckState;
use crate::sotw::{check_node, resolve_type, Nack, RequestInfo, RequestKind, WILDCARD};
use crate::types::TypeMap;
use crate::{Error, StreamSettings};

/// One resource of a delta response: the name the client asked for and the shared resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaResource {
    /// Exactly the name the client subscribed to (it may differ from the resource's own name in
    /// the order of `xdstp://` context parameters).
    pub name: Arc<str>,
    /// The resource.
    pub resource: Arc<EncodedResource>,
    /// A TTL heartbeat: name, version and TTL only, no body (the client keeps its copy).
    pub heartbeat: bool,
}

/// One delta response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaResponse {
    /// The type URL.
    pub type_url: Arc<str>,
    /// `system_version_info`: the set version (for debugging only).
    pub system_version: Arc<str>,
    /// The nonce, unique within the stream.
    pub nonce: Arc<str>,
    /// Added or changed resources, each name once, ordered by name.
    pub resources: Vec<DeltaResource>,
    /// Names deleted or not existing, each once, ordered.
    pub removed: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    /// The wildcard came from an empty first request, not from `*`.
    legacy_wildcard: bool,
    /// Explicit subscriptions.
    names: Names,
    /// Collection globs: (canonical path prefix, canonical query) → the name as requested.
    globs: BTreeMap<(String, String), Arc<str>>,
    /// Canonical names to answer in the next response whether or not they changed.
    pending: Pending,
    /// Globs to answer in full in the next response.
    pending_globs: Vec<(String, String)>,
    /// Everything covered by the wildcard must be compared in full in the next response.
    pending_all: bool,
    /// A TTL heartbeat is due for the resources with a TTL the client holds.
    heartbeat_due: bool,
    /// Removals held back so that they follow the listeners and routes (make-before-break).
    deferred_removals: BTreeSet<Arc<str>>,
    /// What a reconnecting client said it holds (canonical name → version), until answered.
    initial: Option<HashMap<Arc<str>, String>>,
    /// The set our last response brought the client to.
    base: Option<Arc<ResourceSet>>,
    latest: Option<Arc<ResourceSet>>,
    waiting: bool,
    dirty: bool,
    /// Nonce, sent and ACKed versions, last NACK.
    ack: AckState,
}

/// The delta state of one stream (ADS or per-type).
#[derive(Debug)]
pub struct DeltaStream {
    fixed_type: Option<Arc<str>>,
    /// From the first request; shared with the stream's driver.
    node: Option<Arc<Node>>,
    next_nonce: u64,
    types: TypeMap<TypeState>,
    settings: StreamSettings,
}

impl DeltaStream {
    /// A stream of the aggregated service: every request names its type.
    pub fn ads() -> Self {
        Self {
            fixed_type: None,
            node: None,
            next_nonce: 1,
            types: TypeMap::default(),
            settings: StreamSettings::default(),
        }
    }

    /// A per-type stream (`DeltaClusters`, ...).
    pub fn for_type(type_url: &str) -> Self {
        Self { fixed_type: Some(type_url::shared(type_url)), ..Self::ads() }
    }

    /// The lists of names it shares (SotW streams included) and the limits it keeps
    /// ([`StreamSettings::default`]); its subscription adds up over its requests.
    pub fn with_settings(mut self, settings: StreamSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The node from the first request.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// Applies one request. Errors end the stream (missing node, missing or wrong type URL).
    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Result<RequestInfo, Error> {
        check_node(&mut self.node, req.node.as_ref())?;
        let (type_url, new_type) = resolve_type(&self.fixed_type, &req.type_url, &self.types)?;
        let state = self.types.entry(type_url.clone());

        // Rule 12: the nonce correlates ACK/NACK only; subscription changes apply regardless.
        let kind = state.ack.classify(&req.response_nonce, req.error_detail.as_ref(), None);
        if matches!(kind, RequestKind::Ack | RequestKind::Nack { .. }) {
            state.waiting = true;
            state.dirty = true;
        }

        if new_type {
            // Rule 16: what a reconnecting client already holds.
            if !req.initial_resource_versions.is_empty() {
                state.initial = Some(
                    req.initial_resource_versions
                        .iter()
                        .map(|(n, v)| (Arc::from(&*canonical_name(n)), v.clone()))
                        .collect(),
                );
            }
            let legacy = type_url::lookup(&type_url).is_some_and(|t| t.legacy_wildcard);
            if legacy && req.resource_names_subscribe.is_empty() {
                state.wildcard = true;
                state.legacy_wildcard = true;
            }
            state.waiting = true;
            state.dirty = true;
        }

        let mut changed = false;
        // Explicit names subscribed: (canonical, as the client spelled it).
        let mut added: Vec<(Cow<'_, str>, &str)> = Vec::new();
        for name in &req.resource_names_subscribe {
            changed = true;
            if name == WILDCARD {
                if !state.wildcard && state.base.is_some() {
                    state.pending_all = true;
                }
                state.wildcard = true;
                state.legacy_wildcard = false;
            } else if let Some(glob) = glob_parts(name) {
                state.pending_globs.push(glob.clone());
                state.globs.insert(glob, Arc::from(name.as_str()));
            } else {
                added.push((canonical_name(name), name.as_str()));
            }
        }
        let added = sorted_latest_spelling(added);
        if state.legacy_wildcard && !(added.is_empty() && state.names.is_empty()) {
            // Explicit names end the legacy wildcard.
            state.wildcard = false;
            state.legacy_wildcard = false;
        }
        // Explicit names unsubscribed (canonical), each once.
        let mut dropped: Vec<Cow<'_, str>> = Vec::new();
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                changed |= state.wildcard;
                state.wildcard = false;
                state.legacy_wildcard = false;
            } else if let Some(glob) = glob_parts(name) {
                changed |= state.globs.remove(&glob).is_some();
            } else {
                let canonical = canonical_name(name);
                let was_explicit =
                    state.names.contains(&canonical) || added.binary_search_by(|(a, _)| (**a).cmp(&canonical)).is_ok();
                if state.wildcard {
                    // Rule 15: the wildcard still covers it; the client dropped it.
                    state.pending.insert(Arc::from(&*canonical));
                    changed = true;
                } else if was_explicit {
                    state.pending.remove(&canonical);
                }
                if was_explicit {
                    dropped.push(canonical);
                }
            }
        }
        dropped.sort_unstable();
        dropped.dedup();
        // The limits, checked before the new list is built; collection globs count as names.
        let (globs, glob_bytes) = (state.globs.len(), state.globs.values().map(|g| g.len()).sum::<usize>());
        let settings = &self.settings;
        let within_limits = |names: usize, bytes: usize| {
            let (names, bytes, t) = (names + globs, bytes + glob_bytes, || type_url.to_string());
            match (names > settings.max_names, bytes > settings.max_name_bytes) {
                (true, _) => Err(Error::TooManyNames { type_url: t(), names, limit: settings.max_names }),
                (_, true) => Err(Error::SubscriptionTooLarge { type_url: t(), bytes, limit: settings.max_name_bytes }),
                _ => Ok(()),
            }
        };
        state.names.edit(&added, &dropped, settings.name_lists.as_deref(), within_limits)?;
        // Rules 13 and 14: every name subscribed is answered (unless unsubscribed again). The
        // names come in order: the set is built in one pass rather than by an insert each.
        state.pending.extend_sorted(state.names.held(added.iter().map(|(canonical, _)| &**canonical)));
        if changed {
            state.waiting = true;
            state.dirty = true;
        }
        Ok(RequestInfo { type_url, kind, new_type })
    }

    /// Records the latest resources of a type.
    pub fn on_resources(&mut self, type_url: &str, resources: Option<Arc<ResourceSet>>) {
        if let Some(state) = self.types.get_mut(type_url) {
            state.latest = resources;
            state.dirty = true;
        }
    }

    /// Time to refresh TTLs: every type whose client holds resources with a TTL gets a
    /// heartbeat (each such resource with its version and TTL, without a body) in its next
    /// response. The driver calls this at an interval shorter than the TTLs it serves.
    pub fn on_heartbeat(&mut self) {
        for state in self.types.values_mut() {
            if state.holds_ttl() {
                state.heartbeat_due = true;
                state.dirty = true;
            }
        }
    }

    /// Whether [`on_heartbeat`](Self::on_heartbeat) would do anything: some type holds
    /// resources with a TTL. The driver runs its heartbeat timer only then.
    pub fn needs_heartbeats(&self) -> bool {
        self.types.values().any(TypeState::holds_ttl)
    }

    /// Whether [`next_response`](Self::next_response) has something to evaluate.
    pub fn wants_to_send(&self) -> bool {
        self.types.values().any(TypeState::ready)
    }

    /// The next response to send, if any; types in make-before-break order.
    pub fn next_response(&mut self) -> Option<DeltaResponse> {
        for i in 0..self.types.len() {
            let (t, state) = self.types.at(i);
            if !state.ready() {
                continue;
            }
            let t = t.clone();
            // Rule 19: removals of clusters and endpoints wait until the types after them
            // (listeners, routes) that have something to send were answered.
            let hold_removals = (&*t == type_url::CLUSTER || &*t == type_url::ENDPOINT)
                && self
                    .types
                    .after(i)
                    .any(|(later, s)| s.ready() && type_url::order(later) > type_url::order(type_url::ENDPOINT));
            let state = self.types.at_mut(i);
            let Some((resources, mut removed)) = state.compute(self.settings.name_lists.as_deref()) else {
                state.dirty = false;
                continue;
            };
            let mut deferred = BTreeSet::new();
            if hold_removals && !removed.is_empty() {
                if resources.is_empty() {
                    continue; // stays dirty: answered once the later types are
                }
                deferred = std::mem::take(&mut removed).into_iter().collect();
            }
            state.dirty = !deferred.is_empty();
            let latest = state.latest.clone()?;
            let nonce = crate::ack::nonce(self.next_nonce);
            self.next_nonce += 1;
            state.base = Some(latest.clone());
            state.pending.clear();
            state.pending_globs.clear();
            state.pending_all = false;
            state.initial = None;
            state.deferred_removals = deferred;
            state.heartbeat_due = false;
            state.waiting = false;
            state.ack.sent(nonce.clone(), latest.version_arc().clone());
            // Rule 19: an updated cluster warms until it hears about its endpoints. Envoy asks
            // again for them; answering the same names unasked covers clients that do not
            // (the common case where the EDS service name is the cluster name).
            if &*t == type_url::CLUSTER {
                if let Some(eds) = self.types.get_mut(type_url::ENDPOINT).filter(|eds| eds.base.is_some()) {
                    let mut warming: Vec<Arc<str>> = resources
                        .iter()
                        .filter(|r| !r.heartbeat)
                        .filter_map(|r| eds.names.canonical(&canonical_name(r.resource.name())).cloned())
                        .collect();
                    if !warming.is_empty() {
                        warming.sort_unstable();
                        warming.dedup();
                        eds.pending.extend_sorted(warming.into_iter());
                        eds.dirty = true;
                    }
                }
            }
            return Some(DeltaResponse {
                type_url: t,
                system_version: latest.version_arc().clone(),
                nonce,
                resources,
                removed,
            });
        }
        None
    }

    /// The system version of the last response the client ACKed for a type.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.ack.acked_version.as_deref()
    }

    /// The system version last sent for a type.
    pub fn sent_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.ack.sent_version.as_deref()
    }

    /// The last NACK of a type, until the next ACK.
    pub fn last_nack(&self, type_url: &str) -> Option<&Nack> {
        self.types.get(type_url)?.ack.nack.as_ref()
    }

    /// Whether the type is subscribed by wildcard.
    pub fn is_wildcard(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|s| s.wildcard)
    }

    /// The explicitly subscribed names of a type, as the client spelled them.
    pub fn subscribed(&self, type_url: &str) -> impl Iterator<Item = &str> {
        self.types.get(type_url).into_iter().flat_map(|s| s.names.requested())
    }

    /// The types this stream has requested.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(|t| &**t)
    }
}

/// Explicit subscriptions of a type.
///
/// The canonical names are one sorted list, shared with the other streams that subscribe the
/// same names: found among the server's [`NameLists`] when a request edits the subscription, then
/// taken over from the resource set that answers it ([`ResourceSet::select`], which makes the
/// list's strings the set's own, so a walk alongside a diff recognises them by address). A
/// thousand proxies subscribing the same ten thousand endpoint names hold one list, not a
/// thousand lists of their own strings. A name the client spelled otherwise than canonically
/// (an `xdstp://` name with its context parameters in another order) keeps its spelling aside.
#[derive(Debug, Default)]
struct Names {
    /// Canonical names, sorted, each once.
    keys: xds_core::Names,
    /// Canonical name -> the name as the client spelled it, where the two differ (usually none).
    spelled: BTreeMap<Arc<str>, Arc<str>>,
    /// `keys` changed since a resource set last matched them.
    unselected: bool,
    /// The bytes of `keys`' names.
    bytes: usize,
}

impl Names {
    fn position(&self, canonical: &str) -> Result<usize, usize> {
        self.keys.binary_search_by(|name| (**name).cmp(canonical))
    }

    /// The stream's copy of a subscribed canonical name.
    fn canonical(&self, canonical: &str) -> Option<&Arc<str>> {
        self.position(canonical).ok().map(|i| &self.keys[i])
    }

    /// The name as the client spelled it.
    fn get(&self, canonical: &str) -> Option<&Arc<str>> {
        self.canonical(canonical).map(|key| self.spelling(key))
    }

    /// How the client spelled the subscribed canonical name `key`.
    fn spelling<'a>(&'a self, key: &'a Arc<str>) -> &'a Arc<str> {
        if self.spelled.is_empty() {
            return key;
        }
        self.spelled.get(key).unwrap_or(key)
    }

    /// The stream's copies of those of the ascending canonical `names` that are subscribed,
    /// found by walking the list alongside them.
    fn held<'a>(&'a self, names: impl Iterator<Item = &'a str> + 'a) -> impl Iterator<Item = Arc<str>> + 'a {
        let mut keys = self.keys.iter().peekable();
        names.filter_map(move |name| {
            while keys.next_if(|key| &***key < name).is_some() {}
            keys.next_if(|key| &***key == name).cloned()
        })
    }

    /// Every name as the client spelled it, ordered by canonical name.
    fn requested(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| &**self.spelling(key))
    }

    fn contains(&self, canonical: &str) -> bool {
        self.position(canonical).is_ok()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds the `added` names (canonical and as spelled, ordered by canonical name, each once)
    /// and removes the `dropped` ones (canonical, ordered, each once; applied after the added).
    /// The new list is one `lists` keeps, when it keeps an equal one; otherwise it is kept there.
    /// `within_limits` is given the names and bytes of the list (the new one, before it is
    /// built) and may refuse it.
    fn edit(
        &mut self,
        added: &[(Cow<'_, str>, &str)],
        dropped: &[Cow<'_, str>],
        lists: Option<&NameLists>,
        within_limits: impl Fn(usize, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for (canonical, requested) in added {
            if **canonical == **requested {
                self.spelled.remove(&**canonical);
            } else {
                self.spelled.insert(Arc::from(&**canonical), Arc::from(*requested));
            }
        }
        for canonical in dropped {
            self.spelled.remove(&**canonical);
        }
        // The common re-subscription of names already held (Envoy's, when a cluster warms)
        // leaves the list as it is.
        if dropped.is_empty() && added.iter().all(|(canonical, _)| self.contains(canonical)) {
            return within_limits(self.keys.len(), self.bytes);
        }
        // The new list: each name with the string the stream holds for it, if any.
        let mut merged: Vec<(&str, Option<&Arc<str>>)> = Vec::with_capacity(self.keys.len() + added.len());
        let mut new = added.iter().map(|(canonical, _)| &**canonical).peekable();
        for key in self.keys.iter() {
            while let Some(name) = new.next_if(|name| *name < &**key) {
                merged.push((name, None));
            }
            new.next_if(|name| *name == &**key);
            merged.push((key, Some(key)));
        }
        merged.extend(new.map(|name| (name, None)));
        if !dropped.is_empty() {
            merged.retain(|(name, _)| dropped.binary_search_by(|d| (**d).cmp(name)).is_err());
        }
        let bytes = merged.iter().map(|(name, _)| name.len()).sum();
        within_limits(merged.len(), bytes)?;
        let keys = match lists.and_then(|l| l.find(merged.iter().map(|(name, _)| *name))) {
            Some(kept) => kept,
            None => {
                let keys: xds_core::Names =
                    merged.iter().map(|(name, held)| held.map_or_else(|| Arc::from(*name), Arc::clone)).collect();
                if let Some(lists) = lists {
                    lists.keep(&keys);
                }
                keys
            }
        };
        self.keys = keys;
        self.bytes = bytes;
        self.unselected = true;
        Ok(())
    }
}

/// `added` ordered by canonical name, each name once with the latest of its spellings.
fn sorted_latest_spelling<'a>(mut added: Vec<(Cow<'a, str>, &'a str)>) -> Vec<(Cow<'a, str>, &'a str)> {
    added.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the same name stays in request order
    added.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(&mut later.1, &mut earlier.1);
        }
        same
    });
    added
}

/// Canonical names, ordered, each once: a sorted vector, since names mostly come in ordered
/// batches (a request's subscriptions) and are walked in order.
#[derive(Debug, Default)]
struct Pending(Vec<Arc<str>>);

impl Pending {
    fn insert(&mut self, name: Arc<str>) {
        if let Err(i) = self.0.binary_search(&name) {
            self.0.insert(i, name);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|n| (**n).cmp(name)) {
            self.0.remove(i);
        }
    }

    /// Adds ascending names in one merge.
    fn extend_sorted(&mut self, names: impl Iterator<Item = Arc<str>>) {
        let mut names = names.peekable();
        if names.peek().is_none() {
            return; // an ACK: nothing to add, nothing to copy
        }
        if self.0.is_empty() {
            self.0 = names.collect();
            return;
        }
        let old = std::mem::take(&mut self.0);
        let mut merged = Vec::with_capacity(old.len() + names.size_hint().0);
        let mut old = old.into_iter().peekable();
        for name in names {
            while let Some(before) = old.next_if(|o| *o < name) {
                merged.push(before);
            }
            if old.peek() != Some(&name) {
                merged.push(name);
            }
        }
        merged.extend(old);
        self.0 = merged;
    }

    /// Empties it, giving its memory back.
    fn clear(&mut self) {
        self.0 = Vec::new();
    }

    fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        self.0.iter()
    }
}

/// Finds ascending canonical names among the explicit subscriptions: by walking them alongside
/// when there are not many more of them than names to find, else by one lookup each.
struct NameLookup<'a> {
    names: &'a Names,
    /// Walking: the position of the next name to compare.
    next: Option<usize>,
}

impl<'a> NameLookup<'a> {
    fn new(names: &'a Names, lookups: usize) -> Self {
        let walk = xds_core::walk_rather_than_search(names.keys.len(), lookups);
        Self { names, next: walk.then_some(0) }
    }

    /// The name as the client spelled it, if `canonical` is subscribed; `set_name` is the
    /// set's own copy of `canonical`, when known (compared by address first). Names must come
    /// in ascending order.
    fn get(&mut self, canonical: &str, set_name: Option<&Arc<str>>) -> Option<Arc<str>> {
        let Some(next) = &mut self.next else {
            return self.names.get(canonical).cloned();
        };
        while let Some(name) = self.names.keys.get(*next) {
            let order = match set_name {
                Some(set_name) if Arc::ptr_eq(set_name, name) => Ordering::Equal,
                _ => (**name).cmp(canonical),
            };
            match order {
                Ordering::Less => *next += 1,
                Ordering::Equal => return Some(self.names.spelling(name).clone()),
                Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Whether one of the collection globs matches `canonical`.
fn in_glob(globs: &BTreeMap<(String, String), Arc<str>>, canonical: &str) -> bool {
    globs.keys().any(|(prefix, query)| glob_matches(prefix, query, canonical))
}

/// Builds one response, ordered by name, so that no name appears twice (rule 17): a later
/// upsert replaces an earlier entry of the same name, a heartbeat never replaces an entry, and
/// a removal never replaces an upsert.
///
/// Entries usually come in ascending order of name, each name once (one pass over a diff or a
/// set): they are then simply appended. The first entry out of order moves them into maps keyed
/// by name, which apply the rules above.
enum Builder {
    /// Every name so far came after the previous one.
    Sorted {
        upserts: Vec<DeltaResource>,
        removed: Vec<Arc<str>>,
        /// The last name appended is in `removed` (else in `upserts`).
        last_removed: bool,
    },
    /// Name → entry.
    Map { upserts: BTreeMap<Arc<str>, DeltaResource>, removed: BTreeSet<Arc<str>> },
}

impl Default for Builder {
    fn default() -> Self {
        Builder::Sorted { upserts: Vec::new(), removed: Vec::new(), last_removed: false }
    }
}

/// What [`Builder`] is given for a name.
enum Entry<'a> {
    Upsert(&'a Arc<EncodedResource>),
    Heartbeat(&'a Arc<EncodedResource>),
    Remove,
}

impl Builder {
    fn upsert(&mut self, name: Arc<str>, resource: &Arc<EncodedResource>) {
        self.add(name, Entry::Upsert(resource));
    }

    fn heartbeat(&mut self, name: Arc<str>, resource: &Arc<EncodedResource>) {
        self.add(name, Entry::Heartbeat(resource));
    }

    fn remove(&mut self, name: Arc<str>) {
        self.add(name, Entry::Remove);
    }

    fn add(&mut self, name: Arc<str>, entry: Entry<'_>) {
        if let Builder::Sorted { upserts, removed, last_removed } = self {
            let last = if *last_removed { removed.last() } else { upserts.last().map(|u| &u.name) };
            if last.is_none_or(|last| *last < name) {
                *last_removed = matches!(entry, Entry::Remove);
                match entry {
                    Entry::Upsert(r) => upserts.push(DeltaResource { name, resource: r.clone(), heartbeat: false }),
                    Entry::Heartbeat(r) => upserts.push(DeltaResource { name, resource: r.clone(), heartbeat: true }),
                    Entry::Remove => removed.push(name),
                }
                return;
            }
            *self = Builder::Map {
                upserts: std::mem::take(upserts).into_iter().map(|u| (u.name.clone(), u)).collect(),
                removed: std::mem::take(removed).into_iter().collect(),
            };
        }
        let Builder::Map { upserts, removed } = self else {
            return;
        };
        match entry {
            Entry::Upsert(r) => {
                removed.remove(&name);
                upserts.insert(name.clone(), DeltaResource { name, resource: r.clone(), heartbeat: false });
            }
            Entry::Heartbeat(r) => {
                if !removed.contains(&name) {
                    upserts.entry(name.clone()).or_insert_with(|| DeltaResource {
                        name,
                        resource: r.clone(),
                        heartbeat: true,
                    });
                }
            }
            Entry::Remove => {
                if !upserts.contains_key(&name) {
                    removed.insert(name);
                }
            }
        }
    }

    /// Room for `additional` more resources.
    fn reserve(&mut self, additional: usize) {
        if let Builder::Sorted { upserts, .. } = self {
            upserts.reserve(additional);
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Builder::Sorted { upserts, removed, .. } => upserts.is_empty() && removed.is_empty(),
            Builder::Map { upserts, removed } => upserts.is_empty() && removed.is_empty(),
        }
    }

    /// The resources and the removed names, each ordered by name.
    fn finish(self) -> (Vec<DeltaResource>, Vec<Arc<str>>) {
        match self {
            Builder::Sorted { upserts, removed, .. } => (upserts, removed),
            Builder::Map { upserts, removed } => (upserts.into_values().collect(), removed.into_iter().collect()),
        }
    }
}

impl TypeState {
    /// Something was sent and the latest resources carry TTLs: heartbeats are due.
    fn holds_ttl(&self) -> bool {
        self.base.is_some() && self.latest.as_ref().is_some_and(|l| l.has_ttl())
    }

    fn ready(&self) -> bool {
        self.dirty && self.waiting && self.latest.is_some()
    }

    /// The name to answer with: as the client spelled it when it subscribed explicitly.
    fn reply_name(&self, canonical: &Arc<str>, resource: Option<&Arc<EncodedResource>>) -> Arc<str> {
        // The common case: no name respelled, and the resource named canonically: the answer is
        // the canonical name, subscribed explicitly or not.
        let own = resource.map(|r| r.name_arc());
        if self.names.spelled.is_empty() && own.is_none_or(|own| Arc::ptr_eq(own, canonical) || **own == **canonical) {
            return canonical.clone();
        }
        if let Some(requested) = self.names.get(canonical) {
            return requested.clone();
        }
        resource.map_or_else(|| canonical.clone(), |r| r.name_arc().clone())
    }

    fn covers(&self, canonical: &str) -> bool {
        self.wildcard || self.names.contains(canonical) || in_glob(&self.globs, canonical)
    }

    /// What to send now: `None` when nothing is due.
    fn compute(&mut self, lists: Option<&NameLists>) -> Option<(Vec<DeltaResource>, Vec<Arc<str>>)> {
        let latest = self.latest.as_ref()?;
        if std::mem::take(&mut self.names.unselected) && !self.names.is_empty() {
            // Takes over the list the set keeps for these names (the other streams' that
            // subscribe the same), holding the set's own strings.
            latest.select_shared(&mut self.names.keys, lists);
        }
        let mut out = Builder::default();
        let first = self.base.is_none();
        let known_version = |name: &str| -> Option<&str> {
            match (&self.initial, &self.base) {
                (Some(initial), _) => initial.get(name).map(String::as_str),
                (None, Some(base)) => base.get(name).map(|r| r.version()),
                (None, None) => None,
            }
        };
        match &self.base {
            // The first answer of the stream for this type: compare everything covered with what
            // the client said it holds.
            None => {
                if self.wildcard {
                    for (name, r) in latest.names().zip(latest.iter()) {
                        if known_version(name) != Some(r.version()) {
                            out.upsert(self.reply_name(name, Some(r)), r);
                        }
                    }
                }
                if let Some(initial) = &self.initial {
                    for name in initial.keys() {
                        if !latest.contains(name) {
                            out.remove(self.reply_name(name, None));
                        }
                    }
                }
            }
            Some(base) => {
                // Shared with the other streams that last sent the same set.
                let changes = latest.changes_since(base);
                out.reserve(changes.len());
                // The diff comes ordered by canonical name, like the explicit names.
                let mut explicit = NameLookup::new(&self.names, changes.len());
                // Not explicit: the resource's own name, if the wildcard or a glob covers it.
                let implicit = |canonical: &str, own: &Arc<str>| {
                    (self.wildcard || in_glob(&self.globs, canonical)).then(|| own.clone())
                };
                for change in changes.iter() {
                    match change {
                        Change::Upsert(r) => {
                            let canonical = canonical_name(r.name());
                            // The set holds the resource under its own name when it is canonical.
                            let set_name = matches!(canonical, Cow::Borrowed(_)).then(|| r.name_arc());
                            let reply =
                                explicit.get(&canonical, set_name).or_else(|| implicit(&canonical, r.name_arc()));
                            if let Some(reply) = reply {
                                out.upsert(reply, r);
                            }
                        }
                        Change::Remove(name) => {
                            if let Some(reply) = explicit.get(name, Some(name)).or_else(|| implicit(name, name)) {
                                out.remove(reply);
                            }
                        }
                    }
                }
                if self.pending_all {
                    for (name, r) in latest.names().zip(latest.iter()) {
                        let held =
                            self.names.contains(name) && base.get(name).map(|b| b.version()) == Some(r.version());
                        if !held {
                            out.upsert(self.reply_name(name, Some(r)), r);
                        }
                    }
                }
            }
        }
        // Rules 13 and 14: every newly subscribed name is answered, with the resource or a removal.
        for (name, found) in latest.find_sorted(self.pending.iter()) {
            if let Some((_, r)) = found {
                if !(first && self.initial.as_ref().and_then(|i| i.get(name)).map(String::as_str) == Some(r.version()))
                {
                    out.upsert(self.reply_name(name, Some(r)), r);
                }
            } else {
                out.remove(self.reply_name(name, None));
            }
        }
        for name in &self.deferred_removals {
            if !latest.contains(name) && self.covers(name) {
                out.remove(name.clone());
            }
        }
        for (prefix, query) in &self.pending_globs {
            for (name, r) in latest.with_prefix(prefix) {
                if glob_matches(prefix, query, name) && known_version(name) != Some(r.version()) {
                    out.upsert(self.reply_name(name, Some(r)), r);
                }
            }
        }
        if self.heartbeat_due {
            for (name, r) in latest.names().zip(latest.iter()) {
                if r.ttl().is_some() && self.covers(name) {
                    out.heartbeat(self.reply_name(name, Some(r)), r);
                }
            }
        }
        let first_wildcard = first && self.wildcard;
        if out.is_empty() && !first_wildcard {
            return None;
        }
        Some(out.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_core::envoy::config::cluster::v3::Cluster;
    use xds_core::google::rpc::Status as RpcStatus;

    const CDS: &str = type_url::CLUSTER;
    const EDS: &str = type_url::ENDPOINT;

    fn req(type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node { id: "n1".into(), ..Default::default() }),
            type_url: type_url.into(),
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn ack(type_url: &str, r: &DeltaResponse) -> DeltaDiscoveryRequest {
        req(type_url, &[], &[], &r.nonce)
    }

    fn set(type_url: &str, spec: &[(&str, &str)]) -> Arc<ResourceSet> {
        Arc::new(ResourceSet::from_resources(
            type_url,
            spec.iter().map(|(n, tag)| {
                let c = Cluster { name: n.to_string(), alt_stat_name: tag.to_string(), ..Default::default() };
                EncodedResource::new(type_url, *n, c.encode_to_vec())
            }),
        ))
    }

    use xds_core::prost::Message;

    fn sent(r: &DeltaResponse) -> Vec<&str> {
        r.resources.iter().map(|x| &*x.name).collect()
    }

    fn removed(r: &DeltaResponse) -> Vec<&str> {
        r.removed.iter().map(|x| &**x).collect()
    }

    /// Settings sharing `lists`.
    fn shared(lists: &Arc<NameLists>) -> StreamSettings {
        StreamSettings { name_lists: Some(lists.clone()), ..Default::default() }
    }

    /// A wildcard CDS stream that received `a` and `b`, and ACKed them.
    fn wildcard() -> DeltaStream {
        let mut s = DeltaStream::ads();
        s.on_request(&req(CDS, &[], &[], "")).expect("first");
        s.on_resources(CDS, Some(set(CDS, &[("a", "1"), ("b", "1")])));
        let r = s.next_response().expect("initial");
        assert_eq!(sent(&r), ["a", "b"]);
        s.on_request(&ack(CDS, &r)).expect("ack");
        s
    }

    #[test]
    fn rule12_every_response_has_a_unique_nonce() {
        let mut s = wildcard();
        s.on_resources(CDS, Some(set(CDS, &[("a", "2"), ("b", "1")])));
        let r2 = s.next_response().expect("update");
        s.on_request(&ack(CDS, &r2)).expect("ack");
        s.on_resources(CDS, Some(set(CDS, &[("a", "3"), ("b", "1")])));
        let r3 = s.next_response().expect("update");
        assert!(!r2.nonce.is_empty());
        assert_ne!(r2.nonce, r3.nonce);
    }

    #[test]
    fn rule12_subscription_changes_apply_with_a_stale_nonce() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &["a"], &[], "")).expect("first");
        s.on_resources(EDS, Some(set(EDS, &[("a", "1"), ("b", "1")])));
        let r1 = s.next_response().expect("a");
        s.on_request(&ack(EDS, &r1)).expect("ack");
        s.on_resources(EDS, Some(set(EDS, &[("a", "2"), ("b", "1")])));
        let _r2 = s.next_response().expect("a changed");
        // The client subscribes b before it saw r2: its nonce is stale.
        let info = s.on_request(&req(EDS, &["b"], &[], &r1.nonce)).expect("stale subscribe");
        assert_eq!(info.kind, RequestKind::Stale);
        assert_eq!(sent(&s.next_response().expect("b answered")), ["b"]);
    }

    #[test]
    fn rule13_subscribed_names_are_always_answered() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &["a"], &[], "")).expect("first");
        s.on_resources(EDS, Some(set(EDS, &[("a", "1")])));
        let r1 = s.next_response().expect("a");
        s.on_request(&ack(EDS, &r1)).expect("ack");
        assert!(s.next_response().is_none());
        // Subscribing a again (Envoy does when a cluster warms): answered though unchanged.
        s.on_request(&req(EDS, &["a"], &[], &r1.nonce)).expect("again");
        assert_eq!(sent(&s.next_response().expect("answered")), ["a"]);
    }

    #[test]
    fn rule14_missing_names_are_removed_remembered_and_sent_later() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &["a", "x"], &[], "")).expect("first");
        s.on_resources(EDS, Some(set(EDS, &[("a", "1")])));
        let r1 = s.next_response().expect("first");
        assert_eq!(sent(&r1), ["a"]);
        assert_eq!(removed(&r1), ["x"], "a subscribed name that does not exist is reported");
        s.on_request(&ack(EDS, &r1)).expect("ack");
        s.on_resources(EDS, Some(set(EDS, &[("a", "1"), ("x", "1"), ("y", "1")])));
        let r2 = s.next_response().expect("x appeared");
        assert_eq!(sent(&r2), ["x"], "only x: y is not subscribed");
        assert!(r2.removed.is_empty());
    }

    #[test]
    fn rule15_deletes_and_unsubscribes() {
        let mut s = wildcard();
        s.on_resources(CDS, Some(set(CDS, &[("a", "1")])));
        let r = s.next_response().expect("delete");
        assert!(r.resources.is_empty());
        assert_eq!(removed(&r), ["b"]);
        s.on_request(&ack(CDS, &r)).expect("ack");
        // Unsubscribing a name never subscribed: no reply.
        let mut e = DeltaStream::ads();
        e.on_request(&req(EDS, &["a"], &[], "")).expect("first");
        e.on_resources(EDS, Some(set(EDS, &[("a", "1")])));
        let r = e.next_response().expect("a");
        e.on_request(&ack(EDS, &r)).expect("ack");
        e.on_request(&req(EDS, &[], &["zzz"], &r.nonce)).expect("unknown unsubscribe");
        assert!(e.next_response().is_none());
        // Unsubscribing an explicit name: no reply, and its changes stop.
        e.on_request(&req(EDS, &[], &["a"], &r.nonce)).expect("unsubscribe a");
        assert!(e.next_response().is_none());
        e.on_resources(EDS, Some(set(EDS, &[("a", "2")])));
        assert!(e.next_response().is_none());
    }

    #[test]
    fn rule15_wildcard_client_unsubscribing_one_name_gets_it_again() {
        let mut s = wildcard();
        let nonce = "1";
        s.on_request(&req(CDS, &[], &["b", "gone"], nonce)).expect("unsubscribe b");
        let r = s.next_response().expect("answered");
        assert_eq!(sent(&r), ["b"], "still covered by the wildcard");
        assert_eq!(removed(&r), ["gone"]);
    }

    #[test]
    fn wildcard_star_and_legacy() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &[], &[], "")).expect("first");
        assert!(!s.is_wildcard(EDS), "no legacy wildcard for EDS");
        let mut s = DeltaStream::ads();
        s.on_request(&req(CDS, &["a"], &[], "")).expect("first");
        assert!(!s.is_wildcard(CDS), "explicit names are not wildcard");
        s.on_request(&req(CDS, &["*"], &[], "")).expect("star");
        assert!(s.is_wildcard(CDS));
        s.on_request(&req(CDS, &[], &["*"], "")).expect("unstar");
        assert!(!s.is_wildcard(CDS));
        let mut legacy = DeltaStream::ads();
        legacy.on_request(&req(CDS, &[], &[], "")).expect("legacy");
        assert!(legacy.is_wildcard(CDS));
        legacy.on_request(&req(CDS, &["a"], &[], "")).expect("explicit ends legacy");
        assert!(!legacy.is_wildcard(CDS));
    }

    #[test]
    fn becoming_wildcard_sends_what_the_client_lacks() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(CDS, &["a"], &[], "")).expect("first");
        s.on_resources(CDS, Some(set(CDS, &[("a", "1"), ("b", "1"), ("c", "1")])));
        let r = s.next_response().expect("a");
        s.on_request(&ack(CDS, &r)).expect("ack");
        s.on_request(&req(CDS, &["*"], &[], &r.nonce)).expect("star");
        assert_eq!(sent(&s.next_response().expect("the rest")), ["b", "c"]);
    }

    #[test]
    fn rule16_reconnect_sends_only_differences() {
        let mut s = DeltaStream::ads();
        let current = set(CDS, &[("a", "1"), ("b", "2"), ("c", "1")]);
        let mut r = req(CDS, &[], &[], "");
        r.initial_resource_versions = [
            ("a".to_string(), current.get("a").expect("a").version().to_string()),
            ("b".to_string(), "old".to_string()),
            ("gone".to_string(), "1".to_string()),
        ]
        .into();
        s.on_request(&r).expect("reconnect");
        s.on_resources(CDS, Some(current));
        let resp = s.next_response().expect("differences");
        assert_eq!(sent(&resp), ["b", "c"]);
        assert_eq!(removed(&resp), ["gone"]);
    }

    #[test]
    fn rule17_each_name_once_with_its_own_version() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &["a", "a", "b"], &[], "")).expect("first");
        s.on_resources(EDS, Some(set(EDS, &[("a", "1"), ("b", "2")])));
        let r = s.next_response().expect("r");
        assert_eq!(sent(&r), ["a", "b"]);
        assert_ne!(r.resources[0].resource.version(), r.resources[1].resource.version());
    }

    #[test]
    fn rule18_nack_does_not_loop() {
        let mut s = wildcard();
        s.on_resources(CDS, Some(set(CDS, &[("a", "bad"), ("b", "1")])));
        let bad = s.next_response().expect("bad");
        let mut nack = ack(CDS, &bad);
        nack.error_detail = Some(RpcStatus { code: 3, message: "a is invalid".into(), details: vec![] });
        let info = s.on_request(&nack).expect("nack");
        assert_eq!(info.kind, RequestKind::Nack { detail: "a is invalid".into() });
        assert!(s.next_response().is_none(), "the rejected content is not resent");
        s.on_resources(CDS, Some(set(CDS, &[("a", "bad"), ("b", "1")])));
        assert!(s.next_response().is_none());
        s.on_resources(CDS, Some(set(CDS, &[("a", "good"), ("b", "1")])));
        let fixed = s.next_response().expect("fix");
        assert_eq!(sent(&fixed), ["a"]);
        s.on_request(&ack(CDS, &fixed)).expect("ack");
        assert!(s.last_nack(CDS).is_none());
        assert_eq!(s.acked_version(CDS), Some(&*fixed.system_version));
    }

    #[test]
    fn rule21_xdstp_names_match_in_any_parameter_order_and_echo_the_request() {
        let mut s = DeltaStream::ads();
        let asked = "xdstp://auth/envoy.config.cluster.v3.Cluster/c1?b=2&a=1";
        s.on_request(&req(CDS, &[asked], &[], "")).expect("first");
        s.on_resources(CDS, Some(set(CDS, &[("xdstp://auth/envoy.config.cluster.v3.Cluster/c1?a=1&b=2", "1")])));
        let r = s.next_response().expect("found");
        assert_eq!(sent(&r), [asked]);
    }

    #[test]
    fn rule21_the_latest_spelling_of_a_name_is_echoed_and_any_spelling_unsubscribes() {
        let mut s = DeltaStream::ads();
        let canonical = "xdstp://auth/envoy.config.cluster.v3.Cluster/c1?a=1&b=2";
        let other = "xdstp://auth/envoy.config.cluster.v3.Cluster/c1?b=2&a=1";
        s.on_request(&req(CDS, &[other, "plain"], &[], "")).expect("first");
        s.on_resources(CDS, Some(set(CDS, &[(canonical, "1"), ("plain", "1")])));
        let r = s.next_response().expect("found");
        assert_eq!(sent(&r), ["plain", other]);
        assert_eq!(s.subscribed(CDS).collect::<Vec<_>>(), ["plain", other]);
        s.on_request(&ack(CDS, &r)).expect("ack");
        // Subscribed again, spelled canonically: answered with that spelling from now on.
        s.on_request(&req(CDS, &[canonical], &[], &r.nonce)).expect("again");
        let r = s.next_response().expect("answered");
        assert_eq!(sent(&r), [canonical]);
        assert_eq!(s.subscribed(CDS).collect::<Vec<_>>(), ["plain", canonical]);
        s.on_request(&ack(CDS, &r)).expect("ack");
        // Unsubscribed in the first spelling: gone, whatever the spelling.
        s.on_request(&req(CDS, &[], &[other], &r.nonce)).expect("unsubscribe");
        assert_eq!(s.subscribed(CDS).collect::<Vec<_>>(), ["plain"]);
        s.on_resources(CDS, Some(set(CDS, &[(canonical, "2"), ("plain", "1")])));
        assert!(s.next_response().is_none(), "no longer subscribed");
    }

    #[test]
    fn streams_subscribing_the_same_names_share_one_list_of_the_sets_strings() {
        let lists = Arc::new(NameLists::default());
        let (names, first) = numbered(100);
        let forward: Vec<&str> = names.iter().map(String::as_str).collect();
        // The same names in another order, one twice, over two requests.
        let mut backward = forward.clone();
        backward.reverse();
        backward.push("c7");
        let mut streams = Vec::new();
        for requests in [vec![&forward[..]], vec![&backward[..50], &backward[50..]]] {
            let mut s = DeltaStream::ads().with_settings(shared(&lists));
            for names in requests {
                s.on_request(&req(EDS, names, &[], "")).expect("subscribe");
            }
            s.on_resources(EDS, Some(first.clone()));
            let r = s.next_response().expect("all");
            assert_eq!(r.resources.len(), 100);
            streams.push(s);
        }
        let keys = |s: &DeltaStream| s.types.get(EDS).expect("eds").names.keys.clone();
        let (a, b) = (keys(&streams[0]), keys(&streams[1]));
        assert!(Arc::ptr_eq(&a, &b), "one list for both streams");
        assert!(a.iter().zip(first.names()).all(|(n, own)| Arc::ptr_eq(n, own)), "the set's own strings");
        // A stream subscribing the same names later starts from that list: what it must answer
        // is the set's strings too, found by address.
        let mut late = DeltaStream::ads().with_settings(shared(&lists));
        late.on_request(&req(EDS, &forward, &[], "")).expect("subscribe");
        assert!(Arc::ptr_eq(&keys(&late), &a));
        let pending = &late.types.get(EDS).expect("eds").pending;
        assert!(pending.iter().zip(first.names()).all(|(n, own)| Arc::ptr_eq(n, own)));
        // A stream whose subscription then differs gets a list of its own; the other keeps its.
        let s = &mut streams[1];
        s.on_request(&req(EDS, &["extra"], &["c0"], "")).expect("edit");
        assert!(!Arc::ptr_eq(&keys(&streams[1]), &a));
        assert!(Arc::ptr_eq(&keys(&streams[0]), &a));
        assert_eq!(streams[0].subscribed(EDS).count(), 100);
        let mut edited: Vec<&str> = forward.iter().copied().filter(|n| *n != "c0").chain(["extra"]).collect();
        edited.sort_unstable();
        assert_eq!(streams[1].subscribed(EDS).collect::<Vec<_>>(), edited);
    }

    #[test]
    fn subscriptions_beyond_the_limit_are_refused_over_many_requests() {
        let mut s = DeltaStream::ads().with_settings(StreamSettings { max_names: 3, ..Default::default() });
        s.on_request(&req(EDS, &["a", "b"], &[], "")).expect("two");
        s.on_request(&req(EDS, &["c", "a"], &[], "")).expect("three, one again");
        let err = s.on_request(&req(EDS, &["d"], &[], "")).expect_err("a fourth");
        assert!(matches!(&err, Error::TooManyNames { names: 4, limit: 3, .. }), "{err:?}");
        // Dropping names makes room; globs count as names.
        let mut s = DeltaStream::ads().with_settings(StreamSettings { max_names: 3, ..Default::default() });
        s.on_request(&req(CDS, &["a", "b", "c"], &[], "")).expect("three");
        s.on_request(&req(CDS, &["d"], &["a"], "")).expect("one for one");
        let err = s.on_request(&req(CDS, &["xdstp://auth/t/ns/*"], &[], "")).expect_err("a glob as well");
        assert!(matches!(err, Error::TooManyNames { names: 4, .. }));
        // A request alone beyond the limit is refused before its list is built.
        let mut s = DeltaStream::ads().with_settings(StreamSettings { max_names: 3, ..Default::default() });
        let err = s.on_request(&req(EDS, &["a", "b", "c", "d", "e"], &[], "")).expect_err("five");
        assert!(matches!(err, Error::TooManyNames { names: 5, .. }));
        assert!(s.types.get(EDS).expect("eds").names.is_empty());
        assert_eq!(DeltaStream::ads().settings.max_names, crate::DEFAULT_MAX_NAMES);
    }

    #[test]
    fn subscriptions_beyond_the_limit_of_bytes_are_refused_over_many_requests() {
        let mut s = DeltaStream::ads().with_settings(StreamSettings { max_name_bytes: 10, ..Default::default() });
        s.on_request(&req(EDS, &["aaaa", "bbbb"], &[], "")).expect("8 bytes");
        s.on_request(&req(EDS, &["cc", "aaaa"], &[], "")).expect("10 bytes, one name again");
        let err = s.on_request(&req(EDS, &["d"], &[], "")).expect_err("11 bytes");
        assert!(matches!(&err, Error::SubscriptionTooLarge { bytes: 11, limit: 10, .. }), "{err:?}");
        assert!(err.to_string().contains(EDS), "{err}");
        // Dropping names makes room; a glob's name counts.
        let mut s = DeltaStream::ads().with_settings(StreamSettings { max_name_bytes: 24, ..Default::default() });
        s.on_request(&req(CDS, &["aaaa", "bbbb"], &[], "")).expect("8 bytes");
        s.on_request(&req(CDS, &["cccc"], &["aaaa"], "")).expect("one for one");
        let err = s.on_request(&req(CDS, &["xdstp://auth/t/ns/*"], &[], "")).expect_err("8 + 19 bytes");
        assert!(matches!(err, Error::SubscriptionTooLarge { bytes: 27, .. }), "{err:?}");
        assert_eq!(DeltaStream::ads().settings.max_name_bytes, crate::DEFAULT_MAX_NAME_BYTES);
    }

    #[test]
    fn pending_names_stay_ordered_and_unique() {
        let mut p = Pending::default();
        let names = |p: &Pending| p.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        p.extend_sorted(["b", "d"].into_iter().map(Arc::from));
        p.extend_sorted(["a", "b", "c", "e"].into_iter().map(Arc::from));
        p.insert("c".into());
        p.insert("bb".into());
        assert_eq!(names(&p), ["a", "b", "bb", "c", "d", "e"]);
        p.remove("bb");
        p.remove("zz");
        assert_eq!(names(&p), ["a", "b", "c", "d", "e"]);
        p.clear();
        assert!(p.iter().next().is_none());
    }

    #[test]
    fn rule21_collection_glob() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(CDS, &["xdstp://auth/t/ns/*"], &[], "")).expect("first");
        s.on_resources(
            CDS,
            Some(set(
                CDS,
                &[("xdstp://auth/t/ns/a", "1"), ("xdstp://auth/t/ns/b", "1"), ("xdstp://auth/t/other/c", "1")],
            )),
        );
        let r = s.next_response().expect("collection");
        assert_eq!(sent(&r), ["xdstp://auth/t/ns/a", "xdstp://auth/t/ns/b"]);
        s.on_request(&ack(CDS, &r)).expect("ack");
        s.on_resources(CDS, Some(set(CDS, &[("xdstp://auth/t/ns/a", "2"), ("xdstp://auth/t/other/c", "2")])));
        let r2 = s.next_response().expect("update");
        assert_eq!(sent(&r2), ["xdstp://auth/t/ns/a"]);
        assert_eq!(removed(&r2), ["xdstp://auth/t/ns/b"]);
    }

    /// `n` endpoint resources `c0`, `c1`, ... at version 1, and their names.
    fn numbered(n: usize) -> (Vec<String>, Arc<ResourceSet>) {
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let spec: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let set = set(EDS, &spec);
        (names, set)
    }

    #[test]
    fn one_update_among_many_sends_exactly_that_resource() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &["*"], &[], "")).expect("first");
        let (_, first) = numbered(10_000);
        s.on_resources(EDS, Some(first.clone()));
        let r = s.next_response().expect("all");
        assert_eq!(r.resources.len(), 10_000);
        s.on_request(&ack(EDS, &r)).expect("ack");
        let mut next = (*first).clone();
        let c = Cluster { name: "c4242".into(), alt_stat_name: "2".into(), ..Default::default() };
        next.insert(EncodedResource::new(EDS, "c4242", c.encode_to_vec()));
        s.on_resources(EDS, Some(Arc::new(next)));
        let r = s.next_response().expect("one");
        assert_eq!(sent(&r), ["c4242"]);
        assert!(r.removed.is_empty());
    }

    #[test]
    fn one_update_among_many_explicit_names_sends_exactly_that_resource() {
        let mut s = DeltaStream::ads();
        let (names, first) = numbered(100);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        s.on_request(&req(EDS, &names, &[], "")).expect("first");
        s.on_resources(EDS, Some(first.clone()));
        let r = s.next_response().expect("all");
        assert_eq!(r.resources.len(), 100);
        s.on_request(&ack(EDS, &r)).expect("ack");
        let mut next = (*first).clone();
        for (name, version) in [("c42", "2"), ("c7", "2"), ("other", "1")] {
            let c = Cluster { name: name.into(), alt_stat_name: version.into(), ..Default::default() };
            next.insert(EncodedResource::new(EDS, name, c.encode_to_vec()));
            s.on_resources(EDS, Some(Arc::new(next.clone())));
            if name == "other" {
                assert!(s.next_response().is_none(), "not subscribed");
            } else {
                let r = s.next_response().expect("one");
                assert_eq!(sent(&r), [name]);
                s.on_request(&ack(EDS, &r)).expect("ack");
            }
        }
    }

    #[test]
    fn nothing_before_the_source_has_resources_and_empty_wildcard_is_answered() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(CDS, &[], &[], "")).expect("first");
        s.on_resources(CDS, None);
        assert!(s.next_response().is_none());
        s.on_resources(CDS, Some(Arc::new(ResourceSet::empty(CDS))));
        let r = s.next_response().expect("an empty first answer tells the client it has everything");
        assert!(r.resources.is_empty() && r.removed.is_empty());
    }

    #[test]
    fn rule19_cluster_removals_follow_listeners_and_routes() {
        const LDS: &str = type_url::LISTENER;
        let mut s = wildcard();
        s.on_request(&req(LDS, &[], &[], "")).expect("lds");
        s.on_resources(LDS, Some(set(LDS, &[("l", "1")])));
        let l1 = s.next_response().expect("lds");
        s.on_request(&ack(LDS, &l1)).expect("ack");
        // A change moves the listener from cluster b to cluster c: c is added, b removed.
        s.on_resources(CDS, Some(set(CDS, &[("a", "1"), ("c", "1")])));
        s.on_resources(LDS, Some(set(LDS, &[("l", "2")])));
        let r1 = s.next_response().expect("cds first");
        assert_eq!((&*r1.type_url, sent(&r1), removed(&r1)), (CDS, vec!["c"], vec![]), "add c, keep b for now");
        let r2 = s.next_response().expect("then lds");
        assert_eq!(&*r2.type_url, LDS);
        assert!(s.next_response().is_none(), "cds waits for its ack");
        s.on_request(&ack(CDS, &r1)).expect("ack");
        let r3 = s.next_response().expect("removal last");
        assert_eq!((&*r3.type_url, sent(&r3), removed(&r3)), (CDS, vec![], vec!["b"]));
    }

    #[test]
    fn rule20_ttl_heartbeats() {
        let mut s = DeltaStream::ads();
        s.on_request(&req(EDS, &["a", "b"], &[], "")).expect("first");
        assert!(!s.needs_heartbeats(), "nothing held yet");
        let ttl = Some(std::time::Duration::from_secs(30));
        let a = EncodedResource::new(EDS, "a", b"a".to_vec()).with_ttl(ttl);
        let b = EncodedResource::new(EDS, "b", b"b".to_vec());
        s.on_resources(EDS, Some(Arc::new(ResourceSet::from_resources(EDS, [a.clone(), b]))));
        let r = s.next_response().expect("first");
        assert!(r.resources.iter().all(|x| !x.heartbeat));
        s.on_request(&ack(EDS, &r)).expect("ack");
        assert!(s.needs_heartbeats());
        s.on_heartbeat();
        let hb = s.next_response().expect("heartbeat");
        assert_eq!(sent(&hb), ["a"], "only resources with a TTL");
        assert!(hb.resources[0].heartbeat);
        assert_eq!(hb.resources[0].resource.version(), a.version());
        s.on_request(&ack(EDS, &hb)).expect("ack");
        // Re-set without TTL: a real update that clears it.
        let a2 = a.with_ttl(None);
        let b = EncodedResource::new(EDS, "b", b"b".to_vec());
        s.on_resources(EDS, Some(Arc::new(ResourceSet::from_resources(EDS, [a2, b]))));
        let r = s.next_response().expect("update");
        assert_eq!(sent(&r), ["a"]);
        assert!(!r.resources[0].heartbeat && r.resources[0].resource.ttl().is_none());
        s.on_request(&ack(EDS, &r)).expect("ack");
        assert!(!s.needs_heartbeats(), "no TTL left: the driver stops its timer");
        s.on_heartbeat();
        assert!(s.next_response().is_none(), "no TTL left, no heartbeat");
    }

    #[test]
    fn rule19_updated_cluster_gets_its_endpoints() {
        let mut s = wildcard();
        s.on_request(&req(EDS, &["a"], &[], "")).expect("eds");
        s.on_resources(EDS, Some(set(EDS, &[("a", "1")])));
        let e = s.next_response().expect("eds");
        s.on_request(&ack(EDS, &e)).expect("ack");
        s.on_resources(CDS, Some(set(CDS, &[("a", "2"), ("b", "1")])));
        let c = s.next_response().expect("cds");
        assert_eq!(sent(&c), ["a"]);
        let e2 = s.next_response().expect("endpoints of the warming cluster, unchanged");
        assert_eq!((&*e2.type_url, sent(&e2)), (EDS, vec!["a"]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// One step of a client: a request editing its subscription, or a new set.
        #[derive(Debug, Clone)]
        enum Step {
            Edit { subscribe: Vec<u8>, unsubscribe: Vec<u8> },
            Publish(Vec<(u8, u8)>),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (prop::collection::vec(0u8..12, 0..6), prop::collection::vec(0u8..12, 0..4))
                    .prop_map(|(subscribe, unsubscribe)| Step::Edit { subscribe, unsubscribe }),
                prop::collection::vec((0u8..12, 0u8..3), 0..12).prop_map(Step::Publish),
            ]
        }

        /// Takes every response the stream has, applying it to the client's `view` and ACKing it.
        fn drain(s: &mut DeltaStream, view: &mut BTreeMap<String, String>, nonce: &mut String) {
            while let Some(r) = s.next_response() {
                for x in &r.resources {
                    view.insert(x.name.to_string(), x.resource.version().to_string());
                }
                for x in &r.removed {
                    view.remove(&**x);
                }
                *nonce = r.nonce.to_string();
                s.on_request(&ack(EDS, &r)).expect("ack");
            }
        }

        /// `xdstp://` name `n`, spelled canonically or with its context parameters swapped.
        fn spelled(n: u8, swapped: bool) -> String {
            if swapped {
                format!("xdstp://a/t/r{n}?y=2&x=1")
            } else {
                format!("xdstp://a/t/r{n}?x=1&y=2")
            }
        }

        /// Names subscribed and unsubscribed (number, parameters swapped), and maybe a new set
        /// (number, version tag, parameters swapped).
        type RespelledStep = (Vec<(u8, bool)>, Vec<(u8, bool)>, Option<Vec<(u8, u8, bool)>>);

        fn respelled_step() -> impl Strategy<Value = RespelledStep> {
            (
                prop::collection::vec((0u8..6, any::<bool>()), 0..4),
                prop::collection::vec((0u8..6, any::<bool>()), 0..3),
                prop::option::of(prop::collection::vec((0u8..6, 0u8..3, any::<bool>()), 0..6)),
            )
        }

        proptest! {
            /// Whatever the edits of the subscription (duplicates, a name subscribed and
            /// unsubscribed in one request, ...), the subscription is what the requests say, and
            /// once the client ACKed every response its view (dropping what it unsubscribed)
            /// equals the latest set restricted to the subscription.
            #[test]
            fn subscription_edits_converge(steps in prop::collection::vec(step(), 1..25)) {
                let name = |n: &u8| format!("r{n}");
                // Two streams sharing their lists of names: `s` under test, `o` making the
                // opposite edits, so their lists meet and part.
                let lists = Arc::new(NameLists::default());
                let mut s = DeltaStream::ads().with_settings(shared(&lists));
                let mut o = DeltaStream::ads().with_settings(shared(&lists));
                s.on_request(&req(EDS, &["r0"], &[], "")).expect("first");
                o.on_request(&req(EDS, &["r0"], &[], "")).expect("first");
                let mut subscribed: BTreeSet<String> = ["r0".to_string()].into();
                let mut others: BTreeSet<String> = subscribed.clone();
                let mut view: BTreeMap<String, String> = BTreeMap::new();
                let mut other_view = view.clone();
                let mut latest = set(EDS, &[]);
                s.on_resources(EDS, Some(latest.clone()));
                o.on_resources(EDS, Some(latest.clone()));
                let mut nonce = String::new();
                let mut other_nonce = String::new();
                for st in steps {
                    match st {
                        Step::Edit { subscribe, unsubscribe } => {
                            let sub: Vec<String> = subscribe.iter().map(name).collect();
                            let unsub: Vec<String> = unsubscribe.iter().map(name).collect();
                            let sub_refs: Vec<&str> = sub.iter().map(String::as_str).collect();
                            let unsub_refs: Vec<&str> = unsub.iter().map(String::as_str).collect();
                            s.on_request(&req(EDS, &sub_refs, &unsub_refs, &nonce)).expect("edit");
                            o.on_request(&req(EDS, &unsub_refs, &sub_refs, &other_nonce)).expect("opposite edit");
                            others.extend(unsub.iter().cloned());
                            for n in &sub {
                                others.remove(n);
                                other_view.remove(n);
                            }
                            subscribed.extend(sub);
                            for n in unsub {
                                subscribed.remove(&n);
                                view.remove(&n);
                            }
                            prop_assert_eq!(s.subscribed(EDS).collect::<Vec<_>>(), subscribed.iter().map(String::as_str).collect::<Vec<_>>());
                            prop_assert_eq!(o.subscribed(EDS).collect::<Vec<_>>(), others.iter().map(String::as_str).collect::<Vec<_>>());
                        }
                        Step::Publish(spec) => {
                            let spec: Vec<(String, String)> = spec.iter().map(|(n, v)| (name(n), v.to_string())).collect();
                            let refs: Vec<(&str, &str)> = spec.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                            latest = set(EDS, &refs);
                            s.on_resources(EDS, Some(latest.clone()));
                            o.on_resources(EDS, Some(latest.clone()));
                        }
                    }
                    drain(&mut s, &mut view, &mut nonce);
                    drain(&mut o, &mut other_view, &mut other_nonce);
                    for (view, subscribed) in [(&view, &subscribed), (&other_view, &others)] {
                        let expected: BTreeMap<String, String> = latest
                            .iter()
                            .filter(|r| subscribed.contains(r.name()))
                            .map(|r| (r.name().to_string(), r.version().to_string()))
                            .collect();
                        prop_assert_eq!(view, &expected);
                    }
                }
            }

            /// Names spelled in either order of their context parameters, by the client and by
            /// the set: every resource subscribed reaches the client under the spelling it last
            /// subscribed with, whatever spelling it unsubscribes with, and the subscription
            /// lists the latest spellings.
            #[test]
            fn respelled_names_converge(steps in prop::collection::vec(respelled_step(), 1..20)) {
                let mut s = DeltaStream::ads().with_settings(shared(&Arc::default()));
                s.on_request(&req(EDS, &[], &[], "")).expect("first");
                let mut subscribed: BTreeMap<String, String> = BTreeMap::new();
                // Canonical name -> (name as sent, version).
                let mut view: BTreeMap<String, (String, String)> = BTreeMap::new();
                let mut latest = set(EDS, &[]);
                s.on_resources(EDS, Some(latest.clone()));
                let mut nonce = String::new();
                for (sub, unsub, publish) in steps {
                    let sub: Vec<String> = sub.iter().map(|&(n, sw)| spelled(n, sw)).collect();
                    let unsub: Vec<String> = unsub.iter().map(|&(n, sw)| spelled(n, sw)).collect();
                    let sub_refs: Vec<&str> = sub.iter().map(String::as_str).collect();
                    let unsub_refs: Vec<&str> = unsub.iter().map(String::as_str).collect();
                    s.on_request(&req(EDS, &sub_refs, &unsub_refs, &nonce)).expect("edit");
                    for n in &sub {
                        subscribed.insert(canonical_name(n).into_owned(), n.clone());
                    }
                    for n in &unsub {
                        subscribed.remove(&*canonical_name(n));
                        view.remove(&*canonical_name(n));
                    }
                    prop_assert_eq!(
                        s.subscribed(EDS).collect::<Vec<_>>(),
                        subscribed.values().map(String::as_str).collect::<Vec<_>>()
                    );
                    if let Some(spec) = publish {
                        let spec: Vec<(String, String)> = spec.iter().map(|&(n, v, sw)| (spelled(n, sw), v.to_string())).collect();
                        let refs: Vec<(&str, &str)> = spec.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                        latest = set(EDS, &refs);
                        s.on_resources(EDS, Some(latest.clone()));
                    }
                    while let Some(r) = s.next_response() {
                        for x in &r.resources {
                            view.insert(canonical_name(&x.name).into_owned(), (x.name.to_string(), x.resource.version().to_string()));
                        }
                        for x in &r.removed {
                            view.remove(&*canonical_name(x));
                        }
                        nonce = r.nonce.to_string();
                        s.on_request(&ack(EDS, &r)).expect("ack");
                    }
                    let expected: BTreeMap<String, (String, String)> = subscribed
                        .iter()
                        .filter_map(|(c, spelling)| latest.get(c).map(|r| (c.clone(), (spelling.clone(), r.version().to_string()))))
                        .collect();
                    prop_assert_eq!(&view, &expected);
                }
            }

            /// Whatever the sequence of updates, after every ACKed response the client's view
            /// (applying upserts and removals) equals the latest set restricted to its
            /// subscription; nonces never repeat; no name appears twice in a response.
            #[test]
            fn client_view_converges(updates in prop::collection::vec(prop::collection::vec((0u8..8, 0u8..3), 0..8), 1..20),
                                     subs in prop::collection::vec(0u8..8, 0..5)) {
                let mut s = DeltaStream::ads();
                let names: Vec<String> = subs.iter().map(|n| format!("r{n}")).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                s.on_request(&req(EDS, &refs, &[], "")).expect("first");
                let mut view: BTreeMap<String, String> = BTreeMap::new();
                let mut nonces = std::collections::HashSet::new();
                for u in updates {
                    let spec: Vec<(String, String)> = u.iter().map(|(n, v)| (format!("r{n}"), v.to_string())).collect();
                    let refs: Vec<(&str, &str)> = spec.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                    let latest = set(EDS, &refs);
                    s.on_resources(EDS, Some(latest.clone()));
                    while let Some(r) = s.next_response() {
                        prop_assert!(nonces.insert(r.nonce.clone()));
                        let mut seen = BTreeSet::new();
                        for x in &r.resources {
                            prop_assert!(seen.insert(x.name.clone()));
                            view.insert(x.name.to_string(), x.resource.version().to_string());
                        }
                        for x in &r.removed {
                            prop_assert!(seen.insert(x.clone()));
                            view.remove(&**x);
                        }
                        s.on_request(&ack(EDS, &r)).expect("ack");
                    }
                    let expected: BTreeMap<String, String> = latest
                        .iter()
                        .filter(|r| names.iter().any(|n| n == r.name()))
                        .map(|r| (r.name().to_string(), r.version().to_string()))
                        .collect();
                    prop_assert_eq!(&view, &expected);
                }
            }
        }
    }
}
