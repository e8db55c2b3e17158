//! Configuration: the typed model of a Bifröst config file, and its loader.
//!
//! This is the only module that touches `yaml_serde` / `serde_json`. Loading goes in three steps:
//!
//! 1. **Parse** the text (YAML, or JSON when the file name ends in `.json`) into a generic
//!    [`yaml_serde::Value`] tree; JSON is read straight into that same tree, so both formats keep
//!    the file's key order and reject duplicate keys the same way.
//! 2. **Walk** the tree by hand ([`load`], [`routes`]), carrying the document path of every node
//!    (`routes[1].cold`, `backends.l1.servers[0].weight`), building the typed structs below and
//!    collecting *every* problem instead of stopping at the first one. Unknown keys are errors.
//! 3. **Validate** what only the whole document can tell ([`validate`]): duplicate names and
//!    binds, unreachable routes, blind_forward pools of more than one server.
//!
//! Problems come back as [`ConfigErrors`], one [`ConfigError`] per problem, each naming the file,
//! the path in the document and what is wrong. `docs/configuration.md` is the reference for every
//! key; `config/reference.yaml` shows them all with comments.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config::placement::{Distribution, HashFunction};
use crate::protocol::Command;

mod error;
mod load;
pub mod placement;
mod routes;
mod server;
pub mod twemproxy;
mod units;
mod validate;
mod walker;

#[cfg(test)]
mod tests_admin_errors;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_leases;
#[cfg(test)]
mod tests_load;

pub use error::{ConfigError, ConfigErrors};
pub use server::{lookup, OriginSpec, ServerAddr, ServerSpec};
pub use units::{parse_duration, parse_size};

/// Default [`ListenerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`ListenerConfig::max_line_length`] (64 KiB).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;
/// Default [`ListenerConfig::max_value_size`] (1 MiB, memcached's default item size limit).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;
/// Default [`ListenerConfig::max_outstanding_requests`].
pub const DEFAULT_MAX_OUTSTANDING_REQUESTS: usize = 1024;
/// Default [`ListenerConfig::max_inflight_requests`].
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 16;
/// Default [`ListenerConfig::max_buffered_reply_bytes`], the soft limit (1 MiB).
pub const DEFAULT_MAX_BUFFERED_REPLY_BYTES: usize = 1024 * 1024;
/// Default [`ListenerConfig::close_buffered_reply_bytes`], the hard limit (128 MiB).
pub const DEFAULT_CLOSE_BUFFERED_REPLY_BYTES: usize = 128 * 1024 * 1024;
/// Default [`ListenerConfig::multiget_window`].
pub const DEFAULT_MULTIGET_WINDOW: usize = 64;
/// Default [`ListenerConfig::request_read_timeout`].
pub const DEFAULT_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Config::reply_memory_budget`] (256 MiB).
pub const DEFAULT_REPLY_MEMORY_BUDGET: usize = 256 * 1024 * 1024;
/// Default [`Config::request_memory_budget`] (64 MiB: 4096 connections each holding one full
/// 16 KiB read chunk, or 64 values of 1 MiB, still arriving at once).
pub const DEFAULT_REQUEST_MEMORY_BUDGET: usize = 64 * 1024 * 1024;
/// What a process needs beside its budgets (code, thread stacks, the allocator, connections
/// and their small buffers): kept out of a container's memory limit when the budgets are sized
/// from it (see [`Config::fit_memory_limit`]).
pub const MEMORY_FLOOR: u64 = 16 * 1024 * 1024;

/// Which memory budgets a config file set explicitly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySet {
    /// `reply_memory_budget` was set.
    pub reply: bool,
    /// `request_memory_budget` was set.
    pub request: bool,
}

/// What [`Config::fit_memory_limit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFit {
    /// The limit the budgets were sized from.
    pub limit: u64,
    /// `reply_memory_budget` now, and whether it came from the limit (not the file).
    pub reply: (usize, bool),
    /// `request_memory_budget` now, and whether it came from the limit.
    pub request: (usize, bool),
}

