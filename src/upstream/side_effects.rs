//! Side effects (SPEC §7): backend requests the proxy makes on its own after, or beside, a
//! client's request, which no client waits for: `replicate` (copies of some routes' writes to
//! another backend) and `write_on_miss` (a warm_first route's write-backs of cold hits into the
//! warm tier).
//!
//! Each side effect has, per worker, a bounded queue: at most `queue` of its requests, and at
//! most `queue_bytes` of their bytes, queued or in flight at once. A request over either is
//! dropped and counted, so a slow or dead target can never make the proxy hold more than that
//! (the bytes count what each request pins: its line and its value, a slice of the client's
//! request or of the reply it came from), and never slows a client: the requests go
//! out on the poll loop like any other, owned by the side effect's job on that worker (see
//! [`crate::upstream::jobs`]), on the worker's side-effect connection to the target server (one per
//! server, so the copies of one key reach it in the order they were made; never used by a
//! client's request, so a target that stalls on side effects delays, times out and resets
//! side effects only), never on a client's behalf. Their failures are counted, never retried,
//! and never count toward the server's health (see [`crate::upstream::Backends`]).
//!
//! Each queue counts in a block of its own ([`EffectCounters`]: one per side effect per
//! worker), which only its worker writes, with a relaxed load and store and no locked
//! instruction (like [`crate::observe::stats::WorkerStats::add`]); `stats` and `/metrics` sum the blocks
//! when they read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{Config, SideEffectConfig, Strategy};
pub use crate::observe::stats::EffectSnapshot;
use crate::observe::stats::EffectTotals;
use crate::protocol::Command;

/// One side effect as configured.
#[derive(Debug)]
pub struct EffectSpec {
    /// Its name in stats: `replicate.<index>` or `write_on_miss.<route>`.
    pub name: String,
    /// Most requests queued or in flight per worker.
    pub queue: usize,
    /// Most bytes of requests queued or in flight per worker.
    pub queue_bytes: usize,
    /// For `replicate`: the pool copies go to and the commands copied.
    pub replicate: Option<Replicate>,
}

/// What a `replicate` side effect copies, and where to.
#[derive(Debug)]
pub struct Replicate {
    /// The target pool (index into the router's pools).
    pub to: usize,
    /// The commands copied.
    pub commands: Vec<Command>,
}

/// The counters of one side effect's queue on one worker. That worker is their only writer
/// (a relaxed load and store, [`WorkerStats::add`]); readers sum every worker's block. Cache-line
/// aligned so two workers never write the same line.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct EffectCounters {
    /// Requests accepted into the queue.
    pub queued: AtomicU64,
    /// Requests answered (a `NOT_STORED` of a write-back's `add` included: a newer value was
    /// there first, which is the point of `add`).
    pub done: AtomicU64,
    /// Requests that failed: no connection, a timeout, a down server, an error reply.
    pub failed: AtomicU64,
    /// Requests dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Requests queued or in flight now on this worker (a gauge: the queue stores its depth).
    pub depth: AtomicU64,
}

/// One side effect: its settings and the counter blocks of its queues, one per worker.
#[derive(Debug)]
struct Effect {
    spec: EffectSpec,
    /// Registered when a worker builds its queue (start-up), read by `stats`: never locked on
    /// the data path.
    queues: Mutex<Vec<Arc<EffectCounters>>>,
}

impl Effect {
    fn new(spec: EffectSpec) -> Effect {
        Effect {
            spec,
            queues: Mutex::default(),
        }
    }

    /// The sums of every queue's counters: queued, done, failed, dropped, depth.
    fn totals(&self) -> [u64; 5] {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // A poisoned lock only means a thread panicked while pushing a block: the list is
        // still whole.
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.iter().fold([0; 5], |[q, d, f, x, n], c| {
            [
                q.wrapping_add(load(&c.queued)),
                d.wrapping_add(load(&c.done)),
                f.wrapping_add(load(&c.failed)),
                x.wrapping_add(load(&c.dropped)),
                n.wrapping_add(load(&c.depth)),
            ]
        })
    }
}

/// Every side effect of the process and its counters.
#[derive(Debug, Default)]
pub struct EffectBoard {
    effects: Vec<Effect>,
    /// Per route index: the `replicate` side effects that copy its writes.
    by_route: Vec<Vec<usize>>,
}

