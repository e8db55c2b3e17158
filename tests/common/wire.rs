//! A client's connection to the proxy that reads replies by their structure (not by what they
//! should say): whole lines, counted data blocks, silence, a close. Each test's request type says
//! how its reply is framed by implementing [`Request`]; [`Wire::reply`] reads one.
//!
//! Reads and writes time out after the timeout given to [`Wire::connect`]; a read that times
//! out fails with a message naming it.

use super::show;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A request whose reply [`Wire::reply`] can read off the connection.
pub trait Request {
    /// Reads this request's reply from `w` into `out`, by its structure.
    fn read_reply(&self, w: &mut Wire, out: &mut Vec<u8>) -> Result<(), String>;
}

pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    /// The read and write timeout.
    timeout: Duration,
    /// Pipelines sent on this connection so far (kept by the caller).
    pub pipelines: usize,
}

impl Wire {
    pub fn connect(addr: &str, timeout: Duration) -> std::io::Result<Wire> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Wire {
            stream,
            buf: Vec::new(),
            start: 0,
            timeout,
            pipelines: 0,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("sending to the proxy: {e}"))
    }

    /// Drops the connection without reading on: a FIN, or with `reset` an RST.
    pub fn abort(self, reset: bool) {
        if reset {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own, with a pointer to a live `linger` and its
            // exact size.
            unsafe {
                libc::setsockopt(
                    self.stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    std::ptr::addr_of!(linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
        drop(self);
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn fill(&mut self) -> Result<(), String> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => Err("the proxy closed the connection".to_string()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Err(format!("no reply within {:?}", self.timeout))
                }
                Err(e) => Err(format!("reading from the proxy: {e}")),
            };
        }
    }

    /// Makes sure a whole line is buffered; returns its length with the `\n`.
    pub fn line_len(&mut self) -> Result<usize, String> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                return Ok(i + 1);
            }
            self.fill()?;
        }
    }

    /// The next line, up to and with its `\n`.
    pub fn line(&mut self) -> Result<Vec<u8>, String> {
        let n = self.line_len()?;
        self.take(n)
    }

    /// The next line, which must end in `\r\n`.
    pub fn crlf_line(&mut self) -> Result<Vec<u8>, String> {
        let line = self.line()?;
        if !line.ends_with(b"\r\n") {
            return Err(format!("a line not ending in \\r\\n: {}", show(&line)));
        }
        Ok(line)
    }

    pub fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buffered().len() < n {
            self.fill()?;
        }
        let out = self.buffered()[..n].to_vec();
        self.start += n;
        Ok(out)
    }

    /// True if the next line is `line`.
    pub fn next_line_is(&mut self, line: &[u8]) -> Result<bool, String> {
        let n = self.line_len()?;
        Ok(&self.buffered()[..n] == line)
    }

    /// The proxy closes the connection, sending nothing more.
    pub fn expect_closed(&mut self) -> Result<(), String> {
        if !self.buffered().is_empty() {
            return Err(format!("unexpected bytes: {}", show(self.buffered())));
        }
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("unexpected bytes: {}", show(&chunk[..n]))),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                format!("the proxy kept the connection open for {:?}", self.timeout),
            ),
            Err(e) => Err(format!("reading from the proxy: {e}")),
        }
    }

    /// Nothing may arrive for `wait`.
    pub fn silence(&mut self, wait: Duration) -> Result<(), String> {
        if !self.buffered().is_empty() {
            return Err(format!("unexpected bytes: {}", show(self.buffered())));
        }
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 4096];
        let result = match self.stream.read(&mut chunk) {
            Ok(0) => Err("the proxy closed the connection".to_string()),
            Ok(n) => Err(format!("unexpected bytes: {}", show(&chunk[..n]))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(format!("reading from the proxy: {e}")),
        };
        let _ = self.stream.set_read_timeout(Some(self.timeout));
        result
    }

    /// Reads the reply to `req` by its structure (not by what it should say).
    pub fn reply<R: Request>(&mut self, req: &R) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match req.read_reply(self, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => Err(format!(
                "{e}; reply so far {}; buffered {}",
                show(&out),
                show(self.buffered())
            )),
        }
    }
}

/// The `n`th space-separated token of a reply line, as a number.
pub fn token(line: &[u8], n: usize) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    text.split(' ').nth(n)?.parse().ok()
}
