//! Running a twemproxy (nutcracker) configuration as it is: `bifrost --twemproxy nutcracker.yml`.
//!
//! The nutcracker file is *translated* into a Bifröst document (a [`yaml_serde::Value`] in our
//! schema), printed as YAML, and that text goes through the ordinary loader
//! ([`Config::parse`]). So what `--print-config` shows is, by construction, exactly what runs,
//! and every check of a Bifröst config applies to a translated one too.
//!
//! Each pool becomes:
//!
//! - a listener named after the pool on its `listen` address, using only the pool's route;
//! - a backend (pool) of the same name holding its servers with their weights and names, its
//!   `hash`, `hash_tag`, `distribution`, `timeout`, `server_connections` and, with
//!   `auto_eject_hosts: true`, a `health:` block that ejects;
//! - a catch-all `consistent_hash` route of the same name to that backend.
//!
//! Problems are reported against the nutcracker file and the pool's key (`alpha.hash`), all at
//! once. An error the loader finds in the translated document (a bad address, a duplicate
//! server, a value out of Bifröst's range) is mapped back to the nutcracker key it came from.
//! `docs/twemproxy.md` has the whole mapping, what is warned about and what is refused.

use std::path::Path;
use std::time::Duration;

use yaml_serde::{Mapping, Value};

use super::{Config, ConfigError, ConfigErrors, Distribution, Format, HashFunction};
use crate::config::placement::ring_name;

/// The keys of a nutcracker pool that Bifröst maps to its own.
const MAPPED_KEYS: &[&str] = &[
    "listen",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "client_connections",
    "server_connections",
    "auto_eject_hosts",
    "server_retry_timeout",
    "server_failure_limit",
    "servers",
    "redis",
];

/// The keys of a nutcracker pool that Bifröst has no use for, each with why it is ignored.
const IGNORED_KEYS: &[(&str, &str)] = &[
    (
        "backlog",
        "Bifröst listens with a backlog of 1024 per worker (capped by the kernel's \
         net.core.somaxconn)",
    ),
    (
        "preconnect",
        "Bifröst connects to a server when the first request for it arrives \
         (its health probes, when `auto_eject_hosts` is on, connect at start)",
    ),
    (
        "tcpkeepalive",
        "Bifröst does not set SO_KEEPALIVE on server connections; with `auto_eject_hosts` \
         its health probes notice a server that went away",
    ),
    ("redis_auth", "Bifröst speaks the memcached protocol only"),
    ("redis_db", "Bifröst speaks the memcached protocol only"),
    (
        "reuseport",
        "Bifröst always listens with SO_REUSEPORT, one socket per worker",
    ),
];

/// twemproxy's `server_failure_limit` when the file gives none.
const DEFAULT_FAILURE_LIMIT: u64 = 2;
/// twemproxy's `server_retry_timeout` (ms) when the file gives none.
const DEFAULT_RETRY_MS: u64 = 30_000;
/// The shortest `retry_after` a translation sets: twemproxy accepts 0 (retry on the next
/// request), but Bifröst re-probes a down server every `retry_after`, and a probe every
/// millisecond of a dead server would be a connect storm.
const MIN_RETRY_MS: u64 = 100;
/// The probe interval of a translated `health:` block. twemproxy has no probes (it notices a
/// failure through a request); one probe a second finds a dead server without loading it.
const PROBE_INTERVAL_MS: u64 = 1_000;
/// The longest probe deadline of a translated `health:` block (the pool's `timeout` when
/// shorter): a memcached that takes longer than this to answer `version` is not serving.
const MAX_PROBE_TIMEOUT_MS: u64 = 1_000;

/// A nutcracker file translated into a Bifröst configuration.
#[derive(Clone, Debug)]
pub struct Translation {
    /// The configuration that runs: the result of loading [`Translation::yaml`].
    pub config: Config,
    /// The equivalent Bifröst configuration, as YAML (what `--print-config` prints).
    pub yaml: String,
    /// One message per nutcracker key Bifröst ignores or treats differently, each naming the
    /// file, the pool and the key (`nutcracker.yml: alpha.preconnect: ...`).
    pub warnings: Vec<String>,
}

/// Why a nutcracker file cannot run, and the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// Every error, each naming the nutcracker file and the key (`alpha.redis`).
    pub errors: ConfigErrors,
    /// The warnings found before the errors stopped the translation.
    pub warnings: Vec<String>,
}

/// Reads the nutcracker file at `path` and translates it (see [`translate`]).
pub fn load(path: &Path) -> Result<Translation, Rejection> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => translate(&text, &file),
        Err(e) => Err(Rejection {
            errors: ConfigErrors::single(&file, "", format!("cannot read the file: {e}")),
            warnings: Vec::new(),
        }),
    }
}

