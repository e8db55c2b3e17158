//! The route table: which backend server a key goes to.
//!
//! Routes are tried in order (a listener may name the routes it uses and their order) and the
//! first whose pattern matches the key, and whose `commands` filter (if any) includes the
//! command, wins. The route's strategy then picks a server of its pool:
//! * `blind_forward`: the backend's one server;
//! * `round_robin`: the next server of the pool in turn that is not in connect backoff (the
//!   turn is kept per worker, see [`crate::routing::strategy`]);
//! * `consistent_hash`: the server owning the key on the pool's ring (ketama, modula or
//!   random, placing keys exactly as twemproxy does), after the pool's hash tag.
//!
//! Servers are numbered once for the whole process ([`ServerSpec`]), so a worker keeps its
//! backend connections in a flat vector indexed by server. Matching allocates nothing.

pub mod hash;
pub mod matcher;
pub(crate) mod plan;
pub mod ring;
pub(crate) mod shape;
pub(crate) mod strategy;

use crate::config::placement::{Distribution, HashFunction};
use crate::config::{Config, KeyMatch, OriginSpec, Strategy, WritePolicy};
use crate::protocol::Command;
use matcher::KeyPattern;
use ring::{Ring, RingServer};

pub use crate::config::ServerSpec;

/// A backend pool: its servers (global indices) and how keys are spread over them.
#[derive(Clone, Debug)]
pub struct Pool {
    /// The backend's name.
    pub name: String,
    /// Its servers, as indices into [`Router::servers`].
    pub servers: Vec<usize>,
    ring: Ring,
    hash_tag: Option<Vec<u8>>,
    /// What the ring was built from, to build it again without ejected servers.
    ring_servers: Vec<RingServer>,
    distribution: Distribution,
    hash: HashFunction,
}

impl Pool {
    /// This pool without the servers `ejected` names, its ring built over the rest exactly as
    /// twemproxy rebuilds its continuum over the live servers (so the placement of the rest is
    /// twemproxy's). `None` when nothing is ejected, or everything is (a pool with no server
    /// left keeps its ring; its requests fail fast).
    pub fn without(&self, ejected: impl Fn(usize) -> bool) -> Option<Pool> {
        let live: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers.get(i).is_some_and(|&s| !ejected(s)))
            .collect();
        if live.len() == self.servers.len() || live.is_empty() {
            return None;
        }
        let ring_servers: Vec<RingServer> = live
            .iter()
            .filter_map(|&i| self.ring_servers.get(i).cloned())
            .collect();
        Some(Pool {
            name: self.name.clone(),
            servers: live
                .iter()
                .filter_map(|&i| self.servers.get(i).copied())
                .collect(),
            ring: Ring::new(&ring_servers, self.distribution, self.hash),
            hash_tag: self.hash_tag.clone(),
            ring_servers,
            distribution: self.distribution,
            hash: self.hash,
        })
    }

    /// [`Pool::server_for`] of four keys, hashed side by side.
    #[inline]
    pub fn servers_for4(&self, keys: [&[u8]; 4], random: &mut u64) -> [usize; 4] {
        let hashed = match &self.hash_tag {
            Some(tag) => keys.map(|key| hash::hash_tag_slice(key, tag)),
            None => keys,
        };
        self.ring
            .servers_for4(hashed, random)
            .map(|index| self.global(index))
    }

    /// The server (global index) owning `key` on this pool's ring. `random` is the caller's
    /// generator state, used by `distribution: random` only (see [`Ring::server_for`]).
    #[inline]
    pub fn server_for(&self, key: &[u8], random: &mut u64) -> usize {
        let hashed = match &self.hash_tag {
            Some(tag) => hash::hash_tag_slice(key, tag),
            None => key,
        };
        let index = self.ring.server_for(hashed, random);
        self.global(index)
    }

    /// The global index of the pool's server at position `index` of its ring's servers.
    #[inline]
    fn global(&self, index: usize) -> usize {
        let server = self.servers.get(index).copied();
        debug_assert!(
            server.is_some(),
            "pool '{}': its ring names server {index} of {}; the ring is built from the pool's \
             servers (ring_servers and servers are in step), so its indices are positions in them",
            self.name,
            self.servers.len()
        );
        // Release builds send the key to the process's first server rather than panic.
        server.unwrap_or(0)
    }
}

