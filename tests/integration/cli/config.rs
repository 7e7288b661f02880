//! Black-box tests: invalid configuration exits 78 with a message naming the
//! problem and a hint, before anything runs (the child would create a marker
//! file; it must not exist). Log lines are prefixed and honour the format.

use crate::util::{Launcher, Outcome};

/// Runs `svid-exec run <args> -- touch MARKER` with a cleared environment
/// plus `env`, and returns the outcome and whether the marker exists.
fn run_with_marker(args: &[&str], env: &[(&str, &str)]) -> (Outcome, bool) {
    let dir = tempfile::tempdir().unwrap();
    let out = Launcher::new()
        .arg("run")
        .args(args)
        .envs(env.iter().copied())
        .marked_program(dir.path())
        .run();
    let ran = out.ran == Some(true);
    (out, ran)
}

const VALID: &[&str] = &[
    "--identity-id",
    "id-1",
    "--project-id",
    "proj-1",
    "--env",
    "prod",
    "--jwt-file",
    "/nonexistent/jwt",
];

#[test]
fn invalid_values_exit_78_with_message_and_hint_and_no_child() {
    let cases: &[(&[&str], &str)] = &[
        (&["--file-mode", "0999"], "--file-mode"),
        (&["--file-owner", "alice"], "--file-owner"),
        (&["--on-change", "reload"], "--on-change"),
        (&["--stop-signal", "SIGNOPE"], "--stop-signal"),
        (&["--forward-to", "parent"], "--forward-to"),
        (&["--startup-timeout", "soon"], "--startup-timeout"),
        (&["--log-level", "loud"], "--log-level"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--auth-method", "kerberos"], "--auth-method"),
        (&["--path", "/a/../b"], "--path"),
        (&["--audience", ""], "audience"),
        (&["--env-file-refs"], "--env-file-refs needs --files-dir"),
        (&["--no-env"], "delivers nothing"),
        (
            &["--project-slug", "also"],
            "both --project-id and --project-slug",
        ),
        (
            // An address: a name is checked on what it resolves to, at connect time.
            &["--api-url", "http://192.0.2.1"],
            "plain http://",
        ),
        (
            &["--watch", "--on-change", "signal:HUP"],
            "cannot update secrets delivered in the environment",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = VALID.to_vec();
        args.extend_from_slice(extra);
        let (out, ran) = run_with_marker(&args, &[]);
        let err = &out.stderr;
        assert_eq!(out.status.code(), Some(78), "{extra:?}: {err}");
        assert!(
            err.contains(expected),
            "{extra:?}: stderr lacks {expected:?}: {err}"
        );
        assert!(err.starts_with("svid-exec: "), "{extra:?}: {err}");
        assert!(
            err.contains("svid-exec: hint: "),
            "{extra:?}: no hint: {err}"
        );
        assert!(!ran, "{extra:?}: the child ran");
    }
}

#[test]
fn missing_project_environment_or_identity_exits_78_without_running_the_child() {
    let cases: &[(&[&str], &str)] = &[
        (&["--identity-id", "i", "--env", "e"], "no project"),
        (
            &["--identity-id", "i", "--project-id", "p"],
            "no environment",
        ),
        (&["--project-id", "p", "--env", "e"], "machine identity"),
    ];
    for (args, expected) in cases {
        let (out, ran) = run_with_marker(args, &[]);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(!ran);
    }
}

#[test]
fn environment_variables_configure_and_flags_win() {
    // An invalid value from the environment is refused...
    let (out, ran) = run_with_marker(VALID, &[("SVID_EXEC_ON_CHANGE", "explode")]);
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(out.stderr.contains("explode"));
    assert!(!ran);
    // ...and a flag overrides it (the next failure is a different one).
    let mut args = VALID.to_vec();
    args.extend_from_slice(&["--on-change", "none", "--file-mode", "9"]);
    let (out, _) = run_with_marker(&args, &[("SVID_EXEC_ON_CHANGE", "explode")]);
    assert!(!out.stderr.contains("explode"), "{}", out.stderr);
    assert!(out.stderr.contains("--file-mode"), "{}", out.stderr);
    // Comma-separated lists from the environment are split and checked.
    let (out, ran) = run_with_marker(VALID, &[("SVID_EXEC_AUDIENCE", "a,,b")]);
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(!ran);
    // Required options can come from the environment alone.
    let (out, _) = run_with_marker(
        &["--jwt-file", "/nonexistent/jwt", "--file-mode", "9"],
        &[
            ("INFISICAL_MACHINE_IDENTITY_ID", "id"),
            ("INFISICAL_PROJECT_ID", "p"),
            ("INFISICAL_ENVIRONMENT", "prod"),
        ],
    );
    assert!(out.stderr.contains("--file-mode"), "{}", out.stderr);
}

#[test]
fn check_refuses_watch_and_unknown_output_format() {
    let base = [
        "check",
        "--identity-id",
        "i",
        "--project-id",
        "p",
        "--env",
        "e",
    ];
    for (extra, expected) in [
        (["--watch"].as_slice(), "--watch does not apply to check"),
        (["--output", "yaml"].as_slice(), "--output"),
    ] {
        let out = Launcher::new()
            .env_remove("PATH")
            .args(base)
            .args(extra)
            .run();
        assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
        assert!(out.stderr.contains(expected), "{}", out.stderr);
    }
}

#[test]
fn boolean_environment_variables_accept_the_usual_spellings() {
    let check = |value: &str| {
        Launcher::new()
            .env_remove("PATH")
            .args([
                "check",
                "--identity-id",
                "i",
                "--project-id",
                "p",
                "--env",
                "e",
                // With --watch off, check runs: no agent here, fail fast.
                "--startup-timeout",
                "1s",
            ])
            .env("SVID_EXEC_WATCH", value)
            .run()
    };
    for on in ["1", "true", "yes", "on"] {
        let out = check(on);
        assert_eq!(out.status.code(), Some(78), "{on}: {}", out.stderr);
        assert!(
            out.stderr.contains("--watch does not apply to check"),
            "{on}"
        );
    }
    for off in ["0", "false", "no", "off"] {
        let out = check(off);
        assert!(!out.stderr.contains("--watch"), "{off}: {}", out.stderr);
    }
}

/// `--allow-insecure-http` to a non-loopback host logs a warning as soon as
/// logging is up, which shows the log format without needing a server.
fn insecure_warning(extra: &[&str]) -> String {
    let mut args = VALID.to_vec();
    // The missing --jwt-file is waited for: keep that wait short.
    args.extend_from_slice(&[
        "--api-url",
        "http://192.0.2.1",
        "--allow-insecure-http",
        "--startup-timeout",
        "1s",
    ]);
    args.extend_from_slice(extra);
    let (out, ran) = run_with_marker(&args, &[]);
    assert!(!ran, "the child ran without secrets");
    out.stderr
}

#[test]
fn text_log_lines_are_prefixed_and_json_lines_are_objects_and_quiet_hides_warnings() {
    let text = insecure_warning(&[]);
    let line = text
        .lines()
        .find(|l| l.contains("allow-insecure-http"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(line.starts_with("svid-exec:"), "{line}");
    assert!(line.contains("WARN"), "{line}");

    let json = insecure_warning(&["--log-format", "json"]);
    let line = json
        .lines()
        .find(|l| l.contains("allow-insecure-http"))
        .unwrap_or_else(|| panic!("no warning in {json}"));
    let object: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(object["level"], "WARN");
    for line in json.lines() {
        let value: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(
            value.is_ok(),
            "with --log-format json every stderr line is JSON: {line}"
        );
    }

    let quiet = insecure_warning(&["-q"]);
    assert!(
        !quiet.lines().any(|l| l.contains("WARN")),
        "-q still shows warnings: {quiet}"
    );
}
