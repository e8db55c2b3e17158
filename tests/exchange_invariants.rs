//! The proxy's core invariant, checked end to end under random load: every request a client
//! sends is answered exactly once, in order, with its own reply (never another request's),
//! whatever mix of backend replies, slow replies, hangs, closes mid-reply, garbage and client
//! disconnects.
//!
//! Four scripted fake memcached servers sit behind a `consistent_hash` pool (so multi-key gets
//! are split across servers and merged) of a two-worker bifrost with a 250 ms timeout and one
//! or two connections per server (and, for some seeds, tiny per-client caps). Each key says
//! what its server does with it: `k<client>.<id>.<n>-ok` (a hit whose data is the key itself,
//! `-ok<r>`: the key repeated r times, `-tricky`: the key then `\r\nEND\r\nMN\r\n...`; stores
//! `STORED`, deletes `DELETED`, meta `HD`), `-miss` (END / EN / NOT_STORED / NOT_FOUND / NS /
//! NF), `-err` (a `SERVER_ERROR` line for the whole request, even a noreply one), `-slow<ms>`
//! (answered after the delay; below the timeout it is an ordinary reply, above it the proxy
//! must time out first), `-hang` (never answered), `-close` (a partial reply, then the server
//! closes its side), `-garbage` (a malformed `VALUE` line) and `-junk` (a line that is no
//! memcached reply at all). Several client threads send random pipelines of get / gets / gat /
//! gats (multi-key, keys over all servers, repeats), set / add (also noreply), delete (also
//! noreply), mg / ms / md (also quiet, each followed by the client's `mn`), mn, version and
//! flush_all, in one write or in random chunks, and sometimes drop the connection (FIN or RST)
//! mid-request, or mid-pipeline before reading all (or any) of the replies, or half-close it
//! after a pipeline (every reply must still come, then the proxy closes).
//!
//! The oracle is exact, not a set of plausible shapes: each fake logs, per connection and in
//! the order they arrived, every request it got and whether it answered it. A connection is
//! answered in order until the first request that hangs, closes, sends garbage or is too slow;
//! that one and everything after it on that connection must fail (the proxy resets the
//! connection), and with the reason that disruption implies (`SERVER_ERROR timeout`, `backend
//! connection lost` or `backend sent a malformed reply`; a retrieval's failure is a miss, a
//! noreply request's nothing). A request no backend ever saw must have failed too. So the reply
//! each request must get is known byte for byte: hits exactly for its own keys that their server
//! answered, in the order asked, with the data of that very key. Replies are read structurally
//! up to the count expected, then the connection must stay silent for a grace period. At the end
//! the proxy must still answer `version` and `stats`, every client connection must be gone, and
//! its error counters must cover the failures the backends caused.
//!
//! A loaded machine can legitimately turn a reply into a timeout: a fake that wrote its reply
//! late, or the proxy kept off the CPU (its threads' run-queue wait, read from
//! `/proc/<pid>/task/*/schedstat`) around that time. Only then, and only that alternative,
//! is accepted (and counted in the summary line the test prints).
//!
//! The run is seeded: the seed is printed and named on failure; `INVARIANT_SEED=<n>` replays
//! the same pipelines (timing still varies from run to run).

mod common;