/// How a route picks a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Always this server.
    BlindForward(usize),
    /// The next server of this pool in turn.
    RoundRobin(usize),
    /// The server owning the key on this pool's ring.
    ConsistentHash(usize),
    /// The key's server in each of several pools, tried in order: an index into
    /// [`Router::failovers`].
    Failover(usize),
    /// The key's server in each of several pools, all at once: an index into
    /// [`Router::parallels`].
    Parallel(usize),
    /// Warm pool first, cold pool on a miss; writes to both: an index into
    /// [`Router::warm_firsts`].
    WarmFirst(usize),
}

impl RouteKind {
    /// True for the strategies that give a key one server (`blind_forward`,
    /// `consistent_hash`, `round_robin`); the others give it a chain of servers.
    pub fn has_one_server_per_key(self) -> bool {
        match self {
            RouteKind::BlindForward(_)
            | RouteKind::RoundRobin(_)
            | RouteKind::ConsistentHash(_) => true,
            RouteKind::Failover(_) | RouteKind::Parallel(_) | RouteKind::WarmFirst(_) => false,
        }
    }
}

/// The settings of one parallel route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParallelSpec {
    /// Its pools, in config order (the order decides ties and which backend answers
    /// `cas`/`incr`/`decr`).
    pub pools: Vec<usize>,
    /// Which replies a write waits for.
    pub writes: WritePolicy,
}

/// The settings of one warm_first route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmFirstSpec {
    /// The fast tier, read first.
    pub warm: usize,
    /// The tier of record.
    pub cold: usize,
    /// Its read path: a failover over `[warm, cold]` with `on_miss: next` (an index into
    /// [`Router::failovers`]), which also carries the write-back.
    pub read: usize,
    /// Warm is read under memcached's leases, and writes go to cold, then warm.
    pub leases: Option<crate::exchange::lease::LeaseRules>,
    /// Cold is an HTTP origin: it has no CAS, so `gets`-like reads go through warm, and the
    /// writes it cannot take (`cas`, `incr`, ...) go to warm alone.
    pub cold_origin: bool,
    /// Cold is an HTTP origin without `writes: true`: every write goes to warm alone.
    pub cold_read_only: bool,
}

pub use crate::exchange::lease::LeaseRules;
pub use crate::exchange::WriteBack;

/// The settings of one failover route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverSpec {
    /// Its pools, in order of preference.
    pub pools: Vec<usize>,
    /// A read miss asks the next pool too.
    pub miss_next: bool,
    /// Cap, in seconds, on the TTL of a write sent to any pool but the first.
    pub ttl: Option<u32>,
    /// A hit on any pool but the first is written back into the first (warm_first's read
    /// path with `write_on_miss`).
    pub write_back: Option<WriteBack>,
}

impl FailoverSpec {
    /// What its failover exchanges do beyond asking the next server.
    pub fn rules(&self) -> crate::exchange::failover::Rules {
        crate::exchange::failover::Rules {
            miss_next: self.miss_next,
            ttl: self.ttl,
            write_back: self.write_back,
        }
    }
}

/// One compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    /// The route's name (stats).
    pub name: String,
    pattern: KeyPattern,
    /// Bit [`command_bit`] set for each command the route takes; all bits when unfiltered.
    commands: CommandMask,
    /// How it picks a server.
    pub kind: RouteKind,
}

impl Route {
    /// True when this route takes `command` for `key`.
    #[inline]
    pub fn accepts(&self, command: Command, key: &[u8]) -> bool {
        self.commands & command_bit(command) != 0 && self.pattern.matches(key)
    }
}

/// A set of commands, one bit per [`Command`] discriminant.
type CommandMask = u64;

// Every command's bit must fit in a [`CommandMask`]: adding a 65th command fails the build here
// instead of overflowing the shift (a panic in debug builds, a wrong bit in release builds).
const _: () = {
    let mut i = 0;
    while i < Command::ALL.len() {
        assert!((Command::ALL[i] as u32) < CommandMask::BITS);
        i += 1;
    }
};

