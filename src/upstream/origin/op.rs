//! What a memcached request the proxy sends means to an HTTP origin (SPEC §13): reads become
//! `GET`s (one per key), `set`/`ms` a `PUT`, `delete`/`md` a `DELETE`, `version` (the health
//! probe) a `HEAD` of the base path; anything else is refused with the reason, and so are
//! writes to an origin without `writes: true`.
//!
//! The request is the proxy's own bytes (a client's request it parsed, or one it built), so a
//! parse that fails here is a refusal, never a panic.

use bytes::{Bytes, BytesMut};

use crate::protocol::base64;
use crate::protocol::meta_flags::Words;
use crate::protocol::{parse_request, Command, Limits, Parsed, Request};
use crate::upstream::{FailReason, Send};

/// memcached's largest relative TTL (30 days): an exptime above it is a unix time.
const MAX_RELATIVE_TTL: i64 = 60 * 60 * 24 * 30;

/// One key of a request: as the proxy sent it (what a reply names) and the bytes it stands
/// for (what the origin's URL carries; a base64 meta key decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The key token as sent.
    pub sent: Bytes,
    /// The key's bytes.
    pub raw: Bytes,
}

/// How a read's reply is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// `VALUE` blocks and `END` (`get`, `gat`; with a CAS of 0 for `gets`, `gats`).
    Classic {
        /// Each value line carries a CAS.
        cas: bool,
    },
    /// A meta reply (`mg`): what the request asked to see.
    Meta(MetaAsk),
}

/// The return flags an `mg` asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaAsk {
    /// `v`: the value.
    pub value: bool,
    /// `f`: the client flags.
    pub flags: bool,
    /// `t`: the remaining TTL (the origin's `max-age`, or -1).
    pub ttl: bool,
    /// `s`: the value's size.
    pub size: bool,
    /// `k`: the key.
    pub key: bool,
    /// `c`: the CAS (always 0: an origin has none).
    pub cas: bool,
    /// `h`: fetched before (always 0).
    pub hit_before: bool,
    /// `l`: seconds since last access (always 0).
    pub last_access: bool,
    /// `b`: the key is base64 (echoed with `k`).
    pub base64: bool,
    /// `q`: a miss is not shown.
    pub quiet: bool,
    /// `O<opaque>`: echoed.
    pub opaque: Option<Bytes>,
}

/// How a write's reply is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `STORED` / `DELETED` / `NOT_FOUND`.
    Classic,
    /// `HD` / `NF` (nothing on success when quiet), with the opaque echoed.
    Meta {
        /// `q`: success is not shown.
        quiet: bool,
        /// `O<opaque>`.
        opaque: Option<Bytes>,
    },
    /// `noreply`: nothing.
    Silent,
}

/// A request as an origin takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET` each key.
    Read {
        /// The keys, in the request's order (repeats kept).
        keys: Vec<Key>,
        /// How the reply is written.
        form: Form,
    },
    /// `PUT` the value.
    Put {
        /// The key.
        key: Key,
        /// Client flags (`Bifrost-Flags`).
        flags: u32,
        /// Lifetime in seconds (`Cache-Control: max-age`), none for "never expires".
        max_age: Option<u32>,
        /// The value.
        data: Bytes,
        /// The reply.
        answer: Answer,
    },
    /// `DELETE` the key.
    Delete {
        /// The key.
        key: Key,
        /// The reply.
        answer: Answer,
    },
    /// `HEAD` of the base path (the health probe's `version`).
    Probe,
}

/// What `send` asks of an origin that takes writes when `writes` is true, or why it cannot.
pub fn op_of(send: &Send, writes: bool) -> Result<Op, FailReason> {
    // A request the proxy built may carry its value apart (a write-back): join them to parse.
    let joined;
    let buf: &Bytes = match &send.value {
        Some(value) => {
            let mut whole = BytesMut::with_capacity(send.bytes.len() + value.len());
            whole.extend_from_slice(&send.bytes);
            whole.extend_from_slice(value);
            joined = whole.freeze();
            &joined
        }
        None => &send.bytes,
    };
    let limits = Limits {
        max_line_length: 1 << 20,
        max_value_size: usize::MAX >> 2,
        max_key_length: 1024,
    };
    let request = match parse_request(buf, &limits) {
        Ok(Parsed::Complete(request)) => request,
        _ => return Err(FailReason::NotSupported),
    };
    let write = |op: Op| {
        if writes {
            Ok(op)
        } else {
            Err(FailReason::ReadOnly)
        }
    };
    match request.command {
        Command::Get | Command::Gat => Ok(classic_read(&request, buf, false)),
        Command::Gets | Command::Gats => Ok(classic_read(&request, buf, true)),
        Command::MetaGet => meta_read(&request, buf),
        Command::Set => write(classic_set(&request, buf)?),
        Command::MetaSet => write(meta_set(&request, buf)?),
        Command::Delete => write(classic_delete(&request, buf)?),
        Command::MetaDelete => write(meta_delete(&request, buf)?),
        Command::Version => Ok(Op::Probe),
        _ => Err(FailReason::NotSupported),
    }
}

fn classic_read(request: &Request, buf: &Bytes, cas: bool) -> Op {
    let keys = request
        .keys(buf)
        .map(|key| {
            let key = slice_of(buf, key);
            Key {
                sent: key.clone(),
                raw: key,
            }
        })
        .collect();
    Op::Read {
        keys,
        form: Form::Classic { cas },
    }
}

/// `sub` (a slice of `buf`) as a [`Bytes`] sharing `buf`.
fn slice_of(buf: &Bytes, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        return Bytes::new();
    }
    buf.slice_ref(sub)
}

