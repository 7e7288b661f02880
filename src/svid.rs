//! JWT-SVID sources: the SPIFFE Workload API (via the `spiffe` crate) or a JWT
//! file, the Workload API address parser, and the wait for the agent at start.
//!
//! The JWT is a bearer credential from the moment it arrives: it is moved into a
//! `SecretString` at once and only its claims (`sub`, `aud`, `exp`, `iss`) stay
//! readable, for logs and hints. The crate's `JwtSvid` is dropped immediately and
//! never `Debug`-formatted. A JWT is fetched fresh for every login, never cached.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use spiffe::transport::{Endpoint, GrpcStatusCode, TransportError};
use spiffe::workload_api::error::WorkloadApiError;
use spiffe::{SpiffeId, WorkloadApiClient};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::error::{chain, ExitClass};
use crate::retry::{self, Backoff, Stop, Transient};

/// SPIRE agent's default socket, the contract's default for `--workload-api-socket`.
pub const DEFAULT_WORKLOAD_API_SOCKET: &str = "unix:///tmp/spire-agent/public/api.sock";

/// Bound on one connect + fetch: first-time Kubernetes workload attestation can
/// hold the first call for about 30 s (spiffe.md §2.5).
pub const DEFAULT_PER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Below this remaining lifetime a fetched JWT-SVID is logged as a warning:
/// the agent serves cached tokens down to ~half their TTL, less when its server is unreachable.
const SHORT_LIFETIME: Duration = Duration::from_secs(30);

