//! Exchanges: one state machine per client request that needs backends.
//!
//! An exchange owns its backend requests. Each reply (or piece of a streamed reply, or
//! failure) reaches it as a [`Completion`]; it answers with [`Effects`] (bytes to deliver to
//! its client's reply slot, backend requests to send next) and a [`Flow`]: wait for more,
//! done, parked until the client drains, or finish in the background with no client waiting.
//! The client keeps only the order of replies (its FIFO of slots); what a request's replies
//! mean is decided here.
//!
//! The kinds:
//! * [`forward::Forward`]: one backend request whose reply is the answer (streamed through
//!   when it is large);
//! * [`fan_out::FanOut`]: the same request to several servers, `OK` only if all say so
//!   (`flush_all`);
//! * [`retrieval::Retrieval`]: the one engine for multi-key retrievals: keys asked of their
//!   servers (one each, or several in turn or at once) in windows of keys, with rounds that
//!   ask the next server for what is missing, each window's replies merged into the asked order;
//! * [`failover::Failover`]: one single-key request tried on several servers in turn (failover
//!   routes, warm_first's reads with their write-backs);
//! * [`parallel::Parallel`]: one request to several servers at once, one reply answering
//!   (parallel routes, warm_first's writes);
//! * [`lease::Lease`]: a plain read of one key on a warm_first route with leases (warm under
//!   memcached's leases, cold for the lease holder, a timer for the readers behind it);
//! * [`lease_batch::LeaseBatch`]: a multi-key `get` with leased keys, read key by key;
//! * [`ordered::Ordered`]: a write on a warm_first route with leases: cold first, then warm.
//!
//! Exchanges live in a slab owned by the worker; ids carry a generation, so a reply for an
//! exchange that has gone (its client closed) finds nothing and is dropped.

pub(crate) mod failover;
pub(crate) mod fan_out;
pub(crate) mod forward;
pub mod lease;
pub mod lease_batch;
pub mod multiget;
pub(crate) mod ordered;
pub(crate) mod parallel;
pub(crate) mod retrieval;
pub mod ttl;
pub(crate) mod window;
pub mod write_back;

use crate::runtime::gen_slab::{GenSlab, Id};
use bytes::Bytes;

use crate::upstream::Completion;
pub use crate::upstream::{Framing, Send};

/// Names one exchange (a stale id finds nothing).
pub type ExchangeId = Id<Exchange>;

/// Every live exchange of a worker.
pub type Exchanges = GenSlab<Exchange>;

/// The client reply slot an exchange answers: the client (slab index and generation) and the
/// slot's sequence number in that client's FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    /// Client slab index.
    pub client: usize,
    /// The client's generation.
    pub generation: u32,
    /// The slot's sequence number.
    pub seq: u64,
}

/// Where a warm_first route copies the cold tier's hits: the side effect that queues the
/// copies (see [`crate::upstream::side_effects`]) and their TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteBack {
    /// The side effect's index.
    pub effect: usize,
    /// The copies' TTL in seconds (0: no expiry).
    pub ttl: u32,
}

/// What an exchange asks of the loop in answer to an event. Reused between events.
#[derive(Debug, Default)]
pub struct Effects {
    /// Bytes for the client's slot, in order.
    pub deliver: Vec<Bytes>,
    /// Backend requests to send.
    pub sends: Vec<Send>,
    /// Set by the loop before the call: the client may take more replies now (it is under its
    /// soft limit), so the next window of a large request may be released.
    pub may_send: bool,
    /// Change in the reply bytes the exchange holds (merge buffers), for the client's account.
    pub held_delta: isize,
    /// The client's reply stream is broken (a streamed reply failed half way): close it after
    /// what was delivered.
    pub abort: bool,
    /// A window of a multi-get was merged: the reply bytes per key it brought (for the
    /// worker's estimate that sizes first windows).
    pub key_bytes: Option<usize>,
    /// Side-effect requests (write-backs), each with the index of the side effect whose
    /// bounded queue takes it (see [`crate::upstream::side_effects`]).
    pub side: Vec<(usize, Send)>,
    /// A read that held its client's later writes has sent its last request (it goes out with
    /// these sends) or is answered: they may go now (see [`Exchange::holds_writes`]).
    pub writes_released: bool,
    /// Hits and misses of the keys its replies answered (an exchange is the one place that
    /// knows them: a key asked twice, of a fallback server, is counted once).
    pub lookups: (usize, usize),
    /// Keys of a multi-get that no route takes: each a miss of the process, of no route.
    pub unrouted_misses: usize,
    /// Set by the loop before each call: the time now (None in tests that give none).
    pub now: Option<std::time::Instant>,
    /// What reads under leases did (see [`lease::LeaseCounts`]).
    pub leases: lease::LeaseCounts,
    /// Call the exchange's [`Exchange::on_wake`] at this time (a read waiting for another
    /// reader's lease).
    pub wake_at: Option<std::time::Instant>,
}

