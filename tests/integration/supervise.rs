//! The supervisor's PID-1 duties, through the real binary (`run --watch --
//! PROGRAM`) against the stand-in stack; mostly ports of tini's test suite:
//! exit codes 0-255 and 128+N (TERM, HUP, QUIT, KILL, SIGRTMIN+3), TERM,
//! USR1 and USR2 forwarded to the child or its group, a group kill reaching a
//! grandchild, orphans reaped as subreaper and as PID 1 of a PID namespace,
//! the child's clean signal state, 126/127 exec failures, an environment too
//! large to exec, and no core dump of the supervisor. Restart and signal on a
//! change, the stop timeout and the sidecar are in `watch`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use svid_exec_testkit::stack::{Stack, ENVIRONMENT, PROJECT_ID};

use crate::util::{alive, as_nobody_if_root, proc_state, wait_for, Shared};
use crate::watch::{stack_with, Watched, WAIT};

/// A supervisor's poll interval no test here waits for.
const NO_POLL: &str = "60s";

/// `run --watch -- PROGRAM…` against `stack`, started through `via` (a
/// wrapper that ends by running its arguments) unless that is empty.
fn supervise(stack: &Stack, via: &[&str], program: &[&str]) -> Watched {
    let mut args = vec!["run", "--watch", "--poll-interval", NO_POLL, "--"];
    args.extend_from_slice(program);
    Watched::start_with(stack, &args, |launcher| {
        if !via.is_empty() {
            launcher.via(via);
        }
    })
}

#[test]
fn exit_codes_pass_through() {
    let stack = stack_with((3600, 86_400), false);
    let codes = [0, 1, 2, 42, 77, 126, 127, 128, 143, 200, 255];
    for n in codes {
        let mut launcher = Watched::run(&stack, NO_POLL, &[], &format!("exit {n}"));
        assert_eq!(launcher.finish(), n, "{}", launcher.stderr());
    }
    // The child ending on its own also ends svid-exec, which revokes its token.
    assert_eq!(stack.infisical.counters().revocations, codes.len() as u64);
}

#[test]
fn a_signalled_child_exits_128_plus_n() {
    let stack = stack_with((3600, 86_400), false);
    for (name, n) in [("TERM", 15), ("HUP", 1), ("QUIT", 3), ("KILL", 9)] {
        let mut launcher = Watched::run(&stack, NO_POLL, &[], &format!("kill -{name} $$"));
        assert_eq!(
            launcher.finish(),
            128 + n,
            "SIG{name}: {}",
            launcher.stderr()
        );
    }
}

/// `SIGRTMIN+3` on this libc (glibc reserves two real-time signals, so
/// usually 37): docker's STOPSIGNAL for systemd images.
fn rtmin_plus_3() -> i32 {
    nix::libc::SIGRTMIN() + 3
}

#[test]
fn a_child_killed_by_a_real_time_signal_exits_128_plus_its_number() {
    let n = rtmin_plus_3();
    let stack = stack_with((3600, 86_400), false);
    let mut launcher = Watched::run(&stack, NO_POLL, &[], &format!("kill -{n} $$"));
    assert_eq!(
        launcher.finish(),
        128 + n,
        "SIGRTMIN+3 ({n}): {}",
        launcher.stderr()
    );
}

#[test]
fn a_forwarded_real_time_signal_that_kills_the_child_exits_128_plus_n() {
    // No name in nix's enum, so it is sent by number; the child dies of it
    // (default action).
    let n = rtmin_plus_3();
    let stack = stack_with((3600, 86_400), false);
    let script = "echo \"$$ -\" >> \"$D/starts\"; while :; do sleep 0.1; done";
    let mut launcher = Watched::run(&stack, NO_POLL, &[], script);
    launcher.wait_starts(1);
    launcher.signal_number(n);
    assert_eq!(launcher.finish(), 128 + n, "{}", launcher.stderr());
    assert_eq!(stack.infisical.counters().revocations, 1);
}

#[test]
fn term_usr1_usr2_are_forwarded_to_the_child() {
    let stack = stack_with((3600, 86_400), false);
    for (signal, name) in [
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGTERM, "TERM"),
    ] {
        for forward in ["group", "child"] {
            let script = format!(
                "echo \"$$ -\" >> \"$D/starts\"; trap 'echo {name} > \"$D/got\"; exit 7' {name}; \
                 while :; do sleep 0.1; done"
            );
            let mut launcher = Watched::run(&stack, NO_POLL, &["--forward-to", forward], &script);
            launcher.wait_starts(1);
            launcher.signal(signal);
            assert_eq!(launcher.finish(), 7, "{name} to {forward}");
            assert_eq!(launcher.wait_file("got").trim(), name);
        }
    }
}

