//! A binary request frame translated into the memcached text request it means (meta commands,
//! which carry CAS, flags, TTL and quiet mode), and what its answer must be translated back into
//! ([`Pending`]).
//!
//! Keys: a binary key may hold any byte. One that memcached text can carry as it is (1 to 250
//! bytes, none a space or control byte) goes as it is; any other goes base64-encoded with the
//! meta `b` flag, so routing (which decodes it) places it by its real bytes.
//!
//! Opcodes the proxy answers itself (SASL, verbosity, an unknown opcode, a request whose
//! arguments are wrong) become `mn`, whose `MN` the reply translator replaces with the status
//! [`Answer::Fixed`] names: so every frame still has exactly one text request, in order.

use bytes::{BufMut, Bytes, BytesMut};

use super::{opcode, status, Header, HEADER_LEN};
use crate::protocol::base64;

/// Longest key memcached takes.
pub const MAX_KEY: usize = 250;

/// What the text reply to a translated request must be turned into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `VA <len> f<flags> c<cas>` or `EN`: a get (with the key in the response for GetK/GATK).
    Get {
        /// Echo the key.
        with_key: bool,
    },
    /// `HD c<cas>`, `NS`, `EX`, `NF`: a set, add, replace, append or prepend.
    Store,
    /// `HD`, `NF`, `EX`: a delete.
    Delete,
    /// `VA <len> c<cas>` with the number, `NF`, `NS`, `EX`: an increment or decrement.
    Arithmetic,
    /// `HD` or `EN`: a touch.
    Touch,
    /// `MN`.
    Noop,
    /// `VERSION <v>`.
    Version,
    /// `OK`.
    Flush,
    /// `STAT <name> <value>` lines and `END`.
    Stat,
    /// `MN` of the `mn` a quit became; the connection closes after it.
    Quit,
    /// `MN`, answered with this status instead (an error answered by the proxy itself).
    Fixed(u16),
}

/// What a request's answer needs: its opcode and opaque, its key (for the responses that echo
/// it), how to read its text reply, and whether success is answered (quiet opcodes: no).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The request's opcode, echoed.
    pub opcode: u8,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The key, for the responses that carry it (GetK, GATK and their quiet forms; empty for
    /// the others).
    pub key: Bytes,
    /// How the text reply reads.
    pub answer: Answer,
    /// A quiet opcode: success is not answered (misses neither, for gets).
    pub quiet: bool,
}

/// A frame translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translated {
    /// The text request (a whole line, and a data block for storage commands).
    pub text: Bytes,
    /// How to answer it.
    pub pending: Pending,
    /// A second text request that follows it with no answer of its own (`quit` after a
    /// quit's `mn`).
    pub then: Option<Bytes>,
}

