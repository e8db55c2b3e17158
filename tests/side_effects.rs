//! End-to-end tests of side effects (SPEC §7, issue 8 SEMANTICS.md): `replicate` copies the
//! listed writes of the listed routes to another pool, fire and forget; its bounded queue drops
//! and counts what does not fit; a dead or hung target never slows or fails the client; the
//! `write_on_miss` of a warm_first route is counted like any side effect, and its queue
//! overflows the same way; with two workers each copies its own clients' writes and the
//! counters add both up. Counters are read from the proxy's `stats`:
//! `effect:<NAME>:{queued,done,failed,dropped,depth}` with NAME `replicate.<index>` or
//! `write_on_miss.<route>`.
//!
//! Real memcached processes; a fake peer that never answers for a hung target (or that hangs
//! once written to, for a warm tier whose write-backs pile up), a port nothing listens on for a
//! dead one.

mod common;

use common::tiers::{
    dead_addr, effect, effects, pools_yaml, start_proxy, ttl_of, value_on, values, wait_value,
    LANDED,
};
use common::{wait_until, Behavior, Bifrost, Client, FakeBackend, Memcached};
use std::time::{Duration, Instant};

/// The longest a client may wait for one reply while side effects misbehave (a real memcached
/// answers in well under a millisecond; this is a loaded machine's margin).
const PROMPT: Duration = Duration::from_secs(1);

/// The usual setup: `workers` workers, route `rest` (every key) to pool `primary`, and
/// `side_effects[0]` a replicate of `commands` on `rest` to pool `replica` at `replica_addr`
/// with `extra` keys.
fn primary_and_replica(
    workers: usize,
    primary: &Memcached,
    replica_addr: &str,
    replica_timeout: &str,
    commands: &str,
    extra: &str,
) -> Bifrost {
    start_proxy(
        workers,
        &pools_yaml(&[
            ("primary", primary.addr(), "2s"),
            ("replica", replica_addr.to_string(), replica_timeout),
        ]),
        "  - {name: rest, match: \"*\", strategy: consistent_hash, backend: primary}\n",
        &format!("  - replicate: {{routes: [rest], to: replica, commands: [{commands}]{extra}}}\n"),
    )
}

/// One worker and a warm_first route `tiered` (every key) over pools `l1` (warm, at `warm`,
/// with `warm_timeout`) and `l2` (cold, at `cold`) with `write_on_miss: <write_on_miss>`.
fn tiered(warm: &str, warm_timeout: &str, cold: &str, write_on_miss: &str) -> Bifrost {
    start_proxy(
        1,
        &pools_yaml(&[
            ("l1", warm.to_string(), warm_timeout),
            ("l2", cold.to_string(), "2s"),
        ]),
        &format!(
            "  - name: tiered\n    match: \"*\"\n    strategy: warm_first\n    warm: l1\n    cold: l2\n\
             \x20   write_on_miss: {write_on_miss}\n"
        ),
        "",
    )
}

/// Sets `k0`..`k<n-1>` to `v` through `c`, each answered `STORED` (the primary's reply).
/// Returns the longest a reply took and how long all of them took.
fn set_keys(c: &mut Client, n: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let asked = Instant::now();
        assert_eq!(
            c.set(&format!("k{i}"), b"v", 0, 0),
            "STORED",
            "k{i}: the primary's reply"
        );
        slowest = slowest.max(asked.elapsed());
    }
    (slowest, started.elapsed())
}

/// The counters of side effect `name` after `offered` requests met its queue of `queue`: asserts
/// each request was queued or dropped and the queue held at most `queue`; returns (queued,
/// dropped, every counter for failure messages).
fn queued_or_dropped(c: &mut Client, name: &str, offered: u64, queue: u64) -> (u64, u64, String) {
    let all = effects(c, name);
    let (queued, dropped) = (effect(c, name, "queued"), effect(c, name, "dropped"));
    assert_eq!(
        queued + dropped,
        offered,
        "each of {offered} requests queued or dropped: {all}"
    );
    assert!(
        effect(c, name, "depth") <= queue,
        "the queue is bounded: {all}"
    );
    (queued, dropped, all)
}

