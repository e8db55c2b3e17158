//! The schema walk, top level, listeners and backends; routes and side effects are in
//! [`super::routes`], whole-document checks in [`super::validate`].

use yaml_serde::Value;

use super::error::ConfigErrors;
use super::walker::{index, join, Fields, Walker};
use super::*;

/// Keys allowed at the top level.
const TOP_KEYS: &[&str] = &[
    "workers",
    "reply_memory_budget",
    "request_memory_budget",
    "admin",
    "listeners",
    "backends",
    "routes",
    "side_effects",
];
const ADMIN_KEYS: &[&str] = &[
    "bind",
    "token",
    "token_file",
    "max_connections",
    "request_timeout",
    "header_timeout",
];
/// Largest accepted `admin.max_connections`: the admin API is for a few operators and scrapers.
const MAX_ADMIN_CONNECTIONS: u64 = 10_000;
/// Largest token file read: a token is at most [`MAX_TOKEN`] bytes, so a bigger file is a
/// mistake (a wrong path, a device), not a token.
pub(super) const MAX_TOKEN_FILE: usize = 4096;
/// Shortest accepted admin token: shorter ones can be guessed.
pub(super) const MIN_TOKEN: usize = 16;
/// Longest accepted admin token (it travels in a header line of at most 8 KiB).
pub(super) const MAX_TOKEN: usize = 256;
const LISTENER_KEYS: &[&str] = &[
    "name",
    "bind",
    "max_connections",
    "idle_timeout",
    "request_read_timeout",
    "routes",
    "max_line_length",
    "max_value_size",
    "max_outstanding_requests",
    "max_inflight_requests",
    "max_buffered_reply_bytes",
    "close_buffered_reply_bytes",
    "multiget_window",
];
const BACKEND_KEYS: &[&str] = &[
    "servers",
    "distribution",
    "hash",
    "hash_tag",
    "timeout",
    "connect_timeout",
    "connections",
    "max_queued_requests",
    "resolve_interval",
    "health",
    "writes",
    "max_value_size",
];
const SERVER_KEYS: &[&str] = &["address", "weight", "name"];
const HEALTH_KEYS: &[&str] = &[
    "interval",
    "timeout",
    "failure_limit",
    "retry_after",
    "eject",
];

/// Smallest accepted `max_line_length`: room for a 250-byte key and a command's other fields.
pub(super) const MIN_LINE_LENGTH: u64 = 512;
/// Largest accepted `max_value_size` (memcached's own item size limit is at most 1 GiB).
pub(super) const MAX_VALUE_SIZE: u64 = 1 << 30;

/// One item of a list (or map) of the document, walked as far as it could be.
pub(super) struct Slot<T> {
    /// The item's path (`routes[2]`, `backends.l1`).
    pub path: String,
    /// The item's name, when one could be read (or defaulted), even if the item is broken.
    pub name: Option<String>,
    /// Where the name was read (`routes[2].name`), or the item's path when defaulted.
    pub name_path: String,
    /// The item, when every part of it was valid.
    pub value: Option<T>,
}

/// The document as walked: everything valid is here, everything broken is an error already.
pub(super) struct Draft {
    /// `workers` (0 when broken).
    pub workers: usize,
    /// `reply_memory_budget`, or its default; `None` when broken.
    pub reply_memory_budget: Option<usize>,
    /// Which budgets the file set.
    pub memory_set: MemorySet,
    /// `request_memory_budget`, or its default; `None` when broken.
    pub request_memory_budget: Option<usize>,
    /// `admin`, when present and valid.
    pub admin: Option<AdminConfig>,
    /// `listeners`, in file order.
    pub listeners: Vec<Slot<ListenerConfig>>,
    /// Each listener's `routes`, as far as it could be read: `Some(None)` when absent (every
    /// route), `None` when broken; kept apart so that a listener broken elsewhere still counts.
    pub listener_routes: Vec<ListenerRoutes>,
    /// `backends`, in file order.
    pub backends: Vec<Slot<BackendConfig>>,
    /// `routes`, in file order.
    pub routes: Vec<Slot<RouteConfig>>,
    /// `side_effects`, in file order.
    pub side_effects: Vec<Slot<SideEffectConfig>>,
}

