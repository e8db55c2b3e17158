//! Splitting a multi-key retrieval (`get`/`gets`/`gat`/`gats`) across the servers that own its
//! keys, and merging their replies back into one, with hits in the order the keys were asked
//! and a single `END`.
//!
//! The merge relies on memcached answering the keys of one request in the order they were
//! asked (misses left out, a key asked twice answered twice): for each key asked, in order, the
//! next `VALUE` block of the reply of the server that key went to either is that key (a hit,
//! passed on as a slice of the server's reply, no copy) or is not (a miss).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::reply::framed_value;
use crate::protocol::{Command, Request};

/// `END\r\n`, the one terminator of a merged reply.
pub const END: &[u8] = b"END\r\n";

/// One key of a split retrieval as asked: where it lies in the request's bytes, and which
/// fragment it went out in. Kept so the merge need not scan the request line again.
#[derive(Clone, Copy, Debug)]
pub struct AskedKey {
    start: usize,
    end: usize,
    /// The fragment (part) the key was sent in; `usize::MAX` when none (no route: a miss).
    pub part: usize,
}

impl AskedKey {
    /// `key`, a slice of `bytes`, sent in fragment `part`.
    pub fn new(bytes: &[u8], key: &[u8], part: usize) -> AskedKey {
        // `key` borrows from `bytes` (the parser's spans), so the address difference is its
        // offset; a slice from elsewhere would give a range that `key()` rejects.
        let start = (key.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
        AskedKey {
            start,
            end: start.saturating_add(key.len()),
            part,
        }
    }

    /// The same key, sent in fragment `part`.
    pub fn with_part(self, part: usize) -> AskedKey {
        AskedKey { part, ..self }
    }

    /// Where the key lies in the request's bytes.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    /// The key's bytes in `bytes` (empty if out of range).
    pub fn key<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        bytes.get(self.start..self.end).unwrap_or(&[])
    }
}

/// The `<exptime>` of a `gat`/`gats` (its first argument), or None for `get`/`gets`.
fn exptime<'a>(request: &Request, original: &'a [u8]) -> Option<&'a [u8]> {
    matches!(request.command, Command::Gat | Command::Gats)
        .then(|| request.args.of(original))
        .and_then(|args| args.split(|&b| b == b' ').next())
}

/// Builds the request line of each part of a split retrieval: `<cmd> [<exptime>] <key>...\r\n`
/// with the keys `asked` assigned to that part, in the order asked. All lines share one
/// allocation; `out` receives, per part in order, its line and its number of keys. `lens` is
/// scratch space (both are reused across calls by the caller).
pub fn build_lines(
    request: &Request,
    original: &[u8],
    asked: &[AskedKey],
    parts: usize,
    lens: &mut Vec<(usize, usize)>,
    out: &mut Vec<(Bytes, usize)>,
) {
    let name = request.command.name().as_bytes();
    let exptime = exptime(request, original);
    let header = name.len() + exptime.map_or(0, |e| e.len() + 1);
    lens.clear();
    lens.resize(parts, (header + 2, 0));
    for key in asked {
        if let Some((len, keys)) = lens.get_mut(key.part) {
            *len += 1 + (key.end - key.start);
            *keys += 1;
        }
    }
    let mut buf = BytesMut::with_capacity(lens.iter().map(|(len, _)| len).sum());
    for (part, &(len, keys)) in lens.iter().enumerate() {
        buf.put_slice(name);
        if let Some(exptime) = exptime {
            buf.put_u8(b' ');
            buf.put_slice(exptime);
        }
        for key in asked.iter().filter(|k| k.part == part) {
            buf.put_u8(b' ');
            buf.put_slice(key.key(original));
        }
        buf.put_slice(b"\r\n");
        out.push((buf.split_to(len.min(buf.len())).freeze(), keys));
    }
}

/// The length of the `VALUE` block at the start of `reply` when it holds `key`. The framer has
/// already checked the block's shape; this only reads the key and the `<bytes>` count.
fn value_block_of(reply: &[u8], key: &[u8]) -> Option<usize> {
    // Most blocks are another key's: compare the key before reading the line.
    let rest = reply.strip_prefix(b"VALUE ")?.strip_prefix(key)?;
    if rest.first() != Some(&b' ') {
        return None;
    }
    let (size, header) = framed_value(reply, key.len())?;
    let total = header.checked_add(size)?.checked_add(2)?;
    (total <= reply.len()).then_some(total)
}

