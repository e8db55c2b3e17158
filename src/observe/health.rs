//! Server health, shared by every worker: whether each server is up or down, its consecutive
//! failures, and counters for `stats` (including the connections made to it).
//!
//! Failure events come from two places: health probes (a job on one worker's poll loop, see
//! [`crate::upstream::jobs::probe`]) and backend connections (a connect that failed, or a connection reset
//! by a timeout, a lost connection or a malformed reply: one event per reset, however many
//! requests were in flight on it). `failure_limit` consecutive events mark a server down; only a
//! probe that succeeds brings it back. A transition is made by exactly one compare-and-swap, so
//! it is logged once and counted once, whichever worker saw it.
//!
//! The hot path reads one relaxed atomic per request (`is_down`); workers notice a change by
//! [`HealthBoard::epoch`], then rebuild their own copy of the rings that eject, and let a
//! server that came back be connected at once (no connect backoff left from its outage).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::HealthConfig;
use crate::config::ServerSpec;

/// One server's health. Cache-line aligned: a server's state is written rarely, read on every
/// request to it, and must not share a line with a busier one.
#[repr(align(64))]
#[derive(Debug, Default)]
struct ServerHealth {
    /// Its pool's `health:` settings (`None`: not checked, never down).
    config: Option<HealthConfig>,
    /// For logs: `backend/address`.
    name: String,
    /// Its pool's name.
    backend: String,
    down: AtomicBool,
    consecutive_failures: AtomicU32,
    probes: AtomicU64,
    probe_failures: AtomicU64,
    failure_events: AtomicU64,
    marked_down: AtomicU64,
    returned: AtomicU64,
    /// Connections made to it by the workers for client traffic (probes' not counted).
    connects: AtomicU64,
}

/// A server's health as `stats` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The server is down.
    pub down: bool,
    /// Probes sent and answered or failed.
    pub probes: u64,
    /// Probes that failed.
    pub probe_failures: u64,
    /// Failure events (probes, connects, connection resets).
    pub failure_events: u64,
    /// Times the server was marked down.
    pub marked_down: u64,
    /// Times it came back.
    pub returned: u64,
}

/// Every server's health, indexed like [`crate::routing::Router::servers`].
#[derive(Debug)]
pub struct HealthBoard {
    servers: Vec<ServerHealth>,
    /// Bumped whenever a server goes down or comes back.
    epoch: AtomicU64,
}

impl HealthBoard {
    /// Every server up, with the health settings of its pool.
    pub fn new(servers: &[ServerSpec]) -> HealthBoard {
        HealthBoard {
            servers: servers
                .iter()
                .map(|s| ServerHealth {
                    config: s.health.clone(),
                    name: format!("{}/{}", s.backend, s.address),
                    backend: s.backend.clone(),
                    ..ServerHealth::default()
                })
                .collect(),
            epoch: AtomicU64::new(0),
        }
    }

    /// `server`'s state. Server numbers are the router's and the board is built from the
    /// router's servers, so a number off the board is a bug; the release build then treats it
    /// as an unchecked server, never down.
    #[inline]
    fn state(&self, server: usize) -> Option<&ServerHealth> {
        let state = self.servers.get(server);
        debug_assert!(
            state.is_some(),
            "server {server} is not on the health board ({} servers): boards are built from \
             the router's servers",
            self.servers.len()
        );
        state
    }

    /// True while `server` is down.
    #[inline]
    pub fn is_down(&self, server: usize) -> bool {
        self.state(server)
            .is_some_and(|s| s.down.load(Ordering::Relaxed))
    }

    /// The health settings of `server`, if it is checked.
    pub fn config(&self, server: usize) -> Option<&HealthConfig> {
        self.state(server).and_then(|s| s.config.as_ref())
    }

