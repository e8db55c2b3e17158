//! How one kind of client is read and answered: [`ClientProtocol`] is the seam; the memcached
//! text protocol ([`TextProtocol`]) is its implementation today, and the binary protocol
//! (SPEC §14) is the next. Everything else a client connection does (reading the socket, the
//! FIFO of reply slots and its order, limits, swallowing the rest of a refused request, closing)
//! is the same whatever the client speaks and stays in [`super::client::Client`].
//!
//! Whatever the client speaks, the rest of the proxy sees memcached text: a protocol hands on
//! each request as the same parsed [`Request`] over memcached text bytes (a binary frame is
//! translated into the request it means), and every reply reaches the client through
//! [`ClientProtocol::write_reply`] as memcached text (a backend's, or one the proxy makes, a
//! refused request's error included), to be translated there into the client's wire form.

use bytes::Bytes;

use super::binary::BinaryProtocol;
use crate::protocol::binary::REQUEST_MAGIC;
use crate::protocol::request::unlink_after_too_large;
use crate::protocol::{parse_request, Limits, ParseError, Parsed, Request};
use crate::runtime::buffer::{Arena, ReadBuf, WriteQueue};

/// What the parser found next in the client's buffer.
pub enum Next {
    /// A whole request; `bytes` holds exactly its bytes and `request`'s spans index into it.
    Request(Request, Bytes),
    /// A bad request; the error's reply goes out in its slot. A `set` or `ms` refused as too
    /// large comes with the request that removes the key's old value (as memcached does),
    /// to run after the error is answered.
    Error(ParseError, Option<(Request, Bytes)>),
}

/// How requests are read from, and replies written to, one kind of client.
pub trait ClientProtocol {
    /// Parses the request at the start of `buf`. `None` while it is not all here (`buf` is
    /// left as it is). A whole one is taken off `buf` (a small one copied into `arena`, see
    /// [`ReadBuf::take_with`]) as memcached text, the form the rest of the proxy forwards. A
    /// refused one is left in `buf`: the client drops what the error's
    /// [`ParseError::skip`] says, or closes when it says nothing. A refused request is
    /// answered with its error's text reply ([`ParseError::reply`]) through
    /// [`Self::write_reply`], like every other reply: there is no second way out for errors,
    /// since a protocol that speaks something else must translate error lines there anyway (a
    /// backend's `SERVER_ERROR`s reach the client the same way).
    fn next_request(
        &mut self,
        buf: &mut ReadBuf,
        limits: &Limits,
        arena: &mut Arena,
    ) -> Option<Next>;

    /// Puts `pieces` of the reply at the head of the client's reply order on `queue`, in the
    /// client's wire form; `complete` with the reply's last pieces (possibly none). Each
    /// reply's pieces come in reply order, which is request order, and `complete` comes once
    /// per reply, so a protocol that answers with something of its request (binary: the
    /// opaque) can keep it in a FIFO from [`Self::next_request`] on. A call with no pieces
    /// that does not complete a reply is not made. The replies of slots dropped behind a
    /// closing reply never come (the connection closes).
    fn write_reply(&mut self, pieces: &[Bytes], complete: bool, queue: &mut WriteQueue);

    /// True when the protocol has a request to hand on that needs no more bytes (one frame that
    /// became two text requests): [`Self::next_request`] is called even with nothing buffered.
    fn has_queued_request(&self) -> bool {
        false
    }

    /// [`Self::write_reply`] for pieces the caller no longer needs: they may be moved to the
    /// queue instead of shared.
    fn write_owned_reply(&mut self, pieces: Vec<Bytes>, complete: bool, queue: &mut WriteQueue) {
        self.write_reply(&pieces, complete, queue);
    }
}

/// The memcached text protocol: requests are parsed in place by [`parse_request`] and handed on
/// as they came (slices of the read buffer, or small copies); replies go out as they are, the
/// same `Bytes` the backend's read or the proxy made, never translated.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextProtocol;

