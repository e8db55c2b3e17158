//! One client connection: its read buffer, its FIFO of reply slots, its write queue, and the
//! accounts its limits are checked against.
//!
//! Every request the client sends takes a slot at the tail of the FIFO, in order. Replies
//! reach a slot as pieces (from its exchange, or from the proxy itself); the pieces of the
//! head slot go straight to the write queue, so a large reply streams through, and a slot
//! leaves the FIFO when it is complete. Replies therefore leave in request order whatever
//! order the backends answer in.
//!
//! What the client speaks is its protocol's business ([`ClientProtocol`]: how a request is
//! parsed out of the read buffer, how a reply goes on the wire); this connection is the same
//! for every protocol.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpStream;

use super::protocol::{AnyProtocol, ClientProtocol};
use crate::exchange::ExchangeId;
use crate::protocol::{Limits, Request};
use crate::runtime::buffer::{Arena, Read, ReadBuf, WriteQueue, READ_CHUNK};

/// Where it was first defined; the worker names it from here.
pub use super::protocol::Next;

/// An idle client gives back a read buffer of its own (one that holds the start of a request
/// it read earlier) and a slot FIFO grown past a few entries, so an idle connection costs
/// little more than its slab entry; the few slots kept save an allocation per request.
const KEEP_IDLE_CAPACITY: usize = 0;
const KEEP_IDLE_SLOTS: usize = 4;

/// Before its first reply, a client's replies are assumed to be a quarter of its soft limit
/// each: a new client has a few requests in flight until it is known how big its replies are
/// (a slow start), so a crowd of new clients asking for big values cannot each take a whole
/// window of them.
const UNKNOWN_REPLY_SHARE: usize = 4;

/// What a reply piece waiting in a slot behind the head costs beyond its bytes: its `Bytes`
/// handle and allocation header, and its share of the slot's piece list. Counted in the
/// client's buffered bytes, so that thousands of tiny replies waiting behind a slow one count
/// about what they hold.
const WAITING_PIECE_COST: usize = 64;

/// What `piece` costs while it waits in a slot behind the head.
fn waiting_cost(piece: &Bytes) -> usize {
    piece.len() + WAITING_PIECE_COST
}

/// A reply slot: the place in the client's reply order that one request holds.
#[derive(Debug, Default)]
pub struct Slot {
    /// Pieces delivered while the slot was not at the head.
    pieces: Vec<Bytes>,
    complete: bool,
    close_after: bool,
    /// The exchange answering it, if any (ended when the client goes).
    exchange: Option<ExchangeId>,
}

impl Slot {
    /// A slot answered by the proxy itself.
    pub fn ready(reply: Bytes) -> Slot {
        Slot {
            pieces: if reply.is_empty() {
                Vec::new()
            } else {
                vec![reply]
            },
            complete: true,
            close_after: false,
            exchange: None,
        }
    }

    /// A slot an exchange will answer.
    pub fn waiting() -> Slot {
        Slot::default()
    }

    /// After this slot's reply the connection closes (quit, fatal parse errors).
    pub fn then_close(mut self) -> Slot {
        self.close_after = true;
        self
    }

    /// True when the connection closes after this slot's reply.
    pub fn closes_connection(&self) -> bool {
        self.close_after
    }
}

/// The per-client limits, from its listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Requests parsed and not yet answered.
    pub max_outstanding: usize,
    /// Backend requests in flight.
    pub max_inflight: usize,
    /// Soft limit on unwritten reply bytes: stop reading and dispatching.
    pub soft_bytes: usize,
    /// Hard limit on unwritten reply bytes: close.
    pub hard_bytes: usize,
}

