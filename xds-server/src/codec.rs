//! The gRPC codec: requests are decoded with prost; responses are written from the resources'
//! shared, pre-encoded bytes, so no resource is encoded again per stream.
//!
//! A protobuf message is the concatenation of its fields, in any order, so a
//! `DiscoveryResponse` is written field by field: the nonce first (the only field that differs
//! between two streams sent the same resources), then `version_info`, one `resources` entry per
//! pre-encoded `Any`, and `type_url`. Everything after the nonce is the *shared part*, which
//! [`crate::body`] encodes once and shares between streams.

use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use xds_cache::{DeltaResource, DeltaResponse, SotwResponse};
use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_core::prost::encoding::{
    decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, DecodeContext, WireType,
};
use xds_core::prost::{DecodeError, Message};

/// The nonce's field number, the same in `DiscoveryResponse` and `DeltaDiscoveryResponse`.
const NONCE_FIELD: u32 = 5;

/// A response that knows how to write itself as protobuf: a per-stream nonce and a shared part.
pub(crate) trait WireMessage: Send + 'static {
    /// Writes every field but the nonce.
    fn write_shared(&self, buf: &mut impl BufMut);
    /// Bytes [`write_shared`](Self::write_shared) writes.
    fn shared_len(&self) -> usize;
    /// The nonce.
    fn nonce(&self) -> &str;

    /// Writes the nonce field.
    fn write_nonce(&self, buf: &mut impl BufMut) {
        write_str_field(NONCE_FIELD, self.nonce(), buf);
    }
    /// Bytes the nonce field takes.
    fn nonce_len(&self) -> usize {
        str_field_len(self.nonce())
    }
    /// Writes the whole message.
    fn write_to(&self, buf: &mut impl BufMut) {
        self.write_nonce(buf);
        self.write_shared(buf);
    }
    /// Bytes the whole message takes on the wire.
    #[cfg(test)]
    fn encoded_len(&self) -> usize {
        self.nonce_len() + self.shared_len()
    }
}

fn write_bytes_field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn write_str_field(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        write_bytes_field(tag, s.as_bytes(), buf);
    }
}

/// `DiscoveryResponse` field numbers (envoy/service/discovery/v3/discovery.proto).
mod sotw_field {
    pub const VERSION_INFO: u32 = 1;
    pub const RESOURCES: u32 = 2;
    pub const TYPE_URL: u32 = 4;
}

impl WireMessage for SotwResponse {
    fn write_shared(&self, buf: &mut impl BufMut) {
        write_str_field(sotw_field::VERSION_INFO, &self.version, buf);
        for r in self.resources.iter() {
            match sotw_wrapper(self, r) {
                Some(w) => w.write(sotw_field::RESOURCES, buf),
                // An empty `Any` is still a present element of a repeated field.
                None => write_bytes_field(sotw_field::RESOURCES, r.any_bytes(), buf),
            }
        }
        write_str_field(sotw_field::TYPE_URL, &self.type_url, buf);
    }

    fn shared_len(&self) -> usize {
        str_field_len(&self.version)
            + str_field_len(&self.type_url)
            + self
                .resources
                .iter()
                .map(|x| {
                    sotw_wrapper(self, x).map_or_else(|| len_field(x.any_bytes().len()), |w| len_field(w.any_len()))
                })
                .sum::<usize>()
    }

    fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// A `google.protobuf.Duration` TTL, written field by field (no allocation per resource).
#[derive(Clone, Copy)]
struct Ttl {
    seconds: u64,
    nanos: u64,
}

impl Ttl {
    fn of(ttl: std::time::Duration) -> Self {
        // `seconds` is an int64: clamp as the proto type requires.
        Self { seconds: ttl.as_secs().min(i64::MAX as u64), nanos: u64::from(ttl.subsec_nanos()) }
    }

    /// Length of the `Duration` message; zero fields are left out, as proto3 does.
    fn len(self) -> usize {
        let field = |v: u64| if v == 0 { 0 } else { 1 + encoded_len_varint(v) };
        field(self.seconds) + field(self.nanos)
    }

    fn write(self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.len() as u64, buf);
        for (field, v) in [(1, self.seconds), (2, self.nanos)] {
            if v != 0 {
                encode_key(field, WireType::Varint, buf);
                encode_varint(v, buf);
            }
        }
    }
}

/// A `discovery.v3.Resource`: name, version, the body (left out for a heartbeat) and the TTL.
/// Delta responses carry these; SotW carries them wrapped in an `Any` for clients taking TTLs.
struct ResourceMsg<'a> {
    name: &'a str,
    version: &'a str,
    body: Option<&'a [u8]>,
    ttl: Option<Ttl>,
}

