//! Logins against the Infisical stand-in: OIDC (through a real discovery
//! provider), JWT and SPIFFE Auth succeed with a properly signed JWT-SVID, and
//! every refusal has the real server's status and error body.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::support::*;
use serde_json::json;
use svid_exec_testkit::discovery::Discovery;
use svid_exec_testkit::infisical::{
    AuthMethod, FakeInfisical, Identity, InfisicalConfig, JwtAuth, JwtKeys, OidcAuth, SpiffeAuth,
};
use svid_exec_testkit::keys::{KeyAlg, KeyRing};
use svid_exec_testkit::tls::TestCa;

#[test]
fn oidc_login_with_a_jwt_svid_returns_a_bearer_access_token() {
    let stack = stand_ins();
    let r = stack.client().login("oidc", OIDC_IDENTITY, &stack.svid());
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 2_592_000);
    assert_eq!(body["accessTokenMaxTTL"], 2_592_000);
    let claims = claims_of(body["accessToken"].as_str().unwrap());
    assert_eq!(claims["identityId"], OIDC_IDENTITY);
    assert_eq!(claims["authMethod"], "oidc-auth");
    assert_eq!(claims["jti"], claims["identityAccessTokenId"]);
    assert!(claims["exp"].as_u64().unwrap() > now());
    assert_eq!(stack.infisical.counters().logins, 1);
}

#[test]
fn oidc_login_works_with_rs256_over_https_when_the_ca_is_configured() {
    let ca = TestCa::new();
    let ring = KeyRing::new(KeyAlg::Rs256);
    let discovery = Discovery::start(ring.clone(), Some(&ca));
    let infisical = FakeInfisical::start(InfisicalConfig {
        tls: Some(ca.server_config()),
        ..InfisicalConfig::default()
    });
    let oidc = |ca_cert: Option<String>| OidcAuth {
        oidc_discovery_url: discovery.url(),
        ca_cert,
        bound_issuer: discovery.url(),
        ..OidcAuth::default()
    };
    infisical.add_identity(Identity::new(
        "with-ca",
        AuthMethod::Oidc(oidc(Some(ca.ca_pem().into()))),
    ));
    infisical.add_identity(Identity::new("no-ca", AuthMethod::Oidc(oidc(None))));
    let client = Client::with(&infisical.url(), ca.reqwest_client());
    let svid = ring.sign(&svid_claims(WORKLOAD, "anything", Some(&discovery.url())));
    assert_eq!(client.login("oidc", "with-ca", &svid).status, 200);
    // Without the CA the discovery fetch fails: 401 with the fetch message.
    let body = client
        .login("oidc", "no-ca", &svid)
        .error(401, "UnauthorizedError");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "Access denied: Failed to fetch OIDC discovery document from {}",
            discovery.url()
        )),
        "{msg}"
    );
}

