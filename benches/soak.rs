//! Soak benchmark: what clients that misbehave (never read, pipeline huge reads, ask for one big
//! value thousands of times in one `get`) do to the proxy's memory and to a well-behaved client
//! on the same worker, measured on real processes (memcached, the release bifrost, nutcracker).
//!
//! ```sh
//! cargo bench --bench soak                 # every scenario: a b c d e twemproxy-a
//! cargo bench --bench soak -- a twemproxy-a
//! ```
//!
//! Scenarios (SPEC §6a, "Overload and memory"):
//!
//! - `a`: key `big` = 500 KB; 1000 idle connections; 40 clients each pipeline 2000 `get big`
//!   and never read; a good client does set/get of small keys for 10 s, each request timed.
//! - `b`: key `huge` = 1 MiB; one client sends ONE `get huge huge ...` of 13,000 keys and never
//!   reads; the good client as in `a`.
//! - `c`: the same 13,000-key `get`, read and checked (13,000 intact values and `END`); bytes,
//!   time, and RSS over time (flat or not).
//! - `d`: 10,000 idle connections, each having sent one `version` and read the reply: RSS
//!   before and after, per connection.
//! - `e`: keys `tiny` = 1 byte and `mixbig` = 60 KB; 300 clients each send one `get` to a
//!   server that never answers (routed by the prefix `stall:`), then pipeline `get tiny` (2
//!   every 10 ms) and never read, so those replies wait in the proxy behind the unanswered one;
//!   meanwhile 4 clients read `mixbig` in a loop over the same backend connection, for
//!   `SOAK_GOOD_SECS`: RSS beside the `reply_bytes_buffered` gauge every second (the limits
//!   must count what is held: a small reply that kept its whole backend read chunk alive made
//!   RSS grow far past the gauge). Without the unanswered `get` in front, the kernel's socket
//!   buffers (MBs per connection) absorb the unread replies, or the clients' pipelining fills
//!   the backend queue (`backend_overloaded`).
//! - `twemproxy-a`: scenario `a` against nutcracker, for the side-by-side figures.
//!
//! The proxy's RSS is sampled from `/proc/PID/status` every 10 ms (peak) and `VmHWM` read; a
//! proxy whose RSS passes the cap (`SOAK_RSS_CAP_MB`, 4096) is SIGKILLed and reported as
//! "EXCEEDED", so an unbounded proxy cannot take the machine down. bifrost runs with
//! `workers: 1`, so the good client shares the worker with the bad ones. A good-client request
//! counts as an error when its reply is not the expected one or takes over 1 s.
//!
//! Every scenario has a deadline (`SOAK_DEADLINE_SECS`, 60; twice that for `c`): past it its
//! processes are killed (so every socket call returns) and, if it still has not finished 20 s
//! later, the bench exits.
//! Every child process is SIGKILLed on drop, on panic (panic hook), and by the kernel if this
//! process dies (PR_SET_PDEATHSIG).
//!
//! Environment:
//!
//! | variable | default | what |
//! |---|---|---|
//! | `BIFROST_BIN` | `target/release/bifrost` (built if missing) | the binary under test |
//! | `SOAK_BAD_CLIENTS` | 40 | `a`: clients that pipeline and never read |
//! | `SOAK_GETS` | 2000 | `a`: `get big` pipelined by each of them |
//! | `SOAK_IDLE` | 1000 | `a`: idle connections |
//! | `SOAK_HUGE_KEYS` | 13000 | `b`, `c`: keys in the one `get` |
//! | `SOAK_IDLE_CONNS` | 10000 | `d`: idle connections |
//! | `SOAK_TINY_CLIENTS` | 300 | `e`: clients that pipeline `get tiny` and never read |
//! | `SOAK_GOOD_SECS` | 10 | `a`, `b`: how long the good client runs |
//! | `SOAK_RSS_CAP_MB` | 4096 | proxy killed (and reported EXCEEDED) above this RSS |
//! | `SOAK_DEADLINE_SECS` | 60 | per scenario (`c`: twice that) |
//! | `SOAK_LISTENER_YAML` | none | bifrost listener lines, `;`-separated: `multiget_window: 8` |
//! | `SOAK_BACKEND_YAML` | none | bifrost backend lines, `;`-separated: `timeout: 5s` |
//! | `SOAK_TOP_YAML` | none | bifrost top-level lines, `;`-separated: `reply_memory_budget: 1GiB` |
//!
//! Smaller run (e.g. against a binary known to blow up):
//! `SOAK_BAD_CLIENTS=4 SOAK_GETS=200 SOAK_IDLE=100 SOAK_HUGE_KEYS=1000 SOAK_IDLE_CONNS=1000
//! SOAK_GOOD_SECS=3 cargo bench --bench soak`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const SCENARIOS: &[&str] = &["a", "b", "c", "d", "e", "twemproxy-a"];
/// Size of `mixbig` (scenario e).
const MIXBIG_LEN: usize = 60_000;
/// Clients reading `mixbig` in a loop (scenario e).
const MIXED_READERS: usize = 4;
/// Size of `big` (scenario a).
const BIG_LEN: usize = 500_000;
/// Size of `huge` (scenarios b, c): the largest value memcached -I 2m and bifrost both take.
const HUGE_LEN: usize = 1_048_576;
/// A good-client request slower than this counts as an error (and its connection is replaced).
const GOOD_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect, read and write timeout of the bench's own sockets (setup, probes, stats).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the proxy's RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The `stats` counters printed after each bifrost scenario (the overload ones may be missing
/// in an older binary: printed as `-`).
const STATS_OF_INTEREST: &[&str] = &[
    "clients_closed_hard_limit",
    "clients_shed",
    "backend_overloaded",
    "clients_closed_slow_request",
    "reply_bytes_buffered",
    "request_bytes_buffered",
    "clients_shed_request_memory",
    "curr_connections",
    "backend_errors",
    "backend_timeouts",
];

// ---------------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------------

struct Knobs {
    bad_clients: usize,
    gets_per_client: usize,
    idle_a: usize,
    huge_keys: usize,
    idle_d: usize,
    tiny_clients: usize,
    good_for: Duration,
    rss_cap: u64,
    deadline: Duration,
    listener_yaml: Vec<String>,
    backend_yaml: Vec<String>,
    top_yaml: Vec<String>,
}

fn env_num(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("soak: {name}={v:?} is not a number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn env_lines(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            bad_clients: env_num("SOAK_BAD_CLIENTS", 40.0) as usize,
            gets_per_client: env_num("SOAK_GETS", 2000.0) as usize,
            idle_a: env_num("SOAK_IDLE", 1000.0) as usize,
            huge_keys: env_num("SOAK_HUGE_KEYS", 13000.0) as usize,
            idle_d: env_num("SOAK_IDLE_CONNS", 10000.0) as usize,
            tiny_clients: env_num("SOAK_TINY_CLIENTS", 300.0) as usize,
            good_for: Duration::from_secs_f64(env_num("SOAK_GOOD_SECS", 10.0)),
            rss_cap: env_num("SOAK_RSS_CAP_MB", 4096.0) as u64 * MIB,
            deadline: Duration::from_secs_f64(env_num("SOAK_DEADLINE_SECS", 60.0)),
            listener_yaml: env_lines("SOAK_LISTENER_YAML"),
            backend_yaml: env_lines("SOAK_BACKEND_YAML"),
            top_yaml: env_lines("SOAK_TOP_YAML"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: killed on drop, on panic, and when this process dies
// ---------------------------------------------------------------------------------------------

/// Pids of the children alive now, for the panic hook and the watchdog.
fn registry() -> &'static Mutex<Vec<u32>> {
    static PIDS: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    PIDS.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs every registered child (they are reaped by their `Proc`'s drop).
fn kill_all_children() {
    for &pid in lock(registry()).iter() {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` (from the main thread: PR_SET_PDEATHSIG follows the spawning thread) with
    /// stdout and stderr to `log`.
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap_or_else(|e| fatal(&format!("{}: {e}", log.display())));
        let err = out.try_clone().expect("clone log file");
        // SAFETY: the closure only calls async-signal-safe prctl/getppid between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    return Err(io::Error::other("parent already gone"));
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| fatal(&format!("cannot start {name} ({cmd:?}): {e}")));
        lock(registry()).push(child.id());
        Proc {
            name: name.to_string(),
            child,
            log,
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                lock(registry()).retain(|&p| p != self.child.id());
            }
        }
        self.status
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            lock(registry()).retain(|&p| p != self.child.id());
        }
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    kill_all_children();
    std::process::exit(2)
}

/// Ends the scenario if it overruns: kills its processes (every blocked socket call returns),
/// then, if it has still not finished 20 s later, exits the bench.
struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
    fired: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(scenario: &str, deadline: Duration) -> Watchdog {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (done.clone(), fired.clone());
        let scenario = scenario.to_string();
        let handle = thread::spawn(move || {
            let (m, cv) = &*d;
            let wait = |limit: Duration| {
                let g = lock(m);
                let (g, _) = cv
                    .wait_timeout_while(g, limit, |done| !*done)
                    .unwrap_or_else(|p| p.into_inner());
                *g
            };
            if wait(deadline) {
                return;
            }
            f.store(true, Ordering::Relaxed);
            eprintln!(
                "soak: scenario {scenario} passed its {deadline:?} deadline: killing its processes"
            );
            kill_all_children();
            if !wait(Duration::from_secs(20)) {
                eprintln!(
                    "soak: scenario {scenario} still running 20 s after its deadline: exiting"
                );
                std::process::exit(3);
            }
        });
        Watchdog {
            done,
            fired,
            handle: Some(handle),
        }
    }

    /// True if the deadline passed (and the scenario's processes were killed).
    fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *lock(&self.done.0) = true;
        self.done.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports, sockets, memcached, the proxies
// ---------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(Default::default);
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        drop(l);
        if lock(used).insert(port) {
            return port;
        }
    }
    fatal("no free port");
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Reads until the bytes read end with `suffix` (or `limit` bytes), by `deadline`.
fn read_until_suffix(
    s: &mut TcpStream,
    suffix: &[u8],
    deadline: Instant,
    limit: usize,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while !out.ends_with(suffix) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || out.len() >= limit {
            return Err(io::Error::new(ErrorKind::TimedOut, "reply not complete"));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Sends `req` on a new connection and returns the reply up to `suffix`.
fn ask(port: u16, req: &[u8], suffix: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = connect(addr(port))?;
    s.write_all(req)?;
    read_until_suffix(&mut s, suffix, Instant::now() + IO_TIMEOUT, 1 << 20)
}

/// True if `get soak:probe` on `port` answers `END` (memcached, nutcracker and bifrost do).
fn answers(port: u16) -> bool {
    ask(port, b"get soak:probe\r\n", b"\r\n").is_ok_and(|r| r == b"END\r\n")
}

/// `len` bytes of a recognizable pattern (so a value cut or shifted does not compare equal).
fn value_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i / 7 + seed as usize) % 26) as u8)
        .collect()
}

fn set(port: u16, key: &str, value: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    match ask(port, &req, b"\r\n") {
        Ok(r) if r == b"STORED\r\n" => {}
        other => fatal(&format!("preloading {key} into memcached: {other:?}")),
    }
}

/// Waits (10 s) until `port` answers, or the process exits; false if it exited.
fn wait_ready(p: &mut Proc, port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if p.exited().is_some() {
            return false;
        }
        if answers(port) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    fatal(&format!(
        "{} did not answer on port {port} within 10 s; log {}:\n{}",
        p.name,
        p.log.display(),
        p.log_tail()
    ));
}

/// Runs `make` with fresh ports until its process answers (5 attempts: a port may be taken).
fn start_on_free_port(name: &str, mut make: impl FnMut(u16) -> Proc) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut p = make(port);
        if wait_ready(&mut p, port) {
            return (p, port);
        }
        let tail = p.log_tail();
        if !tail.to_ascii_lowercase().contains("address already in use") {
            fatal(&format!(
                "{name} exited at start; log {}:\n{tail}",
                p.log.display()
            ));
        }
    }
    fatal(&format!("{name}: its port was taken 5 times"));
}

struct Env {
    /// Where the current scenario's configs and logs go (`<root>/<scenario>/`).
    dir: std::cell::RefCell<PathBuf>,
    bifrost: PathBuf,
    knobs: Knobs,
}

impl Env {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.borrow().join(name)
    }
}

fn start_memcached(env: &Env) -> (Proc, u16) {
    start_on_free_port("memcached", |port| {
        let mut cmd = Command::new("memcached");
        cmd.args([
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-m",
            "4096",
            "-I",
            "2m",
            "-c",
            "4096",
        ])
        .args(["-t", "2", "-p", &port.to_string()]);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        Proc::spawn("memcached", &mut cmd, env.file("memcached.log"))
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Bifrost,
    Twemproxy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bifrost => "bifrost",
            Target::Twemproxy => "twemproxy",
        }
    }
}

fn bifrost_yaml(env: &Env, port: u16, mc_port: u16) -> String {
    let mut listener = String::new();
    for line in &env.knobs.listener_yaml {
        let _ = writeln!(listener, "    {line}");
    }
    let mut backend = String::new();
    for line in &env.knobs.backend_yaml {
        let _ = writeln!(backend, "    {line}");
    }
    let mut yaml = format!(
        "# written by benches/soak.rs\n\
         workers: 1                  # one worker: the good client shares it with the bad ones\n\
         listeners:\n  - name: main\n    bind: 127.0.0.1:{port}\n    max_connections: 20000\n\
         \x20   max_line_length: 1MiB      # the 13,000-key get of scenarios b and c\n{listener}\
         backends:\n  default:\n    servers: [\"127.0.0.1:{mc_port}\"]\n{backend}\
         routes:\n  - name: default\n    match: \"*\"\n    strategy: blind_forward\n\
         \x20   backend: default\n"
    );
    for line in &env.knobs.top_yaml {
        let _ = writeln!(yaml, "{line}");
    }
    yaml
}

fn start_proxy(env: &Env, target: Target, mc_port: u16) -> (Proc, u16) {
    match target {
        Target::Bifrost => start_on_free_port("bifrost", |port| {
            let conf = env.file("bifrost.yaml");
            fs::write(&conf, bifrost_yaml(env, port, mc_port)).expect("write bifrost.yaml");
            let mut cmd = Command::new(&env.bifrost);
            cmd.arg("--config").arg(&conf);
            Proc::spawn("bifrost", &mut cmd, env.file("bifrost.log"))
        }),
        Target::Twemproxy => start_on_free_port("nutcracker", |port| {
            let conf = env.file("nutcracker.yml");
            let yaml = format!(
                "soak:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
                 timeout: 5000\n  auto_eject_hosts: false\n  preconnect: true\n  servers:\n    \
                 - 127.0.0.1:{mc_port}:1\n"
            );
            fs::write(&conf, yaml).expect("write nutcracker.yml");
            let log = env.file("nutcracker.log");
            let mut cmd = Command::new("nutcracker");
            cmd.arg("-c")
                .arg(&conf)
                .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
                .arg("-p")
                .arg(env.file("nutcracker.pid"))
                .arg("-o")
                .arg(&log);
            Proc::spawn("nutcracker", &mut cmd, log)
        }),
    }
}

/// The proxy's `stats` (bifrost answers it itself); empty if it does not answer within 2 s.
fn proxy_stats(port: u16) -> HashMap<String, String> {
    let reply = connect(addr(port)).and_then(|mut s| {
        s.write_all(b"stats\r\n")?;
        read_until_suffix(
            &mut s,
            b"END\r\n",
            Instant::now() + Duration::from_secs(2),
            1 << 20,
        )
    });
    let mut out = HashMap::new();
    if let Ok(reply) = reply {
        for line in String::from_utf8_lossy(&reply).lines() {
            let mut parts = line.splitn(3, ' ');
            if let (Some("STAT"), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// RSS sampling
// ---------------------------------------------------------------------------------------------

const MIB: u64 = 1 << 20;

/// (VmRSS, VmHWM) of `pid` in bytes; `None` once it has exited (or is a zombie).
fn rss_hwm(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let v = status.lines().find_map(|l| l.strip_prefix(name))?;
        Some(v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

struct Samples {
    /// (seconds since start, RSS bytes)
    points: Vec<(f64, u64)>,
    peak: u64,
    hwm: u64,
    /// When the RSS passed the cap and the process was killed.
    exceeded_at: Option<f64>,
}

/// Samples a process's RSS every 10 ms; kills it (SIGKILL) if it passes the cap.
struct Sampler {
    stop: Arc<AtomicBool>,
    /// Set when the process is gone (killed over the cap, or exited).
    gone: Arc<AtomicBool>,
    handle: Option<JoinHandle<Samples>>,
}

impl Sampler {
    fn start(pid: u32, cap: u64) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (st, gn) = (stop.clone(), gone.clone());
        let handle = thread::spawn(move || {
            let mut s = Samples {
                points: Vec::new(),
                peak: 0,
                hwm: 0,
                exceeded_at: None,
            };
            while !st.load(Ordering::Relaxed) {
                let Some((rss, hwm)) = rss_hwm(pid) else {
                    gn.store(true, Ordering::Relaxed);
                    break;
                };
                let t = start.elapsed().as_secs_f64();
                s.points.push((t, rss));
                s.peak = s.peak.max(rss);
                s.hwm = s.hwm.max(hwm);
                if rss > cap && s.exceeded_at.is_none() {
                    s.exceeded_at = Some(t);
                    // SAFETY: as in kill_all_children; the child is not reaped before this
                    // sampler is stopped.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    gn.store(true, Ordering::Relaxed);
                }
                thread::sleep(SAMPLE_EVERY);
            }
            s
        });
        Sampler {
            stop,
            gone,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("sampler joined once")
            .join()
            .expect("sampler thread")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits for RSS to settle (no change over 200 ms, at most 2 s) and returns it.
fn settled_rss(pid: u32) -> u64 {
    let start = Instant::now();
    let mut last = rss_hwm(pid).map_or(0, |r| r.0);
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = rss_hwm(pid).map_or(0, |r| r.0);
        if now == last || start.elapsed() > Duration::from_secs(2) {
            return now;
        }
        last = now;
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct GoodReport {
    ok: u64,
    timeouts: u64,
    bad_replies: u64,
    connect_failures: u64,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

impl GoodReport {
    fn errors(&self) -> u64 {
        self.timeouts + self.bad_replies + self.connect_failures
    }

    fn fail(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

enum Outcome {
    Ok,
    Timeout(String),
    Bad(String),
}

/// Sends `req` and checks the reply is exactly `want`, within `GOOD_TIMEOUT`.
fn exchange(s: &mut TcpStream, req: &[u8], want: &[u8]) -> Outcome {
    let deadline = Instant::now() + GOOD_TIMEOUT;
    if let Err(e) = s.write_all(req) {
        return Outcome::Bad(format!("write: {e}"));
    }
    let mut got = Vec::with_capacity(want.len());
    let mut buf = vec![0u8; want.len().max(512)];
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return Outcome::Timeout(format!("{} of {} bytes after 1 s", got.len(), want.len()));
        }
        match s.read(&mut buf[..want.len() - got.len()]) {
            Ok(0) => return Outcome::Bad(format!("closed after {} bytes", got.len())),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if !want.starts_with(&got) {
                    let cut = &got[..got.len().min(120)];
                    return Outcome::Bad(format!(
                        "unexpected reply {:?}",
                        cut.escape_ascii().to_string()
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Outcome::Timeout(format!(
                    "{} of {} bytes after 1 s",
                    got.len(),
                    want.len()
                ));
            }
            Err(e) => return Outcome::Bad(format!("read: {e}")),
        }
    }
    Outcome::Ok
}

/// A well-behaved client: set then get small keys, one request at a time, each timed, for
/// `run_for` or until `stop`. A timed-out or wrong reply puts the connection out of step: it
/// is replaced by a new one.
fn good_client(port: u16, run_for: Duration, stop: Arc<AtomicBool>) -> GoodReport {
    let mut r = GoodReport::default();
    let start = Instant::now();
    let mut conn: Option<TcpStream> = None;
    let mut i: u64 = 0;
    while start.elapsed() < run_for && !stop.load(Ordering::Relaxed) {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr(port)) {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    r.connect_failures += 1;
                    r.fail(format!("connect: {e}"));
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        // Even i: set key (i / 2) % 100 to a value unique to i; odd i: get it back.
        let key = format!("soak:good:{}", (i / 2) % 100);
        let value = format!("v{i:099}");
        let (req, want) = if i % 2 == 0 {
            (
                format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()),
                "STORED\r\n".to_string(),
            )
        } else {
            let value = format!("v{:099}", i - 1); // the value set just before
            (
                format!("get {key}\r\n"),
                format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()),
            )
        };
        let t = Instant::now();
        let outcome = exchange(s, req.as_bytes(), want.as_bytes());
        r.latencies.push(t.elapsed());
        match outcome {
            Outcome::Ok => {
                r.ok += 1;
                i += 1;
                continue;
            }
            Outcome::Timeout(m) => {
                r.timeouts += 1;
                r.fail(format!("{}: {m}", req.lines().next().unwrap_or("")));
            }
            Outcome::Bad(m) => {
                r.bad_replies += 1;
                r.fail(format!("{}: {m}", req.lines().next().unwrap_or("")));
            }
        }
        conn = None; // out of step: start over on a new connection, with a set
        i += 2 - i % 2;
    }
    r
}

/// Opens `n` connections; with `touch`, each sends `probe` and reads `want` first, so the proxy
/// has accepted and served it. Returns the connections and how long it took.
fn open_idle(port: u16, n: usize, probe: &[u8], want: &[u8]) -> Result<Vec<TcpStream>, String> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s =
            connect(addr(port)).map_err(|e| format!("idle connection {i}: connect: {e}"))?;
        s.write_all(probe)
            .map_err(|e| format!("idle connection {i}: write: {e}"))?;
        let reply = read_until_suffix(&mut s, b"\r\n", Instant::now() + IO_TIMEOUT, 4096)
            .map_err(|e| format!("idle connection {i}: read: {e}"))?;
        if !reply.starts_with(want) {
            return Err(format!(
                "idle connection {i}: reply {:?}",
                reply.escape_ascii().to_string()
            ));
        }
        conns.push(s);
    }
    Ok(conns)
}

/// Writes `bytes` on a new connection that will never be read; returns it and what was written
/// (a proxy that stops reading may leave part unwritten: the 5 s write timeout ends the try).
fn non_reader(port: u16, bytes: &[u8]) -> Result<(TcpStream, usize), String> {
    let mut s = connect(addr(port)).map_err(|e| format!("connect: {e}"))?;
    let mut written = 0;
    while written < bytes.len() {
        match s.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok((s, written))
}

fn huge_get_line(keys: usize) -> Vec<u8> {
    let mut line = Vec::with_capacity(4 + keys * 5 + 2);
    line.extend_from_slice(b"get");
    for _ in 0..keys {
        line.extend_from_slice(b" huge");
    }
    line.extend_from_slice(b"\r\n");
    line
}

// ---------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    fn new(title: String) -> Table {
        Table {
            title,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, k: &str, v: impl Into<String>) {
        self.rows.push((k.to_string(), v.into()));
    }

    fn print(&self) {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        println!("\n== {}", self.title);
        for (k, v) in &self.rows {
            println!("  {k:<w$} | {v}");
        }
    }
}

/// One line of the closing summary.
struct Summary {
    scenario: String,
    target: &'static str,
    peak: String,
    good: String,
    latency: String,
    note: String,
    /// Something went wrong (proxy over the cap or dead, a check failed): keep the logs.
    abnormal: bool,
}

fn rss_rows(t: &mut Table, s: &Samples, cap: u64) {
    match s.exceeded_at {
        Some(at) => t.row(
            "peak RSS (10 ms samples)",
            format!(
                "EXCEEDED the {} cap at {at:.2} s: proxy killed (last sample {})",
                mib(cap),
                mib(s.peak)
            ),
        ),
        None => t.row("peak RSS (10 ms samples)", mib(s.peak)),
    }
    t.row("VmHWM", mib(s.hwm));
    t.row("RSS by second (max of each)", timeline(s));
}

fn peak_text(s: &Samples) -> String {
    match s.exceeded_at {
        Some(at) => format!(">{} EXCEEDED ({at:.1} s)", mib(s.peak)),
        None => mib(s.peak),
    }
}

/// The max RSS of each second, in MiB.
fn timeline(s: &Samples) -> String {
    let mut per_sec: Vec<u64> = Vec::new();
    for &(t, rss) in &s.points {
        let i = t as usize;
        if per_sec.len() <= i {
            per_sec.resize(i + 1, 0);
        }
        per_sec[i] = per_sec[i].max(rss);
    }
    let cells: Vec<String> = per_sec.iter().map(|&b| format!("{}", b / MIB)).collect();
    format!("[{}] MiB", cells.join(" "))
}

fn good_rows(t: &mut Table, g: &GoodReport) {
    t.row(
        "good client requests",
        format!(
            "{} ok, {} errors ({} timeouts > 1 s, {} wrong replies, {} failed connects)",
            g.ok,
            g.errors(),
            g.timeouts,
            g.bad_replies,
            g.connect_failures
        ),
    );
    if let Some(e) = &g.first_error {
        t.row("first error", e.clone());
    }
    t.row("good latency p50 / p99 / max", latency_text(g));
    t.row(
        "good client stalled (requests > 100 ms)",
        format!("{:.2} s in total", stalled(g).as_secs_f64()),
    );
}

/// Time the good client spent in requests that took over 100 ms (a closed-loop client makes
/// few requests while stalled, so the percentiles alone understate a stall).
fn stalled(g: &GoodReport) -> Duration {
    g.latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(100))
        .sum()
}

fn latency_text(g: &GoodReport) -> String {
    let mut l = g.latencies.clone();
    l.sort();
    if l.is_empty() {
        return "no requests".to_string();
    }
    format!(
        "{} / {} / {}",
        ms(percentile(&l, 0.5)),
        ms(percentile(&l, 0.99)),
        ms(*l.last().expect("non-empty"))
    )
}

fn stats_row(t: &mut Table, stats: &HashMap<String, String>) {
    if stats.is_empty() {
        t.row("proxy stats", "no answer to `stats` (proxy gone or busy)");
        return;
    }
    let cells: Vec<String> = STATS_OF_INTEREST
        .iter()
        .map(|k| format!("{k}={}", stats.get(*k).map_or("-", String::as_str)))
        .collect();
    t.row("proxy stats", cells.join(" "));
}

/// The closing table, one row per scenario run, columns as wide as their widest cell.
fn print_summary(summaries: &[Summary]) {
    let header = [
        "scenario",
        "target",
        "peak RSS",
        "good client",
        "good p50 / p99 / max",
        "note",
    ];
    let rows: Vec<[&str; 6]> = summaries
        .iter()
        .map(|s| {
            [
                &*s.scenario,
                s.target,
                &*s.peak,
                &*s.good,
                &*s.latency,
                &*s.note,
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    println!("\n== summary");
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::from(" ");
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, " {cell:<w$} |");
        }
        line.pop();
        println!("{}", line.trim_end());
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// a / twemproxy-a (`huge_line` false) and b (true): bad clients that never read, plus a good
/// client timed throughout.
fn flood(env: &Env, name: &str, target: Target, huge_line: bool) -> Summary {
    let k = &env.knobs;
    let (_mc, mc_port) = start_memcached(env);
    let (big_key, value) = if huge_line {
        ("huge", value_of(HUGE_LEN, 1))
    } else {
        ("big", value_of(BIG_LEN, 0))
    };
    set(mc_port, big_key, &value);
    let (mut proxy, port) = start_proxy(env, target, mc_port);
    let title = if huge_line {
        format!(
            "scenario {name} — {}: one client sends ONE `get huge ×{}` ({} B values) and never \
             reads; good client {:?}",
            target.name(),
            k.huge_keys,
            HUGE_LEN,
            k.good_for
        )
    } else {
        format!(
            "scenario {name} — {}: {} idle; {} clients × {} pipelined `get big` ({} B) never \
             read; good client {:?}",
            target.name(),
            k.idle_a,
            k.bad_clients,
            k.gets_per_client,
            BIG_LEN,
            k.good_for
        )
    };
    let mut t = Table::new(title);
    let rss_start = settled_rss(proxy.pid());
    t.row("RSS at start", mib(rss_start));
    let sampler = Sampler::start(proxy.pid(), k.rss_cap);

    let idle_n = if huge_line { 0 } else { k.idle_a };
    let idle = match open_idle(port, idle_n, b"get soak:idle\r\n", b"END\r\n") {
        Ok(c) => c,
        Err(e) => {
            t.row("idle connections", format!("FAILED: {e}"));
            Vec::new()
        }
    };
    if idle_n > 0 {
        t.row("idle connections open", idle.len().to_string());
    }

    // The good client starts first, so its first half-second is a baseline.
    let (stop, good_for) = (sampler.gone.clone(), k.good_for);
    let good = thread::spawn(move || good_client(port, good_for, stop));
    thread::sleep(Duration::from_millis(500));

    let t_bad = Instant::now();
    let mut bad = Vec::new();
    let mut bad_errors = Vec::new();
    let mut written = 0usize;
    let payload = if huge_line {
        huge_get_line(k.huge_keys)
    } else {
        b"get big\r\n".repeat(k.gets_per_client)
    };
    let bad_count = if huge_line { 1 } else { k.bad_clients };
    for i in 0..bad_count {
        if sampler.gone.load(Ordering::Relaxed) {
            break;
        }
        match non_reader(port, &payload) {
            Ok((s, n)) => {
                written += n;
                bad.push(s);
            }
            Err(e) => bad_errors.push(format!("bad client {i}: {e}")),
        }
    }
    t.row(
        "bad clients",
        format!(
            "{} connected, {} of {} request bytes written in {}{}",
            bad.len(),
            written,
            payload.len() * bad_count,
            ms(t_bad.elapsed()),
            bad_errors
                .first()
                .map_or(String::new(), |e| format!(" ({e})"))
        ),
    );

    let g = good.join().expect("good client thread");
    let stats = if target == Target::Bifrost && !sampler.gone.load(Ordering::Relaxed) {
        proxy_stats(port)
    } else {
        HashMap::new()
    };
    // Then the bad clients go away: is the memory given back?
    drop(bad);
    drop(idle);
    let after = if sampler.gone.load(Ordering::Relaxed) {
        None
    } else {
        thread::sleep(Duration::from_secs(1));
        rss_hwm(proxy.pid()).map(|r| r.0)
    };
    let samples = sampler.finish();
    let died = proxy.exited();

    rss_rows(&mut t, &samples, k.rss_cap);
    if let Some(a) = after {
        t.row("RSS 1 s after the bad and idle clients closed", mib(a));
    }
    if samples.exceeded_at.is_none() {
        if let Some(status) = died {
            t.row(
                "proxy",
                format!("DIED ({status}); log {}", proxy.log.display()),
            );
        }
    }
    good_rows(&mut t, &g);
    if target == Target::Bifrost {
        stats_row(&mut t, &stats);
    }
    t.print();
    Summary {
        scenario: name.to_string(),
        target: target.name(),
        peak: peak_text(&samples),
        good: format!(
            "{} ok / {} err / {:.1} s stalled",
            g.ok,
            g.errors(),
            stalled(&g).as_secs_f64()
        ),
        latency: latency_text(&g),
        note: match (samples.exceeded_at, died) {
            (Some(_), _) => "proxy killed over the RSS cap".to_string(),
            (None, Some(status)) => format!("proxy DIED ({status})"),
            (None, None) => String::new(),
        },
        abnormal: samples.exceeded_at.is_some() || died.is_some() || g.errors() > 0,
    }
}

/// A scenario's deadline: `SOAK_DEADLINE_SECS`, twice that for `c`, which streams 13.6 GB
/// (at 300 MB/s that alone takes 45 s).
fn scenario_deadline(k: &Knobs, scenario: &str) -> Duration {
    if scenario == "c" {
        k.deadline * 2
    } else {
        k.deadline
    }
}

/// c: the 13,000-key get, read and checked against the exact bytes expected.
fn huge_read(env: &Env) -> Summary {
    let k = &env.knobs;
    let (_mc, mc_port) = start_memcached(env);
    let value = value_of(HUGE_LEN, 1);
    set(mc_port, "huge", &value);
    let (mut proxy, port) = start_proxy(env, Target::Bifrost, mc_port);
    let mut t = Table::new(format!(
        "scenario c — bifrost: ONE `get huge ×{}` ({} B values), read and checked",
        k.huge_keys, HUGE_LEN
    ));
    t.row("RSS at start", mib(settled_rss(proxy.pid())));
    let sampler = Sampler::start(proxy.pid(), k.rss_cap);

    let mut block = format!("VALUE huge 0 {HUGE_LEN}\r\n").into_bytes();
    block.extend_from_slice(&value);
    block.extend_from_slice(b"\r\n");
    let total = block.len() as u64 * k.huge_keys as u64 + 5;
    let started = Instant::now();
    let deadline = scenario_deadline(k, "c");
    let read_deadline = started
        + deadline
            .saturating_sub(Duration::from_secs(10))
            .max(deadline / 2);
    let mut received: u64 = 0;
    // Bytes received in each second of the read, to see whether the stream is steady.
    let mut per_second: Vec<u64> = Vec::new();
    let mut problem: Option<String> = None;
    match connect(addr(port)) {
        Err(e) => problem = Some(format!("connect: {e}")),
        Ok(mut s) => {
            if let Err(e) = s.write_all(&huge_get_line(k.huge_keys)) {
                problem = Some(format!("write: {e}"));
            }
            let mut buf = vec![0u8; 4 << 20];
            while problem.is_none() && received < total {
                if Instant::now() >= read_deadline {
                    problem = Some("read deadline passed".to_string());
                    break;
                }
                let n = match s.read(&mut buf) {
                    Ok(0) => {
                        problem = Some("connection closed".to_string());
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        problem = Some(format!("read: {e}"));
                        break;
                    }
                };
                if let Some(at) = mismatch(&buf[..n], received, &block, k.huge_keys) {
                    let pos = received + at as u64;
                    let cut = &buf[at..n.min(at + 80)];
                    let value_index = pos / block.len() as u64;
                    let offset = pos % block.len() as u64;
                    problem = Some(if offset == 0 && cut.starts_with(b"END\r\n") {
                        format!(
                            "the reply ended (END) after {value_index} values: \
                             the rest came back as misses (backend timeout?)"
                        )
                    } else {
                        format!(
                            "wrong byte at offset {pos} (value {value_index}, byte {offset} \
                             of its block): {:?}",
                            cut.escape_ascii().to_string()
                        )
                    });
                }
                received += n as u64;
                let sec = started.elapsed().as_secs() as usize;
                if per_second.len() <= sec {
                    per_second.resize(sec + 1, 0);
                }
                per_second[sec] += n as u64;
            }
        }
    }
    let took = started.elapsed();
    let stats = if sampler.gone.load(Ordering::Relaxed) {
        HashMap::new()
    } else {
        proxy_stats(port)
    };
    let samples = sampler.finish();
    let died = proxy.exited();

    let values_ok = (received.min(total - 5) / block.len() as u64).min(k.huge_keys as u64);
    let verdict = match &problem {
        None if received == total => format!("all {} values intact, then END", k.huge_keys),
        None => format!("{received} of {total} bytes"),
        Some(p) => format!("FAILED after {values_ok} intact values: {p}"),
    };
    t.row("result", verdict.clone());
    t.row(
        "bytes received",
        format!("{received} of {total} ({})", mib(received)),
    );
    t.row(
        "time",
        format!(
            "{:.2} s ({:.0} MiB/s)",
            took.as_secs_f64(),
            received as f64 / MIB as f64 / took.as_secs_f64().max(1e-9)
        ),
    );
    let cells: Vec<String> = per_second.iter().map(|b| (b / MIB).to_string()).collect();
    t.row("received by second", format!("[{}] MiB", cells.join(" ")));
    rss_rows(&mut t, &samples, k.rss_cap);
    let later: Vec<u64> = samples
        .points
        .iter()
        .filter(|p| p.0 >= 1.0)
        .map(|p| p.1)
        .collect();
    if let (Some(lo), Some(hi)) = (later.iter().min(), later.iter().max()) {
        t.row(
            "RSS after the first second: min / max",
            format!("{} / {}", mib(*lo), mib(*hi)),
        );
    }
    if samples.exceeded_at.is_none() {
        if let Some(status) = died {
            t.row(
                "proxy",
                format!("DIED ({status}); log {}", proxy.log.display()),
            );
        }
    }
    stats_row(&mut t, &stats);
    t.print();
    Summary {
        scenario: "c".to_string(),
        target: "bifrost",
        peak: peak_text(&samples),
        good: "-".to_string(),
        latency: "-".to_string(),
        note: format!("{verdict}; {:.1} s", took.as_secs_f64()),
        abnormal: problem.is_some() || received != total || died.is_some(),
    }
}

/// Offset in `chunk` of the first byte that differs from the expected stream (`keys` copies of
/// `block`, then `END\r\n`), where `chunk` starts at stream offset `pos`.
fn mismatch(chunk: &[u8], pos: u64, block: &[u8], keys: usize) -> Option<usize> {
    let body = block.len() as u64 * keys as u64;
    let mut i = 0;
    while i < chunk.len() {
        let p = pos + i as u64;
        let expected: &[u8] = if p < body {
            &block[(p % block.len() as u64) as usize..]
        } else if p < body + 5 {
            &b"END\r\n"[(p - body) as usize..]
        } else {
            return Some(i); // beyond the end of the reply
        };
        let n = expected.len().min(chunk.len() - i);
        if chunk[i..i + n] != expected[..n] {
            let off = chunk[i..i + n]
                .iter()
                .zip(&expected[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Some(i + off);
        }
        i += n;
    }
    None
}

/// d: idle connections, each having been served one `version`.
fn idle_conns(env: &Env) -> Summary {
    let k = &env.knobs;
    let (_mc, mc_port) = start_memcached(env);
    let (mut proxy, port) = start_proxy(env, Target::Bifrost, mc_port);
    let mut t = Table::new(format!(
        "scenario d — bifrost: {} idle connections (each sent `version` and read the reply)",
        k.idle_d
    ));
    let before = settled_rss(proxy.pid());
    let sampler = Sampler::start(proxy.pid(), k.rss_cap);
    let started = Instant::now();
    let result = open_idle(port, k.idle_d, b"version\r\n", b"VERSION ");
    let took = started.elapsed();
    let mut note = String::new();
    t.row("RSS before", mib(before));
    match &result {
        Ok(conns) => {
            let after = settled_rss(proxy.pid());
            let per = (after as f64 - before as f64) / conns.len().max(1) as f64;
            t.row(
                "connections",
                format!("{} open, in {:.2} s", conns.len(), took.as_secs_f64()),
            );
            t.row("RSS after", mib(after));
            t.row("per connection", format!("{per:.0} bytes"));
            let stats = proxy_stats(port);
            t.row(
                "curr_connections",
                stats.get("curr_connections").cloned().unwrap_or("-".into()),
            );
            note = format!("{per:.0} B per idle connection");
        }
        Err(e) => {
            t.row("connections", format!("FAILED: {e}"));
            note.push_str("FAILED");
        }
    }
    drop(result);
    let closed = settled_rss(proxy.pid());
    t.row("RSS after they closed", mib(closed));
    let samples = sampler.finish();
    rss_rows(&mut t, &samples, k.rss_cap);
    let died = proxy.exited();
    if let Some(status) = died {
        t.row(
            "proxy",
            format!("DIED ({status}); log {}", proxy.log.display()),
        );
    }
    t.print();
    Summary {
        abnormal: died.is_some() || note == "FAILED" || samples.exceeded_at.is_some(),
        scenario: "d".to_string(),
        target: "bifrost",
        peak: peak_text(&samples),
        good: "-".to_string(),
        latency: "-".to_string(),
        note,
    }
}

/// e: small unread replies beside large read ones on the same backend connection, RSS beside
/// the reply gauge.
fn mixed(env: &Env) -> Summary {
    let k = &env.knobs;
    let (_mc, mc_port) = start_memcached(env);
    set(mc_port, "tiny", b"x");
    let big = value_of(MIXBIG_LEN, 7);
    set(mc_port, "mixbig", &big);
    // A server that accepts and never answers: the `get` each non-reader sends first waits on
    // it for the whole run.
    let stall = TcpListener::bind("127.0.0.1:0").expect("bind the stalling server");
    let stall_port = stall.local_addr().expect("stalling server address").port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in stall.incoming().flatten() {
            held.push(s);
        }
    });
    let (mut proxy, port) = start_on_free_port("bifrost", |port| {
        let conf = env.file("bifrost.yaml");
        let yaml = format!(
            "# written by benches/soak.rs (scenario e)\n\
             workers: 1\n\
             listeners: [{{name: main, bind: '127.0.0.1:{port}', max_connections: 20000}}]\n\
             backends:\n\
             \x20 default: {{servers: ['127.0.0.1:{mc_port}'], timeout: 120s}}\n\
             \x20 stall: {{servers: ['127.0.0.1:{stall_port}'], timeout: 120s}}\n\
             routes:\n\
             - {{name: stall, match: {{prefix: 'stall:'}}, strategy: blind_forward, backend: stall}}\n\
             - {{name: default, match: '*', strategy: blind_forward, backend: default}}\n"
        );
        fs::write(&conf, yaml).expect("write bifrost.yaml");
        let mut cmd = Command::new(&env.bifrost);
        cmd.arg("--config").arg(&conf);
        Proc::spawn("bifrost", &mut cmd, env.file("bifrost.log"))
    });
    let pid = proxy.pid();
    let mut t = Table::new(format!(
        "scenario e — bifrost: {} clients pipeline `get tiny` (1 byte) behind an unanswered get \
         and never read; {} read a {} KB value in a loop",
        k.tiny_clients,
        MIXED_READERS,
        MIXBIG_LEN / 1000
    ));
    let before = settled_rss(pid);
    let sampler = Sampler::start(pid, k.rss_cap);
    let stop = Arc::new(AtomicBool::new(false));
    let want = {
        let mut w = format!("VALUE mixbig 0 {MIXBIG_LEN}\r\n").into_bytes();
        w.extend_from_slice(&big);
        w.extend_from_slice(b"\r\nEND\r\n");
        Arc::new(w)
    };
    let readers: Vec<JoinHandle<(u64, u64)>> = (0..MIXED_READERS)
        .map(|_| {
            let (stop, want) = (stop.clone(), want.clone());
            thread::spawn(move || {
                let (mut ok, mut errors) = (0, 0);
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => match connect(addr(port)) {
                            Ok(s) => conn.insert(s),
                            Err(_) => {
                                errors += 1;
                                thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        },
                    };
                    let deadline = Instant::now() + GOOD_TIMEOUT;
                    let reply = s
                        .write_all(b"get mixbig\r\n")
                        .and_then(|()| read_until_suffix(s, b"END\r\n", deadline, 2 * MIXBIG_LEN));
                    match reply {
                        Ok(r) if r == *want => ok += 1,
                        _ => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut quiet = Vec::new();
    for _ in 0..k.tiny_clients {
        let opened = connect(addr(port)).and_then(|mut s| {
            s.write_all(b"get stall:x\r\n")?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match opened {
            Ok(s) => quiet.push(s),
            Err(e) => {
                t.row("non-readers", format!("FAILED to connect: {e}"));
                break;
            }
        }
    }
    let burst = b"get tiny\r\n".repeat(2);
    let mut sent = 0u64;
    let mut by_second: Vec<String> = Vec::new();
    let mut worst = (0.0, 0u64, 0u64); // (RSS / gauge, RSS, gauge)
    let started = Instant::now();
    let mut next_sample = Duration::from_secs(1);
    while started.elapsed() < k.good_for && !sampler.gone.load(Ordering::Relaxed) {
        for s in &mut quiet {
            if let Ok(n) = s.write(&burst) {
                sent += (n / 10) as u64;
            }
        }
        if started.elapsed() >= next_sample {
            next_sample += Duration::from_secs(1);
            let rss = rss_hwm(pid).map_or(0, |r| r.0);
            let gauge = proxy_stats(port)
                .get("reply_bytes_buffered")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            by_second.push(format!("{}/{}", rss / MIB, gauge / MIB));
            let ratio = rss.saturating_sub(before) as f64 / gauge.max(1) as f64;
            if rss > worst.1 {
                worst = (ratio, rss, gauge);
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut errors) = (0, 0);
    for r in readers {
        if let Ok((o, e)) = r.join() {
            ok += o;
            errors += e;
        }
    }
    let stats = proxy_stats(port);
    drop(quiet);
    let samples = sampler.finish();
    let died = proxy.exited();
    t.row("RSS before", mib(before));
    t.row(
        "RSS / reply_bytes_buffered, each second",
        format!("[{}] MiB", by_second.join(" ")),
    );
    t.row(
        "at the highest RSS sample",
        format!(
            "RSS {} with reply_bytes_buffered {}: {:.1} bytes held over the start per byte counted",
            mib(worst.1),
            mib(worst.2),
            worst.0
        ),
    );
    t.row("gets of tiny sent", sent.to_string());
    t.row(
        "60 KB reads",
        format!("{ok} whole and correct, {errors} failed or slower than 1 s"),
    );
    rss_rows(&mut t, &samples, k.rss_cap);
    if let Some(status) = died.filter(|_| samples.exceeded_at.is_none()) {
        t.row(
            "proxy",
            format!("DIED ({status}); log {}", proxy.log.display()),
        );
    }
    stats_row(&mut t, &stats);
    t.print();
    Summary {
        scenario: "e".to_string(),
        target: "bifrost",
        peak: peak_text(&samples),
        good: format!("{ok} reads / {errors} err"),
        latency: "-".to_string(),
        note: format!(
            "peak sample: RSS {} beside reply_bytes_buffered {}",
            mib(worst.1),
            mib(worst.2)
        ),
        abnormal: samples.exceeded_at.is_some() || died.is_some(),
    }
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

/// Raises this process's open-file limit to its hard limit (scenario d holds 10,000 sockets).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// The binary under test: BIFROST_BIN, else the one cargo built for this bench, else
/// target/release/bifrost (built now if missing).
fn bifrost_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BIFROST_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            fatal(&format!("BIFROST_BIN={} does not exist", p.display()));
        }
        return p;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = option_env!("CARGO_BIN_EXE_bifrost")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target/release/bifrost"));
    if path.is_file() {
        return path;
    }
    eprintln!(
        "soak: {} not found: building it with `cargo build --release --bin bifrost` \
         (set BIFROST_BIN to use another binary)",
        path.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--bin", "bifrost"])
        .current_dir(manifest)
        .spawn()
        .unwrap_or_else(|e| fatal(&format!("cannot run cargo: {e}")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for cargo") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            fatal("cargo build --release took over 15 minutes");
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() || !path.is_file() {
        fatal(&format!(
            "cargo build --release failed ({status}) or did not produce {}",
            path.display()
        ));
    }
    path
}

fn main() {
    let mut wanted: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--help" || arg == "-h" {
            println!(
                "usage: cargo bench --bench soak -- [SCENARIO...]   (scenarios: {}; default all)\n\
                 environment knobs: see the top of benches/soak.rs",
                SCENARIOS.join(" ")
            );
            return;
        }
        if arg.starts_with('-') {
            continue; // cargo passes --bench; libtest-style flags are ignored
        }
        if !SCENARIOS.contains(&arg.as_str()) {
            eprintln!(
                "soak: unknown scenario {arg:?} (scenarios: {})",
                SCENARIOS.join(" ")
            );
            std::process::exit(2);
        }
        if !wanted.contains(&arg) {
            wanted.push(arg);
        }
    }
    if wanted.is_empty() {
        wanted = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }

    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_children();
        default_hook(info);
    }));

    let nofile = raise_nofile();
    let knobs = Knobs::from_env();
    if wanted.iter().any(|s| s == "d") && (knobs.idle_d as u64 + 100) > nofile {
        fatal(&format!(
            "scenario d needs {} open files; the hard limit is {nofile}",
            knobs.idle_d + 100
        ));
    }
    let dir = std::env::temp_dir().join(format!("bifrost-soak-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create the soak directory");
    let env = Env {
        dir: std::cell::RefCell::new(dir.clone()),
        bifrost: if wanted.iter().any(|s| !s.starts_with("twemproxy")) {
            bifrost_binary()
        } else {
            PathBuf::new()
        },
        knobs,
    };
    println!(
        "soak: bifrost {} ; logs and configs in {} ; RSS cap {} ; deadline {:?} per scenario \
         (twice that for c) ; open-file limit {nofile}",
        env.bifrost.display(),
        dir.display(),
        mib(env.knobs.rss_cap),
        env.knobs.deadline
    );
    let k = &env.knobs;
    if !(k.listener_yaml.is_empty() && k.backend_yaml.is_empty() && k.top_yaml.is_empty()) {
        println!(
            "soak: extra bifrost config: listener {:?}, backend {:?}, top level {:?}",
            k.listener_yaml, k.backend_yaml, k.top_yaml
        );
    }

    let mut summaries = Vec::new();
    for s in &wanted {
        let scenario_dir = dir.join(s);
        fs::create_dir_all(&scenario_dir).expect("create the scenario directory");
        *env.dir.borrow_mut() = scenario_dir;
        let watchdog = Watchdog::start(s, scenario_deadline(&env.knobs, s));
        let mut summary = match s.as_str() {
            "a" => flood(&env, "a", Target::Bifrost, false),
            "b" => flood(&env, "b", Target::Bifrost, true),
            "c" => huge_read(&env),
            "d" => idle_conns(&env),
            "e" => mixed(&env),
            "twemproxy-a" => flood(&env, "twemproxy-a", Target::Twemproxy, false),
            _ => unreachable!("checked above"),
        };
        if watchdog.fired() {
            summary.note = format!("DEADLINE passed, processes killed; {}", summary.note);
            summary.abnormal = true;
        }
        drop(watchdog);
        summaries.push(summary);
    }

    print_summary(&summaries);
    if summaries.iter().any(|s| s.abnormal) {
        println!("\nsoak: logs and configs kept in {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
}
