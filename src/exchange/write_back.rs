//! The requests of warm_first's write-back and invalidation, and the rewriting of a cold `mg`.
//!
//! warm_first answers a warm (W) miss from the cold tier (C) and, with `write_on_miss`, copies
//! the hit into W in the background: classic hits as `add` (so a value a client wrote into W
//! meanwhile is never overwritten by an older cold copy), meta hits as `ms ... ME` (mode E is
//! meta's add). Writes that only C may answer (cas, incr, ...) invalidate W with `delete`/`md`
//! so that W refills from C on the next read.
//!
//! A meta get that goes to C must bring back what a write-back needs (the value, its client
//! flags and its remaining TTL) even when the client did not ask for them: [`mg_fill_request`]
//! adds the missing `v f t` flags and [`mg_client_reply`] takes them out again, so the client
//! reads exactly what it asked for.
//!
//! Everything here is a pure function over byte buffers. Values are never copied: a block's
//! data is a [`Bytes::slice`] of the backend's reply, sent on after a newly built header line.
//! Replies are backend input, so nothing here panics on garbage: a malformed or truncated reply
//! yields no block (or passes through unchanged) instead.

use std::iter::FusedIterator;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use crate::protocol::decimal::{is_digits, parse_i64, parse_usize};
use crate::protocol::meta_flags::Words;
pub use crate::protocol::{meta_flags, MetaFlags};
use crate::protocol::{value_header, Request};

/// memcached's largest relative TTL (30 days): anything larger is read as a unix time.
const MAX_RELATIVE_TTL: i64 = 60 * 60 * 24 * 30;

/// One classic `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n` block of a reply. Every
/// field is a slice of the reply (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueBlock {
    /// The key as the server sent it.
    pub key: Bytes,
    /// The client flags (decimal digits).
    pub flags: Bytes,
    /// The data block followed by its `\r\n` (so it can be sent on as it is).
    pub data: Bytes,
}

/// Iterator over the [`ValueBlock`]s of a classic retrieval reply; see [`value_blocks`].
#[derive(Clone, Debug)]
pub struct ValueBlocks {
    reply: Bytes,
    /// Where the next block starts.
    at: usize,
}

impl Iterator for ValueBlocks {
    type Item = ValueBlock;

    fn next(&mut self) -> Option<ValueBlock> {
        match block_at(&self.reply, self.at) {
            Some((block, end)) => {
                self.at = end;
                Some(block)
            }
            None => {
                // Fused: once the blocks end (END, garbage or truncation), nothing after that
                // point can be trusted to be a block.
                self.at = self.reply.len();
                None
            }
        }
    }
}

impl FusedIterator for ValueBlocks {}

/// The blocks of a classic `get`/`gets`/`gat`/`gats` reply, in order. Iteration stops at
/// `END`, at the end of the reply, and at the first thing that is not a well-formed block
/// (an error line, a bad token, a data block running past the end or not ended by `\r\n`).
/// Cloning `reply` is a reference count, so the blocks stay valid after it is dropped.
pub fn value_blocks(reply: &Bytes) -> ValueBlocks {
    ValueBlocks {
        reply: reply.clone(),
        at: 0,
    }
}

/// The `VALUE` block at offset `at` of `reply` and the offset just past it.
fn block_at(reply: &Bytes, at: usize) -> Option<(ValueBlock, usize)> {
    let (text, line_end) = line_at(reply, at)?;
    let header = value_header(text)?;
    let end = data_end(reply, line_end, header.size)?;
    let block = ValueBlock {
        key: slice(reply, at + header.key.0, at + header.key.1)?,
        flags: slice(reply, at + header.flags.0, at + header.flags.1)?,
        data: slice(reply, line_end, end)?,
    };
    Some((block, end))
}

