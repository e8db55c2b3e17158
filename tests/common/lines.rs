//! Random memcached request lines for the differential and hostile-client tests: valid lines
//! that any memcached 1.6 answers deterministically (no clocks: no `t`/`l` flags, no `me`, no
//! expiring TTLs), and hostile lines of every class the proxy must refuse before a byte reaches
//! a backend (issue 14): lines memcached reads differently, refuses without swallowing their
//! data block, or closes the connection for.
//!
//! Keys and values are lowercase letters and digits, so a reply's `MN\r\n` fence can only be a
//! line of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Rng;

/// The fence sent after every batch; memcached answers it `MN\r\n` once the batch is done.
pub const FENCE: &[u8] = b"mn\r\n";

/// A key out of a small key space (so that commands meet each other's keys).
pub fn key(rng: &mut Rng) -> String {
    format!("k{}", rng.below(24))
}

/// A key of the arithmetic key space (see [`valid_request_with`]).
pub fn number_key(rng: &mut Rng) -> String {
    format!("n{}", rng.below(6))
}

/// A value of 0 to 40 lowercase letters and digits.
pub fn value(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = rng.below(41);
    (0..len).map(|_| char::from(*rng.pick(ALPHABET))).collect()
}

/// Standard padded base64 (for `b` keys).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A random subset of `flags` (each kept with probability 1/3), in random order.
fn some_flags(rng: &mut Rng, flags: &[&str]) -> String {
    let mut picked: Vec<&str> = flags.iter().copied().filter(|_| rng.chance(33)).collect();
    for i in (1..picked.len()).rev() {
        picked.swap(i, rng.below(i + 1));
    }
    picked.iter().map(|f| format!(" {f}")).collect()
}

/// One valid request (line and data block) whose reply is the same from any memcached 1.6
/// holding the same items, whatever the time.
pub fn valid_request(rng: &mut Rng) -> Vec<u8> {
    valid_request_with(rng, true)
}

