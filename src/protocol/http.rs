//! The HTTP/1.1 side of an HTTP origin (SPEC §13), as pure functions over bytes: the `GET`
//! request for a key (the key percent-encoded onto the base path), and the framing of the
//! origin's response: its head ([`parse_head`]: status, `Bifrost-Flags`, `Cache-Control:
//! max-age`, how the body is framed) and a chunked body ([`Chunked`], incremental, with the body
//! limit enforced as it grows).
//!
//! Responses are input from another machine: nothing here panics on any bytes, and no length
//! the origin states is trusted past the limit the caller gives.

use bytes::{BufMut, BytesMut};

/// Most headers a response may carry.
const MAX_HEADERS: usize = 64;
/// Longest response head (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a response cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// Not an HTTP/1.x response head, or a head over [`MAX_HEAD`].
    BadHead,
    /// A `Content-Length` that is not a number, or two that differ.
    BadLength,
    /// The body (stated or read) is over the limit.
    TooLarge,
    /// A chunked body that is not one.
    BadChunk,
}

/// How the body of a response is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs to the connection's close (which cannot be told from a cut one).
    UntilClose,
}

/// A response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `Bifrost-Flags` (the memcached client flags of the value; 0 without the header).
    pub flags: u32,
    /// `Cache-Control: max-age` in seconds, when given.
    pub max_age: Option<u32>,
    /// How the body is framed.
    pub body: Body,
    /// The origin will close the connection after this response (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    pub closes: bool,
}

/// The response head at the start of `buf`, and its length: `Ok(None)` while it is not all
/// here. A body longer than `max_body` (as stated by `Content-Length`) is refused at once.
pub fn parse_head(buf: &[u8], max_body: usize) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::BadHead),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HttpError::BadHead),
    };
    if len > MAX_HEAD {
        return Err(HttpError::BadHead);
    }
    let status = response.code.ok_or(HttpError::BadHead)?;
    let mut head = Head {
        status,
        flags: 0,
        max_age: None,
        body: Body::Length(0),
        closes: response.version == Some(0),
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        let name = header.name;
        let value = trim(header.value);
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value).ok_or(HttpError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = last_token(value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("bifrost-flags") {
            head.flags = parse_decimal(value)
                .and_then(|f| u32::try_from(f).ok())
                .unwrap_or(0);
        } else if name.eq_ignore_ascii_case("cache-control") {
            head.max_age = max_age(value).or(head.max_age);
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case(b"close") {
                head.closes = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                head.closes = false;
            }
        }
    }
    // Responses that never have a body (RFC 9112 §6.3).
    let bodiless = status / 100 == 1 || status == 204 || status == 304;
    head.body = if bodiless {
        Body::Length(0)
    } else if chunked {
        Body::Chunked
    } else {
        match length {
            Some(n) if n > max_body => return Err(HttpError::TooLarge),
            Some(n) => Body::Length(n),
            // No length and not chunked: the body runs to the close; an origin connection is
            // not kept then, and the body is still held to the limit by the caller.
            None => {
                head.closes = true;
                Body::UntilClose
            }
        }
    };
    Ok(Some((head, len)))
}

/// `value` without surrounding spaces and tabs.
fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => value.get(s..=e).unwrap_or_default(),
        _ => &[],
    }
}

/// The last comma-separated token of a header value (`gzip, chunked` -> `chunked`).
fn last_token(value: &[u8]) -> &[u8] {
    trim(value.rsplit(|&b| b == b',').next().unwrap_or_default())
}

/// A decimal number of at most 19 digits (no sign, no spaces).
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// The `max-age` of a `Cache-Control` value, capped at `u32::MAX` seconds.
fn max_age(value: &[u8]) -> Option<u32> {
    value.split(|&b| b == b',').find_map(|directive| {
        let directive = trim(directive);
        let (name, seconds) = directive.split_at(directive.iter().position(|&b| b == b'=')?);
        if !name.eq_ignore_ascii_case(b"max-age") {
            return None;
        }
        let seconds = trim(seconds.get(1..)?);
        let seconds = seconds
            .strip_prefix(b"\"")
            .and_then(|s| s.strip_suffix(b"\""))
            .unwrap_or(seconds);
        parse_decimal(seconds).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    })
}

/// What [`Chunked::feed`] found in the bytes it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input used.
    pub used: usize,
    /// Ranges of the input that are body data, in order.
    pub data: Vec<std::ops::Range<usize>>,
    /// The body (and its trailers) ended.
    pub done: bool,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (up to 16 hex digits, then extensions up to the line end).
    Size {
        digits: u8,
        value: u64,
        ext: bool,
        cr: bool,
    },
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its `\r\n` (the bool: `\r` seen).
    DataEnd(bool),
    /// In the trailer section: at the start of a line (`at_start`), after a `\r` (`cr`).
    Trailer {
        at_start: bool,
        cr: bool,
    },
    Done,
}

