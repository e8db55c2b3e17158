//! Open-loop load generator: latency of memcached, or of a proxy in front of it, at a fixed
//! request rate.
//!
//! ```sh
//! cargo bench --bench openloop -- --target 127.0.0.1:11211 --rate 20000 --duration 10
//! cargo bench --bench openloop -- --target 127.0.0.1:22122 --workload multiget --keys-per-get 10
//! cargo bench --bench openloop -- --target 127.0.0.1:22122 --mode closed   # the most it takes
//! ```
//!
//! **Open loop.** Every connection has a schedule of *intended* send times that follows the
//! target rate and does not depend on the replies: request *n* of the whole run is due at
//! `n / rate` seconds (or at the *n*-th arrival of a Poisson process of that rate with
//! `--arrivals poisson`) and goes to connection `n mod connections`. A request is written when
//! due even if earlier ones on its connection are still unanswered (memcached's text protocol
//! answers in order, so the replies are pipelined and matched to a FIFO of the connection's
//! intended times). Latency is the time from the *intended* send time to the end of the reply:
//! a server that stalls for 100 ms shows 100 ms of latency on every request due during the
//! stall, not on the one request a closed-loop client would have had outstanding (coordinated
//! omission).
//!
//! **Generator lateness.** The generator itself can fall behind (a busy core, a stall of the
//! process); its delay then counts as latency of the target. Each request's lateness (actual
//! write minus intended time, taken when it is generated) is checked: when more than
//! `--late-share` (0.1 %, the resolution of p99.9) of the measured requests were generated more
//! than `--late-us` (1 ms) late, the run is reported as `status=saturated` ("generator
//! saturated") and its percentiles are not to be trusted.
//!
//! **Closed loop** (`--mode closed`): each connection keeps `--depth` requests outstanding and
//! sends the next as soon as a reply arrives; the achieved rate is the most the target (and the
//! machine) take with that concurrency. `benches/openloop.sh` uses it to find twemproxy's
//! saturation rate.
//!
//! **Workloads.** `get_set`: a request is a `set` of one key with probability `--set-share`
//! (0.1), else a `get` of one key. `multiget`: the same share of sets, else a `get` of
//! `--keys-per-get` (10) distinct keys. Keys are drawn uniformly from `--keys` (10,000) keys of
//! `--key-size` (32) bytes; every key's value (`--value-size`, 100 bytes) is fixed and depends
//! on the key, so a reply is checked byte for byte. The keys are preloaded (set through the
//! target) before the run, so every get must hit.
//!
//! **Checks.** Replies are parsed to their ends: `STORED` for a set; for a get, `VALUE <key> 0
//! <bytes>` lines with their data, in the order of the requested keys, then `END`. An error
//! line (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`) or another store reply is an error
//! reply; a value with other flags or data, or a miss, is a wrong reply; anything that cannot be
//! matched to the request (an unknown line, a key not asked for) loses the connection's place in
//! the stream: it is counted, the connection is closed and its outstanding and later requests
//! count as unanswered. All of these are `errors`, and any error makes `status=errors`.
//!
//! **Output.** A line for people on stderr, and one line of `key=value` pairs on stdout starting
//! with `openloop ` (no spaces inside values) for scripts: `achieved` (replies per second
//! received during the measured window), `p50_us`, `p99_us`, `p999_us`, `max_us` (latency in
//! microseconds over the requests due in the window), the error counters, `late`,
//! `late_max_us`, `gen_cpu_pct` (the generator's own CPU over the run) and `status`
//! (`ok`, `saturated` or `errors`).
//!
//! Timing: a `timerfd` (nanosecond resolution) wakes the poll loop at the next intended send
//! time; `epoll_wait`'s own timeout is in whole milliseconds, which would send in 1 ms bursts.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::RawFd;
use std::process::exit;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mio::net::TcpStream as MioStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// Longest reply line accepted (a `VALUE` line of a 250-byte key is under 300 bytes).
const MAX_LINE: usize = 1024;
/// Largest value accepted in a reply; the load's values are `--value-size` bytes.
const MAX_VALUE: usize = 1 << 20;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Token of the thread's timerfd; connections use their index.
const TIMER: Token = Token(usize::MAX - 1);

