//! End-to-end tests of memcached's binary protocol through bifrost (SPEC §14): a client whose
//! first byte is 0x80 is served in binary on the same listener as text clients, every frame
//! translated to a meta request and every reply back to a binary response with the request's
//! opcode and opaque.
//!
//! Real memcached processes behind the proxy (memcached speaks binary too, so what landed on a
//! server is read back with a direct binary connection under the exact key bytes). Clients:
//! libmemcached's conformance suite (`memccapable -b`), a raw frame client
//! ([`common::binary`]), libmemcached's command-line tools with `--binary`, and pylibmc with
//! `binary=True` (tests/pylibmc_binary.py).

mod common;

use common::binary::{
    exptime_extras, header, op, status, store_extras, BinaryClient, Request, Response,
};
use common::lines::base64;
use common::program::run;
use common::tiers::{dead_addr, effect, pool_yaml, server_list, start_proxy, ttl_of, LANDED};
use common::{show, wait_until, Bifrost, Client, Memcached, TempFile};
use std::thread;
use std::time::Duration;

/// How long a test waits to be sure nothing more arrives (a quiet miss, a quit without answer).
const SILENCE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Configs.

/// A `consistent_hash` route over `servers` (named m0, m1... so ketama places keys the same on
/// every run), one worker, with `listener_extra` added to the listener's flow mapping (e.g.
/// `", max_value_size: 1024"`).
fn hashed(servers: &[&Memcached], listener_extra: &str) -> Bifrost {
    let addrs: Vec<String> = servers.iter().map(|m| m.addr()).collect();
    let pool = server_list("m", &addrs);
    let listener_extra = listener_extra.to_string();
    Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners:\n  - {{name: main, bind: \"127.0.0.1:{port}\"{listener_extra}}}\n\
                 backends:\n  pool:\n    servers: {pool}\n    timeout: 2s\n\
                 routes:\n  - {{name: all, match: \"*\", strategy: consistent_hash, backend: pool}}\n"
            )
        },
        &[],
    )
}

/// A `failover` route over pools `a` then `b` (one server each).
fn failover(a: &Memcached, b: &Memcached) -> Bifrost {
    let backends = pool_yaml("a", &format!("[\"{}\"]", a.addr()), "2s")
        + &pool_yaml("b", &format!("[\"{}\"]", b.addr()), "2s");
    start_proxy(
        1,
        &backends,
        "  - {match: \"*\", strategy: failover, backends: [a, b]}\n",
        "",
    )
}

/// A `warm_first` route over pools `l1` (warm) and `l2` (cold), cold hits written back into
/// warm (`write_on_miss`).
fn warm_first(warm: &Memcached, cold: &Memcached) -> Bifrost {
    let backends = pool_yaml("l1", &server_list("w", &[warm.addr()]), "2s")
        + &pool_yaml("l2", &server_list("c", &[cold.addr()]), "2s");
    start_proxy(
        1,
        &backends,
        "  - name: tiered\n    match: \"*\"\n    strategy: warm_first\n    warm: l1\n    cold: l2\n\
         \x20   write_on_miss: { ttl: 300 }\n",
        "",
    )
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// A binary client of the proxy.
fn binary(bifrost: &Bifrost) -> BinaryClient {
    BinaryClient::connect(&bifrost.addr())
}

/// A direct binary connection to a memcached.
fn direct(mc: &Memcached) -> BinaryClient {
    BinaryClient::connect(&mc.addr())
}

/// Reads responses up to and including the Noop's, which must come last with `noop_opaque`.
fn read_through_noop(c: &mut BinaryClient, noop_opaque: u32, at_most: usize) -> Vec<Response> {
    let mut got = Vec::new();
    loop {
        let resp = c.read_response();
        if resp.opcode == op::NOOP {
            assert_eq!(
                (resp.status, resp.opaque),
                (status::OK, noop_opaque),
                "the Noop's response: {resp:?}"
            );
            return got;
        }
        got.push(resp);
        assert!(
            got.len() <= at_most,
            "more than {at_most} responses before the Noop's: {got:#?}"
        );
    }
}

/// The frames of a libmemcached-style multi-get: a GetKQ per key (opaque = its index), then a
/// Noop with `noop_opaque`.
fn multi_get_frames(keys: &[Vec<u8>], noop_opaque: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        out.extend(Request::new(op::GETKQ).key(key).opaque(i as u32).encode());
    }
    out.extend(Request::new(op::NOOP).opaque(noop_opaque).encode());
    out
}

/// Asserts a multi-get's responses are exactly the hits `want` (index, key, value), in request
/// order, each a GetKQ success echoing its key and opaque.
#[track_caller]
fn assert_hits(got: &[Response], want: &[(usize, Vec<u8>, Vec<u8>)]) {
    let seen: Vec<(u32, Vec<u8>)> = got.iter().map(|r| (r.opaque, r.key.clone())).collect();
    let wanted: Vec<(u32, Vec<u8>)> = want
        .iter()
        .map(|(i, k, _)| (*i as u32, k.clone()))
        .collect();
    assert_eq!(
        seen.len(),
        wanted.len(),
        "one response per hit and none per miss; got {got:#?}"
    );
    for (resp, (i, key, value)) in got.iter().zip(want) {
        assert_eq!(
            (resp.opcode, resp.status, resp.opaque),
            (op::GETKQ, status::OK, *i as u32),
            "hits in request order: expected key {} (opaque {i}), got {resp:?}",
            show(key)
        );
        assert_eq!(resp.key, *key, "GetKQ echoes the key: {resp:?}");
        assert_eq!(resp.value, *value, "the value of {}: {resp:?}", show(key));
    }
}

// ---------------------------------------------------------------------------------------------
// External programs.

const LIBMEMCACHED_TOOLS: &str =
    "install libmemcached-tools (`apt-get install libmemcached-tools`; CI installs it)";

// ---------------------------------------------------------------------------------------------
// 1. memccapable -b.

/// How many binary tests `memccapable -b` runs.
const BINARY_TESTS: usize = 27;

