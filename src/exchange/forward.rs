//! One backend request whose reply is the client's answer. A large reply is passed on in
//! pieces as it arrives; if the backend fails after a piece went out, the client's reply
//! stream cannot be repaired and the exchange aborts (the client is closed after what it got).

use super::{Effects, Send};
use crate::upstream::Completion;

/// State of a forward.
#[derive(Debug, Default)]
pub struct Forward {
    /// Keys the request looks up (its hits and misses are counted from the reply's values).
    lookups: usize,
    streamed: bool,
    finished: bool,
    /// The client gets nothing back (`noreply`): it need not wait for the reply.
    silent: bool,
}

impl Forward {
    /// Sends `send`, which looks up `lookups` keys (0 for a request that is not a read).
    pub fn start(send: Send, lookups: usize, fx: &mut Effects) -> Forward {
        let silent = send.framing.discard_reply;
        fx.sends.push(send);
        Forward {
            lookups,
            silent,
            ..Forward::default()
        }
    }

    /// True when the client gets nothing back (`noreply`).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// A piece of the reply, its end, or its failure.
    pub fn on_completion(&mut self, completion: &Completion, fx: &mut Effects) {
        if self.finished {
            return;
        }
        if completion.end && self.lookups > 0 {
            // A failed read is all misses (its reply is a miss, or an error).
            let hits = completion.values.min(self.lookups);
            fx.lookups = (hits, self.lookups - hits);
        }
        if completion.failed.is_some() && self.streamed {
            fx.abort = true;
            self.finished = true;
            return;
        }
        if !completion.reply.is_empty() {
            fx.deliver.push(completion.reply.clone());
        }
        if completion.end {
            self.finished = true;
        } else {
            self.streamed = true;
        }
    }

    /// True once the reply is whole.
    pub fn finished(&self) -> bool {
        self.finished
    }
}
