//! Test knobs applied in one middleware around every route: injected faults
//! (statuses, 429s, garbage / truncated / huge bodies, dropped connections,
//! latency), per-minute rate limits per route class, a total rate limit over
//! any window (load tests), `ETag` / `If-None-Match`
//! (after the handler ran, so a 304 still costs a token use, as on the real
//! server), and the request log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::{req_id, ApiError};
use super::tokens::now_ms;

/// What an injected fault does to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 "Rate limit exceeded. Please try again in N seconds"; with `header`,
    /// also a `Retry-After: N` header (otherwise the wait is only in the message).
    RateLimited {
        /// N.
        retry_after_secs: u64,
        /// Send `Retry-After`.
        header: bool,
    },
    /// This status without running the handler: 500 with the server's JSON
    /// error body; 502/503/504 with a proxy's HTML page; others with a JSON body.
    Status(u16),
    /// The handler runs, then the answer is 200 with a body that is not JSON.
    GarbageBody,
    /// The handler runs, then only the first half of its body is sent (with a
    /// matching `Content-Length`: the HTTP exchange completes, the JSON does not).
    TruncatedBody,
    /// The handler runs, then headers and half the body are sent and the
    /// connection is dropped (the client sees an I/O error mid-body).
    DropConnection,
    /// Waits this long, then serves normally.
    Latency(Duration),
    /// 200 with a JSON content type and a chunked body of this many bytes
    /// (no `Content-Length`: the client must enforce its own cap while
    /// reading). Generated lazily, so the stand-in's memory stays small.
    HugeBody(u64),
    /// This status with a JSON error whose message quotes pieces of the
    /// credential the request carried (the Bearer token, else the body's `jwt`
    /// or `accessToken`): its first 20 characters, its second and its third
    /// `.`-separated segment. A careless or hostile server, for scrubbing tests.
    EchoCredential(u16),
    /// The handler runs, then every field of this name in its JSON answer, at
    /// any depth, becomes `null` (`secretValue`, `accessToken`): a server bug.
    NullField(String),
}

/// Route classes of the server's rate limiter (§4.3). `/api/status` is exempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    /// Secrets list and read endpoints.
    Secrets,
    /// Other GETs.
    Read,
    /// POSTs, including logins, renew and revoke.
    Write,
}

impl RateClass {
    fn of(method: &Method, path: &str) -> Option<Self> {
        if path == "/api/status" {
            None
        } else if path.starts_with("/api/v4/secrets") || path.starts_with("/api/v3/secrets") {
            Some(Self::Secrets)
        } else if method == Method::GET {
            Some(Self::Read)
        } else {
            Some(Self::Write)
        }
    }
}

/// One served request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string (empty if none).
    pub query: String,
    /// The status sent (for a dropped connection, the status whose body was cut).
    pub status: u16,
    /// Whether an `Authorization` header was present.
    pub authorization_present: bool,
    /// When the request arrived (load tests: the herd's spread over time).
    pub at: std::time::SystemTime,
}

/// The state of a rate-limit window after counting one request.
#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
    over: bool,
}

impl Window {
    /// `@fastify/rate-limit`'s headers, on every answer of a limited class.
    fn headers(self, headers: &mut axum::http::HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_secs));
    }
}

#[derive(Debug)]
struct Rule {
    route: String,
    remaining: u32,
    fault: Fault,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<Rule>,
    limits: HashMap<RateClass, (u32, u64, u32)>,
    /// Over every limited class together: (limit, window ms, window start, count).
    total: Option<(u32, u64, u64, u32)>,
    pub(crate) log: Vec<RequestRecord>,
}

fn route_matches(route: &str, path: &str) -> bool {
    route
        .strip_suffix('*')
        .map_or(route == path, |prefix| path.starts_with(prefix))
}

impl Faults {
    pub(crate) fn add(&mut self, route: &str, n: u32, fault: Fault) {
        if n > 0 {
            self.rules.push(Rule {
                route: route.to_string(),
                remaining: n,
                fault,
            });
        }
    }

