//! Overload and memory (SPEC §6a), end to end through the real binary: clients that never read,
//! pipeline gets of big values, or ask for one big value thousands of times in one `get` must
//! neither grow the proxy's memory without bound nor starve a well-behaved client on the same
//! worker (`workers: 1` everywhere here).
//!
//! The proxy's RSS is sampled from `/proc/PID/status` every 10 ms; a proxy over the test's bound
//! is SIGKILLed at once (so a failing run stays short and cannot take the machine's memory), and
//! the test fails saying so. Every wait has a deadline; a failing test takes well under 20 s
//! (only a proxy that streams 2 GB correctly but slowly can keep the read test up to 30 s).
//!
//! What these tests expect of the binary (names as in docs/configuration.md and `stats`):
//!
//! - listener keys `max_buffered_reply_bytes` (soft limit: stop reading and dispatching for
//!   that client), `close_buffered_reply_bytes` (hard limit: close the client),
//!   `max_inflight_requests` (per-client window of requests at the backends) and
//!   `multiget_window` (keys of one multi-get sent to a server at once);
//! - `stats` counters `clients_closed_hard_limit` (clients closed over the hard limit) and
//!   `reply_bytes_buffered` (gauge: reply bytes held for clients, not yet written).
//!
//! A binary without these keys refuses the configs of the last two tests at start-up, and the
//! first three fail on the RSS bound (an unbounded proxy buffers the replies of every request
//! it reads) or on the good client's errors.

mod common;

use common::{show, wait_until, Bifrost, BlindForward, Client, Memcached};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The proxy's RSS bound in the tests with big values.
const RSS_BOUND: u64 = 250 << 20;
/// A good-client request must be answered, correctly, within this.
const GOOD_DEADLINE: Duration = Duration::from_secs(2);
/// ... and 99% of them within this.
const GOOD_P99: Duration = Duration::from_millis(500);
/// How long the good client runs while the bad ones misbehave.
const GOOD_RUN: Duration = Duration::from_secs(4);
/// Backend timeout of these tests: long, so that no test depends on a timeout cutting a reply.
const BACKEND_TIMEOUT: &str = "5s";

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// memcached with `-I 2m` (so 1 MiB values fit) and room for the tests' values.
fn memcached() -> Memcached {
    Memcached::builder()
        .max_item_size("2m")
        .memory_mb(128)
        .start()
}

/// bifrost in front of `mc`: one worker (bad and good clients share it), a long backend
/// timeout, and `listener` lines added to the listener.
fn bifrost(mc: &Memcached, listener: &[&str]) -> Bifrost {
    listener
        .iter()
        .fold(
            BlindForward::new(&mc.addr())
                .workers(1)
                .timeout(BACKEND_TIMEOUT),
            |b, line| b.listener_option(line),
        )
        .start()
}

/// `len` bytes of a pattern that shifts with `seed` (a cut or misplaced value does not match).
fn value_of(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i / 7 + seed) % 26) as u8)
        .collect()
}

/// Stores `key` = `value` straight into memcached.
fn preload(mc: &Memcached, key: &str, value: &[u8]) {
    assert_eq!(
        mc.client().set(key, value, 0, 0),
        "STORED",
        "preloading {key}"
    );
}

/// `VALUE key 0 len\r\n<value>\r\n`.
fn value_block(key: &str, value: &[u8]) -> Vec<u8> {
    let mut block = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
    block.extend_from_slice(value);
    block.extend_from_slice(b"\r\n");
    block
}

/// Resident set size of `pid` in bytes; `None` once it has exited.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Samples a process's RSS every 10 ms; SIGKILLs it the moment it passes `bound`.
struct RssWatch {
    stop: Arc<AtomicBool>,
    /// Set once the process is gone (killed over the bound, or exited).
    gone: Arc<AtomicBool>,
    /// When the RSS passed the bound (the process was killed then).
    exceeded_after: Arc<Mutex<Option<Duration>>>,
    bound: u64,
    handle: Option<JoinHandle<u64>>,
}

/// What an [`RssWatch`] saw.
struct RssReport {
    peak: u64,
    exceeded_after: Option<Duration>,
    bound: u64,
}

