//! A worker's backend connections: `connections` per server, the readiness they have seen,
//! and which of them have bytes to flush. The loop asks this part to send, drive, flush and
//! time out; it never touches a connection's fields.
//!
//! Three kinds of connection, each carrying one kind of traffic only: clients' requests (the
//! `connections` per server), health probes (one per probed server, made at start), and side
//! effects (one per target server, made on first use; SPEC §7). A request that stalls, times
//! out or resets its connection so fails only the requests of its own kind: a warm tier that
//! never answers write-backs, or a replica that never answers copies, cannot delay, time out,
//! reset or overload a client's request to the same server.

use std::time::Instant;

use mio::{Registry, Token};

use super::any_wire::AnyWire;
use super::conn::{ArmTimer, ConnSettings};
use super::wire::BackendWire;
use super::{BackendConn, Completion, FailReason, Fragment, Owner};

use crate::config::ServerSpec;
use crate::observe::health::HealthBoard;
use crate::observe::stats::{DetailStats, WorkerStats};
use std::sync::Arc;

/// A timer to arm for connection `conn`.
#[derive(Clone, Copy, Debug)]
pub struct ConnTimer {
    /// Index of the connection.
    pub conn: usize,
    /// What to arm.
    pub timer: ArmTimer,
}

/// Every backend connection of one worker, each speaking `W` (memcached text unless said
/// otherwise; see [`BackendWire`]).
pub struct Backends<W: BackendWire = AnyWire> {
    conns: Vec<BackendConn<W>>,
    /// For each server: (index of its first connection in `conns`, connection count).
    server_conns: Vec<(usize, usize)>,
    /// For each server: its requests take a connection by their key, not by their client (an
    /// HTTP origin: every read of a key on this worker meets on one connection, where
    /// concurrent ones share one origin request).
    keyed: Vec<bool>,
    /// Connections with readiness to handle this iteration.
    events: Vec<usize>,
    /// Connections whose read budget ran out, to drive again next iteration.
    revisit: Vec<usize>,
    /// Connections with queued bytes.
    to_flush: Vec<usize>,
    flagged: Vec<bool>,
    /// For each server this worker probes, its probe connection (a connection of its own, so
    /// a probe's timeout never resets client requests).
    probe_conns: Vec<Option<usize>>,
    /// For each server, its side-effect connection once a side effect has used it.
    side_conns: Vec<Option<usize>>,
    /// The settings of each server's side-effect connection (made on first use).
    side_settings: Vec<ConnSettings>,
    /// The wire of each server's side-effect connection, made with the others (from the
    /// server's spec, which is not kept) and taken when the connection is made.
    side_wires: Vec<Option<W>>,
    /// Connections from this index on are side-effect connections (they are appended after
    /// the client and probe connections, as they are first needed).
    first_side: usize,
    token_base: usize,
    stats: Arc<WorkerStats>,
    health: Arc<HealthBoard>,
    /// The worker's clock (microseconds, see `Worker::clock`), stamped on every request queued
    /// so the server's latency is one subtraction of integers when its reply comes.
    pub clock: u64,
}

