//! State-machine tests: event sequences in, actions out. No processes, no sleeps:
//! time is advanced by hand.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::launch::reaper::{ChildEnd, Reaped};
use crate::launch::signals::Target;

const PID: i32 = 100;

fn set(pairs: &[(&str, &str)]) -> SecretSet {
    SecretSet::from_pairs(pairs)
}

fn v(value: &str) -> Content {
    set(&[("DB_PASSWORD", value)]).into()
}

fn settings() -> Settings {
    Settings {
        on_change: OnChange::Restart,
        stop_signal: Signal::TERM,
        stop_timeout: Duration::from_secs(5),
        forward_to: ForwardTo::Group,
        poll_interval: Duration::from_secs(10),
        settle: Duration::from_secs(2),
        max_settle: Duration::from_secs(8),
        max_changes: 2,
        change_window: Duration::from_secs(60),
        revoke_timeout: Duration::from_secs(3),
        jitter_seed: 7,
        mlock: false,
        started_on_cache: false,
    }
}

/// A state with a running child (pid 100), a clock, and every action recorded.
struct Sim {
    state: State,
    now: Instant,
    log: Vec<Action>,
}

impl Sim {
    fn new(settings: Settings) -> Self {
        Self::with_token(settings, None)
    }

    fn with_token(settings: Settings, renew_in: Option<Duration>) -> Self {
        let now = Instant::now();
        let (state, first) = State::new(settings, v("one"), renew_in, now);
        assert_eq!(first, vec![Action::WriteFiles, Action::StartChild]);
        let mut sim = Self {
            state,
            now,
            log: Vec::new(),
        };
        assert!(sim.ev(Event::Spawned { pid: PID }).is_empty());
        sim
    }

    fn ev(&mut self, event: Event) -> Vec<Action> {
        let out = self.state.step(self.now, event);
        self.log.extend(out.iter().copied());
        out
    }

    /// Moves the clock to the next deadline and ticks.
    fn tick_next(&mut self) -> Vec<Action> {
        let deadline = self.state.next_deadline().expect("a deadline is set");
        assert!(deadline >= self.now, "deadlines never lie in the past");
        self.now = deadline;
        let out = self.ev(Event::Tick);
        // A tick must consume every deadline it was woken for, or the driver spins.
        if let Some(next) = self.state.next_deadline() {
            assert!(next > self.now, "a tick left a deadline due: busy loop");
        }
        out
    }

    /// Ticks to the next poll and answers it.
    fn poll(&mut self, reply: Reply) -> Vec<Action> {
        assert_eq!(self.tick_next(), vec![Action::Request(Request::Poll)]);
        self.ev(Event::Reply(reply))
    }

    fn restarts(&self) -> usize {
        self.log
            .iter()
            .filter(|a| matches!(a, Action::Send { signal, .. } if *signal == Signal::TERM))
            .count()
    }

    fn reaped(&mut self, pid: i32, end: ChildEnd) -> Vec<Action> {
        self.ev(Event::Reaped(Reaped { pid, end }))
    }

    /// Ticks on, answering every probe of group `pgid` with "still there",
    /// until a tick does something else; returns that (probes left out).
    fn ticks_while_the_group_lives(&mut self, pgid: i32) -> Vec<Action> {
        loop {
            let mut out = self.tick_next();
            let probed = out.contains(&Action::ProbeGroup(pgid));
            out.retain(|a| *a != Action::ProbeGroup(pgid));
            if probed {
                out.extend(self.probed(pgid, true));
            }
            if !out.is_empty() {
                return out;
            }
        }
    }

    /// The answer to a probe of group `pgid`.
    fn probed(&mut self, pgid: i32, alive: bool) -> Vec<Action> {
        self.ev(Event::GroupProbed { pgid, alive })
    }

    /// The child `pid` is reaped, and its process group is found empty: what
    /// the supervisor does next.
    fn gone(&mut self, pid: i32, end: ChildEnd) -> Vec<Action> {
        assert_eq!(self.reaped(pid, end), vec![Action::ProbeGroup(pid)]);
        self.probed(pid, false)
    }
}

fn stop_child() -> Action {
    Action::Send {
        signal: Signal::TERM,
        to: Target::Group(PID),
    }
}