#[test]
fn group_forwarding_reaches_a_grandchild_and_child_forwarding_does_not() {
    let stack = stack_with((3600, 86_400), false);
    // The default (group), the same asked for, and the child alone.
    let cases: [(&[&str], bool); 3] = [
        (&[], true),
        (&["--forward-to", "group"], true),
        (&["--forward-to", "child"], false),
    ];
    for (forward, grandchild_dies) in cases {
        // The child handles USR1 itself; its background grandchild has the
        // default action (terminate), so only a group-wide signal kills it.
        let script = "sleep 60 & echo $! > \"$D/gc\"; echo \"$$ -\" >> \"$D/starts\"; \
             trap 'echo got > \"$D/usr1\"' USR1; while :; do sleep 0.1; done";
        let mut launcher = Watched::run(&stack, NO_POLL, forward, script);
        launcher.wait_starts(1);
        let gc: i32 = launcher.wait_file("gc").trim().parse().unwrap();
        launcher.signal(Signal::SIGUSR1);
        launcher.wait_file("usr1");
        if grandchild_dies {
            wait_for("the grandchild to die", WAIT, || (!alive(gc)).then_some(()));
        } else {
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                matches!(proc_state(gc), Some('S' | 'R')),
                "the grandchild should live with {forward:?}"
            );
            let _ = Command::new("kill").arg(gc.to_string()).status();
        }
        assert_eq!(launcher.stop(), 128 + 15, "{forward:?}");
    }
}

#[test]
fn an_orphaned_grandchild_is_reaped_by_the_subreaper() {
    // The subshell starts `sleep` and exits at once: the sleep is orphaned and
    // must be re-parented to the supervisor ($PPID), which must reap it when
    // it ends.
    let script = "(sleep 0.5 & echo $! > \"$D/orphan\"); o=$(cat \"$D/orphan\"); \
         grep '^PPid:' /proc/$o/status > \"$D/ppid\"; sleep 2; \
         if [ -e /proc/$o ]; then cat /proc/$o/stat > \"$D/left\"; exit 1; fi; exit 0";
    let stack = stack_with((3600, 86_400), false);
    let mut launcher = Watched::run(&stack, NO_POLL, &[], script);
    let supervisor_pid = launcher.pid();
    let ppid = launcher.wait_file("ppid");
    let code = launcher.finish();
    assert_eq!(
        ppid.split_whitespace().nth(1),
        Some(supervisor_pid.to_string().as_str()),
        "the orphan was not re-parented to the supervisor"
    );
    assert_eq!(
        code,
        0,
        "the orphan was not reaped ({:?}); stderr:\n{}",
        fs::read_to_string(launcher.path("left")).ok(),
        launcher.stderr()
    );
}

/// The user + PID namespaces a container runtime would give: the supervisor
/// runs as PID 1 in them.
const PID_NAMESPACE: &[&str] = &[
    "unshare",
    "--user",
    "--map-root-user",
    "--pid",
    "--fork",
    "--mount-proc",
];

/// Whether this machine lets this user create user + PID namespaces.
fn pid_namespaces_available() -> bool {
    Command::new(PID_NAMESPACE[0])
        .args(&PID_NAMESPACE[1..])
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn as_pid_1_orphans_are_reaped_and_the_exit_code_passes_through() {
    if !pid_namespaces_available() {
        eprintln!("skipped: needs user + PID namespaces (unshare)");
        return;
    }
    let script = "(sleep 0.5 & echo $! > \"$D/orphan\"); o=$(cat \"$D/orphan\"); \
         grep '^PPid:' /proc/$o/status > \"$D/ppid\"; echo $PPID > \"$D/parent\"; sleep 2; \
         if [ -e /proc/$o ]; then exit 1; fi; exit 42";
    let stack = stack_with((3600, 86_400), false);
    let mut launcher = supervise(&stack, PID_NAMESPACE, &["sh", "-c", script]);
    let ppid = launcher.wait_file("ppid");
    let parent = launcher.wait_file("parent");
    let code = launcher.finish();
    assert_eq!(parent.trim(), "1", "the supervisor runs as PID 1");
    assert_eq!(ppid.split_whitespace().nth(1), Some("1"));
    assert_eq!(code, 42, "stderr:\n{}", launcher.stderr());
}

#[test]
fn the_child_starts_with_a_clean_signal_mask_and_default_dispositions() {
    // Start the supervisor with HUP and INT ignored (as `nohup` would) to show
    // the child does not inherit that, nor the supervisor's blocked mask.
    let stack = stack_with((3600, 86_400), false);
    let mut launcher = supervise(
        &stack,
        &["sh", "-c", "trap '' HUP INT; exec \"$@\"", "sh"],
        &["cat", "/proc/self/status"],
    );
    let (code, out) = launcher.finish_output();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "stderr:\n{}", launcher.stderr());
    for field in ["SigBlk", "SigIgn"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in:\n{out}"));
        let mask = line.split_whitespace().nth(1).unwrap();
        assert!(mask.chars().all(|c| c == '0'), "{line}");
    }
}

