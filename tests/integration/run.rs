//! Black-box tests of `svid-exec run -- CMD` (issue 3's "Done means"): the
//! real binary against the in-repo stand-ins (a SPIRE agent on a unix socket,
//! SPIRE's OIDC discovery provider and Infisical over HTTPS on 127.0.0.1).
//! Each test asserts the exit code, the message on stderr and, for refusals,
//! that the program never ran. Faults of the agent and the server live in
//! `faults`; file delivery, `--watch` and `check` in their own modules.

use std::collections::BTreeMap;
use std::time::Duration;

use svid_exec_testkit::infisical::{Fault, InfisicalConfig, RequestRecord};
use svid_exec_testkit::stack::{
    Stack, StackOptions, DEMO_SECRETS, ENVIRONMENT, JWT_IDENTITY, PROJECT_ID, PROJECT_SLUG,
    SPIFFE_IDENTITY, WORKLOAD,
};
use svid_exec_testkit::workload::{AgentCall, Svid};

use crate::util::{secret_requests, Launcher, Outcome};

/// `svid-exec run ARGS -- env -0` against `stack`: the child prints its
/// whole environment.
fn run_env(stack: &Stack, args: &[&str]) -> Outcome {
    Launcher::on(stack)
        .args(["run"])
        .args(args)
        .args(["--", "env", "-0"])
        .run()
}

/// Runs `svid-exec run ARGS -- <a program that marks that it ran>`.
fn run_marked(mut command: Launcher, args: &[&str], marker_dir: &std::path::Path) -> Outcome {
    command
        .arg("run")
        .args(args)
        .marked_program(marker_dir)
        .run()
}

/// Asserts a refusal: `code`, `message` on stderr, and the program never ran.
#[track_caller]
fn assert_refused(
    stack: &Stack,
    command: Launcher,
    args: &[&str],
    code: i32,
    message: &str,
) -> Outcome {
    let outcome = run_marked(command, args, stack.dir());
    outcome.expect_refused(code, &[message]);
    outcome
}

fn demo_value(name: &str) -> &'static str {
    DEMO_SECRETS
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| *value)
        .expect("demo secret")
}

fn jwt_svid_calls(stack: &Stack) -> Vec<AgentCall> {
    stack
        .agent
        .calls()
        .into_iter()
        .filter(|c| c.method == "FetchJWTSVID")
        .collect()
}

/// The value of `name` in a URL query string (percent-decoding `%2F` and `%2C`).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            v.replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%2C", ",")
                .replace("%2c", ",")
        })
    })
}

mod auth {
    //! Each auth method and each JWT source succeeding.

    use super::*;

    fn assert_logged_in_with(stack: &Stack, method: &str) {
        let logins: Vec<RequestRecord> = stack
            .infisical
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v1/auth/") && r.path.ends_with("/login"))
            .collect();
        assert_eq!(logins.len(), 1, "one login expected: {logins:?}");
        assert_eq!(logins[0].method, "POST");
        assert_eq!(logins[0].path, format!("/api/v1/auth/{method}/login"));
        assert_eq!(logins[0].status, 200);
        assert!(
            !logins[0].authorization_present,
            "a login must not carry an Authorization header"
        );
        assert_eq!(stack.infisical.counters().logins, 1);
    }

