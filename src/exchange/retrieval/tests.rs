//! The retrieval engine on its own: requests in, replies (in any order) in, what the client
//! gets and what is counted out. No socket.

use super::*;
use crate::exchange::Effects;
use crate::protocol::{parse_request, Limits, Parsed};
use crate::upstream::{FailReason, Owner};

fn request(line: &'static [u8]) -> (Request, Bytes) {
    let bytes = Bytes::from_static(line);
    match parse_request(&bytes, &Limits::default()) {
        Ok(Parsed::Complete(r)) => (r, bytes),
        other => panic!("{other:?}"),
    }
}

/// A retrieval of `line`'s keys, key `i` asked of `chains[i]` as `ask`, `window` keys per
/// server per window; started.
fn started(
    line: &'static [u8],
    chains: &[&[usize]],
    ask: Ask,
    write_back: Option<WriteBack>,
    window: usize,
) -> (Retrieval, Effects) {
    let (r, bytes) = request(line);
    let width = chains.iter().map(|c| c.len()).max().unwrap_or(1);
    let mut get = Retrieval::new(r, bytes, width);
    for (index, chain) in chains.iter().enumerate() {
        get.set_chain(index, chain, ask, write_back);
    }
    get.windows(window, 1 << 20);
    let mut fx = Effects::default();
    fx.reset(true);
    get.start(&mut fx);
    (get, fx)
}

/// The completion of a whole reply `text`, with as many hits as it has `VALUE` lines (as the
/// reply framer counts them).
fn reply(text: &'static [u8], failed: bool) -> Completion {
    let owner = Owner { token: 0, part: 0 };
    let values = text.windows(6).filter(|w| w == b"VALUE ").count();
    Completion::whole(owner, text, values, failed.then_some(FailReason::Timeout))
}

fn step(get: &mut Retrieval, part: u32, c: &Completion) -> Effects {
    let mut fx = Effects::default();
    fx.reset(true);
    get.on_completion(part, c, &mut fx);
    fx
}

fn lines(fx: &Effects) -> Vec<(usize, u32, Vec<u8>)> {
    fx.sends
        .iter()
        .map(|s| (s.server, s.part, s.bytes.to_vec()))
        .collect()
}

const ALONE: Ask = Ask::InTurn { miss_next: false };

#[test]
fn a_split_asks_each_server_for_its_keys_and_merges_in_the_asked_order() {
    let (mut get, fx) = started(
        b"get a b c d\r\n",
        &[&[10], &[11], &[10], &[]],
        ALONE,
        None,
        64,
    );
    assert_eq!(
        lines(&fx),
        [
            (10, 0, b"get a c\r\n".to_vec()),
            (11, 1, b"get b\r\n".to_vec())
        ]
    );
    assert_eq!(fx.unrouted_misses, 1, "d has no route");
    assert!(!get.holds_writes(), "one window, no next server");
    let fx = step(&mut get, 1, &reply(b"VALUE b 0 1\r\nB\r\nEND\r\n", false));
    assert!(fx.deliver.is_empty(), "a and c are not known yet");
    assert_eq!(fx.held_delta, 21);
    assert_eq!(
        fx.lookups,
        (1, 0),
        "each server's keys counted from its reply"
    );
    let fx = step(
        &mut get,
        0,
        &reply(b"VALUE a 0 1\r\nA\r\nVALUE c 0 1\r\nC\r\nEND\r\n", false),
    );
    assert_eq!(
        fx.deliver.concat(),
        b"VALUE a 0 1\r\nA\r\nVALUE b 0 1\r\nB\r\nVALUE c 0 1\r\nC\r\nEND\r\n".to_vec()
    );
    assert_eq!(fx.lookups, (2, 0));
    assert_eq!(fx.held_delta, 36 - 21 - 36, "everything held is let go");
    assert!(get.finished());
}

