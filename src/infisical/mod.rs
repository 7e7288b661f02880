//! The Infisical HTTP client: TLS (rustls, `trust.rs`), the route requests
//! take (`transport.rs`), timeouts, the retry loop, and reading bodies into
//! zeroizing memory. The base URL is validated once, as an [`ApiUrl`]
//! (`url.rs`). The calls themselves live in `auth.rs` (login, renew, revoke)
//! and `secrets.rs` (project slug, secret listing).
//!
//! Every request is bounded by the caller's deadline; transient failures (429,
//! 5xx, connection errors, timeouts) are retried with the program's one backoff
//! policy (`retry.rs`); everything else fails at once with a typed error.

pub mod auth;
pub mod error;
mod listing;
mod secret_json;
pub mod secrets;
mod transport;
mod trust;
mod url;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::RequestBuilder;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use auth::AccessToken;
pub use error::{AuthMethod, InfisicalError, ServerError};
pub use secrets::{ApiVersion, Etags, FetchOutcome, FetchSpec, Fetched, PathSummary, ProjectRef};
pub use url::ApiUrl;

use crate::error::chain;
use crate::retry::{self, Backoff, Stop};
use listing::ListingStream;
use transport::{LoopbackOnly, NotLoopback, ProxyChoice};

/// The contract's default `--api-url`.
pub const DEFAULT_API_URL: &str = "https://app.infisical.com";

/// Largest response body read. A secrets listing has no pagination, but 64 MiB
/// is far beyond any real project; above it the server or a proxy is misbehaving.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// TCP + TLS connect bound per attempt: a host that does not even answer the
/// handshake in 10 s is retried (with backoff) rather than waited on.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on one request, body included, per attempt (also cut at the caller's
/// deadline): a stuck server or proxy is abandoned and the request retried.
/// Generous, because a large recursive listing with imports can take seconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach Infisical.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The instance, validated (plain `http://` to a remote host only if allowed there).
    pub api_url: ApiUrl,
    /// Extra PEM bundle trusted for the server, in addition to the built-in
    /// and system roots.
    pub ca_cert: Option<PathBuf>,
    /// Trust only `ca_cert` (`--ca-cert-only`): not the built-in or system roots.
    pub ca_cert_only: bool,
    /// TCP + TLS connect bound ([`CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Bound on one request, body included ([`REQUEST_TIMEOUT`]; also capped by the caller's deadline).
    pub request_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            api_url: ApiUrl::default(),
            ca_cert: None,
            ca_cert_only: false,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            user_agent: concat!("svid-exec/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// An Infisical client. Cheap to share by reference; holds one connection pool.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    request_timeout: Duration,
    backoff: Backoff,
    /// Set once `/api/v4/secrets` answered 404: the server is too old; v3 from then on.
    use_v3: AtomicBool,
    /// The instance: its origin (plus any path prefix) for every request,
    /// its scheme, host and port for the scheme probe.
    url: ApiUrl,
    /// Requests go through a proxy (the port cannot be probed directly).
    proxied: bool,
    /// Plain HTTP only to addresses that are all loopback.
    loopback_only: bool,
    /// Set once the port was probed for a scheme mismatch (at most once).
    probed: AtomicBool,
}

