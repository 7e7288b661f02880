//! Supervise mode (`run --watch`): the pure state machine that decides what to do
//! with the child, the secrets and the token ([`State::step`]), and the thin async
//! driver that performs its actions ([`run`]).
//!
//! # Theory of operation
//!
//! `main` calls [`prepare`] before anything else: it blocks every signal but the
//! synchronous fault signals (so no thread ever runs a handler), starts the one
//! signal-reading thread, hardens the process (no core dumps, not ptrace-able,
//! optional mlock) and registers as child subreaper. Later, [`run`] starts the child
//! with `std::process::Command` in its own process group and keeps only its pid: one
//! reaper (`waitpid(-1)`, see [`super::reaper`]) owns every exit status.
//!
//! Everything the supervisor decides is in [`State::step`]: `(state, now, event) ->
//! actions`, with time as an input so it is tested without processes or sleeps. The
//! driver turns signals, reaped children, network replies and deadlines into
//! [`Event`]s and performs the [`Action`]s. The network side (polling, renewing,
//! re-login, revoking) plugs in through [`Network`], one request at a time; file and
//! environment delivery through [`Delivery`].
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

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::reaper;
use super::signals::{self, Signal, Target};
use crate::error::ExitClass;
use crate::secrets::SecretSet;
use crate::sys;

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

/// The network side's answer to a [`Request`].
pub enum Reply {
    /// A complete, successful fetch of a deliverable set (the network side answers
    /// `PollFailed` for a set that must not be delivered, such as an empty one
    /// without `--allow-empty`); the state machine compares fingerprints.
    Fetched(SecretSet),
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
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fetched(set) => write!(f, "Fetched({} secrets)", set.len()),
            Self::NotModified => f.write_str("NotModified"),
            Self::PollFailed { reason, auth } => write!(f, "PollFailed({reason}, auth={auth})"),
            Self::TokenReady { renew_in } => write!(f, "TokenReady(renew in {renew_in:?})"),
            Self::LoginFailed { reason } => write!(f, "LoginFailed({reason})"),
            Self::Revoked => f.write_str("Revoked"),
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

/// File and environment delivery, as the supervisor sees it.
pub trait Delivery {
    /// Writes (atomically replaces) the secret files for `secrets`.
    fn write_files(&mut self, secrets: &SecretSet) -> Result<(), DeliveryError>;
    /// Adds the child's environment to `command` (already `env_clear`ed).
    fn child_env(&self, secrets: &SecretSet, command: &mut Command);
    /// Removes the files `run` created (shutdown).
    fn remove_files(&mut self);
}

// ---------------------------------------------------------------------------
// The state machine

/// Something that happened.
pub enum Event {
    /// The child was spawned with this pid.
    Spawned { pid: i32 },
    /// The child could not be spawned; exit with this code (126/127).
    SpawnFailed { code: u8 },
    /// A process was reaped (the main child or an orphan).
    Reaped(reaper::Reaped),
    /// A signal was sent to the supervisor (never SIGCHLD: the driver reaps on it).
    Signal(Signal),
    /// The network side answered.
    Reply(Reply),
    /// Time passed; check the deadlines.
    Tick,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawned { pid } => write!(f, "Spawned({pid})"),
            Self::SpawnFailed { code } => write!(f, "SpawnFailed({code})"),
            Self::Reaped(r) => write!(f, "Reaped({r:?})"),
            Self::Signal(s) => write!(f, "Signal({s})"),
            Self::Reply(r) => write!(f, "Reply({r:?})"),
            Self::Tick => f.write_str("Tick"),
        }
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the files for [`State::secrets`].
    WriteFiles,
    /// Start the child with the environment for [`State::secrets`]; answer with
    /// [`Event::Spawned`] or [`Event::SpawnFailed`].
    StartChild,
    /// Send a signal.
    Send { signal: Signal, to: Target },
    /// Queue a request to the network side.
    Request(Request),
    /// Remove the delivered files.
    RemoveFiles,
    /// Exit with this code.
    Exit(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Restart,
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    /// `StartChild` issued, waiting for `Spawned`.
    Starting,
    Running {
        pid: i32,
    },
    /// Stop signal sent; SIGKILL to the group at `kill_at` (None once sent).
    Stopping {
        pid: i32,
        kill_at: Option<Instant>,
        then: AfterStop,
    },
    Gone,
    /// Sidecar mode (`write --watch`): there is no child, only files to keep fresh.
    Absent,
}

struct Pending {
    set: SecretSet,
    fingerprint: [u8; 32],
    first_seen: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenOp {
    Renew,
    Relogin,
}

struct Token {
    due: Option<Instant>,
    op: TokenOp,
    in_flight: bool,
    failures: u32,
}

/// The supervisor's whole state. Change it only through [`State::step`].
pub struct State {
    settings: Settings,
    child: Child,
    secrets: SecretSet,
    fingerprint: [u8; 32],
    pending: Option<Pending>,
    next_poll: Option<Instant>,
    poll_in_flight: bool,
    poll_failures: u32,
    /// The last poll was refused for its token: poll again once a new one is there.
    poll_after_login: bool,
    token: Token,
    /// When changes were applied, for the per-window cap.
    applied: VecDeque<Instant>,
    shutting_down: bool,
    /// Exit code and deadline once the child is gone and the token is being revoked.
    finishing: Option<(u8, Instant)>,
    rng: fastrand::Rng,
}

const LOGIN_BACKOFF_START: Duration = Duration::from_secs(2);
const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(60);
const POLL_BACKOFF_CAP: Duration = Duration::from_secs(300);

fn backoff(start: Duration, failures: u32, cap: Duration) -> Duration {
    start
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(cap)
}

impl State {
    /// The starting state, with the secrets fetched before supervision began and the
    /// time until the first renewal (None: the token needs no renewal). Returns the
    /// first actions: write the files, start the child.
    pub fn new(
        settings: Settings,
        secrets: SecretSet,
        renew_in: Option<Duration>,
        now: Instant,
    ) -> (Self, Vec<Action>) {
        let state = Self::build(settings, secrets, renew_in, now, Child::Starting);
        (state, vec![Action::WriteFiles, Action::StartChild])
    }