#[derive(Parser, Debug)]
#[command(about = "Open-loop latency load for memcached and proxies in front of it")]
struct Args {
    /// host:port of memcached or of a proxy in front of it.
    #[arg(long, default_value = "127.0.0.1:11211")]
    target: String,
    /// Requests per second, all connections together (open mode; multi-gets count once).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window (replies checked, latency not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections to the target.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// What each request is.
    #[arg(long, value_enum, default_value_t = Workload::GetSet)]
    workload: Workload,
    /// Keys per get in the multiget workload.
    #[arg(long, default_value_t = 10)]
    keys_per_get: usize,
    /// Share of requests that are sets.
    #[arg(long, default_value_t = 0.1)]
    set_share: f64,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Key length in bytes.
    #[arg(long, default_value_t = 32)]
    key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// open: a fixed schedule; closed: each connection waits for replies (saturation).
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    mode: Mode,
    /// Closed mode: requests outstanding per connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Open mode: evenly spaced send times, or a Poisson process of the same rate.
    #[arg(long, value_enum, default_value_t = Arrivals::Uniform)]
    arrivals: Arrivals,
    /// Generator threads (connections are split between them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A request generated later than this after its intended time is late (µs).
    #[arg(long, default_value_t = 1000.0)]
    late_us: f64,
    /// More late measured requests than this share: generator saturated.
    #[arg(long, default_value_t = 0.001)]
    late_share: f64,
    /// Seconds to wait for outstanding replies after the last request.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Do not set the keys before the run (gets may then miss; misses still count as errors).
    #[arg(long)]
    no_preload: bool,
    /// Seed of the key and command choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A name echoed in the output line (`label=`), for the script's bookkeeping.
    #[arg(long, default_value = "-")]
    label: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    #[value(name = "get_set")]
    GetSet,
    #[value(name = "multiget")]
    Multiget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Arrivals {
    Uniform,
    Poisson,
}

fn fatal(msg: &str) -> ! {
    eprintln!("openloop: {msg}");
    exit(2)
}

// ---------------------------------------------------------------------------------------------
// Clock, timer, CPU
// ---------------------------------------------------------------------------------------------

/// CLOCK_MONOTONIC in nanoseconds: the clock the timerfd is armed in, so both agree.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) of this process, all threads, in nanoseconds.
fn cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills the borrowed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF needs no other precondition.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A one-shot timerfd on CLOCK_MONOTONIC, armed at absolute times: wakes the poll at the next
/// intended send time to the nanosecond (the kernel applies no timer slack to timerfds).
struct Timer {
    fd: RawFd,
    armed: u64,
}

impl Timer {
    fn new() -> Timer {
        // SAFETY: timerfd_create has no memory preconditions; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            fatal(&format!("timerfd_create: {}", io::Error::last_os_error()));
        }
        Timer { fd, armed: 0 }
    }

