//! Memory limits count what the process really holds (SPEC §6a), through the real binary.
//!
//! - Small replies that a client never reads, cut from the same backend read chunks as large
//!   values other clients read, must not keep those chunks alive: the proxy's RSS stays within
//!   a small factor of its `reply_bytes_buffered` gauge. (Before the fix, each 21-byte reply
//!   kept its 64 KiB+ read chunk alive: RSS grew by hundreds of MB while the gauge said a few.)
//! - Requests still arriving (a 1 MiB `set` with all but its last byte) count toward
//!   `request_memory_budget`: over it the largest holders are closed
//!   (`clients_shed_request_memory`), RSS stays near the budget, and a good client is served.
//!
//! RSS is read from `/proc/PID/status`; every wait has a deadline.

mod common;

use common::{
    rss_bytes, wait_until, Behavior, Bifrost, BlindForward, Client, FakeBackend, Memcached,
};
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Clients that pipeline `get tiny` (a 1-byte value) behind a `get` that never completes (its
/// server never answers), so that their replies wait in the proxy, beside clients reading a 60
/// KB value in a loop over the same backend connection: RSS follows the reply gauge.
#[test]
fn small_unread_replies_do_not_pin_the_read_chunks_of_large_ones() {
    const NON_READERS: usize = 100;
    const READERS: usize = 4;
    const BIG: usize = 60_000;
    const RUN: Duration = Duration::from_secs(6);
    let mc = Memcached::start();
    let mut seed = mc.client();
    assert_eq!(seed.set("tiny", b"x", 0, 0), "STORED");
    let big = vec![b'b'; BIG];
    assert_eq!(seed.set("big", &big, 0, 0), "STORED");
    let stall = FakeBackend::start(Behavior::NeverAnswer);
    let proxy = Bifrost::start_templated(
        |port| {
            format!(
                "workers: 1\n\
                 listeners: [{{name: main, bind: '127.0.0.1:{port}'}}]\n\
                 backends:\n  \
                   mc: {{servers: ['{mc}'], timeout: 30s}}\n  \
                   stall: {{servers: ['{stall}'], timeout: 30s}}\n\
                 routes:\n\
                 - {{name: stall, match: {{prefix: 'stall:'}}, strategy: blind_forward, backend: stall}}\n\
                 - {{name: all, match: '*', strategy: blind_forward, backend: mc}}\n",
                mc = mc.addr(),
                stall = stall.addr()
            )
        },
        &[],
    );
    let pid = proxy.pid();
    assert_eq!(
        Client::connect(&proxy.addr()).get("big").map(|v| v.len()),
        Some(BIG),
        "through the proxy"
    );
    let base = rss_bytes(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let big_replies = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (addr, stop, count) = (proxy.addr(), stop.clone(), big_replies.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.set_timeout(Duration::from_secs(10));
                while !stop.load(Ordering::Relaxed) {
                    c.send(b"get big\r\n");
                    assert_eq!(c.read_line(), format!("VALUE big 0 {BIG}"));
                    let rest = c.read_exact(BIG + 7);
                    assert!(rest.ends_with(b"\r\nEND\r\n"), "a whole 60 KB reply");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Each non-reader's first request never completes; the replies to the gets it trickles
    // afterwards wait behind it, spread over many read chunks of the big values.
    let mut quiet: Vec<TcpStream> = (0..NON_READERS)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr()).expect("connect");
            s.write_all(b"get stall:x\r\n").expect("write");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    wait_until(
        Duration::from_secs(10),
        "the stalled gets reach their server",
        || stall.bytes_received() >= NON_READERS * "get stall:x\r\n".len(),
    );
    // Generous: what is held is within twice what is counted (measured: 12 MiB over the start
    // for 8.6 MiB counted), plus 24 MiB for the rest (the readers' values in flight, allocator
    // slack). The unfixed proxy passes it within 2 s, its RSS growing by a read chunk per
    // waiting 21-byte reply (measured: 38 MiB for 473 KiB counted after 1.3 s).
    let bound = |gauge: u64| base + 2 * gauge + (24 << 20);
    let burst = b"get tiny\r\n".repeat(2);
    let start = Instant::now();
    let (mut peak, mut gauge_at_peak) = (0, 0);
    let mut over = None;
    while start.elapsed() < RUN && over.is_none() {
        for s in &mut quiet {
            match s.write(&burst) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("a non-reader was closed: {e}"),
            }
        }
        thread::sleep(Duration::from_millis(10));
        let rss = rss_bytes(pid);
        let gauge = Client::connect(&proxy.addr()).stat("reply_bytes_buffered");
        if rss > peak {
            (peak, gauge_at_peak) = (rss, gauge);
        }
        if rss > bound(gauge) {
            over = Some((rss, gauge, start.elapsed()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader failed");
    }
    let mut c = Client::connect(&proxy.addr());
    let gauge = c.stat("reply_bytes_buffered");
    let closed = c.stat("clients_shed") + c.stat("clients_closed_hard_limit");
    let rss = rss_bytes(pid);
    eprintln!(
        "base RSS {} MiB; peak RSS {} MiB with reply_bytes_buffered {} KiB; end RSS {} MiB with \
         {} KiB; {} big replies read",
        base >> 20,
        peak >> 20,
        gauge_at_peak >> 10,
        rss >> 20,
        gauge >> 10,
        big_replies.load(Ordering::Relaxed)
    );
    if let Some((rss, gauge, after)) = over {
        panic!(
            "after {after:.1?}, RSS {} MiB over {} MiB: reply_bytes_buffered says {} KiB",
            rss >> 20,
            bound(gauge) >> 20,
            gauge >> 10
        );
    }
    assert!(
        big_replies.load(Ordering::Relaxed) > 100,
        "the readers must have moved enough data for the test to mean anything"
    );
    assert!(
        gauge > 200 * 1024,
        "the non-readers' replies wait in the proxy (gauge {gauge})"
    );
    assert_eq!(closed, 0, "no limit fires at these sizes");
}

/// Clients that send a 1 MiB `set` and all but its last byte: held memory stays near
/// `request_memory_budget`, the largest are shed and counted, and a good client is served.
#[test]
fn unfinished_large_sets_are_shed_over_the_request_memory_budget() {
    const CLIENTS: usize = 100;
    const VALUE: usize = 1 << 20;
    const BUDGET_MIB: u64 = 16;
    let mc = Memcached::start();
    let proxy = BlindForward::new(&mc.addr())
        .workers(2)
        .top_level(&format!("request_memory_budget: {BUDGET_MIB}MiB"))
        .start();
    let pid = proxy.pid();
    let base = rss_bytes(pid);
    let mut request = format!("set k 0 0 {VALUE}\r\n").into_bytes();
    request.extend(std::iter::repeat_n(b'v', VALUE + 1)); // all but the final '\n'
    let mut bad: Vec<(TcpStream, usize)> = (0..CLIENTS)
        .map(|_| {
            let s = TcpStream::connect(proxy.addr()).expect("connect");
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    loop {
        let mut pending = 0;
        for (s, done) in bad.iter_mut().filter(|(_, d)| *d < request.len()) {
            match s.write(&request[*done..]) {
                Ok(n) => *done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Shed: the proxy closed it.
                Err(_) => *done = request.len(),
            }
            pending += usize::from(*done < request.len());
        }
        peak = peak.max(rss_bytes(pid));
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} clients still sending after 20 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let mut c = Client::connect(&proxy.addr());
    // What the clients wrote may still be in the kernel's buffers: the proxy goes on reading
    // and shedding. 100 MiB of requests fit no 16 MiB budget: most of them must go.
    wait_until(Duration::from_secs(10), "most clients shed", || {
        c.stat("clients_shed_request_memory") as usize >= CLIENTS / 2
    });
    peak = peak.max(rss_bytes(pid));
    // The budget is enforced once per loop iteration, after the reads: while the last bytes
    // still arrive, the gauge can pass it by what one iteration read. Once they are read and
    // the holders shed, it must be back within the budget.
    let mut held = 0;
    wait_until(
        Duration::from_secs(10),
        "request_bytes_buffered within the budget",
        || {
            held = c.stat("request_bytes_buffered");
            held <= (BUDGET_MIB << 20) + (4 << 20)
        },
    );
    let shed = c.stat("clients_shed_request_memory");
    eprintln!(
        "{CLIENTS} unfinished 1 MiB sets, budget {BUDGET_MIB} MiB: base RSS {} MiB, peak {} MiB, \
         request_bytes_buffered {} MiB, {shed} clients shed",
        base >> 20,
        peak >> 20,
        held >> 20
    );
    assert!(
        held <= (BUDGET_MIB << 20) + (4 << 20),
        "request_bytes_buffered {held} is over the budget"
    );
    assert!(
        shed as usize >= CLIENTS / 2,
        "{shed} shed: {CLIENTS} MiB of requests fit no {BUDGET_MIB} MiB budget"
    );
    // Generous: the budget, one read per client in flight at the moment of shedding, allocator
    // slack. Without the budget every client's MiB is held: over 100 MiB.
    let bound = base + 3 * (BUDGET_MIB << 20) + (24 << 20);
    assert!(
        peak <= bound,
        "peak RSS {} MiB over {} MiB",
        peak >> 20,
        bound >> 20
    );
    // A good client is still served.
    let mut good = Client::connect(&proxy.addr());
    assert_eq!(good.set("good", b"value", 0, 0), "STORED");
    assert_eq!(good.get("good").as_deref(), Some(&b"value"[..]));
}
