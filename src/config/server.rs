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
    /// Where it listens now (re-resolved from the configured name; see [`ServerAddr`]).
    pub addr: std::sync::Arc<ServerAddr>,
    /// How often its host name is resolved again (a name only).
    pub resolve_interval: Duration,
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
    /// For an HTTP origin (SPEC §13): where its keys live and what it takes; `None` for a
    /// memcached server.
    pub origin: Option<std::sync::Arc<OriginSpec>>,
}

/// An HTTP origin as its connections speak to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginSpec {
    /// The `Host` header of every request.
    pub host: String,
    /// The path each percent-encoded key is appended to.
    pub base_path: String,
    /// It takes `PUT` and `DELETE` (the pool's `writes: true`).
    pub writes: bool,
    /// Largest response body taken (the pool's `max_value_size`).
    pub max_value_size: usize,
}

/// Where a server listens now: its configured `host:port` and the address that resolves to,
/// shared by the workers (which read it when they connect, never per request) and the resolver
/// thread (which re-resolves a host name every `resolve_interval`, and soon after a worker
/// failed to connect: see [`ServerAddr::want_resolve`]). An IP literal is never re-resolved.
#[derive(Debug)]
pub struct ServerAddr {
    host: String,
    port: u16,
    literal: bool,
    current: std::sync::Mutex<Option<SocketAddr>>,
    /// Bumped on every change of `current` (workers drain connections to an older one).
    generation: std::sync::atomic::AtomicU32,
    /// A worker failed to connect: resolve again soon.
    wanted: std::sync::atomic::AtomicBool,
}

impl ServerAddr {
    /// A server at `host:port` that resolved to `current` (None: not resolvable yet).
    pub fn new(host: &str, port: u16, current: Option<SocketAddr>) -> ServerAddr {
        ServerAddr {
            literal: host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok(),
            host: host.to_string(),
            port,
            current: std::sync::Mutex::new(current),
            generation: std::sync::atomic::AtomicU32::new(0),
            wanted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A server at a fixed address (an IP literal).
    pub fn fixed(addr: SocketAddr) -> ServerAddr {
        ServerAddr::new(&addr.ip().to_string(), addr.port(), Some(addr))
    }

    /// The host as configured (a name, or an IP literal).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the host is a name that is resolved again from time to time.
    pub fn is_name(&self) -> bool {
        !self.literal
    }

    /// The address to connect to now (None while the name does not resolve).
    pub fn current(&self) -> Option<SocketAddr> {
        match self.current.lock() {
            Ok(current) => *current,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// How many times the address changed.
    pub fn generation(&self) -> u32 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sets the address; true when it changed (the generation is then bumped).
    pub fn set(&self, addr: Option<SocketAddr>) -> bool {
        let mut current = match self.current.lock() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *current == addr {
            return false;
        }
        *current = addr;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        true
    }

    /// A connect failed: the resolver should look the name up again soon.
    pub fn want_resolve(&self) {
        if !self.literal {
            self.wanted
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Takes a pending [`ServerAddr::want_resolve`].
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// `host` looked up for `port`, an IPv4 address preferred (the config loader and the resolver
/// thread both take this one).
pub fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

impl std::fmt::Display for ServerAddr {
    /// The address it resolves to now, or `host:port` as configured while it does not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.current() {
            Some(addr) => write!(f, "{addr}"),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_slot_counts_changes_and_remembers_a_wanted_lookup() {
        let a: SocketAddr = "10.0.0.1:11211".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:11211".parse().expect("addr");
        let slot = ServerAddr::new("cache-a", 11211, Some(a));
        assert!(slot.is_name());
        assert_eq!((slot.current(), slot.generation()), (Some(a), 0));
        assert!(!slot.set(Some(a)), "the same address is no change");
        assert!(slot.set(Some(b)));
        assert_eq!((slot.current(), slot.generation()), (Some(b), 1));
        assert_eq!(slot.to_string(), "10.0.0.2:11211");
        assert!(!slot.take_wanted());
        slot.want_resolve();
        assert!(slot.take_wanted());
        assert!(!slot.take_wanted(), "taken once");
        let literal = ServerAddr::fixed(a);
        assert!(!literal.is_name());
        literal.want_resolve();
        assert!(!literal.take_wanted(), "an IP literal is never looked up");
        let unresolved = ServerAddr::new("cache-b", 11211, None);
        assert_eq!(unresolved.to_string(), "cache-b:11211");
    }
}
