//! End-to-end tests of the `parallel` strategy (SPEC §5, issue 8 SEMANTICS.md): reads go to
//! every backend at once and the first hit answers (all miss: a miss), late replies are read
//! and dropped (never reaching the client, never delaying its next request, never counted
//! twice); a multi-get takes each key from the backend that has it, in the asked order; gets
//! takes the first backend in order that hits; writes go to all and are answered per
//! `writes: all | majority | first`.
//!
//! Real memcached processes; a delaying relay in front of one where a backend must be slow but
//! hold real data; a port nothing listens on for a failing backend, a fake peer that never
//! answers for a hung one.

mod common;

use common::tiers::{dead_addr, pair, start, value_on, values, wait_value, Pool, LANDED};
use common::{Behavior, Bifrost, Client, FakeBackend, Memcached, Relay, Rng};
use std::time::{Duration, Instant};

/// A route line: `name` matching `glob`, parallel over `backends`, with `extra` keys.
fn route(name: &str, glob: &str, backends: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, match: \"{glob}\", strategy: parallel, backends: [{backends}]{extra}}}\n"
    )
}

/// Three memcacheds as pools `g1`, `g2`, `g3` (one server each, 2 s timeout) under the
/// `routes` YAML lines: the servers, the proxy, and a direct client of each server.
fn fleet(routes: &str) -> (Vec<Memcached>, Bifrost, Vec<Client>) {
    let fleet: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let pools: Vec<Pool> = ["g1", "g2", "g3"]
        .into_iter()
        .zip(&fleet)
        .map(|(name, mc)| (name, mc.addr(), "2s"))
        .collect();
    let bifrost = start(&pools, routes, "");
    let direct = fleet.iter().map(Memcached::client).collect();
    (fleet, bifrost, direct)
}

/// Routes `all:*`, `maj:*` and `first:*` over `g1, g2, g3` with `writes: all`, `majority` and
/// `first`.
fn each_write_policy() -> String {
    format!(
        "{}{}{}",
        route("all", "all:*", "g1, g2, g3", ", writes: all"),
        route("majority", "maj:*", "g1, g2, g3", ", writes: majority"),
        route("first", "first:*", "g1, g2, g3", ", writes: first")
    )
}

fn set(c: &mut Client, key: &str, value: &str) -> String {
    c.set(key, value.as_bytes(), 0, 0)
}

#[test]
fn relay_holds_each_reply_for_its_delay_and_passes_bytes_unchanged() {
    // The harness piece the slow-backend tests stand on (no bifrost here).
    let mc = Memcached::start();
    let delay = Duration::from_millis(400);
    let relay = Relay::start(&mc.addr(), delay);
    let mut c = Client::connect(&relay.addr());
    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\nEND\r\n").collect();
    let started = Instant::now();
    assert_eq!(c.set("bin", &binary, 3, 0), "STORED");
    assert!(started.elapsed() >= delay, "held {:?}", started.elapsed());
    // Pipelined replies are each held once, not one after the other.
    let started = Instant::now();
    c.send(b"get bin\r\nget bin\r\nget bin\r\n");
    for _ in 0..3 {
        let items = c.read_values().expect("VALUE and END");
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].flags, &items[0].data), (3, &binary));
    }
    let took = started.elapsed();
    assert!(
        took >= delay && took < 2 * delay + Duration::from_millis(400),
        "three pipelined replies held once each: {took:?}"
    );
    assert!(relay.bytes_to_server() > 0 && relay.forwarded().starts_with(b"set bin 3 0 "));
    relay.set_delay(Duration::ZERO);
    let started = Instant::now();
    assert!(c.version().starts_with("VERSION "));
    assert!(started.elapsed() < delay, "no delay after set_delay(0)");
    relay.wait_drained(LANDED);
    assert_eq!(relay.bytes_to_client(), relay.bytes_from_server());
}

