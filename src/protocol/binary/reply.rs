//! The text reply to a translated binary request turned back into binary response frames.
//!
//! The reply arrives in pieces (a large value streams through), so the translation is a small
//! state machine per reply: its first line is gathered (bounded), then read by what its request
//! was ([`Answer`]); a value's data goes on as slices of the pieces, never copied. A quiet
//! request answers nothing on success (nor on a miss, for gets); errors are always answered.

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use super::request::{Answer, Pending};
use super::{opcode, response_header, status};
use crate::protocol::decimal::{parse_u64, parse_usize};
use crate::protocol::meta_flags::Words;

/// Longest reply line gathered (a `VA`/`STAT` line is far shorter; a longer one is garbage).
const MAX_LINE: usize = 4096;

/// Where the reply is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Gathering a line.
    #[default]
    Line,
    /// Passing `left` bytes of a value through, then its `\r\n`.
    Value { left: usize },
    /// Gathering `left` bytes of a counter's value (then its `\r\n`).
    Number { left: usize, cas: u64 },
    /// Dropping `left` bytes (a value's `\r\n`, or one the client does not get).
    Skip { left: usize },
    /// The answer is out; anything more is dropped.
    Done,
}

/// Translates one reply at a time (call [`ReplyTranslator::finish`] between replies).
#[derive(Debug, Default)]
pub struct ReplyTranslator {
    state: State,
    line: Vec<u8>,
}

impl ReplyTranslator {
    /// The next piece of the reply to `pending`; binary output appended to `out`.
    pub fn feed(&mut self, pending: &Pending, piece: &Bytes, out: &mut Vec<Bytes>) {
        let mut at = 0;
        while at < piece.len() {
            match self.state {
                State::Done => return,
                State::Line => {
                    let rest = piece.get(at..).unwrap_or_default();
                    match memchr(b'\n', rest) {
                        Some(end) => {
                            self.line
                                .extend_from_slice(rest.get(..end).unwrap_or_default());
                            at += end + 1;
                            let line = std::mem::take(&mut self.line);
                            let text = line.strip_suffix(b"\r").unwrap_or(&line);
                            self.state = self.on_line(pending, text, out);
                            self.line = line;
                            self.line.clear();
                        }
                        None => {
                            if self.line.len() + rest.len() > MAX_LINE {
                                out.push(error(pending, status::INTERNAL_ERROR, b"bad reply"));
                                self.state = State::Done;
                                return;
                            }
                            self.line.extend_from_slice(rest);
                            at = piece.len();
                        }
                    }
                }
                State::Value { left } => {
                    let take = left.min(piece.len() - at);
                    out.push(piece.slice(at..at + take));
                    at += take;
                    self.state = match left - take {
                        0 => State::Skip { left: 2 },
                        left => State::Value { left },
                    };
                }
                State::Number { left, cas } => {
                    let take = left.min(piece.len() - at);
                    self.line
                        .extend_from_slice(piece.get(at..at + take).unwrap_or_default());
                    at += take;
                    if left == take {
                        let number = parse_u64(&self.line).unwrap_or(0);
                        self.line.clear();
                        if !pending.quiet {
                            out.push(counter(pending, number, cas));
                        }
                        self.state = State::Skip { left: 2 };
                    } else {
                        self.state = State::Number {
                            left: left - take,
                            cas,
                        };
                    }
                }
                State::Skip { left } => {
                    let take = left.min(piece.len() - at);
                    at += take;
                    self.state = match left - take {
                        0 => self.after_block(pending),
                        left => State::Skip { left },
                    };
                }
            }
        }
    }

    /// The reply is complete: ready for the next one.
    pub fn finish(&mut self) {
        self.state = State::Line;
        self.line.clear();
    }

    /// Where a reply goes after a value's block: a stats reply reads more lines, others end.
    fn after_block(&self, pending: &Pending) -> State {
        match pending.answer {
            Answer::Stat => State::Line,
            _ => State::Done,
        }
    }

