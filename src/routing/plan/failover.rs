//! Planning for failover routes, and for warm_first's read path (a failover over warm, then
//! cold, with write-backs).

use bytes::Bytes;

use super::{start, Plan, Planner, StartKind};
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

    /// A failover exchange for a single-key request whose key, `key`, takes failover route
    /// `route` (`.1`: its failover settings' index).
    pub(super) fn plan_failover(
        &mut self,
        (request, bytes, key): (&Request, &Bytes, &[u8]),
        (route, index): (usize, usize),
        tag: Option<Tag>,
    ) -> Plan {
        let router = &self.router;
        let Some(spec) = router.failover(index) else {
            return Plan::Reply {
                bytes: Bytes::from_static(super::NO_ROUTE),
                close: false,
            };
        };
        let mut chain = Vec::with_capacity(spec.pools.len());
        self.strategies.chain(router, &spec.pools, key, &mut chain);
        let rules = spec.rules();
        self.detail.route_request(route);
        let failover = Failover::new(*request, bytes.clone(), chain, rules);
        start(StartKind::Failover(Box::new(failover)), tag)
    }
}