#[test]
fn listed_writes_of_listed_routes_are_replicated_and_nothing_else() {
    // side_effects[0] copies sets of route `other` (o:*) to r0; side_effects[1] copies sets and
    // deletes of route `rest` to r1.
    let primary = Memcached::start();
    let r0 = Memcached::start();
    let r1 = Memcached::start();
    let bifrost = start_proxy(
        1,
        &pools_yaml(&[
            ("primary", primary.addr(), "2s"),
            ("r0", r0.addr(), "2s"),
            ("r1", r1.addr(), "2s"),
        ]),
        "  - {name: other, match: \"o:*\", strategy: consistent_hash, backend: primary}\n\
         \x20 - {name: rest, match: \"*\", strategy: consistent_hash, backend: primary}\n",
        "  - replicate: {routes: [other], to: r0, commands: [set]}\n\
         \x20 - replicate: {routes: [rest], to: r1, commands: [set, delete]}\n",
    );
    let (mut dp, mut d0, mut d1) = (primary.client(), r0.client(), r1.client());
    let mut c = bifrost.client();

    assert_eq!(c.set("k", b"v1", 5, 1000), "STORED");
    assert_eq!(value_on(&mut dp, "k").as_deref(), Some("v1"));
    wait_value(&mut d1, "k", Some("v1"), "the set of k replicated to r1");
    // The same bytes: flags and TTL too.
    d1.send(b"get k\r\n");
    let items = d1.read_values().expect("get k on r1");
    assert_eq!(items[0].flags, 5, "flags replicated");
    let t = ttl_of(&mut d1, "k");
    assert!(t <= 1000 && t > 990, "exptime replicated: t = {t}");

    assert_eq!(c.delete("k"), "DELETED");
    wait_value(&mut d1, "k", None, "the delete of k replicated to r1");

    // Unlisted commands (append, add) and a route r1's side effect does not list (o:*) are not
    // copied to r1. Each copy to r1 is queued in order on one connection, so once `marker` (a
    // listed set after them) is on r1, copies of them would be there already.
    assert_eq!(c.set("a", b"1", 0, 0), "STORED");
    assert_eq!(c.store("append", "a", b"2", 0, 0), "STORED");
    assert_eq!(c.store("add", "added", b"x", 0, 0), "STORED");
    assert_eq!(c.set("o:k", b"ov", 0, 0), "STORED");
    assert_eq!(c.set("marker", b"m", 0, 0), "STORED");
    wait_value(&mut d1, "marker", Some("m"), "the marker replicated to r1");
    assert_eq!(
        value_on(&mut d1, "a").as_deref(),
        Some("1"),
        "append is not copied"
    );
    assert_eq!(value_on(&mut d1, "added"), None, "add is not copied");
    assert_eq!(value_on(&mut d1, "o:k"), None, "route `other` is not r1's");
    wait_value(&mut d0, "o:k", Some("ov"), "o:k replicated to r0");
    assert_eq!(
        value_on(&mut d0, "marker"),
        None,
        "route `rest` is not r0's"
    );
    assert_eq!(
        value_on(&mut dp, "a").as_deref(),
        Some("12"),
        "the primary got all"
    );

    // Counters: set k, delete k, set a, set marker for [1]; set o:k for [0].
    let mut admin = bifrost.client();
    wait_until(LANDED, "every copy done", || {
        effect(&mut admin, "replicate.1", "done") == 4
            && effect(&mut admin, "replicate.0", "done") == 1
    });
    for (name, n) in [("replicate.1", 4), ("replicate.0", 1)] {
        let all = effects(&mut admin, name);
        assert_eq!(effect(&mut admin, name, "queued"), n, "{name}: {all}");
        assert_eq!(effect(&mut admin, name, "failed"), 0, "{name}: {all}");
        assert_eq!(effect(&mut admin, name, "dropped"), 0, "{name}: {all}");
        assert_eq!(effect(&mut admin, name, "depth"), 0, "{name}: {all}");
    }
}

