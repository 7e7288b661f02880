//! Choosing and naming what is delivered, through the real binary against
//! the stand-ins: `--only` and `--map` reach the environment and every file
//! alike (one selected set), absent keys and two secrets under one name are
//! 78 before anything runs, names a target cannot carry are reported all at
//! once with the `--map` that fixes them; the Infisical CLI's spellings
//! (`--projectId`, `--domain …/api`, `--tags`, `--silent`) work; JSON logs
//! keep lists as arrays.

use std::collections::BTreeMap;

use svid_exec_testkit::stack::{Stack, ENVIRONMENT, PROJECT_ID};

use crate::util::{parse_env0, tmpfs_scratch, Launcher, Outcome};

/// The demo secrets plus two keys that are not shell names.
fn stack() -> Stack {
    let stack = Stack::start();
    for (key, value) in [("db-password", "hunter2"), ("api.token", "t0k3n")] {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", key, value);
    }
    stack
}

/// `svid-exec run ARGS -- env -0`: the child's environment.
fn run_env(stack: &Stack, args: &[&str]) -> Outcome {
    Launcher::on(stack)
        .arg("run")
        .args(args)
        .args(["--", "env", "-0"])
        .audited()
        .run()
}

/// The secrets among the child's variables (the launcher's own `PATH` aside).
fn delivered(out: &Outcome) -> BTreeMap<String, String> {
    parse_env0(&out.stdout)
        .into_iter()
        .filter(|(k, _)| k != "PATH")
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn only_and_map_choose_and_rename_what_the_environment_gets() {
    let stack = stack();
    let out = run_env(
        &stack,
        &["--only", "GREETING", "--map", "db-password=DB_PASSWORD"],
    );
    out.expect_code(0);
    let env = delivered(&out);
    assert_eq!(
        env.keys().collect::<Vec<_>>(),
        ["DB_PASSWORD", "GREETING"],
        "only the listed key and the mapped one, under its new name"
    );
    assert_eq!(env["DB_PASSWORD"], "hunter2");

    // From the environment, comma-separated; --require names the key as in
    // Infisical.
    let out = Launcher::on(&stack)
        .envs([
            ("SVID_EXEC_ONLY", "DATABASE_URL"),
            (
                "SVID_EXEC_MAP",
                "db-password=PGPASSWORD,api.token=API_TOKEN",
            ),
            ("SVID_EXEC_REQUIRE", "db-password"),
        ])
        .args(["run", "--", "env", "-0"])
        .run();
    out.expect_code(0);
    assert_eq!(
        delivered(&out).keys().collect::<Vec<_>>(),
        ["API_TOKEN", "DATABASE_URL", "PGPASSWORD"]
    );
}

#[test]
fn the_same_selection_reaches_every_file_target() {
    let Some(shm) = tmpfs_scratch() else { return };
    let stack = stack();
    let dir = shm.path().join("files");
    let dotenv = shm.path().join("s.env");
    let json = shm.path().join("s.json");
    let sources = tempfile::tempdir().unwrap();
    let template = |name: &str, text: &str| {
        let src = sources.path().join(name);
        std::fs::write(&src, text).unwrap();
        format!("{}:{}", src.display(), shm.path().join(name).display())
    };
    let selected = [
        "--only",
        "GREETING",
        "--map",
        "db-password=DB_PASSWORD,api.token=API_TOKEN",
    ];
    let out = Launcher::on(&stack)
        .arg("write")
        .args(selected)
        .arg("--dir")
        .arg(&dir)
        .arg("--dotenv-file")
        .arg(&dotenv)
        .arg("--json-file")
        .arg(&json)
        .args([
            "--template",
            &template("t", "{{ DB_PASSWORD }} {{ API_TOKEN }}"),
        ])
        .audited()
        .run();
    out.expect_code(0);
    // A template names secrets as they are delivered.
    assert_eq!(
        std::fs::read_to_string(shm.path().join("t")).unwrap(),
        "hunter2 t0k3n"
    );
    for unselected in ["{{ DATABASE_URL }}", "{{ secrets[\"db-password\"] }}"] {
        Launcher::on(&stack)
            .arg("write")
            .args(selected)
            .args(["--template", &template("u", unselected)])
            .run()
            .expect_code(78)
            .expect_stderr("undefined");
        assert!(!shm.path().join("u").exists());
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with(".."))
        .collect();
    files.sort();
    assert_eq!(files, ["API_TOKEN", "DB_PASSWORD", "GREETING"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("DB_PASSWORD")).unwrap(),
        "hunter2"
    );
    let dotenv = std::fs::read_to_string(&dotenv).unwrap();
    let names: Vec<&str> = dotenv
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    assert_eq!(names, ["API_TOKEN", "DB_PASSWORD", "GREETING"]);
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        json.keys().collect::<Vec<_>>(),
        ["API_TOKEN", "DB_PASSWORD", "GREETING"]
    );
    assert_eq!(json["API_TOKEN"], "t0k3n");
}