/// The bit of `command` in a [`CommandMask`].
#[inline]
fn command_bit(command: Command) -> CommandMask {
    1 << (command as u32)
}

/// The compiled route table for the whole process (immutable).
///
/// A clone is independent of the original: it holds no mutable state in common with it
/// (rings hold none, see [`ring::Ring`]), and each regex pattern of a clone has a match cache
/// pool of its own. That matters because `regex`'s pool is fast only for the thread that
/// used it first and takes a lock for every other; a worker that matches on its own clone
/// gets the fast path. (regex-automata 0.4 `meta::Regex`: the pool is kept "outside the `Arc`
/// so that cloning a `Regex` results in creating a fresh `CachePool`", and its `Clone` impl
/// builds a new `Pool`; regex 1.x's crate docs, "Sharing a regex across threads can result in
/// contention", advise cloning per thread.)
#[derive(Clone, Debug)]
pub struct Router {
    routes: Vec<Route>,
    pools: Vec<Pool>,
    servers: Vec<ServerSpec>,
    failovers: Vec<FailoverSpec>,
    parallels: Vec<ParallelSpec>,
    warm_firsts: Vec<WarmFirstSpec>,
    /// Per listener, the indices of the routes it uses, in the order it tries them.
    listener_routes: Vec<Vec<usize>>,
}

