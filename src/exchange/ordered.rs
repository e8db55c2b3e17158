//! A write (or a touch-read: `gat`, `mg ... T`) on a warm_first route with leases: cold first,
//! then the delete of the key in warm, the client answered with cold's reply once warm has
//! answered too.
//!
//! Why this order closes the stale-set window (docs/configuration.md, "Leases"): a reader that
//! holds a lease made its placeholder in warm before it read cold. If its cold read came before
//! this write reached cold, this write's delete in warm comes after that placeholder was made,
//! and drops it (or the value written back under it): the reader's `ms ... C<cas>` then fails,
//! or its value is gone. If its cold read came after, it read this write. Sent to both at once
//! instead, the warm step could come before the reader's placeholder, and the reader then read
//! cold before the write reached it.
//!
//! Warm's step is a delete, never a copy of the write: a copy would store in warm a write cold
//! refused (an `add` of a key warm lacks), and two clients' writes of a key could reach the
//! tiers in opposite orders (cold keeping one, warm the other). The next read refills warm from
//! cold, under a lease (one cold read per key). Until the delete is sent, the write holds every
//! later request of its client, so a pipelined read cannot reach warm first and see the older
//! value (a client reads its own writes). A write outlives its client: once at cold, its delete
//! in warm goes too ([`Ordered::outlives_client`]).

use bytes::Bytes;

use super::{Effects, Framing, Send};

/// Where the write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Cold,
    Warm,
    Over,
}

/// A write to cold, then warm.
#[derive(Debug)]
pub struct Ordered {
    cold: usize,
    warm: usize,
    /// The client's request (line, and the value for a storage command).
    request: Send,
    /// The delete of warm's copy, sent once cold has answered.
    invalidation: (Bytes, Framing),
    /// Cold's reply, for the client once warm has answered.
    reply: Option<Bytes>,
    state: State,
    silent: bool,
    holding: bool,
    /// A touch-read (`gat`, `mg ... T`): cold's answer is counted as a hit or a miss.
    lookup: bool,
}

impl Ordered {
    /// A write whose request to cold server `cold` is `request`, followed by `invalidation` (the
    /// delete of the key) to warm server `warm`; `lookup` for a touch-read, whose hit or miss
    /// is counted.
    pub fn new(
        request: Send,
        cold: usize,
        warm: usize,
        invalidation: (Bytes, Framing),
        lookup: bool,
    ) -> Ordered {
        Ordered {
            silent: request.framing.discard_reply,
            cold,
            warm,
            request,
            invalidation,
            reply: None,
            state: State::Cold,
            holding: false,
            lookup,
        }
    }

    /// Sends the write to cold; every later request of the client waits until the warm step
    /// is sent.
    pub fn start(&mut self, fx: &mut Effects) {
        self.holding = true;
        let mut send = self.request.clone();
        send.server = self.cold;
        send.part = 0;
        fx.sends.push(send);
    }

    /// True while later requests of its client must wait.
    pub fn holds_requests(&self) -> bool {
        self.holding
    }

    /// True: once its write is at cold, warm's delete must follow, client or not (else warm
    /// could keep the value the write replaced).
    pub fn outlives_client(&self) -> bool {
        self.state != State::Over
    }

    /// True when the client gets nothing back (`noreply`).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// True once warm has answered (the client's answer is out).
    pub fn finished(&self) -> bool {
        self.state == State::Over
    }

    /// The reply (or failure) of the cold request (part 0) or the warm one (part 1).
    pub fn on_completion(&mut self, part: u32, c: &crate::upstream::Completion, fx: &mut Effects) {
        if !c.end {
            return;
        }
        match (self.state, part) {
            (State::Cold, 0) => {
                if self.lookup {
                    fx.lookups = if c.values > 0 { (1, 0) } else { (0, 1) };
                }
                self.reply = Some(c.reply.clone());
                let (bytes, framing) = self.invalidation.clone();
                fx.sends.push(Send {
                    server: self.warm,
                    part: 1,
                    bytes,
                    value: None,
                    framing,
                    stream: false,
                });
                self.state = State::Warm;
                if self.holding {
                    self.holding = false;
                    fx.writes_released = true;
                }
            }
            (State::Warm, 1) => {
                self.state = State::Over;
                if let Some(reply) = self.reply.take().filter(|r| !r.is_empty()) {
                    fx.deliver.push(reply);
                }
            }
            _ => {}
        }
    }
}