#[test]
fn a_window_on_one_server_streams_its_reply_through() {
    let (mut get, fx) = started(b"get a b\r\n", &[&[10], &[10]], ALONE, None, 64);
    assert_eq!(lines(&fx), [(10, 0, b"get a b\r\n".to_vec())]);
    assert!(fx.sends.iter().all(|s| s.stream));
    let mut piece = reply(b"VALUE a 0 1\r\nA\r\n", false);
    piece.end = false;
    let fx = step(&mut get, 0, &piece);
    assert_eq!(fx.deliver.concat(), b"VALUE a 0 1\r\nA\r\n".to_vec());
    let mut end = reply(b"END\r\n", false);
    end.tail = 5;
    end.values = 1;
    let fx = step(&mut get, 0, &end);
    assert_eq!(fx.deliver.concat(), b"END\r\n".to_vec());
    assert_eq!(fx.lookups, (1, 1));
}

#[test]
fn failover_keys_ask_the_next_server_for_what_the_first_lacked_and_write_back() {
    let wb = WriteBack { effect: 3, ttl: 60 };
    let (mut get, fx) = started(
        b"get a b c\r\n",
        &[&[10, 11], &[10, 11], &[10, 11]],
        Ask::InTurn { miss_next: true },
        Some(wb),
        64,
    );
    assert_eq!(
        lines(&fx),
        [(10, 0, b"get a b c\r\n".to_vec())],
        "the whole request goes as the client sent it"
    );
    assert!(get.holds_writes(), "it may still ask the next server");
    let fx = step(&mut get, 0, &reply(b"VALUE b 0 1\r\nB\r\nEND\r\n", false));
    assert_eq!(lines(&fx), [(11, 1, b"get a c\r\n".to_vec())]);
    assert!(fx.writes_released, "sent to its last server: writes may go");
    assert!(!get.holds_writes());
    let fx = step(&mut get, 1, &reply(b"VALUE c 7 1\r\nC\r\nEND\r\n", false));
    assert_eq!(
        fx.deliver.concat(),
        b"VALUE b 0 1\r\nB\r\nVALUE c 7 1\r\nC\r\nEND\r\n".to_vec()
    );
    assert_eq!(
        fx.lookups,
        (2, 1),
        "each key once, whichever server answered"
    );
    let side: Vec<(usize, usize, Vec<u8>)> = fx
        .side
        .iter()
        .map(|(e, s)| (*e, s.server, s.bytes.to_vec()))
        .collect();
    assert_eq!(side, [(3, 10, b"add c 7 60 1\r\n".to_vec())]);
}

#[test]
fn a_failed_server_moves_every_key_on_but_a_miss_only_with_miss_next() {
    let (mut get, _) = started(b"get a b\r\n", &[&[10, 11], &[10, 11]], ALONE, None, 64);
    let fx = step(&mut get, 0, &reply(b"VALUE a 0 1\r\nA\r\nEND\r\n", false));
    assert_eq!(
        fx.deliver.concat(),
        b"VALUE a 0 1\r\nA\r\nEND\r\n".to_vec(),
        "without miss_next, b is a miss"
    );
    let (mut get, _) = started(b"get a b\r\n", &[&[10, 11], &[10, 11]], ALONE, None, 64);
    let fx = step(&mut get, 0, &reply(b"END\r\n", true));
    assert_eq!(lines(&fx), [(11, 1, b"get a b\r\n".to_vec())]);
    let fx = step(&mut get, 1, &reply(b"SERVER_ERROR busy\r\n", false));
    assert_eq!(fx.deliver.concat(), b"END\r\n".to_vec());
    assert_eq!(fx.lookups, (0, 2));
}

#[test]
fn each_key_takes_the_first_hit_to_arrive_and_late_replies_are_dropped() {
    let first = Ask::AtOnce { in_order: false };
    let (mut get, fx) = started(b"get a b c\r\n", &[&[10, 11][..]; 3], first, None, 64);
    let sent: Vec<&[u8]> = fx.sends.iter().map(|s| &s.bytes[..]).collect();
    assert_eq!(sent, [&b"get a b c\r\n"[..], &b"get a b c\r\n"[..]]);
    // Server 11 has a and c; a is not answered until b is known.
    let r1 = reply(b"VALUE a 0 2\r\na1\r\nVALUE c 0 2\r\nc1\r\nEND\r\n", false);
    assert!(step(&mut get, 1, &r1).deliver.is_empty());
    let r0 = reply(b"VALUE a 0 2\r\na0\r\nVALUE b 0 2\r\nb0\r\nEND\r\n", false);
    let fx = step(&mut get, 0, &r0);
    assert_eq!(
        fx.deliver.concat(),
        b"VALUE a 0 2\r\na1\r\nVALUE b 0 2\r\nb0\r\nVALUE c 0 2\r\nc1\r\nEND\r\n".to_vec()
    );
    assert_eq!(fx.lookups, (3, 0));
    assert!(get.finished());
    assert!(step(&mut get, 0, &r0).deliver.is_empty(), "a late reply");
}

