//! The worker's exchange side: completions from backends handed to their exchanges and jobs,
//! the effects exchanges answer with applied (deliveries to client slots, sends, side
//! effects, counters), and exchanges started for plans.

use std::time::Instant;

use crate::exchange::lease::LeaseCounts;

use super::*;

impl Worker {
    /// Hands every collected reply to its exchange, until no new ones appear (an exchange's
    /// next request may fail at once and add one).
    #[inline]
    pub(super) fn apply_completions(&mut self, now: Instant) {
        if !self.completions.is_empty() {
            self.apply_completions_now(now);
        }
        if !self.conn_timers.is_empty() {
            self.schedule_conn_timers();
        }
    }

    pub(super) fn apply_completions_now(&mut self, now: Instant) {
        while !self.completions.is_empty() {
            let mut batch = std::mem::take(&mut self.completions);
            for completion in batch.drain(..) {
                let part = completion.owner.part;
                match owner::addressee(completion.owner) {
                    Addressee::Exchange(id) => self.on_exchange_event(id, part, &completion, now),
                    Addressee::Job(id) => self.on_job_event(id, part, &completion, now),
                }
            }
            if self.completions.is_empty() {
                self.completions = batch;
            }
        }
    }

    /// Counts a reply (or failure) of a request of an exchange whose request was `tag`.
    pub(super) fn count_completion(&self, completion: &Completion, tag: Option<Tag>) {
        if !completion.end {
            return;
        }
        let elapsed = self.clock.saturating_sub(completion.sent);
        self.detail.server_answered(completion.server, elapsed);
        let counters = tag.and_then(|t| self.detail.commands(t.route, t.command));
        if let Some(reason) = completion.failed {
            let timeout = reason == crate::upstream::FailReason::Timeout;
            WorkerStats::add(&self.stats.backend_errors, 1);
            if timeout {
                WorkerStats::add(&self.stats.backend_timeouts, 1);
            }
            if reason == crate::upstream::FailReason::Overloaded {
                WorkerStats::add(&self.stats.backend_overloaded, 1);
            }
            self.detail.server_failure(completion.server, timeout);
            if let Some(c) = counters {
                WorkerStats::add(&c.errors, 1);
                if timeout {
                    WorkerStats::add(&c.timeouts, 1);
                }
            }
        }
    }

    /// Counts `hits` and `misses` of keys looked up, in all and on their route.
    pub(super) fn count_lookups(
        &self,
        counters: Option<&CommandCounters>,
        hits: usize,
        misses: usize,
    ) {
        WorkerStats::add(&self.stats.get_hits, hits as u64);
        WorkerStats::add(&self.stats.get_misses, misses as u64);
        if let Some(c) = counters {
            WorkerStats::add(&c.hits, hits as u64);
            WorkerStats::add(&c.misses, misses as u64);
        }
    }

    pub(super) fn on_job_event(&mut self, id: JobId, part: u32, c: &Completion, now: Instant) {
        let Some(job) = self.jobs.get_mut(id) else {
            return; // drained and dropped
        };
        let step = job.on_completion(part, c, &self.health, now);
        self.job_step(id, step);
    }

    pub(super) fn run_job(&mut self, id: JobId, now: Instant) {
        let mut sends = std::mem::take(&mut self.job_sends);
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let step = job.on_timer(now, &mut sends);
        for send in sends.drain(..) {
            let owner = owner::job(id, send.part);
            self.backends.send_probe(
                self.poll.registry(),
                owner,
                &send,
                now,
                &mut self.completions,
                &mut self.conn_timers,
            );
        }
        self.job_sends = sends;
        self.job_step(id, step);
    }

