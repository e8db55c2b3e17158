//! A multi-key `get` with keys on a warm_first route with leases: each key asked on its own,
//! as a one-key read of its route (a [`Lease`] for a leased key; a [`Failover`] over its chain
//! for any other key), the answers put back in the asked order with one `END`.
//!
//! memcached's meta protocol has no multi-key get, so leased keys are asked one `mg` each
//! (pipelined on the connection). Keys go out in windows of at most `window` keys; a window is
//! answered once every key of it is, and the next goes out while the client takes replies (else
//! the batch parks until it drains), as a retrieval's windows do. Keys of other routes in the
//! same request are asked the same way, each as a one-key `get` of its chain, in turn (a
//! parallel route's key too: its first hit in chain order answers).
//!
//! Requests are numbered `key << LANE_BITS | the key's own request number`; a key's readers
//! keep one request out at a time. Until the batch is answered, its client's later writes wait
//! (see [`super::Exchange::holds_writes`]).

use std::time::Instant;

use bytes::Bytes;

use super::failover::Failover;
use super::lease::Lease;
use super::Effects;
use crate::upstream::Completion;

/// Bits of a request number that are the key's own.
const LANE_BITS: u32 = 12;
const LANE_MASK: u32 = (1 << LANE_BITS) - 1;

/// The most keys a batch takes: the rest of a request number's bits name the key (more would
/// make two keys' request numbers the same, and one key's reply taken for another's).
pub const MAX_KEYS: usize = 1 << (32 - LANE_BITS);

/// How one key of the batch is read.
#[derive(Debug)]
pub enum Lane {
    /// Under leases.
    Lease(Box<Lease>),
    /// Over its chain, in turn.
    Plain(Box<Failover>),
    /// No route takes it: a miss.
    Unrouted,
}

impl Lane {
    fn start(&mut self, fx: &mut Effects) {
        match self {
            Lane::Lease(l) => l.start(fx),
            Lane::Plain(f) => f.start(fx),
            Lane::Unrouted => fx.lookups = (0, 1),
        }
    }

    fn finished(&self) -> bool {
        match self {
            Lane::Lease(l) => l.finished(),
            Lane::Plain(f) => f.finished(),
            Lane::Unrouted => true,
        }
    }
}

/// A multi-key get read key by key.
#[derive(Debug)]
pub struct LeaseBatch {
    lanes: Vec<Lane>,
    /// Per key of the current window: what it answered (until the window goes out).
    answers: Vec<Vec<Bytes>>,
    /// Per key: when it asked to be woken.
    wakes: Vec<Option<Instant>>,
    window: usize,
    /// The current window: `start..end`.
    start: usize,
    end: usize,
    held: usize,
    parked: bool,
    finished: bool,
    holding: bool,
    /// Scratch effects for one key's reader.
    scratch: Effects,
}

impl LeaseBatch {
    /// A batch of `lanes` (one per key, in the asked order), `window` keys at a time.
    pub fn new(lanes: Vec<Lane>, window: usize) -> LeaseBatch {
        let keys = lanes.len();
        LeaseBatch {
            answers: Vec::new(),
            wakes: vec![None; keys],
            lanes,
            window: window.max(1),
            start: 0,
            end: 0,
            held: 0,
            parked: false,
            finished: false,
            holding: false,
            scratch: Effects::default(),
        }
    }

    /// Sends the first window; the client's later writes wait until the batch is answered.
    pub fn start(&mut self, fx: &mut Effects) {
        self.holding = true;
        self.next_window(fx);
    }

    /// True once the whole answer is out.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// True while a window waits for the client to drain.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// True while its client's later writes must wait.
    pub fn holds_writes(&self) -> bool {
        self.holding
    }

    /// The client drained: the next window goes out.
    pub fn resume(&mut self, fx: &mut Effects) {
        if self.parked {
            self.parked = false;
            self.next_window(fx);
        }
    }

