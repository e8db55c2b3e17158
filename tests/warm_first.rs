//! End-to-end tests of the `warm_first` strategy (SPEC §5, issue 8 SEMANTICS.md): reads from
//! the warm pool, misses read through to the cold pool and a cold hit is written back into warm
//! in the background with `add` (so a newer write is never overwritten by the stale copy);
//! writes go to both tiers at once and the client waits for cold; a client reads its own write
//! at once; gets/cas and counters belong to cold, which invalidates warm; a dead warm tier
//! leaves reads and writes to cold.
//!
//! Real memcached processes for both tiers, read directly to check what each tier holds; a
//! delaying relay in front of cold where a read must stay in flight.

mod common;

use common::tiers::{
    dead_addr, effect, meta, pool_yaml, server_list, start_proxy, ttl_of, value_on, values,
    wait_value, LANDED,
};
use common::{wait_until, Bifrost, Client, Item, Memcached, Relay, Rng};
use std::time::{Duration, Instant};

/// The route's name: stats name side effects after it.
const ROUTE: &str = "tiered";
/// The `write_on_miss` TTL of the route.
const TTL: i64 = 300;

/// A warm_first route named `tiered` over pools `l1` (warm, servers `w0`, `w1`...) and `l2`
/// (cold, servers `c0`, `c1`...), each with `timeout`, matching every key, with
/// `write_on_miss: { ttl: 300 }`.
fn tiered(warm: &[String], cold: &[String], timeout: &str) -> Bifrost {
    let backends = pool_yaml("l1", &server_list("w", warm), timeout)
        + &pool_yaml("l2", &server_list("c", cold), timeout);
    let route = format!(
        "  - name: {ROUTE}\n    match: \"*\"\n    strategy: warm_first\n    warm: l1\n    cold: l2\n\
         \x20   write_on_miss: {{ ttl: {TTL} }}\n"
    );
    start_proxy(1, &backends, &route, "")
}

/// The usual setup: one warm and one cold memcached (alive as long as the first element)
/// under [`tiered`] with a 2 s timeout, and a direct client of warm and of cold.
fn usual_tiers() -> ((Memcached, Memcached), Bifrost, Client, Client) {
    let (warm, cold) = (Memcached::start(), Memcached::start());
    let bifrost = tiered(&[warm.addr()], &[cold.addr()], "2s");
    let (dw, dc) = (warm.client(), cold.client());
    ((warm, cold), bifrost, dw, dc)
}

fn set(c: &mut Client, key: &str, flags: u32, exptime: u32, value: &str) -> String {
    c.set(key, value.as_bytes(), flags, exptime)
}

/// The whole item (flags included) `get key` answers, `None` on a miss.
fn item_on(c: &mut Client, key: &str) -> Option<Item> {
    c.send(format!("get {key}\r\n").as_bytes());
    let mut items = c
        .read_values()
        .unwrap_or_else(|line| panic!("get {key}: error reply {line:?}"));
    assert!(items.len() <= 1, "get {key}: {items:?}");
    items.pop()
}

#[test]
fn a_cold_hit_is_answered_and_written_back_into_warm_with_its_flags_and_the_write_on_miss_ttl() {
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    // No expiry on cold: the write-back's TTL is the write_on_miss TTL.
    assert_eq!(set(&mut dc, "k", 42, 0, "hello"), "STORED");

    let mut c = bifrost.client();
    let got = item_on(&mut c, "k");
    let want = Item {
        key: "k".to_string(),
        flags: 42,
        data: b"hello".to_vec(),
        cas: None,
    };
    assert_eq!(got.as_ref(), Some(&want), "the cold hit, flags included");

    wait_until(LANDED, "the write-back of k is in warm", || {
        item_on(&mut dw, "k").is_some()
    });
    assert_eq!(
        item_on(&mut dw, "k").as_ref(),
        Some(&want),
        "warm holds the cold item with its flags"
    );
    let t = ttl_of(&mut dw, "k");
    assert!(
        t <= TTL && t > TTL - 5,
        "warm's copy expires after write_on_miss.ttl ({TTL}): t = {t}"
    );

    // Now a warm hit: cold is not asked again.
    let cold_gets = dc.stat("cmd_get");
    assert_eq!(value_on(&mut c, "k").as_deref(), Some("hello"));
    assert_eq!(
        dc.stat("cmd_get"),
        cold_gets,
        "a warm hit does not ask cold"
    );
}

