//! The per-type states of one stream, kept in the order responses go out.

use std::sync::Arc;

use xds_core::type_url;

/// A stream's state per type, in make-before-break order (clusters before endpoints before
/// listeners before routes, ...; types outside the table last, by type URL).
///
/// A stream has a handful of types: a small ordered vector holds them in one allocation of a few
/// states (a `BTreeMap` node holds eleven), finds one by a short scan, and gives the order in
/// which responses are due without sorting or collecting on every call.
#[derive(Debug)]
pub(crate) struct TypeMap<S> {
    entries: Vec<(Arc<str>, S)>,
}

impl<S> Default for TypeMap<S> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

/// Where a type goes among the others.
fn rank(t: &str) -> (u8, &str) {
    (type_url::order(t), t)
}

impl<S> TypeMap<S> {
    fn position(&self, t: &str) -> Option<usize> {
        // Callers mostly pass the kept (or the shared standard) string itself.
        self.entries.iter().position(|(k, _)| (std::ptr::eq(k.as_ptr(), t.as_ptr()) && k.len() == t.len()) || &**k == t)
    }

    /// The type URL as kept (shared with the stream's responses), if the type is known.
    pub(crate) fn key(&self, t: &str) -> Option<&Arc<str>> {
        self.position(t).map(|i| &self.entries[i].0)
    }

    pub(crate) fn get(&self, t: &str) -> Option<&S> {
        self.position(t).map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, t: &str) -> Option<&mut S> {
        self.position(t).map(|i| &mut self.entries[i].1)
    }

    /// The state of `t`, added in its place (a default) if the type is new.
    pub(crate) fn entry(&mut self, t: Arc<str>) -> &mut S
    where
        S: Default,
    {
        let i = match self.position(&t) {
            Some(i) => i,
            None => {
                let at = self.entries.partition_point(|(k, _)| rank(k) < rank(&t));
                self.entries.insert(at, (t, S::default()));
                at
            }
        };
        &mut self.entries[i].1
    }

    /// How many types.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The type at `i` (in make-before-break order) and its state.
    pub(crate) fn at(&self, i: usize) -> (&Arc<str>, &S) {
        let (t, s) = &self.entries[i];
        (t, s)
    }

    /// The state of the type at `i`.
    pub(crate) fn at_mut(&mut self, i: usize) -> &mut S {
        &mut self.entries[i].1
    }

    /// The types after position `i` and their states.
    pub(crate) fn after(&self, i: usize) -> impl Iterator<Item = (&Arc<str>, &S)> {
        self.entries.iter().skip(i + 1).map(|(t, s)| (t, s))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(t, _)| t)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &S> {
        self.entries.iter().map(|(_, s)| s)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.entries.iter_mut().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_kept_in_make_before_break_order_whatever_the_request_order() {
        let mut m: TypeMap<u32> = TypeMap::default();
        let custom = "type.googleapis.com/example.Custom";
        for (n, t) in
            [type_url::ROUTE, custom, type_url::ENDPOINT, type_url::LISTENER, type_url::CLUSTER].into_iter().enumerate()
        {
            *m.entry(t.into()) = n as u32;
        }
        let order: Vec<&str> = m.keys().map(|t| &**t).collect();
        assert_eq!(order, [type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER, type_url::ROUTE, custom]);
        assert_eq!(m.get(type_url::ENDPOINT), Some(&2));
        assert_eq!(m.get("type.googleapis.com/unknown"), None);
        // An existing type keeps its state and its place.
        *m.entry(type_url::ENDPOINT.into()) += 10;
        assert_eq!(m.get(type_url::ENDPOINT), Some(&12));
        assert_eq!(m.len(), 5);
        let after: Vec<&str> = m.after(2).map(|(t, _)| &**t).collect();
        assert_eq!(after, [type_url::ROUTE, custom]);
    }
}
