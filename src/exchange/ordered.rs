//! A write on a warm_first route with leases: cold first, then warm, the client answered with
//! cold's reply once warm has answered too.
//!
//! Why this order closes the stale-set window (docs/configuration.md, "Leases"): a reader that
//! holds a lease made its placeholder in warm before it read cold. If its cold read came before
//! this write reached cold, this write's warm step comes after that placeholder was made, and
//! replaces or drops it (or the value written back under it): the reader's `ms ... C<cas>`
//! then fails, or its value is overwritten. If its cold read came after, it read this write.
//! Sent to both at once instead, the warm step could come before the reader's placeholder, and
//! the reader then read cold before the write reached it.
//!
//! When cold fails, warm's copy is dropped instead (cold may or may not have applied the write:
//! the next read refills warm from cold either way). Until its warm step is sent, the write
//! holds every later request of its client, so that a pipelined read cannot reach warm first
//! and miss the write (a client reads its own writes).

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
    /// What warm is sent after cold succeeded: the delete of warm's copy for a write that only
    /// cold can answer (cas, arithmetic, append); None: the same write.
    warm_step: Option<(Bytes, Framing)>,
    /// The delete of warm's copy, sent when cold failed.
    invalidation: (Bytes, Framing),
    /// Cold's reply, for the client once warm has answered.
    reply: Option<Bytes>,
    state: State,
    silent: bool,
    holding: bool,
}

impl Ordered {
    /// A write whose request to cold server `cold` is `request`, followed by `warm_step` (None:
    /// the same request) to warm server `warm`, or, when cold fails, by `invalidation`.
    pub fn new(
        request: Send,
        cold: usize,
        warm: usize,
        warm_step: Option<(Bytes, Framing)>,
        invalidation: (Bytes, Framing),
    ) -> Ordered {
        Ordered {
            silent: request.framing.discard_reply,
            cold,
            warm,
            request,
            warm_step,
            invalidation,
            reply: None,
            state: State::Cold,
            holding: false,
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
                let failed = c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR");
                self.reply = Some(c.reply.clone());
                let step = match (failed, &self.warm_step) {
                    (true, _) => Some(&self.invalidation),
                    (false, step) => step.as_ref(),
                };
                let send = match step {
                    Some((bytes, framing)) => Send {
                        server: self.warm,
                        part: 1,
                        bytes: bytes.clone(),
                        value: None,
                        framing: *framing,
                        stream: false,
                    },
                    None => Send {
                        server: self.warm,
                        part: 1,
                        ..self.request.clone()
                    },
                };
                fx.sends.push(send);
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
