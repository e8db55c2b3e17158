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
//!
//! Beyond its shape, [`ReplyFramer::advance_checked`] checks a reply against the request it
//! answers ([`Checks`], see [`expect`]): a reply code that request's verb cannot get
//! ([`ReplyError::Unexpected`]: `DELETED` for a `set`, `EN` for an `ms`), a `VALUE` whose key
//! is not one of the keys asked, in the order asked, or a meta get's `k` flag naming another
//! key ([`ReplyError::WrongKey`]), a data block larger than any item can be
//! ([`ReplyError::TooLarge`]). Each means the stream is out of step with the requests.

use memchr::memchr;

use super::base64;
use super::command::ReplyKind;
use super::decimal;

pub mod expect;
#[cfg(test)]
mod tests;

use expect::code;
pub use expect::{key_print, Checks, Expect};

/// The largest data block a reply may announce: memcached's upper bound on its item size
/// (`-I` cannot be set above 1 GiB, `ITEM_SIZE_MAX_UPPER_LIMIT`). No backend can hold a larger
/// item, so a larger `VALUE`/`VA` length means the stream is out of step; it is refused at
/// once instead of being read until the request's deadline.
pub const MAX_ITEM_SIZE: usize = 1 << 30;

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
    /// A reply code the request's verb cannot get (`DELETED` for a `set`, `EN` for an `ms`).
    Unexpected,
    /// A `VALUE` key that is not one of the keys asked (in order), or a meta get's `k` flag
    /// naming another key.
    WrongKey,
    /// A data block longer than any item can be ([`MAX_ITEM_SIZE`]).
    TooLarge,
    /// Bytes that arrived while no request was in flight, or before the request they would
    /// answer was written (found by the connection, not the framer).
    Unsolicited,
}

impl ReplyError {
    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplyError::Malformed => "malformed_reply",
            ReplyError::LineTooLong => "reply_line_too_long",
            ReplyError::Unexpected => "unexpected_reply",
            ReplyError::WrongKey => "wrong_key",
            ReplyError::TooLarge => "value_too_large",
            ReplyError::Unsolicited => "unsolicited_reply",
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

/// A `VALUE <key> <flags> <bytes> [<cas>]` line as memcached writes it (one space between
/// tokens, flags within 32 bits, a cas unique within 64): where its key, flags and cas lie in
/// the line, and its data block's length. The one reader of `VALUE` lines: the framer checks
/// every reply with it, and what reads a framed reply again (a merge, a write-back) gets the
/// same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueHeader {
    /// The key's range in the line.
    pub key: (usize, usize),
    /// The flags' range in the line.
    pub flags: (usize, usize),
    /// The data block's length (without its `\r\n`).
    pub size: usize,
    /// The cas unique's range in the line (`gets`/`gats` replies).
    pub cas: Option<(usize, usize)>,
}

/// Reads a `VALUE` line (without its line end); None when the line has another shape.
#[inline]
pub fn value_header(line: &[u8]) -> Option<ValueHeader> {
    let rest = line.strip_prefix(b"VALUE ")?;
    let key_end = 6 + memchr(b' ', rest)?;
    let flags_start = key_end + 1;
    // The numbers are short: a plain scan beats memchr's set-up.
    let flags_end = flags_start + line.get(flags_start..)?.iter().position(|&b| b == b' ')?;
    let size_start = flags_end + 1;
    let tail = line.get(size_start..)?;
    let (size_end, cas) = match tail.iter().position(|&b| b == b' ') {
        Some(end) => (size_start + end, Some((size_start + end + 1, line.len()))),
        None => (line.len(), None),
    };
    // Flags are 32 bits and a cas unique 64 in memcached: anything wider is not a reply of
    // its (and a write-back would copy the flags into a request memcached refuses without
    // reading its data block).
    let well_formed = key_end > 6
        && decimal::at_most(line.get(flags_start..flags_end)?, decimal::U32_MAX)
        && cas.map_or(true, |(s, e)| {
            line.get(s..e)
                .is_some_and(|c| decimal::at_most(c, decimal::U64_MAX))
        });
    if !well_formed {
        return None;
    }
    Some(ValueHeader {
        key: (6, key_end),
        flags: (flags_start, flags_end),
        size: decimal::parse_usize(line.get(size_start..size_end)?)?,
        cas,
    })
}

