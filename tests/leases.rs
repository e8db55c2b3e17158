//! End-to-end tests of `warm_first` routes with `leases`: warm is read under memcached's leases
//! (`mg <key> v f c N<lease_ttl> [R<secs>]`), so one reader per key fetches from cold and writes
//! the value back with `ms ... C<cas>` (refused if a write or a delete reached warm meanwhile),
//! the readers behind it wait for that write-back, a placeholder is never served, hot keys are
//! refreshed before they expire, and writes go to cold, then drop the key from warm.
//!
//! Real memcached processes for both tiers, read directly to check what each tier holds; a
//! relay in front of cold makes it slow where a read must stay in flight, and records what
//! reached cold so the cold reads of a key can be counted.
//!
//! On the design before leases (the `leases:` line taken out of [`Tiers::start`]) the delete
//! races, the herd, the failed lease holder, both placeholder tests, the reader behind a lease
//! holder, the early refresh and the order of writes fail. The set races, the pipelined write
//! and the cold miss pass there too: a set reached warm at once there, where an `add`
//! write-back could not overwrite it, and a miss made no placeholder.

mod common;

use common::tiers::{effect, meta, pools_yaml, start_proxy, value_on, values, wait_value, LANDED};
use common::{wait_until, Bifrost, Client, Memcached, Relay};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The route's name: stats name its write-back side effect after it.
const ROUTE: &str = "tiered";
/// The name of the route's write-back side effect in `stats`.
const WRITE_BACK: &str = "write_on_miss.tiered";

/// How a leased warm_first route is set up.
struct Tiers<'a> {
    warm: String,
    cold: String,
    warm_timeout: &'a str,
    cold_timeout: &'a str,
    /// `write_on_miss.ttl`, in seconds.
    ttl: u32,
    /// The `leases:` value (a YAML flow map).
    leases: &'a str,
    workers: usize,
}

impl<'a> Tiers<'a> {
    /// Warm and cold with 2 s timeouts, `write_on_miss: { ttl: 300 }`, `leases: {}` (the
    /// defaults: lease_ttl 3s, wait 1s, no early refresh), one worker.
    fn new(warm: String, cold: String) -> Tiers<'a> {
        Tiers {
            warm,
            cold,
            warm_timeout: "2s",
            cold_timeout: "2s",
            ttl: 300,
            leases: "{}",
            workers: 1,
        }
    }

    fn leases(mut self, leases: &'a str) -> Self {
        self.leases = leases;
        self
    }

    fn cold_timeout(mut self, timeout: &'a str) -> Self {
        self.cold_timeout = timeout;
        self
    }

    fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Starts a bifrost with this route (pools `l1`, warm, and `l2`, cold, one server each).
    fn start(&self) -> Bifrost {
        let backends = pools_yaml(&[
            ("l1", self.warm.clone(), self.warm_timeout),
            ("l2", self.cold.clone(), self.cold_timeout),
        ]);
        // Without the `leases:` line, the route is the design before leases: the tests marked
        // so in their comments fail on it.
        let route = format!(
            "  - name: {ROUTE}\n    match: \"*\"\n    strategy: warm_first\n    warm: l1\n    \
             cold: l2\n    write_on_miss: {{ ttl: {} }}\n    leases: {}\n",
            self.ttl, self.leases
        );
        start_proxy(self.workers, &backends, &route, "")
    }
}

/// How many reads of `key` reached the server behind `relay`: request lines `get <key>` (one
/// key) or `mg <key> ...`.
fn reads_of(relay: &Relay, key: &str) -> usize {
    let forwarded = relay.forwarded();
    String::from_utf8_lossy(&forwarded)
        .split("\r\n")
        .filter(|line| {
            let mut words = line.split(' ');
            let command = words.next();
            matches!(command, Some("get" | "mg"))
                && words.next() == Some(key)
                && (command == Some("mg") || words.next().is_none())
        })
        .count()
}

/// How many request lines that reached the server behind `relay` start with `prefix`.
fn lines_starting(relay: &Relay, prefix: &str) -> usize {
    let forwarded = relay.forwarded();
    String::from_utf8_lossy(&forwarded)
        .split("\r\n")
        .filter(|line| line.starts_with(prefix))
        .count()
}

/// The flags of a meta reply line (`VA 0 c5 Z` -> `["c5", "Z"]`).
fn meta_flags(line: &str) -> Vec<&str> {
    line.split(' ').skip(2).collect()
}

/// Write-backs of the route attempted so far (answered either way, or failed).
fn write_backs_attempted(admin: &mut Client) -> u64 {
    effect(admin, WRITE_BACK, "done") + effect(admin, WRITE_BACK, "failed")
}

