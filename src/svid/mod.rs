//! JWT-SVID sources: the SPIFFE Workload API or a JWT file, chosen by
//! [`SvidSourceOptions`], each waiting (with the program's one backoff) for
//! what is not there yet at start, and saying every 10 s that it still waits.
//!
//! The JWT is a bearer credential from the moment it arrives: it is copied into
//! a `SecretString` at once and only its claims (`sub`, `aud`, `exp`, `iss`)
//! stay readable, for logs and hints; the answer's or file buffer's copy is
//! zeroized when dropped, and never `Debug`-formatted. A JWT is fetched fresh
//! for every login, never cached. The `spiffe` crate gives the address and
//! SPIFFE ID types; the call itself is `grpc.rs`.
//!
//! - `endpoint.rs`: the Workload API address and `--spiffe-id` parsers;
//! - `jwt.rs`: [`Jwt`] and its readable [`JwtClaims`] (decoded in one place);
//! - `file.rs`: `--jwt-file`, waited for while missing or empty, every read bounded;
//! - `workload.rs`: the Workload API, waited for while the agent is not ready,
//!   its answers checked against themselves and the request;
//! - `grpc.rs`: the one unary `FetchJWTSVID` call over HTTP/2;
//! - `diagnose.rs`: what is at the socket's path when connecting fails;
//! - `progress.rs`: the "still waiting" lines of both sources.

mod diagnose;
mod endpoint;
mod file;
mod grpc;
mod jwt;
mod progress;
mod workload;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use spiffe::transport::Endpoint;
use spiffe::SpiffeId;
use tokio::time::Instant;

