//! The meta commands with a key: `mg`, `ms`, `md`, `ma`, `me` (`mn` has no key and is handled
//! with the other keyless commands).
//!
//! A meta line is forwarded as the client sent it, so the grammar accepted here is the part of
//! memcached's that every memcached 1.6 parses the same way, and no more: each command has its
//! own set of flags, a flag without a token is that one letter, a flag with a token has a token
//! of its exact kind (a number within the range memcached keeps it in, a mode letter, an opaque
//! of at most 32 printable bytes), no flag repeats, and the line has at most
//! [`MAX_META_TOKENS`] tokens. Anything else is refused before a byte is sent, its data block
//! swallowed: memcached refuses some of these lines *without* reading the data block, which
//! would then run as commands on a connection shared by other clients.

use super::tokens::{self, Number, Tokens};
use super::{Ctx, ParseError, Parsed};
use crate::protocol::base64;
use crate::protocol::command::Command;

/// memcached refuses a meta line of 20 tokens or more (it counts a terminal token, so its
/// limit of 20 leaves 19: command, key, `ms`'s datalen and the flags) with `CLIENT_ERROR
/// options flags too long`, and for `ms` it does so before reading the data block.
pub(super) const MAX_META_TOKENS: usize = 19;

/// memcached's limit on an opaque (`O`) token, the letter included.
pub(super) const MAX_OPAQUE_TOKEN: usize = 32;

/// What may follow a flag letter in its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    /// Nothing: the token is the letter alone.
    None,
    /// A decimal number of this kind.
    Number(Number),
    /// An opaque: 0 to 31 printable ASCII bytes.
    Opaque,
    /// One mode letter out of these.
    Mode(&'static [u8]),
}

/// The flags of one meta command: `(letter, what follows it)`.
type FlagTable = &'static [(u8, Arg)];

const TTL: Arg = Arg::Number(Number::I32);
const CAS: Arg = Arg::Number(Number::U64);

/// `mg`: the documented retrieval flags.
const MG_FLAGS: FlagTable = &[
    (b'b', Arg::None),
    (b'c', Arg::None),
    (b'f', Arg::None),
    (b'h', Arg::None),
    (b'k', Arg::None),
    (b'l', Arg::None),
    (b'q', Arg::None),
    (b's', Arg::None),
    (b't', Arg::None),
    (b'u', Arg::None),
    (b'v', Arg::None),
    (b'E', CAS),
    (b'N', TTL),
    (b'O', Arg::Opaque),
    (b'R', TTL),
    (b'T', TTL),
];

/// `ms`: the documented storage flags; `M` is set (S), add (E), append (A), prepend (P) or
/// replace (R) (memcached 1.6.18 refuses the lower-case letters).
const MS_FLAGS: FlagTable = &[
    (b'b', Arg::None),
    (b'c', Arg::None),
    (b'I', Arg::None),
    (b'k', Arg::None),
    (b'q', Arg::None),
    (b's', Arg::None),
    (b'C', CAS),
    (b'E', CAS),
    (b'F', Arg::Number(Number::U32)),
    (b'M', Arg::Mode(b"SEAPR")),
    (b'O', Arg::Opaque),
    (b'T', TTL),
];

/// `md`: the documented delete flags.
const MD_FLAGS: FlagTable = &[
    (b'b', Arg::None),
    (b'I', Arg::None),
    (b'k', Arg::None),
    (b'q', Arg::None),
    (b'x', Arg::None),
    (b'C', CAS),
    (b'E', CAS),
    (b'O', Arg::Opaque),
    (b'T', TTL),
];

/// `ma`: the documented arithmetic flags; `M` is incr (I, +) or decr (D, -) (memcached
/// 1.6.18 refuses the lower-case letters).
const MA_FLAGS: FlagTable = &[
    (b'b', Arg::None),
    (b'c', Arg::None),
    (b'k', Arg::None),
    (b'q', Arg::None),
    (b't', Arg::None),
    (b'v', Arg::None),
    (b'C', CAS),
    (b'D', CAS),
    (b'E', CAS),
    (b'J', CAS),
    (b'M', Arg::Mode(b"ID+-")),
    (b'N', TTL),
    (b'O', Arg::Opaque),
    (b'T', TTL),
];

