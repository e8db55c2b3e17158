//! Invariant checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the corpus
//! replay test (`tests/fuzz_replay.rs`, stable toolchain), which include this file with
//! `#[path]`. Each check panics when an invariant breaks; libFuzzer reports that as a crash.

use bifrost::config::{Config, Format};
use bifrost::protocol::{
    parse_reply, parse_request, Checks, Expect, Limits, ParseError, Parsed, ReplyError,
    ReplyFramer, ReplyKind,
};

/// Every reply kind, each tried on every reply input.
pub const REPLY_KINDS: [ReplyKind; 5] = [
    ReplyKind::Line,
    ReplyKind::Retrieval,
    ReplyKind::Stats,
    ReplyKind::Meta,
    ReplyKind::UntilNoop,
];

/// The request limits each input is parsed with: the defaults, and tiny ones that reach the
/// line, value and key limits with small inputs.
fn limit_sets() -> [Limits; 2] {
    [
        Limits::default(),
        Limits {
            max_line_length: 64,
            max_value_size: 16,
            max_key_length: 8,
        },
    ]
}

/// Where to split an input of `len` bytes: everywhere for small inputs, else the start, the
/// end, evenly spaced points and the points around `extra` (a line end, a reply end).
fn cut_points(len: usize, extra: &[usize]) -> Vec<usize> {
    if len <= 256 {
        return (0..=len).collect();
    }
    let mut cuts: Vec<usize> = (0..16).chain(len - 16..=len).collect();
    cuts.extend((1..32).map(|i| len * i / 32));
    for &at in extra {
        cuts.extend(
            [at.saturating_sub(1), at, at + 1]
                .into_iter()
                .filter(|&c| c <= len),
        );
    }
    cuts
}

