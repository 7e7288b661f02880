//! A stand-in for the Infisical API: machine-identity logins (OIDC, JWT and
//! SPIFFE Auth) with the real server's validation and refusals, HS256 access
//! tokens with TTL / max TTL / uses (current and legacy lifecycles), secrets
//! over `GET /api/v4/secrets` and `GET /api/v3/secrets/raw` (imports,
//! references, tags, recursion, `ETag`), plus fault, rate-limit and log knobs
//! for tests. Facts imitated: `shared/reference/infisical-api.md` §1–§5, §9.

mod auth;
mod error;
mod faults;
mod glob;
mod routes;
mod secrets;
mod tokens;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::http::HttpServer;

pub use faults::{Fault, RateClass, RequestRecord};

/// How the stand-in starts. `Default` is a current server over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct InfisicalConfig {
    /// Serve HTTPS with this configuration (e.g. `TestCa::server_config()`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Older servers' token lifecycle (§3.4, §9): `exp` = issue + max TTL, the
    /// TTL enforced server-side, renew returns the same string, and a renew in
    /// the last TTL before max TTL answers 401 and deletes the token.
    pub legacy_tokens: bool,
    /// Older servers have no `/api/v4/secrets`: it answers 404 "Not Found".
    pub v4_disabled: bool,
    /// The 2024-10 server answered 500 to an OIDC login whose `aud` is an array (§9).
    pub array_aud_bug: bool,
}

/// How an identity logs in.
#[derive(Clone, Debug)]
pub enum AuthMethod {
    /// OIDC Auth (`/api/v1/auth/oidc-auth/login`).
    Oidc(OidcAuth),
    /// JWT Auth (`/api/v1/auth/jwt-auth/login`).
    Jwt(JwtAuth),
    /// SPIFFE Auth (`/api/v1/auth/spiffe-auth/login`).
    Spiffe(SpiffeAuth),
}

/// An identity's OIDC Auth configuration (§2 field names, snake-cased).
#[derive(Clone, Debug, Default)]
pub struct OidcAuth {
    /// Issuer base URL; the server appends `/.well-known/openid-configuration`.
    pub oidc_discovery_url: String,
    /// PEM; when set, the only CA trusted for discovery and JWKS fetches.
    /// When unset no CA is trusted here (a private CA would fail on a real server too).
    pub ca_cert: Option<String>,
    /// Exact match on `iss` (required on a real server).
    pub bound_issuer: String,
    /// `", "`-separated globs; empty = audience not checked.
    pub bound_audiences: String,
    /// One glob (not split on commas); empty = not checked.
    pub bound_subject: String,
    /// Claim (dot path) -> `", "`-separated patterns.
    pub bound_claims: BTreeMap<String, String>,
}

/// Where JWT Auth finds its verification keys.
#[derive(Clone, Debug)]
pub enum JwtKeys {
    /// Fetch a JWKS from this URL (no discovery), optionally trusting only `ca_cert`.
    JwksUrl {
        /// The JWKS URL.
        url: String,
        /// PEM of the only CA trusted (`jwksCaCert`).
        ca_cert: Option<String>,
    },
    /// Static PEM public keys (`publicKeys`).
    PublicKeysPem(Vec<String>),
    /// A static JWKS document.
    Jwks(Value),
}

/// An identity's JWT Auth configuration.
#[derive(Clone, Debug)]
pub struct JwtAuth {
    /// Verification keys.
    pub keys: JwtKeys,
    /// Optional exact `iss`; a mismatch is 403.
    pub bound_issuer: String,
    /// As in [`OidcAuth`].
    pub bound_audiences: String,
    /// As in [`OidcAuth`].
    pub bound_subject: String,
    /// As in [`OidcAuth`].
    pub bound_claims: BTreeMap<String, String>,
}

/// An identity's SPIFFE Auth configuration (static bundle profile).
#[derive(Clone, Debug)]
pub struct SpiffeAuth {
    /// `sub`'s trust domain must equal this exactly.
    pub trust_domain: String,
    /// Comma-separated globs over the SPIFFE ID (required).
    pub allowed_spiffe_ids: String,
    /// Comma-separated audiences (required).
    pub allowed_audiences: String,
    /// The SPIFFE bundle (JWKS; keys with `use: "jwt-svid"`, `"sig"` or none are used).
    pub bundle: Value,
}

/// A machine identity with one auth method and its token policy.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The identity ID sent as `identityId`.
    pub id: String,
    /// Its login method.
    pub auth: AuthMethod,
    /// `accessTokenTTL` in seconds (0 = server ceiling).
    pub access_token_ttl: u64,
    /// `accessTokenMaxTTL` in seconds (0 = none).
    pub access_token_max_ttl: u64,
    /// `accessTokenNumUsesLimit` (0 = unlimited).
    pub access_token_num_uses_limit: u64,
}

