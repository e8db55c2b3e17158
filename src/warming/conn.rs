//! One connection of a warming job to one memcached server: a non-blocking socket with an
//! output buffer, an input buffer read in bounded chunks, and a stall clock.
//!
//! The engine does not route readiness events to connections: after any wake-up every
//! connection of a job simply tries to write and read until `WouldBlock`. With a handful of
//! connections per job that costs a few failed syscalls per wake-up, and it cannot lose an edge
//! (a socket left readable because the job chose not to read it is read at the next step).

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::config::ServerSpec;
use crate::runtime::io::{read_once, OutBuf, ReadOutcome};

/// Bytes read from a socket at a time; also how much a connection buffers beyond the reply
/// it is assembling.
pub const CHUNK: usize = 64 * 1024;
/// A connection that owes the job something and shows no progress for this long (at least;
/// see [`Conn::open`]) fails the job.
pub const MIN_STALL: Duration = Duration::from_secs(5);

/// What a connection does for its job (names the server in a failure reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A source server (dump or reads).
    Source,
    /// A target server (writes).
    Target,
}

/// A job's connection to one server.
#[derive(Debug)]
pub struct Conn {
    /// The server (index into `Router::servers`).
    pub server: usize,
    side: Side,
    address: String,
    stream: TcpStream,
    connected: bool,
    out: OutBuf,
    input: Vec<u8>,
    in_pos: usize,
    in_end: usize,
    /// Requests sent or queued and not answered (dumps count 1 while streaming).
    pub owed: usize,
    last_progress: Instant,
    connect_timeout: Duration,
    stall: Duration,
}

impl Conn {
    /// Starts connecting to `spec` (server number `server`) and registers the socket.
    pub fn open(
        registry: &Registry,
        token: Token,
        server: usize,
        spec: &ServerSpec,
        side: Side,
        now: Instant,
    ) -> Result<Conn, String> {
        let fail = |e: io::Error| format!("{} {}: {}", side.name(), spec.address, describe(&e));
        let Some(addr) = spec.addr.current() else {
            spec.addr.want_resolve();
            return Err(format!(
                "{} {}: the name does not resolve (yet)",
                side.name(),
                spec.address
            ));
        };
        let mut stream = TcpStream::connect(addr).map_err(fail)?;
        registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(fail)?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            server,
            side,
            address: spec.address.clone(),
            stream,
            connected: false,
            out: OutBuf::default(),
            input: Vec::new(),
            in_pos: 0,
            in_end: 0,
            owed: 0,
            last_progress: now,
            connect_timeout: spec.connect_timeout,
            // The pool's own request timeout, with room for a whole window queued before a
            // request; never less than MIN_STALL so a short pool timeout does not fail a job
            // behind a slow bulk copy.
            stall: spec.timeout.saturating_mul(10).max(MIN_STALL),
        })
    }

    /// A failure reason naming this connection's server.
    pub fn error(&self, what: impl std::fmt::Display) -> String {
        format!("{} {}: {what}", self.side.name(), self.address)
    }

    /// Queues bytes to send; `owes` more replies.
    pub fn push(&mut self, now: Instant, owes: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if self.owed == 0 {
            // It was idle: its stall clock starts now, not at its last reply.
            self.last_progress = now;
        }
        self.owed += owes;
        write(self.out.queue());
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.out.pending()
    }

    /// Restarts the stall clock (the job chose not to read this connection).
    pub fn touch(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// Completes the connect if it has; writes what is queued. True if it made progress.
    pub fn flush(&mut self, now: Instant) -> Result<bool, String> {
        if !self.connected {
            if let Some(e) = self
                .stream
                .take_error()
                .map_err(|e| self.error(describe(&e)))?
            {
                return Err(self.error(describe(&e)));
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(self.error(describe(&e))),
            }
        }
        let wrote = match self.out.write_to(&mut self.stream, CHUNK) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WriteZero => {
                return Err(self.error("connection closed"))
            }
            Err(e) => return Err(self.error(describe(&e))),
        };
        if wrote > 0 {
            self.last_progress = now;
        }
        Ok(wrote > 0)
    }

    /// Reads one chunk if the socket has one. True if bytes arrived; an error when the server
    /// closed the connection or it failed.
    pub fn fill(&mut self, now: Instant) -> Result<bool, String> {
        if !self.connected {
            return Ok(false);
        }
        // Make room for a chunk: move the unparsed part to the front, and grow the buffer only
        // when that part is itself most of it (a large value being assembled).
        if self.in_pos == self.in_end {
            self.in_pos = 0;
            self.in_end = 0;
        } else if self.input.len() - self.in_end < CHUNK && self.in_pos > 0 {
            self.input.copy_within(self.in_pos..self.in_end, 0);
            self.in_end -= self.in_pos;
            self.in_pos = 0;
        }
        if self.input.len() - self.in_end < CHUNK {
            self.input.resize(self.in_end + CHUNK, 0);
        }
        let spare = self.input.get_mut(self.in_end..).unwrap_or_default();
        match read_once(&mut self.stream, spare) {
            Ok(ReadOutcome::Closed) => Err(self.error("connection closed")),
            Ok(ReadOutcome::Bytes(n)) => {
                self.in_end += n;
                self.last_progress = now;
                Ok(true)
            }
            Ok(ReadOutcome::WouldBlock) => Ok(false),
            Err(e) => Err(self.error(describe(&e))),
        }
    }

    /// The bytes read and not yet consumed.
    pub fn unparsed(&self) -> &[u8] {
        self.input.get(self.in_pos..self.in_end).unwrap_or_default()
    }

    /// Marks `n` bytes of [`Conn::unparsed`] consumed.
    pub fn consume(&mut self, n: usize) {
        self.in_pos = (self.in_pos + n).min(self.in_end);
        if self.in_pos == self.in_end && self.input.len() > 4 * CHUNK {
            // A large value has been passed on: do not keep its buffer.
            self.input = Vec::new();
            self.in_pos = 0;
            self.in_end = 0;
        }
    }

    /// Why this connection fails its job now, if it does: a connect or a reply overdue.
    pub fn overdue(&self, now: Instant) -> Option<String> {
        let idle = now.saturating_duration_since(self.last_progress);
        if !self.connected && idle >= self.connect_timeout {
            return Some(self.error(format!(
                "connect timed out after {:?}",
                self.connect_timeout
            )));
        }
        if self.connected && self.owed > 0 && idle >= self.stall {
            return Some(self.error(format!("no progress for {:?}", self.stall)));
        }
        None
    }

    /// When [`Conn::overdue`] would next fail it, if it is waiting for anything.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.connected {
            Some(self.last_progress + self.connect_timeout)
        } else if self.owed > 0 {
            Some(self.last_progress + self.stall)
        } else {
            None
        }
    }

    /// Deregisters and closes the socket.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// An I/O error as a failure reason reads best: "connection refused", not "Connection refused
/// (os error 111)".
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::BrokenPipe => "connection closed".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}
