//! The generic half of the document walk: typed reads of [`Value`] nodes that record an error
//! (with the node's path) instead of failing, so that one pass finds every problem.

use std::net::SocketAddr;
use std::time::Duration;

use yaml_serde::{Mapping, Value};

use super::error::ConfigError;
use super::units::{parse_duration, parse_size, DURATION_HINT, SIZE_HINT};

/// `path.key`, or `key` at the top level.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[index]`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// How a node is described in "expected X, got Y" messages.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) if n.is_f64() => format!("a number ({n})"),
        Value::Number(n) => format!("an integer ({n})"),
        Value::String(s) => format!("a string ('{s}')"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a map".to_string(),
        Value::Tagged(t) => format!("a tagged value ({})", t.tag),
    }
}

/// A map node whose keys have been checked against the allowed ones.
pub(super) struct Fields<'v> {
    /// The map's own path.
    pub path: String,
    map: &'v Mapping,
}

impl<'v> Fields<'v> {
    /// The value under `key`; `None` when absent or null (null means "use the default").
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// True when the map has no key at all.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The path of `key` in this map.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// Collects errors while reading nodes.
pub(super) struct Walker<'a> {
    file: &'a str,
    /// Every problem found so far, in the order found.
    pub errors: Vec<ConfigError>,
}

impl<'a> Walker<'a> {
    /// A walker for `file` with no errors yet.
    pub fn new(file: &'a str) -> Walker<'a> {
        Walker {
            file,
            errors: Vec::new(),
        }
    }

    /// Records a problem at `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records "expected X, got Y" at `path`.
    pub fn expected(&mut self, path: &str, what: &str, got: &Value) {
        self.error(path, format!("expected {what}, got {}", describe(got)));
    }

    /// `v` as a map whose keys are all in `allowed` (each other key is an error).
    pub fn fields<'v>(&mut self, v: &'v Value, path: &str, allowed: &[&str]) -> Option<Fields<'v>> {
        let map = self.map(v, path)?;
        self.check_keys(map, path, allowed);
        Some(Fields {
            path: path.to_string(),
            map,
        })
    }

    /// `v` as a map, keys not checked.
    pub fn map<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Mapping> {
        match v {
            Value::Mapping(m) => Some(m),
            _ => {
                self.expected(path, "a map", v);
                None
            }
        }
    }

    /// Reports every key of `map` that is not a string or not in `allowed`.
    pub fn check_keys(&mut self, map: &Mapping, path: &str, allowed: &[&str]) {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => self.error(
                    &join(path, k),
                    format!(
                        "unknown key '{k}' (expected one of: {})",
                        allowed.join(", ")
                    ),
                ),
                None => self.error(path, format!("keys must be strings, got {}", describe(key))),
            }
        }
    }

    /// The value of a required key; "required key is missing" when absent or null.
    pub fn required<'v>(&mut self, f: &Fields<'v>, key: &str) -> Option<&'v Value> {
        let v = f.get(key);
        if v.is_none() {
            self.error(&f.at(key), "required key is missing");
        }
        v
    }

    /// `v` as a list.
    pub fn list<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v [Value]> {
        match v {
            Value::Sequence(s) => Some(s),
            _ => {
                self.expected(path, "a list", v);
                None
            }
        }
    }

    /// `v` as a string.
    pub fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            _ => {
                self.expected(path, "a string", v);
                None
            }
        }
    }

    /// `v` as a name: a non-empty string without whitespace or control characters.
    pub fn name(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        if let Err(e) = check_name(s) {
            self.error(path, e);
            return None;
        }
        Some(s.to_string())
    }

    /// `v` as a boolean.
    pub fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.expected(path, "true or false", v);
                None
            }
        }
    }

    /// `v` as an integer in `min..=max`.
    pub fn integer(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        let Some(n) = n else {
            let what = if min == 0 {
                "a whole number"
            } else {
                "a positive whole number"
            };
            self.expected(path, what, v);
            return None;
        };
        self.in_range(n, path, min, max, "")
    }

    /// `v` as a size in bytes (an integer or a string like `64KiB`) in `min..=max`.
    pub fn size(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<usize> {
        let n = match v {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| format!("expected {SIZE_HINT}, got {n}")),
            Value::String(s) => parse_size(s),
            _ => Err(format!("expected {SIZE_HINT}, got {}", describe(v))),
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.error(path, e);
                return None;
            }
        };
        let n = self.in_range(n, path, min, max, " bytes")?;
        match usize::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(path, format!("{n} bytes is too large for this machine"));
                None
            }
        }
    }

    fn in_range(&mut self, n: u64, path: &str, min: u64, max: u64, unit: &str) -> Option<u64> {
        if n < min {
            self.error(path, format!("must be at least {min}{unit}, got {n}{unit}"));
            None
        } else if n > max {
            self.error(path, format!("must be at most {max}{unit}, got {n}{unit}"));
            None
        } else {
            Some(n)
        }
    }

    /// `v` as a duration string (`250ms`, `1.5s`); zero is allowed.
    pub fn duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        let parsed = match v {
            Value::String(s) => parse_duration(s),
            Value::Number(n) => Err(format!("'{n}' has no unit; expected {DURATION_HINT}")),
            _ => Err(format!("expected {DURATION_HINT}, got {}", describe(v))),
        };
        match parsed {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// `v` as a duration greater than zero.
    pub fn positive_duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        let d = self.duration(v, path)?;
        if d.is_zero() {
            self.error(path, "must be longer than zero");
            return None;
        }
        Some(d)
    }

    /// `v` as one of the names in `options`; "unknown WHAT 'x' (expected one of: ...)" otherwise.
    pub fn choice<T: Copy>(
        &mut self,
        v: &Value,
        path: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(v, path)?;
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, t)) => Some(*t),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.error(
                    path,
                    format!(
                        "unknown {what} '{s}' (expected one of: {})",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// `v` as the name of one of `known` (a `what`: "backend", "route"); any name when the
    /// known names could not be read (that section's own errors say why).
    pub fn reference(
        &mut self,
        v: &Value,
        path: &str,
        what: &str,
        known: Option<&[String]>,
    ) -> Option<String> {
        let s = self.string(v, path)?;
        if known.map_or(true, |known| known.iter().any(|k| k == s)) {
            Some(s.to_string())
        } else {
            self.error(path, format!("no {what} named '{s}'"));
            None
        }
    }

    /// `v` as a non-empty list of distinct names of `known`.
    pub fn references(
        &mut self,
        v: &Value,
        path: &str,
        what: &str,
        known: Option<&[String]>,
    ) -> Option<Vec<String>> {
        let items = self.list(v, path)?;
        if items.is_empty() {
            self.error(path, format!("must name at least one {what}"));
            return None;
        }
        let mut names: Vec<String> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = index(path, i);
            match self.reference(item, &item_path, what, known) {
                Some(n) if names.contains(&n) => {
                    self.error(&item_path, format!("{what} '{n}' is listed twice"));
                    ok = false;
                }
                Some(n) => names.push(n),
                None => ok = false,
            }
        }
        ok.then_some(names)
    }

    /// `v` as a `host:port` address, resolved (IPv4 preferred); `server` forbids port 0.
    pub fn address(&mut self, v: &Value, path: &str, server: bool) -> Option<(String, SocketAddr)> {
        let text = self.string(v, path)?;
        match resolve(text) {
            Ok(addr) if server && addr.port() == 0 => {
                self.error(
                    path,
                    format!("bad address '{text}': port 0 is not allowed for a server"),
                );
                None
            }
            Ok(addr) => Some((text.to_string(), addr)),
            Err(e) => {
                self.error(path, format!("bad address '{text}': {e}"));
                None
            }
        }
    }
}

