//! The state-of-the-world (SotW) protocol state machine of one stream, without I/O.
//!
//! The stream driver feeds it requests ([`SotwStream::on_request`]) and the latest resources of
//! each type ([`SotwStream::on_resources`]), and asks it for the next response when the
//! transport can take one ([`SotwStream::next_response`]). Because a response is built only when
//! asked for, from the latest resources, a slow client skips intermediate versions and holds at
//! most one pending response per type.
//!
//! Rules implemented here (numbers from the project's XDS-PROTOCOL.md; sources: Envoy's
//! `xds_protocol` documentation, "ACK/NACK and resource type instance version", "When to send an
//! update", "How the client specifies what resources to return"):
//!
//! 1. Every response carries a nonce unique within the stream (a per-stream counter).
//! 2. An ACK is a request echoing the latest nonce of its type without `error_detail`; its
//!    `version_info` becomes the client's ACKed version.
//! 3. A NACK is detected by `error_detail` only, never by comparing versions.
//! 4. After a NACK the same content is not sent again: the type answers only when the content
//!    it would send differs from what was NACKed (or new names are subscribed).
//! 5. A request whose `response_nonce` is not the latest nonce of its type is stale and ignored.
//! 6. The first request must carry a node with a non-empty id; later ones need not.
//! 7. Wildcard: `*` among the names, or a first request with no names for a type that allows the
//!    legacy wildcard (LDS, CDS, SRDS). Once explicit names were sent, an empty list means
//!    nothing.
//! 8. Only subscribed names are sent for explicit subscriptions, each resource once (`xdstp://`
//!    names are compared in canonical form, context parameters in any order).
//! 9. Full-state types (LDS, CDS, SRDS) send every subscribed resource in each response, so a
//!    resource missing from it is a delete; such types also answer when none exist.
//! 10. Newly subscribed names are always answered, even when unchanged since an earlier
//!     subscription; names that do not exist are remembered and sent when they appear.
//! 11. A type answers only when something it subscribes to changed; at most one response is
//!     outstanding per type, and a newer request supersedes an older one.
//!
//! On ADS, types are answered in make-before-break order: clusters, endpoints, listeners, routes
//! (rule 19).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::{canonical_name, type_url, NameLists, Names, ResourceSet, Selection};

use crate::ack::AckState;
use crate::types::TypeMap;
use crate::{Error, StreamSettings};

/// The wildcard resource name.
pub const WILDCARD: &str = "*";

/// One response to send, built from shared resources (the server encodes it without re-encoding
/// the resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SotwResponse {
    /// The type URL.
    pub type_url: Arc<str>,
    /// `version_info`: the version of the type's resource set.
    pub version: Arc<str>,
    /// The nonce, unique within the stream.
    pub nonce: Arc<str>,
    /// The resources, ordered by name: shared by the streams sent the same resources.
    pub resources: Selection,
    /// The client accepts `discovery.v3.Resource` wrappers in SotW (rule 20): resources with a
    /// TTL are sent wrapped, with their TTL.
    pub wrap_ttl: bool,
    /// A TTL heartbeat: wrapped resources go without a body (the client keeps its copy).
    pub heartbeat: bool,
}

/// The client features that allow TTL wrappers in SotW (rule 20).
pub const SOTW_TTL_FEATURES: [&str; 2] = ["xds.config.supports-resource-ttl", "xds.config.supports-resource-in-sotw"];

/// What a request was, for logs and callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// The first request of its type on this stream (or one without a nonce).
    Initial,
    /// An ACK of the response with this nonce.
    Ack,
    /// A NACK: the client rejected the response with this nonce.
    Nack {
        /// The client's error text (`error_detail.message`).
        detail: String,
    },
    /// A request echoing an old nonce: ignored.
    Stale,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The request's type URL (the stream's type on per-type streams).
    pub type_url: Arc<str>,
    /// What the request was.
    pub kind: RequestKind,
    /// Whether this is the first request of this type on the stream: the driver must start
    /// watching the type's resources.
    pub new_type: bool,
}

/// The last NACK of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version the client rejected.
    pub rejected_version: Arc<str>,
    /// The nonce of the rejected response.
    pub nonce: Arc<str>,
    /// The client's error text.
    pub detail: String,
}

/// What one stream knows about one type.
#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    /// Explicit names have been requested at least once (ends the legacy wildcard).
    explicit_seen: bool,
    names: Subscription,
    /// Explicit names were unsubscribed since the last response (a full-state type answers
    /// with what remains).
    narrowed: bool,
    /// Names subscribed since the last response; they must be answered.
    new_names: BTreeSet<Arc<str>>,
    /// The latest resources from the source (`None`: nothing published yet).
    latest: Option<Arc<ResourceSet>>,
    /// The client has a request we have not answered.
    waiting: bool,
    /// Something changed since this type was last evaluated (request or resources).
    dirty: bool,
    /// A TTL heartbeat is due.
    heartbeat_due: bool,
    /// Answer the next request even if unchanged: the parent type (CDS for EDS, LDS for RDS)
    /// was just updated and the client is warming (rule 19).
    force: bool,
    /// Nonce, sent and ACKed versions, last NACK.
    ack: AckState,
    sent: Option<Sent>,
}

/// The explicit names of a type.
///
/// Kept as sorted canonical names, the order in which resource sets hold them, so a response is
/// collected in one ordered pass; picking the resources from a set makes the list the one the
/// set's other subscribers share, or gives it the set's own strings (see
/// [`ResourceSet::select`]), so streams share names instead of holding copies. How the
/// last request listed the names is kept too, as positions among them where it can be, so that
/// the common ACK repeating the subscription is recognised by one comparison.
#[derive(Debug, Default)]
struct Subscription {
    /// Canonical names ([`canonical_name`]), sorted, each once; shared with the streams that
    /// subscribe the same (see [`ResourceSet::select`]).
    keys: Names,
    /// How the last request listed the names (without `*`).
    listed: Listed,
}

/// How a request listed the names of a [`Subscription`].
#[derive(Debug, Default)]
enum Listed {
    /// As `keys`.
    #[default]
    Keys,
    /// As `keys` at these positions, in this order (another order, or duplicates).
    Positions(Vec<usize>),
    /// As these names: some `xdstp://` names were not in canonical form.
    Names(Vec<Arc<str>>),
}

