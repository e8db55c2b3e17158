//! End-to-end tests of the requests bifrost fans out: multi-key retrievals split over the
//! servers that own their keys and merged back (hits in the order asked, repeats answered
//! twice, one `END`; a dead server's keys are misses), and `flush_all` sent to every server the
//! listener's routes reach. The real `bifrost` binary in front of real memcached processes;
//! where keys are is checked on the memcached servers directly. (Route matching and placement
//! are in `routing.rs`; the two test binaries cannot share helpers outside `tests/common`, so
//! the few they both need are repeated here.)

mod common;

use common::{assert_bytes, assert_one_of, start_listeners, Bifrost, Client, Memcached};
use std::collections::HashMap;

/// What a request to a dead or dying server may be answered with.
const DEAD_BACKEND_ERRORS: [&[u8]; 3] = [
    b"SERVER_ERROR backend connection lost\r\n",
    b"SERVER_ERROR backend connect failed\r\n",
    b"SERVER_ERROR backend unavailable\r\n",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Memcached servers, each with a direct connection (until killed), to see where keys are.
struct Fleet {
    servers: Vec<Memcached>,
    direct: Vec<Option<Client>>,
}

impl Fleet {
    fn start(n: usize) -> Fleet {
        let servers: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
        let direct = servers.iter().map(|m| Some(m.client())).collect();
        Fleet { servers, direct }
    }

    fn addr(&self, i: usize) -> String {
        self.servers[i].addr()
    }

    /// The direct connection to server `i`, which must not have been killed.
    fn at(&mut self, i: usize) -> &mut Client {
        self.direct[i]
            .as_mut()
            .unwrap_or_else(|| panic!("server {i} was killed"))
    }

    /// Indices of the live servers holding `key`.
    fn holders(&mut self, key: &str) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, direct) in self.direct.iter_mut().enumerate() {
            if direct.as_mut().is_some_and(|c| c.get(key).is_some()) {
                out.push(i);
            }
        }
        out
    }

    /// SIGKILL server `i`; its keys can no longer be read directly.
    fn kill(&mut self, i: usize) {
        self.direct[i] = None;
        self.servers[i].kill();
    }
}

/// One listener, and one `consistent_hash` route over every server of `fleet`, with ketama
/// names `n<i>` (so placement does not depend on the ports).
fn hashed_config(port: u16, fleet: &Fleet) -> String {
    let servers: Vec<String> = (0..fleet.servers.len())
        .map(|i| format!("{{address: \"{}\", name: n{i}}}", fleet.addr(i)))
        .collect();
    format!(
        "workers: 1\nlisteners:\n  - {{name: main, bind: \"127.0.0.1:{port}\"}}\n\
         backends:\n  pool: {{servers: [{}]}}\n\
         routes:\n  - {{name: all, match: \"*\", strategy: consistent_hash, backend: pool}}\n",
        servers.join(", ")
    )
}