#[test]
fn a_full_replicate_queue_drops_and_counts_and_never_slows_the_client() {
    // The replica accepts and never answers, with a 10 s timeout: the first 8 copies stay in
    // flight for the whole test, every later one finds the queue full.
    let primary = Memcached::start();
    let blackhole = FakeBackend::start(Behavior::NeverAnswer);
    let bifrost = primary_and_replica(1, &primary, &blackhole.addr(), "10s", "set", ", queue: 8");
    let mut c = bifrost.client();
    let (slowest, total) = set_keys(&mut c, 100);
    assert!(
        slowest < PROMPT,
        "a full queue never delays a reply: slowest {slowest:?}"
    );
    blackhole.wait_for_bytes(1, LANDED);
    let mut dp = primary.client();
    for i in 0..100 {
        assert_eq!(
            value_on(&mut dp, &format!("k{i}")).as_deref(),
            Some("v"),
            "k{i}"
        );
    }

    let name = "replicate.0";
    let (_, dropped, all) = queued_or_dropped(&mut c, name, 100, 8);
    assert!(dropped >= 80, "at most 8 fit the queue: {all}");
    if total < Duration::from_secs(9) {
        assert_eq!(
            effect(&mut c, name, "done"),
            0,
            "the blackhole answered nothing: {all}"
        );
    }
}

#[test]
fn replicating_to_a_dead_server_never_blocks_or_fails_the_client() {
    let primary = Memcached::start();
    let bifrost = primary_and_replica(1, &primary, &dead_addr(), "2s", "set", "");
    let mut c = bifrost.client();
    let (slowest, total) = set_keys(&mut c, 200);
    assert!(
        slowest < PROMPT,
        "a dead replica never delays a reply: slowest {slowest:?}"
    );
    assert!(total < Duration::from_secs(20), "200 sets took {total:?}");
    let name = "replicate.0";
    let mut admin = bifrost.client();
    wait_until(LANDED, "copies to the dead server counted failed", || {
        effect(&mut admin, name, "failed") > 0
    });
    // Nothing stays queued or is retried forever: every accepted copy ends, failed.
    wait_until(LANDED, "the replicate queue is empty", || {
        effect(&mut admin, name, "depth") == 0
    });
    let all = effects(&mut admin, name);
    let queued = effect(&mut admin, name, "queued");
    assert_eq!(queued + effect(&mut admin, name, "dropped"), 200, "{all}");
    assert_eq!(effect(&mut admin, name, "done"), 0, "{all}");
    assert_eq!(effect(&mut admin, name, "failed"), queued, "{all}");
}

#[test]
fn write_on_miss_counts_each_cold_hit_once() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let bifrost = tiered(&warm.addr(), "2s", &cold.addr(), "{ ttl: 300 }");
    let mut dc = cold.client();
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for k in &keys {
        assert_eq!(dc.set(k, b"v", 0, 0), "STORED");
    }
    let mut c = bifrost.client();
    for k in &keys {
        assert_eq!(value_on(&mut c, k).as_deref(), Some("v"), "{k}: a cold hit");
    }
    let name = "write_on_miss.tiered";
    wait_until(LANDED, "10 write-backs done", || {
        effect(&mut c, name, "done") >= 10
    });
    let all = effects(&mut c, name);
    assert_eq!(
        effect(&mut c, name, "queued"),
        10,
        "one per cold hit: {all}"
    );
    assert_eq!(effect(&mut c, name, "done"), 10, "{all}");
    assert_eq!(effect(&mut c, name, "failed"), 0, "{all}");
    assert_eq!(effect(&mut c, name, "dropped"), 0, "{all}");
    assert_eq!(effect(&mut c, name, "depth"), 0, "{all}");
    let mut dw = warm.client();
    for k in &keys {
        assert_eq!(value_on(&mut dw, k).as_deref(), Some("v"), "{k} in warm");
    }

    // Warm hits now (and a miss on both tiers): nothing more is written back.
    c.send(format!("get {} nowhere\r\n", keys.join(" ")).as_bytes());
    assert_eq!(c.read_values().expect("hits").len(), 10);
    assert_eq!(
        effect(&mut c, name, "queued"),
        10,
        "{}",
        effects(&mut c, name)
    );
}

