//! Socket I/O on `bytes` buffers: reads straight into a `BytesMut`'s spare capacity and
//! vectored writes from a queue of `Bytes`, so neither direction copies or zero-fills.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// How many bytes one read asks the kernel for.
pub const READ_CHUNK: usize = 16 * 1024;
/// How many bytes one read from a backend asks for: one backend connection carries the replies
/// of many clients, so bigger reads save syscalls there.
pub const BACKEND_READ_CHUNK: usize = 64 * 1024;
/// How many queued buffers one `writev` sends at most (a merged multi-get of 100 keys is up to
/// ~100 slices; Linux takes 1024).
const MAX_IOVECS: usize = 512;
/// Iovec array size for the common case of a few buffers.
const SMALL_BATCH: usize = 16;

/// What one read got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// Bytes read; 0 means end of stream.
    pub bytes: usize,
    /// The read returned less than it asked for, so the socket had nothing more at that
    /// moment. Under edge-triggered polling, anything arriving later raises a new event, so
    /// the caller can wait for it instead of spending a syscall to see `EAGAIN`.
    pub drained: bool,
}

/// Reads once from `source` into the spare capacity of `buf` (growing it by `chunk` when less
/// than a quarter of that is free).
pub fn read_into(source: &impl AsRawFd, buf: &mut BytesMut, chunk: usize) -> io::Result<Read> {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
    let spare = buf.chunk_mut();
    let want = spare.len();
    // SAFETY: `spare` is writable memory owned by `buf` of at least `want` bytes; the kernel
    // writes at most `want` bytes into it and we only mark as initialised what it reported.
    let n = unsafe { libc::read(source.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised exactly `n <= want` bytes of the spare capacity.
    unsafe { buf.advance_mut(n) };
    Ok(Read {
        bytes: n,
        drained: n < want,
    })
}

/// A FIFO of byte buffers waiting to be written, with a running byte count.
#[derive(Default)]
pub struct WriteQueue {
    parts: VecDeque<Bytes>,
    bytes: usize,
}

impl WriteQueue {
    /// Appends a buffer (empty ones are dropped).
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.bytes += part.len();
            self.parts.push_back(part);
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Gives the queue's memory back when it is empty and has grown past a few entries.
    pub fn shrink(&mut self) {
        if self.parts.is_empty() && self.parts.capacity() > 4 {
            self.parts = VecDeque::new();
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.bytes = 0;
    }

    /// Writes as much as the socket takes, with one `writev` per up to [`MAX_IOVECS`] buffers.
    /// Returns the bytes written; stops at `WouldBlock` (returned as Ok) or at the first other
    /// error.
    pub fn write_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.parts.is_empty() {
            // Most writes carry a few buffers: don't fill a large iovec array for them.
            let batch = if self.parts.len() <= SMALL_BATCH {
                self.write_batch::<SMALL_BATCH>(sink)
            } else {
                self.write_batch::<MAX_IOVECS>(sink)
            };
            match batch {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// One `writev` of up to `N` queued buffers.
    fn write_batch<const N: usize>(&self, sink: &mut impl Write) -> io::Result<usize> {
        let mut slices: [IoSlice<'_>; N] = [IoSlice::new(&[]); N];
        let mut count = 0;
        for (slot, part) in slices.iter_mut().zip(self.parts.iter()) {
            *slot = IoSlice::new(part);
            count += 1;
        }
        sink.write_vectored(slices.get(..count).unwrap_or(&[]))
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.parts.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `limit` bytes per call, then WouldBlock after `budget`.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.limit).min(self.budget);
            self.got.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_count() {
        let mut q = WriteQueue::default();
        for part in ["hello ", "", "world", "!\r\n"] {
            q.push(Bytes::from(part));
        }
        assert_eq!(q.len(), 14);
        let mut sink = Trickle {
            got: Vec::new(),
            limit: 4,
            budget: 9,
        };
        assert_eq!(q.write_to(&mut sink).ok(), Some(9));
        assert_eq!(q.len(), 5);
        sink.budget = 100;
        assert_eq!(q.write_to(&mut sink).ok(), Some(5));
        assert!(q.is_empty());
        assert_eq!(sink.got, b"hello world!\r\n");
    }
}
