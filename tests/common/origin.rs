//! HTTP origins, the backends of bifrost's HTTP-origin pools:
//!
//! - [`Nginx`]: Debian's real `/usr/sbin/nginx` on a free loopback port, serving a temp
//!   directory under `/cache/` (optionally writable through WebDAV `PUT`/`DELETE`), its access log
//!   counting what reached it.
//! - [`FakeOrigin`]: an in-process HTTP/1.1 server for what nginx cannot be made to do (answer
//!   slowly, garbage, mid-body closes, oversized bodies, statuses, held replies), with a scripted
//!   store of items that carry `Bifrost-Flags` and `Cache-Control: max-age` headers.
//! - [`OriginClient`]: a raw HTTP/1.1 client that reads any framing (Content-Length, chunked,
//!   bodiless statuses, close-delimited) for talking to either of them directly.
//!
//! Keys travel percent-encoded in the path after `/cache/` ([`cache_path`]); both origins
//! percent-decode them. nginx also normalizes the decoded path (`.`/`..` segments, repeated
//! slashes, `/` inside a key makes a subdirectory, `%00` is a 400), so keys like that only work
//! on the fake origin.

use super::server::{Server, Threads, STOP_POLL};
use super::{
    free_port, lock, looks_like_addr_in_use, show, temp_files_dir, wait_until, Proc, IO_TIMEOUT,
    POLL, START_ATTEMPTS, START_TIMEOUT,
};
use std::collections::HashMap;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `nginx` package installs the server.
pub const NGINX_BIN: &str = "/usr/sbin/nginx";

/// The location both origins serve the cache under.
pub const CACHE_PREFIX: &str = "/cache/";

/// The `/cache/...` path of `key`: [`CACHE_PREFIX`] then the key, percent-encoded.
pub fn cache_path(key: &[u8]) -> String {
    format!("{CACHE_PREFIX}{}", percent_encode(key))
}

/// `bytes` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `bytes` with each `%XX` (two hex digits) replaced by its byte; any other `%` is kept as is.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// nginx

/// Options for [`Nginx`]; `Nginx::start()` uses the defaults: read-only, no `Cache-Control`,
/// nginx's own `keepalive_requests` (1000), `keepalive_timeout 75s`.
#[derive(Clone, Debug, Default)]
pub struct NginxBuilder {
    writable: bool,
    max_age: Option<u32>,
    keepalive_requests: Option<u32>,
}

impl NginxBuilder {
    /// Accepts WebDAV `PUT` and `DELETE` under `/cache/` (`dav_methods PUT DELETE`,
    /// `create_full_put_path on`, bodies up to 16 MiB). Without it those answer 405.
    pub fn writable(mut self, writable: bool) -> Self {
        self.writable = writable;
        self
    }

    /// `Some(n)`: every answer under `/cache/` (404s and errors too) carries
    /// `Cache-Control: max-age=n`.
    pub fn max_age(mut self, secs: Option<u32>) -> Self {
        self.max_age = secs;
        self
    }

    /// `keepalive_requests n`: nginx answers the n-th request of a connection with
    /// `Connection: close` and closes it, discarding requests pipelined behind it.
    pub fn keepalive_requests(mut self, n: u32) -> Self {
        self.keepalive_requests = Some(n);
        self
    }

    /// Starts nginx and waits until it answers; retries with a new port if the port was taken;
    /// panics (with nginx's error log) if it does not come up within 10 s, and with an install
    /// hint if `/usr/sbin/nginx` is missing.
    pub fn start(&self) -> Nginx {
        if !Path::new(NGINX_BIN).exists() {
            panic!(
                "{NGINX_BIN} not found: the HTTP-origin tests need Debian's nginx; install it \
                 with `apt-get install nginx` (.ci/run does)"
            );
        }
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}-{n}-nginx", std::process::id());
        let prefix = temp_files_dir().join(&token);
        let _ = fs::remove_dir_all(&prefix); // a leftover of a process with our pid
        let dir = prefix.join("cache");
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("nginx: cannot create {}: {e}", dir.display()));
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = prefix.join("nginx.conf");
            fs::write(&conf, self.config(&prefix, &token, port))
                .unwrap_or_else(|e| panic!("nginx: cannot write {}: {e}", conf.display()));
            let mut nginx = Nginx {
                proc: None,
                port,
                prefix: prefix.clone(),
                token: token.clone(),
            };
            if nginx.spawn_and_wait() {
                return nginx;
            }
            // The port was taken between free_port() and nginx's bind: try another.
        }
        panic!("nginx: the port was taken on each of {START_ATTEMPTS} attempts");
    }

    /// The nginx.conf for an nginx with prefix directory `prefix` listening on `port`.
    fn config(&self, prefix: &Path, token: &str, port: u16) -> String {
        let p = prefix.display();
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let keepalive_requests = match self.keepalive_requests {
            Some(n) => format!("    keepalive_requests {n};\n"),
            None => String::new(),
        };
        let dav = if self.writable {
            "            dav_methods PUT DELETE;\n            create_full_put_path on;\n            \
             dav_access user:rw group:r all:r;\n            client_max_body_size 16m;\n"
        } else {
            ""
        };
        let max_age = match self.max_age {
            Some(n) => format!("            add_header Cache-Control \"max-age={n}\" always;\n"),
            None => String::new(),
        };
        format!(
            "# Written by tests/common/origin.rs.\n\
             {user}\
             # One process (no master): SIGKILL leaves no orphaned worker behind.\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid \"{p}/nginx.pid\";\n\
             error_log \"{p}/error.log\" info;\n\
             events {{\n    worker_connections 1024;\n}}\n\
             http {{\n\
             \x20   client_body_temp_path \"{p}/client_body_temp\";\n\
             \x20   proxy_temp_path \"{p}/proxy_temp\";\n\
             \x20   fastcgi_temp_path \"{p}/fastcgi_temp\";\n\
             \x20   uwsgi_temp_path \"{p}/uwsgi_temp\";\n\
             \x20   scgi_temp_path \"{p}/scgi_temp\";\n\
             \x20   log_format bifrost '$request_method $uri $status conn=$connection \
             req=$connection_requests raw=$request_uri';\n\
             \x20   access_log \"{p}/access.log\" bifrost;\n\
             \x20   keepalive_timeout 75s;\n\
             {keepalive_requests}\
             \x20   default_type application/octet-stream;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       # The harness's readiness probe, not logged (request_count counts the test's).\n\
             \x20       location = /bifrost-ready {{\n\
             \x20           access_log off;\n\
             \x20           default_type text/plain;\n\
             \x20           return 200 \"{token}\\n\";\n\
             \x20       }}\n\
             \x20       location {CACHE_PREFIX} {{\n\
             \x20           root \"{p}\";\n\
             {dav}{max_age}\
             \x20       }}\n\
             \x20   }}\n\
             }}\n"
        )
    }
}

