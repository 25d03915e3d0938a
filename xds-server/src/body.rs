//! Responses on the wire without a per-stream encode buffer, and one encoding of a response body
//! shared by every stream that is sent the same resources.
//!
//! tonic's encoder copies every message into a buffer the stream keeps for its lifetime, grown to
//! the largest response it ever sent: with thousands of mostly idle streams that buffer was most
//! of a stream's memory. Here a response is two pieces handed to HTTP/2 as they are, in one
//! chunk ([`Data`], one DATA write for hyper and h2 per response):
//!
//! - the *head*: the 5-byte gRPC message prefix and the nonce field, a few dozen bytes of the
//!   stream's own;
//! - the *shared part*: every other field (version, resources, type URL; see [`crate::codec`]),
//!   looked up in a [`BodyCache`] by the identity of what it holds (the same resource `Arc`s, the
//!   same version) and encoded only on a miss; it is kept once a second stream needs it, so a
//!   body only one stream gets (per-node configuration) does not churn the cache. Ten thousand
//!   streams sent the same update share one allocation; HTTP/2 writes it to each socket from
//!   that allocation, without a copy.
//!
//! Small responses (under [`MIN_SHARED`] bytes) are written into the head: sharing them would
//! cost more than it saves.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::buf::Chain;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;
use parking_lot::Mutex;
use tonic::Status;
use xds_cache::{DeltaResponse, SotwResponse};

use crate::codec::WireMessage;

/// A shared part smaller than this is not shared: it is written with the head into one chunk.
pub(crate) const MIN_SHARED: usize = 1024;
/// Shards of a [`BodyCache`], each with its own lock (picked by the body's hash).
const SHARDS: usize = 8;
/// Bodies kept per shard, oldest evicted first.
const SHARD_ENTRIES: usize = 8;
/// Bytes of bodies kept per shard; a larger body is encoded for each stream and not kept.
const SHARD_BYTES: usize = 8 << 20;
/// Hashes of bodies seen once remembered per shard.
const SEEN_ONCE: usize = 64;

/// The hasher of shared parts: a hash of a hundred pointers per response, computed for every
/// response of every stream, so a hasher made for short inputs (xxh3's streaming state cost
/// thousands of instructions per response). Fixed seed: the hash only picks a shard and an entry
/// within the process.
fn hasher() -> impl Hasher {
    foldhash::fast::FixedState::with_seed(0).build_hasher()
}

/// A response's bytes as HTTP/2 sends them: the head, then the shared part (empty when the head
/// holds the whole response).
pub(crate) type Data = Chain<Bytes, Bytes>;

/// One response, ready for HTTP/2.
#[derive(Debug)]
pub(crate) struct Frames {
    head: Bytes,
    shared: Option<Bytes>,
}

/// A response whose shared part can be recognised without encoding it.
pub(crate) trait SharedPart: WireMessage + Clone + Sync {
    /// Hash of what the shared part is made of (resource identities, version, type).
    fn shared_hash(&self) -> u64;
    /// Whether `other` has the same shared part (same resource `Arc`s, same strings).
    fn same_shared(&self, other: &Self) -> bool;
}

impl SharedPart for SotwResponse {
    fn shared_hash(&self) -> u64 {
        let mut h = hasher();
        h.write(self.type_url.as_bytes());
        h.write(self.version.as_bytes());
        h.write_u8(u8::from(self.wrap_ttl) | u8::from(self.heartbeat) << 1);
        for r in self.resources.iter() {
            h.write_usize(Arc::as_ptr(r) as usize);
        }
        h.finish()
    }

    fn same_shared(&self, other: &Self) -> bool {
        self.type_url == other.type_url
            && self.version == other.version
            && self.wrap_ttl == other.wrap_ttl
            && self.heartbeat == other.heartbeat
            && (Arc::ptr_eq(&self.resources, &other.resources)
                || (self.resources.len() == other.resources.len()
                    && self.resources.iter().zip(other.resources.iter()).all(|(a, b)| Arc::ptr_eq(a, b))))
    }
}

