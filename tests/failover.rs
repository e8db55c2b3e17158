//! End-to-end tests of the `failover` strategy (SPEC §5): ordered backends, the next one on an
//! error, a timeout or a down server; `on_miss: next` read-through (a multi-get re-asks only the
//! keys it still lacks, and answers in the asked order); `failover_ttl` capping the TTL of a write
//! that lands on a fallback; and a retried write never overtaking a later write of the same
//! client. Real memcached processes, killed and restarted; a fake peer only for a server that
//! never answers.

mod common;

use common::{wait_until, Behavior, Bifrost, Client, FakeBackend, Memcached, Relay};
use std::time::{Duration, Instant};

/// A failover route over pools `a` and `b` (one server each) with `route_extra` keys, and
/// `a_extra` lines in pool `a`.
fn failover(a: &str, b: &str, route_extra: &str, a_extra: &str) -> Bifrost {
    let (a, b, route_extra, a_extra) = (
        a.to_string(),
        b.to_string(),
        route_extra.to_string(),
        a_extra.to_string(),
    );
    Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  a:\n    servers: [\"{a}\"]\n    timeout: 2s\n    {a_extra}\n\
                 \x20 b:\n    servers: [\"{b}\"]\n    timeout: 2s\n\
                 routes: [{{match: \"*\", strategy: failover, backends: [a, b]{route_extra}}}]\n"
            )
        },
        &[],
    )
}

fn set(c: &mut Client, key: &str, exptime: u32, value: &str) -> String {
    c.send(format!("set {key} 0 {exptime} {}\r\n{value}\r\n", value.len()).as_bytes());
    c.read_line()
}

/// The (key, value) pairs of the retrieval reply `c` reads next.
fn values(c: &mut Client) -> Vec<(String, String)> {
    c.read_values()
        .expect("one well-formed reply")
        .into_iter()
        .map(|i| (i.key, String::from_utf8_lossy(&i.data).into_owned()))
        .collect()
}

/// The value of `key` on a server, read directly.
fn value_on(c: &mut Client, key: &str) -> Option<String> {
    c.get(key)
        .map(|data| String::from_utf8_lossy(&data).into_owned())
}

#[test]
fn writes_and_reads_go_to_the_second_backend_while_the_first_is_dead_and_back() {
    let mut a = Memcached::start();
    let b = Memcached::start();
    let port_a = a.port();
    let bifrost = failover(&a.addr(), &b.addr(), "", "");
    let mut c = bifrost.client();
    assert_eq!(set(&mut c, "k1", 0, "first"), "STORED");
    assert_eq!(value_on(&mut a.client(), "k1").as_deref(), Some("first"));
    assert_eq!(value_on(&mut b.client(), "k1"), None, "b only when a fails");

    a.kill();
    let started = Instant::now();
    assert_eq!(set(&mut c, "k2", 0, "second"), "STORED");
    assert_eq!(value_on(&mut b.client(), "k2").as_deref(), Some("second"));
    let item = c.get("k2").expect("read from b while a is dead");
    assert_eq!(item, b"second");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection moves on at once, not after the timeout: {:?}",
        started.elapsed()
    );
    // noreply writes fail over in the background; quiet meta reads fail over too.
    c.send(b"set quiet 0 0 2 noreply\r\nqq\r\nmg quiet v q\r\nmg absent v q\r\nmn\r\n");
    assert_eq!(c.read_line(), "VA 2");
    assert_eq!(c.read_line(), "qq");
    assert_eq!(c.read_line(), "MN", "a quiet miss shows nothing");
    assert_eq!(value_on(&mut b.client(), "quiet").as_deref(), Some("qq"));

    let a = Memcached::builder().port(port_a).start();
    // Back on a once its connection is out of backoff (at most a couple of seconds).
    wait_until(Duration::from_secs(10), "writes go to a again", || {
        set(&mut c, "k3", 0, "third") == "STORED" && value_on(&mut a.client(), "k3").is_some()
    });
}

#[test]
fn on_miss_next_reads_through_and_a_multi_get_asks_the_next_only_for_what_it_lacks() {
    let a = Memcached::start();
    let b = Memcached::start();
    let bifrost = failover(&a.addr(), &b.addr(), ", on_miss: next", "");
    let (mut da, mut db) = (a.client(), b.client());
    assert_eq!(set(&mut da, "k1", 0, "a1"), "STORED");
    for (k, v) in [("k1", "b1"), ("k2", "b2"), ("k3", "b3")] {
        assert_eq!(set(&mut db, k, 0, v), "STORED");
    }
    let mut c = bifrost.client();
    assert_eq!(c.get("k2"), Some(b"b2".to_vec()));
    assert_eq!(c.get("k1"), Some(b"a1".to_vec()), "a first");

    let asked_before = db.stat("cmd_get");
    c.send(b"get k3 k1 k4 k2\r\n");
    let got = values(&mut c);
    let want = [("k3", "b3"), ("k1", "a1"), ("k2", "b2")];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        got, want,
        "hits in the asked order, k1 from a, a miss left out"
    );
    assert_eq!(
        db.stat("cmd_get") - asked_before,
        3,
        "b is asked for k3, k4 and k2 only"
    );

    c.send(b"mg k2 v\r\n");
    assert_eq!(c.read_line(), "VA 2");
    assert_eq!(c.read_line(), "b2");
}

