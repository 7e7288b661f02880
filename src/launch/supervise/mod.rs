//! Supervise mode (`run --watch`, `write --watch`): the pure state machine that
//! decides what to do with the child, the secrets and the token (`state.rs`,
//! [`State::step`]), the thin async driver that performs its actions
//! (`driver.rs`, [`supervise`]), and the process set-up before any thread
//! exists and the child's spawn (`process.rs`, [`prepare`]). This file holds the
//! settings and the two interfaces the driver plugs into: [`Network`] and [`Deliver`].
//!
//! # Theory of operation
//!
//! `main` hardens the process first, in every mode (no core dumps, not
//! ptrace-able), then calls [`prepare`] before any thread exists: it blocks every
//! signal but the synchronous fault signals (so no thread ever runs a handler),
//! starts the one signal-reading thread, optionally locks memory (`--mlock`) and
//! registers as child subreaper. Later, [`supervise`] starts the child
//! (fork and execve, `sys::spawn`, with an environment the supervisor owns and zeroes)
//! in its own process group and keeps only its pid: one reaper (`waitpid(-1)`, see
//! [`super::reaper`]) owns every exit status.
//!
//! Everything the supervisor decides is in [`State::step`]: `(state, now, event) ->
//! actions`, with time as an input so it is tested without processes or sleeps. The
//! driver turns signals, reaped children, network replies and deadlines into
//! [`Event`]s and performs the [`Action`]s. The network side (polling, renewing,
//! re-login, revoking) plugs in through [`Network`], one request at a time; file and
//! environment delivery through [`Deliver`].
//!
//! Every signal but SIGCHLD is forwarded as it is, TSTP/TTIN/TTOU included (tini);
//! SIGTTIN/SIGTTOU being blocked in the supervisor also lets it write its log from
//! the background once the child owns the terminal. SIGPIPE is never seen: the Rust
//! runtime ignores it in our process (the child gets it back at default). SIGTERM
//! and SIGINT also start the shutdown: forward, wait `--stop-timeout`, SIGKILL the
//! group, remove the files, revoke the token, exit with the child's status. When the
//! child exits on its own the supervisor ends the same way (restarting a crashed
//! program is the platform's job).
//!
//! Signals are forwarded to the child's process group by default (`--forward-to
//! group`): the child is the leader of a group we created, so a shell wrapper
//! (`sh -c 'app'`) or a pre-fork server receives Ctrl-C/TERM the way it would in a
//! terminal, and no grandchild survives a stop. `child` forwards to the pid alone
//! (tini's default) for programs that manage their own workers.

mod driver;
mod process;
mod state;

use std::future::Future;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use super::signals::Signal;
use crate::deliver::env::Envp;
use crate::error::{ExitClass, Failure};
use crate::secrets::SecretSet;

pub use driver::supervise;
pub use process::{prepare, ChildCommand, SignalReader};
pub use state::{Action, Event, State};

// ---------------------------------------------------------------------------
// Settings

/// What to do when the secrets change (`--on-change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Rewrite files, stop the child, start a new one with the new environment.
    Restart,
    /// Rewrite files, then send this signal to the child and keep it.
    Signal(Signal),
    /// Only rewrite files.
    None,
}

/// Where forwarded signals go (`--forward-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardTo {
    /// The child's process group (default; see the module docs).
    Group,
    /// The child's pid only.
    Child,
}