impl SharedPart for DeltaResponse {
    fn shared_hash(&self) -> u64 {
        let mut h = hasher();
        h.write(self.type_url.as_bytes());
        h.write(self.system_version.as_bytes());
        // Names by length only: hashing their bytes cost more than the rest of the body's
        // lookup. A stream's first response replies with the names as that stream spelled them
        // (its own strings), so their addresses differ from stream to stream while the bodies
        // are the same; `same_shared` compares the names themselves (by address first), so names
        // that only hash alike are never confused.
        for r in &self.resources {
            h.write_usize(r.name.len());
            h.write_usize(Arc::as_ptr(&r.resource) as usize);
            h.write_u8(u8::from(r.heartbeat));
        }
        for name in &self.removed {
            h.write(name.as_bytes());
            h.write_u8(0xff);
        }
        h.finish()
    }

    fn same_shared(&self, other: &Self) -> bool {
        self.type_url == other.type_url
            && self.system_version == other.system_version
            && self.removed == other.removed
            && self.resources.len() == other.resources.len()
            // `Arc<str>` equality compares the addresses first (`str` is `Eq`).
            && self.resources.iter().zip(&other.resources).all(|(a, b)| {
                a.heartbeat == b.heartbeat && Arc::ptr_eq(&a.resource, &b.resource) && a.name == b.name
            })
    }
}

/// Recently encoded shared parts, keyed by what they hold. An entry keeps its response (and so
/// its resources) alive: the resource pointers it is compared by cannot be reused while it is
/// cached. Bounded in entries and bytes per shard; the oldest entry goes first.
pub(crate) struct BodyCache<R> {
    shards: Vec<Mutex<Shard<R>>>,
}

struct Shard<R> {
    entries: VecDeque<Entry<R>>,
    bytes: usize,
    /// Hashes of bodies encoded once and not kept: a body is kept when a second stream needs
    /// it, so bodies only one stream gets (per-node configuration) never churn the cache.
    seen_once: VecDeque<u64>,
}

struct Entry<R> {
    hash: u64,
    response: R,
    body: Bytes,
}

impl<R> Default for BodyCache<R> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard { entries: VecDeque::new(), bytes: 0, seen_once: VecDeque::new() }))
                .collect(),
        }
    }
}

impl<R: SharedPart> Shard<R> {
    fn find(&self, hash: u64, r: &R) -> Option<Bytes> {
        self.entries.iter().find(|e| e.hash == hash && e.response.same_shared(r)).map(|e| e.body.clone())
    }
}

impl<R: SharedPart> BodyCache<R> {
    /// The encoded shared part of `r` (`len` bytes): from the cache, or encoded and kept.
    fn shared_part(&self, r: &R, len: usize) -> Bytes {
        let hash = r.shared_hash();
        let shard = &self.shards[(hash % SHARDS as u64) as usize];
        if let Some(body) = shard.lock().find(hash, r) {
            return body;
        }
        // Encoded without the lock: other streams are not held up by a large body.
        let mut buf = BytesMut::with_capacity(len);
        r.write_shared(&mut buf);
        let body = buf.freeze();
        if len > SHARD_BYTES {
            return body;
        }
        let mut shard = shard.lock();
        // Another stream may have encoded the same body meanwhile: share one copy.
        if let Some(existing) = shard.find(hash, r) {
            return existing;
        }
        if let Some(i) = shard.seen_once.iter().position(|h| *h == hash) {
            shard.seen_once.remove(i);
        } else {
            if shard.seen_once.len() == SEEN_ONCE {
                shard.seen_once.pop_front();
            }
            shard.seen_once.push_back(hash);
            return body;
        }
        shard.bytes += len;
        shard.entries.push_back(Entry { hash, response: r.clone(), body: body.clone() });
        while shard.entries.len() > SHARD_ENTRIES || shard.bytes > SHARD_BYTES {
            match shard.entries.pop_front() {
                Some(old) => shard.bytes -= old.body.len(),
                None => break,
            }
        }
        body
    }

    /// Number of bodies kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }
}

