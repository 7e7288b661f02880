//! File delivery through the real binary against the stand-in stack:
//! `svid-exec write --dir` and `svid-exec run --files-dir … -- CMD` with the
//! per-key, dotenv and JSON layouts (exact bytes), modes and owner, the tmpfs
//! refusal (before any request), names that cannot be files, `--env-file-refs`,
//! `--no-env`, and failures that must leave the previous generation intact.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::stack::{Stack, DEMO_SECRETS, ENVIRONMENT, PROJECT_ID};

use super::{assert_no_request, entries, generations, mode_of};
use crate::util::{assert_no_secret, disk_scratch, parse_env0, tmpfs_scratch, Launcher};

/// Every run is bounded: a stuck launcher is killed and the test fails.
const BOUND: Duration = Duration::from_secs(90);

/// Values beyond the demo set: with and without a trailing newline, quotes,
/// `=`, shell metacharacters, backslashes, empty.
const EXTRA_SECRETS: &[(&str, &str)] = &[
    ("NO_TRAILING_NL", "last line has no newline"),
    ("TRAILING_NL", "ends in newlines\n\n"),
    ("QUOTES", r#"it's "double" '' ' \' end"#),
    ("EQUALS", "a=b==c="),
    ("SHELL_META", "$HOME ${PATH} $(id) `id` * ? ; & | < > #"),
    ("BACKSLASH", r"C:\temp\n\\x"),
    ("TAB_CR", "a\tb\r\nc"),
    ("EMPTY", ""),
];

// ---------------------------------------------------------------------------
// Helpers

fn stack() -> Stack {
    let stack = Stack::start();
    for (key, value) in EXTRA_SECRETS {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", key, value);
    }
    stack
}

fn all_secrets() -> BTreeMap<String, String> {
    DEMO_SECRETS
        .iter()
        .chain(EXTRA_SECRETS)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `svid-exec ARGS` against `stack`, bounded by [`BOUND`].
fn svid_exec(stack: &Stack, args: &[&str]) -> Launcher {
    let mut launcher = Launcher::on(stack);
    launcher.args(args).limit(BOUND);
    launcher
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Everything under `dir` (links as their targets, files as their bytes),
/// with its mode: what "intact" is compared against.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_owned();
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, (mode, target.into_os_string().into_encoded_bytes()));
            } else if meta.is_dir() {
                out.insert(rel, (mode, Vec::new()));
                stack.push(path);
            } else {
                out.insert(rel, (mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// The dotenv bytes the contract promises, derived independently: one
/// `NAME='value'` line per secret in name order, `'` written as `'\''`.
fn expected_dotenv(secrets: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in secrets {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"='");
        out.extend_from_slice(v.replace('\'', r"'\''").as_bytes());
        out.extend_from_slice(b"'\n");
    }
    out
}

/// The JSON bytes: one compact object in name order and a newline (none of
/// the test values holds a character the two encoders escape differently).
fn expected_json(secrets: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = serde_json::to_vec(secrets).unwrap();
    out.push(b'\n');
    out
}

/// `. FILE` in sh, then the value of `key` exactly as sh holds it.
fn sourced_value(file: &Path, key: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .env_clear()
        .arg("-c")
        .arg(format!(". \"$1\" && printf %s \"${key}\""))
        .arg("sh")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh could not source {}: {out:?}",
        file.display()
    );
    out.stdout
}

/// Asserts DIR holds exactly the per-key layout for `secrets`: `..data`, `..svid-exec`, one
/// generation, one `KEY -> ..data/KEY` link per secret whose bytes are exact.
fn assert_per_key_layout(dir: &Path, secrets: &BTreeMap<String, String>, extra: &[&str]) {
    let gens = generations(dir);
    assert_eq!(gens.len(), 1, "one generation in {:?}", entries(dir));
    let mut want: Vec<String> = secrets.keys().cloned().collect();
    want.push("..data".into());
    want.push("..svid-exec".into());
    want.push(gens[0].clone());
    want.extend(extra.iter().map(|s| (*s).to_owned()));
    want.sort();
    assert_eq!(entries(dir), want);
    assert_eq!(
        std::fs::read_link(dir.join("..data")).unwrap(),
        PathBuf::from(&gens[0])
    );
    for (key, value) in secrets {
        assert_eq!(
            std::fs::read_link(dir.join(key)).unwrap(),
            PathBuf::from(format!("..data/{key}")),
            "{key} is a link into ..data"
        );
        assert_eq!(
            std::fs::read(dir.join(key)).unwrap(),
            value.as_bytes(),
            "{key} holds its value byte for byte"
        );
    }
}

// ---------------------------------------------------------------------------
// Layouts

#[test]
fn write_produces_per_key_dotenv_and_json_layouts_with_exact_bytes() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let dotenv = scratch.path().join("app.env");
    let json = scratch.path().join("app.json");
    let out = svid_exec(
        &stack,
        &[
            "write",
            "--dir",
            dir.to_str().unwrap(),
            "--dotenv-file",
            dotenv.to_str().unwrap(),
            "--json-file",
            json.to_str().unwrap(),
        ],
    )
    .run();
    out.expect_code(0);
    let secrets = all_secrets();
    assert_per_key_layout(&dir, &secrets, &[]);
    assert_eq!(std::fs::read(&dotenv).unwrap(), expected_dotenv(&secrets));
    assert_eq!(std::fs::read(&json).unwrap(), expected_json(&secrets));
    let parsed: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(parsed, secrets);
    for (key, value) in &secrets {
        assert_eq!(
            sourced_value(&dotenv, key),
            value.as_bytes(),
            "`. app.env` restores {key} byte for byte"
        );
    }
    // No temp files or probes left beside the outputs.
    assert_eq!(entries(scratch.path()), ["app.env", "app.json", "secrets"]);
    // Nothing about the values reached the log.
    let values: Vec<&str> = secrets.values().map(String::as_str).collect();
    assert_no_secret(&out.stderr, &values);
}

#[test]
fn a_second_write_is_fully_on_disk_at_exit_with_only_the_new_generation_left() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let args = ["write", "--dir", dir.to_str().unwrap()];
    svid_exec(&stack, &args).run().expect_code(0);
    let first = generations(&dir);

    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "TRAILING_NL", "changed\n");
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "ADDED", "new key");
    assert!(stack
        .infisical
        .delete_secret(PROJECT_ID, ENVIRONMENT, "/", "EQUALS"));
    svid_exec(&stack, &args).run().expect_code(0);

    // At exit: the new values, the new key, the removed key's link gone, the
    // old generation removed.
    let mut secrets = all_secrets();
    secrets.insert("TRAILING_NL".into(), "changed\n".into());
    secrets.insert("ADDED".into(), "new key".into());
    secrets.remove("EQUALS");
    assert_per_key_layout(&dir, &secrets, &[]);
    assert_ne!(generations(&dir), first);
    assert!(!dir.join("EQUALS").exists());
}

