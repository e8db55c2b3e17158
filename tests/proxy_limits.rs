//! End-to-end tests of the client-facing limits of the real `bifrost` binary: bad input is
//! answered with memcached's words and never reaches a backend (a fake backend that counts
//! every connection and byte proves it), connection caps, idle clients, and memory caps
//! against a client that sends without reading.

mod common;

use common::{
    assert_bytes, rss_bytes, show, wait_until, Behavior, Bifrost, BlindForward, Client,
    FakeBackend, Memcached,
};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

const BAD_LINE: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";
const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
const BAD_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
const BINARY: &[u8] = b"CLIENT_ERROR binary protocol is not supported\r\n";
const TOO_MANY: &[u8] = b"ERROR Too many open connections\r\n";

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// An always-miss fake memcached (it answers every request correctly framed and counts every
/// byte that reaches it) behind a bifrost whose listener has `listener_options`.
fn proxy_to_fake(listener_options: &[&str]) -> (FakeBackend, Bifrost) {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::ZERO));
    let config = listener_options
        .iter()
        .fold(BlindForward::new(&fake.addr()), |c, o| c.listener_option(o));
    let b = config.start();
    (fake, b)
}

/// `set <key> 0 0 <len>\r\n<value>\r\n`.
fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    req
}

/// Sends `version` and checks the reply: the connection is open and every earlier reply has
/// been read (nothing else was queued before it).
#[track_caller]
fn assert_in_step(c: &mut Client) {
    let reply = c.version();
    assert!(reply.starts_with("VERSION "), "version answered {reply:?}");
}

/// Waits until the fake backend has received exactly `want` (and asserts nothing else came).
#[track_caller]
fn assert_backend_received(fake: &FakeBackend, want: &[u8]) {
    fake.wait_for_bytes(want.len(), Duration::from_secs(5));
    assert_bytes(&fake.received(), want, "bytes that reached the backend");
}

/// A `get` line of exactly `total` bytes including `\r\n`, of keys of at most 250 bytes.
fn get_line_of_len(total: usize) -> Vec<u8> {
    let mut line = b"get".to_vec();
    let mut next = b'a';
    while line.len() < total - 2 {
        let room = total - 2 - line.len() - 1; // after the separating space
                                               // Leave either nothing or room for one more key of at least one byte.
        let len = if room <= 250 { room } else { 250.min(room - 2) };
        line.push(b' ');
        line.extend(std::iter::repeat(next).take(len));
        next += 1;
    }
    line.extend_from_slice(b"\r\n");
    assert_eq!(line.len(), total);
    line
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn key_longer_than_250_bytes_is_refused_and_never_forwarded() {
    let (fake, b) = proxy_to_fake(&[]);
    let mut c = b.client();
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (format!("get {k251}\r\n").into_bytes(), "get"),
        (
            format!("gets a {k251} b\r\n").into_bytes(),
            "gets with one long key",
        ),
        (format!("delete {k251}\r\n").into_bytes(), "delete"),
        (format!("incr {k251} 1\r\n").into_bytes(), "incr"),
        (format!("touch {k251} 10\r\n").into_bytes(), "touch"),
        (format!("mg {k251} v\r\n").into_bytes(), "mg"),
        // The value is swallowed with the line: it must not be read as a command.
        (set_request(&k251, b"get x\r\n"), "set"),
    ];
    for (req, what) in &bad {
        assert_bytes(&c.request(req), BAD_LINE, what);
    }
    assert_in_step(&mut c);
    fake.assert_untouched();

    // 250 bytes is fine and forwarded as is.
    let mut good = format!("get {k250}\r\n").into_bytes();
    good.extend_from_slice(&set_request(&k250, b"v"));
    c.send(&good);
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get of a 250-byte key",
    );
    assert_bytes(&c.read_line_raw(), b"STORED\r\n", "set of a 250-byte key");
    assert_backend_received(&fake, &good);
}

