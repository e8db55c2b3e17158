//! Planning for `warm_first` routes (a warm tier in front of a cold tier of record); what each
//! command family does (the contract the README and docs/configuration.md state):
//! * plain reads (`get`, `mg` without `c`/`T`) go warm first, then cold, with write-backs: the
//!   failover read path (see [`super::failover`] and [`crate::exchange::failover`]);
//! * `gets` and `mg ... c` are the cold tier's alone (its cas tokens);
//! * `gat`/`gats`/`mg ... T` go to both at once, preferring warm's hit (`gats`: cold's);
//! * writes go to cold and warm at once, cold's reply answering; `cas`, `incr`/`decr`, `ma`,
//!   `ms ... C` and `md ... C` go to cold and delete the warm copy instead.
//!
//! With `leases` (see [`crate::exchange::lease`]): a plain read of one key is a lease read, a
//! multi-key `get` is read key by key ([`crate::exchange::lease_batch`]); every write goes to
//! cold, then deletes warm's copy ([`crate::exchange::ordered`]); touches are answered by cold
//! (warm's answer could be a placeholder), and `gets`-like reads are cold's alone.

use bytes::Bytes;

use super::{start, Plan, Planner, StartKind, Whole, NO_ROUTE};
use crate::exchange::lease::{Lease, LeaseRules};
use crate::exchange::ordered::Ordered;
use crate::exchange::parallel::Answer;
use crate::exchange::retrieval::Ask;
use crate::exchange::write_back;
use crate::exchange::{Framing, Send, Tag, WriteBack};
use crate::protocol::{Command, Request};
use crate::routing::shape::{Shape, WarmPlan};
use crate::routing::WarmFirstSpec;

impl Planner {
    /// A request whose key takes warm_first route `route` (`index`: its settings).
    pub(super) fn plan_warm_first(
        &mut self,
        whole: Whole,
        (route, index): (usize, usize),
        tag: Option<Tag>,
    ) -> Plan {
        let (request, bytes, key) = whole;
        let Some(spec) = self.router.warm_first(index).copied() else {
            return Planner::missing_settings();
        };
        let shape = Shape::of(request, bytes);
        if let Some(rules) = spec.leases {
            return self.plan_leased(whole, route, &spec, rules, shape, tag);
        }
        if let Some(plan) = self.warm_alone(&spec, shape.plan, request, bytes, key, route, tag) {
            return plan;
        }
        let (pools, answer) = match shape.plan {
            WarmPlan::ReadThrough => {
                return self.plan_failover(whole, (route, spec.read), tag);
            }
            // A CAS read with an HTTP origin as cold: warm's CAS is the only one there is.
            WarmPlan::Cold if spec.cold_origin => {
                return self.plan_failover(whole, (route, spec.read), tag);
            }
            WarmPlan::Cold => {
                self.detail.route_request(route);
                let server = self.strategies.server_in(&self.router, spec.cold, key);
                return match server {
                    Some(server) => self.forward(request, bytes.clone(), server, tag),
                    None => Plan::Reply {
                        bytes: Bytes::from_static(NO_ROUTE),
                        close: false,
                    },
                };
            }
            WarmPlan::Both { cold_first: false } => ([spec.warm, spec.cold], Answer::InOrder),
            WarmPlan::Both { cold_first: true } => ([spec.cold, spec.warm], Answer::InOrder),
            WarmPlan::WriteBoth | WarmPlan::ColdInvalidateWarm => {
                ([spec.cold, spec.warm], Answer::Of(0))
            }
        };
        let mut chain = Vec::with_capacity(2);
        self.strategies.chain(&self.router, &pools, key, &mut chain);
        self.detail.route_request(route);
        let framing = Framing::of(request);
        let invalidate = shape.plan == WarmPlan::ColdInvalidateWarm;
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
        let lookup = shape.family.is_read();
        start(StartKind::Parallel { answer, lookup }, tag)
    }

    /// A request on a warm_first route with leases.
    fn plan_leased(
        &mut self,
        whole: Whole,
        route: usize,
        spec: &WarmFirstSpec,
        rules: LeaseRules,
        shape: Shape,
        tag: Option<Tag>,
    ) -> Plan {
        let (request, bytes, key) = whole;
        let warm = self.strategies.server_in(&self.router, spec.warm, key);
        let cold = self.strategies.server_in(&self.router, spec.cold, key);
        let (Some(warm), Some(cold)) = (warm, cold) else {
            return Plan::Reply {
                bytes: Bytes::from_static(NO_ROUTE),
                close: false,
            };
        };
        if let Some(plan) = self.warm_alone(spec, shape.plan, request, bytes, key, route, tag) {
            return plan;
        }
        self.detail.route_request(route);
        match shape.plan {
            WarmPlan::ReadThrough => {
                let lease = Lease::new(*request, bytes.clone(), warm, cold, rules);
                start(StartKind::Lease(Box::new(lease)), tag)
            }
            WarmPlan::Cold => self.forward(request, bytes.clone(), cold, tag),
            // A touch-read is cold's; warm's copy is dropped after it, as after a write (a
            // touch of warm could stretch a lease placeholder's life to the new TTL).
            WarmPlan::Both { .. } => self.cold_then_drop_warm(request, bytes, (cold, warm), tag),
            WarmPlan::WriteBoth | WarmPlan::ColdInvalidateWarm => {
                // Warm's step is always the delete of its copy: copying the write would store
                // in warm a write cold refused (an `add` of a key warm lacks), and two writers'
                // copies could reach the tiers in opposite orders. The next read refills warm
                // from cold under a lease.
                self.cold_then_drop_warm(request, bytes, (cold, warm), tag)
            }
        }
    }