/// Names that routes, listeners and side effects may refer to, read before the full walk so
/// that a reference to a broken item is not also reported as a reference to a missing one.
/// `None` when the section is not of the right type, so that its names are unknown.
pub(super) struct Names {
    /// The backend names (keys of `backends`).
    pub backends: Option<Vec<String>>,
    /// The route names (given or defaulted).
    pub routes: Option<Vec<String>>,
}

/// Parses `text`, walks and validates it: the entry point behind [`Config::parse`].
pub(super) fn parse(text: &str, file: &str, format: Format) -> Result<Config, ConfigErrors> {
    let parsed: Result<Value, String> = match format {
        Format::Yaml => yaml_serde::from_str(text).map_err(|e| format!("invalid YAML: {e}")),
        Format::Json => serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}")),
    };
    let root = parsed.map_err(|e| ConfigErrors::single(file, "", e))?;
    let mut w = Walker::new(file);
    let draft = walk_root(&mut w, &root);
    if let Some(draft) = &draft {
        validate::check(&mut w, draft);
    }
    match draft {
        Some(draft) if w.errors.is_empty() => assemble(draft).ok_or_else(|| {
            ConfigErrors::single(
                file,
                "",
                "internal error: a part of the config was lost".into(),
            )
        }),
        _ => Err(ConfigErrors { errors: w.errors }),
    }
}

/// True when `meta` is another user's file whose group is this process's effective group: it
/// was shared with this process through that group (Kubernetes' `fsGroup` on a Secret volume),
/// not with everyone in the file owner's group.
fn given_by_group(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid and getegid only read the calling process's credentials.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    meta.uid() != uid && meta.gid() == gid
}

/// The final [`Config`], when every slot holds a value.
fn assemble(d: Draft) -> Option<Config> {
    fn all<T>(slots: Vec<Slot<T>>) -> Option<Vec<T>> {
        slots.into_iter().map(|s| s.value).collect()
    }
    Some(Config {
        workers: d.workers,
        reply_memory_budget: d.reply_memory_budget?,
        request_memory_budget: d.request_memory_budget?,
        memory_set: d.memory_set,
        admin: d.admin,
        listeners: all(d.listeners)?,
        backends: all(d.backends)?,
        routes: all(d.routes)?,
        side_effects: all(d.side_effects)?,
    })
}

fn walk_root(w: &mut Walker, root: &Value) -> Option<Draft> {
    if root.is_null() {
        w.error(
            "",
            "the file is empty; expected a map with listeners, backends and routes",
        );
        return None;
    }
    let top = w.fields(root, "", TOP_KEYS)?;
    let names = Names {
        backends: backend_names(&top),
        routes: routes::route_names(&top),
    };
    let workers = match top.get("workers") {
        Some(v) => w.integer(v, "workers", 0, MAX_WORKERS as u64).unwrap_or(0) as usize,
        None => 0,
    };
    let reply_memory_budget = match top.get("reply_memory_budget") {
        Some(v) => w.size(v, "reply_memory_budget", 1, u64::MAX),
        None => Some(DEFAULT_REPLY_MEMORY_BUDGET),
    };
    let request_memory_budget = match top.get("request_memory_budget") {
        Some(v) => w.size(v, "request_memory_budget", 1, u64::MAX),
        None => Some(DEFAULT_REQUEST_MEMORY_BUDGET),
    };
    let memory_set = MemorySet {
        reply: top.get("reply_memory_budget").is_some(),
        request: top.get("request_memory_budget").is_some(),
    };
    let admin = top.get("admin").and_then(|v| walk_admin(w, v));
    let (listeners, listener_routes) = walk_listeners(w, &top, &names);
    Some(Draft {
        workers,
        reply_memory_budget,
        request_memory_budget,
        memory_set,
        admin,
        listeners,
        listener_routes,
        backends: walk_backends(w, &top),
        routes: routes::walk_routes(w, &top, &names),
        side_effects: routes::walk_side_effects(w, &top, &names),
    })
}