    /// Arms the timer to fire at `at` (CLOCK_MONOTONIC ns), unless it already is. Re-arming
    /// resets its expiry count, so the fd need never be read: with mio's edge-triggered
    /// registration every expiry is a new event.
    fn arm(&mut self, at: u64) {
        if at == self.armed {
            return;
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; a null old_value is allowed.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            fatal(&format!("timerfd_settime: {}", io::Error::last_os_error()));
        }
        self.armed = at;
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

// ---------------------------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------------------------

/// Sub-buckets per power of two: 2^7 = 128, so a bucket is at most 1/128 (0.8 %) wide.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every u64: values below SUB exactly, then SUB per power of two up to 2^63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// A log-linear histogram of nanoseconds: exact below 128 ns, then 128 linear buckets per
/// power of two (under 1 % error), and the exact maximum.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        (((SUB + i % SUB) << shift) - 1).saturating_add(1 << shift)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the top of the bucket holding the rank-th smallest
    /// value (never above the exact maximum); 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// Keys, values, requests
// ---------------------------------------------------------------------------------------------

/// The key space: each key's name, its (fixed) value, and its set and get requests, built
/// once and shared read-only by the threads.
struct Keyspace {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    sets: Vec<Vec<u8>>,
    gets: Vec<Vec<u8>>,
}

impl Keyspace {
    fn new(count: usize, key_size: usize, value_size: usize) -> Keyspace {
        let prefix = "openloop:";
        let width = key_size.saturating_sub(prefix.len());
        if width < count.saturating_sub(1).to_string().len() || key_size > 250 {
            fatal(&format!(
                "--key-size {key_size} cannot hold {count} distinct keys (at most 250)"
            ));
        }
        let mut ks = Keyspace {
            keys: Vec::with_capacity(count),
            values: Vec::with_capacity(count),
            sets: Vec::with_capacity(count),
            gets: Vec::with_capacity(count),
        };
        for i in 0..count {
            let key = format!("{prefix}{i:0width$}").into_bytes();
            // A value that differs from key to key, so a reply carrying another key's value
            // (a mix-up in the proxy) is seen.
            let value: Vec<u8> = (0..value_size)
                .map(|j| b'a' + ((i * 7 + j) % 26) as u8)
                .collect();
            let mut set =
                format!("set {} 0 0 {value_size}\r\n", String::from_utf8_lossy(&key)).into_bytes();
            set.extend_from_slice(&value);
            set.extend_from_slice(b"\r\n");
            let mut get = b"get ".to_vec();
            get.extend_from_slice(&key);
            get.extend_from_slice(b"\r\n");
            ks.keys.push(key);
            ks.values.push(value);
            ks.sets.push(set);
            ks.gets.push(get);
        }
        ks
    }
}

/// What a request asked, to check its reply against.
enum Op {
    Set(u32),
    Get(u32),
    Multi(Vec<u32>),
}

impl Op {
    fn get_keys(&self) -> &[u32] {
        match self {
            Op::Set(_) => &[],
            Op::Get(k) => std::slice::from_ref(k),
            Op::Multi(ks) => ks,
        }
    }
}

/// splitmix64: small, fast, and good enough to pick keys and commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> u32 {
        (self.next() % n as u64) as u32
    }
}

// ---------------------------------------------------------------------------------------------
// Reply parsing
// ---------------------------------------------------------------------------------------------

/// What the start of the read buffer holds for the oldest outstanding request.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// Not all of the reply yet.
    Incomplete,
    /// A whole reply of `used` bytes. `error`: why it is wrong (an error line, a miss, other
    /// data), if it is. The stream stays in step either way.
    Done {
        used: usize,
        error: Option<&'static str>,
    },
    /// Bytes that cannot be the reply to this request: the place in the stream is lost.
    Desync(&'static str),
}

/// The line at the start of `buf`, without its CRLF, and its length with it.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, &'static str> {
    let limit = buf.len().min(MAX_LINE);
    match memchr::memchr(b'\n', &buf[..limit]) {
        Some(nl) if nl > 0 && buf[nl - 1] == b'\r' => Ok(Some((&buf[..nl - 1], nl + 1))),
        Some(_) => Err("line not ended by CRLF"),
        None if buf.len() >= MAX_LINE => Err("reply line too long"),
        None => Ok(None),
    }
}

/// An error line memcached (or a proxy) sends in place of a reply.
fn is_error_line(l: &[u8]) -> bool {
    l == b"ERROR" || l.starts_with(b"CLIENT_ERROR") || l.starts_with(b"SERVER_ERROR")
}

/// Parses the reply to `op` at the start of `buf`.
fn parse_reply(buf: &[u8], op: &Op, ks: &Keyspace) -> Parsed {
    let (first, used) = match line(buf) {
        Ok(Some(l)) => l,
        Ok(None) => return Parsed::Incomplete,
        Err(e) => return Parsed::Desync(e),
    };
    if is_error_line(first) {
        return Parsed::Done {
            used,
            error: Some("error reply"),
        };
    }
    if let Op::Set(_) = op {
        return match first {
            b"STORED" => Parsed::Done { used, error: None },
            b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => Parsed::Done {
                used,
                error: Some("set not stored"),
            },
            _ => Parsed::Desync("unexpected reply to a set"),
        };
    }
    parse_values(buf, op.get_keys(), ks)
}

