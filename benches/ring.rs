//! Key distribution micro-benchmarks: ns per key for the key hashes and for a ketama lookup.
//!
//! Run with `cargo bench --bench ring`. Each benchmark cycles through 1024 keys of the form
//! `user:profile:<n>` (17-20 bytes), so branch predictors and caches see varied keys; one
//! iteration is one key. 20 samples, 2 s each: the whole run takes under half a minute.

use std::hint::black_box;
use std::time::Duration;

use bifrost::config::placement::{Distribution, HashFunction};
use bifrost::routing::hash::hash;
use bifrost::routing::ring::{Ring, RingServer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEYS: usize = 1024;

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|n| format!("user:profile:{}", n * 7919).into_bytes())
        .collect()
}

/// A ketama ring of `n` servers `10.0.<i/256>.<i%256>:11211`, every fourth one weighted 2.
fn ring(n: usize, function: HashFunction) -> Ring {
    let servers: Vec<RingServer> = (0..n)
        .map(|i| {
            let address = format!("10.0.{}.{}:11211", i / 256, i % 256);
            RingServer::new(&address, None, if i % 4 == 3 { 2 } else { 1 })
        })
        .collect();
    Ring::new(&servers, Distribution::Ketama, function)
}

/// Benchmarks `f` over the key set, one key per iteration.
fn per_key(c: &mut Criterion, group: &str, name: &str, mut f: impl FnMut(&[u8]) -> usize) {
    let keys = keys();
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let key = keys.get(i).map_or(&[][..], Vec::as_slice);
            f(black_box(key))
        })
    });
    group.finish();
}

fn hashes(c: &mut Criterion) {
    for function in [HashFunction::Fnv1a_64, HashFunction::Md5] {
        per_key(c, "hash", function.name(), |key| {
            hash(function, key) as usize
        });
    }
}

fn lookups(c: &mut Criterion) {
    for servers in [4, 100] {
        for function in [HashFunction::Fnv1a_64, HashFunction::Md5] {
            let ring = ring(servers, function);
            let name = format!("ketama_{}_{servers}_servers", function.name());
            // Ketama: the random generator state is never used.
            per_key(c, "server_for", &name, |key| ring.server_for(key, &mut 0));
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = hashes, lookups
}
criterion_main!(benches);