/// Errors of this module; [`SvidError::class`] gives the exit class.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// The Workload API address could not be understood.
    #[error("invalid Workload API address {value:?}: {reason}; expected unix:///path, unix:/path, an absolute /path or tcp://IP:port")]
    InvalidEndpoint {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--spiffe-id` is not a SPIFFE ID.
    #[error("invalid --spiffe-id {value:?}: {reason}; expected spiffe://trust-domain/path")]
    InvalidSpiffeId {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No audience to request: SPIRE would refuse the call.
    #[error("no audience to request the JWT-SVID for; give --audience (for example `infisical`)")]
    NoAudience,
    /// The JWT file could not be read.
    #[error("cannot read the JWT file {}: {source}; check --jwt-file and that this user may read it", path.display())]
    JwtFileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The JWT file stayed missing or empty until the deadline.
    #[error("waited for {} {} but it {last}; check --jwt-file and that whatever writes it (spiffe-helper, a projected token) is running", path.display(), humantime::format_duration(*.waited))]
    JwtFileNotReady {
        /// The file.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
        /// "does not exist" or "is empty".
        last: &'static str,
    },
    /// The JWT file does not hold a JWT.
    #[error("the JWT file {} does not hold a JWT ({reason})", path.display())]
    JwtFileNotJwt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content).
        reason: &'static str,
    },
    /// The agent refused the request as invalid (gRPC `InvalidArgument`): retrying cannot help.
    #[error("the Workload API at {endpoint} rejected the request as invalid (InvalidArgument: {message}); check --audience (must not be empty) and --spiffe-id")]
    Rejected {
        /// The address.
        endpoint: String,
        /// The agent's message.
        message: String,
    },
    /// The other side does not implement the call (gRPC `Unimplemented`).
    #[error("the service at {endpoint} does not implement FetchJWTSVID (Unimplemented: {message}); is it a SPIFFE Workload API (SPIRE agent)?")]
    Unsupported {
        /// The address.
        endpoint: String,
        /// The agent's message.
        message: String,
    },
    /// The agent answered something that does not follow the Workload API spec.
    #[error("the Workload API at {endpoint} sent a malformed answer: {detail}")]
    Malformed {
        /// The address.
        endpoint: String,
        /// What was wrong (the crate's messages never contain the token).
        detail: String,
    },
    /// Nothing usable before the deadline.
    #[error("no JWT-SVID from the Workload API at {endpoint} within {}: {last}; {check}", humantime::format_duration(crate::retry::to_millis(*.waited)))]
    GaveUp {
        /// The address.
        endpoint: String,
        /// How long it waited.
        waited: Duration,
        /// The last reason it waited.
        last: String,
        /// What to check.
        check: &'static str,
    },
}

impl SvidError {
    /// The exit class of this error.
    pub fn class(&self) -> ExitClass {
        match self {
            Self::InvalidEndpoint { .. }
            | Self::InvalidSpiffeId { .. }
            | Self::NoAudience
            | Self::JwtFileUnreadable { .. }
            | Self::JwtFileNotJwt { .. }
            | Self::Rejected { .. }
            | Self::Unsupported { .. } => ExitClass::Config,
            Self::Malformed { .. } | Self::GaveUp { .. } | Self::JwtFileNotReady { .. } => {
                ExitClass::Unavailable
            }
        }
    }
}

/// Parses a Workload API address: `unix:///path`, `unix:/path`, a bare absolute
/// `/path` (what spiffe-helper and SPIRE's CLI take), or `tcp://IP:port`.
///
/// Unix forms are handled here rather than by the crate, which rejects bare
/// paths and does not percent-decode (`unix:///a%20b` would name `/a%20b`).
pub fn parse_endpoint(value: &str) -> Result<Endpoint, SvidError> {
    let bad = |reason: &str| SvidError::InvalidEndpoint {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(trimmed)));
    }
    if let Some(rest) = strip_prefix_ignore_case(trimmed, "unix:") {
        let path = if let Some(after) = rest.strip_prefix("//") {
            if !after.starts_with('/') {
                return Err(bad(
                    "a unix: address must not name a host (use unix:///absolute/path)",
                ));
            }
            after
        } else {
            rest
        };
        if !path.starts_with('/') {
            return Err(bad("a unix: address needs an absolute path"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("a unix: address must not have a query or fragment"));
        }
        let decoded = percent_decode(path).ok_or_else(|| bad("invalid %-escape in the path"))?;
        if decoded.len() <= 1 {
            return Err(bad("a unix: address needs a socket path"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(OsString::from_vec(decoded))));
    }
    if strip_prefix_ignore_case(trimmed, "tcp:").is_some() {
        return Endpoint::parse(trimmed).map_err(|e| bad(&e.to_string()));
    }
    Err(bad("unknown scheme"))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// How an endpoint is named in messages.
pub fn describe_endpoint(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Unix(path) => format!("unix://{}", path.display()),
        Endpoint::Tcp { host, port } => {
            format!("tcp://{}", std::net::SocketAddr::new(*host, *port))
        }
        other => format!("{other:?}"),
    }
}

/// Parses `--spiffe-id`.
pub fn parse_spiffe_id(value: &str) -> Result<SpiffeId, SvidError> {
    SpiffeId::new(value).map_err(|e| SvidError::InvalidSpiffeId {
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// The readable claims of a JWT. None of them is a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtClaims {
    /// Subject (the SPIFFE ID for a JWT-SVID; anything for a file JWT).
    pub sub: Option<String>,
    /// Audiences (a string or an array in the token; always a list here).
    pub aud: Vec<String>,
    /// Expiry, unix seconds.
    pub exp: Option<i64>,
    /// Issuer; SPIRE sets it only when the server has `jwt_issuer`.
    pub iss: Option<String>,
}

impl JwtClaims {
    /// Time left until `exp` at `now` (zero when past), `None` without `exp`.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let exp = u64::try_from(self.exp?).unwrap_or(0);
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Some(Duration::from_secs(exp.saturating_sub(now)))
    }
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    exp: Option<serde_json::Number>,
    iss: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token's payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadError {
    NotThreeParts,
    NotBase64,
    NotJson,
}

impl PayloadError {
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Self::NotThreeParts => "not three dot-separated parts",
            Self::NotBase64 => "payload is not base64url",
            Self::NotJson => "payload is not a JSON object of claims",
        }
    }
}

/// Decodes (without verifying) the payload of a compact JWS, into a zeroizing buffer.
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(
    token: &str,
) -> Result<T, PayloadError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PayloadError::NotThreeParts);
    };
    let payload = payload.trim_end_matches('=');
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| PayloadError::NotBase64)?,
    );
    serde_json::from_slice(&bytes).map_err(|_| PayloadError::NotJson)
}

