//! The admin API's event loop: one thread, one mio `Poll`, a listener and up to
//! `max_connections` HTTP connections, each a small state machine.
//!
//! A connection reads into one buffer, answers every complete request at its front in order
//! (pipelining) into one output buffer, and writes that out. Every connection has one deadline
//! at a time, worked out from its state (a head not yet whole: the header timeout; a body on
//! its way: the request timeout; nothing to do: the idle timeout; closing: the linger), and
//! with at most a few dozen connections the loop finds the nearest by looking at each, instead
//! of keeping a timer wheel.
//!
//! The probes must get in whatever other clients do, so a slot is never held for nothing: a
//! client must send a whole head within the header timeout, and when the cap is full a new
//! connection evicts the oldest one that has no request in progress (silent, half a head,
//! idle between requests, finished, or not reading its answers). Only a request whose head
//! was accepted (a `POST /warm` with the token) or an answer being written is protected.
//! A connection only reads what its current request needs (at most a head, and a body only
//! once the head is accepted), so a client without the token holds a few KiB at most.

use std::io::{self, Write};
use std::net::Shutdown as HowShutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::http::{self, Limits, Parsed, Response};
use super::router;
use super::AdminApi;
use crate::observe::stats::WorkerStats;
use crate::runtime::io::{read_once, OutBuf, ReadOutcome};
use crate::runtime::log_limit::{LogEvent, LogLimiter};
use crate::runtime::shutdown::Shutdown;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection `i` has token `CONN_BASE + i`.
const CONN_BASE: usize = 2;
/// Bytes read from a socket at a time (at most: a connection reads no further than its current
/// request needs).
const READ_CHUNK: usize = 16 * 1024;
/// Over this many response bytes waiting to be written, no further pipelined request is
/// answered until the client reads: a client that sends without reading holds one answer and
/// this much at most.
const OUT_HIGH_WATER: usize = 16 * 1024;
/// A buffer emptied with more capacity than this is released rather than kept for the next
/// request: an idle connection holds no memory from a big body or answer it once had.
const KEEP_CAPACITY: usize = 16 * 1024;
/// How soon to try accepting again after accept failed (out of file descriptors, say): with an
/// edge-triggered listener, no new event would come for the connections already waiting.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading requests and answering them.
    Open,
    /// Writing what is left, then closing: no further request is read.
    Closing,
    /// Everything written and our side shut down: reading and discarding until the client
    /// closes too, or until the given time.
    Lingering(Instant),
}

/// What to do when a connection's deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// Close at once (idle, stalled, or done lingering).
    Close,
    /// A request did not arrive in time: answer 408 and close.
    RequestTimeout,
    /// No whole head within the header timeout: 408 and close, or just close when nothing
    /// was sent.
    HeaderTimeout,
}

