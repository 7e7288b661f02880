//! `run --watch` and `write --watch`: the wiring between the configuration, the
//! session (token lifecycle) and the supervisor. [`SessionNetwork`] answers the
//! supervisor's requests (poll, renew, re-login, revoke) over a [`Session`], the
//! resolved [`FetchSpec`] and the last `ETag`s, accepting each fetched set with
//! the one [`Delivery`], which also writes the files, plans the child's
//! environment and makes its memfds for the supervisor, as in exec mode, and
//! keeps every fetched set for the fallback. A start from the fallback's
//! cached set (Infisical unavailable) is supervised the same way: the first
//! poll that reaches the server switches to fresh secrets.
//!
//! Order matters: [`supervise::prepare`] blocks signals before the async runtime
//! (and with it any thread) exists; then the first login and fetch run on that
//! runtime, failing with the same exit codes as without `--watch` before anything
//! is started; then the supervisor takes over on the same runtime (an HTTP
//! connection pool must not outlive the runtime it was made on).

use std::cell::Cell;
use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::start::{self, Started};
use super::{runtime, CmdError};
use crate::config::Config;
use crate::deliver::env::Envp;
use crate::deliver::Delivery;
use crate::error::{chain, chain_and_hint};
use crate::infisical::{Etags, FetchOutcome, FetchSpec, ProjectRef};
use crate::launch::readiness::{Readiness, ReadyFile};
use crate::launch::reaper::ChildEnd;
use crate::launch::signals::Signal;
use crate::launch::supervise::{
    self, ChildCommand, Content, DeliveryError, Network, Reply, Request, Settings,
};
use crate::retry::Transient;
use crate::secrets::SecretSet;
use crate::session::{self, Session, SessionError, TokenTimes, UNKNOWN_LIFETIME_RENEW_EVERY};

/// Bound on one poll, renewal or login, retries included: long enough to ride
/// out a short server outage, short enough that shutdown (which waits for the
/// request in flight) is not held for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A renewal that failed for a transient reason is retried this soon at the
/// latest (sooner when the token has less life left).
const RENEW_RETRY_MAX: Duration = Duration::from_secs(30);

/// `run --watch` (`command` is the program and its arguments) or `write --watch`
/// (`None`). Returns the supervisor's exit code: the child's own (128+N when it
/// was killed by signal N), or 0 for `write --watch` ended by SIGTERM/SIGINT.
pub(super) fn supervise(
    config: &Config,
    settings: &Settings,
    command: Option<(&OsString, &[OsString])>,
) -> Result<ExitCode, CmdError> {
    // Before any thread: block signals, start the signal thread, harden, subreaper.
    let mut signals = supervise::prepare(settings.mlock)?;
    let runtime = runtime()?;
    let delivery = Shared {
        delivery: Rc::new(config.delivery()),
        written: Rc::new(Cell::new(None)),
    };
    // The supervisor is the service systemd watches: from here on it notifies
    // (the waits of the start-up say what they wait for in STATUS=).
    if crate::notify::enable() {
        crate::notify::status("starting: getting a JWT-SVID, logging in to Infisical");
    }
    let ready_file = config
        .ready_file
        .as_deref()
        .map(ReadyFile::prepare)
        .transpose()?;
    let mut readiness = Readiness::new(ready_file);
    runtime.block_on(async {
        delivery.delivery.preflight()?;
        // The session lives out here, so a token obtained before an interruption
        // or a failed check is still ours to revoke.
        let mut session = config.session()?;
        let outcome = tokio::select! {
            started = start::start(config, &delivery.delivery, &mut session, start::Token::Keep) => Ok(started),
            signal = signals.until_terminated() => Err(signal),
        };
        // Without `spec` (a start from the cached set) the project may not be
        // resolved yet: the first poll does it.
        let (content, spec) = match outcome {
            Ok(Ok(Started {
                secrets,
                fingerprint,
                spec,
            })) => (
                Content::new(
                    secrets,
                    fingerprint.expect("UNWRAP: Token::Keep asks for the fingerprint"),
                ),
                spec,
            ),
            Ok(Err(err)) => {
                revoke(&mut session).await;
                return Err(err);
            }
            Err(signal) => {
                let code = interrupted_exit_code(signal, command.is_none());
                tracing::info!(%signal, code, "interrupted during start-up; nothing was started");
                readiness.stopping();
                revoke(&mut session).await;
                return Ok(ExitCode::from(code));
            }
        };
        let renew_in = session
            .plan()
            .map(|p| p.at.saturating_duration_since(Instant::now()));
        let child = command.map(|(program, args)| ChildCommand {
            program: program.clone(),
            args: args.to_vec(),
            cwd: None,
        });
        if let Some(child) = &child {
            tracing::info!(
                secrets = content.secrets().len(),
                program = %child.program.to_string_lossy(),
                poll_interval = ?settings.poll_interval,
                "supervising the program"
            );
        } else {
            tracing::info!(
                secrets = content.secrets().len(),
                poll_interval = ?settings.poll_interval,
                "keeping the files fresh"
            );
        }
        let on_cache = spec.is_none();
        let network = SessionNetwork {
            session,
            on_cache,
            template: config.fetch.clone(),
            spec,
            etags: None,
            poll_bound: settings
                .poll_interval
                .clamp(Duration::from_secs(5), CALL_TIMEOUT),
            last_fetched: Some(content.secrets().fingerprint()),
            delivery: delivery.clone(),
        };
        let settings = Settings {
            started_on_cache: on_cache,
            ..settings.clone()
        };
        let code = supervise::supervise(
            signals,
            child.as_ref(),
            settings,
            content,
            renew_in,
            network,
            delivery,
            readiness,
        )
        .await;
        Ok(ExitCode::from(code))
    })
}