/// Reads `sub`, `aud`, `exp`, `iss` from a JWT without verifying it. Tolerant:
/// a non-SPIFFE `sub`, a string or array `aud`, a float `exp`.
pub fn decode_claims(token: &str) -> Result<JwtClaims, &'static str> {
    let raw: RawClaims = decode_payload(token).map_err(PayloadError::describe)?;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "exp is whole seconds; fractions are dropped"
    )]
    let exp = raw
        .exp
        .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)));
    Ok(JwtClaims {
        sub: raw.sub,
        aud: match raw.aud {
            None => Vec::new(),
            Some(Audience::One(a)) => vec![a],
            Some(Audience::Many(v)) => v,
        },
        exp,
        iss: raw.iss,
    })
}

/// A JWT (SVID or from a file): the token in zeroizing memory, plus its claims.
pub struct Jwt {
    token: SecretString,
    claims: JwtClaims,
}

impl Jwt {
    /// Wraps a token, reading its claims. Used by both sources.
    pub fn new(token: SecretString) -> Result<Self, &'static str> {
        let claims = decode_claims(token.expose_secret())?;
        Ok(Self { token, claims })
    }

    /// The token; expose it only at the HTTP call.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The readable claims.
    pub fn claims(&self) -> &JwtClaims {
        &self.claims
    }
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("token", &"[redacted]")
            .field("claims", &self.claims)
            .finish()
    }
}

/// Where the JWT comes from.
#[derive(Debug, Clone)]
pub enum SvidSourceOptions {
    /// The SPIFFE Workload API (a SPIRE agent).
    WorkloadApi(WorkloadApiOptions),
    /// A file holding a JWT, read at every fetch (spiffe-helper output, a projected token).
    File(PathBuf),
}

/// How to ask the Workload API.
#[derive(Debug, Clone)]
pub struct WorkloadApiOptions {
    /// Address (see [`parse_endpoint`]).
    pub endpoint: Endpoint,
    /// Audiences to request; one, dedicated to Infisical, is the safe choice.
    pub audiences: Vec<String>,
    /// Pick this SVID when the workload has several.
    pub spiffe_id: Option<SpiffeId>,
    /// Bound on one connect + fetch ([`DEFAULT_PER_CALL_TIMEOUT`]); never past the deadline.
    pub per_call_timeout: Duration,
}

/// Fetches JWTs, fresh at every call.
#[derive(Debug)]
pub struct SvidSource {
    options: SvidSourceOptions,
    backoff: Backoff,
}

impl SvidSource {
    /// A source; refuses an empty audience list up front (SPIRE would answer `InvalidArgument`).
    pub fn new(options: SvidSourceOptions) -> Result<Self, SvidError> {
        if let SvidSourceOptions::WorkloadApi(w) = &options {
            if w.audiences.iter().all(|a| a.trim().is_empty()) {
                return Err(SvidError::NoAudience);
            }
        }
        Ok(Self {
            options,
            backoff: Backoff::DEFAULT,
        })
    }

    /// The same source with another backoff (tests, the supervisor).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A fresh JWT. From the Workload API this waits (capped, jittered backoff)
    /// while the agent is starting or has not issued an identity yet, until `deadline`.
    pub async fn fetch(&self, deadline: Instant) -> Result<Jwt, SvidError> {
        match &self.options {
            SvidSourceOptions::File(path) => self.fetch_from_file(path, deadline).await,
            SvidSourceOptions::WorkloadApi(w) => self.fetch_from_agent(w, deadline).await,
        }
    }

    async fn fetch_from_agent(
        &self,
        options: &WorkloadApiOptions,
        deadline: Instant,
    ) -> Result<Jwt, SvidError> {
        let started = Instant::now();
        let endpoint = describe_endpoint(&options.endpoint);
        let mut last_reason: Option<String> = None;
        let result = retry::retry_until(
            &self.backoff,
            deadline,
            options.per_call_timeout,
            |bound| fetch_once(options, bound),
            |err: &Attempt, wait| {
                if let Attempt::Wait { reason, .. } = err {
                    if last_reason.as_deref() == Some(reason.as_str()) {
                        tracing::debug!(endpoint = %endpoint, retry_in = ?wait, "{reason}; still waiting…");
                    } else {
                        tracing::info!(endpoint = %endpoint, "{reason}; waiting…");
                        last_reason = Some(reason.clone());
                    }
                }
            },
        )
        .await;
        match result {
            Ok(jwt) => {
                log_fetched(&jwt, &endpoint);
                Ok(jwt)
            }
            Err(Stop::Fatal(Attempt::Fatal(e)) | Stop::Deadline(Attempt::Fatal(e))) => Err(e),
            Err(
                Stop::Fatal(Attempt::Wait { reason, check })
                | Stop::Deadline(Attempt::Wait { reason, check }),
            ) => Err(SvidError::GaveUp {
                endpoint,
                waited: retry::to_millis(started.elapsed()),
                last: reason,
                check,
            }),
        }
    }
}