/// Translates the text of a nutcracker file into a Bifröst configuration and loads it;
/// `file` is only used in messages.
pub fn translate(text: &str, file: &str) -> Result<Translation, Rejection> {
    let mut t = Translator {
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
        origins: Vec::new(),
    };
    let document = match yaml_serde::from_str::<Value>(text) {
        Ok(root) => t.document(&root),
        Err(e) => {
            t.error("", format!("invalid YAML: {e}"));
            None
        }
    };
    // A document is built even when parts of the file are wrong (those parts left out), so that
    // the loader's errors in the other parts are reported at the same time.
    let Some(document) = document else {
        return Err(t.rejection());
    };
    let body = match yaml_serde::to_string(&document) {
        Ok(body) => body,
        Err(e) => {
            t.error(
                "",
                format!("internal error: cannot print the translation: {e}"),
            );
            return Err(t.rejection());
        }
    };
    let yaml = format!(
        "# Bifröst configuration translated from the twemproxy configuration {file}\n\
         # (bifrost --twemproxy {file} --print-config); see docs/twemproxy.md.\n{body}"
    );
    match Config::parse(&yaml, file, Format::Yaml) {
        Ok(config) if t.errors.is_empty() => Ok(Translation {
            config,
            yaml,
            warnings: t.warnings,
        }),
        Ok(_) => Err(t.rejection()),
        Err(errors) => {
            let translation_errors = t.errors.len();
            for e in errors.errors {
                let mapped = t.origin_of(&e);
                // A part the translation left out (already reported) is missing to the loader;
                // and an error of the document as a whole (no pool left) is one of its effects.
                let reported = match &mapped {
                    Some((path, _)) => t
                        .errors
                        .iter()
                        .take(translation_errors)
                        .any(|r| related(&r.path, path)),
                    None => translation_errors > 0,
                };
                let (path, message) = mapped.unwrap_or((e.path, e.message));
                if !reported {
                    t.errors.push(ConfigError {
                        file: file.to_string(),
                        path,
                        message,
                    });
                }
            }
            Err(t.rejection())
        }
    }
}

/// True when one path is the other or contains it (`a.servers` and `a.servers[1]`).
fn related(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    within(a, b) || within(b, a)
}

/// The document of the Bifröst config file at `path` (YAML, or JSON by its extension) printed
/// as YAML: what `--print-config --config FILE` shows. The caller has loaded the file already;
/// the result loads back to the same [`Config`] (checked here, so that a printed config can
/// never silently differ from the one that was validated).
pub fn document_as_yaml(path: &Path) -> Result<String, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |message: String| ConfigErrors::single(&file, "", message);
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let format = Format::from_path(path);
    let document: Value = match format {
        Format::Yaml => yaml_serde::from_str(&text).map_err(|e| format!("invalid YAML: {e}")),
        Format::Json => serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}")),
    }
    .map_err(fail)?;
    let yaml = yaml_serde::to_string(&document)
        .map_err(|e| fail(format!("cannot print the document as YAML: {e}")))?;
    let original = Config::parse(&text, &file, format)?;
    let printed = Config::parse(&yaml, &file, Format::Yaml)?;
    if printed != original {
        return Err(fail(
            "internal error: the document printed as YAML loads to a different configuration"
                .to_string(),
        ));
    }
    Ok(yaml)
}

/// One `servers:` line of a nutcracker pool: `host:port:weight [name]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLine {
    /// `host:port` exactly as written (twemproxy hashes this, or the host alone on port 11211,
    /// for a server without a name).
    pub written: String,
    /// The address in Bifröst's form: as written, except that a bare IPv6 host (which
    /// twemproxy reads by splitting at the last colons: `::1:11212:1`) is put in brackets.
    pub address: String,
    /// The relative weight (at least 1, as twemproxy requires).
    pub weight: u32,
    /// The name given after the address, if any.
    pub name: Option<String>,
    /// The name Bifröst's ring must hash for this server to sit where twemproxy puts it: the
    /// given name; else, for a bracketed IPv6 address only, twemproxy's ketama name of the bare
    /// form (for every other address Bifröst derives the same name from the address itself).
    pub ring_name: Option<String>,
}

