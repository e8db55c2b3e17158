//! The route table: which backend server a key goes to.
//!
//! Routes are tried in order and the first whose pattern matches the key wins. Each route's
//! strategy turns a key into a target server; this release implements `blind_forward`.
//! Servers are numbered once for the whole process ([`ServerSpec`]), so a worker can keep its
//! backend connections in a flat vector indexed by server.

pub mod matcher;

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Config, KeyMatch, Strategy};
use matcher::KeyPattern;

/// One memcached server as the workers see it.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Name of the backend pool this server belongs to.
    pub backend: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Per-request deadline.
    pub timeout: Duration,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// Connections per worker to this server.
    pub connections: usize,
}

/// What a strategy resolved a key to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Forward to this server (index into [`Router::servers`]).
    Server(usize),
}

#[derive(Debug)]
struct Route {
    name: String,
    pattern: KeyPattern,
    target: Target,
}

/// The compiled route table for the whole process (immutable; shared by workers).
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    servers: Vec<ServerSpec>,
}

impl Router {
    /// Compiles the route table of `config`. Fails with a message for anything this release
    /// cannot route (the config loader reports those first via `unsupported_features`).
    pub fn new(config: &Config) -> Result<Router, String> {
        let mut servers = Vec::new();
        let mut first_server_of_backend = Vec::new();
        for backend in &config.backends {
            first_server_of_backend.push(servers.len());
            for server in &backend.servers {
                servers.push(ServerSpec {
                    backend: backend.name.clone(),
                    addr: server.addr,
                    timeout: backend.timeout,
                    connect_timeout: backend.connect_timeout,
                    connections: backend.connections.max(1),
                });
            }
        }
        let mut routes = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let pattern = match &route.matcher {
                KeyMatch::Glob(g) => KeyPattern::glob(g),
                KeyMatch::Prefix(p) => KeyPattern::prefix(p),
                KeyMatch::Regex(_) => {
                    return Err(format!("routes[{i}]: regex matching is not implemented"))
                }
            };
            let target = match &route.strategy {
                Strategy::BlindForward { backend } => {
                    let (index, _) = config
                        .backend(backend)
                        .ok_or_else(|| format!("routes[{i}]: no backend named '{backend}'"))?;
                    let server = first_server_of_backend
                        .get(index)
                        .copied()
                        .ok_or_else(|| format!("routes[{i}]: backend '{backend}' is empty"))?;
                    Target::Server(server)
                }
                other => {
                    return Err(format!(
                        "routes[{i}]: strategy '{}' is not implemented",
                        other.name()
                    ))
                }
            };
            routes.push(Route {
                name: route.name.clone(),
                pattern,
                target,
            });
        }
        Ok(Router { routes, servers })
    }

    /// Every server, indexed by the numbers in [`Target::Server`].
    pub fn servers(&self) -> &[ServerSpec] {
        &self.servers
    }

    /// The target of `key`, or None when no route matches.
    #[inline]
    pub fn route(&self, key: &[u8]) -> Option<Target> {
        self.routes
            .iter()
            .find(|r| r.pattern.matches(key))
            .map(|r| r.target)
    }

    /// Every server some route can send to (for `flush_all`), without repeats.
    pub fn reachable_servers(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for route in &self.routes {
            let Target::Server(s) = route.target;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// Names of the routes, in order (for logs and stats).
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.name.as_str())
    }
}
