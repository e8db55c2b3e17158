//! End-to-end tests of the overload limits that are not about one client's memory alone: the
//! slow-request cap, the per-server queue cap, the process reply budget that sheds the biggest
//! holders first, and the counters that report them. Each test can fail: each limit is set
//! low enough that the test's load crosses it, and the counters are checked exactly where the
//! load makes them exact.

mod common;

use common::{assert_bytes, wait_until, Behavior, BlindForward, Client, FakeBackend, Memcached};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const OVERLOADED: &[u8] = b"SERVER_ERROR backend overloaded\r\n";

/// `set <key> 0 0 <len>\r\n<value>\r\n`.
fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    req
}

/// True once the peer has closed `stream` (EOF or reset), reading and dropping whatever it
/// still had to say; false if it is still open after `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A client that starts a request and never finishes it is closed after
/// `request_read_timeout`; one that sends its request in pieces, each in time, is served; one
/// that sends nothing at all is not a slow request (that is `idle_timeout`'s business).
#[test]
fn slow_request_is_closed_and_counted() {
    let mc = Memcached::start();
    let b = BlindForward::new(&mc.addr())
        .listener_option("request_read_timeout: 400ms")
        .start();

    // A request that arrives in two pieces 150 ms apart is whole well within the limit. The
    // proxy must have read the first piece on its own (else the test would only show that a
    // request read whole is served): `bytes_read` counts its 16 bytes beside the 7 of each
    // `stats` of ours.
    let mut monitor = b.client();
    let mut steady = b.client();
    let read_before = monitor.stat("bytes_read");
    steady.send(b"set k 0 0 5\r\nhel");
    let mut asked = 0;
    wait_until(
        Duration::from_secs(5),
        "the proxy reads the first piece",
        || {
            asked += 1;
            monitor.stat("bytes_read") >= read_before + 16 + 7 * asked
        },
    );
    std::thread::sleep(Duration::from_millis(150)); // the gap is the point of the test
    steady.send(b"lo\r\n");
    assert_eq!(steady.read_line(), "STORED");

    let mut slow = TcpStream::connect(b.addr()).expect("connect");
    slow.write_all(b"get never-fin").expect("write");
    let mut idle = TcpStream::connect(b.addr()).expect("connect");

    let started = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)),
        "a client whose request never completes is still open after 5 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed before its request had its 400 ms"
    );
    assert_eq!(monitor.stat("clients_closed_slow_request"), 1);
    // `idle` connected just after `slow`, whose timer has fired: had the proxy taken a client
    // that sent nothing for a slow one, its timer would have fired with `slow`'s.
    assert!(
        !closed_within(&mut idle, Duration::from_millis(300)),
        "a client that sent nothing was closed as a slow request"
    );
    assert_eq!(steady.get("k"), Some(b"hello".to_vec()));
}

/// With `max_queued_requests: 4` and a server that never answers, the fifth request on the
/// connection is refused at once with `SERVER_ERROR backend overloaded` (no wait for the
/// request timeout), counted in `backend_overloaded`, and never reaches the server.
#[test]
fn server_queue_cap_refuses_at_once() {
    let fake = FakeBackend::start(Behavior::NeverAnswer);
    let b = BlindForward::new(&fake.addr())
        .timeout("3s")
        .backend_option("max_queued_requests: 4")
        .start();
    // Four clients with one request each (one client alone would have only a few requests in
    // flight until its first reply: the slow start of its window).
    let stuck: Vec<Client> = ["a", "b", "c", "d"]
        .iter()
        .map(|key| {
            let mut c = b.client();
            c.send(format!("get {key}\r\n").as_bytes());
            c
        })
        .collect();
    wait_until(Duration::from_secs(5), "4 requests queued", || {
        b.client().stat("backend_requests") >= 4
    });

    let mut other = b.client();
    let started = Instant::now();
    let reply = other.request(&set_request("x", b"1"));
    let took = started.elapsed();
    assert_bytes(&reply, OVERLOADED, "a set over the server's queue cap");
    assert!(
        took < Duration::from_secs(2),
        "the refusal took {took:?}: it waited for the request timeout"
    );
    // A retrieval over the cap is a miss, like any failed retrieval.
    other.send(b"get y\r\n");
    assert_bytes(
        &other.read_reply_retrieval(),
        b"END\r\n",
        "a get over the cap",
    );
    assert_eq!(b.client().stat("backend_overloaded"), 2);
    assert!(
        !String::from_utf8_lossy(&fake.received()).contains("set x"),
        "a refused request reached the server"
    );
    drop(stuck);
}