/// Checks every request invariant on `data`: the parse of the whole buffer, of every prefix
/// at the cut points, and of the pipelined requests that follow one another in it.
pub fn check_request(data: &[u8]) {
    for limits in limit_sets() {
        let whole = parse_request(data, &limits);
        check_request_outcome(data, &limits, whole);
        let line_end = memchr_newline(data).map_or(0, |i| i + 1);
        for cut in cut_points(data.len(), &[line_end]) {
            check_request_split(data, cut, &limits, whole);
        }
        check_request_pipeline(data, &limits);
    }
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

/// The prefix `data[..cut]` parses as `Incomplete` or exactly like the whole buffer; for a
/// complete request, exactly `Incomplete` below its length and the same request from there on.
pub fn check_request_split(
    data: &[u8],
    cut: usize,
    limits: &Limits,
    whole: Result<Parsed, ParseError>,
) {
    let got = parse_request(&data[..cut], limits);
    match whole {
        Ok(Parsed::Complete(r)) if cut < r.len => {
            assert_eq!(
                got,
                Ok(Parsed::Incomplete),
                "prefix {cut} of a {}-byte request",
                r.len
            )
        }
        _ => assert!(
            got == Ok(Parsed::Incomplete) || got == whole,
            "prefix {cut}: {got:?}, whole: {whole:?}"
        ),
    }
}

/// The invariants of one parse result.
fn check_request_outcome(data: &[u8], limits: &Limits, outcome: Result<Parsed, ParseError>) {
    match outcome {
        Ok(Parsed::Complete(r)) => {
            assert!(
                r.line_len >= 1 && r.line_len <= r.len && r.len <= data.len(),
                "{r:?}"
            );
            assert!(r.line_len <= limits.max_line_length, "{r:?}");
            assert_eq!(
                memchr_newline(data),
                Some(r.line_len - 1),
                "line end of {r:?}"
            );
            assert!(
                r.keys.start <= r.keys.end && r.keys.end < r.line_len,
                "{r:?}"
            );
            assert!(
                r.args.start <= r.args.end && r.args.end < r.line_len,
                "{r:?}"
            );
            assert!(r.keys.is_empty() || r.args.start <= r.keys.start, "{r:?}");
            let keys: Vec<&[u8]> = r.keys(data).collect();
            assert_eq!(keys.len(), r.key_count, "{r:?}");
            assert_eq!(r.key_count > 0, r.command.is_keyed(), "{r:?}");
            assert!(r.key_count <= 1 || r.command.is_multi_key(), "{r:?}");
            assert_eq!(r.first_key(data), keys.first().copied().unwrap_or(b""));
            for key in keys {
                assert!(
                    !key.is_empty() && key.len() <= limits.max_key_length,
                    "{key:?}"
                );
                assert!(
                    !key.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n' | 0)),
                    "{key:?}"
                );
            }
            assert_eq!(r.data.is_some(), r.command.has_data(), "{r:?}");
            match r.data {
                Some(d) => {
                    assert_eq!(d.start, r.line_len, "{r:?}");
                    assert_eq!(d.end + 2, r.len, "{r:?}");
                    assert!(d.len() <= limits.max_value_size, "{r:?}");
                    assert_eq!(&data[d.end..r.len], b"\r\n", "{r:?}");
                }
                None => assert_eq!(r.len, r.line_len, "{r:?}"),
            }
            assert!(!r.noreply || !r.command.is_meta(), "{r:?}");
            assert!(!(r.quiet || r.base64_key) || r.command.is_meta(), "{r:?}");
            assert_eq!(r.expects_reply(), !(r.noreply || r.quiet));
            check_ttl_cap(data, limits, &r);
            check_mg_fill(data, limits, &r);
            check_forwarded(data, limits, &r);
        }
        Ok(Parsed::Incomplete) => {
            let window = &data[..data.len().min(limits.max_line_length)];
            assert!(
                memchr_newline(window).is_some() || data.len() < limits.max_line_length,
                "incomplete without a line end past the line limit"
            );
        }
        Err(e) => {
            let silent = matches!(
                e,
                ParseError::TooLargeNoreply { .. } | ParseError::CrossProtocol
            );
            assert!(silent || (e.reply().ends_with(b"\r\n") && e.reply().len() > 2));
            assert!(!e.as_str().is_empty());
            assert_eq!(
                e == ParseError::BinaryProtocol,
                data.first() == Some(&0x80),
                "{e:?}"
            );
            match e {
                ParseError::LineTooLong => {
                    assert!(data.len() >= limits.max_line_length);
                    let window = &data[..limits.max_line_length];
                    assert_eq!(memchr_newline(window), None);
                }
                ParseError::BinaryProtocol => {}
                ParseError::BadFrame => panic!("the text parser made a binary-frame error"),
                ParseError::CrossProtocol => {
                    // memcached's reading: the line less its `\r\n` (or `\n`), split on spaces.
                    let line = &data[..memchr_newline(data).expect("a whole line")];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let last = line.split(|&b| b == b' ').rfind(|t| !t.is_empty());
                    assert!(last.is_some_and(|t| t.starts_with(b"HTTP/")), "{e:?}");
                }
                ParseError::UnknownCommand { skip } | ParseError::BadDataChunk { skip } => {
                    assert!(skip >= 1 && skip <= data.len(), "{e:?}");
                }
                ParseError::BadCommandLine { skip }
                | ParseError::TooLarge { skip }
                | ParseError::TooLargeNoreply { skip } => {
                    let line_end = memchr_newline(data).map_or(0, |i| i + 1);
                    assert!(skip >= line_end && line_end >= 1, "{e:?}");
                }
            }
        }
    }
}

/// failover_ttl's rewrite of a parsed request: never a panic; when it rewrites, the result is
/// one whole request of the same command, key, data and reply mode (only the lifetime differs).
fn check_ttl_cap(data: &[u8], limits: &Limits, r: &bifrost::protocol::Request) {
    let Some(whole) = data.get(..r.len) else {
        return;
    };
    let Some(capped) = bifrost::exchange::ttl::cap(r, whole, 60, 1_800_000_000) else {
        return;
    };
    // The rewrite may add a few bytes to the line (`T60`): allow for them.
    let roomy = Limits {
        max_line_length: limits.max_line_length + 32,
        ..*limits
    };
    let Ok(Parsed::Complete(c)) = parse_request(&capped, &roomy) else {
        panic!(
            "capped {:?} does not parse",
            String::from_utf8_lossy(&capped)
        );
    };
    assert_eq!(c.len, capped.len(), "one whole request");
    assert_eq!(c.command, r.command);
    assert_eq!(c.first_key(&capped), r.first_key(whole));
    assert_eq!(c.data.map(|d| d.of(&capped)), r.data.map(|d| d.of(whole)));
    assert_eq!((c.noreply, c.quiet), (r.noreply, r.quiet));
}

/// warm_first's rewrite of an `mg` for the cold tier: one whole `mg` of the same key and quiet
/// mode, asking at least `v`, `f` and `t`.
fn check_mg_fill(data: &[u8], limits: &Limits, r: &bifrost::protocol::Request) {
    use bifrost::exchange::write_back::{meta_flags, mg_fill_request};
    if r.command != bifrost::protocol::Command::MetaGet {
        return;
    }
    let Some(whole) = data.get(..r.len) else {
        return;
    };
    let whole = bytes::Bytes::copy_from_slice(whole);
    let fill = mg_fill_request(r, &whole);
    let roomy = Limits {
        max_line_length: limits.max_line_length + 8,
        ..*limits
    };
    let Ok(Parsed::Complete(c)) = parse_request(&fill.request, &roomy) else {
        panic!(
            "filled {:?} does not parse",
            String::from_utf8_lossy(&fill.request)
        );
    };
    assert_eq!(c.len, fill.request.len(), "one whole request");
    assert_eq!(c.command, r.command);
    assert_eq!(c.first_key(&fill.request), r.first_key(&whole));
    assert_eq!((c.quiet, c.base64_key), (r.quiet, r.base64_key));
    let flags = meta_flags(&c, &fill.request);
    assert!(flags.has(b'v') && flags.has(b'f') && flags.has(b't'));
}

/// Parses the requests that follow one another in `data` the way a client connection does,
/// checking each one and that every step makes progress.
fn check_request_pipeline(data: &[u8], limits: &Limits) {
    let mut offset = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        let outcome = parse_request(rest, limits);
        check_request_outcome(rest, limits, outcome);
        let step = match outcome {
            Ok(Parsed::Complete(r)) => r.len,
            Ok(Parsed::Incomplete) => return,
            Err(e) => match e.skip() {
                Some(skip) => skip,
                None => return,
            },
        };
        assert!(step >= 1, "no progress at {offset}");
        offset = offset.saturating_add(step);
    }
}