impl SvidSource {
    /// Reads `--jwt-file`, waiting (same backoff as for the agent) while it is
    /// missing or empty: at pod start its writer (spiffe-helper) may not have
    /// written it yet. Anything else about the file fails at once.
    async fn fetch_from_file(&self, path: &Path, deadline: Instant) -> Result<Jwt, SvidError> {
        let started = Instant::now();
        let mut logged = false;
        let result = retry::retry_until(
            &self.backoff,
            deadline,
            DEFAULT_PER_CALL_TIMEOUT,
            |_| std::future::ready(read_jwt_file(path)),
            |err: &FileAttempt, wait| {
                if let FileAttempt::NotReady(why) = err {
                    if logged {
                        tracing::debug!(path = %path.display(), retry_in = ?wait, "the JWT file {why}; still waiting…");
                    } else {
                        tracing::info!(path = %path.display(), "the JWT file {why}; waiting for its writer…");
                        logged = true;
                    }
                }
            },
        )
        .await;
        match result {
            Ok(jwt) => Ok(jwt),
            Err(Stop::Fatal(FileAttempt::Fatal(e)) | Stop::Deadline(FileAttempt::Fatal(e))) => {
                Err(e)
            }
            Err(
                Stop::Fatal(FileAttempt::NotReady(last))
                | Stop::Deadline(FileAttempt::NotReady(last)),
            ) => Err(SvidError::JwtFileNotReady {
                path: path.to_owned(),
                waited: retry::to_millis(started.elapsed()),
                last,
            }),
        }
    }
}

/// One read of the JWT file that did not give a JWT.
#[derive(Debug)]
enum FileAttempt {
    /// Missing or empty: its writer may not have run yet ("does not exist", "is empty").
    NotReady(&'static str),
    Fatal(SvidError),
}

impl Transient for FileAttempt {
    fn is_transient(&self) -> bool {
        matches!(self, Self::NotReady(_))
    }
}

fn log_fetched(jwt: &Jwt, endpoint: &str) {
    let claims = jwt.claims();
    let left = claims.remaining(SystemTime::now());
    let expires_in = left.map_or_else(|| "unknown".to_owned(), |d| format!("{}s", d.as_secs()));
    tracing::info!(
        endpoint,
        sub = claims.sub.as_deref().unwrap_or("-"),
        aud = ?claims.aud,
        iss = claims.iss.as_deref().unwrap_or("-"),
        expires_in = %expires_in,
        "got a JWT-SVID"
    );
    if left.is_some_and(|l| l < SHORT_LIFETIME) {
        tracing::warn!(
            expires_in = %expires_in,
            "the JWT-SVID expires very soon; is the SPIRE agent unable to reach its server (it then serves cached tokens)?"
        );
    }
}

fn read_jwt_file(path: &Path) -> Result<Jwt, FileAttempt> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            FileAttempt::NotReady("does not exist")
        } else {
            FileAttempt::Fatal(SvidError::JwtFileUnreadable {
                path: path.to_owned(),
                source,
            })
        }
    })?);
    let not_jwt = |reason| {
        FileAttempt::Fatal(SvidError::JwtFileNotJwt {
            path: path.to_owned(),
            reason,
        })
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| not_jwt("not UTF-8 text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(FileAttempt::NotReady("is empty"));
    }
    let jwt = Jwt::new(SecretString::from(token)).map_err(not_jwt)?;
    let claims = jwt.claims();
    if claims.remaining(SystemTime::now()) == Some(Duration::ZERO) {
        tracing::warn!(
            path = %path.display(),
            "the JWT in the file has expired; Infisical will refuse it (is its writer still running?)"
        );
    }
    tracing::info!(
        path = %path.display(),
        sub = claims.sub.as_deref().unwrap_or("-"),
        aud = ?claims.aud,
        iss = claims.iss.as_deref().unwrap_or("-"),
        "read the JWT file"
    );
    Ok(jwt)
}

