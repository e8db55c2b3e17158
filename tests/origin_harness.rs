//! Tests of the HTTP-origin harness itself (tests/common/origin.rs): the real nginx and the fake
//! origin, talked to over raw sockets. Bifrost is not started here.

mod common;

use common::origin::{cache_path, percent_decode, percent_encode, OriginClient, ORIGIN_GARBAGE};
use common::{FakeOrigin, Nginx, OriginBehavior};
use std::ffi::OsStr;
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// `GET /cache/KEY` pipelined requests for `keys`, in one write.
fn pipelined_gets(keys: &[&[u8]]) -> Vec<u8> {
    keys.iter()
        .flat_map(|k| format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", cache_path(k)).into_bytes())
        .collect()
}

#[test]
fn percent_encoding_round_trips_any_bytes() {
    let key: Vec<u8> = (0..=255u8).collect();
    let encoded = percent_encode(&key);
    assert!(encoded.is_ascii() && !encoded.contains(['/', '?', '#', ' ', ':']));
    assert_eq!(percent_decode(encoded.as_bytes()), key);
    assert_eq!(percent_encode(b"user:1"), "user%3A1");
    assert_eq!(percent_decode(b"100%25%zz%4"), b"100%%zz%4");
}

#[test]
fn nginx_put_get_delete_over_a_raw_socket() {
    let nginx = Nginx::builder().writable(true).start();
    assert_eq!(
        nginx.base_url(),
        format!("http://127.0.0.1:{}/cache/", nginx.port())
    );
    let mut c = OriginClient::connect(&nginx.addr());
    let path = cache_path(b"user:1");
    assert_eq!(path, "/cache/user%3A1");

    // A new file is 201 Created; overwriting it is 204 No Content (with no Content-Length).
    let r = c.request("PUT", &path, &[], b"{\"id\":1}");
    assert_eq!(r.status, 201, "first PUT: {r:?}");
    assert_eq!(nginx.file("user:1").as_deref(), Some(&b"{\"id\":1}"[..]));
    let r = c.request("PUT", &path, &[], b"{\"id\":2}");
    assert_eq!(r.status, 204, "PUT over an existing file: {r:?}");
    assert_eq!(r.header("Content-Length"), None);
    assert_eq!(nginx.file("user:1").as_deref(), Some(&b"{\"id\":2}"[..]));

    let r = c.request("GET", &path, &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "{\"id\":2}"));
    assert_eq!(r.header("Cache-Control"), None, "no max_age configured");

    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(nginx.file("user:1"), None);
    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(r.status, 404);
    let r = c.request("GET", &path, &[], b"");
    assert_eq!(r.status, 404);

    // An empty value: PUT with Content-Length: 0 stores an empty file.
    let r = c.request("PUT", &cache_path(b"empty"), &[], b"");
    assert_eq!(r.status, 201);
    assert_eq!(nginx.file("empty").as_deref(), Some(&b""[..]));

    nginx.wait_for_requests(7, WAIT);
    assert_eq!(nginx.request_count(), 7, "log:\n{}", nginx.access_log());
    assert_eq!(
        nginx.connections_logged(),
        1,
        "all on one keep-alive connection"
    );
    let log = nginx.access_log();
    for line in [
        "PUT /cache/user:1 201 ",
        "PUT /cache/user:1 204 ",
        "GET /cache/user:1 200 ",
        "DELETE /cache/user:1 204 ",
        "DELETE /cache/user:1 404 ",
        "GET /cache/user:1 404 ",
        "PUT /cache/empty 201 ",
    ] {
        assert!(log.contains(line), "no {line:?} in the access log:\n{log}");
    }
}

#[test]
fn nginx_serves_files_with_max_age_and_refuses_writes_when_read_only() {
    let nginx = Nginx::builder().max_age(Some(60)).start();
    nginx.put_file("greeting", b"hello");
    let mut c = OriginClient::connect(&nginx.addr());
    let r = c.get(b"greeting");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.header("Cache-Control"), Some("max-age=60"));
    // `always`: errors carry it too.
    let r = c.get(b"missing");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Cache-Control"), Some("max-age=60"));
    let r = c.request("PUT", &cache_path(b"greeting"), &[], b"x");
    assert_eq!(r.status, 405, "PUT without dav_methods: {r:?}");
    assert_eq!(nginx.file("greeting").as_deref(), Some(&b"hello"[..]));
    nginx.wait_for_requests(3, WAIT);
    assert_eq!(
        nginx.request_count(),
        3,
        "the readiness probe is not logged"
    );
}