#[test]
fn key_of_250_bytes_round_trips_through_memcached() {
    let mc = Memcached::start();
    let b = Bifrost::blind_forward(&mc);
    let mut c = b.client();
    let k250 = "x".repeat(250);
    assert_eq!(c.set(&k250, b"value", 3, 0), "STORED");
    c.send(format!("get {k250}\r\n").as_bytes());
    let mut want = format!("VALUE {k250} 3 5\r\n").into_bytes();
    want.extend_from_slice(b"value\r\nEND\r\n");
    assert_bytes(&c.read_reply_retrieval(), &want, "get");
    assert_eq!(mc.client().get(&k250).as_deref(), Some(&b"value"[..]));
}

#[test]
fn line_over_max_line_length_is_refused_and_the_connection_closed() {
    let (fake, b) = proxy_to_fake(&["max_line_length: 1024"]);
    // 1024 bytes and no newline.
    let mut c = b.client();
    let mut long = get_line_of_len(1026);
    long.truncate(1024);
    c.send(&long);
    assert_bytes(&c.read_line_raw(), LINE_TOO_LONG, "1024 bytes without \\n");
    c.expect_closed();

    // A 1025-byte line has no newline within the first 1024 bytes either.
    let mut c = b.client();
    c.send(&get_line_of_len(1025));
    assert_bytes(&c.read_line_raw(), LINE_TOO_LONG, "a 1025-byte line");
    c.expect_closed();
    fake.assert_untouched();

    // A line of exactly 1024 bytes, line ending included, is accepted and forwarded.
    let mut c = b.client();
    let line = get_line_of_len(1024);
    c.send(&line);
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "a 1024-byte line");
    assert_backend_received(&fake, &line);
}

#[test]
fn value_over_max_value_size_is_refused_and_swallowed() {
    let (fake, b) = proxy_to_fake(&["max_value_size: 1000"]);
    let mut c = b.client();

    // The refusal comes as soon as the line is read; the value, sent afterwards in pieces,
    // is swallowed. It holds request lines that must not be taken as commands.
    c.send(b"set big 0 0 1001\r\n");
    assert_bytes(&c.read_line_raw(), TOO_LARGE, "set of 1001 bytes");
    let mut value = b"get evil\r\ndelete evil\r\n".to_vec();
    value.resize(1001, b'v');
    for piece in value.chunks(400) {
        c.send(piece);
    }
    c.send(b"\r\n");
    assert_in_step(&mut c);

    // The same in one write with the next request behind it.
    let mut req = set_request("big2", &[b'w'; 5000]);
    req.extend_from_slice(b"version\r\n");
    c.send(&req);
    assert_bytes(&c.read_line_raw(), TOO_LARGE, "set of 5000 bytes");
    assert!(c.read_line().starts_with("VERSION "));

    // 1000 bytes is accepted and forwarded whole.
    let ok = set_request("fits", &[b'x'; 1000]);
    assert_bytes(&c.request(&ok), b"STORED\r\n", "set of 1000 bytes");
    c.send(b"get big\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get after the refusals",
    );
    // No refused value reached the backend; only the deletes of their keys did (a set refused
    // as too large removes the key's old value, as memcached does), each framed by `mn`.
    let mut want = b"delete big noreply\r\nmn\r\ndelete big2 noreply\r\nmn\r\n".to_vec();
    want.extend_from_slice(&ok);
    want.extend_from_slice(b"get big\r\n");
    assert_backend_received(&fake, &want);
}

#[test]
fn data_block_not_followed_by_crlf_is_a_bad_data_chunk() {
    let (fake, b) = proxy_to_fake(&[]);
    let mut c = b.client();
    c.send(b"set k 0 0 3\r\nabcXYversion\r\n");
    assert_bytes(&c.read_line_raw(), BAD_CHUNK, "3 bytes then XY");
    assert!(c.read_line().starts_with("VERSION "));
    c.send(b"set k 0 0 3\r\nabcd\nversion\r\n");
    assert_bytes(&c.read_line_raw(), BAD_CHUNK, "3 bytes then d\\n");
    assert!(c.read_line().starts_with("VERSION "));
    fake.assert_untouched();
    c.send(b"get k\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get after the refusals",
    );
    assert_backend_received(&fake, b"get k\r\n");
}

