//! Checks that need the whole document: duplicate names and binds, pool sizes, unreachable
//! routes; and the list of features a config uses that this release does not implement (none
//! at present).

use std::net::SocketAddr;

use super::load::{Draft, Slot};
use super::walker::{join, Walker};
use super::*;

/// Runs every whole-document check on what the walk could read, recording errors in `w`.
pub(super) fn check(w: &mut Walker, d: &Draft) {
    unique_names(w, &d.listeners, "listener");
    unique_names(w, &d.routes, "route");
    unique_binds(w, d);
    blind_forward_pools(w, d);
    unreachable_routes(w, d);
    lease_placeholders(w, d);
    origin_roles(w, d);
}

/// An HTTP origin cannot be a warm tier (write-backs and leases need memcached), nor take
/// replicated copies unless it takes writes.
fn origin_roles(w: &mut Walker, d: &Draft) {
    let pool = |name: &str| {
        d.backends
            .iter()
            .find(|b| b.name.as_deref() == Some(name))
            .and_then(|b| b.value.as_ref())
    };
    for slot in &d.routes {
        let Some(RouteConfig {
            strategy: Strategy::WarmFirst { warm, .. },
            ..
        }) = &slot.value
        else {
            continue;
        };
        if pool(warm).is_some_and(BackendConfig::is_http) {
            let msg = format!(
                "'{warm}' is a pool of HTTP origins; warm_first's warm tier must be memcached \
                 (it stores the copies of cold's values)"
            );
            w.error(&join(&slot.path, "warm"), msg);
        }
    }
    for slot in &d.side_effects {
        let Some(SideEffectConfig::Replicate { to, .. }) = &slot.value else {
            continue;
        };
        if pool(to).is_some_and(|b| b.is_http() && !b.writes) {
            let msg = format!(
                "'{to}' is a pool of read-only HTTP origins; copies of writes need `writes: true` \
                 on it"
            );
            w.error(&join(&slot.path, "to"), msg);
        }
    }
}

fn unique_names<T>(w: &mut Walker, slots: &[Slot<T>], what: &str) {
    for (i, slot) in slots.iter().enumerate() {
        let Some(name) = &slot.name else { continue };
        if let Some(first) = slots[..i].iter().find(|s| s.name.as_ref() == Some(name)) {
            w.error(
                &slot.name_path,
                format!("duplicate {what} name '{name}' (also {})", first.path),
            );
        }
    }
}

/// Two listeners (or a listener and the admin API) cannot bind the same address; port 0
/// (any free port) never clashes.
fn unique_binds(w: &mut Walker, d: &Draft) {
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    for slot in &d.listeners {
        let Some(l) = &slot.value else { continue };
        if l.bind.port() == 0 {
            continue;
        }
        match seen.iter().find(|(a, _)| *a == l.bind) {
            Some((_, owner)) => w.error(
                &join(&slot.path, "bind"),
                format!("{} is already used by {owner}", l.bind),
            ),
            None => seen.push((l.bind, format!("{} ('{}')", slot.path, l.name))),
        }
    }
    if let Some(admin) = &d.admin {
        if let Some((_, owner)) = seen.iter().find(|(a, _)| *a == admin.bind) {
            w.error(
                "admin.bind",
                format!("{} is already used by {owner}", admin.bind),
            );
        }
    }
}

/// blind_forward sends everything to one server, so its backend must have exactly one.
fn blind_forward_pools(w: &mut Walker, d: &Draft) {
    for slot in &d.routes {
        let Some(RouteConfig {
            strategy: Strategy::BlindForward { backend },
            ..
        }) = &slot.value
        else {
            continue;
        };
        let pool = d.backends.iter().find(|b| b.name.as_ref() == Some(backend));
        let Some(b) = pool.and_then(|b| b.value.as_ref()) else {
            continue;
        };
        if b.servers.len() != 1 {
            let msg = format!(
                "blind_forward needs a backend with exactly one server, '{backend}' has {} \
                 (use consistent_hash or round_robin to spread keys over a pool)",
                b.servers.len()
            );
            w.error(&join(&slot.path, "backend"), msg);
        }
    }
}

