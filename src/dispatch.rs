//! Turning one parsed client request into work: a local answer, or fragments queued on backend
//! connections with a reply slot that will collect their replies.

use std::time::Instant;

use bytes::Bytes;

use crate::backend::{Failure, Fragment, Owner};
use crate::client::{Combine, Next, Slot, SplitRetrieval};
use crate::multiget::{self, AskedKey};
use crate::protocol::{base64, Command, ReplyKind, Request};
use crate::route::RouteKind;
use crate::stats::WorkerStats;
use crate::worker::Worker;

/// Sent after every `noreply` or quiet request so the end of its (possibly empty) reply can
/// be found: the backend answers `MN` once everything before it is done.
const NOOP: &[u8] = b"mn\r\n";
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

/// How a forwarded request is framed on the backend and answered if the backend fails.
struct Framing {
    kind: ReplyKind,
    on_failure: Failure,
    discard_reply: bool,
    noop_tail: bool,
    silent_slot: bool,
}

fn framing(request: &Request) -> Framing {
    let miss = match request.command {
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            Some(Failure::Miss(b"END\r\n"))
        }
        Command::MetaGet => Some(Failure::Miss(b"EN\r\n")),
        _ => None,
    };
    if request.noreply {
        return Framing {
            kind: ReplyKind::UntilNoop,
            on_failure: Failure::Silent,
            discard_reply: true,
            noop_tail: true,
            silent_slot: true,
        };
    }
    if request.quiet {
        // Quiet mode hides misses and success codes, not errors.
        let on_failure = if miss.is_some() {
            Failure::Silent
        } else {
            Failure::Error
        };
        return Framing {
            kind: ReplyKind::UntilNoop,
            on_failure,
            discard_reply: false,
            noop_tail: true,
            silent_slot: false,
        };
    }
    Framing {
        kind: request.command.reply_kind(),
        on_failure: miss.unwrap_or(Failure::Error),
        discard_reply: false,
        noop_tail: false,
        silent_slot: false,
    }
}

