//! The Workload API source: one `FetchJWTSVID` per login, waiting while the
//! agent is starting or has not attested the workload yet (spiffe.md §1.6),
//! and `check`'s listing of every JWT-SVID the workload has.
//!
//! An answer is checked against itself and the request before its token is
//! used: the token's `sub` must be the answer's `spiffe_id` (and the one asked
//! for with `--spiffe-id`), and its `aud` must hold every requested audience.

use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use spiffe::transport::Endpoint;
use tokio::time::Instant;

use super::diagnose::{not_a_socket, permission_detail, NotSocket};
use super::grpc::{self, CallError, Code, JwtSvidEntry, JwtSvidRequest, JwtSvidResponse};
use super::progress::{elapsed_of, with_progress, PROGRESS_EVERY};
use super::{
    decode_claims, describe_endpoint, EndpointOrigin, Jwt, JwtClaims, SvidError,
    WorkloadApiOptions, DEFAULT_WORKLOAD_API_SOCKET,
};
use crate::retry::{self, Backoff, Stop, Transient};

/// Below this remaining lifetime a fetched JWT-SVID is logged as a warning:
/// the agent serves cached tokens down to ~half their TTL, less when its server is unreachable.
const SHORT_LIFETIME: Duration = Duration::from_secs(30);

/// A fresh JWT-SVID from the Workload API, waiting (with `backoff`) until
/// `deadline`, and saying every [`PROGRESS_EVERY`] that it still waits.
pub(super) async fn fetch(
    options: &WorkloadApiOptions,
    backoff: &Backoff,
    deadline: Instant,
) -> Result<Jwt, SvidError> {
    let started = Instant::now();
    let total = deadline.saturating_duration_since(started);
    let endpoint = describe_endpoint(&options.endpoint);
    let note = if options.origin == EndpointOrigin::Default {
        format!(
            " (SPIFFE_ENDPOINT_SOCKET is unset and --workload-api-socket was not given: trying the default {DEFAULT_WORKLOAD_API_SOCKET})"
        )
    } else {
        String::new()
    };
    // What the attempts said so far, for the log, the progress lines and the
    // final error; shared by the retry's callback and the progress ticks.
    let waited_for: Mutex<WaitedFor> = Mutex::new(WaitedFor::default());
    let attempts = retry::retry_until(
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
                let mut seen = waited_for.lock().unwrap_or_else(PoisonError::into_inner);
                if !cut_short {
                    seen.last_whole = Some((reason.clone(), check));
                }
                if seen.last.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(endpoint = %endpoint, retry_in = ?wait, "{reason}; still waiting…");
                } else {
                    tracing::info!(endpoint = %endpoint, "{reason}; waiting…{note}");
                    crate::notify::status(&format!(
                        "waiting for the SPIRE agent at {endpoint}: {reason}"
                    ));
                    seen.last = Some(reason.clone());
                }
            }
        },
    );
    let result = with_progress(attempts, PROGRESS_EVERY, |elapsed| {
        let why = waited_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .clone()
            .unwrap_or_else(|| "the first call is not answered yet".to_owned());
        tracing::info!(
            "still waiting for the SPIRE agent at {endpoint}, {}: {why}",
            elapsed_of(elapsed, total)
        );
    })
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
            let last_whole = waited_for
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .last_whole;
            let (last, check) = last_word((reason, check, cut_short), last_whole);
            Err(SvidError::GaveUp {
                endpoint,
                origin: options.origin,
                waited: retry::to_millis(started.elapsed()),
                last,
                check,
            })
        }
    }
}

