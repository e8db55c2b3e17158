//! A simulated backend connection: the proxy's side frames the reply stream exactly as
//! `BackendConn` does (the real [`ReplyFramer`] and [`Expect`] checks, streamed pieces, the
//! `mn` tail cut off, one failure per in-flight request on a reset, a reset on bytes that do
//! not frame), and the server's side executes each request against its [`Store`] when the
//! scheduler says so. No socket: bytes move when the scheduler moves them.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::store::Store;
use crate::protocol::{Checks, Expect, ReplyFramer, ReplyKind};
use crate::upstream::{Completion, FailReason, Fragment, Owner, Send};

/// Longest reply line the framer takes (as `BackendConn`).
const MAX_REPLY_LINE: usize = 64 * 1024;
/// Bytes of the `MN\r\n` that ends an `UntilNoop` reply.
const NOOP_REPLY_LEN: usize = 4;

/// Who a backend request was sent for, for the checks (not seen by the code under test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Unique number of the send in the run.
    pub send: u64,
    /// The client and the index of its request, when a client's exchange sent it.
    pub request: Option<(usize, usize)>,
}

/// One request in flight on a connection.
#[derive(Debug)]
struct InFlight {
    fragment: Fragment,
    origin: Origin,
    /// What goes on the wire: request, value, `mn` tail.
    wire: Vec<u8>,
    /// The request line of a retrieval of several keys (checked against `VALUE` keys).
    line: Bytes,
    /// The server has executed it (its reply is in `replies` or was read).
    executed: bool,
}

/// A completion with the send it ends or continues.
pub type Delivered = (Origin, Completion);

/// One connection between the proxy and a simulated server.
#[derive(Debug, Default)]
pub struct Conn {
    /// The server's index.
    pub server: usize,
    inflight: VecDeque<InFlight>,
    /// Reply bytes the server wrote and the proxy has not read.
    replies: Vec<u8>,
    /// Bytes the proxy read and has not framed into replies.
    read_buf: Vec<u8>,
    framer: ReplyFramer,
    /// A streamed reply is handed on in pieces of at least this many bytes.
    pub stream_piece: usize,
}

impl Conn {
    /// A connection to `server` handing streamed replies on in pieces of `stream_piece` bytes.
    pub fn new(server: usize, stream_piece: usize) -> Conn {
        Conn {
            server,
            stream_piece,
            ..Conn::default()
        }
    }

    /// Requests queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// True when the server has a request to execute.
    pub fn has_work(&self) -> bool {
        self.inflight.iter().any(|f| !f.executed)
    }

    /// Reply bytes the proxy can read.
    pub fn unread(&self) -> usize {
        self.replies.len()
    }

    /// Queues `send` for `owner` (as `Backends::send` queues it on a connection).
    pub fn enqueue(&mut self, owner: Owner, send: &Send, origin: Origin) {
        let mut wire = send.bytes.to_vec();
        if let Some(value) = &send.value {
            wire.extend_from_slice(value);
        }
        if send.framing.noop_tail {
            wire.extend_from_slice(b"mn\r\n");
        }
        let expect = Expect::of(send.framing.kind, &send.bytes);
        let fragment = fragment_of(owner, send, expect);
        self.inflight.push_back(InFlight {
            fragment,
            origin,
            wire,
            line: send.bytes.clone(),
            executed: false,
        });
    }

    /// The failure `Backends` answers at once for a request it cannot queue.
    pub fn refuse(owner: Owner, send: &Send, origin: Origin, why: FailReason) -> Delivered {
        let fragment = fragment_of(owner, send, Expect::ANY);
        (origin, fragment.fail(send.server, why))
    }

    /// The server executes its next request; returns who sent it.
    pub fn execute_next(&mut self, store: &mut Store) -> Option<Origin> {
        let next = self.inflight.iter_mut().find(|f| !f.executed)?;
        next.executed = true;
        let reply = store.execute_all(&next.wire);
        self.replies.extend_from_slice(&reply);
        Some(next.origin)
    }

    /// Bytes that are no reply arrive (after the replies already written).
    pub fn garbage(&mut self, bytes: &[u8]) {
        self.replies.extend_from_slice(bytes);
    }

