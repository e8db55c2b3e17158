//! End-to-end tests of the admin HTTP API through the real binary: the endpoints, HTTP/1.1
//! keep-alive and pipelining, the request limits and timeouts, the connection cap, the bearer
//! token, the refusal of an unauthenticated non-loopback bind, and that a slow admin client
//! takes nothing from the memcached data path.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{request_bytes, HttpClient};
use common::{free_port, rss_bytes, wait_until, Bifrost, BlindForward, Memcached, Proc, TempFile};

/// A bifrost blind-forwarding to `backend` with `admin: {bind: 127.0.0.1:PORT, EXTRA}` and the
/// extra backend option lines; returns it and the admin address.
fn start_with_admin(
    backend: &str,
    admin_extra: &str,
    backend_options: &[&str],
) -> (Bifrost, String) {
    let mut config = BlindForward::new(backend);
    for line in backend_options {
        config = config.backend_option(line);
    }
    let mut admin_port = 0;
    let bifrost = Bifrost::start_templated(
        |port| {
            admin_port = free_port();
            let sep = if admin_extra.is_empty() { "" } else { ", " };
            format!(
                "{}admin: {{bind: '127.0.0.1:{admin_port}'{sep}{admin_extra}}}\n",
                config.yaml(port)
            )
        },
        &[],
    );
    // The admin API is bound before the workers start, so it answers once the listener does.
    (bifrost, format!("127.0.0.1:{admin_port}"))
}

fn start(admin_extra: &str) -> (Memcached, Bifrost, String) {
    let mc = Memcached::start();
    let (bifrost, admin) = start_with_admin(&mc.addr(), admin_extra, &[]);
    (mc, bifrost, admin)
}