#[test]
fn unchanged_polls_never_restart() {
    let mut sim = Sim::new(settings());
    for _ in 0..20 {
        assert!(sim.poll(Reply::Fetched(v("one"))).is_empty());
        assert!(sim.poll(Reply::NotModified).is_empty());
    }
    assert!(sim.log.iter().all(|a| *a == Action::Request(Request::Poll)));
}

#[test]
fn polls_are_jittered_around_the_interval() {
    let mut sim = Sim::new(settings());
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let before = sim.now;
        sim.poll(Reply::NotModified);
        gaps.push(sim.now - before);
    }
    assert!(gaps
        .iter()
        .all(|g| *g >= Duration::from_secs(9) && *g <= Duration::from_secs(11)));
    assert!(gaps.windows(2).any(|w| w[0] != w[1]), "{gaps:?}");
}

#[test]
fn a_change_restarts_the_child_exactly_once_with_the_new_secrets() {
    let mut sim = Sim::new(settings());
    // First sight of a change: confirm before acting.
    assert!(sim.poll(Reply::Fetched(v("two"))).is_empty());
    // Confirmed one settle window later.
    let before = sim.now;
    let out = sim.poll(Reply::Fetched(v("two")));
    assert_eq!(sim.now - before, Duration::from_secs(2));
    assert_eq!(out, vec![Action::WriteFiles, stop_child()]);
    assert_eq!(sim.state.secrets().fingerprint(), v("two").fingerprint());
    // The old child exits; a new one starts with the current (new) set.
    assert_eq!(
        sim.gone(PID, ChildEnd::Signaled(Signal::TERM)),
        vec![Action::StartChild]
    );
    assert!(sim.ev(Event::Spawned { pid: 101 }).is_empty());
    for _ in 0..5 {
        assert!(sim.poll(Reply::Fetched(v("two"))).is_empty());
    }
    assert_eq!(sim.restarts(), 1);
}

#[test]
fn not_modified_confirms_a_pending_change() {
    let mut sim = Sim::new(settings());
    assert!(sim.poll(Reply::Fetched(v("two"))).is_empty());
    assert_eq!(
        sim.poll(Reply::NotModified),
        vec![Action::WriteFiles, stop_child()]
    );
}

#[test]
fn a_burst_of_changes_gives_one_restart_with_the_last_value() {
    let mut sim = Sim::new(settings());
    for value in ["two", "three", "four"] {
        assert!(sim.poll(Reply::Fetched(v(value))).is_empty());
    }
    assert_eq!(
        sim.poll(Reply::Fetched(v("four"))),
        vec![Action::WriteFiles, stop_child()]
    );
    assert_eq!(sim.state.secrets().fingerprint(), v("four").fingerprint());
    assert_eq!(sim.restarts(), 1);
}

#[test]
fn changes_that_never_settle_are_applied_after_max_settle() {
    let mut sim = Sim::new(settings());
    let mut applied_after = None;
    for i in 0..10 {
        let out = sim.poll(Reply::Fetched(v(&format!("v{i}"))));
        if !out.is_empty() {
            applied_after = Some(i);
            break;
        }
    }
    // First sight, then confirming polls every 2 s; acted on at >= 8 s.
    assert_eq!(applied_after, Some(4));
    assert_eq!(sim.restarts(), 1);
}

#[test]
fn a_change_reverted_before_it_settles_does_nothing() {
    let mut sim = Sim::new(settings());
    assert!(sim.poll(Reply::Fetched(v("two"))).is_empty());
    assert!(sim.poll(Reply::Fetched(v("one"))).is_empty());
    for _ in 0..3 {
        assert!(sim.poll(Reply::NotModified).is_empty());
    }
    assert_eq!(sim.restarts(), 0);
}

#[test]
fn failing_polls_keep_the_child_and_back_off() {
    let mut sim = Sim::new(settings());
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let before = sim.now;
        let out = sim.poll(Reply::PollFailed {
            reason: "connection refused".into(),
            auth: false,
        });
        assert!(out.is_empty());
        gaps.push(sim.now - before);
    }
    // Gap k is the delay chosen after failure k-1: 10 s jittered, then 10, 20, 40.
    assert_eq!(&gaps[1..], &[10, 20, 40].map(Duration::from_secs));
    assert_eq!(sim.state.secrets().fingerprint(), v("one").fingerprint());
    assert_eq!(sim.state.child_pid(), Some(PID));
    // Recovery resets the backoff and does not restart on unchanged content.
    assert!(sim.poll(Reply::Fetched(v("one"))).is_empty());
    let before = sim.now;
    sim.poll(Reply::NotModified);
    assert!(sim.now - before <= Duration::from_secs(11));
    assert_eq!(sim.restarts(), 0);
}

