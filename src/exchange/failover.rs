//! `failover`: one request tried on the key's server in each pool of the route, in order,
//! until one answers. A backend failure (timeout, lost or refused connection, a down server, an
//! overloaded queue) or a `SERVER_ERROR` reply moves it to the next; with `on_miss: next`, a
//! read miss does too. The last one's answer, whatever it is, is the client's. (A multi-key
//! retrieval of a failover route is the retrieval engine's: see [`super::retrieval`].)
//!
//! A write that lands on any server but the first has its TTL capped at `failover_ttl` (see
//! [`super::ttl`]), so data parked on a fallback pool expires. On warm_first's read path, a hit
//! on a later server is written back into the first.
//!
//! Ordering: the exchange always starts at the first server of the chain, even when it is
//! down (the backend layer refuses it at once, and fails the requests of this client still out
//! to it first). So every move to the next server happens in the order the requests were made,
//! and a retried write cannot overtake a later write of the same client on the fallback. A read
//! that may still move on holds its client's later writes ([`Failover::holds_writes`]) until it
//! has been sent to the last server it may ask: a write sent earlier could reach that server
//! first (after a `backend overloaded` on the first), and the read would see it.

use bytes::Bytes;

use super::write_back::{self, MetaFlags};
use super::WriteBack;
use super::{ttl, Effects, Framing, Send};
use crate::protocol::{Command, Request};
use crate::upstream::Completion;

/// State of a failover request.
#[derive(Debug)]
pub struct Failover {
    chain: Vec<usize>,
    request: Request,
    bytes: Bytes,
    framing: Framing,
    miss_next: bool,
    ttl: Option<u32>,
    /// The request with its TTL capped, for servers after the first (built when first needed).
    capped: Option<Bytes>,
    /// Hits on servers after the first are written back into the first (warm_first).
    write_back: Option<WriteBack>,
    /// Its client's later writes wait until it has been sent to its last server (or is
    /// answered).
    holding: bool,
    /// An `mg` asked of a later server for a write-back carries these flags the client did
    /// not ask (removed from the reply it gets).
    mg_added: Option<MetaFlags>,
    /// The request looks keys up: the exchange counts its hit or miss once, on the answer
    /// (not on each server's reply).
    lookup: bool,
    /// The chain position asked last.
    attempt: usize,
    finished: bool,
    silent: bool,
}

/// What a failover does beyond asking the next server: its route's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A read miss asks the next server too.
    pub miss_next: bool,
    /// Cap, in seconds, on the TTL of a write sent to any server but the first.
    pub ttl: Option<u32>,
    /// A hit on any server but the first is written back into the first.
    pub write_back: Option<WriteBack>,
}

impl Failover {
    /// A failover of `request` (whose spans index `bytes`) over the servers `chain`, with the
    /// route's settings.
    pub fn new(request: Request, bytes: Bytes, chain: Vec<usize>, rules: Rules) -> Failover {
        let framing = Framing::of(&request);
        let lookup = matches!(
            request.command,
            Command::Get | Command::Gets | Command::Gat | Command::Gats | Command::MetaGet
        );
        Failover {
            lookup,
            chain,
            silent: framing.discard_reply,
            framing,
            request,
            bytes,
            miss_next: rules.miss_next,
            ttl: rules.ttl,
            capped: None,
            write_back: rules.write_back,
            holding: false,
            mg_added: None,
            attempt: 0,
            finished: false,
        }
    }

    /// Sends the request to the first server. A read that may move on holds its client's
    /// later writes from now on.
    pub fn start(&mut self, fx: &mut Effects) {
        self.holding = self.lookup && self.chain.len() > 1;
        let bytes = self.bytes.clone();
        self.send(0, bytes, fx);
    }

    /// True when the client gets nothing back (`noreply`).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// True once the answer is delivered.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// True while its client's later writes must wait (see the module's ordering note).
    pub fn holds_writes(&self) -> bool {
        self.holding
    }

