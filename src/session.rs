//! The access-token lifecycle: log in with a freshly fetched JWT (never a cached
//! one), renew before expiry, log in again when renewal is refused, the max-TTL
//! budget is nearly spent or a call says the token is no good, and revoke at the end.
//!
//! The timing is a pure planner ([`plan`]) so every case (unknown TTL, `exp`
//! shorter than `expiresIn`, the legacy server whose `exp` is the max TTL) is
//! tested without a server; [`Session`] is the thin async part the supervisor drives.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::{ExitClass, Failure};
use crate::infisical::{
    AccessToken, AuthMethod, Client, Etags, FetchOutcome, FetchSpec, Fetched, InfisicalError,
    ProjectRef,
};
use crate::retry::Transient;
use crate::secrets::SecretSet;
use crate::svid::{SvidError, SvidSource};

/// When nothing about the token's lifetime is known, renew this often anyway:
/// renewing is cheap and tells us early if the token died.
pub const UNKNOWN_LIFETIME_RENEW_EVERY: Duration = Duration::from_secs(3600);

/// Login retries stop this long before the JWT's `exp`: the server checks `exp`
/// with zero clock tolerance.
const JWT_EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// What to do next with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// `POST /api/v1/auth/token/renew`.
    Renew,
    /// A full login with a fresh JWT.
    Relogin,
}

/// The next step and when to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// What.
    pub action: Refresh,
    /// When.
    pub at: Instant,
}

/// What the planner needs to know about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    /// When this token string was obtained.
    pub obtained_at: Instant,
    /// When the login that started the max-TTL budget happened.
    pub login_at: Instant,
    /// `expiresIn` (the configured TTL); zero = unknown.
    pub expires_in: Duration,
    /// `accessTokenMaxTTL`; zero = no budget.
    pub max_ttl: Duration,
    /// Time from `obtained_at` to the token's own `exp`, when it has one.
    pub exp_left: Option<Duration>,
}

impl From<&AccessToken> for TokenTimes {
    fn from(t: &AccessToken) -> Self {
        Self {
            obtained_at: t.obtained_at,
            login_at: t.login_at,
            expires_in: t.expires_in,
            max_ttl: t.max_ttl,
            exp_left: t.exp_after_obtained(),
        }
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// When the token stops working, as far as is known: the shortest of `expiresIn`,
/// its own `exp` and the max-TTL budget, from when it was obtained.
pub fn expires_at(t: &TokenTimes) -> Option<Instant> {
    life(t).map(|l| t.obtained_at + l)
}

fn life(t: &TokenTimes) -> Option<Duration> {
    let budget_left =
        nonzero(t.max_ttl).map(|m| (t.login_at + m).saturating_duration_since(t.obtained_at));
    [nonzero(t.expires_in), t.exp_left, budget_left]
        .into_iter()
        .flatten()
        .min()
}

/// Plans the next refresh of a token.
///
/// - The token's life is the shortest of `expiresIn`, its own `exp`, and what is
///   left of the max-TTL budget; act at 2/3 of it (as the Infisical agent and
///   linkerd do), leaving a third for retries.
/// - Log in again instead of renewing when the renewal would land in the last TTL
///   (plus a margin for latency) before the max TTL: older servers *delete* a
///   token renewed in that window (infisical-api.md §3.4, §9), and on current
///   servers such a renewal only buys a stub of a token.
pub fn plan(t: &TokenTimes) -> Plan {
    let budget_end = nonzero(t.max_ttl).map(|m| t.login_at + m);
    let Some(life) = life(t) else {
        return Plan {
            action: Refresh::Renew,
            at: t.obtained_at + UNKNOWN_LIFETIME_RENEW_EVERY,
        };
    };
    if life.is_zero() {
        return Plan {
            action: Refresh::Relogin,
            at: t.obtained_at,
        };
    }
    let at = t.obtained_at + life * 2 / 3;
    let ttl = nonzero(t.expires_in).unwrap_or(life);
    let margin = (ttl / 6).max(Duration::from_secs(1));
    let action = match budget_end {
        Some(end) if at + ttl + margin > end => Refresh::Relogin,
        _ => Refresh::Renew,
    };
    Plan { action, at }
}

/// How long revoking the token a new login replaced may take at most: it is
/// still valid, so it is worth one request, not a stalled re-login.
const REPLACED_REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A call (fetch, slug lookup) refreshes the token itself only this close to
/// its expiry; earlier, refreshing is the supervisor's planned step.
pub const CALL_EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// Whether a call at `now` must refresh a token that stops working at `expiry`.
fn needs_refresh_for_call(expiry: Instant, now: Instant) -> bool {
    now + CALL_EXPIRY_MARGIN >= expiry
}

/// Errors of a session step: from the JWT source or from Infisical.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Fetching the JWT failed.
    #[error(transparent)]
    Svid(#[from] SvidError),
    /// Talking to Infisical failed.
    #[error(transparent)]
    Infisical(#[from] InfisicalError),
    /// A fetch without `ETag`s was answered "not modified", which cannot be.
    #[error("the server answered 304 Not Modified to a request without If-None-Match")]
    UnexpectedNotModified,
}

impl Transient for SessionError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Svid(e) => e.is_transient(),
            Self::Infisical(e) => e.is_transient(),
            Self::UnexpectedNotModified => false,
        }
    }
}

