//! The reply framer used on backend connections: finds where each reply ends.
//!
//! `parse_reply(buf, kind, max_line_length)` looks at the start of `buf`, knowing from the
//! request which [`ReplyKind`] to expect, and returns how many bytes form the whole reply. It
//! keeps no state and copies nothing: a caller calls it again on the same buffer once more
//! bytes have arrived. Lines end at `\n` (the `\r` before it is expected but not required);
//! data blocks are framed by their announced length and must end with `\r\n`.
//!
//! A reply the framer cannot make sense of is [`ReplyError::Malformed`] and the backend
//! connection gets reset: once a reply stream is out of step nothing after it can be trusted.

use memchr::memchr;

use super::command::ReplyKind;

#[cfg(test)]
mod tests;

/// One framed reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Bytes of the whole reply, including its final line ending.
    pub len: usize,
    /// `VALUE` / `VA` blocks seen.
    pub values: usize,
    /// The reply is (or, for [`ReplyKind::UntilNoop`], contains) an error line: `ERROR`,
    /// `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
    pub error: bool,
}

/// Why a backend's reply stream cannot be framed; the backend connection is reset on these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A line or data block that does not fit the expected reply shape.
    Malformed,
    /// No line end within the line limit.
    LineTooLong,
}

impl ReplyError {
    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplyError::Malformed => "malformed_reply",
            ReplyError::LineTooLong => "reply_line_too_long",
        }
    }
}

/// Frames the reply at the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_reply(
    buf: &[u8],
    kind: ReplyKind,
    max_line_length: usize,
) -> Result<Option<Reply>, ReplyError> {
    let mut framer = Framer {
        buf,
        max_line_length,
        pos: 0,
        values: 0,
        error: false,
    };
    let done = match kind {
        ReplyKind::Line => framer.line()?,
        ReplyKind::Retrieval => framer.retrieval()?,
        ReplyKind::Stats => framer.stats()?,
        ReplyKind::Meta => framer.meta()?,
        ReplyKind::UntilNoop => framer.until_noop()?,
    };
    Ok(done.map(|()| Reply {
        len: framer.pos,
        values: framer.values,
        error: framer.error,
    }))
}

/// `true` when `line` is `word` alone or `word` followed by a space and more.
fn is_word(line: &[u8], word: &[u8]) -> bool {
    match line.strip_prefix(word) {
        Some(rest) => matches!(rest.first(), None | Some(b' ')),
        None => false,
    }
}

/// `true` for `ERROR [msg]`, `CLIENT_ERROR [msg]` and `SERVER_ERROR [msg]`.
fn is_error_line(line: &[u8]) -> bool {
    is_word(line, b"ERROR") || is_word(line, b"CLIENT_ERROR") || is_word(line, b"SERVER_ERROR")
}

/// The `n`th space-separated token of `line` (runs of spaces collapse).
fn token(line: &[u8], n: usize) -> Option<&[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty()).nth(n)
}

/// Parses an unsigned decimal token (digits only) into a `usize`.
fn parse_len(token: &[u8]) -> Option<usize> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    token.iter().try_fold(0usize, |acc, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        acc.checked_mul(10)?.checked_add(usize::from(digit))
    })
}

/// Walks one reply; `pos` is where the next line starts.
/// The `<bytes>` of a `VALUE <key> <flags> <bytes> [<cas>]` line (memcached separates tokens
/// with one space); None when the line has another shape.
fn value_size(line: &[u8]) -> Option<usize> {
    let rest = line.strip_prefix(b"VALUE ")?;
    let key_end = memchr(b' ', rest)?;
    let rest = rest.get(key_end + 1..)?;
    // The numbers are short: a plain scan beats memchr's set-up.
    let flags_end = rest.iter().position(|&b| b == b' ')?;
    let (key, flags) = (line.get(6..6 + key_end)?, rest.get(..flags_end)?);
    let rest = rest.get(flags_end + 1..)?;
    let (bytes, cas) = match rest.iter().position(|&b| b == b' ') {
        Some(end) => (rest.get(..end)?, Some(rest.get(end + 1..)?)),
        None => (rest, None),
    };
    let well_formed = !key.is_empty()
        && !flags.is_empty()
        && flags.iter().all(u8::is_ascii_digit)
        && match cas {
            None => true,
            Some(c) => !c.is_empty() && c.iter().all(u8::is_ascii_digit),
        };
    if !well_formed {
        return None;
    }
    parse_len(bytes)
}

struct Framer<'a> {
    buf: &'a [u8],
    max_line_length: usize,
    pos: usize,
    values: usize,
    error: bool,
}

/// `Ok(None)` from a framer step: more bytes needed.
type Step<T> = Result<Option<T>, ReplyError>;