/// A running nginx serving [`Nginx::dir`] as `http://127.0.0.1:PORT/cache/`, in the foreground
/// (`daemon off`, no master process), everything it writes (logs, pid, temp files) in a temp
/// prefix directory. SIGKILLed and reaped on drop, which removes the directory (kept, with its
/// path and the error log's tail printed, when the test is failing).
pub struct Nginx {
    proc: Option<Proc>,
    port: u16,
    prefix: PathBuf,
    token: String,
}

impl Nginx {
    /// A read-only nginx with the defaults of [`NginxBuilder`], ready to serve.
    pub fn start() -> Nginx {
        NginxBuilder::default().start()
    }

    /// Options: writable, max-age, keepalive_requests.
    pub fn builder() -> NginxBuilder {
        NginxBuilder::default()
    }

    /// The port nginx listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "http://127.0.0.1:PORT/cache/", the origin URL of a bifrost config.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}{CACHE_PREFIX}", self.port)
    }

    /// The directory served under `/cache/`: `GET /cache/NAME` answers the file `dir()/NAME`.
    pub fn dir(&self) -> PathBuf {
        self.prefix.join("cache")
    }

    /// The temp prefix directory (nginx.conf, logs, temp files; [`Nginx::dir`] inside it).
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The pid of the nginx process.
    pub fn pid(&self) -> u32 {
        self.proc().pid()
    }

    /// Writes `bytes` to the file `name` of the served directory (creating subdirectories for
    /// a `/` in `name`), so `GET /cache/NAME` (the name percent-encoded) answers it.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        let path = self.dir().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("nginx: cannot create {}: {e}", parent.display()));
        }
        fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("nginx: cannot write {}: {e}", path.display()));
    }

    /// The contents of the file `name` of the served directory; `None` if there is none.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.dir().join(name)).ok()
    }

    /// Removes the file `name` of the served directory; false if there was none.
    pub fn remove_file(&self, name: &str) -> bool {
        fs::remove_file(self.dir().join(name)).is_ok()
    }

    /// The access log: one line per request, written once the answer was sent, as
    /// `METHOD DECODED-URI STATUS conn=N req=M raw=RAW-URI` (N numbers connections, M is the
    /// request's number on its connection). The readiness probe is not logged.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default()
    }

    /// Requests logged so far. nginx logs a request after answering it, so a client can read
    /// an answer before its line is there: use [`Nginx::wait_for_requests`] to count one.
    pub fn request_count(&self) -> usize {
        self.access_log().lines().count()
    }

    /// Distinct connections among the logged requests.
    pub fn connections_logged(&self) -> usize {
        let log = self.access_log();
        let mut conns: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split(' ').find(|t| t.starts_with("conn=")))
            .collect();
        conns.sort_unstable();
        conns.dedup();
        conns.len()
    }

    /// Waits until at least `n` requests were logged.
    pub fn wait_for_requests(&self, n: usize, deadline: Duration) {
        let what = format!("nginx {} has logged {n} request(s)", self.addr());
        wait_until(deadline, &what, || self.request_count() >= n);
    }

    /// nginx's error log (level info: includes why a request failed, e.g. a 409 or a 500).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|proc| proc.exited().is_none())
    }

    /// SIGKILL and reap (an origin dying without a goodbye). Its port then refuses connections.
    pub fn kill(&mut self) -> ExitStatus {
        self.proc_mut().kill()
    }

    /// Kills nginx if it runs, then starts it again on the same port, with the same
    /// configuration and files; panics if it does not come up (e.g. the port was taken).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill();
        }
        if !self.spawn_and_wait() {
            panic!(
                "nginx: cannot restart on {}: the port was taken meanwhile",
                self.addr()
            );
        }
    }

    fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("nginx has a process")
    }

    fn proc_mut(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("nginx has a process")
    }

    /// Spawns nginx with the prefix's nginx.conf and waits until it answers the readiness
    /// probe with our token. False if it exited because the address was in use; panics on any
    /// other failure or after the start timeout.
    fn spawn_and_wait(&mut self) -> bool {
        let p = &self.prefix;
        let mut cmd = Command::new(NGINX_BIN);
        cmd.arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .arg("-e")
            .arg(p.join("error.log"))
            .args(["-g", "daemon off;"]);
        self.proc = Some(Proc::spawn("nginx", &mut cmd));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        loop {
            if let Some(status) = self.proc_mut().exited() {
                let logs = format!("{}\n{}", self.proc().log(), self.error_log());
                if looks_like_addr_in_use(&logs) {
                    return false;
                }
                panic!(
                    "nginx exited ({status}) before answering on {addr}; error log:\n{}",
                    tail(&self.error_log(), 30)
                );
            }
            if ready_probe(addr).is_some_and(|answer| answer.contains(&self.token)) {
                return true;
            }
            if start.elapsed() >= START_TIMEOUT {
                panic!(
                    "nginx on {addr} did not answer its readiness probe within {START_TIMEOUT:?}; \
                     error log:\n{}",
                    tail(&self.error_log(), 30)
                );
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if panicking {
            eprintln!(
                "--- nginx {} error log {} (last 20 lines) ---\n{}\n--- access log (last 20 lines) ---\n{}\n--- end (directory kept) ---",
                self.addr(),
                self.prefix.join("error.log").display(),
                tail(&self.error_log(), 20),
                tail(&self.access_log(), 20),
            );
        }
        drop(self.proc.take()); // SIGKILL and reap
        if !panicking {
            let _ = fs::remove_dir_all(&self.prefix);
        }
    }
}

/// The answer to `GET /bifrost-ready` (status line and all), or `None` if the port does not
/// answer (yet).
fn ready_probe(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET /bifrost-ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    answer
        .starts_with(b"HTTP/1.")
        .then(|| String::from_utf8_lossy(&answer).into_owned())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The fake origin

/// What a [`FakeOrigin`] does with each request (read when the request is answered, so
/// [`FakeOrigin::set_behavior`] applies to requests still waiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginBehavior {
    /// The scripted store: `GET`/`HEAD /cache/KEY` answers 200 with the item (headers
    /// `Bifrost-Flags: F` and `Cache-Control: max-age=N` when it has them) or 404; `PUT` stores
    /// the body with the request's `Bifrost-Flags` and `Cache-Control: max-age` and answers 201;
    /// `DELETE` answers 204 (removed) or 404; any other method 405; a path outside `/cache/`
    /// 404.
    Serve,
    /// Like `Serve`, but each 200 body goes out `Transfer-Encoding: chunked`, in up to four
    /// chunks of at most 16 KiB each (one write each).
    Chunked,
    /// Like `Serve`, each answer written after the delay.
    Slow(Duration),
    /// Every request is answered with this status and a short body (`status N\n`) with a
    /// Content-Length (no body for 1xx, 204 and 304); the connection stays open.
    Status(u16),
    /// Every request is answered with [`ORIGIN_GARBAGE`]; the connection stays open.
    Garbage,
    /// The first request of a connection gets a 200 head with `Content-Length: 100` and 10
    /// bytes of body, then the connection is closed (FIN after the bytes).
    CloseMidBody,
    /// Every request is answered 200 with `Content-Length: n` and n bytes of `x`.
    Oversize(usize),
    /// Requests are read (and counted) but never answered.
    NeverAnswer,
    /// Like `Serve`, but a connection answers at most n requests, the n-th with
    /// `Connection: close`, then is closed; requests pipelined behind the n-th are neither
    /// counted nor answered (nginx's `keepalive_requests`). With n = 0 a connection is closed
    /// before anything is read.
    CloseAfter(usize),
}

impl OriginBehavior {
    /// How many requests a connection reads before it closes, if it is limited.
    fn per_connection(self) -> Option<usize> {
        match self {
            OriginBehavior::CloseAfter(n) => Some(n),
            OriginBehavior::CloseMidBody => Some(1),
            _ => None,
        }
    }
}

/// What [`OriginBehavior::Garbage`] sends: not HTTP (a memcached reply, then binary junk).
pub const ORIGIN_GARBAGE: &[u8] = b"VALUE x 0 1\r\nz\r\nEND\r\n\x00\x01garbage\r\n\r\n";

/// How long a closing connection keeps reading (and discarding) what the peer still sends, so
/// that closing does not reset the connection under an answer the peer has not read (nginx's
/// lingering close).
const LINGER: Duration = Duration::from_secs(5);
/// The largest request head the fake origin accepts; a bigger one is answered 400.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes of each request body kept in [`FakeOrigin::received`] (the store keeps them all).
const LOGGED_BODY: usize = 64 * 1024;

/// One request as a [`FakeOrigin`] received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target as sent, e.g. `/cache/user%3A1`.
    pub target: String,
    /// The percent-decoded key after `/cache/` (query string removed); `None` for a path
    /// outside `/cache/`.
    pub key: Option<Vec<u8>>,
    /// The header lines, names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body's first 64 KiB (a chunked body decoded).
    pub body: Vec<u8>,
    /// The body's whole length.
    pub body_len: usize,
    /// The connection it came on, numbered from 0 in accept order.
    pub connection: usize,
}