#[test]
fn memccapable_binary_suite_passes_through_bifrost() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], "");
    let port = bifrost.port().to_string();
    let out = run(
        "memccapable",
        &["-b", "-v", "-t", "5", "-h", "127.0.0.1", "-p", &port],
        LIBMEMCACHED_TOOLS,
    );
    // memccapable writes each test's name and `[pass]` to stdout (buffered), `[FAIL]` and
    // the failed assertions to stderr: results are read from stdout.
    let report = out.describe(&format!("memccapable -b -v -t 5 -h 127.0.0.1 -p {port}"));
    let results: Vec<(String, bool)> = out
        .stdout
        .split("binary ")
        .skip(1)
        .map(|segment| {
            let name = segment.split(['[', '\n']).next().unwrap_or("").trim();
            (format!("binary {name}"), segment.contains("[pass]"))
        })
        .collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} binary tests did not pass: {failed:?}\n{report}",
        failed.len(),
        results.len()
    );
    assert_eq!(
        results.len(),
        BINARY_TESTS,
        "expected {BINARY_TESTS} binary tests to run\n{report}"
    );
    assert!(
        out.stdout.contains("All tests passed"),
        "no `All tests passed` line\n{report}"
    );
    assert!(out.status.success(), "{report}");
}

// ---------------------------------------------------------------------------------------------
// 2a. Commands, one at a time.

#[test]
fn storage_retrieval_and_cas_round_trip_with_opcode_and_opaque_echoed() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], "");
    let mut c = binary(&bifrost);

    // Set, then Get and GetK: the value, the flags, and the CAS the Set answered.
    let set = c.set(b"k", b"hello", 42, 0, 0);
    set.expect_status(status::OK, "set k");
    assert_ne!(set.cas, 0, "a Set answers the item's CAS: {set:?}");
    assert!(
        set.extras.is_empty() && set.key.is_empty() && set.value.is_empty(),
        "a Set's success has no body: {set:?}"
    );
    let get = c.get_with(op::GET, b"k");
    get.expect_status(status::OK, "get k");
    assert_eq!(
        (
            get.value.as_slice(),
            get.flags(),
            get.cas,
            get.key.as_slice()
        ),
        (&b"hello"[..], 42, set.cas, &b""[..]),
        "Get: value, flags, the Set's CAS, no key: {get:?}"
    );
    let getk = c.get_with(op::GETK, b"k");
    getk.expect_status(status::OK, "getk k");
    assert_eq!(
        (
            getk.value.as_slice(),
            getk.flags(),
            getk.cas,
            getk.key.as_slice()
        ),
        (&b"hello"[..], 42, set.cas, &b"k"[..]),
        "GetK echoes the key: {getk:?}"
    );

    // CAS: a stale one is refused and changes nothing; the right one stores and moves it on.
    c.set(b"k", b"stale", 0, 0, set.cas + 1)
        .expect_status(status::KEY_EXISTS, "set k with a stale cas");
    assert_eq!(c.get(b"k").as_deref(), Some(&b"hello"[..]), "unchanged");
    let cas_set = c.set(b"k", b"world", 7, 0, set.cas);
    cas_set.expect_status(status::OK, "set k with its cas");
    assert_ne!(cas_set.cas, set.cas, "a store gives a new CAS: {cas_set:?}");
    let get = c.get_with(op::GET, b"k");
    assert_eq!(
        (get.value.as_slice(), get.flags(), get.cas),
        (&b"world"[..], 7, cas_set.cas),
        "{get:?}"
    );
    c.set(b"k", b"late", 0, 0, set.cas)
        .expect_status(status::KEY_EXISTS, "set k with the cas of before");
    // What memcached holds is what the binary client stored.
    let on_mc = direct(&mc).get_with(op::GET, b"k");
    assert_eq!(
        (on_mc.value.as_slice(), on_mc.flags(), on_mc.cas),
        (&b"world"[..], 7, cas_set.cas),
        "memcached holds the item: {on_mc:?}"
    );

    // Add and Replace.
    c.store(op::ADD, b"k", b"x", 0, 0, 0)
        .expect_status(status::KEY_EXISTS, "add of an existing key");
    c.store(op::REPLACE, b"absent", b"x", 0, 0, 0)
        .expect_status(status::KEY_NOT_FOUND, "replace of a missing key");
    assert_eq!(c.get(b"absent"), None, "replace created nothing");
    c.store(op::ADD, b"added", b"a", 3, 0, 0)
        .expect_status(status::OK, "add of a new key");
    c.store(op::REPLACE, b"added", b"r", 4, 0, 0)
        .expect_status(status::OK, "replace of an existing key");
    let got = c.get_with(op::GET, b"added");
    assert_eq!(
        (got.value.as_slice(), got.flags()),
        (&b"r"[..], 4),
        "{got:?}"
    );

    // Append and Prepend.
    let append = c.call(Request::new(op::APPEND).key(b"k").value(b"!"));
    append.expect_status(status::OK, "append");
    assert_ne!(append.cas, 0, "an Append answers the new CAS: {append:?}");
    c.call(Request::new(op::PREPEND).key(b"k").value(b">"))
        .expect_status(status::OK, "prepend");
    let got = c.get_with(op::GET, b"k");
    assert_eq!(
        (got.value.as_slice(), got.flags()),
        (&b">world!"[..], 7),
        "appended and prepended, flags kept: {got:?}"
    );
    c.call(Request::new(op::APPEND).key(b"absent").value(b"x"))
        .expect_status(status::NOT_STORED, "append to a missing key");

    // Delete.
    c.delete(b"k").expect_status(status::OK, "delete k");
    c.get_with(op::GET, b"k")
        .expect_status(status::KEY_NOT_FOUND, "get of a deleted key");
    c.get_with(op::GETK, b"k")
        .expect_status(status::KEY_NOT_FOUND, "getk of a deleted key");
    c.delete(b"k")
        .expect_status(status::KEY_NOT_FOUND, "delete of a missing key");
    // Delete with a CAS: a stale one is refused.
    let cas = c.set_ok(b"d", b"v");
    c.call(Request::new(op::DELETE).key(b"d").cas(cas + 1))
        .expect_status(status::KEY_EXISTS, "delete with a stale cas");
    c.call(Request::new(op::DELETE).key(b"d").cas(cas))
        .expect_status(status::OK, "delete with its cas");
    assert_eq!(c.get(b"d"), None);
}

