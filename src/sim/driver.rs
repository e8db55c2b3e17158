//! The worker's part, without sockets: plans each request with the real [`Planner`], starts
//! the real [`Exchange`]s, hands them completions and carries out their [`Effects`] and
//! [`Flow`] exactly as `src/worker/mod.rs` does (`start_exchange`, `apply_effects`,
//! `on_exchange_event`, `resume_exchange`, `wake_exchange`, `side_effect`, `close_client`),
//! checking the invariants of each step as it goes.
//!
//! Time is virtual: [`Driver::clock`] moves only when the scheduler says so (a little each
//! step, or up to the next exchange timer when it fires one); every call into an exchange is
//! given `fx.now` from it; the `fx.wake_at` an exchange asks for goes into a timer queue that
//! the scheduler fires ([`Driver::fire_timer`]); the stores of the servers that follow the
//! clock ([`Driver::timed`]) see it in whole seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::backend::{Conn, Delivered, Origin};
use super::check::{self, Outcomes};
use super::client::SimClient;
use super::store::Store;
use crate::exchange::{Effects, Exchange, ExchangeId, Exchanges, Flow, Send, SlotRef};
use crate::protocol::Request;
use crate::routing::plan::{Context, Plan, Planner, Start, StartKind};
use crate::upstream::{FailReason, Owner};

/// Tokens of side-effect requests (owned by a job in the worker) have this bit.
const JOB: u64 = 1 << 63;

/// A known finding (reported, not failed): on a route with leases, a write whose result
/// depends on what the server holds (`add`, `replace`, `ms` in mode `E`/`R`) goes to warm as it
/// went to cold, whatever cold answered: cold refuses it and warm stores it (warm lacked the
/// key, or held a placeholder), and warm serves a value cold never held.
pub const WARM_STORED_REFUSED: &str = "warm stored a write cold refused";

/// A known finding: a client that closes while its write to cold, then warm, is at cold ends
/// the exchange (as `close_client` ends every exchange of the client), so the step in warm
/// never goes: cold applies the write and warm keeps the older value.
pub const ORPHANED_WARM_STEP: &str = "a closed client's write reached cold but never warm";

/// What the checks saw of a lease read's replies from warm.
#[derive(Debug, Default)]
struct LeaseSeen {
    /// Warm gave it the lease (`W`).
    won: bool,
    /// When warm first told it that another reader holds the lease (`Z` on an empty value).
    first_wait: Option<Duration>,
    /// Warm failed or answered no value (`EN`, an error): it may read cold without a lease.
    no_lease: bool,
}

/// What the checks saw of a write to cold, then warm.
#[derive(Debug, Default)]
struct OrderedSeen {
    /// The key it writes.
    key: Vec<u8>,
    /// A quiet meta write (`q`): a success is answered with nothing.
    quiet: bool,
    /// Its step in warm is the client's own write of a value (not a delete of warm's copy).
    same_step: bool,
    /// Cold answered (not a failure): was it a success.
    cold: Option<bool>,
    /// Its step in warm was sent.
    warm_sent: bool,
}

/// What the checks know of one exchange.
#[derive(Debug, Default)]
struct XInfo {
    client: usize,
    request: usize,
    /// Sends that went out and have not ended.
    outstanding: u32,
    /// Sum of its `held_delta`s.
    held: isize,
    /// It is a warm_first read through warm (it must release its client's writes once).
    reads_through: bool,
    released: bool,
    /// Sends that went out, and for each that ended its part and whether it succeeded.
    sent: u32,
    outcomes: Vec<(u32, bool)>,
    /// Its kind (`forward`, `lease`, `ordered`...).
    kind: &'static str,
    /// Per key read under leases (its lane: 0 for a one-key read, the key's place in a
    /// `lease_batch`).
    lease: HashMap<u32, LeaseSeen>,
    ordered: OrderedSeen,
}

/// Bits of a `lease_batch` request number that are its key's own (as `LANE_BITS` there).
const LANE_BITS: u32 = 12;

/// The key (lane) of a lease read's request `part`.
fn lane(kind: &str, part: u32) -> u32 {
    match kind {
        "lease_batch" => part >> LANE_BITS,
        _ => 0,
    }
}

/// True for exchanges that read under leases.
fn leased(kind: &str) -> bool {
    matches!(kind, "lease" | "lease_batch")
}

