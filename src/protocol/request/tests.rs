//! Table-driven tests of the request parser: every command, every error, every split point.

use super::*;

pub(super) fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    parse_request(buf, &Limits::default())
}

pub(super) fn complete(buf: &[u8]) -> Request {
    match parse(buf) {
        Ok(Parsed::Complete(r)) => r,
        other => panic!(
            "{:?}: expected Complete, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// One accepted request and what the parser must make of it.
struct Case {
    input: &'static [u8],
    command: Command,
    keys: &'static [&'static str],
    data: Option<&'static [u8]>,
    noreply: bool,
    quiet: bool,
    base64: bool,
    args: &'static str,
}

const fn ok(input: &'static [u8], command: Command, keys: &'static [&'static str]) -> Case {
    Case {
        input,
        command,
        keys,
        data: None,
        noreply: false,
        quiet: false,
        base64: false,
        args: "",
    }
}

impl Case {
    const fn data(mut self, data: &'static [u8]) -> Self {
        self.data = Some(data);
        self
    }
    const fn noreply(mut self) -> Self {
        self.noreply = true;
        self
    }
    const fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }
    const fn base64(mut self) -> Self {
        self.base64 = true;
        self
    }
    const fn args(mut self, args: &'static str) -> Self {
        self.args = args;
        self
    }
}

fn accepted() -> Vec<Case> {
    use Command::*;
    vec![
        ok(b"get foo\r\n", Get, &["foo"]).args("foo"),
        ok(b"get foo\n", Get, &["foo"]).args("foo"),
        ok(b"get a b  c\r\n", Get, &["a", "b", "c"]).args("a b  c"),
        ok(b"  get   foo   \r\n", Get, &["foo"]).args("foo"),
        ok(b"gets foo bar\r\n", Gets, &["foo", "bar"]).args("foo bar"),
        ok(b"gat 100 foo bar\r\n", Gat, &["foo", "bar"]).args("100 foo bar"),
        ok(b"gats -1 foo\r\n", Gats, &["foo"]).args("-1 foo"),
        ok(
            "get caf\u{e9}:\u{1f600}\r\n".as_bytes(),
            Get,
            &["caf\u{e9}:\u{1f600}"],
        ),
        ok(b"set foo 5 0 3\r\nbar\r\n", Set, &["foo"])
            .data(b"bar")
            .args("foo 5 0 3"),
        ok(b"set foo 0 0 0\r\n\r\n", Set, &["foo"]).data(b""),
        ok(b"set foo 0 0 7\r\n\r\nEND\r\n\r\n", Set, &["foo"]).data(b"\r\nEND\r\n"),
        ok(b"set foo 4294967295 -1 1\r\nx\r\n", Set, &["foo"]).data(b"x"),
        ok(b"add foo 0 0 3 noreply\r\nbar\r\n", Add, &["foo"])
            .data(b"bar")
            .noreply(),
        ok(b"replace foo 0 0 3\r\nbar\r\n", Replace, &["foo"]).data(b"bar"),
        ok(b"append foo 0 0 3\r\nbar\r\n", Append, &["foo"]).data(b"bar"),
        ok(b"prepend foo 0 0 3\r\nbar\r\n", Prepend, &["foo"]).data(b"bar"),
        ok(b"cas foo 0 0 3 12345\r\nbar\r\n", Cas, &["foo"]).data(b"bar"),
        ok(b"cas foo 0 0 3 12345 noreply\r\nbar\r\n", Cas, &["foo"])
            .data(b"bar")
            .noreply(),
        ok(b"delete foo\r\n", Delete, &["foo"]).args("foo"),
        ok(b"delete foo noreply\r\n", Delete, &["foo"]).noreply(),
        ok(b"delete foo 0\r\n", Delete, &["foo"]),
        ok(b"delete foo 0 noreply\r\n", Delete, &["foo"]).noreply(),
        ok(b"incr foo 1\r\n", Incr, &["foo"]),
        ok(b"decr foo 18446744073709551615 noreply\r\n", Decr, &["foo"]).noreply(),
        ok(b"touch foo 10\r\n", Touch, &["foo"]),
        ok(b"touch foo -1 noreply\r\n", Touch, &["foo"]).noreply(),
        ok(b"flush_all\r\n", FlushAll, &[]),
        ok(b"flush_all 10\r\n", FlushAll, &[]).args("10"),
        ok(b"flush_all noreply\r\n", FlushAll, &[])
            .noreply()
            .args("noreply"),
        ok(b"flush_all 0 noreply\r\n", FlushAll, &[]).noreply(),
        ok(b"version\r\n", Version, &[]),
        // memcaslap's keys start with bytes 0x10-0x1f; memcached stores them, so must we.
        ok(b"get \x10\x1fkey\x7f\r\n", Get, &["\x10\x1fkey\x7f"]),
        ok(b"verbosity 1\r\n", Verbosity, &[]).args("1"),
        ok(b"verbosity 1 noreply\r\n", Verbosity, &[]).noreply(),
        ok(b"verbosity noreply\r\n", Verbosity, &[])
            .args("noreply")
            .noreply(),
        ok(b"stats\r\n", Stats, &[]),
        ok(b"stats slabs\r\n", Stats, &[]).args("slabs"),
        ok(b"quit\r\n", Quit, &[]),
        ok(b"mn\r\n", MetaNoop, &[]),
        ok(b"mg foo v f t\r\n", MetaGet, &["foo"]).args("foo v f t"),
        ok(b"mg foo\r\n", MetaGet, &["foo"]).args("foo"),
        ok(b"mg foo v q\r\n", MetaGet, &["foo"]).quiet(),
        ok(b"mg Zm9v b v\r\n", MetaGet, &["Zm9v"]).base64(),
        ok(b"mg Zg== b\r\n", MetaGet, &["Zg=="]).base64(),
        ok(b"mg foo O123456 k\r\n", MetaGet, &["foo"]),
        ok(b"ms foo 3 T90 F1\r\nbar\r\n", MetaSet, &["foo"])
            .data(b"bar")
            .args("foo 3 T90 F1"),
        ok(b"ms foo 3 q MA\r\nbar\r\n", MetaSet, &["foo"])
            .data(b"bar")
            .quiet(),
        ok(b"ms foo 0\r\n\r\n", MetaSet, &["foo"]).data(b""),
        ok(b"md foo q\r\n", MetaDelete, &["foo"]).quiet(),
        ok(b"ma foo D5 N0 MI\r\n", MetaArithmetic, &["foo"]),
        ok(b"me foo\r\n", MetaDebug, &["foo"]),
    ]
}

#[test]
fn accepts_every_command() {
    for case in accepted() {
        let name = String::from_utf8_lossy(case.input);
        let r = complete(case.input);
        assert_eq!(r.command, case.command, "{name}");
        assert_eq!(r.len, case.input.len(), "{name}");
        let keys: Vec<&[u8]> = r.keys(case.input).collect();
        let want: Vec<&[u8]> = case.keys.iter().map(|k| k.as_bytes()).collect();
        assert_eq!(keys, want, "{name}");
        assert_eq!(r.key_count, case.keys.len(), "{name}");
        assert_eq!(
            r.first_key(case.input),
            want.first().copied().unwrap_or(b""),
            "{name}"
        );
        assert_eq!(r.data.map(|d| d.of(case.input)), case.data, "{name}");
        assert_eq!(r.noreply, case.noreply, "{name}");
        assert_eq!(r.quiet, case.quiet, "{name}");
        assert_eq!(r.base64_key, case.base64, "{name}");
        assert_eq!(r.expects_reply(), !(case.noreply || case.quiet), "{name}");
        if !case.args.is_empty() {
            assert_eq!(r.args.of(case.input), case.args.as_bytes(), "{name}");
        }
        let line = &case.input[..r.line_len];
        assert!(line.ends_with(b"\n"), "{name}");
        assert_eq!(memchr(b'\n', line), Some(r.line_len - 1), "{name}");
    }
    let mut seen: Vec<Command> = accepted().iter().map(|c| c.command).collect();
    seen.dedup();
    for command in Command::ALL {
        assert!(
            seen.contains(&command),
            "no accepted sample for {command:?}"
        );
        assert_eq!(lookup(command.name().as_bytes()), Some(command));
    }
}

#[test]
fn keyless_and_empty_spans() {
    let r = complete(b"version\r\n");
    assert!(r.keys.is_empty());
    assert_eq!(r.keys(b"version\r\n").count(), 0);
    assert_eq!(r.first_key(b"version\r\n"), b"");
    assert_eq!(r.args, Span { start: 7, end: 7 });
    let r = complete(b"stats   \r\n");
    assert!(r.args.is_empty());
}

pub(super) fn line_plus(line: &[u8], extra: usize) -> usize {
    line.iter().position(|&b| b == b'\n').unwrap() + 1 + extra
}

#[test]
fn rejects_with_the_right_error() {
    use ParseError::*;
    let long_key = "k".repeat(251);
    let ok_key = "k".repeat(250);
    let set_long_key = format!("set {long_key} 0 0 3\r\nbar\r\n");
    let get_long_key = format!("get foo {long_key}\r\n");
    let b64_long = format!("mg {} b\r\n", "QUFB".repeat(62));
    let too_many_flags = "mg foo c f h k l q s t u v E1 N1 O1 R1 T1 b x\r\n";
    let cases: Vec<(&[u8], ParseError)> = vec![
        (b"\r\n", UnknownCommand { skip: 2 }),
        (b"\n", UnknownCommand { skip: 1 }),
        (b"   \r\n", UnknownCommand { skip: 5 }),
        (b"GET foo\r\n", UnknownCommand { skip: 9 }),
        (b"bogus\r\n", UnknownCommand { skip: 7 }),
        (b"gett foo\r\n", UnknownCommand { skip: 10 }),
        (b"get\r\n", UnknownCommand { skip: 5 }),
        (b"get   \r\n", UnknownCommand { skip: 8 }),
        (b"gets\r\n", UnknownCommand { skip: 6 }),
        (b"gat\r\n", UnknownCommand { skip: 5 }),
        (b"gat 10\r\n", UnknownCommand { skip: 8 }),
        (b"gats 10   \r\n", UnknownCommand { skip: 12 }),
        (b"gat abc foo\r\n", BadCommandLine { skip: 13 }),
        (
            get_long_key.as_bytes(),
            BadCommandLine {
                skip: get_long_key.len(),
            },
        ),
        (b"get foo\x00bar\r\n", BadCommandLine { skip: 13 }),
        (b"get foo\rx\r\n", BadCommandLine { skip: 11 }),
        (b"get foo\r\r\n", BadCommandLine { skip: 10 }),
        (b"set foo 0 0\r\n", BadCommandLine { skip: 13 }),
        (b"set\r\n", BadCommandLine { skip: 5 }),
        (
            b"set foo 0 0 3 noreply extra\r\nbar\r\n",
            BadCommandLine { skip: 34 },
        ),
        (b"set foo abc 0 3\r\nbar\r\n", BadCommandLine { skip: 22 }),
        (
            b"set foo 4294967296 0 3\r\nbar\r\n",
            BadCommandLine { skip: 29 },
        ),
        (b"set foo -1 0 3\r\nbar\r\n", BadCommandLine { skip: 21 }),
        (b"set foo 0 abc 3\r\nbar\r\n", BadCommandLine { skip: 22 }),
        (b"set foo 0 0 -1\r\n", BadCommandLine { skip: 16 }),
        (b"set foo 0 0 abc\r\n", BadCommandLine { skip: 17 }),
        (b"set foo 0 0 +3\r\n", BadCommandLine { skip: 16 }),
        (
            b"set foo 0 0 3 garbage\r\nbar\r\n",
            BadCommandLine { skip: 28 },
        ),
        (
            set_long_key.as_bytes(),
            BadCommandLine {
                skip: set_long_key.len(),
            },
        ),
        (b"set foo 0 0 2147483646\r\n", BadCommandLine { skip: 24 }),
        (
            b"set foo 0 0 99999999999999999999999\r\n",
            BadCommandLine { skip: 37 },
        ),
        (
            b"set foo 0 0 1048577\r\n",
            TooLarge {
                skip: 21 + 1048577 + 2,
            },
        ),
        (
            b"set foo 0 0 2147483645\r\n",
            TooLarge {
                skip: 24 + 2147483645 + 2,
            },
        ),
        (b"set foo 0 0 3\r\nbarXY", BadDataChunk { skip: 20 }),
        (b"set foo 0 0 3\r\nbar\n\n", BadDataChunk { skip: 20 }),
        (b"set foo 0 0 0\r\nXY", BadDataChunk { skip: 17 }),
        (b"cas foo 0 0 3\r\nbar\r\n", BadCommandLine { skip: 20 }),
        (b"cas foo 0 0 3 -5\r\nbar\r\n", BadCommandLine { skip: 23 }),
        (
            b"cas foo 0 0 3 1 noreply x\r\nbar\r\n",
            BadCommandLine { skip: 32 },
        ),
        (b"delete\r\n", BadCommandLine { skip: 8 }),
        (b"delete foo 5\r\n", BadCommandLine { skip: 14 }),
        (b"delete foo bar baz\r\n", BadCommandLine { skip: 20 }),
        (b"delete foo 0 noreply x\r\n", BadCommandLine { skip: 24 }),
        (b"delete foo\x00\r\n", BadCommandLine { skip: 13 }),
        (b"version foo bar\r\n", UnknownCommand { skip: 17 }),
        (b"version noreply\r\n", UnknownCommand { skip: 17 }),
        (b"quit noreply\r\n", UnknownCommand { skip: 14 }),
        (
            b"set foo 0 0 1048577 noreply\r\n",
            TooLargeNoreply {
                skip: 29 + 1048577 + 2,
            },
        ),
        (b"incr foo\r\n", BadCommandLine { skip: 10 }),
        (b"incr foo -1\r\n", BadCommandLine { skip: 13 }),
        (
            b"incr foo 18446744073709551616\r\n",
            BadCommandLine { skip: 31 },
        ),
        (b"decr foo 1 x\r\n", BadCommandLine { skip: 14 }),
        (b"touch foo\r\n", BadCommandLine { skip: 11 }),
        (b"touch foo x\r\n", BadCommandLine { skip: 13 }),
        (b"flush_all x\r\n", BadCommandLine { skip: 13 }),
        (b"flush_all 1 2\r\n", BadCommandLine { skip: 15 }),
        (b"flush_all 1 noreply x\r\n", BadCommandLine { skip: 23 }),
        (b"verbosity\r\n", BadCommandLine { skip: 11 }),
        (b"verbosity 1 2\r\n", BadCommandLine { skip: 15 }),
        (b"mg\r\n", BadCommandLine { skip: 4 }),
        (b"mg foo 1\r\n", BadCommandLine { skip: 10 }),
        (b"mg foo v v\r\n", BadCommandLine { skip: 12 }),
        (b"mg foo \xc3\xa9\r\n", BadCommandLine { skip: 11 }),
        (
            too_many_flags.as_bytes(),
            BadCommandLine {
                skip: too_many_flags.len(),
            },
        ),
        (b"mg foo b\r\n", BadCommandLine { skip: 10 }),
        (b"mg Zm9v= b\r\n", BadCommandLine { skip: 12 }),
        (b"mg ==== b\r\n", BadCommandLine { skip: 11 }),
        (b"mg Zm9v!A== b\r\n", BadCommandLine { skip: 15 }),
        (b"ms foo\r\n", BadCommandLine { skip: 8 }),
        (b"ms foo bar\r\n", BadCommandLine { skip: 12 }),
        (b"ms foo 3 1\r\nbar\r\n", BadCommandLine { skip: 17 }),
        (b"ms foo\x00 3\r\nbar\r\n", BadCommandLine { skip: 16 }),
        (
            b"ms foo 2000000\r\n",
            TooLarge {
                skip: 16 + 2000000 + 2,
            },
        ),
        (b"ms foo 3\r\nbarXX", BadDataChunk { skip: 15 }),
        (b"md\r\n", BadCommandLine { skip: 4 }),
        (b"ma\r\n", BadCommandLine { skip: 4 }),
        (b"me\r\n", BadCommandLine { skip: 4 }),
        (b"\x80\x00\x00\x05", BinaryProtocol),
        (b"\x80", BinaryProtocol),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse(input),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        if let Some(skip) = want.skip() {
            assert!(skip > 0);
        }
    }
    // Limits on the edge are accepted.
    let at_limit = format!("get {ok_key}\r\n");
    assert_eq!(complete(at_limit.as_bytes()).key_count, 1);
    let set_at_limit = format!("set {ok_key} 0 0 1\r\nx\r\n");
    assert_eq!(complete(set_at_limit.as_bytes()).len, set_at_limit.len());
    // A base64 key may be up to max_key_length on the wire; this one decodes to 186 bytes.
    assert!(complete(b64_long.as_bytes()).base64_key);
    // Every mg flag at once (18 tokens; memcached takes up to 19).
    assert_eq!(
        complete(b"mg Zm9v b c f h k l q s t u v E1 N1 O1 R1 T1\r\n").key_count,
        1
    );
}

/// Lines memcached would read differently from the parser (or refuse without swallowing their
/// data block) are refused before anything is sent, storage lines with their data block
/// skipped: the smuggling classes of issue 14.
#[test]
fn refuses_what_memcached_reads_differently() {
    use ParseError::*;
    enum Want {
        Bad,
        Close,
    }
    use Want::*;
    // 17 flags on `ms` (20 tokens): memcached refuses it before reading the value, which
    // would then run as a command.
    let smuggle = "ms public:x 9 c I k q s C1 E1 F1 MS O1 T1 b A D G H J\r\nflush_all\r\n";
    // Each input is one whole request: a refusal skips all of it (line and data block).
    let cases: Vec<(String, Want)> = vec![
        (smuggle.into(), Bad),
        (
            "ms k 2 c I k q s C1 E1 F1 MS O1 T1 x y z a d e\r\nhi\r\n".into(),
            Bad,
        ),
        // Flags memcached does not know for the command, or with a token of the wrong kind.
        ("mg k H\r\n".into(), Bad),
        ("mg k P\r\n".into(), Bad),
        ("mg k vv\r\n".into(), Bad),
        ("mg k Tx\r\n".into(), Bad),
        ("mg k T2147483648\r\n".into(), Bad),
        ("mg k N-2147483649\r\n".into(), Bad),
        ("ms k 2 MZ\r\nhi\r\n".into(), Bad),
        ("ms k 2 M\r\nhi\r\n".into(), Bad),
        ("ms k 2 F4294967296\r\nhi\r\n".into(), Bad),
        ("ms k 2 v\r\nhi\r\n".into(), Bad),
        ("md k v\r\n".into(), Bad),
        ("ma k MS\r\n".into(), Bad),
        ("me k v\r\n".into(), Bad),
        // Opaque: at most 32 bytes with its letter, printable.
        (format!("mg k O{}\r\n", "x".repeat(32)), Bad),
        (format!("mg k O{}\r\n", "x".repeat(20000)), Bad),
        ("mg k O\x01\r\n".into(), Bad),
        // Exptimes wider than memcached's 32 bits.
        ("set k 0 9999999999 2\r\nhi\r\n".into(), Bad),
        ("touch k 2147483648\r\n".into(), Bad),
        ("gat 2147483648 k\r\n".into(), Bad),
        ("flush_all 2147483648\r\n".into(), Bad),
        // A NUL or a CR inside a line: memcached's tokenizer stops at the NUL.
        ("ms k\x00 2 T1\r\nhi\r\n".into(), Bad),
        ("mg k v\x00 q\r\n".into(), Bad),
        ("set k 0 0 2 noreply\r\r\nhi\r\n".into(), Bad),
        // Over memcached's 2048-byte line limit (it would close the shared connection).
        (format!("gat 0 {}\r\n", "k ".repeat(1100)), Bad),
        (format!("   get {}\r\n", "k ".repeat(1100)), Bad),
        // An HTTP request line closes the connection, as memcached does.
        ("GET / HTTP/1.1\r\n".into(), Close),
        ("POST /x HTTP/1.0   \r\n".into(), Close),
    ];
    for (input, want) in &cases {
        let want = match want {
            Bad => BadCommandLine { skip: input.len() },
            Close => CrossProtocol,
        };
        assert_eq!(parse(input.as_bytes()), Err(want), "{input:?}");
    }
    // What stays accepted: every flag memcached documents, at the edges of its limits.
    for line in [
        format!("get {}\r\n", "k ".repeat(1100)),
        format!("gets {}\r\n", "k ".repeat(1100)),
        format!("mg k O{}\r\n", "x".repeat(31)),
        "mg k T2147483647 N-2147483648 R0 E18446744073709551615 c f h k l q s t u v\r\n".into(),
        "md k b I k q x C1 E2 O3 T4\r\n".replace("k b", "aw== b"),
        "ma k b c k q t v C1 D2 E3 J4 MD N5 O6 T7\r\n".replace("k b", "aw== b"),
        "ma k M+\r\n".into(),
        "me k b\r\n".replace("me k", "me aw=="),
        "set k 0 2147483647 0\r\n\r\n".into(),
        "touch k -2147483648\r\n".into(),
        "GET / HTTP\r\n".into(),
    ] {
        match parse(line.as_bytes()) {
            Ok(Parsed::Complete(r)) => assert_eq!(r.len, line.len(), "{line:?}"),
            Err(UnknownCommand { .. }) if line.starts_with("GET") => {}
            other => panic!("{line:?}: {other:?}"),
        }
    }
    assert!(matches!(
        parse(b"ms aw== 2 b c I k q s C1 E1 F1 MS O1 T1\r\nhi\r\n"),
        Ok(Parsed::Complete(_))
    ));
}

#[test]
fn a_set_or_ms_too_large_comes_with_the_delete_of_its_key() {
    let limits = Limits {
        max_value_size: 4,
        ..Limits::default()
    };
    let unlink = |buf: &[u8]| unlink_after_too_large(buf, &limits).map(|(_, line)| line);
    assert_eq!(
        unlink(b"set foo 0 0 10\r\n").as_deref(),
        Some(&b"delete foo noreply\r\n"[..])
    );
    assert_eq!(
        unlink(b"set foo 0 0 10 noreply\r\n0123").as_deref(),
        Some(&b"delete foo noreply\r\n"[..])
    );
    assert_eq!(
        unlink(b"ms foo 10 T0\r\n").as_deref(),
        Some(&b"delete foo noreply\r\n"[..])
    );
    assert_eq!(
        unlink(b"ms Zm9v 10 b q\r\n").as_deref(),
        Some(&b"md Zm9v b q\r\n"[..])
    );
    // memcached removes the old value for set and ms only.
    assert_eq!(unlink(b"add foo 0 0 10\r\n"), None);
    assert_eq!(unlink(b"cas foo 0 0 10 1\r\n"), None);
}

#[test]
fn data_block_size_limit_is_checked_before_the_data_arrives() {
    let input = b"set foo 0 0 1048577\r\n";
    assert_eq!(
        parse(input),
        Err(ParseError::TooLarge { skip: 21 + 1048579 })
    );
    let limits = Limits {
        max_value_size: 3,
        ..Limits::default()
    };
    assert!(matches!(
        parse_request(b"set foo 0 0 3\r\nbar\r\n", &limits),
        Ok(Parsed::Complete(_))
    ));
    assert_eq!(
        parse_request(b"set foo 0 0 4\r\n", &limits),
        Err(ParseError::TooLarge { skip: 21 })
    );
    assert_eq!(
        parse_request(b"ms foo 4 T0\r\n", &limits),
        Err(ParseError::TooLarge { skip: 19 })
    );
}

#[test]
fn line_limit() {
    let limits = Limits {
        max_line_length: 16,
        ..Limits::default()
    };
    // 15 bytes + '\n' = 16: fits.
    assert!(matches!(
        parse_request(b"get 0123456789\r\n", &limits),
        Ok(Parsed::Complete(_))
    ));
    assert_eq!(
        parse_request(b"get 0123456789a\r\n", &limits),
        Err(ParseError::LineTooLong)
    );
    assert_eq!(
        parse_request(b"get 0123456789ab", &limits),
        Err(ParseError::LineTooLong)
    );
    assert_eq!(
        parse_request(b"get 0123456789a", &limits),
        Ok(Parsed::Incomplete)
    );
    let mut big = vec![b'a'; 65535];
    assert_eq!(parse(&big), Ok(Parsed::Incomplete));
    big.push(b'a');
    assert_eq!(parse(&big), Err(ParseError::LineTooLong));
    let zero = Limits {
        max_line_length: 0,
        ..Limits::default()
    };
    assert_eq!(
        parse_request(b"get a\r\n", &zero),
        Err(ParseError::LineTooLong)
    );
    assert_eq!(parse_request(b"", &zero), Ok(Parsed::Incomplete));
}

#[test]
fn custom_key_limit() {
    let limits = Limits {
        max_key_length: 3,
        ..Limits::default()
    };
    assert!(matches!(
        parse_request(b"get abc\r\n", &limits),
        Ok(Parsed::Complete(_))
    ));
    assert_eq!(
        parse_request(b"get abcd\r\n", &limits),
        Err(ParseError::BadCommandLine { skip: 10 })
    );
    // "YWJjZA==" is 8 bytes on the wire: over the limit before decoding.
    assert_eq!(
        parse_request(b"mg YWJjZA== b\r\n", &limits),
        Err(ParseError::BadCommandLine { skip: 15 })
    );
}

#[test]
fn error_table() {
    use ParseError::*;
    let table = [
        (
            UnknownCommand { skip: 1 },
            "ERROR\r\n",
            "unknown_command",
            Some(1),
        ),
        (
            BadCommandLine { skip: 2 },
            "CLIENT_ERROR bad command line format\r\n",
            "bad_command_line",
            Some(2),
        ),
        (
            TooLarge { skip: 3 },
            "SERVER_ERROR object too large for cache\r\n",
            "too_large",
            Some(3),
        ),
        (TooLargeNoreply { skip: 5 }, "", "too_large", Some(5)),
        (
            BadDataChunk { skip: 4 },
            "CLIENT_ERROR bad data chunk\r\n",
            "bad_data_chunk",
            Some(4),
        ),
        (
            LineTooLong,
            "CLIENT_ERROR line too long\r\n",
            "line_too_long",
            None,
        ),
        (
            BinaryProtocol,
            "CLIENT_ERROR binary protocol is not supported\r\n",
            "binary_protocol",
            None,
        ),
    ];
    for (error, reply, name, skip) in table {
        assert_eq!(error.reply(), reply.as_bytes());
        assert_eq!(error.as_str(), name);
        assert_eq!(error.skip(), skip);
    }
}