#[test]
fn a_write_back_racing_a_newer_write_never_leaves_the_stale_value_in_warm() {
    // Cold's replies are held 1 s by the relay, so client A's read-through of k is still in
    // flight when client B's `set k new` reaches warm; A's write-back of `old` comes after
    // that. As `add`, it fails; as a `set`, it would leave `old` in warm.
    let warm = Memcached::start();
    let cold = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_secs(1));
    let bifrost = tiered(&[warm.addr()], &[relay.addr()], "5s");
    let (mut dw, mut dc) = (warm.client(), cold.client());
    assert_eq!(set(&mut dc, "k", 0, 0, "old"), "STORED");

    let mut a = bifrost.client();
    let mut b = bifrost.client();
    let mut admin = bifrost.client();
    a.send(b"get k\r\n");
    // Warm missed and the read is at cold (nothing else goes through the relay).
    relay.wait_for_requests(1, LANDED);
    b.send(b"set k 0 0 3\r\nnew\r\n");
    // B's copy reaches warm at once (both tiers are written at the same moment), while cold's
    // answer to A (and so A's write-back) is still held by the relay.
    wait_value(&mut dw, "k", Some("new"), "B's write is in warm");
    assert_eq!(
        relay.bytes_to_client(),
        0,
        "premise: cold's reply to A was still held when B's write reached warm \
         (the machine stalled for a whole second?)"
    );
    assert_eq!(
        values(&mut a),
        vec![("k".to_string(), "old".to_string())],
        "A read through to cold before B's write reached it"
    );
    assert_eq!(b.read_line(), "STORED", "B gets cold's reply");

    let name = format!("write_on_miss.{ROUTE}");
    wait_until(
        LANDED,
        "A's write-back was attempted (done + failed >= 1)",
        || effect(&mut admin, &name, "done") + effect(&mut admin, &name, "failed") >= 1,
    );
    assert_eq!(
        value_on(&mut dw, "k").as_deref(),
        Some("new"),
        "the stale write-back must not overwrite the newer write"
    );
    assert_eq!(value_on(&mut dc, "k").as_deref(), Some("new"));
    assert_eq!(
        value_on(&mut a, "k").as_deref(),
        Some("new"),
        "a later read sees the newer write"
    );
}