/// The worker and the simulated network.
pub struct Driver {
    planner: Planner,
    exchanges: Exchanges,
    fx: Effects,
    /// The clients, by index (their generation is always 0).
    pub clients: Vec<SimClient>,
    /// Client connections: `per_server` per server, then one side-effect connection each.
    pub conns: Vec<Conn>,
    per_server: usize,
    servers: usize,
    /// Each server's items.
    pub stores: Vec<Store>,
    /// Servers marked down (requests to them fail fast).
    pub down: Vec<bool>,
    /// Per server: its connection refuses the next request at once with this reason (a full
    /// queue, connect backoff, a failed connect).
    pub refuse: Vec<Option<FailReason>>,
    /// Completions not yet handed on (as the worker's `completions`).
    pending: Vec<Delivered>,
    info: HashMap<u64, XInfo>,
    /// Per send: ended yet.
    ended: HashMap<u64, bool>,
    next_send: u64,
    next_job: u64,
    /// The listener's `multiget_window`.
    pub window: usize,
    /// The cold servers of warm_first routes.
    pub cold: Vec<bool>,
    /// The warm servers of warm_first routes.
    pub warm: Vec<bool>,
    /// Per (client, cold server): the highest request index of a write that reached it.
    writes_at_cold: HashMap<(usize, usize), usize>,
    /// The write policy of the `par` route (`all`, `majority`, `first`).
    pub policy: &'static str,
    /// Client requests (client, index) one of whose backend requests failed.
    pub failed_requests: std::collections::HashSet<(usize, usize)>,
    /// Broken invariants, in the order found.
    pub violations: Vec<String>,
    /// What happened, for a replay.
    pub trace: Vec<String>,
    /// Record a trace.
    pub tracing: bool,
    /// How often each thing happened (coverage of the runs).
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// The virtual time since the run began.
    pub clock: Duration,
    /// The instant the clock counts from (fixed per thread: only differences matter).
    base: Instant,
    /// Exchange wake-ups asked for (`fx.wake_at`), by time and order of asking.
    timers: BTreeMap<(Duration, u64), ExchangeId>,
    next_timer: u64,
    /// Servers whose store follows the clock (a warm_first route's tiers).
    pub timed: Vec<bool>,
    /// The `wait` of the leased route, if the config has one (for the herd check).
    pub lease_wait: Option<Duration>,
    /// Known findings met (reported, not failed), in the order found.
    pub known: Vec<String>,
    /// Client requests (client, index) after which warm may hold what cold does not, for a
    /// known reason: their keys are checked as after a failure.
    pub diverged: HashSet<(usize, usize)>,
    /// Keys warm may hold differently from cold for a known reason, with the reason.
    pub diverged_keys: HashMap<Vec<u8>, String>,
    /// Per send: the exchange (token) and request number it was sent for.
    sent_for: HashMap<u64, (u64, u32)>,
    /// Per side-effect send of a lease holder: what it is (`write-back`, `placeholder drop`).
    lease_steps: HashMap<u64, &'static str>,
    /// Per key, the steps of writes to cold, then warm, in the order the servers executed
    /// them: (request number: 0 cold, 1 warm; the exchange).
    pub tier_order: HashMap<Vec<u8>, Vec<(u32, u64)>>,
}

impl Driver {
    /// A worker with `planner` over `servers` servers, `per_server` connections each.
    pub fn new(planner: Planner, servers: usize, per_server: usize, window: usize) -> Driver {
        let conns = (0..servers * (per_server + 1))
            .map(|i| match i < servers * per_server {
                true => Conn::new(i / per_server, 64),
                false => Conn::new(i - servers * per_server, 64),
            })
            .collect();
        Driver {
            planner,
            exchanges: Exchanges::default(),
            fx: Effects::default(),
            clients: Vec::new(),
            conns,
            per_server,
            servers,
            stores: vec![Store::default(); servers],
            down: vec![false; servers],
            refuse: vec![None; servers],
            pending: Vec::new(),
            info: HashMap::new(),
            ended: HashMap::new(),
            next_send: 0,
            next_job: 0,
            window,
            cold: vec![false; servers],
            warm: vec![false; servers],
            writes_at_cold: HashMap::new(),
            failed_requests: Default::default(),
            policy: "all",
            violations: Vec::new(),
            trace: Vec::new(),
            tracing: false,
            counts: Default::default(),
            clock: Duration::ZERO,
            base: super::backend::fixed_instant(),
            timers: BTreeMap::new(),
            next_timer: 0,
            timed: vec![false; servers],
            lease_wait: None,
            known: Vec::new(),
            diverged: HashSet::new(),
            diverged_keys: HashMap::new(),
            sent_for: HashMap::new(),
            lease_steps: HashMap::new(),
            tier_order: HashMap::new(),
        }
    }