/// `VALUE <key> <flags> <len>[ <cas>]\r\n<data>\r\n`: one hit of a retrieval reply.
fn value_block(key: &str, flags: u32, data: &[u8], cas: Option<u64>) -> Vec<u8> {
    let cas = cas.map(|c| format!(" {c}")).unwrap_or_default();
    let mut out = format!("VALUE {key} {flags} {}{cas}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A deterministic xorshift64* generator, for shuffles that are the same in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-key retrievals
// ---------------------------------------------------------------------------------------------

/// 200 keys stored through bifrost on a 4-server consistent_hash pool, and a list of keys to
/// ask for in one request: those 200 shuffled, 100 that are absent, and 25 of them asked again.
struct MultiGet {
    fleet: Fleet,
    _bifrost: Bifrost,
    client: Client,
    /// key → (flags, data) of each stored key.
    items: HashMap<String, (u32, Vec<u8>)>,
    /// key → the server holding it.
    owners: HashMap<String, usize>,
    asked: Vec<String>,
}

impl MultiGet {
    fn setup() -> MultiGet {
        let mut fleet = Fleet::start(4);
        let (bifrost, addrs) = start_listeners(1, |p| hashed_config(p[0], &fleet));
        let mut client = Client::connect(&addrs[0]);
        let mut items = HashMap::new();
        let mut owners = HashMap::new();
        let mut per_server = [0usize; 4];
        for i in 0..200u32 {
            // The value and the flags name the key; the lengths vary.
            let key = format!("{i}-mget");
            let data = format!("{key}={}", "#".repeat(i as usize % 17)).into_bytes();
            assert_eq!(client.set(&key, &data, i * 7, 0), "STORED", "set {key}");
            let holders = fleet.holders(&key);
            assert_eq!(holders.len(), 1, "{key} stored on {holders:?}");
            per_server[holders[0]] += 1;
            owners.insert(key.clone(), holders[0]);
            items.insert(key, (i * 7, data));
        }
        assert!(
            per_server.iter().all(|&n| n >= 10),
            "the keys should span all four servers: {per_server:?}"
        );

        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut asked: Vec<String> = items.keys().cloned().collect();
        asked.sort();
        asked.extend((0..100).map(|i| format!("absent-{i}")));
        rng.shuffle(&mut asked);
        for _ in 0..25 {
            let again = asked[rng.below(asked.len())].clone();
            asked.insert(rng.below(asked.len() + 1), again);
        }
        let repeated = |present: bool| {
            asked
                .iter()
                .filter(|k| items.contains_key(*k) == present)
                .filter(|k| asked.iter().filter(|a| a == k).count() > 1)
                .count()
        };
        assert!(
            repeated(true) > 0 && repeated(false) > 0,
            "some present and some absent keys should be asked twice"
        );
        MultiGet {
            fleet,
            _bifrost: bifrost,
            client,
            items,
            owners,
            asked,
        }
    }

    /// Every stored key's CAS unique, read from its server directly.
    fn cas_uniques(&mut self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for (key, &server) in &self.owners {
            let (_, cas) = self.fleet.at(server).gets(key).expect("a stored key");
            out.insert(key.clone(), cas);
        }
        out
    }

    /// Sends `<command> <asked keys>` and returns the raw reply.
    fn ask(&mut self, command: &str) -> Vec<u8> {
        let keys = self.asked.clone();
        self.ask_keys(command, &keys)
    }

    /// `command` of `keys`, its reply.
    fn ask_keys(&mut self, command: &str, keys: &[String]) -> Vec<u8> {
        let line = format!("{command} {}\r\n", keys.join(" "));
        self.client.send(line.as_bytes());
        self.client.read_reply_retrieval()
    }

    /// The reply memcached would give for `keys` if it held every stored key whose
    /// server passes `live`: a `VALUE` block per hit in the order asked (with the CAS unique
    /// when `cas` is given), then one `END`. Also returns the number of hits.
    fn expected(
        &self,
        keys: &[String],
        cas: Option<&HashMap<String, u64>>,
        live: impl Fn(usize) -> bool,
    ) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut hits = 0;
        for key in keys {
            let Some((flags, data)) = self.items.get(key) else {
                continue;
            };
            if !live(self.owners[key]) {
                continue;
            }
            hits += 1;
            let cas = cas.map(|cas| cas[key]);
            out.extend_from_slice(&value_block(key, *flags, data, cas));
        }
        out.extend_from_slice(b"END\r\n");
        (out, hits)
    }
}

#[test]
fn multi_get_across_four_servers_answers_hits_in_the_order_asked() {
    let mut m = MultiGet::setup();
    let cas = m.cas_uniques();
    let counters = ["cmd_get", "get_hits", "get_misses"];
    let before: Vec<u64> = counters.iter().map(|n| m.client.stat(n)).collect();

    // get/gets of every key; gat/gats of as many as fit memcached's 2048-byte line, the most
    // it reads for a line other than get/gets (the proxy refuses longer ones: below).
    let all = m.asked.clone();
    let mut fit = all.len();
    while format!("gats 0 {}\r\n", all[..fit].join(" ")).len() > 2048 {
        fit -= 1;
    }
    let short = all[..fit].to_vec();
    let (plain, hits) = m.expected(&all, None, |_| true);
    let (with_cas, _) = m.expected(&all, Some(&cas), |_| true);
    let (short_plain, short_hits) = m.expected(&short, None, |_| true);
    let (short_cas, _) = m.expected(&short, Some(&cas), |_| true);
    for (command, keys, want) in [
        ("get", &all, &plain),
        ("gets", &all, &with_cas),
        ("gat 0", &short, &short_plain),
        ("gats 0", &short, &short_cas),
    ] {
        let got = m.ask_keys(command, keys);
        let what = format!("`{command}` of {} keys (reply to compare)", keys.len());
        assert_bytes(&got, want, &what);
    }
    // A gat line over 2048 bytes is refused before anything is sent.
    m.client
        .send(format!("gat 0 {}\r\n", all.join(" ")).as_bytes());
    assert_eq!(m.client.read_line(), "CLIENT_ERROR bad command line format");

    let after: Vec<u64> = counters.iter().map(|n| m.client.stat(n)).collect();
    let (asked, short) = (all.len() as u64, short.len() as u64);
    let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        deltas,
        [
            2 * asked + 2 * short,
            2 * hits + 2 * short_hits,
            2 * (asked - hits) + 2 * (short - short_hits)
        ],
        "{counters:?} after 2 retrievals of {asked} keys with {hits} hits each and 2 of {short} \
         with {short_hits}"
    );
}

