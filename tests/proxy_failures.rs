//! End-to-end tests of backend failures: the real `bifrost` binary in front of real memcached
//! processes (killed, frozen, restarted on the same port) or, for what a real memcached cannot
//! do (never answer, close mid-reply, send garbage, answer slowly), a fake backend.
//!
//! The documented behaviour under test: a retrieval whose backend fails is a miss (`END`, or
//! `EN` for `mg`) counted in `backend_errors`; every other command gets `SERVER_ERROR <reason>`;
//! each request is answered exactly once and in order; after a timeout the backend connection
//! is reset so that no late reply is matched to a later request; `noreply` stays silent.

mod common;

use common::{
    assert_bytes, assert_one_of, free_port, wait_until, Behavior, Bifrost, BlindForward, Client,
    FakeBackend, Memcached, TempFile,
};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const CONNECTION_LOST: &[u8] = b"SERVER_ERROR backend connection lost\r\n";
const CONNECT_FAILED: &[u8] = b"SERVER_ERROR backend connect failed\r\n";
const UNAVAILABLE: &[u8] = b"SERVER_ERROR backend unavailable\r\n";
const TIMEOUT: &[u8] = b"SERVER_ERROR timeout\r\n";
const MALFORMED: &[u8] = b"SERVER_ERROR backend sent a malformed reply\r\n";
const NO_ROUTE: &[u8] = b"SERVER_ERROR no route for key\r\n";

/// What a non-retrieval may be answered with when its backend is dead or dying.
const DEAD_BACKEND_ERRORS: [&[u8]; 3] = [CONNECTION_LOST, CONNECT_FAILED, UNAVAILABLE];

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// A storage request `set <key> 0 0 <len>\r\n<value>\r\n` (with ` noreply` if asked).
fn set_request(key: &str, value: &[u8], noreply: bool) -> Vec<u8> {
    let tail = if noreply { " noreply" } else { "" };
    let mut req = format!("set {key} 0 0 {}{tail}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    req
}

/// The client's connection is open and in step: `version` is answered next.
#[track_caller]
fn assert_still_works(c: &mut Client) {
    let reply = c.version();
    assert!(reply.starts_with("VERSION "), "version answered {reply:?}");
}

/// Freezes a process the harness started (SIGSTOP) and waits until every thread is stopped:
/// signal delivery is asynchronous.
fn freeze(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a live child of ours.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, SIGSTOP): {}",
        std::io::Error::last_os_error()
    );
    let stopped = || -> Option<bool> {
        let mut all = true;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
            all &= status.lines().any(|l| l.starts_with("State:\tT"));
        }
        Some(all)
    };
    wait_until(
        Duration::from_secs(5),
        "every thread of the process is stopped",
        || stopped() == Some(true),
    );
}

/// A memcached started on a given port (the harness only picks fresh ports; a backend coming
/// back on the port it died on needs this). SIGKILLed and reaped on drop.
struct MemcachedOnPort {
    child: Child,
    log: TempFile,
}

impl MemcachedOnPort {
    fn start(port: u16) -> MemcachedOnPort {
        let log = TempFile::new("memcached-respawn", "log", b"");
        let out = || {
            std::fs::File::options()
                .append(true)
                .open(log.path())
                .unwrap()
        };
        let mut cmd = Command::new("memcached");
        cmd.args(["-l", "127.0.0.1", "-U", "0", "-t", "1", "-m", "64"])
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out())
            .stderr(out());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let child = cmd.spawn().expect("spawn memcached");
        let mut mc = MemcachedOnPort { child, log };
        let addr = format!("127.0.0.1:{port}");
        wait_until(Duration::from_secs(10), "memcached answers", || {
            if let Ok(Some(status)) = mc.child.try_wait() {
                panic!("memcached on {addr} exited ({status}): {}", mc.log.read());
            }
            answers_version(&addr)
        });
        mc
    }
}