#[test]
fn counters_touch_and_gat_round_trip() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], "");
    let mut c = binary(&bifrost);

    // Increment of a missing counter with an initial value creates it with that value.
    let created = c.counter(op::INCREMENT, b"n", 5, 100, 0);
    created.expect_status(status::OK, "incr of a missing key with an initial value");
    assert_eq!(created.counter(), 100, "created with the initial value");
    let incr = c.counter(op::INCREMENT, b"n", 5, 0, 0);
    incr.expect_status(status::OK, "incr");
    assert_eq!(incr.counter(), 105);
    assert_ne!(incr.cas, 0, "an Increment answers the CAS: {incr:?}");
    let get = c.get_with(op::GET, b"n");
    assert_eq!(
        (get.value.as_slice(), get.cas),
        (&b"105"[..], incr.cas),
        "the counter as text, with the Increment's CAS: {get:?}"
    );
    let decr = c.counter(op::DECREMENT, b"n", 3, 0, 0);
    assert_eq!(decr.expect_status(status::OK, "decr").counter(), 102);
    let floor = c.counter(op::DECREMENT, b"n", 1000, 0, 0);
    assert_eq!(
        floor.expect_status(status::OK, "decr").counter(),
        0,
        "decr stops at 0"
    );
    let created = c.counter(op::DECREMENT, b"m", 1, 7, 0);
    assert_eq!(
        created
            .expect_status(status::OK, "decr of a missing key")
            .counter(),
        7,
        "decr creates with the initial value too"
    );
    // 64 bits wrap.
    c.set_ok(b"big", u64::MAX.to_string().as_bytes());
    let wrapped = c.counter(op::INCREMENT, b"big", 2, 0, 0);
    assert_eq!(
        wrapped
            .expect_status(status::OK, "incr past 2^64")
            .counter(),
        1
    );

    // Errors.
    c.set_ok(b"s", b"abc");
    c.counter(op::INCREMENT, b"s", 1, 0, 0)
        .expect_status(status::NON_NUMERIC, "incr of a non-numeric value");
    c.counter(op::INCREMENT, b"absent", 1, 0, u32::MAX)
        .expect_status(status::KEY_NOT_FOUND, "incr of a missing key, 0xffffffff");
    c.counter(op::DECREMENT, b"absent", 1, 0, u32::MAX)
        .expect_status(status::KEY_NOT_FOUND, "decr of a missing key, 0xffffffff");
    assert_eq!(c.get(b"absent"), None, "0xffffffff creates nothing");

    // Touch and GAT move the expiry (read on memcached with `mg <key> t`).
    let mut text = mc.client();
    c.set_ok(b"t", b"touched");
    assert_eq!(ttl_of(&mut text, "t"), -1, "stored without expiry");
    let touched = c.call(
        Request::new(op::TOUCH)
            .key(b"t")
            .extras(&exptime_extras(100)),
    );
    touched.expect_status(status::OK, "touch");
    // As memcached answers a touch: the item's flags (extras) and its CAS.
    assert_eq!(touched.flags(), 0, "{touched:?}");
    assert_ne!(touched.cas, 0, "{touched:?}");
    let ttl = ttl_of(&mut text, "t");
    assert!((90..=100).contains(&ttl), "touched to 100 s: ttl {ttl}");
    c.call(
        Request::new(op::TOUCH)
            .key(b"absent")
            .extras(&exptime_extras(100)),
    )
    .expect_status(status::KEY_NOT_FOUND, "touch of a missing key");

    let set = c.set(b"g", b"gotten", 9, 0, 0);
    set.expect_status(status::OK, "set g");
    let gat = c.call(Request::new(op::GAT).key(b"g").extras(&exptime_extras(200)));
    gat.expect_status(status::OK, "gat");
    assert_eq!(
        (
            gat.value.as_slice(),
            gat.flags(),
            gat.cas,
            gat.key.as_slice()
        ),
        (&b"gotten"[..], 9, set.cas, &b""[..]),
        "GAT answers like Get: {gat:?}"
    );
    let ttl = ttl_of(&mut text, "g");
    assert!(
        (190..=200).contains(&ttl),
        "GAT set the expiry to 200 s: ttl {ttl}"
    );
    c.call(
        Request::new(op::GAT)
            .key(b"absent")
            .extras(&exptime_extras(200)),
    )
    .expect_status(status::KEY_NOT_FOUND, "gat of a missing key");
    // GATQ: a miss is silent, a hit answered.
    let (miss, hit, noop) = (c.opaque(), c.opaque(), c.opaque());
    let mut frames = Request::new(op::GATQ)
        .key(b"absent")
        .extras(&exptime_extras(10))
        .opaque(miss)
        .encode();
    frames.extend(
        Request::new(op::GATQ)
            .key(b"g")
            .extras(&exptime_extras(300))
            .opaque(hit)
            .encode(),
    );
    frames.extend(Request::new(op::NOOP).opaque(noop).encode());
    c.send(&frames);
    let got = read_through_noop(&mut c, noop, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (
            got[0].opcode,
            got[0].status,
            got[0].opaque,
            got[0].value.as_slice()
        ),
        (op::GATQ, status::OK, hit, &b"gotten"[..]),
        "{got:#?}"
    );
    let ttl = ttl_of(&mut text, "g");
    assert!((290..=300).contains(&ttl), "GATQ set the expiry: ttl {ttl}");

    // An expiration past 2038 (a unix time over 2^31, valid in binary) keeps the item alive, as
    // memcached's own binary protocol does.
    let far = 0xf000_0000;
    c.set(b"far", b"future", 0, far, 0)
        .expect_status(status::OK, "set expiring after 2038");
    assert_eq!(
        c.get(b"far").as_deref(),
        Some(&b"future"[..]),
        "not expired"
    );
    let ttl = ttl_of(&mut text, "far");
    assert!(ttl > 365 * 24 * 3600, "expires years from now: ttl {ttl}");
    c.call(
        Request::new(op::TOUCH)
            .key(b"g")
            .extras(&exptime_extras(far)),
    )
    .expect_status(status::OK, "touch to after 2038");
    assert_eq!(c.get(b"g").as_deref(), Some(&b"gotten"[..]), "not expired");
    let ttl = ttl_of(&mut text, "g");
    assert!(
        ttl > 365 * 24 * 3600,
        "touched to years from now: ttl {ttl}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2b. Multi-get.

#[test]
fn a_pipelined_getkq_multi_get_over_two_servers_answers_the_hits_in_order_then_the_noop() {
    let (m0, m1) = (Memcached::start(), Memcached::start());
    let bifrost = hashed(&[&m0, &m1], "");
    let mut c = binary(&bifrost);

    // 150 keys (over the default multiget_window), two in three of them stored.
    let keys: Vec<Vec<u8>> = (0..150).map(|i| format!("mk:{i}").into_bytes()).collect();
    let mut hits = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if i % 3 != 1 {
            let value = format!("value-{i}-{}", "x".repeat(i % 17)).into_bytes();
            c.set(key, &value, i as u32, 0, 0)
                .expect_status(status::OK, "set");
            hits.push((i, key.clone(), value));
        }
    }
    // Premise: the hits are spread over both servers.
    let (mut d0, mut d1) = (direct(&m0), direct(&m1));
    let on0 = hits.iter().filter(|(_, k, _)| d0.get(k).is_some()).count();
    let on1 = hits.iter().filter(|(_, k, _)| d1.get(k).is_some()).count();
    assert_eq!(on0 + on1, hits.len(), "each hit on exactly one server");
    assert!(
        on0 > 10 && on1 > 10,
        "premise: hits on both servers ({on0} and {on1})"
    );

    let noop = 0x00c0_ffee;
    c.send(&multi_get_frames(&keys, noop));
    let got = read_through_noop(&mut c, noop, keys.len());
    assert_hits(&got, &hits);
    for resp in &got {
        let i = resp.opaque as usize;
        assert_eq!(resp.flags(), i as u32, "the flags of key {i}: {resp:?}");
        assert_ne!(resp.cas, 0, "a hit carries its CAS: {resp:?}");
    }
    c.expect_no_reply(SILENCE);

    // An all-miss batch answers the Noop alone; the connection goes on.
    let misses: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("absent:{i}").into_bytes())
        .collect();
    c.send(&multi_get_frames(&misses, 7));
    assert_hits(&read_through_noop(&mut c, 7, misses.len()), &[]);

    // GetQ (no key echoed) mixed with a loud GetK in one batch: misses silent, the GetK's miss
    // answered, all in order.
    let mut frames = Request::new(op::GETQ).key(b"mk:0").opaque(1).encode();
    frames.extend(Request::new(op::GETQ).key(b"mk:1").opaque(2).encode());
    frames.extend(Request::new(op::GETK).key(b"mk:1").opaque(3).encode());
    frames.extend(Request::new(op::GETQ).key(b"mk:2").opaque(4).encode());
    frames.extend(Request::new(op::NOOP).opaque(5).encode());
    c.send(&frames);
    let got = read_through_noop(&mut c, 5, 3);
    let summary: Vec<(u8, u16, u32, Vec<u8>)> = got
        .iter()
        .map(|r| (r.opcode, r.status, r.opaque, r.key.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (op::GETQ, status::OK, 1, Vec::new()),
            (op::GETK, status::KEY_NOT_FOUND, 3, b"mk:1".to_vec()),
            (op::GETQ, status::OK, 4, Vec::new()),
        ],
        "{got:#?}"
    );
    assert_eq!(got[0].value, hits[0].2);
}