/// The `VALUE` block at the start of `block`, a reply the framer has accepted (so checked by
/// [`value_header`]), when its key is `key_len` bytes long: its data length and the length of
/// its header line with the line end. What reads a framed reply again (a multi-get's merge,
/// once per key asked) needs only these, not a second check.
#[inline]
pub fn framed_value(block: &[u8], key_len: usize) -> Option<(usize, usize)> {
    // `VALUE <key> <flags> <bytes>[ <cas>]\r\n`: short tokens, a plain scan beats memchr's
    // set-up.
    let flags_start = 6 + key_len + 1;
    let flags_len = block.get(flags_start..)?.iter().position(|&b| b == b' ')?;
    let size_start = flags_start + flags_len + 1;
    let tail = block.get(size_start..)?;
    let size_len = tail.iter().position(|b| !b.is_ascii_digit())?;
    let size = decimal::parse_usize(tail.get(..size_len)?)?;
    let newline = tail.get(size_len..)?.iter().position(|&b| b == b'\n')?;
    Some((size, size_start + size_len + newline + 1))
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
    /// Where the keys a `VALUE` can still be start: hits come in the order asked, so each
    /// `VALUE` key must be one at or after the last one matched. For a single key, 1 once it
    /// was matched; for several, a position in the request line ([`Checks::line`]).
    next_key: usize,
}

impl ReplyFramer {
    /// Frames what `buf` adds; true once the reply is whole (its length is [`Self::framed`]).
    /// Checks the reply's shape only (see [`Self::advance_checked`]).
    pub fn advance(
        &mut self,
        buf: &[u8],
        kind: ReplyKind,
        max_line_length: usize,
    ) -> Result<bool, ReplyError> {
        self.advance_checked(buf, kind, Checks::default(), max_line_length)
    }

    /// [`Self::advance`], also checking the reply against the request it answers (`checks`,
    /// the same on every call for one reply).
    pub fn advance_checked(
        &mut self,
        buf: &[u8],
        kind: ReplyKind,
        checks: Checks<'_>,
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
                ReplyKind::Line => self.line(line, checks.expect.codes)?,
                ReplyKind::Retrieval => self.retrieval(line, &checks)?,
                ReplyKind::Stats => self.stats(line)?,
                ReplyKind::Meta => self.meta(line, &checks)?,
                ReplyKind::UntilNoop => self.until_noop(line, &checks)?,
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
        if size > MAX_ITEM_SIZE {
            return Err(ReplyError::TooLarge);
        }
        self.block = size + 2;
        Ok(false)
    }

    /// A `VALUE` block's header: its key must be one of the keys asked at or after the last
    /// one matched (when the request's keys are known), then its data block follows.
    fn value(&mut self, line: &[u8], checks: &Checks<'_>) -> Result<bool, ReplyError> {
        let header = value_header(line).ok_or(ReplyError::Malformed)?;
        let key = line.get(header.key.0..header.key.1).unwrap_or_default();
        let size = header.size;
        let expect = &checks.expect;
        match expect.keys {
            0 if expect.retrieval => return Err(ReplyError::WrongKey),
            0 => {}
            1 => {
                if self.next_key > 0 || key_print(key) != expect.first {
                    return Err(ReplyError::WrongKey);
                }
                self.next_key = 1;
            }
            _ => {
                let mut pos = self.next_key.max(expect.keys_at as usize);
                // The usual case, a hit for the next key asked: one comparison of bytes.
                if let Some(after) = expect::key_at(checks.line, pos, key) {
                    self.next_key = after;
                    return self.start_block(Some(size));
                }
                loop {
                    let (asked, after) =
                        expect::next_key(checks.line, pos).ok_or(ReplyError::WrongKey)?;
                    pos = after;
                    if asked == key {
                        break;
                    }
                }
                self.next_key = pos;
            }
        }
        self.start_block(Some(size))
    }

    /// [`ReplyKind::Line`]: one line that some classic command can get back: a status word, a
    /// number (incr/decr), `VERSION ...`, or an error. Anything else means the stream is out
    /// of step.
    fn line(&mut self, line: &[u8], codes: u16) -> Result<bool, ReplyError> {
        self.error = is_error_line(line);
        if self.error {
            return Ok(true);
        }
        let found = if decimal::parse_usize(line).is_some() {
            code::OTHER
        } else {
            const WORDS: [(&[u8], u16); 9] = [
                (b"STORED", code::STORED),
                (b"NOT_STORED", code::NOT_STORED),
                (b"EXISTS", code::EXISTS),
                (b"NOT_FOUND", code::NOT_FOUND),
                (b"DELETED", code::DELETED),
                (b"TOUCHED", code::TOUCHED),
                (b"OK", code::OK),
                (b"RESET", code::OTHER),
                (b"VERSION", code::OTHER),
            ];
            let word = WORDS.iter().find(|(word, _)| is_word(line, word));
            word.ok_or(ReplyError::Malformed)?.1
        };
        allowed(found, codes)
    }

