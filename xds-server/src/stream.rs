//! The stream driver: one task per gRPC stream, owning the stream's protocol state machine.
//!
//! The task waits on three things at once: the client's next request, the next resource set of
//! any type the stream watches, and room in its outbox (only while the state machine has
//! something to send). The outbox ([`crate::body`]) holds a single response: when the client
//! reads slowly the task stops building responses, the watches keep only the latest set, and the
//! next response is built from the latest state once the client catches up. No lock is held across
//! an await; a stream never waits on another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use tracing::{debug, info, warn, Instrument};
use xds_cache::RequestKind;
use xds_core::{type_url, ResourceSource};

use crate::auth::{certificate_identities, NodeAuthorizer};
use crate::body::{self, BodyCache, Outbox, ResponseBody};
use crate::callbacks::{Callbacks, StreamInfo, Variant};
use crate::codec::Recycle;
use crate::conn::ConnExecutor;
use crate::error::{status_of, status_of_core};
use crate::metrics::{code_name, FailureLabel, Metrics, RequestLabel, VariantLabel};
use crate::protocol::Protocol;
use crate::requests::Requests;
use crate::status::{ClientRegistry, StreamHandle};
use crate::watches::Watches;

/// Limits and settings every stream reads.
#[derive(Debug, Clone)]
pub(crate) struct StreamConfig {
    pub max_receive_message_size: usize,
    pub heartbeat_interval: Duration,
}