/// The supervisor's tunables. [`Settings::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub on_change: OnChange,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub forward_to: ForwardTo,
    /// Base interval between polls; each is jittered by ±10%.
    pub poll_interval: Duration,
    /// A change is acted on once a confirming poll this long after it sees the same
    /// content (debounce): a burst of edits gives one action.
    pub settle: Duration,
    /// Changes that keep coming are acted on after this long anyway.
    pub max_settle: Duration,
    /// At most this many applied changes (restarts/signals) per `change_window`;
    /// further changes wait for the window, so a flapping secret cannot cause a storm.
    pub max_changes: usize,
    pub change_window: Duration,
    /// How long shutdown waits for the token revocation.
    pub revoke_timeout: Duration,
    /// Seed for poll jitter (fixed in tests).
    pub jitter_seed: u64,
    /// Lock the supervisor's memory so secrets are never swapped (`--mlock`,
    /// applied by [`prepare`]).
    pub mlock: bool,
    /// The secrets the supervisor starts with came from `--fallback-dir`
    /// (Infisical was unavailable): until a poll reaches Infisical, a failed
    /// poll is retried at the poll interval, not backed off, so the program
    /// gets fresh secrets soon after the outage ends. The state clears it at
    /// the first answer.
    pub started_on_cache: bool,
}

impl Settings {
    /// Defaults from the CLI contract, for a given poll interval.
    pub fn new(poll_interval: Duration) -> Self {
        let settle = poll_interval.min(Duration::from_secs(5));
        Self {
            on_change: OnChange::Restart,
            stop_signal: Signal::TERM,
            stop_timeout: Duration::from_secs(10),
            forward_to: ForwardTo::Group,
            poll_interval,
            settle,
            max_settle: settle * 6,
            max_changes: 5,
            change_window: Duration::from_secs(300),
            revoke_timeout: Duration::from_secs(5),
            jitter_seed: fastrand::u64(..),
            mlock: false,
            started_on_cache: false,
        }
    }
}

// ---------------------------------------------------------------------------
// The interface to the network side

/// A request to the network side. The driver sends at most one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Fetch the secrets (with `If-None-Match`).
    Poll,
    /// Renew the access token.
    Renew,
    /// Log in again with a freshly fetched JWT-SVID.
    Relogin,
    /// Revoke the access token (shutdown).
    Revoke,
}

/// A deliverable set and the fingerprint of what delivering it gives the
/// program (the set itself when it all goes to the environment or to files;
/// only the rendered files when templates are all that is delivered). The
/// state machine acts on a change of fingerprint, so a change that delivers
/// nothing new restarts nothing.
pub struct Content {
    secrets: SecretSet,
    fingerprint: [u8; 32],
}

impl Content {
    /// `secrets` with the fingerprint of what delivering it gives.
    pub fn new(secrets: SecretSet, fingerprint: [u8; 32]) -> Self {
        Self {
            secrets,
            fingerprint,
        }
    }

    /// The secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// The fingerprint of what is delivered.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    fn into_parts(self) -> (SecretSet, [u8; 32]) {
        (self.secrets, self.fingerprint)
    }
}

/// Everything in the set is delivered: its own fingerprint.
impl From<SecretSet> for Content {
    fn from(secrets: SecretSet) -> Self {
        let fingerprint = secrets.fingerprint();
        Self::new(secrets, fingerprint)
    }
}

/// The network side's answer to a [`Request`].
pub enum Reply {
    /// A complete, successful fetch of a deliverable set (the network side answers
    /// `PollFailed` for a set that must not be delivered, such as an empty one
    /// without `--allow-empty`); the state machine compares fingerprints.
    Fetched(Content),
    /// 304: the same content as the previous successful fetch.
    NotModified,
    /// The poll failed. `auth` is set when the token was refused (401, or 403
    /// `TokenError`): the state machine logs in again before the next poll.
    PollFailed { reason: String, auth: bool },
    /// Renew or login succeeded; renew again after `renew_in` (the session computes it
    /// from the TTL, the token's `exp` and the max-TTL window).
    TokenReady { renew_in: Duration },
    /// Login failed, or a renewal failed and the token cannot be kept: log in
    /// again with backoff, keep the child. (There is no "renewal refused" reply:
    /// the session answers a refused renewal by logging in itself, so what can
    /// reach the supervisor is that login's failure.)
    LoginFailed { reason: String },
    /// The token is revoked (or revocation was attempted).
    Revoked,
    /// The request was abandoned at shutdown.
    Cancelled,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fetched(content) => write!(f, "Fetched({} secrets)", content.secrets.len()),
            Self::NotModified => f.write_str("NotModified"),
            Self::PollFailed { reason, auth } => write!(f, "PollFailed({reason}, auth={auth})"),
            Self::TokenReady { renew_in } => write!(f, "TokenReady(renew in {renew_in:?})"),
            Self::LoginFailed { reason } => write!(f, "LoginFailed({reason})"),
            Self::Revoked => f.write_str("Revoked"),
            Self::Cancelled => f.write_str("Cancelled"),
        }
    }
}