    /// The sidecar form (`write --watch`): no child; keep the files fresh, and on
    /// SIGTERM/SIGINT revoke the token and exit 0, leaving the files in place (they
    /// are what `write` produces). Returns the first action: write the files.
    pub fn new_sidecar(
        settings: Settings,
        secrets: SecretSet,
        renew_in: Option<Duration>,
        now: Instant,
    ) -> (Self, Vec<Action>) {
        let state = Self::build(settings, secrets, renew_in, now, Child::Absent);
        (state, vec![Action::WriteFiles])
    }

    fn build(
        settings: Settings,
        secrets: SecretSet,
        renew_in: Option<Duration>,
        now: Instant,
        child: Child,
    ) -> Self {
        let rng = fastrand::Rng::with_seed(settings.jitter_seed);
        let fingerprint = secrets.fingerprint();
        let mut state = Self {
            settings,
            child,
            secrets,
            fingerprint,
            pending: None,
            next_poll: None,
            poll_in_flight: false,
            poll_failures: 0,
            poll_after_login: false,
            token: Token {
                due: renew_in.map(|d| now + d),
                op: TokenOp::Renew,
                in_flight: false,
                failures: 0,
            },
            applied: VecDeque::new(),
            shutting_down: false,
            finishing: None,
            rng,
        };
        state.schedule_poll(now);
        state
    }

    /// The secrets delivered now (the last good set).
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// The pid of the current child, if one is running or stopping.
    pub fn child_pid(&self) -> Option<i32> {
        match self.child {
            Child::Running { pid } | Child::Stopping { pid, .. } => Some(pid),
            Child::Starting | Child::Gone | Child::Absent => None,
        }
    }

