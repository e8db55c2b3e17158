//! End-to-end tests of HTTP origins as backends (SPEC §13), through the binary: a real nginx
//! serving a directory (plain, and with WebDAV `PUT`/`DELETE` for `writes: true`), a real
//! memcached as warm tier, and a fake origin only for what nginx cannot be made to do (answer
//! slowly or never, 5xx, garbage, close mid-body, a body over the limit, close after a few
//! requests, hold its answers so a herd piles up).

mod common;

use common::origin::{FakeOrigin, Nginx, OriginBehavior};
use common::tiers::{meta, start_proxy, ttl_of};
use common::{wait_until, Bifrost, Client, Memcached};
use std::time::{Duration, Instant};

/// How long a background write-back may take to land.
const LANDED: Duration = Duration::from_secs(5);

/// A warm_first route over memcached `warm` and origin `url` (read-only unless `writes`), with
/// `write_on_miss: { ttl: 300 }`, `workers` workers, and `extra` appended to the origin's pool.
fn read_through(workers: usize, warm: &str, url: &str, extra: &str) -> Bifrost {
    let backends = format!(
        "  warm:\n    servers: [\"{warm}\"]\n    timeout: 2s\n\
         \x20 origin:\n    servers: [\"{url}\"]\n    timeout: 2s\n{extra}"
    );
    let routes = "  - name: users\n    match: \"*\"\n    strategy: warm_first\n    warm: warm\n\
                  \x20   cold: origin\n    write_on_miss: { ttl: 300 }\n";
    start_proxy(workers, &backends, routes, "")
}

/// A consistent_hash route over the origin pool `urls` alone, with `extra` in its pool.
fn direct(urls: &[String], extra: &str) -> Bifrost {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let timeout = match extra.contains("timeout:") {
        true => "",
        false => "    timeout: 2s\n",
    };
    let backends = format!(
        "  origin:\n    servers: [{}]\n{timeout}{extra}",
        list.join(", ")
    );
    let routes =
        "  - name: direct\n    match: \"*\"\n    strategy: consistent_hash\n    backend: origin\n";
    start_proxy(1, &backends, routes, "")
}

fn get_line(c: &mut Client, keys: &str) -> Vec<u8> {
    c.send(format!("get {keys}\r\n").as_bytes());
    c.read_reply_retrieval()
}

#[test]
fn nginx_behind_warm_first_is_a_read_through_cache_with_the_origins_ttl_and_writes_stay_in_warm() {
    let nginx = Nginx::builder().max_age(Some(60)).start();
    nginx.put_file("user:1", b"{\"name\":\"ann\"}");
    nginx.put_file("odd%key+x", b"odd");
    let warm = Memcached::start();
    let bifrost = read_through(1, &warm.addr(), &nginx.base_url(), "");
    let mut c = bifrost.client();
    let mut w = warm.client();

    assert_eq!(c.get("user:1").as_deref(), Some(&b"{\"name\":\"ann\"}"[..]));
    assert_eq!(c.get("nope"), None, "a 404 is a miss");
    assert_eq!(
        c.get("odd%key+x").as_deref(),
        Some(&b"odd"[..]),
        "keys are percent-encoded"
    );
    wait_until(LANDED, "user:1 written back into warm", || {
        w.get("user:1").is_some()
    });
    let ttl = ttl_of(&mut w, "user:1");
    assert!(
        (1..=60).contains(&ttl),
        "the copy lives no longer than the origin's max-age (60), not write_on_miss's 300: {ttl}"
    );
    let logged = nginx.request_count();
    assert_eq!(c.get("user:1").as_deref(), Some(&b"{\"name\":\"ann\"}"[..]));
    assert_eq!(
        nginx.request_count(),
        logged,
        "a warm hit does not reach the origin"
    );

    // A multi-get over hits and misses of both tiers, answered in the asked order.
    let reply = get_line(&mut c, "nope user:1 odd%key+x nope2");
    assert_eq!(
        reply,
        b"VALUE user:1 0 14\r\n{\"name\":\"ann\"}\r\nVALUE odd%key+x 0 3\r\nodd\r\nEND\r\n"
    );
    let (line, value) = meta(&mut c, "mg user:1 v t f s");
    assert!(line.starts_with("VA 14 "), "{line}");
    assert_eq!(value.as_deref(), Some(&b"{\"name\":\"ann\"}"[..]));

    // The origin is read-only: writes and deletes go to warm alone.
    assert_eq!(c.set("user:1", b"local", 3, 0), "STORED");
    assert_eq!(
        nginx.file("user:1").as_deref(),
        Some(&b"{\"name\":\"ann\"}"[..])
    );
    assert_eq!(c.get("user:1").as_deref(), Some(&b"local"[..]));
    assert_eq!(c.delete("user:1"), "DELETED");
    assert_eq!(c.delete("user:1"), "NOT_FOUND", "warm's answer");
    assert!(
        nginx.file("user:1").is_some(),
        "the origin is written by its owner"
    );
    assert_eq!(
        c.get("user:1").as_deref(),
        Some(&b"{\"name\":\"ann\"}"[..]),
        "read through again after the delete"
    );
    let methods = nginx.access_log();
    assert!(
        !methods.contains("PUT ") && !methods.contains("DELETE "),
        "{methods}"
    );
    // CAS reads go through warm (an origin has no CAS) and cas writes to warm alone.
    wait_until(LANDED, "user:1 back in warm", || w.get("user:1").is_some());
    let (_, cas) = c.gets("user:1").expect("a hit");
    assert_ne!(cas, 0, "warm's CAS");
    let reply = c.request(format!("cas user:1 0 0 2 {cas}\r\nv2\r\n").as_bytes());
    assert_eq!(reply, b"STORED\r\n");
    assert_eq!(
        c.request(b"incr n 1\r\n"),
        b"NOT_FOUND\r\n",
        "warm's answer"
    );
}