    /// Reads one whole line of the reply (without its line end).
    fn on_line(&mut self, pending: &Pending, line: &[u8], out: &mut Vec<Bytes>) -> State {
        if let Some(error) = error_line(pending, line) {
            out.push(error);
            return State::Done;
        }
        let mut words = Words::new(line);
        let head = words.next().map(|(_, w)| w).unwrap_or_default();
        let quiet = pending.quiet;
        let ok = |cas: u64, out: &mut Vec<Bytes>| {
            if !quiet {
                out.push(frame(pending, status::OK, cas, (&[], &[], &[])));
            }
        };
        match (pending.answer, head) {
            (Answer::Get { with_key }, b"VA") => {
                let Some(size) = words.next().and_then(|(_, w)| parse_usize(w)) else {
                    out.push(error(pending, status::INTERNAL_ERROR, b"bad reply"));
                    return State::Done;
                };
                let (mut flags, mut cas) = (0u32, 0u64);
                for (_, token) in words {
                    match token.split_first() {
                        Some((b'f', digits)) => {
                            flags = parse_u64(digits)
                                .and_then(|f| u32::try_from(f).ok())
                                .unwrap_or(0);
                        }
                        Some((b'c', digits)) => cas = parse_u64(digits).unwrap_or(0),
                        _ => {}
                    }
                }
                let key: &[u8] = if with_key { &pending.key } else { &[] };
                let mut head = BytesMut::with_capacity(24 + 4 + key.len());
                head.put_slice(&response_header(
                    pending.opcode,
                    status::OK,
                    pending.opaque,
                    cas,
                    (4, key.len(), size),
                ));
                head.put_u32(flags);
                head.put_slice(key);
                out.push(head.freeze());
                match size {
                    0 => State::Skip { left: 2 },
                    left => State::Value { left },
                }
            }
            (Answer::Get { with_key }, b"EN") => {
                if !quiet {
                    let key: &[u8] = if with_key { &pending.key } else { &[] };
                    let message: &[u8] = if with_key { &[] } else { b"Not found" };
                    out.push(frame(
                        pending,
                        status::KEY_NOT_FOUND,
                        0,
                        (&[], key, message),
                    ));
                }
                State::Done
            }
            (Answer::Touch, b"HD") => {
                let (mut flags, mut cas) = (0u32, 0u64);
                for (_, token) in words {
                    match token.split_first() {
                        Some((b'f', digits)) => {
                            flags = parse_u64(digits)
                                .and_then(|f| u32::try_from(f).ok())
                                .unwrap_or(0);
                        }
                        Some((b'c', digits)) => cas = parse_u64(digits).unwrap_or(0),
                        _ => {}
                    }
                }
                out.push(frame(
                    pending,
                    status::OK,
                    cas,
                    (&flags.to_be_bytes(), &[], &[]),
                ));
                State::Done
            }
            (Answer::Delete, b"HD") | (Answer::Flush, b"OK") => {
                ok(0, out);
                State::Done
            }
            (Answer::Store, b"HD") => {
                ok(cas_of(words), out);
                State::Done
            }
            (Answer::Noop | Answer::Quit, b"MN") => {
                ok(0, out);
                State::Done
            }
            (Answer::Fixed(code), b"MN") => {
                let message: &[u8] = match code {
                    status::OK => &[],
                    status::NOT_SUPPORTED => b"Not supported",
                    status::INVALID_ARGUMENTS => b"Invalid arguments",
                    _ => b"Unknown command",
                };
                out.push(frame(pending, code, 0, (&[], &[], message)));
                State::Done
            }
            (Answer::Version, b"VERSION") => {
                let version = line.get(8..).unwrap_or_default();
                out.push(frame(pending, status::OK, 0, (&[], &[], version)));
                State::Done
            }
            (Answer::Arithmetic, b"VA") => {
                let size = words.next().and_then(|(_, w)| parse_usize(w)).unwrap_or(0);
                let cas = cas_of(words);
                match size {
                    0 => {
                        if !quiet {
                            out.push(counter(pending, 0, cas));
                        }
                        State::Skip { left: 2 }
                    }
                    left => State::Number { left, cas },
                }
            }
            (Answer::Stat, b"STAT") => {
                let name = words.next().map(|(_, w)| w).unwrap_or_default();
                let value = words.next().map(|(_, w)| w).unwrap_or_default();
                out.push(frame(pending, status::OK, 0, (&[], name, value)));
                State::Line
            }
            (Answer::Stat, b"END") => {
                out.push(frame(pending, status::OK, 0, (&[], &[], &[])));
                State::Done
            }
            (_, b"EN") | (_, b"NF") => {
                out.push(error(pending, status::KEY_NOT_FOUND, b"Not found"));
                State::Done
            }
            (_, b"EX") => {
                out.push(error(pending, status::KEY_EXISTS, b"Data exists for key."));
                State::Done
            }
            (_, b"NS") => {
                let (code, message): (u16, &[u8]) = match pending.opcode {
                    opcode::ADD | opcode::ADDQ => (status::KEY_EXISTS, b"Data exists for key."),
                    opcode::REPLACE | opcode::REPLACEQ => (status::KEY_NOT_FOUND, b"Not found"),
                    _ => (status::NOT_STORED, b"Not stored."),
                };
                out.push(error(pending, code, message));
                State::Done
            }
            _ => {
                out.push(error(pending, status::INTERNAL_ERROR, b"bad reply"));
                State::Done
            }
        }
    }
}

