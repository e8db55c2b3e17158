//! The lease read and the cold-then-warm write on their own: requests in, replies in, what the
//! client gets, what goes to which server and what is written back. No socket.

use super::*;
use crate::exchange::ordered::Ordered;
use crate::protocol::{parse_request, Limits, Parsed};
use crate::upstream::{FailReason, Owner};

const WARM: usize = 0;
const COLD: usize = 1;
const EFFECT: usize = 7;

fn rules(refresh_below: u32) -> LeaseRules {
    LeaseRules {
        lease_ttl: 3,
        wait: Duration::from_millis(100),
        refresh_below,
        write_back: WriteBack {
            effect: EFFECT,
            ttl: 300,
        },
    }
}

fn request(line: &'static [u8]) -> (Request, Bytes) {
    let bytes = Bytes::from_static(line);
    match parse_request(&bytes, &Limits::default()) {
        Ok(Parsed::Complete(r)) => (r, bytes),
        other => panic!("{other:?}"),
    }
}

fn reply(text: &'static [u8], failed: bool) -> Completion {
    let owner = Owner { token: 0, part: 0 };
    let values = text.windows(3).filter(|w| w == b"VA ").count()
        + text.windows(6).filter(|w| w == b"VALUE ").count();
    Completion::whole(owner, text, values, failed.then_some(FailReason::Timeout))
}

fn effects(now: Instant) -> Effects {
    let mut fx = Effects::default();
    fx.reset(true);
    fx.now = Some(now);
    fx
}

/// A lease read of `line`, started: its first effects (warm asked).
fn started(line: &'static [u8], refresh_below: u32) -> (Lease, Effects) {
    let (r, bytes) = request(line);
    let mut lease = Lease::new(r, bytes, WARM, COLD, rules(refresh_below));
    let mut fx = effects(Instant::now());
    lease.start(&mut fx);
    (lease, fx)
}

/// Hands `text` to the request the read awaits (the last one sent).
fn answer(lease: &mut Lease, sent: &Effects, text: &'static [u8], failed: bool) -> Effects {
    answer_at(lease, sent, text, failed, Instant::now())
}

fn answer_at(
    lease: &mut Lease,
    sent: &Effects,
    text: &'static [u8],
    failed: bool,
    now: Instant,
) -> Effects {
    let part = sent
        .sends
        .last()
        .map(|s| s.part)
        .expect("a request was sent");
    let mut fx = effects(now);
    lease.on_completion(part, &reply(text, failed), &mut fx);
    fx
}

fn sent(fx: &Effects) -> Vec<(usize, String)> {
    fx.sends
        .iter()
        .map(|s| (s.server, String::from_utf8_lossy(&s.bytes).into_owned()))
        .collect()
}