/// Checks every reply invariant on `data`, for every reply kind and two line limits.
pub fn check_reply(data: &[u8]) {
    for kind in REPLY_KINDS {
        for max_line_length in [16, 4096] {
            check_reply_kind(data, kind, max_line_length);
        }
        check_reply_against_request(data, kind);
    }
    check_write_backs(data);
}

/// Frames `reply` in one go with the checks of `expect`/`line`, handing on nothing: `Ok(Some(len))`
/// when whole.
fn frame_checked(
    reply: &[u8],
    kind: ReplyKind,
    checks: Checks<'_>,
    cut: Option<usize>,
) -> Result<Option<usize>, ReplyError> {
    let mut framer = ReplyFramer::default();
    if let Some(cut) = cut {
        // Fed in two pieces, keeping its state (its place among the keys asked too).
        if framer.advance_checked(&reply[..cut], kind, checks, 4096)? {
            return Ok(Some(framer.framed()));
        }
    }
    Ok(framer
        .advance_checked(reply, kind, checks, 4096)?
        .then(|| framer.framed()))
}

/// The checks against the request (SPEC §6b), with `data`'s first line as the request line and
/// the rest as its reply: never a panic; they only refuse, never change where a reply ends (an
/// accepted reply frames to the same length without them); fed in two pieces they give the
/// same result; and every `VALUE` of an accepted retrieval names a key asked, in the order
/// asked.
pub fn check_reply_against_request(data: &[u8], kind: ReplyKind) {
    let Some(eol) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (request, reply) = data.split_at(eol + 1);
    let expect = Expect::of(kind, request);
    let checks = Checks {
        expect,
        line: if expect.walks_line() { request } else { &[] },
    };
    let checked = frame_checked(reply, kind, checks, None);
    for cut in cut_points(reply.len(), &[]) {
        let got = frame_checked(reply, kind, checks, Some(cut));
        assert_eq!(got, checked, "{kind:?} cut {cut}");
    }
    let Ok(Some(len)) = checked else {
        return;
    };
    let plain = parse_reply(reply, kind, 4096).map(|r| r.map(|r| r.len));
    assert_eq!(
        plain,
        Ok(Some(len)),
        "{kind:?}: the checks changed the framing"
    );
    if kind != ReplyKind::Retrieval {
        return;
    }
    let line = request.strip_suffix(b"\n").unwrap_or(request);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let verb = tokens.next().unwrap_or_default();
    if !matches!(verb, b"get" | b"gets" | b"gat" | b"gats") {
        return;
    }
    if verb.starts_with(b"gat") {
        tokens.next();
    }
    let mut asked = tokens;
    for value in
        bifrost::exchange::write_back::value_blocks(&bytes::Bytes::copy_from_slice(&reply[..len]))
    {
        assert!(
            asked.any(|k| k == &value.key[..]),
            "VALUE {:?} is not among the keys asked, in order: {:?}",
            String::from_utf8_lossy(&value.key),
            String::from_utf8_lossy(request)
        );
    }
}

