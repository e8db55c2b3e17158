//! The warming thread: one mio poll loop (thread `bifrost-warm`) serving every job, started
//! with the first job and stopped when the manager is dropped.
//!
//! Jobs arrive through an inbox and a [`Waker`]; cancels are flags on the job the loop checks
//! at each step (the same waker wakes it). The loop never touches the workers' connections:
//! each job owns its own, so client traffic shares only the CPU with warming (which a job's
//! `rate` bounds).

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::job::{Ctx, Job};

/// The waker's token; connection tokens stay below it.
pub const WAKER_TOKEN: Token = Token(usize::MAX);
/// The longest the loop sleeps without a reason to wake (a safety net, not a schedule).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What the manager and the thread share.
struct Shared {
    inbox: Mutex<Vec<Job>>,
    stop: AtomicBool,
    waker: Waker,
}

/// The running thread, as the manager holds it. Dropping it stops the thread (running jobs end
/// cancelled) and waits for it.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the thread.
    pub fn spawn() -> io::Result<Engine> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            waker,
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bifrost-warm".into())
            .spawn(move || run(poll, &for_thread))?;
        Ok(Engine {
            shared,
            thread: Some(thread),
        })
    }

    /// False once the thread has exited (its poll failed, or it panicked).
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Hands `job` to the thread.
    pub fn submit(&self, job: Job) {
        lock(&self.shared.inbox).push(job);
        self.wake();
    }

    /// Makes the thread look at its jobs now (after a cancel).
    pub fn wake(&self) {
        if let Err(e) = self.shared.waker.wake() {
            log::warn!("warming: cannot wake the warming thread: {e}");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The inbox is a plain Vec: a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(mut poll: Poll, shared: &Shared) {
    let mut events = Events::with_capacity(256);
    let mut jobs: Vec<Job> = Vec::new();
    let mut next_token = 0usize;
    let mut dumping = HashSet::new();
    let mut timeout: Option<Duration> = None;
    loop {
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("warming: poll failed: {e}; stopping every job");
                let mut ctx = Ctx {
                    registry: poll.registry(),
                    next_token: &mut next_token,
                    dumping: &mut dumping,
                    now: Instant::now(),
                };
                for job in &mut jobs {
                    job.abort(&mut ctx, &format!("the warming loop failed: {e}"));
                }
                return;
            }
        }
        jobs.append(&mut lock(&shared.inbox));
        let mut ctx = Ctx {
            registry: poll.registry(),
            next_token: &mut next_token,
            dumping: &mut dumping,
            now: Instant::now(),
        };
        if shared.stop.load(Ordering::Acquire) {
            for job in &mut jobs {
                job.abort(&mut ctx, "the process is shutting down");
            }
            return;
        }
        let mut wake_at: Option<Instant> = None;
        for job in &mut jobs {
            if let Some(at) = job.step(&mut ctx) {
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
        }
        jobs.retain(|job| !job.finished());
        // Readiness of the jobs' sockets wakes the loop; the timeout covers deadlines, the
        // rate's next tokens and dumps to ask again. With no job, only the waker wakes it.
        timeout = if jobs.is_empty() {
            None
        } else {
            Some(
                wake_at
                    .map_or(MAX_SLEEP, |at| at.saturating_duration_since(Instant::now()))
                    .min(MAX_SLEEP),
            )
        };
    }
}
