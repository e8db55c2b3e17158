//! A multi-key retrieval (`get`/`gets`/`gat`/`gats`) whose keys live on several servers, or
//! that asks for more keys than one window: released in windows of the asked keys, at most
//! `window` keys per server each, so that a huge request cannot make the proxy hold a huge
//! reply. Each window goes out as one request per server; its replies are merged into the
//! asked order (see [`crate::exchange::multiget`]) and passed on without their `END`; the next window
//! goes out when this one is answered and the client has drained below its soft limit. The
//! last window is followed by one `END`.
//!
//! A window served by one server alone needs no merge: its reply is already in the asked
//! order, so it is streamed through as it arrives.
//!
//! Keys of failover routes carry the servers to try after their first ([`Fallbacks`]): when a
//! window's replies are in, the keys a failed server could not answer (and, with `on_miss:
//! next`, those it did not hold) are asked again of their next server, in further rounds of
//! the same window, before the window is merged. Such splits are never streamed.

use bytes::Bytes;

use super::failover::write_back_send;
use super::window::WindowSizer;
use super::write_back;
use super::WriteBack;
use super::{Effects, Framing, Send};
use crate::exchange::multiget::{self, AskedKey};
use crate::protocol::{Command, Request};
use crate::upstream::Completion;

/// The servers to try after their first for the keys of a split that takes failover routes.
#[derive(Debug, Default)]
pub struct Fallbacks {
    /// Per asked key, `depth` servers to try next, in order (`usize::MAX`: none).
    next: Vec<usize>,
    depth: usize,
    /// Per asked key: how many of its next servers were asked so far.
    tried: Vec<usize>,
    /// Per asked key: a miss asks the next server too (`on_miss: next`).
    miss_next: Vec<bool>,
    /// Per asked key: a hit on a later server is written back into its first (warm_first
    /// with `write_on_miss`): that server and the write-back's settings.
    write_back: Vec<Option<(usize, WriteBack)>>,
}

impl Fallbacks {
    /// Room for `keys` keys with at most `depth` servers each after their first.
    pub fn new(keys: usize, depth: usize) -> Fallbacks {
        Fallbacks {
            next: vec![usize::MAX; keys * depth],
            depth,
            tried: vec![0; keys],
            miss_next: vec![false; keys],
            write_back: Vec::new(),
        }
    }

    /// Key `key`'s hits on a later server are written back into `first`, its first server.
    pub fn set_write_back(&mut self, key: usize, first: usize, write_back: WriteBack) {
        if self.write_back.len() <= key {
            self.write_back
                .resize(self.miss_next.len().max(key + 1), None);
        }
        if let Some(slot) = self.write_back.get_mut(key) {
            *slot = Some((first, write_back));
        }
    }

    /// Key `key` (its position as asked) tries `servers` after its first; a miss moves on too
    /// when `miss_next`.
    pub fn set(&mut self, key: usize, servers: &[usize], miss_next: bool) {
        let at = key * self.depth;
        if let Some(slots) = self.next.get_mut(at..at + self.depth) {
            for (slot, &server) in slots.iter_mut().zip(servers) {
                *slot = server;
            }
        }
        if let Some(m) = self.miss_next.get_mut(key) {
            *m = miss_next;
        }
    }

    /// The next server of key `key`, if it has one left; counts it as tried.
    fn take_next(&mut self, key: usize) -> Option<usize> {
        let tried = self.tried.get_mut(key)?;
        if *tried >= self.depth {
            return None;
        }
        let server = *self.next.get(key * self.depth + *tried)?;
        if server == usize::MAX {
            return None;
        }
        *tried += 1;
        Some(server)
    }
}

