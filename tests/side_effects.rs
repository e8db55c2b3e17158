//! End-to-end tests of side effects (SPEC §7, issue 8 SEMANTICS.md): `replicate` copies the
//! listed writes of the listed routes to another pool, fire and forget; its bounded queue drops
//! and counts what does not fit; a dead or hung target never slows or fails the client; the
//! `write_on_miss` of a warm_first route is counted like any side effect, and its queue
//! overflows the same way; with two workers each copies its own clients' writes and the
//! counters add both up. Counters are read from the proxy's `stats`:
//! `effect:<NAME>:{queued,done,failed,dropped,depth}` with NAME `replicate.<index>` or
//! `write_on_miss.<route>`.
//!
//! Side effects travel on connections of their own (one per worker and target server), so a
//! target that stalls on them never delays, fails or overloads the clients' requests to that
//! same server: the tests of a warm tier and of a replica that never answer writes, and of a
//! burst of copies beyond the connection cap, read and write through the stalled server while
//! its side effects pile up and time out.
//!
//! Real memcached processes; a fake peer that never answers for a hung target (or that hangs
//! once written to, for a warm tier or replica whose side effects pile up, and then may still
//! hold keys its readers find), a relay that delays a real memcached's replies for a slow
//! one, a port nothing listens on for a dead one.

mod common;

use common::tiers::pool_yaml;
use common::tiers::{
    dead_addr, effect, effects, pools_yaml, start_proxy, ttl_of, value_on, wait_value, LANDED,
};
use common::{wait_until, warm_value, Behavior, Bifrost, Client, FakeBackend, Memcached, Relay};
use std::sync::atomic::{AtomicBool, Ordering};
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
    // Warm answers every read at once (a miss) and any connection of it hangs from the first
    // write it gets on, with a 10 s timeout: the write-backs that fit the queue (4) stay in
    // flight for the whole test, every later one finds the queue full. The 40 keys are read
    // one by one, so from the second read on, write-backs hang at warm while the client reads
    // warm again: its reads go on a connection the write-backs never use, so each is answered
    // at once.
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
    let mut slowest = Duration::ZERO;
    for k in &keys {
        let asked = Instant::now();
        let want = format!("cold-{k}");
        assert_eq!(
            value_on(&mut c, k).as_deref(),
            Some(want.as_str()),
            "{k}: a cold hit"
        );
        slowest = slowest.max(asked.elapsed());
    }
    assert!(
        slowest < PROMPT,
        "write-backs piling up never delay a reply: slowest {slowest:?}"
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

/// How long the stalled-target tests keep reading after the first side-effect timeout, so that
/// reads overlap the side-effect connection's reset and what follows it.
const AFTER_TIMEOUT: Duration = Duration::from_millis(500);

/// What one reading client saw: each reply's latency and every wrong or failed reply.
#[derive(Default)]
struct Reads {
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

impl Reads {
    fn median(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.latencies.iter().max().copied().unwrap_or_default()
    }

    /// One line for the test's output: the numbers the closing note quotes.
    fn summary(&self, who: &str) -> String {
        format!(
            "{who}: {} requests, median {:?}, max {:?}, {} errors{}",
            self.latencies.len(),
            self.median(),
            self.max(),
            self.errors.len(),
            self.errors
                .first()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        )
    }

    /// Asserts every reply was right and each came well before the stalled target's timeout.
    fn assert_prompt(&self, who: &str) {
        let summary = self.summary(who);
        assert!(
            self.errors.is_empty(),
            "no wrong or failed reply: {summary}"
        );
        assert!(self.max() < PROMPT, "every reply prompt: {summary}");
        assert!(
            self.latencies.len() >= 10,
            "premise: the client made requests: {summary}"
        );
    }
}

/// Makes requests through `c` with `one` (request number -> Ok, or the error seen) until `stop`
/// is set, timing each.
fn keep_asking(
    c: &mut Client,
    stop: &AtomicBool,
    mut one: impl FnMut(&mut Client, usize) -> Result<(), String>,
) -> Reads {
    let mut reads = Reads::default();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let asked = Instant::now();
        let outcome = one(c, i);
        reads.latencies.push(asked.elapsed());
        if let Err(e) = outcome {
            reads.errors.push(e);
        }
        i += 1;
    }
    reads
}

/// A `get` of `hit<i % 50>`, which the `HitsHangOnWrite` server holds.
fn read_hit(c: &mut Client, i: usize) -> Result<(), String> {
    let key = format!("hit{}", i % 50);
    let want = warm_value(&key);
    match value_on(c, &key) {
        Some(v) if v == want => Ok(()),
        got => Err(format!("{key}: {got:?}")),
    }
}

#[test]
fn a_warm_tier_that_never_answers_writes_never_slows_or_fails_other_clients_reads() {
    // Warm holds the `hit*` keys and serves reads at once, but a connection that receives a
    // write never answers again (a warm whose write path is stuck). Client `reader` reads warm's
    // keys over and over; client `misser` reads keys only cold holds, each a cold hit whose
    // write-back `add` goes to warm and hangs there until warm's 2 s timeout resets the
    // write-backs' connection. The reader's replies stay right and prompt throughout: the
    // write-backs travel on a connection of their own.
    let warm = FakeBackend::start(Behavior::HitsHangOnWrite);
    let cold = Memcached::start();
    let bifrost = tiered(&warm.addr(), "2s", &cold.addr(), "{ttl: 60}");
    let mut dc = cold.client();
    for i in 0..50 {
        assert_eq!(dc.set(&format!("cold{i}"), b"c", 0, 0), "STORED");
    }
    let name = "write_on_miss.tiered";
    let stop = AtomicBool::new(false);
    let (mut reader, mut misser, mut admin) =
        (bifrost.client(), bifrost.client(), bifrost.client());
    let (reads, misses) = std::thread::scope(|scope| {
        let stop = &stop;
        let reads = scope.spawn(|| keep_asking(&mut reader, stop, read_hit));
        let misses = scope.spawn(|| {
            keep_asking(&mut misser, stop, |c, i| {
                let key = format!("cold{}", i % 50);
                match value_on(c, &key) {
                    Some(v) if v == "c" => Ok(()),
                    got => Err(format!("{key}: {got:?}")),
                }
            })
        });
        // Write-backs went out, hung, and timed out; the clients read on across the reset.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(LANDED, "a write-back timed out", || {
                effect(&mut admin, name, "failed") > 0
            });
            let timed_out = Instant::now();
            wait_until(LANDED, "the clients read on after the timeout", || {
                timed_out.elapsed() >= AFTER_TIMEOUT
            });
        }));
        stop.store(true, Ordering::SeqCst);
        let joined = (reads.join(), misses.join());
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        match joined {
            (Ok(r), Ok(m)) => (r, m),
            _ => panic!("a client thread panicked"),
        }
    });
    eprintln!("{}", reads.summary("reads of warm's keys"));
    eprintln!("{}", misses.summary("reads of cold's keys (write-backs)"));
    reads.assert_prompt("reads of warm's keys");
    misses.assert_prompt("reads of cold's keys");
    let all = effects(&mut admin, name);
    assert!(effect(&mut admin, name, "queued") > 0, "{all}");
    assert_eq!(
        effect(&mut admin, name, "done"),
        0,
        "warm answered no write: {all}"
    );
    assert!(
        admin.stat("side_effect_timeouts") > 0,
        "the write-backs' timeout is counted"
    );
    assert!(admin.stat("side_effect_resets") > 0);
    // Client traffic met no failure at all.
    assert_eq!(admin.stat("backend_errors"), 0, "no client request failed");
    assert_eq!(admin.stat("backend_timeouts"), 0);
}

