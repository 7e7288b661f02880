//! The Infisical HTTP client: base URL rules, TLS (rustls, built-in roots plus
//! `--ca-cert`), timeouts, the retry loop, and reading bodies into zeroizing
//! memory. The calls themselves live in `auth.rs` (login, renew, revoke) and
//! `secrets.rs` (project slug, secret listing).
//!
//! Every request is bounded by the caller's deadline; transient failures (429,
//! 5xx, connection errors, timeouts) are retried with the program's one backoff
//! policy (`retry.rs`); everything else fails at once with a typed error.

pub mod auth;
pub mod error;
pub mod secrets;
mod url;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::RequestBuilder;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use auth::AccessToken;
pub use error::{AuthMethod, InfisicalError, ServerError};
pub use secrets::{ApiVersion, Etags, FetchOutcome, FetchSpec, Fetched, PathSummary, ProjectRef};
pub use url::ApiUrl;

use crate::error::chain;
use crate::retry::{self, Backoff, Stop};

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
    /// Extra PEM bundle trusted for the server, in addition to the built-in roots.
    pub ca_cert: Option<PathBuf>,
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
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            user_agent: concat!("svid-exec/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// An Infisical client. Cheap to share by reference; holds one connection pool.
#[derive(Debug)]
pub struct Client {
    /// Origin (plus any path prefix), no trailing slash.
    base: String,
    http: reqwest::Client,
    request_timeout: Duration,
    backoff: Backoff,
    /// Set once `/api/v4/secrets` answered 404: the server is too old; v3 from then on.
    use_v3: AtomicBool,
}

impl Client {
    /// A client for `options.api_url` (validated by [`ApiUrl`]); loads
    /// `--ca-cert` in addition to the built-in roots.
    pub fn new(options: &ClientOptions) -> Result<Self, InfisicalError> {
        let builder = |native_roots: bool| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_webpki_certs(true)
                .tls_built_in_native_certs(native_roots)
                .connect_timeout(options.connect_timeout)
                .user_agent(options.user_agent.clone())
                // Credentials are never replayed to wherever a redirect points.
                .redirect(reqwest::redirect::Policy::none())
        };
        let extra = match &options.ca_cert {
            Some(path) => load_ca(path)?,
            None => Vec::new(),
        };
        let with_extra = |mut b: reqwest::ClientBuilder| {
            for cert in &extra {
                b = b.add_root_certificate(cert.clone());
            }
            b
        };
        let http = match with_extra(builder(true)).build() {
            Ok(c) => c,
            Err(e) => {
                // A broken system bundle must not stop us reaching a public server:
                // the built-in webpki roots (and --ca-cert) still apply.
                tracing::warn!(error = %chain(&e), "ignoring the system CA bundle, which could not be loaded");
                with_extra(builder(false))
                    .build()
                    .map_err(|e| InfisicalError::HttpClient(chain(&e)))?
            }
        };
        let base = options.api_url.base().to_owned();
        Ok(Self {
            base,
            http,
            request_timeout: options.request_timeout,
            backoff: Backoff::DEFAULT,
            use_v3: AtomicBool::new(false),
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
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
        let mut response = request
            .timeout(bound)
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
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
        #[allow(
            clippy::cast_possible_truncation,
            reason = "bounded by MAX_BODY_BYTES above"
        )]
        let mut body = Zeroizing::new(Vec::with_capacity(expected as usize));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if !push_zeroizing(&mut body, &chunk, MAX_BODY_BYTES) {
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
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    endpoint: &str,
    body: &[u8],
) -> Result<T, InfisicalError> {
    serde_json::from_slice(body).map_err(|e| InfisicalError::BadResponse {
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
    })
}

fn load_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, InfisicalError> {
    let bad = |reason: String| InfisicalError::CaCert {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(chain(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// Sorts a transport failure: a certificate problem (not worth retrying, hint
/// `--ca-cert`) or a network problem (retried). The whole chain is kept: rustls
/// names the certificate problem only in the innermost cause.
fn transport_error(endpoint: &str, err: &reqwest::Error) -> InfisicalError {
    let text = chain(err);
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
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::InvalidCertRevocationList(_)
            );
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
    false
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
