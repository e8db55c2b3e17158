//! A simulated client as the worker sees it: its pipelined requests, its FIFO of reply slots
//! (each answered once, in order), its count of warm_first reads still at warm and its held
//! write, its parked exchanges and the reply bytes it holds (as `frontend::client::Client`,
//! without a socket). It also records what it was answered, for the checks.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::exchange::ExchangeId;
use crate::protocol::Request;

/// One reply slot.
#[derive(Debug)]
struct Slot {
    /// The index of the request it answers.
    request: usize,
    bytes: Vec<u8>,
    complete: bool,
    exchange: Option<ExchangeId>,
    close_after: bool,
}

/// How a client's request was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not answered (the client went first).
    None,
    /// Answered with these bytes.
    Whole(Vec<u8>),
    /// The reply stream broke after these bytes and the connection was closed.
    Aborted(Vec<u8>),
}

/// The limits the worker applies to a client (`ClientLimits`), small to exercise them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests parsed and not answered.
    pub max_outstanding: usize,
    /// Backend requests in flight.
    pub max_inflight: usize,
    /// Reply bytes held before the client is not read and windows wait.
    pub soft: usize,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// Connected (not closed by the client or the proxy).
    pub alive: bool,
    /// Its requests, in the order sent.
    pub requests: Vec<(Request, Bytes)>,
    /// The next request to parse.
    pub next: usize,
    /// A request held until the reads before it have sent their last requests, with its
    /// index.
    pub deferred: Option<(usize, Request, Bytes)>,
    /// Its reads that hold its writes (`Client::hold_started`).
    pub holds: u32,
    /// Of them, touching retrievals (they hold every request).
    pub touch_holds: u32,
    /// What each request was answered.
    pub answers: Vec<Answer>,
    /// Limits.
    pub limits: Limits,
    slots: VecDeque<Slot>,
    head_seq: u64,
    parked: Vec<ExchangeId>,
    /// Reply bytes delivered and not yet read by the client.
    unread: usize,
    /// Reply bytes its exchanges hold (merge buffers).
    pub exchange_bytes: isize,
    inflight: usize,
    /// A broken reply stream was answered: the client is closed once it has read it.
    closing: bool,
}

impl SimClient {
    /// A client that will send `requests`.
    pub fn new(requests: Vec<(Request, Bytes)>, limits: Limits) -> SimClient {
        let answers = vec![Answer::None; requests.len()];
        SimClient {
            alive: true,
            requests,
            next: 0,
            deferred: None,
            holds: 0,
            touch_holds: 0,
            answers,
            limits,
            slots: VecDeque::new(),
            head_seq: 0,
            parked: Vec::new(),
            unread: 0,
            exchange_bytes: 0,
            inflight: 0,
            closing: false,
        }
    }

    /// `Client::hold_started`.
    pub fn hold_started(&mut self, touching: bool) {
        self.holds += 1;
        self.touch_holds += u32::from(touching);
    }

    /// `Client::hold_released`.
    pub fn hold_released(&mut self, touching: bool) {
        self.holds = self.holds.saturating_sub(1);
        if touching {
            self.touch_holds = self.touch_holds.saturating_sub(1);
        }
    }

    /// Reply bytes held for it (`Client::buffered`).
    pub fn buffered(&self) -> usize {
        self.unread + self.exchange_bytes.max(0) as usize
    }

    /// Under its soft limit (`Client::may_take_more`).
    pub fn may_take_more(&self) -> bool {
        self.buffered() < self.limits.soft
    }

    /// May the next request be started (`Client::may_dispatch`, simplified: no size estimate).
    pub fn may_dispatch(&self) -> bool {
        if !self.alive || self.closing {
            return false;
        }
        if self.deferred.is_some() && self.holds > 0 {
            return false;
        }
        if self.deferred.is_none() && self.next >= self.requests.len() {
            return false;
        }
        if self.slots.len() >= self.limits.max_outstanding {
            return false;
        }
        if self.inflight == 0 {
            return self.buffered() < self.limits.soft;
        }
        self.inflight < self.limits.max_inflight && self.may_take_more()
    }

    /// Takes the next slot for request `request`; returns its sequence number.
    pub fn push_slot(&mut self, request: usize, ready: Option<Vec<u8>>) -> u64 {
        let seq = self.head_seq + self.slots.len() as u64;
        let complete = ready.is_some();
        let bytes = ready.unwrap_or_default();
        self.unread += bytes.len();
        self.slots.push_back(Slot {
            request,
            bytes,
            complete,
            exchange: None,
            close_after: false,
        });
        self.pop_complete();
        seq
    }

