//! The resolver thread: servers named by a host name are looked up again every
//! `resolve_interval` of their pool, and about a second after a worker failed to connect to
//! one (a pod that came back elsewhere), off the data path (a lookup blocks). A new address is
//! published in the server's [`ServerAddr`] and the health board's epoch is bumped, so each
//! worker, at its next loop iteration, closes its idle connections to the old address (busy
//! ones once their last reply is in) and connects to the new one at once. A lookup that fails
//! keeps the last address: a DNS hiccup does not take a server away. Placement never changes:
//! rings are built from the names as configured.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{lookup, ServerAddr};
use crate::observe::health::HealthBoard;
use crate::runtime::shutdown::Shutdown;

/// How often the thread wakes to look at its servers and the shutdown flag.
const TICK: Duration = Duration::from_millis(100);
/// The least time between two lookups of one name asked for by failed connects.
const WANTED_SPACING: Duration = Duration::from_secs(1);

/// One named server the thread keeps current.
struct Named {
    addr: Arc<ServerAddr>,
    interval: Duration,
    /// The next scheduled lookup.
    due: Instant,
    /// The last lookup.
    last: Option<Instant>,
    /// The last lookup failed (logged once until one succeeds).
    failing: bool,
}

/// Starts the thread for `servers` (each address with its pool's `resolve_interval`; IP
/// literals are left out); None when no server is named by a host name.
pub fn start(
    servers: Vec<(Arc<ServerAddr>, Duration)>,
    health: Arc<HealthBoard>,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let now = Instant::now();
    let named: Vec<Named> = servers
        .into_iter()
        .filter(|(addr, _)| addr.is_name())
        .map(|(addr, interval)| Named {
            failing: addr.current().is_none(),
            addr,
            interval,
            due: now + interval,
            last: None,
        })
        .collect();
    if named.is_empty() {
        return Ok(None);
    }
    log::info!(
        "resolver: {} server name(s) looked up again every resolve_interval",
        named.len()
    );
    let handle = std::thread::Builder::new()
        .name("bifrost-resolve".to_string())
        .spawn(move || run(named, &health, &shutdown))?;
    Ok(Some(handle))
}

fn run(mut named: Vec<Named>, health: &HealthBoard, shutdown: &Shutdown) {
    while !shutdown.is_requested() {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let mut moved = false;
        for server in &mut named {
            let wanted = server.addr.take_wanted() && spaced(server.last, now);
            if !wanted && now < server.due {
                continue;
            }
            server.last = Some(now);
            server.due = now + server.interval;
            moved |= refresh(server);
        }
        if moved {
            health.address_moved();
        }
    }
}

/// True when a lookup asked for by a failed connect may run now: none ran yet, or the last
/// one is [`WANTED_SPACING`] old (a dead server's failures must not turn into a lookup storm).
fn spaced(last: Option<Instant>, now: Instant) -> bool {
    last.map_or(true, |last| {
        now.saturating_duration_since(last) >= WANTED_SPACING
    })
}

/// Looks `server` up; true when its address changed.
fn refresh(server: &mut Named) -> bool {
    let (host, port) = (server.addr.host(), server.addr.port());
    match lookup(host, port) {
        Ok(addr) => {
            let before = server.addr.current();
            server.failing = false;
            if server.addr.set(Some(addr)) {
                match before {
                    Some(old) => log::info!("backend {host}:{port}: now at {addr} (was {old})"),
                    None => log::info!("backend {host}:{port}: resolves to {addr}"),
                }
                return true;
            }
            false
        }
        Err(e) => {
            if !server.failing {
                server.failing = true;
                log::warn!(
                    "backend {host}:{port}: lookup failed ({e}); keeping {:?}",
                    server.addr.current()
                );
            }
            false
        }
    }
}