impl Client {
    /// A client for `options.api_url` (validated by [`ApiUrl`]; plain
    /// `http://` to a name reaches only the loopback addresses it resolves to,
    /// checked at every connection); chooses the proxy (https only); trusts
    /// the built-in roots, `--ca-cert` and, when needed, the system's roots
    /// (`trust.rs`).
    pub fn new(options: &ClientOptions) -> Result<Self, InfisicalError> {
        let url = options.api_url.clone();
        let loopback_only = url.checks_resolved_loopback();
        let proxy = transport::choose_proxy(&url, &|name| std::env::var(name).ok())
            .map_err(InfisicalError::Proxy)?;
        let proxy = match proxy {
            ProxyChoice::Via { url: proxy, from } => {
                tracing::info!(
                    proxy = %transport::without_credentials(&proxy),
                    from,
                    "connecting to Infisical through a proxy"
                );
                Some(
                    reqwest::Proxy::all(proxy.as_str())
                        .map_err(|e| InfisicalError::Proxy(format!("{from}: {}", chain(&e))))?,
                )
            }
            ProxyChoice::Direct { note } => {
                if let Some(note) = note {
                    tracing::info!("{note}");
                }
                None
            }
        };
        let tls = trust::client_config(options.ca_cert.as_deref(), options.ca_cert_only)?;
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent.clone())
            // Credentials are never replayed to wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            // Only the proxy chosen above, never reqwest's own reading of the
            // environment (which would proxy plain http too).
            .no_proxy()
            // No idle expiry: with one, hyper's pool runs a timer that wakes an
            // idle supervisor every 90 s. A connection the server closes is
            // dropped when it closes; one that silently dies is found by TCP
            // keepalive (kernel probes, no wake-up of ours) and then dropped;
            // a poll never waits on a dead one.
            .pool_idle_timeout(None)
            .tcp_keepalive(Some(Duration::from_secs(15)));
        if let Some(proxy) = proxy.clone() {
            builder = builder.proxy(proxy);
        }
        if loopback_only {
            builder = builder.dns_resolver(Arc::new(LoopbackOnly));
        }
        let http = builder
            .build()
            .map_err(|e| InfisicalError::HttpClient(chain(&e)))?;
        Ok(Self {
            http,
            request_timeout: options.request_timeout,
            backoff: Backoff::DEFAULT,
            use_v3: AtomicBool::new(false),
            proxied: proxy.is_some(),
            loopback_only,
            url,
            probed: AtomicBool::new(false),
        })
    }

    /// The same client with another backoff (tests, the supervisor).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The normalised origin, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.url.base()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url.base())
    }

    /// Runs `attempt` with retries of transient errors until `deadline`.
    async fn with_retry<T, F, Fut>(
        &self,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, InfisicalError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, InfisicalError>>,
    {
        let started = Instant::now();
        let mut retries = 0u32;
        let result = retry::retry_until(
            &self.backoff,
            deadline,
            self.request_timeout,
            |bound| attempt(bound.max(Duration::from_millis(1))),
            |err, wait| {
                retries += 1;
                tracing::warn!(retry = retries, retry_in = ?wait, "{err}; retrying");
                crate::notify::status(&format!("{err}; retrying"));
            },
        )
        .await;
        result.map_err(|stop| match stop {
            Stop::Fatal(e) => e,
            Stop::Deadline(e) => InfisicalError::GaveUp {
                waited: retry::to_millis(started.elapsed()),
                last: Box::new(e),
            },
        })
    }

    /// Sends one request bounded by `bound` and reads the whole body into zeroizing
    /// memory. 429 and 5xx become [`InfisicalError::Busy`] (retried by `with_retry`);
    /// `scrub` are the credentials sent, removed from any server message kept.
    async fn send(
        &self,
        request: RequestBuilder,
        endpoint: &str,
        bound: Duration,
        scrub: &[&str],
    ) -> Result<Reply, InfisicalError> {
        self.send_to(request, endpoint, bound, scrub, None).await
    }

    /// [`Client::send`], but a `200`'s body goes to `listing` as it arrives
    /// (the reply's body is then empty): a listing is never held whole.
    async fn send_to(
        &self,
        request: RequestBuilder,
        endpoint: &str,
        bound: Duration,
        scrub: &[&str],
        listing: Option<&Mutex<ListingStream>>,
    ) -> Result<Reply, InfisicalError> {
        let mut response = match request.timeout(bound).send().await {
            Ok(response) => response,
            Err(e) => {
                let err = transport_error(endpoint, &e);
                if may_be_wrong_scheme(&e) {
                    if let Some(wrong) = self.probe_scheme().await {
                        return Err(wrong);
                    }
                }
                return Err(err);
            }
        };
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            // Scrubbed like a message: a redirect can carry a credential in its query.
            let location = error::tidy(
                response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
                scrub,
            );
            return Err(InfisicalError::Redirect {
                endpoint: endpoint.to_owned(),
                status,
                location,
            });
        }
        let headers = response.headers().clone();
        let too_large = || InfisicalError::TooLarge {
            endpoint: endpoint.to_owned(),
            limit: MAX_BODY_BYTES,
        };
        let expected = response.content_length().unwrap_or(0);
        if expected > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
        let listing = listing.filter(|_| status == 200);
        if let Some(listing) = listing {
            // A retried request starts over.
            lock(listing).reset();
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "bounded by MAX_BODY_BYTES above"
        )]
        let mut body = Zeroizing::new(Vec::with_capacity(if listing.is_some() {
            0
        } else {
            expected as usize
        }));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if let Some(listing) = listing {
                        let mut listing = lock(listing);
                        if listing.len + chunk.len() > MAX_BODY_BYTES {
                            return Err(too_large());
                        }
                        listing.feed(&chunk);
                    } else if !push_zeroizing(&mut body, &chunk, MAX_BODY_BYTES) {
                        return Err(too_large());
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(transport_error(endpoint, &e)),
            }
        }
        let reply = Reply {
            status,
            headers,
            body,
        };
        if status == 429 || status >= 500 {
            let server = reply.server_error(scrub);
            return Err(error::status_error(
                error::Call::Authenticated,
                endpoint,
                server,
                reply.retry_after(),
            ));
        }
        Ok(reply)
    }
}

