//! Planning a multi-key retrieval whose keys live on several servers (or are more than one
//! window, or take routes with several servers per key): each key placed by its own route,
//! with the chain of servers it is asked of and how (see [`crate::exchange::retrieval`]).

use bytes::Bytes;

use super::{start, Context, Plan, Planner, StartKind, ALONE};
use crate::exchange::failover::{Failover, Rules};
use crate::exchange::lease::{one_key_get, Lease};
use crate::exchange::lease_batch::{Lane, LeaseBatch, MAX_KEYS};
use crate::exchange::retrieval::{Ask, Retrieval};
use crate::exchange::{Tag, WriteBack};
use crate::observe::stats::WorkerStats;
use crate::protocol::{Command, Request};
use crate::routing::shape::Shape;
use crate::routing::shape::WarmPlan;
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
        // A classic retrieval: its shape is one match, worked out once for all its keys.
        let shape = Shape::of(request, &bytes);
        if shape.plan == WarmPlan::ReadThrough
            && self.has_leases
            && request
                .keys(&bytes)
                .any(|key| self.leased_route(cx, request.command, key).is_some())
        {
            return self.plan_lease_batch(cx, request, &bytes, routed, shape, tag);
        }
        let (counted, mut memo) = routed;
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

    /// A plain multi-key `get` with some key on a warm_first route with leases: every key read
    /// on its own, as its route reads one key (see [`crate::exchange::lease_batch`]).
    fn plan_lease_batch(
        &mut self,
        cx: &Context,
        request: &Request,
        bytes: &Bytes,
        routed: (usize, Memo),
        shape: Shape,
        tag: Option<Tag>,
    ) -> Plan {
        if request.key_count > MAX_KEYS {
            return Plan::Reply {
                bytes: Bytes::from_static(TOO_MANY_KEYS),
                close: false,
            };
        }
        let (counted, mut memo) = routed;
        let mut lanes = Vec::with_capacity(request.key_count);
        let mut chain = Vec::with_capacity(self.chain_width);
        for (index, key) in request.keys(bytes).enumerate() {
            let count = index >= counted;
            if let Some(route) = self.leased_route(cx, request.command, key) {
                let lane = self.lease_lane(route, key);
                if count && lane.is_some() {
                    self.detail.route_request(route);
                }
                lanes.push(lane.map_or(Lane::Unrouted, |l| Lane::Lease(Box::new(l))));
                continue;
            }
            let (ask, write_back) = self.chain_of(
                cx,
                request.command,
                shape,
                key,
                (&mut memo, count),
                &mut chain,
            );
            let lane = match one_key_get(&get_line(key)) {
                Some(one) if !chain.is_empty() => {
                    let rules = Rules {
                        // A parallel route's key: its first hit in chain order.
                        miss_next: !matches!(ask, Ask::InTurn { miss_next: false }),
                        ttl: None,
                        write_back,
                    };
                    let failover = Failover::new(one, get_line(key), chain.clone(), rules);
                    Lane::Plain(Box::new(failover))
                }
                _ => {
                    WorkerStats::add(&self.stats.no_route, 1);
                    Lane::Unrouted
                }
            };
            lanes.push(lane);
        }
        let batch = LeaseBatch::new(lanes, cx.multiget_window.max(1));
        start(StartKind::LeaseBatch(Box::new(batch)), tag)
    }

    /// The route of `key` for `command`, when it is a warm_first route with leases.
    fn leased_route(&self, cx: &Context, command: Command, key: &[u8]) -> Option<usize> {
        let route = self.router.route(cx.listener, command, key)?;
        self.router.leases_of(route).map(|_| route)
    }

    /// The lease read of `key` on leased route `route`.
    fn lease_lane(&self, route: usize, key: &[u8]) -> Option<Lease> {
        let (spec, rules) = self.router.leases_of(route)?;
        let warm = self.strategies.server_in(&self.router, spec.warm, key)?;
        let cold = self.strategies.server_in(&self.router, spec.cold, key)?;
        Lease::for_key(key, warm, cold, rules)
    }

    /// The servers `key` is asked of (into `chain`; left empty when no route takes it), how,
    /// and where its hits on later servers are written back, as its route's strategy says.
    /// `memo` keeps a round-robin pick for the rest of the request; `count` adds the key to
    /// its route's counter.
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
        if count && !kind.has_one_server_per_key() {
            // (`pick_on_route` counts the others.)
            self.detail.route_request(route);
        }
        match kind {
            RouteKind::BlindForward(_)
            | RouteKind::ConsistentHash(_)
            | RouteKind::RoundRobin(_) => {
                chain.extend(self.pick_on_route(route, key, cx, memo, count));
                (ALONE, None)
            }
            RouteKind::Failover(f) => self.failover_chain(f, key, chain),
            RouteKind::Parallel(p) => (self.parallel_chain(p, shape, key, chain), None),
            RouteKind::WarmFirst(w) => self.warm_first_chain(w, shape, key, chain),
        }
    }
}

/// The answer to a multi-key get with a leased key and more keys than a batch takes.
const TOO_MANY_KEYS: &[u8] =
    b"CLIENT_ERROR too many keys (a get with keys under leases takes at most 1048576)\r\n";

/// `get <key>\r\n`.
fn get_line(key: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(key.len() + 6);
    line.extend_from_slice(b"get ");
    line.extend_from_slice(key);
    line.extend_from_slice(b"\r\n");
    Bytes::from(line)
}