    /// Records the exchange answering slot `seq`.
    pub fn attach(&mut self, seq: u64, exchange: ExchangeId) {
        if let Some(slot) = self.slot_mut(seq) {
            slot.exchange = Some(exchange);
        }
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        self.slots.get_mut(index)
    }

    /// Pieces of slot `seq`'s reply; `complete` when they are the last. An error names a
    /// broken invariant: a slot answered twice, or after it left.
    pub fn deliver(
        &mut self,
        seq: u64,
        pieces: &[Bytes],
        complete: bool,
        close: bool,
    ) -> Result<(), String> {
        if seq < self.head_seq && !self.closing {
            return Err(format!("delivery to slot {seq}, which already left"));
        }
        let Some(slot) = self.slot_mut(seq) else {
            if self.closing {
                return Ok(());
            }
            return Err(format!("delivery to slot {seq}, which does not exist"));
        };
        if slot.complete {
            return Err(format!(
                "delivery to slot {seq} (request {}) after it was complete",
                slot.request
            ));
        }
        let mut added = 0;
        for piece in pieces {
            slot.bytes.extend_from_slice(piece);
            added += piece.len();
        }
        slot.complete |= complete;
        slot.close_after |= close;
        if complete {
            slot.exchange = None;
        }
        self.unread += added;
        self.pop_complete();
        Ok(())
    }

    fn pop_complete(&mut self) {
        while self.slots.front().is_some_and(|s| s.complete) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.head_seq += 1;
            if let Some(answer) = self.answers.get_mut(slot.request) {
                *answer = match slot.close_after {
                    true => Answer::Aborted(slot.bytes),
                    false => Answer::Whole(slot.bytes),
                };
            }
            if slot.close_after {
                // Nothing after a broken reply is sent: the client will be closed.
                self.closing = true;
                break;
            }
        }
    }

    /// The client reads what it can: the bytes of answered slots and of the head slot.
    pub fn read(&mut self) {
        let waiting: usize = self.slots.iter().skip(1).map(|s| s.bytes.len()).sum();
        self.unread = waiting;
    }

    /// True once it must be closed (after a broken reply).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// A backend request of one of its exchanges was sent.
    pub fn request_sent(&mut self) {
        self.inflight += 1;
    }

    /// A backend request of one of its exchanges was answered.
    pub fn request_answered(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// An exchange waits for it to drain.
    pub fn park(&mut self, exchange: ExchangeId) {
        self.parked.push(exchange);
    }

    /// `Client::may_send_for`: the exchange answering slot `seq` may send more when the
    /// client is under its soft limit, or, for the head slot, when what it can drain (all but
    /// the replies waiting behind the head) is.
    pub fn may_send_for(&self, seq: u64) -> bool {
        let behind: usize = self.slots.iter().skip(1).map(|s| s.bytes.len()).sum();
        let drainable = self.unread.saturating_sub(behind) + self.exchange_bytes.max(0) as usize;
        self.may_take_more() || (seq == self.head_seq && drainable < self.limits.soft)
    }

    /// Its parked exchanges (the driver resumes those [`Self::may_send_for`] lets go and
    /// parks the others again, as `flush_client` does).
    pub fn take_parked(&mut self) -> Vec<ExchangeId> {
        std::mem::take(&mut self.parked)
    }

    /// Closes it: the exchanges still answering its slots (and parked ones) are returned, to
    /// be ended as `close_client` ends them.
    pub fn close(&mut self) -> Vec<ExchangeId> {
        self.alive = false;
        let mut ended: Vec<ExchangeId> = self.slots.iter().filter_map(|s| s.exchange).collect();
        ended.append(&mut self.parked);
        self.slots.clear();
        ended
    }

    /// The deadlock the simulation found (fixed; see `run::PARKED_HEAD`): the exchange
    /// answering the head slot is parked until the client drains, and the replies waiting
    /// behind the head (which cannot be written before it) keep the client over its soft
    /// limit.
    pub fn parked_behind_itself(&self) -> bool {
        let head = self.slots.front().and_then(|s| s.exchange);
        let behind: usize = self.slots.iter().skip(1).map(|s| s.bytes.len()).sum();
        head.is_some_and(|h| self.parked.contains(&h)) && !self.may_take_more() && behind > 0
    }

    /// Slots still waiting for an answer.
    pub fn open_slots(&self) -> usize {
        self.slots.len()
    }
}
