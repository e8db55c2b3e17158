//! The meta commands a warming job sends and the framing of their replies.
//!
//! A job reads with `mg <key> v f t u` (value, client flags, remaining TTL; `u` so that reading
//! every key does not reorder the source's LRU) and writes with `ms <key> <len> F<flags> T<ttl>
//! ME` (add: a key the target holds is answered `NS` and left alone) or `MS` (set). Replies come
//! back in order on each connection, so they are matched to keys by a FIFO and carry no key.
//! A key that the text protocol cannot carry as it is goes base64 with the `b` flag.

use crate::protocol::decimal;
use crate::warming::request::{is_valid_key, MAX_KEY_LENGTH};

/// Longest reply header line accepted (`VA <len> f<flags> t<ttl>` is well under 100 bytes).
pub const MAX_HEADER: usize = 1024;
/// Largest value a job copies (memcached's own limit is 1 MiB by default, at most 1 GiB); a
/// larger one fails the job rather than making the process hold it.
pub const MAX_VALUE: usize = 128 << 20;
/// memcached reads an expiry above 30 days as a unix time, not a number of seconds.
const RELATIVE_TTL_LIMIT: i64 = 30 * 24 * 3600;

/// The reply to `mg <key> v f t`.
#[derive(Debug, PartialEq, Eq)]
pub enum GetReply {
    /// The key's value is `buf[start..start + len]`, with its flags and remaining TTL (-1: none).
    Hit {
        /// Client flags.
        flags: u32,
        /// Remaining seconds, -1 for no expiry.
        ttl: i64,
        /// Offset of the value in the parsed buffer.
        start: usize,
        /// Length of the value.
        len: usize,
    },
    /// The source does not hold the key (`EN`).
    Miss,
}

/// The reply to `ms`.
#[derive(Debug, PartialEq, Eq)]
pub enum SetReply {
    /// Stored (`HD`).
    Stored,
    /// Not stored: in add mode, the target already holds the key (`NS`).
    NotStored,
    /// The target refused this one value (`SERVER_ERROR ...`: over its item size limit, out of
    /// memory): the key fails, the connection stays in step (memcached swallowed the value).
    Refused,
}

/// The first line of `buf` (without `\r\n`) and the offset after it; `Ok(None)` while
/// incomplete. A line over [`MAX_HEADER`] is refused whether or not its end has arrived, so the
/// verdict never depends on how the stream was cut.
fn header(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    match memchr::memchr(b'\n', buf) {
        None if buf.len() > MAX_HEADER => Err(format!("reply line over {MAX_HEADER} bytes")),
        Some(newline) if newline > MAX_HEADER => Err(format!("reply line over {MAX_HEADER} bytes")),
        None => Ok(None),
        Some(newline) => {
            let line = buf.get(..newline).unwrap_or_default();
            match line.strip_suffix(b"\r") {
                Some(line) => Ok(Some((line, newline + 1))),
                None => Err(format!("reply line without \\r: '{}'", show(line))),
            }
        }
    }
}

/// The error a reply line that is not the expected one stands for.
fn unexpected(line: &[u8]) -> String {
    if line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR") || line == b"ERROR" {
        show(line)
    } else {
        format!("unexpected reply '{}'", show(line))
    }
}

/// Frames one reply to `mg` at the front of `buf`: the reply and its length, `Ok(None)` while
/// incomplete, or why it is not one.
pub fn parse_get(buf: &[u8]) -> Result<Option<(GetReply, usize)>, String> {
    let Some((line, after)) = header(buf)? else {
        return Ok(None);
    };
    if line == b"EN" {
        return Ok(Some((GetReply::Miss, after)));
    }
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    if tokens.next() != Some(b"VA") {
        return Err(unexpected(line));
    }
    let len: usize = tokens
        .next()
        .and_then(decimal::parse_usize)
        .ok_or_else(|| format!("malformed reply '{}'", show(line)))?;
    if len > MAX_VALUE {
        return Err(format!(
            "a value of {len} bytes (over the {MAX_VALUE}-byte limit)"
        ));
    }
    let (mut flags, mut ttl) = (0u32, -1i64);
    // A lease placeholder (an empty value under a lease, `W`/`Z`) or a stale value (`X`) is
    // not data: it is not copied (see docs/warming.md).
    let (mut leased, mut stale) = (false, false);
    for token in tokens {
        let parsed = match token.split_first() {
            Some((b'f', digits)) => decimal::parse_u64(digits)
                .and_then(|f| u32::try_from(f).ok())
                .map(|f| flags = f),
            Some((b't', digits)) => decimal::parse_i64(digits).map(|t| ttl = t),
            Some((b'W' | b'Z', [])) => {
                leased = true;
                Some(())
            }
            Some((b'X', [])) => {
                stale = true;
                Some(())
            }
            _ => Some(()),
        };
        if parsed.is_none() {
            return Err(format!("malformed reply '{}'", show(line)));
        }
    }
    let end = after + len;
    match buf.get(end..end + 2) {
        None => Ok(None),
        Some(b"\r\n") if stale || (leased && len == 0) => Ok(Some((GetReply::Miss, end + 2))),
        Some(b"\r\n") => Ok(Some((
            GetReply::Hit {
                flags,
                ttl,
                start: after,
                len,
            },
            end + 2,
        ))),
        Some(_) => Err(format!("value of '{}' not followed by \\r\\n", show(line))),
    }
}

