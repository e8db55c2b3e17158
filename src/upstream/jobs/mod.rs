//! Jobs: work on the poll loop that no client waits for. A job owns its backend requests
//! (an [`crate::upstream::Owner`] token the worker maps to the job); each reply or failure reaches it as a completion, and each
//! timer it asked for wakes it. It answers with the requests to send next and a [`JobStep`]:
//! wait for a reply, or sleep until an instant. Jobs live as long as their worker.
//!
//! The kinds:
//! * [`probe::Probe`]: the health probe of one server (`version` on a connection of its own,
//!   every `interval` while the server is up, every `retry_after` while it is down).
//!
//! * [`crate::upstream::jobs::effect_queue::EffectQueue`]: one side effect's bounded queue on this worker
//!   (replication copies, write-backs): it owns their requests and counts their outcomes.
//!
//! Warming will be a job of the same shape. Jobs live in a slab owned
//! by the worker; ids carry a generation, so a reply for a job that has gone finds nothing and
//! is dropped, like a reply for an exchange whose client went.

pub mod effect_queue;
pub mod probe;

use std::time::Instant;

use crate::observe::health::HealthBoard;
use crate::runtime::gen_slab::{GenSlab, Id};
use crate::upstream::Completion;
use crate::upstream::Send;

/// Names one job (a stale id finds nothing).
pub type JobId = Id<Job>;

/// Every live job of one worker.
pub type Jobs = GenSlab<Job>;

/// What a job asks of the loop after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStep {
    /// Waiting for the replies of what it sent.
    Wait,
    /// Wake it (a timer event) at this instant.
    SleepUntil(Instant),
}

/// One job.
#[derive(Debug)]
pub enum Job {
    /// A server's health probe.
    Probe(probe::Probe),
    /// One side effect's queue.
    Effect(crate::upstream::jobs::effect_queue::EffectQueue),
}

impl Job {
    /// A timer the job asked for fired: it may send requests (appended to `sends`).
    pub fn on_timer(&mut self, now: Instant, sends: &mut Vec<Send>) -> JobStep {
        match self {
            Job::Probe(p) => p.on_timer(now, sends),
            Job::Effect(_) => JobStep::Wait,
        }
    }

    /// A reply to (or failure of) its request `part`.
    pub fn on_completion(
        &mut self,
        part: u32,
        completion: &Completion,
        health: &HealthBoard,
        now: Instant,
    ) -> JobStep {
        match self {
            Job::Probe(p) => p.on_completion(part, completion, health, now),
            Job::Effect(q) => q.on_completion(part, completion),
        }
    }
}