#[test]
fn without_on_miss_a_miss_is_the_answer() {
    let a = Memcached::start();
    let b = Memcached::start();
    let bifrost = failover(&a.addr(), &b.addr(), "", "");
    let mut db = b.client();
    assert_eq!(set(&mut db, "only_b", 0, "x"), "STORED");
    let asked_before = db.stat("cmd_get");
    let mut c = bifrost.client();
    assert_eq!(c.get("only_b"), None);
    assert_eq!(db.stat("cmd_get"), asked_before, "b was not asked");
}

/// The remaining TTL memcached reports for `key` (`mg <key> t`): -1 for none.
fn ttl_of(c: &mut Client, key: &str) -> i64 {
    c.send(format!("mg {key} t\r\n").as_bytes());
    let line = c.read_line();
    let t = line
        .split(' ')
        .find_map(|f| f.strip_prefix('t'))
        .unwrap_or_else(|| panic!("no TTL in {line:?}"));
    t.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn failover_ttl_caps_writes_that_land_on_the_fallback_only() {
    let mut a = Memcached::start();
    let b = Memcached::start();
    let bifrost = failover(&a.addr(), &b.addr(), ", failover_ttl: 100", "");
    let mut c = bifrost.client();
    assert_eq!(set(&mut c, "on_a", 0, "x"), "STORED");
    assert_eq!(
        ttl_of(&mut a.client(), "on_a"),
        -1,
        "the first backend: as asked"
    );

    a.kill();
    let mut db = b.client();
    assert_eq!(set(&mut c, "forever", 0, "x"), "STORED");
    let t = ttl_of(&mut db, "forever");
    assert!((90..=100).contains(&t), "no TTL becomes failover_ttl: {t}");
    assert_eq!(set(&mut c, "short", 30, "x"), "STORED");
    let t = ttl_of(&mut db, "short");
    assert!((20..=30).contains(&t), "a shorter TTL stays: {t}");
    c.send(b"ms meta 1 T5000\r\nx\r\n");
    assert_eq!(c.read_line(), "HD");
    let t = ttl_of(&mut db, "meta");
    assert!((90..=100).contains(&t), "ms T is capped too: {t}");
    c.send(b"touch short 1000\r\n");
    assert_eq!(c.read_line(), "TOUCHED");
    let t = ttl_of(&mut db, "short");
    assert!((90..=100).contains(&t), "touch is capped: {t}");
}

#[test]
fn a_retried_write_never_overtakes_a_later_write_of_the_same_client() {
    // a accepts and never answers; health checks mark it down while the client's first write
    // waits there. The second write finds a down: the first fails over first, then the
    // second, so b ends with the second value (without that order it would end with the
    // first, when the first's 2 s timeout ran out).
    let a = FakeBackend::start(Behavior::NeverAnswer);
    let b = Memcached::start();
    let health = "health: { interval: 50ms, timeout: 100ms, failure_limit: 1, retry_after: 10s }";
    let bifrost = failover(&a.addr(), &b.addr(), "", health);
    let mut c = bifrost.client();
    let mut admin = bifrost.client();
    c.send(b"set k 0 0 5\r\nfirst\r\n");
    wait_until(Duration::from_secs(10), "a marked down", || {
        admin
            .stats()
            .get(&format!("server:{}:state", a.addr()))
            .is_some_and(|s| s == "down")
    });
    c.send(b"set k 0 0 6\r\nsecond\r\n");
    assert_eq!(c.read_line(), "STORED");
    assert_eq!(c.read_line(), "STORED");
    assert_eq!(value_on(&mut b.client(), "k").as_deref(), Some("second"));
}

#[test]
fn a_multi_get_over_several_servers_asks_each_key_s_next_server_for_what_it_lacks() {
    // Pool a has two servers, pool b one. Keys spread over a's servers; one of them is killed
    // and some keys are deleted from a: one get of every key answers each from a where a has
    // it, else from b, in the asked order.
    let a0 = Memcached::start();
    let mut a1 = Memcached::start();
    let b = Memcached::start();
    let (x0, x1, y) = (a0.addr(), a1.addr(), b.addr());
    let bifrost = Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  a:\n    servers: [{{address: \"{x0}\", name: n0}}, {{address: \"{x1}\", name: n1}}]\n\
                 \x20 b:\n    servers: [\"{y}\"]\n\
                 routes: [{{match: \"*\", strategy: failover, backends: [a, b], on_miss: next}}]\n"
            )
        },
        &[],
    );
    let mut c = bifrost.client();
    let (mut d0, mut d1, mut db) = (a0.client(), a1.client(), b.client());
    let keys: Vec<String> = (0..40).map(|i| format!("{i}:user:{}", i * 7919)).collect();
    let mut on_a1 = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(set(&mut c, k, 0, &format!("a:{k}")), "STORED");
        assert_eq!(set(&mut db, k, 0, &format!("b:{k}")), "STORED");
        on_a1.push(d1.get(k).is_some());
        if i % 5 == 0 {
            for d in [&mut d0, &mut d1] {
                d.send(format!("delete {k}\r\n").as_bytes());
                d.read_line();
            }
        }
    }
    assert!(
        on_a1.iter().any(|&x| x) && on_a1.iter().any(|&x| !x),
        "keys on both: {on_a1:?}"
    );
    a1.kill();
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let got = values(&mut c);
    let want: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let from = if on_a1[i] || i % 5 == 0 { "b" } else { "a" };
            (k.clone(), format!("{from}:{k}"))
        })
        .collect();
    assert_eq!(got, want);
}