#[test]
fn health_metrics_and_stats_answer() {
    let (_mc, bifrost, admin) = start("");
    assert!(
        bifrost
            .stderr_log()
            .contains(&format!("admin API on {admin}")),
        "{}",
        bifrost.stderr_log()
    );
    let mut http = HttpClient::connect(&admin);
    let r = http.get("/health");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("Content-Length"), Some("3"));
    let r = http.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let r = http.get("/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.json().is_object(), "{}", r.text());
    let r = http.get("/warm");
    assert_eq!(r.status, 200);
    assert!(r.json().is_array(), "{}", r.text());
    assert_eq!(http.get("/warm/987654321").status, 404);
    assert_eq!(
        http.request("DELETE", "/warm/987654321", &[], b"").status,
        404
    );
    let r = http.request("HEAD", "/health", &[], b"");
    assert_eq!((r.status, r.header("Content-Length")), (200, Some("3")));
    assert!(r.body.is_empty());
    // Still the same connection: HEAD's answer had no body to confuse the next one.
    assert_eq!(http.get("/health").status, 200);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let (_mc, _bifrost, admin) = start("");
    let mut http = HttpClient::connect(&admin);
    for path in ["/", "/nope", "/healthz", "/warm/abc", "/metrics/x"] {
        assert_eq!(http.get(path).status, 404, "{path}");
    }
    let r = http.request("POST", "/health", &[], b"x");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = http.request("PUT", "/warm", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, POST"));
    let r = http.request("POST", "/warm/1", &[], b"");
    assert_eq!(
        (r.status, r.header("Allow")),
        (405, Some("GET, HEAD, DELETE"))
    );
    // None of these closed the connection.
    assert_eq!(http.get("/health").status, 200);
}

#[test]
fn ready_is_200_while_the_server_lives_and_503_naming_the_route_once_it_is_down() {
    let mut mc = Memcached::start();
    let (_bifrost, admin) = start_with_admin(
        &mc.addr(),
        "",
        &["health: {interval: 100ms, failure_limit: 1, retry_after: 1s}"],
    );
    let mut http = HttpClient::connect(&admin);
    let r = http.get("/ready");
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    mc.kill();
    let mut last = None;
    wait_until(Duration::from_secs(10), "/ready answers 503", || {
        let r = http.get("/ready");
        let flipped = r.status == 503;
        last = Some(r);
        flipped
    });
    let r = last.expect("a response");
    assert_eq!(
        r.text(),
        "all\n",
        "the body names the route without a healthy target"
    );
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let (_mc, _bifrost, admin) = start("");
    let mut http = HttpClient::connect(&admin);
    let local = http.stream().local_addr().expect("local addr");
    for _ in 0..3 {
        assert_eq!(http.get("/health").status, 200);
    }
    assert_eq!(
        http.stream().local_addr().expect("local addr"),
        local,
        "one connection"
    );
    let mut pipeline = Vec::new();
    for path in ["/health", "/nope", "/ready", "/warm", "/health"] {
        pipeline.extend(request_bytes(&admin, "GET", path, &[], b""));
    }
    http.send_raw(&pipeline);
    let statuses: Vec<u16> = (0..5).map(|_| http.read_response().status).collect();
    assert_eq!(statuses, [200, 404, 200, 200, 200]);
    let bodies: Vec<String> = ["/ready", "/health"]
        .iter()
        .map(|p| {
            http.send_raw(&request_bytes(&admin, "GET", p, &[], b""));
            http.read_response().text()
        })
        .collect();
    assert_eq!(bodies, ["ready\n", "ok\n"]);
    // Connection: close is honoured after the answer.
    let r = http.request("GET", "/health", &[("Connection", "close")], b"");
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    http.expect_closed();
}

#[test]
fn a_malformed_request_gets_400_and_a_close() {
    let (_mc, _bifrost, admin) = start("");
    let mut http = HttpClient::connect(&admin);
    http.send_raw(b"HELLO THERE\r\n\r\nGET /health HTTP/1.1\r\n\r\n");
    let r = http.read_response();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Connection"), Some("close"));
    http.expect_closed();
    let mut http = HttpClient::connect(&admin);
    http.send_raw(b"POST /warm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(matches!(http.read_response().status, 400 | 411));
    http.expect_closed();
}

#[test]
fn an_oversized_head_gets_431_and_a_big_body_413() {
    let (_mc, _bifrost, admin) = start("");
    let mut http = HttpClient::connect(&admin);
    let mut head = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
    head.resize(16 * 1024, b'f');
    head.extend_from_slice(b"\r\n\r\n");
    // The server may stop reading before all of it is sent; the answer is what matters.
    let _ = http.try_send_raw(&head);
    let r = http.read_response();
    assert_eq!(r.status, 431);
    http.expect_closed();
    let mut http = HttpClient::connect(&admin);
    http.send_raw(b"POST /warm HTTP/1.1\r\nContent-Length: 4194305\r\n\r\n");
    assert_eq!(http.read_response().status, 413);
    http.expect_closed();
}

#[test]
fn a_slow_request_gets_408_then_a_close() {
    let (_mc, _bifrost, admin) = start("request_timeout: 300ms");
    let mut http = HttpClient::connect(&admin);
    let started = Instant::now();
    http.send_raw(b"GET /health HTTP/1.1\r\nHost: a");
    let r = http.read_response();
    let took = started.elapsed();
    assert_eq!(r.status, 408);
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(4),
        "408 after {took:?}"
    );
    http.expect_closed();
    // A body that stops short is timed the same way.
    let mut http = HttpClient::connect(&admin);
    http.send_raw(b"POST /warm HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"from\":");
    assert_eq!(http.read_response().status, 408);
    http.expect_closed();
    // An idle keep-alive connection is not a slow request: it is still open after the
    // request timeout.
    let mut idle = HttpClient::connect(&admin);
    assert_eq!(idle.get("/health").status, 200);
    // A slow request started after the idle connection's last answer: its 408 shows the
    // request timeout has passed for the idle connection too.
    let mut slow = HttpClient::connect(&admin);
    slow.send_raw(b"GET /health HTTP/1.1\r\nHost: a");
    assert_eq!(slow.read_response().status, 408);
    assert_eq!(idle.get("/health").status, 200);
}

/// A connection with a request in progress: a POST whose head the server has taken (it
/// answered `100 Continue`) and whose body has not all come.
fn busy_connection(admin: &str) -> HttpClient {
    let mut http = HttpClient::connect(admin);
    http.send_raw(
        b"POST /warm HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    let mut interim = [0u8; 25];
    http.stream()
        .read_exact(&mut interim)
        .expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    http
}

#[test]
fn the_connection_cap_refuses_a_connection_only_when_every_one_is_busy() {
    let (_mc, _bifrost, admin) = start("max_connections: 2");
    let mut first = busy_connection(&admin);
    let mut second = busy_connection(&admin);
    let mut extra = std::net::TcpStream::connect(&admin).expect("the kernel still accepts");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
        "the extra connection is closed (or told 503): {answer}"
    );
    // The busy ones were left alone: their requests complete (400: `{}` names no backend).
    first.send_raw(b"{}");
    assert_eq!(first.read_response().status, 400);
    second.send_raw(b"{}");
    assert_eq!(second.read_response().status, 400);
    // Now both sit idle between requests: a new connection takes the older one's slot.
    let r = HttpClient::connect(&admin).get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        metric(&r.text(), "bifrost_admin_connections_rejected_total"),
        Some(1)
    );
    assert_eq!(
        metric(&r.text(), "bifrost_admin_connections_evicted_total"),
        Some(1)
    );
    first.expect_closed();
    assert_eq!(
        second.get("/health").status,
        200,
        "the younger idle one stayed"
    );
}