#[test]
fn an_origin_with_writes_takes_put_and_delete_and_refuses_what_it_cannot_do() {
    let nginx = Nginx::builder().writable(true).start();
    let bifrost = direct(&[nginx.base_url()], "    writes: true\n");
    let mut c = bifrost.client();
    assert_eq!(c.set("k1", b"hello", 0, 100), "STORED");
    assert_eq!(nginx.file("k1").as_deref(), Some(&b"hello"[..]));
    assert_eq!(c.get("k1").as_deref(), Some(&b"hello"[..]));
    c.send(b"set k2 0 0 3 noreply\r\nabc\r\nget k2\r\n");
    assert_eq!(c.read_reply_retrieval(), b"VALUE k2 0 3\r\nabc\r\nEND\r\n");
    assert_eq!(c.request(b"ms k3 2 T0\r\nhi\r\n"), b"HD\r\n");
    let (line, value) = meta(&mut c, "mg k3 v");
    assert_eq!(
        (line.as_str(), value.as_deref()),
        ("VA 2", Some(&b"hi"[..]))
    );
    assert_eq!(c.delete("k1"), "DELETED");
    assert_eq!(nginx.file("k1"), None);
    assert_eq!(c.delete("k1"), "NOT_FOUND");
    assert_eq!(c.request(b"md k3 q\r\nmn\r\n"), b"MN\r\n");
    assert_eq!(nginx.file("k3"), None);
    for (request, reason) in [
        (&b"add k4 0 0 1\r\nx\r\n"[..], "not supported"),
        (b"incr k2 1\r\n", "not supported"),
        (b"touch k2 10\r\n", "not supported"),
        (b"ms k2 1 C5\r\nx\r\n", "not supported"),
    ] {
        let reply = String::from_utf8(c.request(request)).expect("text");
        assert!(
            reply.starts_with("SERVER_ERROR") && reply.contains(reason),
            "{}: {reply}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(
        c.get("k2").as_deref(),
        Some(&b"abc"[..]),
        "the connection goes on"
    );
}

#[test]
fn a_read_only_origin_refuses_writes_by_name() {
    let nginx = Nginx::start();
    nginx.put_file("k", b"v");
    let bifrost = direct(&[nginx.base_url()], "");
    let mut c = bifrost.client();
    let reply = c.set("k", b"x", 0, 0);
    assert!(
        reply.starts_with("SERVER_ERROR") && reply.contains("read-only"),
        "{reply}"
    );
    assert!(c.delete("k").contains("read-only"));
    assert_eq!(c.get("k").as_deref(), Some(&b"v"[..]));
    assert!(!nginx.access_log().contains("PUT "), "nothing was sent");
}

#[test]
fn flags_and_max_age_come_from_the_origins_headers_and_chunked_bodies_are_read_whole() {
    let origin = FakeOrigin::start(OriginBehavior::Chunked);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    origin.insert(b"small", b"abc", Some(42), Some(7));
    origin.insert(b"big", &big, None, None);
    origin.insert("k\u{e9} y".as_bytes(), b"spaced", None, None);
    let warm = Memcached::start();
    let bifrost = read_through(1, &warm.addr(), &origin.base_url(), "");
    let mut c = bifrost.client();
    let mut w = warm.client();
    c.send(b"get small\r\n");
    let items = c.read_values().expect("values");
    assert_eq!(
        (items[0].flags, items[0].data.as_slice()),
        (42, &b"abc"[..])
    );
    assert_eq!(c.get("big").as_deref(), Some(&big[..]));
    wait_until(LANDED, "small in warm", || w.get("small").is_some());
    let ttl = ttl_of(&mut w, "small");
    assert!((1..=7).contains(&ttl), "capped by max-age=7: {ttl}");
    // A key only meta's base64 can carry reaches the origin as its bytes.
    let key = common::lines::base64("k\u{e9} y".as_bytes());
    let (line, value) = meta(&mut c, &format!("mg {key} b v f"));
    assert!(line.starts_with("VA 6"), "{line}");
    assert_eq!(value.as_deref(), Some(&b"spaced"[..]));
    assert_eq!(origin.requests_for("k\u{e9} y".as_bytes()), 1);
}

#[test]
fn a_herd_of_misses_on_one_worker_is_one_origin_request() {
    let origin = FakeOrigin::start(OriginBehavior::Serve);
    origin.insert(b"hot", b"value", None, None);
    origin.hold();
    let warm = Memcached::start();
    let bifrost = read_through(1, &warm.addr(), &origin.base_url(), "");
    let mut clients: Vec<Client> = (0..50).map(|_| bifrost.client()).collect();
    for c in &mut clients {
        c.send(b"get hot\r\n");
    }
    origin.wait_for_requests(1, Duration::from_secs(5));
    let mut admin = bifrost.client();
    wait_until(
        Duration::from_secs(5),
        "all 50 gets read by the proxy",
        || admin.stat("cmd_get") >= 50,
    );
    // Each get misses warm, then waits on the origin, which holds its answer.
    wait_until(Duration::from_secs(5), "every read at the origin", || {
        coalesced(&bifrost) >= 49
    });
    origin.release();
    for c in &mut clients {
        assert_eq!(
            c.read_reply_retrieval(),
            b"VALUE hot 0 5\r\nvalue\r\nEND\r\n"
        );
    }
    assert_eq!(origin.requests_for(b"hot"), 1, "{:?}", origin.methods());
    assert_eq!(coalesced(&bifrost), 49);
}

/// The proxy's `coalesced_reads` of its origins (`stats`, summed over its origins).
fn coalesced(bifrost: &Bifrost) -> u64 {
    let mut c = bifrost.client();
    c.stats()
        .iter()
        .filter(|(name, _)| name.ends_with(":coalesced_reads"))
        .map(|(_, v)| v.parse::<u64>().expect("a number"))
        .sum()
}

#[test]
fn failures_of_the_origin_are_misses_or_errors_and_fail_over_to_the_next_origin() {
    for (behavior, what) in [
        (OriginBehavior::Status(500), "a 500"),
        (OriginBehavior::Garbage, "garbage"),
        (OriginBehavior::CloseMidBody, "a close mid-body"),
        (
            OriginBehavior::Oversize(2 << 20),
            "a body over max_value_size",
        ),
        (OriginBehavior::NeverAnswer, "no answer"),
    ] {
        let bad = FakeOrigin::start(behavior);
        let good = FakeOrigin::start(OriginBehavior::Serve);
        good.insert(b"k", b"good", None, None);
        bad.insert(b"k", b"bad", None, None);
        // Alone: a read that fails is a miss, quickly.
        let alone = direct(
            &[bad.base_url()],
            "    timeout: 300ms\n    max_value_size: 1MiB\n",
        );
        let mut c = alone.client();
        let started = Instant::now();
        assert_eq!(c.get("k"), None, "{what}");
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
        assert!(c.stat("backend_errors") >= 1, "{what}: counted");
        // Behind a failover route: the next origin answers.
        let backends = format!(
            "  first:\n    servers: [\"{}\"]\n    timeout: 300ms\n\
             \x20 second:\n    servers: [\"{}\"]\n    timeout: 2s\n",
            bad.base_url(),
            good.base_url()
        );
        let routes = "  - name: f\n    match: \"*\"\n    strategy: failover\n    backends: [first, second]\n";
        let failover = start_proxy(1, &backends, routes, "");
        assert_eq!(
            failover.client().get("k").as_deref(),
            Some(&b"good"[..]),
            "{what}"
        );
    }
}

#[test]
fn a_value_over_the_limit_fails_that_read_and_the_connection_goes_on() {
    let origin = FakeOrigin::start(OriginBehavior::Oversize(64 * 1024));
    let bifrost = direct(&[origin.base_url()], "    max_value_size: 1KiB\n");
    let mut c = bifrost.client();
    assert_eq!(c.get("k"), None);
    origin.set_behavior(OriginBehavior::Serve);
    origin.insert(b"k", b"fits", None, None);
    assert_eq!(c.get("k").as_deref(), Some(&b"fits"[..]));
    assert_eq!(
        origin.connections(),
        1,
        "the body was skipped, not the connection"
    );
}

#[test]
fn an_origin_that_closes_after_a_few_requests_loses_none_of_the_pipelined_ones() {
    let origin = FakeOrigin::start(OriginBehavior::CloseAfter(3));
    for i in 0..40 {
        origin.insert(
            format!("k{i}").as_bytes(),
            format!("v{i}").as_bytes(),
            None,
            None,
        );
    }
    let bifrost = direct(&[origin.base_url()], "");
    let mut c = bifrost.client();
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend_from_slice(format!("get k{i}\r\n").as_bytes());
    }
    c.send(&batch);
    for i in 0..40 {
        let want = format!("VALUE k{i} 0 {}\r\nv{i}\r\nEND\r\n", format!("v{i}").len());
        assert_eq!(c.read_reply_retrieval(), want.as_bytes(), "get k{i}");
    }
    assert!(
        origin.connections() >= 14,
        "{} connections",
        origin.connections()
    );
    assert_eq!(c.stat("backend_errors"), 0);

    // nginx's own request limit per connection, the same way.
    let nginx = Nginx::builder().keepalive_requests(5).start();
    for i in 0..40 {
        nginx.put_file(&format!("n{i}"), format!("w{i}").as_bytes());
    }
    let bifrost = direct(&[nginx.base_url()], "");
    let mut c = bifrost.client();
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend_from_slice(format!("get n{i}\r\n").as_bytes());
    }
    c.send(&batch);
    for i in 0..40 {
        let want = format!("VALUE n{i} 0 {}\r\nw{i}\r\nEND\r\n", format!("w{i}").len());
        assert_eq!(c.read_reply_retrieval(), want.as_bytes(), "get n{i}");
    }
    assert_eq!(c.stat("backend_errors"), 0);
}