    /// The proxy reads up to `n` reply bytes and frames them. An error resets the connection
    /// (every request in flight fails once, as `BadReply`).
    pub fn read(&mut self, n: usize, store: &mut Store, out: &mut Vec<Delivered>) -> bool {
        let n = n.min(self.replies.len());
        self.read_buf.extend(self.replies.drain(..n));
        match self.frame(out) {
            Ok(()) => true,
            Err(reason) => {
                self.reset(reason, 0, store, out);
                false
            }
        }
    }

    fn frame(&mut self, out: &mut Vec<Delivered>) -> Result<(), FailReason> {
        while !self.read_buf.is_empty() {
            let Some(head) = self.inflight.front() else {
                return Err(FailReason::BadReply);
            };
            let fragment = head.fragment;
            let line: &[u8] = match fragment.expect.walks_line() {
                true => &head.line,
                false => &[],
            };
            let checks = Checks {
                expect: fragment.expect,
                line,
            };
            let done = self
                .framer
                .advance_checked(&self.read_buf, fragment.kind, checks, MAX_REPLY_LINE)
                .map_err(|_| FailReason::BadReply)?;
            if !done {
                let framed = self.framer.framed();
                if fragment.stream && framed >= self.stream_piece {
                    let piece = Bytes::from(self.read_buf.drain(..framed).collect::<Vec<u8>>());
                    self.framer.rebase(framed);
                    let origin = head.origin;
                    out.push((origin, piece_of(&fragment, piece, self.server)));
                }
                break;
            }
            let framer = std::mem::take(&mut self.framer);
            let reply = framer.reply();
            let mut bytes: Vec<u8> = self.read_buf.drain(..reply.len).collect();
            let mut tail = framer.tail();
            if fragment.kind == ReplyKind::UntilNoop {
                bytes.truncate(bytes.len().saturating_sub(NOOP_REPLY_LEN));
                tail = 0;
            }
            let Some(head) = self.inflight.pop_front() else {
                break;
            };
            let discard = fragment.discard_reply;
            out.push((
                head.origin,
                Completion {
                    owner: fragment.owner,
                    reply: if discard {
                        Bytes::new()
                    } else {
                        Bytes::from(bytes)
                    },
                    end: true,
                    tail: if discard { 0 } else { tail },
                    values: reply.values,
                    server: self.server,
                    failed: None,
                    sent: fragment.sent,
                    max_age: None,
                },
            ));
        }
        Ok(())
    }

    /// The connection breaks (`reason`): every request in flight fails, once. The server had
    /// read the first `applied` of those it had not executed yet and executes them (their
    /// replies are lost): a request that failed may still have been applied.
    pub fn reset(
        &mut self,
        reason: FailReason,
        applied: usize,
        store: &mut Store,
        out: &mut Vec<Delivered>,
    ) {
        let mut left = applied;
        for f in self.inflight.iter_mut().filter(|f| !f.executed) {
            if left == 0 {
                break;
            }
            left -= 1;
            store.execute_all(&f.wire);
        }
        self.replies.clear();
        self.read_buf.clear();
        self.framer = ReplyFramer::default();
        let server = self.server;
        out.extend(
            self.inflight
                .drain(..)
                .map(|f| (f.origin, f.fragment.fail(server, reason))),
        );
    }
}

/// What `BackendConn` tracks for `send` of `owner` (as `Backends` builds it).
fn fragment_of(owner: Owner, send: &Send, expect: Expect) -> Fragment {
    Fragment {
        owner,
        kind: send.framing.kind,
        on_failure: send.framing.on_failure,
        discard_reply: send.framing.discard_reply,
        stream: send.stream && !send.framing.discard_reply,
        deadline: fixed_instant(),
        sent: 0,
        expect,
        wire_start: 0,
    }
}

/// A streamed piece of `fragment`'s reply.
fn piece_of(fragment: &Fragment, piece: Bytes, server: usize) -> Completion {
    Completion {
        owner: fragment.owner,
        reply: piece,
        end: false,
        tail: 0,
        values: 0,
        server,
        failed: None,
        sent: fragment.sent,
        max_age: None,
    }
}

/// The deadline a fragment carries: unused here (the scheduler decides when a request times
/// out), but the type wants an instant. Taken once per thread so nothing depends on the clock.
pub fn fixed_instant() -> Instant {
    thread_local! {
        static AT: Instant = Instant::now();
    }
    AT.with(|at| *at)
}