#[test]
fn run_files_dir_writes_before_the_program_starts() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let dotenv = scratch.path().join("app.env");
    // The program copies what it finds at start, so the test sees what was
    // there before exec, not after.
    let seen = scratch.path().join("seen");
    let script = r#"cat "$1/TLS_KEY" > "$2.tls" && cat "$1/NO_TRAILING_NL" > "$2.nonl" && . "$3" && printf %s "$QUOTES" > "$2.quotes""#;
    let out = svid_exec(
        &stack,
        &[
            "run",
            "--files-dir",
            dir.to_str().unwrap(),
            "--dotenv-file",
            dotenv.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
            "sh",
            dir.to_str().unwrap(),
            seen.to_str().unwrap(),
            dotenv.to_str().unwrap(),
        ],
    )
    .run();
    out.expect_code(0);
    let secrets = all_secrets();
    let read = |suffix: &str| std::fs::read(format!("{}.{suffix}", seen.display())).unwrap();
    assert_eq!(read("tls"), secrets["TLS_KEY"].as_bytes());
    assert_eq!(read("nonl"), secrets["NO_TRAILING_NL"].as_bytes());
    assert_eq!(read("quotes"), secrets["QUOTES"].as_bytes());
    assert_per_key_layout(&dir, &secrets, &[]);
}

