//! One request sent to several servers (`flush_all`): the answer is `OK` when every server
//! said `OK`, else the first other reply.

use bytes::Bytes;

use super::{Effects, Send};
use crate::upstream::Completion;

const OK: &[u8] = b"OK\r\n";

/// State of a fan-out.
#[derive(Debug)]
pub struct FanOut {
    pending: usize,
    first_failure: Option<Bytes>,
    silent: bool,
}

impl FanOut {
    /// Sends every request of `sends` (at least one).
    pub fn start(sends: impl Iterator<Item = Send>, fx: &mut Effects) -> FanOut {
        let before = fx.sends.len();
        let mut silent = false;
        for send in sends {
            silent = send.framing.discard_reply;
            fx.sends.push(send);
        }
        FanOut {
            pending: fx.sends.len() - before,
            first_failure: None,
            silent,
        }
    }

    /// One server's reply or failure.
    pub fn on_completion(&mut self, completion: &Completion, fx: &mut Effects) {
        if !completion.end || self.pending == 0 {
            return;
        }
        self.pending -= 1;
        if completion.reply.as_ref() != OK && self.first_failure.is_none() {
            self.first_failure = Some(completion.reply.clone());
        }
        if self.pending == 0 && !self.silent {
            let answer = self
                .first_failure
                .take()
                .unwrap_or_else(|| Bytes::from_static(OK));
            fx.deliver.push(answer);
        }
    }

    /// True when the client gets nothing back (`noreply`).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// True once every server has answered.
    pub fn finished(&self) -> bool {
        self.pending == 0
    }
}