impl Subscription {
    /// Whether `names` lists exactly what the last request listed, in the same order: the
    /// common ACK repeating the subscription, recognised without building a set of names.
    fn is_listed_by(&self, names: &[String]) -> bool {
        let names = names.iter().filter(|n| *n != WILDCARD).map(String::as_str);
        match &self.listed {
            Listed::Keys => names.eq(self.keys.iter().map(|n| &**n)),
            Listed::Positions(positions) => names.eq(positions.iter().map(|&i| &*self.keys[i])),
            Listed::Names(listed) => names.eq(listed.iter().map(|n| &**n)),
        }
    }

    /// The names as requested, each once, ordered.
    fn requested(&self) -> Vec<&Arc<str>> {
        match &self.listed {
            // Every key is listed (at some position).
            Listed::Keys | Listed::Positions(_) => self.keys.iter().collect(),
            Listed::Names(names) => {
                let mut names: Vec<&Arc<str>> = names.iter().collect();
                names.sort_unstable();
                names.dedup();
                names
            }
        }
    }

    /// The subscription a request lists (without `*`): a kept list of `lists` that holds exactly
    /// these names, or a new one, kept there when it is listed as kept (canonical, in order).
    fn listed<'a>(listed: impl Iterator<Item = &'a str> + Clone, lists: Option<&NameLists>) -> Self {
        if let Some(keys) = lists.and_then(|l| l.find(listed.clone())) {
            return Self { keys, listed: Listed::Keys };
        }
        let mut subscription = Self::default();
        subscription.set(listed.map(Arc::from).collect());
        if let (Some(lists), Listed::Keys) = (lists, &subscription.listed) {
            lists.keep(&subscription.keys);
        }
        subscription
    }

    /// Replaces the names with those of a request (without `*`), as listed.
    fn set(&mut self, listed: Vec<Arc<str>>) {
        let canonical: Vec<Arc<str>> = listed
            .iter()
            .map(|n| match canonical_name(n) {
                Cow::Borrowed(_) => n.clone(),
                Cow::Owned(canonical) => canonical.into(),
            })
            .collect();
        let mut order: Vec<usize> = (0..canonical.len()).collect();
        order.sort_by(|&a, &b| canonical[a].cmp(&canonical[b]));
        let mut keys: Vec<Arc<str>> = Vec::with_capacity(canonical.len());
        let mut positions = vec![0; canonical.len()];
        for i in order {
            if keys.last() != Some(&canonical[i]) {
                keys.push(canonical[i].clone());
            }
            positions[i] = keys.len() - 1;
        }
        self.listed = if canonical.iter().zip(&listed).any(|(c, n)| !Arc::ptr_eq(c, n)) {
            Listed::Names(listed)
        } else if positions.iter().enumerate().all(|(i, &p)| i == p) {
            Listed::Keys
        } else {
            Listed::Positions(positions)
        };
        self.keys = keys.into();
    }

    fn clear(&mut self) {
        self.keys = Names::default();
        self.listed = Listed::Keys;
    }
}

/// What was last sent for a type: enough to tell whether new resources differ.
#[derive(Debug)]
struct Sent {
    /// The set the response was built from: shared with the source, never copied, so a stream
    /// costs a pointer here whatever the number of resources.
    set: Arc<ResourceSet>,
    /// The resources sent: shared with the other streams sent the same.
    resources: Selection,
    wildcard: bool,
}

/// The SotW state of one stream (ADS or per-type).
#[derive(Debug)]
pub struct SotwStream {
    fixed_type: Option<Arc<str>>,
    /// From the first request; shared with the stream's driver.
    node: Option<Arc<Node>>,
    /// The node advertised [`SOTW_TTL_FEATURES`].
    wrap_ttl: bool,
    next_nonce: u64,
    types: TypeMap<TypeState>,
    settings: StreamSettings,
}

impl SotwStream {
    /// A stream of the aggregated service (ADS): every request names its type.
    pub fn ads() -> Self {
        Self {
            fixed_type: None,
            node: None,
            wrap_ttl: false,
            next_nonce: 1,
            types: TypeMap::default(),
            settings: StreamSettings::default(),
        }
    }

    /// A per-type stream (`StreamClusters`, ...): requests may omit the type URL.
    pub fn for_type(type_url: &str) -> Self {
        Self { fixed_type: Some(type_url::shared(type_url)), ..Self::ads() }
    }