    /// The earliest time at which a [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::with_capacity(5);
        if let Child::Stopping {
            kill_at: Some(t), ..
        } = self.child
        {
            deadlines.push(t);
        }
        if let Some((_, t)) = self.finishing {
            deadlines.push(t);
        }
        if !self.shutting_down && self.finishing.is_none() {
            if !self.poll_in_flight {
                deadlines.extend(self.next_poll);
            }
            if !self.token.in_flight {
                deadlines.extend(self.token.due);
            }
            // A deferred change is applied on a tick with no poll in flight.
            if self.pending.is_some() && !self.poll_in_flight {
                deadlines.extend(self.cap_opens_at());
            }
        }
        deadlines.into_iter().min()
    }

    /// Advances the state by one event and returns what to do, in order.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Spawned { pid } => self.on_spawned(now, pid, &mut out),
            Event::SpawnFailed { code } => {
                self.child = Child::Gone;
                self.finish(now, code, &mut out);
            }
            Event::Reaped(reaped) => self.on_reaped(now, reaped, &mut out),
            Event::Signal(signal) => self.on_signal(now, signal, &mut out),
            Event::Reply(reply) => self.on_reply(now, reply, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
        }
        out
    }

    fn target(&self, pid: i32) -> Target {
        match self.settings.forward_to {
            ForwardTo::Group => Target::Group(pid),
            ForwardTo::Child => Target::Process(pid),
        }
    }

    fn on_spawned(&mut self, now: Instant, pid: i32, out: &mut Vec<Action>) {
        tracing::info!(pid, "child started");
        self.child = Child::Running { pid };
        if self.shutting_down {
            // A shutdown signal arrived while the child was being (re)started.
            self.stop(now, self.settings.stop_signal, AfterStop::Exit, out);
        }
    }

    fn on_reaped(&mut self, now: Instant, reaped: reaper::Reaped, out: &mut Vec<Action>) {
        if self.child_pid() != Some(reaped.pid) {
            tracing::debug!(pid = reaped.pid, end = ?reaped.end, "reaped an orphaned descendant");
            return;
        }
        let code = reaped.end.exit_code();
        let then = match self.child {
            Child::Stopping { then, .. } => then,
            _ => AfterStop::Exit,
        };
        if then == AfterStop::Restart && !self.shutting_down {
            tracing::info!(pid = reaped.pid, end = ?reaped.end, "child stopped; starting it with the new secrets");
            self.child = Child::Starting;
            out.push(Action::StartChild);
        } else {
            tracing::info!(pid = reaped.pid, end = ?reaped.end, code, "child exited");
            self.child = Child::Gone;
            self.finish(now, code, out);
        }
    }

    /// The child is gone for good: remove files, revoke, then exit.
    fn finish(&mut self, now: Instant, code: u8, out: &mut Vec<Action>) {
        self.shutting_down = true;
        self.finishing = Some((code, now + self.settings.revoke_timeout));
        out.push(Action::RemoveFiles);
        out.push(Action::Request(Request::Revoke));
    }

    fn stop(&mut self, now: Instant, signal: Signal, then: AfterStop, out: &mut Vec<Action>) {
        match self.child {
            Child::Running { pid } => {
                out.push(Action::Send {
                    signal,
                    to: self.target(pid),
                });
                self.child = Child::Stopping {
                    pid,
                    kill_at: Some(now + self.settings.stop_timeout),
                    then,
                };
            }
            Child::Stopping {
                pid,
                kill_at,
                then: before,
            } => {
                let then = if before == AfterStop::Exit || then == AfterStop::Exit {
                    AfterStop::Exit
                } else {
                    AfterStop::Restart
                };
                self.child = Child::Stopping { pid, kill_at, then };
            }
            Child::Starting | Child::Gone | Child::Absent => {}
        }
    }