impl Walker<'_> {
    /// `v` as a server's `host:port`: an IP literal, or a host name resolved now (IPv4
    /// preferred). A well-formed name that does not resolve yet is accepted with a warning
    /// (None: the server is down until it resolves); a malformed one, or port 0, is an error.
    pub fn server_address(
        &mut self,
        v: &Value,
        path: &str,
    ) -> Option<(String, Option<SocketAddr>)> {
        let text = self.string(v, path)?;
        let (host, port) = match split_host_port(text) {
            Ok(parts) => parts,
            Err(e) => {
                self.error(path, format!("bad address '{text}': {e}"));
                return None;
            }
        };
        if port == 0 {
            let msg = format!("bad address '{text}': port 0 is not allowed for a server");
            self.error(path, msg);
            return None;
        }
        match resolve(text) {
            Ok(addr) => Some((text.to_string(), Some(addr))),
            Err(e) if is_host_name(host) => {
                log::warn!(
                    "{path}: '{text}' does not resolve yet ({e}): the server is down until it \
                     does (resolved again every resolve_interval)"
                );
                Some((text.to_string(), None))
            }
            Err(e) => {
                self.error(path, format!("bad address '{text}': {e}"));
                None
            }
        }
    }
}

/// `host:port` split, the host without IPv6 brackets; errors name what is wrong.
pub(super) fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected host:port".to_string());
    };
    if host.is_empty() {
        return Err("expected host:port, the host is missing".to_string());
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("IPv6 addresses are written in brackets, like [::1]:11211".to_string());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// True for a well-formed DNS host name: labels of letters, digits, `-` and `_`, separated by
/// dots, none empty or over 63 bytes, at most 253 in all.
pub(super) fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Checks a listener, backend, route or server name.
pub(super) fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("a name must not be empty".to_string())
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!(
            "name '{s}' must not contain spaces or control characters"
        ))
    } else {
        Ok(())
    }
}

/// Resolves `host:port` (`[v6]:port` for IPv6 literals), preferring an IPv4 address.
pub(super) fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(text)?;
    super::server::lookup(host, port)
}
