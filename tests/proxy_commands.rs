//! Every memcached ASCII command through bifrost (blind_forward, one worker) to one real
//! memcached, with the exact bytes on the wire.
//!
//! Most checks go through [`Wire::roundtrip`]: the request bytes are sent followed by `mn\r\n`,
//! and the reply stream must be exactly the expected bytes followed by `MN\r\n`. Because the
//! proxy answers in request order, anything a `noreply` request sent back, or any reply missing
//! or doubled, shifts the stream and fails the comparison, without waiting for silence.
//! Effects are checked by a following request through the proxy and, where it matters, straight
//! on the memcached behind it.

mod common;

use common::{wait_until, Bifrost, Client, Memcached};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::Duration;

/// What the proxy must answer to `version`.
const PROXY_VERSION: &str = concat!("VERSION ", env!("CARGO_PKG_VERSION"));
/// bifrost's default `max_value_size` (1 MiB).
const MAX_VALUE: usize = 1024 * 1024;
/// The request and reply that end every [`Wire::roundtrip`].
const SENTINEL: &[u8] = b"mn\r\n";
const SENTINEL_REPLY: &[u8] = b"MN\r\n";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One memcached and a bifrost forwarding to it.
struct Env {
    bifrost: Bifrost,
    mc: Memcached,
}

impl Env {
    /// memcached with a 2 MiB item size (so bifrost's 1 MiB limit is the one that binds) and
    /// bifrost's reference blind_forward config in front of it.
    fn start() -> Env {
        let mc = Memcached::builder().max_item_size("2m").start();
        let bifrost = Bifrost::blind_forward(&mc);
        Env { bifrost, mc }
    }

    /// A raw connection to the proxy.
    fn wire(&self) -> Wire {
        Wire::connect(&self.bifrost.addr())
    }

    /// A harness client straight to memcached, to check what reached the backend.
    fn direct(&self) -> Client {
        self.mc.client()
    }
}

/// How one read from the socket ended.
enum Got {
    Data,
    /// The peer closed (or reset) the connection.
    Eof,
    Timeout,
    Failed(String),
}

/// A connection for exact-byte assertions: requests go out through the harness [`Client`]
/// (never read through, so its buffer stays empty), replies are read raw from a clone of the
/// socket into `pending`.
struct Wire {
    client: Client,
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Wire {
    fn connect(addr: &str) -> Wire {
        let client = Client::connect(addr);
        let stream = client
            .stream()
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the socket to {addr}: {e}"));
        Wire {
            client,
            stream,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.client.send(bytes);
    }

    /// One read into `pending` (the socket's read timeout is the harness's 5 s).
    fn fill(&mut self) -> Got {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Got::Eof,
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Got::Data;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A reset is the peer closing too (e.g. with unread input left).
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Got::Eof
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::Timeout
                }
                Err(e) => return Got::Failed(e.to_string()),
            }
        }
    }

    /// After a divergence: whatever else arrives within a short while, for the failure message.
    fn gather_more(&mut self) {
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(500)));
        while matches!(self.fill(), Got::Data) && self.pending.len() < 1 << 22 {}
        let _ = self.stream.set_read_timeout(Some(common::IO_TIMEOUT));
    }

    /// Reads until the reply stream holds `want`, and consumes it; panics, naming `req`, when
    /// it diverges, stops early or the connection ends.
    fn expect(&mut self, req: &[u8], want: &[u8]) {
        let mut stopped = None;
        while self.pending.len() < want.len() {
            if !want.starts_with(&self.pending) {
                self.gather_more();
                break;
            }
            match self.fill() {
                Got::Data => {}
                Got::Eof => stopped = Some("the proxy closed the connection".to_string()),
                Got::Timeout => stopped = Some("timed out waiting for more".to_string()),
                Got::Failed(e) => stopped = Some(format!("read failed: {e}")),
            }
            if stopped.is_some() {
                break;
            }
        }
        if self.pending.len() < want.len() || !self.pending.starts_with(want) {
            panic!(
                "{}{}",
                mismatch(req, want, &self.pending),
                stopped.map_or(String::new(), |s| format!("\n(reading stopped: {s})"))
            );
        }
        self.pending.drain(..want.len());
    }

    /// Sends `req` then `mn`, and asserts the replies are exactly `want` then `MN`.
    fn roundtrip(&mut self, req: &[u8], want: &[u8]) {
        let full_req = [req, SENTINEL].concat();
        let full_want = [want, SENTINEL_REPLY].concat();
        self.send(&full_req);
        self.expect(&full_req, &full_want);
        if !self.pending.is_empty() {
            panic!(
                "request {}: extra bytes after the final MN: {}",
                esc(&full_req),
                esc(&self.pending)
            );
        }
    }

    /// One reply line, `\r\n` included.
    fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                return self.pending.drain(..i + 2).collect();
            }
            match self.fill() {
                Got::Data => {}
                _ => panic!("no complete reply line; have {}", esc(&self.pending)),
            }
        }
    }

    /// Asserts the proxy closes the connection and sends nothing more.
    fn expect_closed(&mut self, after: &[u8]) {
        let outcome = loop {
            if !self.pending.is_empty() {
                self.gather_more();
                panic!(
                    "after {}: expected the connection to close, but the proxy sent {}",
                    esc(after),
                    esc(&self.pending)
                );
            }
            match self.fill() {
                Got::Data => continue,
                Got::Eof => break Ok(()),
                Got::Failed(e) => break Err(e),
                Got::Timeout => break Err("it stayed open".to_string()),
            }
        };
        if let Err(why) = outcome {
            panic!(
                "after {}: expected the connection to close; {why}",
                esc(after)
            );
        }
    }
}

