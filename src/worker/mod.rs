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

mod clients;
mod dispatch;
mod exchanges;
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
    /// An exchange asked to be woken (a read waiting for another reader's lease).
    Exchange(ExchangeId),
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
            Some(&setup.registry.detail(setup.id)),
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
                // (Or a server's name moved to another address: leave the old one.)
                self.backends.follow_addresses(self.poll.registry());
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
    pub(super) fn tick(&mut self, now: Instant) {
        let micros = now.saturating_duration_since(self.clock_base).as_micros();
        self.clock = u64::try_from(micros).unwrap_or(u64::MAX);
        self.backends.clock = self.clock;
    }

    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
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

    pub(super) fn record_event(&mut self, event: &mio::event::Event) {
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

    pub(super) fn drive_backends(&mut self, now: Instant) {
        self.backends.drive(
            self.poll.registry(),
            now,
            &mut self.completions,
            &mut self.conn_timers,
        );
        self.apply_completions(now);
    }

    pub(super) fn schedule_conn_timers(&mut self) {
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

    pub(super) fn fire_timers(&mut self, now: Instant) {
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
                TimerEvent::Exchange(id) => self.wake_exchange(id, now),
            }
        }
        self.fired = fired;
        self.apply_completions(now);
    }

    pub(super) fn flush_backends(&mut self, now: Instant) {
        self.backends
            .flush(self.poll.registry(), now, &mut self.completions);
        self.apply_completions(now);
    }

    /// One shutdown step; returns true when the worker may exit.
    pub(super) fn shutdown_step(&mut self, now: Instant) -> bool {
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

    /// The settings of listener `listener`.
    pub(super) fn listener_spec(&self, listener: usize) -> Option<&ListenerSpec> {
        self.listeners.get(listener).map(|l| &l.spec)
    }
}
