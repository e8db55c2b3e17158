//! The warming API's engine: jobs that copy keys from one backend pool to another, run on a
//! poll loop of their own, and report their progress to the admin API.
//!
//! - [`request`]: the JSON body of `POST /warm`, validated against the config.
//! - [`metadump`]: the streaming parser of `lru_crawler metadump all`.
//! - [`wire`]: the `mg`/`ms` requests a job sends and the framing of their replies.
//! - [`conn`]: one job connection (buffers, connect, stall clock).
//! - [`job`]: one job's state machine (window, rate, placement, counters).
//! - [`engine`]: the `bifrost-warm` thread and its poll loop.
//! - [`status`]: what the admin thread reads of a job (counters, state, JSON).
//!
//! See docs/warming.md for the JSON shapes and the limits.

pub mod conn;
pub mod engine;
pub mod job;
pub mod metadump;
pub mod request;
pub mod status;
pub mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::observe::health::HealthBoard;
use crate::routing::Router;
use engine::Engine;
use job::Job;
use request::Keys;
use status::{JobShared, State};

/// Most jobs running at once; another is refused (409) until one ends.
pub const MAX_RUNNING: usize = 4;
/// Finished jobs whose status is kept (the oldest is forgotten first).
pub const KEEP_FINISHED: usize = 100;

/// Why a warming request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmError {
    /// The request body is not a valid warm request (HTTP 400), with the reason.
    BadRequest(String),
    /// No job has that id (HTTP 404).
    NotFound,
    /// The request is valid but cannot be done now (HTTP 409), with the reason.
    Conflict(String),
}

/// The jobs the manager knows and the thread that runs them.
struct Jobs {
    next_id: u64,
    /// Running and kept finished jobs, oldest first.
    jobs: VecDeque<Arc<JobShared>>,
    /// Started with the first job.
    engine: Option<Engine>,
}

/// Every warming job of the process: starts, reports and cancels them.
pub struct WarmManager {
    router: Arc<Router>,
    health: Arc<HealthBoard>,
    /// Backend names and their pool indices (as in `Router::pools`).
    backends: Vec<(String, usize)>,
    /// Names of the pools of HTTP origins (warming reads and writes memcached only).
    origins: Vec<String>,
    jobs: Mutex<Jobs>,
}

