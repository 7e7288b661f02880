//! Black-box tests of the command-line surface that need no server: every
//! contract flag and environment variable in `--help`, the Infisical CLI's
//! aliases, the EXIT STATUS section, `--version` of every command, usage
//! errors exit 2 (and `run` without `--` says where it goes), and shell
//! completions.

use std::process::Command;

use crate::util::{Launcher, Outcome};

/// Runs the binary with a cleared environment (so the developer's own
/// `INFISICAL_*` cannot leak into the test).
fn svid_exec(args: &[&str]) -> Outcome {
    Launcher::new().args(args).run()
}

/// Every flag of the contract with its environment variable (None: no variable).
const CONTRACT: &[(&str, Option<&str>)] = &[
    ("--api-url", Some("INFISICAL_API_URL")),
    (
        "--allow-insecure-http",
        Some("SVID_EXEC_ALLOW_INSECURE_HTTP"),
    ),
    ("--identity-id", Some("INFISICAL_MACHINE_IDENTITY_ID")),
    ("--auth-method", Some("INFISICAL_AUTH_METHOD")),
    ("--organization-slug", Some("INFISICAL_ORGANIZATION_SLUG")),
    ("--audience", Some("SVID_EXEC_AUDIENCE")),
    ("--spiffe-id", Some("SVID_EXEC_SPIFFE_ID")),
    ("--workload-api-socket", Some("SPIFFE_ENDPOINT_SOCKET")),
    ("--jwt-file", Some("SVID_EXEC_JWT_FILE")),
    ("--ca-cert", Some("SVID_EXEC_CA_CERT")),
    ("--ca-cert-only", Some("SVID_EXEC_CA_CERT_ONLY")),
    ("--startup-timeout", Some("SVID_EXEC_STARTUP_TIMEOUT")),
    ("--no-revoke", Some("SVID_EXEC_NO_REVOKE")),
    ("--project-id", Some("INFISICAL_PROJECT_ID")),
    ("--project-slug", Some("INFISICAL_PROJECT_SLUG")),
    ("--env", Some("INFISICAL_ENVIRONMENT")),
    ("--path", Some("INFISICAL_SECRET_PATH")),
    ("--recursive", Some("SVID_EXEC_RECURSIVE")),
    ("--no-imports", Some("SVID_EXEC_NO_IMPORTS")),
    ("--no-expand", Some("SVID_EXEC_NO_EXPAND")),
    ("--tag", Some("SVID_EXEC_TAGS")),
    ("--require", Some("SVID_EXEC_REQUIRE")),
    ("--allow-empty", Some("SVID_EXEC_ALLOW_EMPTY")),
    ("--no-env", Some("SVID_EXEC_NO_ENV")),
    ("--env-prefix", Some("SVID_EXEC_ENV_PREFIX")),
    ("--no-override", Some("SVID_EXEC_NO_OVERRIDE")),
    ("--files-dir", Some("SVID_EXEC_FILES_DIR")),
    ("--dotenv-file", Some("SVID_EXEC_DOTENV_FILE")),
    ("--json-file", Some("SVID_EXEC_JSON_FILE")),
    ("--file-mode", Some("SVID_EXEC_FILE_MODE")),
    ("--file-owner", Some("SVID_EXEC_FILE_OWNER")),
    ("--allow-non-tmpfs", Some("SVID_EXEC_ALLOW_NON_TMPFS")),
    ("--env-file-refs", Some("SVID_EXEC_ENV_FILE_REFS")),
    ("--allow-env-name", Some("SVID_EXEC_ALLOW_ENV_NAMES")),
    ("--watch", Some("SVID_EXEC_WATCH")),
    ("--poll-interval", Some("SVID_EXEC_POLL_INTERVAL")),
    ("--on-change", Some("SVID_EXEC_ON_CHANGE")),
    ("--stop-signal", Some("SVID_EXEC_STOP_SIGNAL")),
    ("--stop-timeout", Some("SVID_EXEC_STOP_TIMEOUT")),
    ("--forward-to", Some("SVID_EXEC_FORWARD_TO")),
    ("--mlock", Some("SVID_EXEC_MLOCK")),
    ("--ready-file", Some("SVID_EXEC_READY_FILE")),
    ("--log-format", Some("SVID_EXEC_LOG_FORMAT")),
    ("--log-level", Some("SVID_EXEC_LOG_LEVEL")),
    ("--quiet", None),
    ("--only", Some("SVID_EXEC_ONLY")),
    ("--map", Some("SVID_EXEC_MAP")),
];

