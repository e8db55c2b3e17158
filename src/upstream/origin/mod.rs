//! An HTTP origin as a backend (SPEC §13): [`HttpWire`], the [`BackendWire`] that speaks
//! HTTP/1.1 to it over one keep-alive connection, on the worker's poll loop like any other
//! backend connection.
//!
//! * [`op`]: what a memcached request means to an origin (`GET` per key, `PUT`, `DELETE`,
//!   `HEAD` for the probe), or why it is refused.
//! * [`reply`]: what the responses make of it, as a memcached reply.
//!
//! Requests are pipelined in order and the responses read in order (HTTP/1.1). A memcached
//! request of several keys is several `GET`s, answered once all are in. A read of a key whose
//! `GET` is already out on this connection (or answered and still held for an earlier request)
//! sends nothing and shares that answer (request coalescing; the pool sends every read of a
//! key on a worker through the same connection, so a herd of misses on a worker is one origin
//! request). A write to a key ends the sharing of its earlier `GET`: a read after a write sees
//! the origin after the write.
//!
//! When the origin closes the connection between responses (an idle timeout, a request limit
//! like nginx's `keepalive_requests`, `Connection: close`), the requests it had not answered
//! are sent again on a new connection ([`BackendWire::replay`]); HTTP's `GET`, `PUT`, `DELETE`
//! and `HEAD` may be repeated.

pub mod op;
pub mod reply;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use self::op::{op_of, Form, Key, Op};
use self::reply::{reply_of, Outcome, Replied};
use super::wire::{BackendWire, Framed};
use super::{FailReason, Fragment, Send};
use crate::config::{OriginSpec, ServerSpec};
use crate::observe::stats::DetailStats;
use crate::protocol::http::{self, Body, Chunked, Head};
use crate::runtime::buffer::{ReadBuf, WriteQueue};

/// Values of at least this many bytes go on as the origin's body (pieces, no copy); smaller
/// ones are copied into their reply (one piece, or a whole reply for a read of one key).
const STREAM_ABOVE: usize = 16 * 1024;

/// An HTTP request this connection sent and its answer once read.
#[derive(Debug)]
struct Exchange {
    /// Its bytes, kept to send it again on a new connection.
    bytes: Bytes,
    /// A `PUT`'s body, sent after `bytes`.
    body: Option<Bytes>,
    /// What it is (how its status reads).
    method: Method,
    /// The key of a `GET` (for coalescing; removed from the map with the exchange).
    key: Option<Bytes>,
    /// The answer, once read.
    outcome: Option<Outcome>,
    /// Memcached requests still waiting for it.
    waiters: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Put,
    Delete,
    Head,
}

/// A memcached request in flight: what it asked and the HTTP exchanges that answer it.
#[derive(Debug)]
struct Asked {
    op: Op,
    /// Sequence numbers of its exchanges (one per key of a read, else one).
    parts: Vec<u64>,
    /// A classic read whose reply may be handed on in pieces: each value as soon as it and
    /// those before it are in, as the origin's body itself (not a copy), so nothing is built.
    stream: bool,
    /// Keys of a streamed read handed on (or found missing) so far.
    streamed: usize,
    /// Hits of a streamed read so far.
    hits: usize,
    /// The smallest `max-age` of a streamed read's hits so far.
    max_age: Option<u32>,
    /// The first failure among a streamed read's keys (the request fails at its end).
    failed: Option<FailReason>,
}

/// Where the response at the head of the unanswered exchanges is.
#[derive(Debug)]
enum Reading {
    /// Waiting for (the rest of) a head.
    Head,
    /// A body of this many bytes, kept (a `GET`'s 200).
    Body(Head, usize),
    /// A body of this many bytes, dropped as it comes (any other response).
    Skip(Head, usize, Outcome),
    /// A chunked body, kept when `keep`.
    Chunked(Head, Chunked, BytesMut, bool),
}