use common::wire::{token, Request, Wire};
use common::{
    show, wait_until, Behavior, Bifrost, BlindForward, Client, FakeBackend, Rng, GARBAGE_REPLY,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Fake memcached servers in the pool.
const SERVERS: usize = 4;
/// Proxy worker threads.
const WORKERS: usize = 2;
/// Concurrent client threads.
const CLIENTS: usize = 8;
/// Pipelines each client sends (fewer if the run budget runs out first).
const BATCHES: usize = 50;
/// The proxy's per-request timeout.
const TIMEOUT_MS: u64 = 250;
/// Longest delay of a `-slow` key that must still be answered (well under the timeout).
const SLOW_MAX_MS: u64 = 40;
/// Shortest delay of a `-slow` key that must time out (well over the timeout).
const LATE_MS: u64 = TIMEOUT_MS + 250;
/// No client starts a new pipeline after this much time.
const RUN_BUDGET: Duration = Duration::from_secs(18);
/// Silence required after each pipeline's replies.
const QUICK_GRACE: Duration = Duration::from_millis(20);
/// Silence required before a connection is closed: longer than the latest late reply.
const FINAL_GRACE: Duration = Duration::from_millis(LATE_MS + 150);
/// Longest wait for one reply (the longest legitimate one is about the timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a request's parties (the proxy, this test) were kept off the CPU around it from which
/// on a timeout the proxy was not meant to give is excused (see [`stall_alternatives`]).
const STALL: Duration = Duration::from_millis(50);
/// A fake's reply written this close to the proxy's deadline (or later) may have missed it.
const STALL_MARGIN: Duration = Duration::from_millis(100);
/// How often fake-server threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// The cas unique the fakes give every `gets`/`gats` hit.
const CAS: u64 = 77;

const PROXY_VERSION: &[u8] = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();
/// The error line of a `-err` key.
const SERVER_ERR: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
/// A `VALUE` line no framer accepts: the proxy must see a malformed reply whatever it expects.
const GARBAGE_VALUE: &[u8] = b"VALUE \x00\xff garbage\r\n";

// ---------------------------------------------------------------------------------------------
// Seeds (the PRNG is the harness's `Rng`)
// ---------------------------------------------------------------------------------------------

/// `INVARIANT_SEED` (decimal or 0x-hex) if set, else a fresh one.
fn seed() -> u64 {
    match std::env::var("INVARIANT_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("INVARIANT_SEED={text:?}: {e}"))
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// What a key asks of its server, and the replies both sides derive from it
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Beh {
    /// A hit (a stored, deleted... success) whose data is the key repeated this many times.
    Ok(usize),
    /// Like `Ok(1)`, with data that looks like the end of a reply (see [`data_of`]).
    Tricky,
    /// A miss (not stored, not found).
    Miss,
    /// The server answers [`SERVER_ERR`] instead (for the whole of a multi-key get): an
    /// error reply, which keeps the connection in step.
    Err,
    /// Like `Ok(1)`, answered this many ms after the request arrived (under the timeout).
    Slow(u64),
    /// Answered this many ms after the request arrived: after the proxy's timeout.
    Late(u64),
    /// Never answered.
    Hang,
    /// Part of a reply, then the server closes its side.
    Close,
    /// [`GARBAGE_VALUE`] instead of a reply.
    Garbage,
    /// [`GARBAGE_REPLY`] (a line that is no memcached reply) instead of a reply.
    Junk,
}

impl Beh {
    fn suffix(self) -> String {
        match self {
            Beh::Ok(1) => "ok".to_string(),
            Beh::Ok(n) => format!("ok{n}"),
            Beh::Tricky => "tricky".to_string(),
            Beh::Miss => "miss".to_string(),
            Beh::Err => "err".to_string(),
            Beh::Slow(ms) | Beh::Late(ms) => format!("slow{ms}"),
            Beh::Hang => "hang".to_string(),
            Beh::Close => "close".to_string(),
            Beh::Garbage => "garbage".to_string(),
            Beh::Junk => "junk".to_string(),
        }
    }

    /// The behaviour a key names (its suffix after the last `-`).
    fn of(key: &str) -> Option<Beh> {
        let (_, suffix) = key.rsplit_once('-')?;
        Some(match suffix {
            "ok" => Beh::Ok(1),
            "tricky" => Beh::Tricky,
            "miss" => Beh::Miss,
            "err" => Beh::Err,
            "hang" => Beh::Hang,
            "close" => Beh::Close,
            "garbage" => Beh::Garbage,
            "junk" => Beh::Junk,
            _ => {
                if let Some(n) = suffix.strip_prefix("ok") {
                    Beh::Ok(n.parse().ok()?)
                } else {
                    let ms: u64 = suffix.strip_prefix("slow")?.parse().ok()?;
                    if ms < TIMEOUT_MS {
                        Beh::Slow(ms)
                    } else {
                        Beh::Late(ms)
                    }
                }
            }
        })
    }

    /// The server has the key (a hit, a successful store, delete...).
    fn hits(self) -> bool {
        !matches!(self, Beh::Miss | Beh::Err)
    }

    /// The server stops answering properly on this key's connection.
    fn disrupts(self) -> bool {
        matches!(
            self,
            Beh::Late(_) | Beh::Hang | Beh::Close | Beh::Garbage | Beh::Junk
        )
    }
}

/// The data stored under `key`: the key itself, repeated for `-ok<r>`, followed by reply
/// terminators and headers for `-tricky` (a framer that scans for them instead of counting
/// bytes would cut the value short).
fn data_of(key: &str) -> Vec<u8> {
    match Beh::of(key) {
        Some(Beh::Ok(n)) => key.repeat(n).into_bytes(),
        Some(Beh::Tricky) => {
            format!("{key}\r\nEND\r\nMN\r\nVALUE {key} 0 1\r\nEN\r\n").into_bytes()
        }
        _ => key.as_bytes().to_vec(),
    }
}

/// A classic `VALUE` block of `key` (with the cas unique for gets/gats).
fn value_block(key: &str, cas: bool) -> Vec<u8> {
    let data = data_of(key);
    let cas = if cas {
        format!(" {CAS}")
    } else {
        String::new()
    };
    let mut out = format!("VALUE {key} 0 {}{cas}\r\n", data.len()).into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A meta `VA` block of `key` (`k` flag: the key is returned).
fn va_block(key: &str, with_key: bool) -> Vec<u8> {
    let data = data_of(key);
    let k = if with_key {
        format!(" k{key}")
    } else {
        String::new()
    };
    let mut out = format!("VA {}{k}\r\n", data.len()).into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Why the proxy failed a request, as its `SERVER_ERROR` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Reason {
    Timeout,
    Lost,
    Malformed,
}

impl Reason {
    const ALL: [Reason; 3] = [Reason::Timeout, Reason::Lost, Reason::Malformed];

    fn reply(self) -> &'static [u8] {
        match self {
            Reason::Timeout => b"SERVER_ERROR timeout\r\n",
            Reason::Lost => b"SERVER_ERROR backend connection lost\r\n",
            Reason::Malformed => b"SERVER_ERROR backend sent a malformed reply\r\n",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted fake memcached servers
// ---------------------------------------------------------------------------------------------

/// What a fake did with one request it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered, on a connection still in step: the proxy must pass this reply on.
    Answered,
    /// At or after the first disruption on its connection: the proxy must fail it, so.
    Failed(Reason),
}

/// One request as a fake received it.
#[derive(Clone, Debug)]
struct Record {
    server: usize,
    /// Connection number (over all fakes, in accept order).
    conn: usize,
    /// Position on that connection.
    pos: usize,
    line: String,
    /// Its keys (`flush:<id>` for `flush_all <id>`).
    keys: Vec<String>,
    outcome: Outcome,
    /// When the fake read it.
    arrived: Instant,
    /// When the fake wrote its reply (an answered or late one), if it did.
    written: Option<Instant>,
}

#[derive(Default)]
struct FakeShared {
    stop: AtomicBool,
    next_conn: AtomicUsize,
    records: Mutex<Vec<Record>>,
    /// Disruptions: (server, conn, what).
    disruptions: Mutex<Vec<(usize, usize, &'static str)>>,
    /// Anything a fake could not make sense of (the proxy sent something wrong).
    problems: Mutex<Vec<String>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The fake servers, each on its own port; stopped and joined on drop.
struct Fakes {
    addrs: Vec<SocketAddr>,
    shared: Arc<FakeShared>,
    acceptors: Vec<JoinHandle<()>>,
}

impl Fakes {
    fn start(count: usize, seed: u64) -> Fakes {
        let shared = Arc::new(FakeShared::default());
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        for server in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
            addrs.push(listener.local_addr().expect("fake server address"));
            let shared = Arc::clone(&shared);
            acceptors.push(thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                    let conn_shared = Arc::clone(&shared);
                    let seed = seed ^ (conn as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let handle = thread::spawn(move || {
                        serve_connection(stream, server, conn, seed, conn_shared)
                    });
                    lock(&shared.threads).push(handle);
                }
            }));
        }
        Fakes {
            addrs,
            shared,
            acceptors,
        }
    }

    fn records(&self) -> Vec<Record> {
        lock(&self.shared.records).clone()
    }

    fn disruptions(&self) -> Vec<(usize, usize, &'static str)> {
        lock(&self.shared.disruptions).clone()
    }

    fn problems(&self) -> Vec<String> {
        lock(&self.shared.problems).clone()
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for addr in &self.addrs {
            let _ = TcpStream::connect_timeout(addr, Duration::from_secs(1));
        }
        for acceptor in self.acceptors.drain(..) {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A request as the proxy forwarded it to a fake.
#[derive(Debug)]
struct BackendRequest {
    cmd: String,
    keys: Vec<String>,
    flags: Vec<String>,
    noreply: bool,
    line: String,
}

impl BackendRequest {
    fn quiet(&self) -> bool {
        self.flags.iter().any(|f| f == "q")
    }

    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    fn is_retrieval(&self) -> bool {
        matches!(self.cmd.as_str(), "get" | "gets" | "gat" | "gats")
    }

    /// The reply of a server in step.
    fn answer(&self) -> Vec<u8> {
        let beh = |key: &String| Beh::of(key).unwrap_or(Beh::Miss);
        if self.keys.iter().any(|k| beh(k) == Beh::Err) {
            // Sent even for noreply (memcached does so for some errors): the proxy must read
            // and drop it.
            return SERVER_ERR.to_vec();
        }
        let first = self.keys.first().map(beh).unwrap_or(Beh::Miss);
        let quiet = self.quiet();
        let text = |s: &str| s.as_bytes().to_vec();
        match self.cmd.as_str() {
            "get" | "gets" | "gat" | "gats" => {
                let cas = self.cmd.ends_with('s');
                let mut out = Vec::new();
                for key in self.keys.iter().filter(|k| beh(k).hits()) {
                    out.extend(value_block(key, cas));
                }
                out.extend_from_slice(b"END\r\n");
                out
            }
            "set" | "add" | "replace" | "append" | "prepend" => match (self.noreply, first) {
                (true, _) => Vec::new(),
                (false, Beh::Miss) => text("NOT_STORED\r\n"),
                (false, _) => text("STORED\r\n"),
            },
            "delete" => match (self.noreply, first) {
                (true, _) => Vec::new(),
                (false, Beh::Miss) => text("NOT_FOUND\r\n"),
                (false, _) => text("DELETED\r\n"),
            },
            "mg" => match (first.hits(), self.flag("v"), quiet) {
                (true, true, _) => va_block(&self.keys[0], self.flag("k")),
                (_, _, true) => Vec::new(),
                (true, false, false) => text("HD\r\n"),
                (false, _, false) => text("EN\r\n"),
            },
            "ms" | "md" => match (first.hits(), quiet) {
                (false, _) if self.cmd == "ms" => text("NS\r\n"),
                (false, _) => text("NF\r\n"),
                (true, true) => Vec::new(),
                (true, false) => text("HD\r\n"),
            },
            "mn" => text("MN\r\n"),
            "version" => text("VERSION 0.0.0-fake\r\n"),
            "flush_all" => text("OK\r\n"),
            _ => text("ERROR\r\n"),
        }
    }

    /// What a server closing mid-reply sends first: an incomplete reply of the right kind.
    fn partial(&self) -> Vec<u8> {
        if self.is_retrieval() {
            format!("VALUE {} 0 10\r\nabc", self.keys[0]).into_bytes()
        } else if self.cmd == "mg" {
            b"VA 10\r\nabc".to_vec()
        } else {
            b"STOR".to_vec()
        }
    }
}

/// Frames the first request in `buf`: `Ok(Some((bytes used, request)))` when complete.
fn parse_backend_request(buf: &[u8]) -> Result<Option<(usize, BackendRequest)>, String> {
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > 4096 {
            Err("no line end in 4 KiB".to_string())
        } else {
            Ok(None)
        };
    };
    let line = buf[..eol]
        .strip_suffix(b"\r")
        .ok_or("a request line not ending in \\r\\n")?;
    let line = std::str::from_utf8(line).map_err(|_| "a request line that is not UTF-8")?;
    let tokens: Vec<&str> = line.split(' ').collect();
    if tokens.iter().any(|t| t.is_empty()) {
        return Err(format!("empty token in {line:?}"));
    }
    let owned = |ts: &[&str]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let mut request = BackendRequest {
        cmd: tokens[0].to_string(),
        keys: Vec::new(),
        flags: Vec::new(),
        noreply: tokens.last() == Some(&"noreply"),
        line: line.to_string(),
    };
    let mut used = eol + 1;
    let data_len = |at: usize| -> Result<usize, String> {
        tokens
            .get(at)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("no data length in {line:?}"))
    };
    match tokens[0] {
        "get" | "gets" if tokens.len() >= 2 => request.keys = owned(&tokens[1..]),
        "gat" | "gats" if tokens.len() >= 3 => request.keys = owned(&tokens[2..]),
        "set" | "add" | "replace" | "append" | "prepend" if tokens.len() >= 5 => {
            request.keys = owned(&tokens[1..2]);
            used += data_len(4)? + 2;
        }
        "ms" if tokens.len() >= 3 => {
            request.keys = owned(&tokens[1..2]);
            request.flags = owned(&tokens[3..]);
            used += data_len(2)? + 2;
        }
        "delete" if tokens.len() >= 2 => request.keys = owned(&tokens[1..2]),
        "mg" | "md" if tokens.len() >= 2 => {
            request.keys = owned(&tokens[1..2]);
            request.flags = owned(&tokens[2..]);
        }
        "flush_all" if tokens.len() == 2 => request.keys = vec![format!("flush:{}", tokens[1])],
        "mn" | "version" if tokens.len() == 1 => {}
        _ => return Err(format!("unexpected request {line:?}")),
    }
    if buf.len() < used {
        return Ok(None);
    }
    if used > eol + 1 && &buf[used - 2..used] != b"\r\n" {
        return Err(format!("data block of {line:?} not ending in \\r\\n"));
    }
    if request
        .keys
        .iter()
        .any(|k| !k.starts_with("flush:") && Beh::of(k).is_none())
    {
        return Err(format!("a key that names no behaviour in {line:?}"));
    }
    Ok(Some((used, request)))
}

/// What a fake connection's writer does next.
enum Action {
    /// Write this at that instant (or as soon after it as the earlier replies allow).
    Reply(Vec<u8>, Instant),
    /// Write this at that instant (after the proxy's timeout), then nothing more.
    Late(Vec<u8>, Instant),
    /// Write nothing more.
    Hang,
    /// Write this incomplete reply, then close the sending side.
    Close(Vec<u8>),
    /// Write this instead of a reply, then nothing more.
    Garbage(&'static [u8]),
}

/// One connection: this thread reads, frames, records and decides; a writer thread answers in
/// order, each reply at its due time, so delays do not add up along a pipeline (as a memcached
/// with worker threads would answer) and reading never waits on writing.
fn serve_connection(
    stream: TcpStream,
    server: usize,
    conn: usize,
    seed: u64,
    shared: Arc<FakeShared>,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(STOP_POLL));
    let (tx, rx) = mpsc::channel::<(Option<usize>, Action)>();
    match stream.try_clone() {
        Ok(writer) => {
            // The writer drains what it was given, then finds the channel closed.
            let writer_shared = Arc::clone(&shared);
            let handle = thread::spawn(move || write_loop(writer, rx, seed, &writer_shared));
            read_loop(stream, server, conn, tx, &shared);
            let _ = handle.join();
        }
        Err(e) => lock(&shared.problems).push(format!("server {server}: clone socket: {e}")),
    }
}

fn read_loop(
    mut stream: TcpStream,
    server: usize,
    conn: usize,
    tx: mpsc::Sender<(Option<usize>, Action)>,
    shared: &FakeShared,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut broken: Option<Reason> = None;
    let mut pos = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let arrived = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let (used, request) = match parse_backend_request(&buf) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => {
                    lock(&shared.problems).push(format!(
                        "server {server} conn {conn}: {e}; input: {}",
                        show(&buf)
                    ));
                    return;
                }
            };
            buf.drain(..used);
            let keys = request.keys.clone();
            let (outcome, action) = match broken {
                Some(reason) => (Outcome::Failed(reason), None),
                None => decide(&request, arrived),
            };
            if let (Outcome::Failed(reason), None) = (outcome, broken) {
                broken = Some(reason);
                let what = disruption_name(&request);
                lock(&shared.disruptions).push((server, conn, what));
            }
            let index = (!keys.is_empty()).then(|| {
                let mut records = lock(&shared.records);
                records.push(Record {
                    server,
                    conn,
                    pos,
                    line: request.line.clone(),
                    keys,
                    outcome,
                    arrived,
                    written: None,
                });
                pos += 1;
                records.len() - 1
            });
            if let Some(action) = action {
                let _ = tx.send((index, action)); // the writer may have stopped (hang, close...)
            }
        }
    }
}

/// The disruptive behaviour that decides `request`'s fate (its first disruptive key's).
fn disruptor(request: &BackendRequest) -> Option<Beh> {
    request
        .keys
        .iter()
        .filter_map(|k| Beh::of(k))
        .find(|b| b.disrupts())
}

fn disruption_name(request: &BackendRequest) -> &'static str {
    match disruptor(request) {
        Some(Beh::Late(_)) => "late",
        Some(Beh::Hang) => "hang",
        Some(Beh::Close) => "close",
        Some(Beh::Garbage) => "garbage",
        Some(Beh::Junk) => "junk",
        _ => "?",
    }
}

/// What a connection still in step does with `request`, and what the proxy must make of it.
fn decide(request: &BackendRequest, arrived: Instant) -> (Outcome, Option<Action>) {
    let Some(disruptive) = disruptor(request) else {
        let delay = request
            .keys
            .iter()
            .filter_map(|k| match Beh::of(k) {
                Some(Beh::Slow(ms)) => Some(ms),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let due = arrived + Duration::from_millis(delay);
        return (
            Outcome::Answered,
            Some(Action::Reply(request.answer(), due)),
        );
    };
    // A junk line is out of sync whatever the request: even before the `MN` that ends a
    // noreply or quiet request's reply, only the codes its verb can get may come (SPEC §6b).
    let (reason, action) = match disruptive {
        Beh::Late(ms) => (
            Reason::Timeout,
            Action::Late(request.answer(), arrived + Duration::from_millis(ms)),
        ),
        Beh::Hang => (Reason::Timeout, Action::Hang),
        Beh::Close => (Reason::Lost, Action::Close(request.partial())),
        Beh::Garbage => (Reason::Malformed, Action::Garbage(GARBAGE_VALUE)),
        _ => (Reason::Malformed, Action::Garbage(GARBAGE_REPLY)),
    };
    (Outcome::Failed(reason), Some(action))
}

/// Answers in order. Every reply is written (or at least tried: the proxy may have gone) and
/// its time recorded, so that the oracle can tell a fake that answered too late for the timeout
/// (a starved machine) from a proxy that lost a reply.
fn write_loop(
    mut stream: TcpStream,
    rx: mpsc::Receiver<(Option<usize>, Action)>,
    seed: u64,
    shared: &FakeShared,
) {
    let mut rng = Rng::new(seed);
    let stop = &shared.stop;
    let mut gone = false;
    let written = |index: Option<usize>| {
        let Some(i) = index else { return };
        if let Some(record) = lock(&shared.records).get_mut(i) {
            record.written = Some(Instant::now());
        }
    };
    loop {
        let (index, action) = match rx.recv_timeout(STOP_POLL) {
            Ok(next) => next,
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::SeqCst) => continue,
            Err(_) => return,
        };
        match action {
            Action::Reply(bytes, due) => {
                if !sleep_until(due, stop) {
                    return;
                }
                if !gone {
                    gone = write_in_pieces(&mut stream, &bytes, &mut rng).is_err();
                }
                written(index);
            }
            Action::Late(bytes, due) => {
                if sleep_until(due, stop) {
                    let _ = stream.write_all(&bytes);
                    written(index);
                }
                return;
            }
            Action::Hang => return,
            Action::Close(partial) => {
                let _ = stream.write_all(&partial);
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            Action::Garbage(garbage) => {
                let _ = stream.write_all(garbage);
                return;
            }
        }
    }
}

/// Writes `bytes`, now and then in two segments a moment apart (so the proxy frames replies
/// that arrive in pieces).
fn write_in_pieces(stream: &mut TcpStream, bytes: &[u8], rng: &mut Rng) -> std::io::Result<()> {
    if bytes.len() > 1 && rng.chance(10) {
        let cut = 1 + rng.below(bytes.len() - 1);
        stream.write_all(&bytes[..cut])?;
        thread::sleep(Duration::from_millis(1));
        return stream.write_all(&bytes[cut..]);
    }
    stream.write_all(bytes)
}

/// Sleeps until `due` in short steps; false if stopped meanwhile.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        thread::sleep((due - now).min(STOP_POLL));
    }
}

// ---------------------------------------------------------------------------------------------
// Client requests
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Req {
    Get {
        cmd: &'static str,
        keys: Vec<String>,
    },
    Store {
        cmd: &'static str,
        key: String,
        data: Vec<u8>,
        noreply: bool,
    },
    Delete {
        key: String,
        noreply: bool,
    },
    Mg {
        key: String,
        flags: &'static str,
        quiet: bool,
    },
    Ms {
        key: String,
        data: Vec<u8>,
        quiet: bool,
    },
    Md {
        key: String,
        quiet: bool,
    },
    Mn,
    Version,
    FlushAll {
        id: u64,
    },
}

impl Req {
    fn encode(&self) -> Vec<u8> {
        let q = |quiet: bool| if quiet { " q" } else { "" };
        let nr = |noreply: bool| if noreply { " noreply" } else { "" };
        let with_data = |line: String, data: &[u8]| {
            let mut out = line.into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        };
        match self {
            Req::Get { cmd, keys } => {
                let exptime = if cmd.starts_with("gat") { " 0" } else { "" };
                format!("{cmd}{exptime} {}\r\n", keys.join(" ")).into_bytes()
            }
            Req::Store {
                cmd,
                key,
                data,
                noreply,
            } => with_data(
                format!("{cmd} {key} 0 0 {}{}\r\n", data.len(), nr(*noreply)),
                data,
            ),
            Req::Delete { key, noreply } => format!("delete {key}{}\r\n", nr(*noreply)).into(),
            Req::Mg { key, flags, quiet } => format!("mg {key}{flags}{}\r\n", q(*quiet)).into(),
            Req::Ms { key, data, quiet } => {
                with_data(format!("ms {key} {}{}\r\n", data.len(), q(*quiet)), data)
            }
            Req::Md { key, quiet } => format!("md {key}{}\r\n", q(*quiet)).into(),
            Req::Mn => b"mn\r\n".to_vec(),
            Req::Version => b"version\r\n".to_vec(),
            Req::FlushAll { id } => format!("flush_all {id}\r\n").into_bytes(),
        }
    }

    /// The request line, for messages.
    fn describe(&self) -> String {
        let bytes = self.encode();
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end])
            .trim_end()
            .to_string()
    }

    /// Keys whose backend records decide this request's reply.
    fn keys(&self) -> Vec<String> {
        match self {
            Req::Get { keys, .. } => keys.clone(),
            Req::Store { key, .. }
            | Req::Delete { key, .. }
            | Req::Mg { key, .. }
            | Req::Ms { key, .. }
            | Req::Md { key, .. } => vec![key.clone()],
            Req::FlushAll { id } => vec![format!("flush:{id}")],
            Req::Mn | Req::Version => Vec::new(),
        }
    }
}

