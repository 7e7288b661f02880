//! The Workload API source: one `FetchJWTSVID` per login, waiting while the
//! agent is starting or has not attested the workload yet (spiffe.md §1.6),
//! and `check`'s listing of every JWT-SVID the workload has.

use std::io;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use spiffe::transport::{Endpoint, GrpcStatusCode, TransportError};
use spiffe::workload_api::error::WorkloadApiError;
use spiffe::WorkloadApiClient;
use tokio::time::Instant;

use super::{decode_claims, describe_endpoint, Jwt, JwtClaims, SvidError, WorkloadApiOptions};
use crate::error::chain;
use crate::retry::{self, Backoff, Stop, Transient};

/// Below this remaining lifetime a fetched JWT-SVID is logged as a warning:
/// the agent serves cached tokens down to ~half their TTL, less when its server is unreachable.
const SHORT_LIFETIME: Duration = Duration::from_secs(30);

/// A fresh JWT-SVID from the Workload API, waiting (with `backoff`) until `deadline`.
pub(super) async fn fetch(
    options: &WorkloadApiOptions,
    backoff: &Backoff,
    deadline: Instant,
) -> Result<Jwt, SvidError> {
    let started = Instant::now();
    let endpoint = describe_endpoint(&options.endpoint);
    let mut last_reason: Option<String> = None;
    // The last reason from an attempt that had its whole time bound.
    let mut last_whole: Option<(String, &'static str)> = None;
    let result = retry::retry_until(
        backoff,
        deadline,
        options.per_call_timeout,
        |bound| fetch_once(options, bound),
        |err: &Attempt, wait| {
            if let Attempt::Wait {
                reason,
                check,
                cut_short,
            } = err
            {
                if !cut_short {
                    last_whole = Some((reason.clone(), check));
                }
                if last_reason.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(endpoint = %endpoint, retry_in = ?wait, "{reason}; still waiting…");
                } else {
                    tracing::info!(endpoint = %endpoint, "{reason}; waiting…");
                    crate::notify::status(&format!(
                        "waiting for the SPIRE agent at {endpoint}: {reason}"
                    ));
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
            Stop::Fatal(Attempt::Wait {
                reason,
                check,
                cut_short,
            })
            | Stop::Deadline(Attempt::Wait {
                reason,
                check,
                cut_short,
            }),
        ) => {
            let (last, check) = last_word((reason, check, cut_short), last_whole);
            Err(SvidError::GaveUp {
                endpoint,
                waited: retry::to_millis(started.elapsed()),
                last,
                check,
            })
        }
    }
}

/// What a give-up reports as the last reason to wait: the final attempt's,
/// unless the deadline cut that attempt short (then its "did not answer" says
/// only that the time ran out) and an earlier attempt said more.
fn last_word(
    (reason, check, cut_short): (String, &'static str, bool),
    last_whole: Option<(String, &'static str)>,
) -> (String, &'static str) {
    match last_whole {
        Some(earlier) if cut_short => earlier,
        _ => (reason, check),
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

/// The outcome of one failed attempt.
#[derive(Debug)]
enum Attempt {
    /// Worth waiting for: what we wait for, and what to check if it never
    /// comes; `cut_short` when the agent did not answer within a time bound
    /// that the deadline had cut below the per-call timeout.
    Wait {
        reason: String,
        check: &'static str,
        cut_short: bool,
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
                    humantime::format_duration(retry::to_millis(bound))
                ),
                check: CHECK_AGENT,
                cut_short: bound < options.per_call_timeout,
            })
        }
        Ok(Err(e)) => return Err(classify(&e, &options.endpoint)),
        Ok(Ok(svid)) => svid,
    };
    // Copy the token into zeroizing memory and drop the crate's value at once;
    // the claims (`iss` included, which the crate does not expose) are read
    // from the copy by the one decoder.
    let token = SecretString::from(svid.token());
    drop(svid);
    Jwt::new(token).map_err(|reason| {
        Attempt::Fatal(SvidError::Malformed {
            endpoint: describe_endpoint(&options.endpoint),
            detail: format!("the JWT-SVID's claims cannot be read ({reason})"),
        })
    })
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
    SvidSummary {
        // The crate has parsed the token already, so its payload decodes.
        claims: decode_claims(svid.token()).unwrap_or_default(),
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
            cut_short: false,
        },
        Ok(Err(e)) => classify(&e, &options.endpoint),
        Ok(Ok(svids)) => return Ok(svids.iter().map(summarize).collect()),
    };
    Err(match attempt {
        Attempt::Fatal(e) => e,
        Attempt::Wait { reason, check, .. } => SvidError::GaveUp {
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
    let wait = |reason: String, check| Attempt::Wait {
        reason,
        check,
        cut_short: false,
    };
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
    use crate::error::{ExitClass, Failure};
    use crate::svid::jwt::test_token as jwt;
    use crate::svid::{SvidSource, SvidSourceOptions, DEFAULT_PER_CALL_TIMEOUT};

    #[test]
    fn a_give_up_names_the_last_full_reason_not_a_timeout_the_deadline_cut_short() {
        let not_issued = ("not issued yet".to_owned(), CHECK_ENTRY);
        let cut = ("did not answer within 1ms".to_owned(), CHECK_AGENT, true);
        assert_eq!(last_word(cut.clone(), Some(not_issued.clone())), not_issued);
        // Nothing said more, or the final attempt had its whole bound: its own reason.
        assert_eq!(last_word(cut.clone(), None), (cut.0.clone(), CHECK_AGENT));
        let whole = ("did not answer within 30s".to_owned(), CHECK_AGENT, false);
        assert_eq!(
            last_word(whole.clone(), Some(not_issued)),
            (whole.0, CHECK_AGENT)
        );
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
        assert_eq!(err.exit_class(), ExitClass::Unavailable, "{err}");
        let text = err.to_string();
        assert!(text.contains("does not exist yet"), "{text}");
        assert!(text.contains("agent.sock"), "{text}");
    }
}
