//! The admin API's endpoints: which path and method does what, and which status it answers.

use super::auth::bearer_matches;
use super::http::{Head, Request, Response, PROMETHEUS};
use super::AdminApi;
use crate::warming::WarmError;

/// The endpoints, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Health,
    Ready,
    Metrics,
    Stats,
    Warm,
    WarmJob(u64),
}

impl Endpoint {
    /// The endpoint at `path`; `None` for an unknown path (including `/warm/<not a number>`).
    fn of(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/health" => Endpoint::Health,
            "/ready" => Endpoint::Ready,
            "/metrics" => Endpoint::Metrics,
            "/stats" => Endpoint::Stats,
            "/warm" => Endpoint::Warm,
            _ => {
                let id = path.strip_prefix("/warm/")?;
                // Digits only: u64's parser would also take a leading '+'.
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Endpoint::WarmJob(id.parse().ok()?)
            }
        })
    }

    /// The methods the endpoint answers, for `Allow` (HEAD is answered wherever GET is).
    fn allow(self) -> &'static str {
        match self {
            Endpoint::Warm => "GET, HEAD, POST",
            Endpoint::WarmJob(_) => "GET, HEAD, DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// The refusal a request gets whatever its body: an unknown path (404), a method its endpoint
/// does not take (405), a body announced for an endpoint that takes none (413, and close), a
/// missing or wrong token where one is needed (401); `None` when it may go on. The server asks
/// this as soon as a head is whole, so a request that will be refused never makes it hold a
/// body of megabytes first: only a `POST /warm` carrying the token has its body read.
pub fn refusal(token: Option<&str>, head: &Head) -> Option<Response> {
    let Some(endpoint) = Endpoint::of(head.path) else {
        return Some(Response::text(
            404,
            format!("no such endpoint: {}\n", head.path),
        ));
    };
    let method = match head.method {
        "HEAD" => "GET",
        m => m,
    };
    let (allowed, changes) = match (endpoint, method) {
        (_, "GET") => (true, false),
        (Endpoint::Warm, "POST") | (Endpoint::WarmJob(_), "DELETE") => (true, true),
        _ => (false, false),
    };
    if !allowed {
        return Some(
            Response::text(
                405,
                format!("{} {} is not allowed\n", head.method, head.path),
            )
            .header("Allow", endpoint.allow()),
        );
    }
    let takes_body = matches!((endpoint, method), (Endpoint::Warm, "POST"));
    if head.content_length > 0 && !takes_body {
        // Refused from the head, and the connection closed rather than the body read and
        // thrown away: a GET announcing megabytes is no honest client.
        let mut r = Response::text(
            413,
            format!("{} {} takes no request body\n", head.method, head.path),
        );
        r.close = true;
        return Some(r);
    }
    if changes && token.is_some_and(|t| !bearer_matches(head.authorization, t.as_bytes())) {
        return Some(
            Response::json_error(401, "this endpoint needs Authorization: Bearer <token>")
                .header("WWW-Authenticate", "Bearer realm=\"bifrost\""),
        );
    }
    None
}

/// The response to `req`. `token` is the configured bearer token, required by the methods that
/// change something (POST, DELETE); GETs stay open, as monitoring needs them. HEAD is answered
/// as GET (the caller leaves the body out).
pub fn route(api: &dyn AdminApi, token: Option<&str>, req: &Request) -> Response {
    let head = Head {
        method: req.method,
        path: req.path,
        authorization: req.authorization,
        content_length: req.body.len(),
        head_len: 0,
    };
    if let Some(refused) = refusal(token, &head) {
        return refused;
    }
    let Some(endpoint) = Endpoint::of(req.path) else {
        return Response::text(404, format!("no such endpoint: {}\n", req.path));
    };
    let method = match req.method {
        "HEAD" => "GET",
        m => m,
    };
    match (endpoint, method) {
        (Endpoint::Health, "GET") => Response::text(200, "ok\n"),
        (Endpoint::Ready, "GET") => match api.ready() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(routes) => {
                let mut body = String::new();
                for r in routes {
                    body.push_str(&r);
                    body.push('\n');
                }
                Response::text(503, body)
            }
        },
        (Endpoint::Metrics, "GET") => Response::new(200, PROMETHEUS, api.metrics()),
        (Endpoint::Stats, "GET") => Response::json(200, api.stats()),
        (Endpoint::Warm, "GET") => Response::json(200, api.warm_list()),
        (Endpoint::Warm, "POST") => match api.warm_start(req.body) {
            Ok(id) => Response::json(202, serde_json::json!({ "id": id }).to_string()),
            Err(e) => warm_error(e),
        },
        (Endpoint::WarmJob(id), "GET") => match api.warm_status(id) {
            Some(status) => Response::json(200, status),
            None => warm_error(WarmError::NotFound),
        },
        (Endpoint::WarmJob(id), "DELETE") => match api.warm_cancel(id) {
            // The job's status after the cancel, so the caller sees where it stopped.
            Ok(()) => match api.warm_status(id) {
                Some(status) => Response::json(200, status),
                None => Response::json(200, serde_json::json!({ "id": id }).to_string()),
            },
            Err(e) => warm_error(e),
        },
        _ => Response::text(405, format!("{} {} is not allowed\n", req.method, req.path))
            .header("Allow", endpoint.allow()),
    }
}