/// Default [`BackendConfig::resolve_interval`].
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// Default [`BackendConfig::max_queued_requests`].
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 4096;
/// Default [`BackendConfig::timeout`] and [`BackendConfig::connect_timeout`].
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Default queue length of a side effect (`replicate`, `write_on_miss`), per worker.
pub const DEFAULT_SIDE_EFFECT_QUEUE: usize = 10_000;
/// Default bytes a side effect may have queued or in flight, per worker: what a slow or dead
/// target can make the proxy hold, whatever the size of the values copied.
pub const DEFAULT_SIDE_EFFECT_QUEUE_BYTES: usize = 64 << 20;
/// Largest accepted `workers` value.
pub const MAX_WORKERS: usize = 1024;
/// Largest accepted [`BackendConfig::connections`].
pub const MAX_CONNECTIONS_PER_SERVER: usize = 64;

/// The file format of a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (the default for any file name not ending in `.json`).
    Yaml,
    /// JSON, with the same schema as the YAML form.
    Json,
}

impl Format {
    /// The format a file name implies: `.json` (any case) is JSON, everything else YAML.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// A whole, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Worker threads; 0 means one per core (see [`Config::worker_count`]).
    pub workers: usize,
    /// Process-wide budget of reply bytes buffered for clients and not yet written, divided
    /// evenly among the workers; over it, the clients holding the most are closed first
    /// (counted as `clients_shed`).
    pub reply_memory_budget: usize,
    /// Process-wide budget of memory held by client read buffers for requests not yet handed
    /// on (a value still arriving, or whole requests held back by a client's limits), shared by
    /// the workers; over it, the clients holding the most are closed first (counted as
    /// `clients_shed_request_memory`).
    pub request_memory_budget: usize,
    /// Which of the two budgets the file set (the others may be sized from a container's
    /// memory limit: see [`Config::fit_memory_limit`]).
    pub memory_set: MemorySet,
    /// The admin HTTP listener, if configured.
    pub admin: Option<AdminConfig>,
    /// Client-facing listeners (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// Backend pools, in file order (at least one).
    pub backends: Vec<BackendConfig>,
    /// Routes, in file order; the first whose matcher accepts a key wins (at least one).
    pub routes: Vec<RouteConfig>,
    /// Background side effects (replication).
    pub side_effects: Vec<SideEffectConfig>,
}

/// Default [`AdminConfig::max_connections`].
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// Default [`AdminConfig::request_timeout`].
pub const DEFAULT_ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`AdminConfig::header_timeout`].
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The admin HTTP API listener.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address the admin HTTP API listens on.
    pub bind: SocketAddr,
    /// The bearer token that POST and DELETE requests must carry: `admin.token`, or the
    /// trimmed contents of `admin.token_file` (read when the config is loaded). `None`: no
    /// authentication, which is only allowed on a loopback `bind`.
    pub token: Option<String>,
    /// `admin.token_file`, when the token came from a file (kept for messages; the file is
    /// not read again).
    pub token_file: Option<PathBuf>,
    /// Most admin HTTP connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a request's head and body may take to arrive once it has started (408 after).
    pub request_timeout: Duration,
    /// How long a request head may take: from the accept on a new connection, from its first
    /// byte on a kept-alive one (408, or a close when nothing came).
    pub header_timeout: Duration,
}

impl AdminConfig {
    /// An admin API on `bind` with no token and the default limits.
    pub fn with_defaults(bind: SocketAddr) -> AdminConfig {
        AdminConfig {
            bind,
            token: None,
            token_file: None,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            request_timeout: DEFAULT_ADMIN_REQUEST_TIMEOUT,
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
        }
    }
}

/// Written by hand so that the token never reaches a log line or a test failure message.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("max_connections", &self.max_connections)
            .field("request_timeout", &self.request_timeout)
            .field("header_timeout", &self.header_timeout)
            .finish()
    }
}