/// Bytes escaped for a message, cut after 400 bytes.
fn esc(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("\"{}\"", cut.escape_ascii());
    if bytes.len() > MAX {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// The failure message of an unexpected reply stream, with the first difference in context.
fn mismatch(req: &[u8], want: &[u8], got: &[u8]) -> String {
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let from = at.saturating_sub(60);
    let window = |b: &[u8]| esc(&b[from.min(b.len())..(at + 100).min(b.len())]);
    format!(
        "wrong reply stream\n  request ({} bytes): {}\n  expected ({} bytes): {}\n  received ({} bytes): {}\n  \
         first difference at byte {at}; from byte {from}:\n    expected: {}\n    received: {}",
        req.len(),
        esc(req),
        want.len(),
        esc(want),
        got.len(),
        esc(got),
        window(want),
        window(got),
    )
}

/// A storage request (`set`/`add`/.../`cas` with `extra` after the byte count) with its data.
fn storage(cmd: &str, key: &str, flags: u32, extra: &str, value: &[u8]) -> Vec<u8> {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" {extra}")
    };
    let mut req = format!("{cmd} {key} {flags} 0 {}{extra}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    req
}

/// `set key flags 0 len` with the value.
fn set_req(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    storage("set", key, flags, "", value)
}

/// One `VALUE` block (with a cas unique if given).
fn value_block(key: &str, flags: u32, value: &[u8], cas: Option<u64>) -> Vec<u8> {
    let cas = cas.map_or(String::new(), |c| format!(" {c}"));
    let mut out = format!("VALUE {key} {flags} {}{cas}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// The reply to a one-key retrieval: the block (if a hit) and `END`.
fn hit(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    [value_block(key, flags, value, None), b"END\r\n".to_vec()].concat()
}

/// The CAS unique memcached holds for `key` (asked straight on the backend).
fn backend_cas(direct: &mut Client, key: &str) -> u64 {
    direct
        .gets(key)
        .unwrap_or_else(|| panic!("{key} is missing on the backend"))
        .1
}

/// Asserts memcached holds `key` with a remaining TTL of `ttl` seconds (or one less, if its
/// clock ticked in between), asked straight on the backend with `mg key t`.
fn assert_backend_ttl(direct: &mut Client, key: &str, ttl: i64) {
    let line = direct.request(format!("mg {key} t\r\n").as_bytes());
    let ok = [ttl, ttl - 1].map(|t| format!("HD t{t}\r\n").into_bytes());
    assert!(
        ok.contains(&line),
        "mg {key} t on the backend: expected TTL {ttl} (or {}), got {}",
        ttl - 1,
        esc(&line)
    );
}

/// `STAT name value` lines up to `END`, as a map; panics on any other line.
fn parse_stats(mut next_line: impl FnMut() -> Vec<u8>) -> BTreeMap<String, String> {
    let mut stats = BTreeMap::new();
    loop {
        let line = next_line();
        if line == b"END\r\n" {
            return stats;
        }
        let text = String::from_utf8_lossy(&line);
        let mut parts = text.trim_end_matches("\r\n").splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("STAT"), Some(name), Some(value)) if line.ends_with(b"\r\n") => {
                stats.insert(name.to_string(), value.to_string());
            }
            _ => panic!("stats: unexpected line {}", esc(&line)),
        }
    }
}

/// The proxy's `stats`.
fn proxy_stats(w: &mut Wire) -> BTreeMap<String, String> {
    w.send(b"stats\r\n");
    parse_stats(|| w.read_line())
}

/// memcached's own `stats`.
fn backend_stats(direct: &mut Client) -> BTreeMap<String, String> {
    direct.send(b"stats\r\n");
    parse_stats(|| direct.read_line_raw())
}

/// A numeric stat.
fn stat(stats: &BTreeMap<String, String>, name: &str) -> u64 {
    let value = stats
        .get(name)
        .unwrap_or_else(|| panic!("stats has no {name}: {stats:?}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("stat {name} = {value:?} is not a number: {e}"))
}

/// A value of `len` bytes, every byte value, position-dependent (so a shifted or truncated copy
/// differs), never forming an `MN` line.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Retrieval
// ---------------------------------------------------------------------------------------------

#[test]
fn get_hit_miss_and_flags() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&set_req("g1", 42, b"hello"), b"STORED\r\n");
    w.roundtrip(b"get g1\r\n", &hit("g1", 42, b"hello"));
    w.roundtrip(b"get missing\r\n", b"END\r\n");
    // Flags are 32-bit.
    w.roundtrip(&set_req("g2", u32::MAX, b"x"), b"STORED\r\n");
    w.roundtrip(b"get g2\r\n", &hit("g2", u32::MAX, b"x"));
    assert_eq!(env.direct().get("g1").as_deref(), Some(&b"hello"[..]));
}

#[test]
fn gets_returns_the_backends_cas_unique() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&set_req("cs", 3, b"abc"), b"STORED\r\n");
    let cas = backend_cas(&mut env.direct(), "cs");
    let want = [value_block("cs", 3, b"abc", Some(cas)), b"END\r\n".to_vec()].concat();
    w.roundtrip(b"gets cs\r\n", &want);
    w.roundtrip(b"gets nothing-here\r\n", b"END\r\n");
}

