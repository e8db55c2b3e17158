//! Planning for the routes that send a key to several servers at once (`parallel`, and
//! `warm_first`'s writes and touches), and replication (see
//! [`crate::upstream::side_effects`]).
//!
//! What each command family does (the contract the README and docs/configuration.md state):
//! * `parallel`: reads go to the key's server in every pool at once; `get`/`gat`/`mg` take the
//!   first hit to arrive, `gets`/`gats`/`mg ... c` the first pool in order that has the key
//!   (so a cas token is that server's). Writes go to all and are answered per `writes`; `cas`,
//!   `incr`/`decr`, `ma`, `ms ... C` and `md ... C` go to all and the first pool's reply
//!   answers.
//! * `warm_first`: plain reads (`get`, `mg` without `c`/`T`) go warm first, then cold, with
//!   write-backs (the failover read path, see [`crate::exchange::failover`]); `gets` and
//!   `mg ... c` are the cold tier's; `gat`/`gats`/`mg ... T` go to both, preferring warm's hit
//!   (`gats`: cold's). Writes go to cold and warm at once and cold's reply answers; `cas`,
//!   `incr`/`decr`, `ma`, `ms ... C` and `md ... C` go to cold and delete the warm copy
//!   instead.

use bytes::Bytes;

use super::{Context, Planner, StartKind};
use crate::exchange::multiget::AskedKey;
use crate::exchange::parallel::Answer;
use crate::exchange::parallel_get::ParallelGet;
use crate::exchange::write_back;
use crate::exchange::{Framing, Send};
use crate::observe::stats::WorkerStats;
use crate::protocol::{Command, MetaFlags, Request};
use crate::routing::shape::{touches, Family, Shape, WarmPlan};
use crate::routing::RouteKind;

impl Planner {
    /// The exchange for a request whose first key, `key`, takes route `route`, when the route
    /// sends it to several servers at once (parallel routes; warm_first's writes and touches);
    /// None when the request is not one for this path. A single key's requests are left in
    /// [`Planner::sends`].
    pub(super) fn plan_tiered(
        &mut self,
        cx: &Context,
        (request, bytes, key): (&Request, &Bytes, &[u8]),
        route: usize,
        shape: Shape,
    ) -> Option<StartKind> {
        let kind = match self.router.routes().get(route).map(|r| r.kind) {
            Some(kind @ RouteKind::Parallel(_)) => kind,
            // Plain and cas reads of warm_first routes take the ordinary paths.
            Some(kind @ RouteKind::WarmFirst(_))
                if !matches!(shape.plan, WarmPlan::ReadThrough | WarmPlan::Cold) =>
            {
                kind
            }
            _ => return None,
        };
        let router = &self.router;
        let family = shape.family;
        let mut chain = Vec::new();
        let answer = match kind {
            RouteKind::Parallel(p) => {
                let spec = router.parallel(p)?;
                self.strategies.chain(router, &spec.pools, key, &mut chain);
                match family {
                    Family::Read => Answer::FirstHit,
                    Family::CasRead => Answer::InOrder,
                    Family::Write => Answer::Writes(spec.writes),
                    Family::Conditional => Answer::Of(0),
                }
            }
            RouteKind::WarmFirst(w) => {
                let spec = router.warm_first(w)?;
                let pools = match shape.plan {
                    WarmPlan::ReadThrough | WarmPlan::Cold => return None,
                    WarmPlan::Both { cold_first: false } => [spec.warm, spec.cold],
                    _ => [spec.cold, spec.warm],
                };
                self.strategies.chain(router, &pools, key, &mut chain);
                match shape.plan {
                    WarmPlan::Both { .. } => Answer::InOrder,
                    _ => Answer::Of(0),
                }
            }
            _ => return None,
        };
        if request.key_count > 1 {
            if !family.is_read() {
                return None;
            }
            let get = self.plan_parallel_get(cx, (request, bytes), shape, 0);
            return Some(StartKind::ParallelGet(get));
        }
        self.detail.route_request(route);
        let framing = Framing::of(request);
        let invalidate = matches!(kind, RouteKind::WarmFirst(_)) && family == Family::Conditional;
        for (i, &server) in chain.iter().enumerate() {
            let (bytes, framing) = match (invalidate, i) {
                (true, 1..) => invalidation(request, bytes),
                _ => (bytes.clone(), framing),
            };
            self.sends.push(Send {
                server,
                part: 0,
                bytes,
                value: None,
                framing,
                stream: false,
            });
        }
        Some(StartKind::Parallel {
            answer,
            lookup: family.is_read(),
        })
    }

