//! Planning a multi-key retrieval whose keys live on several servers (or are more than one
//! window): each key placed by its own route, keys of failover routes with the rest of their
//! chain kept for when their first server cannot answer.

use bytes::Bytes;

use super::{start, Context, Plan, Planner, StartKind};
use crate::exchange::multiget::AskedKey;
use crate::exchange::split_get::{Fallbacks, SplitGet};
use crate::exchange::Tag;
use crate::observe::stats::WorkerStats;
use crate::protocol::{Command, Request};
use crate::routing::shape::Shape;
use crate::routing::strategy::Memo;
use crate::routing::RouteKind;

impl Planner {
    /// [`Planner::pick_server`] of four keys that take the same hashing route (their hashes
    /// computed side by side); `None` when they do not, or the route does not hash.
    fn pick_server4(
        &mut self,
        cx: &Context,
        command: Command,
        keys: [&[u8]; 4],
        counts: [bool; 4],
    ) -> Option<[Option<usize>; 4]> {
        let router = &self.router;
        let [first, rest @ ..] = keys;
        let route = router.route(cx.listener, command, first)?;
        if !router
            .routes()
            .get(route)
            .is_some_and(|r| matches!(r.kind, RouteKind::ConsistentHash(_)))
        {
            return None;
        }
        if rest
            .iter()
            .any(|key| router.route(cx.listener, command, key) != Some(route))
        {
            return None;
        }
        let servers = self.strategies.pick4(router, route, keys)?;
        for _ in counts.iter().filter(|&&c| c) {
            self.detail.route_request(route);
        }
        Some(servers.map(Some))
    }

    /// A multi-key retrieval whose keys live on several servers: one request line per server
    /// with its keys, replies merged in the slot. Keys that match no route are misses.
    /// `routed` carries what [`Planner::plan_keyed`] already did: how many keys it routed (and
    /// counted), and its round-robin memo, so those picks stand.
    pub(super) fn plan_split(
        &mut self,
        cx: &Context,
        request: &Request,
        bytes: Bytes,
        routed: (usize, Memo),
        tag: Option<Tag>,
    ) -> Plan {
        let (counted, mut memo) = routed;
        // A classic retrieval: its shape is one match, worked out once for all its keys.
        let shape = Shape::of(request, &bytes);
        let mut servers: Vec<usize> = Vec::new();
        let mut asked: Vec<AskedKey> = request
            .keys(&bytes)
            .map(|key| AskedKey::new(&bytes, key, usize::MAX))
            .collect();
        // Keys are placed four at a time where the route hashes them (their hashes computed
        // side by side), else one by one. Keys of failover routes go to their first server,
        // and their others are kept for when it cannot answer.
        let mut fallbacks: Option<Fallbacks> = None;
        let mut orders_writes = false;
        let mut unrouted = 0;
        let mut chain = Vec::new();
        let mut index = 0;
        while index < asked.len() {
            let four = asked.get(index..index + 4).and_then(|a| {
                let keys = [a.first()?, a.get(1)?, a.get(2)?, a.get(3)?].map(|k| k.key(&bytes));
                let counts = [0, 1, 2, 3].map(|i| index + i >= counted);
                self.pick_server4(cx, request.command, keys, counts)
            });
            let picks: &[Option<usize>] = match &four {
                Some(servers) => servers,
                None => {
                    let key = asked.get(index).map_or(&[][..], |k| k.key(&bytes));
                    let count = index >= counted;
                    let route = self.router.route(cx.listener, request.command, key);
                    if route.is_some_and(|r| self.asks_all_at_once(r, shape)) {
                        // A key of a parallel route (or a warm_first touch): the whole request
                        // is asked in parallel, each key of its own servers.
                        let counted = counted.max(index);
                        let get = self.plan_parallel_get(cx, (request, &bytes), shape, counted);
                        return start(StartKind::ParallelGet(get), tag, false);
                    }
                    let server = match route.map(|r| (r, self.failover_index_for(r, shape))) {
                        Some((route, Some(f))) => {
                            // Its first server now; the others if that one cannot answer.
                            if count {
                                self.detail.route_request(route);
                            }
                            self.strategies
                                .failover_chain(&self.router, f, key, &mut chain);
                            if let (Some(spec), Some(rest)) = (
                                self.router.failover(f),
                                chain.get(1..).filter(|r| !r.is_empty()),
                            ) {
                                let depth = self.router.failover_depth();
                                let keys = asked.len();
                                let fallbacks =
                                    fallbacks.get_or_insert_with(|| Fallbacks::new(keys, depth));
                                fallbacks.set(index, rest, spec.miss_next);
                                if let (Some(wb), Some(&first)) = (spec.write_back, chain.first()) {
                                    fallbacks.set_write_back(index, first, wb);
                                }
                                orders_writes |= spec.orders_writes;
                            }
                            chain.first().copied()
                        }
                        Some((route, None)) => self.pick_on_route(route, key, cx, &mut memo, count),
                        None => None,
                    };
                    &[server][..]
                }
            };
            for (slot, &server) in asked.iter_mut().skip(index).zip(picks) {
                slot.part = match server {
                    Some(server) => match servers.iter().position(|&s| s == server) {
                        Some(part) => part,
                        None => {
                            servers.push(server);
                            servers.len() - 1
                        }
                    },
                    None => {
                        // Answered (and counted) as a miss by the split.
                        WorkerStats::add(&self.stats.no_route, 1);
                        unrouted += 1;
                        usize::MAX
                    }
                };
            }
            index += picks.len();
        }
        let soft = cx.soft_bytes;
        let window = self
            .key_bytes
            .first_window(cx.multiget_window.max(1), soft, servers.len());
        let mut split =
            SplitGet::new(*request, bytes, asked, servers, window, soft).with_unrouted(unrouted);
        if let Some(fallbacks) = fallbacks {
            split = split.with_fallbacks(fallbacks);
        }
        if orders_writes {
            // Released when the split is answered (see `Planner::holds_write`).
            split = split.holding_writes();
        }
        start(StartKind::SplitGet(Box::new(split)), tag, orders_writes)
    }
}
