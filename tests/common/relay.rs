//! A TCP relay on a free loopback port in front of a real server (a [`super::Memcached`]): what
//! it forwards is untouched, but every chunk of reply bytes the server sends is held for a
//! configurable delay before it is passed on, like a slow network link. A backend can so be made
//! slow while it still holds real data and answers every command as memcached does.
//!
//! Each chunk is due `delay` after it arrived from the server (not after the previous chunk
//! was passed on), so pipelined replies are delayed once each, not cumulatively, and their order
//! is kept. Requests travel to the server at once; what reached it is recorded so a test can
//! wait until a request is in flight there.
//!
//! A peer that accepts and reads but never answers is [`super::FakeBackend`] with
//! [`super::Behavior::NeverAnswer`]; this relay does not duplicate it.

use super::{lock, wait_until};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the relay's threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long the relay waits to connect to its server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep at most this much of what was forwarded to the server (the counters keep counting).
const RECORD_LIMIT: usize = 16 << 20;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// The reply delay in microseconds (read when a chunk arrives from the server).
    delay_us: AtomicU64,
    accepted: AtomicUsize,
    to_server: AtomicUsize,
    from_server: AtomicUsize,
    to_client: AtomicUsize,
    forwarded: Mutex<Vec<u8>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A delaying relay: `127.0.0.1:PORT` (bound to port 0, so no race) forwarding to `target`.
/// Stops and joins its threads on drop (closing every relayed connection).
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay to `target` ("host:port") whose replies are each held for `delay`.
    /// Each accepted connection opens its own connection to `target`.
    pub fn start(target: &str, delay: Duration) -> Relay {
        let target_addr = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("Relay: cannot resolve target {target:?}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("Relay: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().expect("Relay: local_addr");
        let shared = Arc::new(Shared::default());
        shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("relay-{}", addr.port()))
                .spawn(move || accept_loop(listener, target_addr, shared))
                .expect("Relay: spawn acceptor")
        };
        Relay {
            addr,
            target: target_addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1:PORT": the address to configure as the (slow) server.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The server behind the relay.
    pub fn target(&self) -> String {
        self.target.to_string()
    }

    /// Changes the delay of reply chunks that arrive from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.shared.delay_us.load(Ordering::SeqCst))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Request bytes forwarded to the server so far.
    pub fn bytes_to_server(&self) -> usize {
        self.shared.to_server.load(Ordering::SeqCst)
    }

    /// Reply bytes received from the server so far (delivered or still held).
    pub fn bytes_from_server(&self) -> usize {
        self.shared.from_server.load(Ordering::SeqCst)
    }

    /// Reply bytes passed on to the relay's clients so far (after their delay).
    pub fn bytes_to_client(&self) -> usize {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Everything forwarded to the server so far, connections concatenated (first 16 MiB).
    pub fn forwarded(&self) -> Vec<u8> {
        lock(&self.shared.forwarded).clone()
    }

    /// Waits until at least `n` request bytes reached the server.
    pub fn wait_for_requests(&self, n: usize, deadline: Duration) {
        let what = format!(
            "relay {} has forwarded {n} request byte(s) to {}",
            self.addr, self.target
        );
        wait_until(deadline, &what, || self.bytes_to_server() >= n);
    }

    /// Waits until every reply byte received from the server was passed on (nothing held).
    pub fn wait_drained(&self, deadline: Duration) {
        let what = format!("relay {} has passed on every reply byte", self.addr);
        wait_until(deadline, &what, || {
            self.bytes_to_client() >= self.bytes_from_server()
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the acceptor sees the flag and drops this connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        // A server that cannot be reached: the client sees its connection closed.
        let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        if let Err(e) = start_pumps(client, server, &shared) {
            eprintln!("Relay: cannot set up a relayed connection: {e}");
        }
    }
}

/// Three threads per relayed connection: requests client -> server; replies server -> a queue
/// stamped with their due time; the queue -> client once due.
fn start_pumps(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(STOP_POLL))?;
    }
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .expect("Relay: spawn connection thread");
        lock(&shared.threads).push(handle);
    };
    {
        let (from, to, shared) = (client.try_clone()?, server.try_clone()?, Arc::clone(shared));
        spawn(
            "relay-up",
            Box::new(move || pump_requests(from, to, &shared)),
        );
    }
    {
        let (from, shared) = (server.try_clone()?, Arc::clone(shared));
        spawn(
            "relay-down-read",
            Box::new(move || read_replies(from, tx, &shared)),
        );
    }
    {
        let shared = Arc::clone(shared);
        spawn(
            "relay-down-write",
            Box::new(move || write_replies(rx, client, server, &shared)),
        );
    }
    Ok(())
}

/// Reads once from `stream`, treating read timeouts as "nothing yet": `None` on EOF or error.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], shared: &Shared) -> Option<usize> {
    while !shared.stop.load(Ordering::SeqCst) {
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

fn pump_requests(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    while let Some(n) = read_some(&mut from, &mut buf, shared) {
        {
            let mut forwarded = lock(&shared.forwarded);
            let room = RECORD_LIMIT.saturating_sub(forwarded.len());
            forwarded.extend_from_slice(&buf[..n.min(room)]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        shared.to_server.fetch_add(n, Ordering::SeqCst);
    }
    // The client is gone (or stopped): let the server see the end of requests.
    let _ = to.shutdown(Shutdown::Write);
}

fn read_replies(mut from: TcpStream, tx: mpsc::Sender<(Instant, Vec<u8>)>, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    while let Some(n) = read_some(&mut from, &mut buf, shared) {
        shared.from_server.fetch_add(n, Ordering::SeqCst);
        let delay = Duration::from_micros(shared.delay_us.load(Ordering::SeqCst));
        if tx
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            return;
        }
    }
    // Dropping `tx` tells the writer the server is done once the queue is empty.
}

fn write_replies(
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut client: TcpStream,
    server: TcpStream,
    shared: &Shared,
) {
    let _ = client.set_write_timeout(Some(Duration::from_secs(10)));
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let (due, chunk) = match rx.recv_timeout(STOP_POLL) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if !sleep_until(due, shared) {
            break;
        }
        if client.write_all(&chunk).is_err() {
            break;
        }
        shared.to_client.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    // The server closed (every reply passed on), the client went away, or the relay stops.
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// Sleeps until `due` in short steps; false if the relay was stopped meanwhile.
fn sleep_until(due: Instant, shared: &Shared) -> bool {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        thread::sleep((due - now).min(STOP_POLL));
    }
}