#[test]
fn gat_and_gats_return_the_value_and_touch_it() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(&set_req("ga", 9, b"one"), b"STORED\r\n");
    w.roundtrip(&set_req("gb", 8, b"two"), b"STORED\r\n");
    assert_backend_ttl(&mut direct, "ga", -1);

    w.roundtrip(b"gat 100 ga\r\n", &hit("ga", 9, b"one"));
    assert_backend_ttl(&mut direct, "ga", 100);

    let cas = backend_cas(&mut direct, "gb");
    let want = [value_block("gb", 8, b"two", Some(cas)), b"END\r\n".to_vec()].concat();
    w.roundtrip(b"gats 200 gb\r\n", &want);
    assert_backend_ttl(&mut direct, "gb", 200);

    // Several keys, one missing; a miss is just absent.
    let want = [
        value_block("ga", 9, b"one", None),
        value_block("gb", 8, b"two", None),
        b"END\r\n".to_vec(),
    ]
    .concat();
    w.roundtrip(b"gat 300 ga nope gb\r\n", &want);
    assert_backend_ttl(&mut direct, "ga", 300);
    assert_backend_ttl(&mut direct, "gb", 300);
    w.roundtrip(b"gat 100 nope\r\n", b"END\r\n");
    w.roundtrip(b"gats 100 nope\r\n", b"END\r\n");
}

#[test]
fn multi_get_of_100_keys_some_missing() {
    let env = Env::start();
    let mut w = env.wire();
    let keys: Vec<String> = (0..100).map(|i| format!("multi:{i:03}")).collect();
    let present = |i: usize| i % 3 != 0;
    let mut sets = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| present(*i)) {
        sets.extend(set_req(key, i as u32, format!("value-of-{i}").as_bytes()));
    }
    let stored = b"STORED\r\n".repeat(keys.len() - keys.len().div_ceil(3));
    w.roundtrip(&sets, &stored);

    let req = format!("get {}\r\n", keys.join(" "));
    let mut want = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| present(*i)) {
        want.extend(value_block(
            key,
            i as u32,
            format!("value-of-{i}").as_bytes(),
            None,
        ));
    }
    want.extend_from_slice(b"END\r\n");
    w.roundtrip(req.as_bytes(), &want);
}

#[test]
fn multi_get_answers_a_repeated_key_each_time() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(
        &[set_req("ra", 1, b"A"), set_req("rb", 2, b"BB")].concat(),
        b"STORED\r\nSTORED\r\n",
    );
    let a = value_block("ra", 1, b"A", None);
    let b = value_block("rb", 2, b"BB", None);
    w.roundtrip(
        b"get ra rb ra missing ra\r\n",
        &[&a[..], &b, &a, &a, b"END\r\n"].concat(),
    );
    w.roundtrip(b"get ra ra\r\n", &[&a[..], &a, b"END\r\n"].concat());
}

#[test]
fn values_holding_crlf_and_end_lines_pass_intact() {
    let env = Env::start();
    let mut w = env.wire();
    let tricky: &[&[u8]] = &[
        b"\r\nEND\r\n",
        b"a\r\nb\r\n",
        b"END\r\n",
        b"VALUE x 0 1\r\ny\r\nEND\r\n",
        b"\r\n",
        b"\n\r\r\n\n",
        b"STORED\r\n",
    ];
    for (i, value) in tricky.iter().enumerate() {
        let key = format!("crlf{i}");
        w.roundtrip(&set_req(&key, i as u32, value), b"STORED\r\n");
        w.roundtrip(
            format!("get {key}\r\n").as_bytes(),
            &hit(&key, i as u32, value),
        );
        assert_eq!(
            env.direct().get(&key).as_deref(),
            Some(*value),
            "backend copy of {key}"
        );
    }
    // All of them in one multi-get, then a plain request: framing survives.
    let keys: Vec<String> = (0..tricky.len()).map(|i| format!("crlf{i}")).collect();
    let mut want: Vec<u8> = tricky
        .iter()
        .enumerate()
        .flat_map(|(i, v)| value_block(&keys[i], i as u32, v, None))
        .collect();
    want.extend_from_slice(b"END\r\n");
    want.extend_from_slice(b"END\r\n");
    w.roundtrip(
        format!("get {}\r\nget none\r\n", keys.join(" ")).as_bytes(),
        &want,
    );
}

#[test]
fn zero_byte_value() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(b"set empty 5 0 0\r\n\r\n", b"STORED\r\n");
    w.roundtrip(b"get empty\r\n", b"VALUE empty 5 0\r\n\r\nEND\r\n");
    w.roundtrip(b"mg empty v f\r\n", b"VA 0 f5\r\n\r\n");
    assert_eq!(env.direct().get("empty").as_deref(), Some(&b""[..]));
}

#[test]
fn value_of_exactly_max_value_size_is_stored_and_read_back_intact() {
    let env = Env::start();
    let mut w = env.wire();
    let value = patterned(MAX_VALUE);
    w.roundtrip(&set_req("big", 7, &value), b"STORED\r\n");
    w.roundtrip(b"get big\r\n", &hit("big", 7, &value));
    let on_backend = env.direct().get("big").expect("big is on the backend");
    assert!(
        on_backend == value,
        "backend holds {} bytes, not the {} sent",
        on_backend.len(),
        value.len()
    );
}

