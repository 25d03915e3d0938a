//! One-shot discovery: REST-JSON polling (`POST /v3/discovery:clusters`, ...) and the gRPC
//! unary `Fetch*` methods. Both answer one `DiscoveryRequest` with the current state, through
//! the same SotW state machine as streams, and say "not modified" when the client's
//! `version_info` is already current (REST answers `304`).
//!
//! REST has no ADS and no delta; the nonce is optional.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tonic::Status;
use xds_cache::{SotwResponse, SotwStream};
use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::{prost::Message, type_url};

use crate::error::{status_of, status_of_core};
use crate::stream::Shared;

/// How long a fetch waits for a source that has nothing yet for the node.
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The REST path of each type, as Envoy's `api_type: REST` config sources use them.
pub(crate) const REST_PATHS: &[(&str, &str)] = &[
    ("/v3/discovery:clusters", type_url::CLUSTER),
    ("/v3/discovery:endpoints", type_url::ENDPOINT),
    ("/v3/discovery:listeners", type_url::LISTENER),
    ("/v3/discovery:routes", type_url::ROUTE),
    ("/v3/discovery:scoped-routes", type_url::SCOPED_ROUTE),
    ("/v3/discovery:secrets", type_url::SECRET),
    ("/v3/discovery:runtime", type_url::RUNTIME),
    ("/v3/discovery:extension_configs", type_url::EXTENSION_CONFIG),
];

/// The answer to one fetch: `None` when the client's version is current.
pub(crate) async fn fetch(
    shared: &Shared,
    type_url: &'static str,
    request: &DiscoveryRequest,
) -> Result<Option<SotwResponse>, Status> {
    let mut machine = SotwStream::for_type(type_url);
    let mut request = request.clone();
    request.response_nonce.clear(); // a fetch is always a fresh request
    machine.on_request(&request).map_err(status_of)?;
    let node = machine.node().cloned().unwrap_or_default();
    if let Some(authorizer) = &shared.authorizer {
        // REST carries no client certificate identity through this path.
        authorizer.authorize(&[], &node).map_err(Status::permission_denied)?;
    }
    let mut watch = shared.source.watch(&node, type_url).await.map_err(status_of_core)?;
    let set = match tokio::time::timeout(FETCH_WAIT, watch.wait_for(Option::is_some)).await {
        Ok(Ok(set)) => set.clone(),
        _ => return Err(Status::unavailable(format!("no configuration for node {:?} yet; retry later", node.id))),
    };
    if set.as_ref().is_some_and(|s| s.version() == request.version_info) {
        return Ok(None);
    }
    machine.on_resources(type_url, set);
    Ok(machine.next_response())
}

fn rest_error(status: &Status) -> Response {
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, format!("{}\n", status.message())).into_response()
}

/// `POST /v3/discovery:<type>` with a JSON `DiscoveryRequest`.
pub(crate) async fn rest(State((shared, type_url)): State<(Arc<Shared>, &'static str)>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let request = match xds_core::json::from_json("envoy.service.discovery.v3.DiscoveryRequest", &text)
        .map_err(|e| e.to_string())
        .and_then(|bytes| DiscoveryRequest::decode(bytes.as_slice()).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("malformed DiscoveryRequest JSON: {e}\n")).into_response(),
    };
    match fetch(&shared, type_url, &request).await {
        Ok(None) => StatusCode::NOT_MODIFIED.into_response(),
        Ok(Some(response)) => {
            let mut bytes = Vec::new();
            crate::codec::WireMessage::write_to(&response, &mut bytes);
            match xds_core::json::to_json("envoy.service.discovery.v3.DiscoveryResponse", &bytes) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response(),
                Err(e) => rest_error(&Status::internal(e.to_string())),
            }
        }
        Err(status) => rest_error(&status),
    }
}
