//! Tests of [`super`] (job.rs).

use super::*;

#[test]
fn the_bucket_holds_the_rate() {
    let start = Instant::now();
    let mut bucket = Bucket::new(100.0, start);
    // One key at once, then 100 a second with at most a tenth of a second's burst.
    assert!(bucket.ready(start));
    bucket.take();
    assert!(!bucket.ready(start));
    let mut taken = 1;
    for ms in 1..=1000u64 {
        let now = start + Duration::from_millis(ms);
        while bucket.ready(now) {
            bucket.take();
            taken += 1;
        }
    }
    assert!(
        (100..=102).contains(&taken),
        "{taken} keys in a second at 100/s"
    );
    // Idle for a minute: the burst is capped at capacity (10).
    let later = start + Duration::from_secs(61);
    let mut burst = 0;
    while bucket.ready(later) {
        bucket.take();
        burst += 1;
    }
    assert_eq!(burst, 10);
    // The next wake-up is when a key's worth has come back (10 ms at 100/s).
    let wait = bucket.ready_at().saturating_duration_since(later);
    assert!(
        wait > Duration::from_millis(5) && wait <= Duration::from_millis(10),
        "{wait:?}"
    );
}

#[test]
fn a_slow_rate_wakes_up_per_key_and_a_fast_one_in_batches() {
    let start = Instant::now();
    let mut slow = Bucket::new(0.5, start);
    slow.take();
    assert_eq!(
        slow.ready_at().saturating_duration_since(start),
        Duration::from_secs(2)
    );
    let mut fast = Bucket::new(100_000.0, start);
    fast.take();
    // A hundredth of a second's worth (1000 keys), not one key per 10 µs.
    let wait = fast.ready_at().saturating_duration_since(start);
    assert_eq!(wait, Duration::from_millis(10));
}
