//! One backend request whose reply is the client's answer. A large reply is passed on in
//! pieces as it arrives; if the backend fails after a piece went out, the client's reply
//! stream cannot be repaired and the exchange aborts (the client is closed after what it got).

use super::{Effects, Send};
use crate::upstream::Completion;

/// State of a forward.
#[derive(Debug, Default)]
pub struct Forward {
    streamed: bool,
    finished: bool,
    /// The client gets nothing back (`noreply`): it need not wait for the reply.
    silent: bool,
}

impl Forward {
    /// Sends `send`.
    pub fn start(send: Send, fx: &mut Effects) -> Forward {
        let silent = send.framing.discard_reply;
        fx.sends.push(send);
        Forward {
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
