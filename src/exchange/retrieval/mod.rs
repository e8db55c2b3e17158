//! The one retrieval engine: a classic multi-key retrieval (`get`/`gets`/`gat`/`gats` with
//! several keys, or more keys than one window) asked of the servers that hold its keys, in
//! windows of keys, with rounds that ask the next server for what is still missing, merged
//! back into one reply with hits in the order the keys were asked and a single `END`.
//!
//! Every multi-key retrieval of every strategy is one of these; they differ only in what each
//! key is told (see [`Retrieval::key`]): its *chain* of servers (one for `consistent_hash`,
//! `round_robin` and `blind_forward`; its server in each pool for `failover`, `parallel` and
//! `warm_first`) and how the chain is asked ([`Ask`]):
//! * [`Ask::InTurn`]: one server at a time, the next only when one fails (or, with
//!   `miss_next`, misses): failover routes and warm_first's read path, where a hit on a later
//!   server may be written back into the first ([`Retrieval::key`]'s `write_back`);
//! * [`Ask::AtOnce`]: every server of the chain at once, answered by the first hit to arrive
//!   or by the first server in chain order that holds the key (parallel routes, warm_first's
//!   touches and cas reads).
//!
//! How it goes, per window (see [`super::window`] for how many keys a window takes):
//! 1. round 0 asks each key's first server (or, for `AtOnce` keys, all its servers): one
//!    request line per server with its keys in the asked order;
//! 2. each reply is read against the keys its server was asked, in order (memcached answers
//!    the keys of one request in the order asked, misses left out): each key's cell becomes a
//!    hit (where its `VALUE` block lies in the reply) or a miss;
//! 3. once every request of the round is in, the `InTurn` keys that must move on go to their
//!    next server in a further round;
//! 4. once every key is known, the hits are passed on as slices of the replies (no copy), in
//!    the asked order, write-backs are queued, the held replies are let go, and the next window
//!    goes out (or waits until the client drains; after the last window, the `END`).
//!
//! A window whose keys all go to one server and cannot move on needs no merge: its reply is
//! streamed through as it arrives. A window answered while requests of it are still out (the
//! first hit of an `AtOnce` key came first) drops their replies when they come: each window
//! numbers its requests after the last one's, so a late reply is never taken for a new one.
//!
//! Hits and misses are counted here, once per key asked (a key asked twice counts twice; a key
//! asked of several servers counts once), and keys with no route once as misses of no route.
//!
//! Ordering: while a retrieval may still send a request (a later window, a next server), its
//! client's later writes wait ([`Retrieval::holds_writes`]): sent at once, a write could reach a
//! server before this read asks it, and the read would see a write made after it.

mod rounds;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use super::failover::write_back_send;
use super::multiget::{self, AskedKey};
use super::window::WindowSizer;
use super::write_back;
use super::{Effects, Framing, WriteBack};
use crate::protocol::{Command, Request};
use crate::upstream::Completion;

/// No server at this place of a key's chain.
const NONE: u32 = u32::MAX;

/// How a key is asked of the servers of its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// One server at a time, in chain order: a failure (a `SERVER_ERROR` or no reply) moves
    /// the key to the next server, and so does a miss when `miss_next`.
    InTurn {
        /// A miss asks the next server too (`on_miss: next`).
        miss_next: bool,
    },
    /// Every server of the chain at once.
    AtOnce {
        /// The first server in chain order that holds the key answers (each earlier server's
        /// reply awaited, so a cas token is that server's); else the first hit to arrive.
        in_order: bool,
    },
}

/// What the servers asked have said of one key in the current window, per place of its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// Not asked (yet).
    Idle,
    /// Asked in request `part` of the window (numbered from the window's first), not answered.
    Waiting(u32),
    /// Not held, or the server failed.
    Miss { failed: bool },
    /// Held: where its `VALUE` block lies in the reply of request `part` of the window.
    Hit { part: u32, start: u32, len: u32 },
}