impl RssWatch {
    /// Lets the process run for `how_long` under watch (less if it is killed or exits).
    fn hold(&self, how_long: Duration) {
        let stop = Instant::now() + how_long;
        while Instant::now() < stop && !self.gone().load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn start(pid: u32, bound: u64) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        let exceeded_after = Arc::new(Mutex::new(None));
        let (st, gn, ex) = (stop.clone(), gone.clone(), exceeded_after.clone());
        let handle = thread::spawn(move || {
            let start = Instant::now();
            let mut peak = 0;
            while !st.load(Ordering::Relaxed) {
                let Some(rss) = rss_bytes(pid) else {
                    gn.store(true, Ordering::Relaxed);
                    break;
                };
                peak = peak.max(rss);
                if rss > bound {
                    *ex.lock().unwrap_or_else(|p| p.into_inner()) = Some(start.elapsed());
                    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the test's
                    // bifrost, which is reaped only when the test drops it, after this thread.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    gn.store(true, Ordering::Relaxed);
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        RssWatch {
            stop,
            gone,
            exceeded_after,
            bound,
            handle: Some(handle),
        }
    }

    /// Set once the process is gone: a client loop stops on it.
    fn gone(&self) -> Arc<AtomicBool> {
        self.gone.clone()
    }

    fn exceeded_after(&self) -> Option<Duration> {
        *self
            .exceeded_after
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Panics (saying so) if the process was killed over the bound: call it before reading
    /// from the proxy, so the failure names the cause rather than the reset it caused.
    #[track_caller]
    fn check(&self, what: &str) {
        if let Some(after) = self.exceeded_after() {
            panic!(
                "bifrost's RSS passed {} MiB {after:.1?} into the test ({what}); it was killed",
                self.bound >> 20
            );
        }
    }

    fn finish(mut self) -> RssReport {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self
            .handle
            .take()
            .expect("finished once")
            .join()
            .expect("RSS watcher");
        RssReport {
            peak,
            exceeded_after: self.exceeded_after(),
            bound: self.bound,
        }
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl RssReport {
    #[track_caller]
    fn assert_bounded(&self, what: &str) {
        if let Some(after) = self.exceeded_after {
            panic!(
                "bifrost's RSS passed {} MiB {after:.1?} into the test ({what}); it was killed",
                self.bound >> 20
            );
        }
        eprintln!("bifrost peak RSS {} MiB ({what})", self.peak >> 20);
    }
}

/// A client that sends `bytes` and then never reads. The write gives up after 5 s (a proxy that
/// stops reading may leave some unwritten); the socket stays open until dropped.
fn non_reader(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let _ = s.write_all(bytes);
    s
}

/// [`non_reader`] with a 64 KiB receive buffer (set before connecting, which also turns off
/// the kernel's receive-buffer autotuning): what the kernel can absorb of the replies is then
/// small and known, so the bytes the proxy must hold for the client are too.
fn non_reader_small_rcvbuf(addr: &str, bytes: &[u8]) -> TcpStream {
    let sockaddr: std::net::SocketAddr = addr.parse().expect("address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    socket
        .connect_timeout(&sockaddr.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut s: TcpStream = socket.into();
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let _ = s.write_all(bytes);
    s
}

/// `get` followed by `keys`.
fn get_line<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut line = b"get".to_vec();
    for k in keys {
        line.push(b' ');
        line.extend_from_slice(k.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// What the well-behaved client saw.
#[derive(Default)]
struct GoodReport {
    ok: usize,
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

impl GoodReport {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "{} ok, {} errors, p50 {:?}, p99 {:?}, max {:?}",
            self.ok,
            self.errors.len(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.percentile(1.0)
        )
    }

    /// Every request answered correctly within 2 s, 99% within 500 ms, and enough of them.
    #[track_caller]
    fn assert_served(&self) {
        eprintln!("good client: {}", self.summary());
        assert!(
            self.errors.is_empty(),
            "the good client saw {} errors ({}); first ones: {:#?}",
            self.errors.len(),
            self.summary(),
            &self.errors[..self.errors.len().min(5)]
        );
        assert!(
            self.ok >= 20,
            "the good client made only {} requests in {GOOD_RUN:?} ({})",
            self.ok,
            self.summary()
        );
        assert!(
            self.percentile(0.99) < GOOD_P99,
            "the good client's p99 is over {GOOD_P99:?} ({})",
            self.summary()
        );
    }
}

/// Sends `req` and checks that exactly `want` comes back within [`GOOD_DEADLINE`].
fn exchange(s: &mut TcpStream, req: &[u8], want: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + GOOD_DEADLINE;
    s.write_all(req).map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; want.len()];
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = || format!("no complete reply within {GOOD_DEADLINE:?}: {}", show(&got));
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf[..want.len() - got.len()]) {
            Ok(0) => return Err(format!("connection closed after {}", show(&got))),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if !want.starts_with(&got) {
                    return Err(format!("unexpected reply {}", show(&got)));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out())
            }
            Err(e) => return Err(format!("read: {e} after {}", show(&got))),
        }
    }
    Ok(())
}

/// Runs the good client for [`GOOD_RUN`] on `b` while the connections `bad` opens misbehave,
/// then asserts that the proxy stayed under [`RSS_BOUND`] (`what` says doing what) and that the
/// good client was served.
fn bounded_beside_a_good_client(b: &Bifrost, what: &str, bad: impl FnOnce(&str) -> Vec<TcpStream>) {
    let watch = RssWatch::start(b.pid(), RSS_BOUND);
    let good = good_client(b.addr(), GOOD_RUN, watch.gone());
    let bad = bad(&b.addr());
    let report = good.join().expect("good client");
    let rss = watch.finish();
    rss.assert_bounded(what);
    report.assert_served();
    drop(bad);
}

/// A well-behaved client on its own thread: `set` then `get` of small keys, one request at a
/// time, for `run_for` or until `stop`. A request that fails puts the connection out of step,
/// so the next one goes on a new connection.
fn good_client(addr: String, run_for: Duration, stop: Arc<AtomicBool>) -> JoinHandle<GoodReport> {
    thread::spawn(move || {
        let mut r = GoodReport::default();
        let start = Instant::now();
        let mut conn: Option<TcpStream> = None;
        let mut i = 0usize;
        while start.elapsed() < run_for && !stop.load(Ordering::Relaxed) {
            let s = match conn.as_mut() {
                Some(s) => s,
                None => match TcpStream::connect(&addr) {
                    Ok(s) => conn.insert(s),
                    Err(e) => {
                        r.errors.push(format!("connect: {e}"));
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            let key = format!("good:{}", i % 50);
            let value = format!("{i:0>100}");
            let t = Instant::now();
            let set = exchange(
                s,
                format!("set {key} 0 0 100\r\n{value}\r\n").as_bytes(),
                b"STORED\r\n",
            );
            r.latencies.push(t.elapsed());
            let result = set.map_err(|e| format!("set {key}: {e}")).and_then(|()| {
                r.ok += 1;
                let t = Instant::now();
                let get = exchange(
                    s,
                    format!("get {key}\r\n").as_bytes(),
                    format!("VALUE {key} 0 100\r\n{value}\r\nEND\r\n").as_bytes(),
                );
                r.latencies.push(t.elapsed());
                get.map_err(|e| format!("get {key}: {e}"))
            });
            match result {
                Ok(()) => r.ok += 1,
                Err(e) => {
                    r.errors.push(format!("{:.1?} in: {e}", start.elapsed()));
                    conn = None;
                }
            }
            i += 1;
        }
        r
    })
}

/// Reads from `s` and checks the bytes against `count` copies of `block` followed by `tail`,
/// until all have arrived; `Err` says how far it got and why it stopped.
fn read_expecting(
    s: &mut TcpStream,
    block: &[u8],
    count: usize,
    tail: &[u8],
    deadline: Duration,
) -> Result<(), String> {
    let body = (block.len() * count) as u64;
    let total = body + tail.len() as u64;
    let start = Instant::now();
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    let blocks = |pos: u64| pos / block.len() as u64;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    while pos < total {
        if start.elapsed() > deadline {
            return Err(format!(
                "only {pos} of {total} bytes ({} whole values) within {deadline:?}",
                blocks(pos)
            ));
        }
        let n = match s.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {pos} of {total} bytes ({} whole values)",
                    blocks(pos)
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "read failed after {pos} of {total} bytes ({} whole values): {e}",
                    blocks(pos)
                ))
            }
        };
        let mut i = 0;
        while i < n {
            let p = pos + i as u64;
            let expected = if p < body {
                &block[(p % block.len() as u64) as usize..]
            } else if p < total {
                &tail[(p - body) as usize..]
            } else {
                return Err(format!(
                    "{} bytes more than the {total} expected: {}",
                    n - i,
                    show(&buf[i..n])
                ));
            };
            let m = expected.len().min(n - i);
            if buf[i..i + m] != expected[..m] {
                let off = (0..m).find(|&j| buf[i + j] != expected[j]).unwrap_or(0);
                let at = p + off as u64;
                return Err(format!(
                    "wrong byte at offset {at} (after {} whole values): got {}",
                    blocks(at),
                    show(&buf[i + off..n.min(i + off + 60)])
                ));
            }
            i += m;
        }
        pos += n as u64;
    }
    Ok(())
}

/// `stats` on a connection of its own, as a `Result` (the harness's `Client` panics on a
/// failed read, which would hide the cause when the RSS watch has just killed the proxy).
fn try_stats(addr: &str) -> Result<HashMap<String, String>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("stats: connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"stats\r\n")
        .map_err(|e| format!("stats: write: {e}"))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16384];
    while !reply.ends_with(b"END\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("stats: closed after {}", show(&reply))),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("stats: read: {e} after {}", show(&reply))),
        }
    }
    let mut out = HashMap::new();
    for line in String::from_utf8_lossy(&reply).lines() {
        let mut parts = line.splitn(3, ' ');
        if let (Some("STAT"), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) {
            out.insert(k.to_string(), v.to_string());
        }
    }
    Ok(out)
}

/// `stats`, while `watch` watches the proxy: a failure caused by the watch killing the proxy
/// is reported as the RSS bound it passed.
#[track_caller]
fn stats(addr: &str, watch: &RssWatch, what: &str) -> HashMap<String, String> {
    watch.check(what);
    try_stats(addr).unwrap_or_else(|e| {
        watch.check(what);
        panic!("{e}")
    })
}

/// The overload counters of `stats`, for a failure message (best effort: the proxy may be gone).
fn overload_stats(addr: &str) -> String {
    const SHOWN: &[&str] = &[
        "clients_closed_hard_limit",
        "clients_shed",
        "clients_closed_slow_request",
        "backend_overloaded",
        "reply_bytes_buffered",
        "backend_errors",
        "backend_timeouts",
    ];
    match try_stats(addr) {
        Ok(all) => SHOWN
            .iter()
            .map(|k| format!("{k}={}", all.get(*k).map_or("-", String::as_str)))
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => e,
    }
}

/// One numeric `stats` value; panics naming the counter if the proxy has none by that name.
fn stat(all: &HashMap<String, String>, name: &str) -> u64 {
    all.get(name)
        .unwrap_or_else(|| panic!("bifrost's stats have no `{name}` (this test expects it)"))
        .parse()
        .unwrap_or_else(|e| panic!("STAT {name}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 10 clients each pipeline 500 `get` of a 500 KB value and never read (2.5 GB of replies),
/// while a good client on the same worker does set/get: the proxy stays under 250 MB and the
/// good client is served correctly, each request within 2 s, p99 under 500 ms.
#[test]
fn non_reading_clients_pipelining_big_gets_neither_grow_memory_nor_starve_others() {
    let mc = memcached();
    preload(&mc, "big", &value_of(500_000, 0));
    let b = bifrost(&mc, &[]);
    let pipeline = b"get big\r\n".repeat(500);
    bounded_beside_a_good_client(
        &b,
        "10 clients pipelining 500 gets of 500 KB, never reading",
        |addr| (0..10).map(|_| non_reader(addr, &pipeline)).collect(),
    );
}

/// A binary GET (opcode `op`, 0x00 Get or 0x0d GetKQ) of `key`: the same bytes a libmemcached
/// client sends.
fn binary_get(op: u8, key: &str) -> Vec<u8> {
    let mut frame = vec![0x80, op];
    frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&(key.len() as u32).to_be_bytes());
    frame.extend_from_slice(&[0; 12]); // opaque, cas
    frame.extend_from_slice(key.as_bytes());
    frame
}

/// The same adversaries in the binary protocol: 10 clients pipelining 500 binary Gets of a
/// 500 KB value, and one sending 2,000 quiet GetKQ of a 1 MiB value then a Noop (how
/// libmemcached batches a multi-get), none of them reading: bounded as for text clients, and
/// the good client is served.
#[test]
fn non_reading_binary_clients_pipelining_big_gets_are_bounded() {
    let mc = memcached();
    preload(&mc, "big", &value_of(500_000, 0));
    preload(&mc, "huge", &value_of(1 << 20, 1));
    let b = bifrost(&mc, &[]);
    let pipeline = binary_get(0x00, "big").repeat(500);
    let mut batch = binary_get(0x0d, "huge").repeat(2000);
    batch.extend_from_slice(&[0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    batch.extend_from_slice(&[0; 12]);
    bounded_beside_a_good_client(
        &b,
        "binary clients pipelining big gets, never reading",
        |addr| {
            let mut bad: Vec<TcpStream> = (0..10).map(|_| non_reader(addr, &pipeline)).collect();
            bad.push(non_reader(addr, &batch));
            bad
        },
    );
}

/// One client asks for a 1 MiB value 2,000 times in ONE `get` (2 GB of reply) and never reads:
/// the proxy stays under 250 MB and a good client on the same worker sees no error.
#[test]
fn one_get_of_a_1mib_value_2000_times_never_read_is_bounded() {
    let mc = memcached();
    preload(&mc, "huge", &value_of(1 << 20, 1));
    let b = bifrost(&mc, &[]);
    bounded_beside_a_good_client(&b, "one unread get of a 1 MiB value 2000 times", |addr| {
        vec![non_reader(
            addr,
            &get_line(std::iter::repeat("huge").take(2000)),
        )]
    });
}

/// The same unread 2,000-key get on a failover route (whose replies are read whole, to decide
/// on them, not streamed): bounded the same way, by windows sized to the soft limit.
#[test]
fn one_unread_get_of_a_1mib_value_2000_times_on_a_failover_route_is_bounded() {
    let mc = memcached();
    let fallback = memcached();
    preload(&mc, "huge", &value_of(1 << 20, 1));
    let (a, f) = (mc.addr(), fallback.addr());
    let b = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  a: {{servers: [\"{a}\"], timeout: {BACKEND_TIMEOUT}}}\n  \
                 f: {{servers: [\"{f}\"], timeout: {BACKEND_TIMEOUT}}}\n\
                 routes: [{{match: \"*\", strategy: failover, backends: [a, f], on_miss: next}}]\n"
            )
        },
        &[],
    );
    bounded_beside_a_good_client(
        &b,
        "one unread get of a 1 MiB value 2000 times, failover route",
        |addr| {
            vec![non_reader(
                addr,
                &get_line(std::iter::repeat("huge").take(2000)),
            )]
        },
    );
}

/// One unread `get` of 400 distinct 1 MiB values spread over four servers: a split whose windows
/// are merged (not streamed). Its first window is sized from what the worker's multi-gets have
/// brought per key, not `multiget_window` keys per server (that held about 180 MiB for this one
/// client): the proxy stays under 120 MiB.
#[test]
fn one_unread_get_of_400_big_values_over_four_servers_is_bounded() {
    let servers: Vec<Memcached> = (0..4)
        .map(|_| {
            Memcached::builder()
                .max_item_size("2m")
                .memory_mb(160)
                .start()
        })
        .collect();
    let list: Vec<String> = servers
        .iter()
        .map(|m| format!("\"{}\"", m.addr()))
        .collect();
    let list = list.join(", ");
    let b = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  pool: {{servers: [{list}], timeout: {BACKEND_TIMEOUT}}}\n\
                 routes: [{{match: \"*\", strategy: consistent_hash, backend: pool}}]\n"
            )
        },
        &[],
    );
    let keys: Vec<String> = (0..400).map(|i| format!("big:{i}:{}", i * 7919)).collect();
    let value = value_of(1 << 20, 2);
    let mut c = b.client();
    for key in &keys {
        assert_eq!(c.set(key, &value, 0, 0), "STORED");
    }
    let bound = 120 << 20;
    let watch = RssWatch::start(b.pid(), bound);
    let bad = non_reader(&b.addr(), &get_line(keys.iter().map(String::as_str)));
    watch.hold(Duration::from_secs(3));
    let rss = watch.finish();
    rss.assert_bounded("one unread get of 400 distinct 1 MiB values over 4 servers");
    drop(bad);
}

/// The same 2,000-key get, read: every value arrives intact, in order, then `END`, while the
/// proxy stays under 250 MB (the reply is streamed, never held whole). 2 GB through a debug
/// build takes 3 to 14 s here; the 30 s deadline is only for a proxy that streams but slowly
/// (a proxy that buffers passes the RSS bound within a second, one that cuts the reply fails
/// at the cut, one that stalls fails after 5 s without a byte).
#[test]
fn one_get_of_a_1mib_value_2000_times_read_fully_arrives_intact() {
    let mc = memcached();
    let value = value_of(1 << 20, 2);
    preload(&mc, "huge", &value);
    let b = bifrost(&mc, &[]);
    let watch = RssWatch::start(b.pid(), RSS_BOUND);

    let mut c = TcpStream::connect(b.addr()).expect("connect");
    c.write_all(&get_line(std::iter::repeat("huge").take(2000)))
        .expect("send the get");
    let started = Instant::now();
    let result = read_expecting(
        &mut c,
        &value_block("huge", &value),
        2000,
        b"END\r\n",
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    let rss = watch.finish();
    rss.assert_bounded("a 2000 × 1 MiB get, read");
    if let Err(e) = result {
        panic!(
            "the 2000 × 1 MiB reply: {e} (bifrost's stats: {})",
            overload_stats(&b.addr())
        );
    }
    eprintln!("2000 × 1 MiB values read in {took:.2?}");
}

/// Hard limit: with `multiget_window: 1000` the proxy asks for all 200 keys of 100 KB (20 MB)
/// of one get at once; the client reads nothing, so its buffered reply passes
/// `close_buffered_reply_bytes: 4MiB` and the proxy closes it: the client sees part of the
/// reply, intact, then EOF (or a reset), and `clients_closed_hard_limit` counts it.
#[test]
fn client_over_the_hard_reply_limit_is_closed_and_counted() {
    let mc = memcached();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let mut expected = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let value = value_of(100_000, i);
        preload(&mc, key, &value);
        expected.extend_from_slice(&value_block(key, &value));
    }
    expected.extend_from_slice(b"END\r\n");
    let b = bifrost(
        &mc,
        &[
            "max_buffered_reply_bytes: 1MiB",
            "close_buffered_reply_bytes: 4MiB",
            "multiget_window: 1000",
        ],
    );
    let watch = RssWatch::start(b.pid(), RSS_BOUND);

    let mut bad = non_reader_small_rcvbuf(&b.addr(), &get_line(keys.iter().map(String::as_str)));
    let what = "one client over a 4 MiB hard limit";
    let mut closed = 0;
    wait_until(
        Duration::from_secs(10),
        "stats show clients_closed_hard_limit >= 1",
        || {
            closed = stat(&stats(&b.addr(), &watch, what), "clients_closed_hard_limit");
            closed >= 1
        },
    );
    // Stricter than ">= 1" on purpose: the counter is named for clients, and one was closed.
    assert_eq!(
        closed, 1,
        "clients_closed_hard_limit is {closed} though one client was closed: it must count \
         each closed client once"
    );

    // What reached the client before the close: a prefix of the reply, then EOF or a reset.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    bad.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let start = Instant::now();
    let end = loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the closed client kept receiving for 10 s ({} bytes)",
            got.len()
        );
        match bad.read(&mut buf) {
            Ok(0) => break "EOF",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break "reset"
            }
            Err(e) => panic!(
                "the client over the hard limit was not closed: {e} after {} bytes",
                got.len()
            ),
        }
    };
    assert!(
        got.len() < expected.len(),
        "the client got the whole reply ({} bytes) though it was over the hard limit",
        got.len()
    );
    assert!(
        expected.starts_with(&got),
        "the {} bytes before the close are not a prefix of the reply: {}",
        got.len(),
        show(&got[got.len().saturating_sub(100)..])
    );
    eprintln!(
        "closed client got {} of {} bytes, then {end}",
        got.len(),
        expected.len()
    );

    // The proxy is fine, and holds no reply bytes for the closed client.
    watch.check(what);
    assert!(b.client().version().starts_with("VERSION "));
    wait_until(
        Duration::from_secs(5),
        "reply_bytes_buffered returns to 0",
        || stat(&stats(&b.addr(), &watch, what), "reply_bytes_buffered") == 0,
    );
    watch.finish().assert_bounded(what);
}

/// The in-flight window and the soft limit hold a client's buffered replies down: with
/// `max_inflight_requests: 4` and `max_buffered_reply_bytes: 1MiB`, a client pipelining 1000
/// gets of a 100 KB value without reading gets at most about 1 MiB + 4 × 100 KB buffered.
/// Without the window (requests dispatched up to `max_outstanding_requests`, 1024) or without
/// the soft limit (the window refilled as each reply lands) the proxy would buffer the ~100 MB
/// of replies, less what the kernel's socket buffers take (the client's receive buffer is set
/// to 64 KiB; the proxy's send buffer grows to at most `net.ipv4.tcp_wmem`'s 4 MiB):
/// `reply_bytes_buffered` is bounded at 8 MiB, RSS at 64 MiB, and fewer than the 1000 gets may
/// reach memcached. Once the client reads, all 1000 replies arrive intact and the gauge
/// returns to 0.
#[test]
fn inflight_window_and_soft_limit_bound_a_non_reading_clients_replies() {
    const GETS: usize = 1000;
    const BUFFERED_BOUND: u64 = 8 << 20;
    let mc = memcached();
    let value = value_of(100_000, 3);
    preload(&mc, "v100k", &value);
    let b = bifrost(
        &mc,
        &["max_inflight_requests: 4", "max_buffered_reply_bytes: 1MiB"],
    );
    let watch = RssWatch::start(b.pid(), 64 << 20);
    let what = "a 1000-get pipeline of 100 KB values held by a window of 4";

    let mut greedy = non_reader_small_rcvbuf(&b.addr(), &b"get v100k\r\n".repeat(GETS));
    // Watch the gauge until the proxy stops fetching for the greedy client (get_hits still for
    // 300 ms), failing as soon as the gauge passes the bound.
    let (mut max_buffered, mut hits) = (0, u64::MAX);
    let mut since = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the proxy stops fetching replies for a client that does not read",
        || {
            let all = stats(&b.addr(), &watch, what);
            let buffered = stat(&all, "reply_bytes_buffered");
            max_buffered = max_buffered.max(buffered);
            assert!(
                buffered <= BUFFERED_BOUND,
                "reply_bytes_buffered reached {buffered} (bound {BUFFERED_BOUND}): \
                 the window or the soft limit did not hold the client back"
            );
            let now = stat(&all, "get_hits");
            if now != hits {
                (hits, since) = (now, Instant::now());
            }
            since.elapsed() >= Duration::from_millis(300)
        },
    );
    eprintln!(
        "max reply_bytes_buffered {max_buffered}; {hits} of {GETS} gets answered by memcached"
    );
    assert!(
        hits < GETS as u64,
        "all {GETS} gets were fetched for a client that read nothing"
    );

    // Now it reads: every reply, intact and in order.
    let mut block = value_block("v100k", &value);
    block.extend_from_slice(b"END\r\n");
    if let Err(e) = read_expecting(&mut greedy, &block, GETS, b"", Duration::from_secs(10)) {
        watch.check(what);
        panic!("the greedy client's replies once it reads: {e}");
    }
    wait_until(
        Duration::from_secs(5),
        "reply_bytes_buffered returns to 0",
        || stat(&stats(&b.addr(), &watch, what), "reply_bytes_buffered") == 0,
    );
    watch.finish().assert_bounded(what);
}

/// Replication to a replica that accepts and never reads (its socket buffers fill, so every
/// copy stays queued in the proxy, holding its 1 MiB value): 400 sets of 1 MiB through the
/// proxy are all answered by the primary, and the copies held stop at the side effect's
/// `queue_bytes` (64 MiB by default), the rest dropped and counted, so the proxy stays under
/// 150 MiB. Without the byte bound the copies would hold all 400 MiB (their count, 400, is far
/// under `queue`), and the proxy is killed over the bound.
#[test]
fn replicating_big_values_to_a_replica_that_never_reads_is_bounded_by_queue_bytes() {
    let mc = memcached();
    // Bound, never accepted: the kernel completes connections and buffers a little, then the
    // proxy's writes to it block.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a blackhole");
    let hole_addr = hole.local_addr().expect("its address").to_string();
    let a = mc.addr();
    let b = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  a: {{servers: [\"{a}\"], timeout: {BACKEND_TIMEOUT}}}\n  \
                 r: {{servers: [\"{hole_addr}\"], timeout: 60s}}\n\
                 routes: [{{name: main, match: \"*\", strategy: consistent_hash, backend: a}}]\n\
                 side_effects: [{{replicate: {{routes: [main], to: r, commands: [set]}}}}]\n"
            )
        },
        &[],
    );
    let bound = 150 << 20;
    let watch = RssWatch::start(b.pid(), bound);
    let addr = b.addr();
    // The sets run on their own thread: a proxy killed over the bound fails them, and the
    // test then reports the bound, not the broken connection.
    let sets = thread::spawn(move || {
        let mut c = Client::connect(&addr);
        let value = value_of(1 << 20, 3);
        (0..400)
            .map(|i| c.set(&format!("big:{i}"), &value, 0, 0))
            .filter(|reply| reply == "STORED")
            .count()
    });
    let stored = sets.join();
    let rss = watch.finish();
    rss.assert_bounded("400 replicated 1 MiB sets to a replica that never reads");
    assert_eq!(stored.ok(), Some(400), "every set is answered STORED");
    let mut c = b.client();
    let (queued, dropped) = (
        c.stat("effect:replicate.0:queued"),
        c.stat("effect:replicate.0:dropped"),
    );
    assert_eq!(queued + dropped, 400, "every set was copied or dropped");
    assert!(
        (60..=64).contains(&queued),
        "64 MiB of 1 MiB copies held at most: {queued} queued, {dropped} dropped"
    );
    drop(hole);
}

/// One unread `get` of 200 distinct 1 MiB values on a parallel route over two pools (each key
/// held by both): every window's keys are asked of both servers, so a window holds up to twice
/// its keys' bytes until it is answered. Windows are sized as for a split and the next waits
/// for the client to drain: the proxy stays under 150 MiB (the values asked total 400 MiB).
#[test]
fn one_unread_parallel_get_of_200_big_values_on_two_pools_is_bounded() {
    let servers: Vec<Memcached> = (0..2)
        .map(|_| {
            Memcached::builder()
                .max_item_size("2m")
                .memory_mb(300)
                .start()
        })
        .collect();
    let (a, b) = (servers[0].addr(), servers[1].addr());
    let bifrost = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n  a: {{servers: [\"{a}\"], timeout: {BACKEND_TIMEOUT}}}\n  \
                 b: {{servers: [\"{b}\"], timeout: {BACKEND_TIMEOUT}}}\n\
                 routes: [{{match: \"*\", strategy: parallel, backends: [a, b]}}]\n"
            )
        },
        &[],
    );
    let keys: Vec<String> = (0..200).map(|i| format!("pbig:{i}:{}", i * 7919)).collect();
    let value = value_of(1 << 20, 4);
    let mut c = bifrost.client();
    for key in &keys {
        assert_eq!(c.set(key, &value, 0, 0), "STORED", "{key} on both pools");
    }
    let bound = 150 << 20;
    let watch = RssWatch::start(bifrost.pid(), bound);
    let bad = non_reader(&bifrost.addr(), &get_line(keys.iter().map(String::as_str)));
    watch.hold(Duration::from_secs(3));
    let rss = watch.finish();
    rss.assert_bounded("one unread parallel get of 200 distinct 1 MiB values on two pools");
    drop(bad);
}

/// A multi-get at the head of a client's replies, parked between windows until the client
/// drains, must go on once everything the client can read has been read, even when the
/// replies of the requests pipelined behind it (which cannot be written before it) are over
/// the soft limit on their own: here a 300 KB value behind a 64-key get answered in windows of
/// 8, with a 64 KiB soft limit. Waiting for all buffered bytes to drain would wait for ever.
#[test]
fn a_parked_multi_get_goes_on_though_the_replies_behind_it_are_over_the_soft_limit() {
    let mc = memcached();
    let keys: Vec<String> = (0..64).map(|i| format!("w{i}")).collect();
    let mut want = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let value = value_of(10_000, i);
        preload(&mc, key, &value);
        want.extend_from_slice(&value_block(key, &value));
    }
    want.extend_from_slice(b"END\r\n");
    let big = value_of(300_000, 99);
    preload(&mc, "big", &big);
    want.extend_from_slice(&value_block("big", &big));
    want.extend_from_slice(b"END\r\n");
    let b = bifrost(
        &mc,
        &["max_buffered_reply_bytes: 64KiB", "multiget_window: 8"],
    );
    let mut request = get_line(keys.iter().map(String::as_str));
    request.extend_from_slice(b"get big\r\n");
    let mut client = TcpStream::connect(b.addr()).expect("connect");
    // Several rounds: whether the head parks depends on which reply arrives first.
    for round in 0..5 {
        if let Err(e) = exchange(&mut client, &request, &want) {
            panic!(
                "round {round}: {e} (bifrost's stats: {})",
                overload_stats(&b.addr())
            );
        }
    }
}

/// The same adversaries against an HTTP origin (a warm_first route over memcached and the
/// origin, and keys `o:*` read from the origin alone): 10 clients pipelining 500 gets of a
/// 500 KB origin value and one asking for a 1 MiB origin value 2,000 times in one `get`, none
/// of them reading. An origin's replies are made by the proxy from its responses, not sliced
/// from a memcached reply: a reply that copied its value (16 reads in flight per client, all
/// sharing one origin request) held 86-90 MiB here, where memcached's path holds about 24.
#[test]
fn non_reading_clients_of_an_http_origin_are_bounded() {
    use common::origin::{FakeOrigin, OriginBehavior};
    let origin = FakeOrigin::start(OriginBehavior::Serve);
    origin.insert(b"o:big", &value_of(500_000, 0), None, None);
    origin.insert(b"o:huge", &value_of(1 << 20, 1), None, None);
    let warm = memcached();
    let backends = format!(
        "  warm:\n    servers: [\"{}\"]\n    timeout: {BACKEND_TIMEOUT}\n\
         \x20 origin:\n    servers: [\"{}\"]\n    timeout: {BACKEND_TIMEOUT}\n    max_value_size: 2MiB\n",
        warm.addr(),
        origin.base_url()
    );
    let routes =
        "  - name: o\n    match: \"o:*\"\n    strategy: consistent_hash\n    backend: origin\n\
                  \x20 - name: rest\n    match: \"*\"\n    strategy: warm_first\n    warm: warm\n\
                  \x20   cold: origin\n    write_on_miss: { ttl: 300 }\n";
    let b = common::tiers::start_proxy(1, &backends, routes, "");
    let pipeline = b"get o:big\r\n".repeat(500);
    bounded_beside_a_good_client(
        &b,
        "clients of an HTTP origin pipelining big gets, never reading",
        |addr| {
            let mut bad: Vec<TcpStream> = (0..10).map(|_| non_reader(addr, &pipeline)).collect();
            bad.push(non_reader(
                addr,
                &get_line(std::iter::repeat("o:huge").take(2000)),
            ));
            bad
        },
    );
}