/// The write-backs built from a reply (warm_first): never a panic; each `add` built from a
/// `VALUE` block is one whole request of that key, with the block's value.
pub fn check_write_backs(data: &[u8]) {
    use bifrost::exchange::write_back::{
        classic_add, meta_add, mg_client_reply, mg_hit, value_blocks, MetaFlags,
    };
    let reply = bytes::Bytes::copy_from_slice(data);
    // Write-backs are built from cold replies the framer took (a `VALUE` line with flags
    // memcached cannot hold is refused there, as out of sync).
    let framed = match parse_reply(data, ReplyKind::Retrieval, 64 * 1024) {
        Ok(Some(r)) => reply.slice(..r.len),
        _ => bytes::Bytes::new(),
    };
    for block in value_blocks(&framed) {
        let [header, value] = classic_add(&block, 60);
        let request = [&header[..], &value[..]].concat();
        let limits = Limits {
            max_line_length: usize::MAX / 2,
            max_value_size: usize::MAX / 2,
            max_key_length: usize::MAX / 2,
        };
        // Values come back for keys a client asked: only keys the parser takes need to make a
        // request it takes (a key memcached would refuse fails the write-back, counted).
        let get = [&b"get "[..], &block.key[..], b"\r\n"].concat();
        if !matches!(parse_request(&get, &limits), Ok(Parsed::Complete(g)) if g.key_count == 1) {
            continue;
        }
        let Ok(Parsed::Complete(r)) = parse_request(&request, &limits) else {
            panic!(
                "write-back {:?} does not parse",
                String::from_utf8_lossy(&request)
            );
        };
        assert_eq!(r.len, request.len());
        assert_eq!(r.first_key(&request), &block.key[..]);
        let data = r.data.map(|d| d.of(&request).to_vec());
        assert_eq!(data.as_deref(), value.get(..value.len().saturating_sub(2)));
    }
    let all = [b'v', b'f', b't']
        .into_iter()
        .fold(MetaFlags::EMPTY, MetaFlags::with);
    let _ = mg_client_reply(&reply, all);
    if let Some(hit) = mg_hit(&reply) {
        let _ = meta_add(b"k", false, &hit, 60);
    }
}

/// The reply invariants for one kind: a framed reply lies within the buffer and ends with a
/// line end, frames the same on its own bytes, and every shorter prefix is incomplete; for
/// anything else a prefix is incomplete or gives the same result.
pub fn check_reply_kind(data: &[u8], kind: ReplyKind, max_line_length: usize) {
    let whole = parse_reply(data, kind, max_line_length);
    check_reply_incremental(data, kind, max_line_length, &whole);
    match whole {
        Ok(Some(r)) => {
            assert!(r.len >= 1 && r.len <= data.len(), "{kind:?} {r:?}");
            assert_eq!(data[r.len - 1], b'\n', "{kind:?} {r:?}");
            assert_eq!(parse_reply(&data[..r.len], kind, max_line_length), whole);
            if matches!(kind, ReplyKind::Line | ReplyKind::Meta) {
                assert!(r.values <= 1, "{kind:?} {r:?}");
            }
            if kind == ReplyKind::Line {
                assert_eq!(r.values, 0, "{kind:?} {r:?}");
            }
            for cut in cut_points(r.len, &[]) {
                let got = parse_reply(&data[..cut], kind, max_line_length);
                if cut < r.len {
                    assert_eq!(got, Ok(None), "{kind:?} prefix {cut} of {r:?}");
                }
            }
            // What follows is the next reply: framing it must not depend on this one.
            let mut offset = r.len;
            let mut steps = 0;
            while offset < data.len() && steps < 64 {
                match parse_reply(&data[offset..], kind, max_line_length) {
                    Ok(Some(next)) => {
                        assert!(next.len >= 1 && offset + next.len <= data.len());
                        offset += next.len;
                    }
                    _ => break,
                }
                steps += 1;
            }
        }
        Ok(None) | Err(_) => {
            for cut in cut_points(data.len(), &[]) {
                let got = parse_reply(&data[..cut], kind, max_line_length);
                assert!(
                    got == Ok(None) || got == whole,
                    "{kind:?} prefix {cut}: {got:?}"
                );
            }
        }
    }
}