/// The status and `{"error": ...}` body of a warming error.
fn warm_error(e: WarmError) -> Response {
    match e {
        WarmError::BadRequest(why) => Response::json_error(400, &why),
        WarmError::NotFound => Response::json_error(404, "no warming job with that id"),
        WarmError::Conflict(why) => Response::json_error(409, &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An API whose answers are set by the test, recording what it was asked.
    #[derive(Default)]
    struct Fake {
        not_ready: Vec<String>,
        start: Option<Result<u64, WarmError>>,
        cancelled: Mutex<Vec<u64>>,
        bodies: Mutex<Vec<Vec<u8>>>,
    }

    impl AdminApi for Fake {
        fn ready(&self) -> Result<(), Vec<String>> {
            if self.not_ready.is_empty() {
                Ok(())
            } else {
                Err(self.not_ready.clone())
            }
        }
        fn metrics(&self) -> String {
            "bifrost_up 1\n".into()
        }
        fn stats(&self) -> String {
            "{\"up\":1}".into()
        }
        fn warm_start(&self, body: &[u8]) -> Result<u64, WarmError> {
            if let Ok(mut b) = self.bodies.lock() {
                b.push(body.to_vec());
            }
            self.start.clone().unwrap_or(Ok(7))
        }
        fn warm_list(&self) -> String {
            "[]".into()
        }
        fn warm_status(&self, id: u64) -> Option<String> {
            (id == 7).then(|| "{\"id\":7,\"state\":\"running\"}".to_string())
        }
        fn warm_cancel(&self, id: u64) -> Result<(), WarmError> {
            if id != 7 {
                return Err(WarmError::NotFound);
            }
            if let Ok(mut c) = self.cancelled.lock() {
                c.push(id);
            }
            Ok(())
        }
    }

    fn req<'a>(
        method: &'a str,
        path: &'a str,
        auth: Option<&'a [u8]>,
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            method,
            path,
            authorization: auth,
            body,
            keep_alive: true,
            http10: false,
        }
    }

    fn call(api: &Fake, token: Option<&str>, method: &str, path: &str) -> Response {
        route(api, token, &req(method, path, None, b""))
    }

    #[test]
    fn reads() {
        let api = Fake::default();
        let r = call(&api, None, "GET", "/health");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
        let r = call(&api, None, "GET", "/ready");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ready\n"[..]));
        let r = call(&api, None, "GET", "/metrics");
        assert_eq!((r.status, r.content_type), (200, PROMETHEUS));
        let r = call(&api, None, "HEAD", "/stats");
        assert_eq!((r.status, r.content_type), (200, "application/json"));
        assert_eq!(
            r.body, b"{\"up\":1}",
            "HEAD computes the GET body (the caller drops it)"
        );
        let r = call(&api, None, "GET", "/warm");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
        assert_eq!(call(&api, None, "GET", "/warm/7").status, 200);
        assert_eq!(call(&api, None, "GET", "/warm/8").status, 404);
    }

    #[test]
    fn not_ready_names_each_route_on_a_line() {
        let api = Fake {
            not_ready: vec!["sessions".into(), "rest".into()],
            ..Fake::default()
        };
        let r = call(&api, None, "GET", "/ready");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (503, &b"sessions\nrest\n"[..])
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        let api = Fake::default();
        for path in [
            "/",
            "/nope",
            "/health/",
            "/warm/",
            "/warm/x",
            "/warm/+7",
            "/warm/7/x",
        ] {
            assert_eq!(call(&api, None, "GET", path).status, 404, "{path}");
        }
        let r = call(&api, None, "POST", "/health");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, [("Allow", "GET, HEAD".to_string())]);
        let r = call(&api, None, "PUT", "/warm");
        assert_eq!(r.headers, [("Allow", "GET, HEAD, POST".to_string())]);
        let r = call(&api, None, "POST", "/warm/7");
        assert_eq!(r.headers, [("Allow", "GET, HEAD, DELETE".to_string())]);
        assert_eq!(
            call(&api, None, "get", "/health").status,
            405,
            "methods are case-sensitive"
        );
    }

    #[test]
    fn warm_results_map_to_statuses() {
        let api = Fake::default();
        let r = route(&api, None, &req("POST", "/warm", None, b"{\"keys\":[]}"));
        assert_eq!((r.status, r.body.as_slice()), (202, &b"{\"id\":7}"[..]));
        assert_eq!(
            *api.bodies.lock().expect("lock"),
            [b"{\"keys\":[]}".to_vec()]
        );
        for (err, status) in [
            (WarmError::BadRequest("no \"from\"".into()), 400),
            (WarmError::Conflict("busy".into()), 409),
        ] {
            let api = Fake {
                start: Some(Err(err)),
                ..Fake::default()
            };
            let r = call(&api, None, "POST", "/warm");
            assert_eq!(r.status, status);
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
            assert!(v["error"].is_string(), "{v}");
        }
        let r = call(&api, None, "DELETE", "/warm/7");
        assert_eq!(r.status, 200);
        assert_eq!(*api.cancelled.lock().expect("lock"), [7]);
        assert_eq!(call(&api, None, "DELETE", "/warm/9").status, 404);
    }

    #[test]
    fn a_head_alone_decides_every_refusal() {
        let head = |method, path, authorization| Head {
            method,
            path,
            authorization,
            content_length: 0,
            head_len: 40,
        };
        let with_body = |method, path, authorization| Head {
            content_length: 4 << 20,
            ..head(method, path, authorization)
        };
        let status = |token, h: Head| refusal(token, &h).map(|r| r.status);
        let right = Some(&b"Bearer t"[..]);
        assert_eq!(status(None, head("GET", "/nope", None)), Some(404));
        assert_eq!(status(None, head("PUT", "/warm", None)), Some(405));
        assert_eq!(status(None, head("POST", "/health", None)), Some(405));
        assert_eq!(status(Some("t"), head("POST", "/warm", None)), Some(401));
        assert_eq!(
            status(Some("t"), head("DELETE", "/warm/3", None)),
            Some(401)
        );
        assert_eq!(status(Some("t"), head("POST", "/warm", right)), None);
        assert_eq!(status(None, head("POST", "/warm", None)), None);
        assert_eq!(status(Some("t"), head("HEAD", "/metrics", None)), None);
        assert_eq!(status(Some("t"), head("GET", "/warm/3", None)), None);
        // A body is only for POST /warm with the token: anywhere else, refused from the head
        // and the connection closed; without the token, 401 before the body is read.
        for (method, path) in [
            ("GET", "/health"),
            ("HEAD", "/ready"),
            ("GET", "/metrics"),
            ("GET", "/warm"),
            ("DELETE", "/warm/3"),
        ] {
            let r = refusal(Some("t"), &with_body(method, path, right));
            assert_eq!(r.as_ref().map(|r| (r.status, r.close)), Some((413, true)));
            assert_eq!(status(None, with_body(method, path, None)), Some(413));
        }
        assert_eq!(
            status(Some("t"), with_body("POST", "/warm", None)),
            Some(401)
        );
        assert_eq!(status(Some("t"), with_body("POST", "/warm", right)), None);
        // Through route too (a GET whose body arrived with its head): 413 and close.
        let api = Fake::default();
        let r = route(&api, None, &req("GET", "/health", None, b"x"));
        assert_eq!((r.status, r.close), (413, true));
    }

    #[test]
    fn a_token_guards_post_and_delete_only() {
        let api = Fake::default();
        let token = Some("s3cret");
        for (method, path) in [("POST", "/warm"), ("DELETE", "/warm/7")] {
            for auth in [None, Some(&b"Bearer wrong"[..]), Some(b"Basic s3cret")] {
                let r = route(&api, token, &req(method, path, auth, b""));
                assert_eq!(r.status, 401, "{method} {path} {auth:?}");
                assert!(
                    r.headers
                        .iter()
                        .any(|(n, v)| *n == "WWW-Authenticate" && v.starts_with("Bearer")),
                    "{:?}",
                    r.headers
                );
            }
            let r = route(&api, token, &req(method, path, Some(b"Bearer s3cret"), b""));
            assert!(r.status < 300, "{method} {path}: {}", r.status);
        }
        assert!(
            api.cancelled.lock().expect("lock").len() == 1,
            "only the authorised cancel ran"
        );
        for path in [
            "/health", "/ready", "/metrics", "/stats", "/warm", "/warm/7",
        ] {
            assert_eq!(call(&api, token, "GET", path).status, 200, "{path}");
        }
        // An unknown path is 404 and a wrong method 405 before any token is asked for.
        assert_eq!(call(&api, token, "POST", "/nope").status, 404);
        assert_eq!(call(&api, token, "POST", "/health").status, 405);
    }
}
