//! The Workload API stand-in serves JWT-SVIDs the real `spiffe` crate client
//! accepts, signed by its key ring, with SPIRE's claims, header check and
//! argument errors. Through its real unix socket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use spiffe::workload_api::error::WorkloadApiError;
use spiffe::{JwtSvid, SpiffeId, WorkloadApiClient};
use svid_exec_testkit::keys::{KeyAlg, KeyRing};
use svid_exec_testkit::pb::{JwtsvidRequest, JwtsvidResponse};
use svid_exec_testkit::workload::{AgentConfig, FakeAgent, Svid, ENDPOINT_ENV};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::support::run;

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// Verifies `token` against the ring's published JWKS, as a relying party would.
fn verify(ring: &KeyRing, token: &str, alg: Algorithm, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(ring.jwks()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, alg);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in JWKS");
    let mut validation = Validation::new(alg);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("signature and claims verify")
        .claims
}

/// A plain tonic channel to the agent's socket: unlike the `spiffe` crate, it
/// adds no security header by itself.
async fn raw_channel(agent: &FakeAgent) -> Channel {
    let path = agent.socket_path().to_path_buf();
    Endpoint::try_from("http://agent.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("raw connect")
}

async fn raw_fetch(
    channel: Channel,
    header: Option<&'static str>,
    audience: &[&str],
    spiffe_id: &str,
) -> Result<JwtsvidResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(JwtsvidRequest {
        audience: audience.iter().map(ToString::to_string).collect(),
        spiffe_id: spiffe_id.to_string(),
    });
    if let Some(value) = header {
        request
            .metadata_mut()
            .insert("workload.spiffe.io", MetadataValue::from_static(value));
    }
    grpc.unary(
        request,
        PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTSVID"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[test]
fn spiffe_client_fetches_an_es256_svid_with_spires_claims_and_a_valid_signature() {
    let agent = FakeAgent::start(AgentConfig::default());
    assert!(agent.endpoint().starts_with("unix:///tmp/"));
    assert_eq!(agent.trust_domain(), "example.org");
    let svid = run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client.fetch_jwt_svid(["infisical"], None).await.unwrap()
    });
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/workload"
    );
    assert_eq!(svid.audience(), ["infisical"]);
    assert_eq!(svid.key_id(), agent.keys().current().kid());
    let left = svid.claims().exp() - now();
    assert!(
        (290..=301).contains(&left),
        "exp is now + 5 min, got +{left}s"
    );
    JwtSvid::parse_insecure(svid.token()).expect("the crate parses the token");

    let claims = verify(agent.keys(), svid.token(), Algorithm::ES256, "infisical");
    assert_eq!(claims["sub"], "spiffe://example.org/workload");
    assert_eq!(claims["aud"], "infisical", "one audience is a plain string");
    assert!(claims["iat"].as_i64().is_some());
    assert!(
        claims.get("iss").is_none(),
        "no iss unless an issuer is configured"
    );
}

#[test]
fn rs256_svid_carries_the_configured_issuer_and_several_audiences_as_an_array() {
    let agent = FakeAgent::start(
        AgentConfig::default()
            .alg(KeyAlg::Rs256)
            .issuer("https://oidc.example.org")
            .ttl(Duration::from_secs(120)),
    );
    let svid = run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client
            .fetch_jwt_svid(["infisical", "other"], None)
            .await
            .unwrap()
    });
    assert_eq!(svid.audience(), ["infisical", "other"]);
    let claims = verify(agent.keys(), svid.token(), Algorithm::RS256, "other");
    assert_eq!(claims["aud"], serde_json::json!(["infisical", "other"]));
    assert_eq!(claims["iss"], "https://oidc.example.org");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
}

