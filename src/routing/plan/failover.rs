//! Planning for failover routes, and for warm_first's read path (a failover over warm, then
//! cold, with write-backs).

use bytes::Bytes;

use super::{start, Context, Plan, Planner, StartKind};
use crate::exchange::failover::Failover;
use crate::exchange::Tag;
use crate::protocol::Request;
use crate::routing::shape::{Shape, WarmPlan};
use crate::routing::RouteKind;

impl Planner {
    /// The failover settings a request of shape `shape` reads through on route `route`: a
    /// failover route's, or a warm_first route's read path for a plain read.
    pub(super) fn failover_index_for(&self, route: usize, shape: Shape) -> Option<usize> {
        match self.router.routes().get(route)?.kind {
            RouteKind::Failover(index) => Some(index),
            RouteKind::WarmFirst(w) if shape.plan == WarmPlan::ReadThrough => {
                self.router.warm_first(w).map(|w| w.read)
            }
            _ => None,
        }
    }

    /// A failover exchange for a request whose first key, `key`, takes failover route `route`
    /// (`.1`: its failover settings' index), if every key of the request has the same servers
    /// to try; None when they differ (a multi-get is then split by its keys' first servers).
    pub(super) fn plan_failover(
        &mut self,
        cx: &Context,
        (request, bytes, key): (&Request, &Bytes, &[u8]),
        (route, index): (usize, usize),
        tag: Option<Tag>,
    ) -> Option<Plan> {
        let router = &self.router;
        let spec = router.failover(index)?;
        let mut chain = Vec::with_capacity(spec.pools.len());
        self.strategies
            .failover_chain(router, index, key, &mut chain);
        if request.key_count > 1 {
            let mut other = Vec::with_capacity(chain.len());
            for key in request.keys(bytes).skip(1) {
                if router.route(cx.listener, request.command, key) != Some(route) {
                    return None;
                }
                self.strategies
                    .failover_chain(router, index, key, &mut other);
                if other != chain {
                    return None;
                }
            }
        }
        for _ in 0..request.key_count.max(1) {
            self.detail.route_request(route);
        }
        let window = self
            .key_bytes
            .first_window(cx.multiget_window.max(1), cx.soft_bytes, 1);
        let rules = spec.rules();
        let failover = Failover::new(*request, bytes.clone(), chain, rules, window, cx.soft_bytes);
        let kind = StartKind::Failover(Box::new(failover));
        Some(start(kind, tag, rules.holds_writes))
    }
}