/// What every stream shares.
pub(crate) struct Shared {
    pub source: Arc<dyn ResourceSource>,
    pub callbacks: Arc<dyn Callbacks>,
    pub authorizer: Option<Arc<dyn NodeAuthorizer>>,
    pub clients: Arc<ClientRegistry>,
    pub metrics: Option<Arc<Metrics>>,
    pub config: StreamConfig,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub next_stream_id: AtomicU64,
    /// Every stream's state machine's: the lists of subscribed names the streams share, and the
    /// limits of a subscription.
    pub stream_settings: xds_cache::StreamSettings,
    /// Encoded SotW response bodies shared between streams.
    pub sotw_bodies: BodyCache<xds_cache::SotwResponse>,
    /// Encoded delta response bodies shared between streams.
    pub delta_bodies: BodyCache<xds_cache::DeltaResponse>,
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

/// Who a stream's client is and where its stream runs: the same for every stream of a
/// connection.
#[derive(Clone, Default)]
pub(crate) struct Peer {
    pub addr: Option<SocketAddr>,
    /// Identities from the client certificate (mutual TLS).
    pub identities: Vec<String>,
    /// The connection's task, when served by `XdsServer::serve`; else the stream runs as a task
    /// of its own.
    pub connection: Option<ConnExecutor>,
}

impl Peer {
    /// The client of a connection or request, from the connect info tonic keeps in request
    /// extensions (address, and the certificate of a TLS connection). Runs its streams as tasks
    /// of their own until given a connection.
    pub(crate) fn of(extensions: http::Extensions) -> Self {
        let request = Request::from_parts(MetadataMap::new(), extensions, ());
        Self {
            addr: request.remote_addr(),
            identities: request
                .peer_certs()
                .and_then(|certs| certs.first().map(|c| certificate_identities(c.as_ref())))
                .unwrap_or_default(),
            connection: None,
        }
    }
}

/// Starts the task of a stream and returns the body its responses are written to.
pub(crate) fn open<P: Protocol>(
    shared: Arc<Shared>,
    type_url: Option<&'static str>,
    peer: &Peer,
    requests: Requests<P::Request>,
) -> Result<ResponseBody, Status> {
    let info = StreamInfo {
        id: shared.next_stream_id.fetch_add(1, Ordering::Relaxed),
        peer: peer.addr,
        variant: P::VARIANT,
        type_url,
        node: None,
        identities: peer.identities.clone(),
    };
    shared.callbacks.on_stream_open(&info)?;
    let (outbox, body) = body::outbox();
    let span = tracing::debug_span!(
        "xds_stream",
        id = info.id,
        peer = %peer_str(info.peer),
        api = type_url.map_or("ADS", type_url::short_name),
        variant = ?P::VARIANT,
    );
    // On the task of the stream's connection when served by `XdsServer::serve`, else on its own.
    let task = shared.tasks.clone().track_future(run::<P>(shared, info, requests, outbox).instrument(span));
    match &peer.connection {
        Some(connection) => connection.spawn(Box::pin(task)),
        None => drop(tokio::spawn(task)),
    }
    Ok(body)
}

fn peer_str(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

async fn run<P: Protocol>(shared: Arc<Shared>, info: StreamInfo, mut requests: Requests<P::Request>, outbox: Outbox) {
    debug!("stream opened");
    let variant = match P::VARIANT {
        Variant::Sotw => "sotw",
        _ => "delta",
    };
    let status = shared.clients.open(StreamHandle::new_status(
        info.id,
        peer_str(info.peer),
        info.identities.clone(),
        variant,
        info.type_url.map_or("ADS", type_url::short_name),
    ));
    if let Some(m) = &shared.metrics {
        m.streams_open.get_or_create(&VariantLabel { variant }).inc();
        m.streams_total.get_or_create(&VariantLabel { variant }).inc();
    }
    let mut ctx = Ctx { info, status, pushes: HashMap::new() };
    let mut machine = P::new(ctx.info.type_url, &shared);
    let mut watches = Watches::default();
    let mut heartbeats = tokio::time::interval(shared.config.heartbeat_interval);
    heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The timer runs only while the stream holds resources with a TTL.
    let mut heartbeats_armed = false;
    // Registered with the server's token once: a `cancelled()` future made per iteration would
    // take the token's lock twice per request and response of every stream.
    let shutdown = shared.shutdown.clone().cancelled_owned();
    tokio::pin!(shutdown);
    let result: Result<(), Status> = loop {
        let needs_heartbeats = machine.needs_heartbeats();
        if needs_heartbeats && !heartbeats_armed {
            heartbeats.reset(); // the first heartbeat one interval from now
        }
        heartbeats_armed = needs_heartbeats;
        tokio::select! {
            biased;
            () = &mut shutdown => break Err(Status::unavailable("the xDS server is shutting down; reconnect to another replica")),
            ready = outbox.ready(), if machine.wants_to_send() => {
                if ready.is_err() {
                    break Ok(()); // the client went away
                }
                if let Some(response) = machine.next_response() {
                    match body::encode(&response, P::bodies(&shared)) {
                        Ok((frames, bytes)) => {
                            on_response::<P>(&shared, &mut ctx, &response, bytes);
                            outbox.send(Ok(frames));
                        }
                        Err(status) => break Err(status),
                    }
                }
            }
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if let Err(status) = on_request(&shared, &mut ctx, &mut machine, &mut watches, &request).await {
                        break Err(status);
                    }
                    // A later request is decoded into this one's allocations.
                    request.give_back();
                }
                Ok(None) => break Ok(()),
                // A request that does not decode or is too large: tell the client why.
                Err(status) if matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Unimplemented) => {
                    break Err(status);
                }
                Err(status) => {
                    debug!(%status, "the client's request stream ended with an error");
                    break Ok(());
                }
            },
            _ = heartbeats.tick(), if needs_heartbeats => machine.on_heartbeat(),
            Some((type_url, resources)) = watches.next(), if !watches.is_empty() => {
                if let Some(set) = &resources {
                    debug!(r#type = type_url::short_name(&type_url), version = set.version(), resources = set.len(), "new resources");
                }
                ctx.pushes.entry(type_url.clone()).or_insert_with(Instant::now);
                machine.on_resources(&type_url, resources);
            }
        }
    };
    match &result {
        Ok(()) => debug!("stream closed"),
        Err(status) => {
            info!(code = ?status.code(), message = status.message(), "stream closed with error");
            if let Some(m) = &shared.metrics {
                m.streams_failed.get_or_create(&FailureLabel { variant, code: code_name(status.code()) }).inc();
            }
            // Best effort: a client that stopped reading must not keep the task alive.
            let ended = async {
                if outbox.ready().await.is_ok() {
                    outbox.send(Err(status.clone()));
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), ended).await;
        }
    }
    shared.clients.close(ctx.info.id);
    if let Some(m) = &shared.metrics {
        m.streams_open.get_or_create(&VariantLabel { variant }).dec();
    }
    shared.callbacks.on_stream_closed(&ctx.info, result.as_ref().err());
}