/// The reply to a get of `keys`: `VALUE` blocks for keys asked, in order, then `END`.
fn parse_values(buf: &[u8], keys: &[u32], ks: &Keyspace) -> Parsed {
    let mut pos = 0;
    let mut next = 0; // keys[next..] may still come
    let mut hits = 0;
    let mut error = None;
    loop {
        let (l, len) = match line(&buf[pos..]) {
            Ok(Some(l)) => l,
            Ok(None) => return Parsed::Incomplete,
            Err(e) => return Parsed::Desync(e),
        };
        if l == b"END" {
            if hits < keys.len() && error.is_none() {
                error = Some("miss of a preloaded key");
            }
            return Parsed::Done {
                used: pos + len,
                error,
            };
        }
        if is_error_line(l) {
            // An error in the middle of a multi-get ends the reply.
            return Parsed::Done {
                used: pos + len,
                error: Some("error reply"),
            };
        }
        let mut tok = l.split(|&b| b == b' ');
        if tok.next() != Some(b"VALUE") {
            return Parsed::Desync("unexpected line in a get reply");
        }
        let (Some(key), Some(flags), Some(bytes)) = (tok.next(), tok.next(), tok.next()) else {
            return Parsed::Desync("short VALUE line");
        };
        let Some(found) = keys[next..]
            .iter()
            .position(|&k| ks.keys[k as usize] == key)
        else {
            return Parsed::Desync("VALUE of a key not asked for (or out of order)");
        };
        let k = keys[next + found] as usize;
        next += found + 1;
        let Some(n) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n <= MAX_VALUE)
        else {
            return Parsed::Desync("bad VALUE length");
        };
        let data = pos + len;
        if buf.len() < data + n + 2 {
            return Parsed::Incomplete;
        }
        if &buf[data + n..data + n + 2] != b"\r\n" {
            return Parsed::Desync("value not ended by CRLF");
        }
        if flags != b"0" || buf[data..data + n] != ks.values[k][..] {
            error.get_or_insert("value differs from the one set");
        }
        hits += 1;
        pos = data + n + 2;
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// A request written (or queued to write) and not yet answered.
struct Pending {
    /// Intended send time (open loop) or actual one (closed), ns since the run's base.
    at: u64,
    /// Due inside the measured window: its latency goes into the histogram.
    measured: bool,
    op: Op,
}

struct Conn {
    sock: MioStream,
    out: Vec<u8>,
    out_pos: usize,
    /// Read buffer: `inp[in_pos..in_end]` is received and not yet matched to a request.
    inp: Vec<u8>,
    in_pos: usize,
    in_end: usize,
    pending: VecDeque<Pending>,
    /// The last write stopped at WouldBlock: wait for a writable event.
    blocked: bool,
    dead: bool,
}

/// Counters of one thread, merged at the end.
struct Stats {
    hist: Histogram,
    sent: u64,
    measured: u64,
    answered: u64,
    in_window: u64,
    error_replies: u64,
    wrong_replies: u64,
    desyncs: u64,
    unanswered: u64,
    late: u64,
    late_max: u64,
    first_error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            hist: Histogram::new(),
            sent: 0,
            measured: 0,
            answered: 0,
            in_window: 0,
            error_replies: 0,
            wrong_replies: 0,
            desyncs: 0,
            unanswered: 0,
            late: 0,
            late_max: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, o: Stats) {
        self.hist.merge(&o.hist);
        self.sent += o.sent;
        self.measured += o.measured;
        self.answered += o.answered;
        self.in_window += o.in_window;
        self.error_replies += o.error_replies;
        self.wrong_replies += o.wrong_replies;
        self.desyncs += o.desyncs;
        self.unanswered += o.unanswered;
        self.late += o.late;
        self.late_max = self.late_max.max(o.late_max);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn errors(&self) -> u64 {
        self.error_replies + self.wrong_replies + self.desyncs + self.unanswered
    }

    /// Keeps the first problem, with the bytes that showed it, for the human line.
    fn note(&mut self, what: &str, bytes: &[u8]) {
        if self.first_error.is_none() {
            let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                .escape_debug()
                .collect();
            self.first_error = Some(if shown.is_empty() {
                what.to_string()
            } else {
                format!("{what}: \"{shown}\"")
            });
        }
    }
}

/// The run's timeline, in ns since `base` (CLOCK_MONOTONIC): warm-up until `window`, measured
/// until `end`, replies awaited until `deadline`.
struct Timeline {
    base: u64,
    window: u64,
    end: u64,
    deadline: u64,
}

impl Timeline {
    fn now(&self) -> u64 {
        mono_ns().saturating_sub(self.base)
    }
}

/// Everything a generator thread reads.
struct Ctx<'a> {
    args: &'a Args,
    ks: &'a Keyspace,
    tl: &'a Timeline,
}

