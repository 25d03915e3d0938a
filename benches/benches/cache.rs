//! Criterion benchmarks of the cache side: building and encoding snapshots, building SotW
//! responses, diffing resource sets, the delta machine's response, and the per-resource update
//! path of `SnapshotCache`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use xds_benches::scenario::{load_assignment, Scenario, GROUP};
use xds_benches::{cla, endpoint_set};
use xds_cache::{DeltaStream, SnapshotCache, SotwStream};
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_core::{type_url, ResourceSet, SingleGroup, XdsResource};

fn encode(c: &mut Criterion) {
    let messages: Vec<_> = (0..100).map(|i| cla(&format!("cluster-{i}"), 10, 1)).collect();
    c.bench_function("encode 100 CLAs x 10 endpoints into a set", |b| {
        b.iter(|| ResourceSet::from_resources(type_url::ENDPOINT, messages.iter().map(|m| m.encode_resource())))
    });
}

fn snapshot_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot build and encode");
    g.sample_size(20);
    for clusters in [100, 1_000, 10_000] {
        // Scenario::new encodes the clusters, listener and route once; snapshot() encodes every
        // ClusterLoadAssignment and builds the four sets.
        let scenario = Scenario::new(clusters, 10);
        g.bench_function(format!("{clusters} clusters x 10 endpoints + listener + route"), |b| {
            b.iter(|| black_box(scenario.snapshot()))
        });
    }
    g.finish();
}

fn node() -> Option<Node> {
    Some(Node { id: "n".into(), ..Default::default() })
}

fn sotw_response(c: &mut Criterion) {
    let names: Vec<String> = (0..100).map(|i| format!("cluster-{i}")).collect();
    let first = endpoint_set(100, 10, 1);
    let second = endpoint_set(100, 10, 2);
    let setup = || {
        let mut s = SotwStream::ads();
        s.on_request(&DiscoveryRequest {
            node: node(),
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

    let clusters = Scenario::new(1_000, 10).snapshot().get(type_url::CLUSTER).cloned();
    c.bench_function("SotW wildcard CDS first response of 1,000 clusters, one stream", |b| {
        b.iter_batched(
            || {
                let mut s = SotwStream::ads();
                s.on_request(&DiscoveryRequest {
                    node: node(),
                    type_url: type_url::CLUSTER.into(),
                    ..Default::default()
                })
                .expect("request");
                s
            },
            |mut s| {
                s.on_resources(type_url::CLUSTER, clusters.clone());
                black_box(s.next_response())
            },
            BatchSize::SmallInput,
        )
    });
}

fn delta_diff(c: &mut Criterion) {
    let mut g = c.benchmark_group("delta diff");
    let big = endpoint_set(10_000, 10, 1);
    let mut one_changed = (*big).clone();
    one_changed.insert(load_assignment(5_000, 10, 2, 0).encode_resource());
    g.bench_function("ResourceSet::diff, 1 change among 10,000", |b| {
        b.iter(|| black_box(one_changed.diff(&big).len()))
    });
    let small = endpoint_set(1_000, 10, 1);
    let all_changed = endpoint_set(1_000, 10, 2);
    g.bench_function("ResourceSet::diff, 1,000 of 1,000 changed", |b| {
        b.iter(|| black_box(all_changed.diff(&small).len()))
    });
    let one_changed = Arc::new(one_changed);
    // A wildcard delta stream that holds `big` gets a response with the one change.
    let setup = || {
        let mut s = DeltaStream::ads();
        s.on_request(&DeltaDiscoveryRequest { node: node(), type_url: type_url::CLUSTER.into(), ..Default::default() })
            .expect("request");
        let mut s2 = DeltaStream::ads();
        s2.on_request(&DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::ENDPOINT.into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .expect("request");
        s2.on_resources(type_url::ENDPOINT, Some(big.clone()));
        let r = s2.next_response().expect("first");
        s2.on_request(&DeltaDiscoveryRequest {
            type_url: type_url::ENDPOINT.into(),
            response_nonce: r.nonce.to_string(),
            ..Default::default()
        })
        .expect("ack");
        s2
    };
    g.bench_function("DeltaStream response, 1 change among 10,000 (wildcard)", |b| {
        b.iter_batched(
            setup,
            |mut s| {
                s.on_resources(type_url::ENDPOINT, Some(one_changed.clone()));
                black_box(s.next_response())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn per_resource_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("per-resource cache update");
    let cache = SnapshotCache::with_grouper(SingleGroup(GROUP.into()));
    cache.set_snapshot(GROUP, Scenario::new(10_000, 10).snapshot());
    let updates: Vec<_> = (0..64u32).map(|i| load_assignment(7, 10, i + 1, 0).encode_resource()).collect();
    let mut i = 0;
    g.bench_function("upsert_resource on a group of 10,000 CLAs, no watcher", |b| {
        b.iter(|| {
            i = (i + 1) % updates.len();
            black_box(cache.upsert_resource(GROUP, updates[i].clone()))
        })
    });
    // With 10,000 streams' receivers on the type (each stream holds one receiver).
    let receivers: Vec<_> =
        (0..10_000).map(|_| cache.watch_group(GROUP, type_url::ENDPOINT).expect("standard type")).collect();
    g.bench_function("upsert_resource on a group of 10,000 CLAs, 10,000 watchers", |b| {
        b.iter(|| {
            i = (i + 1) % updates.len();
            black_box(cache.upsert_resource(GROUP, updates[i].clone()))
        })
    });
    drop(receivers);
    let scenario = Scenario::new(1_000, 10);
    let (a, b2) = (scenario.snapshot(), Scenario::new(1_000, 11).snapshot());
    let mut flip = false;
    g.bench_function("set_snapshot of 1,000 clusters (every CLA changed)", |b| {
        b.iter(|| {
            flip = !flip;
            cache.set_snapshot(GROUP, if flip { a.clone() } else { b2.clone() });
        })
    });
    g.finish();
}

criterion_group!(benches, encode, snapshot_build, sotw_response, delta_diff, per_resource_update);
criterion_main!(benches);