impl Drop for MemcachedOnPort {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True if `addr` answers `version` with `VERSION ...`.
fn answers_version(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("VERSION ")
}

/// A fake memcached that answers `get <key>` with a hit whose value is the key itself, at once,
/// except keys starting with `slow`, answered after `SLOW_DELAY`. One thread per connection,
/// answering in order (as memcached does), so a slow request delays everything behind it on
/// its connection. Counts connections. (The harness's fakes answer every request alike, so
/// one request's reply cannot be told from another's.)
struct KeyedSlowBackend {
    addr: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

const SLOW_DELAY: Duration = Duration::from_millis(500);

impl KeyedSlowBackend {
    fn start() -> KeyedSlowBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = listener.local_addr().expect("local_addr").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, stopped) = (connections.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let stopped = stopped.clone();
                thread::spawn(move || Self::serve(stream, &stopped));
            }
        });
        KeyedSlowBackend {
            addr,
            connections,
            stop,
        }
    }

    fn serve(stream: TcpStream, stop: &AtomicBool) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while !stop.load(Ordering::SeqCst) {
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if line.ends_with('\n') => {}
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(_) => return,
            }
            let key = line.split_whitespace().nth(1).unwrap_or("?").to_string();
            line.clear();
            if key.starts_with("slow") {
                let end = Instant::now() + SLOW_DELAY;
                while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(10));
                }
            }
            let reply = format!("VALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len());
            if writer.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }
}

impl Drop for KeyedSlowBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the acceptor
    }
}

/// Two blind_forward routes: keys `a:*` to backend `a`, every other key to backend `b`.
fn two_route_config(port: u16, a: &str, b: &str) -> String {
    format!(
        "workers: 1\n\
         listeners:\n  - name: main\n    bind: 127.0.0.1:{port}\n\
         backends:\n  a:\n    servers: [\"{a}\"]\n    timeout: 1s\n  b:\n    servers: [\"{b}\"]\n    timeout: 1s\n\
         routes:\n\
         \x20 - name: a\n    match: \"a:*\"\n    strategy: blind_forward\n    backend: a\n\
         \x20 - name: rest\n    match: \"*\"\n    strategy: blind_forward\n    backend: b\n"
    )
}

// ---------------------------------------------------------------------------------------------
// A real memcached dying and coming back
// ---------------------------------------------------------------------------------------------

