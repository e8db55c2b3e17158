//! What the reply to one request may hold beyond its shape: the reply codes its verb can get,
//! and the keys a retrieval asked (as fingerprints). Derived once from the request line as it is
//! sent, kept per in-flight request, and checked by the framer: a backend's reply stream is
//! trusted to nothing (SPEC §6b).
//!
//! A single-key retrieval (the common case) keeps its key as a 64-bit fingerprint of its wire
//! bytes in the [`Expect`] itself: an in-flight request costs a few words. A retrieval of
//! several keys keeps where its keys start in its request line; the connection keeps the line
//! (a reference to the bytes sent, which the request's exchange holds anyway) in a FIFO beside
//! its in-flight requests and passes it back to the framer as [`Checks::line`], which walks
//! it as `VALUE` blocks come: no per-key work when the request is queued, and a comparison of
//! bytes per hit.

use memchr::memchr2;

use crate::protocol::{base64, ReplyKind};

/// Meta reply codes, one bit each, for [`Expect::codes`].
pub(super) mod code {
    pub const VA: u16 = 1 << 0;
    pub const HD: u16 = 1 << 1;
    pub const EN: u16 = 1 << 2;
    pub const NF: u16 = 1 << 3;
    pub const NS: u16 = 1 << 4;
    pub const EX: u16 = 1 << 5;
    pub const MN: u16 = 1 << 6;
    pub const ME: u16 = 1 << 7;
    // Classic single-line replies.
    pub const STORED: u16 = 1 << 8;
    pub const NOT_STORED: u16 = 1 << 9;
    pub const EXISTS: u16 = 1 << 10;
    pub const NOT_FOUND: u16 = 1 << 11;
    pub const DELETED: u16 = 1 << 12;
    pub const TOUCHED: u16 = 1 << 13;
    pub const OK: u16 = 1 << 14;
    /// A number (`incr`/`decr`), `RESET` or `VERSION ...`: the rest of what a line can be.
    pub const OTHER: u16 = 1 << 15;
}

/// What the reply of one request may contain beyond its [`ReplyKind`]. `Copy` and small: it
/// travels in the connection's in-flight record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Reply codes ([`code`]) the request's verb can get besides error lines; 0: any code the
    /// reply kind allows (a verb this table does not know).
    pub(super) codes: u16,
    /// Keys whose VALUE blocks must match, in the order asked: 0 not checked (unless
    /// `retrieval`), 1 the key whose print is `first`, 2 two or more, read from the request
    /// line from `keys_at` on ([`Checks::line`]).
    pub(super) keys: u32,
    /// With `keys` 2: where the keys start in the request line.
    pub(super) keys_at: u32,
    /// A classic retrieval whose keys were read: with `keys` 0 (a line without keys, which the
    /// proxy never sends), no `VALUE` block fits.
    pub(super) retrieval: bool,
    /// For a meta get: the reply's `k` flag, when present, must be the key asked.
    pub(super) meta_key: bool,
    /// Fingerprint of the first key asked.
    pub(super) first: u64,
    /// For a meta get of a base64 key (`b` flag): the print of the decoded key, which is what
    /// memcached 1.6.18 echoes in `k` (later versions echo the key as sent); else `first`.
    pub(super) decoded: u64,
}

/// An [`Expect`] and, for a retrieval of several keys, its request line (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks<'a> {
    /// What the reply may hold.
    pub expect: Expect,
    /// With [`Expect::walks_line`]: the request as sent, starting with its line (empty
    /// otherwise).
    pub line: &'a [u8],
}

impl Expect {
    /// Nothing checked beyond the reply's shape.
    pub const ANY: Expect = Expect {
        codes: 0,
        keys: 0,
        keys_at: 0,
        retrieval: false,
        meta_key: false,
        first: 0,
        decoded: 0,
    };

    /// True for a retrieval of several keys: its reply is checked against its request line,
    /// which the caller keeps until the reply is whole and passes as [`Checks::line`].
    pub fn walks_line(&self) -> bool {
        self.keys >= 2
    }

    /// The expectation for `request` (the bytes sent, starting with the request line) framed
    /// as `kind`. A line this does not recognise gets [`Expect::ANY`]-like checks: only its
    /// reply kind is enforced.
    #[inline]
    pub fn of(kind: ReplyKind, request: &[u8]) -> Expect {
        // This runs for every request: the commonest, `get <key>\r\n`, takes one memchr2 over
        // its key and its print; other verbs are found with a short scan, and only the requests whose keys
        // are checked look further (with memchr, not byte by byte).
        if kind == ReplyKind::Retrieval {
            let key = request
                .strip_prefix(b"get ")
                .and_then(|rest| rest.strip_suffix(b"\r\n"));
            if let Some(key) = key {
                // One key: no space (a multi-get) and no `\n` (more than one line) in it.
                if !key.is_empty() && memchr2(b' ', b'\n', key).is_none() {
                    return Expect {
                        keys: 1,
                        first: key_print(key),
                        ..Expect::ANY
                    };
                }
            }
        }
        let verb_end = request
            .iter()
            .take(VERB_SCAN)
            .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
            .unwrap_or(request.len().min(VERB_SCAN));
        let verb = request.get(..verb_end).unwrap_or_default();
        let mut expect = Expect {
            codes: codes_of(verb, kind == ReplyKind::UntilNoop),
            ..Expect::ANY
        };
        let keyed = match (kind, verb) {
            (ReplyKind::Retrieval, b"get" | b"gets" | b"gat" | b"gats") => true,
            (ReplyKind::Meta | ReplyKind::UntilNoop, b"mg") => false,
            _ => return expect,
        };
        let mut tokens = Tokens(request.get(verb_end..).unwrap_or_default());
        if !keyed {
            // mg <key> <flags>*
            if let Some(key) = tokens.next() {
                expect.first = key_print(key);
                expect.decoded = expect.first;
                expect.meta_key = true;
                if tokens.any(|flag| flag == b"b") {
                    let mut decoded = [0u8; base64::MAX_DECODED];
                    let len = base64::decode(key, &mut decoded);
                    match len.and_then(|len| decoded.get(..len)) {
                        Some(key) => expect.decoded = key_print(key),
                        // Not base64: memcached refuses it with an error line.
                        None => expect.meta_key = false,
                    }
                }
            }
            return expect;
        }
        if verb.starts_with(b"gat") {
            tokens.next(); // the exptime
        }
        expect.retrieval = true;
        let Some(first) = tokens.next() else {
            return expect;
        };
        if tokens.next().is_none() {
            expect.keys = 1;
            expect.first = key_print(first);
        } else {
            // `first` borrows from `request`: the address difference is its offset.
            let at = (first.as_ptr() as usize).wrapping_sub(request.as_ptr() as usize);
            if let Ok(at) = u32::try_from(at) {
                expect.keys = 2;
                expect.keys_at = at;
            }
        }
        expect
    }
}