#[test]
fn a_token_guards_post_and_delete() {
    let (_mc, _bifrost, admin) = start("token: 'open-sesame-42-4242'");
    let mut http = HttpClient::connect(&admin);
    let body = br#"{"from":"b1","to":"b1","keys":["a"]}"#;
    let r = http.request("POST", "/warm", &[], body);
    assert_eq!(r.status, 401);
    assert!(
        r.header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
    let r = http.request(
        "POST",
        "/warm",
        &[("Authorization", "Bearer open-sesame-42-424")],
        body,
    );
    assert_eq!(r.status, 401);
    let r = http.request(
        "POST",
        "/warm",
        &[("Authorization", "Basic open-sesame-42-4242")],
        body,
    );
    assert_eq!(r.status, 401);
    let r = http.request("DELETE", "/warm/1", &[], b"");
    assert_eq!(r.status, 401);
    let r = http.request(
        "POST",
        "/warm",
        &[("Authorization", "Bearer open-sesame-42-4242")],
        body,
    );
    assert_ne!(r.status, 401, "{}", r.text());
    assert!(
        r.header("Content-Type") == Some("application/json"),
        "{:?}",
        r.headers
    );
    let r = http.request(
        "DELETE",
        "/warm/987654321",
        &[("Authorization", "Bearer open-sesame-42-4242")],
        b"",
    );
    assert_eq!(r.status, 404);
    // Reads stay open.
    assert_eq!(http.get("/health").status, 200);
    assert_eq!(http.get("/warm").status, 200);
}

#[test]
fn a_request_refused_by_its_head_is_answered_before_its_body_is_held() {
    // Without the token, a POST announcing a 4 MB body is refused as soon as its head is in:
    // the server holds no body for a client that may not start a job.
    let (_mc, _bifrost, admin) = start("token: 'open-sesame-42-4242'");
    for head in [
        "POST /warm HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n",
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n",
        "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n",
    ] {
        let mut http = HttpClient::connect(&admin);
        http.send_raw(head.as_bytes());
        let r = http.read_response_to("POST");
        assert!(
            [401, 404, 405].contains(&r.status),
            "{head:?}: {} {}",
            r.status,
            r.text()
        );
        assert_eq!(r.header("Connection"), Some("close"), "{head:?}");
        http.expect_closed();
    }
    // With the token, the same head waits for its body.
    let mut http = HttpClient::connect(&admin);
    http.set_timeout(Duration::from_millis(300));
    http.send_raw(
        b"POST /warm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer open-sesame-42-4242\r\n\
          Content-Length: 40\r\n\r\n",
    );
    assert!(
        http.try_read_response("POST").is_err(),
        "no answer before the body"
    );
}

#[test]
fn a_token_file_is_read_at_start() {
    let secret = TempFile::new("admin-token", "txt", b"from-a-file-0123456\n");
    // Readable by others: on a loopback bind, a warning, not a refusal.
    std::fs::set_permissions(
        secret.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let (_mc, bifrost, admin) = start(&format!("token_file: '{}'", secret.path().display()));
    let log = bifrost.stderr_log();
    assert!(
        log.contains("WARN") && log.contains("is readable by group or others (mode 0644)"),
        "{log}"
    );
    let mut http = HttpClient::connect(&admin);
    assert_eq!(http.request("POST", "/warm", &[], b"{}").status, 401);
    let r = http.request(
        "POST",
        "/warm",
        &[("Authorization", "Bearer from-a-file-0123456")],
        b"{}",
    );
    assert_ne!(r.status, 401);
}

const BIN: &str = env!("CARGO_BIN_EXE_bifrost");

const OPEN_BIND_REFUSAL: &str = "admin.bind: 0.0.0.0:";

fn open_bind_config(admin: &str) -> String {
    BlindForward::new("127.0.0.1:11211").yaml(free_port()) + admin
}

#[test]
fn a_non_loopback_bind_without_a_token_is_refused_by_check_and_at_start() {
    let yaml = open_bind_config(&format!("admin: {{bind: '0.0.0.0:{}'}}\n", free_port()));
    let out = Bifrost::check(&yaml);
    assert!(
        !out.status.success(),
        "--check accepted it:\n{}",
        out.stderr
    );
    for needle in [
        OPEN_BIND_REFUSAL,
        "is not a loopback address and no admin.token or admin.token_file is set",
        "set a token or bind to 127.0.0.1",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in:\n{}",
            out.stderr
        );
    }

    let config = TempFile::new("open-admin", "yaml", yaml.as_bytes());
    let mut proc = Proc::spawn(
        "bifrost",
        Command::new(BIN).arg("--config").arg(config.path()),
    );
    let status = proc
        .wait_exit(Duration::from_secs(10))
        .expect("bifrost refuses to start");
    assert!(!status.success());
    assert!(proc.log().contains(OPEN_BIND_REFUSAL), "{}", proc.log());

    // With a token, the same bind passes --check.
    let yaml = open_bind_config(&format!(
        "admin: {{bind: '0.0.0.0:{}', token: a-t0ken-of-16-bytes}}\n",
        free_port()
    ));
    let out = Bifrost::check(&yaml);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

#[test]
fn a_token_file_that_is_a_device_or_a_fifo_is_refused_at_once() {
    let fifo = std::env::temp_dir().join(format!("bifrost-admin-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    for (path, kind) in [
        (std::path::Path::new("/dev/zero"), "a device or socket"),
        (fifo.as_path(), "a FIFO"),
    ] {
        let yaml = BlindForward::new("127.0.0.1:11211").yaml(free_port())
            + &format!(
                "admin: {{bind: '127.0.0.1:{}', token_file: '{}'}}\n",
                free_port(),
                path.display()
            );
        let started = Instant::now();
        let out = Bifrost::check(&yaml);
        assert!(!out.status.success(), "{}", out.stderr);
        let want = format!(
            "admin.token_file: the token file '{}' is {kind}, not a regular file",
            path.display()
        );
        assert!(
            out.stderr.contains(&want),
            "{want:?} not in:\n{}",
            out.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn a_taken_admin_port_is_a_start_up_error_naming_admin_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let yaml = BlindForward::new("127.0.0.1:11211").yaml(free_port())
        + &format!("admin: {{bind: '127.0.0.1:{port}'}}\n");
    let config = TempFile::new("taken-admin", "yaml", yaml.as_bytes());
    let mut proc = Proc::spawn(
        "bifrost",
        Command::new(BIN).arg("--config").arg(config.path()),
    );
    let status = proc
        .wait_exit(Duration::from_secs(10))
        .expect("bifrost exits");
    assert!(!status.success());
    let log = proc.log();
    assert!(
        log.contains(&format!("admin.bind 127.0.0.1:{port}")),
        "{log}"
    );
}

#[test]
fn a_slow_admin_client_does_not_hold_up_the_data_path() {
    let (_mc, bifrost, admin) = start("");
    // Several admin clients each hold a half-sent request, and one pipelines without reading.
    let mut slow: Vec<HttpClient> = (0..4).map(|_| HttpClient::connect(&admin)).collect();
    for c in slow.iter_mut() {
        c.send_raw(b"POST /warm HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"fr");
    }
    let mut greedy = HttpClient::connect(&admin);
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(request_bytes(&admin, "GET", "/stats", &[], b""));
    }
    greedy.send_raw(&pipeline);
    let mut client = bifrost.client();
    let started = Instant::now();
    for i in 0..200 {
        let key = format!("k{i}");
        assert_eq!(client.set(&key, b"v", 0, 0), "STORED");
        assert_eq!(client.get(&key).as_deref(), Some(&b"v"[..]));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "400 requests took {:?}",
        started.elapsed()
    );
    // And the admin API itself still serves others.
    assert_eq!(HttpClient::connect(&admin).get("/health").status, 200);
}

#[test]
fn sigterm_stops_the_admin_thread_too() {
    let (_mc, mut bifrost, admin) = start("");
    let mut http = HttpClient::connect(&admin);
    assert_eq!(http.get("/health").status, 200);
    let status = bifrost.terminate();
    assert!(status.success(), "exit {status}");
    assert!(
        HttpClient::try_connect(&admin).is_err(),
        "admin port closed"
    );
}

/// How the connections of a [`Filler`] misbehave.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Connect and send nothing.
    Silent,
    /// Send a request head one byte per second, never finishing it.
    Slow,
}

/// A thread that keeps `n` misbehaving connections open to the admin API: whenever one is
/// closed (by a timeout or an eviction), it connects again at once, as an attacker would.
struct Filler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Filler {
    fn start(admin: &str, n: usize, how: Misbehaviour) -> Filler {
        use std::io::{ErrorKind, Write};
        use std::net::TcpStream;
        use std::sync::atomic::{AtomicBool, Ordering};
        let connect = |admin: &str| {
            let s = TcpStream::connect(admin).expect("the kernel accepts the connection");
            s.set_nonblocking(true).expect("nonblocking");
            (s, 0usize)
        };
        let mut conns: Vec<(TcpStream, usize)> = (0..n).map(|_| connect(admin)).collect();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let admin = admin.to_string();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let head =
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut reconnects = 0;
            let mut next_byte = Instant::now() + Duration::from_secs(1);
            while !stopping.load(Ordering::Relaxed) {
                let send = matches!(how, Misbehaviour::Slow) && Instant::now() >= next_byte;
                if send {
                    next_byte += Duration::from_secs(1);
                }
                for slot in conns.iter_mut() {
                    let mut buf = [0u8; 512];
                    let mut dead = match slot.0.read(&mut buf) {
                        Err(e) => e.kind() != ErrorKind::WouldBlock,
                        // Closed, or answered (408, 503): either way it no longer fills a slot.
                        Ok(_) => true,
                    };
                    if !dead && send {
                        let byte = head.get(slot.1..=slot.1).unwrap_or(b"a");
                        dead = slot.0.write(byte).is_err();
                        slot.1 += 1;
                    }
                    if dead {
                        *slot = connect(&admin);
                        reconnects += 1;
                    }
                }
                // The pace of an attacker's loop, not a synchronisation.
                std::thread::sleep(Duration::from_millis(10));
            }
            reconnects
        });
        Filler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread; how many times it had to reconnect.
    fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("filler thread"))
            .unwrap_or(0)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The value of the un-labelled metric `name` in a /metrics body.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// With the admin connection cap (the default, 64) kept full by `how` clients, /health,
/// /ready and /metrics on fresh connections answer 200 promptly, again and again.
fn probes_answer_with_the_cap_full_of(how: Misbehaviour) {
    let (_mc, _bifrost, admin) = start("token: 'a-long-enough-admin-token'");
    let filler = Filler::start(&admin, 64, how);
    let mut latencies = Vec::new();
    let mut saw_full = false;
    // Long enough for the slow clients to be half way through their heads, and for the
    // header timeout (2 s) to have closed some.
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while i < 50 || Instant::now() < until {
        let path = ["/health", "/ready", "/metrics"][i % 3];
        let started = Instant::now();
        let r = HttpClient::connect(&admin).get(path);
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{how:?}: probe {i} of {path}: {}", r.text());
        assert!(
            took < Duration::from_secs(3),
            "{how:?}: {path} took {took:?}"
        );
        if path == "/health" {
            latencies.push(took);
        }
        if path == "/metrics" {
            saw_full |= metric(&r.text(), "bifrost_admin_connections") == Some(64);
        }
        i += 1;
    }
    let reconnects = filler.stop();
    let metrics = HttpClient::connect(&admin).get("/metrics").text();
    let evicted = metric(&metrics, "bifrost_admin_connections_evicted_total").unwrap_or(0);
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "{how:?}: /health with the cap full: median {median:?}, max {max:?} over {} probes; \
         {evicted} evicted, {reconnects} filler reconnects",
        latencies.len()
    );
    assert!(saw_full, "{how:?}: /metrics never saw the cap full");
    assert!(
        evicted > 0,
        "{how:?}: no connection was evicted:\n{metrics}"
    );
}

#[test]
fn probes_answer_while_the_cap_is_full_of_silent_clients() {
    probes_answer_with_the_cap_full_of(Misbehaviour::Silent);
}

#[test]
fn probes_answer_while_the_cap_is_full_of_slow_clients() {
    probes_answer_with_the_cap_full_of(Misbehaviour::Slow);
}

#[test]
fn clients_without_the_token_announcing_big_bodies_hold_little_memory() {
    let (_mc, bifrost, admin) = start("token: 'a-long-enough-admin-token'");
    assert_eq!(HttpClient::connect(&admin).get("/health").status, 200);
    let before = rss_bytes(bifrost.pid());
    const BODY: usize = 4 * 1024 * 1024;
    let heads: Vec<&str> = std::iter::repeat("GET /health")
        .take(56)
        .chain(std::iter::repeat("POST /warm").take(8))
        .collect();
    // Each client sends its head, reads the status line if an answer comes (it does from the
    // head alone once refused early; the old server waited for the body), then sends all but
    // one byte of the body (as far as the server takes it) and holds its connection.
    let senders: Vec<_> = heads
        .into_iter()
        .map(|head| {
            let admin = admin.clone();
            std::thread::spawn(move || {
                let body = vec![b'x'; BODY - 1];
                let mut s = std::net::TcpStream::connect(&admin).expect("connect");
                s.set_write_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let first = format!("{head} HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n");
                let _ = std::io::Write::write_all(&mut s, first.as_bytes());
                let mut status = [0u8; 12];
                let status = match s.read_exact(&mut status) {
                    Ok(()) => String::from_utf8_lossy(&status).into_owned(),
                    Err(e) => format!("no answer: {e}"),
                };
                let _ = std::io::Write::write_all(&mut s, &body);
                (s, head, status)
            })
        })
        .collect();
    let held: Vec<_> = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .collect();
    let after = rss_bytes(bifrost.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "64 tokenless clients announcing 4 MiB bodies: RSS {} -> {} MB (+{} MB)",
        before >> 20,
        after >> 20,
        growth >> 20
    );
    assert!(
        growth < 60 << 20,
        "RSS grew by {} MB for clients without the token",
        growth >> 20
    );
    // Each was refused from its head: a GET takes no body, a POST needs the token.
    for (_, head, status) in &held {
        let want = if head.starts_with("GET") {
            "413"
        } else {
            "401"
        };
        assert_eq!(status, &format!("HTTP/1.1 {want}"), "{head}");
    }
    // The API still serves.
    assert_eq!(HttpClient::connect(&admin).get("/health").status, 200);
    drop(held);
}
