//! Callbacks: observe every stream, request and response, and veto what you do not want.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Status;
use xds_cache::Nack;
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

/// Which protocol variant a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variant {
    /// State of the world.
    Sotw,
    /// Incremental.
    Delta,
}

/// What is known about a stream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamInfo {
    /// Unique per server.
    pub id: u64,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    /// SotW or delta.
    pub variant: Variant,
    /// `None` for ADS; the type of a per-type stream otherwise.
    pub type_url: Option<&'static str>,
    /// The node, once the first request arrived (shared with the stream's state machine).
    pub node: Option<Arc<Node>>,
    /// URI and DNS SANs of the client certificate (mutual TLS only).
    pub identities: Vec<String>,
}

/// A response about to be sent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResponseInfo<'a> {
    /// The type URL.
    pub type_url: &'a str,
    /// The version (`version_info` in SotW, `system_version_info` in delta).
    pub version: &'a str,
    /// The nonce.
    pub nonce: &'a str,
    /// Number of resources sent.
    pub resources: usize,
    /// Names removed (delta only).
    pub removed: usize,
    /// Bytes on the wire.
    pub bytes: usize,
}

/// Hooks called by every stream. All methods have empty defaults; implement what you need.
///
/// A hook that returns `Err(status)` vetoes: the stream is closed with that status (give it a
/// message the client's operator can act on). Hooks run on the task of the stream's connection,
/// which runs every other stream of that connection too: keep them short and never block.
pub trait Callbacks: Send + Sync + 'static {
    /// A stream opened (before its first request).
    fn on_stream_open(&self, _stream: &StreamInfo) -> Result<(), Status> {
        Ok(())
    }

    /// A stream ended; `status` is the error it ended with, if any.
    fn on_stream_closed(&self, _stream: &StreamInfo, _status: Option<&Status>) {}

    /// A SotW request arrived (before it is applied).
    fn on_request(&self, _stream: &StreamInfo, _request: &DiscoveryRequest) -> Result<(), Status> {
        Ok(())
    }

    /// A delta request arrived (before it is applied).
    fn on_delta_request(&self, _stream: &StreamInfo, _request: &DeltaDiscoveryRequest) -> Result<(), Status> {
        Ok(())
    }

    /// A response is about to be sent.
    fn on_response(&self, _stream: &StreamInfo, _response: &ResponseInfo<'_>) {}

    /// The client ACKed `version` of `type_url`.
    fn on_ack(&self, _stream: &StreamInfo, _type_url: &str, _version: &str) {}

    /// The client NACKed a response.
    fn on_nack(&self, _stream: &StreamInfo, _type_url: &str, _nack: &Nack) {}
}

/// Callbacks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCallbacks;

impl Callbacks for NoCallbacks {}
