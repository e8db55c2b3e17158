//! Counters with a single writer: each worker bumps only its own block, so a relaxed load and
//! store suffice (readers see a recent value) and the hot path has no locked instruction.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` to `counter`. Only the counter's owner may call this.
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Subtracts `n` from the gauge `counter` (same single-writer rule as [`add`]).
#[inline]
pub fn sub(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_sub(n),
        Ordering::Relaxed,
    );
}
