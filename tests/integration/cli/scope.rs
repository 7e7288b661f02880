//! Where options apply (`src/cli/scope.rs`), through the real binary: a flag
//! given where it cannot apply is exit 78 naming where it does, before
//! anything runs; the same option from its variable is ignored (a debug line
//! says so), so one environment serves `run`, `write` and `check`, including
//! `SVID_EXEC_WATCH=true` for `check`; `--dir` and `--files-dir` are one
//! option for every command.

use svid_exec_testkit::stack::Stack;

use super::VALID;
use crate::util::{tmpfs_scratch, Launcher};

/// Flags where they cannot apply, as a table: the command line, and the
/// message naming where the flag applies.
#[test]
fn a_flag_where_it_cannot_apply_is_78_naming_where_it_applies() {
    let table: &[(&[&str], &str)] = &[
        (
            &["write", "--dir", "/run/s", "--env-file-refs"],
            "--env-file-refs does not apply to write (only to run)",
        ),
        (
            &["write", "--dir", "/run/s", "--env-prefix", "APP_"],
            "--env-prefix does not apply to write (only to run)",
        ),
        (
            &["write", "--dir", "/run/s", "--no-override"],
            "--no-override does not apply to write (only to run)",
        ),
        (
            &["write", "--dir", "/run/s", "--stop-signal", "QUIT"],
            "--stop-signal does not apply to write (only to run --watch)",
        ),
        (
            &["write", "--watch", "--dir", "/run/s", "--on-change", "signal:HUP"],
            "--on-change does not apply to write (only to run --watch)",
        ),
        (
            &["write", "--dir", "/run/s", "--poll-interval", "5s"],
            "--poll-interval does not apply to write without --watch (only to run --watch or write --watch)",
        ),
        (
            &["run", "--poll-interval", "5s", "--", "true"],
            "--poll-interval does not apply to run without --watch",
        ),
        (
            &["run", "--watch-interval", "5s", "--", "true"],
            "--poll-interval does not apply to run without --watch",
        ),
        (
            &["run", "--on-change", "none", "--", "true"],
            "--on-change does not apply to run without --watch (only to run --watch)",
        ),
        (
            &["run", "--mlock", "--", "true"],
            "--mlock does not apply to run without --watch",
        ),
        (
            &["check", "--stop-timeout", "5s"],
            "--stop-timeout does not apply to check (only to run --watch)",
        ),
        (
            &["write", "--dir", "/run/s", "--allow-env-name", "PATH"],
            "--allow-env-name does not apply to write (only to run)",
        ),
        (
            &["run", "--watch", "--no-revoke", "--", "true"],
            "--no-revoke does not apply to run --watch (only to run without --watch or write without --watch)",
        ),
        (
            &["write", "--watch", "--dir", "/run/s", "--no-revoke"],
            "--no-revoke does not apply to write --watch",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in table {
        let (command, rest) = args.split_first().unwrap();
        let mut launcher = Launcher::new();
        launcher.env_remove("PATH").arg(command).args(VALID);
        // `run`'s program goes after `--`; put the marker program there.
        let out = if *command == "run" {
            let (before, _) = rest.split_at(rest.iter().position(|a| *a == "--").unwrap());
            launcher.args(before).marked_program(dir.path()).run()
        } else {
            launcher.args(rest).run()
        };
        assert_eq!(out.code(), 78, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("svid-exec: hint: "), "{args:?}");
        assert_ne!(out.ran, Some(true), "{args:?}: the program ran");
    }
}

/// The same options from the environment are ignored where they cannot
/// apply: `write` writes its files although the environment also configures
/// `run --watch` (with values that would be refused there), and says so at
/// debug level.
#[test]
fn variables_that_cannot_apply_are_ignored_with_a_debug_line() {
    let Some(shm) = tmpfs_scratch() else { return };
    let stack = Stack::start();
    let dir = shm.path().join("secrets");
    let out = Launcher::on(&stack)
        .envs([
            ("SVID_EXEC_ENV_PREFIX", "APP_"),
            ("SVID_EXEC_ENV_FILE_REFS", "true"),
            ("SVID_EXEC_NO_ENV", "true"),
            ("SVID_EXEC_STOP_SIGNAL", "NOT-A-SIGNAL"),
            ("SVID_EXEC_ON_CHANGE", "explode"),
            ("SVID_EXEC_POLL_INTERVAL", "never"),
        ])
        .args(["write", "--log-level", "debug", "--dir"])
        .arg(&dir)
        .audited()
        .run();
    out.expect_code(0);
    assert!(dir.join("DATABASE_URL").exists(), "{}", out.stderr);
    for expected in [
        "SVID_EXEC_ENV_PREFIX (--env-prefix) does not apply to write (only to run); ignored",
        "SVID_EXEC_STOP_SIGNAL (--stop-signal) does not apply to write (only to run --watch); ignored",
        "SVID_EXEC_POLL_INTERVAL (--poll-interval) does not apply to write without --watch",
    ] {
        out.expect_stderr(expected);
    }
    assert!(
        out.stderr
            .lines()
            .filter(|l| l.contains("; ignored"))
            .all(|l| l.contains("DEBUG")),
        "{}",
        out.stderr
    );

    // `run` without --watch, with the supervisor's variables set.
    let out = Launcher::on(&stack)
        .envs([
            ("SVID_EXEC_STOP_SIGNAL", "NOT-A-SIGNAL"),
            ("SVID_EXEC_POLL_INTERVAL", "never"),
            ("SVID_EXEC_MLOCK", "true"),
        ])
        .arg("run")
        .marked_program(stack.dir())
        .run();
    out.expect_ran();
}

/// `check` takes the environment a `run --watch` deployment has, and checks
/// the supervisor's settings in it.
#[test]
fn check_takes_the_environment_of_a_watch_deployment() {
    let stack = Stack::start();
    let out = Launcher::on(&stack)
        .envs([
            ("SVID_EXEC_WATCH", "true"),
            ("SVID_EXEC_STOP_SIGNAL", "QUIT"),
            ("SVID_EXEC_POLL_INTERVAL", "5m"),
        ])
        .arg("check")
        .audited()
        .run();
    out.expect_code(0);
    let before = stack.infisical.requests().len();
    let out = Launcher::on(&stack)
        .envs([
            ("SVID_EXEC_WATCH", "true"),
            ("SVID_EXEC_STOP_SIGNAL", "NOPE"),
        ])
        .arg("check")
        .run();
    out.expect_code(78)
        .expect_stderr("SVID_EXEC_STOP_SIGNAL (--stop-signal): \"NOPE\" is not a signal");
    assert_eq!(
        stack.infisical.requests().len(),
        before,
        "an invalid configuration made a request"
    );
}

/// `--dir` and `--files-dir` are one option: `run --dir`, `check --dir` and
/// `write --files-dir` all work.
#[test]
fn dir_and_files_dir_are_accepted_by_every_command() {
    let Some(shm) = tmpfs_scratch() else { return };
    let stack = Stack::start();
    for (i, (command, flag)) in [
        ("run", "--dir"),
        ("run", "--files-dir"),
        ("write", "--files-dir"),
        ("write", "--dir"),
        ("check", "--dir"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = shm.path().join(format!("s{i}"));
        let mut launcher = Launcher::on(&stack);
        launcher.args([command, flag]).arg(&dir);
        if command == "run" {
            launcher
                .args(["--", "test", "-f"])
                .arg(dir.join("GREETING"));
        }
        let out = launcher.run();
        out.expect_code(0);
        if command != "check" {
            assert!(dir.join("GREETING").exists(), "{command} {flag}");
        }
    }
}
