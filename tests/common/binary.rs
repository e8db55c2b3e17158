//! A blocking client of memcached's binary protocol for tests: request frames built from their
//! parts (or from a raw header, for frames that are not well formed), response frames parsed
//! whole. Every read times out (5 s), and every failure panics with what was expected and what
//! arrived. It speaks to bifrost and to a real memcached alike (memcached serves binary on the
//! same port as text).

use super::{show, IO_TIMEOUT};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A request frame's first byte.
pub const REQUEST_MAGIC: u8 = 0x80;
/// A response frame's first byte.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// The header's length.
pub const HEADER_LEN: usize = 24;

/// The opcodes.
pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const DELETEQ: u8 = 0x14;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
}

/// The response status codes.
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const KEY_NOT_FOUND: u16 = 0x0001;
    pub const KEY_EXISTS: u16 = 0x0002;
    pub const VALUE_TOO_LARGE: u16 = 0x0003;
    pub const INVALID_ARGUMENTS: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const NON_NUMERIC: u16 = 0x0006;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const NOT_SUPPORTED: u16 = 0x0083;
    pub const TEMPORARY_FAILURE: u16 = 0x0086;
}

/// A request header with the given lengths, whether or not they add up (for malformed frames).
pub fn header(
    opcode: u8,
    key_len: u16,
    extras_len: u8,
    body_len: u32,
    opaque: u32,
    cas: u64,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = REQUEST_MAGIC;
    h[1] = opcode;
    h[2..4].copy_from_slice(&key_len.to_be_bytes());
    h[4] = extras_len;
    h[8..12].copy_from_slice(&body_len.to_be_bytes());
    h[12..16].copy_from_slice(&opaque.to_be_bytes());
    h[16..24].copy_from_slice(&cas.to_be_bytes());
    h
}

/// A well-formed request frame of its parts.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub opcode: u8,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub opaque: u32,
    pub cas: u64,
}

impl Request {
    pub fn new(opcode: u8) -> Request {
        Request {
            opcode,
            ..Request::default()
        }
    }

    pub fn key(mut self, key: &[u8]) -> Request {
        self.key = key.to_vec();
        self
    }

    pub fn extras(mut self, extras: &[u8]) -> Request {
        self.extras = extras.to_vec();
        self
    }

    pub fn value(mut self, value: &[u8]) -> Request {
        self.value = value.to_vec();
        self
    }

    pub fn opaque(mut self, opaque: u32) -> Request {
        self.opaque = opaque;
        self
    }

    pub fn cas(mut self, cas: u64) -> Request {
        self.cas = cas;
        self
    }

    /// The frame's bytes: header, extras, key, value.
    pub fn encode(&self) -> Vec<u8> {
        let key_len = u16::try_from(self.key.len()).expect("key under 64 KiB");
        let extras_len = u8::try_from(self.extras.len()).expect("extras under 256 bytes");
        let body = self.extras.len() + self.key.len() + self.value.len();
        let body_len = u32::try_from(body).expect("body under 4 GiB");
        let mut out = header(
            self.opcode,
            key_len,
            extras_len,
            body_len,
            self.opaque,
            self.cas,
        )
        .to_vec();
        out.extend_from_slice(&self.extras);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        out
    }
}

/// The extras of Set/Add/Replace: flags and expiration.
pub fn store_extras(flags: u32, exptime: u32) -> Vec<u8> {
    [flags.to_be_bytes(), exptime.to_be_bytes()].concat()
}

/// The extras of Increment/Decrement: delta, initial value and expiration (0xffffffff: do not
/// create a missing counter).
pub fn counter_extras(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&delta.to_be_bytes());
    out.extend_from_slice(&initial.to_be_bytes());
    out.extend_from_slice(&exptime.to_be_bytes());
    out
}

/// The extras of Touch/GAT: expiration.
pub fn exptime_extras(exptime: u32) -> Vec<u8> {
    exptime.to_be_bytes().to_vec()
}

/// A response frame, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub opcode: u8,
    pub status: u16,
    pub datatype: u8,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Response {{ opcode: {:#04x}, status: {:#06x}, opaque: {:#x}, cas: {}, extras: {}, \
             key: {}, value: {} }}",
            self.opcode,
            self.status,
            self.opaque,
            self.cas,
            show(&self.extras),
            show(&self.key),
            show(&self.value)
        )
    }
}

