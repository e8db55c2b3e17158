//! Time for the open-loop generator: the monotonic clock, a timerfd that wakes the poll at a
//! send time, the process's CPU time, and the latency histogram.

use std::io;
use std::os::fd::RawFd;

use crate::fatal;

/// CLOCK_MONOTONIC in nanoseconds: the clock the timerfd is armed in, so both agree.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) of this process, all threads, in nanoseconds.
pub fn cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills the borrowed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF needs no other precondition.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A one-shot timerfd on CLOCK_MONOTONIC, armed at absolute times: wakes the poll at the next
/// intended send time to the nanosecond (the kernel applies no timer slack to timerfds).
pub struct Timer {
    pub fd: RawFd,
    armed: u64,
}

impl Timer {
    pub fn new() -> Timer {
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
    pub fn arm(&mut self, at: u64) {
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
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    pub max: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
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

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the top of the bucket holding the rank-th smallest
    /// value (never above the exact maximum); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
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
