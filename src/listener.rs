//! Listening sockets: one per worker per listener, all bound to the same address with
//! SO_REUSEPORT so the kernel spreads new connections across workers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
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
    /// The address actually bound (port 0 in the config is resolved once, at start-up).
    pub addr: SocketAddr,
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
    /// The spec of a configured listener bound at `addr`.
    pub fn new(config: &ListenerConfig, addr: SocketAddr) -> ListenerSpec {
        let soft_limit = config.max_buffered_reply_bytes.max(1);
        ListenerSpec {
            name: config.name.clone(),
            addr,
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
