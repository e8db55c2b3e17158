//! The proxy's counters rendered for the admin API: Prometheus text (`GET /metrics`), JSON
//! (`GET /stats`), and readiness (`GET /ready`).

use crate::health::HealthBoard;
use crate::route::Router;
use crate::stats::StatsRegistry;

/// The Prometheus text exposition of every counter, gauge and histogram.
pub fn prometheus(registry: &StatsRegistry) -> String {
    let _ = registry;
    String::new()
}

/// The same counters as one JSON object.
pub fn json(registry: &StatsRegistry) -> String {
    let _ = registry;
    "{}".to_string()
}

/// `Ok` when every route has at least one healthy target; otherwise the names of the routes
/// that have none.
pub fn readiness(router: &Router, health: &HealthBoard) -> Result<(), Vec<String>> {
    let _ = (router, health);
    Ok(())
}
