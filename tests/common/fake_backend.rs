//! A scripted fake memcached for what a real one cannot be made to do: hang, die mid-reply,
//! answer garbage, answer slowly. It counts what reaches it so a test can assert that nothing
//! did.

use super::{lock, wait_until};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What a [`FakeBackend`] does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behavior {
    /// Accepts and reads everything, never writes a byte.
    NeverAnswer,
    /// Reads one request line, writes `VALUE <key> 0 10\r\nabc` (a third of a reply), closes.
    CloseMidReply,
    /// Answers each chunk it reads with [`GARBAGE_REPLY`], which no memcached would send.
    Garbage,
    /// Answers every request correctly framed (gets miss, stores succeed, `version` works, meta
    /// commands answer EN/HD/NF/MN), each after the delay. `SlowAnswer(Duration::ZERO)` is an
    /// always-miss memcached.
    SlowAnswer(Duration),
    /// Like `SlowAnswer(delay)`, except that `version` (the health probe) is read and never
    /// answered: a server whose probes time out while its data requests are served.
    DeafToVersion(Duration),
}

/// What [`Behavior::Garbage`] sends: a line that is not a memcached reply.
pub const GARBAGE_REPLY: &[u8] = b"\x00\xff\xfeNOT A MEMCACHED REPLY \x01\x02\r\n";

/// Keep at most this much of what was received (the counters keep counting).
const RECORD_LIMIT: usize = 16 << 20;
/// How often connection threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
    bytes: AtomicUsize,
    received: Mutex<Vec<u8>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A fake memcached on its own loopback port (bound to port 0, so no race), served by a
/// background thread per connection. Stops and joins its threads on drop.
pub struct FakeBackend {
    addr: SocketAddr,
    behavior: Behavior,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeBackend {
    pub fn start(behavior: Behavior) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("FakeBackend: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().expect("FakeBackend: local_addr");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fake-backend-{}", addr.port()))
                .spawn(move || accept_loop(listener, behavior, shared))
                .expect("FakeBackend: spawn acceptor")
        };
        FakeBackend {
            addr,
            behavior,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn behavior(&self) -> Behavior {
        self.behavior
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed by the peer (or by CloseMidReply).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Bytes received so far over all connections.
    pub fn bytes_received(&self) -> usize {
        self.shared.bytes.load(Ordering::SeqCst)
    }

    /// Everything received so far, connections concatenated in arrival order (first 16 MiB).
    pub fn received(&self) -> Vec<u8> {
        lock(&self.shared.received).clone()
    }

    /// Panics unless no connection was ever made to this backend.
    pub fn assert_untouched(&self) {
        let (conns, bytes) = (self.connections(), self.bytes_received());
        if conns != 0 || bytes != 0 {
            panic!(
                "fake backend {} was reached: {conns} connection(s), {bytes} byte(s): {}",
                self.addr,
                super::client::show(&self.received())
            );
        }
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, deadline: Duration) {
        let what = format!("fake backend {} has accepted {n} connection(s)", self.addr);
        wait_until(deadline, &what, || self.connections() >= n);
    }

    /// Waits until at least `n` bytes were received.
    pub fn wait_for_bytes(&self, n: usize, deadline: Duration) {
        let what = format!("fake backend {} has received {n} byte(s)", self.addr);
        wait_until(deadline, &what, || self.bytes_received() >= n);
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the acceptor sees the flag and drops this connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, behavior: Behavior, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let conn_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("fake-backend-conn".to_string())
            .spawn(move || {
                serve(stream, behavior, &conn_shared);
                conn_shared.open.fetch_sub(1, Ordering::SeqCst);
            })
            .expect("FakeBackend: spawn connection thread");
        lock(&shared.threads).push(handle);
    }
}

/// Serves one connection until the peer closes, the behaviour closes, or the backend stops.
fn serve(mut stream: TcpStream, behavior: Behavior, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(STOP_POLL));
    let _ = stream.set_nodelay(true);
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        shared.bytes.fetch_add(n, Ordering::SeqCst);
        {
            let mut received = lock(&shared.received);
            let room = RECORD_LIMIT.saturating_sub(received.len());
            received.extend_from_slice(&buf[..n.min(room)]);
        }
        pending.extend_from_slice(&buf[..n]);
        let keep_open = match behavior {
            Behavior::NeverAnswer => true,
            Behavior::CloseMidReply => close_mid_reply(&mut stream, &pending),
            Behavior::Garbage => stream.write_all(GARBAGE_REPLY).is_ok(),
            Behavior::SlowAnswer(delay) => {
                answer_framed(&mut stream, &mut pending, delay, false, shared)
            }
            Behavior::DeafToVersion(delay) => {
                answer_framed(&mut stream, &mut pending, delay, true, shared)
            }
        };
        if !keep_open {
            return;
        }
    }
}

