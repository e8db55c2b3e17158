//! Planning a multi-key retrieval whose keys live on several servers (or are more than one
//! window, or take routes with several servers per key): each key placed by its own route,
//! with the chain of servers it is asked of and how (see [`crate::exchange::retrieval`]).

use bytes::Bytes;

use super::{start, Context, Plan, Planner, StartKind};
use crate::exchange::retrieval::{Ask, Retrieval};
use crate::exchange::{Tag, WriteBack};
use crate::observe::stats::WorkerStats;
use crate::protocol::{Command, Request};
use crate::routing::shape::{Family, Shape, WarmPlan};
use crate::routing::strategy::Memo;
use crate::routing::RouteKind;

/// A key of a route with one server per key (no next server to ask).
const ALONE: Ask = Ask::InTurn { miss_next: false };

impl Planner {
    /// [`Planner::pick_server`] of four keys that take the same hashing route (their hashes
    /// computed side by side); `None` when they do not, or the route does not hash.
    fn pick_server4(
        &mut self,
        cx: &Context,
        command: Command,
        keys: [&[u8]; 4],
        counts: [bool; 4],
    ) -> Option<[usize; 4]> {
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
        Some(servers)
    }

    /// A multi-key retrieval: every key asked of the servers its route gives it, replies
    /// merged in the asked order; keys that match no route are misses. `routed` carries what
    /// [`Planner::plan_keyed`] already did: how many keys it routed (and counted), and its
    /// round-robin memo, so those picks stand.
    pub(super) fn plan_retrieval(
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
        let mut retrieval = Retrieval::new(*request, bytes.clone(), self.chain_width);
        let mut chain = Vec::with_capacity(self.chain_width);
        let key = |retrieval: &Retrieval, index: usize| -> &[u8] {
            bytes.get(retrieval.key_range(index)).unwrap_or(&[])
        };
        let keys = retrieval.key_count();
        let mut index = 0;
        while index < keys {
            // Keys are placed four at a time where the route hashes them (their hashes
            // computed side by side), else one by one.
            if index + 4 <= keys {
                let four = [0, 1, 2, 3].map(|i| key(&retrieval, index + i));
                let counts = [0, 1, 2, 3].map(|i| index + i >= counted);
                if let Some(servers) = self.pick_server4(cx, request.command, four, counts) {
                    for (i, server) in servers.into_iter().enumerate() {
                        retrieval.set_chain(index + i, &[server], ALONE, None);
                    }
                    index += 4;
                    continue;
                }
            }
            let count = index >= counted;
            let (ask, write_back) = self.chain_of(
                cx,
                request.command,
                shape,
                key(&retrieval, index),
                (&mut memo, count),
                &mut chain,
            );
            if chain.is_empty() {
                // Answered (and counted) as a miss by the retrieval.
                WorkerStats::add(&self.stats.no_route, 1);
            }
            retrieval.set_chain(index, &chain, ask, write_back);
            index += 1;
        }
        let soft = cx.soft_bytes;
        let window =
            self.key_bytes
                .first_window(cx.multiget_window.max(1), soft, retrieval.server_count());
        retrieval.windows(window, soft);
        start(StartKind::Retrieval(Box::new(retrieval)), tag)
    }

    /// The servers `key` is asked of (into `chain`; left empty when no route takes it), how,
    /// and where its hits on later servers are written back. `memo` keeps a round-robin pick
    /// for the rest of the request; `count` adds the key to its route's counter.
    fn chain_of(
        &mut self,
        cx: &Context,
        command: Command,
        shape: Shape,
        key: &[u8],
        (memo, count): (&mut Memo, bool),
        chain: &mut Vec<usize>,
    ) -> (Ask, Option<WriteBack>) {
        chain.clear();
        let router = &self.router;
        let Some(route) = router.route(cx.listener, command, key) else {
            return (ALONE, None);
        };
        let Some(kind) = router.routes().get(route).map(|r| r.kind) else {
            return (ALONE, None);
        };
        let failover = match kind {
            RouteKind::Failover(f) => Some(f),
            RouteKind::WarmFirst(w) if shape.plan == WarmPlan::ReadThrough => {
                router.warm_first(w).map(|w| w.read)
            }
            _ => None,
        };
        if let Some(spec) = failover.and_then(|f| router.failover(f)) {
            // Its first server now; the others in turn if that one cannot answer.
            if count {
                self.detail.route_request(route);
            }
            self.strategies.chain(router, &spec.pools, key, chain);
            let ask = Ask::InTurn {
                miss_next: spec.miss_next,
            };
            return (ask, spec.write_back);
        }
        match kind {
            RouteKind::Parallel(p) => {
                if count {
                    self.detail.route_request(route);
                }
                if let Some(spec) = router.parallel(p) {
                    self.strategies.chain(router, &spec.pools, key, chain);
                }
                // Plain reads take the first hit to arrive; cas reads the first pool in
                // order that has the key (its cas token).
                let in_order = shape.family != Family::Read;
                (Ask::AtOnce { in_order }, None)
            }
            RouteKind::WarmFirst(w) => {
                if count {
                    self.detail.route_request(route);
                }
                let Some(spec) = router.warm_first(w) else {
                    return (ALONE, None);
                };
                let pools = match shape.plan {
                    // gets: the cold tier's alone.
                    WarmPlan::Both { cold_first: false } => &[spec.warm, spec.cold][..],
                    WarmPlan::Both { cold_first: true } => &[spec.cold, spec.warm][..],
                    _ => std::slice::from_ref(&spec.cold),
                };
                self.strategies.chain(router, pools, key, chain);
                (Ask::AtOnce { in_order: true }, None)
            }
            _ => {
                chain.extend(self.pick_on_route(route, key, cx, memo, count));
                (ALONE, None)
            }
        }
    }
}
