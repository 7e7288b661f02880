//! The Infisical client and the session against the testkit's Infisical
//! stand-in (real HTTP on 127.0.0.1): each login method, the refusals and their
//! hints and classes, secret listing with imports, several paths, tags, the v3
//! fallback, `ETag`s, retries of 429/5xx/dropped connections, bad bodies, and
//! the token lifecycle (renew, revoke, re-login after a token error).

use std::time::Duration;

use secrecy::ExposeSecret;
use svid_exec::error::{ExitClass, Failure};
use svid_exec::infisical::{ApiVersion, AuthMethod, FetchOutcome, InfisicalError};
use svid_exec::retry::Transient;
use svid_exec::session::Refresh;
use svid_exec_testkit::infisical::{Fault, InfisicalConfig};
use tokio::time::Instant;

use super::support::*;

#[test]
fn each_login_method_succeeds_without_an_authorization_header() {
    let s = stack();
    let client = s.client();
    let no_iss = s.jwt_for(WORKLOAD, "infisical", None);
    for (method, id, jwt) in [
        (AuthMethod::Oidc, OIDC_IDENTITY, s.jwt()),
        (
            AuthMethod::Jwt,
            JWT_IDENTITY,
            s.jwt_for(WORKLOAD, "infisical", None),
        ),
        (AuthMethod::Spiffe, SPIFFE_IDENTITY, no_iss),
    ] {
        let token = block_on(client.login(method, id, None, &jwt, within(20))).unwrap();
        assert_eq!(token.expires_in, Duration::from_secs(3600), "{method}");
        assert_eq!(token.max_ttl, Duration::from_secs(86400), "{method}");
        assert!(token.exp.is_some(), "{method}: exp decoded from the token");
    }
    let logins: Vec<_> = s
        .infisical
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/login"))
        .collect();
    assert_eq!(logins.len(), 3);
    assert!(logins
        .iter()
        .all(|r| r.status == 200 && !r.authorization_present));
}

#[test]
fn a_wrong_subject_is_refused_with_the_subject_in_the_hint() {
    let s = stack();
    let jwt = s.jwt_for(
        "spiffe://example.org/ns/dev/sa/web",
        "infisical",
        Some(&s.discovery.url()),
    );
    let err = block_on(
        s.client()
            .login(AuthMethod::Oidc, OIDC_IDENTITY, None, &jwt, within(20)),
    )
    .unwrap_err();
    assert!(matches!(err, InfisicalError::LoginRefused { .. }), "{err}");
    assert_eq!(err.exit_class(), ExitClass::Refused);
    let text = shown(&err);
    assert!(
        text.contains("spiffe://example.org/ns/dev/sa/web"),
        "{text}"
    );
    assert!(!text.contains(jwt.token().expose_secret()), "{text}");
}

#[test]
fn a_missing_issuer_on_oidc_is_refused_with_the_jwt_issuer_hint() {
    let s = stack();
    let jwt = s.jwt_for(WORKLOAD, "infisical", None);
    let err = block_on(
        s.client()
            .login(AuthMethod::Oidc, OIDC_IDENTITY, None, &jwt, within(20)),
    )
    .unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Refused, "{err}");
    assert!(shown(&err).contains("jwt_issuer"), "{err}");
}

#[test]
fn a_wrong_audience_is_refused_naming_the_audience_requested() {
    let s = stack();
    let jwt = s.jwt_for(WORKLOAD, "vault", Some(&s.discovery.url()));
    let err = block_on(
        s.client()
            .login(AuthMethod::Oidc, OIDC_IDENTITY, None, &jwt, within(20)),
    )
    .unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Refused, "{err}");
    assert!(shown(&err).contains("vault"), "{err}");
}

#[test]
fn a_wrong_method_for_the_identity_suggests_the_auth_method_flag() {
    let s = stack();
    let err =
        block_on(
            s.client()
                .login(AuthMethod::Oidc, JWT_IDENTITY, None, &s.jwt(), within(20)),
        )
        .unwrap_err();
    assert!(
        matches!(err, InfisicalError::NoSuchAuthMethod { .. }),
        "{err}"
    );
    assert!(shown(&err).contains("--auth-method jwt-auth"), "{err}");
}

