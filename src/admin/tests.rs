//! The admin server's loop over real loopback sockets, with a fake [`AdminApi`] and short
//! timeouts: keep-alive, pipelining, limits, timeouts, the connection cap and shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::observe::stats::WorkerStats;

struct Fake;

impl AdminApi for Fake {
    fn ready(&self) -> Result<(), Vec<String>> {
        Ok(())
    }
    fn metrics(&self) -> String {
        "m 1\n".into()
    }
    fn stats(&self) -> String {
        // Big enough that a client that never reads fills its socket buffers.
        format!("\"{}\"", "x".repeat(64 * 1024))
    }
    fn warm_start(&self, body: &[u8]) -> Result<u64, WarmError> {
        Ok(body.len() as u64)
    }
    fn warm_list(&self) -> String {
        "[]".into()
    }
    fn warm_status(&self, _id: u64) -> Option<String> {
        None
    }
    fn warm_cancel(&self, _id: u64) -> Result<(), WarmError> {
        Err(WarmError::NotFound)
    }
}

struct Running {
    addr: SocketAddr,
    stats: Arc<WorkerStats>,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.request();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(limits: Limits) -> Running {
    let shutdown = Shutdown::new();
    let stats = Arc::new(WorkerStats::default());
    let server = start(
        "127.0.0.1:0".parse().expect("addr"),
        Arc::new(Fake),
        None,
        limits,
        stats.clone(),
        shutdown.clone(),
    )
    .expect("admin server starts");
    Running {
        addr: server.addr,
        stats,
        shutdown,
        thread: Some(server.thread),
    }
}

fn quick() -> Limits {
    Limits {
        request_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        linger: Duration::from_millis(200),
        ..Limits::new(Duration::from_secs(10), Duration::from_secs(2), 4)
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Reads one response (head, then Content-Length bytes): (status, head, body).
fn response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let (status, head) = response_head(s);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("number");
    let mut body = vec![0; length];
    s.read_exact(&mut body).expect("body");
    (status, head, body)
}

/// Reads a response head only (the answer to HEAD): (status, head).
fn response_head(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "reading a response head: {other:?} after {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8(buf).expect("ASCII head");
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head)
}

/// True when the server has closed the connection (EOF or reset) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

#[test]
fn keep_alive_and_pipelining() {
    let server = serve(quick());
    let mut s = connect(server.addr);
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").expect("send");
    assert_eq!(response(&mut s).0, 200);
    s.write_all(b"GET /ready HTTP/1.1\r\n\r\n").expect("send");
    let (status, head, body) = response(&mut s);
    assert_eq!((status, body.as_slice()), (200, &b"ready\n"[..]));
    assert!(!head.contains("Connection: close"), "{head}");
    // Three requests in one write, the last one closing: three answers in order, then EOF.
    s.write_all(
        b"GET /metrics HTTP/1.1\r\n\r\nPOST /warm HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
          HEAD /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let (status, head, body) = response(&mut s);
    assert_eq!((status, body.as_slice()), (200, &b"m 1\n"[..]));
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (status, _, body) = response(&mut s);
    assert_eq!((status, body.as_slice()), (202, &b"{\"id\":3}"[..]));
    let (status, head) = response_head(&mut s);
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Length: 3\r\n"),
        "HEAD keeps GET's length: {head}"
    );
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(closed(&mut s), "no body after HEAD's head, then closed");
}

#[test]
fn http10_closes_unless_kept_alive() {
    let server = serve(quick());
    let mut s = connect(server.addr);
    s.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .expect("send");
    let (status, head, _) = response(&mut s);
    assert_eq!(status, 200);
    assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").expect("send");
    let (_, head, _) = response(&mut s);
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(closed(&mut s));
}

#[test]
fn refused_requests_are_answered_then_closed() {
    let server = serve(quick());
    let cases: &[(&[u8], u16)] = &[
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (
            b"POST /warm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            411,
        ),
        (
            b"POST /warm HTTP/1.1\r\nContent-Length: 4194305\r\n\r\n",
            413,
        ),
    ];
    for (request, want) in cases {
        let mut s = connect(server.addr);
        s.write_all(request).expect("send");
        let (status, head, _) = response(&mut s);
        assert_eq!(status, *want, "{}", String::from_utf8_lossy(request));
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert!(closed(&mut s), "{want}: closed");
    }
    // A head that never ends: 431 once it passes 8 KiB, even though the client keeps sending.
    let mut s = connect(server.addr);
    let mut big = b"GET /health HTTP/1.1\r\nX-Long: ".to_vec();
    big.resize(20 * 1024, b'a');
    let _ = s.write_all(&big);
    assert_eq!(response(&mut s).0, 431);
    assert!(closed(&mut s));
}

#[test]
fn a_slow_request_gets_408_and_an_idle_connection_is_closed() {
    let server = serve(quick());
    let mut slow = connect(server.addr);
    let mut idle = connect(server.addr);
    // The idle connection's timer starts when its answer is written, after this instant and
    // before `start`: its close is measured from here.
    let idle_start = Instant::now();
    idle.write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(response(&mut idle).0, 200);
    let start = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost:")
        .expect("send");
    let (status, _, _) = response(&mut slow);
    assert_eq!(status, 408);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert!(closed(&mut slow));
    // A body that stops short is as slow as a head.
    let mut s = connect(server.addr);
    s.write_all(b"POST /warm HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        .expect("send");
    assert_eq!(response(&mut s).0, 408);
    // The idle one is closed silently after its idle timeout.
    assert!(closed(&mut idle));
    assert!(
        idle_start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        idle_start.elapsed()
    );
}

#[test]
fn expect_100_continue_is_answered() {
    let server = serve(quick());
    let mut s = connect(server.addr);
    s.write_all(b"POST /warm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .expect("send");
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"{}").expect("send");
    let (status, _, body) = response(&mut s);
    assert_eq!((status, body.as_slice()), (202, &b"{\"id\":2}"[..]));
}

/// A POST whose head is accepted and whose body is on its way: a request in progress,
/// which no new connection may evict. Returns once the server has taken the head.
fn busy(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(b"POST /warm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .expect("send");
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).expect("100 Continue");
    s
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_full_cap_evicts_the_oldest_idle_connection_and_refuses_only_when_all_are_busy() {
    // Long request and idle timeouts: only eviction may close a connection here.
    let server = serve(Limits {
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        ..quick()
    });
    let mut held: Vec<TcpStream> = (0..4).map(|_| busy(server.addr)).collect();
    assert_eq!(count(&server.stats.admin_connections), 4);
    // Every slot has a request in progress: the extra one is refused.
    let mut extra = connect(server.addr);
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(count(&server.stats.admin_connections_rejected), 1);
    // Two finish their request and sit idle, kept alive: the first to finish is the oldest
    // idle one, and the next new connection takes its slot.
    for s in held.iter_mut().take(2) {
        s.write_all(b"{}").expect("body");
        assert_eq!(response(s).0, 202);
    }
    let mut probe = connect(server.addr);
    probe
        .write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(response(&mut probe).0, 200, "the probe got a slot");
    assert!(
        closed(&mut held[0]),
        "the oldest idle connection was evicted"
    );
    assert_eq!(count(&server.stats.admin_connections_evicted), 1);
    assert_eq!(count(&server.stats.admin_connections), 4);
    // The busy ones were left alone and still finish.
    for s in held.iter_mut().skip(2) {
        s.write_all(b"{}").expect("body");
        assert_eq!(response(s).0, 202);
    }
    held[1]
        .write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(response(&mut held[1]).0, 200, "the other idle one stayed");
}

#[test]
fn silent_and_slow_heads_are_closed_after_the_header_timeout() {
    let server = serve(Limits {
        request_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(10),
        ..quick()
    });
    let start = Instant::now();
    let mut silent = connect(server.addr);
    let mut slow = connect(server.addr);
    // A byte now and then does not buy a new connection time: its head is timed from the
    // accept.
    for byte in b"GET /he" {
        slow.write_all(&[*byte]).expect("send");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(response(&mut slow).0, 408);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(closed(&mut slow));
    assert!(
        closed(&mut silent),
        "a silent connection is closed, unanswered"
    );
    assert_eq!(count(&server.stats.admin_header_timeouts), 2);
    // A kept-alive connection may sit idle longer than the header timeout between requests.
    let mut kept = connect(server.addr);
    kept.write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(response(&mut kept).0, 200);
    std::thread::sleep(Duration::from_millis(450));
    kept.write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(response(&mut kept).0, 200);
    assert_eq!(count(&server.stats.admin_connections), 1);
}

#[test]
fn a_get_announcing_a_body_is_refused_from_its_head_and_nothing_more_is_read() {
    let server = serve(quick());
    for head in [
        &b"GET /health HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
        b"DELETE /warm/1 HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
    ] {
        let mut s = connect(server.addr);
        s.write_all(head).expect("send");
        let (status, head, _) = response(&mut s);
        assert_eq!(status, 413);
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert!(closed(&mut s));
    }
}

#[test]
fn a_client_that_does_not_read_is_not_answered_without_bound() {
    // A stalled client is dropped after the idle timeout: make that longer than the test.
    let server = serve(Limits {
        idle_timeout: Duration::from_secs(30),
        ..quick()
    });
    let mut s = connect(server.addr);
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // Pipeline many requests for a 64 KiB body without reading: the server stops answering
    // (and reading) once its output is backed up, so our writes eventually block.
    let request = b"GET /stats HTTP/1.1\r\n\r\n";
    let mut sent = 0usize;
    let blocked = loop {
        match s.write(request) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => panic!("write: {e}"),
        }
        if sent > 64 << 20 {
            break false;
        }
    };
    assert!(
        blocked,
        "the server kept reading {sent} bytes of requests it could not answer"
    );
}

#[test]
fn shutdown_stops_the_thread() {
    let mut server = serve(quick());
    let mut s = connect(server.addr);
    server.shutdown.request();
    if let Some(t) = server.thread.take() {
        t.join().expect("admin thread ends cleanly");
    }
    assert!(closed(&mut s), "connections are closed with the thread");
}
