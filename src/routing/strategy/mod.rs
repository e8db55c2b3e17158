//! Route strategies: which server a route sends a key to. One module per strategy; the
//! per-worker state they keep (round-robin turns) lives in [`Strategies`].
//!
//! A strategy decides targets; the exchange that carries the request (see
//! [`crate::exchange`]) decides what to do with their replies. A strategy with several targets
//! per key (failover, parallel, warm_first) adds its module here and its exchange kind there.

pub mod blind_forward;
pub mod consistent_hash;
pub mod round_robin;

use crate::observe::health::HealthBoard;
use crate::routing::{Pool, RouteKind, Router};
use round_robin::RoundRobin;

/// What one multi-key request remembers between its keys: the round-robin pick of a route, so
/// the keys of one request are not scattered one per server.
pub type Memo = Option<(usize, usize)>;

/// One worker's strategy state.
#[derive(Debug, Default)]
pub struct Strategies {
    round_robin: RoundRobin,
    /// Per pool, this worker's copy of it without its ejected servers (`None`: none ejected).
    ejected: Vec<Option<Pool>>,
}

impl Strategies {
    /// State for the pools of `router`.
    pub fn new(router: &Router) -> Strategies {
        Strategies {
            round_robin: RoundRobin::new(router.pools().len()),
            ejected: Vec::new(),
        }
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
            RouteKind::ConsistentHash(pool) => Some(self.placing(router, pool)?.servers_for4(keys)),
            _ => None,
        }
    }

    /// The server route `route_index` of `router` picks for `key`. `usable` tells whether a
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
            RouteKind::BlindForward(server) => Some(blind_forward::pick(server)),
            RouteKind::ConsistentHash(pool) => self
                .placing(router, pool)
                .map(|p| consistent_hash::pick(p, key)),
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
            RouteKind::WarmFirst(w) => {
                // What reaches here is the cold tier's (cas reads): see crate::worker::tiered.
                let pool = router.warm_first(w)?.cold;
                self.placing(router, pool).map(|p| p.server_for(key))
            }
            RouteKind::Failover(_) | RouteKind::Parallel(_) => {
                // Routes with several targets per key are dispatched by their chains; this is
                // the first of them.
                let pool = *router.pools_of(route).first()?;
                self.placing(router, pool).map(|p| p.server_for(key))
            }
        }
    }

    /// The server of pool `pool` that owns `key` on this worker's ring (without ejected
    /// servers).
    pub fn server_in(&self, router: &Router, pool: usize, key: &[u8]) -> Option<usize> {
        self.placing(router, pool).map(|p| p.server_for(key))
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

    /// The servers failover route `index` tries for `key`, in order: the key's server in each
    /// of its pools (on this worker's rings, without ejected servers), each once.
    pub fn failover_chain(&self, router: &Router, index: usize, key: &[u8], out: &mut Vec<usize>) {
        out.clear();
        if let Some(spec) = router.failover(index) {
            self.chain(router, &spec.pools, key, out);
        }
    }
}
