//! Glue between the transport and the two state machines of `xds-cache`: one trait, so one
//! stream driver serves SotW and delta alike.

use std::sync::Arc;

use tonic::Status;
use xds_cache::{DeltaResponse, DeltaStream, Nack, RequestInfo, SotwResponse, SotwStream};
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_core::ResourceSet;

use crate::body::{BodyCache, SharedPart};
use crate::callbacks::{Callbacks, ResponseInfo, StreamInfo, Variant};
use crate::codec::Recycle;
use crate::stream::names_for_log;
use crate::stream::Shared;

/// A protocol state machine the stream driver can run.
pub(crate) trait Protocol: Send + 'static {
    type Request: Recycle;
    type Response: SharedPart;
    const VARIANT: Variant;

    /// Where encoded bodies of this protocol's responses are shared.
    fn bodies(shared: &Shared) -> &BodyCache<Self::Response>;

    /// A stream's state machine (of one type, or ADS when `None`), sharing what the server shares.
    fn new(fixed_type: Option<&str>, shared: &Shared) -> Self;
    fn on_request(&mut self, req: &Self::Request) -> Result<RequestInfo, xds_cache::Error>;
    fn on_resources(&mut self, type_url: &str, set: Option<Arc<ResourceSet>>);
    fn wants_to_send(&self) -> bool;
    fn on_heartbeat(&mut self);
    fn needs_heartbeats(&self) -> bool;
    fn next_response(&mut self) -> Option<Self::Response>;
    fn node(&self) -> Option<&Arc<Node>>;
    fn last_nack(&self, type_url: &str) -> Option<&Nack>;
    /// The version the client just ACKed, for callbacks.
    fn acked_version<'a>(&'a self, req: &'a Self::Request, type_url: &str) -> &'a str;
    /// Vetoes and observes the request through the callbacks.
    fn callback(callbacks: &dyn Callbacks, stream: &StreamInfo, req: &Self::Request) -> Result<(), Status>;
    /// The request's fields worth a debug line: (version, nonce, names).
    fn describe(req: &Self::Request) -> (String, &str, String);
    /// What the callbacks and logs say about a response of `bytes` bytes on the wire.
    fn response_info(resp: &Self::Response, bytes: usize) -> ResponseInfo<'_>;
    /// The response's version, as the response holds it (for the `/clients` status).
    fn response_version(resp: &Self::Response) -> &Arc<str>;
    /// Names in a response, for logs.
    fn response_names(resp: &Self::Response) -> String;
}

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const VARIANT: Variant = Variant::Sotw;

    fn bodies(shared: &Shared) -> &BodyCache<SotwResponse> {
        &shared.sotw_bodies
    }

    fn new(fixed_type: Option<&str>, shared: &Shared) -> Self {
        fixed_type.map_or_else(SotwStream::ads, SotwStream::for_type).with_settings(shared.stream_settings.clone())
    }
    fn on_request(&mut self, req: &DiscoveryRequest) -> Result<RequestInfo, xds_cache::Error> {
        SotwStream::on_request(self, req)
    }
    fn on_resources(&mut self, type_url: &str, set: Option<Arc<ResourceSet>>) {
        SotwStream::on_resources(self, type_url, set);
    }
    fn wants_to_send(&self) -> bool {
        SotwStream::wants_to_send(self)
    }
    fn on_heartbeat(&mut self) {
        SotwStream::on_heartbeat(self);
    }
    fn needs_heartbeats(&self) -> bool {
        SotwStream::needs_heartbeats(self)
    }
    fn next_response(&mut self) -> Option<SotwResponse> {
        SotwStream::next_response(self)
    }
    fn node(&self) -> Option<&Arc<Node>> {
        SotwStream::node(self)
    }
    fn last_nack(&self, type_url: &str) -> Option<&Nack> {
        SotwStream::last_nack(self, type_url)
    }
    fn acked_version<'a>(&'a self, req: &'a DiscoveryRequest, _type_url: &str) -> &'a str {
        &req.version_info
    }
    fn callback(callbacks: &dyn Callbacks, stream: &StreamInfo, req: &DiscoveryRequest) -> Result<(), Status> {
        callbacks.on_request(stream, req)
    }
    fn describe(req: &DiscoveryRequest) -> (String, &str, String) {
        (req.version_info.clone(), &req.response_nonce, names_for_log(req.resource_names.iter().map(String::as_str)))
    }
    fn response_info(r: &SotwResponse, bytes: usize) -> ResponseInfo<'_> {
        ResponseInfo {
            type_url: &r.type_url,
            version: &r.version,
            nonce: &r.nonce,
            resources: r.resources.len(),
            removed: 0,
            bytes,
        }
    }
    fn response_version(r: &SotwResponse) -> &Arc<str> {
        &r.version
    }
    fn response_names(r: &SotwResponse) -> String {
        names_for_log(r.resources.iter().map(|x| x.name()))
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const VARIANT: Variant = Variant::Delta;

    fn bodies(shared: &Shared) -> &BodyCache<DeltaResponse> {
        &shared.delta_bodies
    }

    fn new(fixed_type: Option<&str>, shared: &Shared) -> Self {
        fixed_type.map_or_else(DeltaStream::ads, DeltaStream::for_type).with_settings(shared.stream_settings.clone())
    }
    fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Result<RequestInfo, xds_cache::Error> {
        DeltaStream::on_request(self, req)
    }
    fn on_resources(&mut self, type_url: &str, set: Option<Arc<ResourceSet>>) {
        DeltaStream::on_resources(self, type_url, set);
    }
    fn wants_to_send(&self) -> bool {
        DeltaStream::wants_to_send(self)
    }
    fn on_heartbeat(&mut self) {
        DeltaStream::on_heartbeat(self);
    }
    fn needs_heartbeats(&self) -> bool {
        DeltaStream::needs_heartbeats(self)
    }
    fn next_response(&mut self) -> Option<DeltaResponse> {
        DeltaStream::next_response(self)
    }
    fn node(&self) -> Option<&Arc<Node>> {
        DeltaStream::node(self)
    }
    fn last_nack(&self, type_url: &str) -> Option<&Nack> {
        DeltaStream::last_nack(self, type_url)
    }
    fn acked_version<'a>(&'a self, _req: &'a DeltaDiscoveryRequest, type_url: &str) -> &'a str {
        DeltaStream::acked_version(self, type_url).unwrap_or_default()
    }
    fn callback(callbacks: &dyn Callbacks, stream: &StreamInfo, req: &DeltaDiscoveryRequest) -> Result<(), Status> {
        callbacks.on_delta_request(stream, req)
    }
    fn describe(req: &DeltaDiscoveryRequest) -> (String, &str, String) {
        let sub = names_for_log(req.resource_names_subscribe.iter().map(String::as_str));
        let unsub = names_for_log(req.resource_names_unsubscribe.iter().map(String::as_str));
        let mut names = format!("subscribe {sub} unsubscribe {unsub}");
        if !req.initial_resource_versions.is_empty() {
            names.push_str(&format!(" initial_resource_versions {}", req.initial_resource_versions.len()));
        }
        (String::new(), &req.response_nonce, names)
    }
    fn response_info(r: &DeltaResponse, bytes: usize) -> ResponseInfo<'_> {
        ResponseInfo {
            type_url: &r.type_url,
            version: &r.system_version,
            nonce: &r.nonce,
            resources: r.resources.len(),
            removed: r.removed.len(),
            bytes,
        }
    }
    fn response_version(r: &DeltaResponse) -> &Arc<str> {
        &r.system_version
    }
    fn response_names(r: &DeltaResponse) -> String {
        format!(
            "{} removed {}",
            names_for_log(r.resources.iter().map(|x| &*x.name)),
            names_for_log(r.removed.iter().map(|x| &**x))
        )
    }
}