#[test]
fn spiffe_id_and_hint_select_among_several_svids_and_an_unknown_id_is_not_issued() {
    let db = "spiffe://example.org/db";
    let web = "spiffe://example.org/web";
    let agent = FakeAgent::start(
        AgentConfig::default().svids([Svid::with_hint(db, "db"), Svid::with_hint(web, "web")]),
    );
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let all = client.fetch_all_jwt_svids(["aud"], None).await.unwrap();
        let got: Vec<(String, Option<&str>)> = all
            .iter()
            .map(|s| (s.spiffe_id().to_string(), s.hint()))
            .collect();
        assert_eq!(
            got,
            [(db.to_string(), Some("db")), (web.to_string(), Some("web"))]
        );
        // Without a spiffe_id the crate returns the first one.
        let first = client.fetch_jwt_svid(["aud"], None).await.unwrap();
        assert_eq!(first.spiffe_id().to_string(), db);

        let wanted = SpiffeId::new(web).unwrap();
        let picked = client.fetch_jwt_svid(["aud"], Some(&wanted)).await.unwrap();
        assert_eq!(picked.spiffe_id().to_string(), web);
        let claims = payload(picked.token());
        assert_eq!(claims["sub"], web);

        let by_hint = client
            .fetch_jwt_svid_by_hint(["aud"], None, "web")
            .await
            .unwrap();
        assert_eq!(by_hint.spiffe_id().to_string(), web);

        let unknown = SpiffeId::new("spiffe://example.org/nobody").unwrap();
        let err = client
            .fetch_jwt_svid(["aud"], Some(&unknown))
            .await
            .unwrap_err();
        assert!(
            matches!(err, WorkloadApiError::NoIdentityIssued),
            "got {err:?}"
        );
    });
    let calls = agent.calls();
    let last = calls.last().unwrap();
    assert_eq!(last.method, "FetchJWTSVID");
    assert_eq!(last.audience, ["aud"]);
    assert_eq!(last.spiffe_id, "spiffe://example.org/nobody");
    assert!(calls.iter().all(|c| c.had_security_header));
    assert!(calls.iter().any(|c| c.spiffe_id == web));
}

#[test]
fn a_call_without_the_security_header_is_refused_with_invalid_argument() {
    let agent = FakeAgent::start(AgentConfig::default());
    run(async {
        let channel = raw_channel(&agent).await;
        let missing = raw_fetch(channel.clone(), None, &["aud"], "")
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::InvalidArgument);
        assert_eq!(missing.message(), "security header missing from request");

        let wrong = raw_fetch(channel.clone(), Some("yes"), &["aud"], "")
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::InvalidArgument);

        // The same hand-built client succeeds once it sends the header.
        let ok = raw_fetch(channel, Some("true"), &["aud"], "")
            .await
            .unwrap();
        assert_eq!(ok.svids.len(), 1);
        assert_eq!(ok.svids[0].spiffe_id, "spiffe://example.org/workload");
    });
    let seen: Vec<bool> = agent
        .calls()
        .iter()
        .map(|c| c.had_security_header)
        .collect();
    assert_eq!(seen, [false, false, true]);
}

#[test]
fn empty_audience_and_malformed_spiffe_id_are_invalid_arguments() {
    let agent = FakeAgent::start(AgentConfig::default());
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let err = client
            .fetch_jwt_svid(Vec::<String>::new(), None)
            .await
            .unwrap_err();
        assert!(err.is_invalid_argument(), "got {err:?}");
        assert!(
            err.to_string().contains("audience must be specified"),
            "{err}"
        );

        // The crate only sends valid IDs; a hand-built request can send garbage.
        let bad = raw_fetch(
            raw_channel(&agent).await,
            Some("true"),
            &["aud"],
            "not-an-id",
        )
        .await
        .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(
            bad.message().starts_with("invalid requested SPIFFE ID: "),
            "{}",
            bad.message()
        );
    });
}

#[test]
fn minted_tokens_and_ttl_changes_follow_the_agent_settings() {
    let agent = FakeAgent::start(AgentConfig::default().issuer("https://issuer.test"));
    let token = agent.mint(
        "spiffe://example.org/job",
        &["infisical"],
        Duration::from_secs(30),
    );
    let svid = JwtSvid::parse_insecure(&token).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/job");
    let claims = verify(agent.keys(), &token, Algorithm::ES256, "infisical");
    assert_eq!(claims["iss"], "https://issuer.test");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30
    );

    agent.set_ttl(Duration::from_secs(60));
    agent.set_issuer(None);
    let fetched = run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client.fetch_jwt_svid(["infisical"], None).await.unwrap()
    });
    let claims = payload(fetched.token());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    assert!(claims.get("iss").is_none());
}