/// A multi-get whose keys share their first server (a one-server pool) but not their next
/// one (a pool of two) keeps every key's fallback: with the first server dead, each key is
/// read from its own server of the second pool. (Sent to the shared first server alone, as one
/// request, the keys would have no next server and all be misses.)
#[test]
fn a_multi_get_sharing_its_first_server_keeps_each_key_s_own_next_server() {
    let (b1, b2) = (Memcached::start(), Memcached::start());
    let dead = common::tiers::dead_addr();
    let (list, b1a, b2a) = (dead.clone(), b1.addr(), b2.addr());
    let bifrost = Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  a:\n    servers: [\"{list}\"]\n    timeout: 2s\n\
                 \x20 b:\n    servers: [\"{b1a}\", \"{b2a}\"]\n    timeout: 2s\n\
                 routes: [{{match: \"*\", strategy: failover, backends: [a, b]}}]\n"
            )
        },
        &[],
    );
    let mut c = bifrost.client();
    // Keys that differ from their first byte: FNV-1a (the default hash) barely moves for keys
    // that differ only at the end, and ketama would put them all on one server.
    let keys: Vec<String> = (0..32u64)
        .map(|i| format!("{:x}:shared-first", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    for key in &keys {
        assert_eq!(set(&mut c, key, 0, key), "STORED", "{key} lands on pool b");
    }
    let (on1, on2) = (
        keys.iter()
            .filter(|k| value_on(&mut b1.client(), k).is_some())
            .count(),
        keys.iter()
            .filter(|k| value_on(&mut b2.client(), k).is_some())
            .count(),
    );
    assert!(
        on1 > 0 && on2 > 0,
        "the keys spread over both b servers: {on1} and {on2}"
    );
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let got = values(&mut c);
    let want: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), k.clone())).collect();
    assert_eq!(
        got, want,
        "every key from its own server of pool b, in order"
    );
}

#[test]
fn a_read_that_moves_to_the_next_server_never_sees_a_write_sent_after_it() {
    // a answers 300 ms late and takes one request at a time: the `set` pipelined behind the
    // `get` finds a full and would fail over to b at once, where the `get` (a miss on a,
    // `on_miss: next`) would then find it. memcached, one connection, runs the get first: the
    // set must wait until the get has gone to b, and the get answers a miss.
    let slow_a = Memcached::start();
    let relay = Relay::start(&slow_a.addr(), Duration::from_millis(300));
    let b = Memcached::start();
    let bifrost = failover(
        &relay.addr(),
        &b.addr(),
        ", on_miss: next",
        "max_queued_requests: 1",
    );
    let mut c = bifrost.client();
    c.send(b"get ordered\r\nset ordered 0 0 3\r\nnew\r\n");
    assert_eq!(values(&mut c), [], "the get came before the set");
    assert_eq!(c.read_line(), "STORED");
    let on_a = value_on(&mut slow_a.client(), "ordered");
    let on_b = value_on(&mut b.client(), "ordered");
    assert_eq!(
        (on_a.as_deref(), on_b.as_deref()),
        (Some("new"), None),
        "the held set went to a, its first server, once there was room"
    );
}