/// The keys of the `backends` map that are strings; `None` when `backends` is not a map.
fn backend_names(top: &Fields) -> Option<Vec<String>> {
    match top.get("backends") {
        Some(Value::Mapping(m)) => Some(
            m.keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
        ),
        None => Some(Vec::new()),
        Some(_) => None,
    }
}

/// A required, non-empty list at `key` of the top level.
pub(super) fn top_list<'v>(w: &mut Walker, top: &Fields<'v>, key: &str, what: &str) -> &'v [Value] {
    let Some(v) = w.required(top, key) else {
        return &[];
    };
    let items = w.list(v, key).unwrap_or(&[]);
    if items.is_empty() && v.is_sequence() {
        w.error(key, format!("must list at least one {what}"));
    }
    items
}

fn walk_admin(w: &mut Walker, v: &Value) -> Option<AdminConfig> {
    let f = w.fields(v, "admin", ADMIN_KEYS)?;
    let bind = w
        .required(&f, "bind")
        .and_then(|v| w.address(v, "admin.bind", false))
        .map(|(_, addr)| addr);
    let max_connections = match f.get("max_connections") {
        Some(v) => w
            .integer(v, "admin.max_connections", 1, MAX_ADMIN_CONNECTIONS)
            .map(|n| n as usize),
        None => Some(DEFAULT_ADMIN_MAX_CONNECTIONS),
    };
    let request_timeout = match f.get("request_timeout") {
        Some(v) => w.positive_duration(v, "admin.request_timeout"),
        None => Some(DEFAULT_ADMIN_REQUEST_TIMEOUT),
    };
    let header_timeout = match f.get("header_timeout") {
        Some(v) => w.positive_duration(v, "admin.header_timeout"),
        None => Some(DEFAULT_ADMIN_HEADER_TIMEOUT),
    };
    // Whether the token may sit in a file others can read: on a loopback bind only local users
    // could use it anyway (a warning); elsewhere it would open the API to them (an error).
    let loopback = bind.map_or(true, |a| a.ip().is_loopback());
    let (token, token_file) = match (f.get("token"), f.get("token_file")) {
        (Some(_), Some(_)) => {
            w.error(
                "admin.token_file",
                "set admin.token or admin.token_file, not both",
            );
            (None, None)
        }
        (Some(v), None) => (
            w.string(v, "admin.token")
                .and_then(|t| admin_token(w, t, "admin.token", "")),
            Some(None),
        ),
        (None, Some(v)) => match w.string(v, "admin.token_file") {
            Some(path) => (
                read_token_file(w, path, loopback),
                Some(Some(std::path::PathBuf::from(path))),
            ),
            None => (None, None),
        },
        (None, None) => (Some(None), Some(None)),
    };
    // Without a token, whoever reaches the port can start and cancel warming jobs (which read
    // every key of a pool and write to another); only the machine itself may be trusted so.
    if let (Some(addr), Some(None)) = (bind, &token) {
        if !addr.ip().is_loopback() {
            w.error(
                "admin.bind",
                format!(
                    "{addr} is not a loopback address and no admin.token or admin.token_file \
                     is set: anyone who can reach it could start and cancel warming jobs; set \
                     a token or bind to 127.0.0.1"
                ),
            );
            return None;
        }
    }
    Some(AdminConfig {
        bind: bind?,
        token: token?,
        token_file: token_file?,
        max_connections: max_connections?,
        request_timeout: request_timeout?,
        header_timeout: header_timeout?,
    })
}

