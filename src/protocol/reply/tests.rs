//! Table-driven tests of the reply framer: every kind, every error, every split point.

use super::*;

const MAX: usize = 1024;

fn frame(buf: &[u8], kind: ReplyKind) -> Result<Option<Reply>, ReplyError> {
    parse_reply(buf, kind, MAX)
}

fn reply(len: usize, values: usize, error: bool) -> Result<Option<Reply>, ReplyError> {
    Ok(Some(Reply { len, values, error }))
}

/// (kind, complete reply, values, error): each framed as exactly its own length.
fn complete_samples() -> Vec<(ReplyKind, &'static [u8], usize, bool)> {
    use ReplyKind::*;
    vec![
        (Line, b"STORED\r\n", 0, false),
        (Line, b"NOT_STORED\r\n", 0, false),
        (Line, b"DELETED\r\n", 0, false),
        (Line, b"NOT_FOUND\n", 0, false),
        (Line, b"12345\r\n", 0, false),
        (Line, b"OK\r\n", 0, false),
        (Line, b"VERSION 1.6.21\r\n", 0, false),
        (Line, b"ERROR\r\n", 0, true),
        (Line, b"ERROR unknown command\r\n", 0, true),
        (Line, b"CLIENT_ERROR bad command line format\r\n", 0, true),
        (Line, b"SERVER_ERROR out of memory\r\n", 0, true),
        (Line, b"TOUCHED\r\n", 0, false),
        (Line, b"EXISTS\r\n", 0, false),
        (Retrieval, b"END\r\n", 0, false),
        (Retrieval, b"VALUE foo 0 3\r\nbar\r\nEND\r\n", 1, false),
        (Retrieval, b"VALUE foo 5 3 77\r\nbar\r\nEND\r\n", 1, false),
        (
            Retrieval,
            b"VALUE a 0 1\r\nx\r\nVALUE b 0 0\r\n\r\nEND\r\n",
            2,
            false,
        ),
        (
            Retrieval,
            b"VALUE foo 0 7\r\n\r\nEND\r\n\r\nEND\r\n",
            1,
            false,
        ),
        (
            Retrieval,
            b"VALUE foo 0 3\r\nbar\r\nSERVER_ERROR out of memory\r\n",
            1,
            true,
        ),
        (Retrieval, b"SERVER_ERROR backend down\r\n", 0, true),
        (
            Retrieval,
            b"CLIENT_ERROR bad command line format\r\n",
            0,
            true,
        ),
        (Retrieval, b"ERROR\r\n", 0, true),
        (Stats, b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n", 0, false),
        (Stats, b"END\r\n", 0, false),
        (Stats, b"ITEM foo [3 b; 0 s]\r\nEND\r\n", 0, false),
        (Stats, b"ERROR\r\n", 0, true),
        (Meta, b"HD\r\n", 1, false),
        (Meta, b"HD c123 Oabc\r\n", 1, false),
        (Meta, b"EN\r\n", 0, false),
        (Meta, b"NF\r\n", 0, false),
        (Meta, b"NS\r\n", 0, false),
        (Meta, b"EX\r\n", 0, false),
        (Meta, b"MN\r\n", 0, false),
        (
            Meta,
            b"ME foo exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\n",
            0,
            false,
        ),
        (Meta, b"VA 3 f1 t-1\r\nbar\r\n", 1, false),
        (Meta, b"VA 0\r\n\r\n", 1, false),
        (Meta, b"VA 4\r\nMN\r\n\r\n", 1, false),
        (Meta, b"CLIENT_ERROR bad data chunk\r\n", 0, true),
        (Meta, b"SERVER_ERROR out of memory\r\n", 0, true),
        (UntilNoop, b"MN\r\n", 0, false),
        (UntilNoop, b"STORED\r\nMN\r\n", 0, false),
        (UntilNoop, b"VA 2 t\r\nhi\r\nHD\r\nMN\r\n", 2, false),
        (UntilNoop, b"VALUE k 0 2\r\nMN\r\nEND\r\nMN\r\n", 1, false),
        (
            UntilNoop,
            b"SERVER_ERROR oops\r\nDELETED\r\nMN\r\n",
            0,
            true,
        ),
        (UntilNoop, b"\r\nNOT_FOUND\r\n42\r\nMN\r\n", 0, false),
    ]
}

#[test]
fn frames_every_kind() {
    for (kind, sample, values, error) in complete_samples() {
        let name = format!("{kind:?} {:?}", String::from_utf8_lossy(sample));
        assert_eq!(
            frame(sample, kind),
            reply(sample.len(), values, error),
            "{name}"
        );
    }
}

#[test]
fn malformed_replies() {
    use ReplyKind::*;
    let cases: Vec<(ReplyKind, &[u8])> = vec![
        (Retrieval, b"VALUE foo 0 3\r\nbarXYEND\r\n"),
        (Retrieval, b"HELLO\r\n"),
        (Retrieval, b"STORED\r\n"),
        (Retrieval, b"VALUE foo 0\r\n"),
        (Retrieval, b"VALUE foo 0 abc\r\n"),
        (Retrieval, b"VALUE foo 0 -3\r\n"),
        (Retrieval, b"VALUE foo 0 3 1 2\r\n"),
        (Retrieval, b"VALUE foo 0 99999999999999999999999\r\n"),
        (Retrieval, b"VALUEfoo 0 3\r\nbar\r\nEND\r\n"),
        (Stats, b"STAT a 1\r\nFOO\r\n"),
        (Stats, b"VALUE foo 0 1\r\n"),
        (Meta, b"XX\r\n"),
        (Meta, b"HDX\r\n"),
        (Meta, b"\r\n"),
        (Meta, b"VA x\r\n"),
        (Meta, b"VA\r\n"),
        (Meta, b"VA 3\r\nbarXY"),
        (Meta, b"STORED\r\n"),
        (Line, b"ERRORS\r\n"),
        (Line, b"VALUE k 0 10\r\n"),
        (Line, b"\x00\xff\xfeNOT A MEMCACHED REPLY\r\n"),
        (Line, b"\r\n"),
        (Line, b"12a\r\n"),
        (UntilNoop, b"VA 2\r\nhiXXMN\r\n"),
        (UntilNoop, b"VALUE k 0\r\nMN\r\n"),
        (UntilNoop, b"VA nope\r\nMN\r\n"),
    ];
    for (kind, input) in cases {
        assert_eq!(
            frame(input, kind),
            Err(ReplyError::Malformed),
            "{kind:?} {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn line_limit() {
    assert_eq!(
        parse_reply(b"STORED\r\n", ReplyKind::Line, 8),
        reply(8, 0, false)
    );
    assert_eq!(
        parse_reply(b"STORED!\r\n", ReplyKind::Line, 8),
        Err(ReplyError::LineTooLong)
    );
    assert_eq!(
        parse_reply(b"STORED!!", ReplyKind::Line, 8),
        Err(ReplyError::LineTooLong)
    );
    assert_eq!(parse_reply(b"STORED!", ReplyKind::Line, 8), Ok(None));
    // The limit is per line, not per reply; data blocks are not lines.
    let mut big = b"VALUE k 0 100\r\n".to_vec();
    big.extend_from_slice(&[b'x'; 100]);
    big.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(
        parse_reply(&big, ReplyKind::Retrieval, 16),
        reply(big.len(), 1, false)
    );
    assert_eq!(
        parse_reply(b"END\r\nSTAT a very long line", ReplyKind::Stats, 8),
        reply(5, 0, false)
    );
    assert_eq!(
        parse_reply(b"STAT a very long line", ReplyKind::Stats, 8),
        Err(ReplyError::LineTooLong)
    );
    assert_eq!(
        parse_reply(b"", ReplyKind::Line, 0),
        Err(ReplyError::LineTooLong)
    );
}

#[test]
fn every_split_point_is_incomplete_then_identical() {
    for (kind, sample, _, _) in complete_samples() {
        let whole = frame(sample, kind);
        for cut in 0..sample.len() {
            assert_eq!(
                frame(&sample[..cut], kind),
                Ok(None),
                "{kind:?} {:?} cut {cut}",
                String::from_utf8_lossy(sample)
            );
        }
        // Trailing bytes (the next reply) change nothing.
        let mut longer = sample.to_vec();
        longer.extend_from_slice(b"VALUE x 0 1\r\n");
        assert_eq!(frame(&longer, kind), whole);
    }
}

#[test]
fn pipelined_replies() {
    use ReplyKind::*;
    let stream: &[u8] =
        b"VALUE a 0 1\r\nx\r\nEND\r\nSTORED\r\nVA 2 f0\r\nhi\r\nHD\r\nEND\r\nMN\r\n\
STAT a 1\r\nEND\r\nSERVER_ERROR busy\r\n";
    let kinds = [Retrieval, Line, Meta, UntilNoop, Stats, Line];
    let lens = [21, 8, 13, 13, 15, 19];
    let mut offset = 0;
    for (kind, len) in kinds.iter().zip(lens) {
        let got = frame(&stream[offset..], *kind).unwrap().unwrap();
        assert_eq!(got.len, len, "{kind:?} at {offset}");
        offset += got.len;
    }
    assert_eq!(offset, stream.len());
}

#[test]
fn error_names() {
    assert_eq!(ReplyError::Malformed.as_str(), "malformed_reply");
    assert_eq!(ReplyError::LineTooLong.as_str(), "reply_line_too_long");
    assert_eq!(ReplyError::WrongKey.as_str(), "wrong_key");
    assert_eq!(ReplyError::Unexpected.as_str(), "unexpected_reply");
    assert_eq!(ReplyError::TooLarge.as_str(), "value_too_large");
    assert_eq!(ReplyError::Unsolicited.as_str(), "unsolicited_reply");
}

#[test]
fn huge_counts_and_garbage_never_panic() {
    let mut many = Vec::new();
    for n in 0..10_000 {
        many.extend_from_slice(format!("VALUE k{n} 0 1\r\nx\r\n").as_bytes());
    }
    many.extend_from_slice(b"END\r\n");
    assert_eq!(
        frame(&many, ReplyKind::Retrieval),
        reply(many.len(), 10_000, false)
    );
    let alphabet: &[&[u8]] = &[
        b"VALUE",
        b"VA",
        b"END",
        b"MN",
        b"HD",
        b"STAT",
        b"ERROR",
        b"SERVER_ERROR",
        b" ",
        b"\r\n",
        b"\n",
        b"\r",
        b"0",
        b"3",
        b"-1",
        b"99999999999999999999",
        b"k",
        b"\x00",
        b"\xff",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kinds = [
        ReplyKind::Line,
        ReplyKind::Retrieval,
        ReplyKind::Stats,
        ReplyKind::Meta,
        ReplyKind::UntilNoop,
    ];
    for _ in 0..20_000 {
        let mut buf = Vec::new();
        for _ in 0..(next() % 20) {
            buf.extend_from_slice(alphabet[(next() % alphabet.len() as u64) as usize]);
        }
        for kind in kinds {
            for max in [16, MAX] {
                let whole = parse_reply(&buf, kind, max);
                if let Ok(Some(r)) = whole {
                    assert!(r.len > 0 && r.len <= buf.len());
                    assert_eq!(buf[r.len - 1], b'\n');
                    assert_eq!(parse_reply(&buf[..r.len], kind, max), whole);
                }
                for cut in 0..buf.len() {
                    let got = parse_reply(&buf[..cut], kind, max);
                    assert!(
                        got == Ok(None) || got == whole,
                        "{kind:?} {buf:?} cut {cut}"
                    );
                }
            }
        }
    }
}

/// Fed one byte at a time to one framer that keeps its state, every sample frames to the same
/// length as in one go, and rebasing after handing pieces on keeps the count right.
#[test]
fn incremental_framing_matches_whole_framing() {
    for (kind, sample, values, error) in complete_samples() {
        let mut framer = ReplyFramer::default();
        let mut done_at = None;
        for end in 1..=sample.len() {
            if framer.advance(&sample[..end], kind, 1024) == Ok(true) {
                done_at = Some(end);
                break;
            }
        }
        assert_eq!(done_at, Some(sample.len()), "{kind:?} {sample:?}");
        assert_eq!(
            framer.reply(),
            Reply {
                len: sample.len(),
                values,
                error
            }
        );

        // Hand on whatever is framed after each byte: the pieces rebuild the sample.
        let mut framer = ReplyFramer::default();
        let (mut start, mut pieces) = (0, Vec::new());
        for end in 1..=sample.len() {
            let done = framer.advance(&sample[start..end], kind, 1024) == Ok(true);
            let n = framer.framed();
            pieces.extend_from_slice(&sample[start..start + n]);
            framer.rebase(n);
            start += n;
            if done {
                break;
            }
        }
        assert_eq!(pieces, sample, "{kind:?}");
    }
}

/// Frames `reply` in one go as the answer to `request` (the line as sent), with the checks
/// the connection makes.
fn checked(request: &str, kind: ReplyKind, reply: &[u8]) -> Result<Option<Reply>, ReplyError> {
    let expect = Expect::of(kind, request.as_bytes());
    let mut framer = ReplyFramer::default();
    let checks = Checks {
        expect,
        line: request.as_bytes(),
    };
    Ok(framer
        .advance_checked(reply, kind, checks, MAX)?
        .then(|| framer.reply()))
}

/// Replies memcached sends to each request pass the checks (every split point too).
#[test]
fn replies_that_answer_their_request_pass_the_checks() {
    use ReplyKind::*;
    let cases: Vec<(&str, ReplyKind, &[u8])> = vec![
        ("get foo\r\n", Retrieval, b"VALUE foo 0 3\r\nbar\r\nEND\r\n"),
        ("get foo\r\n", Retrieval, b"END\r\n"),
        ("get foo\r\n", Retrieval, b"SERVER_ERROR out of memory\r\n"),
        (
            "gets foo\r\n",
            Retrieval,
            b"VALUE foo 0 3 42\r\nbar\r\nEND\r\n",
        ),
        (
            "gat 10 foo\r\n",
            Retrieval,
            b"VALUE foo 0 3\r\nbar\r\nEND\r\n",
        ),
        (
            "gats 0 foo\r\n",
            Retrieval,
            b"VALUE foo 0 3 7\r\nbar\r\nEND\r\n",
        ),
        (
            "get  foo  bar\r\n",
            Retrieval,
            b"VALUE bar 0 1\r\nx\r\nEND\r\n",
        ),
        (
            "get a b c\r\n",
            Retrieval,
            b"VALUE a 0 1\r\nx\r\nVALUE c 0 1\r\nz\r\nEND\r\n",
        ),
        (
            "get a a\r\n",
            Retrieval,
            b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
        ),
        ("get foo \r\n", Retrieval, b"VALUE foo 0 1\r\nx\r\nEND\r\n"),
        ("get foo\n", Retrieval, b"VALUE foo 0 1\r\nx\r\nEND\r\n"),
        ("get foo", Retrieval, b"VALUE foo 0 1\r\nx\r\nEND\r\n"),
        ("set k 0 0 1\r\nv\r\n", Line, b"STORED\r\n"),
        ("add k 0 0 1\r\nv\r\n", Line, b"NOT_STORED\r\n"),
        ("cas k 0 0 1 5\r\nv\r\n", Line, b"EXISTS\r\n"),
        ("cas k 0 0 1 5\r\nv\r\n", Line, b"NOT_FOUND\r\n"),
        (
            "set k 0 0 9999999\r\n",
            Line,
            b"SERVER_ERROR object too large for cache\r\n",
        ),
        ("delete k\r\n", Line, b"DELETED\r\n"),
        ("incr k 1\r\n", Line, b"42\r\n"),
        ("decr k 1\r\n", Line, b"NOT_FOUND\r\n"),
        ("touch k 10\r\n", Line, b"TOUCHED\r\n"),
        ("flush_all\r\n", Line, b"OK\r\n"),
        ("verbosity 1\r\n", Line, b"OK\r\n"),
        ("version\r\n", Line, b"VERSION 1.6.21\r\n"),
        ("lru_crawler metadump all\r\n", Line, b"OK\r\n"),
        ("stats\r\n", Stats, b"STAT pid 1\r\nEND\r\n"),
        ("mg foo v\r\n", Meta, b"VA 2\r\nhi\r\n"),
        ("mg foo k v t\r\n", Meta, b"VA 2 kfoo t-1\r\nhi\r\n"),
        ("mg foo k\r\n", Meta, b"HD kfoo\r\n"),
        ("mg foo k v\r\n", Meta, b"EN\r\n"),
        ("mg Zm9v b k v\r\n", Meta, b"VA 2 kZm9v b\r\nhi\r\n"),
        ("mg Zm9v b k v\r\n", Meta, b"VA 2 kfoo\r\nhi\r\n"),
        ("mg Zm9v k v b\r\n", Meta, b"HD kfoo\r\n"),
        // An item stored under a binary key (ms ... b) has its key echoed base64-encoded with
        // a b flag, even to an mg that named it in plain text (memcached 1.6.18).
        ("mg foo k v\r\n", Meta, b"VA 2 kZm9v b\r\nhi\r\n"),
        (
            "mg foo q k v\r\n",
            UntilNoop,
            b"VA 2 kZm9v b\r\nhi\r\nMN\r\n",
        ),
        ("mg !!! b k v\r\n", Meta, b"CLIENT_ERROR bad data chunk\r\n"),
        ("mg foo\r\n", Meta, b"HD\r\n"),
        (
            "mg foo v\r\n",
            Meta,
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        ("ms foo 2\r\nhi\r\n", Meta, b"HD\r\n"),
        ("ms foo 2 MA\r\nhi\r\n", Meta, b"NS\r\n"),
        ("ms foo 2 C9\r\nhi\r\n", Meta, b"EX\r\n"),
        ("ms foo 2 C9\r\nhi\r\n", Meta, b"NF\r\n"),
        ("md foo\r\n", Meta, b"HD\r\n"),
        ("md foo\r\n", Meta, b"NF\r\n"),
        ("ma foo v\r\n", Meta, b"VA 1\r\n1\r\n"),
        ("ma foo\r\n", Meta, b"NF\r\n"),
        ("mn\r\n", Meta, b"MN\r\n"),
        (
            "me foo\r\n",
            Meta,
            b"ME foo exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\n",
        ),
        ("me foo\r\n", Meta, b"EN\r\n"),
        ("set k 0 0 1 noreply\r\nv\r\n", UntilNoop, b"MN\r\n"),
        (
            "set k 0 0 1 noreply\r\nv\r\n",
            UntilNoop,
            b"CLIENT_ERROR bad data chunk\r\nMN\r\n",
        ),
        (
            "mg foo q k v\r\n",
            UntilNoop,
            b"VA 2 kfoo q\r\nhi\r\nMN\r\n",
        ),
        ("mg foo q v\r\n", UntilNoop, b"MN\r\n"),
        ("ms foo 2 q\r\nhi\r\n", UntilNoop, b"NS\r\nMN\r\n"),
        ("md foo q\r\n", UntilNoop, b"MN\r\n"),
    ];
    for (request, kind, sample) in cases {
        let name = format!("{request:?} answered {:?}", String::from_utf8_lossy(sample));
        let got = checked(request, kind, sample);
        assert_eq!(
            got.map(|r| r.map(|r| r.len)),
            Ok(Some(sample.len())),
            "{name}"
        );
        for cut in 0..sample.len() {
            assert_eq!(
                checked(request, kind, &sample[..cut]),
                Ok(None),
                "{name} cut {cut}"
            );
        }
    }
}

/// A reply that answers another request is refused: another verb's code, another key, keys
/// out of the order asked, more hits than keys.
#[test]
fn replies_that_answer_another_request_are_refused() {
    use ReplyError::*;
    use ReplyKind::*;
    let cases: Vec<(&str, ReplyKind, &[u8], ReplyError)> = vec![
        ("get foo\r\n", Retrieval, b"VALUE other 0 3\r\n", WrongKey),
        ("get foo\r\n", Retrieval, b"VALUE fo 0 3\r\n", WrongKey),
        (
            "get foo\r\n",
            Retrieval,
            b"VALUE foo 0 1\r\nx\r\nVALUE foo 0 1\r\n",
            WrongKey,
        ),
        ("gat 10 foo\r\n", Retrieval, b"VALUE 10 0 3\r\n", WrongKey),
        (
            "get foo\r\nbar\r\n",
            Retrieval,
            b"VALUE bar 0 3\r\n",
            WrongKey,
        ),
        (
            "get a b c\r\n",
            Retrieval,
            b"VALUE c 0 1\r\nz\r\nVALUE a 0 1\r\n",
            WrongKey,
        ),
        ("get a b\r\n", Retrieval, b"VALUE x 0 1\r\n", WrongKey),
        ("get foo\r\n", Retrieval, b"HD\r\n", Malformed),
        ("get foo\r\n", Retrieval, b"STORED\r\n", Malformed),
        ("set k 0 0 1\r\nv\r\n", Line, b"VALUE k 0 1\r\n", Malformed),
        ("set k 0 0 1\r\nv\r\n", Line, b"DELETED\r\n", Unexpected),
        ("set k 0 0 1\r\nv\r\n", Line, b"OK\r\n", Unexpected),
        ("set k 0 0 1\r\nv\r\n", Line, b"12\r\n", Unexpected),
        ("delete k\r\n", Line, b"STORED\r\n", Unexpected),
        ("incr k 1\r\n", Line, b"STORED\r\n", Unexpected),
        ("touch k 1\r\n", Line, b"DELETED\r\n", Unexpected),
        ("version\r\n", Line, b"STORED\r\n", Unexpected),
        ("flush_all\r\n", Line, b"VERSION 1.6\r\n", Unexpected),
        ("mg foo v\r\n", Meta, b"NS\r\n", Unexpected),
        ("mg foo v\r\n", Meta, b"MN\r\n", Unexpected),
        ("ms foo 2\r\nhi\r\n", Meta, b"EN\r\n", Unexpected),
        ("ms foo 2\r\nhi\r\n", Meta, b"VA 2\r\n", Unexpected),
        ("md foo\r\n", Meta, b"VA 2\r\n", Unexpected),
        ("mn\r\n", Meta, b"HD\r\n", Unexpected),
        ("mg foo k v\r\n", Meta, b"VA 2 kbar\r\n", WrongKey),
        ("mg foo k\r\n", Meta, b"HD kfoo2\r\n", WrongKey),
        ("mg foo k\r\n", Meta, b"HD kZm9w b\r\n", WrongKey),
        ("mg foo k\r\n", Meta, b"HD kZm9v\r\n", WrongKey),
        ("mg Zm9v b k v\r\n", Meta, b"VA 2 kbar b\r\n", WrongKey),
        ("mg Zm9v b k v\r\n", Meta, b"VA 2 kZm9w b\r\n", WrongKey),
        ("mg foo q k v\r\n", UntilNoop, b"VA 2 kbar q\r\n", WrongKey),
        (
            "set k 0 0 1 noreply\r\nv\r\n",
            UntilNoop,
            b"STORED\r\nMN\r\n",
            Unexpected,
        ),
        (
            "delete k noreply\r\n",
            UntilNoop,
            b"VALUE k 0 1\r\n",
            Unexpected,
        ),
        ("mg foo q v\r\n", UntilNoop, b"NS\r\nMN\r\n", Unexpected),
        (
            "ms foo 2 q\r\nhi\r\n",
            UntilNoop,
            b"garbage\r\nMN\r\n",
            Unexpected,
        ),
    ];
    for (request, kind, sample, error) in cases {
        assert_eq!(
            checked(request, kind, sample),
            Err(error),
            "{request:?} answered {:?}",
            String::from_utf8_lossy(sample)
        );
    }
}

/// A data block longer than any item is refused from its header line, not read until the
/// request's deadline; the largest possible item is framed as usual.
#[test]
fn impossible_sizes_are_refused_at_once() {
    use ReplyKind::*;
    for (kind, header) in [
        (Retrieval, "VALUE k 0 4000000000\r\n"),
        (Retrieval, "VALUE k 0 1073741825\r\n"),
        (Retrieval, "VALUE k 0 18446744073709551615\r\n"),
        (Meta, "VA 4000000000 t-1\r\n"),
        (UntilNoop, "VA 4000000000\r\n"),
        (UntilNoop, "VALUE k 0 4000000000\r\n"),
    ] {
        assert_eq!(
            frame(header.as_bytes(), kind),
            Err(ReplyError::TooLarge),
            "{header:?}"
        );
    }
    assert_eq!(frame(b"VALUE k 0 1073741824\r\nxx", Retrieval), Ok(None));
    assert_eq!(frame(b"VA 1073741824\r\nxx", Meta), Ok(None));
}

#[test]
fn key_prints_tell_keys_apart() {
    let keys: [&[u8]; 9] = [
        b"",
        b"a",
        b"a\0",
        b"b",
        b"ab",
        b"ba",
        b"abcdefgh",
        b"abcdefgh\0",
        b"abcdefghi",
    ];
    for (i, a) in keys.iter().enumerate() {
        let copy = a.to_vec();
        assert_eq!(
            key_print(a),
            key_print(&copy),
            "a print depends on the bytes only"
        );
        for b in &keys[i + 1..] {
            assert_ne!(key_print(a), key_print(b), "{a:?} {b:?}");
        }
    }
}

/// A split reply fed in pieces to a checking framer keeps its place among the keys asked.
#[test]
fn key_order_is_kept_across_reads() {
    let request = b"get a b c\r\n";
    let expect = Expect::of(ReplyKind::Retrieval, request);
    let reply = b"VALUE a 0 1\r\nx\r\nVALUE b 0 1\r\ny\r\nVALUE a 0 1\r\n";
    let mut framer = ReplyFramer::default();
    let checks = Checks {
        expect,
        line: request,
    };
    let mut result = Ok(false);
    for end in 1..=reply.len() {
        result = framer.advance_checked(&reply[..end], ReplyKind::Retrieval, checks, MAX);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(ReplyError::WrongKey));
}

/// Random requests and replies from the protocol's own words: the checks never panic, only
/// refuse (a reply they accept frames to the same length without them), and give the same
/// answer fed in two pieces.
#[test]
fn checks_only_refuse_and_never_panic() {
    let requests: &[&[u8]] = &[
        b"get a\r\n",
        b"get a b\r\n",
        b"gat 1 a\r\n",
        b"mg a k v\r\n",
        b"mg YQ== b k\r\n",
        b"set a 0 0 1\r\nx\r\n",
        b"delete a noreply\r\n",
        b"mg a q k\r\n",
        b"ms a 1 q\r\nx\r\n",
        b"mn\r\n",
        b"version\r\n",
        b"",
    ];
    let words: &[&[u8]] = &[
        b"VALUE a 0 1\r\nx\r\n",
        b"VALUE b 0 1\r\nx\r\n",
        b"VA 1 ka\r\nx\r\n",
        b"VA 1 kb\r\n",
        b"HD ka\r\n",
        b"HD\r\n",
        b"EN\r\n",
        b"NS\r\n",
        b"MN\r\n",
        b"END\r\n",
        b"STORED\r\n",
        b"DELETED\r\n",
        b"VERSION 1\r\n",
        b"SERVER_ERROR x\r\n",
        b"VALUE a 0 4000000000\r\n",
        b"\r\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let kinds = [
        ReplyKind::Line,
        ReplyKind::Retrieval,
        ReplyKind::Stats,
        ReplyKind::Meta,
        ReplyKind::UntilNoop,
    ];
    for _ in 0..5_000 {
        let request = requests[next(requests.len())];
        let reply: Vec<u8> = (0..next(5))
            .flat_map(|_| words[next(words.len())].to_vec())
            .collect();
        for kind in kinds {
            let checks = Checks {
                expect: Expect::of(kind, request),
                line: request,
            };
            let mut framer = ReplyFramer::default();
            let whole = framer
                .advance_checked(&reply, kind, checks, MAX)
                .map(|done| done.then(|| framer.framed()));
            if let Ok(Some(len)) = whole {
                assert_eq!(frame(&reply, kind).map(|r| r.map(|r| r.len)), Ok(Some(len)));
            }
            let cut = next(reply.len() + 1);
            let mut framer = ReplyFramer::default();
            let split = match framer.advance_checked(&reply[..cut], kind, checks, MAX) {
                Ok(true) => Ok(Some(framer.framed())),
                Ok(false) => framer
                    .advance_checked(&reply, kind, checks, MAX)
                    .map(|done| done.then(|| framer.framed())),
                Err(e) => Err(e),
            };
            assert_eq!(split, whole, "{kind:?} {request:?} {reply:?} cut {cut}");
        }
    }
}

/// Flags wider than 32 bits or a cas unique wider than 64 are no memcached reply (and a
/// write-back copying such flags would be a request memcached refuses without reading its
/// data block); the widest real ones pass.
#[test]
fn value_headers_with_numbers_memcached_cannot_hold_are_refused() {
    for header in [
        "VALUE k 4294967296 1\r\n",
        "VALUE k 518446744073709551615 3\r\n",
        "VALUE k 00000000000 1\r\n",
        "VALUE k 0 1 18446744073709551616\r\n",
        "VALUE k 0 1 -1\r\n",
    ] {
        assert_eq!(
            frame(header.as_bytes(), ReplyKind::Retrieval),
            Err(ReplyError::Malformed),
            "{header:?}"
        );
    }
    let widest = b"VALUE k 4294967295 1 18446744073709551615\r\nx\r\nEND\r\n";
    let framed = frame(widest, ReplyKind::Retrieval).map(|r| r.map(|r| r.len));
    assert_eq!(framed, Ok(Some(widest.len())));
}
