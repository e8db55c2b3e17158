//! End-to-end tests of health checks (SPEC §6): background `version` probes, a server marked
//! down after `failure_limit` failures in a row and brought back by a probe, `eject: false`
//! (its requests fail fast without touching the wire), `eject: true` (it leaves the ring, its
//! keys move to the others and come back), round_robin skipping a down server, and the probe's
//! own connection (a probe that times out never disturbs client requests).
//!
//! Servers are real memcached processes, killed and restarted on the same port; a fake peer
//! stands in only for a server that answers data requests and not probes.

mod common;

use common::{wait_until, Bifrost, BlindForward, Client, FakeBackend, Memcached};
use std::time::{Duration, Instant};

/// Fast checks, so a state change shows within a second or two on a loaded machine.
const HEALTH: &str =
    "health: { interval: 100ms, timeout: 300ms, failure_limit: 2, retry_after: 200ms";
/// How long a state change may take to show (generous: 2-core CI machines are busy).
const CHANGE: Duration = Duration::from_secs(10);

fn health(eject: bool) -> String {
    format!("{HEALTH}, eject: {eject} }}")
}

/// The `state` stat of server `addr` as bifrost reports it (`up` or `down`).
fn state(client: &mut Client, addr: &str) -> String {
    let stats = client.stats();
    stats
        .get(&format!("server:{addr}:state"))
        .cloned()
        .unwrap_or_else(|| panic!("no health state for {addr} in {stats:?}"))
}