/// [`valid_request`]; without `cas`, no request that compares a cas unique (`cas`, `ms C`,
/// `md C`): cas uniques are counted per server, so a pool and a single memcached holding the
/// same items give them different values.
pub fn valid_request_with(rng: &mut Rng, cas: bool) -> Vec<u8> {
    let k = key(rng);
    let v = value(rng);
    let n = v.len();
    let flags = rng.below(70000);
    let ttl = if rng.chance(80) { 0 } else { 100_000 };
    let noreply = if rng.chance(15) { " noreply" } else { "" };
    let line = match rng.below(22) {
        0 | 1 => format!("get {k}\r\n"),
        2 => {
            let keys: Vec<String> = (0..rng.range(2, 6)).map(|_| key(rng)).collect();
            format!("get {}\r\n", keys.join(" "))
        }
        3 => {
            let keys: Vec<String> = (0..rng.range(1, 4)).map(|_| key(rng)).collect();
            format!("gets {}\r\n", keys.join(" "))
        }
        4 => format!("gat {ttl} {k} {}\r\n", key(rng)),
        5 => format!("gats {ttl} {k}\r\n"),
        6 => format!("set {k} {flags} {ttl} {n}{noreply}\r\n{v}\r\n"),
        7 => {
            let number = rng.range(0, 100_000).to_string();
            let key = number_key(rng);
            let len = number.len();
            format!("set {key} {flags} {ttl} {len}{noreply}\r\n{number}\r\n")
        }
        8 => format!("add {k} {flags} {ttl} {n}{noreply}\r\n{v}\r\n"),
        9 => format!("replace {k} {flags} {ttl} {n}{noreply}\r\n{v}\r\n"),
        10 => format!(
            "{} {k} 0 0 {n}{noreply}\r\n{v}\r\n",
            if rng.chance(50) { "append" } else { "prepend" }
        ),
        11 if cas => format!(
            "cas {k} {flags} {ttl} {n} {}{noreply}\r\n{v}\r\n",
            rng.range(1, 400)
        ),
        11 => format!("set {k} {flags} {ttl} {n}{noreply}\r\n{v}\r\n"),
        12 => format!("delete {k}{noreply}\r\n"),
        // Only increments: a decrement that shortens a number is padded with spaces in place,
        // or stored as a new shorter item, by whether another connection still holds the item
        // (a reply being written), which two memcacheds need not agree on.
        //
        // Arithmetic has keys of its own (`n0`..`n5`), which only `set`, `get` and arithmetic
        // touch: an increment changes its item in place or stores a new one by whether a
        // reply being written still holds it, which two memcacheds need not agree on, and a
        // new item loses the meta state (fetched, stale, win token) that other requests would
        // then see differently.
        13 => format!(
            "incr {} {}{noreply}\r\n",
            number_key(rng),
            rng.range(0, 1000)
        ),
        14 => format!("touch {k} {ttl}{noreply}\r\n"),
        15 | 16 => {
            let flags = some_flags(
                rng,
                &["v", "c", "f", "k", "q", "s", "u", "O1ab", "T0", "N0", "R30"],
            );
            format!("mg {k}{flags}\r\n")
        }
        17 => {
            let mode = *rng.pick(&["", " MS", " ME", " MA", " MP", " MR"]);
            let cas = if cas && rng.chance(20) {
                format!(" C{}", rng.range(1, 400))
            } else {
                String::new()
            };
            let flags = some_flags(rng, &["c", "k", "q", "s", "I", "F7", "T0", "Oxy"]);
            format!("ms {k} {n}{mode}{cas}{flags}\r\n{v}\r\n")
        }
        18 => {
            let md_flags: &[&str] = if cas {
                &["k", "q", "I", "T0", "Od1", "C1"]
            } else {
                &["k", "q", "T0", "Od1"]
            };
            let flags = some_flags(rng, md_flags);
            format!("md {k}{flags}\r\n")
        }
        19 => {
            let mode = *rng.pick(&["", " MI", " M+"]);
            let flags = some_flags(rng, &["v", "c", "k", "q", "N0", "J13", "D4", "T0", "Oz"]);
            format!("ma {}{mode}{flags}\r\n", number_key(rng))
        }
        20 => {
            // A base64 key, with the b flag: the same item as its decoded form.
            let b = base64(k.as_bytes());
            match rng.below(3) {
                0 => format!("mg {b} b v k\r\n"),
                1 => format!("ms {b} {n} b\r\n{v}\r\n"),
                _ => format!("md {b} b q\r\n"),
            }
        }
        _ => format!(
            "{}verbosity 0{noreply}\r\n",
            if rng.chance(50) { "" } else { " " }
        ),
    };
    line.into_bytes()
}

/// What the proxy must do with a hostile request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Answer exactly one error line (ERROR, CLIENT_ERROR, SERVER_ERROR) and read on.
    ErrorLine,
    /// Close the connection without running anything.
    Close,
}

/// A data block that would run as commands if it were read as such: a flush, a store, a read
/// of another client's key and a command the proxy refuses.
fn smuggled(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => "flush_all".to_string(),
        1 => format!("set {} 0 0 4\r\nevil", key(rng)),
        2 => "get victim:0".to_string(),
        _ => "stats cachedump 1 0".to_string(),
    }
}