/// What a race of a read against a write leaves: the proxy A read through, and the servers with
/// direct clients.
struct Raced {
    bifrost: Bifrost,
    dw: Client,
    dc: Client,
    _servers: (Memcached, Memcached, Relay, Option<Bifrost>),
}

/// Where client B's write goes in [`race_a_read_against`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// Through the proxy A reads through: B's write shares A's connection to cold, so it is
    /// answered there after A's read, and its warm step comes after A's write-back was queued.
    SameProxy,
    /// Through a second proxy process over the same tiers, whose cold connection is not slow:
    /// B's write is in both tiers (its warm step dropped or replaced A's placeholder) before A's
    /// cold reply arrives, so A's write-back comes last and must be refused.
    AnotherProxy,
}

/// Cold (behind a relay that holds its replies 500 ms) holds k = old. Client A reads k: warm
/// misses, A holds the lease (its placeholder is in warm) and its cold read is in flight. Then
/// client B sends `write` of k, which reaches cold after A's read did, and is answered
/// `expect_reply`. A is answered `old` (cold read it before the write). Returns once A's
/// write-back of `old` was attempted and B's write is in both tiers, with the relay's delay
/// back to zero.
fn race_a_read_against(write: &[u8], expect_reply: &str, writer: Writer) -> Raced {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_millis(500));
    let tiers = Tiers::new(warm.addr(), relay.addr()).leases("{ lease_ttl: 3s, wait: 1s }");
    let bifrost = tiers.start();
    let other = (writer == Writer::AnotherProxy).then(|| tiers.start());
    let (mut dw, mut dc) = (warm.client(), cold.client());
    assert_eq!(dc.set("k", b"old", 0, 0), "STORED");

    let mut a = bifrost.client();
    let mut b = other.as_ref().unwrap_or(&bifrost).client();
    let mut admin = bifrost.client();
    a.send(b"get k\r\n");
    wait_until(LANDED, "A's read of k reached cold", || {
        reads_of(&relay, "k") >= 1
    });
    let verb = String::from_utf8_lossy(write)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    match writer {
        Writer::SameProxy => {
            b.send(write);
            wait_until(LANDED, "B's write reached cold", || {
                lines_starting(&relay, &format!("{verb} k")) >= 1
            });
            assert_eq!(
                relay.bytes_to_client(),
                0,
                "premise: cold's reply to A was still held when B's write reached cold \
                 (the machine stalled for half a second?)"
            );
        }
        Writer::AnotherProxy => {
            // Cold's reply to A is held (its delay was set when it arrived); B's is not.
            wait_until(LANDED, "cold answered A (the relay holds it)", || {
                relay.bytes_from_server() > 0
            });
            relay.set_delay(Duration::ZERO);
            b.send(write);
            assert_eq!(b.read_line(), expect_reply, "B gets cold's reply");
            assert!(
                relay.bytes_to_client() < relay.bytes_from_server(),
                "premise: cold's reply to A was still held when B was answered \
                 (the machine stalled for half a second?)"
            );
            // B was answered after warm's step: the key is gone from warm (A's placeholder
            // with it), whatever B wrote.
            let (line, value) = meta(&mut dw, "mg k v");
            assert_eq!(line, "EN", "warm when B is answered: {value:?}");
        }
    }
    assert_eq!(
        values(&mut a),
        vec![("k".to_string(), "old".to_string())],
        "A read cold before B's write reached it"
    );
    if writer == Writer::SameProxy {
        assert_eq!(b.read_line(), expect_reply, "B gets cold's reply");
    }
    wait_until(LANDED, "A's write-back was attempted", || {
        write_backs_attempted(&mut admin) >= 1
    });
    relay.set_delay(Duration::ZERO);
    Raced {
        bifrost,
        dw,
        dc,
        _servers: (warm, cold, relay, other),
    }
}

/// [`race_a_read_against`] with a delete: neither warm nor a read through the proxy has `old`.
fn a_delete_racing_a_lease_holder(writer: Writer) {
    let Raced {
        bifrost,
        mut dw,
        mut dc,
        _servers,
    } = race_a_read_against(b"delete k\r\n", "DELETED", writer);
    let (line, value) = meta(&mut dw, "mg k v");
    assert!(
        line == "EN" || value.as_deref() == Some(&b""[..]),
        "warm must not hold the value the delete removed: {line:?} {value:?}"
    );
    assert_eq!(value_on(&mut dc, "k"), None, "cold applied the delete");
    let mut c = bifrost.client();
    for _ in 0..3 {
        c.send(b"get k\r\n");
        let reply = c.read_reply_retrieval();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            "END\r\n",
            "a read after the delete is a miss"
        );
    }
}