/// For each of `keys` (the keys one server was asked for, in the order asked), whether
/// `reply` (that server's whole reply) holds its `VALUE` block; appended to `out`.
pub fn hits<'a>(reply: &[u8], keys: impl Iterator<Item = &'a [u8]>, out: &mut Vec<bool>) {
    let mut cursor = 0;
    for key in keys {
        match reply
            .get(cursor..)
            .and_then(|rest| value_block_of(rest, key))
        {
            Some(len) => {
                cursor += len;
                out.push(true);
            }
            None => out.push(false),
        }
    }
}

/// For each of `keys` (the keys one server was asked for, in the order asked), where its
/// `VALUE` block lies in `reply` (start and length), or None when the reply does not hold it;
/// appended to `out`.
pub fn block_ranges<'a>(
    reply: &[u8],
    keys: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<Option<(usize, usize)>>,
) {
    let mut cursor = 0;
    for key in keys {
        match reply
            .get(cursor..)
            .and_then(|rest| value_block_of(rest, key))
        {
            Some(len) => {
                out.push(Some((cursor, len)));
                cursor += len;
            }
            None => out.push(None),
        }
    }
}

/// Merges one window of asked keys: their replies (`replies`, indexed by the keys' parts) are
/// appended to `out` in the asked order without the `END` (see [`merge`]), then let go.
pub fn merge_window(
    out: &mut Vec<Bytes>,
    window: &[AskedKey],
    bytes: &[u8],
    replies: &mut [Bytes],
) {
    let keys = window.iter().map(|k| (k.key(bytes), k.part));
    merge(out, keys, replies);
    replies.iter_mut().for_each(|r| *r = Bytes::new());
}

/// Merges the replies of the fragments of a split retrieval.
///
/// `keys` are the keys as asked, each with the index of the fragment (part) it was sent in;
/// `parts` holds each fragment's whole reply (`VALUE` blocks then `END`, or an error line, or
/// `END` alone for a failed server). Appends the slices to send to `out` (the caller's reused
/// list: no allocation per merge); the final `END` is the caller's to add.
pub fn merge<'a>(
    out: &mut Vec<Bytes>,
    keys: impl Iterator<Item = (&'a [u8], usize)>,
    parts: &[Bytes],
) {
    // Cursors on the stack for the usual handful of servers.
    let mut inline = [0usize; 16];
    let mut heap = Vec::new();
    let cursors: &mut [usize] = match inline.get_mut(..parts.len()) {
        Some(cursors) => cursors,
        None => {
            heap.resize(parts.len(), 0);
            &mut heap
        }
    };
    // Consecutive hits from the same server are contiguous in its reply: send them as one slice
    // (fewer reference counts to touch, fewer iovecs to write). `run` = (part, start of run).
    let mut run: Option<(usize, usize)> = None;
    for (key, part) in keys {
        let (Some(reply), Some(&cursor)) = (parts.get(part), cursors.get(part)) else {
            continue;
        };
        let Some(len) = reply
            .get(cursor..)
            .and_then(|rest| value_block_of(rest, key))
        else {
            continue;
        };
        match run {
            Some((run_part, _)) if run_part == part => {}
            _ => {
                flush_run(out, run, parts, cursors);
                run = Some((part, cursor));
            }
        }
        if let Some(c) = cursors.get_mut(part) {
            *c += len;
        }
    }
    flush_run(out, run, parts, cursors);
}