/// The incremental framer agrees with framing in one go: fed the input in two pieces at every
/// cut point (keeping its state, and handing on what it has framed at the cut, as a backend
/// connection streaming a reply does), it frames the same reply or the same error, and the
/// pieces handed on are exactly the reply's bytes.
fn check_reply_incremental(
    data: &[u8],
    kind: ReplyKind,
    max_line_length: usize,
    whole: &Result<Option<bifrost::protocol::Reply>, bifrost::protocol::ReplyError>,
) {
    for cut in cut_points(data.len(), &[]) {
        let mut framer = ReplyFramer::default();
        let mut handed_on = 0;
        let first = framer.advance(&data[..cut], kind, max_line_length);
        let result = match first {
            Ok(true) => Ok(true),
            Ok(false) => {
                // Hand on what is framed, then feed the rest from where the buffer now starts.
                let framed = framer.framed();
                assert!(framed <= cut, "{kind:?} cut {cut}: framed {framed}");
                framer.rebase(framed);
                handed_on = framed;
                framer.advance(&data[handed_on..], kind, max_line_length)
            }
            Err(e) => Err(e),
        };
        match (whole, result) {
            (Ok(Some(r)), Ok(true)) => {
                let mut reply = framer.reply();
                reply.len += handed_on;
                assert_eq!(reply.len, r.len, "{kind:?} cut {cut}");
                assert_eq!(reply.values, r.values, "{kind:?} cut {cut}");
                assert_eq!(reply.error, r.error, "{kind:?} cut {cut}");
                // The final line's length (0 when the reply ends with a data block, `VA`).
                assert!(framer.tail() <= r.len, "{kind:?} cut {cut}");
            }
            (Ok(None), Ok(false)) => {}
            (Err(a), Err(b)) => assert_eq!(*a, b, "{kind:?} cut {cut}"),
            (w, got) => panic!("{kind:?} cut {cut}: whole {w:?}, in two pieces {got:?}"),
        }
    }
}

/// Loads `data` as a YAML configuration document: it may be refused, it must not panic.
pub fn check_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.yaml", Format::Yaml);
    }
}

/// Parses `data` as admin HTTP requests under the real limits and under tiny ones: never a
/// panic; a complete request takes no more than the buffer, its body is the bytes its length
/// says, and every shorter prefix of it is incomplete (the server waits for the rest instead of
/// acting on part of a request).
pub fn check_admin_http(data: &[u8]) {
    use bifrost::admin::http::{parse, Parsed};
    use std::time::Duration;
    let real = bifrost::admin::Limits::new(Duration::from_secs(10), Duration::from_secs(2), 64);
    let tiny = bifrost::admin::Limits {
        max_head: 64,
        max_body: 16,
        ..real
    };
    for limits in [real, tiny] {
        let mut rest = data;
        // Pipelined requests, one after another, as the server takes them.
        for _ in 0..8 {
            match parse(rest, &limits) {
                Parsed::Complete(request, used) => {
                    assert!(used > 0 && used <= rest.len(), "{used} of {}", rest.len());
                    assert!(request.body.len() <= limits.max_body);
                    let tail = rest.get(used - request.body.len()..used);
                    assert_eq!(tail, Some(request.body), "the body ends the request");
                    for cut in 0..used {
                        let prefix = rest.get(..cut).unwrap_or_default();
                        assert!(
                            matches!(parse(prefix, &limits), Parsed::Incomplete { .. }),
                            "a prefix of {cut} bytes of a {used}-byte request is not incomplete"
                        );
                    }
                    rest = rest.get(used..).unwrap_or_default();
                }
                Parsed::Incomplete { .. } | Parsed::Reject(..) => break,
            }
        }
    }
}