    /// [`ReplyKind::Retrieval`]: `VALUE` blocks then `END`, or an error line.
    fn retrieval(&mut self, line: &[u8], checks: &Checks<'_>) -> Result<bool, ReplyError> {
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
        // This runs once per hit: value_header finds the token ends with memchr.
        self.value(line, checks)
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
    fn meta(&mut self, line: &[u8], checks: &Checks<'_>) -> Result<bool, ReplyError> {
        if is_error_line(line) {
            self.error = true;
            return Ok(true);
        }
        let found = meta_code(line).ok_or(ReplyError::Malformed)?;
        allowed(found, checks.expect.codes)?;
        self.meta_hit(line, found, checks)
    }

    /// A meta reply line of code `found` (allowed): `VA` starts its block, `HD` is a hit, and
    /// an `mg` hit's `k` flag must name the key asked.
    fn meta_hit(
        &mut self,
        line: &[u8],
        found: u16,
        checks: &Checks<'_>,
    ) -> Result<bool, ReplyError> {
        if found & (code::VA | code::HD) != 0 && checks.expect.meta_key {
            check_meta_key(line, &checks.expect)?;
        }
        if found == code::VA {
            self.ends_with_block = true;
            return self.start_block(token(line, 1).and_then(decimal::parse_usize));
        }
        if found == code::HD {
            self.values += 1;
        }
        Ok(true)
    }

    /// [`ReplyKind::UntilNoop`]: replies (lines, `VALUE` blocks, `VA` blocks) up to and
    /// including the line `MN`. When the request's verb is known, only the codes it can get in
    /// quiet mode (and errors) may come before the `MN`.
    fn until_noop(&mut self, line: &[u8], checks: &Checks<'_>) -> Result<bool, ReplyError> {
        if line == b"MN" {
            return Ok(true);
        }
        if is_error_line(line) {
            self.error = true;
            return Ok(false);
        }
        let codes = checks.expect.codes;
        if codes == 0 {
            // A verb the table does not know: anything framed goes.
            if is_word(line, b"VALUE") {
                return self.value(line, checks);
            }
            if is_word(line, b"VA") {
                return self.start_block(token(line, 1).and_then(decimal::parse_usize));
            }
            if is_word(line, b"HD") {
                self.values += 1;
            }
            return Ok(false);
        }
        let found = meta_code(line).ok_or(ReplyError::Unexpected)?;
        allowed(found, codes)?;
        self.meta_hit(line, found, checks)?;
        // A `VA` block is followed by more replies up to the `MN`.
        self.ends_with_block = false;
        Ok(false)
    }
}

/// `Ok(true)` (the reply is whole) when `found` is among `codes` (or `codes` is 0: any).
fn allowed(found: u16, codes: u16) -> Result<bool, ReplyError> {
    if codes == 0 || codes & found != 0 {
        Ok(true)
    } else {
        Err(ReplyError::Unexpected)
    }
}

/// The [`code`] of a meta reply line, None for anything else.
fn meta_code(line: &[u8]) -> Option<u16> {
    let (word, rest) = (line.get(..2)?, line.get(2..)?);
    if !matches!(rest.first(), None | Some(b' ')) {
        return None;
    }
    Some(match word {
        b"VA" => code::VA,
        b"HD" => code::HD,
        b"EN" => code::EN,
        b"NF" => code::NF,
        b"NS" => code::NS,
        b"EX" => code::EX,
        b"MN" => code::MN,
        b"ME" => code::ME,
        _ => return None,
    })
}

/// A meta hit's flags (`VA <size> <flags>*` or `HD <flags>*`): a `k<key>` flag, when there,
/// must be the key asked. A base64 key is echoed as sent or decoded, by memcached version; and
/// an item stored under a binary key (`ms ... b`) has its key echoed base64-encoded, followed
/// by a `b` flag, even to a request that named it in plain text.
fn check_meta_key(line: &[u8], expect: &Expect) -> Result<(), ReplyError> {
    let mut flags = line.split(|&b| b == b' ').skip(1);
    let Some(key) = flags.clone().find_map(|f| f.strip_prefix(b"k")) else {
        return Ok(());
    };
    let matches = |print: u64| print == expect.first || print == expect.decoded;
    if matches(key_print(key)) {
        return Ok(());
    }
    if flags.any(|f| f == b"b") {
        let mut decoded = [0u8; base64::MAX_DECODED];
        let len = base64::decode(key, &mut decoded);
        if len
            .and_then(|len| decoded.get(..len))
            .is_some_and(|key| matches(key_print(key)))
        {
            return Ok(());
        }
    }
    Err(ReplyError::WrongKey)
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
