//! Splitting a multi-key retrieval (`get`/`gets`/`gat`/`gats`) across the servers that own its
//! keys, and merging their replies back into one, with hits in the order the keys were asked
//! and a single `END`.
//!
//! The merge relies on memcached answering the keys of one request in the order they were
//! asked (misses left out, a key asked twice answered twice): for each key asked, in order, the
//! next `VALUE` block of the reply of the server that key went to either is that key (a hit,
//! passed on as a slice of the server's reply, no copy) or is not (a miss).

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use crate::protocol::{Command, Request};

/// `END\r\n`, the one terminator of a merged reply.
pub const END: &[u8] = b"END\r\n";

/// One server's share of a split retrieval: its request line, built key by key.
pub struct SubRequest {
    line: BytesMut,
    /// Keys added so far.
    pub keys: usize,
}

impl SubRequest {
    /// Starts the line `<cmd> [<exptime>]` of `request` (whose bytes are `original`), with room
    /// for about `capacity` bytes of keys.
    pub fn new(request: &Request, original: &[u8], capacity: usize) -> SubRequest {
        let mut line = BytesMut::with_capacity(capacity + 16);
        line.put_slice(request.command.name().as_bytes());
        if matches!(request.command, Command::Gat | Command::Gats) {
            // The exptime is the first argument; the keys follow it.
            let args = request.args.of(original);
            let exptime = args.split(|&b| b == b' ').next().unwrap_or(b"0");
            line.put_u8(b' ');
            line.put_slice(exptime);
        }
        SubRequest { line, keys: 0 }
    }

    /// Appends one key.
    pub fn push(&mut self, key: &[u8]) {
        self.line.put_u8(b' ');
        self.line.put_slice(key);
        self.keys += 1;
    }

    /// The finished request line.
    pub fn finish(mut self) -> Bytes {
        self.line.put_slice(b"\r\n");
        self.line.freeze()
    }
}

/// The key and total length of the `VALUE` block at the start of `reply`, if there is one.
fn value_block(reply: &[u8]) -> Option<(&[u8], usize)> {
    let rest = reply.strip_prefix(b"VALUE ")?;
    let newline = memchr(b'\n', rest)?;
    let header = rest.get(..newline)?;
    let header = header.strip_suffix(b"\r").unwrap_or(header);
    let mut tokens = header.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let key = tokens.next()?;
    let _flags = tokens.next()?;
    let size: usize = std::str::from_utf8(tokens.next()?).ok()?.parse().ok()?;
    let total = 6usize
        .checked_add(newline)?
        .checked_add(1)?
        .checked_add(size)?
        .checked_add(2)?;
    (total <= reply.len()).then_some((key, total))
}

/// Merges the replies of the fragments of a split retrieval.
///
/// `keys` are the keys as asked, each with the index of the fragment (part) it was sent in;
/// `parts` holds each fragment's whole reply (`VALUE` blocks then `END`, or an error line, or
/// `END` alone for a failed server). Returns the slices to send, ending with `END`.
pub fn merge<'a>(keys: impl Iterator<Item = (&'a [u8], usize)>, parts: &[Bytes]) -> Vec<Bytes> {
    let mut cursors = vec![0usize; parts.len()];
    let mut out = Vec::new();
    for (key, part) in keys {
        let (Some(reply), Some(cursor)) = (parts.get(part), cursors.get_mut(part)) else {
            continue;
        };
        let Some(rest) = reply.get(*cursor..) else {
            continue;
        };
        if let Some((block_key, len)) = value_block(rest) {
            if block_key == key {
                out.push(reply.slice(*cursor..*cursor + len));
                *cursor += len;
            }
        }
    }
    out.push(Bytes::from_static(END));
    out
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

    fn sub_request(original: &[u8], keys: &[&[u8]]) -> Bytes {
        let request = parse(original);
        let mut sub = SubRequest::new(&request, original, 8);
        keys.iter().for_each(|k| sub.push(k));
        assert_eq!(sub.keys, keys.len());
        sub.finish()
    }

    #[test]
    fn request_lines_keep_the_command_and_exptime() {
        assert_eq!(
            &sub_request(b"gats 300 a b c\r\n", &[b"a", b"c"])[..],
            b"gats 300 a c\r\n"
        );
        assert_eq!(&sub_request(b"get x y\r\n", &[b"y"])[..], b"get y\r\n");
    }

    #[test]
    fn merge_orders_hits_as_asked_and_answers_repeats() {
        // Asked: a(0) b(1) c(0) a(0) d(1); server 0 has a, c; server 1 has nothing of b, d.
        let part0 = Bytes::from_static(
            b"VALUE a 0 1\r\n1\r\nVALUE c 5 3\r\nEND\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
        );
        let part1 = Bytes::from_static(b"VALUE d 0 2\r\nhi\r\nEND\r\n");
        let keys: [(&[u8], usize); 5] = [(b"a", 0), (b"b", 1), (b"c", 0), (b"a", 0), (b"d", 1)];
        let merged: Vec<u8> = merge(keys.into_iter(), &[part0, part1]).concat();
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
        let merged: Vec<u8> = merge(keys.into_iter(), &[part0, part1]).concat();
        assert_eq!(merged, b"VALUE b 0 1\r\nx\r\nEND\r\n");
        let merged: Vec<u8> = merge(keys.into_iter(), &[]).concat();
        assert_eq!(merged, b"END\r\n");
    }

    #[test]
    fn truncated_blocks_are_not_passed_on() {
        let part0 = Bytes::from_static(b"VALUE a 0 10\r\nabc");
        let keys: [(&[u8], usize); 1] = [(b"a", 0)];
        assert_eq!(merge(keys.into_iter(), &[part0]).concat(), b"END\r\n");
    }
}
