//! One connection from a worker to one memcached server.
//!
//! States: `Idle` (never connected, or closed cleanly) → `Connecting` → `Connected`; a failed
//! connect moves to `Backoff` until a retry instant, during which new requests fail fast.
//! Requests are connected lazily: the first request to an idle connection starts the connect
//! and waits in the write queue.
//!
//! Every request sent is recorded in the in-flight FIFO with its reply kind and deadline;
//! replies are framed in order against that FIFO. Any error (timeout, EOF, bad bytes) resets the
//! connection and answers every in-flight fragment exactly once, so no late reply can ever be
//! matched to a later request.
//!
//! What the backend speaks is its wire's business ([`BackendWire`]: how a request is written,
//! how the reply stream is framed into one reply per request); this state machine is the same
//! for every kind of backend and holds its wire as a type parameter, so the calls are static.
//!
//! The reply stream is trusted to nothing (SPEC §6b). Each reply is checked against the request
//! it answers (by the wire; for memcached, [`crate::protocol::Expect`]: the reply codes its verb
//! can get, the keys a retrieval asked, sizes an item can have), and bytes are framed against a
//! request only once that request has been written: bytes read while nothing is in flight, or
//! while the request at the head of the FIFO is still unwritten in the write queue (a backend
//! that writes before it is asked), are never taken as its reply. Any of these marks the
//! connection out of sync: it is reset (its in-flight requests fail as errors, retrievals as
//! misses), counted in `backend_out_of_sync` and logged, rate limited.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::fragment::{Completion, FailReason, Fragment};
use super::wire::{BackendWire, Framed, MemcacheText};
use super::Send;
use crate::config::ServerAddr;
use crate::observe::health::HealthBoard;
use crate::observe::stats::WorkerStats;
use crate::runtime::buffer::{ReadBuf, WriteQueue, BACKEND_READ_CHUNK};
use crate::runtime::log_limit::{LogEvent, LogLimiter};
use std::sync::Arc;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Why bytes that came unasked put the stream out of sync (found here, not by the wire: the
/// same for every kind of backend), as the log line names it.
const UNSOLICITED: &str = "unsolicited_reply";
/// Reads from one connection per loop iteration (up to 1 MiB): a server streaming a huge reply
/// must not keep the loop from writing it out to the client, or from serving anyone else.
const READS_PER_DRIVE: usize = 16;

/// Connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// No socket; the next request connects.
    Idle,
    /// Non-blocking connect in progress.
    Connecting,
    /// Ready for traffic.
    Connected,
    /// Recent connects failed; requests fail fast until this instant.
    Backoff(Instant),
}

/// One backend connection and everything in flight on it, speaking `W` (memcached text unless
/// said otherwise).
pub struct BackendConn<W: BackendWire = MemcacheText> {
    /// Index of the server (in the router's server list).
    server: usize,
    /// Where the server is, kept current by the resolver (read when connecting).
    address: Arc<ServerAddr>,
    /// The address of the current or last connection (for the log).
    addr: SocketAddr,
    /// The address generation the current connection went to: when the resolver moves the
    /// address on, the connection is closed once nothing is in flight on it.
    address_generation: u32,
    /// The address moved on: close once idle.
    draining: bool,
    timeout: Duration,
    connect_timeout: Duration,
    token: Token,
    state: ConnState,
    stream: Option<TcpStream>,
    /// Bumped on every reset, so timers armed for an earlier connection are ignored.
    generation: u32,
    write_queue: WriteQueue,
    inflight: VecDeque<Fragment>,
    /// Requests allowed in `inflight` (queued or sent) before new ones are refused.
    max_queued: usize,
    /// Replies read and not yet framed; a reply or piece is handed on as a copy when small,
    /// so it never keeps a whole read chunk alive (see [`ReadBuf::take`]).
    read_buf: ReadBuf,
    /// How requests are written and replies framed (it keeps its place in the reply at the
    /// head of `inflight` between reads, and any per-request state in step with `inflight`).
    wire: W,
    /// Bytes ever queued for writing on this connection (since its last reset).
    queued_total: u64,
    /// Bytes ever written to the socket (since its last reset).
    written_total: u64,
    backoff: Duration,
    /// The request deadline a timer is currently armed for, if any.
    armed_deadline: Option<Instant>,
    /// When a connect in progress gives up.
    connect_deadline: Option<Instant>,
    /// Readiness seen and not yet consumed (edge-triggered polling).
    readable: bool,
    /// See `readable`.
    writable: bool,
    /// The server's FIN (or an error) was reported: read to the end even after a short read.
    read_closed: bool,
    /// A read found the end of the stream.
    peer_closed: bool,
    stats: Arc<WorkerStats>,
    /// Per-event warnings of this connection, rate limited (a dead server cannot flood the log).
    log: LogLimiter,
    /// The loop's time at the current call (for the log limiter).
    now: Instant,
    /// Where failure events are recorded (`None` for a probe connection, whose job records
    /// its own outcome).
    health: Option<Arc<HealthBoard>>,
    /// State of the generator that spreads reconnect attempts (see [`jittered`]).
    jitter: u64,
}