/// One client connection.
pub struct Client {
    stream: TcpStream,
    /// Distinguishes this client from earlier ones that used the same slab entry.
    generation: u32,
    /// Which listener accepted it.
    listener: usize,
    /// Its limits (its listener's).
    limits: ClientLimits,
    /// What it speaks: how its requests are parsed and its replies written.
    protocol: AnyProtocol,
    /// Requests read and not yet handed on; a small request is handed on as a copy, so it
    /// never keeps the read chunk alive while it waits at a backend (see [`ReadBuf::take`]).
    read_buf: ReadBuf,
    /// Bytes still to drop from the input (the rest of a refused value).
    swallow: usize,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head_seq: u64,
    write_queue: WriteQueue,
    /// Reply bytes held in slots behind the head.
    slot_bytes: usize,
    /// Reply bytes its exchanges hold (merge buffers), as they report them.
    exchange_bytes: usize,
    /// Backend requests in flight for its exchanges.
    inflight: usize,
    /// Running estimate of one backend reply's size (halving average; None until the first
    /// reply, see [`UNKNOWN_REPLY_SHARE`]), to keep the bytes it may still receive under its
    /// soft limit.
    reply_estimate: Option<usize>,
    /// Bytes of streamed reply pieces since the last whole reply.
    streamed_bytes: usize,
    /// Exchanges waiting for it to drain before they send their next window.
    parked: Vec<ExchangeId>,
    /// Exchanges whose slots were dropped (a closing reply went first); ended with the client.
    orphaned: Vec<ExchangeId>,
    /// When the request now arriving started (None when none is partly in the buffer).
    partial_since: Option<Instant>,
    /// A slow-request timer is pending for it.
    slow_timer_armed: bool,
    /// Readiness seen and not yet consumed (edge-triggered polling).
    readable: bool,
    /// The peer's FIN was reported: read until end of stream even after a short read.
    read_closed: bool,
    /// No more reading: close once every slot is written.
    closing: bool,
    /// The peer closed, the socket failed or a limit closed it: close now.
    dead: bool,
    /// When the client last sent bytes.
    last_active: Instant,
    /// Serving stopped early (a limit or the per-visit read budget) with input left to handle.
    stalled: bool,
    /// Its reads that may still send a request to a server (a later window, a next server):
    /// a later write waits for them, so a read never sees a write the client sent after it
    /// (see [`crate::exchange::Exchange::holds_writes`]).
    holds: u32,
    /// Of them, touching retrievals (`gat`/`gats`): every later request waits for them, so a
    /// later read never sees a TTL from before the touch.
    touch_holds: u32,
    /// A request held until those reads have sent their last requests (boxed: rare, and an
    /// idle client stays small).
    deferred: Option<Box<(Request, bytes::Bytes)>>,
}

impl Client {
    /// A new client on an accepted socket.
    pub fn new(
        stream: TcpStream,
        generation: u32,
        listener: usize,
        limits: ClientLimits,
        now: Instant,
    ) -> Client {
        Client {
            stream,
            generation,
            listener,
            limits,
            protocol: AnyProtocol::default(),
            read_buf: ReadBuf::default(),
            swallow: 0,
            slots: VecDeque::new(),
            head_seq: 0,
            write_queue: WriteQueue::default(),
            slot_bytes: 0,
            exchange_bytes: 0,
            inflight: 0,
            reply_estimate: None,
            streamed_bytes: 0,
            parked: Vec::new(),
            orphaned: Vec::new(),
            partial_since: None,
            slow_timer_armed: false,
            readable: true,
            read_closed: false,
            closing: false,
            dead: false,
            last_active: now,
            stalled: false,
            holds: 0,
            touch_holds: 0,
            deferred: None,
        }
    }

    /// A read of this client started that holds its later writes (and, when `touching`,
    /// every later request) until it has sent its last request.
    pub fn hold_started(&mut self, touching: bool) {
        self.holds += 1;
        self.touch_holds += u32::from(touching);
    }

    /// Such a read has sent its last request, or is answered.
    pub fn hold_released(&mut self, touching: bool) {
        self.holds = self.holds.saturating_sub(1);
        if touching {
            self.touch_holds = self.touch_holds.saturating_sub(1);
        }
    }

    /// True while a read of this client may still send a request: its writes wait.
    pub fn writes_held(&self) -> bool {
        self.holds > 0
    }

    /// True while a touching retrieval of this client may still send a request: every
    /// request waits.
    pub fn all_held(&self) -> bool {
        self.touch_holds > 0
    }

    /// Holds `request` until the reads it waits for have sent their last requests; nothing
    /// after it is parsed meanwhile.
    pub fn defer(&mut self, request: Request, bytes: bytes::Bytes) {
        self.deferred = Some(Box::new((request, bytes)));
    }

    /// The held request, once it may go (a later hold that began meanwhile may hold it again:
    /// it is planned anew).
    pub fn take_deferred(&mut self) -> Option<(Request, bytes::Bytes)> {
        if self.holds > 0 {
            return None;
        }
        self.deferred.take().map(|held| *held)
    }

    /// Memory its read buffer holds for requests not yet handed on (a request still arriving,
    /// or whole ones waiting for its limits), counted toward `request_memory_budget`.
    pub fn request_bytes(&self) -> usize {
        self.read_buf.held()
    }

    /// Reply bytes held for this client and not yet written.
    pub fn buffered(&self) -> usize {
        self.write_queue.len() + self.slot_bytes + self.exchange_bytes
    }

    /// True when its replies may grow: under the soft limit.
    pub fn may_take_more(&self) -> bool {
        self.buffered() < self.limits.soft_bytes
    }