/// memcached frozen (SIGSTOP) so that 200 pipelined requests are all in flight, then SIGKILLed:
/// each request gets exactly one reply, in order (sets `SERVER_ERROR backend connection lost`,
/// gets a miss). With the backend down, new requests fail fast; a new memcached on the same port
/// is used again once the proxy's connect backoff (at most 2 s) has passed.
#[test]
fn killed_backend_answers_each_in_flight_request_once_then_fails_fast_then_recovers() {
    let mut mc = Memcached::start();
    let port = mc.port();
    // All 200 requests must be at the backend when it dies: a window that wide.
    let b = BlindForward::new(&mc.addr())
        .timeout("3s")
        .listener_option("max_inflight_requests: 256")
        .start();
    let mut c = b.client();
    assert_eq!(c.set("warm", b"up", 0, 0), "STORED");

    freeze(mc.pid());
    let forwarded_before = b.client().stat("backend_requests");
    let errors_before = b.client().stat("backend_errors");
    let mut pipeline = Vec::new();
    let mut expected: Vec<&[u8]> = Vec::new();
    for i in 0..200 {
        if i % 5 == 4 {
            pipeline.extend_from_slice(format!("get key{}\r\n", i - 1).as_bytes());
            expected.push(b"END\r\n");
        } else {
            pipeline.extend_from_slice(&set_request(&format!("key{i}"), b"some value", false));
            expected.push(CONNECTION_LOST);
        }
    }
    c.send(&pipeline);
    wait_until(
        Duration::from_secs(5),
        "the proxy has forwarded all 200 requests",
        || b.client().stat("backend_requests") >= forwarded_before + 200,
    );
    mc.kill();

    for (i, want) in expected.iter().enumerate() {
        let got = if i % 5 == 4 {
            c.read_reply_retrieval()
        } else {
            c.read_line_raw()
        };
        assert_bytes(&got, want, &format!("reply {i} of 200 in-flight requests"));
    }
    // Nothing more was queued before this reply: no request was answered twice.
    assert_still_works(&mut c);
    assert!(
        b.client().stat("backend_errors") >= errors_before + 200,
        "200 failed requests are counted in backend_errors"
    );

    // Down: no waiting for the 3 s request timeout.
    let start = Instant::now();
    let reply = c.request(&set_request("down", b"x", false));
    assert_one_of(
        &reply,
        &[CONNECT_FAILED, UNAVAILABLE],
        "set with the backend down",
    );
    c.send(b"get down\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get with the backend down",
    );
    assert_bytes(
        &c.request(b"mg down v\r\n"),
        b"EN\r\n",
        "mg with the backend down",
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "requests to a dead backend took {:?}; they must fail fast",
        start.elapsed()
    );

    // Stay down long enough for the connect backoff (50 ms, doubling) to reach its 2 s cap:
    // uncapped, the next attempt after 3.3 s of failures would come at 6.35 s.
    let failures = b.client().stat("backend_connect_failures");
    while start.elapsed() < Duration::from_millis(3300) {
        let reply = c.request(b"delete down\r\n");
        assert_one_of(
            &reply,
            &[CONNECT_FAILED, UNAVAILABLE],
            "delete, backend down",
        );
        thread::sleep(Duration::from_millis(20)); // the client's pace, not a wait
    }
    assert!(
        b.client().stat("backend_connect_failures") >= failures + 4,
        "the proxy kept retrying the connect"
    );

    // Back on the same port: served again within the capped backoff (2 s) and some slack.
    let _mc2 = MemcachedOnPort::start(port);
    let restarted = Instant::now();
    let mut last = Vec::new();
    wait_until(
        Duration::from_millis(2600),
        "the proxy serves the restarted memcached",
        || {
            last = c.request(&set_request("back", b"again", false));
            if last == b"STORED\r\n" {
                return true;
            }
            assert_one_of(&last, &DEAD_BACKEND_ERRORS, "set while reconnecting");
            false
        },
    );
    eprintln!("served again {:?} after the restart", restarted.elapsed());
    assert_eq!(c.get("back").as_deref(), Some(&b"again"[..]));
}

/// memcached SIGKILLed while a pipeline of (set k, get k) pairs streams through, and the
/// stream goes on after the kill: every request gets exactly one reply, in order, each the
/// normal one or a failure (a `SERVER_ERROR` for a set, a miss for a get); a hit is always its
/// own key's value; every request sent after the kill fails.
#[test]
fn backend_killed_mid_pipeline_answers_every_request_once_in_order() {
    const BEFORE_KILL: usize = 100;
    const PAIRS: usize = 400;
    let mut mc = Memcached::start();
    let b = BlindForward::new(&mc.addr()).timeout("3s").start();
    let mut c = b.client();
    let value = |i: usize| format!("{i:0>8}").repeat(125).into_bytes(); // 1000 bytes
    let pairs = move |range: std::ops::Range<usize>| {
        let mut bytes = Vec::new();
        for i in range {
            bytes.extend_from_slice(&set_request(&format!("key{i}"), &value(i), false));
            bytes.extend_from_slice(format!("get key{i}\r\n").as_bytes());
        }
        bytes
    };
    let (killed_tx, killed) = std::sync::mpsc::channel::<()>();
    let mut writer = c.stream().try_clone().expect("clone");
    let writing = thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&pairs(0..BEFORE_KILL))?;
        killed
            .recv_timeout(Duration::from_secs(10))
            .expect("the test kills memcached");
        // Keep the stream going in small writes while the proxy notices the death.
        for start in (BEFORE_KILL..PAIRS).step_by(10) {
            writer.write_all(&pairs(start..start + 10))?;
        }
        Ok(())
    });

    let (mut stored, mut failed, mut hits) = (0, 0, 0);
    for i in 0..PAIRS {
        if i == 20 {
            mc.kill();
            killed_tx.send(()).expect("writer waits");
        }
        let reply = c.read_line_raw();
        if reply == b"STORED\r\n" {
            assert!(
                i < BEFORE_KILL,
                "set key{i}, sent after the kill, was STORED"
            );
            stored += 1;
        } else {
            assert_one_of(&reply, &DEAD_BACKEND_ERRORS, &format!("set key{i}"));
            failed += 1;
        }
        let reply = c.read_reply_retrieval();
        if reply != b"END\r\n" {
            let mut want = format!("VALUE key{i} 0 1000\r\n").into_bytes();
            want.extend_from_slice(&value(i));
            want.extend_from_slice(b"\r\nEND\r\n");
            assert_bytes(&reply, &want, &format!("get key{i}"));
            hits += 1;
        }
    }
    writing.join().expect("writer").expect("write pipeline");
    assert!(
        stored >= 20,
        "the first 20 sets were answered before the kill"
    );
    assert!(failed >= PAIRS - BEFORE_KILL, "{failed} sets failed");
    assert_still_works(&mut c);
    eprintln!("{stored} stored, {failed} failed, {hits} hits");
}