/// State of a split retrieval.
#[derive(Debug)]
pub struct SplitGet {
    request: Request,
    bytes: Bytes,
    /// Every key as asked; `part` is its server's position in `servers` (`usize::MAX`: no
    /// route, a miss).
    asked: Vec<AskedKey>,
    servers: Vec<usize>,
    framing: Framing,
    /// Keys per server in the next window.
    window: WindowSizer,
    /// The asked keys of the current window: `start..end`.
    start: usize,
    end: usize,
    /// Per server (position in `servers`): its reply in the current window, and the keys of
    /// the request out for it (0: none out). Without failover keys, a part's hits and misses
    /// are counted from its reply against those keys; with them, once per key at the merge.
    replies: Vec<Bytes>,
    waiting: Vec<usize>,
    pending: usize,
    /// The current window has one server, whose reply is streamed through.
    streaming: Option<usize>,
    /// Bytes of the current window's reply already passed on.
    streamed: bool,
    /// Reply bytes held for the merge.
    held: usize,
    parked: bool,
    finished: bool,
    /// Failover: the servers to try next per key, and per part whether it failed this round.
    fallbacks: Option<Fallbacks>,
    failed: Vec<bool>,
    /// Parts of the first round (one per first server); later rounds of a window add parts.
    base_parts: usize,
    /// The parts asked in the current round of the window.
    round: std::ops::Range<usize>,
    /// With failover keys: hits found so far in the current window.
    hits: usize,
    /// Its client's later warm_first writes wait until it is answered.
    holds_writes: bool,
    /// Keys no route takes (their `part` is `usize::MAX`), counted as misses when it starts.
    unrouted: usize,
}

impl SplitGet {
    /// A split of `request` (whose spans index `bytes`) over `servers`, with its keys as
    /// `asked`; at most `window` keys per server in the first window, then windows sized so
    /// that each reply is about `soft_bytes` (the client's soft limit).
    pub fn new(
        request: Request,
        bytes: Bytes,
        asked: Vec<AskedKey>,
        servers: Vec<usize>,
        window: usize,
        soft_bytes: usize,
    ) -> SplitGet {
        let n = servers.len();
        SplitGet {
            framing: Framing::of(&request),
            request,
            bytes,
            asked,
            servers,
            window: WindowSizer::new(window, soft_bytes),
            start: 0,
            end: 0,
            replies: vec![Bytes::new(); n],
            waiting: vec![0; n],
            pending: 0,
            streaming: None,
            streamed: false,
            held: 0,
            parked: false,
            finished: false,
            fallbacks: None,
            failed: vec![false; n],
            base_parts: n,
            round: 0..0,
            hits: 0,
            holds_writes: false,
            unrouted: 0,
        }
    }

    /// Keys of failover routes: ask their next servers for what their first could not answer.
    pub fn with_fallbacks(mut self, fallbacks: Fallbacks) -> SplitGet {
        self.fallbacks = Some(fallbacks);
        self
    }

    /// `keys` of its keys have no route (the planner found them): misses, counted at start.
    pub fn with_unrouted(mut self, keys: usize) -> SplitGet {
        self.unrouted = keys;
        self
    }

    /// Its client's later warm_first writes wait until it is answered (it reads through a
    /// warm tier).
    pub fn holding_writes(mut self) -> SplitGet {
        self.holds_writes = true;
        self
    }

    /// Sends the first window.
    pub fn start(&mut self, fx: &mut Effects) {
        fx.unrouted_misses += self.unrouted;
        self.next_window(fx);
    }

    /// The client drained: send the next window if one was held back.
    pub fn resume(&mut self, fx: &mut Effects) {
        if self.parked {
            self.parked = false;
            self.next_window(fx);
        }
    }

