//! A one-shot `run` or `write` revokes its access token before the program
//! starts or the command exits (unless `--no-revoke`), a failed revoke is a
//! warning only, and the launcher is hardened from its first instruction: a
//! `write` waiting on the server while it holds the token cannot dump core,
//! and the program gets its core limit and dumpability back.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::stack::Stack;

use super::WAIT;
use crate::util::{as_nobody_if_root, tmpfs_scratch, wait_for, Launcher, Shared};

const REVOKE_ROUTE: &str = "/api/v1/auth/token/revoke";

#[test]
fn run_revokes_its_token_before_the_program_starts() {
    // With --memfd too: the memfds are placed after the revoke, just before exec.
    for extra in [&[][..], &["--memfd"]] {
        let stack = Stack::start();
        let started = stack.dir().join("started");
        let script = format!("touch '{}'; exec sleep 60", started.display());
        let running = Launcher::on(&stack)
            .arg("run")
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .stdout_null()
            .spawn();
        wait_for("the program to start", WAIT, || {
            started.exists().then_some(())
        });
        // The launcher has become the program: its token is gone already.
        let counters = stack.infisical.counters();
        assert_eq!(
            (counters.logins, counters.revocations),
            (1, 1),
            "{extra:?}: {}",
            running.stderr()
        );
        assert_eq!(stack.infisical.live_tokens(), 0);
        running.signal(Signal::SIGKILL);
    }
}

#[test]
fn write_revokes_before_exiting_and_no_revoke_keeps_the_token() {
    let Some(dir) = tmpfs_scratch() else { return };
    let stack = Stack::start();
    let write = |extra: &[&str], env: Option<(&str, &str)>| {
        let mut launcher = Launcher::on(&stack);
        launcher
            .arg("write")
            .args(extra)
            .arg("--dir")
            .arg(dir.path().join("s"))
            .audited();
        if let Some((key, value)) = env {
            launcher.env(key, value);
        }
        launcher.run().expect_code(0);
    };
    write(&[], None);
    assert_eq!(stack.infisical.counters().revocations, 1);
    assert_eq!(stack.infisical.live_tokens(), 0);
    write(&["--no-revoke"], None);
    write(&[], Some(("SVID_EXEC_NO_REVOKE", "true")));
    assert_eq!(stack.infisical.counters().revocations, 1);
    assert_eq!(stack.infisical.live_tokens(), 2, "--no-revoke keeps them");
    // And `run` alike.
    Launcher::on(&stack)
        .args(["run", "--no-revoke", "--", "true"])
        .run()
        .expect_code(0);
    assert_eq!(stack.infisical.live_tokens(), 3);
}

#[test]
fn a_failed_revoke_is_a_warning_and_changes_nothing_else() {
    let stack = Stack::start();
    // The server fails every revoke: the program still runs, with its status.
    stack
        .infisical
        .fail_next(REVOKE_ROUTE, 1000, Fault::Status(503));
    let out = Launcher::on(&stack)
        .args(["run", "--", "sh", "-c", "exit 7"])
        .audited()
        .run();
    out.expect_code(7)
        .expect_stderr("WARN")
        .expect_stderr("could not revoke the access token");
    // The server does not answer the revoke: bounded, then the same.
    let Some(dir) = tmpfs_scratch() else { return };
    let stack = Stack::start();
    stack
        .infisical
        .fail_next(REVOKE_ROUTE, 1, Fault::Latency(Duration::from_secs(120)));
    Launcher::on(&stack)
        .arg("write")
        .arg("--dir")
        .arg(dir.path().join("s"))
        .audited()
        .run()
        .expect_code(0)
        .expect_stderr("could not revoke the access token");
    assert!(dir.path().join("s").join("DATABASE_URL").exists());
}

#[test]
fn a_start_that_fails_after_login_still_revokes() {
    let stack = Stack::start();
    Launcher::on(&stack)
        .args(["run", "--path", "/no/such/folder"])
        .marked_program(stack.dir())
        .audited()
        .run()
        .expect_refused(78, &["no secrets were found"]);
    assert_eq!(stack.infisical.counters().revocations, 1);
    assert_eq!(stack.infisical.live_tokens(), 0);
}

/// A core dump of a one-shot `write` waiting for the server held the token
/// four times. With every limit allowing a core (`ulimit -c unlimited`, a
/// core pattern that writes one into the working directory or hands it to a
/// collector), SIGQUIT, whose default action dumps core, kills it without
/// one: it is not dumpable, from its first instruction.
#[test]
fn a_one_shot_write_holding_its_token_cannot_dump_core() {
    let Some(dir) = tmpfs_scratch() else { return };
    let stack = Stack::start();
    // The listing waits, after the login: the token is in memory.
    stack.infisical.fail_next(
        "/api/v4/secrets",
        1,
        Fault::Latency(Duration::from_secs(120)),
    );
    let cwd = tempfile::tempdir().unwrap();
    let running = Launcher::on(&stack)
        .via(&["sh", "-c", "ulimit -c unlimited; exec \"$@\"", "sh"])
        .current_dir(cwd.path())
        .arg("write")
        .arg("--dir")
        .arg(dir.path().join("s"))
        .spawn();
    wait_for("the login", WAIT, || {
        (stack.infisical.counters().logins == 1).then_some(())
    });
    let pid = running.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    running.signal(Signal::SIGQUIT);
    let out = running.wait();
    assert_eq!(out.status.signal(), Some(Signal::SIGQUIT as i32), "{out:?}");
    assert!(
        !out.status.core_dumped(),
        "svid-exec dumped core while holding its token"
    );
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "a core file was written: {left:?}");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
}

/// What the launcher held back is the program's again after exec: its core
/// limit, and dumpability (shown by the program's /proc entries belonging to
/// its user; the kernel gives a non-dumpable process's /proc files to root).
/// Run as nobody when the tests run as root, so the owner tells.
#[test]
fn the_program_gets_its_core_limit_and_dumpability_back() {
    let Some(via) = as_nobody_if_root(&["sh", "-c", "ulimit -c 4096; exec \"$@\"", "sh"]) else {
        return;
    };
    let stack = Stack::start();
    let shared = Shared::new(&stack);
    let out = Launcher::on(&stack)
        .via(&via)
        .current_dir(shared.path())
        .arg("run")
        .args(shared.flags())
        .args(["--", "sh", "-c", "ulimit -c; stat -c %u /proc/$$/status"])
        .audited()
        .run();
    out.expect_code(0);
    let stdout = out.stdout_text();
    let uid = if nix::unistd::Uid::effective().is_root() {
        65534
    } else {
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    assert_eq!(stdout, format!("4096\n{uid}\n"), "{}", out.stderr);
}