    pub(crate) fn set_rate_limit(&mut self, class: RateClass, per_minute: Option<u32>) {
        match per_minute {
            Some(limit) => {
                self.limits.insert(class, (limit, now_ms(), 0));
            }
            None => {
                self.limits.remove(&class);
            }
        }
    }

    pub(crate) fn set_total_rate_limit(&mut self, limit: Option<(u32, Duration)>) {
        self.total = limit.map(|(limit, window)| {
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
            (limit, window_ms, now_ms(), 0)
        });
    }

    /// Counts a request against the total limit (when set).
    fn count_total(&mut self) -> Option<Window> {
        let (limit, window_ms, start, count) = self.total.as_mut()?;
        let now = now_ms();
        if now >= *start + *window_ms {
            *start = now;
            *count = 0;
        }
        *count += 1;
        Some(Window {
            limit: *limit,
            remaining: limit.saturating_sub(*count),
            reset_secs: (*start + *window_ms - now).div_ceil(1000),
            over: *count > *limit,
        })
    }

    fn take(&mut self, path: &str) -> Option<Fault> {
        let rule = self
            .rules
            .iter_mut()
            .find(|r| r.remaining > 0 && route_matches(&r.route, path))?;
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        self.rules.retain(|r| r.remaining > 0);
        Some(fault)
    }

    /// Counts a request against its class (when limited).
    fn count(&mut self, class: RateClass) -> Option<Window> {
        let (limit, start, count) = self.limits.get_mut(&class)?;
        let now = now_ms();
        if now >= *start + 60_000 {
            *start = now;
            *count = 0;
        }
        *count += 1;
        Some(Window {
            limit: *limit,
            remaining: limit.saturating_sub(*count),
            reset_secs: (*start + 60_000 - now).div_ceil(1000),
            over: *count > *limit,
        })
    }
}

fn too_many(seconds: u64, retry_after_header: bool) -> Response {
    let body = json!({
        "reqId": req_id(),
        "statusCode": 429,
        "message": format!("Rate limit exceeded. Please try again in {seconds} seconds"),
        "error": "RateLimitExceeded",
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if retry_after_header {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn huge_body(bytes: u64) -> Response {
    const CHUNK_LEN: usize = 64 * 1024;
    static CHUNK: [u8; CHUNK_LEN] = [b' '; CHUNK_LEN];
    let chunks = bytes.div_ceil(CHUNK_LEN as u64);
    let last =
        usize::try_from(bytes - (chunks.saturating_sub(1)) * CHUNK_LEN as u64).unwrap_or(CHUNK_LEN);
    let stream = tokio_stream::iter((0..chunks).map(move |i| {
        let len = if i + 1 == chunks { last } else { CHUNK_LEN };
        Ok::<_, std::io::Error>(Bytes::from_static(&CHUNK[..len]))
    }));
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn status_fault(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        429 => too_many(60, false),
        500 => ApiError::internal().into_response(),
        502..=504 => {
            let reason = code.canonical_reason().unwrap_or("Error");
            let html = format!(
                "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
            );
            (code, [(header::CONTENT_TYPE, "text/html")], html).into_response()
        }
        _ => (
            code,
            axum::Json(json!({
                "reqId": req_id(), "statusCode": status,
                "message": code.canonical_reason().unwrap_or("Error"),
                "error": code.canonical_reason().unwrap_or("Error"),
            })),
        )
            .into_response(),
    }
}

fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    format!("\"{hex}\"")
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

async fn mangle(response: Response, fault: &Fault) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    match fault {
        Fault::NullField(name) => {
            fn null(value: &mut serde_json::Value, name: &str) {
                match value {
                    serde_json::Value::Object(map) => {
                        for (k, v) in map.iter_mut() {
                            if k == name {
                                *v = serde_json::Value::Null;
                            } else {
                                null(v, name);
                            }
                        }
                    }
                    serde_json::Value::Array(items) => {
                        for v in items.iter_mut() {
                            null(v, name);
                        }
                    }
                    _ => {}
                }
            }
            let mut value: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            null(&mut value, name);
            let body = serde_json::to_vec(&value).expect("JSON");
            parts.headers.remove(header::ETAG);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            Response::from_parts(parts, Body::from(body))
        }
        Fault::GarbageBody => {
            parts.status = StatusCode::OK;
            parts.headers.remove(header::ETAG);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            let garbage = Bytes::from_static(b"\x00\xff<html>upstream garbage{{{ not json");
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(garbage.len()));
            Response::from_parts(parts, Body::from(garbage))
        }
        Fault::TruncatedBody => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
            Response::from_parts(parts, Body::from(half))
        }
        _ => {
            parts.headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(bytes.len().max(2)),
            );
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "testkit: dropped",
                )),
            ];
            Response::from_parts(parts, Body::from_stream(tokio_stream::iter(chunks)))
        }
    }
}