    fn on_signal(&mut self, now: Instant, signal: Signal, out: &mut Vec<Action>) {
        if signal == Signal::CHLD {
            return;
        }
        if (signal == Signal::TERM || signal == Signal::INT) && self.child == Child::Absent {
            if !self.shutting_down {
                tracing::info!(%signal, "shutting down");
                self.shutting_down = true;
                self.finishing = Some((0, now + self.settings.revoke_timeout));
                out.push(Action::Request(Request::Revoke));
            }
            return;
        }
        if signal == Signal::TERM || signal == Signal::INT {
            if !self.shutting_down {
                tracing::info!(%signal, "shutting down: stopping the child");
            }
            self.shutting_down = true;
            self.pending = None;
            // SIGTERM (docker stop, systemd, kubelet) becomes `--stop-signal`, the
            // program's own graceful-stop signal (QUIT for nginx); SIGINT is passed on
            // as it is. Then wait for the stop timeout.
            let signal = if signal == Signal::TERM {
                self.settings.stop_signal
            } else {
                signal
            };
            if let Some(pid) = self.child_pid() {
                out.push(Action::Send {
                    signal,
                    to: self.target(pid),
                });
            }
            if let Child::Running { pid } = self.child {
                self.child = Child::Stopping {
                    pid,
                    kill_at: Some(now + self.settings.stop_timeout),
                    then: AfterStop::Exit,
                };
            } else {
                self.stop(now, signal, AfterStop::Exit, &mut Vec::new());
            }
            return;
        }
        if let Some(pid) = self.child_pid() {
            out.push(Action::Send {
                signal,
                to: self.target(pid),
            });
        } else {
            tracing::debug!(%signal, "no child to forward the signal to");
        }
    }

    fn on_reply(&mut self, now: Instant, reply: Reply, out: &mut Vec<Action>) {
        if self.shutting_down && !matches!(reply, Reply::Revoked) {
            // Late answers to polls or renewals do not matter any more.
            return;
        }
        match reply {
            Reply::Fetched(set) => {
                // Any set the network side hands over is deliverable: it refuses
                // an empty or otherwise undeliverable set itself (PollFailed).
                self.poll_in_flight = false;
                self.poll_failures = 0;
                let fingerprint = set.fingerprint();
                self.on_content(now, set, fingerprint, out);
            }
            Reply::NotModified => {
                self.poll_in_flight = false;
                self.poll_failures = 0;
                // 304 repeats the previous fetch: it confirms a pending change.
                if let Some(pending) = &self.pending {
                    let (set, fingerprint) = (pending.set.clone(), pending.fingerprint);
                    self.on_content(now, set, fingerprint, out);
                } else {
                    self.schedule_poll(now);
                }
            }
            Reply::PollFailed { reason, auth } => {
                self.poll_in_flight = false;
                self.poll_failed(now, &reason, auth, out);
            }
            Reply::TokenReady { renew_in } => {
                self.token = Token {
                    due: Some(now + renew_in),
                    op: TokenOp::Renew,
                    in_flight: false,
                    failures: 0,
                };
                tracing::debug!(?renew_in, "access token ready");
                if self.poll_after_login {
                    self.poll_after_login = false;
                    self.next_poll = Some(now);
                    self.on_tick(now, out);
                }
            }
            Reply::LoginFailed { reason } => {
                self.token.in_flight = false;
                self.token.failures += 1;
                self.token.op = TokenOp::Relogin;
                let delay = backoff(LOGIN_BACKOFF_START, self.token.failures, LOGIN_BACKOFF_MAX);
                tracing::warn!(%reason, retry_in = ?delay, "login failed; the child keeps running with the last good secrets");
                self.token.due = Some(now + delay);
            }
            Reply::Revoked => {
                if let Some((code, _)) = self.finishing.take() {
                    out.push(Action::Exit(code));
                }
            }
        }
    }

    fn poll_failed(&mut self, now: Instant, reason: &str, auth: bool, out: &mut Vec<Action>) {
        self.poll_failures += 1;
        let cap = POLL_BACKOFF_CAP.max(self.settings.poll_interval);
        let delay = backoff(self.settings.poll_interval, self.poll_failures, cap);
        tracing::warn!(%reason, retry_in = ?delay, "poll failed; the child keeps running with the last good secrets");
        self.next_poll = Some(now + delay);
        if auth {
            // Polling with a refused token is pointless: poll again as soon as a new
            // token is there (after the renewal in flight, or a fresh login).
            self.next_poll = None;
            self.poll_after_login = true;
            if !self.token.in_flight {
                self.token.op = TokenOp::Relogin;
                self.token.due = Some(now);
                self.on_tick(now, out);
            }
        }
    }

