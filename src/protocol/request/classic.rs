//! The classic (pre-meta) commands: retrieval, storage, delete, incr/decr, touch, flush_all
//! and verbosity. Each function gets the line context and the tokens after the command name.

use super::tokens::{self, Number, Tokens};
use super::{Ctx, ParseError, Parsed, Span};

/// The `noreply` token.
const NOREPLY: &[u8] = b"noreply";

/// `get|gets <key>+` and, with `with_exptime`, `gat|gats <exptime> <key>+`.
///
/// Without any key the reply is `ERROR`, as memcached gives for a too-short retrieval line.
pub(super) fn retrieval(
    ctx: &Ctx<'_>,
    mut toks: Tokens<'_>,
    with_exptime: bool,
) -> Result<Parsed, ParseError> {
    let exptime_ok = if with_exptime {
        match toks.next() {
            Some(span) => Number::I32.accepts(span.of(ctx.line)),
            None => return Err(ParseError::UnknownCommand { skip: ctx.line_len }),
        }
    } else {
        true
    };
    // Vectorised: one memchr3 for bytes no key may hold (a space only separates keys), then
    // one memchr pass over the separators; the keys themselves are never walked byte by byte.
    let from = toks.pos();
    let keys = ctx.line.get(from..).unwrap_or(&[]);
    let max_key = ctx.limits.max_key_length;
    let mut bad = memchr::memchr3(b'\r', b'\n', 0, keys).is_some();
    let mut first = None;
    let mut last_end = 0;
    let mut count = 0usize;
    let mut start = 0;
    for end in memchr::memchr_iter(b' ', keys).chain(std::iter::once(keys.len())) {
        if end > start {
            count += 1;
            first.get_or_insert(start);
            last_end = end;
            bad |= end - start > max_key;
        }
        start = end + 1;
    }
    let Some(first) = first else {
        return Err(ParseError::UnknownCommand { skip: ctx.line_len });
    };
    if bad || !exptime_ok {
        return Err(ctx.bad_line());
    }
    let mut request = ctx.request();
    request.keys = Span {
        start: from + first,
        end: from + last_end,
    };
    request.key_count = count;
    Ok(Parsed::Complete(request))
}

/// `set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]` and, with
/// `cas`, `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`, then the data block.
///
/// When the `<bytes>` token (always the fourth argument) parses, every refusal skips the data
/// block too, so a bad request's value is never read as commands.
pub(super) fn storage(
    ctx: &Ctx<'_>,
    mut toks: Tokens<'_>,
    cas: bool,
) -> Result<Parsed, ParseError> {
    let (args, count) = toks.collect_n::<6>();
    let arg = |i: usize| args.get(i).map_or(&[][..], |s| s.of(ctx.line));
    let required = if cas { 5 } else { 4 };
    let data_len = if count >= 4 {
        tokens::parse_data_len(arg(3))
    } else {
        None
    };
    let total = data_len.and_then(|n| ctx.line_len.checked_add(n)?.checked_add(2));
    let bad = ParseError::BadCommandLine {
        skip: total.unwrap_or(ctx.line_len),
    };
    if count < required || count > required + 1 {
        return Err(bad);
    }
    let valid = ctx.valid_key(arg(0))
        && Number::U32.accepts(arg(1))
        && Number::I32.accepts(arg(2))
        && (!cas || Number::U64.accepts(arg(4)))
        && (count == required || arg(required) == NOREPLY);
    let (Some(data_len), Some(total), true) = (data_len, total, valid) else {
        return Err(bad);
    };
    let mut request = ctx.request();
    request.keys = args[0];
    request.key_count = 1;
    request.noreply = count > required;
    ctx.with_data(request, data_len, total)
}

/// `delete <key> [0] [noreply]` (memcached still accepts a zero hold time).
pub(super) fn delete(ctx: &Ctx<'_>, mut toks: Tokens<'_>) -> Result<Parsed, ParseError> {
    let (args, count) = toks.collect_n::<3>();
    let arg = |i: usize| args.get(i).map_or(&[][..], |s| s.of(ctx.line));
    let noreply = match count {
        1 => false,
        2 if arg(1) == NOREPLY => true,
        2 if arg(1) == b"0" => false,
        3 if arg(1) == b"0" && arg(2) == NOREPLY => true,
        _ => return Err(ctx.bad_line()),
    };
    keyed(ctx, args[0], noreply)
}

/// `incr|decr <key> <delta> [noreply]` (`number` = U64) and `touch <key> <exptime> [noreply]`
/// (`number` = I32).
pub(super) fn key_number(
    ctx: &Ctx<'_>,
    mut toks: Tokens<'_>,
    number: Number,
) -> Result<Parsed, ParseError> {
    let (args, count) = toks.collect_n::<3>();
    let arg = |i: usize| args.get(i).map_or(&[][..], |s| s.of(ctx.line));
    let noreply = match count {
        2 => false,
        3 if arg(2) == NOREPLY => true,
        _ => return Err(ctx.bad_line()),
    };
    if !number.accepts(arg(1)) {
        return Err(ctx.bad_line());
    }
    keyed(ctx, args[0], noreply)
}

/// A single-key request after its other arguments were checked: checks the key.
fn keyed(ctx: &Ctx<'_>, key: Span, noreply: bool) -> Result<Parsed, ParseError> {
    if !ctx.valid_key(key.of(ctx.line)) {
        return Err(ctx.bad_line());
    }
    let mut request = ctx.request();
    request.keys = key;
    request.key_count = 1;
    request.noreply = noreply;
    Ok(Parsed::Complete(request))
}

/// `flush_all [delay] [noreply]`.
pub(super) fn flush_all(ctx: &Ctx<'_>, mut toks: Tokens<'_>) -> Result<Parsed, ParseError> {
    let (args, count) = toks.collect_n::<2>();
    let arg = |i: usize| args.get(i).map_or(&[][..], |s| s.of(ctx.line));
    let noreply = match count {
        0 => false,
        1 if arg(0) == NOREPLY => true,
        1 if Number::I32.accepts(arg(0)) => false,
        2 if Number::I32.accepts(arg(0)) && arg(1) == NOREPLY => true,
        _ => return Err(ctx.bad_line()),
    };
    let mut request = ctx.request();
    request.noreply = noreply;
    Ok(Parsed::Complete(request))
}

/// `verbosity <level> [noreply]`.
pub(super) fn verbosity(ctx: &Ctx<'_>, mut toks: Tokens<'_>) -> Result<Parsed, ParseError> {
    let (args, count) = toks.collect_n::<2>();
    let arg = |i: usize| args.get(i).map_or(&[][..], |s| s.of(ctx.line));
    let noreply = match count {
        // memcached reads `verbosity noreply` as level 0, quietly.
        1 if arg(0) == NOREPLY => true,
        1 if Number::U32.accepts(arg(0)) => false,
        2 if Number::U32.accepts(arg(0)) && arg(1) == NOREPLY => true,
        _ => return Err(ctx.bad_line()),
    };
    let mut request = ctx.request();
    request.noreply = noreply;
    Ok(Parsed::Complete(request))
}