    #[test]
    fn oidc_auth_is_the_default_and_requests_one_audience_infisical() {
        let stack = Stack::start();
        let outcome = run_env(&stack, &[]);
        outcome.expect_code(0);
        outcome.expect_demo_env();
        assert_logged_in_with(&stack, "oidc-auth");
        let calls = jwt_svid_calls(&stack);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].audience, vec!["infisical".to_string()]);
        assert!(calls[0].had_security_header);
        assert_eq!(calls[0].spiffe_id, "", "no SPIFFE ID asked for by default");
    }

    #[test]
    fn jwt_auth_logs_in_with_the_jwt_identity() {
        let stack = Stack::start();
        let outcome = run_env(
            &stack,
            &["--auth-method", "jwt-auth", "--identity-id", JWT_IDENTITY],
        );
        outcome.expect_code(0);
        outcome.expect_demo_env();
        assert_logged_in_with(&stack, "jwt-auth");
    }

    #[test]
    fn spiffe_auth_logs_in_with_the_spiffe_identity_set_by_environment() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command
            .env("INFISICAL_AUTH_METHOD", "spiffe-auth")
            .env("INFISICAL_MACHINE_IDENTITY_ID", SPIFFE_IDENTITY)
            .args(["run", "--", "env", "-0"]);
        let outcome = command.run();
        outcome.expect_code(0);
        outcome.expect_demo_env();
        assert_logged_in_with(&stack, "spiffe-auth");
    }

    #[test]
    fn jwt_file_replaces_the_workload_api() {
        let stack = Stack::start();
        let jwt = stack.write_jwt_file(Duration::from_secs(300));
        let jwt_arg = jwt.display().to_string();
        let outcome = run_env(&stack, &["--jwt-file", &jwt_arg]);
        outcome.expect_code(0);
        outcome.expect_demo_env();
        assert_logged_in_with(&stack, "oidc-auth");
        assert!(
            jwt_svid_calls(&stack).is_empty(),
            "with --jwt-file the agent must not be asked"
        );
    }

    #[test]
    fn a_jwt_file_that_stays_empty_is_waited_for_then_69_naming_it() {
        let stack = Stack::start();
        let jwt = stack.dir().join("empty.token");
        std::fs::write(&jwt, "").expect("write empty file");
        let jwt_arg = jwt.display().to_string();
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "1s", "--jwt-file", &jwt_arg],
            69,
            "waited for",
        );
        outcome.expect_stderr(&jwt_arg).expect_stderr("is empty");
        assert_eq!(stack.infisical.counters().logins, 0);
    }

    #[test]
    fn a_jwt_file_written_after_the_launcher_started_is_used() {
        let stack = Stack::start();
        // The token spiffe-helper would write, moved away until the launcher runs.
        let written = stack.write_jwt_file(Duration::from_secs(300));
        let token = std::fs::read(&written).expect("read JWT");
        std::fs::remove_file(&written).expect("remove JWT");
        let jwt_arg = written.display().to_string();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(&written, token).expect("write JWT");
        });
        let outcome = run_env(
            &stack,
            &["--startup-timeout", "30s", "--jwt-file", &jwt_arg],
        );
        writer.join().expect("writer");
        outcome.expect_code(0);
        outcome.expect_demo_env();
        assert_eq!(stack.infisical.counters().logins, 1);
    }

    #[test]
    fn a_jwt_file_that_is_not_a_jwt_is_78_without_waiting() {
        let stack = Stack::start();
        let jwt = stack.dir().join("junk.token");
        std::fs::write(&jwt, "s3cr3t-not-a-jwt").expect("write junk");
        let jwt_arg = jwt.display().to_string();
        // A startup timeout longer than the run limit: only failing at once passes.
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "10m", "--jwt-file", &jwt_arg],
            78,
            "does not hold a JWT",
        );
        outcome.expect_stderr(&jwt_arg);
        assert!(!outcome.stderr.contains("s3cr3t"), "{}", outcome.stderr);
        assert_eq!(stack.infisical.counters().logins, 0);
    }

    #[test]
    fn spiffe_id_picks_the_svid_among_several() {
        let stack = Stack::start();
        // The first SVID would be refused by the identity's bound subject.
        stack.agent.set_svids([
            Svid::new("spiffe://example.org/ns/dev/sa/other"),
            Svid::new(WORKLOAD),
        ]);
        let outcome = run_env(&stack, &["--spiffe-id", WORKLOAD]);
        outcome.expect_code(0);
        outcome.expect_demo_env();
        let calls = jwt_svid_calls(&stack);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].spiffe_id, WORKLOAD);
    }

    #[test]
    fn every_workload_api_address_form_works() {
        let stack = Stack::start();
        let socket = stack.agent.socket_path().display().to_string();
        for address in [
            socket.clone(),
            format!("unix:{socket}"),
            format!("unix://{socket}"),
        ] {
            let mut command = Launcher::on(&stack);
            command.env("SPIFFE_ENDPOINT_SOCKET", &address).args([
                "run",
                "--startup-timeout",
                "2s",
                "--",
                "true",
            ]);
            let outcome = command.run();
            assert_eq!(outcome.code(), 0, "{address}: {}", outcome.stderr);
        }
        assert_eq!(jwt_svid_calls(&stack).len(), 3);
    }

    #[test]
    fn api_url_with_a_trailing_api_or_slash_is_normalised() {
        let stack = Stack::start();
        for suffix in ["/", "/api", "/api/"] {
            let mut command = Launcher::on(&stack);
            command
                .env(
                    "INFISICAL_API_URL",
                    format!("{}{suffix}", stack.infisical.url()),
                )
                .args(["run", "--startup-timeout", "2s", "--", "true"]);
            let outcome = command.run();
            assert_eq!(outcome.code(), 0, "{suffix}: {}", outcome.stderr);
        }
        let paths: Vec<String> = stack
            .infisical
            .requests()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert!(
            paths
                .iter()
                .all(|p| p.starts_with("/api/v") && !p.contains("//")),
            "{paths:?}"
        );
    }

    #[test]
    fn spiffe_auth_works_with_a_jwt_file_too() {
        let stack = Stack::start();
        let jwt = stack.write_jwt_file(Duration::from_secs(300));
        let jwt_arg = jwt.display().to_string();
        let outcome = run_env(
            &stack,
            &[
                "--auth-method",
                "spiffe-auth",
                "--identity-id",
                SPIFFE_IDENTITY,
                "--jwt-file",
                &jwt_arg,
            ],
        );
        outcome.expect_code(0);
        outcome.expect_demo_env();
        assert_logged_in_with(&stack, "spiffe-auth");
        assert!(jwt_svid_calls(&stack).is_empty());
    }

    #[test]
    fn audience_is_repeatable_and_all_are_requested() {
        let stack = Stack::start();
        let outcome = run_env(&stack, &["--audience", "infisical", "--audience", "extra"]);
        outcome.expect_code(0);
        let calls = jwt_svid_calls(&stack);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            calls[0].audience,
            vec!["infisical".to_string(), "extra".to_string()]
        );
    }
}

mod environment {
    //! The child's exact environment.

    use super::*;

    fn bytes(map: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        map.iter()
            .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn child_gets_inherited_variables_and_secrets_override_and_no_bootstrap_variable() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command
            .env("HOME", "/home/billing")
            .env("KEEP_ME", "inherited value")
            .env("DATABASE_URL", "inherited-db")
            .env("SVID_EXEC_LOG_LEVEL", "info")
            .env("INFISICAL_ORGANIZATION_SLUG_UNUSED", "x")
            .args(["run", "--", "env", "-0"]);
        let outcome = command.run();
        outcome.expect_code(0);
        let mut expected = bytes(&[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/billing"),
            ("KEEP_ME", "inherited value"),
        ]);
        expected.extend(bytes(DEMO_SECRETS));
        assert_eq!(outcome.child_env(), expected);
    }

