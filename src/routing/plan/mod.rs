//! Planning: what one parsed client request becomes, decided in one place and nowhere else.
//!
//! [`Planner::plan`] is a function of the request, its listener's settings, the route table,
//! the strategies' state and which servers are usable now (all given, nothing reached for):
//! it answers with a [`Plan`]: answer locally, hold the request, or start an exchange of a
//! given kind with its servers, its [`Tag`] and its side effects. The worker only carries
//! plans out (src/worker/dispatch.rs). Every routing decision can so be tested without a
//! socket, and what comes later (hot-key sampling, shadow traffic) has one hook point.
//!
//! Each strategy owns its planning, in its own module; this one answers locally, routes the
//! request by its (first) key and hands it to its route's strategy (one `match` on
//! [`RouteKind`], in [`Planner::plan_keyed`]):
//! * [`one_server`]: `blind_forward`, `consistent_hash`, `round_robin` (one server per key);
//! * [`failover`]: `failover` routes (and warm_first's read path);
//! * [`parallel`]: `parallel` routes;
//! * [`warm_first`]: `warm_first` routes;
//! * [`retrieval`]: multi-key retrievals, each key asked of the chain its route's strategy
//!   gives it (one `match` on [`RouteKind`], in `chain_of`; see
//!   [`crate::exchange::retrieval`]);
//! * [`replicate`]: the copies of writes that `replicate` side effects make.

mod failover;
mod one_server;
mod parallel;
mod replicate;
mod retrieval;
mod warm_first;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;

use crate::exchange::failover::Failover;
use crate::exchange::parallel::Answer;
use crate::exchange::retrieval::{Ask, Retrieval};
use crate::exchange::window::KeyBytes;
use crate::exchange::{Framing, Send, Tag};
use crate::observe::health::HealthBoard;
use crate::observe::stats::{DetailStats, WorkerStats};
use crate::protocol::{base64, Command, Request};
use crate::routing::strategy::{Memo, Strategies};
use crate::routing::{RouteKind, Router};
use crate::upstream::side_effects::EffectBoard;

const VERSION_REPLY: &[u8] = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();
const NO_ROUTE: &[u8] = b"SERVER_ERROR no route for key\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

/// A key asked of its one server (no next server to ask).
const ALONE: Ask = Ask::InTurn { miss_next: false };

/// A request as the strategies plan it: the parsed request, its bytes, and its routing key.
type Whole<'a> = (&'a Request, &'a Bytes, &'a [u8]);

/// What the planner is told about the client a request came from and the moment.
pub struct Context<'a> {
    /// The listener the client connected to.
    pub listener: usize,
    /// The listener's `multiget_window` (keys per backend request of a multi-get).
    pub multiget_window: usize,
    /// The listener's `max_buffered_reply_bytes` (windows are sized to stay under it).
    pub soft_bytes: usize,
    /// The client has a read that may still send a request to a server (a later window, a
    /// next server): its writes wait (see [`Plan::Defer`]).
    pub reads_open: bool,
    /// Of them, a touching retrieval (`gat`/`gats`): every request waits.
    pub touches_open: bool,
    /// Whether a server can take this client's requests now (not down, not in connect
    /// backoff).
    pub usable: &'a dyn Fn(usize) -> bool,
}

/// What a request becomes.
#[derive(Debug)]
pub enum Plan {
    /// Answered by the proxy itself with these bytes; `close`: close the connection after.
    Reply {
        /// The reply.
        bytes: Bytes,
        /// Close after it (and parse nothing the client sent after it).
        close: bool,
    },
    /// The general `stats` report (the worker renders it from every worker's counters).
    Stats,
    /// A write (or, behind a touching retrieval, any request) held until the client's earlier
    /// reads have sent their last requests (a read still to ask a server could otherwise see
    /// it): it comes back to be planned again.
    Defer(Request, Bytes),
    /// An exchange to start.
    Start(Start),
}

/// An exchange to start: its kind with everything it needs, and what the worker records.
#[derive(Debug)]
pub struct Start {
    /// The exchange.
    pub kind: StartKind,
    /// Its route and command for the counters (None for `flush_all`).
    pub tag: Option<Tag>,
}