    /// Queues side effect `effect`'s request `send`, owned by its job on this worker; dropped
    /// and counted when that queue is full. No client waits for it.
    pub(super) fn side_effect(&mut self, effect: usize, send: &Send, now: Instant) {
        let Some(&id) = self.effect_jobs.get(effect) else {
            return;
        };
        let room = self.backends.side_has_room(send.server);
        let Some(Job::Effect(queue)) = self.jobs.get_mut(id) else {
            return;
        };
        if !room {
            queue.drop_one();
            return;
        }
        let bytes = send.bytes.len() + send.value.as_ref().map_or(0, |v| v.len());
        if !queue.admit(bytes) {
            return;
        }
        let owner = owner::job(id, EffectQueue::part_for(bytes));
        self.backends.send_detached(
            self.poll.registry(),
            owner,
            send,
            now,
            &mut self.completions,
            &mut self.conn_timers,
        );
    }

    pub(super) fn job_step(&mut self, id: JobId, step: JobStep) {
        match step {
            JobStep::Wait => {}
            JobStep::SleepUntil(at) => self.timers.schedule(at, TimerEvent::Job(id)),
        }
    }

    pub(super) fn on_exchange_event(
        &mut self,
        id: ExchangeId,
        part: u32,
        c: &Completion,
        now: Instant,
    ) {
        let Some(exchange) = self.exchanges.get_mut(id) else {
            // Its client went: drained and dropped, but counted.
            self.count_completion(c, None);
            return;
        };
        let (slot, detached, tag) = (exchange.slot, exchange.is_detached(), exchange.tag);
        self.count_completion(c, tag);
        let may_send = match self.clients.current(slot.client, slot.generation) {
            Some(client) => {
                if c.end {
                    client.request_answered(c.reply.len());
                } else {
                    client.reply_piece(c.reply.len());
                }
                client.may_send_for(slot.seq)
            }
            // A background exchange goes on without its client.
            None if detached => false,
            None => {
                self.exchanges.remove(id);
                return;
            }
        };
        let Some(exchange) = self.exchanges.get_mut(id) else {
            return;
        };
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(may_send);
        fx.now = Some(now);
        let flow = exchange.on_completion(part, c, &mut fx);
        self.apply_effects(id, slot, flow, &mut fx, now);
        self.fx = fx;
    }

