//! What a run does: a config drawn from the seed (which strategies, their options, side
//! effects) and each client's pipelined requests, with the answers a single memcached would
//! give them (the reference model: each client has keys of its own, so only its own order
//! matters).
//!
//! In half the runs whose warm_first route writes back (`write_on_miss`), the route has
//! `leases`, with a short `lease_ttl`, `wait` and write-back TTL (so placeholders expire, hits
//! come up for an early refresh and readers wait out another's lease within a run). Its keys
//! are then held to the model like those of the one-server strategies, but for the TTLs
//! memcached reports (`t`, which the tiers count on the run's clock), and some of its keys
//! are shared by every client ([`SHARED`]): checked loosely, they are where one client's read
//! meets another's write or read of the same key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::rng::Rng;
use super::store::Store;
use crate::config::{Config, Format};
use crate::observe::stats::StatsRegistry;
use crate::protocol::{parse_request, Limits, Parsed, Request};
use crate::routing::plan::Planner;
use crate::routing::Router;
use crate::upstream::side_effects::EffectBoard;

/// Route prefixes and whether, without faults, their answers equal the reference model's.
/// round_robin spreads a key's writes over servers; warm_first's write-backs may land after a
/// later delete (a documented race): both are checked loosely, warm_first only without leases
/// (see [`exact_key`]).
pub const PREFIXES: &[(&str, bool)] = &[
    ("h", true),
    ("rr", false),
    ("bf", true),
    ("fo", true),
    ("par", true),
    ("wf", false),
];

/// Servers of the config: pools a (0-2), b (3-4), one (5), warm (6-7), cold (8), rep (9).
pub const SERVERS: usize = 10;
/// The cold tier's servers.
pub const COLD: &[usize] = &[8];
/// The warm tier's servers.
pub const WARM: &[usize] = &[6, 7];
/// Keys every client uses, on the warm_first route with leases: `wf:sk<n>`, and `wf:s9n<n>`
/// for numbers.
pub const SHARED: &str = "wf:s";

/// The settings of a run's warm_first route with leases.
#[derive(Clone, Copy, Debug)]
pub struct LeaseSetup {
    /// `wait`.
    pub wait: Duration,
}

/// A run's config.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The YAML.
    pub yaml: String,
    /// The `par` route's write policy.
    pub policy: &'static str,
    /// The warm_first route has leases.
    pub leases: Option<LeaseSetup>,
}

/// True when, without a failure, answers about `key` must be the model's (modulo memcached's
/// TTLs on a leased route, see [`normalize_ttl`]).
pub fn exact_key(key: &[u8], leased: bool) -> bool {
    if key.starts_with(SHARED.as_bytes()) {
        return false;
    }
    PREFIXES.iter().any(|(p, exact)| {
        (*exact || (leased && *p == "wf"))
            && key.starts_with(p.as_bytes())
            && key.get(p.len()) == Some(&b':')
    })
}

/// A reply with the remaining TTLs of its meta lines (`t<n>` after `VA <size>` or `HD`) made
/// `t?`: on a leased route the tiers count time, the model does not.
pub fn normalize_ttl(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len());
    let mut rest = reply;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            out.extend_from_slice(rest);
            break;
        };
        let line = &rest[..end];
        let mut words = line.split(|&b| b == b' ');
        let head = words.next().unwrap_or_default();
        let mut skip = 0;
        if head == b"VA" || head == b"HD" {
            out.extend_from_slice(head);
            for (i, word) in words.enumerate() {
                out.push(b' ');
                if i == 0 && head == b"VA" {
                    skip = std::str::from_utf8(word)
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    out.extend_from_slice(word);
                } else if word.first() == Some(&b't') {
                    out.extend_from_slice(b"t?");
                } else {
                    out.extend_from_slice(word);
                }
            }
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        rest = &rest[end + 2..];
        if head == b"VA" {
            let block = (skip + 2).min(rest.len());
            out.extend_from_slice(&rest[..block]);
            rest = &rest[block..];
        }
    }
    out
}