impl<W: BackendWire> Backends<W> {
    /// Idle connections for `servers`, and a probe connection for each server `probes` names
    /// (one with health checks); connection `i` is registered under `token_base + i`. A
    /// server's side-effect connection, made on first use, takes up to `side_queue` requests
    /// (see [`Backends::side_has_room`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        servers: &[ServerSpec],
        token_base: usize,
        stats: &Arc<WorkerStats>,
        detail: Option<&Arc<DetailStats>>,
        health: &Arc<HealthBoard>,
        probes: impl Fn(usize) -> bool,
        side_queue: usize,
    ) -> Backends<W> {
        let mut conns = Vec::new();
        let mut server_conns = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            server_conns.push((conns.len(), server.connections));
            for _ in 0..server.connections {
                let token = Token(token_base + conns.len());
                conns.push(BackendConn::new(
                    ConnSettings::of(index, server),
                    W::new(server, index, detail),
                    token,
                    stats.clone(),
                    Some(health.clone()),
                ));
            }
        }
        let mut probe_conns = vec![None; servers.len()];
        for (index, server) in servers.iter().enumerate() {
            let Some(config) = server.health.as_ref().filter(|_| probes(index)) else {
                continue;
            };
            if let Some(slot) = probe_conns.get_mut(index) {
                *slot = Some(conns.len());
            }
            let token = Token(token_base + conns.len());
            // The probe's deadline covers its connect too; one probe at a time.
            let settings = ConnSettings {
                timeout: config.timeout,
                connect_timeout: config.timeout,
                max_queued: 1,
                ..ConnSettings::of(index, server)
            };
            conns.push(BackendConn::new(
                settings,
                W::new(server, index, detail),
                token,
                stats.clone(),
                None,
            ));
        }
        let n = conns.len();
        let side_settings = servers
            .iter()
            .enumerate()
            .map(|(index, server)| ConnSettings {
                max_queued: side_queue.max(1),
                ..ConnSettings::of(index, server)
            })
            .collect();
        let side_wires = servers
            .iter()
            .enumerate()
            .map(|(index, server)| Some(W::new(server, index, detail)))
            .collect();
        Backends {
            conns,
            server_conns,
            keyed: servers.iter().map(|s| s.origin.is_some()).collect(),
            events: Vec::new(),
            revisit: Vec::new(),
            to_flush: Vec::new(),
            flagged: vec![false; n],
            probe_conns,
            side_conns: vec![None; servers.len()],
            side_settings,
            side_wires,
            first_side: n,
            token_base,
            stats: stats.clone(),
            health: health.clone(),
            clock: 0,
        }
    }

    /// The side-effect connection of `server`, made (idle: it connects on its first request)
    /// when none is yet. It records no health events: a server's health is what its probes
    /// and its clients' requests see, and a server that stalls only on side effects (a warm
    /// tier refusing to store) must not be marked down while it serves its clients.
    fn side_conn(&mut self, server: usize) -> Option<usize> {
        if let Some(index) = self.side_conns.get(server).copied().flatten() {
            return Some(index);
        }
        let settings = self.side_settings.get(server)?.clone();
        let wire = self.side_wires.get_mut(server)?.take()?;
        let index = self.conns.len();
        let token = Token(self.token_base + index);
        self.conns.push(BackendConn::new(
            settings,
            wire,
            token,
            self.stats.clone(),
            None,
        ));
        self.flagged.push(false);
        if let Some(slot) = self.side_conns.get_mut(server) {
            *slot = Some(index);
        }
        Some(index)
    }

    /// False when `server`'s side-effect connection already has as many requests queued or in
    /// flight as it takes: a side effect's request for it is then dropped (and counted) before
    /// it is queued, never refused by the connection.
    pub fn side_has_room(&self, server: usize) -> bool {
        let Some(settings) = self.side_settings.get(server) else {
            return true;
        };
        self.side_conns
            .get(server)
            .copied()
            .flatten()
            .and_then(|i| self.conns.get(i))
            .map_or(true, |c| c.in_flight() < settings.max_queued)
    }

    /// Counts a reset of side-effect connection `index` that failed the requests it appended
    /// to `out` from `from` on: one reset (and one timeout when that was its cause) however
    /// many requests it failed. Client and probe connections are counted elsewhere.
    fn count_side_reset(&self, index: usize, out: &[Completion], from: usize) {
        if index < self.first_side {
            return;
        }
        let failed = out.get(from..).unwrap_or(&[]).iter().find_map(|c| c.failed);
        if let Some(reason) = failed {
            WorkerStats::add(&self.stats.side_effect_resets, 1);
            if reason == FailReason::Timeout {
                WorkerStats::add(&self.stats.side_effect_timeouts, 1);
            }
        }
    }

    /// The connection a client uses for `server` (clients are pinned to one connection per
    /// server so their requests to it stay in order).
    fn conn_for(&self, server: usize, client: usize) -> Option<usize> {
        let (base, count) = *self.server_conns.get(server)?;
        Some(base + client % count.max(1))
    }

    /// The connection `send` goes out on for `client`: by its client, or for a keyed server
    /// by its first key (so a client's requests to it stay in order per key).
    fn conn_for_send(&self, send: &crate::upstream::Send, client: usize) -> Option<usize> {
        let keyed = self.keyed.get(send.server).copied().unwrap_or(false);
        match keyed {
            true => self.conn_for(send.server, key_spread(&send.bytes)),
            false => self.conn_for(send.server, client),
        }
    }

    /// False while `server` is down, or the client's connection to it is in connect backoff.
    pub fn is_usable(&self, server: usize, client: usize, now: Instant) -> bool {
        !self.health.is_down(server)
            && self
                .conn_for(server, client)
                .and_then(|i| self.conns.get(i))
                .is_some_and(|c| c.is_usable(now))
    }

    /// The resolver moved some server's address: connections to an old address close once
    /// idle (see [`BackendConn::follow_address`]).
    pub fn follow_addresses(&mut self, registry: &Registry) {
        for conn in &mut self.conns {
            conn.follow_address(registry);
        }
    }

    /// Ends the connect backoff of every connection whose server is not down: a server the
    /// health checks just brought back is connected to on the next request, not after the
    /// backoff its outage built up.
    pub fn forget_backoff_of_live_servers(&mut self) {
        for conn in &mut self.conns {
            if !self.health.is_down(conn.server()) {
                conn.forget_backoff();
            }
        }
    }

    /// Records readiness of connection `index`.
    pub fn record(&mut self, index: usize, event: &mio::event::Event) {
        if let Some(conn) = self.conns.get_mut(index) {
            conn.on_event(
                event.is_readable(),
                event.is_writable() || event.is_write_closed(),
                event.is_read_closed(),
                event.is_error(),
            );
            self.events.push(index);
        }
    }

    /// Drives every connection that had readiness: replies go to `out`, timers to `timers`.
    pub fn drive(
        &mut self,
        registry: &Registry,
        now: Instant,
        out: &mut Vec<Completion>,
        timers: &mut Vec<ConnTimer>,
    ) {
        let events = std::mem::take(&mut self.events);
        for &index in &events {
            let Some(conn) = self.conns.get_mut(index) else {
                continue;
            };
            let from = out.len();
            conn.drive(registry, now, out);
            if let Some(timer) = conn.rearm() {
                timers.push(ConnTimer { conn: index, timer });
            }
            let (queued, revisit) = (conn.queued_bytes() > 0, conn.wants_revisit());
            if queued {
                self.mark_flush(index);
            }
            if revisit {
                self.revisit.push(index);
            }
            self.count_side_reset(index, out, from);
        }
        self.events = events;
        self.events.clear();
        // Connections that still have input are driven again next iteration.
        self.events.append(&mut self.revisit);
    }

    /// True when some connection has input left over for the next iteration (the poll must
    /// not sleep).
    pub fn has_revisits(&self) -> bool {
        !self.events.is_empty()
    }

    fn mark_flush(&mut self, index: usize) {
        if let Some(flag) = self.flagged.get_mut(index) {
            if !*flag {
                *flag = true;
                self.to_flush.push(index);
            }
        }
    }

    /// Queues `send` for `owner` on `client`'s connection to its server. A backend that
    /// cannot take it answers it at once, through `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        registry: &Registry,
        client: usize,
        owner: Owner,
        send: &crate::upstream::Send,
        now: Instant,
        out: &mut Vec<Completion>,
        timers: &mut Vec<ConnTimer>,
    ) {
        let conn = self.conn_for_send(send, client);
        if self.health.is_down(send.server) {
            // This client's requests still out to the server fail first, so that whatever
            // is done with the failures (a failover to the next server) happens in the order
            // the client made the requests.
            if let Some(c) = conn.and_then(|i| self.conns.get_mut(i)) {
                if c.in_flight() > 0 {
                    c.reset(registry, FailReason::Down, now, out);
                }
            }
            out.push(fragment_of(owner, send, self.clock, now).fail(send.server, FailReason::Down));
            return;
        }
        self.enqueue_on(conn, registry, owner, send, now, out, timers);
    }

    /// Sends `send` for a side effect (owned by a job, no client): on the side-effect
    /// connection of its server (one per worker and server, never used by a client's request),
    /// so the copies of one key arrive in the order they were made and a stalled side effect
    /// holds up only side effects; refused at once when the server is down.
    pub fn send_detached(
        &mut self,
        registry: &Registry,
        owner: Owner,
        send: &crate::upstream::Send,
        now: Instant,
        out: &mut Vec<Completion>,
        timers: &mut Vec<ConnTimer>,
    ) {
        if self.health.is_down(send.server) {
            out.push(fragment_of(owner, send, self.clock, now).fail(send.server, FailReason::Down));
            return;
        }
        let conn = self.side_conn(send.server);
        self.enqueue_on(conn, registry, owner, send, now, out, timers);
    }

    /// Queues the request of job `owner` on the probe connection of `send.server` (health
    /// probes go out whether the server is up or down: they are how it comes back).
    pub fn send_probe(
        &mut self,
        registry: &Registry,
        owner: Owner,
        send: &crate::upstream::Send,
        now: Instant,
        out: &mut Vec<Completion>,
        timers: &mut Vec<ConnTimer>,
    ) {
        let conn = self.probe_conns.get(send.server).copied().flatten();
        self.enqueue_on(conn, registry, owner, send, now, out, timers);
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue_on(
        &mut self,
        conn: Option<usize>,
        registry: &Registry,
        owner: Owner,
        send: &crate::upstream::Send,
        now: Instant,
        out: &mut Vec<Completion>,
        timers: &mut Vec<ConnTimer>,
    ) {
        let Some((index, conn)) = conn.and_then(|i| Some((i, self.conns.get_mut(i)?))) else {
            out.push(
                fragment_of(owner, send, self.clock, now)
                    .fail(send.server, FailReason::Unavailable),
            );
            return;
        };
        let fragment = fragment_of(owner, send, self.clock, conn.deadline_from(now));
        match conn.enqueue(registry, send, fragment, now) {
            Ok(armed) => {
                for timer in armed.into_iter().flatten() {
                    timers.push(ConnTimer { conn: index, timer });
                }
                self.mark_flush(index);
            }
            Err(reason) => out.push(fragment.fail(send.server, reason)),
        }
    }

    /// Writes every connection's queued bytes (one `writev` each).
    pub fn flush(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Completion>) {
        let list = std::mem::take(&mut self.to_flush);
        for &index in &list {
            if let Some(flag) = self.flagged.get_mut(index) {
                *flag = false;
            }
            let Some(conn) = self.conns.get_mut(index) else {
                continue;
            };
            if let Err(reason) = conn.flush(now) {
                let from = out.len();
                conn.reset(registry, reason, now, out);
                self.count_side_reset(index, out, from);
            }
        }
        self.to_flush = list;
        self.to_flush.clear();
    }

    /// A timer armed for connection `conn` fired.
    pub fn on_timer(
        &mut self,
        registry: &Registry,
        conn: usize,
        generation: u32,
        at: Instant,
        now: Instant,
        out: &mut Vec<Completion>,
    ) -> Option<ConnTimer> {
        let backend = self.conns.get_mut(conn)?;
        let from = out.len();
        let timer = backend.on_timer(registry, generation, at, now, out);
        self.count_side_reset(conn, out, from);
        Some(ConnTimer {
            conn,
            timer: timer?,
        })
    }
}