/// The network side (session + secret fetch), as the supervisor sees it.
///
/// The supervisor schedules renewals from [`Reply::TokenReady`]'s `renew_in`; the
/// session computes it (about 2/3 of the shorter of `expiresIn` and the token's
/// `exp`) and may answer a `Renew` by logging in again itself when the max-TTL
/// window is near. Calls are made one at a time, so the implementation owns its
/// token without locks.
pub trait Network {
    /// Performs `request`. Failures are replies, not errors: the supervisor decides.
    fn call(&mut self, request: Request) -> impl Future<Output = Reply>;
}

/// An error from the delivery side; its text must never contain a secret value.
pub type DeliveryError = Box<dyn std::error::Error + Send + Sync>;

/// File and environment delivery, as the supervisor sees it (`deliver::Delivery`
/// in the program).
pub trait Deliver {
    /// Writes (atomically replaces) the secret files for `secrets`.
    fn write_files(&mut self, secrets: &SecretSet) -> Result<(), DeliveryError>;
    /// The child's whole environment for `secrets`, as zeroizing `NAME=value`
    /// strings (dropped, and zeroed, as soon as the child is started).
    fn child_env(&self, secrets: &SecretSet) -> Envp;
    /// Descriptors the child inherits at fixed numbers (`(descriptor, number
    /// in the child)`), made fresh for each start from `secrets` (`--memfd`,
    /// a template to `memfd:NAME`); closed in the supervisor once the child
    /// is started. None by default. An error stops the start: a program
    /// whose environment names memfds it did not get would run without its
    /// secrets.
    fn child_fds(&self, secrets: &SecretSet) -> Result<Vec<(OwnedFd, RawFd)>, DeliveryError> {
        let _ = secrets;
        Ok(Vec::new())
    }
    /// Removes the files written (shutdown).
    fn remove_files(&mut self);
}

/// Errors before supervision starts.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Blocking signals failed (a bug, or a very unusual system).
    #[error("could not block signals: {0}")]
    BlockSignals(nix::errno::Errno),
    /// The signal-reading thread could not start.
    #[error("could not start the signal thread: {0}")]
    SignalThread(std::io::Error),
    /// `--mlock` was asked for and the kernel refused.
    #[error("--mlock: could not lock the supervisor's memory ({errno}); RLIMIT_MEMLOCK is {}", memlock(*.limit))]
    Mlock {
        /// What `mlockall` said.
        errno: nix::errno::Errno,
        /// The soft `RLIMIT_MEMLOCK`, when it could be read.
        limit: Option<u64>,
    },
}

/// `RLIMIT_MEMLOCK` for a message: bytes, "unlimited" or "unknown".
fn memlock(limit: Option<u64>) -> String {
    match limit {
        Some(nix::libc::RLIM_INFINITY) => "unlimited".to_owned(),
        Some(bytes) => format!("{bytes} bytes (ulimit -l)"),
        None => "unknown".to_owned(),
    }
}

impl Failure for SuperviseError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Mlock { .. } => ExitClass::Config,
            Self::BlockSignals(_) | Self::SignalThread(_) => ExitClass::Internal,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Mlock { .. } => "raise RLIMIT_MEMLOCK above the supervisor's size (ulimit -l, \
                 LimitMEMLOCK= in a systemd unit, --ulimit memlock= for docker) or grant \
                 CAP_IPC_LOCK, or drop --mlock"
                .to_owned(),
            Self::BlockSignals(_) | Self::SignalThread(_) => crate::error::BUG_HINT.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