impl Effects {
    /// Clears everything for the next event; `may_send` as given.
    pub fn reset(&mut self, may_send: bool) {
        self.deliver.clear();
        self.sends.clear();
        self.may_send = may_send;
        self.held_delta = 0;
        self.abort = false;
        self.key_bytes = None;
        self.side.clear();
        self.lookups = (0, 0);
        self.unrouted_misses = 0;
        self.writes_released = false;
        self.wake_at = None;
        self.leases = lease::LeaseCounts::default();
    }
}

/// What the exchange does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Waiting for more replies.
    Wait,
    /// Its client slot is complete; the exchange is over.
    Done,
    /// It has more to send once its client drains below the soft limit (call
    /// [`Exchange::resume`] then).
    Parked,
    /// Its client's answer is complete (the client's slot may go), but it has requests still
    /// out: it finishes in the background, with no client waiting, and is told their replies
    /// until it says `Done`. A `noreply` request is answered at once this way: the client gets
    /// nothing either way, so nothing after it has to wait for the server.
    Background,
}

/// What a client request was, for the per-route counters and latency histograms: kept by its
/// exchange until the request is answered.
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    /// The route of its (first) key.
    pub route: usize,
    /// Its command.
    pub command: crate::protocol::Command,
    /// When it was dispatched, on its worker's clock (microseconds).
    pub started: u64,
}

/// One exchange: the slot it answers and the state machine of its kind.
#[derive(Debug)]
pub struct Exchange {
    /// The slot it answers.
    pub slot: SlotRef,
    /// The request's route and command, when it has a route (not `flush_all`).
    pub tag: Option<Tag>,
    /// Backend requests sent and not yet answered.
    outstanding: u32,
    /// Its client's slot is complete; it goes on without one.
    detached: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Forward(forward::Forward),
    FanOut(fan_out::FanOut),
    Retrieval(Box<retrieval::Retrieval>),
    Failover(Box<failover::Failover>),
    Parallel(parallel::Parallel),
    Lease(Box<lease::Lease>),
    LeaseBatch(Box<lease_batch::LeaseBatch>),
    Ordered(Box<ordered::Ordered>),
}

impl Exchange {
    /// Starts a forward of one request to one server.
    pub fn forward(slot: SlotRef, send: Send, lookups: usize, fx: &mut Effects) -> Exchange {
        let kind = Kind::Forward(forward::Forward::start(send, lookups, fx));
        Exchange::started(slot, kind, fx)
    }

    /// Starts a fan-out of one request to several servers.
    pub fn fan_out(slot: SlotRef, sends: impl Iterator<Item = Send>, fx: &mut Effects) -> Exchange {
        let kind = Kind::FanOut(fan_out::FanOut::start(sends, fx));
        Exchange::started(slot, kind, fx)
    }

    /// Starts a multi-key retrieval (its first window goes out now).
    pub fn retrieval(
        slot: SlotRef,
        mut retrieval: Box<retrieval::Retrieval>,
        fx: &mut Effects,
    ) -> Exchange {
        retrieval.start(fx);
        Exchange::started(slot, Kind::Retrieval(retrieval), fx)
    }

    /// Starts a failover (its first request goes out now).
    pub fn failover(
        slot: SlotRef,
        mut failover: Box<failover::Failover>,
        fx: &mut Effects,
    ) -> Exchange {
        failover.start(fx);
        Exchange::started(slot, Kind::Failover(failover), fx)
    }

    /// Starts a request to several servers at once, answered per `answer`; `lookup` when it
    /// is a read whose hit or miss the exchange counts.
    pub fn parallel(
        slot: SlotRef,
        sends: impl Iterator<Item = Send>,
        answer: parallel::Answer,
        lookup: bool,
        fx: &mut Effects,
    ) -> Exchange {
        let kind = Kind::Parallel(parallel::Parallel::start(sends, answer, lookup, fx));
        Exchange::started(slot, kind, fx)
    }

    /// Starts a read under leases (warm is asked now).
    pub fn lease(slot: SlotRef, mut lease: Box<lease::Lease>, fx: &mut Effects) -> Exchange {
        lease.start(fx);
        Exchange::started(slot, Kind::Lease(lease), fx)
    }

    /// Starts a multi-key get read key by key (its first window goes out now).
    pub fn lease_batch(
        slot: SlotRef,
        mut batch: Box<lease_batch::LeaseBatch>,
        fx: &mut Effects,
    ) -> Exchange {
        batch.start(fx);
        Exchange::started(slot, Kind::LeaseBatch(batch), fx)
    }

    /// Starts a write that goes to cold, then warm (cold is asked now).
    pub fn ordered(
        slot: SlotRef,
        mut ordered: Box<ordered::Ordered>,
        fx: &mut Effects,
    ) -> Exchange {
        ordered.start(fx);
        Exchange::started(slot, Kind::Ordered(ordered), fx)
    }

    fn started(slot: SlotRef, kind: Kind, fx: &Effects) -> Exchange {
        Exchange {
            slot,
            tag: None,
            outstanding: count(fx),
            detached: false,
            kind,
        }
    }