    /// The server of connection `conn` executes its next request (as the scheduler says).
    pub fn execute(&mut self, conn: usize) -> Option<Origin> {
        let server = self.conns.get(conn)?.server;
        let origin = self.conns[conn].execute_next(&mut self.stores[server])?;
        let step = self.sent_for.get(&origin.send).copied();
        if let Some((token, part)) = step {
            if let Some(info) = self.info.get(&token).filter(|i| i.kind == "ordered") {
                let key = info.ordered.key.clone();
                self.tier_order.entry(key).or_default().push((part, token));
            }
        }
        Some(origin)
    }

    /// The time now, as the exchanges are given it.
    pub fn now(&self) -> Instant {
        self.base + self.clock
    }

    /// Time passes: `by` more.
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
        let seconds = i64::try_from(self.clock.as_secs()).unwrap_or(i64::MAX);
        for (store, _) in self.stores.iter_mut().zip(&self.timed).filter(|(_, t)| **t) {
            store.now = seconds;
        }
    }

    /// When the next exchange timer is due, if any is set.
    pub fn next_timer(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Fires the earliest exchange timer (the clock moves up to it if it is still ahead), as
    /// the worker's `wake_exchange`. False when none is set.
    pub fn fire_timer(&mut self) -> bool {
        let Some(((at, _), id)) = self.timers.pop_first() else {
            return false;
        };
        if at > self.clock {
            self.advance(at - self.clock);
        }
        self.count("timer fired");
        let clock = self.clock;
        self.note(|| format!("t={clock:?} timer fires for x{}", id.to_bits()));
        let Some(exchange) = self.exchanges.get_mut(id) else {
            return true; // it has gone
        };
        let slot = exchange.slot;
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(true);
        fx.now = Some(self.base + self.clock);
        let flow = exchange.on_wake(&mut fx);
        self.apply_effects(id, slot, flow, &mut fx);
        self.fx = fx;
        true
    }

    /// Notes `what` in the trace.
    pub fn note(&mut self, what: impl FnOnce() -> String) {
        if self.tracing {
            self.trace.push(what());
        }
    }

    /// Counts one `what`.
    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_insert(0) += 1;
    }

    fn violation(&mut self, what: String) {
        self.note(|| format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    fn conn_for(&self, server: usize, client: usize) -> usize {
        server * self.per_server + client % self.per_server
    }

    fn side_conn(&self, server: usize) -> usize {
        self.servers * self.per_server + server
    }

    /// Live exchanges.
    pub fn live_exchanges(&self) -> usize {
        self.exchanges.len()
    }

    /// Sends that have not ended.
    pub fn open_sends(&self) -> usize {
        self.ended.values().filter(|e| !**e).count()
    }

    /// Parses and dispatches the next request of `client` (or its held write, once it may go),
    /// as `serve_client` does. False when it may not.
    pub fn dispatch(&mut self, client: usize) -> bool {
        let Some(c) = self.clients.get_mut(client) else {
            return false;
        };
        if !c.may_dispatch() {
            return false;
        }
        if c.holds == 0 {
            if let Some((index, request, bytes)) = c.deferred.take() {
                self.note(|| format!("c{client} dispatches held #{index}"));
                self.plan_and_execute(client, index, &request, bytes, false);
                return true;
            }
        }
        if c.deferred.is_some() {
            return false;
        }
        let index = c.next;
        let Some((request, bytes)) = c.requests.get(index).cloned() else {
            return false;
        };
        c.next += 1;
        self.note(|| format!("c{client} #{index} {:?}", String::from_utf8_lossy(&bytes)));
        self.plan_and_execute(client, index, &request, bytes, true);
        true
    }

    fn plan_and_execute(
        &mut self,
        client: usize,
        index: usize,
        request: &Request,
        bytes: Bytes,
        first: bool,
    ) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let down = self.down.clone();
        let usable = move |server: usize| !down.get(server).copied().unwrap_or(true);
        let cx = Context {
            listener: 0,
            multiget_window: self.window,
            soft_bytes: c.limits.soft,
            reads_open: c.holds > 0,
            touches_open: c.touch_holds > 0,
            usable: &usable,
        };
        let plan = match first {
            true => self.planner.plan(request, bytes, &cx, 0),
            false => self.planner.plan_counted(request, bytes, &cx, 0),
        };
        match plan {
            Plan::Reply { bytes, close } => {
                self.note(|| {
                    format!(
                        "  local {:?} close {close}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                if let Some(c) = self.clients.get_mut(client) {
                    c.push_slot(index, Some(bytes.to_vec()));
                }
            }
            Plan::Stats => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.push_slot(index, Some(b"END\r\n".to_vec()));
                }
            }
            Plan::Defer(request, bytes) => {
                self.count("deferred");
                self.note(|| "  deferred".to_string());
                if let Some(c) = self.clients.get_mut(client) {
                    c.deferred = Some((index, request, bytes));
                }
            }
            Plan::Start(start) => {
                let side = std::mem::take(self.planner.side());
                for (_, send) in &side {
                    self.side_effect(send);
                }
                self.start(client, index, start);
            }
        }
    }

    /// `Worker::start` and `start_exchange`.
    fn start(&mut self, client: usize, index: usize, start: Start) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let seq = c.push_slot(index, None);
        let slot = SlotRef {
            client,
            generation: 0,
            seq,
        };
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(true);
        fx.now = Some(self.now());
        let sends = self.planner.sends();
        let kind = match &start.kind {
            StartKind::Forward { .. } => "forward",
            StartKind::FanOut => "fan_out",
            StartKind::Retrieval(_) => "retrieval",
            StartKind::Failover(_) => "failover",
            StartKind::Parallel { .. } => "parallel",
            StartKind::Lease(_) => "lease",
            StartKind::LeaseBatch(_) => "lease_batch",
            StartKind::Ordered(_) => "ordered",
        };
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
        let holds_writes = exchange.holds_writes();
        if holds_writes {
            if let Some(c) = self.clients.get_mut(client) {
                c.hold_started(exchange.touches());
            }
        }
        self.count(kind);
        let flow = exchange.flow(&fx);
        let id = self.exchanges.insert(exchange);
        self.note(|| format!("  {kind} x{} slot {seq}", id.to_bits()));
        let (key, quiet) = self
            .clients
            .get(client)
            .and_then(|c| c.requests.get(index))
            .map(|(r, b)| (r.first_key(b).to_vec(), r.quiet))
            .unwrap_or_default();
        self.info.insert(
            id.to_bits(),
            XInfo {
                client,
                request: index,
                reads_through: holds_writes,
                kind,
                ordered: OrderedSeen {
                    key,
                    quiet,
                    ..OrderedSeen::default()
                },
                ..XInfo::default()
            },
        );
        if let Some(c) = self.clients.get_mut(client) {
            c.attach(seq, id);
        }
        self.apply_effects(id, slot, flow, &mut fx);
        self.fx = fx;
    }

    /// `Worker::apply_effects`.
    fn apply_effects(&mut self, id: ExchangeId, slot: SlotRef, flow: Flow, fx: &mut Effects) {
        if let Some(per_key) = fx.key_bytes.take() {
            self.planner.observe_key_bytes(per_key);
        }
        let (detached, touches) = self
            .exchanges
            .get_mut(id)
            .map_or((false, false), |e| (e.is_detached(), e.touches()));
        let key = id.to_bits();
        self.note(|| {
            format!(
                "  x{key} {flow:?} deliver {:?} sends {} held {:+} released {} abort {}",
                fx.deliver
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>(),
                fx.sends.len(),
                fx.held_delta,
                fx.writes_released,
                fx.abort
            )
        });
        self.check_release(key, fx);
        if fx.abort {
            self.count("abort");
        }
        match flow {
            Flow::Parked => self.count("parked"),
            Flow::Background if !detached => self.count("background"),
            _ => {}
        }
        if let Some(info) = self.info.get_mut(&key) {
            info.held += fx.held_delta;
        }
        let alive = self.clients.get(slot.client).is_some_and(|c| c.alive);
        let mut answered = false;
        match self.clients.get_mut(slot.client).filter(|_| alive) {
            Some(client) => {
                client.exchange_bytes += fx.held_delta;
                let negative = client.exchange_bytes < 0;
                if fx.writes_released {
                    client.hold_released(touches);
                }
                for _ in &fx.sends {
                    client.request_sent();
                }
                let complete = !detached && matches!(flow, Flow::Done | Flow::Background);
                if complete {
                    answered = true;
                }
                let result = if !detached && (complete || fx.abort || !fx.deliver.is_empty()) {
                    client.deliver(slot.seq, &fx.deliver, complete, fx.abort)
                } else {
                    Ok(())
                };
                if flow == Flow::Parked {
                    client.park(id);
                }
                if negative {
                    self.violation(format!(
                        "c{}: exchanges hold fewer than 0 bytes",
                        slot.client
                    ));
                }
                if detached && !fx.deliver.is_empty() {
                    self.violation(format!("x{key}: delivers after its slot was complete"));
                }
                if let Err(e) = result {
                    self.violation(format!("c{}: {e}", slot.client));
                }
            }
            None if detached => {}
            None => {
                self.exchanges.remove(id);
                fx.sends.clear();
                return;
            }
        }
        if answered {
            self.check_policy(key, &fx.deliver);
        }
        if let Some(at) = fx.wake_at.take() {
            let at = at.saturating_duration_since(self.base);
            if at < self.clock {
                // A time already past (a batch's earliest key, due while another key was
                // answered): the timer fires as soon as the loop turns, and finds it due.
                self.count("timer set in the past");
            }
            self.next_timer += 1;
            self.timers.insert((at, self.next_timer), id);
            self.count("timer set");
            self.note(|| format!("  x{key} wakes at t={at:?}"));
        }
        match flow {
            Flow::Done => self.done(id, fx.abort),
            Flow::Background => {
                if let Some(exchange) = self.exchanges.get_mut(id) {
                    exchange.detach();
                }
            }
            Flow::Wait | Flow::Parked => {}
        }
        let request = self.info.get(&key).map(|i| (i.client, i.request));
        for send in std::mem::take(&mut fx.sends) {
            let owner = Owner {
                token: key,
                part: send.part,
            };
            if let Some(info) = self.info.get_mut(&key) {
                info.outstanding += 1;
                info.sent += 1;
            }
            self.send(slot.client, owner, &send, request);
        }
        for (_, send) in std::mem::take(&mut fx.side) {
            self.side_effect(&send);
        }
    }

    /// Each warm_first read releases its client's writes once, and nothing else does.
    fn check_release(&mut self, key: u64, fx: &Effects) {
        if !fx.writes_released {
            return;
        }
        let broken = match self.info.get_mut(&key) {
            Some(info) if info.reads_through && !info.released => {
                info.released = true;
                None
            }
            Some(info) if info.reads_through => Some("releases its client's writes twice"),
            Some(_) => Some("releases writes but is no read through warm"),
            None => None,
        };
        if let Some(what) = broken {
            self.violation(format!("x{key}: {what}"));
        }
    }

    /// A write of the `par` route must be answered when and as its policy says
    /// ([`check::write_policy`]).
    fn check_policy(&mut self, key: u64, answer: &[Bytes]) {
        let Some(info) = self.info.get(&key) else {
            return;
        };
        let Some((request, bytes)) = self
            .clients
            .get(info.client)
            .and_then(|c| c.requests.get(info.request))
        else {
            return;
        };
        if !request.first_key(bytes).starts_with(b"par:")
            || !check::is_write(request.command)
            || !request.expects_reply()
        {
            return;
        }
        let reply: Vec<u8> = answer.iter().flat_map(|b| b.iter().copied()).collect();
        let outcome = Outcomes {
            sent: info.sent as usize,
            ended: &info.outcomes,
        };
        let broken = check::write_policy(self.policy, request, bytes, &outcome, &reply);
        let at = (info.client, info.request);
        self.count("write policy checked");
        if let Some(what) = broken {
            self.violation(format!("c{} #{}: {what}", at.0, at.1));
        }
    }

    /// The exchange says `Done`: it must have no request out and hold no bytes.
    fn done(&mut self, id: ExchangeId, abort: bool) {
        self.exchanges.remove(id);
        self.count("done");
        let key = id.to_bits();
        let Some(info) = self.info.get(&key) else {
            return;
        };
        let (outstanding, held, reads_through, released) = (
            info.outstanding,
            info.held,
            info.reads_through,
            info.released,
        );
        if outstanding > 0 && !abort {
            self.violation(format!("x{key}: Done with {outstanding} sends still out"));
        }
        if held != 0 {
            self.violation(format!("x{key}: Done still holding {held} bytes"));
        }
        if reads_through && !released {
            self.violation(format!(
                "x{key}: a read through warm ended without releasing writes"
            ));
        }
    }

    /// `Backends::send`: on the client's connection to the server, or refused at once.
    fn send(&mut self, client: usize, owner: Owner, send: &Send, request: Option<(usize, usize)>) {
        self.check_lease_send(owner.token, send, request);
        let origin = self.new_send(request);
        self.sent_for.insert(origin.send, (owner.token, send.part));
        self.note(|| {
            format!(
                "  send s{} -> srv{} part {} {:?}",
                origin.send,
                send.server,
                send.part,
                String::from_utf8_lossy(&send.bytes)
            )
        });
        let conn = self.conn_for(send.server, client);
        if self.down.get(send.server).copied().unwrap_or(true) {
            if self.conns[conn].in_flight() > 0 {
                let mut out = Vec::new();
                let store = &mut self.stores[send.server];
                self.conns[conn].reset(FailReason::Down, 0, store, &mut out);
                self.pending.extend(out);
            }
            self.pending
                .push(Conn::refuse(owner, send, origin, FailReason::Down));
            return;
        }
        // A full queue refuses at any time; backoff and a failed connect only a connection
        // with nothing in flight (a connect failure resets it first).
        let idle = self.conns[conn].in_flight() == 0;
        let refused = self
            .refuse
            .get_mut(send.server)
            .and_then(|r| r.take_if(|why| idle || *why == FailReason::Overloaded));
        if let Some(why) = refused {
            self.pending.push(Conn::refuse(owner, send, origin, why));
            return;
        }
        self.check_cold_order(send.server, owner.token, request);
        self.conns[conn].enqueue(owner, send, origin);
    }

    /// A write of a client must never reach a cold server before a read the client made
    /// earlier (nor before a write to cold, then warm, that holds every later request): each
    /// request of an exchange that holds its client's writes is checked against the writes
    /// already there.
    fn check_cold_order(&mut self, server: usize, token: u64, request: Option<(usize, usize)>) {
        let (Some((client, index)), true) = (request, self.cold.get(server) == Some(&true)) else {
            return;
        };
        let holds = self.info.get(&token).is_some_and(|i| i.reads_through);
        let write = self
            .clients
            .get(client)
            .and_then(|c| c.requests.get(index))
            .is_some_and(|(r, _)| check::is_write(r.command));
        let slot = self.writes_at_cold.entry((client, server)).or_insert(0);
        let later = *slot;
        if write {
            *slot = (*slot).max(index + 1);
        }
        if holds && later > index + 1 {
            let write = later - 1;
            self.violation(format!(
                "c{client}: request #{index} reached cold server {server} after write #{write}"
            ));
        }
    }

    /// Before a send of a lease read or of a write to cold, then warm: what the checks need.
    /// A lease read asks cold only with the lease (`W`), after warm failed or made no
    /// placeholder, or once it has waited `wait` behind another reader's lease: one reader per
    /// key and lease reads cold (no herd).
    fn check_lease_send(&mut self, token: u64, send: &Send, request: Option<(usize, usize)>) {
        let cold = self.cold.get(send.server) == Some(&true);
        let clock = self.clock;
        let wait = self.lease_wait;
        // The client's write, when it stores a value (what its step in warm could store too).
        let stores = request
            .and_then(|(c, i)| self.clients.get(c)?.requests.get(i))
            .filter(|(r, _)| {
                use crate::protocol::Command::{Add, MetaSet, Replace, Set};
                matches!(r.command, Set | Add | Replace | MetaSet)
            })
            .map(|(_, b)| b.clone());
        let Some(info) = self.info.get_mut(&token) else {
            return;
        };
        match info.kind {
            kind if leased(kind) && cold => {
                let seen = info.lease.entry(lane(kind, send.part)).or_default();
                let waited = match (seen.first_wait, wait) {
                    (Some(first), Some(wait)) => clock >= first + wait,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let herd = !(seen.won || seen.no_lease || waited);
                let first = seen.first_wait;
                self.count("lease read of cold");
                if herd {
                    self.violation(format!(
                        "x{token}: a lease read asks cold at t={clock:?} with neither the lease \
                         nor its wait over (first told to wait at {first:?}): a herd"
                    ));
                }
            }
            "ordered" if send.part == 1 => {
                let word = |b: &[u8]| b.split(|&c| c == b' ').next().map(<[u8]>::to_vec);
                info.ordered.warm_sent = true;
                info.ordered.same_step = stores.is_some_and(|b| word(&b) == word(&send.bytes));
            }
            _ => {}
        }
    }

    /// A reply to a lease read or to a write to cold, then warm: what it says, for the checks.
    fn observe(&mut self, token: u64, c: &crate::upstream::Completion) {
        let warm = self.warm.get(c.server) == Some(&true);
        let clock = self.clock;
        let Some(info) = self.info.get_mut(&token) else {
            return;
        };
        match info.kind {
            kind if leased(kind) && warm => {
                let seen = info.lease.entry(lane(kind, c.owner.part)).or_default();
                let line = c.reply.split(|&b| b == b'\r').next().unwrap_or_default();
                let mut words = line.split(|&b| b == b' ');
                let (va, size) = (words.next(), words.next());
                let markers: Vec<&[u8]> = words.collect();
                let what = if c.failed.is_some() || va != Some(b"VA") {
                    seen.no_lease = true;
                    "lease: warm failed or made no placeholder"
                } else if markers.contains(&&b"W"[..]) {
                    seen.won = true;
                    match size == Some(b"0") {
                        true => "lease: W on a placeholder",
                        false => "lease: W on a value (early refresh)",
                    }
                } else if markers.contains(&&b"Z"[..]) && size == Some(b"0") {
                    seen.first_wait.get_or_insert(clock);
                    "lease: Z on a placeholder (wait)"
                } else if markers.contains(&&b"Z"[..]) {
                    "lease: Z on a value"
                } else {
                    "lease: hit"
                };
                self.count(what);
            }
            "ordered" => {
                // A quiet meta write's success is an empty reply; a `noreply` one's reply is
                // dropped unread (neither is known then).
                let quiet = info.ordered.quiet;
                let success = c.failed.is_none()
                    && (check::is_success(&c.reply) || (quiet && c.reply.is_empty()));
                let answered = c.failed.is_none() && (quiet || !c.reply.is_empty());
                match c.owner.part {
                    0 => info.ordered.cold = answered.then_some(success),
                    _ => {
                        let stored = success && info.ordered.same_step;
                        if stored && info.ordered.cold == Some(false) {
                            let (client, index) = (info.client, info.request);
                            let key = info.ordered.key.clone();
                            self.write_diverged(client, index, key);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Known finding: a write that cold refused (`add` of a key cold holds, `replace` of one it
    /// lacks) was stored by warm, which goes on serving a value cold never held.
    fn write_diverged(&mut self, client: usize, index: usize, key: Vec<u8>) {
        let what = format!(
            "{WARM_STORED_REFUSED}: c{client} #{index} ({})",
            String::from_utf8_lossy(&key)
        );
        self.note(|| format!("KNOWN {what}"));
        self.count("known: warm stored a write cold refused");
        self.known.push(what.clone());
        self.diverged.insert((client, index));
        self.diverged_keys.insert(key, what);
    }

    fn new_send(&mut self, request: Option<(usize, usize)>) -> Origin {
        self.next_send += 1;
        self.ended.insert(self.next_send, false);
        Origin {
            send: self.next_send,
            request,
        }
    }

    /// `Worker::side_effect`: on the server's side-effect connection, owned by no client
    /// (every request is admitted: the queue bounds are not modelled).
    fn side_effect(&mut self, send: &Send) {
        self.next_job += 1;
        let owner = Owner {
            token: JOB | self.next_job,
            part: 0,
        };
        let origin = self.new_send(None);
        let lease_step = match &send.bytes[..] {
            b if b.starts_with(b"ms ") && b.windows(2).any(|w| w == b" C") => "write-back",
            b if b.starts_with(b"md ") && b.windows(2).any(|w| w == b" C") => "placeholder drop",
            _ => "",
        };
        if !lease_step.is_empty() {
            self.lease_steps.insert(origin.send, lease_step);
        }
        self.note(|| {
            format!(
                "  side s{} -> srv{} {:?}",
                origin.send,
                send.server,
                String::from_utf8_lossy(&send.bytes)
            )
        });
        if self.down.get(send.server).copied().unwrap_or(true) {
            self.pending
                .push(Conn::refuse(owner, send, origin, FailReason::Down));
            return;
        }
        let conn = self.side_conn(send.server);
        self.conns[conn].enqueue(owner, send, origin);
    }

    /// Adds completions a connection produced.
    pub fn completed(&mut self, out: Vec<Delivered>) {
        self.pending.extend(out);
    }

    /// Hands every collected completion to its exchange until none is left
    /// (`apply_completions`).
    pub fn apply_completions(&mut self) {
        while !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            for (origin, completion) in batch {
                self.on_completion(origin, &completion);
            }
        }
    }

    fn on_completion(&mut self, origin: Origin, c: &crate::upstream::Completion) {
        let token = c.owner.token;
        self.note(|| {
            format!(
                "  completion s{} x{token} part {} end {} failed {:?} {:?}",
                origin.send,
                c.owner.part,
                c.end,
                c.failed,
                String::from_utf8_lossy(&c.reply)
            )
        });
        if let (true, Some(_), Some(request)) = (c.end, c.failed, origin.request) {
            self.failed_requests.insert(request);
        }
        if c.end {
            self.observe(token, c);
            match self.ended.insert(origin.send, true) {
                Some(false) => {}
                Some(true) => self.violation(format!("send s{} ended twice", origin.send)),
                None => self.violation(format!("send s{} ended but was never sent", origin.send)),
            }
            if let Some(info) = self.info.get_mut(&token) {
                info.outstanding = info.outstanding.saturating_sub(1);
                let success = c.failed.is_none() && check::is_success(&c.reply);
                info.outcomes.push((c.owner.part, success));
            }
        }
        match (c.end, c.failed) {
            (false, _) => self.count("piece"),
            (true, Some(_)) => self.count("failed"),
            (true, None) => {}
        }
        if token & JOB != 0 {
            let step = self.lease_steps.remove(&origin.send);
            let refused = c.reply.starts_with(b"EX") || c.reply.starts_with(b"NF");
            match (step, refused, c.reply.starts_with(b"HD")) {
                (Some("write-back"), true, _) => self.count("lease write-back refused (EX/NF)"),
                (Some("write-back"), _, true) => self.count("lease write-back stored"),
                (Some(_), true, _) => self.count("lease placeholder drop refused (EX/NF)"),
                (Some(_), _, true) => self.count("lease placeholder dropped"),
                _ => {}
            }
            self.count("side effect ended");
            return; // a side effect's outcome: counted by its queue, nothing else
        }
        let id = ExchangeId::from_bits(token);
        let Some(exchange) = self.exchanges.get_mut(id) else {
            self.count("dropped");
            return; // its client went: drained and dropped
        };
        let (slot, detached) = (exchange.slot, exchange.is_detached());
        let alive = self.clients.get(slot.client).is_some_and(|c| c.alive);
        let may_send = match self.clients.get_mut(slot.client).filter(|_| alive) {
            Some(client) => {
                if c.end {
                    client.request_answered();
                }
                client.may_send_for(slot.seq)
            }
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
        fx.now = Some(self.base + self.clock);
        let flow = exchange.on_completion(c.owner.part, c, &mut fx);
        self.apply_effects(id, slot, flow, &mut fx);
        self.fx = fx;
    }

    /// The client reads what was written to it; parked exchanges go on once it is under its
    /// soft limit (`flush_client`, `resume_exchange`); a client whose reply stream broke is
    /// closed.
    pub fn client_reads(&mut self, client: usize) {
        let Some(c) = self.clients.get_mut(client).filter(|c| c.alive) else {
            return;
        };
        c.read();
        if c.is_closing() {
            self.note(|| format!("c{client} closed after a broken reply"));
            self.close_client(client);
            return;
        }
        for id in c.take_parked() {
            let Some(exchange) = self.exchanges.get_mut(id) else {
                continue;
            };
            let slot = exchange.slot;
            let Some(c) = self.clients.get_mut(client) else {
                return;
            };
            if !c.may_send_for(slot.seq) {
                c.park(id);
                continue;
            }
            let mut fx = std::mem::take(&mut self.fx);
            fx.reset(true);
            fx.now = Some(self.base + self.clock);
            let flow = exchange.resume(&mut fx);
            self.count("resumed");
            self.note(|| format!("c{client} resumes x{}", id.to_bits()));
            self.apply_effects(id, slot, flow, &mut fx);
            self.fx = fx;
        }
    }

    /// The client goes (`close_client`): the exchanges still answering it end.
    pub fn close_client(&mut self, client: usize) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        // As the worker's `close_client`: exchanges that must go on without their client (a
        // write whose delete in warm must follow its write to cold, a lease holder's
        // write-back) are detached, the others end.
        for id in c.close() {
            match self.exchanges.get_mut(id) {
                Some(exchange) if exchange.outlives_client() => exchange.detach(),
                _ => {
                    self.exchanges.remove(id);
                }
            }
        }
    }
}
