//! HTTP/1.1 framing for the admin API: one request parsed from the front of a connection's
//! buffer (with `httparse`), and responses rendered into its output buffer.
//!
//! Parsing is stateless: the head is parsed again from the buffer's start each time more bytes
//! arrive. A head is at most 8 KiB, so that costs nothing worth a state machine, and it means a
//! connection's only parse state is its buffer.

use std::time::Duration;

/// Largest request head (request line and headers) accepted; over it, 431 and close.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body accepted (by `Content-Length`); over it, 413 and close.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most header lines in a head; more is 431 like an oversized head.
const MAX_HEADERS: usize = 64;

/// The limits one admin server enforces on its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head, in bytes.
    pub max_head: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How long a started request (head and body) may take to arrive; 408 and close after.
    pub request_timeout: Duration,
    /// How long a request head may take to arrive: from the accept for a new connection, from
    /// its first byte on a kept-alive one. Over it, a connection that sent nothing is closed and
    /// one that sent part of a head gets 408: a silent or slow client cannot sit on a slot.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit with no request before it is closed (and how
    /// long a client that does not read its responses may stall them).
    pub idle_timeout: Duration,
    /// How long a connection being closed keeps reading (and discarding) what the client still
    /// sends, so that closing with unread data (a TCP reset) cannot destroy the final response
    /// before the client has read it.
    pub linger: Duration,
    /// Most connections open at once; the next ones are answered 503 and closed.
    pub max_connections: usize,
}

impl Limits {
    /// The documented limits, with the timeouts and `max_connections` from the config.
    pub fn new(
        request_timeout: Duration,
        header_timeout: Duration,
        max_connections: usize,
    ) -> Limits {
        Limits {
            max_head: MAX_HEAD,
            max_body: MAX_BODY,
            request_timeout,
            header_timeout,
            idle_timeout: Duration::from_secs(60),
            linger: Duration::from_secs(2),
            max_connections,
        }
    }
}

/// One complete request, borrowed from the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The path of the request target, without its query string.
    pub path: &'a str,
    /// The value of the `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The body (empty without `Content-Length`).
    pub body: &'a [u8],
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 (whose keep-alive must be confirmed in the response).
    pub http10: bool,
}

/// A request whose head has arrived and whose body has not: enough to refuse it early.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method as sent.
    pub method: &'a str,
    /// The path of the request target, without its query string.
    pub path: &'a str,
    /// The value of the `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The body length its `Content-Length` announces (0 without one).
    pub content_length: usize,
    /// The head's length in bytes: the body starts there.
    pub head_len: usize,
}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole request yet. `expects_continue`: the head is complete and asks for
    /// `100 Continue` before sending its body.
    Incomplete {
        /// The client waits for `100 Continue` before it sends the body.
        expects_continue: bool,
        /// The head, once it is whole and only the body is missing.
        head: Option<Head<'a>>,
    },
    /// A whole request, and how many bytes of the buffer it took.
    Complete(Request<'a>, usize),
    /// A request that is refused before it is complete: answer `status` and close.
    Reject(u16, &'static str),
}

/// Parses the request at the front of `buf` under `limits`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head => {
            return Parsed::Reject(431, "request head too large")
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            return Parsed::Reject(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => {
            return Parsed::Incomplete {
                expects_continue: false,
                head: None,
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(431, "too many header lines")
        }
        Err(_) => return Parsed::Reject(400, "malformed request"),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(400, "malformed request");
    };
    let http10 = version == 0;
    let mut content_length: Option<usize> = None;
    let mut authorization = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expects_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return Parsed::Reject(400, "bad Content-Length");
            };
            // Two different lengths are how requests are smuggled past proxies: refuse.
            if content_length.is_some_and(|c| c != n) {
                return Parsed::Reject(400, "conflicting Content-Length headers");
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Reject(411, "chunked or other transfer codings are not supported");
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    if !target.starts_with('/') {
        return Parsed::Reject(400, "the request target must be a path");
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Parsed::Reject(413, "request body too large");
    }
    let Some(end) = head_len.checked_add(body_len) else {
        return Parsed::Reject(413, "request body too large");
    };
    let Some(body) = buf.get(head_len..end) else {
        return Parsed::Incomplete {
            // HTTP/1.0 clients do not know 100 Continue.
            expects_continue: expects_continue && !http10,
            head: Some(Head {
                method,
                path,
                authorization,
                content_length: body_len,
                head_len,
            }),
        };
    };
    let keep_alive = if http10 {
        keep_alive_token && !close
    } else {
        !close
    };
    Parsed::Complete(
        Request {
            method,
            path,
            authorization,
            body,
            keep_alive,
            http10,
        },
        end,
    )
}

/// A `Content-Length` value: ASCII digits only (no sign, no spaces inside), at most what fits.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    crate::protocol::decimal::parse_usize(value.trim_ascii())
}