/// Encodes `r` as one gRPC message; returns the frames and the message's size in bytes.
pub(crate) fn encode<R: SharedPart>(r: &R, cache: &BodyCache<R>) -> Result<(Frames, usize), Status> {
    let shared_len = r.shared_len();
    let len = r.nonce_len() + shared_len;
    let prefix = u32::try_from(len).map_err(|_| {
        Status::resource_exhausted(format!("a response of {len} bytes exceeds gRPC's 4 GiB message limit"))
    })?;
    let inline = shared_len < MIN_SHARED;
    let mut head = BytesMut::with_capacity(5 + if inline { len } else { r.nonce_len() });
    head.put_u8(0); // not compressed
    head.put_u32(prefix);
    r.write_nonce(&mut head);
    let shared = if inline {
        r.write_shared(&mut head);
        None
    } else {
        Some(cache.shared_part(r, shared_len))
    };
    Ok((Frames { head: head.freeze(), shared }, len))
}

/// What the stream task hands to the HTTP body: a response, or the status ending the stream.
type Item = Result<Frames, Status>;

/// The single slot between a stream task and its HTTP body (a channel of capacity one, without
/// the per-stream block of slots a tokio channel allocates).
#[derive(Default)]
struct Slot {
    item: Option<Item>,
    /// The body is gone (the client left or the connection closed).
    body_dropped: bool,
    /// The stream task is done; the body ends with OK after the last item.
    task_done: bool,
    body_waker: Option<Waker>,
    task_waker: Option<Waker>,
}

fn store(waker: &mut Option<Waker>, cx: &Context<'_>) {
    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *waker = Some(cx.waker().clone());
    }
}

/// The body is gone: nothing sent on this stream will be read.
#[derive(Debug)]
pub(crate) struct BodyDropped;

/// The stream task's end of the slot.
pub(crate) struct Outbox {
    slot: Arc<Mutex<Slot>>,
}

/// A stream's outbox and the HTTP body that sends what is put into it.
pub(crate) fn outbox() -> (Outbox, ResponseBody) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (Outbox { slot: slot.clone() }, ResponseBody { slot, done: false })
}

impl Outbox {
    /// Waits until the slot is free: the previous response has been taken by HTTP/2.
    pub(crate) async fn ready(&self) -> Result<(), BodyDropped> {
        std::future::poll_fn(|cx| {
            let mut slot = self.slot.lock();
            if slot.body_dropped {
                Poll::Ready(Err(BodyDropped))
            } else if slot.item.is_none() {
                Poll::Ready(Ok(()))
            } else {
                store(&mut slot.task_waker, cx);
                Poll::Pending
            }
        })
        .await
    }