    /// True when the exchange answering slot `seq` may send more (release its next window):
    /// under the soft limit, or, for the slot at the head, when what the client can drain
    /// (the write queue and merge buffers) is. The replies waiting behind the head are not
    /// written before it is complete: counting them would park the head until they drain,
    /// which is never.
    pub fn may_send_for(&self, seq: u64) -> bool {
        self.may_take_more()
            || (seq == self.head_seq
                && self.write_queue.len() + self.exchange_bytes < self.limits.soft_bytes)
    }

    /// True when it holds more unwritten reply bytes than its hard limit allows.
    pub fn over_hard_limit(&self) -> bool {
        self.buffered() > self.limits.hard_bytes
    }

    /// True when a new request may be parsed and dispatched: under every limit, counting the
    /// replies it has in flight at their estimated size.
    pub fn may_dispatch(&self) -> bool {
        if self.deferred.is_some() && self.holds > 0 {
            return false;
        }
        let limits = &self.limits;
        if self.slots.len() >= limits.max_outstanding {
            return false;
        }
        if self.inflight == 0 {
            return self.buffered() < limits.soft_bytes;
        }
        self.inflight < limits.max_inflight
            && self
                .buffered()
                .saturating_add(self.inflight.saturating_mul(self.reply_estimate()))
                < limits.soft_bytes
    }

    /// The expected size of one of its replies.
    fn reply_estimate(&self) -> usize {
        self.reply_estimate
            .unwrap_or(self.limits.soft_bytes / UNKNOWN_REPLY_SHARE)
    }

    /// True when the flush phase has something to do for it: bytes to write, a close to
    /// finish, or serving that stopped early to resume.
    pub fn needs_flush(&self) -> bool {
        !self.write_queue.is_empty() || self.closing || self.dead || self.stalled
    }

