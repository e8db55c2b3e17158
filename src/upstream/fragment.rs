//! The unit of work a backend connection carries: one backend request, who its reply belongs
//! to, and how to answer it if the backend fails.

use std::time::Instant;

use bytes::Bytes;

use crate::protocol::{Expect, ReplyKind};

/// Who receives a backend request's reply: a token the layer above chose (it names an exchange
/// or a job there, with a generation, so a token whose owner has gone names nothing) and which
/// of the owner's requests it is. A connection only carries it back in the [`Completion`]; an
/// owner that has gone leaves its requests to be drained: their replies are still read, to
/// keep the stream in step, and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Opaque to this layer.
    pub token: u64,
    /// Which of the owner's backend requests this is.
    pub part: u32,
}

/// How a request is answered when its backend cannot answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A retrieval: the keys become misses (this many bytes, e.g. `END\r\n` or `EN\r\n`).
    Miss(&'static [u8]),
    /// `SERVER_ERROR <reason>`.
    Error,
    /// Nothing at all (`noreply`, or a quiet meta get whose miss is not shown).
    Silent,
}

/// Why a backend could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The request's deadline passed.
    Timeout,
    /// The connection could not be made.
    ConnectFailed,
    /// The server is in connect backoff after recent failures.
    Unavailable,
    /// The server closed the connection or it broke.
    ConnectionLost,
    /// The server's reply stream is out of sync with the requests: bytes that are not a
    /// memcached reply, a reply that does not answer the request at the head of the in-flight
    /// FIFO (wrong kind, wrong key, impossible size), or bytes with nothing in flight.
    BadReply,
    /// Too many requests are already queued for the server (`max_queued_requests`).
    Overloaded,
    /// Health checks marked the server down (its pool does not eject it, or no server of the
    /// pool is left): the request fails without touching the wire.
    Down,
    /// An HTTP origin answered a status that is neither a hit, a miss nor a success.
    OriginStatus(u16),
    /// An HTTP origin's value is over the pool's `max_value_size`.
    TooLarge,
    /// The command has no meaning for an HTTP origin (only reads, `set`/`ms` and
    /// `delete`/`md` have).
    NotSupported,
    /// A write to an HTTP origin whose pool does not have `writes: true`.
    ReadOnly,
}

impl FailReason {
    /// The reply a client gets for a failed non-retrieval request.
    pub fn reply(self) -> &'static [u8] {
        match self {
            FailReason::Timeout => b"SERVER_ERROR timeout\r\n",
            FailReason::ConnectFailed => b"SERVER_ERROR backend connect failed\r\n",
            FailReason::Unavailable => b"SERVER_ERROR backend unavailable\r\n",
            FailReason::ConnectionLost => b"SERVER_ERROR backend connection lost\r\n",
            FailReason::BadReply => b"SERVER_ERROR backend sent a malformed reply\r\n",
            FailReason::Overloaded => b"SERVER_ERROR backend overloaded\r\n",
            FailReason::Down => b"SERVER_ERROR backend down\r\n",
            FailReason::OriginStatus(500..=599) => b"SERVER_ERROR origin server error (5xx)\r\n",
            FailReason::OriginStatus(400..=499) => {
                b"SERVER_ERROR origin refused the request (4xx)\r\n"
            }
            FailReason::OriginStatus(_) => b"SERVER_ERROR origin answered an unexpected status\r\n",
            FailReason::TooLarge => b"SERVER_ERROR origin value over max_value_size\r\n",
            FailReason::NotSupported => b"SERVER_ERROR command not supported by an HTTP origin\r\n",
            FailReason::ReadOnly => {
                b"SERVER_ERROR HTTP origin is read-only (its pool has no writes: true)\r\n"
            }
        }
    }

    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::ConnectFailed => "connect_failed",
            FailReason::Unavailable => "unavailable",
            FailReason::ConnectionLost => "connection_lost",
            FailReason::BadReply => "bad_reply",
            FailReason::Overloaded => "overloaded",
            FailReason::Down => "down",
            FailReason::OriginStatus(_) => "origin_status",
            FailReason::TooLarge => "too_large",
            FailReason::NotSupported => "not_supported",
            FailReason::ReadOnly => "read_only",
        }
    }

    /// True for a failure that says something about the server's health: one event, however
    /// many requests it failed (not a refusal made locally: backoff, overload, down).
    pub fn is_health_event(self) -> bool {
        matches!(
            self,
            FailReason::Timeout
                | FailReason::ConnectFailed
                | FailReason::ConnectionLost
                | FailReason::BadReply
        )
    }
}

