//! [`MemcacheText`] through the [`BackendWire`] trait, as a connection drives it: what a request
//! puts on the wire, and how reply bytes arriving in any split become one answer per request,
//! checked against the request they answer.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::upstream::{Failure, Framing, Owner};

/// A request of `kind` for `line`, with `value` after it; noreply ones get the `mn` tail.
fn send(line: &'static [u8], value: Option<&'static [u8]>, kind: ReplyKind) -> Send {
    Send {
        server: 0,
        part: 0,
        bytes: Bytes::from_static(line),
        value: value.map(Bytes::from_static),
        framing: Framing {
            kind,
            on_failure: Failure::Error,
            discard_reply: false,
            noop_tail: kind == ReplyKind::UntilNoop,
        },
        stream: false,
    }
}

/// What a connection tracks for `send` before the wire has seen it.
fn fragment(send: &Send) -> Fragment {
    Fragment {
        owner: Owner { token: 0, part: 0 },
        kind: send.framing.kind,
        on_failure: send.framing.on_failure,
        discard_reply: false,
        stream: send.stream,
        deadline: Instant::now(),
        sent: 0,
        expect: Expect::ANY,
        wire_start: 0,
    }
}

/// Encodes `sends` in order through the wire; returns their fragments and the bytes queued.
fn encode_all<W: BackendWire>(wire: &mut W, sends: &[Send]) -> (Vec<Fragment>, Vec<u8>) {
    let mut queue = WriteQueue::default();
    let fragments = sends
        .iter()
        .map(|s| {
            let mut f = fragment(s);
            wire.encode(s, &mut f, &mut queue)
                .expect("memcached takes every request");
            f
        })
        .collect();
    let mut written = Vec::new();
    queue
        .write_to(&mut written)
        .expect("a Vec takes everything");
    (fragments, written)
}

/// Appends `bytes` to `buf` the way a connection's reads do (through a socket).
fn arrive(buf: &mut ReadBuf, bytes: &[u8]) {
    let (mut tx, rx) = UnixStream::pair().expect("socket pair");
    tx.write_all(bytes).expect("write");
    let mut got = 0;
    while got < bytes.len() {
        got += buf.read_from(&rx, 1 << 20).expect("read").bytes;
    }
}

/// Frames `buf` against `fragments` in order until it is empty or a reply is partial.
fn frame_all<W: BackendWire>(
    wire: &mut W,
    buf: &mut ReadBuf,
    fragments: &mut Vec<Fragment>,
) -> Result<Vec<Framed>, &'static str> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Some(head) = fragments.first().copied() else {
            break;
        };
        match wire.frame(buf, &head)? {
            Framed::Partial => break,
            whole @ Framed::Whole { .. } => {
                fragments.remove(0);
                out.push(whole);
            }
            piece => out.push(piece),
        }
    }
    Ok(out)
}

fn whole(framed: &Framed) -> (&[u8], usize, usize) {
    match framed {
        Framed::Whole {
            reply,
            tail,
            values,
            ..
        } => (reply, *tail, *values),
        other => panic!("not a whole reply: {other:?}"),
    }
}

#[test]
fn requests_go_out_as_sent_with_their_value_and_noop_tail() {
    let mut wire = MemcacheText::default();
    let sends = [
        send(b"get a b\r\n", None, ReplyKind::Retrieval),
        send(
            b"set k 0 0 1 noreply\r\n",
            Some(b"v\r\n"),
            ReplyKind::UntilNoop,
        ),
    ];
    let (fragments, written) = encode_all(&mut wire, &sends);
    assert_eq!(written, b"get a b\r\nset k 0 0 1 noreply\r\nv\r\nmn\r\n");
    assert!(
        fragments[0].expect.walks_line(),
        "a retrieval of several keys is checked key by key"
    );
    assert_eq!(
        wire.key_lines.len(),
        1,
        "its line is kept until it is answered"
    );
}

