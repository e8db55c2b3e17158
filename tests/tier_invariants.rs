//! The proxy's core invariant on the routes that send a key to several servers, checked end to
//! end under concurrency: every request is answered exactly once, in order, with its own reply,
//! and the data is exactly what a model of the client's own writes says.
//!
//! Four real memcached servers behind a two-worker bifrost: route `p` (`p:*`) is `parallel`
//! over pools `A` and `B` (`writes: all`), route `w` (`w:*`) is `warm_first` with warm `W`,
//! cold `C` and `write_on_miss: {ttl: 300}`. One server of each route (which one depends on the
//! seed) sits behind a [`Relay`] whose reply delay a background thread changes at random
//! (0..=30 ms, every 50 ms), so replies come late and the servers of one key answer in any
//! order; the backend timeout (2 s) is far above that, so nothing times out.
//!
//! Several client threads each own their keys (every key embeds the client's id), so each
//! client's model of its keys is exact: no one else writes them. They send random pipelines
//! (1 to 20 requests, plus the `mn` after a last quiet one; in one write or in random chunks)
//! of set (random flags, a value that embeds the key and a version; also `noreply`), get (one
//! key, or several of both routes mixed, repeats and never-set keys included), gets, delete
//! (also `noreply`), mg with `v f` (and at random `k`, `O<opaque>`, `q` followed by `mn`), ms,
//! md (also quiet), touch, incr on numeric values (and on a string, which memcached refuses),
//! `mn` and `version`. The model is sequential, as memcached is on one connection: each request
//! sees the effect of every request the client sent before it, and of none sent after it (a
//! noreply write included: the proxy queues it ahead of the client's later requests; under
//! warm_first the warm copy of a write goes out at once, so the client reads its own writes; an
//! incr drops the warm copy and the next read finds the cold value). From it the exact reply of every request is computed and
//! compared byte for byte (a cas token, which is each server's own, is the only wildcard);
//! replies are read by their structure with a deadline, and after each pipeline nothing more may
//! arrive for a short grace period.
//!
//! What the model cannot know, it marks unknown, and only the shape of a reply about such a key
//! is checked until the key is written again:
//! - The documented limit of `write_on_miss` (docs/configuration.md, warm_first, "Limits"): a
//!   warm miss read through to cold queues an `add` of the cold value into warm, and a delete of
//!   the key racing it (`delete`, `md`, or the warm invalidation of an `incr`) can leave that
//!   older value in warm. So a warm_first key read by a plain read and then deleted or
//!   incremented in the same pipeline is unknown until its next `set` or `ms` (or a delete
//!   in a later pipeline, when that write-back has long gone out).
//! - A client that drops its connection mid-pipeline (1 pipeline in 30; FIN or RST) before
//!   reading every reply cannot know which of the unread requests reached the servers, or when
//!   (requests beyond the client's in-flight window go out only as earlier ones are answered,
//!   possibly after the client reconnected to the other worker). Every key that pipeline touched
//!   is therefore retired: its slot takes a new name (a new generation), which starts absent, so
//!   nothing the old connection still does can reach a key the model checks.
//!
//! At the end the proxy answers `version` and `stats`, lets go of every client connection, and
//! no write-back failed (`effect:write_on_miss.w:failed` is 0).
//!
//! The run is seeded: the seed is printed at the start and named on failure; `TIER_SEED=<n>`
//! replays the same pipelines (timing still varies from run to run).

mod common;

use common::tiers::{effect, effects, pool_yaml, start_proxy};
use common::wire::{token, Request, Wire};
use common::{show, wait_until, Client, Memcached, Relay, Rng};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Proxy worker threads.
const WORKERS: usize = 2;
/// Concurrent client threads, each with its own keys.
const CLIENTS: usize = 6;
/// No client starts a new pipeline after this much time.
const RUN_TIME: Duration = Duration::from_secs(12);
/// The backends' request timeout: far above any delay of the relays.
const TIMEOUT: &str = "2s";
/// Longest reply delay of a relay.
const MAX_DELAY_MS: u64 = 30;
/// How often the relays' delays change.
const DELAY_EVERY: Duration = Duration::from_millis(50);
/// Most requests in one pipeline.
const MAX_PIPELINE: usize = 20;
/// One pipeline in this many is dropped before all its replies are read.
const DROP_ONE_IN: usize = 30;
/// Keys with string values per client and route.
const STRING_SLOTS: usize = 6;
/// Keys with numeric values (for incr) per client and route.
const COUNTER_SLOTS: usize = 2;
/// Keys per client and route that are read but never written.
const NEVER_SET: usize = 40;
/// Longest wait for one reply.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence required after each pipeline's replies.
const GRACE: Duration = Duration::from_millis(20);
/// Silence required before a client's last connection is closed.
const FINAL_GRACE: Duration = Duration::from_millis(150);
/// A client stops after this many wrong replies (the first ones say the most).
const MAX_FAILURES_PER_CLIENT: usize = 5;
/// What stands for a cas token, in the expected reply and in the reply read.
const CAS: &str = "<cas>";

