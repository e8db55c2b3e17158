//! Socket I/O shared by the connections that copy bytes rather than pass slices on (the admin
//! API's clients and the warming engine's servers; the data path's zero-copy buffers are in
//! [`super::buffer`]): one read that retries on `EINTR`, and an output buffer written until
//! the socket is full.

use std::io::{self, Read, Write};

/// What one read brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes (at least one).
    Bytes(usize),
    /// The peer closed its side (a read of 0 bytes).
    Closed,
    /// Nothing to read now.
    WouldBlock,
}

/// One read into `buf`, retried when a signal interrupts it.
pub fn read_once(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<ReadOutcome> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Ok(ReadOutcome::Closed),
            Ok(n) => return Ok(ReadOutcome::Bytes(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Bytes queued for a socket and how far they are written.
#[derive(Debug, Default)]
pub struct OutBuf {
    bytes: Vec<u8>,
    written: usize,
}

impl OutBuf {
    /// The buffer to append to.
    pub fn queue(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// True when nothing waits to be written and nothing was queued since the last drain.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes what is queued until done or the socket is full; the bytes written (an error
    /// when the socket fails or takes none). Once drained, the buffer is emptied, and its
    /// allocation given back when it grew over `keep`; a buffer whose written front passed
    /// `keep` is compacted, so a long stream does not grow it without end.
    pub fn write_to(&mut self, stream: &mut impl Write, keep: usize) -> io::Result<usize> {
        let mut wrote = 0;
        while let Some(pending) = self.bytes.get(self.written..).filter(|p| !p.is_empty()) {
            match stream.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    wrote += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.bytes.len() {
            if self.bytes.capacity() > keep {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
            self.written = 0;
        } else if self.written >= keep {
            self.bytes.drain(..self.written);
            self.written = 0;
        }
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes, then would block; reads from `input`.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
        input: Vec<io::Result<usize>>,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room).min(3);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for Socket {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.input.pop() {
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    buf[..n].fill(b'x');
                    Ok(n)
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    #[test]
    fn writes_until_full_then_resumes_and_empties_when_drained() {
        let mut socket = Socket {
            taken: Vec::new(),
            room: 5,
            input: Vec::new(),
        };
        let mut out = OutBuf::default();
        out.queue().extend_from_slice(b"hello world");
        assert_eq!(out.write_to(&mut socket, 1024).ok(), Some(5));
        assert_eq!(out.pending(), 6);
        socket.room = 100;
        assert_eq!(out.write_to(&mut socket, 1024).ok(), Some(6));
        assert_eq!(socket.taken, b"hello world");
        assert_eq!(out.pending(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn a_written_front_past_keep_is_compacted() {
        let mut socket = Socket {
            taken: Vec::new(),
            room: 6,
            input: Vec::new(),
        };
        let mut out = OutBuf::default();
        out.queue().extend_from_slice(b"0123456789");
        assert_eq!(out.write_to(&mut socket, 4).ok(), Some(6));
        assert_eq!(out.pending(), 4);
        assert_eq!(
            out.queue().as_slice(),
            b"6789",
            "the written front is dropped"
        );
    }

    #[test]
    fn reads_retry_interrupts_and_tell_closed_from_would_block() {
        let mut socket = Socket {
            taken: Vec::new(),
            room: 0,
            input: vec![Ok(0), Ok(4), Err(io::ErrorKind::Interrupted.into())],
        };
        let mut buf = [0u8; 8];
        assert_eq!(
            read_once(&mut socket, &mut buf).ok(),
            Some(ReadOutcome::Bytes(4))
        );
        assert_eq!(
            read_once(&mut socket, &mut buf).ok(),
            Some(ReadOutcome::Closed)
        );
        assert_eq!(
            read_once(&mut socket, &mut buf).ok(),
            Some(ReadOutcome::WouldBlock)
        );
        socket
            .input
            .push(Err(io::ErrorKind::ConnectionReset.into()));
        assert!(read_once(&mut socket, &mut buf).is_err());
    }
}