/// How willing a connection is to give its slot to a new one, most willing first: closing
/// ones, then those waiting for a head (by how long they have been waiting), then those whose
/// client has not read its answers for a header timeout.
type EvictRank = (u8, Instant);

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: OutBuf,
    phase: Phase,
    /// When the request at the front of `input` started to arrive (`None`: no request begun).
    request_started: Option<Instant>,
    /// The last time bytes moved either way.
    last_activity: Instant,
    /// `100 Continue` was sent for the request at the front of `input`.
    continue_sent: bool,
    /// The socket may have bytes to read (cleared when a read would block).
    readable: bool,
    /// The client has closed its side.
    peer_closed: bool,
    /// When it was accepted: a new connection's head is timed from here.
    accepted: Instant,
    /// A request has been answered: the connection is kept alive between requests.
    served: bool,
    /// The head at the front of `input` was accepted and its body is on its way.
    awaiting_body: bool,
    /// How many bytes of `input` the current request can use: up to one byte past the head
    /// limit while the head is incomplete, then the head and its announced body. Nothing
    /// beyond is read until the request is answered.
    need: usize,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant, limits: &Limits) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            output: OutBuf::default(),
            phase: Phase::Open,
            request_started: None,
            last_activity: now,
            continue_sent: false,
            readable: true,
            peer_closed: false,
            accepted: now,
            served: false,
            awaiting_body: false,
            need: limits.max_head + 1,
        }
    }

    fn pending_output(&self) -> usize {
        self.output.pending()
    }

    /// The connection's next deadline and what happens then.
    fn deadline(&self, limits: &Limits) -> (Instant, Expiry) {
        match self.phase {
            Phase::Lingering(until) => (until, Expiry::Close),
            Phase::Closing => (self.last_activity + limits.linger, Expiry::Close),
            Phase::Open if self.pending_output() > 0 => {
                (self.last_activity + limits.idle_timeout, Expiry::Close)
            }
            Phase::Open => match self.request_started {
                Some(t) if self.awaiting_body => {
                    (t + limits.request_timeout, Expiry::RequestTimeout)
                }
                Some(t) => {
                    let head = self.head_clock(t) + limits.header_timeout;
                    let request = t + limits.request_timeout;
                    if request < head {
                        (request, Expiry::RequestTimeout)
                    } else {
                        (head, Expiry::HeaderTimeout)
                    }
                }
                None if !self.served => {
                    (self.accepted + limits.header_timeout, Expiry::HeaderTimeout)
                }
                None => (self.last_activity + limits.idle_timeout, Expiry::Close),
            },
        }
    }

    /// Where the header timeout of a head whose first byte came at `first_byte` runs from: a
    /// new connection's from its accept (sending one byte does not buy time), a kept-alive
    /// one's from that byte.
    fn head_clock(&self, first_byte: Instant) -> Instant {
        if self.served {
            first_byte
        } else {
            self.accepted
        }
    }

    /// How willing the connection is to be evicted for a new one; `None` when it is busy (a
    /// body on its way for an accepted head, or an answer being written).
    fn evict_rank(&self, now: Instant, limits: &Limits) -> Option<EvictRank> {
        match self.phase {
            Phase::Closing | Phase::Lingering(_) => Some((0, self.last_activity)),
            Phase::Open if self.pending_output() > 0 => {
                (self.last_activity + limits.header_timeout <= now)
                    .then_some((2, self.last_activity))
            }
            Phase::Open if self.awaiting_body => None,
            Phase::Open => {
                let waiting_since = match self.request_started {
                    Some(t) => self.head_clock(t),
                    None if self.served => self.last_activity,
                    None => self.accepted,
                };
                Some((1, waiting_since))
            }
        }
    }

    /// Answers what can be answered, writes, reads, until nothing moves. Returns false when
    /// the connection is finished and must be dropped.
    fn drive(&mut self, now: Instant, server: &Settings) -> bool {
        loop {
            let mut progress = false;
            if self.phase == Phase::Open {
                progress |= self.answer(now, server);
            }
            match self.flush(now) {
                Ok(wrote) => progress |= wrote,
                Err(_) => return false,
            }
            if self.phase == Phase::Closing && self.pending_output() == 0 {
                if self.peer_closed {
                    return false;
                }
                // Our FIN tells the client the response is complete; reading on until its
                // own close keeps the kernel from answering late bytes with a reset.
                if self.stream.shutdown(HowShutdown::Write).is_err() {
                    return false;
                }
                self.input.clear();
                self.phase = Phase::Lingering(now + server.limits.linger);
                progress = true;
            }
            if self.readable && self.may_read() {
                match self.read(now) {
                    Ok(n) => progress |= n > 0,
                    Err(_) => return false,
                }
                if let Phase::Lingering(_) = self.phase {
                    if self.peer_closed {
                        return false;
                    }
                    self.input.clear();
                }
            }
            if !progress {
                if self.phase == Phase::Open
                    && self.peer_closed
                    && self.pending_output() < OUT_HIGH_WATER
                {
                    // Every complete request is answered; whatever is left in `input` can
                    // never be completed. Finish writing and close.
                    self.phase = Phase::Closing;
                    continue;
                }
                return true;
            }
        }
    }

    /// True when reading more is useful now.
    fn may_read(&self) -> bool {
        match self.phase {
            Phase::Open => {
                !self.peer_closed
                    && self.input.len() < self.need
                    && self.pending_output() < OUT_HIGH_WATER
            }
            Phase::Closing => false,
            Phase::Lingering(_) => !self.peer_closed,
        }
    }

    /// Answers every complete request at the front of `input`, in order, while the output is
    /// below its high-water mark. Returns true if anything changed.
    fn answer(&mut self, now: Instant, server: &Settings) -> bool {
        let mut progress = false;
        while self.phase == Phase::Open
            && !self.input.is_empty()
            && self.pending_output() < OUT_HIGH_WATER
        {
            let consumed = match http::parse(&self.input, &server.limits) {
                Parsed::Incomplete {
                    expects_continue,
                    head,
                } => {
                    let Some(head) = head else {
                        self.need = server.limits.max_head + 1;
                        break;
                    };
                    if let Some(response) = router::refusal(server.token.as_deref(), &head) {
                        // Refused whatever its body: answered now, and the connection closed
                        // (the body still on its way is not read).
                        response.render(self.output.queue(), false, false, false);
                        self.phase = Phase::Closing;
                        return true;
                    }
                    // Accepted: now, and only now, the body is worth reading, into room
                    // reserved for exactly it.
                    self.need = head.head_len.saturating_add(head.content_length);
                    if !self.awaiting_body {
                        self.awaiting_body = true;
                        self.input
                            .reserve_exact(self.need.saturating_sub(self.input.len()));
                    }
                    if expects_continue && !self.continue_sent {
                        self.output.queue().extend_from_slice(http::CONTINUE);
                        self.continue_sent = true;
                        progress = true;
                    }
                    break;
                }
                Parsed::Reject(status, reason) => {
                    Response::reject(status, reason).render(
                        self.output.queue(),
                        false,
                        false,
                        false,
                    );
                    self.phase = Phase::Closing;
                    return true;
                }
                Parsed::Complete(req, consumed) => {
                    let response =
                        router::route(server.api.as_ref(), server.token.as_deref(), &req);
                    let keep_alive = req.keep_alive && !response.close;
                    let head_only = req.method == "HEAD";
                    response.render(self.output.queue(), head_only, keep_alive, req.http10);
                    if !keep_alive {
                        self.phase = Phase::Closing;
                    }
                    consumed
                }
            };
            self.input.drain(..consumed.min(self.input.len()));
            if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
                self.input = Vec::new();
            }
            self.continue_sent = false;
            self.served = true;
            self.awaiting_body = false;
            self.need = server.limits.max_head + 1;
            self.request_started = (!self.input.is_empty()).then_some(now);
            progress = true;
        }
        progress
    }

    /// Writes pending output until done or the socket is full. Ok(true) if bytes were written.
    fn flush(&mut self, now: Instant) -> io::Result<bool> {
        let had_output = !self.output.is_empty();
        let wrote = self.output.write_to(&mut self.stream, KEEP_CAPACITY)? > 0;
        if wrote {
            self.last_activity = now;
        }
        if had_output && self.output.is_empty() {
            // A request held back while responses waited starts its clock now, not when it
            // arrived: the wait was the client's slow reading, not its slow sending.
            if self.request_started.is_some() {
                self.request_started = Some(now);
            }
        }
        Ok(wrote)
    }

    /// One read of up to [`READ_CHUNK`] bytes, no more than the current request needs (what
    /// a lingering connection reads is thrown away). Ok(0) when nothing came (would block, or
    /// the client closed, which sets `peer_closed`).
    fn read(&mut self, now: Instant) -> io::Result<usize> {
        let old = self.input.len();
        let lingering = matches!(self.phase, Phase::Lingering(_));
        let room = if lingering {
            READ_CHUNK
        } else {
            self.need.saturating_sub(old).min(READ_CHUNK)
        };
        let mut chunk = [0u8; READ_CHUNK];
        let buf = chunk.get_mut(..room).unwrap_or_default();
        let n = match read_once(&mut self.stream, buf)? {
            ReadOutcome::Closed => {
                self.peer_closed = true;
                self.readable = false;
                0
            }
            ReadOutcome::Bytes(n) => n,
            ReadOutcome::WouldBlock => {
                self.readable = false;
                0
            }
        };
        if !lingering {
            self.input
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        if n > 0 {
            self.last_activity = now;
            if old == 0 && self.request_started.is_none() {
                self.request_started = Some(now);
            }
        }
        Ok(n)
    }

    /// The deadline passed: close, or answer 408 first.
    fn expire(&mut self, what: Expiry, now: Instant, server: &Settings) -> bool {
        let reason = match what {
            Expiry::Close => return false,
            Expiry::HeaderTimeout => {
                WorkerStats::add(&server.stats.admin_header_timeouts, 1);
                if self.input.is_empty() {
                    // Nothing sent: nobody to answer.
                    return false;
                }
                "the request head did not arrive in time"
            }
            Expiry::RequestTimeout => "the request did not arrive in time",
        };
        Response::reject(408, reason).render(self.output.queue(), false, false, false);
        self.phase = Phase::Closing;
        self.input.clear();
        self.last_activity = now;
        self.drive(now, server)
    }
}