#[test]
fn value_over_max_value_size_is_refused_swallowed_and_never_forwarded() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(&set_req("big", 1, b"old"), b"STORED\r\n");
    w.roundtrip(&set_req("kept", 1, b"old"), b"STORED\r\n");
    w.roundtrip(b"ms mbig 3\r\nold\r\n", b"HD\r\n");
    let before = backend_stats(&mut direct);

    // The refused value holds requests: if it were not swallowed, they would run. A `set`
    // refused as too large removes the key's old value, as memcached does (a client that
    // failed to write must not go on reading what it meant to replace).
    let mut value = b"\r\nset evil 0 0 1\r\nx\r\nget big\r\n".repeat(1000);
    value.resize(MAX_VALUE + 1, b'z');
    w.roundtrip(
        &[set_req("big", 2, &value), b"get big\r\n".to_vec()].concat(),
        b"SERVER_ERROR object too large for cache\r\nEND\r\n",
    );
    // The same for `ms`.
    w.roundtrip(
        &[
            format!("ms mbig {} T0\r\n", value.len()).into_bytes(),
            value.clone(),
            b"\r\nmg mbig v\r\n".to_vec(),
        ]
        .concat(),
        b"SERVER_ERROR object too large for cache\r\nEN\r\n",
    );
    // The other storage commands leave it (memcached removes for set and ms only).
    for (cmd, cas) in [
        ("add", ""),
        ("replace", ""),
        ("append", ""),
        ("prepend", ""),
        ("cas", "1"),
    ] {
        w.roundtrip(
            &[
                storage(cmd, "kept", 0, cas, &value),
                b"get kept\r\n".to_vec(),
            ]
            .concat(),
            &[
                &b"SERVER_ERROR object too large for cache\r\n"[..],
                &hit("kept", 1, b"old"),
            ]
            .concat(),
        );
    }
    // A key that does not exist yet.
    for cmd in ["set", "add", "replace", "append", "prepend"] {
        w.roundtrip(
            &[
                storage(cmd, "fresh", 0, "", &value),
                b"get fresh\r\n".to_vec(),
            ]
            .concat(),
            b"SERVER_ERROR object too large for cache\r\nEND\r\n",
        );
    }
    // No value reached memcached, only the deletes of the set and ms (two of them hit: big
    // and mbig), and the connection still works.
    let after = backend_stats(&mut direct);
    assert_eq!(direct.get("big"), None);
    assert_eq!(direct.get("mbig"), None);
    assert_eq!(direct.get("kept").as_deref(), Some(&b"old"[..]));
    assert_eq!(direct.get("fresh"), None);
    assert_eq!(direct.get("evil"), None);
    assert_eq!(
        stat(&after, "cmd_set"),
        stat(&before, "cmd_set"),
        "a refused value reached memcached (its cmd_set moved)"
    );
    assert_eq!(
        stat(&after, "delete_hits"),
        stat(&before, "delete_hits") + 2,
        "the set and the ms refused as too large each removed their key's old value"
    );
    w.roundtrip(&set_req("after", 0, b"ok"), b"STORED\r\n");
    w.roundtrip(b"get after\r\n", &hit("after", 0, b"ok"));
}

#[test]
fn value_over_max_value_size_with_noreply_is_silent() {
    // memcached answers nothing to a `noreply` storage command whose value is too large (it
    // swallows the data silently), and removes the key's old value; a reply here would be
    // taken for the next request's.
    let env = Env::start();
    // memcached's own behaviour, with a value over its 2 MiB item size.
    let too_big_for_memcached = patterned(3 * MAX_VALUE);
    let mut calibrate = Wire::connect(&env.mc.addr());
    calibrate.roundtrip(&set_req("calibrate", 1, b"old"), b"STORED\r\n");
    calibrate.roundtrip(
        &[
            storage("set", "calibrate", 0, "noreply", &too_big_for_memcached),
            b"get calibrate\r\n".to_vec(),
        ]
        .concat(),
        b"END\r\n",
    );

    let mut w = env.wire();
    w.roundtrip(&set_req("big", 1, b"old"), b"STORED\r\n");
    let value = patterned(MAX_VALUE + 1);
    w.roundtrip(
        &[
            storage("set", "big", 0, "noreply", &value),
            b"get big\r\n".to_vec(),
        ]
        .concat(),
        b"END\r\n",
    );
    assert_eq!(env.direct().get("big"), None);
}

// ---------------------------------------------------------------------------------------------
// Storage, delete, arithmetic, touch
// ---------------------------------------------------------------------------------------------

#[test]
fn set_add_replace_append_prepend_replies_and_effects() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&storage("add", "s", 1, "", b"mid"), b"STORED\r\n");
    w.roundtrip(&storage("add", "s", 2, "", b"xxx"), b"NOT_STORED\r\n");
    w.roundtrip(b"get s\r\n", &hit("s", 1, b"mid"));
    w.roundtrip(&storage("replace", "nope", 0, "", b"r"), b"NOT_STORED\r\n");
    w.roundtrip(&storage("replace", "s", 3, "", b"MID"), b"STORED\r\n");
    w.roundtrip(&storage("append", "s", 0, "", b">>"), b"STORED\r\n");
    w.roundtrip(&storage("prepend", "s", 0, "", b"<<"), b"STORED\r\n");
    // append/prepend keep the item's flags.
    w.roundtrip(b"get s\r\n", &hit("s", 3, b"<<MID>>"));
    w.roundtrip(&storage("append", "nope", 0, "", b"a"), b"NOT_STORED\r\n");
    w.roundtrip(&storage("prepend", "nope", 0, "", b"p"), b"NOT_STORED\r\n");
    w.roundtrip(&set_req("s", 4, b"plain"), b"STORED\r\n");
    w.roundtrip(b"get s nope\r\n", &hit("s", 4, b"plain"));
    assert_eq!(env.direct().get("s").as_deref(), Some(&b"plain"[..]));
    assert_eq!(env.direct().get("nope"), None);
}

