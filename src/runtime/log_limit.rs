//! Rate limiting for per-event log lines, owned by one worker loop.
//!
//! Some warnings fire once per event: a failed connect, a timed-out request, an accept error,
//! a malformed reply. When a server dies or a connection storm hits, those events arrive
//! thousands of times a second, and logging each one floods stderr and, worse, stalls the
//! worker on a blocking write to a slow terminal or pipe while its clients wait.
//!
//! A [`LogLimiter`] gives every (event kind, subject) pair a budget of a few lines per window.
//! Events beyond the budget are only counted; the first line logged for that key after a
//! suppressed stretch says how many were dropped. The subject is optional (typically a server
//! index), so one dead server does not use up the budget that would report another's first
//! failure.
//!
//! Each worker owns its own limiter and passes it by `&mut`: no locks, no atomics, and no
//! allocation per call (all buckets are allocated at construction). Time is passed in as an
//! [`Instant`], which the loop already has, so the limiter is tested without sleeping. The
//! message is a [`fmt::Arguments`], formatted only if the line is actually logged.
//!
//! ```ignore
//! limiter.warn(LogEvent::Timeout, Some(server), now, format_args!("backend {addr}: request timed out"));
//! // or, keeping the caller's module as the log target:
//! warn_limited!(limiter, LogEvent::Timeout, Some(server), now, "backend {addr}: request timed out");
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use log::Level;

/// Default number of lines logged per key per window.
pub const DEFAULT_BURST: u32 = 5;
/// Default length of a rate-limiting window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Most subjects that get a bucket of their own; higher subject numbers share one bucket.
pub const MAX_SUBJECTS: usize = 1024;

/// The kinds of event whose log lines are rate limited. Each kind has its own budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogEvent {
    /// Connecting to a backend failed (refused, unreachable, timed out, register error).
    ConnectFailed,
    /// A request to a backend timed out.
    Timeout,
    /// An established backend connection was closed or failed on read or write.
    ConnectionLost,
    /// A backend sent a reply that could not be parsed or matched to a request.
    BadReply,
    /// Accepting a client connection failed (EMFILE and friends).
    AcceptFailed,
    /// A client connection was closed by the proxy because it hit a limit.
    ClientClosed,
}

impl LogEvent {
    /// Number of event kinds.
    pub const COUNT: usize = 6;

    /// Every event kind, in declaration order.
    #[cfg(test)]
    pub const ALL: [LogEvent; LogEvent::COUNT] = [
        LogEvent::ConnectFailed,
        LogEvent::Timeout,
        LogEvent::ConnectionLost,
        LogEvent::BadReply,
        LogEvent::AcceptFailed,
        LogEvent::ClientClosed,
    ];

    /// A short human-readable name, used in suppression summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            LogEvent::ConnectFailed => "connect failed",
            LogEvent::Timeout => "timeout",
            LogEvent::ConnectionLost => "connection lost",
            LogEvent::BadReply => "bad reply",
            LogEvent::AcceptFailed => "accept failed",
            LogEvent::ClientClosed => "client closed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call to [`LogLimiter::log`] or [`LogLimiter::warn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutcome {
    /// The line was within budget and was handed to the logger. `suppressed` is the number of
    /// lines for the same key dropped since the previous logged line (0 if none); when nonzero,
    /// the line said so.
    Logged {
        /// Lines for this key suppressed since the previous line was logged.
        suppressed: u64,
    },
    /// The budget for this key was used up in the current window: the line was counted, not
    /// logged, and its message was not formatted.
    Suppressed,
}

impl LogOutcome {
    /// True if the line was logged.
    #[cfg(test)]
    pub fn is_logged(self) -> bool {
        matches!(self, LogOutcome::Logged { .. })
    }
}

/// Budget state of one (kind, subject) key.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Start of the current window; `None` until the first event.
    window_start: Option<Instant>,
    /// Lines logged in the current window.
    logged: u32,
    /// Lines suppressed and not yet reported.
    suppressed: u64,
    /// When the first unreported suppression happened (meaningful only if `suppressed > 0`).
    suppressed_since: Option<Instant>,
}

/// Per-worker rate limiter for event log lines: at most `burst` lines per (kind, subject) per
/// `window`, counting the rest and reporting the count on the next logged line.
///
/// Subjects `0..subjects` each have their own bucket per kind; larger subjects share one
/// overflow bucket per kind, and `None` has its own. Memory is fixed at construction.
#[derive(Clone, Debug)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    /// Subjects with a bucket of their own.
    subjects: usize,
    /// `LogEvent::COUNT` blocks of `subjects + 2` buckets: `None`, `Some(0..subjects)`, overflow.
    buckets: Box<[Bucket]>,
    /// Lines suppressed over the limiter's lifetime.
    suppressed_total: u64,
}