impl OriginRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// `METHOD KEY` (the key escaped as by `escape_ascii`), or `METHOD TARGET` outside
    /// `/cache/`: the form of [`FakeOrigin::methods`].
    pub fn summary(&self) -> String {
        match &self.key {
            Some(key) => format!("{} {}", self.method, key.escape_ascii()),
            None => format!("{} {}", self.method, self.target),
        }
    }

    /// True when the client asked to close after this request (`Connection: close`, or
    /// HTTP/1.0 without `Connection: keep-alive`).
    fn wants_close(&self, http10: bool) -> bool {
        let connection = self.header("Connection").unwrap_or("").to_ascii_lowercase();
        connection.split(',').any(|t| t.trim() == "close")
            || (http10 && !connection.split(',').any(|t| t.trim() == "keep-alive"))
    }
}

/// An item of the fake origin's store.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StoredItem {
    body: Vec<u8>,
    flags: Option<u32>,
    max_age: Option<u32>,
}

struct Shared {
    behavior: Mutex<OriginBehavior>,
    store: Mutex<HashMap<Vec<u8>, StoredItem>>,
    received: Mutex<Vec<OriginRequest>>,
    held: AtomicBool,
    numbered: AtomicUsize,
    open: AtomicUsize,
}

impl Shared {
    fn behavior(&self) -> OriginBehavior {
        *lock(&self.behavior)
    }
}

