//! Black-box tests: invalid configuration exits 78 with a message naming the
//! problem, where its value came from (flag or variable) and a hint, before
//! anything runs (the child would create a marker file; it must not exist)
//! and, where a stand-in stack is up, before any request reaches it. Every
//! problem of one configuration is reported in one run. Log lines are
//! prefixed and honour the format.

use svid_exec_testkit::stack::{Stack, OIDC_IDENTITY, PROJECT_ID, PROJECT_SLUG};

use super::VALID;
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

/// Asserts that neither the agent nor Infisical was asked anything.
#[track_caller]
fn assert_no_network_call(stack: &Stack) {
    let requests = stack.infisical.requests();
    assert!(requests.is_empty(), "Infisical was called: {requests:?}");
    let calls = stack.agent.calls();
    assert!(calls.is_empty(), "the Workload API was called: {calls:?}");
}

#[test]
fn invalid_values_exit_78_with_message_and_hint_and_no_child() {
    let cases: &[(&[&str], &str)] = &[
        (&["--file-mode", "0999"], "--file-mode"),
        (&["--file-owner", "alice"], "--file-owner"),
        (&["--watch", "--on-change", "reload"], "--on-change"),
        (&["--watch", "--stop-signal", "SIGNOPE"], "--stop-signal"),
        (&["--watch", "--forward-to", "parent"], "--forward-to"),
        (&["--startup-timeout", "soon"], "--startup-timeout"),
        (&["--log-level", "loud"], "--log-level"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--auth-method", "kerberos"], "--auth-method"),
        (&["--path", "/a/../b"], "--path"),
        (&["--audience", ""], "audience"),
        (&["--env-file-refs"], "--env-file-refs needs --files-dir"),
        (&["--no-env"], "delivers nothing"),
        (&["--map", "NOEQUALS"], "--map: \"NOEQUALS\" is not SRC=DST"),
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
fn with_nothing_set_every_missing_value_is_reported_in_one_run_before_any_request() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    // The stack's environment minus identity, project and environment.
    let mut launcher = Launcher::on(&stack);
    for name in [
        "INFISICAL_MACHINE_IDENTITY_ID",
        "INFISICAL_PROJECT_ID",
        "INFISICAL_ENVIRONMENT",
    ] {
        launcher.env_remove(name);
    }
    let out = launcher.arg("run").marked_program(dir.path()).run();
    out.expect_refused(
        78,
        &[
            "svid-exec: invalid configuration (3 problems)",
            "svid-exec: 1) no machine identity ID: neither --identity-id nor INFISICAL_MACHINE_IDENTITY_ID is set",
            "svid-exec: 2) no project: none of --project-id, INFISICAL_PROJECT_ID, --project-slug, INFISICAL_PROJECT_SLUG is set",
            "svid-exec: 3) no environment: neither --env nor INFISICAL_ENVIRONMENT is set",
        ],
    );
    assert_eq!(
        out.stderr.matches("svid-exec: hint: ").count(),
        3,
        "one hint per problem:\n{}",
        out.stderr
    );
    assert_no_network_call(&stack);
}

#[test]
fn ids_that_are_not_uuids_are_78_before_any_request() {
    let stack = Stack::start();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--identity-id", "billing-identity"],
            &[
                "--identity-id: \"billing-identity\" is not a machine identity ID (a UUID",
                "hint: copy the identity's ID from Infisical",
            ],
        ),
        (
            &["--project-id", PROJECT_SLUG],
            &[
                "--project-id: \"billing\" is not a project ID (a UUID",
                "hint: did you mean --project-slug billing?",
            ],
        ),
        (
            &["--projectId", "not-a-uuid"],
            &["--project-id: \"not-a-uuid\" is not a project ID"],
        ),
    ];
    for (args, expected) in cases {
        let out = Launcher::on(&stack)
            .arg("run")
            .args(*args)
            .marked_program(stack.dir())
            .run();
        out.expect_refused(78, expected);
        assert_no_network_call(&stack);
    }
    // From the environment, the message names the variable.
    let out = Launcher::on(&stack)
        .env("INFISICAL_MACHINE_IDENTITY_ID", "my-identity")
        .arg("run")
        .marked_program(stack.dir())
        .run();
    out.expect_refused(
        78,
        &["INFISICAL_MACHINE_IDENTITY_ID (--identity-id): \"my-identity\" is not a machine identity ID"],
    );
    assert_no_network_call(&stack);
}