    #[test]
    fn no_override_keeps_inherited_values() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command.env("DATABASE_URL", "inherited-db").args([
            "run",
            "--no-override",
            "--",
            "env",
            "-0",
        ]);
        let outcome = command.run();
        outcome.expect_code(0);
        let mut expected = bytes(&[("PATH", "/usr/bin:/bin")]);
        expected.extend(bytes(DEMO_SECRETS));
        expected.insert("DATABASE_URL".into(), b"inherited-db".to_vec());
        assert_eq!(outcome.child_env(), expected);
    }

    #[test]
    fn env_prefix_is_prepended_to_every_secret_name() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command.env("DATABASE_URL", "inherited-db").args([
            "run",
            "--env-prefix",
            "APP_",
            "--",
            "env",
            "-0",
        ]);
        let outcome = command.run();
        outcome.expect_code(0);
        let mut expected = bytes(&[("PATH", "/usr/bin:/bin"), ("DATABASE_URL", "inherited-db")]);
        for (key, value) in DEMO_SECRETS {
            expected.insert(format!("APP_{key}"), value.as_bytes().to_vec());
        }
        assert_eq!(outcome.child_env(), expected);
    }

    #[test]
    fn a_bootstrap_variable_reaches_the_child_only_as_a_delivered_secret() {
        let stack = Stack::start();
        stack.infisical.set_secret(
            PROJECT_ID,
            ENVIRONMENT,
            "/",
            "INFISICAL_TOKEN_FOR_CHILD",
            "child-side value",
        );
        stack.infisical.set_secret(
            PROJECT_ID,
            ENVIRONMENT,
            "/",
            "SPIFFE_ENDPOINT_SOCKET",
            "unix:///run/child/agent.sock",
        );
        let outcome = run_env(&stack, &[]);
        outcome.expect_code(0);
        let env = outcome.child_env();
        assert_eq!(
            env.get("INFISICAL_TOKEN_FOR_CHILD").map(Vec::as_slice),
            Some(&b"child-side value"[..])
        );
        assert_eq!(
            env.get("SPIFFE_ENDPOINT_SOCKET").map(Vec::as_slice),
            Some(&b"unix:///run/child/agent.sock"[..]),
            "the secret, not the launcher's socket"
        );
        for name in [
            "INFISICAL_API_URL",
            "INFISICAL_MACHINE_IDENTITY_ID",
            "INFISICAL_PROJECT_ID",
            "INFISICAL_ENVIRONMENT",
            "SVID_EXEC_CA_CERT",
        ] {
            assert!(!env.contains_key(name), "{name} leaked into the child");
        }
    }

    #[test]
    fn values_are_byte_exact_pem_unicode_equals_quotes() {
        let stack = Stack::start();
        let awkward = [
            ("PEM_CHAIN", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----"),
            ("UNICODE", "ünïcødé ✓ 日本語 🦀"),
            ("EQUALS", "a=b==c="),
            ("QUOTES", "it's \"quoted\" `back` $HOME \\n"),
            ("TRAILING_SPACE", "  padded\t\r\n  "),
        ];
        for (key, value) in awkward {
            stack
                .infisical
                .set_secret(PROJECT_ID, ENVIRONMENT, "/", key, value);
        }
        let outcome = run_env(&stack, &[]);
        outcome.expect_code(0);
        let env = outcome.child_env();
        for (key, value) in awkward.iter().chain(DEMO_SECRETS) {
            assert_eq!(
                env.get(*key).map(Vec::as_slice),
                Some(value.as_bytes()),
                "{key} was altered"
            );
        }
    }

    #[test]
    fn a_name_that_is_not_a_shell_identifier_is_delivered_with_a_warning() {
        let stack = Stack::start();
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", "my-key.v2", "dotted");
        let outcome = run_env(&stack, &[]);
        outcome
            .expect_code(0)
            .expect_stderr("not portable shell variable names: my-key.v2")
            .expect_stderr("--map my-key.v2=MY_KEY_V2");
        assert_eq!(
            outcome.child_env().get("my-key.v2").map(Vec::as_slice),
            Some(&b"dotted"[..])
        );
    }

    #[test]
    fn a_name_execve_cannot_carry_is_78_naming_it() {
        let stack = Stack::start();
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", "A=B", "x");
        assert_refused(
            &stack,
            Launcher::on(&stack),
            &[],
            78,
            "\"A=B\" in the environment: it contains `=`",
        )
        .expect_stderr("--map A=B=A_B")
        .expect_stderr("--files-dir");
    }

    #[test]
    fn a_value_with_a_nul_byte_is_78_naming_it() {
        let stack = Stack::start();
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", "NUL_VALUE", "before\0after");
        let outcome = assert_refused(&stack, Launcher::on(&stack), &[], 78, "\"NUL_VALUE\"");
        outcome.expect_stderr("NUL byte");
        assert!(!outcome.stderr.contains("before"), "the value was printed");
    }
}

mod fetching {
    //! What is fetched: API versions, paths, imports, recursion, tags,
    //! expansion, project slug.

    use super::*;