impl EffectBoard {
    /// The side effects of `config`: its `side_effects` in order, then one `write_on_miss` per
    /// warm_first route that has it, in route order (the numbering
    /// [`crate::routing::WriteBack::effect`] uses).
    pub fn new(config: &Config, pool_of: impl Fn(&str) -> Option<usize>) -> EffectBoard {
        let mut effects = Vec::new();
        let mut by_route = vec![Vec::new(); config.routes.len()];
        for (i, effect) in config.side_effects.iter().enumerate() {
            match effect {
                SideEffectConfig::Replicate {
                    routes,
                    to,
                    commands,
                    queue,
                    queue_bytes,
                } => {
                    for name in routes {
                        let route = config.routes.iter().position(|r| &r.name == name);
                        if let Some(list) = route.and_then(|r| by_route.get_mut(r)) {
                            list.push(effects.len());
                        }
                    }
                    let replicate = pool_of(to).map(|to| Replicate {
                        to,
                        commands: commands.clone(),
                    });
                    let spec = EffectSpec {
                        name: format!("replicate.{i}"),
                        queue: *queue,
                        queue_bytes: *queue_bytes,
                        replicate,
                    };
                    effects.push(Effect::new(spec));
                }
            }
        }
        for route in &config.routes {
            if let Strategy::WarmFirst {
                write_on_miss: Some(w),
                ..
            } = &route.strategy
            {
                let spec = EffectSpec {
                    name: format!("write_on_miss.{}", route.name),
                    queue: w.queue,
                    queue_bytes: w.queue_bytes,
                    replicate: None,
                };
                effects.push(Effect::new(spec));
            }
        }
        EffectBoard { effects, by_route }
    }

    /// How many side effects there are.
    pub fn len(&self) -> usize {
        self.effects.len()
    }

    /// The largest `queue` of the side effects (1 when there are none): what a worker's
    /// side-effect connection to one server takes queued or in flight. One side effect alone
    /// never fills it (its own queue is no larger); several sharing a target can, and what
    /// does not fit is dropped and counted like a full queue's overflow.
    pub fn max_queue(&self) -> usize {
        self.effects
            .iter()
            .map(|e| e.spec.queue)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Side effect `index`'s settings.
    pub fn spec(&self, index: usize) -> Option<&EffectSpec> {
        self.effects.get(index).map(|e| &e.spec)
    }

    /// A new counter block for one queue of side effect `index` (one worker's), counted in
    /// every later read of the board; `None` when there is no such side effect.
    pub fn register_queue(&self, index: usize) -> Option<Arc<EffectCounters>> {
        let effect = self.effects.get(index)?;
        let counters = Arc::new(EffectCounters::default());
        effect
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(counters.clone());
        Some(counters)
    }

    /// The `replicate` side effects that copy route `route`'s `command`s: (index, target pool).
    pub fn replicas_of(
        &self,
        route: usize,
        command: Command,
    ) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.by_route
            .get(route)
            .map_or(&[][..], |v| v)
            .iter()
            .filter_map(move |&i| {
                let r = self.spec(i)?.replicate.as_ref()?;
                r.commands.contains(&command).then_some((i, r.to))
            })
    }

    /// True when route `route` has side effects that copy its writes.
    pub fn replicates(&self, route: usize) -> bool {
        self.by_route.get(route).is_some_and(|v| !v.is_empty())
    }

    /// Every side effect's name and counters now (summed over workers), in board order.
    pub fn snapshot(&self) -> Vec<EffectSnapshot<'_>> {
        self.effects
            .iter()
            .map(|e| {
                let [queued, done, failed, dropped, depth] = e.totals();
                EffectSnapshot {
                    name: &e.spec.name,
                    queued,
                    done,
                    failed,
                    dropped,
                    depth,
                }
            })
            .collect()
    }
}

impl EffectTotals for EffectBoard {
    fn snapshot(&self) -> Vec<EffectSnapshot<'_>> {
        EffectBoard::snapshot(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Format;

    const YAML: &str = "listeners: [{name: main, bind: '127.0.0.1:0'}]\n\
        backends: {l1: {servers: ['127.0.0.1:1']}, l2: {servers: ['127.0.0.1:2']}}\n\
        routes:\n\
        \x20 - {name: hot, match: 'h:*', strategy: warm_first, warm: l1, cold: l2, write_on_miss: {ttl: 60, queue: 2}}\n\
        \x20 - {name: rest, match: '*', strategy: consistent_hash, backend: l1}\n\
        side_effects: [{replicate: {routes: [rest], to: l2, commands: [set, delete], queue: 3, queue_bytes: 100}}]\n";

    /// A board with a replicate side effect (queue 3, 100 bytes) and a write-back (queue 2).
    pub(crate) fn board() -> Arc<EffectBoard> {
        let config = Config::parse(YAML, "t.yaml", Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
        let pool = |name: &str| config.backend(name).map(|(i, _)| i);
        Arc::new(EffectBoard::new(&config, pool))
    }

    #[test]
    fn configured_effects_come_first_then_write_backs_in_route_order() {
        let b = board();
        assert_eq!(b.len(), 2);
        assert_eq!(b.spec(0).map(|s| s.name.as_str()), Some("replicate.0"));
        assert_eq!(
            b.spec(1).map(|s| s.name.as_str()),
            Some("write_on_miss.hot")
        );
        let replicas: Vec<_> = b.replicas_of(1, Command::Set).collect();
        assert_eq!(replicas, vec![(0, 1)]);
        assert_eq!(b.replicas_of(1, Command::Touch).count(), 0);
        assert_eq!(b.replicas_of(0, Command::Set).count(), 0);
    }
}
