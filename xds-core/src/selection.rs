//! Selections: the resources a stream subscribes to, picked from a [`ResourceSet`] once and
//! shared by every stream that subscribes the same names.
//!
//! Ten thousand proxies of one mesh subscribe the same hundred endpoint names. Picking those
//! hundred resources out of each new set for every stream costs a walk of the set and a
//! reference count increment per resource and stream, on counters every core touches. A set
//! instead keeps the few selections asked of it (see [`ResourceSet::select`]): the first stream
//! walks the set, the others get the same [`Selection`] for one increment. The streams also end
//! up sharing one list of subscribed [`Names`] instead of holding a copy each.
//!
//! Delta streams ask each new set what changed since the set they last sent; ten thousand
//! streams that sent the same set ask the same question, and the set keeps the answer
//! ([`ResourceSet::changes_since`]).
//!
//! [`ResourceSet`]: crate::ResourceSet
//! [`ResourceSet::select`]: crate::ResourceSet::select
//! [`ResourceSet::changes_since`]: crate::ResourceSet::changes_since

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use crate::resource::EncodedResource;
use crate::set::{Change, ResourceSet};

/// Resources picked from a set, ordered by name; shared by the streams it was picked for.
pub type Selection = Arc<[Arc<EncodedResource>]>;

/// Canonical resource names ([`canonical_name`](crate::canonical_name)), sorted, each once: what
/// a stream subscribes to of one type. Streams that subscribe the same names share one list.
pub type Names = Arc<[Arc<str>]>;

/// The differences between two sets, ordered by canonical name; shared by the streams that ask.
pub type Changes = Arc<[Change]>;

/// Differences kept per set (against that many older sets). Streams of a group have usually sent
/// one of the last two or three sets.
const DIFFS_KEPT: usize = 4;

/// Selections kept per set, the oldest dropped first. Streams of a mesh subscribe a few distinct
/// lists (often one per type); a stream with a list of its own costs a miss, not a churn of
/// the whole cache.
pub(crate) const KEPT: usize = 8;

/// The selections asked of one set (its whole content, and by names), computed on first use.
/// Part of the set's cached state: a clone of the set starts empty, and the set's equality
/// ignores it.
#[derive(Default)]
pub(crate) struct Selections {
    all: OnceLock<Selection>,
    pub(crate) named: Kept<Names, Selection, KEPT>,
    /// Differences from older sets, by the older set's address: the weak reference keeps the
    /// address from being reused while the entry exists.
    diffs: Kept<Weak<ResourceSet>, Changes, DIFFS_KEPT>,
}

/// At most `N` answers worked out from a set, for the streams that ask the same: looked up
/// under a lock and worked out without it (other streams are not held up by a walk of a large
/// set), the oldest dropped first.
pub(crate) struct Kept<K, V, const N: usize> {
    entries: Mutex<VecDeque<(K, V)>>,
}

impl<K, V, const N: usize> Default for Kept<K, V, N> {
    fn default() -> Self {
        Self { entries: Mutex::new(VecDeque::new()) }
    }
}

impl<K, V, const N: usize> Kept<K, V, N> {
    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<(K, V)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `found` makes of the first entry it accepts.
    fn find<R>(&self, mut found: impl FnMut(&K, &V) -> Option<R>) -> Option<R> {
        self.entries().iter().find_map(|(k, v)| found(k, v))
    }

    /// Keeps `value` under `key`, unless another caller kept an entry `found` accepts meanwhile:
    /// then what `found` makes of that one, to share it.
    fn keep<R>(&self, key: K, value: V, mut found: impl FnMut(&K, &V) -> Option<R>) -> Option<R> {
        let mut entries = self.entries();
        if let Some(existing) = entries.iter().find_map(|(k, v)| found(k, v)) {
            return Some(existing);
        }
        Self::push(&mut entries, key, value);
        None
    }

    /// Keeps `value` under `key` in place of the first entry `same` accepts, or as a new entry.
    fn replace(&self, key: K, value: V, same: impl Fn(&K) -> bool) {
        let mut entries = self.entries();
        if let Some(entry) = entries.iter_mut().find(|(k, _)| same(k)) {
            *entry = (key, value);
            return;
        }
        Self::push(&mut entries, key, value);
    }

    /// Adds an entry, dropping the oldest when `N` are kept.
    fn push(entries: &mut VecDeque<(K, V)>, key: K, value: V) {
        if entries.len() == N {
            entries.pop_front();
        }
        entries.push_back((key, value));
    }

    /// Entries kept.
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

impl Selections {
    /// The whole set, computed by `all` on first use.
    pub(crate) fn all(&self, all: impl FnOnce() -> Selection) -> Selection {
        self.all.get_or_init(all).clone()
    }

    /// The selection kept for `names` (equal names, by address or content), making `names` the
    /// kept list; or the one `pick` computes (it may replace `names` with the set's own
    /// strings), kept for the next stream.
    pub(crate) fn named(&self, names: &mut Names, pick: impl FnOnce(&mut Names) -> Selection) -> Selection {
        if let Some(kept) = self.named.find(|kept, selection| share(kept, selection, names)) {
            return kept;
        }
        let selection = pick(names);
        let key = names.clone();
        self.named.keep(key, selection.clone(), |kept, selection| share(kept, selection, names)).unwrap_or(selection)
    }

