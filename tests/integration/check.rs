//! `svid-exec check` as a user runs it: the real binary against the stand-in
//! stack (Workload API on a unix socket, Infisical over HTTPS on 127.0.0.1),
//! in passing and failing set-ups, asserting the step lines, the exit code,
//! the JSON document, and that no secret value, JWT or token is printed.

use std::time::Duration;

use serde_json::Value;
use svid_exec_testkit::stack::{
    Stack, StackOptions, DEMO_SECRETS, ENVIRONMENT, JWT_IDENTITY, PROJECT_ID, PROJECT_SLUG,
    WORKLOAD,
};
use svid_exec_testkit::workload::{AgentConfig, Lie, Svid};

use crate::util::{self, tmpfs_scratch, Launcher};

/// Nothing here should take long; a hang is a failure, not a stuck CI job.
const BOUND: Duration = Duration::from_secs(90);

/// What `svid-exec check` printed, and its exit code.
struct Report {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Report {
    /// The line of step `name` (`✓ name: …`), failing the test when absent.
    fn line(&self, mark: &str, name: &str) -> &str {
        let prefix = format!("{mark} {name}: ");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.stdout))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `svid-exec check ARGS` with the stack's environment (plus `extra`),
/// bounded in time: killed and failed past [`BOUND`].
fn check(stack: &Stack, extra: &[(&str, &str)], args: &[&str]) -> Report {
    let outcome = Launcher::on(stack)
        .envs(extra.iter().copied())
        .arg("check")
        .args(args)
        .limit(BOUND)
        .run();
    let report = Report {
        code: outcome.code(),
        stdout: outcome.stdout_text(),
        stderr: outcome.stderr,
    };
    // Shown only when the test fails.
    eprintln!(
        "$ svid-exec check {}  -> exit {}\n{}--- stderr\n{}",
        args.join(" "),
        report.code,
        report.stdout,
        report.stderr
    );
    report
}

/// No secret value, JWT or access token anywhere in what the user sees.
fn assert_no_secret(report: &Report) {
    for text in [&report.stdout, &report.stderr] {
        util::assert_no_secret(text, &[]);
    }
}

/// "138ns" or "544us": a wait printed below the millisecond.
fn has_sub_millis(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && (&w[1..] == b"ns" || &w[1..] == b"us"))
}