/// A backend that never comes up: connect failures, then fast failures during the backoff.
#[test]
fn connect_failure_then_backoff_answers_server_errors_and_misses() {
    // A port nobody listens on.
    let dead = format!("127.0.0.1:{}", free_port());
    let b = BlindForward::new(&dead).timeout("3s").start();
    let mut c = b.client();
    let first = c.request(&set_request("k", b"v", false));
    assert_bytes(&first, CONNECT_FAILED, "first request to a refused port");
    // Backoff doubles from 50 ms, so some later request lands inside it.
    let mut saw_unavailable = false;
    for _ in 0..50 {
        let reply = c.request(b"delete k\r\n");
        assert_one_of(
            &reply,
            &[CONNECT_FAILED, UNAVAILABLE],
            "delete, backend down",
        );
        if reply == UNAVAILABLE {
            saw_unavailable = true;
            break;
        }
    }
    assert!(
        saw_unavailable,
        "never `SERVER_ERROR backend unavailable` during backoff"
    );
    let errors = b.client().stat("backend_errors");
    c.send(b"get k\r\ngets k j\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get, backend down");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "gets, backend down");
    assert_bytes(&c.request(b"mg k v\r\n"), b"EN\r\n", "mg, backend down");
    assert_eq!(
        b.client().stat("backend_errors"),
        errors + 3,
        "each failed retrieval counts in backend_errors"
    );
    // noreply: nothing at all comes back, the next reply is the next request's.
    c.send(&set_request("k", b"v", true));
    c.send(b"delete k noreply\r\nversion\r\n");
    assert!(c.read_line().starts_with("VERSION "));
}

// ---------------------------------------------------------------------------------------------
// Fake backends: hang, slow, close mid-reply, garbage
// ---------------------------------------------------------------------------------------------

#[test]
fn never_answering_backend_times_out_each_request_once() {
    let fake = FakeBackend::start(Behavior::NeverAnswer);
    let b = BlindForward::new(&fake.addr()).timeout("200ms").start();
    let mut c = b.client();
    let timeouts = b.client().stat("backend_timeouts");
    let errors = b.client().stat("backend_errors");

    let start = Instant::now();
    assert_bytes(&c.request(&set_request("k", b"v", false)), TIMEOUT, "set");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(180) && took < Duration::from_secs(2),
        "set timed out after {took:?}, the timeout is 200ms"
    );
    c.send(b"get k\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get");
    assert_eq!(b.client().stat("backend_timeouts"), timeouts + 2);
    assert_eq!(b.client().stat("backend_errors"), errors + 2);

    // A pipeline in flight together: one reply each, in order.
    let mut pipeline = set_request("a", b"1", false);
    pipeline.extend_from_slice(b"get a b\r\ndelete a\r\nmg a v\r\nincr n 1\r\nversion\r\n");
    c.send(&pipeline);
    assert_bytes(&c.read_line_raw(), TIMEOUT, "pipelined set");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "pipelined get");
    assert_bytes(&c.read_line_raw(), TIMEOUT, "pipelined delete");
    assert_bytes(&c.read_line_raw(), b"EN\r\n", "pipelined mg");
    assert_bytes(&c.read_line_raw(), TIMEOUT, "pipelined incr");
    assert!(c.read_line().starts_with("VERSION "));
    assert_eq!(b.client().stat("backend_timeouts"), timeouts + 7);

    // noreply requests that time out send nothing: the first reply is version's.
    c.send(&set_request("q", b"1", true));
    c.send(b"delete q noreply\r\nversion\r\n");
    assert!(c.read_line().starts_with("VERSION "));
    assert!(
        fake.connections() >= 2,
        "each timeout resets the backend connection"
    );
}