/// Bytes looked at for the verb: the longest one (`flush_all`, `verbosity`) and its space.
const VERB_SCAN: usize = 10;

/// The space-separated tokens of the request line at the start of some bytes (runs of spaces
/// collapse; the line ends at `\n`, a `\r` before it is not part of the last token). Each
/// token's end is found with one memchr2: keys are long enough that a SIMD search beats a byte
/// loop, and the line's end needs no search of its own.
struct Tokens<'a>(&'a [u8]);

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.0.iter().position(|&b| b != b' ')?;
        let rest = self.0.get(start..)?;
        let (end, last) = match memchr2(b' ', b'\n', rest) {
            Some(end) => (end, rest.get(end) == Some(&b'\n')),
            None => (rest.len(), true),
        };
        self.0 = if last {
            &[]
        } else {
            rest.get(end..).unwrap_or_default()
        };
        let token = rest.get(..end)?;
        let token = if last {
            token.strip_suffix(b"\r").unwrap_or(token)
        } else {
            token
        };
        (!token.is_empty()).then_some(token)
    }
}

/// The reply codes `verb` can get (0: unknown verb, anything its kind allows). `quiet`: the
/// request is `noreply` or a quiet meta request, followed by `mn`: a classic command then
/// answers nothing but errors, a meta one only what quiet mode does not hide (besides `MN`).
fn codes_of(verb: &[u8], quiet: bool) -> u16 {
    use code::*;
    let meta = |codes: u16| if quiet { codes | MN } else { codes };
    match verb {
        b"get" | b"gets" | b"gat" | b"gats" | b"stats" => 0,
        _ if quiet && !verb.starts_with(b"m") => MN,
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            STORED | NOT_STORED | EXISTS | NOT_FOUND
        }
        b"delete" => DELETED | NOT_FOUND,
        b"incr" | b"decr" => OTHER | NOT_FOUND,
        b"touch" => TOUCHED | NOT_FOUND,
        b"flush_all" | b"verbosity" => OK,
        b"version" => OTHER,
        b"mg" => meta(VA | HD | EN),
        b"ms" => meta(HD | NS | EX | NF),
        b"md" => meta(HD | NF | EX),
        b"ma" => meta(VA | HD | NF | NS | EX),
        b"mn" => MN,
        b"me" => meta(ME | EN),
        _ => 0,
    }
}

/// A 64-bit fingerprint of `key`'s bytes (its length mixed in), eight bytes per step: cheap
/// enough for the hot path, and two different keys of one stream share a print with odds of
/// about 2^-64.
pub fn key_print(key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let word = |bytes: Option<&[u8]>| {
        bytes
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let h = (key.len() as u64).wrapping_mul(K);
    if key.len() < 8 {
        let short = key.iter().fold(0u64, |w, &b| (w << 8) | u64::from(b));
        return step(h, short);
    }
    let mut chunks = key.chunks_exact(8);
    let mut h = (&mut chunks).fold(h, |h, chunk| step(h, word(Some(chunk))));
    if !chunks.remainder().is_empty() {
        // The last eight bytes, overlapping the last whole word: no copy of a partial word
        // (the length, mixed in first, tells keys that differ only there apart).
        h = step(h, word(key.get(key.len() - 8..)));
    }
    h
}

/// The next key of a request line at or after `pos` (spaces skipped; the line ends at `\r` or
/// `\n`) and the position just after it, or None at the line's end.
pub(super) fn next_key(line: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = line.get(pos..)?;
    let start = rest.iter().position(|&b| b != b' ')?;
    let rest = rest.get(start..)?;
    if matches!(rest.first(), None | Some(b'\r' | b'\n')) {
        return None;
    }
    let len = memchr::memchr3(b' ', b'\r', b'\n', rest).unwrap_or(rest.len());
    Some((rest.get(..len)?, pos + start + len))
}

/// When the next key of a request line at or after `pos` (spaces skipped) is `key`: the
/// position just after it. A comparison of bytes, without looking for the token's end first.
pub(super) fn key_at(line: &[u8], pos: usize, key: &[u8]) -> Option<usize> {
    let rest = line.get(pos..)?;
    let start = rest.iter().position(|&b| b != b' ')?;
    let end = start.checked_add(key.len())?;
    let ends_there = matches!(rest.get(end), Some(b' ' | b'\r' | b'\n') | None);
    (rest.get(start..end)? == key && ends_there).then_some(pos + end)
}
