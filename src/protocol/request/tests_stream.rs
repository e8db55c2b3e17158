//! Tests of the request parser on byte streams: every split point, pipelining, numbers, base64
//! keys, and garbage.

use super::tests::{complete, line_plus, parse};
use super::tokens::{parse_data_len, parse_i64, parse_u64};
use super::*;

/// Requests used by the split and pipelining tests.
fn samples() -> Vec<Vec<u8>> {
    let mut many = b"get".to_vec();
    for n in 0..100 {
        many.extend_from_slice(format!(" key:{n}").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    vec![
        b"get foo\r\n".to_vec(),
        b"get a bb ccc\r\n".to_vec(),
        many,
        b"set foo 1 2 11\r\nab\r\nEND\r\ncd\r\n".to_vec(),
        b"set foo 0 0 0\r\n\r\n".to_vec(),
        b"cas foo 0 0 3 99\r\nbar\r\n".to_vec(),
        b"ms foo 5 T60 F3 q b\r\nhello\r\n".to_vec(),
        b"ms Zm9v 2 b I\r\n\r\n\r\n".to_vec(),
        b"gat 60 foo bar\r\n".to_vec(),
        b"gats 0 foo\n".to_vec(),
        b"set foo 0 0 3 noreply\r\nbar\r\n".to_vec(),
        b"delete foo noreply\r\n".to_vec(),
        b"incr foo 5 noreply\r\n".to_vec(),
        b"touch foo 5 noreply\r\n".to_vec(),
        b"mg foo v q k\r\n".to_vec(),
        b"mn\r\n".to_vec(),
        b"bogus command\r\n".to_vec(),
        b"set foo x 0 3\r\nbar\r\n".to_vec(),
        b"set foo 0 0 3\r\nbarXY".to_vec(),
        b"set foo 0 0 1048577\r\n".to_vec(),
    ]
}

#[test]
fn every_split_point_is_incomplete_then_identical() {
    for sample in samples() {
        let whole = parse(&sample);
        assert_ne!(whole, Ok(Parsed::Incomplete));
        // The smallest prefix that decides the outcome.
        let decided = match whole {
            Ok(Parsed::Complete(r)) => r.len,
            Err(ParseError::TooLarge { .. }) | Err(ParseError::BadCommandLine { .. }) => {
                line_plus(&sample, 0)
            }
            Err(_) | Ok(Parsed::Incomplete) => sample.len(),
        };
        for cut in 0..sample.len() {
            let prefix = &sample[..cut];
            let got = parse(prefix);
            if cut < decided {
                assert_eq!(
                    got,
                    Ok(Parsed::Incomplete),
                    "{:?} cut {cut}",
                    String::from_utf8_lossy(&sample)
                );
            } else {
                assert_eq!(
                    got,
                    whole,
                    "{:?} cut {cut}",
                    String::from_utf8_lossy(&sample)
                );
            }
        }
    }
}

#[test]
fn pipelined_requests_parse_one_after_another() {
    let samples: Vec<Vec<u8>> = samples()
        .into_iter()
        .filter(|s| matches!(parse(s), Ok(Parsed::Complete(_))))
        .collect();
    let stream: Vec<u8> = samples.concat();
    let mut offset = 0;
    for sample in &samples {
        let got = parse(&stream[offset..]);
        assert_eq!(got, parse(sample));
        let Ok(Parsed::Complete(r)) = got else {
            unreachable!()
        };
        offset += r.len;
    }
    assert_eq!(offset, stream.len());
    // A bad request in the middle: skip it and carry on.
    let stream = b"get a\r\nset a x 0 3\r\nget\r\nxyz\r\nbogus\r\nget b\r\n";
    let mut offset = 0;
    let mut outcomes = Vec::new();
    while offset < stream.len() {
        match parse(&stream[offset..]) {
            Ok(Parsed::Complete(r)) => {
                outcomes.push(r.command.name().to_string());
                offset += r.len;
            }
            Err(e) => {
                outcomes.push(e.as_str().to_string());
                offset += e.skip().unwrap();
            }
            Ok(Parsed::Incomplete) => panic!("incomplete at {offset}"),
        }
    }
    // "set a x 0 3" has a bad <flags> but a good <bytes>: its 3-byte value "get" and the CRLF
    // after it are swallowed, so "get\r\n" is never read as a command.
    assert_eq!(
        outcomes,
        [
            "get",
            "bad_command_line",
            "unknown_command",
            "unknown_command",
            "get"
        ]
    );
}

#[test]
fn huge_counts() {
    let limits = Limits {
        max_line_length: 1 << 20,
        ..Limits::default()
    };
    let mut line = b"get".to_vec();
    for n in 0..20_000 {
        line.extend_from_slice(format!(" k{n}").as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    let Ok(Parsed::Complete(r)) = parse_request(&line, &limits) else {
        panic!()
    };
    assert_eq!(r.key_count, 20_000);
    assert_eq!(r.keys(&line).count(), 20_000);
    assert_eq!(r.keys(&line).last(), Some(&b"k19999"[..]));
    let spaces = format!("get{}a{}\r\n", " ".repeat(30_000), " ".repeat(30_000));
    assert_eq!(complete(spaces.as_bytes()).key_count, 1);
}

#[test]
fn numbers() {
    assert_eq!(parse_u64(b"0"), Some(0));
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse_u64(b"000000000000000000001"), None);
    assert_eq!(parse_u64(b""), None);
    assert_eq!(parse_u64(b"-1"), None);
    assert_eq!(parse_u64(b"1a"), None);
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_i64(b"-9223372036854775809"), None);
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"9223372036854775808"), None);
    assert_eq!(parse_i64(b"-"), None);
    assert_eq!(parse_i64(b"--1"), None);
    assert_eq!(parse_data_len(b"2147483645"), Some(2147483645));
    assert_eq!(parse_data_len(b"2147483646"), None);
}

