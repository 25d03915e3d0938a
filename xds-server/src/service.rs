//! The tonic services: ADS and every per-type discovery service, SotW and delta, all served by
//! one generic service type that routes on the gRPC method path.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use xds_cache::{DeltaStream, SotwResponse, SotwStream};
use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::type_url;

use crate::body::{InPieces, ResponseBody, ServedBody};
use crate::callbacks::Variant;
use crate::codec::XdsCodec;
use crate::protocol::Protocol;
use crate::requests::{RequestBody, Requests};
use crate::stream::{self, Peer, Shared};

/// One gRPC discovery service: its full name and the type it serves (`None` for ADS).
pub trait ServiceKind: Send + Sync + 'static {
    /// The gRPC service name, e.g. `envoy.service.cluster.v3.ClusterDiscoveryService`.
    const NAME: &'static str;
    /// The resource type of a per-type service; `None` for the aggregated service.
    const TYPE_URL: Option<&'static str>;
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident => $name:literal, $ty:expr;)*) => {
        /// Marker types naming each discovery service.
        pub mod kind {
            use super::*;
            $(
                $(#[$doc])*
                #[derive(Debug, Clone, Copy)]
                pub struct $kind;
                impl ServiceKind for $kind {
                    const NAME: &'static str = $name;
                    const TYPE_URL: Option<&'static str> = $ty;
                }
            )*
        }

        /// Every discovery service: its gRPC name and the type it serves (`None` for ADS).
        const SERVICES: &[(&str, Option<&str>)] = &[$(($name, $ty)),*];
    };
}

kinds! {
    /// `AggregatedDiscoveryService` (ADS): every type on one stream.
    Ads => "envoy.service.discovery.v3.AggregatedDiscoveryService", None;
    /// `ListenerDiscoveryService` (LDS).
    Lds => "envoy.service.listener.v3.ListenerDiscoveryService", Some(type_url::LISTENER);
    /// `RouteDiscoveryService` (RDS).
    Rds => "envoy.service.route.v3.RouteDiscoveryService", Some(type_url::ROUTE);
    /// `ScopedRoutesDiscoveryService` (SRDS).
    Srds => "envoy.service.route.v3.ScopedRoutesDiscoveryService", Some(type_url::SCOPED_ROUTE);
    /// `VirtualHostDiscoveryService` (VHDS, delta only).
    Vhds => "envoy.service.route.v3.VirtualHostDiscoveryService", Some(type_url::VIRTUAL_HOST);
    /// `ClusterDiscoveryService` (CDS).
    Cds => "envoy.service.cluster.v3.ClusterDiscoveryService", Some(type_url::CLUSTER);
    /// `EndpointDiscoveryService` (EDS).
    Eds => "envoy.service.endpoint.v3.EndpointDiscoveryService", Some(type_url::ENDPOINT);
    /// `LocalityEndpointDiscoveryService` (LEDS, delta only).
    Leds => "envoy.service.endpoint.v3.LocalityEndpointDiscoveryService", Some(type_url::LB_ENDPOINT);
    /// `SecretDiscoveryService` (SDS).
    Sds => "envoy.service.secret.v3.SecretDiscoveryService", Some(type_url::SECRET);
    /// `RuntimeDiscoveryService` (RTDS).
    Rtds => "envoy.service.runtime.v3.RuntimeDiscoveryService", Some(type_url::RUNTIME);
    /// `ExtensionConfigDiscoveryService` (ECDS).
    Ecds => "envoy.service.extension.v3.ExtensionConfigDiscoveryService", Some(type_url::EXTENSION_CONFIG);
}

/// A discovery service of kind `K`, ready to mount on a tonic server.
pub struct XdsService<K> {
    shared: Arc<Shared>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for XdsService<K> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), kind: PhantomData }
    }
}

impl<K> std::fmt::Debug for XdsService<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsService").finish_non_exhaustive()
    }
}

impl<K: ServiceKind> XdsService<K> {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, kind: PhantomData }
    }
}

impl<K: ServiceKind> NamedService for XdsService<K> {
    const NAME: &'static str = K::NAME;
}

/// The unary `Fetch*` methods: the current state of one type, once.
struct FetchMethod {
    shared: Arc<Shared>,
    type_url: &'static str,
}

impl UnaryService<DiscoveryRequest> for FetchMethod {
    type Response = SotwResponse;
    type Future = BoxFuture<Response<SotwResponse>, Status>;

    fn call(&mut self, request: Request<DiscoveryRequest>) -> Self::Future {
        let shared = self.shared.clone();
        let type_url = self.type_url;
        Box::pin(async move {
            let request = request.into_inner();
            match crate::fetch::fetch(&shared, type_url, &request).await? {
                Some(response) => Ok(Response::new(response)),
                None => Err(Status::aborted(format!(
                    "version {:?} of {} is current: nothing to fetch",
                    request.version_info,
                    type_url::short_name(type_url)
                ))),
            }
        })
    }
}