/// `mg` hits count as hits whether the server answers `VA` (value asked for) or `HD` (no
/// value asked for); a miss (`EN`) counts as a miss.
#[test]
fn meta_get_hits_count_with_or_without_value() {
    let mc = Memcached::start();
    let b = BlindForward::new(&mc.addr()).start();
    let mut c = b.client();
    assert_eq!(c.set("here", b"v", 0, 0), "STORED");
    let (hits, misses) = (c.stat("get_hits"), c.stat("get_misses"));
    assert_bytes(&c.request(b"mg here\r\n"), b"HD\r\n", "mg hit without v");
    c.send(b"mg here v\r\n");
    assert_eq!(c.read_line(), "VA 1", "mg hit with v");
    assert_eq!(c.read_line(), "v", "mg hit's value");
    assert_bytes(&c.request(b"mg gone\r\n"), b"EN\r\n", "mg miss");
    assert_eq!(c.stat("get_hits") - hits, 2, "HD and VA are hits");
    assert_eq!(c.stat("get_misses") - misses, 1, "EN is a miss");
}

/// Several clients ask for far more than they read. Each stays under its own limits, but
/// together they pass the worker's `reply_memory_budget`: the proxy closes the biggest holders
/// until it is back under, counts them in `clients_shed`, keeps serving a well-behaved client
/// without an error, and its `reply_bytes_buffered` gauge returns to about zero once the greedy
/// clients are gone (the accounting does not drift).
#[test]
fn reply_budget_sheds_the_biggest_holders() {
    const VALUE: usize = 500_000;
    let mc = Memcached::builder().arg("-I").arg("2m").start();
    let b = BlindForward::new(&mc.addr())
        .workers(1)
        .top_level("reply_memory_budget: 12MiB")
        .listener_option("max_buffered_reply_bytes: 4MiB")
        .listener_option("close_buffered_reply_bytes: 64MiB")
        .start();
    let mut good = b.client();
    let value = vec![b'v'; VALUE];
    assert_eq!(good.set("big", &value, 0, 0), "STORED");
    assert_eq!(good.set("small", b"ok", 0, 0), "STORED");

    let mut greedy: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(b.addr()).expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(5)))
                .expect("write timeout");
            // 200 replies of 500 KB: far more than the kernel's socket buffers take.
            s.write_all(&b"get big\r\n".repeat(200)).expect("pipeline");
            s
        })
        .collect();

    let mut probe = b.client();
    wait_until(Duration::from_secs(20), "a greedy client is shed", || {
        assert_eq!(good.get("small"), Some(b"ok".to_vec()), "the good client");
        probe.stat("clients_shed") >= 1
    });
    let mut shed = 0;
    for s in greedy.iter_mut() {
        if closed_within(s, Duration::from_secs(2)) {
            shed += 1;
        }
    }
    assert!(
        shed >= 1,
        "clients_shed counted a client that is still open"
    );
    assert!(
        shed < 6,
        "all six greedy clients were closed: the budget shed more than the biggest holders"
    );
    assert_eq!(good.get("small"), Some(b"ok".to_vec()), "the good client");
    drop(greedy);
    wait_until(
        Duration::from_secs(10),
        "reply_bytes_buffered back to about zero",
        || probe.stat("reply_bytes_buffered") < 64 * 1024,
    );
    let mut after = Client::connect(&b.addr());
    assert_eq!(after.get("small"), Some(b"ok".to_vec()));
}
