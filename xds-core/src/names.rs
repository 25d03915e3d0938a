//! Resource names, including `xdstp://` names (cncf/xds TP1).
//!
//! `xdstp://authority/type/id?k1=v1&k2=v2`: two names are the same resource when they differ
//! only in the order of their context parameters. [`canonical_name`] sorts the parameters, so
//! canonical names can be compared and used as keys; a server still answers a client with
//! exactly the name it asked for. A name whose id ends in `/*` names a collection (a glob),
//! matching every resource directly under that path with the same context parameters.

use std::borrow::Cow;

/// The `xdstp://` scheme prefix.
pub const XDSTP: &str = "xdstp://";

/// The canonical form of a resource name: `xdstp://` names get their context parameters sorted;
/// other names are returned as they are.
// Inlined: the common case (not an `xdstp://` name) is one prefix comparison, made per lookup.
#[inline]
pub fn canonical_name(name: &str) -> Cow<'_, str> {
    if !name.starts_with(XDSTP) {
        return Cow::Borrowed(name);
    }
    canonical_xdstp(name)
}

/// [`canonical_name`] of an `xdstp://` name.
fn canonical_xdstp(name: &str) -> Cow<'_, str> {
    let Some((path, query)) = name.split_once('?') else {
        return Cow::Borrowed(name);
    };
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if params.windows(2).all(|w| w[0] <= w[1]) && params.len() == query.split('&').count() {
        return Cow::Borrowed(name);
    }
    params.sort_unstable();
    Cow::Owned(if params.is_empty() { path.to_string() } else { format!("{path}?{}", params.join("&")) })
}

/// If `name` is an `xdstp://` collection glob (`.../*`), its canonical form split into the
/// path prefix (ending in `/`) and the canonical query (`""` when none).
pub fn glob_parts(name: &str) -> Option<(String, String)> {
    if !name.starts_with(XDSTP) {
        return None;
    }
    let canonical = canonical_name(name);
    let (path, query) = canonical.split_once('?').unwrap_or((&canonical, ""));
    let prefix = path.strip_suffix('*')?;
    prefix.ends_with('/').then(|| (prefix.to_string(), query.to_string()))
}

/// Whether canonical name `name` is matched by the glob `(prefix, query)` from [`glob_parts`]:
/// directly under the prefix, with the same context parameters.
pub fn glob_matches(prefix: &str, query: &str, name: &str) -> bool {
    let (path, q) = name.split_once('?').unwrap_or((name, ""));
    path.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && !rest.contains('/')) && q == query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_parameter_order_does_not_matter() {
        let a = canonical_name("xdstp://auth/envoy.config.cluster.v3.Cluster/c1?b=2&a=1");
        let b = canonical_name("xdstp://auth/envoy.config.cluster.v3.Cluster/c1?a=1&b=2");
        assert_eq!(a, b);
        assert_eq!(canonical_name("plain?b&a"), "plain?b&a", "only xdstp names are rewritten");
        assert!(matches!(canonical_name("xdstp://a/t/x?a=1&b=2"), Cow::Borrowed(_)));
    }

    #[test]
    fn globs() {
        let (prefix, query) = glob_parts("xdstp://auth/t/foo/*?z=1&a=2").expect("glob");
        assert_eq!(prefix, "xdstp://auth/t/foo/");
        assert_eq!(query, "a=2&z=1");
        assert!(glob_matches(&prefix, &query, "xdstp://auth/t/foo/x?a=2&z=1"));
        assert!(!glob_matches(&prefix, &query, "xdstp://auth/t/foo/x"));
        assert!(!glob_matches(&prefix, &query, "xdstp://auth/t/foo/x/y?a=2&z=1"));
        assert!(glob_parts("xdstp://auth/t/foo").is_none());
        assert!(glob_parts("foo/*").is_none());
    }
}