/// The write-back of a classic hit: `add <key> <flags> <ttl> <len>\r\n` and the block's data
/// (the reply's slice, with its `\r\n`). `add` so that a value written into the warm tier since
/// the miss wins over this older copy; no `noreply`, because the reply is read to count the
/// write-back's success or failure. `block.data` must end with its `\r\n` (as
/// [`value_blocks`] gives it).
pub fn classic_add(block: &ValueBlock, ttl: u32) -> [Bytes; 2] {
    let len = block.data.len().saturating_sub(2);
    let mut header = BytesMut::with_capacity(4 + block.key.len() + block.flags.len() + 36);
    header.put_slice(b"add ");
    header.put_slice(&block.key);
    header.put_u8(b' ');
    header.put_slice(&block.flags);
    header.put_u8(b' ');
    put_decimal(&mut header, u64::from(ttl));
    header.put_u8(b' ');
    put_decimal(&mut header, len as u64);
    header.put_slice(b"\r\n");
    [header.freeze(), block.data.clone()]
}

/// The flags a cold `mg` must carry for a write-back: the value, its client flags and its
/// remaining TTL.
const FILL: [u8; 3] = [b'v', b'f', b't'];

/// An `mg` request line to send to the cold tier and what was added to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MgFill {
    /// The request line, ending with `\r\n`.
    pub request: Bytes,
    /// The flags (of `v f t`) the client did not ask and the line carries: the ones
    /// [`mg_client_reply`] removes from the reply.
    pub added: MetaFlags,
}

/// The cold tier's version of the client's `mg` (`request`, parsed from `bytes`, the buffer
/// that starts with it): the same line with ` v`, ` f`, ` t` appended for each of those the
/// client did not ask. Taking `bytes` as [`Bytes`] lets a line that needs nothing added go
/// out as a slice of it (no copy) when it already ends with `\r\n`; a line that ended with a
/// bare `\n`, or that is rebuilt, always ends with `\r\n`.
pub fn mg_fill_request(request: &Request, bytes: &Bytes) -> MgFill {
    let asked = meta_flags(request, bytes);
    let added = FILL
        .iter()
        .filter(|&&flag| !asked.has(flag))
        .fold(MetaFlags::EMPTY, |set, &flag| set.with(flag));
    if added.is_empty() {
        let line = bytes.get(..request.line_len).unwrap_or(&[]);
        if line.ends_with(b"\r\n") {
            if let Some(request) = slice(bytes, 0, request.line_len) {
                return MgFill { request, added };
            }
        }
    }
    // Rebuilt from the command name and the arguments span, which excludes surrounding
    // spaces and the line end: the appended flags are single-space separated whatever the
    // client's spacing was.
    let name = request.command.name().as_bytes();
    let args = request.args.of(bytes);
    let mut line = BytesMut::with_capacity(name.len() + 1 + args.len() + 2 * FILL.len() + 2);
    line.put_slice(name);
    line.put_u8(b' ');
    line.put_slice(args);
    for flag in FILL.iter().filter(|&&flag| added.has(flag)) {
        line.put_u8(b' ');
        line.put_u8(*flag);
    }
    line.put_slice(b"\r\n");
    MgFill {
        request: line.freeze(),
        added,
    }
}

/// The cold tier's reply to a filled `mg` ([`mg_fill_request`]) made into the reply to the
/// client's own request: the return-flag tokens whose letter is in `added` are removed, and
/// when `v` was added `VA <len> <flags>*\r\n<data>\r\n` becomes `HD <flags>*\r\n` (the data is
/// dropped). Other lines (`EN`, `MN`, errors) pass through unchanged, as does everything from
/// a `VA` whose data block is malformed or truncated. With nothing added this is `reply`
/// itself. The client may get both a new header and the value: those are joined into one
/// buffer here; [`mg_client_reply_parts`] gives them without copying the value.
pub fn mg_client_reply(reply: &Bytes, added: MetaFlags) -> Bytes {
    let mut parts = Vec::new();
    mg_client_reply_parts(reply, added, &mut parts);
    match parts.as_slice() {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut joined = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for part in many {
                joined.put_slice(part);
            }
            joined.freeze()
        }
    }
}