/// Request A times out; request B, sent after A's `SERVER_ERROR timeout`, must get B's own
/// reply. A late reply to A arriving on the old connection must never be matched to B.
#[test]
fn late_reply_after_timeout_is_never_given_to_the_next_request() {
    let fake = KeyedSlowBackend::start();
    let b = BlindForward::new(&fake.addr).timeout("200ms").start();
    let mut c = b.client();
    c.send(b"get slowA\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"END\r\n",
        "get slowA (timed out)",
    );
    c.send(b"get fastB\r\n");
    assert_bytes(
        &c.read_reply_retrieval(),
        b"VALUE fastB 0 5\r\nfastB\r\nEND\r\n",
        "get fastB after slowA timed out",
    );
    // Later requests too, after slowA's late reply was written to the old connection.
    let deadline = Instant::now() + SLOW_DELAY + Duration::from_millis(200);
    while Instant::now() < deadline {
        c.send(b"get fastC\r\n");
        assert_bytes(
            &c.read_reply_retrieval(),
            b"VALUE fastC 0 5\r\nfastC\r\nEND\r\n",
            "get fastC",
        );
    }
    assert_eq!(
        fake.connections.load(Ordering::SeqCst),
        2,
        "the timed-out connection was replaced exactly once"
    );
}

/// The same with the harness's SlowAnswer fake: A (`set`) times out; B (`delete`) sent just
/// after it must time out too (its own reply is 300 ms late), not take A's late `STORED`.
#[test]
fn late_reply_after_timeout_is_not_matched_with_slow_answer_fake() {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::from_millis(300)));
    let b = BlindForward::new(&fake.addr()).timeout("200ms").start();
    let mut c = b.client();
    assert_bytes(&c.request(&set_request("a", b"1", false)), TIMEOUT, "set a");
    assert_bytes(
        &c.request(b"delete b\r\n"),
        TIMEOUT,
        "delete b after set a timed out",
    );
    assert_eq!(
        fake.connections(),
        2,
        "the timed-out connection was replaced"
    );
}

