//! The backend stream is trusted to nothing (SPEC §6b), through the real binary with a backend
//! that lies: a reply for another key, bytes written before any request, a value no item can
//! be. Each marks the connection out of sync: the requests in flight fail as errors (a get as a
//! miss), never as another request's answer, the next request gets a fresh connection, and the
//! event shows in `stats`, `/stats` and `/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::http::HttpClient;
use common::{assert_bytes, free_port, Behavior, Bifrost, BlindForward, FakeBackend};

/// A proxy in front of `fake` with the admin API; its admin address.
fn proxy(fake: &FakeBackend, timeout: &str) -> (Bifrost, String) {
    let admin = free_port();
    let bifrost = BlindForward::new(&fake.addr())
        .timeout(timeout)
        .top_level(&format!("admin: {{bind: '127.0.0.1:{admin}'}}"))
        .start();
    (bifrost, format!("127.0.0.1:{admin}"))
}

/// What an honest memcached holding every key with the value `ok` answers (`get`, `mg`).
fn honest(line: &str) -> Vec<u8> {
    let tokens: Vec<&str> = line.split(' ').collect();
    match tokens.as_slice() {
        ["get", keys @ ..] => {
            let mut reply = String::new();
            for key in keys {
                reply.push_str(&format!("VALUE {key} 0 2\r\nok\r\n"));
            }
            reply.push_str("END\r\n");
            reply.into_bytes()
        }
        ["mg", key, ..] => format!("VA 2 k{key}\r\nok\r\n").into_bytes(),
        ["version"] => b"VERSION 1.6.18\r\n".to_vec(),
        _ => b"ERROR\r\n".to_vec(),
    }
}

