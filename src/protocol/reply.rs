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
    /// Hits seen: `VALUE` and `VA` blocks, and `HD` lines (an `mg` hit that asked for no value).
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

/// Frames the reply at the start of `buf` in one go (a fresh [`ReplyFramer`]). `Ok(None)`
/// means more bytes are needed.
pub fn parse_reply(
    buf: &[u8],
    kind: ReplyKind,
    max_line_length: usize,
) -> Result<Option<Reply>, ReplyError> {
    let mut framer = ReplyFramer::default();
    Ok(framer
        .advance(buf, kind, max_line_length)?
        .then(|| framer.reply()))
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

/// Frames one reply incrementally: the state is kept between calls, so bytes already framed
/// are never scanned again, and a data block is consumed as it arrives (a reply can be passed
/// on in pieces before it is whole).
///
/// The caller keeps the reply's bytes from its start (or from the last [`Self::rebase`]) at
/// the start of the buffer it passes to [`Self::advance`]; [`Self::framed`] bytes of it are
/// known to belong to the reply.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplyFramer {
    /// Bytes of the buffer framed so far.
    pos: usize,
    /// Bytes of the current data block still to come, its `\r\n` included (0: between lines).
    block: usize,
    /// The reply ends with the data block being read (a meta `VA` reply).
    ends_with_block: bool,
    values: usize,
    error: bool,
    /// Length of the final line (`END`, `MN`, an error...), once the reply is whole.
    tail: usize,
}

impl ReplyFramer {
    /// Frames what `buf` adds; true once the reply is whole (its length is [`Self::framed`]).
    pub fn advance(
        &mut self,
        buf: &[u8],
        kind: ReplyKind,
        max_line_length: usize,
    ) -> Result<bool, ReplyError> {
        loop {
            if self.block > 0 {
                match self.data_block(buf)? {
                    false => return Ok(false),
                    true if self.ends_with_block => return Ok(true),
                    true => {}
                }
            }
            let Some((line, len)) = next_line(buf, self.pos, max_line_length)? else {
                return Ok(false);
            };
            self.pos += len;
            let done = match kind {
                ReplyKind::Line => self.line(line)?,
                ReplyKind::Retrieval => self.retrieval(line)?,
                ReplyKind::Stats => self.stats(line)?,
                ReplyKind::Meta => self.meta(line)?,
                ReplyKind::UntilNoop => self.until_noop(line)?,
            };
            if done {
                self.tail = len;
                return Ok(true);
            }
        }
    }

    /// Bytes framed so far (the whole reply once [`Self::advance`] said so).
    pub fn framed(&self) -> usize {
        self.pos
    }

    /// The first `n` framed bytes were handed on and removed from the front of the buffer.
    pub fn rebase(&mut self, n: usize) {
        self.pos -= n.min(self.pos);
    }

    /// Length of the reply's final line (`END\r\n`, `MN\r\n`, an error line...); 0 until whole,
    /// and for a reply that ends with a data block (a meta `VA`).
    pub fn tail(&self) -> usize {
        self.tail
    }

    /// The framed reply's summary.
    pub fn reply(&self) -> Reply {
        Reply {
            len: self.pos,
            values: self.values,
            error: self.error,
        }
    }

    /// Consumes what has arrived of the current data block; true once it and its `\r\n` are in.
    fn data_block(&mut self, buf: &[u8]) -> Result<bool, ReplyError> {
        let available = buf.len().saturating_sub(self.pos);
        if available < self.block {
            // Take the body as it comes, but keep the `\r\n` for the check below.
            let take = available.min(self.block.saturating_sub(2));
            self.pos += take;
            self.block -= take;
            return Ok(false);
        }
        let end = self.pos + self.block;
        if buf.get(end - 2..end) != Some(&b"\r\n"[..]) {
            return Err(ReplyError::Malformed);
        }
        self.pos = end;
        self.block = 0;
        self.values += 1;
        Ok(true)
    }

    fn start_block(&mut self, size: Option<usize>) -> Result<bool, ReplyError> {
        let size = size.ok_or(ReplyError::Malformed)?;
        self.block = size.checked_add(2).ok_or(ReplyError::Malformed)?;
        Ok(false)
    }

    /// [`ReplyKind::Line`]: one line that some classic command can get back: a status word, a
    /// number (incr/decr), `VERSION ...`, or an error. Anything else means the stream is out
    /// of step.
    fn line(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
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
            Ok(true)
        } else {
            Err(ReplyError::Malformed)
        }
    }

    /// [`ReplyKind::Retrieval`]: `VALUE` blocks then `END`, or an error line.
    fn retrieval(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
        if line == b"END" {
            return Ok(true);
        }
        if is_error_line(line) {
            self.error = true;
            return Ok(true);
        }
        if !is_word(line, b"VALUE") {
            return Err(ReplyError::Malformed);
        }
        // This runs once per hit: value_size finds the token ends with memchr.
        self.start_block(value_size(line))
    }

    /// [`ReplyKind::Stats`]: `STAT` lines (also `ITEM` and `PREFIX` lines, which some stats
    /// subcommands send) then `END`, or an error line.
    fn stats(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
        if line == b"END" {
            return Ok(true);
        }
        if is_error_line(line) {
            self.error = true;
            return Ok(true);
        }
        if is_word(line, b"STAT") || is_word(line, b"ITEM") || is_word(line, b"PREFIX") {
            Ok(false)
        } else {
            Err(ReplyError::Malformed)
        }
    }

    /// [`ReplyKind::Meta`]: one meta reply line (`HD EN NF NS EX MN ME`, or `VA` and its data
    /// block), or an error line. `VA` and `HD` count as values: to an `mg` they are hits (`HD`
    /// when no value was asked for).
    fn meta(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
        if is_word(line, b"VA") {
            self.ends_with_block = true;
            return self.start_block(token(line, 1).and_then(parse_len));
        }
        if is_error_line(line) {
            self.error = true;
            return Ok(true);
        }
        if is_word(line, b"HD") {
            self.values += 1;
            return Ok(true);
        }
        let known = [b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"]
            .iter()
            .any(|code| is_word(line, *code));
        if known {
            Ok(true)
        } else {
            Err(ReplyError::Malformed)
        }
    }

    /// [`ReplyKind::UntilNoop`]: any replies (lines, `VALUE` blocks, `VA` blocks) up to and
    /// including the line `MN`.
    fn until_noop(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
        if line == b"MN" {
            return Ok(true);
        }
        if is_word(line, b"VALUE") {
            return self.start_block(value_size(line));
        }
        if is_word(line, b"VA") {
            return self.start_block(token(line, 1).and_then(parse_len));
        }
        if is_word(line, b"HD") {
            self.values += 1;
        }
        self.error |= is_error_line(line);
        Ok(false)
    }
}

/// The line starting at `pos` (without its line ending) and its length with the ending.
fn next_line(
    buf: &[u8],
    pos: usize,
    max_line_length: usize,
) -> Result<Option<(&[u8], usize)>, ReplyError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let window = rest.get(..max_line_length).unwrap_or(rest);
    let Some(newline) = memchr(b'\n', window) else {
        return if rest.len() >= max_line_length {
            Err(ReplyError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let line = rest.get(..newline).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Some((line, newline + 1)))
}