impl Client {
    /// When a request failed after reaching the port: does the port speak the
    /// other scheme (TLS to `http://`, plain HTTP to `https://`)? Asked once,
    /// with a plain `GET /` that carries nothing; not through a proxy.
    async fn probe_scheme(&self) -> Option<InfisicalError> {
        if self.proxied || self.probed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let url = self.url.url();
        let host = url.host_str()?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default()?;
        let ips: Vec<std::net::IpAddr> = if let Ok(ip) = bare.parse() {
            vec![ip]
        } else if self.loopback_only {
            transport::resolve_loopback(bare).await.ok()?
        } else {
            tokio::net::lookup_host((bare, port))
                .await
                .ok()?
                .map(|a| a.ip())
                .collect()
        };
        let addrs: Vec<std::net::SocketAddr> = ips
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, port))
            .collect();
        let speaks = transport::probe(&addrs).await?;
        let (wanted, what) = match (url.scheme(), speaks) {
            ("http", transport::Speaks::Tls) => ("https", "TLS"),
            ("https", transport::Speaks::PlainHttp) => ("http", "plain HTTP"),
            _ => return None,
        };
        let mut suggestion = url.clone();
        let _ = suggestion.set_scheme(wanted);
        // Same port: it is the port that speaks the other scheme.
        let _ = suggestion.set_port(Some(port));
        Some(InfisicalError::WrongScheme {
            url: self.url.base().to_owned(),
            speaks: what,
            suggestion: suggestion.as_str().trim_end_matches('/').to_owned(),
        })
    }
}

/// Whether a failed request reached a port that may speak the other scheme:
/// not a refused connection, not a timeout, not a certificate problem.
fn may_be_wrong_scheme(err: &reqwest::Error) -> bool {
    if err.is_timeout() || is_certificate_error(err) {
        return false;
    }
    let refused = find_in_chain::<std::io::Error>(err).is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
        )
    });
    !refused && find_in_chain::<NotLoopback>(err).is_none()
}

/// One HTTP answer, body in zeroizing memory.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

impl Reply {
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(error::parse_retry_after)
    }

    pub(crate) fn server_error(&self, scrub: &[&str]) -> ServerError {
        ServerError::decode(self.status, &self.body, scrub)
    }
}

/// A buffer whose one copy is wiped when the last reference to it drops.
///
/// Request bodies and the `Authorization` header are built into one exactly
/// sized zeroizing buffer and handed to reqwest as a shared `Bytes` of it: every
/// retry reuses the same memory (no `to_vec()` per attempt, no `format!`),
/// and the buffer is wiped once the request and our own handle are gone.
pub(crate) fn wiped_bytes(buf: Zeroizing<Vec<u8>>) -> bytes::Bytes {
    bytes::Bytes::from_owner(buf)
}