/// The answer of [`Fault::EchoCredential`].
async fn echo_credential(request: Request, status: u16) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string());
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let from_body = || {
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v.get("jwt")
            .or_else(|| v.get("accessToken"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
    };
    let credential = bearer.or_else(from_body).unwrap_or_default();
    let head: String = credential.chars().take(20).collect();
    let segments: Vec<&str> = credential.split('.').collect();
    let message = format!(
        "rejected token starting {head}... (payload {}, signature {})",
        segments.get(1).unwrap_or(&""),
        segments.get(2).unwrap_or(&"")
    );
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(json!({
            "reqId": req_id(), "statusCode": status, "message": message,
            "error": code.canonical_reason().unwrap_or("Error"),
        })),
    )
        .into_response()
}

/// The middleware.
pub(crate) async fn layer(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    let at = std::time::SystemTime::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let authorization_present = request.headers().contains_key(header::AUTHORIZATION);
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Every request is logged with the status it was answered.
    let record = |response: &Response| RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        status: response.status().as_u16(),
        authorization_present,
        at,
    };

    let fault = state.lock().faults.take(&path);
    if let Some(Fault::EchoCredential(status)) = fault {
        let response = echo_credential(request, status).await;
        state.lock().faults.log.push(record(&response));
        return response;
    }
    let mut early = None;
    let mut post = None;
    match fault {
        Some(Fault::RateLimited {
            retry_after_secs,
            header,
        }) => early = Some(too_many(retry_after_secs, header)),
        Some(Fault::Status(status)) => early = Some(status_fault(status)),
        Some(Fault::HugeBody(bytes)) => early = Some(huge_body(bytes)),
        Some(Fault::Latency(d)) => tokio::time::sleep(d).await,
        Some(other) => post = Some(other),
        None => {}
    }
    let mut window = None;
    if early.is_none() {
        if let Some(class) = RateClass::of(&method, &path) {
            let mut inner = state.lock();
            window = inner.faults.count(class);
            let total = inner.faults.count_total();
            drop(inner);
            if let Some(w) = window.filter(|w| w.over).or(total.filter(|w| w.over)) {
                early = Some(too_many(w.reset_secs, true));
            }
            window = window.or(total);
        }
    }
    let mut response = if let Some(r) = early {
        r
    } else {
        let response = next.run(request).await;
        if method == Method::GET && response.status() == StatusCode::OK {
            let (mut parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let etag = etag_of(&bytes);
            parts
                .headers
                .insert(header::ETAG, HeaderValue::from_str(&etag).expect("etag"));
            if if_none_match.is_some_and(|inm| etag_matches(&inm, &etag)) {
                parts.status = StatusCode::NOT_MODIFIED;
                parts.headers.remove(header::CONTENT_LENGTH);
                parts.headers.remove(header::CONTENT_TYPE);
                Response::from_parts(parts, Body::empty())
            } else {
                Response::from_parts(parts, Body::from(bytes))
            }
        } else {
            response
        }
    };
    if let Some(w) = window {
        w.headers(response.headers_mut());
    }
    if let Some(fault) = post {
        response = mangle(response, &fault).await;
    }
    state.lock().faults.log.push(record(&response));
    response
}
