//! What the admin thread sees of a job: its request, counters the engine bumps as replies
//! arrive (relaxed atomics: each is read on its own, and a status is a snapshot taken while
//! the job runs), and its outcome.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Copying.
    Running,
    /// Every key was handled.
    Done,
    /// Stopped by an error (see the reason).
    Failed,
    /// Stopped by `DELETE /warm/ID` (or the process shutting down).
    Cancelled,
}

impl State {
    /// The name the status JSON uses.
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// Counters of one job.
#[derive(Debug, Default)]
pub struct Counts {
    /// Keys taken from the dump or the list (and asked of the source).
    pub seen: AtomicU64,
    /// Keys stored on the target.
    pub copied: AtomicU64,
    /// Keys the target already held (add mode).
    pub skipped: AtomicU64,
    /// Keys the source did not hold when asked (expired, evicted, deleted, never there).
    pub missing: AtomicU64,
    /// Keys that could not be copied: in flight when the job failed, or not expressible.
    pub failed: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
struct Outcome {
    state: State,
    error: Option<String>,
    ended: Option<Instant>,
}

/// A job as both threads know it.
#[derive(Debug)]
pub struct JobShared {
    /// The job's id.
    pub id: u64,
    /// Source backend.
    pub from: String,
    /// Target backend.
    pub to: String,
    /// `all` (true) or `keys`.
    pub all: bool,
    /// Overwrite mode.
    pub overwrite: bool,
    /// The servers an `all` job enumerates (empty for a list of keys).
    pub dump_addrs: Vec<SocketAddr>,
    /// Keys per second, if limited.
    pub rate: Option<f64>,
    /// The counters.
    pub counts: Counts,
    /// Set by a cancel; the engine stops the job at its next step.
    pub cancel: AtomicBool,
    started: Instant,
    outcome: Mutex<Outcome>,
}

impl JobShared {
    /// A running job with every counter at zero.
    pub fn new(
        id: u64,
        from: String,
        to: String,
        dump_addrs: Vec<SocketAddr>,
        overwrite: bool,
        rate: Option<f64>,
    ) -> JobShared {
        JobShared {
            id,
            from,
            to,
            all: !dump_addrs.is_empty(),
            dump_addrs,
            overwrite,
            rate,
            counts: Counts::default(),
            cancel: AtomicBool::new(false),
            started: Instant::now(),
            outcome: Mutex::new(Outcome {
                state: State::Running,
                error: None,
                ended: None,
            }),
        }
    }

    fn outcome(&self) -> std::sync::MutexGuard<'_, Outcome> {
        // A panic while holding this lock cannot leave it inconsistent (plain field writes).
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job's state now.
    pub fn state(&self) -> State {
        self.outcome().state
    }

    /// Ends the job in `state` unless it already ended; returns whether this call ended it.
    pub fn finish(&self, state: State, error: Option<String>) -> bool {
        let mut outcome = self.outcome();
        if outcome.state != State::Running {
            return false;
        }
        outcome.state = state;
        outcome.error = error;
        outcome.ended = Some(Instant::now());
        true
    }

    /// Seconds since the start, up to the end once it ended.
    pub fn elapsed_seconds(&self) -> f64 {
        let end = self.outcome().ended.unwrap_or_else(Instant::now);
        end.saturating_duration_since(self.started).as_secs_f64()
    }

    /// The status as JSON.
    pub fn to_json(&self) -> Value {
        let (state, error, ended) = {
            let o = self.outcome();
            (o.state, o.error.clone(), o.ended)
        };
        let elapsed = ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started)
            .as_secs_f64();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "id": self.id,
            "state": state.name(),
            "from": self.from,
            "to": self.to,
            "mode": if self.all { "all" } else { "keys" },
            "overwrite": self.overwrite,
            "rate": self.rate,
            "seen": count(&self.counts.seen),
            "copied": count(&self.counts.copied),
            "skipped": count(&self.counts.skipped),
            "missing": count(&self.counts.missing),
            "failed": count(&self.counts.failed),
            "error": error,
            "elapsed_seconds": (elapsed * 1000.0).round() / 1000.0,
        })
    }

    /// One line for the log: the counts.
    pub fn summary(&self) -> String {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "seen {} copied {} skipped {} missing {} failed {} in {:.1}s",
            count(&self.counts.seen),
            count(&self.counts.copied),
            count(&self.counts.skipped),
            count(&self.counts.missing),
            count(&self.counts.failed),
            self.elapsed_seconds()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 11211))
    }

    #[test]
    fn status_json_shape() {
        let job = JobShared::new(7, "a".into(), "b".into(), vec![addr()], false, None);
        bump(&job.counts.seen);
        let v = job.to_json();
        assert_eq!(v["id"], 7);
        assert_eq!(v["state"], "running");
        assert_eq!(v["mode"], "all");
        assert_eq!(v["rate"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["seen"], 1);
        assert!(v["elapsed_seconds"].is_f64());
        let keys: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 14, "{keys:?}");
        assert!(job.finish(State::Failed, Some("source x: boom".into())));
        assert!(!job.finish(State::Done, None), "a job ends once");
        let v = job.to_json();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["error"], "source x: boom");
        let keyed = JobShared::new(8, "a".into(), "b".into(), Vec::new(), true, Some(2.5));
        assert_eq!(keyed.to_json()["rate"], 2.5);
        assert_eq!(keyed.to_json()["mode"], "keys");
        assert_eq!(keyed.to_json()["overwrite"], true);
    }
}