    /// Carries out what an exchange asked for: deliveries to its client's slot (complete when
    /// it is done or goes on in the background), sends, its end or its parking.
    pub(super) fn apply_effects(
        &mut self,
        id: ExchangeId,
        slot: SlotRef,
        flow: Flow,
        fx: &mut Effects,
        now: Instant,
    ) {
        if let Some(per_key) = fx.key_bytes.take() {
            self.planner.observe_key_bytes(per_key);
        }
        let (detached, tag, touches) = self
            .exchanges
            .get_mut(id)
            .map_or((false, None, false), |e| {
                (e.is_detached(), e.tag, e.touches())
            });
        let mut over_hard_limit = false;
        match self.clients.current(slot.client, slot.generation) {
            Some(client) => {
                let before = client.buffered();
                client.exchange_bytes_changed(fx.held_delta);
                if fx.writes_released {
                    client.hold_released(touches);
                }
                for _ in &fx.sends {
                    client.request_sent();
                }
                let complete = !detached && matches!(flow, Flow::Done | Flow::Background);
                if let Some(tag) = tag.filter(|_| complete) {
                    let elapsed = self.clock.saturating_sub(tag.started);
                    self.detail.route_answered(tag.route, elapsed);
                }
                let delivered = if !detached && (complete || fx.abort || !fx.deliver.is_empty()) {
                    client.deliver(slot.seq, &fx.deliver, complete, fx.abort)
                } else {
                    false
                };
                // The flush phase looks at the client even when it has nothing to write: a
                // client held back by its limits may go on now, and a closing one may be
                // finished (a noreply request's slot writes nothing).
                let writable =
                    delivered || client.is_stalled() || (complete && client.is_closing());
                if flow == Flow::Parked {
                    client.park(id);
                }
                let after = client.buffered();
                over_hard_limit = after > before && !client.is_dead() && client.over_hard_limit();
                self.account(before, after);
                if writable {
                    self.clients.flush_later(slot.client);
                }
            }
            None if detached => {}
            None => {
                self.exchanges.remove(id);
                fx.sends.clear();
                return;
            }
        }
        if let Some(at) = fx.wake_at.take() {
            self.timers.schedule(at, TimerEvent::Exchange(id));
        }
        match flow {
            Flow::Done => self.exchanges.remove(id),
            Flow::Background => {
                if let Some(exchange) = self.exchanges.get_mut(id) {
                    exchange.detach();
                }
            }
            Flow::Wait | Flow::Parked => {}
        }
        for send in fx.sends.drain(..) {
            let owner = owner::exchange(id, send.part);
            WorkerStats::add(&self.stats.backend_requests, 1);
            self.detail.server_request(send.server);
            self.backends.send(
                self.poll.registry(),
                slot.client,
                owner,
                &send,
                now,
                &mut self.completions,
                &mut self.conn_timers,
            );
        }
        if fx.lookups != (0, 0) {
            let counters = tag.and_then(|t| self.detail.commands(t.route, t.command));
            self.count_lookups(counters, fx.lookups.0, fx.lookups.1);
        }
        if fx.leases != LeaseCounts::default() {
            let stats = &self.stats;
            WorkerStats::add(&stats.lease_wins, u64::from(fx.leases.wins));
            WorkerStats::add(&stats.lease_waits, u64::from(fx.leases.waits));
            WorkerStats::add(
                &stats.lease_wait_timeouts,
                u64::from(fx.leases.wait_timeouts),
            );
            WorkerStats::add(&stats.lease_refreshes, u64::from(fx.leases.refreshes));
        }
        if fx.unrouted_misses > 0 {
            // Keys no route takes: misses of the process, of no route.
            WorkerStats::add(&self.stats.get_misses, fx.unrouted_misses as u64);
        }
        for (effect, send) in fx.side.drain(..) {
            self.side_effect(effect, &send, now);
        }
        if over_hard_limit {
            WorkerStats::add(&self.stats.clients_closed_hard_limit, 1);
            log::debug!("client closed: reply bytes buffered over its hard limit");
            self.kill_client(slot.client);
        }
    }

    /// The client of exchange `id` drained: a parked exchange sends its next window.
    pub(super) fn resume_exchange(&mut self, id: ExchangeId, now: Instant) {
        self.step_exchange(id, now, Exchange::resume);
    }

    /// The time exchange `id` asked to be woken at has come (it may have gone since).
    pub(super) fn wake_exchange(&mut self, id: ExchangeId, now: Instant) {
        self.step_exchange(id, now, Exchange::on_wake);
    }

    /// Runs `step` on exchange `id` (if it is still there) and carries out its effects.
    fn step_exchange(
        &mut self,
        id: ExchangeId,
        now: Instant,
        step: fn(&mut Exchange, &mut Effects) -> Flow,
    ) {
        let Some(exchange) = self.exchanges.get_mut(id) else {
            return;
        };
        let slot = exchange.slot;
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(true);
        fx.now = Some(now);
        let flow = step(exchange, &mut fx);
        self.apply_effects(id, slot, flow, &mut fx, now);
        self.fx = fx;
    }

    /// Starts exchange `exchange`, already built with its first effects in `fx`.
    pub(super) fn start_exchange(
        &mut self,
        slot: SlotRef,
        exchange: Exchange,
        fx: &mut Effects,
        now: Instant,
    ) {
        if let Some(counters) = exchange
            .tag
            .and_then(|t| self.detail.commands(t.route, t.command))
        {
            WorkerStats::add(&counters.requests, 1);
        }
        let flow = exchange.flow(fx);
        let id = self.exchanges.insert(exchange);
        if let Some(client) = self.clients.current(slot.client, slot.generation) {
            client.attach(slot.seq, id);
        }
        self.apply_effects(id, slot, flow, fx, now);
    }
}