#[test]
fn a_replica_that_never_answers_writes_never_slows_or_fails_its_readers() {
    // The replica is also read by clients (route `hits`), and never answers a write. Client
    // `writer` sets keys on the primary, each copied to the replica, where the copies hang
    // until the replica's 2 s timeout; client `reader` reads the replica's keys throughout.
    let primary = Memcached::start();
    let replica = FakeBackend::start(Behavior::HitsHangOnWrite);
    let bifrost = start_proxy(
        1,
        &pools_yaml(&[
            ("primary", primary.addr(), "2s"),
            ("replica", replica.addr(), "2s"),
        ]),
        "  - {name: hits, match: \"hit*\", strategy: consistent_hash, backend: replica}\n\
         \x20 - {name: rest, match: \"*\", strategy: consistent_hash, backend: primary}\n",
        "  - replicate: {routes: [rest], to: replica, commands: [set]}\n",
    );
    let name = "replicate.0";
    let stop = AtomicBool::new(false);
    let (mut reader, mut writer, mut admin) =
        (bifrost.client(), bifrost.client(), bifrost.client());
    let (reads, writes) = std::thread::scope(|scope| {
        let stop = &stop;
        let reads = scope.spawn(|| keep_asking(&mut reader, stop, read_hit));
        let writes = scope.spawn(|| {
            keep_asking(&mut writer, stop, |c, i| {
                match c.set(&format!("k{}", i % 50), b"v", 0, 0).as_str() {
                    "STORED" => Ok(()),
                    reply => Err(format!("set k{}: {reply}", i % 50)),
                }
            })
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(LANDED, "a copy timed out", || {
                effect(&mut admin, name, "failed") > 0
            });
            let timed_out = Instant::now();
            wait_until(LANDED, "the clients went on after the timeout", || {
                timed_out.elapsed() >= AFTER_TIMEOUT
            });
        }));
        stop.store(true, Ordering::SeqCst);
        let joined = (reads.join(), writes.join());
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        match joined {
            (Ok(r), Ok(w)) => (r, w),
            _ => panic!("a client thread panicked"),
        }
    });
    eprintln!("{}", reads.summary("reads of the replica's keys"));
    eprintln!("{}", writes.summary("sets on the primary (copied)"));
    reads.assert_prompt("reads of the replica's keys");
    writes.assert_prompt("sets on the primary");
    let all = effects(&mut admin, name);
    assert_eq!(
        effect(&mut admin, name, "done"),
        0,
        "the replica answered no copy: {all}"
    );
    assert!(admin.stat("side_effect_timeouts") > 0);
    assert_eq!(admin.stat("backend_errors"), 0, "no client request failed");
}

