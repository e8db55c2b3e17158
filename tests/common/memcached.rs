//! A real memcached on a free loopback port.

use super::{free_port, looks_like_addr_in_use, Client, Proc, POLL, START_ATTEMPTS, START_TIMEOUT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Options for [`Memcached`]; `Memcached::start()` uses the defaults
/// (`-m 64 -t 1 -c 4096 -I 2m`, so bifrost's 1 MiB value limit is the one that binds).
#[derive(Clone, Debug)]
pub struct MemcachedBuilder {
    memory_mb: u32,
    threads: u32,
    max_item_size: String,
    extra: Vec<String>,
    port: Option<u16>,
}

impl Default for MemcachedBuilder {
    fn default() -> Self {
        MemcachedBuilder {
            memory_mb: 64,
            threads: 1,
            max_item_size: "2m".to_string(),
            extra: Vec::new(),
            port: None,
        }
    }
}

impl MemcachedBuilder {
    /// `-m`: memory limit in MiB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// `-t`: worker threads.
    pub fn threads(mut self, n: u32) -> Self {
        self.threads = n;
        self
    }

    /// `-I`: item size limit, e.g. "1m" or "2m".
    pub fn max_item_size(mut self, size: &str) -> Self {
        self.max_item_size = size.to_string();
        self
    }

    /// Any other option, appended after the defaults (memcached takes the last of a repeated one).
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_string());
        self
    }

    /// Listen on this port (a server restarted where it was) instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts memcached and waits until it answers; retries with a new port if the port was
    /// taken; panics (with memcached's output) if it does not come up within 10 s.
    pub fn start(&self) -> Memcached {
        for _ in 0..START_ATTEMPTS {
            let port = self.port.unwrap_or_else(free_port);
            let mut cmd = Command::new("memcached");
            cmd.args(["-l", "127.0.0.1", "-U", "0", "-c", "4096"])
                .args(["-p", &port.to_string()])
                .args(["-m", &self.memory_mb.to_string()])
                .args(["-t", &self.threads.to_string()])
                .args(["-I", &self.max_item_size])
                .args(&self.extra);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                cmd.args(["-u", "root"]); // memcached refuses to run as root without -u
            }
            let mut mc = Memcached {
                proc: Proc::spawn("memcached", &mut cmd),
                port,
            };
            if mc.wait_ready() {
                return mc;
            }
            // The port was taken between free_port() and memcached's bind: try another.
        }
        panic!("memcached: the port was taken on each of {START_ATTEMPTS} attempts");
    }
}

/// A running memcached, SIGKILLed and reaped on drop.
pub struct Memcached {
    proc: Proc,
    port: u16,
}

impl Memcached {
    /// `memcached -l 127.0.0.1 -p PORT -U 0 -m 64 -t 1 -c 4096 -I 2m`, ready to serve.
    pub fn start() -> Memcached {
        MemcachedBuilder::default().start()
    }

    /// The defaults plus `extra` options (a later `-m`/`-I`/`-t` overrides the default).
    pub fn start_with(extra: &[&str]) -> Memcached {
        extra
            .iter()
            .fold(MemcachedBuilder::default(), |b, arg| b.arg(arg))
            .start()
    }

    pub fn builder() -> MemcachedBuilder {
        MemcachedBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// A new client connected straight to this memcached.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.exited().is_none()
    }

    /// SIGKILL and reap (a backend dying without a goodbye). Its port then refuses connections.
    pub fn kill(&mut self) -> ExitStatus {
        self.proc.kill()
    }

    /// memcached's own output (stdout and stderr).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Waits until `stats` on our port reports our pid. False if the process exited because the
    /// address was in use; panics on any other failure or after the start timeout.
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        let want = format!("STAT pid {}\r\n", self.pid());
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self.proc.exited() {
                if looks_like_addr_in_use(&self.proc.log()) {
                    return false;
                }
                panic!("memcached exited ({status}) before answering (log below)");
            }
            if stats_reply(addr).is_some_and(|stats| stats.contains(&want)) {
                return true;
            }
            if start.elapsed() >= START_TIMEOUT {
                panic!(
                    "memcached on {addr} did not answer `stats` within {START_TIMEOUT:?} (log below)",
                );
            }
            thread::sleep(POLL);
        }
    }
}

/// The raw reply to `stats`, or `None` if the port does not answer (yet).
fn stats_reply(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(b"stats\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    while !reply.ends_with(b"END\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}
