//! Secrets cannot decide which program runs or what it loads: the program is
//! found in svid-exec's own `PATH` (also when a `PATH` secret is delivered
//! with `--allow-env-name PATH`), and a secret whose delivered name is a
//! loader, shell or interpreter hook is refused (78, naming them all) at
//! start, and on every poll of a supervisor, unless allowed by name.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use svid_exec_testkit::stack::Stack;

use super::WAIT;
use crate::util::{sh_as_nobody_if_root, wait_for, Launcher};
use crate::watch::{set, stack_with, Watched, RECORDER};

/// Plants, as the attacker (nobody, when the tests run as root), an
/// executable `true` in a directory of `base` that the attacker owns, which
/// touches `pwned` when run. Returns that directory.
fn plant_true(base: &Path) -> std::path::PathBuf {
    fs::set_permissions(base, fs::Permissions::from_mode(0o1777)).unwrap();
    let bin = base.join("attacker-bin");
    let pwned = base.join("pwned");
    let script = format!(
        "mkdir '{bin}' && printf '#!/bin/sh\\ntouch {pwned}\\n' > '{bin}/true' && chmod 755 '{bin}/true'",
        bin = bin.display(),
        pwned = pwned.display()
    );
    sh_as_nobody_if_root(&script);
    bin
}

#[test]
fn a_path_secret_does_not_choose_the_program() {
    let stack = Stack::start();
    let base = tempfile::tempdir().unwrap();
    let bin = plant_true(base.path());
    let pwned = base.path().join("pwned");
    let evil_path = format!("{}:/usr/bin:/bin", bin.display());
    set(&stack, "PATH", &evil_path);

    // By default the secret is refused, and nothing runs.
    Launcher::on(&stack)
        .arg("run")
        .marked_program(stack.dir())
        .audited()
        .run()
        .expect_refused(78, &["PATH", "--allow-env-name PATH"]);

    // Allowed, it is delivered as asked, but `true` is still the one on
    // svid-exec's own PATH: the attacker's never runs.
    for watch in [false, true] {
        let mut launcher = Launcher::on(&stack);
        launcher.args(["run", "--allow-env-name", "PATH"]);
        if watch {
            launcher.args(["--watch", "--poll-interval", "60s"]);
        }
        launcher.args(["--", "true"]).audited().run().expect_code(0);
        assert!(
            !pwned.exists(),
            "the attacker's `true` ran (watch: {watch})"
        );
    }
    let out = Launcher::on(&stack)
        .args(["run", "--allow-env-name", "PATH", "--", "env", "-0"])
        .run();
    out.expect_code(0);
    assert_eq!(
        out.child_env().get("PATH").map(Vec::as_slice),
        Some(evil_path.as_bytes())
    );
}

#[test]
fn loader_and_shell_hooks_are_refused_naming_them_all() {
    let stack = Stack::start();
    for (key, value) in [
        ("LD_PRELOAD", "/tmp/x.so"),
        ("BASH_ENV", "/tmp/x.sh"),
        ("NODE_OPTIONS", "--require /tmp/x.js"),
    ] {
        set(&stack, key, value);
    }
    let names = ["BASH_ENV", "LD_PRELOAD", "NODE_OPTIONS"];
    for mode in [&["run"][..], &["run", "--watch"][..]] {
        Launcher::on(&stack)
            .args(mode)
            .marked_program(stack.dir())
            .audited()
            .run()
            .expect_refused(78, &names);
    }
    // Allowed by name (flag or variable), or harmless under a prefix.
    let out = Launcher::on(&stack)
        .args(["run", "--allow-env-name", "LD_PRELOAD", "--allow-env-name"])
        .arg("BASH_ENV")
        .marked_program(stack.dir())
        .run();
    out.expect_refused(78, &["NODE_OPTIONS"]);
    assert!(!out.stderr.contains("LD_PRELOAD"), "{}", out.stderr);
    Launcher::on(&stack)
        .env("SVID_EXEC_ALLOW_ENV_NAMES", names.join(","))
        .arg("run")
        .marked_program(stack.dir())
        .audited()
        .run()
        .expect_ran();
    let out = Launcher::on(&stack)
        .args(["run", "--env-prefix", "APP_", "--", "env", "-0"])
        .run();
    out.expect_code(0);
    assert!(out.child_env().contains_key("APP_LD_PRELOAD"));
    assert!(!out.child_env().contains_key("LD_PRELOAD"));
}

#[test]
fn a_hook_that_appears_later_is_refused_and_the_program_keeps_running() {
    let stack = stack_with((3600, 86_400), false);
    let mut launcher = Watched::run(&stack, "1s", &[], RECORDER);
    launcher.wait_starts(1);
    set(&stack, "LD_PRELOAD", "/tmp/x.so");
    wait_for("the refused poll", WAIT, || {
        launcher.stderr().contains("LD_PRELOAD").then_some(())
    });
    assert_eq!(launcher.starts().len(), 1, "the child was restarted");
    assert_eq!(launcher.stop(), 128 + 15);
    assert!(launcher.stderr().contains("--allow-env-name"));
}
