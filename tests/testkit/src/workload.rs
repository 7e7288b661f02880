//! A stand-in for the SPIRE agent's SPIFFE Workload API: a real tonic gRPC
//! server on a unix socket in a short temp dir, minting real signed JWT-SVIDs
//! from a [`KeyRing`], streaming the JWKS, and answering with SPIRE's status
//! codes and texts. Knobs imitate an agent that is still starting, a workload
//! that is not registered yet, an agent that cannot attest, and a crash.
//! Facts: `shared/reference/spiffe.md` §2 (protocol), §3 (claims), §1.9 (serving).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::keys::{KeyAlg, KeyRing};
use crate::pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use crate::pb::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svidRequest, X509svidResponse,
};

/// The metadata key every Workload API call must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// SPIRE's text for a workload without a matching registration entry; the
/// `spiffe` crate maps it to `WorkloadApiError::NoIdentityIssued`.
pub const NO_IDENTITY_ISSUED: &str = "no identity issued";
/// SPIRE's text when the security header is absent or not exactly `true`.
pub const SECURITY_HEADER_MISSING: &str = "security header missing from request";
/// SPIRE's text for an empty audience list.
pub const AUDIENCE_REQUIRED: &str = "audience must be specified";
/// SPIRE's text when the caller cannot be attested (returned as Unavailable).
pub const ATTESTATION_FAILED: &str = "workload attestation failed";
/// SPIRE's text for a `ValidateJWTSVID` call without a token.
pub const SVID_REQUIRED: &str = "svid must be specified";
/// The environment variable that names the Workload API endpoint.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// How often an open `FetchJWTBundles` stream checks the key ring for a
/// change (SPIRE re-sends a snapshot only when the bundle changed).
const BUNDLE_POLL: Duration = Duration::from_millis(100);

/// One identity the workload is entitled to (one registration entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svid {
    /// The SPIFFE ID, `spiffe://<trust domain>/<path>`.
    pub spiffe_id: String,
    /// The entry's optional hint, sent in `JWTSVID.hint`.
    pub hint: Option<String>,
}

impl Svid {
    /// An identity without a hint.
    pub fn new(spiffe_id: impl Into<String>) -> Self {
        Self {
            spiffe_id: spiffe_id.into(),
            hint: None,
        }
    }

    /// An identity with a hint.
    pub fn with_hint(spiffe_id: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            spiffe_id: spiffe_id.into(),
            hint: Some(hint.into()),
        }
    }
}

/// A lie a misbehaving (or impostor) agent tells in every JWT-SVID it
/// answers: the answer's `spiffe_id` still names the registration entry and
/// the request's audiences are still what was asked, but the token says
/// otherwise. Real SPIRE mints `sub` from the entry and `aud` from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lie {
    /// Mint the token with this `sub`.
    Subject(String),
    /// Mint the token with this `aud` instead of the requested audiences.
    Audience(Vec<String>),
}