#[test]
fn agents_sharing_a_key_ring_sign_with_the_same_key() {
    let ring = KeyRing::new(KeyAlg::Es256);
    let a = FakeAgent::start(AgentConfig::default().keys(ring.clone()));
    let b = FakeAgent::start(AgentConfig::default().keys(ring.clone()));
    assert_ne!(a.socket_path(), b.socket_path());
    let (ta, tb) = run(async {
        let ca = WorkloadApiClient::connect_to(a.endpoint()).await.unwrap();
        let cb = WorkloadApiClient::connect_to(b.endpoint()).await.unwrap();
        (
            ca.fetch_jwt_svid(["x"], None).await.unwrap(),
            cb.fetch_jwt_svid(["x"], None).await.unwrap(),
        )
    });
    assert_eq!(ta.key_id(), ring.current().kid());
    assert_eq!(tb.key_id(), ring.current().kid());
    verify(&ring, tb.token(), Algorithm::ES256, "x");
}

#[test]
fn validate_jwt_svid_accepts_the_agents_tokens_and_refuses_others_with_invalid_argument() {
    let agent = FakeAgent::start(AgentConfig::default());
    let stranger = KeyRing::new(KeyAlg::Es256);
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let token = client.fetch_jwt_token(["svc"], None).await.unwrap();
        let svid = client.validate_jwt_token("svc", &token).await.unwrap();
        assert_eq!(
            svid.spiffe_id().to_string(),
            "spiffe://example.org/workload"
        );

        let err = client
            .validate_jwt_token("other", &token)
            .await
            .unwrap_err();
        assert!(err.is_invalid_argument(), "wrong audience: {err:?}");
        let forged = stranger.sign(&serde_json::json!({
            "sub": "spiffe://example.org/workload", "aud": "svc", "exp": now() + 60,
        }));
        let err = client.validate_jwt_token("svc", &forged).await.unwrap_err();
        assert!(err.is_invalid_argument(), "unknown key: {err:?}");
        let err = client.validate_jwt_token("svc", "").await.unwrap_err();
        assert!(err.to_string().contains("svid must be specified"), "{err}");
    });
    assert!(agent
        .calls()
        .iter()
        .any(|c| c.method == "ValidateJWTSVID" && c.audience == ["other"]));
}

#[test]
fn an_aged_svid_has_only_the_rest_of_its_ttl_left() {
    let agent = FakeAgent::start(AgentConfig::default().age(Duration::from_secs(170)));
    let (name, value) = agent.env();
    assert_eq!(
        (name, value.as_str()),
        (ENDPOINT_ENV, agent.endpoint().as_str())
    );
    let svid = run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client.fetch_jwt_svid(["aud"], None).await.unwrap()
    });
    let left = svid.claims().exp() - now();
    assert!(
        (120..=130).contains(&left),
        "300 s TTL issued 170 s ago, got +{left}s"
    );
}

#[test]
fn with_the_agent_cache_a_second_fetch_returns_the_cached_token_which_debug_never_shows() {
    let agent = FakeAgent::start(AgentConfig::default().agent_cache(true));
    let (first, second, other) = run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let first = client.fetch_jwt_svid(["a", "b"], None).await.unwrap();
        agent.set_ttl(Duration::from_secs(60));
        let second = client.fetch_jwt_svid(["b", "a"], None).await.unwrap();
        let other = client.fetch_jwt_svid(["c"], None).await.unwrap();
        (first, second, other)
    });
    assert_eq!(second.token(), first.token(), "same ID and audience set");
    let left = other.claims().exp() - now();
    assert!(
        (50..=61).contains(&left),
        "a new audience set is minted afresh"
    );
    let debug = format!("{agent:?}");
    assert!(debug.contains(&agent.endpoint()));
    assert!(!debug.contains(first.token()));
}