/// The Infisical CLI's spellings (contract, "Compatibility with the Infisical
/// CLI") and the option each stands for.
const ALIASES: &[(&str, &str)] = &[
    ("--projectId", "--project-id"),
    ("--domain", "--api-url"),
    ("--tags", "--tag"),
    ("--watch-interval", "--poll-interval"),
    ("--silent", "--quiet"),
    ("--dir", "--files-dir"),
];

#[test]
fn run_help_lists_every_contract_flag_with_its_environment_variable() {
    let out = svid_exec(&["run", "--help"]);
    assert!(out.status.success(), "{}", out.stderr);
    let help = out.stdout_text();
    for (flag, env) in CONTRACT {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "run --help lacks {flag}"
        );
        if let Some(env) = env {
            assert!(
                help.contains(&format!("[env: {env}=")),
                "run --help lacks {env}"
            );
        }
    }
    assert!(help.contains("-q, --quiet"));
    for (alias, _) in ALIASES {
        assert!(
            help.contains(&format!("[aliases: {alias}]"))
                || help.contains(&format!("[alias: {alias}]")),
            "run --help does not show the alias {alias}"
        );
    }
    assert!(help.contains("EXIT STATUS"));
    assert!(help.contains("a missing required option"));
    for code in ["69", "70", "77", "78", "126", "127"] {
        assert!(
            help.contains(&format!("  {code} ")),
            "exit status {code} not documented"
        );
    }
}