    /// Changes whenever a server goes down or comes back, or a server's address moves.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A server's name now resolves to another address (see
    /// [`crate::upstream::resolver`]): the epoch moves, so that each worker looks at its
    /// connections at its next loop iteration.
    pub fn address_moved(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// True when `server` is down and its pool ejects down servers from its ring.
    pub fn is_ejected(&self, server: usize) -> bool {
        self.is_down(server) && self.config(server).is_some_and(|c| c.eject)
    }

    /// One failure event of `server` (`what` names it for the log). Marks the server down when
    /// it reaches its pool's `failure_limit` in a row; returns true if this call did.
    pub fn failure(&self, server: usize, what: &str) -> bool {
        let (Some(state), Some(config)) = (self.state(server), self.config(server)) else {
            return false;
        };
        state.failure_events.fetch_add(1, Ordering::Relaxed);
        let failures = state
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < config.failure_limit || state.down.load(Ordering::Relaxed) {
            return false;
        }
        if state
            .down
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        state.marked_down.fetch_add(1, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        log::warn!(
            "server {} is down after {failures} failures in a row (last: {what}); {}",
            self.name(server),
            if config.eject {
                "ejected from its ring"
            } else {
                "its requests fail fast"
            }
        );
        true
    }

    /// The result of one health probe of `server`. A success ends a run of failures and brings
    /// a down server back (returns true if this call did).
    pub fn probe_result(&self, server: usize, ok: bool, what: &str) -> bool {
        let Some(state) = self.state(server) else {
            return false;
        };
        state.probes.fetch_add(1, Ordering::Relaxed);
        if !ok {
            state.probe_failures.fetch_add(1, Ordering::Relaxed);
            self.failure(server, what);
            return false;
        }
        state.consecutive_failures.store(0, Ordering::Relaxed);
        if !state.down.load(Ordering::Relaxed)
            || state
                .down
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        state.returned.fetch_add(1, Ordering::Relaxed);
        let eject = self.config(server).is_some_and(|c| c.eject);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        log::info!(
            "server {} is up again (probe answered){}",
            self.name(server),
            if eject { "; back in its ring" } else { "" }
        );
        true
    }

    /// A worker connected to `server` for client traffic.
    pub fn connected(&self, server: usize) {
        if let Some(s) = self.state(server) {
            s.connects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections made to `server` for client traffic, by every worker.
    pub fn connects(&self, server: usize) -> u64 {
        self.state(server)
            .map_or(0, |s| s.connects.load(Ordering::Relaxed))
    }

    /// `server`'s health for `stats`; `None` when it is not checked.
    pub fn report(&self, server: usize) -> Option<HealthReport> {
        self.config(server)?;
        let s = self.state(server)?;
        Some(HealthReport {
            down: s.down.load(Ordering::Relaxed),
            probes: s.probes.load(Ordering::Relaxed),
            probe_failures: s.probe_failures.load(Ordering::Relaxed),
            failure_events: s.failure_events.load(Ordering::Relaxed),
            marked_down: s.marked_down.load(Ordering::Relaxed),
            returned: s.returned.load(Ordering::Relaxed),
        })
    }

    /// The name of `server`'s pool ("" when out of range).
    pub fn backend(&self, server: usize) -> &str {
        self.servers.get(server).map_or("", |s| s.backend.as_str())
    }

    fn name(&self, server: usize) -> &str {
        self.servers.get(server).map_or("?", |s| s.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn board(eject: bool) -> HealthBoard {
        let spec = ServerSpec {
            backend: "b".into(),
            address: "127.0.0.1:1".into(),
            addr: std::sync::Arc::new(crate::config::ServerAddr::fixed(
                "127.0.0.1:1".parse().unwrap(),
            )),
            resolve_interval: std::time::Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            connections: 1,
            max_queued_requests: 1,
            health: Some(HealthConfig {
                failure_limit: 3,
                eject,
                ..HealthConfig::default()
            }),
            origin: None,
        };
        let mut unchecked = spec.clone();
        unchecked.health = None;
        HealthBoard::new(&[spec, unchecked])
    }

    #[test]
    fn down_after_the_limit_in_a_row_and_back_on_a_probe() {
        let b = board(true);
        let epoch = b.epoch();
        assert!(!b.failure(0, "timeout"));
        assert!(!b.probe_result(0, false, "probe timeout"));
        assert!(!b.is_down(0));
        assert!(b.failure(0, "timeout"), "the third failure marks it down");
        assert!(b.is_down(0) && b.is_ejected(0));
        assert!(!b.failure(0, "timeout"), "marked down once");
        assert_ne!(b.epoch(), epoch);
        assert!(b.probe_result(0, true, ""));
        assert!(!b.is_down(0));
        let r = b.report(0).unwrap();
        assert_eq!((r.marked_down, r.returned, r.probes), (1, 1, 2));
        assert_eq!((r.failure_events, r.probe_failures), (4, 1));
    }

    #[test]
    fn a_success_breaks_the_run() {
        let b = board(false);
        b.failure(0, "x");
        b.failure(0, "x");
        b.probe_result(0, true, "");
        b.failure(0, "x");
        b.failure(0, "x");
        assert!(!b.is_down(0));
        let epoch = b.epoch();
        b.failure(0, "x");
        assert!(b.is_down(0) && !b.is_ejected(0));
        assert_ne!(b.epoch(), epoch, "every change is seen by the workers");
    }

    #[test]
    fn unchecked_servers_are_never_down() {
        let b = board(true);
        for _ in 0..10 {
            b.failure(1, "x");
        }
        assert!(!b.is_down(1));
        assert_eq!(b.report(1), None);
    }
}
