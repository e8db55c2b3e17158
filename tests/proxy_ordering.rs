//! Reply ordering through bifrost (blind_forward) to one real memcached: long pipelines of mixed
//! requests written in one go, byte by byte and in random chunks, and many concurrent clients.
//!
//! A pipeline is generated together with the exact reply stream memcached gives for it (a model
//! of the cache is kept alongside), so the whole stream is compared byte for byte and a failure
//! names the request whose reply went wrong.

mod common;

use common::{Behavior, Bifrost, BlindForward, Client, FakeBackend, Item, Memcached, Rng};
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

const PROXY_VERSION: &str = concat!("VERSION ", env!("CARGO_PKG_VERSION"));

// ---------------------------------------------------------------------------------------------
// Pipelines and their expected replies
// ---------------------------------------------------------------------------------------------

/// One request of a pipeline: where its bytes and its expected reply sit in the streams.
struct Entry {
    request: Range<usize>,
    reply: Range<usize>,
}

/// A request stream and the reply stream memcached (through the proxy) must send for it.
#[derive(Default)]
struct Pipeline {
    requests: Vec<u8>,
    replies: Vec<u8>,
    entries: Vec<Entry>,
}

impl Pipeline {
    fn push(&mut self, request: &[u8], reply: &[u8]) {
        let req_start = self.requests.len();
        let reply_start = self.replies.len();
        self.requests.extend_from_slice(request);
        self.replies.extend_from_slice(reply);
        self.entries.push(Entry {
            request: req_start..self.requests.len(),
            reply: reply_start..self.replies.len(),
        });
    }

    /// Panics with the requests around the first difference if `got` is not the reply stream.
    fn check(&self, what: &str, got: &[u8], stopped: Option<String>) {
        if got == self.replies.as_slice() {
            return;
        }
        let want = &self.replies;
        let at = want
            .iter()
            .zip(got)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(got.len()));
        // The first request whose expected reply is not entirely before the difference.
        let index = self
            .entries
            .partition_point(|e| e.reply.end <= at)
            .min(self.entries.len() - 1);
        let mut msg = format!(
            "{what}: wrong reply stream ({} requests, {} request bytes)\n  \
             expected {} reply bytes, received {}; first difference at reply byte {at}, in the \
             reply to request #{index}\n",
            self.entries.len(),
            self.requests.len(),
            want.len(),
            got.len(),
        );
        if let Some(why) = stopped {
            msg.push_str(&format!("  (reading stopped: {why})\n"));
        }
        for i in index.saturating_sub(3)..(index + 2).min(self.entries.len()) {
            let e = &self.entries[i];
            msg.push_str(&format!(
                "  #{i}{} request {} -> expected {}\n",
                if i == index { " <<<" } else { "" },
                esc(&self.requests[e.request.clone()]),
                esc(&want[e.reply.clone()]),
            ));
        }
        let from = self.entries[index.saturating_sub(3)]
            .reply
            .start
            .min(got.len());
        msg.push_str(&format!(
            "  received from reply byte {from}: {}",
            esc(&got[from..(at + 200).min(got.len())])
        ));
        panic!("{msg}");
    }
}

/// The model of the cache that predicts memcached's replies.
#[derive(Default)]
struct Model {
    items: HashMap<String, (u32, Vec<u8>)>,
    /// Keys whose stored bytes are not known exactly (see [`Model::arith`]); never read back
    /// until set again.
    uncertain: HashSet<String>,
}

impl Model {
    fn retrieval_block(&self, key: &str) -> Vec<u8> {
        match self.items.get(key) {
            Some((flags, value)) => {
                let mut out = format!("VALUE {key} {flags} {}\r\n", value.len()).into_bytes();
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
                out
            }
            None => Vec::new(),
        }
    }

    fn store(&mut self, key: String, flags: u32, value: Vec<u8>) {
        self.uncertain.remove(&key);
        self.items.insert(key, (flags, value));
    }

    fn remove(&mut self, key: &str) -> bool {
        self.uncertain.remove(key);
        self.items.remove(key).is_some()
    }