#[test]
fn write_help_names_dir_and_check_help_names_output() {
    let write = svid_exec(&["write", "--help"]).stdout_text();
    assert!(write.contains("--dir <DIR>"));
    assert!(write.contains("[env: SVID_EXEC_FILES_DIR="));
    let check = svid_exec(&["check", "--help"]).stdout_text();
    assert!(check.contains("--output <FORMAT>"));
    assert!(check.contains("EXIT STATUS"));
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["run", "--no-such-flag", "--", "true"],
        &[
            "run",
            "--identity-id",
            "i",
            "--project-id",
            "p",
            "--env",
            "e",
        ],
        &["completions"],
        &["completions", "tcsh"],
    ];
    for args in cases {
        let out = svid_exec(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

#[test]
fn a_program_without_dashes_before_it_is_a_usage_error_saying_where_they_go() {
    for (args, typed) in [
        (&["run", "env"][..], "env"),
        (
            &["run", "--env", "prod", "env", "-i", "A=1"][..],
            "env -i A=1",
        ),
        (&["run", "--watch", "printenv", "HOME"][..], "printenv HOME"),
    ] {
        let out = svid_exec(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        let expected =
            format!("error: put -- before the program: svid-exec run [OPTIONS] -- {typed}\n");
        assert!(
            out.stderr.starts_with(&expected),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn every_command_prints_the_tools_version_with_commit_and_features() {
    let top = svid_exec(&["--version"]);
    assert!(top.status.success());
    let version = top.stdout_text();
    assert!(
        version.starts_with(&format!("svid-exec {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(version.contains(", features: "), "{version}");
    for command in ["run", "write", "check", "completions", "man"] {
        for flag in ["-V", "--version"] {
            let out = svid_exec(&[command, flag]);
            assert!(out.status.success(), "{command} {flag}: {}", out.stderr);
            assert_eq!(out.stdout_text(), version, "{command} {flag}");
        }
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef svid-exec"),
        ("fish", "complete -c svid-exec"),
    ] {
        let out = svid_exec(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", out.stderr);
        let script = out.stdout_text();
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        assert!(
            script.contains("identity-id"),
            "{shell} script lacks the flags"
        );
        assert!(
            script.contains("on-change"),
            "{shell} script lacks the flags"
        );
    }
}

#[test]
fn bash_completion_script_is_valid_bash() {
    let out = svid_exec(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svid-exec.bash");
    std::fs::write(&file, &out.stdout).unwrap();
    let Ok(check) = Command::new("bash").arg("-n").arg(&file).output() else {
        eprintln!("bash is not installed; skipping the syntax check");
        return;
    };
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn completions_to_an_unwritable_stdout_fail_with_a_message_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("/dev/full is not available; skipping");
        return;
    };
    let out = Launcher::new()
        .env_remove("PATH")
        .args(["completions", "bash"])
        .stdout_to(full)
        .run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(70), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert!(!err.contains("internal error at"), "panicked: {err}");
}

#[test]
fn man_prints_one_roff_page_with_every_command_and_its_environment_variables() {
    let out = Launcher::new().env_remove("PATH").arg("man").run();
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH svid-exec 1"),
        "{page}"
    );
    for needle in [
        "SVID-EXEC RUN",
        "SVID-EXEC WRITE",
        "SVID-EXEC CHECK",
        "\\-\\-files\\-dir",
        "SPIFFE_ENDPOINT_SOCKET",
        "EXIT STATUS",
    ] {
        assert!(page.contains(needle), "man page lacks {needle}");
    }
}

#[test]
fn man_puts_exit_status_in_a_section_of_its_own_with_ready_codes_and_no_extra_heading() {
    let out = svid_exec(&["man"]);
    let page = out.stdout_text();
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    assert!(!page.contains(".SH EXTRA"), "an EXTRA heading is left");
    assert!(page.contains("SVID-EXEC READY"), "no ready command");
    let exit_status = &page[page.find(".SH \"EXIT STATUS\"").unwrap()..];
    for code in ["\\fB69\\fR", "\\fB78\\fR", "\\fB127\\fR", "svid-exec ready"] {
        assert!(
            exit_status.contains(code),
            "EXIT STATUS lacks {code}:\n{exit_status}"
        );
    }
}

/// Shells complete the options that take one of a few words with those
/// words, and free-text values with nothing (not with file names), while the
/// parser still takes any word so a wrong one is 78 with a hint.
#[test]
fn completions_offer_the_values_of_auth_method_and_log_format_not_file_names() {
    let bash = svid_exec(&["completions", "bash"]).stdout_text();
    for (flag, words) in [
        ("--auth-method", "oidc-auth jwt-auth spiffe-auth"),
        ("--log-format", "text json"),
        ("--log-level", "error warn info debug trace"),
    ] {
        let arm = bash
            .split(&format!("{flag})"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {flag} in the bash script"));
        let arm = &arm[..arm.find(";;").unwrap()];
        assert!(
            arm.contains(&format!("compgen -W \"{words}\"")),
            "{flag}: {arm}"
        );
    }
    let identity = bash.split("--identity-id)").nth(1).unwrap();
    let identity = &identity[..identity.find(";;").unwrap()];
    assert!(
        !identity.contains("compgen -f"),
        "file names for --identity-id: {identity}"
    );
    let zsh = svid_exec(&["completions", "zsh"]).stdout_text();
    assert!(
        zsh.contains(":METHOD:(oidc-auth jwt-auth spiffe-auth)"),
        "zsh"
    );
    assert!(zsh.contains(":FORMAT:(text json)"), "zsh");
    let fish = svid_exec(&["completions", "fish"]).stdout_text();
    assert!(
        fish.contains("-l auth-method") && fish.contains("spiffe-auth"),
        "fish"
    );

    let wrong = svid_exec(&[
        "run",
        "--identity-id",
        "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
        "--project-id",
        "p",
        "--env",
        "prod",
        "--auth-method",
        "kerberos",
        "--",
        "true",
    ]);
    assert_eq!(wrong.code(), 78, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("kerberos"), "{}", wrong.stderr);
    assert!(wrong.stderr.contains("hint:"), "{}", wrong.stderr);
}