#[test]
fn a_slow_backend_never_delays_the_answer_and_its_late_replies_are_dropped() {
    // `slow` (listed first) answers 1.5 s late through the relay; `fast` has the same keys with
    // other values. The first hit answers; the late replies of `slow` are drained.
    let slow_mc = Memcached::start();
    let fast = Memcached::start();
    let delay = Duration::from_millis(1500);
    let relay = Relay::start(&slow_mc.addr(), delay);
    let bifrost = start(
        &[("slow", relay.addr(), "5s"), ("fast", fast.addr(), "5s")],
        &route("par", "*", "slow, fast", ""),
        "",
    );
    let (mut ds, mut df) = (slow_mc.client(), fast.client());
    for (k, n) in [("k", 1), ("k2", 2)] {
        assert_eq!(set(&mut ds, k, &format!("slow-{n}")), "STORED");
        assert_eq!(set(&mut df, k, &format!("fast-{n}")), "STORED");
    }
    assert_eq!(set(&mut ds, "only_slow", "slow-3"), "STORED");

    let mut c = bifrost.client();
    let before = c.stats();
    let counter = |stats: &std::collections::HashMap<String, String>, name: &str| -> u64 {
        stats
            .get(name)
            .unwrap_or_else(|| panic!("stats has no {name}"))
            .parse()
            .unwrap()
    };
    let quick = Duration::from_millis(700);

    let started = Instant::now();
    c.send(b"get k\r\n");
    assert_eq!(
        values(&mut c),
        vec![pair("k", "fast-1")],
        "the first hit answers"
    );
    let took = started.elapsed();
    assert!(
        took < quick,
        "answered {took:?} after the ask; slow answers after {delay:?}"
    );

    // The next requests of the connection get their own answers, at once, while slow's reply
    // to `get k` is still held.
    let started = Instant::now();
    c.send(b"get k2\r\nversion\r\n");
    assert_eq!(values(&mut c), vec![pair("k2", "fast-2")], "its own answer");
    let line = c.read_line();
    assert!(line.starts_with("VERSION "), "its own answer: {line:?}");
    let took = started.elapsed();
    assert!(took < quick, "not delayed by slow's late reply: {took:?}");

    // A key only slow has: answered when slow answers, which is after slow's two late replies
    // (one connection, replies in order), so those were read by then; none reached this client
    // (it would have read them here instead of only_slow's value).
    let started = Instant::now();
    c.send(b"get only_slow\r\n");
    assert_eq!(values(&mut c), vec![pair("only_slow", "slow-3")]);
    assert!(
        started.elapsed() >= delay - Duration::from_millis(100),
        "premise: the relay held slow's reply ({:?})",
        started.elapsed()
    );
    let after = c.stats();
    assert_eq!(
        counter(&after, "get_hits") - counter(&before, "get_hits"),
        3,
        "one hit per asked key (k, k2, only_slow), late hits not counted"
    );
    assert_eq!(
        counter(&after, "get_misses") - counter(&before, "get_misses"),
        0,
        "fast's miss of only_slow is not a miss: slow had it"
    );
}

#[test]
fn a_key_only_on_the_second_backend_is_found_and_a_key_on_none_is_a_miss() {
    let b1 = Memcached::start();
    let b2 = Memcached::start();
    let bifrost = start(
        &[("b1", b1.addr(), "2s"), ("b2", b2.addr(), "2s")],
        &route("par", "*", "b1, b2", ""),
        "",
    );
    assert_eq!(set(&mut b2.client(), "second", "v2"), "STORED");
    let mut c = bifrost.client();
    assert_eq!(value_on(&mut c, "second").as_deref(), Some("v2"));
    assert_eq!(value_on(&mut c, "none"), None);
    c.send(b"get none\r\n");
    assert_eq!(c.read_line(), "END", "a miss on every backend is one END");
    c.send(b"gat 100 second\r\n");
    assert_eq!(values(&mut c), vec![pair("second", "v2")], "gat");
    c.send(b"mg second v\r\n");
    assert_eq!(c.read_line(), "VA 2");
    assert_eq!(c.read_line(), "v2");
    c.send(b"mg none v\r\n");
    assert_eq!(c.read_line(), "EN");
    c.send(b"mg none v q\r\nmg second v q\r\nmn\r\n");
    assert_eq!(c.read_line(), "VA 2", "a quiet miss shows nothing");
    assert_eq!(c.read_line(), "v2");
    assert_eq!(c.read_line(), "MN");
}

