//! End-to-end tests of side effects (SPEC §7, issue 8 SEMANTICS.md): `replicate` copies the
//! listed writes of the listed routes to another pool, fire and forget; its bounded queue drops
//! and counts what does not fit; a dead or hung target never slows or fails the client; the
//! `write_on_miss` of a warm_first route is counted like any side effect. Counters are read from
//! the proxy's `stats`: `effect:<NAME>:{queued,done,failed,dropped,depth}` with NAME
//! `replicate.<index>` or `write_on_miss.<route>`.
//!
//! Real memcached processes; a fake peer that never answers for a hung target, a port nothing
//! listens on for a dead one.

mod common;

use common::{free_port, wait_until, Behavior, Bifrost, Client, FakeBackend, Memcached};
use std::time::{Duration, Instant};

/// How long a background copy may take to show (loaded 2-core box).
const LANDED: Duration = Duration::from_secs(5);
/// The longest a client may wait for one reply while side effects misbehave (a real memcached
/// answers in well under a millisecond; this is a loaded machine's margin).
const PROMPT: Duration = Duration::from_secs(1);

/// Starts bifrost with one worker, the pools `pools` (name, "host:port", timeout; one server
/// each) and the YAML lines of `routes` and `side_effects` (none when empty).
fn start(pools: &[(&str, String, &str)], routes: &str, side_effects: &str) -> Bifrost {
    let mut backends = String::new();
    for (name, addr, timeout) in pools {
        backends.push_str(&format!(
            "  {name}:\n    servers: [\"{addr}\"]\n    timeout: {timeout}\n    connections: 1\n"
        ));
    }
    let routes = routes.to_string();
    let side_effects = if side_effects.is_empty() {
        String::new()
    } else {
        format!("side_effects:\n{side_effects}")
    };
    Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n{backends}\
                 routes:\n{routes}\
                 {side_effects}"
            )
        },
        &[],
    )
}

/// The usual setup: route `rest` (every key) to pool `primary`, and `side_effects[0]` a
/// replicate of `commands` on `rest` to pool `replica` at `replica_addr` with `extra` keys.
fn primary_and_replica(
    primary: &Memcached,
    replica_addr: &str,
    replica_timeout: &str,
    commands: &str,
    extra: &str,
) -> Bifrost {
    start(
        &[
            ("primary", primary.addr(), "2s"),
            ("replica", replica_addr.to_string(), replica_timeout),
        ],
        "  - {name: rest, match: \"*\", strategy: consistent_hash, backend: primary}\n",
        &format!("  - replicate: {{routes: [rest], to: replica, commands: [{commands}]{extra}}}\n"),
    )
}

/// A counter of side effect `name` (`effect:<name>:<field>`) from the proxy's `stats`.
fn effect(c: &mut Client, name: &str, field: &str) -> u64 {
    c.stat(&format!("effect:{name}:{field}"))
}

/// Every counter of side effect `name`, for failure messages.
fn effects(c: &mut Client, name: &str) -> String {
    let stats = c.stats();
    let mut lines: Vec<String> = stats
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("effect:{name}:")))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.sort();
    lines.join(" ")
}

/// The value of `key` on a server, read with `get`.
fn value_on(c: &mut Client, key: &str) -> Option<String> {
    c.get(key)
        .map(|data| String::from_utf8_lossy(&data).into_owned())
}

/// Waits until `key` on the server `direct` talks to has the value `want` (`None`: absent).
fn wait_value(direct: &mut Client, key: &str, want: Option<&str>, what: &str) {
    wait_until(LANDED, what, || value_on(direct, key).as_deref() == want);
}

/// The remaining TTL memcached reports for `key` (`mg <key> t`): -1 for none.
fn ttl_of(c: &mut Client, key: &str) -> i64 {
    c.send(format!("mg {key} t\r\n").as_bytes());
    let line = c.read_line();
    let t = line
        .split(' ')
        .skip(1)
        .find_map(|f| f.strip_prefix('t'))
        .unwrap_or_else(|| panic!("mg {key} t: no TTL in {line:?}"));
    t.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Sends `set key 0 0 <len>` and returns the reply line and how long it took.
fn timed_set(c: &mut Client, key: &str, value: &str) -> (String, Duration) {
    let started = Instant::now();
    let line = c.set(key, value.as_bytes(), 0, 0);
    (line, started.elapsed())
}

#[test]
fn listed_writes_of_listed_routes_are_replicated_and_nothing_else() {
    // side_effects[0] copies sets of route `other` (o:*) to r0; side_effects[1] copies sets and
    // deletes of route `rest` to r1.
    let primary = Memcached::start();
    let r0 = Memcached::start();
    let r1 = Memcached::start();
    let bifrost = start(
        &[
            ("primary", primary.addr(), "2s"),
            ("r0", r0.addr(), "2s"),
            ("r1", r1.addr(), "2s"),
        ],
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
    let bifrost = primary_and_replica(&primary, &blackhole.addr(), "10s", "set", ", queue: 8");
    let mut c = bifrost.client();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        let (line, took) = timed_set(&mut c, &format!("k{i}"), "v");
        assert_eq!(line, "STORED", "k{i}: the primary's reply");
        slowest = slowest.max(took);
    }
    let total = started.elapsed();
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
    let all = effects(&mut c, name);
    let (queued, dropped) = (
        effect(&mut c, name, "queued"),
        effect(&mut c, name, "dropped"),
    );
    assert_eq!(
        queued + dropped,
        100,
        "each copy accepted or dropped: {all}"
    );
    assert!(dropped >= 80, "at most 8 fit the queue: {all}");
    assert!(
        effect(&mut c, name, "depth") <= 8,
        "the queue is bounded: {all}"
    );
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
    let nothing = format!("127.0.0.1:{}", free_port()); // nothing listens there
    let bifrost = primary_and_replica(&primary, &nothing, "2s", "set", "");
    let mut c = bifrost.client();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let (line, took) = timed_set(&mut c, &format!("k{i}"), "v");
        assert_eq!(line, "STORED", "k{i}: the primary's reply");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < PROMPT,
        "a dead replica never delays a reply: slowest {slowest:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "200 sets took {:?}",
        started.elapsed()
    );
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
    let bifrost = start(
        &[("l1", warm.addr(), "2s"), ("l2", cold.addr(), "2s")],
        "  - name: tiered\n    match: \"*\"\n    strategy: warm_first\n    warm: l1\n    cold: l2\n\
         \x20   write_on_miss: { ttl: 300 }\n",
        "",
    );
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