/// Parses a nutcracker server line, `host:port:weight [name]`, the way twemproxy does: from
/// the end, so `::1:11212:1` is host `::1`, port 11212, weight 1. Unix socket servers
/// (`/path:weight`) are refused: Bifröst reaches memcached over TCP only.
pub fn parse_server_line(line: &str) -> Result<ServerLine, String> {
    const FORM: &str = "expected twemproxy's `host:port:weight [name]`, like 127.0.0.1:11211:1 \
                        or 10.0.0.2:11211:2 cache-b";
    let line = line.trim();
    if line.starts_with('/') {
        return Err(format!(
            "'{line}' is a unix socket server: Bifröst connects to memcached over TCP only; \
             run the server on a host:port"
        ));
    }
    let mut tokens = line.split_whitespace();
    let spec = tokens.next().unwrap_or("");
    let name = tokens.next().map(str::to_string);
    if tokens.next().is_some() {
        return Err(format!("'{line}': a server name has no spaces; {FORM}"));
    }
    let Some((written, weight)) = spec.rsplit_once(':') else {
        return Err(format!("'{line}': {FORM}"));
    };
    let Some((host, port)) = written.rsplit_once(':') else {
        return Err(format!("'{line}' has no weight; {FORM}"));
    };
    if host.is_empty() {
        return Err(format!("'{line}' has no host; {FORM}"));
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let port_ok = digits(port) && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if !port_ok {
        return Err(format!(
            "'{line}': port '{port}' is not a number from 1 to 65535; {FORM}"
        ));
    }
    let weight = match weight.parse::<u32>() {
        Ok(w) if digits(weight) && w > 0 => w,
        _ => {
            return Err(format!(
                "'{line}': weight '{weight}' is not a whole number of at least 1; {FORM}"
            ))
        }
    };
    let bare_ipv6 = host.contains(':') && !host.starts_with('[');
    let (address, ring) = if bare_ipv6 {
        (
            format!("[{host}]:{port}"),
            Some(name.clone().unwrap_or_else(|| ring_name(written, None))),
        )
    } else {
        (written.to_string(), name.clone())
    };
    Ok(ServerLine {
        written: written.to_string(),
        address,
        weight,
        name,
        ring_name: ring,
    })
}

/// twemproxy's hash name `name` as ours; the error lists every supported name.
pub fn hash_function(name: &str) -> Result<HashFunction, String> {
    HashFunction::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = HashFunction::ALL.iter().map(|h| h.name()).collect();
        format!("unknown hash '{name}' (supported: {})", names.join(", "))
    })
}

/// twemproxy's distribution name `name` as ours; the error lists every supported name.
pub fn distribution(name: &str) -> Result<Distribution, String> {
    Distribution::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Distribution::ALL.iter().map(|d| d.name()).collect();
        format!(
            "unknown distribution '{name}' (supported: {})",
            names.join(", ")
        )
    })
}

/// The translation's state: what went wrong, what to warn about, and where each part of the
/// Bifröst document came from in the nutcracker file.
struct Translator<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// (path in the Bifröst document, nutcracker path it was translated from).
    origins: Vec<(String, String)>,
}

/// One pool's three parts of the Bifröst document.
struct PoolParts {
    listener: Mapping,
    backend: Mapping,
    route: Mapping,
}

