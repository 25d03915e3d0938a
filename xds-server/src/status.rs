//! What every connected client holds: the data behind an admin `/clients` page, in the spirit
//! of `istioctl proxy-status`.
//!
//! Each stream task owns the status of its stream and updates it as requests and responses go
//! by (an uncontended lock per stream); readers take a copy. The registry lock is taken only to
//! add or remove a stream. While a stream lives its types are kept in a small vector, with
//! the standard type URLs shared; a reader's copy is the map of [`StreamStatus`].

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

/// A live stream's status as its task updates it.
#[derive(Debug)]
struct Live {
    /// Everything but the types (its `types` stay empty).
    stream: StreamStatus,
    /// Per type URL (the standard ones shared, [`type_url::shared`]).
    types: Vec<(Arc<str>, LiveType)>,
}

/// A type's [`TypeStatus`] as the stream task updates it: the versions are the responses' own
/// strings (and the ACKed one the sent one's, when they are equal), not copies; they are put
/// into the status (with its short name) only for a reader's copy.
#[derive(Debug, Default)]
struct LiveType {
    status: TypeStatus,
    last_sent_version: Option<Arc<str>>,
    last_acked_version: Option<Arc<str>>,
}

impl Live {
    /// A reader's copy.
    fn status(&self) -> StreamStatus {
        let mut status = self.stream.clone();
        status.types = self
            .types
            .iter()
            .map(|(t, live)| {
                let mut ts = live.status.clone();
                ts.r#type = type_url::short_name(t).to_string();
                ts.last_sent_version = live.last_sent_version.as_deref().map(str::to_string);
                ts.last_acked_version = live.last_acked_version.as_deref().map(str::to_string);
                (t.to_string(), ts)
            })
            .collect();
        status
    }
}

/// Every live stream's status.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    streams: Mutex<HashMap<u64, Arc<Mutex<Live>>>>,
}

impl ClientRegistry {
    pub(crate) fn open(&self, stream: StreamStatus) -> StreamHandle {
        let id = stream.stream_id;
        let status = Arc::new(Mutex::new(Live { stream, types: Vec::new() }));
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
        let streams: Vec<Arc<Mutex<Live>>> = self.streams.lock().values().cloned().collect();
        let mut by_node: BTreeMap<String, Vec<StreamStatus>> = BTreeMap::new();
        for s in streams {
            let s = s.lock().status();
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
    status: Arc<Mutex<Live>>,
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

    /// Runs `f` on the status of type `t`; allocates only the first time, and then only for a
    /// type outside the table (it runs per request and response).
    fn with_type(&self, t: &str, f: impl FnOnce(&mut LiveType)) {
        let mut s = self.status.lock();
        let i = match s.types.iter().position(|(known, _)| &**known == t) {
            Some(i) => i,
            None => {
                s.types.push((type_url::shared(t), LiveType::default()));
                s.types.len() - 1
            }
        };
        f(&mut s.types[i].1);
    }

    pub(crate) fn set_node(&self, id: &str, cluster: &str) {
        let mut s = self.status.lock();
        s.stream.node_id = id.to_string();
        s.stream.node_cluster = cluster.to_string();
    }

    /// Records that the stream asked for type `t`, so the type is listed (as subscribed, nothing
    /// sent) before its first response: a client waiting for resources that do not exist shows.
    pub(crate) fn subscribed(&self, t: &str) {
        self.with_type(t, |_| {});
    }

    pub(crate) fn sent(&self, t: &str, version: &Arc<str>, bytes: usize) {
        self.with_type(t, |live| {
            live.last_sent_version = Some(version.clone());
            let ts = &mut live.status;
            ts.last_sent_at = Some(unix_seconds(SystemTime::now()));
            ts.responses += 1;
            ts.bytes += bytes as u64;
        });
    }

    pub(crate) fn acked(&self, t: &str, version: &str) {
        self.with_type(t, |live| {
            live.last_acked_version = match &live.last_sent_version {
                Some(sent) if **sent == *version => Some(sent.clone()),
                _ => Some(version.into()),
            };
            live.status.last_acked_at = Some(unix_seconds(SystemTime::now()));
            live.status.last_nack = None;
        });
    }

    pub(crate) fn nacked(&self, t: &str, rejected_version: &str, error: &str) {
        self.with_type(t, |live| {
            live.status.last_nack = Some(NackStatus {
                rejected_version: rejected_version.to_string(),
                error: error.to_string(),
                at: unix_seconds(SystemTime::now()),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readers_copy_holds_every_type_by_url_with_its_short_name() {
        let registry = ClientRegistry::default();
        let handle = registry.open(StreamHandle::new_status(7, "127.0.0.1:1".into(), vec![], "sotw", "ADS"));
        handle.set_node("n1", "c1");
        let custom = "type.googleapis.com/example.Custom";
        handle.sent(type_url::CLUSTER, &"v1".into(), 10);
        handle.sent(custom, &"c1".into(), 5);
        handle.acked(type_url::CLUSTER, "v1");
        {
            // The ACKed version is the sent one's string, not a copy.
            let live = handle.status.lock();
            let cds = &live.types[0].1;
            let (sent, acked) = (cds.last_sent_version.as_ref(), cds.last_acked_version.as_ref());
            assert!(Arc::ptr_eq(sent.expect("sent"), acked.expect("acked")));
        }
        handle.sent(type_url::CLUSTER, &"v2".into(), 20);
        handle.nacked(type_url::CLUSTER, "v2", "bad");
        let clients = registry.clients();
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0].node_id, "n1");
        let stream = &clients[0].streams[0];
        assert_eq!((stream.stream_id, stream.node_cluster.as_str()), (7, "c1"));
        assert_eq!(stream.types.keys().map(String::as_str).collect::<Vec<_>>(), [type_url::CLUSTER, custom]);
        let cds = &stream.types[type_url::CLUSTER];
        assert_eq!(cds.r#type, "CDS");
        assert_eq!((cds.responses, cds.bytes), (2, 30));
        assert_eq!(cds.last_sent_version.as_deref(), Some("v2"));
        assert_eq!(cds.last_acked_version.as_deref(), Some("v1"));
        assert_eq!(cds.last_nack.as_ref().map(|n| n.rejected_version.as_str()), Some("v2"));
        assert_eq!(stream.types[custom].r#type, custom, "a type outside the table is named by its URL");
        registry.close(7);
        assert_eq!(registry.stream_count(), 0);
    }
}