    fn secret(stack: &Stack, path: &str, key: &str, value: &str) {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, path, key, value);
    }

    fn value(outcome: &Outcome, key: &str) -> Option<String> {
        outcome
            .child_env()
            .get(key)
            .map(|v| String::from_utf8(v.clone()).expect("UTF-8"))
    }

    #[test]
    fn v4_is_used_by_default_with_every_flag_explicit() {
        let stack = Stack::start();
        run_env(&stack, &[]).expect_code(0);
        let requests = secret_requests(&stack);
        assert_eq!(requests.len(), 1, "{requests:?}");
        let r = &requests[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.status),
            ("GET", "/api/v4/secrets", 200)
        );
        assert!(r.authorization_present);
        assert_eq!(
            query_param(&r.query, "projectId").as_deref(),
            Some(PROJECT_ID)
        );
        assert_eq!(
            query_param(&r.query, "environment").as_deref(),
            Some(ENVIRONMENT)
        );
        assert_eq!(query_param(&r.query, "secretPath").as_deref(), Some("/"));
        for flag in [
            "expandSecretReferences",
            "recursive",
            "includeImports",
            "include_imports",
        ] {
            assert!(
                query_param(&r.query, flag).is_some(),
                "{flag} not sent explicitly: {}",
                r.query
            );
        }
    }

    #[test]
    fn v4_404_falls_back_to_v3_once_and_stays_on_v3() {
        let stack = Stack::start_with(StackOptions {
            infisical: InfisicalConfig {
                v4_disabled: true,
                ..InfisicalConfig::default()
            },
            ..StackOptions::default()
        });
        secret(&stack, "/other", "OTHER_ONLY", "from other");
        let outcome = run_env(&stack, &["--path", "/", "--path", "/other"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "OTHER_ONLY").as_deref(), Some("from other"));
        assert_eq!(
            value(&outcome, "DATABASE_URL").as_deref(),
            Some(demo_value("DATABASE_URL"))
        );
        let requests = secret_requests(&stack);
        let paths: Vec<(&str, u16)> = requests
            .iter()
            .map(|r| (r.path.as_str(), r.status))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/api/v4/secrets", 404),
                ("/api/v3/secrets/raw", 200),
                ("/api/v3/secrets/raw", 200)
            ],
            "v4 tried once, then v3 for every path"
        );
        let v3_paths: Vec<Option<String>> = requests[1..]
            .iter()
            .map(|r| query_param(&r.query, "secretPath"))
            .collect();
        assert_eq!(v3_paths, vec![Some("/".into()), Some("/other".into())]);
    }

    #[test]
    fn later_paths_win_on_the_same_key() {
        let stack = Stack::start();
        secret(&stack, "/one", "ONLY_ONE", "1");
        secret(&stack, "/one", "SHARED", "from one");
        secret(&stack, "/two", "SHARED", "from two");
        let outcome = run_env(&stack, &["--path", "/one", "--path", "/two"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "ONLY_ONE").as_deref(), Some("1"));
        assert_eq!(value(&outcome, "SHARED").as_deref(), Some("from two"));
        assert_eq!(value(&outcome, "DATABASE_URL"), None, "/ was not asked for");

        let outcome = run_env(&stack, &["--path", "/two", "--path", "/one"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "SHARED").as_deref(), Some("from one"));
    }

    #[test]
    fn paths_from_the_environment_are_comma_separated() {
        let stack = Stack::start();
        secret(&stack, "/one", "SHARED", "from one");
        secret(&stack, "/two", "SHARED", "from two");
        let mut command = Launcher::on(&stack);
        command
            .env("INFISICAL_SECRET_PATH", "/one,/two")
            .args(["run", "--", "env", "-0"]);
        let outcome = command.run();
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "SHARED").as_deref(), Some("from two"));
    }

    fn with_imports(stack: &Stack) {
        secret(stack, "/app", "A", "own");
        secret(stack, "/shared1", "A", "import 1");
        secret(stack, "/shared1", "B", "import 1");
        secret(stack, "/shared1", "C", "import 1");
        secret(stack, "/shared2", "B", "import 2");
        stack
            .infisical
            .add_import(PROJECT_ID, ENVIRONMENT, "/app", ENVIRONMENT, "/shared1");
        stack
            .infisical
            .add_import(PROJECT_ID, ENVIRONMENT, "/app", ENVIRONMENT, "/shared2");
    }

    #[test]
    fn own_secrets_beat_imports_and_the_last_import_wins() {
        let stack = Stack::start();
        with_imports(&stack);
        let outcome = run_env(&stack, &["--path", "/app"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "A").as_deref(), Some("own"));
        assert_eq!(value(&outcome, "B").as_deref(), Some("import 2"));
        assert_eq!(value(&outcome, "C").as_deref(), Some("import 1"));
    }

    #[test]
    fn a_hidden_own_value_is_not_replaced_by_an_imported_one() {
        let stack = Stack::start();
        with_imports(&stack);
        assert!(stack
            .infisical
            .hide_secret_value(PROJECT_ID, ENVIRONMENT, "/app", "A"));
        let outcome = run_env(&stack, &["--path", "/app"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "A"), None, "own secrets win, hidden or not");
        assert_eq!(value(&outcome, "C").as_deref(), Some("import 1"));
        assert_eq!(
            outcome.stderr.matches("describe-only").count(),
            1,
            "warned once: {}",
            outcome.stderr
        );
        outcome.expect_stderr("A");
    }

    #[test]
    fn a_hidden_value_in_a_later_path_hides_the_earlier_paths_value() {
        let stack = Stack::start();
        secret(&stack, "/one", "A", "from one");
        secret(&stack, "/two", "A", "from two");
        secret(&stack, "/two", "B", "readable");
        assert!(stack
            .infisical
            .hide_secret_value(PROJECT_ID, ENVIRONMENT, "/two", "A"));
        let outcome = run_env(&stack, &["--path", "/one", "--path", "/two"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "A"), None, "/two wins on A and hides it");
        assert_eq!(value(&outcome, "B").as_deref(), Some("readable"));
    }

    #[test]
    fn no_imports_delivers_only_the_folders_own_secrets() {
        let stack = Stack::start();
        with_imports(&stack);
        let outcome = run_env(&stack, &["--path", "/app", "--no-imports"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "A").as_deref(), Some("own"));
        assert_eq!(value(&outcome, "B"), None);
        assert_eq!(value(&outcome, "C"), None);
        let requests = secret_requests(&stack);
        assert_eq!(
            query_param(&requests[0].query, "includeImports").as_deref(),
            Some("false")
        );
    }

    #[test]
    fn recursive_includes_sub_folders() {
        let stack = Stack::start();
        secret(&stack, "/app", "TOP", "top");
        secret(&stack, "/app/db", "NESTED", "nested");
        let outcome = run_env(&stack, &["--path", "/app"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "TOP").as_deref(), Some("top"));
        assert_eq!(value(&outcome, "NESTED"), None);

        let outcome = run_env(&stack, &["--path", "/app", "--recursive"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "TOP").as_deref(), Some("top"));
        assert_eq!(value(&outcome, "NESTED").as_deref(), Some("nested"));
    }

    #[test]
    fn tag_keeps_only_secrets_with_that_tag() {
        let stack = Stack::start();
        stack.infisical.set_secret_tagged(
            PROJECT_ID,
            ENVIRONMENT,
            "/",
            "WEB_ONLY",
            "web",
            &["web"],
        );
        stack.infisical.set_secret_tagged(
            PROJECT_ID,
            ENVIRONMENT,
            "/",
            "WORKER_ONLY",
            "worker",
            &["worker"],
        );
        let outcome = run_env(&stack, &["--tag", "web"]);
        outcome.expect_code(0);
        let env = outcome.child_env();
        assert_eq!(env.get("WEB_ONLY").map(Vec::as_slice), Some(&b"web"[..]));
        assert!(!env.contains_key("WORKER_ONLY"));
        for (key, _) in DEMO_SECRETS {
            assert!(!env.contains_key(*key), "untagged {key} delivered");
        }
    }

    #[test]
    fn several_tags_select_secrets_with_any_of_them_also_from_the_environment() {
        let stack = Stack::start();
        for (key, tag) in [
            ("WEB_ONLY", "web"),
            ("WORKER_ONLY", "worker"),
            ("CRON_ONLY", "cron"),
        ] {
            stack
                .infisical
                .set_secret_tagged(PROJECT_ID, ENVIRONMENT, "/", key, tag, &[tag]);
        }
        let outcome = run_env(&stack, &["--tag", "web", "--tag", "worker"]);
        outcome.expect_code(0);
        let keys: Vec<String> = outcome
            .child_env()
            .into_keys()
            .filter(|k| k != "PATH")
            .collect();
        assert_eq!(
            keys,
            vec!["WEB_ONLY".to_string(), "WORKER_ONLY".to_string()]
        );

        let mut command = Launcher::on(&stack);
        command
            .env("SVID_EXEC_TAGS", "web,cron")
            .args(["run", "--", "env", "-0"]);
        let outcome = command.run();
        outcome.expect_code(0);
        let keys: Vec<String> = outcome
            .child_env()
            .into_keys()
            .filter(|k| k != "PATH")
            .collect();
        assert_eq!(keys, vec!["CRON_ONLY".to_string(), "WEB_ONLY".to_string()]);
    }

    #[test]
    fn a_later_paths_import_beats_an_earlier_paths_own_secret() {
        // Precedence (own over imports) applies within one path; across
        // paths the later path wins, whatever the source in that path.
        let stack = Stack::start();
        secret(&stack, "/a", "X", "own in /a");
        secret(&stack, "/b", "B_OWN", "b");
        secret(&stack, "/c", "X", "imported into /b");
        stack
            .infisical
            .add_import(PROJECT_ID, ENVIRONMENT, "/b", ENVIRONMENT, "/c");
        let outcome = run_env(&stack, &["--path", "/a", "--path", "/b"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "X").as_deref(), Some("imported into /b"));
        assert_eq!(value(&outcome, "B_OWN").as_deref(), Some("b"));

        let outcome = run_env(&stack, &["--path", "/b", "--path", "/a"]);
        outcome.expect_code(0);
        assert_eq!(value(&outcome, "X").as_deref(), Some("own in /a"));
    }

    #[test]
    fn references_are_expanded_unless_no_expand() {
        let stack = Stack::start();
        secret(&stack, "/", "DB_HOST", "db.internal");
        secret(&stack, "/", "DB_ADDR", "${DB_HOST}:5432");
        let outcome = run_env(&stack, &[]);
        outcome.expect_code(0);
        assert_eq!(
            value(&outcome, "DB_ADDR").as_deref(),
            Some("db.internal:5432")
        );

        let outcome = run_env(&stack, &["--no-expand"]);
        outcome.expect_code(0);
        assert_eq!(
            value(&outcome, "DB_ADDR").as_deref(),
            Some("${DB_HOST}:5432")
        );
    }

    #[test]
    fn project_slug_is_resolved_once_to_the_project_id() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command.env_remove("INFISICAL_PROJECT_ID").args([
            "run",
            "--project-slug",
            PROJECT_SLUG,
            "--",
            "env",
            "-0",
        ]);
        let outcome = command.run();
        outcome.expect_code(0);
        assert_eq!(
            value(&outcome, "GREETING").as_deref(),
            Some(demo_value("GREETING"))
        );
        let requests = stack.infisical.requests();
        let slug_lookups = requests
            .iter()
            .filter(|r| r.path == format!("/api/v1/projects/slug/{PROJECT_SLUG}"))
            .count();
        assert_eq!(slug_lookups, 1, "{requests:?}");
        let fetches = secret_requests(&stack);
        assert_eq!(
            query_param(&fetches[0].query, "projectId").as_deref(),
            Some(PROJECT_ID)
        );
    }
}