#[test]
fn unknown_command_and_empty_line_are_errors_and_the_connection_goes_on() {
    let (fake, b) = proxy_to_fake(&[]);
    let mut c = b.client();
    for (req, what) in [
        (&b"bogus\r\n"[..], "unknown command"),
        (b"bogus with args\r\n", "unknown command with arguments"),
        (b"GET k\r\n", "upper-case command"),
        (b"\r\n", "empty line"),
        (b"get\r\n", "get without a key"),
    ] {
        assert_bytes(&c.request(req), b"ERROR\r\n", what);
    }
    assert_in_step(&mut c);
    fake.assert_untouched();
    c.send(b"get k\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get after the errors",
    );
    assert_backend_received(&fake, b"get k\r\n");
}

/// A connection's protocol is decided by its first byte (tests/binary.rs serves binary
/// clients): a binary frame after text requests on the same connection is refused, and the
/// connection closed.
#[test]
fn a_binary_frame_after_text_requests_is_refused_and_the_connection_closed() {
    let (fake, b) = proxy_to_fake(&[]);
    // A binary GET of key "k": magic 0x80, opcode 0x00, key length 1, body length 1.
    let mut get = vec![0x80, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00];
    get.extend_from_slice(&[0, 0, 0, 1]); // total body length
    get.extend_from_slice(&[0; 12]); // opaque, cas
    get.push(b'k');
    let mut c = b.client();
    let mut req = b"version\r\n".to_vec();
    req.extend_from_slice(&get);
    c.send(&req);
    assert!(c.read_line().starts_with("VERSION "));
    assert_bytes(&c.read_line_raw(), BINARY, "binary GET after version");
    c.expect_closed();
    fake.assert_untouched();
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// Connects and sends `version`: Some(client) when served, None when turned away (the
/// `ERROR Too many open connections` line, or a reset because the proxy closed first).
fn try_admitted(addr: &str) -> Option<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(b"version\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    if line.starts_with(b"VERSION ") {
        return Some(reader);
    }
    assert!(
        line.is_empty() || line == TOO_MANY,
        "a turned-away connection got {}",
        show(&line)
    );
    None
}

#[test]
fn max_connections_turns_away_the_third_and_admits_again_after_a_close() {
    let (_fake, b) = proxy_to_fake(&["max_connections: 2"]);
    let mut first = b.client();
    // The harness's readiness probe may not be closed on the proxy's side yet.
    wait_until(Duration::from_secs(5), "only our client is open", || {
        first.stat("curr_connections") == 1
    });
    let mut second = b.client();
    assert_in_step(&mut second);

    let mut third = b.client();
    assert_bytes(&third.read_line_raw(), TOO_MANY, "third connection");
    third.expect_closed();
    assert_eq!(first.stat("rejected_connections"), 1);

    // The first two still work, through the backend too.
    for c in [&mut first, &mut second] {
        c.send(b"get k\r\n");
        assert_bytes(
            &c.read_reply_retrieval(),
            b"END\r\n",
            "get on an admitted client",
        );
        assert_in_step(c);
    }

    drop(second);
    let mut admitted = None;
    wait_until(
        Duration::from_secs(5),
        "a new connection is admitted",
        || {
            admitted = try_admitted(&b.addr());
            admitted.is_some()
        },
    );
    let mut reader = admitted.expect("admitted");
    reader.get_mut().write_all(b"get k\r\n").expect("send");
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).expect("reply");
    assert_bytes(&line, b"END\r\n", "get on the newly admitted client");
    assert_in_step(&mut first);
}

