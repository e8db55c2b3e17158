//! Parser micro-benchmarks: ns per request for the hot request shapes and for reply framing.
//!
//! Run with `cargo bench --bench parser`; each benchmark is kept short (20 samples, 2 s) so the
//! whole run takes well under a minute.

use std::hint::black_box;
use std::time::Duration;

use bifrost::protocol::{parse_reply, parse_request, Limits, Parsed, ReplyKind};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// `get` with `keys` keys of the form `user:profile:<n>`.
fn multi_get(keys: usize) -> Vec<u8> {
    let mut line = b"get".to_vec();
    for n in 0..keys {
        line.extend_from_slice(format!(" user:profile:{n}").as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// Benchmarks `parse_request` on one complete request.
fn bench_request(c: &mut Criterion, name: &str, request: &[u8]) {
    let limits = Limits::default();
    assert!(matches!(
        parse_request(request, &limits),
        Ok(Parsed::Complete(r)) if r.len == request.len()
    ));
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| parse_request(black_box(request), black_box(&limits)))
    });
    group.finish();
}

fn requests(c: &mut Criterion) {
    bench_request(c, "get", b"get user:profile:12345\r\n");
    let mut set = b"set user:profile:12345 0 3600 100\r\n".to_vec();
    set.extend_from_slice(&[b'x'; 100]);
    set.extend_from_slice(b"\r\n");
    bench_request(c, "set_100b", &set);
    bench_request(c, "multi_get_10", &multi_get(10));
    bench_request(c, "multi_get_100", &multi_get(100));
}

fn replies(c: &mut Criterion) {
    let mut reply = b"VALUE user:profile:12345 0 100\r\n".to_vec();
    reply.extend_from_slice(&[b'x'; 100]);
    reply.extend_from_slice(b"\r\nEND\r\n");
    assert!(matches!(
        parse_reply(&reply, ReplyKind::Retrieval, 65536),
        Ok(Some(r)) if r.len == reply.len()
    ));
    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Elements(1));
    group.bench_function("value_end_100b", |b| {
        b.iter(|| parse_reply(black_box(&reply), black_box(ReplyKind::Retrieval), 65536))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = requests, replies
}
criterion_main!(benches);