/// What cold holds when a run with leases starts (warm, a cache, holds nothing): about half of
/// the warm_first route's keys, those of client `client` (`Some`) or the shared ones (`None`),
/// as `set` requests.
pub fn preset(rng: &mut Rng, client: Option<usize>) -> Vec<u8> {
    let (tokens, numbers, n) = match client {
        Some(c) => (format!("wf:c{c}k"), format!("wf:c{c}n"), 3),
        None => (format!("{SHARED}k"), format!("{SHARED}9n"), 2),
    };
    let keys = (0..n)
        .map(|k| (format!("{tokens}{k}"), false))
        .chain((0..2).map(|n| (format!("{numbers}{n}"), true)));
    let mut out = Vec::new();
    for (key, numeric) in keys {
        if !rng.chance(1, 2) {
            continue;
        }
        let value = match numeric {
            true => rng.below(100).to_string(),
            false => format!("{key}.0;"),
        };
        let flags = rng.below(3);
        let len = value.len();
        out.extend_from_slice(format!("set {key} {flags} 0 {len}\r\n{value}\r\n").as_bytes());
    }
    out
}

/// The config of a run.
pub fn config(rng: &mut Rng) -> Setup {
    let on_miss = *rng.pick(&["stop", "next"]).unwrap_or(&"stop");
    let ttl = match rng.chance(1, 2) {
        true => ", failover_ttl: 60",
        false => "",
    };
    let writes = *rng.pick(&["all", "majority", "first"]).unwrap_or(&"all");
    let mut leases = None;
    let write_on_miss = match (rng.chance(2, 3), rng.chance(1, 2)) {
        (true, false) => ", write_on_miss: { ttl: 300, queue: 100 }".to_string(),
        (true, true) => {
            let ttl = *rng.pick(&[2, 4, 8]).unwrap_or(&4);
            let lease_ttl = rng.range(1, 2);
            let wait = *rng.pick(&[20, 100, 400]).unwrap_or(&100);
            let refresh = match rng.below(3) {
                0 => "",
                1 => ", early_refresh: 0.5",
                _ => ", early_refresh: 0.75",
            };
            leases = Some(LeaseSetup {
                wait: Duration::from_millis(wait),
            });
            format!(
                ", write_on_miss: {{ ttl: {ttl}, queue: 100 }}, \
                 leases: {{ lease_ttl: {lease_ttl}s, wait: {wait}ms{refresh} }}"
            )
        }
        (false, _) => String::new(),
    };
    let replicate = match rng.chance(1, 2) {
        true => "side_effects:\n  - replicate: { routes: [hash], to: rep, commands: [set, delete], queue: 100 }\n",
        false => "",
    };
    let yaml = format!(
        r#"listeners:
  - name: main
    bind: 127.0.0.1:0
backends:
  a: {{ servers: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3] }}
  b: {{ servers: [127.0.0.1:4, 127.0.0.1:5] }}
  one: {{ servers: [127.0.0.1:6] }}
  warm: {{ servers: [127.0.0.1:7, 127.0.0.1:8] }}
  cold: {{ servers: [127.0.0.1:9] }}
  rep: {{ servers: [127.0.0.1:10] }}
routes:
  - {{ name: hash, match: "h:*", strategy: consistent_hash, backend: a }}
  - {{ name: rr, match: "rr:*", strategy: round_robin, backend: b }}
  - {{ name: bf, match: "bf:*", strategy: blind_forward, backend: one }}
  - {{ name: fo, match: "fo:*", strategy: failover, backends: [a, b], on_miss: {on_miss}{ttl} }}
  - {{ name: par, match: "par:*", strategy: parallel, backends: [a, b, one], writes: {writes} }}
  - {{ name: wf, match: "wf:*", strategy: warm_first, warm: warm, cold: cold{write_on_miss} }}
{replicate}"#
    );
    Setup {
        yaml,
        policy: writes,
        leases,
    }
}

/// The route table and side effects of a config, built once per config per thread (there
/// are a few dozen configs, and building one costs more than a run).
type Built = (Arc<Router>, Arc<EffectBoard>, usize);

