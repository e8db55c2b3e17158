//! The client request parser: incremental, zero-allocation, offsets into the read buffer.
//!
//! CONTRACT (implemented by the parser helper; callers rely on exactly this):
//! `parse_request(buf, limits)` looks at the start of `buf` only.
//! * `Ok(Parsed::Incomplete)`: more bytes are needed (also while a data block is partly read).
//! * `Ok(Parsed::Complete(req))`: `req.len` bytes at the start of `buf` are one whole request
//!   (command line + data block + its CRLF); all spans are offsets into `buf`.
//! * `Err(e)`: the request is bad; `e.reply()` is the memcached-style reply and `e.skip()` says
//!   how many bytes to drop (which may exceed what is buffered: the rest is swallowed as it
//!   arrives) or, when `None`, that the connection must close after the reply.
//!
//! How it works: one `memchr` for `\n` bounded by [`Limits::max_line_length`], the command
//! name matched by length then bytes, the arguments walked as space-separated tokens (runs of
//! spaces collapse, as in memcached's tokenizer), numbers parsed in place. Nothing is copied
//! and nothing is allocated; the parser keeps no state, so a caller simply calls it again on
//! the same buffer once more bytes have arrived. The accepted syntax, every error reply and
//! every deliberate difference from memcached are listed in `docs/protocol.md`.

use memchr::memchr;

use super::command::Command;

mod classic;
mod meta;
mod tokens;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stream;

/// A byte range `start..end` into the buffer the request was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The bytes of `buf` this span covers (empty if out of range: never panics).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True when the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parser's limits; each one is a configuration knob with a memcached-compatible reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line accepted, counting its line ending (default 65536). A client that
    /// sends this many bytes without a `\n` gets [`ParseError::LineTooLong`].
    pub max_line_length: usize,
    /// Largest data block accepted by a storage command (default 1 MiB).
    pub max_value_size: usize,
    /// Longest key accepted, in bytes as sent on the wire (default 250, memcached's limit).
    pub max_key_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_length: 65536,
            max_value_size: 1024 * 1024,
            max_key_length: 250,
        }
    }
}

/// The outcome of a successful parse step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Parsed {
    /// One whole request is at the start of the buffer.
    Complete(Request),
    /// More bytes are needed before anything can be decided.
    Incomplete,
}

/// One parsed request: its command and offsets into the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Which command this is.
    pub command: Command,
    /// Bytes of the command line including its line ending (`\r\n`, or a bare `\n`).
    pub line_len: usize,
    /// Bytes of the whole request: line, data block and the data block's `\r\n`.
    pub len: usize,
    /// The key tokens: for get/gets/gat/gats from the first key's start to the last key's end
    /// (keys separated by one or more spaces); for other keyed commands the one key; an empty
    /// span for keyless commands.
    pub keys: Span,
    /// How many keys [`Request::keys`] holds.
    pub key_count: usize,
    /// The data block without its trailing CRLF (set/add/replace/append/prepend/cas/ms).
    pub data: Option<Span>,
    /// The classic `noreply` token was given.
    pub noreply: bool,
    /// The meta `q` (quiet) flag was given.
    pub quiet: bool,
    /// The meta `b` flag was given: the key is base64 and has been checked to decode.
    pub base64_key: bool,
    /// The tokens after the command name: from the first one's start to the last one's end
    /// (surrounding spaces and the line ending excluded). Empty (positioned right after the
    /// command name) when there are none. Used to rewrite or forward the line.
    pub args: Span,
}

impl Request {
    /// Iterates the key slices of this request in the order they were given (no allocation).
    pub fn keys<'a>(&self, buf: &'a [u8]) -> KeyIter<'a> {
        KeyIter {
            rest: self.keys.of(buf),
        }
    }

    /// The first key, or an empty slice for a keyless command.
    pub fn first_key<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.keys(buf).next().unwrap_or(&[])
    }

    /// False for classic `noreply` requests and meta requests with the `q` flag. A quiet meta
    /// request still gets a reply on some outcomes (for example `mg` hits and every error),
    /// which is why the proxy follows such requests with `mn` when it forwards them and frames
    /// their replies with [`super::ReplyKind::UntilNoop`].
    pub fn expects_reply(&self) -> bool {
        !(self.noreply || self.quiet)
    }
}