/// [`race_a_read_against`] with a set: warm never holds A's `old` (B's set dropped the key
/// there, and A's write-back is refused), and reads through the proxy have `new` (the first
/// refills warm from cold).
fn a_set_racing_a_lease_holder(writer: Writer) {
    let Raced {
        bifrost,
        mut dw,
        mut dc,
        _servers,
    } = race_a_read_against(b"set k 0 0 3\r\nnew\r\n", "STORED", writer);
    let (line, value) = meta(&mut dw, "mg k v");
    assert!(
        line == "EN" || value.as_deref() == Some(&b""[..]),
        "warm must not hold A's older write-back: {line:?} {value:?}"
    );
    assert_eq!(value_on(&mut dc, "k").as_deref(), Some("new"));
    let mut c = bifrost.client();
    for _ in 0..3 {
        assert_eq!(value_on(&mut c, "k").as_deref(), Some("new"));
    }
    wait_value(&mut dw, "k", Some("new"), "a read refilled warm from cold");
}

#[test]
fn a_delete_racing_a_lease_holder_s_cold_read_never_leaves_the_old_value_in_warm() {
    a_delete_racing_a_lease_holder(Writer::SameProxy);
}

#[test]
fn a_delete_through_another_proxy_refuses_the_lease_holder_s_later_write_back() {
    a_delete_racing_a_lease_holder(Writer::AnotherProxy);
}

#[test]
fn a_set_racing_a_lease_holder_s_cold_read_leaves_the_newer_value_in_warm() {
    a_set_racing_a_lease_holder(Writer::SameProxy);
}

#[test]
fn a_set_through_another_proxy_refuses_the_lease_holder_s_later_write_back() {
    a_set_racing_a_lease_holder(Writer::AnotherProxy);
}

#[test]
fn a_herd_of_readers_on_two_proxies_makes_one_cold_read() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_millis(400));
    let tiers = Tiers::new(warm.addr(), relay.addr())
        .leases("{ lease_ttl: 5s, wait: 3s }")
        .workers(2);
    let proxies = [tiers.start(), tiers.start()];
    assert_eq!(
        cold.client().set("hot", b"hot-value", 0, 0),
        "STORED",
        "cold holds hot"
    );

    const READERS: usize = 40;
    let barrier = Arc::new(Barrier::new(READERS));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let mut c = proxies[i % 2].client();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                c.get("hot")
            })
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.join().expect("a reader panicked");
        assert_eq!(
            got.as_deref(),
            Some(&b"hot-value"[..]),
            "reader {i} (proxy {})",
            i % 2
        );
    }
    assert_eq!(
        reads_of(&relay, "hot"),
        1,
        "one cold read for the whole herd; what reached cold: {}",
        String::from_utf8_lossy(&relay.forwarded())
    );
    // The counters say the same: one lease holder over both proxies, the others waited (some
    // readers may have come after the write-back: plain hits), none gave up.
    let stat = |name: &str| -> u64 { proxies.iter().map(|p| p.client().stat(name)).sum() };
    assert_eq!(stat("lease_wins"), 1, "one lease holder");
    assert!(stat("lease_waits") >= 1, "the others waited");
    assert_eq!(stat("lease_wait_timeouts"), 0, "no reader gave up");
    assert_eq!(stat("lease_refreshes"), 0, "no early refresh configured");
}

#[test]
fn a_lease_holder_s_failed_cold_read_leaves_the_placeholder_until_it_expires() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    // Cold's replies come after its 300 ms timeout: the lease holder's cold read fails.
    let relay = Relay::start(&cold.addr(), Duration::from_secs(1));
    // lease_ttl 2s: memcached counts whole seconds, so the placeholder lives 1 to 2 s.
    let bifrost = Tiers::new(warm.addr(), relay.addr())
        .cold_timeout("300ms")
        .leases("{ lease_ttl: 2s, wait: 1s }")
        .start();
    let mut dw = warm.client();
    assert_eq!(cold.client().set("k", b"value", 0, 0), "STORED");

    let mut c = bifrost.client();
    c.send(b"get k\r\n");
    let reply = c.read_reply_retrieval();
    assert!(
        reply == b"END\r\n" || reply.starts_with(b"SERVER_ERROR"),
        "a failed cold read is a miss or an error, never a (placeholder) value: {}",
        String::from_utf8_lossy(&reply)
    );
    // Nothing was queued for warm (a drop of the placeholder would be a queued side effect,
    // counted before the reply went out), and the placeholder is there.
    assert_eq!(
        effect(&mut c, WRITE_BACK, "queued"),
        0,
        "the failed lease holder leaves its placeholder to expire: nothing for warm"
    );
    let (line, _) = meta(&mut dw, "mg k v c");
    assert!(
        line.starts_with("VA 0 ") && meta_flags(&line).contains(&"Z"),
        "warm still holds the lease holder's placeholder (its lease handed out): {line:?}"
    );

    // Cold is fast again; the placeholder expires after lease_ttl.
    relay.set_delay(Duration::ZERO);
    wait_until(Duration::from_secs(5), "the placeholder expired", || {
        meta(&mut dw, "mg k v").0 == "EN"
    });
    assert_eq!(
        value_on(&mut c, "k").as_deref(),
        Some("value"),
        "the next reader wins the lease and reads cold"
    );
    wait_value(&mut dw, "k", Some("value"), "its write-back is in warm");
}

