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
use crate::observe::stats::WorkerStats;
use crate::protocol::Command;
use crate::upstream::jobs::JobStep;
use crate::upstream::Completion;

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

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
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

    /// Appends the `stats` lines of every side effect to `out`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for e in self.snapshot() {
            let name = e.name;
            let _ = write!(out, "STAT effect:{name}:queued {}\r\n", e.queued);
            let _ = write!(out, "STAT effect:{name}:done {}\r\n", e.done);
            let _ = write!(out, "STAT effect:{name}:failed {}\r\n", e.failed);
            let _ = write!(out, "STAT effect:{name}:dropped {}\r\n", e.dropped);
            let _ = write!(out, "STAT effect:{name}:depth {}\r\n", e.depth);
        }
    }
}

/// One worker's queue of one side effect: a job that owns the side effect's backend requests
/// on that worker and counts their outcomes in its own block.
#[derive(Debug)]
pub struct EffectQueue {
    /// Its side effect's `queue` and `queue_bytes`.
    queue: usize,
    queue_bytes: usize,
    /// This queue's counters (registered on the board, which sums them); `None` only for a
    /// side effect the board does not have, whose queue takes nothing.
    counters: Option<Arc<EffectCounters>>,
    /// This worker's requests queued or in flight, and their bytes.
    depth: usize,
    bytes: usize,
}

impl EffectQueue {
    /// The queue of side effect `effect` of `board` on the calling worker, with a counter block
    /// of its own (see [`EffectBoard::register_queue`]): build one per worker and side effect.
    pub fn new(effect: usize, board: Arc<EffectBoard>) -> EffectQueue {
        let spec = board.spec(effect);
        debug_assert!(
            spec.is_some(),
            "a worker builds the queues of the board's side effects only ({effect} of {})",
            board.len()
        );
        EffectQueue {
            queue: spec.map_or(0, |s| s.queue),
            queue_bytes: spec.map_or(0, |s| s.queue_bytes),
            counters: board.register_queue(effect),
            depth: 0,
            bytes: 0,
        }
    }

    /// Takes one more request of `bytes` bytes if the queue has room for it (counted as
    /// queued), else counts it as dropped and says no. The request's completion must carry
    /// `bytes` back as its part number (see [`EffectQueue::part_for`]).
    pub fn admit(&mut self, bytes: usize) -> bool {
        let Some(c) = &self.counters else {
            return false;
        };
        let bytes = Self::part_for(bytes) as usize;
        if self.depth >= self.queue || self.bytes.saturating_add(bytes) > self.queue_bytes {
            WorkerStats::add(&c.dropped, 1);
            return false;
        }
        self.depth += 1;
        self.bytes += bytes;
        WorkerStats::add(&c.queued, 1);
        c.depth.store(self.depth as u64, Ordering::Relaxed);
        true
    }

    /// Counts one request as dropped without taking it: its target's side-effect connection
    /// is full (see [`EffectBoard::max_queue`]).
    pub fn drop_one(&mut self) {
        if let Some(c) = &self.counters {
            WorkerStats::add(&c.dropped, 1);
        }
    }