/// Split retrievals pipelined with other requests: each reply waits for the ones before it,
/// however its fragments complete.
#[test]
fn pipelined_split_retrievals_are_answered_in_order() {
    let mut m = MultiGet::setup();
    let cas = m.cas_uniques();
    let (first, second) = (&m.asked[..60], &m.asked[60..140]);
    let single = m.items.keys().min().cloned().expect("stored keys");
    let mut req = format!("get {}\r\nmn\r\n", first.join(" ")).into_bytes();
    req.extend_from_slice(b"set pipelined-new 0 0 2\r\nhi\r\n");
    req.extend_from_slice(format!("gets {}\r\n", second.join(" ")).as_bytes());
    req.extend_from_slice(format!("get {single}\r\nversion\r\n").as_bytes());
    m.client.send(&req);

    let mut want = m.expected(first, None, |_| true).0;
    want.extend_from_slice(b"MN\r\nSTORED\r\n");
    want.extend(m.expected(second, Some(&cas), |_| true).0);
    want.extend(m.expected(std::slice::from_ref(&single), None, |_| true).0);
    let c = &mut m.client;
    let mut got = c.read_reply_retrieval();
    got.extend([c.read_line_raw(), c.read_line_raw()].concat());
    got.extend(c.read_reply_retrieval());
    got.extend(c.read_reply_retrieval());
    let version = c.read_line();
    assert_bytes(&got, &want, "pipelined get, mn, set, gets, get");
    assert!(version.starts_with("VERSION "), "last reply {version:?}");
}

#[test]
fn multi_get_with_a_dead_server_misses_only_that_servers_keys() {
    let mut m = MultiGet::setup();
    let cas = m.cas_uniques();
    let dead = 2;
    let key_on = |m: &MultiGet, dead_side: bool| -> String {
        m.asked
            .iter()
            .find(|k| m.owners.get(*k).is_some_and(|&s| (s == dead) == dead_side))
            .cloned()
            .expect("asked keys on every server")
    };
    let (dead_key, live_key) = (key_on(&m, true), key_on(&m, false));
    let errors_before = m.client.stat("backend_errors");
    m.fleet.kill(dead);

    let (plain, hits) = m.expected(&m.asked, None, |s| s != dead);
    let (with_cas, _) = m.expected(&m.asked, Some(&cas), |s| s != dead);
    let (_, all_hits) = m.expected(&m.asked, None, |_| true);
    assert!(
        hits < all_hits,
        "the dead server held some of the asked keys"
    );
    assert_bytes(&m.ask("get"), &plain, "get with server 2 dead");
    assert_bytes(&m.ask("gets"), &with_cas, "gets with server 2 dead");

    let c = &mut m.client;
    c.send(format!("get {dead_key}\r\n").as_bytes());
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get of a dead key");
    let (flags, data) = &m.items[&live_key];
    c.send(format!("get {live_key}\r\n").as_bytes());
    let want = [
        value_block(&live_key, *flags, data, None),
        b"END\r\n".to_vec(),
    ]
    .concat();
    assert_bytes(&c.read_reply_retrieval(), &want, "get of a live key");
    let reply = c.request(format!("set {dead_key} 0 0 1\r\nx\r\n").as_bytes());
    assert_one_of(&reply, &DEAD_BACKEND_ERRORS, "set of a dead server's key");
    let reply = c.request(format!("set {live_key} 0 0 1\r\nx\r\n").as_bytes());
    assert_bytes(&reply, b"STORED\r\n", "set of a live server's key");

    // Failed: the get's and the gets's fragments for the dead server, the get, the set.
    let errors = c.stat("backend_errors") - errors_before;
    assert!(
        errors >= 4,
        "backend_errors grew by {errors}, expected at least 4"
    );
}