/// A hot key written back for 4 s with `early_refresh: 0.5` (memcached's `R2`): once under 2 s
/// remain, one reader is told to refresh it; it is served the value at once and the proxy
/// reads cold in the background and writes the value back with a new TTL. So under constant
/// load warm always holds the key (it never expires, so no reader ever waits for cold), cold is
/// read about once per 2 s, and a change in cold is served within a refresh.
#[test]
fn a_hot_key_is_refreshed_early_by_one_reader_and_never_leaves_warm() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    // A slow cold: a key that expired from warm would be missing there for 200 ms at least.
    let relay = Relay::start(&cold.addr(), Duration::from_millis(200));
    let bifrost = Tiers::new(warm.addr(), relay.addr())
        .ttl(4)
        .leases("{ lease_ttl: 3s, wait: 1s, early_refresh: 0.5 }")
        .start();
    let mut dc = cold.client();
    let mut dw = warm.client();
    assert_eq!(dc.set("k", b"v1", 0, 0), "STORED");

    const RUN: Duration = Duration::from_secs(8);
    const CHANGE_AT: Duration = Duration::from_secs(2);
    let start = Instant::now();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut c = bifrost.client();
            thread::spawn(move || {
                let mut seen = Vec::new();
                while start.elapsed() < RUN {
                    seen.push((start.elapsed(), c.get("k")));
                    thread::sleep(Duration::from_millis(5));
                }
                seen
            })
        })
        .collect();
    // Meanwhile: what warm holds, read directly (no lease flags) every few milliseconds; and
    // the value changed in cold.
    let mut warm_held = None;
    let mut warm_lost = Vec::new();
    let mut changed = None;
    while start.elapsed() < RUN {
        if changed.is_none() && start.elapsed() >= CHANGE_AT {
            assert_eq!(dc.set("k", b"v2", 0, 0), "STORED");
            changed = Some(start.elapsed());
        }
        let (line, value) = meta(&mut dw, "mg k v");
        let at = start.elapsed();
        let held = line.starts_with("VA 2") && value.as_deref().is_some_and(|v| v.len() == 2);
        match (held, warm_held) {
            (true, None) => warm_held = Some(at),
            (false, Some(_)) => warm_lost.push((at, line)),
            _ => {}
        }
        thread::sleep(Duration::from_millis(10));
    }
    let changed = changed.expect("the change was made");

    let mut first_new = None;
    for (i, reader) in readers.into_iter().enumerate() {
        let seen = reader.join().expect("a reader panicked");
        assert!(
            seen.len() > 100,
            "reader {i} read only {} times",
            seen.len()
        );
        let mut saw_new = None;
        for (at, got) in &seen {
            match got.as_deref() {
                Some(b"v1") => assert!(
                    saw_new.is_none(),
                    "reader {i}: v1 at {at:?} after v2 at {saw_new:?}"
                ),
                Some(b"v2") => {
                    saw_new.get_or_insert(*at);
                }
                other => panic!(
                    "reader {i} at {at:?}: {:?} (never a miss, never an empty value)",
                    other.map(String::from_utf8_lossy)
                ),
            }
        }
        let saw_new = saw_new
            .unwrap_or_else(|| panic!("reader {i} never saw the value changed at {changed:?}"));
        first_new = Some(first_new.map_or(saw_new, |f: Duration| f.min(saw_new)));
    }
    assert!(
        warm_held.is_some_and(|at| at < Duration::from_secs(2)),
        "the first read's write-back reached warm early on: {warm_held:?}"
    );
    assert!(
        warm_lost.is_empty(),
        "once written back, the hot key never left warm (refreshed before it expired), but \
         warm answered (from {warm_held:?} on): {warm_lost:?}"
    );
    let first_new = first_new.expect("three readers");
    assert!(
        first_new < changed + Duration::from_millis(4500),
        "the change at {changed:?} was first served at {first_new:?}: later than a refresh \
         within the 4 s TTL"
    );
    let cold_reads = reads_of(&relay, "k");
    assert!(
        (2..=6).contains(&cold_reads),
        "{cold_reads} cold reads in {RUN:?} of a key written back for 4 s and refreshed under \
         2 s: expected the first read and about one refresh per 2 s; what reached cold: {}",
        String::from_utf8_lossy(&relay.forwarded())
    );
    // Every cold read but the first miss's was an early refresh.
    let refreshes = bifrost.client().stat("lease_refreshes");
    assert!(
        refreshes >= 1 && refreshes as usize + 1 >= cold_reads,
        "{refreshes} early refreshes counted for {cold_reads} cold reads"
    );
}