    /// A key whose retrieval reply is known exactly.
    fn readable<'a>(&self, rng: &mut Rng, keys: &[&'a String]) -> &'a String {
        loop {
            let key = *rng.pick(keys);
            if !self.uncertain.contains(key.as_str()) {
                return key;
            }
        }
    }

    /// memcached's incr/decr. The reply is the new number. A shorter number is usually
    /// rewritten in place padded with spaces ("100" - 5 = "95 "), but not when another thread
    /// holds the item at that moment (then it is stored unpadded), so such a key's bytes are
    /// uncertain until it is set again.
    fn arith(&mut self, key: &str, incr: bool, delta: u64) -> Vec<u8> {
        let Some((_, value)) = self.items.get_mut(key) else {
            return b"NOT_FOUND\r\n".to_vec();
        };
        let old: u64 = String::from_utf8_lossy(value)
            .trim_end()
            .parse()
            .expect("numeric keys hold numbers");
        let new = if incr {
            old.wrapping_add(delta)
        } else {
            old.saturating_sub(delta)
        };
        let digits = new.to_string().into_bytes();
        let reply = [&digits[..], b"\r\n"].concat();
        if digits.len() < value.len() {
            self.uncertain.insert(key.to_string());
        }
        *value = digits;
        reply
    }
}

/// `n` random requests of every kind (sets, noreply sets, gets and multi-gets, deletes,
/// incr/decr, mg in several forms, quiet mg, mn, version) on a few keys under `prefix`, with
/// the replies memcached gives for them; `version` is the reply line to `version`.
fn mixed_pipeline(seed: u64, n: usize, prefix: &str, version: &str) -> Pipeline {
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut p = Pipeline::default();
    let text_keys: Vec<String> = (0..12).map(|i| format!("{prefix}:t{i}")).collect();
    let num_keys: Vec<String> = (0..4).map(|i| format!("{prefix}:n{i}")).collect();
    let all_keys: Vec<&String> = text_keys.iter().chain(&num_keys).collect();
    const ALPHABET: &[u8] = b"abcXYZ019 \r\n-";
    for _ in 0..n {
        let roll = rng.below(100);
        match roll {
            // set / set noreply of a text key
            0..=21 => {
                let key = rng.pick(&text_keys).clone();
                let flags = rng.below(70_000) as u32;
                let len = rng.pick(&[0, 1, 5, 20, 60, 300]) + rng.below(4);
                let value: Vec<u8> = (0..len).map(|_| *rng.pick(ALPHABET)).collect();
                let noreply = roll >= 15;
                let mut req = format!(
                    "set {key} {flags} 0 {len}{}\r\n",
                    if noreply { " noreply" } else { "" }
                )
                .into_bytes();
                req.extend_from_slice(&value);
                req.extend_from_slice(b"\r\n");
                model.store(key, flags, value);
                p.push(&req, if noreply { b"" } else { b"STORED\r\n" });
            }
            // set a numeric key
            22..=25 => {
                let key = rng.pick(&num_keys).clone();
                let value = rng.below(1000).to_string().into_bytes();
                let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
                req.extend_from_slice(&value);
                req.extend_from_slice(b"\r\n");
                model.store(key, 0, value);
                p.push(&req, b"STORED\r\n");
            }
            // get one key
            26..=39 => {
                let key = model.readable(&mut rng, &all_keys);
                let reply = [model.retrieval_block(key), b"END\r\n".to_vec()].concat();
                p.push(format!("get {key}\r\n").as_bytes(), &reply);
            }
            // multi-get, keys may repeat
            40..=47 => {
                let keys: Vec<&String> = (0..1 + rng.below(5))
                    .map(|_| model.readable(&mut rng, &all_keys))
                    .collect();
                let mut reply: Vec<u8> =
                    keys.iter().flat_map(|k| model.retrieval_block(k)).collect();
                reply.extend_from_slice(b"END\r\n");
                let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
                p.push(format!("get {}\r\n", keys.join(" ")).as_bytes(), &reply);
            }
            // delete / delete noreply
            48..=54 => {
                let key = *rng.pick(&all_keys);
                let found = model.remove(key);
                if roll >= 53 {
                    p.push(format!("delete {key} noreply\r\n").as_bytes(), b"");
                } else {
                    let reply: &[u8] = if found {
                        b"DELETED\r\n"
                    } else {
                        b"NOT_FOUND\r\n"
                    };
                    p.push(format!("delete {key}\r\n").as_bytes(), reply);
                }
            }
            // incr / decr
            55..=64 => {
                let key = rng.pick(&num_keys).clone();
                let incr = roll <= 60;
                let delta = rng.pick(&[0, 1, 7, 500, 123_456]);
                let reply = model.arith(&key, incr, *delta as u64);
                let cmd = if incr { "incr" } else { "decr" };
                p.push(format!("{cmd} {key} {delta}\r\n").as_bytes(), &reply);
            }
            // mg with a value, with k/f/s flags, or quiet
            65..=79 => {
                let key = model.readable(&mut rng, &all_keys);
                let (flags_req, quiet) = match roll % 3 {
                    0 => ("v", false),
                    1 => ("s v f k", false),
                    _ => ("v q", true),
                };
                let reply = match model.items.get(key.as_str()) {
                    None if quiet => Vec::new(),
                    // A miss still echoes the key flag.
                    None if flags_req.ends_with('k') => format!("EN k{key}\r\n").into_bytes(),
                    None => b"EN\r\n".to_vec(),
                    Some((flags, value)) => {
                        let mut head = format!("VA {}", value.len());
                        if flags_req.starts_with('s') {
                            head.push_str(&format!(" s{} f{flags} k{key}", value.len()));
                        }
                        let mut out = format!("{head}\r\n").into_bytes();
                        out.extend_from_slice(value);
                        out.extend_from_slice(b"\r\n");
                        out
                    }
                };
                p.push(format!("mg {key} {flags_req}\r\n").as_bytes(), &reply);
            }
            80..=89 => p.push(b"mn\r\n", b"MN\r\n"),
            _ => p.push(b"version\r\n", format!("{version}\r\n").as_bytes()),
        }
    }
    // End with a request that answers, so the end of the stream is known.
    p.push(b"mn\r\n", b"MN\r\n");
    p
}