    /// The lists of names it shares and the limits it keeps ([`StreamSettings::default`]).
    pub fn with_settings(mut self, settings: StreamSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The node from the first request.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// Applies one request. Errors end the stream (missing node, missing or wrong type URL).
    pub fn on_request(&mut self, req: &DiscoveryRequest) -> Result<RequestInfo, Error> {
        if self.node.is_none() {
            check_node(&mut self.node, req.node.as_ref())?;
            self.wrap_ttl = self
                .node
                .as_ref()
                .is_some_and(|n| SOTW_TTL_FEATURES.iter().all(|f| xds_core::has_client_feature(n, f)));
        }
        let (type_url, new_type) = resolve_type(&self.fixed_type, &req.type_url, &self.types)?;
        let state = self.types.entry(type_url.clone());

        // Rules 2, 3, 5: ACK, NACK (by error_detail) or stale (not the latest nonce).
        let kind = state.ack.classify(&req.response_nonce, req.error_detail.as_ref(), Some(&req.version_info));
        if kind == RequestKind::Stale {
            return Ok(RequestInfo { type_url, kind, new_type });
        }
        let limit = self.settings.max_names;
        if req.resource_names.len() > limit {
            return Err(Error::TooManyNames { type_url: type_url.to_string(), names: req.resource_names.len(), limit });
        }

        // Rule 7: wildcard and subscriptions.
        let legacy = type_url::lookup(&type_url).is_some_and(|t| t.legacy_wildcard);
        let star = req.resource_names.iter().any(|n| n == WILDCARD);
        // Any name, `*` included, ends the legacy wildcard for the rest of the stream.
        state.explicit_seen |= !req.resource_names.is_empty();
        state.wildcard = star || (legacy && !state.explicit_seen && req.resource_names.is_empty());
        if kind == RequestKind::Initial {
            // Rule 10: on a fresh request every name is new (a reconnecting client must hear
            // back even if unchanged), and it must be answered.
            state.names.clear();
            state.sent = None;
        }
        // The common request is an ACK repeating the subscription: recognised without building
        // a new set of names.
        if !state.names.is_listed_by(&req.resource_names) {
            let listed = req.resource_names.iter().filter(|n| *n != WILDCARD).map(String::as_str);
            let subscription = Subscription::listed(listed, self.settings.name_lists.as_deref());
            // The old subscription is kept aside (not copied) to compare with.
            let old = std::mem::replace(&mut state.names, subscription);
            state.note_new_names(&old);
        }
        state.waiting = true;
        state.dirty = true;
        Ok(RequestInfo { type_url, kind, new_type })
    }

    /// Records the latest resources of a type (from the source's watch channel).
    pub fn on_resources(&mut self, type_url: &str, resources: Option<Arc<ResourceSet>>) {
        if let Some(state) = self.types.get_mut(type_url) {
            state.latest = resources;
            state.dirty = true;
        }
    }

    /// The next response to send, if any type has one due; types are visited in
    /// make-before-break order. Call it until it returns `None` whenever the transport can take
    /// a response.
    pub fn next_response(&mut self) -> Option<SotwResponse> {
        for i in 0..self.types.len() {
            let (t, state) = self.types.at(i);
            if !state.ready() {
                continue;
            }
            let t = t.clone();
            let state = self.types.at_mut(i);
            state.dirty = false;
            let heartbeat = state.heartbeat_due;
            state.heartbeat_due = false;
            let Some(Due { set, resources, changed }) = state.due(heartbeat) else {
                continue;
            };
            let set = set.clone();
            let nonce = crate::ack::nonce(self.next_nonce);
            self.next_nonce += 1;
            state.sent = Some(Sent { set: set.clone(), resources: resources.clone(), wildcard: state.wildcard });
            state.narrowed = false;
            state.ack.sent(nonce.clone(), set.version_arc().clone());
            state.waiting = false;
            state.force = false;
            state.new_names.clear();
            // Rule 19: a warming cluster needs an EDS answer, a warming listener an RDS answer.
            let child = match &*t {
                type_url::CLUSTER => Some(type_url::ENDPOINT),
                type_url::LISTENER => Some(type_url::ROUTE),
                _ => None,
            };
            if let Some(child) = child.and_then(|c| self.types.get_mut(c)) {
                child.force = true;
                child.dirty = true;
            }
            return Some(SotwResponse {
                type_url: t,
                version: set.version_arc().clone(),
                nonce,
                resources,
                wrap_ttl: self.wrap_ttl,
                heartbeat: !changed,
            });
        }
        None
    }

    /// Time to refresh TTLs (rule 20). Only for clients that advertised [`SOTW_TTL_FEATURES`]:
    /// every type holding resources with a TTL answers its next request with a heartbeat, the
    /// same resources with the TTL'd ones wrapped without a body. The driver calls this at an
    /// interval shorter than the TTLs it serves.
    pub fn on_heartbeat(&mut self) {
        if !self.wrap_ttl {
            return;
        }
        for state in self.types.values_mut() {
            if state.holds_ttl() {
                state.heartbeat_due = true;
                state.dirty = true;
            }
        }
    }

    /// Whether [`on_heartbeat`](Self::on_heartbeat) would do anything: the client takes TTL
    /// wrappers and holds resources with a TTL. The driver runs its heartbeat timer only then, so
    /// thousands of streams without TTLs never wake up for it.
    pub fn needs_heartbeats(&self) -> bool {
        self.wrap_ttl && self.types.values().any(TypeState::holds_ttl)
    }

    /// Whether [`next_response`](Self::next_response) has something to evaluate: a type that
    /// has an unanswered request and changed since it was last evaluated. Cheap; the driver
    /// waits for transport capacity only while this is true.
    pub fn wants_to_send(&self) -> bool {
        self.types.values().any(TypeState::ready)
    }

    /// The client's last ACKed version of a type.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.ack.acked_version.as_deref()
    }

    /// The version last sent for a type.
    pub fn sent_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.sent.as_ref().map(|s| s.set.version())
    }

    /// The last NACK of a type, until the next ACK.
    pub fn last_nack(&self, type_url: &str) -> Option<&Nack> {
        self.types.get(type_url)?.ack.nack.as_ref()
    }

    /// Whether the type is subscribed by wildcard.
    pub fn is_wildcard(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|s| s.wildcard)
    }

    /// The explicitly subscribed names of a type.
    pub fn subscribed(&self, type_url: &str) -> impl Iterator<Item = &str> {
        self.types.get(type_url).into_iter().flat_map(|s| s.names.requested().into_iter().map(|n| &**n))
    }

    /// The types this stream has requested.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(|t| &**t)
    }
}

/// A response that is due: the set, the resources to send, and whether their content changed
/// (`false`: a heartbeat).
struct Due<'a> {
    set: &'a Arc<ResourceSet>,
    resources: Selection,
    changed: bool,
}

/// Rule 6: the first request of a stream must carry a node with an id; it is remembered.
pub(crate) fn check_node(remembered: &mut Option<Arc<Node>>, node: Option<&Node>) -> Result<(), Error> {
    if remembered.is_none() {
        let node = node.ok_or(Error::MissingNode)?;
        if node.id.is_empty() {
            return Err(Error::EmptyNodeId);
        }
        *remembered = Some(Arc::new(node.clone()));
    }
    Ok(())
}

/// The type of a request: mandatory on ADS, implied (and checked) on per-type streams. Returns
/// the stream's own copy of the type URL, and whether the stream sees the type for the first
/// time (it is not among the `known` types).
pub(crate) fn resolve_type<S>(
    fixed: &Option<Arc<str>>,
    requested: &str,
    known: &TypeMap<S>,
) -> Result<(Arc<str>, bool), Error> {
    let t = match (fixed, requested) {
        (None, "") => return Err(Error::MissingTypeUrl),
        (None, t) => t,
        (Some(fixed), "") => fixed,
        (Some(fixed), t) if &**fixed == t => fixed,
        (Some(fixed), t) => return Err(Error::WrongType { expected: fixed.to_string(), got: t.to_string() }),
    };
    Ok(match known.key(t) {
        Some(known) => (known.clone(), false),
        None => (type_url::shared(t), true),
    })
}

/// Whether two selections hold the same resources in the same versions.
fn same_versions(a: &Selection, b: &Selection) -> bool {
    Arc::ptr_eq(a, b)
        || (a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .all(|(x, y)| Arc::ptr_eq(x, y) || (x.name() == y.name() && x.version_arc() == y.version_arc())))
}