    /// The reply (or failure) of request `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        let lane = (part >> LANE_BITS) as usize;
        let own = part & LANE_MASK;
        self.with_lane(lane, fx, |reader, scratch| match reader {
            Lane::Lease(l) => l.on_completion(own, c, scratch),
            Lane::Plain(f) => f.on_completion(own, c, scratch),
            Lane::Unrouted => {}
        });
        self.window_done(fx);
    }

    /// A time some key asked to be woken at has come: every key due is woken.
    pub fn on_wake(&mut self, fx: &mut Effects) {
        let now = fx.now.unwrap_or_else(Instant::now);
        for lane in 0..self.wakes.len() {
            if self
                .wakes
                .get(lane)
                .copied()
                .flatten()
                .is_some_and(|at| at <= now)
            {
                if let Some(wake) = self.wakes.get_mut(lane) {
                    *wake = None;
                }
                self.with_lane(lane, fx, |reader, scratch| {
                    if let Lane::Lease(l) = reader {
                        l.on_wake(scratch);
                    }
                });
            }
        }
        self.window_done(fx);
    }

    /// Runs `step` on key `lane`'s reader and takes what it did into `fx`.
    fn with_lane(
        &mut self,
        lane: usize,
        fx: &mut Effects,
        step: impl FnOnce(&mut Lane, &mut Effects),
    ) {
        let Some(reader) = self.lanes.get_mut(lane) else {
            return;
        };
        let scratch = &mut self.scratch;
        scratch.reset(fx.may_send);
        scratch.now = fx.now;
        step(reader, scratch);
        self.absorb(lane, fx);
    }

    /// Moves key `lane`'s effects from the scratch into `fx`.
    fn absorb(&mut self, lane: usize, fx: &mut Effects) {
        let scratch = &mut self.scratch;
        let base = u32::try_from(lane).unwrap_or(u32::MAX) << LANE_BITS;
        for mut send in scratch.sends.drain(..) {
            send.part = base | (send.part & LANE_MASK);
            fx.sends.push(send);
        }
        fx.side.append(&mut scratch.side);
        fx.lookups.0 += scratch.lookups.0;
        fx.lookups.1 += scratch.lookups.1;
        fx.leases.add(std::mem::take(&mut scratch.leases));
        if let Some(at) = scratch.wake_at.take() {
            if let Some(wake) = self.wakes.get_mut(lane) {
                *wake = Some(at);
            }
        }
        if let Some(answer) = lane
            .checked_sub(self.start)
            .and_then(|i| self.answers.get_mut(i))
        {
            for piece in scratch.deliver.drain(..) {
                self.held += piece.len();
                fx.held_delta += piece.len() as isize;
                answer.push(piece);
            }
        }
        scratch.deliver.clear();
        // The earliest time any key waits for (a timer that finds nothing due is harmless).
        let earliest = self.wakes.iter().flatten().min().copied();
        fx.wake_at = match (fx.wake_at, earliest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Sends the next window's keys.
    fn next_window(&mut self, fx: &mut Effects) {
        self.start = self.end;
        self.end = (self.start + self.window).min(self.lanes.len());
        self.answers.clear();
        self.answers.resize_with(self.end - self.start, Vec::new);
        for lane in self.start..self.end {
            self.with_lane(lane, fx, Lane::start);
        }
        self.window_done(fx);
    }

    /// When every key of the window is answered: the window goes out (a one-key answer with
    /// its `END` taken off, as only the last window ends with one), then the next.
    fn window_done(&mut self, fx: &mut Effects) {
        if self.finished || self.parked {
            return;
        }
        let lanes = self.lanes.get(self.start..self.end).unwrap_or_default();
        if !lanes.iter().all(Lane::finished) {
            return;
        }
        for (answer, lane) in self.answers.iter_mut().zip(lanes) {
            let plain = matches!(lane, Lane::Plain(_));
            for piece in answer.drain(..) {
                self.held = self.held.saturating_sub(piece.len());
                fx.held_delta -= piece.len() as isize;
                // A one-key get's reply ends with its `END`: taken off.
                let piece = match plain && piece.ends_with(b"END\r\n") {
                    true => piece.slice(..piece.len() - 5),
                    false => piece,
                };
                if !piece.is_empty() {
                    fx.deliver.push(piece);
                }
            }
        }
        if self.end >= self.lanes.len() {
            fx.deliver.push(Bytes::from_static(b"END\r\n"));
            self.finished = true;
            if self.holding {
                self.holding = false;
                fx.writes_released = true;
            }
        } else if fx.may_send {
            self.next_window(fx);
        } else {
            self.parked = true;
        }
    }
}
