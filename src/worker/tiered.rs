//! Dispatch of the routes that send a key to several servers at once (`parallel`, and
//! `warm_first`'s writes and touches), and replication (see [`crate::upstream::side_effects`]).
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

use std::time::Instant;

use bytes::Bytes;

use crate::exchange::multiget::AskedKey;
use crate::exchange::parallel::Answer;
use crate::exchange::parallel_get::ParallelGet;
use crate::exchange::write_back;
use crate::exchange::{Exchange, Framing, Send};
use crate::protocol::MetaFlags;
use crate::protocol::{Command, Request};
use crate::routing::shape::{touches, Family, Shape, WarmPlan};
use crate::routing::RouteKind;
use crate::worker::Worker;

impl Worker {
    /// The failover settings a request of shape `shape` reads through on route `route`: a
    /// failover route's, or a warm_first route's read path for a plain read.
    pub(crate) fn failover_index_for(&self, route: usize, shape: Shape) -> Option<usize> {
        match self.router.routes().get(route)?.kind {
            RouteKind::Failover(index) => Some(index),
            RouteKind::WarmFirst(w) if shape.plan == WarmPlan::ReadThrough => {
                self.router.warm_first(w).map(|w| w.read)
            }
            _ => None,
        }
    }

    /// Serves a request whose first key, `key`, takes route `route`, when the route sends it
    /// to several servers at once (parallel routes; warm_first's writes and touches). Returns
    /// false when the request is not one for this path.
    pub(crate) fn forward_tiered(
        &mut self,
        client: usize,
        listener: usize,
        (request, bytes, key): (&Request, &Bytes, &[u8]),
        route: usize,
        shape: Shape,
        now: Instant,
    ) -> bool {
        let kind = match self.router.routes().get(route).map(|r| r.kind) {
            Some(kind @ RouteKind::Parallel(_)) => kind,
            // Plain and cas reads of warm_first routes take the ordinary paths.
            Some(kind @ RouteKind::WarmFirst(_))
                if !matches!(shape.plan, WarmPlan::ReadThrough | WarmPlan::Cold) =>
            {
                kind
            }
            _ => return false,
        };
        let router = self.router.clone();
        let family = shape.family;
        let mut chain = Vec::new();
        let answer = match kind {
            RouteKind::Parallel(p) => {
                let Some(spec) = router.parallel(p) else {
                    return false;
                };
                self.strategies.chain(&router, &spec.pools, key, &mut chain);
                match family {
                    Family::Read => Answer::FirstHit,
                    Family::CasRead => Answer::InOrder,
                    Family::Write => Answer::Writes(spec.writes),
                    Family::Conditional => Answer::Of(0),
                }
            }
            RouteKind::WarmFirst(w) => {
                let Some(spec) = router.warm_first(w) else {
                    return false;
                };
                let plan = shape.plan;
                let pools = match plan {
                    WarmPlan::ReadThrough | WarmPlan::Cold => return false,
                    WarmPlan::Both { cold_first: false } => [spec.warm, spec.cold],
                    _ => [spec.cold, spec.warm],
                };
                self.strategies.chain(&router, &pools, key, &mut chain);
                match plan {
                    WarmPlan::Both { .. } => Answer::InOrder,
                    _ => Answer::Of(0),
                }
            }
            _ => return false,
        };
        if request.key_count > 1 {
            if !family.is_read() {
                return false;
            }
            self.forward_parallel_get(client, listener, (request, bytes), shape, now, 0);
            return true;
        }
        self.detail.route_request(route);
        let framing = Framing::of(request);
        let invalidate = matches!(kind, RouteKind::WarmFirst(_)) && family == Family::Conditional;
        let lookup = family.is_read();
        let sends = chain.iter().enumerate().map(|(i, &server)| {
            let (bytes, framing) = match (invalidate, i) {
                (true, 1..) => invalidation(request, bytes),
                _ => (bytes.clone(), framing),
            };
            Send {
                server,
                part: 0,
                bytes,
                value: None,
                framing,
                stream: false,
                lookups: 0,
            }
        });
        self.launch(client, now, |slot, fx| {
            Exchange::parallel(slot, sends, answer, lookup, fx)
        });
        true
    }