/// How to start a [`FakeAgent`]. Fields are public; the chained setters are
/// a convenience.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The trust domain name (no scheme), keys the JWKS in `FetchJWTBundles`.
    /// Default `example.org`.
    pub trust_domain: String,
    /// The workload's identities, in the order returned. Default one:
    /// `spiffe://example.org/workload` without a hint.
    pub svids: Vec<Svid>,
    /// The algorithm of a freshly generated key ring (ignored when `keys`
    /// is given). Default ES256, SPIRE's default.
    pub alg: KeyAlg,
    /// JWT-SVID lifetime (`exp - iat`). Default 5 minutes, SPIRE's default.
    pub ttl: Duration,
    /// The `iss` claim; `None` omits it, as SPIRE does unless the server sets
    /// `jwt_issuer`.
    pub issuer: Option<String>,
    /// The socket appears only after this delay (the agent is still starting).
    pub start_delay: Duration,
    /// The first N `FetchJWTSVID` calls get `PermissionDenied` "no identity
    /// issued" (registration not synced yet).
    pub deny_first: u32,
    /// The first N `FetchJWTSVID` calls get Unavailable "workload attestation
    /// failed".
    pub unavailable_first: u32,
    /// Sign with this ring (shared with a `Discovery` or another agent)
    /// instead of a fresh one.
    pub keys: Option<KeyRing>,
    /// `FetchJWTSVID` answers only after this long (slow workload
    /// attestation: the k8s attestor may take up to ~30 s).
    pub latency: Duration,
    /// SVIDs are minted as if issued this long ago (`iat = now - age`,
    /// `exp = iat + ttl`): a token the agent's cache already half used, or,
    /// beyond the TTL, an expired one.
    pub age: Duration,
    /// Imitate the SPIRE agent's JWT-SVID cache: the same token for the same
    /// SPIFFE ID and audience set until less than half its lifetime is left
    /// (SPIRE jitters that to 45–55 %; this uses exactly 50 %). Off by
    /// default so every fetch mints a fresh token.
    pub agent_cache: bool,
    /// Answer JWT-SVIDs whose claims contradict the answer. Default none.
    pub lie: Option<Lie>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            trust_domain: "example.org".to_string(),
            svids: vec![Svid::new("spiffe://example.org/workload")],
            alg: KeyAlg::Es256,
            ttl: Duration::from_secs(300),
            issuer: None,
            start_delay: Duration::ZERO,
            deny_first: 0,
            unavailable_first: 0,
            keys: None,
            latency: Duration::ZERO,
            age: Duration::ZERO,
            agent_cache: false,
            lie: None,
        }
    }
}

impl AgentConfig {
    /// Sets the trust domain name.
    #[must_use]
    pub fn trust_domain(mut self, name: impl Into<String>) -> Self {
        self.trust_domain = name.into();
        self
    }

    /// Replaces the workload's identities.
    #[must_use]
    pub fn svids(mut self, svids: impl IntoIterator<Item = Svid>) -> Self {
        self.svids = svids.into_iter().collect();
        self
    }

    /// Sets the algorithm of the generated key ring.
    #[must_use]
    pub fn alg(mut self, alg: KeyAlg) -> Self {
        self.alg = alg;
        self
    }

    /// Sets the JWT-SVID lifetime.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Puts `iss` in every JWT-SVID.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Binds the socket only after `delay`.
    #[must_use]
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    /// Denies the first `n` `FetchJWTSVID` calls with "no identity issued".
    #[must_use]
    pub fn deny_first(mut self, n: u32) -> Self {
        self.deny_first = n;
        self
    }

    /// Answers the first `n` `FetchJWTSVID` calls with Unavailable.
    #[must_use]
    pub fn unavailable_first(mut self, n: u32) -> Self {
        self.unavailable_first = n;
        self
    }

    /// Signs with a shared key ring.
    #[must_use]
    pub fn keys(mut self, keys: KeyRing) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Delays every `FetchJWTSVID` answer.
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Mints SVIDs as if issued `age` ago.
    #[must_use]
    pub fn age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Turns the agent's JWT-SVID cache on or off.
    #[must_use]
    pub fn agent_cache(mut self, on: bool) -> Self {
        self.agent_cache = on;
        self
    }

    /// Lies in every JWT-SVID answered.
    #[must_use]
    pub fn lie(mut self, lie: Lie) -> Self {
        self.lie = Some(lie);
        self
    }
}

/// One call the agent received, as recorded by [`FakeAgent::calls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCall {
    /// The RPC name as in the method path: `FetchJWTSVID`, `FetchJWTBundles`,
    /// `ValidateJWTSVID`, `FetchX509SVID`, `FetchX509Bundles`.
    pub method: &'static str,
    /// The requested audiences (`ValidateJWTSVID`: its one audience).
    pub audience: Vec<String>,
    /// The requested `spiffe_id` (empty when none was asked for).
    pub spiffe_id: String,
    /// Whether the metadata carried exactly one `workload.spiffe.io: true`.
    pub had_security_header: bool,
}