#[test]
fn a_dead_origin_is_marked_down_by_its_probes_and_comes_back() {
    let mut nginx = Nginx::start();
    nginx.put_file("k", b"v");
    let health =
        "    health: { interval: 100ms, timeout: 200ms, failure_limit: 2, retry_after: 100ms }\n";
    let bifrost = direct(&[nginx.base_url()], health);
    let mut c = bifrost.client();
    assert_eq!(c.get("k").as_deref(), Some(&b"v"[..]));
    nginx.kill();
    wait_until(Duration::from_secs(5), "the origin marked down", || {
        c.request(b"set x 0 0 1\r\nx\r\n")
            .starts_with(b"SERVER_ERROR backend down")
    });
    nginx.restart();
    wait_until(Duration::from_secs(5), "the origin back", || {
        c.get("k").as_deref() == Some(&b"v"[..])
    });
}

#[test]
fn configs_that_misuse_an_origin_are_refused_with_the_reason() {
    let cases = [
        (
            "  mixed:\n    servers: [\"127.0.0.1:11211\", \"http://127.0.0.1:8080/\"]\n",
            "all memcached servers or all HTTP origins",
        ),
        (
            "  mixed:\n    servers: [\"127.0.0.1:11211\"]\n    writes: true\n",
            "HTTP origins (http://...) only",
        ),
        (
            "  mixed:\n    servers: [\"https://127.0.0.1:8443/\"]\n",
            "https origins are not supported",
        ),
        (
            "  mixed:\n    servers: [\"http://127.0.0.1:8080/a?b\"]\n",
            "no query",
        ),
    ];
    for (backends, message) in cases {
        let yaml = format!(
            "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\nbackends:\n{backends}\
             routes:\n  - name: r\n    match: \"*\"\n    strategy: consistent_hash\n    backend: mixed\n"
        );
        let outcome = Bifrost::check(&yaml);
        assert!(
            !outcome.status.success() && outcome.stderr.contains(message),
            "{message}: {}",
            outcome.stderr
        );
    }
    let warm_origin = "listeners: [{name: main, bind: \"127.0.0.1:0\"}]\nbackends:\n\
        \x20 o:\n    servers: [\"http://127.0.0.1:8080/\"]\n  m:\n    servers: [\"127.0.0.1:11211\"]\n\
        routes:\n  - name: r\n    match: \"*\"\n    strategy: warm_first\n    warm: o\n    cold: m\n";
    let outcome = Bifrost::check(warm_origin);
    assert!(
        !outcome.status.success() && outcome.stderr.contains("warm tier must be memcached"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn binary_clients_read_through_an_origin_and_their_gets_fill_warm() {
    use common::binary::BinaryClient;
    let nginx = Nginx::builder().max_age(Some(60)).start();
    nginx.put_file("bin:1", b"from the origin");
    let warm = Memcached::start();
    let bifrost = read_through(1, &warm.addr(), &nginx.base_url(), "");
    let mut b = BinaryClient::connect(&bifrost.addr());
    assert_eq!(b.get(b"bin:1").as_deref(), Some(&b"from the origin"[..]));
    assert_eq!(b.get(b"bin:none"), None);
    // A binary Get asks for a CAS: with an origin as cold it reads through warm (the origin has
    // none), so the value lands in warm and the next Get is warm's.
    let mut w = warm.client();
    wait_until(LANDED, "bin:1 written back into warm", || {
        w.get("bin:1").is_some()
    });
    let mut c = bifrost.client();
    let before = origin_requests(&mut c);
    assert_eq!(b.get(b"bin:1").as_deref(), Some(&b"from the origin"[..]));
    assert_eq!(origin_requests(&mut c), before, "a warm hit");
}

/// Requests the proxy sent to its origins (`stats`: `server:http://...:requests`, summed).
fn origin_requests(c: &mut Client) -> u64 {
    c.stats()
        .iter()
        .filter(|(name, _)| name.starts_with("server:http://") && name.ends_with(":requests"))
        .map(|(_, v)| v.parse::<u64>().expect("a number"))
        .sum()
}

#[test]
fn with_leases_a_herd_over_two_proxies_is_one_origin_request() {
    let origin = FakeOrigin::start(OriginBehavior::Slow(Duration::from_millis(300)));
    origin.insert(b"hot", b"value", None, Some(9));
    let warm = Memcached::start();
    let leases = "  - name: users\n    match: \"*\"\n    strategy: warm_first\n    warm: warm\n\
                  \x20   cold: origin\n    write_on_miss: { ttl: 300 }\n    leases: {}\n";
    let backends = format!(
        "  warm:\n    servers: [\"{}\"]\n    timeout: 2s\n\
         \x20 origin:\n    servers: [\"{}\"]\n    timeout: 2s\n",
        warm.addr(),
        origin.base_url()
    );
    let proxies = [
        start_proxy(2, &backends, leases, ""),
        start_proxy(2, &backends, leases, ""),
    ];
    let mut clients: Vec<Client> = (0..40).map(|i| proxies[i % 2].client()).collect();
    for c in &mut clients {
        c.send(b"get hot\r\n");
    }
    for c in &mut clients {
        assert_eq!(
            c.read_reply_retrieval(),
            b"VALUE hot 0 5\r\nvalue\r\nEND\r\n"
        );
    }
    let mut w = warm.client();
    wait_until(LANDED, "the lease holder's copy in warm", || {
        w.get("hot").is_some()
    });
    let ttl = ttl_of(&mut w, "hot");
    assert!(
        (1..=9).contains(&ttl),
        "the lease holder's copy lives no longer than the origin's max-age (9): {ttl}"
    );
    assert_eq!(
        origin.requests_for(b"hot"),
        1,
        "one lease holder across both proxies reads the origin: {:?}",
        origin.methods()
    );
}

#[test]
fn metrics_count_each_origins_responses_by_class_and_its_coalesced_reads() {
    use common::http::HttpClient;
    use common::{free_port, promtool_check};
    let origin = FakeOrigin::start(OriginBehavior::Serve);
    origin.insert(b"hit", b"v", None, None);
    let url = origin.base_url();
    let mut admin = 0;
    let bifrost = Bifrost::start_templated(
        |port| {
            admin = free_port();
            format!(
                "workers: 1\nadmin: {{bind: '127.0.0.1:{admin}'}}\n\
                 listeners: [{{name: main, bind: '127.0.0.1:{port}'}}]\n\
                 backends:\n  origin:\n    servers: ['{url}']\n\
                 routes: [{{name: r, match: '*', strategy: consistent_hash, backend: origin}}]\n"
            )
        },
        &[],
    );
    let mut c = bifrost.client();
    // Two pipelined reads of one key share one GET; a miss is a 404.
    c.send(b"get hit\r\nget hit\r\nget nope\r\n");
    for want in [
        &b"VALUE hit 0 1\r\nv\r\nEND\r\n"[..],
        b"VALUE hit 0 1\r\nv\r\nEND\r\n",
        b"END\r\n",
    ] {
        assert_eq!(c.read_reply_retrieval(), want);
    }
    assert_eq!(origin.requests(), 2);
    let mut http = HttpClient::connect(&format!("127.0.0.1:{admin}"));
    let text = http.request("GET", "/metrics", &[], b"").text();
    promtool_check(&text);
    let labels = format!("backend=\"origin\",server=\"{url}\"");
    for (sample, value) in [
        (
            format!("bifrost_origin_responses_total{{{labels},class=\"2xx\"}}"),
            1,
        ),
        (
            format!("bifrost_origin_responses_total{{{labels},class=\"4xx\"}}"),
            1,
        ),
        (
            format!("bifrost_origin_responses_total{{{labels},class=\"5xx\"}}"),
            0,
        ),
        (
            format!("bifrost_origin_coalesced_reads_total{{{labels}}}"),
            1,
        ),
        (format!("bifrost_server_requests_total{{{labels}}}"), 3),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{sample} {value}")),
            "{sample} {value} not in:\n{text}"
        );
    }
}

#[test]
fn a_multi_get_of_many_origin_keys_streams_every_value_in_the_asked_order() {
    let origin = FakeOrigin::start(OriginBehavior::Chunked);
    let mut want = Vec::new();
    let mut keys = Vec::new();
    for i in 0..150 {
        let key = format!("m{i}");
        // Every third key is missing; values of different sizes, some big.
        if i % 3 != 0 {
            let value: Vec<u8> = (0..(i * 997) % 70_000 + 1)
                .map(|j| (j * 7 + i) as u8)
                .collect();
            origin.insert(key.as_bytes(), &value, Some(i as u32), None);
            want.extend_from_slice(format!("VALUE {key} {i} {}\r\n", value.len()).as_bytes());
            want.extend_from_slice(&value);
            want.extend_from_slice(b"\r\n");
        }
        keys.push(key);
    }
    want.extend_from_slice(b"END\r\n");
    let bifrost = direct(&[origin.base_url()], "");
    let mut c = bifrost.client();
    for _ in 0..2 {
        // Twice: the second time on a connection that has carried 150 requests already.
        let got = get_line(&mut c, &keys.join(" "));
        assert!(got == want, "{} bytes, want {}", got.len(), want.len());
    }
}

#[test]
fn warm_first_over_an_origin_with_writes_puts_sets_and_deletes_and_keeps_other_writes_in_warm() {
    let nginx = Nginx::builder().writable(true).start();
    let warm = Memcached::start();
    let bifrost = read_through(1, &warm.addr(), &nginx.base_url(), "    writes: true\n");
    let mut c = bifrost.client();
    let mut w = warm.client();
    assert_eq!(c.set("k", b"v1", 0, 0), "STORED");
    assert_eq!(nginx.file("k").as_deref(), Some(&b"v1"[..]), "set is a PUT");
    assert_eq!(w.get("k").as_deref(), Some(&b"v1"[..]), "and reaches warm");
    // `add` and `append` mean nothing to an origin: warm alone answers them.
    assert_eq!(c.store("add", "n", b"x", 0, 0), "STORED");
    assert_eq!(c.store("append", "k", b"+", 0, 0), "STORED");
    assert_eq!(nginx.file("n"), None);
    assert_eq!(nginx.file("k").as_deref(), Some(&b"v1"[..]));
    assert_eq!(w.get("k").as_deref(), Some(&b"v1+"[..]));
    assert_eq!(c.delete("k"), "DELETED");
    assert_eq!(nginx.file("k"), None, "delete is a DELETE");
    assert_eq!(w.get("k"), None);
}
