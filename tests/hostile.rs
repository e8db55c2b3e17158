//! Honest clients beside a hostile one on the same backend connection (issue 14): two clients
//! pipeline reads of their own keys and check every reply while a third sends hostile requests
//! of every class (lines memcached reads differently, refuses without swallowing their data
//! block, or closes the connection for; data blocks that hold commands). Not one honest reply
//! may be wrong or failed, the shared backend connection is never reset, and nothing hostile
//! reaches memcached.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::lines::{hostile_request, is_one_error_line, Fenced, Refusal};
use common::{BlindForward, Memcached, Rng};

/// How long the hostile client runs.
const ATTACK: Duration = Duration::from_secs(3);
/// Keys per honest client, and reads per pipelined batch.
const KEYS: usize = 200;
const BATCH: usize = 25;

/// The value of an honest client's key: the client and the key, so a reply meant for anyone
/// else cannot pass for it.
fn value_of(client: &str, i: usize) -> String {
    format!("{client}{i}v")
}

#[derive(Default, Debug)]
struct Tally {
    reads: usize,
    wrong: usize,
    failed: usize,
}

/// Reads batches of `client`'s keys through the proxy until `stop`, checking each reply.
fn honest(addr: &str, client: &'static str, stop: &AtomicBool) -> Tally {
    let mut conn = Fenced::connect(addr);
    let mut tally = Tally::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let keys: Vec<usize> = (0..BATCH).map(|n| (i + n * 7) % KEYS).collect();
        i += 1;
        let batch: String = keys
            .iter()
            .map(|k| format!("get {client}{k}\r\n"))
            .collect();
        let want: String = keys
            .iter()
            .map(|&k| {
                let v = value_of(client, k);
                format!("VALUE {client}{k} 0 {}\r\n{v}\r\nEND\r\n", v.len())
            })
            .collect();
        let Some(got) = conn.exchange(batch.as_bytes()) else {
            tally.failed += BATCH;
            conn = Fenced::connect(addr);
            continue;
        };
        tally.reads += BATCH;
        if got != want.as_bytes() {
            // Count per reply: a wrong one holds another key's value, a failed one is a miss
            // or an error.
            let text = String::from_utf8_lossy(&got);
            for k in &keys {
                let v = value_of(client, *k);
                if !text.contains(&format!("VALUE {client}{k} 0 {}\r\n{v}\r\n", v.len())) {
                    tally.failed += 1;
                }
            }
            // Wrong: a value block of a key this batch did not ask, or not holding its value.
            let lines: Vec<&str> = text.split("\r\n").collect();
            for (n, line) in lines.iter().enumerate() {
                let Some(rest) = line.strip_prefix("VALUE ") else {
                    continue;
                };
                let key = rest.split(' ').next().unwrap_or("");
                let asked = keys.iter().any(|k| format!("{client}{k}") == key);
                let right = key
                    .strip_prefix(client)
                    .and_then(|k| k.parse::<usize>().ok())
                    .is_some_and(|k| lines.get(n + 1) == Some(&value_of(client, k).as_str()));
                if !(asked && right) {
                    tally.wrong += 1;
                }
            }
            if tally.wrong + tally.failed < 50 {
                eprintln!("{client}: unexpected replies: {text:?}");
            }
        }
    }
    tally
}

#[test]
fn honest_clients_get_every_reply_right_beside_a_hostile_client() {
    let mc = Memcached::start();
    // One worker and one connection per server: every client's requests share one backend
    // connection, the case where a desync would hand one client another's values.
    let bifrost = BlindForward::new(&mc.addr())
        .workers(1)
        .timeout("2s")
        .start();
    let mut setup = mc.client();
    for client in ["x", "v"] {
        for k in 0..KEYS {
            assert_eq!(
                setup.set(
                    &format!("{client}{k}"),
                    value_of(client, k).as_bytes(),
                    0,
                    0
                ),
                "STORED"
            );
        }
    }
    setup.set("victim:0", b"secret", 0, 0);
    let flushes_before = setup.stat("cmd_flush");
    // The backend connection is made by the first request; from then on it must never be
    // reset.
    let connects = format!("server:{}:connects", mc.addr());
    let mut probe = bifrost.client();
    assert_eq!(
        probe.get("x0").as_deref(),
        Some(value_of("x", 0).as_bytes())
    );
    let connects_before = probe.stat(&connects);
    assert_eq!(connects_before, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let honest_threads: Vec<_> = ["x", "v"]
        .into_iter()
        .map(|client| {
            let (addr, stop) = (bifrost.addr(), Arc::clone(&stop));
            thread::spawn(move || honest(&addr, client, &stop))
        })
        .collect();

    let mut rng = Rng::new(0x5eed);
    let mut attacker = Fenced::connect(&bifrost.addr());
    let (mut sent, mut refused, mut closed) = (0usize, 0usize, 0usize);
    let mut unrefused = Vec::new();
    let deadline = Instant::now() + ATTACK;
    while Instant::now() < deadline {
        let (request, refusal) = hostile_request(&mut rng);
        sent += 1;
        let reply = attacker.exchange(&request);
        match (refusal, reply) {
            (Refusal::ErrorLine, Some(reply)) if is_one_error_line(&reply) => refused += 1,
            (Refusal::Close, None) => {
                closed += 1;
                attacker = Fenced::connect(&bifrost.addr());
            }
            (_, reply) => {
                // Counted and reported at the end, so the honest clients' tally is seen too.
                if unrefused.len() < 5 {
                    unrefused.push(format!(
                        "{:?}: expected {refusal:?}, got {:?}",
                        String::from_utf8_lossy(&request),
                        reply.as_deref().map(String::from_utf8_lossy)
                    ));
                }
                if reply.is_none() {
                    attacker = Fenced::connect(&bifrost.addr());
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = honest_threads
        .into_iter()
        .map(|t| t.join().expect("honest client"))
        .collect();
    let reads: usize = tallies.iter().map(|t| t.reads).sum();
    let wrong: usize = tallies.iter().map(|t| t.wrong).sum();
    let failed: usize = tallies.iter().map(|t| t.failed).sum();
    eprintln!(
        "hostile: {sent} hostile requests ({refused} refused, {closed} closes, {} not refused); \
         honest: {reads} reads, {wrong} wrong, {failed} failed",
        sent - refused - closed
    );
    assert!(reads > 1000, "the honest clients hardly ran: {tallies:?}");
    assert!(
        unrefused.is_empty(),
        "hostile requests not refused: {unrefused:#?}"
    );
    assert_eq!((wrong, failed), (0, 0), "{tallies:?}");
    assert_eq!(
        setup.stat("cmd_flush"),
        flushes_before,
        "a flush_all reached memcached"
    );
    assert_eq!(setup.get("victim:0").as_deref(), Some(&b"secret"[..]));
    assert_eq!(
        probe.stat(&connects),
        connects_before,
        "the shared backend connection was reset"
    );
}