/// The kinds of exchange, each with what it starts from (see [`crate::exchange`]).
#[derive(Debug)]
pub enum StartKind {
    /// One request to one server, looking up this many keys (0: not a read).
    Forward {
        /// The request.
        send: Send,
        /// Keys it looks up.
        lookups: usize,
    },
    /// The same request to several servers (the planner's [`Planner::sends`]).
    FanOut,
    /// A multi-key retrieval.
    Retrieval(Box<Retrieval>),
    /// One single-key request tried on several servers in turn.
    Failover(Box<Failover>),
    /// One request to several servers at once (the planner's [`Planner::sends`]).
    Parallel {
        /// Which reply answers.
        answer: Answer,
        /// A read whose hits and misses the exchange counts.
        lookup: bool,
    },
    /// A plain read of one key under leases (warm_first with `leases`).
    Lease(Box<crate::exchange::lease::Lease>),
    /// A multi-key get with leased keys, read key by key.
    LeaseBatch(Box<crate::exchange::lease_batch::LeaseBatch>),
    /// A write to cold, then warm (warm_first with `leases`).
    Ordered(Box<crate::exchange::ordered::Ordered>),
}

/// One worker's planner: the route table, the strategies' state (round-robin turns, rings
/// without ejected servers), the side effects, and what recent multi-gets brought per key.
pub struct Planner {
    router: Router,
    strategies: Strategies,
    effects: Arc<EffectBoard>,
    /// Per listener, the servers `flush_all` goes to.
    flush_targets: Vec<Vec<usize>>,
    /// Reply bytes per key of recent multi-gets, which size first windows.
    key_bytes: KeyBytes,
    /// The most servers one key may be asked of (see [`Router::chain_width`]).
    chain_width: usize,
    /// Some warm_first route has leases ([`Router::has_leases`]).
    has_leases: bool,
    stats: Arc<WorkerStats>,
    detail: Arc<DetailStats>,
    /// Requests of the plan being made that go out with it: the servers of a fan-out or a
    /// parallel request (taken by the worker when it starts the exchange).
    sends: Vec<Send>,
    /// Side-effect requests of the plan being made (replicated writes), each with its side
    /// effect's index.
    side: Vec<(usize, Send)>,
}

impl Planner {
    /// A planner over `router` and `effects`, counting in this worker's `stats` and `detail`.
    pub fn new(
        router: Router,
        effects: Arc<EffectBoard>,
        stats: Arc<WorkerStats>,
        detail: Arc<DetailStats>,
        listeners: usize,
    ) -> Planner {
        Planner {
            strategies: Strategies::new(&router),
            flush_targets: (0..listeners)
                .map(|l| router.reachable_servers(l))
                .collect(),
            chain_width: router.chain_width(),
            has_leases: router.has_leases(),
            router,
            effects,
            key_bytes: KeyBytes::default(),
            stats,
            detail,
            sends: Vec::new(),
            side: Vec::new(),
        }
    }

    /// Rebuilds the rings of pools with servers `health` ejects (after its epoch changed).
    pub fn eject(&mut self, health: &HealthBoard) {
        self.strategies.eject(&self.router, health);
    }

    /// A merged multi-get window brought `per_key` reply bytes per key.
    pub fn observe_key_bytes(&mut self, per_key: usize) {
        self.key_bytes.observe(per_key);
    }

    /// The requests of the last plan's fan-out or parallel exchange.
    pub fn sends(&mut self) -> &mut Vec<Send> {
        &mut self.sends
    }

    /// The side-effect requests of the last plan (replicated writes), to queue.
    pub fn side(&mut self) -> &mut Vec<(usize, Send)> {
        &mut self.side
    }