/// `Bearer <token>` as a sensitive header value in a wiped-on-drop buffer.
pub(crate) fn bearer(token: &secrecy::SecretString) -> Result<HeaderValue, InfisicalError> {
    use secrecy::ExposeSecret as _;
    let token = token.expose_secret().as_bytes();
    let mut buf = Zeroizing::new(Vec::with_capacity("Bearer ".len() + token.len()));
    buf.extend_from_slice(b"Bearer ");
    buf.extend_from_slice(token);
    let mut value = HeaderValue::from_maybe_shared(wiped_bytes(buf)).map_err(|_| {
        InfisicalError::BadSecret {
            endpoint: "the access token".to_owned(),
            key: "accessToken".to_owned(),
            why: "holds characters an HTTP header cannot carry",
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A JSON request body serialised once into an exactly sized zeroizing buffer
/// (a growing `Vec` would leave a copy behind at every reallocation).
pub(crate) fn json_body<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    /// Counts what serialisation would write, keeping none of it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising plain strings and options cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    let mut buf = Zeroizing::new(Vec::with_capacity(count.0));
    let _ = serde_json::to_writer(&mut *buf, value);
    debug_assert_eq!(buf.len(), buf.capacity());
    wiped_bytes(buf)
}

/// The listing parser of a request (one attempt at a time uses it; a panic
/// while it was held leaves nothing to protect).
fn lock(listing: &Mutex<ListingStream>) -> MutexGuard<'_, ListingStream> {
    listing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends `chunk`, growing into a fresh zeroizing buffer (never `realloc`, which
/// would leave an unwiped copy behind). `false` when `limit` would be exceeded.
fn push_zeroizing(buf: &mut Zeroizing<Vec<u8>>, chunk: &[u8], limit: usize) -> bool {
    let needed = buf.len() + chunk.len();
    if needed > limit {
        return false;
    }
    if buf.capacity() < needed {
        let capacity = needed.max(buf.capacity() * 2).min(limit);
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
        grown.extend_from_slice(buf);
        *buf = grown; // the old buffer is wiped as it drops
    }
    buf.extend_from_slice(chunk);
    true
}

/// Parses a JSON body; on failure names only where it failed, never the content
/// (serde's messages can quote values).
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(
    endpoint: &str,
    body: &'a [u8],
) -> Result<T, InfisicalError> {
    serde_json::from_slice(body).map_err(|e| json_error(endpoint, &e))
}

/// A JSON parse failure of `endpoint`'s answer, naming only where it failed.
pub(crate) fn json_error(endpoint: &str, e: &serde_json::Error) -> InfisicalError {
    InfisicalError::BadResponse {
        endpoint: endpoint.to_owned(),
        detail: match e.classify() {
            serde_json::error::Category::Eof => {
                format!("cut short at line {} column {}", e.line(), e.column())
            }
            serde_json::error::Category::Syntax => {
                format!("invalid JSON at line {} column {}", e.line(), e.column())
            }
            serde_json::error::Category::Data => {
                format!(
                    "unexpected JSON shape near line {} column {}",
                    e.line(),
                    e.column()
                )
            }
            serde_json::error::Category::Io => "read error".to_owned(),
        },
    }
}

/// Sorts a transport failure: a certificate problem (not worth retrying, hint
/// `--ca-cert`) or a network problem (retried). The whole chain is kept: rustls
/// names the certificate problem only in the innermost cause.
fn transport_error(endpoint: &str, err: &reqwest::Error) -> InfisicalError {
    let text = chain(err);
    if let Some(not) = find_in_chain::<NotLoopback>(err) {
        return InfisicalError::InsecureHttp {
            host: not.to_string(),
        };
    }
    if is_certificate_error(err) {
        InfisicalError::Tls {
            endpoint: endpoint.to_owned(),
            chain: text,
        }
    } else {
        InfisicalError::Network {
            endpoint: endpoint.to_owned(),
            chain: if err.is_timeout() {
                format!("timed out ({text})")
            } else {
                text
            },
        }
    }
}

/// Whether a `rustls::Error` about the peer's certificate or the handshake's
/// parameters is in the chain (such errors do not go away by retrying).
fn is_certificate_error(err: &(dyn std::error::Error + 'static)) -> bool {
    find_in_chain::<rustls::Error>(err).is_some_and(|tls| {
        matches!(
            tls,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::InvalidCertRevocationList(_)
        )
    })
}

/// The first error of type `T` in the cause chain of `err`.
fn find_in_chain<'e, T: std::error::Error + 'static>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        // An io::Error hides the error it wraps from `source()` (it returns that
        // error's own source), and wrappers nest: step into it explicitly.
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};

    #[test]
    fn client_base_has_no_trailing_slash() {
        let c = Client::new(&ClientOptions {
            api_url: "https://app.infisical.com/api/".parse().unwrap(),
            ..ClientOptions::default()
        })
        .unwrap();
        assert_eq!(c.base_url(), "https://app.infisical.com");
        assert_eq!(c.url("/api/status"), "https://app.infisical.com/api/status");
    }

    #[test]
    fn ca_cert_errors_are_config_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let opts = |p: &std::path::Path| ClientOptions {
            ca_cert: Some(p.to_owned()),
            ..ClientOptions::default()
        };
        let err = Client::new(&opts(&missing)).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(err.to_string().contains("ca.pem"), "{err}");
        std::fs::write(&missing, "not a pem").unwrap();
        let err = Client::new(&opts(&missing)).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config, "{err}");
    }

    #[test]
    fn bodies_and_bearer_headers_share_one_exact_buffer() {
        let body = json_body(&serde_json::json!({"jwt": "a.b.c", "q": "\"\n"}));
        assert_eq!(&body[..], br#"{"jwt":"a.b.c","q":"\"\n"}"#);
        let again = body.clone();
        assert_eq!(
            again.as_ptr(),
            body.as_ptr(),
            "a retry reuses the same memory"
        );
        let value = bearer(&secrecy::SecretString::from("tok-123")).unwrap();
        assert_eq!(value.as_bytes(), b"Bearer tok-123");
        assert!(value.is_sensitive());
        assert!(bearer(&secrecy::SecretString::from("bad\ntoken")).is_err());
    }

    #[test]
    fn zeroizing_buffer_grows_and_enforces_the_cap() {
        let mut buf = Zeroizing::new(Vec::new());
        for _ in 0..100 {
            assert!(push_zeroizing(&mut buf, b"0123456789", 1000));
        }
        assert_eq!(buf.len(), 1000);
        assert!(!push_zeroizing(&mut buf, b"x", 1000));
    }

    #[test]
    fn json_errors_never_quote_the_body() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            n: u32,
        }
        let err = parse_json::<S>("GET /x", br#"{"n":"hunter2"}"#).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("GET /x"));
        let err = parse_json::<S>("GET /x", b"<html>").unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Unavailable);
    }
}