/// The outcome of one failed attempt.
#[derive(Debug)]
enum Attempt {
    /// Worth waiting for: what we wait for, and what to check if it never comes.
    Wait {
        reason: String,
        check: &'static str,
    },
    Fatal(SvidError),
}

impl Transient for Attempt {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Wait { .. })
    }
}

const CHECK_AGENT: &str = "check that the SPIRE agent is running and its socket is mounted at this address (SPIFFE_ENDPOINT_SOCKET / --workload-api-socket)";
const CHECK_ENTRY: &str = "check that a registration entry matches this workload's selectors and has reached the agent (`spire-server entry show`), and --spiffe-id if given";

async fn fetch_once(options: &WorkloadApiOptions, bound: Duration) -> Result<Jwt, Attempt> {
    let call = async {
        let client = WorkloadApiClient::connect(options.endpoint.clone()).await?;
        client
            .fetch_jwt_svid(&options.audiences, options.spiffe_id.as_ref())
            .await
    };
    let svid = match tokio::time::timeout(bound, call).await {
        Err(_) => {
            return Err(Attempt::Wait {
                reason: format!(
                    "the Workload API did not answer within {} (first-time workload attestation can take ~30 s)",
                    humantime::format_duration(bound)
                ),
                check: CHECK_AGENT,
            })
        }
        Ok(Err(e)) => return Err(classify(&e, &options.endpoint)),
        Ok(Ok(svid)) => svid,
    };
    // Copy the token into zeroizing memory and drop the crate's value at once.
    let token = SecretString::from(svid.token());
    let mut claims = JwtClaims {
        sub: Some(svid.spiffe_id().to_string()),
        aud: svid.audience().to_vec(),
        exp: Some(svid.claims().exp()),
        iss: None,
    };
    drop(svid);
    // `iss` is not exposed by the crate; it is read from the payload.
    if let Ok(all) = decode_claims(token.expose_secret()) {
        claims.iss = all.iss;
    }
    Ok(Jwt { token, claims })
}

/// What `check` shows of one JWT-SVID the workload has: its readable claims
/// and the agent's hint. Never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidSummary {
    /// `sub` (the SPIFFE ID), `aud`, `exp` and `iss`.
    pub claims: JwtClaims,
    /// The Workload API's hint for this SVID, when the registration entry sets one.
    pub hint: Option<String>,
}

fn summarize(svid: &spiffe::JwtSvid) -> SvidSummary {
    // `iss` is not exposed by the crate; read it from the payload without copying the token.
    let iss = decode_claims(svid.token()).ok().and_then(|c| c.iss);
    SvidSummary {
        claims: JwtClaims {
            sub: Some(svid.spiffe_id().to_string()),
            aud: svid.audience().to_vec(),
            exp: Some(svid.claims().exp()),
            iss,
        },
        hint: svid.hint().map(str::to_owned),
    }
}

/// Every JWT-SVID the workload has for `options.audiences` (one call, bounded
/// by `deadline`; the agent is expected to be up already), as summaries: each
/// token is dropped as soon as its claims are read.
pub async fn list_jwt_svids(
    options: &WorkloadApiOptions,
    deadline: Instant,
) -> Result<Vec<SvidSummary>, SvidError> {
    let endpoint = describe_endpoint(&options.endpoint);
    let started = Instant::now();
    let call = async {
        let client = WorkloadApiClient::connect(options.endpoint.clone()).await?;
        client
            .fetch_all_jwt_svids(&options.audiences, options.spiffe_id.as_ref())
            .await
    };
    let bound = deadline
        .saturating_duration_since(started)
        .min(options.per_call_timeout);
    let attempt = match tokio::time::timeout(bound, call).await {
        Err(_) => Attempt::Wait {
            reason: "the Workload API did not answer".to_owned(),
            check: CHECK_AGENT,
        },
        Ok(Err(e)) => classify(&e, &options.endpoint),
        Ok(Ok(svids)) => return Ok(svids.iter().map(summarize).collect()),
    };
    Err(match attempt {
        Attempt::Fatal(e) => e,
        Attempt::Wait { reason, check } => SvidError::GaveUp {
            endpoint,
            waited: retry::to_millis(started.elapsed()),
            last: reason,
            check,
        },
    })
}

