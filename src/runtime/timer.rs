//! A hashed timer wheel owned by one worker loop.
//!
//! Timers are cheap to add and are never cancelled: each payload carries whatever generation
//! numbers its owner needs, and the owner ignores a timer that no longer applies (a reused slab
//! slot, a reconnected backend). That keeps the wheel free of back-pointers and removal.

use std::time::{Duration, Instant};

/// Resolution of the wheel: timers fire at most this late.
pub const TICK: Duration = Duration::from_millis(2);
const SLOTS: usize = 1024;

/// A timer wheel holding payloads of type `T`, each due at an `Instant`.
pub struct TimerWheel<T> {
    origin: Instant,
    /// The next tick that has not been expired yet.
    cursor: u64,
    slots: Vec<Vec<(Instant, T)>>,
    len: usize,
    /// No pending timer is due before this (exact after a recompute, a lower bound after
    /// schedules), so most loop iterations skip the wheel entirely.
    earliest: Option<Instant>,
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose tick 0 starts now.
    pub fn new(now: Instant) -> Self {
        TimerWheel {
            origin: now,
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            len: 0,
            earliest: None,
        }
    }

    /// Number of pending timers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is pending.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        // Round up so a timer never fires before its deadline.
        let ticks = since.as_nanos().div_ceil(TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Schedules `payload` to fire at `at` (or at the next expiry if `at` is already past).
    pub fn schedule(&mut self, at: Instant, payload: T) {
        let tick = self.tick_of(at).max(self.cursor);
        let slot = (tick % SLOTS as u64) as usize;
        if let Some(bucket) = self.slots.get_mut(slot) {
            bucket.push((at, payload));
            self.len += 1;
            self.earliest = Some(self.earliest.map_or(at, |e| e.min(at)));
        }
    }

    /// Moves every payload due at or before `now` into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<T>) {
        if self.len == 0 {
            self.cursor = self.tick_of(now).saturating_sub(1).max(self.cursor);
            return;
        }
        if self.earliest.is_some_and(|e| e > now) {
            return;
        }
        let now_tick = self.tick_of(now);
        // Visit each slot at most once per call: a full turn covers every slot.
        let last = now_tick.min(self.cursor + SLOTS as u64);
        while self.cursor <= last {
            let slot = (self.cursor % SLOTS as u64) as usize;
            if let Some(bucket) = self.slots.get_mut(slot) {
                let mut i = 0;
                while i < bucket.len() {
                    if bucket.get(i).is_some_and(|(at, _)| *at <= now) {
                        let (_, payload) = bucket.swap_remove(i);
                        self.len -= 1;
                        out.push(payload);
                    } else {
                        i += 1;
                    }
                }
            }
            if self.cursor == last {
                break;
            }
            self.cursor += 1;
        }
        self.earliest = self.slots.iter().flatten().map(|(at, _)| *at).min();
    }

    /// How long the loop may sleep before the earliest pending timer is due (None: no timers).
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let earliest = self.earliest;
        earliest.map(|at| at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_not_early() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        wheel.schedule(t0 + Duration::from_millis(10), "b");
        wheel.schedule(t0 + Duration::from_millis(3), "a");
        wheel.schedule(t0 + Duration::from_secs(10), "far");
        let mut out = Vec::new();
        wheel.expire(t0 + Duration::from_millis(2), &mut out);
        assert!(out.is_empty());
        wheel.expire(t0 + Duration::from_millis(5), &mut out);
        assert_eq!(out, vec!["a"]);
        wheel.expire(t0 + Duration::from_millis(11), &mut out);
        assert_eq!(out, vec!["a", "b"]);
        assert_eq!(wheel.len(), 1);
        let wait = wheel.next_timeout(t0 + Duration::from_millis(11));
        assert!(wait.is_some_and(|w| w > Duration::from_secs(9)));
        wheel.expire(t0 + Duration::from_secs(11), &mut out);
        assert_eq!(out, vec!["a", "b", "far"]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_next_expire() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let mut out = Vec::new();
        wheel.expire(t0 + Duration::from_millis(50), &mut out);
        wheel.schedule(t0, 1);
        wheel.expire(t0 + Duration::from_millis(50), &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn wraps_around_many_turns() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let mut out = Vec::new();
        for i in 0..5000u64 {
            wheel.schedule(t0 + Duration::from_millis(i), i);
        }
        let mut now = t0;
        while !wheel.is_empty() {
            now += Duration::from_millis(7);
            wheel.expire(now, &mut out);
        }
        assert_eq!(out.len(), 5000);
        for (i, v) in out.iter().enumerate() {
            assert!(t0 + Duration::from_millis(*v) <= now, "{i}");
        }
    }
}
