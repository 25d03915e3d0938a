//! One simulated Envoy: an ADS stream (SotW or delta) that subscribes to clusters and listeners
//! by wildcard, then to the endpoints and routes they name, decodes every resource into its
//! Envoy type and ACKs each response as Envoy does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Streaming;
use xds_core::envoy::config::cluster::v3::Cluster;
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_core::envoy::config::listener::v3::{filter, Listener};
use xds_core::envoy::config::route::v3::RouteConfiguration;
use xds_core::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_core::prost::{Message, Name};
use xds_core::type_url;

use super::record::Recorder;
use super::wire::{self, WireAny, WireDeltaResponse, WireResponse};
use crate::scenario::cla_generation;

/// Largest response a client accepts (a SotW EDS response of 10,000 clusters is a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// What a stream must have received to count an update as arrived: `generation` for
/// `cluster` (or for every cluster when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Index of the update in the run; `None` before the first update.
    pub index: Option<usize>,
    /// The generation the update sets.
    pub generation: u32,
    /// The changed cluster, or `None` when every cluster changes.
    pub cluster: Option<String>,
}

/// Which protocol variant a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// State of the world (`StreamAggregatedResources`).
    Sotw,
    /// Incremental (`DeltaAggregatedResources`).
    Delta,
}

/// Everything a stream task needs.
#[derive(Clone)]
pub struct StreamCtx {
    /// The stream's index in the recorder.
    pub index: usize,
    /// The node id it sends.
    pub node_id: String,
    /// SotW or delta.
    pub variant: Variant,
    /// Where results go.
    pub recorder: Arc<Recorder>,
    /// The update currently expected.
    pub target: watch::Receiver<Target>,
    /// Ends the stream.
    pub stop: CancellationToken,
    /// Stop reading once the full state is held (a stalled client).
    pub stall: bool,
}

/// What the client holds. Every resource is decoded in full into its Envoy type; only what
/// the client needs later is kept (the generator would otherwise hold gigabytes for 10,000
/// streams, where each Envoy holds its own copy).
#[derive(Default)]
struct Held {
    /// Cluster name → the EDS name it needs.
    clusters: HashMap<String, String>,
    /// EDS name → generation of the held assignment.
    endpoints: HashMap<String, u32>,
    /// Listener name → the route configurations it needs.
    listeners: HashMap<String, Vec<String>>,
    routes: HashSet<String>,
    full: bool,
    /// Last update index recorded as arrived.
    recorded: Option<usize>,
}

/// The route configurations a listener's HTTP connection managers take from RDS.
fn rds_names_of(l: &Listener) -> Vec<String> {
    let mut names = Vec::new();
    let api = l.api_listener.as_ref().and_then(|a| a.api_listener.as_ref());
    let chained = l.filter_chains.iter().flat_map(|fc| &fc.filters).filter_map(|f| match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    });
    for any in api.into_iter().chain(chained) {
        if any.type_url != HttpConnectionManager::type_url() {
            continue;
        }
        if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                names.push(rds.route_config_name);
            }
        }
    }
    names
}

impl Held {
    /// EDS names the held clusters need.
    fn eds_names(&self) -> BTreeSet<String> {
        self.clusters.values().cloned().collect()
    }

    /// Route configurations the held listeners need.
    fn rds_names(&self) -> BTreeSet<String> {
        self.listeners.values().flatten().cloned().collect()
    }