/// The soft core-size limit in a `/proc/PID/limits` text.
fn soft_core_limit(limits: &str) -> String {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in:\n{limits}"));
    line.split_whitespace().nth(4).unwrap().to_owned()
}

/// The supervisor holds the secrets: it must not dump core (soft
/// `RLIMIT_CORE` 0) nor be dumpable (`PR_SET_DUMPABLE` 0, which also keeps
/// other processes of its user from reading its memory). The kernel shows a
/// process that is not dumpable by giving its /proc entries to root, which
/// only shows when it runs as another user: as root, the supervisor is run
/// as `nobody` (through setpriv, with copies of the JWT and CA it can read).
/// Its child gets back the core limit the supervisor started with, and is
/// dumpable again after exec.
#[test]
fn the_supervisor_cannot_dump_core_but_its_child_keeps_its_core_limit() {
    let Some(via) = as_nobody_if_root(&["sh", "-c", "ulimit -c 4096; exec \"$@\"", "sh"]) else {
        return;
    };
    let stack = stack_with((3600, 86_400), false);
    // What the supervisor and its child may read and write as nobody.
    let shared = Shared::new(&stack);
    let out = shared.path().join("out");
    let script = format!(
        "cat /proc/self/limits > '{o}.limits' && echo $$ > '{o}.pid' && exec sleep 120",
        o = out.display()
    );
    let flags = shared.flags();
    let mut args = vec!["run", "--watch", "--poll-interval", NO_POLL];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", &script]);
    let mut launcher = Watched::start_with(&stack, &args, |launcher| {
        launcher.via(&via).current_dir(shared.path());
    });
    let child: i32 = wait_for("the child", WAIT, || {
        fs::read_to_string(out.with_extension("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let supervisor = launcher.pid();
    let supervisor_limits = fs::read_to_string(format!("/proc/{supervisor}/limits")).unwrap();
    let owner = |pid: i32| fs::metadata(format!("/proc/{pid}/status")).unwrap().uid();
    let (supervisor_owner, child_owner) = (owner(supervisor), owner(child));
    let child_limits = fs::read_to_string(out.with_extension("limits")).unwrap();
    assert_eq!(launcher.stop(), 128 + 15, "{}", launcher.stderr());

    assert_eq!(
        soft_core_limit(&supervisor_limits),
        "0",
        "{supervisor_limits}"
    );
    assert_ne!(
        soft_core_limit(&child_limits),
        "0",
        "the child's core limit was not restored:\n{child_limits}"
    );
    assert_ne!(child_owner, 0, "the child runs as another user than root");
    assert_eq!(
        supervisor_owner, 0,
        "the supervisor is dumpable: its /proc entries belong to its user"
    );
}

#[test]
fn exec_failures_exit_127_not_found_and_126_not_executable() {
    let stack = stack_with((3600, 86_400), false);
    let run = |program: &str| {
        let mut launcher = supervise(&stack, &[], &[program]);
        (launcher.finish(), launcher.stderr())
    };
    let (code, err) = run("/nonexistent/svid-exec-test-cmd");
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/nonexistent/svid-exec-test-cmd"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let (code, err) = run(script.to_str().unwrap());
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("not-executable"), "{err}");
}

#[test]
fn an_environment_too_large_to_exec_exits_78_like_exec_mode() {
    // One variable longer than MAX_ARG_STRLEN (32 pages), which execve would
    // refuse with E2BIG: refused before the child is started.
    let stack = stack_with((3600, 86_400), false);
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "BIG", &"x".repeat(200_000));
    let script = "echo \"$$ -\" >> \"$D/starts\"";
    let mut launcher = Watched::run(&stack, NO_POLL, &[], script);
    let code = launcher.finish();
    let err = launcher.stderr();
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("BIG"), "{err}");
    assert!(err.contains("--files-dir"), "{err}");
    assert!(!err.contains("xxxx"), "no secret value in the log");
    assert!(launcher.starts().is_empty(), "the child was started");
}