#[test]
fn a_placeholder_in_warm_is_never_served() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let bifrost = Tiers::new(warm.addr(), cold.addr())
        .leases("{ lease_ttl: 3s, wait: 200ms }")
        .start();
    let mut dw = warm.client();
    assert_eq!(cold.client().set("k1", b"value", 0, 0), "STORED");
    // Placeholders of someone who won the lease and never writes back.
    for key in ["k1", "k2"] {
        let (line, value) = meta(&mut dw, &format!("mg {key} v c N30"));
        assert!(
            line.starts_with("VA 0 ") && meta_flags(&line).contains(&"W"),
            "premise: a placeholder of {key} made in warm: {line:?}"
        );
        assert_eq!(value.as_deref(), Some(&b""[..]));
    }

    let mut c = bifrost.client();
    let started = Instant::now();
    c.send(b"get k1\r\n");
    let reply = c.read_reply_retrieval();
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "VALUE k1 0 5\r\nvalue\r\nEND\r\n",
        "cold's value after the wait, never the placeholder"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the reader waited for the lease holder first: answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        meta(&mut c, "mg k1 v"),
        ("VA 5".to_string(), Some(b"value".to_vec()))
    );
    c.send(b"get k2\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.read_reply_retrieval()),
        "END\r\n",
        "cold does not hold k2: a miss, never the placeholder"
    );
    assert_eq!(meta(&mut c, "mg k2 v"), ("EN".to_string(), None));
    c.send(b"mg k2 v q\r\nmn\r\n");
    assert_eq!(c.read_line(), "MN", "a quiet miss shows nothing");

    // Readers that held no lease wrote nothing back: the placeholders are as they were.
    for key in ["k1", "k2"] {
        let (line, _) = meta(&mut dw, &format!("mg {key} v"));
        assert!(
            line.starts_with("VA 0 ") && meta_flags(&line).contains(&"Z"),
            "{key}: warm still holds the placeholder: {line:?}"
        );
    }
    assert_eq!(effect(&mut c, WRITE_BACK, "queued"), 0, "no write-back");
    // Five reads waited (get k1, mg k1, get k2, mg k2, the quiet mg k2), each gave up.
    assert_eq!(c.stat("lease_waits"), 5);
    assert_eq!(c.stat("lease_wait_timeouts"), 5);
    assert_eq!(c.stat("lease_wins"), 0);
}

#[test]
fn a_reader_behind_the_lease_holder_is_served_its_write_back() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    // A relay with no delay in front of warm only records what reached warm.
    let warm_relay = Relay::start(&warm.addr(), Duration::ZERO);
    let cold_relay = Relay::start(&cold.addr(), Duration::from_millis(300));
    let bifrost = Tiers::new(warm_relay.addr(), cold_relay.addr())
        .leases("{ lease_ttl: 5s, wait: 3s }")
        .start();
    assert_eq!(cold.client().set("k", b"value", 0, 0), "STORED");

    let mut a = bifrost.client();
    let mut b = bifrost.client();
    a.send(b"get k\r\n");
    wait_until(LANDED, "A's read of k reached cold", || {
        reads_of(&cold_relay, "k") >= 1
    });
    b.send(b"get k\r\n");
    wait_until(LANDED, "B's lease read of k reached warm", || {
        reads_of(&warm_relay, "k") >= 2
    });
    assert_eq!(
        cold_relay.bytes_to_client(),
        0,
        "premise: B read warm while A's cold read was in flight (a stall of 300 ms?)"
    );
    assert_eq!(values(&mut a), vec![("k".to_string(), "value".to_string())]);
    assert_eq!(
        values(&mut b),
        vec![("k".to_string(), "value".to_string())],
        "B waited for A's write-back"
    );
    assert_eq!(
        reads_of(&cold_relay, "k"),
        1,
        "only the lease holder read cold; what reached cold: {}",
        String::from_utf8_lossy(&cold_relay.forwarded())
    );
    assert!(
        reads_of(&warm_relay, "k") >= 3,
        "B read warm again after its back-off"
    );
    assert_eq!(value_on(&mut warm.client(), "k").as_deref(), Some("value"));
}

