//! Scripted runs: one schedule written out by hand, for a finding the seeded runs meet
//! rarely. Each replays the finding it is named after.

use std::time::Duration;

use bytes::Bytes;

use super::client::{Answer, Limits, SimClient};
use super::driver::Driver;
use super::store::Held;
use super::workload::{self, SERVERS};
use crate::protocol::{parse_request, Limits as ParseLimits, Parsed};
use crate::upstream::FailReason;

/// A driver over servers a (0) and b (1) and the route `route`, with one client sending
/// `lines` under a soft limit of `soft` bytes, and multi-gets in windows of `window` keys.
fn driver(route: &str, lines: &[&'static [u8]], soft: usize, window: usize) -> Driver {
    let yaml = format!(
        r#"listeners:
  - name: main
    bind: 127.0.0.1:0
backends:
  a: {{ servers: [127.0.0.1:1] }}
  b: {{ servers: [127.0.0.1:2] }}
routes:
  - {route}
"#
    );
    let planner = match workload::planner(&yaml) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut d = Driver::new(planner, SERVERS, 1, window);
    d.tracing = true;
    let requests = lines
        .iter()
        .map(|line| match parse_request(line, &ParseLimits::default()) {
            Ok(Parsed::Complete(r)) => (r, Bytes::from_static(line)),
            other => panic!("{other:?}"),
        })
        .collect();
    let limits = Limits {
        max_outstanding: 16,
        max_inflight: 16,
        soft,
    };
    d.clients.push(SimClient::new(requests, limits));
    d
}

/// Lets every server execute and every reply be read until nothing moves.
fn settle(d: &mut Driver) {
    for _ in 0..100 {
        for i in 0..d.conns.len() {
            let server = d.conns[i].server;
            while d.conns[i].execute_next(&mut d.stores[server]).is_some() {}
            let mut out = Vec::new();
            let n = d.conns[i].unread();
            d.conns[i].read(n, &mut d.stores[server], &mut out);
            d.completed(out);
            d.apply_completions();
        }
        d.client_reads(0);
    }
}

/// Finding, fixed: on a failover route with `on_miss: next`, a write refused at once by the
/// first server (a full queue: `backend overloaded`) failed over to the next server while a
/// read the client sent before it was still out on the first; that read missed there, went on
/// to the next server, and answered the value the later write put there. A read that may
/// still move on now holds its client's later writes until it has been sent to its last
/// server.
#[test]
fn a_read_that_fails_over_never_sees_a_later_write() {
    let route =
        r#"{ name: fo, match: "fo:*", strategy: failover, backends: [a, b], on_miss: next }"#;
    let lines: [&[u8]; 2] = [b"get fo:k\r\n", b"set fo:k 0 0 1\r\nx\r\n"];
    let mut d = driver(route, &lines, 1 << 20, 8);
    assert!(d.dispatch(0), "the get goes to a");
    d.refuse[0] = Some(FailReason::Overloaded);
    assert!(d.dispatch(0), "the set is held behind the get");
    settle(&mut d);
    for line in &d.trace {
        println!("{line}");
    }
    assert!(d.violations.is_empty(), "{:?}", d.violations);
    assert_eq!(d.clients[0].answers[0], Answer::Whole(b"END\r\n".to_vec()));
}

/// Finding, fixed: a multi-get whose next window waits for its client to drain (parked) never
/// went on when the replies of the client's later requests, which wait behind it and cannot
/// be written before it, kept the client over its soft limit (`Client::may_take_more` counted
/// them): the client hung. The head's exchange now goes on once what can drain has.
#[test]
fn a_parked_multi_get_goes_on_when_the_replies_behind_it_fill_the_client() {
    let route = r#"{ name: x, match: "k*", strategy: blind_forward, backend: a }
  - { name: y, match: "big", strategy: blind_forward, backend: b }"#;
    let lines: [&[u8]; 2] = [b"get k1 k2\r\n", b"get big\r\n"];
    let mut d = driver(route, &lines, 64, 1);
    d.stores[0].execute_all(b"set k1 0 0 1\r\n1\r\nset k2 0 0 1\r\n2\r\n");
    let big = [b'v'; 100];
    let set = [&b"set big 0 0 100\r\n"[..], &big, b"\r\n"].concat();
    d.stores[1].execute_all(&set);
    assert!(
        d.dispatch(0),
        "the first window of the multi-get goes out to a"
    );
    assert!(d.dispatch(0), "the get of the big value goes out to b");
    // b answers first: the big reply waits behind the multi-get's slot, over the soft limit.
    let mut out = Vec::new();
    d.conns[1].execute_next(&mut d.stores[1]);
    d.conns[1].read(usize::MAX, &mut d.stores[1], &mut out);
    d.completed(out);
    d.apply_completions();
    settle(&mut d);
    for line in &d.trace {
        println!("{line}");
    }
    assert!(d.violations.is_empty(), "{:?}", d.violations);
    let whole = b"VALUE k1 0 1\r\n1\r\nVALUE k2 0 1\r\n2\r\nEND\r\n".to_vec();
    assert_eq!(d.clients[0].answers[0], Answer::Whole(whole));
}

/// Finding, fixed: a retrieval of more keys than one window sends its later windows after the
/// client's later requests went out: a later write to a key of a later window was seen by the
/// retrieval that preceded it. Its client's writes now wait until its last window is out.
#[test]
fn a_write_never_reaches_a_later_window_of_an_earlier_multi_get() {
    let route = r#"{ name: x, match: "k*", strategy: blind_forward, backend: a }"#;
    let lines: [&[u8]; 2] = [b"get k1 k2\r\n", b"set k2 0 0 3\r\nnew\r\n"];
    let mut d = driver(route, &lines, 1 << 20, 1);
    d.stores[0].execute_all(b"set k2 0 0 3\r\nold\r\n");
    assert!(d.dispatch(0), "the first window (k1) goes out");
    assert!(
        d.dispatch(0),
        "the set is held until the last window is out"
    );
    settle(&mut d);
    assert!(
        d.dispatch(0),
        "the set goes once the get's last window is out"
    );
    settle(&mut d);
    for line in &d.trace {
        println!("{line}");
    }
    assert!(d.violations.is_empty(), "{:?}", d.violations);
    let old = b"VALUE k2 0 3\r\nold\r\nEND\r\n".to_vec();
    assert_eq!(d.clients[0].answers[0], Answer::Whole(old));
    assert_eq!(
        d.clients[0].answers[1],
        Answer::Whole(b"STORED\r\n".to_vec())
    );
}

/// Warm server a (0) and cold server b (1) of a warm_first route for `wf:*` with `extra`
/// settings, one client per list of lines, each client on connections of its own: a client's
/// connection to server `s` is `s * clients + client`; the side-effect connection of server `s`
/// is `SERVERS * clients + s`.
struct Tiers {
    d: Driver,
    clients: usize,
}

const WARM: usize = 0;
const COLD: usize = 1;

impl Tiers {
    fn new(extra: &str, lines: &[&[&'static [u8]]]) -> Tiers {
        let yaml = format!(
            r#"listeners:
  - name: main
    bind: 127.0.0.1:0
backends:
  a: {{ servers: [127.0.0.1:1] }}
  b: {{ servers: [127.0.0.1:2] }}
routes:
  - {{ name: wf, match: "wf:*", strategy: warm_first, warm: a, cold: b{extra} }}
"#
        );
        let planner = match workload::planner(&yaml) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let clients = lines.len();
        let mut d = Driver::new(planner, SERVERS, clients, 8);
        d.tracing = true;
        d.cold[COLD] = true;
        d.warm[WARM] = true;
        d.timed[WARM] = true;
        d.timed[COLD] = true;
        for lines in lines {
            let requests = lines
                .iter()
                .map(|line| match parse_request(line, &ParseLimits::default()) {
                    Ok(Parsed::Complete(r)) => (r, Bytes::from_static(line)),
                    other => panic!("{other:?}"),
                })
                .collect();
            let limits = Limits {
                max_outstanding: 16,
                max_inflight: 16,
                soft: 1 << 20,
            };
            d.clients.push(SimClient::new(requests, limits));
        }
        Tiers { d, clients }
    }

    fn conn(&self, server: usize, client: usize) -> usize {
        server * self.clients + client
    }

    fn side(&self, server: usize) -> usize {
        SERVERS * self.clients + server
    }

    /// Server `server` executes the next request client `client` sent it.
    fn execute(&mut self, server: usize, client: usize) {
        let conn = self.conn(server, client);
        assert!(
            self.d.execute(conn).is_some(),
            "nothing to execute on conn{conn}"
        );
    }

    /// The proxy reads what connection `conn` has and hands it on.
    fn read(&mut self, conn: usize) {
        let server = self.d.conns[conn].server;
        let n = self.d.conns[conn].unread();
        let mut out = Vec::new();
        self.d.conns[conn].read(n, &mut self.d.stores[server], &mut out);
        self.d.completed(out);
        self.d.apply_completions();
    }

    /// Server `server` executes client `client`'s next request and the proxy reads the reply.
    fn round_trip(&mut self, server: usize, client: usize) {
        self.execute(server, client);
        self.read(self.conn(server, client));
    }

    /// Server `server`'s side-effect connection executes everything and is read.
    fn side_effects(&mut self, server: usize) {
        let conn = self.side(server);
        while self.d.execute(conn).is_some() {}
        self.read(conn);
    }

    /// Loads `bytes` into server `server` directly (not through the proxy).
    fn load(&mut self, server: usize, bytes: &[u8]) {
        self.d.stores[server].execute_all(bytes);
    }

    fn answer(&self, client: usize, request: usize) -> &Answer {
        &self.d.clients[client].answers[request]
    }

    fn warm_value(&self, key: &[u8]) -> Option<Held> {
        self.d.stores[WARM].held(key).filter(|h| !h.placeholder)
    }

    fn print(&self) {
        for line in &self.d.trace {
            println!("{line}");
        }
    }
}

fn whole(text: &[u8]) -> Answer {
    Answer::Whole(text.to_vec())
}

const LEASED: &str = ", write_on_miss: { ttl: 60 }, leases: { lease_ttl: 3s, wait: 100ms }";

/// The delete race that leases close (docs/configuration.md, "Why no older value can stay in
/// W"): reader A misses warm and gets the lease, reads cold's old value, and its reply is slow;
/// client B deletes the key through the proxy (cold, then warm: the placeholder goes); A is
/// answered the old value (it read before the delete), and its write-back under the
/// placeholder's cas is refused (`NF`): warm does not keep the deleted value. Without leases the
/// same schedule leaves it there (the race the documentation describes).
#[test]
fn a_delete_racing_a_lease_holders_write_back_leaves_warm_without_the_old_value() {
    for leased in [true, false] {
        let extra = match leased {
            true => LEASED,
            false => ", write_on_miss: { ttl: 60 }",
        };
        let a: &[&[u8]] = &[b"get wf:k\r\n"];
        let b: &[&[u8]] = &[b"delete wf:k\r\n"];
        let mut t = Tiers::new(extra, &[a, b]);
        t.d.lease_wait = leased.then_some(Duration::from_millis(100));
        t.load(COLD, b"set wf:k 0 0 3\r\nold\r\n");
        assert!(t.d.dispatch(0), "A's read goes to warm");
        t.round_trip(WARM, 0); // a miss: with leases, a placeholder and A's lease (W)
        t.execute(COLD, 0); // A reads cold's old value; its reply waits
        assert!(t.d.dispatch(1), "B's delete goes out");
        t.round_trip(COLD, 1); // cold: DELETED
        t.round_trip(WARM, 1); // warm: the placeholder (or nothing) goes
        assert_eq!(t.answer(1, 0), &whole(b"DELETED\r\n"));
        t.read(t.conn(COLD, 0)); // A answered; its write-back goes out
        t.side_effects(WARM);
        t.print();
        assert!(t.d.violations.is_empty(), "{:?}", t.d.violations);
        assert_eq!(t.answer(0, 0), &whole(b"VALUE wf:k 0 3\r\nold\r\nEND\r\n"));
        assert_eq!(t.d.stores[COLD].held(b"wf:k"), None);
        match leased {
            true => {
                assert_eq!(t.warm_value(b"wf:k"), None, "the write-back was refused");
                assert_eq!(t.d.counts.get("lease write-back refused (EX/NF)"), Some(&1));
            }
            false => assert!(
                t.warm_value(b"wf:k").is_some(),
                "without leases the old value lands after the delete"
            ),
        }
    }
}

/// The other order of the same race: A's read of cold comes after B's delete reached cold (a
/// miss), and A drops its placeholder under its cas (`md ... C`), whichever of that and B's
/// step in warm comes first.
#[test]
fn a_lease_holder_that_reads_cold_after_a_delete_leaves_warm_empty() {
    for warm_step_first in [true, false] {
        let a: &[&[u8]] = &[b"mg wf:k v\r\n"];
        let b: &[&[u8]] = &[b"md wf:k\r\n"];
        let mut t = Tiers::new(LEASED, &[a, b]);
        t.d.lease_wait = Some(Duration::from_millis(100));
        t.load(COLD, b"set wf:k 0 0 3\r\nold\r\n");
        assert!(t.d.dispatch(0));
        t.round_trip(WARM, 0); // A's placeholder and lease
        assert!(t.d.dispatch(1));
        t.round_trip(COLD, 1); // B's delete reaches cold first
        if warm_step_first {
            t.round_trip(WARM, 1);
        }
        t.round_trip(COLD, 0); // A reads a miss: EN, and drops its placeholder
        t.side_effects(WARM);
        if !warm_step_first {
            t.round_trip(WARM, 1);
        }
        t.print();
        assert!(t.d.violations.is_empty(), "{:?}", t.d.violations);
        assert_eq!(t.answer(0, 0), &whole(b"EN\r\n"));
        assert_eq!(t.answer(1, 0), &whole(b"HD\r\n"));
        assert!(
            t.d.stores[WARM].held(b"wf:k").is_none(),
            "{warm_step_first}"
        );
    }
}

/// A herd: three readers of a key warm lacks. One gets the lease and reads cold; the others
/// are told to wait (`Z`), re-read warm when their timers fire, and are answered the value the
/// holder wrote back: cold is read once.
#[test]
fn readers_behind_a_lease_wait_for_its_write_back_and_cold_is_read_once() {
    let get: &[&[u8]] = &[b"get wf:k\r\n"];
    let mut t = Tiers::new(LEASED, &[get, get, get]);
    t.d.lease_wait = Some(Duration::from_millis(100));
    t.load(COLD, b"set wf:k 5 0 3\r\nval\r\n");
    for c in 0..3 {
        assert!(t.d.dispatch(c));
        t.round_trip(WARM, c); // c0: W; c1, c2: Z, a timer each
    }
    assert!(t.d.next_timer().is_some(), "the waiting readers set timers");
    t.round_trip(COLD, 0); // the holder is answered; its write-back goes out
    t.side_effects(WARM);
    while t.d.fire_timer() {
        for c in 1..3 {
            let conn = t.conn(WARM, c);
            while t.d.execute(conn).is_some() {}
            t.read(conn);
        }
    }
    t.print();
    assert!(t.d.violations.is_empty(), "{:?}", t.d.violations);
    for c in 0..3 {
        assert_eq!(t.answer(c, 0), &whole(b"VALUE wf:k 5 3\r\nval\r\nEND\r\n"));
    }
    assert_eq!(t.d.counts.get("lease read of cold"), Some(&1));
    assert_eq!(t.d.counts.get("lease: Z on a placeholder (wait)"), Some(&2));
    assert!(t.d.clock < Duration::from_millis(100), "within the wait");
}

/// A reader behind a lease whose holder never writes back (its cold read failed) waits `wait`,
/// then reads cold itself, without a write-back; after `lease_ttl` the next reader wins a new
/// lease.
#[test]
fn a_reader_behind_a_dead_lease_reads_cold_after_wait() {
    let a: &[&[u8]] = &[b"get wf:k\r\n"];
    let b: &[&[u8]] = &[b"get wf:k\r\n", b"get wf:k\r\n"];
    let mut t = Tiers::new(LEASED, &[a, b]);
    t.d.lease_wait = Some(Duration::from_millis(100));
    t.load(COLD, b"set wf:k 0 0 1\r\nv\r\n");
    assert!(t.d.dispatch(0));
    t.round_trip(WARM, 0); // A holds the lease
    assert!(t.d.dispatch(1));
    t.round_trip(WARM, 1); // B waits
                           // A's read of cold is lost (a reset): A answers a miss and leaves the placeholder.
    let mut out = Vec::new();
    let conn = t.conn(COLD, 0);
    t.d.conns[conn].reset(
        FailReason::ConnectionLost,
        0,
        &mut t.d.stores[COLD],
        &mut out,
    );
    t.d.completed(out);
    t.d.apply_completions();
    assert_eq!(t.answer(0, 0), &whole(b"END\r\n"));
    while t.d.fire_timer() {
        let conn = t.conn(WARM, 1);
        while t.d.execute(conn).is_some() {}
        t.read(conn);
    }
    t.round_trip(COLD, 1); // after the wait: B reads cold itself
    assert_eq!(t.answer(1, 0), &whole(b"VALUE wf:k 0 1\r\nv\r\nEND\r\n"));
    assert!(t.d.clock >= Duration::from_millis(100));
    assert!(
        t.warm_value(b"wf:k").is_none(),
        "no write-back without the lease"
    );
    t.d.advance(Duration::from_secs(3)); // the placeholder expires
    assert!(t.d.dispatch(1));
    t.round_trip(WARM, 1);
    t.round_trip(COLD, 1);
    t.side_effects(WARM);
    t.print();
    assert!(t.d.violations.is_empty(), "{:?}", t.d.violations);
    assert_eq!(t.answer(1, 1), &whole(b"VALUE wf:k 0 1\r\nv\r\nEND\r\n"));
    assert_eq!(t.d.counts.get("lease: W on a placeholder"), Some(&2));
    assert!(
        t.warm_value(b"wf:k").is_some(),
        "the new holder wrote it back"
    );
}

/// Early refresh: a hit whose remaining TTL is under `early_refresh` × the write-back TTL is
/// served at once to the first reader that sees it so, which refreshes it from cold in the
/// background; a reader meanwhile is served the value too (`Z` on a value), without waiting.
#[test]
fn a_hit_near_its_expiry_is_served_and_refreshed_once() {
    let extra = ", write_on_miss: { ttl: 10 }, leases: { early_refresh: 0.5 }";
    let a: &[&[u8]] = &[b"get wf:k\r\n", b"get wf:k\r\n"];
    let b: &[&[u8]] = &[b"mg wf:k v t\r\n"];
    let mut t = Tiers::new(extra, &[a, b]);
    t.d.lease_wait = Some(Duration::from_secs(1));
    t.load(COLD, b"set wf:k 0 0 2\r\nv1\r\n");
    assert!(t.d.dispatch(0));
    t.round_trip(WARM, 0);
    t.round_trip(COLD, 0);
    t.side_effects(WARM); // warm: v1 for 10 s
    t.load(COLD, b"set wf:k 0 0 2\r\nv2\r\n"); // written elsewhere
    t.d.advance(Duration::from_secs(6)); // 4 s left, under 5
    assert!(t.d.dispatch(0));
    t.round_trip(WARM, 0); // W on a value: served v1, cold read again
    assert!(t.d.dispatch(1));
    t.round_trip(WARM, 1); // Z on a value: served v1
    t.round_trip(COLD, 0); // the refresh reads v2 and writes it back
    t.side_effects(WARM);
    t.print();
    assert!(t.d.violations.is_empty(), "{:?}", t.d.violations);
    assert_eq!(t.answer(0, 1), &whole(b"VALUE wf:k 0 2\r\nv1\r\nEND\r\n"));
    assert_eq!(t.answer(1, 0), &whole(b"VA 2 t4\r\nv1\r\n"));
    assert_eq!(
        t.d.counts.get("lease: W on a value (early refresh)"),
        Some(&1)
    );
    assert_eq!(t.d.counts.get("lease: Z on a value"), Some(&1));
    let held = t.warm_value(b"wf:k").map(|h| h.data);
    assert_eq!(held, Some(b"v2".to_vec()), "refreshed from cold");
}

// Three findings of the simulation (see `driver::WARM_STORED_REFUSED`,
// `driver::ORPHANED_WARM_STEP`, `run::CROSSED_WRITES`), fixed by making warm's step of a
// leased write a delete and letting such a write outlive its client: each replays one and
// asserts what must happen (each failed before the fix).

/// Finding (fixed): a `replace` of a key cold lacks is refused by cold (`NOT_STORED`) but stored
/// by warm into a reader's placeholder; the holder's `md ... C` then fails (`EX`), and warm
/// serves the value the client was told was not stored.
#[test]
fn a_replace_cold_refuses_is_not_served_from_warm() {
    let a: &[&[u8]] = &[b"get wf:k\r\n"];
    let b: &[&[u8]] = &[b"replace wf:k 0 0 1\r\nx\r\n", b"get wf:k\r\n"];
    let mut t = Tiers::new(LEASED, &[a, b]);
    assert!(t.d.dispatch(0));
    t.round_trip(WARM, 0); // A's placeholder and lease
    t.execute(COLD, 0); // A reads a miss; its reply waits
    assert!(t.d.dispatch(1));
    t.round_trip(COLD, 1); // NOT_STORED
    t.round_trip(WARM, 1); // the delete in warm drops A's placeholder (before the fix: the
                           // replace itself, STORED into the placeholder)
    t.read(t.conn(COLD, 0));
    t.side_effects(WARM); // A's md ... C: NF (before the fix: EX)
    assert!(t.d.dispatch(1));
    t.round_trip(WARM, 1); // B's get: a new placeholder, B's lease
    t.round_trip(COLD, 1); // B reads cold: a miss
    t.print();
    assert_eq!(t.answer(1, 0), &whole(b"NOT_STORED\r\n"));
    assert_eq!(
        t.answer(1, 1),
        &whole(b"END\r\n"),
        "served a value never stored"
    );
}

/// Finding (fixed): a client that closes while its write is at cold ends the exchange; cold
/// applies the write, and the step in warm never goes: warm keeps the older value (here with
/// no expiry).
#[test]
fn a_write_whose_client_closes_still_reaches_warm() {
    let a: &[&[u8]] = &[b"set wf:k 0 0 3\r\nnew\r\n"];
    let mut t = Tiers::new(LEASED, &[a]);
    t.load(COLD, b"set wf:k 0 0 3\r\nold\r\n");
    t.load(WARM, b"set wf:k 0 0 3\r\nold\r\n");
    assert!(t.d.dispatch(0));
    t.d.close_client(0);
    t.round_trip(COLD, 0);
    // The write outlives its client: its delete in warm goes once cold has answered.
    t.round_trip(WARM, 0);
    t.print();
    assert_eq!(
        t.d.stores[COLD].held(b"wf:k").map(|h| h.data),
        Some(b"new".to_vec())
    );
    let warm = t.warm_value(b"wf:k").map(|h| h.data);
    assert_ne!(
        warm,
        Some(b"old".to_vec()),
        "warm keeps the value cold overwrote"
    );
}

/// Finding (fixed): two clients' writes of one key, each to cold, then warm, reach the tiers in
/// opposite orders: cold keeps B's, warm A's, for good.
#[test]
fn two_writes_of_a_key_leave_the_tiers_agreeing() {
    let a: &[&[u8]] = &[b"set wf:k 0 0 1\r\na\r\n"];
    let b: &[&[u8]] = &[b"set wf:k 0 0 1\r\nb\r\n"];
    let mut t = Tiers::new(LEASED, &[a, b]);
    assert!(t.d.dispatch(0));
    assert!(t.d.dispatch(1));
    t.round_trip(COLD, 0);
    t.round_trip(COLD, 1);
    t.round_trip(WARM, 1);
    t.round_trip(WARM, 0);
    t.print();
    let cold = t.d.stores[COLD].held(b"wf:k").map(|h| h.data);
    let warm = t.warm_value(b"wf:k").map(|h| h.data);
    assert_eq!(cold, Some(b"b".to_vec()));
    assert!(
        warm.is_none() || warm == cold,
        "warm {warm:?}, cold {cold:?}"
    );
}