#[test]
fn cas_stored_exists_and_not_found() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(&set_req("c", 0, b"v1"), b"STORED\r\n");
    let cas = backend_cas(&mut direct, "c");
    w.roundtrip(
        &storage("cas", "c", 5, &cas.to_string(), b"v2"),
        b"STORED\r\n",
    );
    w.roundtrip(b"get c\r\n", &hit("c", 5, b"v2"));
    // The old unique is stale now.
    w.roundtrip(
        &storage("cas", "c", 6, &cas.to_string(), b"v3"),
        b"EXISTS\r\n",
    );
    w.roundtrip(&storage("cas", "nope", 0, "12345", b"v"), b"NOT_FOUND\r\n");
    w.roundtrip(b"get c nope\r\n", &hit("c", 5, b"v2"));
}

#[test]
fn delete_found_and_not_found() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&set_req("d", 0, b"v"), b"STORED\r\n");
    w.roundtrip(b"delete d\r\n", b"DELETED\r\n");
    w.roundtrip(b"delete d\r\n", b"NOT_FOUND\r\n");
    w.roundtrip(b"get d\r\n", b"END\r\n");
    // The legacy zero hold time is still accepted.
    w.roundtrip(&set_req("d", 0, b"v"), b"STORED\r\n");
    w.roundtrip(b"delete d 0\r\n", b"DELETED\r\n");
    assert_eq!(env.direct().get("d"), None);
}

#[test]
fn incr_and_decr_including_errors_from_memcached() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&set_req("n", 0, b"10"), b"STORED\r\n");
    w.roundtrip(b"incr n 5\r\n", b"15\r\n");
    w.roundtrip(b"decr n 3\r\n", b"12\r\n");
    // decr stops at zero.
    w.roundtrip(b"decr n 100\r\n", b"0\r\n");
    w.roundtrip(
        b"incr n 18446744073709551615\r\n",
        b"18446744073709551615\r\n",
    );
    w.roundtrip(b"get n\r\n", &hit("n", 0, b"18446744073709551615"));
    w.roundtrip(b"incr nope 1\r\n", b"NOT_FOUND\r\n");
    w.roundtrip(b"decr nope 1\r\n", b"NOT_FOUND\r\n");
    // memcached's own error passes through.
    w.roundtrip(&set_req("txt", 0, b"abc"), b"STORED\r\n");
    let non_numeric = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
    w.roundtrip(b"incr txt 1\r\n", non_numeric);
    w.roundtrip(b"decr txt 1\r\n", non_numeric);
    w.roundtrip(b"get txt\r\n", &hit("txt", 0, b"abc"));
}

#[test]
fn touch_found_and_not_found() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(&set_req("t", 0, b"v"), b"STORED\r\n");
    w.roundtrip(b"touch t 100\r\n", b"TOUCHED\r\n");
    assert_backend_ttl(&mut direct, "t", 100);
    w.roundtrip(b"touch nope 100\r\n", b"NOT_FOUND\r\n");
    w.roundtrip(b"get t\r\n", &hit("t", 0, b"v"));
}

#[test]
fn flush_all_empties_the_backend() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(
        &[set_req("f1", 0, b"a"), set_req("f2", 0, b"b")].concat(),
        b"STORED\r\nSTORED\r\n",
    );
    w.roundtrip(b"flush_all\r\n", b"OK\r\n");
    w.roundtrip(b"get f1 f2\r\n", b"END\r\n");
    assert_eq!(direct.get("f1"), None);
    w.roundtrip(&set_req("f3", 0, b"c"), b"STORED\r\n");
    w.roundtrip(b"flush_all 0\r\n", b"OK\r\n");
    w.roundtrip(b"get f3\r\n", b"END\r\n");
    assert_eq!(direct.get("f3"), None);
}

// ---------------------------------------------------------------------------------------------
// noreply
// ---------------------------------------------------------------------------------------------