#[test]
fn idle_timeout_closes_idle_clients_but_not_busy_ones() {
    let (_fake, b) = proxy_to_fake(&["idle_timeout: 300ms"]);
    let addr = b.addr();
    let busy = thread::spawn(move || {
        let mut c = Client::connect(&addr);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(800) {
            c.send(b"get k\r\n");
            assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "busy client's get");
            thread::sleep(Duration::from_millis(100)); // the client's pace, not a wait
        }
        assert_in_step(&mut c);
        start.elapsed()
    });
    let mut idle = b.client();
    let start = Instant::now();
    idle.expect_closed_within(Duration::from_secs(2));
    let closed_after = start.elapsed();
    assert!(
        closed_after >= Duration::from_millis(250),
        "an idle client was closed after {closed_after:?}, before its 300ms idle timeout"
    );
    let busy_for = busy.join().expect("busy client");
    assert!(
        busy_for >= Duration::from_millis(800),
        "busy for {busy_for:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Memory caps
// ---------------------------------------------------------------------------------------------

/// A client pipelines 20000 `get`s of 4 KiB values (80 MB of replies) without reading. The
/// proxy must stop reading it (max_outstanding_requests, max_buffered_reply_bytes) instead of
/// buffering: its RSS stays small, another client is served promptly, and once the greedy
/// client reads it gets all 20000 replies, in order.
#[test]
fn client_that_does_not_read_cannot_grow_proxy_memory() {
    const REQUESTS: usize = 20_000;
    const KEYS: usize = 100;
    const RSS_LIMIT: u64 = 64 << 20;
    let mc = Memcached::start();
    let b = BlindForward::new(&mc.addr())
        .listener_option("max_outstanding_requests: 64")
        .start();
    let value = |i: usize| format!("{i:0>4}").repeat(1024).into_bytes();
    let mut direct = mc.client();
    for i in 0..KEYS {
        assert_eq!(direct.set(&format!("key{i}"), &value(i), 0, 0), "STORED");
    }

    let mut greedy = b.client();
    let mut writer = greedy.stream().try_clone().expect("clone");
    writer.set_write_timeout(None).expect("no write timeout");
    let writing = thread::spawn(move || {
        let mut pipeline = Vec::new();
        for i in 0..REQUESTS {
            pipeline.extend_from_slice(format!("get key{}\r\n", i % KEYS).as_bytes());
        }
        writer.write_all(&pipeline)
    });

    // Wait until the proxy stops taking the greedy client's requests (its share of cmd_get
    // stays put for 300 ms), checking RSS and another client's service all along.
    let mut other = b.client();
    let mut other_gets = 0;
    let mut max_rss = 0;
    let (mut last, mut since) = (u64::MAX, Instant::now());
    let mut probe = b.client();
    wait_until(
        Duration::from_secs(15),
        "the proxy stops reading the client that does not read",
        || {
            max_rss = max_rss.max(rss_bytes(b.pid()));
            let t = Instant::now();
            let got = probe.get("key7");
            let took = t.elapsed();
            assert_eq!(got, Some(value(7)), "the other client's get");
            assert!(
                took < Duration::from_secs(1),
                "the other client waited {took:?}"
            );
            other_gets += 1;
            let gets = other.stat("cmd_get") - other_gets;
            if gets != last {
                (last, since) = (gets, Instant::now());
            }
            since.elapsed() >= Duration::from_millis(300)
        },
    );
    assert!(
        max_rss < RSS_LIMIT,
        "bifrost RSS reached {} MiB while a client did not read",
        max_rss >> 20
    );
    assert!(
        last < REQUESTS as u64,
        "the proxy took all {REQUESTS} requests of a client that read nothing: \
         nothing held it back"
    );
    eprintln!(
        "proxy took {last} of {REQUESTS} requests; max RSS {} KiB",
        max_rss >> 10
    );

    for i in 0..REQUESTS {
        let items = greedy
            .read_values()
            .unwrap_or_else(|line| panic!("reply {i}: {line:?}"));
        let key = format!("key{}", i % KEYS);
        assert!(
            items.len() == 1 && items[0].key == key && items[0].data == value(i % KEYS),
            "reply {i} is not the hit of {key}: {:?}",
            items.iter().map(|it| &it.key).collect::<Vec<_>>()
        );
    }
    writing.join().expect("writer").expect("write pipeline");
    assert_in_step(&mut greedy);
    assert!(rss_bytes(b.pid()) < RSS_LIMIT);
}