#[test]
fn nginx_decodes_keys_into_file_names() {
    let nginx = Nginx::builder().writable(true).start();
    let mut c = OriginClient::connect(&nginx.addr());
    for key in [&b"a b?c#d"[..], b"100%", b"\xff\xfe", b"k+1", &[b'k'; 250]] {
        let r = c.request("PUT", &cache_path(key), &[], b"v");
        assert_eq!(r.status, 201, "PUT of {}: {r:?}", key.escape_ascii());
        let stored = std::fs::read(nginx.dir().join(OsStr::from_bytes(key))).ok();
        assert_eq!(stored.as_deref(), Some(&b"v"[..]), "{}", key.escape_ascii());
        let r = c.get(key);
        assert_eq!((r.status, r.text().as_str()), (200, "v"));
    }
    // What nginx cannot store as a key: a NUL byte is a 400 (and closes the connection).
    let r = OriginClient::connect(&nginx.addr()).request("PUT", &cache_path(b"a\0b"), &[], b"v");
    assert_eq!(r.status, 400);
}

#[test]
fn nginx_keepalive_requests_closes_after_the_nth_and_drops_the_pipelined_rest() {
    let nginx = Nginx::builder().keepalive_requests(2).start();
    nginx.put_file("a", b"A");
    nginx.put_file("b", b"B");
    let mut c = OriginClient::connect(&nginx.addr());
    c.send(&pipelined_gets(&[b"a", b"b", b"a"]));
    let first = c.read_response("GET");
    assert_eq!((first.status, first.text().as_str()), (200, "A"));
    assert!(!first.closes(), "{first:?}");
    let second = c.read_response("GET");
    assert_eq!((second.status, second.text().as_str()), (200, "B"));
    assert!(
        second.closes(),
        "the 2nd of keepalive_requests 2: {second:?}"
    );
    c.expect_closed();
    // nginx logs the last request once its lingering close ends: when the client closes (or
    // after lingering_timeout, 5 s).
    drop(c);
    nginx.wait_for_requests(2, WAIT);
    assert_eq!(nginx.request_count(), 2, "log:\n{}", nginx.access_log());
}

#[test]
fn nginx_restarts_on_its_port_with_its_files() {
    let mut nginx = Nginx::start();
    nginx.put_file("k", b"v");
    let port = nginx.port();
    nginx.kill();
    assert!(!nginx.is_running());
    assert!(
        TcpStream::connect(nginx.addr()).is_err(),
        "killed nginx still accepts"
    );
    nginx.restart();
    assert_eq!(nginx.port(), port);
    let r = OriginClient::connect(&nginx.addr()).get(b"k");
    assert_eq!((r.status, r.text().as_str()), (200, "v"));
}

#[test]
fn nginx_removes_its_directory_on_drop() {
    let nginx = Nginx::start();
    let prefix = nginx.prefix().to_path_buf();
    assert!(nginx.dir().starts_with(&prefix) && nginx.dir().is_dir());
    let pid = nginx.pid();
    drop(nginx);
    assert!(!prefix.exists(), "{} left behind", prefix.display());
    // SAFETY: kill with signal 0 only checks whether the pid exists.
    assert_ne!(
        unsafe { libc::kill(pid as libc::pid_t, 0) },
        0,
        "nginx {pid} survived"
    );
}