#[test]
fn noreply_storage_commands_are_silent_and_take_effect() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    // Each request is followed by a get in the same write: its reply must come first and alone.
    w.roundtrip(
        &[
            storage("set", "nr", 1, "noreply", b"base"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 1, b"base"),
    );
    w.roundtrip(
        &[
            storage("add", "nr", 9, "noreply", b"no"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 1, b"base"),
    );
    w.roundtrip(
        &[
            storage("add", "nr2", 2, "noreply", b"new"),
            b"get nr2\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr2", 2, b"new"),
    );
    w.roundtrip(
        &[
            storage("replace", "nr", 3, "noreply", b"repl"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 3, b"repl"),
    );
    w.roundtrip(
        &[
            storage("append", "nr", 0, "noreply", b">"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 3, b"repl>"),
    );
    w.roundtrip(
        &[
            storage("prepend", "nr", 0, "noreply", b"<"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 3, b"<repl>"),
    );
    let cas = backend_cas(&mut direct, "nr");
    w.roundtrip(
        &[
            storage("cas", "nr", 4, &format!("{cas} noreply"), b"swapped"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 4, b"swapped"),
    );
    // A failing cas is silent too.
    w.roundtrip(
        &[
            storage("cas", "nr", 5, &format!("{cas} noreply"), b"stale"),
            b"get nr\r\n".to_vec(),
        ]
        .concat(),
        &hit("nr", 4, b"swapped"),
    );
    // Several in a row, then two requests that answer.
    let mut req = Vec::new();
    for i in 0..10 {
        req.extend(storage("set", &format!("nrm{i}"), i, "noreply", b"v"));
    }
    req.extend_from_slice(b"get nrm0 nrm9\r\nversion\r\n");
    let want = [
        value_block("nrm0", 0, b"v", None),
        value_block("nrm9", 9, b"v", None),
        format!("END\r\n{PROXY_VERSION}\r\n").into_bytes(),
    ]
    .concat();
    w.roundtrip(&req, &want);
    assert_eq!(direct.get("nr").as_deref(), Some(&b"swapped"[..]));
}

#[test]
fn noreply_delete_incr_decr_touch_flush_verbosity_are_silent_and_take_effect() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(
        &[set_req("n", 0, b"100"), set_req("d", 0, b"x")].concat(),
        b"STORED\r\nSTORED\r\n",
    );
    w.roundtrip(b"incr n 5 noreply\r\nget n\r\n", &hit("n", 0, b"105"));
    // (A decrement that shortens the number is avoided: memcached pads it with spaces, or not,
    // depending on whether another thread holds the item at that moment.)
    w.roundtrip(b"decr n 3 noreply\r\nget n\r\n", &hit("n", 0, b"102"));
    w.roundtrip(b"incr nope 1 noreply\r\nget n\r\n", &hit("n", 0, b"102"));
    w.roundtrip(b"delete d noreply\r\nget d\r\n", b"END\r\n");
    w.roundtrip(b"delete d noreply\r\nget d\r\n", b"END\r\n");
    w.roundtrip(b"delete d 0 noreply\r\nget d\r\n", b"END\r\n");
    w.roundtrip(b"touch n 100 noreply\r\nget n\r\n", &hit("n", 0, b"102"));
    assert_backend_ttl(&mut direct, "n", 100);
    w.roundtrip(b"verbosity 1 noreply\r\nget n\r\n", &hit("n", 0, b"102"));
    w.roundtrip(b"flush_all noreply\r\nget n\r\n", b"END\r\n");
    assert_eq!(direct.get("n"), None);
    w.roundtrip(&set_req("m", 0, b"1"), b"STORED\r\n");
    w.roundtrip(b"flush_all 0 noreply\r\nget m\r\n", b"END\r\n");
    assert_eq!(direct.get("m"), None);
}

// ---------------------------------------------------------------------------------------------
// Answered by the proxy: version, verbosity, stats, quit
// ---------------------------------------------------------------------------------------------

#[test]
fn version_is_answered_by_the_proxy() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(b"version\r\n", format!("{PROXY_VERSION}\r\n").as_bytes());
    // Not memcached's version passed through.
    let backend = env.direct().version();
    assert_ne!(
        backend, PROXY_VERSION,
        "memcached's version equals the crate's: this test cannot tell them apart"
    );
    // In order with forwarded requests.
    w.roundtrip(
        b"get none\r\nversion\r\nget none\r\n",
        format!("END\r\n{PROXY_VERSION}\r\nEND\r\n").as_bytes(),
    );
}

#[test]
fn verbosity_answers_ok() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(b"verbosity 1\r\n", b"OK\r\n");
    w.roundtrip(b"verbosity 0\r\n", b"OK\r\n");
    w.roundtrip(b"verbosity 1 noreply\r\nget x\r\n", b"END\r\n");
}

#[test]
fn verbosity_noreply_without_a_level_is_silent_like_memcached() {
    // memcached reads `verbosity noreply` as level 0 with noreply and answers nothing
    // (memccapable's verbosity test relies on it).
    let env = Env::start();
    let req = b"verbosity noreply\r\nget x\r\n";
    Wire::connect(&env.mc.addr()).roundtrip(req, b"END\r\n");
    env.wire().roundtrip(req, b"END\r\n");
}

#[test]
fn stats_reports_the_proxys_own_counters() {
    let env = Env::start();
    let mut w = env.wire();
    let before = proxy_stats(&mut w);
    assert_eq!(
        before.get("pid").map(String::as_str),
        Some(env.bifrost.pid().to_string().as_str()),
        "stats must be the proxy's (STAT pid): {before:?}"
    );
    assert_eq!(
        before.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    for name in [
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "curr_connections",
    ] {
        stat(&before, name);
    }

    w.roundtrip(
        &[set_req("s1", 0, b"a"), set_req("s2", 0, b"b")].concat(),
        b"STORED\r\nSTORED\r\n",
    );
    w.roundtrip(
        b"get s1 s2 nope\r\nget nope2\r\n",
        &[
            value_block("s1", 0, b"a", None),
            value_block("s2", 0, b"b", None),
            b"END\r\nEND\r\n".to_vec(),
        ]
        .concat(),
    );
    let after = proxy_stats(&mut w);
    let delta = |name: &str| stat(&after, name) - stat(&before, name);
    let deltas = [
        ("cmd_set", delta("cmd_set")),
        ("cmd_get", delta("cmd_get")),
        ("get_hits", delta("get_hits")),
        ("get_misses", delta("get_misses")),
    ];
    assert_eq!(
        deltas,
        [
            ("cmd_set", 2),
            ("cmd_get", 4),
            ("get_hits", 2),
            ("get_misses", 2)
        ],
        "counter deltas; before {before:?}\nafter {after:?}"
    );

    // curr_connections follows clients coming and going. The harness's readiness probe may
    // still be counted for a moment, so first wait until this client is the only one.
    wait_until(
        Duration::from_secs(5),
        "curr_connections is 1 (only this client)",
        || stat(&proxy_stats(&mut w), "curr_connections") == 1,
    );
    let mut other = env.wire();
    other.roundtrip(b"", b"");
    let with_other = proxy_stats(&mut w);
    assert_eq!(
        stat(&with_other, "curr_connections"),
        2,
        "a second client is connected: {with_other:?}"
    );
    drop(other);
    wait_until(
        Duration::from_secs(5),
        "curr_connections drops back to 1 after the second client leaves",
        || stat(&proxy_stats(&mut w), "curr_connections") == 1,
    );
}

#[test]
fn quit_closes_the_connection() {
    let env = Env::start();
    let mut w = env.wire();
    w.send(b"quit\r\n");
    w.expect_closed(b"quit\r\n");
}

#[test]
fn quit_in_a_pipeline_answers_what_came_before_and_runs_nothing_after() {
    let env = Env::start();
    let pipeline = |suffix: &str| {
        [
            set_req(&format!("before{suffix}"), 0, b"1"),
            format!("get before{suffix}\r\nquit\r\n").into_bytes(),
            set_req(&format!("after{suffix}"), 0, b"2"),
            format!("get before{suffix}\r\n").into_bytes(),
        ]
        .concat()
    };
    // memcached itself stops reading at quit (checked here so the expectation is its own).
    let mut straight = Wire::connect(&env.mc.addr());
    let req = pipeline("-direct");
    straight.send(&req);
    straight.expect(
        &req,
        &[&b"STORED\r\n"[..], &hit("before-direct", 0, b"1")].concat(),
    );
    straight.expect_closed(&req);
    assert_eq!(
        env.direct().get("after-direct"),
        None,
        "memcached ran a request after quit"
    );

    let mut w = env.wire();
    let req = pipeline("");
    w.send(&req);
    w.expect(
        &req,
        &[&b"STORED\r\n"[..], &hit("before", 0, b"1")].concat(),
    );
    w.expect_closed(&req);
    // Another client on the same (single) backend connection is ordered after anything the
    // proxy forwarded.
    let mut other = env.wire();
    other.roundtrip(b"get before after\r\n", &hit("before", 0, b"1"));
    assert_eq!(env.direct().get("after"), None);
}

// ---------------------------------------------------------------------------------------------
// Meta commands
// ---------------------------------------------------------------------------------------------

#[test]
fn meta_get_with_flags() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(&set_req("foo", 5, b"bar"), b"STORED\r\n");
    let cas = backend_cas(&mut direct, "foo");
    w.roundtrip(
        b"mg foo v f t k c s Oabc\r\n",
        format!("VA 3 f5 t-1 kfoo c{cas} s3 Oabc\r\nbar\r\n").as_bytes(),
    );
    w.roundtrip(b"mg foo\r\n", b"HD\r\n");
    w.roundtrip(b"mg foo k f\r\n", b"HD kfoo f5\r\n");
    w.roundtrip(b"mg foo v\r\n", b"VA 3\r\nbar\r\n");
    w.roundtrip(b"mg missing v Oxx\r\n", b"EN Oxx\r\n");
    w.roundtrip(b"mg missing\r\n", b"EN\r\n");
    // A TTL set through the proxy shows in t.
    w.roundtrip(b"touch foo 100\r\n", b"TOUCHED\r\n");
    w.send(b"mg foo t v\r\n");
    let line = w.read_line();
    assert!(
        line == b"VA 3 t100\r\n" || line == b"VA 3 t99\r\n",
        "mg foo t v: {}",
        esc(&line)
    );
    w.expect(b"mg foo t v\r\n", b"bar\r\n");
}

#[test]
fn meta_set_flags_and_modes() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(b"ms mk 2 T0 F7 I\r\nhi\r\n", b"HD\r\n");
    w.roundtrip(b"mg mk v f t\r\n", b"VA 2 f7 t-1\r\nhi\r\n");
    assert_eq!(direct.get("mk").as_deref(), Some(&b"hi"[..]));
    w.roundtrip(b"ms mk 2 T100 F8\r\nho\r\n", b"HD\r\n");
    assert_backend_ttl(&mut direct, "mk", 100);
    w.roundtrip(b"ms mk 2 T0 F8 MS\r\nhi\r\n", b"HD\r\n");
    // Append, prepend, add, replace.
    w.roundtrip(b"ms mk 2 MA\r\nzz\r\n", b"HD\r\n");
    w.roundtrip(b"ms mk 1 MP\r\nA\r\n", b"HD\r\n");
    w.roundtrip(b"mg mk v f\r\n", b"VA 5 f8\r\nAhizz\r\n");
    w.roundtrip(b"ms new 1 ME\r\nx\r\n", b"HD\r\n");
    w.roundtrip(b"ms new 1 ME\r\ny\r\n", b"NS\r\n");
    w.roundtrip(b"ms absent 1 MR\r\nx\r\n", b"NS\r\n");
    w.roundtrip(b"ms new 1 MR\r\nz\r\n", b"HD\r\n");
    w.roundtrip(b"mg new v\r\nmg absent v\r\n", b"VA 1\r\nz\r\nEN\r\n");
    // Returned cas, compare-and-swap.
    let cas = backend_cas(&mut direct, "new");
    w.roundtrip(b"mg new c\r\n", format!("HD c{cas}\r\n").as_bytes());
    w.roundtrip(
        format!("ms new 1 C{} k O9\r\nw\r\n", cas + 1000).as_bytes(),
        b"EX knew O9\r\n",
    );
    w.roundtrip(format!("ms new 1 C{cas}\r\nw\r\n").as_bytes(), b"HD\r\n");
    w.roundtrip(b"mg new v\r\n", b"VA 1\r\nw\r\n");
    // A mode memcached refuses is refused before it is sent, and the data block goes with it.
    w.roundtrip(
        b"ms mk 2 MZ\r\nab\r\nmg mk v\r\n",
        b"CLIENT_ERROR bad command line format\r\nVA 5\r\nAhizz\r\n",
    );
}

#[test]
fn meta_delete_and_quiet_delete() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&set_req("md1", 0, b"v"), b"STORED\r\n");
    w.roundtrip(b"md md1\r\n", b"HD\r\n");
    w.roundtrip(b"md md1\r\n", b"NF\r\n");
    w.roundtrip(b"md md1 k O5\r\n", b"NF kmd1 O5\r\n");
    w.roundtrip(&set_req("md2", 0, b"v"), b"STORED\r\n");
    // q hides the success.
    w.roundtrip(b"md md2 q\r\nmg md2 v\r\n", b"EN\r\n");
    assert_eq!(env.direct().get("md2"), None);
}

