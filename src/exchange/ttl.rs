//! Capping the TTL of a write (failover's `failover_ttl`): a write that lands on a fallback
//! pool (a gutter) should not park data there for longer than the outage is likely to last.
//!
//! The exptime is rewritten in the request line: classic `set add replace append prepend cas`
//! (`<cmd> <key> <flags> <exptime> ...`), `touch <key> <exptime>`, and meta `ms` (its `T` flag,
//! added when absent). memcached reads an exptime of 0 as "never", up to 30 days as seconds from
//! now, and above that as a unix time; each is capped by its own meaning. A negative exptime
//! (expire at once) is left as it is.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{Command, Request};

/// memcached's largest relative exptime: 30 days.
const MAX_RELATIVE: i64 = 60 * 60 * 24 * 30;

/// `exptime` with its lifetime capped at `ttl` seconds, `now` being the unix time.
fn capped(exptime: i64, ttl: u32, now: u64) -> i64 {
    let ttl = i64::from(ttl);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    match exptime {
        e if e < 0 => e,
        0 => ttl,
        e if e <= MAX_RELATIVE => e.min(ttl),
        e if e.saturating_sub(now) > ttl => ttl,
        e => e,
    }
}

/// `request` (whose bytes are `bytes`) with its exptime capped at `ttl` seconds, or `None` when
/// it sets no lifetime (reads, deletes, arithmetic...) or its line cannot be read.
pub fn cap(request: &Request, bytes: &[u8], ttl: u32, now: u64) -> Option<Bytes> {
    let line_end = request.line_len.min(bytes.len());
    let line = bytes.get(..line_end)?;
    let text = line.strip_suffix(b"\n")?;
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let rest = bytes.get(line_end..)?;
    let tokens: Vec<&[u8]> = text
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = BytesMut::with_capacity(bytes.len() + 16);
    let number = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<i64>().ok();
    match request.command {
        Command::MetaSet => {
            let mut seen = false;
            for (i, token) in tokens.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b' ');
                }
                // Flags come after `ms <key> <datalen>`.
                match token.strip_prefix(b"T").filter(|_| i >= 3) {
                    Some(value) => {
                        seen = true;
                        out.put_u8(b'T');
                        let exptime = number(value)?;
                        out.put_slice(capped(exptime, ttl, now).to_string().as_bytes());
                    }
                    None => out.put_slice(token),
                }
            }
            if !seen {
                out.put_slice(format!(" T{ttl}").as_bytes());
            }
        }
        // The classic storage commands (the commands with data but `ms`, above) and touch.
        command if command.has_data() || command == Command::Touch => {
            let at = if command == Command::Touch { 2 } else { 3 };
            let exptime = number(tokens.get(at)?)?;
            for (i, token) in tokens.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b' ');
                }
                if i == at {
                    out.put_slice(capped(exptime, ttl, now).to_string().as_bytes());
                } else {
                    out.put_slice(token);
                }
            }
        }
        _ => return None,
    }
    out.put_slice(b"\r\n");
    out.put_slice(rest);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_request, Limits, Parsed};

    fn capped_line(line: &[u8], ttl: u32) -> Option<String> {
        let Ok(Parsed::Complete(request)) = parse_request(line, &Limits::default()) else {
            panic!("not a request: {line:?}");
        };
        cap(&request, line, ttl, 1_800_000_000).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn classic_writes_and_touch_get_the_smaller_lifetime() {
        let got = capped_line(b"set k 5 0 2\r\nhi\r\n", 60);
        assert_eq!(got.as_deref(), Some("set k 5 60 2\r\nhi\r\n"));
        let got = capped_line(b"add k 5 30 2 noreply\r\nhi\r\n", 60);
        assert_eq!(got.as_deref(), Some("add k 5 30 2 noreply\r\nhi\r\n"));
        let got = capped_line(b"cas k 0 9000 1 77\r\nx\r\n", 60);
        assert_eq!(got.as_deref(), Some("cas k 0 60 1 77\r\nx\r\n"));
        let got = capped_line(b"touch k 0\r\n", 60);
        assert_eq!(got.as_deref(), Some("touch k 60\r\n"));
        // Unix times: one far off is capped, one within the cap is kept.
        let got = capped_line(b"set k 0 1900000000 1\r\nx\r\n", 60);
        assert_eq!(got.as_deref(), Some("set k 0 60 1\r\nx\r\n"));
        let got = capped_line(b"set k 0 1800000030 1\r\nx\r\n", 60);
        assert_eq!(got.as_deref(), Some("set k 0 1800000030 1\r\nx\r\n"));
        let got = capped_line(b"set k 0 -1 1\r\nx\r\n", 60);
        assert_eq!(got.as_deref(), Some("set k 0 -1 1\r\nx\r\n"));
    }

    #[test]
    fn meta_set_gets_a_t_flag() {
        let got = capped_line(b"ms k 2 F5\r\nhi\r\n", 60);
        assert_eq!(got.as_deref(), Some("ms k 2 F5 T60\r\nhi\r\n"));
        let got = capped_line(b"ms k 2 T0 q\r\nhi\r\n", 60);
        assert_eq!(got.as_deref(), Some("ms k 2 T60 q\r\nhi\r\n"));
        let got = capped_line(b"ms k 2 T5\r\nhi\r\n", 60);
        assert_eq!(got.as_deref(), Some("ms k 2 T5\r\nhi\r\n"));
    }

    #[test]
    fn requests_without_a_lifetime_are_left_alone() {
        assert_eq!(capped_line(b"get k\r\n", 60), None);
        assert_eq!(capped_line(b"delete k\r\n", 60), None);
        assert_eq!(capped_line(b"incr k 1\r\n", 60), None);
    }
}