/// A fake HTTP/1.1 origin on its own loopback port (bound to port 0, so no race), serving
/// `http://127.0.0.1:PORT/cache/` as its [`OriginBehavior`] says. Each connection has a reader
/// thread, which parses and counts requests as they arrive, and a writer thread, which answers
/// them in order (pipelined requests included). Stops and joins its threads on drop.
pub struct FakeOrigin {
    shared: Arc<Shared>,
    server: Server,
}

impl FakeOrigin {
    /// Starts a fake origin with `behavior` and an empty store.
    pub fn start(behavior: OriginBehavior) -> FakeOrigin {
        let shared = Arc::new(Shared {
            behavior: Mutex::new(behavior),
            store: Mutex::default(),
            received: Mutex::default(),
            held: AtomicBool::new(false),
            numbered: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let server = {
            let shared = Arc::clone(&shared);
            Server::start("fake-origin", move |stream, threads| {
                accept(stream, &shared, threads);
            })
        };
        FakeOrigin { shared, server }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// "http://127.0.0.1:PORT/cache/", the origin URL of a bifrost config.
    pub fn base_url(&self) -> String {
        format!("http://{}{CACHE_PREFIX}", self.server.addr())
    }

    /// The behaviour answering from now on.
    pub fn behavior(&self) -> OriginBehavior {
        self.shared.behavior()
    }

    /// Changes the behaviour for every answer written from now on (requests already read
    /// included; a connection's request limit applies to requests read from now on).
    pub fn set_behavior(&self, behavior: OriginBehavior) {
        *lock(&self.shared.behavior) = behavior;
    }

    /// Stores `body` under `key` (the percent-DECODED key bytes after `/cache/`), answered with
    /// `Bifrost-Flags: flags` and `Cache-Control: max-age=max_age` when they are `Some`.
    pub fn insert(&self, key: &[u8], body: &[u8], flags: Option<u32>, max_age: Option<u32>) {
        let item = StoredItem {
            body: body.to_vec(),
            flags,
            max_age,
        };
        lock(&self.shared.store).insert(key.to_vec(), item);
    }

    /// The item under `key`: `(body, flags, max_age)`, as inserted or as the last `PUT` sent it.
    pub fn item(&self, key: &[u8]) -> Option<(Vec<u8>, Option<u32>, Option<u32>)> {
        lock(&self.shared.store)
            .get(key)
            .map(|i| (i.body.clone(), i.flags, i.max_age))
    }

    /// Removes the item under `key`; false if there was none.
    pub fn remove(&self, key: &[u8]) -> bool {
        lock(&self.shared.store).remove(key).is_some()
    }

    /// Requests received so far (any method, answered or not).
    pub fn requests(&self) -> usize {
        lock(&self.shared.received).len()
    }

    /// Requests received so far for `key` (decoded), any method.
    pub fn requests_for(&self, key: &[u8]) -> usize {
        lock(&self.shared.received)
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .count()
    }

    /// Every request received so far, in arrival order, as `METHOD KEY` (the decoded key
    /// escaped as by `escape_ascii`; `METHOD TARGET` for a path outside `/cache/`).
    pub fn methods(&self) -> Vec<String> {
        lock(&self.shared.received)
            .iter()
            .map(OriginRequest::summary)
            .collect()
    }

    /// Every request received so far, in arrival order, with headers and (the start of) bodies.
    pub fn received(&self) -> Vec<OriginRequest> {
        lock(&self.shared.received).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// From now on, answers to `GET` (and `HEAD`) requests are held back until
    /// [`FakeOrigin::release`]; the requests are still read and counted as they arrive, and
    /// the store is looked up when the answer is written. A connection answers in order, so a
    /// held answer also holds those behind it on its connection.
    pub fn hold(&self) {
        self.shared.held.store(true, Ordering::SeqCst);
    }

    /// Lets the held answers (and all later ones) go out.
    pub fn release(&self) {
        self.shared.held.store(false, Ordering::SeqCst);
    }

    /// Waits until at least `n` requests were received.
    pub fn wait_for_requests(&self, n: usize, deadline: Duration) {
        let what = format!("fake origin {} has received {n} request(s)", self.addr());
        wait_until(deadline, &what, || self.requests() >= n);
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, deadline: Duration) {
        let what = format!("fake origin {} has accepted {n} connection(s)", self.addr());
        wait_until(deadline, &what, || self.connections() >= n);
    }

    /// Panics unless no connection was ever made to this origin.
    #[track_caller]
    pub fn assert_untouched(&self) {
        let (conns, requests) = (self.connections(), self.methods());
        assert!(
            conns == 0 && requests.is_empty(),
            "fake origin {} was reached: {conns} connection(s), requests {requests:?}",
            self.addr()
        );
    }
}

/// Per-connection state shared by its reader and writer; the connection counts as open until
/// both are done.
struct Conn {
    number: usize,
    shared: Arc<Shared>,
    /// When the writer finished (closed its side): the reader then only drains, for [`LINGER`].
    closed_at: Mutex<Option<Instant>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the reader hands the writer.
enum Incoming {
    Request {
        request: OriginRequest,
        http10: bool,
    },
    /// A request that cannot be parsed: answered 400, then the connection closes.
    Bad(String),
}

/// Starts the reader and writer of a new connection (on the acceptor thread, so that both are
/// joined on drop).
fn accept(stream: TcpStream, shared: &Arc<Shared>, threads: &Arc<Threads>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(STOP_POLL));
    let _ = stream.set_write_timeout(Some(STOP_POLL));
    shared.open.fetch_add(1, Ordering::SeqCst);
    let conn = Arc::new(Conn {
        number: shared.numbered.fetch_add(1, Ordering::SeqCst),
        shared: Arc::clone(shared),
        closed_at: Mutex::new(None),
    });
    let Ok(reader) = stream.try_clone() else {
        return; // the connection is dropped (closed) with `conn`
    };
    let (tx, rx) = mpsc::channel();
    {
        let (conn, threads2) = (Arc::clone(&conn), Arc::clone(threads));
        threads.spawn("fake-origin-read", move || {
            read_requests(reader, &tx, &conn, &threads2)
        });
    }
    let threads2 = Arc::clone(threads);
    threads.spawn("fake-origin-write", move || {
        write_answers(stream, &rx, &conn, &threads2)
    });
}

/// The reader: parses requests as they arrive, records them, hands them to the writer. Stops
/// parsing at the behaviour's per-connection limit or a bad request, or once the writer has
/// closed; then discards what still arrives until EOF or [`LINGER`] after the writer closed.
fn read_requests(mut stream: TcpStream, tx: &Sender<Incoming>, conn: &Conn, threads: &Threads) {
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut parsed = 0usize;
    let mut parsing = true;
    loop {
        while parsing {
            if conn
                .shared
                .behavior()
                .per_connection()
                .is_some_and(|limit| parsed >= limit)
                || lock(&conn.closed_at).is_some()
            {
                parsing = false;
                break;
            }
            match parse_request(&pending) {
                Parsed::Incomplete => break,
                Parsed::Bad(reason) => {
                    let _ = tx.send(Incoming::Bad(reason));
                    parsing = false;
                }
                Parsed::Done {
                    method,
                    target,
                    http10,
                    headers,
                    body,
                    consumed,
                } => {
                    pending.drain(..consumed);
                    parsed += 1;
                    let request = OriginRequest {
                        key: key_of(&target),
                        method,
                        target,
                        headers,
                        body_len: body.len(),
                        body,
                        connection: conn.number,
                    };
                    let mut logged = request.clone();
                    logged.body.truncate(LOGGED_BODY);
                    lock(&conn.shared.received).push(logged);
                    if tx.send(Incoming::Request { request, http10 }).is_err() {
                        parsing = false; // the writer is gone
                    }
                }
            }
        }
        if !parsing {
            pending.clear();
        }
        if threads.stopping() {
            return;
        }
        if lock(&conn.closed_at).is_some_and(|at| at.elapsed() >= LINGER) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) if parsing => pending.extend_from_slice(&chunk[..n]),
            Ok(_) => {} // discarded
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// The writer: answers each request the reader hands over, in order, until a behaviour closes
/// the connection, the client asked to close, the reader is done, or the origin stops. Then
/// shuts its side down (FIN) and marks the connection closed.
fn write_answers(mut stream: TcpStream, rx: &Receiver<Incoming>, conn: &Conn, threads: &Threads) {
    let mut answered = 0usize;
    if conn.shared.behavior().per_connection() == Some(0) {
        let _ = stream.shutdown(Shutdown::Both);
        *lock(&conn.closed_at) = Some(Instant::now());
        return;
    }
    loop {
        let incoming = match rx.recv_timeout(STOP_POLL) {
            Ok(incoming) => incoming,
            Err(RecvTimeoutError::Timeout) if threads.stopping() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let next = match incoming {
            Incoming::Bad(reason) => {
                let body = format!("bad request: {reason}\n");
                let _ = write_answer(&mut stream, 400, &[], body.as_bytes(), false, true, threads);
                Next::Close
            }
            Incoming::Request { request, http10 } => {
                answered += 1;
                answer(&mut stream, &request, http10, answered, conn, threads)
            }
        };
        if matches!(next, Next::Close) {
            break;
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    *lock(&conn.closed_at) = Some(Instant::now());
}

/// What a connection does after an answer.
enum Next {
    KeepOpen,
    Close,
}

/// Answers `request`, the `answered`-th of its connection, as the current behaviour says.
fn answer(
    stream: &mut TcpStream,
    request: &OriginRequest,
    http10: bool,
    answered: usize,
    conn: &Conn,
    threads: &Threads,
) -> Next {
    let shared = &conn.shared;
    let is_read = request.method == "GET" || request.method == "HEAD";
    if is_read && shared.behavior() != OriginBehavior::NeverAnswer {
        while shared.held.load(Ordering::SeqCst) {
            if threads.stopping() {
                return Next::Close;
            }
            thread::sleep(POLL);
        }
    }
    let behavior = shared.behavior();
    let head_only = request.method == "HEAD";
    let close = request.wants_close(http10);
    let ok = |written: bool| {
        if written && !close {
            Next::KeepOpen
        } else {
            Next::Close
        }
    };
    match behavior {
        OriginBehavior::NeverAnswer => Next::KeepOpen,
        OriginBehavior::Garbage => {
            if write_all(stream, ORIGIN_GARBAGE, threads) {
                Next::KeepOpen
            } else {
                Next::Close
            }
        }
        OriginBehavior::CloseMidBody => {
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            bytes.extend_from_slice(b"0123456789");
            write_all(stream, &bytes, threads);
            Next::Close
        }
        OriginBehavior::Status(status) => {
            let body = format!("status {status}\n");
            ok(write_answer(
                stream,
                status,
                &[],
                body.as_bytes(),
                head_only,
                close,
                threads,
            ))
        }
        OriginBehavior::Oversize(len) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{}\r\n",
                if close { "Connection: close\r\n" } else { "" }
            );
            let mut written = write_all(stream, head.as_bytes(), threads);
            if !head_only {
                let piece = vec![b'x'; 64 * 1024];
                let mut left = len;
                while written && left > 0 {
                    let n = left.min(piece.len());
                    written = write_all(stream, &piece[..n], threads);
                    left -= n;
                }
            }
            ok(written)
        }
        OriginBehavior::Serve
        | OriginBehavior::Chunked
        | OriginBehavior::Slow(_)
        | OriginBehavior::CloseAfter(_) => {
            if let OriginBehavior::Slow(delay) = behavior {
                if !threads.sleep_until(Instant::now() + delay) {
                    return Next::Close;
                }
            }
            let last = matches!(behavior, OriginBehavior::CloseAfter(n) if answered >= n);
            let close = close || last;
            let (status, headers, body) = serve(request, shared);
            let written = if status == 200 && behavior == OriginBehavior::Chunked {
                write_chunked(stream, &headers, &body, head_only, close, threads)
            } else {
                write_answer(stream, status, &headers, &body, head_only, close, threads)
            };
            if written && !close {
                Next::KeepOpen
            } else {
                Next::Close
            }
        }
    }
}

/// The store's answer to `request`: status, extra headers, body.
fn serve(request: &OriginRequest, shared: &Shared) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let not_found = || (404, Vec::new(), b"not found\n".to_vec());
    let Some(key) = &request.key else {
        return not_found();
    };
    let mut store = lock(&shared.store);
    match request.method.as_str() {
        "GET" | "HEAD" => match store.get(key) {
            Some(item) => {
                let mut headers = Vec::new();
                if let Some(flags) = item.flags {
                    headers.push(("Bifrost-Flags".to_string(), flags.to_string()));
                }
                if let Some(max_age) = item.max_age {
                    headers.push(("Cache-Control".to_string(), format!("max-age={max_age}")));
                }
                (200, headers, item.body.clone())
            }
            None => not_found(),
        },
        "PUT" => {
            let flags = match request.header("Bifrost-Flags").map(|v| v.trim().parse()) {
                None => None,
                Some(Ok(flags)) => Some(flags),
                Some(Err(_)) => return (400, Vec::new(), b"bad Bifrost-Flags\n".to_vec()),
            };
            let max_age = request.header("Cache-Control").and_then(max_age_of);
            let item = StoredItem {
                body: request.body.clone(),
                flags,
                max_age,
            };
            // The request's own body, not the log's truncated copy.
            store.insert(key.clone(), item);
            (201, Vec::new(), Vec::new())
        }
        "DELETE" => match store.remove(key) {
            Some(_) => (204, Vec::new(), Vec::new()),
            None => not_found(),
        },
        _ => (
            405,
            vec![("Allow".to_string(), "GET, HEAD, PUT, DELETE".to_string())],
            b"method not allowed\n".to_vec(),
        ),
    }
}

/// The `max-age=N` directive of a Cache-Control value.
fn max_age_of(value: &str) -> Option<u32> {
    value
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().trim_matches('"').parse().ok())
}

/// The decoded key of a request target under `/cache/` (absolute form and query removed).
fn key_of(target: &str) -> Option<Vec<u8>> {
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let path = path.split('?').next().unwrap_or_default();
    path.strip_prefix(CACHE_PREFIX)
        .map(|rest| percent_decode(rest.as_bytes()))
}

/// The reason phrase of `status` (a made-up one for unusual codes).
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Whatever",
    }
}

/// True for a status whose answer has no body (and no Content-Length).
fn bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Writes an answer with a Content-Length (none for a bodiless status) and the body (none for
/// HEAD); false if the peer went.
fn write_answer(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
    close: bool,
    threads: &Threads,
) -> bool {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !bodiless(status) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !bodiless(status) && !head_only {
        bytes.extend_from_slice(body);
    }
    write_all(stream, &bytes, threads)
}

/// Writes a 200 with a chunked body: up to four chunks of at most 16 KiB, one write each.
fn write_chunked(
    stream: &mut TcpStream,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
    close: bool,
    threads: &Threads,
) -> bool {
    let mut head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n".to_string();
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    if !write_all(stream, head.as_bytes(), threads) {
        return false;
    }
    if head_only {
        return true;
    }
    let size = body.len().div_ceil(4).clamp(1, 16 * 1024);
    for piece in body.chunks(size) {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        if !write_all(stream, &chunk, threads) {
            return false;
        }
    }
    write_all(stream, b"0\r\n\r\n", threads)
}

/// Writes all of `bytes` (the socket's write timeout is [`STOP_POLL`], so a peer that does not
/// read cannot keep the origin from stopping); false if the peer went or the origin stops.
fn write_all(stream: &mut TcpStream, bytes: &[u8], threads: &Threads) -> bool {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if threads.stopping() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 framing, shared by the fake origin and the client

/// A request parsed from the start of a buffer.
enum Parsed {
    Incomplete,
    Bad(String),
    Done {
        method: String,
        target: String,
        http10: bool,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        consumed: usize,
    },
}

/// Parses the request at the start of `buf`: request line, headers, a body framed by
/// Content-Length or chunked transfer coding.
fn parse_request(buf: &[u8]) -> Parsed {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parsed::Bad(format!("no end of head in {MAX_HEAD} bytes"))
        } else {
            Parsed::Incomplete
        };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Parsed::Bad(format!("bad request line {request_line:?}"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return Parsed::Bad(format!("bad request line {request_line:?}"));
    }
    let headers = match parse_headers(lines) {
        Ok(headers) => headers,
        Err(e) => return Parsed::Bad(e),
    };
    let rest = &buf[head_end + 4..];
    let (body, body_len) = match body_framing(&headers) {
        Ok(Framing::Chunked) => match decode_chunked(rest) {
            Ok(Some(dechunked)) => (dechunked.body, dechunked.used),
            Ok(None) => return Parsed::Incomplete,
            Err(e) => return Parsed::Bad(e),
        },
        Ok(Framing::Length(len)) => match rest.get(..len) {
            Some(body) => (body.to_vec(), len),
            None => return Parsed::Incomplete,
        },
        Ok(Framing::None | Framing::UntilClose) => (Vec::new(), 0),
        Err(e) => return Parsed::Bad(e),
    };
    Parsed::Done {
        method: method.to_string(),
        target: target.to_string(),
        http10: version == "HTTP/1.0",
        headers,
        body,
        consumed: head_end + 4 + body_len,
    }
}

/// The header lines after a start line.
fn parse_headers<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, String> {
    lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(' ') => {
                Ok((name.to_string(), value.trim().to_string()))
            }
            _ => Err(format!("bad header line {l:?}")),
        })
        .collect()
}

/// How a message's body is delimited.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The framing `headers` announce: chunked, a Content-Length, or (for a request) no body.
fn body_framing(headers: &[(String, String)]) -> Result<Framing, String> {
    if let Some(te) = header(headers, "Transfer-Encoding") {
        if te.to_ascii_lowercase().trim().ends_with("chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(format!("unsupported Transfer-Encoding {te:?}"));
    }
    match header(headers, "Content-Length") {
        Some(len) => len
            .trim()
            .parse()
            .map(Framing::Length)
            .map_err(|_| format!("bad Content-Length {len:?}")),
        None => Ok(Framing::None),
    }
}

/// A chunked body, decoded.
struct Dechunked {
    body: Vec<u8>,
    /// The chunk sizes, in order.
    sizes: Vec<usize>,
    /// The bytes it took, through the trailer section.
    used: usize,
}

/// Decodes a chunked body at the start of `buf`: `Ok(Some(..))` once it is complete (through
/// the trailer section), `Ok(None)` while incomplete. Chunk extensions and trailers are skipped.
fn decode_chunked(buf: &[u8]) -> Result<Option<Dechunked>, String> {
    let mut body = Vec::new();
    let mut sizes = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[at..at + eol]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(Dechunked {
                        body,
                        sizes,
                        used: at,
                    }));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        sizes.push(size);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(format!("chunk of {size} bytes not followed by CRLF"));
        }
        at += size + 2;
    }
}