#[test]
fn own_secrets_beat_imports_the_last_import_wins_and_later_paths_win() {
    let s = stack();
    s.set("/", "A", "root-a");
    s.set("/", "SHARED", "root-shared");
    s.set("/one", "A", "one-a");
    s.set("/one", "B", "one-b");
    s.set("/two", "B", "two-b");
    s.set("/two", "C", "two-c");
    s.set("/app", "SHARED", "app-shared");
    s.infisical
        .add_import(PROJECT_ID, ENVIRONMENT, "/", ENVIRONMENT, "/one");
    s.infisical
        .add_import(PROJECT_ID, ENVIRONMENT, "/", ENVIRONMENT, "/two");
    let client = s.client();
    let token = s.login(&client);
    let f = s.fetch(&client, &token, &spec(&["/", "/app"])).unwrap();
    assert_eq!(value(&f, "A"), "root-a", "own beats imports");
    assert_eq!(value(&f, "B"), "two-b", "the last import wins");
    assert_eq!(value(&f, "C"), "two-c");
    assert_eq!(value(&f, "SHARED"), "app-shared", "the later path wins");
    assert_eq!(f.api, ApiVersion::V4);
    assert_eq!(f.paths.len(), 2);
    let queries: Vec<_> = s
        .infisical
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v4/secrets")
        .collect();
    assert!(queries.iter().all(|r| r.authorization_present));
    assert!(
        queries[0].query.contains("includeImports=true")
            && queries[0].query.contains("include_imports=true")
    );
}

#[test]
fn values_arrive_byte_exact() {
    let s = stack();
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
    s.set("/", "PEM", pem);
    s.set("/", "UNI", "h\u{e9}llo = \"w\u{f6}rld\" \u{1f511}");
    let client = s.client();
    let token = s.login(&client);
    let f = s.fetch(&client, &token, &spec(&["/"])).unwrap();
    assert_eq!(value(&f, "PEM"), pem);
    assert_eq!(value(&f, "UNI"), "h\u{e9}llo = \"w\u{f6}rld\" \u{1f511}");
}

#[test]
fn tags_filter_and_recursion_reach_sub_folders() {
    let s = stack();
    s.infisical
        .set_secret_tagged(PROJECT_ID, ENVIRONMENT, "/", "TAGGED", "t", &["backend"]);
    s.set("/", "UNTAGGED", "u");
    s.set("/app/db", "DEEP", "d");
    let client = s.client();
    let token = s.login(&client);
    let mut tagged = spec(&["/"]);
    tagged.tags = vec!["backend".into()];
    let f = s.fetch(&client, &token, &tagged).unwrap();
    assert!(f.secrets.contains("TAGGED") && !f.secrets.contains("UNTAGGED"));
    let mut rec = spec(&["/app"]);
    rec.recursive = true;
    let f = s.fetch(&client, &token, &rec).unwrap();
    assert_eq!(value(&f, "DEEP"), "d");
    let f = s.fetch(&client, &token, &spec(&["/app"])).unwrap();
    assert!(!f.secrets.contains("DEEP"), "not recursive by default");
}

#[test]
fn an_old_server_without_v4_is_read_through_v3_for_the_rest_of_the_process() {
    let s = stack_with(
        InfisicalConfig {
            v4_disabled: true,
            ..InfisicalConfig::default()
        },
        (3600, 86400),
    );
    s.set("/", "K", "v");
    s.set("/one", "I", "imported");
    s.infisical
        .add_import(PROJECT_ID, ENVIRONMENT, "/", ENVIRONMENT, "/one");
    let client = s.client();
    let token = s.login(&client);
    let f = s.fetch(&client, &token, &spec(&["/"])).unwrap();
    assert_eq!(f.api, ApiVersion::V3);
    assert_eq!(value(&f, "K"), "v");
    assert_eq!(value(&f, "I"), "imported", "v3 gets include_imports");
    s.fetch(&client, &token, &spec(&["/"])).unwrap();
    let v4_calls = s
        .infisical
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v4/secrets")
        .count();
    assert_eq!(v4_calls, 1, "v4 is not tried again");
}

#[test]
fn project_slug_resolves_to_the_id() {
    let s = stack();
    let client = s.client();
    let token = s.login(&client);
    let id = block_on(client.resolve_project_slug(&token, PROJECT_SLUG, within(20))).unwrap();
    assert_eq!(id, PROJECT_ID);
    let err = block_on(client.resolve_project_slug(&token, "nope", within(20))).unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Config, "{err}");
}