#[test]
fn on_cached_secrets_failing_polls_keep_the_interval_until_infisical_answers() {
    // A fallback start waits out an outage: backing off to 300 s would leave
    // the program on the cached secrets for minutes after Infisical is back.
    let mut sim = Sim::new(Settings {
        started_on_cache: true,
        ..settings()
    });
    let fail = || Reply::PollFailed {
        reason: "Infisical answered 503".into(),
        auth: false,
    };
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let before = sim.now;
        assert!(sim.poll(fail()).is_empty());
        gaps.push(sim.now - before);
    }
    assert_eq!(&gaps[1..], &[Duration::from_secs(10); 5]);
    // The first answer ends the fallback: from then on failures back off again.
    assert!(sim.poll(Reply::Fetched(v("one"))).is_empty());
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let before = sim.now;
        sim.poll(fail());
        gaps.push(sim.now - before);
    }
    assert_eq!(&gaps[1..], &[10, 20, 40].map(Duration::from_secs));
}

#[test]
fn a_refused_set_keeps_the_last_good_one_and_any_fetched_set_is_content() {
    // The network side refuses an undeliverable set (empty without --allow-empty,
    // a missing --require'd key) as a failed poll: nothing changes.
    let mut sim = Sim::new(settings());
    for _ in 0..3 {
        let refused = Reply::PollFailed {
            reason: "the new secrets cannot be delivered".into(),
            auth: false,
        };
        assert!(sim.poll(refused).is_empty());
    }
    assert_eq!(sim.restarts(), 0);
    assert_eq!(sim.state.secrets().fingerprint(), v("one").fingerprint());
    // What it hands over is delivered, an (allowed) empty set included.
    sim.poll(Reply::Fetched(SecretSet::new().into()));
    assert_eq!(
        sim.poll(Reply::Fetched(SecretSet::new().into())),
        vec![Action::WriteFiles, stop_child()]
    );
    assert!(sim.state.secrets().is_empty());
}

#[test]
fn the_restart_cap_defers_a_flapping_secret_until_the_window_allows() {
    let mut sim = Sim::new(settings());
    for (pid, value) in (PID..).zip(["two", "three"]) {
        sim.poll(Reply::Fetched(v(value)));
        let out = sim.poll(Reply::Fetched(v(value)));
        assert_eq!(
            out,
            vec![
                Action::WriteFiles,
                Action::Send {
                    signal: Signal::TERM,
                    to: Target::Group(pid)
                }
            ]
        );
        assert_eq!(sim.gone(pid, ChildEnd::Exited(0)), vec![Action::StartChild]);
        sim.ev(Event::Spawned { pid: pid + 1 });
    }
    let window_start = sim.now;
    // Third change within the window: seen, confirmed, but deferred.
    sim.poll(Reply::Fetched(v("four")));
    assert!(sim.poll(Reply::Fetched(v("four"))).is_empty());
    assert_eq!(sim.restarts(), 2);
    // Keep polling (unchanged) until the window opens; then exactly one restart.
    let mut rounds = 0;
    while sim.restarts() == 2 {
        rounds += 1;
        assert!(rounds < 20, "the deferred change was never applied");
        let out = sim.tick_next();
        if out == vec![Action::Request(Request::Poll)] {
            sim.ev(Event::Reply(Reply::NotModified));
        }
    }
    assert!(sim.now - window_start < Duration::from_secs(60));
    assert_eq!(sim.state.secrets().fingerprint(), v("four").fingerprint());
    assert_eq!(sim.restarts(), 3);
}

#[test]
fn signal_mode_rewrites_files_and_signals_without_restarting() {
    let mut sim = Sim::new(Settings {
        on_change: OnChange::Signal(Signal::HUP),
        ..settings()
    });
    sim.poll(Reply::Fetched(v("two")));
    assert_eq!(
        sim.poll(Reply::Fetched(v("two"))),
        vec![
            Action::WriteFiles,
            Action::Send {
                signal: Signal::HUP,
                to: Target::Group(PID)
            }
        ]
    );
    assert_eq!(sim.state.child_pid(), Some(PID));
    assert_eq!(sim.restarts(), 0);
    assert!(!sim.log.contains(&Action::StartChild));
}