#[test]
fn oidc_refusals_have_the_documented_statuses() {
    let stack = stand_ins();
    let iss = stack.discovery.url();
    let c = &stack.client();
    let sign =
        |sub: &str, aud: &str, iss: Option<&str>| stack.ring().sign(&svid_claims(sub, aud, iss));

    let body = c
        .login(
            "oidc",
            OIDC_IDENTITY,
            &sign("spiffe://example.org/ns/dev/sa/web", AUDIENCE, Some(&iss)),
        )
        .error(403, "ForbiddenError");
    assert_eq!(body["message"], "Access denied: OIDC subject not allowed.");

    let body = c
        .login("oidc", OIDC_IDENTITY, &sign(WORKLOAD, "other", Some(&iss)))
        .error(401, "UnauthorizedError");
    assert_eq!(body["message"], "Access denied: OIDC audience not allowed.");

    let body = c
        .login(
            "oidc",
            OIDC_IDENTITY,
            &sign(WORKLOAD, AUDIENCE, Some("https://elsewhere")),
        )
        .error(401, "UnauthorizedError");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("jwt issuer invalid"),
        "{body}"
    );

    // SPIRE omits `iss` unless jwt_issuer is set: OIDC Auth then refuses.
    c.login("oidc", OIDC_IDENTITY, &sign(WORKLOAD, AUDIENCE, None))
        .error(401, "UnauthorizedError");

    let mut expired = svid_claims(WORKLOAD, AUDIENCE, Some(&iss));
    expired["exp"] = json!(now() - 1);
    let body = c
        .login("oidc", OIDC_IDENTITY, &stack.ring().sign(&expired))
        .error(401, "UnauthorizedError");
    assert_eq!(body["message"], "Access denied: jwt expired");

    // Tampered payload: signature no longer matches.
    let good = stack.svid();
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut claims = claims_of(&good);
    claims["sub"] = json!("spiffe://example.org/ns/prod/sa/admin");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    let body = c
        .login("oidc", OIDC_IDENTITY, &parts.join("."))
        .error(401, "UnauthorizedError");
    assert_eq!(body["message"], "Access denied: invalid signature");

    let body = c
        .login("oidc", OIDC_IDENTITY, "not-a-jwt")
        .error(401, "UnauthorizedError");
    assert_eq!(body["message"], "Invalid JWT");

    let body = c
        .login("oidc", "99999999-9999-4999-8999-999999999999", &good)
        .error(404, "NotFound");
    assert_eq!(
        body["message"],
        "OIDC auth method not found for identity, did you configure OIDC auth?"
    );
    // The JWT identity exists, but not with OIDC Auth.
    c.login("oidc", JWT_IDENTITY, &good).error(404, "NotFound");
    c.login("spiffe", OIDC_IDENTITY, &good)
        .error(404, "NotFound");
    assert_eq!(stack.infisical.counters().logins, 0);
    assert!(stack.infisical.counters().login_failures >= 10);
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let stack = stand_ins();
    let other = KeyRing::new(KeyAlg::Es256);
    let forged = other.sign(&svid_claims(
        WORKLOAD,
        AUDIENCE,
        Some(&stack.discovery.url()),
    ));
    let body = stack
        .client()
        .login("oidc", OIDC_IDENTITY, &forged)
        .error(401, "UnauthorizedError");
    assert!(
        body["message"].as_str().unwrap().contains("signing key"),
        "{body}"
    );
    stack
        .client()
        .login("jwt", JWT_IDENTITY, &forged)
        // JWT Auth does not wrap jwks-rsa's "signing key not found": a 500.
        .error(500, "InternalServerError");
    stack
        .client()
        .login("spiffe", SPIFFE_IDENTITY, &forged)
        .error(401, "UnauthorizedError");
}

#[test]
fn malformed_bodies_are_422_with_an_array_message_and_authorization_on_login_is_403() {
    let stack = stand_ins();
    let body = stack
        .client()
        .post(
            "/api/v1/auth/oidc-auth/login",
            &json!({"identityId": OIDC_IDENTITY}),
        )
        .error(422, "ValidationFailure");
    assert_eq!(body["message"][0]["path"], json!(["jwt"]));
    stack
        .client()
        .post(
            "/api/v1/auth/oidc-auth/login",
            &json!({"identityId": 5, "jwt": "x"}),
        )
        .error(422, "ValidationFailure");
    let r = stack.client().post_raw(
        "/api/v1/auth/oidc-auth/login",
        &json!({"identityId": OIDC_IDENTITY, "jwt": stack.svid()}).to_string(),
        Some(&stack.svid()),
    );
    r.error(403, "TokenError");
    let log = stack.infisical.requests();
    let last = log.last().unwrap();
    assert!(last.authorization_present);
    assert_eq!((last.method.as_str(), last.status), ("POST", 403));
    assert!(!log[0].authorization_present);
}