/// The token read from the file at `path`, surrounding whitespace trimmed (files usually end
/// with a newline). The file must be a regular file of at most [`MAX_TOKEN_FILE`] bytes: a
/// FIFO would hang start-up and `/dev/zero` would be read until memory runs out, so the kind
/// is checked before opening, the open cannot block, the kind is checked again on the open
/// file (it may have been swapped in between), and no more than one byte past the limit is
/// read. A file that group or others can read is a warning on a `loopback` bind, an error on
/// any other. Every refusal is an error naming the path.
fn read_token_file(w: &mut Walker, path: &str, loopback: bool) -> Option<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let at = "admin.token_file";
    let not_regular = |meta: &std::fs::Metadata| {
        let t = meta.file_type();
        let kind = if t.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&t) {
            "a FIFO"
        } else {
            "a device or socket"
        };
        format!("the token file '{path}' is {kind}, not a regular file")
    };
    let checked = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the token file '{path}': {e}"))
        .and_then(|meta| {
            if !meta.is_file() {
                return Err(not_regular(&meta));
            }
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .map_err(|e| format!("cannot read the token file '{path}': {e}"))
        })
        .and_then(|file| {
            let meta = file
                .metadata()
                .map_err(|e| format!("cannot read the token file '{path}': {e}"))?;
            if !meta.is_file() {
                return Err(not_regular(&meta));
            }
            let mut bytes = Vec::new();
            file.take(MAX_TOKEN_FILE as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read the token file '{path}': {e}"))?;
            if bytes.len() > MAX_TOKEN_FILE {
                return Err(format!(
                    "the token file '{path}' is larger than {MAX_TOKEN_FILE} bytes: it is not \
                     a token"
                ));
            }
            Ok((bytes, meta.mode(), given_by_group(&meta)))
        });
    let (bytes, mode, by_group) = match checked {
        Ok(read) => read,
        Err(message) => {
            w.error(at, message);
            return None;
        }
    };
    // Group-readable is fine when the group is how the file is given to this process alone:
    // another user's file in this process's own group (a Kubernetes Secret mounted with
    // `fsGroup` and mode 0440).
    let exposed = mode & 0o004 != 0 || (mode & 0o040 != 0 && !by_group);
    if exposed {
        let why = format!(
            "the token file '{path}' is readable by group or others (mode {:04o}): whoever can \
             read it can start and cancel warming jobs; chmod 600 it",
            mode & 0o7777
        );
        if loopback {
            log::warn!("{at}: {why}");
        } else {
            w.error(at, format!("{why} (required on a non-loopback admin.bind)"));
            return None;
        }
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        w.error(
            at,
            format!("the token (in '{path}') must be printable ASCII without spaces"),
        );
        return None;
    };
    if text.trim().is_empty() {
        w.error(at, format!("the token file '{path}' is empty"));
        return None;
    }
    admin_token(w, text.trim(), at, &format!(" (in '{path}')"))
}

/// `token` checked: it travels in an `Authorization` header, so it must be visible ASCII
/// without spaces, and it must be long enough not to be guessed ([`MIN_TOKEN`] to
/// [`MAX_TOKEN`] bytes). `source` says where it came from, for the message (which never
/// quotes the token).
fn admin_token(w: &mut Walker, token: &str, path: &str, source: &str) -> Option<Option<String>> {
    if token.is_empty() {
        w.error(path, "the token must not be empty");
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        w.error(
            path,
            format!(
                "the token{source} must be printable ASCII without spaces (it is sent in an \
                 Authorization header)"
            ),
        );
        return None;
    }
    if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len()) {
        w.error(
            path,
            format!(
                "the token{source} is {} bytes: it must be {MIN_TOKEN} to {MAX_TOKEN} bytes (a \
                 short token can be guessed)",
                token.len()
            ),
        );
        return None;
    }
    Some(Some(token.to_string()))
}

