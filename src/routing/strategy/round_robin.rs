//! `round_robin`: each key goes to the next server of the pool in turn, skipping servers in
//! connect backoff. The turn is kept per worker, so nothing is shared between workers.

use crate::routing::Pool;

/// Per-worker round-robin cursors, one per pool (no sharing between workers).
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursors: Vec<usize>,
}

impl RoundRobin {
    /// Cursors for `pools` pools.
    pub fn new(pools: usize) -> Self {
        RoundRobin {
            cursors: vec![0; pools],
        }
    }

    /// The next server of `pool` in turn for which `usable` holds (or the next in turn when
    /// none does, so its request fails fast like any request to a down server).
    pub fn next(
        &mut self,
        pool: &Pool,
        pool_index: usize,
        usable: impl Fn(usize) -> bool,
    ) -> usize {
        debug_assert!(
            !pool.servers.is_empty(),
            "pool '{}' has no servers: the config loader refuses a backend without servers",
            pool.name
        );
        debug_assert!(
            pool_index < self.cursors.len(),
            "no round-robin cursor for pool {pool_index} ({} cursors): there is one for every \
             pool of the router the strategies were built for",
            self.cursors.len()
        );
        let count = pool.servers.len().max(1);
        let Some(cursor) = self.cursors.get_mut(pool_index) else {
            return pool.servers.first().copied().unwrap_or(0);
        };
        let start = *cursor;
        for step in 0..count {
            let position = (start + step) % count;
            if let Some(&server) = pool.servers.get(position) {
                if usable(server) {
                    *cursor = position + 1;
                    return server;
                }
            }
        }
        *cursor = start + 1;
        // `start % count` is a position in a non-empty list (asserted above).
        pool.servers.get(start % count).copied().unwrap_or(0)
    }
}