// ---------------------------------------------------------------------------------------------
// 2c. Binary keys.

#[test]
fn keys_with_any_bytes_round_trip_and_land_in_memcached_under_those_bytes() {
    let (m0, m1) = (Memcached::start(), Memcached::start());
    let bifrost = hashed(&[&m0, &m1], "");
    let mut c = binary(&bifrost);
    let mut keys: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b"line\nbreak".to_vec(),
        b"crlf\r\nget other\r\n".to_vec(),
        b"tab\there".to_vec(),
        b"\x80\xff high bytes \xc3\xa9".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"nul\x00inside".to_vec(),
        b"\x00".to_vec(),
        b"\x7f".to_vec(),
        b" ".to_vec(),
        // Looks like a meta request's flags once the key is split at spaces.
        b"k b q".to_vec(),
        // The longest key whose base64 still fits memcached's 250 bytes.
        [b' '].repeat(186),
        // A plain key of 250 bytes goes as it is.
        [b'p'].repeat(250),
    ];
    keys.extend((0..20).map(|i| format!("spread {i}\n").into_bytes()));
    let (mut d0, mut d1) = (direct(&m0), direct(&m1));
    let mut text = bifrost.client();
    let (mut on0, mut on1) = (0, 0);
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value of key {i}").into_bytes();
        c.set(key, &value, i as u32, 0, 0)
            .expect_status(status::OK, &format!("set {}", show(key)));
        let got = c.get_with(op::GETK, key);
        got.expect_status(status::OK, &format!("getk {}", show(key)));
        assert_eq!(
            (got.key.as_slice(), got.value.as_slice(), got.flags()),
            (key.as_slice(), value.as_slice(), i as u32),
            "the key's bytes echoed, its value and flags: {got:?}"
        );
        // On memcached, under exactly these bytes, on one server.
        let (a, b) = (d0.get(key), d1.get(key));
        match (&a, &b) {
            (Some(v), None) => {
                on0 += 1;
                assert_eq!(v, &value, "on m0 under {}", show(key));
            }
            (None, Some(v)) => {
                on1 += 1;
                assert_eq!(v, &value, "on m1 under {}", show(key));
            }
            _ => panic!(
                "key {} must be on exactly one server under its own bytes: m0 {a:?}, m1 {b:?}",
                show(key)
            ),
        }
        // A text client reaches the same item through meta's base64 keys.
        if key.len() < 250 {
            text.send(format!("mg {} b v\r\n", base64(key)).as_bytes());
            let line = text.read_line();
            assert_eq!(
                line,
                format!("VA {}", value.len()),
                "mg of base64 {}",
                show(key)
            );
            let data = text.read_exact(value.len() + 2);
            assert_eq!(&data[..value.len()], value.as_slice());
        }
        c.delete(key)
            .expect_status(status::OK, &format!("delete {}", show(key)));
        assert_eq!(d0.get(key).or(d1.get(key)), None, "deleted: {}", show(key));
    }
    assert!(on0 > 0 && on1 > 0, "keys on both servers ({on0}, {on1})");

    // A key over 250 bytes is refused, as memcached refuses it.
    let long = [b'p'].repeat(251);
    c.set(&long, b"v", 0, 0, 0)
        .expect_status(status::INVALID_ARGUMENTS, "set of a 251-byte key");
    c.get_with(op::GET, &long)
        .expect_status(status::INVALID_ARGUMENTS, "get of a 251-byte key");
    // An empty key too.
    c.get_with(op::GET, b"")
        .expect_status(status::INVALID_ARGUMENTS, "get of an empty key");
    assert_eq!(c.get(b"with space"), None, "still usable, and deleted");
}