impl Identity {
    /// An identity with the attach API's defaults (TTL and max TTL 30 days, unlimited uses).
    pub fn new(id: &str, auth: AuthMethod) -> Self {
        Self {
            id: id.to_string(),
            auth,
            access_token_ttl: 2_592_000,
            access_token_max_ttl: 2_592_000,
            access_token_num_uses_limit: 0,
        }
    }

    /// Sets TTL and max TTL (seconds).
    #[must_use]
    pub fn ttl(mut self, ttl: u64, max_ttl: u64) -> Self {
        self.access_token_ttl = ttl;
        self.access_token_max_ttl = max_ttl;
        self
    }

    /// Sets the uses limit.
    #[must_use]
    pub fn uses_limit(mut self, uses: u64) -> Self {
        self.access_token_num_uses_limit = uses;
        self
    }
}

/// Login, renewal and revocation counts (successful ones), and failed logins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful logins.
    pub logins: u64,
    /// Refused logins.
    pub login_failures: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// Successful revocations.
    pub revocations: u64,
}

/// Everything the server knows, behind one lock (no await while held).
pub(crate) struct State {
    pub(crate) legacy_tokens: AtomicBool,
    pub(crate) v4_disabled: AtomicBool,
    pub(crate) array_aud_bug: AtomicBool,
    pub(crate) clock_offset_ms: AtomicU64,
    pub(crate) token_secret: [u8; 32],
    pub(crate) inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) identities: HashMap<String, Identity>,
    pub(crate) grants: HashSet<(String, String)>,
    pub(crate) tokens: HashMap<String, tokens::TokenRecord>,
    pub(crate) store: secrets::Store,
    pub(crate) faults: faults::Faults,
    pub(crate) counters: Counters,
}

impl State {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// The server's clock: real time plus the offset of [`FakeInfisical::advance_clock`].
    pub(crate) fn now_ms(&self) -> u64 {
        tokens::now_ms() + self.clock_offset_ms.load(Ordering::SeqCst)
    }
    pub(crate) fn legacy(&self) -> bool {
        self.legacy_tokens.load(Ordering::SeqCst)
    }
}

/// A running Infisical stand-in. Stops when dropped.
pub struct FakeInfisical {
    server: HttpServer,
    state: Arc<State>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for FakeInfisical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeInfisical")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl FakeInfisical {
    /// Starts the server on `127.0.0.1:<ephemeral>`.
    pub fn start(config: InfisicalConfig) -> Self {
        let state = Arc::new(State {
            legacy_tokens: AtomicBool::new(config.legacy_tokens),
            v4_disabled: AtomicBool::new(config.v4_disabled),
            array_aud_bug: AtomicBool::new(config.array_aud_bug),
            clock_offset_ms: AtomicU64::new(0),
            token_secret: rand::random(),
            inner: Mutex::new(Inner::default()),
        });
        let server = HttpServer::start(routes::router(Arc::clone(&state)), config.tls.clone());
        Self {
            server,
            state,
            tls: config.tls,
        }
    }

