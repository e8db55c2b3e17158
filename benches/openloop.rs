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
//! write minus intended time, taken when it is generated) is recorded (`lag_p50_us`,
//! `lag_p99_us`) and checked: when more than `--late-share` (1 %) of the measured requests were
//! generated more than `--late-us` (1 ms) late, the run is reported as `status=saturated`
//! ("generator saturated"): from p99 up, its percentiles may be the generator's delay. Over
//! 0.1 % late (`late_pct` over 0.1), the same holds for p99.9; on a shared virtual machine a
//! few late requests in a thousand happen at any rate (a stalled virtual CPU stalls the
//! generator like anything else), so that case is left to the reader (the script marks it).
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
//! line (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`) is an error reply; another store
//! reply (`NOT_STORED` ...), a value with other flags or data, or a miss is a wrong reply;
//! anything that cannot be matched to the request (an unknown line, a key not asked for) loses
//! the connection's place in the stream: it is counted, the connection is closed and its
//! outstanding and later requests count as unanswered. All of these are `errors`, and any
//! error makes `status=errors` (the exit status stays 0: the report is right).
//!
//! **Output.** A line for people on stderr, and one line of `key=value` pairs on stdout starting
//! with `openloop ` (no spaces inside values) for scripts: `achieved` (replies per second
//! received during the measured window), `p50_us`, `p99_us`, `p999_us`, `max_us` (latency in
//! microseconds over the requests due in the window), the error counters, `lag_p50_us` and
//! `lag_p99_us`, `late`, `late_pct`, `late_max_us`, `gen_cpu_pct` (the generator's own CPU over
//! the run, in % of one core) and `status` (`ok`, `saturated` or `errors`).
//!
//! Timing: a `timerfd` (nanosecond resolution) wakes the poll loop at the next intended send
//! time; `epoll_wait`'s own timeout is in whole milliseconds, which would send in 1 ms bursts.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::time::Duration;

use clap::{Parser, ValueEnum};

// The parts live under benches/openloop/ (a module file directly in benches/ would be taken
// for a bench target of its own).
#[path = "openloop/generator.rs"]
mod generator;
#[path = "openloop/proto.rs"]
mod proto;
#[path = "openloop/timing.rs"]
mod timing;

use generator::{run_thread, Ctx, Stats, Timeline};
use proto::Keyspace;
use timing::{cpu_ns, mono_ns};

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
    #[arg(long, default_value_t = 0.01)]
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

/// Setup errors (arguments, connecting, the preload): a message and exit status 2.
fn fatal(msg: &str) -> ! {
    eprintln!("openloop: {msg}");
    exit(2)
}

// ---------------------------------------------------------------------------------------------
// Setup and report
// ---------------------------------------------------------------------------------------------

/// A blocking connection to the target, without Nagle.
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

/// Nanoseconds as microseconds.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Exits with a message on arguments the run cannot use.
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

/// The human line on stderr and the `key=value` line on stdout.
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
    // The generator's schedule only exists in the open loop.
    let timing = match a.mode {
        Mode::Open => format!(
            "sent p50 {:.1} µs, p99 {:.1} µs after the intended time, {} late by over {} µs \
             ({:.2}%, max {:.1} µs), ",
            us(st.lag.quantile(0.5)),
            us(st.lag.quantile(0.99)),
            st.late,
            a.late_us,
            late_share * 100.0,
            us(st.late_max),
        ),
        Mode::Closed => String::new(),
    };
    eprintln!(
        "openloop {workload} on {} ({rate}, {} connections, {} s): achieved {achieved:.0}/s; \
         latency µs p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ({} requests); errors {} \
         (error replies {}, wrong {}, out of step {}, unanswered {}){}; generator: \
         {timing}{gen_cpu:.0}% CPU{}",
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
        if saturated {
            " — GENERATOR SATURATED: the percentiles include its own delay"
        } else if late_share > 0.001 {
            " — over 0.1% late: p99.9 may include the generator's delay"
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
         desyncs={} unanswered={} sent={} answered={} lag_p50_us={:.1} lag_p99_us={:.1} \
         late={} late_pct={:.2} late_max_us={:.1} gen_cpu_pct={gen_cpu:.0} status={status}",
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
        us(st.lag.quantile(0.5)),
        us(st.lag.quantile(0.99)),
        st.late,
        late_share * 100.0,
        us(st.late_max),
    );
}
