//! [`TextProtocol`] (and [`AnyProtocol`] over it) through the [`ClientProtocol`] trait, as a
//! client connection drives it: requests parsed out of the read buffer in any split, refused
//! ones left for the client to drop, replies put on the write queue as they are.

use std::io::Write;
use std::os::unix::net::UnixStream;

use super::*;
use crate::protocol::Command;

/// Appends `bytes` to `buf` the way a client's reads do (through a socket).
fn arrive(buf: &mut ReadBuf, bytes: &[u8]) {
    let (mut tx, rx) = UnixStream::pair().expect("socket pair");
    tx.write_all(bytes).expect("write");
    let mut got = 0;
    while got < bytes.len() {
        got += buf.read_from(&rx, 1 << 20).expect("read").bytes;
    }
}

/// Everything `protocol` parses out of `buf` until it needs more bytes or refuses one.
fn parse_all<P: ClientProtocol>(protocol: &mut P, buf: &mut ReadBuf) -> Vec<Next> {
    let (limits, mut arena) = (Limits::default(), Arena::default());
    let mut out = Vec::new();
    while let Some(next) = protocol.next_request(buf, &limits, &mut arena) {
        let refused = matches!(next, Next::Error(..));
        out.push(next);
        if refused {
            break;
        }
    }
    out
}

fn request(next: &Next) -> (Command, &[u8]) {
    match next {
        Next::Request(request, bytes) => (request.command, bytes),
        Next::Error(error, _) => panic!("refused: {}", error.as_str()),
    }
}

#[test]
fn requests_split_anywhere_come_out_whole_as_they_were_sent() {
    let mut protocol = AnyProtocol::default();
    let input = b"get a\r\nset k 0 0 5\r\nhello\r\nmg k v\r\n";
    let mut buf = ReadBuf::default();
    let mut got = Vec::new();
    for chunk in input.chunks(4) {
        arrive(&mut buf, chunk);
        got.extend(parse_all(&mut protocol, &mut buf));
    }
    let got: Vec<_> = got.iter().map(request).collect();
    assert_eq!(
        got,
        vec![
            (Command::Get, &b"get a\r\n"[..]),
            (Command::Set, &b"set k 0 0 5\r\nhello\r\n"[..]),
            (Command::MetaGet, &b"mg k v\r\n"[..]),
        ]
    );
    assert!(buf.is_empty());
}

#[test]
fn an_incomplete_request_is_left_in_the_buffer() {
    let mut protocol = TextProtocol;
    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"set k 0 0 5\r\nhel");
    assert!(parse_all(&mut protocol, &mut buf).is_empty());
    assert_eq!(&buf[..], b"set k 0 0 5\r\nhel");
}

#[test]
fn a_refused_request_stays_for_the_client_to_skip_and_a_too_large_set_unlinks() {
    let mut protocol = TextProtocol;
    let limits = Limits {
        max_value_size: 4,
        ..Limits::default()
    };
    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"set k 0 0 5\r\nhello\r\nget k\r\n");
    let next = protocol.next_request(&mut buf, &limits, &mut Arena::default());
    let Some(Next::Error(error, Some((unlink, line)))) = next else {
        panic!("a too-large set is refused with the request that unlinks its key");
    };
    assert_eq!(error.skip(), Some(20), "its line and its data block");
    assert_eq!(
        error.reply(),
        b"SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(
        (unlink.command, &line[..]),
        (Command::Delete, &b"delete k noreply\r\n"[..])
    );
    assert_eq!(buf.len(), 27, "nothing is taken off: the client skips it");

    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"bogus\r\n");
    let next = protocol.next_request(&mut buf, &limits, &mut Arena::default());
    assert!(matches!(
        next,
        Some(Next::Error(ParseError::UnknownCommand { skip: 7 }, None))
    ));
}

#[test]
fn replies_go_out_as_they_are_whether_shared_or_moved() {
    let mut protocol = AnyProtocol::default();
    let mut queue = WriteQueue::default();
    let large = Bytes::from(vec![b'v'; 64 * 1024]);
    let head = format!("VALUE k 0 {}\r\n", large.len());
    protocol.write_reply(
        &[Bytes::from(head.clone()), large.clone()],
        false,
        &mut queue,
    );
    protocol.write_owned_reply(vec![Bytes::from_static(b"\r\nEND\r\n")], true, &mut queue);
    protocol.write_reply(&[], true, &mut queue);
    protocol.write_owned_reply(vec![Bytes::from_static(b"STORED\r\n")], true, &mut queue);
    let mut written = Vec::new();
    queue
        .write_to(&mut written)
        .expect("a Vec takes everything");
    let mut want = head.into_bytes();
    want.extend_from_slice(&large);
    want.extend_from_slice(b"\r\nEND\r\nSTORED\r\n");
    assert_eq!(written, want);
}
