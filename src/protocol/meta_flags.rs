//! The flags of a meta request: which letters its tokens after the key start with, and the
//! space-separated tokens of a line as memcached's tokenizer sees them.

use memchr::memchr;

use crate::protocol::Request;

/// A set of meta flag letters (`a`-`z`, `A`-`Z`), one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaFlags(u64);

impl MetaFlags {
    /// No flags.
    pub const EMPTY: MetaFlags = MetaFlags(0);

    /// The bit of `letter`, or `None` for a byte that is not a flag letter.
    fn bit(letter: u8) -> Option<u64> {
        match letter {
            b'a'..=b'z' => Some(1 << (letter - b'a')),
            b'A'..=b'Z' => Some(1 << (26 + (letter - b'A'))),
            _ => None,
        }
    }

    /// True when `letter` is in the set (always false for a byte that is not a letter).
    pub fn has(self, letter: u8) -> bool {
        MetaFlags::bit(letter).is_some_and(|bit| self.0 & bit != 0)
    }

    /// The set with `letter` added (unchanged when `letter` is not a letter).
    #[must_use]
    pub fn with(self, letter: u8) -> MetaFlags {
        MetaFlags(self.0 | MetaFlags::bit(letter).unwrap_or(0))
    }

    /// True when no flag is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The flag letters of a meta request (`request`, parsed from `bytes`): the first byte of
/// each token after the key (`T30` is `T`, `O123` is `O`). Tokens that do not start with a
/// letter are not flags and are left out (such as `ms`'s `<datalen>`).
pub fn meta_flags(request: &Request, bytes: &[u8]) -> MetaFlags {
    Words::new(request.args.of(bytes))
        .skip(1)
        .filter_map(|(_, token)| token.first().copied())
        .fold(MetaFlags::EMPTY, MetaFlags::with)
}

/// The space-separated tokens of a line with their offsets in it (runs of spaces collapse,
/// as in memcached's tokenizer).
#[derive(Clone, Debug)]
pub struct Words<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Words<'a> {
    pub fn new(line: &'a [u8]) -> Words<'a> {
        Words { line, at: 0 }
    }
}

impl<'a> Iterator for Words<'a> {
    /// The token's offset in the line, and the token.
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<(usize, &'a [u8])> {
        let rest = self.line.get(self.at..)?;
        let start = self.at + rest.iter().position(|&b| b != b' ')?;
        let tail = self.line.get(start..)?;
        let len = memchr(b' ', tail).unwrap_or(tail.len());
        self.at = start + len;
        Some((start, tail.get(..len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_request, Limits, Parsed};

    fn parse(bytes: &[u8]) -> Request {
        match parse_request(bytes, &Limits::default()) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn meta_flags_are_the_first_letters_of_the_tokens_after_the_key() {
        let line = b"mg fkey T30 v O123 k q b\r\n";
        let request = parse(b"mg Zm9v T30 v O123 k q b\r\n");
        let flags = meta_flags(&request, b"mg Zm9v T30 v O123 k q b\r\n");
        for letter in *b"TvOkqb" {
            assert!(flags.has(letter), "{}", letter as char);
        }
        for letter in *b"ftcZ3 " {
            assert!(!flags.has(letter), "{}", letter as char);
        }
        // The key is not a flag even when it starts with a flag letter.
        let request = parse(line);
        assert!(!meta_flags(&request, line).has(b'f'));
        // `ms`'s datalen is not a flag; its flags are.
        let set = b"ms k 2 F5 T0\r\nhi\r\n";
        let flags = meta_flags(&parse(set), set);
        assert!(flags.has(b'F') && flags.has(b'T') && !flags.has(b'2'));
        assert_eq!(flags, MetaFlags::EMPTY.with(b'F').with(b'T'));
        let bare = b"mg k\r\n";
        assert!(meta_flags(&parse(bare), bare).is_empty());
    }

    #[test]
    fn meta_flags_set_ignores_non_letters() {
        let flags = MetaFlags::EMPTY.with(b'0').with(b' ').with(0xff);
        assert!(flags.is_empty());
        assert!(MetaFlags::EMPTY.with(b'z').has(b'z'));
        assert!(MetaFlags::EMPTY.with(b'Z').has(b'Z'));
        assert!(!MetaFlags::EMPTY.with(b'Z').has(b'z'));
        assert_eq!(MetaFlags::default(), MetaFlags::EMPTY);
    }
}