/// Appends the slice of a run of hits (from its start to its part's cursor).
fn flush_run(
    out: &mut Vec<Bytes>,
    run: Option<(usize, usize)>,
    parts: &[Bytes],
    cursors: &[usize],
) {
    if let Some((part, start)) = run {
        if let (Some(reply), Some(&end)) = (parts.get(part), cursors.get(part)) {
            out.push(reply.slice(start..end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_request, Limits, Parsed};

    fn parse(line: &[u8]) -> Request {
        match parse_request(line, &Limits::default()) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn lines(original: &[u8], parts_of_keys: &[usize], parts: usize) -> Vec<(Bytes, usize)> {
        let request = parse(original);
        let asked: Vec<AskedKey> = request
            .keys(original)
            .zip(parts_of_keys)
            .map(|(key, &part)| AskedKey::new(original, key, part))
            .collect();
        let (mut lens, mut out) = (Vec::new(), Vec::new());
        build_lines(&request, original, &asked, parts, &mut lens, &mut out);
        out
    }

    #[test]
    fn request_lines_keep_the_command_and_exptime() {
        let out = lines(b"gats 300 a b c\r\n", &[0, 1, 0], 2);
        assert_eq!(&out[0].0[..], b"gats 300 a c\r\n");
        assert_eq!(out[0].1, 2);
        assert_eq!(&out[1].0[..], b"gats 300 b\r\n");
        let out = lines(b"get x y zz\r\n", &[1, usize::MAX, 0], 2);
        assert_eq!(&out[0].0[..], b"get zz\r\n");
        assert_eq!(&out[1].0[..], b"get x\r\n");
    }

    /// The merged reply of `keys` over `parts`, with its `END`.
    fn merge_all<'a>(keys: impl Iterator<Item = (&'a [u8], usize)>, parts: &[Bytes]) -> Vec<Bytes> {
        let mut out = Vec::new();
        merge(&mut out, keys, parts);
        out.push(Bytes::from_static(END));
        out
    }

    #[test]
    fn merge_orders_hits_as_asked_and_answers_repeats() {
        // Asked: a(0) b(1) c(0) a(0) d(1); server 0 has a, c; server 1 has nothing of b, d.
        let part0 = Bytes::from_static(
            b"VALUE a 0 1\r\n1\r\nVALUE c 5 3\r\nEND\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
        );
        let part1 = Bytes::from_static(b"VALUE d 0 2\r\nhi\r\nEND\r\n");
        let keys: [(&[u8], usize); 5] = [(b"a", 0), (b"b", 1), (b"c", 0), (b"a", 0), (b"d", 1)];
        let merged = merge_all(keys.into_iter(), &[part0, part1]);
        // a c a are one run from server 0 (b, a miss, sends nothing), then d, then END.
        assert_eq!(merged.len(), 3, "{merged:?}");
        let merged: Vec<u8> = merged.concat();
        assert_eq!(
            merged,
            b"VALUE a 0 1\r\n1\r\nVALUE c 5 3\r\nEND\r\nVALUE a 0 1\r\n1\r\nVALUE d 0 2\r\nhi\r\nEND\r\n"
        );
    }

    #[test]
    fn failed_or_erroring_parts_become_misses() {
        let part0 = Bytes::from_static(b"SERVER_ERROR out of memory\r\n");
        let part1 = Bytes::from_static(b"VALUE b 0 1\r\nx\r\nEND\r\n");
        let keys: [(&[u8], usize); 2] = [(b"a", 0), (b"b", 1)];
        let merged: Vec<u8> = merge_all(keys.into_iter(), &[part0, part1]).concat();
        assert_eq!(merged, b"VALUE b 0 1\r\nx\r\nEND\r\n");
        let merged: Vec<u8> = merge_all(keys.into_iter(), &[]).concat();
        assert_eq!(merged, b"END\r\n");
    }

    #[test]
    fn value_blocks_are_read_for_their_exact_key() {
        let reply = b"VALUE ab 7 3 99\r\nxyz\r\nEND\r\n";
        assert_eq!(value_block_of(reply, b"ab"), Some(22));
        assert_eq!(value_block_of(reply, b"a"), None);
        assert_eq!(value_block_of(reply, b"abc"), None);
        assert_eq!(value_block_of(b"VALUE k 0 0\r\n\r\n", b"k"), Some(15));
        assert_eq!(value_block_of(b"VALUE k 0 5\r\nab", b"k"), None);
        assert_eq!(value_block_of(b"END\r\n", b"k"), None);
    }

    #[test]
    fn truncated_blocks_are_not_passed_on() {
        let part0 = Bytes::from_static(b"VALUE a 0 10\r\nabc");
        let keys: [(&[u8], usize); 1] = [(b"a", 0)];
        assert_eq!(merge_all(keys.into_iter(), &[part0]).concat(), b"END\r\n");
    }
}