/// The proxy's `backend_out_of_sync`, read the three ways: `stats`, `/stats` and `/metrics`,
/// which must agree.
fn out_of_sync(bifrost: &Bifrost, admin: &str) -> u64 {
    let by_stats = bifrost.client().stat("backend_out_of_sync");
    let mut http = HttpClient::connect(admin);
    let doc = http.get("/stats").json();
    let by_json = doc["counters"]["backend_out_of_sync"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counters.backend_out_of_sync in /stats: {doc}"));
    let metrics = http.get("/metrics").text();
    let by_metrics: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bifrost_backend_out_of_sync_total "))
        .unwrap_or_else(|| panic!("no bifrost_backend_out_of_sync_total in /metrics:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(
        (by_stats, by_json),
        (by_metrics, by_metrics),
        "stats, /stats, /metrics"
    );
    by_stats
}

/// A single-key get answered with another key's value is a miss, never that value; so are a
/// multi-key get answered out of the order asked and an mg whose `k` names another key. Each
/// resets the connection (counted, logged); the next request gets its own answer on a fresh
/// connection.
#[test]
fn a_reply_for_another_key_is_a_miss_and_the_next_request_works() {
    let fake = FakeBackend::start(Behavior::Scripted {
        banner: |_| Vec::new(),
        answer: |_, line| match line {
            "get victim" => b"VALUE someone-else 0 6\r\nsecret\r\nEND\r\n".to_vec(),
            "get a b" => b"VALUE b 0 1\r\nB\r\nVALUE a 0 1\r\nA\r\nEND\r\n".to_vec(),
            "mg victim k v" => b"VA 6 ksomeone-else\r\nsecret\r\n".to_vec(),
            _ => honest(line),
        },
    });
    let (bifrost, admin) = proxy(&fake, "20s");
    let mut c = bifrost.client();
    let errors = c.stat("backend_errors");
    assert_eq!(out_of_sync(&bifrost, &admin), 0);

    let cases: [(&[u8], &[u8]); 3] = [
        (b"get victim\r\n", b"END\r\n"),
        (b"get a b\r\n", b"END\r\n"),
        (b"mg victim k v\r\n", b"EN\r\n"),
    ];
    for (i, (request, miss)) in cases.into_iter().enumerate() {
        c.send(request);
        let got = if miss == b"EN\r\n" {
            c.read_line_raw()
        } else {
            c.read_reply_retrieval()
        };
        assert_bytes(&got, miss, "a miss, never another key's value");
        // The next request goes out on a fresh connection and gets its own answer.
        c.send(b"get good\r\n");
        assert_bytes(
            &c.read_reply_retrieval(),
            b"VALUE good 0 2\r\nok\r\nEND\r\n",
            "the next request",
        );
        assert_eq!(
            fake.connections(),
            i + 2,
            "a fresh connection after each lie"
        );
        assert_eq!(out_of_sync(&bifrost, &admin), i as u64 + 1);
    }
    assert_eq!(c.stat("backend_errors"), errors + 3, "each lie is an error");
    let log = bifrost.stderr_log();
    assert!(
        log.contains("wrong_key") && log.contains("out of sync"),
        "logged:\n{log}"
    );
}

/// A backend that writes a reply before it is asked: whether those bytes are read before the
/// request is written (unsolicited) or after (they answer another key), the request never gets
/// them. Bytes written after the last reply, with nothing in flight, never reach the next
/// request either, even one that asks exactly the key they name.
#[test]
fn bytes_written_before_a_request_are_never_its_answer() {
    let fake = FakeBackend::start(Behavior::Scripted {
        // Only the first connection greets with a reply nobody asked for.
        banner: |n| {
            if n == 0 {
                b"VALUE stale 0 6\r\nbanner\r\nEND\r\n".to_vec()
            } else {
                Vec::new()
            }
        },
        // `get first` is answered, then a reply for `next` follows, unasked.
        answer: |_, line| match line {
            "get first" => b"END\r\nVALUE next 0 6\r\nstolen\r\nEND\r\n".to_vec(),
            _ => honest(line),
        },
    });
    let (bifrost, admin) = proxy(&fake, "20s");
    let mut c = bifrost.client();
    c.send(b"get k\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "the banner is not the reply to get k",
    );
    assert_eq!(out_of_sync(&bifrost, &admin), 1);

    c.send(b"get first\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get first");
    // At once: the stray reply is in the proxy before this request can be.
    c.send(b"get next\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"VALUE next 0 2\r\nok\r\nEND\r\n",
        "get next gets its own answer, never the bytes that came unasked",
    );
    assert_eq!(out_of_sync(&bifrost, &admin), 2);
    assert_eq!(fake.connections(), 3);
}

/// A `VALUE` announcing more bytes than any item can hold is refused from its header line:
/// the get fails as a miss at once, not when the (long) timeout fires.
#[test]
fn an_impossible_value_length_fails_fast_not_at_the_timeout() {
    let fake = FakeBackend::start(Behavior::Scripted {
        banner: |_| Vec::new(),
        answer: |_, line| match line {
            "get huge" => b"VALUE huge 0 4000000000\r\nxxxxxxxxxxxxxxxx".to_vec(),
            "mg huge v" => b"VA 4000000000\r\nxxxxxxxxxxxxxxxx".to_vec(),
            _ => honest(line),
        },
    });
    let (bifrost, admin) = proxy(&fake, "60s");
    let mut c = bifrost.client();
    let started = Instant::now();
    c.send(b"get huge\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get huge");
    c.send(b"mg huge v\r\n");
    assert_bytes(&c.read_line_raw(), b"EN\r\n", "mg huge v");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "failed after {took:?}: the 60 s timeout, not the header"
    );
    assert_eq!(out_of_sync(&bifrost, &admin), 2);
    c.send(b"get fine\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"VALUE fine 0 2\r\nok\r\nEND\r\n",
        "the next request",
    );
    let log = bifrost.stderr_log();
    assert!(log.contains("value_too_large"), "logged:\n{log}");
}

/// Honest replies pass: hits of a multi-key get in the order asked (misses left out), and an
/// mg that echoes its key; nothing is counted out of sync.
#[test]
fn honest_replies_are_never_counted_out_of_sync() {
    let fake = FakeBackend::start(Behavior::Scripted {
        banner: |_| Vec::new(),
        answer: |_, line| match line {
            "get a b c" => b"VALUE a 0 1\r\nA\r\nVALUE c 0 1\r\nC\r\nEND\r\n".to_vec(),
            _ => honest(line),
        },
    });
    let (bifrost, admin) = proxy(&fake, "20s");
    let mut c = bifrost.client();
    for _ in 0..20 {
        c.send(b"get a b c\r\nmg key k v\r\nget x\r\n");
        assert_bytes(
            &c.read_reply_retrieval(),
            b"VALUE a 0 1\r\nA\r\nVALUE c 0 1\r\nC\r\nEND\r\n",
            "get a b c",
        );
        assert_eq!(c.read_line(), "VA 2 kkey");
        assert_eq!(c.read_line(), "ok");
        assert_bytes(
            &c.read_reply_retrieval(),
            b"VALUE x 0 2\r\nok\r\nEND\r\n",
            "get x",
        );
    }
    assert_eq!(out_of_sync(&bifrost, &admin), 0);
    assert_eq!(fake.connections(), 1);
}

/// A `VALUE` whose flags are wider than memcached's 32 bits is no memcached reply (and a
/// warm_first write-back would copy the flags into an `add` that memcached refuses without
/// reading its data block): refused as out of sync, the get a miss, the next request served.
#[test]
fn a_value_with_flags_wider_than_32_bits_is_out_of_sync() {
    let fake = FakeBackend::start(Behavior::Scripted {
        banner: |_| Vec::new(),
        answer: |_, line| match line {
            "get wide" => b"VALUE wide 4294967296 9\r\nflush_all\r\nEND\r\n".to_vec(),
            _ => honest(line),
        },
    });
    let (bifrost, admin) = proxy(&fake, "20s");
    let mut c = bifrost.client();
    c.send(b"get wide\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get wide");
    assert_eq!(out_of_sync(&bifrost, &admin), 1);
    c.send(b"get fine\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"VALUE fine 0 2\r\nok\r\nEND\r\n",
        "the next request",
    );
}