/// Settings that tests may change while the agent runs. No `Debug`: the
/// cache holds bearer tokens.
struct Knobs {
    svids: Vec<Svid>,
    ttl: Duration,
    issuer: Option<String>,
    deny: u32,
    unavailable: u32,
    latency: Duration,
    age: Duration,
    agent_cache: bool,
    lie: Option<Lie>,
    /// (SPIFFE ID, sorted audiences) -> (token, iat, exp).
    cache: HashMap<(String, Vec<String>), (String, u64, u64)>,
}

impl Knobs {
    /// A JWT-SVID for `spiffe_id`: fresh, or from the agent cache when that
    /// is on and the cached one has at least half its lifetime left.
    fn token(&mut self, keys: &KeyRing, spiffe_id: &str, audiences: &[String]) -> String {
        let now = now_secs();
        let mut sorted = audiences.to_vec();
        sorted.sort();
        sorted.dedup();
        let key = (spiffe_id.to_string(), sorted);
        if self.agent_cache {
            if let Some((token, iat, exp)) = self.cache.get(&key) {
                let lifetime = exp.saturating_sub(*iat);
                if exp.saturating_sub(now) * 2 >= lifetime && *exp > now {
                    return token.clone();
                }
            }
        }
        let iat = now.saturating_sub(self.age.as_secs());
        let exp = iat + self.ttl.as_secs();
        let token = keys.sign(&svid_claims(
            spiffe_id,
            audiences,
            iat,
            exp,
            self.issuer.as_deref(),
        ));
        if self.agent_cache {
            self.cache.insert(key, (token.clone(), iat, exp));
        }
        token
    }
}

struct Shared {
    trust_domain: String,
    keys: KeyRing,
    knobs: Mutex<Knobs>,
    calls: Mutex<Vec<AgentCall>>,
}

impl Shared {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().expect("agent knobs lock")
    }

    fn record(&self, call: AgentCall) {
        self.calls.lock().expect("agent calls lock").push(call);
    }

    fn bundles(&self) -> JwtBundlesResponse {
        let jwks = serde_json::to_vec(&self.keys.jwks()).expect("JWKS serialises");
        JwtBundlesResponse {
            bundles: [(format!("spiffe://{}", self.trust_domain), jwks)].into(),
        }
    }
}

/// The server's thread: dropping its runtime drops every connection task,
/// so clients see the connection close as when the agent process dies.
#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A running fake SPIRE agent. Stops (and removes its socket) when dropped.
pub struct FakeAgent {
    // Held for its Drop: removes the socket's directory.
    _dir: tempfile::TempDir,
    socket: PathBuf,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent")
            .field("endpoint", &self.endpoint())
            .field("trust_domain", &self.shared.trust_domain)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl FakeAgent {
    /// Starts serving on `<short temp dir>/agent.sock`. Unless
    /// `config.start_delay` is set, the socket exists when this returns.
    ///
    /// # Panics
    /// If the temp dir or the socket cannot be created.
    pub fn start(config: AgentConfig) -> Self {
        // UDS paths are limited to 108 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("sa")
            .tempdir_in("/tmp")
            .expect("temp dir for the agent socket");
        let socket = dir.path().join("agent.sock");
        let keys = config.keys.unwrap_or_else(|| KeyRing::new(config.alg));
        let shared = Arc::new(Shared {
            trust_domain: config.trust_domain,
            keys,
            knobs: Mutex::new(Knobs {
                svids: config.svids,
                ttl: config.ttl,
                issuer: config.issuer,
                deny: config.deny_first,
                unavailable: config.unavailable_first,
                latency: config.latency,
                age: config.age,
                agent_cache: config.agent_cache,
                lie: config.lie,
                cache: HashMap::new(),
            }),
            calls: Mutex::new(Vec::new()),
        });
        let mut agent = Self {
            _dir: dir,
            socket,
            shared,
            running: None,
        };
        agent.launch(config.start_delay);
        agent
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The endpoint URI, `unix:///…/agent.sock`, as `SPIFFE_ENDPOINT_SOCKET`
    /// or `--socket` takes it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `("SPIFFE_ENDPOINT_SOCKET", endpoint)`, for a child's environment.
    pub fn env(&self) -> (&'static str, String) {
        (ENDPOINT_ENV, self.endpoint())
    }

    /// The key ring that signs the SVIDs (share it with a `Discovery`).
    pub fn keys(&self) -> &KeyRing {
        &self.shared.keys
    }

    /// The trust domain name, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.shared.trust_domain
    }

    /// Denies the next `n` `FetchJWTSVID` calls with "no identity issued".
    pub fn set_deny(&self, n: u32) {
        self.shared.knobs().deny = n;
    }

    /// Answers the next `n` `FetchJWTSVID` calls with Unavailable.
    pub fn set_unavailable(&self, n: u32) {
        self.shared.knobs().unavailable = n;
    }

    /// Changes the lifetime of SVIDs minted from now on.
    pub fn set_ttl(&self, ttl: Duration) {
        self.shared.knobs().ttl = ttl;
    }

    /// Changes the `iss` claim of SVIDs minted from now on.
    pub fn set_issuer(&self, issuer: Option<String>) {
        self.shared.knobs().issuer = issuer;
    }

    /// Replaces the workload's identities (an entry created or deleted).
    pub fn set_svids(&self, svids: impl IntoIterator<Item = Svid>) {
        self.shared.knobs().svids = svids.into_iter().collect();
    }

    /// Delays every `FetchJWTSVID` answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.knobs().latency = latency;
    }