/// `run` with `ca` as `SVID_EXEC_CA_CERT`, then as `--ca-cert`: 78, the
/// program not run, and each message naming where the path came from
/// (`SVID_EXEC_CA_CERT (--ca-cert): …`, then `--ca-cert: …`).
fn ca_cert_refused(stack: &Stack, ca: &str, after_the_source: &str) {
    let out = Launcher::on(stack)
        .env("SVID_EXEC_CA_CERT", ca)
        .arg("run")
        .marked_program(stack.dir())
        .run();
    out.expect_refused(
        78,
        &[&format!(
            "SVID_EXEC_CA_CERT (--ca-cert): {after_the_source}"
        )],
    );
    let out = Launcher::on(stack)
        .args(["run", "--ca-cert", ca])
        .marked_program(stack.dir())
        .run();
    out.expect_refused(78, &[&format!("--ca-cert: {after_the_source}")]);
}

#[test]
fn a_missing_ca_file_names_its_variable_or_flag_before_any_request() {
    let stack = Stack::start();
    let missing = stack.dir().join("no-such-ca.pem");
    let missing = missing.to_str().unwrap();
    ca_cert_refused(&stack, missing, &format!("{missing} does not exist"));
    let out = Launcher::on(&stack)
        .args(["run", "--ca-cert", stack.dir().to_str().unwrap()])
        .marked_program(stack.dir())
        .run();
    out.expect_refused(78, &["is a directory, not a file"]);
    assert_no_network_call(&stack);
}