/// Values of 150 KB: each server's reply arrives in many reads, and the merge must still cut
/// it at block boundaries and interleave the servers' blocks in the order asked.
#[test]
fn multi_get_merges_large_values_from_four_servers() {
    let mut fleet = Fleet::start(4);
    let (_bifrost, addrs) = start_listeners(1, |p| hashed_config(p[0], &fleet));
    let mut c = Client::connect(&addrs[0]);
    let keys: Vec<String> = (0..12).map(|i| format!("{i}-large")).collect();
    let data = |i: usize| -> Vec<u8> {
        (0..150_000)
            .map(|j| b'a' + ((i * 7 + j) % 26) as u8)
            .collect()
    };
    let mut servers = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(c.set(key, &data(i), i as u32, 0), "STORED", "set {key}");
        servers.extend(fleet.holders(key));
    }
    servers.sort_unstable();
    servers.dedup();
    assert!(
        servers.len() >= 3,
        "the keys should span the pool: {servers:?}"
    );

    // Shuffled, with repeats and a missing key (index 99).
    let order = [5, 0, 99, 11, 5, 3, 7, 1, 9, 2, 10, 99, 4, 6, 8, 0];
    let asked: Vec<String> = order
        .iter()
        .map(|&i| {
            keys.get(i)
                .cloned()
                .unwrap_or_else(|| "no-such-key".to_string())
        })
        .collect();
    let mut want = Vec::new();
    for &i in order.iter().filter(|&&i| i < keys.len()) {
        want.extend_from_slice(&value_block(&keys[i], i as u32, &data(i), None));
    }
    want.extend_from_slice(b"END\r\n");
    c.send(format!("get {}\r\n", asked.join(" ")).as_bytes());
    assert_bytes(&c.read_reply_retrieval(), &want, "get of 16 large keys");
}

/// One get whose keys take three routes with three strategies: each route's keys are fetched
/// from their server, and the hits come back in the order asked.
#[test]
fn multi_get_spans_routes_and_strategies() {
    let mut fleet = Fleet::start(4);
    let (blind, rotated, ring) = (0, 1, [2, 3]);
    let (_bifrost, addrs) = start_listeners(1, |p| {
        format!(
            "workers: 1\nlisteners:\n  - {{name: main, bind: \"127.0.0.1:{}\"}}\n\
             backends:\n  e: {{servers: [\"{}\"]}}\n  r: {{servers: [\"{}\"]}}\n  \
             h: {{servers: [{{address: \"{}\", name: h0}}, {{address: \"{}\", name: h1}}]}}\n\
             routes:\n  - {{name: bf, match: \"bf:*\", strategy: blind_forward, backend: e}}\n  \
             - {{name: rr, match: \"rr:*\", strategy: round_robin, backend: r}}\n  \
             - {{name: rest, match: \"*\", strategy: consistent_hash, backend: h}}\n",
            p[0],
            fleet.addr(blind),
            fleet.addr(rotated),
            fleet.addr(ring[0]),
            fleet.addr(ring[1])
        )
    });
    let mut c = Client::connect(&addrs[0]);
    let stored: Vec<String> = ["bf:1", "bf:2", "rr:1", "rr:2"]
        .iter()
        .map(|k| k.to_string())
        .chain((0..10).map(|i| format!("{i}:h")))
        .collect();
    let mut ring_used = Vec::new();
    for key in &stored {
        assert_eq!(c.set(key, key.as_bytes(), 3, 0), "STORED", "set {key}");
        let holders = fleet.holders(key);
        let want = match &key[..3] {
            "bf:" => vec![blind],
            "rr:" => vec![rotated],
            _ => {
                ring_used.extend(holders.iter().copied());
                holders
                    .iter()
                    .copied()
                    .filter(|s| ring.contains(s))
                    .collect()
            }
        };
        assert!(
            holders.len() == 1 && holders == want,
            "{key} is on {holders:?}"
        );
    }
    assert!(
        ring.iter().all(|s| ring_used.contains(s)),
        "the hashed keys should use both ring servers: {ring_used:?}"
    );

    let asked = "rr:1 5:h bf:2 nope bf:1 0:h rr:2 bf:1 rr:none 9:h 5:h bf:none 3:h";
    let mut want = Vec::new();
    for key in asked.split(' ').filter(|k| stored.iter().any(|s| s == k)) {
        want.extend_from_slice(&value_block(key, 3, key.as_bytes(), None));
    }
    want.extend_from_slice(b"END\r\n");
    c.send(format!("get {asked}\r\n").as_bytes());
    assert_bytes(&c.read_reply_retrieval(), &want, "get across three routes");
}