mod fail_closed {
    //! An empty result and missing required keys stop before the program runs.

    use super::*;

    #[test]
    fn an_empty_result_is_refused_with_78() {
        let stack = Stack::start();
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--path", "/mistyped"],
            78,
            "no secrets were found",
        );
        outcome
            .expect_stderr("/mistyped")
            .expect_stderr("--allow-empty");
    }

    #[test]
    fn allow_empty_runs_the_program_without_secrets() {
        let stack = Stack::start();
        let outcome = run_marked(
            Launcher::on(&stack),
            &["--path", "/mistyped", "--allow-empty"],
            stack.dir(),
        );
        outcome.expect_ran();
    }

    #[test]
    fn missing_required_keys_are_refused_with_78_naming_them() {
        let stack = Stack::start();
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &[
                "--require",
                "DATABASE_URL",
                "--require",
                "STRIPE_KEY,SENTRY_DSN",
            ],
            78,
            "required secrets are missing",
        );
        outcome
            .expect_stderr("STRIPE_KEY")
            .expect_stderr("SENTRY_DSN");
        let message_line = outcome
            .stderr
            .lines()
            .find(|l| l.contains("required secrets are missing"))
            .expect("message line");
        assert!(!message_line.contains("DATABASE_URL"), "{message_line}");
    }

    #[test]
    fn required_keys_from_the_environment_are_comma_separated() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command.env("SVID_EXEC_REQUIRE", "GREETING,STRIPE_KEY");
        let outcome = assert_refused(
            &stack,
            command,
            &[],
            78,
            "required secrets are missing: STRIPE_KEY (--require)",
        );
        assert!(!outcome.stderr.contains("GREETING (--require)"));
    }

    #[test]
    fn present_required_keys_let_the_program_run() {
        let stack = Stack::start();
        let outcome = run_marked(
            Launcher::on(&stack),
            &["--require", "DATABASE_URL", "--require", "GREETING"],
            stack.dir(),
        );
        outcome.expect_ran();
    }
}

