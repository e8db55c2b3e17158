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

use super::{Planner, StartKind};
use crate::exchange::parallel::Answer;
use crate::exchange::write_back;
use crate::exchange::{Framing, Send};
use crate::protocol::{Command, Request};
use crate::routing::shape::{Family, Shape, WarmPlan};
use crate::routing::RouteKind;

impl Planner {
    /// The exchange for a request whose first key, `key`, takes route `route`, when the route
    /// sends it to several servers at once (parallel routes; warm_first's writes and touches);
    /// None when the request is not one for this path. Its requests are left in
    /// [`Planner::sends`]. (Multi-key retrievals are [`Planner::plan_retrieval`]'s.)
    pub(super) fn plan_tiered(
        &mut self,
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
