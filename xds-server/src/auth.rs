//! Node authorization: bind the identity of a client certificate to the node ids it may claim.
//!
//! Any client can put any `node.id` in its request; a server that trusts it hands one client
//! another's configuration and secrets. With mutual TLS the client's certificate names it (a
//! SPIFFE URI SAN such as `spiffe://mesh/ns/default/sa/frontend`, or a DNS SAN): a
//! [`NodeAuthorizer`] decides, on the first request of every stream, whether that identity may
//! claim that node. A refusal ends the stream with `PERMISSION_DENIED` before anything is sent.

use std::collections::HashMap;

use xds_core::envoy::config::core::v3::Node;

/// Decides whether a client may claim a node.
pub trait NodeAuthorizer: Send + Sync + 'static {
    /// `identities` are the URI and DNS SANs of the client certificate (empty without mutual
    /// TLS). `Err` carries the reason the client's operator will read.
    fn authorize(&self, identities: &[String], node: &Node) -> Result<(), String>;
}

/// A fixed table: identity → node id patterns it may claim (exact, or a prefix ending in `*`).
/// An identity absent from the table, or a client without a certificate, is refused.
#[derive(Debug, Clone, Default)]
pub struct IdentityBinding {
    bindings: HashMap<String, Vec<String>>,
}

impl IdentityBinding {
    /// An empty table (refuses everyone).
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `identity` claim the node ids matching `patterns`.
    #[must_use]
    pub fn bind(mut self, identity: impl Into<String>, patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bindings.entry(identity.into()).or_default().extend(patterns.into_iter().map(Into::into));
        self
    }
}

fn matches(pattern: &str, node_id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => node_id.starts_with(prefix),
        None => pattern == node_id,
    }
}

impl NodeAuthorizer for IdentityBinding {
    fn authorize(&self, identities: &[String], node: &Node) -> Result<(), String> {
        if identities.is_empty() {
            return Err(format!(
                "node {:?}: the client presented no certificate identity; this server binds node ids to client certificates",
                node.id
            ));
        }
        let allowed =
            identities.iter().filter_map(|i| self.bindings.get(i)).flatten().any(|pattern| matches(pattern, &node.id));
        if allowed {
            Ok(())
        } else {
            Err(format!("identity {} may not claim node id {:?}", identities.join(", "), node.id))
        }
    }
}

/// The URI and DNS subject alternative names of a DER certificate.
pub(crate) fn certificate_identities(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_string()),
            GeneralName::DNSName(d) => Some((*d).to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding() {
        let b =
            IdentityBinding::new().bind("spiffe://mesh/sa/a", ["node-a"]).bind("spiffe://mesh/sa/fleet", ["fleet-*"]);
        let node = |id: &str| Node { id: id.into(), ..Default::default() };
        assert!(b.authorize(&["spiffe://mesh/sa/a".into()], &node("node-a")).is_ok());
        assert!(b.authorize(&["spiffe://mesh/sa/a".into()], &node("node-b")).is_err());
        assert!(b.authorize(&["spiffe://mesh/sa/fleet".into()], &node("fleet-7")).is_ok());
        assert!(b.authorize(&[], &node("node-a")).is_err());
        let err = b.authorize(&["spiffe://other".into()], &node("node-a")).expect_err("unbound");
        assert!(err.contains("may not claim"), "{err}");
    }
}
