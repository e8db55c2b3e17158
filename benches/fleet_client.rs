//! The fleet tests' load tool (tests/fleet.rs runs it in a container of its own, built for musl
//! by deploy/build-fleet-client-image.sh): clients that set their own keys to new values and
//! read each back through two proxies, for a while, and report what they saw.
//!
//! ```sh
//! fleet_client --proxy 10.0.0.2:11311 --proxy 10.0.0.3:11311 [--clients 8] [--seconds 6]
//! ```
//!
//! Each client keeps one connection to a proxy. When the connection closes before any byte of
//! a reply (a proxy that drains closes between requests), it reconnects to the other proxy and
//! goes on; if the request was a `set`, it first reads the key through the other proxy: the new
//! value there means the proxy applied a request whose reply was lost.
//!
//! Output, one line each, times in milliseconds since the Unix epoch (the host's clock, shared
//! with the test that reads them):
//!
//! ```text
//! started <ms>
//! error <ms>                 a SERVER_ERROR reply, or a value stored then missing (its server lost)
//! broken <description>       a wrong value, a reply cut short, garbage, a lost accepted request
//! summary ok=<n> errors=<n> clean_closes=<n> broken=<n> slowest_ms=<n>
//! ```
//! (`cargo bench --bench fleet_client` without arguments prints this usage and exits.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// What a request got.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Text(String),
    Value(Option<String>),
    ClosedBefore,
    ClosedDuring(String),
    Hung,
    Garbage(String),
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Conn> {
        let addr = addr.parse().map_err(std::io::Error::other)?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn read(&mut self, done: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, Reply> {
        let mut chunk = [0u8; 4096];
        while !done(&self.buf) {
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Err(Reply::ClosedBefore),
                Ok(0) => {
                    let partial = String::from_utf8_lossy(&self.buf).into_owned();
                    return Err(Reply::ClosedDuring(partial));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Reply::Hung)
                }
                Err(_) if self.buf.is_empty() => return Err(Reply::ClosedBefore),
                Err(_) => {
                    let partial = String::from_utf8_lossy(&self.buf).into_owned();
                    return Err(Reply::ClosedDuring(partial));
                }
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    fn set(&mut self, key: &str, value: &str) -> Reply {
        let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        if self.stream.write_all(request.as_bytes()).is_err() {
            return Reply::ClosedBefore;
        }
        match self.read(|b| b.ends_with(b"\r\n")) {
            Ok(line) => Reply::Text(String::from_utf8_lossy(&line).trim_end().to_string()),
            Err(e) => e,
        }
    }

    fn get(&mut self, key: &str) -> Reply {
        if self
            .stream
            .write_all(format!("get {key}\r\n").as_bytes())
            .is_err()
        {
            return Reply::ClosedBefore;
        }
        let reply = match self.read(|b| {
            b.ends_with(b"END\r\n") || (b.starts_with(b"SERVER_ERROR") && b.ends_with(b"\r\n"))
        }) {
            Ok(reply) => reply,
            Err(e) => return e,
        };
        let text = String::from_utf8_lossy(&reply).into_owned();
        if text == "END\r\n" {
            return Reply::Value(None);
        }
        if text.starts_with("SERVER_ERROR") {
            return Reply::Text(text.trim_end().to_string());
        }
        let header = format!("VALUE {key} 0 ");
        match text
            .strip_prefix(&header)
            .and_then(|rest| rest.split_once("\r\n"))
        {
            Some((_, rest)) => match rest.strip_suffix("\r\nEND\r\n") {
                Some(value) => Reply::Value(Some(value.to_string())),
                None => Reply::Garbage(text),
            },
            None => Reply::Garbage(text),
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    errors: Vec<u128>,
    clean_closes: u64,
    broken: Vec<String>,
    slowest: Duration,
}

fn client(id: usize, proxies: Arc<Vec<String>>, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut which = id % proxies.len().max(1);
    let other = |w: usize| (w + 1) % proxies.len().max(1);
    let mut conn: Option<Conn> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            match proxies.get(which).map(|p| Conn::open(p)) {
                Some(Ok(c)) => conn = Some(c),
                _ => {
                    which = other(which);
                    thread::sleep(Duration::from_millis(20));
                }
            }
            continue;
        };
        n += 1;
        let key = format!("fleet:c{id}:k{}", n % 16);
        let value = format!("v{n}");
        let started = Instant::now();
        let set = c.set(&key, &value);
        let got = match &set {
            Reply::Text(line) if line == "STORED" => Some(c.get(&key)),
            _ => None,
        };
        seen.slowest = seen.slowest.max(started.elapsed());
        match (set, got) {
            (Reply::Text(line), Some(Reply::Value(Some(v)))) if line == "STORED" => {
                if v == value {
                    seen.ok += 1;
                } else {
                    seen.broken
                        .push(format!("{key}: read {v} after storing {value}"));
                }
            }
            // Stored, then its server was lost before the read.
            (Reply::Text(_), Some(Reply::Value(None))) => seen.errors.push(now_ms()),
            (Reply::Text(line), _) if line.starts_with("SERVER_ERROR") => {
                seen.errors.push(now_ms())
            }
            (_, Some(Reply::Text(line))) if line.starts_with("SERVER_ERROR") => {
                seen.errors.push(now_ms())
            }
            (Reply::Text(line), Some(Reply::ClosedBefore)) if line == "STORED" => {
                // Closed between the answered set and the get: between two requests.
                seen.clean_closes += 1;
                conn = None;
                which = other(which);
            }
            (Reply::ClosedBefore, _) => {
                seen.clean_closes += 1;
                conn = None;
                which = other(which);
                let applied = proxies
                    .get(which)
                    .and_then(|p| Conn::open(p).ok())
                    .map(|mut check| check.get(&key));
                if applied == Some(Reply::Value(Some(value.clone()))) {
                    seen.broken.push(format!(
                        "{key}: set to {value} by a request whose reply was lost"
                    ));
                }
            }
            (set, got) => {
                seen.broken.push(format!("{key}: set {set:?}, get {got:?}"));
                conn = None;
            }
        }
    }
    seen
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut proxies, mut clients, mut seconds) = (Vec::new(), 8usize, 6u64);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--proxy" => proxies.extend(args.next()),
            "--clients" => clients = args.next().and_then(|v| v.parse().ok()).unwrap_or(8),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(6),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    if proxies.is_empty() {
        println!(
            "usage: fleet_client --proxy HOST:PORT [--proxy HOST:PORT] [--clients N] [--seconds S]"
        );
        return;
    }
    let proxies = Arc::new(proxies);
    let stop = Arc::new(AtomicBool::new(false));
    println!("started {}", now_ms());
    let handles: Vec<thread::JoinHandle<Seen>> = (0..clients)
        .map(|id| {
            let (proxies, stop) = (proxies.clone(), stop.clone());
            thread::spawn(move || client(id, proxies, stop))
        })
        .collect();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let all = Mutex::new(Seen::default());
    for handle in handles {
        let Ok(seen) = handle.join() else {
            println!("broken a client thread panicked");
            continue;
        };
        let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
        all.ok += seen.ok;
        all.errors.extend(seen.errors);
        all.clean_closes += seen.clean_closes;
        all.broken.extend(seen.broken);
        all.slowest = all.slowest.max(seen.slowest);
    }
    let mut all = all.into_inner().unwrap_or_else(|p| p.into_inner());
    all.errors.sort_unstable();
    for at in &all.errors {
        println!("error {at}");
    }
    for what in &all.broken {
        println!("broken {what}");
    }
    println!(
        "summary ok={} errors={} clean_closes={} broken={} slowest_ms={}",
        all.ok,
        all.errors.len(),
        all.clean_closes,
        all.broken.len(),
        all.slowest.as_millis()
    );
}