/// A route that every listener using it only reaches after a catch-all route (one that takes
/// every key of every command) can never be chosen.
fn unreachable_routes(w: &mut Walker, d: &Draft) {
    // A listener whose `routes` is broken uses an unknown list: do not guess.
    if d.listener_routes.iter().any(Option::is_none) {
        return;
    }
    let orders = route_orders(d);
    let catch_all = |i: usize| {
        d.routes[i]
            .value
            .as_ref()
            .is_some_and(RouteConfig::is_catch_all)
    };
    for (r, slot) in d.routes.iter().enumerate() {
        let mut shadow = None;
        let mut used = false;
        let mut reachable = false;
        for order in &orders {
            let Some(pos) = order.iter().position(|&i| i == r) else {
                continue;
            };
            used = true;
            match order[..pos].iter().copied().find(|&i| catch_all(i)) {
                Some(c) => shadow = shadow.or(Some(c)),
                None => reachable = true,
            }
        }
        if let (true, false, Some(c)) = (used, reachable, shadow) {
            let name = d.routes[c].name.as_deref().unwrap_or("?");
            let msg = format!(
                "unreachable: {} ('{name}') matches every key before it",
                d.routes[c].path
            );
            w.error(&slot.path, msg);
        }
    }
}

/// A warm_first route with leases leaves placeholders (empty values) in its warm backend for
/// the keys it reads. Another route that reads that backend with plain commands would serve
/// them as values, so it must never see those keys: in every route list it is in, the leased
/// route must come before it and take every command (then every key the leased route matches
/// is its own, whatever the command). Routes that only write are fine, and so are other
/// leased routes on the same warm backend.
fn lease_placeholders(w: &mut Walker, d: &Draft) {
    if d.listener_routes.iter().any(Option::is_none) {
        return;
    }
    let orders = route_orders(d);
    let route = |i: usize| d.routes.get(i).and_then(|s| s.value.as_ref());
    for (l, slot) in d.routes.iter().enumerate() {
        let Some(Strategy::WarmFirst {
            warm,
            leases: Some(_),
            ..
        }) = slot.value.as_ref().map(|r| &r.strategy)
        else {
            continue;
        };
        for (m, other) in d.routes.iter().enumerate() {
            if m == l || !route(m).is_some_and(|r| reads_backend(r, warm)) {
                continue;
            }
            let shielded = orders.iter().all(|order| {
                let Some(pos) = order.iter().position(|&i| i == m) else {
                    return true;
                };
                let before = order[..pos].contains(&l);
                before && route(l).is_some_and(|r| r.commands.is_none())
            });
            if shielded {
                continue;
            }
            let name = slot.name.as_deref().unwrap_or("?");
            let msg = format!(
                "reads backend '{warm}', the warm tier of route '{name}' ({}), which has leases: \
                 it could serve that route's lease placeholders as empty values. Put '{name}' \
                 before it (taking every command) in every route list it is in, give it \
                 another backend, or give it leases too",
                slot.path
            );
            w.error(&other.path, msg);
        }
    }
}

/// True when `route` reads backend `backend` with commands that would serve a lease
/// placeholder as a value: anything but a warm_first route with leases on the same warm tier,
/// and a route whose `commands` are all writes.
fn reads_backend(route: &RouteConfig, backend: &str) -> bool {
    if let Some(commands) = &route.commands {
        if commands.iter().all(|&c| super::routes::is_write(c)) {
            return false;
        }
    }
    match &route.strategy {
        Strategy::WarmFirst {
            warm,
            leases: Some(_),
            ..
        } if warm == backend => false,
        strategy => strategy.backend_names().contains(&backend),
    }
}

/// The route lists of the listeners (route indexes, in order), or every route in file order
/// when no listener names its own.
fn route_orders(d: &Draft) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..d.routes.len()).collect();
    let mut orders: Vec<Vec<usize>> = d
        .listener_routes
        .iter()
        .flatten()
        .map(|routes| match routes {
            None => all.clone(),
            Some(names) => names
                .iter()
                .filter_map(|n| d.routes.iter().position(|r| r.name.as_ref() == Some(n)))
                .collect(),
        })
        .collect();
    if orders.is_empty() {
        orders.push(all);
    }
    orders
}

/// Every feature `c` uses that this release does not implement, one message each. Every part
/// of the schema is served now, so this is empty; it stays so that a key added to the schema
/// ahead of its implementation has a place to be refused at start-up (and warned about by
/// `--check`) instead of being silently ignored.
pub(super) fn unsupported_features(c: &Config) -> Vec<String> {
    let _ = c;
    Vec::new()
}