#[test]
fn a_multi_get_answers_each_key_from_the_backend_that_has_it_in_the_asked_order() {
    // b1 answers 1 s late: keys on both b1 and b2 are answered with b2's value (first to
    // arrive), keys only b1 has wait for b1.
    let b1_mc = Memcached::start();
    let b2 = Memcached::start();
    let b3 = Memcached::start();
    let relay = Relay::start(&b1_mc.addr(), Duration::from_secs(1));
    let bifrost = start(
        &[
            ("b1", relay.addr(), "5s"),
            ("b2", b2.addr(), "5s"),
            ("b3", b3.addr(), "5s"),
        ],
        &route("par", "*", "b1, b2, b3", ""),
        "",
    );
    let mut direct = [b1_mc.client(), b2.client(), b3.client()];
    let mut keys = Vec::new();
    let mut want = std::collections::HashMap::new();
    for i in 0..4 {
        for (kind, on) in [
            ("one", &[0][..]),
            ("two", &[1]),
            ("three", &[2]),
            ("both", &[0, 1]),
            ("none", &[]),
        ] {
            let k = format!("{kind}:{i}");
            for &b in on {
                assert_eq!(
                    set(&mut direct[b], &k, &format!("b{}:{k}", b + 1)),
                    "STORED"
                );
            }
            if let Some(&last) = on.last() {
                want.insert(k.clone(), format!("b{}:{k}", last + 1));
            }
            keys.push(k);
        }
    }
    let mut rng = Rng::new(3);
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    let mut c = bifrost.client();
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let expected: Vec<(String, String)> = keys
        .iter()
        .filter_map(|k| want.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    assert_eq!(
        values(&mut c),
        expected,
        "each key from the backend that has it, asked order"
    );
}

#[test]
fn gets_is_answered_by_the_first_backend_in_order_that_hits() {
    let b1_mc = Memcached::start();
    let b2 = Memcached::start();
    let relay = Relay::start(&b1_mc.addr(), Duration::from_millis(300));
    let bifrost = start(
        &[("b1", relay.addr(), "5s"), ("b2", b2.addr(), "5s")],
        &route("par", "*", "b1, b2", ""),
        "",
    );
    let (mut d1, mut d2) = (b1_mc.client(), b2.client());
    assert_eq!(set(&mut d1, "k", "b1"), "STORED");
    assert_eq!(set(&mut d2, "k", "b2"), "STORED");
    assert_eq!(set(&mut d2, "only2", "b2"), "STORED");
    let (_, b1_cas) = d1.gets("k").expect("k on b1");

    let mut c = bifrost.client();
    let (value, cas) = c.gets("k").expect("gets k");
    assert_eq!(
        value, b"b1",
        "B1 first in order, although b2 answered first"
    );
    assert_eq!(cas, b1_cas, "B1's cas unique");
    c.send(format!("cas k 0 0 3 {cas}\r\nnew\r\n").as_bytes());
    assert_eq!(c.read_line(), "STORED", "answered by B1's reply");
    assert_eq!(value_on(&mut d1, "k").as_deref(), Some("new"));
    assert_eq!(
        c.gets("only2").map(|(v, _)| v),
        Some(b"b2".to_vec()),
        "B1 missed: the next backend in order"
    );
}

#[test]
fn writes_all_answers_the_error_when_one_backend_fails_and_waits_for_every_backend() {
    let good = Memcached::start();
    let hang = FakeBackend::start(Behavior::NeverAnswer);
    let bifrost = start(
        &[
            ("good", good.addr(), "5s"),
            ("dead", dead_addr(), "5s"),
            ("hang", hang.addr(), "300ms"),
        ],
        &format!(
            "{}{}",
            route("to_dead", "d:*", "good, dead", ", writes: all"),
            route("to_hang", "h:*", "good, hang", ", writes: all")
        ),
        "",
    );
    let mut dg = good.client();
    let mut c = bifrost.client();
    let line = set(&mut c, "d:k", "v");
    assert!(
        line.starts_with("SERVER_ERROR"),
        "a failed backend: the worst reply: {line:?}"
    );
    assert_eq!(
        value_on(&mut dg, "d:k").as_deref(),
        Some("v"),
        "good got the write"
    );

    let started = Instant::now();
    let line = set(&mut c, "h:k", "v");
    assert!(
        line.starts_with("SERVER_ERROR"),
        "a timed-out backend: {line:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "all waits for every backend (hang's timeout is 300ms): {:?}",
        started.elapsed()
    );
    assert_eq!(value_on(&mut dg, "h:k").as_deref(), Some("v"));
    c.send(b"delete d:k\r\n");
    let line = c.read_line();
    assert!(line.starts_with("SERVER_ERROR"), "delete too: {line:?}");
    assert_eq!(value_on(&mut dg, "d:k"), None, "good deleted it");
}

#[test]
fn writes_majority_is_stored_with_one_of_three_failing_and_an_error_with_two() {
    let g1 = Memcached::start();
    let g2 = Memcached::start();
    let g3 = Memcached::start();
    let hang = FakeBackend::start(Behavior::NeverAnswer);
    let bifrost = start(
        &[
            ("g1", g1.addr(), "5s"),
            ("g2", g2.addr(), "5s"),
            ("g3", g3.addr(), "5s"),
            ("dead1", dead_addr(), "5s"),
            ("dead2", dead_addr(), "5s"),
            ("hang", hang.addr(), "5s"),
        ],
        &format!(
            "{}{}{}",
            route("one_dead", "a:*", "dead1, g1, g2", ", writes: majority"),
            route("two_dead", "b:*", "dead1, dead2, g3", ", writes: majority"),
            route("one_hung", "c:*", "g1, hang, g2", ", writes: majority")
        ),
        "",
    );
    let (mut d1, mut d2, mut d3) = (g1.client(), g2.client(), g3.client());
    let mut c = bifrost.client();
    assert_eq!(set(&mut c, "a:k", "v"), "STORED", "2 of 3 succeeded");
    // A majority answered, and the majority is g1 and g2.
    assert_eq!(value_on(&mut d1, "a:k").as_deref(), Some("v"));
    assert_eq!(value_on(&mut d2, "a:k").as_deref(), Some("v"));

    let line = set(&mut c, "b:k", "v");
    assert!(
        line.starts_with("SERVER_ERROR"),
        "no majority possible: the most common non-success: {line:?}"
    );
    wait_value(&mut d3, "b:k", Some("v"), "g3 got the write all the same");

    let started = Instant::now();
    assert_eq!(set(&mut c, "c:k", "v"), "STORED");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "a majority answers without waiting for the hung backend's 5 s: {:?}",
        started.elapsed()
    );
    assert_eq!(value_on(&mut d1, "c:k").as_deref(), Some("v"));
    assert_eq!(value_on(&mut d2, "c:k").as_deref(), Some("v"));
}

#[test]
fn writes_first_answers_at_the_first_success_without_waiting_for_a_hung_backend() {
    let good = Memcached::start();
    let hang = FakeBackend::start(Behavior::NeverAnswer);
    let bifrost = start(
        &[
            ("hang", hang.addr(), "5s"),
            ("good", good.addr(), "5s"),
            ("dead1", dead_addr(), "5s"),
            ("dead2", dead_addr(), "5s"),
        ],
        &format!(
            "{}{}{}",
            route("hung_first", "h:*", "hang, good", ", writes: first"),
            route("dead_first", "d:*", "dead1, good", ", writes: first"),
            route("all_dead", "x:*", "dead1, dead2", ", writes: first")
        ),
        "",
    );
    let mut dg = good.client();
    let mut c = bifrost.client();
    let started = Instant::now();
    for i in 0..3 {
        let k = format!("h:{i}");
        assert_eq!(set(&mut c, &k, "v"), "STORED", "{k}");
        assert_eq!(
            value_on(&mut dg, &k).as_deref(),
            Some("v"),
            "{k}: the success is good's"
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "three writes answered at good's success, not after hang's 5 s timeout: {:?}",
        started.elapsed()
    );
    hang.wait_for_bytes(1, LANDED);
    assert_eq!(
        set(&mut c, "d:k", "v"),
        "STORED",
        "the failure of dead1 is not the answer"
    );
    assert_eq!(value_on(&mut dg, "d:k").as_deref(), Some("v"));
    let line = set(&mut c, "x:k", "v");
    assert!(
        line.starts_with("SERVER_ERROR"),
        "all failed: the worst: {line:?}"
    );
}

#[test]
fn with_every_backend_healthy_each_policy_lands_the_write_on_all() {
    let (_fleet, bifrost, mut direct) = fleet(&each_write_policy());
    let mut c = bifrost.client();
    for policy in ["all", "maj", "first"] {
        let k = format!("{policy}:k");
        assert_eq!(set(&mut c, &k, "v"), "STORED", "{k}");
        for (i, d) in direct.iter_mut().enumerate() {
            if policy == "all" {
                assert_eq!(value_on(d, &k).as_deref(), Some("v"), "{k} on g{}", i + 1);
            } else {
                wait_value(d, &k, Some("v"), &format!("{k} landed on g{}", i + 1));
            }
        }
        let k = format!("{policy}:meta");
        c.send(format!("ms {k} 2\r\nmv\r\n").as_bytes());
        assert_eq!(c.read_line(), "HD", "{k}");
        let k2 = format!("{policy}:noreply");
        c.send(format!("set {k2} 0 0 2 noreply\r\nnr\r\n").as_bytes());
        for (i, d) in direct.iter_mut().enumerate() {
            wait_value(d, &k, Some("mv"), &format!("{k} landed on g{}", i + 1));
            wait_value(d, &k2, Some("nr"), &format!("{k2} landed on g{}", i + 1));
        }
    }
    let line = c.version();
    assert!(
        line.starts_with("VERSION "),
        "the noreply sets were not answered: {line:?}"
    );
}

#[test]
fn when_backends_disagree_the_reply_follows_the_policy() {
    // `add` of a key only g1 has: g1 NOT_STORED, g2 and g3 STORED.
    let (_fleet, bifrost, mut direct) = fleet(&each_write_policy());
    let mut c = bifrost.client();
    for (policy, want) in [
        ("all", "NOT_STORED"),
        ("maj", "STORED"),
        ("first", "STORED"),
    ] {
        let k = format!("{policy}:x");
        assert_eq!(set(&mut direct[0], &k, "old"), "STORED");
        assert_eq!(
            c.store("add", &k, b"new", 0, 0),
            want,
            "{policy}: g1 NOT_STORED, g2 and g3 STORED"
        );
        assert_eq!(value_on(&mut direct[0], &k).as_deref(), Some("old"));
        for (i, d) in direct.iter_mut().enumerate().skip(1) {
            wait_value(d, &k, Some("new"), &format!("{k} added on g{}", i + 1));
        }
    }
}

#[test]
fn delete_goes_to_every_backend() {
    let (_fleet, bifrost, mut direct) = fleet(&route("par", "*", "g1, g2, g3", ""));
    let mut c = bifrost.client();
    for k in ["k", "mk"] {
        for d in direct.iter_mut() {
            assert_eq!(set(d, k, "v"), "STORED");
        }
    }
    assert_eq!(c.delete("k"), "DELETED");
    c.send(b"md mk\r\n");
    assert_eq!(c.read_line(), "HD");
    // writes: all by default, so every backend answered before the client got its reply.
    for (i, d) in direct.iter_mut().enumerate() {
        assert_eq!(value_on(d, "k"), None, "k deleted on g{}", i + 1);
        assert_eq!(value_on(d, "mk"), None, "mk deleted on g{}", i + 1);
    }
    // Only g2 has it: g1 and g3 NOT_FOUND, the worst reply of `all`; g2 deletes it.
    assert_eq!(set(&mut direct[1], "k2", "v"), "STORED");
    assert_eq!(c.delete("k2"), "NOT_FOUND");
    assert_eq!(value_on(&mut direct[1], "k2"), None);
}
