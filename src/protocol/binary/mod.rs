//! memcached's binary protocol (SPEC §14): the 24-byte header, the opcodes memcached 1.6 serves
//! and its status codes, and the two translations that let the rest of the proxy see only
//! memcached text: [`request::translate`] turns a request frame into the text (meta) request it
//! means, and [`reply::ReplyTranslator`] turns the text reply back into binary response frames.
//!
//! Everything here is a pure function of bytes (no socket), so a fuzz target drives it whole.
//! Frames are client input: nothing here panics on any bytes.

pub mod reply;
pub mod request;

#[cfg(test)]
mod tests;

/// A request frame's first byte.
pub const REQUEST_MAGIC: u8 = 0x80;
/// A response frame's first byte.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// The header's length.
pub const HEADER_LEN: usize = 24;

/// The opcodes memcached 1.6 serves.
#[allow(missing_docs)]
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// The status codes of responses.
#[allow(missing_docs)]
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const KEY_NOT_FOUND: u16 = 0x0001;
    pub const KEY_EXISTS: u16 = 0x0002;
    pub const VALUE_TOO_LARGE: u16 = 0x0003;
    pub const INVALID_ARGUMENTS: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const NON_NUMERIC: u16 = 0x0006;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const OUT_OF_MEMORY: u16 = 0x0082;
    pub const NOT_SUPPORTED: u16 = 0x0083;
    pub const INTERNAL_ERROR: u16 = 0x0084;
    pub const BUSY: u16 = 0x0085;
    pub const TEMPORARY_FAILURE: u16 = 0x0086;
}

/// A request frame that is not one: the wrong magic, or extras and key longer than the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadFrame;

/// A frame's header, as read from its first 24 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The opcode.
    pub opcode: u8,
    /// Key length.
    pub key_len: u16,
    /// Extras length.
    pub extras_len: u8,
    /// Total body length (extras + key + value).
    pub body_len: u32,
    /// Echoed in the response.
    pub opaque: u32,
    /// The CAS value (0: none).
    pub cas: u64,
}

impl Header {
    /// The header at the start of `buf`: `Ok(None)` while fewer than 24 bytes are here, `Err`
    /// for a frame that is not one (wrong magic, or extras and key longer than the body).
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, BadFrame> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(h);
        if bytes[0] != REQUEST_MAGIC {
            return Err(BadFrame);
        }
        let header = Header {
            opcode: bytes[1],
            key_len: u16::from_be_bytes([bytes[2], bytes[3]]),
            extras_len: bytes[4],
            body_len: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            opaque: u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
            cas: u64::from_be_bytes([
                bytes[16], bytes[17], bytes[18], bytes[19], bytes[20], bytes[21], bytes[22],
                bytes[23],
            ]),
        };
        if u32::from(header.key_len) + u32::from(header.extras_len) > header.body_len {
            return Err(BadFrame);
        }
        Ok(Some(header))
    }

    /// The whole frame's length (header and body).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// The value's length (the body less extras and key).
    pub fn value_len(&self) -> usize {
        (self.body_len as usize)
            .saturating_sub(self.key_len as usize)
            .saturating_sub(self.extras_len as usize)
    }
}

/// A response header: `status`, with `extras`, `key` and `value` lengths making its body.
pub fn response_header(
    opcode: u8,
    status: u16,
    opaque: u32,
    cas: u64,
    (extras, key, value): (usize, usize, usize),
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = RESPONSE_MAGIC;
    h[1] = opcode;
    h[2..4].copy_from_slice(&u16::try_from(key).unwrap_or(u16::MAX).to_be_bytes());
    h[4] = u8::try_from(extras).unwrap_or(u8::MAX);
    h[6..8].copy_from_slice(&status.to_be_bytes());
    let body = u32::try_from(extras + key + value).unwrap_or(u32::MAX);
    h[8..12].copy_from_slice(&body.to_be_bytes());
    h[12..16].copy_from_slice(&opaque.to_be_bytes());
    h[16..24].copy_from_slice(&cas.to_be_bytes());
    h
}