/// A number spread by the first key of a request line (its second token; the third for
/// `gat`/`gats`, whose second is the exptime): FNV-1a.
fn key_spread(line: &[u8]) -> usize {
    let first_line = line.split(|&b| b == b'\r' || b == b'\n').next();
    let mut words =
        crate::protocol::meta_flags::Words::new(first_line.unwrap_or_default()).map(|(_, w)| w);
    let skip = match words.next() {
        Some(b"gat" | b"gats") => 1,
        _ => 0,
    };
    let key = words.nth(skip).unwrap_or_default();
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash as usize
}

/// What a connection tracks for `send` of `owner`, queued at `sent` (worker clock) and due by
/// `deadline`.
fn fragment_of(
    owner: Owner,
    send: &crate::upstream::Send,
    sent: u64,
    deadline: Instant,
) -> Fragment {
    Fragment {
        owner,
        kind: send.framing.kind,
        on_failure: send.framing.on_failure,
        discard_reply: send.framing.discard_reply,
        stream: send.stream && !send.framing.discard_reply,
        deadline,
        sent,
        // Filled in by the wire of the connection that queues it (BackendWire::encode).
        expect: crate::protocol::Expect::ANY,
        wire_start: 0,
    }
}

#[cfg(test)]
mod key_tests {
    use super::key_spread;

    #[test]
    fn requests_of_one_key_spread_alike_whatever_their_command() {
        let spread = key_spread(b"get k\r\n");
        for line in [
            &b"get k other\r\n"[..],
            b"gets k\r\n",
            b"gat 100 k\r\n",
            b"gats 0 k x\r\n",
            b"mg k v f\r\n",
            b"set k 0 0 1\r\nx\r\n",
            b"delete k\r\n",
        ] {
            assert_eq!(
                key_spread(line),
                spread,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_ne!(key_spread(b"get j\r\n"), spread);
    }
}
