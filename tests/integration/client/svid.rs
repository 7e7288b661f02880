//! The JWT-SVID sources against the testkit's fake SPIRE agent (real gRPC on a
//! unix socket): waiting while the agent starts or has not issued an identity
//! yet, giving up at the deadline with what it waited for, reading the claims,
//! picking among several identities, and the file source.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use svid_exec::error::{ExitClass, Failure};
use svid_exec::retry::Backoff;
use svid_exec::svid::{
    parse_endpoint, parse_spiffe_id, EndpointOrigin, SvidError, SvidSource, SvidSourceOptions,
    WorkloadApiOptions, DEFAULT_PER_CALL_TIMEOUT,
};
use svid_exec_testkit::workload::{AgentConfig, FakeAgent, Svid};
use tokio::time::Instant;

use super::support::{block_on, shown};

fn source(endpoint: &str, spiffe_id: Option<&str>) -> SvidSource {
    SvidSource::new(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
        endpoint: parse_endpoint(endpoint).unwrap(),
        audiences: vec!["infisical".into()],
        spiffe_id: spiffe_id.map(|s| parse_spiffe_id(s).unwrap()),
        per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        origin: EndpointOrigin::Flag,
    }))
    .unwrap()
    .with_backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        factor: 2.0,
    })
}

fn within(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn fetch_calls(agent: &FakeAgent) -> usize {
    agent
        .calls()
        .iter()
        .filter(|c| c.method == "FetchJWTSVID")
        .count()
}

#[test]
fn an_agent_that_starts_late_is_waited_for() {
    let agent = FakeAgent::start(AgentConfig::default().start_delay(Duration::from_millis(600)));
    let jwt = block_on(source(&agent.endpoint(), None).fetch(within(30_000))).unwrap();
    assert_eq!(
        jwt.claims().sub.as_deref(),
        Some("spiffe://example.org/workload")
    );
    assert_eq!(jwt.claims().aud, vec!["infisical"]);
    assert!(jwt.claims().exp.is_some());
    assert_eq!(jwt.token().expose_secret().split('.').count(), 3);
}

#[test]
fn an_identity_not_issued_yet_is_waited_for() {
    let agent = FakeAgent::start(AgentConfig::default().deny_first(3));
    let jwt = block_on(source(&agent.endpoint(), None).fetch(within(30_000))).unwrap();
    assert_eq!(
        jwt.claims().sub.as_deref(),
        Some("spiffe://example.org/workload")
    );
    assert!(fetch_calls(&agent) >= 4, "three denials, then success");
}

#[test]
fn an_unavailable_agent_is_retried() {
    let agent = FakeAgent::start(AgentConfig::default().unavailable_first(2));
    block_on(source(&agent.endpoint(), None).fetch(within(30_000))).unwrap();
    assert!(fetch_calls(&agent) >= 3);
}

#[test]
fn the_request_carries_one_audience_and_the_security_header() {
    let agent = FakeAgent::start(AgentConfig::default());
    block_on(source(&agent.endpoint(), None).fetch(within(30_000))).unwrap();
    let calls = agent.calls();
    let call = calls.iter().find(|c| c.method == "FetchJWTSVID").unwrap();
    assert_eq!(call.audience, vec!["infisical"]);
    assert!(call.had_security_header);
}

#[test]
fn an_absent_agent_is_unavailable_at_the_deadline_naming_what_it_waited_for() {
    let mut agent = FakeAgent::start(AgentConfig::default());
    agent.stop();
    let err = block_on(source(&agent.endpoint(), None).fetch(within(400))).unwrap_err();
    assert!(matches!(err, SvidError::GaveUp { .. }), "{err}");
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
    let text = shown(&err);
    assert!(text.contains("does not exist yet"), "{text}");
    assert!(text.contains("agent.sock"), "{text}");
    assert!(text.contains("SPIRE agent is running"), "{text}");
}

#[test]
fn a_stale_socket_is_reported_as_nothing_listening() {
    let mut agent = FakeAgent::start(AgentConfig::default());
    agent.stop_leaving_stale_socket();
    let err = block_on(source(&agent.endpoint(), None).fetch(within(400))).unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
    assert!(err.to_string().contains("nothing is listening"), "{err}");
}

#[test]
fn a_workload_never_registered_gives_up_with_the_registration_hint() {
    let agent = FakeAgent::start(AgentConfig::default().deny_first(u32::MAX));
    let err = block_on(source(&agent.endpoint(), None).fetch(within(400))).unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
    let text = shown(&err);
    assert!(text.contains("has not issued an identity"), "{text}");
    assert!(text.contains("registration entry"), "{text}");
}

#[test]
fn a_slow_agent_is_bounded_by_the_per_call_timeout() {
    let agent = FakeAgent::start(AgentConfig::default().latency(Duration::from_secs(5)));
    let options = WorkloadApiOptions {
        endpoint: parse_endpoint(&agent.endpoint()).unwrap(),
        audiences: vec!["infisical".into()],
        spiffe_id: None,
        per_call_timeout: Duration::from_millis(150),
        origin: EndpointOrigin::Flag,
    };
    let src = SvidSource::new(SvidSourceOptions::WorkloadApi(options)).unwrap();
    let err = block_on(src.fetch(within(600))).unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
    assert!(err.to_string().contains("did not answer within"), "{err}");
}

#[test]
fn the_issuer_is_read_from_the_token() {
    let agent = FakeAgent::start(AgentConfig::default().issuer("https://oidc.example.org"));
    let jwt = block_on(source(&agent.endpoint(), None).fetch(within(30_000))).unwrap();
    assert_eq!(
        jwt.claims().iss.as_deref(),
        Some("https://oidc.example.org")
    );
}

#[test]
fn spiffe_id_picks_among_several_identities() {
    let agent = FakeAgent::start(AgentConfig::default().svids([
        Svid::new("spiffe://example.org/first"),
        Svid::new("spiffe://example.org/second"),
    ]));
    let jwt = block_on(
        source(&agent.endpoint(), Some("spiffe://example.org/second")).fetch(within(30_000)),
    )
    .unwrap();
    assert_eq!(
        jwt.claims().sub.as_deref(),
        Some("spiffe://example.org/second")
    );
    let calls = agent.calls();
    assert!(calls
        .iter()
        .any(|c| c.spiffe_id == "spiffe://example.org/second"));
}

#[test]
fn a_bare_socket_path_reaches_the_agent() {
    let agent = FakeAgent::start(AgentConfig::default());
    let bare = agent.socket_path().to_str().unwrap().to_owned();
    assert!(bare.starts_with('/'));
    block_on(source(&bare, None).fetch(within(30_000))).unwrap();
}

#[test]
fn the_file_source_reads_the_file_at_every_fetch() {
    let agent = FakeAgent::start(AgentConfig::default().issuer("https://iss.example"));
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("svid.jwt");
    let src = SvidSource::new(SvidSourceOptions::File(path.clone())).unwrap();
    std::fs::write(
        &path,
        agent.mint(
            "spiffe://example.org/a",
            &["infisical"],
            Duration::from_secs(60),
        ),
    )
    .unwrap();
    let first = block_on(src.fetch(within(1000))).unwrap();
    assert_eq!(
        first.claims().sub.as_deref(),
        Some("spiffe://example.org/a")
    );
    std::fs::write(
        &path,
        agent.mint(
            "spiffe://example.org/b",
            &["infisical"],
            Duration::from_secs(60),
        ),
    )
    .unwrap();
    let second = block_on(src.fetch(within(1000))).unwrap();
    assert_eq!(
        second.claims().sub.as_deref(),
        Some("spiffe://example.org/b")
    );
    assert_eq!(second.claims().iss.as_deref(), Some("https://iss.example"));
}

#[test]
fn the_fetched_jwt_debug_never_shows_the_token() {
    let agent = FakeAgent::start(AgentConfig::default());
    let jwt = block_on(source(&agent.endpoint(), None).fetch(within(30_000))).unwrap();
    let shown = format!("{jwt:?}");
    let token = jwt.token().expose_secret();
    for part in token.split('.') {
        assert!(!shown.contains(part));
    }
}
