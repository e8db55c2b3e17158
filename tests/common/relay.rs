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

use super::server::{Record, Server, Threads, STOP_POLL};
use super::wait_until;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the relay waits to connect to its server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    /// The reply delay in microseconds (read when a chunk arrives from the server).
    delay_us: AtomicU64,
    /// What was forwarded to the server.
    requests: Record,
    from_server: AtomicUsize,
    to_client: AtomicUsize,
}

/// A delaying relay: `127.0.0.1:PORT` (bound to port 0, so no race) forwarding to `target`.
/// Stops and joins its threads on drop (closing every relayed connection).
pub struct Relay {
    target: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
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
        let shared = Arc::new(Shared::default());
        shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
        let server = {
            let shared = Arc::clone(&shared);
            Server::start("relay", move |client, threads| {
                // A server that cannot be reached: the client sees its connection closed.
                let Ok(server) = TcpStream::connect_timeout(&target_addr, CONNECT_TIMEOUT) else {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                };
                if let Err(e) = start_pumps(client, server, &shared, threads) {
                    eprintln!("Relay: cannot set up a relayed connection: {e}");
                }
            })
        };
        Relay {
            target: target_addr,
            shared,
            server,
        }
    }

    /// "127.0.0.1:PORT": the address to configure as the (slow) server.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
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
        self.server.connections()
    }

    /// Request bytes forwarded to the server so far.
    pub fn bytes_to_server(&self) -> usize {
        self.shared.requests.len()
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
        self.shared.requests.kept()
    }

    /// Waits until at least `n` request bytes reached the server.
    pub fn wait_for_requests(&self, n: usize, deadline: Duration) {
        let what = format!(
            "relay {} has forwarded {n} request byte(s) to {}",
            self.server.addr(),
            self.target
        );
        wait_until(deadline, &what, || self.bytes_to_server() >= n);
    }

    /// Waits until every reply byte received from the server was passed on (nothing held).
    pub fn wait_drained(&self, deadline: Duration) {
        let what = format!(
            "relay {} has passed on every reply byte",
            self.server.addr()
        );
        wait_until(deadline, &what, || {
            self.bytes_to_client() >= self.bytes_from_server()
        });
    }
}

/// Three threads per relayed connection: requests client -> server; replies server -> a queue
/// stamped with their due time; the queue -> client once due.
fn start_pumps(
    client: TcpStream,
    server: TcpStream,
    shared: &Arc<Shared>,
    threads: &Arc<Threads>,
) -> std::io::Result<()> {
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(STOP_POLL))?;
    }
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    // What each thread owns: the counters and the stop flag, and its sockets.
    let own = || (Arc::clone(shared), Arc::clone(threads));
    {
        let ((shared, t), from, to) = (own(), client.try_clone()?, server.try_clone()?);
        threads.spawn("relay-up", move || pump_requests(from, to, &shared, &t));
    }
    {
        let ((shared, t), from) = (own(), server.try_clone()?);
        threads.spawn("relay-down-read", move || {
            read_replies(from, tx, &shared, &t)
        });
    }
    {
        let (shared, t) = own();
        threads.spawn("relay-down-write", move || {
            write_replies(rx, client, server, &shared, &t)
        });
    }
    Ok(())
}

fn pump_requests(mut from: TcpStream, mut to: TcpStream, shared: &Shared, threads: &Threads) {
    let mut buf = [0u8; 16 * 1024];
    while let Some(n) = threads.read_some(&mut from, &mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        shared.requests.add(&buf[..n]);
    }
    // The client is gone (or stopped): let the server see the end of requests.
    let _ = to.shutdown(Shutdown::Write);
}

fn read_replies(
    mut from: TcpStream,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    shared: &Shared,
    threads: &Threads,
) {
    let mut buf = [0u8; 16 * 1024];
    while let Some(n) = threads.read_some(&mut from, &mut buf) {
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
    threads: &Threads,
) {
    let _ = client.set_write_timeout(Some(Duration::from_secs(10)));
    while !threads.stopping() {
        let (due, chunk) = match rx.recv_timeout(STOP_POLL) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if !threads.sleep_until(due) {
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