/// A streaming method: requests read by [`crate::requests`], responses written by
/// [`crate::body`] (tonic's decoder and encoder would keep two buffers per stream, and copy every
/// response into one). A refusal is the status to answer with.
fn serve<P: Protocol>(
    shared: Arc<Shared>,
    type_url: Option<&'static str>,
    peer: &Peer,
    req: http::Request<impl Into<RequestBody>>,
) -> Result<http::Response<ResponseBody>, Status> {
    if let Some(encoding) = req.headers().get("grpc-encoding").filter(|e| e.as_bytes() != b"identity") {
        return Err(Status::unimplemented(format!(
            "request compression {encoding:?} is not supported by this server; send uncompressed messages"
        )));
    }
    let requests = Requests::new(req.into_body().into(), shared.config.max_receive_message_size);
    let mut response = http::Response::new(stream::open::<P>(shared, type_url, peer, requests)?);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// A streaming discovery method, found from the request's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamMethod {
    variant: Variant,
    /// The type of a per-type service; `None` for ADS.
    type_url: Option<&'static str>,
}

impl StreamMethod {
    /// The streaming method at `path` (`/SERVICE/METHOD`), if it is one: `Stream*` (SotW) or
    /// `Delta*` of a discovery service.
    pub(crate) fn at(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let &(_, type_url) = SERVICES.iter().find(|(name, _)| *name == service)?;
        Self::named(type_url, method)
    }

    /// The method `method` of the service of `type_url` (`None`: ADS), if it is a stream.
    fn named(type_url: Option<&'static str>, method: &str) -> Option<Self> {
        let variant = if method.starts_with("Stream") {
            Variant::Sotw
        } else if method.starts_with("Delta") {
            Variant::Delta
        } else {
            return None;
        };
        Some(Self { variant, type_url })
    }

    fn open(
        self,
        shared: Arc<Shared>,
        peer: &Peer,
        req: http::Request<impl Into<RequestBody>>,
    ) -> Result<http::Response<ResponseBody>, Status> {
        match self.variant {
            Variant::Sotw => serve::<SotwStream>(shared, self.type_url, peer, req),
            Variant::Delta => serve::<DeltaStream>(shared, self.type_url, peer, req),
        }
    }

    /// Serves the stream of `req` from `peer`, or answers with the refusal's status.
    pub(crate) fn serve(
        self,
        shared: Arc<Shared>,
        peer: &Peer,
        req: http::Request<impl Into<RequestBody>>,
    ) -> http::Response<ServedBody> {
        match self.open(shared, peer, req) {
            Ok(response) => response.map(ServedBody::Stream),
            Err(status) => status.into_http().map(ServedBody::Tonic),
        }
    }
}

/// A streaming method's response as tonic's router serves it.
fn boxed(served: Result<http::Response<ResponseBody>, Status>) -> http::Response<Body> {
    match served {
        Ok(response) => response.map(|body| Body::new(InPieces::new(body))),
        Err(status) => status.into_http(),
    }
}

impl<K: ServiceKind> tonic::codegen::Service<http::Request<Body>> for XdsService<K> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let shared = self.shared.clone();
        Box::pin(async move {
            if let Some(stream) = StreamMethod::named(K::TYPE_URL, &method) {
                let (mut parts, body) = req.into_parts();
                let peer = Peer::of(std::mem::take(&mut parts.extensions));
                return Ok(boxed(stream.open(shared, &peer, http::Request::from_parts(parts, body))));
            }
            if let (true, Some(type_url)) = (method.starts_with("Fetch"), K::TYPE_URL) {
                let codec = XdsCodec::<DiscoveryRequest, SotwResponse>::default();
                let mut grpc =
                    Grpc::new(codec).apply_max_message_size_config(Some(shared.config.max_receive_message_size), None);
                return Ok(grpc.unary(FetchMethod { shared, type_url }, req).await);
            }
            Ok(Status::unimplemented(format!("{}/{method}: no such method", K::NAME)).into_http())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_methods_are_found_by_path_and_nothing_else_is() {
        let at = |path: &str| StreamMethod::at(path).map(|m| (m.variant, m.type_url));
        assert_eq!(
            at("/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"),
            Some((Variant::Sotw, None))
        );
        assert_eq!(
            at("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"),
            Some((Variant::Delta, None))
        );
        assert_eq!(
            at("/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"),
            Some((Variant::Delta, Some(type_url::CLUSTER)))
        );
        assert_eq!(
            at("/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"),
            Some((Variant::Sotw, Some(type_url::SECRET)))
        );
        // Unary methods, REST polling, other services and malformed paths go to the router.
        for path in [
            "/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters",
            "/v3/discovery:clusters",
            "/grpc.health.v1.Health/Watch",
            "/envoy.service.cluster.v3.ClusterDiscoveryService",
            "envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
            "",
        ] {
            assert_eq!(at(path), None, "{path}");
        }
    }
}