fn build(yaml: &str) -> Result<Built, String> {
    thread_local! {
        static BUILT: std::cell::RefCell<std::collections::HashMap<String, Built>> =
            Default::default();
    }
    if let Some(built) = BUILT.with(|b| b.borrow().get(yaml).cloned()) {
        return Ok(built);
    }
    let config = Config::parse(yaml, "sim.yaml", Format::Yaml).map_err(|e| e.to_string())?;
    let router = Arc::new(Router::new(&config)?);
    let pool_of = |name: &str| config.backend(name).map(|(index, _)| index);
    let effects = Arc::new(EffectBoard::new(&config, pool_of));
    let built = (router, effects, config.listeners.len());
    BUILT.with(|b| b.borrow_mut().insert(yaml.to_string(), built.clone()));
    Ok(built)
}

/// A planner over the config `yaml`, as a worker builds it (its own strategies' state).
pub fn planner(yaml: &str) -> Result<Planner, String> {
    let (router, effects, listeners) = build(yaml)?;
    let registry = StatsRegistry::new(
        1,
        router.routes().iter().map(|r| r.name.clone()).collect(),
        router.servers().iter().map(|s| s.address.clone()).collect(),
    );
    Ok(Planner::new(
        Router::clone(&router),
        effects,
        registry.worker(0),
        registry.detail(0),
        listeners,
    ))
}

/// One client's requests and the reference model's answer to each.
pub struct Script {
    /// Requests, parsed, with their bytes.
    pub requests: Vec<(Request, Bytes)>,
    /// What a single memcached answers each.
    pub expected: Vec<Vec<u8>>,
}

/// The keys of client `client` on route prefix `prefix`: values of tokens, and numbers; with
/// `shared` (leases), a third of the warm_first route's keys are every client's ([`SHARED`]),
/// and it has fewer keys (more reads of each).
fn key(rng: &mut Rng, prefixes: &[&str], client: usize, numeric: bool, shared: bool) -> String {
    let prefix = rng.pick(prefixes).copied().unwrap_or("h");
    wf_key(rng, prefix, client, numeric, shared)
}

fn wf_key(rng: &mut Rng, prefix: &str, client: usize, numeric: bool, shared: bool) -> String {
    let leased = shared && prefix == "wf";
    if leased && rng.chance(1, 3) {
        return match numeric {
            true => format!("{SHARED}9n{}", rng.below(2)),
            false => format!("{SHARED}k{}", rng.below(2)),
        };
    }
    let keys = if leased { 3 } else { 4 };
    match numeric {
        true => format!("{prefix}:c{client}n{}", rng.below(2)),
        false => format!("{prefix}:c{client}k{}", rng.below(keys)),
    }
}

/// A value for `key`: tokens naming the key, so an answer can be traced to it; some long
/// enough to be streamed in pieces.
fn value(rng: &mut Rng, key: &str, id: usize) -> String {
    let repeat = match rng.chance(1, 4) {
        true => rng.range(4, 20),
        false => 1,
    };
    format!("{key}.{id};").repeat(repeat)
}

/// Picks meta flags from `choices`, each with probability one half.
fn some_flags(rng: &mut Rng, choices: &[&str]) -> String {
    choices
        .iter()
        .filter(|_| rng.chance(1, 2))
        .map(|f| format!(" {f}"))
        .collect()
}