/// Builds one client's keys and requests.
struct Generator {
    rng: Rng,
    client: usize,
    next_id: u64,
    /// The last pipeline's connection was dropped: the next one, on a new connection, is long,
    /// so that it has requests waiting when late replies for the dropped one come in (the new
    /// connection may have taken over the old one's place in the proxy).
    after_abort: bool,
}

impl Generator {
    fn beh(&mut self, big_allowed: &mut bool) -> Beh {
        match self.rng.below(100) {
            0..=59 => {
                if *big_allowed && self.rng.chance(4) {
                    *big_allowed = false;
                    Beh::Ok(self.rng.range(200, 2000) as usize)
                } else if self.rng.chance(5) {
                    Beh::Tricky
                } else {
                    Beh::Ok(1)
                }
            }
            60..=81 => Beh::Miss,
            82..=84 => Beh::Err,
            _ => Beh::Slow(self.rng.range(1, SLOW_MAX_MS)),
        }
    }

    fn disruptive_beh(&mut self) -> Beh {
        match self.rng.below(6) {
            0 | 1 => Beh::Hang,
            2 => Beh::Close,
            3 => Beh::Garbage,
            4 => Beh::Junk,
            _ => Beh::Late(self.rng.range(LATE_MS, LATE_MS + 100)),
        }
    }

