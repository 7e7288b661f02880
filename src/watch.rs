//! `run --watch` and `write --watch`: the wiring between the configuration, the
//! session (token lifecycle) and the supervisor. [`WatchNetwork`] answers the
//! supervisor's requests (poll, renew, re-login, revoke) over a [`Session`], the
//! resolved [`FetchSpec`] and the last `ETag`s; [`WatchDelivery`] writes the files
//! and builds the child's environment with the same plan as exec mode.
//!
//! Order matters: [`supervise::prepare`] blocks signals before the async runtime
//! (and with it any thread) exists; then the first login and fetch run on that
//! runtime, failing with the same exit codes as without `--watch` before anything
//! is started; then the supervisor takes over on the same runtime (an HTTP
//! connection pool must not outlive the runtime it was made on).

use crate::error::chain;
use crate::retry::Transient;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

use tokio::time::Instant;

use crate::app::{self, AppError};
use crate::config::Config;
use crate::deliver::env::ExecLimits;
use crate::deliver::files::{self, FilesOptions};
use crate::infisical::{Etags, FetchOutcome, FetchSpec};
use crate::launch::reaper::ChildEnd;
use crate::launch::signals::Signal;
use crate::launch::supervise::{
    self, ChildCommand, Delivery, DeliveryError, Network, Reply, Request, Settings,
};
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
pub fn run(
    config: &Config,
    command: Option<(&OsString, &[OsString])>,
) -> Result<ExitCode, AppError> {
    // Before any thread: block signals, start the signal thread, harden, subreaper.
    let mut signals = supervise::prepare(config.watch.mlock)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    let argv: Option<Vec<OsString>> = command.map(|(program, args)| {
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(program.clone());
        argv.extend_from_slice(args);
        argv
    });
    runtime.block_on(async {
        app::preflight_files(config)?;
        // The session lives out here, so a token obtained before an interruption
        // or a failed check is still ours to revoke.
        let mut session = crate::flow::session(config)?;
        let outcome = tokio::select! {
            started = start(config, argv.as_deref(), &mut session) => Ok(started),
            signal = signals.until_terminated() => Err(signal),
        };
        let (secrets, spec) = match outcome {
            Ok(Ok(started)) => started,
            Ok(Err(err)) => {
                revoke(&mut session).await;
                return Err(err);
            }
            Err(signal) => {
                let code = interrupted_exit_code(signal, argv.is_none());
                tracing::info!(%signal, code, "interrupted during start-up; nothing was started");
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
                secrets = secrets.len(),
                program = %child.program.to_string_lossy(),
                poll_interval = ?config.watch.poll_interval,
                "supervising the program"
            );
        } else {
            tracing::info!(
                secrets = secrets.len(),
                poll_interval = ?config.watch.poll_interval,
                "keeping the files fresh"
            );
        }
        let network = WatchNetwork {
            session,
            spec,
            etags: None,
            config: config.clone(),
            argv: argv.clone(),
        };
        let delivery = WatchDelivery {
            files: app::files_options(config),
            config: config.clone(),
        };
        let code = supervise::supervise(
            signals,
            child.as_ref(),
            settings(config),
            secrets,
            renew_in,
            network,
            delivery,
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
    if session.token().is_none() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    if let Err(err) = session.revoke(deadline).await {
        tracing::warn!(reason = %chain(&err), "could not revoke the access token; it expires on its own");
    }
}

/// Log in, fetch once and check the result, all before anything is started
/// (after [`app::preflight_files`]).
async fn start(
    config: &Config,
    argv: Option<&[OsString]>,
    session: &mut Session,
) -> Result<(SecretSet, FetchSpec), AppError> {
    let (secrets, spec) = crate::flow::login_and_fetch(session, config).await?;
    check_deliverable(config, argv, &secrets)?;
    Ok((secrets, spec))
}

/// Everything exec mode refuses before starting the program, applied to every
/// fetched set: empty (unless allowed) or missing `--require`d keys, names that
/// cannot be files, an environment the kernel would refuse. A set that fails is
/// never delivered: the child keeps the last good one.
fn check_deliverable(
    config: &Config,
    argv: Option<&[OsString]>,
    secrets: &SecretSet,
) -> Result<(), AppError> {
    app::check_fetched(&config.fetch, secrets)?;
    if app::files_options(config).is_some_and(|o| o.dir.is_some()) {
        files::validate_names(secrets)?;
    }
    if let Some(argv) = argv {
        let paths = app::per_key_paths(config, secrets);
        let plan = app::env_plan(config, secrets, &paths)?;
        plan.check_size(argv, ExecLimits::current())?;
    }
    Ok(())
}

/// The supervisor's settings from `--poll-interval`, `--on-change`,
/// `--stop-signal`, `--stop-timeout`, `--forward-to` (`--allow-empty` is
/// applied by [`check_deliverable`] before a set reaches the supervisor).
fn settings(config: &Config) -> Settings {
    let watch = &config.watch;
    let mut settings = Settings::new(watch.poll_interval);
    settings.on_change = watch.on_change;
    settings.stop_signal = watch.stop_signal;
    settings.stop_timeout = watch.stop_timeout;
    settings.forward_to = watch.forward_to;
    settings
}

/// The supervisor's network side: one session (token), one fetch request, the
/// `ETag`s of the last delivered-or-pending fetch.
pub struct WatchNetwork {
    session: Session,
    spec: FetchSpec,
    etags: Option<Etags>,
    config: Config,
    argv: Option<Vec<OsString>>,
}

impl std::fmt::Debug for WatchNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchNetwork")
            .field("session", &self.session)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl WatchNetwork {
    /// Time until the session's next planned refresh.
    fn renew_in(&self) -> Duration {
        self.session
            .plan()
            .map_or(UNKNOWN_LIFETIME_RENEW_EVERY, |p| {
                p.at.saturating_duration_since(Instant::now())
            })
    }

    async fn poll(&mut self) -> Reply {
        // Retrying one poll for longer than the interval is pointless (the next
        // poll comes anyway), but give a short interval a few tries.
        let bound = self
            .config
            .watch
            .poll_interval
            .clamp(Duration::from_secs(5), CALL_TIMEOUT);
        let deadline = Instant::now() + bound;
        match self
            .session
            .fetch(&self.spec, self.etags.as_ref(), deadline)
            .await
        {
            Ok(FetchOutcome::NotModified) => Reply::NotModified,
            Ok(FetchOutcome::Fetched(fetched)) => {
                if let Err(err) =
                    check_deliverable(&self.config, self.argv.as_deref(), &fetched.secrets)
                {
                    // The ETags stay those of the last good set, so the next poll
                    // fetches (and refuses) this content again rather than "304".
                    return Reply::PollFailed {
                        reason: format!("the new secrets cannot be delivered: {}", chain(&err)),
                        auth: false,
                    };
                }
                self.etags = Some(fetched.etags);
                Reply::Fetched(fetched.secrets)
            }
            Err(err) => Reply::PollFailed {
                auth: matches!(&err, SessionError::Infisical(e) if e.needs_login()),
                reason: chain(&err),
            },
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
                let reason = chain(&err);
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
                reason: chain(&err),
            },
        }
    }

    async fn revoke(&mut self) -> Reply {
        revoke(&mut self.session).await;
        Reply::Revoked
    }
}

impl Network for WatchNetwork {
    async fn call(&mut self, request: Request) -> Reply {
        match request {
            Request::Poll => self.poll().await,
            Request::Renew => self.renew().await,
            Request::Relogin => self.relogin().await,
            Request::Revoke => self.revoke().await,
        }
    }
}

/// The supervisor's delivery side: the configured files, and the child's
/// environment planned as in exec mode (bootstrap variables removed).
pub struct WatchDelivery {
    files: Option<FilesOptions>,
    config: Config,
}

impl std::fmt::Debug for WatchDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchDelivery")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Delivery for WatchDelivery {
    fn write_files(&mut self, secrets: &SecretSet) -> Result<(), DeliveryError> {
        if let Some(options) = &self.files {
            app::write_and_log(secrets, options)?;
        }
        Ok(())
    }

    fn child_env(&self, secrets: &SecretSet, command: &mut Command) {
        let paths = app::per_key_paths(&self.config, secrets);
        match app::build_env_plan(&self.config, secrets, &paths) {
            Ok(plan) => {
                let envp = plan.to_envp();
                for var in envp.as_cstrs() {
                    let bytes = var.to_bytes();
                    if let Some(eq) = bytes.iter().position(|b| *b == b'=') {
                        command.env(
                            OsStr::from_bytes(&bytes[..eq]),
                            OsStr::from_bytes(&bytes[eq + 1..]),
                        );
                    }
                }
            }
            // Every set is checked with the same plan before it is accepted
            // (`check_deliverable`), so this is a bug; the child then gets an
            // empty environment rather than a partial one.
            Err(err) => {
                tracing::error!(%err, "internal error: could not plan the child's environment");
            }
        }
    }

    fn remove_files(&mut self) {
        if let Some(options) = &self.files {
            match files::remove(options) {
                Ok(()) => tracing::info!("removed the secret files"),
                Err(err) => tracing::warn!(%err, "could not remove the secret files"),
            }
        }
    }
}