impl Worker {
    /// Handles what the parser found next on client `client`.
    pub(crate) fn dispatch(&mut self, client: usize, next: Next, now: Instant) {
        match next {
            Next::Error(error) => {
                WorkerStats::add(&self.stats.client_errors, 1);
                log::debug!("client request refused: {}", error.as_str());
                let slot = Slot::ready(Bytes::from_static(error.reply()));
                let slot = if error.skip().is_none() {
                    slot.then_close()
                } else {
                    slot
                };
                self.answer_locally(client, slot);
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
    fn forward(&mut self, client: usize, request: &Request, bytes: Bytes, now: Instant) {
        let Some(listener) = self.clients.get(client).map(|c| c.listener) else {
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
        let mut memo = None;
        let Some(server) =
            self.pick_server(listener, request.command, key, client, now, &mut memo, true)
        else {
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
        let lookups = match request.command {
            Command::Get | Command::Gets | Command::Gat | Command::Gats | Command::MetaGet => {
                request.key_count
            }
            _ => 0,
        };
        let framing = framing(request);
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let seq = c.push_slot(Slot::waiting(1, Combine::Single, framing.silent_slot));
        let owner = Owner {
            client,
            generation: c.generation,
            seq,
            part: 0,
        };
        self.send(server, owner, &framing, bytes, lookups, now);
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
        memo: &mut Option<(usize, usize)>,
        count: bool,
    ) -> Option<usize> {
        let router = &*self.router;
        let route_index = router.route(listener, command, key)?;
        if count {
            self.detail.route_request(route_index);
        }
        let route = router.routes().get(route_index)?;
        match route.kind {
            RouteKind::BlindForward(server) => Some(server),
            RouteKind::ConsistentHash(pool) => router.pools().get(pool).map(|p| p.server_for(key)),
            RouteKind::RoundRobin(pool_index) => {
                if let Some((r, server)) = *memo {
                    if r == route_index {
                        return Some(server);
                    }
                }
                let pool = router.pools().get(pool_index)?;
                let (backends, server_conns) = (&self.backends, &self.server_conns);
                let usable = |server: usize| {
                    server_conns
                        .get(server)
                        .and_then(|&(base, count)| backends.get(base + client % count.max(1)))
                        .is_some_and(|conn| conn.is_usable(now))
                };
                let server = self.round_robin.next(pool, pool_index, usable);
                *memo = Some((route_index, server));
                Some(server)
            }
        }
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
        routed: (usize, Option<(usize, usize)>),
    ) {
        let (counted, mut memo) = routed;
        // Scratch vectors live in the worker: a split allocates only what it keeps.
        let mut servers = std::mem::take(&mut self.split_servers);
        let mut lines = std::mem::take(&mut self.split_lines);
        servers.clear();
        lines.clear();
        let mut asked: Vec<AskedKey> = Vec::with_capacity(request.key_count);
        for (index, key) in request.keys(&bytes).enumerate() {
            let count = index >= counted;
            let part = match self.pick_server(
                listener,
                request.command,
                key,
                client,
                now,
                &mut memo,
                count,
            ) {
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
            asked.push(AskedKey::new(&bytes, key, part));
        }
        multiget::build_lines(
            request,
            &bytes,
            &asked,
            servers.len(),
            &mut self.split_lens,
            &mut lines,
        );
        let framing = framing(request);
        let split = SplitRetrieval {
            request: *request,
            bytes,
            asked,
            parts: vec![Bytes::new(); servers.len()],
        };
        let fragments = u32::try_from(servers.len()).unwrap_or(u32::MAX);
        if let Some(c) = self.clients.get_mut(client) {
            let slot = if servers.is_empty() {
                Slot::ready(Bytes::from_static(multiget::END))
            } else {
                Slot::waiting(fragments, Combine::MultiGet(Box::new(split)), false)
            };
            let seq = c.push_slot(slot);
            let generation = c.generation;
            for (part, (&server, (line, lookups))) in
                servers.iter().zip(lines.drain(..)).enumerate()
            {
                let owner = Owner {
                    client,
                    generation,
                    seq,
                    part,
                };
                self.send(server, owner, &framing, line, lookups, now);
            }
        }
        self.split_servers = servers;
        self.split_lines = lines;
    }

    /// Sends `flush_all` to every server the listener's routes reach; OK only if every one
    /// says OK.
    fn fan_out_to_all(&mut self, client: usize, request: &Request, bytes: Bytes, now: Instant) {
        let framing = framing(request);
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let targets = self
            .flush_targets
            .get(c.listener)
            .cloned()
            .unwrap_or_default();
        if targets.is_empty() {
            let reply: &'static [u8] = if request.noreply { b"" } else { b"OK\r\n" };
            c.push_slot(Slot::ready(Bytes::from_static(reply)));
            return;
        }
        let fragments = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        let seq = c.push_slot(Slot::waiting(
            fragments,
            Combine::AllOk,
            framing.silent_slot,
        ));
        let generation = c.generation;
        for (part, server) in targets.into_iter().enumerate() {
            let owner = Owner {
                client,
                generation,
                seq,
                part,
            };
            self.send(server, owner, &framing, bytes.clone(), 0, now);
        }
    }

    /// Queues one fragment on the client's connection to `server`; a backend that cannot take
    /// it answers the fragment at once (its failure reply).
    fn send(
        &mut self,
        server: usize,
        owner: Owner,
        framing: &Framing,
        bytes: Bytes,
        lookups: usize,
        now: Instant,
    ) {
        let Some(conn_index) = self.conn_for(server, owner.client) else {
            return;
        };
        let Some(conn) = self.backends.get_mut(conn_index) else {
            return;
        };
        let fragment = Fragment {
            owner,
            kind: framing.kind,
            on_failure: framing.on_failure,
            discard_reply: framing.discard_reply,
            deadline: conn.deadline_from(now),
            lookups,
        };
        let tail = framing.noop_tail.then(|| Bytes::from_static(NOOP));
        WorkerStats::add(&self.stats.backend_requests, 1);
        self.detail.server_request(server);
        match conn.enqueue(self.poll.registry(), [Some(bytes), tail], fragment, now) {
            Ok(timers) => {
                if !conn.queued_for_flush {
                    conn.queued_for_flush = true;
                    self.flush_backends.push(conn_index);
                }
                for timer in timers.into_iter().flatten() {
                    self.schedule_backend(conn_index, timer);
                }
            }
            Err(reason) => self.completions.push(fragment.fail(server, reason)),
        }
    }
}