// ---------------------------------------------------------------------------------------------
// Sending and receiving
// ---------------------------------------------------------------------------------------------

/// Bytes escaped for a message, cut after 200 bytes.
fn esc(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("\"{}\"", cut.escape_ascii());
    if bytes.len() > MAX {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// Reads until `want.len()` bytes arrived, the stream diverges from `want` (then a little more
/// for context), the peer closes, or a read times out (the harness's 5 s). Returns what arrived
/// and, if reading stopped short, why.
fn collect(stream: &mut TcpStream, want: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut got = Vec::with_capacity(want.len());
    let mut buf = vec![0u8; 64 * 1024];
    let mut diverged = false;
    while got.len() < want.len() {
        if !diverged && !want.starts_with(&got) {
            // Gather a little more for the message, then stop.
            diverged = true;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        }
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some("the proxy closed the connection".into())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if diverged => return (got, Some(format!("diverged; then {e}"))),
            Err(e) => return (got, Some(format!("read failed: {e}"))),
        }
    }
    let _ = stream.set_read_timeout(Some(common::IO_TIMEOUT));
    (got, None)
}

/// How a pipeline's bytes are written.
#[derive(Clone, Copy, Debug)]
enum Writes {
    /// One `write_all` of everything.
    AllAtOnce,
    /// One byte per write.
    ByteByByte,
    /// Writes of 1..=max bytes, sizes from the seed.
    RandomChunks { seed: u64, max: usize },
}

/// Sends the pipeline to `addr` (the proxy, or memcached itself) from a writer thread (so a
/// full socket buffer cannot deadlock the test) while reading the replies, and checks them.
fn run_pipeline(addr: &str, p: &Pipeline, writes: Writes, what: &str) {
    let client = Client::connect(addr);
    let mut reader = client.stream().try_clone().expect("clone the socket");
    let mut writer = client.stream().try_clone().expect("clone the socket");
    let (got, stopped) = thread::scope(|s| {
        let sender = s.spawn(move || -> std::io::Result<usize> {
            let bytes = &p.requests;
            let mut writes_done = 0;
            match writes {
                Writes::AllAtOnce => {
                    writer.write_all(bytes)?;
                    writes_done = 1;
                }
                Writes::ByteByByte => {
                    for b in bytes.chunks(1) {
                        writer.write_all(b)?;
                        writes_done += 1;
                    }
                }
                Writes::RandomChunks { seed, max } => {
                    let mut rng = Rng::new(seed);
                    let mut rest = &bytes[..];
                    while !rest.is_empty() {
                        let n = (1 + rng.below(max)).min(rest.len());
                        writer.write_all(&rest[..n])?;
                        rest = &rest[n..];
                        writes_done += 1;
                    }
                }
            }
            Ok(writes_done)
        });
        let result = collect(&mut reader, &p.replies);
        let writes_done = sender.join().expect("writer thread panicked");
        if let Err(e) = writes_done {
            panic!("{what}: writing the pipeline failed: {e}");
        }
        result
    });
    p.check(what, &got, stopped);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_generated_replies_are_memcacheds_own() {
    // The model behind every pipeline test, checked straight against memcached: if this fails,
    // the model (or memcached's behaviour) changed, not the proxy.
    let mc = Memcached::start();
    let seed = 0x5eed_0001;
    let version = mc.client().version();
    let p = mixed_pipeline(seed, 1000, "model", &version);
    run_pipeline(
        &mc.addr(),
        &p,
        Writes::AllAtOnce,
        &format!("straight to memcached (seed {seed:#x})"),
    );
}

#[test]
fn thousand_mixed_requests_written_in_one_go_answer_in_order() {
    let mc = Memcached::start();
    let bifrost = Bifrost::blind_forward(&mc);
    let seed = 0x5eed_0001;
    let p = mixed_pipeline(seed, 1000, "one-go", PROXY_VERSION);
    run_pipeline(
        &bifrost.addr(),
        &p,
        Writes::AllAtOnce,
        &format!("1000 requests in one write (seed {seed:#x})"),
    );
}

#[test]
fn pipeline_written_one_byte_at_a_time_answers_in_order() {
    let mc = Memcached::start();
    let bifrost = Bifrost::blind_forward(&mc);
    let seed = 0x5eed_0002;
    let p = mixed_pipeline(seed, 40, "bytewise", PROXY_VERSION);
    assert!(
        p.requests.len() >= 300,
        "only {} request bytes; want a few hundred",
        p.requests.len()
    );
    run_pipeline(
        &bifrost.addr(),
        &p,
        Writes::ByteByByte,
        &format!("{} bytes one per write (seed {seed:#x})", p.requests.len()),
    );
}

#[test]
fn pipeline_written_in_random_chunks_answers_in_order() {
    let mc = Memcached::start();
    let bifrost = Bifrost::blind_forward(&mc);
    for (seed, max) in [(0x5eed_0003, 7), (0x5eed_0004, 100), (0x5eed_0005, 3000)] {
        let p = mixed_pipeline(seed, 1000, &format!("chunks{seed:x}"), PROXY_VERSION);
        run_pipeline(
            &bifrost.addr(),
            &p,
            Writes::RandomChunks { seed, max },
            &format!("1000 requests in writes of 1..={max} bytes (seed {seed:#x})"),
        );
    }
}

/// `clients` threads, each with its own connection, doing `rounds` of set + get (pipelined in
/// one write) on its own keys with values that name the client and the round.
fn concurrent_clients_without_cross_talk(bifrost: &Bifrost, clients: usize, rounds: usize) {
    let start = Barrier::new(clients);
    thread::scope(|s| {
        for id in 0..clients {
            let start = &start;
            thread::Builder::new()
                .name(format!("client-{id}"))
                .spawn_scoped(s, move || {
                    let mut c = bifrost.client();
                    start.wait();
                    for round in 0..rounds {
                        let key = format!("cc:{id}:{}", round % 16);
                        let value = format!("client {id} round {round};").repeat(1 + round % 7);
                        let mut req =
                            format!("set {key} {id} 0 {}\r\n{value}\r\n", value.len()).into_bytes();
                        req.extend_from_slice(format!("get {key}\r\n").as_bytes());
                        c.send(&req);
                        let stored = c.read_line();
                        let items = c.read_values();
                        let want = Item {
                            key: key.clone(),
                            flags: id as u32,
                            data: value.into_bytes(),
                            cas: None,
                        };
                        assert!(
                            stored == "STORED" && items.as_ref() == Ok(&vec![want.clone()]),
                            "client {id} round {round}: set + get {key}: got {stored:?} then \
                             {items:?}; expected STORED then {want:?}"
                        );
                    }
                })
                .expect("spawn a client thread");
        }
    });
}

#[test]
fn fifty_concurrent_clients_get_their_own_replies() {
    let mc = Memcached::start();
    let bifrost = Bifrost::blind_forward(&mc);
    concurrent_clients_without_cross_talk(&bifrost, 50, 200);
}

#[test]
fn fifty_concurrent_clients_get_their_own_replies_with_two_workers() {
    let mc = Memcached::builder().threads(2).start();
    let bifrost = BlindForward::new(&mc.addr()).workers(2).start();
    concurrent_clients_without_cross_talk(&bifrost, 50, 200);
}

/// A `noreply` request's exchange finishes in the background: the client gets nothing for it
/// either way, so a later reply is not held back until the server has answered it. With a
/// server that takes 800 ms per request, `version` (answered by the proxy) after a noreply set
/// comes back at once; the set still reaches the server, and a later `get` still waits its
/// turn behind it on the server's connection.
#[test]
fn a_noreply_request_does_not_hold_back_later_replies() {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::from_millis(800)));
    let b = BlindForward::new(&fake.addr()).timeout("5s").start();
    let mut c = b.client();
    let started = Instant::now();
    c.send(b"set k 0 0 1 noreply\r\nx\r\nversion\r\n");
    let line = c.read_line();
    let took = started.elapsed();
    assert!(line.starts_with("VERSION "), "version answered {line:?}");
    assert!(
        took < Duration::from_millis(500),
        "version waited {took:?} behind a noreply request"
    );
    fake.wait_for_bytes(
        b"set k 0 0 1 noreply\r\nx\r\n".len(),
        Duration::from_secs(5),
    );
    assert!(
        String::from_utf8_lossy(&fake.received()).starts_with("set k 0 0 1 noreply\r\nx\r\n"),
        "the noreply set reached the server first"
    );
    c.send(b"get k\r\n");
    assert_eq!(
        c.read_line(),
        "END",
        "the always-miss server's answer to get"
    );
}

