//! The binary protocol (SPEC §14) as a [`ClientProtocol`]: each frame is translated into the
//! memcached text request it means ([`crate::protocol::binary::request`]) and handed on like a
//! text client's; each text reply is translated back into binary response frames
//! ([`crate::protocol::binary::reply`]), in request order, with the request's opcode and
//! opaque, which a FIFO keeps from the frame to its answer.
//!
//! A frame that is not one (wrong magic, extras and key longer than the body, a body far over
//! any value the listener takes) closes the connection. A value over `max_value_size` is
//! answered "too large" and its bytes are swallowed as they arrive, as for a text client.

use std::collections::VecDeque;

use bytes::Bytes;

use super::protocol::{ClientProtocol, Next};
use crate::protocol::binary::reply::ReplyTranslator;
use crate::protocol::binary::request::{translate, Answer, Pending};
use crate::protocol::binary::{opcode, Header};
use crate::protocol::{parse_request, Limits, ParseError, Parsed};
use crate::runtime::buffer::{Arena, ReadBuf, WriteQueue};

/// A body this far over the listener's `max_value_size` is not a request but garbage: the
/// connection closes instead of swallowing it.
const BODY_SLACK: usize = 1 << 20;

/// A binary client's protocol state.
#[derive(Debug, Default)]
pub struct BinaryProtocol {
    /// What each request still to be answered needs, in request order.
    pending: VecDeque<Pending>,
    translator: ReplyTranslator,
    /// A text request the last frame also became, handed on next (a quit's `quit`).
    then: Option<Bytes>,
    out: Vec<Bytes>,
}

impl BinaryProtocol {
    /// A request whose text is `text`, answered per `pending` (queued now).
    fn request(&mut self, text: Bytes, pending: Option<Pending>, limits: &Limits) -> Next {
        if let Some(pending) = pending {
            self.pending.push_back(pending);
        }
        match parse_request(&text, limits) {
            Ok(Parsed::Complete(request)) => Next::Request(request, text),
            // The frame is already taken off the buffer: nothing more to drop.
            Ok(Parsed::Incomplete) => Next::Error(ParseError::BadCommandLine { skip: 0 }, None),
            Err(error) => Next::Error(without_skip(error), None),
        }
    }
}

impl ClientProtocol for BinaryProtocol {
    fn next_request(
        &mut self,
        buf: &mut ReadBuf,
        limits: &Limits,
        arena: &mut Arena,
    ) -> Option<Next> {
        if let Some(text) = self.then.take() {
            return Some(self.request(text, None, limits));
        }
        let header = match Header::parse(buf) {
            Ok(None) => return None,
            Ok(Some(header)) => header,
            Err(_) => return Some(self.refuse()),
        };
        let limit = limits.max_value_size.saturating_add(BODY_SLACK);
        if header.body_len as usize > limit {
            return Some(self.refuse());
        }
        if header.value_len() > limits.max_value_size && carries_value(header.opcode) {
            // Answered "too large"; the client swallows the frame as it arrives.
            self.pending.push_back(Pending {
                opcode: header.opcode,
                opaque: header.opaque,
                key: Bytes::new(),
                answer: Answer::Store,
                quiet: false,
            });
            let skip = header.frame_len();
            return Some(Next::Error(ParseError::TooLarge { skip }, None));
        }
        if buf.len() < header.frame_len() {
            return None;
        }
        let frame = buf.take_with(header.frame_len(), arena);
        let translated = translate(&header, &frame);
        self.then = translated.then;
        Some(self.request(translated.text, Some(translated.pending), limits))
    }

    fn has_queued_request(&self) -> bool {
        self.then.is_some()
    }

    fn write_reply(&mut self, pieces: &[Bytes], complete: bool, queue: &mut WriteQueue) {
        let Some(pending) = self.pending.front() else {
            return;
        };
        for piece in pieces {
            self.translator.feed(pending, piece, &mut self.out);
        }
        queue.reserve_for(&self.out);
        for piece in self.out.drain(..) {
            queue.push(piece);
        }
        if complete {
            self.translator.finish();
            self.pending.pop_front();
        }
    }
}

impl BinaryProtocol {
    /// A frame that is not one: the connection closes (nothing is answered; the FIFO gets an
    /// entry for the empty reply the refusal is).
    fn refuse(&mut self) -> Next {
        self.pending.push_back(Pending {
            opcode: 0,
            opaque: 0,
            key: Bytes::new(),
            answer: Answer::Fixed(0),
            quiet: true,
        });
        Next::Error(ParseError::BadFrame, None)
    }
}

/// True for opcodes whose frame carries a value (the ones a value over the limit refuses).
fn carries_value(op: u8) -> bool {
    matches!(
        op,
        opcode::SET
            | opcode::SETQ
            | opcode::ADD
            | opcode::ADDQ
            | opcode::REPLACE
            | opcode::REPLACEQ
            | opcode::APPEND
            | opcode::APPENDQ
            | opcode::PREPEND
            | opcode::PREPENDQ
    )
}

/// `error` with nothing more to drop from the buffer (the frame was taken off it whole); the
/// errors that close the connection stay so.
fn without_skip(error: ParseError) -> ParseError {
    match error {
        ParseError::UnknownCommand { .. } => ParseError::UnknownCommand { skip: 0 },
        ParseError::BadCommandLine { .. } => ParseError::BadCommandLine { skip: 0 },
        ParseError::TooLarge { .. } => ParseError::TooLarge { skip: 0 },
        ParseError::TooLargeNoreply { .. } => ParseError::TooLargeNoreply { skip: 0 },
        ParseError::BadDataChunk { .. } => ParseError::BadDataChunk { skip: 0 },
        other => other,
    }
}