/// [`mg_client_reply`] as pieces appended to `out`, in order: rewritten header lines are new
/// buffers, everything else (the value, unchanged lines) slices of `reply`.
pub fn mg_client_reply_parts(reply: &Bytes, added: MetaFlags, out: &mut Vec<Bytes>) {
    if added.is_empty() {
        if !reply.is_empty() {
            out.push(reply.clone());
        }
        return;
    }
    // `at`: the next reply line; `kept`: the start of the unchanged bytes not yet in `out`
    // (consecutive unchanged lines go out as one slice).
    let (mut at, mut kept) = (0, 0);
    while let Some((text, line_end)) = line_at(reply, at) {
        let mut words = Words::new(text);
        let (size, end) = match words.next() {
            Some((0, b"VA")) => {
                let Some((_, size)) = words.next() else { break };
                let Some(end) = parse_usize(size).and_then(|n| data_end(reply, line_end, n)) else {
                    break;
                };
                (Some(size), end)
            }
            Some((0, b"HD")) => (None, line_end),
            _ => {
                at = line_end;
                continue;
            }
        };
        let to_hd = size.is_some() && added.has(b'v');
        let removed = |token: &[u8]| token.first().is_some_and(|&letter| added.has(letter));
        if !to_hd && !words.clone().any(|(_, token)| removed(token)) {
            at = end;
            continue;
        }
        if let Some(unchanged) = slice(reply, kept, at).filter(|s| !s.is_empty()) {
            out.push(unchanged);
        }
        let mut header = BytesMut::with_capacity(text.len() + 2);
        match size.filter(|_| !to_hd) {
            Some(size) => {
                header.put_slice(b"VA ");
                header.put_slice(size);
            }
            None => header.put_slice(b"HD"),
        }
        for (_, token) in words.filter(|(_, token)| !removed(token)) {
            header.put_u8(b' ');
            header.put_slice(token);
        }
        header.put_slice(b"\r\n");
        out.push(header.freeze());
        if !to_hd {
            if let Some(data) = slice(reply, line_end, end).filter(|s| !s.is_empty()) {
                out.push(data);
            }
        }
        at = end;
        kept = end;
    }
    if let Some(rest) = slice(reply, kept, reply.len()).filter(|s| !s.is_empty()) {
        out.push(rest);
    }
}

/// What a write-back needs of a cold `mg` hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MgHit {
    /// The client flags (decimal digits, a slice of the reply).
    pub flags: Bytes,
    /// The remaining TTL in seconds as the server gave it (`-1`: never expires), `None` when
    /// the reply has no `t` token.
    pub remaining_ttl: Option<i64>,
    /// The data block followed by its `\r\n` (a slice of the reply).
    pub data: Bytes,
}

/// The hit in a filled `mg`'s reply (`VA <len> <flags>*\r\n<data>\r\n` carrying `f<flags>`
/// and, normally, `t<ttl>`). `None` for anything else: a miss, `HD`, an error, a reply
/// without a valid `f` token or with a bad `t` token, a truncated data block, and a stale
/// item (`X`): copying a value its tier of record marked stale would serve it from the warm
/// tier as fresh, without the flag.
pub fn mg_hit(reply: &Bytes) -> Option<MgHit> {
    let (text, line_end) = line_at(reply, 0)?;
    let mut words = Words::new(text);
    if words.next()? != (0, b"VA".as_slice()) {
        return None;
    }
    let size = parse_usize(words.next()?.1)?;
    let end = data_end(reply, line_end, size)?;
    let (mut flags, mut remaining_ttl) = (None, None);
    for (start, token) in words {
        match token.split_first() {
            Some((b'f', digits)) if is_digits(digits) => {
                flags = slice(reply, start + 1, start + token.len());
            }
            Some((b'f' | b'X', _)) => return None,
            Some((b't', ttl)) => remaining_ttl = Some(parse_i64(ttl)?),
            _ => {}
        }
    }
    Some(MgHit {
        flags: flags?,
        remaining_ttl,
        data: slice(reply, line_end, end)?,
    })
}