fn delivered(fx: &Effects) -> String {
    let bytes: Vec<u8> = fx.deliver.iter().flat_map(|b| b.to_vec()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The side effects queued, as (effect, server, request line and value).
fn side(fx: &Effects) -> Vec<(usize, usize, String)> {
    fx.side
        .iter()
        .map(|(effect, s)| {
            let mut bytes = s.bytes.to_vec();
            bytes.extend_from_slice(s.value.as_deref().unwrap_or_default());
            (
                *effect,
                s.server,
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

#[test]
fn a_warm_hit_is_served_as_the_client_asked_without_the_lease_flags() {
    let (mut lease, fx) = started(b"get k\r\n", 0);
    assert_eq!(sent(&fx), [(WARM, "mg k v f c N3\r\n".to_string())]);
    assert!(lease.holds_writes());
    let fx2 = answer(&mut lease, &fx, b"VA 5 f7 c12\r\nhello\r\n", false);
    assert_eq!(delivered(&fx2), "VALUE k 7 5\r\nhello\r\nEND\r\n");
    assert_eq!(fx2.lookups, (1, 0));
    assert!(lease.finished() && fx2.writes_released && fx2.sends.is_empty());

    // A client's mg keeps its flags; the ones added (and the cas) are taken out again.
    let (mut lease, fx) = started(b"mg k s k O9 q\r\n", 4);
    assert_eq!(
        sent(&fx),
        [(WARM, "mg k s k O9 v f c N3 R4\r\n".to_string())]
    );
    let fx2 = answer(&mut lease, &fx, b"VA 5 s5 kk O9 f0 c12\r\nhello\r\n", false);
    assert_eq!(delivered(&fx2), "HD s5 kk O9\r\n");
}

#[test]
fn a_miss_wins_the_lease_reads_cold_and_writes_back_under_the_placeholder_cas() {
    let (mut lease, fx) = started(b"get k\r\n", 0);
    let fx2 = answer(&mut lease, &fx, b"VA 0 f0 c41 W\r\n\r\n", false);
    assert_eq!(sent(&fx2), [(COLD, "get k\r\n".to_string())]);
    assert!(fx2.deliver.is_empty() && !lease.finished());
    // The cold read is out: later writes may go.
    assert!(fx2.writes_released && !lease.holds_writes());
    let fx3 = answer(&mut lease, &fx2, b"VALUE k 3 2\r\nhi\r\nEND\r\n", false);
    assert_eq!(delivered(&fx3), "VALUE k 3 2\r\nhi\r\nEND\r\n");
    assert_eq!(
        side(&fx3),
        [(EFFECT, WARM, "ms k 2 T300 F3 C41\r\nhi\r\n".to_string())]
    );
    assert_eq!(fx3.lookups, (1, 0));
    assert!(lease.finished());
}

#[test]
fn a_cold_miss_drops_the_placeholder_and_a_cold_failure_leaves_it_to_expire() {
    let (mut lease, fx) = started(b"mg k v\r\n", 0);
    let fx2 = answer(&mut lease, &fx, b"VA 0 c41 W\r\n\r\n", false);
    assert_eq!(sent(&fx2), [(COLD, "mg k v f t\r\n".to_string())]);
    let fx3 = answer(&mut lease, &fx2, b"EN\r\n", false);
    assert_eq!(delivered(&fx3), "EN\r\n");
    assert_eq!(side(&fx3), [(EFFECT, WARM, "md k C41\r\n".to_string())]);
    assert_eq!(fx3.lookups, (0, 1));

    let (mut lease, fx) = started(b"get k\r\n", 0);
    let fx2 = answer(&mut lease, &fx, b"VA 0 f0 c41 W\r\n\r\n", false);
    let fx3 = answer(&mut lease, &fx2, b"END\r\n", true);
    assert_eq!(delivered(&fx3), "END\r\n");
    assert!(fx3.side.is_empty() && lease.finished());
}

#[test]
fn a_reader_behind_a_lease_waits_for_the_write_back_then_gives_up_for_cold() {
    let t0 = Instant::now();
    let (mut lease, fx) = started(b"get k\r\n", 0);
    // Another reader holds the lease: wait, never serve the placeholder.
    let fx2 = answer_at(&mut lease, &fx, b"VA 0 f0 c41 Z\r\n\r\n", false, t0);
    assert!(fx2.sends.is_empty() && fx2.deliver.is_empty());
    assert_eq!(fx2.wake_at, Some(t0 + FIRST_BACKOFF));
    // Woken: warm again, still the placeholder; the pause doubles.
    let mut fx3 = effects(t0 + FIRST_BACKOFF);
    lease.on_wake(&mut fx3);
    assert_eq!(sent(&fx3), [(WARM, "mg k v f c N3\r\n".to_string())]);
    let t1 = t0 + FIRST_BACKOFF;
    let fx4 = answer_at(&mut lease, &fx3, b"VA 0 f0 c41 Z\r\n\r\n", false, t1);
    assert_eq!(fx4.wake_at, Some(t1 + FIRST_BACKOFF * 2));
    // The holder wrote back: served, no cold read.
    let mut fx5 = effects(t1 + FIRST_BACKOFF * 2);
    lease.on_wake(&mut fx5);
    let fx6 = answer(&mut lease, &fx5, b"VA 2 f3 c42\r\nhi\r\n", false);
    assert_eq!(delivered(&fx6), "VALUE k 3 2\r\nhi\r\nEND\r\n");
    assert!(fx6.sends.is_empty() && fx6.side.is_empty());

    // A holder that never writes back: after `wait`, cold is read with no write-back.
    let (mut lease, fx) = started(b"get k\r\n", 0);
    let fx2 = answer_at(&mut lease, &fx, b"VA 0 f0 c41 Z\r\n\r\n", false, t0);
    assert!(fx2.wake_at.is_some());
    let late = t0 + Duration::from_millis(100);
    let mut fx3 = effects(late);
    lease.on_wake(&mut fx3);
    let fx4 = answer_at(&mut lease, &fx3, b"VA 0 f0 c41 Z\r\n\r\n", false, late);
    assert_eq!(sent(&fx4), [(COLD, "get k\r\n".to_string())]);
    let fx5 = answer(&mut lease, &fx4, b"VALUE k 3 2\r\nhi\r\nEND\r\n", false);
    assert_eq!(delivered(&fx5), "VALUE k 3 2\r\nhi\r\nEND\r\n");
    assert!(fx5.side.is_empty(), "no lease, no write-back");
}

#[test]
fn an_early_refresh_serves_the_value_and_refreshes_it_in_the_background() {
    let (mut lease, fx) = started(b"get k\r\n", 30);
    assert_eq!(sent(&fx), [(WARM, "mg k v f c N3 R30\r\n".to_string())]);
    let fx2 = answer(&mut lease, &fx, b"VA 3 f1 c50 W\r\nold\r\n", false);
    assert_eq!(delivered(&fx2), "VALUE k 1 3\r\nold\r\nEND\r\n");
    assert!(lease.finished());
    assert_eq!(sent(&fx2), [(COLD, "mg k v f t\r\n".to_string())]);
    let fx3 = answer(&mut lease, &fx2, b"VA 3 f1 t-1\r\nnew\r\n", false);
    assert!(fx3.deliver.is_empty());
    assert_eq!(
        side(&fx3),
        [(EFFECT, WARM, "ms k 3 T300 F1 C50\r\nnew\r\n".to_string())]
    );
    // Others see `Z` on the value while it is refreshed: served at once.
    let (mut other, fx) = started(b"get k\r\n", 30);
    let fx2 = answer(&mut other, &fx, b"VA 3 f1 c50 Z\r\nold\r\n", false);
    assert_eq!(delivered(&fx2), "VALUE k 1 3\r\nold\r\nEND\r\n");
    assert!(fx2.sends.is_empty());
}

#[test]
fn warm_failures_and_garbage_go_to_cold_without_a_lease() {
    for (text, failed) in [
        (&b"SERVER_ERROR out of memory\r\n"[..], false),
        (b"EN\r\n", false),
        (b"", true),
        (b"VA 9 f0 c1\r\nshort\r\n", false),
        (b"VA 0 f0 c1\r\nxx", false),
    ] {
        let (r, bytes) = request(b"get k\r\n");
        let mut lease = Lease::new(r, bytes, WARM, COLD, rules(0));
        let mut fx = effects(Instant::now());
        lease.start(&mut fx);
        let mut fx2 = effects(Instant::now());
        let owner = Owner { token: 0, part: 0 };
        let c = Completion::whole(owner, leak(text), 0, failed.then_some(FailReason::Timeout));
        lease.on_completion(1, &c, &mut fx2);
        assert_eq!(sent(&fx2), [(COLD, "get k\r\n".to_string())], "{text:?}");
        let fx3 = answer(&mut lease, &fx2, b"VALUE k 0 1\r\nx\r\nEND\r\n", false);
        assert!(
            fx3.side.is_empty(),
            "{text:?}: no write-back without a lease"
        );
    }
}

fn leak(text: &[u8]) -> &'static [u8] {
    Box::leak(text.to_vec().into_boxed_slice())
}

#[test]
fn an_ordered_write_reaches_cold_then_warm_and_answers_after_both() {
    let (r, bytes) = request(b"set k 0 0 1\r\nx\r\n");
    let send = Send {
        server: COLD,
        part: 0,
        bytes: bytes.clone(),
        value: None,
        framing: Framing::of(&r),
        stream: false,
    };
    let invalidate = (
        Bytes::from_static(b"delete k\r\n"),
        Framing::whole(Command::Delete),
    );
    let mut write = Ordered::new(send.clone(), COLD, WARM, invalidate.clone(), false);
    let mut fx = effects(Instant::now());
    write.start(&mut fx);
    assert_eq!(sent(&fx), [(COLD, "set k 0 0 1\r\nx\r\n".to_string())]);
    assert!(write.holds_requests() && write.outlives_client());
    let mut fx2 = effects(Instant::now());
    write.on_completion(0, &reply(b"STORED\r\n", false), &mut fx2);
    // Warm's copy is dropped, never written: the next read refills it from cold.
    assert_eq!(sent(&fx2), [(WARM, "delete k\r\n".to_string())]);
    assert!(fx2.deliver.is_empty() && fx2.writes_released && !write.holds_requests());
    let mut fx3 = effects(Instant::now());
    write.on_completion(1, &reply(b"NOT_FOUND\r\n", false), &mut fx3);
    assert_eq!(delivered(&fx3), "STORED\r\n");
    assert!(write.finished() && !write.outlives_client());

    // Cold failed: warm's copy is dropped, the client gets cold's failure.
    let mut write = Ordered::new(send, COLD, WARM, invalidate, false);
    let mut fx = effects(Instant::now());
    write.start(&mut fx);
    let mut fx2 = effects(Instant::now());
    write.on_completion(0, &reply(b"SERVER_ERROR timeout\r\n", true), &mut fx2);
    assert_eq!(sent(&fx2), [(WARM, "delete k\r\n".to_string())]);
    let mut fx3 = effects(Instant::now());
    write.on_completion(1, &reply(b"DELETED\r\n", false), &mut fx3);
    assert_eq!(delivered(&fx3), "SERVER_ERROR timeout\r\n");
}