#[test]
fn meta_arithmetic_flags_and_modes() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(b"ms num 1\r\n5\r\n", b"HD\r\n");
    w.roundtrip(b"ma num\r\n", b"HD\r\n");
    w.roundtrip(b"ma num v\r\n", b"VA 1\r\n7\r\n");
    w.roundtrip(b"ma num MD v\r\n", b"VA 1\r\n6\r\n");
    w.roundtrip(b"ma num M- D2 v\r\n", b"VA 1\r\n4\r\n");
    w.roundtrip(b"ma num MI D10 v\r\n", b"VA 2\r\n14\r\n");
    w.roundtrip(b"ma num M+ D1 v\r\n", b"VA 2\r\n15\r\n");
    w.roundtrip(b"ma num MD D100 v\r\n", b"VA 1\r\n0\r\n");
    // Not found, then autovivified with N and an initial value J.
    w.roundtrip(b"ma viv v\r\n", b"NF\r\n");
    w.roundtrip(b"ma viv N0 J13 v\r\n", b"VA 2\r\n13\r\n");
    w.roundtrip(b"ma viv N0 J13 v\r\n", b"VA 2\r\n14\r\n");
    // Quiet hides the success.
    w.roundtrip(b"ma viv q\r\nmg viv v\r\n", b"VA 2\r\n15\r\n");
    // memcached's errors pass through.
    w.roundtrip(
        b"ma num MA\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    );
    w.roundtrip(&set_req("txt", 0, b"abc"), b"STORED\r\n");
    w.roundtrip(
        b"ma txt\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    assert_eq!(env.direct().get("viv").as_deref(), Some(&b"15"[..]));
}

#[test]
fn meta_debug_and_noop_in_order() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    w.roundtrip(&set_req("dbg", 0, b"value"), b"STORED\r\n");
    // `me` describes the item; compare with memcached's own answer, field by field (la, the
    // seconds since the last access, may tick in between).
    w.send(b"me dbg\r\n");
    let via_proxy = w.read_line();
    let straight = direct.request(b"me dbg\r\n");
    let fields = |line: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(line)
            .split(' ')
            .filter(|f| !f.starts_with("la="))
            .map(str::to_string)
            .collect()
    };
    assert!(
        via_proxy.starts_with(b"ME dbg exp=-1 la=") && fields(&via_proxy) == fields(&straight),
        "me dbg: proxy {} memcached {}",
        esc(&via_proxy),
        esc(&straight)
    );
    w.roundtrip(b"me nope\r\n", b"EN\r\n");
    // mn is answered in its place among forwarded requests.
    w.roundtrip(
        b"mn\r\nmg dbg v\r\nmn\r\nmg nope v\r\nmn\r\nmn\r\n",
        b"MN\r\nVA 5\r\nvalue\r\nMN\r\nEN\r\nMN\r\nMN\r\n",
    );
}