impl WarmManager {
    /// A manager for the pools of `config` (as placed by `router`).
    pub fn new(config: &Config, router: Arc<Router>, health: Arc<HealthBoard>) -> WarmManager {
        let backends = config
            .backends
            .iter()
            .filter_map(|b| {
                config
                    .backend(&b.name)
                    .map(|(index, _)| (b.name.clone(), index))
            })
            .collect();
        let origins = config
            .backends
            .iter()
            .filter(|b| b.is_http())
            .map(|b| b.name.clone())
            .collect();
        WarmManager {
            router,
            health,
            backends,
            origins,
            jobs: Mutex::new(Jobs {
                next_id: 1,
                jobs: VecDeque::new(),
                engine: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        // Every update of Jobs is a single push or pop: a panic cannot leave it inconsistent.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the job described by the JSON `body`; returns its id.
    pub fn start(&self, body: &[u8]) -> Result<u64, WarmError> {
        let request = request::parse(body, |name| {
            self.backends
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, pool)| pool)
        })?;
        for name in [&request.from, &request.to] {
            if self.origins.contains(name) {
                return Err(WarmError::BadRequest(format!(
                    "'{name}' is a pool of HTTP origins: warming copies between memcached pools"
                )));
            }
        }
        let mut jobs = self.lock();
        if jobs.engine.as_ref().is_some_and(|e| !e.alive()) {
            // The thread stopped (it logged why): whatever it ran is not running any more.
            for job in &jobs.jobs {
                job.finish(
                    State::Failed,
                    Some("the warming thread stopped".to_string()),
                );
            }
            jobs.engine = None;
        }
        let running = jobs
            .jobs
            .iter()
            .filter(|j| j.state() == State::Running)
            .count();
        if running >= MAX_RUNNING {
            return Err(WarmError::Conflict(format!(
                "{running} warming jobs are running (at most {MAX_RUNNING}); wait for one to end \
                 or cancel one"
            )));
        }
        // An `all` job dumps every server of the source pool but those the health checks
        // have marked down (a replacement is typically warmed because one is gone).
        let dump_servers: Vec<usize> = match request.keys {
            Keys::All => self
                .router
                .pools()
                .get(request.from_pool)
                .map(|pool| {
                    pool.servers
                        .iter()
                        .copied()
                        .filter(|&s| !self.health.is_down(s))
                        .collect()
                })
                .unwrap_or_default(),
            Keys::List(_) => Vec::new(),
        };
        if request.keys == Keys::All && dump_servers.is_empty() {
            return Err(WarmError::Conflict(format!(
                "every server of '{}' is down",
                request.from
            )));
        }
        let dump_addrs: Vec<SocketAddr> = dump_servers
            .iter()
            .filter_map(|&s| {
                self.router
                    .servers()
                    .get(s)
                    .and_then(|spec| spec.addr.current())
            })
            .collect();
        // memcached serves one dump at a time, and 1.6 blocks a worker thread that asks for a
        // second one (see job::Ctx::dumping): refuse at once rather than queue behind a job
        // that may run for hours at its rate.
        let overlapping = jobs.jobs.iter().find_map(|j| {
            let shared = j.dump_addrs.iter().find(|a| dump_addrs.contains(a))?;
            (j.state() == State::Running).then_some((j.id, *shared))
        });
        if let Some((other, addr)) = overlapping {
            return Err(WarmError::Conflict(format!(
                "job {other} is enumerating {addr} (memcached serves one metadump at a time); \
                 wait for it or cancel it"
            )));
        }
        if jobs.engine.is_none() {
            let engine = Engine::spawn().map_err(|e| {
                WarmError::Conflict(format!("cannot start the warming thread: {e}"))
            })?;
            jobs.engine = Some(engine);
        }
        let id = jobs.next_id;
        jobs.next_id += 1;
        let shared = Arc::new(JobShared::new(
            id,
            request.from.clone(),
            request.to.clone(),
            dump_addrs,
            request.overwrite,
            request.rate,
        ));
        log::info!(
            "warm job {id} started: from {} to {}, {}, rate {}, overwrite {}",
            request.from,
            request.to,
            match &request.keys {
                Keys::All => {
                    let pool_size = self
                        .router
                        .pools()
                        .get(request.from_pool)
                        .map_or(0, |p| p.servers.len());
                    format!(
                        "every key of {} servers ({} down, skipped)",
                        dump_servers.len(),
                        pool_size.saturating_sub(dump_servers.len())
                    )
                }
                Keys::List(keys) => format!("{} keys", keys.len()),
            },
            request
                .rate
                .map_or_else(|| "unlimited".to_string(), |r| format!("{r}/s")),
            request.overwrite
        );
        let job = Job::new(
            Arc::clone(&shared),
            request,
            &dump_servers,
            Arc::clone(&self.router),
            Arc::clone(&self.health),
            Instant::now(),
        );
        jobs.jobs.push_back(shared);
        let finished = jobs
            .jobs
            .iter()
            .filter(|j| j.state() != State::Running)
            .count();
        if finished > KEEP_FINISHED {
            let mut extra = finished - KEEP_FINISHED;
            jobs.jobs.retain(|j| {
                let forget = extra > 0 && j.state() != State::Running;
                if forget {
                    extra -= 1;
                }
                !forget
            });
        }
        if let Some(engine) = &jobs.engine {
            engine.submit(job);
        }
        Ok(id)
    }

    /// The JSON status of job `id`.
    pub fn status(&self, id: u64) -> Option<String> {
        let job = self.lock().jobs.iter().find(|j| j.id == id).cloned()?;
        Some(job.to_json().to_string())
    }

    /// A JSON array of every job's status.
    pub fn list(&self) -> String {
        let jobs: Vec<Arc<JobShared>> = self.lock().jobs.iter().cloned().collect();
        serde_json::Value::Array(jobs.iter().map(|j| j.to_json()).collect()).to_string()
    }

    /// Cancels job `id`.
    pub fn cancel(&self, id: u64) -> Result<(), WarmError> {
        let jobs = self.lock();
        let job = jobs
            .jobs
            .iter()
            .find(|j| j.id == id)
            .ok_or(WarmError::NotFound)?;
        job.cancel.store(true, Ordering::Relaxed);
        // The state changes now, so a status read right after the cancel says so; the engine
        // closes the job's connections at its next step.
        if !job.finish(State::Cancelled, None) {
            return Err(WarmError::Conflict(format!(
                "job {id} already ended ({})",
                job.state().name()
            )));
        }
        if let Some(engine) = &jobs.engine {
            engine.wake();
        }
        Ok(())
    }
}