impl Response {
    /// The flags of a get's response (its 4 bytes of extras).
    #[track_caller]
    pub fn flags(&self) -> u32 {
        let bytes: [u8; 4] = self
            .extras
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("expected 4 bytes of flags in the extras of {self:?}"));
        u32::from_be_bytes(bytes)
    }

    /// The counter of an Increment/Decrement response (its 8-byte value).
    #[track_caller]
    pub fn counter(&self) -> u64 {
        let bytes: [u8; 8] = self
            .value
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("expected an 8-byte counter as the value of {self:?}"));
        u64::from_be_bytes(bytes)
    }

    /// Asserts the status is `want`, showing the whole response when it is not.
    #[track_caller]
    pub fn expect_status(&self, want: u16, what: &str) -> &Response {
        assert_eq!(
            self.status, want,
            "{what}: expected status {want:#06x}, got {self:?}"
        );
        self
    }
}

/// A blocking binary-protocol client.
pub struct BinaryClient {
    addr: SocketAddr,
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    timeout: Duration,
    next_opaque: u32,
}

impl BinaryClient {
    /// Connects to `addr` ("host:port"); panics if that fails within the I/O timeout.
    pub fn connect(addr: &str) -> BinaryClient {
        BinaryClient::try_connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: &str) -> io::Result<BinaryClient> {
        let sockaddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let stream = TcpStream::connect_timeout(&sockaddr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(BinaryClient {
            addr: sockaddr,
            stream,
            buf: Vec::new(),
            timeout: IO_TIMEOUT,
            // Opaques that stand out in a dump, different on every request.
            next_opaque: 0x0bad_0000,
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.addr
    }

    /// A fresh opaque, never handed out before on this client.
    pub fn opaque(&mut self) -> u32 {
        self.next_opaque = self.next_opaque.wrapping_add(0x0101);
        self.next_opaque
    }

    /// Writes all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            panic!("sending {} to {}: {e}", show(bytes), self.addr);
        }
    }

    /// Writes all of `bytes`; the error is returned (the peer may have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads until `n` bytes are buffered; panics on close or timeout.
    fn fill(&mut self, n: usize) {
        let mut chunk = [0u8; 64 * 1024];
        while self.buf.len() < n {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "{} closed the connection with {} of {n} bytes of a response: {}",
                    self.addr,
                    self.buf.len(),
                    show(&self.buf)
                ),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => panic!(
                    "timed out after {:?} with {} of {n} bytes of a response from {}: {}",
                    self.timeout,
                    self.buf.len(),
                    self.addr,
                    show(&self.buf)
                ),
                Err(e) => panic!("reading a response from {}: {e}", self.addr),
            }
        }
    }

    /// Reads one whole response frame.
    pub fn read_response(&mut self) -> Response {
        self.fill(HEADER_LEN);
        let h = &self.buf[..HEADER_LEN];
        assert_eq!(
            h[0],
            RESPONSE_MAGIC,
            "{} sent a frame without the response magic: {}",
            self.addr,
            show(&self.buf)
        );
        let key_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let extras_len = usize::from(h[4]);
        let body_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        assert!(
            key_len + extras_len <= body_len,
            "{} sent a header whose key ({key_len}) and extras ({extras_len}) exceed its body \
             ({body_len}): {}",
            self.addr,
            show(h)
        );
        let mut cas = [0u8; 8];
        cas.copy_from_slice(&h[16..24]);
        let (opcode, datatype) = (h[1], h[5]);
        let status = u16::from_be_bytes([h[6], h[7]]);
        let opaque = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        self.fill(HEADER_LEN + body_len);
        let frame: Vec<u8> = self.buf.drain(..HEADER_LEN + body_len).collect();
        let body = &frame[HEADER_LEN..];
        Response {
            opcode,
            status,
            datatype,
            opaque,
            cas: u64::from_be_bytes(cas),
            extras: body[..extras_len].to_vec(),
            key: body[extras_len..extras_len + key_len].to_vec(),
            value: body[extras_len + key_len..].to_vec(),
        }
    }

    /// Sends `req` with a fresh opaque and reads its response, which must echo the opcode and
    /// the opaque.
    #[track_caller]
    pub fn call(&mut self, req: Request) -> Response {
        let opaque = self.opaque();
        let req = req.opaque(opaque);
        self.send(&req.encode());
        let resp = self.read_response();
        assert_eq!(
            (resp.opcode, resp.opaque),
            (req.opcode, opaque),
            "the response to opcode {:#04x} key {} must echo its opcode and opaque {opaque:#x}: \
             {resp:?}",
            req.opcode,
            show(&req.key)
        );
        resp
    }

    /// Set (`cas` 0: unconditional).
    #[track_caller]
    pub fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: u32,
        cas: u64,
    ) -> Response {
        self.store(op::SET, key, value, flags, exptime, cas)
    }

    /// Set, Add or Replace.
    #[track_caller]
    pub fn store(
        &mut self,
        opcode: u8,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: u32,
        cas: u64,
    ) -> Response {
        self.call(
            Request::new(opcode)
                .key(key)
                .extras(&store_extras(flags, exptime))
                .value(value)
                .cas(cas),
        )
    }

    /// Set that must succeed; returns the CAS it answered.
    #[track_caller]
    pub fn set_ok(&mut self, key: &[u8], value: &[u8]) -> u64 {
        let resp = self.set(key, value, 0, 0, 0);
        resp.expect_status(status::OK, &format!("set {}", show(key)));
        resp.cas
    }

    /// Get (or GetK, GetQ... with `opcode`).
    #[track_caller]
    pub fn get_with(&mut self, opcode: u8, key: &[u8]) -> Response {
        self.call(Request::new(opcode).key(key))
    }

    /// The value of `key` (Get), `None` on a miss; panics on any other status.
    #[track_caller]
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let resp = self.get_with(op::GET, key);
        match resp.status {
            status::OK => Some(resp.value),
            status::KEY_NOT_FOUND => None,
            _ => panic!("get {}: {resp:?}", show(key)),
        }
    }

    /// Delete.
    #[track_caller]
    pub fn delete(&mut self, key: &[u8]) -> Response {
        self.call(Request::new(op::DELETE).key(key))
    }

    /// Increment or Decrement (by `opcode`).
    #[track_caller]
    pub fn counter(
        &mut self,
        opcode: u8,
        key: &[u8],
        delta: u64,
        initial: u64,
        exptime: u32,
    ) -> Response {
        self.call(
            Request::new(opcode)
                .key(key)
                .extras(&counter_extras(delta, initial, exptime)),
        )
    }

    /// Asserts the peer closes the connection within the I/O timeout, sending nothing more.
    /// A reset counts as closed.
    pub fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "expected {} to close, but it sent {}",
            self.addr,
            show(&self.buf)
        );
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected {} to close, but it sent {}",
                self.addr,
                show(&chunk[..n])
            ),
            Err(e) if is_timeout(&e) => panic!(
                "expected {} to close within {:?}; it stayed open",
                self.addr, self.timeout
            ),
            Err(e) if is_reset(&e) => {}
            Err(e) => panic!("expected {} to close; read failed: {e}", self.addr),
        }
    }

    /// Asserts nothing arrives for `wait`; the connection must stay open.
    pub fn expect_no_reply(&mut self, wait: Duration) {
        assert!(
            self.buf.is_empty(),
            "expected silence from {}, but it sent {}",
            self.addr,
            show(&self.buf)
        );
        self.stream
            .set_read_timeout(Some(wait))
            .expect("set_read_timeout");
        let mut chunk = [0u8; 4096];
        let result = self.stream.read(&mut chunk);
        self.stream
            .set_read_timeout(Some(self.timeout))
            .expect("set_read_timeout");
        match result {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!(
                "expected silence from {}, but it closed the connection",
                self.addr
            ),
            Ok(n) => panic!(
                "expected silence from {}, but it sent {}",
                self.addr,
                show(&chunk[..n])
            ),
            Err(e) => panic!("expected silence from {}; reading failed: {e}", self.addr),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}
