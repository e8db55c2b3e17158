//! `failover`: a request tried on the key's server in each pool of the route, in order, until
//! one answers. A backend failure (timeout, lost or refused connection, a down server, an
//! overloaded queue) or a `SERVER_ERROR` reply moves it to the next; with `on_miss: next`, a
//! read miss does too. The last one's answer, whatever it is, is the client's.
//!
//! A classic multi-key retrieval re-asks only what it still lacks: after each server's reply,
//! the keys it did not hold (or all of its keys, if it failed) go to the next server, and when
//! none is left to ask the replies are merged into the asked order (see [`crate::exchange::multiget`]).
//! Keys are taken in windows, like a split retrieval, so that the replies held for the merge
//! stay bounded; the next window waits for the client to drain.
//!
//! A write that lands on any server but the first has its TTL capped at `failover_ttl` (see
//! [`super::ttl`]), so data parked on a fallback pool expires.
//!
//! Ordering: the exchange always starts at the first server of the chain, even when it is
//! down (the backend layer refuses it at once, and fails the requests of this client still out
//! to it first). So every move to the next server happens in the order the requests were made,
//! and a retried write cannot overtake a later write of the same client on the fallback.

use bytes::Bytes;

use super::window::WindowSizer;
use super::write_back::{self, MetaFlags};
use super::WriteBack;
use super::{ttl, Effects, Framing, Send};
use crate::exchange::multiget::{self, AskedKey};
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
    /// Its client's later warm_first writes wait until it has left the first server (or is
    /// answered): see [`crate::worker::tiered`].
    holds_writes: bool,
    /// An `mg` asked of a later server for a write-back carries these flags the client did
    /// not ask (removed from the reply it gets).
    mg_added: Option<MetaFlags>,
    /// The request looks keys up: the exchange counts its hits and misses once, on the
    /// answer (not on each server's reply).
    lookup: bool,
    /// Hits found so far in the current window (multi-key retrievals).
    hits: usize,
    /// Classic multi-key retrievals: every key as asked; `part` is the chain position it was last asked
    /// at. Empty for other requests.
    asked: Vec<AskedKey>,
    window: WindowSizer,
    /// The current window of `asked`: `start..end`.
    start: usize,
    end: usize,
    /// The current window's reply from each chain position (empty where it failed).
    replies: Vec<Bytes>,
    /// Reply bytes held for the merge.
    held: usize,
    /// The chain position asked last.
    attempt: usize,
    parked: bool,
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
    /// The client's later writes wait until this read has left the first server.
    pub holds_writes: bool,
}

impl Failover {
    /// A failover of `request` (whose spans index `bytes`) over the servers `chain`, with the
    /// route's settings; classic retrievals take `window` keys at first (the caller sizes it
    /// from the worker's bytes per key), then windows sized for replies of about `soft_bytes`
    /// (the client's soft limit).
    pub fn new(
        request: Request,
        bytes: Bytes,
        chain: Vec<usize>,
        rules: Rules,
        window: usize,
        soft_bytes: usize,
    ) -> Failover {
        let retrieval = matches!(
            request.command,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        );
        // One key needs no merge: it goes the single-request way (and allocates less).
        let asked = if retrieval && request.key_count > 1 {
            request
                .keys(&bytes)
                .map(|key| AskedKey::new(&bytes, key, 0))
                .collect()
        } else {
            Vec::new()
        };
        let framing = Framing::of(&request);
        Failover {
            replies: if asked.is_empty() {
                Vec::new()
            } else {
                vec![Bytes::new(); chain.len()]
            },
            lookup: retrieval || request.command == Command::MetaGet,
            hits: 0,
            chain,
            silent: framing.discard_reply,
            framing,
            request,
            bytes,
            miss_next: rules.miss_next,
            ttl: rules.ttl,
            capped: None,
            write_back: rules.write_back,
            holds_writes: rules.holds_writes,
            mg_added: None,
            asked,
            window: WindowSizer::new(window, soft_bytes),
            start: 0,
            end: 0,
            held: 0,
            attempt: 0,
            parked: false,
            finished: false,
        }
    }

    /// Sends the request (or the first window of keys) to the first server.
    pub fn start(&mut self, fx: &mut Effects) {
        if self.asked.is_empty() {
            let bytes = self.bytes.clone();
            self.send(0, bytes, fx);
        } else {
            self.next_window(fx);
        }
    }

    /// True when the client gets nothing back (`noreply`).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// True while the next window waits for the client to drain.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// True once the answer is delivered.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The client drained: send the next window if one was held back.
    pub fn resume(&mut self, fx: &mut Effects) {
        if self.parked {
            self.parked = false;
            self.next_window(fx);
        }
    }