    /// The differences from `older`, kept, or computed by `diff` and kept.
    pub(crate) fn changes_since(&self, older: &Arc<ResourceSet>, diff: impl FnOnce() -> Changes) -> Changes {
        let same = |w: &Weak<ResourceSet>, changes: &Changes| {
            std::ptr::eq(w.as_ptr(), Arc::as_ptr(older)).then(|| changes.clone())
        };
        if let Some(changes) = self.diffs.find(same) {
            return changes;
        }
        let changes = diff();
        self.diffs.keep(Arc::downgrade(older), changes.clone(), same).unwrap_or(changes)
    }
}

/// The kept `selection` if `kept` lists the same names as `names`, which then becomes the kept
/// list (a stream that holds it already touches no reference count).
fn share(kept: &Names, selection: &Selection, names: &mut Names) -> Option<Selection> {
    same_names(kept, names).then(|| {
        if !Arc::ptr_eq(kept, names) {
            *names = kept.clone();
        }
        selection.clone()
    })
}

/// Name lists kept per [`NameLists`], the oldest dropped first.
const NAME_LISTS: usize = 16;

/// The lists of names streams subscribed with lately, for the streams that subscribe the same.
///
/// Ten thousand proxies of a mesh subscribe the same hundred endpoint names. Each stream's
/// first request used to cost a string per name, a sort and a list, all dropped again once the
/// stream took over the list a resource set keeps (see [`ResourceSet::select`]). A stream that
/// finds its request's names among these lists takes that list instead: comparing a hundred
/// names costs less than making a hundred strings. Shared by the streams of a server; a lock is
/// taken only when a stream's subscription changes, never per response.
///
/// [`ResourceSet::select`]: crate::ResourceSet::select
#[derive(Default)]
pub struct NameLists {
    kept: Kept<Names, (), NAME_LISTS>,
}

impl NameLists {
    /// The kept list that holds exactly the names `listed`, in their order.
    pub fn find<'a>(&self, listed: impl Iterator<Item = &'a str> + Clone) -> Option<Names> {
        let len = listed.clone().count();
        self.kept.find(|names, ()| {
            (names.len() == len && names.iter().map(|n| &**n).eq(listed.clone())).then(|| names.clone())
        })
    }

    /// Keeps `names` for the streams that subscribe the same, unless an equal list is kept.
    pub fn keep(&self, names: &Names) {
        self.kept.keep(names.clone(), (), |kept, ()| same_names(kept, names).then_some(()));
    }

    /// Keeps `names` in place of an equal list (`names` holding a resource set's own strings,
    /// say, where the kept list holds a request's), or as a new list: the streams that find it
    /// then hold strings a walk of the set recognises by address.
    pub(crate) fn prefer(&self, names: &Names) {
        self.kept.replace(names.clone(), (), |kept| same_names(kept, names));
    }
}

impl fmt::Debug for NameLists {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameLists").field("kept", &self.kept.len()).finish()
    }
}

/// Whether two name lists are equal: the same list, or equal names (compared by address first).
fn same_names(a: &Names, b: &Names) -> bool {
    Arc::ptr_eq(a, b) || (a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| Arc::ptr_eq(x, y) || x == y))
}

impl Clone for Selections {
    /// A clone starts empty: it is about to be changed, and its selections computed anew.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Selections {
    /// Cached state: not part of a set's value.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Selections {}

impl fmt::Debug for Selections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selections")
            .field("all", &self.all.get().is_some())
            .field("named", &self.named.len())
            .field("diffs", &self.diffs.len())
            .finish()
    }
}

/// Whether `lookups` ascending names are better found by walking a sorted collection of `len`
/// alongside them than by one search each: a walk costs `len`, searches `lookups` times the
/// depth. Used to pick resources from sets and to match a delta stream's subscriptions.
pub fn walk_rather_than_search(len: usize, lookups: usize) -> bool {
    /// A collection at most this many times larger than the names looked up in it is walked.
    const WALK_RATIO: usize = 8;
    len <= lookups.saturating_mul(WALK_RATIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Names {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn name_lists_find_exact_listings_keep_each_list_once_and_are_bounded() {
        let lists = NameLists::default();
        let ac = list(&["a", "c"]);
        lists.keep(&ac);
        lists.keep(&list(&["a", "c"]));
        let found = lists.find(["a", "c"].into_iter()).expect("kept");
        assert!(Arc::ptr_eq(&found, &ac), "an equal list is not kept twice");
        assert!(lists.find(["c", "a"].into_iter()).is_none(), "order matters");
        assert!(lists.find(["a"].into_iter()).is_none());
        assert!(lists.find(["a", "c", "d"].into_iter()).is_none());
        for i in 0..NAME_LISTS {
            lists.keep(&list(&[&format!("n{i}")]));
        }
        assert_eq!(lists.kept.len(), NAME_LISTS);
        assert!(lists.find(["a", "c"].into_iter()).is_none(), "the oldest list went first");
        assert!(lists.find(["n0"].into_iter()).is_some());
    }

    #[test]
    fn name_lists_prefer_an_equal_list_in_place_of_the_kept_one() {
        let lists = NameLists::default();
        let first = list(&["a", "c"]);
        lists.keep(&first);
        lists.keep(&list(&["b"]));
        let better = list(&["a", "c"]);
        lists.prefer(&better);
        let found = lists.find(["a", "c"].into_iter()).expect("kept");
        assert!(Arc::ptr_eq(&found, &better), "the preferred list replaced the equal one");
        assert_eq!(lists.kept.len(), 2, "in place, not beside it");
        lists.prefer(&list(&["d"]));
        assert_eq!(lists.kept.len(), 3, "a new list is kept as well");
    }
}
