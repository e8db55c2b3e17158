//! The reply to `lru_crawler metadump all`, parsed one line at a time from whatever part of the
//! stream has arrived, so that a dump of millions of keys is never held whole: the engine reads
//! a bounded buffer, takes keys from its front as its window allows, and stops reading the
//! socket while it is full (the server's crawler then waits on TCP).
//!
//! Lines look like `key=<url-encoded key> exp=<unix time or -1> la=... cas=... fetch=... cls=...
//! size=...` and end with `\n` (memcached 1.6 sends no `\r` there); the dump ends with `END\r\n`.
//! Instead of a dump the server may answer `BUSY <why>` (its crawler is serving another dump) or
//! `ERROR <why>` (for instance the crawler is disabled).

/// Longest dump line accepted: a 250-byte key url-encoded is 750 bytes, the other fields are a
/// few dozen; anything longer is not a dump.
pub const MAX_LINE: usize = 4096;

/// One line of a dump.
#[derive(Debug, PartialEq, Eq)]
pub enum DumpLine {
    /// A key, url-decoded (raw bytes, possibly not a valid text-protocol key).
    Key(Vec<u8>),
    /// The dump is complete.
    End,
    /// The crawler is busy; the line as sent (retry later).
    Busy(String),
    /// The server refused the dump; the line as sent.
    Refused(String),
}

/// The first complete line of `buf` and how many bytes it took, `Ok(None)` while the line is
/// incomplete, or why the stream is not a dump.
pub fn next_line(buf: &[u8]) -> Result<Option<(DumpLine, usize)>, String> {
    let Some(newline) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_LINE {
            return Err(format!("metadump line over {MAX_LINE} bytes"));
        }
        return Ok(None);
    };
    if newline > MAX_LINE {
        return Err(format!("metadump line over {MAX_LINE} bytes"));
    }
    let whole = buf.get(..newline).unwrap_or_default();
    let line = whole.strip_suffix(b"\r").unwrap_or(whole);
    let used = newline + 1;
    if let Some(rest) = line.strip_prefix(b"key=") {
        let encoded = rest.split(|&b| b == b' ').next().unwrap_or_default();
        return match url_decode(encoded) {
            Some(key) if !key.is_empty() => Ok(Some((DumpLine::Key(key), used))),
            _ => Err(format!("malformed metadump key '{}'", show(encoded))),
        };
    }
    if line == b"END" {
        return Ok(Some((DumpLine::End, used)));
    }
    let text = show(line);
    if line.starts_with(b"BUSY") {
        return Ok(Some((DumpLine::Busy(text), used)));
    }
    if line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
    {
        return Ok(Some((DumpLine::Refused(text), used)));
    }
    Err(format!("unexpected metadump line '{text}'"))
}

/// One line of the reply to `stats`, as far as a dump cares.
#[derive(Debug, PartialEq, Eq)]
pub enum StatLine {
    /// `STAT lru_crawler_running <0|1>`: whether the crawler is serving a dump or a crawl now.
    CrawlerRunning(bool),
    /// Any other `STAT` line.
    Other,
    /// The reply is complete.
    End,
}

/// The first complete line of a `stats` reply at the front of `buf` (asked before each dump:
/// memcached 1.6 blocks a worker thread asked for a dump while its crawler is running, so a
/// dump is only asked of an idle crawler).
pub fn next_stat(buf: &[u8]) -> Result<Option<(StatLine, usize)>, String> {
    let Some(newline) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_LINE {
            return Err(format!("stats line over {MAX_LINE} bytes"));
        }
        return Ok(None);
    };
    let whole = buf.get(..newline).unwrap_or_default();
    let line = whole.strip_suffix(b"\r").unwrap_or(whole);
    let used = newline + 1;
    if line == b"END" {
        return Ok(Some((StatLine::End, used)));
    }
    match line.strip_prefix(b"STAT lru_crawler_running ") {
        Some(value) => Ok(Some((StatLine::CrawlerRunning(value != b"0"), used))),
        None if line.starts_with(b"STAT ") => Ok(Some((StatLine::Other, used))),
        None => Err(format!("unexpected stats line '{}'", show(line))),
    }
}