impl Router {
    /// Compiles the route table of `config` (already validated by the config loader).
    pub fn new(config: &Config) -> Result<Router, String> {
        let mut servers = Vec::new();
        let mut pools = Vec::new();
        for backend in &config.backends {
            let mut members = Vec::new();
            let mut ring_servers = Vec::new();
            for server in &backend.servers {
                members.push(servers.len());
                ring_servers.push(RingServer {
                    name: ring::ring_name(&server.address, server.name.as_deref()),
                    weight: server.weight,
                });
                let origin = server.origin.as_ref().map(|url| {
                    std::sync::Arc::new(OriginSpec {
                        host: url.host.clone(),
                        base_path: url.base_path.clone(),
                        writes: backend.writes,
                        max_value_size: backend.max_value_size,
                    })
                });
                servers.push(ServerSpec {
                    backend: backend.name.clone(),
                    // Stats name an origin by its URL.
                    address: server
                        .origin
                        .as_ref()
                        .map_or_else(|| server.address.clone(), |url| url.url.clone()),
                    origin,
                    addr: std::sync::Arc::new(server.address_slot()),
                    resolve_interval: backend.resolve_interval,
                    timeout: backend.timeout,
                    connect_timeout: backend.connect_timeout,
                    connections: backend.connections.max(1),
                    max_queued_requests: backend.max_queued_requests.max(1),
                    health: backend.health.clone(),
                });
            }
            pools.push(Pool {
                name: backend.name.clone(),
                servers: members,
                ring: Ring::new(&ring_servers, backend.distribution, backend.hash),
                hash_tag: backend.hash_tag.as_ref().map(|t| t.as_bytes().to_vec()),
                ring_servers,
                distribution: backend.distribution,
                hash: backend.hash,
            });
        }
        let mut routes = Vec::new();
        let mut failovers = Vec::new();
        let mut parallels = Vec::new();
        let mut warm_firsts = Vec::new();
        let mut write_backs = 0;
        for (i, route) in config.routes.iter().enumerate() {
            let pattern = match &route.matcher {
                KeyMatch::Glob(g) => KeyPattern::glob(g),
                KeyMatch::Prefix(p) => KeyPattern::prefix(p),
                KeyMatch::Regex(r) => {
                    KeyPattern::regex(r).map_err(|e| format!("routes[{i}].match: {e}"))?
                }
            };
            let commands = match &route.commands {
                Some(list) => list.iter().fold(0, |mask, c| mask | command_bit(*c)),
                None => CommandMask::MAX,
            };
            let pool_of = |name: &str| {
                config
                    .backend(name)
                    .map(|(index, _)| index)
                    .ok_or_else(|| format!("routes[{i}]: no backend named '{name}'"))
            };
            let kind = match &route.strategy {
                Strategy::BlindForward { backend } => {
                    let pool = pool_of(backend)?;
                    let server = pools
                        .get(pool)
                        .and_then(|p: &Pool| p.servers.first().copied())
                        .ok_or_else(|| format!("routes[{i}]: backend '{backend}' is empty"))?;
                    RouteKind::BlindForward(server)
                }
                Strategy::RoundRobin { backend } => RouteKind::RoundRobin(pool_of(backend)?),
                Strategy::ConsistentHash { backend } => {
                    RouteKind::ConsistentHash(pool_of(backend)?)
                }
                Strategy::Failover {
                    backends,
                    on_miss,
                    failover_ttl,
                } => {
                    let pools = backends
                        .iter()
                        .map(|b| pool_of(b))
                        .collect::<Result<Vec<usize>, String>>()?;
                    failovers.push(FailoverSpec {
                        pools,
                        miss_next: *on_miss == crate::config::OnMiss::Next,
                        ttl: *failover_ttl,
                        write_back: None,
                    });
                    RouteKind::Failover(failovers.len() - 1)
                }
                Strategy::Parallel { backends, writes } => {
                    let pools = backends
                        .iter()
                        .map(|b| pool_of(b))
                        .collect::<Result<Vec<usize>, String>>()?;
                    parallels.push(ParallelSpec {
                        pools,
                        writes: *writes,
                    });
                    RouteKind::Parallel(parallels.len() - 1)
                }
                Strategy::WarmFirst {
                    warm,
                    cold,
                    write_on_miss,
                    leases,
                } => {
                    let cold_name = cold;
                    let (warm, cold) = (pool_of(warm)?, pool_of(cold)?);
                    // Write-back side effects are numbered after the configured ones, in
                    // route order (see crate::upstream::side_effects).
                    let write_back = write_on_miss.map(|w| {
                        write_backs += 1;
                        WriteBack {
                            effect: config.side_effects.len() + write_backs - 1,
                            ttl: w.ttl,
                        }
                    });
                    failovers.push(FailoverSpec {
                        pools: vec![warm, cold],
                        miss_next: true,
                        ttl: None,
                        write_back,
                    });
                    // Leases need a write-back (the config refuses them without one).
                    let leases = leases.zip(write_back).map(|(l, write_back)| LeaseRules {
                        lease_ttl: l.lease_ttl,
                        wait: l.wait,
                        refresh_below: l.refresh_below,
                        write_back,
                    });
                    let cold_pool = config.backends.iter().find(|b| &b.name == cold_name);
                    let cold_origin = cold_pool.is_some_and(|b| b.is_http());
                    warm_firsts.push(WarmFirstSpec {
                        warm,
                        cold,
                        read: failovers.len() - 1,
                        leases,
                        cold_origin,
                        cold_read_only: cold_origin && !cold_pool.is_some_and(|b| b.writes),
                    });
                    RouteKind::WarmFirst(warm_firsts.len() - 1)
                }
            };
            routes.push(Route {
                name: route.name.clone(),
                pattern,
                commands,
                kind,
            });
        }
        let mut listener_routes = Vec::new();
        for (li, listener) in config.listeners.iter().enumerate() {
            let order = match &listener.routes {
                None => (0..routes.len()).collect(),
                Some(names) => names
                    .iter()
                    .map(|name| {
                        routes.iter().position(|r| &r.name == name).ok_or_else(|| {
                            format!("listeners[{li}].routes: no route named '{name}'")
                        })
                    })
                    .collect::<Result<Vec<usize>, String>>()?,
            };
            listener_routes.push(order);
        }
        Ok(Router {
            routes,
            pools,
            servers,
            failovers,
            parallels,
            warm_firsts,
            listener_routes,
        })
    }

    /// Every server, indexed by the numbers routes resolve to.
    pub fn servers(&self) -> &[ServerSpec] {
        &self.servers
    }

