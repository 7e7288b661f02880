//! The supervisor's lifecycle: its child dies with it even when it is killed
//! with SIGKILL (`PR_SET_PDEATHSIG`); what is left of the child's process
//! group is stopped before it exits; a re-login revokes the token it
//! replaces; and shutdown revokes the current token instead of finishing a
//! re-login only to revoke that.

use std::time::Duration;

use nix::sys::signal::Signal;
use svid_exec_testkit::infisical::Fault;

use super::WAIT;
use crate::util::{agent_fetches, alive, wait_for};
use crate::watch::{stack_with, Watched, RECORDER};

#[test]
fn the_child_dies_with_a_supervisor_killed_by_sigkill() {
    let stack = stack_with((3600, 86_400), false);
    let launcher = Watched::run(&stack, "60s", &[], RECORDER);
    let (child, _) = launcher.wait_starts(1)[0].clone();
    launcher.signal(Signal::SIGKILL);
    wait_for("the child to die with its supervisor", WAIT, || {
        (!alive(child)).then_some(())
    });
}

#[test]
fn what_is_left_of_the_group_is_stopped_before_the_supervisor_exits() {
    let stack = stack_with((3600, 86_400), false);
    // The program exits on its own, leaving a background job, and another
    // that ignores SIGTERM, in its process group: both hold its environment.
    let script = "sleep 300 & echo $! > \"$D/job\"; \
         (trap '' TERM; touch \"$D/ignoring\"; exec sleep 300) & echo $! > \"$D/stubborn\"; \
         while [ ! -e \"$D/ignoring\" ]; do sleep 0.05; done; exit 3";
    let mut launcher = Watched::run(&stack, "60s", &["--stop-timeout", "1s"], script);
    let job: i32 = launcher.wait_file("job").trim().parse().unwrap();
    let stubborn: i32 = launcher.wait_file("stubborn").trim().parse().unwrap();
    assert_eq!(launcher.finish(), 3, "{}", launcher.stderr());
    // Checked once the supervisor is gone, not waited for.
    assert!(!alive(job), "the background job outlived the supervisor");
    assert!(
        !alive(stubborn),
        "the TERM-ignoring job outlived the supervisor"
    );
    let stderr = launcher.stderr();
    assert!(stderr.contains("processes of its group remain"), "{stderr}");
    assert!(stderr.contains("killing them"), "{stderr}");
}

/// Tokens that live 6 s with a 6 s budget cannot be renewed: the supervisor
/// logs in again every 4 s, while the token it replaces has 2 s left. Every
/// token it replaced is revoked, and the last one at shutdown.
#[test]
fn every_token_a_relogin_replaces_is_revoked() {
    let stack = stack_with((6, 6), false);
    let mut launcher = Watched::run(&stack, "60s", &[], RECORDER);
    launcher.wait_starts(1);
    // Three logins, the last one settled: every token it replaced revoked.
    // (Stopping while a login is on the wire could abandon the token that
    // login gets: docs/security.md says so.)
    wait_for("three logins", WAIT, || {
        let c = stack.infisical.counters();
        (c.logins >= 3 && c.revocations + 1 == c.logins).then_some(())
    });
    assert_eq!(launcher.stop(), 128 + 15, "{}", launcher.stderr());
    let counters = stack.infisical.counters();
    assert_eq!(
        counters.revocations,
        counters.logins,
        "{counters:?}\n{}",
        launcher.stderr()
    );
    assert_eq!(stack.infisical.live_tokens(), 0);
}

/// SIGTERM while a re-login waits for the agent: the supervisor does not
/// finish the login only to revoke its token; it revokes the current one.
#[test]
fn shutdown_revokes_the_current_token_without_logging_in_again() {
    // The re-login comes 6 s after the first login; the token lives 9 s.
    let stack = stack_with((9, 9), false);
    let mut launcher = Watched::run(&stack, "60s", &[], RECORDER);
    launcher.wait_starts(1);
    assert_eq!(stack.infisical.counters().logins, 1);
    // The re-login asks the agent, which is slow now.
    stack.agent.set_latency(Duration::from_secs(60));
    wait_for("the re-login to ask the agent", WAIT, || {
        (agent_fetches(&stack) >= 2).then_some(())
    });
    assert_eq!(launcher.stop(), 128 + 15, "{}", launcher.stderr());
    let counters = stack.infisical.counters();
    assert_eq!(counters.logins, 1, "logged in again at shutdown");
    assert_eq!(counters.revocations, 1, "{}", launcher.stderr());
    assert_eq!(stack.infisical.live_tokens(), 0);
}

/// `SVID_EXEC_NO_REVOKE` in the environment of a `--watch` deployment is
/// ignored (the flag is for one-shot commands; on the command line it is 78):
/// the supervisor still revokes its token when it stops.
#[test]
fn the_supervisor_revokes_at_shutdown_whatever_its_environment_says() {
    let stack = stack_with((3600, 86_400), false);
    let args = ["run", "--watch", "--", "sh", "-c", RECORDER];
    let mut launcher = Watched::start_with(&stack, &args, |l| {
        l.env("SVID_EXEC_NO_REVOKE", "true");
    });
    launcher.wait_starts(1);
    assert_eq!(launcher.stop(), 128 + 15, "{}", launcher.stderr());
    assert_eq!(stack.infisical.counters().revocations, 1);
    assert_eq!(stack.infisical.live_tokens(), 0);
}

/// SIGTERM while the revoke of a replaced token hangs: the revoke is
/// abandoned with the rest, and made again at shutdown with the current one.
#[test]
fn a_replaced_token_whose_revoke_is_cut_short_is_revoked_at_shutdown() {
    let stack = stack_with((6, 6), false);
    let mut launcher = Watched::run(&stack, "60s", &[], RECORDER);
    launcher.wait_starts(1);
    // The next revoke (of the token the re-login replaces) hangs.
    stack.infisical.fail_next(
        "/api/v1/auth/token/revoke",
        1,
        Fault::Latency(Duration::from_secs(30)),
    );
    wait_for("the re-login", WAIT, || {
        (launcher.stderr().matches("logged in to Infisical").count() >= 2).then_some(())
    });
    assert_eq!(launcher.stop(), 128 + 15, "{}", launcher.stderr());
    let counters = stack.infisical.counters();
    assert_eq!(
        (counters.logins, counters.revocations),
        (2, 2),
        "{}",
        launcher.stderr()
    );
    assert_eq!(stack.infisical.live_tokens(), 0);
}
