//! The schema walk of `routes` (matchers, command filters, strategies) and `side_effects`.

use yaml_serde::Value;

use super::load::{top_list, Names, Slot};
use super::walker::{index, join, Fields, Walker};
use super::*;

/// Keys every route may have, whatever its strategy.
const ROUTE_KEYS: &[&str] = &["name", "match", "commands", "strategy"];
const MATCH_KEYS: &[&str] = &["prefix", "regex"];
const WRITE_ON_MISS_KEYS: &[&str] = &["ttl", "queue", "queue_bytes"];
const LEASES_KEYS: &[&str] = &["lease_ttl", "wait", "early_refresh"];
const REPLICATE_KEYS: &[&str] = &["routes", "to", "commands", "queue", "queue_bytes"];
const SIDE_EFFECT_KINDS: &[&str] = &["replicate"];

/// Largest TTL memcached reads as seconds; larger values are unix times.
pub(super) const MAX_RELATIVE_TTL: u64 = 30 * 24 * 3600;

/// The strategy-specific keys of the strategy called `name`.
fn strategy_keys(name: &str) -> &'static [&'static str] {
    match name {
        "blind_forward" | "round_robin" | "consistent_hash" => &["backend"],
        "failover" => &["backends", "on_miss", "failover_ttl"],
        "parallel" => &["backends", "writes"],
        "warm_first" => &["warm", "cold", "write_on_miss", "leases"],
        _ => &[],
    }
}

/// The commands `replicate` may copy: the ones that change data.
pub(super) fn is_write(c: Command) -> bool {
    c.has_data()
        || matches!(
            c,
            Command::Delete
                | Command::Incr
                | Command::Decr
                | Command::Touch
                | Command::MetaDelete
                | Command::MetaArithmetic
        )
}

/// The name of route `i`: its `name`, or `route<i>` when it has none.
fn route_name(v: &Value, i: usize) -> Option<String> {
    match v.get("name") {
        None | Some(Value::Null) => Some(format!("route{i}")),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => None,
    }
}

/// Every route name that can be read, for references from listeners and side effects;
/// `None` when `routes` is not a list.
pub(super) fn route_names(top: &Fields) -> Option<Vec<String>> {
    match top.get("routes") {
        Some(Value::Sequence(items)) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| route_name(v, i))
                .collect(),
        ),
        None => Some(Vec::new()),
        Some(_) => None,
    }
}

/// Walks `routes`.
pub(super) fn walk_routes(w: &mut Walker, top: &Fields, names: &Names) -> Vec<Slot<RouteConfig>> {
    let items = top_list(w, top, "routes", "route");
    items
        .iter()
        .enumerate()
        .map(|(i, v)| walk_route(w, v, i, names))
        .collect()
}

fn walk_route(w: &mut Walker, v: &Value, i: usize, names: &Names) -> Slot<RouteConfig> {
    let path = index("routes", i);
    let mut slot = Slot {
        name: None,
        name_path: path.clone(),
        value: None,
        path,
    };
    let Some(map) = w.map(v, &slot.path) else {
        return slot;
    };
    // The strategy decides which other keys are allowed, so read it first.
    let strategy_name = match map.get("strategy").filter(|v| !v.is_null()) {
        Some(v) => {
            let options: Vec<(&str, &str)> = Strategy::NAMES.iter().map(|n| (*n, *n)).collect();
            w.choice(v, &join(&slot.path, "strategy"), "strategy", &options)
        }
        None => {
            w.error(&join(&slot.path, "strategy"), "required key is missing");
            None
        }
    };
    let mut allowed: Vec<&str> = ROUTE_KEYS.to_vec();
    // With an unknown strategy, accept the keys of every strategy rather than guess.
    let strategies: Vec<&str> = match strategy_name {
        Some(s) => vec![s],
        None => Strategy::NAMES.to_vec(),
    };
    for key in strategies.into_iter().flat_map(strategy_keys) {
        if !allowed.contains(key) {
            allowed.push(key);
        }
    }
    let Some(f) = w.fields(v, &slot.path, &allowed) else {
        return slot;
    };
    let name = match f.get("name") {
        Some(v) => {
            slot.name_path = f.at("name");
            w.name(v, &slot.name_path)
        }
        None => route_name(v, i),
    };
    slot.name = name.clone();
    let matcher = w
        .required(&f, "match")
        .and_then(|v| walk_match(w, v, &f.at("match")));
    let commands = match f.get("commands") {
        Some(v) => walk_commands(w, v, &f.at("commands"), false).map(Some),
        None => Some(None),
    };
    let strategy = strategy_name.and_then(|s| walk_strategy(w, &f, s, names));
    slot.value = (|| {
        Some(RouteConfig {
            name: name?,
            matcher: matcher?,
            commands: commands?,
            strategy: strategy?,
        })
    })();
    slot
}