#[test]
fn subject_globs_follow_picomatch_and_audiences_may_be_an_array() {
    let stack = stand_ins();
    let iss = stack.discovery.url();
    let login = |sub: &str, aud: serde_json::Value| {
        let mut claims = svid_claims(sub, AUDIENCE, Some(&iss));
        claims["aud"] = aud;
        stack
            .client()
            .login("oidc", OIDC_IDENTITY, &stack.ring().sign(&claims))
            .status
    };
    // boundSubject is spiffe://example.org/ns/prod/** : crosses segments.
    assert_eq!(
        login("spiffe://example.org/ns/prod/sa/web/x", json!(AUDIENCE)),
        200
    );
    assert_eq!(
        login("spiffe://example.org/ns/production", json!(AUDIENCE)),
        403
    );
    assert_eq!(login(WORKLOAD, json!(["a", AUDIENCE])), 200);
    assert_eq!(login(WORKLOAD, json!(["a", "b"])), 401);

    let one_segment = FakeInfisical::start(InfisicalConfig::default());
    one_segment.add_identity(Identity::new(
        "x",
        AuthMethod::Oidc(OidcAuth {
            oidc_discovery_url: iss.clone(),
            bound_issuer: iss.clone(),
            bound_subject: "spiffe://example.org/ns/prod/*".into(),
            bound_audiences: "other, infi*".into(),
            bound_claims: BTreeMap::from([("team.name".to_string(), "pay*, ops".to_string())]),
            ..OidcAuth::default()
        }),
    ));
    let c = Client::new(&one_segment.url());
    let with = |sub: &str, team: Option<&str>| {
        let mut claims = svid_claims(sub, AUDIENCE, Some(&iss));
        if let Some(team) = team {
            claims["team"] = json!({"name": team});
        }
        c.login("oidc", "x", &stack.ring().sign(&claims))
    };
    assert_eq!(
        with(WORKLOAD, Some("payments")).status,
        403,
        "* must not cross /"
    );
    assert_eq!(
        with("spiffe://example.org/ns/prod/web", Some("payments")).status,
        200
    );
    assert_eq!(
        with("spiffe://example.org/ns/prod/web", Some("ops")).status,
        200
    );
    let body =
        with("spiffe://example.org/ns/prod/web", Some("dev")).error(401, "UnauthorizedError");
    assert_eq!(body["message"], "Access denied: OIDC claim not allowed.");
    let body = with("spiffe://example.org/ns/prod/web", None).error(401, "UnauthorizedError");
    assert_eq!(
        body["message"],
        "Access denied: token has no team.name field"
    );
}

#[test]
fn the_2024_server_answers_500_to_an_array_audience() {
    let ring = KeyRing::new(KeyAlg::Es256);
    let discovery = Discovery::start(ring.clone(), None);
    let infisical = FakeInfisical::start(InfisicalConfig {
        array_aud_bug: true,
        ..InfisicalConfig::default()
    });
    infisical.add_identity(Identity::new(
        "x",
        AuthMethod::Oidc(OidcAuth {
            oidc_discovery_url: discovery.url(),
            bound_issuer: discovery.url(),
            ..OidcAuth::default()
        }),
    ));
    let c = Client::new(&infisical.url());
    let mut claims = svid_claims(WORKLOAD, AUDIENCE, Some(&discovery.url()));
    assert_eq!(c.login("oidc", "x", &ring.sign(&claims)).status, 200);
    claims["aud"] = json!([AUDIENCE, "b"]);
    c.login("oidc", "x", &ring.sign(&claims))
        .error(500, "InternalServerError");
}