impl Failure for SessionError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Svid(e) => e.exit_class(),
            Self::Infisical(e) => e.exit_class(),
            Self::UnexpectedNotModified => ExitClass::Unavailable,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Svid(e) => e.hint(),
            Self::Infisical(e) => e.hint(),
            Self::UnexpectedNotModified => None,
        }
    }
}

/// The last JWT-SVID the session fetched (for a login, whether or not the
/// login then succeeded): who the Workload API says this workload is, and
/// when it said so. The token itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSvid {
    /// Its `sub` when that is a SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// Who logs in, and how.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Login method.
    pub method: AuthMethod,
    /// Machine identity id.
    pub identity_id: String,
    /// Sub-organization to log in to.
    pub organization_slug: Option<String>,
}

/// A logged-in (or not yet) machine identity.
#[derive(Debug)]
pub struct Session {
    client: Arc<Client>,
    svid: Arc<SvidSource>,
    options: SessionOptions,
    token: Option<AccessToken>,
    last_svid: Option<IssuedSvid>,
    /// Tokens logins replaced that are not revoked yet (one, or none). A
    /// token leaves only once its revoke has answered, so a revoke abandoned
    /// half-way (the supervisor abandons the request in flight at shutdown)
    /// is made again by [`Session::revoke`].
    replaced: Vec<AccessToken>,
}

impl Session {
    /// A session; nothing happens until [`Session::login`] or a call that needs a token.
    pub fn new(client: Arc<Client>, svid: Arc<SvidSource>, options: SessionOptions) -> Self {
        Self {
            client,
            svid,
            options,
            token: None,
            last_svid: None,
            replaced: Vec::new(),
        }
    }

    /// The last JWT-SVID fetched for a login, even when the login failed
    /// (the fallback's proof that the agent still vouches for the workload).
    pub fn last_svid(&self) -> Option<&IssuedSvid> {
        self.last_svid.as_ref()
    }