#[test]
fn none_mode_only_rewrites_files() {
    let mut sim = Sim::new(Settings {
        on_change: OnChange::None,
        ..settings()
    });
    sim.poll(Reply::Fetched(v("two")));
    assert_eq!(sim.poll(Reply::Fetched(v("two"))), vec![Action::WriteFiles]);
}

#[test]
fn a_child_that_ignores_the_stop_signal_is_killed_with_its_group() {
    let mut sim = Sim::new(settings());
    sim.poll(Reply::Fetched(v("two")));
    sim.poll(Reply::Fetched(v("two")));
    let stopped_at = sim.now;
    // Polls keep running; go to the stop deadline.
    loop {
        let out = sim.tick_next();
        if out.contains(&Action::Request(Request::Poll)) {
            sim.ev(Event::Reply(Reply::NotModified));
            continue;
        }
        assert_eq!(out, vec![kill_group(PID)]);
        break;
    }
    assert_eq!(sim.now - stopped_at, Duration::from_secs(5));
    assert_eq!(
        sim.gone(PID, ChildEnd::Signaled(Signal::KILL)),
        vec![Action::StartChild]
    );
}

#[test]
fn signals_are_forwarded_to_the_group_or_the_child() {
    let mut sim = Sim::new(settings());
    assert_eq!(
        sim.ev(Event::Signal(Signal::USR1)),
        vec![Action::Send {
            signal: Signal::USR1,
            to: Target::Group(PID)
        }]
    );
    assert!(sim.ev(Event::Signal(Signal::CHLD)).is_empty());
    let mut sim = Sim::new(Settings {
        forward_to: ForwardTo::Child,
        ..settings()
    });
    assert_eq!(
        sim.ev(Event::Signal(Signal::HUP)),
        vec![Action::Send {
            signal: Signal::HUP,
            to: Target::Process(PID)
        }]
    );
}

