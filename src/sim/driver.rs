//! The worker's part, without sockets: plans each request with the real [`Planner`], starts
//! the real [`Exchange`]s, hands them completions and carries out their [`Effects`] and
//! [`Flow`] exactly as `src/worker/mod.rs` does (`start_exchange`, `apply_effects`,
//! `on_exchange_event`, `resume_exchange`, `side_effect`, `close_client`), checking the
//! invariants of each step as it goes.

use std::collections::HashMap;

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
            writes_at_cold: HashMap::new(),
            failed_requests: Default::default(),
            policy: "all",
            violations: Vec::new(),
            trace: Vec::new(),
            tracing: false,
            counts: Default::default(),
        }
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
        self.info.insert(
            id.to_bits(),
            XInfo {
                client,
                request: index,
                reads_through: holds_writes,
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
        let origin = self.new_send(request);
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
    /// earlier: reads through warm are checked against the writes already there.
    fn check_cold_order(&mut self, server: usize, token: u64, request: Option<(usize, usize)>) {
        let (Some((client, index)), true) = (request, self.cold.get(server) == Some(&true)) else {
            return;
        };
        let reads_through = self.info.get(&token).is_some_and(|i| i.reads_through);
        let write = self
            .clients
            .get(client)
            .and_then(|c| c.requests.get(index))
            .is_some_and(|(r, _)| check::is_write(r.command));
        let slot = self.writes_at_cold.entry((client, server)).or_insert(0);
        if write && !reads_through {
            *slot = (*slot).max(index + 1);
            return;
        }
        if !reads_through {
            return;
        }
        if *slot > index + 1 {
            let write = *slot - 1;
            self.violation(format!(
                "c{client}: read #{index} reached cold server {server} after write #{write}"
            ));
        }
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
        for id in c.close() {
            self.exchanges.remove(id);
        }
    }
}
