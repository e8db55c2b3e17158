//! Integration-test harness shared by every `tests/*.rs` file (`mod common;`).
//!
//! Real processes on real loopback sockets, with a deadline on everything:
//!
//! - [`Memcached`]: a real `memcached` on a free port, ready when it answers `stats` with its own
//!   pid; SIGKILL on [`Memcached::kill`] or drop.
//! - [`Bifrost`]: the binary under test (`CARGO_BIN_EXE_bifrost`) with a YAML config written to a
//!   temp file; ready when the listener answers `version` with `VERSION`. Its stderr goes to a log
//!   file; a failing test prints the log's path and tail.
//! - [`Client`]: a blocking memcached text client whose reads time out after 5 s.
//! - [`FakeBackend`]: a scripted fake memcached (never answers, closes mid-reply, garbage, slow,
//!   hangs once written to) that counts connections and bytes so a test can assert nothing
//!   reached a backend.
//! - [`origin`]: HTTP origins: [`Nginx`], Debian's real nginx serving a temp directory under
//!   `/cache/` (optionally writable through WebDAV), and [`FakeOrigin`], a scripted in-process
//!   HTTP/1.1 origin ([`OriginBehavior`]: slow, chunked, garbage, mid-body close, held replies).
//! - [`Relay`]: a TCP relay in front of a real memcached that holds every reply chunk for a
//!   configurable delay (a slow backend that still has real data).
//! - [`tiers`]: configs over several pools and side-effect counters, for the tests of
//!   warm_first, parallel and side effects.
//! - [`Run`]: `bifrost` with arbitrary arguments, to its exit or until signalled.
//! - [`docker`]: the `docker` command, the project's images, networks and containers.
//! - [`free_port`], [`wait_until`], [`TempFile`]: the small pieces the rest is built from.
//!
//! A helper that cannot do its job panics with a message that says what it was waiting for;
//! none of them sleeps in place of a readiness check.
#![allow(dead_code)]

mod bifrost;
pub mod binary;
mod client;
pub mod docker;
mod fake_backend;
pub mod http;
pub mod lines;
mod memcached;
pub mod origin;
pub mod program;
mod relay;
mod rng;
mod run;
mod server;
pub mod tiers;
pub mod wire;

// The harness's API. Each test binary uses only part of it, hence the allows (here and above).
#[allow(unused_imports)]
pub use bifrost::{Bifrost, BlindForward, CheckOutcome};
#[allow(unused_imports)]
pub use client::{Client, Item};
#[allow(unused_imports)]
pub use fake_backend::{warm_value, Behavior, FakeBackend, GARBAGE_REPLY};
#[allow(unused_imports)]
pub use memcached::{Memcached, MemcachedBuilder};
#[allow(unused_imports)]
pub use origin::{FakeOrigin, Nginx, OriginBehavior};
#[allow(unused_imports)]
pub use relay::Relay;
#[allow(unused_imports)]
pub use rng::Rng;
#[allow(unused_imports)]
pub use run::Run;

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Read/write timeout of every socket the harness opens.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a signalled process may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports a starter tries when its port was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// Poll interval of the deadline loops.
const POLL: Duration = Duration::from_millis(5);

/// A loopback TCP port that was free a moment ago: bind `127.0.0.1:0`, read the port, drop.
///
/// Another process can still take the port before ours binds it; [`Memcached`] and [`Bifrost`]
/// therefore retry with a new port when their process reports the address in use. A port is
/// never handed out twice by one test binary, so parallel tests cannot pick the same one (which
/// matters because bifrost binds with SO_REUSEPORT: two of them would share a port silently).
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("free_port: cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("free_port: local_addr: {e}"))
            .port();
        drop(listener);
        if lock(handed_out).insert(port) {
            return port;
        }
    }
    panic!("free_port: the kernel kept returning ports this test binary already used");
}

/// Polls `f` every few milliseconds until it returns true; panics naming `what` after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        thread::sleep(POLL);
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the first panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A file in `<temp_dir>/bifrost-tests/` with a unique name, removed on drop unless kept.
/// Files of a failing test are kept (and their paths printed) so they can be read afterwards.
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates `<tmp>/bifrost-tests/<pid>-<n>-<hint>.<ext>` holding `contents`.
    pub fn new(hint: &str, ext: &str, contents: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = temp_files_dir().join(format!("{}-{n}-{hint}.{ext}", std::process::id()));
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write temp file {}: {e}", path.display()));
        TempFile { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file after drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The file's contents, lossily decoded (empty if it cannot be read).
    pub fn read(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.path).unwrap_or_default()).into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.keep || thread::panicking() {
            return;
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// `<temp_dir>/bifrost-tests`, created on first use, when files kept by failing tests that are
/// over a day old are removed (so the directory does not grow without bound).
fn temp_files_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("bifrost-tests");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let day = Duration::from_secs(24 * 3600);
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed());
            if let Ok(Ok(age)) = age {
                if age > day {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        dir
    })
}

