//! How one kind of backend is spoken to: how a request is written and how the reply stream is
//! cut back into one reply per request. [`BackendWire`] is the seam; [`MemcacheText`] (the
//! memcached text protocol) is its implementation today, and an HTTP origin (SPEC §13) is the
//! next. Everything else a connection does (connecting, backoff, the in-flight FIFO and its
//! deadlines, resets, writing and reading the socket) is the same for every kind of backend
//! and stays in [`super::conn::BackendConn`], which holds its wire as a type parameter: each
//! call is a direct (inlinable) call, none goes through a vtable.
//!
//! Whatever the backend speaks, the layer above sees memcached: a [`Send`] carries the
//! memcached request the proxy means, and a completion carries a memcached reply. A wire
//! translates both ways where its backend speaks something else (HTTP: a read becomes
//! `GET /<percent-encoded key>`, a response becomes `VALUE ... END`).

use std::collections::VecDeque;

use bytes::Bytes;

use std::sync::Arc;

use super::{FailReason, Fragment, Send};
use crate::config::ServerSpec;
use crate::observe::stats::DetailStats;
use crate::protocol::{Checks, Expect, ReplyFramer, ReplyKind};
use crate::runtime::buffer::{ReadBuf, WriteQueue};

/// What framing the start of the read buffer against the request at the head of the
/// in-flight FIFO found.
#[derive(Debug)]
pub enum Framed {
    /// The head request's reply has begun and is not whole yet; nothing to hand on. Whatever
    /// the buffer holds belongs to that reply (the wire keeps its place for the next read).
    Partial,
    /// A piece of the head request's reply (one whose fragment allows streaming), taken off
    /// the buffer; the rest of the reply follows.
    Piece(Bytes),
    /// The head request is answered: its reply, taken off the buffer, in memcached form.
    Whole {
        /// The reply (what is left of it after any streamed pieces).
        reply: Bytes,
        /// Length of the reply's final line at the end of `reply` (`END\r\n`, an error
        /// line), which a split retrieval strips before merging; 0 when there is none.
        tail: usize,
        /// Hits in the reply (VALUE/VA blocks, HD lines).
        values: usize,
        /// The smallest lifetime the backend gave its values (an HTTP origin's `max-age`),
        /// which a write-back of them must not outlive; `None` when it gave none.
        max_age: Option<u32>,
    },
    /// The head request failed without the stream being out of step (an HTTP origin answered
    /// a status that is an error, or a value over the limit): the connection goes on.
    Failed(FailReason),
}

/// How requests are written to, and replies framed from, one kind of backend.
///
/// A connection calls [`Self::encode`] once per request it accepts, in order, and
/// [`Self::frame`] against the oldest request not yet answered, only once that request has
/// been written (at least in part): so a wire may keep per-request state in a FIFO of its own
/// (pushed by `encode`, popped when `frame` answers [`Framed::Whole`]), in step with the
/// connection's in-flight FIFO. [`Self::reset`] empties it when the connection is reset
/// (every request in flight is then failed by the connection, not the wire).
pub trait BackendWire {
    /// The wire of a new connection to `server`, server number `index` (its settings: an HTTP
    /// origin's base path; its counters in `detail`).
    fn new(server: &ServerSpec, index: usize, detail: Option<&Arc<DetailStats>>) -> Self
    where
        Self: Sized;

    /// Queues the bytes that ask the backend for `send` on `queue`. May fill in what the
    /// request's reply is checked against ([`Fragment::expect`]); `fragment` is what the
    /// connection tracks for it and hands back to [`Self::frame`]. Unless [`Self::ready`]
    /// says its answer is already in, at least one byte must be queued: a reply is taken only
    /// for a request whose bytes have started to leave. `Err`: the backend cannot take this
    /// request (nothing is queued; the request is answered with the reason).
    fn encode(
        &mut self,
        send: &Send,
        fragment: &mut Fragment,
        queue: &mut WriteQueue,
    ) -> Result<(), FailReason>;

    /// True when the head request's reply can be framed without reading more bytes (an
    /// HTTP origin's coalesced read whose answer came with an earlier request's).
    #[inline]
    fn ready(&self) -> bool {
        false
    }

    /// True when the connection is closed and made again instead of failing what is in
    /// flight when the backend closes it between replies ([`Self::replay`]).
    #[inline]
    fn reconnects(&self) -> bool {
        false
    }

    /// True when the backend said it closes the connection after the reply just framed: the
    /// connection is made again ([`Self::replay`]) before anything more is read.
    #[inline]
    fn closing(&self) -> bool {
        false
    }