    /// True while the next window waits for the client to drain.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// True once the final `END` is delivered.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// A reply (or piece, or failure) from the server at position `part`.
    pub fn on_completion(&mut self, part: u32, completion: &Completion, fx: &mut Effects) {
        let part = part as usize;
        if self.waiting.get(part).copied().unwrap_or(0) == 0 {
            return;
        }
        self.window.add(completion.reply.len());
        if self.streaming == Some(part) {
            if !completion.end {
                self.streamed = true;
                fx.deliver.push(completion.reply.clone());
                return;
            }
            if completion.failed.is_some() && self.streamed {
                // Part of a value already went out: the client's stream cannot be repaired.
                fx.abort = true;
                self.finished = true;
                return;
            }
            // Everything but the final line (`END`, or an error: its keys become misses).
            let body = completion.reply.len().saturating_sub(completion.tail);
            if body > 0 {
                fx.deliver.push(completion.reply.slice(..body));
            }
        } else {
            if let Some(slot) = self.replies.get_mut(part) {
                *slot = completion.reply.clone();
            }
            if let Some(f) = self.failed.get_mut(part) {
                *f = completion.failed.is_some() || completion.reply.starts_with(b"SERVER_ERROR");
            }
            self.held += completion.reply.len();
            fx.held_delta += completion.reply.len() as isize;
        }
        if !completion.end {
            return;
        }
        let keys = self.waiting.get_mut(part).map_or(0, std::mem::take);
        if self.fallbacks.is_none() {
            let hits = completion.values.min(keys);
            fx.lookups.0 += hits;
            fx.lookups.1 += keys - hits;
        }
        self.pending = self.pending.saturating_sub(1);
        if self.pending > 0 {
            return;
        }
        if self.ask_next_servers(fx) {
            return;
        }
        if self.streaming.is_none() {
            self.deliver_merged(fx);
        }
        fx.key_bytes = Some(self.window.resize(self.end.saturating_sub(self.start)));
        if fx.may_send {
            self.next_window(fx);
        } else if self.end < self.asked.len() {
            self.parked = true;
        } else {
            self.next_window(fx);
        }
    }

    /// After a round of the window: the keys of failover routes that the round's servers could
    /// not answer (failed, or a miss with `on_miss: next`) and that have a next server go to
    /// it in a new round. Returns true if one went out.
    fn ask_next_servers(&mut self, fx: &mut Effects) -> bool {
        let Some(fallbacks) = self.fallbacks.as_mut() else {
            return false;
        };
        let round = self.round.clone();
        let new_start = self.servers.len();
        let mut found = Vec::new();
        for part in round.clone() {
            let reply = self.replies.get(part).cloned().unwrap_or_default();
            let failed = self.failed.get(part).copied().unwrap_or(true);
            let window = self.asked.get_mut(self.start..self.end).unwrap_or(&mut []);
            found.clear();
            if !failed {
                let keys = window.iter().filter(|k| k.part == part);
                multiget::hits(&reply, keys.map(|k| k.key(&self.bytes)), &mut found);
                self.hits += found.iter().filter(|&&f| f).count();
            }
            let mut hit = found.iter();
            for (offset, key) in window.iter_mut().enumerate() {
                if key.part != part {
                    continue;
                }
                let held = !failed && hit.next().copied().unwrap_or(false);
                let index = self.start + offset;
                let moves =
                    failed || (!held && fallbacks.miss_next.get(index).copied().unwrap_or(false));
                if held || !moves {
                    continue;
                }
                let Some(server) = fallbacks.take_next(index) else {
                    continue;
                };
                let added = self.servers.get(new_start..).unwrap_or(&[]);
                let at = match added.iter().position(|&s| s == server) {
                    Some(i) => new_start + i,
                    None => {
                        self.servers.push(server);
                        self.replies.push(Bytes::new());
                        self.waiting.push(0);
                        self.failed.push(false);
                        self.servers.len() - 1
                    }
                };
                key.part = at;
            }
        }
        if self.servers.len() == new_start {
            return false;
        }
        self.round = new_start..self.servers.len();
        self.send_round(fx);
        true
    }

    /// Sends the lines of the parts of the current round (only their keys).
    fn send_round(&mut self, fx: &mut Effects) {
        let round = self.round.clone();
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        let keys: Vec<AskedKey> = window
            .iter()
            .filter(|k| round.contains(&k.part))
            .map(|k| k.with_part(k.part - round.start))
            .collect();
        let (mut lens, mut lines) = (Vec::new(), Vec::with_capacity(round.len()));
        multiget::build_lines(
            &self.request,
            &self.bytes,
            &keys,
            round.len(),
            &mut lens,
            &mut lines,
        );
        self.send_parts(lines, round.start, false, fx);
    }