#[test]
fn a_program_that_cannot_start_leaves_no_secret_file_behind() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let not_executable = scratch.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    for (program, code) in [
        ("/nonexistent/program".to_owned(), 127),
        (not_executable.to_str().unwrap().to_owned(), 126),
    ] {
        let dir = scratch.path().join(format!("secrets-{code}"));
        let dotenv = scratch.path().join(format!("app-{code}.env"));
        let out = svid_exec(
            &stack,
            &[
                "run",
                "--files-dir",
                dir.to_str().unwrap(),
                "--dotenv-file",
                dotenv.to_str().unwrap(),
                "--",
                &program,
            ],
        )
        .run();
        out.expect_code(code);
        let left = if dir.exists() {
            entries(&dir)
        } else {
            Vec::new()
        };
        assert!(
            left.is_empty(),
            "{program}: files left in {dir:?}: {left:?}"
        );
        assert!(
            !dotenv.exists(),
            "{program}: the dotenv file was left behind"
        );
    }
}

// ---------------------------------------------------------------------------
// Modes and owner

#[test]
fn files_are_0400_by_default_and_a_private_created_directory() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let dotenv = scratch.path().join("app.env");
    let out = svid_exec(
        &stack,
        &[
            "write",
            "--dir",
            dir.to_str().unwrap(),
            "--dotenv-file",
            dotenv.to_str().unwrap(),
        ],
    )
    .run();
    out.expect_code(0);
    let generation = dir.join(&generations(&dir)[0]);
    for key in all_secrets().keys() {
        assert_eq!(mode_of(&generation.join(key)), 0o400, "{key}");
    }
    assert_eq!(mode_of(&dotenv), 0o400);
    // Created by svid-exec: owner only; a sealed generation is not writable.
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&generation), 0o500);
}

/// `--file-mode` that lets the group (or others) read also gives them search
/// (x) on the directories svid-exec creates, and nothing more: no read (list)
/// and no write, so they can open a key they know but not enumerate keys.
/// These modes are set explicitly, so they are the same under any umask:
/// `umask 077` does not narrow them, `umask 000` does not widen them.
#[test]
fn a_group_readable_file_mode_gives_the_group_search_on_directories_only_under_any_umask() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    for umask in ["077", "022", "000"] {
        for (file_mode, dir_mode, gen_mode) in [
            ("0400", 0o700, 0o500),
            ("0440", 0o710, 0o510),
            ("0444", 0o711, 0o511),
            ("0600", 0o700, 0o500),
        ] {
            let dir = scratch.path().join(format!("secrets-{umask}-{file_mode}"));
            let out = svid_exec(
                &stack,
                &[
                    "write",
                    "--dir",
                    dir.to_str().unwrap(),
                    "--file-mode",
                    file_mode,
                ],
            )
            .via(&["sh", "-c", &format!("umask {umask}; exec \"$0\" \"$@\"")])
            .run();
            out.expect_code(0);
            let what = format!("umask {umask}, --file-mode {file_mode}");
            let generation = dir.join(&generations(&dir)[0]);
            let want = u32::from_str_radix(file_mode, 8).unwrap();
            for key in all_secrets().keys() {
                assert_eq!(mode_of(&generation.join(key)), want, "{what}: {key}");
            }
            assert_eq!(mode_of(&dir), dir_mode, "{what}: DIR");
            assert_eq!(mode_of(&generation), gen_mode, "{what}: generation");
        }
    }
}

/// Runs `cat PATH` as `uid:gid` (no supplementary groups) through `setpriv`.
fn cat_as(uid: u32, gid: u32, path: &Path) -> Option<Output> {
    as_user(uid, gid, "cat", path)
}

/// Runs `PROGRAM PATH` as `uid:gid` (no supplementary groups) through `setpriv`.
fn as_user(uid: u32, gid: u32, program: &str, path: &Path) -> Option<Output> {
    if Command::new("setpriv").arg("--version").output().is_err() {
        return None;
    }
    Some(
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
                program,
            ])
            .arg(path)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap(),
    )
}

