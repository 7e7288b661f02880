//! The access-token lifecycle of the Infisical stand-in: renew, revoke,
//! expiry, uses, and the legacy server's behaviour (§3, §9). The server's
//! clock is advanced instead of sleeping.

use std::time::Duration;

use crate::support::*;
use svid_exec_testkit::infisical::InfisicalConfig;
use svid_exec_testkit::stack::StackOptions;

const SECRETS: &str = "secretPath=/&viewSecretValue=true";

#[test]
fn renew_returns_a_new_string_bounded_by_the_max_ttl_budget() {
    let stack = stand_ins_with(StackOptions {
        token_ttl: Some((10, 15)),
        ..options()
    });
    let login = stack
        .client()
        .login("oidc", OIDC_IDENTITY, &stack.svid())
        .json();
    let first = login["accessToken"].as_str().unwrap().to_string();
    assert_eq!(login["expiresIn"], 10);
    let c1 = claims_of(&first);
    assert_eq!(
        c1["exp"].as_u64().unwrap() - c1["iat"].as_u64().unwrap(),
        10
    );

    stack.infisical.advance_clock(Duration::from_secs(8));
    let renewed = stack.client().renew(&first);
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let renewed = renewed.json();
    let second = renewed["accessToken"].as_str().unwrap().to_string();
    assert_ne!(second, first, "current servers mint a new string");
    let c2 = claims_of(&second);
    assert_eq!(c2["identityAccessTokenId"], c1["identityAccessTokenId"]);
    // About 7 of the 15 s budget remain: less than the 10 s TTL.
    let lifetime = renewed["expiresIn"].as_u64().unwrap();
    assert!((1..=7).contains(&lifetime), "{renewed}");
    assert!(c2["exp"].as_u64().unwrap() <= c1["creationEpoch"].as_u64().unwrap() + 15);
    assert_eq!(stack.client().v4(&second, SECRETS).status, 200);
    assert_eq!(stack.infisical.counters().renewals, 1);

    // Past the budget the token has expired and cannot be renewed.
    stack.infisical.advance_clock(Duration::from_secs(8));
    stack.client().renew(&second).error(403, "TokenError");
}

#[test]
fn an_expired_token_gets_403_token_error_everywhere() {
    let stack = stand_ins_with(StackOptions {
        token_ttl: Some((2, 100)),
        ..options()
    });
    let token = stack.token();
    assert_eq!(stack.client().v4(&token, SECRETS).status, 200);
    stack.infisical.advance_clock(Duration::from_secs(2));
    let body = stack.client().v4(&token, SECRETS).error(403, "TokenError");
    assert_eq!(
        body["message"],
        "Your token has expired. Please re-authenticate."
    );
    stack.client().renew(&token).error(403, "TokenError");
}

#[test]
fn revoked_tokens_get_401_everywhere() {
    let stack = stand_ins();
    let token = stack.token();
    let r = stack.client().revoke(&token);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["message"], "Successfully revoked access token");
    let body = stack
        .client()
        .v4(&token, SECRETS)
        .error(401, "UnauthorizedError");
    assert_eq!(
        body["message"],
        "Failed to authorize: token has been revoked"
    );
    let body = stack.client().renew(&token).error(401, "UnauthorizedError");
    assert_eq!(body["message"], "Cannot renew: token has been revoked");
    stack
        .client()
        .revoke(&token)
        .error(401, "UnauthorizedError");
    assert_eq!(stack.infisical.counters().revocations, 1);
    assert_eq!(stack.infisical.live_tokens(), 0);
}