#[test]
fn an_unchanged_poll_is_not_modified_and_a_change_is_seen() {
    let s = stack();
    s.set("/a", "X", "1");
    s.set("/b", "Y", "1");
    let client = s.client();
    let token = s.login(&client);
    let spec = spec(&["/a", "/b"]);
    let first = s.fetch(&client, &token, &spec).unwrap();
    assert!(first.etags.is_complete());
    let again = block_on(client.fetch(&token, &spec, Some(&first.etags), within(20))).unwrap();
    assert!(matches!(again, FetchOutcome::NotModified));
    s.set("/b", "Y", "2");
    let changed = block_on(client.fetch(&token, &spec, Some(&first.etags), within(20))).unwrap();
    let FetchOutcome::Fetched(changed) = changed else {
        panic!("a change must be fetched");
    };
    assert_eq!(
        value(&changed, "X"),
        "1",
        "the unchanged path is fetched again"
    );
    assert_eq!(value(&changed, "Y"), "2");
}

#[test]
fn a_folder_without_permission_is_refused_77() {
    let s = stack();
    s.infisical.add_project("other", "other");
    s.infisical.add_environment("other", ENVIRONMENT);
    let client = s.client();
    let token = s.login(&client);
    let mut other = spec(&["/"]);
    other.project_id = "other".into();
    let err = s.fetch(&client, &token, &other).unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Refused, "{err}");
    assert!(!err.needs_login());
}

#[test]
fn server_errors_and_rate_limits_are_retried_until_success() {
    let s = stack();
    s.set("/", "K", "v");
    let client = s.client();
    let token = s.login(&client);
    s.infisical
        .fail_next("/api/v4/secrets", 1, Fault::Status(503));
    s.infisical
        .fail_next("/api/v4/secrets", 1, Fault::Status(500));
    s.infisical.fail_next(
        "/api/v4/secrets",
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
            header: false,
        },
    );
    s.infisical.fail_next(
        "/api/v4/secrets",
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
            header: true,
        },
    );
    s.infisical
        .fail_next("/api/v4/secrets", 1, Fault::DropConnection);
    let f = s.fetch(&client, &token, &spec(&["/"])).unwrap();
    assert_eq!(value(&f, "K"), "v");
    let statuses: Vec<u16> = s
        .infisical
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v4/secrets")
        .map(|r| r.status)
        .collect();
    assert!(statuses.len() >= 6, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200));
}

#[test]
fn a_server_down_until_the_deadline_is_unavailable() {
    let mut s = stack();
    let client = s.client();
    s.infisical.stop();
    let err = block_on(client.login(
        AuthMethod::Oidc,
        OIDC_IDENTITY,
        None,
        &s.jwt(),
        Instant::now() + Duration::from_millis(400),
    ))
    .unwrap_err();
    assert!(matches!(err, InfisicalError::GaveUp { .. }), "{err}");
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
}

