//! One worker thread: a thin reactor over parts with one job each, all on one mio `Poll`:
//! [`Clients`] (client connections and the lists of those to serve and flush), [`Backends`]
//! (backend connections and those to flush), [`Exchanges`] (one state machine per request
//! that waits on backends), and the timer wheel. The loop moves events between them.
//!
//! Phase order of one loop iteration (each phase may feed the next):
//! 1. poll, with a timeout of 0 if clients are waiting to be revisited, else until the next
//!    timer (or a short tick while shutting down);
//! 2. record readiness by token range: listeners, the waker, backends, clients;
//! 3. drive backends that had events: finish connects, frame replies, hand each reply (or
//!    piece of one) to its exchange, which delivers to its client slot or sends more;
//! 4. serve clients that are readable (or were held back and may go on): read, parse, start
//!    an exchange per request (or answer it locally), within the client's limits;
//! 5. fire expired timers: request deadlines, connect timeouts, idle and slow clients;
//! 6. accept new connections;
//! 7. flush every backend that has queued bytes (one `writev` each), then every client with
//!    replies to write; a client that drained resumes its parked exchanges and its reading;
//! 8. if the worker holds more reply bytes than its share of `reply_memory_budget`, close the
//!    clients holding the most until it does not; if client read buffers of every worker hold
//!    more than `request_memory_budget` for requests not yet handed on, close this worker's
//!    clients holding the most until the total is back under;
//! 9. on shutdown, stop accepting and leave once every client is answered (or time is up).

mod dispatch;
mod owner;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::exchange::{Effects, Exchange, ExchangeId, Exchanges, Flow, Send, SlotRef, Tag};
use crate::frontend::client::{Client, ClientLimits, Slot};
use crate::frontend::clients::{Clients, RequestMemory};
use crate::frontend::listener::{ClientFds, ListenerSpec};
use crate::observe::health::HealthBoard;
use crate::observe::stats::{CommandCounters, DetailStats, StatsRegistry, WorkerStats};
use crate::routing::plan::Planner;
use crate::routing::Router;
use crate::runtime::log_limit::{LogEvent, LogLimiter};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::timer::TimerWheel;
use crate::upstream::jobs::effect_queue::EffectQueue;
use crate::upstream::jobs::probe::Probe;
use crate::upstream::jobs::{Job, JobId, JobStep, Jobs};
use crate::upstream::side_effects::EffectBoard;
use crate::upstream::{Backends, Completion, ConnTimer};
use owner::Addressee;

const WAKER: Token = Token(1 << 16);
const BACKEND_BASE: usize = 1 << 17;
const CLIENT_BASE: usize = 1 << 30;
/// Accepts per listener per iteration, so a connection storm cannot starve traffic.
const ACCEPT_BATCH: usize = 64;
/// Reads per client per iteration, so one busy client cannot starve the others.
const READS_PER_VISIT: usize = 4;
/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a timer is for. Timers are never cancelled; generations make stale ones harmless.
#[derive(Clone, Copy, Debug)]
pub enum TimerEvent {
    /// A backend connection's request or connect deadline.
    Backend {
        /// Index into the worker's backend connections.
        conn: usize,
        /// The connection generation it was armed for.
        generation: u32,
        /// The deadline it was armed for.
        at: Instant,
    },
    /// Check whether a client has been idle too long.
    ClientIdle {
        /// Client slab index.
        client: usize,
        /// The client's generation.
        generation: u32,
    },
    /// Check whether a client's request has been arriving too long (slowloris).
    ClientSlowRequest {
        /// Client slab index.
        client: usize,
        /// The client's generation.
        generation: u32,
    },
    /// A job asked to be woken (a health probe's next turn).
    Job(JobId),
}

