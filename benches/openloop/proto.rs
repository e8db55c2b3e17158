//! The load's keys and values, the requests built from them, and the checks of the replies.

/// Longest reply line accepted (a `VALUE` line of a 250-byte key is under 300 bytes).
const MAX_LINE: usize = 1024;
/// Largest value accepted in a reply; the load's values are `--value-size` bytes.
const MAX_VALUE: usize = 1 << 20;

use crate::fatal;

/// The key space: each key's name, its (fixed) value, and its set and get requests, built
/// once and shared read-only by the threads.
pub struct Keyspace {
    pub keys: Vec<Vec<u8>>,
    pub values: Vec<Vec<u8>>,
    pub sets: Vec<Vec<u8>>,
    pub gets: Vec<Vec<u8>>,
}

impl Keyspace {
    pub fn new(count: usize, key_size: usize, value_size: usize) -> Keyspace {
        let prefix = "openloop:";
        let width = key_size.saturating_sub(prefix.len());
        if width < count.saturating_sub(1).to_string().len() || key_size > 250 {
            fatal(&format!(
                "--key-size {key_size} cannot hold {count} distinct keys (at most 250)"
            ));
        }
        let mut ks = Keyspace {
            keys: Vec::with_capacity(count),
            values: Vec::with_capacity(count),
            sets: Vec::with_capacity(count),
            gets: Vec::with_capacity(count),
        };
        for i in 0..count {
            let key = format!("{prefix}{i:0width$}").into_bytes();
            // A value that differs from key to key, so a reply carrying another key's value
            // (a mix-up in the proxy) is seen.
            let value: Vec<u8> = (0..value_size)
                .map(|j| b'a' + ((i * 7 + j) % 26) as u8)
                .collect();
            let mut set =
                format!("set {} 0 0 {value_size}\r\n", String::from_utf8_lossy(&key)).into_bytes();
            set.extend_from_slice(&value);
            set.extend_from_slice(b"\r\n");
            let mut get = b"get ".to_vec();
            get.extend_from_slice(&key);
            get.extend_from_slice(b"\r\n");
            ks.keys.push(key);
            ks.values.push(value);
            ks.sets.push(set);
            ks.gets.push(get);
        }
        ks
    }
}

/// What a request asked, to check its reply against.
pub enum Op {
    Set(u32),
    Get(u32),
    Multi(Vec<u32>),
}

impl Op {
    fn get_keys(&self) -> &[u32] {
        match self {
            Op::Set(_) => &[],
            Op::Get(k) => std::slice::from_ref(k),
            Op::Multi(ks) => ks,
        }
    }
}

/// splitmix64: small, fast, and good enough to pick keys and commands.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> u32 {
        (self.next() % n as u64) as u32
    }
}

// ---------------------------------------------------------------------------------------------
// Reply parsing
// ---------------------------------------------------------------------------------------------

/// Why a whole reply is wrong. The stream stays in step: the next reply can still be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...` in place of the reply.
    ErrorLine,
    /// `NOT_STORED`, `EXISTS` or `NOT_FOUND` to a set.
    NotStored,
    /// A key that was asked for, and preloaded, did not come back.
    Miss,
    /// A value with other flags or other bytes than the ones set for its key.
    Differs,
}

impl Wrong {
    pub fn as_str(self) -> &'static str {
        match self {
            Wrong::ErrorLine => "error reply",
            Wrong::NotStored => "set not stored",
            Wrong::Miss => "miss of a preloaded key",
            Wrong::Differs => "value differs from the one set",
        }
    }
}

/// What the start of the read buffer holds for the oldest outstanding request.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// Not all of the reply yet.
    Incomplete,
    /// A whole reply of `used` bytes, and why it is wrong if it is.
    Done { used: usize, error: Option<Wrong> },
    /// Bytes that cannot be the reply to this request: the place in the stream is lost.
    Desync(&'static str),
}

/// The line at the start of `buf`, without its CRLF, and its length with it.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, &'static str> {
    let limit = buf.len().min(MAX_LINE);
    match memchr::memchr(b'\n', &buf[..limit]) {
        Some(nl) if nl > 0 && buf[nl - 1] == b'\r' => Ok(Some((&buf[..nl - 1], nl + 1))),
        Some(_) => Err("line not ended by CRLF"),
        None if buf.len() >= MAX_LINE => Err("reply line too long"),
        None => Ok(None),
    }
}

/// An error line memcached (or a proxy) sends in place of a reply.
fn is_error_line(l: &[u8]) -> bool {
    l == b"ERROR" || l.starts_with(b"CLIENT_ERROR") || l.starts_with(b"SERVER_ERROR")
}

/// Parses the reply to `op` at the start of `buf`.
pub fn parse_reply(buf: &[u8], op: &Op, ks: &Keyspace) -> Parsed {
    let (first, used) = match line(buf) {
        Ok(Some(l)) => l,
        Ok(None) => return Parsed::Incomplete,
        Err(e) => return Parsed::Desync(e),
    };
    if is_error_line(first) {
        return Parsed::Done {
            used,
            error: Some(Wrong::ErrorLine),
        };
    }
    if let Op::Set(_) = op {
        return match first {
            b"STORED" => Parsed::Done { used, error: None },
            b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => Parsed::Done {
                used,
                error: Some(Wrong::NotStored),
            },
            _ => Parsed::Desync("unexpected reply to a set"),
        };
    }
    parse_values(buf, op.get_keys(), ks)
}

/// The reply to a get of `keys`: `VALUE` blocks for keys asked, in order, then `END`.
fn parse_values(buf: &[u8], keys: &[u32], ks: &Keyspace) -> Parsed {
    let mut pos = 0;
    let mut next = 0; // keys[next..] may still come
    let mut hits = 0;
    let mut error = None;
    loop {
        let (l, len) = match line(&buf[pos..]) {
            Ok(Some(l)) => l,
            Ok(None) => return Parsed::Incomplete,
            Err(e) => return Parsed::Desync(e),
        };
        if l == b"END" {
            if hits < keys.len() && error.is_none() {
                error = Some(Wrong::Miss);
            }
            return Parsed::Done {
                used: pos + len,
                error,
            };
        }
        if is_error_line(l) {
            // An error in the middle of a multi-get ends the reply.
            return Parsed::Done {
                used: pos + len,
                error: Some(Wrong::ErrorLine),
            };
        }
        let mut tok = l.split(|&b| b == b' ');
        if tok.next() != Some(b"VALUE") {
            return Parsed::Desync("unexpected line in a get reply");
        }
        let (Some(key), Some(flags), Some(bytes)) = (tok.next(), tok.next(), tok.next()) else {
            return Parsed::Desync("short VALUE line");
        };
        let Some(found) = keys[next..]
            .iter()
            .position(|&k| ks.keys[k as usize] == key)
        else {
            return Parsed::Desync("VALUE of a key not asked for (or out of order)");
        };
        let k = keys[next + found] as usize;
        next += found + 1;
        let Some(n) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n <= MAX_VALUE)
        else {
            return Parsed::Desync("bad VALUE length");
        };
        let data = pos + len;
        if buf.len() < data + n + 2 {
            return Parsed::Incomplete;
        }
        if &buf[data + n..data + n + 2] != b"\r\n" {
            return Parsed::Desync("value not ended by CRLF");
        }
        if flags != b"0" || buf[data..data + n] != ks.values[k][..] {
            error.get_or_insert(Wrong::Differs);
        }
        hits += 1;
        pos = data + n + 2;
    }
}