fn walk_match(w: &mut Walker, v: &Value, path: &str) -> Option<KeyMatch> {
    let matcher = match v {
        Value::String(glob) if glob.is_empty() => {
            w.error(
                path,
                "an empty glob matches no key; use \"*\" to match every key",
            );
            return None;
        }
        Value::String(glob) => KeyMatch::Glob(glob.clone()),
        Value::Mapping(_) => {
            let f = w.fields(v, path, MATCH_KEYS)?;
            match (f.get("prefix"), f.get("regex")) {
                (Some(_), Some(_)) => {
                    w.error(path, "give either prefix or regex, not both");
                    return None;
                }
                (Some(p), None) => KeyMatch::Prefix(w.string(p, &f.at("prefix"))?.to_string()),
                (None, Some(r)) => {
                    let r = w.string(r, &f.at("regex"))?;
                    if r.is_empty() {
                        w.error(&f.at("regex"), "a regex must not be empty");
                        return None;
                    }
                    if let Err(e) = regex::bytes::Regex::new(r) {
                        let first_line = e.to_string();
                        let reason = first_line.lines().last().unwrap_or("invalid").trim();
                        w.error(&f.at("regex"), format!("invalid regex '{r}': {reason}"));
                        return None;
                    }
                    KeyMatch::Regex(r.to_string())
                }
                (None, None) => {
                    // Unknown keys have been reported already.
                    if f.is_empty() {
                        w.error(path, "expected {prefix: ...} or {regex: ...}");
                    }
                    return None;
                }
            }
        }
        _ => {
            w.expected(path, "a glob string, {prefix: ...} or {regex: ...}", v);
            return None;
        }
    };
    let pattern = match &matcher {
        KeyMatch::Glob(p) | KeyMatch::Prefix(p) => p,
        KeyMatch::Regex(_) => return Some(matcher),
    };
    if pattern
        .chars()
        .any(|c| matches!(c, ' ' | '\r' | '\n' | '\0'))
    {
        let msg =
            format!("'{pattern}' can never match: memcached keys contain no spaces, CR, LF or NUL");
        w.error(path, msg);
        return None;
    }
    Some(matcher)
}

/// A non-empty list of command names; with `writes_only`, only commands that change data.
fn walk_commands(w: &mut Walker, v: &Value, path: &str, writes_only: bool) -> Option<Vec<Command>> {
    let items = w.list(v, path)?;
    if items.is_empty() {
        w.error(
            path,
            "must list at least one command (leave `commands` out to take every command)",
        );
        return None;
    }
    let mut commands = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        match command(w, item, &item_path) {
            Some(c) if writes_only && !is_write(c) => {
                let writes: Vec<&str> = Command::ALL
                    .iter()
                    .filter(|c| is_write(**c))
                    .map(|c| c.name())
                    .collect();
                let msg = format!(
                    "'{}' is not a write command; replicate copies only: {}",
                    c.name(),
                    writes.join(", ")
                );
                w.error(&item_path, msg);
                ok = false;
            }
            Some(c) if !commands.contains(&c) => commands.push(c),
            Some(_) => {}
            None => ok = false,
        }
    }
    ok.then_some(commands)
}

/// One command name.
fn command(w: &mut Walker, v: &Value, path: &str) -> Option<Command> {
    let s = w.string(v, path)?;
    let found = Command::from_name(s.as_bytes());
    if found.is_none() {
        let names: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
        w.error(
            path,
            format!(
                "unknown command '{s}' (expected one of: {})",
                names.join(", ")
            ),
        );
    }
    found
}

