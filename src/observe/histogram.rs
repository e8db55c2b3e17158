//! Latency histograms recorded on the data path: fixed buckets, one writer per histogram (its
//! worker), no lock and no allocation per observation; readers sum every worker's copy when
//! metrics are scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::counter;

/// Upper bounds of the finite buckets, in microseconds (a bucket holds the observations at
/// most its bound and above the previous one). They span a loopback round trip (tens of
/// microseconds) to a backend timeout (seconds); the last bucket, `+Inf`, takes the rest.
pub const BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Buckets of a histogram: the finite ones, then `+Inf`.
pub const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

/// One worker's histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative).
    buckets: [AtomicU64; BUCKETS],
    /// Sum of every observation, in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration. Only the owning worker calls this (see [`counter::add`]).
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        self.observe_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one duration given in microseconds.
    #[inline]
    pub fn observe_micros(&self, micros: u64) {
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        if let Some(counter) = self.buckets.get(bucket) {
            counter::add(counter, 1);
        }
        counter::add(&self.sum_micros, micros);
    }

    /// Adds this histogram's current counts to `into`.
    pub fn add_to(&self, into: &mut HistogramSnapshot) {
        for (total, bucket) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        into.sum_micros += self.sum_micros.load(Ordering::Relaxed);
    }
}

/// A histogram summed over workers at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), the last being `+Inf`.
    pub buckets: [u64; BUCKETS],
    /// Sum of every observation, in microseconds.
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// (upper bound in seconds, cumulative count) per bucket; `None` is `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let mut running = 0;
        self.buckets.iter().enumerate().map(move |(i, &n)| {
            running += n;
            let bound = BOUNDS_MICROS.get(i).map(|&us| us as f64 / 1e6);
            (bound, running)
        })
    }

    /// Sum of every observation, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // le 50us
        h.observe(Duration::from_micros(51)); // le 100us
        h.observe(Duration::from_millis(1)); // le 1ms
        h.observe(Duration::from_secs(60)); // +Inf
        let mut s = HistogramSnapshot::default();
        h.add_to(&mut s);
        h.add_to(&mut s);
        assert_eq!(s.count(), 8);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 2);
        assert_eq!(s.buckets[4], 2);
        assert_eq!(s.buckets[BUCKETS - 1], 2);
        assert_eq!(s.sum_micros, 2 * (50 + 51 + 1_000 + 60_000_000));
        let cumulative: Vec<_> = s.cumulative().collect();
        assert_eq!(cumulative.first(), Some(&(Some(0.00005), 2)));
        assert_eq!(cumulative.last(), Some(&(None, 8)));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