/// A child process whose stdout and stderr go to a log file. Killed (SIGKILL) and reaped on drop;
/// when the test is failing, the log's path and tail are printed and the log is kept.
pub(crate) struct Proc {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: TempFile,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to a fresh log file.
    pub(crate) fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let log = TempFile::new(name, "log", b"");
        let open = || {
            File::options()
                .append(true)
                .open(log.path())
                .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.path().display()))
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(open())
            .stderr(open())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}; is it installed?"));
        let pid = child.id();
        Proc {
            name: name.to_string(),
            child: Some(child),
            pid,
            log,
            status: None,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn log_path(&self) -> &Path {
        self.log.path()
    }

    pub(crate) fn log(&self) -> String {
        self.log.read()
    }

    /// The last `n` lines of the log, with a header naming the process and the log's path.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!(
            "--- {} (pid {}) log {} (last {n} lines) ---\n{tail}\n--- end of log ---",
            self.name,
            self.pid,
            self.log.path().display()
        )
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => self.status = Some(status),
                    Ok(None) => {}
                    Err(e) => panic!("waiting for {} (pid {}): {e}", self.name, self.pid),
                }
            }
        }
        self.status
    }

    /// Sends `signal` unless the process was already reaped (its pid may have been reused).
    pub(crate) fn signal(&mut self, signal: i32) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            panic!("kill({}, {signal}) of {}: {err}", self.pid, self.name);
        }
    }

    /// Waits for the process to exit on its own; `None` after `deadline`.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGKILL and reap; returns the exit status.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "{} (pid {}) survived SIGKILL for {EXIT_TIMEOUT:?}",
                self.name, self.pid
            ),
        }
    }

    /// Sends `signal` and waits up to `deadline` for the exit; on timeout, SIGKILL and panic.
    pub(crate) fn signal_and_wait(&mut self, signal: i32, deadline: Duration) -> ExitStatus {
        self.signal(signal);
        match self.wait_exit(deadline) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "{} (pid {}) did not exit within {deadline:?} of signal {signal} (log below)",
                    self.name, self.pid
                );
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // SAFETY: as in `signal`; errors are irrelevant while dropping.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            if let Some(child) = self.child.as_mut() {
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
    }
}

/// The error a starter retries on: the process exited because its port was taken.
pub(crate) fn looks_like_addr_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("addrinuse")
}

/// `bytes` escaped for a failure message, cut after 400 bytes.
pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(400)];
    let more = if bytes.len() > 400 {
        format!("... ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    format!("\"{}\"{more}", cut.escape_ascii())
}

/// Asserts two byte strings are equal, showing both escaped when they are not.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}:\n  expected {}\n  got      {}",
        show(want),
        show(got)
    );
}

/// Asserts `got` is one of `allowed`, showing them all escaped when it is not.
#[track_caller]
pub fn assert_one_of(got: &[u8], allowed: &[&[u8]], what: &str) {
    assert!(
        allowed.contains(&got),
        "{what}: expected one of [{}], got {}",
        allowed
            .iter()
            .map(|a| show(a))
            .collect::<Vec<_>>()
            .join(", "),
        show(got)
    );
}

/// Starts bifrost with `count` listeners; `make_yaml` gets a free port for each (the harness
/// waits on the first). Returns bifrost and every listener's address, each answering.
pub fn start_listeners(
    count: usize,
    make_yaml: impl Fn(&[u16]) -> String,
) -> (Bifrost, Vec<String>) {
    let mut ports = Vec::new();
    let bifrost = Bifrost::start_templated(
        |first| {
            ports = std::iter::once(first)
                .chain((1..count).map(|_| free_port()))
                .collect();
            make_yaml(&ports)
        },
        &[],
    );
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for addr in addrs.iter().skip(1) {
        wait_until(START_TIMEOUT, &format!("listener {addr} answers"), || {
            Client::try_connect(addr).is_ok_and(|mut c| c.version().starts_with("VERSION "))
        });
    }
    (bifrost, addrs)
}

/// The resident set size of process `pid`, in bytes (from `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a VmRSS line in /proc/PID/status");
    kb * 1024
}

/// Makes `cmd`'s child start with `RLIMIT_NOFILE` set to `soft`/`hard` (set between fork and
/// exec, so the limit is the child's from its first instruction).
pub fn limit_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit is async-signal-safe and reads only `limit`, a copy moved into the
    // closure; nothing is allocated between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Where Debian's `prometheus` package puts promtool.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs `promtool check metrics` on `text`; panics with its findings when it has any. A
/// missing promtool fails the test: a check that cannot run must not pass.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is not installed: install the Debian package prometheus (.ci/run does)"
    );
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the metrics");
    let out = child.wait_with_output().expect("promtool finishes");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {findings}\n--- metrics ---\n{text}"
    );
}