/// Frames `data` as what a warming job reads: a `lru_crawler metadump` stream and replies to
/// its `mg` and `ms`. Never a panic; a framed line or reply takes no more than the buffer (a
/// value inside it), and every shorter prefix of it is incomplete, so a job never acts on part
/// of a reply however the stream is cut.
pub fn check_warm_replies(data: &[u8]) {
    use bifrost::warming::{metadump, wire};
    fn prefixes_incomplete<T: std::fmt::Debug>(
        data: &[u8],
        used: usize,
        parse: impl Fn(&[u8]) -> Result<Option<T>, String>,
        what: &str,
    ) {
        for cut in 0..used {
            let prefix = data.get(..cut).unwrap_or_default();
            match parse(prefix) {
                Ok(None) => {}
                Ok(Some(got)) => {
                    panic!("{what}: a {cut}-byte prefix of {used} bytes framed {got:?}")
                }
                Err(e) => panic!("{what}: a {cut}-byte prefix of {used} bytes refused: {e}"),
            }
        }
    }
    let mut rest = data;
    for _ in 0..16 {
        match metadump::next_line(rest) {
            Ok(Some((_, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "dump line {used} of {}",
                    rest.len()
                );
                prefixes_incomplete(rest, used, metadump::next_line, "dump line");
                rest = rest.get(used..).unwrap_or_default();
            }
            Ok(None) | Err(_) => break,
        }
    }
    if let Ok(Some((reply, used))) = wire::parse_get(data) {
        assert!(
            used > 0 && used <= data.len(),
            "mg reply {used} of {}",
            data.len()
        );
        if let wire::GetReply::Hit { start, len, .. } = reply {
            assert!(
                start + len + 2 == used,
                "the value ends the reply: {reply:?} in {used}"
            );
        }
        prefixes_incomplete(data, used, wire::parse_get, "mg reply");
    }
    if let Ok(Some((_, used))) = wire::parse_set(data) {
        assert!(
            used > 0 && used <= data.len(),
            "ms reply {used} of {}",
            data.len()
        );
        prefixes_incomplete(data, used, wire::parse_set, "ms reply");
    }
}

/// Every request at the front of `data` (and pipelined after it) that the parser accepts,
/// under each limit set, passes [`check_forwarded`].
pub fn check_forwarded_input(data: &[u8]) {
    for limits in limit_sets() {
        let mut rest = data;
        while let Ok(Parsed::Complete(r)) = parse_request(rest, &limits) {
            check_forwarded(rest, &limits, &r);
            rest = &rest[r.len..];
        }
    }
}

/// How memcached 1.6 reads a command line, modelled from its documented behaviour: the bytes
/// before the first `\n`, less a `\r` just before it when the line has more than one byte
/// before the `\n`, up to the first NUL (it handles the line as a C string), split on spaces
/// with runs collapsed. Returns the tokens.
pub fn memcached_tokens(line_with_end: &[u8]) -> Vec<&[u8]> {
    let end = memchr_newline(line_with_end).unwrap_or(line_with_end.len());
    let mut line = &line_with_end[..end];
    if line.len() > 1 && line.ends_with(b"\r") {
        line = &line[..line.len() - 1];
    }
    if let Some(nul) = line.iter().position(|&b| b == 0) {
        line = &line[..nul];
    }
    line.split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect()
}

/// What the proxy forwards for an accepted request is read by memcached exactly as the proxy
/// read it (issue 14: no client input can make a backend see another command): the forwarded
/// line has the same tokens in memcached's reading as in the proxy's, is within memcached's
/// limits (2048 bytes but for `get`/`gets`, 19 tokens on a meta line), and its data block is
/// the one memcached will read. A multi-key retrieval's per-server lines re-parse to the same
/// command with the keys each was given, in order.
pub fn check_forwarded(data: &[u8], limits: &Limits, r: &bifrost::protocol::Request) {
    use bifrost::protocol::Command;
    // Answered by the proxy itself, never forwarded.
    if matches!(
        r.command,
        Command::Version | Command::Verbosity | Command::Stats | Command::Quit | Command::MetaNoop
    ) {
        return;
    }
    let whole = &data[..r.len];
    let line = &whole[..r.line_len];
    // The proxy's reading: the line without its ending, split on spaces.
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let ours: Vec<&[u8]> = text
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let theirs = memcached_tokens(line);
    assert_eq!(ours, theirs, "memcached reads {line:?} differently");
    assert!(!text.contains(&0) && !text.contains(&b'\r'), "{line:?}");
    assert_eq!(theirs.first().copied(), Some(r.command.name().as_bytes()));
    if !matches!(r.command, Command::Get | Command::Gets) {
        assert!(
            r.line_len <= 2048,
            "a {}-byte {:?} line",
            r.line_len,
            r.command
        );
    } else if r.line_len > 2048 {
        assert_eq!(
            line.first(),
            Some(&b'g'),
            "a long get line starting with spaces"
        );
    }
    if r.command.is_meta() {
        assert!(theirs.len() <= 19, "{} tokens on a meta line", theirs.len());
    }
    // memcached takes the data block length from the token the proxy took it from.
    let length_token = match r.command {
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => theirs.get(4),
        Command::MetaSet => theirs.get(2),
        _ => None,
    };
    if let Some(data_span) = r.data {
        let announced = std::str::from_utf8(length_token.expect("a length token"))
            .ok()
            .and_then(|t| t.parse::<usize>().ok());
        assert_eq!(announced, Some(data_span.len()), "{line:?}");
    }
    // Re-parsing what is forwarded gives the same request.
    let again = parse_request(whole, limits);
    assert_eq!(again, Ok(Parsed::Complete(*r)));
    check_split_lines(whole, limits, r);
}

/// A multi-key retrieval split between two servers (keys alternating): each per-server line
/// re-parses as the same command and exptime with exactly its keys, in order.
fn check_split_lines(whole: &[u8], limits: &Limits, r: &bifrost::protocol::Request) {
    use bifrost::exchange::multiget::{build_lines, AskedKey};
    use bifrost::protocol::Command;
    if !r.command.is_multi_key() || r.key_count < 2 {
        return;
    }
    let asked: Vec<AskedKey> = r
        .keys(whole)
        .enumerate()
        .map(|(i, key)| AskedKey::new(whole, key, i % 2))
        .collect();
    let (mut lens, mut out) = (Vec::new(), Vec::new());
    build_lines(r, whole, &asked, 2, &mut lens, &mut out);
    assert_eq!(out.len(), 2);
    let roomy = Limits {
        max_line_length: limits.max_line_length.max(whole.len() + 2),
        ..*limits
    };
    for (part, (line, count)) in out.iter().enumerate() {
        let Ok(Parsed::Complete(sub)) = parse_request(line, &roomy) else {
            panic!(
                "split line {:?} does not parse",
                String::from_utf8_lossy(line)
            );
        };
        assert_eq!(sub.len, line.len());
        assert_eq!(sub.command, r.command);
        let want: Vec<&[u8]> = asked
            .iter()
            .filter(|k| k.part == part)
            .map(|k| k.key(whole))
            .collect();
        let got: Vec<&[u8]> = sub.keys(line).collect();
        assert_eq!(got, want);
        assert_eq!(*count, want.len());
        let exptime = usize::from(matches!(r.command, Command::Gat | Command::Gats));
        assert_eq!(memcached_tokens(line).len(), 1 + exptime + sub.key_count);
    }
}

/// The binary protocol's translations (`fuzz_targets/binary_protocol.rs`): `data` read as a
/// stream of request frames, each translated into text that the text parser takes whole (one
/// request, or one error, never more or less than the text); and `data` as a text reply to
/// every kind of pending request, cut at a few points, answered with well-formed response frames
/// only (each with the request's opcode and opaque). Nothing panics.
pub fn check_binary(data: &[u8]) {
    use bifrost::protocol::binary::reply::ReplyTranslator;
    use bifrost::protocol::binary::request::{translate, Answer, Pending};
    use bifrost::protocol::binary::{Header, HEADER_LEN, RESPONSE_MAGIC};

    // Requests: frame after frame until one is incomplete or not a frame.
    let mut at = 0;
    while let Ok(Some(header)) = Header::parse(data.get(at..).unwrap_or_default()) {
        let Some(frame) = data.get(at..at + header.frame_len()) else {
            break;
        };
        let translated = translate(&header, frame);
        assert_eq!(translated.pending.opcode, header.opcode);
        assert_eq!(translated.pending.opaque, header.opaque);
        for text in std::iter::once(&translated.text).chain(translated.then.as_ref()) {
            assert!(text.ends_with(b"\r\n"), "{text:?}");
            for limits in limit_sets() {
                if let Ok(Parsed::Complete(r)) = parse_request(text, &limits) {
                    assert_eq!(r.len, text.len(), "one whole request: {text:?}");
                }
            }
            // With the default limits, every translation is a request the proxy takes.
            match parse_request(text, &Limits::default()) {
                Ok(Parsed::Complete(_)) | Err(ParseError::TooLarge { .. }) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
        at += header.frame_len();
    }

    // Replies: `data` as the text reply to each kind of request.
    let answers = [
        Answer::Get { with_key: true },
        Answer::Get { with_key: false },
        Answer::Store,
        Answer::Delete,
        Answer::Arithmetic,
        Answer::Touch,
        Answer::Noop,
        Answer::Version,
        Answer::Flush,
        Answer::Stat,
        Answer::Quit,
        Answer::Fixed(0x83),
    ];
    for answer in answers {
        for quiet in [false, true] {
            let pending = Pending {
                opcode: 0x0c,
                opaque: 0x1234_5678,
                key: bytes::Bytes::from_static(b"key"),
                answer,
                quiet,
            };
            for cut in cut_points(data.len(), &[1, 7]) {
                let mut translator = ReplyTranslator::default();
                let mut out = Vec::new();
                let (a, b) = data.split_at(cut.min(data.len()));
                for piece in [a, b] {
                    translator.feed(&pending, &bytes::Bytes::copy_from_slice(piece), &mut out);
                }
                translator.finish();
                let bytes: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
                // Whole frames, back to back; the last may be a value still streaming.
                let mut at = 0;
                while let Some(head) = bytes.get(at..at + HEADER_LEN) {
                    assert_eq!(head[0], RESPONSE_MAGIC);
                    assert_eq!(head[1], 0x0c);
                    assert_eq!(&head[12..16], &0x1234_5678u32.to_be_bytes());
                    let body = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                    at += HEADER_LEN + body as usize;
                }
            }
        }
    }
}

/// An HTTP origin's response (`fuzz_targets/http_response.rs`): the head is read only whole,
/// never longer than the input or the head limit; a chunked body, fed in two cuts, yields data
/// ranges inside the input, never more than the body limit in all, never used past the input,
/// and the same data whatever the cut.
pub fn check_http(data: &[u8]) {
    use bifrost::protocol::http::{parse_head, Body, Chunked, MAX_HEAD};
    const MAX_BODY: usize = 64;
    let Ok(Some((head, len))) = parse_head(data, MAX_BODY) else {
        return;
    };
    assert!(len <= data.len() && len <= MAX_HEAD);
    if let Body::Length(n) = head.body {
        assert!(n <= MAX_BODY);
    }
    let rest = &data[len..];
    let mut whole: Option<(Vec<u8>, bool)> = None;
    for cut in cut_points(rest.len(), &[1, 3]) {
        let mut chunked = Chunked::new(MAX_BODY);
        let mut body = Vec::new();
        let mut done = false;
        let mut failed = false;
        for piece in [&rest[..cut.min(rest.len())], &rest[cut.min(rest.len())..]] {
            if done || failed {
                break;
            }
            match chunked.feed(piece) {
                Ok(p) => {
                    assert!(p.used <= piece.len());
                    for r in &p.data {
                        assert!(r.start <= r.end && r.end <= p.used);
                        body.extend_from_slice(&piece[r.clone()]);
                    }
                    done = p.done;
                }
                Err(_) => failed = true,
            }
        }
        assert!(body.len() <= MAX_BODY);
        if !failed {
            match &whole {
                None => whole = Some((body, done)),
                Some((first, first_done)) if *first_done && done => assert_eq!(first, &body),
                Some(_) => {}
            }
        }
    }
}

/// The bytes as responses of an HTTP origin to a fixed run of memcached requests, framed by the
/// origin wire as a connection frames them, cut at several points, with classic reads whole
/// and streamed: no panic, at most one answer per request, a classic read's reply always ends
/// with `END`, the answers do not depend on where the bytes were cut, and a streamed read's
/// pieces make the same reply as the whole one (where no key failed).
pub fn check_http_wire(data: &[u8]) {
    const REQUESTS: [&[u8]; 7] = [
        b"get a b\r\n",
        b"gets a\r\n",
        b"mg Yw== b v f t k c s O1\r\n",
        b"set e 1 0 2\r\nhi\r\n",
        b"get a\r\n",
        b"delete f\r\n",
        b"version\r\n",
    ];
    let mut first: Option<Vec<String>> = None;
    // A few cuts, not every one: each runs the seven requests twice (whole and streamed).
    let n = data.len();
    for cut in [0, 1, 7, n / 4, n / 2, 3 * n / 4, n.saturating_sub(1), n] {
        let cut = cut.min(data.len());
        let pieces = [&data[..cut], &data[cut..]];
        let whole = bifrost::origin_answers_for_fuzzing(&REQUESTS, &pieces, 64, false);
        let streamed = bifrost::origin_answers_for_fuzzing(&REQUESTS, &pieces, 64, true);
        assert_eq!(whole.is_some(), streamed.is_some(), "in step either way");
        let (Some(answers), Some(streamed)) = (whole, streamed) else {
            continue;
        };
        assert!(answers.len() <= REQUESTS.len());
        assert_eq!(answers.len(), streamed.len());
        for (i, (answer, piecewise)) in answers.iter().zip(&streamed).enumerate() {
            let failed = answer.ends_with(|c: char| c.is_ascii_lowercase());
            if matches!(i, 0 | 1 | 4) && !failed {
                assert!(answer.ends_with("END\r\n"), "{answer:?}");
            }
            if !failed {
                assert_eq!(answer, piecewise, "request {i}: whole and streamed");
            }
        }
        match &first {
            None => first = Some(answers),
            Some(f) => {
                let n = f.len().min(answers.len());
                assert_eq!(&f[..n], &answers[..n]);
            }
        }
    }
}