/// What every connection's handling needs.
pub(super) struct Settings {
    /// The endpoints' data.
    pub api: Arc<dyn AdminApi>,
    /// The bearer token for POST and DELETE, if configured.
    pub token: Option<String>,
    /// Sizes, timeouts and the connection cap.
    pub limits: Limits,
    /// The admin thread's counters (`admin_*`); this thread is their only writer.
    pub stats: Arc<WorkerStats>,
}

/// The admin server's loop, built on the calling thread (so that set-up errors reach
/// start-up) and then run on a thread of its own.
pub(super) struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    settings: Settings,
    shutdown: Arc<Shutdown>,
    log: LogLimiter,
    accept_retry: Option<Instant>,
}

impl Server {
    /// Registers `listener` and a shutdown waker on a new poll.
    pub fn new(
        listener: std::net::TcpListener,
        settings: Settings,
        shutdown: Arc<Shutdown>,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        shutdown.add_waker(Arc::new(Waker::new(poll.registry(), WAKER)?));
        Ok(Server {
            poll,
            listener,
            conns: Slab::new(),
            settings,
            shutdown,
            log: LogLimiter::with_subjects(0),
            accept_retry: None,
        })
    }

    /// Serves until shutdown is requested.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut expired = Vec::new();
        while !self.shutdown.is_requested() {
            let now = Instant::now();
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("admin API: poll failed, the admin API stops: {e}");
                    return;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    Token(t) => {
                        let key = t.wrapping_sub(CONN_BASE);
                        let keep = match self.conns.get_mut(key) {
                            Some(conn) => {
                                // Any event (readable, closed, error) may mean a read
                                // has something to say; one that would block costs little.
                                conn.readable = true;
                                conn.drive(now, &self.settings)
                            }
                            None => true,
                        };
                        if !keep {
                            self.close(key);
                        }
                    }
                }
            }
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.accept_retry = None;
                self.accept_all(now);
            }
            expired.clear();
            for (key, conn) in self.conns.iter() {
                let (at, what) = conn.deadline(&self.settings.limits);
                if at <= now {
                    expired.push((key, what));
                }
            }
            for &(key, what) in &expired {
                let keep = match self.conns.get_mut(key) {
                    Some(conn) => conn.expire(what, now, &self.settings),
                    None => true,
                };
                if !keep {
                    self.close(key);
                }
            }
        }
        log::debug!("admin API stopped");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self
            .conns
            .iter()
            .map(|(_, c)| c.deadline(&self.settings.limits).0);
        conns.chain(self.accept_retry).min()
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.conns.len() < self.settings.limits.max_connections {
                        self.admit(stream, now);
                    } else if let Some(victim) = self.eviction_victim(now) {
                        self.evict(victim, peer, now);
                        self.admit(stream, now);
                    } else {
                        self.refuse(stream, peer, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.log.warn(
                        LogEvent::AcceptFailed,
                        None,
                        now,
                        format_args!("admin API: accept failed: {e}"),
                    );
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key() + CONN_BASE);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            log::warn!("admin API: cannot register a connection: {e}");
            return;
        }
        // Small responses go out at once rather than waiting on Nagle for the next write.
        let _ = stream.set_nodelay(true);
        let key = entry.key();
        entry.insert(Conn::new(stream, now, &self.settings.limits));
        WorkerStats::add(&self.settings.stats.admin_connections, 1);
        let keep = match self.conns.get_mut(key) {
            Some(conn) => conn.drive(now, &self.settings),
            None => true,
        };
        if !keep {
            self.close(key);
        }
    }

    /// The connection to close for a new one when the cap is full: the most willing by
    /// [`Conn::evict_rank`]; `None` when every one is busy.
    fn eviction_victim(&self, now: Instant) -> Option<usize> {
        self.conns
            .iter()
            .filter_map(|(key, c)| Some((c.evict_rank(now, &self.settings.limits)?, key)))
            .min()
            .map(|(_, key)| key)
    }

    /// Closes connection `key` at once to make room for a new one from `peer`.
    fn evict(&mut self, key: usize, peer: std::net::SocketAddr, now: Instant) {
        WorkerStats::add(&self.settings.stats.admin_connections_evicted, 1);
        let max = self.settings.limits.max_connections;
        self.log.warn(
            LogEvent::ClientClosed,
            None,
            now,
            format_args!(
                "admin API: {max} connections open: closed one without a request in progress \
                 to admit {peer}"
            ),
        );
        self.close(key);
    }

    /// Over the cap: a 503 written straight into the fresh socket's empty send buffer (it fits;
    /// if not, the client just sees the close), then closed.
    fn refuse(&mut self, mut stream: TcpStream, peer: std::net::SocketAddr, now: Instant) {
        let max = self.settings.limits.max_connections;
        let mut out = Vec::new();
        Response::reject(503, &format!("too many admin connections (at most {max})"))
            .header("Retry-After", "1")
            .render(&mut out, false, false, false);
        // Counted before the close, which the client may see at once.
        WorkerStats::add(&self.settings.stats.admin_connections_rejected, 1);
        let _ = stream.write(&out);
        let _ = stream.shutdown(HowShutdown::Both);
        self.log.warn(
            LogEvent::ClientClosed,
            None,
            now,
            format_args!("admin API: refused a connection from {peer}: {max} already open"),
        );
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            WorkerStats::sub(&self.settings.stats.admin_connections, 1);
        }
    }
}
