//! The binary under test, started with a YAML config written to a temp file.

use super::{
    free_port, looks_like_addr_in_use, Client, Memcached, Proc, TempFile, EXIT_TIMEOUT, POLL,
    START_ATTEMPTS, START_TIMEOUT,
};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The path cargo built the binary at.
pub const BIN: &str = env!("CARGO_BIN_EXE_bifrost");

/// A running bifrost. Killed (SIGKILL) on drop; a failing test prints its log.
pub struct Bifrost {
    proc: Proc,
    addr: SocketAddr,
    config: TempFile,
}

/// Why a start attempt failed in a way worth retrying.
struct PortTaken;

impl Bifrost {
    /// Starts bifrost with `config_yaml`; the address to wait on is the first listener's `bind`.
    /// No retry: the config's ports are the caller's (see [`Bifrost::start_templated`]).
    pub fn start(config_yaml: &str) -> Bifrost {
        Bifrost::start_with_args(config_yaml, &[])
    }

    /// [`Bifrost::start`] with extra command-line arguments (e.g. `["--workers", "2"]`).
    pub fn start_with_args(config_yaml: &str, args: &[&str]) -> Bifrost {
        let addr = first_listener_addr(config_yaml);
        match Bifrost::launch(config_yaml, addr, args, None) {
            Ok(bifrost) => bifrost,
            Err(PortTaken) => panic!("bifrost: listener address {addr} is already in use"),
        }
    }

    /// Starts bifrost with the config `make_yaml(port)`, where `port` is a free port for the
    /// listener it waits on; if that port was taken meanwhile, retries with another.
    /// Other ports the config needs can come from [`free_port`] inside `make_yaml`.
    pub fn start_templated(make_yaml: impl FnMut(u16) -> String, args: &[&str]) -> Bifrost {
        Bifrost::start_limited(make_yaml, args, None)
    }

    /// [`Bifrost::start_templated`] with RLIMIT_NOFILE set to (soft, hard) in the child before
    /// it runs, when `fd_limit` is given.
    pub fn start_limited(
        mut make_yaml: impl FnMut(u16) -> String,
        args: &[&str],
        fd_limit: Option<(u64, u64)>,
    ) -> Bifrost {
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Ok(bifrost) = Bifrost::launch(&make_yaml(port), addr, args, fd_limit) {
                return bifrost;
            }
        }
        panic!("bifrost: the listener port was taken on each of {START_ATTEMPTS} attempts");
    }

    /// blind_forward to `mc` with one worker: the reference config of the test suite.
    pub fn blind_forward(mc: &Memcached) -> Bifrost {
        BlindForward::new(&mc.addr()).start()
    }

    /// blind_forward to any "host:port" (e.g. a [`super::FakeBackend`]) with one worker.
    pub fn blind_forward_to(backend_addr: &str) -> Bifrost {
        BlindForward::new(backend_addr).start()
    }

    /// Runs `bifrost --check --config FILE` on `config_yaml` (10 s deadline).
    pub fn check(config_yaml: &str) -> CheckOutcome {
        let config = TempFile::new("check", "yaml", config_yaml.as_bytes());
        let (stdout, stderr) = (
            TempFile::new("check", "stdout", b""),
            TempFile::new("check", "stderr", b""),
        );
        let create = |f: &TempFile| File::create(f.path()).expect("create output file");
        let mut child = Command::new(BIN)
            .arg("--check")
            .arg("--config")
            .arg(config.path())
            .stdin(Stdio::null())
            .stdout(create(&stdout))
            .stderr(create(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for bifrost --check") {
                break status;
            }
            if start.elapsed() >= EXIT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bifrost --check did not exit within {EXIT_TIMEOUT:?}; stderr: {}",
                    stderr.read()
                );
            }
            thread::sleep(POLL);
        };
        CheckOutcome {
            status,
            stdout: stdout.read(),
            stderr: stderr.read(),
            config,
        }
    }

    fn launch(
        yaml: &str,
        addr: SocketAddr,
        args: &[&str],
        fd_limit: Option<(u64, u64)>,
    ) -> Result<Bifrost, PortTaken> {
        let config = TempFile::new("config", "yaml", yaml.as_bytes());
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(config.path()).args(args);
        if let Some((soft, hard)) = fd_limit {
            super::limit_open_files(&mut cmd, soft, hard);
        }
        // RUST_LOG and the rest of the environment pass through.
        let mut bifrost = Bifrost {
            proc: Proc::spawn("bifrost", &mut cmd),
            addr,
            config,
        };
        bifrost.wait_ready()?;
        Ok(bifrost)
    }

    /// Waits until the listener answers `version` with `VERSION ...`.
    fn wait_ready(&mut self) -> Result<(), PortTaken> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.proc.exited() {
                if looks_like_addr_in_use(&self.proc.log()) {
                    return Err(PortTaken);
                }
                panic!(
                    "bifrost exited ({status}) before answering on {} (log below); config {}:\n{}",
                    self.addr,
                    self.config.path().display(),
                    self.config.read()
                );
            }
            if answers_version(self.addr) {
                return Ok(());
            }
            if start.elapsed() >= START_TIMEOUT {
                panic!(
                    "bifrost did not answer `version` on {} within {START_TIMEOUT:?} (log below)",
                    self.addr
                );
            }
            thread::sleep(POLL);
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1:PORT" of the listener waited on.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// A new client connected to the listener.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    pub fn config_path(&self) -> &Path {
        self.config.path()
    }

    /// The log file bifrost's stderr (and stdout) go to.
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// Everything bifrost wrote to stderr (and stdout) so far.
    pub fn stderr_log(&self) -> String {
        self.proc.log()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.exited().is_none()
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) without waiting.
    pub fn signal(&mut self, signal: i32) {
        self.proc.signal(signal);
    }

    /// SIGTERM, then waits (10 s) for the exit and returns its status; on timeout, SIGKILL and
    /// panic. The graceful path must exit 0: `assert!(b.terminate().success())`.
    pub fn terminate(&mut self) -> ExitStatus {
        self.proc.signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
    }

    /// Waits up to `deadline` for the process to exit on its own; panics if it does not.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match self.proc.wait_exit(deadline) {
            Some(status) => status,
            None => panic!("bifrost did not exit within {deadline:?} (log below)"),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        self.proc.kill()
    }
}

