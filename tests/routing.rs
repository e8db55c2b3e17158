//! End-to-end tests of routing: the real `bifrost` binary in front of real memcached processes.
//!
//! What is under test (SPEC §4-5, docs/configuration.md): routes tried in order, first match
//! wins (globs, prefixes, regexes), per-command routes, per-listener route lists, `no route`,
//! round_robin turns, consistent_hash placement (ketama with weights, hash tags), and meta
//! commands routed by their (base64-decoded) key. Where a key landed is always checked on the
//! memcached servers themselves, over direct connections. The multi-get split/merge and
//! flush_all fan-out are in `routing_multiget.rs`.
//!
//! Servers of hashed pools are given ketama names (`name: n0` ...), so placement depends on the
//! names and weights only, not on the random ports the harness picks: each run places every key
//! the same way.

mod common;

use common::lines::base64;
use common::{assert_bytes, start_listeners, Client, Memcached};
use std::collections::HashMap;
use std::thread;

const NO_ROUTE: &[u8] = b"SERVER_ERROR no route for key\r\n";
/// Requests written before their replies are read, in the bulk helpers.
const BATCH: usize = 200;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Memcached servers, each with a direct connection, to see where keys landed.
struct Fleet {
    servers: Vec<Memcached>,
    direct: Vec<Client>,
}

impl Fleet {
    fn start(n: usize) -> Fleet {
        let servers: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
        let direct = servers.iter().map(Memcached::client).collect();
        Fleet { servers, direct }
    }

    fn addr(&self, i: usize) -> String {
        self.servers[i].addr()
    }

    /// The direct connection to server `i`.
    fn at(&mut self, i: usize) -> &mut Client {
        &mut self.direct[i]
    }

    /// Indices of the servers holding `key`.
    fn holders(&mut self, key: &str) -> Vec<usize> {
        (0..self.direct.len())
            .filter(|&i| self.direct[i].get(key).is_some())
            .collect()
    }

    /// The one server holding `key`; panics if it is on none or several.
    #[track_caller]
    fn owner(&mut self, key: &str) -> usize {
        let holders = self.holders(key);
        assert_eq!(
            holders.len(),
            1,
            "key {key:?} should be on exactly one server, is on {holders:?}"
        );
        holders[0]
    }

    fn curr_items(&mut self, i: usize) -> u64 {
        self.at(i).stat("curr_items")
    }