/// A listener's `routes` as far as it could be read.
pub(super) type ListenerRoutes = Option<Option<Vec<String>>>;

fn walk_listeners(
    w: &mut Walker,
    top: &Fields,
    names: &Names,
) -> (Vec<Slot<ListenerConfig>>, Vec<ListenerRoutes>) {
    let items = top_list(w, top, "listeners", "listener");
    items
        .iter()
        .enumerate()
        .map(|(i, v)| walk_listener(w, v, index("listeners", i), names))
        .unzip()
}

fn walk_listener(
    w: &mut Walker,
    v: &Value,
    path: String,
    names: &Names,
) -> (Slot<ListenerConfig>, ListenerRoutes) {
    let name_path = join(&path, "name");
    let Some(f) = w.fields(v, &path, LISTENER_KEYS) else {
        return (
            Slot {
                path,
                name: None,
                name_path,
                value: None,
            },
            None,
        );
    };
    let name = w.required(&f, "name").and_then(|v| w.name(v, &name_path));
    let bind = w
        .required(&f, "bind")
        .and_then(|v| w.address(v, &f.at("bind"), false));
    let mut size = |key: &str, min: u64, max: u64, default: usize| match f.get(key) {
        Some(v) => w.size(v, &f.at(key), min, max),
        None => Some(default),
    };
    let max_line_length = size(
        "max_line_length",
        MIN_LINE_LENGTH,
        u64::MAX,
        DEFAULT_MAX_LINE_LENGTH,
    );
    let max_value_size = size("max_value_size", 1, MAX_VALUE_SIZE, DEFAULT_MAX_VALUE_SIZE);
    let max_buffered_reply_bytes = size(
        "max_buffered_reply_bytes",
        1,
        u64::MAX,
        DEFAULT_MAX_BUFFERED_REPLY_BYTES,
    );
    let close_buffered_reply_bytes = size(
        "close_buffered_reply_bytes",
        1,
        u64::MAX,
        DEFAULT_CLOSE_BUFFERED_REPLY_BYTES,
    );
    if let (Some(soft), Some(hard)) = (max_buffered_reply_bytes, close_buffered_reply_bytes) {
        reply_limits_in_order(w, &f, soft, hard);
    }
    let mut count = |key: &str, default: usize| match f.get(key) {
        Some(v) => w
            .integer(v, &f.at(key), 1, u32::MAX as u64)
            .map(|n| n as usize),
        None => Some(default),
    };
    let max_connections = count("max_connections", DEFAULT_MAX_CONNECTIONS);
    let max_outstanding_requests =
        count("max_outstanding_requests", DEFAULT_MAX_OUTSTANDING_REQUESTS);
    let max_inflight_requests = count("max_inflight_requests", DEFAULT_MAX_INFLIGHT_REQUESTS);
    let multiget_window = count("multiget_window", DEFAULT_MULTIGET_WINDOW);
    // A zero duration turns these timeouts off.
    let mut timeout = |key: &str, default: Option<Duration>| match f.get(key) {
        Some(v) => w
            .duration(v, &f.at(key))
            .map(|d| (!d.is_zero()).then_some(d)),
        None => Some(default),
    };
    let idle_timeout = timeout("idle_timeout", None);
    let request_read_timeout = timeout("request_read_timeout", Some(DEFAULT_REQUEST_READ_TIMEOUT));
    let routes = match f.get("routes") {
        Some(v) => w
            .references(v, &f.at("routes"), "route", names.routes.as_deref())
            .map(Some),
        None => Some(None),
    };
    let listener_routes = routes.clone();
    let value = (|| {
        Some(ListenerConfig {
            name: name.clone()?,
            bind: bind?.1,
            max_connections: max_connections?,
            idle_timeout: idle_timeout?,
            request_read_timeout: request_read_timeout?,
            routes: routes?,
            max_line_length: max_line_length?,
            max_value_size: max_value_size?,
            max_outstanding_requests: max_outstanding_requests?,
            max_inflight_requests: max_inflight_requests?,
            max_buffered_reply_bytes: max_buffered_reply_bytes?,
            close_buffered_reply_bytes: close_buffered_reply_bytes?,
            multiget_window: multiget_window?,
        })
    })();
    (
        Slot {
            path,
            name,
            name_path,
            value,
        },
        listener_routes,
    )
}

