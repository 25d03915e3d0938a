//! Proto3 JSON for every Envoy type (feature `json`): what `config_dump`, REST-JSON and
//! human-readable tests need.
//!
//! The descriptors come from the descriptor set `envoy-types` ships, so every `@type` inside an
//! `Any` resolves (HttpConnectionManager in a Listener, Router in its filters, ...).

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// What can go wrong converting between JSON and protobuf.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The message type is not among Envoy's descriptors.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The protobuf bytes do not decode as that type.
    #[error("invalid {type_name}: {source}")]
    Decode {
        /// The message type.
        type_name: String,
        /// Why.
        #[source]
        source: prost::DecodeError,
    },
    /// The JSON does not map onto the type.
    #[error("invalid JSON for {type_name}: {message}")]
    Json {
        /// The message type.
        type_name: String,
        /// Why, with the path of the offending field when known.
        message: String,
    },
}

/// The encoded `FileDescriptorSet` of every Envoy, xDS and Google type and service `envoy-types`
/// ships: for a gRPC reflection service, or any tool that needs Envoy's schemas without protoc.
pub fn descriptor_set() -> &'static [u8] {
    DESCRIPTORS
}

/// Every Envoy (and Google well-known) message descriptor.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The descriptor set is built into the binary from envoy-types: failure is a build defect.
        #[allow(clippy::expect_used)]
        DescriptorPool::decode(DESCRIPTORS).expect("the envoy-types descriptor set decodes")
    })
}

fn type_name(type_url_or_name: &str) -> &str {
    type_url_or_name.rsplit('/').next().unwrap_or(type_url_or_name)
}

/// Protobuf bytes of `type_url` (or a full message name) as proto3 JSON, `Any`s expanded with
/// `@type`.
pub fn to_json(type_url: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let name = type_name(type_url);
    let desc = descriptor_pool().get_message_by_name(name).ok_or_else(|| JsonError::UnknownType(name.to_string()))?;
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|source| JsonError::Decode { type_name: name.to_string(), source })?;
    let options = SerializeOptions::new().skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| JsonError::Json { type_name: name.to_string(), message: e.to_string() })
}

/// Proto3 JSON (with `@type` in every `Any`) to protobuf bytes of `type_url` (or a full message
/// name). Unknown fields are errors.
pub fn from_json(type_url: &str, json: &str) -> Result<Vec<u8>, JsonError> {
    use prost::Message;
    let name = type_name(type_url);
    let desc = descriptor_pool().get_message_by_name(name).ok_or_else(|| JsonError::UnknownType(name.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(desc, &mut de)
        .map_err(|e| JsonError::Json { type_name: name.to_string(), message: e.to_string() })?;
    de.end().map_err(|e| JsonError::Json { type_name: name.to_string(), message: e.to_string() })?;
    Ok(msg.encode_to_vec())
}

/// A message as proto3 JSON.
pub fn message_to_json<M: prost::Message + prost::Name>(message: &M) -> Result<serde_json::Value, JsonError> {
    to_json(&M::full_name(), &message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::config::cluster::v3::Cluster;
    use crate::XdsResource;

    #[test]
    fn round_trips_with_any() {
        let c = Cluster { name: "a".into(), ..Default::default() };
        let r = c.encode_resource();
        let j = to_json(r.type_url(), &r.value()).expect("json");
        assert_eq!(j["name"], "a");
        let back = from_json(r.type_url(), &j.to_string()).expect("back");
        assert_eq!(back, r.value().to_vec());
        let any = serde_json::json!({"@type": crate::type_url::CLUSTER, "name": "x"});
        let any_bytes = from_json("google.protobuf.Any", &any.to_string()).expect("any");
        assert_eq!(to_json("google.protobuf.Any", &any_bytes).expect("json")["name"], "x");
        assert!(from_json(r.type_url(), r#"{"nmae": "typo"}"#).is_err(), "unknown fields are errors");
    }
}
