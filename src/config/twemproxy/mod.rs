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

mod lines;

pub use lines::{distribution, hash_function, parse_server_line, ServerLine};

#[cfg(test)]
mod tests;