/// Half of `base` plus a random share of the other half ("equal jitter"): the connections of
/// every worker that lost a server at the same moment do not all come back at the same moment.
fn jittered(base: Duration, state: &mut u64) -> Duration {
    // SplitMix64: one add and a few multiplies, no shared state.
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let half = base / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(z % span.saturating_add(1))
}

/// Where a connection goes and its limits.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    /// Index of the server (in the router's server list).
    pub server: usize,
    /// Its address, as the resolver keeps it current.
    pub address: Arc<ServerAddr>,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Deadline of a connect.
    pub connect_timeout: Duration,
    /// Requests queued or in flight before new ones are refused.
    pub max_queued: usize,
}

impl ConnSettings {
    /// The settings of a client-traffic connection to `spec`, server number `server`.
    pub fn of(server: usize, spec: &crate::config::ServerSpec) -> ConnSettings {
        ConnSettings {
            server,
            address: spec.addr.clone(),
            timeout: spec.timeout,
            connect_timeout: spec.connect_timeout,
            max_queued: spec.max_queued_requests,
        }
    }
}

/// What a timer should be armed for, returned to the loop which owns the wheel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmTimer {
    /// When.
    pub at: Instant,
    /// The connection generation it applies to.
    pub generation: u32,
}

impl<W: BackendWire> BackendConn<W> {
    /// An idle connection to `settings.addr` speaking through `wire`, registered under
    /// `token` when it connects.
    pub fn new(
        settings: ConnSettings,
        wire: W,
        token: Token,
        stats: Arc<WorkerStats>,
        health: Option<Arc<HealthBoard>>,
    ) -> Self {
        let ConnSettings {
            server,
            address,
            timeout,
            connect_timeout,
            max_queued,
        } = settings;
        let addr = address
            .current()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], address.port())));
        BackendConn {
            server,
            addr,
            address_generation: address.generation(),
            address,
            draining: false,
            timeout,
            connect_timeout,
            token,
            state: ConnState::Idle,
            stream: None,
            generation: 0,
            write_queue: WriteQueue::default(),
            inflight: VecDeque::new(),
            max_queued: max_queued.max(1),
            read_buf: ReadBuf::default(),
            wire,
            queued_total: 0,
            written_total: 0,
            backoff: BACKOFF_MIN,
            armed_deadline: None,
            connect_deadline: None,
            readable: false,
            writable: false,
            read_closed: false,
            peer_closed: false,
            stats,
            log: LogLimiter::with_subjects(0),
            now: Instant::now(),
            health,
            // Differs per connection (its token) and per process (the clock).
            jitter: (token.0 as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos().into()),
        }
    }

    /// Records readiness reported by the poll.
    pub fn on_event(&mut self, readable: bool, writable: bool, read_closed: bool, error: bool) {
        self.readable |= readable || read_closed || error;
        self.read_closed |= read_closed || error;
        self.writable |= writable;
    }

    /// True when readiness is left over (the read budget ran out before the socket drained).
    pub fn wants_revisit(&self) -> bool {
        self.readable && self.state == ConnState::Connected
    }

    /// False while the connection is in connect backoff (its requests would fail fast).
    pub fn is_usable(&self, now: Instant) -> bool {
        !matches!(self.state, ConnState::Backoff(until) if now < until)
    }

    /// The server it connects to (index in the router's server list).
    pub fn server(&self) -> usize {
        self.server
    }

    /// Leaves connect backoff: the next request connects at once, with the shortest backoff.
    pub fn forget_backoff(&mut self) {
        if matches!(self.state, ConnState::Backoff(_)) {
            self.state = ConnState::Idle;
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Requests queued or sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.write_queue.len()
    }

    /// The deadline of a request made now.
    pub fn deadline_from(&self, now: Instant) -> Instant {
        now + self.timeout
    }

    /// Queues `send` (its bytes as the wire writes them) whose reply is tracked by `fragment`.
    /// Starts a connect if needed. Fails fast while in backoff or if the connect cannot even
    /// start; the caller then answers the fragment itself with the returned reason.
    pub fn enqueue(
        &mut self,
        registry: &Registry,
        send: &Send,
        mut fragment: Fragment,
        now: Instant,
    ) -> Result<[Option<ArmTimer>; 2], FailReason> {
        self.now = now;
        if self.inflight.len() >= self.max_queued {
            return Err(FailReason::Overloaded);
        }
        let mut connect_timer = None;
        match self.state {
            ConnState::Backoff(until) if now < until => return Err(FailReason::Unavailable),
            ConnState::Idle | ConnState::Backoff(_) => {
                connect_timer = Some(self.connect(registry, now)?);
            }
            ConnState::Connecting | ConnState::Connected => {}
        }
        fragment.wire_start = self.queued_total;
        let before = self.write_queue.len();
        self.wire
            .encode(send, &mut fragment, &mut self.write_queue)?;
        // Counted from the queue, not taken from the wire: the check that a reply answers a
        // request already written rests on this count.
        self.queued_total += self.write_queue.len().saturating_sub(before) as u64;
        self.inflight.push_back(fragment);
        Ok([connect_timer, self.rearm()])
    }

    fn connect(&mut self, registry: &Registry, now: Instant) -> Result<ArmTimer, FailReason> {
        // Read before the address: a change between the two is seen again at the next check.
        self.address_generation = self.address.generation();
        self.draining = false;
        let Some(addr) = self.address.current() else {
            crate::warn_limited!(
                self.log,
                LogEvent::ConnectFailed,
                None,
                self.now,
                "backend {}:{}: the name does not resolve (yet)",
                self.address.host(),
                self.address.port()
            );
            self.enter_backoff(now);
            return Err(FailReason::ConnectFailed);
        };
        self.addr = addr;
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                self.warn_connect_failed(&e);
                self.enter_backoff(now);
                return Err(FailReason::ConnectFailed);
            }
        };
        if let Err(e) = registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            crate::warn_limited!(
                self.log,
                LogEvent::ConnectFailed,
                None,
                self.now,
                "backend {}: register failed: {e}",
                self.addr
            );
            self.enter_backoff(now);
            return Err(FailReason::ConnectFailed);
        }
        self.stream = Some(stream);
        self.state = ConnState::Connecting;
        self.readable = false;
        self.writable = false;
        let at = now + self.connect_timeout;
        self.connect_deadline = Some(at);
        Ok(ArmTimer {
            at,
            generation: self.generation,
        })
    }

    fn warn_connect_failed(&mut self, e: &io::Error) {
        let addr = self.addr;
        crate::warn_limited!(
            self.log,
            LogEvent::ConnectFailed,
            None,
            self.now,
            "backend {addr}: connect failed: {e}"
        );
    }

    fn enter_backoff(&mut self, now: Instant) {
        // The server may have moved: have its name looked up again soon.
        self.address.want_resolve();
        WorkerStats::add(&self.stats.backend_connect_failures, 1);
        self.health_event(FailReason::ConnectFailed);
        let wait = jittered(self.backoff, &mut self.jitter);
        self.state = ConnState::Backoff(now + wait);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Handles readiness: completes a pending connect, reads and frames replies (appending one
    /// completion per answered fragment to `out`), and writes what is queued. On any error the
    /// connection is reset and every in-flight fragment is answered.
    pub fn drive(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Completion>) {
        self.now = now;
        let mut result = self.try_drive(out);
        let closed = self.peer_closed || (result.is_ok() && self.wire.closing());
        if closed && self.wire.reconnects() {
            result = self.reopen(registry, now);
        } else if self.peer_closed {
            crate::warn_limited!(
                self.log,
                LogEvent::ConnectionLost,
                None,
                self.now,
                "backend {}: connection closed by server",
                self.addr
            );
        }
        if let Err(reason) = result {
            self.reset(registry, reason, now, out);
        }
        self.close_if_drained(registry);
    }

    /// The backend closed the connection (or said it would) between replies: closes it and,
    /// when requests are in flight, connects again and sends them again (a wire that
    /// [`BackendWire::reconnects`]). `Err` when that cannot be done: the caller fails them.
    fn reopen(&mut self, registry: &Registry, now: Instant) -> Result<(), FailReason> {
        let inflight = std::mem::take(&mut self.inflight);
        if inflight.is_empty() {
            log::debug!("backend {}: closed by the server while idle", self.addr);
            self.close(registry);
            return Ok(());
        }
        // `close` resets the wire: its state is kept across it.
        let mut queue = WriteQueue::default();
        let replayed = self.wire.replay(&mut queue);
        self.inflight = inflight;
        if !replayed {
            crate::warn_limited!(
                self.log,
                LogEvent::ConnectionLost,
                None,
                self.now,
                "backend {}: connection closed by server with {} in flight",
                self.addr,
                self.inflight.len()
            );
            return Err(FailReason::ConnectionLost);
        }
        log::debug!(
            "backend {}: closed by the server; sending {} requests again on a new connection",
            self.addr,
            self.inflight.len()
        );
        self.close_socket(registry);
        self.write_queue = queue;
        self.queued_total = self.write_queue.len() as u64;
        for fragment in &mut self.inflight {
            fragment.wire_start = 0;
        }
        self.connect(registry, now).map(|_| ())
    }

    fn try_drive(&mut self, out: &mut Vec<Completion>) -> Result<(), FailReason> {
        if self.state == ConnState::Connecting {
            if !self.writable && !self.readable {
                return Ok(());
            }
            self.finish_connect()?;
        }
        if self.state != ConnState::Connected {
            return Ok(());
        }
        if self.readable {
            self.read_replies(out)?;
        }
        self.flush(self.now)
    }

    fn finish_connect(&mut self) -> Result<(), FailReason> {
        let stream = self.stream.as_ref().ok_or(FailReason::ConnectFailed)?;
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                self.warn_connect_failed(&e);
                return Err(FailReason::ConnectFailed);
            }
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => {
                self.warn_connect_failed(&e);
                return Err(FailReason::ConnectFailed);
            }
        }
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("backend {}: TCP_NODELAY: {e}", self.addr);
        }
        log::debug!("backend {}: connected", self.addr);
        self.state = ConnState::Connected;
        WorkerStats::add(&self.stats.backend_connections, 1);
        if let Some(health) = &self.health {
            health.connected(self.server);
        }
        self.backoff = BACKOFF_MIN;
        self.connect_deadline = None;
        Ok(())
    }

    /// Writes what is queued (one `writev` per batch). Call once per loop iteration.
    pub fn flush(&mut self, now: Instant) -> Result<(), FailReason> {
        self.now = now;
        if self.state != ConnState::Connected || self.write_queue.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(FailReason::ConnectionLost);
        };
        match self.write_queue.write_to(stream) {
            Ok(written) => {
                self.written_total += written as u64;
                self.writable = self.write_queue.is_empty();
                Ok(())
            }
            Err(e) => {
                crate::warn_limited!(
                    self.log,
                    LogEvent::ConnectionLost,
                    None,
                    self.now,
                    "backend {}: write failed: {e}",
                    self.addr
                );
                Err(FailReason::ConnectionLost)
            }
        }
    }

    /// Reads and frames up to [`READS_PER_DRIVE`] reads; `readable` stays set when the budget
    /// ran out first, so the loop comes back to this connection on its next iteration.
    fn read_replies(&mut self, out: &mut Vec<Completion>) -> Result<(), FailReason> {
        for _ in 0..READS_PER_DRIVE {
            let Some(stream) = self.stream.as_ref() else {
                return Err(FailReason::ConnectionLost);
            };
            match self.read_buf.read_from(stream, BACKEND_READ_CHUNK) {
                Ok(read) if read.bytes == 0 => {
                    // Frame what arrived before the close, then fail the rest (or, for a wire
                    // that reconnects, send it again: see `drive`).
                    self.frame_replies(out)?;
                    self.peer_closed = true;
                    return Err(FailReason::ConnectionLost);
                }
                Ok(read) => {
                    self.frame_replies(out)?;
                    if read.drained && !self.read_closed {
                        self.readable = false;
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::warn_limited!(
                        self.log,
                        LogEvent::ConnectionLost,
                        None,
                        self.now,
                        "backend {}: read failed: {e}",
                        self.addr
                    );
                    return Err(FailReason::ConnectionLost);
                }
            }
        }
        Ok(())
    }

    /// Frames what the read buffer holds against the in-flight FIFO, handing each whole reply
    /// (or, for a streamed one, each piece the wire cuts) to `out`. The wire keeps its place
    /// between reads, so no byte is scanned twice.
    fn frame_replies(&mut self, out: &mut Vec<Completion>) -> Result<(), FailReason> {
        loop {
            // A wire may hold the head's answer already (an HTTP origin's shared read).
            let ready = self.wire.ready();
            if !ready && (self.read_buf.is_empty() || self.wire.closing()) {
                break;
            }
            // Bytes are a reply only to a request that has been (at least partly) written:
            // anything else came unasked, even if a request was queued since they arrived.
            let fragment = match self.inflight.front().copied() {
                Some(f) if ready || self.written_total > f.wire_start => f,
                _ => return Err(self.out_of_sync(UNSOLICITED)),
            };
            match self.wire.frame(&mut self.read_buf, &fragment) {
                Ok(Framed::Failed(reason)) => {
                    self.inflight.pop_front();
                    out.push(fragment.fail(self.server, reason));
                }
                Ok(Framed::Whole {
                    reply,
                    tail,
                    values,
                    max_age,
                }) => {
                    // The deadline timer stays armed: when it fires it re-arms for the
                    // then-oldest request, so the wheel sees about one timer per timeout
                    // period, not per request.
                    self.inflight.pop_front();
                    let discard = fragment.discard_reply;
                    out.push(Completion {
                        owner: fragment.owner,
                        reply: if discard { Bytes::new() } else { reply },
                        end: true,
                        tail: if discard { 0 } else { tail },
                        values,
                        server: self.server,
                        failed: None,
                        sent: fragment.sent,
                        max_age,
                    });
                }
                Ok(Framed::Piece(piece)) => {
                    out.push(Completion {
                        owner: fragment.owner,
                        reply: piece,
                        end: false,
                        tail: 0,
                        values: 0,
                        server: self.server,
                        failed: None,
                        sent: fragment.sent,
                        max_age: None,
                    });
                    // The rest may be in already (an HTTP origin's next value, or its next
                    // response to read): the loop's test says whether to go on.
                }
                Ok(Framed::Partial) => break,
                Err(why) => return Err(self.out_of_sync(why)),
            }
        }
        if self.read_buf.is_empty() && self.read_buf.capacity() > 4 * BACKEND_READ_CHUNK {
            // A burst of large values is over: give the memory back.
            self.read_buf.release();
        }
        Ok(())
    }

    /// The reply stream is out of step with the requests (`why`): counts it and logs it (rate
    /// limited); the caller resets the connection.
    fn out_of_sync(&mut self, why: &'static str) -> FailReason {
        WorkerStats::add(&self.stats.backend_out_of_sync, 1);
        crate::warn_limited!(
            self.log,
            LogEvent::BadReply,
            None,
            self.now,
            "backend {}: bad reply ({}): out of sync, resetting the connection with {} in flight",
            self.addr,
            why,
            self.inflight.len()
        );
        FailReason::BadReply
    }

    /// A timer armed for this connection at `at` fired. Fails everything if the connect or the
    /// oldest request is past its deadline; otherwise returns the next timer to arm. Timers
    /// of an earlier connection, or for a deadline no longer current, are ignored.
    pub fn on_timer(
        &mut self,
        registry: &Registry,
        generation: u32,
        at: Instant,
        now: Instant,
        out: &mut Vec<Completion>,
    ) -> Option<ArmTimer> {
        self.now = now;
        if generation != self.generation {
            return None;
        }
        if self.state == ConnState::Connecting && self.connect_deadline.is_some_and(|d| d <= now) {
            crate::warn_limited!(
                self.log,
                LogEvent::ConnectFailed,
                None,
                self.now,
                "backend {}: connect timed out",
                self.addr
            );
            self.reset(registry, FailReason::ConnectFailed, now, out);
            return None;
        }
        if self.armed_deadline != Some(at) {
            return None;
        }
        self.armed_deadline = None;
        let head = self.inflight.front().map(|f| f.deadline)?;
        if head <= now {
            crate::warn_limited!(
                self.log,
                LogEvent::Timeout,
                None,
                self.now,
                "backend {}: request timed out; resetting connection with {} in flight",
                self.addr,
                self.inflight.len()
            );
            self.reset(registry, FailReason::Timeout, now, out);
            return None;
        }
        self.rearm()
    }

    /// The timer to arm for the oldest request when none is armed.
    pub fn rearm(&mut self) -> Option<ArmTimer> {
        if self.armed_deadline.is_some() {
            return None;
        }
        let head = self.inflight.front()?.deadline;
        self.armed_deadline = Some(head);
        Some(ArmTimer {
            at: head,
            generation: self.generation,
        })
    }

    /// Records one failure event of this connection's server (one per reset, not per request).
    fn health_event(&self, reason: FailReason) {
        if let Some(health) = &self.health {
            if reason.is_health_event() {
                health.failure(self.server, reason.as_str());
            }
        }
    }

    /// The resolver moved the server's address on (or may have): a connection to the older
    /// address is closed now when nothing is in flight on it, else once its last reply is in
    /// (new requests still queue behind those, in order); the next connect goes to the new one.
    pub fn follow_address(&mut self, registry: &Registry) {
        if self.stream.is_none() || self.address.generation() == self.address_generation {
            return;
        }
        self.draining = true;
        self.close_if_drained(registry);
    }

    /// Closes a draining connection once nothing is in flight on it (nothing is failed).
    fn close_if_drained(&mut self, registry: &Registry) {
        if !self.draining || !self.inflight.is_empty() {
            return;
        }
        log::debug!(
            "backend {}: closed, the name now resolves to {:?}",
            self.addr,
            self.address.current()
        );
        self.close(registry);
        self.draining = false;
    }

    /// Closes the socket and answers every in-flight fragment with `reason`, exactly once.
    pub fn reset(
        &mut self,
        registry: &Registry,
        reason: FailReason,
        now: Instant,
        out: &mut Vec<Completion>,
    ) {
        self.close(registry);
        if reason == FailReason::ConnectFailed {
            self.enter_backoff(now);
        } else {
            self.health_event(reason);
            self.state = ConnState::Idle;
        }
        let server = self.server;
        out.extend(self.inflight.drain(..).map(|f| f.fail(server, reason)));
    }

    /// Closes the socket and forgets everything of the connection but what is in flight.
    fn close(&mut self, registry: &Registry) {
        self.close_socket(registry);
        self.write_queue.clear();
        self.wire.reset();
    }

    /// Closes the socket and forgets its state (not the write queue, the wire's requests or
    /// what is in flight).
    fn close_socket(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            if let Err(e) = registry.deregister(&mut stream) {
                log::debug!("backend {}: deregister: {e}", self.addr);
            }
        }
        if self.state == ConnState::Connected {
            WorkerStats::sub(&self.stats.backend_connections, 1);
        }
        self.state = ConnState::Idle;
        self.generation = self.generation.wrapping_add(1);
        self.armed_deadline = None;
        self.connect_deadline = None;
        self.readable = false;
        self.writable = false;
        self.read_closed = false;
        self.peer_closed = false;
        self.read_buf.clear();
        self.queued_total = 0;
        self.written_total = 0;
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_are_spread_over_the_upper_half_of_the_backoff() {
        let base = Duration::from_millis(400);
        let mut state = 7;
        let waits: Vec<Duration> = (0..200).map(|_| jittered(base, &mut state)).collect();
        assert!(waits.iter().all(|w| *w >= base / 2 && *w <= base));
        let low = waits.iter().filter(|w| **w < base * 3 / 4).count();
        assert!(
            (50..150).contains(&low),
            "{low} of 200 in the lower quarter"
        );
    }
}
