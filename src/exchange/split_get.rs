//! A multi-key retrieval (`get`/`gets`/`gat`/`gats`) whose keys live on several servers, or
//! that asks for more keys than one window: released in windows of the asked keys, at most
//! `window` keys per server each, so that a huge request cannot make the proxy hold a huge
//! reply. Each window goes out as one request per server; its replies are merged into the
//! asked order (see [`crate::multiget`]) and passed on without their `END`; the next window
//! goes out when this one is answered and the client has drained below its soft limit. The
//! last window is followed by one `END`.
//!
//! A window served by one server alone needs no merge: its reply is already in the asked
//! order, so it is streamed through as it arrives.

use bytes::Bytes;

/// Most keys per server in one window once windows are sized from their bytes.
const MAX_WINDOW: usize = 4096;

use super::{Effects, Framing, Send};
use crate::backend::Completion;
use crate::multiget::{self, AskedKey};
use crate::protocol::Request;

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
    /// Keys per server in the next window: the configured first window, then as many as keep
    /// one window's reply near the client's soft limit (fewer for big values, more for small).
    window: usize,
    soft_bytes: usize,
    /// Reply bytes of the current window so far.
    window_bytes: usize,
    /// The asked keys of the current window: `start..end`.
    start: usize,
    end: usize,
    /// Per server (position in `servers`): its reply in the current window, and whether a
    /// request is out for it.
    replies: Vec<Bytes>,
    waiting: Vec<bool>,
    pending: usize,
    /// The current window has one server, whose reply is streamed through.
    streaming: Option<usize>,
    /// Bytes of the current window's reply already passed on.
    streamed: bool,
    /// Reply bytes held for the merge.
    held: usize,
    parked: bool,
    finished: bool,
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
            window: window.max(1),
            soft_bytes,
            window_bytes: 0,
            start: 0,
            end: 0,
            replies: vec![Bytes::new(); n],
            waiting: vec![false; n],
            pending: 0,
            streaming: None,
            streamed: false,
            held: 0,
            parked: false,
            finished: false,
        }
    }

    /// Sends the first window.
    pub fn start(&mut self, fx: &mut Effects) {
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
        if !self.waiting.get(part).copied().unwrap_or(false) {
            return;
        }
        self.window_bytes += completion.reply.len();
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
            self.held += completion.reply.len();
            fx.held_delta += completion.reply.len() as isize;
        }
        if !completion.end {
            return;
        }
        if let Some(w) = self.waiting.get_mut(part) {
            *w = false;
        }
        self.pending = self.pending.saturating_sub(1);
        if self.pending > 0 {
            return;
        }
        if self.streaming.is_none() {
            self.deliver_merged(fx);
        }
        self.resize_window();
        if fx.may_send {
            self.next_window(fx);
        } else if self.end < self.asked.len() {
            self.parked = true;
        } else {
            self.next_window(fx);
        }
    }

    /// Sizes the next window from the bytes per key of this one.
    fn resize_window(&mut self) {
        let keys = self.end.saturating_sub(self.start).max(1);
        let per_key = (self.window_bytes / keys).max(1);
        self.window = (self.soft_bytes / per_key).clamp(1, MAX_WINDOW);
        self.window_bytes = 0;
    }

    /// Merges the window's replies into the asked order, without the `END`.
    fn deliver_merged(&mut self, fx: &mut Effects) {
        let window = self.asked.get(self.start..self.end).unwrap_or(&[]);
        multiget::merge_window(&mut fx.deliver, window, &self.bytes, &mut self.replies);
        fx.held_delta -= self.held as isize;
        self.held = 0;
    }

    /// Sends the next window of keys; after the last one, delivers the `END`.
    fn next_window(&mut self, fx: &mut Effects) {
        while self.end < self.asked.len() {
            self.start = self.end;
            let mut per_server = vec![0usize; self.servers.len()];
            let mut end = self.start;
            while let Some(key) = self.asked.get(end) {
                if let Some(count) = per_server.get_mut(key.part) {
                    if *count == self.window {
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
        for (part, ((line, keys), &server)) in lines.into_iter().zip(&self.servers).enumerate() {
            if keys == 0 {
                continue;
            }
            if used == 1 {
                self.streaming = Some(part);
            }
            if let Some(w) = self.waiting.get_mut(part) {
                *w = true;
            }
            self.pending += 1;
            fx.sends.push(Send {
                server,
                part: u32::try_from(part).unwrap_or(u32::MAX),
                bytes: line,
                framing: self.framing,
                stream: used == 1,
                lookups: keys,
            });
        }
    }
}