    /// The reply (or failure) of the request sent to chain position `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        if !c.end || part as usize != self.attempt || self.finished {
            return;
        }
        self.advance(c, fx);
        // Once it has gone to the last server it may ask (that request goes out with these
        // sends), or is answered, the client's later writes may go.
        let last = self.attempt + 1 >= self.chain.len();
        if self.holding && (self.finished || last) {
            self.holding = false;
            fx.writes_released = true;
        }
    }

    /// Acts on the reply of the server asked last: answer, or ask the next one.
    fn advance(&mut self, c: &Completion, fx: &mut Effects) {
        let failed = c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR");
        let has_next = self.attempt + 1 < self.chain.len();
        let hit = !failed && c.values > 0;
        let missed = self.miss_next && self.lookup && !hit;
        if (failed || missed) && has_next {
            self.attempt += 1;
            let bytes = self.bytes_for(self.attempt);
            self.send(self.attempt, bytes, fx);
            return;
        }
        if self.lookup {
            fx.lookups = if hit { (1, 0) } else { (0, 1) };
        }
        if self.attempt > 0 && self.mg_added.is_none() {
            // A classic retrieval found on a later server.
            self.write_back_values(&c.reply, c.max_age, fx);
        }
        match self.mg_added.filter(|_| self.attempt > 0) {
            Some(added) => {
                self.write_back_mg(c, fx);
                write_back::mg_client_reply_parts(&c.reply, added, &mut fx.deliver);
            }
            None if !c.reply.is_empty() => fx.deliver.push(c.reply.clone()),
            None => {}
        }
        self.finished = true;
    }

    /// Queues the write-back of a later server's `mg` hit into the first server.
    fn write_back_mg(&self, c: &Completion, fx: &mut Effects) {
        let (Some(wb), Some(&warm)) = (self.write_back, self.chain.first()) else {
            return;
        };
        let Some(hit) = write_back::mg_hit(&c.reply) else {
            return;
        };
        let key = self.request.first_key(&self.bytes);
        let [header, value] = write_back::meta_add(key, self.request.base64_key, &hit, wb.ttl);
        fx.side.push((
            wb.effect,
            write_back_send(warm, header, value, Command::MetaSet),
        ));
    }

    /// Queues the write-back of every value in `reply` (a later server's reply to a classic
    /// retrieval: each of its values missed the first server) into the first server, as an
    /// `add` (a newer value written there meanwhile is kept).
    fn write_back_values(&self, reply: &Bytes, max_age: Option<u32>, fx: &mut Effects) {
        let (Some(wb), Some(&warm)) = (self.write_back, self.chain.first()) else {
            return;
        };
        let ttl = write_back::capped(wb.ttl, max_age);
        for block in write_back::value_blocks(reply) {
            let [header, value] = write_back::classic_add(&block, ttl);
            fx.side.push((
                wb.effect,
                write_back_send(warm, header, value, Command::Add),
            ));
        }
    }

    /// The request bytes for chain position `attempt`: capped after the first if it sets a
    /// lifetime and the route has `failover_ttl`.
    fn bytes_for(&mut self, attempt: usize) -> Bytes {
        if attempt > 0 && self.write_back.is_some() && self.request.command == Command::MetaGet {
            // The later server is asked for what a write-back needs (value, flags, TTL).
            let fill = write_back::mg_fill_request(&self.request, &self.bytes);
            self.mg_added = Some(fill.added);
            return fill.request;
        }
        let Some(limit) = self.ttl.filter(|_| attempt > 0) else {
            return self.bytes.clone();
        };
        if self.capped.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.capped = Some(
                ttl::cap(&self.request, &self.bytes, limit, now)
                    .unwrap_or_else(|| self.bytes.clone()),
            );
        }
        self.capped.clone().unwrap_or_else(|| self.bytes.clone())
    }

    fn send(&mut self, attempt: usize, bytes: Bytes, fx: &mut Effects) {
        let Some(&server) = self.chain.get(attempt) else {
            return;
        };
        fx.sends.push(Send {
            server,
            part: u32::try_from(attempt).unwrap_or(u32::MAX),
            bytes,
            value: None,
            framing: self.framing,
            // The reply decides what happens next: it is read whole.
            stream: false,
            // Hits and misses are counted by the exchange, once per key (see `lookup`).
        });
    }
}

/// A write-back request to server `warm`: `header` then `value` (a slice of the reply that
/// brought it), read whole so its outcome is counted.
pub fn write_back_send(warm: usize, header: Bytes, value: Bytes, command: Command) -> Send {
    Send {
        server: warm,
        part: 0,
        bytes: header,
        value: Some(value),
        framing: Framing::whole(command),
        stream: false,
    }
}