/// One client-facing listener and its per-client limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Unique listener name (used in logs and metrics).
    pub name: String,
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Most client connections open at once on this listener.
    pub max_connections: usize,
    /// Close clients idle this long; `None` never closes idle clients.
    pub idle_timeout: Option<Duration>,
    /// Close a client whose started request has not fully arrived within this time (slowloris
    /// protection, counted as `clients_closed_slow_request`); `None` never does.
    pub request_read_timeout: Option<Duration>,
    /// Names of the routes this listener uses, tried in the order listed; `None` uses every
    /// route in file order.
    pub routes: Option<Vec<String>>,
    /// Longest request line accepted, in bytes.
    pub max_line_length: usize,
    /// Largest value accepted in a storage command, in bytes.
    pub max_value_size: usize,
    /// Most requests one client may have in flight before the proxy stops reading from it.
    pub max_outstanding_requests: usize,
    /// Most backend requests one client may have in flight at the backends at once (its
    /// window); further requests wait, parsed or unread, so that one client's pipeline cannot
    /// sit in front of everyone else's on a shared backend connection.
    pub max_inflight_requests: usize,
    /// Soft limit on reply bytes buffered for one client and not yet written: over it the proxy
    /// stops reading from that client and dispatching its requests until it drains.
    pub max_buffered_reply_bytes: usize,
    /// Hard limit on reply bytes buffered for one client: a client holding more is closed
    /// (counted as `clients_closed_hard_limit`). At least [`Self::max_buffered_reply_bytes`].
    pub close_buffered_reply_bytes: usize,
    /// Most keys of one multi-key get sent to one server in one backend request; the next
    /// window is sent when the previous one is answered and the client is below its soft limit.
    pub multiget_window: usize,
}

impl ListenerConfig {
    /// A listener with every limit at its default.
    pub fn with_defaults(name: &str, bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: name.to_string(),
            bind,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: None,
            request_read_timeout: Some(DEFAULT_REQUEST_READ_TIMEOUT),
            routes: None,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            max_outstanding_requests: DEFAULT_MAX_OUTSTANDING_REQUESTS,
            max_inflight_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
            max_buffered_reply_bytes: DEFAULT_MAX_BUFFERED_REPLY_BYTES,
            close_buffered_reply_bytes: DEFAULT_CLOSE_BUFFERED_REPLY_BYTES,
            multiget_window: DEFAULT_MULTIGET_WINDOW,
        }
    }
}

/// A backend: a named pool of one or more memcached servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Unique backend name (the key under `backends:`).
    pub name: String,
    /// The servers of the pool (at least one).
    pub servers: Vec<ServerConfig>,
    /// How keys are spread over the servers (used by `consistent_hash`).
    pub distribution: Distribution,
    /// The key hash (used by `consistent_hash`).
    pub hash: HashFunction,
    /// Two characters; when a key contains both, only the part between them is hashed.
    pub hash_tag: Option<String>,
    /// Deadline of one request to this backend.
    pub timeout: Duration,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// Connections per worker per server.
    pub connections: usize,
    /// Most requests queued or in flight on one connection to one server (per worker); over
    /// it a request is answered `SERVER_ERROR backend overloaded` at once (counted as
    /// `backend_overloaded`).
    pub max_queued_requests: usize,
    /// How often a server named by a host name is resolved again (and soon after a connect to
    /// it failed); new connections go to the new address, old ones are closed once idle.
    pub resolve_interval: Duration,
    /// Health checking of the servers; `None` (no `health:` block) means no probes, and no
    /// server is ever marked down.
    pub health: Option<HealthConfig>,
    /// An HTTP pool's origins take `PUT` and `DELETE` (SPEC §13); false: writes to them are
    /// refused (and warm_first sends them to warm only). Accepted on HTTP pools only.
    pub writes: bool,
    /// Largest body an HTTP origin's response may have (a larger one is an error). Accepted on
    /// HTTP pools only.
    pub max_value_size: usize,
}

impl BackendConfig {
    /// True for a pool of HTTP origins (all its servers are; a pool is never mixed).
    pub fn is_http(&self) -> bool {
        self.servers.first().is_some_and(|s| s.origin.is_some())
    }

    /// A pool with every setting at its default.
    pub fn with_defaults(name: &str, servers: Vec<ServerConfig>) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            servers,
            distribution: Distribution::Ketama,
            hash: HashFunction::Fnv1a_64,
            hash_tag: None,
            timeout: DEFAULT_BACKEND_TIMEOUT,
            connect_timeout: DEFAULT_BACKEND_TIMEOUT,
            connections: 1,
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            health: None,
            writes: false,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
        }
    }
}