mod refusals {
    //! Refused logins and reads: exit code, hint, and no program started.

    use super::*;

    #[test]
    fn wrong_subject_is_refused_with_77_showing_the_jwt_subject() {
        let stack = Stack::start();
        stack
            .agent
            .set_svids([Svid::new("spiffe://example.org/ns/dev/sa/billing")]);
        assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s"],
            77,
            "spiffe://example.org/ns/dev/sa/billing",
        );
        assert_eq!(stack.infisical.counters().logins, 0);
    }

    #[test]
    fn first_of_several_svids_is_used_without_spiffe_id_and_refused() {
        let stack = Stack::start();
        stack.agent.set_svids([
            Svid::new("spiffe://example.org/ns/dev/sa/other"),
            Svid::new(WORKLOAD),
        ]);
        assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s"],
            77,
            "spiffe://example.org/ns/dev/sa/other",
        );
    }

    #[test]
    fn wrong_audience_is_refused_with_77() {
        let stack = Stack::start();
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s", "--audience", "other"],
            77,
            "audience",
        );
        outcome.expect_stderr("other");
        let calls = jwt_svid_calls(&stack);
        assert!(!calls.is_empty());
        assert!(calls
            .iter()
            .all(|c| c.audience == vec!["other".to_string()]));
    }

    #[test]
    fn issuer_mismatch_is_refused_with_77_and_the_jwt_issuer_hint() {
        let stack = Stack::start();
        stack.agent.set_issuer(Some("https://wrong".into()));
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s"],
            77,
            "jwt_issuer",
        );
        outcome.expect_stderr("https://wrong");
    }

    #[test]
    fn unknown_identity_is_refused_with_77_naming_it() {
        let stack = Stack::start();
        let unknown = "99999999-8888-4777-a666-555555555555";
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s", "--identity-id", unknown],
            77,
            unknown,
        );
        outcome.expect_stderr("--identity-id");
    }

    #[test]
    fn jwt_identity_with_the_default_method_is_told_to_use_jwt_auth() {
        let stack = Stack::start();
        assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s", "--identity-id", JWT_IDENTITY],
            77,
            "--auth-method jwt-auth",
        );
    }

    #[test]
    fn identity_without_read_access_is_refused_with_77() {
        let stack = Stack::start();
        let other = "0a0b0c0d-1e1f-4a2b-8c3d-4e5f6a7b8c9d";
        stack.infisical.add_project(other, "payroll");
        stack.infisical.add_environment(other, ENVIRONMENT);
        stack
            .infisical
            .set_secret(other, ENVIRONMENT, "/", "PAYROLL_KEY", "not yours");
        let outcome = assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s", "--project-id", other],
            77,
            "read access",
        );
        assert_eq!(
            stack.infisical.counters().logins,
            1,
            "login worked, the read was refused"
        );
        assert!(!outcome.stderr.contains("not yours"));
    }

    #[test]
    fn missing_project_is_a_configuration_error_78() {
        let stack = Stack::start();
        let missing = "0f0f0f0f-1e1e-4d2d-8c3c-4b4b4b4b4b4b";
        assert_refused(
            &stack,
            Launcher::on(&stack),
            &["--startup-timeout", "2s", "--project-id", missing],
            78,
            missing,
        );
    }

    #[test]
    fn missing_project_slug_is_a_configuration_error_78() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command.env_remove("INFISICAL_PROJECT_ID");
        assert_refused(
            &stack,
            command,
            &["--startup-timeout", "2s", "--project-slug", "no-such-slug"],
            78,
            "no-such-slug",
        );
    }
}

mod program {
    //! The program itself: exit status, signals, 126/127, PATH lookup.

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn run_program(stack: &Stack, program: &[&str]) -> Outcome {
        let mut command = Launcher::on(stack);
        command.arg("run").arg("--").args(program);
        command.run()
    }

    #[test]
    fn the_childs_exit_status_is_passed_through() {
        let stack = Stack::start();
        run_program(&stack, &["sh", "-c", "exit 42"]).expect_code(42);
        run_program(&stack, &["sh", "-c", "exit 0"]).expect_code(0);
    }

