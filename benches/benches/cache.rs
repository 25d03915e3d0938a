//! Criterion benchmarks: encoding a snapshot, building SotW responses for many streams.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use xds_benches::{cla, endpoint_set};
use xds_cache::SotwStream;
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::{type_url, ResourceSet, XdsResource};

fn encode(c: &mut Criterion) {
    let messages: Vec<_> = (0..100).map(|i| cla(&format!("cluster-{i}"), 10, 1)).collect();
    c.bench_function("encode 100 CLAs x 10 endpoints into a set", |b| {
        b.iter(|| ResourceSet::from_resources(type_url::ENDPOINT, messages.iter().map(|m| m.encode_resource())))
    });
}

fn sotw_response(c: &mut Criterion) {
    let names: Vec<String> = (0..100).map(|i| format!("cluster-{i}")).collect();
    let first = endpoint_set(100, 10, 1);
    let second = endpoint_set(100, 10, 2);
    let setup = || {
        let mut s = SotwStream::ads();
        s.on_request(&DiscoveryRequest {
            node: Some(Node { id: "n".into(), ..Default::default() }),
            type_url: type_url::ENDPOINT.into(),
            resource_names: names.clone(),
            ..Default::default()
        })
        .expect("request");
        s.on_resources(type_url::ENDPOINT, Some(first.clone()));
        let r = s.next_response().expect("first");
        s.on_request(&DiscoveryRequest {
            type_url: type_url::ENDPOINT.into(),
            resource_names: names.clone(),
            version_info: r.version.to_string(),
            response_nonce: r.nonce.to_string(),
            ..Default::default()
        })
        .expect("ack");
        s
    };
    c.bench_function("SotW EDS update of 100 subscribed clusters, one stream", |b| {
        b.iter_batched(
            setup,
            |mut s| {
                s.on_resources(type_url::ENDPOINT, Some(second.clone()));
                black_box(s.next_response())
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, encode, sotw_response);
criterion_main!(benches);
