//! What every connected client holds: the data behind an admin `/clients` page, in the spirit
//! of `istioctl proxy-status`.
//!
//! Each stream task owns the status of its stream and updates it as requests and responses go
//! by (an uncontended lock per stream); readers take a copy. The registry lock is taken only to
//! add or remove a stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;
use xds_core::type_url;

/// Seconds since the Unix epoch, for JSON.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Sets `slot` to `value`, reusing its allocation.
fn set_str(slot: &mut Option<String>, value: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(value);
        }
        None => *slot = Some(value.to_string()),
    }
}

/// The last NACK of a type.
#[derive(Debug, Clone, Serialize)]
pub struct NackStatus {
    /// The version the client rejected.
    pub rejected_version: String,
    /// The client's error text.
    pub error: String,
    /// When (seconds since the Unix epoch).
    pub at: f64,
}

/// One type on one stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Short name (`CDS`, ...) or the type URL of a non-standard type.
    pub r#type: String,
    /// The last version sent.
    pub last_sent_version: Option<String>,
    /// When it was sent (seconds since the Unix epoch).
    pub last_sent_at: Option<f64>,
    /// The last version the client ACKed.
    pub last_acked_version: Option<String>,
    /// When (seconds since the Unix epoch).
    pub last_acked_at: Option<f64>,
    /// The last NACK, until the next ACK.
    pub last_nack: Option<NackStatus>,
    /// Responses sent.
    pub responses: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// One stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Stream id (unique per server).
    pub stream_id: u64,
    /// `node.id`, once known.
    pub node_id: String,
    /// `node.cluster`.
    pub node_cluster: String,
    /// Client address.
    pub peer: String,
    /// Identities from the client certificate (URI and DNS SANs), with mutual TLS.
    pub identities: Vec<String>,
    /// `sotw` or `delta`.
    pub variant: &'static str,
    /// `ADS` or the per-type service (`CDS`, ...).
    pub api: &'static str,
    /// When the stream opened (seconds since the Unix epoch).
    pub opened_at: f64,
    /// Per type, by type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// A client: one node with its streams.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    /// `node.id`.
    pub node_id: String,
    /// Its streams.
    pub streams: Vec<StreamStatus>,
}

/// Every live stream's status.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    streams: Mutex<HashMap<u64, Arc<Mutex<StreamStatus>>>>,
}

impl ClientRegistry {
    pub(crate) fn open(&self, status: StreamStatus) -> StreamHandle {
        let id = status.stream_id;
        let status = Arc::new(Mutex::new(status));
        self.streams.lock().insert(id, status.clone());
        StreamHandle { status }
    }

    pub(crate) fn close(&self, id: u64) {
        self.streams.lock().remove(&id);
    }

    /// Number of live streams.
    pub fn stream_count(&self) -> usize {
        self.streams.lock().len()
    }

    /// Every live stream, grouped by node id, sorted.
    pub fn clients(&self) -> Vec<ClientStatus> {
        let streams: Vec<Arc<Mutex<StreamStatus>>> = self.streams.lock().values().cloned().collect();
        let mut by_node: BTreeMap<String, Vec<StreamStatus>> = BTreeMap::new();
        for s in streams {
            let s = s.lock().clone();
            by_node.entry(s.node_id.clone()).or_default().push(s);
        }
        by_node
            .into_iter()
            .map(|(node_id, mut streams)| {
                streams.sort_by_key(|s| s.stream_id);
                ClientStatus { node_id, streams }
            })
            .collect()
    }
}

/// A stream task's handle on its status.
#[derive(Debug)]
pub(crate) struct StreamHandle {
    status: Arc<Mutex<StreamStatus>>,
}

impl StreamHandle {
    pub(crate) fn new_status(
        stream_id: u64,
        peer: String,
        identities: Vec<String>,
        variant: &'static str,
        api: &'static str,
    ) -> StreamStatus {
        StreamStatus {
            stream_id,
            node_id: String::new(),
            node_cluster: String::new(),
            peer,
            identities,
            variant,
            api,
            opened_at: unix_seconds(SystemTime::now()),
            types: BTreeMap::new(),
        }
    }

    /// Runs `f` on the status of type `t`; allocates only the first time (it runs per request).
    fn with_type(&self, t: &str, f: impl FnOnce(&mut TypeStatus)) {
        let mut s = self.status.lock();
        if let Some(entry) = s.types.get_mut(t) {
            return f(entry);
        }
        let entry = s
            .types
            .entry(t.to_string())
            .or_insert_with(|| TypeStatus { r#type: type_url::short_name(t).to_string(), ..Default::default() });
        f(entry);
    }

    pub(crate) fn set_node(&self, id: &str, cluster: &str) {
        let mut s = self.status.lock();
        s.node_id = id.to_string();
        s.node_cluster = cluster.to_string();
    }

    pub(crate) fn sent(&self, t: &str, version: &str, bytes: usize) {
        self.with_type(t, |ts| {
            set_str(&mut ts.last_sent_version, version);
            ts.last_sent_at = Some(unix_seconds(SystemTime::now()));
            ts.responses += 1;
            ts.bytes += bytes as u64;
        });
    }

    pub(crate) fn acked(&self, t: &str, version: &str) {
        self.with_type(t, |ts| {
            set_str(&mut ts.last_acked_version, version);
            ts.last_acked_at = Some(unix_seconds(SystemTime::now()));
            ts.last_nack = None;
        });
    }

    pub(crate) fn nacked(&self, t: &str, rejected_version: &str, error: &str) {
        self.with_type(t, |ts| {
            ts.last_nack = Some(NackStatus {
                rejected_version: rejected_version.to_string(),
                error: error.to_string(),
                at: unix_seconds(SystemTime::now()),
            });
        });
    }
}
