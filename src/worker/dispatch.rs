//! Carrying out plans: what the parser found next on a client becomes a local answer, a held
//! request, or an exchange, as [`crate::routing::plan::Planner`] decides. Nothing here decides
//! where a request goes.

use std::time::Instant;

use bytes::Bytes;

use crate::exchange::{Exchange, SlotRef};
use crate::frontend::client::{Next, Slot};
use crate::observe::stats::WorkerStats;
use crate::protocol::Request;
use crate::routing::plan::{Context, Plan, Start, StartKind};
use crate::worker::Worker;

impl Worker {
    /// Handles what the parser found next on client `client`.
    pub(crate) fn dispatch(&mut self, client: usize, next: Next, now: Instant) {
        match next {
            Next::Error(error, unlink) => {
                WorkerStats::add(&self.stats.client_errors, 1);
                log::debug!("client request refused: {}", error.as_str());
                let slot = Slot::ready(Bytes::from_static(error.reply()));
                let slot = if error.skip().is_none() {
                    slot.then_close()
                } else {
                    slot
                };
                self.answer_locally(client, slot);
                if let Some((request, bytes)) = unlink {
                    self.plan_and_execute(client, &request, bytes, now, true);
                }
            }
            Next::Request(request, bytes) => {
                self.plan_and_execute(client, &request, bytes, now, true)
            }
        }
    }

    /// Plans a held request again, now that the reads before it have sent their last requests
    /// (its command was counted when it arrived).
    pub(crate) fn dispatch_deferred(
        &mut self,
        client: usize,
        request: &Request,
        bytes: Bytes,
        now: Instant,
    ) {
        self.plan_and_execute(client, request, bytes, now, false);
    }

    fn plan_and_execute(
        &mut self,
        client: usize,
        request: &Request,
        bytes: Bytes,
        now: Instant,
        first: bool,
    ) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let listener = c.listener();
        let (reads_open, touches_open) = (c.writes_held(), c.all_held());
        let (multiget_window, soft_bytes) = self
            .listener_spec(listener)
            .map_or((usize::MAX, usize::MAX), |s| {
                (s.multiget_window, s.max_buffered_reply_bytes)
            });
        let backends = &self.backends;
        let usable = |server: usize| backends.is_usable(server, client, now);
        let cx = Context {
            listener,
            multiget_window,
            soft_bytes,
            reads_open,
            touches_open,
            usable: &usable,
        };
        let plan = if first {
            self.planner.plan(request, bytes, &cx, self.clock)
        } else {
            self.planner.plan_counted(request, bytes, &cx, self.clock)
        };
        self.execute(client, plan, now);
    }

    /// Carries out `plan` for the next request of `client`.
    fn execute(&mut self, client: usize, plan: Plan, now: Instant) {
        match plan {
            Plan::Reply { bytes, close } => {
                let slot = Slot::ready(bytes);
                let slot = if close { slot.then_close() } else { slot };
                self.answer_locally(client, slot);
            }
            Plan::Stats => {
                let reply = Bytes::from(self.registry.render());
                self.answer_locally(client, Slot::ready(reply));
            }
            Plan::Defer(request, bytes) => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.defer(request, bytes);
                }
            }
            Plan::Start(start) => {
                let mut side = std::mem::take(self.planner.side());
                for (effect, send) in side.drain(..) {
                    self.side_effect(effect, &send, now);
                }
                *self.planner.side() = side;
                self.start(client, start, now);
            }
        }
    }

    /// Takes the next reply slot of `client` and starts the exchange `start` names on it.
    fn start(&mut self, client: usize, start: Start, now: Instant) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let seq = c.push_slot(Slot::waiting());
        let slot = SlotRef {
            client,
            generation: c.generation(),
            seq,
        };
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(true);
        fx.now = Some(now);
        let sends = self.planner.sends();
        let mut exchange = match start.kind {
            StartKind::Forward { send, lookups } => Exchange::forward(slot, send, lookups, &mut fx),
            StartKind::FanOut => Exchange::fan_out(slot, sends.drain(..), &mut fx),
            StartKind::Retrieval(retrieval) => Exchange::retrieval(slot, retrieval, &mut fx),
            StartKind::Failover(failover) => Exchange::failover(slot, failover, &mut fx),
            StartKind::Parallel { answer, lookup } => {
                Exchange::parallel(slot, sends.drain(..), answer, lookup, &mut fx)
            }
            StartKind::Lease(lease) => Exchange::lease(slot, lease, &mut fx),
            StartKind::LeaseBatch(batch) => Exchange::lease_batch(slot, batch, &mut fx),
            StartKind::Ordered(ordered) => Exchange::ordered(slot, ordered, &mut fx),
        };
        exchange.tag = start.tag;
        if exchange.holds_writes() {
            // Released through its effects (`writes_released`) once it has sent its last
            // request.
            if let Some(c) = self.clients.get_mut(client) {
                c.hold_started(exchange.touches());
            }
        }
        self.start_exchange(slot, exchange, &mut fx, now);
        self.fx = fx;
    }
}
