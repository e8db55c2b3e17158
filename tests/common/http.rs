//! A small blocking HTTP/1.1 client for the admin API: one keep-alive connection, requests
//! written whole, responses read by `Content-Length` (the admin API always sends it). Reads
//! time out after [`IO_TIMEOUT`](super::IO_TIMEOUT), so a server that does not answer fails
//! the test instead of hanging it.
//!
//! ```ignore
//! let mut http = HttpClient::connect(&admin_addr);
//! let r = http.request("GET", "/health", &[], b"");
//! assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::IO_TIMEOUT;

/// One response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for the answer to HEAD).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct HttpClient {
    stream: TcpStream,
    addr: String,
    /// Bytes read past the last response (the start of the next one).
    buffered: Vec<u8>,
}

impl HttpClient {
    /// Connects to `addr` ("host:port"); panics if it cannot.
    pub fn connect(addr: &str) -> HttpClient {
        HttpClient::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects to `addr`.
    pub fn try_connect(addr: &str) -> io::Result<HttpClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream,
            addr: addr.to_string(),
            buffered: Vec::new(),
        })
    }

    /// The socket, for tests that need to poke at it.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets the read timeout (default [`IO_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    /// Sends `method path` with `headers` and `body` (a Content-Length is added when the body
    /// is not empty) and reads the response; the body is not read for HEAD.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        self.send_raw(&request_bytes(&self.addr, method, path, headers, body));
        self.read_response_to(method)
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], b"")
    }

    /// Writes raw bytes (a partial request, several pipelined requests, garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.addr));
    }

    /// Writes raw bytes, returning the error.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads the next response, with a body (the answer to anything but HEAD).
    pub fn read_response(&mut self) -> HttpResponse {
        self.read_response_to("GET")
    }

    /// Reads the next response to a `method` request (HEAD's has no body).
    pub fn read_response_to(&mut self, method: &str) -> HttpResponse {
        self.try_read_response(method)
            .unwrap_or_else(|e| panic!("reading a response from {}: {e}", self.addr))
    }

    /// Reads the next response; an error if the connection ends or times out first.
    pub fn try_read_response(&mut self, method: &str) -> io::Result<HttpResponse> {
        let head_end = loop {
            if let Some(i) = find(&self.buffered, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        self.buffered.drain(..head_end);
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {head:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => Ok((n.to_string(), v.trim().to_string())),
                None => Err(bad("bad header line")),
            })
            .collect::<io::Result<_>>()?;
        let mut response = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 100 {
            // An interim answer: the real one follows.
            return self.try_read_response(method);
        }
        let length: usize = response
            .header("Content-Length")
            .ok_or_else(|| bad("no Content-Length"))?
            .parse()
            .map_err(|_| bad("bad Content-Length"))?;
        if method != "HEAD" {
            while self.buffered.len() < length {
                self.fill()?;
            }
            response.body = self.buffered.drain(..length).collect();
        }
        Ok(response)
    }

    /// Asserts the server closes the connection (EOF or reset) within the read timeout, with
    /// nothing more sent.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut rest = std::mem::take(&mut self.buffered);
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected {} to close the connection: {e}", self.addr),
        }
        assert!(
            rest.is_empty(),
            "expected a close, got more bytes: {}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Reads more bytes into the buffer; an error at EOF.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The bytes of one request: request line, Host, `headers`, Content-Length if there is a body.
pub fn request_bytes(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One `method path` on a connection of its own.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    HttpClient::connect(addr).request(method, path, headers, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