#[test]
fn file_owner_is_applied_and_the_owner_and_group_can_read_but_others_cannot() {
    if !is_root() {
        eprintln!("skipped: --file-owner needs root (CI runs the tests as root)");
        return;
    }
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    // The scratch parent must be passable for the unprivileged readers.
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let dotenv = scratch.path().join("app.env");
    let out = svid_exec(
        &stack,
        &[
            "write",
            "--dir",
            dir.to_str().unwrap(),
            "--dotenv-file",
            dotenv.to_str().unwrap(),
            "--file-mode",
            "0440",
            "--file-owner",
            "1000:1000",
        ],
    )
    .run();
    out.expect_code(0);
    let generation = dir.join(&generations(&dir)[0]);
    let owned = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    for key in all_secrets().keys() {
        assert_eq!(owned(&generation.join(key)), (1000, 1000), "{key}");
        assert_eq!(mode_of(&generation.join(key)), 0o440, "{key}");
    }
    assert_eq!(owned(&generation), (1000, 1000));
    assert_eq!(owned(&dir), (1000, 1000));
    assert_eq!(owned(&dotenv), (1000, 1000));

    let tls = dir.join("TLS_KEY");
    let want = all_secrets()["TLS_KEY"].clone();
    let Some(as_owner) = cat_as(1000, 1000, &tls) else {
        eprintln!("skipped the read-as-another-user part: setpriv is not installed");
        return;
    };
    assert!(as_owner.status.success(), "owner: {as_owner:?}");
    assert_eq!(as_owner.stdout, want.as_bytes());
    // Another user in the group reads through the group bits (and the group
    // search bit on DIR and the generation).
    let as_group = cat_as(1001, 1000, &tls).unwrap();
    assert!(as_group.status.success(), "group member: {as_group:?}");
    assert_eq!(as_group.stdout, want.as_bytes());
    let as_other = cat_as(1001, 1001, &tls).unwrap();
    assert!(
        !as_other.status.success(),
        "others must not read: {as_other:?}"
    );
}

// ---------------------------------------------------------------------------
// tmpfs