#[test]
fn jwt_auth_accepts_a_jwks_url_static_jwks_or_pem_keys_and_checks_the_issuer() {
    let stack = stand_ins();
    let svid_no_iss = stack.ring().sign(&svid_claims(WORKLOAD, AUDIENCE, None));
    let r = stack.client().login("jwt", JWT_IDENTITY, &svid_no_iss);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        claims_of(r.json()["accessToken"].as_str().unwrap())["authMethod"],
        "jwt-auth"
    );
    stack
        .client()
        .login(
            "jwt",
            JWT_IDENTITY,
            &stack
                .ring()
                .sign(&svid_claims("spiffe://example.org/other", AUDIENCE, None)),
        )
        .error(403, "ForbiddenError");
    stack
        .client()
        .login(
            "jwt",
            JWT_IDENTITY,
            &stack.ring().sign(&svid_claims(WORKLOAD, "nope", None)),
        )
        .error(401, "UnauthorizedError");

    let pem = {
        use p256::pkcs8::EncodePublicKey as _;
        let full = stack.ring().current().jwk();
        // p256 wants a bare EC JWK (no kid/alg).
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": full["x"], "y": full["y"]}).to_string();
        p256::PublicKey::from_jwk_str(&jwk)
            .unwrap()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let jwt = |keys: JwtKeys, bound_issuer: &str| {
        AuthMethod::Jwt(JwtAuth {
            keys,
            bound_issuer: bound_issuer.into(),
            bound_audiences: String::new(),
            bound_subject: String::new(),
            bound_claims: BTreeMap::new(),
        })
    };
    stack.infisical.add_identity(Identity::new(
        "pem",
        jwt(JwtKeys::PublicKeysPem(vec![pem]), ""),
    ));
    stack.infisical.add_identity(Identity::new(
        "jwks",
        jwt(JwtKeys::Jwks(stack.ring().jwks()), "https://issuer.example"),
    ));
    assert_eq!(stack.client().login("jwt", "pem", &svid_no_iss).status, 200);
    let body = stack
        .client()
        .login("jwt", "jwks", &svid_no_iss)
        .error(403, "ForbiddenError");
    assert_eq!(body["message"], "Access denied: issuer mismatch");
    let with_iss = stack.ring().sign(&svid_claims(
        WORKLOAD,
        AUDIENCE,
        Some("https://issuer.example"),
    ));
    assert_eq!(stack.client().login("jwt", "jwks", &with_iss).status, 200);
    let mut expired = svid_claims(WORKLOAD, AUDIENCE, None);
    expired["exp"] = json!(now() - 1);
    let body = stack
        .client()
        .login("jwt", "pem", &stack.ring().sign(&expired))
        .error(401, "UnauthorizedError");
    assert_eq!(
        body["message"],
        "Access denied: JWT verification failed with all keys. Errors - jwt expired"
    );
    let mut no_aud = svid_claims(WORKLOAD, AUDIENCE, None);
    no_aud.as_object_mut().unwrap().remove("aud");
    let body = stack
        .client()
        .login("jwt", JWT_IDENTITY, &stack.ring().sign(&no_aud))
        .error(401, "UnauthorizedError");
    assert_eq!(
        body["message"],
        "Access denied: token has no audience field"
    );
}

#[test]
fn spiffe_auth_uses_the_static_bundle_without_checking_iss() {
    let stack = stand_ins();
    let c = &stack.client();
    let sign = |sub: &str, aud: &str| stack.ring().sign(&svid_claims(sub, aud, None));
    let r = c.login("spiffe", SPIFFE_IDENTITY, &sign(WORKLOAD, AUDIENCE));
    assert_eq!(r.status, 200, "{}", r.text);
    let refused = |jwt: &str, message: &str| {
        let body = c
            .login("spiffe", SPIFFE_IDENTITY, jwt)
            .error(401, "UnauthorizedError");
        assert_eq!(body["message"], message);
    };
    refused(
        &sign(WORKLOAD, "other"),
        "JWT-SVID audience validation failed",
    );
    refused(
        &sign("spiffe://other.org/ns/prod/sa/web", AUDIENCE),
        "Access denied",
    );
    // allowedSpiffeIds "spiffe://example.org/ns/prod/sa/*": one segment only.
    refused(
        &sign("spiffe://example.org/ns/prod/sa/a/b", AUDIENCE),
        "Access denied",
    );
    let mut expired = svid_claims(WORKLOAD, AUDIENCE, None);
    expired["exp"] = json!(now() - 1);
    refused(&stack.ring().sign(&expired), "JWT-SVID has expired");
    // A bundle whose keys are marked x509-svid only has no JWT authority.
    let mut x509_only = stack.ring().jwks();
    x509_only["keys"][0]["use"] = json!("x509-svid");
    stack.infisical.add_identity(Identity::new(
        "x509",
        AuthMethod::Spiffe(SpiffeAuth {
            trust_domain: "example.org".into(),
            allowed_spiffe_ids: "**".into(),
            allowed_audiences: AUDIENCE.into(),
            bundle: x509_only,
        }),
    ));
    let body = c
        .login("spiffe", "x509", &sign(WORKLOAD, AUDIENCE))
        .error(401, "UnauthorizedError");
    assert_eq!(body["message"], "JWT-SVID verification failed");
}

#[test]
fn a_discovery_provider_that_is_down_gives_401() {
    let mut stack = stand_ins();
    stack.discovery.stop();
    let body = stack
        .client()
        .login("oidc", OIDC_IDENTITY, &stack.svid())
        .error(401, "UnauthorizedError");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Access denied: Failed to fetch OIDC discovery document from"),
        "{body}"
    );
}