#[test]
fn a_full_write_on_miss_queue_drops_and_counts_and_never_slows_the_client() {
    // Warm answers every read at once (a miss) and hangs from the first write it gets on, with
    // a 10 s timeout: the write-backs that fit the queue (4) stay in flight for the whole test,
    // every later one finds the queue full. The 40 keys are read in one multi-get (one window:
    // 40 keys are under the listener's multiget_window), so warm answers the read before any
    // write-back goes out on its one connection, which answers nothing after that.
    let warm = FakeBackend::start(Behavior::HangOnWrite);
    let cold = Memcached::start();
    let bifrost = tiered(&warm.addr(), "10s", &cold.addr(), "{ttl: 60, queue: 4}");
    let mut dc = cold.client();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for k in &keys {
        assert_eq!(dc.set(k, format!("cold-{k}").as_bytes(), 0, 0), "STORED");
    }

    let mut c = bifrost.client();
    let started = Instant::now();
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let got = values(&mut c);
    let took = started.elapsed();
    let want: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("cold-{k}")))
        .collect();
    assert_eq!(got, want, "every key a cold hit, in the asked order");
    assert!(
        took < PROMPT,
        "write-backs piling up never delay a reply: {took:?}"
    );
    // Each write-back was offered to the queue as cold's reply was handled, before the answer
    // to the client went out.
    let name = "write_on_miss.tiered";
    let (queued, dropped, all) = queued_or_dropped(&mut c, name, 40, 4);
    assert!(dropped > 0, "the queue of 4 overflowed: {all}");
    // What was queued went out to warm (and is still in flight there).
    wait_until(LANDED, "every queued write-back reached warm", || {
        let received = warm.received();
        let adds = received
            .split(|&b| b == b'\n')
            .filter(|line| line.starts_with(b"add "))
            .count();
        adds as u64 == queued
    });
    if started.elapsed() < Duration::from_secs(9) {
        let all = effects(&mut c, name);
        let depth = effect(&mut c, name, "depth");
        assert_eq!(depth, queued, "warm answered no write-back: {all}");
        assert_eq!(effect(&mut c, name, "done"), 0, "{all}");
        assert_eq!(effect(&mut c, name, "failed"), 0, "{all}");
    }
}

#[test]
fn with_two_workers_every_client_s_writes_are_replicated_and_counted_once() {
    // Sixteen clients at once: the kernel spreads them over both workers (SO_REUSEPORT), each
    // worker copies its clients' sets with its own queue, and the counters add up both.
    const CLIENTS: usize = 16;
    const SETS: usize = 16;
    let primary = Memcached::start();
    let replica = Memcached::start();
    let bifrost = primary_and_replica(2, &primary, &replica.addr(), "2s", "set", "");
    let (mut dp, mut dr) = (primary.client(), replica.client());
    let replica_conns = dr.stat("total_connections");
    let addr = bifrost.addr();
    std::thread::scope(|scope| {
        for t in 0..CLIENTS {
            let addr = &addr;
            scope.spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..SETS {
                    let (k, v) = (format!("c{t}:k{i}"), format!("v{t}-{i}"));
                    assert_eq!(c.set(&k, v.as_bytes(), 0, 0), "STORED", "{k}");
                }
            });
        }
    });

    for t in 0..CLIENTS {
        for i in 0..SETS {
            let (k, v) = (format!("c{t}:k{i}"), format!("v{t}-{i}"));
            assert_eq!(value_on(&mut dp, &k).as_deref(), Some(v.as_str()), "{k}");
            wait_value(&mut dr, &k, Some(&v), &format!("{k} replicated"));
        }
    }
    let mut admin = bifrost.client();
    assert_eq!(admin.stat("threads"), 2, "premise: two workers");
    let name = "replicate.0";
    let sets = (CLIENTS * SETS) as u64;
    wait_until(LANDED, "every copy counted done", || {
        effect(&mut admin, name, "done") == sets
    });
    let all = effects(&mut admin, name);
    assert_eq!(
        effect(&mut admin, name, "queued"),
        sets,
        "one copy per set: {all}"
    );
    assert_eq!(effect(&mut admin, name, "failed"), 0, "{all}");
    assert_eq!(effect(&mut admin, name, "dropped"), 0, "{all}");
    assert_eq!(effect(&mut admin, name, "depth"), 0, "{all}");
    // Each worker copies on its own connection to the replica: two, so both workers copied.
    assert_eq!(
        dr.stat("total_connections") - replica_conns,
        2,
        "premise: the clients were spread over both workers"
    );
}