/// One memcached server of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The address as written in the file (`127.0.0.1:11211`, `cache-a:11211`).
    pub address: String,
    /// The address it resolved to at load time (IPv4 preferred); None for a host name that
    /// did not resolve yet (the server is down until it does: see [`ServerAddr`]).
    pub addr: Option<SocketAddr>,
    /// Relative weight on the ketama ring (> 0).
    pub weight: u32,
    /// Optional name; ketama hashes it instead of the address when given.
    pub name: Option<String>,
    /// For an HTTP origin (`http://host:port/base/`), its URL's parts; `address` is then its
    /// `host:port`.
    pub origin: Option<OriginUrl>,
}

/// Where an HTTP origin's keys live: `http://<host>[:<port>]<base_path>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginUrl {
    /// The URL as written in the file.
    pub url: String,
    /// The `Host` header sent (`host` or `host:port` as written).
    pub host: String,
    /// The path the percent-encoded key is appended to (starts with `/`).
    pub base_path: String,
}

impl ServerConfig {
    /// A server of weight 1 with no name, written as its socket address.
    pub fn from_addr(addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            address: addr.to_string(),
            addr: Some(addr),
            weight: 1,
            name: None,
            origin: None,
        }
    }

    /// Its address slot for the workers and the resolver: the configured host and port, and
    /// what the host resolved to at load.
    pub fn address_slot(&self) -> ServerAddr {
        match walker::split_host_port(&self.address) {
            Ok((host, port)) => ServerAddr::new(host, port, self.addr),
            // Loaded configs were checked; a server built in code has an address literal.
            Err(_) => match self.addr {
                Some(addr) => ServerAddr::fixed(addr),
                None => ServerAddr::new(&self.address, 0, None),
            },
        }
    }
}

/// Health checking of a pool's servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between probes of a healthy server.
    pub interval: Duration,
    /// Deadline of one probe.
    pub timeout: Duration,
    /// Consecutive failures that mark a server down.
    pub failure_limit: u32,
    /// Time between probes of a down server.
    pub retry_after: Duration,
    /// Whether a down server leaves the ring (its keys move to the others).
    pub eject: bool,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failure_limit: 3,
            retry_after: Duration::from_secs(5),
            eject: false,
        }
    }
}

/// One route: which keys (and commands) it takes, and the strategy that serves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Unique route name; `route<index>` when the file gives none.
    pub name: String,
    /// Which keys the route takes (the `match` key).
    pub matcher: KeyMatch,
    /// Only these commands take this route; `None` means every command.
    pub commands: Option<Vec<Command>>,
    /// How the route serves requests.
    pub strategy: Strategy,
}

impl RouteConfig {
    /// True when the route takes every key of every command, so that no later route can match.
    pub fn is_catch_all(&self) -> bool {
        self.commands.is_none() && self.matcher.matches_everything()
    }
}

/// How a route selects keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMatch {
    /// A glob pattern: `*` matches any run of bytes (a string `match:`).
    Glob(String),
    /// Keys starting with this prefix (`match: {prefix: ...}`); `""` matches every key.
    Prefix(String),
    /// A regular expression (`match: {regex: ...}`).
    Regex(String),
}

impl KeyMatch {
    /// True for the matchers that accept every key: a glob of only `*`, or the empty prefix.
    pub fn matches_everything(&self) -> bool {
        match self {
            KeyMatch::Glob(g) => !g.is_empty() && g.bytes().all(|b| b == b'*'),
            KeyMatch::Prefix(p) => p.is_empty(),
            KeyMatch::Regex(_) => false,
        }
    }
}

/// A route's strategy and its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every request to the one server of `backend`.
    BlindForward {
        /// The target backend (exactly one server).
        backend: String,
    },
    /// Each request to the next healthy server of `backend` in turn.
    RoundRobin {
        /// The target pool.
        backend: String,
    },
    /// Each key to the server of `backend` that owns it on the hash ring.
    ConsistentHash {
        /// The target pool.
        backend: String,
    },
    /// The first healthy backend in order; the next on error or timeout.
    Failover {
        /// The backends, in order of preference (at least two).
        backends: Vec<String>,
        /// What a miss on the first backend does.
        on_miss: OnMiss,
        /// Cap, in seconds, on the TTL of a write that lands on a backend after the first.
        failover_ttl: Option<u32>,
    },
    /// Every request to all backends at once.
    Parallel {
        /// The backends (at least two).
        backends: Vec<String>,
        /// Which replies a write waits for.
        writes: WritePolicy,
    },
    /// Reads from `warm`, then `cold` on a miss; writes to `cold`, then `warm`.
    WarmFirst {
        /// The fast tier, read first.
        warm: String,
        /// The tier of record.
        cold: String,
        /// Copy cold hits into warm, with this TTL.
        write_on_miss: Option<WriteOnMiss>,
        /// Read warm under memcached's leases (needs `write_on_miss`).
        leases: Option<Leases>,
    },
}

