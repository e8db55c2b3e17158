//! The admin HTTP API: `/health`, `/ready`, `/metrics`, `/stats` and `/warm`, served over
//! HTTP/1.1 by a thread of its own (`bifrost-admin`) with its own mio poll, so that nothing it
//! does (rendering every counter, a slow or hostile client) can take time from the workers.
//!
//! - [`http`]: request framing (parsed with `httparse`), limits, responses.
//! - `router`: which endpoint answers what, and the bearer-token check.
//! - `server`: the event loop and the per-connection state machine.
//!
//! The endpoints reach the rest of the proxy only through [`AdminApi`], so the server is tested
//! alone with a fake; [`LiveApi`] is the real one. `docs/admin.md` documents the API.

mod auth;
pub mod http;
pub mod metrics;
mod router;
mod server;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use auth::constant_time_eq;
pub use http::Limits;

use crate::observe::health::HealthBoard;
use crate::observe::stats::{StatsRegistry, WorkerStats};
use crate::routing::Router;
use crate::runtime::shutdown::Shutdown;
use crate::warming::{WarmError, WarmManager};

/// What the endpoints read and do. Called on the admin thread, so an implementation must be
/// shareable, and should not block for long: one slow call delays every admin client (never a
/// worker).
pub trait AdminApi: Send + Sync {
    /// `Ok` when every route has a healthy target, else the names of the routes without one.
    fn ready(&self) -> Result<(), Vec<String>>;
    /// Every counter in the Prometheus text format.
    fn metrics(&self) -> String;
    /// Every counter as one JSON object.
    fn stats(&self) -> String;
    /// Starts the warming job described by the JSON `body`; its id.
    fn warm_start(&self, body: &[u8]) -> Result<u64, WarmError>;
    /// A JSON array of every warming job's status.
    fn warm_list(&self) -> String;
    /// The JSON status of job `id`, if there is one.
    fn warm_status(&self, id: u64) -> Option<String>;
    /// Cancels job `id`.
    fn warm_cancel(&self, id: u64) -> Result<(), WarmError>;
}

/// The admin API over the running proxy's shared state.
pub struct LiveApi {
    /// Every worker's counters.
    pub registry: Arc<StatsRegistry>,
    /// The routes and their servers.
    pub router: Arc<Router>,
    /// Which servers are up.
    pub health: Arc<HealthBoard>,
    /// The warming jobs.
    pub warm: Arc<WarmManager>,
}

impl AdminApi for LiveApi {
    fn ready(&self) -> Result<(), Vec<String>> {
        crate::admin::metrics::readiness(&self.router, &self.health)
    }

    fn metrics(&self) -> String {
        crate::admin::metrics::prometheus(&self.registry)
    }

    fn stats(&self) -> String {
        crate::admin::metrics::json(&self.registry)
    }

    fn warm_start(&self, body: &[u8]) -> Result<u64, WarmError> {
        self.warm.start(body)
    }

    fn warm_list(&self) -> String {
        self.warm.list()
    }

    fn warm_status(&self, id: u64) -> Option<String> {
        self.warm.status(id)
    }

    fn warm_cancel(&self, id: u64) -> Result<(), WarmError> {
        self.warm.cancel(id)
    }
}

/// A started admin server.
pub struct AdminServer {
    /// The address it listens on (port 0 in the config resolved).
    pub addr: SocketAddr,
    /// Its thread, which ends once shutdown is requested.
    pub thread: JoinHandle<()>,
}

/// Binds `bind` and starts the admin server on its own thread. It stops when `shutdown` is
/// requested. `token`, when set, is required as `Authorization: Bearer <token>` by POST and
/// DELETE. `stats` is the block its `admin_*` counters go to (the thread is its only writer).
pub fn start(
    bind: SocketAddr,
    api: Arc<dyn AdminApi>,
    token: Option<String>,
    limits: Limits,
    stats: Arc<WorkerStats>,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<AdminServer> {
    // A plain bind, not SO_REUSEPORT as the listeners have: a second process on the same
    // admin port must fail loudly, not silently share it.
    let listener = std::net::TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    let settings = server::Settings {
        api,
        token,
        limits,
        stats,
    };
    let server = server::Server::new(listener, settings, shutdown)?;
    let thread = std::thread::Builder::new()
        .name("bifrost-admin".into())
        .spawn(move || server.run())?;
    Ok(AdminServer { addr, thread })
}
