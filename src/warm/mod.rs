//! The warming API's engine: jobs that copy keys from one backend pool to another, run on a
//! poll loop of their own, and report their progress to the admin API.

use std::sync::Arc;

use crate::config::Config;
use crate::health::HealthBoard;
use crate::route::Router;

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

/// Every warming job of the process: starts, reports and cancels them.
pub struct WarmManager {
    _router: Arc<Router>,
    _health: Arc<HealthBoard>,
}

impl WarmManager {
    /// A manager for the pools of `config` (as placed by `router`).
    pub fn new(config: &Config, router: Arc<Router>, health: Arc<HealthBoard>) -> WarmManager {
        let _ = config;
        WarmManager {
            _router: router,
            _health: health,
        }
    }

    /// Starts the job described by the JSON `body`; returns its id.
    pub fn start(&self, body: &[u8]) -> Result<u64, WarmError> {
        let _ = body;
        Err(WarmError::Conflict("warming is not implemented yet".into()))
    }

    /// The JSON status of job `id`.
    pub fn status(&self, id: u64) -> Option<String> {
        let _ = id;
        None
    }

    /// A JSON array of every job's status.
    pub fn list(&self) -> String {
        "[]".to_string()
    }

    /// Cancels job `id`.
    pub fn cancel(&self, id: u64) -> Result<(), WarmError> {
        let _ = id;
        Err(WarmError::NotFound)
    }
}