#[test]
fn a_client_reads_its_own_write_at_once() {
    // Both tiers hold the old value; the write and the read go in one packet, so the read is
    // dispatched while the write is in flight. Repeated to give a race a chance to show.
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    let mut c = bifrost.client();
    for i in 0..20 {
        let k = format!("own:{i}");
        for d in [&mut dw, &mut dc] {
            assert_eq!(set(d, &k, 0, 0, "old"), "STORED");
        }
        c.send(format!("set {k} 0 0 3\r\nnew\r\nget {k}\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED", "{k}");
        assert_eq!(
            values(&mut c),
            vec![(k.clone(), "new".to_string())],
            "{k}: the read after the write sees the write"
        );
        c.send(format!("delete {k}\r\nget {k}\r\n").as_bytes());
        assert_eq!(c.read_line(), "DELETED", "{k}");
        assert_eq!(
            values(&mut c),
            vec![],
            "{k}: the read after the delete sees the delete (warm still had the value)"
        );
    }
}

#[test]
fn writes_reach_both_tiers_and_deletes_remove_from_both() {
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    let mut c = bifrost.client();

    assert_eq!(set(&mut c, "k", 3, 0, "ab"), "STORED");
    // The client waited for cold: cold has it now; warm's copy went at the same moment.
    assert_eq!(
        item_on(&mut dc, "k").map(|i| (i.flags, i.data)),
        Some((3, b"ab".to_vec()))
    );
    wait_value(&mut dw, "k", Some("ab"), "the set is in warm");
    assert_eq!(
        item_on(&mut dw, "k").map(|i| i.flags),
        Some(3),
        "flags in warm"
    );

    assert_eq!(c.store("append", "k", b"cd", 0, 0), "STORED");
    assert_eq!(value_on(&mut dc, "k").as_deref(), Some("abcd"));
    wait_value(&mut dw, "k", Some("abcd"), "the append is in warm");

    assert_eq!(c.delete("k"), "DELETED");
    assert_eq!(value_on(&mut dc, "k"), None, "deleted from cold");
    wait_value(&mut dw, "k", None, "the delete reached warm");

    // noreply: both tiers, and nothing answered (the version reply comes next).
    c.send(b"set nr 0 0 2 noreply\r\nnr\r\nversion\r\n");
    let line = c.read_line();
    assert!(line.starts_with("VERSION "), "noreply answered: {line:?}");
    wait_value(&mut dc, "nr", Some("nr"), "the noreply set is in cold");
    wait_value(&mut dw, "nr", Some("nr"), "the noreply set is in warm");
    c.send(b"delete nr noreply\r\nversion\r\n");
    let line = c.read_line();
    assert!(line.starts_with("VERSION "), "noreply answered: {line:?}");
    wait_value(&mut dc, "nr", None, "the noreply delete reached cold");
    wait_value(&mut dw, "nr", None, "the noreply delete reached warm");

    // The client gets cold's reply: a key only warm has is NOT_FOUND, and leaves warm too.
    assert_eq!(set(&mut dw, "warm_only", 0, 0, "w"), "STORED");
    assert_eq!(c.delete("warm_only"), "NOT_FOUND", "cold's reply");
    wait_value(&mut dw, "warm_only", None, "the delete reached warm");
}

#[test]
fn a_multi_get_over_two_pools_of_two_answers_in_the_asked_order_and_fills_warm() {
    let warm: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let cold: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let bifrost = tiered(
        &warm.iter().map(Memcached::addr).collect::<Vec<_>>(),
        &cold.iter().map(Memcached::addr).collect::<Vec<_>>(),
        "2s",
    );
    let mut dw: Vec<Client> = warm.iter().map(Memcached::client).collect();
    let mut dc: Vec<Client> = cold.iter().map(Memcached::client).collect();
    let mut c = bifrost.client();
    // Which server of `pool` holds `key`, waiting for a warm copy to land.
    let holder = |pool: &mut [Client], key: &str| -> usize {
        let mut at = None;
        wait_until(
            LANDED,
            &format!("{key} is on one server of the pool"),
            || {
                at = (0..pool.len()).find(|&i| pool[i].get(key).is_some());
                at.is_some()
            },
        );
        at.unwrap()
    };

    // Keys written through the proxy (so both tiers hold them on their owners), then removed
    // from one tier directly: w:* only in warm, c:* only in cold; n:* are nowhere.
    let (mut warm_used, mut cold_used) = ([false; 2], [false; 2]);
    let mut warm_home = std::collections::HashMap::new();
    let mut keys = Vec::new();
    for i in 0..10 {
        for kind in ["w", "c", "n"] {
            let k = format!("{kind}:{i}:{}", i * 7919);
            keys.push(k.clone());
            if kind == "n" {
                continue;
            }
            assert_eq!(
                set(&mut c, &k, 0, 0, &format!("{kind}-value-of-{k}")),
                "STORED"
            );
            let (w, h) = (holder(&mut dw, &k), holder(&mut dc, &k));
            warm_used[w] = true;
            cold_used[h] = true;
            warm_home.insert(k.clone(), w);
            let tier = if kind == "w" { &mut dc[h] } else { &mut dw[w] };
            assert_eq!(tier.delete(&k), "DELETED");
        }
    }
    assert!(
        warm_used == [true; 2] && cold_used == [true; 2],
        "premise: keys on both servers of each pool (warm {warm_used:?}, cold {cold_used:?})"
    );
    let mut rng = Rng::new(8);
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }

    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let got = values(&mut c);
    let want: Vec<(String, String)> = keys
        .iter()
        .filter(|k| !k.starts_with("n:"))
        .map(|k| (k.clone(), format!("{}-value-of-{k}", &k[..1])))
        .collect();
    assert_eq!(
        got, want,
        "every hit, from the tier that has it, in the asked order"
    );

    for k in keys.iter().filter(|k| k.starts_with("c:")) {
        let w = warm_home[k];
        let want = format!("c-value-of-{k}");
        wait_value(
            &mut dw[w],
            k,
            Some(&want),
            &format!("{k} written back to its warm server"),
        );
    }
    for k in keys.iter().filter(|k| k.starts_with("n:")) {
        assert!(
            dw.iter_mut().all(|d| d.get(k).is_none()),
            "{k}: a miss is not written anywhere"
        );
    }
}