#[test]
fn backend_closing_mid_reply_is_never_half_forwarded() {
    let fake = FakeBackend::start(Behavior::CloseMidReply);
    let b = BlindForward::new(&fake.addr()).timeout("2s").start();
    let mut c = b.client();
    let errors = b.client().stat("backend_errors");
    // The fake answers `VALUE k 0 10\r\nabc` and closes: the client sees a clean miss.
    c.send(b"get k\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get k");
    c.send(b"gets k\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "gets k");
    assert_bytes(&c.request(b"mg k v\r\n"), b"EN\r\n", "mg k");
    // Other commands get a SERVER_ERROR: never the fake's `VALUE` line.
    let reply = c.request(&set_request("k", b"v", false));
    assert_one_of(&reply, &[CONNECTION_LOST, MALFORMED], "set k");
    let reply = c.request(b"delete k\r\n");
    assert_one_of(&reply, &[CONNECTION_LOST, MALFORMED], "delete k");
    assert_still_works(&mut c);
    assert!(b.client().stat("backend_errors") >= errors + 5);
}

#[test]
fn garbage_from_backend_is_a_malformed_reply_error() {
    let fake = FakeBackend::start(Behavior::Garbage);
    let b = BlindForward::new(&fake.addr()).timeout("2s").start();
    let mut c = b.client();
    let errors = b.client().stat("backend_errors");
    c.send(b"get k\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get k");
    assert_bytes(&c.request(b"mg k v\r\n"), b"EN\r\n", "mg k");
    assert_bytes(
        &c.request(&set_request("k", b"v", false)),
        MALFORMED,
        "set k",
    );
    assert_bytes(&c.request(b"delete k\r\n"), MALFORMED, "delete k");
    assert_bytes(&c.request(b"incr k 1\r\n"), MALFORMED, "incr k");
    assert_bytes(&c.request(b"touch k 10\r\n"), MALFORMED, "touch k");
    assert_still_works(&mut c);
    assert_eq!(b.client().stat("backend_errors"), errors + 6);
}

/// A large reply is streamed to the client as it arrives. When the server dies after part of
/// it went out, that reply can be neither finished nor taken back: the client gets the part,
/// then its connection is closed (never an `END` that would pass a truncated value off as
/// whole), and the next client is served normally.
#[test]
fn a_streamed_reply_cut_by_its_server_closes_the_client_after_the_part_it_got() {
    const ANNOUNCED: usize = 1_000_000;
    const SENT: usize = 300_000;
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    let serving = thread::spawn(move || {
        // First connection: half a big value, then close. Later ones: an always-miss server.
        let (mut first, _) = server.accept().expect("accept");
        let mut line = String::new();
        BufReader::new(first.try_clone().expect("clone"))
            .read_line(&mut line)
            .expect("request line");
        let mut reply = format!("VALUE big 0 {ANNOUNCED}\r\n").into_bytes();
        reply.extend_from_slice(&vec![b'v'; SENT]);
        first.write_all(&reply).expect("partial reply");
        drop(first);
        if let Ok((second, _)) = server.accept() {
            let mut reader = BufReader::new(second.try_clone().expect("clone"));
            let mut writer = second;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let _ = writer.write_all(b"END\r\n");
                line.clear();
            }
        }
    });
    let b = BlindForward::new(&addr).timeout("5s").start();
    let mut stream = TcpStream::connect(b.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(b"get big\r\n").expect("request");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the client was neither closed nor sent more: {e} after {} bytes",
                got.len()
            ),
        }
    }
    let header = format!("VALUE big 0 {ANNOUNCED}\r\n");
    assert!(
        got.starts_with(header.as_bytes()),
        "the streamed header first: {:?}",
        String::from_utf8_lossy(&got[..got.len().min(40)])
    );
    let value = &got[header.len()..];
    assert!(
        value.iter().all(|&b| b == b'v'),
        "only the value's bytes, never an END or another reply"
    );
    assert!(
        value.len() <= SENT,
        "got {} bytes of a value the server sent {SENT} of",
        value.len()
    );
    let mut other = b.client();
    other.send(b"get other\r\n");
    assert_bytes(&other.read_reply_retrieval(), b"END\r\n", "the next client");
    drop(b);
    serving.join().expect("fake server");
}

