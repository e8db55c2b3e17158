//! Planning for `parallel` routes: every request goes to the key's server in every pool at
//! once (see [`crate::exchange::parallel`]); which reply answers depends on the command family:
//! `get`/`gat`/`mg` take the first hit to arrive, `gets`/`gats`/`mg ... c` the first pool in
//! order that has the key (so a cas token is that server's); writes go to all and are answered
//! per `writes`; `cas`, `incr`/`decr`, `ma`, `ms ... C` and `md ... C` go to all and the first
//! pool's reply answers. A multi-key retrieval asks each key of all its servers at once.

use super::{start, Plan, Planner, StartKind, Whole};
use crate::exchange::parallel::Answer;
use crate::exchange::retrieval::Ask;
use crate::exchange::{Framing, Send, Tag};
use crate::routing::shape::{Family, Shape};

impl Planner {
    /// A request whose key takes parallel route `route` (`index`: its settings).
    pub(super) fn plan_parallel(
        &mut self,
        whole: Whole,
        (route, index): (usize, usize),
        tag: Option<Tag>,
    ) -> Plan {
        let (request, bytes, key) = whole;
        let Some(spec) = self.router.parallel(index) else {
            return Planner::missing_settings();
        };
        let family = Shape::of(request, bytes).family;
        let answer = match family {
            Family::Read => Answer::FirstHit,
            Family::CasRead => Answer::InOrder,
            Family::Write => Answer::Writes(spec.writes),
            Family::Conditional => Answer::Of(0),
        };
        let mut chain = Vec::with_capacity(spec.pools.len());
        self.strategies
            .chain(&self.router, &spec.pools, key, &mut chain);
        self.detail.route_request(route);
        let framing = Framing::of(request);
        for &server in &chain {
            self.sends.push(Send {
                server,
                part: 0,
                bytes: bytes.clone(),
                value: None,
                framing,
                stream: false,
            });
        }
        let lookup = family.is_read();
        start(StartKind::Parallel { answer, lookup }, tag)
    }

    /// A key of a multi-key retrieval on parallel settings `index`: its server in every pool
    /// (into `chain`), all asked at once; plain reads take the first hit to arrive, cas reads
    /// the first pool in order that has the key (its cas token).
    pub(super) fn parallel_chain(
        &self,
        index: usize,
        shape: Shape,
        key: &[u8],
        chain: &mut Vec<usize>,
    ) -> Ask {
        if let Some(spec) = self.router.parallel(index) {
            self.strategies.chain(&self.router, &spec.pools, key, chain);
        }
        Ask::AtOnce {
            in_order: shape.family != Family::Read,
        }
    }
}