/// `%XX` sequences decoded (memcached escapes every byte outside the unreserved set); `None`
/// when a `%` is not followed by two hex digits.
pub fn url_decode(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let high = hex(*bytes.next()?)?;
            let low = hex(*bytes.next()?)?;
            out.push(high << 4 | low);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// At most 100 bytes of `line`, escaped, for an error reason.
fn show(line: &[u8]) -> String {
    let cut = line.get(..line.len().min(100)).unwrap_or_default();
    cut.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &[u8] = b"key=a%2520b exp=1796537049 la=1796536949 cas=1 fetch=no cls=1 size=71\n\
key=c exp=-1 la=1796536949 cas=2 fetch=no cls=1 size=66\n\
key=saA%03 exp=1796536959 la=1796536949 cas=3 fetch=no cls=1 size=69\n\
END\r\n";

    /// Every line of `chunks` fed one after another into a buffer, as the engine does.
    fn parse_chunks(chunks: &[&[u8]]) -> Result<Vec<DumpLine>, String> {
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some((line, used)) = next_line(&buf)? {
                buf.drain(..used);
                lines.push(line);
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(lines)
    }

    fn expected() -> Vec<DumpLine> {
        vec![
            DumpLine::Key(b"a%20b".to_vec()),
            DumpLine::Key(b"c".to_vec()),
            DumpLine::Key(b"saA\x03".to_vec()),
            DumpLine::End,
        ]
    }

    #[test]
    fn whole_dump() {
        assert_eq!(parse_chunks(&[DUMP]), Ok(expected()));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        for cut in 0..=DUMP.len() {
            let (a, b) = DUMP.split_at(cut);
            assert_eq!(parse_chunks(&[a, b]), Ok(expected()), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = DUMP.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), Ok(expected()), "one byte at a time");
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode(b"plain"), Some(b"plain".to_vec()));
        assert_eq!(url_decode(b"%41%2f%2F%00x"), Some(b"A//\0x".to_vec()));
        assert_eq!(url_decode(b"%e2%82%ac"), Some("€".as_bytes().to_vec()));
        assert_eq!(url_decode(b"bad%4"), None);
        assert_eq!(url_decode(b"bad%zz"), None);
        assert!(next_line(b"key=bad%g1 exp=-1\n").is_err());
        assert!(next_line(b"key= exp=-1\n").is_err());
    }

    #[test]
    fn busy_and_error() {
        assert_eq!(
            next_line(b"BUSY currently processing crawler request\r\n"),
            Ok(Some((
                DumpLine::Busy("BUSY currently processing crawler request".into()),
                43
            )))
        );
        assert_eq!(
            next_line(b"ERROR lru crawler disabled\r\n"),
            Ok(Some((
                DumpLine::Refused("ERROR lru crawler disabled".into()),
                28
            )))
        );
        assert!(matches!(
            next_line(b"SERVER_ERROR out of memory\r\n"),
            Ok(Some((DumpLine::Refused(_), _)))
        ));
        assert!(next_line(b"VALUE x 0 1\r\n")
            .err()
            .is_some_and(|e| e.contains("unexpected metadump line")));
    }

    #[test]
    fn stats_before_a_dump() {
        let reply =
            b"STAT pid 1\r\nSTAT lru_crawler_running 1\r\nSTAT lru_crawler_starts 3\r\nEND\r\n";
        let mut rest: &[u8] = reply;
        let mut lines = Vec::new();
        while let Some((line, used)) = next_stat(rest).expect("stats") {
            lines.push(line);
            rest = &rest[used..];
        }
        assert_eq!(
            lines,
            [
                StatLine::Other,
                StatLine::CrawlerRunning(true),
                StatLine::Other,
                StatLine::End
            ]
        );
        assert_eq!(
            next_stat(b"STAT lru_crawler_running 0\r\n"),
            Ok(Some((StatLine::CrawlerRunning(false), 28)))
        );
        assert_eq!(next_stat(b"STAT lru_crawler_run"), Ok(None));
        assert!(next_stat(b"ERROR\r\n").is_err());
    }

    #[test]
    fn incomplete_and_oversized_lines() {
        assert_eq!(next_line(b""), Ok(None));
        assert_eq!(next_line(b"key=abc exp=-1"), Ok(None));
        assert_eq!(next_line(b"EN"), Ok(None));
        let long = vec![b'k'; MAX_LINE + 1];
        assert!(next_line(&long).is_err());
        let mut long_line = b"key=".to_vec();
        long_line.extend(vec![b'k'; MAX_LINE]);
        long_line.push(b'\n');
        assert!(next_line(&long_line).is_err());
    }
}