/// The exit code for a start-up ended by `signal`: `write --watch` (the
/// sidecar) exits 0 on SIGTERM/SIGINT as it does once running (stopping is its
/// normal end); otherwise 128+N, as if the signal had not been blocked.
fn interrupted_exit_code(signal: Signal, sidecar: bool) -> u8 {
    if sidecar && (signal == Signal::TERM || signal == Signal::INT) {
        0
    } else {
        ChildEnd::Signaled(signal).exit_code()
    }
}

/// Revokes the session's token, if it has one, within a short bound (shutdown,
/// or a start-up that did not lead to supervision); a failure is only logged.
async fn revoke(session: &mut Session) {
    if !session.holds_tokens() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    if let Err(err) = session.revoke(deadline).await {
        tracing::warn!(reason = %chain(&err), "could not revoke the access token; it expires on its own");
    }
}

/// The supervisor's network side: one session (token), one fetch request, the
/// `ETag`s of the last delivered-or-pending fetch, and the delivery that
/// accepts (or refuses) each fetched set before the supervisor sees it.
pub struct SessionNetwork {
    session: Session,
    /// What to fetch, as configured (its project resolved into `spec`).
    template: FetchSpec<ProjectRef>,
    /// What to fetch, its project resolved; `None` until the first fetch
    /// after a start from the cached set.
    spec: Option<FetchSpec>,
    /// Still on the cached set: no fetch has succeeded yet.
    on_cache: bool,
    etags: Option<Etags>,
    /// Retrying one poll for longer than the interval is pointless (the next
    /// poll comes anyway), but a short interval gets a few tries.
    poll_bound: Duration,
    /// The fingerprint of the last fetched content (what a 304 repeats), the
    /// selected set: what the fallback directory holds too.
    last_fetched: Option<[u8; 32]>,
    delivery: Shared,
}

