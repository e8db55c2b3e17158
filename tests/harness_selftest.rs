//! Tests of the test harness itself, against a real memcached and the fake backends.
//! Bifrost is not started here: its own test files do that.

mod common;

use common::{wait_until, Behavior, Client, FakeBackend, Memcached, TempFile, GARBAGE_REPLY};
use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..20).map(|_| common::free_port()).collect();
    let distinct: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "free_port repeated a port: {ports:?}"
    );
    for port in ports {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("port {port}: {e}"));
    }
}

#[test]
fn memcached_set_get_delete() {
    let mc = Memcached::start();
    let mut c = mc.client();
    assert!(c.version().starts_with("VERSION "));
    assert_eq!(c.set("k1", b"hello", 42, 0), "STORED");
    assert_eq!(c.get("k1").as_deref(), Some(&b"hello"[..]));
    assert_eq!(c.get("missing"), None);
    assert_eq!(c.delete("k1"), "DELETED");
    assert_eq!(c.delete("k1"), "NOT_FOUND");
    // Values may hold CR, LF and any byte: the client frames by length.
    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\nEND\r\n").collect();
    assert_eq!(c.set("bin", &binary, 0, 0), "STORED");
    assert_eq!(c.get("bin"), Some(binary));
}

#[test]
fn memcached_multi_get_gets_and_raw_replies() {
    let mc = Memcached::start();
    let mut c = mc.client();
    assert_eq!(c.set("a", b"1", 0, 0), "STORED");
    assert_eq!(c.set("c", b"333", 7, 0), "STORED");
    let hits = c.get_multi(&["a", "b", "c"]);
    assert_eq!(
        hits,
        vec![
            ("a".to_string(), b"1".to_vec()),
            ("c".to_string(), b"333".to_vec())
        ]
    );

    let (value, cas) = c.gets("c").expect("hit");
    assert_eq!(value, b"333");
    assert_eq!(
        c.request(format!("cas c 7 0 1 {cas}\r\nx\r\n").as_bytes()),
        b"STORED\r\n"
    );
    assert_eq!(
        c.request(format!("cas c 0 0 1 {cas}\r\ny\r\n").as_bytes()),
        b"EXISTS\r\n"
    );

    c.send(b"get a c\r\n");
    assert_eq!(
        c.read_reply_retrieval(),
        b"VALUE a 0 1\r\n1\r\nVALUE c 7 1\r\nx\r\nEND\r\n"
    );
    c.send(b"bogus\r\n");
    assert_eq!(c.read_reply_retrieval(), b"ERROR\r\n");
    let items = {
        c.send(b"get c\r\n");
        c.read_values().expect("values")
    };
    assert_eq!(
        (items[0].key.as_str(), items[0].flags, items[0].cas),
        ("c", 7, None)
    );
}

#[test]
fn noreply_is_silent_and_pipelining_keeps_order() {
    let mc = Memcached::start();
    let mut c = mc.client();
    c.send(b"set q 0 0 2 noreply\r\nhi\r\n");
    c.expect_no_reply(Duration::from_millis(100));
    c.send(b"get q\r\nset r 0 0 1\r\nx\r\nget r\r\n");
    assert_eq!(c.read_reply_retrieval(), b"VALUE q 0 2\r\nhi\r\nEND\r\n");
    assert_eq!(c.read_line(), "STORED");
    assert_eq!(c.read_line_raw(), b"VALUE r 0 1\r\n");
    assert_eq!(c.read_exact(3), b"x\r\n");
    assert_eq!(c.read_line(), "END");
}

#[test]
fn memcached_builder_options_apply() {
    // Default -I 2m: a value just over 1 MiB is accepted.
    let big = vec![b'v'; (1 << 20) + 1];
    let mc = Memcached::start();
    assert_eq!(mc.client().set("big", &big, 0, 0), "STORED");
    // -I 1m via the builder, and via start_with: the same value is refused.
    let small = Memcached::builder()
        .max_item_size("1m")
        .memory_mb(16)
        .start();
    assert!(small
        .client()
        .set("big", &big, 0, 0)
        .starts_with("SERVER_ERROR"));
    let small = Memcached::start_with(&["-I", "1m"]);
    assert!(small
        .client()
        .set("big", &big, 0, 0)
        .starts_with("SERVER_ERROR"));
}