    /// The part number a request of `bytes` bytes goes out with: its size, so its completion
    /// says how many bytes it let go.
    pub fn part_for(bytes: usize) -> u32 {
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Request `part` (see [`EffectQueue::part_for`]) of this queue was answered or failed.
    pub fn on_completion(&mut self, part: u32, completion: &Completion) -> JobStep {
        if !completion.end {
            return JobStep::Wait;
        }
        // Only a request this queue admitted completes here, once, with the part it was sent
        // with: anything else is a bug (release builds keep the gauges from wrapping).
        debug_assert!(
            self.depth > 0 && part as usize <= self.bytes,
            "a completion of a request the queue does not hold (depth {}, {} bytes, part {part})",
            self.depth,
            self.bytes
        );
        self.depth = self.depth.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(part as usize);
        if let Some(c) = &self.counters {
            c.depth.store(self.depth as u64, Ordering::Relaxed);
            if completion.failed.is_some() || is_error(&completion.reply) {
                WorkerStats::add(&c.failed, 1);
            } else {
                WorkerStats::add(&c.done, 1);
            }
        }
        JobStep::Wait
    }
}

/// An error reply: the request was not carried out.
fn is_error(reply: &[u8]) -> bool {
    reply.starts_with(b"SERVER_ERROR")
        || reply.starts_with(b"CLIENT_ERROR")
        || reply.starts_with(b"ERROR")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    const YAML: &str = "listeners: [{name: main, bind: '127.0.0.1:0'}]\n\
        backends: {l1: {servers: ['127.0.0.1:1']}, l2: {servers: ['127.0.0.1:2']}}\n\
        routes:\n\
        \x20 - {name: hot, match: 'h:*', strategy: warm_first, warm: l1, cold: l2, write_on_miss: {ttl: 60, queue: 2}}\n\
        \x20 - {name: rest, match: '*', strategy: consistent_hash, backend: l1}\n\
        side_effects: [{replicate: {routes: [rest], to: l2, commands: [set, delete], queue: 3, queue_bytes: 100}}]\n";

    fn board() -> Arc<EffectBoard> {
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

    #[test]
    fn bytes_over_queue_bytes_are_dropped_until_a_request_gives_its_bytes_back() {
        let b = board();
        let mut q = EffectQueue::new(0, b.clone());
        assert!(q.admit(60));
        assert!(q.admit(40));
        assert!(!q.admit(1), "100 bytes held: one more is over queue_bytes");
        let owner = crate::upstream::Owner { token: 0, part: 60 };
        let done = Completion::whole(owner, b"STORED\r\n", 0, None);
        q.on_completion(EffectQueue::part_for(60), &done);
        assert!(q.admit(50));
        assert!(!q.admit(20));
        let mut text = String::new();
        b.render(&mut text);
        assert!(
            text.contains("STAT effect:replicate.0:dropped 2\r\n"),
            "{text}"
        );
        assert!(
            text.contains("STAT effect:replicate.0:depth 2\r\n"),
            "{text}"
        );
    }

    #[test]
    fn the_side_effect_connection_takes_the_largest_queue_and_a_drop_there_is_counted() {
        let b = board();
        // replicate.0 has queue 3, write_on_miss.hot queue 2: one alone never fills it.
        assert_eq!(b.max_queue(), 3);
        assert_eq!(EffectBoard::default().max_queue(), 1);
        let mut q = EffectQueue::new(1, b.clone());
        q.drop_one();
        let mut text = String::new();
        b.render(&mut text);
        for line in [
            "STAT effect:write_on_miss.hot:dropped 1\r\n",
            "STAT effect:write_on_miss.hot:queued 0\r\n",
            "STAT effect:write_on_miss.hot:depth 0\r\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_until_a_request_completes() {
        let b = board();
        let mut q = EffectQueue::new(1, b.clone());
        assert!(q.admit(10));
        assert!(q.admit(10));
        assert!(!q.admit(10));
        let owner = crate::upstream::Owner { token: 0, part: 0 };
        let done = Completion::whole(owner, b"NOT_STORED\r\n", 0, None);
        q.on_completion(10, &done);
        assert!(q.admit(10));
        let mut text = String::new();
        b.render(&mut text);
        for line in [
            "STAT effect:write_on_miss.hot:queued 3\r\n",
            "STAT effect:write_on_miss.hot:done 1\r\n",
            "STAT effect:write_on_miss.hot:dropped 1\r\n",
            "STAT effect:write_on_miss.hot:depth 2\r\n",
            "STAT effect:replicate.0:queued 0\r\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }

    #[test]
    fn each_workers_queue_counts_in_its_own_block_and_reads_sum_them() {
        let b = board();
        // Two workers' queues of one side effect: separate blocks, one writer each.
        let (mut w0, mut w1) = (
            EffectQueue::new(1, b.clone()),
            EffectQueue::new(1, b.clone()),
        );
        assert!(w0.admit(10));
        assert!(w1.admit(10));
        assert!(w1.admit(10));
        assert!(!w1.admit(10), "queue 2 is per worker");
        w0.drop_one();
        let owner = crate::upstream::Owner { token: 0, part: 10 };
        w1.on_completion(
            10,
            &Completion::whole(owner, b"SERVER_ERROR x\r\n", 0, None),
        );
        let hot = b
            .snapshot()
            .into_iter()
            .find(|e| e.name == "write_on_miss.hot");
        let want = EffectSnapshot {
            name: "write_on_miss.hot",
            queued: 3,
            done: 0,
            failed: 1,
            dropped: 2,
            depth: 2,
        };
        assert_eq!(hot, Some(want));
    }
}