    /// The connection closed between replies: queues again on `queue` every request not yet
    /// answered, for a new connection. False when that cannot be done (the close cut a
    /// reply, or nothing was answered since the last connect); the connection then fails
    /// what is in flight.
    fn replay(&mut self, _queue: &mut WriteQueue) -> bool {
        false
    }

    /// Frames what `buf` holds from its start as the reply to `head` (the oldest request in
    /// flight). Taking a piece or a whole reply takes its bytes off `buf` (small ones copied,
    /// see [`ReadBuf::take`]). `Err` names why the bytes cannot be that reply (the stream is
    /// out of step with the requests); the connection is then reset.
    fn frame(&mut self, buf: &mut ReadBuf, head: &Fragment) -> Result<Framed, &'static str>;

    /// The connection was reset: forget every request and any reply half framed.
    fn reset(&mut self);
}

/// Longest reply line the framer accepts from a server (a `VALUE` or `STAT` line).
const MAX_REPLY_LINE: usize = 64 * 1024;
/// Sent after every `noreply` or quiet request so the end of its (possibly empty) reply can
/// be found: the backend answers `MN` once everything before it is done.
const NOOP: &[u8] = b"mn\r\n";
/// Bytes of the `MN\r\n` that ends an `UntilNoop` reply.
const NOOP_REPLY_LEN: usize = 4;
/// A streamed reply is handed on in pieces of at least this many bytes (smaller replies are
/// handed on whole, in one piece).
const STREAM_PIECE: usize = 64 * 1024;

/// The memcached text protocol: requests go out as the proxy holds them (they already are
/// memcached text), each reply is framed incrementally by [`ReplyFramer`] and checked against
/// the request it answers ([`Expect`]: the codes its verb can get, the keys a retrieval asked,
/// sizes an item can have; SPEC §6b).
#[derive(Debug, Default)]
pub struct MemcacheText {
    /// Framing state of the reply at the head of the in-flight FIFO (kept between reads, so
    /// no byte is scanned twice).
    framer: ReplyFramer,
    /// The request of each in-flight retrieval of several keys ([`Expect::walks_line`]), in
    /// FIFO order: its reply's `VALUE` keys are checked against the keys it asked.
    key_lines: VecDeque<Bytes>,
}

#[cfg(test)]
impl MemcacheText {
    /// Request lines kept for the key checks of replies still to come.
    pub(super) fn kept_lines(&self) -> usize {
        self.key_lines.len()
    }
}

impl BackendWire for MemcacheText {
    fn new(_server: &ServerSpec, _index: usize, _detail: Option<&Arc<DetailStats>>) -> Self {
        MemcacheText::default()
    }

    #[inline]
    fn encode(
        &mut self,
        send: &Send,
        fragment: &mut Fragment,
        queue: &mut WriteQueue,
    ) -> Result<(), FailReason> {
        fragment.expect = Expect::of(fragment.kind, &send.bytes);
        if fragment.expect.walks_line() {
            self.key_lines.push_back(send.bytes.clone());
        }
        // By reference: a small part is copied into the queue's buffer, so it is not cloned
        // (and dropped) for nothing; a large one is shared.
        queue.push_ref(&send.bytes);
        if let Some(value) = &send.value {
            queue.push_ref(value);
        }
        if send.framing.noop_tail {
            queue.push(Bytes::from_static(NOOP));
        }
        Ok(())
    }

    #[inline]
    fn frame(&mut self, buf: &mut ReadBuf, head: &Fragment) -> Result<Framed, &'static str> {
        // The request line of a retrieval of several keys (none for most requests).
        let line: &[u8] = match head.expect.walks_line() {
            true => self.key_lines.front().map_or(&[], |line| &line[..]),
            false => &[],
        };
        let checks = Checks {
            expect: head.expect,
            line,
        };
        let done = self
            .framer
            .advance_checked(buf, head.kind, checks, MAX_REPLY_LINE)
            .map_err(|e| e.as_str())?;
        if !done {
            let framed = self.framer.framed();
            if head.stream && framed >= STREAM_PIECE {
                let piece = buf.take(framed);
                self.framer.rebase(framed);
                return Ok(Framed::Piece(piece));
            }
            return Ok(Framed::Partial);
        }
        let framer = std::mem::take(&mut self.framer);
        let summary = framer.reply();
        let mut reply = buf.take(summary.len);
        let mut tail = framer.tail();
        if head.kind == ReplyKind::UntilNoop {
            reply.truncate(reply.len().saturating_sub(NOOP_REPLY_LEN));
            tail = 0;
        }
        if head.expect.walks_line() {
            self.key_lines.pop_front();
        }
        Ok(Framed::Whole {
            reply,
            tail,
            values: summary.values,
            max_age: None,
        })
    }

    fn reset(&mut self) {
        self.framer = ReplyFramer::default();
        self.key_lines.clear();
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