#[test]
fn a_disk_backed_target_is_refused_78_before_any_request_and_nothing_runs() {
    let Some(disk) = disk_scratch() else {
        return;
    };
    let stack = stack();
    let dir = disk.path().join("secrets");
    let marker = disk.path().join("child-ran");
    let cases: [Vec<&str>; 3] = [
        vec!["write", "--dir", dir.to_str().unwrap()],
        vec![
            "run",
            "--files-dir",
            dir.to_str().unwrap(),
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
        vec![
            "run",
            "--dotenv-file",
            dir.to_str().unwrap(),
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    ];
    for args in &cases {
        let out = svid_exec(&stack, args).run();
        out.expect_code(78);
        let err = &out.stderr;
        assert!(err.contains("disk-backed"), "{args:?}: {err}");
        assert!(err.contains("--allow-non-tmpfs"), "{args:?}: {err}");
        assert!(!marker.exists(), "{args:?}: the program ran");
        assert!(
            entries(disk.path()).is_empty(),
            "{args:?}: wrote {:?}",
            entries(disk.path())
        );
    }
    assert_no_request(&stack);
}

#[test]
fn allow_non_tmpfs_accepts_a_disk_backed_target() {
    let Some(disk) = disk_scratch() else {
        return;
    };
    let stack = stack();
    let dir = disk.path().join("secrets");
    let out = svid_exec(
        &stack,
        &["write", "--dir", dir.to_str().unwrap(), "--allow-non-tmpfs"],
    )
    .run();
    out.expect_code(0);
    assert_per_key_layout(&dir, &all_secrets(), &[]);
    // The counterpart of the refusal's "no call at all".
    assert!(!stack.agent.calls().is_empty());
    assert!(!stack.infisical.requests().is_empty());
}

#[test]
fn a_tmpfs_target_is_accepted_without_the_flag() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    // An existing directory (as an emptyDir is) and one svid-exec creates.
    let existing = scratch.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    for dir in [existing, scratch.path().join("created")] {
        let out = svid_exec(&stack, &["write", "--dir", dir.to_str().unwrap()]).run();
        out.expect_code(0);
        assert_per_key_layout(&dir, &all_secrets(), &[]);
    }
}

// ---------------------------------------------------------------------------
// Names

#[test]
fn a_key_that_cannot_be_a_file_name_is_refused_78_naming_it_with_nothing_written() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let marker = scratch.path().join("child-ran");
    for bad in ["..", "a/b", "."] {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", bad, "evil");
        let dir = scratch.path().join("secrets");
        for args in [
            vec!["write", "--dir", dir.to_str().unwrap()],
            vec![
                "run",
                "--files-dir",
                dir.to_str().unwrap(),
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
            vec![
                "run",
                "--files-dir",
                dir.to_str().unwrap(),
                "--no-env",
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
        ] {
            let out = svid_exec(&stack, &args).run();
            out.expect_code(78);
            let err = &out.stderr;
            assert!(
                err.contains(&format!("{bad:?}")),
                "{bad:?} {args:?}: the error names the key: {err}"
            );
            assert!(!err.contains("evil"), "{err}");
            assert!(!marker.exists(), "{bad:?} {args:?}: the program ran");
            // The (empty) directory may have been created by the preflight;
            // nothing is in it, and nothing escaped next to it.
            if dir.exists() {
                assert!(entries(&dir).is_empty(), "{bad:?}: {:?}", entries(&dir));
            }
            let beside: Vec<String> = entries(scratch.path())
                .into_iter()
                .filter(|n| n != "secrets")
                .collect();
            assert!(beside.is_empty(), "{bad:?}: {beside:?}");
            assert!(!scratch.path().join("a").exists());
            assert!(!Path::new("/dev/shm/b").exists());
        }
        assert!(stack
            .infisical
            .delete_secret(PROJECT_ID, ENVIRONMENT, "/", bad));
    }
}

#[test]
fn a_refused_name_keeps_the_previous_generation() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let args = ["write", "--dir", dir.to_str().unwrap()];
    svid_exec(&stack, &args).run().expect_code(0);
    let before = snapshot(&dir);
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "..", "evil");
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "GREETING", "changed");
    svid_exec(&stack, &args).run().expect_code(78);
    assert_eq!(snapshot(&dir), before);
}

// ---------------------------------------------------------------------------
// What the child sees

/// Runs `sh -c SCRIPT sh SCRIPT_ARGS…` under `svid-exec run ARGS` and
/// returns its stdout.
fn child_output(
    stack: &Stack,
    cwd: Option<&Path>,
    args: &[&str],
    script: &str,
    script_args: &[&str],
) -> Vec<u8> {
    let mut all: Vec<&str> = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", script, "sh"]);
    all.extend_from_slice(script_args);
    let mut cmd = svid_exec(stack, &all);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = cmd.run();
    out.expect_code(0);
    out.stdout
}

/// Splits the child's output at the first `\x01` line: before it `env -0`,
/// after it whatever the script printed next.
fn env_and_rest(out: &[u8]) -> (BTreeMap<String, String>, Vec<u8>) {
    let at = out
        .iter()
        .position(|b| *b == 1)
        .expect("separator in the child's output");
    let env = parse_env0(&out[..at])
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    (env, out[at + 1..].to_vec())
}

fn assert_no_secret_value_in(env: &BTreeMap<String, String>) {
    for (key, value) in all_secrets() {
        assert!(!env.contains_key(&key), "{key} is in the environment");
        if value.len() > 3 {
            assert!(
                !env.values().any(|v| v.contains(&value)),
                "the value of {key} is in the environment"
            );
        }
    }
    for bootstrap in [
        "INFISICAL_API_URL",
        "SPIFFE_ENDPOINT_SOCKET",
        "SVID_EXEC_CA_CERT",
    ] {
        assert!(!env.contains_key(bootstrap), "{bootstrap} leaked");
    }
}