/// The hard limit on a client's unwritten reply bytes (`close_buffered_reply_bytes`) must not
/// be below the soft one (`max_buffered_reply_bytes`). The error goes on the key the file sets:
/// when only the soft limit is written, it is the one that exceeds the default hard limit.
fn reply_limits_in_order(w: &mut Walker, f: &Fields, soft: usize, hard: usize) {
    if hard >= soft {
        return;
    }
    if f.get("close_buffered_reply_bytes").is_some() {
        let msg = format!("must be at least max_buffered_reply_bytes ({soft}), got {hard}");
        w.error(&f.at("close_buffered_reply_bytes"), msg);
    } else {
        let msg = format!(
            "must be at most close_buffered_reply_bytes ({hard}, its default), got {soft}; \
             raise close_buffered_reply_bytes too"
        );
        w.error(&f.at("max_buffered_reply_bytes"), msg);
    }
}

fn walk_backends(w: &mut Walker, top: &Fields) -> Vec<Slot<BackendConfig>> {
    let Some(v) = w.required(top, "backends") else {
        return Vec::new();
    };
    let Some(map) = w.map(v, "backends") else {
        return Vec::new();
    };
    if map.is_empty() {
        w.error("backends", "must define at least one backend");
    }
    let mut slots = Vec::with_capacity(map.len());
    for (key, v) in map {
        let Some(name) = key.as_str() else {
            w.expected("backends", "backend names that are strings", key);
            continue;
        };
        let path = join("backends", name);
        let name = match walker::check_name(name) {
            Ok(()) => Some(name.to_string()),
            Err(e) => {
                w.error(&path, e);
                None
            }
        };
        let value = walk_backend(w, v, &path).and_then(|mut b| {
            b.name = name.clone()?;
            Some(b)
        });
        slots.push(Slot {
            name_path: path.clone(),
            path,
            name,
            value,
        });
    }
    slots
}