    /// Sends a multi-key retrieval whose keys are each asked of several servers at once (see
    /// [`crate::exchange::parallel_get`]). Each key's servers follow its own route: every pool
    /// of a parallel route, both tiers of a warm_first route (cold first for cas reads), the
    /// one server of other routes; a key without a route is a miss. The first `counted` keys
    /// were already counted in their routes' stats.
    pub(crate) fn forward_parallel_get(
        &mut self,
        client: usize,
        listener: usize,
        (request, bytes): (&Request, &Bytes),
        shape: Shape,
        now: Instant,
        counted: usize,
    ) {
        let router = self.router.clone();
        let family = shape.family;
        let width = router
            .routes()
            .iter()
            .map(|r| router.pools_of(r).len())
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
            let route = router.route(listener, request.command, key);
            match route.and_then(|r| Some((r, router.routes().get(r)?.kind))) {
                Some((route, RouteKind::Parallel(p))) => {
                    first_parallel.get_or_insert(true);
                    if count {
                        self.detail.route_request(route);
                    }
                    if let Some(spec) = router.parallel(p) {
                        self.strategies.chain(&router, &spec.pools, key, &mut chain);
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
                        self.strategies.chain(&router, pools, key, &mut chain);
                    }
                }
                Some((route, _)) => {
                    first_parallel.get_or_insert(false);
                    let picked = self.pick_on_route(route, key, client, now, &mut memo, count);
                    chain.extend(picked);
                }
                None => {
                    crate::observe::stats::WorkerStats::add(&self.stats.no_route, 1);
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
        let soft = self
            .listener_spec(listener)
            .map_or(usize::MAX, |s| s.max_buffered_reply_bytes);
        let configured = self
            .listener_spec(listener)
            .map_or(usize::MAX, |s| s.multiget_window.max(1));
        let window = self
            .key_bytes
            .first_window(configured, soft, servers.len().max(1));
        let get = ParallelGet::new(
            *request,
            bytes.clone(),
            asked,
            chains,
            width,
            servers,
            in_order,
            (window, soft),
        );
        self.launch(client, now, |slot, fx| {
            Exchange::parallel_get(slot, get, fx)
        });
    }

    /// True when `request` (a write of a warm_first route) must wait: its client has a
    /// warm_first read that may still go to the cold tier, and the write, sent now, could
    /// reach cold first and be seen by that earlier read.
    pub(crate) fn holds_write(&self, client: usize, route: usize, shape: Shape) -> bool {
        matches!(
            self.router.routes().get(route).map(|r| r.kind),
            Some(RouteKind::WarmFirst(_))
        ) && self.clients.get(client).is_some_and(|c| c.reads_through())
            && matches!(
                shape.plan,
                WarmPlan::WriteBoth | WarmPlan::ColdInvalidateWarm
            )
    }

    /// True when `request` on route `route` is asked of several servers at once: any request
    /// of a parallel route, and a touch-read (`gat`, `gats`, `mg ... T`) of a warm_first route.
    pub(crate) fn asks_all_at_once(&self, route: usize, shape: Shape) -> bool {
        match self.router.routes().get(route).map(|r| r.kind) {
            Some(RouteKind::Parallel(_)) => true,
            Some(RouteKind::WarmFirst(_)) => matches!(shape.plan, WarmPlan::Both { .. }),
            _ => false,
        }
    }

    /// Copies a write on route `route` to every `replicate` side effect of that route that
    /// copies its command: the same bytes, to the target pool's server for `key`.
    pub(crate) fn replicate(
        &mut self,
        route: usize,
        request: &Request,
        bytes: &Bytes,
        key: &[u8],
        now: Instant,
    ) {
        let effects = self.effects.clone();
        for (effect, pool) in effects.replicas_of(route, request.command) {
            let Some(server) = self.strategies.server_in(&self.router, pool, key) else {
                continue;
            };
            let send = Send {
                server,
                part: 0,
                bytes: bytes.clone(),
                value: None,
                framing: Framing::of(request),
                stream: false,
                lookups: 0,
            };
            self.side_effect(effect, &send, now);
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
