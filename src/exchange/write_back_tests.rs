//! Tests of [`super`] (write_back.rs).

use super::*;
use crate::protocol::{parse_request, Command, Limits, Parsed};

fn parse(bytes: &[u8]) -> Request {
    match parse_request(bytes, &Limits::default()) {
        Ok(Parsed::Complete(r)) => r,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

/// True when `part`'s bytes lie inside `whole`'s memory (a slice, not a copy).
fn inside(part: &Bytes, whole: &Bytes) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fn blocks(reply: &'static [u8]) -> Vec<ValueBlock> {
    value_blocks(&Bytes::from_static(reply)).collect()
}

fn joined(parts: &[Bytes]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn value_blocks_walks_every_block_until_end() {
    let reply = Bytes::from_static(
        b"VALUE a 0 1\r\nx\r\nVALUE bb 42 0\r\n\r\nVALUE c 7 5\r\nr\r\n\n!\r\nEND\r\n",
    );
    let got: Vec<ValueBlock> = value_blocks(&reply).collect();
    assert_eq!(got.len(), 3);
    assert_eq!((&got[0].key[..], &got[0].flags[..]), (&b"a"[..], &b"0"[..]));
    assert_eq!(&got[0].data[..], b"x\r\n");
    assert_eq!(
        (&got[1].key[..], &got[1].flags[..]),
        (&b"bb"[..], &b"42"[..])
    );
    assert_eq!(&got[1].data[..], b"\r\n");
    // Data may hold line ends: the length frames it.
    assert_eq!(&got[2].data[..], b"r\r\n\n!\r\n");
    for block in &got {
        assert!(inside(&block.key, &reply));
        assert!(inside(&block.flags, &reply));
        assert!(inside(&block.data, &reply));
    }
}

#[test]
fn value_blocks_reads_gets_replies_with_a_cas_token() {
    let got = blocks(b"VALUE k 3 2 12345\r\nhi\r\nVALUE l 0 1 9\r\nz\r\nEND\r\n");
    assert_eq!(got.len(), 2);
    assert_eq!(&got[0].key[..], b"k");
    assert_eq!(&got[0].flags[..], b"3");
    assert_eq!(&got[0].data[..], b"hi\r\n");
    assert_eq!(&got[1].data[..], b"z\r\n");
}

#[test]
fn value_blocks_stops_at_end_and_at_garbage() {
    assert!(blocks(b"END\r\n").is_empty());
    assert!(blocks(b"").is_empty());
    assert!(blocks(b"SERVER_ERROR out of memory\r\n").is_empty());
    // Nothing after END is read, even a block.
    assert!(blocks(b"END\r\nVALUE a 0 1\r\nx\r\n").is_empty());
    // A block, then an error line: the block only.
    assert_eq!(
        blocks(b"VALUE a 0 1\r\nx\r\nSERVER_ERROR oops\r\nVALUE b 0 1\r\ny\r\n").len(),
        1
    );
    for garbage in [
        &b"VALUE a 0 1\r\nxy\r\nEND\r\n"[..], // data not ended by CRLF
        b"VALUE a 0 5\r\nxy\r\n",             // runs past the end
        b"VALUE a 0 1\r\nx",                  // truncated CRLF
        b"VALUE a 0 1",                       // no line end
        b"VALUE a 0\r\nx\r\n",                // missing <bytes>
        b"VALUE a\r\n",                       // missing flags
        b"VALUE \r\n",                        // nothing
        b"VALUE a x 1\r\nx\r\n",              // flags not a number
        b"VALUE a 0 -1\r\nx\r\n",             // negative length
        b"VALUE a 0 1x\r\nx\r\n",             // bad length
        b"VALUE a 0 1 cas\r\nx\r\n",          // bad cas
        b"VALUE a 0 1 2 3\r\nx\r\n",          // too many tokens
        b"VALUE a 0 99999999999999999999999\r\nx\r\n", // overflows
        b"VALUE a 0 18446744073709551615\r\nx\r\n", // usize::MAX: the +2 overflows
        b" VALUE a 0 1\r\nx\r\n",             // not at the line start
        b"VALUEa 0 1\r\nx\r\n",
        b"\r\n\r\n",
    ] {
        assert!(
            value_blocks(&Bytes::copy_from_slice(garbage))
                .next()
                .is_none(),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}

#[test]
fn value_blocks_keeps_good_blocks_before_a_truncated_one_and_is_fused() {
    let reply = Bytes::from_static(b"VALUE a 0 1\r\nx\r\nVALUE b 0 10\r\nshort\r\n");
    let mut it = value_blocks(&reply);
    assert_eq!(it.next().map(|b| b.key), Some(Bytes::from_static(b"a")));
    assert!(it.next().is_none());
    assert!(it.next().is_none());
}

#[test]
fn value_blocks_accepts_bare_newline_headers_as_the_framer_does() {
    let got = blocks(b"VALUE a 0 1\nx\r\nEND\r\n");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].data[..], b"x\r\n");
}

#[test]
fn classic_add_builds_a_header_and_reuses_the_data() {
    let reply = Bytes::from_static(b"VALUE user:1 17 5 999\r\nhello\r\nEND\r\n");
    let block = value_blocks(&reply).next().expect("a block");
    let [header, data] = classic_add(&block, 300);
    assert_eq!(&header[..], b"add user:1 17 300 5\r\n");
    assert_eq!(&data[..], b"hello\r\n");
    assert!(inside(&data, &reply));
    // The proxy's own parser reads it as one whole add of that value.
    let request_bytes = [header, data].concat();
    let request = parse(&request_bytes);
    assert_eq!(request.command, Command::Add);
    assert!(!request.noreply);
    assert_eq!(request.len, request_bytes.len());
    assert_eq!(
        request.data.map(|d| d.of(&request_bytes)),
        Some(&b"hello"[..])
    );

    let empty = ValueBlock {
        key: Bytes::from_static(b"k"),
        flags: Bytes::from_static(b"0"),
        data: Bytes::from_static(b"\r\n"),
    };
    assert_eq!(&classic_add(&empty, 0)[0][..], b"add k 0 0 0\r\n");
    let max = classic_add(&empty, u32::MAX);
    assert_eq!(&max[0][..], b"add k 0 4294967295 0\r\n");
}

fn fill(line: &'static [u8]) -> MgFill {
    let bytes = Bytes::from_static(line);
    mg_fill_request(&parse(&bytes), &bytes)
}

#[test]
fn mg_fill_adds_what_the_client_did_not_ask() {
    let got = fill(b"mg k\r\n");
    assert_eq!(&got.request[..], b"mg k v f t\r\n");
    assert!(got.added.has(b'v') && got.added.has(b'f') && got.added.has(b't'));

    let got = fill(b"mg k s v q O12 k\r\n");
    assert_eq!(&got.request[..], b"mg k s v q O12 k f t\r\n");
    assert!(!got.added.has(b'v') && got.added.has(b'f') && got.added.has(b't'));

    // Base64 key: the key and `b` stay as they are.
    let got = fill(b"mg Zm9v b t\r\n");
    assert_eq!(&got.request[..], b"mg Zm9v b t v f\r\n");
    assert_eq!(got.added, MetaFlags::EMPTY.with(b'v').with(b'f'));

    // A bare `\n` and extra spaces: the rebuilt line ends with CRLF.
    let got = fill(b"mg  k   f \n");
    assert_eq!(&got.request[..], b"mg k   f v t\r\n");
    assert!(parse(&got.request).command == Command::MetaGet);
}

#[test]
fn mg_fill_with_nothing_to_add_is_a_slice_of_the_request() {
    let bytes = Bytes::from_static(b"mg k t f v O1\r\nmg next v\r\n");
    let got = mg_fill_request(&parse(&bytes), &bytes);
    assert!(got.added.is_empty());
    assert_eq!(&got.request[..], b"mg k t f v O1\r\n");
    assert!(inside(&got.request, &bytes));
    // Only a bare `\n` line needs a new one.
    let got = fill(b"mg k v f t\n");
    assert!(got.added.is_empty());
    assert_eq!(&got.request[..], b"mg k v f t\r\n");
}

#[test]
fn mg_fill_survives_a_request_that_does_not_match_its_bytes() {
    let request = parse(b"mg somekey v f t\r\n");
    let got = mg_fill_request(&request, &Bytes::from_static(b"mg"));
    assert!(got.request.ends_with(b"\r\n"));
}

fn client_reply(reply: &'static [u8], added: &[u8]) -> Vec<u8> {
    let added = added.iter().fold(MetaFlags::EMPTY, |s, &l| s.with(l));
    mg_client_reply(&Bytes::from_static(reply), added).to_vec()
}

#[test]
fn mg_client_reply_turns_va_into_hd_when_v_was_added() {
    assert_eq!(client_reply(b"VA 2 f5 t-1\r\nhi\r\n", b"vft"), b"HD\r\n");
    // The client's own flags stay, in their order.
    assert_eq!(
        client_reply(b"VA 2 s2 f5 t-1 kkey O5\r\nhi\r\n", b"vft"),
        b"HD s2 kkey O5\r\n"
    );
    assert_eq!(
        client_reply(b"VA 2 f5 kZm9v b t300\r\nhi\r\n", b"vf"),
        b"HD kZm9v b t300\r\n"
    );
}

#[test]
fn mg_client_reply_removes_added_tokens_and_keeps_the_value() {
    let reply = Bytes::from_static(b"VA 5 f0 t300 O9\r\nhello\r\n");
    let added = MetaFlags::EMPTY.with(b'f').with(b't');
    assert_eq!(&mg_client_reply(&reply, added)[..], b"VA 5 O9\r\nhello\r\n");
    let mut parts = Vec::new();
    mg_client_reply_parts(&reply, added, &mut parts);
    assert_eq!(parts.len(), 2);
    assert_eq!(&parts[0][..], b"VA 5 O9\r\n");
    assert_eq!(&parts[1][..], b"hello\r\n");
    assert!(inside(&parts[1], &reply));
    // Only the added letters go: the client asked `t`.
    assert_eq!(
        client_reply(b"VA 1 t-1 f3\r\nx\r\n", b"f"),
        b"VA 1 t-1\r\nx\r\n"
    );
    // HD (a reply that had no value) loses the added tokens too.
    assert_eq!(client_reply(b"HD f0 t-1 k1\r\n", b"ft"), b"HD k1\r\n");
    assert_eq!(client_reply(b"HD t-1\r\n", b"vft"), b"HD\r\n");
}

#[test]
fn mg_client_reply_passes_other_replies_through() {
    for reply in [
        &b"EN\r\n"[..],
        b"MN\r\n",
        b"SERVER_ERROR out of memory\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
        b"ERROR\r\n",
        b"NF\r\n",
        b"",
    ] {
        let bytes = Bytes::copy_from_slice(reply);
        let got = mg_client_reply(&bytes, MetaFlags::EMPTY.with(b'v').with(b'f'));
        assert_eq!(&got[..], reply);
        if !reply.is_empty() {
            assert!(inside(&got, &bytes));
        }
    }
    // A VA that already has exactly what the client asked stays the same buffer.
    let bytes = Bytes::from_static(b"VA 2 O1\r\nhi\r\n");
    let got = mg_client_reply(&bytes, MetaFlags::EMPTY.with(b'f'));
    assert_eq!(got.as_ptr(), bytes.as_ptr());
}

#[test]
fn mg_client_reply_with_nothing_added_is_the_reply() {
    let bytes = Bytes::from_static(b"VA 2 f5 t-1\r\nhi\r\n");
    let got = mg_client_reply(&bytes, MetaFlags::EMPTY);
    assert_eq!(got, bytes);
    assert_eq!(got.as_ptr(), bytes.as_ptr());
}

#[test]
fn mg_client_reply_handles_quiet_replies_ending_with_mn() {
    // A quiet mg is followed by `mn`: its reply holds the hit (or nothing) then `MN`.
    assert_eq!(
        client_reply(b"VA 2 f5 t-1 O7\r\nhi\r\nMN\r\n", b"vft"),
        b"HD O7\r\nMN\r\n"
    );
    assert_eq!(client_reply(b"MN\r\n", b"vft"), b"MN\r\n");
    let reply = Bytes::from_static(b"VA 2 v f5\r\nhi\r\nMN\r\n");
    let mut parts = Vec::new();
    mg_client_reply_parts(&reply, MetaFlags::EMPTY.with(b'f'), &mut parts);
    assert_eq!(joined(&parts), b"VA 2 v\r\nhi\r\nMN\r\n");
    assert!(inside(&parts[1], &reply) && inside(&parts[2], &reply));
}

#[test]
fn mg_client_reply_passes_a_malformed_value_through() {
    for reply in [
        &b"VA 10 f5\r\nhi\r\n"[..],
        b"VA x f5\r\nhi\r\n",
        b"VA\r\n",
        b"VA 2 f5",
        b"VA 2 f5\r\nhiXY",
    ] {
        let got = mg_client_reply(&Bytes::copy_from_slice(reply), MetaFlags::EMPTY.with(b'f'));
        assert_eq!(&got[..], reply);
    }
    // A good reply followed by a truncated one: the first is rewritten, the rest kept.
    assert_eq!(
        client_reply(b"HD f1\r\nVA 9 f1\r\nab", b"f"),
        b"HD\r\nVA 9 f1\r\nab"
    );
}

#[test]
fn mg_hit_reads_flags_ttl_and_data() {
    let reply = Bytes::from_static(b"VA 5 s5 f17 t300 O1\r\nhello\r\n");
    let hit = mg_hit(&reply).expect("a hit");
    assert_eq!(&hit.flags[..], b"17");
    assert_eq!(hit.remaining_ttl, Some(300));
    assert_eq!(&hit.data[..], b"hello\r\n");
    assert!(inside(&hit.flags, &reply) && inside(&hit.data, &reply));

    let hit = mg_hit(&Bytes::from_static(b"VA 0 f0 t-1\r\n\r\n")).expect("a hit");
    assert_eq!(hit.remaining_ttl, Some(-1));
    assert_eq!(&hit.data[..], b"\r\n");
    let hit = mg_hit(&Bytes::from_static(b"VA 1 f4\r\nx\r\nMN\r\n")).expect("a hit");
    assert_eq!(hit.remaining_ttl, None);
    assert_eq!(&hit.data[..], b"x\r\n");
}

#[test]
fn mg_hit_refuses_misses_garbage_and_stale_items() {
    for reply in [
        &b"EN\r\n"[..],
        b"HD f1 t2\r\n",
        b"MN\r\n",
        b"SERVER_ERROR out of memory\r\n",
        b"",
        b"VA 2 t5\r\nhi\r\n",                       // no flags
        b"VA 2 fx t5\r\nhi\r\n",                    // bad flags
        b"VA 2 f t5\r\nhi\r\n",                     // empty flags
        b"VA 2 f1 tx\r\nhi\r\n",                    // bad ttl
        b"VA 2 f1 t\r\nhi\r\n",                     // empty ttl
        b"VA 2 f1 t-\r\nhi\r\n",                    // sign alone
        b"VA 2 f1 t99999999999999999999\r\nhi\r\n", // overflows
        b"VA 5 f1 t5\r\nhi\r\n",                    // runs past the end
        b"VA 2 f1 t5\r\nhiX\n",                     // no CRLF after the data
        b"VA 2 f1 t5 X W\r\nhi\r\n",                // stale
        b"VA -2 f1\r\nhi\r\n",
        b" VA 2 f1\r\nhi\r\n",
        b"VALUE k 0 2\r\nhi\r\nEND\r\n",
    ] {
        assert_eq!(
            mg_hit(&Bytes::copy_from_slice(reply)),
            None,
            "{:?}",
            String::from_utf8_lossy(reply)
        );
    }
}

fn hit(flags: &'static [u8], remaining_ttl: Option<i64>, data: &'static [u8]) -> MgHit {
    MgHit {
        flags: Bytes::from_static(flags),
        remaining_ttl,
        data: Bytes::from_static(data),
    }
}

#[test]
fn meta_add_builds_an_ms_in_add_mode() {
    let reply = Bytes::from_static(b"VA 5 f17 t100\r\nhello\r\n");
    let cold = mg_hit(&reply).expect("a hit");
    let [header, data] = meta_add(b"user:1", false, &cold, 300);
    assert_eq!(&header[..], b"ms user:1 5 F17 T100 ME\r\n");
    assert!(inside(&data, &reply));
    // The proxy's own parser reads it as an ms of that value with those flags.
    let request_bytes = [header, data].concat();
    let request = parse(&request_bytes);
    assert_eq!(request.command, Command::MetaSet);
    assert_eq!(request.len, request_bytes.len());
    assert_eq!(
        request.data.map(|d| d.of(&request_bytes)),
        Some(&b"hello"[..])
    );
    let flags = meta_flags(&request, &request_bytes);
    assert!(flags.has(b'F') && flags.has(b'T') && flags.has(b'M') && !flags.has(b'q'));

    let [header, _] = meta_add(b"Zm9v", true, &cold, 30);
    assert_eq!(&header[..], b"ms Zm9v 5 F17 T30 ME b\r\n");
    assert!(parse(&[&header[..], b"hello\r\n"].concat()).base64_key);
}

#[test]
fn meta_add_ttl_is_the_remaining_ttl_capped() {
    let ttl = |remaining, cap| {
        let [header, _] = meta_add(b"k", false, &hit(b"0", remaining, b"\r\n"), cap);
        String::from_utf8_lossy(&header).into_owned()
    };
    assert_eq!(ttl(Some(100), 300), "ms k 0 F0 T100 ME\r\n");
    assert_eq!(ttl(Some(1000), 300), "ms k 0 F0 T300 ME\r\n");
    assert_eq!(ttl(Some(-1), 300), "ms k 0 F0 T300 ME\r\n");
    assert_eq!(ttl(None, 300), "ms k 0 F0 T300 ME\r\n");
    // About to expire (or already past): the shortest real lifetime.
    assert_eq!(ttl(Some(0), 300), "ms k 0 F0 T1 ME\r\n");
    assert_eq!(ttl(Some(-5), 300), "ms k 0 F0 T1 ME\r\n");
    assert_eq!(ttl(Some(i64::MIN), 300), "ms k 0 F0 T1 ME\r\n");
    // A cap of 0 is no cap: never expiring stays never expiring.
    assert_eq!(ttl(Some(-1), 0), "ms k 0 F0 T0 ME\r\n");
    assert_eq!(ttl(None, 0), "ms k 0 F0 T0 ME\r\n");
    assert_eq!(ttl(Some(5000), 0), "ms k 0 F0 T5000 ME\r\n");
    assert_eq!(ttl(Some(0), 0), "ms k 0 F0 T1 ME\r\n");
    // Never more than 30 days, which memcached would read as a unix time.
    assert_eq!(ttl(Some(i64::MAX), 0), "ms k 0 F0 T2592000 ME\r\n");
    assert_eq!(ttl(None, u32::MAX), "ms k 0 F0 T2592000 ME\r\n");
}

#[test]
fn invalidations() {
    assert_eq!(&classic_delete(b"user:1")[..], b"delete user:1\r\n");
    assert_eq!(&meta_delete(b"user:1", false)[..], b"md user:1\r\n");
    assert_eq!(&meta_delete(b"Zm9v", true)[..], b"md Zm9v b\r\n");
    assert_eq!(parse(&classic_delete(b"k")).command, Command::Delete);
    let md = meta_delete(b"Zm9v", true);
    let request = parse(&md);
    assert_eq!(request.command, Command::MetaDelete);
    assert!(request.base64_key && request.expects_reply());
}

#[test]
fn decimal_output() {
    for n in [0u64, 7, 10, 99, 100, 4_294_967_295, u64::MAX] {
        let mut buf = BytesMut::new();
        put_decimal(&mut buf, n);
        assert_eq!(&buf[..], n.to_string().as_bytes());
    }
    assert_eq!(parse_i64(b"-1"), Some(-1));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_i64(b"9223372036854775808"), None);
    assert_eq!(parse_usize(b""), None);
}

/// A deterministic xorshift64 generator (no crates needed for a fuzz-style loop).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random input: a well-formed reply (one of a few shapes, with random sizes and tokens)
/// mutated at random (cut short, a byte changed, random bytes appended), or plain random
/// bytes, so that both the good paths and every kind of damage are reached.
fn random_reply(rng: &mut XorShift) -> Bytes {
    let mut out = Vec::new();
    let data = b"hello\r\nworld";
    let value = &data[..rng.below(data.len() + 1)];
    match rng.below(5) {
        0 => {
            for _ in 0..rng.below(4) {
                let cas = if rng.below(2) == 0 { " 77" } else { "" };
                let header = format!(
                    "VALUE k{} {} {}{cas}\r\n",
                    rng.below(9),
                    rng.below(3),
                    value.len()
                );
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"END\r\n");
        }
        1 | 2 => {
            let tokens = ["f5", "t-1", "t300", "O1", "kkey", "s5", "X", "W", "b"];
            let mut header = format!("VA {}", value.len());
            for _ in 0..rng.below(5) {
                header.push(' ');
                header.push_str(tokens[rng.below(tokens.len())]);
            }
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
            if rng.below(2) == 0 {
                out.extend_from_slice(b"MN\r\n");
            }
        }
        3 => out.extend_from_slice([&b"EN\r\n"[..], b"HD f1 t2\r\n", b"MN\r\n"][rng.below(3)]),
        _ => {}
    }
    match rng.below(4) {
        0 => out.truncate(rng.below(out.len() + 1)),
        1 if !out.is_empty() => {
            let at = rng.below(out.len());
            out[at] = rng.next() as u8;
        }
        2 => (0..rng.below(16)).for_each(|_| out.push(rng.next() as u8)),
        _ => {}
    }
    Bytes::from(out)
}

#[test]
fn random_replies_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut blocks_seen, mut hits_seen) = (0, 0);
    for _ in 0..20_000 {
        let reply = random_reply(&mut rng);
        for block in value_blocks(&reply) {
            blocks_seen += 1;
            assert!(block.data.ends_with(b"\r\n"));
            assert!(inside(&block.data, &reply) && inside(&block.key, &reply));
            let [header, data] = classic_add(&block, 60);
            assert!(header.ends_with(b"\r\n") && data == block.data);
        }
        let added = [b'v', b'f', b't', b'O', b'k']
            .iter()
            .filter(|_| rng.below(2) == 0)
            .fold(MetaFlags::EMPTY, |s, &l| s.with(l));
        let rewritten = mg_client_reply(&reply, added);
        if added.is_empty() {
            assert_eq!(rewritten, reply);
        }
        if let Some(hit) = mg_hit(&reply) {
            hits_seen += 1;
            assert!(hit.data.ends_with(b"\r\n") && inside(&hit.data, &reply));
            let [header, _] = meta_add(b"k", rng.below(2) == 0, &hit, 300);
            assert!(header.starts_with(b"ms k ") && header.ends_with(b"\r\n"));
        }
    }
    // The generator does reach the interesting paths.
    assert!(
        blocks_seen > 0 && hits_seen > 0,
        "{blocks_seen} {hits_seen}"
    );
}
