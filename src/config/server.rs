//! A server as the configuration resolved it: the one type every layer that talks to servers
//! (connections, health, warming) shares.

use std::net::SocketAddr;
use std::time::Duration;

/// One memcached server as the workers see it.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Name of the backend pool this server belongs to.
    pub backend: String,
    /// The address as written in the config (stats name it so).
    pub address: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Per-request deadline.
    pub timeout: Duration,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// Connections per worker to this server.
    pub connections: usize,
    /// Most requests queued or in flight on one connection to this server (per worker); over
    /// it a request is answered `SERVER_ERROR backend overloaded` at once (at least 1).
    pub max_queued_requests: usize,
    /// Health checking of this server (its pool's `health:` block), if any.
    pub health: Option<super::HealthConfig>,
}
