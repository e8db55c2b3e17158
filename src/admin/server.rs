//! The admin API's event loop: one thread, one mio `Poll`, a listener and up to
//! `max_connections` HTTP connections, each a small state machine.
//!
//! A connection reads into one buffer, answers every complete request at its front in order
//! (pipelining) into one output buffer, and writes that out. Every connection has one deadline
//! at a time, worked out from its state (a request started but not finished: the request
//! timeout; nothing to do: the idle timeout; closing: the linger), and with at most a few dozen
//! connections the loop finds the nearest by looking at each, instead of keeping a timer wheel.

use std::io::{self, Read, Write};
use std::net::Shutdown as HowShutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::http::{self, Limits, Parsed, Response};
use super::router;
use super::AdminApi;
use crate::log_limit::{LogEvent, LogLimiter};
use crate::shutdown::Shutdown;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection `i` has token `CONN_BASE + i`.
const CONN_BASE: usize = 2;
/// Bytes read from a socket at a time; small enough that an oversized head is noticed early.
const READ_CHUNK: usize = 16 * 1024;
/// Over this many response bytes waiting to be written, no further pipelined request is
/// answered until the client reads: a client that sends without reading cannot make the
/// server buffer without bound.
const OUT_HIGH_WATER: usize = 256 * 1024;
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
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// How much of `output` has been written.
    written: usize,
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
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            phase: Phase::Open,
            request_started: None,
            last_activity: now,
            continue_sent: false,
            readable: true,
            peer_closed: false,
        }
    }

    fn pending_output(&self) -> usize {
        self.output.len().saturating_sub(self.written)
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
                Some(t) => (t + limits.request_timeout, Expiry::RequestTimeout),
                None => (self.last_activity + limits.idle_timeout, Expiry::Close),
            },
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
            if self.readable && self.may_read(&server.limits) {
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
    fn may_read(&self, limits: &Limits) -> bool {
        match self.phase {
            Phase::Open => {
                !self.peer_closed
                    && self.input.len() < limits.max_head + limits.max_body
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
                    let refused = head.and_then(|h| router::refusal(server.token.as_deref(), &h));
                    if let Some(response) = refused {
                        // Refused whatever its body: answered now, and the connection closed
                        // (the body still on its way is not read).
                        response.render(&mut self.output, false, false, false);
                        self.phase = Phase::Closing;
                        return true;
                    }
                    if expects_continue && !self.continue_sent {
                        self.output.extend_from_slice(http::CONTINUE);
                        self.continue_sent = true;
                        progress = true;
                    }
                    break;
                }
                Parsed::Reject(status, reason) => {
                    Response::reject(status, reason).render(&mut self.output, false, false, false);
                    self.phase = Phase::Closing;
                    return true;
                }
                Parsed::Complete(req, consumed) => {
                    let response =
                        router::route(server.api.as_ref(), server.token.as_deref(), &req);
                    let keep_alive = req.keep_alive && !response.close;
                    let head_only = req.method == "HEAD";
                    response.render(&mut self.output, head_only, keep_alive, req.http10);
                    if !keep_alive {
                        self.phase = Phase::Closing;
                    }
                    consumed
                }
            };
            self.input.drain(..consumed.min(self.input.len()));
            self.continue_sent = false;
            self.request_started = (!self.input.is_empty()).then_some(now);
            progress = true;
        }
        progress
    }

    /// Writes pending output until done or the socket is full. Ok(true) if bytes were written.
    fn flush(&mut self, now: Instant) -> io::Result<bool> {
        let mut wrote = false;
        while let Some(pending) = self.output.get(self.written..).filter(|p| !p.is_empty()) {
            match self.stream.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.last_activity = now;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pending_output() == 0 && !self.output.is_empty() {
            self.output.clear();
            self.written = 0;
            // A request held back while responses waited starts its clock now, not when it
            // arrived: the wait was the client's slow reading, not its slow sending.
            if self.request_started.is_some() {
                self.request_started = Some(now);
            }
        }
        Ok(wrote)
    }

    /// One read of up to [`READ_CHUNK`] bytes. Ok(0) when nothing came (would block, or the
    /// client closed, which sets `peer_closed`).
    fn read(&mut self, now: Instant) -> io::Result<usize> {
        let old = self.input.len();
        self.input.resize(old + READ_CHUNK, 0);
        let result = loop {
            match self
                .stream
                .read(self.input.get_mut(old..).unwrap_or_default())
            {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match result {
            Ok(0) => {
                self.peer_closed = true;
                self.readable = false;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                0
            }
            Err(e) => {
                self.input.truncate(old);
                return Err(e);
            }
        };
        self.input.truncate(old + n);
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
        match what {
            Expiry::Close => false,
            Expiry::RequestTimeout => {
                Response::reject(408, "the request did not arrive in time").render(
                    &mut self.output,
                    false,
                    false,
                    false,
                );
                self.phase = Phase::Closing;
                self.input.clear();
                self.last_activity = now;
                self.drive(now, server)
            }
        }
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
                    if self.conns.len() >= self.settings.limits.max_connections {
                        self.refuse(stream, peer, now);
                    } else {
                        self.admit(stream, now);
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
        entry.insert(Conn::new(stream, now));
        let keep = match self.conns.get_mut(key) {
            Some(conn) => conn.drive(now, &self.settings),
            None => true,
        };
        if !keep {
            self.close(key);
        }
    }

    /// Over the cap: a 503 written straight into the fresh socket's empty send buffer (it fits;
    /// if not, the client just sees the close), then closed.
    fn refuse(&mut self, mut stream: TcpStream, peer: std::net::SocketAddr, now: Instant) {
        let max = self.settings.limits.max_connections;
        let mut out = Vec::new();
        Response::reject(503, &format!("too many admin connections (at most {max})"))
            .header("Retry-After", "1")
            .render(&mut out, false, false, false);
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
        }
    }
}
