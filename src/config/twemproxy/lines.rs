//! nutcracker's value grammars: a server line (`host:port:weight [name]`), and the names of
//! its hash functions and distributions.

use crate::config::placement::ring_name;
use crate::config::{Distribution, HashFunction};

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
