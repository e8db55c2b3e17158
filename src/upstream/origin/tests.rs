//! [`HttpWire`] as a connection drives it: the HTTP requests a memcached request becomes,
//! coalescing, and responses arriving in any split becoming one memcached reply per request.

use super::*;
use std::io::Write;
use std::os::unix::net::UnixStream;

fn origin(writes: bool, max_value_size: usize) -> HttpWire {
    let spec = OriginSpec {
        host: "origin:8080".into(),
        base_path: "/kv/".into(),
        writes,
        max_value_size,
    };
    HttpWire::new(Arc::new(spec), 0, None)
}

fn send(line: &'static [u8]) -> Send {
    bare_send(line)
}

fn fragment() -> Fragment {
    bare_fragment()
}

/// Encodes `lines` in order; returns what went on the wire.
fn encode_all(wire: &mut HttpWire, lines: &[&'static [u8]]) -> String {
    let mut queue = WriteQueue::default();
    for line in lines {
        wire.encode(&send(line), &mut fragment(), &mut queue)
            .expect("the origin takes it");
    }
    let mut written = Vec::new();
    queue
        .write_to(&mut written)
        .expect("a Vec takes everything");
    String::from_utf8(written).expect("text")
}

fn arrive(buf: &mut ReadBuf, bytes: &[u8]) {
    let (mut tx, rx) = UnixStream::pair().expect("socket pair");
    tx.write_all(bytes).expect("write");
    let mut got = 0;
    while got < bytes.len() {
        got += buf.read_from(&rx, 1 << 20).expect("read").bytes;
    }
}

/// What a memcached request was answered: its reply, or the failure's name.
fn answer(framed: Framed) -> Option<String> {
    match framed {
        Framed::Whole { reply, .. } => Some(String::from_utf8_lossy(&reply).into_owned()),
        Framed::Failed(reason) => Some(format!("failed: {}", reason.as_str())),
        Framed::Partial => None,
        Framed::Piece(_) => Some("piece".into()),
    }
}

/// Feeds `responses` to the wire cut every `step` bytes, framing as a connection does (while
/// bytes are buffered or the wire is ready); returns the answers in order.
fn feed(wire: &mut HttpWire, responses: &[u8], step: usize) -> Result<Vec<String>, &'static str> {
    let mut buf = ReadBuf::default();
    let mut answers = Vec::new();
    for chunk in responses.chunks(step.max(1)) {
        arrive(&mut buf, chunk);
        loop {
            if !wire.ready() && (buf.is_empty() || wire.closing()) {
                break;
            }
            match answer(wire.frame(&mut buf, &fragment())?) {
                Some(a) => answers.push(a),
                None => break,
            }
        }
    }
    Ok(answers)
}

const HIT_A: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nBifrost-Flags: 7\r\nCache-Control: public, max-age=30\r\n\r\nAAA";
const HIT_B_CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nBB\r\n1;x=y\r\nb\r\n0\r\n\r\n";
const MISS: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
const HIT_A2: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA2";

#[test]
fn reads_share_a_get_until_a_write_and_answers_come_whole_in_order_at_any_split() {
    for step in [1, 2, 3, 7, 50, 4096] {
        let mut wire = origin(true, 1024);
        let written = encode_all(
            &mut wire,
            &[
                b"get a b%20c\r\n",
                b"gets a\r\n",
                b"mg bm9wZQ== b v f t k c s O9\r\n",
                b"set a 3 0 2\r\nA2\r\n",
                b"get a\r\n",
            ],
        );
        let gets: Vec<&str> = written
            .split("\r\n")
            .filter_map(|l| l.find(|c: char| "GPD".contains(c)).map(|i| &l[i..]))
            .filter(|l| l.ends_with(" HTTP/1.1"))
            .collect();
        assert_eq!(
            gets,
            [
                "GET /kv/a HTTP/1.1",
                "GET /kv/b%2520c HTTP/1.1",
                "GET /kv/nope HTTP/1.1",
                "PUT /kv/a HTTP/1.1",
                "GET /kv/a HTTP/1.1"
            ],
            "the second read of a shares the first's GET; the read after the write does not"
        );
        assert!(written.contains("Host: origin:8080\r\n"));
        assert!(written.contains("Content-Length: 2\r\nBifrost-Flags: 3\r\n\r\nA2"));
        let mut responses = Vec::new();
        for r in [HIT_A, HIT_B_CHUNKED, MISS, CREATED, HIT_A2] {
            responses.extend_from_slice(r);
        }
        let answers = feed(&mut wire, &responses, step).expect("in step");
        assert_eq!(
            answers,
            [
                "VALUE a 7 3\r\nAAA\r\nVALUE b%20c 0 3\r\nBBb\r\nEND\r\n",
                "VALUE a 7 3 0\r\nAAA\r\nEND\r\n",
                "EN O9\r\n",
                "STORED\r\n",
                "VALUE a 0 2\r\nA2\r\nEND\r\n",
            ],
            "split every {step} bytes"
        );
        assert!(
            wire.exchanges.is_empty() && wire.shared.is_empty(),
            "nothing held"
        );
    }
}

