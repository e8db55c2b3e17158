//! A scripted fake memcached for what a real one cannot be made to do: hang, die mid-reply,
//! answer garbage, answer slowly. It counts what reaches it so a test can assert that nothing
//! did.

use super::server::{Record, Server, Threads, STOP_POLL};
use super::wait_until;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Like `SlowAnswer(Duration::ZERO)` until a connection receives a storage command
    /// (`set add replace append prepend cas ms`); from then on that connection reads everything
    /// and answers nothing, like `NeverAnswer`: a server whose reads are served at once while
    /// the writes sent to it hang.
    HangOnWrite,
    /// Like `HangOnWrite`, except that a `get`/`gets` finds every key that starts with `hit`
    /// (its value [`warm_value`] of the key, flags 0, cas 1): a warm tier that holds some keys
    /// and serves them at once while any connection that receives a write hangs from then on.
    HitsHangOnWrite,
    /// A backend that lies, scripted by the test: on accept, connection `n` (0-based, in
    /// accept order) writes `banner(n)` before reading anything; then each request line (no
    /// data blocks: for gets and meta commands without data) is answered with
    /// `answer(n, line)`, the line without its line ending (nothing is written when it is
    /// empty).
    Scripted {
        banner: fn(usize) -> Vec<u8>,
        answer: fn(usize, &str) -> Vec<u8>,
    },
}

/// The value [`Behavior::HitsHangOnWrite`] holds for `key` (a key that starts with `hit`).
pub fn warm_value(key: &str) -> String {
    format!("warm:{key}")
}

/// What [`Behavior::Garbage`] sends: a line that is not a memcached reply.
pub const GARBAGE_REPLY: &[u8] = b"\x00\xff\xfeNOT A MEMCACHED REPLY \x01\x02\r\n";

#[derive(Default)]
struct Shared {
    open: AtomicUsize,
    /// Connections numbered so far (for [`Behavior::Scripted`]).
    numbered: AtomicUsize,
    received: Record,
}

/// A fake memcached on its own loopback port (bound to port 0, so no race), served by a
/// background thread per connection. Stops and joins its threads on drop.
pub struct FakeBackend {
    behavior: Behavior,
    shared: Arc<Shared>,
    server: Server,
}