fn walk_backend(w: &mut Walker, v: &Value, path: &str) -> Option<BackendConfig> {
    let f = w.fields(v, path, BACKEND_KEYS)?;
    let servers = w
        .required(&f, "servers")
        .and_then(|v| walk_servers(w, v, &f.at("servers")));
    let mut b = BackendConfig::with_defaults("", Vec::new());
    let mut ok = true;
    let mut take = |x: Option<()>| ok &= x.is_some();
    if let Some(v) = f.get("distribution") {
        let options: Vec<_> = Distribution::ALL.iter().map(|d| (d.name(), *d)).collect();
        take(
            w.choice(v, &f.at("distribution"), "distribution", &options)
                .map(|d| b.distribution = d),
        );
    }
    if let Some(v) = f.get("hash") {
        let options: Vec<_> = HashFunction::ALL.iter().map(|h| (h.name(), *h)).collect();
        take(
            w.choice(v, &f.at("hash"), "hash", &options)
                .map(|h| b.hash = h),
        );
    }
    if let Some(v) = f.get("hash_tag") {
        take(hash_tag(w, v, &f.at("hash_tag")).map(|t| b.hash_tag = Some(t)));
    }
    if let Some(v) = f.get("timeout") {
        take(
            w.positive_duration(v, &f.at("timeout"))
                .map(|d| b.timeout = d),
        );
    }
    if let Some(v) = f.get("connect_timeout") {
        take(
            w.positive_duration(v, &f.at("connect_timeout"))
                .map(|d| b.connect_timeout = d),
        );
    }
    if let Some(v) = f.get("connections") {
        let max = MAX_CONNECTIONS_PER_SERVER as u64;
        take(
            w.integer(v, &f.at("connections"), 1, max)
                .map(|n| b.connections = n as usize),
        );
    }
    if let Some(v) = f.get("max_queued_requests") {
        take(
            w.integer(v, &f.at("max_queued_requests"), 1, u32::MAX as u64)
                .map(|n| b.max_queued_requests = n as usize),
        );
    }
    if let Some(v) = f.get("resolve_interval") {
        take(
            w.positive_duration(v, &f.at("resolve_interval"))
                .map(|d| b.resolve_interval = d),
        );
    }
    if let Some(v) = f.get("health") {
        take(walk_health(w, v, &f.at("health")).map(|h| b.health = Some(h)));
    }
    if let Some(v) = f.get("writes") {
        take(w.boolean(v, &f.at("writes")).map(|x| b.writes = x));
    }
    if let Some(v) = f.get("max_value_size") {
        let at = f.at("max_value_size");
        take(
            w.size(v, &at, 1, MAX_VALUE_SIZE)
                .map(|n| b.max_value_size = n),
        );
    }
    b.servers = servers?;
    let http = b.servers.iter().filter(|s| s.origin.is_some()).count();
    if http > 0 && http < b.servers.len() {
        let msg = "a pool is all memcached servers or all HTTP origins (http://...), not both";
        w.error(&f.at("servers"), msg);
        return None;
    }
    if http == 0 {
        for key in ["writes", "max_value_size"] {
            if f.get(key).is_some() {
                let msg = "applies to pools of HTTP origins (http://...) only";
                w.error(&f.at(key), msg);
                ok = false;
            }
        }
    }
    ok.then_some(b)
}

fn hash_tag(w: &mut Walker, v: &Value, path: &str) -> Option<String> {
    let s = w.string(v, path)?;
    if s.len() == 2 && s.is_ascii() {
        Some(s.to_string())
    } else {
        let msg = format!(
            "must be exactly two ASCII characters, the opening and the closing one, \
             like \"{{}}\"; got '{s}'"
        );
        w.error(path, msg);
        None
    }
}

fn walk_servers(w: &mut Walker, v: &Value, path: &str) -> Option<Vec<ServerConfig>> {
    let items = w.list(v, path)?;
    if items.is_empty() {
        w.error(path, "must list at least one server");
        return None;
    }
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(server) = walk_server(w, item, &item_path) else {
            ok = false;
            continue;
        };
        let same = |s: &ServerConfig| {
            s.address == server.address || (s.addr.is_some() && s.addr == server.addr)
        };
        if let Some(j) = servers.iter().position(same) {
            let shown = server
                .addr
                .map_or(server.address.clone(), |a| a.to_string());
            let msg = format!("server {shown} is listed twice (also {path}[{j}])");
            w.error(&item_path, msg);
            ok = false;
        } else if let Some(j) = servers
            .iter()
            .position(|s| s.name.is_some() && s.name == server.name)
        {
            let msg = format!(
                "server name '{}' is used twice (also {path}[{j}])",
                server.name.clone().unwrap_or_default()
            );
            w.error(&join(&item_path, "name"), msg);
            ok = false;
        } else if let Some(j) = servers
            .iter()
            .position(|s| ring_key(s) == ring_key(&server))
        {
            // Two servers hashing to the same ring points would leave one without keys.
            let msg = format!(
                "server hashes to the same ketama name '{}' as {path}[{j}]; give one a `name`",
                ring_key(&server)
            );
            w.error(&item_path, msg);
            ok = false;
        }
        servers.push(server);
    }
    ok.then_some(servers)
}

/// The name a server's ketama points are hashed from (twemproxy's rule).
fn ring_key(server: &ServerConfig) -> String {
    crate::config::placement::ring_name(&server.address, server.name.as_deref())
}