// ---------------------------------------------------------------------------------------------
// 2d. Malformed frames and limits.

#[test]
fn a_wrong_magic_after_a_valid_frame_answers_the_valid_one_then_closes() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], "");
    let mut c = binary(&bifrost);
    c.set_ok(b"k", b"v");
    let mut frames = Request::new(op::GET).key(b"k").opaque(11).encode();
    // A response's magic where a request must be, then a request that must not be served.
    let mut bad = Request::new(op::DELETE).key(b"k").opaque(12).encode();
    bad[0] = 0x81;
    frames.extend(bad);
    frames.extend(Request::new(op::DELETE).key(b"k").opaque(13).encode());
    c.send(&frames);
    let got = c.read_response();
    assert_eq!(
        (got.opcode, got.status, got.opaque, got.value.as_slice()),
        (op::GET, status::OK, 11, &b"v"[..]),
        "the valid frame is answered: {got:?}"
    );
    c.expect_closed();
    assert_eq!(
        direct(&mc).get(b"k").as_deref(),
        Some(&b"v"[..]),
        "nothing after the bad frame was served"
    );

    // A text byte after binary frames is a bad frame too.
    let mut c = binary(&bifrost);
    let mut frames = Request::new(op::NOOP).opaque(21).encode();
    frames.extend(b"get k\r\n".repeat(4));
    c.send(&frames);
    let got = c.read_response();
    assert_eq!((got.opcode, got.opaque), (op::NOOP, 21), "{got:?}");
    c.expect_closed();
}

#[test]
fn lengths_that_do_not_add_up_close_the_connection() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], "");

    // key_len + extras_len > body_len, after a valid Noop (answered).
    let mut c = binary(&bifrost);
    let mut frames = Request::new(op::NOOP).opaque(1).encode();
    frames.extend(header(op::GET, 10, 0, 5, 2, 0));
    frames.extend(b"abcde");
    c.send(&frames);
    let got = c.read_response();
    assert_eq!((got.opcode, got.opaque), (op::NOOP, 1), "{got:?}");
    c.expect_closed();

    // Extras alone longer than the body.
    let mut c = binary(&bifrost);
    let mut frame = header(op::SET, 1, 8, 4, 3, 0).to_vec();
    frame.extend(b"abcd");
    c.send(&frame);
    c.expect_closed();

    // A body announced far over any value the listener takes closes at once, without waiting
    // for (or swallowing) the 4 GiB.
    let mut c = binary(&bifrost);
    c.send(&header(op::SET, 1, 8, u32::MAX - 16, 4, 0));
    c.expect_closed();

    assert!(
        bifrost.client().version().starts_with("VERSION "),
        "the proxy still serves"
    );
}

#[test]
fn a_value_over_max_value_size_answers_too_large_and_the_connection_stays_usable() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], ", max_value_size: 1024");
    let mut c = binary(&bifrost);
    c.set_ok(b"keep", b"kept");
    assert_eq!(
        c.set(b"fits", &[b'f'; 1024], 0, 0, 0).status,
        status::OK,
        "a value of max_value_size fits"
    );

    // The 2000-byte value is made of frames (Deletes of `keep`): swallowed, never served.
    let delete = Request::new(op::DELETE).key(b"keep").opaque(99).encode();
    let mut value = delete.repeat(2000 / delete.len() + 1);
    value.truncate(2000);
    let big = c.set(b"big", &value, 0, 0, 0);
    big.expect_status(status::VALUE_TOO_LARGE, "a 2000-byte value over 1024");
    assert_eq!(big.opcode, op::SET);
    assert_eq!(c.get(b"big"), None, "not stored");
    assert_eq!(
        c.get(b"keep").as_deref(),
        Some(&b"kept"[..]),
        "the value's bytes were swallowed, not served"
    );

    // Sent in pieces (the header first, the body later), quiet: still answered, then usable.
    let opaque = c.opaque();
    let frame = Request::new(op::SETQ)
        .key(b"big")
        .extras(&store_extras(0, 0))
        .value(&value)
        .opaque(opaque)
        .encode();
    c.send(&frame[..30]);
    c.send(&frame[30..1000]);
    c.send(&frame[1000..]);
    let got = c.read_response();
    assert_eq!(
        (got.opcode, got.status, got.opaque),
        (op::SETQ, status::VALUE_TOO_LARGE, opaque),
        "a quiet store's error is answered: {got:?}"
    );
    assert_eq!(c.get(b"keep").as_deref(), Some(&b"kept"[..]));
    assert_eq!(direct(&mc).get(b"big"), None, "memcached never saw it");

    // A body more than 1 MiB over max_value_size is not a value but garbage: the connection
    // closes at once (nothing is swallowed, nothing answered).
    let body = 1024 + (1 << 20) + 100;
    c.send(&header(op::SET, 3, 8, body, 5, 0));
    c.expect_closed();
}

#[test]
fn flush_empties_every_server_of_the_pool_and_flushq_answers_nothing() {
    let (m0, m1) = (Memcached::start(), Memcached::start());
    let bifrost = hashed(&[&m0, &m1], "");
    let mut c = binary(&bifrost);
    let keys: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("{i}:flushed").into_bytes())
        .collect();
    for key in &keys {
        c.set_ok(key, b"v");
    }
    let (mut d0, mut d1) = (direct(&m0), direct(&m1));
    let on0 = keys.iter().filter(|k| d0.get(k).is_some()).count();
    assert!(
        on0 > 0 && on0 < keys.len(),
        "premise: keys on both servers ({on0} of {} on m0)",
        keys.len()
    );
    c.call(Request::new(op::FLUSH))
        .expect_status(status::OK, "flush");
    for key in &keys {
        assert_eq!(c.get(key), None, "flushed: {}", show(key));
        assert_eq!(d0.get(key).or(d1.get(key)), None, "flushed on the servers");
    }

    c.set_ok(b"again", b"v");
    let mut frames = Request::new(op::FLUSHQ).opaque(1).encode();
    frames.extend(Request::new(op::NOOP).opaque(2).encode());
    c.send(&frames);
    assert_eq!(
        read_through_noop(&mut c, 2, 0).len(),
        0,
        "FlushQ answers nothing"
    );
    assert_eq!(c.get(b"again"), None, "flushed by FlushQ");
}