    fn decode_cluster(&mut self, value: &[u8]) -> Result<String, String> {
        let c = Cluster::decode(value).map_err(|e| format!("cluster: {e}"))?;
        let eds = match c.eds_cluster_config.as_ref().map(|e| e.service_name.as_str()) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => c.name.clone(),
        };
        self.clusters.insert(c.name.clone(), eds);
        Ok(c.name)
    }

    fn decode_endpoints(&mut self, value: &[u8]) -> Result<String, String> {
        let cla = ClusterLoadAssignment::decode(value).map_err(|e| format!("endpoints: {e}"))?;
        let generation = cla_generation(&cla);
        match self.endpoints.get_mut(&cla.cluster_name) {
            Some(held) => *held = generation,
            None => drop(self.endpoints.insert(cla.cluster_name.clone(), generation)),
        }
        Ok(cla.cluster_name)
    }

    fn decode_listener(&mut self, value: &[u8]) -> Result<String, String> {
        let l = Listener::decode(value).map_err(|e| format!("listener: {e}"))?;
        self.listeners.insert(l.name.clone(), rds_names_of(&l));
        Ok(l.name)
    }

    fn decode_route(&mut self, value: &[u8]) -> Result<String, String> {
        let r = RouteConfiguration::decode(value).map_err(|e| format!("route: {e}"))?;
        self.routes.insert(r.name.clone());
        Ok(r.name)
    }

    /// Decodes one resource of `type_url` into the held state; returns its name.
    fn decode(&mut self, type_url: &str, any: &WireAny) -> Result<String, String> {
        if any.type_url != type_url {
            return Err(format!("resource of type {} in a {type_url} response", any.type_url));
        }
        match type_url {
            type_url::CLUSTER => self.decode_cluster(&any.value),
            type_url::ENDPOINT => self.decode_endpoints(&any.value),
            type_url::LISTENER => self.decode_listener(&any.value),
            type_url::ROUTE => self.decode_route(&any.value),
            other => Err(format!("unexpected type {other}")),
        }
    }

    fn remove(&mut self, type_url: &str, name: &str) {
        match type_url {
            type_url::CLUSTER => drop(self.clusters.remove(name)),
            type_url::ENDPOINT => drop(self.endpoints.remove(name)),
            type_url::LISTENER => drop(self.listeners.remove(name)),
            type_url::ROUTE => drop(self.routes.remove(name)),
            _ => {}
        }
    }

    /// Records full state and arrived updates after a response.
    fn check(&mut self, ctx: &StreamCtx, seen_cds: bool, seen_lds: bool) {
        if !self.full
            && seen_cds
            && seen_lds
            && self.eds_names().iter().all(|n| self.endpoints.contains_key(n))
            && self.rds_names().iter().all(|n| self.routes.contains(n))
        {
            self.full = true;
            ctx.recorder.full_state(ctx.index);
        }
        let target = ctx.target.borrow().clone();
        let Some(index) = target.index else { return };
        if self.recorded == Some(index) || !self.full {
            return;
        }
        let arrived = match &target.cluster {
            Some(name) => self.endpoints.get(name).is_some_and(|g| *g >= target.generation),
            None => !self.endpoints.is_empty() && self.endpoints.values().all(|g| *g >= target.generation),
        };
        if arrived {
            self.recorded = Some(index);
            ctx.recorder.updated(index, ctx.index);
        }
    }
}

fn node(id: &str) -> Node {
    Node { id: id.into(), cluster: "load".into(), ..Default::default() }
}

/// Runs one stream over `channel` until `ctx.stop` is cancelled or the stream fails; failures
/// are recorded.
/// `permit` (admission while connecting) is released once the stream is open.
pub async fn run(channel: Channel, ctx: StreamCtx, permit: Option<OwnedSemaphorePermit>) {
    let result = match ctx.variant {
        Variant::Sotw => run_sotw(channel, &ctx, permit).await,
        Variant::Delta => run_delta(channel, &ctx, permit).await,
    };
    if let Err(e) = result {
        ctx.recorder.error(ctx.index, e);
    }
}

/// Waits for the next message unless the run stops (`Ok(None)`); a stalled stream stops
/// reading once it holds the full state.
async fn next<T>(rx: &mut Streaming<T>, ctx: &StreamCtx, held: &Held) -> Result<Option<T>, String> {
    if ctx.stall && held.full {
        ctx.stop.cancelled().await;
        return Ok(None);
    }
    tokio::select! {
        () = ctx.stop.cancelled() => Ok(None),
        m = rx.message() => match m {
            Ok(Some(m)) => Ok(Some(m)),
            Ok(None) => Err("the server ended the stream".into()),
            Err(status) => Err(format!("stream error: {:?} {}", status.code(), status.message())),
        },
    }
}

#[derive(Default)]
struct SotwType {
    version: String,
    nonce: String,
    names: Vec<String>,
}

/// The types a simulated Envoy subscribes to, as `'static` keys; any other is an error.
fn simulated_type(t: &str) -> Result<&'static str, String> {
    match t {
        type_url::CLUSTER => Ok(type_url::CLUSTER),
        type_url::ENDPOINT => Ok(type_url::ENDPOINT),
        type_url::LISTENER => Ok(type_url::LISTENER),
        type_url::ROUTE => Ok(type_url::ROUTE),
        other => Err(format!("unexpected type {other}")),
    }
}