/// Iterator over the keys of a [`Request`], as slices of the parsed buffer.
#[derive(Clone, Debug)]
pub struct KeyIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for KeyIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let tail = self.rest.get(start..)?;
        let len = memchr(b' ', tail).unwrap_or(tail.len());
        let (key, rest) = tail.split_at(len);
        self.rest = rest;
        Some(key)
    }
}

/// Why a request was refused. Each variant maps to exactly one wire reply ([`ParseError::reply`])
/// and one action ([`ParseError::skip`]); a refused request never reaches a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown command name, an empty line, or a retrieval command without keys: reply
    /// `ERROR` and drop the line.
    UnknownCommand {
        /// Bytes to drop (the line).
        skip: usize,
    },
    /// A malformed command line (bad number, missing or extra token, bad key, bad meta flag):
    /// reply `CLIENT_ERROR bad command line format`. For storage commands whose `<bytes>`
    /// token parsed, `skip` includes the data block and its CRLF so the value is swallowed.
    BadCommandLine {
        /// Bytes to drop (may exceed what is buffered).
        skip: usize,
    },
    /// The value is larger than [`Limits::max_value_size`]: reply
    /// `SERVER_ERROR object too large for cache`; `skip` = line + bytes + 2, which may exceed
    /// what is buffered (the caller swallows the rest as it arrives).
    TooLarge {
        /// Bytes to drop (may exceed what is buffered).
        skip: usize,
    },
    /// [`ParseError::TooLarge`] for a `noreply` request: the value is swallowed and nothing is
    /// sent, as memcached does.
    TooLargeNoreply {
        /// Bytes to drop (may exceed what is buffered).
        skip: usize,
    },
    /// The data block was not followed by `\r\n`: reply `CLIENT_ERROR bad data chunk`;
    /// `skip` = line + bytes + 2.
    BadDataChunk {
        /// Bytes to drop.
        skip: usize,
    },
    /// No line end within [`Limits::max_line_length`] bytes: reply
    /// `CLIENT_ERROR line too long`, then close the connection.
    LineTooLong,
    /// A binary-protocol frame that is not one (wrong magic, lengths that do not add up, a body
    /// far over the limit): close the connection without a reply.
    BadFrame,
    /// The first byte is the binary protocol's magic (0x80): reply
    /// `CLIENT_ERROR binary protocol is not supported`, then close the connection.
    BinaryProtocol,
    /// An unknown command whose last token starts with `HTTP/` (an HTTP request line, say from
    /// a browser tricked into posting to the port): close the connection without a reply and
    /// without reading further, as memcached does.
    CrossProtocol,
}

impl ParseError {
    /// The bytes to send to the client for this error.
    pub fn reply(&self) -> &'static [u8] {
        match self {
            ParseError::UnknownCommand { .. } => b"ERROR\r\n",
            ParseError::BadCommandLine { .. } => b"CLIENT_ERROR bad command line format\r\n",
            ParseError::TooLarge { .. } => b"SERVER_ERROR object too large for cache\r\n",
            ParseError::TooLargeNoreply { .. } => b"",
            ParseError::BadDataChunk { .. } => b"CLIENT_ERROR bad data chunk\r\n",
            ParseError::LineTooLong => b"CLIENT_ERROR line too long\r\n",
            ParseError::BinaryProtocol => b"CLIENT_ERROR binary protocol is not supported\r\n",
            ParseError::CrossProtocol | ParseError::BadFrame => b"",
        }
    }

    /// How many bytes to drop from the buffer after replying, or `None` when the connection
    /// must be closed after the reply is sent.
    pub fn skip(&self) -> Option<usize> {
        match *self {
            ParseError::UnknownCommand { skip }
            | ParseError::BadCommandLine { skip }
            | ParseError::TooLarge { skip }
            | ParseError::TooLargeNoreply { skip }
            | ParseError::BadDataChunk { skip } => Some(skip),
            ParseError::LineTooLong
            | ParseError::BinaryProtocol
            | ParseError::CrossProtocol
            | ParseError::BadFrame => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ParseError::UnknownCommand { .. } => "unknown_command",
            ParseError::BadCommandLine { .. } => "bad_command_line",
            ParseError::TooLarge { .. } | ParseError::TooLargeNoreply { .. } => "too_large",
            ParseError::BadDataChunk { .. } => "bad_data_chunk",
            ParseError::LineTooLong => "line_too_long",
            ParseError::BinaryProtocol => "binary_protocol",
            ParseError::CrossProtocol => "cross_protocol",
            ParseError::BadFrame => "bad_binary_frame",
        }
    }
}

