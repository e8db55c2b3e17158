//! The HTTP origin framing on its own: response heads, chunked bodies cut anywhere, request
//! lines with percent-encoded keys.

use super::*;

fn head(text: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    parse_head(text, 1000)
}

#[test]
fn heads_give_status_flags_max_age_and_framing() {
    let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nBifrost-Flags: 42\r\n\
                 Cache-Control: public, max-age=60\r\n\r\nhello";
    let (h, len) = head(text).expect("a head").expect("complete");
    assert_eq!(len, text.len() - 5);
    assert_eq!(
        h,
        Head {
            status: 200,
            flags: 42,
            max_age: Some(60),
            body: Body::Length(5),
            closes: false,
        }
    );
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    assert_eq!(head(chunked).unwrap().unwrap().0.body, Body::Chunked);
    let gone = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let (h, _) = head(gone).unwrap().unwrap();
    assert_eq!((h.status, h.closes), (404, true), "HTTP/1.0 closes");
    let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
    let (h, _) = head(no_length).unwrap().unwrap();
    assert_eq!((h.closes, h.body), (true, Body::UntilClose));
    let quoted = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=\"7\"\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(head(quoted).unwrap().unwrap().0.max_age, Some(7));
    let not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
    assert_eq!(head(not_modified).unwrap().unwrap().0.body, Body::Length(0));
}

#[test]
fn heads_are_read_only_whole_and_refused_when_wrong_or_too_large() {
    let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    for cut in 0..text.len() {
        assert_eq!(head(&text[..cut]), Ok(None), "cut {cut}");
    }
    assert_eq!(head(b"SMTP 220 hi\r\n\r\n"), Err(HttpError::BadHead));
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n"),
        Err(HttpError::TooLarge)
    );
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        Err(HttpError::BadLength)
    );
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        Err(HttpError::BadLength)
    );
    let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
    endless.extend(vec![b'x'; MAX_HEAD + 1]);
    assert_eq!(head(&endless), Err(HttpError::BadHead));
}

/// Decodes `body` fed in pieces of `cut` bytes: the data and whether it ended.
fn dechunk(body: &[u8], cut: usize, max: usize) -> Result<(Vec<u8>, bool, usize), HttpError> {
    let mut c = Chunked::new(max);
    let (mut data, mut used, mut done) = (Vec::new(), 0, false);
    for piece in body.chunks(cut.max(1)) {
        if done {
            break;
        }
        let p = c.feed(piece)?;
        for r in p.data {
            data.extend_from_slice(&piece[r]);
        }
        used += p.used;
        done = p.done;
    }
    Ok((data, done, used))
}

#[test]
fn chunked_bodies_decode_whatever_the_cut_and_stop_at_their_end() {
    let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    for cut in 1..body.len() {
        let (data, done, used) = dechunk(body, cut, 100).expect("valid");
        assert_eq!(data, b"hello world", "cut {cut}");
        assert!(done, "cut {cut}");
        assert_eq!(
            used,
            body.len() - 4,
            "the next response is left alone (cut {cut})"
        );
    }
    assert_eq!(
        dechunk(b"5\r\nhello\r\n0\r\n\r\n", 3, 4),
        Err(HttpError::TooLarge)
    );
    assert_eq!(dechunk(b"zz\r\n", 1, 100), Err(HttpError::BadChunk));
    assert_eq!(dechunk(b"\r\n", 1, 100), Err(HttpError::BadChunk));
    assert_eq!(dechunk(b"1\r\nab\r\n", 1, 100), Err(HttpError::BadChunk));
    assert_eq!(
        dechunk(b"fffffffffffffffff\r\n", 1, 100),
        Err(HttpError::TooLarge)
    );
}

#[test]
fn request_heads_percent_encode_the_key_and_carry_their_headers() {
    let mut out = bytes::BytesMut::new();
    write_head(
        &mut out,
        "GET",
        ("origin:8080", "/cache/"),
        Some(b"user:1 a/b%\xff~x"),
        &[],
    );
    assert_eq!(
        String::from_utf8(out.to_vec()).unwrap(),
        "GET /cache/user%3A1%20a%2Fb%25%FF~x HTTP/1.1\r\nHost: origin:8080\r\n\r\n"
    );
    let mut out = bytes::BytesMut::new();
    let headers = [
        ("Content-Length", 0),
        ("Bifrost-Flags", u64::from(u32::MAX)),
    ];
    write_head(&mut out, "PUT", ("o", "/"), Some(b"k"), &headers);
    assert_eq!(
        String::from_utf8(out.to_vec()).unwrap(),
        "PUT /k HTTP/1.1\r\nHost: o\r\nContent-Length: 0\r\nBifrost-Flags: 4294967295\r\n\r\n"
    );
    let mut digits = bytes::BytesMut::new();
    for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
        digits.clear();
        crate::protocol::decimal::put_u64(&mut digits, n);
        assert_eq!(&digits[..], n.to_string().as_bytes());
    }
}