impl Translator<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: &str, message: impl std::fmt::Display) {
        self.warnings
            .push(format!("{}: {path}: {message}", self.file));
    }

    fn origin(&mut self, bifrost: String, nutcracker: String) {
        self.origins.push((bifrost, nutcracker));
    }

    fn rejection(self) -> Rejection {
        Rejection {
            errors: ConfigErrors {
                errors: self.errors,
            },
            warnings: self.warnings,
        }
    }

    /// The nutcracker path and message for an error the loader found in the translation: the
    /// origin of the longest recorded prefix of its path, and the Bifröst path in the message;
    /// `None` for a path no part of the file was translated to.
    fn origin_of(&self, e: &ConfigError) -> Option<(String, String)> {
        let covers = |prefix: &str| {
            e.path == prefix
                || e.path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        let best = self
            .origins
            .iter()
            .filter(|(bifrost, _)| covers(bifrost))
            .max_by_key(|(bifrost, _)| bifrost.len());
        best.map(|(_, nutcracker)| {
            (
                nutcracker.clone(),
                format!(
                    "{} (in the translated Bifröst configuration, at {})",
                    e.message, e.path
                ),
            )
        })
    }

    /// The whole Bifröst document, or `None` when the file is not a map of pools.
    fn document(&mut self, root: &Value) -> Option<Value> {
        let Some(pools) = root.as_mapping() else {
            let what = if root.is_null() { "empty" } else { "not a map" };
            self.error(
                "",
                format!("the file is {what}; expected a map of twemproxy pools (name: {{listen, servers, ...}})"),
            );
            return None;
        };
        if pools.is_empty() {
            self.error("", "the file has no pools");
            return None;
        }
        let (mut listeners, mut backends, mut routes) = (Vec::new(), Mapping::new(), Vec::new());
        for (key, pool) in pools {
            let Some(name) = key.as_str() else {
                self.error("", format!("pool names must be strings, got {key:?}"));
                continue;
            };
            let index = listeners.len();
            if let Some(parts) = self.pool(name, pool, index) {
                listeners.push(Value::Mapping(parts.listener));
                backends.insert(name.into(), Value::Mapping(parts.backend));
                routes.push(Value::Mapping(parts.route));
            }
        }
        let mut document = Mapping::new();
        document.insert("listeners".into(), Value::Sequence(listeners));
        document.insert("backends".into(), Value::Mapping(backends));
        document.insert("routes".into(), Value::Sequence(routes));
        Some(Value::Mapping(document))
    }

    /// One pool, the `index`-th translated (its listener's and route's index in the lists).
    fn pool(&mut self, name: &str, pool: &Value, index: usize) -> Option<PoolParts> {
        let Some(fields) = pool.as_mapping() else {
            self.error(
                name,
                "expected a map of twemproxy pool settings (listen, servers, ...)",
            );
            return None;
        };
        let at = |key: &str| format!("{name}.{key}");
        for key in fields.keys() {
            let Some(key) = key.as_str() else {
                self.error(name, format!("keys must be strings, got {key:?}"));
                continue;
            };
            if MAPPED_KEYS.contains(&key) {
                continue;
            }
            if let Some((_, why)) = IGNORED_KEYS.iter().find(|(k, _)| *k == key) {
                self.warn(&at(key), format!("ignored: {why}"));
                continue;
            }
            let known: Vec<&str> = MAPPED_KEYS
                .iter()
                .copied()
                .chain(IGNORED_KEYS.iter().map(|(k, _)| *k))
                .collect();
            self.error(
                &at(key),
                format!(
                    "unknown twemproxy key '{key}' (known: {})",
                    known.join(", ")
                ),
            );
        }
        let get = |key: &str| fields.get(key).filter(|v| !v.is_null());

        // `redis: false` only says what Bifröst does anyway: no warning.
        if let Some(v) = get("redis") {
            if self.boolean(v, &at("redis")) == Some(true) {
                self.error(
                    &at("redis"),
                    "a redis pool cannot run: Bifröst speaks the memcached protocol only \
                     (keep this pool on twemproxy, or remove it from the file)",
                );
            }
        }

        // --- listener ---
        let listener_path = format!("listeners[{index}]");
        let mut listener = Mapping::new();
        listener.insert("name".into(), name.into());
        self.origin(listener_path.clone(), name.to_string());
        match get("listen") {
            Some(v) => {
                if let Some(bind) = self.listen(v, &at("listen")) {
                    listener.insert("bind".into(), bind.into());
                }
            }
            None => self.error(&at("listen"), "required key is missing"),
        }
        self.origin(format!("{listener_path}.bind"), at("listen"));
        if let Some(v) = get("client_connections") {
            match self.number(v, &at("client_connections")) {
                // 0 is twemproxy's "unlimited": the listener keeps Bifröst's default.
                Some(0) | None => {}
                Some(n) => {
                    listener.insert("max_connections".into(), n.into());
                    self.origin(
                        format!("{listener_path}.max_connections"),
                        at("client_connections"),
                    );
                    self.warn(
                        &at("client_connections"),
                        format!(
                            "becomes the listener's max_connections: {n}, which Bifröst \
                             enforces; twemproxy 0.5 ignores this key and serves any number \
                             of clients (remove it to keep that)"
                        ),
                    );
                }
            }
        }
        listener.insert(
            "routes".into(),
            Value::Sequence(vec![Value::String(name.to_string())]),
        );

        // --- backend ---
        let backend_path = format!("backends.{name}");
        self.origin(backend_path.clone(), name.to_string());
        let mut backend = Mapping::new();
        let dist = match get("distribution") {
            Some(v) => self.string(v, &at("distribution")).and_then(|s| {
                distribution(s)
                    .map_err(|e| self.error(&at("distribution"), e))
                    .ok()
            }),
            None => Some(Distribution::Ketama),
        };
        if let Some(d) = dist {
            backend.insert("distribution".into(), d.name().into());
        }
        self.origin(format!("{backend_path}.distribution"), at("distribution"));
        let hash = match get("hash") {
            Some(v) => self.string(v, &at("hash")).and_then(|s| {
                hash_function(s)
                    .map_err(|e| self.error(&at("hash"), e))
                    .ok()
            }),
            None => Some(HashFunction::Fnv1a_64),
        };
        if let Some(h) = hash {
            backend.insert("hash".into(), h.name().into());
        }
        self.origin(format!("{backend_path}.hash"), at("hash"));
        if let Some(v) = get("hash_tag") {
            if let Some(tag) = self.string(v, &at("hash_tag")) {
                backend.insert("hash_tag".into(), tag.into());
            }
            self.origin(format!("{backend_path}.hash_tag"), at("hash_tag"));
        }
        let timeout_ms = match get("timeout") {
            Some(v) => self.number(v, &at("timeout")),
            None => Some(0),
        };
        match timeout_ms {
            // twemproxy's default (and 0): no deadline at all, which Bifröst does not have.
            Some(0) => self.warn(
                &at("timeout"),
                format!(
                    "not set: twemproxy waits for a server's reply forever, Bifröst gives \
                     each request its default deadline of {}; set `timeout:` (ms) to choose",
                    human(super::DEFAULT_BACKEND_TIMEOUT)
                ),
            ),
            Some(ms) => {
                backend.insert("timeout".into(), millis(ms).into());
                self.origin(format!("{backend_path}.timeout"), at("timeout"));
            }
            None => {}
        }
        if let Some(v) = get("server_connections") {
            if let Some(n) = self.number(v, &at("server_connections")) {
                backend.insert("connections".into(), n.into());
                self.origin(
                    format!("{backend_path}.connections"),
                    at("server_connections"),
                );
            }
        }
        self.health(&get, name, timeout_ms, &backend_path, &mut backend);
        match get("servers") {
            Some(v) => {
                if let Some(servers) = self.servers(v, &at("servers"), &backend_path) {
                    backend.insert("servers".into(), Value::Sequence(servers));
                }
            }
            None => self.error(&at("servers"), "required key is missing"),
        }
        self.origin(format!("{backend_path}.servers"), at("servers"));

        // --- route ---
        self.origin(format!("routes[{index}]"), name.to_string());
        let mut route = Mapping::new();
        route.insert("name".into(), name.into());
        route.insert("match".into(), "*".into());
        route.insert("strategy".into(), "consistent_hash".into());
        route.insert("backend".into(), name.into());

        Some(PoolParts {
            listener,
            backend,
            route,
        })
    }

    /// `auto_eject_hosts`, `server_failure_limit` and `server_retry_timeout` as a `health:`
    /// block. Without `auto_eject_hosts: true` twemproxy never takes a server out (a request to
    /// a dead server fails, every time), which is Bifröst without a `health:` block; the other
    /// two keys have no effect then, in twemproxy too.
    fn health<'v>(
        &mut self,
        get: &dyn Fn(&str) -> Option<&'v Value>,
        name: &str,
        timeout_ms: Option<u64>,
        backend_path: &str,
        backend: &mut Mapping,
    ) {
        let at = |key: &str| format!("{name}.{key}");
        let eject = match get("auto_eject_hosts") {
            Some(v) => self.boolean(v, &at("auto_eject_hosts")),
            None => Some(false),
        };
        let limit = get("server_failure_limit").map(|v| (v, at("server_failure_limit")));
        let retry = get("server_retry_timeout").map(|v| (v, at("server_retry_timeout")));
        let limit = limit.map(|(v, path)| (self.number(v, &path), path));
        let retry = retry.map(|(v, path)| (self.number(v, &path), path));
        if eject != Some(true) {
            for (_, path) in limit.iter().chain(retry.iter()) {
                if eject == Some(false) {
                    self.warn(
                        path,
                        "ignored without `auto_eject_hosts: true` (as in twemproxy): no server \
                         is ever taken out of the pool",
                    );
                }
            }
            return;
        }
        let health_path = format!("{backend_path}.health");
        self.origin(health_path.clone(), at("auto_eject_hosts"));
        // twemproxy ejects at the first failure for a limit of 0 or 1.
        let failure_limit = match &limit {
            Some((Some(n), path)) => {
                self.origin(format!("{health_path}.failure_limit"), path.clone());
                (*n).max(1)
            }
            Some((None, _)) => return,
            None => DEFAULT_FAILURE_LIMIT,
        };
        let retry_ms = match &retry {
            Some((Some(ms), path)) => {
                self.origin(format!("{health_path}.retry_after"), path.clone());
                if *ms < MIN_RETRY_MS {
                    self.warn(
                        path,
                        format!(
                            "{ms} ms becomes retry_after: {MIN_RETRY_MS}ms: Bifröst re-probes \
                             an ejected server every retry_after, and probing a dead server \
                             more often is a connect storm"
                        ),
                    );
                }
                (*ms).max(MIN_RETRY_MS)
            }
            Some((None, _)) => return,
            None => DEFAULT_RETRY_MS,
        };
        let probe_timeout_ms = match timeout_ms {
            Some(ms) if ms > 0 => ms.min(MAX_PROBE_TIMEOUT_MS),
            _ => MAX_PROBE_TIMEOUT_MS,
        };
        let mut health = Mapping::new();
        health.insert("interval".into(), millis(PROBE_INTERVAL_MS).into());
        health.insert("timeout".into(), millis(probe_timeout_ms).into());
        health.insert("failure_limit".into(), failure_limit.into());
        health.insert("retry_after".into(), millis(retry_ms).into());
        health.insert("eject".into(), true.into());
        backend.insert("health".into(), Value::Mapping(health));
    }

    /// `listen:` as a Bifröst `bind`: `host:port`, a bare IPv6 host put in brackets.
    fn listen(&mut self, v: &Value, path: &str) -> Option<String> {
        let text = self.string(v, path)?.trim();
        if text.starts_with('/') {
            self.error(
                path,
                format!(
                    "'{text}' is a unix socket: Bifröst listens on TCP only; \
                     give a host:port (and point the clients at it)"
                ),
            );
            return None;
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            self.error(path, format!("'{text}': expected host:port"));
            return None;
        };
        if host.contains(':') && !host.starts_with('[') {
            return Some(format!("[{host}]:{port}"));
        }
        Some(text.to_string())
    }

    /// `servers:` as Bifröst server entries; errors at `path[i]`.
    fn servers(&mut self, v: &Value, path: &str, backend_path: &str) -> Option<Vec<Value>> {
        let Some(items) = v.as_sequence() else {
            self.error(path, "expected a list of `host:port:weight [name]` lines");
            return None;
        };
        if items.is_empty() {
            self.error(path, "must list at least one server");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            // Recorded at the entry's position in the translation: a broken line is left out.
            let origin = (
                format!("{backend_path}.servers[{}]", out.len()),
                item_path.clone(),
            );
            let Some(line) = self.string(item, &item_path) else {
                continue;
            };
            let parsed = parse_server_line(line);
            if parsed.is_ok() {
                self.origin(origin.0, origin.1);
            }
            match parsed {
                Ok(server) if server.weight == 1 && server.ring_name.is_none() => {
                    out.push(Value::String(server.address));
                }
                Ok(server) => {
                    let mut entry = Mapping::new();
                    entry.insert("address".into(), server.address.into());
                    entry.insert("weight".into(), server.weight.into());
                    if let Some(name) = server.ring_name {
                        entry.insert("name".into(), name.into());
                    }
                    out.push(Value::Mapping(entry));
                }
                Err(e) => self.error(&item_path, e),
            }
        }
        Some(out)
    }

    fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        let s = v.as_str();
        if s.is_none() {
            self.error(path, format!("expected a string, got {v:?}"));
        }
        s
    }

    /// A twemproxy number: a non-negative whole number, written bare or quoted.
    fn number(&mut self, v: &Value, path: &str) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        };
        if n.is_none() {
            self.error(path, format!("expected a whole number, got {v:?}"));
        }
        n
    }

    /// A twemproxy boolean: `true` or `false`, written bare or quoted.
    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        let b = match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            _ => None,
        };
        if b.is_none() {
            self.error(path, format!("expected true or false, got {v:?}"));
        }
        b
    }
}