/// One hostile request of the classes issue 14 lists, and what the proxy must do with it.
pub fn hostile_request(rng: &mut Rng) -> (Vec<u8>, Refusal) {
    let k = key(rng);
    let body = smuggled(rng);
    let n = body.len();
    let letters = "ACDEFGHIJKLMNOPRSUVWXYZ";
    let (text, refusal) = match rng.below(16) {
        // Too many meta flags: memcached refuses before reading the data block.
        0 => {
            let flags: Vec<String> = letters.chars().take(17).map(|c| c.to_string()).collect();
            (
                format!("ms {k} {n} {}\r\n{body}\r\n", flags.join(" ")),
                Refusal::ErrorLine,
            )
        }
        // Flags memcached does not know, or repeated, or with a token of the wrong kind.
        1 => (format!("ms {k} {n} H\r\n{body}\r\n"), Refusal::ErrorLine),
        2 => (
            format!("ms {k} {n} T1 T2\r\n{body}\r\n"),
            Refusal::ErrorLine,
        ),
        3 => (format!("ms {k} {n} Fx\r\n{body}\r\n"), Refusal::ErrorLine),
        4 => (format!("ms {k} {n} MZ\r\n{body}\r\n"), Refusal::ErrorLine),
        // A long opaque: over memcached's 2048-byte line limit, its connection would close.
        5 => {
            let opaque = "o".repeat(rng.range(33, 20_000) as usize);
            (format!("mg {k} v O{opaque}\r\n"), Refusal::ErrorLine)
        }
        // Numbers memcached keeps in 32 bits.
        6 => (
            format!("set {k} 0 9999999999 {n}\r\n{body}\r\n"),
            Refusal::ErrorLine,
        ),
        7 => (
            format!("ms {k} {n} T4294967296\r\n{body}\r\n"),
            Refusal::ErrorLine,
        ),
        // A NUL or a CR inside the line.
        8 => (format!("ms {k}\0 {n}\r\n{body}\r\n"), Refusal::ErrorLine),
        9 => (
            format!("set {k} 0 0 {n}\r noreply\r\n{body}\r\n"),
            Refusal::ErrorLine,
        ),
        // A retrieval line over 2048 bytes that memcached would not read as one line.
        10 => {
            let keys: Vec<String> = (0..500).map(|i| format!("key{i}")).collect();
            (format!("gat 0 {}\r\n", keys.join(" ")), Refusal::ErrorLine)
        }
        // A key that is not base64 with the b flag; a key over 250 bytes.
        11 => (format!("ms {k}! {n} b\r\n{body}\r\n"), Refusal::ErrorLine),
        12 => (
            format!("set {} 0 0 {n}\r\n{body}\r\n", "x".repeat(251)),
            Refusal::ErrorLine,
        ),
        // Commands the proxy does not forward.
        13 => ("stats cachedump 1 0\r\n".to_string(), Refusal::ErrorLine),
        14 => (
            "lru_crawler metadump all\r\n".to_string(),
            Refusal::ErrorLine,
        ),
        // An HTTP request line: close, and nothing after it runs.
        _ => (
            format!("POST /x HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{body}\r\n"),
            Refusal::Close,
        ),
    };
    (text.into_bytes(), refusal)
}

/// True when `reply` is exactly one error line.
pub fn is_one_error_line(reply: &[u8]) -> bool {
    let Some(body) = reply.strip_suffix(b"\r\n") else {
        return false;
    };
    !body.contains(&b'\n')
        && (body == b"ERROR"
            || body.starts_with(b"CLIENT_ERROR ")
            || body.starts_with(b"SERVER_ERROR "))
}

/// A connection that sends a batch followed by [`FENCE`] and reads everything up to the fence's
/// `MN\r\n`.
pub struct Fenced {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Fenced {
    /// Connects to `addr`.
    pub fn connect(addr: &str) -> Fenced {
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Fenced {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends `batch` and the fence; returns the replies to the batch (the fence's `MN` removed),
    /// or `None` when the connection closed first.
    pub fn exchange(&mut self, batch: &[u8]) -> Option<Vec<u8>> {
        self.stream.write_all(&[batch, FENCE].concat()).ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.buf == b"MN\r\n" || self.buf.ends_with(b"\r\nMN\r\n") {
                let mut out = std::mem::take(&mut self.buf);
                out.truncate(out.len() - 4);
                return Some(out);
            }
            assert!(
                Instant::now() < deadline,
                "no fence after {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!(
                    "reading a fenced batch: {e}; so far {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }
}