#[test]
fn a_client_reads_its_own_pipelined_write() {
    // Cold is slow, so a read that did not wait for the write's warm step would reach warm,
    // which still holds the old value, long before the write does.
    let warm = Memcached::start();
    let cold = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_millis(200));
    let bifrost = Tiers::new(warm.addr(), relay.addr()).start();
    let (mut dw, mut dc) = (warm.client(), cold.client());
    let mut c = bifrost.client();
    for round in 0..3 {
        let k = format!("own:{round}");
        for d in [&mut dw, &mut dc] {
            assert_eq!(d.set(&k, b"old", 0, 0), "STORED");
        }
        c.send(format!("set {k} 0 0 3\r\nnew\r\nget {k}\r\nmg {k} v\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED", "{k}");
        assert_eq!(
            values(&mut c),
            vec![(k.clone(), "new".to_string())],
            "{k}: the get after the set sees the set"
        );
        assert_eq!(c.read_line(), "VA 3", "{k}: the mg after the set");
        assert_eq!(c.read_line(), "new", "{k}: the mg after the set");
        c.send(format!("delete {k}\r\nget {k}\r\n").as_bytes());
        assert_eq!(c.read_line(), "DELETED", "{k}");
        assert_eq!(
            values(&mut c),
            vec![],
            "{k}: the read after the delete sees the delete (warm had the value)"
        );
    }
}

#[test]
fn a_cold_miss_drops_the_lease_holder_s_placeholder() {
    let (warm, cold) = (Memcached::start(), Memcached::start());
    // A placeholder that would live 30 s: only its drop lets it go within the test.
    let bifrost = Tiers::new(warm.addr(), cold.addr())
        .leases("{ lease_ttl: 30s }")
        .start();
    let mut dw = warm.client();
    let mut c = bifrost.client();
    assert_eq!(value_on(&mut c, "nowhere"), None);
    wait_until(LANDED, "the placeholder of nowhere is dropped", || {
        meta(&mut dw, "mg nowhere v").0 == "EN"
    });
    // The next reader wins the lease at once and reads cold: what it wrote there meanwhile.
    assert_eq!(cold.client().set("nowhere", b"now", 0, 0), "STORED");
    let started = Instant::now();
    assert_eq!(value_on(&mut c, "nowhere").as_deref(), Some("now"));
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "no wait for a lease (the default wait is 1 s): {:?}",
        started.elapsed()
    );
    wait_value(&mut dw, "nowhere", Some("now"), "written back into warm");
}

/// A write goes to cold first, and only once cold has answered is the key dropped from warm (so
/// a lease holder's placeholder made before it is dropped by it); the client is answered after
/// warm. Every write drops warm's copy (counters, append, a write cold failed) and the next
/// read refills it from cold.
#[test]
fn writes_go_to_cold_then_warm_and_are_answered_after_both() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_millis(300));
    let bifrost = Tiers::new(warm.addr(), relay.addr())
        .cold_timeout("1s")
        .start();
    let (mut dw, mut dc) = (warm.client(), cold.client());
    for (key, value) in [("k", "old"), ("n", "5"), ("a", "x"), ("f", "old")] {
        for d in [&mut dw, &mut dc] {
            assert_eq!(d.set(key, value.as_bytes(), 0, 0), "STORED");
        }
    }
    let mut c = bifrost.client();

    c.send(b"set k 0 0 3\r\nnew\r\n");
    wait_until(LANDED, "the set reached cold", || {
        lines_starting(&relay, "set k ") >= 1
    });
    assert_eq!(
        value_on(&mut dw, "k").as_deref(),
        Some("old"),
        "warm is written only after cold answered"
    );
    assert_eq!(
        relay.bytes_to_client(),
        0,
        "premise: cold's answer was still held when warm was read (a stall of 300 ms?)"
    );
    assert_eq!(c.read_line(), "STORED");
    assert_eq!(
        value_on(&mut dw, "k"),
        None,
        "the client is answered after the key left warm"
    );
    assert_eq!(value_on(&mut dc, "k").as_deref(), Some("new"));
    assert_eq!(
        value_on(&mut c, "k").as_deref(),
        Some("new"),
        "read from cold"
    );
    wait_value(&mut dw, "k", Some("new"), "the read refilled warm");

    c.send(b"incr n 3\r\n");
    assert_eq!(c.read_line(), "8", "cold's counter");
    assert_eq!(value_on(&mut dw, "n"), None, "the incr dropped warm's copy");
    assert_eq!(c.store("append", "a", b"y", 0, 0), "STORED");
    assert_eq!(value_on(&mut dc, "a").as_deref(), Some("xy"));
    assert_eq!(
        value_on(&mut dw, "a"),
        None,
        "the append dropped warm's copy"
    );

    // Cold's answers now come after its 1 s timeout: the write fails, warm's copy is dropped.
    relay.set_delay(Duration::from_secs(3));
    let line = c.set("f", b"new", 0, 0);
    assert!(line.starts_with("SERVER_ERROR"), "cold failed: {line:?}");
    assert_eq!(
        value_on(&mut dw, "f"),
        None,
        "a write cold failed dropped warm's copy"
    );
}