#[test]
fn shutdown_forwards_stops_polling_removes_files_revokes_and_exits_with_the_childs_status() {
    let mut sim = Sim::new(settings());
    assert_eq!(sim.ev(Event::Signal(Signal::TERM)), vec![stop_child()]);
    // Only the kill deadline remains: no polls, no renewals.
    assert_eq!(
        sim.state.next_deadline(),
        Some(sim.now + Duration::from_secs(5))
    );
    assert_eq!(
        sim.gone(PID, ChildEnd::Signaled(Signal::TERM)),
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
    assert_eq!(
        sim.ev(Event::Reply(Reply::Revoked)),
        vec![Action::Exit(143)]
    );
}

#[test]
fn shutdown_during_a_restart_exits_instead_of_starting_a_new_child() {
    let mut sim = Sim::new(settings());
    sim.poll(Reply::Fetched(v("two")));
    sim.poll(Reply::Fetched(v("two")));
    sim.ev(Event::Signal(Signal::INT));
    let out = sim.gone(PID, ChildEnd::Exited(0));
    assert_eq!(
        out,
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
}

#[test]
fn a_child_exiting_on_its_own_ends_the_supervisor_even_if_revoke_hangs() {
    let mut sim = Sim::new(settings());
    assert_eq!(
        sim.gone(PID, ChildEnd::Exited(3)),
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
    assert_eq!(sim.tick_next(), vec![Action::Exit(3)]);
}

#[test]
fn orphans_reaped_do_not_affect_the_child() {
    let mut sim = Sim::new(settings());
    assert!(sim.reaped(4242, ChildEnd::Exited(1)).is_empty());
    assert_eq!(sim.state.child_pid(), Some(PID));
}

#[test]
fn a_spawn_failure_exits_with_its_code() {
    let (mut state, _) = State::new(settings(), v("one"), None, Instant::now());
    let now = Instant::now();
    assert_eq!(
        state.step(now, Event::SpawnFailed { code: 127 }),
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
    assert_eq!(
        state.step(now, Event::Reply(Reply::Revoked)),
        vec![Action::Exit(127)]
    );
}

#[test]
fn the_token_is_renewed_when_due_and_a_failed_renewal_is_followed_by_a_login_with_backoff() {
    let quiet = Settings {
        poll_interval: Duration::from_secs(100),
        ..settings()
    };
    let mut sim = Sim::with_token(quiet, Some(Duration::from_secs(4)));
    assert_eq!(sim.tick_next(), vec![Action::Request(Request::Renew)]);
    assert!(sim
        .ev(Event::Reply(Reply::TokenReady {
            renew_in: Duration::from_secs(4)
        }))
        .is_empty());
    assert_eq!(sim.tick_next(), vec![Action::Request(Request::Renew)]);
    // The renewal was refused and the session's own login after it failed (or
    // the renewal failed with too little life left): log in again with backoff;
    // the child is untouched.
    assert!(sim
        .ev(Event::Reply(Reply::LoginFailed {
            reason: "agent unavailable".into()
        }))
        .is_empty());
    let failed_at = sim.now;
    assert_eq!(sim.tick_next(), vec![Action::Request(Request::Relogin)]);
    assert_eq!(sim.now - failed_at, Duration::from_secs(2));
    sim.ev(Event::Reply(Reply::TokenReady {
        renew_in: Duration::from_secs(4),
    }));
    assert_eq!(sim.tick_next(), vec![Action::Request(Request::Renew)]);
    assert_eq!(sim.restarts(), 0);
}

#[test]
fn a_refused_token_on_poll_triggers_relogin_then_an_immediate_poll() {
    let mut sim = Sim::new(settings());
    let out = sim.poll(Reply::PollFailed {
        reason: "401 token expired".into(),
        auth: true,
    });
    assert_eq!(out, vec![Action::Request(Request::Relogin)]);
    assert_eq!(
        sim.ev(Event::Reply(Reply::TokenReady {
            renew_in: Duration::from_secs(600)
        })),
        vec![Action::Request(Request::Poll)]
    );
    assert!(sim.ev(Event::Reply(Reply::NotModified)).is_empty());
    assert_eq!(sim.restarts(), 0);
}

#[test]
fn the_sidecar_rewrites_files_on_change_and_exits_0_on_term_keeping_the_files() {
    let now = Instant::now();
    let (state, first) = State::new_sidecar(settings(), v("one"), None, now);
    assert_eq!(first, vec![Action::WriteFiles]);
    let mut sim = Sim {
        state,
        now,
        log: Vec::new(),
    };
    sim.poll(Reply::Fetched(v("two")));
    assert_eq!(sim.poll(Reply::Fetched(v("two"))), vec![Action::WriteFiles]);
    assert!(sim.ev(Event::Signal(Signal::HUP)).is_empty());
    assert_eq!(
        sim.ev(Event::Signal(Signal::TERM)),
        vec![Action::Request(Request::Revoke)]
    );
    assert_eq!(sim.ev(Event::Reply(Reply::Revoked)), vec![Action::Exit(0)]);
    assert_eq!(sim.state.child_pid(), None);
}

#[test]
fn sigterm_to_the_supervisor_becomes_the_stop_signal_and_sigint_passes_as_is() {
    let quit = Settings {
        stop_signal: Signal::QUIT,
        ..settings()
    };
    let mut sim = Sim::new(quit.clone());
    assert_eq!(
        sim.ev(Event::Signal(Signal::TERM)),
        vec![Action::Send {
            signal: Signal::QUIT,
            to: Target::Group(PID)
        }]
    );
    let mut sim = Sim::new(quit);
    assert_eq!(
        sim.ev(Event::Signal(Signal::INT)),
        vec![Action::Send {
            signal: Signal::INT,
            to: Target::Group(PID)
        }]
    );
}

/// The stop signal to the draining group of pid `pgid`.
fn stop_group(pgid: i32) -> Action {
    Action::Send {
        signal: Signal::TERM,
        to: Target::Group(pgid),
    }
}

/// SIGKILL to the draining group of pid `pgid`.
fn kill_group(pgid: i32) -> Action {
    Action::Send {
        signal: Signal::KILL,
        to: Target::Group(pgid),
    }
}

#[test]
fn the_rest_of_the_group_is_stopped_before_the_supervisor_exits() {
    let mut sim = Sim::new(settings());
    // The child exits on its own; a worker of its group is still there.
    assert_eq!(
        sim.reaped(PID, ChildEnd::Exited(3)),
        vec![Action::ProbeGroup(PID)]
    );
    let started = sim.now;
    let out = sim.probed(PID, true);
    assert_eq!(out, vec![stop_group(PID)]);
    // Asked again until it is gone; nothing else happens meanwhile.
    assert_eq!(sim.tick_next(), vec![Action::ProbeGroup(PID)]);
    assert!(sim.probed(PID, true).is_empty());
    // A reaped member makes it ask at once.
    assert_eq!(
        sim.reaped(4242, ChildEnd::Signaled(Signal::TERM)),
        vec![Action::ProbeGroup(PID)]
    );
    assert_eq!(
        sim.probed(PID, false),
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
    assert!(sim.now - started < Duration::from_secs(5));
    assert_eq!(sim.ev(Event::Reply(Reply::Revoked)), vec![Action::Exit(3)]);
}

#[test]
fn a_group_that_ignores_the_stop_signal_is_killed_and_then_given_up_on() {
    let mut sim = Sim::new(settings());
    sim.reaped(PID, ChildEnd::Exited(0));
    let started = sim.now;
    sim.probed(PID, true);
    // Probe after probe says it is still there, until the stop timeout.
    let out = sim.ticks_while_the_group_lives(PID);
    assert_eq!(out, vec![kill_group(PID)]);
    assert_eq!(sim.now - started, Duration::from_secs(5));
    // A member that survives SIGKILL (not ours to signal) is given up on.
    let killed = sim.now;
    let out = sim.ticks_while_the_group_lives(PID);
    assert_eq!(
        out,
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
    assert_eq!(sim.now - killed, Duration::from_secs(5));
}

#[test]
fn a_group_signalled_with_the_child_is_not_signalled_twice() {
    // Shutdown: TERM went to the whole group with the child; the child
    // exits, a member lingers: SIGKILL comes at the first stop deadline.
    let mut sim = Sim::new(settings());
    let stopped_at = sim.now;
    assert_eq!(sim.ev(Event::Signal(Signal::TERM)), vec![stop_child()]);
    sim.now += Duration::from_secs(1);
    sim.reaped(PID, ChildEnd::Signaled(Signal::TERM));
    assert!(sim.probed(PID, true).is_empty());
    let out = sim.ticks_while_the_group_lives(PID);
    assert_eq!(out, vec![kill_group(PID)]);
    assert_eq!(sim.now - stopped_at, Duration::from_secs(5));
    assert_eq!(sim.restarts(), 1, "TERM was sent once");
}

#[test]
fn a_restart_waits_for_the_old_group_and_a_shutdown_meanwhile_exits() {
    let mut sim = Sim::new(Settings {
        forward_to: ForwardTo::Child,
        ..settings()
    });
    sim.poll(Reply::Fetched(v("two")));
    let out = sim.poll(Reply::Fetched(v("two")));
    assert_eq!(
        out,
        vec![
            Action::WriteFiles,
            Action::Send {
                signal: Signal::TERM,
                to: Target::Process(PID)
            }
        ]
    );
    sim.reaped(PID, ChildEnd::Signaled(Signal::TERM));
    // Only the child got TERM: its group gets it now, and no new child yet.
    assert_eq!(sim.probed(PID, true), vec![stop_group(PID)]);
    assert_eq!(sim.tick_next(), vec![Action::ProbeGroup(PID)]);
    assert_eq!(sim.probed(PID, false), vec![Action::StartChild]);
    sim.ev(Event::Spawned { pid: 101 });

    // The same, with SIGTERM to the supervisor while the old group drains.
    sim.poll(Reply::Fetched(v("three")));
    sim.poll(Reply::Fetched(v("three")));
    sim.reaped(101, ChildEnd::Signaled(Signal::TERM));
    sim.probed(101, true);
    assert!(sim.ev(Event::Signal(Signal::TERM)).is_empty());
    assert_eq!(sim.tick_next(), vec![Action::ProbeGroup(101)]);
    assert_eq!(
        sim.probed(101, false),
        vec![Action::RemoveFiles, Action::Request(Request::Revoke)]
    );
}

/// Templates alone (with `--no-env`) deliver only their renderings: a set
/// whose other values changed carries the same fingerprint, and nothing is
/// written, restarted or signalled for it.
#[test]
fn a_change_that_delivers_nothing_new_is_not_acted_on() {
    let mut sim = Sim::new(settings());
    let delivered = v("one").fingerprint();
    for unused in ["a", "b", "c", "d"] {
        let changed = set(&[("DB_PASSWORD", "one"), ("UNUSED", unused)]);
        assert!(sim
            .poll(Reply::Fetched(Content::new(changed, delivered)))
            .is_empty());
    }
    assert!(
        sim.log
            .iter()
            .all(|a| matches!(a, Action::Request(Request::Poll))),
        "{:?}",
        sim.log
    );
}
