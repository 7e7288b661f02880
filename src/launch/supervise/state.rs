//! The supervisor's decisions as a pure state machine: `(state, now, event) ->
//! actions`, with time as an input so every case is tested without processes
//! or sleeps (`tests.rs`). Everything the outside world may want to hear about
//! (the child started or stopped, a change applied, shutdown) is an [`Action`]
//! the driver performs in one place.

mod drain;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use drain::{Drain, KILLED_GROUP_WAIT};

use super::{Content, ForwardTo, OnChange, Reply, Request, Settings};
use crate::launch::reaper;
use crate::launch::signals::{Signal, Target};
use crate::retry::Backoff;
use crate::secrets::SecretSet;

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
    /// The answer to [`Action::ProbeGroup`]: whether process group `pgid`
    /// still has a member.
    GroupProbed { pgid: i32, alive: bool },
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
            Self::GroupProbed { pgid, alive } => write!(f, "GroupProbed({pgid}, {alive})"),
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
    /// Ask whether process group `pgid` still has a member; answer with
    /// [`Event::GroupProbed`].
    ProbeGroup(i32),
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
    /// The child is gone; what is left of its process group (workers, a
    /// shell's background jobs, all holding the secrets in their environment)
    /// is stopped before `then`: the restart, or the exit with `code`.
    Draining {
        pgid: i32,
        then: AfterStop,
        code: u8,
        stage: Drain,
        /// When to ask again whether anyone is left (`None`: asked, waiting).
        probe_at: Option<Instant>,
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

/// Logging in again after a failed login: 2 s doubling up to a minute. The
/// program's one backoff formula; the ceilings are used as they are, not drawn
/// with jitter: this state machine must be deterministic for its tests, polls
/// are already spread (±10% each), and a full-jitter draw could retry at once.
const LOGIN_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(2),
    max: Duration::from_secs(60),
    factor: 2.0,
};

/// Failed polls back off from the poll interval, doubling up to this (or the
/// poll interval when that is longer).
const POLL_BACKOFF_CAP: Duration = Duration::from_secs(300);

impl State {
    /// The starting state, with the secrets fetched before supervision began and the
    /// time until the first renewal (None: the token needs no renewal). Returns the
    /// first actions: write the files, start the child.
    pub fn new(
        settings: Settings,
        secrets: Content,
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
        secrets: Content,
        renew_in: Option<Duration>,
        now: Instant,
    ) -> (Self, Vec<Action>) {
        let state = Self::build(settings, secrets, renew_in, now, Child::Absent);
        (state, vec![Action::WriteFiles])
    }

    fn build(
        settings: Settings,
        secrets: Content,
        renew_in: Option<Duration>,
        now: Instant,
        child: Child,
    ) -> Self {
        let rng = fastrand::Rng::with_seed(settings.jitter_seed);
        let (secrets, fingerprint) = secrets.into_parts();
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
            Child::Starting | Child::Draining { .. } | Child::Gone | Child::Absent => None,
        }
    }

    /// Whether shutdown has begun (a stop signal, or the child is gone): the
    /// driver then tells the platform it is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
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
        if let Child::Draining {
            stage, probe_at, ..
        } = self.child
        {
            deadlines.extend(probe_at);
            match stage {
                Drain::Stopping { kill_at: t } | Drain::Killed { give_up_at: t } => {
                    deadlines.push(t);
                }
                Drain::Unsignalled => {}
            }
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
            Event::GroupProbed { pgid, alive } => self.on_probed(now, pgid, alive, &mut out),
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
        if let Child::Draining { pgid, probe_at, .. } = &mut self.child {
            // Perhaps the group's last member: ask now rather than at the next probe.
            if probe_at.take().is_some() {
                out.push(Action::ProbeGroup(*pgid));
            }
            return;
        }
        if self.child_pid() != Some(reaped.pid) {
            tracing::debug!(pid = reaped.pid, end = ?reaped.end, "reaped an orphaned descendant");
            return;
        }
        let code = reaped.end.exit_code();
        let (then, stage) = match self.child {
            // The group already got what the child got, when signals go to the group.
            Child::Stopping { then, kill_at, .. } => match (kill_at, self.settings.forward_to) {
                (None, _) => (
                    then,
                    Drain::Killed {
                        give_up_at: now + KILLED_GROUP_WAIT,
                    },
                ),
                (Some(kill_at), ForwardTo::Group) => (then, Drain::Stopping { kill_at }),
                (Some(_), ForwardTo::Child) => (then, Drain::Unsignalled),
            },
            _ => (AfterStop::Exit, Drain::Unsignalled),
        };
        let then = if self.shutting_down {
            AfterStop::Exit
        } else {
            then
        };
        if then == AfterStop::Restart {
            tracing::info!(pid = reaped.pid, end = ?reaped.end, "child stopped");
        } else {
            tracing::info!(pid = reaped.pid, end = ?reaped.end, code, "child exited");
        }
        self.child = Child::Draining {
            pgid: reaped.pid,
            then,
            code,
            stage,
            probe_at: None,
        };
        out.push(Action::ProbeGroup(reaped.pid));
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
            Child::Draining { .. } => {
                // A shutdown during a restart's drain exits instead.
                if let (Child::Draining { then: after, .. }, AfterStop::Exit) =
                    (&mut self.child, then)
                {
                    *after = AfterStop::Exit;
                }
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
            Reply::Fetched(content) => {
                // Any set the network side hands over is deliverable: it refuses
                // an empty or otherwise undeliverable set itself (PollFailed).
                self.poll_in_flight = false;
                self.poll_failures = 0;
                // The first answer ends a start from the cached secrets.
                self.settings.started_on_cache = false;
                let (set, fingerprint) = content.into_parts();
                self.on_content(now, set, fingerprint, out);
            }
            Reply::NotModified => {
                self.poll_in_flight = false;
                self.poll_failures = 0;
                self.settings.started_on_cache = false;
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
                let delay = LOGIN_BACKOFF.ceiling(self.token.failures.saturating_sub(1));
                tracing::warn!(%reason, retry_in = ?delay, "login failed; the child keeps running with the last good secrets");
                self.token.due = Some(now + delay);
            }
            Reply::Revoked => {
                if let Some((code, _)) = self.finishing.take() {
                    out.push(Action::Exit(code));
                }
            }
            // Only at shutdown, which ignores it above.
            Reply::Cancelled => {}
        }
    }

    fn poll_failed(&mut self, now: Instant, reason: &str, auth: bool, out: &mut Vec<Action>) {
        self.poll_failures += 1;
        let backoff = Backoff {
            initial: self.settings.poll_interval,
            max: POLL_BACKOFF_CAP.max(self.settings.poll_interval),
            factor: 2.0,
        };
        // On the cached secrets of a fallback start, the outage is what is
        // being waited out: keep trying at the interval, not ever more rarely.
        let delay = if self.settings.started_on_cache {
            self.settings.poll_interval
        } else {
            backoff.ceiling(self.poll_failures.saturating_sub(1))
        };
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
        if self.child == Child::Absent {
            // The sidecar (`write --watch`): the files are all there is.
            tracing::info!("secrets changed; files refreshed");
            return;
        }
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
        self.drain_tick(now, out);
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