impl LogLimiter {
    /// A limiter allowing `burst` lines per key per `window`, with separate buckets for subjects
    /// `0..subjects` (capped at [`MAX_SUBJECTS`]). A `burst` of 0 suppresses every line (only
    /// [`LogLimiter::flush`] reports counts); a zero `window` disables limiting.
    pub fn new(burst: u32, window: Duration, subjects: usize) -> Self {
        let subjects = subjects.min(MAX_SUBJECTS);
        LogLimiter {
            burst,
            window,
            subjects,
            buckets: vec![Bucket::default(); LogEvent::COUNT * (subjects + 2)].into_boxed_slice(),
            suppressed_total: 0,
        }
    }

    /// A limiter with [`DEFAULT_BURST`] lines per [`DEFAULT_WINDOW`] and separate buckets for
    /// subjects `0..subjects` (for example one per configured server).
    pub fn with_subjects(subjects: usize) -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_WINDOW, subjects)
    }

    /// Total lines suppressed since construction (for stats).
    #[cfg(test)]
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    fn slot(&self, subject: Option<usize>) -> usize {
        match subject {
            None => 0,
            Some(s) if s < self.subjects => s + 1,
            Some(_) => self.subjects + 1,
        }
    }

    /// Logs `args` at `level` with log target `target` if the budget of (`event`, `subject`)
    /// allows, otherwise counts it. `now` is the caller's current time; windows are fixed,
    /// starting at the first event after the previous window ended. The message is formatted
    /// only when logged; a logged line after suppressed ones ends with
    /// `(N similar messages suppressed in the last Ts)`.
    pub fn log(
        &mut self,
        level: Level,
        target: &'static str,
        event: LogEvent,
        subject: Option<usize>,
        now: Instant,
        args: fmt::Arguments<'_>,
    ) -> LogOutcome {
        let idx = event.index() * (self.subjects + 2) + self.slot(subject);
        let (burst, window) = (self.burst, self.window);
        let bucket = &mut self.buckets[idx];
        let expired = match bucket.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= window,
        };
        if expired {
            bucket.window_start = Some(now);
            bucket.logged = 0;
        }
        if bucket.logged >= burst {
            if bucket.suppressed == 0 {
                bucket.suppressed_since = Some(now);
            }
            bucket.suppressed += 1;
            self.suppressed_total += 1;
            return LogOutcome::Suppressed;
        }
        bucket.logged += 1;
        let suppressed = std::mem::take(&mut bucket.suppressed);
        if suppressed == 0 {
            log::log!(target: target, level, "{args}");
        } else {
            let secs = span_secs(bucket.suppressed_since, now);
            log::log!(
                target: target,
                level,
                "{args} ({suppressed} similar messages suppressed in the last {secs}s)"
            );
        }
        LogOutcome::Logged { suppressed }
    }

    /// [`LogLimiter::log`] at warn level, with this module as the log target (use
    /// [`warn_limited!`](crate::warn_limited) to keep the caller's module as the target).
    pub fn warn(
        &mut self,
        event: LogEvent,
        subject: Option<usize>,
        now: Instant,
        args: fmt::Arguments<'_>,
    ) -> LogOutcome {
        self.log(Level::Warn, module_path!(), event, subject, now, args)
    }

    /// Reports, at warn level, suppressed counts that no later event has carried: for each key
    /// whose window has ended with lines still unreported, logs one summary line and clears the
    /// count. Call it now and then from the loop (e.g. every few seconds) so the last burst of a
    /// storm is not silently forgotten. Returns the number of suppressed lines reported.
    #[cfg(test)]
    pub fn flush(&mut self, now: Instant) -> u64 {
        let per_kind = self.subjects + 2;
        let mut reported = 0;
        for (idx, bucket) in self.buckets.iter_mut().enumerate() {
            if bucket.suppressed == 0 {
                continue;
            }
            let ended = match bucket.window_start {
                None => true,
                Some(start) => now.saturating_duration_since(start) >= self.window,
            };
            if !ended {
                continue;
            }
            let event = LogEvent::ALL[idx / per_kind];
            let slot = idx % per_kind;
            let n = std::mem::take(&mut bucket.suppressed);
            let secs = span_secs(bucket.suppressed_since, now);
            if slot == 0 {
                log::warn!("{event}: {n} similar messages suppressed in the last {secs}s");
            } else if slot <= self.subjects {
                log::warn!(
                    "{event} (server {}): {n} similar messages suppressed in the last {secs}s",
                    slot - 1
                );
            } else {
                log::warn!(
                    "{event} (servers {} and up): {n} similar messages suppressed in the last {secs}s",
                    self.subjects
                );
            }
            reported += n;
        }
        reported
    }
}