/// Sorts a Workload API error into wait or fail (spiffe.md §1.6 policy table).
fn classify(err: &WorkloadApiError, endpoint: &Endpoint) -> Attempt {
    let name = describe_endpoint(endpoint);
    let wait = |reason: String, check| Attempt::Wait { reason, check };
    match err {
        WorkloadApiError::Transport(TransportError::Connect(c)) => match io_kind(c) {
            Some(io::ErrorKind::NotFound) => wait(
                "the Workload API socket does not exist yet (SPIRE agent not started, or socket not mounted)".into(),
                CHECK_AGENT,
            ),
            Some(io::ErrorKind::ConnectionRefused) => wait(
                "nothing is listening on the Workload API socket yet (SPIRE agent starting?)".into(),
                CHECK_AGENT,
            ),
            Some(io::ErrorKind::PermissionDenied) => wait(
                "this user may not open the Workload API socket (permission denied)".into(),
                "check the socket's permissions and the user svid-exec runs as",
            ),
            _ => wait(
                format!("cannot connect to the Workload API ({})", chain(c)),
                CHECK_AGENT,
            ),
        },
        WorkloadApiError::Transport(TransportError::Status(s)) => match s.code() {
            GrpcStatusCode::InvalidArgument => Attempt::Fatal(SvidError::Rejected {
                endpoint: name,
                message: s.message().to_owned(),
            }),
            GrpcStatusCode::Unimplemented => Attempt::Fatal(SvidError::Unsupported {
                endpoint: name,
                message: s.message().to_owned(),
            }),
            GrpcStatusCode::Unavailable => wait(
                format!("the SPIRE agent is unavailable (Unavailable: {})", s.message()),
                CHECK_AGENT,
            ),
            // tonic reports a connection that broke mid-call (the agent
            // crashed or restarted) as Unknown "transport error".
            GrpcStatusCode::Unknown => wait(
                format!(
                    "the Workload API call failed (Unknown: {}); the agent may have restarted",
                    s.message()
                ),
                CHECK_AGENT,
            ),
            code => wait(
                format!("the SPIRE agent answered {code} ({})", s.message()),
                CHECK_AGENT,
            ),
        },
        WorkloadApiError::NoIdentityIssued => wait(
            "the SPIRE agent has not issued an identity for this workload yet (PermissionDenied)".into(),
            CHECK_ENTRY,
        ),
        WorkloadApiError::PermissionDenied(msg) => wait(
            format!("the SPIRE agent denied the request (PermissionDenied: {msg})"),
            CHECK_ENTRY,
        ),
        WorkloadApiError::EmptyResponse => wait(
            "the SPIRE agent returned no JWT-SVID for this workload yet".into(),
            CHECK_ENTRY,
        ),
        WorkloadApiError::Endpoint(e) => Attempt::Fatal(SvidError::InvalidEndpoint {
            value: name,
            reason: e.to_string(),
        }),
        other => Attempt::Fatal(SvidError::Malformed {
            endpoint: name,
            detail: other.to_string(),
        }),
    }
}