/// An incremental chunked-body decoder with a body limit.
#[derive(Clone, Copy, Debug)]
pub struct Chunked {
    state: ChunkState,
    /// Body bytes so far.
    total: u64,
    max_body: u64,
}

impl Chunked {
    /// A decoder for a body of at most `max_body` bytes.
    pub fn new(max_body: usize) -> Chunked {
        Chunked {
            state: ChunkState::Size {
                digits: 0,
                value: 0,
                ext: false,
                cr: false,
            },
            total: 0,
            max_body: max_body as u64,
        }
    }

    /// Reads as much of `input` as belongs to the body.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, HttpError> {
        let mut progress = Progress::default();
        let mut at = 0;
        while at < input.len() && self.state != ChunkState::Done {
            let byte = input.get(at).copied().unwrap_or(0);
            match self.state {
                ChunkState::Size {
                    digits,
                    value,
                    ext,
                    cr,
                } => {
                    at += 1;
                    self.state = match (byte, ext, cr) {
                        (b'\n', _, _) if digits == 0 => return Err(HttpError::BadChunk),
                        (b'\n', _, _) if value == 0 => ChunkState::Trailer {
                            at_start: true,
                            cr: false,
                        },
                        (b'\n', _, _) => {
                            self.total = self.total.saturating_add(value);
                            if self.total > self.max_body {
                                return Err(HttpError::TooLarge);
                            }
                            ChunkState::Data(value)
                        }
                        (_, _, true) => return Err(HttpError::BadChunk),
                        (b'\r', _, false) => ChunkState::Size {
                            digits,
                            value,
                            ext,
                            cr: true,
                        },
                        (_, true, _) => self.state,
                        (b';' | b' ' | b'\t', false, _) if digits > 0 => ChunkState::Size {
                            digits,
                            value,
                            ext: true,
                            cr,
                        },
                        (hex, false, _) => {
                            let nibble = (hex as char).to_digit(16).ok_or(HttpError::BadChunk)?;
                            if digits >= 15 {
                                return Err(HttpError::TooLarge);
                            }
                            ChunkState::Size {
                                digits: digits + 1,
                                value: (value << 4) | u64::from(nibble),
                                ext,
                                cr,
                            }
                        }
                    };
                }
                ChunkState::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - at);
                    progress.data.push(at..at + take);
                    at += take;
                    self.state = match left - take as u64 {
                        0 => ChunkState::DataEnd(false),
                        left => ChunkState::Data(left),
                    };
                }
                ChunkState::DataEnd(cr) => {
                    at += 1;
                    self.state = match (byte, cr) {
                        (b'\r', false) => ChunkState::DataEnd(true),
                        (b'\n', _) => ChunkState::Size {
                            digits: 0,
                            value: 0,
                            ext: false,
                            cr: false,
                        },
                        _ => return Err(HttpError::BadChunk),
                    };
                }
                ChunkState::Trailer { at_start, cr } => {
                    at += 1;
                    self.state = match byte {
                        b'\n' if at_start => ChunkState::Done,
                        b'\n' => ChunkState::Trailer {
                            at_start: true,
                            cr: false,
                        },
                        b'\r' if !cr => ChunkState::Trailer { at_start, cr: true },
                        _ => ChunkState::Trailer {
                            at_start: false,
                            cr: false,
                        },
                    };
                }
                ChunkState::Done => {}
            }
        }
        progress.used = at;
        progress.done = self.state == ChunkState::Done;
        Ok(progress)
    }
}

/// Appends to `out` the head of `<method> <base_path><key> HTTP/1.1` to `host`: the key (when
/// given) percent-encoded (every byte outside RFC 3986's unreserved characters, `%` included),
/// then each of `headers` with a decimal value, then the blank line. Keep-alive is HTTP/1.1's
/// default, so no `Connection` header is sent.
pub fn write_head(
    out: &mut BytesMut,
    method: &str,
    (host, base_path): (&str, &str),
    key: Option<&[u8]>,
    headers: &[(&str, u64)],
) {
    out.reserve(method.len() + base_path.len() + host.len() + 32 + key.map_or(0, |k| k.len() * 3));
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(base_path.as_bytes());
    if let Some(key) = key {
        percent_encode(key, out);
    }
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    out.put_slice(host.as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        crate::protocol::decimal::put_u64(out, *value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Appends `key` percent-encoded to `out`.
pub fn percent_encode(key: &[u8], out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.put_u8(b);
        } else {
            let hex = |nibble: u8| HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
            out.put_slice(&[b'%', hex(b >> 4), hex(b & 15)]);
        }
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