#[test]
fn memcached_kill_closes_connections_and_refuses_new_ones() {
    let mut mc = Memcached::start();
    let mut c = mc.client();
    assert_eq!(c.set("k", b"v", 0, 0), "STORED");
    let addr = mc.addr();
    assert!(mc.is_running());
    let status = mc.kill();
    assert!(!status.success());
    assert!(!mc.is_running());
    c.expect_closed();
    let err = Client::try_connect(&addr)
        .err()
        .expect("connect to a killed memcached fails");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn memcached_is_reaped_on_drop() {
    let mc = Memcached::start();
    let pid = mc.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(mc);
    // Reaped children vanish from /proc (unless the pid was reused, which is vanishingly rare).
    wait_until(
        Duration::from_secs(5),
        "the memcached process is gone",
        || {
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                || !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .contains("memcached")
        },
    );
}

#[test]
fn two_memcacheds_are_independent() {
    let (a, b) = (Memcached::start(), Memcached::start());
    assert_ne!(a.port(), b.port());
    assert_eq!(a.client().set("only-a", b"1", 0, 0), "STORED");
    assert_eq!(b.client().get("only-a"), None);
}

#[test]
fn fake_never_answer_reads_and_counts() {
    let fake = FakeBackend::start(Behavior::NeverAnswer);
    fake.assert_untouched();
    let mut c = Client::connect(&fake.addr());
    c.send(b"get k\r\n");
    fake.wait_for_bytes(7, Duration::from_secs(5));
    c.expect_no_reply(Duration::from_millis(100));
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.open_connections(), 1);
    assert_eq!(fake.received(), b"get k\r\n");
    drop(c);
    wait_until(Duration::from_secs(5), "the fake sees the close", || {
        fake.open_connections() == 0
    });
}

#[test]
#[should_panic(expected = "was reached")]
fn fake_assert_untouched_fails_after_a_connection() {
    let fake = FakeBackend::start(Behavior::NeverAnswer);
    let _c = Client::connect(&fake.addr());
    fake.wait_for_connections(1, Duration::from_secs(5));
    fake.assert_untouched();
}

#[test]
fn fake_close_mid_reply_sends_a_partial_value_then_closes() {
    let fake = FakeBackend::start(Behavior::CloseMidReply);
    let mut c = Client::connect(&fake.addr());
    c.send(b"get foo\r\n");
    assert_eq!(c.read_line(), "VALUE foo 0 10");
    assert_eq!(c.read_exact(3), b"abc");
    c.expect_closed();
}

#[test]
fn fake_garbage_answers_garbage() {
    let fake = FakeBackend::start(Behavior::Garbage);
    let mut c = Client::connect(&fake.addr());
    assert_eq!(c.request(b"get k\r\n"), GARBAGE_REPLY);
}

#[test]
fn fake_slow_answer_is_framed_and_delayed() {
    let delay = Duration::from_millis(150);
    let fake = FakeBackend::start(Behavior::SlowAnswer(delay));
    let mut c = Client::connect(&fake.addr());
    let start = Instant::now();
    assert_eq!(c.get("k"), None);
    assert!(
        start.elapsed() >= delay,
        "answered after {:?}",
        start.elapsed()
    );
    // A data block containing command words and CRLF is skipped by its length, not parsed.
    assert_eq!(c.set("k", b"get x\r\nversion", 0, 0), "STORED");
    c.send(b"set k 0 0 1 noreply\r\nv\r\nversion\r\nmn\r\n");
    assert_eq!(c.read_line(), "VERSION 0.0.0-fake");
    assert_eq!(c.read_line(), "MN");
    assert_eq!(c.request(b"nonsense\r\n"), b"ERROR\r\n");
    c.send(b"quit\r\n");
    c.expect_closed();
}

#[test]
fn fake_backends_stop_on_drop() {
    let fake = FakeBackend::start(Behavior::NeverAnswer);
    let addr = fake.addr();
    let mut c = Client::connect(&addr);
    fake.wait_for_connections(1, Duration::from_secs(5));
    let start = Instant::now();
    drop(fake);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        start.elapsed()
    );
    c.expect_closed();
    assert!(
        Client::try_connect(&addr).is_err(),
        "the listener is closed"
    );
}

#[test]
#[should_panic(expected = "timed out after")]
fn client_reads_time_out_with_a_message() {
    let fake = FakeBackend::start(Behavior::NeverAnswer);
    let mut c = Client::connect(&fake.addr());
    c.set_timeout(Duration::from_millis(100));
    c.request(b"get k\r\n");
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting until the impossible happens")]
fn wait_until_panics_with_what_it_waited_for() {
    wait_until(Duration::from_millis(50), "the impossible happens", || {
        false
    });
}

#[test]
fn wait_until_returns_once_true() {
    let mut calls = 0;
    wait_until(Duration::from_secs(5), "the third call", || {
        calls += 1;
        calls == 3
    });
    assert_eq!(calls, 3);
}

#[test]
fn temp_files_are_unique_and_removed() {
    let a = TempFile::new("x", "yaml", b"a: 1\n");
    let b = TempFile::new("x", "yaml", b"b: 2\n");
    assert_ne!(a.path(), b.path());
    assert_eq!(a.read(), "a: 1\n");
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists());
}
