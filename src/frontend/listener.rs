//! Listening sockets: one per worker per listener, all bound to the same address with
//! SO_REUSEPORT so the kernel spreads new connections across workers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenerConfig;
use crate::protocol::Limits;

/// Backlog of each listening socket.
const BACKLOG: i32 = 1024;

/// Binds a non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A listener's settings as a worker applies them, plus the connection count shared by every
/// worker (so `max_connections` holds for the listener as a whole).
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// The listener's name (logs).
    pub name: String,
    /// Parser limits for its clients.
    pub limits: Limits,
    /// Connection cap for the whole listener.
    pub max_connections: usize,
    /// Close clients idle this long.
    pub idle_timeout: Option<Duration>,
    /// Close a client whose started request has not fully arrived within this time
    /// (slowloris, counted as `clients_closed_slow_request`); `None` never does.
    pub request_read_timeout: Option<Duration>,
    /// Per-client cap on requests not yet answered.
    pub max_outstanding_requests: usize,
    /// Per-client window: backend requests one client may have in flight at the backends at
    /// once (at least 1); further requests wait, parsed or unread.
    pub max_inflight_requests: usize,
    /// Per-client soft limit on reply bytes waiting to be written: over it, stop reading and
    /// dispatching that client until it drains.
    pub max_buffered_reply_bytes: usize,
    /// Per-client hard limit on reply bytes waiting to be written: a client holding more is
    /// closed (counted as `clients_closed_hard_limit`). Never below `max_buffered_reply_bytes`.
    pub close_buffered_reply_bytes: usize,
    /// Most keys of one multi-key get sent to one server in one backend request (at least 1).
    pub multiget_window: usize,
    /// Open connections across all workers.
    pub connections: Arc<AtomicUsize>,
}

impl ListenerSpec {
    /// The spec of a configured listener.
    pub fn new(config: &ListenerConfig) -> ListenerSpec {
        let soft_limit = config.max_buffered_reply_bytes.max(1);
        ListenerSpec {
            name: config.name.clone(),
            limits: Limits {
                max_line_length: config.max_line_length,
                max_value_size: config.max_value_size,
                ..Limits::default()
            },
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            request_read_timeout: config.request_read_timeout,
            max_outstanding_requests: config.max_outstanding_requests.max(1),
            max_inflight_requests: config.max_inflight_requests.max(1),
            max_buffered_reply_bytes: soft_limit,
            close_buffered_reply_bytes: config.close_buffered_reply_bytes.max(soft_limit),
            multiget_window: config.multiget_window.max(1),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// The process's client connections against what the open file limit leaves for them once the
/// descriptors of backend connections, probes, listeners and the admin API are set aside
/// (see [`FdReserve`]). Shared by every worker and listener: a client that would eat into the
/// reserve is refused, so a flood of idle clients cannot make a backend connect fail with
/// EMFILE.
#[derive(Debug)]
pub struct ClientFds {
    limit: usize,
    open: AtomicUsize,
}

impl ClientFds {
    /// Room for `limit` client connections.
    pub fn new(limit: usize) -> ClientFds {
        ClientFds {
            limit,
            open: AtomicUsize::new(0),
        }
    }

    /// Takes room for one client; false (and nothing taken) when there is none.
    pub fn try_take(&self) -> bool {
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        if open >= self.limit {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back the room of a client that closed (or was never admitted after all).
    pub fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Most clients at once.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Descriptors the process needs besides its clients', counted from the config at start-up.
/// Every figure is an upper bound: backend connections are opened lazily, but each may be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdReserve {
    /// Open before anything starts (stdio, inherited descriptors).
    pub at_start: usize,
    /// Client-traffic connections: every worker's `connections` to every server.
    pub backends: usize,
    /// Health-probe connections (one per checked server, on one worker).
    pub probes: usize,
    /// Side-effect connections: one per server per worker.
    pub side_effects: usize,
    /// Listening sockets (one per listener per worker) and each worker's poll and waker.
    pub loops: usize,
    /// The admin API's listener, poll, waker and `max_connections`, and the warming thread's
    /// poll, waker and jobs' connections.
    pub admin: usize,
    /// Headroom: a socket accepted only to be refused (one per worker), resolver and log files.
    pub margin: usize,
}

/// Headroom on top of what the config accounts for (see [`FdReserve::margin`]).
const FD_MARGIN: usize = 16;

impl FdReserve {
    /// The reserve for `workers` workers, each with `listeners` listening sockets and
    /// `conns_per_worker` client-traffic backend connections over `servers` servers, of which
    /// `checked` have health checks; `admin` is the admin API's `max_connections` when it is
    /// configured (it brings the warming thread, whose jobs hold `warm_conns` at most).
    pub fn new(
        at_start: usize,
        workers: usize,
        listeners: usize,
        servers: usize,
        conns_per_worker: usize,
        checked: usize,
        admin: Option<(usize, usize)>,
    ) -> FdReserve {
        FdReserve {
            at_start,
            backends: workers.saturating_mul(conns_per_worker),
            probes: checked,
            side_effects: workers.saturating_mul(servers),
            // Listening sockets, plus each worker's epoll and waker (an eventfd).
            loops: workers.saturating_mul(listeners.saturating_add(2)),
            // Listener, epoll, waker and connections of the admin API; epoll, waker and job
            // connections of the warming thread.
            admin: admin.map_or(0, |(connections, warm_conns)| {
                connections.saturating_add(warm_conns).saturating_add(5)
            }),
            margin: FD_MARGIN.saturating_add(workers),
        }
    }

    /// Every descriptor reserved.
    pub fn total(&self) -> usize {
        [
            self.at_start,
            self.backends,
            self.probes,
            self.side_effects,
            self.loops,
            self.admin,
            self.margin,
        ]
        .iter()
        .fold(0usize, |sum, n| sum.saturating_add(*n))
    }
}

/// Descriptors open in this process now (`/proc/self/fd`), or 3 (stdio) where that cannot be
/// read.
pub fn open_fds() -> usize {
    match std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor is listed while it is read.
        Ok(dir) => dir.count().saturating_sub(1),
        Err(_) => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_fds_refuse_past_the_limit_and_give_room_back() {
        let fds = ClientFds::new(2);
        assert!(fds.try_take());
        assert!(fds.try_take());
        assert!(!fds.try_take(), "a third client past a limit of 2");
        assert!(!fds.try_take(), "a refusal takes nothing");
        fds.release();
        assert!(fds.try_take(), "room given back is taken again");
        assert!(!fds.try_take());
    }

    #[test]
    fn the_reserve_counts_every_part_of_the_config() {
        // 2 workers, 1 listener, 3 servers with 2 connections each, 1 checked, admin of 4
        // connections whose warming jobs may hold 12.
        let r = FdReserve::new(3, 2, 1, 3, 6, 1, Some((4, 12)));
        assert_eq!(r.backends, 12);
        assert_eq!(r.probes, 1);
        assert_eq!(r.side_effects, 6);
        assert_eq!(r.loops, 6);
        assert_eq!(r.admin, 21);
        assert_eq!(r.margin, 18);
        assert_eq!(r.total(), 3 + 12 + 1 + 6 + 6 + 21 + 18);
        let no_admin = FdReserve::new(3, 2, 1, 3, 6, 1, None);
        assert_eq!(no_admin.total(), r.total() - 21);
    }
}
