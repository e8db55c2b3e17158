//! Route-matching micro-benchmarks: ns per key for `Router::route` over a table of 100 routes,
//! and for `Pool::server_for` on a 4-server ketama ring.
//!
//! Run with `cargo bench --bench router`; each benchmark is kept short (20 samples, 2 s) so the
//! whole run takes well under a minute. Every benchmark processes one key per iteration and
//! reports it as one element (criterion prints elements/s next to the time).
//!
//! The table (built from a YAML string, as a config file would be) is a realistic mix: prefix
//! globs (`tenant18:*`, compiled to prefix tests), general globs (`?ession19:*`,
//! `[a-f]*:cache20`, with a class and a backtracking star), `{prefix: ...}` routes, a few
//! regexes (anchored and not), some routes limited to write or read commands (98 routes so
//! far), then a `*` route limited to `touch` on a 4-server `consistent_hash` pool (so the pool
//! exists without shadowing anything) and the catch-all `*` last: 100 routes. Every other route
//! is blind_forward to one backend, so only matching is measured.
//!
//! Cases (`router.route(0, Command::Get, key)`):
//! * `route/first`: the key matches the 1st route;
//! * `route/50th`: the key matches the 50th route, so 49 are tried and fail before it;
//! * `route/catch_all`: the key matches only the catch-all: all 99 others are tried (the worst
//!   case, including the regexes and the touch-only route's command check);
//! * `route/catch_all_no_regex`: the same key and table with its 4 regexes replaced by globs,
//!   to show what the regexes cost.
//!
//! `ring/server_for`: the server of a key on a `consistent_hash` pool of 4 servers (ketama,
//! fnv1a_64), cycling through 1024 different keys so the ring lookup is not trivially predicted.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use bifrost::config::{Config, Format};
use bifrost::protocol::Command;
use bifrost::routing::Router;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Number of routes in the table: `ROUTES - 2` mixed ones, the touch-only ring route and the
/// catch-all.
const ROUTES: usize = 100;

/// The `match` (and optional `commands`) of route `i` (0-based), for `i < ROUTES - 2`; with
/// `regexes` false, the four regex routes are globs like their neighbours.
fn route_entry(i: usize, regexes: bool) -> String {
    // Six kinds in turn; a few regexes sprinkled in; one route in seven limited to some commands.
    let matcher = match i {
        // Regexes: anchored, unanchored (scans the key) and with alternation.
        13 if regexes => r#"{ regex: "^feed:[0-9]+$" }"#.to_string(),
        37 if regexes => r#"{ regex: ":v[0-9]+:draft$" }"#.to_string(),
        61 if regexes => r#"{ regex: "^(img|thumb|avatar)[0-9]*:" }"#.to_string(),
        85 if regexes => r#"{ regex: "^rate:[a-z]+:[0-9]{2,}$" }"#.to_string(),
        _ => match i % 6 {
            0 => format!("\"tenant{i}:*\""),
            1 => format!("\"?ession{i}:*\""),
            2 => format!("\"[a-f]*:cache{i}\""),
            3 => format!("{{ prefix: \"app{i}/\" }}"),
            4 => format!("\"user:{i}:*:profile\""),
            _ => format!("\"cfg[0-9][0-9]:{i}:*\""),
        },
    };
    let mut entry = format!("  - name: r{i}\n    match: {matcher}\n");
    match i % 7 {
        // Writes only: a get never takes it.
        3 => entry.push_str("    commands: [set, add, replace, delete]\n"),
        // Reads only: a get does.
        5 => entry.push_str("    commands: [get, gets, gat, gats]\n"),
        _ => {}
    }
    entry.push_str("    strategy: blind_forward\n    backend: main\n");
    entry
}

/// The whole configuration, YAML.
fn config_text(regexes: bool) -> String {
    let mut text = String::from(
        "workers: 1
listeners:
  - name: main
    bind: 127.0.0.1:0
backends:
  main:
    servers: [127.0.0.1:11211]
  ring4:
    servers: [10.0.0.1:11211, 10.0.0.2:11211, 10.0.0.3:11211, 10.0.0.4:11211]
    distribution: ketama
    hash: fnv1a_64
routes:
",
    );
    for i in 0..ROUTES - 2 {
        text.push_str(&route_entry(i, regexes));
    }
    // The only route on the ring pool limits itself to a command the benchmark never asks, so
    // it does not shadow the catch-all (the pool is measured on its own below).
    text.push_str(
        "  - name: ring
    match: \"*\"
    commands: [touch]
    strategy: consistent_hash
    backend: ring4
",
    );
    text.push_str(
        "  - name: rest
    match: \"*\"
    strategy: blind_forward
    backend: main
",
    );
    text
}

fn build_router(regexes: bool) -> Router {
    let text = config_text(regexes);
    let config = match Config::parse(&text, "bench.yaml", Format::Yaml) {
        Ok(config) => config,
        Err(errors) => panic!("bench config does not load: {errors:?}\n{text}"),
    };
    match Router::new(&config) {
        Ok(router) => router,
        Err(e) => panic!("Router::new: {e}"),
    }
}

fn route_index(router: &Router, name: &str) -> usize {
    let found = router.routes().iter().position(|r| r.name == name);
    found.unwrap_or_else(|| panic!("no route {name}"))
}

/// Benchmarks `router.route(0, Command::Get, key)` and checks it lands on route `want`.
fn bench_route(c: &mut Criterion, router: &Router, name: &str, key: &[u8], want: &str) {
    let want = route_index(router, want);
    assert_eq!(
        router.route(0, Command::Get, key),
        Some(want),
        "{name}: {} goes elsewhere",
        String::from_utf8_lossy(key)
    );
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| router.route(black_box(0), black_box(Command::Get), black_box(key)))
    });
    group.finish();
}

fn routes(c: &mut Criterion) {
    let router = build_router(true);
    assert_eq!(router.routes().len(), ROUTES);
    // r0 = "tenant0:*".
    bench_route(c, &router, "first", b"tenant0:user:1234567:settings", "r0");
    // r49 = "?ession49:*" (49 % 6 == 1; 49 % 7 == 0, no command filter).
    bench_route(c, &router, "50th", b"session49:8f14e45fceea167a5a36", "r49");
    // Nothing but the catch-all: the worst case.
    bench_route(
        c,
        &router,
        "catch_all",
        b"zz:unmatched:key:0000001234567",
        "rest",
    );
    // The same table with its 4 regexes turned into globs: how much of the worst case they are.
    let globs_only = build_router(false);
    bench_route(
        c,
        &globs_only,
        "catch_all_no_regex",
        b"zz:unmatched:key:0000001234567",
        "rest",
    );
}

fn ring(c: &mut Criterion) {
    let router = build_router(true);
    let pool = router.pools().iter().find(|p| p.name == "ring4");
    let pool = pool.unwrap_or_else(|| panic!("no pool ring4"));
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|n| {
            let mut key = String::new();
            let _ = write!(key, "user:profile:{n:08}");
            key.into_bytes()
        })
        .collect();
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("server_for", |b| {
        let mut n = 0usize;
        let mut random = bifrost::routing::ring::random_seed();
        b.iter(|| {
            n = (n + 1) & 1023;
            pool.server_for(black_box(&keys[n]), &mut random)
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = routes, ring
}
criterion_main!(benches);