/// The reads that do not go through a lease (`gets`, `mg` with `c`, `gat`, a multi-key `get`)
/// never return a placeholder warm holds either: each is answered with cold's value.
#[test]
fn reads_without_a_lease_never_return_a_placeholder() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let bifrost = Tiers::new(warm.addr(), cold.addr())
        .leases("{ lease_ttl: 3s, wait: 200ms }")
        .start();
    let (mut dw, mut dc) = (warm.client(), cold.client());
    for key in ["k", "j"] {
        assert_eq!(
            dc.set(key, format!("{key}-value").as_bytes(), 3, 0),
            "STORED"
        );
        let (line, _) = meta(&mut dw, &format!("mg {key} v c N30"));
        assert!(
            meta_flags(&line).contains(&"W"),
            "premise: a placeholder of {key} in warm: {line:?}"
        );
    }
    let (_, cold_cas) = dc.gets("k").expect("k on cold");

    let mut c = bifrost.client();
    assert_eq!(
        c.gets("k"),
        Some((b"k-value".to_vec(), cold_cas)),
        "gets: cold's"
    );
    let (line, value) = meta(&mut c, "mg k v c f");
    assert_eq!(
        (line, value),
        (format!("VA 7 c{cold_cas} f3"), Some(b"k-value".to_vec())),
        "mg with c: cold's"
    );
    c.send(b"gat 100 k\r\n");
    assert_eq!(
        values(&mut c),
        vec![("k".to_string(), "k-value".to_string())]
    );
    // The touch dropped k's placeholder in warm instead of stretching its life to 100 s.
    assert_eq!(
        meta(&mut dw, "mg k v").0,
        "EN",
        "gat dropped warm's copy of k"
    );
    assert_eq!(
        c.stat("get_hits"),
        3,
        "hits of gets, mg c and the gat, each counted"
    );
    c.send(b"get k nowhere j\r\n");
    assert_eq!(
        values(&mut c),
        vec![
            ("k".to_string(), "k-value".to_string()),
            ("j".to_string(), "j-value".to_string())
        ],
        "a multi-key get"
    );
}