/// Everything a worker is built from.
pub struct WorkerSetup {
    /// Worker number (0-based).
    pub id: usize,
    /// The route table.
    pub router: Arc<Router>,
    /// One bound socket per listener, in config order, with its spec.
    pub listeners: Vec<(std::net::TcpListener, ListenerSpec)>,
    /// Counters of every worker (for `stats`).
    pub registry: Arc<StatsRegistry>,
    /// The shutdown flag.
    pub shutdown: Arc<Shutdown>,
    /// This worker's share of the process's reply memory budget, in bytes.
    pub reply_budget: usize,
    /// Number of workers (servers' health probes are spread over them).
    pub workers: usize,
    /// Every server's health, shared by the workers.
    pub health: Arc<HealthBoard>,
    /// The side effects and their shared counters.
    pub effects: Arc<EffectBoard>,
    /// Room for client connections the open file limit leaves, shared by every worker.
    pub client_fds: Arc<ClientFds>,
    /// The process's budget for memory held by client read buffers, shared by the workers.
    pub request_memory: Arc<RequestMemory>,
}

struct WorkerListener {
    socket: Option<TcpListener>,
    spec: ListenerSpec,
    pending_accept: bool,
}

impl WorkerListener {
    fn client_limits(&self) -> ClientLimits {
        ClientLimits {
            max_outstanding: self.spec.max_outstanding_requests,
            max_inflight: self.spec.max_inflight_requests,
            soft_bytes: self.spec.max_buffered_reply_bytes,
            hard_bytes: self.spec.close_buffered_reply_bytes,
        }
    }
}

/// A worker's loop state.
pub struct Worker {
    pub(crate) id: usize,
    pub(crate) poll: Poll,
    listeners: Vec<WorkerListener>,
    pub(crate) clients: Clients,
    pub(crate) backends: Backends,
    pub(crate) exchanges: Exchanges,
    jobs: Jobs,
    health: Arc<HealthBoard>,
    /// Per side effect, the job that is its queue on this worker.
    effect_jobs: Vec<JobId>,
    /// The health epoch the strategies' rings were last built for.
    health_epoch: u64,
    /// Requests jobs want sent (reused).
    job_sends: Vec<Send>,
    /// Decides what each request becomes (routes, strategies, their state).
    planner: Planner,
    pub(crate) timers: TimerWheel<TimerEvent>,
    pub(crate) stats: Arc<WorkerStats>,
    /// Per-route and per-server counters.
    pub(crate) detail: Arc<DetailStats>,
    pub(crate) registry: Arc<StatsRegistry>,
    shutdown: Arc<Shutdown>,
    shutdown_deadline: Option<Instant>,
    /// Replies and failures collected from backends, handed to exchanges in order.
    completions: Vec<Completion>,
    conn_timers: Vec<ConnTimer>,
    pub(crate) fx: Effects,
    /// Microseconds since `clock_base`, read once per loop iteration: what latencies are
    /// measured in (a subtraction of integers per request instead of one of `Instant`s).
    pub(crate) clock: u64,
    clock_base: Instant,
    /// Reply bytes held for all clients of this worker.
    buffered: usize,
    reply_budget: usize,
    /// Memory this worker's client read buffers hold (its part of `request_memory`).
    request_bytes: usize,
    request_memory: Arc<RequestMemory>,
    serve_list: Vec<usize>,
    flush_list: Vec<usize>,
    fired: Vec<TimerEvent>,
    /// Where clients with nothing buffered read into (see [`crate::frontend::client::Client::read`]).
    read_scratch: crate::runtime::buffer::ReadBuf,
    /// Where clients' small requests are copied (see [`crate::runtime::buffer::Arena`]).
    request_arena: crate::runtime::buffer::Arena,
    /// Per-event warnings of the loop itself (accept errors, shed clients), rate limited.
    log: LogLimiter,
    /// Room for client connections beside the descriptors reserved for backends.
    client_fds: Arc<ClientFds>,
}