pub use endpoint::{describe_endpoint, parse_endpoint, parse_spiffe_id, EndpointOrigin};
pub use file::MAX_JWT_FILE_BYTES;
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
    /// The JWT file is not a regular file (a FIFO, a directory, a device):
    /// refused without reading it, so that it cannot block the start.
    #[error("the JWT file {} is {kind}, not a regular file", path.display())]
    JwtFileNotRegular {
        /// The file.
        path: PathBuf,
        /// What it is ("a FIFO (named pipe)", "a directory", ...).
        kind: &'static str,
    },
    /// Someone besides root and this user could change the JWT file (its
    /// owner is another user, or its group or others may write it), and so
    /// make svid-exec log in with another identity's token.
    #[error("the JWT file {} {problem}", path.display())]
    JwtFileNotProtected {
        /// The file.
        path: PathBuf,
        /// Who else could change it, and how.
        problem: String,
    },
    /// The JWT file is larger than [`MAX_JWT_FILE_BYTES`].
    #[error("the JWT file {} is larger than {} KiB, too large to be a JWT", path.display(), limit / 1024)]
    JwtFileTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap, in bytes.
        limit: usize,
    },
    /// Reading the JWT file did not end before the deadline.
    #[error("reading the JWT file {} did not finish within {}", path.display(), humantime::format_duration(*.waited))]
    JwtFileStuck {
        /// The file.
        path: PathBuf,
        /// How long it waited for the read.
        waited: Duration,
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
    /// The agent's answer contradicts itself or the request: the token's `sub`
    /// is not the answer's `spiffe_id` (or the one asked for), or its `aud`
    /// lacks a requested audience. Not retried: no setting of ours can fix it.
    #[error("the Workload API at {endpoint} answered a JWT-SVID that contradicts its answer: {detail}; it is not used")]
    Contradicted {
        /// The address.
        endpoint: String,
        /// Both sides of the contradiction (never the token).
        detail: String,
    },
    /// The address names a directory (often the mount that holds the socket).
    #[error("the Workload API address {endpoint} ({}) is a directory, not a socket; {}", origin.describe(), list_sockets(sockets))]
    SocketIsDirectory {
        /// The address.
        endpoint: String,
        /// Where it came from.
        origin: EndpointOrigin,
        /// The sockets directly in it.
        sockets: Vec<PathBuf>,
    },
    /// Nothing usable before the deadline.
    #[error("no JWT-SVID from the Workload API at {endpoint} ({}) within {}: {last}", origin.describe(), humantime::format_duration(crate::retry::to_millis(*.waited)))]
    GaveUp {
        /// The address.
        endpoint: String,
        /// Where the address came from.
        origin: EndpointOrigin,
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
            | Self::JwtFileNotRegular { .. }
            | Self::JwtFileNotProtected { .. }
            | Self::JwtFileTooLarge { .. }
            | Self::Rejected { .. }
            | Self::SocketIsDirectory { .. }
            | Self::Unsupported { .. } => ExitClass::Config,
            Self::Malformed { .. }
            | Self::Contradicted { .. }
            | Self::GaveUp { .. }
            | Self::JwtFileNotReady { .. }
            | Self::JwtFileStuck { .. } => ExitClass::Unavailable,
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
            Self::JwtFileNotRegular { .. } => {
                "point --jwt-file at the regular file its writer (spiffe-helper, a projected token) keeps up to date; pipes and devices are not read, so that they cannot hold the start"
            }
            Self::JwtFileNotProtected { .. } => {
                "make the file owned by root or by the user svid-exec runs as, and writable by its owner only (e.g. chmod 0600): whoever else can change it can make svid-exec log in with another identity's token"
            }
            Self::JwtFileTooLarge { .. } => {
                "check --jwt-file: it must hold one compact JWT, a few KiB at most"
            }
            Self::JwtFileStuck { .. } => {
                "check the file system that holds --jwt-file (a hung network or FUSE mount?)"
            }
            Self::Rejected { .. } => "check --audience (must not be empty) and --spiffe-id",
            Self::Unsupported { .. } => {
                "check that the address is a SPIFFE Workload API (a SPIRE agent)"
            }
            Self::Malformed { .. } => return None,
            Self::Contradicted { .. } => {
                "the agent does not follow the Workload API: check which process serves this socket, and the SPIRE agent's version and logs"
            }
            Self::SocketIsDirectory { sockets, .. } => {
                return Some(match sockets.first() {
                    Some(socket) => format!(
                        "point SPIFFE_ENDPOINT_SOCKET or --workload-api-socket at the socket itself, e.g. unix://{}",
                        socket.display()
                    ),
                    None => "point SPIFFE_ENDPOINT_SOCKET or --workload-api-socket at the agent's socket, not at a directory (a CSI volume or hostPath mount is the directory that holds it; Docker creates an empty directory when a bind-mounted socket does not exist on the host yet)".to_owned(),
                })
            }
            Self::GaveUp {
                origin: EndpointOrigin::Default,
                check,
                ..
            } => {
                return Some(format!(
                    "SPIFFE_ENDPOINT_SOCKET is unset and --workload-api-socket was not given, so the SPIRE agent's default socket {DEFAULT_WORKLOAD_API_SOCKET} was tried: set one of them to the agent's socket (e.g. unix:///run/spire/sockets/agent.sock); {check}"
                ))
            }
            Self::GaveUp { check, .. } => check,
        };
        Some(hint.to_owned())
    }
}

impl Transient for SvidError {
    /// The waits that ran out of time (the agent, or the file's writer, may
    /// still come, and a hung mount may come back) and an agent's answer that
    /// is malformed or contradicts itself (it may be restarting): with
    /// `--watch`, a token that still works is kept through them. At start,
    /// the sources themselves decide what is waited for.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::GaveUp { .. }
                | Self::JwtFileNotReady { .. }
                | Self::JwtFileStuck { .. }
                | Self::Malformed { .. }
                | Self::Contradicted { .. }
        )
    }
}

/// `sockets in it: unix:///a, unix:///b` or `it holds no socket`.
fn list_sockets(sockets: &[PathBuf]) -> String {
    if sockets.is_empty() {
        return "it holds no socket".to_owned();
    }
    let named: Vec<String> = sockets
        .iter()
        .map(|s| format!("unix://{}", s.display()))
        .collect();
    format!("sockets in it: {}", named.join(", "))
}

/// The warning for several requested audiences, `None` for one (the
/// configuration gives it, with its other warnings, once logging is up).
pub fn several_audiences(audiences: &[String]) -> Option<String> {
    let mut distinct: Vec<&str> = audiences.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() > 1).then(|| {
        format!(
            "several audiences requested ({}): the JWT-SVID's aud claim is then a JSON array, which Infisical versions of 2024 answer with HTTP 500 at login, and every audience can replay the token to the others; request one audience, dedicated to Infisical",
            distinct.join(", ")
        )
    })
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
    /// Where `endpoint` came from, for messages.
    pub origin: EndpointOrigin,
}

