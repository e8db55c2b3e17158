//! One client connection: its read buffer, its FIFO of reply slots, its write queue.
//!
//! Every request the client sends takes a slot at the tail of the FIFO, in order. A slot is
//! complete when every fragment of its request has been answered (by a backend or by the
//! proxy itself); only complete slots at the head are written, so replies always leave in
//! request order whatever order the backends answer in.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;

use crate::buffer::{read_into, Read, WriteQueue, READ_CHUNK};
use crate::protocol::{parse_request, Limits, ParseError, Parsed, Request};

/// How a slot combines the replies of its fragments.
#[derive(Debug)]
pub enum Combine {
    /// One fragment; its reply is the answer.
    Single,
    /// Several fragments that must all answer `OK` (e.g. `flush_all`); else the first other
    /// reply is the answer.
    AllOk,
    /// A retrieval split across servers: the replies are merged (see [`crate::multiget`]).
    MultiGet(Box<SplitRetrieval>),
}

/// What a split retrieval needs to merge its fragments' replies.
#[derive(Debug)]
pub struct SplitRetrieval {
    /// The original request and its bytes (for the keys, in the order asked).
    pub request: Request,
    /// The bytes `request`'s spans index into.
    pub bytes: Bytes,
    /// Each key as asked, in order: where it is in `bytes`, and the fragment it was sent in
    /// (`usize::MAX`: none, a miss).
    pub asked: Vec<crate::multiget::AskedKey>,
    /// Each fragment's reply, once it has arrived.
    pub parts: Vec<Bytes>,
}

#[derive(Debug)]
enum Output {
    Empty,
    One(Bytes),
    Many(Vec<Bytes>),
}

/// A reply slot: the place in the client's reply order that one request holds.
#[derive(Debug)]
pub struct Slot {
    pending: u32,
    combine: Combine,
    silent: bool,
    close_after: bool,
    output: Output,
}

impl Slot {
    /// A slot waiting for `fragments` replies. A `silent` slot sends nothing (noreply).
    pub fn waiting(fragments: u32, combine: Combine, silent: bool) -> Slot {
        Slot {
            pending: fragments,
            combine,
            silent,
            close_after: false,
            output: Output::Empty,
        }
    }

    /// A slot answered by the proxy itself.
    pub fn ready(reply: Bytes) -> Slot {
        Slot {
            pending: 0,
            combine: Combine::Single,
            silent: false,
            close_after: false,
            output: Output::One(reply),
        }
    }

    /// After this slot's reply the connection closes (quit, fatal parse errors).
    pub fn then_close(mut self) -> Slot {
        self.close_after = true;
        self
    }

    /// True when the connection closes after this slot's reply.
    pub fn closes_connection(&self) -> bool {
        self.close_after
    }

    fn is_complete(&self) -> bool {
        self.pending == 0
    }

    fn deliver(&mut self, part: usize, reply: Bytes) {
        if self.pending == 0 {
            return;
        }
        self.pending -= 1;
        match &mut self.combine {
            Combine::Single => self.output = Output::One(reply),
            Combine::MultiGet(split) => {
                if let Some(slot) = split.parts.get_mut(part) {
                    *slot = reply;
                }
                if self.pending == 0 {
                    let bytes = &split.bytes;
                    let keys = split.asked.iter().map(|k| (k.key(bytes), k.part));
                    let merged = crate::multiget::merge(keys, &split.parts);
                    self.output = Output::Many(merged);
                }
            }
            Combine::AllOk => {
                if reply.as_ref() != b"OK\r\n" && matches!(self.output, Output::Empty) {
                    self.output = Output::One(reply);
                }
                if self.pending == 0 && matches!(self.output, Output::Empty) {
                    self.output = Output::One(Bytes::from_static(b"OK\r\n"));
                }
            }
        }
    }
}

/// What the parser found next in the client's buffer.
pub enum Next {
    /// A whole request; `bytes` holds exactly its bytes and `request`'s spans index into it.
    Request(Request, Bytes),
    /// A bad request; the error's reply goes out in its slot.
    Error(ParseError),
}

/// One client connection.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    /// Distinguishes this client from earlier ones that used the same slab entry.
    pub generation: u32,
    /// Which listener accepted it.
    pub listener: usize,
    read_buf: BytesMut,
    /// Bytes still to drop from the input (the rest of a refused value).
    swallow: usize,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head_seq: u64,
    write_queue: WriteQueue,
    /// Readiness seen and not yet consumed (edge-triggered polling).
    pub readable: bool,
    /// The peer's FIN was reported: read until end of stream even after a short read.
    pub read_closed: bool,
    /// No more reading: close once every slot is written.
    pub closing: bool,
    /// The peer closed or the socket failed: close now.
    pub dead: bool,
    /// When the client last sent bytes.
    pub last_active: Instant,
    /// True while the client sits in the worker's list of clients to serve.
    pub queued: bool,
    /// True while the client sits in the worker's list of clients to flush.
    pub pending_flush: bool,
    /// Serving stopped early (a cap or the per-visit read budget) with input left to handle.
    pub stalled: bool,
}

