//! One worker's queue of one side effect (see [`crate::upstream::side_effects`]): a job that
//! owns the side effect's backend requests on that worker, admits them within the side effect's
//! `queue` and `queue_bytes`, and counts their outcomes in its own counter block.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::observe::stats::WorkerStats;
use crate::upstream::jobs::JobStep;
use crate::upstream::side_effects::{EffectBoard, EffectCounters};
use crate::upstream::Completion;

/// One worker's queue of one side effect: a job that owns the side effect's backend requests
/// on that worker and counts their outcomes in its own block.
#[derive(Debug)]
pub struct EffectQueue {
    /// Its side effect's `queue` and `queue_bytes`.
    queue: usize,
    queue_bytes: usize,
    /// This queue's counters (registered on the board, which sums them); `None` only for a
    /// side effect the board does not have, whose queue takes nothing.
    counters: Option<Arc<EffectCounters>>,
    /// This worker's requests queued or in flight, and their bytes.
    depth: usize,
    bytes: usize,
}

impl EffectQueue {
    /// The queue of side effect `effect` of `board` on the calling worker, with a counter block
    /// of its own (see [`EffectBoard::register_queue`]): build one per worker and side effect.
    pub fn new(effect: usize, board: Arc<EffectBoard>) -> EffectQueue {
        let spec = board.spec(effect);
        debug_assert!(
            spec.is_some(),
            "a worker builds the queues of the board's side effects only ({effect} of {})",
            board.len()
        );
        EffectQueue {
            queue: spec.map_or(0, |s| s.queue),
            queue_bytes: spec.map_or(0, |s| s.queue_bytes),
            counters: board.register_queue(effect),
            depth: 0,
            bytes: 0,
        }
    }

    /// Takes one more request of `bytes` bytes if the queue has room for it (counted as
    /// queued), else counts it as dropped and says no. The request's completion must carry
    /// `bytes` back as its part number (see [`EffectQueue::part_for`]).
    pub fn admit(&mut self, bytes: usize) -> bool {
        let Some(c) = &self.counters else {
            return false;
        };
        let bytes = Self::part_for(bytes) as usize;
        if self.depth >= self.queue || self.bytes.saturating_add(bytes) > self.queue_bytes {
            WorkerStats::add(&c.dropped, 1);
            return false;
        }
        self.depth += 1;
        self.bytes += bytes;
        WorkerStats::add(&c.queued, 1);
        c.depth.store(self.depth as u64, Ordering::Relaxed);
        true
    }

    /// Counts one request as dropped without taking it: its target's side-effect connection
    /// is full (see [`EffectBoard::max_queue`]).
    pub fn drop_one(&mut self) {
        if let Some(c) = &self.counters {
            WorkerStats::add(&c.dropped, 1);
        }
    }

