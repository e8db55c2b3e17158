//! The binary protocol's translations on their own: frames in, text requests out; text replies
//! in (in any cut), binary responses out.

use bytes::Bytes;

use super::reply::ReplyTranslator;
use super::request::{translate, Answer, Pending};
use super::*;

/// A request frame.
fn frame(op: u8, extras: &[u8], key: &[u8], value: &[u8], opaque: u32, cas: u64) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut f = vec![REQUEST_MAGIC, op];
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.push(extras.len() as u8);
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&(body as u32).to_be_bytes());
    f.extend_from_slice(&opaque.to_be_bytes());
    f.extend_from_slice(&cas.to_be_bytes());
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

fn text_of(f: &[u8]) -> (String, Pending, Option<Bytes>) {
    let header = match Header::parse(f) {
        Ok(Some(h)) => h,
        other => panic!("{other:?}"),
    };
    let t = translate(&header, f);
    (
        String::from_utf8_lossy(&t.text).into_owned(),
        t.pending,
        t.then,
    )
}

#[test]
fn headers_that_do_not_add_up_are_refused() {
    assert_eq!(Header::parse(&[0x80; 10]), Ok(None));
    let mut f = frame(opcode::GET, &[], b"k", &[], 1, 0);
    assert!(matches!(Header::parse(&f), Ok(Some(h)) if h.frame_len() == f.len()));
    f[0] = 0x81;
    assert_eq!(Header::parse(&f), Err(BadFrame));
    let mut f = frame(opcode::GET, &[], b"key", &[], 1, 0);
    f[11] = 2; // body 2 < key 3
    assert_eq!(Header::parse(&f), Err(BadFrame));
}

#[test]
fn each_opcode_becomes_its_meta_request() {
    let set_extras = [0, 0, 0, 7, 0, 0, 0, 60];
    let arith = {
        let mut e = 5u64.to_be_bytes().to_vec();
        e.extend_from_slice(&10u64.to_be_bytes());
        e.extend_from_slice(&0u32.to_be_bytes());
        e
    };
    let no_create = {
        let mut e = arith[..16].to_vec();
        e.extend_from_slice(&u32::MAX.to_be_bytes());
        e
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame(opcode::GET, &[], b"k", &[], 1, 0), "mg k v f c\r\n"),
        (
            frame(opcode::GETKQ, &[], b"k", &[], 1, 0),
            "mg k v f c q\r\n",
        ),
        (
            frame(opcode::SET, &set_extras, b"k", b"val", 1, 0),
            "ms k 3 F7 T60 MS c\r\nval\r\n",
        ),
        (
            frame(opcode::ADDQ, &set_extras, b"k", b"v", 1, 0),
            "ms k 1 F7 T60 ME c q\r\nv\r\n",
        ),
        (
            frame(opcode::REPLACE, &set_extras, b"k", b"v", 1, 9),
            "ms k 1 F7 T60 MR c C9\r\nv\r\n",
        ),
        (
            frame(opcode::APPEND, &[], b"k", b"v", 1, 0),
            "ms k 1 MA c\r\nv\r\n",
        ),
        (frame(opcode::DELETE, &[], b"k", &[], 1, 4), "md k C4\r\n"),
        (
            frame(opcode::INCREMENT, &arith, b"k", &[], 1, 0),
            "ma k D5 MI v c N0 J10\r\n",
        ),
        (
            frame(opcode::DECREMENTQ, &no_create, b"k", &[], 1, 0),
            "ma k D5 MD v c q\r\n",
        ),
        (
            frame(opcode::TOUCH, &[0, 0, 0, 9], b"k", &[], 1, 0),
            "mg k T9 f c\r\n",
        ),
        (
            frame(opcode::GATK, &[0, 0, 0, 9], b"k", &[], 1, 0),
            "mg k v f c T9\r\n",
        ),
        (frame(opcode::NOOP, &[], &[], &[], 1, 0), "mn\r\n"),
        (frame(opcode::VERSION, &[], &[], &[], 1, 0), "version\r\n"),
        (
            frame(opcode::FLUSHQ, &[0, 0, 0, 5], &[], &[], 1, 0),
            "flush_all 5 noreply\r\n",
        ),
        (frame(opcode::STAT, &[], &[], &[], 1, 0), "stats\r\n"),
        // A key text cannot carry goes base64-encoded, with `b`.
        (
            frame(opcode::GET, &[], b"a b\n", &[], 1, 0),
            "mg YSBiCg== v f c b\r\n",
        ),
        // Answered by the proxy: an `mn` whose answer is fixed.
        (
            frame(opcode::SASL_AUTH, &[], b"PLAIN", b"x", 1, 0),
            "mn\r\n",
        ),
        (frame(0x7f, &[], &[], &[], 1, 0), "mn\r\n"),
        (frame(opcode::GET, &[1], b"k", &[], 1, 0), "mn\r\n"),
        (frame(opcode::GET, &[], &[], &[], 1, 0), "mn\r\n"),
    ];
    for (f, want) in cases {
        assert_eq!(text_of(&f).0, want, "opcode {:#x}", f[1]);
    }
    let (_, pending, _) = text_of(&frame(opcode::SASL_LIST_MECHS, &[], &[], &[], 3, 0));
    assert_eq!(pending.answer, Answer::Fixed(status::NOT_SUPPORTED));
    let (text, pending, then) = text_of(&frame(opcode::QUIT, &[], &[], &[], 3, 0));
    assert_eq!((text.as_str(), pending.answer), ("mn\r\n", Answer::Quit));
    assert_eq!(then.as_deref(), Some(&b"quit\r\n"[..]));
}