fn wait_state(client: &mut Client, addr: &str, want: &str) {
    wait_until(CHANGE, &format!("server {addr} {want}"), || {
        state(client, addr) == want
    });
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn a_killed_server_is_marked_down_fails_fast_and_comes_back_after_a_restart() {
    let mut mc = Memcached::start();
    let addr = mc.addr();
    let port = mc.port();
    let bifrost = BlindForward::new(&addr)
        .timeout("5s")
        .backend_option(&health(false))
        .start();
    let mut admin = bifrost.client();
    let mut c = bifrost.client();
    assert_eq!(state(&mut admin, &addr), "up");
    c.send(b"set k 0 0 1\r\nx\r\n");
    assert_eq!(c.read_line(), "STORED");
    wait_until(CHANGE, "probes answered", || {
        admin.stat(&format!("server:{addr}:probes")) >= 2
    });

    mc.kill();
    wait_state(&mut admin, &addr, "down");
    // Down, eject: false: answered at once (not after the 5 s request timeout), without a
    // connect attempt.
    let connect_failures = admin.stat("backend_connect_failures");
    let started = Instant::now();
    c.send(b"set k 0 0 1\r\nx\r\n");
    assert_eq!(c.read_line(), "SERVER_ERROR backend down");
    c.send(b"get k\r\n");
    assert_eq!(
        c.read_line(),
        "END",
        "a retrieval from a down server is a miss"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failing fast took {:?}",
        started.elapsed()
    );
    assert_eq!(
        admin.stat("backend_connect_failures"),
        connect_failures,
        "requests to a down server never touch the wire"
    );

    let _mc = Memcached::builder().port(port).start();
    wait_state(&mut admin, &addr, "up");
    c.send(b"set k 0 0 1\r\ny\r\n");
    assert_eq!(c.read_line(), "STORED");
    assert_eq!(admin.stat(&format!("server:{addr}:marked_down")), 1);
    assert_eq!(admin.stat(&format!("server:{addr}:returned")), 1);
    let log = bifrost.stderr_log();
    assert_eq!(
        count(&log, "is down after"),
        1,
        "one line per change:\n{log}"
    );
    assert_eq!(count(&log, "is up again"), 1, "one line per change:\n{log}");
}

#[test]
fn without_a_health_block_nothing_is_probed_or_marked_down() {
    let mut mc = Memcached::start();
    let addr = mc.addr();
    let bifrost = BlindForward::new(&addr).timeout("1s").start();
    let mut c = bifrost.client();
    mc.kill();
    for _ in 0..5 {
        c.send(b"set k 0 0 1\r\nx\r\n");
        let line = c.read_line();
        assert!(
            line.starts_with("SERVER_ERROR") && line != "SERVER_ERROR backend down",
            "{line}"
        );
    }
    let stats = c.stats();
    assert!(
        !stats.contains_key(&format!("server:{addr}:state")),
        "{stats:?}"
    );
}

/// Consistent-hash config over `servers` (ketama names n0, n1 ... so placement does not
/// depend on ports), with `health` lines for the pool.
fn hashed(servers: &[String], health: &str) -> impl Fn(u16) -> String {
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{address: \"{a}\", name: n{i}}}"))
        .collect();
    let list = list.join(", ");
    let health = health.to_string();
    move |port| {
        format!(
            "workers: 2\n\
             listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
             backends:\n  pool:\n    servers: [{list}]\n    timeout: 2s\n    {health}\n\
             routes: [{{match: \"*\", strategy: consistent_hash, backend: pool}}]\n"
        )
    }
}

/// Which of `direct` holds `key`.
fn holder(direct: &mut [Client], key: &str) -> Vec<usize> {
    (0..direct.len())
        .filter(|&i| direct[i].get(key).is_some())
        .collect()
}

#[test]
fn an_ejected_server_leaves_the_ring_as_if_never_configured_and_returns() {
    let mut fleet: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = fleet.iter().map(Memcached::addr).collect();
    let port2 = fleet[2].port();
    let bifrost = Bifrost::start_templated(hashed(&addrs, &health(true)), &[]);
    // The same pool without server 2, never ejecting: where keys go once 2 is ejected.
    let two = Bifrost::start_templated(hashed(&addrs[..2], ""), &[]);
    let mut direct: Vec<Client> = fleet.iter().map(Memcached::client).collect();
    let mut c = bifrost.client();
    let keys: Vec<String> = (0..120).map(|i| format!("key:{i}")).collect();
    let mut home = Vec::new();
    for k in &keys {
        c.send(format!("set {k} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED");
        let at = holder(&mut direct, k);
        assert_eq!(at.len(), 1, "{k} on {at:?}");
        home.push(at[0]);
    }
    assert!(home.contains(&2), "some keys live on server 2: {home:?}");

    fleet[2].kill();
    let mut admin = bifrost.client();
    wait_state(&mut admin, &addrs[2], "down");
    // Every key is stored again; each lands where the two-server pool puts it.
    direct.truncate(2);
    let mut via_two = two.client();
    for k in &keys {
        for d in direct.iter_mut() {
            d.send(format!("delete {k}\r\n").as_bytes());
            d.read_line();
        }
        c.send(format!("set {k} 0 0 1\r\ne\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED", "{k} is served while 2 is ejected");
        let ejected_at = holder(&mut direct, k);
        for d in direct.iter_mut() {
            d.send(format!("delete {k}\r\n").as_bytes());
            d.read_line();
        }
        via_two.send(format!("set {k} 0 0 1\r\nt\r\n").as_bytes());
        assert_eq!(via_two.read_line(), "STORED");
        assert_eq!(
            ejected_at,
            holder(&mut direct, k),
            "{k}: placement without the ejected server is the two-server pool's"
        );
    }

    fleet[2] = Memcached::builder().port(port2).start();
    wait_state(&mut admin, &addrs[2], "up");
    let mut direct: Vec<Client> = fleet.iter().map(Memcached::client).collect();
    // Workers rebuild their rings on their next loop turn: wait for a key of server 2 to land
    // there again, then check them all.
    let back = keys
        .iter()
        .zip(&home)
        .find(|(_, &h)| h == 2)
        .map(|(k, _)| k);
    let back = back.expect("a key of server 2");
    wait_until(CHANGE, "keys of server 2 go to it again", || {
        c.send(format!("set {back} 0 0 1\r\nb\r\n").as_bytes());
        c.read_line() == "STORED" && holder(&mut direct, back).contains(&2)
    });
    for (k, &h) in keys.iter().zip(&home) {
        c.send(format!("set {k} 0 0 1\r\nb\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED");
        assert!(holder(&mut direct, k).contains(&h), "{k} is home on {h}");
    }
}

#[test]
fn round_robin_skips_a_down_server() {
    let mut a = Memcached::start();
    let b = Memcached::start();
    let (aa, ba) = (a.addr(), b.addr());
    let h = health(false);
    let bifrost = Bifrost::start_templated(
        |port| {
            format!(
                "listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  pool:\n    servers: [\"{aa}\", \"{ba}\"]\n    {h}\n\
                 routes: [{{match: \"*\", strategy: round_robin, backend: pool}}]\n"
            )
        },
        &[],
    );
    let mut admin = bifrost.client();
    a.kill();
    wait_state(&mut admin, &aa, "down");
    let mut c = bifrost.client();
    for i in 0..20 {
        c.send(format!("set rr:{i} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED", "request {i} skips the down server");
    }
    let mut direct = b.client();
    for i in 0..20 {
        assert!(
            direct.get(&format!("rr:{i}")).is_some(),
            "rr:{i} on the live server"
        );
    }
}

#[test]
fn a_probe_that_times_out_never_disturbs_client_requests() {
    // The server serves data but never answers `version`: its probes time out on their own
    // connection and mark it down; until then every client request is answered by it, and
    // none is failed by a probe's timeout (which would reset a shared connection).
    let fake = FakeBackend::start(common::Behavior::DeafToVersion(Duration::from_millis(5)));
    let addr = fake.addr();
    let bifrost = BlindForward::new(&addr)
        .timeout("2s")
        .backend_option(
            "health: { interval: 50ms, timeout: 100ms, failure_limit: 4, retry_after: 1s }",
        )
        .start();
    let mut c = bifrost.client();
    let mut admin = bifrost.client();
    let mut stored = 0;
    let deadline = Instant::now() + CHANGE;
    loop {
        // A few requests in flight at a time, so one is always out when a probe times out.
        for _ in 0..4 {
            c.send(b"set k 0 0 1\r\nx\r\n");
        }
        let replies: Vec<String> = (0..4).map(|_| c.read_line()).collect();
        for r in &replies {
            assert!(
                r == "STORED" || r == "SERVER_ERROR backend down",
                "a client request was disturbed: {r}"
            );
        }
        stored += replies.iter().filter(|r| *r == "STORED").count();
        if replies.iter().all(|r| r == "SERVER_ERROR backend down") {
            break;
        }
        assert!(Instant::now() < deadline, "never marked down");
    }
    assert!(
        stored >= 4,
        "served before the probes failed enough: {stored}"
    );
    assert_eq!(state(&mut admin, &addr), "down");
    assert!(admin.stat(&format!("server:{addr}:probe_failures")) >= 4);
}

/// What one load client saw: errors (with when), and wrong replies.
#[derive(Default)]
struct Seen {
    /// A set not `STORED` (or its read-back missing) while the server was out.
    errors: Vec<(Instant, String, String)>,
    /// A set `STORED` whose read-back missed: the key moved between them (the server went or
    /// came back in between).
    moved: Vec<(Instant, String)>,
    wrong: Vec<String>,
    requests: usize,
}

/// A client that sets and reads back its own keys until `stop`, each value naming its key;
/// `done` counts its set/get rounds as they finish (the test's measure of load having run).
fn load_client(
    addr: String,
    id: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Seen {
    let mut c = Client::connect(&addr);
    let mut seen = Seen::default();
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("load:{id}:{}", i % 50);
        let value = format!("{key}:{i}");
        c.send(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
        let stored = c.read_line();
        c.send(format!("get {key}\r\n").as_bytes());
        let got = c.read_values();
        seen.requests += 2;
        match got {
            Ok(items) => {
                let ok = match items.as_slice() {
                    [] => false,
                    [item] if item.key == key && item.data == value.as_bytes() => true,
                    _ => {
                        seen.wrong.push(format!(
                            "{key}: {:?}",
                            items.iter().map(|i| &i.key).collect::<Vec<_>>()
                        ));
                        true
                    }
                };
                if stored != "STORED" {
                    seen.errors.push((Instant::now(), key, stored));
                } else if !ok {
                    seen.moved.push((Instant::now(), key));
                }
            }
            Err(e) => seen.wrong.push(format!("{key}: {e}")),
        }
        i += 1;
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    seen
}

/// Waits until every load client finished `rounds` more set/get rounds than `from` says
/// (a phase of load, measured in work done rather than in time); returns the new counts.
fn load_rounds(
    done: &[std::sync::Arc<std::sync::atomic::AtomicUsize>],
    from: &[usize],
    rounds: usize,
    what: &str,
) -> Vec<usize> {
    let now = || -> Vec<usize> {
        done.iter()
            .map(|d| d.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    };
    wait_until(Duration::from_secs(30), what, || {
        now().iter().zip(from).all(|(n, f)| *n >= f + rounds)
    });
    now()
}

#[test]
fn a_server_killed_under_load_costs_only_its_keys_until_ejected_and_gets_them_back() {
    let mut fleet: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = fleet.iter().map(Memcached::addr).collect();
    let port2 = fleet[2].port();
    let bifrost = Bifrost::start_templated(hashed(&addrs, &health(true)), &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done: Vec<_> = (0..8)
        .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
        .collect();
    let clients: Vec<_> = (0..8)
        .map(|id| {
            let (addr, stop, done) = (bifrost.addr(), stop.clone(), done[id].clone());
            std::thread::spawn(move || load_client(addr, id, stop, done))
        })
        .collect();
    // Each phase runs until every client has done this many rounds in it (a fixed sleep could
    // pass with no load at all on a loaded machine, and the checks below with it). 100 rounds
    // go over each client's 50 keys twice, so every phase touches the killed server's keys.
    const PHASE_ROUNDS: usize = 100;
    let mut rounds = load_rounds(&done, &[0; 8], PHASE_ROUNDS, "the load runs");
    // The kill is sent at `killed_at`; the harness sees the process gone at `dead_at` (which
    // on a loaded machine can be seconds later: the errors' window runs from the one to 2 s
    // after the other).
    let killed_at = Instant::now();
    fleet[2].kill();
    let dead_at = Instant::now();
    let mut admin = bifrost.client();
    wait_state(&mut admin, &addrs[2], "down");
    let seen_down_after = dead_at.elapsed();
    rounds = load_rounds(&done, &rounds, PHASE_ROUNDS, "load runs after the ejection");
    let restarted_at = Instant::now();
    fleet[2] = Memcached::builder().port(port2).start();
    let serving_at = Instant::now();
    wait_state(&mut admin, &addrs[2], "up");
    let returned_after = serving_at.elapsed();
    load_rounds(&done, &rounds, PHASE_ROUNDS, "load runs after the return");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<Seen> = clients
        .into_iter()
        .map(|t| t.join().expect("load client"))
        .collect();

    let requests: usize = seen.iter().map(|s| s.requests).sum();
    let wrong: Vec<&String> = seen.iter().flat_map(|s| &s.wrong).collect();
    assert!(wrong.is_empty(), "wrong or mismatched replies: {wrong:?}");
    assert!(requests > 1000, "the load ran: {requests} requests");
    // Errors only within 2 s of the kill (until the ejection), and only for keys of the
    // killed server: with it back, each of them lands on it again.
    let errors: Vec<&(Instant, String, String)> = seen.iter().flat_map(|s| &s.errors).collect();
    let mut c = bifrost.client();
    let mut direct = fleet[2].client();
    for (at, key, stored) in &errors {
        let after = at.saturating_duration_since(dead_at);
        assert!(
            *at >= killed_at && after < Duration::from_secs(2),
            "{key}: an error ({stored}) {after:?} after the kill; bifrost's log:\n{}",
            bifrost.stderr_log()
        );
        c.send(format!("set {key} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED");
        assert!(
            direct.get(key).is_some(),
            "{key} had an error but is not the killed server's"
        );
    }
    // A read-back that missed: only for keys of that server, at the kill or at its return.
    let moved: Vec<&(Instant, String)> = seen.iter().flat_map(|s| &s.moved).collect();
    for (at, key) in &moved {
        let near_kill = at.saturating_duration_since(dead_at) < Duration::from_secs(2);
        assert!(
            near_kill || *at >= restarted_at,
            "{key}: read-back missed {:?} after the kill, before the restart",
            at.saturating_duration_since(dead_at)
        );
        c.send(format!("set {key} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(c.read_line(), "STORED");
        assert!(
            direct.get(key).is_some(),
            "{key} moved but is not the killed server's"
        );
    }
    let last_error = errors
        .iter()
        .map(|e| e.0.saturating_duration_since(killed_at))
        .max();
    eprintln!(
        "{requests} requests, {} errors (the last {last_error:?} after the kill), {} keys \
         moved under a read-back; seen down by stats {seen_down_after:?} after the kill \
         took effect ({:?} to kill); back {returned_after:?} after the restart answered",
        errors.len(),
        moved.len(),
        dead_at.duration_since(killed_at)
    );
    // Back: keys of the returned server go to it again (the load's own key names: fnv1a_64
    // clusters keys that differ only in their last characters).
    let back = (0..8)
        .flat_map(|id| (0..50).map(move |n| format!("load:{id}:{n}")))
        .find(|k| {
            c.send(format!("set {k} 0 0 1\r\nx\r\n").as_bytes());
            c.read_line() == "STORED" && direct.get(k).is_some()
        });
    assert!(
        back.is_some(),
        "no key lands on the returned server: {:?}\n{}",
        admin.stats(),
        bifrost.stderr_log()
    );
}

#[test]
fn a_flapping_server_is_ejected_and_returned_each_time_without_a_storm() {
    let mut mc = Memcached::start();
    let addr = mc.addr();
    let port = mc.port();
    let bifrost = BlindForward::new(&addr)
        .workers(2)
        .backend_option(&health(true))
        .start();
    let mut admin = bifrost.client();
    let mut c = bifrost.client();
    for round in 1..=3u64 {
        mc.kill();
        wait_state(&mut admin, &addr, "down");
        // Clients keep asking while it is down: fast failures, no connects.
        for _ in 0..200 {
            c.send(b"get k\r\n");
            assert_eq!(c.read_line(), "END");
        }
        mc = Memcached::builder().port(port).start();
        wait_state(&mut admin, &addr, "up");
        c.send(b"set k 0 0 1\r\nx\r\n");
        assert_eq!(c.read_line(), "STORED");
        assert_eq!(admin.stat(&format!("server:{addr}:marked_down")), round);
        assert_eq!(admin.stat(&format!("server:{addr}:returned")), round);
    }
    let connects = admin.stat(&format!("server:{addr}:connects"));
    assert!(
        connects <= 2 * 4,
        "at most one connect per worker per return: {connects}"
    );
    let log = bifrost.stderr_log();
    assert_eq!(count(&log, "is down after"), 3, "{log}");
    assert_eq!(count(&log, "is up again"), 3, "{log}");
    let lines = log.lines().count();
    assert!(lines < 40, "{lines} log lines for 3 flaps:\n{log}");
}

#[test]
fn a_server_that_never_answers_costs_only_its_own_keys_until_it_is_ejected() {
    // Pool: a real memcached (n0) and a server that accepts and never answers (n1). Which
    // keys are n1's is read off a twin pool of two real memcached with the same names.
    let real = Memcached::start();
    let twin = Memcached::start();
    let hole = FakeBackend::start(common::Behavior::NeverAnswer);
    let pool = |other: &str| {
        format!(
            "{{address: \"{}\", name: n0}}, {{address: \"{other}\", name: n1}}",
            real.addr()
        )
    };
    let config = |servers: String, health: &str| {
        let health = health.to_string();
        move |port: u16| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  pool:\n    servers: [{servers}]\n    timeout: 300ms\n    {health}\n\
                 routes: [{{match: \"*\", strategy: consistent_hash, backend: pool}}]\n"
            )
        }
    };
    let reference = Bifrost::start_templated(config(pool(&twin.addr()), ""), &[]);
    let health = "health: { interval: 100ms, timeout: 200ms, failure_limit: 2, retry_after: 10s, eject: true }";
    let bifrost = Bifrost::start_templated(config(pool(&hole.addr()), health), &[]);
    let keys: Vec<String> = (0..40).map(|i| format!("{i}:item:{}", i * 7919)).collect();
    let mut r = reference.client();
    let mut on_twin = twin.client();
    let owned_by_n1: Vec<bool> = keys
        .iter()
        .map(|k| {
            assert_eq!(set(&mut r, k, "x"), "STORED");
            on_twin.get(k).is_some()
        })
        .collect();
    assert!(owned_by_n1.contains(&true) && owned_by_n1.contains(&false));

    let mut c = bifrost.client();
    let mut admin = bifrost.client();
    let mut n1_errors = 0;
    while state(&mut admin, &hole.addr()) == "up" {
        for (k, &n1) in keys.iter().zip(&owned_by_n1) {
            let started = Instant::now();
            let reply = set(&mut c, k, "v");
            let took = started.elapsed();
            if n1 {
                n1_errors += usize::from(reply != "STORED");
                assert!(
                    took < Duration::from_secs(3),
                    "{k}: answered after {took:?}"
                );
            } else {
                assert_eq!(reply, "STORED", "{k} is n0's: never disturbed");
            }
            if state(&mut admin, &hole.addr()) == "down" {
                break;
            }
        }
    }
    assert!(n1_errors > 0, "n1's keys failed before the ejection");
    // Ejected: every key is served.
    for k in &keys {
        assert_eq!(set(&mut c, k, "w"), "STORED", "{k} after the ejection");
    }
}

fn set(c: &mut Client, key: &str, value: &str) -> String {
    c.send(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
    c.read_line()
}

#[test]
fn a_timeout_with_many_requests_in_flight_is_one_failure_not_one_per_request() {
    // A server that never answers; the probe's own timeout is long (it stays out). One get
    // times out first, so the proxy learns how big replies are and lets the next ten be out
    // together; their deadline resets the connection once: one more failure event, not ten.
    let hole = FakeBackend::start(common::Behavior::NeverAnswer);
    let addr = hole.addr();
    let bifrost = BlindForward::new(&addr)
        .timeout("300ms")
        .backend_option(
            "health: { interval: 1h, timeout: 30s, failure_limit: 100, retry_after: 1h }",
        )
        .start();
    let events = format!("server:{addr}:failure_events");
    let mut c = bifrost.client();
    let mut admin = bifrost.client();
    c.send(b"get first\r\n");
    assert_eq!(c.read_line(), "END");
    let before = admin.stat(&events);
    let pipeline: String = (0..10).map(|i| format!("get k{i}\r\n")).collect();
    c.send(pipeline.as_bytes());
    for i in 0..10 {
        assert_eq!(c.read_line(), "END", "get k{i}: a miss after the timeout");
    }
    assert_eq!(admin.stat("backend_timeouts"), 11);
    let log = bifrost.stderr_log();
    assert_eq!(
        admin.stat(&events) - before,
        1,
        "ten requests, one reset:\n{log}"
    );
    assert!(
        log.contains("resetting connection with 10 in flight"),
        "{log}"
    );
    assert_eq!(state(&mut admin, &addr), "up");
}