/// The decoded length of a base64 key, as the meta parser checks it.
fn base64_decoded_len(encoded: &[u8]) -> Option<usize> {
    let mut out = [0u8; crate::protocol::base64::MAX_DECODED];
    crate::protocol::base64::decode(encoded, &mut out)
}

#[test]
fn base64_keys() {
    assert_eq!(base64_decoded_len(b"Zm9v"), Some(3));
    assert_eq!(base64_decoded_len(b"Zm8="), Some(2));
    assert_eq!(base64_decoded_len(b"Zg=="), Some(1));
    assert_eq!(base64_decoded_len(b"Zg="), None);
    assert_eq!(base64_decoded_len(b"Z==="), None);
    assert_eq!(base64_decoded_len(b"Zm=v"), None);
    assert_eq!(base64_decoded_len(b""), None);
    assert_eq!(base64_decoded_len(b"Zm9-"), None);
    assert_eq!(base64_decoded_len(b"+/+/"), Some(3));
}

#[test]
fn garbage_never_panics_and_keeps_invariants() {
    let alphabet: &[&[u8]] = &[
        b"get",
        b"set",
        b"gat",
        b"ms",
        b"mg",
        b"cas",
        b"delete",
        b"noreply",
        b" ",
        b"  ",
        b"\r\n",
        b"\n",
        b"\r",
        b"0",
        b"3",
        b"-1",
        b"99999999999999999999",
        b"foo",
        b"q",
        b"b",
        b"Zm9v",
        b"\x00",
        b"\x80",
        b"\x7f",
        b"\t",
        b"=",
        b"T60",
    ];
    let limits = Limits {
        max_line_length: 64,
        max_value_size: 16,
        max_key_length: 8,
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let mut buf = Vec::new();
        for _ in 0..(next() % 24) {
            buf.extend_from_slice(alphabet[(next() % alphabet.len() as u64) as usize]);
        }
        for lim in [&limits, &Limits::default()] {
            let whole = parse_request(&buf, lim);
            match whole {
                Ok(Parsed::Complete(r)) => {
                    assert!(r.line_len <= r.len && r.len <= buf.len());
                    assert!(r.args.end < r.line_len && r.keys.end <= r.line_len);
                    assert_eq!(r.keys(&buf).count(), r.key_count);
                    for key in r.keys(&buf) {
                        assert!(!key.is_empty() && key.len() <= lim.max_key_length);
                        assert!(!key.iter().any(|&b| b == b' ' || b == b'\r' || b == b'\n'));
                    }
                    if let Some(d) = r.data {
                        assert_eq!(d.start, r.line_len);
                        assert_eq!(d.end + 2, r.len);
                    }
                }
                Ok(Parsed::Incomplete) => {}
                Err(e) => assert!(e.skip().map_or(true, |s| s > 0)),
            }
            for cut in 0..buf.len() {
                let got = parse_request(&buf[..cut], lim);
                assert!(
                    got == Ok(Parsed::Incomplete) || got == whole,
                    "{buf:?} cut {cut}"
                );
            }
        }
    }
}