    /// Mints SVIDs from now on as if issued `age` ago.
    pub fn set_age(&self, age: Duration) {
        self.shared.knobs().age = age;
    }

    /// Lies (or, with `None`, stops lying) in the JWT-SVIDs answered from now on.
    pub fn set_lie(&self, lie: Option<Lie>) {
        self.shared.knobs().lie = lie;
    }

    /// Mints a JWT-SVID as `FetchJWTSVID` would, with the current issuer, for
    /// tests that hand the token over by file (`--jwt-file`).
    pub fn mint(&self, spiffe_id: &str, audiences: &[&str], ttl: Duration) -> String {
        let audiences: Vec<String> = audiences.iter().map(ToString::to_string).collect();
        let issuer = self.shared.knobs().issuer.clone();
        let iat = now_secs();
        self.shared.keys.sign(&svid_claims(
            spiffe_id,
            &audiences,
            iat,
            iat + ttl.as_secs(),
            issuer.as_deref(),
        ))
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<AgentCall> {
        self.shared.calls.lock().expect("agent calls lock").clone()
    }

    /// Whether the agent is serving (or about to, after its start delay).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Crashes the agent: every connection drops, the socket disappears.
    /// Returns once the connections are closed. Knobs and the call log stay.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            // The thread may already have ended (a bind failure); nothing to stop then.
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove agent socket {}: {e}", self.socket.display()),
        }
    }

    /// Crashes the agent but leaves its socket file behind with nothing
    /// listening: clients get `ConnectionRefused` instead of `NotFound`.
    pub fn stop_leaving_stale_socket(&mut self) {
        self.stop();
        // Dropping a bound listener closes it but keeps the file.
        drop(bind(&self.socket));
    }

    /// Stops (if running) and serves again on the same socket path, at once.
    pub fn restart(&mut self) {
        self.restart_after(Duration::ZERO);
    }

    /// Stops (if running) and serves again on the same path after `delay`.
    pub fn restart_after(&mut self, delay: Duration) {
        self.stop();
        self.launch(delay);
    }

    fn launch(&mut self, delay: Duration) {
        // Bind before returning when there is no delay, so the socket is there.
        let listener = if delay.is_zero() {
            Some(bind(&self.socket))
        } else {
            None
        };
        let socket = self.socket.clone();
        let shared = Arc::clone(&self.shared);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("testkit-agent".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("agent runtime");
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = serve(shared, socket, listener, delay) => {}
                    }
                });
                // Dropping the runtime here drops every connection task.
            })
            .expect("spawn agent thread");
        self.running = Some(Running { stop, thread });
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }
}