    /// The reply (or failure) of the request sent to chain position `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        if !c.end || part as usize != self.attempt || self.finished {
            return;
        }
        self.advance(c, fx);
        // Once the last window has left the first server (its next request goes out with
        // these sends) or all is answered, the client's later writes may go.
        let last_window = self.end >= self.asked.len();
        if self.holds_writes && (self.finished || (last_window && self.attempt > 0)) {
            self.holds_writes = false;
            fx.writes_released = true;
        }
    }

    /// Acts on the reply of the server asked last: answer, or ask the next one.
    fn advance(&mut self, c: &Completion, fx: &mut Effects) {
        let failed = c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR");
        let has_next = self.attempt + 1 < self.chain.len();
        if !self.asked.is_empty() {
            self.on_retrieval_reply(c, failed, fx);
            return;
        }
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
            // A single-key classic retrieval found on a later server.
            self.write_back_values(&c.reply, fx);
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
    fn write_back_values(&self, reply: &Bytes, fx: &mut Effects) {
        let (Some(wb), Some(&warm)) = (self.write_back, self.chain.first()) else {
            return;
        };
        for block in write_back::value_blocks(reply) {
            let [header, value] = write_back::classic_add(&block, wb.ttl);
            fx.side.push((
                wb.effect,
                write_back_send(warm, header, value, Command::Add),
            ));
        }
    }

    fn on_retrieval_reply(&mut self, c: &Completion, failed: bool, fx: &mut Effects) {
        let attempt = self.attempt;
        let whole = self.start == 0 && self.end == self.asked.len();
        if attempt == 0 && !failed && whole {
            // The whole request at its first server: when that answered every key (a key
            // asked twice is answered twice), or no other server would be asked, its reply is
            // the answer as it is, in the asked order, with its `END` (no merge).
            let found_all = c.values >= self.asked.len();
            if found_all || !self.miss_next || self.chain.len() < 2 {
                let hits = c.values.min(self.asked.len());
                fx.lookups = (hits, self.asked.len() - hits);
                self.window.add(c.reply.len());
                fx.key_bytes = Some(self.window.resize(self.asked.len()));
                fx.deliver.push(c.reply.clone());
                self.finished = true;
                return;
            }
        }
        let reply = if failed {
            Bytes::new()
        } else {
            c.reply.clone()
        };
        self.window.add(reply.len());
        self.held += reply.len();
        fx.held_delta += reply.len() as isize;
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        let mut found = Vec::with_capacity(window.len());
        let bytes = &self.bytes;
        let asked_here = window.iter().filter(|k| k.part == attempt);
        multiget::hits(&reply, asked_here.map(|k| k.key(bytes)), &mut found);
        self.hits += found.iter().filter(|&&f| f).count();
        if attempt > 0 {
            self.write_back_values(&reply, fx);
        }
        if let Some(slot) = self.replies.get_mut(attempt) {
            *slot = reply;
        }
        let retry = (failed || self.miss_next) && attempt + 1 < self.chain.len();
        let mut again = 0;
        if retry {
            let mut hit = found.into_iter();
            let window = self.asked.get_mut(self.start..self.end).unwrap_or(&mut []);
            for key in window.iter_mut().filter(|k| k.part == attempt) {
                if !hit.next().unwrap_or(false) {
                    key.part = attempt + 1;
                    again += 1;
                }
            }
        }
        if again > 0 {
            self.attempt += 1;
            self.send_keys(self.attempt, fx);
            return;
        }
        self.deliver_merged(fx);
        fx.key_bytes = Some(self.window.resize(self.end - self.start));
        if self.end < self.asked.len() && !fx.may_send {
            self.parked = true;
        } else {
            self.next_window(fx);
        }
    }

    /// Merges the window's replies into the asked order, without the `END`.
    fn deliver_merged(&mut self, fx: &mut Effects) {
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        multiget::merge_window(&mut fx.deliver, window, &self.bytes, &mut self.replies);
        fx.held_delta -= self.held as isize;
        self.held = 0;
        let hits = std::mem::take(&mut self.hits).min(window.len());
        fx.lookups.0 += hits;
        fx.lookups.1 += window.len() - hits;
    }

    /// Sends the next window of keys to the first server; after the last one, the `END`.
    fn next_window(&mut self, fx: &mut Effects) {
        if self.end >= self.asked.len() {
            self.finished = true;
            fx.deliver.push(Bytes::from_static(multiget::END));
            return;
        }
        self.start = self.end;
        self.end = (self.start + self.window.keys()).min(self.asked.len());
        self.attempt = 0;
        if self.start == 0 && self.end == self.asked.len() {
            // The whole request at once: it goes as the client sent it.
            let bytes = self.bytes.clone();
            self.send(0, bytes, fx);
        } else {
            self.send_keys(0, fx);
        }
    }

    /// Sends the window's keys asked at chain position `attempt` to that server.
    fn send_keys(&mut self, attempt: usize, fx: &mut Effects) {
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        let keys: Vec<AskedKey> = window
            .iter()
            .filter(|k| k.part == attempt)
            .map(|k| k.with_part(0))
            .collect();
        let (mut lens, mut lines) = (Vec::new(), Vec::with_capacity(1));
        multiget::build_lines(&self.request, &self.bytes, &keys, 1, &mut lens, &mut lines);
        if let Some((line, _)) = lines.pop() {
            self.send(attempt, line, fx);
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
