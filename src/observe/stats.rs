//! The proxy's own counters, reported by the `stats` command in memcached's names.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer (relaxed atomic adds, no
//! contention); a reader sums every worker's block. Blocks are cache-line aligned so two
//! workers never write the same line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::observe::health::HealthBoard;
use crate::observe::histogram::{Histogram, HistogramSnapshot};
use crate::protocol::Command;

/// Names every counter once: the field, its `stats` name, and whether it is a gauge.
macro_rules! counters {
    ($( $field:ident => $name:literal ),* $(,)?) => {
        /// One worker's counters.
        #[repr(align(64))]
        #[derive(Default)]
        pub struct WorkerStats {
            $( #[doc = concat!("`", $name, "`")] pub $field: AtomicU64, )*
        }

        impl WorkerStats {
            /// (name, value) of every counter, in report order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( ($name, self.$field.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

counters! {
    curr_connections => "curr_connections",
    total_connections => "total_connections",
    rejected_connections => "rejected_connections",
    rejected_connections_fd => "rejected_connections_fd",
    cmd_get => "cmd_get",
    cmd_set => "cmd_set",
    cmd_touch => "cmd_touch",
    cmd_flush => "cmd_flush",
    cmd_delete => "cmd_delete",
    cmd_arith => "cmd_arith",
    cmd_meta => "cmd_meta",
    get_hits => "get_hits",
    get_misses => "get_misses",
    bytes_read => "bytes_read",
    bytes_written => "bytes_written",
    client_errors => "client_errors",
    no_route => "no_route",
    backend_requests => "backend_requests",
    backend_errors => "backend_errors",
    backend_timeouts => "backend_timeouts",
    backend_connections => "backend_connections",
    backend_connect_failures => "backend_connect_failures",
    backend_overloaded => "backend_overloaded",
    side_effect_resets => "side_effect_resets",
    side_effect_timeouts => "side_effect_timeouts",
    backend_out_of_sync => "backend_out_of_sync",
    clients_closed_hard_limit => "clients_closed_hard_limit",
    clients_shed => "clients_shed",
    clients_closed_slow_request => "clients_closed_slow_request",
    reply_bytes_buffered => "reply_bytes_buffered",
    admin_connections => "admin_connections",
    admin_connections_evicted => "admin_connections_evicted",
    admin_connections_rejected => "admin_connections_rejected",
    admin_header_timeouts => "admin_header_timeouts",
    clients_shed_request_memory => "clients_shed_request_memory",
    request_bytes_buffered => "request_bytes_buffered",
    lease_wins => "lease_wins",
    lease_waits => "lease_waits",
    lease_wait_timeouts => "lease_wait_timeouts",
    lease_refreshes => "lease_refreshes",
}

impl WorkerStats {
    /// Adds `n` to a counter. Each worker is the only writer of its block, so a plain load
    /// and store suffice (readers see a recent value); no locked instruction on the hot path.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        super::counter::add(counter, n);
    }

    /// Subtracts `n` from a gauge (same single-writer rule as [`WorkerStats::add`]).
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        super::counter::sub(counter, n);
    }
}

/// Commands a (route, command) counter block is kept for: every command, by its position in
/// [`Command::ALL`].
pub const COMMANDS: usize = Command::ALL.len();

/// What happened to the requests of one command on one route (one worker's share).
#[derive(Debug, Default)]
pub struct CommandCounters {
    /// Requests started.
    pub requests: AtomicU64,
    /// Keys found.
    pub hits: AtomicU64,
    /// Keys not found (a retrieval whose backend failed counts its keys here too).
    pub misses: AtomicU64,
    /// Backend requests that failed (timeouts included).
    pub errors: AtomicU64,
    /// Backend requests that failed by their deadline.
    pub timeouts: AtomicU64,
}

/// The totals of one [`CommandCounters`] over every worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandTotals {
    /// Requests started.
    pub requests: u64,
    /// Keys found.
    pub hits: u64,
    /// Keys not found.
    pub misses: u64,
    /// Backend requests that failed.
    pub errors: u64,
    /// Backend requests that timed out.
    pub timeouts: u64,
}

impl CommandTotals {
    /// True when nothing was counted (such series are left out of reports).
    pub fn is_zero(&self) -> bool {
        *self == CommandTotals::default()
    }
}

/// One worker's per-route and per-server counters and histograms (same single-writer rule as
/// [`WorkerStats`]).
#[derive(Default)]
pub struct DetailStats {
    route_requests: Vec<AtomicU64>,
    route_commands: Vec<CommandCounters>,
    route_latency: Vec<Histogram>,
    server_requests: Vec<AtomicU64>,
    server_errors: Vec<AtomicU64>,
    server_timeouts: Vec<AtomicU64>,
    server_latency: Vec<Histogram>,
    /// An HTTP origin's responses by status class (`STATUS_CLASSES` per server: 1xx to 5xx).
    origin_status: Vec<AtomicU64>,
    /// An HTTP origin's reads that shared another read's request.
    origin_coalesced: Vec<AtomicU64>,
}

/// Status classes counted per origin (1xx to 5xx; others count as 5xx).
pub const STATUS_CLASSES: usize = 5;

fn bump(counters: &[AtomicU64], index: usize) {
    if let Some(counter) = counters.get(index) {
        WorkerStats::add(counter, 1);
    }
}

fn zeroes(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn many<T: Default>(n: usize) -> Vec<T> {
    (0..n).map(|_| T::default()).collect()
}

impl DetailStats {
    fn new(routes: usize, servers: usize) -> Self {
        DetailStats {
            route_requests: zeroes(routes),
            route_commands: many(routes * COMMANDS),
            route_latency: many(routes),
            server_requests: zeroes(servers),
            server_errors: zeroes(servers),
            server_timeouts: zeroes(servers),
            server_latency: many(servers),
            origin_status: zeroes(servers * STATUS_CLASSES),
            origin_coalesced: zeroes(servers),
        }
    }

    /// HTTP origin `server` answered with `status`.
    pub fn origin_status(&self, server: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        bump(&self.origin_status, server * STATUS_CLASSES + class);
    }

    /// A read of HTTP origin `server` shared an origin request already out.
    pub fn origin_coalesced(&self, server: usize) {
        bump(&self.origin_coalesced, server);
    }

    /// A key was routed by route `route`.
    #[inline]
    pub fn route_request(&self, route: usize) {
        bump(&self.route_requests, route);
    }

    /// The counters of `command` on route `route`.
    #[inline]
    pub fn commands(&self, route: usize, command: Command) -> Option<&CommandCounters> {
        self.route_commands
            .get(route.checked_mul(COMMANDS)? + command as usize)
    }

    /// A request of route `route` was answered `micros` microseconds after it was read.
    #[inline]
    pub fn route_answered(&self, route: usize, micros: u64) {
        if let Some(histogram) = self.route_latency.get(route) {
            histogram.observe_micros(micros);
        }
    }

    /// A request fragment was sent to server `server`.
    #[inline]
    pub fn server_request(&self, server: usize) {
        bump(&self.server_requests, server);
    }

    /// Server `server` answered (or failed) a request `micros` microseconds after it was sent.
    #[inline]
    pub fn server_answered(&self, server: usize, micros: u64) {
        if let Some(histogram) = self.server_latency.get(server) {
            histogram.observe_micros(micros);
        }
    }

    /// Server `server` failed a fragment (`timeout`: by its deadline).
    pub fn server_failure(&self, server: usize, timeout: bool) {
        bump(&self.server_errors, server);
        if timeout {
            bump(&self.server_timeouts, server);
        }
    }
}

/// Every worker's counters, plus process-wide facts, shared read-only between workers.
pub struct StatsRegistry {
    started: Instant,
    started_unix: u64,
    workers: Vec<Arc<WorkerStats>>,
    /// The admin API thread's block (its `admin_*` counters), summed with the workers'.
    admin: Arc<WorkerStats>,
    details: Vec<Arc<DetailStats>>,
    route_names: Vec<String>,
    server_names: Vec<String>,
    health: Option<Arc<HealthBoard>>,
    effects: Option<Arc<dyn EffectTotals>>,
    /// Which servers are HTTP origins (their status classes and coalesced reads are reported).
    origins: Vec<bool>,
}

impl StatsRegistry {
    /// A registry with one counter block per worker, and per-route and per-server counters
    /// for the routes and servers named.
    pub fn new(workers: usize, route_names: Vec<String>, server_names: Vec<String>) -> Self {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        StatsRegistry {
            started: Instant::now(),
            started_unix,
            workers: (0..workers)
                .map(|_| Arc::new(WorkerStats::default()))
                .collect(),
            admin: Arc::default(),
            details: (0..workers)
                .map(|_| Arc::new(DetailStats::new(route_names.len(), server_names.len())))
                .collect(),
            route_names,
            server_names,
            health: None,
            effects: None,
            origins: Vec::new(),
        }
    }

    /// Reports the status classes and coalesced reads of the servers `origins` marks.
    pub fn with_origins(mut self, origins: Vec<bool>) -> Self {
        self.origins = origins;
        self
    }

    /// True when server `server` is an HTTP origin.
    pub fn is_origin(&self, server: usize) -> bool {
        self.origins.get(server).copied().unwrap_or(false)
    }

    /// Also reports the servers' health from `health`.
    pub fn with_health(mut self, health: Arc<HealthBoard>) -> Self {
        self.health = Some(health);
        self
    }

    /// Also reports the side effects' counters from `effects`.
    pub fn with_effects(mut self, effects: Arc<dyn EffectTotals>) -> Self {
        self.effects = Some(effects);
        self
    }

    /// The per-route and per-server counters of worker `index`.
    pub fn detail(&self, index: usize) -> Arc<DetailStats> {
        self.details.get(index).cloned().unwrap_or_default()
    }

    fn detail_total(&self, pick: impl Fn(&DetailStats) -> &[AtomicU64], index: usize) -> u64 {
        self.details
            .iter()
            .filter_map(|d| pick(d).get(index))
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The routes' names, by route index.
    pub fn route_names(&self) -> &[String] {
        &self.route_names
    }

    /// The servers' names (addresses), by server index.
    pub fn server_names(&self) -> &[String] {
        &self.server_names
    }

    /// The health board, when servers' health is reported.
    pub fn health(&self) -> Option<&HealthBoard> {
        self.health.as_deref()
    }

    /// The side effects' board, when side effects are reported.
    pub fn effects(&self) -> Option<&dyn EffectTotals> {
        self.effects.as_deref()
    }

    /// Seconds since the registry was made (the process started).
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Worker threads.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Keys routed by route `route`, over every worker.
    pub fn route_keys(&self, route: usize) -> u64 {
        self.detail_total(|d| &d.route_requests, route)
    }

    /// (requests, errors, timeouts) of server `server`, over every worker.
    pub fn server_totals(&self, server: usize) -> (u64, u64, u64) {
        (
            self.detail_total(|d| &d.server_requests, server),
            self.detail_total(|d| &d.server_errors, server),
            self.detail_total(|d| &d.server_timeouts, server),
        )
    }

    /// HTTP origin `server`'s responses by status class (index 0: 1xx ... 4: 5xx), over
    /// every worker.
    pub fn origin_statuses(&self, server: usize) -> [u64; STATUS_CLASSES] {
        let mut classes = [0; STATUS_CLASSES];
        for (class, total) in classes.iter_mut().enumerate() {
            *total = self.detail_total(|d| &d.origin_status, server * STATUS_CLASSES + class);
        }
        classes
    }

    /// HTTP origin `server`'s reads that shared another's request, over every worker.
    pub fn origin_coalesced(&self, server: usize) -> u64 {
        self.detail_total(|d| &d.origin_coalesced, server)
    }

    /// The counters of `command` on route `route`, over every worker.
    pub fn command_totals(&self, route: usize, command: Command) -> CommandTotals {
        let mut t = CommandTotals::default();
        for counters in self
            .details
            .iter()
            .filter_map(|d| d.commands(route, command))
        {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            t.requests += load(&counters.requests);
            t.hits += load(&counters.hits);
            t.misses += load(&counters.misses);
            t.errors += load(&counters.errors);
            t.timeouts += load(&counters.timeouts);
        }
        t
    }

    /// Route `route`'s latency histogram, over every worker.
    pub fn route_latency(&self, route: usize) -> HistogramSnapshot {
        self.latency_total(|d| &d.route_latency, route)
    }

    /// Server `server`'s latency histogram, over every worker.
    pub fn server_latency(&self, server: usize) -> HistogramSnapshot {
        self.latency_total(|d| &d.server_latency, server)
    }

    fn latency_total(
        &self,
        pick: impl Fn(&DetailStats) -> &[Histogram],
        index: usize,
    ) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot::default();
        for histogram in self.details.iter().filter_map(|d| pick(d).get(index)) {
            histogram.add_to(&mut snapshot);
        }
        snapshot
    }

    /// The counter block of worker `index` (a fresh detached block if out of range).
    pub fn worker(&self, index: usize) -> Arc<WorkerStats> {
        self.workers.get(index).cloned().unwrap_or_default()
    }

    /// The counter block of the admin API's thread, its only writer.
    pub fn admin(&self) -> Arc<WorkerStats> {
        self.admin.clone()
    }

    /// Sums of every counter across workers (and the admin thread), in report order.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        let mut totals = WorkerStats::default().snapshot();
        for worker in self.workers.iter().chain(std::iter::once(&self.admin)) {
            for (slot, (_, value)) in totals.iter_mut().zip(worker.snapshot()) {
                slot.1 += value;
            }
        }
        totals
    }

    /// The `stats` reply: `STAT name value` lines then `END`, as memcached words them.
    pub fn render(&self) -> Vec<u8> {
        use std::fmt::Write;
        let uptime = self.started.elapsed().as_secs();
        let mut out = String::with_capacity(1024);
        let _ = write!(out, "STAT pid {}\r\n", std::process::id());
        let _ = write!(out, "STAT uptime {uptime}\r\n");
        let _ = write!(out, "STAT time {}\r\n", self.started_unix + uptime);
        let _ = write!(out, "STAT version {}\r\n", env!("CARGO_PKG_VERSION"));
        let _ = write!(out, "STAT pointer_size {}\r\n", usize::BITS);
        let _ = write!(out, "STAT threads {}\r\n", self.workers.len());
        for (name, value) in self.totals() {
            let _ = write!(out, "STAT {name} {value}\r\n");
        }
        for (i, route) in self.route_names.iter().enumerate() {
            let requests = self.detail_total(|d| &d.route_requests, i);
            let _ = write!(out, "STAT route:{route}:requests {requests}\r\n");
            for command in Command::ALL {
                let t = self.command_totals(i, command);
                if t.is_zero() {
                    continue;
                }
                let name = command.name();
                let counts = [
                    ("requests", t.requests),
                    ("hits", t.hits),
                    ("misses", t.misses),
                    ("errors", t.errors),
                    ("timeouts", t.timeouts),
                ];
                for (what, value) in counts {
                    let _ = write!(out, "STAT route:{route}:{name}:{what} {value}\r\n");
                }
            }
        }
        for (i, server) in self.server_names.iter().enumerate() {
            let requests = self.detail_total(|d| &d.server_requests, i);
            let errors = self.detail_total(|d| &d.server_errors, i);
            let timeouts = self.detail_total(|d| &d.server_timeouts, i);
            let _ = write!(out, "STAT server:{server}:requests {requests}\r\n");
            let _ = write!(out, "STAT server:{server}:errors {errors}\r\n");
            let _ = write!(out, "STAT server:{server}:timeouts {timeouts}\r\n");
            if self.is_origin(i) {
                for (class, count) in self.origin_statuses(i).iter().enumerate() {
                    let class = class + 1;
                    let _ = write!(out, "STAT server:{server}:responses_{class}xx {count}\r\n");
                }
                let coalesced = self.origin_coalesced(i);
                let _ = write!(out, "STAT server:{server}:coalesced_reads {coalesced}\r\n");
            }
            if let Some(health) = &self.health {
                let connects = health.connects(i);
                let _ = write!(out, "STAT server:{server}:connects {connects}\r\n");
            }
            let Some(h) = self.health.as_ref().and_then(|h| h.report(i)) else {
                continue;
            };
            let state = if h.down { "down" } else { "up" };
            let _ = write!(out, "STAT server:{server}:state {state}\r\n");
            let _ = write!(out, "STAT server:{server}:probes {}\r\n", h.probes);
            let _ = write!(
                out,
                "STAT server:{server}:probe_failures {}\r\n",
                h.probe_failures
            );
            let _ = write!(
                out,
                "STAT server:{server}:failure_events {}\r\n",
                h.failure_events
            );
            let _ = write!(
                out,
                "STAT server:{server}:marked_down {}\r\n",
                h.marked_down
            );
            let _ = write!(out, "STAT server:{server}:returned {}\r\n", h.returned);
        }
        if let Some(effects) = &self.effects {
            render_effects(effects.as_ref(), &mut out);
        }
        out.push_str("END\r\n");
        out.into_bytes()
    }
}

/// One side effect's counters at one moment, summed over workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectSnapshot<'a> {
    /// Its name (`replicate.<index>`, `write_on_miss.<route>`).
    pub name: &'a str,
    /// Requests accepted into its queues.
    pub queued: u64,
    /// Requests answered.
    pub done: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests dropped because a queue was full.
    pub dropped: u64,
    /// Requests queued or in flight now.
    pub depth: u64,
}

