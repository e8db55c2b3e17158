//! One worker thread: a mio `Poll` and everything on it.
//!
//! Phase order of one loop iteration (each phase may feed the next):
//! 1. poll, with a timeout of 0 if clients are waiting to be revisited, else until the next
//!    timer (or a short tick while shutting down);
//! 2. record readiness by token range: listeners, the waker, backends, clients;
//! 3. drive backends that had events: finish connects, frame replies, hand each reply to its
//!    client slot;
//! 4. serve clients that are readable (or were paused and have drained): read, parse,
//!    dispatch each request to a backend write queue or answer it locally;
//! 5. fire expired timers: request deadlines, connect timeouts, idle clients;
//! 6. accept new connections;
//! 7. flush every backend that has queued bytes (one `writev` each), then every client with
//!    complete replies at the head of its FIFO;
//! 8. on shutdown, stop accepting and leave once every client is answered (or time is up).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::backend::conn::ArmTimer;
use crate::backend::{BackendConn, Completion};
use crate::client::{Client, Slot};
use crate::listener::ListenerSpec;
use crate::route::{RoundRobin, Router};
use crate::shutdown::Shutdown;
use crate::stats::{DetailStats, StatsRegistry, WorkerStats};
use crate::timer::TimerWheel;

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
}

struct WorkerListener {
    socket: Option<TcpListener>,
    spec: ListenerSpec,
    pending_accept: bool,
}