/// The first header called `name` (case-insensitive).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// A raw client

/// One response read by an [`OriginClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body (decoded if it was chunked; empty for HEAD and bodiless statuses).
    pub body: Vec<u8>,
    /// The chunk sizes of a chunked body, in order (empty if it was not chunked).
    pub chunk_sizes: Vec<usize>,
}

impl OriginResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// True when the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.header("Connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    }
}

/// The bytes of one request: request line, `Host`, `headers`, then a `Content-Length` for a
/// body, and always for PUT and POST (nginx answers a PUT without one 500), then the body.
pub fn origin_request_bytes(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A raw keep-alive HTTP/1.1 connection to an origin (or to anything speaking HTTP): requests
/// written whole or as raw bytes (pipelining), responses read in any framing. Reads time out
/// after [`IO_TIMEOUT`].
pub struct OriginClient {
    stream: TcpStream,
    addr: String,
    buffered: Vec<u8>,
}

impl OriginClient {
    /// Connects to `addr` ("host:port"); panics if it cannot.
    pub fn connect(addr: &str) -> OriginClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        OriginClient {
            stream,
            addr: addr.to_string(),
            buffered: Vec::new(),
        }
    }

    /// The socket, for tests that need to poke at it.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets the read timeout (default [`IO_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    /// Sends `method path` (see [`origin_request_bytes`]) and reads the response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> OriginResponse {
        let bytes = origin_request_bytes(&self.addr, method, path, headers, body);
        self.send(&bytes);
        self.read_response(method)
    }

    /// `GET /cache/KEY` (the key percent-encoded).
    pub fn get(&mut self, key: &[u8]) -> OriginResponse {
        self.request("GET", &cache_path(key), &[], b"")
    }

    /// Writes raw bytes (several pipelined requests, a partial one, garbage).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.addr));
    }

    /// Reads the next response to a `method` request; panics if there is none.
    pub fn read_response(&mut self, method: &str) -> OriginResponse {
        self.try_read_response(method)
            .unwrap_or_else(|e| panic!("reading a response from {}: {e}", self.addr))
    }

    /// Reads the next response to a `method` request (HEAD's has no body); interim 1xx
    /// answers are skipped. An error if the connection ends, times out, or sends no HTTP.
    pub fn try_read_response(&mut self, method: &str) -> io::Result<OriginResponse> {
        loop {
            let head_end = loop {
                if let Some(i) = find(&self.buffered, b"\r\n\r\n") {
                    break i + 4;
                }
                if !self.buffered.is_empty()
                    && !b"HTTP/1.".starts_with(&self.buffered[..self.buffered.len().min(7)])
                {
                    return Err(invalid(format!("not HTTP: {}", show(&self.buffered))));
                }
                self.fill()?;
            };
            let head = String::from_utf8_lossy(&self.buffered[..head_end - 4]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .strip_prefix("HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
            let headers = parse_headers(lines).map_err(invalid)?;
            self.buffered.drain(..head_end);
            if (100..200).contains(&status) {
                continue; // interim: the real answer follows
            }
            let mut response = OriginResponse {
                status,
                headers,
                body: Vec::new(),
                chunk_sizes: Vec::new(),
            };
            if method == "HEAD" || bodiless(status) {
                return Ok(response);
            }
            let framing = match body_framing(&response.headers).map_err(invalid)? {
                Framing::None => Framing::UntilClose,
                framing => framing,
            };
            match framing {
                Framing::Chunked => loop {
                    if let Some(dechunked) = decode_chunked(&self.buffered).map_err(invalid)? {
                        self.buffered.drain(..dechunked.used);
                        response.body = dechunked.body;
                        response.chunk_sizes = dechunked.sizes;
                        break;
                    }
                    self.fill()?;
                },
                Framing::Length(len) => {
                    while self.buffered.len() < len {
                        self.fill()?;
                    }
                    response.body = self.buffered.drain(..len).collect();
                }
                Framing::None | Framing::UntilClose => {
                    while self.fill().is_ok() {}
                    response.body = std::mem::take(&mut self.buffered);
                }
            }
            return Ok(response);
        }
    }

    /// Everything the peer sends until it closes the connection or `timeout` passes without a
    /// byte (bytes already buffered included).
    pub fn read_raw(&mut self, timeout: Duration) -> Vec<u8> {
        self.set_timeout(timeout);
        while self.fill().is_ok() {}
        self.set_timeout(IO_TIMEOUT);
        std::mem::take(&mut self.buffered)
    }

    /// Asserts the peer closes the connection (EOF or reset) within the read timeout, with
    /// nothing more sent.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut rest = std::mem::take(&mut self.buffered);
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected {} to close the connection: {e}", self.addr),
        }
        assert!(
            rest.is_empty(),
            "expected a close, got more bytes: {}",
            show(&rest)
        );
    }

    /// Asserts nothing arrives within `wait` (and the connection stays open).
    #[track_caller]
    pub fn expect_silence(&mut self, wait: Duration) {
        self.set_timeout(wait);
        let mut chunk = [0u8; 4096];
        let got = self.stream.read(&mut chunk);
        self.set_timeout(IO_TIMEOUT);
        match got {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("expected silence from {}, got a close", self.addr),
            Ok(n) => panic!(
                "expected silence from {}, got {}",
                self.addr,
                show(&chunk[..n])
            ),
            Err(e) => panic!("expected silence from {}, got {e}", self.addr),
        }
    }

    /// Reads more bytes into the buffer; an error at EOF.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}
