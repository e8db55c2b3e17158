//! The proxy's own counters, reported by the `stats` command in memcached's names.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer (relaxed atomic adds, no
//! contention); a reader sums every worker's block. Blocks are cache-line aligned so two
//! workers never write the same line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Names every counter once: the field, its `stats` name, and whether it is a gauge.
macro_rules! counters {
    ($( $field:ident => $name:literal ),* $(,)?) => {
        /// One worker's counters.
        #[repr(align(64))]
        #[derive(Default)]
        pub struct WorkerStats {
            $( #[doc = concat!("`", $name, "`")] pub $field: AtomicU64, )*
        }

        impl WorkerStats {
            /// (name, value) of every counter, in report order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( ($name, self.$field.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

counters! {
    curr_connections => "curr_connections",
    total_connections => "total_connections",
    rejected_connections => "rejected_connections",
    cmd_get => "cmd_get",
    cmd_set => "cmd_set",
    cmd_touch => "cmd_touch",
    cmd_flush => "cmd_flush",
    cmd_delete => "cmd_delete",
    cmd_arith => "cmd_arith",
    cmd_meta => "cmd_meta",
    get_hits => "get_hits",
    get_misses => "get_misses",
    bytes_read => "bytes_read",
    bytes_written => "bytes_written",
    client_errors => "client_errors",
    no_route => "no_route",
    backend_requests => "backend_requests",
    backend_errors => "backend_errors",
    backend_timeouts => "backend_timeouts",
    backend_connections => "backend_connections",
    backend_connect_failures => "backend_connect_failures",
}

impl WorkerStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Every worker's counters, plus process-wide facts, shared read-only between workers.
pub struct StatsRegistry {
    started: Instant,
    started_unix: u64,
    workers: Vec<Arc<WorkerStats>>,
}

impl StatsRegistry {
    /// A registry with one counter block per worker.
    pub fn new(workers: usize) -> Self {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        StatsRegistry {
            started: Instant::now(),
            started_unix,
            workers: (0..workers)
                .map(|_| Arc::new(WorkerStats::default()))
                .collect(),
        }
    }

    /// The counter block of worker `index` (a fresh detached block if out of range).
    pub fn worker(&self, index: usize) -> Arc<WorkerStats> {
        self.workers.get(index).cloned().unwrap_or_default()
    }

    /// Sums of every counter across workers, in report order.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        let mut totals = WorkerStats::default().snapshot();
        for worker in &self.workers {
            for (slot, (_, value)) in totals.iter_mut().zip(worker.snapshot()) {
                slot.1 += value;
            }
        }
        totals
    }

    /// The `stats` reply: `STAT name value` lines then `END`, as memcached words them.
    pub fn render(&self) -> Vec<u8> {
        use std::fmt::Write;
        let uptime = self.started.elapsed().as_secs();
        let mut out = String::with_capacity(1024);
        let _ = write!(out, "STAT pid {}\r\n", std::process::id());
        let _ = write!(out, "STAT uptime {uptime}\r\n");
        let _ = write!(out, "STAT time {}\r\n", self.started_unix + uptime);
        let _ = write!(out, "STAT version {}\r\n", env!("CARGO_PKG_VERSION"));
        let _ = write!(out, "STAT pointer_size {}\r\n", usize::BITS);
        let _ = write!(out, "STAT threads {}\r\n", self.workers.len());
        for (name, value) in self.totals() {
            let _ = write!(out, "STAT {name} {value}\r\n");
        }
        out.push_str("END\r\n");
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_workers_and_render_ends_with_end() {
        let reg = StatsRegistry::new(2);
        WorkerStats::add(&reg.worker(0).cmd_get, 3);
        WorkerStats::add(&reg.worker(1).cmd_get, 4);
        let totals = reg.totals();
        assert!(totals.contains(&("cmd_get", 7)));
        let text = String::from_utf8(reg.render()).unwrap_or_default();
        assert!(text.contains("STAT cmd_get 7\r\n"));
        assert!(text.contains("STAT threads 2\r\n"));
        assert!(text.ends_with("END\r\n"));
    }
}