/// The side effects' counters as the layer that keeps them reports them (see
/// `crate::upstream::side_effects::EffectBoard`): this layer renders them without knowing
/// what a side effect is.
pub trait EffectTotals: Send + Sync {
    /// Each side effect's name and counters, summed over workers.
    fn snapshot(&self) -> Vec<EffectSnapshot<'_>>;
}

/// Appends the `stats` lines of every side effect of `effects` to `out`.
pub fn render_effects(effects: &dyn EffectTotals, out: &mut String) {
    use std::fmt::Write;
    for e in effects.snapshot() {
        let name = e.name;
        let _ = write!(out, "STAT effect:{name}:queued {}\r\n", e.queued);
        let _ = write!(out, "STAT effect:{name}:done {}\r\n", e.done);
        let _ = write!(out, "STAT effect:{name}:failed {}\r\n", e.failed);
        let _ = write!(out, "STAT effect:{name}:dropped {}\r\n", e.dropped);
        let _ = write!(out, "STAT effect:{name}:depth {}\r\n", e.depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_workers_and_render_ends_with_end() {
        let reg = StatsRegistry::new(2, vec!["r".into()], vec!["127.0.0.1:1".into()]);
        reg.detail(0).route_request(0);
        reg.detail(1).route_request(0);
        reg.detail(1).server_failure(0, true);
        WorkerStats::add(&reg.worker(0).cmd_get, 3);
        WorkerStats::add(&reg.worker(1).cmd_get, 4);
        let totals = reg.totals();
        assert!(totals.contains(&("cmd_get", 7)));
        let text = String::from_utf8(reg.render()).unwrap_or_default();
        assert!(text.contains("STAT cmd_get 7\r\n"));
        assert!(text.contains("STAT threads 2\r\n"));
        assert!(text.contains("STAT route:r:requests 2\r\n"));
        assert!(text.contains("STAT server:127.0.0.1:1:errors 1\r\n"));
        assert!(text.contains("STAT server:127.0.0.1:1:timeouts 1\r\n"));
        assert!(text.ends_with("END\r\n"));
    }
}
