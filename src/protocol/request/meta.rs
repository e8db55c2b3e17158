//! The meta commands with a key: `mg`, `ms`, `md`, `ma`, `me` (`mn` has no key and is handled
//! with the other keyless commands). Flags are passed through untouched; the parser only checks
//! their shape and records `q` (quiet) and `b` (base64 key).

use super::tokens::{self, Tokens};
use super::{Ctx, ParseError, Parsed};
use crate::protocol::base64;
use crate::protocol::command::Command;

/// memcached refuses meta lines of more than 20 tokens (command, key, `ms`'s datalen and the
/// flags) with `CLIENT_ERROR options flags are too long`; we refuse them too, as a bad command
/// line.
pub(super) const MAX_META_TOKENS: usize = 20;

/// `mg|md|ma|me <key> <flag>*` and `ms <key> <datalen> <flag>*` followed by the data block.
///
/// Each flag token must start with an ASCII letter (the flag) optionally followed by its
/// token, and no flag letter may repeat. With the `b` flag the key must be valid base64
/// (standard alphabet, padded) decoding to at most `max_key_length` bytes.
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
    let mut seen: u64 = 0;
    let mut quiet = false;
    let mut base64_key = false;
    for flag in toks {
        used += 1;
        let letter = flag.of(ctx.line).first().copied().unwrap_or(b' ');
        let bit = match letter {
            b'a'..=b'z' => letter - b'a',
            b'A'..=b'Z' => 26 + (letter - b'A'),
            _ => {
                ok = false;
                continue;
            }
        };
        ok &= seen & (1 << bit) == 0;
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
