//! Planning for `failover` routes: a single-key request tried on the key's server in each pool,
//! in turn (see [`crate::exchange::failover`]); a multi-key retrieval asks each key of its
//! chain in turn (see [`crate::exchange::retrieval`]). warm_first's read path is a failover over
//! warm, then cold, and is planned here too (see [`super::warm_first`]).

use super::{start, Plan, Planner, StartKind, Whole};
use crate::exchange::failover::Failover;
use crate::exchange::retrieval::Ask;
use crate::exchange::{Tag, WriteBack};

impl Planner {
    /// A request whose key takes failover route `route` (`index`: its failover settings).
    pub(super) fn plan_failover(
        &mut self,
        whole: Whole,
        (route, index): (usize, usize),
        tag: Option<Tag>,
    ) -> Plan {
        let (request, bytes, key) = whole;
        let router = &self.router;
        let Some(spec) = router.failover(index) else {
            return Planner::missing_settings();
        };
        let mut chain = Vec::with_capacity(spec.pools.len());
        self.strategies.chain(router, &spec.pools, key, &mut chain);
        let rules = spec.rules();
        self.detail.route_request(route);
        let failover = Failover::new(*request, bytes.clone(), chain, rules);
        start(StartKind::Failover(Box::new(failover)), tag)
    }

    /// A key of a multi-key retrieval on failover settings `index`: its server in each pool,
    /// asked in turn (into `chain`), and its write-back (warm_first's read path).
    pub(super) fn failover_chain(
        &self,
        index: usize,
        key: &[u8],
        chain: &mut Vec<usize>,
    ) -> (Ask, Option<WriteBack>) {
        let Some(spec) = self.router.failover(index) else {
            return (super::ALONE, None);
        };
        self.strategies.chain(&self.router, &spec.pools, key, chain);
        let ask = Ask::InTurn {
            miss_next: spec.miss_next,
        };
        (ask, spec.write_back)
    }
}