    fn on_content(
        &mut self,
        now: Instant,
        set: SecretSet,
        fingerprint: [u8; 32],
        out: &mut Vec<Action>,
    ) {
        if fingerprint == self.fingerprint {
            if self.pending.take().is_some() {
                tracing::info!("secrets changed back before the change settled; nothing to do");
            }
            self.schedule_poll(now);
            return;
        }
        let first_seen = match &self.pending {
            Some(p) if p.fingerprint == fingerprint => {
                // Confirmed: the same content one settle window later.
                self.pending = Some(Pending {
                    set,
                    fingerprint,
                    first_seen: p.first_seen,
                });
                self.apply(now, out);
                return;
            }
            Some(p) => p.first_seen,
            None => now,
        };
        self.pending = Some(Pending {
            set,
            fingerprint,
            first_seen,
        });
        if now.duration_since(first_seen) >= self.settings.max_settle {
            tracing::info!("secrets keep changing; applying the latest set");
            self.apply(now, out);
        } else {
            tracing::info!("secrets changed; confirming before acting");
            self.next_poll = Some(now + self.settings.settle);
        }
    }

    /// When the per-window change cap allows the next change (None: it does now).
    fn cap_opens_at(&self) -> Option<Instant> {
        if self.applied.len() < self.settings.max_changes {
            return None;
        }
        self.applied
            .front()
            .map(|first| *first + self.settings.change_window)
    }

    /// Makes the pending set current and acts on it, unless the cap says wait.
    fn apply(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(first) = self.applied.front() {
            if now.duration_since(*first) >= self.settings.change_window {
                self.applied.pop_front();
            } else {
                break;
            }
        }
        if let Some(opens) = self.cap_opens_at() {
            tracing::warn!(
                max = self.settings.max_changes,
                window = ?self.settings.change_window,
                wait = ?opens.duration_since(now),
                "too many secret changes; deferring this one"
            );
            self.schedule_poll(now);
            return;
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        self.secrets = pending.set;
        self.fingerprint = pending.fingerprint;
        self.applied.push_back(now);
        self.schedule_poll(now);
        out.push(Action::WriteFiles);
        match self.settings.on_change {
            OnChange::Restart => {
                tracing::info!("secrets changed; restarting the child");
                self.stop(now, self.settings.stop_signal, AfterStop::Restart, out);
            }
            OnChange::Signal(signal) => {
                if let Child::Running { pid } = self.child {
                    tracing::info!(%signal, "secrets changed; signalling the child");
                    out.push(Action::Send {
                        signal,
                        to: self.target(pid),
                    });
                }
            }
            OnChange::None => tracing::info!("secrets changed; files refreshed"),
        }
    }

    fn schedule_poll(&mut self, now: Instant) {
        let base = self.settings.poll_interval;
        let jitter = 0.9 + 0.2 * self.rng.f64();
        self.next_poll = Some(now + base.mul_f64(jitter));
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Child::Stopping {
            pid,
            kill_at: Some(t),
            then,
        } = self.child
        {
            if t <= now {
                tracing::warn!(pid, timeout = ?self.settings.stop_timeout, "child did not stop in time; killing its process group");
                out.push(Action::Send {
                    signal: Signal::KILL,
                    to: Target::Group(pid),
                });
                self.child = Child::Stopping {
                    pid,
                    kill_at: None,
                    then,
                };
            }
        }
        if let Some((code, deadline)) = self.finishing {
            if deadline <= now {
                tracing::warn!("token revocation did not finish in time; exiting anyway");
                self.finishing = None;
                out.push(Action::Exit(code));
            }
            return;
        }
        if self.shutting_down {
            return;
        }
        if !self.poll_in_flight && self.next_poll.is_some_and(|t| t <= now) {
            self.poll_in_flight = true;
            self.next_poll = None;
            out.push(Action::Request(Request::Poll));
        }
        if !self.token.in_flight && self.token.due.is_some_and(|t| t <= now) {
            self.token.in_flight = true;
            self.token.due = None;
            out.push(Action::Request(match self.token.op {
                TokenOp::Renew => Request::Renew,
                TokenOp::Relogin => Request::Relogin,
            }));
        }
        if self.pending.is_some()
            && !self.poll_in_flight
            && self.cap_opens_at().is_some_and(|t| t <= now)
        {
            self.apply(now, out);
        }
    }
}

// ---------------------------------------------------------------------------
// Process set-up and the driver

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
    #[error(
        "--mlock: could not lock memory ({0}); check RLIMIT_MEMLOCK (ulimit -l) or CAP_IPC_LOCK"
    )]
    Mlock(nix::errno::Errno),
    /// The async runtime could not start.
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl SuperviseError {
    /// The exit class of this error.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Self::Mlock(_) => ExitClass::Config,
            Self::BlockSignals(_) | Self::SignalThread(_) | Self::Runtime(_) => ExitClass::Internal,
        }
    }
}

