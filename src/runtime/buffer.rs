//! Socket I/O on `bytes` buffers: reads straight into a `BytesMut`'s spare capacity and
//! vectored writes from a queue of `Bytes`, so neither direction zero-fills.
//!
//! What the memory limits count is what the process holds. A `Bytes` slice keeps its whole
//! allocation alive, so a 20-byte reply cut from a 64 KiB read chunk would pin 64 KiB while
//! the limits count 20. Two rules prevent it:
//! - [`ReadBuf::take`] hands a message on as a slice of the read chunk only when it is at least
//!   a quarter of that chunk ([`SLICE_SHARE`]); a smaller one is copied into an allocation of
//!   its own (a memcpy of a few KB costs less than the syscall that read it). A slice therefore
//!   keeps alive at most 4 times its own length, and a copy exactly its length.
//! - [`WriteQueue`] copies small parts ([`COALESCE_MAX`] bytes or less) back to back into one
//!   buffer of its own instead of queueing each as a `Bytes`: a queue of thousands of small
//!   replies or requests holds their bytes (in a buffer at most twice their total), not one
//!   allocation and one queue entry each, and keeps nothing else alive.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// How many bytes one read asks the kernel for.
pub const READ_CHUNK: usize = 16 * 1024;
/// How many bytes one read from a backend asks for: one backend connection carries the replies
/// of many clients, so bigger reads save syscalls there.
pub const BACKEND_READ_CHUNK: usize = 64 * 1024;
/// A slice handed on without a copy is at least `1 / SLICE_SHARE` of the allocation it keeps
/// alive (see [`ReadBuf::take`]).
pub const SLICE_SHARE: usize = 4;
/// Messages shorter than this are copied into a read buffer's small arena rather than into an
/// allocation each (see [`ReadBuf::take`]).
pub const ARENA_PIECE: usize = 256;
/// Size of that arena: a message copied there keeps at most this much alive.
pub const ARENA: usize = 4 * ARENA_PIECE;
/// Parts of at most this many bytes are copied into a write queue's own buffer (see
/// [`WriteQueue`]).
pub const COALESCE_MAX: usize = 1024;
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

