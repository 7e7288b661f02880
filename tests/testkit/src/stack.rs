//! The whole stand-in stack as a user's deployment has it: a SPIRE agent
//! (Workload API on a unix socket), SPIRE's OIDC discovery provider and an
//! Infisical server, sharing one key ring and one throwaway CA, with three
//! machine identities (OIDC, JWT and SPIFFE Auth) allowed to read one project.
//!
//! Tests and `examples/quickstart.rs` start it in-process; `testkit-stack`
//! starts it standalone for manual trials with curl.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::discovery::Discovery;
use crate::infisical::{
    AuthMethod, FakeInfisical, Identity, InfisicalConfig, JwtAuth, JwtKeys, OidcAuth, SpiffeAuth,
};
use crate::keys::{KeyAlg, KeyRing};
use crate::tls::TestCa;
use crate::workload::{AgentConfig, FakeAgent};

/// The project every identity may read.
pub const PROJECT_ID: &str = "7c1d9a4e-5b2f-4e8a-9c3d-2f6b8e1a4d70";
/// Its slug.
pub const PROJECT_SLUG: &str = "billing";
/// The environment holding the demo secrets.
pub const ENVIRONMENT: &str = "prod";
/// An identity with OIDC Auth bound to the discovery provider.
pub const OIDC_IDENTITY: &str = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
/// An identity with JWT Auth on the provider's JWKS URL.
pub const JWT_IDENTITY: &str = "2e1f0d3c-5a4b-4869-9786-b4a5c3d2f1e0";
/// An identity with SPIFFE Auth and a static bundle.
pub const SPIFFE_IDENTITY: &str = "3d2e1f0c-6b5a-4a79-a695-c3b4a5d2e1f0";
/// The workload's SPIFFE ID.
pub const WORKLOAD: &str = "spiffe://example.org/ns/prod/sa/billing";
/// The audience the identities accept (svid-exec's default).
pub const AUDIENCE: &str = "infisical";

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The Workload API stand-in's configuration. Its key ring and issuer are
    /// set by the stack (the discovery provider's URL, as `jwt_issuer` would be).
    pub agent: AgentConfig,
    /// The Infisical stand-in's configuration; `tls` is set by the stack.
    pub infisical: InfisicalConfig,
    /// Serve Infisical and the discovery provider over HTTPS with the stack's
    /// CA (default), else plain HTTP.
    pub https: bool,
    /// Access-token TTL and max TTL of every identity, in seconds (`None`:
    /// the server's defaults, 30 days each).
    pub token_ttl: Option<(u64, u64)>,
    /// Uses limit of every identity's access tokens (`None`: unlimited).
    pub token_uses: Option<u64>,
    /// Put the demo secrets in `prod` at `/` (default).
    pub demo_secrets: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            agent: AgentConfig::default(),
            infisical: InfisicalConfig::default(),
            https: true,
            token_ttl: Some((3600, 86_400)),
            token_uses: None,
            demo_secrets: true,
        }
    }
}

/// The demo secrets: names and values (multi-line, unicode, `=`).
pub const DEMO_SECRETS: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://billing:s3cr3t=pa55@db.internal:5432/billing?sslmode=verify-full",
    ),
    ("GREETING", "grüß dich, 世界 — \"quoted\" 'single'"),
    (
        "TLS_KEY",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdemo0nly\n-----END PRIVATE KEY-----\n",
    ),
];

/// A running stack. Everything stops when it is dropped.
pub struct Stack {
    /// The CA that signed the HTTPS servers' certificates.
    pub ca: TestCa,
    /// The fake SPIRE agent.
    pub agent: FakeAgent,
    /// The OIDC discovery provider (its URL is the issuer).
    pub discovery: Discovery,
    /// The Infisical stand-in.
    pub infisical: FakeInfisical,
    dir: tempfile::TempDir,
    ca_path: PathBuf,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("agent", &self.agent.endpoint())
            .field("discovery", &self.discovery.url())
            .field("infisical", &self.infisical.url())
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// The default stack: HTTPS, ES256, demo secrets.
    pub fn start() -> Self {
        Self::start_with(StackOptions::default())
    }

    /// A stack with `options`.
    ///
    /// # Panics
    /// If a stand-in cannot start or the temp dir cannot be made.
    pub fn start_with(options: StackOptions) -> Self {
        let ca = TestCa::new();
        let dir = tempfile::Builder::new()
            .prefix("svid-exec-stack")
            .tempdir()
            .expect("temp dir");
        let ca_path = ca.write_ca_pem(dir.path());
        let ring = options
            .agent
            .keys
            .clone()
            .unwrap_or_else(|| KeyRing::new(options.agent.alg));
        let StackOptions {
            agent: agent_options,
            infisical: mut infisical_config,
            https,
            token_ttl,
            token_uses,
            demo_secrets,
        } = options;
        let discovery = Discovery::start(ring.clone(), https.then_some(&ca));
        let mut agent_config = agent_options.keys(ring.clone());
        if agent_config.issuer.is_none() {
            agent_config.issuer = Some(discovery.url());
        }
        if agent_config.svids == AgentConfig::default().svids {
            agent_config = agent_config.svids([crate::workload::Svid::new(WORKLOAD)]);
        }
        let agent = FakeAgent::start(agent_config);

        if https {
            infisical_config.tls = Some(ca.server_config());
        }
        let infisical = FakeInfisical::start(infisical_config);
        let policy = |identity: Identity| {
            let identity = match token_ttl {
                Some((ttl, max_ttl)) => identity.ttl(ttl, max_ttl),
                None => identity,
            };
            match token_uses {
                Some(uses) => identity.uses_limit(uses),
                None => identity,
            }
        };
        add_identities(&infisical, &ring, &discovery, &ca, policy);
        infisical.add_project(PROJECT_ID, PROJECT_SLUG);
        infisical.add_environment(PROJECT_ID, ENVIRONMENT);
        for id in [OIDC_IDENTITY, JWT_IDENTITY, SPIFFE_IDENTITY] {
            infisical.grant_read(id, PROJECT_ID);
        }
        if demo_secrets {
            for (key, value) in DEMO_SECRETS {
                infisical.set_secret(PROJECT_ID, ENVIRONMENT, "/", key, value);
            }
        }
        Self {
            ca,
            agent,
            discovery,
            infisical,
            dir,
            ca_path,
        }
    }