#[test]
fn fake_origin_answers_pipelined_gets_in_order_with_flags_and_max_age() {
    let fake = FakeOrigin::start(OriginBehavior::Serve);
    fake.insert(b"k1", b"one", Some(42), Some(30));
    fake.insert(b"k2", b"two", None, None);
    let mut c = OriginClient::connect(&fake.addr());
    c.send(&pipelined_gets(&[b"k1", b"k2", b"nope"]));
    let r = c.read_response("GET");
    assert_eq!((r.status, r.text().as_str()), (200, "one"));
    assert_eq!(r.header("Bifrost-Flags"), Some("42"));
    assert_eq!(r.header("Cache-Control"), Some("max-age=30"));
    let r = c.read_response("GET");
    assert_eq!((r.status, r.text().as_str()), (200, "two"));
    assert_eq!(
        (r.header("Bifrost-Flags"), r.header("Cache-Control")),
        (None, None)
    );
    let r = c.read_response("GET");
    assert_eq!(r.status, 404);
    assert_eq!(fake.methods(), ["GET k1", "GET k2", "GET nope"]);
    assert_eq!((fake.requests(), fake.requests_for(b"k1")), (3, 1));
    assert_eq!(fake.connections(), 1);
}

#[test]
fn fake_origin_put_and_delete_update_the_store() {
    let fake = FakeOrigin::start(OriginBehavior::Serve);
    let key = b"odd key:\x00\xff/..";
    let path = cache_path(key);
    let mut c = OriginClient::connect(&fake.addr());
    let headers = [("Bifrost-Flags", "7"), ("Cache-Control", "max-age=90")];
    let r = c.request("PUT", &path, &headers, b"value");
    assert_eq!(r.status, 201);
    assert_eq!(fake.item(key), Some((b"value".to_vec(), Some(7), Some(90))));
    let r = c.request("GET", &path, &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "value"));
    assert_eq!(r.header("Bifrost-Flags"), Some("7"));
    assert_eq!(r.header("Cache-Control"), Some("max-age=90"));
    let r = c.request("HEAD", &path, &[], b"");
    assert_eq!((r.status, r.header("Content-Length")), (200, Some("5")));
    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(fake.item(key), None);
    let r = c.request("DELETE", &path, &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(fake.requests_for(key), 5);
    let put = &fake.received()[0];
    assert_eq!(
        (put.method.as_str(), put.body.as_slice()),
        ("PUT", &b"value"[..])
    );
    assert_eq!(put.header("bifrost-flags"), Some("7"));
    assert_eq!(put.target, path);
    // A PUT without flags or max-age stores neither.
    c.request("PUT", &cache_path(b"plain"), &[], b"p");
    assert_eq!(fake.item(b"plain"), Some((b"p".to_vec(), None, None)));
}

#[test]
fn fake_origin_chunked_bodies_arrive_in_several_chunks() {
    let fake = FakeOrigin::start(OriginBehavior::Chunked);
    fake.insert(b"k", b"hello chunked world", Some(3), None);
    let mut c = OriginClient::connect(&fake.addr());
    let r = c.get(b"k");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(r.header("Content-Length"), None);
    assert_eq!(r.text(), "hello chunked world");
    assert_eq!(r.chunk_sizes, [5, 5, 5, 4]);
    assert_eq!(r.header("Bifrost-Flags"), Some("3"));
    // The framing on the wire, and the connection still usable after it.
    c.send(&pipelined_gets(&[b"k"]));
    let raw = c.read_raw(Duration::from_millis(300));
    let tail = b"5\r\nhello\r\n5\r\n chun\r\n5\r\nked w\r\n4\r\norld\r\n0\r\n\r\n";
    assert!(raw.ends_with(tail), "raw: {}", common::show(&raw));
    // A miss is not chunked.
    let r = c.get(b"nope");
    assert_eq!((r.status, r.header("Transfer-Encoding")), (404, None));
}

#[test]
fn fake_origin_close_after_n_answers_n_then_closes() {
    let fake = FakeOrigin::start(OriginBehavior::CloseAfter(2));
    fake.insert(b"a", b"A", None, None);
    let mut c = OriginClient::connect(&fake.addr());
    c.send(&pipelined_gets(&[b"a", b"a", b"a"]));
    let first = c.read_response("GET");
    assert_eq!((first.status, first.closes()), (200, false));
    let second = c.read_response("GET");
    assert_eq!((second.status, second.closes()), (200, true));
    c.expect_closed();
    assert_eq!(fake.requests(), 2, "the pipelined third is not counted");
    // A new connection gets two more.
    let mut c = OriginClient::connect(&fake.addr());
    assert!(!c.get(b"a").closes());
    assert!(c.get(b"a").closes());
    assert_eq!((fake.requests(), fake.connections()), (4, 2));
}