    #[test]
    fn a_child_killed_by_a_signal_gives_128_plus_the_signal() {
        let stack = Stack::start();
        // Without --watch svid-exec became the program (exec), so its parent
        // sees the program's own death by SIGTERM...
        let outcome = run_program(&stack, &["sh", "-c", "kill -TERM $$"]);
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                (outcome.status.code(), outcome.status.signal()),
                (None, Some(15)),
                "stderr:\n{}",
                outcome.stderr
            );
        }
        // ...which a shell (a CI step, an entrypoint) reports as 128+15.
        let outcome = Launcher::on(&stack)
            .via(&[
                "/bin/sh",
                "-c",
                "\"$0\" run -- sh -c 'kill -TERM $$'; echo \"status=$?\"",
            ])
            .run();
        outcome.expect_code(0);
        assert_eq!(
            String::from_utf8_lossy(&outcome.stdout).trim(),
            "status=143"
        );
    }

    /// The bit of signal `n` in a `/proc/PID/status` signal mask line.
    fn sig_bit(status: &str, field: &str, n: u32) -> bool {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"))
            .trim();
        u64::from_str_radix(hex, 16).expect("hex mask") & (1 << (n - 1)) != 0
    }

    /// Regression: Rust's runtime ignores SIGPIPE, and an ignored signal
    /// survives exec, so the program used to start with SIGPIPE ignored
    /// (`yes | head` then printed "Broken pipe" instead of ending quietly).
    #[test]
    fn the_program_starts_with_sigpipe_at_its_default_action() {
        let stack = Stack::start();
        let outcome = run_program(&stack, &["cat", "/proc/self/status"]);
        outcome.expect_code(0);
        let status = String::from_utf8_lossy(&outcome.stdout);
        assert!(
            !sig_bit(&status, "SigIgn:", 13),
            "SIGPIPE ignored:\n{status}"
        );
        assert!(
            !sig_bit(&status, "SigBlk:", 13),
            "SIGPIPE blocked:\n{status}"
        );

        // Behaviour: a shell's SIGPIPE kills it, as it would without svid-exec.
        let outcome = run_program(&stack, &["sh", "-c", "kill -PIPE $$; echo survived"]);
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                outcome.status.signal(),
                Some(13),
                "stderr:\n{}",
                outcome.stderr
            );
        }
        assert!(outcome.stdout.is_empty());
    }

    #[test]
    fn arguments_reach_the_program_intact() {
        let stack = Stack::start();
        let outcome = run_program(
            &stack,
            &[
                "sh",
                "-c",
                "printf '%s|' \"$@\"",
                "sh",
                "a b",
                "",
                "--flag",
                "ü=1",
                "$HOME",
            ],
        );
        outcome.expect_code(0);
        assert_eq!(
            String::from_utf8_lossy(&outcome.stdout),
            "a b||--flag|ü=1|$HOME|"
        );
    }

    #[test]
    fn command_not_found_is_127_naming_it() {
        let stack = Stack::start();
        run_program(&stack, &["no-such-program-xyz", "arg"])
            .expect_code(127)
            .expect_stderr("command not found: no-such-program-xyz");
    }

    #[test]
    fn a_file_that_is_not_executable_is_126_naming_it() {
        let stack = Stack::start();
        let file = stack.dir().join("not-executable");
        std::fs::write(&file, "#!/bin/sh\necho hi\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path = file.display().to_string();
        run_program(&stack, &[&path])
            .expect_code(126)
            .expect_stderr(&format!("cannot execute {path}"));
    }

    #[test]
    fn a_missing_relative_path_is_127_and_a_directory_is_126() {
        let stack = Stack::start();
        run_program(&stack, &["./no-such-file"])
            .expect_code(127)
            .expect_stderr("command not found: ./no-such-file");
        let dir = stack.dir().display().to_string();
        run_program(&stack, &[&dir])
            .expect_code(126)
            .expect_stderr(&format!("cannot execute {dir}"));
    }

    #[test]
    fn quiet_prints_nothing_on_success_and_still_reports_errors() {
        let stack = Stack::start();
        let mut command = Launcher::on(&stack);
        command.args(["run", "-q", "--", "true"]);
        let outcome = command.run();
        outcome.expect_code(0);
        assert_eq!(outcome.stderr, "", "-q printed something");
        let mut command = Launcher::on(&stack);
        command.args(["run", "-q", "--", "no-such-program-xyz"]);
        command
            .run()
            .expect_code(127)
            .expect_stderr("command not found: no-such-program-xyz");
    }
}

mod size_guard {
    //! A secret too large for one environment string is refused before exec.

    use super::*;

    #[test]
    fn a_secret_over_the_per_string_limit_is_78_naming_it_and_suggesting_files() {
        let stack = Stack::start();
        stack.infisical.set_secret(
            PROJECT_ID,
            ENVIRONMENT,
            "/",
            "HUGE_BLOB",
            &"x".repeat(131_073),
        );
        let outcome = assert_refused(&stack, Launcher::on(&stack), &[], 78, "HUGE_BLOB");
        outcome.expect_stderr("--files-dir");
        assert!(
            !outcome.stderr.contains(&"x".repeat(64)),
            "the value was printed"
        );
    }

    #[test]
    fn a_secret_exactly_at_the_per_string_limit_is_delivered() {
        let stack = Stack::start();
        // `EDGE=` + value + NUL = 131072 bytes, the kernel's MAX_ARG_STRLEN.
        let value = "y".repeat(131_072 - "EDGE=".len() - 1);
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", "EDGE", &value);
        let outcome = run_env(&stack, &[]);
        outcome.expect_code(0);
        assert_eq!(
            outcome.child_env().get("EDGE").map(Vec::len),
            Some(value.len())
        );
    }

    #[test]
    fn an_environment_over_arg_max_is_78_listing_the_largest_secrets() {
        let stack = Stack::start();
        // With a 2 MiB stack limit ARG_MAX is 512 KiB (a quarter of it): six
        // secrets of 100 kB, each under the per-string limit, are over.
        let value = "z".repeat(100_000);
        for i in 0..6 {
            stack
                .infisical
                .set_secret(PROJECT_ID, ENVIRONMENT, "/", &format!("BULK_{i}"), &value);
        }
        let marker = stack.dir().join("bulk-ran");
        let outcome = Launcher::on(&stack)
            .via(&[
                "/bin/sh",
                "-c",
                "ulimit -s 2048 && exec \"$0\" run -- sh -c 'touch \"$1\"' sh \"$1\"",
            ])
            .arg(&marker)
            .run();
        outcome
            .expect_code(78)
            .expect_stderr("over the limit of 524288 bytes for exec (ARG_MAX)")
            .expect_stderr("BULK_0 (100000 bytes)")
            .expect_stderr("--files-dir");
        assert!(!marker.exists(), "the program ran");
        assert!(
            !outcome.stderr.contains(&value[..64]),
            "a value was printed"
        );
    }
}