    /// The CA certificate file (for `--ca-cert` / `SVID_EXEC_CA_CERT`).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// A scratch directory that lives as long as the stack.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment a user would export to point svid-exec at this stack
    /// with the OIDC identity: agent socket, API URL, CA, identity, project,
    /// environment.
    pub fn launcher_env(&self) -> Vec<(String, String)> {
        vec![
            ("SPIFFE_ENDPOINT_SOCKET".into(), self.agent.endpoint()),
            ("INFISICAL_API_URL".into(), self.infisical.url()),
            (
                "SVID_EXEC_CA_CERT".into(),
                self.ca_path.display().to_string(),
            ),
            ("INFISICAL_MACHINE_IDENTITY_ID".into(), OIDC_IDENTITY.into()),
            ("INFISICAL_PROJECT_ID".into(), PROJECT_ID.into()),
            ("INFISICAL_ENVIRONMENT".into(), ENVIRONMENT.into()),
        ]
    }

    /// The key ring the agent signs with and every identity trusts.
    pub fn ring(&self) -> &KeyRing {
        self.agent.keys()
    }

    /// A JWT-SVID for `sub` and `aud` signed by the stack's keys, with `iss`
    /// when given (see [`svid_claims`]), without asking the agent.
    pub fn sign_svid(&self, sub: &str, aud: &str, iss: Option<&str>) -> String {
        self.ring().sign(&svid_claims(sub, aud, iss))
    }

    /// The workload's JWT-SVID every identity accepts: audience `infisical`,
    /// issuer the discovery URL.
    pub fn svid(&self) -> String {
        self.sign_svid(WORKLOAD, AUDIENCE, Some(&self.discovery.url()))
    }

    /// Mints a JWT-SVID for the workload (audience `infisical`, issuer the
    /// discovery URL) and writes it to a file, as spiffe-helper would.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_jwt_file(&self, ttl: Duration) -> PathBuf {
        let path = self.dir.path().join("jwt-svid.token");
        std::fs::write(&path, self.agent.mint(WORKLOAD, &[AUDIENCE], ttl)).expect("write JWT");
        path
    }
}

/// The OIDC, JWT and SPIFFE Auth identities, each with the token `policy`.
fn add_identities(
    infisical: &FakeInfisical,
    ring: &KeyRing,
    discovery: &Discovery,
    ca: &TestCa,
    policy: impl Fn(Identity) -> Identity,
) {
    infisical.add_identity(policy(Identity::new(
        OIDC_IDENTITY,
        AuthMethod::Oidc(OidcAuth {
            oidc_discovery_url: discovery.url(),
            ca_cert: Some(ca.ca_pem().to_string()),
            bound_issuer: discovery.url(),
            bound_audiences: AUDIENCE.into(),
            bound_subject: "spiffe://example.org/ns/prod/**".into(),
            ..OidcAuth::default()
        }),
    )));
    infisical.add_identity(policy(Identity::new(
        JWT_IDENTITY,
        AuthMethod::Jwt(JwtAuth {
            keys: JwtKeys::JwksUrl {
                url: format!("{}/keys", discovery.url()),
                ca_cert: Some(ca.ca_pem().to_string()),
            },
            bound_issuer: String::new(),
            bound_audiences: AUDIENCE.into(),
            bound_subject: WORKLOAD.into(),
            bound_claims: std::collections::BTreeMap::default(),
        }),
    )));
    let mut bundle = ring.jwks();
    for key in bundle["keys"].as_array_mut().expect("keys") {
        key["use"] = json!("jwt-svid");
    }
    infisical.add_identity(policy(Identity::new(
        SPIFFE_IDENTITY,
        AuthMethod::Spiffe(SpiffeAuth {
            trust_domain: "example.org".into(),
            allowed_spiffe_ids: "spiffe://example.org/ns/prod/sa/*".into(),
            allowed_audiences: AUDIENCE.into(),
            bundle,
        }),
    )));
}

/// Seconds since the Unix epoch.
///
/// # Panics
/// If the clock is before 1970.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims of a JWT-SVID as SPIRE mints them for one audience (a plain
/// string): issued now, valid five minutes, `iss` only when given.
pub fn svid_claims(sub: &str, aud: &str, iss: Option<&str>) -> Value {
    let now = now();
    let mut claims = json!({"sub": sub, "aud": aud, "exp": now + 300, "iat": now});
    if let Some(iss) = iss {
        claims["iss"] = json!(iss);
    }
    claims
}

/// The key type for a stack whose agent signs with RSA.
pub fn rsa_agent() -> AgentConfig {
    AgentConfig::default().alg(KeyAlg::Rs256)
}
