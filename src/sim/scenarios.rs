//! Scripted runs: one schedule written out by hand, for a finding the seeded runs meet
//! rarely. Each replays the finding it is named after.

use bytes::Bytes;

use super::client::{Answer, Limits, SimClient};
use super::driver::Driver;
use super::workload::{self, SERVERS};
use crate::protocol::{parse_request, Limits as ParseLimits, Parsed};
use crate::upstream::FailReason;

/// A driver over servers a (0) and b (1) and the route `route`, with one client sending
/// `lines` under a soft limit of `soft` bytes, and multi-gets in windows of `window` keys.
fn driver(route: &str, lines: &[&'static [u8]], soft: usize, window: usize) -> Driver {
    let yaml = format!(
        r#"listeners:
  - name: main
    bind: 127.0.0.1:0
backends:
  a: {{ servers: [127.0.0.1:1] }}
  b: {{ servers: [127.0.0.1:2] }}
routes:
  - {route}
"#
    );
    let planner = match workload::planner(&yaml) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut d = Driver::new(planner, SERVERS, 1, window);
    d.tracing = true;
    let requests = lines
        .iter()
        .map(|line| match parse_request(line, &ParseLimits::default()) {
            Ok(Parsed::Complete(r)) => (r, Bytes::from_static(line)),
            other => panic!("{other:?}"),
        })
        .collect();
    let limits = Limits {
        max_outstanding: 16,
        max_inflight: 16,
        soft,
    };
    d.clients.push(SimClient::new(requests, limits));
    d
}

/// Lets every server execute and every reply be read until nothing moves.
fn settle(d: &mut Driver) {
    for _ in 0..100 {
        for i in 0..d.conns.len() {
            let server = d.conns[i].server;
            while d.conns[i].execute_next(&mut d.stores[server]).is_some() {}
            let mut out = Vec::new();
            let n = d.conns[i].unread();
            d.conns[i].read(n, &mut d.stores[server], &mut out);
            d.completed(out);
            d.apply_completions();
        }
        d.client_reads(0);
    }
}

/// Finding, fixed: on a failover route with `on_miss: next`, a write refused at once by the
/// first server (a full queue: `backend overloaded`) failed over to the next server while a
/// read the client sent before it was still out on the first; that read missed there, went on
/// to the next server, and answered the value the later write put there. A read that may
/// still move on now holds its client's later writes until it has been sent to its last
/// server.
#[test]
fn a_read_that_fails_over_never_sees_a_later_write() {
    let route =
        r#"{ name: fo, match: "fo:*", strategy: failover, backends: [a, b], on_miss: next }"#;
    let lines: [&[u8]; 2] = [b"get fo:k\r\n", b"set fo:k 0 0 1\r\nx\r\n"];
    let mut d = driver(route, &lines, 1 << 20, 8);
    assert!(d.dispatch(0), "the get goes to a");
    d.refuse[0] = Some(FailReason::Overloaded);
    assert!(d.dispatch(0), "the set is held behind the get");
    settle(&mut d);
    for line in &d.trace {
        println!("{line}");
    }
    assert!(d.violations.is_empty(), "{:?}", d.violations);
    assert_eq!(d.clients[0].answers[0], Answer::Whole(b"END\r\n".to_vec()));
}

/// Finding, fixed: a multi-get whose next window waits for its client to drain (parked) never
/// went on when the replies of the client's later requests, which wait behind it and cannot
/// be written before it, kept the client over its soft limit (`Client::may_take_more` counted
/// them): the client hung. The head's exchange now goes on once what can drain has.
#[test]
fn a_parked_multi_get_goes_on_when_the_replies_behind_it_fill_the_client() {
    let route = r#"{ name: x, match: "k*", strategy: blind_forward, backend: a }
  - { name: y, match: "big", strategy: blind_forward, backend: b }"#;
    let lines: [&[u8]; 2] = [b"get k1 k2\r\n", b"get big\r\n"];
    let mut d = driver(route, &lines, 64, 1);
    d.stores[0].execute_all(b"set k1 0 0 1\r\n1\r\nset k2 0 0 1\r\n2\r\n");
    let big = [b'v'; 100];
    let set = [&b"set big 0 0 100\r\n"[..], &big, b"\r\n"].concat();
    d.stores[1].execute_all(&set);
    assert!(
        d.dispatch(0),
        "the first window of the multi-get goes out to a"
    );
    assert!(d.dispatch(0), "the get of the big value goes out to b");
    // b answers first: the big reply waits behind the multi-get's slot, over the soft limit.
    let mut out = Vec::new();
    d.conns[1].execute_next(&mut d.stores[1]);
    d.conns[1].read(usize::MAX, &mut d.stores[1], &mut out);
    d.completed(out);
    d.apply_completions();
    settle(&mut d);
    for line in &d.trace {
        println!("{line}");
    }
    assert!(d.violations.is_empty(), "{:?}", d.violations);
    let whole = b"VALUE k1 0 1\r\n1\r\nVALUE k2 0 1\r\n2\r\nEND\r\n".to_vec();
    assert_eq!(d.clients[0].answers[0], Answer::Whole(whole));
}

/// Finding, fixed: a retrieval of more keys than one window sends its later windows after the
/// client's later requests went out: a later write to a key of a later window was seen by the
/// retrieval that preceded it. Its client's writes now wait until its last window is out.
#[test]
fn a_write_never_reaches_a_later_window_of_an_earlier_multi_get() {
    let route = r#"{ name: x, match: "k*", strategy: blind_forward, backend: a }"#;
    let lines: [&[u8]; 2] = [b"get k1 k2\r\n", b"set k2 0 0 3\r\nnew\r\n"];
    let mut d = driver(route, &lines, 1 << 20, 1);
    d.stores[0].execute_all(b"set k2 0 0 3\r\nold\r\n");
    assert!(d.dispatch(0), "the first window (k1) goes out");
    assert!(
        d.dispatch(0),
        "the set is held until the last window is out"
    );
    settle(&mut d);
    assert!(
        d.dispatch(0),
        "the set goes once the get's last window is out"
    );
    settle(&mut d);
    for line in &d.trace {
        println!("{line}");
    }
    assert!(d.violations.is_empty(), "{:?}", d.violations);
    let old = b"VALUE k2 0 3\r\nold\r\nEND\r\n".to_vec();
    assert_eq!(d.clients[0].answers[0], Answer::Whole(old));
    assert_eq!(
        d.clients[0].answers[1],
        Answer::Whole(b"STORED\r\n".to_vec())
    );
}
