//! What the tests of routes over several pools (`warm_first`, `parallel`) and of side effects
//! share: the proxy's config built from pools and YAML lines, what a server holds (read
//! directly or through the proxy), and the side effects' counters in the proxy's `stats`.

use super::{free_port, wait_until, Bifrost, Client};
use std::time::Duration;

/// How long a background write (a write-back, a replicated copy, a write finishing after its
/// answer) may take to show (loaded 2-core box).
pub const LANDED: Duration = Duration::from_secs(5);

/// A backend of one server: (name, "host:port", timeout).
pub type Pool<'a> = (&'a str, String, &'a str);

/// One entry of `backends:`: pool `name` of `servers` (a YAML list) with `timeout`, one
/// connection per server and worker (so the replies of one server come back in request order).
pub fn pool_yaml(name: &str, servers: &str, timeout: &str) -> String {
    format!("  {name}:\n    servers: {servers}\n    timeout: {timeout}\n    connections: 1\n")
}

/// The `backends:` entries of `pools`, one server each (see [`pool_yaml`]).
pub fn pools_yaml(pools: &[Pool]) -> String {
    pools
        .iter()
        .map(|(name, addr, timeout)| pool_yaml(name, &format!("[\"{addr}\"]"), timeout))
        .collect()
}

/// A YAML list of servers named `<prefix>0`, `<prefix>1`... (ketama hashes the names, so the
/// placement of a key does not depend on the ports of the run).
pub fn server_list(prefix: &str, addrs: &[String]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{address: \"{a}\", name: {prefix}{i}}}"))
        .collect();
    format!("[{}]", list.join(", "))
}

/// Starts bifrost with `workers` workers, one listener, and the YAML lines of `backends` (the
/// entries of `backends:`), `routes` (the entries of `routes:`) and `side_effects` (the entries
/// of `side_effects:`; no such section when empty).
pub fn start_proxy(workers: usize, backends: &str, routes: &str, side_effects: &str) -> Bifrost {
    let (backends, routes) = (backends.to_string(), routes.to_string());
    let side_effects = if side_effects.is_empty() {
        String::new()
    } else {
        format!("side_effects:\n{side_effects}")
    };
    Bifrost::start_templated(
        move |port| {
            format!(
                "workers: {workers}\n\
                 listeners: [{{name: main, bind: \"127.0.0.1:{port}\"}}]\n\
                 backends:\n{backends}\
                 routes:\n{routes}\
                 {side_effects}"
            )
        },
        &[],
    )
}

/// Starts bifrost with one worker, the pools `pools` (one server each, see [`pools_yaml`]) and
/// the YAML lines of `routes` and `side_effects` (none when empty).
pub fn start(pools: &[Pool], routes: &str, side_effects: &str) -> Bifrost {
    start_proxy(1, &pools_yaml(pools), routes, side_effects)
}

/// "127.0.0.1:PORT" where nothing listens: connections are refused.
pub fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The value of `key` on a server (or through the proxy), read with `get`.
pub fn value_on(c: &mut Client, key: &str) -> Option<String> {
    c.get(key)
        .map(|data| String::from_utf8_lossy(&data).into_owned())
}

/// The (key, value) pairs of the retrieval reply `c` reads next.
pub fn values(c: &mut Client) -> Vec<(String, String)> {
    c.read_values()
        .unwrap_or_else(|line| panic!("expected VALUEs and END, got {line:?}"))
        .into_iter()
        .map(|i| (i.key, String::from_utf8_lossy(&i.data).into_owned()))
        .collect()
}

/// `(k, v)` as owned strings, as [`values`] returns them.
pub fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// Waits until `key` on the server `direct` is talking to has the value `want` (`None`:
/// absent); on timeout the last value seen is printed too.
pub fn wait_value(direct: &mut Client, key: &str, want: Option<&str>, what: &str) {
    let mut last = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(LANDED, what, || {
            last = value_on(direct, key);
            last.as_deref() == want
        })
    }));
    if let Err(panic) = result {
        eprintln!("{key}: wanted {want:?}, last seen {last:?}");
        std::panic::resume_unwind(panic);
    }
}

/// The remaining TTL memcached reports for `key` (`mg <key> t`): -1 for none.
pub fn ttl_of(c: &mut Client, key: &str) -> i64 {
    c.send(format!("mg {key} t\r\n").as_bytes());
    let line = c.read_line();
    let t = line
        .split(' ')
        .skip(1)
        .find_map(|f| f.strip_prefix('t'))
        .unwrap_or_else(|| panic!("mg {key} t: no TTL in {line:?}"));
    t.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// A counter of side effect `name` (`effect:<name>:<field>`) from the proxy's `stats`, summed
/// over the workers.
pub fn effect(c: &mut Client, name: &str, field: &str) -> u64 {
    c.stat(&format!("effect:{name}:{field}"))
}

/// Every counter of side effect `name`, for failure messages.
pub fn effects(c: &mut Client, name: &str) -> String {
    let stats = c.stats();
    let mut lines: Vec<String> = stats
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("effect:{name}:")))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.sort();
    lines.join(" ")
}

/// Sends a meta request and reads its reply: the status line and, for `VA <n>`, the value.
pub fn meta(c: &mut Client, req: &str) -> (String, Option<Vec<u8>>) {
    c.send(format!("{req}\r\n").as_bytes());
    let line = c.read_line();
    let value = match line.strip_prefix("VA ") {
        Some(rest) => {
            let n: usize = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{req}: bad VA line {line:?}"));
            let mut data = c.read_exact(n + 2);
            assert!(data.ends_with(b"\r\n"), "{req}: value not ended by \\r\\n");
            data.truncate(n);
            Some(data)
        }
        None => None,
    };
    (line, value)
}