#[test]
fn a_dead_server_answers_binary_errors_with_the_opaque_and_the_connection_goes_on() {
    let bifrost = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  pool: {{servers: [\"{}\"], timeout: 1s}}\n\
                 routes:\n  - {{name: all, match: \"*\", strategy: consistent_hash, backend: pool}}\n",
                dead_addr()
            )
        },
        &[],
    );
    let mut c = binary(&bifrost);
    let set = c.set(b"k", b"v", 0, 0, 0);
    set.expect_status(status::TEMPORARY_FAILURE, "a set to a dead server");
    assert!(!set.value.is_empty(), "the error says why: {set:?}");
    c.counter(op::INCREMENT, b"k", 1, 0, 0)
        .expect_status(status::TEMPORARY_FAILURE, "an incr on a dead server");
    // As for text clients (a get answers END), a key on a dead server is a miss.
    c.get_with(op::GET, b"k")
        .expect_status(status::KEY_NOT_FOUND, "a get on a dead server");
    let keys = vec![b"k".to_vec(), b"k2".to_vec()];
    c.send(&multi_get_frames(&keys, 5));
    assert_hits(&read_through_noop(&mut c, 5, keys.len()), &[]);
    c.call(Request::new(op::NOOP))
        .expect_status(status::OK, "the connection goes on");
}

// ---------------------------------------------------------------------------------------------
// 2e. What the proxy answers itself.

#[test]
fn sasl_unknown_opcodes_version_stat_and_quit() {
    let mc = Memcached::start();
    let bifrost = hashed(&[&mc], "");
    let mut c = binary(&bifrost);

    let sasl = c.call(Request::new(op::SASL_LIST_MECHS));
    sasl.expect_status(status::NOT_SUPPORTED, "SASL list mechs");
    c.call(
        Request::new(op::SASL_AUTH)
            .key(b"PLAIN")
            .value(b"\0user\0pass"),
    )
    .expect_status(status::NOT_SUPPORTED, "SASL auth");
    let unknown = c.call(Request::new(0x30).key(b"k").value(b"v"));
    unknown.expect_status(status::UNKNOWN_COMMAND, "opcode 0x30");
    c.call(Request::new(0xff))
        .expect_status(status::UNKNOWN_COMMAND, "opcode 0xff");
    assert_eq!(c.get(b"k"), None, "still usable after them");

    // VERSION: the proxy's, as text clients get it.
    let version = c.call(Request::new(op::VERSION));
    version.expect_status(status::OK, "version");
    assert_eq!(
        String::from_utf8_lossy(&version.value),
        env!("CARGO_PKG_VERSION"),
        "{version:?}"
    );
    let text_version = bifrost.client().version();
    assert_eq!(
        text_version.strip_prefix("VERSION ").map(str::as_bytes),
        Some(version.value.as_slice()),
        "the same as a text client's `version`"
    );

    // STAT: a packet per counter, the proxy's own (the ones text `stats` lists), then one
    // with an empty key.
    let opaque = c.opaque();
    c.send(&Request::new(op::STAT).opaque(opaque).encode());
    let mut names = Vec::new();
    let mut pid = None;
    loop {
        let resp = c.read_response();
        assert_eq!(
            (resp.opcode, resp.status, resp.opaque),
            (op::STAT, status::OK, opaque),
            "{resp:?}"
        );
        if resp.key.is_empty() {
            assert!(resp.value.is_empty(), "the last packet is empty: {resp:?}");
            break;
        }
        let name = String::from_utf8(resp.key.clone()).expect("a stat name is text");
        if name == "pid" {
            pid = Some(String::from_utf8_lossy(&resp.value).into_owned());
        }
        names.push(name);
        assert!(names.len() < 10_000, "STAT never ended");
    }
    assert_eq!(
        pid,
        Some(bifrost.pid().to_string()),
        "STAT pid is the proxy's"
    );
    let mut text_names: Vec<String> = bifrost.client().stats().into_keys().collect();
    text_names.sort();
    names.sort();
    assert_eq!(names, text_names, "the counters text `stats` lists");
    c.call(Request::new(op::NOOP))
        .expect_status(status::OK, "usable after STAT");

    // QUIT: answered, then closed; what follows it is not served.
    c.set_ok(b"q", b"v");
    let mut frames = Request::new(op::GET).key(b"q").opaque(1).encode();
    frames.extend(Request::new(op::QUIT).opaque(2).encode());
    frames.extend(Request::new(op::DELETE).key(b"q").opaque(3).encode());
    c.send(&frames);
    let got = c.read_response();
    assert_eq!(
        (got.opcode, got.opaque, got.status),
        (op::GET, 1, status::OK),
        "{got:?}"
    );
    let got = c.read_response();
    assert_eq!(
        (got.opcode, got.opaque, got.status),
        (op::QUIT, 2, status::OK),
        "QUIT is answered: {got:?}"
    );
    c.expect_closed();
    assert_eq!(
        direct(&mc).get(b"q").as_deref(),
        Some(&b"v"[..]),
        "not deleted"
    );

    // QUITQ: closed without an answer, after what came before it.
    let mut c = binary(&bifrost);
    let mut frames = Request::new(op::NOOP).opaque(5).encode();
    frames.extend(Request::new(op::QUITQ).opaque(6).encode());
    frames.extend(Request::new(op::NOOP).opaque(7).encode());
    c.send(&frames);
    let got = c.read_response();
    assert_eq!((got.opcode, got.opaque), (op::NOOP, 5), "{got:?}");
    c.expect_closed();
}

// ---------------------------------------------------------------------------------------------
// 2f. Strategies over several pools.