const PROXY_VERSION: &[u8] = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();
/// memcached's reply to an incr of a value that is not a number.
const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";

/// `TIER_SEED` (decimal or 0x-hex) if set, else a fresh one.
fn seed() -> u64 {
    match std::env::var("TIER_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("TIER_SEED={text:?}: {e}"))
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and what the model knows of them
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Route {
    /// `p:*`: parallel over A and B.
    P,
    /// `w:*`: warm_first, warm W, cold C.
    W,
}

impl Route {
    fn prefix(self) -> &'static str {
        match self {
            Route::P => "p",
            Route::W => "w",
        }
    }

    fn of(key: &str) -> Route {
        if key.starts_with("w:") {
            Route::W
        } else {
            Route::P
        }
    }
}

/// A key of a client: its route, kind (`s`: string values, `n`: numbers) and index. Its name
/// also carries a generation, bumped when the key is retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Slot {
    route: Route,
    counter: bool,
    index: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    Absent,
    Has {
        flags: u32,
        data: Vec<u8>,
    },
    /// The model cannot tell (see the module doc): only the shape of a reply is checked.
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Requests and their expected replies
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MgFlag {
    V,
    F,
    K,
    O(u32),
    Q,
}

#[derive(Clone, Debug)]
enum Req {
    Set {
        key: String,
        flags: u32,
        data: Vec<u8>,
        noreply: bool,
    },
    Ms {
        key: String,
        flags: u32,
        data: Vec<u8>,
        quiet: bool,
    },
    /// `get`, or `gets` with `cas`.
    Get {
        keys: Vec<String>,
        cas: bool,
    },
    Mg {
        key: String,
        flags: Vec<MgFlag>,
    },
    Delete {
        key: String,
        noreply: bool,
    },
    Md {
        key: String,
        quiet: bool,
    },
    Touch {
        key: String,
    },
    Incr {
        key: String,
        delta: u64,
    },
    Mn,
    Version,
}

impl Req {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.line().into_bytes();
        if let Req::Set { data, .. } | Req::Ms { data, .. } = self {
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// The request line with its `\r\n`.
    fn line(&self) -> String {
        match self {
            Req::Set {
                key,
                flags,
                data,
                noreply,
            } => {
                let nr = if *noreply { " noreply" } else { "" };
                format!("set {key} {flags} 0 {}{nr}\r\n", data.len())
            }
            Req::Ms {
                key,
                flags,
                data,
                quiet,
            } => {
                let q = if *quiet { " q" } else { "" };
                format!("ms {key} {} F{flags}{q}\r\n", data.len())
            }
            Req::Get { keys, cas } => {
                format!(
                    "{} {}\r\n",
                    if *cas { "gets" } else { "get" },
                    keys.join(" ")
                )
            }
            Req::Mg { key, flags } => {
                let tokens: Vec<String> = flags
                    .iter()
                    .map(|f| match f {
                        MgFlag::V => "v".to_string(),
                        MgFlag::F => "f".to_string(),
                        MgFlag::K => "k".to_string(),
                        MgFlag::O(n) => format!("O{n}"),
                        MgFlag::Q => "q".to_string(),
                    })
                    .collect();
                format!("mg {key} {}\r\n", tokens.join(" "))
            }
            Req::Delete { key, noreply } => {
                format!("delete {key}{}\r\n", if *noreply { " noreply" } else { "" })
            }
            Req::Md { key, quiet } => format!("md {key}{}\r\n", if *quiet { " q" } else { "" }),
            Req::Touch { key } => format!("touch {key} 0\r\n"),
            Req::Incr { key, delta } => format!("incr {key} {delta}\r\n"),
            Req::Mn => "mn\r\n".to_string(),
            Req::Version => "version\r\n".to_string(),
        }
    }

    /// The request line, escaped, with the size of its data block if any.
    fn describe(&self) -> String {
        let line = self.line();
        let line = line.trim_end();
        match self {
            Req::Set { data, .. } | Req::Ms { data, .. } if data.len() > 80 => {
                format!("{line} + {} data bytes", data.len())
            }
            Req::Set { data, .. } | Req::Ms { data, .. } => {
                format!("{line} + {}", show(data))
            }
            _ => line.to_string(),
        }
    }

    /// A quiet meta request: may have no reply; always followed by `mn` in the pipeline.
    fn quiet(&self) -> bool {
        match self {
            Req::Ms { quiet, .. } | Req::Md { quiet, .. } => *quiet,
            Req::Mg { flags, .. } => flags.contains(&MgFlag::Q),
            _ => false,
        }
    }

    /// True for a request that changes what its key holds (or may: incr).
    fn writes(&self) -> bool {
        !matches!(
            self,
            Req::Get { .. } | Req::Mg { .. } | Req::Touch { .. } | Req::Mn | Req::Version
        )
    }

    /// The keys the request names.
    fn keys(&self) -> Vec<&str> {
        match self {
            Req::Get { keys, .. } => keys.iter().map(String::as_str).collect(),
            Req::Set { key, .. }
            | Req::Ms { key, .. }
            | Req::Mg { key, .. }
            | Req::Delete { key, .. }
            | Req::Md { key, .. }
            | Req::Touch { key }
            | Req::Incr { key, .. } => vec![key.as_str()],
            Req::Mn | Req::Version => Vec::new(),
        }
    }
}

/// What a request's reply must be.
#[derive(Clone, Debug)]
enum Want {
    /// These bytes exactly.
    Exact(Vec<u8>),
    /// A retrieval reply: these bytes exactly once the `VALUE` blocks of the `unknown` keys are
    /// taken out (they may or may not be there) and, with `cas`, each cas token is [`CAS`].
    Retrieval {
        want: Vec<u8>,
        unknown: Vec<String>,
        cas: bool,
    },
    /// The key's state is unknown: any well-formed reply of the request's kind.
    Unchecked,
}

fn value_block(key: &str, flags: u32, data: &[u8], cas: bool) -> Vec<u8> {
    let cas = if cas {
        format!(" {CAS}")
    } else {
        String::new()
    };
    let mut out = format!("VALUE {key} {flags} {}{cas}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// memcached's `mg` reply for an item (`None`: a miss): the returned flags in the order asked.
fn mg_reply(key: &str, flags: &[MgFlag], item: Option<(u32, &[u8])>) -> Vec<u8> {
    let quiet = flags.contains(&MgFlag::Q);
    let mut out = Vec::new();
    match item {
        Some((item_flags, data)) => {
            out.extend(format!("VA {}", data.len()).into_bytes());
            for f in flags {
                match f {
                    MgFlag::F => out.extend(format!(" f{item_flags}").into_bytes()),
                    MgFlag::K => out.extend(format!(" k{key}").into_bytes()),
                    MgFlag::O(n) => out.extend(format!(" O{n}").into_bytes()),
                    MgFlag::V | MgFlag::Q => {}
                }
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        None if quiet => {}
        None => {
            out.extend_from_slice(b"EN");
            for f in flags {
                match f {
                    MgFlag::K => out.extend(format!(" k{key}").into_bytes()),
                    MgFlag::O(n) => out.extend(format!(" O{n}").into_bytes()),
                    _ => {}
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The number a counter holds, if `data` is one memcached can increment.
fn number(data: &[u8]) -> Option<u64> {
    if data.is_empty() || data.len() > 20 || !data.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(data).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// A client's keys, its model, and the pipelines it makes
// ---------------------------------------------------------------------------------------------

struct Model {
    id: usize,
    rng: Rng,
    /// What each key holds; a key not here was never written (absent).
    keys: HashMap<String, Known>,
    /// Each slot's generation (0 when not here).
    generations: HashMap<Slot, usize>,
    /// Versions of the values written, so every value is new.
    version: u64,
}

impl Model {
    fn new(id: usize, seed: u64) -> Model {
        Model {
            id,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03)),
            keys: HashMap::new(),
            generations: HashMap::new(),
            version: 0,
        }
    }

    fn name(&self, slot: Slot) -> String {
        let generation = self.generations.get(&slot).copied().unwrap_or(0);
        let kind = if slot.counter { 'n' } else { 's' };
        format!(
            "{}:c{}:{kind}{}g{generation}",
            slot.route.prefix(),
            self.id,
            slot.index
        )
    }

    fn state(&self, key: &str) -> Known {
        self.keys.get(key).cloned().unwrap_or(Known::Absent)
    }

    fn route(&mut self) -> Route {
        if self.rng.chance(50) {
            Route::P
        } else {
            Route::W
        }
    }

    fn slot(&mut self, route: Route, counter: bool) -> String {
        let index = self
            .rng
            .below(if counter { COUNTER_SLOTS } else { STRING_SLOTS });
        self.name(Slot {
            route,
            counter,
            index,
        })
    }

    /// A key to read: mostly one of the client's, sometimes one never written.
    fn read_key(&mut self, route: Route) -> String {
        match self.rng.below(100) {
            0..=14 => format!(
                "{}:c{}:x{}",
                route.prefix(),
                self.id,
                self.rng.below(NEVER_SET)
            ),
            15..=34 => self.slot(route, true),
            _ => self.slot(route, false),
        }
    }

    /// A fresh value for `key`: a number for a counter, else the key, a version and filler.
    fn value(&mut self, key: &str, counter: bool) -> Vec<u8> {
        self.version += 1;
        if counter {
            return self.rng.range(0, 1_000_000).to_string().into_bytes();
        }
        let filler = if self.rng.chance(5) {
            self.rng.range(500, 20_000)
        } else {
            self.rng.range(0, 60)
        } as usize;
        let mut data = format!("{key}#{}#", self.version).into_bytes();
        data.extend((0..filler).map(|i| b'a' + ((i + self.version as usize) % 26) as u8));
        data
    }

    fn flags(&mut self) -> u32 {
        match self.rng.below(3) {
            0 => 0,
            1 => self.rng.below(1000) as u32,
            _ => self.rng.next() as u32,
        }
    }

    /// The keys of a multi-key get: both routes mixed, or one route only; repeats and
    /// never-set keys included.
    fn multi_keys(&mut self) -> Vec<String> {
        let only = match self.rng.below(10) {
            0..=2 => Some(Route::W),
            3..=4 => Some(Route::P),
            _ => None,
        };
        let n = 2 + self.rng.below(7);
        let mut keys: Vec<String> = Vec::with_capacity(n);
        while keys.len() < n {
            if !keys.is_empty() && self.rng.chance(15) {
                let again = keys[self.rng.below(keys.len())].clone();
                keys.push(again);
                continue;
            }
            let route = only.unwrap_or_else(|| self.route());
            let key = self.read_key(route);
            keys.push(key);
        }
        keys
    }

    /// A random request (and the `mn` after it when it is quiet).
    fn random_requests(&mut self) -> Vec<Req> {
        let route = self.route();
        let req = match self.rng.below(100) {
            0..=19 => {
                let counter = self.rng.chance(30);
                let key = self.slot(route, counter);
                Req::Set {
                    flags: self.flags(),
                    data: self.value(&key, counter),
                    noreply: self.rng.chance(20),
                    key,
                }
            }
            20..=33 => Req::Get {
                keys: vec![self.read_key(route)],
                cas: false,
            },
            34..=43 => Req::Get {
                keys: self.multi_keys(),
                cas: false,
            },
            44..=48 => {
                let keys = if self.rng.chance(60) {
                    vec![self.read_key(route)]
                } else {
                    self.multi_keys()
                };
                Req::Get { keys, cas: true }
            }
            49..=55 => Req::Delete {
                key: self.read_key(route),
                noreply: self.rng.chance(25),
            },
            56..=67 => {
                let mut flags = vec![MgFlag::V, MgFlag::F];
                if self.rng.chance(40) {
                    flags.push(MgFlag::K);
                }
                if self.rng.chance(40) {
                    flags.push(MgFlag::O(self.rng.below(100_000) as u32));
                }
                if self.rng.chance(30) {
                    flags.push(MgFlag::Q);
                }
                // memcached answers the flags in the order asked: ask them in any order.
                for i in (1..flags.len()).rev() {
                    let j = self.rng.below(i + 1);
                    flags.swap(i, j);
                }
                Req::Mg {
                    key: self.read_key(route),
                    flags,
                }
            }
            68..=74 => {
                let counter = self.rng.chance(30);
                let key = self.slot(route, counter);
                Req::Ms {
                    flags: self.flags(),
                    data: self.value(&key, counter),
                    quiet: self.rng.chance(25),
                    key,
                }
            }
            75..=79 => Req::Md {
                key: self.read_key(route),
                quiet: self.rng.chance(30),
            },
            80..=83 => Req::Touch {
                key: self.read_key(route),
            },
            84..=94 => {
                let key = if self.rng.chance(85) {
                    self.slot(route, true)
                } else {
                    self.read_key(route)
                };
                Req::Incr {
                    key,
                    delta: self.rng.range(1, 1000),
                }
            }
            95..=97 => Req::Version,
            _ => Req::Mn,
        };
        if req.quiet() {
            vec![req, Req::Mn]
        } else {
            vec![req]
        }
    }

    /// A pipeline of 1 to [`MAX_PIPELINE`] requests, each with the reply the model says it must
    /// get; the model is updated as if each were applied in turn.
    fn pipeline(&mut self) -> Vec<(Req, Want)> {
        let len = 1 + self.rng.below(MAX_PIPELINE);
        let mut out = Vec::with_capacity(len + 1);
        // warm_first keys read through warm to cold in this pipeline (write-backs may follow).
        let mut read_through = HashSet::new();
        while out.len() < len {
            for req in self.random_requests() {
                let want = self.apply(&req, &mut read_through);
                out.push((req, want));
            }
        }
        out
    }

    /// The reply `req` must get, and its effect on the model.
    fn apply(&mut self, req: &Req, read_through: &mut HashSet<String>) -> Want {
        match req {
            Req::Set {
                key,
                flags,
                data,
                noreply,
            } => {
                self.keys.insert(
                    key.clone(),
                    Known::Has {
                        flags: *flags,
                        data: data.clone(),
                    },
                );
                Want::Exact(if *noreply {
                    Vec::new()
                } else {
                    b"STORED\r\n".to_vec()
                })
            }
            Req::Ms {
                key,
                flags,
                data,
                quiet,
            } => {
                self.keys.insert(
                    key.clone(),
                    Known::Has {
                        flags: *flags,
                        data: data.clone(),
                    },
                );
                Want::Exact(if *quiet {
                    Vec::new()
                } else {
                    b"HD\r\n".to_vec()
                })
            }
            Req::Get { keys, cas } => {
                let mut want = Vec::new();
                let mut unknown = Vec::new();
                for key in keys {
                    match self.state(key) {
                        Known::Has { flags, data } => {
                            want.extend(value_block(key, flags, &data, *cas))
                        }
                        Known::Absent => {}
                        Known::Unknown => unknown.push(key.clone()),
                    }
                }
                want.extend_from_slice(b"END\r\n");
                // A classic get reads its warm_first keys through (gets is cold's), whatever
                // other routes' keys it asks too.
                if !*cas {
                    read_through.extend(keys.iter().filter(|k| Route::of(k) == Route::W).cloned());
                }
                Want::Retrieval {
                    want,
                    unknown,
                    cas: *cas,
                }
            }
            Req::Mg { key, flags } => {
                if Route::of(key) == Route::W {
                    read_through.insert(key.clone());
                }
                match self.state(key) {
                    Known::Has { flags: f, data } => {
                        Want::Exact(mg_reply(key, flags, Some((f, &data))))
                    }
                    Known::Absent => Want::Exact(mg_reply(key, flags, None)),
                    Known::Unknown => Want::Unchecked,
                }
            }
            Req::Delete { key, noreply } => {
                let want = match self.state(key) {
                    _ if *noreply => Want::Exact(Vec::new()),
                    Known::Has { .. } => Want::Exact(b"DELETED\r\n".to_vec()),
                    Known::Absent => Want::Exact(b"NOT_FOUND\r\n".to_vec()),
                    Known::Unknown => Want::Unchecked,
                };
                self.deleted(key, read_through);
                want
            }
            Req::Md { key, quiet } => {
                let want = match self.state(key) {
                    Known::Has { .. } if *quiet => Want::Exact(Vec::new()),
                    Known::Has { .. } => Want::Exact(b"HD\r\n".to_vec()),
                    Known::Absent => Want::Exact(b"NF\r\n".to_vec()),
                    Known::Unknown => Want::Unchecked,
                };
                self.deleted(key, read_through);
                want
            }
            Req::Touch { key } => match self.state(key) {
                Known::Has { .. } => Want::Exact(b"TOUCHED\r\n".to_vec()),
                Known::Absent => Want::Exact(b"NOT_FOUND\r\n".to_vec()),
                Known::Unknown => Want::Unchecked,
            },
            Req::Incr { key, delta } => {
                let want = match self.state(key) {
                    Known::Has { flags, data } => match number(&data) {
                        Some(n) => {
                            let n = n.wrapping_add(*delta).to_string().into_bytes();
                            let reply = [&n[..], b"\r\n"].concat();
                            self.keys.insert(key.clone(), Known::Has { flags, data: n });
                            Want::Exact(reply)
                        }
                        None => Want::Exact(NON_NUMERIC.to_vec()),
                    },
                    Known::Absent => Want::Exact(b"NOT_FOUND\r\n".to_vec()),
                    Known::Unknown => Want::Unchecked,
                };
                // warm_first drops the warm copy of an incremented key: a delete of warm.
                if Route::of(key) == Route::W && read_through.contains(key) {
                    self.keys.insert(key.clone(), Known::Unknown);
                }
                want
            }
            Req::Mn => Want::Exact(b"MN\r\n".to_vec()),
            Req::Version => Want::Exact(PROXY_VERSION.to_vec()),
        }
    }

    /// `key` was deleted (from both tiers, or from both pools). A warm_first key read through
    /// earlier in the pipeline may get the older value back in warm from that read's
    /// write-back (the documented limit): unknown until written again.
    fn deleted(&mut self, key: &str, read_through: &HashSet<String>) {
        let after = if Route::of(key) == Route::W && read_through.contains(key) {
            Known::Unknown
        } else {
            Known::Absent
        };
        self.keys.insert(key.to_string(), after);
    }

    /// Retires every key of the client's that `reqs` name: its slot takes a new name.
    fn retire(&mut self, reqs: &[(Req, Want)]) {
        let named: HashSet<&str> = reqs.iter().flat_map(|(r, _)| r.keys()).collect();
        let mut slots = Vec::new();
        for route in [Route::P, Route::W] {
            for (counter, count) in [(false, STRING_SLOTS), (true, COUNTER_SLOTS)] {
                for index in 0..count {
                    slots.push(Slot {
                        route,
                        counter,
                        index,
                    });
                }
            }
        }
        for slot in slots {
            let old = self.name(slot);
            if named.contains(old.as_str()) {
                self.keys.remove(&old);
                *self.generations.entry(slot).or_default() += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Judging a reply
// ---------------------------------------------------------------------------------------------

/// The retrieval reply `got` with the `VALUE` blocks of `unknown` keys taken out and, with
/// `cas`, each cas token replaced by [`CAS`].
fn normalize_retrieval(got: &[u8], unknown: &[String], cas: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &got[at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a line without an end")?;
        let line = &rest[..=end];
        if !line.starts_with(b"VALUE ") {
            out.extend_from_slice(line);
            return Ok(out);
        }
        let text = std::str::from_utf8(&line[..line.len() - 2]).map_err(|e| e.to_string())?;
        let tokens: Vec<&str> = text.split(' ').collect();
        let len: usize = tokens
            .get(3)
            .and_then(|t| t.parse().ok())
            .ok_or("a VALUE line without a length")?;
        let block = &rest[end + 1..end + 1 + len + 2];
        at += end + 1 + len + 2;
        if unknown.iter().any(|k| k == tokens[1]) {
            continue;
        }
        if cas && tokens.len() == 5 && tokens[4].bytes().all(|b| b.is_ascii_digit()) {
            out.extend(format!("{} {CAS}\r\n", tokens[..4].join(" ")).into_bytes());
        } else {
            out.extend_from_slice(line);
        }
        out.extend_from_slice(block);
    }
}

/// A reply fit for a request about a key whose state is unknown.
fn plausible(req: &Req, got: &[u8]) -> bool {
    let one_of = |lines: &[&[u8]]| lines.contains(&got);
    match req {
        Req::Mg { .. } => got.starts_with(b"VA ") || got.starts_with(b"EN") || got.is_empty(),
        Req::Delete { .. } => one_of(&[b"DELETED\r\n", b"NOT_FOUND\r\n"]),
        Req::Md { quiet, .. } => one_of(&[b"HD\r\n", b"NF\r\n"]) || (*quiet && got.is_empty()),
        Req::Touch { .. } => one_of(&[b"TOUCHED\r\n", b"NOT_FOUND\r\n"]),
        Req::Incr { .. } => {
            one_of(&[b"NOT_FOUND\r\n", NON_NUMERIC])
                || (got.len() > 2 && number(&got[..got.len() - 2]).is_some())
        }
        _ => false,
    }
}

/// For a failure message: the first request after `reqs[index]` in its pipeline that writes
/// one of its keys (a reply showing that write's effect was answered out of order).
fn later_write(reqs: &[(Req, Want)], index: usize) -> String {
    let keys = reqs[index].0.keys();
    reqs.iter()
        .enumerate()
        .skip(index + 1)
        .find(|(_, (r, _))| r.writes() && r.keys().iter().any(|k| keys.contains(k)))
        .map_or(String::new(), |(j, (r, _))| {
            format!(
                "\n    note: request {j} `{}`, sent after this one, writes its key",
                r.describe()
            )
        })
}

/// Ok(true): checked byte for byte; Ok(false): the key's state was unknown (shape checked).
fn judge(req: &Req, want: &Want, got: &[u8]) -> Result<bool, String> {
    match want {
        Want::Exact(want) if got == want.as_slice() => Ok(true),
        Want::Exact(want) => Err(format!(
            "\n    expected {}\n    got      {}",
            show(want),
            show(got)
        )),
        Want::Retrieval { want, unknown, cas } => {
            let normalized = if unknown.is_empty() && !cas {
                got.to_vec()
            } else {
                normalize_retrieval(got, unknown, *cas)?
            };
            if normalized == *want {
                Ok(unknown.is_empty())
            } else {
                let note = if unknown.is_empty() && !cas {
                    String::new()
                } else {
                    format!(
                        "\n    (compared without the blocks of the unknown keys {unknown:?} \
                         and with cas tokens as {CAS}: {})",
                        show(&normalized)
                    )
                };
                Err(format!(
                    "\n    expected {}\n    got      {}{note}",
                    show(want),
                    show(got)
                ))
            }
        }
        Want::Unchecked if plausible(req, got) => Ok(false),
        Want::Unchecked => Err(format!(
            "(the key's value is unknown) a reply of the wrong kind: {}",
            show(got)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The client's connection: replies read by their structure
// ---------------------------------------------------------------------------------------------

impl Request for Req {
    fn read_reply(&self, w: &mut Wire, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Req::Get { .. } => loop {
                let line = w.crlf_line()?;
                out.extend_from_slice(&line);
                if !line.starts_with(b"VALUE ") {
                    return Ok(());
                }
                let len = token(&line, 3).ok_or("a VALUE line without a length")?;
                out.extend(w.take(len + 2)?);
            },
            Req::Set { noreply: true, .. } | Req::Delete { noreply: true, .. } => Ok(()),
            Req::Mg { .. } | Req::Ms { .. } | Req::Md { .. } => {
                // A quiet request is followed by `mn`: its reply may be nothing.
                if self.quiet() && w.next_line_is(b"MN\r\n")? {
                    return Ok(());
                }
                let line = w.crlf_line()?;
                out.extend_from_slice(&line);
                if line.starts_with(b"VA ") {
                    let len = token(&line, 1).ok_or("a VA line without a length")?;
                    out.extend(w.take(len + 2)?);
                }
                Ok(())
            }
            Req::Set { .. }
            | Req::Delete { .. }
            | Req::Touch { .. }
            | Req::Incr { .. }
            | Req::Mn
            | Req::Version => {
                out.extend(w.crlf_line()?);
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Outcome {
    failures: Vec<String>,
    pipelines: usize,
    requests: usize,
    exact: usize,
    unchecked: usize,
    values: usize,
    connections: usize,
    dropped: usize,
}

fn run_client(addr: &str, id: usize, seed: u64, deadline: Instant) -> Outcome {
    let mut model = Model::new(id, seed);
    let mut out = Outcome::default();
    let mut wire: Option<Wire> = None;
    while Instant::now() < deadline && out.failures.len() < MAX_FAILURES_PER_CLIENT {
        let w = match wire.take() {
            Some(w) => w,
            None => match Wire::connect(addr, READ_TIMEOUT) {
                Ok(w) => {
                    out.connections += 1;
                    w
                }
                Err(e) => {
                    out.failures
                        .push(format!("client {id}: cannot connect: {e}"));
                    return out;
                }
            },
        };
        out.pipelines += 1;
        let place = format!(
            "client {id} connection {} pipeline {}",
            out.connections, out.pipelines
        );
        match run_pipeline(&mut model, w, &place, &mut out) {
            Ok(next) => wire = next,
            Err(e) => {
                out.failures.push(format!("{place}: {e}"));
                return out;
            }
        }
    }
    if let Some(mut w) = wire {
        if let Err(e) = w.silence(FINAL_GRACE) {
            out.failures.push(format!(
                "client {id} connection {}: after the last reply: {e}",
                out.connections
            ));
        }
    }
    out
}

/// Sends one pipeline and reads and judges its replies (or drops the connection on the way).
/// Returns the connection if it is to be used again; an error when the replies are out of
/// step (a reply cannot be read, or extra bytes arrive).
fn run_pipeline(
    model: &mut Model,
    mut w: Wire,
    place: &str,
    out: &mut Outcome,
) -> Result<Option<Wire>, String> {
    let reqs = model.pipeline();
    let bytes: Vec<u8> = reqs.iter().flat_map(|(r, _)| r.encode()).collect();
    let listing = || {
        reqs.iter()
            .enumerate()
            .map(|(i, (r, _))| format!("\n    {i}: {}", r.describe()))
            .collect::<String>()
    };
    if model.rng.chance(30) {
        let mut at = 0;
        while at < bytes.len() {
            let n = (1 + model.rng.below(300)).min(bytes.len() - at);
            w.send(&bytes[at..at + n])?;
            at += n;
            if model.rng.chance(10) {
                thread::sleep(Duration::from_millis(model.rng.range(0, 3)));
            }
        }
    } else {
        w.send(&bytes)?;
    }
    out.requests += reqs.len();
    let drop_it = model.rng.below(DROP_ONE_IN) == 0;
    let read = if drop_it {
        model.rng.below(reqs.len())
    } else {
        reqs.len()
    };
    for (index, (req, want)) in reqs.iter().enumerate().take(read) {
        let got = w.reply(req).map_err(|e| {
            format!(
                "request {index} `{}`: {e}; the pipeline:{}",
                req.describe(),
                listing()
            )
        })?;
        out.values += got
            .windows(6)
            .filter(|x| x == b"VALUE " || x.starts_with(b"VA "))
            .count();
        match judge(req, want, &got) {
            Ok(true) => out.exact += 1,
            Ok(false) => out.unchecked += 1,
            Err(e) => out.failures.push(format!(
                "{place} request {index} `{}`: {e}{}\n  the pipeline:{}",
                req.describe(),
                later_write(&reqs, index),
                listing()
            )),
        }
    }
    if drop_it {
        // Give the proxy a moment to send some of the rest on, so that the connection goes
        // with requests in flight.
        thread::sleep(Duration::from_millis(model.rng.range(0, 15)));
        model.retire(&reqs);
        out.dropped += 1;
        let reset = model.rng.chance(50);
        w.abort(reset);
        return Ok(None);
    }
    w.silence(GRACE)
        .map_err(|e| format!("after the {} replies of the pipeline: {e}", reqs.len()))?;
    Ok(Some(w))
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn tiered_routes_answer_each_request_once_in_order_with_the_models_data() {
    let seed = seed();
    let replay = format!("seed {seed}; replay with TIER_SEED={seed}");
    eprintln!("tier_invariants: {replay}");
    let started = Instant::now();

    // A, B (parallel), W, C (warm_first); one of each route behind a relay.
    let servers: Vec<Memcached> = (0..4).map(|_| Memcached::start()).collect();
    let mut rng = Rng::new(seed ^ 0x7e11_0a5e);
    let slow = [rng.below(2), 2 + rng.below(2)];
    let relays: Vec<Relay> = slow
        .iter()
        .map(|&i| Relay::start(&servers[i].addr(), Duration::ZERO))
        .collect();
    let names = ["A", "B", "W", "C"];
    let mut backends = String::new();
    for (i, name) in names.iter().enumerate() {
        let addr = match slow.iter().position(|&s| s == i) {
            Some(r) => relays[r].addr(),
            None => servers[i].addr(),
        };
        backends += &pool_yaml(name, &format!("[\"{addr}\"]"), TIMEOUT);
    }
    let routes =
        "  - {name: p, match: \"p:*\", strategy: parallel, backends: [A, B], writes: all}\n\
                  \x20 - {name: w, match: \"w:*\", strategy: warm_first, warm: W, cold: C, \
                  write_on_miss: {ttl: 300}}\n";
    let mut bifrost = start_proxy(WORKERS, &backends, routes, "");
    let addr = bifrost.addr();
    eprintln!(
        "tier_invariants: {} and {} behind delaying relays",
        names[slow[0]], names[slow[1]]
    );

    let stop = AtomicBool::new(false);
    let results: Vec<Option<Outcome>> = thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng::new(seed ^ 0xde1a_7000);
            while !stop.load(Ordering::SeqCst) {
                for relay in &relays {
                    relay.set_delay(Duration::from_millis(rng.range(0, MAX_DELAY_MS)));
                }
                thread::sleep(DELAY_EVERY);
            }
        });
        let deadline = Instant::now() + RUN_TIME;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let addr = addr.clone();
                s.spawn(move || run_client(&addr, id, seed, deadline))
            })
            .collect();
        let results = clients.into_iter().map(|c| c.join().ok()).collect();
        stop.store(true, Ordering::SeqCst);
        results
    });
    let clients_done = started.elapsed();

    let mut failures = Vec::new();
    let mut total = Outcome::default();
    for (id, result) in results.into_iter().enumerate() {
        let Some(r) = result else {
            failures.push(format!("client {id}: its thread panicked"));
            continue;
        };
        failures.extend(r.failures);
        total.pipelines += r.pipelines;
        total.requests += r.requests;
        total.exact += r.exact;
        total.unchecked += r.unchecked;
        total.values += r.values;
        total.connections += r.connections;
        total.dropped += r.dropped;
    }

    // The proxy still serves, lets go of every client, and no write-back failed.
    let mut c = Client::connect(&addr);
    let version = c.version();
    if version.as_bytes() != &PROXY_VERSION[..PROXY_VERSION.len() - 2] {
        failures.push(format!("`version` at the end answered {version:?}"));
    }
    let stats = c.stats();
    if stats.get("pid").map(String::as_str) != Some(&bifrost.pid().to_string()) {
        failures.push(format!(
            "`stats` at the end has no pid of the proxy: {stats:?}"
        ));
    }
    let name = "write_on_miss.w";
    let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            Duration::from_secs(5),
            "no write-back is queued or in flight and only this client is connected",
            || effect(&mut c, name, "depth") == 0 && c.stat("curr_connections") == 1,
        )
    }));
    if settled.is_err() {
        failures.push(format!(
            "5 s after the clients left: curr_connections {}, {}",
            c.stat("curr_connections"),
            effects(&mut c, name)
        ));
    }
    let failed = effect(&mut c, name, "failed");
    if failed != 0 {
        failures.push(format!(
            "{failed} write-back(s) failed: {}",
            effects(&mut c, name)
        ));
    }
    if !bifrost.is_running() {
        failures.push("bifrost exited".to_string());
    }
    eprintln!(
        "tier_invariants: {} pipelines, {} requests, {} replies checked byte for byte, {} of \
         keys the model could not know (shape checked), {} values; {} client connections ({} \
         dropped mid-pipeline); {}; backend_errors {}; clients done after {clients_done:.1?}, \
         total {:.1?}",
        total.pipelines,
        total.requests,
        total.exact,
        total.unchecked,
        total.values,
        total.connections,
        total.dropped,
        effects(&mut c, name),
        c.stat("backend_errors"),
        started.elapsed()
    );
    if total.exact < 1000 {
        failures.push(format!("only {} replies were checked exactly", total.exact));
    }
    if !failures.is_empty() {
        let shown = failures.len().min(8);
        panic!(
            "{} invariant failure(s) ({replay}); the first {shown}:\n- {}",
            failures.len(),
            failures[..shown].join("\n- ")
        );
    }
}