fn walk_strategy(w: &mut Walker, f: &Fields, name: &str, names: &Names) -> Option<Strategy> {
    let known = names.backends.as_deref();
    let one = |w: &mut Walker, key: &str| {
        let v = w.required(f, key)?;
        w.reference(v, &f.at(key), "backend", known)
    };
    let several = |w: &mut Walker| {
        let v = w.required(f, "backends")?;
        let list = w.references(v, &f.at("backends"), "backend", known)?;
        if list.len() < 2 {
            w.error(
                &f.at("backends"),
                format!("{name} needs at least two backends"),
            );
            return None;
        }
        Some(list)
    };
    match name {
        "blind_forward" => Some(Strategy::BlindForward {
            backend: one(w, "backend")?,
        }),
        "round_robin" => Some(Strategy::RoundRobin {
            backend: one(w, "backend")?,
        }),
        "consistent_hash" => Some(Strategy::ConsistentHash {
            backend: one(w, "backend")?,
        }),
        "failover" => {
            let backends = several(w);
            let options = [("stop", OnMiss::Stop), ("next", OnMiss::Next)];
            let on_miss = match f.get("on_miss") {
                Some(v) => w.choice(v, &f.at("on_miss"), "on_miss", &options),
                None => Some(OnMiss::Stop),
            };
            let failover_ttl = match f.get("failover_ttl") {
                Some(v) => relative_ttl(w, v, &f.at("failover_ttl"), 1).map(Some),
                None => Some(None),
            };
            Some(Strategy::Failover {
                backends: backends?,
                on_miss: on_miss?,
                failover_ttl: failover_ttl?,
            })
        }
        "parallel" => {
            let backends = several(w);
            let options = [
                ("all", WritePolicy::All),
                ("majority", WritePolicy::Majority),
                ("first", WritePolicy::First),
            ];
            let writes = match f.get("writes") {
                Some(v) => w.choice(v, &f.at("writes"), "writes policy", &options),
                None => Some(WritePolicy::All),
            };
            Some(Strategy::Parallel {
                backends: backends?,
                writes: writes?,
            })
        }
        "warm_first" => {
            let warm = one(w, "warm");
            let cold = one(w, "cold");
            if let (Some(warm), Some(cold)) = (&warm, &cold) {
                if warm == cold {
                    w.error(
                        &f.at("cold"),
                        format!("warm and cold must be different backends, both are '{cold}'"),
                    );
                    return None;
                }
            }
            let write_on_miss = match f.get("write_on_miss") {
                Some(v) => walk_write_on_miss(w, v, &f.at("write_on_miss")).map(Some),
                None => Some(None),
            };
            let write_on_miss = write_on_miss?;
            let leases = match f.get("leases") {
                Some(v) => walk_leases(w, v, &f.at("leases"), write_on_miss).map(Some),
                None => Some(None),
            };
            Some(Strategy::WarmFirst {
                warm: warm?,
                cold: cold?,
                write_on_miss,
                leases: leases?,
            })
        }
        _ => None,
    }
}

fn walk_write_on_miss(w: &mut Walker, v: &Value, path: &str) -> Option<WriteOnMiss> {
    let f = w.fields(v, path, WRITE_ON_MISS_KEYS)?;
    let v = w.required(&f, "ttl")?;
    let ttl = relative_ttl(w, v, &f.at("ttl"), 0);
    let (queue, queue_bytes) = (walk_queue(w, &f), walk_queue_bytes(w, &f));
    Some(WriteOnMiss {
        ttl: ttl?,
        queue: queue?,
        queue_bytes: queue_bytes?,
    })
}

/// A warm_first route's `leases` (`write_on_miss`: the route's, which leases need: the lease
/// holder's write-back is how the value reaches warm).
fn walk_leases(
    w: &mut Walker,
    v: &Value,
    path: &str,
    write_on_miss: Option<WriteOnMiss>,
) -> Option<Leases> {
    let f = w.fields(v, path, LEASES_KEYS)?;
    let Some(write_on_miss) = write_on_miss else {
        w.error(
            path,
            "leases need write_on_miss: the reader that holds a lease writes the cold value \
             back into warm with its TTL",
        );
        return None;
    };
    let lease_ttl = match f.get("lease_ttl") {
        Some(v) => whole_seconds(w, v, &f.at("lease_ttl")),
        None => Some(Leases::DEFAULT_LEASE_TTL),
    };
    let wait = match f.get("wait") {
        Some(v) => w.duration(v, &f.at("wait")),
        None => Some(Leases::DEFAULT_WAIT),
    };
    let refresh_below = match f.get("early_refresh") {
        Some(v) => early_refresh(w, v, &f.at("early_refresh"), write_on_miss.ttl),
        None => Some(0),
    };
    Some(Leases {
        lease_ttl: lease_ttl?,
        wait: wait?,
        refresh_below: refresh_below?,
    })
}

/// A duration of whole seconds, at least one and at most memcached's relative TTLs (what
/// memcached's `N` flag takes).
fn whole_seconds(w: &mut Walker, v: &Value, path: &str) -> Option<u32> {
    let d = w.positive_duration(v, path)?;
    if d.subsec_nanos() != 0 || d.as_secs() > MAX_RELATIVE_TTL {
        let msg = format!(
            "must be whole seconds, from 1s to {MAX_RELATIVE_TTL}s: memcached's leases last \
             whole seconds"
        );
        w.error(path, msg);
        return None;
    }
    u32::try_from(d.as_secs()).ok()
}