#[test]
fn binary_clients_on_a_failover_route_are_served_by_the_second_pool_when_the_first_dies() {
    let (mut a, b) = (Memcached::start(), Memcached::start());
    let bifrost = failover(&a, &b);
    let mut c = binary(&bifrost);
    c.set_ok(b"first", b"on a");
    assert_eq!(direct(&a).get(b"first").as_deref(), Some(&b"on a"[..]));
    assert_eq!(direct(&b).get(b"first"), None, "b only when a fails");
    direct(&b).set_ok(b"only b", b"from b");
    direct(&b).set_ok(b"also b", b"from b too");

    a.kill();
    assert_eq!(
        c.get(b"only b").as_deref(),
        Some(&b"from b"[..]),
        "served by b while a is dead"
    );
    c.set_ok(b"second", b"on b");
    assert_eq!(direct(&b).get(b"second").as_deref(), Some(&b"on b"[..]));
    let keys: Vec<Vec<u8>> = vec![
        b"only b".to_vec(),
        b"absent".to_vec(),
        b"second".to_vec(),
        b"also b".to_vec(),
    ];
    c.send(&multi_get_frames(&keys, 77));
    let got = read_through_noop(&mut c, 77, keys.len());
    assert_hits(
        &got,
        &[
            (0, keys[0].clone(), b"from b".to_vec()),
            (2, keys[2].clone(), b"on b".to_vec()),
            (3, keys[3].clone(), b"from b too".to_vec()),
        ],
    );
    let n = c.counter(op::INCREMENT, b"counter", 1, 41, 0);
    assert_eq!(n.expect_status(status::OK, "incr on b").counter(), 41);
    assert_eq!(direct(&b).get(b"counter").as_deref(), Some(&b"41"[..]));
}

/// A binary Get always carries a CAS, so on a warm_first route it is a cas read (as `gets`
/// and `mg ... c` are): the cold tier's, with cold's CAS (a following CAS store, which goes to
/// cold, then works), and nothing is written back into warm. Writes reach both tiers.
#[test]
fn binary_gets_on_a_warm_first_route_are_the_cold_tier_s_with_its_cas() {
    let (warm, cold) = (Memcached::start(), Memcached::start());
    let bifrost = warm_first(&warm, &cold);
    let mut c = binary(&bifrost);
    let (mut dw, mut dc) = (direct(&warm), direct(&cold));
    dc.set(b"cold key", b"cold value", 42, 0, 0)
        .expect_status(status::OK, "set on cold");
    let cold_cas = dc.get_with(op::GET, b"cold key").cas;
    direct(&warm)
        .set(b"warm-only", b"from warm", 5, 0, 0)
        .expect_status(status::OK, "set on warm");

    let got = c.get_with(op::GETK, b"cold key");
    got.expect_status(status::OK, "a cold hit");
    assert_eq!(
        (
            got.key.as_slice(),
            got.value.as_slice(),
            got.flags(),
            got.cas
        ),
        (&b"cold key"[..], &b"cold value"[..], 42, cold_cas),
        "cold's item and CAS: {got:?}"
    );
    let got = c.get_with(op::GET, b"warm-only");
    assert_eq!(got.status, status::KEY_NOT_FOUND, "cold's answer: {got:?}");
    // A CAS store with the CAS the get returned succeeds on cold.
    let stored = c.set(b"cold key", b"newer", 42, 0, cold_cas);
    stored.expect_status(status::OK, "a CAS store with cold's CAS");
    assert_eq!(dc.get(b"cold key").as_deref(), Some(&b"newer"[..]));
    let mut text = bifrost.client();
    assert_eq!(
        effect(&mut text, "write_on_miss.tiered", "queued"),
        0,
        "nothing written back"
    );
    assert_eq!(dw.get(b"cold key"), None, "warm never got the cold item");

    // A binary write goes to both tiers.
    c.set_ok(b"written", b"both");
    assert_eq!(dc.get(b"written").as_deref(), Some(&b"both"[..]), "on cold");
    wait_until(LANDED, "the write is in warm", || {
        dw.get(b"written").as_deref() == Some(&b"both"[..])
    });
}

#[test]
fn binary_and_text_clients_on_one_listener_are_each_answered_in_their_protocol() {
    let (m0, m1) = (Memcached::start(), Memcached::start());
    let bifrost = hashed(&[&m0, &m1], "");
    let addr = bifrost.addr();
    const ROUNDS: usize = 200;

    let binary_addr = addr.clone();
    let binary_side = thread::spawn(move || {
        let mut c = BinaryClient::connect(&binary_addr);
        for i in 0..ROUNDS {
            let key = format!("bin:{i}").into_bytes();
            let value = format!("binary value {i}").into_bytes();
            c.set(&key, &value, 1, 0, 0)
                .expect_status(status::OK, "binary set");
            assert_eq!(c.get(&key), Some(value), "binary get of bin:{i}");
            // A key the text side wrote (maybe not yet).
            let text_key = format!("txt:{}", i / 2).into_bytes();
            let resp = c.get_with(op::GETK, &text_key);
            assert!(
                matches!(resp.status, status::OK | status::KEY_NOT_FOUND),
                "{resp:?}"
            );
        }
        // A pipelined batch: every response a binary frame, in order.
        let keys: Vec<Vec<u8>> = (0..ROUNDS)
            .map(|i| format!("bin:{i}").into_bytes())
            .collect();
        c.send(&multi_get_frames(&keys, 1234));
        let got = read_through_noop(&mut c, 1234, ROUNDS);
        assert_eq!(got.len(), ROUNDS, "every binary key is a hit");
    });
    let text_addr = addr.clone();
    let text_side = thread::spawn(move || {
        let mut c = Client::connect(&text_addr);
        for i in 0..ROUNDS {
            let key = format!("txt:{i}");
            let value = format!("text value {i}");
            assert_eq!(c.set(&key, value.as_bytes(), 2, 0), "STORED");
            assert_eq!(c.get(&key), Some(value.into_bytes()), "text get of {key}");
            c.send(format!("mg bin:{} v\r\n", i / 2).as_bytes());
            let line = c.read_line();
            if let Some(len) = line.strip_prefix("VA ") {
                let len: usize = len.parse().expect("VA <len>");
                c.read_exact(len + 2);
            } else {
                assert_eq!(line, "EN", "a text reply to mg");
            }
        }
        let keys: Vec<String> = (0..ROUNDS).map(|i| format!("txt:{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(c.get_multi(&keys).len(), ROUNDS, "every text key is a hit");
    });
    binary_side.join().expect("the binary client's thread");
    text_side.join().expect("the text client's thread");

    // Each sees what the other wrote.
    let mut b = BinaryClient::connect(&addr);
    let got = b.get_with(op::GET, b"txt:7");
    assert_eq!(
        (got.value.as_slice(), got.flags()),
        (&b"text value 7"[..], 2),
        "{got:?}"
    );
    let mut t = Client::connect(&addr);
    t.send(b"get bin:7\r\n");
    let items = t.read_values().expect("VALUE and END");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0].flags, items[0].data.as_slice()),
        (1, &b"binary value 7"[..])
    );
}