    /// A multi-key retrieval whose keys are each asked of several servers at once (see
    /// [`crate::exchange::parallel_get`]). Each key's servers follow its own route: every pool
    /// of a parallel route, both tiers of a warm_first route (cold first for cas reads), the
    /// one server of other routes; a key without a route is a miss. The first `counted` keys
    /// were already counted in their routes' stats.
    pub(super) fn plan_parallel_get(
        &mut self,
        cx: &Context,
        (request, bytes): (&Request, &Bytes),
        shape: Shape,
        counted: usize,
    ) -> Box<ParallelGet> {
        let family = shape.family;
        let width = self
            .router
            .routes()
            .iter()
            .map(|r| self.router.pools_of(r).len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut servers: Vec<usize> = Vec::new();
        let mut chains: Vec<u32> = Vec::with_capacity(request.key_count * width);
        let mut asked = Vec::with_capacity(request.key_count);
        let mut chain = Vec::with_capacity(width);
        let mut memo = None;
        let mut first_parallel = None;
        for (index, key) in request.keys(bytes).enumerate() {
            let count = index >= counted;
            asked.push(AskedKey::new(bytes, key, 0));
            chain.clear();
            let router = &self.router;
            let route = router.route(cx.listener, request.command, key);
            match route.and_then(|r| Some((r, router.routes().get(r)?.kind))) {
                Some((route, RouteKind::Parallel(p))) => {
                    first_parallel.get_or_insert(true);
                    if count {
                        self.detail.route_request(route);
                    }
                    if let Some(spec) = router.parallel(p) {
                        self.strategies.chain(router, &spec.pools, key, &mut chain);
                    }
                }
                Some((route, RouteKind::WarmFirst(w))) => {
                    first_parallel.get_or_insert(false);
                    if count {
                        self.detail.route_request(route);
                    }
                    if let Some(spec) = router.warm_first(w) {
                        let pools = match family {
                            Family::CasRead => [spec.cold, spec.warm],
                            _ => [spec.warm, spec.cold],
                        };
                        // gets is the cold tier's alone; the others ask both.
                        let cold_only =
                            family == Family::CasRead && !touches(request, MetaFlags::EMPTY);
                        let pools = if cold_only { &pools[..1] } else { &pools[..] };
                        self.strategies.chain(router, pools, key, &mut chain);
                    }
                }
                Some((route, _)) => {
                    first_parallel.get_or_insert(false);
                    let picked = self.pick_on_route(route, key, cx, &mut memo, count);
                    chain.extend(picked);
                }
                None => {
                    WorkerStats::add(&self.stats.no_route, 1);
                }
            }
            for place in 0..width {
                let position = chain.get(place).map(|&server| {
                    match servers.iter().position(|&s| s == server) {
                        Some(p) => p,
                        None => {
                            servers.push(server);
                            servers.len() - 1
                        }
                    }
                });
                chains.push(position.map_or(u32::MAX, |p| u32::try_from(p).unwrap_or(u32::MAX)));
            }
        }
        // Plain reads of parallel routes take the first hit to arrive; cas reads, and reads
        // of warm_first routes, the first server in order that has the key.
        let in_order = !(family == Family::Read && first_parallel == Some(true));
        let soft = cx.soft_bytes;
        let window =
            self.key_bytes
                .first_window(cx.multiget_window.max(1), soft, servers.len().max(1));
        Box::new(ParallelGet::new(
            *request,
            bytes.clone(),
            asked,
            chains,
            width,
            servers,
            in_order,
            (window, soft),
        ))
    }

    /// True when a write of shape `shape` on route `route` must wait while its client has a
    /// warm_first read that may still go to the cold tier: sent now, the write could reach
    /// cold first and be seen by that earlier read.
    pub(super) fn holds_write(&self, route: usize, shape: Shape) -> bool {
        matches!(
            self.router.routes().get(route).map(|r| r.kind),
            Some(RouteKind::WarmFirst(_))
        ) && matches!(
            shape.plan,
            WarmPlan::WriteBoth | WarmPlan::ColdInvalidateWarm
        )
    }

    /// True when a request of shape `shape` on route `route` is asked of several servers at
    /// once: any request of a parallel route, and a touch-read (`gat`, `gats`, `mg ... T`) of
    /// a warm_first route.
    pub(super) fn asks_all_at_once(&self, route: usize, shape: Shape) -> bool {
        match self.router.routes().get(route).map(|r| r.kind) {
            Some(RouteKind::Parallel(_)) => true,
            Some(RouteKind::WarmFirst(_)) => matches!(shape.plan, WarmPlan::Both { .. }),
            _ => false,
        }
    }

    /// Copies a write on route `route` to every `replicate` side effect of that route that
    /// copies its command: the same bytes, to the target pool's server for `key`.
    pub(super) fn replicate(&mut self, route: usize, request: &Request, bytes: &Bytes, key: &[u8]) {
        for (effect, pool) in self.effects.replicas_of(route, request.command) {
            let Some(server) = self.strategies.server_in(&self.router, pool, key) else {
                continue;
            };
            self.side.push((
                effect,
                Send {
                    server,
                    part: 0,
                    bytes: bytes.clone(),
                    value: None,
                    framing: Framing::of(request),
                    stream: false,
                },
            ));
        }
    }
}

/// The delete that drops the warm copy of the request's key after a conditional write went to
/// cold, framed to be read whole (its reply is dropped; a failure is counted). The key is the
/// one on the wire (still base64 when the `b` flag says so, and the delete carries `b` too).
fn invalidation(request: &Request, bytes: &[u8]) -> (Bytes, Framing) {
    let key = request.first_key(bytes);
    let meta = matches!(
        request.command,
        Command::MetaSet | Command::MetaArithmetic | Command::MetaDelete
    );
    let (bytes, command) = if meta {
        (
            write_back::meta_delete(key, request.base64_key),
            Command::MetaDelete,
        )
    } else {
        (write_back::classic_delete(key), Command::Delete)
    };
    (bytes, Framing::whole(command))
}