/// `me`: only `b` (memcached reads nothing else on a debug line).
const ME_FLAGS: FlagTable = &[(b'b', Arg::None)];

fn flags_of(command: Command) -> FlagTable {
    match command {
        Command::MetaGet => MG_FLAGS,
        Command::MetaSet => MS_FLAGS,
        Command::MetaDelete => MD_FLAGS,
        Command::MetaArithmetic => MA_FLAGS,
        _ => ME_FLAGS,
    }
}

/// True when `token` (a flag letter and what follows it) fits `arg`.
fn token_fits(arg: Arg, token: &[u8]) -> bool {
    let rest = token.get(1..).unwrap_or(&[]);
    match arg {
        Arg::None => rest.is_empty(),
        Arg::Number(number) => number.accepts(rest),
        Arg::Opaque => {
            token.len() <= MAX_OPAQUE_TOKEN && rest.iter().all(|&b| b.is_ascii_graphic())
        }
        Arg::Mode(modes) => matches!(rest, [mode] if modes.contains(mode)),
    }
}

/// `mg|md|ma|me <key> <flag>*` and `ms <key> <datalen> <flag>*` followed by the data block.
///
/// With the `b` flag the key must be valid base64 (standard alphabet, padded) decoding to at
/// most `max_key_length` bytes.
pub(super) fn parse(ctx: &Ctx<'_>, mut toks: Tokens<'_>) -> Result<Parsed, ParseError> {
    let is_set = ctx.command == Command::MetaSet;
    let Some(key) = toks.next() else {
        return Err(ctx.bad_line());
    };
    let mut used = 2;
    let mut ok = true;
    let mut data = None;
    if is_set {
        let Some(len_token) = toks.next() else {
            return Err(ctx.bad_line());
        };
        used += 1;
        let data_len = tokens::parse_data_len(len_token.of(ctx.line));
        data = data_len.and_then(|n| Some((n, ctx.line_len.checked_add(n)?.checked_add(2)?)));
        ok &= data.is_some();
    }
    let bad = ParseError::BadCommandLine {
        skip: data.map_or(ctx.line_len, |(_, total)| total),
    };
    let table = flags_of(ctx.command);
    let mut seen: u64 = 0;
    let mut quiet = false;
    let mut base64_key = false;
    for flag in toks {
        used += 1;
        let token = flag.of(ctx.line);
        let letter = token.first().copied().unwrap_or(b' ');
        let Some(&(_, arg)) = table.iter().find(|(l, _)| *l == letter) else {
            ok = false;
            break;
        };
        let bit = match letter {
            b'a'..=b'z' => letter - b'a',
            _ => 26 + (letter - b'A'),
        };
        ok &= seen & (1 << bit) == 0 && token_fits(arg, token);
        seen |= 1 << bit;
        quiet |= letter == b'q';
        base64_key |= letter == b'b';
    }
    let key_bytes = key.of(ctx.line);
    ok &= used <= MAX_META_TOKENS && ctx.valid_key(key_bytes);
    if base64_key {
        // The same decoder the router uses, so what passes here always routes.
        let mut decoded = [0u8; base64::MAX_DECODED];
        ok &=
            base64::decode(key_bytes, &mut decoded).is_some_and(|n| n <= ctx.limits.max_key_length);
    }
    if !ok {
        return Err(bad);
    }
    let mut request = ctx.request();
    request.keys = key;
    request.key_count = 1;
    request.quiet = quiet;
    request.base64_key = base64_key;
    match data {
        Some((data_len, total)) => ctx.with_data(request, data_len, total),
        None => Ok(Parsed::Complete(request)),
    }
}