impl Strategy {
    /// Every strategy name, in documentation order.
    pub const NAMES: [&'static str; 6] = [
        "blind_forward",
        "round_robin",
        "consistent_hash",
        "failover",
        "parallel",
        "warm_first",
    ];

    /// The strategy's name in config files.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::BlindForward { .. } => "blind_forward",
            Strategy::RoundRobin { .. } => "round_robin",
            Strategy::ConsistentHash { .. } => "consistent_hash",
            Strategy::Failover { .. } => "failover",
            Strategy::Parallel { .. } => "parallel",
            Strategy::WarmFirst { .. } => "warm_first",
        }
    }

    /// The names of every backend the strategy uses, in the order the file gives them.
    pub fn backend_names(&self) -> Vec<&str> {
        match self {
            Strategy::BlindForward { backend }
            | Strategy::RoundRobin { backend }
            | Strategy::ConsistentHash { backend } => vec![backend.as_str()],
            Strategy::Failover { backends, .. } | Strategy::Parallel { backends, .. } => {
                backends.iter().map(String::as_str).collect()
            }
            Strategy::WarmFirst { warm, cold, .. } => vec![warm.as_str(), cold.as_str()],
        }
    }
}

/// What a failover route does when its first healthy backend answers a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMiss {
    /// Answer the miss (default).
    Stop,
    /// Ask the next backend.
    Next,
}

impl OnMiss {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            OnMiss::Stop => "stop",
            OnMiss::Next => "next",
        }
    }
}

/// Which backend replies a parallel write waits for before answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePolicy {
    /// Every backend must succeed (default).
    All,
    /// More than half must succeed.
    Majority,
    /// The first reply answers.
    First,
}

impl WritePolicy {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            WritePolicy::All => "all",
            WritePolicy::Majority => "majority",
            WritePolicy::First => "first",
        }
    }
}

/// The `write_on_miss` setting of a warm_first route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOnMiss {
    /// Expiry (seconds, 0 = never) of values copied into the warm tier.
    pub ttl: u32,
    /// Most write-backs queued or in flight per worker; more are dropped and counted.
    pub queue: usize,
    /// Most bytes of write-backs queued or in flight per worker; more are dropped and counted.
    pub queue_bytes: usize,
}

/// The `leases` setting of a warm_first route: warm is read with memcached's leases
/// (`mg ... N<lease_ttl> c`), so that only one reader per key fetches from cold, its write-back
/// cannot land after a newer write or a delete, and hot keys can be refreshed before they expire
/// (docs/configuration.md, "Leases").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leases {
    /// Lifetime, in seconds, of the placeholder a miss leaves in warm (memcached's `N` flag):
    /// how long other readers wait for a lease holder that never writes back.
    pub lease_ttl: u32,
    /// How long a reader that finds another reader's lease waits for its write-back (re-reading
    /// warm) before it reads cold itself.
    pub wait: Duration,
    /// Remaining TTL, in seconds, under which one reader of a hit refreshes the key from cold in
    /// the background (memcached's `R` flag; `early_refresh` × the write-back TTL); 0: off.
    pub refresh_below: u32,
}

impl Leases {
    /// Default placeholder lifetime: longer than a slow cold read, short enough that readers
    /// behind a lease holder that died wait little.
    pub const DEFAULT_LEASE_TTL: u32 = 3;
    /// Default wait for another reader's write-back.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);
}

/// A background side effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideEffectConfig {
    /// Copy writes taken by some routes to another backend, asynchronously.
    Replicate {
        /// Names of the routes whose writes are copied.
        routes: Vec<String>,
        /// Name of the backend that receives the copies.
        to: String,
        /// The write commands copied.
        commands: Vec<Command>,
        /// Most copies queued or in flight per worker; overflow is dropped and counted.
        queue: usize,
        /// Most bytes of copies queued or in flight per worker; overflow is dropped and
        /// counted.
        queue_bytes: usize,
    },
}

