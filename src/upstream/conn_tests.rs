//! A backend connection against a scripted peer on a real loopback socket: the reply stream is
//! trusted to nothing (SPEC §6b). Bytes that come unasked, or before the request they would
//! answer was written, and replies that answer another request reset the connection and fail
//! what is in flight as errors, never as another request's answer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Poll, Token};

use super::*;
use crate::protocol::{Expect, ReplyKind};
use crate::upstream::fragment::{Failure, Owner};
use crate::upstream::Framing;

const TOKEN: Token = Token(7);
/// Generous: the box runs several builds at once.
const WAIT: Duration = Duration::from_secs(20);

/// A connection to a listener of the test's, the peer's end once accepted, and the poll.
struct Rig {
    poll: Poll,
    events: Events,
    conn: BackendConn,
    listener: TcpListener,
    stats: Arc<WorkerStats>,
    out: Vec<Completion>,
}

impl Rig {
    fn new() -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let stats = Arc::new(WorkerStats::default());
        let settings = ConnSettings {
            server: 0,
            address: Arc::new(crate::config::ServerAddr::fixed(
                listener.local_addr().expect("addr"),
            )),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(60),
            max_queued: 100,
        };
        Rig {
            poll: Poll::new().expect("poll"),
            events: Events::with_capacity(16),
            conn: BackendConn::new(
                settings,
                MemcacheText::default(),
                TOKEN,
                Arc::clone(&stats),
                None,
            ),
            listener,
            stats,
            out: Vec::new(),
        }
    }

    /// Queues `line` as part `part` of an exchange, framed as `kind`.
    fn enqueue(&mut self, line: &'static [u8], kind: ReplyKind, part: u32) {
        let fragment = Fragment {
            owner: Owner { token: 0, part },
            kind,
            on_failure: if kind == ReplyKind::Retrieval {
                Failure::Miss(b"END\r\n")
            } else {
                Failure::Error
            },
            discard_reply: false,
            stream: false,
            deadline: Instant::now() + Duration::from_secs(60),
            sent: 0,
            expect: Expect::ANY,
            wire_start: 0,
        };
        let send = Send {
            server: 0,
            part,
            bytes: Bytes::from_static(line),
            value: None,
            framing: Framing {
                kind,
                on_failure: fragment.on_failure,
                discard_reply: false,
                noop_tail: false,
            },
            stream: false,
        };
        let registry = self.poll.registry();
        assert!(self
            .conn
            .enqueue(registry, &send, fragment, Instant::now())
            .is_ok());
    }

    fn accept(&self) -> StdStream {
        let (peer, _) = self.listener.accept().expect("accept");
        peer.set_read_timeout(Some(WAIT)).expect("timeout");
        peer
    }

    /// Polls until the connection is reported readable, passing every event on to it; drives
    /// it only if `drive`.
    fn wait_readable(&mut self, drive: bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "the connection never became readable"
            );
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(100)))
                .expect("poll");
            let mut readable = false;
            for e in self.events.iter() {
                readable |= e.is_readable();
                self.conn.on_event(
                    e.is_readable(),
                    e.is_writable(),
                    e.is_read_closed(),
                    e.is_error(),
                );
            }
            if drive {
                self.conn
                    .drive(self.poll.registry(), Instant::now(), &mut self.out);
            }
            if readable {
                return;
            }
        }
    }

    /// Drives the connection until everything queued is written.
    fn write_all(&mut self) {
        let deadline = Instant::now() + WAIT;
        while self.conn.queued_bytes() > 0 || self.conn.state != ConnState::Connected {
            assert!(Instant::now() < deadline, "the requests were never written");
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(100)))
                .expect("poll");
            for e in self.events.iter() {
                self.conn.on_event(
                    e.is_readable(),
                    e.is_writable(),
                    e.is_read_closed(),
                    e.is_error(),
                );
            }
            self.conn
                .drive(self.poll.registry(), Instant::now(), &mut self.out);
        }
    }

    /// Drives the connection (reads, frames, flushes) until `n` completions are out.
    fn drive_until(&mut self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.out.len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} completions",
                self.out.len()
            );
            self.wait_readable(true);
        }
    }

    fn out_of_sync(&self) -> u64 {
        self.stats.backend_out_of_sync.load(Ordering::Relaxed)
    }
}

/// Reads from `peer` until `want` bytes have come.
fn read_exactly(peer: &mut StdStream, want: usize) -> Vec<u8> {
    let mut got = vec![0u8; want];
    peer.read_exact(&mut got).expect("the request");
    got
}

/// The race the read path must win: a reply arrives before its request was written, and a
/// request is queued before the bytes are framed. The bytes are never its answer.
#[test]
fn bytes_that_arrive_before_the_request_is_written_are_not_its_reply() {
    let mut rig = Rig::new();
    rig.enqueue(b"get k\r\n", ReplyKind::Retrieval, 0);
    let mut peer = rig.accept();
    // The peer answers before it was asked; the request is still in the write queue.
    peer.write_all(b"VALUE k 0 5\r\nstale\r\nEND\r\n")
        .expect("write");
    // Only readiness is collected here: the connection has not written anything yet.
    rig.wait_readable(false);
    assert_eq!(rig.conn.queued_bytes(), 7, "the request is still unwritten");
    rig.conn
        .drive(rig.poll.registry(), Instant::now(), &mut rig.out);
    assert_eq!(rig.out.len(), 1);
    let c = &rig.out[0];
    assert_eq!(c.failed, Some(FailReason::BadReply));
    assert_eq!(&c.reply[..], b"END\r\n", "a miss, never the stale value");
    assert_eq!(rig.out_of_sync(), 1);
    assert_eq!(rig.conn.in_flight(), 0);
}