// ---------------------------------------------------------------------------------------------
// flush_all
// ---------------------------------------------------------------------------------------------

/// A listener whose routes reach two pools (consistent_hash and round_robin) flushes all four
/// of their servers and no other; with one of them dead it answers the error and still
/// flushes the others.
#[test]
fn flush_all_reaches_every_server_of_the_listeners_pools() {
    let mut fleet = Fleet::start(5);
    let (hashed, rotated, other) = ([0, 1], [2, 3], 4);
    let (_bifrost, addrs) = start_listeners(2, |p| {
        format!(
            "workers: 1\nlisteners:\n  \
             - {{name: main, bind: \"127.0.0.1:{}\", routes: [hashed, rotated]}}\n  \
             - {{name: other, bind: \"127.0.0.1:{}\", routes: [third]}}\n\
             backends:\n  p1: {{servers: [\"{}\", \"{}\"]}}\n  \
             p2: {{servers: [\"{}\", \"{}\"]}}\n  p3: {{servers: [\"{}\"]}}\n\
             routes:\n  \
             - {{name: hashed, match: \"a:*\", strategy: consistent_hash, backend: p1}}\n  \
             - {{name: rotated, match: \"*\", strategy: round_robin, backend: p2}}\n  \
             - {{name: third, match: \"c:*\", strategy: blind_forward, backend: p3}}\n",
            p[0],
            p[1],
            fleet.addr(hashed[0]),
            fleet.addr(hashed[1]),
            fleet.addr(rotated[0]),
            fleet.addr(rotated[1]),
            fleet.addr(other)
        )
    });
    let mut main = Client::connect(&addrs[0]);
    let fill = |fleet: &mut Fleet, servers: &[usize]| {
        for &i in servers {
            assert_eq!(fleet.at(i).set("f", b"v", 0, 0), "STORED", "set f on {i}");
        }
    };

    fill(&mut fleet, &[0, 1, 2, 3, 4]);
    assert_eq!(main.request(b"flush_all\r\n"), b"OK\r\n", "flush_all");
    assert_eq!(fleet.holders("f"), vec![other], "after flush_all on main");

    fill(&mut fleet, &[0, 1, 2, 3]);
    fleet.kill(rotated[1]);
    let reply = main.request(b"flush_all\r\n");
    assert_one_of(&reply, &DEAD_BACKEND_ERRORS, "flush_all with a server down");
    assert_eq!(
        fleet.holders("f"),
        vec![other],
        "the live servers of main's pools are flushed anyway"
    );
    let mut second = Client::connect(&addrs[1]);
    assert_eq!(
        second.request(b"flush_all\r\n"),
        b"OK\r\n",
        "flush_all on other"
    );
    assert_eq!(
        fleet.holders("f"),
        Vec::<usize>::new(),
        "after flush_all on other"
    );
}