/// The binary protocol's request magic byte.
const BINARY_MAGIC: u8 = 0x80;

/// Parses the request at the start of `buf`. See the module documentation for the contract.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first == BINARY_MAGIC {
        return Err(ParseError::BinaryProtocol);
    }
    let window = buf.get(..limits.max_line_length).unwrap_or(buf);
    let Some(newline) = memchr(b'\n', window) else {
        return if buf.len() >= limits.max_line_length {
            Err(ParseError::LineTooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line_len = newline + 1;
    let text_end = if newline > 0 && buf.get(newline - 1) == Some(&b'\r') {
        newline - 1
    } else {
        newline
    };
    let line = buf.get(..text_end).unwrap_or(&[]);
    let mut toks = tokens::Tokens::new(line, 0);
    let Some(name) = toks.next() else {
        return Err(ParseError::UnknownCommand { skip: line_len });
    };
    let Some(command) = lookup(name.of(line)) else {
        return Err(unknown_command(line, line_len));
    };
    if let Some(error) = outside_memcached_grammar(command, line, line_len, name.start) {
        return Err(error);
    }
    let ctx = Ctx {
        buf,
        line,
        line_len,
        limits,
        command,
        args: tokens::trimmed(line, name.end),
    };
    match command {
        Command::Get | Command::Gets => classic::retrieval(&ctx, toks, false),
        Command::Gat | Command::Gats => classic::retrieval(&ctx, toks, true),
        Command::Set | Command::Add | Command::Replace | Command::Append | Command::Prepend => {
            classic::storage(&ctx, toks, false)
        }
        Command::Cas => classic::storage(&ctx, toks, true),
        Command::Delete => classic::delete(&ctx, toks),
        Command::Incr | Command::Decr => classic::key_number(&ctx, toks, tokens::Number::U64),
        Command::Touch => classic::key_number(&ctx, toks, tokens::Number::I32),
        Command::FlushAll => classic::flush_all(&ctx, toks),
        Command::Verbosity => classic::verbosity(&ctx, toks),
        // `version` and `quit` take no arguments: `version foo` is refused as memcached
        // before 1.6 refused it (conformance checkers rely on that; newer memcached ignores
        // the extra words).
        Command::Version | Command::Quit if !ctx.args.is_empty() => {
            Err(ParseError::UnknownCommand { skip: line_len })
        }
        Command::Version | Command::Quit | Command::Stats | Command::MetaNoop => {
            Ok(Parsed::Complete(ctx.request()))
        }
        Command::MetaGet
        | Command::MetaSet
        | Command::MetaDelete
        | Command::MetaArithmetic
        | Command::MetaDebug => meta::parse(&ctx, toks),
    }
}

/// memcached closes a connection whose buffered input holds more than this many bytes without
/// a line end, unless the line starts with `get ` or `gets ` (after at most 100 spaces): any
/// other line forwarded to it must be at most this long, line end included.
pub const MEMCACHED_MAX_LINE: usize = 2048;

/// The error for a line whose command name is unknown: `ERROR`, or a close without a reply
/// when its last token starts with `HTTP/`, as memcached does, so that a browser tricked into
/// posting to the proxy's port runs nothing (the request line is the first one it sends).
fn unknown_command(line: &[u8], line_len: usize) -> ParseError {
    let last = line.rsplit(|&b| b == b' ').find(|t| !t.is_empty());
    if last.is_some_and(|t| t.starts_with(b"HTTP/")) {
        ParseError::CrossProtocol
    } else {
        ParseError::UnknownCommand { skip: line_len }
    }
}

/// Refuses a known command's line that memcached would not read exactly as this parser does,
/// whatever its arguments (they are checked by each command's parser):
/// * a NUL (memcached's tokenizer stops at it) or a CR inside a storage line (it is part of a
///   token there; every command parser refuses both in any token, this catches them where the
///   data block must be swallowed too);
/// * a line longer than [`MEMCACHED_MAX_LINE`], except `get`/`gets` with no leading space
///   (memcached reads those at any length).
///
/// Storage commands are refused with their data block swallowed when their `<bytes>` token can
/// be found, so a refused value is never read as commands.
fn outside_memcached_grammar(
    command: Command,
    line: &[u8],
    line_len: usize,
    name_start: usize,
) -> Option<ParseError> {
    let long = line_len > MEMCACHED_MAX_LINE
        && !(matches!(command, Command::Get | Command::Gets) && name_start == 0);
    // Every token a command parser accepts (keys, numbers, `noreply`, meta flags) already
    // excludes NUL and CR; a storage line is looked at here as well so that its refusal
    // swallows the data block memcached would have read (its length token ends at the CR).
    let stray = command.has_data() && memchr::memchr2(0, b'\r', line).is_some();
    if !long && !stray {
        return None;
    }
    Some(ParseError::BadCommandLine {
        skip: data_block_end(command, line, line_len).unwrap_or(line_len),
    })
}

/// For a storage command (`set` family, `cas`, `ms`) whose `<bytes>` token parses: where its
/// data block and the block's CRLF end, counted from the start of the line.
fn data_block_end(command: Command, line: &[u8], line_len: usize) -> Option<usize> {
    let index = match command {
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => 4,
        Command::MetaSet => 2,
        _ => return None,
    };
    let token = tokens::Tokens::new(line, 0).nth(index)?.of(line);
    // The digits before a CR or NUL: memcached's number parsing stops there and takes them,
    // so that is the length of the block it would read.
    let digits = token
        .split(|&b| b == b'\r' || b == 0)
        .next()
        .unwrap_or(token);
    let data_len = tokens::parse_data_len(digits)?;
    line_len.checked_add(data_len)?.checked_add(2)
}

/// For a `set` or `ms` refused as too large ([`ParseError::TooLarge`] or
/// [`ParseError::TooLargeNoreply`] for the line at the start of `buf`): the request that
/// removes the key's old value, as memcached does so that a failed write never leaves a stale
/// value readable (`delete <key> noreply`, or `md <key> b q` for a base64 key), with its parse.
/// None for other commands, and for a line that does not hold a valid key.
pub fn unlink_after_too_large(buf: &[u8], limits: &Limits) -> Option<(Request, Vec<u8>)> {
    let newline = memchr(b'\n', buf.get(..limits.max_line_length).unwrap_or(buf))?;
    let line = buf.get(..newline)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut toks = tokens::Tokens::new(line, 0);
    let command = lookup(toks.next()?.of(line))?;
    let key = toks.next()?.of(line);
    let base64 = match command {
        Command::Set => false,
        Command::MetaSet => toks.skip(1).any(|flag| flag.of(line) == b"b"),
        _ => return None,
    };
    let mut out = Vec::with_capacity(key.len() + 24);
    if base64 {
        out.extend_from_slice(b"md ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" b q\r\n");
    } else {
        out.extend_from_slice(b"delete ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" noreply\r\n");
    }
    // Only what parses as one request of its own is sent (the key was checked with the line,
    // but this keeps the promise local); its parse is what the caller dispatches.
    match parse_request(&out, limits) {
        Ok(Parsed::Complete(request)) if request.len == out.len() => Some((request, out)),
        _ => None,
    }
}

/// Bytes a key may not contain: the separators and NUL. memcached itself splits keys on spaces
/// only and stores any other byte (load generators such as memcaslap put bytes 0x10-0x1f in
/// their keys), so the proxy refuses no more than that: a client that works against memcached
/// works through the proxy.
#[inline]
pub(crate) fn forbidden_in_key(b: u8) -> bool {
    matches!(b, b' ' | b'\r' | b'\n' | 0)
}

/// Matches a command name by length, then bytes.
#[inline]
fn lookup(name: &[u8]) -> Option<Command> {
    let command = match name.len() {
        2 => match name {
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"mn" => Command::MetaNoop,
            b"me" => Command::MetaDebug,
            _ => return None,
        },
        3 => match name {
            b"get" => Command::Get,
            b"set" => Command::Set,
            b"gat" => Command::Gat,
            b"add" => Command::Add,
            b"cas" => Command::Cas,
            _ => return None,
        },
        4 => match name {
            b"gets" => Command::Gets,
            b"gats" => Command::Gats,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"quit" => Command::Quit,
            _ => return None,
        },
        5 => match name {
            b"touch" => Command::Touch,
            b"stats" => Command::Stats,
            _ => return None,
        },
        6 => match name {
            b"append" => Command::Append,
            b"delete" => Command::Delete,
            _ => return None,
        },
        7 => match name {
            b"replace" => Command::Replace,
            b"prepend" => Command::Prepend,
            b"version" => Command::Version,
            _ => return None,
        },
        9 => match name {
            b"flush_all" => Command::FlushAll,
            b"verbosity" => Command::Verbosity,
            _ => return None,
        },
        _ => return None,
    };
    Some(command)
}

/// What every command parser needs to know about the line being parsed.
struct Ctx<'a> {
    /// The whole buffer (the data block, if any, follows the line in it).
    buf: &'a [u8],
    /// The command line without its line ending.
    line: &'a [u8],
    /// Bytes of the line including its line ending.
    line_len: usize,
    limits: &'a Limits,
    command: Command,
    /// The arguments span (see [`Request::args`]).
    args: Span,
}

impl Ctx<'_> {
    /// A request for this line with no keys, no data and no reply flags: the callers fill in
    /// what their command has.
    fn request(&self) -> Request {
        Request {
            command: self.command,
            line_len: self.line_len,
            len: self.line_len,
            keys: Span::default(),
            key_count: 0,
            data: None,
            noreply: false,
            quiet: false,
            base64_key: false,
            args: self.args,
        }
    }

    /// `BadCommandLine` skipping the line only.
    fn bad_line(&self) -> ParseError {
        ParseError::BadCommandLine {
            skip: self.line_len,
        }
    }

    /// True when `key` is 1..=max_key_length bytes, none of them forbidden in a key.
    fn valid_key(&self, key: &[u8]) -> bool {
        !key.is_empty()
            && key.len() <= self.limits.max_key_length
            && !key.iter().any(|&b| forbidden_in_key(b))
    }

    /// Finishes a request that carries a data block of `data_len` bytes after its line:
    /// checks the size limit, waits for the block and checks its CRLF. `total` is
    /// `line_len + data_len + 2`, already computed without overflow by the caller.
    fn with_data(
        &self,
        mut request: Request,
        data_len: usize,
        total: usize,
    ) -> Result<Parsed, ParseError> {
        if data_len > self.limits.max_value_size {
            // memcached swallows the value silently when the client asked for no reply.
            return Err(if request.noreply {
                ParseError::TooLargeNoreply { skip: total }
            } else {
                ParseError::TooLarge { skip: total }
            });
        }
        let Some(terminator) = self.buf.get(total - 2..total) else {
            return Ok(Parsed::Incomplete);
        };
        if terminator != b"\r\n" {
            return Err(ParseError::BadDataChunk { skip: total });
        }
        request.data = Some(Span {
            start: self.line_len,
            end: self.line_len + data_len,
        });
        request.len = total;
        Ok(Parsed::Complete(request))
    }
}