#[test]
fn a_working_setup_passes_every_step_lists_names_and_prints_no_secret() {
    let stack = Stack::start();
    let shm = tmpfs_scratch();
    let files_dir = shm.as_ref().map(|d| d.path().join("secrets"));
    let files_arg = files_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut args = vec!["--startup-timeout", "20s"];
    if files_dir.is_some() {
        args.extend(["--files-dir", files_arg.as_str()]);
    }
    let o = check(&stack, &[], &args);
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("✗"), "{}", o.stdout);
    o.line("✓", "configuration");
    assert!(o.line("✓", "workload-api").contains("reachable"));
    let svid = o.line("✓", "svid");
    assert!(svid.contains(WORKLOAD), "{svid}");
    assert!(svid.contains("audience infisical"), "{svid}");
    assert!(svid.contains("expires in"), "{svid}");
    assert!(
        svid.contains(&format!("iss {}", stack.discovery.url())),
        "{svid}"
    );
    o.line("✓", "login");
    o.line("✓", "project");
    let path = o.line("✓", "path /");
    assert!(path.contains("3 secrets"), "{path}");
    for (name, _) in DEMO_SECRETS {
        assert!(path.contains(name), "{name} not listed: {path}");
    }
    o.line("✓", "secrets");
    if files_dir.is_some() {
        let files = o.line("✓", "files");
        assert!(files.contains("secrets (created): on tmpfs"), "{files}");
    } else {
        eprintln!("note: no /dev/shm here; the files step was not exercised");
    }
    assert!(o.line("✓", "environment").contains("ARG_MAX"));
    o.line("✓", "revoke");
    assert!(o.stdout.ends_with("result: ok (exit 0)\n"), "{}", o.stdout);
    assert_no_secret(&o);
    // The token it obtained was revoked: none is left alive.
    assert_eq!(stack.infisical.live_tokens(), 0);

    let j = check(&stack, &[], &[&args[..], &["--output", "json"]].concat());
    if files_dir.is_some() {
        assert!(
            !j.stdout.contains("(created)"),
            "it exists now: {}",
            j.stdout
        );
    }
    assert_eq!(j.code, 0, "{}", j.stdout);
    let doc = j.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["exit_code"], 0);
    let steps = doc["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["status"] == "ok"), "{doc:#}");
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let text_names: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| !l.starts_with("result: "))
        .filter_map(|l| {
            l.split_once(' ')
                .and_then(|(_, rest)| rest.split_once(": "))
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, text_names, "JSON steps match the text lines");
    assert_no_secret(&j);
}

#[test]
fn every_svid_of_the_workload_is_listed_and_the_slug_is_resolved() {
    let stack = Stack::start();
    stack.agent.set_svids([
        Svid::new(WORKLOAD),
        Svid::with_hint("spiffe://example.org/ns/prod/sa/billing-admin", "admin"),
    ]);
    let o = check(
        &stack,
        &[
            ("INFISICAL_PROJECT_ID", ""),
            ("INFISICAL_PROJECT_SLUG", PROJECT_SLUG),
        ],
        &["--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let svids: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with("✓ svid: "))
        .collect();
    assert_eq!(svids.len(), 2, "{}", o.stdout);
    assert!(svids[0].contains(WORKLOAD) && svids[0].ends_with("used for login"));
    assert!(svids[1].contains("billing-admin") && svids[1].contains("hint admin"));
    assert!(!svids[1].contains("used for login"));
    let project = o.line("✓", "project");
    assert!(
        project.contains(PROJECT_SLUG) && project.contains(PROJECT_ID),
        "{project}"
    );
}

#[test]
fn an_absent_agent_fails_the_workload_api_step_69_within_the_startup_timeout() {
    let stack = Stack::start();
    let o = check(
        &stack,
        &[],
        &[
            "--workload-api-socket",
            "unix:///nonexistent/agent.sock",
            "--startup-timeout",
            "1s",
        ],
    );
    assert_eq!(o.code, 69, "{}\n{}", o.stdout, o.stderr);
    o.line("✓", "configuration");
    let line = o.line("✗", "workload-api");
    assert!(line.contains("/nonexistent/agent.sock"), "{line}");
    assert!(
        line.contains("hint: check that the SPIRE agent is running"),
        "{line}"
    );
    assert!(!has_sub_millis(line), "whole milliseconds: {line}");
    for step in ["svid", "login", "project", "paths", "environment", "revoke"] {
        o.line("-", step);
    }
    assert!(o.stdout.ends_with("result: failed (exit 69)\n"));
    assert_eq!(
        stack.infisical.requests().len(),
        0,
        "nothing was asked of Infisical"
    );

    let j = check(
        &stack,
        &[],
        &[
            "--workload-api-socket",
            "unix:///nonexistent/agent.sock",
            "--startup-timeout",
            "1s",
            "--output",
            "json",
        ],
    );
    assert_eq!(j.code, 69);
    let doc = j.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 69);
    let api = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "workload-api")
        .expect("workload-api step");
    assert_eq!(api["status"], "fail");
    assert!(api["hint"].as_str().unwrap().contains("SPIRE agent"));
}

#[test]
fn an_svid_without_iss_warns_about_jwt_issuer_and_oidc_login_fails_77() {
    let stack = Stack::start();
    stack.agent.set_issuer(None);
    let o = check(&stack, &[], &["--startup-timeout", "20s"]);
    assert_eq!(o.code, 77, "{}\n{}", o.stdout, o.stderr);
    let svid = o.line("!", "svid");
    assert!(svid.contains("no iss claim"), "{svid}");
    assert!(svid.contains("jwt_issuer"), "{svid}");
    let login = o.line("✗", "login");
    assert!(login.contains("oidc-auth"), "{login}");
    assert!(login.contains("hint: "), "{login}");
    o.line("-", "project");
    o.line("-", "revoke");
    assert_no_secret(&o);

    // The same SVID is fine for JWT Auth, which does not need `iss`.
    let o = check(
        &stack,
        &[("INFISICAL_MACHINE_IDENTITY_ID", JWT_IDENTITY)],
        &["--auth-method", "jwt-auth", "--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.line("✓", "svid").contains("no iss claim"));
}

/// A token that contradicts the agent's own answer (its `sub` is another
/// workload's): the agent answered, so `workload-api` passes; the `svid`
/// step names the contradiction and fails (69), and no login is tried with
/// the token.
#[test]
fn an_svid_whose_token_contradicts_the_answer_fails_the_svid_step_69_without_a_login() {
    let impostor = "spiffe://example.org/ns/prod/sa/impostor";
    let stack = Stack::start_with(StackOptions {
        agent: AgentConfig::default().lie(Lie::Subject(impostor.into())),
        ..StackOptions::default()
    });
    let o = check(&stack, &[], &["--startup-timeout", "20s"]);
    assert_eq!(o.code, 69, "{}\n{}", o.stdout, o.stderr);
    assert!(o.line("✓", "workload-api").contains("reachable"));
    let svid = o.line("✗", "svid");
    for expected in [
        impostor,
        "the one a login would use",
        "contradicts its answer",
        &format!("the answer is for {WORKLOAD} but the token's sub claim is {impostor}"),
        "hint: ",
    ] {
        assert!(svid.contains(expected), "{expected:?} not in {svid}");
    }
    o.line("-", "login");
    assert_eq!(util::oidc_logins(&stack), 0, "the token was not used");
    assert_no_secret(&o);

    // Another SVID of the workload, lying too, is flagged with a warning.
    stack.agent.set_svids([
        Svid::new(WORKLOAD),
        Svid::new("spiffe://example.org/ns/prod/sa/billing-admin"),
    ]);
    let o = check(&stack, &[], &["--startup-timeout", "20s"]);
    assert_eq!(o.code, 69, "{}\n{}", o.stdout, o.stderr);
    assert!(o.line("✗", "svid").contains("the one a login would use"));
    let other = o.line("!", "svid");
    assert!(
        other.contains("the answer is for spiffe://example.org/ns/prod/sa/billing-admin"),
        "{other}"
    );

    let o = check(
        &stack,
        &[],
        &["--startup-timeout", "20s", "--output", "json"],
    );
    let json = o.json();
    assert_eq!(json["exit_code"], 69);
    let steps = json["steps"].as_array().unwrap();
    let svid = steps.iter().find(|s| s["name"] == "svid").unwrap();
    assert_eq!(svid["status"], "fail");
    assert!(svid["detail"]
        .as_str()
        .unwrap()
        .contains("contradicts its answer"));
}

#[test]
fn a_subject_the_identity_is_not_bound_to_fails_login_77_naming_the_subject() {
    let stack = Stack::start();
    let other = "spiffe://example.org/ns/dev/sa/web";
    stack.agent.set_svids([Svid::new(other)]);
    let o = check(
        &stack,
        &[("INFISICAL_MACHINE_IDENTITY_ID", JWT_IDENTITY)],
        &["--auth-method", "jwt-auth", "--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 77, "{}\n{}", o.stdout, o.stderr);
    o.line("✓", "svid");
    let login = o.line("✗", "login");
    assert!(login.contains("jwt-auth"), "{login}");
    assert!(login.contains(" — hint: "), "{login}");
    assert!(login.contains(other), "the hint names the subject: {login}");
    assert_no_secret(&o);
}

#[test]
fn a_project_the_identity_cannot_read_is_77_and_a_missing_one_78() {
    let stack = Stack::start();
    // Project IDs are UUIDs (svid-exec refuses anything else before any request).
    let other = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    stack.infisical.add_project(other, "other");
    stack.infisical.add_environment(other, ENVIRONMENT);
    stack
        .infisical
        .set_secret(other, ENVIRONMENT, "/", "OTHER_KEY", "other-value-1234");
    let o = check(
        &stack,
        &[("INFISICAL_PROJECT_ID", other)],
        &["--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 77, "{}\n{}", o.stdout, o.stderr);
    o.line("✓", "login");
    let path = o.line("✗", "path /");
    assert!(
        path.contains("hint: check that the identity has read access"),
        "{path}"
    );
    assert!(!o.stdout.contains("OTHER_KEY") && !o.stdout.contains("other-value"));
    o.line("-", "environment");
    // It still logged in, so it still revokes.
    o.line("✓", "revoke");

    let o = check(
        &stack,
        &[
            ("INFISICAL_PROJECT_ID", ""),
            ("INFISICAL_PROJECT_SLUG", "no-such-project"),
        ],
        &["--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 78, "{}\n{}", o.stdout, o.stderr);
    let project = o.line("✗", "project");
    assert!(
        project.contains("hint: check --project-id/--project-slug"),
        "{project}"
    );
    o.line("-", "paths");
}

#[test]
fn a_disk_backed_files_dir_fails_78_with_the_tmpfs_hint() {
    let stack = Stack::start();
    // The stack's scratch dir is under the system temp dir.
    let disk = stack.dir().join("secrets");
    let fs_is_tmpfs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(stack.dir())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("tmpfs"));
    if fs_is_tmpfs {
        eprintln!("skipped: the temp dir is a tmpfs here");
        return;
    }
    let dir = disk.display().to_string();
    let o = check(
        &stack,
        &[],
        &["--files-dir", &dir, "--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 78, "{}\n{}", o.stdout, o.stderr);
    let files = o.line("✗", "files");
    assert!(files.contains("disk-backed"), "{files}");
    assert!(
        files.contains("hint: use a memory-backed directory"),
        "{files}"
    );
    assert!(files.contains("medium: Memory") && files.contains("--allow-non-tmpfs"));
    // The rest still ran and passed.
    o.line("✓", "login");
    o.line("✓", "path /");
    o.line("✓", "revoke");

    let j = check(
        &stack,
        &[],
        &[
            "--files-dir",
            &dir,
            "--startup-timeout",
            "20s",
            "--output",
            "json",
        ],
    );
    assert_eq!(j.code, 78);
    let doc = j.json();
    assert_eq!(doc["exit_code"], 78);
    let failed: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "fail")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["files"]);
}

#[test]
fn an_invalid_configuration_is_the_first_failed_step_78() {
    let stack = Stack::start();
    let o = check(
        &stack,
        &[],
        &["--startup-timeout", "soon", "--output", "json"],
    );
    assert_eq!(o.code, 78, "{}\n{}", o.stdout, o.stderr);
    let doc = o.json();
    assert_eq!(doc["exit_code"], 78);
    assert_eq!(doc["steps"][0]["name"], "configuration");
    assert_eq!(doc["steps"][0]["status"], "fail");
    let steps = doc["steps"].as_array().expect("steps");
    assert!(steps[1..].iter().all(|s| s["status"] == "skip"), "{doc:#}");
    assert!(
        o.stderr.contains("--startup-timeout"),
        "and on stderr: {}",
        o.stderr
    );
    assert_eq!(stack.infisical.requests().len(), 0);
}

#[test]
fn a_jwt_file_replaces_the_workload_api_step() {
    let stack = Stack::start();
    let file = stack.write_jwt_file(Duration::from_secs(300));
    let path = file.display().to_string();
    let o = check(
        &stack,
        &[],
        &["--jwt-file", &path, "--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.line("✓", "jwt-file").contains(&path));
    assert!(o.line("✓", "svid").contains(WORKLOAD));
    assert!(!o.stdout.contains("workload-api"), "{}", o.stdout);
    assert_no_secret(&o);

    // Missing: waited for (its writer may start later), then 69.
    let missing = stack.dir().join("absent.token").display().to_string();
    let o = check(
        &stack,
        &[],
        &["--jwt-file", &missing, "--startup-timeout", "1s"],
    );
    assert_eq!(o.code, 69, "{}\n{}", o.stdout, o.stderr);
    let line = o.line("✗", "jwt-file");
    assert!(
        line.contains("waited for") && line.contains(&missing),
        "{line}"
    );
    assert!(line.contains("hint: check --jwt-file"), "{line}");
    o.line("-", "login");

    // Not a JWT: 78 at once.
    let junk = stack.dir().join("junk.token");
    std::fs::write(&junk, "not-a-jwt").unwrap();
    let junk = junk.display().to_string();
    let o = check(
        &stack,
        &[],
        &["--jwt-file", &junk, "--startup-timeout", "20s"],
    );
    assert_eq!(o.code, 78, "{}\n{}", o.stdout, o.stderr);
    assert!(o.line("✗", "jwt-file").contains("does not hold a JWT"));
    o.line("-", "login");
}

#[test]
fn an_unreachable_infisical_fails_login_69_within_the_startup_timeout() {
    let mut stack = Stack::start();
    stack.infisical.stop();
    let o = check(&stack, &[], &["--startup-timeout", "2s"]);
    assert_eq!(o.code, 69, "{}\n{}", o.stdout, o.stderr);
    o.line("✓", "workload-api");
    let login = o.line("✗", "login");
    assert!(login.contains("hint: check --api-url"), "{login}");
    assert!(!has_sub_millis(login), "whole milliseconds: {login}");
    o.line("-", "revoke");
}

/// The report is check's output: its progress log lines ("got a JWT-SVID",
/// "logged in") are not mixed in unless asked for with --log-level.
#[test]
fn check_prints_its_report_without_info_log_lines_unless_asked() {
    let stack = Stack::start();
    let quiet = check(&stack, &[], &[]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(
        !quiet.stderr.contains("INFO") && !quiet.stderr.contains("got a JWT-SVID"),
        "log lines in check's output:\n{}",
        quiet.stderr
    );
    assert!(!quiet.stdout.contains("got a JWT-SVID"), "{}", quiet.stdout);
    let verbose = check(&stack, &[], &["--log-level", "info"]);
    assert!(
        verbose.stderr.contains("got a JWT-SVID"),
        "{}",
        verbose.stderr
    );
    let from_env = check(&stack, &[("SVID_EXEC_LOG_LEVEL", "info")], &[]);
    assert!(
        from_env.stderr.contains("got a JWT-SVID"),
        "{}",
        from_env.stderr
    );
}