    fn key(&self, id: u64, n: usize, beh: Beh) -> String {
        format!("k{}.{id}.{n}-{}", self.client, beh.suffix())
    }

    fn data(&mut self, big_allowed: &mut bool) -> Vec<u8> {
        let len = if *big_allowed && self.rng.chance(3) {
            *big_allowed = false;
            self.rng.range(10_000, 64_000) as usize
        } else {
            self.rng.below(64)
        };
        let mut data: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
        if len >= 7 && self.rng.chance(20) {
            data[..7].copy_from_slice(b"\r\nEND\r\n");
        }
        data
    }

    /// A pipeline; in a `disruptive` one, one random request (and 2% of the other keys)
    /// gets a disruptive key. A quiet meta request is always followed by the client's `mn`.
    fn batch(&mut self, disruptive: bool) -> Vec<Req> {
        let size = match self.rng.below(10) {
            _ if std::mem::take(&mut self.after_abort) => 20 + self.rng.below(20),
            0..=2 => 1 + self.rng.below(3),
            3..=7 => 3 + self.rng.below(10),
            _ => 10 + self.rng.below(30),
        };
        let disruptor = disruptive.then(|| self.rng.below(size));
        let mut big_allowed = true;
        let mut out = Vec::new();
        while out.len() < size {
            let id = self.next_id;
            self.next_id += 1;
            let mut first = disruptor == Some(out.len());
            let mut beh = |g: &mut Generator, big: &mut bool| {
                if std::mem::take(&mut first) || (disruptive && g.rng.chance(2)) {
                    g.disruptive_beh()
                } else {
                    g.beh(big)
                }
            };
            let b = beh(self, &mut big_allowed);
            let key = self.key(id, 0, b);
            let quiet_roll = self.rng.chance(35);
            match self.rng.below(100) {
                0..=19 => {
                    let cmd = if self.rng.chance(80) { "get" } else { "gets" };
                    out.push(Req::Get {
                        cmd,
                        keys: vec![key],
                    });
                }
                20..=35 => {
                    let cmd = ["get", "get", "gets", "gat", "gats"][self.rng.below(5)];
                    let count = 2 + self.rng.below(7);
                    let mut keys = vec![key];
                    for n in 1..count {
                        if self.rng.chance(12) {
                            let again = keys[self.rng.below(keys.len())].clone();
                            keys.push(again);
                        } else {
                            let b = beh(self, &mut big_allowed);
                            keys.push(self.key(id, n, b));
                        }
                    }
                    out.push(Req::Get { cmd, keys });
                }
                36..=53 => {
                    let cmd = if self.rng.chance(80) { "set" } else { "add" };
                    let noreply = self.rng.chance(33);
                    let data = self.data(&mut big_allowed);
                    out.push(Req::Store {
                        cmd,
                        key,
                        data,
                        noreply,
                    });
                }
                54..=60 => out.push(Req::Delete {
                    key,
                    noreply: self.rng.chance(30),
                }),
                61..=75 => {
                    let flags = ["", " v", " v k"][self.rng.below(3)];
                    out.push(Req::Mg {
                        key,
                        flags,
                        quiet: quiet_roll,
                    });
                    if quiet_roll {
                        out.push(Req::Mn);
                    }
                }
                76..=85 => {
                    let data = self.data(&mut big_allowed);
                    out.push(Req::Ms {
                        key,
                        data,
                        quiet: quiet_roll,
                    });
                    if quiet_roll {
                        out.push(Req::Mn);
                    }
                }
                86..=89 => {
                    out.push(Req::Md {
                        key,
                        quiet: quiet_roll,
                    });
                    if quiet_roll {
                        out.push(Req::Mn);
                    }
                }
                90..=94 => out.push(Req::Mn),
                95..=96 => out.push(Req::Version),
                _ => out.push(Req::FlushAll {
                    id: self.client as u64 * 1_000_000 + id,
                }),
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// A client connection that reads replies by their structure
// ---------------------------------------------------------------------------------------------

impl Request for Req {
    fn read_reply(&self, w: &mut Wire, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Req::Get { .. } => loop {
                let line = w.line()?;
                out.extend_from_slice(&line);
                if !line.starts_with(b"VALUE ") {
                    return Ok(());
                }
                let len = token(&line, 3).ok_or("a VALUE line without a length")?;
                out.extend(w.take(len + 2)?);
            },
            Req::Store { noreply: true, .. } | Req::Delete { noreply: true, .. } => Ok(()),
            Req::Mg { quiet, .. } | Req::Ms { quiet, .. } | Req::Md { quiet, .. } => {
                // A quiet request is followed by `mn`: its reply may be nothing.
                if *quiet && w.next_line_is(b"MN\r\n")? {
                    return Ok(());
                }
                let line = w.line()?;
                out.extend_from_slice(&line);
                if line.starts_with(b"VA ") {
                    let len = token(&line, 1).ok_or("a VA line without a length")?;
                    out.extend(w.take(len + 2)?);
                }
                Ok(())
            }
            Req::Store { .. }
            | Req::Delete { .. }
            | Req::Mn
            | Req::Version
            | Req::FlushAll { .. } => {
                out.extend(w.line()?);
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

/// One reply read, to be judged once the backends' records are complete.
struct Check {
    place: String,
    req: Req,
    reply: Vec<u8>,
}

#[derive(Default)]
struct ClientResult {
    checks: Vec<Check>,
    errors: Vec<String>,
    requests: usize,
    connections: usize,
    aborted: usize,
    half_closed: usize,
    batches: usize,
}

fn run_client(addr: &str, id: usize, seed: u64, deadline: Instant) -> ClientResult {
    let mut gen = Generator {
        rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03)),
        client: id,
        next_id: 0,
        after_abort: false,
    };
    let mut out = ClientResult::default();
    let mut wire: Option<Wire> = None;
    for batch in 0..BATCHES {
        if Instant::now() >= deadline {
            break;
        }
        let w = match wire.take() {
            Some(w) => w,
            None => match Wire::connect(addr, READ_TIMEOUT) {
                Ok(w) => {
                    out.connections += 1;
                    w
                }
                Err(e) => {
                    out.errors.push(format!("client {id}: cannot connect: {e}"));
                    return out;
                }
            },
        };
        out.batches += 1;
        let place = format!(
            "client {id} connection {} pipeline {batch}",
            out.connections
        );
        match run_batch(&mut gen, w, &place, &mut out) {
            Ok(next) => wire = next,
            Err(e) => {
                out.errors.push(format!("{place}: {e}"));
                return out;
            }
        }
    }
    if let Some(mut w) = wire {
        if let Err(e) = w.silence(FINAL_GRACE) {
            out.errors.push(format!(
                "client {id} connection {}: after the last reply: {e}",
                out.connections
            ));
        }
    }
    out
}

/// Sends one pipeline and reads its replies (or drops the connection on the way). Returns the
/// connection if it is to be used again.
fn run_batch(
    gen: &mut Generator,
    mut w: Wire,
    place: &str,
    out: &mut ClientResult,
) -> Result<Option<Wire>, String> {
    let disruptive = gen.rng.chance(40);
    let reqs = gen.batch(disruptive);
    let bytes: Vec<u8> = reqs.iter().flat_map(Req::encode).collect();
    // Young connections are dropped more often: a client gone with requests in flight frees
    // its slot in the proxy, and a new connection that takes it over numbers its requests from
    // zero again, so late replies for the old one are the most likely to be misdelivered.
    let young = w.pipelines == 0;
    w.pipelines += 1;
    let (cut_mid_request, cut_mid_pipeline) = if young { (8, 30) } else { (4, 10) };
    let mode = gen.rng.below(100);
    if mode < cut_mid_request {
        // Gone mid-request: a prefix cut anywhere, then a FIN or an RST.
        let cut = 1 + gen.rng.below(bytes.len() - 1);
        let _ = w.stream.write_all(&bytes[..cut]);
        out.aborted += 1;
        gen.after_abort = true;
        w.abort(gen.rng.chance(50));
        return Ok(None);
    }
    if gen.rng.chance(30) {
        let mut at = 0;
        while at < bytes.len() {
            let n = (1 + gen.rng.below(300)).min(bytes.len() - at);
            w.send(&bytes[at..at + n])?;
            at += n;
        }
    } else {
        w.send(&bytes)?;
    }
    out.requests += reqs.len();
    // Done writing (a half-close): every reply still comes, then the proxy closes.
    let half_close = mode >= cut_mid_pipeline && gen.rng.chance(5);
    if half_close {
        let _ = w.stream.shutdown(Shutdown::Write);
    }
    // Gone mid-pipeline: after reading only some of the replies (maybe none).
    let read = if mode < cut_mid_pipeline {
        gen.rng.below(reqs.len())
    } else {
        reqs.len()
    };
    for (index, req) in reqs.iter().enumerate().take(read) {
        let reply = w.reply(req).map_err(|e| {
            format!(
                "request {index} `{}` ({} in the pipeline): {e}",
                req.describe(),
                reqs.len()
            )
        })?;
        out.checks.push(Check {
            place: format!("{place} request {index}"),
            req: req.clone(),
            reply,
        });
    }
    if read < reqs.len() {
        // Give the proxy a moment to send the rest on to the backends, so that the connection
        // goes with requests in flight (an RST frees its slot in the proxy at once).
        thread::sleep(Duration::from_millis(gen.rng.range(0, 15)));
        out.aborted += 1;
        gen.after_abort = true;
        w.abort(gen.rng.chance(60));
        return Ok(None);
    }
    if half_close {
        out.half_closed += 1;
        w.expect_closed().map_err(|e| {
            format!(
                "after the {} replies of the pipeline [{}], sent before a half-close: {e}",
                reqs.len(),
                reqs.iter()
                    .map(Req::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        return Ok(None);
    }
    w.silence(QUICK_GRACE)
        .map_err(|e| format!("after the {} replies of the pipeline: {e}", reqs.len()))?;
    if gen.rng.chance(8) {
        w.silence(FINAL_GRACE)
            .map_err(|e| format!("before closing: {e}"))?;
        return Ok(None);
    }
    Ok(Some(w))
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/// What became of a key's fragment at its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Answered,
    /// Answered with [`SERVER_ERR`] (a `-err` key was in the same request to that server).
    Errored,
    Failed(Reason),
    /// No backend received it: the proxy failed it before sending it (reason unknown).
    Unseen,
}

/// Outcomes assumed for some records (by index) instead of the recorded ones.
type Choice = HashMap<usize, Outcome>;

/// How a reply compares with what the oracle allows.
enum Verdict {
    /// Exactly what the backends' records say.
    Exact,
    /// What the records allow once a stall of the machine is taken into account (see
    /// [`stall_alternatives`]).
    Excused,
    Wrong(String),
}

struct Oracle {
    records: Vec<Record>,
    by_key: HashMap<String, Vec<usize>>,
    /// The other outcome a record may have had on a machine that stalled at the time.
    alternatives: Choice,
}

impl Oracle {
    fn new(records: Vec<Record>, stalls: &[Stall]) -> Oracle {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            for k in &r.keys {
                let list = by_key.entry(k.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let alternatives = stall_alternatives(&records, stalls);
        Oracle {
            records,
            by_key,
            alternatives,
        }
    }

    fn records_of(&self, key: &str) -> Vec<usize> {
        self.by_key.get(key).cloned().unwrap_or_default()
    }

    fn outcome(&self, i: usize, choice: &Choice) -> Outcome {
        choice.get(&i).copied().unwrap_or(self.records[i].outcome)
    }

    fn state(&self, key: &str, choice: &Choice) -> State {
        let Some(&i) = self.by_key.get(key).and_then(|l| l.first()) else {
            return State::Unseen;
        };
        match self.outcome(i, choice) {
            Outcome::Answered if self.records[i].keys.iter().any(|k| k.ends_with("-err")) => {
                State::Errored
            }
            Outcome::Answered => State::Answered,
            Outcome::Failed(reason) => State::Failed(reason),
        }
    }

    /// Every request reaches the backends at most once (a flush_all once per server).
    fn duplicates(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, list) in &self.by_key {
            let servers: HashSet<usize> = list.iter().map(|&i| self.records[i].server).collect();
            let limit = if key.starts_with("flush:") {
                SERVERS
            } else {
                1
            };
            if list.len() > limit || servers.len() < list.len() {
                let lines: Vec<String> = list.iter().map(|&i| self.describe(i)).collect();
                out.push(format!(
                    "{key} reached the backends {} times: {}",
                    list.len(),
                    lines.join("; ")
                ));
            }
        }
        out
    }

    fn describe(&self, i: usize) -> String {
        let r = &self.records[i];
        format!(
            "server {} conn {} #{} `{}` {:?}",
            r.server, r.conn, r.pos, r.line, r.outcome
        )
    }

    /// Every reply `req` may get if the records' outcomes are as `choice` says (one, but for
    /// flush_all's and unseen requests' failure reasons).
    fn expected(&self, req: &Req, choice: &Choice) -> Vec<Vec<u8>> {
        let state = |key: &str| self.state(key, choice);
        let beh = |key: &str| Beh::of(key).unwrap_or(Beh::Miss);
        let text = |s: &str| vec![s.as_bytes().to_vec()];
        let failure = |state: State| -> Vec<Vec<u8>> {
            match state {
                State::Failed(reason) => vec![reason.reply().to_vec()],
                _ => Reason::ALL.iter().map(|r| r.reply().to_vec()).collect(),
            }
        };
        match req {
            Req::Get { cmd, keys } => {
                let cas = cmd.ends_with('s');
                // Not split (one request to one server): the server's error is the reply.
                // Split: the keys of a part that errs are misses.
                let parts: HashSet<usize> = keys
                    .iter()
                    .flat_map(|k| self.by_key.get(k).cloned().unwrap_or_default())
                    .collect();
                let all_seen = keys.iter().all(|k| self.by_key.contains_key(k));
                if all_seen && parts.len() == 1 && keys.iter().any(|k| state(k) == State::Errored) {
                    return vec![SERVER_ERR.to_vec()];
                }
                let mut out = Vec::new();
                for key in keys {
                    if beh(key).hits() && state(key) == State::Answered {
                        out.extend(value_block(key, cas));
                    }
                }
                out.extend_from_slice(b"END\r\n");
                vec![out]
            }
            Req::Store { noreply: true, .. } | Req::Delete { noreply: true, .. } => {
                vec![Vec::new()]
            }
            Req::Store { key, .. } | Req::Delete { key, .. } => match state(key) {
                State::Errored => vec![SERVER_ERR.to_vec()],
                State::Answered => {
                    let is_store = matches!(req, Req::Store { .. });
                    match (is_store, beh(key).hits()) {
                        (true, true) => text("STORED\r\n"),
                        (true, false) => text("NOT_STORED\r\n"),
                        (false, true) => text("DELETED\r\n"),
                        (false, false) => text("NOT_FOUND\r\n"),
                    }
                }
                state => failure(state),
            },
            Req::Mg { key, .. } if state(key) == State::Errored => vec![SERVER_ERR.to_vec()],
            Req::Mg { key, flags, quiet } => {
                let hit = beh(key).hits() && state(key) == State::Answered;
                match (hit, flags.contains('v'), quiet) {
                    (true, true, _) => vec![va_block(key, flags.contains('k'))],
                    (_, _, true) => vec![Vec::new()],
                    (true, false, false) => text("HD\r\n"),
                    (false, _, false) => text("EN\r\n"),
                }
            }
            Req::Ms { key, quiet, .. } | Req::Md { key, quiet } => match state(key) {
                State::Errored => vec![SERVER_ERR.to_vec()],
                State::Answered => match (beh(key).hits(), quiet) {
                    (false, _) if matches!(req, Req::Ms { .. }) => text("NS\r\n"),
                    (false, _) => text("NF\r\n"),
                    (true, true) => vec![Vec::new()],
                    (true, false) => text("HD\r\n"),
                },
                state => failure(state),
            },
            Req::Mn => text("MN\r\n"),
            Req::Version => vec![PROXY_VERSION.to_vec()],
            Req::FlushAll { id } => {
                let records = self.records_of(&format!("flush:{id}"));
                let mut reasons = Vec::new();
                for &i in &records {
                    if let Outcome::Failed(reason) = self.outcome(i, choice) {
                        reasons.push(reason);
                    }
                }
                if records.len() < SERVERS {
                    reasons.extend(Reason::ALL);
                }
                if reasons.is_empty() {
                    return text("OK\r\n");
                }
                reasons.sort();
                reasons.dedup();
                reasons.iter().map(|r| r.reply().to_vec()).collect()
            }
        }
    }

    /// Judges `check`'s reply: exactly as the records say, or as they allow for a stall, or
    /// wrong.
    fn judge(&self, check: &Check) -> Verdict {
        let exact = self.expected(&check.req, &Choice::new());
        if exact.contains(&check.reply) {
            return Verdict::Exact;
        }
        // Every combination of the alternatives of the records involved.
        let mut involved: Vec<usize> = check
            .req
            .keys()
            .iter()
            .flat_map(|k| self.records_of(k))
            .filter(|i| self.alternatives.contains_key(i))
            .collect();
        involved.sort_unstable();
        involved.dedup();
        let mut allowed = exact;
        for mask in 1..(1u32 << involved.len().min(8)) {
            let choice: Choice = involved
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, &i)| (i, self.alternatives[&i]))
                .collect();
            let more = self.expected(&check.req, &choice);
            if more.contains(&check.reply) {
                return Verdict::Excused;
            }
            allowed.extend(more);
        }
        allowed.sort();
        allowed.dedup();
        let mut backends = Vec::new();
        for key in check.req.keys() {
            let list = self.records_of(&key);
            if list.is_empty() {
                backends.push(format!("{key}: reached no backend"));
            }
            for i in list {
                backends.push(format!("{key}: {}", self.describe(i)));
            }
        }
        Verdict::Wrong(format!(
            "{}: `{}` got {}, expected {}; at the backends: [{}]",
            check.place,
            check.req.describe(),
            show(&check.reply),
            allowed
                .iter()
                .map(|e| show(e))
                .collect::<Vec<_>>()
                .join(" or "),
            backends.join("; ")
        ))
    }
}

/// What a stalled machine (this test shares it with the proxy: a loaded CI box) may change in
/// the records' outcomes. Only a timeout: never another request's reply, never a reply out of
/// order, never a missing or extra one.
///
/// - A fake whose reply went out so late that the proxy's deadline may have passed first, or
///   the proxy (or this test) kept off the CPU for [`STALL`] in all around the time a request
///   was at a backend (the proxy may then fire its timer before reading a reply that is
///   there): that request and everything after it on its backend connection may have failed
///   `SERVER_ERROR timeout` instead (the proxy resets the connection on a timeout).
/// - A `-slow` reply meant to come after the timeout, with the proxy kept off the CPU from the
///   deadline until it came: the proxy may have read it before its timer fired.
fn stall_alternatives(records: &[Record], stalls: &[Stall]) -> Choice {
    let timeout = Duration::from_millis(TIMEOUT_MS);
    // Time spent starved within [from, to].
    let stalled = |from: Instant, to: Instant, least: Duration| {
        let starved: Duration = stalls
            .iter()
            .filter(|s| s.from < to && s.to > from)
            .map(|s| s.starved)
            .sum();
        starved >= least
    };
    let mut by_conn: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_conn.entry(r.conn).or_default().push(i); // in arrival order
    }
    let mut alternatives = Choice::new();
    for list in by_conn.values() {
        let mut flexible = false;
        for &i in list {
            let r = &records[i];
            let deadline = r.arrived + timeout;
            let answered_late = r.outcome == Outcome::Answered
                && r.written
                    .map_or(true, |w| w > r.arrived + timeout - STALL_MARGIN);
            let around = r.arrived.checked_sub(timeout).unwrap_or(r.arrived);
            flexible |= answered_late || stalled(around, deadline, STALL);
            if flexible && r.outcome != Outcome::Failed(Reason::Timeout) {
                alternatives.insert(i, Outcome::Failed(Reason::Timeout));
            }
            let late = r
                .keys
                .iter()
                .filter_map(|k| Beh::of(k))
                .find(|b| b.disrupts());
            if let (Some(Beh::Late(_)), Some(written)) = (late, r.written) {
                let starved = written.saturating_duration_since(deadline);
                if stalled(deadline, written, starved.saturating_sub(STALL_MARGIN)) {
                    alternatives.insert(i, Outcome::Answered);
                }
            }
        }
    }
    alternatives
}

/// A stretch of time and how long in it the proxy (or this test) waited for a CPU.
#[derive(Clone, Copy, Debug)]
struct Stall {
    from: Instant,
    to: Instant,
    starved: Duration,
}

/// Time in the run queue so far of each thread of process `pid` (Linux schedstat, second
/// field, in ns); empty where the kernel does not tell.
fn run_queue_waits(pid: u32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        if let Some(wait) = stat.split_whitespace().nth(1).and_then(|w| w.parse().ok()) {
            out.insert(task.file_name().to_string_lossy().into_owned(), wait);
        }
    }
    out
}

/// Watches, until `stop` is set, for the machine keeping the proxy (process `proxy`) or this
/// test off the CPU: the growth of the run-queue wait of the proxy's threads between two looks
/// a few milliseconds apart, and gaps in this thread's own sleep-and-wake.
fn watch_stalls(stop: &AtomicBool, proxy: u32) -> Vec<Stall> {
    let tick = Duration::from_millis(3);
    let mut stalls = Vec::new();
    let mut last = Instant::now();
    let mut waits = run_queue_waits(proxy);
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(tick);
        let now = Instant::now();
        let own = (now - last).saturating_sub(tick * 4);
        let new_waits = run_queue_waits(proxy);
        let proxy_wait = new_waits
            .iter()
            .map(|(tid, &w)| w.saturating_sub(waits.get(tid).copied().unwrap_or(w)))
            .max()
            .unwrap_or(0);
        let starved = own.max(Duration::from_nanos(proxy_wait));
        if starved >= Duration::from_millis(2) {
            stalls.push(Stall {
                from: last,
                to: now,
                starved,
            });
        }
        (last, waits) = (now, new_waits);
    }
    stalls
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// Polls `f` every 5 ms until it holds (true) or `deadline` passes (false).
fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Where the proxy's `stats` counters fall short of what the fakes' records prove happened.
fn counter_shortfall(stats: &HashMap<String, String>, records: &[Record]) -> Vec<String> {
    let stat = |name: &str| -> u64 {
        stats
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("stats has no numeric {name}: {stats:?}"))
    };
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|r| f(r)).count() as u64;
    let failed = count(&|r| matches!(r.outcome, Outcome::Failed(_)));
    let timed_out = count(&|r| r.outcome == Outcome::Failed(Reason::Timeout));
    let mut out = Vec::new();
    for (name, least, what) in [
        (
            "backend_errors",
            failed,
            "fragments the backends left unanswered",
        ),
        (
            "backend_timeouts",
            timed_out,
            "fragments that could only time out",
        ),
        (
            "backend_requests",
            records.len() as u64,
            "fragments the backends received",
        ),
    ] {
        if stat(name) < least {
            out.push(format!("stats: {name} {} < {least} {what}", stat(name)));
        }
    }
    out
}

/// What the seed varies in the proxy's configuration.
#[derive(Debug)]
struct Shape {
    /// Backend connections per worker per server (clients share them: 1 means more requests
    /// of other clients fail with a disrupted one).
    connections: usize,
    /// Per-client caps so small (3 requests, 300 reply bytes) that the proxy keeps pausing
    /// and resuming its reading of every client.
    tiny_caps: bool,
}

impl Shape {
    fn of(seed: u64) -> Shape {
        let mut rng = Rng::new(seed ^ 0x5ba9_e000);
        Shape {
            connections: 1 + rng.below(2),
            tiny_caps: rng.chance(30),
        }
    }
}

/// The proxy under test: the fakes as one `consistent_hash` pool (ketama, fnv1a_64).
fn proxy_config(port: u16, fakes: &Fakes, shape: &Shape) -> String {
    let servers: Vec<String> = fakes.addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let caps = if shape.tiny_caps {
        "    max_outstanding_requests: 3\n    max_buffered_reply_bytes: 300\n"
    } else {
        ""
    };
    format!(
        "workers: {WORKERS}\n\
         listeners:\n  - name: main\n    bind: 127.0.0.1:{port}\n{caps}\
         backends:\n  pool:\n    servers: [{}]\n    timeout: {TIMEOUT_MS}ms\n\
         \x20   connections: {}\n\
         routes:\n  - name: all\n    match: \"*\"\n    strategy: consistent_hash\n\
         \x20   backend: pool\n",
        servers.join(", "),
        shape.connections,
    )
}

#[test]
fn every_request_is_answered_once_in_order_with_its_own_reply() {
    let seed = seed();
    let replay = format!("seed {seed}; replay with INVARIANT_SEED={seed}");
    eprintln!("exchange_invariants: {replay}");
    let started = Instant::now();
    let fakes = Fakes::start(SERVERS, seed);
    let shape = Shape::of(seed);
    eprintln!("exchange_invariants: {shape:?}");
    let mut bifrost = Bifrost::start_templated(|port| proxy_config(port, &fakes, &shape), &[]);
    let addr = bifrost.addr();

    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop_watching);
        let proxy = bifrost.pid();
        thread::spawn(move || watch_stalls(&stop, proxy))
    };
    let deadline = started + RUN_BUDGET;
    let clients: Vec<JoinHandle<ClientResult>> = (0..CLIENTS)
        .map(|id| {
            let addr = addr.clone();
            thread::spawn(move || run_client(&addr, id, seed, deadline))
        })
        .collect();
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for (id, handle) in clients.into_iter().enumerate() {
        match handle.join() {
            Ok(result) => results.push(result),
            Err(_) => failures.push(format!("client {id}: its thread panicked")),
        }
    }
    let clients_done = started.elapsed();

    // The proxy is alive and serving, and has let go of every client connection.
    let mut c = Client::connect(&addr);
    let version = c.version();
    if version.as_bytes() != &PROXY_VERSION[..PROXY_VERSION.len() - 2] {
        failures.push(format!("`version` at the end answered {version:?}"));
    }
    let mut connections = 0;
    if !eventually(Duration::from_secs(5), || {
        connections = c.stat("curr_connections");
        connections == 1
    }) {
        failures.push(format!(
            "curr_connections is {connections} 5 s after the clients left (1 expected)"
        ));
    }
    // Every fake has framed what reached it: the record count stays put for 100 ms.
    let (mut seen, mut since) = (usize::MAX, Instant::now());
    wait_until(Duration::from_secs(5), "the fakes' records settle", || {
        let now = fakes.records().len();
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        since.elapsed() >= Duration::from_millis(100)
    });
    stop_watching.store(true, Ordering::SeqCst);
    let stalls = watcher.join().unwrap_or_default();
    let oracle = Oracle::new(fakes.records(), &stalls);
    // The proxy's counters come to cover what the backends did (requests of clients that left
    // may still be timing out): every fragment a fake left unanswered was failed by the proxy
    // and counted, every fragment a fake got was counted as sent.
    let mut shortfall = Vec::new();
    eventually(Duration::from_secs(5), || {
        shortfall = counter_shortfall(&c.stats(), &oracle.records);
        shortfall.is_empty()
    });
    failures.extend(shortfall);
    if !bifrost.is_running() {
        failures.push("bifrost exited".to_string());
    }

    failures.extend(fakes.problems());
    failures.extend(oracle.duplicates());
    let mut checked = 0;
    let mut excused = 0;
    let mut hits = 0;
    let mut failed_replies = 0;
    for result in &results {
        failures.extend(result.errors.iter().cloned());
        for check in &result.checks {
            checked += 1;
            hits += check
                .reply
                .windows(6)
                .filter(|w| w == b"VALUE " || w.starts_with(b"VA "))
                .count();
            failed_replies += usize::from(check.reply.starts_with(b"SERVER_ERROR"));
            match oracle.judge(check) {
                Verdict::Exact => {}
                Verdict::Excused => excused += 1,
                Verdict::Wrong(failure) => failures.push(failure),
            }
        }
    }
    let records = &oracle.records;

    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, what) in fakes.disruptions() {
        *kinds.entry(what).or_default() += 1;
    }
    let total = |f: fn(&ClientResult) -> usize| results.iter().map(f).sum::<usize>();
    eprintln!(
        "exchange_invariants: {} pipelines, {} requests sent, {checked} replies checked \
         ({hits} values, {failed_replies} SERVER_ERRORs), {} client connections ({} dropped \
         mid-pipeline, {} half-closed); {} fragments at {} backend connections, \
         disrupted: {kinds:?}; \
         starved {:?} in all (at most {:?} at once), {excused} replies excused by it; \
         clients done after {clients_done:.1?}, total {:.1?}",
        total(|r| r.batches),
        total(|r| r.requests),
        total(|r| r.connections),
        total(|r| r.aborted),
        total(|r| r.half_closed),
        records.len(),
        fakes.shared.next_conn.load(Ordering::SeqCst),
        stalls.iter().map(|s| s.starved).sum::<Duration>(),
        stalls.iter().map(|s| s.starved).max().unwrap_or_default(),
        started.elapsed()
    );
    if checked < 100 {
        failures.push(format!("only {checked} replies were checked"));
    }
    if !failures.is_empty() {
        let shown = failures.len().min(15);
        panic!(
            "{} invariant failure(s) ({replay}); the first {shown}:\n- {}",
            failures.len(),
            failures[..shown].join("\n- ")
        );
    }
}

/// The pattern the random test found leaking connections, on its own: a client sends a request
/// with a reply and then a noreply one, and goes (a half-close, or a close) while the noreply
/// one is still at the backend. It gets its reply, and then the proxy lets the connection go.
#[test]
fn a_client_that_goes_with_a_noreply_request_in_flight_is_let_go() {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::from_millis(50)));
    let bifrost = BlindForward::new(&fake.addr()).start();
    let pipeline = b"set b 0 0 1\r\ny\r\nset a 0 0 1 noreply\r\nx\r\n";

    let mut c = bifrost.client();
    c.send(pipeline);
    c.shutdown_write();
    assert_eq!(c.read_line(), "STORED");
    c.expect_closed_within(Duration::from_secs(2));

    let mut c = bifrost.client();
    c.send(pipeline);
    assert_eq!(c.read_line(), "STORED");
    drop(c);
    let mut probe = bifrost.client();
    wait_until(
        Duration::from_secs(2),
        "the proxy has let go of every client connection but this one",
        || probe.stat("curr_connections") == 1,
    );
}