/// A worker's loop state.
pub struct Worker {
    pub(crate) id: usize,
    pub(crate) poll: Poll,
    listeners: Vec<WorkerListener>,
    pub(crate) clients: Slab<Client>,
    next_generation: u32,
    pub(crate) backends: Vec<BackendConn>,
    /// For each server: (index of its first connection in `backends`, connection count).
    pub(crate) server_conns: Vec<(usize, usize)>,
    pub(crate) router: Arc<Router>,
    /// Per listener, the servers `flush_all` goes to.
    pub(crate) flush_targets: Vec<Vec<usize>>,
    /// Round-robin turns, per pool.
    pub(crate) round_robin: RoundRobin,
    /// Scratch for splitting multi-gets (reused, so a split allocates only what it keeps):
    /// the servers of the parts, the parts' line lengths and key counts, the built lines.
    pub(crate) split_servers: Vec<usize>,
    pub(crate) split_lens: Vec<(usize, usize)>,
    pub(crate) split_lines: Vec<(bytes::Bytes, usize)>,
    pub(crate) timers: TimerWheel<TimerEvent>,
    pub(crate) stats: Arc<WorkerStats>,
    /// Per-route and per-server counters.
    pub(crate) detail: Arc<DetailStats>,
    pub(crate) registry: Arc<StatsRegistry>,
    shutdown: Arc<Shutdown>,
    shutdown_deadline: Option<Instant>,
    pub(crate) completions: Vec<Completion>,
    revisit: Vec<usize>,
    pub(crate) flush_clients: Vec<usize>,
    pub(crate) flush_backends: Vec<usize>,
    backend_events: Vec<usize>,
    fired: Vec<TimerEvent>,
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
        let mut backends = Vec::new();
        let mut server_conns = Vec::new();
        for (index, server) in setup.router.servers().iter().enumerate() {
            server_conns.push((backends.len(), server.connections));
            for _ in 0..server.connections {
                let token = Token(BACKEND_BASE + backends.len());
                backends.push(BackendConn::new(
                    index,
                    server.addr,
                    server.timeout,
                    server.connect_timeout,
                    token,
                    stats.clone(),
                ));
            }
        }
        let now = Instant::now();
        Ok(Worker {
            id: setup.id,
            poll,
            listeners,
            clients: Slab::new(),
            next_generation: 0,
            flush_targets: (0..listener_count)
                .map(|l| setup.router.reachable_servers(l))
                .collect(),
            round_robin: RoundRobin::new(setup.router.pools().len()),
            split_servers: Vec::new(),
            split_lens: Vec::new(),
            split_lines: Vec::new(),
            backends,
            server_conns,
            router: setup.router,
            timers: TimerWheel::new(now),
            stats,
            detail: setup.registry.detail(setup.id),
            registry: setup.registry,
            shutdown: setup.shutdown,
            shutdown_deadline: None,
            completions: Vec::new(),
            revisit: Vec::new(),
            flush_clients: Vec::new(),
            flush_backends: Vec::new(),
            backend_events: Vec::new(),
            fired: Vec::new(),
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
            for event in events.iter() {
                self.record_event(event);
            }
            self.drive_backends(now);
            self.serve_clients(now);
            self.fire_timers(now);
            self.accept_all(now);
            self.flush_all_backends(now);
            self.flush_all_clients();
            if self.shutdown.is_requested() && self.shutdown_step(now) {
                break;
            }
        }
        log::debug!("worker {} stopped", self.id);
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.revisit.is_empty() || self.listeners.iter().any(|l| l.pending_accept) {
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
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    client.readable = true;
                }
                client.read_closed |= event.is_read_closed();
                if !client.queued {
                    client.queued = true;
                    self.revisit.push(index);
                }
                if event.is_error() {
                    client.dead = true;
                }
            }
        } else if token >= BACKEND_BASE {
            let index = token - BACKEND_BASE;
            if let Some(conn) = self.backends.get_mut(index) {
                conn.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
                conn.read_closed |= event.is_read_closed() || event.is_error();
                conn.writable |= event.is_writable() || event.is_write_closed();
                self.backend_events.push(index);
            }
        } else if let Some(listener) = self.listeners.get_mut(token) {
            listener.pending_accept = true;
        }
    }

    fn drive_backends(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.backend_events);
        for &index in &events {
            let Some(conn) = self.backends.get_mut(index) else {
                continue;
            };
            conn.drive(self.poll.registry(), now, &mut self.completions);
            let timer = conn.rearm();
            if conn.queued_bytes() > 0 && !conn.queued_for_flush {
                conn.queued_for_flush = true;
                self.flush_backends.push(index);
            }
            if let Some(t) = timer {
                self.schedule_backend(index, t);
            }
        }
        events.clear();
        self.backend_events = events;
        self.apply_completions();
    }

    pub(crate) fn schedule_backend(&mut self, conn: usize, timer: ArmTimer) {
        self.timers.schedule(
            timer.at,
            TimerEvent::Backend {
                conn,
                generation: timer.generation,
                at: timer.at,
            },
        );
    }

    /// Hands every collected reply to its client slot and counts it.
    pub(crate) fn apply_completions(&mut self) {
        for completion in self.completions.drain(..) {
            if let Some(reason) = completion.failed {
                let timeout = reason == crate::backend::FailReason::Timeout;
                WorkerStats::add(&self.stats.backend_errors, 1);
                if timeout {
                    WorkerStats::add(&self.stats.backend_timeouts, 1);
                }
                self.detail.server_failure(completion.server, timeout);
            }
            if completion.lookups > 0 {
                let hits = completion.values.min(completion.lookups);
                WorkerStats::add(&self.stats.get_hits, hits as u64);
                WorkerStats::add(&self.stats.get_misses, (completion.lookups - hits) as u64);
            }
            let owner = completion.owner;
            let Some(client) = self.clients.get_mut(owner.client) else {
                continue;
            };
            if client.generation != owner.generation {
                continue;
            }
            if client.deliver(owner.seq, owner.part, completion.reply) && !client.pending_flush {
                client.pending_flush = true;
                self.flush_clients.push(owner.client);
            }
        }
    }

    fn serve_clients(&mut self, now: Instant) {
        let revisit = std::mem::take(&mut self.revisit);
        for &index in &revisit {
            if let Some(client) = self.clients.get_mut(index) {
                client.queued = false;
            }
            self.serve_client(index, now);
            // A served client may have replies to write.
            if let Some(client) = self.clients.get_mut(index) {
                if !client.pending_flush {
                    client.pending_flush = true;
                    self.flush_clients.push(index);
                }
            }
        }
        self.apply_completions();
    }

    fn serve_client(&mut self, index: usize, now: Instant) {
        let Some(listener) = self.clients.get(index).map(|c| c.listener) else {
            return;
        };
        let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) else {
            return;
        };
        let (max_outstanding, max_buffered) =
            (spec.max_outstanding_requests, spec.max_buffered_reply_bytes);
        let limits = spec.limits;
        let mut reads = 0;
        loop {
            // Dispatch whatever whole requests are buffered, up to the caps.
            loop {
                let Some(client) = self.clients.get_mut(index) else {
                    return;
                };
                if client.closing || client.is_paused(max_outstanding, max_buffered) {
                    break;
                }
                let Some(next) = client.next_request(&limits) else {
                    break;
                };
                self.dispatch(index, next, now);
            }
            let Some(client) = self.clients.get_mut(index) else {
                return;
            };
            client.stalled = false;
            if client.closing || client.dead {
                return;
            }
            if client.is_paused(max_outstanding, max_buffered)
                || (client.readable && reads >= READS_PER_VISIT)
            {
                client.stalled = true;
                return;
            }
            if !client.readable {
                return;
            }
            reads += 1;
            match client.read() {
                Ok(read) if read.bytes == 0 => {
                    client.readable = false;
                    client.closing = true;
                }
                Ok(read) => {
                    client.last_active = now;
                    client.readable = !read.drained || client.read_closed;
                    WorkerStats::add(&self.stats.bytes_read, read.bytes as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    client.readable = false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("client read failed: {e}");
                    client.dead = true;
                    return;
                }
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
                    let Some(backend) = self.backends.get_mut(conn) else {
                        continue;
                    };
                    let next = backend.on_timer(
                        self.poll.registry(),
                        generation,
                        at,
                        now,
                        &mut self.completions,
                    );
                    if let Some(t) = next {
                        self.schedule_backend(conn, t);
                    }
                }
                TimerEvent::ClientIdle { client, generation } => {
                    self.check_idle(client, generation, now);
                }
            }
        }
        self.fired = fired;
        self.apply_completions();
    }

    fn check_idle(&mut self, index: usize, generation: u32, now: Instant) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        if client.generation != generation {
            return;
        }
        let Some(idle) = self
            .listeners
            .get(client.listener)
            .and_then(|l| l.spec.idle_timeout)
        else {
            return;
        };
        let since = now.saturating_duration_since(client.last_active);
        if client.is_idle() && since >= idle {
            log::debug!("closing client idle for {since:?}");
            client.dead = true;
            if !client.pending_flush {
                client.pending_flush = true;
                self.flush_clients.push(index);
            }
        } else {
            let at = if client.is_idle() {
                client.last_active + idle
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
                        log::warn!("accept failed: {e}");
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
        let idle_timeout = spec.idle_timeout;
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("client TCP_NODELAY: {e}");
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.clients.vacant_entry();
        let index = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(CLIENT_BASE + index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("could not register a client: {e}");
            if let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) {
                spec.connections.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let mut client = Client::new(stream, generation, listener, now);
        client.queued = true;
        entry.insert(client);
        self.revisit.push(index);
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

    fn flush_all_backends(&mut self, now: Instant) {
        let list = std::mem::take(&mut self.flush_backends);
        for &index in &list {
            let Some(conn) = self.backends.get_mut(index) else {
                continue;
            };
            conn.queued_for_flush = false;
            if let Err(reason) = conn.flush() {
                conn.reset(self.poll.registry(), reason, now, &mut self.completions);
            }
        }
        self.flush_backends = list;
        self.flush_backends.clear();
        self.apply_completions();
    }

    fn flush_all_clients(&mut self) {
        let list = std::mem::take(&mut self.flush_clients);
        for &index in &list {
            let Some(client) = self.clients.get_mut(index) else {
                continue;
            };
            client.pending_flush = false;
            if !client.dead {
                match client.flush() {
                    Ok(n) => WorkerStats::add(&self.stats.bytes_written, n as u64),
                    Err(e) => {
                        log::debug!("client write failed: {e}");
                        client.dead = true;
                    }
                }
            }
            if client.finished() {
                self.close_client(index);
                continue;
            }
            // A client that was held back by its caps and has drained is served again.
            let Some(spec) = self.listeners.get(client.listener).map(|l| &l.spec) else {
                continue;
            };
            if client.stalled
                && !client.closing
                && !client.is_paused(spec.max_outstanding_requests, spec.max_buffered_reply_bytes)
                && !client.queued
            {
                client.queued = true;
                self.revisit.push(index);
            }
        }
        self.flush_clients = list;
        self.flush_clients.clear();
    }

    fn close_client(&mut self, index: usize) {
        if !self.clients.contains(index) {
            return;
        }
        let mut client = self.clients.remove(index);
        if let Err(e) = self.poll.registry().deregister(&mut client.stream) {
            log::debug!("deregister client: {e}");
        }
        if let Some(listener) = self.listeners.get(client.listener) {
            listener.spec.connections.fetch_sub(1, Ordering::Relaxed);
        }
        WorkerStats::sub(&self.stats.curr_connections, 1);
        // A later client may take this slab entry: it must not inherit list memberships.
        self.revisit.retain(|&i| i != index);
        self.flush_clients.retain(|&i| i != index);
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
                let indices: Vec<usize> = self.clients.iter().map(|(i, _)| i).collect();
                for index in indices {
                    if let Some(client) = self.clients.get_mut(index) {
                        client.closing = true;
                        if client.is_idle() {
                            client.dead = true;
                        }
                    }
                    if let Some(client) = self.clients.get_mut(index) {
                        if !client.pending_flush {
                            client.pending_flush = true;
                            self.flush_clients.push(index);
                        }
                    }
                }
                let d = now + SHUTDOWN_GRACE;
                self.shutdown_deadline = Some(d);
                self.flush_all_clients();
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

    /// The backend connection a client uses for `server` (clients are pinned to one connection
    /// per server so their requests to it stay in order).
    pub(crate) fn conn_for(&self, server: usize, client: usize) -> Option<usize> {
        let (base, count) = *self.server_conns.get(server)?;
        Some(base + client % count.max(1))
    }

    /// A ready-made reply slot for `client` (answers produced by the proxy itself). A slot that
    /// closes the connection also stops the parsing of anything the client sent after it.
    pub(crate) fn answer_locally(&mut self, client: usize, slot: Slot) {
        if let Some(c) = self.clients.get_mut(client) {
            if slot.closes_connection() {
                c.closing = true;
            }
            c.push_slot(slot);
        }
    }
}