#[test]
fn in_order_waits_for_the_first_server_and_a_key_everyone_missed_is_a_miss() {
    let ordered = Ask::AtOnce { in_order: true };
    let (mut get, _) = started(b"get a b\r\n", &[&[10, 11][..]; 2], ordered, None, 64);
    let r1 = reply(b"VALUE a 0 2\r\na1\r\nEND\r\n", false);
    assert!(
        step(&mut get, 1, &r1).deliver.is_empty(),
        "server 10 may still have a"
    );
    let fx = step(&mut get, 0, &reply(b"END\r\n", true));
    assert_eq!(
        fx.deliver.concat(),
        b"VALUE a 0 2\r\na1\r\nEND\r\n".to_vec()
    );
    assert_eq!(fx.lookups, (1, 1));
}

#[test]
fn windows_number_their_parts_so_a_late_reply_is_never_taken_for_the_next_window() {
    let first = Ask::AtOnce { in_order: false };
    let (mut get, fx) = started(b"get a b\r\n", &[&[10, 11][..]; 2], first, None, 1);
    assert!(fx.sends.iter().all(|s| &s.bytes[..] == b"get a\r\n"));
    assert!(get.holds_writes(), "a second window is to come");
    let fx = step(&mut get, 0, &reply(b"VALUE a 0 2\r\na0\r\nEND\r\n", false));
    assert_eq!(fx.deliver.concat(), b"VALUE a 0 2\r\na0\r\n".to_vec());
    let parts: Vec<u32> = fx.sends.iter().map(|s| s.part).collect();
    assert_eq!(parts, [2, 3], "the second window's parts are new");
    assert!(fx.writes_released, "the last window is out");
    // Server 11's late reply to the first window (part 1) holds a: it must not answer b.
    let late = reply(b"VALUE a 0 2\r\na1\r\nEND\r\n", false);
    assert!(step(&mut get, 1, &late).deliver.is_empty());
    assert!(step(&mut get, 3, &reply(b"END\r\n", false))
        .deliver
        .is_empty());
    let fx = step(&mut get, 2, &reply(b"VALUE b 0 2\r\nb0\r\nEND\r\n", false));
    assert_eq!(
        fx.deliver.concat(),
        b"VALUE b 0 2\r\nb0\r\nEND\r\n".to_vec()
    );
}

#[test]
fn a_window_waits_for_the_client_to_drain() {
    let (mut get, fx) = started(b"get a b\r\n", &[&[10], &[10]], ALONE, None, 1);
    assert_eq!(lines(&fx), [(10, 0, b"get a\r\n".to_vec())]);
    let mut fx = Effects::default();
    fx.reset(false);
    get.on_completion(0, &reply(b"END\r\n", false), &mut fx);
    assert!(
        fx.sends.is_empty() && get.parked(),
        "parked until the client drains"
    );
    assert!(get.holds_writes());
    let mut fx = Effects::default();
    fx.reset(true);
    get.resume(&mut fx);
    assert_eq!(lines(&fx), [(10, 1, b"get b\r\n".to_vec())]);
    assert!(fx.writes_released);
}

#[test]
fn garbage_and_truncated_blocks_are_misses() {
    // Keys with a next server are read block by block (the reply framer checks keys on the
    // way in; this is the engine's own guard).
    let (mut get, _) = started(b"get a b\r\n", &[&[10, 12], &[11, 12]], ALONE, None, 64);
    let _ = step(&mut get, 0, &reply(b"VALUE a 0 10\r\nabc", false));
    let fx = step(&mut get, 1, &reply(b"VALUE x 0 1\r\nX\r\nEND\r\n", false));
    assert_eq!(fx.deliver.concat(), b"END\r\n".to_vec());
    assert_eq!(fx.lookups, (0, 2));
}