impl Config {
    /// Reads and validates the config file at `path` (JSON when it ends in `.json`, else YAML).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &file, Format::from_path(path)),
            Err(e) => Err(ConfigErrors::single(
                &file,
                "",
                format!("cannot read the file: {e}"),
            )),
        }
    }

    /// Translates the twemproxy (nutcracker) configuration at `path` into a Bifröst one and
    /// loads it (`bifrost --twemproxy`): the [`twemproxy::Translation`] holds the config, its
    /// YAML (what `--print-config` prints) and the warnings; see [`twemproxy`].
    pub fn load_twemproxy(path: &Path) -> Result<twemproxy::Translation, twemproxy::Rejection> {
        twemproxy::load(path)
    }

    /// Parses and validates config text; `file_name` is only used in error messages.
    pub fn parse(text: &str, file_name: &str, format: Format) -> Result<Config, ConfigErrors> {
        load::parse(text, file_name, format)
    }

    /// The configuration used without `--config`: one listener `main` on 127.0.0.1:11311,
    /// blind_forward of every key to the backend `default` = 127.0.0.1:11211.
    pub fn embedded_default() -> Config {
        let local = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        Config {
            workers: 0,
            reply_memory_budget: DEFAULT_REPLY_MEMORY_BUDGET,
            memory_set: MemorySet::default(),
            request_memory_budget: DEFAULT_REQUEST_MEMORY_BUDGET,
            admin: None,
            listeners: vec![ListenerConfig::with_defaults("main", local(11311))],
            backends: vec![BackendConfig::with_defaults(
                "default",
                vec![ServerConfig::from_addr(local(11211))],
            )],
            routes: vec![RouteConfig {
                name: "default".to_string(),
                matcher: KeyMatch::Glob("*".to_string()),
                commands: None,
                strategy: Strategy::BlindForward {
                    backend: "default".to_string(),
                },
            }],
            side_effects: Vec::new(),
        }
    }

    /// The backend called `name` and its index in [`Config::backends`].
    pub fn backend(&self, name: &str) -> Option<(usize, &BackendConfig)> {
        self.backends
            .iter()
            .enumerate()
            .find(|(_, b)| b.name == name)
    }

    /// The route called `name` and its index in [`Config::routes`].
    pub fn route(&self, name: &str) -> Option<(usize, &RouteConfig)> {
        self.routes.iter().enumerate().find(|(_, r)| r.name == name)
    }

    /// The number of worker threads to run: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Sizes the memory budgets the file did not set from a memory limit of `limit` bytes (a
    /// container's): of what the limit leaves beside [`MEMORY_FLOOR`] (half the limit, when it
    /// is under twice that), `reply_memory_budget` takes a third and `request_memory_budget` an
    /// eighth, each at most its default and at least 1 MiB. The rest is headroom for what the
    /// budgets do not count: a budgeted byte costs more than one byte of RSS (read chunks, the
    /// allocator's pages: about 1.7 under a flood of big replies, measured in a 64 MiB
    /// container), side-effect queues, and the kernel's socket buffers charged to the
    /// container. Budgets set in the file stay.
    pub fn fit_memory_limit(&mut self, limit: u64) -> MemoryFit {
        let usable = if limit >= 2 * MEMORY_FLOOR {
            limit - MEMORY_FLOOR
        } else {
            limit / 2
        };
        let size = |share: u64, default: usize| -> usize {
            let sized = usize::try_from(usable / share).unwrap_or(usize::MAX);
            sized.clamp(1 << 20, default.max(1 << 20))
        };
        if !self.memory_set.reply {
            self.reply_memory_budget = size(3, DEFAULT_REPLY_MEMORY_BUDGET);
        }
        if !self.memory_set.request {
            self.request_memory_budget = size(8, DEFAULT_REQUEST_MEMORY_BUDGET);
        }
        MemoryFit {
            limit,
            reply: (self.reply_memory_budget, !self.memory_set.reply),
            request: (self.request_memory_budget, !self.memory_set.request),
        }
    }

    /// One message per feature the config uses that this release does not implement yet.
    /// The server refuses to start when this is non-empty; `--check` prints them as warnings.
    pub fn unsupported_features(&self) -> Vec<String> {
        validate::unsupported_features(self)
    }
}