#[test]
fn with_warm_killed_reads_are_served_and_writes_answered_by_cold() {
    let mut warm = Memcached::start();
    let cold = Memcached::start();
    // A long timeout: nothing below may wait for it.
    let bifrost = tiered(&[warm.addr()], &[cold.addr()], "5s");
    let mut dc = cold.client();
    let mut c = bifrost.client();
    assert_eq!(set(&mut c, "k", 0, 0, "v1"), "STORED");
    wait_value(&mut warm.client(), "k", Some("v1"), "the set is in warm");

    warm.kill();
    let started = Instant::now();
    assert_eq!(
        value_on(&mut c, "k").as_deref(),
        Some("v1"),
        "read from cold"
    );
    assert_eq!(set(&mut c, "k2", 0, 0, "v2"), "STORED", "cold's answer");
    assert_eq!(value_on(&mut dc, "k2").as_deref(), Some("v2"));
    c.send(b"get k2 nothere k\r\n");
    assert_eq!(
        values(&mut c),
        vec![
            ("k2".to_string(), "v2".to_string()),
            ("k".to_string(), "v1".to_string())
        ]
    );
    assert_eq!(
        meta(&mut c, "mg k2 v"),
        ("VA 2".to_string(), Some(b"v2".to_vec()))
    );
    assert_eq!(c.delete("k"), "DELETED", "cold's answer");
    assert_eq!(value_on(&mut dc, "k"), None);
    assert_eq!(value_on(&mut c, "k"), None);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "a dead warm tier never costs its 5 s timeout: {:?}",
        started.elapsed()
    );
}

#[test]
fn with_warm_never_reachable_reads_and_writes_use_cold_and_write_backs_fail_counted() {
    let cold = Memcached::start();
    let nothing = dead_addr();
    let bifrost = tiered(std::slice::from_ref(&nothing), &[cold.addr()], "5s");
    let mut dc = cold.client();
    assert_eq!(set(&mut dc, "k", 5, 0, "cold"), "STORED");
    let mut c = bifrost.client();
    let started = Instant::now();
    assert_eq!(
        item_on(&mut c, "k").map(|i| (i.flags, i.data)),
        Some((5, b"cold".to_vec()))
    );
    assert_eq!(set(&mut c, "k2", 0, 0, "x"), "STORED");
    assert_eq!(value_on(&mut dc, "k2").as_deref(), Some("x"));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "a refused warm connection is no wait: {:?}",
        started.elapsed()
    );
    let name = format!("write_on_miss.{ROUTE}");
    wait_until(
        LANDED,
        "the write-back to the dead warm server is counted failed",
        || effect(&mut c, &name, "failed") >= 1,
    );
    assert_eq!(effect(&mut c, &name, "done"), 0);
}

#[test]
fn mg_on_a_warm_miss_answers_exactly_the_flags_asked_and_is_written_back_with_ms_add() {
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    // m1 outlives the write_on_miss TTL, m2 does not: the write-back's TTL is the smaller.
    assert_eq!(set(&mut dc, "m1", 7, 1000, "hello"), "STORED");
    assert_eq!(set(&mut dc, "m2", 8, 100, "world"), "STORED");
    assert_eq!(set(&mut dc, "m3", 0, 1000, "xyz"), "STORED");
    assert_eq!(set(&mut dc, "m4", 0, 1000, "q"), "STORED");
    assert_eq!(set(&mut dc, "foobar", 9, 1000, "b64"), "STORED");

    let mut c = bifrost.client();
    assert_eq!(
        meta(&mut c, "mg m1 v"),
        ("VA 5".to_string(), Some(b"hello".to_vec())),
        "exactly VA <n>: the f and t the proxy asked cold for do not leak"
    );
    assert_eq!(
        meta(&mut c, "mg m2 s v"),
        ("VA 5 s5".to_string(), Some(b"world".to_vec()))
    );
    // Whatever the client asks, it gets what cold itself answers to the same request.
    for req in ["mg m3 s k Oxy", "mg Zm9vYmFy b k v"] {
        let direct = meta(&mut dc, req);
        assert_eq!(meta(&mut c, req), direct, "{req}: as cold answers it");
    }
    assert_eq!(
        meta(&mut c, "mg m3 s"),
        ("HD s3".to_string(), None),
        "no v asked: HD (m3 may be in warm by now; either way the same reply)"
    );
    // Quiet mode: a hit shows, a miss on both tiers shows nothing.
    c.send(b"mg m4 v q\r\nmg nowhere v q\r\nmn\r\n");
    assert_eq!(c.read_line(), "VA 1");
    assert_eq!(c.read_line(), "q");
    assert_eq!(c.read_line(), "MN", "a quiet miss shows nothing");

    for (key, value, flags) in [
        ("m1", "hello", 7),
        ("m2", "world", 8),
        ("m3", "xyz", 0),
        ("m4", "q", 0),
        ("foobar", "b64", 9),
    ] {
        wait_value(
            &mut dw,
            key,
            Some(value),
            &format!("{key} written back into warm"),
        );
        assert_eq!(
            item_on(&mut dw, key).map(|i| i.flags),
            Some(flags),
            "{key} flags"
        );
    }
    let t1 = ttl_of(&mut dw, "m1");
    assert!(t1 <= TTL && t1 > TTL - 5, "m1: min(1000, {TTL}): t = {t1}");
    let t2 = ttl_of(&mut dw, "m2");
    assert!(
        t2 <= 100 && t2 > 94,
        "m2: min(remaining ~100, {TTL}): t = {t2}"
    );
    assert_eq!(
        dw.get("Zm9vYmFy"),
        None,
        "the base64 key was written back decoded"
    );
}