    /// Puts an item into the slot; call after [`ready`](Self::ready) (an item still in the slot
    /// is replaced).
    pub(crate) fn send(&self, item: Item) {
        let waker = {
            let mut slot = self.slot.lock();
            slot.item = Some(item);
            slot.body_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.lock();
            slot.task_done = true;
            slot.body_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The HTTP body of a streaming response: the frames the stream task sends, then the trailers
/// with the stream's gRPC status.
pub(crate) struct ResponseBody {
    slot: Arc<Mutex<Slot>>,
    done: bool,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.lock();
            slot.body_dropped = true;
            slot.item = None;
            slot.task_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    if status.add_header(&mut trailers).is_err() {
        // Only metadata that is not a valid header fails; the code and message still go out.
        trailers.clear();
        let plain = Status::new(status.code(), status.message());
        let _ = plain.add_header(&mut trailers);
    }
    trailers
}

impl http_body::Body for ResponseBody {
    type Data = Data;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Data>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let (item, waker) = {
            let mut slot = this.slot.lock();
            match slot.item.take() {
                Some(item) => (Some(item), slot.task_waker.take()),
                None if slot.task_done => (None, None),
                None => {
                    store(&mut slot.body_waker, cx);
                    return Poll::Pending;
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        let status = match item {
            Some(Ok(frames)) => {
                return Poll::Ready(Some(Ok(Frame::data(frames.head.chain(frames.shared.unwrap_or_default())))));
            }
            Some(Err(status)) => status,
            // The stream task ended without an error.
            None => Status::ok(""),
        };
        this.done = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A [`ResponseBody`] with each response in two chunks (`Bytes`), the body type tonic's router
/// takes.
pub(crate) struct InPieces {
    body: ResponseBody,
    next: Bytes,
}

impl InPieces {
    pub(crate) fn new(body: ResponseBody) -> Self {
        Self { body, next: Bytes::new() }
    }
}

impl http_body::Body for InPieces {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if !this.next.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.next)))));
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| {
                frame.map_data(|data| {
                    let (head, shared) = data.into_inner();
                    this.next = shared;
                    head
                })
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_empty() && self.body.is_end_stream()
    }
}

/// The body of a response on a connection of `XdsServer::serve`: a discovery stream's, or a
/// tonic body (what tonic's router answered for `Fetch*`, REST polling and unknown paths, or the
/// status refusing a stream).
pub(crate) enum ServedBody {
    /// A discovery stream.
    Stream(ResponseBody),
    /// A tonic body.
    Tonic(tonic::body::Body),
}

impl http_body::Body for ServedBody {
    type Data = Data;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Data>, Status>>> {
        match self.get_mut() {
            Self::Stream(body) => Pin::new(body).poll_frame(cx),
            Self::Tonic(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map(|frame| frame.map_data(|data| data.chain(Bytes::new()))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(body) => body.is_end_stream(),
            Self::Tonic(body) => http_body::Body::is_end_stream(body),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Stream(body) => body.size_hint(),
            Self::Tonic(body) => http_body::Body::size_hint(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
    use xds_core::prost::Message;
    use xds_core::{type_url, EncodedResource, XdsResource};

    fn cla(name: &str, port_base: u32) -> Arc<EncodedResource> {
        use xds_core::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
        use xds_core::envoy::config::endpoint::v3::{lb_endpoint, Endpoint, LbEndpoint, LocalityLbEndpoints};
        let endpoints = (0..10)
            .map(|i| LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: "127.0.0.1".into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(port_base + i)),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        let cla = ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints: endpoints, ..Default::default() }],
            ..Default::default()
        };
        Arc::new(cla.encode_resource())
    }

    fn response(resources: Vec<Arc<EncodedResource>>, nonce: &str) -> SotwResponse {
        SotwResponse {
            type_url: type_url::ENDPOINT.into(),
            version: "v1".into(),
            nonce: nonce.into(),
            resources: resources.into(),
            wrap_ttl: false,
            heartbeat: false,
        }
    }

    /// The chunks of `frames` concatenated: one gRPC message.
    fn message(frames: &Frames) -> Vec<u8> {
        let mut all = frames.head.to_vec();
        all.extend_from_slice(frames.shared.as_deref().unwrap_or_default());
        all
    }

    fn decode(frames: &Frames) -> DiscoveryResponse {
        let all = message(frames);
        assert_eq!(all[0], 0, "not compressed");
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        assert_eq!(len, all.len() - 5, "the prefix gives the message length");
        DiscoveryResponse::decode(&all[5..]).expect("a DiscoveryResponse")
    }

    #[test]
    fn streams_sent_the_same_resources_share_one_body() {
        let cache = BodyCache::default();
        let resources: Vec<_> = (0..20).map(|i| cla(&format!("c{i}"), 1000 * i)).collect();
        let (first, _) = encode(&response(resources.clone(), "5"), &cache).expect("encodes");
        assert_eq!(cache.len(), 0, "a body one stream needs is not kept");
        let (a, len_a) = encode(&response(resources.clone(), "1"), &cache).expect("encodes");
        assert_eq!(cache.len(), 1, "kept once a second stream needs it");
        let (b, _) = encode(&response(resources.clone(), "22"), &cache).expect("encodes");
        let (sa, sb) = (a.shared.as_ref().expect("shared"), b.shared.as_ref().expect("shared"));
        assert_eq!(sa.as_ptr(), sb.as_ptr(), "one allocation for the streams that follow");
        assert_eq!(first.shared.as_deref(), a.shared.as_deref(), "the same bytes");
        assert_eq!(cache.len(), 1);
        assert_eq!(len_a, message(&a).len() - 5);
        let (da, db) = (decode(&a), decode(&b));
        assert_eq!((da.nonce.as_str(), db.nonce.as_str()), ("1", "22"));
        assert_eq!(da.resources, db.resources);
        assert_eq!(da.resources.len(), 20);
        assert_eq!(da.version_info, "v1");
        assert_eq!(da.type_url, type_url::ENDPOINT);
        let first = ClusterLoadAssignment::decode(da.resources[0].value.as_slice()).expect("a CLA");
        assert_eq!(first.cluster_name, "c0");
    }

    #[test]
    fn different_resources_or_versions_are_not_confused() {
        let cache = BodyCache::default();
        // Each response is encoded for two streams, so that every one is kept.
        let twice = |r: &SotwResponse| {
            encode(r, &cache).expect("encodes");
            encode(r, &cache).expect("encodes").0
        };
        let resources: Vec<_> = (0..20).map(|i| cla(&format!("c{i}"), 1000 * i)).collect();
        let a = twice(&response(resources.clone(), "1"));
        // Same content, but another resource object (another version of the set): not shared.
        let mut other = resources.clone();
        other[3] = cla("c3", 3000);
        let b = twice(&response(other, "2"));
        assert_ne!(a.shared.as_ref().map(|s| s.as_ptr()), b.shared.as_ref().map(|s| s.as_ptr()));
        // A subset.
        let c = twice(&response(resources[..10].to_vec(), "3"));
        assert_eq!(decode(&c).resources.len(), 10);
        // Another version string.
        let mut v2 = response(resources.clone(), "4");
        v2.version = "v2".into();
        let d = twice(&v2);
        assert_eq!(decode(&d).version_info, "v2");
        assert_eq!(decode(&a).version_info, "v1");
        assert_eq!(decode(&twice(&response(resources.clone(), "5"))).resources.len(), 20);
        assert_eq!(cache.len(), 4);
    }

    fn delta(resources: &[Arc<EncodedResource>], names: &[Arc<str>], nonce: &str) -> DeltaResponse {
        DeltaResponse {
            type_url: type_url::ENDPOINT.into(),
            system_version: "v1".into(),
            nonce: nonce.into(),
            resources: resources
                .iter()
                .zip(names)
                .map(|(r, n)| xds_cache::DeltaResource { name: n.clone(), resource: r.clone(), heartbeat: false })
                .collect(),
            removed: vec![],
        }
    }

    fn decode_delta(frames: &Frames) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse::decode(&message(frames)[5..]).expect("a DeltaDiscoveryResponse")
    }

    #[test]
    fn delta_streams_share_a_body_by_resource_and_name_and_never_confuse_names() {
        let cache = BodyCache::default();
        let resources: Vec<_> = (0..20).map(|i| cla(&format!("c{i}"), 1000 * i)).collect();
        let names: Vec<Arc<str>> = resources.iter().map(|r| r.name_arc().clone()).collect();
        encode(&delta(&resources, &names, "1"), &cache).expect("encodes");
        let (a, _) = encode(&delta(&resources, &names, "2"), &cache).expect("encodes");
        let (b, _) = encode(&delta(&resources, &names, "3"), &cache).expect("encodes");
        let ptr = |f: &Frames| f.shared.as_ref().map(|s| s.as_ptr());
        assert_eq!(ptr(&a), ptr(&b), "the same resources under the same names: one body");
        // Equal names in other strings (each stream's first response replies with the names as
        // it spelled them): still the one body.
        let copies: Vec<Arc<str>> = names.iter().map(|n| Arc::from(&**n)).collect();
        let (c, _) = encode(&delta(&resources, &copies, "4"), &cache).expect("encodes");
        assert_eq!(ptr(&c), ptr(&a));
        // The name a client subscribed to differs from the resource's own: never another's body.
        let mut aliased = names.clone();
        aliased[7] = "xdstp://auth/envoy.config.endpoint.v3.ClusterLoadAssignment/c7?a=1&b=2".into();
        for nonce in ["5", "6"] {
            let (d, _) = encode(&delta(&resources, &aliased, nonce), &cache).expect("encodes");
            assert_ne!(ptr(&d), ptr(&a));
            let d = decode_delta(&d);
            assert_eq!(d.resources[7].name, &*aliased[7]);
            assert_eq!(d.resources[6].name, "c6");
            assert_eq!(d.nonce, nonce);
        }
        assert_eq!(decode_delta(&a).resources[7].name, "c7");
    }

    #[test]
    fn small_responses_are_one_chunk_and_not_cached() {
        let cache = BodyCache::default();
        let (f, _) = encode(&response(vec![cla("c", 1)], "9"), &cache).expect("encodes");
        assert!(f.shared.is_none());
        assert_eq!(cache.len(), 0);
        let d = decode(&f);
        assert_eq!(d.nonce, "9");
        assert_eq!(d.resources.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = BodyCache::default();
        let resources: Vec<_> = (0..20).map(|i| cla(&format!("c{i}"), 1000 * i)).collect();
        for v in 0..(SHARDS * SHARD_ENTRIES * 3) {
            let mut r = response(resources.clone(), "1");
            r.version = v.to_string().into();
            encode(&r, &cache).expect("encodes");
            encode(&r, &cache).expect("encodes");
        }
        assert!(cache.len() <= SHARDS * SHARD_ENTRIES);
    }

    #[tokio::test]
    async fn the_body_yields_frames_then_trailers_with_the_status() {
        use http_body::Body as _;
        let (task, mut body) = outbox();
        let resources: Vec<_> = (0..20).map(|i| cla(&format!("c{i}"), 1000 * i)).collect();
        let (frames, _) = encode(&response(resources, "1"), &BodyCache::default()).expect("encodes");
        let expected = message(&frames);
        task.ready().await.expect("free");
        task.send(Ok(frames));
        let mut data = Vec::new();
        let mut trailers = None;
        let mut outbox = Some(task);
        for _ in 0..10 {
            // Once the response is taken, the stream ends with an error.
            if let Some(o) = outbox.take_if(|o| o.slot.lock().item.is_none()) {
                o.ready().await.expect("free again");
                o.send(Err(Status::unavailable("going away")));
            }
            let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await else { break };
            let frame = frame.expect("no error");
            match frame.into_data() {
                Ok(mut chunk) => data.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining())),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(data, expected);
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"14"[..]));
        assert_eq!(trailers.get("grpc-message").map(|v| v.as_bytes()), Some(&b"going%20away"[..]));
        assert!(body.is_end_stream());
    }

    /// The data frames `body` yields until its trailers.
    async fn data_frames<B: http_body::Body<Error = Status> + Unpin>(mut body: B) -> Vec<B::Data> {
        let mut data = Vec::new();
        for _ in 0..10 {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match frame.expect("trailers end the body").expect("no error").into_data() {
                Ok(chunk) => data.push(chunk),
                Err(_) => return data,
            }
        }
        panic!("no trailers");
    }

    #[tokio::test]
    async fn a_response_is_one_chunk_and_in_two_pieces_for_tonics_router() {
        let resources: Vec<_> = (0..20).map(|i| cla(&format!("c{i}"), 1000 * i)).collect();
        let cache = BodyCache::default();
        let send = |frames: Frames| {
            let (task, body) = outbox();
            task.send(Ok(frames));
            body
        };

        let (frames, _) = encode(&response(resources.clone(), "1"), &cache).expect("encodes");
        let (expected, shared) = (message(&frames), frames.shared.clone().expect("shared"));
        let chunks = data_frames(send(frames)).await;
        assert_eq!(chunks.len(), 1, "one chunk per response for HTTP/2");
        let (head, body) = chunks.into_iter().next().expect("one").into_inner();
        assert_eq!(body.as_ptr(), shared.as_ptr(), "the shared part as it is, not a copy");
        assert_eq!([head.to_vec(), body.to_vec()].concat(), expected);

        let (frames, _) = encode(&response(resources, "2"), &cache).expect("encodes");
        let expected = message(&frames);
        let pieces = data_frames(InPieces::new(send(frames))).await;
        assert_eq!(pieces.len(), 2, "head and shared part");
        assert_eq!(pieces.concat(), expected);
    }

    #[tokio::test]
    async fn the_task_learns_when_the_body_is_gone_and_a_finished_task_ends_the_body_ok() {
        use http_body::Body as _;
        let (task, body) = outbox();
        task.send(Err(Status::internal("x")));
        drop(body);
        assert!(task.ready().await.is_err(), "the client is gone");

        let (task, mut body) = outbox();
        drop(task);
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let trailers = frame.expect("a frame").expect("no error").into_trailers().expect("trailers");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    }
}