impl ClientProtocol for TextProtocol {
    #[inline]
    fn next_request(
        &mut self,
        buf: &mut ReadBuf,
        limits: &Limits,
        arena: &mut Arena,
    ) -> Option<Next> {
        match parse_request(buf, limits) {
            Ok(Parsed::Incomplete) => None,
            Ok(Parsed::Complete(request)) => {
                let bytes = buf.take_with(request.len, arena);
                Some(Next::Request(request, bytes))
            }
            Err(error) => {
                let unlink = match error {
                    ParseError::TooLarge { .. } | ParseError::TooLargeNoreply { .. } => {
                        unlink_request(buf, limits)
                    }
                    _ => None,
                };
                Some(Next::Error(error, unlink))
            }
        }
    }

    #[inline]
    fn write_reply(&mut self, pieces: &[Bytes], _complete: bool, queue: &mut WriteQueue) {
        queue.reserve_for(pieces);
        pieces.iter().for_each(|p| queue.push_ref(p));
    }

    #[inline]
    fn write_owned_reply(&mut self, pieces: Vec<Bytes>, _complete: bool, queue: &mut WriteQueue) {
        queue.reserve_for(&pieces);
        for piece in pieces {
            queue.push(piece);
        }
    }
}

/// The request that removes the old value of the `set`/`ms` at the start of `buf`, refused as
/// too large (see [`unlink_after_too_large`]).
fn unlink_request(buf: &[u8], limits: &Limits) -> Option<(Request, Bytes)> {
    let (request, line) = unlink_after_too_large(buf, limits)?;
    Some((request, Bytes::from(line)))
}

/// The protocol a client speaks, one variant per implementation.
///
/// An enum rather than a type parameter of `Client`: binary and text clients share listeners
/// (SPEC §14: a client whose first byte is 0x80 speaks binary), so which protocol a client
/// speaks is known only once it has sent something, while its `Client`, the slab of clients and
/// the worker code over them need one type from the accept on. The binary protocol adds a
/// variant, chosen at the client's first byte. With one variant, each match below compiles to
/// the direct call; with two, it is one predictable branch per call, no vtable.
#[derive(Debug, Default)]
pub enum AnyProtocol {
    /// Nothing read yet: the first byte decides.
    #[default]
    Unknown,
    /// memcached text.
    Text(TextProtocol),
    /// memcached's binary protocol (the first byte was its magic, 0x80).
    Binary(Box<BinaryProtocol>),
}

impl AnyProtocol {
    /// The protocol, decided by the first byte of `buf` if it is not yet.
    #[inline]
    fn decide(&mut self, buf: &[u8]) {
        if let AnyProtocol::Unknown = self {
            *self = match buf.first() {
                Some(&REQUEST_MAGIC) => AnyProtocol::Binary(Box::default()),
                _ => AnyProtocol::Text(TextProtocol),
            };
        }
    }
}

impl ClientProtocol for AnyProtocol {
    #[inline]
    fn next_request(
        &mut self,
        buf: &mut ReadBuf,
        limits: &Limits,
        arena: &mut Arena,
    ) -> Option<Next> {
        self.decide(buf);
        match self {
            AnyProtocol::Text(text) => text.next_request(buf, limits, arena),
            AnyProtocol::Binary(binary) => binary.next_request(buf, limits, arena),
            AnyProtocol::Unknown => None,
        }
    }

    #[inline]
    fn has_queued_request(&self) -> bool {
        match self {
            AnyProtocol::Binary(binary) => binary.has_queued_request(),
            AnyProtocol::Text(_) | AnyProtocol::Unknown => false,
        }
    }

    #[inline]
    fn write_reply(&mut self, pieces: &[Bytes], complete: bool, queue: &mut WriteQueue) {
        match self {
            // A reply before any request (none is made): as text.
            AnyProtocol::Text(text) => text.write_reply(pieces, complete, queue),
            AnyProtocol::Unknown => TextProtocol.write_reply(pieces, complete, queue),
            AnyProtocol::Binary(binary) => binary.write_reply(pieces, complete, queue),
        }
    }

    #[inline]
    fn write_owned_reply(&mut self, pieces: Vec<Bytes>, complete: bool, queue: &mut WriteQueue) {
        match self {
            AnyProtocol::Text(text) => text.write_owned_reply(pieces, complete, queue),
            AnyProtocol::Unknown => TextProtocol.write_owned_reply(pieces, complete, queue),
            AnyProtocol::Binary(binary) => binary.write_owned_reply(pieces, complete, queue),
        }
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