    /// The part number a request of `bytes` bytes goes out with: its size, so its completion
    /// says how many bytes it let go.
    pub fn part_for(bytes: usize) -> u32 {
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Request `part` (see [`EffectQueue::part_for`]) of this queue was answered or failed.
    pub fn on_completion(&mut self, part: u32, completion: &Completion) -> JobStep {
        if !completion.end {
            return JobStep::Wait;
        }
        // Only a request this queue admitted completes here, once, with the part it was sent
        // with: anything else is a bug (release builds keep the gauges from wrapping).
        debug_assert!(
            self.depth > 0 && part as usize <= self.bytes,
            "a completion of a request the queue does not hold (depth {}, {} bytes, part {part})",
            self.depth,
            self.bytes
        );
        self.depth = self.depth.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(part as usize);
        if let Some(c) = &self.counters {
            c.depth.store(self.depth as u64, Ordering::Relaxed);
            if completion.failed.is_some() || is_error(&completion.reply) {
                WorkerStats::add(&c.failed, 1);
            } else {
                WorkerStats::add(&c.done, 1);
            }
        }
        JobStep::Wait
    }
}

/// An error reply: the request was not carried out.
fn is_error(reply: &[u8]) -> bool {
    reply.starts_with(b"SERVER_ERROR")
        || reply.starts_with(b"CLIENT_ERROR")
        || reply.starts_with(b"ERROR")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::stats::EffectSnapshot;
    use crate::upstream::side_effects::tests::board;

    #[test]
    fn bytes_over_queue_bytes_are_dropped_until_a_request_gives_its_bytes_back() {
        let b = board();
        let mut q = EffectQueue::new(0, b.clone());
        assert!(q.admit(60));
        assert!(q.admit(40));
        assert!(!q.admit(1), "100 bytes held: one more is over queue_bytes");
        let owner = crate::upstream::Owner { token: 0, part: 60 };
        let done = Completion::whole(owner, b"STORED\r\n", 0, None);
        q.on_completion(EffectQueue::part_for(60), &done);
        assert!(q.admit(50));
        assert!(!q.admit(20));
        let mut text = String::new();
        crate::observe::stats::render_effects(&*b, &mut text);
        assert!(
            text.contains("STAT effect:replicate.0:dropped 2\r\n"),
            "{text}"
        );
        assert!(
            text.contains("STAT effect:replicate.0:depth 2\r\n"),
            "{text}"
        );
    }

    #[test]
    fn the_side_effect_connection_takes_the_largest_queue_and_a_drop_there_is_counted() {
        let b = board();
        // replicate.0 has queue 3, write_on_miss.hot queue 2: one alone never fills it.
        assert_eq!(b.max_queue(), 3);
        assert_eq!(EffectBoard::default().max_queue(), 1);
        let mut q = EffectQueue::new(1, b.clone());
        q.drop_one();
        let mut text = String::new();
        crate::observe::stats::render_effects(&*b, &mut text);
        for line in [
            "STAT effect:write_on_miss.hot:dropped 1\r\n",
            "STAT effect:write_on_miss.hot:queued 0\r\n",
            "STAT effect:write_on_miss.hot:depth 0\r\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_until_a_request_completes() {
        let b = board();
        let mut q = EffectQueue::new(1, b.clone());
        assert!(q.admit(10));
        assert!(q.admit(10));
        assert!(!q.admit(10));
        let owner = crate::upstream::Owner { token: 0, part: 0 };
        let done = Completion::whole(owner, b"NOT_STORED\r\n", 0, None);
        q.on_completion(10, &done);
        assert!(q.admit(10));
        let mut text = String::new();
        crate::observe::stats::render_effects(&*b, &mut text);
        for line in [
            "STAT effect:write_on_miss.hot:queued 3\r\n",
            "STAT effect:write_on_miss.hot:done 1\r\n",
            "STAT effect:write_on_miss.hot:dropped 1\r\n",
            "STAT effect:write_on_miss.hot:depth 2\r\n",
            "STAT effect:replicate.0:queued 0\r\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }

    #[test]
    fn each_workers_queue_counts_in_its_own_block_and_reads_sum_them() {
        let b = board();
        // Two workers' queues of one side effect: separate blocks, one writer each.
        let (mut w0, mut w1) = (
            EffectQueue::new(1, b.clone()),
            EffectQueue::new(1, b.clone()),
        );
        assert!(w0.admit(10));
        assert!(w1.admit(10));
        assert!(w1.admit(10));
        assert!(!w1.admit(10), "queue 2 is per worker");
        w0.drop_one();
        let owner = crate::upstream::Owner { token: 0, part: 10 };
        w1.on_completion(
            10,
            &Completion::whole(owner, b"SERVER_ERROR x\r\n", 0, None),
        );
        let hot = b
            .snapshot()
            .into_iter()
            .find(|e| e.name == "write_on_miss.hot");
        let want = EffectSnapshot {
            name: "write_on_miss.hot",
            queued: 3,
            done: 0,
            failed: 1,
            dropped: 2,
            depth: 2,
        };
        assert_eq!(hot, Some(want));
    }
}