impl ResourceMsg<'_> {
    /// Length of the message (without its own key and length prefix).
    fn len(&self) -> usize {
        str_field_len(self.name)
            + str_field_len(self.version)
            + self.body.map_or(0, |b| len_field(b.len()))
            + self.ttl.map_or(0, |t| len_field(t.len()))
    }

    fn write(&self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.len() as u64, buf);
        write_str_field(delta_field::RESOURCE_VERSION, self.version, buf);
        if let Some(body) = self.body {
            write_bytes_field(delta_field::RESOURCE_BODY, body, buf);
        }
        write_str_field(delta_field::RESOURCE_NAME, self.name, buf);
        if let Some(ttl) = self.ttl {
            ttl.write(delta_field::RESOURCE_TTL, buf);
        }
    }
}

/// A resource wrapped for TTL in SotW: `Any { type_url: ...discovery.v3.Resource,
/// value: Resource { name, version, resource, ttl } }`.
struct Wrapper<'a>(ResourceMsg<'a>);

impl Wrapper<'_> {
    fn any_len(&self) -> usize {
        str_field_len(xds_core::type_url::RESOURCE_WRAPPER) + len_field(self.0.len())
    }

    fn write(&self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.any_len() as u64, buf);
        write_str_field(1, xds_core::type_url::RESOURCE_WRAPPER, buf);
        self.0.write(2, buf);
    }
}

fn sotw_wrapper<'a>(resp: &SotwResponse, r: &'a xds_core::EncodedResource) -> Option<Wrapper<'a>> {
    if !resp.wrap_ttl {
        return None;
    }
    let ttl = Ttl::of(r.ttl()?);
    Some(Wrapper(ResourceMsg {
        name: r.name(),
        version: r.version(),
        body: (!resp.heartbeat).then(|| &r.any_bytes()[..]),
        ttl: Some(ttl),
    }))
}

/// `DeltaDiscoveryResponse` and `Resource` field numbers.
mod delta_field {
    pub const SYSTEM_VERSION_INFO: u32 = 1;
    pub const RESOURCES: u32 = 2;
    pub const TYPE_URL: u32 = 4;
    pub const REMOVED_RESOURCES: u32 = 6;
    pub const RESOURCE_VERSION: u32 = 1;
    pub const RESOURCE_BODY: u32 = 2;
    pub const RESOURCE_NAME: u32 = 3;
    pub const RESOURCE_TTL: u32 = 6;
}

fn len_field(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn str_field_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(s.len())
    }
}

fn delta_resource(r: &DeltaResource) -> ResourceMsg<'_> {
    ResourceMsg {
        name: &r.name,
        version: r.resource.version(),
        body: (!r.heartbeat).then(|| &r.resource.any_bytes()[..]),
        ttl: r.resource.ttl().map(Ttl::of),
    }
}

impl WireMessage for DeltaResponse {
    fn write_shared(&self, buf: &mut impl BufMut) {
        write_str_field(delta_field::SYSTEM_VERSION_INFO, &self.system_version, buf);
        for r in &self.resources {
            delta_resource(r).write(delta_field::RESOURCES, buf);
        }
        write_str_field(delta_field::TYPE_URL, &self.type_url, buf);
        for name in &self.removed {
            // A removed name is never empty in practice, but an empty one must still be sent.
            write_bytes_field(delta_field::REMOVED_RESOURCES, name.as_bytes(), buf);
        }
    }

    fn shared_len(&self) -> usize {
        str_field_len(&self.system_version)
            + str_field_len(&self.type_url)
            + self.removed.iter().map(|n| len_field(n.len())).sum::<usize>()
            + self.resources.iter().map(|x| len_field(delta_resource(x).len())).sum::<usize>()
    }

    fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// Codec decoding `Req` with prost and encoding a [`WireMessage`].
pub(crate) struct XdsCodec<Req, Resp>(PhantomData<fn(Resp) -> Req>);

impl<Req, Resp> Default for XdsCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Codec for XdsCodec<Req, Resp>
where
    Req: Message + Default + Send + 'static,
    Resp: WireMessage,
{
    type Encode = Resp;
    type Decode = Req;
    type Encoder = WireEncoder<Resp>;
    type Decoder = ProstDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

pub(crate) struct WireEncoder<T>(PhantomData<fn(T)>);

impl<T: WireMessage> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_to(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// Small initial buffers for the unary `Fetch*` methods, the only ones served through tonic's
/// codec (streams use [`crate::body`] and [`crate::requests`]). Buffers grow on demand.
fn buffer_settings() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

pub(crate) struct ProstDecoder<T>(PhantomData<fn() -> T>);

impl<T> Default for ProstDecoder<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(src).map(Some).map_err(|e| malformed(&e))
    }
}

pub(crate) fn malformed(e: &DecodeError) -> Status {
    Status::invalid_argument(format!("malformed request: it is not a valid protobuf message: {e}"))
}

/// A request message that can be decoded into a used one, reusing its allocations.
pub(crate) trait Recycle: Message + Default + Send + 'static {
    /// Replaces `self` with the message in `buf`.
    fn decode_into(&mut self, buf: &mut impl Buf) -> Result<(), DecodeError> {
        self.clear();
        self.merge(buf)
    }