/// What is known of one key of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Still waiting for a reply.
    Waiting,
    /// Must ask its next server, at this place of its chain.
    Move(usize),
    /// Answered: a hit at this place of its chain (with its block), or a miss.
    Hit {
        place: usize,
        part: u32,
        start: u32,
        len: u32,
    },
    Miss,
}

/// One request of the current window.
#[derive(Debug)]
struct Part {
    /// The server's position in `servers`.
    position: u32,
    /// Keys asked in it.
    keys: usize,
    /// Its reply, once in (empty when it failed).
    reply: Option<Bytes>,
    /// The order its reply arrived in, within the window.
    arrival: u32,
    /// The smallest lifetime its server gave the values (an HTTP origin's `max-age`).
    max_age: Option<u32>,
}

/// State of a multi-key retrieval.
#[derive(Debug)]
pub struct Retrieval {
    request: Request,
    bytes: Bytes,
    framing: Framing,
    /// Every key as asked (its `part` unused).
    asked: Vec<AskedKey>,
    /// Places per chain.
    width: usize,
    /// Per asked key, `width` positions in `servers` (`NONE` where the chain ends; all `NONE`
    /// for a key no route takes).
    chains: Vec<u32>,
    /// Per asked key, how its chain is asked.
    asks: Vec<Ask>,
    /// Per asked key (empty when none has one): hits on a later server are written back into
    /// its first.
    write_backs: Vec<Option<WriteBack>>,
    /// Some key has more than one server (else no key ever moves on, or is asked twice).
    may_move: bool,
    /// The distinct servers asked (global indexes).
    servers: Vec<usize>,
    /// Keys no route takes.
    unrouted: usize,
    window: WindowSizer,
    /// The current window of `asked`: `start..end`.
    start: usize,
    end: usize,
    /// Per key of the window × `width`.
    cells: Vec<Cell>,
    /// The window's requests; request `i` went out as part `base + i`.
    parts: Vec<Part>,
    base: u32,
    /// Requests of the window still out (not counting those of answered windows).
    pending: usize,
    arrivals: u32,
    /// The window's one request, streamed through as it arrives.
    streaming: Option<u32>,
    /// Part of the streamed reply went out already.
    streamed: bool,
    /// Reply bytes held for the merge.
    held: usize,
    parked: bool,
    finished: bool,
    /// Its client's later writes wait: it may still send a request.
    holding: bool,
}

impl Retrieval {
    /// A retrieval of `request` (whose spans index `bytes`) whose keys have chains of at most
    /// `width` servers; give every key its chain with [`Retrieval::set_chain`] (a key given
    /// none has no route: a miss).
    pub fn new(request: Request, bytes: Bytes, width: usize) -> Retrieval {
        let width = width.max(1);
        let asked: Vec<AskedKey> = request
            .keys(&bytes)
            .map(|key| AskedKey::new(&bytes, key, 0))
            .collect();
        let keys = asked.len();
        Retrieval {
            framing: Framing::of(&request),
            request,
            bytes,
            asked,
            width,
            chains: vec![NONE; keys * width],
            asks: vec![Ask::InTurn { miss_next: false }; keys],
            write_backs: Vec::new(),
            may_move: false,
            servers: Vec::new(),
            unrouted: keys,
            window: WindowSizer::new(1, usize::MAX),
            start: 0,
            end: 0,
            cells: Vec::new(),
            parts: Vec::new(),
            base: 0,
            pending: 0,
            arrivals: 0,
            streaming: None,
            streamed: false,
            held: 0,
            parked: false,
            finished: false,
            holding: false,
        }
    }

    /// How many keys it asks for.
    pub fn key_count(&self) -> usize {
        self.asked.len()
    }

    /// Where key `index` lies in the request's bytes (empty past the last).
    pub fn key_range(&self, index: usize) -> std::ops::Range<usize> {
        self.asked.get(index).map_or(0..0, |k| k.range())
    }

