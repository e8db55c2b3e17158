//! The unit of work a backend connection carries: a fragment of one client request (or of a
//! background job), who is waiting for its reply, and how to answer it if the backend fails.

use std::time::Instant;

use bytes::Bytes;

use crate::protocol::ReplyKind;

/// Who receives a fragment's reply: a reply slot of a client connection. The generation makes
/// a reply for a client that has gone (and whose slab entry was reused) harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Client slab index.
    pub client: usize,
    /// The client's generation when the request was made.
    pub generation: u32,
    /// The reply slot's sequence number in that client's FIFO.
    pub seq: u64,
    /// Which fragment of the slot's request this is (0 unless the request was split).
    pub part: usize,
}

/// How a fragment is answered when its backend cannot answer it.
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
    /// The server sent bytes that are not a memcached reply.
    BadReply,
    /// The proxy is shutting down.
    ShuttingDown,
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
            FailReason::ShuttingDown => b"SERVER_ERROR proxy shutting down\r\n",
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
            FailReason::ShuttingDown => "shutting_down",
        }
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
    /// When to give up.
    pub deadline: Instant,
    /// Keys this fragment looks up (for hit/miss counters; 0 for non-retrievals).
    pub lookups: usize,
}

/// The outcome of a fragment, handed to its owner.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Who gets it.
    pub owner: Owner,
    /// The bytes to send the client (possibly empty).
    pub reply: Bytes,
    /// VALUE/VA blocks in the reply (hits).
    pub values: usize,
    /// Keys the fragment looked up (copied from the fragment).
    pub lookups: usize,
    /// The server that answered or failed it.
    pub server: usize,
    /// The backend failed this fragment (timeouts and connection errors).
    pub failed: Option<FailReason>,
}

impl Fragment {
    /// The completion that answers this fragment for a failure of `server`.
    pub fn fail(&self, server: usize, reason: FailReason) -> Completion {
        let reply = match self.on_failure {
            Failure::Miss(bytes) => Bytes::from_static(bytes),
            Failure::Error => Bytes::from_static(reason.reply()),
            Failure::Silent => Bytes::new(),
        };
        Completion {
            owner: self.owner,
            reply: if self.discard_reply {
                Bytes::new()
            } else {
                reply
            },
            values: 0,
            lookups: self.lookups,
            server,
            failed: Some(reason),
        }
    }
}