#[test]
fn env_file_refs_gives_the_child_key_file_paths_it_can_read_instead_of_values() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let out = child_output(
        &stack,
        None,
        &["--files-dir", dir.to_str().unwrap(), "--env-file-refs"],
        r#"env -0; printf '\001'; cd / && cat "$TLS_KEY_FILE""#,
        &[],
    );
    let (env, rest) = env_and_rest(&out);
    let secrets = all_secrets();
    for key in secrets.keys() {
        assert_eq!(
            env.get(&format!("{key}_FILE")).map(PathBuf::from),
            Some(dir.join(key)),
            "{key}_FILE"
        );
    }
    assert_no_secret_value_in(&env);
    assert_eq!(rest, secrets["TLS_KEY"].as_bytes());
}

#[test]
fn env_file_refs_with_a_relative_files_dir_are_absolute() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    // Only the last component of a target directory is created.
    std::fs::create_dir(scratch.path().join("rel")).unwrap();
    let out = child_output(
        &stack,
        Some(scratch.path()),
        &["--files-dir", "rel/secrets", "--env-file-refs"],
        r#"env -0; printf '\001'; cd / && cat "$DATABASE_URL_FILE""#,
        &[],
    );
    let (env, rest) = env_and_rest(&out);
    let path = PathBuf::from(&env["DATABASE_URL_FILE"]);
    assert!(path.is_absolute(), "{path:?}");
    let want = scratch
        .path()
        .canonicalize()
        .unwrap()
        .join("rel/secrets/DATABASE_URL");
    assert_eq!(path, want);
    assert_eq!(rest, all_secrets()["DATABASE_URL"].as_bytes());
}

#[test]
fn no_env_keeps_every_secret_out_of_the_environment_and_in_the_files() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let out = child_output(
        &stack,
        None,
        &["--files-dir", dir.to_str().unwrap(), "--no-env"],
        r#"env -0; printf '\001'; cat "$1/GREETING""#,
        &[dir.to_str().unwrap()],
    );
    let (env, rest) = env_and_rest(&out);
    assert_no_secret_value_in(&env);
    assert!(
        !env.keys().any(|k| k.ends_with("_FILE")),
        "no *_FILE refs without --env-file-refs: {:?}",
        env.keys().collect::<Vec<_>>()
    );
    assert_eq!(rest, all_secrets()["GREETING"].as_bytes());
    assert_per_key_layout(&dir, &all_secrets(), &[]);
}

// ---------------------------------------------------------------------------
// Failures keep the previous generation

#[test]
fn a_failed_write_leaves_the_previous_generation_intact() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let dotenv = dir.join("app.env");
    let json = scratch.path().join("app.json");
    let args = [
        "write",
        "--dir",
        dir.to_str().unwrap(),
        "--dotenv-file",
        dotenv.to_str().unwrap(),
        "--json-file",
        json.to_str().unwrap(),
        "--startup-timeout",
        "2s",
    ];
    svid_exec(&stack, &args).run().expect_code(0);
    let before_dir = snapshot(&dir);
    let before_json = std::fs::read(&json).unwrap();
    assert_per_key_layout(&dir, &all_secrets(), &["app.env"]);
    // A successful write now would change the files.
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "GREETING", "changed");

    // Refused login: the token's audience is not the one the identity accepts.
    let mut refused = args.to_vec();
    refused.extend_from_slice(&["--audience", "not-infisical"]);
    let out = svid_exec(&stack, &refused).run();
    out.expect_code(77);
    assert_eq!(snapshot(&dir), before_dir, "after the refused login");
    assert_eq!(std::fs::read(&json).unwrap(), before_json);

    // Logged in, then the secrets route fails until the startup timeout.
    let earlier = stack.infisical.requests().len();
    for route in ["/api/v4/secrets", "/api/v3/secrets/raw"] {
        stack
            .infisical
            .fail_next(route, 100_000, Fault::Status(500));
    }
    let out = svid_exec(&stack, &args).run();
    out.expect_code(69);
    assert_eq!(
        snapshot(&dir),
        before_dir,
        "after the failing secrets route"
    );
    assert_eq!(std::fs::read(&json).unwrap(), before_json);
    let requests = stack.infisical.requests().split_off(earlier);
    assert!(requests
        .iter()
        .any(|r| r.path.ends_with("/login") && r.status == 200));
    assert!(requests
        .iter()
        .any(|r| r.path == "/api/v4/secrets" && r.status == 500));

    // The whole server failing until the startup timeout.
    stack
        .infisical
        .fail_next("/api/*", 100_000, Fault::Status(500));
    let out = svid_exec(&stack, &args).run();
    out.expect_code(69);
    assert_eq!(snapshot(&dir), before_dir, "after the unavailable server");
    assert_eq!(std::fs::read(&json).unwrap(), before_json);
    assert_eq!(entries(scratch.path()), ["app.json", "secrets"]);
}