#[test]
fn fake_origin_hold_piles_up_reads_until_release() {
    let fake = FakeOrigin::start(OriginBehavior::Serve);
    fake.insert(b"k", b"v", None, None);
    fake.hold();
    let mut clients: Vec<OriginClient> = (0..3)
        .map(|_| OriginClient::connect(&fake.addr()))
        .collect();
    for c in &mut clients {
        c.send(&pipelined_gets(&[b"k"]));
    }
    fake.wait_for_requests(3, WAIT);
    // Writes are not held.
    let mut writer = OriginClient::connect(&fake.addr());
    assert_eq!(
        writer.request("PUT", &cache_path(b"w"), &[], b"x").status,
        201
    );
    clients[0].expect_silence(Duration::from_millis(150));
    fake.release();
    for c in &mut clients {
        let r = c.read_response("GET");
        assert_eq!((r.status, r.text().as_str()), (200, "v"));
    }
    assert_eq!((fake.requests(), fake.connections()), (4, 4));
}

#[test]
fn fake_origin_status_garbage_and_oversize() {
    let fake = FakeOrigin::start(OriginBehavior::Status(503));
    let mut c = OriginClient::connect(&fake.addr());
    let r = c.get(b"k");
    assert_eq!((r.status, r.text().as_str()), (503, "status 503\n"));
    let r = c.request("PUT", &cache_path(b"k"), &[], b"v");
    assert_eq!(r.status, 503, "every method");

    fake.set_behavior(OriginBehavior::Garbage);
    c.send(&pipelined_gets(&[b"k"]));
    let raw = c.read_raw(Duration::from_millis(200));
    assert_eq!(raw, ORIGIN_GARBAGE);
    let mut c = OriginClient::connect(&fake.addr());
    c.send(&pipelined_gets(&[b"k"]));
    let err = c
        .try_read_response("GET")
        .expect_err("garbage is no response");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");

    fake.set_behavior(OriginBehavior::Oversize(3 << 20));
    let r = OriginClient::connect(&fake.addr()).get(b"k");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3 << 20);
    assert!(r.body.iter().all(|&b| b == b'x'));
    assert_eq!(fake.requests(), 5);
}

#[test]
fn fake_origin_close_mid_body_never_answer_and_slow() {
    let fake = FakeOrigin::start(OriginBehavior::CloseMidBody);
    let mut c = OriginClient::connect(&fake.addr());
    c.send(&pipelined_gets(&[b"k", b"k"]));
    let raw = c.read_raw(Duration::from_secs(2));
    assert_eq!(
        raw, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        "then EOF"
    );
    assert_eq!(fake.requests(), 1);

    fake.set_behavior(OriginBehavior::NeverAnswer);
    let mut c = OriginClient::connect(&fake.addr());
    c.send(&pipelined_gets(&[b"k"]));
    fake.wait_for_requests(2, WAIT);
    c.expect_silence(Duration::from_millis(200));

    let delay = Duration::from_millis(200);
    fake.set_behavior(OriginBehavior::Slow(delay));
    fake.insert(b"k", b"slow", None, None);
    let start = Instant::now();
    let r = OriginClient::connect(&fake.addr()).get(b"k");
    assert_eq!((r.status, r.text().as_str()), (200, "slow"));
    assert!(
        start.elapsed() >= delay,
        "answered after {:?}",
        start.elapsed()
    );
}

#[test]
fn fake_origin_counts_open_connections_and_stops_on_drop() {
    let fake = FakeOrigin::start(OriginBehavior::NeverAnswer);
    let c = OriginClient::connect(&fake.addr());
    fake.wait_for_connections(1, WAIT);
    common::wait_until(WAIT, "the connection counts as open", || {
        fake.open_connections() == 1
    });
    drop(c);
    common::wait_until(WAIT, "the connection counts as closed", || {
        fake.open_connections() == 0
    });
    let mut c = OriginClient::connect(&fake.addr());
    c.send(&pipelined_gets(&[b"k"]));
    fake.wait_for_requests(1, WAIT);
    let start = Instant::now();
    drop(fake);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        start.elapsed()
    );
    c.expect_closed();
}