    /// `http(s)://127.0.0.1:PORT`, no trailing slash (the instance origin; the API is under `/api`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops serving (the server is down); state is kept.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Serves again on the same port with the same state (a restart).
    pub fn restart(&mut self) {
        self.server.stop();
        // The old runtime shuts down in the background: wait until its
        // listener has released the port.
        for _ in 0..100 {
            if std::net::TcpListener::bind(self.server.addr()).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.server = HttpServer::start_on(
            self.server.addr(),
            routes::router(Arc::clone(&self.state)),
            self.tls.clone(),
        );
    }

    /// Switches the legacy token lifecycle on or off for tokens issued from now on.
    pub fn set_legacy_tokens(&self, on: bool) {
        self.state.legacy_tokens.store(on, Ordering::SeqCst);
    }

    /// Makes `/api/v4/secrets` answer 404 (an older server) or serve again.
    pub fn set_v4_disabled(&self, disabled: bool) {
        self.state.v4_disabled.store(disabled, Ordering::SeqCst);
    }

    /// Moves the server's clock forward (token expiry, TTLs, JWT `exp`/`nbf`
    /// checks), so lifecycle tests need not sleep. Clients' clocks are unaffected.
    pub fn advance_clock(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).expect("duration fits");
        self.state.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Adds (or replaces) an identity.
    pub fn add_identity(&self, identity: Identity) {
        self.state
            .lock()
            .identities
            .insert(identity.id.clone(), identity);
    }

    /// Adds a project with an ID and a slug (and no environments yet).
    pub fn add_project(&self, id: &str, slug: &str) {
        self.state.lock().store.add_project(id, slug);
    }

    /// Adds an environment (slug) to a project.
    pub fn add_environment(&self, project_id: &str, env: &str) {
        self.state.lock().store.project_mut(project_id).add_env(env);
    }

    /// Lets `identity_id` read secrets of `project_id`.
    pub fn grant_read(&self, identity_id: &str, project_id: &str) {
        self.state
            .lock()
            .grants
            .insert((identity_id.to_string(), project_id.to_string()));
    }

    /// Creates a folder (and its parents).
    pub fn add_folder(&self, project_id: &str, env: &str, path: &str) {
        self.state
            .lock()
            .store
            .project_mut(project_id)
            .add_folder(env, path);
    }

    /// Sets (creates or updates) a shared secret; the folder is created if needed.
    pub fn set_secret(&self, project_id: &str, env: &str, path: &str, key: &str, value: &str) {
        self.set_secret_tagged(project_id, env, path, key, value, &[]);
    }

    /// Like [`FakeInfisical::set_secret`], with tag slugs (tags are created as needed).
    pub fn set_secret_tagged(
        &self,
        project_id: &str,
        env: &str,
        path: &str,
        key: &str,
        value: &str,
        tags: &[&str],
    ) {
        self.state
            .lock()
            .store
            .project_mut(project_id)
            .set_secret(env, path, key, value, tags);
    }

    /// Hides a secret's value from every identity, as a describe-only
    /// permission on that one secret does; `true` if it exists.
    pub fn hide_secret_value(&self, project_id: &str, env: &str, path: &str, key: &str) -> bool {
        self.state
            .lock()
            .store
            .project_mut(project_id)
            .hide_secret_value(env, path, key)
    }

    /// Deletes a secret; `true` if it existed.
    pub fn delete_secret(&self, project_id: &str, env: &str, path: &str, key: &str) -> bool {
        self.state
            .lock()
            .store
            .project_mut(project_id)
            .delete_secret(env, path, key)
    }

    /// Adds an import to folder `(env, path)` of the secrets of `(from_env, from_path)`,
    /// after the folder's existing imports.
    pub fn add_import(
        &self,
        project_id: &str,
        env: &str,
        path: &str,
        from_env: &str,
        from_path: &str,
    ) {
        self.state
            .lock()
            .store
            .project_mut(project_id)
            .add_import(env, path, from_env, from_path);
    }

    /// Makes the next `n` requests whose path matches `route` fail with `fault`.
    /// `route` is an exact path (`/api/v4/secrets`) or a prefix ending in `*`.
    pub fn fail_next(&self, route: &str, n: u32, fault: Fault) {
        self.state.lock().faults.add(route, n, fault);
    }

    /// Limits a route class to `per_minute` requests per minute (`None` = no limit).
    pub fn set_rate_limit(&self, class: RateClass, per_minute: Option<u32>) {
        self.state.lock().faults.set_rate_limit(class, per_minute);
    }

    /// Limits every rate-limited request together (all classes; `/api/status`
    /// exempt) to `limit` per `window`, e.g. 50 per second for a load test;
    /// `None` lifts it. Over the limit: 429 with `Retry-After` (whole seconds).
    pub fn set_total_rate_limit(&self, limit: Option<(u32, std::time::Duration)>) {
        self.state.lock().faults.set_total_rate_limit(limit);
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.lock().faults.log.clone()
    }

    /// Login / renewal / revocation counts.
    pub fn counters(&self) -> Counters {
        self.state.lock().counters
    }

    /// The current strings of the access tokens alive on the server (not revoked,
    /// not deleted), as an operator could see them: lets a test revoke a client's
    /// token out of band through `POST /api/v1/auth/token/revoke`.
    pub fn live_token_strings(&self) -> Vec<String> {
        self.state
            .lock()
            .tokens
            .values()
            .filter(|t| !t.revoked)
            .map(tokens::TokenRecord::current)
            .collect()
    }

    /// The current strings of every access token the server still holds,
    /// revoked ones included (what a test must find nowhere in the logs).
    pub fn all_token_strings(&self) -> Vec<String> {
        self.state
            .lock()
            .tokens
            .values()
            .map(tokens::TokenRecord::current)
            .collect()
    }

    /// Access tokens currently alive on the server (not revoked, not deleted).
    pub fn live_tokens(&self) -> usize {
        self.state
            .lock()
            .tokens
            .values()
            .filter(|t| !t.revoked)
            .count()
    }
}
