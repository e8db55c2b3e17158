//! The proxy against memcached itself, request for request (issue 14): random valid requests go
//! to a memcached through bifrost and to a twin memcached directly, in fenced batches, and every
//! reply must be the same byte for byte (cas values normalised); random hostile requests go
//! through bifrost only, and each must be refused with one error line (or a close) without
//! reaching its memcached, which the next batches and a final comparison of every key prove: a
//! smuggled `flush_all` or `set` would make the two memcacheds differ.
//!
//! Replay a failure with `DIFFERENTIAL_SEED=<seed> cargo test --test differential`.

mod common;

use common::lines::{
    hostile_request, is_one_error_line, valid_request, valid_request_with, Fenced, Refusal,
};
use common::{Bifrost, BlindForward, Memcached, Rng};

/// Batches per run, and requests per batch.
const BATCHES: usize = 1000;
const PER_BATCH: usize = 12;

/// `cas` values differ between two memcacheds as soon as one stored an item the other did not;
/// they are compared as the same token, `<cas>`.
fn normalise_cas(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.split("\r\n")
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words.first() {
                // VALUE <key> <flags> <bytes> <cas>
                Some(&"VALUE") if words.len() == 5 => {
                    format!("{} <cas>", words[..4].join(" "))
                }
                // Meta replies: the c flag's token.
                Some(&("HD" | "VA" | "EX" | "NF" | "NS" | "EN")) => words
                    .iter()
                    .map(|w| match w.strip_prefix('c') {
                        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                            "c<cas>".to_string()
                        }
                        _ => w.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn seed() -> u64 {
    std::env::var("DIFFERENTIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Sends one batch of `requests` through the proxy and to the twin: the replies must be the
/// same byte for byte (cas values normalised). Returns how many requests were compared.
fn same_replies(
    proxy: &mut Fenced,
    direct: &mut Fenced,
    requests: &[Vec<u8>],
    (seed, batch): (u64, usize),
) -> usize {
    let joined = requests.concat();
    let via = proxy
        .exchange(&joined)
        .expect("the proxy closed on valid requests");
    let want = direct
        .exchange(&joined)
        .expect("memcached closed on valid requests");
    assert_eq!(
        normalise_cas(&via),
        normalise_cas(&want),
        "seed {seed}, batch {batch}: replies differ for\n{}",
        String::from_utf8_lossy(&joined)
    );
    requests.len()
}

/// Every key of the key space, read from both sides in one `gets`: the two memcacheds hold the
/// same items (a hostile request that reached its memcached would show here).
fn same_items(proxy: &mut Fenced, direct: &mut Fenced, seed: u64, when: &str) {
    let keys: Vec<String> = (0..24)
        .map(|i| format!("k{i}"))
        .chain((0..6).map(|i| format!("n{i}")))
        .collect();
    let all = format!("gets {}\r\n", keys.join(" "));
    let via = proxy.exchange(all.as_bytes()).expect("proxy open");
    let want = direct.exchange(all.as_bytes()).expect("memcached open");
    assert_eq!(
        normalise_cas(&via),
        normalise_cas(&want),
        "seed {seed}: the memcached behind the proxy and its twin hold different items {when}"
    );
}

#[test]
fn valid_requests_answer_as_memcached_does_and_hostile_ones_never_reach_it() {
    let seed = seed();
    eprintln!("DIFFERENTIAL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let behind = Memcached::start();
    let twin = Memcached::start();
    let bifrost = BlindForward::new(&behind.addr()).workers(1).start();
    let mut proxy = Fenced::connect(&bifrost.addr());
    let mut direct = Fenced::connect(&twin.addr());
    let (mut valid, mut hostile, mut closes) = (0usize, 0usize, 0usize);
    for batch in 0..BATCHES {
        let requests: Vec<Vec<u8>> = (0..PER_BATCH).map(|_| valid_request(&mut rng)).collect();
        valid += same_replies(&mut proxy, &mut direct, &requests, (seed, batch));
        // A hostile request or two, through the proxy only.
        for _ in 0..rng.range(1, 2) {
            let (request, refusal) = hostile_request(&mut rng);
            hostile += 1;
            match refusal {
                Refusal::ErrorLine => {
                    let reply = proxy.exchange(&request).expect("the proxy closed");
                    assert!(
                        is_one_error_line(&reply),
                        "seed {seed}: {:?} got {:?}",
                        String::from_utf8_lossy(&request),
                        String::from_utf8_lossy(&reply)
                    );
                }
                Refusal::Close => {
                    assert_eq!(
                        proxy.exchange(&request),
                        None,
                        "seed {seed}: {:?} must close the connection",
                        String::from_utf8_lossy(&request)
                    );
                    closes += 1;
                    proxy = Fenced::connect(&bifrost.addr());
                }
            }
        }
        if batch % 50 == 49 {
            same_items(
                &mut proxy,
                &mut direct,
                seed,
                &format!("after batch {batch}"),
            );
        }
    }
    same_items(&mut proxy, &mut direct, seed, "at the end");
    // Nothing hostile reached the memcached behind the proxy: it ran as many commands as its
    // twin (plus the proxy's own connection's nothing: no health checks are configured).
    let counts = |mc: &Memcached| {
        let mut c = mc.client();
        [
            "cmd_get",
            "cmd_set",
            "cmd_flush",
            "cmd_touch",
            "delete_hits",
            "delete_misses",
        ]
        .map(|name| (name, c.stat(name)))
    };
    assert_eq!(counts(&behind), counts(&twin), "seed {seed}");
    assert_eq!(
        counts(&behind)[2].1,
        0,
        "seed {seed}: a flush_all reached memcached"
    );
    eprintln!(
        "differential: {valid} valid requests compared, 0 mismatches; {hostile} hostile \
         requests refused ({closes} closes)"
    );
}

/// The same through a consistent_hash pool of two memcacheds against one twin holding
/// everything: multi-gets are split between the two servers and merged, and every reply must
/// still be what one memcached gives (requests that compare cas uniques are left out: a pool
/// counts them per server).
#[test]
fn a_pool_of_two_answers_as_one_memcached_does() {
    let seed = seed();
    eprintln!("DIFFERENTIAL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let (a, b) = (Memcached::start(), Memcached::start());
    let twin = Memcached::start();
    let bifrost = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: '127.0.0.1:{port}'}}]\n\
                 backends:\n  pool: {{servers: ['{}', '{}'], distribution: ketama, hash: md5}}\n\
                 routes: [{{name: all, match: '*', strategy: consistent_hash, backend: pool}}]\n",
                a.addr(),
                b.addr()
            )
        },
        &[],
    );
    let mut proxy = Fenced::connect(&bifrost.addr());
    let mut direct = Fenced::connect(&twin.addr());
    let mut valid = 0;
    for batch in 0..BATCHES / 2 {
        let requests: Vec<Vec<u8>> = (0..PER_BATCH)
            .map(|_| valid_request_with(&mut rng, false))
            .collect();
        valid += same_replies(&mut proxy, &mut direct, &requests, (seed, batch));
    }
    same_items(&mut proxy, &mut direct, seed, "at the end");
    // Both servers of the pool took part.
    for server in [&a, &b] {
        assert!(
            server.client().stat("cmd_set") > 0,
            "seed {seed}: a server got no set"
        );
    }
    eprintln!("differential, pool of two: {valid} valid requests compared, 0 mismatches");
}