impl Client {
    /// A new client on an accepted socket.
    pub fn new(stream: TcpStream, generation: u32, listener: usize, now: Instant) -> Client {
        Client {
            stream,
            generation,
            listener,
            read_buf: BytesMut::new(),
            swallow: 0,
            slots: VecDeque::new(),
            head_seq: 0,
            write_queue: WriteQueue::default(),
            readable: true,
            read_closed: false,
            closing: false,
            dead: false,
            last_active: now,
            queued: false,
            pending_flush: false,
            stalled: false,
        }
    }

    /// True when the client must not be read until it drains (the memory caps).
    pub fn is_paused(&self, max_outstanding: usize, max_buffered: usize) -> bool {
        self.slots.len() >= max_outstanding || self.write_queue.len() >= max_buffered
    }

    /// True when nothing is waiting to be answered or written.
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.write_queue.is_empty()
    }

    /// Reads once from the socket (0 bytes: the peer closed its side).
    pub fn read(&mut self) -> io::Result<Read> {
        read_into(&self.stream, &mut self.read_buf, READ_CHUNK)
    }

    /// Parses the next request out of the buffer (dropping swallowed bytes first).
    pub fn next_request(&mut self, limits: &Limits) -> Option<Next> {
        if self.swallow > 0 {
            let n = self.swallow.min(self.read_buf.len());
            self.read_buf.advance(n);
            self.swallow -= n;
            if self.swallow > 0 {
                return None;
            }
        }
        if self.read_buf.is_empty() {
            // Give the allocation back when a burst is over (idle clients stay small).
            if self.read_buf.capacity() > 64 * 1024 {
                self.read_buf = BytesMut::new();
            }
            return None;
        }
        match parse_request(&self.read_buf, limits) {
            Ok(Parsed::Incomplete) => None,
            Ok(Parsed::Complete(request)) => {
                let bytes = self.read_buf.split_to(request.len).freeze();
                Some(Next::Request(request, bytes))
            }
            Err(error) => {
                match error.skip() {
                    Some(skip) => {
                        let n = skip.min(self.read_buf.len());
                        self.read_buf.advance(n);
                        self.swallow = skip - n;
                    }
                    None => {
                        self.read_buf.clear();
                        self.closing = true;
                    }
                }
                Some(Next::Error(error))
            }
        }
    }

    /// Reserves the next slot at the tail; returns its sequence number.
    pub fn push_slot(&mut self, slot: Slot) -> u64 {
        let seq = self.head_seq + self.slots.len() as u64;
        self.slots.push_back(slot);
        seq
    }

    /// Hands a fragment's reply to slot `seq`. Returns true when the head slot is complete
    /// (something can be written). Replies for slots already gone are ignored.
    pub fn deliver(&mut self, seq: u64, part: usize, reply: Bytes) -> bool {
        let Some(index) = seq.checked_sub(self.head_seq) else {
            return false;
        };
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
        {
            slot.deliver(part, reply);
        }
        self.slots.front().is_some_and(Slot::is_complete)
    }

    /// Moves complete head slots to the write queue and writes what the socket takes.
    /// Returns the bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        while self.slots.front().is_some_and(Slot::is_complete) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.head_seq += 1;
            if !slot.silent {
                match slot.output {
                    Output::Empty => {}
                    Output::One(reply) => self.write_queue.push(reply),
                    Output::Many(replies) => {
                        replies.into_iter().for_each(|r| self.write_queue.push(r))
                    }
                }
            }
            if slot.close_after {
                self.closing = true;
                // Nothing after a closing reply is ever sent.
                self.head_seq += self.slots.len() as u64;
                self.slots.clear();
                break;
            }
        }
        if self.write_queue.is_empty() {
            return Ok(0);
        }
        self.write_queue.write_to(&mut self.stream)
    }

    /// True once a closing client has nothing left to send.
    pub fn finished(&self) -> bool {
        self.dead || (self.closing && self.is_idle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ok_combines_to_ok_or_first_failure() {
        let mut slot = Slot::waiting(3, Combine::AllOk, false);
        slot.deliver(0, Bytes::from_static(b"OK\r\n"));
        slot.deliver(0, Bytes::from_static(b"SERVER_ERROR timeout\r\n"));
        slot.deliver(0, Bytes::from_static(b"SERVER_ERROR other\r\n"));
        assert!(slot.is_complete());
        assert!(
            matches!(&slot.output, Output::One(b) if b.as_ref() == b"SERVER_ERROR timeout\r\n")
        );

        let mut slot = Slot::waiting(2, Combine::AllOk, false);
        slot.deliver(0, Bytes::from_static(b"OK\r\n"));
        assert!(!slot.is_complete());
        slot.deliver(0, Bytes::from_static(b"OK\r\n"));
        assert!(matches!(&slot.output, Output::One(b) if b.as_ref() == b"OK\r\n"));
    }

    #[test]
    fn extra_deliveries_are_ignored() {
        let mut slot = Slot::waiting(1, Combine::Single, false);
        slot.deliver(0, Bytes::from_static(b"STORED\r\n"));
        slot.deliver(0, Bytes::from_static(b"NOT_STORED\r\n"));
        assert!(matches!(&slot.output, Output::One(b) if b.as_ref() == b"STORED\r\n"));
    }
}