fn open_failed(s: &tonic::Status) -> String {
    let mut text = format!("open: {:?} {}", s.code(), s.message());
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

async fn run_sotw(channel: Channel, ctx: &StreamCtx, permit: Option<OwnedSemaphorePermit>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    let send = |req: DiscoveryRequest| {
        let tx = tx.clone();
        async move { tx.send(req).await.map_err(|_| "request stream closed".to_string()) }
    };
    let request = |type_url: &str, t: &SotwType| DiscoveryRequest {
        type_url: type_url.into(),
        version_info: t.version.clone(),
        response_nonce: t.nonce.clone(),
        resource_names: t.names.clone(),
        ..Default::default()
    };
    // Envoy starts with clusters and listeners, by (legacy) wildcard.
    send(DiscoveryRequest { node: Some(node(&ctx.node_id)), type_url: type_url::CLUSTER.into(), ..Default::default() })
        .await?;
    send(DiscoveryRequest { type_url: type_url::LISTENER.into(), ..Default::default() }).await?;
    ctx.recorder.opened(ctx.index);
    let mut rx = wire::open::<_, WireResponse>(channel, wire::SOTW_PATH, ReceiverStream::new(rx), MAX_RESPONSE_BYTES)
        .await
        .map_err(|s| open_failed(&s))?;
    drop(permit);
    let mut held = Held::default();
    let mut types: HashMap<&'static str, SotwType> = HashMap::new();
    let (mut seen_cds, mut seen_lds) = (false, false);
    while let Some(resp) = next(&mut rx, ctx, &held).await? {
        ctx.recorder.received(resp.encoded_len(), resp.resources.len());
        let t = simulated_type(&resp.type_url)?;
        let names = decode_sotw(&mut held, t, &resp)?;
        // Full-state types: what is missing was deleted.
        if t == type_url::CLUSTER || t == type_url::LISTENER {
            let keep: BTreeSet<&String> = names.iter().collect();
            if t == type_url::CLUSTER {
                held.clusters.retain(|n, _| keep.contains(n));
            } else {
                held.listeners.retain(|n, _| keep.contains(n));
            }
        }
        let state = types.entry(t).or_default();
        state.version = resp.version_info.clone();
        state.nonce = resp.nonce.clone();
        let ack = request(t, state);
        // Envoy subscribes to the children of new clusters and listeners.
        let child = match t {
            type_url::CLUSTER => Some((type_url::ENDPOINT, held.eds_names())),
            type_url::LISTENER => Some((type_url::ROUTE, held.rds_names())),
            _ => None,
        };
        if let Some((child, wanted)) = child {
            let c = types.entry(child).or_default();
            let wanted: Vec<String> = wanted.into_iter().collect();
            if c.names != wanted {
                c.names = wanted;
                let keep: BTreeSet<&String> = c.names.iter().collect();
                if child == type_url::ENDPOINT {
                    held.endpoints.retain(|n, _| keep.contains(n));
                } else {
                    held.routes.retain(|n| keep.contains(n));
                }
                let sub = request(child, c);
                send(sub).await?;
            }
        }
        send(ack).await?;
        seen_cds |= t == type_url::CLUSTER;
        seen_lds |= t == type_url::LISTENER;
        held.check(ctx, seen_cds, seen_lds);
    }
    Ok(())
}

fn decode_sotw(held: &mut Held, t: &str, resp: &WireResponse) -> Result<Vec<String>, String> {
    resp.resources.iter().map(|any| held.decode(t, any)).collect()
}

async fn run_delta(channel: Channel, ctx: &StreamCtx, permit: Option<OwnedSemaphorePermit>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(8);
    let send = |req: DeltaDiscoveryRequest| {
        let tx = tx.clone();
        async move { tx.send(req).await.map_err(|_| "request stream closed".to_string()) }
    };
    send(DeltaDiscoveryRequest {
        node: Some(node(&ctx.node_id)),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await?;
    send(DeltaDiscoveryRequest { type_url: type_url::LISTENER.into(), ..Default::default() }).await?;
    ctx.recorder.opened(ctx.index);
    let mut rx =
        wire::open::<_, WireDeltaResponse>(channel, wire::DELTA_PATH, ReceiverStream::new(rx), MAX_RESPONSE_BYTES)
            .await
            .map_err(|s| open_failed(&s))?;
    drop(permit);
    let mut held = Held::default();
    let mut subscribed: HashMap<&'static str, BTreeSet<String>> = HashMap::new();
    let (mut seen_cds, mut seen_lds) = (false, false);
    while let Some(resp) = next::<WireDeltaResponse>(&mut rx, ctx, &held).await? {
        ctx.recorder.received(resp.encoded_len(), resp.resources.len());
        let t = simulated_type(&resp.type_url)?;
        for r in &resp.resources {
            let any = r.resource.as_ref().ok_or_else(|| format!("{t} resource {} without a body", r.name))?;
            let name = held.decode(t, any)?;
            if name != r.name {
                return Err(format!("resource {} sent under the name {}", name, r.name));
            }
        }
        for name in &resp.removed_resources {
            held.remove(t, name);
        }
        // ACK first, then subscribe to the children (as Envoy does after warming).
        send(DeltaDiscoveryRequest { type_url: t.into(), response_nonce: resp.nonce.clone(), ..Default::default() })
            .await?;
        let child = match t {
            type_url::CLUSTER => Some((type_url::ENDPOINT, held.eds_names())),
            type_url::LISTENER => Some((type_url::ROUTE, held.rds_names())),
            _ => None,
        };
        if let Some((child, wanted)) = child {
            let have = subscribed.entry(child).or_default();
            let subscribe: Vec<String> = wanted.difference(have).cloned().collect();
            let unsubscribe: Vec<String> = have.difference(&wanted).cloned().collect();
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                for n in &unsubscribe {
                    held.remove(child, n);
                }
                *have = wanted;
                send(DeltaDiscoveryRequest {
                    type_url: child.into(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                })
                .await?;
            }
        }
        seen_cds |= t == type_url::CLUSTER;
        seen_lds |= t == type_url::LISTENER;
        held.check(ctx, seen_cds, seen_lds);
    }
    Ok(())
}