/// A server that answers every request with garbage makes the proxy reset its connection once
/// per request: 300 events that each used to log a warning. The warnings are rate limited (a
/// few per kind per 10 s, then one line saying how many were suppressed), so a broken server
/// cannot flood stderr; every request is still answered and counted.
#[test]
fn a_storm_of_backend_failures_logs_a_few_lines_not_one_per_event() {
    const REQUESTS: usize = 300;
    let fake = FakeBackend::start(Behavior::Garbage);
    let b = BlindForward::new(&fake.addr()).timeout("2s").start();
    let mut c = b.client();
    let errors = b.client().stat("backend_errors");
    for i in 0..REQUESTS {
        c.send(format!("get k{i}\r\n").as_bytes());
        assert_bytes(
            &c.read_reply_retrieval(),
            b"END\r\n",
            "a get the server garbled",
        );
    }
    assert_eq!(b.client().stat("backend_errors"), errors + REQUESTS as u64);
    let log = b.stderr_log();
    let bad_reply_lines = log.lines().filter(|l| l.contains("bad reply")).count();
    assert!(
        (1..=10).contains(&bad_reply_lines),
        "{bad_reply_lines} 'bad reply' lines for {REQUESTS} garbled replies (want 1 to 10):\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[test]
fn flush_all_reaches_every_backend_and_fails_if_one_is_down() {
    let mut mc_a = Memcached::start();
    let mc_b = Memcached::start();
    let b = Bifrost::start_templated(|p| two_route_config(p, &mc_a.addr(), &mc_b.addr()), &[]);
    let mut c = b.client();
    assert_eq!(c.set("a:1", b"A", 0, 0), "STORED");
    assert_eq!(c.set("b:1", b"B", 0, 0), "STORED");
    // The routes put each key on its own backend.
    assert_eq!(mc_a.client().get("a:1").as_deref(), Some(&b"A"[..]));
    assert_eq!(mc_a.client().get("b:1"), None);
    assert_eq!(mc_b.client().get("b:1").as_deref(), Some(&b"B"[..]));

    assert_bytes(
        &c.request(b"flush_all\r\n"),
        b"OK\r\n",
        "flush_all, both up",
    );
    assert_eq!(
        mc_a.client().get("a:1"),
        None,
        "flush_all reached backend a"
    );
    assert_eq!(
        mc_b.client().get("b:1"),
        None,
        "flush_all reached backend b"
    );

    assert_eq!(c.set("b:2", b"B2", 0, 0), "STORED");
    mc_a.kill();
    let reply = c.request(b"flush_all\r\n");
    assert_one_of(
        &reply,
        &DEAD_BACKEND_ERRORS,
        "flush_all with backend a down",
    );
    assert_eq!(
        mc_b.client().get("b:2"),
        None,
        "flush_all still reached the live backend"
    );
    // One reply only; the connection goes on.
    assert_eq!(c.set("b:3", b"B3", 0, 0), "STORED");
    assert_eq!(c.get("b:3").as_deref(), Some(&b"B3"[..]));
}

#[test]
fn key_matching_no_route_is_refused_without_reaching_a_backend() {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::ZERO));
    let addr = fake.addr();
    let b = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\nlisteners:\n  - name: main\n    bind: 127.0.0.1:{port}\n\
                 backends:\n  x:\n    servers: [\"{addr}\"]\n\
                 routes:\n  - name: x\n    match: \"x*\"\n    strategy: blind_forward\n    backend: x\n"
            )
        },
        &[],
    );
    let mut c = b.client();
    assert_bytes(&c.request(b"get y\r\n"), NO_ROUTE, "get y");
    // The refused set's value is consumed, not read as a command.
    let mut req = set_request("y", b"get x2", false);
    req.extend_from_slice(b"delete y\r\nmg y v\r\n");
    c.send(&req);
    assert_bytes(&c.read_line_raw(), NO_ROUTE, "set y");
    assert_bytes(&c.read_line_raw(), NO_ROUTE, "delete y");
    assert_bytes(&c.read_line_raw(), NO_ROUTE, "mg y");
    fake.assert_untouched();
    c.send(b"get x1\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "get x1");
    assert_bytes(&fake.received(), b"get x1\r\n", "what reached the backend");
}

// ---------------------------------------------------------------------------------------------
// Clients going away
// ---------------------------------------------------------------------------------------------

/// Client A pipelines sets to a slow backend and disconnects before the replies; client B,
/// queued behind A's orphaned requests on the same backend connection, gets its own replies.
#[test]
fn client_disconnecting_with_requests_in_flight_does_not_disturb_others() {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::from_millis(150)));
    let b = BlindForward::new(&fake.addr()).timeout("5s").start();
    let mut a = b.client();
    let mut sets = Vec::new();
    for i in 0..4 {
        sets.extend_from_slice(&set_request(&format!("a{i}"), b"1", false));
    }
    a.send(&sets);
    fake.wait_for_bytes(sets.len(), Duration::from_secs(5));
    drop(a);

    let mut c = b.client();
    c.send(b"get b1\r\ndelete b1\r\nmg b1 v\r\nversion\r\n");
    assert_bytes(&c.read_reply_retrieval(), b"END\r\n", "B's get");
    assert_bytes(&c.read_line_raw(), b"NOT_FOUND\r\n", "B's delete");
    assert_bytes(&c.read_line_raw(), b"EN\r\n", "B's mg");
    assert!(c.read_line().starts_with("VERSION "));
    assert_eq!(c.set("b2", b"x", 0, 0), "STORED");
    assert_eq!(
        b.client().stat("backend_errors"),
        0,
        "no backend failure involved"
    );
}