#[test]
fn garbage_and_truncated_bodies_are_clear_errors_not_panics() {
    let s = stack();
    s.set("/", "K", "secret-value-123");
    let client = s.client();
    let token = s.login(&client);
    for fault in [Fault::GarbageBody, Fault::TruncatedBody] {
        s.infisical.fail_next("/api/v4/secrets", 1, fault);
        let err = s.fetch(&client, &token, &spec(&["/"])).unwrap_err();
        assert!(matches!(err, InfisicalError::BadResponse { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Unavailable);
        let text = err.to_string();
        assert!(text.contains("/api/v4/secrets"), "{text}");
        assert!(!text.contains("secret-value-123"), "{text}");
    }
}

#[test]
fn renew_swaps_in_the_returned_token_and_revoke_ends_it() {
    let s = stack();
    let client = s.client();
    let token = s.login(&client);
    let renewed = block_on(client.renew(&token, within(20))).unwrap();
    assert_eq!(
        renewed.login_at, token.login_at,
        "the max-TTL budget keeps its start"
    );
    assert_eq!(s.infisical.counters().renewals, 1);
    block_on(client.revoke(&renewed, within(20))).unwrap();
    assert_eq!(s.infisical.counters().revocations, 1);
    let err = s.fetch(&client, &renewed, &spec(&["/"])).unwrap_err();
    assert!(err.needs_login(), "{err}");
    let posts: Vec<_> = s
        .infisical
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v1/auth/token/"))
        .collect();
    assert!(posts.iter().all(|r| !r.authorization_present));
}

#[test]
fn renewal_refused_at_the_max_ttl_asks_for_a_login() {
    let s = stack_with(
        InfisicalConfig {
            legacy_tokens: true,
            ..InfisicalConfig::default()
        },
        (5, 15),
    );
    let client = s.client();
    let token = s.login(&client);
    s.infisical.advance_clock(Duration::from_secs(12));
    let err = block_on(client.renew(&token, within(20))).unwrap_err();
    assert!(err.needs_login(), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn the_session_logs_in_again_with_a_fresh_jwt_after_a_token_error() {
    let s = stack();
    s.set("/", "K", "v");
    let dir = tempfile::tempdir().unwrap();
    let mut session = s.file_session(dir.path());
    let first = block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
    assert!(matches!(first, FetchOutcome::Fetched(_)));
    // Revoke the token behind the session's back: the next call gets 401.
    let stolen = session.token().unwrap();
    block_on(session.client().revoke(stolen, within(20))).unwrap();
    let again = block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
    assert!(matches!(again, FetchOutcome::Fetched(_)));
    assert_eq!(
        s.infisical.counters().logins,
        2,
        "one fresh login after the token error"
    );
    // A planned refresh renews; shutdown revokes.
    assert_eq!(
        block_on(session.refresh(within(20))).unwrap(),
        Refresh::Renew
    );
    block_on(session.revoke(within(20))).unwrap();
    assert!(session.token().is_none());
    assert_eq!(s.infisical.live_tokens(), 0);
}

#[test]
fn a_fetch_after_the_planned_refresh_leaves_renewal_to_the_supervisor() {
    // TTL 18 s: the planned renewal is at 12 s, the token works until 18 s.
    let s = stack_with(InfisicalConfig::default(), (18, 86_400));
    s.set("/", "K", "v");
    let dir = tempfile::tempdir().unwrap();
    let mut session = s.file_session(dir.path());
    block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
    let planned = session.plan().unwrap();
    std::thread::sleep(
        planned.at.saturating_duration_since(Instant::now()) + Duration::from_millis(300),
    );
    let expiry = svid_exec::session::expires_at(&session.token().unwrap().into()).unwrap();
    assert!(
        Instant::now() + svid_exec::session::CALL_EXPIRY_MARGIN < expiry,
        "precondition: the token is still comfortably valid"
    );
    let again = block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
    assert!(matches!(again, FetchOutcome::Fetched(_)));
    let counters = s.infisical.counters();
    assert_eq!(
        (counters.logins, counters.renewals),
        (1, 0),
        "the poll used the valid token; the planned renewal is the supervisor's"
    );
    assert_eq!(
        block_on(session.refresh(within(20))).unwrap(),
        Refresh::Renew
    );
    assert_eq!(
        s.infisical.counters().renewals,
        1,
        "renewed once, not twice"
    );
}

#[test]
fn a_fetch_keeps_a_still_valid_token_when_renewing_it_fails_transiently() {
    // TTL 6 s: planned renewal at 4 s; a call within 2 s of the expiry renews.
    let s = stack_with(InfisicalConfig::default(), (6, 86_400));
    s.set("/", "K", "v");
    let dir = tempfile::tempdir().unwrap();
    let mut session = s.file_session(dir.path());
    block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
    let planned = session.plan().unwrap();
    std::thread::sleep(
        planned.at.saturating_duration_since(Instant::now()) + Duration::from_millis(300),
    );
    // The renewal is refused with a wait longer than the token has left.
    s.infisical.fail_next(
        "/api/v1/auth/token/renew",
        1,
        Fault::RateLimited {
            retry_after_secs: 60,
            header: true,
        },
    );
    let fetched = block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
    let FetchOutcome::Fetched(fetched) = fetched else {
        panic!("a first fetch without ETags is never Not Modified");
    };
    assert_eq!(value(&fetched, "K"), "v");
    let renewals_tried = s
        .infisical
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/auth/token/renew" && r.status == 429)
        .count();
    assert_eq!(
        renewals_tried, 1,
        "the near-expiry token was due for renewal"
    );
    let counters = s.infisical.counters();
    assert_eq!(
        (counters.logins, counters.renewals),
        (1, 0),
        "the still-valid token was used, no fresh login"
    );
}