    /// A write that goes to warm alone because cold is an HTTP origin that cannot take it
    /// (read-only, or a write an origin has no meaning for: `add`, `touch`, `cas`, `incr`,
    /// ...): forwarded to the key's warm server. `None` for every other request.
    #[allow(clippy::too_many_arguments)]
    fn warm_alone(
        &mut self,
        spec: &WarmFirstSpec,
        plan: WarmPlan,
        request: &Request,
        bytes: &Bytes,
        key: &[u8],
        route: usize,
        tag: Option<Tag>,
    ) -> Option<Plan> {
        // An origin that takes writes takes `set`/`ms` and `delete`/`md` only (PUT, DELETE).
        let origin_takes = matches!(
            request.command,
            Command::Set | Command::Delete | Command::MetaSet | Command::MetaDelete
        );
        let alone = match plan {
            WarmPlan::WriteBoth => spec.cold_read_only || (spec.cold_origin && !origin_takes),
            WarmPlan::ColdInvalidateWarm => spec.cold_origin,
            _ => false,
        };
        if !alone {
            return None;
        }
        self.detail.route_request(route);
        Some(
            match self.strategies.server_in(&self.router, spec.warm, key) {
                Some(server) => self.forward(request, bytes.clone(), server, tag),
                None => Plan::Reply {
                    bytes: Bytes::from_static(NO_ROUTE),
                    close: false,
                },
            },
        )
    }

    /// `request` to cold, then the delete of its key in warm (see [`Ordered`]).
    fn cold_then_drop_warm(
        &mut self,
        request: &Request,
        bytes: &Bytes,
        (cold, warm): (usize, usize),
        tag: Option<Tag>,
    ) -> Plan {
        let send = Send {
            server: cold,
            part: 0,
            bytes: bytes.clone(),
            value: None,
            framing: Framing::of(request),
            stream: false,
        };
        let lookup = Shape::of(request, bytes).family.is_read();
        let ordered = Ordered::new(send, cold, warm, invalidation(request, bytes), lookup);
        start(StartKind::Ordered(Box::new(ordered)), tag)
    }

    /// A key of a multi-key retrieval on warm_first settings `index`, by the request's shape:
    /// a plain read through warm, then cold, with the write-back; `gets` of cold alone;
    /// `gat`/`gats` of both tiers at once, in their order of preference.
    pub(super) fn warm_first_chain(
        &self,
        index: usize,
        shape: Shape,
        key: &[u8],
        chain: &mut Vec<usize>,
    ) -> (Ask, Option<WriteBack>) {
        let Some(spec) = self.router.warm_first(index) else {
            return (super::ALONE, None);
        };
        let pools = match shape.plan {
            // With leases, a multi-key read asks cold alone: warm could answer a placeholder.
            _ if spec.leases.is_some() => std::slice::from_ref(&spec.cold),
            WarmPlan::ReadThrough => return self.failover_chain(spec.read, key, chain),
            WarmPlan::Cold if spec.cold_origin => {
                return self.failover_chain(spec.read, key, chain)
            }
            WarmPlan::Both { cold_first: false } => &[spec.warm, spec.cold][..],
            WarmPlan::Both { cold_first: true } => &[spec.cold, spec.warm][..],
            _ => std::slice::from_ref(&spec.cold),
        };
        self.strategies.chain(&self.router, pools, key, chain);
        (Ask::AtOnce { in_order: true }, None)
    }
}

/// The delete that drops the warm copy of the request's key after a conditional write (or, under
/// leases, any write or touch-read) went to cold, framed to be read whole (its reply is dropped; a failure is counted). The key is the
/// one on the wire (still base64 when the `b` flag says so, and the delete carries `b` too).
fn invalidation(request: &Request, bytes: &[u8]) -> (Bytes, Framing) {
    let key = request.first_key(bytes);
    let meta = matches!(
        request.command,
        Command::MetaGet | Command::MetaSet | Command::MetaArithmetic | Command::MetaDelete
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