#[test]
fn every_bearer_request_counts_a_use_including_304s() {
    let stack = stand_ins_with(StackOptions {
        token_uses: Some(3),
        ..options()
    });
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "A", "1");
    let token = stack.token();
    let path = format!("/api/v4/secrets?projectId={PROJECT_ID}&environment={ENVIRONMENT}");
    let first = stack.client().get(&path, Some(&token));
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    let not_modified = stack.client().get_etag(&path, Some(&token), Some(&etag));
    assert_eq!(not_modified.status, 304);
    assert_eq!(stack.client().get("/api/status", Some(&token)).status, 200);
    let body = stack
        .client()
        .get(&path, Some(&token))
        .error(401, "UnauthorizedError");
    assert_eq!(
        body["message"],
        "Failed to authorize: token usage limit reached"
    );
    // Renew and revoke carry the token in the body: no use is counted there,
    // but an exhausted token cannot be renewed either.
    stack.client().renew(&token).error(401, "UnauthorizedError");
}

#[test]
fn a_tampered_or_foreign_access_token_is_a_token_error() {
    let stack = stand_ins();
    let token = stack.token();
    let other = stand_ins().token();
    stack.client().v4(&other, SECRETS).error(403, "TokenError");
    let mut tampered = token.clone();
    tampered.push('x');
    stack
        .client()
        .v4(&tampered, SECRETS)
        .error(403, "TokenError");
    stack
        .client()
        .v4("garbage", SECRETS)
        .error(403, "TokenError");
    let r = stack.client().get(
        &format!("/api/v4/secrets?projectId={PROJECT_ID}&environment={ENVIRONMENT}"),
        None,
    );
    r.error(401, "UnauthorizedError");
}

#[test]
fn authorization_on_renew_or_revoke_is_refused_with_403() {
    let stack = stand_ins();
    let token = stack.token();
    let body = serde_json::json!({"accessToken": token}).to_string();
    stack
        .client()
        .post_raw("/api/v1/auth/token/renew", &body, Some(&token))
        .error(403, "TokenError");
    stack
        .client()
        .post_raw("/api/v1/auth/token/revoke", &body, Some(&token))
        .error(403, "TokenError");
    assert_eq!(stack.client().v4(&token, SECRETS).status, 200);
    let log = stack.infisical.requests();
    assert!(log.iter().filter(|r| r.authorization_present).count() >= 3);
}

#[test]
fn legacy_tokens_expire_at_max_ttl_but_die_after_the_ttl_server_side() {
    let config = InfisicalConfig {
        legacy_tokens: true,
        ..InfisicalConfig::default()
    };
    let stack = stand_ins_with(StackOptions {
        infisical: config,
        token_ttl: Some((5, 15)),
        ..options()
    });
    let login = stack
        .client()
        .login("oidc", OIDC_IDENTITY, &stack.svid())
        .json();
    assert_eq!(login["expiresIn"], 5);
    let token = login["accessToken"].as_str().unwrap().to_string();
    let claims = claims_of(&token);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        15
    );
    stack.infisical.advance_clock(Duration::from_secs(6));
    let body = stack
        .client()
        .v4(&token, SECRETS)
        .error(401, "UnauthorizedError");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("due to TTL expiration"),
        "{body}"
    );
    // The token row is gone: renew fails too.
    stack.client().renew(&token).error(401, "UnauthorizedError");
}

#[test]
fn legacy_renew_returns_the_same_string_and_a_late_renew_deletes_the_token() {
    let config = InfisicalConfig {
        legacy_tokens: true,
        ..InfisicalConfig::default()
    };
    let stack = stand_ins_with(StackOptions {
        infisical: config,
        token_ttl: Some((5, 15)),
        ..options()
    });
    let token = stack.token();
    for _ in 0..2 {
        stack.infisical.advance_clock(Duration::from_secs(4));
        let r = stack.client().renew(&token);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["accessToken"], token.as_str());
        assert_eq!(stack.client().v4(&token, SECRETS).status, 200);
    }
    // t = 12 s: 12 + 5 > 15, so the renew is refused and the token deleted,
    // although it had 3 s left.
    stack.infisical.advance_clock(Duration::from_secs(4));
    let body = stack.client().renew(&token).error(401, "UnauthorizedError");
    assert!(
        body["message"].as_str().unwrap().contains("Max TTL"),
        "{body}"
    );
    stack
        .client()
        .v4(&token, SECRETS)
        .error(401, "UnauthorizedError");
}
