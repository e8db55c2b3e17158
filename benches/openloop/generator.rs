//! Connections and the poll loop of one generator thread: the open-loop schedule, the closed
//! loop, writes, reads, and the matching of replies to requests.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use mio::net::TcpStream as MioStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::proto::{parse_reply, Keyspace, Op, Parsed, Rng, Wrong};
use crate::timing::{mono_ns, Histogram, Timer};
use crate::{fatal, Args, Arrivals, Mode, Workload};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Token of the thread's timerfd; connections use their index.
const TIMER: Token = Token(usize::MAX - 1);

/// A request written (or queued to write) and not yet answered.
struct Pending {
    /// Intended send time (open loop) or actual one (closed), ns since the run's base.
    at: u64,
    /// Due inside the measured window: its latency goes into the histogram.
    measured: bool,
    op: Op,
}

/// One connection to the target: its write queue, read buffer and outstanding requests.
struct Conn {
    sock: MioStream,
    /// Write queue: `out[out_pos..]` is not written yet.
    out: Vec<u8>,
    out_pos: usize,
    /// Read buffer: `inp[in_pos..in_end]` is received and not yet matched to a request.
    inp: Vec<u8>,
    in_pos: usize,
    in_end: usize,
    /// Requests sent or queued, oldest first: replies come in this order.
    pending: VecDeque<Pending>,
    /// The last write stopped at WouldBlock: wait for a writable event.
    blocked: bool,
    /// Lost (closed, or out of step with the target): nothing more is sent on it.
    dead: bool,
}

/// Counters of one thread, merged at the end.
pub struct Stats {
    /// Latency of the measured requests, ns.
    pub hist: Histogram,
    /// Requests queued for sending (warm-up included).
    pub sent: u64,
    /// Requests due in the measured window.
    pub measured: u64,
    /// Replies received (warm-up included).
    pub answered: u64,
    /// Replies received during the measured window: the achieved rate.
    pub in_window: u64,
    /// Error lines in place of a reply.
    pub error_replies: u64,
    /// Whole replies that are wrong otherwise (not stored, a miss, another value).
    pub wrong_replies: u64,
    /// Replies that could not be matched to their request (the connection is then lost).
    pub desyncs: u64,
    /// Requests never answered: outstanding at the deadline, or on a lost connection.
    pub unanswered: u64,
    /// Measured requests generated over `--late-us` after their intended time.
    pub late: u64,
    /// The most any measured request was late, ns.
    pub late_max: u64,
    /// Open loop: how long after its intended time each measured request was generated
    /// (the generator's own delay, part of every latency).
    pub lag: Histogram,
    /// The first problem seen, for the human line.
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Stats {
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
            lag: Histogram::new(),
            first_error: None,
        }
    }

    pub fn merge(&mut self, o: Stats) {
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
        self.lag.merge(&o.lag);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    /// Every kind of error together.
    pub fn errors(&self) -> u64 {
        self.error_replies + self.wrong_replies + self.desyncs + self.unanswered
    }

    /// Keeps the first problem, with the bytes that showed it, for the human line.
    pub fn note(&mut self, what: &str, bytes: &[u8]) {
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
pub struct Timeline {
    pub base: u64,
    pub window: u64,
    pub end: u64,
    pub deadline: u64,
}

impl Timeline {
    /// Now, in ns since `base` (0 before it).
    pub fn now(&self) -> u64 {
        mono_ns().saturating_sub(self.base)
    }
}

/// Everything a generator thread reads.
pub struct Ctx<'a> {
    pub args: &'a Args,
    pub ks: &'a Keyspace,
    pub tl: &'a Timeline,
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
                        if why == Wrong::ErrorLine {
                            st.error_replies += 1;
                        } else {
                            st.wrong_replies += 1;
                        }
                        st.note(why.as_str(), &buf[..used]);
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
pub fn run_thread(cx: &Ctx, socks: Vec<TcpStream>, k: usize) -> Stats {
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
                    st.lag.record(late);
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