/// `frame` (a whole frame: `header` and its body) as memcached text.
pub fn translate(header: &Header, frame: &[u8]) -> Translated {
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    let extras_len = usize::from(header.extras_len);
    let key_len = usize::from(header.key_len);
    let extras = body.get(..extras_len).unwrap_or_default();
    let key = body
        .get(extras_len..extras_len + key_len)
        .unwrap_or_default();
    let value = body.get(extras_len + key_len..).unwrap_or_default();
    let op = header.opcode;
    let pending = |answer: Answer, quiet: bool| Pending {
        opcode: op,
        opaque: header.opaque,
        // Kept only where the response echoes it (no copy per request otherwise).
        key: match op {
            opcode::GETK | opcode::GETKQ | opcode::GATK | opcode::GATKQ => {
                Bytes::copy_from_slice(key)
            }
            _ => Bytes::new(),
        },
        answer,
        quiet,
    };
    let fixed = |code: u16| Translated {
        text: Bytes::from_static(b"mn\r\n"),
        pending: pending(Answer::Fixed(code), false),
        then: None,
    };
    // A key text must carry base64-encoded is longer on the wire: it must still fit memcached's
    // 250 bytes there.
    let wire_len = match plain_key(key) {
        true => key.len(),
        false => key.len().div_ceil(3) * 4,
    };
    let keyed = !key.is_empty() && wire_len <= MAX_KEY;
    match op {
        opcode::GET | opcode::GETQ | opcode::GETK | opcode::GETKQ => {
            if !keyed || !takes(extras, 0, value.is_empty()) {
                return fixed(status::INVALID_ARGUMENTS);
            }
            let quiet = matches!(op, opcode::GETQ | opcode::GETKQ);
            let with_key = matches!(op, opcode::GETK | opcode::GETKQ);
            let text = meta_line(b"mg", key, Flags::new().words(&[b"v", b"f", b"c"]), quiet);
            translated(text, pending(Answer::Get { with_key }, quiet))
        }
        opcode::GAT | opcode::GATQ | opcode::GATK | opcode::GATKQ => {
            let Some(exptime) =
                u32_at(extras, 0).filter(|_| keyed && takes(extras, 4, value.is_empty()))
            else {
                return fixed(status::INVALID_ARGUMENTS);
            };
            let quiet = matches!(op, opcode::GATQ | opcode::GATKQ);
            let with_key = matches!(op, opcode::GATK | opcode::GATKQ);
            let flags = Flags::new()
                .words(&[b"v", b"f", b"c"])
                .num(b'T', ttl(exptime).into());
            let text = meta_line(b"mg", key, flags, quiet);
            translated(text, pending(Answer::Get { with_key }, quiet))
        }
        opcode::TOUCH => {
            let Some(exptime) =
                u32_at(extras, 0).filter(|_| keyed && takes(extras, 4, value.is_empty()))
            else {
                return fixed(status::INVALID_ARGUMENTS);
            };
            // Its answer carries the item's flags and CAS, as memcached's does.
            let flags = Flags::new()
                .num(b'T', ttl(exptime).into())
                .words(&[b"f", b"c"]);
            let text = meta_line(b"mg", key, flags, false);
            translated(text, pending(Answer::Touch, false))
        }
        opcode::SET
        | opcode::SETQ
        | opcode::ADD
        | opcode::ADDQ
        | opcode::REPLACE
        | opcode::REPLACEQ => {
            let (Some(flags), Some(exptime)) = (u32_at(extras, 0), u32_at(extras, 4)) else {
                return fixed(status::INVALID_ARGUMENTS);
            };
            if !keyed || extras.len() != 8 {
                return fixed(status::INVALID_ARGUMENTS);
            }
            let quiet = matches!(op, opcode::SETQ | opcode::ADDQ | opcode::REPLACEQ);
            let mode: &[u8] = match op {
                opcode::ADD | opcode::ADDQ => b"ME",
                opcode::REPLACE | opcode::REPLACEQ => b"MR",
                _ => b"MS",
            };
            let flags = Flags::new()
                .num(b'F', flags.into())
                .num(b'T', ttl(exptime).into())
                .words(&[mode, b"c"])
                .cas(header.cas);
            let text = meta_set(key, value, flags, quiet);
            translated(text, pending(Answer::Store, quiet))
        }
        opcode::APPEND | opcode::APPENDQ | opcode::PREPEND | opcode::PREPENDQ => {
            if !keyed || !extras.is_empty() {
                return fixed(status::INVALID_ARGUMENTS);
            }
            let quiet = matches!(op, opcode::APPENDQ | opcode::PREPENDQ);
            let mode: &[u8] = match op {
                opcode::APPEND | opcode::APPENDQ => b"MA",
                _ => b"MP",
            };
            let flags = Flags::new().words(&[mode, b"c"]).cas(header.cas);
            let text = meta_set(key, value, flags, quiet);
            translated(text, pending(Answer::Store, quiet))
        }
        opcode::DELETE | opcode::DELETEQ => {
            if !keyed || !takes(extras, 0, value.is_empty()) {
                return fixed(status::INVALID_ARGUMENTS);
            }
            let quiet = op == opcode::DELETEQ;
            let text = meta_line(b"md", key, Flags::new().cas(header.cas), quiet);
            translated(text, pending(Answer::Delete, quiet))
        }
        opcode::INCREMENT | opcode::INCREMENTQ | opcode::DECREMENT | opcode::DECREMENTQ => {
            let (Some(delta), Some(initial), Some(exptime)) =
                (u64_at(extras, 0), u64_at(extras, 8), u32_at(extras, 16))
            else {
                return fixed(status::INVALID_ARGUMENTS);
            };
            if !keyed || !takes(extras, 20, value.is_empty()) {
                return fixed(status::INVALID_ARGUMENTS);
            }
            let quiet = matches!(op, opcode::INCREMENTQ | opcode::DECREMENTQ);
            let mode: &[u8] = match op {
                opcode::INCREMENT | opcode::INCREMENTQ => b"MI",
                _ => b"MD",
            };
            let mut flags = Flags::new().num(b'D', delta).words(&[mode, b"v", b"c"]);
            // 0xffffffff: do not create a missing counter.
            if exptime != u32::MAX {
                flags = flags.num(b'N', ttl(exptime).into()).num(b'J', initial);
            }
            let text = meta_line(b"ma", key, flags.cas(header.cas), quiet);
            translated(text, pending(Answer::Arithmetic, quiet))
        }
        opcode::NOOP => translated(Bytes::from_static(b"mn\r\n"), pending(Answer::Noop, false)),
        opcode::VERSION => translated(
            Bytes::from_static(b"version\r\n"),
            pending(Answer::Version, false),
        ),
        opcode::FLUSH | opcode::FLUSHQ => {
            let quiet = op == opcode::FLUSHQ;
            let delay = match extras.len() {
                0 => 0,
                4 => ttl(u32_at(extras, 0).unwrap_or(0)),
                _ => return fixed(status::INVALID_ARGUMENTS),
            };
            let mut text = BytesMut::with_capacity(32);
            text.put_slice(b"flush_all");
            if delay > 0 {
                text.put_slice(format!(" {delay}").as_bytes());
            }
            if quiet {
                text.put_slice(b" noreply");
            }
            text.put_slice(b"\r\n");
            translated(text.freeze(), pending(Answer::Flush, quiet))
        }
        opcode::QUIT => Translated {
            text: Bytes::from_static(b"mn\r\n"),
            pending: pending(Answer::Quit, false),
            then: Some(Bytes::from_static(b"quit\r\n")),
        },
        opcode::QUITQ => Translated {
            text: Bytes::from_static(b"quit\r\n"),
            pending: pending(Answer::Quit, true),
            then: None,
        },
        opcode::STAT => {
            // The proxy's own counters, whatever group was asked.
            translated(
                Bytes::from_static(b"stats\r\n"),
                pending(Answer::Stat, false),
            )
        }
        opcode::VERBOSITY => fixed(status::OK),
        opcode::SASL_LIST_MECHS | opcode::SASL_AUTH | opcode::SASL_STEP => {
            fixed(status::NOT_SUPPORTED)
        }
        _ => fixed(status::UNKNOWN_COMMAND),
    }
}