/// The HTTP/1.1 wire of one connection to one origin.
pub struct HttpWire {
    origin: Arc<OriginSpec>,
    /// The server's index (its counters).
    server: usize,
    detail: Option<Arc<DetailStats>>,
    /// Exchanges from sequence number `base` on (answered ones are dropped from the front once
    /// no request waits for them).
    exchanges: VecDeque<Exchange>,
    base: u64,
    /// Sequence number of the first exchange whose response has not been read.
    next_answer: u64,
    /// Memcached requests in flight, in the connection's order.
    asked: VecDeque<Asked>,
    /// The `GET` each key's reads share, while it is held.
    shared: HashMap<Bytes, u64>,
    reading: Reading,
    /// Pieces of the oldest memcached request's streamed reply still to hand on (a value and
    /// its `\r\n` after its line).
    pieces: VecDeque<Bytes>,
    /// The origin said it closes the connection after the last response read.
    closing: bool,
    /// A response was read since the connection was made (a connection closed before any
    /// is not made again: the origin may close every connection it takes).
    answered_since_open: bool,
}

impl std::fmt::Debug for HttpWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpWire")
            .field("server", &self.server)
            .field("exchanges", &self.exchanges.len())
            .field("asked", &self.asked.len())
            .finish()
    }
}

impl HttpWire {
    /// The wire of a connection to `origin` (server number `server`, counted in `detail`).
    pub fn new(origin: Arc<OriginSpec>, server: usize, detail: Option<Arc<DetailStats>>) -> Self {
        HttpWire {
            origin,
            server,
            detail,
            exchanges: VecDeque::new(),
            base: 0,
            next_answer: 0,
            asked: VecDeque::new(),
            shared: HashMap::new(),
            reading: Reading::Head,
            pieces: VecDeque::new(),
            closing: false,
            answered_since_open: false,
        }
    }

    /// The wire of a connection to `server` (an origin), server number `index`.
    pub fn new_for(server: &ServerSpec, index: usize, detail: Option<&Arc<DetailStats>>) -> Self {
        let origin = server.origin.clone().unwrap_or_else(|| {
            // Not an origin: every request is answered by the origin's defaults (a base path
            // of `/`), which only a test could ask for.
            Arc::new(OriginSpec {
                host: server.address.clone(),
                base_path: "/".to_string(),
                writes: false,
                max_value_size: crate::config::DEFAULT_MAX_VALUE_SIZE,
            })
        });
        HttpWire::new(origin, index, detail.cloned())
    }