// ---------------------------------------------------------------------------------------------
// 3. libmemcached's command-line tools.

#[test]
fn memccp_and_memccat_with_binary_copy_files_through_bifrost() {
    let (m0, m1) = (Memcached::start(), Memcached::start());
    let bifrost = hashed(&[&m0, &m1], "");
    let servers = format!("--servers={}", bifrost.addr());
    // Contents with line ends and every byte value; one larger than a socket buffer.
    let mut rng = common::Rng::new(17);
    let random: Vec<u8> = (0..300_000).map(|_| rng.below(256) as u8).collect();
    let contents: Vec<Vec<u8>> = vec![
        b"hello\r\nworld\r\nEND\r\n".to_vec(),
        (0..=255u8).collect(),
        random,
    ];
    let files: Vec<TempFile> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| TempFile::new(&format!("memccp{i}"), "bin", c))
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.path()
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();

    let mut args = vec!["--binary", servers.as_str()];
    let paths: Vec<String> = files
        .iter()
        .map(|f| f.path().display().to_string())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let out = run("memccp", &args, LIBMEMCACHED_TOOLS);
    assert!(out.status.success(), "{}", out.describe("memccp --binary"));

    let (mut d0, mut d1) = (direct(&m0), direct(&m1));
    for (name, content) in names.iter().zip(&contents) {
        let copy = TempFile::new("memccat", "out", b"");
        let file = format!("--file={}", copy.path().display());
        let out = run(
            "memccat",
            &["--binary", servers.as_str(), file.as_str(), name],
            LIBMEMCACHED_TOOLS,
        );
        assert!(out.status.success(), "{}", out.describe("memccat --binary"));
        let got = std::fs::read(copy.path()).expect("memccat's output file");
        assert!(
            got == *content,
            "memccat {name}: {} bytes, expected {} ({} vs {})",
            got.len(),
            content.len(),
            show(&got),
            show(content)
        );
        let on = d0.get(name.as_bytes()).or(d1.get(name.as_bytes()));
        assert!(
            on.as_ref() == Some(content),
            "memcached holds {name} as the file"
        );
    }
    let out = run(
        "memccat",
        &["--binary", servers.as_str(), "no-such-file-key"],
        LIBMEMCACHED_TOOLS,
    );
    assert!(
        !out.status.success(),
        "memccat of a missing key fails: {}",
        out.describe("memccat")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. pylibmc with binary=True.

/// The script the pylibmc tests run.
const PYLIBMC_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pylibmc_binary.py");
/// How many `i:keep:PREFIX` keys the script leaves behind.
const PYLIBMC_KEPT: usize = 20;

/// Runs tests/pylibmc_binary.py against `addr` with its keys under `prefix`, after it reads
/// the `presets` (key, value) stored behind the proxy beforehand; panics with its output unless
/// it passes.
fn pylibmc(addr: &str, prefix: &str, presets: &[(&str, &str)]) {
    let presets: Vec<String> = presets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec![PYLIBMC_SCRIPT, addr, prefix];
    args.extend(presets.iter().map(String::as_str));
    let out = run("python3", &args, "python3 is needed for the pylibmc tests");
    let report = out.describe(&format!("python3 {}", args.join(" ")));
    assert!(
        out.status.code() != Some(3),
        "pylibmc is not importable: `python3 -m pip install pylibmc` (CI installs it)\n{report}"
    );
    assert!(out.status.success(), "{report}");
    assert!(out.stdout.starts_with("ok "), "{report}");
}

/// The key and value the script leaves as `i:keep:PREFIX`.
fn kept(prefix: &str, i: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("{i}:keep:{prefix}").into_bytes(),
        format!("value-{i}").into_bytes(),
    )
}

#[test]
fn pylibmc_binary_over_a_consistent_hash_pool_of_two() {
    let (m0, m1) = (Memcached::start(), Memcached::start());
    let bifrost = hashed(&[&m0, &m1], "");
    pylibmc(&bifrost.addr(), "pool", &[]);
    let (mut d0, mut d1) = (direct(&m0), direct(&m1));
    let (mut on0, mut on1) = (0, 0);
    for i in 0..PYLIBMC_KEPT {
        let (key, value) = kept("pool", i);
        match (d0.get(&key), d1.get(&key)) {
            (Some(v), None) if v == value => on0 += 1,
            (None, Some(v)) if v == value => on1 += 1,
            other => panic!("{} on exactly one server: {other:?}", show(&key)),
        }
    }
    assert!(
        on0 > 0 && on1 > 0,
        "spread over both servers ({on0}, {on1})"
    );
}

#[test]
fn pylibmc_binary_on_a_failover_route() {
    let (mut a, b) = (Memcached::start(), Memcached::start());
    let bifrost = failover(&a, &b);
    pylibmc(&bifrost.addr(), "up", &[]);
    let (key, value) = kept("up", 0);
    assert_eq!(direct(&a).get(&key), Some(value), "written to a");
    assert_eq!(direct(&b).get(&key), None, "b only when a fails");

    direct(&b)
        .set(b"preset", b"on b", 0, 0, 0)
        .expect_status(status::OK, "set on b");
    a.kill();
    pylibmc(&bifrost.addr(), "down", &[("preset", "on b")]);
    let mut db = direct(&b);
    for i in 0..PYLIBMC_KEPT {
        let (key, value) = kept("down", i);
        assert_eq!(db.get(&key), Some(value), "written to b while a is dead");
    }
}

#[test]
fn pylibmc_binary_on_a_warm_first_route() {
    let (warm, cold) = (Memcached::start(), Memcached::start());
    let bifrost = warm_first(&warm, &cold);
    let (mut dw, mut dc) = (direct(&warm), direct(&cold));
    let presets = [("cold1", "one"), ("cold2", "two"), ("cold3", "three")];
    for (k, v) in presets {
        dc.set(k.as_bytes(), v.as_bytes(), 0, 0, 0)
            .expect_status(status::OK, "set on cold");
    }
    // The script's reads are answered from cold (a binary get carries a CAS: the cold tier's).
    pylibmc(&bifrost.addr(), "tiers", &presets);
    for i in 0..PYLIBMC_KEPT {
        let (key, value) = kept("tiers", i);
        assert_eq!(dc.get(&key), Some(value.clone()), "written to cold");
        wait_until(LANDED, "the write is in warm too", || {
            dw.get(&key).as_deref() == Some(value.as_slice())
        });
    }
}