    /// Queues the write-backs of the window's keys that a later round found (their route
    /// has `write_on_miss`): each as an `add` into the key's first server.
    fn write_back(&self, fx: &mut Effects) {
        let Some(fallbacks) = self.fallbacks.as_ref().filter(|f| !f.write_back.is_empty()) else {
            return;
        };
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        for part in self.base_parts..self.servers.len() {
            let Some(reply) = self.replies.get(part).filter(|r| !r.is_empty()) else {
                continue;
            };
            // The reply holds the values of this part's keys, in the order asked.
            let mut blocks = write_back::value_blocks(reply).peekable();
            for (offset, key) in window.iter().enumerate() {
                if key.part != part {
                    continue;
                }
                let Some(block) = blocks.next_if(|b| b.key[..] == *key.key(&self.bytes)) else {
                    continue;
                };
                let index = self.start + offset;
                if let Some(Some((first, wb))) = fallbacks.write_back.get(index) {
                    let [header, value] = write_back::classic_add(&block, wb.ttl);
                    let send = write_back_send(*first, header, value, Command::Add);
                    fx.side.push((wb.effect, send));
                }
            }
        }
    }

    /// Merges the window's replies into the asked order, without the `END`.
    fn deliver_merged(&mut self, fx: &mut Effects) {
        self.write_back(fx);
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        if self.fallbacks.is_some() {
            // Keys without a route were counted as misses when they were routed.
            let routed = window.iter().filter(|k| k.part != usize::MAX).count();
            let hits = std::mem::take(&mut self.hits).min(routed);
            fx.lookups.0 += hits;
            fx.lookups.1 += routed - hits;
        }
        multiget::merge_window(&mut fx.deliver, window, &self.bytes, &mut self.replies);
        fx.held_delta -= self.held as isize;
        self.held = 0;
        // The parts added by failover rounds were this window's only.
        let base = self.base_parts;
        self.servers.truncate(base);
        self.replies.truncate(base);
        self.waiting.truncate(base);
        self.failed.truncate(base);
    }

    /// Sends the next window of keys; after the last one, delivers the `END`.
    fn next_window(&mut self, fx: &mut Effects) {
        while self.end < self.asked.len() {
            self.start = self.end;
            let mut per_server = vec![0usize; self.servers.len()];
            let mut end = self.start;
            while let Some(key) = self.asked.get(end) {
                if let Some(count) = per_server.get_mut(key.part) {
                    if *count == self.window.keys() {
                        break;
                    }
                    *count += 1;
                }
                end += 1;
            }
            self.end = end;
            let used = per_server.iter().filter(|&&c| c > 0).count();
            if used == 0 {
                continue; // keys without a route only: misses
            }
            self.send_window(used, fx);
            return;
        }
        self.finished = true;
        fx.writes_released |= std::mem::take(&mut self.holds_writes);
        fx.deliver.push(Bytes::from_static(multiget::END));
    }

    fn send_window(&mut self, used: usize, fx: &mut Effects) {
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        let (mut lens, mut lines) = (Vec::new(), Vec::with_capacity(self.servers.len()));
        multiget::build_lines(
            &self.request,
            &self.bytes,
            window,
            self.servers.len(),
            &mut lens,
            &mut lines,
        );
        self.streaming = None;
        self.streamed = false;
        self.round = 0..self.servers.len();
        // Failover keys may be asked again: their replies are read whole.
        let stream = used == 1 && self.fallbacks.is_none();
        self.send_parts(lines, 0, stream, fx);
    }

    /// Sends each non-empty line of `lines` (with its key count) to the server of part
    /// `first + i`; with `stream`, the (one) part sent is streamed through.
    fn send_parts(
        &mut self,
        lines: Vec<(Bytes, usize)>,
        first: usize,
        stream: bool,
        fx: &mut Effects,
    ) {
        for (offset, (line, keys)) in lines.into_iter().enumerate() {
            let part = first + offset;
            let Some(&server) = self.servers.get(part) else {
                continue;
            };
            if keys == 0 {
                continue;
            }
            if stream {
                self.streaming = Some(part);
            }
            if let Some(w) = self.waiting.get_mut(part) {
                *w = keys;
            }
            self.pending += 1;
            fx.sends.push(Send {
                server,
                part: u32::try_from(part).unwrap_or(u32::MAX),
                bytes: line,
                value: None,
                framing: self.framing,
                stream,
            });
        }
    }
}