#[test]
fn meta_hits_carry_what_was_asked_and_the_origins_max_age() {
    let mut wire = origin(false, 1024);
    encode_all(&mut wire, &[b"mg a v f t s k c O1 q\r\n", b"mg a t\r\n"]);
    let answers = feed(&mut wire, HIT_A, 5).expect("in step");
    assert_eq!(
        answers,
        ["VA 3 f7 t30 s3 c0 ka O1\r\nAAA\r\n", "HD t30\r\n"]
    );
}

#[test]
fn error_statuses_and_values_over_the_limit_fail_the_request_and_the_connection_goes_on() {
    let mut wire = origin(true, 4);
    encode_all(
        &mut wire,
        &[
            b"get a\r\n",
            b"get big\r\n",
            b"delete gone\r\n",
            b"get b\r\n",
        ],
    );
    let mut responses = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy".to_vec();
    responses.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345");
    responses.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    responses.extend_from_slice(HIT_A);
    let answers = feed(&mut wire, &responses, 3).expect("in step");
    assert_eq!(
        answers,
        [
            "failed: origin_status",
            "failed: too_large",
            "NOT_FOUND\r\n",
            "VALUE b 7 3\r\nAAA\r\nEND\r\n"
        ]
    );
}

#[test]
fn bytes_that_are_not_a_response_to_what_was_asked_put_the_stream_out_of_sync() {
    let mut wire = origin(false, 1024);
    assert!(
        feed(&mut wire, HIT_A, 4096).is_err(),
        "a response with nothing asked is refused"
    );
    let mut wire = origin(false, 1024);
    encode_all(&mut wire, &[b"get a\r\n"]);
    assert!(feed(&mut wire, b"VALUE a 0 1\r\nz\r\nEND\r\n", 4096).is_err());
    let mut wire = origin(false, 1024);
    encode_all(&mut wire, &[b"get a\r\n"]);
    let unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nAAA";
    assert!(
        feed(&mut wire, unframed, 4096).is_err(),
        "a value framed by the close"
    );
    let mut wire = origin(false, 4);
    encode_all(&mut wire, &[b"get a\r\n"]);
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n";
    assert!(
        feed(&mut wire, chunked, 4096).is_err(),
        "a chunked body over the limit"
    );
}