    /// Plans `request` (parsed from `bytes`), counting its command.
    pub fn plan(&mut self, request: &Request, bytes: Bytes, cx: &Context, now: u64) -> Plan {
        self.count_command(request);
        let reply = |bytes: &'static [u8]| Plan::Reply {
            bytes: Bytes::from_static(bytes),
            close: false,
        };
        match request.command {
            Command::Quit => Plan::Reply {
                bytes: Bytes::new(),
                close: true,
            },
            Command::Version => reply(VERSION_REPLY),
            Command::Verbosity => reply(if request.noreply { b"" } else { b"OK\r\n" }),
            // Only the general group is the proxy's own; the others (items, slabs,
            // settings...) describe one memcached server and have no proxy-wide meaning.
            Command::Stats if request.args.is_empty() => Plan::Stats,
            Command::Stats => reply(b"ERROR\r\n"),
            Command::MetaNoop => reply(b"MN\r\n"),
            _ => self.plan_counted(request, bytes, cx, now),
        }
    }

    /// Plans a request already counted (one held by [`Plan::Defer`] comes back here).
    pub fn plan_counted(
        &mut self,
        request: &Request,
        bytes: Bytes,
        cx: &Context,
        now: u64,
    ) -> Plan {
        if cx.touches_open || (cx.reads_open && request.command.is_write()) {
            // Sent now, it could reach a server before an earlier read of its client asks it
            // (or, behind a touch, read a TTL from before it).
            return Plan::Defer(*request, bytes);
        }
        if request.command == Command::FlushAll {
            return self.fan_out_to_all(request, bytes, cx);
        }
        self.plan_keyed(request, bytes, cx, now)
    }

    /// Plans a keyed request.
    fn plan_keyed(&mut self, request: &Request, bytes: Bytes, cx: &Context, now: u64) -> Plan {
        self.sends.clear();
        self.side.clear();
        let mut decoded = [0u8; base64::MAX_DECODED];
        let key = routing_key(request, &bytes, &mut decoded);
        debug_assert!(
            key.is_some(),
            "the parser passed a base64 key that does not decode"
        );
        let Some(key) = key else {
            return Plan::Reply {
                bytes: Bytes::from_static(BAD_FORMAT),
                close: false,
            };
        };
        let route = self.router.route(cx.listener, request.command, key);
        let tag = route.map(|route| Tag {
            route,
            command: request.command,
            started: now,
        });
        let kind = route.and_then(|r| Some((r, self.router.routes().get(r)?.kind)));
        let Some((route, kind)) = kind else {
            return self.no_route(cx, request, bytes, (0, None), tag);
        };
        if self.effects.replicates(route) {
            self.replicate(route, request, &bytes, key);
        }
        if request.key_count > 1 && !kind.has_one_server_per_key() {
            // Each key is asked of the chain its route's strategy gives it.
            return self.plan_retrieval(cx, request, bytes, (0, None), tag);
        }
        let whole = (request, &bytes, key);
        // The one place a request meets its route's strategy.
        match kind {
            RouteKind::BlindForward(_)
            | RouteKind::ConsistentHash(_)
            | RouteKind::RoundRobin(_) => self.plan_one_server(cx, whole, route, tag),
            RouteKind::Failover(f) => self.plan_failover(whole, (route, f), tag),
            RouteKind::Parallel(p) => self.plan_parallel(whole, (route, p), tag),
            RouteKind::WarmFirst(w) => self.plan_warm_first(whole, (route, w), tag),
        }
    }

    /// A request whose (first) key no route takes (`routed`: the keys already routed, and the
    /// round-robin memo): a multi-key retrieval still answers its other keys; otherwise
    /// `SERVER_ERROR no route for key`.
    fn no_route(
        &mut self,
        cx: &Context,
        request: &Request,
        bytes: Bytes,
        routed: (usize, Memo),
        tag: Option<Tag>,
    ) -> Plan {
        if request.key_count > 1 {
            // The other keys may have routes: they are answered, this one is a miss.
            return self.plan_retrieval(cx, request, bytes, (routed.0.max(1), routed.1), tag);
        }
        WorkerStats::add(&self.stats.no_route, 1);
        // A `noreply` client reads no replies: an unasked-for error would be taken for the
        // answer to its next request.
        let reply = if request.noreply { &b""[..] } else { NO_ROUTE };
        Plan::Reply {
            bytes: Bytes::from_static(reply),
            close: false,
        }
    }

    /// The answer when a route's settings are missing from the router (a bug: every route
    /// kind indexes settings the router compiled with it).
    fn missing_settings() -> Plan {
        debug_assert!(false, "a route names settings the router does not have");
        Plan::Reply {
            bytes: Bytes::from_static(NO_ROUTE),
            close: false,
        }
    }

    /// A request forwarded as it is to `server`, its reply passed through (streamed when
    /// large); its hits and misses counted from the reply.
    fn forward(&self, request: &Request, bytes: Bytes, server: usize, tag: Option<Tag>) -> Plan {
        let lookups = match request.command {
            Command::Get | Command::Gets | Command::Gat | Command::Gats | Command::MetaGet => {
                request.key_count
            }
            _ => 0,
        };
        let send = Send {
            server,
            part: 0,
            bytes,
            value: None,
            framing: Framing::of(request),
            stream: true,
        };
        start(StartKind::Forward { send, lookups }, tag)
    }

    fn count_command(&self, request: &Request) {
        let stats = &self.stats;
        let counter = match request.command {
            Command::Get | Command::Gets | Command::Gat | Command::Gats => {
                WorkerStats::add(&stats.cmd_get, request.key_count as u64);
                if matches!(request.command, Command::Gat | Command::Gats) {
                    WorkerStats::add(&stats.cmd_touch, request.key_count as u64);
                }
                return;
            }
            Command::Set
            | Command::Add
            | Command::Replace
            | Command::Append
            | Command::Prepend
            | Command::Cas => &stats.cmd_set,
            Command::Touch => &stats.cmd_touch,
            Command::Delete => &stats.cmd_delete,
            Command::Incr | Command::Decr => &stats.cmd_arith,
            Command::FlushAll => &stats.cmd_flush,
            Command::MetaGet
            | Command::MetaSet
            | Command::MetaDelete
            | Command::MetaArithmetic
            | Command::MetaNoop
            | Command::MetaDebug => &stats.cmd_meta,
            Command::Version | Command::Verbosity | Command::Stats | Command::Quit => return,
        };
        WorkerStats::add(counter, 1);
    }

    /// Picks the server for `key` by the listener's routes, or None when no route matches.
    /// `memo` keeps the round-robin pick of one route for the rest of a multi-key request, so
    /// its keys are not scattered one per server. `count` adds the key to its route's counter.
    fn pick_server(
        &mut self,
        cx: &Context,
        command: Command,
        key: &[u8],
        memo: &mut Memo,
        count: bool,
    ) -> Option<usize> {
        let route = self.router.route(cx.listener, command, key)?;
        let kind = self.router.routes().get(route)?.kind;
        if !kind.has_one_server_per_key() {
            // Its keys have chains of servers: the request is a multi-key retrieval.
            return None;
        }
        self.pick_on_route(route, key, cx, memo, count)
    }

    /// [`Self::pick_server`] for a key whose route is already known.
    fn pick_on_route(
        &mut self,
        route: usize,
        key: &[u8],
        cx: &Context,
        memo: &mut Memo,
        count: bool,
    ) -> Option<usize> {
        if count {
            self.detail.route_request(route);
        }
        self.strategies
            .pick(&self.router, route, key, memo, cx.usable)
    }

    /// `flush_all` to every server the listener's routes reach; OK only if every one says OK.
    fn fan_out_to_all(&mut self, request: &Request, bytes: Bytes, cx: &Context) -> Plan {
        self.sends.clear();
        self.side.clear();
        let targets = self
            .flush_targets
            .get(cx.listener)
            .map_or(&[][..], |t| &t[..]);
        if targets.is_empty() {
            let reply: &'static [u8] = if request.noreply { b"" } else { b"OK\r\n" };
            return Plan::Reply {
                bytes: Bytes::from_static(reply),
                close: false,
            };
        }
        let framing = Framing::of(request);
        for (part, &server) in targets.iter().enumerate() {
            self.sends.push(Send {
                server,
                part: u32::try_from(part).unwrap_or(u32::MAX),
                bytes: bytes.clone(),
                value: None,
                framing,
                stream: false,
            });
        }
        start(StartKind::FanOut, None)
    }
}

/// A [`Plan::Start`].
fn start(kind: StartKind, tag: Option<Tag>) -> Plan {
    Plan::Start(Start { kind, tag })
}

/// The key a request is routed by: its first key, decoded first when a meta command says it
/// is base64 (`b` flag). None for a base64 key that does not decode.
fn routing_key<'a>(
    request: &Request,
    bytes: &'a [u8],
    decoded: &'a mut [u8; base64::MAX_DECODED],
) -> Option<&'a [u8]> {
    let key = request.first_key(bytes);
    if !request.base64_key {
        return Some(key);
    }
    let len = base64::decode(key, decoded)?;
    decoded.get(..len)
}