/// A CA file that exists but holds no PEM certificate is found only when the
/// client is built: still 78 before any request to Infisical, naming the
/// variable or flag as the problems found earlier do (`run`, and `check`'s
/// login step).
#[test]
fn a_ca_file_that_is_not_pem_names_its_variable_or_flag() {
    let stack = Stack::start();
    let not_pem = stack.dir().join("not-a-ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let says = format!("cannot use {not_pem}: no PEM certificate in it");
    ca_cert_refused(&stack, not_pem, &says);
    assert_no_network_call(&stack);
    // check asks the agent (its own step) but never Infisical.
    let out = Launcher::on(&stack)
        .env("SVID_EXEC_CA_CERT", not_pem)
        .arg("check")
        .run();
    assert_eq!(out.code(), 78, "{}", out.stderr);
    assert!(
        out.stdout_text()
            .contains(&format!("SVID_EXEC_CA_CERT (--ca-cert): {says}")),
        "{}",
        out.stdout_text()
    );
    assert!(stack.infisical.requests().is_empty());
}

#[test]
fn environment_variables_configure_and_flags_win() {
    // An invalid value from the environment is refused, naming the variable...
    let mut args = VALID.to_vec();
    args.push("--watch");
    let (out, ran) = run_with_marker(&args, &[("SVID_EXEC_ON_CHANGE", "explode")]);
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("SVID_EXEC_ON_CHANGE (--on-change): \"explode\" is not an action"),
        "{}",
        out.stderr
    );
    assert!(!ran);
    // ...and a flag overrides it (the remaining failure is a different one).
    args.extend_from_slice(&["--on-change", "none", "--file-mode", "9"]);
    let (out, _) = run_with_marker(&args, &[("SVID_EXEC_ON_CHANGE", "explode")]);
    assert!(!out.stderr.contains("explode"), "{}", out.stderr);
    assert!(out.stderr.contains("--file-mode"), "{}", out.stderr);
    // Comma-separated lists from the environment are split and checked.
    let (out, ran) = run_with_marker(VALID, &[("SVID_EXEC_AUDIENCE", "a,,b")]);
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(out.stderr.contains("SVID_EXEC_AUDIENCE (--audience)"));
    assert!(!ran);
    // Required options can come from the environment alone.
    let (out, _) = run_with_marker(
        &["--jwt-file", "/nonexistent/jwt", "--file-mode", "9"],
        &[
            ("INFISICAL_MACHINE_IDENTITY_ID", OIDC_IDENTITY),
            ("INFISICAL_PROJECT_ID", PROJECT_ID),
            ("INFISICAL_ENVIRONMENT", "prod"),
        ],
    );
    assert!(out.stderr.contains("--file-mode"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("problems"),
        "one problem: {}",
        out.stderr
    );
}

#[test]
fn check_refuses_an_unknown_output_format() {
    let out = Launcher::new()
        .env_remove("PATH")
        .args(["check", "--output", "yaml"])
        .args(VALID)
        .run();
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(out.stderr.contains("--output"), "{}", out.stderr);
}

#[test]
fn boolean_environment_variables_accept_the_usual_spellings() {
    let run = |value: &str| {
        // With --no-env off the configuration is valid and the missing JWT
        // file is waited for: keep that wait short.
        let mut args = VALID.to_vec();
        args.extend_from_slice(&["--startup-timeout", "1s"]);
        run_with_marker(&args, &[("SVID_EXEC_NO_ENV", value)]).0
    };
    for on in ["1", "true", "yes", "on"] {
        let out = run(on);
        assert_eq!(out.status.code(), Some(78), "{on}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("SVID_EXEC_NO_ENV (--no-env) without a files option delivers nothing"),
            "{on}: {}",
            out.stderr
        );
    }
    for off in ["0", "false", "no", "off"] {
        let out = run(off);
        assert!(!out.stderr.contains("--no-env"), "{off}: {}", out.stderr);
    }
}

/// A boolean variable that holds no boolean is a configuration problem (78)
/// naming the variable, reported with the others, before anything runs; on
/// the command line `--watch=maybe` stays clap's usage error (2); and the
/// variable of an option that does not apply here is ignored, whatever it
/// holds.
#[test]
fn a_boolean_variable_that_is_not_a_boolean_is_78_naming_it() {
    let (out, ran) = run_with_marker(
        VALID,
        &[("SVID_EXEC_WATCH", "maybe"), ("SVID_EXEC_RECURSIVE", "2")],
    );
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(!ran, "the program ran");
    for expected in [
        "invalid configuration (2 problems)",
        "SVID_EXEC_WATCH (--watch): \"maybe\" is not a boolean",
        "SVID_EXEC_RECURSIVE (--recursive): \"2\" is not a boolean",
        "hint: use true or false",
    ] {
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
    }
    // `check` reports it as its configuration step.
    let out = Launcher::new()
        .env("SVID_EXEC_NO_IMPORTS", "enabled")
        .arg("check")
        .args(VALID)
        .run();
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    assert!(
        out.stdout_text()
            .contains("SVID_EXEC_NO_IMPORTS (--no-imports): \"enabled\" is not a boolean"),
        "{}",
        out.stdout_text()
    );

    let (out, ran) = run_with_marker(&[&["--watch=maybe"], VALID].concat(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(!ran);
    // The flag wins over its variable, whatever the variable holds.
    let mut args = VALID.to_vec();
    args.extend_from_slice(&["--recursive", "--startup-timeout", "1s"]);
    let (out, _) = run_with_marker(&args, &[("SVID_EXEC_RECURSIVE", "maybe")]);
    assert_eq!(out.status.code(), Some(69), "{}", out.stderr);

    // --mlock is for --watch: its variable is ignored by `run` alone (the
    // missing JWT file is then waited for: keep that short).
    let mut args = VALID.to_vec();
    args.extend_from_slice(&["--startup-timeout", "1s", "--log-level", "debug"]);
    let (out, ran) = run_with_marker(&args, &[("SVID_EXEC_MLOCK", "maybe")]);
    assert_eq!(out.status.code(), Some(69), "{}", out.stderr);
    assert!(!ran);
    assert!(!out.stderr.contains("is not a boolean"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("SVID_EXEC_MLOCK (--mlock) does not apply to run without --watch"),
        "{}",
        out.stderr
    );
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

    for quiet in ["-q", "--silent"] {
        let quiet = insecure_warning(&[quiet]);
        assert!(
            !quiet.lines().any(|l| l.contains("WARN")),
            "-q still shows warnings: {quiet}"
        );
    }
}

/// JSON logs: a duration is a number of seconds, and a line without a hint
/// has no `hint` key; configuration problems are JSON objects too, one per
/// problem, each with its hint. (Lists: `select::json_logs_keep_lists_as_arrays`.)
#[test]
fn json_logs_give_durations_as_seconds_and_leave_out_an_empty_hint() {
    let mut args = VALID.to_vec();
    args.extend_from_slice(&[
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--startup-timeout",
        "1s",
    ]);
    let (out, _) = run_with_marker(&args, &[]);
    let objects: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let waiting = objects
        .iter()
        .find(|o| o.get("retry_in").is_some())
        .unwrap_or_else(|| panic!("no retry_in field:\n{}", out.stderr));
    assert!(waiting["retry_in"].is_f64(), "{waiting}");

    let (out, _) = run_with_marker(
        &[
            "--log-format",
            "json",
            "--identity-id",
            "x",
            "--env",
            "prod",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr);
    let objects: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert_eq!(objects.len(), 3, "a count, then one object per problem");
    assert_eq!(objects[0]["message"], "invalid configuration (2 problems)");
    assert!(objects[0].get("hint").is_none(), "{}", objects[0]);
    for problem in &objects[1..] {
        assert_eq!(problem["exit_code"], 78);
        assert!(problem["hint"].as_str().is_some_and(|h| !h.is_empty()));
    }
}