/// Bytes after the last reply, with nothing in flight, reset the connection: the next request
/// goes out on a fresh connection and gets its own answer.
#[test]
fn bytes_with_nothing_in_flight_reset_the_connection() {
    let mut rig = Rig::new();
    rig.enqueue(b"get k\r\n", ReplyKind::Retrieval, 0);
    let mut peer = rig.accept();
    rig.write_all();
    assert_eq!(read_exactly(&mut peer, 7), b"get k\r\n");
    peer.write_all(b"END\r\nVALUE x 0 5\r\nstray\r\nEND\r\n")
        .expect("write");
    rig.drive_until(1);
    assert_eq!(rig.out[0].failed, None);
    assert_eq!(&rig.out[0].reply[..], b"END\r\n");
    // The stray bytes came in the same segment: framed after the head's reply, with
    // nothing in flight.
    let deadline = Instant::now() + WAIT;
    while rig.out_of_sync() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stray bytes were never noticed"
        );
        rig.wait_readable(true);
    }
    assert_eq!(rig.out.len(), 1, "nobody was answered with the stray bytes");
    // The old connection was closed: the peer sees its end.
    let mut rest = Vec::new();
    assert_eq!(
        peer.read_to_end(&mut rest).map(|_| rest.len()).ok(),
        Some(0)
    );
    rig.enqueue(b"get y\r\n", ReplyKind::Retrieval, 1);
    let mut fresh = rig.accept();
    rig.write_all();
    assert_eq!(read_exactly(&mut fresh, 7), b"get y\r\n");
    fresh
        .write_all(b"VALUE y 0 2\r\nok\r\nEND\r\n")
        .expect("write");
    rig.drive_until(2);
    assert_eq!(rig.out[1].failed, None);
    assert_eq!(&rig.out[1].reply[..], b"VALUE y 0 2\r\nok\r\nEND\r\n");
}

/// A reply that answers another request fails every request in flight as an error (the
/// retrievals as misses), none of them with another's bytes.
#[test]
fn a_reply_for_another_key_fails_everything_in_flight() {
    let mut rig = Rig::new();
    rig.enqueue(b"get a b\r\n", ReplyKind::Retrieval, 0);
    rig.enqueue(b"get c\r\n", ReplyKind::Retrieval, 1);
    rig.enqueue(b"set c 0 0 1\r\nv\r\n", ReplyKind::Line, 2);
    let mut peer = rig.accept();
    rig.write_all();
    let asked = b"get a b\r\nget c\r\nset c 0 0 1\r\nv\r\n";
    assert_eq!(read_exactly(&mut peer, asked.len()), asked);
    // Hits in the wrong order: b then a.
    peer.write_all(b"VALUE b 0 1\r\nB\r\nVALUE a 0 1\r\nA\r\nEND\r\nEND\r\nSTORED\r\n")
        .expect("write");
    rig.drive_until(3);
    let replies: Vec<(&[u8], Option<FailReason>)> =
        rig.out.iter().map(|c| (&c.reply[..], c.failed)).collect();
    assert_eq!(
        replies,
        vec![
            (&b"END\r\n"[..], Some(FailReason::BadReply)),
            (&b"END\r\n"[..], Some(FailReason::BadReply)),
            (
                &b"SERVER_ERROR backend sent a malformed reply\r\n"[..],
                Some(FailReason::BadReply)
            ),
        ]
    );
    assert_eq!(rig.out_of_sync(), 1);
}

/// Replies that answer their requests, keys in the order asked, pipelined in pieces: all
/// pass, and the key prints of one request do not leak into the next.
#[test]
fn pipelined_replies_with_the_right_keys_pass() {
    let mut rig = Rig::new();
    rig.enqueue(b"get a b c\r\n", ReplyKind::Retrieval, 0);
    rig.enqueue(b"get d e\r\n", ReplyKind::Retrieval, 1);
    rig.enqueue(b"mg f k v\r\n", ReplyKind::Meta, 2);
    let mut peer = rig.accept();
    rig.write_all();
    let asked = b"get a b c\r\nget d e\r\nmg f k v\r\n";
    assert_eq!(read_exactly(&mut peer, asked.len()), asked);
    let replies: [&[u8]; 3] = [
        b"VALUE a 0 1\r\nA\r\nVALUE c 0 1\r\nC\r\nEND\r\n",
        b"VALUE e 0 1\r\nE\r\nEND\r\n",
        b"VA 1 kf\r\nF\r\n",
    ];
    let all = replies.concat();
    for piece in all.chunks(5) {
        peer.write_all(piece).expect("write");
        peer.flush().expect("flush");
    }
    rig.drive_until(3);
    for (c, want) in rig.out.iter().zip(replies) {
        assert_eq!(c.failed, None);
        assert_eq!(&c.reply[..], want);
    }
    assert_eq!(rig.out_of_sync(), 0);
    assert_eq!(rig.conn.wire.kept_lines(), 0);
}