/// The supervisor's signals, read by one thread (see [`prepare`]).
pub struct SignalReader(UnboundedReceiver<Signal>);

impl SignalReader {
    /// For the start-up phase (log in, first fetch), before there is a child:
    /// waits for a signal whose default action would have ended the process had
    /// it not been blocked (HUP, INT, QUIT, TERM) and returns it, so `docker stop`
    /// or Ctrl-C during a slow start-up is not held until supervision begins.
    /// Other signals are dropped: there is no child to forward them to yet.
    pub async fn until_terminated(&mut self) -> Signal {
        loop {
            match self.0.recv().await {
                Some(s) if [Signal::HUP, Signal::INT, Signal::QUIT, Signal::TERM].contains(&s) => {
                    return s;
                }
                Some(s) => tracing::debug!(signal = %s, "signal during start-up; no child yet"),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Process set-up for supervise mode. `main` calls this first, before any thread or
/// runtime exists: block signals, start the signal reader, turn off core dumps and
/// ptrace-ability, lock memory (`mlock`), register as subreaper (warn if that fails
/// and we are not PID 1: orphans would then not be reaped).
pub fn prepare(mlock: bool) -> Result<SignalReader, SuperviseError> {
    sys::block_signals().map_err(SuperviseError::BlockSignals)?;
    let reader = signals::spawn_reader().map_err(SuperviseError::SignalThread)?;
    if let Err(err) = sys::harden() {
        tracing::warn!(%err, "could not disable core dumps / ptrace for the supervisor");
    }
    if mlock {
        sys::lock_memory().map_err(SuperviseError::Mlock)?;
    }
    if std::process::id() != 1 {
        if let Err(err) = sys::become_subreaper() {
            tracing::warn!(%err, "not PID 1 and could not register as child subreaper (Linux >= 3.4?): orphaned processes will not be reaped");
        }
    }
    Ok(SignalReader(reader))
}

/// The program to supervise.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
}

/// Spawns the child: own process group, clean signal state, an explicit
/// environment. Only the pid is kept: the reaper owns the exit status. An exec
/// failure maps to 127 (not found), 126 (cannot execute) or, as in exec mode,
/// 78 for `E2BIG` (arguments + environment too large).
fn spawn_child<D: Delivery>(
    child: &ChildCommand,
    delivery: &D,
    secrets: &SecretSet,
) -> Result<i32, u8> {
    let mut command = Command::new(&child.program);
    command
        .args(&child.args)
        .env_clear()
        .stdin(Stdio::inherit());
    if let Some(cwd) = &child.cwd {
        command.current_dir(cwd);
    }
    delivery.child_env(secrets, &mut command);
    sys::isolate_child(&mut command);
    match command.spawn() {
        // Dropping `Child` neither waits nor kills: the reaper owns it from here.
        Ok(spawned) => Ok(i32::try_from(spawned.id()).expect("UNWRAP: pids fit in i32")),
        Err(err) => {
            let program = child.program.to_string_lossy();
            let class = if err.raw_os_error() == Some(nix::libc::E2BIG) {
                // As in exec mode: a configuration problem, not an unusable program.
                tracing::error!("cannot execute {program}: arguments and environment are too large (E2BIG); deliver fewer or smaller secrets in the environment (e.g. --files-dir with --no-env)");
                ExitClass::Config
            } else if err.kind() == std::io::ErrorKind::NotFound {
                tracing::error!("exec {program}: {err}");
                ExitClass::CommandNotFound
            } else {
                tracing::error!("exec {program}: {err}");
                ExitClass::CannotExecute
            };
            Err(class.code())
        }
    }
}

/// How often the driver reaps even without SIGCHLD. SIGCHLD is blocked and
/// read with `sigwaitinfo`, so it cannot be lost (only coalesced, and every
/// wake-up drains all zombies); this is a rare safety net, not tini's 1 s tick,
/// so an idle supervisor does not wake between polls.
const REAP_PERIOD: Duration = Duration::from_secs(60);

/// The driver's one deadline (next poll, renewal, kill, or the reaping safety
/// net), kept on a timerfd rather than Tokio's timer wheel. The wheel files a
/// deadline more than 64 ms away in a coarser level and wakes the thread at that
/// level's slot boundaries to move it down: `strace -f -tt` of an idle supervisor
/// polling every 10 s showed three `epoll_wait` time-outs per poll (the last 1.6 to
/// 4 s and ~50 ms before it). The kernel's timer wakes the thread once, at the
/// deadline. Falls back to Tokio's sleep if there is no timerfd. Needs a runtime
/// with I/O enabled (every runtime the supervisor runs on has it).
struct Alarm(Option<AsyncFd<sys::Timer>>);

impl Alarm {
    fn new() -> Self {
        let timer = sys::async_timer();
        if let Err(err) = &timer {
            tracing::debug!(%err, "no timerfd: deadlines use Tokio's timer");
        }
        Self(timer.ok())
    }

    /// Returns at `deadline` (at once if it has passed). Cancel-safe: the next
    /// call re-arms the timer, which also resets a stale expiry.
    async fn sleep_until(&self, deadline: Instant) {
        let Some(timer) = &self.0 else {
            return tokio::time::sleep_until(deadline).await;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // A zero one-shot would disarm rather than fire. Disarm explicitly, so
            // a stale deadline armed earlier does not wake the thread for nothing.
            let _ = timer.get_ref().fd().unset();
            return;
        }
        let armed = timer.get_ref().fd().set(
            Expiration::OneShot(TimeSpec::from_duration(left)),
            TimerSetTimeFlags::empty(),
        );
        if armed.is_err() {
            return tokio::time::sleep_until(deadline).await;
        }
        loop {
            let Ok(mut ready) = timer.readable().await else {
                return tokio::time::sleep_until(deadline).await;
            };
            // Reading the expiry count; EAGAIN (not expired yet: readiness left
            // over from an earlier arming) clears the readiness and waits again.
            match ready.try_io(|fd| fd.get_ref().fd().wait().map_err(std::io::Error::from)) {
                Ok(Ok(())) => return,
                Ok(Err(_)) => return tokio::time::sleep_until(deadline).await,
                Err(_would_block) => {}
            }
        }
    }
}

type InFlight<N> = Pin<Box<dyn Future<Output = (N, Reply)>>>;

/// Supervises `child` until it exits, and returns the exit code: the child's own
/// (128+N when killed by signal N), or 126/127 when it cannot be started, or 78
/// when the first file delivery fails. Without a child (`write --watch`) it keeps
/// the files fresh until SIGTERM/SIGINT and returns 0. [`prepare`] must have run.
pub fn run<N, D>(
    signals: SignalReader,
    child: Option<&ChildCommand>,
    settings: Settings,
    secrets: SecretSet,
    renew_in: Option<Duration>,
    network: N,
    delivery: D,
) -> Result<u8, SuperviseError>
where
    N: Network + 'static,
    D: Delivery,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io() // the timerfd behind `Alarm`
        .build()
        .map_err(SuperviseError::Runtime)?;
    Ok(runtime.block_on(supervise(
        signals, child, settings, secrets, renew_in, network, delivery,
    )))
}

/// [`run`] on the caller's runtime (a current-thread runtime with time enabled),
/// for a caller whose network side was built on that runtime: `run --watch` logs
/// in and fetches on it first, and an HTTP connection pool must not outlive the
/// runtime it was made on.
pub async fn supervise<N, D>(
    signals: SignalReader,
    child: Option<&ChildCommand>,
    settings: Settings,
    secrets: SecretSet,
    renew_in: Option<Duration>,
    network: N,
    delivery: D,
) -> u8
where
    N: Network + 'static,
    D: Delivery,
{
    drive(
        signals.0, child, settings, secrets, renew_in, network, delivery,
    )
    .await
}

async fn drive<N, D>(
    mut signals: UnboundedReceiver<Signal>,
    child: Option<&ChildCommand>,
    settings: Settings,
    secrets: SecretSet,
    renew_in: Option<Duration>,
    network: N,
    mut delivery: D,
) -> u8
where
    N: Network + 'static,
    D: Delivery,
{
    let (mut state, first) = if child.is_some() {
        State::new(settings, secrets, renew_in, Instant::now())
    } else {
        State::new_sidecar(settings, secrets, renew_in, Instant::now())
    };
    let mut actions: VecDeque<Action> = first.into();
    let mut requests: VecDeque<Request> = VecDeque::new();
    let mut idle: Option<N> = Some(network);
    let mut in_flight: Option<InFlight<N>> = None;
    let mut first_delivery = true;
    let alarm = Alarm::new();
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                Action::WriteFiles => {
                    if let Err(err) = delivery.write_files(state.secrets()) {
                        tracing::error!(%err, "could not write the secret files");
                        if first_delivery {
                            return ExitClass::Config.code();
                        }
                    }
                    first_delivery = false;
                }
                Action::StartChild => {
                    let child = child.expect("UNWRAP: the sidecar state never starts a child");
                    let event = match spawn_child(child, &delivery, state.secrets()) {
                        Ok(pid) => Event::Spawned { pid },
                        Err(code) => Event::SpawnFailed { code },
                    };
                    actions.extend(state.step(Instant::now(), event));
                }
                Action::Send { signal, to } => signals::send(to, signal),
                Action::Request(Request::Revoke) => {
                    // Shutting down: queued polls or renewals no longer matter.
                    requests.clear();
                    requests.push_back(Request::Revoke);
                }
                Action::Request(request) => requests.push_back(request),
                Action::RemoveFiles => delivery.remove_files(),
                Action::Exit(code) => return code,
            }
        }
        if in_flight.is_none() {
            if let Some(request) = requests.pop_front() {
                let mut network = idle.take().expect("UNWRAP: no request is in flight");
                tracing::debug!(?request, "network request");
                in_flight = Some(Box::pin(async move {
                    let reply = network.call(request).await;
                    (network, reply)
                }));
            }
        }
        let now = Instant::now();
        let wake = state
            .next_deadline()
            .map_or(now + REAP_PERIOD, |t| t.min(now + REAP_PERIOD));
        let mut events = Vec::new();
        tokio::select! {
            signal = signals.recv() => match signal {
                Some(Signal::CHLD) => events.extend(reaper::reap_all().into_iter().map(Event::Reaped)),
                Some(signal) => events.push(Event::Signal(signal)),
                None => {
                    tracing::error!("the signal thread stopped; exiting");
                    return ExitClass::Internal.code();
                }
            },
            (network, reply) = async { in_flight.as_mut().expect("UNWRAP: guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                idle = Some(network);
                events.push(Event::Reply(reply));
            },
            () = alarm.sleep_until(wake) => {
                events.extend(reaper::reap_all().into_iter().map(Event::Reaped));
                events.push(Event::Tick);
            },
        }
        for event in events {
            actions.extend(state.step(Instant::now(), event));
        }
    }
}

#[cfg(test)]
mod tests;
