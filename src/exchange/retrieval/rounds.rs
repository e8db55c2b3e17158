//! Sending a retrieval's requests: each window's keys (how many a window takes), its first
//! round (each key's first server, or all of its servers), and the rounds that ask the next
//! server of each key that must move on; one request line per server with its keys in the
//! asked order.

use bytes::Bytes;

use super::{Answer, Ask, Cell, Part, Retrieval, NONE};
use crate::exchange::multiget;
use crate::exchange::{Effects, Send};

impl Retrieval {
    /// Sends the next window of keys (round 0: each key's first server, or all its servers);
    /// after the last one, delivers the `END`. Windows of keys without a route are skipped
    /// (their misses were counted at the start).
    pub(super) fn next_window(&mut self, fx: &mut Effects) {
        while self.end < self.asked.len() {
            self.start = self.end;
            let mut per_server = vec![0usize; self.servers.len()];
            let mut end = self.start;
            let limit = self.window.keys().max(1);
            while !self.may_move && end < self.asked.len() {
                // One server per key (the usual split): count each key's one server.
                let position = self.chains.get(end * self.width).copied().unwrap_or(NONE);
                if let Some(n) = per_server.get_mut(position as usize) {
                    if *n >= limit {
                        break;
                    }
                    *n += 1;
                }
                end += 1;
            }
            'keys: while self.may_move && end < self.asked.len() {
                let chain = self.chain(end);
                let at_once = matches!(self.asks.get(end), Some(Ask::AtOnce { .. }));
                let asked = if at_once { chain.len() } else { 1 };
                for &position in chain.iter().take(asked).filter(|&&p| p != NONE) {
                    if per_server
                        .get(position as usize)
                        .is_some_and(|&n| n >= limit)
                    {
                        break 'keys;
                    }
                }
                for &position in chain.iter().take(asked).filter(|&&p| p != NONE) {
                    if let Some(n) = per_server.get_mut(position as usize) {
                        *n += 1;
                    }
                }
                end += 1;
            }
            self.end = end.max(self.start + 1).min(self.asked.len());
            let sent = if self.may_move {
                self.cells.clear();
                self.cells
                    .resize((self.end - self.start) * self.width, Cell::Idle);
                self.send_first_round(fx)
            } else {
                self.send_one_server_each(fx)
            };
            if sent {
                return;
            }
        }
        self.finished = true;
        fx.deliver.push(Bytes::from_static(multiget::END));
    }

    /// Asks the window's keys of their one server each: request `i` to server position `i`
    /// (positions with no key send nothing). False when no key of the window has a server.
    fn send_one_server_each(&mut self, fx: &mut Effects) -> bool {
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        let servers = self.servers.len();
        let (mut lens, mut lines) = (Vec::new(), Vec::with_capacity(servers));
        multiget::build_lines(
            &self.request,
            &self.bytes,
            window,
            servers,
            &mut lens,
            &mut lines,
        );
        let used = lines.iter().filter(|(_, keys)| *keys > 0).count();
        if used == 0 {
            return false;
        }
        let whole = self.start == 0 && self.end == self.asked.len() && self.unrouted == 0;
        // One server for the whole window: its reply is streamed through.
        let stream = used == 1;
        for (position, (line, keys)) in lines.into_iter().enumerate() {
            self.parts.push(Part {
                position: u32::try_from(position).unwrap_or(NONE),
                keys,
                reply: None,
                arrival: u32::MAX,
                max_age: None,
            });
            if keys == 0 {
                continue;
            }
            if stream {
                self.streaming = Some(u32::try_from(position).unwrap_or(NONE));
            }
            // The whole request, to one server: it goes as the client sent it.
            let bytes = if stream && whole {
                self.bytes.clone()
            } else {
                line
            };
            self.push_send(position, bytes, stream, fx);
        }
        true
    }

    /// Asks the window's keys of their first servers (`AtOnce` keys: of all of them). False
    /// when no key of the window has a server.
    fn send_first_round(&mut self, fx: &mut Effects) -> bool {
        let mut asks: Vec<(usize, usize)> = Vec::new();
        for key in self.start..self.end {
            let at_once = matches!(self.asks.get(key), Some(Ask::AtOnce { .. }));
            let chain = self.chain(key);
            let places = if at_once { chain.len() } else { 1 };
            for place in 0..places.min(chain.len()) {
                if chain.get(place).is_some_and(|&p| p != NONE) {
                    asks.push((key - self.start, place));
                }
            }
        }
        if asks.is_empty() {
            return false;
        }
        self.send_round(&asks, fx);
        true
    }

    /// Asks each key that must move on of its next server.
    pub(super) fn send_next_round(&mut self, fx: &mut Effects) {
        let keys = self.end - self.start;
        let mut asks = Vec::new();
        for key in 0..keys {
            if let Answer::Move(place) = self.answer_of(key) {
                asks.push((key, place));
            }
        }
        self.send_round(&asks, fx);
    }

    /// Sends one request per server for the window keys and chain places in `asks`, each
    /// request with its keys in the asked order.
    fn send_round(&mut self, asks: &[(usize, usize)], fx: &mut Effects) {
        // This round's requests: per server position asked, its request's index in `parts`.
        let first = self.parts.len();
        let mut pairs = Vec::with_capacity(asks.len());
        for &(key, place) in asks {
            let Some(&position) = self.chain(self.start + key).get(place) else {
                continue;
            };
            let round = self.parts.get(first..).unwrap_or(&[]);
            let index = match round.iter().position(|p| p.position == position) {
                Some(i) => first + i,
                None => {
                    self.parts.push(Part {
                        position,
                        keys: 0,
                        reply: None,
                        arrival: u32::MAX,
                        max_age: None,
                    });
                    self.parts.len() - 1
                }
            };
            let part = u32::try_from(index).unwrap_or(u32::MAX);
            if let Some(cell) = self.cells.get_mut(key * self.width + place) {
                *cell = Cell::Waiting(part);
            }
            if let Some(p) = self.parts.get_mut(index) {
                p.keys += 1;
            }
            if let Some(asked) = self.asked.get(self.start + key) {
                pairs.push(asked.with_part(index - first));
            }
        }
        let requests = self.parts.len() - first;
        let whole = self.start == 0 && self.end == self.asked.len() && self.unrouted == 0;
        let one = requests == 1 && first == 0;
        // The window's only request, whose keys cannot move on, is streamed through.
        let stream = one && (0..self.end - self.start).all(|key| self.cannot_move(key));
        if one && whole {
            // The whole request, to one server: it goes as the client sent it.
            self.push_send(first, self.bytes.clone(), stream, fx);
        } else {
            let (mut lens, mut lines) = (Vec::new(), Vec::with_capacity(requests));
            multiget::build_lines(
                &self.request,
                &self.bytes,
                &pairs,
                requests,
                &mut lens,
                &mut lines,
            );
            for (offset, (line, _)) in lines.into_iter().enumerate() {
                self.push_send(first + offset, line, stream, fx);
            }
        }
        if stream {
            self.streaming = Some(0);
        }
    }

    /// True when window key `key` has one server to ask (nothing to merge or move on).
    fn cannot_move(&self, key: usize) -> bool {
        self.chain(self.start + key)
            .get(1)
            .map_or(true, |&next| next == NONE)
    }

    fn push_send(&mut self, index: usize, bytes: Bytes, stream: bool, fx: &mut Effects) {
        let Some(position) = self.parts.get(index).map(|p| p.position) else {
            return;
        };
        let Some(&server) = self.servers.get(position as usize) else {
            return;
        };
        self.pending += 1;
        let part = self
            .base
            .saturating_add(u32::try_from(index).unwrap_or(u32::MAX));
        fx.sends.push(Send {
            server,
            part,
            bytes,
            value: None,
            framing: self.framing,
            stream,
        });
    }
}