    /// The current token, if logged in.
    pub fn token(&self) -> Option<&AccessToken> {
        self.token.as_ref()
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The next refresh, if logged in.
    pub fn plan(&self) -> Option<Plan> {
        self.token.as_ref().map(|t| plan(&TokenTimes::from(t)))
    }

    /// Logs in with a JWT fetched now (waiting for the agent until `deadline`).
    /// The JWT is dropped as soon as the login returns. The token this login
    /// replaces, if any, is revoked (a token the server refused is dropped
    /// before, not revoked): a login does not end the previous token, which
    /// would otherwise live out its TTL unused. Retries of a failing
    /// server stop before the JWT expires (a retry with an expired JWT would look
    /// like a refusal); a fresh JWT is then fetched while the deadline allows.
    pub async fn login(&mut self, deadline: Instant) -> Result<&AccessToken, SessionError> {
        loop {
            let jwt = self.svid.fetch(deadline).await?;
            self.last_svid = Some(IssuedSvid {
                spiffe_id: jwt
                    .claims()
                    .sub
                    .clone()
                    .filter(|sub| sub.starts_with("spiffe://")),
                at: Instant::now(),
            });
            let jwt_deadline = jwt
                .claims()
                .remaining(SystemTime::now())
                // A JWT already (nearly) expired is sent as is: the server's refusal says why.
                .filter(|left| *left > JWT_EXPIRY_MARGIN * 2)
                .map(|left| Instant::now() + left.saturating_sub(JWT_EXPIRY_MARGIN));
            let login_deadline = jwt_deadline.map_or(deadline, |d| d.min(deadline));
            let result = self
                .client
                .login(
                    self.options.method,
                    &self.options.identity_id,
                    self.options.organization_slug.as_deref(),
                    &jwt,
                    login_deadline,
                )
                .await;
            drop(jwt);
            match result {
                Ok(token) => {
                    if let Some(replaced) = self.token.replace(token) {
                        self.revoke_replaced(replaced, deadline).await;
                    }
                    return Ok(self.token.as_ref().expect("UNWRAP: just set"));
                }
                Err(InfisicalError::GaveUp { .. })
                    if login_deadline < deadline
                        && Instant::now() + JWT_EXPIRY_MARGIN < deadline =>
                {
                    tracing::info!("the JWT-SVID is about to expire while Infisical is unavailable; fetching a fresh one");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes the planned step now: renews, or logs in again when renewal is not
    /// advisable or is refused. A transient failure keeps the current token
    /// (still valid until its expiry) and is returned for the caller to retry later.
    pub async fn refresh(&mut self, deadline: Instant) -> Result<Refresh, SessionError> {
        let Some(current) = &self.token else {
            self.login(deadline).await?;
            return Ok(Refresh::Relogin);
        };
        let planned = plan(&TokenTimes::from(current));
        if planned.action == Refresh::Relogin {
            tracing::info!(
                "the access token's max TTL is near; logging in again with a fresh JWT-SVID"
            );
            self.login(deadline).await?;
            return Ok(Refresh::Relogin);
        }
        match self.client.renew(current, deadline).await {
            Ok(renewed) => {
                self.token = Some(renewed);
                Ok(Refresh::Renew)
            }
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => {
                tracing::warn!("{e}; logging in again with a fresh JWT-SVID");
                self.login(deadline).await?;
                Ok(Refresh::Relogin)
            }
        }
    }

    /// Makes sure there is a token a call can use. Planned renewals are the
    /// supervisor's ([`Session::refresh`] at [`Session::plan`]); a call refreshes
    /// only a token that has expired or is within [`CALL_EXPIRY_MARGIN`] of it, and
    /// if that refresh fails transiently while the token still works, uses it.
    async fn ensure_token(&mut self, deadline: Instant) -> Result<(), SessionError> {
        let Some(token) = &self.token else {
            self.login(deadline).await?;
            return Ok(());
        };
        let Some(expiry) = expires_at(&TokenTimes::from(token)) else {
            // Unknown lifetime: use it; a token error on the call logs in again.
            return Ok(());
        };
        if !needs_refresh_for_call(expiry, Instant::now()) {
            return Ok(());
        }
        match self.refresh(deadline.min(expiry.max(Instant::now()))).await {
            Ok(_) => Ok(()),
            Err(e) if Instant::now() < expiry && e.is_transient() => {
                tracing::warn!(
                    "renewing the access token failed ({e}); it is still valid, so it is used"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches secrets with the session's token; when the server says the token is
    /// no good (401, 403 `TokenError`), logs in again once and retries.
    pub async fn fetch(
        &mut self,
        spec: &FetchSpec,
        previous: Option<&Etags>,
        deadline: Instant,
    ) -> Result<FetchOutcome, SessionError> {
        self.ensure_token(deadline).await?;
        let token = self.token.as_ref().expect("ensured above");
        match self.client.fetch(token, spec, previous, deadline).await {
            Err(e) if e.needs_login() => {
                tracing::warn!("{e}; logging in again with a fresh JWT-SVID");
                // Refused: nothing left to revoke.
                self.token = None;
                self.login(deadline).await?;
                let token = self.token.as_ref().expect("just logged in");
                Ok(self.client.fetch(token, spec, previous, deadline).await?)
            }
            other => Ok(other?),
        }
    }

    /// Resolves a project slug with the session's token (re-login once on a token error).
    pub async fn resolve_project_slug(
        &mut self,
        slug: &str,
        deadline: Instant,
    ) -> Result<String, SessionError> {
        self.ensure_token(deadline).await?;
        let token = self.token.as_ref().expect("ensured above");
        match self
            .client
            .resolve_project_slug(token, slug, deadline)
            .await
        {
            Err(e) if e.needs_login() => {
                tracing::warn!("{e}; logging in again with a fresh JWT-SVID");
                self.token = None;
                self.login(deadline).await?;
                let token = self.token.as_ref().expect("just logged in");
                Ok(self
                    .client
                    .resolve_project_slug(token, slug, deadline)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// The template's request with its project as an ID: given, or its slug
    /// resolved (with the session's token; the client logs the resolution).
    pub async fn resolve(
        &mut self,
        template: &FetchSpec<ProjectRef>,
        deadline: Instant,
    ) -> Result<FetchSpec, SessionError> {
        let project_id = match &template.project_id {
            ProjectRef::Id(id) => id.clone(),
            ProjectRef::Slug(slug) => self.resolve_project_slug(slug, deadline).await?,
        };
        Ok(template.for_project(project_id))
    }

    /// Fetches every path of `spec` without `ETag`s: the whole set.
    pub async fn fetch_all(
        &mut self,
        spec: &FetchSpec,
        deadline: Instant,
    ) -> Result<Fetched, SessionError> {
        match self.fetch(spec, None, deadline).await? {
            // `Client::fetch` has already warned about hidden values.
            FetchOutcome::Fetched(fetched) => Ok(fetched),
            FetchOutcome::NotModified => Err(SessionError::UnexpectedNotModified),
        }
    }

    /// How `run`, `write` and `--watch` start: log in with a fresh JWT-SVID,
    /// resolve the project, fetch every path once, all before `deadline`. The
    /// token stays in the session: a supervisor keeps it (and revokes it even
    /// when the start is abandoned half-way), a one-shot command drops it.
    pub async fn start(
        &mut self,
        template: &FetchSpec<ProjectRef>,
        deadline: Instant,
    ) -> Result<(SecretSet, FetchSpec), SessionError> {
        self.login(deadline).await?;
        let spec = self.resolve(template, deadline).await?;
        let fetched = self.fetch_all(&spec, deadline).await?;
        Ok((fetched.secrets, spec))
    }

    /// Revokes a token a login just replaced (and any left from an earlier
    /// login whose revoke was abandoned), within [`REPLACED_REVOKE_TIMEOUT`]
    /// (and `deadline`); a failure is a warning: that token expires on its own.
    async fn revoke_replaced(&mut self, replaced: AccessToken, deadline: Instant) {
        let deadline = deadline.min(Instant::now() + REPLACED_REVOKE_TIMEOUT);
        self.replaced.push(replaced);
        while let Some(token) = self.replaced.first() {
            let result = self.client.revoke(token, deadline).await;
            self.replaced.remove(0);
            match result {
                Ok(()) => tracing::info!("revoked the access token the new login replaced"),
                Err(err) => tracing::warn!(
                    reason = %crate::error::chain(&err),
                    "could not revoke the access token the new login replaced; it expires on its own"
                ),
            }
        }
    }

    /// Revokes the token (on shutdown), and any a login replaced whose revoke
    /// was abandoned. Nothing to do when not logged in.
    pub async fn revoke(&mut self, deadline: Instant) -> Result<(), SessionError> {
        while let Some(replaced) = self.replaced.pop() {
            if let Err(err) = self.client.revoke(&replaced, deadline).await {
                tracing::warn!(
                    reason = %crate::error::chain(&err),
                    "could not revoke a replaced access token; it expires on its own"
                );
            }
        }
        if let Some(token) = self.token.take() {
            self.client.revoke(&token, deadline).await?;
            tracing::info!("revoked the access token");
        }
        Ok(())
    }

    /// Whether there is a token to revoke.
    pub fn holds_tokens(&self) -> bool {
        self.token.is_some() || !self.replaced.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn times(
        expires_in: u64,
        max_ttl: u64,
        exp_left: Option<u64>,
        since_login: u64,
    ) -> (Instant, TokenTimes) {
        let login_at = Instant::now();
        let obtained_at = login_at + S(since_login);
        (
            login_at,
            TokenTimes {
                obtained_at,
                login_at,
                expires_in: S(expires_in),
                max_ttl: S(max_ttl),
                exp_left: exp_left.map(S),
            },
        )
    }

    #[test]
    #[allow(clippy::type_complexity, reason = "a table reads best inline")]
    fn renewal_planning_table() {
        // (expiresIn, maxTTL, exp left, obtained s after login) -> (action, at s after login)
        let table: &[(u64, u64, Option<u64>, u64, Refresh, Duration)] = &[
            // plain: TTL 1 h, max 24 h, exp = TTL → renew at 40 min
            (3600, 86400, Some(3600), 0, Refresh::Renew, S(2400)),
            // exp shorter than expiresIn (current servers near the budget end) → 2/3 of exp
            (3600, 86400, Some(600), 0, Refresh::Renew, S(400)),
            // expiresIn 0 = unknown → from exp
            (0, 0, Some(900), 0, Refresh::Renew, S(600)),
            // nothing known → renew on the fallback interval
            (0, 0, None, 0, Refresh::Renew, UNKNOWN_LIFETIME_RENEW_EVERY),
            // TTL = max TTL (the 30-day default): renewing is pointless → re-login at 2/3
            (
                2_592_000,
                2_592_000,
                Some(2_592_000),
                0,
                Refresh::Relogin,
                S(1_728_000),
            ),
            // legacy server, TTL 5 s, max 15 s, exp = login + 15 s
            (
                5,
                15,
                Some(15),
                0,
                Refresh::Renew,
                Duration::from_millis(3333),
            ),
            // legacy, after renewals: obtained at 6 s, exp 9 s away; renewing at ~9.3 s
            // would end at 14.3 s + margin > 15 s → re-login instead
            (
                5,
                15,
                Some(9),
                6,
                Refresh::Relogin,
                Duration::from_millis(9333),
            ),
            // the budget, not the TTL, bounds the life: obtained at 80 of 90 s
            (
                60,
                90,
                None,
                80,
                Refresh::Relogin,
                Duration::from_millis(86_666),
            ),
            // already expired → re-login now
            (60, 0, Some(0), 0, Refresh::Relogin, S(0)),
            // no max TTL (periodic tokens) → always renew
            (60, 0, Some(60), 500, Refresh::Renew, S(540)),
        ];
        for &(expires_in, max_ttl, exp_left, since, action, at) in table {
            let (login_at, t) = times(expires_in, max_ttl, exp_left, since);
            let p = plan(&t);
            let got_at = p.at - login_at;
            assert_eq!(
                p.action, action,
                "{expires_in}/{max_ttl}/{exp_left:?}/{since}"
            );
            let diff = got_at.abs_diff(at);
            assert!(
                diff < Duration::from_millis(2),
                "{expires_in}/{max_ttl}/{exp_left:?}/{since}: at {got_at:?}, want {at:?}"
            );
        }
    }

    #[test]
    fn a_legacy_token_is_never_renewed_inside_its_last_ttl_window() {
        // Simulate the legacy server (TTL 5 s, max 15 s, exp = login + 15 s) over
        // repeated renewals: every planned renewal must end before the budget.
        let (login_at, mut t) = times(5, 15, Some(15), 0);
        let end = login_at + S(15);
        for _ in 0..10 {
            let p = plan(&t);
            assert!(p.at < end);
            if p.action == Refresh::Relogin {
                return;
            }
            assert!(
                p.at + S(5) < end,
                "a renewal at {:?} would be deleted",
                p.at - login_at
            );
            t.obtained_at = p.at;
            t.exp_left = Some(end - p.at);
        }
        panic!("never planned a re-login before the max TTL");
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn session_futures_can_be_spawned() {
        // The supervisor drives the session from spawned tasks: its futures must be Send.
        let client = Arc::new(Client::new(&crate::infisical::ClientOptions::default()).unwrap());
        let svid = Arc::new(
            SvidSource::new(crate::svid::SvidSourceOptions::File("/nonexistent".into())).unwrap(),
        );
        let mut session = Session::new(
            client,
            svid,
            SessionOptions {
                method: AuthMethod::Oidc,
                identity_id: "id".into(),
                organization_slug: None,
            },
        );
        let spec = FetchSpec {
            project_id: "p".into(),
            environment: "e".into(),
            paths: vec![],
            recursive: false,
            include_imports: true,
            expand: true,
            tags: vec![],
        };
        let deadline = Instant::now();
        assert_send(&session.fetch(&spec, None, deadline));
        assert_send(&session.refresh(deadline));
        assert_send(&session.resolve_project_slug("s", deadline));
        assert_send(&session.revoke(deadline));
    }

    #[test]
    fn a_call_refreshes_only_a_token_at_or_near_its_expiry() {
        let now = Instant::now();
        let expiry = now + Duration::from_secs(600);
        assert!(!needs_refresh_for_call(expiry, now));
        assert!(!needs_refresh_for_call(
            expiry,
            expiry - CALL_EXPIRY_MARGIN - Duration::from_millis(1)
        ));
        assert!(needs_refresh_for_call(expiry, expiry - CALL_EXPIRY_MARGIN));
        assert!(needs_refresh_for_call(
            expiry,
            expiry + Duration::from_secs(1)
        ));
    }

    #[test]
    fn expiry_is_the_shortest_known_life() {
        let (login_at, t) = times(60, 90, Some(600), 80);
        assert_eq!(expires_at(&t), Some(login_at + S(90)));
        let (login_at, t) = times(60, 0, Some(30), 0);
        assert_eq!(expires_at(&t), Some(login_at + S(30)));
        let (_, t) = times(0, 0, None, 0);
        assert_eq!(expires_at(&t), None);
    }

    #[test]
    fn refresh_always_happens_before_expiry() {
        for ttl in [1u64, 2, 5, 60, 3600] {
            for max in [0u64, ttl, ttl * 3, ttl * 100] {
                let (_, t) = times(ttl, max, Some(ttl), 0);
                let p = plan(&t);
                assert!(p.at < t.obtained_at + S(ttl), "ttl {ttl} max {max}");
                assert!(p.at > t.obtained_at, "ttl {ttl} max {max}");
            }
        }
    }
}