impl Conn {
    fn new(sock: TcpStream) -> Conn {
        Conn {
            sock: MioStream::from_std(sock),
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inp: vec![0; READ_CHUNK],
            in_pos: 0,
            in_end: 0,
            pending: VecDeque::new(),
            blocked: false,
            dead: false,
        }
    }

    /// Queues one request (chosen by `rng`) intended at `at`, and writes it unless the socket
    /// is full.
    fn send(&mut self, cx: &Ctx, rng: &mut Rng, at: u64, measured: bool, st: &mut Stats) {
        let a = cx.args;
        let ks = cx.ks;
        if self.dead {
            // Its place in the schedule is lost: count it, never skip it silently.
            st.unanswered += 1;
            return;
        }
        let op = if rng.unit() < a.set_share {
            Op::Set(rng.below(a.keys))
        } else if a.workload == Workload::GetSet {
            Op::Get(rng.below(a.keys))
        } else {
            let mut keys = Vec::with_capacity(a.keys_per_get);
            while keys.len() < a.keys_per_get {
                let k = rng.below(a.keys);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            Op::Multi(keys)
        };
        match &op {
            Op::Set(k) => self.out.extend_from_slice(&ks.sets[*k as usize]),
            Op::Get(k) => self.out.extend_from_slice(&ks.gets[*k as usize]),
            Op::Multi(keys) => {
                self.out.extend_from_slice(b"get");
                for &k in keys {
                    self.out.push(b' ');
                    self.out.extend_from_slice(&ks.keys[k as usize]);
                }
                self.out.extend_from_slice(b"\r\n");
            }
        }
        self.pending.push_back(Pending { at, measured, op });
        st.sent += 1;
        if !self.blocked {
            self.flush(st);
        }
    }

    /// Writes what is queued until done or the socket is full.
    fn flush(&mut self, st: &mut Stats) {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return self.fail(st, "connection closed on write"),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(st, "write failed"),
            }
        }
        self.blocked = false;
        self.out.clear();
        self.out_pos = 0;
    }

    /// Reads what arrived and settles every reply it completes. Returns how many requests
    /// were answered (closed mode sends as many new ones).
    fn read(&mut self, cx: &Ctx, st: &mut Stats) -> usize {
        let mut done = 0;
        while !self.dead {
            if self.in_pos == self.in_end {
                self.in_pos = 0;
                self.in_end = 0;
            }
            if self.inp.len() - self.in_end < READ_CHUNK / 2 {
                // Little room left: move the unparsed part to the front, and grow the buffer
                // only for a reply larger than it. It is zeroed once, not per read.
                self.inp.copy_within(self.in_pos..self.in_end, 0);
                self.in_end -= self.in_pos;
                self.in_pos = 0;
                if self.inp.len() - self.in_end < READ_CHUNK / 2 {
                    self.inp.resize(self.inp.len() * 2, 0);
                }
            }
            let room = self.inp.len() - self.in_end;
            let r = self.sock.read(&mut self.inp[self.in_end..]);
            let now = cx.tl.now();
            match r {
                Ok(0) => self.fail(st, "connection closed by the target"),
                Ok(n) => {
                    self.in_end += n;
                    done += self.settle(cx, now, st);
                    if n < room {
                        // The socket is drained: data arriving later is a new edge, so the
                        // read that would only say WouldBlock is saved.
                        break;
                    }
                }
                Err(e) => match e.kind() {
                    ErrorKind::WouldBlock => break,
                    ErrorKind::Interrupted => {}
                    _ => self.fail(st, "read failed"),
                },
            }
        }
        done
    }

    /// Matches complete replies at the head of the read buffer to the oldest requests.
    fn settle(&mut self, cx: &Ctx, now: u64, st: &mut Stats) -> usize {
        let mut done = 0;
        while self.in_pos < self.in_end {
            let buf = &self.inp[self.in_pos..self.in_end];
            let Some(head) = self.pending.front() else {
                st.desyncs += 1;
                st.note("bytes nobody asked for", buf);
                self.fail(st, "");
                break;
            };
            match parse_reply(buf, &head.op, cx.ks) {
                Parsed::Incomplete => break,
                Parsed::Desync(why) => {
                    st.desyncs += 1;
                    st.note(why, buf);
                    // The head request counts as the desync, not also as unanswered.
                    self.pending.pop_front();
                    self.fail(st, "");
                    break;
                }
                Parsed::Done { used, error } => {
                    if let Some(why) = error {
                        if why == "error reply" {
                            st.error_replies += 1;
                        } else {
                            st.wrong_replies += 1;
                        }
                        st.note(why, &buf[..used]);
                    }
                    self.in_pos += used;
                    let p = self.pending.pop_front().expect("head checked above");
                    if p.measured {
                        st.hist.record(now.saturating_sub(p.at));
                    }
                    if (cx.tl.window..cx.tl.end).contains(&now) {
                        st.in_window += 1;
                    }
                    st.answered += 1;
                    done += 1;
                }
            }
        }
        done
    }

    /// The connection is lost: what it still owed is unanswered, and so is every request the
    /// schedule gives it from now on (see `send`).
    fn fail(&mut self, st: &mut Stats, why: &str) {
        if !why.is_empty() {
            st.note(why, b"");
        }
        st.unanswered += self.pending.len() as u64;
        self.pending.clear();
        self.dead = true;
        // Closed so the target sees it; its last events are skipped by the loop. An error
        // here (already reset) changes nothing.
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// The generator loop
// ---------------------------------------------------------------------------------------------

/// The intended send times of one thread's share of the open-loop schedule.
struct Schedule {
    next: f64,
    interval: f64,
    poisson: bool,
}

impl Schedule {
    /// Thread `k` of `threads` sends requests k, k + threads, ... of the whole run's sequence
    /// (uniform), or its own Poisson process of rate / threads.
    fn new(a: &Args, k: usize) -> Schedule {
        let per_thread = a.rate / a.threads as f64;
        Schedule {
            next: if a.arrivals == Arrivals::Uniform {
                k as f64 * 1e9 / a.rate
            } else {
                0.0
            },
            interval: 1e9 / per_thread,
            poisson: a.arrivals == Arrivals::Poisson,
        }
    }

    fn advance(&mut self, rng: &mut Rng) {
        self.next += if self.poisson {
            -(1.0 - rng.unit()).ln() * self.interval
        } else {
            self.interval
        };
    }
}

/// Runs one thread's connections until every reply is in or the deadline passes.
fn run_thread(cx: &Ctx, socks: Vec<TcpStream>, k: usize) -> Stats {
    let a = cx.args;
    let tl = cx.tl;
    let mut st = Stats::new();
    let mut rng = Rng(a.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (k as u64 + 1));
    let mut poll = Poll::new().unwrap_or_else(|e| fatal(&format!("poll: {e}")));
    let mut conns: Vec<Conn> = socks.into_iter().map(Conn::new).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(
                &mut c.sock,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap_or_else(|e| fatal(&format!("register: {e}")));
    }
    let mut timer = Timer::new();
    poll.registry()
        .register(&mut SourceFd(&timer.fd), TIMER, Interest::READABLE)
        .unwrap_or_else(|e| fatal(&format!("register timer: {e}")));
    let mut events = Events::with_capacity(1024);
    let mut sched = Schedule::new(a, k);
    let mut n: usize = 0; // requests of this thread so far: the next goes to conns[n % len]
    let late_ns = (a.late_us * 1000.0) as u64;
    let open = a.mode == Mode::Open;
    let mut started = false;
    // Start together with the other threads, at the schedule's time 0.
    let wait = tl.base.saturating_sub(mono_ns());
    std::thread::sleep(Duration::from_nanos(wait));

    loop {
        let now = tl.now();
        if open {
            // Everything due by now, each at its own intended time.
            while (sched.next as u64) <= now && (sched.next as u64) < tl.end {
                let at = sched.next as u64;
                let measured = at >= tl.window;
                if measured {
                    st.measured += 1;
                    let late = now - at;
                    if late > late_ns {
                        st.late += 1;
                    }
                    st.late_max = st.late_max.max(late);
                }
                let i = n % conns.len();
                conns[i].send(cx, &mut rng, at, measured, &mut st);
                n += 1;
                sched.advance(&mut rng);
            }
        } else if !started && now < tl.end {
            started = true;
            for c in conns.iter_mut() {
                for _ in 0..a.depth {
                    c.send(cx, &mut rng, now, now >= tl.window, &mut st);
                }
            }
        }
        let sending = if open {
            (sched.next as u64) < tl.end
        } else {
            now < tl.end
        };
        if !sending && conns.iter().all(|c| c.pending.is_empty()) {
            break;
        }
        if now >= tl.deadline {
            for c in conns.iter_mut() {
                st.unanswered += c.pending.len() as u64;
                if !c.pending.is_empty() {
                    st.note("no reply before the drain deadline", b"");
                }
            }
            break;
        }
        // Wake at the next send time, or at the window's edges and the deadline.
        let wake = if open && sending {
            sched.next as u64
        } else if now < tl.window {
            tl.window
        } else if now < tl.end {
            tl.end
        } else {
            tl.deadline
        };
        timer.arm(tl.base + wake);
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() != ErrorKind::Interrupted {
                fatal(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.token() == TIMER || conns[i].dead {
                continue;
            }
            if ev.is_writable() && conns[i].blocked {
                conns[i].flush(&mut st);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                let done = conns[i].read(cx, &mut st);
                if !open {
                    // Closed loop: each answer makes room for the next request.
                    let now = tl.now();
                    if now < tl.end {
                        for _ in 0..done {
                            conns[i].send(cx, &mut rng, now, now >= tl.window, &mut st);
                        }
                    }
                }
            }
        }
    }
    st
}

// ---------------------------------------------------------------------------------------------
// Setup and report
// ---------------------------------------------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| fatal(&format!("connect to {addr}: {e}")));
    // Requests are single small writes; Nagle would hold one back behind an unacked one.
    s.set_nodelay(true)
        .unwrap_or_else(|e| fatal(&format!("nodelay: {e}")));
    s
}

/// Sets every key through the target, in pipelined batches, checking each `STORED`.
fn preload(addr: SocketAddr, ks: &Keyspace) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| fatal(&format!("set_read_timeout: {e}")));
    let mut rd = BufReader::new(
        s.try_clone()
            .unwrap_or_else(|e| fatal(&format!("clone: {e}"))),
    );
    let mut line = Vec::new();
    for batch in ks.sets.chunks(500) {
        let req: Vec<u8> = batch.concat();
        s.write_all(&req)
            .unwrap_or_else(|e| fatal(&format!("preload write to {addr}: {e}")));
        for _ in batch {
            line.clear();
            match rd.read_until(b'\n', &mut line) {
                Ok(n) if n > 0 && line == b"STORED\r\n" => {}
                Ok(_) => fatal(&format!(
                    "preload: a set through {addr} answered {:?}, not STORED",
                    String::from_utf8_lossy(&line)
                )),
                Err(e) => fatal(&format!("preload read from {addr}: {e}")),
            }
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn check(a: &Args) {
    let bad = |m: &str| fatal(m);
    if a.mode == Mode::Open && !(a.rate > 0.0 && a.rate.is_finite()) {
        bad("--rate must be above 0");
    }
    if a.duration.is_nan() || a.duration <= 0.0 || a.warmup < 0.0 || a.drain < 0.0 {
        bad("--duration must be above 0, --warmup and --drain not below 0");
    }
    if a.connections == 0 || a.threads == 0 || a.threads > a.connections {
        bad("--connections and --threads must be at least 1, threads at most connections");
    }
    if a.keys == 0 || a.keys > u32::MAX as usize {
        bad("--keys must be between 1 and 2^32 - 1");
    }
    if a.workload == Workload::Multiget && (a.keys_per_get == 0 || a.keys_per_get > a.keys) {
        bad("--keys-per-get must be between 1 and --keys");
    }
    if a.mode == Mode::Closed && a.depth == 0 {
        bad("--depth must be at least 1");
    }
    if !(0.0..=1.0).contains(&a.set_share) {
        bad("--set-share must be between 0 and 1");
    }
}

fn main() {
    let args = Args::parse();
    check(&args);
    let addr = args
        .target
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .unwrap_or_else(|| fatal(&format!("cannot resolve --target {}", args.target)));
    let ks = Keyspace::new(args.keys, args.key_size, args.value_size);
    if !args.no_preload {
        preload(addr, &ks);
    }

    let mut socks: Vec<Vec<TcpStream>> = (0..args.threads).map(|_| Vec::new()).collect();
    for i in 0..args.connections {
        let s = connect(addr);
        s.set_nonblocking(true)
            .unwrap_or_else(|e| fatal(&format!("set_nonblocking: {e}")));
        socks[i % args.threads].push(s);
    }
    let secs = |s: f64| (s * 1e9) as u64;
    // The schedule starts a little after now, so every thread is polling when it does.
    let base = mono_ns() + secs(0.02);
    let window = secs(args.warmup);
    let end = window + secs(args.duration);
    let tl = Timeline {
        base,
        window,
        end,
        deadline: end + secs(args.drain),
    };
    let cx = Ctx {
        args: &args,
        ks: &ks,
        tl: &tl,
    };
    let cpu0 = cpu_ns();
    let mut st = Stats::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(k, s)| {
                let cx = &cx;
                scope.spawn(move || run_thread(cx, s, k))
            })
            .collect();
        for h in handles {
            st.merge(
                h.join()
                    .unwrap_or_else(|_| fatal("a generator thread panicked")),
            );
        }
    });
    let wall = tl.now().max(1);
    let gen_cpu = (cpu_ns() - cpu0) as f64 * 100.0 / wall as f64;
    report(&args, &st, gen_cpu);
}

