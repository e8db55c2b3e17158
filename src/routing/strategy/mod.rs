//! Server placement: which server of a pool holds a key, and the per-worker state that takes
//! (round-robin turns, rings without this worker's ejected servers, the generator of
//! `distribution: random` pools), in [`Strategies`]. How each strategy plans a request from
//! these picks is its own module of [`crate::routing::plan`]; the exchange that carries the
//! request (see [`crate::exchange`]) decides what to do with the replies.

pub mod round_robin;

use std::cell::Cell;

use crate::observe::health::HealthBoard;
use crate::routing::{ring, Pool, RouteKind, Router};
use round_robin::RoundRobin;

/// What one multi-key request remembers between its keys: the round-robin pick of a route, so
/// the keys of one request are not scattered one per server.
pub type Memo = Option<(usize, usize)>;

/// One worker's strategy state.
#[derive(Debug)]
pub struct Strategies {
    round_robin: RoundRobin,
    /// Per pool, this worker's copy of it without its ejected servers (`None`: none ejected).
    ejected: Vec<Option<Pool>>,
    /// This worker's SplitMix64 state for `distribution: random` pools (see
    /// [`ring::Ring::server_for`]): its own, so a pick writes nothing another worker touches.
    /// A `Cell` because key lookups take `&self`; the worker is its only user (`Strategies`
    /// is `Send`, not `Sync`).
    random: Cell<u64>,
}

impl Strategies {
    /// State for the pools of `router`, with a generator seeded anew (so each worker's
    /// `random` picks differ from the others').
    pub fn new(router: &Router) -> Strategies {
        Strategies::seeded(router, ring::random_seed())
    }

    /// State for the pools of `router`, the `random` generator starting from `seed`.
    pub fn seeded(router: &Router, seed: u64) -> Strategies {
        Strategies {
            round_robin: RoundRobin::new(router.pools().len()),
            ejected: Vec::new(),
            random: Cell::new(seed),
        }
    }

    /// The server (global index) owning `key` on `pool`, drawing from this worker's generator
    /// when the pool's distribution is `random`.
    #[inline]
    fn server_for(&self, pool: &Pool, key: &[u8]) -> usize {
        let mut random = self.random.get();
        let server = pool.server_for(key, &mut random);
        self.random.set(random);
        server
    }

    /// Rebuilds the rings of pools with ejected servers (down, with `eject: true`), after a
    /// change of the health epoch. Pools with none ejected use the router's ring.
    pub fn eject(&mut self, router: &Router, health: &HealthBoard) {
        self.ejected = router
            .pools()
            .iter()
            .map(|pool| pool.without(|server| health.is_ejected(server)))
            .collect();
        let ejected: Vec<&str> = self.ejected.iter().flatten().map(|p| &p.name[..]).collect();
        log::debug!("rings rebuilt; pools with servers ejected: {ejected:?}");
    }

    /// The pool keys of pool `index` are placed on: the router's, or this worker's copy
    /// without ejected servers.
    #[inline]
    fn placing<'a>(&'a self, router: &'a Router, index: usize) -> Option<&'a Pool> {
        match self.ejected.get(index) {
            Some(Some(pool)) => Some(pool),
            _ => router.pools().get(index),
        }
    }

    /// The servers route `route_index` picks for four keys at once, when its strategy places
    /// keys by hash (`consistent_hash`); `None` for the others (pick them one by one).
    #[inline]
    pub fn pick4(
        &self,
        router: &Router,
        route_index: usize,
        keys: [&[u8]; 4],
    ) -> Option<[usize; 4]> {
        match router.routes().get(route_index)?.kind {
            RouteKind::ConsistentHash(pool) => {
                let mut random = self.random.get();
                let servers = self.placing(router, pool)?.servers_for4(keys, &mut random);
                self.random.set(random);
                Some(servers)
            }
            _ => None,
        }
    }

    /// The server route `route_index` of `router` picks for `key`, on a route with one server
    /// per key (`blind_forward`, `consistent_hash`, `round_robin`). `usable` tells whether a
    /// server can take requests now (not in connect backoff).
    pub fn pick(
        &mut self,
        router: &Router,
        route_index: usize,
        key: &[u8],
        memo: &mut Memo,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let route = router.routes().get(route_index)?;
        match route.kind {
            RouteKind::BlindForward(server) => Some(server),
            RouteKind::ConsistentHash(pool) => {
                self.placing(router, pool).map(|p| self.server_for(p, key))
            }
            RouteKind::RoundRobin(pool_index) => {
                if let Some((r, server)) = *memo {
                    if r == route_index {
                        return Some(server);
                    }
                }
                let pool = router.pools().get(pool_index)?;
                let server = self.round_robin.next(pool, pool_index, usable);
                *memo = Some((route_index, server));
                Some(server)
            }
            RouteKind::Failover(_) | RouteKind::Parallel(_) | RouteKind::WarmFirst(_) => {
                // Their keys have chains of servers (see `Strategies::chain`): a pick of one
                // server for them is a planning bug.
                debug_assert!(
                    false,
                    "a one-server pick on a route with several servers per key"
                );
                None
            }
        }
    }

    /// The server of pool `pool` that owns `key` on this worker's ring (without ejected
    /// servers).
    pub fn server_in(&self, router: &Router, pool: usize, key: &[u8]) -> Option<usize> {
        self.placing(router, pool).map(|p| self.server_for(p, key))
    }

    /// The key's server in each pool of `pools`, in order, each once.
    pub fn chain(&self, router: &Router, pools: &[usize], key: &[u8], out: &mut Vec<usize>) {
        out.clear();
        for &pool in pools {
            if let Some(server) = self.server_in(router, pool, key) {
                if !out.contains(&server) {
                    out.push(server);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Format};

    fn router(yaml: &str) -> Router {
        let config = Config::parse(yaml, "test.yaml", Format::Yaml)
            .unwrap_or_else(|e| panic!("does not parse:\n{e}"));
        Router::new(&config).unwrap_or_else(|e| panic!("does not compile: {e}"))
    }

    #[test]
    fn a_random_pool_draws_from_the_workers_own_generator() {
        let r = router(
            "listeners: [{name: main, bind: '127.0.0.1:0'}]\n\
             backends:\n  p:\n    distribution: random\n    servers: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']\n\
             routes: [{name: all, match: '*', strategy: consistent_hash, backend: p}]\n",
        );
        // Each lookup advances the worker's state (kept through the `Cell`), so one key is
        // spread over every server, by every way of asking.
        let mut s = Strategies::seeded(&r, 1);
        let mut seen = [0usize; 3];
        for _ in 0..300 {
            let picks = [
                s.pick(&r, 0, b"k", &mut None, |_| true),
                s.server_in(&r, 0, b"k"),
                s.pick4(&r, 0, [b"k"; 4]).map(|four| four[3]),
            ];
            for server in picks.into_iter().flatten() {
                if let Some(n) = seen.get_mut(server) {
                    *n += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 200), "{seen:?}");
        // The same seed gives the same picks: nothing but the worker's state is involved.
        let (a, b) = (Strategies::seeded(&r, 9), Strategies::seeded(&r, 9));
        for _ in 0..50 {
            assert_eq!(a.server_in(&r, 0, b"k"), b.server_in(&r, 0, b"k"));
        }
    }
}
