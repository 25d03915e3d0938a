//! The stream driver: one task per gRPC stream, owning the stream's protocol state machine.
//!
//! The task waits on three things at once: the client's next request, the next resource set of
//! any type the stream watches, and capacity on the response channel (only while the state
//! machine has something to send). The channel holds a single response: when the client reads
//! slowly the task stops building responses, the watches keep only the latest set, and the next
//! response is built from the latest state once the client catches up. No lock is held across
//! an await; a stream never waits on another.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_stream::{StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn, Instrument};
use xds_cache::{RequestKind, SotwResponse, SotwStream};
use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::{type_url, ResourceSet, ResourceSource};

use crate::callbacks::{Callbacks, ResponseInfo, StreamInfo, Variant};
use crate::codec::sotw_encoded_len;
use crate::error::{status_of, status_of_core};

/// Limits and settings every stream reads.
#[derive(Debug, Clone)]
pub(crate) struct StreamConfig {
    pub max_receive_message_size: usize,
}

/// What every stream shares.
pub(crate) struct Shared {
    pub source: Arc<dyn ResourceSource>,
    pub callbacks: Arc<dyn Callbacks>,
    pub config: StreamConfig,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub next_stream_id: AtomicU64,
}

/// How many names a log line shows before it says "and N more".
const LOG_NAMES: usize = 5;

pub(crate) fn names_for_log<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = names.len();
    let mut shown: Vec<&str> = names.take(LOG_NAMES).collect();
    if total > LOG_NAMES {
        shown.push("...");
    }
    format!("{total} [{}]", shown.join(", "))
}

/// Starts the task of a SotW stream and returns the response stream tonic sends from.
pub(crate) fn open_sotw(
    shared: Arc<Shared>,
    type_url: Option<&'static str>,
    request: Request<Streaming<DiscoveryRequest>>,
) -> Result<Response<ReceiverStream<Result<SotwResponse, Status>>>, Status> {
    let info = StreamInfo {
        id: shared.next_stream_id.fetch_add(1, Ordering::Relaxed),
        peer: request.remote_addr(),
        variant: Variant::Sotw,
        type_url,
        node: None,
    };
    shared.callbacks.on_stream_open(&info)?;
    let (tx, rx) = mpsc::channel(1);
    let span = tracing::debug_span!("xds_stream", id = info.id, peer = %peer_str(info.peer), api = type_url.map_or("ADS", type_url::short_name));
    let requests = request.into_inner();
    shared.tasks.clone().spawn(run_sotw(shared, info, requests, tx).instrument(span));
    Ok(Response::new(ReceiverStream::new(rx)))
}

fn peer_str(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

async fn run_sotw(
    shared: Arc<Shared>,
    mut info: StreamInfo,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<SotwResponse, Status>>,
) {
    debug!("stream opened");
    let mut machine = match info.type_url {
        Some(t) => SotwStream::for_type(t),
        None => SotwStream::ads(),
    };
    let mut watches: StreamMap<Arc<str>, WatchStream<Option<Arc<ResourceSet>>>> = StreamMap::new();
    let result: Result<(), Status> = loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break Err(Status::unavailable("the xDS server is shutting down; reconnect to another replica")),
            permit = tx.reserve(), if machine.wants_to_send() => {
                let Ok(permit) = permit else { break Ok(()) }; // the client went away
                if let Some(response) = machine.next_response() {
                    log_response(&shared, &info, &response);
                    permit.send(Ok(response));
                }
            }
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if let Err(status) = on_request(&shared, &mut info, &mut machine, &mut watches, &request).await {
                        break Err(status);
                    }
                }
                Ok(None) => break Ok(()),
                // A request that does not decode or is too large: tell the client why.
                Err(status) if matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted) => {
                    break Err(status);
                }
                Err(status) => {
                    debug!(%status, "the client's request stream ended with an error");
                    break Ok(());
                }
            },
            Some((type_url, resources)) = watches.next(), if !watches.is_empty() => {
                if let Some(set) = &resources {
                    debug!(r#type = type_url::short_name(&type_url), version = set.version(), resources = set.len(), "new resources");
                }
                machine.on_resources(&type_url, resources);
            }
        }
    };
    match &result {
        Ok(()) => debug!("stream closed"),
        Err(status) => {
            info!(code = ?status.code(), message = status.message(), "stream closed with error");
            // Best effort: a client that stopped reading must not keep the task alive.
            let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(status.clone()))).await;
        }
    }
    shared.callbacks.on_stream_closed(&info, result.as_ref().err());
}

async fn on_request(
    shared: &Shared,
    info: &mut StreamInfo,
    machine: &mut SotwStream,
    watches: &mut StreamMap<Arc<str>, WatchStream<Option<Arc<ResourceSet>>>>,
    request: &DiscoveryRequest,
) -> Result<(), Status> {
    shared.callbacks.on_request(info, request)?;
    let applied = machine.on_request(request).map_err(status_of)?;
    if info.node.is_none() {
        info.node = machine.node().cloned();
    }
    let node_id = info.node.as_ref().map_or("", |n| n.id.as_str());
    let short = type_url::short_name(&applied.type_url);
    let names = names_for_log(request.resource_names.iter().map(String::as_str));
    let version = request.version_info.as_str();
    let nonce = request.response_nonce.as_str();
    match &applied.kind {
        RequestKind::Initial => debug!(node = node_id, r#type = short, version, nonce, names, "request"),
        RequestKind::Ack => {
            debug!(node = node_id, r#type = short, version, nonce, names, "ACK");
            shared.callbacks.on_ack(info, &applied.type_url, version);
        }
        RequestKind::Nack { detail } => {
            warn!(
                node = node_id,
                r#type = short,
                version,
                nonce,
                names,
                error = detail.as_str(),
                "NACK: the client rejected the configuration"
            );
            if let Some(nack) = machine.last_nack(&applied.type_url) {
                shared.callbacks.on_nack(info, &applied.type_url, nack);
            }
        }
        RequestKind::Stale => debug!(node = node_id, r#type = short, version, nonce, names, "stale request ignored"),
        _ => {}
    }
    if applied.new_type {
        let node = machine.node().cloned().unwrap_or_default();
        let watch = shared.source.watch(&node, &applied.type_url).await.map_err(status_of_core)?;
        watches.insert(applied.type_url.clone(), WatchStream::new(watch));
    }
    Ok(())
}

fn log_response(shared: &Shared, info: &StreamInfo, r: &SotwResponse) {
    let bytes = sotw_encoded_len(r);
    debug!(
        node = info.node.as_ref().map_or("", |n| n.id.as_str()),
        r#type = type_url::short_name(&r.type_url),
        version = &*r.version,
        nonce = &*r.nonce,
        resources = names_for_log(r.resources.iter().map(|x| x.name())),
        bytes,
        "response"
    );
    shared.callbacks.on_response(
        info,
        &ResponseInfo {
            type_url: &r.type_url,
            version: &r.version,
            nonce: &r.nonce,
            resources: r.resources.len(),
            removed: 0,
            bytes,
        },
    );
}