mod no_secret_in_logs {
    //! At `trace`, in text and JSON, on success and on failures, stderr
    //! carries no secret value, no JWT and no access token.

    use super::*;
    use crate::util::{assert_no_secret, find_jwt_like};

    /// Values that must never appear in a log.
    fn secret_values(stack: &Stack) -> Vec<String> {
        let unique = "s3cret-canary-7f3a9c";
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", "CANARY", unique);
        let mut values: Vec<String> = DEMO_SECRETS.iter().map(|(_, v)| (*v).to_string()).collect();
        values.push(unique.into());
        // A line of the PEM alone, too: a log that splits lines must not leak it.
        values.push("MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdemo0nly".into());
        values
    }

    #[track_caller]
    fn assert_clean(outcome: &Outcome, values: &[String], extra: &[&str]) {
        assert!(!outcome.stderr.is_empty(), "no log at trace level?");
        let values: Vec<&str> = values
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        assert_no_secret(&outcome.stderr, &values);
    }

    /// In JSON mode every stderr line is one JSON object (the final error too).
    #[track_caller]
    fn assert_format(outcome: &Outcome, format: &str) {
        if format == "json" {
            for line in outcome.stderr.lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            }
        }
    }

    fn traced(stack: &Stack, format: &str) -> Launcher {
        let mut command = Launcher::on(stack);
        command.args(["run", "--log-level", "trace", "--log-format", format]);
        command
    }

    #[test]
    fn the_jwt_detector_finds_a_minted_jwt() {
        let stack = Stack::start();
        let jwt = stack
            .agent
            .mint(WORKLOAD, &["infisical"], Duration::from_secs(60));
        let line = format!("token={jwt} next");
        assert_eq!(find_jwt_like(&line), Some(jwt.as_str()));
        assert_eq!(find_jwt_like("eyJ alone, and a.b.c"), None);
    }

    #[test]
    fn success_at_trace_in_text_and_json_logs_nothing_secret() {
        for format in ["text", "json"] {
            let stack = Stack::start();
            let values = secret_values(&stack);
            let mut command = traced(&stack, format);
            command.args(["--", "true"]);
            let outcome = command.run();
            outcome.expect_code(0);
            assert_clean(&outcome, &values, &[]);
            assert_format(&outcome, format);
            // The level took effect: debug events are there (names only).
            outcome.expect_stderr("DEBUG").expect_stderr("CANARY");
        }
    }

    #[test]
    fn success_with_a_jwt_file_at_trace_does_not_log_the_jwt() {
        for format in ["text", "json"] {
            let stack = Stack::start();
            let values = secret_values(&stack);
            let jwt_path = stack.write_jwt_file(Duration::from_secs(300));
            let jwt = std::fs::read_to_string(&jwt_path).expect("read JWT");
            let mut command = traced(&stack, format);
            command
                .args(["--jwt-file"])
                .arg(&jwt_path)
                .args(["--", "true"]);
            let outcome = command.run();
            outcome.expect_code(0);
            assert_clean(&outcome, &values, &[jwt.trim()]);
            assert_format(&outcome, format);
        }
    }

    #[test]
    fn a_refused_login_at_trace_logs_nothing_secret() {
        for format in ["text", "json"] {
            let stack = Stack::start();
            let values = secret_values(&stack);
            stack.agent.set_issuer(Some("https://wrong".into()));
            let jwt_path = stack.write_jwt_file(Duration::from_secs(300));
            let jwt = std::fs::read_to_string(&jwt_path).expect("read JWT");
            let mut command = traced(&stack, format);
            command
                .args(["--startup-timeout", "2s", "--jwt-file"])
                .arg(&jwt_path)
                .args(["--", "true"]);
            let outcome = command.run();
            outcome.expect_code(77);
            assert_clean(&outcome, &values, &[jwt.trim()]);
            assert_format(&outcome, format);
        }
    }

    #[test]
    fn a_server_500_until_the_deadline_at_trace_logs_nothing_secret() {
        for format in ["text", "json"] {
            let stack = Stack::start();
            let values = secret_values(&stack);
            stack
                .infisical
                .fail_next("/api/v4/secrets", 1_000, Fault::Status(500));
            let mut command = traced(&stack, format);
            command.args(["--startup-timeout", "1s", "--", "true"]);
            let outcome = command.run();
            outcome.expect_code(69);
            assert_clean(&outcome, &values, &[]);
            assert_format(&outcome, format);
        }
    }

    #[test]
    fn an_exec_failure_at_trace_logs_nothing_secret() {
        for format in ["text", "json"] {
            let stack = Stack::start();
            let values = secret_values(&stack);
            let mut command = traced(&stack, format);
            command.args(["--", "no-such-program-xyz"]);
            let outcome = command.run();
            outcome
                .expect_code(127)
                .expect_stderr("no-such-program-xyz");
            assert_clean(&outcome, &values, &[]);
            assert_format(&outcome, format);
        }
    }

    #[test]
    fn a_garbage_body_at_trace_logs_nothing_secret() {
        let stack = Stack::start();
        let values = secret_values(&stack);
        stack
            .infisical
            .fail_next("/api/v4/secrets", 1_000, Fault::GarbageBody);
        let mut command = traced(&stack, "text");
        command.args(["--startup-timeout", "1s", "--", "true"]);
        let outcome = command.run();
        outcome
            .expect_code(69)
            .expect_stderr("not the expected JSON");
        assert_clean(&outcome, &values, &[]);
    }
}