    /// True when nothing is waiting to be answered or written.
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.write_queue.is_empty()
    }

    /// When the request now arriving started, if one is partly in the buffer.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Distinguishes this client from earlier ones that used the same slab entry.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Which listener accepted it.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Records readiness reported by the poll.
    pub fn on_event(&mut self, readable: bool, read_closed: bool, error: bool) {
        self.readable |= readable || read_closed || error;
        self.read_closed |= read_closed;
        self.dead |= error;
    }

    /// True once nothing more is read from it (it is closing or closed).
    pub fn is_closing(&self) -> bool {
        self.closing || self.dead
    }

    /// True when it is to be closed now.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Reads nothing more; closes once every reply is written.
    pub fn close_after_replies(&mut self) {
        self.closing = true;
    }

    /// Closes it now (a limit, shedding, a socket error, shutdown with nothing pending).
    pub fn kill(&mut self) {
        self.dead = true;
    }

    /// True when serving stopped early with input left (a limit or the read budget).
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Records whether serving stopped early with input left.
    pub fn set_stalled(&mut self, stalled: bool) {
        self.stalled = stalled;
    }

    /// True when readiness says there may be bytes to read.
    pub fn wants_read(&self) -> bool {
        self.readable
    }

    /// How long it has sent nothing, as of `now`.
    pub fn idle_for(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.last_active)
    }

    /// When it last sent bytes.
    pub fn last_active(&self) -> Instant {
        self.last_active
    }

    /// If a request is partly in and no slow-request timer is pending, marks one pending and
    /// returns when the request started (the timer's base).
    pub fn arm_slow_timer(&mut self) -> Option<Instant> {
        let since = self.partial_since.filter(|_| !self.slow_timer_armed)?;
        self.slow_timer_armed = true;
        Some(since)
    }

    /// Its slow-request timer fired: none is pending any more.
    pub fn slow_timer_fired(&mut self) {
        self.slow_timer_armed = false;
    }

    /// Takes its socket off the poll.
    pub fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.deregister(&mut self.stream)
    }

    /// Reads once from the socket, updating its state: the bytes read (0 when there was
    /// nothing, or the peer closed its side, which makes it closing), or the socket's error
    /// (which makes it dead). A client with nothing buffered reads into the worker's
    /// `scratch` buffer and takes what arrived as its own (sharing the allocation), so an idle
    /// client holds no buffer of its own, and requests are still handed on without a copy.
    pub fn read_some(&mut self, now: Instant, scratch: &mut ReadBuf) -> io::Result<usize> {
        let result = if self.read_buf.is_empty() {
            scratch.read_from(&self.stream, READ_CHUNK).inspect(|_| {
                self.read_buf = scratch.split();
            })
        } else {
            self.read_buf.read_from(&self.stream, READ_CHUNK)
        };
        match result {
            Ok(Read { bytes: 0, .. }) => {
                self.readable = false;
                self.closing = true;
                Ok(0)
            }
            Ok(read) => {
                self.last_active = now;
                self.readable = !read.drained || self.read_closed;
                if self.partial_since.is_none() {
                    self.partial_since = Some(now);
                }
                Ok(read.bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => {
                self.dead = true;
                Err(e)
            }
        }
    }

    /// Parses the next request out of the buffer (dropping swallowed bytes first), as its
    /// protocol reads it. Small requests are copied into `arena` (see [`ReadBuf::take_with`]).
    pub fn next_request(
        &mut self,
        limits: &Limits,
        now: Instant,
        arena: &mut Arena,
    ) -> Option<Next> {
        if self.swallow > 0 {
            let n = self.swallow.min(self.read_buf.len());
            self.read_buf.advance(n);
            self.swallow -= n;
            if self.swallow > 0 {
                return None;
            }
        }
        if self.read_buf.is_empty() && !self.protocol.has_queued_request() {
            self.partial_since = None;
            return None;
        }
        // Looked at in place, not taken apart and rebuilt, and returned from one place: the
        // request is built where the caller gets it, not moved again.
        let next = self
            .protocol
            .next_request(&mut self.read_buf, limits, arena);
        match &next {
            None => {
                if !self.readable {
                    // Nothing more to read now: the start of a request waits with only the
                    // memory it needs, not the (maybe shared) read chunk it arrived in.
                    self.read_buf.compact();
                }
            }
            Some(found) => {
                if let Next::Error(error, _) = found {
                    match error.skip() {
                        Some(skip) => {
                            let n = skip.min(self.read_buf.len());
                            self.read_buf.advance(n);
                            self.swallow = skip - n;
                        }
                        None => {
                            self.read_buf.clear();
                            self.closing = true;
                        }
                    }
                }
                // The next request, if any of it is here, starts now.
                self.partial_since = (!self.read_buf.is_empty()).then_some(now);
            }
        }
        next
    }

    /// Reserves the next slot at the tail; returns its sequence number.
    pub fn push_slot(&mut self, slot: Slot) -> u64 {
        let seq = self.head_seq + self.slots.len() as u64;
        if self.slots.is_empty() {
            // At the head: its pieces go straight out.
            let mut slot = slot;
            // A slot an exchange will answer has nothing to write yet: the protocol is told
            // of its pieces when they come.
            if slot.complete || !slot.pieces.is_empty() {
                let pieces = std::mem::take(&mut slot.pieces);
                self.protocol
                    .write_owned_reply(pieces, slot.complete, &mut self.write_queue);
            }
            self.slots.push_back(slot);
        } else {
            self.slot_bytes += slot.pieces.iter().map(waiting_cost).sum::<usize>();
            self.slots.push_back(slot);
        }
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

    /// Hands pieces of slot `seq`'s reply over; `complete` when they are the last. `close`
    /// closes the connection after this slot (its reply stream is broken). Returns true when
    /// something can be written.
    pub fn deliver(&mut self, seq: u64, pieces: &[Bytes], complete: bool, close: bool) -> bool {
        let at_head = seq == self.head_seq;
        let Some(slot) = self.slot_mut(seq) else {
            return false;
        };
        if at_head {
            if complete || !pieces.is_empty() {
                self.protocol
                    .write_reply(pieces, complete, &mut self.write_queue);
            }
        } else {
            // Most slots get one piece: a list of exactly that size, not the default four.
            slot.pieces.reserve_exact(pieces.len());
            slot.pieces.extend(pieces.iter().cloned());
            self.slot_bytes += pieces.iter().map(waiting_cost).sum::<usize>();
        }
        if let Some(slot) = self.slot_mut(seq) {
            slot.complete |= complete;
            slot.close_after |= close;
            if complete {
                slot.exchange = None;
            }
        }
        self.pop_complete();
        !self.write_queue.is_empty()
    }

    /// Moves complete head slots out, and the pieces of the new head to the write queue.
    fn pop_complete(&mut self) {
        while self.slots.front().is_some_and(|s| s.complete) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.head_seq += 1;
            if slot.close_after {
                self.closing = true;
                // Nothing after a closing reply is ever sent.
                self.head_seq += self.slots.len() as u64;
                let rest: Vec<Slot> = self.slots.drain(..).collect();
                self.slot_bytes = 0;
                self.orphaned
                    .extend(rest.into_iter().filter_map(|s| s.exchange));
                break;
            }
            if let Some(next) = self.slots.front_mut() {
                if next.complete || !next.pieces.is_empty() {
                    let pieces = std::mem::take(&mut next.pieces);
                    let cost: usize = pieces.iter().map(waiting_cost).sum();
                    self.slot_bytes = self.slot_bytes.saturating_sub(cost);
                    self.protocol
                        .write_owned_reply(pieces, next.complete, &mut self.write_queue);
                }
            }
        }
    }

    /// Writes what the socket takes. Returns the bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        if self.write_queue.is_empty() {
            return Ok(0);
        }
        self.write_queue.write_to(&mut self.stream)
    }

    /// Gives idle buffers back (an idle connection keeps no buffer memory).
    pub fn shrink_if_idle(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > KEEP_IDLE_CAPACITY {
            self.read_buf.release();
        }
        if self.slots.is_empty() && self.slots.capacity() > KEEP_IDLE_SLOTS {
            self.slots = VecDeque::new();
        }
        if self.write_queue.is_empty() {
            self.write_queue.shrink();
        }
        if self.parked.is_empty() && self.parked.capacity() > 0 {
            self.parked = Vec::new();
        }
    }

    /// A backend request was sent for one of its exchanges.
    pub fn request_sent(&mut self) {
        self.inflight += 1;
    }

    /// A piece of a streamed reply for one of its exchanges arrived (`bytes` long).
    pub fn reply_piece(&mut self, bytes: usize) {
        self.streamed_bytes += bytes;
    }

    /// A backend request of one of its exchanges was answered, its last piece `bytes` long.
    pub fn request_answered(&mut self, bytes: usize) {
        self.inflight = self.inflight.saturating_sub(1);
        // Pieces of streamed replies count toward the reply they belong to (approximately,
        // when replies from several servers interleave).
        let bytes = bytes + std::mem::take(&mut self.streamed_bytes);
        self.reply_estimate = Some(match self.reply_estimate {
            None => bytes,
            Some(estimate) => estimate / 2 + bytes / 2,
        });
    }

    /// Its exchanges now hold `delta` more (or fewer) bytes.
    pub fn exchange_bytes_changed(&mut self, delta: isize) {
        self.exchange_bytes = self.exchange_bytes.saturating_add_signed(delta);
    }

    /// An exchange waits for this client to drain.
    pub fn park(&mut self, exchange: ExchangeId) {
        self.parked.push(exchange);
    }

    /// True when some exchange waits for it to drain.
    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The exchanges waiting for it to drain.
    pub fn take_parked(&mut self) -> Vec<ExchangeId> {
        std::mem::take(&mut self.parked)
    }

    /// Every exchange still answering one of its slots (to end them when it goes).
    pub fn exchanges(&self) -> impl Iterator<Item = ExchangeId> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.exchange)
            .chain(self.parked.iter().copied())
            .chain(self.orphaned.iter().copied())
    }

    /// True once a closing client has nothing left to send.
    pub fn finished(&self) -> bool {
        self.dead || (self.closing && self.is_idle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};

    fn client() -> (Client, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let stream = TcpStream::from_std(stream);
        let limits = ClientLimits {
            max_outstanding: 16,
            max_inflight: 16,
            soft_bytes: 1 << 20,
            hard_bytes: 1 << 25,
        };
        (Client::new(stream, 0, 0, limits, Instant::now()), peer)
    }

    #[test]
    fn pieces_leave_in_slot_order_and_are_counted_until_written() {
        let (mut c, _peer) = client();
        let a = c.push_slot(Slot::waiting());
        let b = c.push_slot(Slot::waiting());
        assert!(!c.deliver(b, &[Bytes::from_static(b"BB")], true, false));
        assert_eq!(
            c.buffered(),
            2 + WAITING_PIECE_COST,
            "a waiting piece counts its handle"
        );
        assert!(c.deliver(a, &[Bytes::from_static(b"A")], false, false));
        assert_eq!(c.write_queue.len(), 1);
        c.deliver(a, &[Bytes::from_static(b"AA")], true, false);
        assert_eq!(c.write_queue.len(), 5);
        assert_eq!(c.buffered(), 5);
        assert!(c.slots.is_empty());
        // A slot that is gone ignores late deliveries.
        assert!(!c.deliver(a, &[Bytes::from_static(b"late")], true, false));
        assert_eq!(c.buffered(), 5);
    }

    #[test]
    fn a_closing_slot_drops_what_follows() {
        let (mut c, _peer) = client();
        let a = c.push_slot(Slot::waiting());
        c.push_slot(Slot::ready(Bytes::from_static(b"later")));
        c.deliver(a, &[], true, true);
        assert!(c.closing);
        assert_eq!(c.buffered(), 0);
    }
}