#[test]
fn gets_and_cas_are_served_by_cold_and_a_cas_invalidates_warm() {
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    assert_eq!(set(&mut dc, "k", 0, 0, "cold"), "STORED");
    assert_eq!(set(&mut dw, "k", 0, 0, "warm"), "STORED");
    let (_, cold_cas) = dc.gets("k").expect("k on cold");

    let mut c = bifrost.client();
    let (value, cas) = c.gets("k").expect("gets k through the proxy");
    assert_eq!(
        value, b"cold",
        "gets is served by cold even when warm has the key"
    );
    assert_eq!(cas, cold_cas, "the cas unique is cold's");
    assert_eq!(
        meta(&mut c, "mg k c v"),
        meta(&mut dc, "mg k c v"),
        "mg with c is cold's"
    );

    c.send(format!("cas k 0 0 3 {cas}\r\nnew\r\n").as_bytes());
    assert_eq!(
        c.read_line(),
        "STORED",
        "a cas with cold's token succeeds on cold"
    );
    assert_eq!(value_on(&mut dc, "k").as_deref(), Some("new"));
    wait_value(&mut dw, "k", None, "the cas deleted k from warm");
    assert_eq!(
        value_on(&mut c, "k").as_deref(),
        Some("new"),
        "read through to cold"
    );

    // A stale token: cold's EXISTS; the delete goes to warm whatever cold answers.
    wait_value(&mut dw, "k", Some("new"), "the write-back refilled warm");
    c.send(format!("cas k 0 0 3 {cas}\r\nbad\r\n").as_bytes());
    assert_eq!(c.read_line(), "EXISTS", "cold's answer");
    assert_eq!(value_on(&mut dc, "k").as_deref(), Some("new"));
    wait_value(&mut dw, "k", None, "the failed cas deleted k from warm too");
}

#[test]
fn counters_are_cold_s_and_invalidate_warm() {
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    assert_eq!(set(&mut dc, "n", 0, 0, "5"), "STORED");
    assert_eq!(set(&mut dw, "n", 0, 0, "50"), "STORED");
    let mut c = bifrost.client();
    c.send(b"incr n 3\r\n");
    assert_eq!(c.read_line(), "8", "cold's counter");
    wait_value(&mut dw, "n", None, "the incr deleted n from warm");
    c.send(b"decr n 2\r\n");
    assert_eq!(c.read_line(), "6");
    assert_eq!(value_on(&mut dc, "n").as_deref(), Some("6"));
    assert_eq!(
        value_on(&mut c, "n").as_deref(),
        Some("6"),
        "read through to cold"
    );
}