impl Drop for Bifrost {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- bifrost config (kept): {} ---",
                self.config.path().display()
            );
        }
    }
}

/// The result of `bifrost --check`.
pub struct CheckOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The config file that was checked (error messages should name its path).
    pub config: TempFile,
}

/// The reference blind_forward config, with knobs. `yaml(port)` shows what `start()` runs:
///
/// ```yaml
/// workers: 1
/// listeners:
///   - name: main
///     bind: 127.0.0.1:PORT
/// backends:
///   b1:
///     servers: ["BACKEND"]
///     timeout: 1s
/// routes:
///   - name: all
///     match: "*"
///     strategy: blind_forward
///     backend: b1
/// ```
#[derive(Clone, Debug)]
pub struct BlindForward {
    backend: String,
    workers: usize,
    timeout: String,
    listener_lines: Vec<String>,
    backend_lines: Vec<String>,
    top_level: Vec<String>,
    args: Vec<String>,
    fd_limit: Option<(u64, u64)>,
}

impl BlindForward {
    pub fn new(backend_addr: &str) -> BlindForward {
        BlindForward {
            backend: backend_addr.to_string(),
            workers: 1,
            timeout: "1s".to_string(),
            listener_lines: Vec::new(),
            backend_lines: Vec::new(),
            top_level: Vec::new(),
            args: Vec::new(),
            fd_limit: None,
        }
    }

    /// `workers: N` (0 = one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The backend's per-request `timeout`, e.g. "200ms".
    pub fn timeout(mut self, timeout: &str) -> Self {
        self.timeout = timeout.to_string();
        self
    }

    /// A `key: value` line added to the listener, e.g. "max_connections: 2".
    pub fn listener_option(mut self, line: &str) -> Self {
        self.listener_lines.push(line.to_string());
        self
    }

    /// A `key: value` line added to backend `b1`, e.g. "connections: 2".
    pub fn backend_option(mut self, line: &str) -> Self {
        self.backend_lines.push(line.to_string());
        self
    }

    /// A top-level YAML block appended as is, e.g. "admin: { bind: 127.0.0.1:9999 }".
    pub fn top_level(mut self, yaml: &str) -> Self {
        self.top_level.push(yaml.to_string());
        self
    }

    /// An extra command-line argument, e.g. `.arg("--log-level").arg("debug")`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Runs bifrost with RLIMIT_NOFILE set to `soft` (and `hard`).
    pub fn fd_limit(mut self, soft: u64, hard: u64) -> Self {
        self.fd_limit = Some((soft, hard));
        self
    }

    /// The config for a listener on `port`.
    pub fn yaml(&self, port: u16) -> String {
        let indent =
            |lines: &[String]| -> String { lines.iter().map(|l| format!("    {l}\n")).collect() };
        let mut yaml = format!(
            "workers: {workers}\n\
             listeners:\n  - name: main\n    bind: 127.0.0.1:{port}\n{listener}\
             backends:\n  b1:\n    servers: [\"{backend}\"]\n    timeout: {timeout}\n{backend_lines}\
             routes:\n  - name: all\n    match: \"*\"\n    strategy: blind_forward\n    backend: b1\n",
            workers = self.workers,
            listener = indent(&self.listener_lines),
            backend = self.backend,
            timeout = self.timeout,
            backend_lines = indent(&self.backend_lines),
        );
        for block in &self.top_level {
            yaml.push_str(block);
            if !block.ends_with('\n') {
                yaml.push('\n');
            }
        }
        yaml
    }

    /// Starts bifrost on a free port with this config (retrying if the port was taken).
    pub fn start(&self) -> Bifrost {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Bifrost::start_limited(|port| self.yaml(port), &args, self.fd_limit)
    }
}

/// True if `addr` accepts and answers `version\r\n` with a line starting `VERSION`.
fn answers_version(addr: SocketAddr) -> bool {
    let timeout = Duration::from_millis(500);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("VERSION")
}

/// The first listener's `bind` address in a YAML (or JSON) config; panics if there is none.
fn first_listener_addr(yaml: &str) -> SocketAddr {
    let parse = || -> Option<SocketAddr> {
        let listeners = &yaml[yaml.find("listeners")?..];
        let after_bind = &listeners[listeners.find("bind")? + "bind".len()..];
        let value = after_bind
            .trim_start_matches(|c: char| c == '"' || c == '\'' || c == ':' || c.is_whitespace());
        let end = value
            .find(|c: char| c.is_whitespace() || ",}]\"'".contains(c))
            .unwrap_or(value.len());
        value[..end].parse().ok()
    };
    parse().unwrap_or_else(|| {
        panic!("Bifrost::start: no `bind: IP:PORT` under `listeners` in the config:\n{yaml}")
    })
}