#[test]
fn a_json_only_target_carries_keys_that_could_not_be_file_names() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "a/b", "slash");
    let json = scratch.path().join("app.json");
    let out = svid_exec(&stack, &["write", "--json-file", json.to_str().unwrap()]).run();
    out.expect_code(0);
    let mut secrets = all_secrets();
    secrets.insert("a/b".into(), "slash".into());
    assert_eq!(std::fs::read(&json).unwrap(), expected_json(&secrets));
    // The same key with per-key files is refused.
    let dir = scratch.path().join("secrets");
    let out = svid_exec(
        &stack,
        &[
            "write",
            "--dir",
            dir.to_str().unwrap(),
            "--json-file",
            json.to_str().unwrap(),
        ],
    )
    .run();
    out.expect_code(78);
    assert_eq!(std::fs::read(&json).unwrap(), expected_json(&secrets));
}

/// An owner this process may not give files to is refused (78, "not
/// permitted") by the preflight: before any request and with nothing written.
/// Needs root to drop to an unprivileged user for the run.
#[test]
fn an_owner_change_that_is_not_permitted_is_refused_78_before_any_request() {
    if !is_root() {
        eprintln!("skipped: needs root to run svid-exec as an unprivileged user");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv is not installed");
        return;
    }
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let stack = stack();
    let dir = scratch.path().join("secrets");
    let marker = scratch.path().join("child-ran");
    for args in [
        vec![
            "write",
            "--dir",
            dir.to_str().unwrap(),
            "--file-owner",
            "0:0",
        ],
        vec![
            "run",
            "--files-dir",
            dir.to_str().unwrap(),
            "--file-owner",
            "0",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    ] {
        let out = svid_exec(&stack, &args)
            .via(&[
                "setpriv",
                "--reuid=1000",
                "--regid=1000",
                "--clear-groups",
                "--",
            ])
            .run();
        out.expect_code(78);
        let err = &out.stderr;
        assert!(err.contains("not permitted"), "{args:?}: {err}");
        assert!(!marker.exists(), "{args:?}: the program ran");
        if dir.exists() {
            assert!(entries(&dir).is_empty(), "{args:?}: {:?}", entries(&dir));
        }
    }
    assert_no_request(&stack);
}

/// A link planted where svid-exec writes (the directory, a key's slot, the
/// dotenv file) is refused with 78; the file it points at is not touched.
#[test]
fn a_planted_symlink_cannot_redirect_a_write() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = stack();
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    let real = scratch.path().join("real");
    std::fs::create_dir(&real).unwrap();

    // DIR itself is a link.
    let linked_dir = scratch.path().join("linked");
    std::os::unix::fs::symlink(&real, &linked_dir).unwrap();
    // A key's slot in DIR is a link that is not ours.
    let dir = scratch.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("TLS_KEY")).unwrap();
    // The dotenv target is a link.
    let dotenv = scratch.path().join("app.env");
    std::os::unix::fs::symlink(&victim, &dotenv).unwrap();

    for args in [
        vec!["write", "--dir", linked_dir.to_str().unwrap()],
        vec!["write", "--dir", dir.to_str().unwrap()],
        vec!["write", "--dotenv-file", dotenv.to_str().unwrap()],
    ] {
        let out = svid_exec(&stack, &args).run();
        out.expect_code(78);
        assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch", "{args:?}");
        assert!(entries(&real).is_empty(), "{args:?}: {:?}", entries(&real));
        assert_eq!(entries(&dir), ["TLS_KEY"], "{args:?}");
    }
}