#[test]
fn with_cold_dead_warm_hits_are_served_misses_are_misses_and_writes_fail() {
    let warm = Memcached::start();
    let nothing = dead_addr();
    let bifrost = tiered(&[warm.addr()], std::slice::from_ref(&nothing), "5s");
    assert_eq!(set(&mut warm.client(), "k", 0, 0, "w"), "STORED");
    let mut c = bifrost.client();
    let started = Instant::now();
    assert_eq!(value_on(&mut c, "k").as_deref(), Some("w"), "a warm hit");
    c.send(b"get nowhere k\r\n");
    assert_eq!(
        values(&mut c),
        vec![("k".to_string(), "w".to_string())],
        "a miss is a miss"
    );
    c.send(b"gets k\r\n");
    assert_eq!(
        c.read_line(),
        "END",
        "gets is cold's: a miss while cold is down"
    );
    let line = set(&mut c, "k2", 0, 0, "x");
    assert!(
        line.starts_with("SERVER_ERROR"),
        "a write needs cold: {line:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "a refused cold connection is no wait: {:?}",
        started.elapsed()
    );
}

#[test]
fn gat_touches_both_tiers_prefers_warm_s_hit_and_writes_nothing_back() {
    let (_tiers, bifrost, mut dw, mut dc) = usual_tiers();
    assert_eq!(set(&mut dw, "both", 0, 0, "w"), "STORED");
    assert_eq!(set(&mut dc, "both", 0, 0, "c"), "STORED");
    assert_eq!(set(&mut dc, "cold_only", 0, 0, "c2"), "STORED");
    assert_eq!(set(&mut dc, "later", 0, 0, "l"), "STORED");
    let mut c = bifrost.client();

    c.send(b"gat 500 both\r\n");
    assert_eq!(
        values(&mut c),
        vec![("both".to_string(), "w".to_string())],
        "warm's hit"
    );
    for (tier, d) in [("warm", &mut dw), ("cold", &mut dc)] {
        wait_until(LANDED, &format!("gat touched both on {tier}"), || {
            let t = ttl_of(d, "both");
            t <= 500 && t > 490
        });
    }
    c.send(b"gat 500 cold_only\r\n");
    assert_eq!(
        values(&mut c),
        vec![("cold_only".to_string(), "c2".to_string())],
        "cold's hit"
    );
    let (_, cold_cas) = dc.gets("both").expect("both on cold");
    c.send(b"gats 500 both\r\n");
    let items = c.read_values().expect("gats both");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0].data.as_slice(), items[0].cas),
        (&b"c"[..], Some(cold_cas)),
        "gats: cold's hit first, with cold's cas"
    );

    // No write-back for gat: the write-back of a later plain read is the only one queued (the
    // queue is in order, so once it is done, a gat write-back would have been counted).
    assert_eq!(value_on(&mut c, "later").as_deref(), Some("l"));
    let name = format!("write_on_miss.{ROUTE}");
    wait_until(LANDED, "the write-back of `later` is done", || {
        effect(&mut c, &name, "done") >= 1
    });
    assert_eq!(
        effect(&mut c, &name, "queued"),
        1,
        "only the plain read wrote back"
    );
    assert_eq!(
        value_on(&mut dw, "cold_only"),
        None,
        "gat wrote nothing back"
    );
}

/// Hits and misses count each asked key once, by its answer: a key warm misses and cold holds
/// is one hit (not a miss and a hit), a key neither holds one miss; one key and several alike.
#[test]
fn hits_and_misses_count_each_key_once_by_its_answer() {
    let (_servers, bifrost, mut dw, mut dc) = usual_tiers();
    assert_eq!(set(&mut dw, "in-warm", 0, 0, "w"), "STORED");
    assert_eq!(set(&mut dc, "in-cold", 0, 0, "c"), "STORED");
    let mut c = bifrost.client();
    let check = |c: &mut Client, request: &str, hits: u64, misses: u64| {
        let (h0, m0) = (c.stat("get_hits"), c.stat("get_misses"));
        c.send(request.as_bytes());
        c.read_values().expect("a well-formed reply");
        let (h1, m1) = (c.stat("get_hits"), c.stat("get_misses"));
        assert_eq!(
            (h1 - h0, m1 - m0),
            (hits, misses),
            "{request:?}: (hits, misses)"
        );
    };
    check(&mut c, "get in-warm\r\n", 1, 0);
    check(&mut c, "get in-cold\r\n", 1, 0);
    check(&mut c, "get nowhere\r\n", 0, 1);
    // in-cold is in warm now (written back): ask a cold-only key again for the multi-get.
    assert_eq!(set(&mut dc, "in-cold-2", 0, 0, "c"), "STORED");
    check(&mut c, "get in-warm in-cold-2 nowhere\r\n", 2, 1);
}