/// A get of more keys than one window (`multiget_window: 2`) sends its later windows after the
/// client's next requests were read: a `set`, a `delete` and an `incr` of keys of its last
/// window, pipelined behind it in one write, must not be seen by it (memcached runs one
/// connection's requests in order). Before the proxy held such writes until the get's last
/// window was out, memcached ran them before that window, and the get answered the new values.
#[test]
fn writes_pipelined_behind_a_multi_window_get_are_not_seen_by_its_later_windows() {
    let mc = Memcached::start();
    let bifrost = BlindForward::new(&mc.addr())
        .listener_option("multiget_window: 2")
        .start();
    let mut direct = mc.client();
    let keys: Vec<String> = (0..8).map(|i| format!("window-{i}")).collect();
    for key in &keys {
        assert_eq!(direct.set(key, b"old", 0, 0), "STORED");
    }
    assert_eq!(direct.set("window-n", b"5", 0, 0), "STORED");
    let mut client = bifrost.client();
    let mut pipeline = format!("get {} window-n\r\n", keys.join(" ")).into_bytes();
    pipeline
        .extend_from_slice(b"set window-7 0 0 3\r\nnew\r\ndelete window-6\r\nincr window-n 1\r\n");
    pipeline.extend_from_slice(b"get window-6 window-7 window-n\r\n");
    client.send(&pipeline);
    let mut want = Vec::new();
    for key in &keys {
        want.extend_from_slice(format!("VALUE {key} 0 3\r\nold\r\n").as_bytes());
    }
    want.extend_from_slice(b"VALUE window-n 0 1\r\n5\r\nEND\r\n");
    let got = client.read_reply_retrieval();
    assert_eq!(
        esc(&got),
        esc(&want),
        "the multi-window get sees none of the later writes"
    );
    assert_eq!(client.read_line(), "STORED");
    assert_eq!(client.read_line(), "DELETED");
    assert_eq!(client.read_line(), "6");
    let after = client.read_reply_retrieval();
    let want_after = b"VALUE window-7 0 3\r\nnew\r\nVALUE window-n 0 1\r\n6\r\nEND\r\n";
    assert_eq!(
        esc(&after),
        esc(want_after),
        "the get after them sees them all"
    );
}
