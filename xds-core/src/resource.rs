//! Resources as the wire sees them: encoded once, named, versioned, shared.
//!
//! An [`EncodedResource`] holds the protobuf `Any` encoding of one Envoy message. It is built once
//! per version, when the resource enters a source, and then shared (`Arc`) by every node group and
//! every stream that sends it: a response is assembled from these bytes without re-encoding.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy;
use prost::{Message, Name};

/// An Envoy message that is an xDS resource: it knows its type URL and its resource name.
///
/// Implemented for every standard v3 resource type. Implement it for your own message types to
/// serve them through the same caches.
pub trait XdsResource: Message + Name + Sized {
    /// The name the client subscribes to (`Listener.name`, `ClusterLoadAssignment.cluster_name`, ...).
    fn resource_name(&self) -> &str;

    /// Encodes the message once into a shareable resource whose version is derived from content.
    fn encode_resource(&self) -> EncodedResource {
        EncodedResource::new(Self::type_url(), self.resource_name(), self.encode_to_vec())
    }
}

macro_rules! named_by {
    ($($ty:ty => $field:ident),* $(,)?) => {$(
        impl XdsResource for $ty {
            fn resource_name(&self) -> &str {
                &self.$field
            }
        }
    )*};
}

named_by! {
    envoy::config::listener::v3::Listener => name,
    envoy::config::route::v3::RouteConfiguration => name,
    envoy::config::route::v3::ScopedRouteConfiguration => name,
    envoy::config::route::v3::VirtualHost => name,
    envoy::config::cluster::v3::Cluster => name,
    envoy::config::endpoint::v3::ClusterLoadAssignment => cluster_name,
    envoy::extensions::transport_sockets::tls::v3::Secret => name,
    envoy::service::runtime::v3::Runtime => name,
    envoy::config::core::v3::TypedExtensionConfig => name,
}

/// One resource, encoded once: type URL, name, version and the `Any` bytes every stream shares.
///
/// Cloning is cheap (reference counts only).
#[derive(Clone, Eq)]
pub struct EncodedResource {
    type_url: Arc<str>,
    name: Arc<str>,
    version: Arc<str>,
    /// `google.protobuf.Any { type_url, value }`, encoded; `value` is its tail.
    any: Bytes,
    value_offset: usize,
    ttl: Option<Duration>,
    /// Whether the version was set explicitly (else it follows content and TTL).
    explicit_version: bool,
}

/// Every field equal; the fields that usually differ (the version, then the name) are compared
/// first and the encoded bytes last, so comparing two versions of a resource (as set diffs do)
/// stops early.
impl PartialEq for EncodedResource {
    fn eq(&self, other: &Self) -> bool {
        if std::ptr::eq(self, other) {
            return true;
        }
        self.version == other.version
            && self.name == other.name
            && self.ttl == other.ttl
            && self.explicit_version == other.explicit_version
            && self.value_offset == other.value_offset
            && self.type_url == other.type_url
            && self.any == other.any
    }
}

impl EncodedResource {
    /// Wraps already-encoded message bytes. The version is derived from the bytes (see
    /// [`content_version`]), so identical content has the identical version everywhere.
    pub fn new(type_url: impl Into<Arc<str>>, name: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        let type_url = type_url.into();
        let value: Bytes = value.into();
        let version: Arc<str> = content_version(&value).into();
        let any = envoy_types::pb::google::protobuf::Any { type_url: type_url.to_string(), value: value.to_vec() }
            .encode_to_vec();
        let value_offset = any.len() - value.len();
        Self {
            type_url,
            name: name.into(),
            version,
            any: Bytes::from(any),
            value_offset,
            ttl: None,
            explicit_version: false,
        }
    }

    /// Encodes a message (see [`XdsResource::encode_resource`]).
    pub fn from_message<M: XdsResource>(message: &M) -> Self {
        message.encode_resource()
    }

    /// Replaces the content-derived version with an explicit one.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<Arc<str>>) -> Self {
        self.version = version.into();
        self.explicit_version = true;
        self
    }

    /// Sets a time to live: clients that support it drop the resource unless it is refreshed
    /// by a heartbeat (xDS protocol "TTL"). `None` clears it.
    ///
    /// A content-derived version covers the TTL too, so setting or clearing a TTL is a change
    /// that reaches clients (a resource re-sent without TTL clears the client's timer).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        if !self.explicit_version {
            let body = content_version(&self.any[self.value_offset..]);
            self.version = match ttl {
                None => body.into(),
                Some(ttl) => format!("{body}-ttl{}", ttl.as_millis()).into(),
            };
        }
        self
    }

    /// The full type URL.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a shared string.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The resource version (opaque to clients).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version as a shared string.
    pub fn version_arc(&self) -> &Arc<str> {
        &self.version
    }

    /// The encoded `google.protobuf.Any` (shared, never copied).
    pub fn any_bytes(&self) -> &Bytes {
        &self.any
    }

    /// The encoded message itself (a slice of [`Self::any_bytes`]).
    pub fn value(&self) -> Bytes {
        self.any.slice(self.value_offset..)
    }

    /// The time to live, if one is set.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Decodes the message again (for tests, dumps and consistency checks; never on the hot path).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(&self.any[self.value_offset..])
    }

    /// Bytes held by this resource.
    pub fn encoded_len(&self) -> usize {
        self.any.len()
    }
}

impl fmt::Debug for EncodedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedResource")
            .field("type_url", &self.type_url)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bytes", &self.any.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The version derived from encoded content: 16 hex digits of XXH3-64.
///
/// Stable across processes, machines and releases of this library (XXH3 is a fixed algorithm),
/// so two replicas, or a restarted server, give the same content the same version.
pub fn content_version(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy::config::cluster::v3::Cluster;

    #[test]
    fn encodes_once_as_any_and_round_trips() {
        let c = Cluster { name: "a".into(), ..Default::default() };
        let r = c.encode_resource();
        assert_eq!(r.name(), "a");
        assert_eq!(r.type_url(), crate::type_url::CLUSTER);
        let any = envoy_types::pb::google::protobuf::Any::decode(r.any_bytes().clone()).expect("any");
        assert_eq!(any.type_url, crate::type_url::CLUSTER);
        assert_eq!(any.value, c.encode_to_vec());
        assert_eq!(r.decode::<Cluster>().expect("decode"), c);
    }

    #[test]
    fn version_is_derived_from_content() {
        let a = Cluster { name: "a".into(), ..Default::default() }.encode_resource();
        let a2 = Cluster { name: "a".into(), ..Default::default() }.encode_resource();
        let b = Cluster { name: "a".into(), alt_stat_name: "x".into(), ..Default::default() }.encode_resource();
        assert_eq!(a.version(), a2.version());
        assert_ne!(a.version(), b.version());
        assert_eq!(a.clone().with_version("v7").version(), "v7");
        let t = a.clone().with_ttl(Some(Duration::from_secs(5)));
        assert_ne!(t.version(), a.version(), "a TTL is part of the derived version");
        assert_eq!(t.with_ttl(None).version(), a.version(), "clearing it restores the version");
    }
}