fn bind(socket: &Path) -> std::os::unix::net::UnixListener {
    // A socket file left by a crashed run would make bind fail.
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .unwrap_or_else(|e| panic!("bind agent socket {}: {e}", socket.display()));
    listener
        .set_nonblocking(true)
        .expect("non-blocking agent socket");
    listener
}

async fn serve(
    shared: Arc<Shared>,
    socket: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    delay: Duration,
) {
    let listener = if let Some(listener) = listener {
        listener
    } else {
        tokio::time::sleep(delay).await;
        bind(&socket)
    };
    let listener = UnixListener::from_std(listener).expect("tokio unix listener");
    let service = SpiffeWorkloadApiServer::new(Agent { shared });
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await;
    if let Err(e) = served {
        panic!("agent server failed: {e}");
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The claims of a JWT-SVID: `sub`, `aud` (a string for one audience, an
/// array for several), `exp`, `iat`, and `iss` only when configured.
fn svid_claims(
    spiffe_id: &str,
    audiences: &[String],
    iat: u64,
    exp: u64,
    issuer: Option<&str>,
) -> Value {
    let aud = match audiences {
        [one] => json!(one),
        many => json!(many),
    };
    let mut claims = json!({
        "sub": spiffe_id,
        "aud": aud,
        "exp": exp,
        "iat": iat,
    });
    if let Some(issuer) = issuer {
        claims["iss"] = json!(issuer);
    }
    claims
}

fn has_security_header<T>(request: &Request<T>) -> bool {
    // SPIRE: exactly one value, equal to "true".
    let mut values = request.metadata().get_all(SECURITY_HEADER).iter();
    matches!(
        (values.next(), values.next()),
        (Some(v), None) if v.as_bytes() == b"true"
    )
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct Agent {
    shared: Arc<Shared>,
}

impl Agent {
    /// Records the call and refuses it when the security header is missing.
    fn admit<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        audience: Vec<String>,
        spiffe_id: String,
    ) -> Result<(), Status> {
        let had_security_header = has_security_header(request);
        self.shared.record(AgentCall {
            method,
            audience,
            spiffe_id,
            had_security_header,
        });
        if had_security_header {
            Ok(())
        } else {
            Err(Status::invalid_argument(SECURITY_HEADER_MISSING))
        }
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Agent {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.admit(&request, "FetchX509SVID", Vec::new(), String::new())?;
        Err(Status::unimplemented(
            "X.509-SVIDs are not served by this stand-in",
        ))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.admit(&request, "FetchX509Bundles", Vec::new(), String::new())?;
        Err(Status::unimplemented(
            "X.509 bundles are not served by this stand-in",
        ))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let req = request.get_ref().clone();
        self.admit(
            &request,
            "FetchJWTSVID",
            req.audience.clone(),
            req.spiffe_id.clone(),
        )?;
        // SPIRE's order: audience, requested ID, attestation, entries.
        if req.audience.is_empty() {
            return Err(Status::invalid_argument(AUDIENCE_REQUIRED));
        }
        if !req.spiffe_id.is_empty() {
            if let Err(e) = spiffe::SpiffeId::new(&req.spiffe_id) {
                return Err(Status::invalid_argument(format!(
                    "invalid requested SPIFFE ID: {e}"
                )));
            }
        }
        let latency = self.shared.knobs().latency;
        if !latency.is_zero() {
            // Attestation is slow; the call is already in the log.
            tokio::time::sleep(latency).await;
        }
        // SPIRE drops empty audience values from the claim.
        let audiences: Vec<String> = req.audience.into_iter().filter(|a| !a.is_empty()).collect();
        let svids: Vec<Jwtsvid> = {
            let mut knobs = self.shared.knobs();
            if knobs.unavailable > 0 {
                knobs.unavailable -= 1;
                return Err(Status::unavailable(ATTESTATION_FAILED));
            }
            if knobs.deny > 0 {
                knobs.deny -= 1;
                return Err(Status::permission_denied(NO_IDENTITY_ISSUED));
            }
            let wanted: Vec<Svid> = knobs
                .svids
                .iter()
                .filter(|s| req.spiffe_id.is_empty() || s.spiffe_id == req.spiffe_id)
                .cloned()
                .collect();
            let lie = knobs.lie.clone();
            wanted
                .into_iter()
                .map(|s| {
                    let (sub, aud) = match &lie {
                        None => (s.spiffe_id.as_str(), audiences.as_slice()),
                        Some(Lie::Subject(sub)) => (sub.as_str(), audiences.as_slice()),
                        Some(Lie::Audience(aud)) => (s.spiffe_id.as_str(), aud.as_slice()),
                    };
                    Jwtsvid {
                        svid: knobs.token(&self.shared.keys, sub, aud),
                        spiffe_id: s.spiffe_id.clone(),
                        hint: s.hint.unwrap_or_default(),
                    }
                })
                .collect()
        };
        if svids.is_empty() {
            return Err(Status::permission_denied(NO_IDENTITY_ISSUED));
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.admit(&request, "FetchJWTBundles", Vec::new(), String::new())?;
        {
            // Refused like the SVID while the workload has no identity or
            // cannot be attested; these do not use up the counters.
            let knobs = self.shared.knobs();
            if knobs.unavailable > 0 {
                return Err(Status::unavailable(ATTESTATION_FAILED));
            }
            if knobs.deny > 0 || knobs.svids.is_empty() {
                return Err(Status::permission_denied(NO_IDENTITY_ISSUED));
            }
        }
        let (tx, rx) = mpsc::channel(4);
        let shared = Arc::clone(&self.shared);
        // First snapshot at once, then a new one whenever the ring changes;
        // ends when the client goes away (or the runtime is dropped).
        tokio::spawn(async move {
            let mut last = shared.bundles();
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(BUNDLE_POLL) => {}
                }
                let now = shared.bundles();
                if now != last {
                    if tx.send(Ok(now.clone())).await.is_err() {
                        return;
                    }
                    last = now;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let req = request.get_ref().clone();
        self.admit(
            &request,
            "ValidateJWTSVID",
            vec![req.audience.clone()],
            String::new(),
        )?;
        if req.audience.is_empty() {
            return Err(Status::invalid_argument(AUDIENCE_REQUIRED));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument(SVID_REQUIRED));
        }
        // SPIRE answers every validation failure with InvalidArgument.
        let (spiffe_id, claims) = validate(&self.shared.keys, &req.svid, &req.audience)
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(to_struct(claims)),
        }))
    }
}

/// Checks a JWT-SVID against the ring: known `kid`, signature, `exp`, the
/// audience among `aud`, and `sub` a SPIFFE ID. Returns `sub` and the claims.
fn validate(keys: &KeyRing, token: &str, audience: &str) -> Result<(String, Value), String> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| format!("unable to parse JWT token: {e}"))?;
    let kid = header
        .kid
        .ok_or_else(|| "token header missing key id".to_string())?;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(keys.jwks()).map_err(|e| format!("bundle: {e}"))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("no JWT authority {kid:?} found"))?;
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("JWT authority: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("unable to validate JWT-SVID: {e}"))?
        .claims;
    let sub = claims["sub"].as_str().unwrap_or_default().to_string();
    spiffe::SpiffeId::new(&sub).map_err(|e| format!("token has an invalid subject claim: {e}"))?;
    Ok((sub, claims))
}

/// A JSON object as a protobuf `Struct` (the `claims` of `ValidateJWTSVID`).
fn to_struct(value: Value) -> prost_types::Struct {
    match to_proto(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn to_proto(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(agent_cache: bool) -> Knobs {
        Knobs {
            svids: Vec::new(),
            ttl: Duration::from_secs(300),
            issuer: None,
            deny: 0,
            unavailable: 0,
            latency: Duration::ZERO,
            age: Duration::ZERO,
            agent_cache,
            lie: None,
            cache: HashMap::new(),
        }
    }

    fn payload(token: &str) -> Value {
        use base64::Engine as _;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn one_audience_is_a_string_several_are_an_array() {
        let one = svid_claims("spiffe://e.org/w", &["a".into()], 10, 70, None);
        assert_eq!(one["aud"], json!("a"));
        assert!(one.get("iss").is_none());
        let two = svid_claims(
            "spiffe://e.org/w",
            &["a".into(), "b".into()],
            10,
            70,
            Some("https://oidc"),
        );
        assert_eq!(two["aud"], json!(["a", "b"]));
        assert_eq!(two["iss"], "https://oidc");
        assert_eq!(
            (two["iat"].as_u64(), two["exp"].as_u64()),
            (Some(10), Some(70))
        );
    }

    #[test]
    fn an_aged_token_was_issued_age_ago_and_expires_ttl_after_that() {
        let ring = KeyRing::new(KeyAlg::Es256);
        let mut k = knobs(false);
        k.age = Duration::from_secs(200);
        let claims = payload(&k.token(&ring, "spiffe://e.org/w", &["a".into()]));
        let iat = claims["iat"].as_u64().unwrap();
        assert!(now_secs() - iat >= 200);
        assert_eq!(claims["exp"].as_u64().unwrap() - iat, 300);
    }

    #[test]
    fn the_agent_cache_reuses_a_token_per_audience_set_until_half_its_life_is_gone() {
        let ring = KeyRing::new(KeyAlg::Es256);
        let id = "spiffe://e.org/w";
        let mut k = knobs(true);
        let first = k.token(&ring, id, &["a".into(), "b".into()]);
        k.ttl = Duration::from_secs(60);
        // Same set in another order: the cached token, still with the old TTL.
        let again = k.token(&ring, id, &["b".into(), "a".into()]);
        assert_eq!(again, first);
        // Another audience set: a fresh token with the new TTL.
        let other = payload(&k.token(&ring, id, &["a".into()]));
        assert_eq!(
            other["exp"].as_u64().unwrap() - other["iat"].as_u64().unwrap(),
            60
        );

        // A cached token with less than half its lifetime left is replaced.
        let now = now_secs();
        let key = (id.to_string(), vec!["c".to_string()]);
        k.cache
            .insert(key.clone(), ("stale".into(), now - 200, now + 100));
        assert_ne!(k.token(&ring, id, &["c".into()]), "stale");
        k.cache.insert(key, ("kept".into(), now - 100, now + 200));
        assert_eq!(k.token(&ring, id, &["c".into()]), "kept");

        // Without the cache every call mints.
        let mut k = knobs(false);
        k.token(&ring, id, &["a".into()]);
        assert!(k.cache.is_empty());
    }

    #[test]
    fn validate_accepts_the_rings_tokens_for_their_audience_only() {
        let ring = KeyRing::new(KeyAlg::Rs256);
        let mut k = knobs(false);
        let token = k.token(&ring, "spiffe://e.org/w", &["a".into(), "b".into()]);
        let (sub, claims) = validate(&ring, &token, "b").unwrap();
        assert_eq!(sub, "spiffe://e.org/w");
        let st = to_struct(claims);
        assert!(matches!(
            st.fields["sub"].kind,
            Some(prost_types::value::Kind::StringValue(ref s)) if s == "spiffe://e.org/w"
        ));
        assert!(matches!(
            st.fields["aud"].kind,
            Some(prost_types::value::Kind::ListValue(ref l)) if l.values.len() == 2
        ));
        assert!(validate(&ring, &token, "c").is_err());
        let other = KeyRing::new(KeyAlg::Rs256);
        assert!(validate(&other, &token, "a").is_err());
        k.age = Duration::from_secs(400);
        let expired = k.token(&ring, "spiffe://e.org/w", &["a".into()]);
        assert!(validate(&ring, &expired, "a").is_err());
    }
}
