//! Shared helpers of the client tests: the discovery provider and the Infisical
//! stand-in with an OIDC, a JWT and a SPIFFE identity, and project `proj-1`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different subset"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use svid_exec::infisical::{
    AccessToken, AuthMethod, Client, ClientOptions, FetchOutcome, FetchSpec, Fetched,
    InfisicalError,
};
use svid_exec::retry::Backoff;
use svid_exec::svid::Jwt;
use svid_exec_testkit::discovery::Discovery;
use svid_exec_testkit::infisical::{
    AuthMethod as FakeAuth, FakeInfisical, Identity, InfisicalConfig, JwtAuth, JwtKeys, OidcAuth,
    SpiffeAuth,
};
use svid_exec_testkit::keys::{KeyAlg, KeyRing};
use tokio::time::Instant;

pub const PROJECT: &str = "proj-1";
pub const SLUG: &str = "my-project";
pub const OIDC_ID: &str = "11111111-1111-4111-8111-111111111111";
pub const JWT_ID: &str = "22222222-2222-4222-8222-222222222222";
pub const SPIFFE_ID: &str = "33333333-3333-4333-8333-333333333333";
pub const WORKLOAD: &str = "spiffe://example.org/ns/prod/sa/web";

pub struct Stack {
    pub ring: KeyRing,
    pub discovery: Discovery,
    pub infisical: FakeInfisical,
    rt: tokio::runtime::Runtime,
}

impl Stack {
    pub fn start(config: InfisicalConfig, ttl: (u64, u64)) -> Self {
        let ring = KeyRing::new(KeyAlg::Es256);
        let discovery = Discovery::start(ring.clone(), None);
        let infisical = FakeInfisical::start(config);
        let tune = |i: Identity| i.ttl(ttl.0, ttl.1);
        infisical.add_identity(tune(Identity::new(
            OIDC_ID,
            FakeAuth::Oidc(OidcAuth {
                oidc_discovery_url: discovery.url(),
                bound_issuer: discovery.url(),
                bound_audiences: "infisical".into(),
                bound_subject: "spiffe://example.org/ns/prod/**".into(),
                ..OidcAuth::default()
            }),
        )));
        infisical.add_identity(tune(Identity::new(
            JWT_ID,
            FakeAuth::Jwt(JwtAuth {
                keys: JwtKeys::JwksUrl {
                    url: format!("{}/keys", discovery.url()),
                    ca_cert: None,
                },
                bound_issuer: String::new(),
                bound_audiences: "infisical".into(),
                bound_subject: WORKLOAD.into(),
                bound_claims: std::collections::BTreeMap::default(),
            }),
        )));
        let mut bundle = ring.jwks();
        for key in bundle["keys"].as_array_mut().unwrap() {
            key["use"] = json!("jwt-svid");
        }
        infisical.add_identity(tune(Identity::new(
            SPIFFE_ID,
            FakeAuth::Spiffe(SpiffeAuth {
                trust_domain: "example.org".into(),
                allowed_spiffe_ids: "spiffe://example.org/ns/prod/*/web".into(),
                allowed_audiences: "infisical".into(),
                bundle,
            }),
        )));
        infisical.add_project(PROJECT, SLUG);
        infisical.add_environment(PROJECT, "dev");
        for id in [OIDC_ID, JWT_ID, SPIFFE_ID] {
            infisical.grant_read(id, PROJECT);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            ring,
            discovery,
            infisical,
            rt,
        }
    }

    pub fn default() -> Self {
        Self::start(InfisicalConfig::default(), (3600, 86400))
    }

    pub fn token_string(&self, sub: &str, aud: &str, iss: Option<&str>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = json!({"sub": sub, "aud": aud, "exp": now + 300, "iat": now});
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        self.ring.sign(&claims)
    }

    pub fn jwt_for(&self, sub: &str, aud: &str, iss: Option<&str>) -> Jwt {
        Jwt::new(SecretString::from(self.token_string(sub, aud, iss))).unwrap()
    }

    pub fn jwt(&self) -> Jwt {
        self.jwt_for(WORKLOAD, "infisical", Some(&self.discovery.url()))
    }

    pub fn client(&self) -> Client {
        Client::new(&ClientOptions {
            api_url: format!("{}/api/", self.infisical.url())
                .parse()
                .expect("the stand-in's URL"),
            ..ClientOptions::default()
        })
        .unwrap()
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            factor: 2.0,
        })
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn login(&self, client: &Client) -> AccessToken {
        self.block_on(client.login(AuthMethod::Oidc, OIDC_ID, None, &self.jwt(), within(20)))
            .unwrap()
    }

    pub fn fetch(
        &self,
        client: &Client,
        token: &AccessToken,
        spec: &FetchSpec,
    ) -> Result<Fetched, InfisicalError> {
        match self.block_on(client.fetch(token, spec, None, within(20)))? {
            FetchOutcome::Fetched(f) => Ok(f),
            FetchOutcome::NotModified => panic!("not modified without ETags"),
        }
    }

    pub fn set(&self, path: &str, key: &str, value: &str) {
        self.infisical.set_secret(PROJECT, "dev", path, key, value);
    }
}

pub fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

pub fn spec(paths: &[&str]) -> FetchSpec {
    FetchSpec {
        project_id: PROJECT.into(),
        environment: "dev".into(),
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        recursive: false,
        include_imports: true,
        expand: true,
        tags: vec![],
    }
}

pub fn value(f: &Fetched, key: &str) -> String {
    f.secrets
        .get(key)
        .map(|v| v.expose_secret().to_owned())
        .unwrap_or_default()
}