fn report(a: &Args, st: &Stats, gen_cpu: f64) {
    let h = &st.hist;
    let achieved = st.in_window as f64 / a.duration;
    let late_share = st.late as f64 / st.measured.max(1) as f64;
    let saturated = a.mode == Mode::Open && late_share > a.late_share;
    let status = if st.errors() > 0 {
        "errors"
    } else if saturated {
        "saturated"
    } else {
        "ok"
    };
    let workload = match a.workload {
        Workload::GetSet => "get_set",
        Workload::Multiget => "multiget",
    };
    let mode = match a.mode {
        Mode::Open => "open",
        Mode::Closed => "closed",
    };
    let (p50, p99, p999) = (h.quantile(0.5), h.quantile(0.99), h.quantile(0.999));
    let rate = match a.mode {
        Mode::Open => format!("{:.0} req/s", a.rate),
        Mode::Closed => format!("closed loop, depth {}", a.depth),
    };
    eprintln!(
        "openloop {workload} on {} ({rate}, {} connections, {} s): achieved {achieved:.0}/s; \
         latency µs p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ({} requests); errors {} \
         (error replies {}, wrong {}, out of step {}, unanswered {}){}; generator: {} late \
         by over {} µs (max {:.1} µs), {gen_cpu:.0}% CPU{}",
        a.target,
        a.connections,
        a.duration,
        us(p50),
        us(p99),
        us(p999),
        us(h.max),
        h.total,
        st.errors(),
        st.error_replies,
        st.wrong_replies,
        st.desyncs,
        st.unanswered,
        st.first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        st.late,
        a.late_us,
        us(st.late_max),
        if saturated {
            " — GENERATOR SATURATED: the percentiles include its own delay"
        } else {
            ""
        },
    );
    let mut out = io::stdout().lock();
    // A closed stdout (the script gone) is not worth a panic.
    let _ = writeln!(
        out,
        "openloop label={} mode={mode} workload={workload} target={} rate={:.0} \
         connections={} duration_s={} achieved={achieved:.1} requests={} p50_us={:.1} \
         p99_us={:.1} p999_us={:.1} max_us={:.1} errors={} error_replies={} wrong_replies={} \
         desyncs={} unanswered={} sent={} answered={} late={} late_max_us={:.1} \
         gen_cpu_pct={gen_cpu:.0} status={status}",
        a.label,
        a.target,
        if a.mode == Mode::Open { a.rate } else { 0.0 },
        a.connections,
        a.duration,
        h.total,
        us(p50),
        us(p99),
        us(p999),
        us(h.max),
        st.errors(),
        st.error_replies,
        st.wrong_replies,
        st.desyncs,
        st.unanswered,
        st.sent,
        st.answered,
        st.late,
        us(st.late_max),
    );
}