/// Once a whole request line is in, writes a third of a `VALUE` reply and closes.
fn close_mid_reply(stream: &mut TcpStream, pending: &[u8]) -> bool {
    let Some(eol) = pending.iter().position(|&b| b == b'\n') else {
        return true; // wait for the rest of the line
    };
    let line = String::from_utf8_lossy(&pending[..eol]);
    let key = line.split_whitespace().nth(1).unwrap_or("k").to_string();
    let _ = stream.write_all(format!("VALUE {key} 0 10\r\nabc").as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
    false
}

/// Answers each complete request in `pending` after `delay`, removing it from `pending`.
/// Returns false when the connection should close (`quit`, or the peer went away).
/// `deaf_to_version`: `version` gets no answer at all.
fn answer_framed(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    delay: Duration,
    deaf_to_version: bool,
    shared: &Shared,
) -> bool {
    while let Some((consumed, reply)) = next_request(pending) {
        let is_version = pending.starts_with(b"version");
        pending.drain(..consumed);
        let Some(reply) = reply else { continue };
        if deaf_to_version && is_version {
            continue;
        }
        if reply.is_empty() {
            return false; // quit
        }
        if !delay.is_zero() && !sleep_unless_stopped(delay, shared) {
            return false;
        }
        if stream.write_all(reply).is_err() {
            return false;
        }
    }
    true
}

/// Sleeps `delay` in short steps; false if the backend was stopped meanwhile.
fn sleep_unless_stopped(delay: Duration, shared: &Shared) -> bool {
    let end = std::time::Instant::now() + delay;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(STOP_POLL));
    }
}

/// Frames the first request of `buf`: `Some((bytes consumed, reply))` once it is complete, where
/// the reply is `None` for `noreply` and empty for `quit`; `None` while incomplete.
fn next_request(buf: &[u8]) -> Option<(usize, Option<&'static [u8]>)> {
    let eol = buf.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&buf[..eol]);
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let noreply = tokens.last() == Some(&"noreply");
    // Storage commands carry a data block: its length is token 4 (classic) or 2 (`ms`).
    let data_len_at = match tokens.first().copied() {
        Some("set" | "add" | "replace" | "append" | "prepend" | "cas") => Some(4),
        Some("ms") => Some(2),
        _ => None,
    };
    let mut consumed = eol + 1;
    if let Some(at) = data_len_at {
        let Some(len) = tokens.get(at).and_then(|t| t.parse::<usize>().ok()) else {
            return Some((consumed, Some(b"CLIENT_ERROR bad command line format\r\n")));
        };
        consumed += len + 2;
        if buf.len() < consumed {
            return None;
        }
    }
    let reply: &'static [u8] = match tokens.first().copied() {
        Some("get" | "gets" | "gat" | "gats") => b"END\r\n",
        Some("set" | "add" | "replace" | "append" | "prepend" | "cas") => b"STORED\r\n",
        Some("delete" | "incr" | "decr" | "touch") => b"NOT_FOUND\r\n",
        Some("version") => b"VERSION 0.0.0-fake\r\n",
        Some("flush_all" | "verbosity") => b"OK\r\n",
        Some("mg" | "me") => b"EN\r\n",
        Some("ms") => b"HD\r\n",
        Some("md" | "ma") => b"NF\r\n",
        Some("mn") => b"MN\r\n",
        Some("quit") => b"",
        _ => b"ERROR\r\n",
    };
    let reply = if noreply { None } else { Some(reply) };
    Some((consumed, reply))
}