#[test]
fn requests_an_origin_cannot_take_are_refused_before_anything_is_sent() {
    let mut queue = WriteQueue::default();
    let mut read_only = origin(false, 1024);
    for (line, reason) in [
        (&b"set a 0 0 1\r\nx\r\n"[..], FailReason::ReadOnly),
        (b"delete a\r\n", FailReason::ReadOnly),
        (b"ms a 1 T5\r\nx\r\n", FailReason::ReadOnly),
        (b"add a 0 0 1\r\nx\r\n", FailReason::NotSupported),
        (b"incr a 1\r\n", FailReason::NotSupported),
        (b"touch a 10\r\n", FailReason::NotSupported),
        (b"flush_all\r\n", FailReason::NotSupported),
    ] {
        let got = read_only.encode(
            &send(Box::leak(line.to_vec().into_boxed_slice())),
            &mut fragment(),
            &mut queue,
        );
        assert_eq!(got, Err(reason), "{}", String::from_utf8_lossy(line));
    }
    let mut writable = origin(true, 1024);
    for line in [
        &b"ms a 1 C5\r\nx\r\n"[..],
        b"ms a 1 MA\r\nx\r\n",
        b"md a C1\r\n",
        b"md a I\r\n",
    ] {
        let got = writable.encode(
            &send(Box::leak(line.to_vec().into_boxed_slice())),
            &mut fragment(),
            &mut queue,
        );
        assert_eq!(
            got,
            Err(FailReason::NotSupported),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(queue.is_empty(), "nothing queued for a refusal");
    let written = encode_all(
        &mut writable,
        &[b"ms a 2 F9 T100 q O3\r\nhi\r\n", b"md a q\r\n"],
    );
    assert!(written.contains("Bifrost-Flags: 9\r\nCache-Control: max-age=100\r\n\r\nhi"));
    assert!(written.contains("DELETE /kv/a HTTP/1.1"));
    let mut responses = CREATED.to_vec();
    responses.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    let answers = feed(&mut writable, &responses, 1).expect("in step");
    assert_eq!(
        answers,
        ["", ""],
        "quiet meta writes say nothing on success"
    );
}

#[test]
fn a_close_between_responses_sends_the_unanswered_requests_again() {
    let mut wire = origin(false, 1024);
    encode_all(&mut wire, &[b"get a\r\n", b"get b\r\n", b"get a\r\n"]);
    let closing = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nAAA";
    let answers = feed(&mut wire, closing, 4096).expect("in step");
    assert_eq!(
        answers,
        ["VALUE a 0 3\r\nAAA\r\nEND\r\n"],
        "the shared read is held back: it is later than get b"
    );
    assert!(wire.closing());
    let mut queue = WriteQueue::default();
    assert!(wire.replay(&mut queue));
    let mut written = Vec::new();
    queue
        .write_to(&mut written)
        .expect("a Vec takes everything");
    let written = String::from_utf8(written).expect("text");
    assert_eq!(
        written.matches("GET ").count(),
        1,
        "only b again: {written}"
    );
    assert!(!wire.closing());
    let answers = feed(&mut wire, MISS, 4096).expect("in step");
    assert_eq!(answers, ["END\r\n", "VALUE a 0 3\r\nAAA\r\nEND\r\n"]);
    // A connection that closes before answering anything is not made again.
    encode_all(&mut wire, &[b"get c\r\n"]);
    assert!(
        wire.replay(&mut WriteQueue::default()),
        "b's answer came on this one"
    );
    assert!(!wire.replay(&mut WriteQueue::default()));
}

#[test]
fn the_health_probe_is_a_head_whose_status_under_500_is_up() {
    let mut wire = origin(false, 1024);
    let written = encode_all(&mut wire, &[b"version\r\n", b"version\r\n"]);
    assert!(written.starts_with("HEAD /kv/ HTTP/1.1\r\n"));
    let mut responses = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 150\r\n\r\n".to_vec();
    responses.extend_from_slice(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 150\r\n\r\n");
    let answers = feed(&mut wire, &responses, 4096).expect("in step");
    assert_eq!(
        answers,
        ["VERSION http-origin\r\n", "failed: origin_status"],
        "a HEAD's Content-Length has no body behind it"
    );
}

#[test]
fn a_streamed_read_of_several_keys_hands_each_value_on_as_it_comes_and_ends_with_end() {
    for step in [1, 5, 64, 4096] {
        let mut wire = origin(false, 1 << 20);
        let mut queue = WriteQueue::default();
        let mut streamed = fragment();
        streamed.stream = true;
        wire.encode(&send(b"get a b c a\r\n"), &mut streamed, &mut queue)
            .expect("a read");
        let mut responses = HIT_A.to_vec();
        responses.extend_from_slice(MISS);
        responses.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\nCache-Control: max-age=5\r\n\r\n",
        );
        responses.extend_from_slice(&[b'C'; 20000]);
        let mut buf = ReadBuf::default();
        let mut got = Vec::new();
        for chunk in responses.chunks(step) {
            arrive(&mut buf, chunk);
            while wire.ready() || !buf.is_empty() {
                match wire.frame(&mut buf, &streamed).expect("in step") {
                    Framed::Partial => break,
                    Framed::Piece(piece) => got.push(String::from_utf8_lossy(&piece).into_owned()),
                    // (a small value is one piece; a big one three: its line, its body, its `\r\n`)
                    Framed::Whole {
                        reply,
                        values,
                        max_age,
                        ..
                    } => {
                        assert_eq!((&reply[..], values, max_age), (&b"END\r\n"[..], 3, Some(5)));
                        got.push("end".into());
                    }
                    Framed::Failed(reason) => panic!("{reason:?}"),
                }
            }
        }
        assert_eq!(
            got,
            [
                "VALUE a 7 3\r\nAAA\r\n",
                "VALUE c 0 20000\r\n",
                &"C".repeat(20000),
                "\r\n",
                "VALUE a 7 3\r\nAAA\r\n",
                "end"
            ],
            "split every {step} bytes"
        );
        assert!(wire.exchanges.is_empty(), "nothing held");
    }
}

#[test]
fn a_streamed_read_with_a_failed_key_fails_at_its_end() {
    let mut wire = origin(false, 1024);
    let mut queue = WriteQueue::default();
    let mut streamed = fragment();
    streamed.stream = true;
    wire.encode(&send(b"get a b\r\n"), &mut streamed, &mut queue)
        .expect("a read");
    let mut buf = ReadBuf::default();
    arrive(&mut buf, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    arrive(&mut buf, HIT_A);
    let mut pieces = Vec::new();
    let last = loop {
        match wire.frame(&mut buf, &streamed).expect("in step") {
            Framed::Piece(piece) => pieces.extend_from_slice(&piece),
            other => break other,
        }
    };
    assert_eq!(pieces, b"VALUE b 7 3\r\nAAA\r\n");
    assert!(
        matches!(last, Framed::Failed(FailReason::OriginStatus(500))),
        "{last:?}"
    );
}

#[test]
fn bytes_after_a_response_that_closes_are_not_read_as_responses() {
    // Found by fuzzing: a multi-key read went on reading after the close-announcing response
    // of its first key, and took what followed as the next response.
    let mut wire = origin(false, 1024);
    encode_all(&mut wire, &[b"get a b\r\n"]);
    let mut bytes = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nAAA".to_vec();
    bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nnot a header line\r\n\r\n");
    let answers = feed(&mut wire, &bytes, 4096).expect("in step");
    assert!(answers.is_empty(), "{answers:?}");
    assert!(wire.closing());
    let mut queue = WriteQueue::default();
    assert!(wire.replay(&mut queue), "b goes again on a new connection");
    let answers = feed(&mut wire, MISS, 4096).expect("in step");
    assert_eq!(answers, ["VALUE a 0 3\r\nAAA\r\nEND\r\n"]);
}
