//! Turning one parsed client request into work: a local answer, or an exchange (see
//! [`crate::exchange`]) that sends it to the backends its keys route to and answers its slot.

use std::time::Instant;

use bytes::Bytes;

use crate::exchange::failover::Failover;
use crate::exchange::multiget::AskedKey;
use crate::exchange::split_get::{Fallbacks, SplitGet};
use crate::exchange::{Effects, Exchange, Framing, Send, SlotRef, Tag};
use crate::frontend::client::{Next, Slot};
use crate::observe::stats::WorkerStats;
use crate::protocol::{base64, Command, Request};
use crate::routing::shape::Shape;
use crate::routing::strategy::Memo;
use crate::routing::RouteKind;
use crate::worker::Worker;

const VERSION_REPLY: &[u8] = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();
const NO_ROUTE: &[u8] = b"SERVER_ERROR no route for key\r\n";

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
                    self.dispatch_request(client, request, bytes, now);
                }
            }
            Next::Request(request, bytes) => self.dispatch_request(client, request, bytes, now),
        }
    }

    fn dispatch_request(&mut self, client: usize, request: Request, bytes: Bytes, now: Instant) {
        self.count_command(&request);
        let local = |reply: &'static [u8]| Slot::ready(Bytes::from_static(reply));
        match request.command {
            Command::Quit => self.answer_locally(client, Slot::ready(Bytes::new()).then_close()),
            Command::Version => self.answer_locally(client, local(VERSION_REPLY)),
            Command::Verbosity => {
                let reply: &'static [u8] = if request.noreply { b"" } else { b"OK\r\n" };
                self.answer_locally(client, local(reply));
            }
            Command::Stats => {
                // Only the general group is the proxy's own; the others (items, slabs,
                // settings...) describe one memcached server and have no proxy-wide meaning.
                let reply = if request.args.is_empty() {
                    Bytes::from(self.registry.render())
                } else {
                    Bytes::from_static(b"ERROR\r\n")
                };
                self.answer_locally(client, Slot::ready(reply));
            }
            Command::MetaNoop => self.answer_locally(client, local(b"MN\r\n")),
            Command::FlushAll => self.fan_out_to_all(client, &request, bytes, now),
            _ => self.forward(client, &request, bytes, now),
        }
    }

    fn count_command(&self, request: &Request) {
        let counter = match request.command {
            Command::Get | Command::Gets | Command::Gat | Command::Gats => {
                WorkerStats::add(&self.stats.cmd_get, request.key_count as u64);
                if matches!(request.command, Command::Gat | Command::Gats) {
                    WorkerStats::add(&self.stats.cmd_touch, request.key_count as u64);
                }
                return;
            }
            Command::Set
            | Command::Add
            | Command::Replace
            | Command::Append
            | Command::Prepend
            | Command::Cas => &self.stats.cmd_set,
            Command::Touch => &self.stats.cmd_touch,
            Command::Delete => &self.stats.cmd_delete,
            Command::Incr | Command::Decr => &self.stats.cmd_arith,
            Command::FlushAll => &self.stats.cmd_flush,
            Command::MetaGet
            | Command::MetaSet
            | Command::MetaDelete
            | Command::MetaArithmetic
            | Command::MetaNoop
            | Command::MetaDebug => &self.stats.cmd_meta,
            Command::Version | Command::Verbosity | Command::Stats | Command::Quit => return,
        };
        WorkerStats::add(counter, 1);
    }

    /// Sends a keyed request to the server(s) its key(s) route to.
    pub(crate) fn forward(&mut self, client: usize, request: &Request, bytes: Bytes, now: Instant) {
        let Some(listener) = self.clients.get(client).map(|c| c.listener()) else {
            return;
        };
        let mut decoded = [0u8; base64::MAX_DECODED];
        let key = match routing_key(request, &bytes, &mut decoded) {
            Some(key) => key,
            None => {
                let reply = Bytes::from_static(b"CLIENT_ERROR bad command line format\r\n");
                self.answer_locally(client, Slot::ready(reply));
                return;
            }
        };
        let route = self.router.route(listener, request.command, key);
        self.tag = route.map(|route| Tag {
            route,
            command: request.command,
            started: self.clock,
        });
        if let Some(route) = route {
            // Routes with one server per key skip the checks of those with several.
            let several = self.router.routes().get(route).is_some_and(|r| {
                matches!(
                    r.kind,
                    RouteKind::Failover(_) | RouteKind::Parallel(_) | RouteKind::WarmFirst(_)
                )
            });
            let shape = several.then(|| Shape::of(request, &bytes));
            if shape.is_some_and(|shape| self.holds_write(client, route, shape)) {
                if let Some(c) = self.clients.get_mut(client) {
                    c.defer(*request, bytes);
                }
                return;
            }
            if self.effects.replicates(route) {
                self.replicate(route, request, &bytes, key, now);
            }
            if let Some(shape) = shape {
                let whole = (request, &bytes, key);
                if self.forward_tiered(client, listener, whole, route, shape, now) {
                    return;
                }
                if let Some(index) = self.failover_index_for(route, shape) {
                    if self.forward_failover(
                        client,
                        listener,
                        request,
                        &bytes,
                        key,
                        (route, index),
                        now,
                    ) {
                        return;
                    }
                    // A multi-get whose keys have different servers to try: split by their
                    // first servers, each key keeping the rest of its chain (even when every
                    // key's first server is the same, so none loses its fallbacks).
                    self.forward_split(client, listener, request, bytes, now, (0, None));
                    return;
                }
            }
        }
        let mut memo = None;
        let picked = route.and_then(|r| self.pick_on_route(r, key, client, now, &mut memo, true));
        let Some(server) = picked else {
            if request.key_count > 1 {
                // The other keys may have routes: they are answered, this one is a miss.
                self.forward_split(client, listener, request, bytes, now, (1, memo));
                return;
            }
            WorkerStats::add(&self.stats.no_route, 1);
            // A `noreply` client reads no replies: an unasked-for error would be taken for the
            // answer to its next request.
            let reply = if request.noreply { &b""[..] } else { NO_ROUTE };
            self.answer_locally(client, Slot::ready(Bytes::from_static(reply)));
            return;
        };
        if request.key_count > 1 {
            let mut checked = 1;
            for key in request.keys(&bytes).skip(1) {
                checked += 1;
                let other =
                    self.pick_server(listener, request.command, key, client, now, &mut memo, true);
                if other != Some(server) {
                    self.forward_split(client, listener, request, bytes, now, (checked, memo));
                    return;
                }
            }
        }
        if request.key_count > self.multiget_window(listener) {
            // One server, but more keys than one window: released in windows.
            self.forward_split(client, listener, request, bytes, now, (usize::MAX, memo));
            return;
        }
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
            lookups,
        };
        self.launch(client, now, |slot, fx| Exchange::forward(slot, send, fx));
    }

    /// Takes the next reply slot of `client` and starts the exchange `build` makes for it.
    pub(crate) fn launch(
        &mut self,
        client: usize,
        now: Instant,
        build: impl FnOnce(SlotRef, &mut Effects) -> Exchange,
    ) {
        let Some(slot) = self.new_slot(client) else {
            return;
        };
        let mut fx = std::mem::take(&mut self.fx);
        fx.reset(true);
        let exchange = build(slot, &mut fx);
        self.start_exchange(slot, exchange, &mut fx, now);
        self.fx = fx;
    }

    /// Takes the next reply slot of `client` for an exchange.
    fn new_slot(&mut self, client: usize) -> Option<SlotRef> {
        let c = self.clients.get_mut(client)?;
        let seq = c.push_slot(Slot::waiting());
        Some(SlotRef {
            client,
            generation: c.generation(),
            seq,
        })
    }

    fn multiget_window(&self, listener: usize) -> usize {
        self.listener_spec(listener)
            .map_or(usize::MAX, |s| s.multiget_window.max(1))
    }

    /// Picks the server for `key` by the listener's routes, or None when no route matches.
    /// `memo` keeps the round-robin pick of one route for the rest of a multi-key request, so
    /// its keys are not scattered one per server. `count` adds the key to its route's counter.
    #[allow(clippy::too_many_arguments)]
    fn pick_server(
        &mut self,
        listener: usize,
        command: Command,
        key: &[u8],
        client: usize,
        now: Instant,
        memo: &mut Memo,
        count: bool,
    ) -> Option<usize> {
        let route = self.router.route(listener, command, key)?;
        self.pick_on_route(route, key, client, now, memo, count)
    }

    /// [`Self::pick_server`] for a key whose route is already known.
    pub(crate) fn pick_on_route(
        &mut self,
        route: usize,
        key: &[u8],
        client: usize,
        now: Instant,
        memo: &mut Memo,
        count: bool,
    ) -> Option<usize> {
        if count {
            self.detail.route_request(route);
        }
        let backends = &self.backends;
        let usable = |server: usize| backends.is_usable(server, client, now);
        self.strategies.pick(&self.router, route, key, memo, usable)
    }

    /// Starts a failover exchange for a request whose first key, `key`, takes failover route
    /// `route` (`.1`: its failover settings' index), if every key of the request has the same
    /// servers to try (a multi-get whose keys differ is split by their first server instead).
    /// Returns false when the request is not one for this path.
    #[allow(clippy::too_many_arguments)]
    fn forward_failover(
        &mut self,
        client: usize,
        listener: usize,
        request: &Request,
        bytes: &Bytes,
        key: &[u8],
        (route, index): (usize, usize),
        now: Instant,
    ) -> bool {
        let router = &*self.router;
        let Some(spec) = router.failover(index) else {
            return false;
        };
        let mut chain = Vec::with_capacity(spec.pools.len());
        self.strategies
            .failover_chain(router, index, key, &mut chain);
        if request.key_count > 1 {
            let mut other = Vec::with_capacity(chain.len());
            for key in request.keys(bytes).skip(1) {
                if router.route(listener, request.command, key) != Some(route) {
                    return false;
                }
                self.strategies
                    .failover_chain(router, index, key, &mut other);
                if other != chain {
                    return false;
                }
            }
        }
        for _ in 0..request.key_count.max(1) {
            self.detail.route_request(route);
        }
        let soft = self
            .listener_spec(listener)
            .map_or(usize::MAX, |s| s.max_buffered_reply_bytes);
        let window = self
            .key_bytes
            .first_window(self.multiget_window(listener), soft, 1);
        let failover = Failover::new(*request, bytes.clone(), chain, spec, window, soft);
        if spec.orders_writes {
            if let Some(c) = self.clients.get_mut(client) {
                c.read_through_started();
            }
        }
        self.launch(client, now, |slot, fx| {
            Exchange::failover(slot, failover, fx)
        });
        true
    }

    /// [`Self::pick_server`] of four keys that take the same hashing route (their hashes
    /// computed side by side); `None` when they do not, or the route does not hash.
    fn pick_server4(
        &mut self,
        listener: usize,
        command: Command,
        keys: [&[u8]; 4],
        counts: [bool; 4],
    ) -> Option<[Option<usize>; 4]> {
        let router = &*self.router;
        let [first, rest @ ..] = keys;
        let route = router.route(listener, command, first)?;
        if !router
            .routes()
            .get(route)
            .is_some_and(|r| matches!(r.kind, RouteKind::ConsistentHash(_)))
        {
            return None;
        }
        if rest
            .iter()
            .any(|key| router.route(listener, command, key) != Some(route))
        {
            return None;
        }
        let servers = self.strategies.pick4(router, route, keys)?;
        for _ in counts.iter().filter(|&&c| c) {
            self.detail.route_request(route);
        }
        Some(servers.map(Some))
    }

    /// Sends a multi-key retrieval whose keys live on several servers: one request line per
    /// server with its keys, replies merged in the slot. Keys that match no route are misses.
    /// `routed` carries what [`Self::forward`] already did: how many keys it routed (and
    /// counted), and its round-robin memo, so those picks stand.
    fn forward_split(
        &mut self,
        client: usize,
        listener: usize,
        request: &Request,
        bytes: Bytes,
        now: Instant,
        routed: (usize, Memo),
    ) {
        let (counted, mut memo) = routed;
        // A classic retrieval: its shape is one match, worked out once for all its keys.
        let shape = Shape::of(request, &bytes);
        let mut servers: Vec<usize> = Vec::new();
        let mut asked: Vec<AskedKey> = request
            .keys(&bytes)
            .map(|key| AskedKey::new(&bytes, key, usize::MAX))
            .collect();
        // Keys are placed four at a time where the route hashes them (their hashes computed
        // side by side), else one by one. Keys of failover routes go to their first server,
        // and their others are kept for when it cannot answer.
        let mut fallbacks: Option<Fallbacks> = None;
        let mut orders_writes = false;
        let mut chain = Vec::new();
        let mut index = 0;
        while index < asked.len() {
            let four = asked.get(index..index + 4).and_then(|a| {
                let keys = [a.first()?, a.get(1)?, a.get(2)?, a.get(3)?].map(|k| k.key(&bytes));
                let counts = [0, 1, 2, 3].map(|i| index + i >= counted);
                self.pick_server4(listener, request.command, keys, counts)
            });
            let picks: &[Option<usize>] = match &four {
                Some(servers) => servers,
                None => {
                    let key = asked.get(index).map_or(&[][..], |k| k.key(&bytes));
                    let count = index >= counted;
                    let route = self.router.route(listener, request.command, key);
                    if route.is_some_and(|r| self.asks_all_at_once(r, shape)) {
                        // A key of a parallel route (or a warm_first touch): the whole request
                        // is asked in parallel, each key of its own servers.
                        let counted = counted.max(index);
                        let whole = (request, &bytes);
                        self.forward_parallel_get(client, listener, whole, shape, now, counted);
                        return;
                    }
                    let server = match route.map(|r| (r, self.failover_index_for(r, shape))) {
                        Some((route, Some(f))) => {
                            // Its first server now; the others if that one cannot answer.
                            if count {
                                self.detail.route_request(route);
                            }
                            self.strategies
                                .failover_chain(&self.router, f, key, &mut chain);
                            if let (Some(spec), Some(rest)) = (
                                self.router.failover(f),
                                chain.get(1..).filter(|r| !r.is_empty()),
                            ) {
                                let depth = self.router.failover_depth();
                                let keys = asked.len();
                                let fallbacks =
                                    fallbacks.get_or_insert_with(|| Fallbacks::new(keys, depth));
                                fallbacks.set(index, rest, spec.miss_next);
                                if let (Some(wb), Some(&first)) = (spec.write_back, chain.first()) {
                                    fallbacks.set_write_back(index, first, wb);
                                }
                                orders_writes |= spec.orders_writes;
                            }
                            chain.first().copied()
                        }
                        Some((route, None)) => {
                            self.pick_on_route(route, key, client, now, &mut memo, count)
                        }
                        None => None,
                    };
                    &[server][..]
                }
            };
            for (slot, &server) in asked.iter_mut().skip(index).zip(picks) {
                slot.part = match server {
                    Some(server) => match servers.iter().position(|&s| s == server) {
                        Some(part) => part,
                        None => {
                            servers.push(server);
                            servers.len() - 1
                        }
                    },
                    None => {
                        // Answered as a miss, and counted as one.
                        WorkerStats::add(&self.stats.no_route, 1);
                        WorkerStats::add(&self.stats.get_misses, 1);
                        usize::MAX
                    }
                };
            }
            index += picks.len();
        }
        let soft = self
            .listener_spec(listener)
            .map_or(usize::MAX, |s| s.max_buffered_reply_bytes);
        let window =
            self.key_bytes
                .first_window(self.multiget_window(listener), soft, servers.len());
        let mut split = SplitGet::new(*request, bytes, asked, servers, window, soft);
        if let Some(fallbacks) = fallbacks {
            split = split.with_fallbacks(fallbacks);
        }
        if orders_writes {
            // Released when the split is answered (see `Worker::holds_write` in tiered.rs).
            split = split.holding_writes();
            if let Some(c) = self.clients.get_mut(client) {
                c.read_through_started();
            }
        }
        self.launch(client, now, |slot, fx| Exchange::split_get(slot, split, fx));
    }

    /// Sends `flush_all` to every server the listener's routes reach; OK only if every one
    /// says OK.
    fn fan_out_to_all(&mut self, client: usize, request: &Request, bytes: Bytes, now: Instant) {
        let framing = Framing::of(request);
        self.tag = None;
        let Some(listener) = self.clients.get(client).map(|c| c.listener()) else {
            return;
        };
        let targets = self
            .flush_targets
            .get(listener)
            .cloned()
            .unwrap_or_default();
        if targets.is_empty() {
            let reply: &'static [u8] = if request.noreply { b"" } else { b"OK\r\n" };
            self.answer_locally(client, Slot::ready(Bytes::from_static(reply)));
            return;
        }
        let sends = targets.into_iter().enumerate().map(|(part, server)| Send {
            server,
            part: u32::try_from(part).unwrap_or(u32::MAX),
            bytes: bytes.clone(),
            value: None,
            framing,
            stream: false,
            lookups: 0,
        });
        self.launch(client, now, |slot, fx| Exchange::fan_out(slot, sends, fx));
    }
}