impl<'a> Framer<'a> {
    /// The next line (without its line ending), advancing past it.
    fn next_line(&mut self) -> Step<&'a [u8]> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let window = rest.get(..self.max_line_length).unwrap_or(rest);
        let Some(newline) = memchr(b'\n', window) else {
            return if rest.len() >= self.max_line_length {
                Err(ReplyError::LineTooLong)
            } else {
                Ok(None)
            };
        };
        let line = rest.get(..newline).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.pos += newline + 1;
        Ok(Some(line))
    }

    /// Skips a data block of `size` bytes and its `\r\n`.
    fn data_block(&mut self, size: usize) -> Step<()> {
        let end = self
            .pos
            .checked_add(size)
            .and_then(|n| n.checked_add(2))
            .ok_or(ReplyError::Malformed)?;
        let Some(terminator) = self.buf.get(end - 2..end) else {
            return Ok(None);
        };
        if terminator != b"\r\n" {
            return Err(ReplyError::Malformed);
        }
        self.pos = end;
        self.values += 1;
        Ok(Some(()))
    }

    /// The data block announced by `VALUE <key> <flags> <bytes> [<cas>]`.
    fn value_block(&mut self, line: &[u8]) -> Step<()> {
        // This runs once per hit: find the token ends with memchr instead of walking bytes.
        let size = value_size(line).ok_or(ReplyError::Malformed)?;
        self.data_block(size)
    }

    /// The data block announced by `VA <size> <flags>*`.
    fn va_block(&mut self, line: &[u8]) -> Step<()> {
        match token(line, 1).and_then(parse_len) {
            Some(size) => self.data_block(size),
            None => Err(ReplyError::Malformed),
        }
    }

    /// [`ReplyKind::Line`]: exactly one line.
    /// One line that some classic command can get back: a status word, a number (incr/decr),
    /// `VERSION ...`, or an error. Anything else means the stream is out of step.
    fn line(&mut self) -> Step<()> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        self.error = is_error_line(line);
        let known = self.error
            || parse_len(line).is_some()
            || [
                &b"STORED"[..],
                b"NOT_STORED",
                b"EXISTS",
                b"NOT_FOUND",
                b"DELETED",
                b"TOUCHED",
                b"OK",
                b"RESET",
                b"VERSION",
            ]
            .iter()
            .any(|word| is_word(line, word));
        if known {
            Ok(Some(()))
        } else {
            Err(ReplyError::Malformed)
        }
    }

    /// [`ReplyKind::Retrieval`]: `VALUE` blocks then `END`, or an error line.
    fn retrieval(&mut self) -> Step<()> {
        loop {
            let Some(line) = self.next_line()? else {
                return Ok(None);
            };
            if line == b"END" {
                return Ok(Some(()));
            }
            if is_error_line(line) {
                self.error = true;
                return Ok(Some(()));
            }
            if !is_word(line, b"VALUE") {
                return Err(ReplyError::Malformed);
            }
            if self.value_block(line)?.is_none() {
                return Ok(None);
            }
        }
    }

    /// [`ReplyKind::Stats`]: `STAT` lines (also `ITEM` and `PREFIX` lines, which some stats
    /// subcommands send) then `END`, or an error line.
    fn stats(&mut self) -> Step<()> {
        loop {
            let Some(line) = self.next_line()? else {
                return Ok(None);
            };
            if line == b"END" {
                return Ok(Some(()));
            }
            if is_error_line(line) {
                self.error = true;
                return Ok(Some(()));
            }
            if !(is_word(line, b"STAT") || is_word(line, b"ITEM") || is_word(line, b"PREFIX")) {
                return Err(ReplyError::Malformed);
            }
        }
    }

    /// [`ReplyKind::Meta`]: one meta reply line (`HD EN NF NS EX MN ME`, or `VA` and its data
    /// block), or an error line.
    fn meta(&mut self) -> Step<()> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        if is_word(line, b"VA") {
            return self.va_block(line);
        }
        if is_error_line(line) {
            self.error = true;
            return Ok(Some(()));
        }
        let known = [b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"]
            .iter()
            .any(|code| is_word(line, *code));
        if known {
            Ok(Some(()))
        } else {
            Err(ReplyError::Malformed)
        }
    }

    /// [`ReplyKind::UntilNoop`]: any replies (lines, `VALUE` blocks, `VA` blocks) up to and
    /// including the line `MN`.
    fn until_noop(&mut self) -> Step<()> {
        loop {
            let Some(line) = self.next_line()? else {
                return Ok(None);
            };
            if line == b"MN" {
                return Ok(Some(()));
            }
            let block = if is_word(line, b"VALUE") {
                self.value_block(line)?
            } else if is_word(line, b"VA") {
                self.va_block(line)?
            } else {
                self.error |= is_error_line(line);
                Some(())
            };
            if block.is_none() {
                return Ok(None);
            }
        }
    }
}