/// One request as a backend connection tracks it while it is in flight.
#[derive(Clone, Copy, Debug)]
pub struct Fragment {
    /// Who gets the reply.
    pub owner: Owner,
    /// How to find the reply's end.
    pub kind: ReplyKind,
    /// What to answer if the backend fails.
    pub on_failure: Failure,
    /// Drop the reply body (classic `noreply`: the client asked for nothing back).
    pub discard_reply: bool,
    /// The reply may be handed on in pieces before it is whole (its owner passes it through).
    pub stream: bool,
    /// When to give up.
    pub deadline: Instant,
    /// When it was queued, on its worker's clock (microseconds; the server's latency is
    /// measured from here).
    pub sent: u64,
    /// What its reply may hold beyond its kind (reply codes, keys asked): set by the
    /// connection when the request is queued, from the bytes it sends.
    pub expect: Expect,
    /// Where the request starts in the bytes ever queued on its connection: a reply can only
    /// come once the connection has written past this point.
    pub wire_start: u64,
}

/// A piece of a backend request's reply, or its failure, handed to its owner.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Who gets it.
    pub owner: Owner,
    /// The bytes (possibly empty): the whole reply, or the next piece of a streamed one.
    pub reply: Bytes,
    /// True for the last piece: the request is answered (or failed).
    pub end: bool,
    /// With `end`: length of the reply's final line (`END\r\n`, an error line...) at the end
    /// of `reply`; 0 for a failure's reply.
    pub tail: usize,
    /// With `end`: hits in the reply (VALUE/VA blocks, HD lines).
    pub values: usize,
    /// The server that answered or failed it.
    pub server: usize,
    /// The backend failed this request (timeouts and connection errors).
    pub failed: Option<FailReason>,
    /// When the request was queued for the server, on the worker's clock (copied from the
    /// fragment).
    pub sent: u64,
    /// With `end`: the smallest lifetime the server gave the reply's values (an HTTP
    /// origin's `max-age`); a write-back of them lives no longer.
    pub max_age: Option<u32>,
}

#[cfg(test)]
impl Completion {
    /// For unit tests of exchanges and jobs: the whole reply `text` to `owner`'s request, with
    /// `values` hits, failed by `failed` if given. Its tail is the reply's last line.
    pub fn whole(
        owner: Owner,
        text: &'static [u8],
        values: usize,
        failed: Option<FailReason>,
    ) -> Completion {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let last_line = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Completion {
            owner,
            reply: Bytes::from_static(text),
            end: true,
            tail: text.len() - last_line,
            values,
            server: 0,
            failed,
            sent: 0,
            max_age: None,
        }
    }
}

impl Fragment {
    /// The completion that answers this request for a failure of `server`.
    pub fn fail(&self, server: usize, reason: FailReason) -> Completion {
        let refused = matches!(reason, FailReason::NotSupported | FailReason::ReadOnly);
        let reply = match self.on_failure {
            // A refusal is said, even to a read (whose failures are otherwise misses).
            Failure::Miss(_) if refused => Bytes::from_static(reason.reply()),
            Failure::Miss(bytes) => Bytes::from_static(bytes),
            Failure::Error => Bytes::from_static(reason.reply()),
            Failure::Silent => Bytes::new(),
        };
        Completion {
            owner: self.owner,
            tail: if self.discard_reply { 0 } else { reply.len() },
            reply: if self.discard_reply {
                Bytes::new()
            } else {
                reply
            },
            end: true,
            values: 0,
            server,
            failed: Some(reason),
            sent: self.sent,
            max_age: None,
        }
    }
}