/// Exactly `len` bytes of extras, and `value_ok` (what the opcode says of its value).
fn takes(extras: &[u8], len: usize, value_ok: bool) -> bool {
    extras.len() == len && value_ok
}

fn translated(text: Bytes, pending: Pending) -> Translated {
    Translated {
        text,
        pending,
        then: None,
    }
}

/// A request's meta flags, each with its leading space, built on the stack (no allocation per
/// flag).
#[derive(Clone, Copy)]
struct Flags {
    buf: [u8; 128],
    len: usize,
}

impl Flags {
    fn new() -> Flags {
        Flags {
            buf: [0; 128],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            slot.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    /// ` <word>` for each of `words`.
    fn words(mut self, words: &[&[u8]]) -> Flags {
        for word in words {
            self.push(b" ");
            self.push(word);
        }
        self
    }

    /// ` <letter><n>`.
    fn num(mut self, letter: u8, n: u64) -> Flags {
        self.push(&[b' ', letter]);
        self.push(crate::protocol::decimal::digits(n, &mut [0; 20]));
        self
    }

    /// ` C<cas>` when `cas` is not 0.
    fn cas(self, cas: u64) -> Flags {
        match cas {
            0 => self,
            cas => self.num(b'C', cas),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// A binary expiration (unsigned 32 bits) as meta carries it (signed 32 bits): a larger one is
/// a unix time past 2038, read as the latest one meta can name.
fn ttl(exptime: u32) -> u32 {
    exptime.min(i32::MAX as u32)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_be_bytes(a))
}

/// True when memcached text can carry `key` as it is.
fn plain_key(key: &[u8]) -> bool {
    key.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// Appends the key as text carries it; true when it went base64-encoded (the request then
/// needs the `b` flag).
fn put_key(out: &mut BytesMut, key: &[u8]) -> bool {
    if plain_key(key) {
        out.put_slice(key);
        return false;
    }
    let mut encoded = [0u8; base64::MAX_ENCODED];
    let len = base64::encode(key, &mut encoded);
    out.put_slice(encoded.get(..len).unwrap_or_default());
    true
}

/// `<verb> <key> <flags...> [b] [q]\r\n`.
fn meta_line(verb: &[u8], key: &[u8], flags: Flags, quiet: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(verb.len() + key.len() * 2 + 48);
    out.put_slice(verb);
    out.put_u8(b' ');
    let encoded = put_key(&mut out, key);
    out.put_slice(flags.as_bytes());
    if encoded {
        out.put_slice(b" b");
    }
    if quiet {
        out.put_slice(b" q");
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// `ms <key> <len> <flags...> [b] [q]\r\n<value>\r\n`.
fn meta_set(key: &[u8], value: &[u8], flags: Flags, quiet: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(key.len() * 2 + value.len() + 64);
    out.put_slice(b"ms ");
    let encoded = put_key(&mut out, key);
    out.put_u8(b' ');
    out.put_slice(value.len().to_string().as_bytes());
    out.put_slice(flags.as_bytes());
    if encoded {
        out.put_slice(b" b");
    }
    if quiet {
        out.put_slice(b" q");
    }
    out.put_slice(b"\r\n");
    out.put_slice(value);
    out.put_slice(b"\r\n");
    out.freeze()
}
