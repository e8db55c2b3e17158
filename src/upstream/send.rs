//! What a backend request is, as the layer above hands it to a connection: the server, the
//! bytes, how its reply is framed and what a failure answers. The owner of its reply is
//! named by an opaque [`Owner`] token; this layer never knows what it stands for.

use bytes::Bytes;

use crate::protocol::{Command, ReplyKind, Request};
use crate::upstream::Failure;

/// How a backend request is framed on the wire and answered if its backend fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// The reply shape to expect.
    pub kind: ReplyKind,
    /// What a failure answers.
    pub on_failure: Failure,
    /// Drop the reply (classic `noreply`).
    pub discard_reply: bool,
    /// Send `mn` after the request, so its possibly empty reply has an end.
    pub noop_tail: bool,
}

impl Framing {
    /// A request of `command` the proxy makes itself (a write-back, an invalidation): its
    /// reply is read whole, and a failure answers an error (which is counted).
    pub fn whole(command: Command) -> Framing {
        Framing {
            kind: command.reply_kind(),
            on_failure: Failure::Error,
            discard_reply: false,
            noop_tail: false,
        }
    }

    /// The framing of `request` as the client sent it.
    pub fn of(request: &Request) -> Framing {
        let miss = match request.command {
            Command::Get | Command::Gets | Command::Gat | Command::Gats => {
                Some(Failure::Miss(b"END\r\n"))
            }
            Command::MetaGet => Some(Failure::Miss(b"EN\r\n")),
            _ => None,
        };
        if request.noreply {
            return Framing {
                kind: ReplyKind::UntilNoop,
                on_failure: Failure::Silent,
                discard_reply: true,
                noop_tail: true,
            };
        }
        if request.quiet {
            // Quiet mode hides misses and success codes, not errors.
            let on_failure = if miss.is_some() {
                Failure::Silent
            } else {
                Failure::Error
            };
            return Framing {
                kind: ReplyKind::UntilNoop,
                on_failure,
                discard_reply: false,
                noop_tail: true,
            };
        }
        Framing {
            kind: request.command.reply_kind(),
            on_failure: miss.unwrap_or(Failure::Error),
            discard_reply: false,
            noop_tail: false,
        }
    }
}

/// A backend request an exchange wants sent.
#[derive(Clone, Debug)]
pub struct Send {
    /// The server (global index).
    pub server: usize,
    /// Which of the exchange's requests this is (comes back in its completion).
    pub part: u32,
    /// The request's bytes.
    pub bytes: Bytes,
    /// More bytes sent right after `bytes`: a write-back's value, a slice of the reply that
    /// brought it (so it is not copied).
    pub value: Option<Bytes>,
    /// How it is framed.
    pub framing: Framing,
    /// Its reply may be handed on in pieces.
    pub stream: bool,
}