/// A conditional meta write with a base64 key (`ms ... C<cas> b`) drops the warm copy of that
/// very key: the delete sent to warm carries the key as it came on the wire, with `b`.
#[test]
fn a_conditional_meta_write_with_a_base64_key_drops_the_warm_copy() {
    let (_servers, bifrost, mut dw, mut dc) = usual_tiers();
    // "warm:k1" in base64; the decoded key is no valid base64, so a delete that sent it with
    // `b` would be refused and leave the warm copy.
    let b64 = "d2FybTprMQ==";
    assert_eq!(set(&mut dw, "warm:k1", 0, 0, "old"), "STORED");
    assert_eq!(set(&mut dc, "warm:k1", 0, 0, "old"), "STORED");
    let mut c = bifrost.client();
    let (line, _) = meta(&mut c, &format!("mg {b64} b c v"));
    let cas = line
        .split(' ')
        .find_map(|t| t.strip_prefix('c'))
        .unwrap_or_else(|| panic!("no cas token in {line:?}"))
        .to_string();
    c.send(format!("ms {b64} 3 C{cas} b\r\nnew\r\n").as_bytes());
    assert_eq!(c.read_line(), "HD", "the cas is cold's, so cold stores it");
    assert_eq!(value_on(&mut dc, "warm:k1").as_deref(), Some("new"));
    wait_value(&mut dw, "warm:k1", None, "the warm copy dropped");
}

/// A read pipelined before a write of the same key is answered as memcached would on one
/// connection: without that later write. The read misses warm (slow, behind a relay) and must
/// go to cold; the write, sent at once, would reach cold first unless it waits for the read to
/// leave warm. So: `get` answers END, then the `set` is STORED, and both tiers hold the value.
#[test]
fn a_read_pipelined_before_a_write_of_its_key_never_sees_that_write() {
    let (warm, cold) = (Memcached::start(), Memcached::start());
    let relay = Relay::start(&warm.addr(), Duration::from_millis(200));
    let bifrost = tiered(&[relay.addr()], &[cold.addr()], "2s");
    let mut c = bifrost.client();
    for round in 0..3 {
        let key = format!("ordered:{round}");
        c.send(format!("get {key}\r\nset {key} 0 0 2\r\nv{round}\r\nget {key}\r\n").as_bytes());
        assert_eq!(
            values(&mut c),
            vec![],
            "round {round}: the get before the set"
        );
        assert_eq!(c.read_line(), "STORED", "round {round}");
        assert_eq!(
            values(&mut c),
            vec![(key.clone(), format!("v{round}"))],
            "round {round}: the get after the set"
        );
        assert_eq!(
            value_on(&mut cold.client(), &key),
            Some(format!("v{round}"))
        );
    }
}

/// The same with a multi-get split over two warm servers (each slow, behind a relay) and two
/// cold ones: a write pipelined after it waits until the split is answered.
#[test]
fn a_split_multi_get_pipelined_before_writes_of_its_keys_never_sees_them() {
    let (w1, w2, c1, c2) = (
        Memcached::start(),
        Memcached::start(),
        Memcached::start(),
        Memcached::start(),
    );
    let slow = Duration::from_millis(150);
    let (r1, r2) = (
        Relay::start(&w1.addr(), slow),
        Relay::start(&w2.addr(), slow),
    );
    let bifrost = tiered(&[r1.addr(), r2.addr()], &[c1.addr(), c2.addr()], "2s");
    let keys: Vec<String> = (0..12).map(|i| format!("split-ordered:{i}")).collect();
    let mut request = format!("get {}\r\n", keys.join(" "));
    for key in &keys {
        request.push_str(&format!("set {key} 0 0 3\r\nnew\r\n"));
    }
    let mut c = bifrost.client();
    c.send(request.as_bytes());
    assert_eq!(
        values(&mut c),
        vec![],
        "the get before the sets sees none of them"
    );
    for key in &keys {
        assert_eq!(c.read_line(), "STORED", "{key}");
    }
    let got = c.get_multi(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(got.len(), keys.len(), "every set landed: {got:?}");
}
