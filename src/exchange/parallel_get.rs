//! A multi-key retrieval whose keys are each asked of several servers at once (parallel
//! routes; warm_first's `gat`/`gats`): every key goes to each server of its chain (its server
//! in each pool), and each key is answered by the first server that has it: the first to
//! arrive, or, in order mode, the first of its chain (each earlier server's reply awaited),
//! so a cas token is always that server's. Hits are passed on as slices of the replies, in
//! the asked order, without copying.
//!
//! Keys go out in windows (as in [`super::split_get`]) so the replies held stay bounded; a
//! window is answered as soon as each of its keys is found or all its servers replied, and
//! the replies still to come are read and dropped (their parts belong to a past window).

use bytes::Bytes;

use super::window::WindowSizer;
use super::{Effects, Framing, Send};
use crate::exchange::multiget::{self, AskedKey};
use crate::protocol::Request;
use crate::upstream::Completion;

/// No server at this place of a key's chain.
const NONE: u32 = u32::MAX;

/// What one server's reply said of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// Not answered yet.
    Waiting,
    /// Not held (or the server failed, or the key was not asked there).
    Miss,
    /// Held: the reply's arrival number in the window, and its block's place in the reply.
    Hit { arrival: u32, start: u32, len: u32 },
}

/// State of a parallel multi-key retrieval.
#[derive(Debug)]
pub struct ParallelGet {
    request: Request,
    bytes: Bytes,
    framing: Framing,
    asked: Vec<AskedKey>,
    /// Places per chain.
    width: usize,
    /// Per asked key, `width` positions in `servers` (`NONE` where the chain is shorter).
    chains: Vec<u32>,
    servers: Vec<usize>,
    in_order: bool,
    window: WindowSizer,
    start: usize,
    end: usize,
    /// The part number of position 0 in the current window (parts below it are late).
    base: u32,
    /// Per position: its reply in this window, once in.
    replies: Vec<Option<Bytes>>,
    /// Per position: a request went out in this window.
    out: Vec<bool>,
    arrivals: u32,
    /// Per key of the window × width.
    cells: Vec<Cell>,
    held: usize,
    parked: bool,
    finished: bool,
}

