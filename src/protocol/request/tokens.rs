//! Tokenizing and number parsing for command lines, in place and without allocation.

use memchr::memchr;

use super::Span;

/// The space-separated tokens of a line, as spans into it. Runs of spaces collapse and leading
/// or trailing spaces produce no empty tokens, as in memcached's tokenizer.
#[derive(Clone, Debug)]
pub(super) struct Tokens<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    /// Tokens of `line` starting at offset `pos`.
    pub(super) fn new(line: &'a [u8], pos: usize) -> Self {
        Tokens { line, pos }
    }

    /// Offset where the next token search starts (just after the last token returned).
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Collects up to `N` tokens into an array and returns how many tokens there were in all
    /// (which may exceed `N`: the extra ones are counted, not stored).
    pub(super) fn collect_n<const N: usize>(&mut self) -> ([Span; N], usize) {
        let mut out = [Span::default(); N];
        let mut count = 0;
        for span in self.by_ref() {
            if let Some(slot) = out.get_mut(count) {
                *slot = span;
            }
            count += 1;
        }
        (out, count)
    }
}

impl Iterator for Tokens<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        let rest = self.line.get(self.pos..)?;
        let skip = rest.iter().position(|&b| b != b' ')?;
        let start = self.pos + skip;
        let tail = self.line.get(start..)?;
        let len = memchr(b' ', tail).unwrap_or(tail.len());
        self.pos = start + len;
        Some(Span {
            start,
            end: start + len,
        })
    }
}

/// The span of `line[from..]` with leading and trailing spaces removed; an empty span at
/// `from` when nothing but spaces remains.
pub(super) fn trimmed(line: &[u8], from: usize) -> Span {
    let rest = line.get(from..).unwrap_or(&[]);
    match rest.iter().position(|&b| b != b' ') {
        None => Span {
            start: from,
            end: from,
        },
        Some(first) => {
            let last = rest.iter().rposition(|&b| b != b' ').unwrap_or(first);
            Span {
                start: from + first,
                end: from + last + 1,
            }
        }
    }
}

/// Which kind of number a token must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Number {
    /// Unsigned 32-bit decimal (client flags, verbosity level).
    U32,
    /// Unsigned 64-bit decimal (cas unique, incr/decr delta).
    U64,
    /// Signed 32-bit decimal, `-` allowed: exptimes and TTLs (`set`, `touch`, `gat`,
    /// `flush_all`, meta `T`/`N`/`R`). memcached keeps these in 32-bit integers, and some of
    /// its versions refuse a wider one *without swallowing the data block*, so a wider number
    /// is refused here before anything is sent.
    I32,
}

impl Number {
    /// True when `token` is a valid number of this kind.
    pub(super) fn accepts(self, token: &[u8]) -> bool {
        match self {
            Number::U32 => parse_u64(token).is_some_and(|n| n <= u64::from(u32::MAX)),
            Number::U64 => parse_u64(token).is_some(),
            Number::I32 => parse_i64(token).is_some_and(|n| i32::try_from(n).is_ok()),
        }
    }
}

/// The largest data block length accepted on a command line. memcached keeps the length in a
/// signed 32-bit integer and refuses `> INT_MAX - 2` as a bad command line; so do we, which
/// also bounds how much a refused request can make the proxy swallow.
pub(super) const MAX_DATA_LEN: u64 = i32::MAX as u64 - 2;

pub(super) use crate::protocol::decimal::{parse_i64, parse_u64};

/// Parses a data block length (`<bytes>` / `<datalen>`), bounded by [`MAX_DATA_LEN`].
pub(super) fn parse_data_len(token: &[u8]) -> Option<usize> {
    parse_u64(token)
        .filter(|&n| n <= MAX_DATA_LEN)
        .and_then(|n| usize::try_from(n).ok())
}