    /// A used message to decode into (or a new one). Boxed: a stream task holds a request across
    /// an await, and a pointer there keeps every stream's task smaller than the message would.
    fn take_used() -> Box<Self> {
        Box::default()
    }

    /// Hands back a message the stream is done with.
    fn give_back(self: Box<Self>) {}
}

/// Used requests kept per thread for the next request to be decoded into: a few, not one per
/// stream (thousands of idle streams would each keep one).
const POOL_PER_THREAD: usize = 16;

/// Spare name strings kept per thread: a request with fewer names than the used one it was
/// decoded into leaves its surplus here for the next longer one.
const SPARE_NAMES_PER_THREAD: usize = 4096;

thread_local! {
    #[allow(clippy::vec_box, reason = "the boxes are what is handed out and back, without moving the message")]
    static SOTW_POOL: std::cell::RefCell<Vec<Box<DiscoveryRequest>>> = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE_NAMES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `resource_names` field number of `DiscoveryRequest`.
const RESOURCE_NAMES_FIELD: u32 = 3;

/// If the length-delimited field at the start of `chunk` holds exactly `current`'s bytes, the
/// field's length on the wire (length prefix included).
///
/// Requests are decoded into used ones, and the streams of a mesh ACK with the same names in the
/// same order: most names are already in the string they are decoded into. Comparing the bytes
/// costs less than copying them and checking that they are UTF-8 again.
fn same_string(wire_type: WireType, chunk: &[u8], current: &str) -> Option<usize> {
    if wire_type != WireType::LengthDelimited {
        return None;
    }
    let mut value = chunk;
    let len = usize::try_from(decode_varint(&mut value).ok()?).ok()?;
    let start = chunk.len() - value.len();
    (value.get(..len)? == current.as_bytes()).then_some(start + len)
}

/// A SotW ACK repeats every subscribed name: decoded into the previous request's strings, it
/// costs no allocation (prost would allocate one `String` per name per ACK).
impl Recycle for DiscoveryRequest {
    fn decode_into(&mut self, buf: &mut impl Buf) -> Result<(), DecodeError> {
        let mut names = std::mem::take(&mut self.resource_names);
        self.clear();
        let mut used = 0;
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(buf)?;
            if tag == RESOURCE_NAMES_FIELD {
                if used == names.len() {
                    names.push(SPARE_NAMES.with_borrow_mut(Vec::pop).unwrap_or_default());
                }
                let slot = &mut names[used];
                match same_string(wire_type, buf.chunk(), slot) {
                    // The string holds these bytes already (valid UTF-8): no copy, no check.
                    Some(field_len) => buf.advance(field_len),
                    None => xds_core::prost::encoding::string::merge(wire_type, slot, buf, DecodeContext::default())?,
                }
                used += 1;
            } else {
                self.merge_field(tag, wire_type, buf, DecodeContext::default())?;
            }
        }
        if names.len() > used {
            SPARE_NAMES.with_borrow_mut(|spare| {
                let keep = SPARE_NAMES_PER_THREAD.saturating_sub(spare.len()).min(names.len() - used);
                // Pushed last name first, so that they are popped in the order they were in: the
                // next request with names (likely the same list: another stream's ACK, another
                // stream's subscription) finds most of them already in place.
                spare.extend(names.drain(used..used + keep).rev());
            });
            names.truncate(used);
        }
        self.resource_names = names;
        Ok(())
    }

    fn take_used() -> Box<Self> {
        SOTW_POOL.with_borrow_mut(Vec::pop).unwrap_or_default()
    }

    fn give_back(self: Box<Self>) {
        SOTW_POOL.with_borrow_mut(|pool| {
            if pool.len() < POOL_PER_THREAD {
                pool.push(self);
            }
        });
    }
}

impl Recycle for DeltaDiscoveryRequest {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xds_core::envoy::config::cluster::v3::Cluster;
    use xds_core::envoy::service::discovery::v3::DiscoveryResponse;
    use xds_core::XdsResource;