    fn exchange(&self, seq: u64) -> Option<&Exchange> {
        self.exchanges
            .get(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    fn exchange_mut(&mut self, seq: u64) -> Option<&mut Exchange> {
        self.exchanges
            .get_mut(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    /// Starts an exchange; returns its sequence number.
    fn start(
        &mut self,
        method: Method,
        key: Option<&Key>,
        body: Option<Bytes>,
        queue: &mut WriteQueue,
    ) -> u64 {
        let seq = self.base + self.exchanges.len() as u64;
        let bytes = self.request_bytes(method, key, body.as_ref());
        queue.push(bytes.clone());
        if let Some(body) = &body {
            queue.push(body.clone());
        }
        self.exchanges.push_back(Exchange {
            bytes,
            body,
            method,
            key: key.filter(|_| method == Method::Get).map(|k| k.raw.clone()),
            outcome: None,
            waiters: 1,
        });
        seq
    }

    fn request_bytes(&self, method: Method, key: Option<&Key>, body: Option<&Bytes>) -> Bytes {
        let name = match method {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        };
        let length = body.map(|b| ("Content-Length", b.len() as u64));
        let headers = length.as_slice();
        let mut out = BytesMut::new();
        let target = (self.origin.host.as_str(), self.origin.base_path.as_str());
        http::write_head(&mut out, name, target, key.map(|k| &k.raw[..]), headers);
        out.freeze()
    }

    /// The head of a `PUT` of `body` with its flags and lifetime.
    fn put_bytes(&self, key: &Key, flags: u32, max_age: Option<u32>, body: &Bytes) -> Bytes {
        let headers = [
            ("Content-Length", body.len() as u64),
            ("Bifrost-Flags", u64::from(flags)),
        ];
        let mut out = BytesMut::new();
        let target = (self.origin.host.as_str(), self.origin.base_path.as_str());
        http::write_head(&mut out, "PUT", target, Some(&key.raw), &headers);
        if let Some(age) = max_age {
            // Cache-Control's value is not a bare number: added before the blank line.
            out.truncate(out.len().saturating_sub(2));
            out.put_slice(b"Cache-Control: max-age=");
            crate::protocol::decimal::put_u64(&mut out, u64::from(age));
            out.put_slice(b"\r\n\r\n");
        }
        out.freeze()
    }

    /// True when the oldest memcached request can be answered (every exchange answered), or,
    /// when it is streamed, its next key handed on (that key's exchange answered, or none left).
    fn head_answered(&self) -> bool {
        let answered = |seq: &u64| self.exchange(*seq).is_some_and(|e| e.outcome.is_some());
        self.asked.front().is_some_and(|asked| match asked.stream {
            false => asked.parts.iter().all(answered),
            true => asked.parts.get(asked.streamed).map_or(true, answered),
        })
    }

    /// The next step of the oldest memcached request once [`Self::head_answered`]: its whole
    /// reply, or for a streamed read the next value (`None` when that key was a miss or failed
    /// and nothing is handed on for it).
    fn step_head(&mut self) -> Option<Framed> {
        let asked = self.asked.front()?;
        // A read of one key whose value is small is answered whole: one completion, not four,
        // for a copy of under STREAM_ABOVE bytes.
        let small_single = asked.parts.len() == 1
            && asked.streamed == 0
            && asked.parts.first().and_then(|&seq| self.exchange(seq)).is_some_and(|e| {
                !matches!(&e.outcome, Some(Outcome::Hit { body, .. }) if body.len() >= STREAM_ABOVE)
            });
        if !asked.stream || small_single {
            return Some(self.answer_head());
        }
        let asked = self.asked.front_mut()?;
        let Some(&seq) = asked.parts.get(asked.streamed) else {
            return Some(self.end_stream());
        };
        let index = asked.streamed;
        asked.streamed += 1;
        let Op::Read {
            keys,
            form: Form::Classic { cas },
        } = &asked.op
        else {
            return Some(self.end_stream());
        };
        let exchange = self
            .exchanges
            .get_mut(usize::try_from(seq.checked_sub(self.base)?).ok()?)?;
        exchange.waiters = exchange.waiters.saturating_sub(1);
        let piece = match &exchange.outcome {
            Some(Outcome::Hit {
                flags,
                max_age,
                body,
            }) => {
                let mut line = BytesMut::new();
                let key = keys.get(index)?;
                if body.len() < STREAM_ABOVE {
                    // A small value is copied: one piece.
                    reply::put_value_block(&mut line, key, *flags, body, *cas);
                } else {
                    // A big one goes on as the body the origin sent (shared by every read that
                    // coalesced on it), between its line and its `\r\n`: never copied.
                    reply::put_value_line(&mut line, key, *flags, body.len(), *cas);
                    self.pieces.push_back(body.clone());
                    self.pieces.push_back(Bytes::from_static(b"\r\n"));
                }
                asked.hits += 1;
                if let Some(age) = max_age {
                    asked.max_age = Some(asked.max_age.map_or(*age, |m| m.min(*age)));
                }
                Some(Framed::Piece(line.freeze()))
            }
            Some(Outcome::Failed(reason)) => {
                asked.failed = asked.failed.or(Some(*reason));
                None
            }
            _ => None,
        };
        self.drop_answered();
        piece
    }

    /// A streamed read has handed on every value: its end (`END`), or its failure.
    fn end_stream(&mut self) -> Framed {
        let Some(asked) = self.asked.pop_front() else {
            return Framed::Partial;
        };
        // Every key's waiter was dropped as it was handed on.
        self.drop_answered();
        match asked.failed {
            Some(reason) => Framed::Failed(reason),
            None => Framed::Whole {
                reply: Bytes::from_static(b"END\r\n"),
                tail: 5,
                values: asked.hits,
                max_age: asked.max_age,
            },
        }
    }

    /// Answers the oldest memcached request (all its exchanges are answered).
    fn answer_head(&mut self) -> Framed {
        let Some(asked) = self.asked.pop_front() else {
            return Framed::Partial;
        };
        let outcomes: Vec<&Outcome> = asked
            .parts
            .iter()
            .filter_map(|&seq| self.exchange(seq).and_then(|e| e.outcome.as_ref()))
            .collect();
        let replied = reply_of(&asked.op, &outcomes);
        for &seq in &asked.parts {
            if let Some(exchange) = self.exchange_mut(seq) {
                exchange.waiters = exchange.waiters.saturating_sub(1);
            }
        }
        self.drop_answered();
        match replied {
            Replied::Reply {
                reply,
                tail,
                values,
                max_age,
            } => Framed::Whole {
                reply,
                tail,
                values,
                max_age,
            },
            Replied::Failed(reason) => Framed::Failed(reason),
        }
    }

    /// Drops answered exchanges nobody waits for from the front.
    fn drop_answered(&mut self) {
        while let Some(front) = self.exchanges.front() {
            if front.outcome.is_none() || front.waiters > 0 {
                break;
            }
            if let Some(key) = &front.key {
                // One hash in the usual case: the entry is this exchange's.
                if let Some(seq) = self.shared.remove(key) {
                    if seq != self.base {
                        self.shared.insert(key.clone(), seq);
                    }
                }
            }
            self.exchanges.pop_front();
            self.base += 1;
        }
    }

    /// Reads responses off `buf` into the exchanges they answer until the oldest memcached
    /// request is answered or the bytes run out. `Err` when the bytes are not HTTP, or answer
    /// nothing that was asked.
    fn read_responses(&mut self, buf: &mut ReadBuf) -> Result<(), &'static str> {
        // Nothing after a response that said it closes the connection is a response.
        while !self.head_answered() && !buf.is_empty() && !self.closing {
            let method = self
                .exchange(self.next_answer)
                .map(|e| e.method)
                .ok_or("http response with no request")?;
            if !self.read_one(buf, method)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads (part of) the response to the oldest unanswered exchange; true when it is done.
    fn read_one(&mut self, buf: &mut ReadBuf, method: Method) -> Result<bool, &'static str> {
        let limit = self.origin.max_value_size;
        loop {
            match std::mem::replace(&mut self.reading, Reading::Head) {
                Reading::Head => {
                    let Some((head, len)) = http::parse_head(buf, usize::MAX)
                        .map_err(|_| "malformed http response head")?
                    else {
                        return Ok(false);
                    };
                    buf.advance(len);
                    if (100..200).contains(&head.status) {
                        // An interim response (100 Continue): the real one follows.
                        continue;
                    }
                    self.count_status(head.status);
                    let head = match method {
                        // A response to HEAD has no body, whatever its length says.
                        Method::Head => Head {
                            body: Body::Length(0),
                            ..head
                        },
                        _ => head,
                    };
                    let keep = method == Method::Get && head.status == 200;
                    self.reading = match (head.body, keep) {
                        // A value whose end is the close cannot be told from a cut one.
                        (Body::UntilClose, true) => {
                            return Err("http body framed by the connection's close")
                        }
                        // Nothing else is read on this connection (see `closing`).
                        (Body::UntilClose, false) => {
                            let outcome = outcome_of(method, &head, Bytes::new());
                            return Ok(self.answered(&head, outcome));
                        }
                        (Body::Chunked, _) => {
                            Reading::Chunked(head, Chunked::new(limit), BytesMut::new(), keep)
                        }
                        (Body::Length(n), true) if n <= limit => Reading::Body(head, n),
                        (Body::Length(n), true) => {
                            Reading::Skip(head, n, Outcome::Failed(FailReason::TooLarge))
                        }
                        (Body::Length(n), false) => {
                            let outcome = outcome_of(method, &head, Bytes::new());
                            Reading::Skip(head, n, outcome)
                        }
                    };
                }
                Reading::Body(head, n) => {
                    if buf.len() < n {
                        self.reading = Reading::Body(head, n);
                        return Ok(false);
                    }
                    let body = buf.take(n);
                    return Ok(self.answered(&head, outcome_of(method, &head, body)));
                }
                Reading::Skip(head, n, outcome) => {
                    let take = n.min(buf.len());
                    buf.advance(take);
                    if take < n {
                        self.reading = Reading::Skip(head, n - take, outcome);
                        return Ok(false);
                    }
                    return Ok(self.answered(&head, outcome));
                }
                Reading::Chunked(head, mut decoder, mut body, keep) => {
                    let progress = match decoder.feed(buf) {
                        Ok(progress) => progress,
                        Err(http::HttpError::TooLarge) => {
                            return Err("http chunked body over the limit")
                        }
                        Err(_) => return Err("malformed http chunked body"),
                    };
                    if keep {
                        for range in &progress.data {
                            body.put_slice(buf.get(range.clone()).unwrap_or_default());
                        }
                    }
                    buf.advance(progress.used);
                    if !progress.done {
                        self.reading = Reading::Chunked(head, decoder, body, keep);
                        return Ok(false);
                    }
                    let outcome = outcome_of(method, &head, body.freeze());
                    return Ok(self.answered(&head, outcome));
                }
            }
        }
    }

    /// The response to the oldest unanswered exchange is read: records it.
    fn answered(&mut self, head: &Head, outcome: Outcome) -> bool {
        let seq = self.next_answer;
        if let Some(exchange) = self.exchange_mut(seq) {
            exchange.outcome = Some(outcome);
        }
        self.next_answer += 1;
        self.answered_since_open = true;
        if head.closes {
            self.closing = true;
        }
        true
    }

    fn count_status(&self, status: u16) {
        if let Some(detail) = &self.detail {
            detail.origin_status(self.server, status);
        }
    }
}

/// What `head` (and the body read, for a `GET`'s 200) means for a request of `method`.
fn outcome_of(method: Method, head: &Head, body: Bytes) -> Outcome {
    let status = head.status;
    match (method, status) {
        (Method::Get, 200) => Outcome::Hit {
            flags: head.flags,
            max_age: head.max_age,
            body,
        },
        (Method::Get, 404 | 410) => Outcome::Miss,
        (Method::Delete, 404 | 410) => Outcome::NotFound,
        (Method::Put | Method::Delete, 200..=299) => Outcome::Done,
        (Method::Head, 0..=499) => Outcome::Done,
        _ => Outcome::Failed(FailReason::OriginStatus(status)),
    }
}

impl BackendWire for HttpWire {
    fn new(server: &ServerSpec, index: usize, detail: Option<&Arc<DetailStats>>) -> Self {
        HttpWire::new_for(server, index, detail)
    }

    fn encode(
        &mut self,
        send: &Send,
        fragment: &mut Fragment,
        queue: &mut WriteQueue,
    ) -> Result<(), FailReason> {
        let op = op_of(send, self.origin.writes)?;
        let mut parts = Vec::with_capacity(1);
        match &op {
            Op::Read { keys, .. } => {
                for key in keys {
                    // One hash of the key: its entry is the shared GET, or made for a new one.
                    let next = self.base + self.exchanges.len() as u64;
                    let seq = *self.shared.entry(key.raw.clone()).or_insert(next);
                    if let Some(exchange) = self.exchange_mut(seq).filter(|_| seq != next) {
                        exchange.waiters += 1;
                        if let Some(detail) = &self.detail {
                            detail.origin_coalesced(self.server);
                        }
                        parts.push(seq);
                        continue;
                    }
                    let started = self.start(Method::Get, Some(key), None, queue);
                    if seq != started {
                        // An entry whose exchange had gone: it names the new one now.
                        self.shared.insert(key.raw.clone(), started);
                    }
                    parts.push(started);
                }
            }
            Op::Put {
                key,
                flags,
                max_age,
                data,
                ..
            } => {
                // Reads after this write must not share a `GET` sent before it.
                self.shared.remove(&key.raw);
                let seq = self.base + self.exchanges.len() as u64;
                let bytes = self.put_bytes(key, *flags, *max_age, data);
                queue.push(bytes.clone());
                queue.push(data.clone());
                self.exchanges.push_back(Exchange {
                    bytes,
                    body: Some(data.clone()),
                    method: Method::Put,
                    key: None,
                    outcome: None,
                    waiters: 1,
                });
                parts.push(seq);
            }
            Op::Delete { key, .. } => {
                self.shared.remove(&key.raw);
                parts.push(self.start(Method::Delete, Some(key), None, queue));
            }
            Op::Probe => parts.push(self.start(Method::Head, None, None, queue)),
        }
        let stream = fragment.stream
            && matches!(
                &op,
                Op::Read {
                    form: Form::Classic { .. },
                    ..
                }
            );
        self.asked.push_back(Asked {
            op,
            parts,
            stream,
            streamed: 0,
            hits: 0,
            max_age: None,
            failed: None,
        });
        Ok(())
    }

    fn frame(&mut self, buf: &mut ReadBuf, _head: &Fragment) -> Result<Framed, &'static str> {
        loop {
            if let Some(piece) = self.pieces.pop_front() {
                return Ok(Framed::Piece(piece));
            }
            self.read_responses(buf)?;
            if !self.head_answered() {
                return Ok(Framed::Partial);
            }
            if let Some(framed) = self.step_head() {
                return Ok(framed);
            }
        }
    }

    fn ready(&self) -> bool {
        !self.pieces.is_empty() || self.head_answered()
    }

    fn reconnects(&self) -> bool {
        true
    }

    fn closing(&self) -> bool {
        self.closing && matches!(self.reading, Reading::Head)
    }

    fn replay(&mut self, queue: &mut WriteQueue) -> bool {
        if !matches!(self.reading, Reading::Head) || !self.answered_since_open {
            // The connection closed inside a response (it cannot be told from a cut one), or
            // before answering anything since it was made.
            return false;
        }
        self.closing = false;
        self.answered_since_open = false;
        let from = usize::try_from(self.next_answer.saturating_sub(self.base)).unwrap_or(0);
        for exchange in self.exchanges.iter().skip(from) {
            queue.push(exchange.bytes.clone());
            if let Some(body) = &exchange.body {
                queue.push(body.clone());
            }
        }
        true
    }

    fn reset(&mut self) {
        self.exchanges.clear();
        self.asked.clear();
        self.shared.clear();
        self.base = 0;
        self.next_answer = 0;
        self.reading = Reading::Head;
        self.pieces.clear();
        self.closing = false;
        self.answered_since_open = false;
    }
}

/// The answers [`HttpWire`] frames, as a connection frames them, from responses arriving as
/// `pieces` to the memcached requests `lines` (each one whole request, sent to an origin with
/// `writes: true` and `max_value_size`; classic reads streamed when `stream`): each reply as
/// text (a streamed one's pieces joined), a failure as its name after whatever pieces came
/// before it, and `None` once the bytes put the stream out of step. For the fuzz targets,
/// which see only the crate's public API.
#[doc(hidden)]
pub fn answers_for_fuzzing(
    lines: &[&'static [u8]],
    pieces: &[&[u8]],
    max_value_size: usize,
    stream: bool,
) -> Option<Vec<String>> {
    let spec = OriginSpec {
        host: "o".into(),
        base_path: "/".into(),
        writes: true,
        max_value_size,
    };
    let mut wire = HttpWire::new(Arc::new(spec), 0, None);
    let mut fragment = bare_fragment();
    fragment.stream = stream;
    let mut queue = WriteQueue::default();
    for &line in lines {
        wire.encode(&bare_send(line), &mut fragment, &mut queue)
            .ok()?;
    }
    let mut buf = ReadBuf::default();
    let mut answers = Vec::new();
    let mut streamed = String::new();
    for piece in pieces {
        buf.push_slice(piece);
        while wire.ready() || (!buf.is_empty() && !wire.closing()) {
            match wire.frame(&mut buf, &fragment).ok()? {
                Framed::Whole { reply, .. } => {
                    streamed.push_str(&String::from_utf8_lossy(&reply));
                    answers.push(std::mem::take(&mut streamed));
                }
                Framed::Failed(reason) => {
                    streamed.push_str(reason.as_str());
                    answers.push(std::mem::take(&mut streamed));
                }
                Framed::Partial => break,
                Framed::Piece(piece) => streamed.push_str(&String::from_utf8_lossy(&piece)),
            }
        }
    }
    Some(answers)
}

/// A request of `line` as an exchange would send it (for [`answers_for_fuzzing`] and tests).
fn bare_send(line: &'static [u8]) -> Send {
    Send {
        server: 0,
        part: 0,
        bytes: Bytes::from_static(line),
        value: None,
        framing: crate::upstream::Framing {
            kind: crate::protocol::ReplyKind::Retrieval,
            on_failure: crate::upstream::Failure::Error,
            discard_reply: false,
            noop_tail: false,
        },
        stream: false,
    }
}

/// What a connection tracks for a request before the wire has seen it (the wire does not read
/// it: for [`answers_for_fuzzing`] and tests).
fn bare_fragment() -> Fragment {
    Fragment {
        owner: crate::upstream::Owner { token: 0, part: 0 },
        kind: crate::protocol::ReplyKind::Retrieval,
        on_failure: crate::upstream::Failure::Error,
        discard_reply: false,
        stream: false,
        deadline: std::time::Instant::now(),
        sent: 0,
        expect: crate::protocol::Expect::ANY,
        wire_start: 0,
    }
}

#[cfg(test)]
mod tests;
