//! Errors of the Infisical client: the server's error body decoded, every
//! status sorted into retry / re-authenticate / refuse / misconfigured, each
//! with its exit class and a hint of what to check.
//!
//! No variant carries the JWT, the access token or a secret value: server
//! messages are shortened and scrubbed of the credentials the client sent
//! before they are stored here.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ExitClass, Failure};
use crate::retry::Transient;

/// Longest server message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 400;

/// Infisical's error body: `{reqId, statusCode, message, error}` (message is an
/// array of issues for 422).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// HTTP status of the response.
    pub status: u16,
    /// Server request id, for the operator's logs.
    pub req_id: Option<String>,
    /// `message`, flattened to text and shortened.
    pub message: String,
    /// `error` (e.g. `TokenError`, `NotFound`, `Not Found`, `PermissionDenied`).
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct RawServerError {
    #[serde(rename = "reqId")]
    req_id: Option<String>,
    message: Option<serde_json::Value>,
    error: Option<String>,
}

impl ServerError {
    /// Decodes an error body; anything else becomes a message naming what came back.
    /// `scrub` are strings that must not appear in the result (the credentials sent).
    pub fn decode(status: u16, body: &[u8], scrub: &[&str]) -> Self {
        let (req_id, message, error) = match serde_json::from_slice::<RawServerError>(body) {
            Ok(raw) => (
                raw.req_id,
                raw.message.map(|m| flatten_message(&m)).unwrap_or_default(),
                raw.error,
            ),
            Err(_) if body.iter().all(u8::is_ascii_whitespace) => (None, String::new(), None),
            Err(_) => (
                None,
                "(the body is not Infisical's JSON error format)".to_owned(),
                None,
            ),
        };
        Self {
            status,
            req_id: req_id.map(|r| tidy(&r, scrub)),
            message: tidy(&message, scrub),
            error: error.map(|e| tidy(&e, scrub)),
        }
    }

    /// Whether a 404 is Infisical's own "not found" (`"error": "NotFound"`: an
    /// unknown identity, project, …) rather than a route nobody serves
    /// (fastify's `"Not Found"` with "Route … not found", a proxy's HTML page).
    pub fn is_resource_not_found(&self) -> bool {
        self.status == 404 && self.error.as_deref() == Some("NotFound")
    }

    /// Whether this is the server saying the access token itself is no good
    /// (401, or 403 `TokenError`): the cure is a fresh login.
    pub fn is_token_error(&self) -> bool {
        self.status == 401 || (self.status == 403 && self.error.as_deref() == Some("TokenError"))
    }

    /// The wait the server asked for in a 429 message ("…try again in N seconds").
    pub fn wait_in_message(&self) -> Option<Duration> {
        seconds_in_message(&self.message)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(e) = &self.error {
            write!(f, " {e}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(r) = &self.req_id {
            write!(f, " (reqId {r})")?;
        }
        Ok(())
    }
}

fn flatten_message(m: &serde_json::Value) -> String {
    match m {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                serde_json::Value::Object(o) => {
                    let msg = o
                        .get("message")
                        .and_then(|v| v.as_str())
                        .unwrap_or("invalid");
                    match o.get("path").and_then(|p| p.as_array()) {
                        Some(path) if !path.is_empty() => {
                            let path: Vec<String> = path
                                .iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                                .collect();
                            format!("{}: {msg}", path.join("."))
                        }
                        _ => msg.to_owned(),
                    }
                }
                other => flatten_message(other),
            })
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Shortest run of a credential's characters redacted wherever it appears in
/// server text: a truncated token, one JWT segment or a slice of one is as good
/// as a leak of the whole. 12 base64 characters are 72 bits: ordinary text does
/// not match by chance, and over-redacting an error message costs nothing.
const MIN_FRAGMENT: usize = 12;

/// Shortest credential (or JWT segment) redacted when it appears whole.
const MIN_WHOLE: usize = 8;

/// Removes credentials, control characters and excess length from server text.
pub(crate) fn tidy(text: &str, scrub: &[&str]) -> String {
    // Bounded before the scan: a hostile body can be 64 MiB of "message". What
    // the cut leaves of a credential at the far end is beyond what is shown.
    let text = match text.char_indices().nth(4 * MAX_MESSAGE_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    };
    let mut out: String = redact(text, scrub)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
    }
    out
}