fn walk_server(w: &mut Walker, v: &Value, path: &str) -> Option<ServerConfig> {
    if v.is_string() {
        let (address, addr, origin) = server_or_origin(w, v, path)?;
        return Some(ServerConfig {
            address,
            addr,
            weight: 1,
            name: None,
            origin,
        });
    }
    if !v.is_mapping() {
        w.expected(path, "\"host:port\" or a map {address, weight, name}", v);
        return None;
    }
    let f = w.fields(v, path, SERVER_KEYS)?;
    let address = w
        .required(&f, "address")
        .and_then(|v| server_or_origin(w, v, &f.at("address")));
    let weight = match f.get("weight") {
        Some(v) => w
            .integer(v, &f.at("weight"), 1, u32::MAX as u64)
            .map(|n| n as u32),
        None => Some(1),
    };
    let name = match f.get("name") {
        Some(v) => w.name(v, &f.at("name")).map(Some),
        None => Some(None),
    };
    let (address, addr, origin) = address?;
    Some(ServerConfig {
        address,
        addr,
        weight: weight?,
        name: name?,
        origin,
    })
}

/// A server's address: `host:port` (memcached), or an HTTP origin's URL
/// (`http://host[:port]/base/`, SPEC §13), whose `host:port` is returned as its address.
fn server_or_origin(
    w: &mut Walker,
    v: &Value,
    path: &str,
) -> Option<(String, Option<SocketAddr>, Option<OriginUrl>)> {
    let text = w.string(v, path)?.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("https://") {
        let msg = format!(
            "'{text}': https origins are not supported; reach the origin over http:// \
             (a TLS-terminating sidecar can carry it further)"
        );
        w.error(path, msg);
        return None;
    }
    let Some(rest) = text.get(7..).filter(|_| lower.starts_with("http://")) else {
        let (address, addr) = w.server_address(v, path)?;
        return Some((address, addr, None));
    };
    let (authority, base_path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let bad_path = base_path
        .bytes()
        .find(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#'));
    if let Some(b) = bad_path {
        let msg = format!(
            "'{text}': the base path may not hold {:?} (no query, fragment, spaces or \
             control characters: the key is appended to it)",
            char::from(b)
        );
        w.error(path, msg);
        return None;
    }
    if authority.is_empty() || authority.contains('@') {
        w.error(
            path,
            format!("'{text}': expected http://host[:port]/base/path/"),
        );
        return None;
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    }) && !authority.ends_with(']');
    let address = match has_port {
        true => authority.to_string(),
        false => format!("{authority}:80"),
    };
    let (address, addr) = w.server_address(&Value::String(address), path)?;
    Some((
        address,
        addr,
        Some(OriginUrl {
            url: text.clone(),
            host: authority.to_string(),
            base_path: base_path.to_string(),
        }),
    ))
}

fn walk_health(w: &mut Walker, v: &Value, path: &str) -> Option<HealthConfig> {
    let f = w.fields(v, path, HEALTH_KEYS)?;
    let mut h = HealthConfig::default();
    let mut ok = true;
    let mut take = |x: Option<()>| ok &= x.is_some();
    if let Some(v) = f.get("interval") {
        take(
            w.positive_duration(v, &f.at("interval"))
                .map(|d| h.interval = d),
        );
    }
    if let Some(v) = f.get("timeout") {
        take(
            w.positive_duration(v, &f.at("timeout"))
                .map(|d| h.timeout = d),
        );
    }
    if let Some(v) = f.get("failure_limit") {
        take(
            w.integer(v, &f.at("failure_limit"), 1, u32::MAX as u64)
                .map(|n| h.failure_limit = n as u32),
        );
    }
    if let Some(v) = f.get("retry_after") {
        take(
            w.positive_duration(v, &f.at("retry_after"))
                .map(|d| h.retry_after = d),
        );
    }
    if let Some(v) = f.get("eject") {
        take(w.boolean(v, &f.at("eject")).map(|b| h.eject = b));
    }
    ok.then_some(h)
}