#[test]
fn a_burst_of_copies_beyond_the_connection_cap_never_overloads_a_client() {
    // The replica (a real memcached behind a relay that holds each reply 300 ms) takes at most
    // 16 requests queued per connection (`max_queued_requests`); the replicate queue takes
    // 1000. A client's burst of 200 sets on the primary puts 200 copies in flight to the
    // replica; meanwhile another client's set and get on the replica (route `r`) are served,
    // never answered `SERVER_ERROR backend overloaded`, and every copy lands.
    let primary = Memcached::start();
    let replica = Memcached::start();
    let slow = Relay::start(&replica.addr(), Duration::from_millis(300));
    let backends = format!(
        "{}{}    max_queued_requests: 16\n",
        pool_yaml("primary", &format!("[\"{}\"]", primary.addr()), "2s"),
        pool_yaml("replica", &format!("[\"{}\"]", slow.addr()), "5s"),
    );
    let bifrost = start_proxy(
        1,
        &backends,
        "  - {name: r, match: \"r:*\", strategy: consistent_hash, backend: replica}\n\
         \x20 - {name: rest, match: \"*\", strategy: consistent_hash, backend: primary}\n",
        "  - replicate: {routes: [rest], to: replica, commands: [set], queue: 1000}\n",
    );
    const BURST: usize = 200;
    let mut burst = Vec::new();
    for i in 0..BURST {
        burst.extend_from_slice(format!("set k{i} 0 0 1\r\nv\r\n").as_bytes());
    }
    let mut c = bifrost.client();
    c.send(&burst);
    for i in 0..BURST {
        assert_eq!(c.read_line(), "STORED", "set k{i}: the primary's reply");
    }
    // As many copies are in flight to the replica as its connection cap (more are on their
    // way: the replicate queue took them all).
    wait_until(LANDED, "16 copies reached the replica", || {
        let forwarded = slow.forwarded();
        forwarded
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"set k"))
            .count()
            >= 16
    });
    let mut other = bifrost.client();
    assert_eq!(other.set("r:x", b"mine", 0, 0), "STORED", "not overloaded");
    assert_eq!(value_on(&mut other, "r:x").as_deref(), Some("mine"));
    let name = "replicate.0";
    let mut admin = bifrost.client();
    wait_until(LANDED, "every copy done", || {
        effect(&mut admin, name, "done") + effect(&mut admin, name, "failed") >= BURST as u64
    });
    let all = effects(&mut admin, name);
    assert_eq!(effect(&mut admin, name, "done"), BURST as u64, "{all}");
    assert_eq!(effect(&mut admin, name, "dropped"), 0, "{all}");
    assert_eq!(admin.stat("backend_overloaded"), 0, "no request refused");
    let mut dr = replica.client();
    for i in [0, BURST / 2, BURST - 1] {
        assert_eq!(
            value_on(&mut dr, &format!("k{i}")).as_deref(),
            Some("v"),
            "k{i} copied"
        );
    }
}

#[test]
fn side_effects_sharing_a_target_drop_what_its_connection_cannot_take() {
    // Two replicates of the same route to the same replica, `queue: 4` each: the replica's
    // side-effect connection takes 4 (the largest queue), so once 4 copies hang there every
    // later copy of either is dropped and counted, never refused as `backend overloaded`, and
    // the client's sets are answered at once.
    let primary = Memcached::start();
    let blackhole = FakeBackend::start(Behavior::NeverAnswer);
    let bifrost = start_proxy(
        1,
        &pools_yaml(&[
            ("primary", primary.addr(), "2s"),
            ("replica", blackhole.addr(), "10s"),
        ]),
        "  - {name: rest, match: \"*\", strategy: consistent_hash, backend: primary}\n",
        "  - replicate: {routes: [rest], to: replica, commands: [set], queue: 4}\n\
         \x20 - replicate: {routes: [rest], to: replica, commands: [set], queue: 4}\n",
    );
    let mut c = bifrost.client();
    let (slowest, total) = set_keys(&mut c, 20);
    assert!(
        slowest < PROMPT,
        "a full connection never delays a reply: {slowest:?}"
    );
    let (q0, d0, all0) = queued_or_dropped(&mut c, "replicate.0", 20, 4);
    let (q1, d1, all1) = queued_or_dropped(&mut c, "replicate.1", 20, 4);
    assert_eq!(q0 + q1, 4, "the connection took 4 copies: {all0} / {all1}");
    assert_eq!(d0 + d1, 36, "{all0} / {all1}");
    assert_eq!(c.stat("backend_overloaded"), 0, "no request refused");
    if total < Duration::from_secs(9) {
        assert_eq!(effect(&mut c, "replicate.0", "failed"), 0, "{all0}");
        assert_eq!(effect(&mut c, "replicate.1", "failed"), 0, "{all1}");
    }
}