impl ParallelGet {
    /// A retrieval of `asked` (keys of `request`, spans into `bytes`), key `i` asked of the
    /// servers `chains[i * width..][..width]` (positions in `servers`, `u32::MAX` for none);
    /// `in_order` picks each key's first server in its chain that holds it rather than the
    /// first reply; windows as in [`super::split_get::SplitGet::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request: Request,
        bytes: Bytes,
        asked: Vec<AskedKey>,
        chains: Vec<u32>,
        width: usize,
        servers: Vec<usize>,
        in_order: bool,
        (window, soft_bytes): (usize, usize),
    ) -> ParallelGet {
        let n = servers.len();
        ParallelGet {
            framing: Framing::of(&request),
            request,
            bytes,
            asked,
            width: width.max(1),
            chains,
            servers,
            in_order,
            window: WindowSizer::new(window, soft_bytes),
            start: 0,
            end: 0,
            base: 0,
            replies: vec![None; n],
            out: vec![false; n],
            arrivals: 0,
            cells: Vec::new(),
            held: 0,
            parked: false,
            finished: false,
        }
    }

    /// Sends the first window.
    pub fn start(&mut self, fx: &mut Effects) {
        self.next_window(fx);
    }

    /// True while the next window waits for the client to drain.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// True once the final `END` is delivered.
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

    fn chain(&self, key: usize) -> &[u32] {
        let at = key * self.width;
        self.chains.get(at..at + self.width).unwrap_or(&[])
    }

    /// The reply (or failure) of part `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        if !c.end || self.finished || part < self.base {
            return; // a late reply of a window already answered
        }
        let pos = (part - self.base) as usize;
        if !self.out.get(pos).copied().unwrap_or(false)
            || self.replies.get(pos).is_some_and(|r| r.is_some())
        {
            return;
        }
        let failed = c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR");
        let reply = if failed {
            Bytes::new()
        } else {
            c.reply.clone()
        };
        self.window.add(reply.len());
        self.held += reply.len();
        fx.held_delta += reply.len() as isize;
        // The window's keys asked of this server, in order, with their cells.
        let arrival = self.arrivals;
        self.arrivals += 1;
        let mut places = Vec::new();
        for key in self.start..self.end {
            if let Some(w) = self.chain(key).iter().position(|&p| p as usize == pos) {
                places.push(((key - self.start) * self.width + w, key));
            }
        }
        let mut ranges = Vec::with_capacity(places.len());
        let bytes = &self.bytes;
        let keys = places
            .iter()
            .filter_map(|&(_, key)| self.asked.get(key))
            .map(|k| k.key(bytes));
        multiget::block_ranges(&reply, keys, &mut ranges);
        for (&(cell, _), range) in places.iter().zip(ranges) {
            if let Some(c) = self.cells.get_mut(cell) {
                *c = match range {
                    Some((start, len)) => Cell::Hit {
                        arrival,
                        start: u32::try_from(start).unwrap_or(u32::MAX),
                        len: u32::try_from(len).unwrap_or(0),
                    },
                    None => Cell::Miss,
                };
            }
        }
        if let Some(slot) = self.replies.get_mut(pos) {
            *slot = Some(reply);
        }
        self.try_answer(fx);
    }

    /// The answer for window key `index` (0-based in the window): `Some(Some(hit))` when a
    /// server holds it, `Some(None)` for a miss, `None` while it is not known yet.
    fn answer_of(&self, index: usize) -> Option<Option<(usize, usize, usize)>> {
        let at = index * self.width;
        let cells = self.cells.get(at..at + self.width).unwrap_or(&[]);
        let chain = self.chain(self.start + index);
        let mut best: Option<(u32, usize, usize, usize)> = None;
        let mut waiting = false;
        for (cell, &pos) in cells.iter().zip(chain) {
            match *cell {
                Cell::Waiting => {
                    if self.in_order && best.is_none() {
                        return None;
                    }
                    waiting = true;
                }
                Cell::Miss => {}
                Cell::Hit {
                    arrival,
                    start,
                    len,
                } => {
                    let hit = (arrival, pos as usize, start as usize, len as usize);
                    if best.map_or(true, |b| !self.in_order && arrival < b.0) {
                        best = Some(hit);
                    }
                }
            }
        }
        match best {
            Some((_, pos, start, len)) => Some(Some((pos, start, len))),
            None if waiting => None,
            None => Some(None),
        }
    }

    /// When every key of the window is answered: its hits in the asked order, then the next
    /// window (or the `END`).
    fn try_answer(&mut self, fx: &mut Effects) {
        let keys = self.end - self.start;
        let mut answers = Vec::with_capacity(keys);
        for index in 0..keys {
            match self.answer_of(index) {
                Some(answer) => answers.push(answer),
                None => return,
            }
        }
        let (mut hits, mut misses) = (0, 0);
        for answer in answers {
            let block = answer.and_then(|(pos, start, len)| {
                let reply = self.replies.get(pos)?.as_ref()?;
                (start + len <= reply.len()).then(|| reply.slice(start..start + len))
            });
            match block {
                Some(block) => {
                    hits += 1;
                    fx.deliver.push(block);
                }
                None => misses += 1,
            }
        }
        fx.lookups.0 += hits;
        fx.lookups.1 += misses;
        fx.held_delta -= self.held as isize;
        self.held = 0;
        self.window.resize(keys);
        // Answered: its late replies are dropped, also while the next window waits.
        self.out.iter_mut().for_each(|o| *o = false);
        if self.end < self.asked.len() && !fx.may_send {
            self.parked = true;
        } else {
            self.next_window(fx);
        }
    }

    /// Sends the next window of keys, each to every server of its chain; after the last one,
    /// delivers the `END`. A window whose keys have no server at all is all misses: skipped.
    fn next_window(&mut self, fx: &mut Effects) {
        let n = self.servers.len();
        while self.end < self.asked.len() {
            if self.end > 0 {
                self.base = self
                    .base
                    .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
            self.start = self.end;
            self.end = (self.start + self.window.keys().max(1)).min(self.asked.len());
            self.replies.iter_mut().for_each(|r| *r = None);
            self.out.iter_mut().for_each(|o| *o = false);
            self.arrivals = 0;
            self.cells.clear();
            let mut pairs = Vec::new();
            for key in self.start..self.end {
                let Some(asked) = self.asked.get(key).copied() else {
                    continue;
                };
                let at = key * self.width;
                let chain = self.chains.get(at..at + self.width).unwrap_or(&[]);
                for &pos in chain {
                    let cell = if pos == NONE {
                        Cell::Miss
                    } else {
                        pairs.push(asked.with_part(pos as usize));
                        Cell::Waiting
                    };
                    self.cells.push(cell);
                }
            }
            if pairs.is_empty() {
                fx.lookups.1 += self.end - self.start;
                continue;
            }
            let (mut lens, mut lines) = (Vec::new(), Vec::with_capacity(n));
            multiget::build_lines(&self.request, &self.bytes, &pairs, n, &mut lens, &mut lines);
            for (pos, (line, count)) in lines.into_iter().enumerate() {
                let Some(&server) = self.servers.get(pos).filter(|_| count > 0) else {
                    continue;
                };
                if let Some(o) = self.out.get_mut(pos) {
                    *o = true;
                }
                fx.sends.push(Send {
                    server,
                    part: self
                        .base
                        .saturating_add(u32::try_from(pos).unwrap_or(u32::MAX)),
                    bytes: line,
                    value: None,
                    framing: self.framing,
                    stream: false,
                });
            }
            return;
        }
        self.finished = true;
        fx.deliver.push(Bytes::from_static(multiget::END));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_request, Limits, Parsed};
    use crate::upstream::{FailReason, Owner};

    fn request(line: &'static [u8]) -> (Request, Bytes) {
        let bytes = Bytes::from_static(line);
        match parse_request(&bytes, &Limits::default()) {
            Ok(Parsed::Complete(r)) => (r, bytes),
            other => panic!("{other:?}"),
        }
    }

    /// A get of `line`'s keys, every key asked of both servers 0 and 1 (in that order).
    fn both(line: &'static [u8], in_order: bool, window: usize) -> (ParallelGet, Effects) {
        let (r, bytes) = request(line);
        let asked: Vec<AskedKey> = r
            .keys(&bytes)
            .map(|k| AskedKey::new(&bytes, k, 0))
            .collect();
        let chains = asked.iter().flat_map(|_| [0, 1]).collect();
        let mut get = ParallelGet::new(
            r,
            bytes,
            asked,
            chains,
            2,
            vec![10, 11],
            in_order,
            (window, 1 << 20),
        );
        let mut fx = Effects::default();
        fx.reset(true);
        get.start(&mut fx);
        (get, fx)
    }

    fn reply(text: &'static [u8], failed: bool) -> Completion {
        let owner = Owner { token: 0, part: 0 };
        Completion::whole(owner, text, 0, failed.then_some(FailReason::Timeout))
    }

    fn step(get: &mut ParallelGet, part: u32, c: &Completion) -> (Vec<u8>, (usize, usize)) {
        let mut fx = Effects::default();
        fx.reset(true);
        get.on_completion(part, c, &mut fx);
        (fx.deliver.concat(), fx.lookups)
    }

    #[test]
    fn each_key_takes_the_first_hit_to_arrive_and_late_replies_are_dropped() {
        let (mut get, fx) = both(b"get a b c\r\n", false, 64);
        let lines: Vec<&[u8]> = fx.sends.iter().map(|s| &s.bytes[..]).collect();
        assert_eq!(lines, [&b"get a b c\r\n"[..], &b"get a b c\r\n"[..]]);
        assert_eq!(
            fx.sends.iter().map(|s| s.server).collect::<Vec<_>>(),
            [10, 11]
        );
        // Server 1 has a and c; a is not answered until b is known.
        let r1 = reply(b"VALUE a 0 2\r\na1\r\nVALUE c 0 2\r\nc1\r\nEND\r\n", false);
        assert_eq!(step(&mut get, 1, &r1).0, b"");
        let r0 = reply(b"VALUE a 0 2\r\na0\r\nVALUE b 0 2\r\nb0\r\nEND\r\n", false);
        let (out, lookups) = step(&mut get, 0, &r0);
        assert_eq!(
            out,
            b"VALUE a 0 2\r\na1\r\nVALUE b 0 2\r\nb0\r\nVALUE c 0 2\r\nc1\r\nEND\r\n".to_vec()
        );
        assert_eq!(lookups, (3, 0));
        assert!(get.finished());
        assert_eq!(step(&mut get, 0, &r0).0, b"", "a late reply is dropped");
    }

    #[test]
    fn a_key_everyone_missed_or_failed_is_a_miss_and_in_order_waits_for_the_first() {
        let (mut get, _) = both(b"get a b\r\n", true, 64);
        let r1 = reply(b"VALUE a 0 2\r\na1\r\nEND\r\n", false);
        assert_eq!(
            step(&mut get, 1, &r1).0,
            b"",
            "in order: server 0 may still have a"
        );
        let (out, lookups) = step(&mut get, 0, &reply(b"END\r\n", true));
        assert_eq!(out, b"VALUE a 0 2\r\na1\r\nEND\r\n".to_vec());
        assert_eq!(lookups, (1, 1));
    }

    #[test]
    fn windows_number_their_parts_so_a_late_reply_is_never_taken_for_the_next_window() {
        let (mut get, fx) = both(b"get a b\r\n", false, 1);
        assert_eq!(fx.sends.len(), 2);
        assert!(fx.sends.iter().all(|s| &s.bytes[..] == b"get a\r\n"));
        let mut fx = Effects::default();
        fx.reset(true);
        get.on_completion(0, &reply(b"VALUE a 0 2\r\na0\r\nEND\r\n", false), &mut fx);
        assert_eq!(fx.deliver.concat(), b"VALUE a 0 2\r\na0\r\n".to_vec());
        let parts: Vec<u32> = fx.sends.iter().map(|s| s.part).collect();
        assert_eq!(parts, [2, 3], "the second window's parts are new");
        // Server 1's late reply to the first window (part 1) holds a: it must not answer b.
        let late = reply(b"VALUE a 0 2\r\na1\r\nEND\r\n", false);
        assert_eq!(step(&mut get, 1, &late).0, b"");
        assert_eq!(step(&mut get, 3, &reply(b"END\r\n", false)).0, b"");
        let (out, _) = step(&mut get, 2, &reply(b"VALUE b 0 2\r\nb0\r\nEND\r\n", false));
        assert_eq!(out, b"VALUE b 0 2\r\nb0\r\nEND\r\n".to_vec());
    }
}