/// What a stream task keeps beside its state machine.
struct Ctx {
    info: StreamInfo,
    status: StreamHandle,
    /// Per type: when the stream learned of resources not yet sent (for the push latency).
    pushes: HashMap<Arc<str>, Instant>,
}

async fn on_request<P: Protocol>(
    shared: &Shared,
    ctx: &mut Ctx,
    machine: &mut P,
    watches: &mut Watches,
    request: &P::Request,
) -> Result<(), Status> {
    P::callback(&*shared.callbacks, &ctx.info, request)?;
    let applied = machine.on_request(request).map_err(status_of)?;
    if ctx.info.node.is_none() {
        let node = machine.node().cloned().unwrap_or_default();
        if let Some(authorizer) = &shared.authorizer {
            authorizer.authorize(&ctx.info.identities, &node).map_err(Status::permission_denied)?;
        }
        ctx.status.set_node(&node.id, &node.cluster);
        ctx.info.node = Some(node);
    }
    let info = &ctx.info;
    let node_id = info.node.as_ref().map_or("", |n| n.id.as_str());
    let short = type_url::short_name(&applied.type_url);
    // Formatting the names costs allocations on every request: only when a line will be written.
    let described = tracing::enabled!(tracing::Level::DEBUG) || matches!(applied.kind, RequestKind::Nack { .. });
    let (version, nonce, names) = if described { P::describe(request) } else { Default::default() };
    let version = version.as_str();
    let kind = match &applied.kind {
        RequestKind::Initial => {
            debug!(node = node_id, r#type = short, version, nonce, names, "request");
            ctx.status.subscribed(&applied.type_url);
            "initial"
        }
        RequestKind::Ack => {
            debug!(node = node_id, r#type = short, version, nonce, names, "ACK");
            let acked = machine.acked_version(request, &applied.type_url);
            ctx.status.acked(&applied.type_url, acked);
            shared.callbacks.on_ack(info, &applied.type_url, acked);
            "ack"
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
                ctx.status.nacked(&applied.type_url, &nack.rejected_version, &nack.detail);
                shared.callbacks.on_nack(info, &applied.type_url, nack);
            }
            "nack"
        }
        RequestKind::Stale => {
            debug!(node = node_id, r#type = short, version, nonce, names, "request with a stale nonce");
            "stale"
        }
        _ => "other",
    };
    if let Some(m) = &shared.metrics {
        m.requests.get_or_create(&RequestLabel { r#type: Metrics::type_name(&applied.type_url), kind }).inc();
    }
    if applied.new_type {
        let node = info.node.clone().unwrap_or_default();
        let watch = shared.source.watch(&node, &applied.type_url).await.map_err(status_of_core)?;
        watches.insert(applied.type_url.clone(), watch);
    }
    Ok(())
}

fn on_response<P: Protocol>(shared: &Shared, ctx: &mut Ctx, r: &P::Response, bytes: usize) {
    let ri = P::response_info(r, bytes);
    debug!(
        node = ctx.info.node.as_ref().map_or("", |n| n.id.as_str()),
        r#type = type_url::short_name(ri.type_url),
        version = ri.version,
        nonce = ri.nonce,
        resources = P::response_names(r),
        bytes = ri.bytes,
        "response"
    );
    ctx.status.sent(ri.type_url, P::response_version(r), ri.bytes);
    if let Some(m) = &shared.metrics {
        let label = Metrics::type_label(ri.type_url);
        m.responses.get_or_create(&label).inc();
        m.response_bytes.get_or_create(&label).inc_by(ri.bytes as u64);
        m.resources_sent.get_or_create(&label).inc_by(ri.resources as u64);
        if let Some(since) = ctx.pushes.remove(ri.type_url) {
            m.push_latency.get_or_create(&label).observe(since.elapsed().as_secs_f64());
        }
    } else {
        ctx.pushes.remove(ri.type_url);
    }
    shared.callbacks.on_response(&ctx.info, &ri);
}
