//! The memcached replies an origin's responses make: what each HTTP response means
//! ([`Outcome`]) and the reply to the memcached request that asked ([`reply_of`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::op::{Answer, Form, Key, Op};
use crate::upstream::FailReason;

/// What one HTTP response said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A `GET` found the value (200).
    Hit {
        /// `Bifrost-Flags`.
        flags: u32,
        /// `Cache-Control: max-age`.
        max_age: Option<u32>,
        /// The body.
        body: Bytes,
    },
    /// A `GET` found nothing (404, 410).
    Miss,
    /// A write or probe succeeded (2xx; for the probe, any status under 500).
    Done,
    /// A `DELETE` found nothing (404, 410).
    NotFound,
    /// Anything else: the request failed.
    Failed(FailReason),
}

/// What the responses to a memcached request make of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replied {
    /// Its reply.
    Reply {
        /// The memcached reply.
        reply: Bytes,
        /// Length of its final line (`END\r\n`, `EN\r\n`...), 0 when it has none.
        tail: usize,
        /// Values in it.
        values: usize,
        /// The smallest `max-age` among its values (a write-back lives no longer).
        max_age: Option<u32>,
    },
    /// It failed, for this reason.
    Failed(FailReason),
}

fn put_decimal(out: &mut BytesMut, n: impl Into<u64>) {
    crate::protocol::decimal::put_u64(out, n.into());
}

/// The reply to `op`, given the outcome of each of its HTTP requests in order (`outcomes[i]`
/// for key `i` of a read; `outcomes[0]` for the others).
pub fn reply_of(op: &Op, outcomes: &[&Outcome]) -> Replied {
    if let Some(reason) = outcomes.iter().find_map(|o| match o {
        Outcome::Failed(reason) => Some(*reason),
        _ => None,
    }) {
        return Replied::Failed(reason);
    }
    match op {
        Op::Read { keys, form } => read_reply(keys, form, outcomes),
        Op::Put { answer, .. } => write_reply(answer, b"STORED\r\n", b"HD"),
        Op::Delete { answer, .. } => match outcomes.first() {
            Some(Outcome::NotFound) => match answer {
                Answer::Classic => line(b"NOT_FOUND\r\n"),
                Answer::Meta { opaque, .. } => meta_line(b"NF", opaque),
                Answer::Silent => line(b""),
            },
            _ => write_reply(answer, b"DELETED\r\n", b"HD"),
        },
        Op::Probe => line(b"VERSION http-origin\r\n"),
    }
}

fn line(text: &'static [u8]) -> Replied {
    Replied::Reply {
        reply: Bytes::from_static(text),
        tail: text.len(),
        values: 0,
        max_age: None,
    }
}

/// A meta status line (`code` is `HD`, `NF`...) with the opaque echoed.
fn meta_line(code: &'static [u8], opaque: &Option<Bytes>) -> Replied {
    let Some(opaque) = opaque else {
        let text: &'static [u8] = if code == b"HD" { b"HD\r\n" } else { b"NF\r\n" };
        return line(text);
    };
    let mut out = BytesMut::with_capacity(8 + opaque.len());
    out.put_slice(code);
    out.put_slice(b" O");
    out.put_slice(opaque);
    out.put_slice(b"\r\n");
    let tail = out.len();
    Replied::Reply {
        reply: out.freeze(),
        tail,
        values: 0,
        max_age: None,
    }
}

/// The reply to a write that succeeded: `classic` (a whole line) or the meta code `meta`.
fn write_reply(answer: &Answer, classic: &'static [u8], meta: &'static [u8]) -> Replied {
    match answer {
        Answer::Classic => line(classic),
        Answer::Meta { quiet: true, .. } | Answer::Silent => line(b""),
        Answer::Meta { opaque, .. } => meta_line(meta, opaque),
    }
}

/// Appends the `VALUE` line of a `len`-byte value of `key` (with a CAS of 0 when `cas`).
pub fn put_value_line(out: &mut BytesMut, key: &Key, flags: u32, len: usize, cas: bool) {
    out.reserve(key.sent.len() + 40);
    out.put_slice(b"VALUE ");
    out.put_slice(&key.sent);
    out.put_u8(b' ');
    put_decimal(out, flags);
    out.put_u8(b' ');
    put_decimal(out, len as u64);
    if cas {
        out.put_slice(b" 0");
    }
    out.put_slice(b"\r\n");
}

/// Appends the `VALUE` block of `key` (with a CAS of 0 when `cas`) to `out`.
pub fn put_value_block(out: &mut BytesMut, key: &Key, flags: u32, body: &[u8], cas: bool) {
    out.reserve(body.len() + 2);
    put_value_line(out, key, flags, body.len(), cas);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn read_reply(keys: &[Key], form: &Form, outcomes: &[&Outcome]) -> Replied {
    let mut out = BytesMut::new();
    let mut values = 0;
    let mut max_age: Option<u32> = None;
    for (key, outcome) in keys.iter().zip(outcomes) {
        let Outcome::Hit {
            flags,
            max_age: age,
            body,
        } = outcome
        else {
            continue;
        };
        values += 1;
        if let Some(age) = age {
            max_age = Some(max_age.map_or(*age, |m| m.min(*age)));
        }
        match form {
            Form::Classic { cas } => put_value_block(&mut out, key, *flags, body, *cas),
            Form::Meta(ask) => {
                out.reserve(body.len() + key.sent.len() + 64);
                match ask.value {
                    true => {
                        out.put_slice(b"VA ");
                        put_decimal(&mut out, body.len() as u64);
                    }
                    false => out.put_slice(b"HD"),
                }
                if ask.flags {
                    out.put_slice(b" f");
                    put_decimal(&mut out, *flags);
                }
                if ask.ttl {
                    out.put_slice(b" t");
                    match age {
                        Some(age) => put_decimal(&mut out, *age),
                        None => out.put_slice(b"-1"),
                    }
                }
                if ask.size {
                    out.put_slice(b" s");
                    put_decimal(&mut out, body.len() as u64);
                }
                if ask.cas {
                    out.put_slice(b" c0");
                }
                if ask.hit_before {
                    out.put_slice(b" h0");
                }
                if ask.last_access {
                    out.put_slice(b" l0");
                }
                if ask.key {
                    out.put_slice(b" k");
                    out.put_slice(&key.sent);
                    if ask.base64 {
                        out.put_slice(b" b");
                    }
                }
                if let Some(opaque) = &ask.opaque {
                    out.put_slice(b" O");
                    out.put_slice(opaque);
                }
                out.put_slice(b"\r\n");
                if ask.value {
                    out.put_slice(body);
                    out.put_slice(b"\r\n");
                }
            }
        }
    }
    let tail = match form {
        Form::Classic { .. } => {
            out.put_slice(b"END\r\n");
            5
        }
        Form::Meta(ask) if values == 0 && !ask.quiet => match &ask.opaque {
            Some(opaque) => {
                let start = out.len();
                out.put_slice(b"EN O");
                out.put_slice(opaque);
                out.put_slice(b"\r\n");
                out.len() - start
            }
            None => {
                out.put_slice(b"EN\r\n");
                4
            }
        },
        Form::Meta(_) => 0,
    };
    Replied::Reply {
        reply: out.freeze(),
        tail,
        values,
        max_age,
    }
}