    /// Handles one completion of request `part`.
    pub fn on_completion(&mut self, part: u32, completion: &Completion, fx: &mut Effects) -> Flow {
        if completion.end {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        match &mut self.kind {
            Kind::Forward(f) => f.on_completion(completion, fx),
            Kind::FanOut(f) => f.on_completion(completion, fx),
            Kind::Retrieval(r) => r.on_completion(part, completion, fx),
            Kind::Failover(f) => f.on_completion(part, completion, fx),
            Kind::Parallel(p) => p.on_completion(part, completion, fx),
            Kind::Lease(l) => l.on_completion(part, completion, fx),
            Kind::LeaseBatch(b) => b.on_completion(part, completion, fx),
            Kind::Ordered(o) => o.on_completion(part, completion, fx),
        };
        self.outstanding += count(fx);
        self.flow(fx)
    }

    /// The time it asked for in [`Effects::wake_at`] has come.
    pub fn on_wake(&mut self, fx: &mut Effects) -> Flow {
        match &mut self.kind {
            Kind::Lease(l) => l.on_wake(fx),
            Kind::LeaseBatch(b) => b.on_wake(fx),
            _ => {}
        }
        self.outstanding += count(fx);
        self.flow(fx)
    }

    /// The client drained: a parked exchange sends its next window.
    pub fn resume(&mut self, fx: &mut Effects) -> Flow {
        match &mut self.kind {
            Kind::Retrieval(r) => r.resume(fx),
            Kind::LeaseBatch(b) => b.resume(fx),
            Kind::Forward(_)
            | Kind::FanOut(_)
            | Kind::Failover(_)
            | Kind::Parallel(_)
            | Kind::Lease(_)
            | Kind::Ordered(_) => {}
        }
        self.outstanding += count(fx);
        self.flow(fx)
    }

    /// True while its client's later writes must wait: it is a read that may still send a
    /// request to a server (a later window, a next server), which a write sent now could
    /// reach first.
    pub fn holds_writes(&self) -> bool {
        match &self.kind {
            Kind::Retrieval(r) => r.holds_writes(),
            Kind::Failover(f) => f.holds_writes(),
            Kind::Lease(l) => l.holds_writes(),
            Kind::LeaseBatch(b) => b.holds_writes(),
            Kind::Ordered(o) => o.holds_requests(),
            Kind::Forward(_) | Kind::FanOut(_) | Kind::Parallel(_) => false,
        }
    }

    /// True for an exchange whose hold ([`Exchange::holds_writes`]) holds every later request
    /// of its client, not only writes: a touching retrieval (`gat`/`gats`: a read sent now could
    /// see a TTL from before the touch), and a write to cold, then warm (a read sent now could
    /// reach warm before the write does).
    pub fn touches(&self) -> bool {
        match &self.kind {
            Kind::Retrieval(r) => r.touches(),
            // A write to cold, then warm, holds every later request while it holds (a read
            // sent at once could reach warm before its warm step). Constant, as the hold's
            // accounting needs.
            Kind::Ordered(_) => true,
            _ => false,
        }
    }

    /// True when it must go on if its client goes: a write to cold, then warm, whose delete in
    /// warm must follow; a lease holder whose write-back the other readers wait for.
    pub fn outlives_client(&self) -> bool {
        match &self.kind {
            Kind::Ordered(o) => o.outlives_client(),
            Kind::Lease(l) => l.outlives_client(),
            _ => false,
        }
    }

    /// True once its client's slot is complete and it goes on in the background.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Its client's slot was completed for [`Flow::Background`].
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// What follows from the exchange's state after `fx`.
    pub fn flow(&self, fx: &Effects) -> Flow {
        let silent = match &self.kind {
            Kind::Forward(f) => f.is_silent(),
            Kind::FanOut(f) => f.is_silent(),
            Kind::Retrieval(_) => false,
            Kind::Failover(f) => f.is_silent(),
            Kind::Parallel(p) => p.is_silent(),
            Kind::Lease(_) | Kind::LeaseBatch(_) => false,
            Kind::Ordered(o) => o.is_silent(),
        };
        let finished = match &self.kind {
            Kind::Forward(f) => f.finished(),
            Kind::FanOut(f) => f.finished(),
            Kind::Retrieval(r) => {
                // Late replies of an answered window may still be out: the next window need
                // not wait for them.
                if r.parked() {
                    return Flow::Parked;
                }
                r.finished()
            }
            Kind::Failover(f) => f.finished(),
            Kind::Parallel(p) => p.finished(),
            Kind::Lease(l) => l.finished(),
            Kind::LeaseBatch(b) => {
                if b.parked() {
                    return Flow::Parked;
                }
                b.finished()
            }
            Kind::Ordered(o) => o.finished(),
        };
        if fx.abort || (finished && self.outstanding == 0) {
            Flow::Done
        } else if (silent || finished) && !self.detached {
            // The client's answer is complete (or it wants none); the rest is read and
            // dropped in the background.
            Flow::Background
        } else {
            Flow::Wait
        }
    }
}

fn count(fx: &Effects) -> u32 {
    u32::try_from(fx.sends.len()).unwrap_or(u32::MAX)
}