    /// Servers as a YAML flow list of maps with ketama names `n<i>` and the given weights.
    fn named_servers(&self, weights: &[u32]) -> String {
        let items: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{{address: \"{}\", name: n{i}, weight: {w}}}", self.addr(i)))
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// A config with one listener and one `consistent_hash` route over `pool` (a backend body in
/// YAML flow style without braces, e.g. `servers: [...], hash_tag: "{}"`).
fn hashed_config(port: u16, pool: &str) -> String {
    format!(
        "workers: 1\n\
         listeners:\n  - {{name: main, bind: \"127.0.0.1:{port}\"}}\n\
         backends:\n  pool: {{{pool}}}\n\
         routes:\n  - {{name: all, match: \"*\", strategy: consistent_hash, backend: pool}}\n"
    )
}

/// `set` through `c`, which must answer STORED.
#[track_caller]
fn set_ok(c: &mut Client, key: &str, value: &[u8]) {
    assert_eq!(c.set(key, value, 0, 0), "STORED", "set {key}");
}

/// The value the bulk tests store under `key`.
fn value_of(key: &str) -> Vec<u8> {
    format!("value-of-{key}").into_bytes()
}

/// `set` of every key (value [`value_of`]) through `c`, pipelined; every reply must be STORED.
fn set_all(c: &mut Client, keys: &[String]) {
    for batch in keys.chunks(BATCH) {
        let mut req = Vec::new();
        for key in batch {
            let value = value_of(key);
            req.extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
        }
        c.send(&req);
        for key in batch {
            assert_eq!(c.read_line(), "STORED", "pipelined set {key}");
        }
    }
}

/// One `get` per key through `c`, pipelined; every reply must be the hit [`value_of`] the key.
fn assert_all_hits(c: &mut Client, keys: &[String], what: &str) {
    for batch in keys.chunks(BATCH) {
        let req: String = batch.iter().map(|k| format!("get {k}\r\n")).collect();
        c.send(req.as_bytes());
        for key in batch {
            let want = hit(key, 0, &value_of(key));
            assert_bytes(
                &c.read_reply_retrieval(),
                &want,
                &format!("{what}: get {key}"),
            );
        }
    }
}

/// `VALUE <key> <flags> <len>\r\n<data>\r\nEND\r\n`.
fn hit(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\nEND\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Route matching
// ---------------------------------------------------------------------------------------------

/// Every kind of pattern, one route (and one server) each, tried in file order; a second
/// listener names two of the routes in the other order, so the general route shadows the
/// specific one there.
#[test]
fn patterns_route_each_key_to_the_first_matching_route() {
    let routes: [(&str, &str); 10] = [
        ("a_b_one", r#""a:b?""#),
        ("a_any", r#""a:*""#),
        ("x_or_y", r#""[xy]*""#),
        ("p_prefix", r#"{prefix: "p:"}"#),
        ("r_digits", r#"{regex: "^r[0-9]+$"}"#),
        ("mid_digit", r#"{regex: "mid[0-9]"}"#),
        ("q_not_digit", r#""q[!0-9]?""#),
        ("esc_star", r#"'esc\*'"#),
        ("m_range", r#""m[a-c]*z""#),
        ("rest", r#""*""#),
    ];
    let mut fleet = Fleet::start(routes.len());
    let (_bifrost, addrs) = start_listeners(2, |ports| {
        let mut yaml = format!(
            "workers: 1\nlisteners:\n  - {{name: main, bind: \"127.0.0.1:{}\"}}\n  \
             - {{name: shadowed, bind: \"127.0.0.1:{}\", routes: [a_any, a_b_one, rest]}}\n\
             backends:\n",
            ports[0], ports[1]
        );
        for i in 0..routes.len() {
            yaml += &format!("  s{i}: {{servers: [\"{}\"]}}\n", fleet.addr(i));
        }
        yaml += "routes:\n";
        for (i, (name, pattern)) in routes.iter().enumerate() {
            yaml += &format!(
                "  - {{name: {name}, match: {pattern}, strategy: blind_forward, backend: s{i}}}\n"
            );
        }
        yaml
    });
    let (a_b_one, a_any, x_or_y, p_prefix, r_digits, mid_digit) = (0, 1, 2, 3, 4, 5);
    let (q_not_digit, esc_star, m_range, rest) = (6, 7, 8, 9);
    let expected: &[(&str, usize)] = &[
        // `?` is exactly one byte (any byte, `*` included); the specific route comes first.
        ("a:bc", a_b_one),
        ("a:b*", a_b_one),
        ("a:b", a_any),
        ("a:bcd", a_any),
        ("a:", a_any),
        ("a", rest),
        ("A:bc", rest),
        // A class is one byte; matching is case-sensitive; an earlier route wins.
        ("x", x_or_y),
        ("ykey", x_or_y),
        ("xmid1", x_or_y),
        ("zx", rest),
        ("Xkey", rest),
        // A prefix, the empty rest included.
        ("p:", p_prefix),
        ("p:1", p_prefix),
        ("p", rest),
        ("pp:1", rest),
        ("P:1", rest),
        // An anchored regex matches the whole key only; an unanchored one anywhere.
        ("r1", r_digits),
        ("r0123456789", r_digits),
        ("r", rest),
        ("r12a", rest),
        ("ar1", rest),
        ("zzmid5zz", mid_digit),
        ("mid0", mid_digit),
        ("midx", rest),
        // `[!0-9]` is any byte but a digit.
        ("qa1", q_not_digit),
        ("qzz", q_not_digit),
        ("q1a", rest),
        ("qa", rest),
        ("qa12", rest),
        // `\*` is a literal star.
        ("esc*", esc_star),
        ("escX", rest),
        ("esc", rest),
        ("esc**", rest),
        ("esc\\*", rest),
        // A range, then a star in the middle of the pattern.
        ("mbz", m_range),
        ("maxyz", m_range),
        ("mczz", m_range),
        ("mdz", rest),
        ("mbza", rest),
        ("mz", rest),
    ];
    let mut main = Client::connect(&addrs[0]);
    for &(key, route) in expected {
        set_ok(&mut main, key, &value_of(key));
        assert_eq!(
            fleet.holders(key),
            vec![route],
            "key {key:?} should take route {:?} (server {route})",
            routes[route].0
        );
        let got = main.get(key);
        assert_eq!(got, Some(value_of(key)), "get {key:?} through bifrost");
    }

    // On the listener that tries `a:*` first, `a:b?` only gets what `a:*` does not take: no key.
    let mut shadowed = Client::connect(&addrs[1]);
    set_ok(&mut shadowed, "a:bz", b"via-shadowed");
    assert_eq!(
        fleet.holders("a:bz"),
        vec![a_any],
        "a:bz on the shadowed listener"
    );
    shadowed.send(b"get a:bc\r\n");
    assert_bytes(
        &shadowed.read_reply_retrieval(),
        b"END\r\n",
        "get a:bc on the shadowed listener reads server a_any, which does not have it",
    );
    set_ok(&mut shadowed, "q1", b"q1");
    assert_eq!(
        fleet.holders("q1"),
        vec![rest],
        "q1 on the shadowed listener"
    );
}

/// A read-only route before a catch-all: reads and writes of the same key go different ways,
/// and a command outside the filter falls through to the next route.
#[test]
fn command_filters_send_reads_and_writes_of_a_key_to_different_servers() {
    let mut fleet = Fleet::start(2);
    let (reads, writes) = (0, 1);
    let (_bifrost, addrs) = start_listeners(1, |ports| {
        format!(
            "workers: 1\nlisteners:\n  - {{name: main, bind: \"127.0.0.1:{}\"}}\n\
             backends:\n  r: {{servers: [\"{}\"]}}\n  w: {{servers: [\"{}\"]}}\n\
             routes:\n  - {{name: reads, match: \"*\", commands: [get, gets, mg], \
             strategy: blind_forward, backend: r}}\n  \
             - {{name: writes, match: \"*\", strategy: blind_forward, backend: w}}\n",
            ports[0],
            fleet.addr(reads),
            fleet.addr(writes)
        )
    });
    let mut c = Client::connect(&addrs[0]);

    set_ok(&mut c, "k", b"w");
    assert_eq!(
        fleet.holders("k"),
        vec![writes],
        "set k goes to the writes server"
    );
    c.send(b"get k\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get k reads the reads server, which does not have k",
    );

    assert_eq!(fleet.at(reads).set("k", b"r", 7, 0), "STORED");
    let (_, cas) = fleet.at(reads).gets("k").expect("k on the reads server");
    c.send(b"get k\r\n");
    assert_bytes(&c.read_reply_retrieval(), &hit("k", 7, b"r"), "get k");
    c.send(b"gets k\r\n");
    let want = format!("VALUE k 7 1 {cas}\r\nr\r\nEND\r\n");
    assert_bytes(&c.read_reply_retrieval(), want.as_bytes(), "gets k");
    assert_bytes(&c.request(b"mg k v f\r\n"), b"VA 1 f7\r\n", "mg k v f");
    assert_bytes(&c.read_line_raw(), b"r\r\n", "mg k value");

    // gat is not in the filter: it takes the writes route.
    c.send(b"gat 0 k\r\n");
    assert_bytes(&c.read_reply_retrieval(), &hit("k", 0, b"w"), "gat 0 k");
    // delete is a write: it removes the writes server's copy only.
    assert_bytes(&c.request(b"delete k\r\n"), b"DELETED\r\n", "delete k");
    assert_eq!(fleet.holders("k"), vec![reads], "after delete k");
    c.send(b"get k\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        &hit("k", 7, b"r"),
        "get k after delete",
    );

    // ms is a write, mg a read; a multi-key get reads the reads server for every key.
    assert_bytes(&c.request(b"ms k2 2\r\nw2\r\n"), b"HD\r\n", "ms k2");
    assert_eq!(
        fleet.holders("k2"),
        vec![writes],
        "ms k2 goes to the writes server"
    );
    assert_bytes(
        &c.request(b"mg k2 v\r\n"),
        b"EN\r\n",
        "mg k2 on the reads server",
    );
    c.send(b"get k2 k\r\n");
    assert_bytes(&c.read_reply_retrieval(), &hit("k", 7, b"r"), "get k2 k");
}

/// The same keys through listeners with different route lists: file order (no `routes`), the
/// other order, and a list without the catch-all.
#[test]
fn each_listener_uses_its_own_routes_in_its_own_order() {
    let mut fleet = Fleet::start(2);
    let (server_a, server_b) = (0, 1);
    let (_bifrost, addrs) = start_listeners(3, |ports| {
        format!(
            "workers: 1\nlisteners:\n  - {{name: file_order, bind: \"127.0.0.1:{}\"}}\n  \
             - {{name: reversed, bind: \"127.0.0.1:{}\", routes: [rest, ks]}}\n  \
             - {{name: only_ks, bind: \"127.0.0.1:{}\", routes: [ks]}}\n\
             backends:\n  a: {{servers: [\"{}\"]}}\n  b: {{servers: [\"{}\"]}}\n\
             routes:\n  - {{name: ks, match: \"k*\", strategy: blind_forward, backend: a}}\n  \
             - {{name: rest, match: \"*\", strategy: blind_forward, backend: b}}\n",
            ports[0],
            ports[1],
            ports[2],
            fleet.addr(server_a),
            fleet.addr(server_b)
        )
    });
    let mut file_order = Client::connect(&addrs[0]);
    let mut reversed = Client::connect(&addrs[1]);
    let mut only_ks = Client::connect(&addrs[2]);

    set_ok(&mut file_order, "k-file", b"1");
    set_ok(&mut file_order, "z-file", b"2");
    set_ok(&mut reversed, "k-rev", b"3");
    set_ok(&mut only_ks, "k-only", b"4");
    assert_eq!(fleet.holders("k-file"), vec![server_a], "k-file");
    assert_eq!(fleet.holders("z-file"), vec![server_b], "z-file");
    assert_eq!(fleet.holders("k-rev"), vec![server_b], "k-rev");
    assert_eq!(fleet.holders("k-only"), vec![server_a], "k-only");

    // One key, a different copy on each server: each listener reads its own.
    assert_eq!(fleet.at(server_a).set("k1", b"from-a", 0, 0), "STORED");
    assert_eq!(fleet.at(server_b).set("k1", b"from-b", 0, 0), "STORED");
    for (client, want, name) in [
        (&mut file_order, b"from-a", "file_order"),
        (&mut reversed, b"from-b", "reversed"),
        (&mut only_ks, b"from-a", "only_ks"),
    ] {
        client.send(b"get k1\r\n");
        let what = format!("get k1 on listener {name}");
        assert_bytes(&client.read_reply_retrieval(), &hit("k1", 0, want), &what);
    }
    assert_bytes(
        &only_ks.request(b"get z-file\r\n"),
        NO_ROUTE,
        "get z-file on a listener without the catch-all",
    );
}

/// A config whose one route takes `x*` keys: other keys have no route.
fn x_only_config(port: u16, server: &str) -> String {
    format!(
        "workers: 1\nlisteners:\n  - {{name: main, bind: \"127.0.0.1:{port}\"}}\n\
         backends:\n  x: {{servers: [\"{server}\"]}}\n\
         routes:\n  - {{name: xs, match: \"x*\", strategy: blind_forward, backend: x}}\n"
    )
}

#[test]
fn keys_without_a_route_get_an_error_alone_and_are_misses_in_a_multi_get() {
    let mut fleet = Fleet::start(1);
    let (_bifrost, addrs) = start_listeners(1, |p| x_only_config(p[0], &fleet.addr(0)));
    let mut c = Client::connect(&addrs[0]);
    set_ok(&mut c, "x1", b"one");
    set_ok(&mut c, "x2", b"two");
    let no_route_before = c.stat("no_route");

    assert_bytes(&c.request(b"get y\r\n"), NO_ROUTE, "get y");
    c.send(b"get x1 y x2\r\n");
    let mut want = b"VALUE x1 0 3\r\none\r\nVALUE x2 0 3\r\ntwo\r\nEND\r\n".to_vec();
    assert_bytes(&c.read_reply_retrieval(), &want, "get x1 y x2");
    c.send(b"gets x2 yy x1 zz x2\r\n");
    let items = c
        .read_values()
        .expect("gets x2 yy x1 zz x2: a retrieval reply");
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        ["x2", "x1", "x2"],
        "gets x2 yy x1 zz x2: the hits, in order"
    );
    // A storage command without a route is refused and its data block swallowed (data that
    // reads like a command must not be run).
    c.send(b"set y 0 0 7\r\nversion\r\nget x1\r\n");
    assert_bytes(&c.read_line_raw(), NO_ROUTE, "set y");
    want.truncate("VALUE x1 0 3\r\none\r\n".len());
    want.extend_from_slice(b"END\r\n");
    assert_bytes(&c.read_reply_retrieval(), &want, "get x1 after set y");
    assert_bytes(&c.request(b"delete y\r\n"), NO_ROUTE, "delete y");
    assert_bytes(&c.request(b"mg y v\r\n"), NO_ROUTE, "mg y v");
    // A base64 key is matched decoded: `eDE=` is x1, `eQ==` is y.
    assert_bytes(&c.request(b"mg eDE= b v\r\n"), b"VA 3\r\n", "mg eDE= b v");
    assert_bytes(
        &c.read_line_raw(),
        b"one\r\n",
        "mg eDE= b v: the value of x1",
    );
    assert_bytes(&c.request(b"mg eQ== b v\r\n"), NO_ROUTE, "mg eQ== b v");
    assert_eq!(
        fleet.holders("y"),
        Vec::<usize>::new(),
        "y reached no server"
    );

    // get y, the y of get x1 y x2, yy and zz, set y, delete y, mg y, mg eQ==: 8.
    assert_eq!(c.stat("no_route") - no_route_before, 8, "no_route");

    // A key without a route in a multi-get counts as a miss, as memcached would count it.
    let (hits, misses) = (c.stat("get_hits"), c.stat("get_misses"));
    c.send(b"get x1 y\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"VALUE x1 0 3\r\none\r\nEND\r\n",
        "get x1 y",
    );
    assert_eq!(c.stat("get_hits") - hits, 1, "get_hits");
    assert_eq!(c.stat("get_misses") - misses, 1, "get_misses");
    // A noreply request without a route gets no reply: the client reads none.
    c.send(b"set y 0 0 1 noreply\r\nz\r\nmn\r\n");
    assert_bytes(&c.read_line_raw(), b"MN\r\n", "set y noreply, then mn");
    // Per-route and per-server counters: every routed key counts on its route and server.
    let routed = c.stat("route:xs:requests");
    let sent = c.stat(&format!("server:{}:requests", fleet.addr(0)));
    assert_bytes(&c.request(b"delete x2\r\n"), b"DELETED\r\n", "delete x2");
    assert_eq!(c.stat("route:xs:requests") - routed, 1, "route counter");
    let sent_now = c.stat(&format!("server:{}:requests", fleet.addr(0)));
    assert_eq!(sent_now - sent, 1, "server counter");
    assert_eq!(
        c.stat(&format!("server:{}:errors", fleet.addr(0))),
        0,
        "server errors"
    );
}

/// A multi-get whose first key has no route is still a multi-get: that key is a miss, the
/// others are answered (the reply must not depend on where the unroutable key is).
#[test]
fn multi_get_starting_with_a_key_without_a_route_answers_the_other_keys() {
    let fleet = Fleet::start(1);
    let (_bifrost, addrs) = start_listeners(1, |p| x_only_config(p[0], &fleet.addr(0)));
    let mut c = Client::connect(&addrs[0]);
    set_ok(&mut c, "x1", b"one");
    c.send(b"get y x1\r\n");
    assert_bytes(&c.read_reply_retrieval(), &hit("x1", 0, b"one"), "get y x1");
    c.send(b"gets zz x1\r\n");
    let items = c.read_values().expect("gets zz x1: a retrieval reply");
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["x1"], "gets zz x1");
    // With no routable key at all, every key is a miss.
    let no_route_before = c.stat("no_route");
    c.send(b"get y zz\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get y zz");
    assert_eq!(
        c.stat("no_route") - no_route_before,
        2,
        "no_route after get y zz"
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

#[test]
fn round_robin_gives_each_server_its_turn() {
    let mut fleet = Fleet::start(3);
    let (_bifrost, addrs) = start_listeners(1, |p| {
        format!(
            "workers: 1\nlisteners:\n  - {{name: main, bind: \"127.0.0.1:{}\"}}\n\
             backends:\n  pool: {{servers: [\"{}\", \"{}\", \"{}\"]}}\n\
             routes:\n  - {{name: all, match: \"*\", strategy: round_robin, backend: pool}}\n",
            p[0],
            fleet.addr(0),
            fleet.addr(1),
            fleet.addr(2)
        )
    });
    let keys: Vec<String> = (0..300).map(|i| format!("rr-{i}")).collect();
    set_all(&mut Client::connect(&addrs[0]), &keys);
    let counts: Vec<u64> = (0..3).map(|i| fleet.curr_items(i)).collect();
    assert_eq!(
        counts,
        [100, 100, 100],
        "curr_items per server after 300 sets"
    );
    // In turn: the server after the previous key's, in pool order.
    let first = fleet.owner(&keys[0]);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(fleet.owner(key), (first + i) % 3, "server of {key}");
    }

    // Two clients at once, one worker: the turn is shared, so the spread stays even.
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let addr = addrs[0].clone();
            thread::spawn(move || {
                let mut c = Client::connect(&addr);
                for i in 0..150 {
                    set_ok(&mut c, &format!("rr2-{t}-{i}"), b"v");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a setting thread panicked");
    }
    let counts: Vec<u64> = (0..3).map(|i| fleet.curr_items(i)).collect();
    assert_eq!(counts.iter().sum::<u64>(), 600, "curr_items {counts:?}");
    for (i, &n) in counts.iter().enumerate() {
        assert!(
            (199..=201).contains(&n),
            "server {i} holds {n} items after 600 sets from 1+2 clients (all: {counts:?})"
        );
    }
}

#[test]
fn ketama_spreads_keys_by_weight_and_places_them_the_same_in_every_process() {
    const KEYS: usize = 8000;
    let weights = [2, 1, 1, 1];
    let mut fleet = Fleet::start(4);
    let pool = format!(
        "servers: {}, distribution: ketama, hash: fnv1a_64",
        fleet.named_servers(&weights)
    );
    let config = |p: &[u16]| hashed_config(p[0], &pool);
    let (first, addrs) = start_listeners(1, config);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("ketama-{i}")).collect();
    let mut c = Client::connect(&addrs[0]);
    set_all(&mut c, &keys);

    let counts: Vec<u64> = (0..4).map(|i| fleet.curr_items(i)).collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        KEYS as u64,
        "every key stored exactly once: {counts:?}"
    );
    let total_weight: u32 = weights.iter().sum();
    for (i, (&n, &w)) in counts.iter().zip(&weights).enumerate() {
        let share = n as f64 / KEYS as f64;
        let want = f64::from(w) / f64::from(total_weight);
        assert!(
            (share - want).abs() <= 0.05,
            "server {i} (weight {w}) holds {:.1}% of the keys, expected {:.0}% ± 5 points \
             (counts {counts:?})",
            share * 100.0,
            want * 100.0
        );
    }
    assert_all_hits(&mut c, &keys, "through the bifrost that stored them");

    // Placement is a function of the config only: a second process finds every key.
    let (_second, second_addrs) = start_listeners(1, config);
    drop(first);
    let mut c2 = Client::connect(&second_addrs[0]);
    assert_all_hits(
        &mut c2,
        &keys,
        "through a second bifrost with the same config",
    );
}

/// A pool with `hash_tag: "{}"` and the same servers as a pool without: a key goes where the
/// part inside its tag goes as a key of its own (twemproxy's rule: the first opening byte, the
/// first closing byte after it; an empty or unclosed tag hashes the whole key).
#[test]
fn hash_tag_hashes_only_the_tagged_part() {
    let mut fleet = Fleet::start(4);
    let servers = fleet.named_servers(&[1, 1, 1, 1]);
    let (_bifrost, addrs) = start_listeners(2, |p| {
        format!(
            "workers: 1\nlisteners:\n  - {{name: tagged, bind: \"127.0.0.1:{}\", routes: [t]}}\n  \
             - {{name: plain, bind: \"127.0.0.1:{}\", routes: [u]}}\n\
             backends:\n  tagged: {{servers: {servers}, hash_tag: \"{{}}\"}}\n  \
             plain: {{servers: {servers}}}\n\
             routes:\n  - {{name: t, match: \"*\", strategy: consistent_hash, backend: tagged}}\n  \
             - {{name: u, match: \"*\", strategy: consistent_hash, backend: plain}}\n",
            p[0], p[1]
        )
    });
    let mut tagged = Client::connect(&addrs[0]);
    let mut plain = Client::connect(&addrs[1]);
    // Sets `key` through `client`, returns the server it landed on and removes it there.
    let mut place = |client: &mut Client, key: &str| -> usize {
        set_ok(client, key, b"v");
        let server = fleet.owner(key);
        assert_eq!(fleet.at(server).delete(key), "DELETED");
        server
    };

    let mut pairs: Vec<(String, String)> = [
        ("user:{42}:a", "42"),
        ("user:{42}:b", "42"),
        ("x{42}y", "42"),
        ("{42}", "42"),
        ("a{1}b{2}", "1"),
        ("}7{8}", "8"),
        ("a{}b", "a{}b"),
        ("a{}b{7}", "a{}b{7}"),
        ("open{only", "open{only"),
        ("close}only{", "close}only{"),
        ("no-tag", "no-tag"),
    ]
    .iter()
    .map(|&(k, h)| (k.to_string(), h.to_string()))
    .collect();
    pairs.extend((0..40).map(|n| (format!("user:{{{n}}}:name"), n.to_string())));

    let mut groups: HashMap<usize, usize> = HashMap::new();
    let mut forty_two = Vec::new();
    for (key, hashed) in &pairs {
        let want = place(&mut plain, hashed);
        let got = place(&mut tagged, key);
        assert_eq!(
            got, want,
            "{key:?} should land where {hashed:?} lands in the untagged pool"
        );
        *groups.entry(got).or_default() += 1;
        if hashed == "42" {
            forty_two.push(got);
        }
    }
    assert!(
        forty_two.windows(2).all(|w| w[0] == w[1]),
        "user:{{42}}:a, user:{{42}}:b, x{{42}}y, {{42}} on one server: {forty_two:?}"
    );
    assert!(
        groups.len() >= 3,
        "different tags should spread over the pool, got servers {groups:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Meta commands
// ---------------------------------------------------------------------------------------------

/// Meta commands with a base64 key (`b` flag) are routed by the decoded key: they reach the
/// server that has (or gets) the plain key, which is what memcached stores.
#[test]
fn meta_commands_with_base64_keys_are_routed_by_the_decoded_key() {
    assert_eq!(base64(b"key"), "a2V5");
    assert_eq!(base64(b"meta-key-0"), "bWV0YS1rZXktMA==");
    let mut fleet = Fleet::start(4);
    let pool = format!("servers: {}", fleet.named_servers(&[1, 1, 1, 1]));
    let (_bifrost, addrs) = start_listeners(1, |p| hashed_config(p[0], &pool));
    let mut c = Client::connect(&addrs[0]);

    let mut encoded_elsewhere = 0;
    for i in 0..16 {
        let key = format!("meta-key-{i}");
        let b64 = base64(key.as_bytes());
        let value = format!("m{i}");

        // Where the plain key goes.
        let req = format!("ms {key} {}\r\n{value}\r\n", value.len());
        assert_bytes(&c.request(req.as_bytes()), b"HD\r\n", "ms plain key");
        let plain_server = fleet.owner(&key);
        assert_eq!(fleet.at(plain_server).delete(&key), "DELETED");
        // Where the encoded text would go as a key of its own.
        set_ok(&mut c, &b64, b"x");
        if fleet.owner(&b64) != plain_server {
            encoded_elsewhere += 1;
        }

        let req = format!("ms {b64} {} b\r\n{value}\r\n", value.len());
        assert_bytes(
            &c.request(req.as_bytes()),
            b"HD\r\n",
            &format!("ms {b64} b"),
        );
        assert_eq!(
            fleet.holders(&key),
            vec![plain_server],
            "ms with base64 key {b64:?} should store {key:?} where the plain key goes"
        );
        let got = fleet.at(plain_server).get(&key);
        assert_eq!(
            got,
            Some(value.clone().into_bytes()),
            "stored value of {key}"
        );

        let want = format!("VA {} k{b64} b\r\n{value}\r\n", value.len());
        c.send(format!("mg {b64} b v k\r\n").as_bytes());
        let got = [c.read_line_raw(), c.read_line_raw()].concat();
        assert_bytes(&got, want.as_bytes(), &format!("mg {b64} b v k"));
        let req = format!("md {b64} b\r\n");
        assert_bytes(
            &c.request(req.as_bytes()),
            b"HD\r\n",
            &format!("md {b64} b"),
        );
        assert_eq!(fleet.holders(&key), Vec::<usize>::new(), "{key} after md");
    }
    assert!(
        encoded_elsewhere > 0,
        "the test cannot tell decoded from encoded routing: every encoded key hashes alike"
    );

    // Counters through base64 keys; mn answered in order between replies of different servers.
    let req = format!("ms {} 1 b\r\n5\r\n", base64(b"counter"));
    assert_bytes(&c.request(req.as_bytes()), b"HD\r\n", "ms counter");
    let counter_server = fleet.owner("counter");
    let req = format!("ma {} b v\r\n", base64(b"counter"));
    assert_bytes(&c.request(req.as_bytes()), b"VA 1\r\n", "ma counter b v");
    assert_bytes(&c.read_line_raw(), b"6\r\n", "ma counter value");
    assert_eq!(fleet.at(counter_server).get("counter"), Some(b"6".to_vec()));

    // Two keys on different servers, so the replies come from different connections.
    let k0 = "order-0";
    set_ok(&mut c, k0, b"zero");
    let server0 = fleet.owner(k0);
    let k1 = (1..)
        .map(|i| format!("order-{i}"))
        .find(|k| {
            set_ok(&mut c, k, b"one");
            fleet.owner(k) != server0
        })
        .expect("a key on another server");
    c.send(
        format!(
            "mg {k0} v\r\nmn\r\nmg nothing-here v\r\nmn\r\nmg {} b v q\r\nmg nothing-here v q\r\nmn\r\n",
            base64(k1.as_bytes())
        )
        .as_bytes(),
    );
    let want = b"VA 4\r\nzero\r\nMN\r\nEN\r\nMN\r\nVA 3\r\none\r\nMN\r\n";
    let got: Vec<u8> = (0..8).flat_map(|_| c.read_line_raw()).collect();
    assert_bytes(&got, want, "pipelined mg/mn");
}