/// The write-back of a meta hit: `ms <key> <len> F<flags> T<ttl> ME[ b]\r\n` and the hit's
/// data (the reply's slice, with its `\r\n`). `key` is the key as the client sent it, `base64`
/// whether it is base64 (the `b` flag). Mode `E` is add, for the reason given at
/// [`classic_add`].
///
/// The TTL: the copy must not outlive the cold item, nor live longer than `ttl_cap`
/// (`write_on_miss.ttl`, 0 = never expire). So it is the smaller of the remaining TTL and the
/// cap, where a remaining TTL of `-1` or none given counts as never expiring; a remaining TTL
/// of 0 or below (about to expire) becomes 1; and a TTL above 30 days is cut to 30 days,
/// which memcached would read as a unix time.
pub fn meta_add(key: &[u8], base64: bool, hit: &MgHit, ttl_cap: u32) -> [Bytes; 2] {
    let len = hit.data.len().saturating_sub(2);
    let ttl = write_back_ttl(hit.remaining_ttl, ttl_cap);
    let mut header = BytesMut::with_capacity(3 + key.len() + hit.flags.len() + 48);
    header.put_slice(b"ms ");
    header.put_slice(key);
    header.put_u8(b' ');
    put_decimal(&mut header, len as u64);
    header.put_slice(b" F");
    header.put_slice(&hit.flags);
    header.put_slice(b" T");
    put_decimal(&mut header, ttl);
    header.put_slice(b" ME");
    if base64 {
        header.put_slice(b" b");
    }
    header.put_slice(b"\r\n");
    [header.freeze(), hit.data.clone()]
}

/// The TTL of a meta write-back; see [`meta_add`]. 0 means never expire, as in memcached.
pub fn write_back_ttl(remaining: Option<i64>, cap: u32) -> u64 {
    let cap = i64::from(cap);
    let ttl = match remaining {
        None | Some(-1) => cap,
        Some(left) if left <= 0 => 1,
        Some(left) if cap == 0 => left,
        Some(left) => left.min(cap),
    };
    u64::try_from(ttl.min(MAX_RELATIVE_TTL)).unwrap_or(1)
}

/// The TTL of a classic write-back: `write_on_miss.ttl` (0: never expires), capped by the
/// lifetime the cold tier gave the value (an HTTP origin's `max-age`; 0 there is 1 second,
/// since 0 would mean forever).
pub fn capped(ttl: u32, max_age: Option<u32>) -> u32 {
    match max_age {
        None => ttl,
        Some(age) => {
            let age = age.max(1);
            if ttl == 0 {
                age
            } else {
                ttl.min(age)
            }
        }
    }
}

/// The classic invalidation of a key in the warm tier: `delete <key>\r\n`.
pub fn classic_delete(key: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(7 + key.len() + 2);
    line.put_slice(b"delete ");
    line.put_slice(key);
    line.put_slice(b"\r\n");
    line.freeze()
}

/// The meta invalidation of a key in the warm tier: `md <key>\r\n`, with ` b` when the key is
/// base64 (as the client sent it).
pub fn meta_delete(key: &[u8], base64: bool) -> Bytes {
    let mut line = BytesMut::with_capacity(3 + key.len() + 4);
    line.put_slice(b"md ");
    line.put_slice(key);
    if base64 {
        line.put_slice(b" b");
    }
    line.put_slice(b"\r\n");
    line.freeze()
}

/// The line at offset `at` of `buf` without its line end (`\n`, or `\r\n`), and the offset
/// just past the line end; `None` when no whole line is there.
fn line_at(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let newline = memchr(b'\n', rest)?;
    let line = rest.get(..newline)?;
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    Some((text, at + newline + 1))
}

/// The end of a data block of `size` bytes starting at `start` (past its `\r\n`), if all of
/// it is in `buf` and the `\r\n` is there.
fn data_end(buf: &[u8], start: usize, size: usize) -> Option<usize> {
    let end = start.checked_add(size)?.checked_add(2)?;
    (buf.get(end - 2..end)? == b"\r\n").then_some(end)
}

/// `buf[start..end]` without a copy, or `None` when the range is not inside `buf` (so that
/// [`Bytes::slice`], which panics on a bad range, is never reached with one).
fn slice(buf: &Bytes, start: usize, end: usize) -> Option<Bytes> {
    buf.get(start..end)?;
    Some(buf.slice(start..end))
}

/// Appends `n` in decimal without going through a `String`.
pub use crate::protocol::decimal::put_u64 as put_decimal;

#[cfg(test)]
#[path = "write_back_tests.rs"]
mod tests;