/// Frames one reply to `ms` at the front of `buf`.
pub fn parse_set(buf: &[u8]) -> Result<Option<(SetReply, usize)>, String> {
    let Some((line, after)) = header(buf)? else {
        return Ok(None);
    };
    match line {
        b"HD" => Ok(Some((SetReply::Stored, after))),
        b"NS" => Ok(Some((SetReply::NotStored, after))),
        _ if line.starts_with(b"SERVER_ERROR ") => Ok(Some((SetReply::Refused, after))),
        _ => Err(unexpected(line)),
    }
}

/// The key as the wire carries it: as it is, or base64 with `b` set when it is not a plain
/// text-protocol key. `None` when even base64 exceeds the key length limit (a key memcached's
/// meta commands cannot name).
pub fn wire_key(key: &[u8]) -> Option<(Vec<u8>, bool)> {
    if is_valid_key(key) {
        return Some((key.to_vec(), false));
    }
    let encoded = base64(key);
    (encoded.len() <= MAX_KEY_LENGTH).then_some((encoded, true))
}

/// Appends `mg <key> [b ]v f t u\r\n`.
pub fn push_get(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key);
    if binary {
        out.extend_from_slice(b" b");
    }
    out.extend_from_slice(b" v f t u\r\n");
}

/// Appends `ms <key> <len> [b ]F<flags> T<ttl> M<E|S>\r\n<value>\r\n`.
pub fn push_set(
    out: &mut Vec<u8>,
    key: &[u8],
    binary: bool,
    value: &[u8],
    flags: u32,
    exptime: i64,
    overwrite: bool,
) {
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(key);
    let mode = if overwrite { 'S' } else { 'E' };
    let b = if binary { " b" } else { "" };
    out.extend_from_slice(
        format!(" {}{b} F{flags} T{exptime} M{mode}\r\n", value.len()).as_bytes(),
    );
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `T` to store an item with that has `ttl` seconds left (`-1`: none) at unix time `now`:
/// 0 for none; at least 1 otherwise (a TTL of 0 left is about to expire, and `T0` would make it
/// immortal); a unix time beyond 30 days (memcached reads larger numbers so).
pub fn target_exptime(ttl: i64, now: u64) -> i64 {
    match ttl {
        t if t < 0 => 0,
        0 => 1,
        t if t > RELATIVE_TTL_LIMIT => i64::try_from(now).unwrap_or(i64::MAX).saturating_add(t),
        t => t,
    }
}

/// Standard base64 with padding (what memcached's `b` flag expects).
pub fn base64(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |v: u32, shift: u32| {
        let index = ((v >> shift) & 63) as usize;
        ALPHABET.get(index).copied().unwrap_or(b'=')
    };
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        for (slot, &b) in group.iter_mut().zip(chunk) {
            *slot = b;
        }
        let v = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        out.push(sextet(v, 18));
        out.push(sextet(v, 12));
        out.push(if chunk.len() > 1 { sextet(v, 6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(v, 0) } else { b'=' });
    }
    out
}

/// At most 100 bytes of `line`, escaped, for an error reason.
fn show(line: &[u8]) -> String {
    let cut = line.get(..line.len().min(100)).unwrap_or_default();
    cut.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_hit_miss_and_split_at_every_byte() {
        let reply = b"VA 3 f5 t100\r\nabc\r\nEN\r\nVA 0 f0 t-1\r\n\r\n";
        for cut in 0..=reply.len() {
            let mut buf = reply[..cut].to_vec();
            let mut got = Vec::new();
            let mut rest: &[u8] = &reply[cut..];
            loop {
                match parse_get(&buf).expect("well-formed") {
                    Some((r, used)) => {
                        if let GetReply::Hit { start, len, .. } = r {
                            got.push(Some(buf[start..start + len].to_vec()));
                        } else {
                            got.push(None);
                        }
                        assert!(!matches!(r, GetReply::Hit { flags: 5, ttl, .. } if ttl != 100));
                        buf.drain(..used);
                    }
                    None if rest.is_empty() => break,
                    None => {
                        buf.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
            assert_eq!(
                got,
                vec![Some(b"abc".to_vec()), None, Some(Vec::new())],
                "cut {cut}"
            );
        }
        assert_eq!(
            parse_get(b"VA 2 f7 t-1\r\nxy\r\n"),
            Ok(Some((
                GetReply::Hit {
                    flags: 7,
                    ttl: -1,
                    start: 13,
                    len: 2
                },
                17
            )))
        );
    }

    #[test]
    fn get_errors() {
        let err = |b: &[u8]| parse_get(b).expect_err("malformed");
        assert_eq!(
            err(b"SERVER_ERROR out of memory\r\n"),
            "SERVER_ERROR out of memory"
        );
        assert_eq!(
            err(b"CLIENT_ERROR bad command line format\r\n"),
            "CLIENT_ERROR bad command line format"
        );
        assert_eq!(err(b"ERROR\r\n"), "ERROR");
        assert!(err(b"HD\r\n").contains("unexpected reply"));
        assert!(err(b"VA x f1\r\n").contains("malformed"));
        // A lease placeholder, or a stale value, is not copied; a value being refreshed is.
        for placeholder in [
            &b"VA 0 f0 t30 Z\r\n\r\n"[..],
            b"VA 0 f0 t3 W\r\n\r\n",
            b"VA 1 f0 t3 X W\r\nx\r\n",
        ] {
            assert_eq!(
                parse_get(placeholder),
                Ok(Some((GetReply::Miss, placeholder.len())))
            );
        }
        let refreshed = b"VA 1 f2 t3 Z\r\nx\r\n";
        let hit = GetReply::Hit {
            flags: 2,
            ttl: 3,
            start: 14,
            len: 1,
        };
        assert_eq!(parse_get(refreshed), Ok(Some((hit, refreshed.len()))));
        assert!(err(b"VA 1 fx\r\n").contains("malformed"));
        assert!(err(b"VA 1 f1 t1\r\nab\r\n").contains("not followed"));
        assert!(err(b"EN\n").contains("without"));
        assert!(err(format!("VA {} f1\r\n", MAX_VALUE + 1).as_bytes()).contains("limit"));
        assert!(err(&[b'V'; MAX_HEADER + 1]).contains("over"));
    }

    #[test]
    fn a_line_over_the_limit_is_refused_however_it_is_cut() {
        let mut reply = b"VA 4 ".to_vec();
        reply.extend(std::iter::repeat_n(b'f', MAX_HEADER));
        reply.extend_from_slice(b"\r\nabcd\r\n");
        assert!(parse_get(&reply).is_err(), "whole");
        assert!(
            parse_get(&reply[..MAX_HEADER + 1]).is_err(),
            "cut before its end"
        );
        assert_eq!(parse_get(&reply[..MAX_HEADER]), Ok(None), "not over it yet");
    }

    #[test]
    fn set_replies() {
        assert_eq!(parse_set(b"HD\r\nNS\r\n"), Ok(Some((SetReply::Stored, 4))));
        assert_eq!(parse_set(b"NS\r\n"), Ok(Some((SetReply::NotStored, 4))));
        assert_eq!(parse_set(b"HD\r"), Ok(None));
        assert_eq!(
            parse_set(b"SERVER_ERROR object too large for cache\r\nHD\r\n"),
            Ok(Some((SetReply::Refused, 41)))
        );
        assert_eq!(
            parse_set(b"CLIENT_ERROR bad data chunk\r\n").expect_err("error"),
            "CLIENT_ERROR bad data chunk"
        );
        assert!(parse_set(b"EX\r\n")
            .expect_err("error")
            .contains("unexpected"));
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        push_get(&mut out, b"k", false);
        push_get(&mut out, b"Zm9v", true);
        push_set(&mut out, b"k", false, b"abc", 5, 0, false);
        push_set(&mut out, b"Zm9v", true, b"", 0, 10, true);
        assert_eq!(
            out,
            b"mg k v f t u\r\nmg Zm9v b v f t u\r\nms k 3 F5 T0 ME\r\nabc\r\nms Zm9v 0 b F0 T10 MS\r\n\r\n"
        );
    }

    #[test]
    fn keys_on_the_wire() {
        assert_eq!(wire_key(b"plain"), Some((b"plain".to_vec(), false)));
        assert_eq!(wire_key(b"a b"), Some((b"YSBi".to_vec(), true)));
        assert_eq!(wire_key(&[0x03]), Some((b"Aw==".to_vec(), true)));
        assert_eq!(
            wire_key(&[b' '; 186]).map(|(k, b)| (k.len(), b)),
            Some((248, true))
        );
        assert_eq!(wire_key(&[b' '; 187]), None);
        assert_eq!(base64(b""), b"");
        assert_eq!(base64(b"f"), b"Zg==");
        assert_eq!(base64(b"fo"), b"Zm8=");
        assert_eq!(base64(b"foo"), b"Zm9v");
        assert_eq!(base64(b"foobar"), b"Zm9vYmFy");
    }

    #[test]
    fn exptimes() {
        let now = 1_800_000_000;
        assert_eq!(target_exptime(-1, now), 0);
        assert_eq!(target_exptime(0, now), 1);
        assert_eq!(target_exptime(100, now), 100);
        assert_eq!(target_exptime(RELATIVE_TTL_LIMIT, now), RELATIVE_TTL_LIMIT);
        assert_eq!(
            target_exptime(RELATIVE_TTL_LIMIT + 1, now),
            1_800_000_000 + RELATIVE_TTL_LIMIT + 1
        );
    }
}
