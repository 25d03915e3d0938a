//! Criterion benchmarks of response encoding: what one stream's response costs on the wire.
//!
//! The server's codec is private to `xds-server`; it writes a `DiscoveryResponse` field by field
//! from the resources' pre-encoded `Any` bytes. Here that is compared with what a server that
//! re-encodes every resource for every stream pays (prost, from the Envoy messages), and with
//! prost encoding a response whose `Any`s are already encoded (one copy of every value).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xds_benches::cla;
use xds_core::bytes::{BufMut, BytesMut};
use xds_core::envoy::service::discovery::v3::DiscoveryResponse;
use xds_core::google::protobuf::Any;
use xds_core::prost::encoding::{encode_key, encode_varint, WireType};
use xds_core::prost::{Message, Name};
use xds_core::{type_url, EncodedResource, XdsResource};

/// Writes a length-delimited field.
fn field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// The EDS response of `resources`, as prost builds it.
fn response(resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: "v1".into(),
        type_url: type_url::ENDPOINT.into(),
        nonce: "17".into(),
        resources,
        ..Default::default()
    }
}

/// `Any`s holding copies of the pre-encoded values.
fn copied(encoded: &[EncodedResource]) -> Vec<Any> {
    encoded.iter().map(|r| Any { type_url: r.type_url().to_string(), value: r.value().to_vec() }).collect()
}

fn encoding(c: &mut Criterion) {
    let messages: Vec<_> = (0..100).map(|i| cla(&format!("cluster-{i}"), 10, 1)).collect();
    let encoded: Vec<EncodedResource> = messages.iter().map(|m| m.encode_resource()).collect();
    let wire: usize = encoded.iter().map(|r| r.any_bytes().len() + 3).sum();
    let mut g = c.benchmark_group("SotW EDS response of 100 CLAs x 10 endpoints");
    g.throughput(Throughput::Bytes(wire as u64));
    g.bench_function("prost, re-encoding every resource (per-stream encode)", |b| {
        b.iter(|| {
            let resp = response(
                messages
                    .iter()
                    .map(|m| Any {
                        type_url: xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment::type_url(),
                        value: m.encode_to_vec(),
                    })
                    .collect(),
            );
            black_box(resp.encode_to_vec())
        })
    });
    g.bench_function("prost, from pre-encoded Any values (copied into the message)", |b| {
        b.iter(|| black_box(response(copied(&encoded)).encode_to_vec()))
    });
    g.bench_function("field by field from shared Any bytes (the server codec's approach)", |b| {
        let mut buf = BytesMut::with_capacity(wire + 256);
        b.iter(|| {
            buf.clear();
            field(1, b"v1", &mut buf);
            for r in &encoded {
                field(2, r.any_bytes(), &mut buf);
            }
            field(4, type_url::ENDPOINT.as_bytes(), &mut buf);
            field(5, b"17", &mut buf);
            black_box(buf.len())
        })
    });
    g.finish();

    // The client side of the load generator: decode the response and every resource.
    let resp = response(copied(&encoded)).encode_to_vec();
    c.bench_function("client decode of that response and its 100 CLAs", |b| {
        b.iter(|| {
            let r = DiscoveryResponse::decode(resp.as_slice()).expect("response");
            let n: usize = r
                .resources
                .iter()
                .map(|a| {
                    xds_core::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(a.value.as_slice())
                        .expect("cla")
                        .endpoints
                        .len()
                })
                .sum();
            black_box(n)
        })
    });
}

criterion_group!(benches, encoding);
criterion_main!(benches);