/// `early_refresh`: a fraction of the write-back TTL `ttl` (a number between 0 and 1); the
/// remaining TTL in whole seconds (at least 1) under which a hit is refreshed.
fn early_refresh(w: &mut Walker, v: &Value, path: &str, ttl: u32) -> Option<u32> {
    let fraction = match v {
        Value::Number(n) => n.as_f64().filter(|f| *f > 0.0 && *f < 1.0),
        _ => None,
    };
    let Some(fraction) = fraction else {
        w.expected(
            path,
            "a number between 0 and 1 (a fraction of write_on_miss.ttl)",
            v,
        );
        return None;
    };
    if ttl == 0 {
        w.error(
            path,
            "needs write_on_miss.ttl above 0: a value that never expires is never refreshed",
        );
        return None;
    }
    // Rounded to whole seconds, memcached's unit; at least one.
    let below = (f64::from(ttl) * fraction).round().max(1.0);
    Some(below as u32)
}

/// A TTL in seconds, at least `min`, and no more than memcached reads as relative (30 days).
fn relative_ttl(w: &mut Walker, v: &Value, path: &str, min: u64) -> Option<u32> {
    let ttl = w.integer(v, path, min, u64::MAX)?;
    if ttl > MAX_RELATIVE_TTL {
        let msg = format!(
            "must be at most {MAX_RELATIVE_TTL} seconds (30 days), got {ttl}: \
             memcached reads a larger TTL as a unix time"
        );
        w.error(path, msg);
        return None;
    }
    u32::try_from(ttl).ok()
}

/// Walks `side_effects` (optional, may be empty).
pub(super) fn walk_side_effects(
    w: &mut Walker,
    top: &Fields,
    names: &Names,
) -> Vec<Slot<SideEffectConfig>> {
    let Some(v) = top.get("side_effects") else {
        return Vec::new();
    };
    let items = w.list(v, "side_effects").unwrap_or(&[]);
    items
        .iter()
        .enumerate()
        .map(|(i, v)| walk_side_effect(w, v, index("side_effects", i), names))
        .collect()
}

fn walk_side_effect(
    w: &mut Walker,
    v: &Value,
    path: String,
    names: &Names,
) -> Slot<SideEffectConfig> {
    let mut slot = Slot {
        name: None,
        name_path: path.clone(),
        value: None,
        path,
    };
    let Some(map) = w.map(v, &slot.path) else {
        return slot;
    };
    if map.len() != 1 {
        let msg = format!(
            "expected a map with exactly one key naming the side effect, \
             like {{replicate: {{...}}}}, got {} keys",
            map.len()
        );
        w.error(&slot.path, msg);
        return slot;
    }
    for (key, body) in map {
        match key.as_str() {
            Some("replicate") => {
                slot.value = walk_replicate(w, body, &join(&slot.path, "replicate"), names);
            }
            Some(k) => {
                let msg = format!(
                    "unknown side effect '{k}' (expected one of: {})",
                    SIDE_EFFECT_KINDS.join(", ")
                );
                w.error(&join(&slot.path, k), msg);
            }
            None => w.expected(&slot.path, "a side effect name", key),
        }
    }
    slot
}

fn walk_replicate(
    w: &mut Walker,
    v: &Value,
    path: &str,
    names: &Names,
) -> Option<SideEffectConfig> {
    let f = w.fields(v, path, REPLICATE_KEYS)?;
    let routes = w
        .required(&f, "routes")
        .and_then(|v| w.references(v, &f.at("routes"), "route", names.routes.as_deref()));
    let to = w
        .required(&f, "to")
        .and_then(|v| w.reference(v, &f.at("to"), "backend", names.backends.as_deref()));
    let commands = w
        .required(&f, "commands")
        .and_then(|v| walk_commands(w, v, &f.at("commands"), true));
    let (queue, queue_bytes) = (walk_queue(w, &f), walk_queue_bytes(w, &f));
    Some(SideEffectConfig::Replicate {
        routes: routes?,
        to: to?,
        commands: commands?,
        queue: queue?,
        queue_bytes: queue_bytes?,
    })
}

/// The optional `queue_bytes` of a side effect: most bytes of requests queued or in flight
/// per worker.
fn walk_queue_bytes(w: &mut Walker, f: &Fields<'_>) -> Option<usize> {
    match f.get("queue_bytes") {
        Some(v) => w.size(v, &f.at("queue_bytes"), 1, u64::MAX),
        None => Some(DEFAULT_SIDE_EFFECT_QUEUE_BYTES),
    }
}

/// The optional `queue` of a side effect: most copies queued or in flight per worker.
fn walk_queue(w: &mut Walker, f: &Fields<'_>) -> Option<usize> {
    match f.get("queue") {
        Some(v) => w
            .integer(v, &f.at("queue"), 1, u32::MAX as u64)
            .map(|n| n as usize),
        None => Some(DEFAULT_SIDE_EFFECT_QUEUE),
    }
}