/// The next request of a client.
fn request(
    rng: &mut Rng,
    prefixes: &[&str],
    client: usize,
    id: usize,
    model: &Store,
    window: usize,
    shared: bool,
) -> String {
    if shared && prefixes.contains(&"wf") && rng.chance(1, 4) {
        // Runs with leases read their keys more: lease reads, waits, early refreshes.
        let numeric = rng.chance(1, 5);
        let k = wf_key(rng, "wf", client, numeric, shared);
        return match rng.below(3) {
            0 => format!("mg {k}{}\r\n", some_flags(rng, &["v", "f", "t", "k", "q"])),
            _ => format!("get {k}\r\n"),
        };
    }
    let k = key(rng, prefixes, client, false, shared);
    let n = key(rng, prefixes, client, true, shared);
    let v = value(rng, &k, id);
    let len = v.len();
    match rng.below(100) {
        0..=17 => format!("get {k}\r\n"),
        18..=29 => {
            let verb = *rng
                .pick(&["get", "gets", "gat 100", "gats 0"])
                .unwrap_or(&"get");
            let mut keys: Vec<String> = Vec::new();
            for _ in 0..rng.range(2, 2 * window + 2) {
                let numeric = rng.chance(1, 5);
                let other = key(rng, prefixes, client, numeric, shared);
                if !keys.contains(&other) {
                    keys.push(other);
                }
            }
            format!("{verb} {}\r\n", keys.join(" "))
        }
        30..=43 => format!("set {k} {} 0 {len}\r\n{v}\r\n", rng.below(3)),
        44..=46 => format!("add {k} 0 0 {len}\r\n{v}\r\n"),
        47..=49 => format!("replace {k} 1 0 {len}\r\n{v}\r\n"),
        50..=52 => format!("append {k} 0 0 {len}\r\n{v}\r\n"),
        53..=54 => format!("prepend {k} 0 0 {len}\r\n{v}\r\n"),
        55..=57 => {
            let cas = model.cas_of(k.as_bytes()).unwrap_or(1) + rng.below(2) as u64;
            format!("cas {k} 2 0 {len} {cas}\r\n{v}\r\n")
        }
        58..=61 => format!("delete {k}\r\n"),
        62..=63 => format!("touch {k} 100\r\n"),
        64..=66 => format!(
            "{} {n} {}\r\n",
            rng.pick(&["incr", "decr"]).unwrap_or(&"incr"),
            rng.below(5)
        ),
        67..=69 => {
            let digits = rng.below(1000).to_string();
            format!("set {n} 0 0 {}\r\n{digits}\r\n", digits.len())
        }
        70..=77 => format!(
            "mg {k}{}\r\n",
            some_flags(rng, &["v", "f", "t", "c", "k", "s", "O7", "q"])
        ),
        78..=81 => {
            let mut flags = some_flags(rng, &["T0", "F1", "q"]);
            if rng.chance(1, 2) {
                flags += rng
                    .pick(&[" MS", " ME", " MA", " MP", " MR"])
                    .unwrap_or(&"");
            }
            if rng.chance(1, 5) {
                flags += &format!(" C{}", model.cas_of(k.as_bytes()).unwrap_or(1));
            }
            format!("ms {k} {len}{flags}\r\n{v}\r\n")
        }
        82..=83 => format!("md {k}{}\r\n", some_flags(rng, &["q"])),
        84..=86 => format!("ma {n}{}\r\n", some_flags(rng, &["v", "MD", "D3", "q"])),
        87..=89 => format!("set {k} 0 0 {len} noreply\r\n{v}\r\n"),
        90..=91 => format!("delete {k} noreply\r\n"),
        92..=93 => format!("incr {n} 1 noreply\r\n"),
        94..=95 => "mn\r\n".to_string(),
        _ => format!("get {k} {n}\r\n"),
    }
}

/// `count` requests of client `client` over `prefixes`, and their model answers; `shared`:
/// some keys of the warm_first route are every client's; `preset`: what the servers of its
/// keys held before the run (whole `set` requests).
pub fn script(
    rng: &mut Rng,
    prefixes: &[&str],
    client: usize,
    count: usize,
    window: usize,
    shared: bool,
    preset: &[u8],
) -> Script {
    let mut model = Store::default();
    model.execute_all(preset);
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for id in 0..count {
        let text = request(rng, prefixes, client, id, &model, window, shared);
        let bytes = Bytes::from(text.into_bytes());
        let parsed = match parse_request(&bytes, &Limits::default()) {
            Ok(Parsed::Complete(r)) if r.len == bytes.len() => r,
            other => panic!("sim: bad request {bytes:?}: {other:?}"),
        };
        let mut answer = Vec::new();
        model.execute(&parsed, &bytes, &mut answer);
        requests.push((parsed, bytes));
        expected.push(answer);
    }
    Script { requests, expected }
}