impl TypeState {
    /// Rule 10 after the subscription changed from `old`: names not subscribed before must be
    /// answered, and dropping names narrows a full-state answer.
    fn note_new_names(&mut self, old: &Subscription) {
        if self.sent.is_none() {
            // Nothing sent since the last fresh request: the next response answers every name
            // and starts this bookkeeping afresh.
            self.new_names.clear();
            return;
        }
        let before = old.requested();
        let explicit = self.names.requested();
        // Both lists are sorted: membership is a binary search.
        let is_explicit = |n: &Arc<str>| explicit.binary_search(&n).is_ok();
        // Names still to be answered but no longer requested are dropped first (usually there
        // are none, and the new names are then built in one go, in order).
        self.new_names.retain(|n| is_explicit(n));
        let added = explicit.iter().filter(|n| before.binary_search(n).is_err()).map(|n| Arc::clone(n));
        if self.new_names.is_empty() {
            self.new_names = added.collect();
        } else {
            self.new_names.extend(added);
        }
        self.narrowed |= before.iter().any(|n| !is_explicit(n));
    }

    /// Something was sent and the latest resources carry TTLs: heartbeats are due.
    fn holds_ttl(&self) -> bool {
        self.sent.is_some() && self.latest.as_ref().is_some_and(|l| l.has_ttl())
    }

    fn ready(&self) -> bool {
        self.dirty && self.waiting && self.latest.is_some()
    }

    /// The resources to send now and whether their content changed (`false`: a heartbeat), or
    /// `None` when nothing is due.
    fn due(&mut self, heartbeat: bool) -> Option<Due<'_>> {
        if !self.waiting {
            return None;
        }
        let set = self.latest.as_ref()?;
        let full_state = self.wildcard || type_url::lookup(set.type_url()).is_some_and(|t| t.full_state);
        let unchanged_wildcard = |sent: &Sent| self.wildcard && sent.wildcard && sent.set.version() == set.version();
        if let (Some(sent), true, false) = (&self.sent, self.new_names.is_empty() && !self.force, heartbeat) {
            if unchanged_wildcard(sent) {
                return None;
            }
        }
        let resources = if self.wildcard { set.all() } else { set.select(&mut self.names.keys) };
        // For explicit names: whether one of them differs from what was sent (only when the set
        // did change and nothing else tells). Both lists are in name order.
        let differs = match &self.sent {
            Some(sent) if !self.wildcard && !sent.wildcard && !self.narrowed && sent.set.version() != set.version() => {
                !same_versions(&sent.resources, &resources)
            }
            _ => false,
        };
        let (answer, changed) = match &self.sent {
            // Nothing sent since the last fresh request: answer (full state even when empty).
            None => (full_state || !resources.is_empty(), true),
            Some(sent) => {
                let new_present = self.new_names.iter().any(|n| set.contains(n));
                let changed =
                    if self.wildcard || sent.wildcard { !unchanged_wildcard(sent) } else { self.narrowed || differs };
                let answer = changed
                    || new_present
                    || (full_state && !self.new_names.is_empty())
                    || (self.force && (full_state || !resources.is_empty()))
                    || (heartbeat && resources.iter().any(|r| r.ttl().is_some()));
                (answer, changed || new_present || self.force || !self.new_names.is_empty())
            }
        };
        answer.then_some(Due { set, resources, changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_core::envoy::config::cluster::v3::Cluster;
    use xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use xds_core::google::rpc::Status as RpcStatus;
    use xds_core::{EncodedResource, XdsResource};

    const CDS: &str = type_url::CLUSTER;
    const EDS: &str = type_url::ENDPOINT;
    const LDS: &str = type_url::LISTENER;
    const RDS: &str = type_url::ROUTE;

    fn node() -> Node {
        Node { id: "n1".into(), ..Default::default() }
    }

    fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            node: Some(node()),
            ..Default::default()
        }
    }

