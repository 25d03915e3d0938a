//! The envelopes of ADS responses as the load generator reads them: the same wire format as
//! `DiscoveryResponse` and `DeltaDiscoveryResponse`, with each resource's bytes kept as a slice
//! of the received message instead of a copy. Every resource is still decoded in full into its
//! Envoy type (`client::Held`); only the envelope's copy is saved, as an efficient client's
//! would be (Envoy parses the envelope in place too).
//!
//! Fields the generator does not read are skipped by prost as unknown fields.

use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// `google.protobuf.Any` with its value kept as received.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireAny {
    /// The type URL of the value.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded resource.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.service.discovery.v3.DiscoveryResponse`, the fields a SotW client reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireResponse {
    /// `version_info`.
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// `resources`.
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<WireAny>,
    /// `type_url`.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// `nonce`.
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `envoy.service.discovery.v3.Resource`, the fields a delta client reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireResource {
    /// `version`.
    #[prost(string, tag = "1")]
    pub version: String,
    /// `resource`.
    #[prost(message, optional, tag = "2")]
    pub resource: Option<WireAny>,
    /// `name`.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`, the fields a delta client reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireDeltaResponse {
    /// `resources`.
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<WireResource>,
    /// `type_url`.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// `nonce`.
    #[prost(string, tag = "5")]
    pub nonce: String,
    /// `removed_resources`.
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// Path of the SotW ADS method.
pub const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// Path of the delta ADS method.
pub const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Opens a bidirectional ADS stream at `path` ([`SOTW_PATH`] or [`DELTA_PATH`]), sending
/// `requests` and reading `Resp` ([`WireResponse`] or [`WireDeltaResponse`]).
pub async fn open<Req, Resp>(
    channel: Channel,
    path: &'static str,
    requests: ReceiverStream<Req>,
    max_response: usize,
) -> Result<Streaming<Resp>, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_response);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let response = grpc.streaming(tonic::Request::new(requests), PathAndQuery::from_static(path), codec).await?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource};
    use xds_core::google::protobuf::Any;

    use super::*;

    fn any(n: u8) -> Any {
        Any { type_url: "type.googleapis.com/x".into(), value: vec![n; 3] }
    }

    #[test]
    fn sotw_envelope_reads_what_discovery_response_writes() {
        let full = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![any(1), any(2)],
            type_url: "t".into(),
            nonce: "n".into(),
            canary: true,
            ..Default::default()
        };
        let wire = WireResponse::decode(Bytes::from(full.encode_to_vec())).expect("decodes");
        assert_eq!((wire.version_info.as_str(), wire.type_url.as_str(), wire.nonce.as_str()), ("v1", "t", "n"));
        let values: Vec<&[u8]> = wire.resources.iter().map(|r| r.value.as_ref()).collect();
        assert_eq!(values, [&[1u8; 3][..], &[2u8; 3][..]]);
    }

    #[test]
    fn delta_envelope_reads_what_delta_discovery_response_writes() {
        let full = DeltaDiscoveryResponse {
            system_version_info: "s".into(),
            resources: vec![Resource {
                name: "a".into(),
                version: "1".into(),
                resource: Some(any(7)),
                ..Default::default()
            }],
            type_url: "t".into(),
            removed_resources: vec!["b".into()],
            nonce: "n".into(),
            ..Default::default()
        };
        let wire = WireDeltaResponse::decode(Bytes::from(full.encode_to_vec())).expect("decodes");
        assert_eq!(wire.resources.len(), 1);
        let r = &wire.resources[0];
        assert_eq!((r.name.as_str(), r.version.as_str()), ("a", "1"));
        assert_eq!(r.resource.as_ref().map(|a| a.value.as_ref()), Some(&[7u8; 3][..]));
        assert_eq!((wire.type_url.as_str(), wire.nonce.as_str()), ("t", "n"));
        assert_eq!(wire.removed_resources, ["b"]);
    }
}