    /// Key `index` is asked of `chain` (servers, at most `width`; empty: no route, a miss) as
    /// `ask` says; a hit on a later server of its chain is written back into the first when
    /// `write_back`. Set once per key.
    pub fn set_chain(
        &mut self,
        index: usize,
        chain: &[usize],
        ask: Ask,
        write_back: Option<WriteBack>,
    ) {
        if let Some(slot) = self.asks.get_mut(index) {
            *slot = ask;
        }
        if !chain.is_empty() {
            self.unrouted = self.unrouted.saturating_sub(1);
        }
        self.may_move |= chain.len() > 1;
        let at = index * self.width;
        for place in 0..self.width.min(chain.len()) {
            let Some(&server) = chain.get(place) else {
                break;
            };
            let position = match self.servers.iter().position(|&s| s == server) {
                Some(p) => p,
                None => {
                    self.servers.push(server);
                    self.servers.len() - 1
                }
            };
            if let Some(slot) = self.chains.get_mut(at + place) {
                *slot = u32::try_from(position).unwrap_or(NONE);
            }
        }
        // The first server's position, for the merge of windows whose keys have one server.
        let first = self.chains.get(at).copied().unwrap_or(NONE);
        if let Some(asked) = self.asked.get_mut(index) {
            *asked = asked.with_part(if first == NONE {
                usize::MAX
            } else {
                first as usize
            });
        }
        if let Some(wb) = write_back.filter(|_| chain.len() > 1) {
            if self.write_backs.is_empty() {
                self.write_backs.resize(self.asked.len(), None);
            }
            if let Some(slot) = self.write_backs.get_mut(index) {
                *slot = Some(wb);
            }
        }
    }

    /// How many distinct servers its keys have (to size the first window).
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// At most `first` keys per server in the first window, then windows sized so that each
    /// window's replies are about `soft_bytes` (the client's soft limit).
    pub fn windows(&mut self, first: usize, soft_bytes: usize) {
        self.window = WindowSizer::new(first, soft_bytes);
    }

    /// Sends the first window.
    pub fn start(&mut self, fx: &mut Effects) {
        fx.unrouted_misses += self.unrouted;
        self.holding = true;
        self.next_window(fx);
        // Whether it holds its client's writes is known from here on: a retrieval that will
        // send nothing more never held them, so there is no release to report.
        self.release_writes_if_done();
    }

    /// True while the next window waits for the client to drain.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// True once the final `END` is delivered.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// True while its client's later writes must wait: it may still send a request.
    pub fn holds_writes(&self) -> bool {
        self.holding
    }

    /// True for `gat`/`gats`: it changes the TTLs it reads.
    pub fn touches(&self) -> bool {
        matches!(self.request.command, Command::Gat | Command::Gats)
    }

    /// The client drained: send the next window if one was held back.
    pub fn resume(&mut self, fx: &mut Effects) {
        if self.parked {
            self.parked = false;
            self.next_window(fx);
            fx.writes_released |= self.release_writes_if_done();
        }
    }