    fn nack(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(RpcStatus { code: 3, message: "bad config".into(), details: vec![] }),
            ..req(type_url, names, version, nonce)
        }
    }

    fn clusters(spec: &[(&str, &str)]) -> Arc<ResourceSet> {
        Arc::new(ResourceSet::from_resources(
            CDS,
            spec.iter().map(|(n, alt)| {
                Cluster { name: n.to_string(), alt_stat_name: alt.to_string(), ..Default::default() }.encode_resource()
            }),
        ))
    }

    fn endpoints(spec: &[(&str, u32)]) -> Arc<ResourceSet> {
        Arc::new(ResourceSet::from_resources(
            EDS,
            spec.iter().map(|(n, v)| {
                ClusterLoadAssignment {
                    cluster_name: n.to_string(),
                    endpoints: vec![Default::default(); *v as usize],
                    ..Default::default()
                }
                .encode_resource()
            }),
        ))
    }

    fn names(r: &SotwResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name()).collect()
    }

    /// A stream that sent the first CDS response (wildcard) for `a`,`b` and returns it.
    fn started() -> (SotwStream, SotwResponse) {
        let mut s = SotwStream::ads();
        s.on_request(&req(CDS, &[], "", "")).expect("first request");
        s.on_resources(CDS, Some(clusters(&[("a", "1"), ("b", "1")])));
        let r = s.next_response().expect("initial response");
        (s, r)
    }

    #[test]
    fn streams_subscribing_the_same_names_share_one_selection() {
        let set = endpoints(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut responses = Vec::new();
        for _ in 0..3 {
            let (mut s, _) = started();
            s.on_request(&req(EDS, &["c", "a"], "", "")).expect("eds");
            s.on_resources(EDS, Some(set.clone()));
            responses.push(s.next_response().expect("eds response"));
        }
        assert_eq!(names(&responses[0]), ["a", "c"]);
        assert!(responses.iter().all(|r| Arc::ptr_eq(&r.resources, &responses[0].resources)));
    }

    fn eds_keys(s: &SotwStream) -> Names {
        s.types.get(EDS).expect("eds").names.keys.clone()
    }

    /// One stream's EDS life: a first subscription, its ACK, a wider subscription listed out of
    /// order, the same names in order. Returns the responses and the names kept after the first
    /// request (before any response).
    fn eds_script(lists: Option<&Arc<NameLists>>, set: &Arc<ResourceSet>) -> (Vec<Vec<String>>, Names) {
        let (s, _) = started();
        let mut s = match lists {
            Some(l) => s.with_settings(StreamSettings { name_lists: Some(l.clone()), ..Default::default() }),
            None => s,
        };
        let mut out = Vec::new();
        s.on_request(&req(EDS, &["a", "c"], "", "")).expect("eds");
        let first = eds_keys(&s);
        s.on_resources(EDS, Some(set.clone()));
        let r1 = s.next_response().expect("eds response");
        out.push(names(&r1).into_iter().map(String::from).collect());
        s.on_request(&req(EDS, &["a", "c"], &r1.version, &r1.nonce)).expect("ack");
        assert!(s.next_response().is_none(), "an ACK gets no response");
        s.on_request(&req(EDS, &["c", "b", "a"], &r1.version, &r1.nonce)).expect("wider");
        let r2 = s.next_response().expect("the new name is answered");
        out.push(names(&r2).into_iter().map(String::from).collect());
        s.on_request(&req(EDS, &["a", "b", "c"], &r2.version, &r2.nonce)).expect("same names, in order");
        assert!(s.next_response().is_none(), "nothing new");
        (out, first)
    }

    #[test]
    fn streams_with_shared_name_lists_take_one_list_and_answer_alike() {
        let set = endpoints(&[("a", 1), ("b", 1), ("c", 1)]);
        let (alone, _) = eds_script(None, &set);
        assert_eq!(alone, [vec!["a", "c"], vec!["a", "b", "c"]]);
        let lists = Arc::new(NameLists::default());
        let (first, first_keys) = eds_script(Some(&lists), &set);
        let (second, second_keys) = eds_script(Some(&lists), &set);
        assert_eq!(first, alone);
        assert_eq!(second, alone);
        assert!(Arc::ptr_eq(&first_keys, &second_keys), "the second stream took the first one's list");
        // Names listed out of order are not a kept list's listing: the stream makes its own and
        // answers the same.
        let (s, _) = started();
        let mut s = s.with_settings(StreamSettings { name_lists: Some(lists.clone()), ..Default::default() });
        s.on_request(&req(EDS, &["c", "a"], "", "")).expect("eds");
        assert!(!Arc::ptr_eq(&eds_keys(&s), &first_keys));
        s.on_resources(EDS, Some(set.clone()));
        assert_eq!(names(&s.next_response().expect("eds response")), ["a", "c"]);
        assert!(lists.find(["a", "c"].into_iter()).is_some());
        assert!(lists.find(["c", "a"].into_iter()).is_none(), "a listing out of order is not kept");
    }

    #[test]
    fn rule1_nonces_are_unique_within_the_stream() {
        let (mut s, r1) = started();
        s.on_request(&req(EDS, &["a"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1)])));
        let r2 = s.next_response().expect("eds response");
        s.on_request(&req(CDS, &[], &r1.version, &r1.nonce)).expect("ack");
        s.on_resources(CDS, Some(clusters(&[("a", "2")])));
        let r3 = s.next_response().expect("cds update");
        assert_ne!(r1.nonce, r2.nonce);
        assert_ne!(r2.nonce, r3.nonce);
        assert_ne!(r1.nonce, r3.nonce);
    }

    #[test]
    fn rule2_ack_records_version() {
        let (mut s, r) = started();
        let info = s.on_request(&req(CDS, &[], &r.version, &r.nonce)).expect("ack");
        assert_eq!(info.kind, RequestKind::Ack);
        assert_eq!(s.acked_version(CDS), Some(&*r.version));
        assert!(s.next_response().is_none(), "an ACK of unchanged content gets no response");
    }

    #[test]
    fn rule3_nack_is_detected_by_error_detail_even_with_the_new_version() {
        let (mut s, r) = started();
        // A client that (wrongly or not) echoes the new version still NACKs by error_detail.
        let info = s.on_request(&nack(CDS, &[], &r.version, &r.nonce)).expect("nack");
        assert_eq!(info.kind, RequestKind::Nack { detail: "bad config".into() });
        let n = s.last_nack(CDS).expect("nack recorded");
        assert_eq!(n.rejected_version, r.version);
        assert_eq!(s.acked_version(CDS), None);
    }

    #[test]
    fn rule4_no_resend_after_nack_until_content_changes() {
        let (mut s, r) = started();
        s.on_request(&nack(CDS, &[], "", &r.nonce)).expect("nack");
        assert!(s.next_response().is_none(), "NACKed content is not sent again");
        // Re-publishing the same content changes nothing.
        s.on_resources(CDS, Some(clusters(&[("a", "1"), ("b", "1")])));
        assert!(s.next_response().is_none());
        s.on_resources(CDS, Some(clusters(&[("a", "fixed"), ("b", "1")])));
        let fixed = s.next_response().expect("new content is sent");
        s.on_request(&req(CDS, &[], &fixed.version, &fixed.nonce)).expect("ack");
        assert!(s.last_nack(CDS).is_none());
        assert_eq!(s.acked_version(CDS), Some(&*fixed.version));
    }

    #[test]
    fn rule5_stale_nonce_is_ignored() {
        let (mut s, r1) = started();
        s.on_request(&req(CDS, &[], &r1.version, &r1.nonce)).expect("ack");
        s.on_resources(CDS, Some(clusters(&[("a", "2")])));
        let r2 = s.next_response().expect("update");
        // A late request echoing the first nonce.
        let info = s.on_request(&nack(CDS, &[], "", &r1.nonce)).expect("stale");
        assert_eq!(info.kind, RequestKind::Stale);
        assert!(s.last_nack(CDS).is_none());
        s.on_resources(CDS, Some(clusters(&[("a", "3")])));
        assert!(s.next_response().is_none(), "a stale request is not answered");
        s.on_request(&req(CDS, &[], &r2.version, &r2.nonce)).expect("ack");
        assert!(s.next_response().is_some());
    }

    #[test]
    fn rule6_first_request_needs_a_node_with_an_id() {
        let mut s = SotwStream::ads();
        let mut r = req(CDS, &[], "", "");
        r.node = None;
        assert!(matches!(s.on_request(&r), Err(Error::MissingNode)));
        r.node = Some(Node::default());
        assert!(matches!(s.on_request(&r), Err(Error::EmptyNodeId)));
        r.node = Some(node());
        s.on_request(&r).expect("ok");
        // Later requests may omit it.
        r.node = None;
        s.on_request(&r).expect("node remembered");
        assert_eq!(s.node().map(|n| n.id.as_str()), Some("n1"));
    }

    #[test]
    fn a_request_listing_more_names_than_the_limit_is_refused() {
        let mut s = SotwStream::ads().with_settings(StreamSettings { max_names: 3, ..Default::default() });
        s.on_request(&req(EDS, &["a", "b", "c"], "", "")).expect("at the limit");
        s.on_resources(EDS, Some(endpoints(&[("a", 1)])));
        let r = s.next_response().expect("answered");
        let err = s.on_request(&req(EDS, &["a", "b", "c", "d"], &r.version, &r.nonce)).expect_err("beyond");
        assert!(matches!(&err, Error::TooManyNames { names: 4, limit: 3, .. }), "{err:?}");
        assert!(err.to_string().contains(EDS), "the message names the type: {err}");
        assert_eq!(SotwStream::ads().settings.max_names, crate::DEFAULT_MAX_NAMES);
    }

    #[test]
    fn type_url_is_required_on_ads_and_must_match_on_per_type_streams() {
        let mut ads = SotwStream::ads();
        assert!(matches!(ads.on_request(&req("", &[], "", "")), Err(Error::MissingTypeUrl)));
        let mut cds = SotwStream::for_type(CDS);
        assert_eq!(&*cds.on_request(&req("", &[], "", "")).expect("implied").type_url, CDS);
        assert!(matches!(cds.on_request(&req(LDS, &[], "", "")), Err(Error::WrongType { .. })));
    }

    #[test]
    fn rule7_legacy_wildcard_and_explicit_names() {
        let (mut s, r) = started();
        assert!(s.is_wildcard(CDS));
        assert_eq!(names(&r), ["a", "b"]);
        // Explicit names end the legacy wildcard...
        s.on_request(&req(CDS, &["a"], &r.version, &r.nonce)).expect("explicit");
        assert!(!s.is_wildcard(CDS));
        let r2 = s.next_response().expect("narrowed: full-state type answers");
        assert_eq!(names(&r2), ["a"]);
        // ...and afterwards an empty list means nothing, not everything.
        s.on_request(&req(CDS, &[], &r2.version, &r2.nonce)).expect("empty");
        assert!(!s.is_wildcard(CDS));
        // `*` is wildcard at any time.
        s.on_request(&req(CDS, &["*"], &r2.version, &r2.nonce)).expect("star");
        assert!(s.is_wildcard(CDS));
    }

    #[test]
    fn rule7_no_legacy_wildcard_for_named_types() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &[], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1)])));
        assert!(!s.is_wildcard(EDS));
        assert!(s.next_response().is_none(), "EDS with no names subscribes to nothing");
    }

    #[test]
    fn rule8_only_subscribed_names_are_sent() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &["a", "c"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("b", 1), ("c", 1)])));
        assert_eq!(names(&s.next_response().expect("eds")), ["a", "c"]);
    }

    #[test]
    fn rule9_full_state_types_answer_with_nothing_and_send_deletes() {
        let mut s = SotwStream::ads();
        s.on_request(&req(LDS, &["missing"], "", "")).expect("lds by name (proxyless gRPC)");
        s.on_resources(LDS, Some(Arc::new(ResourceSet::empty(LDS))));
        let r = s.next_response().expect("full state: absent means does-not-exist");
        assert!(r.resources.is_empty());
        let (mut s, r) = started();
        s.on_request(&req(CDS, &[], &r.version, &r.nonce)).expect("ack");
        s.on_resources(CDS, Some(clusters(&[("a", "1")])));
        assert_eq!(names(&s.next_response().expect("delete of b")), ["a"]);
    }

    #[test]
    fn rule10_new_names_are_answered_even_when_unchanged() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &["a"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("b", 1)])));
        let r1 = s.next_response().expect("a");
        s.on_request(&req(EDS, &["a", "b"], &r1.version, &r1.nonce)).expect("add b");
        let r2 = s.next_response().expect("b is answered though nothing changed");
        assert_eq!(names(&r2), ["a", "b"]);
        // Unsubscribe b (answered with what remains), subscribe it again: answered again.
        s.on_request(&req(EDS, &["a"], &r2.version, &r2.nonce)).expect("drop b");
        let r3 = s.next_response().expect("narrowed");
        assert_eq!(names(&r3), ["a"]);
        s.on_request(&req(EDS, &["a", "b"], &r3.version, &r3.nonce)).expect("re-add b");
        assert_eq!(names(&s.next_response().expect("re-subscribed b answered")), ["a", "b"]);
    }

    #[test]
    fn duplicate_names_in_a_request_do_not_hide_a_narrowed_subscription() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &["a", "b"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("b", 1)])));
        let r1 = s.next_response().expect("a, b");
        // Same count of names as subscribed, but only `a`: b is unsubscribed.
        s.on_request(&req(EDS, &["a", "a"], &r1.version, &r1.nonce)).expect("narrow");
        assert_eq!(s.subscribed(EDS).collect::<Vec<_>>(), ["a"]);
        assert_eq!(names(&s.next_response().expect("narrowed")), ["a"]);
    }

    #[test]
    fn an_ack_listing_the_names_in_another_order_changes_nothing() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &["b", "a", "b"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("b", 1)])));
        let r1 = s.next_response().expect("a, b");
        assert_eq!(names(&r1), ["a", "b"]);
        assert_eq!(s.subscribed(EDS).collect::<Vec<_>>(), ["a", "b"]);
        for listed in [&["b", "a", "b"][..], &["a", "b"], &["b", "a"]] {
            s.on_request(&req(EDS, listed, &r1.version, &r1.nonce)).expect("ack");
            assert!(s.next_response().is_none(), "{listed:?} is the same subscription");
        }
    }

    #[test]
    fn rule21_xdstp_names_in_any_parameter_order_are_one_resource() {
        let canonical = "xdstp://auth/envoy.config.endpoint.v3.ClusterLoadAssignment/c?a=1&b=2";
        let other = "xdstp://auth/envoy.config.endpoint.v3.ClusterLoadAssignment/c?b=2&a=1";
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &[other, canonical], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[(canonical, 1), ("d", 1)])));
        let r1 = s.next_response().expect("found");
        assert_eq!(names(&r1), [canonical], "sent once");
        assert_eq!(s.subscribed(EDS).collect::<Vec<_>>(), [canonical, other], "as requested");
        s.on_request(&req(EDS, &[other, canonical], &r1.version, &r1.nonce)).expect("ack");
        assert!(s.next_response().is_none());
        s.on_resources(EDS, Some(endpoints(&[(canonical, 2), ("d", 1)])));
        let r2 = s.next_response().expect("changed");
        s.on_request(&req(EDS, &[other], &r2.version, &r2.nonce)).expect("one spelling dropped");
        assert_eq!(s.subscribed(EDS).collect::<Vec<_>>(), [other]);
        assert_eq!(names(&s.next_response().expect("narrowed")), [canonical]);
    }

    #[test]
    fn rule10_missing_names_are_remembered_and_sent_when_they_appear() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &["x"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1)])));
        assert!(s.next_response().is_none(), "nothing subscribed exists yet");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("x", 1)])));
        assert_eq!(names(&s.next_response().expect("x appeared")), ["x"]);
    }

    #[test]
    fn rule10_reconnect_with_known_version_is_answered() {
        let mut s = SotwStream::ads();
        let set = clusters(&[("a", "1")]);
        // A client reconnecting with the version it already holds still gets a response.
        s.on_request(&req(CDS, &[], set.version(), "")).expect("reconnect");
        s.on_resources(CDS, Some(set));
        assert!(s.next_response().is_some());
    }

    #[test]
    fn rule11_unrelated_changes_send_nothing_and_one_response_per_request() {
        let mut s = SotwStream::ads();
        s.on_request(&req(EDS, &["a"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("b", 1)])));
        let r1 = s.next_response().expect("a");
        s.on_request(&req(EDS, &["a"], &r1.version, &r1.nonce)).expect("ack");
        s.on_resources(EDS, Some(endpoints(&[("a", 1), ("b", 2)])));
        assert!(s.next_response().is_none(), "b changed, a did not");
        assert!(!s.wants_to_send());
        s.on_resources(EDS, Some(endpoints(&[("a", 2), ("b", 2)])));
        let r2 = s.next_response().expect("a changed");
        s.on_resources(EDS, Some(endpoints(&[("a", 3), ("b", 2)])));
        assert!(s.next_response().is_none(), "no second response before the client answers");
        s.on_request(&req(EDS, &["a"], &r2.version, &r2.nonce)).expect("ack");
        let r3 = s.next_response().expect("latest wins");
        assert_eq!(r3.resources[0].version(), endpoints(&[("a", 3)]).get("a").expect("a").version());
    }

    #[test]
    fn rule19_cluster_update_gets_an_endpoint_answer_even_if_unchanged() {
        let (mut s, r) = started();
        s.on_request(&req(EDS, &["a"], "", "")).expect("eds");
        s.on_resources(EDS, Some(endpoints(&[("a", 1)])));
        let e1 = s.next_response().expect("eds");
        s.on_request(&req(EDS, &["a"], &e1.version, &e1.nonce)).expect("eds ack");
        s.on_request(&req(CDS, &[], &r.version, &r.nonce)).expect("cds ack");
        assert!(s.next_response().is_none());
        s.on_resources(CDS, Some(clusters(&[("a", "2"), ("b", "1")])));
        let c2 = s.next_response().expect("cds update");
        assert_eq!(&*c2.type_url, CDS);
        // Envoy warms cluster a and waits for its endpoints: they are sent though unchanged.
        let e2 = s.next_response().expect("eds answer for the warming cluster");
        assert_eq!(&*e2.type_url, EDS);
        assert_eq!(names(&e2), ["a"]);
        s.on_request(&req(EDS, &["a"], &e2.version, &e2.nonce)).expect("eds ack");
        assert!(s.next_response().is_none(), "and only once");
    }

    #[test]
    fn rule20_ttl_wrapping_and_heartbeats_only_for_clients_that_support_them() {
        let ttl = Some(std::time::Duration::from_secs(30));
        let set = Arc::new(ResourceSet::from_resources(
            EDS,
            [
                EncodedResource::new(EDS, "a", b"a".to_vec()).with_ttl(ttl),
                EncodedResource::new(EDS, "b", b"b".to_vec()),
            ],
        ));
        let mut plain = SotwStream::ads();
        plain.on_request(&req(EDS, &["a", "b"], "", "")).expect("first");
        plain.on_resources(EDS, Some(set.clone()));
        let r = plain.next_response().expect("first");
        assert!(!r.wrap_ttl, "no wrappers without the client features");
        plain.on_request(&req(EDS, &["a", "b"], &r.version, &r.nonce)).expect("ack");
        assert!(!plain.needs_heartbeats(), "no timer for a client without the features");
        plain.on_heartbeat();
        assert!(plain.next_response().is_none(), "no heartbeats either");

        let mut s = SotwStream::ads();
        let mut first = req(EDS, &["a", "b"], "", "");
        if let Some(n) = first.node.as_mut() {
            n.client_features = SOTW_TTL_FEATURES.iter().map(|f| f.to_string()).collect();
        }
        s.on_request(&first).expect("first");
        assert!(!s.needs_heartbeats(), "nothing sent yet");
        s.on_resources(EDS, Some(set));
        let r = s.next_response().expect("first");
        assert!(r.wrap_ttl && !r.heartbeat);
        assert!(s.needs_heartbeats());
        s.on_request(&req(EDS, &["a", "b"], &r.version, &r.nonce)).expect("ack");
        assert!(s.next_response().is_none());
        s.on_heartbeat();
        let hb = s.next_response().expect("heartbeat");
        assert!(hb.heartbeat && hb.wrap_ttl);
        assert_eq!(names(&hb), ["a", "b"], "the full response, so nothing looks deleted");
        assert_eq!(hb.version, r.version);
    }

    #[test]
    fn nothing_is_sent_before_the_source_has_resources() {
        let mut s = SotwStream::ads();
        s.on_request(&req(CDS, &[], "", "")).expect("cds");
        s.on_resources(CDS, None);
        assert!(!s.wants_to_send());
        assert!(s.next_response().is_none(), "no empty config before the source is ready");
    }

    #[test]
    fn rule19_make_before_break_order() {
        let mut s = SotwStream::ads();
        for t in [RDS, LDS, EDS, CDS] {
            let names: &[&str] = if t == EDS || t == RDS { &["a"] } else { &[] };
            s.on_request(&req(t, names, "", "")).expect("request");
        }
        s.on_resources(
            RDS,
            Some(Arc::new(ResourceSet::from_resources(RDS, [xds_core::EncodedResource::new(RDS, "a", b"r".to_vec())]))),
        );
        s.on_resources(LDS, Some(Arc::new(ResourceSet::empty(LDS))));
        s.on_resources(EDS, Some(endpoints(&[("a", 1)])));
        s.on_resources(CDS, Some(clusters(&[("a", "1")])));
        let order: Vec<String> =
            std::iter::from_fn(|| s.next_response()).map(|r| type_url::short_name(&r.type_url).to_string()).collect();
        assert_eq!(order, ["CDS", "EDS", "LDS", "RDS"]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Publish(Vec<(u8, u8)>),
            Ack,
            Nack,
            Stale,
            Subscribe(Vec<u8>),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                prop::collection::vec((0u8..6, 0u8..3), 0..6).prop_map(Step::Publish),
                Just(Step::Ack),
                Just(Step::Nack),
                Just(Step::Stale),
                prop::collection::vec(0u8..6, 0..4).prop_map(Step::Subscribe),
            ]
        }

        proptest! {
            /// Nonces never repeat; a response only holds subscribed names (each once);
            /// nothing is sent without an outstanding request; an unchanged set sends nothing.
            #[test]
            fn invariants(steps in prop::collection::vec(step(), 1..40)) {
                let mut s = SotwStream::ads();
                let mut nonces = std::collections::HashSet::new();
                let mut last: Option<SotwResponse> = None;
                let mut subscribed: Vec<String> = vec!["c0".into()];
                let name_refs = |v: &Vec<String>| v.iter().map(String::as_str).map(String::from).collect::<Vec<_>>();
                s.on_request(&req(EDS, &subscribed.iter().map(String::as_str).collect::<Vec<_>>(), "", "")).expect("first");
                for st in steps {
                    match st {
                        Step::Publish(spec) => {
                            let spec: Vec<(String, u32)> = spec.iter().map(|(n, v)| (format!("c{n}"), u32::from(*v) + 1)).collect();
                            let refs: Vec<(&str, u32)> = spec.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                            let set = endpoints(&refs);
                            s.on_resources(EDS, Some(set.clone()));
                        }
                        Step::Ack | Step::Nack | Step::Stale => {
                            let Some(l) = &last else { continue };
                            let names = name_refs(&subscribed);
                            let names: Vec<&str> = names.iter().map(String::as_str).collect();
                            let r = match st {
                                Step::Ack => req(EDS, &names, &l.version, &l.nonce),
                                Step::Nack => nack(EDS, &names, "", &l.nonce),
                                _ => req(EDS, &names, "", "0"),
                            };
                            s.on_request(&r).expect("request");
                        }
                        Step::Subscribe(ns) => {
                            subscribed = ns.iter().map(|n| format!("c{n}")).collect();
                            let nonce = last.as_ref().map(|l| l.nonce.to_string()).unwrap_or_default();
                            let names: Vec<&str> = subscribed.iter().map(String::as_str).collect();
                            s.on_request(&req(EDS, &names, "", &nonce)).expect("subscribe");
                        }
                    }
                    while let Some(r) = s.next_response() {
                        prop_assert!(nonces.insert(r.nonce.clone()), "nonce repeated");
                        let mut seen = std::collections::HashSet::new();
                        for res in r.resources.iter() {
                            prop_assert!(subscribed.iter().any(|n| n == res.name()), "unsubscribed name sent");
                            prop_assert!(seen.insert(res.name().to_string()), "name twice");
                        }
                        prop_assert!(s.next_response().is_none(), "second response without a request");
                        last = Some(r);
                    }
                }
            }

            /// A response holds exactly the subscribed resources that exist, each once, whether
            /// the set is small or large next to the subscription; after an ACK, a new set is
            /// answered exactly when a subscribed resource changed, appeared or went away.
            #[test]
            fn responses_hold_exactly_the_subscribed_resources(
                first in prop::collection::vec((0u8..40, 1u32..4), 0..40),
                second in prop::collection::vec((0u8..40, 1u32..4), 0..40),
                subscribed in prop::collection::vec(0u8..40, 1..8),
            ) {
                let publish = |spec: &[(u8, u32)]| {
                    let spec: Vec<(String, u32)> = spec.iter().map(|(n, v)| (format!("c{n}"), *v)).collect();
                    endpoints(&spec.iter().map(|(n, v)| (n.as_str(), *v)).collect::<Vec<_>>())
                };
                let listed: Vec<String> = subscribed.iter().map(|n| format!("c{n}")).collect();
                let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
                let expected = |set: &ResourceSet| {
                    let mut held: Vec<&str> = listed.iter().copied().filter(|n| set.contains(n)).collect();
                    held.sort_unstable();
                    held.dedup();
                    held
                };
                let (first, second) = (publish(&first), publish(&second));
                let mut s = SotwStream::ads();
                s.on_request(&req(EDS, &listed, "", "")).expect("first");
                s.on_resources(EDS, Some(first.clone()));
                let Some(r) = s.next_response() else {
                    prop_assert!(expected(&first).is_empty());
                    return Ok(());
                };
                prop_assert_eq!(names(&r), expected(&first));
                s.on_request(&req(EDS, &listed, &r.version, &r.nonce)).expect("ack");
                s.on_resources(EDS, Some(second.clone()));
                let changed = listed.iter().any(|n| first.get(n).map(|r| r.version()) != second.get(n).map(|r| r.version()));
                match s.next_response() {
                    Some(r) => {
                        prop_assert!(changed);
                        prop_assert_eq!(names(&r), expected(&second));
                    }
                    None => prop_assert!(!changed),
                }
            }

            /// Re-publishing identical content never produces a response.
            #[test]
            fn unchanged_set_sends_nothing(spec in prop::collection::vec((0u8..6, 0u8..3), 1..6)) {
                let spec: Vec<(String, u32)> = spec.iter().map(|(n, v)| (format!("c{n}"), u32::from(*v) + 1)).collect();
                let refs: Vec<(&str, u32)> = spec.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                let mut s = SotwStream::ads();
                s.on_request(&req(EDS, &["c0", "c1", "c2", "c3", "c4", "c5"], "", "")).expect("first");
                s.on_resources(EDS, Some(endpoints(&refs)));
                let r = s.next_response().expect("some exist");
                s.on_request(&req(EDS, &["c0", "c1", "c2", "c3", "c4", "c5"], &r.version, &r.nonce)).expect("ack");
                s.on_resources(EDS, Some(endpoints(&refs)));
                prop_assert!(s.next_response().is_none());
            }
        }
    }
}