/// A multi-key get mixing keys of a leased route with keys of another route (on another
/// backend) and keys no route takes, over more than one window: every key answered in the asked
/// order with one `END`, the leased keys read through warm under leases (written back, one
/// cold read for a key asked twice), the others from their own backend.
#[test]
fn a_mixed_multi_get_answers_every_key_in_order_over_several_windows() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let other = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_millis(50));
    let (w, c, o) = (warm.addr(), relay.addr(), other.addr());
    let bifrost = Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\", multiget_window: 2}}]\n\
                 backends:\n\
                 \x20 l1: {{servers: [\"{w}\"], timeout: 2s}}\n\
                 \x20 l2: {{servers: [\"{c}\"], timeout: 2s}}\n\
                 \x20 other: {{servers: [\"{o}\"], timeout: 2s}}\n\
                 routes:\n\
                 \x20 - {{name: {ROUTE}, match: 'l:*', strategy: warm_first, warm: l1, cold: l2, \
                 write_on_miss: {{ttl: 300}}, leases: {{}}}}\n\
                 \x20 - {{name: plain, match: 'o:*', strategy: consistent_hash, backend: other}}\n"
            )
        },
        &[],
    );
    let mut dc = cold.client();
    for (key, value) in [("l:1", "one"), ("l:3", "three")] {
        assert_eq!(dc.set(key, value.as_bytes(), 7, 0), "STORED");
    }
    assert_eq!(other.client().set("o:1", b"other", 3, 0), "STORED");
    let mut client = bifrost.client();
    client.send(b"get l:1 o:1 l:2 x:none l:3 o:2 l:1\r\n");
    let reply = client.read_reply_retrieval();
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "VALUE l:1 7 3\r\none\r\nVALUE o:1 3 5\r\nother\r\nVALUE l:3 7 5\r\nthree\r\n\
         VALUE l:1 7 3\r\none\r\nEND\r\n"
    );
    // The leased keys were read through warm: cold once each (l:1 asked twice: the second
    // read found the first's lease or its write-back), written back; the miss left nothing.
    assert_eq!(
        reads_of(&relay, "l:1"),
        1,
        "{}",
        String::from_utf8_lossy(&relay.forwarded())
    );
    let mut dw = warm.client();
    wait_value(&mut dw, "l:1", Some("one"), "l:1 written back into warm");
    wait_value(&mut dw, "l:3", Some("three"), "l:3 written back into warm");
    assert_eq!(
        value_on(&mut dw, "l:2"),
        None,
        "the miss's placeholder was dropped"
    );
    assert_eq!(
        value_on(&mut dw, "o:1"),
        None,
        "the other route's key never went to warm"
    );
    // Asked again: the leased keys hit warm, cold is not asked.
    let before = relay.forwarded().len();
    client.send(b"get l:3 o:1 l:1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&client.read_reply_retrieval()),
        "VALUE l:3 7 5\r\nthree\r\nVALUE o:1 3 5\r\nother\r\nVALUE l:1 7 3\r\none\r\nEND\r\n"
    );
    assert_eq!(
        relay.forwarded().len(),
        before,
        "warm hits: nothing reached cold"
    );
    assert_eq!(
        client.stat("lease_wins"),
        3,
        "l:1, l:2 and l:3 each won once"
    );
}

/// A lease holder whose client disconnects while its cold read is in flight still writes the
/// value back (the readers behind it wait for that, not for the placeholder to expire), and a
/// write whose client disconnects while it is at cold still drops the key from warm.
#[test]
fn a_lease_holder_and_a_write_finish_when_their_client_goes() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let relay = Relay::start(&cold.addr(), Duration::from_millis(300));
    let bifrost = Tiers::new(warm.addr(), relay.addr())
        .leases("{ lease_ttl: 30s, wait: 5s }")
        .start();
    let (mut dw, mut dc) = (warm.client(), cold.client());
    assert_eq!(dc.set("k", b"value", 0, 0), "STORED");
    {
        let mut a = bifrost.client();
        a.send(b"get k\r\n");
        wait_until(LANDED, "A's lease read of k reached cold", || {
            reads_of(&relay, "k") >= 1
        });
    } // A disconnects
    wait_value(&mut dw, "k", Some("value"), "the lease holder's write-back");

    for d in [&mut dw, &mut dc] {
        assert_eq!(d.set("w", b"old", 0, 0), "STORED");
    }
    {
        let mut b = bifrost.client();
        b.send(b"set w 0 0 3\r\nnew\r\n");
        wait_until(LANDED, "B's write reached cold", || {
            lines_starting(&relay, "set w ") >= 1
        });
    } // B disconnects
    wait_until(LANDED, "B's write dropped w from warm", || {
        value_on(&mut dw, "w").is_none()
    });
    assert_eq!(value_on(&mut dc, "w").as_deref(), Some("new"));
}

/// A get with a leased key and more keys than a batch can number (2^20) is refused with a
/// `CLIENT_ERROR`, and the connection goes on.
#[test]
fn a_get_with_too_many_keys_under_leases_is_refused() {
    let warm = Memcached::start();
    let cold = Memcached::start();
    let (w, c) = (warm.addr(), cold.addr());
    let bifrost = Bifrost::start_templated(
        move |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\", max_line_length: 4MiB}}]\n\
                 backends:\n\
                 \x20 l1: {{servers: [\"{w}\"]}}\n\
                 \x20 l2: {{servers: [\"{c}\"]}}\n\
                 routes:\n\
                 \x20 - {{name: {ROUTE}, match: '*', strategy: warm_first, warm: l1, cold: l2, \
                 write_on_miss: {{ttl: 300}}, leases: {{}}}}\n"
            )
        },
        &[],
    );
    let mut line = b"get".to_vec();
    for _ in 0..(1 << 20) + 1 {
        line.extend_from_slice(b" k");
    }
    line.extend_from_slice(b"\r\n");
    let mut client = bifrost.client();
    client.set_timeout(Duration::from_secs(30));
    client.send(&line);
    let reply = client.read_line();
    assert!(reply.starts_with("CLIENT_ERROR too many keys"), "{reply:?}");
    assert_eq!(client.version().split(' ').next(), Some("VERSION"));
}