    /// A reply (or piece, or failure) of request `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        if self.finished || part < self.base {
            return; // a late reply of a window already answered
        }
        let index = part - self.base;
        let Some(p) = self.parts.get_mut(index as usize) else {
            return;
        };
        if p.reply.is_some() {
            return;
        }
        if self.streaming == Some(index) {
            self.on_streamed(index, c, fx);
        } else if c.end {
            self.on_reply(index, c, fx);
        }
        fx.writes_released |= self.release_writes_if_done();
    }

    /// A piece of the streamed reply of the window's one request.
    fn on_streamed(&mut self, index: u32, c: &Completion, fx: &mut Effects) {
        self.window.add(c.reply.len());
        if !c.end {
            self.streamed = true;
            fx.deliver.push(c.reply.clone());
            return;
        }
        if c.failed.is_some() && self.streamed {
            // Part of a value already went out: the client's stream cannot be repaired.
            fx.abort = true;
            self.finished = true;
            return;
        }
        // Everything but the final line (`END`, or an error: its keys are misses).
        let body = c.reply.len().saturating_sub(c.tail);
        if body > 0 {
            fx.deliver.push(c.reply.slice(..body));
        }
        let keys = self.parts.get(index as usize).map_or(0, |p| p.keys);
        let hits = if c.failed.is_some() {
            0
        } else {
            c.values.min(keys)
        };
        fx.lookups.0 += hits;
        fx.lookups.1 += keys - hits;
        self.window_answered(fx);
    }

    /// The whole reply of request `index` of the window: what it says of each key asked.
    fn on_reply(&mut self, index: u32, c: &Completion, fx: &mut Effects) {
        let failed = c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR");
        let reply = if failed {
            Bytes::new()
        } else {
            c.reply.clone()
        };
        self.window.add(reply.len());
        self.held += reply.len();
        fx.held_delta += reply.len() as isize;
        if !self.may_move {
            self.on_reply_one_server_each(index, c, reply, fx);
            return;
        }
        // The keys asked in this request, in the asked order, with their cells.
        let mut places = Vec::new();
        for (cell, state) in self.cells.iter().enumerate() {
            if *state == Cell::Waiting(index) {
                places.push(cell);
            }
        }
        let mut ranges = Vec::with_capacity(places.len());
        if !failed {
            let (asked, bytes, start, width) = (&self.asked, &self.bytes, self.start, self.width);
            let keys = places
                .iter()
                .filter_map(|&cell| asked.get(start + cell / width))
                .map(|k| k.key(bytes));
            multiget::block_ranges(&reply, keys, &mut ranges);
        }
        let mut ranges = ranges.into_iter();
        for &cell in &places {
            let range = ranges.next().flatten();
            if let Some(state) = self.cells.get_mut(cell) {
                *state = match range {
                    Some((start, len)) => Cell::Hit {
                        part: index,
                        start: u32::try_from(start).unwrap_or(u32::MAX),
                        len: u32::try_from(len).unwrap_or(0),
                    },
                    None => Cell::Miss { failed },
                };
            }
        }
        let arrival = self.arrivals;
        self.arrivals += 1;
        if let Some(p) = self.parts.get_mut(index as usize) {
            p.reply = Some(reply);
            p.arrival = arrival;
            p.max_age = c.max_age;
        }
        self.pending = self.pending.saturating_sub(1);
        self.settle(fx);
    }

    /// [`Self::on_reply`] when every key has one server (request `i` went to server position
    /// `i`): the replies are kept whole and merged by scanning them once every one is in, as
    /// each holds its keys' blocks in the asked order.
    fn on_reply_one_server_each(
        &mut self,
        index: u32,
        c: &Completion,
        reply: Bytes,
        fx: &mut Effects,
    ) {
        let failed = reply.is_empty() && !c.reply.is_empty();
        if let Some(p) = self.parts.get_mut(index as usize) {
            let hits = if failed { 0 } else { c.values.min(p.keys) };
            fx.lookups.0 += hits;
            fx.lookups.1 += p.keys - hits;
            p.reply = Some(reply);
            p.max_age = c.max_age;
        }
        self.pending = self.pending.saturating_sub(1);
        if self.pending > 0 {
            return;
        }
        let mut replies: Vec<Bytes> = self
            .parts
            .iter()
            .map(|p| p.reply.clone().unwrap_or_default())
            .collect();
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        multiget::merge_window(&mut fx.deliver, window, &self.bytes, &mut replies);
        self.window_answered(fx);
    }

    /// After a reply: answer the window once every key is known, or send the next round once
    /// every request of this one is in.
    fn settle(&mut self, fx: &mut Effects) {
        if self.pending > 0 && !self.may_move {
            // With one server per key, a request still out means a key still waiting.
            return;
        }
        let keys = self.end - self.start;
        let (mut waiting, mut moving) = (false, false);
        for key in 0..keys {
            match self.answer_of(key) {
                Answer::Waiting => waiting = true,
                Answer::Move(_) => moving = true,
                Answer::Hit { .. } | Answer::Miss => {}
            }
        }
        if waiting || (moving && self.pending > 0) {
            debug_assert!(self.pending > 0, "a key waits for a reply that is not out");
            if self.pending > 0 {
                return;
            }
        }
        if moving {
            self.send_next_round(fx);
            return;
        }
        self.deliver_window(fx);
        self.window_answered(fx);
    }

    /// The cells of window key `key`.
    fn cells_of(&self, key: usize) -> &[Cell] {
        let at = key * self.width;
        self.cells.get(at..at + self.width).unwrap_or(&[])
    }

    /// The chain (positions) of asked key `key`.
    fn chain(&self, key: usize) -> &[u32] {
        let at = key * self.width;
        self.chains.get(at..at + self.width).unwrap_or(&[])
    }

    /// What is known of window key `key`.
    fn answer_of(&self, key: usize) -> Answer {
        let index = self.start + key;
        let cells = self.cells_of(key);
        let chain = self.chain(index);
        match self.asks.get(index).copied() {
            Some(Ask::InTurn { miss_next }) => {
                // The place asked last decides.
                let Some(place) = cells.iter().rposition(|c| *c != Cell::Idle) else {
                    return Answer::Miss; // no route
                };
                match cells.get(place).copied() {
                    Some(Cell::Waiting(_)) => Answer::Waiting,
                    Some(Cell::Hit { part, start, len }) => Answer::Hit {
                        place,
                        part,
                        start,
                        len,
                    },
                    Some(Cell::Miss { failed }) => {
                        let next = chain.get(place + 1).is_some_and(|&p| p != NONE);
                        if next && (failed || miss_next) {
                            Answer::Move(place + 1)
                        } else {
                            Answer::Miss
                        }
                    }
                    Some(Cell::Idle) | None => Answer::Miss,
                }
            }
            Some(Ask::AtOnce { in_order }) => {
                let mut best: Option<(u32, Answer)> = None;
                let mut waiting = false;
                for (place, cell) in cells.iter().enumerate() {
                    match *cell {
                        Cell::Waiting(_) => {
                            if in_order && best.is_none() {
                                return Answer::Waiting;
                            }
                            waiting = true;
                        }
                        Cell::Idle | Cell::Miss { .. } => {}
                        Cell::Hit { part, start, len } => {
                            let arrival = self
                                .parts
                                .get(part as usize)
                                .map_or(u32::MAX, |p| p.arrival);
                            if best.map_or(true, |(b, _)| !in_order && arrival < b) {
                                let hit = Answer::Hit {
                                    place,
                                    part,
                                    start,
                                    len,
                                };
                                best = Some((arrival, hit));
                            }
                        }
                    }
                }
                match best {
                    Some((_, hit)) => hit,
                    None if waiting => Answer::Waiting,
                    None => Answer::Miss,
                }
            }
            None => Answer::Miss,
        }
    }

    /// Every key of the window is known: its hits in the asked order (runs of one reply as one
    /// slice), its write-backs, and its lookups counted.
    fn deliver_window(&mut self, fx: &mut Effects) {
        let keys = self.end - self.start;
        let (mut hits, mut misses) = (0, 0);
        // A run of contiguous hits in one reply: (part, start, end).
        let mut run: Option<(u32, usize, usize)> = None;
        for key in 0..keys {
            let index = self.start + key;
            let routed = self.chain(index).first().is_some_and(|&p| p != NONE);
            match self.answer_of(key) {
                Answer::Hit {
                    place,
                    part,
                    start,
                    len,
                } => {
                    hits += 1;
                    let (start, len) = (start as usize, len as usize);
                    match run {
                        Some((p, from, end)) if p == part && end == start => {
                            run = Some((p, from, start + len));
                        }
                        _ => {
                            self.flush_run(run, fx);
                            run = Some((part, start, start + len));
                        }
                    }
                    if place > 0 {
                        self.write_back(index, part, start, len, fx);
                    }
                }
                _ if routed => misses += 1,
                _ => {}
            }
        }
        self.flush_run(run, fx);
        fx.lookups.0 += hits;
        fx.lookups.1 += misses;
    }

    /// Passes on the run of hits `run`: one slice of its reply.
    fn flush_run(&self, run: Option<(u32, usize, usize)>, fx: &mut Effects) {
        let Some((part, start, end)) = run else {
            return;
        };
        let reply = self.parts.get(part as usize).and_then(|p| p.reply.as_ref());
        if let Some(reply) = reply.filter(|r| start <= end && end <= r.len()) {
            fx.deliver.push(reply.slice(start..end));
        }
    }

    /// Queues the write-back of asked key `index`'s hit (the block at `start..start + len` of
    /// request `part`'s reply) into the first server of its chain, as an `add` (a newer value
    /// written there meanwhile is kept).
    fn write_back(&self, index: usize, part: u32, start: usize, len: usize, fx: &mut Effects) {
        let Some(Some(wb)) = self.write_backs.get(index) else {
            return;
        };
        let first = self.chain(index).first().copied().unwrap_or(NONE);
        let Some(&server) = self.servers.get(first as usize) else {
            return;
        };
        let max_age = self.parts.get(part as usize).and_then(|p| p.max_age);
        let reply = self.parts.get(part as usize).and_then(|p| p.reply.as_ref());
        let Some(block) = reply
            .and_then(|r| {
                r.get(start..start + len)
                    .map(|_| r.slice(start..start + len))
            })
            .and_then(|block| write_back::value_blocks(&block).next())
        else {
            return;
        };
        let [header, value] = write_back::classic_add(&block, write_back::capped(wb.ttl, max_age));
        let send = write_back_send(server, header, value, Command::Add);
        fx.side.push((wb.effect, send));
    }

    /// The window is answered: let its replies go (later ones are dropped as late), size the
    /// next window from what this one brought, and send it (or park until the client drains).
    fn window_answered(&mut self, fx: &mut Effects) {
        fx.held_delta -= self.held as isize;
        self.held = 0;
        fx.key_bytes = Some(self.window.resize(self.end - self.start));
        let sent = u32::try_from(self.parts.len()).unwrap_or(u32::MAX);
        self.base = self.base.saturating_add(sent);
        self.parts.clear();
        self.pending = 0;
        self.streaming = None;
        self.streamed = false;
        if self.end < self.asked.len() && !fx.may_send {
            self.parked = true;
        } else {
            self.next_window(fx);
        }
    }

    /// Lets its client's writes go once it will send nothing more: finished, or its last
    /// window is out and no key of it can move to another server.
    /// Returns true when this call let them go.
    fn release_writes_if_done(&mut self) -> bool {
        if !self.holding {
            return false;
        }
        let last = self.end >= self.asked.len() && !self.parked;
        let done = self.finished
            || (last && (0..self.end - self.start).all(|key| self.at_last_server(key)));
        if done {
            self.holding = false;
        }
        done
    }

    /// True when window key `key` will not be asked of another server: answered, or asked
    /// of the last server of its chain.
    fn at_last_server(&self, key: usize) -> bool {
        let index = self.start + key;
        if !self.may_move || !matches!(self.asks.get(index), Some(Ask::InTurn { .. })) {
            return true;
        }
        match self.answer_of(key) {
            Answer::Hit { .. } | Answer::Miss => true,
            Answer::Move(_) => false,
            Answer::Waiting => {
                let cells = self.cells_of(key);
                let asked = cells.iter().rposition(|c| *c != Cell::Idle).unwrap_or(0);
                self.chain(index)
                    .get(asked + 1)
                    .map_or(true, |&p| p == NONE)
            }
        }
    }
}
