//! The part [`super::FakeBackend`] and [`super::Relay`] share: a loopback listener served by
//! background threads that stop and are joined when the server is dropped.

use super::lock;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the threads look at the stop flag (the read timeout of their sockets too).
pub(crate) const STOP_POLL: Duration = Duration::from_millis(20);
/// Keep at most this much of what was received (the counters keep counting).
const RECORD_LIMIT: usize = 16 << 20;

/// The stop flag of a [`Server`] and the threads it joins, shared with those threads.
#[derive(Default)]
pub(crate) struct Threads {
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    /// True once the server is being dropped.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Runs `f` on a thread named `name`, joined when the server is dropped.
    pub(crate) fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) {
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .unwrap_or_else(|e| panic!("cannot spawn thread {name}: {e}"));
        lock(&self.threads).push(handle);
    }

    /// Reads once from `stream` (whose read timeout is [`STOP_POLL`]), treating read timeouts
    /// as "nothing yet": `None` on EOF, on an error, or once the server stops.
    pub(crate) fn read_some(&self, stream: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
        while !self.stopping() {
            match stream.read(buf) {
                Ok(0) => return None,
                Ok(n) => return Some(n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Sleeps until `due` in short steps; false if the server stopped meanwhile.
    pub(crate) fn sleep_until(&self, due: Instant) -> bool {
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            thread::sleep((due - now).min(STOP_POLL));
        }
    }
}

/// Bytes a server took in: all of them counted, the first 16 MiB kept.
#[derive(Default)]
pub(crate) struct Record {
    bytes: AtomicUsize,
    kept: Mutex<Vec<u8>>,
}

impl Record {
    /// Counts and keeps (while under 16 MiB) `bytes`.
    pub(crate) fn add(&self, bytes: &[u8]) {
        {
            let mut kept = lock(&self.kept);
            let room = RECORD_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.bytes.fetch_add(bytes.len(), Ordering::SeqCst);
    }

    /// Bytes added so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// The first 16 MiB added, in order.
    pub(crate) fn kept(&self) -> Vec<u8> {
        lock(&self.kept).clone()
    }
}

/// A listener on `127.0.0.1:PORT` (bound to port 0, so no race) whose acceptor thread counts
/// and hands every accepted connection to a callback. On drop: sets the stop flag, wakes and joins the
/// acceptor, then joins every thread spawned on its [`Threads`].
pub(crate) struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    threads: Arc<Threads>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the listener and starts the acceptor (named `<what>-<port>`), which calls
    /// `on_accept` with each connection and the server's [`Threads`] until the server stops.
    pub(crate) fn start(
        what: &str,
        mut on_accept: impl FnMut(TcpStream, &Arc<Threads>) + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{what}: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{what}: local_addr: {e}"));
        let threads = Arc::new(Threads::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let (threads, accepted) = (Arc::clone(&threads), Arc::clone(&accepted));
            thread::Builder::new()
                .name(format!("{what}-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if threads.stopping() {
                            return;
                        }
                        if let Ok(stream) = stream {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            on_accept(stream, &threads);
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("{what}: spawn acceptor: {e}"))
        };
        Server {
            addr,
            accepted,
            threads,
            acceptor: Some(acceptor),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.threads.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the acceptor sees the flag and drops this connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *lock(&self.threads.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}