/// What the failed attempts of one fetch said.
#[derive(Debug, Default)]
struct WaitedFor {
    /// The last reason logged (a repeated reason is logged at debug level only).
    last: Option<String>,
    /// The last reason from an attempt that had its whole time bound.
    last_whole: Option<(String, &'static str)>,
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

fn no_answer_within(bound: Duration) -> String {
    format!(
        "the Workload API did not answer within {} (first-time workload attestation can take ~30 s)",
        humantime::format_duration(retry::to_millis(bound))
    )
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
const CHECK_PERMISSION: &str = "give this user write access to the socket and search access to the directories above it (SPIRE makes its socket 0777; a restrictive mount or a different user/group is the usual cause); this is retried until --startup-timeout in case a CSI mount is still coming";

/// One `FetchJWTSVID`, bounded by `bound`.
async fn call(options: &WorkloadApiOptions, bound: Duration) -> Result<JwtSvidResponse, Attempt> {
    let request = JwtSvidRequest {
        audience: options.audiences.clone(),
        spiffe_id: options
            .spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    let answer = grpc::unary(&options.endpoint, grpc::FETCH_JWT_SVID, &request);
    match tokio::time::timeout(bound, answer).await {
        Err(_) => Err(Attempt::Wait {
            reason: no_answer_within(bound),
            check: CHECK_AGENT,
            cut_short: bound < options.per_call_timeout,
        }),
        Ok(Err(e)) => Err(classify(e, options)),
        Ok(Ok(answer)) => Ok(answer),
    }
}

async fn fetch_once(options: &WorkloadApiOptions, bound: Duration) -> Result<Jwt, Attempt> {
    let answer = call(options, bound).await?;
    let malformed = |detail: String| {
        Attempt::Fatal(SvidError::Malformed {
            endpoint: describe_endpoint(&options.endpoint),
            detail,
        })
    };
    // The first JWT-SVID is the workload's default one (the spec's order).
    let entry = answer
        .svids
        .first()
        .ok_or_else(|| malformed("an answer without any JWT-SVID".to_owned()))?;
    if entry.svid.is_empty() {
        return Err(malformed("a JWT-SVID entry without its token".to_owned()));
    }
    // The token goes into zeroizing memory; the answer's copy is zeroized
    // when the answer is dropped (`JwtSvidEntry`'s `Drop`).
    let jwt = Jwt::new(SecretString::from(entry.svid.as_str()))
        .map_err(|reason| malformed(format!("the JWT-SVID's claims cannot be read ({reason})")))?;
    match contradiction(entry, jwt.claims(), options) {
        None => Ok(jwt),
        Some(c) => Err(Attempt::Fatal(c.into_error(&options.endpoint))),
    }
}

/// What is wrong with an answer, judged against itself and the request.
#[derive(Debug, PartialEq, Eq)]
enum Contradiction {
    /// A field the Workload API requires is missing or invalid.
    Malformed(String),
    /// The token's claims contradict the answer or the request.
    Claims(String),
}

impl Contradiction {
    /// The error a fetch from `endpoint` fails with for it.
    fn into_error(self, endpoint: &Endpoint) -> SvidError {
        let endpoint = describe_endpoint(endpoint);
        match self {
            Self::Malformed(detail) => SvidError::Malformed { endpoint, detail },
            Self::Claims(detail) => SvidError::Contradicted { endpoint, detail },
        }
    }
}

/// Whether `entry` (with the token's `claims`) is what was asked for: its
/// `spiffe_id` a SPIFFE ID (the one given by `--spiffe-id`, if any), the
/// token's `sub` that same ID, its `aud` every requested audience, an `exp`.
fn contradiction(
    entry: &JwtSvidEntry,
    claims: &JwtClaims,
    options: &WorkloadApiOptions,
) -> Option<Contradiction> {
    let id = entry.spiffe_id.as_str();
    if let Err(e) = spiffe::SpiffeId::new(id) {
        return Some(Contradiction::Malformed(format!(
            "the answer's spiffe_id {id:?} is not a SPIFFE ID ({e})"
        )));
    }
    if let Some(asked) = &options.spiffe_id {
        if asked.to_string() != id {
            return Some(Contradiction::Claims(format!(
                "--spiffe-id asked for {asked} but the answer is for {id}"
            )));
        }
    }
    match claims.sub.as_deref() {
        Some(sub) if sub == id => {}
        Some(sub) => {
            return Some(Contradiction::Claims(format!(
                "the answer is for {id} but the token's sub claim is {sub}"
            )))
        }
        None => {
            return Some(Contradiction::Claims(format!(
                "the answer is for {id} but the token has no sub claim"
            )))
        }
    }
    if let Some(missing) = options.audiences.iter().find(|a| !claims.aud.contains(a)) {
        return Some(Contradiction::Claims(format!(
            "the request asked for audience {missing:?} but the token's aud claim is {:?}",
            claims.aud
        )));
    }
    if claims.exp.is_none() {
        return Some(Contradiction::Malformed(
            "a JWT-SVID without an exp claim".to_owned(),
        ));
    }
    None
}

/// What `check` shows of one JWT-SVID the workload has: its readable claims,
/// the agent's hint, and what is wrong with it. Never the token.
#[derive(Debug, Default)]
pub struct SvidSummary {
    /// `sub` (the SPIFFE ID), `aud`, `exp` and `iss`.
    pub claims: JwtClaims,
    /// The Workload API's hint for this SVID, when the registration entry sets one.
    pub hint: Option<String>,
    /// The error a fetch would refuse this JWT-SVID with (its token
    /// contradicts the answer or the request, or the answer is malformed), if
    /// it would: the same judgement as a fetch's, made on every entry.
    pub refused: Option<SvidError>,
}

fn summarize(entry: &JwtSvidEntry, options: &WorkloadApiOptions) -> SvidSummary {
    let (claims, refused) = match decode_claims(&entry.svid) {
        Ok(claims) => {
            let refused = contradiction(entry, &claims, options);
            (claims, refused)
        }
        // Unreadable claims show as absent.
        Err(reason) => (
            JwtClaims::default(),
            Some(Contradiction::Malformed(format!(
                "the JWT-SVID's claims cannot be read ({reason})"
            ))),
        ),
    };
    SvidSummary {
        claims,
        hint: Some(entry.hint.clone()).filter(|h| !h.is_empty()),
        refused: refused.map(|c| c.into_error(&options.endpoint)),
    }
}

/// Every JWT-SVID the workload has for `options.audiences` (one call, bounded
/// by `deadline`; the agent is expected to be up already), as summaries, each
/// judged as a fetch would judge it: each token is dropped as soon as its
/// claims are read.
pub async fn list_jwt_svids(
    options: &WorkloadApiOptions,
    deadline: Instant,
) -> Result<Vec<SvidSummary>, SvidError> {
    let endpoint = describe_endpoint(&options.endpoint);
    let started = Instant::now();
    let bound = deadline
        .saturating_duration_since(started)
        .min(options.per_call_timeout);
    match call(options, bound).await {
        Ok(answer) => Ok(answer
            .svids
            .iter()
            .map(|entry| summarize(entry, options))
            .collect()),
        Err(Attempt::Fatal(e)) => Err(e),
        Err(Attempt::Wait { reason, check, .. }) => Err(SvidError::GaveUp {
            endpoint,
            origin: options.origin,
            waited: retry::to_millis(started.elapsed()),
            last: reason,
            check,
        }),
    }
}

/// Sorts a failed call into wait or fail (spiffe.md §1.6 policy table).
fn classify(err: CallError, options: &WorkloadApiOptions) -> Attempt {
    let name = describe_endpoint(&options.endpoint);
    let wait = |reason: String, check| Attempt::Wait {
        reason,
        check,
        cut_short: false,
    };
    match err {
        CallError::Connect(e) => connect_failed(&e, options),
        CallError::Transport(detail) => wait(
            format!("the Workload API call failed ({detail}); the agent may have restarted"),
            CHECK_AGENT,
        ),
        CallError::Status { code, message } => match code {
            Code::INVALID_ARGUMENT => Attempt::Fatal(SvidError::Rejected {
                endpoint: name,
                message,
            }),
            Code::UNIMPLEMENTED => Attempt::Fatal(SvidError::Unsupported {
                endpoint: name,
                message,
            }),
            Code::UNAVAILABLE => wait(
                format!("the SPIRE agent is unavailable (Unavailable: {message})"),
                CHECK_AGENT,
            ),
            // SPIRE's text when no registration entry matches (yet).
            Code::PERMISSION_DENIED if message.contains("no identity issued") => wait(
                "the SPIRE agent has not issued an identity for this workload yet (PermissionDenied)"
                    .into(),
                CHECK_ENTRY,
            ),
            Code::PERMISSION_DENIED => wait(
                format!("the SPIRE agent denied the request (PermissionDenied: {message})"),
                CHECK_ENTRY,
            ),
            Code::UNKNOWN => wait(
                format!(
                    "the Workload API call failed (Unknown: {message}); the agent may have restarted"
                ),
                CHECK_AGENT,
            ),
            code => wait(
                format!("the SPIRE agent answered {code} ({message})"),
                CHECK_AGENT,
            ),
        },
        CallError::Malformed(detail) => Attempt::Fatal(SvidError::Malformed {
            endpoint: name,
            detail,
        }),
    }
}

/// A failed connect: what is (or is not) at the address, and whether to wait.
fn connect_failed(err: &io::Error, options: &WorkloadApiOptions) -> Attempt {
    let wait = |reason: String, check| Attempt::Wait {
        reason,
        check,
        cut_short: false,
    };
    let path = match &options.endpoint {
        Endpoint::Unix(path) => Some(path.as_path()),
        _ => None,
    };
    match (err.kind(), path) {
        (io::ErrorKind::NotFound, _) => wait(
            "the Workload API socket does not exist yet (SPIRE agent not started, or socket not mounted)".into(),
            CHECK_AGENT,
        ),
        (io::ErrorKind::ConnectionRefused, Some(path)) => match not_a_socket(path) {
            Some(NotSocket::Directory(sockets)) => Attempt::Fatal(SvidError::SocketIsDirectory {
                endpoint: describe_endpoint(&options.endpoint),
                origin: options.origin,
                sockets,
            }),
            Some(NotSocket::Other(kind)) => wait(
                format!("the Workload API address is {kind}, not a socket"),
                CHECK_AGENT,
            ),
            None => wait(
                "nothing is listening on the Workload API socket yet (SPIRE agent starting?)".into(),
                CHECK_AGENT,
            ),
        },
        (io::ErrorKind::ConnectionRefused, None) => wait(
            "nothing is listening on the Workload API socket yet (SPIRE agent starting?)".into(),
            CHECK_AGENT,
        ),
        (io::ErrorKind::PermissionDenied, Some(path)) => wait(
            format!(
                "this user may not open the Workload API socket (permission denied): {}",
                permission_detail(path)
            ),
            CHECK_PERMISSION,
        ),
        (io::ErrorKind::PermissionDenied, None) => wait(
            "this user may not open the Workload API socket (permission denied)".into(),
            CHECK_PERMISSION,
        ),
        _ => wait(
            format!("cannot connect to the Workload API ({err})"),
            CHECK_AGENT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};
    use crate::svid::jwt::test_token as jwt;
    use crate::svid::{parse_spiffe_id, SvidSource, SvidSourceOptions, DEFAULT_PER_CALL_TIMEOUT};

    fn entry(spiffe_id: &str, payload: &str, hint: &str) -> JwtSvidEntry {
        JwtSvidEntry {
            spiffe_id: spiffe_id.to_owned(),
            svid: jwt(payload),
            hint: hint.to_owned(),
        }
    }

    fn options(audiences: &[&str], spiffe_id: Option<&str>) -> WorkloadApiOptions {
        WorkloadApiOptions {
            endpoint: Endpoint::Unix("/nonexistent/agent.sock".into()),
            audiences: audiences.iter().map(ToString::to_string).collect(),
            spiffe_id: spiffe_id.map(|id| parse_spiffe_id(id).unwrap()),
            per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
            origin: EndpointOrigin::Flag,
        }
    }

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
        let e = entry(
            "spiffe://example.org/w",
            r#"{"sub":"spiffe://example.org/w","aud":["infisical"],"exp":1700000000,"iss":"https://oidc.example"}"#,
            "internal",
        );
        let o = options(&["infisical"], None);
        let s = summarize(&e, &o);
        assert_eq!(s.claims.sub.as_deref(), Some("spiffe://example.org/w"));
        assert_eq!(s.claims.aud, vec!["infisical"]);
        assert_eq!(s.claims.exp, Some(1_700_000_000));
        assert_eq!(s.claims.iss.as_deref(), Some("https://oidc.example"));
        assert_eq!(s.hint.as_deref(), Some("internal"));
        assert!(!format!("{s:?}").contains(&e.svid));

        let e = entry(
            "spiffe://example.org/w",
            r#"{"sub":"spiffe://example.org/w","aud":"infisical","exp":1700000000}"#,
            "",
        );
        let s = summarize(&e, &o);
        assert_eq!(s.claims.iss, None);
        assert_eq!(s.hint, None);
        assert!(s.refused.is_none(), "{:?}", s.refused);
    }

    #[test]
    fn every_listed_svid_is_judged_as_a_fetch_would_judge_it() {
        let o = options(&["infisical"], None);
        let lying = entry(
            "spiffe://example.org/w",
            r#"{"sub":"spiffe://example.org/impostor","aud":"infisical","exp":1}"#,
            "",
        );
        let s = summarize(&lying, &o);
        assert_eq!(
            s.claims.sub.as_deref(),
            Some("spiffe://example.org/impostor")
        );
        let Some(refused @ SvidError::Contradicted { .. }) = s.refused else {
            panic!("a contradicting token is flagged: {:?}", s.refused);
        };
        assert_eq!(refused.exit_class(), ExitClass::Unavailable);
        let text = refused.to_string();
        assert!(
            text.contains("the answer is for spiffe://example.org/w"),
            "{text}"
        );
        let no_exp = entry(
            "spiffe://example.org/w",
            r#"{"sub":"spiffe://example.org/w","aud":"infisical"}"#,
            "",
        );
        assert!(matches!(
            summarize(&no_exp, &o).refused,
            Some(SvidError::Malformed { .. })
        ));
        let garbage = JwtSvidEntry {
            spiffe_id: "spiffe://example.org/w".to_owned(),
            svid: "not-a-jwt".to_owned(),
            hint: String::new(),
        };
        let s = summarize(&garbage, &o);
        assert!(
            matches!(&s.refused, Some(SvidError::Malformed { detail, .. }) if detail.contains("cannot be read")),
            "{:?}",
            s.refused
        );
        assert_eq!(s.claims, JwtClaims::default());
    }

    /// The check of an answer, on a token with `payload`.
    fn judge(id: &str, payload: &str, options: &WorkloadApiOptions) -> Option<Contradiction> {
        let e = entry(id, payload, "");
        let claims = decode_claims(&e.svid).unwrap();
        contradiction(&e, &claims, options)
    }

    #[test]
    fn an_answer_must_agree_with_itself_and_the_request() {
        let w = "spiffe://example.org/w";
        let one = options(&["infisical"], None);
        let good = r#"{"sub":"spiffe://example.org/w","aud":"infisical","exp":1}"#;
        assert_eq!(judge(w, good, &one), None);
        assert_eq!(judge(w, good, &options(&["infisical"], Some(w))), None);
        let both = r#"{"sub":"spiffe://example.org/w","aud":["infisical","b"],"exp":1}"#;
        assert_eq!(judge(w, both, &options(&["b", "infisical"], None)), None);

        let claims = |c: Option<Contradiction>| match c {
            Some(Contradiction::Claims(text)) => text,
            other => panic!("expected a contradiction, got {other:?}"),
        };
        let text = claims(judge(
            w,
            r#"{"sub":"spiffe://example.org/impostor","aud":"infisical","exp":1}"#,
            &one,
        ));
        assert!(text.contains("spiffe://example.org/w"), "{text}");
        assert!(text.contains("spiffe://example.org/impostor"), "{text}");
        let text = claims(judge(w, r#"{"aud":"infisical","exp":1}"#, &one));
        assert!(text.contains("no sub claim"), "{text}");
        let text = claims(judge(
            w,
            r#"{"sub":"spiffe://example.org/w","aud":["other"],"exp":1}"#,
            &one,
        ));
        assert!(
            text.contains(r#""infisical""#) && text.contains(r#"["other"]"#),
            "{text}"
        );
        let text = claims(judge(w, good, &options(&["infisical", "b"], None)));
        assert!(text.contains(r#""b""#), "{text}");
        let text = claims(judge(
            w,
            good,
            &options(&["infisical"], Some("spiffe://example.org/other")),
        ));
        assert!(
            text.contains("--spiffe-id asked for spiffe://example.org/other"),
            "{text}"
        );

        assert!(matches!(
            judge("not-an-id", good, &one),
            Some(Contradiction::Malformed(_))
        ));
        assert!(matches!(
            judge(
                w,
                r#"{"sub":"spiffe://example.org/w","aud":"infisical"}"#,
                &one
            ),
            Some(Contradiction::Malformed(_))
        ));
    }

    #[test]
    fn connect_failures_say_what_is_at_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(&["infisical"], None);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);

        o.endpoint = Endpoint::Unix(dir.path().to_owned());
        let Attempt::Fatal(err) = connect_failed(&refused, &o) else {
            panic!("a directory is not waited for");
        };
        assert!(matches!(err, SvidError::SocketIsDirectory { .. }), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        o.endpoint = Endpoint::Unix(file);
        let Attempt::Wait { reason, .. } = connect_failed(&refused, &o) else {
            panic!("a file may still be replaced by the agent's socket");
        };
        assert!(reason.contains("a regular file, not a socket"), "{reason}");

        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let Attempt::Wait { reason, check, .. } = connect_failed(&denied, &o) else {
            panic!("permission denied is retried (a CSI mount may be coming)");
        };
        assert!(reason.contains("svid-exec runs as uid"), "{reason}");
        assert!(check.contains("retried"), "{check}");
    }

    #[test]
    fn statuses_are_sorted_into_wait_or_fail() {
        let o = options(&["infisical"], None);
        let status = |code, message: &str| CallError::Status {
            code,
            message: message.to_owned(),
        };
        let is_fatal = |e| matches!(classify(e, &o), Attempt::Fatal(_));
        assert!(is_fatal(status(
            Code::INVALID_ARGUMENT,
            "audience must be specified"
        )));
        assert!(is_fatal(status(Code::UNIMPLEMENTED, "")));
        assert!(is_fatal(CallError::Malformed("x".into())));
        assert!(!is_fatal(status(
            Code::UNAVAILABLE,
            "workload attestation failed"
        )));
        assert!(!is_fatal(status(Code::UNKNOWN, "transport error")));
        assert!(!is_fatal(CallError::Transport("connection reset".into())));
        let Attempt::Wait { reason, check, .. } =
            classify(status(Code::PERMISSION_DENIED, "no identity issued"), &o)
        else {
            panic!("not registered yet is waited for");
        };
        assert!(reason.contains("has not issued an identity"), "{reason}");
        assert_eq!(check, CHECK_ENTRY);
    }

    #[tokio::test]
    async fn a_missing_socket_is_waited_for_then_reported_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let source = SvidSource::new(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
            endpoint: Endpoint::Unix(dir.path().join("agent.sock")),
            ..options(&["infisical"], None)
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