#[test]
fn meta_quiet_mode_hides_misses_and_shows_hits() {
    let env = Env::start();
    let mut w = env.wire();
    w.roundtrip(&set_req("qhit", 3, b"bar"), b"STORED\r\n");
    w.roundtrip(
        b"mg qmiss1 v q\r\nmg qhit v q k f\r\nmg qmiss2 v q k\r\nmg qhit q\r\n",
        b"VA 3 kqhit f3\r\nbar\r\nHD\r\n",
    );
    // Only misses: just the MN.
    w.roundtrip(b"mg qmiss1 v q\r\nmg qmiss2 v q O1\r\n", b"");
    // Quiet sets are silent, and stored.
    w.roundtrip(
        b"ms qs 1 q\r\nA\r\nms qs2 2 q T0\r\nBB\r\nmg qs v q\r\nmg qs2 v\r\n",
        b"VA 1\r\nA\r\nVA 2\r\nBB\r\n",
    );
    // Errors are not hidden.
    w.roundtrip(
        b"ms qs 1 q MZ\r\nx\r\nmg qs v q\r\n",
        b"CLIENT_ERROR bad command line format\r\nVA 1\r\nA\r\n",
    );
}

#[test]
fn meta_base64_keys() {
    let env = Env::start();
    let mut direct = env.direct();
    let mut w = env.wire();
    // "foobar" is Zm9vYmFy.
    w.roundtrip(b"ms Zm9vYmFy 3 b F4\r\nabc\r\n", b"HD\r\n");
    w.roundtrip(
        b"mg Zm9vYmFy b v k f\r\n",
        b"VA 3 kZm9vYmFy b f4\r\nabc\r\n",
    );
    // memcached decoded it: the classic key is the plain one.
    w.roundtrip(b"get foobar\r\n", &hit("foobar", 4, b"abc"));
    assert_eq!(direct.get("foobar").as_deref(), Some(&b"abc"[..]));
    // A key a classic command cannot name: "a b\r\n" is YSBiDQo=.
    w.roundtrip(b"ms YSBiDQo= 2 b\r\nhi\r\n", b"HD\r\n");
    w.roundtrip(b"mg YSBiDQo= b v\r\n", b"VA 2\r\nhi\r\n");
    direct.send(b"mg YSBiDQo= b v\r\n");
    assert_eq!(
        [direct.read_line_raw(), direct.read_line_raw()].concat(),
        b"VA 2\r\nhi\r\n",
        "the same key asked straight on memcached"
    );
    w.roundtrip(b"md YSBiDQo= b\r\n", b"HD\r\n");
    w.roundtrip(b"mg YSBiDQo= b v\r\n", b"EN\r\n");
}