impl std::fmt::Debug for SessionNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionNetwork")
            .field("session", &self.session)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl SessionNetwork {
    /// Time until the session's next planned refresh.
    fn renew_in(&self) -> Duration {
        self.session
            .plan()
            .map_or(UNKNOWN_LIFETIME_RENEW_EVERY, |p| {
                p.at.saturating_duration_since(Instant::now())
            })
    }

    /// A failed call's reason: after a refusal, the identity's cached sets go first.
    fn failed(&self, err: &SessionError) -> String {
        start::forget_if_refused(&self.delivery.delivery, err);
        chain_and_hint(err)
    }

    /// A failed poll's reply (`auth`: the token was refused, log in again).
    fn poll_failed(&self, err: &SessionError) -> Reply {
        Reply::PollFailed {
            auth: matches!(err, SessionError::Infisical(e) if e.needs_login()),
            reason: self.failed(err),
        }
    }

    async fn poll(&mut self) -> Reply {
        let deadline = Instant::now() + self.poll_bound;
        if self.spec.is_none() {
            match self.session.resolve(&self.template, deadline).await {
                Ok(spec) => self.spec = Some(spec),
                Err(err) => return self.poll_failed(&err),
            }
        }
        let spec = self.spec.as_ref().expect("UNWRAP: resolved above");
        match self
            .session
            .fetch(spec, self.etags.as_ref(), deadline)
            .await
        {
            Ok(FetchOutcome::NotModified) => {
                if let Some(fingerprint) = self.last_fetched {
                    start::reconfirm(&self.delivery.delivery, &self.session, fingerprint);
                }
                self.confirm_if_delivered(self.last_fetched);
                Reply::NotModified
            }
            Ok(FetchOutcome::Fetched(fetched)) => {
                match self.delivery.delivery.accept(fetched.secrets, true) {
                    Ok((secrets, fingerprint)) => {
                        let fingerprint = fingerprint.expect("UNWRAP: asked for above");
                        self.etags = Some(fetched.etags);
                        // The selected set, as written: what `written` records.
                        self.last_fetched = Some(secrets.fingerprint());
                        self.confirm_if_delivered(self.last_fetched);
                        start::remember(&self.delivery.delivery, &self.session, &secrets);
                        if std::mem::take(&mut self.on_cache) {
                            tracing::info!(
                                "Infisical answers again; fresh secrets replace the cached ones"
                            );
                        }
                        Reply::Fetched(Content::new(secrets, fingerprint))
                    }
                    // The ETags stay those of the last good set, so the next poll
                    // fetches (and refuses) this content again rather than "304".
                    Err(err) => Reply::PollFailed {
                        reason: format!(
                            "the new secrets cannot be delivered: {}",
                            chain_and_hint(&err)
                        ),
                        auth: false,
                    },
                }
            }
            Err(err) => self.poll_failed(&err),
        }
    }

    /// A poll answered with the content that is delivered: record in DIR's
    /// state file that it is still current (`svid-exec ready --max-age`).
    fn confirm_if_delivered(&self, content: Option<[u8; 32]>) {
        if content.is_some() && content == self.delivery.written.get() {
            if let Err(err) = self.delivery.delivery.confirm() {
                tracing::warn!(error = %chain(&err), "could not record the poll in the files directory");
            }
        }
    }

    async fn renew(&mut self) -> Reply {
        let deadline = Instant::now() + CALL_TIMEOUT;
        match self.session.refresh(deadline).await {
            Ok(done) => {
                tracing::debug!(?done, "access token refreshed");
                Reply::TokenReady {
                    renew_in: self.renew_in(),
                }
            }
            Err(err) => {
                let reason = self.failed(&err);
                // A transient failure with a token that still has life left: keep
                // it and try again before it ends. Anything else: a fresh login.
                let transient = err.is_transient();
                let left = self
                    .session
                    .token()
                    .and_then(|t| session::expires_at(&TokenTimes::from(t)))
                    .map(|end| end.saturating_duration_since(Instant::now()));
                match left {
                    Some(left) if transient && left > Duration::from_secs(2) => {
                        let retry = (left / 3).clamp(Duration::from_secs(1), RENEW_RETRY_MAX);
                        tracing::warn!(%reason, retry_in = ?retry, "token renewal failed; keeping the current token");
                        Reply::TokenReady { renew_in: retry }
                    }
                    _ => Reply::LoginFailed { reason },
                }
            }
        }
    }

    async fn relogin(&mut self) -> Reply {
        let deadline = Instant::now() + CALL_TIMEOUT;
        match self.session.login(deadline).await {
            Ok(_) => Reply::TokenReady {
                renew_in: self.renew_in(),
            },
            Err(err) => Reply::LoginFailed {
                reason: self.failed(&err),
            },
        }
    }

    async fn revoke(&mut self) -> Reply {
        revoke(&mut self.session).await;
        Reply::Revoked
    }
}

impl Network for SessionNetwork {
    async fn call(&mut self, request: Request) -> Reply {
        match request {
            Request::Poll => self.poll().await,
            Request::Renew => self.renew().await,
            Request::Relogin => self.relogin().await,
            Request::Revoke => self.revoke().await,
        }
    }
}

/// The one [`Delivery`], shared by the supervisor's two sides, with the
/// fingerprint of the set last written: the network side confirms in DIR's
/// state file only what the delivery side has written. (The set's own
/// fingerprint, not the delivered one templates narrow: a state file exists
/// only with a per-key directory, which carries the whole set.)
#[derive(Clone)]
pub struct Shared {
    delivery: Rc<Delivery>,
    written: Rc<Cell<Option<[u8; 32]>>>,
}

/// The supervisor's delivery side is the one [`Delivery`]: the same files and
/// the same environment plan as exec mode (bootstrap variables removed).
impl supervise::Deliver for Shared {
    fn write_files(&mut self, secrets: &SecretSet) -> Result<(), DeliveryError> {
        self.delivery.write(secrets)?;
        self.written.set(Some(secrets.fingerprint()));
        Ok(())
    }

    fn child_env(&self, secrets: &SecretSet) -> Envp {
        match self.delivery.env(secrets) {
            Ok(mut plan) => {
                // The supervisor is the process systemd watches, not the
                // program: its notification variables stay ours (unless a
                // secret of that name is delivered).
                plan.withhold(crate::notify::VARIABLES);
                plan.to_envp()
            }
            // Every set is accepted with the same plan before it reaches the
            // supervisor, so this is a bug; the child then gets an empty
            // environment rather than a partial one.
            Err(err) => {
                tracing::error!(%err, "internal error: could not plan the child's environment");
                Envp::default()
            }
        }
    }

    fn child_fds(&self, secrets: &SecretSet) -> Result<Vec<(OwnedFd, RawFd)>, DeliveryError> {
        Ok(self.delivery.memfds(secrets)?)
    }

    fn remove_files(&mut self) {
        if self.delivery.writes_files() {
            match self.delivery.remove() {
                Ok(()) => tracing::info!("removed the secret files"),
                Err(err) => tracing::warn!(%err, "could not remove the secret files"),
            }
        }
    }
}