    #[test]
    fn recycled_requests_decode_like_fresh_ones() {
        use xds_core::envoy::config::core::v3::Node;
        use xds_core::google::rpc::Status as RpcStatus;
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let requests = [
            DiscoveryRequest {
                node: Some(Node { id: "n".into(), ..Default::default() }),
                type_url: "t".into(),
                resource_names: names(&["a", "b", "c"]),
                ..Default::default()
            },
            DiscoveryRequest {
                version_info: "v1".into(),
                response_nonce: "1".into(),
                type_url: "t".into(),
                resource_names: names(&["a", "bbbbbbbbbbbbbbbbbbbbbbbb", "c", "d"]),
                ..Default::default()
            },
            DiscoveryRequest {
                version_info: "v1".into(),
                response_nonce: "2".into(),
                resource_names: names(&["z"]),
                error_detail: Some(RpcStatus { code: 3, message: "bad".into(), ..Default::default() }),
                ..Default::default()
            },
            DiscoveryRequest::default(),
            DiscoveryRequest { resource_names: names(&["", "x"]), ..Default::default() },
        ];
        let mut recycled = DiscoveryRequest::default();
        for r in &requests {
            let bytes = r.encode_to_vec();
            recycled.decode_into(&mut bytes.as_slice()).expect("decodes");
            assert_eq!(&recycled, r);
        }
        // The same names again (the common ACK), then one changed in place, one longer, one
        // shorter, and bytes that are not UTF-8 where an equally long valid name was.
        for names_now in [
            names(&["a", "bbbbbbbbbbbbbbbbbbbbbbbb", "c", "d"]),
            names(&["a", "bbbbbbbbbbbbbbbbbbbbbbbb", "c", "d"]),
            names(&["a", "bbbbbbbbbbbbbbbbbbbbbbbc", "c", "d"]),
            names(&["a", &"x".repeat(200), "c", "d"]),
            names(&["a", &"x".repeat(200), "c", "d"]),
            names(&["a", "", "c"]),
        ] {
            let r = DiscoveryRequest { resource_names: names_now, ..requests[1].clone() };
            recycled.decode_into(&mut r.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(&recycled, &r);
        }
        assert!(recycled.decode_into(&mut &[0x1a, 0x01, 0x61][..]).is_ok());
        assert_eq!(recycled.resource_names, ["a"]);
        assert!(recycled.decode_into(&mut &[0x1a, 0x01, 0xff][..]).is_err(), "not UTF-8 where \"a\" was");
        assert!(recycled.decode_into(&mut &[0x1a, 0x05, 0x61][..]).is_err(), "shorter than its length");
        // Bad input is an error, not a panic.
        let mut bad = requests[1].encode_to_vec();
        bad.truncate(bad.len() - 2);
        assert!(recycled.decode_into(&mut bad.as_slice()).is_err());
        assert!(recycled.decode_into(&mut &[0x1a, 0x02, 0xff, 0xfe][..]).is_err(), "invalid UTF-8 in a name");
    }

    #[test]
    fn names_left_over_by_a_shorter_request_come_back_in_their_order() {
        // One stream's ACK names every cluster; the used request is next decoded into by another
        // stream's request without names, then a third stream subscribes to the same clusters.
        let list: Vec<String> = (0..50).map(|i| format!("cluster-{i}")).collect();
        let with_names = DiscoveryRequest { resource_names: list.clone(), ..Default::default() }.encode_to_vec();
        let mut used = DiscoveryRequest::default();
        used.decode_into(&mut with_names.as_slice()).expect("decodes");
        let buffers: Vec<*const u8> = used.resource_names.iter().map(|n| n.as_ptr()).collect();
        used.decode_into(&mut DiscoveryRequest::default().encode_to_vec().as_slice()).expect("decodes");
        assert!(used.resource_names.is_empty());

        let mut fresh = DiscoveryRequest::default();
        fresh.decode_into(&mut with_names.as_slice()).expect("decodes");
        assert_eq!(fresh.resource_names, list);
        // Each name is found in the very string it was decoded into before: nothing copied.
        let now: Vec<*const u8> = fresh.resource_names.iter().map(|n| n.as_ptr()).collect();
        assert_eq!(now, buffers);
    }

    #[test]
    fn written_response_decodes_as_discovery_response() {
        let clusters: Vec<_> = ["a", "b"]
            .iter()
            .map(|n| Arc::new(Cluster { name: n.to_string(), ..Default::default() }.encode_resource()))
            .collect();
        let r = SotwResponse {
            type_url: xds_core::type_url::CLUSTER.into(),
            version: "v1".into(),
            nonce: "7".into(),
            resources: clusters.into(),
            wrap_ttl: false,
            heartbeat: false,
        };
        let mut buf = Vec::new();
        r.write_to(&mut buf);
        assert_eq!(buf.len(), r.encoded_len());
        let decoded = DiscoveryResponse::decode(buf.as_slice()).expect("decodes");
        assert_eq!(decoded.version_info, "v1");
        assert_eq!(decoded.nonce, "7");
        assert_eq!(decoded.type_url, xds_core::type_url::CLUSTER);
        assert_eq!(decoded.resources.len(), 2);
        assert_eq!(decoded.resources[1].type_url, xds_core::type_url::CLUSTER);
        let b = Cluster::decode(decoded.resources[1].value.as_slice()).expect("cluster");
        assert_eq!(b.name, "b");
    }

    #[test]
    fn written_delta_response_decodes() {
        use xds_core::envoy::service::discovery::v3::DeltaDiscoveryResponse;
        let a = Arc::new(
            Cluster { name: "a".into(), ..Default::default() }
                .encode_resource()
                .with_ttl(Some(std::time::Duration::from_millis(1500))),
        );
        let r = DeltaResponse {
            type_url: xds_core::type_url::CLUSTER.into(),
            system_version: "s1".into(),
            nonce: "3".into(),
            resources: vec![DeltaResource {
                name: "xdstp://x/y?b=1&a=2".into(),
                resource: a.clone(),
                heartbeat: false,
            }],
            removed: vec!["gone".into()],
        };
        let mut buf = Vec::new();
        r.write_to(&mut buf);
        assert_eq!(buf.len(), r.encoded_len());
        let d = DeltaDiscoveryResponse::decode(buf.as_slice()).expect("decodes");
        assert_eq!(d.system_version_info, "s1");
        assert_eq!(d.nonce, "3");
        assert_eq!(d.removed_resources, ["gone"]);
        let res = &d.resources[0];
        assert_eq!(res.name, "xdstp://x/y?b=1&a=2");
        assert_eq!(res.version, a.version());
        assert_eq!(res.ttl.as_ref().map(|t| (t.seconds, t.nanos)), Some((1, 500_000_000)));
        let any = res.resource.as_ref().expect("body");
        assert_eq!(Cluster::decode(any.value.as_slice()).expect("cluster").name, "a");

        let hb = DeltaResponse {
            resources: vec![DeltaResource { name: "a".into(), resource: a.clone(), heartbeat: true }],
            ..r
        };
        let mut buf = Vec::new();
        hb.write_to(&mut buf);
        assert_eq!(buf.len(), hb.encoded_len());
        let d = DeltaDiscoveryResponse::decode(buf.as_slice()).expect("decodes");
        assert!(d.resources[0].resource.is_none(), "a heartbeat has no body");
        assert_eq!(d.resources[0].version, a.version());
    }

    #[test]
    fn sotw_ttl_wrappers_and_heartbeats() {
        use xds_core::envoy::service::discovery::v3::Resource;
        let ttl = Some(std::time::Duration::from_secs(30));
        let a = Arc::new(Cluster { name: "a".into(), ..Default::default() }.encode_resource().with_ttl(ttl));
        let b = Arc::new(Cluster { name: "b".into(), ..Default::default() }.encode_resource());
        for heartbeat in [false, true] {
            let r = SotwResponse {
                type_url: xds_core::type_url::CLUSTER.into(),
                version: "v1".into(),
                nonce: "1".into(),
                resources: vec![a.clone(), b.clone()].into(),
                wrap_ttl: true,
                heartbeat,
            };
            let mut buf = Vec::new();
            r.write_to(&mut buf);
            assert_eq!(buf.len(), r.encoded_len());
            let d = DiscoveryResponse::decode(buf.as_slice()).expect("decodes");
            assert_eq!(d.resources[0].type_url, xds_core::type_url::RESOURCE_WRAPPER);
            let w = Resource::decode(d.resources[0].value.as_slice()).expect("wrapper");
            assert_eq!((w.name.as_str(), w.version.as_str()), ("a", a.version()));
            assert_eq!(w.ttl.as_ref().map(|t| t.seconds), Some(30));
            assert_eq!(w.resource.is_none(), heartbeat);
            if let Some(body) = w.resource {
                assert_eq!(Cluster::decode(body.value.as_slice()).expect("cluster").name, "a");
            }
            assert_eq!(d.resources[1].type_url, xds_core::type_url::CLUSTER, "no TTL: not wrapped");
        }
    }
}