/// Fetches JWTs, fresh at every call.
#[derive(Debug)]
pub struct SvidSource {
    options: SvidSourceOptions,
    backoff: Backoff,
    /// The JWT file's mode was found readable by others and said so (once).
    warned_mode: AtomicBool,
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
            warned_mode: AtomicBool::new(false),
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
            SvidSourceOptions::File(path) => {
                file::fetch(path, &self.backoff, deadline, &self.warned_mode).await
            }
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
            origin: EndpointOrigin::Flag,
        }))
        .unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
    }

    #[test]
    fn a_stuck_jwt_file_read_or_a_contradicting_answer_keeps_a_working_token_under_watch() {
        let stuck = SvidError::JwtFileStuck {
            path: PathBuf::from("/run/jwt"),
            waited: Duration::from_secs(1),
        };
        let lying = SvidError::Contradicted {
            endpoint: "unix:///run/spire/agent.sock".to_owned(),
            detail: "the answer is for a but the token's sub claim is b".to_owned(),
        };
        assert!(stuck.is_transient() && lying.is_transient());
        let fifo = SvidError::JwtFileNotRegular {
            path: PathBuf::from("/run/jwt"),
            kind: "a FIFO (named pipe)",
        };
        assert!(!fifo.is_transient(), "a setting to fix is not waited out");
    }

    #[test]
    fn several_distinct_audiences_are_warned_about_one_is_not() {
        let list = |a: &[&str]| a.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(several_audiences(&list(&["infisical"])), None);
        assert_eq!(several_audiences(&list(&["infisical", "infisical"])), None);
        let warning = several_audiences(&list(&["infisical", "vault"])).unwrap();
        assert!(warning.contains("(infisical, vault)"), "{warning}");
        assert!(warning.contains("HTTP 500"), "{warning}");
    }

    #[test]
    fn the_default_address_is_named_as_such_in_the_final_error_and_its_hint() {
        let err = SvidError::GaveUp {
            endpoint: DEFAULT_WORKLOAD_API_SOCKET.to_owned(),
            origin: EndpointOrigin::Default,
            waited: Duration::from_secs(60),
            last: "the Workload API socket does not exist yet".to_owned(),
            check: "check the agent",
        };
        let text = err.to_string();
        assert!(text.contains("SPIFFE_ENDPOINT_SOCKET is unset"), "{text}");
        let hint = err.hint().unwrap();
        assert!(hint.contains("SPIFFE_ENDPOINT_SOCKET is unset"), "{hint}");
        assert!(hint.contains(DEFAULT_WORKLOAD_API_SOCKET), "{hint}");
        assert!(hint.ends_with("check the agent"), "{hint}");

        let from_env = SvidError::GaveUp {
            endpoint: "unix:///run/spire/agent.sock".to_owned(),
            origin: EndpointOrigin::Env,
            waited: Duration::from_secs(60),
            last: "the Workload API socket does not exist yet".to_owned(),
            check: "check the agent",
        };
        assert!(from_env
            .to_string()
            .contains("(from SPIFFE_ENDPOINT_SOCKET)"));
        assert_eq!(from_env.hint().as_deref(), Some("check the agent"));
    }

    #[test]
    fn a_directory_lists_its_sockets_and_the_hint_names_the_first() {
        let err = SvidError::SocketIsDirectory {
            endpoint: "unix:///run/spire".to_owned(),
            origin: EndpointOrigin::Env,
            sockets: vec![PathBuf::from("/run/spire/agent.sock")],
        };
        assert_eq!(err.exit_class(), ExitClass::Config);
        let text = err.to_string();
        assert!(text.contains("is a directory, not a socket"), "{text}");
        assert!(
            text.contains("sockets in it: unix:///run/spire/agent.sock"),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("unix:///run/spire/agent.sock"));
        let empty = SvidError::SocketIsDirectory {
            endpoint: "unix:///run/spire".to_owned(),
            origin: EndpointOrigin::Env,
            sockets: Vec::new(),
        };
        assert!(empty.to_string().contains("it holds no socket"));
    }
}
