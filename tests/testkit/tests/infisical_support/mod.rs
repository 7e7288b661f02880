//! Shared helpers for the Infisical stand-in tests: a blocking HTTP client
//! over real sockets, JWT-SVID minting, and a ready-made stack (discovery
//! provider + Infisical with OIDC, JWT and SPIFFE identities and a project).

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use svid_exec_testkit::discovery::Discovery;
use svid_exec_testkit::infisical::{
    AuthMethod, FakeInfisical, Identity, InfisicalConfig, JwtAuth, JwtKeys, OidcAuth, SpiffeAuth,
};
use svid_exec_testkit::keys::{KeyAlg, KeyRing};

pub const PROJECT: &str = "proj-1";
pub const PROJECT_SLUG: &str = "my-project";
pub const OIDC_ID: &str = "11111111-1111-4111-8111-111111111111";
pub const JWT_ID: &str = "22222222-2222-4222-8222-222222222222";
pub const SPIFFE_ID_IDENTITY: &str = "33333333-3333-4333-8333-333333333333";
pub const WORKLOAD: &str = "spiffe://example.org/ns/prod/sa/web";
pub const AUDIENCE: &str = "infisical";

/// A response, read fully.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    /// Asserts the error body shape and returns it.
    pub fn error(&self, status: u16, error: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["statusCode"], status, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert!(
            body["reqId"].as_str().unwrap().starts_with("req-"),
            "{body}"
        );
        assert!(body.get("message").is_some(), "{body}");
        body
    }
}

/// A blocking client on its own runtime.
pub struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self::with(base, reqwest::Client::new())
    }
    pub fn with(base: &str, http: reqwest::Client) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            rt,
            http,
            base: base.to_string(),
        }
    }

    pub fn send(&self, request: reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
        self.rt.block_on(async {
            let r = request.send().await?;
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await?;
            Ok(Resp {
                status,
                headers,
                text,
            })
        })
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .unwrap()
    }

    pub fn post_raw(&self, path: &str, body: &str, bearer: Option<&str>) -> Resp {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = bearer {
            rb = rb.bearer_auth(token);
        }
        self.send(rb).unwrap()
    }

    pub fn get(&self, path_and_query: &str, bearer: Option<&str>) -> Resp {
        self.get_etag(path_and_query, bearer, None)
    }

    pub fn get_etag(&self, path_and_query: &str, bearer: Option<&str>, etag: Option<&str>) -> Resp {
        self.send(self.get_request(path_and_query, bearer, etag))
            .unwrap()
    }

    pub fn get_request(
        &self,
        path_and_query: &str,
        bearer: Option<&str>,
        etag: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.http.get(format!("{}{path_and_query}", self.base));
        if let Some(token) = bearer {
            rb = rb.bearer_auth(token);
        }
        if let Some(etag) = etag {
            rb = rb.header("if-none-match", etag);
        }
        rb
    }

    pub fn login(&self, kind: &str, identity: &str, jwt: &str) -> Resp {
        self.post(
            &format!("/api/v1/auth/{kind}-auth/login"),
            &json!({"identityId": identity, "jwt": jwt}),
        )
    }

    /// Logs in and returns the access token (panics on refusal).
    pub fn token(&self, kind: &str, identity: &str, jwt: &str) -> String {
        let r = self.login(kind, identity, jwt);
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["accessToken"].as_str().unwrap().to_string()
    }

    pub fn renew(&self, token: &str) -> Resp {
        self.post("/api/v1/auth/token/renew", &json!({"accessToken": token}))
    }

    pub fn revoke(&self, token: &str) -> Resp {
        self.post("/api/v1/auth/token/revoke", &json!({"accessToken": token}))
    }

    pub fn v4(&self, token: &str, query: &str) -> Resp {
        self.get(
            &format!("/api/v4/secrets?projectId={PROJECT}&environment=dev&{query}"),
            Some(token),
        )
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a JWT-SVID as SPIRE mints them (one audience as a plain string).
pub fn svid_claims(sub: &str, aud: &str, iss: Option<&str>) -> Value {
    let mut claims = json!({"sub": sub, "aud": aud, "exp": now() + 300, "iat": now()});
    if let Some(iss) = iss {
        claims["iss"] = json!(iss);
    }
    claims
}

/// Decodes a JWT's claims without verifying it.
pub fn claims_of(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Discovery + Infisical, an OIDC, a JWT and a SPIFFE identity, and project
/// `proj-1` (slug `my-project`) readable by all three.
pub struct Stack {
    pub ring: KeyRing,
    pub discovery: Discovery,
    pub infisical: FakeInfisical,
    pub client: Client,
}

impl Stack {
    pub fn start() -> Self {
        Self::start_with(InfisicalConfig::default(), |i| i)
    }

    /// `tune` adjusts each identity (TTLs, uses) before it is added.
    pub fn start_with(config: InfisicalConfig, tune: impl Fn(Identity) -> Identity) -> Self {
        let ring = KeyRing::new(KeyAlg::Es256);
        let discovery = Discovery::start(ring.clone(), None);
        let infisical = FakeInfisical::start(config);
        infisical.add_identity(tune(Identity::new(
            OIDC_ID,
            AuthMethod::Oidc(OidcAuth {
                oidc_discovery_url: discovery.url(),
                bound_issuer: discovery.url(),
                bound_audiences: AUDIENCE.into(),
                bound_subject: "spiffe://example.org/ns/prod/**".into(),
                ..OidcAuth::default()
            }),
        )));
        infisical.add_identity(tune(Identity::new(
            JWT_ID,
            AuthMethod::Jwt(JwtAuth {
                keys: JwtKeys::JwksUrl {
                    url: format!("{}/keys", discovery.url()),
                    ca_cert: None,
                },
                bound_issuer: String::new(),
                bound_audiences: AUDIENCE.into(),
                bound_subject: WORKLOAD.into(),
                bound_claims: std::collections::BTreeMap::default(),
            }),
        )));
        let mut bundle = ring.jwks();
        for key in bundle["keys"].as_array_mut().unwrap() {
            key["use"] = json!("jwt-svid");
        }
        infisical.add_identity(tune(Identity::new(
            SPIFFE_ID_IDENTITY,
            AuthMethod::Spiffe(SpiffeAuth {
                trust_domain: "example.org".into(),
                allowed_spiffe_ids: "spiffe://example.org/ns/prod/*/web".into(),
                allowed_audiences: AUDIENCE.into(),
                bundle,
            }),
        )));
        infisical.add_project(PROJECT, PROJECT_SLUG);
        infisical.add_environment(PROJECT, "dev");
        for id in [OIDC_ID, JWT_ID, SPIFFE_ID_IDENTITY] {
            infisical.grant_read(id, PROJECT);
        }
        let client = Client::new(&infisical.url());
        Self {
            ring,
            discovery,
            infisical,
            client,
        }
    }

    /// A valid JWT-SVID for the workload with the discovery URL as `iss`.
    pub fn svid(&self) -> String {
        self.ring.sign(&svid_claims(
            WORKLOAD,
            AUDIENCE,
            Some(&self.discovery.url()),
        ))
    }

    /// An access token of the OIDC identity.
    pub fn token(&self) -> String {
        self.client.token("oidc", OIDC_ID, &self.svid())
    }
}