impl FakeBackend {
    pub fn start(behavior: Behavior) -> FakeBackend {
        let shared = Arc::new(Shared::default());
        let server = {
            let shared = Arc::clone(&shared);
            Server::start("fake-backend", move |stream, threads| {
                shared.open.fetch_add(1, Ordering::SeqCst);
                let (shared, conn_threads) = (Arc::clone(&shared), Arc::clone(threads));
                threads.spawn("fake-backend-conn", move || {
                    serve(stream, behavior, &shared, &conn_threads);
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
            })
        };
        FakeBackend {
            behavior,
            shared,
            server,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn behavior(&self) -> Behavior {
        self.behavior
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Connections accepted and not yet closed by the peer (or by CloseMidReply).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Bytes received so far over all connections.
    pub fn bytes_received(&self) -> usize {
        self.shared.received.len()
    }

    /// Everything received so far, connections concatenated in arrival order (first 16 MiB).
    pub fn received(&self) -> Vec<u8> {
        self.shared.received.kept()
    }

    /// Panics unless no connection was ever made to this backend.
    pub fn assert_untouched(&self) {
        let (conns, bytes) = (self.connections(), self.bytes_received());
        if conns != 0 || bytes != 0 {
            panic!(
                "fake backend {} was reached: {conns} connection(s), {bytes} byte(s): {}",
                self.addr(),
                super::client::show(&self.received())
            );
        }
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, deadline: Duration) {
        let what = format!(
            "fake backend {} has accepted {n} connection(s)",
            self.addr()
        );
        wait_until(deadline, &what, || self.connections() >= n);
    }

    /// Waits until at least `n` bytes were received.
    pub fn wait_for_bytes(&self, n: usize, deadline: Duration) {
        let what = format!("fake backend {} has received {n} byte(s)", self.addr());
        wait_until(deadline, &what, || self.bytes_received() >= n);
    }
}

/// Serves one connection until the peer closes, the behaviour closes, or the backend stops.
fn serve(mut stream: TcpStream, mut behavior: Behavior, shared: &Shared, threads: &Threads) {
    let _ = stream.set_read_timeout(Some(STOP_POLL));
    let _ = stream.set_nodelay(true);
    let number = shared.numbered.fetch_add(1, Ordering::SeqCst);
    if let Behavior::Scripted { banner, .. } = behavior {
        let banner = banner(number);
        if !banner.is_empty() && stream.write_all(&banner).is_err() {
            return;
        }
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Some(n) = threads.read_some(&mut stream, &mut buf) {
        shared.received.add(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        let next = match behavior {
            Behavior::NeverAnswer => Served::Open,
            Behavior::CloseMidReply => close_mid_reply(&mut stream, &pending),
            Behavior::Garbage => match stream.write_all(GARBAGE_REPLY) {
                Ok(()) => Served::Open,
                Err(_) => Served::Close,
            },
            Behavior::SlowAnswer(delay) => answer_framed(
                &mut stream,
                &mut pending,
                delay,
                Mute::Nothing,
                false,
                threads,
            ),
            Behavior::DeafToVersion(delay) => answer_framed(
                &mut stream,
                &mut pending,
                delay,
                Mute::Version,
                false,
                threads,
            ),
            Behavior::HangOnWrite | Behavior::HitsHangOnWrite => answer_framed(
                &mut stream,
                &mut pending,
                Duration::ZERO,
                Mute::FromFirstWrite,
                matches!(behavior, Behavior::HitsHangOnWrite),
                threads,
            ),
            Behavior::Scripted { answer, .. } => {
                scripted(&mut stream, &mut pending, number, answer)
            }
        };
        match next {
            Served::Open => {}
            Served::Close => return,
            Served::Hang => behavior = Behavior::NeverAnswer,
        }
    }
}

/// What a connection does after a chunk was answered.
enum Served {
    /// Goes on reading and answering.
    Open,
    /// Closes (`quit`, the peer went away, or the behaviour closes).
    Close,
    /// Reads on and answers nothing more ([`Behavior::HangOnWrite`] after a write).
    Hang,
}

/// Which requests [`answer_framed`] leaves unanswered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mute {
    Nothing,
    /// `version` gets no answer at all.
    Version,
    /// The first storage command and everything after it get no answer.
    FromFirstWrite,
}

/// Answers each whole request line in `pending` (removed from it) with `answer(number, line)`.
fn scripted(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    number: usize,
    answer: fn(usize, &str) -> Vec<u8>,
) -> Served {
    while let Some(eol) = pending.iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&pending[..eol]);
        let reply = answer(number, line.trim_end_matches('\r'));
        pending.drain(..=eol);
        if !reply.is_empty() && stream.write_all(&reply).is_err() {
            return Served::Close;
        }
    }
    Served::Open
}

/// Once a whole request line is in, writes a third of a `VALUE` reply and closes.
fn close_mid_reply(stream: &mut TcpStream, pending: &[u8]) -> Served {
    let Some(eol) = pending.iter().position(|&b| b == b'\n') else {
        return Served::Open; // wait for the rest of the line
    };
    let line = String::from_utf8_lossy(&pending[..eol]);
    let key = line.split_whitespace().nth(1).unwrap_or("k").to_string();
    let _ = stream.write_all(format!("VALUE {key} 0 10\r\nabc").as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
    Served::Close
}

/// Answers each complete request in `pending` after `delay`, removing it from `pending`,
/// except those `mute` leaves unanswered; with `hits`, a `get`/`gets` finds the keys that start
/// with `hit` (see [`Behavior::HitsHangOnWrite`]).
fn answer_framed(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    delay: Duration,
    mute: Mute,
    hits: bool,
    threads: &Threads,
) -> Served {
    while let Some((consumed, reply)) = next_request(pending) {
        if mute == Mute::FromFirstWrite && is_write(pending) {
            return Served::Hang;
        }
        let is_version = pending.starts_with(b"version");
        let found = hits.then(|| hits_reply(&pending[..consumed])).flatten();
        pending.drain(..consumed);
        let Some(reply) = reply else { continue };
        let reply = found.as_deref().unwrap_or(reply);
        if mute == Mute::Version && is_version {
            continue;
        }
        if reply.is_empty() {
            return Served::Close; // quit
        }
        if !delay.is_zero() && !threads.sleep_until(Instant::now() + delay) {
            return Served::Close;
        }
        if stream.write_all(reply).is_err() {
            return Served::Close;
        }
    }
    Served::Open
}

/// The reply of [`Behavior::HitsHangOnWrite`] to `request` when it is a `get`/`gets`: a value
/// for each key that starts with `hit`, then `END`; `None` for any other request.
fn hits_reply(request: &[u8]) -> Option<Vec<u8>> {
    let line = String::from_utf8_lossy(request);
    let mut tokens = line.split_whitespace();
    let cas = match tokens.next()? {
        "get" => false,
        "gets" => true,
        _ => return None,
    };
    let mut reply = Vec::new();
    for key in tokens.filter(|k| k.starts_with("hit")) {
        let value = warm_value(key);
        let head = format!(
            "VALUE {key} 0 {}{}\r\n",
            value.len(),
            if cas { " 1" } else { "" }
        );
        reply.extend_from_slice(head.as_bytes());
        reply.extend_from_slice(value.as_bytes());
        reply.extend_from_slice(b"\r\n");
    }
    reply.extend_from_slice(b"END\r\n");
    Some(reply)
}

/// True when the request at the start of `buf` is a storage command.
fn is_write(buf: &[u8]) -> bool {
    let command = buf
        .split(|&b| b == b' ' || b == b'\r')
        .next()
        .unwrap_or_default();
    data_len_at(&String::from_utf8_lossy(command)).is_some()
}

/// Where the data block's length is among the tokens of a storage command's line: token 4
/// (classic) or 2 (`ms`); `None` for a command without a data block.
fn data_len_at(command: &str) -> Option<usize> {
    match command {
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => Some(4),
        "ms" => Some(2),
        _ => None,
    }
}

/// Frames the first request of `buf`: `Some((bytes consumed, reply))` once it is complete, where
/// the reply is `None` for `noreply` and empty for `quit`; `None` while incomplete.
fn next_request(buf: &[u8]) -> Option<(usize, Option<&'static [u8]>)> {
    let eol = buf.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&buf[..eol]);
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let noreply = tokens.last() == Some(&"noreply");
    // Storage commands carry a data block.
    let mut consumed = eol + 1;
    if let Some(at) = tokens.first().and_then(|c| data_len_at(c)) {
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