#[test]
fn replies_split_anywhere_are_answered_in_order_with_their_tails() {
    let mut wire = MemcacheText::default();
    let sends = [
        send(b"get k\r\n", None, ReplyKind::Retrieval),
        send(b"delete k noreply\r\n", None, ReplyKind::UntilNoop),
        send(b"get a b\r\n", None, ReplyKind::Retrieval),
    ];
    let (mut fragments, _) = encode_all(&mut wire, &sends);
    let stream = b"VALUE k 0 2\r\nhi\r\nEND\r\nMN\r\nVALUE b 0 1\r\nx\r\nEND\r\n";
    let mut buf = ReadBuf::default();
    let mut answers = Vec::new();
    for chunk in stream.chunks(5) {
        arrive(&mut buf, chunk);
        answers.extend(frame_all(&mut wire, &mut buf, &mut fragments).expect("in step"));
    }
    assert_eq!(answers.len(), 3);
    assert_eq!(
        whole(&answers[0]),
        (&b"VALUE k 0 2\r\nhi\r\nEND\r\n"[..], 5, 1)
    );
    assert_eq!(
        whole(&answers[1]),
        (&b""[..], 0, 0),
        "the mn tail's MN is not part of the reply"
    );
    assert_eq!(
        whole(&answers[2]),
        (&b"VALUE b 0 1\r\nx\r\nEND\r\n"[..], 5, 1)
    );
    assert!(buf.is_empty() && fragments.is_empty());
    assert!(wire.key_lines.is_empty(), "answered lines are let go");
}

#[test]
fn a_streamed_reply_is_handed_on_in_pieces_then_its_rest() {
    let mut wire = MemcacheText::default();
    let mut get = send(b"get big\r\n", None, ReplyKind::Retrieval);
    get.stream = true;
    let (mut fragments, _) = encode_all(&mut wire, &[get]);
    let size = 3 * STREAM_PIECE;
    let mut reply = format!("VALUE big 0 {size}\r\n").into_bytes();
    reply.resize(reply.len() + size, b'x');
    reply.extend_from_slice(b"\r\nEND\r\n");
    let mut buf = ReadBuf::default();
    let mut answers = Vec::new();
    for chunk in reply.chunks(STREAM_PIECE + 100) {
        arrive(&mut buf, chunk);
        answers.extend(frame_all(&mut wire, &mut buf, &mut fragments).expect("in step"));
    }
    let (last, pieces) = answers.split_last().expect("answered");
    let (rest, tail, values) = whole(last);
    assert_eq!((tail, values), (5, 1));
    assert!(!pieces.is_empty());
    let mut all = Vec::new();
    for piece in pieces {
        let Framed::Piece(bytes) = piece else {
            panic!("a piece expected, got {piece:?}");
        };
        assert!(bytes.len() >= STREAM_PIECE);
        all.extend_from_slice(bytes);
    }
    all.extend_from_slice(rest);
    assert_eq!(
        all, reply,
        "the pieces and the rest are the reply, in order"
    );
}

#[test]
fn a_reply_that_answers_another_request_is_refused_and_reset_starts_afresh() {
    let mut wire = MemcacheText::default();
    let (mut fragments, _) = encode_all(
        &mut wire,
        &[send(b"get a b\r\n", None, ReplyKind::Retrieval)],
    );
    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"VALUE c 0 1\r\nx\r\nEND\r\n");
    assert_eq!(
        frame_all(&mut wire, &mut buf, &mut fragments).err(),
        Some("wrong_key")
    );
    // The connection resets on it; so does the wire.
    wire.reset();
    assert!(wire.key_lines.is_empty());
    let mut set = send(b"set k 0 0 1\r\n", Some(b"v\r\n"), ReplyKind::Line);
    let (mut fragments, _) = encode_all(&mut wire, std::slice::from_ref(&set));
    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"DELETED\r\n");
    assert_eq!(
        frame_all(&mut wire, &mut buf, &mut fragments).err(),
        Some("unexpected_reply"),
        "a set cannot be answered DELETED"
    );

    // Nothing half framed before a reset is used again.
    wire.reset();
    set.part = 1;
    let (mut fragments, _) = encode_all(&mut wire, &[set]);
    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"STORED\r\n");
    let answers = frame_all(&mut wire, &mut buf, &mut fragments).expect("in step");
    assert_eq!(whole(&answers[0]), (&b"STORED\r\n"[..], 8, 0));
}