/// `text/plain` with its charset, the type of every plain answer.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `application/json`.
pub const JSON: &str = "application/json";
/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One response, before it is rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Headers besides Content-Type, Content-Length and Connection.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Close the connection after this response, whatever the request asked.
    pub close: bool,
}

impl Response {
    /// A response with `body` of type `content_type`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            close: false,
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, TEXT, body)
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, JSON, body)
    }

    /// `{"error": message}` with `status`.
    pub fn json_error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::json(status, body)
    }

    /// The answer to a request refused while being read: `status`, a one-line reason, close.
    pub fn reject(status: u16, reason: &str) -> Response {
        let mut r = Response::text(status, format!("{reason}\n"));
        r.close = true;
        r
    }

    /// This response with one more header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the response to `out`: the head always, the body unless `head_only` (a HEAD
    /// request, whose Content-Length is still the GET body's). `keep_alive` is whether the
    /// connection stays open; an HTTP/1.0 client is told so explicitly.
    pub fn render(&self, out: &mut Vec<u8>, head_only: bool, keep_alive: bool, http10: bool) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim response that tells a client waiting on `Expect: 100-continue` to send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of every status the admin API sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(Duration::from_secs(10), Duration::from_secs(2), 64)
    }

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, &limits()) {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn rejected(buf: &[u8]) -> u16 {
        match parse(buf, &limits()) {
            Parsed::Reject(status, _) => status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_simple_get() {
        let buf = b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let (r, n) = complete(buf);
        assert_eq!(n, buf.len() - "GET /next".len());
        assert_eq!((r.method, r.path), ("GET", "/health"));
        assert!(r.keep_alive && !r.http10);
        assert_eq!(r.body, b"");
        assert_eq!(r.authorization, None);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |buf: &[u8]| complete(buf).0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn bodies_by_content_length() {
        let (r, n) = complete(b"POST /warm HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET");
        assert_eq!((r.body, n), (&b"hello"[..], 47));
        // No Content-Length: an empty body, and the next bytes are the next request.
        let (r, n) = complete(b"POST /warm HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!((r.body, n), (&b""[..], 23));
        assert_eq!(
            parse(
                b"POST /warm HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel",
                &limits()
            ),
            Parsed::Incomplete {
                expects_continue: false,
                head: Some(Head {
                    method: "POST",
                    path: "/warm",
                    authorization: None,
                    content_length: 5,
                    head_len: 42,
                })
            }
        );
        assert_eq!(
            parse(
                b"POST /warm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                &limits()
            ),
            Parsed::Incomplete {
                expects_continue: true,
                head: Some(Head {
                    method: "POST",
                    path: "/warm",
                    authorization: None,
                    content_length: 5,
                    head_len: 64,
                })
            }
        );
        let same = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(complete(same).0.body, b"x");
    }

    #[test]
    fn limits_and_malformed_requests() {
        assert_eq!(rejected(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET / HTTP/2.0\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        let over = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(rejected(over.as_bytes()), 413);
        let at = format!("POST / HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        assert!(matches!(
            parse(at.as_bytes(), &limits()),
            Parsed::Incomplete { .. }
        ));
    }

    #[test]
    fn the_head_limit() {
        let mut partial = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        partial.resize(MAX_HEAD, b'a');
        assert!(matches!(
            parse(&partial, &limits()),
            Parsed::Incomplete { .. }
        ));
        partial.push(b'a');
        assert_eq!(rejected(&partial), 431);
        // A complete head over the limit, read in one go, is refused too.
        let mut whole = partial.clone();
        whole.extend_from_slice(b"\r\n\r\n");
        assert_eq!(rejected(&whole), 431);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(rejected(&many), 431);
    }

    #[test]
    fn rendering() {
        let mut out = Vec::new();
        Response::text(200, "ok\n")
            .header("Allow", "GET")
            .render(&mut out, false, true, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 3\r\nAllow: GET\r\n\r\nok\n"
        );
        out.clear();
        Response::json(404, "{}").render(&mut out, true, false, false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        Response::text(200, "").render(&mut out, false, true, true);
        assert!(out.ends_with(b"Connection: keep-alive\r\n\r\n"));
        let e = Response::json_error(409, "say \"no\"");
        assert_eq!(e.body, br#"{"error":"say \"no\""}"#);
    }
}
