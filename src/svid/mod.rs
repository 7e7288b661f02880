//! JWT-SVID sources: the SPIFFE Workload API (via the `spiffe` crate) or a JWT
//! file, chosen by [`SvidSourceOptions`], each waiting (with the program's one
//! backoff) for what is not there yet at start.
//!
//! The JWT is a bearer credential from the moment it arrives: it is moved into a
//! `SecretString` at once and only its claims (`sub`, `aud`, `exp`, `iss`) stay
//! readable, for logs and hints. The crate's `JwtSvid` is dropped immediately and
//! never `Debug`-formatted. A JWT is fetched fresh for every login, never cached.
//!
//! - `endpoint.rs`: the Workload API address and `--spiffe-id` parsers;
//! - `jwt.rs`: [`Jwt`] and its readable [`JwtClaims`] (decoded in one place);
//! - `file.rs`: `--jwt-file`, waited for while missing or empty;
//! - `workload.rs`: the Workload API, waited for while the agent is not ready.

mod endpoint;
mod file;
mod jwt;
mod workload;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use spiffe::transport::Endpoint;
use spiffe::SpiffeId;
use tokio::time::Instant;

pub use endpoint::{describe_endpoint, parse_endpoint, parse_spiffe_id};
pub(crate) use jwt::decode_payload;
pub use jwt::{decode_claims, Jwt, JwtClaims};
pub use workload::{list_jwt_svids, SvidSummary};

use crate::error::{ExitClass, Failure};
use crate::retry::{Backoff, Transient};

/// SPIRE agent's default socket, the contract's default for `--workload-api-socket`.
pub const DEFAULT_WORKLOAD_API_SOCKET: &str = "unix:///tmp/spire-agent/public/api.sock";

/// Bound on one connect + fetch: first-time Kubernetes workload attestation can
/// hold the first call for about 30 s (spiffe.md §2.5).
pub const DEFAULT_PER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of this module; [`Failure`] gives the exit class and the hint.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// The Workload API address could not be understood.
    #[error("invalid Workload API address {value:?}: {reason}")]
    InvalidEndpoint {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--spiffe-id` is not a SPIFFE ID.
    #[error("--spiffe-id {value:?} is not a SPIFFE ID ({reason})")]
    InvalidSpiffeId {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No audience to request: SPIRE would refuse the call.
    #[error("no audience to request the JWT-SVID for")]
    NoAudience,
    /// The JWT file could not be read.
    #[error("cannot read the JWT file {}: {source}", path.display())]
    JwtFileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The JWT file stayed missing or empty until the deadline.
    #[error("waited for {} {} but it {last}", path.display(), humantime::format_duration(*.waited))]
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
    #[error("the Workload API at {endpoint} rejected the request as invalid (InvalidArgument: {message})")]
    Rejected {
        /// The address.
        endpoint: String,
        /// The agent's message.
        message: String,
    },
    /// The other side does not implement the call (gRPC `Unimplemented`).
    #[error(
        "the service at {endpoint} does not implement FetchJWTSVID (Unimplemented: {message})"
    )]
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
    #[error("no JWT-SVID from the Workload API at {endpoint} within {}: {last}", humantime::format_duration(crate::retry::to_millis(*.waited)))]
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

impl Failure for SvidError {
    fn exit_class(&self) -> ExitClass {
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

    fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::InvalidEndpoint { .. } => {
                "use unix:///path, unix:/path, an absolute /path or tcp://IP:port (--workload-api-socket, SPIFFE_ENDPOINT_SOCKET)"
            }
            Self::InvalidSpiffeId { .. } => "give the full ID, e.g. spiffe://example.org/ns/app/sa/web",
            Self::NoAudience => "give --audience (for example `infisical`)",
            Self::JwtFileUnreadable { .. } => "check --jwt-file and that this user may read it",
            Self::JwtFileNotReady { .. } => {
                "check --jwt-file and that whatever writes it (spiffe-helper, a projected token) is running"
            }
            Self::JwtFileNotJwt { .. } => {
                "check --jwt-file: it must hold one compact JWT (header.payload.signature)"
            }
            Self::Rejected { .. } => "check --audience (must not be empty) and --spiffe-id",
            Self::Unsupported { .. } => {
                "check that the address is a SPIFFE Workload API (a SPIRE agent)"
            }
            Self::Malformed { .. } => return None,
            Self::GaveUp { check, .. } => check,
        };
        Some(hint.to_owned())
    }
}

impl Transient for SvidError {
    /// The waits that ran out of time (the agent, or the file's writer, may
    /// still come) and an agent's malformed answer (it may be restarting).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::GaveUp { .. } | Self::JwtFileNotReady { .. } | Self::Malformed { .. }
        )
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
            SvidSourceOptions::File(path) => file::fetch(path, &self.backoff, deadline).await,
            SvidSourceOptions::WorkloadApi(w) => workload::fetch(w, &self.backoff, deadline).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_audience_is_refused_before_any_call() {
        let err = SvidSource::new(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
            endpoint: Endpoint::Unix("/nonexistent".into()),
            audiences: vec![String::new()],
            spiffe_id: None,
            per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        }))
        .unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
}