/// A read buffer that knows the size of the allocation it reads into, so that what it hands on
/// never keeps alive much more memory than its own length (see [`ReadBuf::take`]).
#[derive(Default)]
pub struct ReadBuf {
    buf: BytesMut,
    /// Where [`ReadBuf::take`] copies small messages.
    arena: Arena,
    /// Size of the allocation `buf` lives in (0 when it has none). Only [`ReadBuf::make_room`]
    /// allocates, so this is exact.
    alloc: usize,
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl ReadBuf {
    /// Reads once from `source` into the spare capacity (making room for about `chunk` bytes
    /// when less than a quarter of that is free).
    pub fn read_from(&mut self, source: &impl AsRawFd, chunk: usize) -> io::Result<Read> {
        self.make_room(chunk);
        read_spare(source, &mut self.buf)
    }

    /// Reuses the allocation when nothing else holds any of it; otherwise moves what is
    /// buffered to a new one of `len + max(chunk, len)` bytes (doubling past one chunk, so a
    /// large message is copied O(1) times per byte).
    fn make_room(&mut self, chunk: usize) {
        let len = self.buf.len();
        if self.buf.capacity() - len >= chunk / 4 {
            return;
        }
        if self.alloc >= len + chunk && self.buf.try_reclaim(chunk) {
            return;
        }
        let mut fresh = BytesMut::with_capacity(len + chunk.max(len));
        fresh.extend_from_slice(&self.buf);
        self.alloc = fresh.capacity();
        self.buf = fresh;
    }

    /// Appends `bytes` as a read of them would (for tests and fuzzing, which have no socket).
    pub fn push_slice(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Memory this buffer keeps alive: its allocation while it holds bytes (an empty buffer
    /// that shares its allocation with slices handed on holds nothing they do not count).
    pub fn held(&self) -> usize {
        if self.buf.is_empty() {
            0
        } else {
            self.alloc
        }
    }

    /// Hands on the first `n` bytes (at most what is buffered): as a slice of the allocation
    /// when they are at least `1 / SLICE_SHARE` of it; else as a copy, in the small arena
    /// when under [`ARENA_PIECE`] bytes, or in an allocation of its own. So what is handed on
    /// keeps alive at most [`SLICE_SHARE`] times its length, or [`ARENA`] bytes for a small
    /// message.
    #[inline]
    pub fn take(&mut self, n: usize) -> Bytes {
        let mut arena = std::mem::take(&mut self.arena);
        let taken = self.take_with(n, &mut arena);
        self.arena = arena;
        taken
    }

    /// [`ReadBuf::take`], copying a small message into `arena` (one a worker shares between
    /// its clients, so a client keeps no arena of its own while idle).
    #[inline]
    pub fn take_with(&mut self, n: usize, arena: &mut Arena) -> Bytes {
        let n = n.min(self.buf.len());
        if n.saturating_mul(SLICE_SHARE) >= self.alloc {
            return self.buf.split_to(n).freeze();
        }
        let message = self.buf.get(..n).unwrap_or_default();
        let copy = if n < ARENA_PIECE {
            arena.copy(message)
        } else {
            Bytes::copy_from_slice(message)
        };
        self.buf.advance(n);
        copy
    }

    /// Drops the first `n` bytes (at most what is buffered).
    pub fn advance(&mut self, n: usize) {
        self.buf.advance(n.min(self.buf.len()));
    }

    /// Drops everything buffered (keeping the allocation for reuse).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Gives the allocation back.
    pub fn release(&mut self) {
        *self = ReadBuf::default();
    }

    /// Everything buffered, as a buffer of its own that shares this one's allocation (this one
    /// keeps the spare room for the next read).
    pub fn split(&mut self) -> ReadBuf {
        ReadBuf {
            buf: self.buf.split(),
            arena: Arena::default(),
            alloc: self.alloc,
        }
    }

    /// Allocated bytes beyond what is buffered that are reachable for reading (for the idle
    /// check: an empty buffer with a large allocation is given back).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// When what is buffered is less than `1 / SLICE_SHARE` of the allocation it keeps alive
    /// (the start of a request at the end of a shared read chunk), moves it to an allocation
    /// of its own size, so a connection that waits for the rest holds only what it has.
    pub fn compact(&mut self) {
        let len = self.buf.len();
        if len > 0 && len.saturating_mul(SLICE_SHARE) < self.alloc {
            self.buf = BytesMut::from(&self.buf[..]);
            self.alloc = self.buf.capacity();
        }
    }
}

/// Where messages under [`ARENA_PIECE`] bytes are copied, back to back, each handed on as a
/// slice of it (so a clone is a reference count, not an allocation). It is reused in place
/// once every message cut from it is dropped, so the usual request or reply, written out at
/// once, costs no allocation; a message kept keeps at most [`ARENA`] bytes alive.
#[derive(Default)]
pub struct Arena {
    buf: BytesMut,
}

impl Arena {
    /// A copy of `message` (under [`ARENA_PIECE`] bytes) cut from the arena.
    #[inline]
    pub fn copy(&mut self, message: &[u8]) -> Bytes {
        if self.buf.capacity() < message.len() && !self.buf.try_reclaim(ARENA) {
            self.buf = BytesMut::with_capacity(ARENA.max(message.len()));
        }
        self.buf.extend_from_slice(message);
        self.buf.split().freeze()
    }
}

/// Reads once from `source` into the spare capacity of `buf` (which must have some).
fn read_spare(source: &impl AsRawFd, buf: &mut BytesMut) -> io::Result<Read> {
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

/// A FIFO of byte buffers waiting to be written, with a running byte count. Small parts are
/// copied back to back into `tail`, a buffer of the queue's own that logically follows every
/// entry of `parts`; a larger part closes the tail (it becomes an entry) and is queued as is.
#[derive(Default)]
pub struct WriteQueue {
    parts: VecDeque<Bytes>,
    /// Copied small parts; `tail[tail_start..]` waits (a `Vec` rather than a `BytesMut`: it
    /// is emptied in place once written, with no reference count or reclaim to pay).
    tail: Vec<u8>,
    tail_start: usize,
    bytes: usize,
}

impl WriteQueue {
    /// Appends a buffer (empty ones are dropped).
    #[inline]
    pub fn push(&mut self, part: Bytes) {
        if part.len() <= COALESCE_MAX {
            self.push_small(&part);
        } else {
            self.push_large(part);
        }
    }

    /// Appends a copy of `part`'s bytes, or `part` itself (shared) when it is large.
    #[inline]
    pub fn push_ref(&mut self, part: &Bytes) {
        if part.len() <= COALESCE_MAX {
            self.push_small(part);
        } else {
            self.push_large(part.clone());
        }
    }

    /// Makes room at once for the small ones of `parts`, about to be pushed: a many-part
    /// reply (a merged multi-get) costs one allocation of the copy buffer, not a doubling per
    /// few parts (the buffer is given back when its connection goes idle).
    #[inline]
    pub fn reserve_for(&mut self, parts: &[Bytes]) {
        if parts.len() > 1 {
            let small: usize = parts
                .iter()
                .map(|p| if p.len() <= COALESCE_MAX { p.len() } else { 0 })
                .sum();
            self.tail.reserve(small);
        }
    }

    #[inline]
    fn push_small(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        self.bytes += part.len();
        self.tail.extend_from_slice(part);
    }

    fn push_large(&mut self, part: Bytes) {
        self.bytes += part.len();
        if self.tail_start < self.tail.len() {
            let mut tail = Bytes::from(std::mem::take(&mut self.tail));
            tail.advance(std::mem::take(&mut self.tail_start));
            self.parts.push_back(tail);
        }
        self.parts.push_back(part);
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Gives the queue's memory back when it is empty and has grown past a few entries (or its
    /// copy buffer past [`COALESCE_MAX`] times a few).
    pub fn shrink(&mut self) {
        if self.parts.is_empty() && self.parts.capacity() > 4 {
            self.parts = VecDeque::new();
        }
        if self.tail.is_empty() && self.tail.capacity() > 4 * COALESCE_MAX {
            self.tail = Vec::new();
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.tail.clear();
        self.tail_start = 0;
        self.bytes = 0;
    }

    /// Writes as much as the socket takes, with one `writev` per up to [`MAX_IOVECS`] buffers.
    /// Returns the bytes written; stops at `WouldBlock` (returned as Ok) or at the first other
    /// error.
    pub fn write_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while self.bytes > 0 {
            // Most writes carry a few buffers: don't fill a large iovec array for them.
            let batch = if self.parts.len() < SMALL_BATCH {
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
        let tail = self
            .tail
            .get(self.tail_start..)
            .filter(|tail| !tail.is_empty());
        let parts = self.parts.iter().map(|p| &p[..]).chain(tail);
        for (slot, part) in slices.iter_mut().zip(parts) {
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
        if n > 0 {
            self.tail_start = (self.tail_start + n).min(self.tail.len());
            if self.tail_start == self.tail.len() {
                // All written: start over at the front of the same allocation.
                self.tail.clear();
                self.tail_start = 0;
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

    #[test]
    fn small_and_large_parts_leave_in_order() {
        let mut q = WriteQueue::default();
        let large = Bytes::from(vec![b'L'; COALESCE_MAX + 1]);
        q.push(Bytes::from_static(b"a"));
        q.push_ref(&Bytes::from_static(b"bc"));
        q.push_ref(&large);
        q.push(Bytes::from_static(b"d"));
        q.push(large.clone());
        q.push(Bytes::from_static(b"e"));
        assert_eq!(q.len(), 5 + 2 * large.len());
        let mut sink = Trickle {
            got: Vec::new(),
            limit: 7,
            budget: 1000,
        };
        assert_eq!(q.write_to(&mut sink).ok(), Some(1000));
        sink.budget = usize::MAX;
        q.write_to(&mut sink).unwrap();
        assert!(q.is_empty());
        let mut want = b"abc".to_vec();
        want.extend_from_slice(&large);
        want.push(b'd');
        want.extend_from_slice(&large);
        want.push(b'e');
        assert_eq!(sink.got, want);
    }

    /// A source of `n` bytes of `fill` per read (a pipe's read end).
    fn pipe_with(bytes: &[u8]) -> std::fs::File {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe() returned two fresh descriptors that nothing else owns.
        let (read, mut write) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        write.write_all(bytes).unwrap();
        read
    }

    #[test]
    fn small_messages_are_copied_out_and_large_ones_sliced() {
        let source = pipe_with(&[b'x'; 40 * 1024]);
        let mut buf = ReadBuf::default();
        let read = buf.read_from(&source, 64 * 1024).unwrap();
        assert_eq!(read.bytes, 40 * 1024);
        assert!(buf.alloc >= 64 * 1024);
        let base = buf.as_ptr() as usize;
        let in_chunk = |b: &Bytes| (base..base + 64 * 1024).contains(&(b.as_ptr() as usize));
        let small = buf.take(100);
        assert!(
            !in_chunk(&small),
            "a small message must not keep the read chunk alive"
        );
        let medium = buf.take(1000);
        assert!(!in_chunk(&medium), "nor a medium one");
        // Small ones share the arena, which is reused once they are dropped.
        let other = buf.take(10);
        assert_eq!(other.as_ptr() as usize, small.as_ptr() as usize + 100);
        let arena = small.as_ptr() as usize;
        drop((small, other));
        // Fill the rest of the arena, drop everything: the next one starts it over.
        let mut taken = 100 + 1000 + 10;
        let mut used = 110;
        while used + 200 <= ARENA {
            drop(buf.take(200));
            (used, taken) = (used + 200, taken + 200);
        }
        let again = buf.take(200);
        taken += 200;
        assert_eq!(
            again.as_ptr() as usize,
            arena,
            "the arena is reused in place"
        );
        let large = buf.take(buf.alloc / SLICE_SHARE);
        assert_eq!(
            large.as_ptr() as usize,
            base + taken,
            "a large one is a slice"
        );
        assert_eq!(buf.held(), buf.alloc);
        let rest = buf.len();
        buf.take(rest);
        assert_eq!(buf.held(), 0);
    }

    #[test]
    fn a_large_message_grows_the_buffer_by_doubling_and_a_small_rest_is_compacted() {
        let mut buf = ReadBuf::default();
        let source = pipe_with(&[b'y'; 60 * 1024]);
        let mut got = 0;
        let mut allocations = 0;
        let mut last = 0;
        while got < 60 * 1024 {
            got += buf.read_from(&source, 4 * 1024).unwrap().bytes;
            if buf.alloc != last {
                allocations += 1;
                last = buf.alloc;
            }
        }
        assert!(allocations <= 6, "{allocations} allocations for 60 KiB");
        assert!(buf.alloc <= 2 * 60 * 1024 + 4 * 1024);
        let _whole = buf.take(60 * 1024 - 10);
        buf.compact();
        assert_eq!(buf.len(), 10);
        assert_eq!(
            buf.held(),
            10,
            "the 10 bytes left moved to their own allocation"
        );
    }
}