/// The first `io::Error` kind in a cause chain.
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256","kid":"k"}"#),
            b64(payload)
        )
    }

    #[test]
    fn endpoint_parsing_table() {
        let unix = |p: &str| Some(Endpoint::Unix(PathBuf::from(p)));
        let table: &[(&str, Option<Endpoint>)] = &[
            ("unix:///tmp/a.sock", unix("/tmp/a.sock")),
            ("unix:/tmp/a.sock", unix("/tmp/a.sock")),
            ("UNIX:///tmp/a.sock", unix("/tmp/a.sock")),
            ("/run/spire/agent.sock", unix("/run/spire/agent.sock")),
            (" /run/spire/agent.sock ", unix("/run/spire/agent.sock")),
            ("unix:///tmp/a%20b%25.sock", unix("/tmp/a b%.sock")),
            (
                "tcp://127.0.0.1:8081",
                Some(Endpoint::Tcp {
                    host: "127.0.0.1".parse().unwrap(),
                    port: 8081,
                }),
            ),
            (
                "tcp:127.0.0.1:8081",
                Some(Endpoint::Tcp {
                    host: "127.0.0.1".parse().unwrap(),
                    port: 8081,
                }),
            ),
            ("", None),
            ("relative.sock", None),
            ("unix:relative.sock", None),
            ("unix://host/tmp/a.sock", None),
            ("unix:///", None),
            ("unix:///tmp/a.sock?x=1", None),
            ("unix:///tmp/a%zz", None),
            ("tcp://localhost:8081", None),
            ("tcp://127.0.0.1", None),
            ("http://127.0.0.1:80", None),
        ];
        for (input, want) in table {
            let got = parse_endpoint(input);
            if let Some(e) = want {
                assert_eq!(got.as_ref().ok(), Some(e), "{input:?} -> {got:?}");
            } else {
                let err = got.expect_err(input);
                assert_eq!(err.class(), ExitClass::Config, "{input:?}");
            }
        }
    }

    #[test]
    fn spiffe_id_must_be_a_spiffe_uri() {
        assert!(parse_spiffe_id("spiffe://example.org/ns/prod/sa/web").is_ok());
        let err = parse_spiffe_id("https://example.org/x").unwrap_err();
        assert_eq!(err.class(), ExitClass::Config);
    }

    #[test]
    fn claims_are_read_from_string_or_array_audience_and_non_spiffe_subject() {
        let c = decode_claims(&jwt(
            r#"{"sub":"system:serviceaccount:ns:web","aud":"infisical","exp":1700000000,"iss":"https://oidc.example"}"#,
        ))
        .unwrap();
        assert_eq!(c.sub.as_deref(), Some("system:serviceaccount:ns:web"));
        assert_eq!(c.aud, vec!["infisical"]);
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(c.iss.as_deref(), Some("https://oidc.example"));

        let c = decode_claims(&jwt(
            r#"{"sub":"spiffe://td/w","aud":["a","b"],"exp":1.5e9}"#,
        ))
        .unwrap();
        assert_eq!(c.aud, vec!["a", "b"]);
        assert_eq!(c.exp, Some(1_500_000_000));
        assert_eq!(c.iss, None);

        assert!(decode_claims("not-a-jwt").is_err());
        assert!(decode_claims("a.!!!.c").is_err());
        assert!(decode_claims(&format!("a.{}.c", b64("[1,2]"))).is_err());
    }

    #[test]
    fn summary_has_the_claims_and_hint_and_reads_iss_from_the_payload() {
        let token = jwt(
            r#"{"sub":"spiffe://example.org/w","aud":["infisical"],"exp":1700000000,"iss":"https://oidc.example"}"#,
        );
        let svid = spiffe::JwtSvid::parse_insecure(&token)
            .unwrap()
            .with_hint("internal");
        let s = summarize(&svid);
        assert_eq!(s.claims.sub.as_deref(), Some("spiffe://example.org/w"));
        assert_eq!(s.claims.aud, vec!["infisical"]);
        assert_eq!(s.claims.exp, Some(1_700_000_000));
        assert_eq!(s.claims.iss.as_deref(), Some("https://oidc.example"));
        assert_eq!(s.hint.as_deref(), Some("internal"));
        assert!(!format!("{s:?}").contains(&token));

        let token = jwt(r#"{"sub":"spiffe://example.org/w","aud":"infisical","exp":1700000000}"#);
        let s = summarize(&spiffe::JwtSvid::parse_insecure(&token).unwrap());
        assert_eq!(s.claims.iss, None);
        assert_eq!(s.hint, None);
    }

    #[test]
    fn remaining_is_zero_after_expiry_and_none_without_exp() {
        let c = JwtClaims {
            exp: Some(100),
            ..JwtClaims::default()
        };
        assert_eq!(
            c.remaining(UNIX_EPOCH + Duration::from_secs(40)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            c.remaining(UNIX_EPOCH + Duration::from_secs(400)),
            Some(Duration::ZERO)
        );
        assert_eq!(JwtClaims::default().remaining(SystemTime::now()), None);
    }

    #[test]
    fn jwt_debug_shows_claims_never_the_token() {
        let token = jwt(r#"{"sub":"spiffe://td/web","aud":"infisical","exp":1}"#);
        let j = Jwt::new(SecretString::from(token.as_str())).unwrap();
        let shown = format!("{j:?} {j:#?}");
        assert!(shown.contains("spiffe://td/web"));
        assert!(shown.contains("[redacted]"));
        for part in token.split('.') {
            assert!(!shown.contains(part), "Debug leaks a token part");
        }
    }

    #[test]
    fn a_missing_or_empty_jwt_file_is_waited_for_and_anything_else_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.jwt");
        let err = read_jwt_file(&missing).unwrap_err();
        assert!(
            matches!(err, FileAttempt::NotReady("does not exist")),
            "{err:?}"
        );

        let empty = dir.path().join("empty.jwt");
        std::fs::write(&empty, "\n").unwrap();
        let err = read_jwt_file(&empty).unwrap_err();
        assert!(matches!(err, FileAttempt::NotReady("is empty")), "{err:?}");

        let junk = dir.path().join("junk.jwt");
        std::fs::write(&junk, "s3cr3t-not-a-jwt").unwrap();
        let FileAttempt::Fatal(err) = read_jwt_file(&junk).unwrap_err() else {
            panic!("a file that is not a JWT must fail at once");
        };
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("junk.jwt"), "{err}");
        assert_eq!(err.class(), ExitClass::Config);

        let good = dir.path().join("good.jwt");
        std::fs::write(
            &good,
            format!("{}\n", jwt(r#"{"sub":"x","aud":"infisical"}"#)),
        )
        .unwrap();
        let j = read_jwt_file(&good).unwrap();
        assert_eq!(j.claims().sub.as_deref(), Some("x"));
        assert!(!j.token().expose_secret().ends_with('\n'));
    }

    fn file_source(path: &Path) -> SvidSource {
        SvidSource::new(SvidSourceOptions::File(path.to_owned()))
            .unwrap()
            .with_backoff(Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(20),
                factor: 2.0,
            })
    }

    #[tokio::test]
    async fn a_jwt_file_that_never_appears_is_unavailable_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.jwt");
        let err = file_source(&path)
            .fetch(Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.class(), ExitClass::Unavailable, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("waited for") && text.contains("late.jwt"),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
    }

    #[tokio::test]
    async fn a_jwt_file_written_after_the_start_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.jwt");
        std::fs::write(&path, "").unwrap();
        let writer = {
            let path = path.clone();
            let token = jwt(r#"{"sub":"late","aud":"infisical"}"#);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(path, token).unwrap();
            })
        };
        let j = file_source(&path)
            .fetch(Instant::now() + Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(j.claims().sub.as_deref(), Some("late"));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_jwt_file_that_is_not_a_jwt_fails_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.jwt");
        std::fs::write(&path, "not-a-jwt").unwrap();
        // A deadline far away: only an immediate failure ends this quickly.
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            file_source(&path).fetch(Instant::now() + Duration::from_secs(3600)),
        )
        .await
        .expect("a malformed file must not be waited for")
        .unwrap_err();
        assert_eq!(err.class(), ExitClass::Config, "{err}");
    }

    #[test]
    fn empty_audience_is_refused_before_any_call() {
        let err = SvidSource::new(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
            endpoint: Endpoint::Unix("/nonexistent".into()),
            audiences: vec![String::new()],
            spiffe_id: None,
            per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        }))
        .unwrap_err();
        assert_eq!(err.class(), ExitClass::Config);
    }

    #[tokio::test]
    async fn a_missing_socket_is_waited_for_then_reported_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let source = SvidSource::new(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
            endpoint: Endpoint::Unix(dir.path().join("agent.sock")),
            audiences: vec!["infisical".into()],
            spiffe_id: None,
            per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        }))
        .unwrap()
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            factor: 2.0,
        });
        let err = source
            .fetch(Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.class(), ExitClass::Unavailable, "{err}");
        let text = err.to_string();
        assert!(text.contains("does not exist yet"), "{text}");
        assert!(text.contains("agent.sock"), "{text}");
    }
}