/// The `c<cas>` of a meta reply's flags (0 without one).
fn cas_of<'a>(words: impl Iterator<Item = (usize, &'a [u8])>) -> u64 {
    words
        .filter_map(|(_, t)| t.strip_prefix(b"c"))
        .find_map(parse_u64)
        .unwrap_or(0)
}

/// The binary error for a text error line (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`),
/// if `line` is one.
fn error_line(pending: &Pending, line: &[u8]) -> Option<Bytes> {
    if line == b"ERROR" {
        return Some(error(pending, status::UNKNOWN_COMMAND, b"Unknown command"));
    }
    if let Some(message) = line.strip_prefix(b"CLIENT_ERROR ") {
        let code = match message.starts_with(b"cannot increment or decrement non-numeric") {
            true => status::NON_NUMERIC,
            false => status::INVALID_ARGUMENTS,
        };
        return Some(error(pending, code, message));
    }
    let message = line.strip_prefix(b"SERVER_ERROR ")?;
    let code = if message.starts_with(b"object too large") {
        status::VALUE_TOO_LARGE
    } else if message.starts_with(b"out of memory") {
        status::OUT_OF_MEMORY
    } else if message.starts_with(b"backend") || message.starts_with(b"timeout") {
        status::TEMPORARY_FAILURE
    } else {
        status::INTERNAL_ERROR
    };
    Some(error(pending, code, message))
}

/// An error response with `message` as its value.
fn error(pending: &Pending, code: u16, message: &[u8]) -> Bytes {
    frame(pending, code, 0, (&[], &[], message))
}

/// An increment's or decrement's answer: the counter as 8 bytes.
fn counter(pending: &Pending, number: u64, cas: u64) -> Bytes {
    frame(pending, status::OK, cas, (&[], &[], &number.to_be_bytes()))
}

/// A whole response frame.
fn frame(
    pending: &Pending,
    code: u16,
    cas: u64,
    (extras, key, value): (&[u8], &[u8], &[u8]),
) -> Bytes {
    let mut out = BytesMut::with_capacity(24 + extras.len() + key.len() + value.len());
    out.put_slice(&response_header(
        pending.opcode,
        code,
        pending.opaque,
        cas,
        (extras.len(), key.len(), value.len()),
    ));
    out.put_slice(extras);
    out.put_slice(key);
    out.put_slice(value);
    out.freeze()
}