impl Default for LogLimiter {
    /// [`DEFAULT_BURST`] lines per [`DEFAULT_WINDOW`], with no per-subject buckets (every
    /// `Some` subject shares one bucket per kind).
    fn default() -> Self {
        Self::with_subjects(0)
    }
}

/// Whole seconds (rounded up, at least 1) from `since` to `now`.
fn span_secs(since: Option<Instant>, now: Instant) -> u64 {
    let span = since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
    let secs = span.as_secs() + u64::from(span.subsec_nanos() > 0);
    secs.max(1)
}

/// Rate-limited `log::warn!`: `warn_limited!(limiter, event, subject, now, "fmt", args...)`
/// calls [`LogLimiter::log`] at warn level with the caller's module as the log target, and
/// evaluates to its [`LogOutcome`]. `limiter` is a `LogLimiter` place or a `&mut LogLimiter`.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $event:expr, $subject:expr, $now:expr, $($arg:tt)+) => {
        $limiter.log(
            ::log::Level::Warn,
            ::std::module_path!(),
            $event,
            $subject,
            $now,
            ::std::format_args!($($arg)+),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn warn(
        l: &mut LogLimiter,
        event: LogEvent,
        subject: Option<usize>,
        now: Instant,
    ) -> LogOutcome {
        l.warn(event, subject, now, format_args!("test {}", event))
    }

    #[test]
    fn burst_passes_then_suppresses() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(5, secs(10), 4);
        for i in 0..5 {
            let t = t0 + Duration::from_millis(i);
            assert_eq!(
                warn(&mut l, LogEvent::Timeout, Some(1), t),
                LogOutcome::Logged { suppressed: 0 }
            );
        }
        for i in 5..42 {
            let t = t0 + Duration::from_millis(i);
            assert_eq!(
                warn(&mut l, LogEvent::Timeout, Some(1), t),
                LogOutcome::Suppressed
            );
        }
        assert_eq!(l.suppressed_total(), 37);
    }

    #[test]
    fn window_rolls_over_and_reports_count() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(5, secs(10), 4);
        for _ in 0..5 {
            assert!(warn(&mut l, LogEvent::ConnectFailed, Some(0), t0).is_logged());
        }
        for _ in 0..37 {
            assert_eq!(
                warn(&mut l, LogEvent::ConnectFailed, Some(0), t0 + secs(9)),
                LogOutcome::Suppressed
            );
        }
        // Still inside the window.
        let almost = t0 + secs(10) - Duration::from_nanos(1);
        assert_eq!(
            warn(&mut l, LogEvent::ConnectFailed, Some(0), almost),
            LogOutcome::Suppressed
        );
        // New window: the first line carries the count, later ones do not.
        let t1 = t0 + secs(10);
        assert_eq!(
            warn(&mut l, LogEvent::ConnectFailed, Some(0), t1),
            LogOutcome::Logged { suppressed: 38 }
        );
        for _ in 0..4 {
            assert_eq!(
                warn(&mut l, LogEvent::ConnectFailed, Some(0), t1),
                LogOutcome::Logged { suppressed: 0 }
            );
        }
        assert_eq!(
            warn(&mut l, LogEvent::ConnectFailed, Some(0), t1),
            LogOutcome::Suppressed
        );
        // A long quiet gap: the window restarts at the next event.
        let t2 = t1 + secs(3600);
        assert_eq!(
            warn(&mut l, LogEvent::ConnectFailed, Some(0), t2),
            LogOutcome::Logged { suppressed: 1 }
        );
    }

    #[test]
    fn subjects_and_kinds_have_their_own_budgets() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2, secs(10), 3);
        for _ in 0..2 {
            assert!(warn(&mut l, LogEvent::ConnectFailed, Some(0), t0).is_logged());
        }
        assert!(!warn(&mut l, LogEvent::ConnectFailed, Some(0), t0).is_logged());
        // Another server, no subject, and another kind are unaffected.
        assert!(warn(&mut l, LogEvent::ConnectFailed, Some(1), t0).is_logged());
        assert!(warn(&mut l, LogEvent::ConnectFailed, None, t0).is_logged());
        assert!(warn(&mut l, LogEvent::Timeout, Some(0), t0).is_logged());
        assert!(warn(&mut l, LogEvent::AcceptFailed, None, t0).is_logged());
    }

    #[test]
    fn subjects_beyond_capacity_share_a_bucket() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2, secs(10), 2);
        assert!(warn(&mut l, LogEvent::BadReply, Some(2), t0).is_logged());
        assert!(warn(&mut l, LogEvent::BadReply, Some(7), t0).is_logged());
        assert!(!warn(&mut l, LogEvent::BadReply, Some(usize::MAX), t0).is_logged());
        // In-range subjects keep their own budgets.
        assert!(warn(&mut l, LogEvent::BadReply, Some(1), t0).is_logged());
        // So does `None`, separate from the overflow bucket.
        assert!(warn(&mut l, LogEvent::BadReply, None, t0).is_logged());
    }

    #[test]
    fn time_going_backwards_does_not_roll_or_panic() {
        let t0 = Instant::now() + secs(100);
        let mut l = LogLimiter::new(1, secs(10), 0);
        assert!(warn(&mut l, LogEvent::ClientClosed, None, t0).is_logged());
        assert!(!warn(&mut l, LogEvent::ClientClosed, None, t0 - secs(50)).is_logged());
    }

    #[test]
    fn zero_burst_and_zero_window() {
        let t0 = Instant::now();
        let mut silent = LogLimiter::new(0, secs(10), 0);
        assert!(!warn(&mut silent, LogEvent::Timeout, None, t0).is_logged());
        let mut open = LogLimiter::new(1, Duration::ZERO, 0);
        for _ in 0..10 {
            assert!(warn(&mut open, LogEvent::Timeout, None, t0).is_logged());
        }
    }

    #[test]
    fn flush_reports_only_ended_windows_once() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(1, secs(10), 2);
        warn(&mut l, LogEvent::Timeout, Some(0), t0);
        warn(&mut l, LogEvent::Timeout, Some(0), t0);
        warn(&mut l, LogEvent::Timeout, Some(0), t0);
        warn(&mut l, LogEvent::AcceptFailed, None, t0 + secs(5));
        warn(&mut l, LogEvent::AcceptFailed, None, t0 + secs(5));
        warn(&mut l, LogEvent::BadReply, Some(9), t0);
        warn(&mut l, LogEvent::BadReply, Some(9), t0);
        // Windows still open: nothing reported.
        assert_eq!(l.flush(t0 + secs(9)), 0);
        // Timeout and BadReply windows ended, AcceptFailed's has not.
        assert_eq!(l.flush(t0 + secs(10)), 3);
        assert_eq!(l.flush(t0 + secs(11)), 0);
        assert_eq!(l.flush(t0 + secs(15)), 1);
        // Reported counts are not carried again by the next logged line.
        assert_eq!(
            warn(&mut l, LogEvent::Timeout, Some(0), t0 + secs(20)),
            LogOutcome::Logged { suppressed: 0 }
        );
        assert_eq!(l.suppressed_total(), 4);
    }

    #[test]
    fn macro_form_returns_outcome() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(1, secs(10), 1);
        let addr = "127.0.0.1:11211";
        let r = &mut l;
        assert!(crate::warn_limited!(
            r,
            LogEvent::Timeout,
            Some(0),
            t0,
            "backend {addr}: timed out"
        )
        .is_logged());
        assert_eq!(
            crate::warn_limited!(
                l,
                LogEvent::Timeout,
                Some(0),
                t0,
                "backend {}: timed out",
                addr
            ),
            LogOutcome::Suppressed
        );
    }

    #[test]
    fn span_rounds_up() {
        let t0 = Instant::now();
        assert_eq!(span_secs(Some(t0), t0), 1);
        assert_eq!(span_secs(Some(t0), t0 + Duration::from_millis(10_001)), 11);
        assert_eq!(span_secs(Some(t0), t0 + secs(10)), 10);
        assert_eq!(span_secs(None, t0), 1);
    }

    #[test]
    fn names() {
        for e in LogEvent::ALL {
            assert!(!e.as_str().is_empty());
            assert_eq!(LogEvent::ALL[e.index()], e);
        }
    }
}