/// `text` with every part of a credential in `scrub` replaced by `[redacted]`:
/// the whole credential, each of its `.`-separated segments (a JWT's header,
/// payload, signature) and any run of at least [`MIN_FRAGMENT`] bytes of it.
fn redact(text: &str, scrub: &[&str]) -> String {
    let bytes = text.as_bytes();
    let mut hidden = vec![false; bytes.len()];
    let mut mark = |needle: &[u8]| {
        let mut from = 0;
        while let Some(at) = find(&bytes[from..], needle) {
            hidden[from + at..from + at + needle.len()].fill(true);
            from += at + 1;
        }
    };
    for credential in scrub {
        let c = credential.as_bytes();
        for part in std::iter::once(c).chain(c.split(|b| *b == b'.')) {
            if part.len() >= MIN_WHOLE {
                mark(part);
            }
        }
    }
    // Fragments: every window of MIN_FRAGMENT bytes of the text that also
    // occurs in a credential (the union of such windows is what is hidden).
    let grams: std::collections::HashSet<&[u8]> = scrub
        .iter()
        .flat_map(|c| c.as_bytes().windows(MIN_FRAGMENT))
        .collect();
    if !grams.is_empty() {
        for (i, window) in bytes.windows(MIN_FRAGMENT).enumerate() {
            if grams.contains(window) {
                hidden[i..i + MIN_FRAGMENT].fill(true);
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (i, c) in text.char_indices() {
        // A character is hidden when any of its bytes is.
        if hidden[i..i + c.len_utf8()].iter().any(|h| *h) {
            if !in_run {
                out.push_str("[redacted]");
                in_run = true;
            }
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a `Retry-After` header in delta-seconds (the form rate limiters send).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Finds "in N second(s)" in a message ("Rate limit exceeded. Please try again in 12 seconds").
pub fn seconds_in_message(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("in ") {
        let after = &rest[i + 3..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && after[digits.len()..].trim_start().starts_with("second") {
            return digits.parse().ok().map(Duration::from_secs);
        }
        rest = after;
    }
    None
}

/// Which auth method a login used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `oidc-auth` (discovery URL + JWKS, issuer required).
    Oidc,
    /// `jwt-auth` (JWKS URL or static keys, no discovery).
    Jwt,
    /// `spiffe-auth` (native SPIFFE, trust bundle).
    Spiffe,
}

impl AuthMethod {
    /// The path segment and CLI name: `oidc-auth`, `jwt-auth`, `spiffe-auth`.
    pub const fn slug(self) -> &'static str {
        match self {
            Self::Oidc => "oidc-auth",
            Self::Jwt => "jwt-auth",
            Self::Spiffe => "spiffe-auth",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oidc-auth" | "oidc" => Ok(Self::Oidc),
            "jwt-auth" | "jwt" => Ok(Self::Jwt),
            "spiffe-auth" | "spiffe" => Ok(Self::Spiffe),
            other => Err(format!(
                "unknown auth method {other:?}: expected oidc-auth, jwt-auth or spiffe-auth"
            )),
        }
    }
}

/// Everything that can go wrong talking to Infisical; [`Failure`] gives the exit class and the hint.
#[derive(Debug, thiserror::Error)]
pub enum InfisicalError {
    /// `--api-url` is not an http(s) origin.
    #[error("invalid --api-url {value:?}: {reason}")]
    InvalidApiUrl {
        /// What was given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Plain http to a host that is not loopback.
    #[error("refusing plain http:// to {host}: the access token and secrets would cross the network in clear")]
    InsecureHttp {
        /// The host.
        host: String,
    },
    /// The port of `--api-url` speaks the other scheme (the hint names the URL to use).
    #[error("{url} answers in {speaks}, so the scheme of --api-url is wrong for this port")]
    WrongScheme {
        /// The API URL as normalised.
        url: String,
        /// What the port speaks: "TLS" or "plain HTTP".
        speaks: &'static str,
        /// The same URL with the other scheme.
        suggestion: String,
    },
    /// A route 404 at login: nothing at this URL serves the Infisical API
    /// (the hint names what to try).
    #[error("{url} does not serve the Infisical API: {endpoint} answered {server}, a missing route, not a missing identity")]
    NotInfisicalApi {
        /// The API URL as normalised.
        url: String,
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
        /// What to try.
        suggestion: String,
    },
    /// A proxy variable that cannot be used (an unsupported scheme, not a URL).
    #[error("{0}")]
    Proxy(String),
    /// `--ca-cert` could not be used.
    #[error("{option}: {reason}")]
    CaCert {
        /// The option, as the user set it when the configuration knows
        /// ([`InfisicalError::naming_option`]): `--ca-cert`, or
        /// `SVID_EXEC_CA_CERT (--ca-cert)`.
        option: String,
        /// What is wrong, naming the file.
        reason: String,
    },
    /// The HTTP client could not be built (a bug or a broken TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// The login was refused (401/403): the JWT did not satisfy the identity's auth method.
    #[error("Infisical refused the {method} login for identity {identity_id}: {server}")]
    LoginRefused {
        /// The method used.
        method: AuthMethod,
        /// The identity.
        identity_id: String,
        /// What the server said.
        server: Box<ServerError>,
        /// What to check.
        hint: String,
    },
    /// Login answered 404: the identity does not exist or has no such auth method.
    #[error("Infisical has no {method} login for identity {identity_id} ({server})")]
    NoSuchAuthMethod {
        /// The method used.
        method: AuthMethod,
        /// The identity.
        identity_id: String,
        /// What the server said (old servers name the wrong method in it).
        server: Box<ServerError>,
    },
    /// An authenticated call was refused for lack of permission (403, not a token problem).
    #[error("Infisical refused {endpoint}: {server}")]
    Forbidden {
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
    },
    /// The project, environment or path does not exist (404).
    #[error("Infisical found nothing at {endpoint}: {server}")]
    NotFound {
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
    },
    /// 400/422: the server rejected the request's values.
    #[error("Infisical rejected {endpoint} as invalid: {server}")]
    BadRequest {
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
    },
    /// The access token is expired, revoked or used up (401, or 403 `TokenError`): log in again.
    #[error("Infisical no longer accepts the access token at {endpoint}: {server}")]
    Reauthenticate {
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
    },
    /// Renewal was refused (max TTL reached, uses exhausted, token expired): log in again.
    #[error("Infisical refused to renew the access token: {server}")]
    RenewRefused {
        /// What the server said.
        server: Box<ServerError>,
    },
    /// The server redirected; svid-exec does not follow redirects with credentials.
    #[error("Infisical answered {endpoint} with a redirect (HTTP {status}) to {location}")]
    Redirect {
        /// What was asked.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Where to (`-` when absent).
        location: String,
    },
    /// A status this client does not expect.
    #[error("Infisical answered {endpoint} unexpectedly: {server}")]
    UnexpectedStatus {
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
    },
    /// 429 or 5xx: worth retrying.
    #[error("Infisical is not serving {endpoint} right now: {server}")]
    Busy {
        /// What was asked.
        endpoint: String,
        /// What the server said.
        server: Box<ServerError>,
        /// The wait the server asked for (`Retry-After` or the message text).
        retry_after: Option<Duration>,
    },
    /// Connection refused/reset, DNS failure, timeout, body cut short: worth retrying.
    #[error("cannot reach Infisical for {endpoint}: {chain}")]
    Network {
        /// What was asked.
        endpoint: String,
        /// The whole cause chain.
        chain: String,
    },
    /// The server's certificate was not accepted (rustls names the reason at the end of the chain).
    #[error("TLS with Infisical failed for {endpoint}: {chain}")]
    Tls {
        /// What was asked.
        endpoint: String,
        /// The whole cause chain.
        chain: String,
    },
    /// The body was not the JSON this endpoint returns.
    #[error("Infisical answered {endpoint} with a body that is not the expected JSON ({detail})")]
    BadResponse {
        /// What was asked.
        endpoint: String,
        /// Where parsing failed (never the content).
        detail: String,
    },
    /// A secret value (or the access token) came back `null`, missing or not a
    /// string. Refused rather than replaced by an empty string.
    #[error("Infisical answered {endpoint} with the value of {key} that {why}; refusing to use an empty value in its place")]
    BadSecret {
        /// What was asked.
        endpoint: String,
        /// The secret's name (or `accessToken`).
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The body exceeded the size cap.
    #[error("Infisical's answer to {endpoint} is larger than {limit} bytes; refusing to read it")]
    TooLarge {
        /// What was asked.
        endpoint: String,
        /// The cap.
        limit: usize,
    },
    /// Retried until the deadline without success.
    #[error("gave up on Infisical after {}: {last}", humantime::format_duration(crate::retry::to_millis(*.waited)))]
    GaveUp {
        /// How long it tried.
        waited: Duration,
        /// The last transient error.
        last: Box<InfisicalError>,
    },
}

impl Failure for InfisicalError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::InvalidApiUrl { .. }
            | Self::InsecureHttp { .. }
            | Self::Proxy(_)
            | Self::WrongScheme { .. }
            | Self::NotInfisicalApi { .. }
            | Self::CaCert { .. }
            | Self::NotFound { .. }
            | Self::BadRequest { .. }
            | Self::Redirect { .. } => ExitClass::Config,
            Self::HttpClient(_) => ExitClass::Internal,
            Self::LoginRefused { .. }
            | Self::NoSuchAuthMethod { .. }
            | Self::Forbidden { .. }
            | Self::Reauthenticate { .. }
            | Self::RenewRefused { .. } => ExitClass::Refused,
            Self::UnexpectedStatus { .. }
            | Self::Busy { .. }
            | Self::Network { .. }
            | Self::Tls { .. }
            | Self::BadResponse { .. }
            // A server answering nonsense is not the user's configuration (78) nor
            // a refusal of the identity (77): the service is not usable as it
            // answers now (69). Not retried: the same answer would come back.
            | Self::BadSecret { .. }
            | Self::TooLarge { .. }
            | Self::GaveUp { .. } => ExitClass::Unavailable,
        }
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::InvalidApiUrl { .. } => {
                "use the instance origin, e.g. https://app.infisical.com or https://infisical.example.com"
            }
            Self::InsecureHttp { .. } => {
                "use https://, or pass --allow-insecure-http if this network is trusted"
            }
            Self::WrongScheme { suggestion, .. } => {
                return Some(format!("use {suggestion}"));
            }
            Self::NotInfisicalApi { suggestion, .. } => return Some(suggestion.clone()),
            Self::Proxy(_) => {
                "fix or unset the proxy variable (HTTPS_PROXY, ALL_PROXY, lower-case forms too): \
                 an http:// or https:// proxy URL"
            }
            Self::BadSecret { .. } => {
                "a fault of the server or of a proxy in front of it: check the server's \
                 version and health, and any proxy between us"
            }
            Self::CaCert { .. } => "check --ca-cert: a readable file of PEM certificates",
            Self::HttpClient(_) => crate::error::BUG_HINT,
            Self::LoginRefused { hint, .. } => return Some(hint.clone()),
            Self::NoSuchAuthMethod { method, .. } => {
                return Some(format!(
                    "check --identity-id, and that {method} is configured on that identity \
                     (an identity set up with JWT Auth needs --auth-method jwt-auth, \
                     SPIFFE Auth --auth-method spiffe-auth)"
                ))
            }
            Self::Forbidden { .. } => {
                "check that the identity has read access to this project, environment and path \
                 (and the trusted IPs of its auth method)"
            }
            Self::NotFound { .. } => "check --project-id/--project-slug, --env and --path",
            Self::BadRequest { .. } => {
                "check the identity, project, environment and path values"
            }
            Self::Reauthenticate { .. } => "a fresh login is needed",
            Self::Redirect { .. } => "set --api-url to the server's final origin",
            Self::Tls { .. } => {
                "if the server uses a private CA, pass its certificate with --ca-cert"
            }
            Self::BadResponse { .. } => "check that --api-url is an Infisical server",
            Self::GaveUp { .. } => {
                "check --api-url, the network path to the server and its health, \
                 or allow more time (--startup-timeout)"
            }
            Self::RenewRefused { .. }
            | Self::UnexpectedStatus { .. }
            | Self::Busy { .. }
            | Self::Network { .. }
            | Self::TooLarge { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

impl InfisicalError {
    /// The same error with the option it blames named by `label` (the flag
    /// as the client knows it, e.g. `--ca-cert`, to how the user set it, e.g.
    /// `SVID_EXEC_CA_CERT (--ca-cert)`): a configured file found unusable
    /// only when the client is built is reported like every other
    /// configuration problem.
    #[must_use]
    pub fn naming_option(self, label: impl FnOnce(&str) -> String) -> Self {
        match self {
            Self::CaCert { option, reason } => Self::CaCert {
                option: label(&option),
                reason,
            },
            other => other,
        }
    }

    /// Whether a fresh login (with a fresh JWT) may cure this error.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            Self::Reauthenticate { .. } | Self::RenewRefused { .. }
        )
    }
}

impl Transient for InfisicalError {
    /// 429, 5xx and network failures; and retries of those that ran out of
    /// time (a later call, with a deadline of its own, may succeed).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Busy { .. } | Self::Network { .. } | Self::GaveUp { .. }
        )
    }

    fn min_wait(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Which call a status answers, for mapping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A login (no token yet).
    Login,
    /// Token renewal.
    Renew,
    /// Any call with the Bearer token (secrets, project, revoke is handled apart).
    Authenticated,
}

/// Maps a non-success status of `call` to an error (login refusals are built by the caller,
/// which knows the JWT's claims for the hint).
pub(crate) fn status_error(
    call: Call,
    endpoint: &str,
    server: ServerError,
    retry_after_header: Option<Duration>,
) -> InfisicalError {
    let endpoint = endpoint.to_owned();
    let status = server.status;
    let retry_in_message = server.wait_in_message();
    let server = Box::new(server);
    if status == 429 || status >= 500 {
        let retry_after = retry_after_header.or(retry_in_message);
        return InfisicalError::Busy {
            endpoint,
            server,
            retry_after,
        };
    }
    match call {
        Call::Renew if matches!(status, 400 | 401 | 403 | 404) => {
            InfisicalError::RenewRefused { server }
        }
        Call::Authenticated if server.is_token_error() => {
            InfisicalError::Reauthenticate { endpoint, server }
        }
        _ => match status {
            400 | 422 => InfisicalError::BadRequest { endpoint, server },
            403 => InfisicalError::Forbidden { endpoint, server },
            404 => InfisicalError::NotFound { endpoint, server },
            _ => InfisicalError::UnexpectedStatus { endpoint, server },
        },
    }
}

/// A hint for a refused login, from the server's message and the JWT's readable claims.
pub(crate) fn login_hint(
    method: AuthMethod,
    server: &ServerError,
    sub: Option<&str>,
    iss: Option<&str>,
    aud: &[String],
) -> String {
    let msg = server.message.to_ascii_lowercase();
    let sub = sub.unwrap_or("(none)");
    let aud = if aud.is_empty() {
        "(none)".to_owned()
    } else {
        aud.join(", ")
    };
    if msg.contains("subject") || msg.contains("spiffe id") || msg.contains("spiffeid") {
        format!("the JWT's subject is {sub}; the identity's bound subject (or allowed SPIFFE IDs) must match it (`*` does not cross `/`, use `**`)")
    } else if msg.contains("issuer") {
        match iss {
            Some(iss) => format!("the JWT's issuer is {iss}; the identity's bound issuer must equal it byte for byte (SPIRE server `jwt_issuer`)"),
            None => "the JWT has no issuer: set `jwt_issuer` on the SPIRE server to the identity's bound issuer (or use --auth-method spiffe-auth, which does not check it)".to_owned(),
        }
    } else if msg.contains("audience") || msg.contains("aud") {
        format!("the JWT was requested for audience {aud} (--audience); the identity's bound/allowed audiences must include it")
    } else if msg.contains("expired") {
        "the JWT had expired when the server checked it; check the clocks of this host, the SPIRE agent and Infisical".to_owned()
    } else if msg.contains("signing key")
        || msg.contains("signature")
        || msg.contains("discovery")
        || msg.contains("jwks")
    {
        match method {
            AuthMethod::Oidc => "Infisical could not verify the JWT's signature: the identity's discovery URL must be the bare issuer URL of the SPIRE OIDC discovery provider (no /.well-known suffix), reachable from Infisical".to_owned(),
            AuthMethod::Jwt => "Infisical could not verify the JWT's signature: check the identity's JWKS URL or public keys".to_owned(),
            AuthMethod::Spiffe => "Infisical could not verify the JWT's signature: check the identity's trust domain and trust bundle".to_owned(),
        }
    } else if msg.contains("claim") {
        format!("a bound claim did not match (subject {sub}, audience {aud}); check the identity's bound claims")
    } else {
        format!("check the identity's {method} settings against the JWT (subject {sub}, audience {aud}, issuer {})", iss.unwrap_or("(none)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_id_is_scrubbed_like_the_message() {
        let long = "r".repeat(MAX_MESSAGE_CHARS + 50);
        let body = format!(
            r#"{{"reqId":"echo tok-0123456789\u001b[2J\nforged line {long}","statusCode":500,"message":"m"}}"#
        );
        let e = ServerError::decode(500, body.as_bytes(), &["tok-0123456789"]);
        let req_id = e.req_id.clone().unwrap();
        assert!(!req_id.contains("tok-0123456789"), "{req_id}");
        assert!(!req_id.chars().any(char::is_control), "{req_id:?}");
        assert!(req_id.chars().count() <= MAX_MESSAGE_CHARS + 1);
        let shown = e.to_string();
        assert!(
            !shown.contains("tok-0123456789") && !shown.contains('\n'),
            "{shown:?}"
        );
    }

    #[test]
    fn every_part_and_long_fragment_of_a_credential_is_redacted() {
        let header = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9";
        let payload = "eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93ZWIiLCJleHAiOjQwMDAwMDAwMDB9";
        let signature = "MEUCIQDx3Rk7aZf1Qh2Kc9bM4vT8nW5yL0pJ6sE3uG7iO1rXaAIgB";
        let jwt = format!("{header}.{payload}.{signature}");
        let cases = [
            format!("token {jwt} rejected"),
            format!("payload {payload} is not allowed"),
            format!("bad signature {signature}"),
            format!("truncated: {}...", &jwt[..20]),
            format!("tail …{}", &jwt[jwt.len() - 15..]),
            format!("middle {} here", &payload[10..25]),
            format!("header {header}"),
        ];
        for text in cases {
            let out = tidy(&text, &[&jwt]);
            assert!(out.contains("[redacted]"), "{out}");
            for window in jwt.as_bytes().windows(MIN_FRAGMENT) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(!out.contains(window), "{window} left in {out}");
            }
        }
        // Short segments of a short opaque token, and ordinary text, are kept.
        assert_eq!(
            tidy("Access denied: OIDC subject not allowed.", &[&jwt]),
            "Access denied: OIDC subject not allowed."
        );
        assert_eq!(
            tidy("abc opaque-tok1 def", &["opaque-tok1"]),
            "abc [redacted] def"
        );
        assert_eq!(tidy("ünï ünï", &["ünïcode-ünïcode"]), "ünï ünï");
        assert_eq!(
            tidy("x ünïcode-ünïc y", &["ünïcode-ünïcode"]),
            "x [redacted] y"
        );
    }

    #[test]
    fn error_body_is_decoded_and_scrubbed() {
        let body = br#"{"reqId":"req-1","statusCode":403,"message":"Your token has expired. tok-0123456789","error":"TokenError"}"#;
        let e = ServerError::decode(403, body, &["tok-0123456789"]);
        assert_eq!(e.req_id.as_deref(), Some("req-1"));
        assert_eq!(e.error.as_deref(), Some("TokenError"));
        assert!(e.message.contains("Your token has expired"));
        assert!(!e.to_string().contains("tok-0123456789"));
        assert!(e.is_token_error());
    }

    #[test]
    fn validation_messages_are_flattened() {
        let body = br#"{"statusCode":422,"message":[{"path":["identityId"],"message":"Invalid uuid"}],"error":"ValidationFailure"}"#;
        let e = ServerError::decode(422, body, &[]);
        assert_eq!(e.message, "identityId: Invalid uuid");
    }

    #[test]
    fn a_non_json_error_body_is_described_not_quoted() {
        let e = ServerError::decode(502, b"<html>secret-ish proxy page</html>", &[]);
        assert!(!e.message.contains("proxy page"));
        assert!(e.message.contains("not Infisical's JSON"));
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
        let e = ServerError::decode(500, long.as_bytes(), &[]);
        assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn retry_after_header_and_message_are_parsed() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            seconds_in_message("Rate limit exceeded. Please try again in 12 seconds"),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            seconds_in_message("try again in 1 second"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(seconds_in_message("join in 5 minutes"), None);
        assert_eq!(seconds_in_message("Something went wrong"), None);
    }

    fn server(status: u16, error: &str) -> ServerError {
        ServerError {
            status,
            error: Some(error.to_owned()),
            message: "m".to_owned(),
            ..ServerError::default()
        }
    }

    #[test]
    fn status_to_class_mapping() {
        use Call::{Authenticated, Renew};
        let table: &[(Call, u16, &str, ExitClass, bool, bool)] = &[
            // call, status, error, class, transient, needs login
            (
                Authenticated,
                401,
                "UnauthorizedError",
                ExitClass::Refused,
                false,
                true,
            ),
            (
                Authenticated,
                403,
                "TokenError",
                ExitClass::Refused,
                false,
                true,
            ),
            (
                Authenticated,
                403,
                "PermissionDenied",
                ExitClass::Refused,
                false,
                false,
            ),
            (
                Authenticated,
                404,
                "NotFound",
                ExitClass::Config,
                false,
                false,
            ),
            (
                Authenticated,
                400,
                "BadRequest",
                ExitClass::Config,
                false,
                false,
            ),
            (
                Authenticated,
                422,
                "ValidationFailure",
                ExitClass::Config,
                false,
                false,
            ),
            (
                Authenticated,
                429,
                "RateLimitExceeded",
                ExitClass::Unavailable,
                true,
                false,
            ),
            (
                Authenticated,
                500,
                "InternalServerError",
                ExitClass::Unavailable,
                true,
                false,
            ),
            (Authenticated, 503, "", ExitClass::Unavailable, true, false),
            (
                Authenticated,
                410,
                "Gone",
                ExitClass::Unavailable,
                false,
                false,
            ),
            (
                Renew,
                401,
                "UnauthorizedError",
                ExitClass::Refused,
                false,
                true,
            ),
            (Renew, 403, "TokenError", ExitClass::Refused, false, true),
            (Renew, 502, "", ExitClass::Unavailable, true, false),
        ];
        for &(call, status, error, class, transient, login) in table {
            let e = status_error(call, "GET /x", server(status, error), None);
            assert_eq!(e.exit_class(), class, "{call:?} {status} {error}: {e}");
            assert_eq!(e.is_transient(), transient, "{call:?} {status} {error}");
            assert_eq!(e.needs_login(), login, "{call:?} {status} {error}");
        }
    }

    #[test]
    fn rate_limit_wait_comes_from_the_header_else_the_message() {
        let mut s = server(429, "RateLimitExceeded");
        s.message = "Rate limit exceeded. Please try again in 9 seconds".into();
        let e = status_error(
            Call::Authenticated,
            "GET /x",
            s.clone(),
            Some(Duration::from_secs(2)),
        );
        assert_eq!(e.min_wait(), Some(Duration::from_secs(2)));
        let e = status_error(Call::Authenticated, "GET /x", s, None);
        assert_eq!(e.min_wait(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn login_hints_name_the_claim_to_check() {
        let s = |m: &str| ServerError {
            status: 401,
            message: m.into(),
            ..ServerError::default()
        };
        let aud = vec!["infisical".to_owned()];
        let h = login_hint(
            AuthMethod::Oidc,
            &s("Access denied: OIDC subject not allowed."),
            Some("spiffe://td/web"),
            None,
            &aud,
        );
        assert!(h.contains("spiffe://td/web"), "{h}");
        let h = login_hint(
            AuthMethod::Oidc,
            &s("Access denied: jwt issuer invalid. expected: https://a"),
            Some("x"),
            None,
            &aud,
        );
        assert!(h.contains("jwt_issuer"), "{h}");
        let h = login_hint(
            AuthMethod::Oidc,
            &s("jwt issuer invalid"),
            None,
            Some("https://b"),
            &aud,
        );
        assert!(h.contains("https://b"), "{h}");
        let h = login_hint(
            AuthMethod::Oidc,
            &s("Access denied: jwt audience invalid. expected: x"),
            None,
            None,
            &aud,
        );
        assert!(h.contains("infisical") && h.contains("--audience"), "{h}");
        let h = login_hint(
            AuthMethod::Oidc,
            &s("Failed to fetch OIDC discovery document"),
            None,
            None,
            &aud,
        );
        assert!(h.contains("discovery URL"), "{h}");
    }

    #[test]
    fn auth_method_names_round_trip() {
        for m in [AuthMethod::Oidc, AuthMethod::Jwt, AuthMethod::Spiffe] {
            assert_eq!(m.slug().parse::<AuthMethod>().unwrap(), m);
        }
        assert!("universal-auth".parse::<AuthMethod>().is_err());
    }
}