impl Worker {
    /// Builds a worker: its poll, its listeners (registered) and its idle backend connections.
    pub fn new(setup: WorkerSetup) -> std::io::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        setup.shutdown.add_waker(waker);
        let mut listeners = Vec::new();
        let listener_count = setup.listeners.len();
        for (i, (socket, spec)) in setup.listeners.into_iter().enumerate() {
            let mut socket = TcpListener::from_std(socket);
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            listeners.push(WorkerListener {
                socket: Some(socket),
                spec,
                pending_accept: true,
            });
        }
        let stats = setup.registry.worker(setup.id);
        let workers = setup.workers.max(1);
        let id = setup.id;
        let probed = |server: usize| server % workers == id;
        let backends = Backends::new(
            setup.router.servers(),
            BACKEND_BASE,
            &stats,
            &setup.health,
            probed,
            setup.effects.max_queue(),
        );
        let now = Instant::now();
        // Each checked server is probed by one worker; the first probe goes out at once.
        let mut jobs = Jobs::default();
        let mut timers = TimerWheel::new(now);
        for (server, spec) in setup.router.servers().iter().enumerate() {
            if let Some(health) = spec.health.as_ref().filter(|_| probed(server)) {
                let probe = Probe::new(server, health.interval, health.retry_after);
                timers.schedule(now, TimerEvent::Job(jobs.insert(Job::Probe(probe))));
            }
        }
        let effect_jobs = (0..setup.effects.len())
            .map(|i| jobs.insert(Job::Effect(EffectQueue::new(i, setup.effects.clone()))))
            .collect();
        Ok(Worker {
            id: setup.id,
            effect_jobs,
            poll,
            listeners,
            clients: Clients::default(),
            backends,
            exchanges: Exchanges::default(),
            jobs,
            health_epoch: setup.health.epoch(),
            health: setup.health,
            job_sends: Vec::new(),
            planner: Planner::new(
                // The worker's own copy: its regex match caches and ring tables are its own,
                // so routing a request touches nothing another thread writes.
                Router::clone(&setup.router),
                setup.effects,
                stats.clone(),
                setup.registry.detail(setup.id),
                listener_count,
            ),
            timers,
            stats,
            detail: setup.registry.detail(setup.id),
            registry: setup.registry,
            shutdown: setup.shutdown,
            shutdown_deadline: None,
            completions: Vec::new(),
            conn_timers: Vec::new(),
            fx: Effects::default(),
            clock: 0,
            clock_base: Instant::now(),
            buffered: 0,
            reply_budget: setup.reply_budget.max(1),
            request_bytes: 0,
            request_memory: setup.request_memory,
            serve_list: Vec::new(),
            flush_list: Vec::new(),
            fired: Vec::new(),
            read_scratch: crate::runtime::buffer::ReadBuf::default(),
            request_arena: crate::runtime::buffer::Arena::default(),
            log: LogLimiter::with_subjects(0),
            client_fds: setup.client_fds,
        })
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        log::debug!("worker {} started", self.id);
        loop {
            let now = Instant::now();
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.id);
                    return;
                }
            }
            let now = Instant::now();
            self.tick(now);
            let epoch = self.health.epoch();
            if epoch != self.health_epoch {
                // A server went down or came back: rebuild the rings that eject, and connect
                // to a returned server at once.
                self.health_epoch = epoch;
                self.planner.eject(&self.health);
                self.backends.forget_backoff_of_live_servers();
            }
            for event in events.iter() {
                self.record_event(event);
            }
            self.drive_backends(now);
            self.serve_clients(now);
            self.fire_timers(now);
            self.accept_all(now);
            self.flush_backends(now);
            self.flush_clients(now);
            self.enforce_budget();
            if self.shutdown.is_requested() && self.shutdown_step(now) {
                break;
            }
        }
        log::debug!("worker {} stopped", self.id);
    }

    /// Sets the latency clock to `now`.
    fn tick(&mut self, now: Instant) {
        let micros = now.saturating_duration_since(self.clock_base).as_micros();
        self.clock = u64::try_from(micros).unwrap_or(u64::MAX);
        self.backends.clock = self.clock;
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.clients.has_revisits()
            || self.backends.has_revisits()
            || self.listeners.iter().any(|l| l.pending_accept)
        {
            return Some(Duration::ZERO);
        }
        let timer = self.timers.next_timeout(now);
        if self.shutdown_deadline.is_some() {
            let tick = Duration::from_millis(50);
            return Some(timer.map_or(tick, |t| t.min(tick)));
        }
        timer
    }

    fn record_event(&mut self, event: &mio::event::Event) {
        let token = event.token().0;
        if token == WAKER.0 {
            return;
        }
        if token >= CLIENT_BASE {
            let index = token - CLIENT_BASE;
            if let Some(client) = self.clients.get_mut(index) {
                client.on_event(
                    event.is_readable(),
                    event.is_read_closed(),
                    event.is_error(),
                );
            }
            self.clients.revisit(index);
            // Writable again: what is queued can go (the serve phase flushes it otherwise).
            if event.is_writable() && self.clients.get(index).is_some_and(Client::needs_flush) {
                self.clients.flush_later(index);
            }
        } else if token >= BACKEND_BASE {
            self.backends.record(token - BACKEND_BASE, event);
        } else if let Some(listener) = self.listeners.get_mut(token) {
            listener.pending_accept = true;
        }
    }

    fn drive_backends(&mut self, now: Instant) {
        self.backends.drive(
            self.poll.registry(),
            now,
            &mut self.completions,
            &mut self.conn_timers,
        );
        self.apply_completions(now);
    }

    fn schedule_conn_timers(&mut self) {
        for t in self.conn_timers.drain(..) {
            self.timers.schedule(
                t.timer.at,
                TimerEvent::Backend {
                    conn: t.conn,
                    generation: t.timer.generation,
                    at: t.timer.at,
                },
            );
        }
    }

    /// Hands every collected reply to its exchange, until no new ones appear (an exchange's
    /// next request may fail at once and add one).
    #[inline]
    pub(crate) fn apply_completions(&mut self, now: Instant) {
        if !self.completions.is_empty() {
            self.apply_completions_now(now);
        }
        if !self.conn_timers.is_empty() {
            self.schedule_conn_timers();
        }
    }

    fn apply_completions_now(&mut self, now: Instant) {
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
    fn count_completion(&self, completion: &Completion, tag: Option<Tag>) {
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
        if completion.lookups > 0 {
            let hits = completion.values.min(completion.lookups);
            let misses = completion.lookups - hits;
            self.count_lookups(counters, hits, misses);
        }
    }

    /// Counts `hits` and `misses` of keys looked up, in all and on their route.
    fn count_lookups(&self, counters: Option<&CommandCounters>, hits: usize, misses: usize) {
        WorkerStats::add(&self.stats.get_hits, hits as u64);
        WorkerStats::add(&self.stats.get_misses, misses as u64);
        if let Some(c) = counters {
            WorkerStats::add(&c.hits, hits as u64);
            WorkerStats::add(&c.misses, misses as u64);
        }
    }

    fn on_job_event(&mut self, id: JobId, part: u32, c: &Completion, now: Instant) {
        let Some(job) = self.jobs.get_mut(id) else {
            return; // drained and dropped
        };
        let step = job.on_completion(part, c, &self.health, now);
        self.job_step(id, step);
    }

    fn run_job(&mut self, id: JobId, now: Instant) {
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
    pub(crate) fn side_effect(&mut self, effect: usize, send: &Send, now: Instant) {
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

    fn job_step(&mut self, id: JobId, step: JobStep) {
        match step {
            JobStep::Wait => {}
            JobStep::SleepUntil(at) => self.timers.schedule(at, TimerEvent::Job(id)),
        }
    }

    fn on_exchange_event(&mut self, id: ExchangeId, part: u32, c: &Completion, now: Instant) {
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
                client.may_take_more()
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
        let flow = exchange.on_completion(part, c, &mut fx);
        self.apply_effects(id, slot, flow, &mut fx, now);
        self.fx = fx;
    }

    /// Carries out what an exchange asked for: deliveries to its client's slot (complete when
    /// it is done or goes on in the background), sends, its end or its parking.
    pub(crate) fn apply_effects(
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
        let (detached, tag) = self
            .exchanges
            .get_mut(id)
            .map_or((false, None), |e| (e.is_detached(), e.tag));
        let mut over_hard_limit = false;
        match self.clients.current(slot.client, slot.generation) {
            Some(client) => {
                let before = client.buffered();
                client.exchange_bytes_changed(fx.held_delta);
                if fx.writes_released {
                    client.read_through_passed();
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
        for (effect, send) in fx.side.drain(..) {
            self.side_effect(effect, &send, now);
        }
        if over_hard_limit {
            WorkerStats::add(&self.stats.clients_closed_hard_limit, 1);
            log::debug!("client closed: reply bytes buffered over its hard limit");
            self.kill_client(slot.client);
        }
    }

    /// Records a change in what a client's read buffer holds.
    #[inline]
    fn account_requests(&mut self, before: usize, after: usize) {
        if before != after {
            self.request_bytes = (self.request_bytes + after).saturating_sub(before);
            self.request_memory.changed(before, after);
        }
    }

    fn account(&mut self, before: usize, after: usize) {
        self.buffered = (self.buffered + after).saturating_sub(before);
    }

    /// Marks a client to be closed at once (limits, shedding).
    fn kill_client(&mut self, index: usize) {
        if let Some(client) = self.clients.get_mut(index) {
            client.kill();
        }
        self.clients.flush_later(index);
    }

    fn serve_clients(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.serve_list);
        self.clients.take_revisits(&mut list);
        for &index in &list {
            let before = self.clients.get(index).map_or(0, Client::request_bytes);
            self.serve_client(index, now);
            let after = self.clients.get(index).map_or(0, Client::request_bytes);
            self.account_requests(before, after);
            // A served client may have replies to write (answered locally), be closing, or
            // have stopped early with input left (the flush phase serves it again).
            if self.clients.get(index).is_some_and(Client::needs_flush) {
                self.clients.flush_later(index);
            }
        }
        self.serve_list = list;
        self.apply_completions(now);
    }

    fn serve_client(&mut self, index: usize, now: Instant) {
        let Some(listener) = self.clients.get(index).map(|c| c.listener()) else {
            return;
        };
        let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) else {
            return;
        };
        let limits = spec.limits;
        let slow_after = spec.request_read_timeout;
        let mut reads = 0;
        loop {
            // Dispatch whatever whole requests are buffered, within the limits.
            loop {
                let Some(client) = self.clients.get_mut(index) else {
                    return;
                };
                if client.is_closing() || !client.may_dispatch() {
                    break;
                }
                if let Some((request, bytes)) = client.take_deferred() {
                    // A held write whose earlier reads have moved on (already counted).
                    self.dispatch_deferred(index, &request, bytes, now);
                    continue;
                }
                let Some(next) = client.next_request(&limits, now, &mut self.request_arena) else {
                    break;
                };
                self.dispatch(index, next, now);
            }
            let Some(client) = self.clients.get_mut(index) else {
                return;
            };
            client.set_stalled(false);
            if client.is_closing() {
                return;
            }
            if !client.may_dispatch() || (client.wants_read() && reads >= READS_PER_VISIT) {
                client.set_stalled(true);
                return;
            }
            if !client.wants_read() {
                break;
            }
            reads += 1;
            match client.read_some(now, &mut self.read_scratch) {
                Ok(bytes) => WorkerStats::add(&self.stats.bytes_read, bytes as u64),
                Err(e) => {
                    log::debug!("client read failed: {e}");
                    return;
                }
            }
        }
        // Waiting for the rest of a request: make sure its arrival is timed.
        let Some(slow_after) = slow_after else {
            return;
        };
        if let Some(client) = self.clients.get_mut(index) {
            if let Some(since) = client.arm_slow_timer() {
                let generation = client.generation();
                self.timers.schedule(
                    since + slow_after,
                    TimerEvent::ClientSlowRequest {
                        client: index,
                        generation,
                    },
                );
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(now, &mut fired);
        for event in fired.drain(..) {
            match event {
                TimerEvent::Backend {
                    conn,
                    generation,
                    at,
                } => {
                    let next = self.backends.on_timer(
                        self.poll.registry(),
                        conn,
                        generation,
                        at,
                        now,
                        &mut self.completions,
                    );
                    self.conn_timers.extend(next);
                }
                TimerEvent::ClientIdle { client, generation } => {
                    self.check_idle(client, generation, now);
                }
                TimerEvent::ClientSlowRequest { client, generation } => {
                    self.check_slow_request(client, generation, now);
                }
                TimerEvent::Job(id) => self.run_job(id, now),
            }
        }
        self.fired = fired;
        self.apply_completions(now);
    }

    fn check_idle(&mut self, index: usize, generation: u32, now: Instant) {
        let Some(client) = self.clients.current(index, generation) else {
            return;
        };
        let Some(idle) = self
            .listeners
            .get(client.listener())
            .and_then(|l| l.spec.idle_timeout)
        else {
            return;
        };
        let since = client.idle_for(now);
        if client.is_idle() && since >= idle {
            log::debug!("closing client idle for {since:?}");
            self.kill_client(index);
        } else {
            let at = if client.is_idle() {
                client.last_active() + idle
            } else {
                now + idle
            };
            self.timers.schedule(
                at,
                TimerEvent::ClientIdle {
                    client: index,
                    generation,
                },
            );
        }
    }

    /// A client whose request started arriving `request_read_timeout` ago and is still not
    /// whole is closed. One timer per client is enough: a stale one is ignored, and the
    /// serve phase arms a new one while a request is partly in.
    fn check_slow_request(&mut self, index: usize, generation: u32, now: Instant) {
        let Some(client) = self.clients.current(index, generation) else {
            return;
        };
        let Some(limit) = self
            .listeners
            .get(client.listener())
            .and_then(|l| l.spec.request_read_timeout)
        else {
            return;
        };
        client.slow_timer_fired();
        // A client held back by its own limits is not slow: its request is whole, unread.
        if client.is_stalled() {
            return;
        }
        let Some(since) = client.partial_since() else {
            return;
        };
        if now.saturating_duration_since(since) < limit {
            client.arm_slow_timer();
            self.timers.schedule(
                since + limit,
                TimerEvent::ClientSlowRequest {
                    client: index,
                    generation,
                },
            );
            return;
        }
        WorkerStats::add(&self.stats.clients_closed_slow_request, 1);
        log::debug!("closing client: request not whole after {limit:?}");
        self.kill_client(index);
    }

    fn accept_all(&mut self, now: Instant) {
        for li in 0..self.listeners.len() {
            let Some(listener) = self.listeners.get_mut(li) else {
                continue;
            };
            if !listener.pending_accept {
                continue;
            }
            listener.pending_accept = false;
            let mut accepted = 0;
            while accepted < ACCEPT_BATCH {
                let Some(socket) = self.listeners.get(li).and_then(|l| l.socket.as_ref()) else {
                    break;
                };
                match socket.accept() {
                    Ok((stream, _peer)) => {
                        accepted += 1;
                        self.admit(li, stream, now);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE and friends: try again on the next readiness event rather
                        // than spin on an error that will not clear by itself.
                        crate::warn_limited!(
                            self.log,
                            LogEvent::AcceptFailed,
                            None,
                            now,
                            "accept failed: {e}"
                        );
                        break;
                    }
                }
            }
            if accepted == ACCEPT_BATCH {
                // More may be waiting: come back next iteration without sleeping.
                if let Some(listener) = self.listeners.get_mut(li) {
                    listener.pending_accept = true;
                }
            }
        }
    }

    fn admit(&mut self, listener: usize, mut stream: TcpStream, now: Instant) {
        let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) else {
            return;
        };
        let open = spec.connections.fetch_add(1, Ordering::Relaxed);
        if open >= spec.max_connections {
            spec.connections.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.rejected_connections, 1);
            // memcached's words; best effort, the socket buffer of a new connection is empty.
            let _ = std::io::Write::write(&mut stream, b"ERROR Too many open connections\r\n");
            log::debug!(
                "listener {}: connection rejected (max_connections)",
                spec.name
            );
            return;
        }
        if !self.client_fds.try_take() {
            // Past here a backend connect could fail with EMFILE and a client's request with
            // it: refuse the newcomer instead, while the descriptors for backends are kept.
            spec.connections.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.rejected_connections, 1);
            WorkerStats::add(&self.stats.rejected_connections_fd, 1);
            let _ = std::io::Write::write(&mut stream, b"ERROR Too many open connections\r\n");
            let limit = self.client_fds.limit();
            crate::warn_limited!(
                self.log,
                LogEvent::AcceptFailed,
                None,
                now,
                "connection refused: {limit} clients use every descriptor the open file limit \
                 leaves beside the reserve for backend connections"
            );
            return;
        }
        let idle_timeout = spec.idle_timeout;
        let limits = self
            .listeners
            .get(listener)
            .map(WorkerListener::client_limits);
        let Some(limits) = limits else {
            return;
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("client TCP_NODELAY: {e}");
        }
        let registry = self.poll.registry();
        let admitted = self
            .clients
            .admit(stream, listener, limits, now, |stream, index| {
                registry.register(
                    stream,
                    Token(CLIENT_BASE + index),
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
        let (index, generation) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                log::warn!("could not register a client: {e}");
                if let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) {
                    spec.connections.fetch_sub(1, Ordering::Relaxed);
                }
                self.client_fds.release();
                return;
            }
        };
        WorkerStats::add(&self.stats.curr_connections, 1);
        WorkerStats::add(&self.stats.total_connections, 1);
        if let Some(idle) = idle_timeout {
            self.timers.schedule(
                now + idle,
                TimerEvent::ClientIdle {
                    client: index,
                    generation,
                },
            );
        }
    }

    fn flush_backends(&mut self, now: Instant) {
        self.backends
            .flush(self.poll.registry(), now, &mut self.completions);
        self.apply_completions(now);
    }

    fn flush_clients(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.flush_list);
        self.clients.take_flushes(&mut list);
        for &index in &list {
            self.flush_client(index, now);
        }
        self.flush_list = list;
        // Resumed exchanges may have sent requests that failed at once.
        self.apply_completions(now);
    }

    fn flush_client(&mut self, index: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        let before = client.buffered();
        if !client.is_dead() {
            match client.flush() {
                Ok(n) => WorkerStats::add(&self.stats.bytes_written, n as u64),
                Err(e) => {
                    log::debug!("client write failed: {e}");
                    client.kill();
                }
            }
        }
        let after = client.buffered();
        let finished = client.finished();
        if !finished && client.is_idle() {
            client.shrink_if_idle();
        }
        self.account(before, after);
        if finished {
            self.close_client(index);
            return;
        }
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        // A client that drained below its soft limit lets parked exchanges go on.
        if client.has_parked() && client.may_take_more() {
            for id in client.take_parked() {
                self.resume_exchange(id, now);
            }
        }
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        // A client that was held back by its limits and has drained is served again.
        if client.is_stalled() && !client.is_closing() && client.may_dispatch() {
            self.clients.revisit(index);
        }
    }

    fn resume_exchange(&mut self, id: ExchangeId, now: Instant) {
        let Some(exchange) = self.exchanges.get_mut(id) else {
            return;
        };
        let slot = exchange.slot;
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(true);
        let flow = exchange.resume(&mut fx);
        self.apply_effects(id, slot, flow, &mut fx, now);
        self.fx = fx;
    }

    fn close_client(&mut self, index: usize) {
        let Some(mut client) = self.clients.remove(index) else {
            return;
        };
        self.account(client.buffered(), 0);
        self.account_requests(client.request_bytes(), 0);
        // Its exchanges end; replies still in flight for them are drained and dropped.
        for id in client.exchanges() {
            self.exchanges.remove(id);
        }
        if let Err(e) = client.deregister(self.poll.registry()) {
            log::debug!("deregister client: {e}");
        }
        if let Some(listener) = self.listeners.get(client.listener()) {
            listener.spec.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.client_fds.release();
        WorkerStats::sub(&self.stats.curr_connections, 1);
    }

    /// Over the worker's share of the reply memory budget: close the clients holding the most
    /// reply bytes until it is back under (the biggest offenders pay, not everyone).
    fn enforce_budget(&mut self) {
        self.enforce_request_budget();
        self.stats
            .reply_bytes_buffered
            .store(self.buffered as u64, Ordering::Relaxed);
        if self.buffered <= self.reply_budget {
            return;
        }
        let mut holders: Vec<(usize, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.is_dead())
            .map(|(i, c)| (c.buffered(), i))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut over = self.buffered - self.reply_budget;
        let mut shed = Vec::new();
        for (bytes, index) in holders {
            if over == 0 || bytes == 0 {
                break;
            }
            over = over.saturating_sub(bytes);
            shed.push(index);
        }
        if !shed.is_empty() {
            crate::warn_limited!(
                self.log,
                LogEvent::ClientClosed,
                None,
                Instant::now(),
                "worker {}: {} reply bytes buffered, over the budget of {}: closing the {} clients holding the most",
                self.id,
                self.buffered,
                self.reply_budget,
                shed.len()
            );
        }
        for index in shed {
            WorkerStats::add(&self.stats.clients_shed, 1);
            self.kill_client(index);
            self.flush_client(index, Instant::now());
        }
    }

    /// Over the process's request memory budget (client read buffers holding requests not yet
    /// handed on, such as values still arriving): close this worker's clients holding the most
    /// until the total is back under, or this worker holds nothing more.
    fn enforce_request_budget(&mut self) {
        self.stats
            .request_bytes_buffered
            .store(self.request_bytes as u64, Ordering::Relaxed);
        let over = self.request_memory.over();
        if over == 0 || self.request_bytes == 0 {
            return;
        }
        let mut holders: Vec<(usize, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.is_dead() && c.request_bytes() > 0)
            .map(|(i, c)| (c.request_bytes(), i))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut left = over;
        let mut shed = 0;
        for (bytes, index) in holders {
            if left == 0 {
                break;
            }
            left = left.saturating_sub(bytes);
            shed += 1;
            WorkerStats::add(&self.stats.clients_shed_request_memory, 1);
            self.kill_client(index);
            // Closed now, so the shared total drops before other workers look at it.
            self.flush_client(index, Instant::now());
        }
        crate::warn_limited!(
            self.log,
            LogEvent::ClientClosed,
            None,
            Instant::now(),
            "worker {}: request buffers {} bytes over request_memory_budget: closed the {} clients holding the most",
            self.id,
            over,
            shed
        );
        self.stats
            .request_bytes_buffered
            .store(self.request_bytes as u64, Ordering::Relaxed);
    }

    /// One shutdown step; returns true when the worker may exit.
    fn shutdown_step(&mut self, now: Instant) -> bool {
        let deadline = match self.shutdown_deadline {
            Some(d) => d,
            None => {
                for listener in &mut self.listeners {
                    if let Some(mut socket) = listener.socket.take() {
                        let _ = self.poll.registry().deregister(&mut socket);
                    }
                    listener.pending_accept = false;
                }
                for index in self.clients.indices() {
                    if let Some(client) = self.clients.get_mut(index) {
                        client.close_after_replies();
                        if client.is_idle() {
                            client.kill();
                        }
                    }
                    self.clients.flush_later(index);
                }
                let d = now + SHUTDOWN_GRACE;
                self.shutdown_deadline = Some(d);
                self.flush_clients(now);
                d
            }
        };
        if self.clients.is_empty() {
            return true;
        }
        if now >= deadline {
            log::warn!(
                "worker {}: {} clients still waiting at shutdown deadline",
                self.id,
                self.clients.len()
            );
            return true;
        }
        false
    }

    /// Starts exchange `exchange`, already built with its first effects in `fx`.
    pub(crate) fn start_exchange(
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

    /// A ready-made reply slot for `client` (answers produced by the proxy itself). A slot that
    /// closes the connection also stops the parsing of anything the client sent after it.
    pub(crate) fn answer_locally(&mut self, client: usize, slot: Slot) {
        if let Some(c) = self.clients.get_mut(client) {
            if slot.closes_connection() {
                c.close_after_replies();
            }
            let before = c.buffered();
            c.push_slot(slot);
            let after = c.buffered();
            self.account(before, after);
        }
    }

    /// The settings of listener `listener`.
    pub(crate) fn listener_spec(&self, listener: usize) -> Option<&ListenerSpec> {
        self.listeners.get(listener).map(|l| &l.spec)
    }
}
