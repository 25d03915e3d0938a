//! Criterion benchmarks of fan-out: one new resource set reaching 10,000 streams' state
//! machines, each building its response and taking the ACK (the per-stream CPU work of an update,
//! without the network).

use std::hint::black_box;
use std::sync::Arc;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use xds_benches::endpoint_set;
use xds_benches::scenario::load_assignment;
use xds_cache::{DeltaStream, SotwStream};
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_core::{type_url, ResourceSet, XdsResource};

const STREAMS: usize = 10_000;

fn node() -> Option<Node> {
    Some(Node { id: "n".into(), ..Default::default() })
}

/// `STREAMS` SotW streams subscribed by name to every resource of `first`, holding it (ACKed),
/// each with its ACK request ready to be filled in (what the server decodes from the wire is
/// not part of the state machines' cost).
fn sotw_streams(names: &[String], first: &Arc<ResourceSet>) -> Vec<(SotwStream, DiscoveryRequest)> {
    (0..STREAMS)
        .map(|_| {
            let mut s = SotwStream::ads();
            s.on_request(&DiscoveryRequest {
                node: node(),
                type_url: type_url::ENDPOINT.into(),
                resource_names: names.to_vec(),
                ..Default::default()
            })
            .expect("request");
            s.on_resources(type_url::ENDPOINT, Some(first.clone()));
            let r = s.next_response().expect("first");
            let ack = ack(names, &r.version, &r.nonce);
            s.on_request(&ack).expect("ack");
            (s, ack)
        })
        .collect()
}

fn ack(names: &[String], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url::ENDPOINT.into(),
        resource_names: names.to_vec(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// Every stream gets `next`, builds its response and takes the ACK.
fn sotw_round(streams: &mut [(SotwStream, DiscoveryRequest)], next: &Arc<ResourceSet>) -> usize {
    let mut sent = 0;
    for (s, ack) in streams {
        s.on_resources(type_url::ENDPOINT, Some(next.clone()));
        if let Some(r) = s.next_response() {
            sent += r.resources.len();
            ack.version_info.clear();
            ack.version_info.push_str(&r.version);
            ack.response_nonce.clear();
            ack.response_nonce.push_str(&r.nonce);
            s.on_request(ack).expect("ack");
        }
    }
    sent
}

/// Benchmarks `round` over streams built once (criterion calls the closure once per sample),
/// alternating between the two sets so every round is an update.
fn bench_rounds<S>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    build: impl Fn() -> Vec<S>,
    sets: &[Arc<ResourceSet>; 2],
    round: fn(&mut [S], &Arc<ResourceSet>) -> usize,
) {
    let mut streams = None;
    let mut flip = 0;
    g.bench_function(name, |b| {
        let streams = streams.get_or_insert_with(&build);
        b.iter(|| {
            flip ^= 1;
            black_box(round(streams, &sets[flip]))
        })
    });
}

fn sotw_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan-out to 10,000 SotW streams");
    g.sample_size(10);
    let names: Vec<String> = (0..100).map(|i| format!("cluster-{i}")).collect();
    let sets = [endpoint_set(100, 10, 1), endpoint_set(100, 10, 2)];
    bench_rounds(&mut g, "every CLA of 100 changes (S1 update)", || sotw_streams(&names, &sets[0]), &sets, sotw_round);
    // One CLA of the 100 changes: each stream still compares its 100 names and resends all 100.
    let mut one = (*sets[0]).clone();
    one.insert(load_assignment(7, 10, 9, 0).encode_resource());
    let one_sets = [sets[0].clone(), Arc::new(one)];
    bench_rounds(&mut g, "one CLA of 100 changes", || sotw_streams(&names, &one_sets[0]), &one_sets, sotw_round);
    g.finish();
}

fn delta_ack(t: &str, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest { type_url: t.into(), response_nonce: nonce.into(), ..Default::default() }
}

/// `count` delta streams on `t` (explicit `names`, or wildcard when `None`) holding `first`.
fn delta_streams(count: usize, names: Option<&[String]>, first: &Arc<ResourceSet>) -> Vec<DeltaStream> {
    (0..count)
        .map(|_| {
            let mut s = DeltaStream::ads();
            s.on_request(&DeltaDiscoveryRequest {
                node: node(),
                type_url: type_url::ENDPOINT.into(),
                resource_names_subscribe: names.map_or_else(|| vec!["*".into()], <[String]>::to_vec),
                ..Default::default()
            })
            .expect("request");
            s.on_resources(type_url::ENDPOINT, Some(first.clone()));
            let r = s.next_response().expect("first");
            s.on_request(&delta_ack(type_url::ENDPOINT, &r.nonce)).expect("ack");
            s
        })
        .collect()
}

fn delta_round(streams: &mut [DeltaStream], next: &Arc<ResourceSet>) -> usize {
    let mut sent = 0;
    for s in streams {
        s.on_resources(type_url::ENDPOINT, Some(next.clone()));
        if let Some(r) = s.next_response() {
            sent += r.resources.len();
            s.on_request(&delta_ack(type_url::ENDPOINT, &r.nonce)).expect("ack");
        }
    }
    sent
}

fn delta_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan-out to 10,000 delta streams");
    g.sample_size(10);
    let names: Vec<String> = (0..100).map(|i| format!("cluster-{i}")).collect();
    let sets = [endpoint_set(100, 10, 1), endpoint_set(100, 10, 2)];
    bench_rounds(
        &mut g,
        "every CLA of 100 changes, explicit names",
        || delta_streams(STREAMS, Some(&names), &sets[0]),
        &sets,
        delta_round,
    );
    g.finish();
    // 10,000 resources, one changes; wildcard streams share the set and hold no per-name copy.
    // 1,000 streams: each one's first response (10,000 resources) makes the set-up slow.
    let mut g = c.benchmark_group("fan-out to 1,000 delta streams");
    g.sample_size(10);
    let big = endpoint_set(10_000, 10, 1);
    let mut one = (*big).clone();
    one.insert(load_assignment(5_000, 10, 9, 0).encode_resource());
    let big_sets = [big.clone(), Arc::new(one)];
    bench_rounds(
        &mut g,
        "one CLA of 10,000 changes, wildcard",
        || delta_streams(STREAMS / 10, None, &big),
        &big_sets,
        delta_round,
    );
    g.finish();
}

criterion_group!(benches, sotw_fanout, delta_fanout);
criterion_main!(benches);