#[test]
fn absent_keys_and_two_secrets_under_one_name_are_78_before_anything_runs() {
    let stack = stack();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--only", "GREETING,NOPE", "--map", "GONE=X", "--require", "ALSO_GONE"],
            &["required secrets are missing: ALSO_GONE (--require), NOPE (--only), GONE (--map GONE=X)"],
        ),
        (
            &["--map", "db-password=GREETING"],
            &[
                "--map would deliver several secrets under one name: GREETING (from GREETING and db-password)",
                "hint: map one of them to another name",
            ],
        ),
    ];
    for (args, expected) in cases {
        let out = Launcher::on(&stack)
            .arg("run")
            .args(*args)
            .marked_program(stack.dir())
            .audited()
            .run();
        out.expect_refused(78, expected);
    }
    // Known before fetching: no request.
    let before = stack.infisical.requests().len();
    let out = Launcher::on(&stack)
        .args(["run", "--map", "db-password=X,api.token=X"])
        .marked_program(stack.dir())
        .run();
    out.expect_refused(78, &["X (from db-password and api.token)"]);
    assert_eq!(
        stack.infisical.requests().len(),
        before,
        "a request was made"
    );
}

#[test]
fn names_a_target_cannot_carry_are_reported_all_at_once_with_the_map_that_fixes_them() {
    let Some(shm) = tmpfs_scratch() else { return };
    let stack = stack();
    let dotenv = shm.path().join("s.env");
    let out = Launcher::on(&stack)
        .args(["write", "--dotenv-file"])
        .arg(&dotenv)
        .audited()
        .run();
    out.expect_code(78)
        .expect_stderr("2 secrets cannot be delivered as asked")
        .expect_stderr("\"api.token\" in the dotenv file")
        .expect_stderr("\"db-password\" in the dotenv file")
        .expect_stderr("hint: rename with --map api.token=API_TOKEN,db-password=DB_PASSWORD");
    assert!(!dotenv.exists(), "nothing is written");

    // With that --map, the same run succeeds.
    let out = Launcher::on(&stack)
        .args([
            "write",
            "--map",
            "api.token=API_TOKEN,db-password=DB_PASSWORD",
            "--dotenv-file",
        ])
        .arg(&dotenv)
        .run();
    out.expect_code(0);

    // In the environment they are delivered, with one warning naming both.
    let out = run_env(&stack, &[]);
    out.expect_code(0);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("not portable shell variable names"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("api.token, db-password")
            && warnings[0].contains("--map api.token=API_TOKEN,db-password=DB_PASSWORD"),
        "{}",
        warnings[0]
    );
    assert_eq!(delivered(&out)["db-password"], "hunter2");
}

#[test]
fn the_infisical_clis_spellings_work() {
    let stack = Stack::start();
    stack
        .infisical
        .set_secret_tagged(PROJECT_ID, ENVIRONMENT, "/", "TAGGED", "yes", &["app"]);
    let api = format!("{}/api", stack.infisical.url());
    let mut launcher = Launcher::on(&stack);
    launcher
        .env_remove("INFISICAL_API_URL")
        .env_remove("INFISICAL_PROJECT_ID")
        .args(["run", "--domain", &api, "--projectId", PROJECT_ID])
        .args(["--tags", "app", "--silent", "--", "env", "-0"]);
    let out = launcher.audited().run();
    out.expect_code(0);
    assert_eq!(
        delivered(&out).get("TAGGED").map(String::as_str),
        Some("yes")
    );
    assert!(
        !delivered(&out).contains_key("GREETING"),
        "--tags selects by tag"
    );
    assert!(out.stderr.is_empty(), "--silent: {}", out.stderr);
}

#[test]
fn json_logs_keep_lists_as_arrays() {
    let stack = stack();
    let out = run_env(&stack, &["--log-format", "json"]);
    out.expect_code(0);
    let fetched: serde_json::Value = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|o| o["message"] == "fetched secrets")
        .unwrap_or_else(|| panic!("no 'fetched secrets' line:\n{}", out.stderr));
    assert_eq!(fetched["paths"], serde_json::json!(["/"]));
    assert_eq!(fetched["count"], 5, "{fetched}");
}