/// twemproxy's milliseconds as a Bifröst duration: whole seconds as `2s`, else `250ms`.
fn millis(ms: u64) -> String {
    if ms > 0 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A duration as a config file writes it (`1s`, `250ms`).
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthConfig, KeyMatch, Strategy};

    fn ok(text: &str) -> Translation {
        match translate(text, "nc.yml") {
            Ok(t) => t,
            Err(r) => panic!("translation failed:\n{}", r.errors),
        }
    }

    fn rejected(text: &str) -> Rejection {
        match translate(text, "nc.yml") {
            Ok(t) => panic!("translation succeeded:\n{}", t.yaml),
            Err(r) => r,
        }
    }

    fn line(text: &str) -> ServerLine {
        parse_server_line(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn server_lines_with_weights_and_names() {
        let s = line("127.0.0.1:11212:3");
        assert_eq!(s.written, "127.0.0.1:11212");
        assert_eq!(s.address, "127.0.0.1:11212");
        assert_eq!(
            (s.weight, s.name.as_deref(), s.ring_name.as_deref()),
            (3, None, None)
        );
        let s = line("  cache-a.example:11211:1 cache-a ");
        assert_eq!(s.address, "cache-a.example:11211");
        assert_eq!(s.name.as_deref(), Some("cache-a"));
        assert_eq!(s.ring_name.as_deref(), Some("cache-a"));
        // The port is kept as written: twemproxy hashes it that way.
        assert_eq!(line("10.0.0.1:011212:1").address, "10.0.0.1:011212");
    }

    #[test]
    fn ipv6_server_lines_split_from_the_end_and_keep_twemproxys_ring_name() {
        let s = line("::1:11212:2");
        assert_eq!(s.address, "[::1]:11212");
        assert_eq!(s.weight, 2);
        assert_eq!(s.ring_name.as_deref(), Some("::1:11212"));
        // On 11211 twemproxy hashes the host alone.
        assert_eq!(
            line("fe80::1:11211:1").ring_name.as_deref(),
            Some("fe80::1")
        );
        assert_eq!(line("::1:11212:1 six").ring_name.as_deref(), Some("six"));
        // A bracketed address is taken as written.
        let s = line("[::1]:11213:1");
        assert_eq!((s.address.as_str(), s.ring_name), ("[::1]:11213", None));
    }

    #[test]
    fn bad_server_lines_say_what_is_wrong() {
        for (text, want) in [
            ("127.0.0.1:11211", "no weight"),
            ("127.0.0.1:11211:0", "weight '0'"),
            ("127.0.0.1:11211:x", "weight 'x'"),
            ("127.0.0.1:99999:1", "port '99999'"),
            ("127.0.0.1:0:1", "port '0'"),
            (":11211:1", "no host"),
            ("a:1:1 two names", "no spaces"),
            ("/var/run/memcached.sock:1", "unix socket"),
            ("", "host:port:weight"),
        ] {
            match parse_server_line(text) {
                Ok(s) => panic!("{text:?} parsed as {s:?}"),
                Err(e) => assert!(e.contains(want), "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn every_twemproxy_hash_and_distribution_name_maps() {
        for name in [
            "one_at_a_time",
            "md5",
            "crc16",
            "crc32",
            "crc32a",
            "fnv1_64",
            "fnv1a_64",
            "fnv1_32",
            "fnv1a_32",
            "hsieh",
            "murmur",
            "jenkins",
        ] {
            assert_eq!(hash_function(name).map(HashFunction::name), Ok(name));
        }
        for name in ["ketama", "modula", "random"] {
            assert_eq!(distribution(name).map(Distribution::name), Ok(name));
        }
        let e = hash_function("sha1").err().unwrap_or_default();
        assert!(
            e.contains("'sha1'") && e.contains("fnv1a_64, fnv1_32"),
            "{e}"
        );
        let e = distribution("vnode").err().unwrap_or_default();
        assert!(e.contains("ketama, modula, random"), "{e}");
    }

    const TWO_POOLS: &str = "\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  hash_tag: \"{}\"
  distribution: ketama
  timeout: 400
  server_connections: 2
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:11212:1
   - 127.0.0.1:11213:2 cache-b
   - ::1:11214:1
beta:
  listen: 127.0.0.1:22122
  hash: murmur
  distribution: modula
  timeout: 3000
  client_connections: 0
  servers:
   - 127.0.0.1:11215:1
   - 127.0.0.1:11216:1
";

    #[test]
    fn pools_become_listeners_backends_and_routes() {
        let t = ok(TWO_POOLS);
        let c = &t.config;
        let names = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            c.listeners
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>(),
            ["alpha", "beta"]
        );
        let (Some(a), Some(b)) = (c.listeners.first(), c.listeners.get(1)) else {
            panic!("two listeners");
        };
        assert_eq!(a.bind.to_string(), "127.0.0.1:22121");
        assert_eq!(a.routes, Some(names(vec!["alpha"])));
        assert_eq!(a.max_connections, super::super::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(b.routes, Some(names(vec!["beta"])));
        let Some((_, alpha)) = c.backend("alpha") else {
            panic!("backend alpha");
        };
        assert_eq!(alpha.distribution, Distribution::Ketama);
        assert_eq!(alpha.hash, HashFunction::Fnv1a_64);
        assert_eq!(alpha.hash_tag.as_deref(), Some("{}"));
        assert_eq!(alpha.timeout, Duration::from_millis(400));
        assert_eq!(alpha.connections, 2);
        assert_eq!(
            alpha.health,
            Some(HealthConfig {
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(400),
                failure_limit: 1,
                retry_after: Duration::from_secs(2),
                eject: true,
            })
        );
        let servers: Vec<(&str, u32, Option<&str>)> = alpha
            .servers
            .iter()
            .map(|s| (s.address.as_str(), s.weight, s.name.as_deref()))
            .collect();
        assert_eq!(
            servers,
            [
                ("127.0.0.1:11212", 1, None),
                ("127.0.0.1:11213", 2, Some("cache-b")),
                ("[::1]:11214", 1, Some("::1:11214")),
            ]
        );
        let Some((_, beta)) = c.backend("beta") else {
            panic!("backend beta");
        };
        assert_eq!(
            (beta.distribution, beta.hash),
            (Distribution::Modula, HashFunction::Murmur)
        );
        assert_eq!(beta.health, None, "no auto_eject_hosts: never ejects");
        for (route, pool) in c.routes.iter().zip(["alpha", "beta"]) {
            assert_eq!(route.name, pool);
            assert_eq!(route.matcher, KeyMatch::Glob("*".into()));
            assert_eq!(
                route.strategy,
                Strategy::ConsistentHash {
                    backend: pool.into()
                }
            );
        }
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        // The printed YAML is what runs.
        let reloaded = Config::parse(&t.yaml, "printed.yaml", Format::Yaml);
        assert_eq!(reloaded.ok().as_ref(), Some(c));
    }

    #[test]
    fn defaults_are_twemproxys() {
        let t = ok(
            "p:\n  listen: 127.0.0.1:22121\n  auto_eject_hosts: true\n  \
                    servers: [127.0.0.1:11212:1]\n",
        );
        let Some((_, p)) = t.config.backend("p") else {
            panic!("backend p");
        };
        assert_eq!(
            (p.distribution, p.hash),
            (Distribution::Ketama, HashFunction::Fnv1a_64)
        );
        let Some(h) = &p.health else { panic!("health") };
        assert_eq!(
            (h.failure_limit, h.retry_after),
            (2, Duration::from_secs(30))
        );
        assert_eq!(h.timeout, Duration::from_secs(1));
        // No timeout in twemproxy means none at all: said once.
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(t
            .warnings
            .iter()
            .any(|w| w.contains("nc.yml: p.timeout: not set")));
    }

    #[test]
    fn keys_without_use_warn_once_each_naming_pool_and_key() {
        let t = ok(
            "p:\n  listen: 127.0.0.1:22121\n  timeout: 100\n  preconnect: true\n  \
                    backlog: 1024\n  tcpkeepalive: true\n  redis: false\n  \
                    client_connections: 50\n  server_failure_limit: 3\n  \
                    servers: [127.0.0.1:11212:1]\n",
        );
        let w = &t.warnings;
        for key in [
            "p.preconnect: ignored",
            "p.backlog: ignored",
            "p.tcpkeepalive: ignored",
            "p.client_connections: becomes the listener's max_connections: 50",
            "p.server_failure_limit: ignored without `auto_eject_hosts: true`",
        ] {
            assert_eq!(
                w.iter().filter(|m| m.contains(key)).count(),
                1,
                "{key} in {w:#?}"
            );
        }
        assert_eq!(w.len(), 5, "{w:#?}");
        assert!(w.iter().all(|m| m.starts_with("nc.yml: ")), "{w:#?}");
        assert_eq!(
            t.config.listeners.first().map(|l| l.max_connections),
            Some(50)
        );
    }

    #[test]
    fn refusals_name_the_file_pool_and_key() {
        let r = rejected(
            "r:\n  listen: 127.0.0.1:22121\n  redis: true\n  preconnect: true\n  \
             servers: [127.0.0.1:6379:1]\n\
             u:\n  listen: /var/run/nutcracker.sock 0666\n  servers: [127.0.0.1:11212:1]\n\
             h:\n  listen: 127.0.0.1:22123\n  hash: sha1\n  distribution: vnode\n  \
             servers: [127.0.0.1:11212]\n  colour: blue\n",
        );
        let all = r.errors.to_string();
        for want in [
            "nc.yml: r.redis: a redis pool cannot run",
            "nc.yml: u.listen: '/var/run/nutcracker.sock 0666' is a unix socket",
            "nc.yml: h.hash: unknown hash 'sha1' (supported: one_at_a_time, md5",
            "nc.yml: h.distribution: unknown distribution 'vnode'",
            "nc.yml: h.servers[0]: '127.0.0.1:11212' has no weight",
            "nc.yml: h.colour: unknown twemproxy key 'colour'",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
        assert_eq!(r.errors.len(), 6, "{all}");
        assert!(r.warnings.iter().any(|w| w.contains("r.preconnect")));
    }

    #[test]
    fn loader_errors_are_mapped_back_to_the_nutcracker_key() {
        let r = rejected(
            "a:\n  listen: 127.0.0.1:22121\n  timeout: 100\n  server_connections: 500\n  \
             servers:\n   - 127.0.0.1:11212:1 same\n   - 127.0.0.1:11213:1 same\n\
             b:\n  listen: 127.0.0.1:22121\n  timeout: 100\n  hash_tag: \"{\"\n  \
             servers: [127.0.0.1:11214:1]\n",
        );
        let all = r.errors.to_string();
        for want in [
            "nc.yml: a.server_connections: ",
            "at backends.a.connections)",
            "nc.yml: a.servers[1]: server name 'same' is used twice",
            "nc.yml: b.listen: 127.0.0.1:22121 is already used",
            "nc.yml: b.hash_tag: must be exactly two",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
    }

    #[test]
    fn translation_and_loader_errors_are_reported_together_once() {
        let r = rejected(
            "a:\n  listen: nowhere\n  hash: sha1\n  server_connections: 500\n  servers:\n   \
             - 127.0.0.1:11212:1\n   - 127.0.0.1:11213\n   - 127.0.0.1:11212:1\n",
        );
        let all = r.errors.to_string();
        for want in [
            "nc.yml: a.listen: 'nowhere': expected host:port",
            "nc.yml: a.hash: unknown hash 'sha1'",
            "nc.yml: a.server_connections: ",
            "nc.yml: a.servers[1]: '127.0.0.1:11213' has no weight",
            // The third line is the second entry of the translation: named by its own index.
            "nc.yml: a.servers[2]: server 127.0.0.1:11212 is listed twice",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
        assert_eq!(r.errors.len(), 5, "each problem once:\n{all}");
    }

    #[test]
    fn files_that_are_not_pools_are_refused() {
        for (text, want) in [
            ("", "the file is empty"),
            ("[1, 2]", "not a map"),
            ("{}", "no pools"),
            ("p: 3\n", "p: expected a map"),
            (
                "p:\n  servers: [127.0.0.1:11212:1]\n",
                "p.listen: required key is missing",
            ),
            (
                "p:\n  listen: 127.0.0.1:1\n",
                "p.servers: required key is missing",
            ),
            (
                "p:\n  listen: 127.0.0.1:1\n  servers: []\n",
                "at least one server",
            ),
            (
                "p: {listen: 127.0.0.1:1, servers: [a:1:1], timeout: soon}\n",
                "p.timeout: expected a whole number",
            ),
            (
                "p: {listen: 127.0.0.1:1, servers: [a:1:1], auto_eject_hosts: yes}\n",
                "expected true or false",
            ),
            ("p: [", "invalid YAML"),
        ] {
            let all = rejected(text).errors.to_string();
            assert!(all.contains(want), "{text:?}: {want:?} not in:\n{all}");
        }
    }

    #[test]
    fn short_retry_timeouts_are_raised_with_a_warning() {
        let t = ok(
            "p:\n  listen: 127.0.0.1:22121\n  timeout: 5000\n  auto_eject_hosts: \"true\"\n  \
                    server_retry_timeout: 0\n  server_failure_limit: 0\n  \
                    servers: [127.0.0.1:11212:1]\n",
        );
        let Some((_, p)) = t.config.backend("p") else {
            panic!("backend p");
        };
        let Some(h) = &p.health else { panic!("health") };
        assert_eq!(h.retry_after, Duration::from_millis(MIN_RETRY_MS));
        assert_eq!(h.failure_limit, 1);
        assert_eq!(
            h.timeout,
            Duration::from_secs(1),
            "probe deadline capped at 1s"
        );
        assert!(t
            .warnings
            .iter()
            .any(|w| w.contains("p.server_retry_timeout: 0 ms")));
    }
}