/// The key of a keyed request: its token, and its bytes (base64-decoded with `b`).
fn key_of(request: &Request, buf: &Bytes) -> Result<Key, FailReason> {
    let sent = slice_of(buf, request.first_key(buf));
    if !request.base64_key {
        return Ok(Key {
            raw: sent.clone(),
            sent,
        });
    }
    let mut decoded = [0u8; base64::MAX_DECODED];
    let n = base64::decode(&sent, &mut decoded).ok_or(FailReason::NotSupported)?;
    let raw = Bytes::copy_from_slice(decoded.get(..n).ok_or(FailReason::NotSupported)?);
    Ok(Key { sent, raw })
}

/// The tokens of a meta request after its key (the line without the command and key).
fn meta_tokens<'a>(request: &Request, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    Words::new(request.args.of(buf)).skip(1).map(|(_, t)| t)
}

fn meta_read(request: &Request, buf: &Bytes) -> Result<Op, FailReason> {
    let key = key_of(request, buf)?;
    let mut ask = MetaAsk::default();
    for token in meta_tokens(request, buf) {
        match token.first() {
            Some(b'v') => ask.value = true,
            Some(b'f') => ask.flags = true,
            Some(b't') => ask.ttl = true,
            Some(b's') => ask.size = true,
            Some(b'k') => ask.key = true,
            Some(b'c') => ask.cas = true,
            Some(b'h') => ask.hit_before = true,
            Some(b'l') => ask.last_access = true,
            Some(b'b') => ask.base64 = true,
            Some(b'q') => ask.quiet = true,
            Some(b'O') => ask.opaque = Some(slice_of(buf, token.get(1..).unwrap_or(&[]))),
            // Touch, vivify, recache and the rest concern a cache's copy, not an origin.
            _ => {}
        }
    }
    Ok(Op::Read {
        keys: vec![key],
        form: Form::Meta(ask),
    })
}

/// An exptime as a `max-age`: 0 is none (never expires), over 30 days a unix time.
fn max_age_of(exptime: i64) -> Option<u32> {
    let seconds = match exptime {
        0 => return None,
        // A unix time: the clock is read only for these.
        e if e > MAX_RELATIVE_TTL => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            e - now
        }
        e => e,
    };
    // An item already expired is stored for the least time an origin can be told.
    Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX))
}

fn decimal<T: std::str::FromStr>(token: Option<&[u8]>) -> Result<T, FailReason> {
    std::str::from_utf8(token.unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(FailReason::NotSupported)
}

fn data_of(request: &Request, buf: &Bytes) -> Result<Bytes, FailReason> {
    let span = request.data.ok_or(FailReason::NotSupported)?;
    buf.get(span.start..span.end)
        .map(|d| slice_of(buf, d))
        .ok_or(FailReason::NotSupported)
}

fn classic_set(request: &Request, buf: &Bytes) -> Result<Op, FailReason> {
    let mut words = Words::new(request.args.of(buf)).map(|(_, t)| t).skip(1);
    let flags = decimal::<u32>(words.next())?;
    let exptime = decimal::<i64>(words.next())?;
    Ok(Op::Put {
        key: key_of(request, buf)?,
        flags,
        max_age: max_age_of(exptime),
        data: data_of(request, buf)?,
        answer: classic_answer(request),
    })
}

fn classic_answer(request: &Request) -> Answer {
    match request.noreply {
        true => Answer::Silent,
        false => Answer::Classic,
    }
}

fn classic_delete(request: &Request, buf: &Bytes) -> Result<Op, FailReason> {
    Ok(Op::Delete {
        key: key_of(request, buf)?,
        answer: classic_answer(request),
    })
}

/// The answer of a meta write, from its `q` and `O` flags; any flag an origin cannot honour
/// (a CAS, a mode other than set, invalidation) refuses the request.
fn meta_answer(request: &Request, buf: &Bytes, data_len: bool) -> Result<Answer, FailReason> {
    let mut quiet = false;
    let mut opaque = None;
    for (i, token) in meta_tokens(request, buf).enumerate() {
        match token.first() {
            // `ms`'s datalen.
            Some(b'0'..=b'9') if data_len && i == 0 => {}
            Some(b'q') => quiet = true,
            Some(b'O') => opaque = Some(slice_of(buf, token.get(1..).unwrap_or(&[]))),
            Some(b'b' | b'F' | b'T' | b'k') => {}
            Some(b'M') if matches!(token.get(1), Some(b'S' | b's') | None) => {}
            _ => return Err(FailReason::NotSupported),
        }
    }
    Ok(Answer::Meta { quiet, opaque })
}

fn meta_set(request: &Request, buf: &Bytes) -> Result<Op, FailReason> {
    let answer = meta_answer(request, buf, true)?;
    let mut flags = 0;
    let mut exptime = 0;
    for token in meta_tokens(request, buf) {
        match token.split_first() {
            Some((b'F', digits)) => flags = decimal::<u32>(Some(digits))?,
            Some((b'T', digits)) => exptime = decimal::<i64>(Some(digits))?,
            _ => {}
        }
    }
    Ok(Op::Put {
        key: key_of(request, buf)?,
        flags,
        max_age: max_age_of(exptime),
        data: data_of(request, buf)?,
        answer,
    })
}

fn meta_delete(request: &Request, buf: &Bytes) -> Result<Op, FailReason> {
    Ok(Op::Delete {
        key: key_of(request, buf)?,
        answer: meta_answer(request, buf, false)?,
    })
}
