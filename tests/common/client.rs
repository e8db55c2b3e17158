//! A blocking memcached text-protocol client for tests. Every read times out (5 s by default),
//! and every failure panics with what was expected and what arrived.

use super::IO_TIMEOUT;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One `VALUE` block of a retrieval reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub flags: u32,
    pub data: Vec<u8>,
    pub cas: Option<u64>,
}

pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr` ("host:port"); panics if that fails within the I/O timeout.
    pub fn connect(addr: &str) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// Connects to `addr`; the error is returned (e.g. to assert a refused connection).
    /// True when a proxy or memcached on `addr` accepts a connection and answers a `get` of
    /// a missing key with a well-formed retrieval reply (a readiness probe).
    pub fn answers_get(addr: &str) -> bool {
        let Ok(mut client) = Client::try_connect(addr) else {
            return false;
        };
        if client.try_send(b"get __ready__\r\n").is_err() {
            return false;
        }
        client.read_values().is_ok()
    }

    pub fn try_connect(addr: &str) -> io::Result<Client> {
        let sockaddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let stream = TcpStream::connect_timeout(&sockaddr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(Client {
            addr: sockaddr,
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            timeout: IO_TIMEOUT,
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.addr
    }

    /// The underlying socket (for shutdown, local_addr, socket options).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Changes the read timeout of later reads.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    /// Writes all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            panic!("sending {} to {}: {e}", show(bytes), self.addr);
        }
    }

    /// Writes all of `bytes`; the error is returned (the peer may have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Half-closes the connection (no more requests; replies can still be read).
    pub fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Write);
    }

    /// Reads one line, checks it ends with `\r\n`, and returns it with the `\r\n`.
    pub fn read_line_raw(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("{} closed the connection; expected a reply line", self.addr),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => panic!(
                "timed out after {:?} reading a line from {} (partial: {})",
                self.timeout,
                self.addr,
                show(&line)
            ),
            Err(e) => panic!(
                "reading a line from {}: {e} (partial: {})",
                self.addr,
                show(&line)
            ),
        }
        if !line.ends_with(b"\r\n") {
            panic!(
                "{} sent a line not ending in \\r\\n (connection closed mid-line?): {}",
                self.addr,
                show(&line)
            );
        }
        line
    }

    /// Reads one line and returns it without its `\r\n`.
    pub fn read_line(&mut self) -> String {
        let mut line = self.read_line_raw();
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap_or_else(|e| panic!("reply line is not UTF-8: {e}"))
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        let mut got = 0;
        while got < n {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => panic!(
                    "{} closed the connection after {got} of {n} bytes: {}",
                    self.addr,
                    show(&buf[..got])
                ),
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => panic!(
                    "timed out after {:?} with {got} of {n} bytes from {}: {}",
                    self.timeout,
                    self.addr,
                    show(&buf[..got])
                ),
                Err(e) => panic!("reading {n} bytes from {}: {e}", self.addr),
            }
        }
        buf
    }

    /// Reads a retrieval reply: `VALUE` blocks up to `END`, or a single other line (an error).
    /// Returns the raw bytes, line endings included.
    pub fn read_reply_retrieval(&mut self) -> Vec<u8> {
        let (raw, _) = self.read_retrieval();
        raw
    }

    /// Reads a retrieval reply and parses it; `Err(line)` if it was not `VALUE`s + `END`.
    pub fn read_values(&mut self) -> Result<Vec<Item>, String> {
        self.read_retrieval().1
    }

    fn read_retrieval(&mut self) -> (Vec<u8>, Result<Vec<Item>, String>) {
        let mut raw = Vec::new();
        let mut items = Vec::new();
        loop {
            let line = self.read_line_raw();
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            if text == "END" {
                return (raw, Ok(items));
            }
            let Some(header) = parse_value_header(&text) else {
                return (raw, Err(text));
            };
            let (key, flags, len, cas) = header;
            let mut data = self.read_exact(len + 2);
            raw.extend_from_slice(&data);
            if !data.ends_with(b"\r\n") {
                panic!(
                    "data block of {key:?} from {} not followed by \\r\\n: {}",
                    self.addr,
                    show(&data)
                );
            }
            data.truncate(len);
            items.push(Item {
                key,
                flags,
                data,
                cas,
            });
        }
    }

    /// Sends `req` and returns the one-line reply, `\r\n` included (e.g. `b"STORED\r\n"`).
    pub fn request(&mut self, req: &[u8]) -> Vec<u8> {
        self.send(req);
        self.read_line_raw()
    }

    /// `set` and return the reply line without `\r\n` ("STORED", or an error).
    pub fn set(&mut self, key: &str, value: &[u8], flags: u32, exptime: u32) -> String {
        self.store("set", key, value, flags, exptime)
    }

    /// Any storage command (`set add replace append prepend`); returns the reply line.
    pub fn store(
        &mut self,
        cmd: &str,
        key: &str,
        value: &[u8],
        flags: u32,
        exptime: u32,
    ) -> String {
        let mut req = format!("{cmd} {key} {flags} {exptime} {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        self.send(&req);
        self.read_line()
    }

    /// `get key`: the value, or `None` on a miss. Panics on an error reply or another key.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.get_item("get", key).map(|item| item.data)
    }

    /// `gets key`: the value and its CAS unique, or `None` on a miss.
    pub fn gets(&mut self, key: &str) -> Option<(Vec<u8>, u64)> {
        self.get_item("gets", key).map(|item| {
            let cas = item
                .cas
                .unwrap_or_else(|| panic!("gets {key}: VALUE without a cas unique"));
            (item.data, cas)
        })
    }

    fn get_item(&mut self, cmd: &str, key: &str) -> Option<Item> {
        let mut items = self.retrieve(cmd, &[key]);
        if items.len() > 1 {
            panic!(
                "{cmd} {key}: {} VALUE blocks for one key: {items:?}",
                items.len()
            );
        }
        items.pop().map(|(_, item)| item)
    }

    /// `get k1 k2 ...`: the hits as (key, value), in reply order.
    pub fn get_multi(&mut self, keys: &[&str]) -> Vec<(String, Vec<u8>)> {
        self.retrieve("get", keys)
            .into_iter()
            .map(|(key, item)| (key, item.data))
            .collect()
    }

    fn retrieve(&mut self, cmd: &str, keys: &[&str]) -> Vec<(String, Item)> {
        self.send(format!("{cmd} {}\r\n", keys.join(" ")).as_bytes());
        let items = self
            .read_values()
            .unwrap_or_else(|line| panic!("{cmd} {keys:?}: error reply {line:?}"));
        for item in &items {
            if !keys.contains(&item.key.as_str()) {
                panic!("{cmd} {keys:?}: reply has a key that was not asked: {item:?}");
            }
        }
        items
            .into_iter()
            .map(|item| (item.key.clone(), item))
            .collect()
    }

    /// `delete key`; returns the reply line ("DELETED", "NOT_FOUND", ...).
    pub fn delete(&mut self, key: &str) -> String {
        self.send(format!("delete {key}\r\n").as_bytes());
        self.read_line()
    }

    /// `version`; returns the reply line ("VERSION ...").
    pub fn version(&mut self) -> String {
        self.send(b"version\r\n");
        self.read_line()
    }

    /// Every `STAT name value` of a `stats` reply on this connection (the proxy's or a
    /// memcached's). Panics on a line that is not a STAT line.
    pub fn stats(&mut self) -> std::collections::HashMap<String, String> {
        self.send(b"stats\r\n");
        let mut out = std::collections::HashMap::new();
        loop {
            let line = self.read_line();
            if line == "END" {
                return out;
            }
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("STAT"), Some(name), Some(value)) => {
                    out.insert(name.to_string(), value.to_string());
                }
                _ => panic!("unexpected line in a stats reply: {line:?}"),
            }
        }
    }

    /// One numeric counter of `stats`, read on this connection (a new connection would be
    /// counted by connection caps). Panics when it is missing or not a number.
    pub fn stat(&mut self, name: &str) -> u64 {
        let all = self.stats();
        let value = all
            .get(name)
            .unwrap_or_else(|| panic!("stats has no {name}: {all:?}"));
        value
            .parse()
            .unwrap_or_else(|e| panic!("STAT {name} {value:?}: {e}"))
    }

    /// Asserts the peer closes the connection within the I/O timeout, sending nothing more.
    pub fn expect_closed(&mut self) {
        self.expect_closed_within(self.timeout);
    }

    /// Asserts the peer closes the connection within `deadline`, sending nothing more.
    /// A reset counts as closed.
    pub fn expect_closed_within(&mut self, deadline: Duration) {
        let buffered = self.reader.buffer().to_vec();
        if !buffered.is_empty() {
            panic!(
                "expected {} to close, but it sent {}",
                self.addr,
                show(&buffered)
            );
        }
        let mut buf = [0u8; 4096];
        let result = self.read_once(deadline, &mut buf);
        match result {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected {} to close, but it sent {}",
                self.addr,
                show(&buf[..n])
            ),
            Err(e) if is_timeout(&e) => {
                panic!(
                    "expected {} to close within {deadline:?}; it stayed open",
                    self.addr
                )
            }
            Err(e) if is_reset(&e) => {}
            Err(e) => panic!("expected {} to close; read failed: {e}", self.addr),
        }
    }

    /// Asserts nothing arrives for `wait` (e.g. after a `noreply` request); the connection must
    /// stay open.
    pub fn expect_no_reply(&mut self, wait: Duration) {
        let buffered = self.reader.buffer().to_vec();
        if !buffered.is_empty() {
            panic!(
                "expected silence from {}, but it sent {}",
                self.addr,
                show(&buffered)
            );
        }
        let mut buf = [0u8; 4096];
        match self.read_once(wait, &mut buf) {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!(
                "expected silence from {}, but it closed the connection",
                self.addr
            ),
            Ok(n) => panic!(
                "expected silence from {}, but it sent {}",
                self.addr,
                show(&buf[..n])
            ),
            Err(e) => panic!(
                "expected silence from {}, but reading failed: {e}",
                self.addr
            ),
        }
    }

    /// One read with a temporary timeout, bypassing the (empty) buffer.
    fn read_once(&mut self, timeout: Duration, buf: &mut [u8]) -> io::Result<usize> {
        let stream = self.reader.get_mut();
        stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let result = loop {
            match stream.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        stream.set_read_timeout(Some(self.timeout))?;
        result
    }
}

/// Parses `VALUE <key> <flags> <bytes> [<cas>]` into (key, flags, bytes, cas).
fn parse_value_header(line: &str) -> Option<(String, u32, usize, Option<u64>)> {
    let mut tokens = line.split(' ');
    if tokens.next()? != "VALUE" {
        return None;
    }
    let key = tokens.next()?.to_string();
    let flags = tokens.next()?.parse().ok()?;
    let len = tokens.next()?.parse().ok()?;
    let cas = match tokens.next() {
        Some(cas) => Some(cas.parse().ok()?),
        None => None,
    };
    if tokens.next().is_some() {
        return None;
    }
    Some((key, flags, len, cas))
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

/// Bytes for a panic message: escaped, and cut after 300 bytes.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("\"{}\"", cut.escape_ascii());
    if bytes.len() > MAX {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}