    /// Every pool, in config order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The settings of failover route number `index` (see [`RouteKind::Failover`]).
    pub fn failover(&self, index: usize) -> Option<&FailoverSpec> {
        self.failovers.get(index)
    }

    /// The settings of parallel route number `index` (see [`RouteKind::Parallel`]).
    pub fn parallel(&self, index: usize) -> Option<&ParallelSpec> {
        self.parallels.get(index)
    }

    /// The settings of warm_first route number `index` (see [`RouteKind::WarmFirst`]).
    pub fn warm_first(&self, index: usize) -> Option<&WarmFirstSpec> {
        self.warm_firsts.get(index)
    }

    /// True when some warm_first route has leases (a multi-key get may then need reading key
    /// by key).
    pub fn has_leases(&self) -> bool {
        self.warm_firsts.iter().any(|w| w.leases.is_some())
    }

    /// The lease settings of `route` and its warm and cold pools, when it is a warm_first
    /// route with leases.
    pub fn leases_of(&self, route: usize) -> Option<(&WarmFirstSpec, LeaseRules)> {
        let RouteKind::WarmFirst(index) = self.routes.get(route)?.kind else {
            return None;
        };
        let spec = self.warm_firsts.get(index)?;
        Some((spec, spec.leases?))
    }

    /// The pools route `route` may send a key to, in order (empty for blind_forward).
    /// Every server route `route` can send a key to (its one server, or its pools' servers).
    pub fn servers_of(&self, route: &Route) -> Vec<usize> {
        match route.kind {
            RouteKind::BlindForward(server) => vec![server],
            _ => self
                .pools_of(route)
                .iter()
                .filter_map(|&p| self.pools.get(p))
                .flat_map(|p| p.servers.iter().copied())
                .collect(),
        }
    }

    /// The pools of route `route`, in its order of preference (none for `blind_forward`).
    pub fn pools_of<'a>(&'a self, route: &'a Route) -> &'a [usize] {
        let pools = match &route.kind {
            RouteKind::BlindForward(_) => Some(&[][..]),
            RouteKind::RoundRobin(pool) | RouteKind::ConsistentHash(pool) => {
                Some(std::slice::from_ref(pool))
            }
            RouteKind::Failover(f) => self.failovers.get(*f).map(|f| &f.pools[..]),
            RouteKind::Parallel(p) => self.parallels.get(*p).map(|p| &p.pools[..]),
            RouteKind::WarmFirst(w) => self
                .warm_firsts
                .get(*w)
                .and_then(|w| self.failovers.get(w.read))
                .map(|f| &f.pools[..]),
        };
        debug_assert!(
            pools.is_some(),
            "route '{}' is {:?}, which this router does not have: a route's settings are \
             compiled with it (a route of another router?)",
            route.name,
            route.kind
        );
        // Release builds treat it as a route to no pool.
        pools.unwrap_or_default()
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The index of the route listener `listener` uses for `command` on `key`, if any.
    #[inline]
    pub fn route(&self, listener: usize, command: Command, key: &[u8]) -> Option<usize> {
        self.listener_routes
            .get(listener)?
            .iter()
            .copied()
            .find(|&r| {
                self.routes
                    .get(r)
                    .is_some_and(|route| route.accepts(command, key))
            })
    }

    /// The most servers one key may be asked of (the most pools of any route): the width of
    /// a multi-key retrieval's chains.
    pub fn chain_width(&self) -> usize {
        self.routes
            .iter()
            .map(|r| self.pools_of(r).len())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Every server of every pool that the routes of `listener` reach, without repeats (the
    /// targets of `flush_all`).
    pub fn reachable_servers(&self, listener: usize) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let order = self.listener_routes.get(listener).map_or(&[][..], |v| v);
        for route in order.iter().filter_map(|&r| self.routes.get(r)) {
            if let RouteKind::BlindForward(server) = route.kind {
                if !out.contains(&server) {
                    out.push(server);
                }
            }
            let pools = self.pools_of(route);
            for pool in pools.iter().filter_map(|&p| self.pools.get(p)) {
                for &server in &pool.servers {
                    if !out.contains(&server) {
                        out.push(server);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