fn pending(op: u8, answer: Answer, quiet: bool) -> Pending {
    Pending {
        opcode: op,
        opaque: 0xabcd,
        key: Bytes::from_static(b"key"),
        answer,
        quiet,
    }
}

/// Translates `reply` cut into pieces of `cut` bytes; the response bytes.
fn answer(p: &Pending, reply: &[u8], cut: usize) -> Vec<u8> {
    let mut t = ReplyTranslator::default();
    let mut out = Vec::new();
    for piece in reply.chunks(cut.max(1)) {
        t.feed(p, &Bytes::copy_from_slice(piece), &mut out);
    }
    t.finish();
    out.iter().flat_map(|b| b.to_vec()).collect()
}

fn response(op: u8, st: u16, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut r =
        response_header(op, st, 0xabcd, cas, (extras.len(), key.len(), value.len())).to_vec();
    r.extend_from_slice(extras);
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    r
}

#[test]
fn replies_become_responses_whatever_the_cut() {
    let getk = pending(opcode::GETK, Answer::Get { with_key: true }, false);
    let hit = b"VA 5 f7 c99\r\nhello\r\n";
    let want = response(
        opcode::GETK,
        status::OK,
        99,
        &[0, 0, 0, 7],
        b"key",
        b"hello",
    );
    for cut in 1..hit.len() + 1 {
        assert_eq!(answer(&getk, hit, cut), want, "cut {cut}");
    }
    let get = pending(opcode::GET, Answer::Get { with_key: false }, false);
    assert_eq!(
        answer(&get, b"EN\r\n", 2),
        response(
            opcode::GET,
            status::KEY_NOT_FOUND,
            0,
            &[],
            &[],
            b"Not found"
        )
    );
    let getq = pending(opcode::GETQ, Answer::Get { with_key: false }, true);
    assert!(
        answer(&getq, b"", 1).is_empty(),
        "a quiet miss answers nothing"
    );
    let touch = pending(opcode::TOUCH, Answer::Touch, false);
    assert_eq!(
        answer(&touch, b"HD f5 c2223\r\n", 4),
        response(opcode::TOUCH, 0, 2223, &[0, 0, 0, 5], &[], &[]),
        "touch answers the flags and CAS, as memcached does"
    );
    let set = pending(opcode::SET, Answer::Store, false);
    assert_eq!(
        answer(&set, b"HD c12\r\n", 3),
        response(opcode::SET, 0, 12, &[], &[], &[])
    );
    let add = pending(opcode::ADD, Answer::Store, false);
    assert_eq!(
        answer(&add, b"NS\r\n", 9),
        response(
            opcode::ADD,
            status::KEY_EXISTS,
            0,
            &[],
            &[],
            b"Data exists for key."
        )
    );
    let incr = pending(opcode::INCREMENT, Answer::Arithmetic, false);
    for cut in 1..12 {
        assert_eq!(
            answer(&incr, b"VA 2 c5\r\n15\r\n", cut),
            response(opcode::INCREMENT, 0, 5, &[], &[], &15u64.to_be_bytes())
        );
    }
    assert_eq!(
        answer(
            &incr,
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            7
        )[6..8],
        status::NON_NUMERIC.to_be_bytes()
    );
    let stat = pending(opcode::STAT, Answer::Stat, false);
    let stats = answer(&stat, b"STAT pid 42\r\nSTAT uptime 7\r\nEND\r\n", 5);
    let mut want = response(opcode::STAT, 0, 0, &[], b"pid", b"42");
    want.extend(response(opcode::STAT, 0, 0, &[], b"uptime", b"7"));
    want.extend(response(opcode::STAT, 0, 0, &[], &[], &[]));
    assert_eq!(stats, want);
    // An error is answered even for a quiet request.
    let setq = pending(opcode::SETQ, Answer::Store, true);
    assert_eq!(
        answer(&setq, b"SERVER_ERROR backend down\r\n", 4),
        response(
            opcode::SETQ,
            status::TEMPORARY_FAILURE,
            0,
            &[],
            &[],
            b"backend down"
        )
    );
    // Garbage, however long, is an error, never a panic.
    let long = vec![b'x'; 10_000];
    assert_eq!(
        answer(&get, &long, 100)[6..8],
        status::INTERNAL_ERROR.to_be_bytes()
    );
}
