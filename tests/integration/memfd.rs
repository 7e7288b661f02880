//! `run --memfd` end to end: the program (a python3 probe) finds each secret
//! through `KEY_FILE=/proc/self/fd/N`, reads it byte for byte, sees the seals
//! (`F_GET_SEALS`) and `/memfd:` behind the link, inherits the descriptor
//! without close-on-exec and has no value in its environment; no file with a
//! secret appears on any tmpfs; under `--watch` every start gets fresh
//! memfds and the supervisor keeps none; signal mode and the cap are 78. A
//! template rendered to `memfd:NAME` is one more memfd after the secrets',
//! named by `NAME_FILE`, with or without `--memfd`.

use std::collections::BTreeMap;

use serde_json::Value;
use svid_exec_testkit::stack::{Stack, DEMO_SECRETS, ENVIRONMENT, PROJECT_ID};

use crate::util::{assert_no_secret, wait_for, Launcher, Scratch};
use crate::watch::{set, stack_with, Watched, WAIT};

/// Prints, as JSON on stdout, what the program sees: for every `*_FILE`
/// variable naming `/proc/self/fd/N`, the descriptor, its bytes (hex), its
/// seals, its link and whether it is close-on-exec; and the environment.
const PROBE: &str = r#"
import fcntl, json, os, sys
files = {}
for name, path in os.environ.items():
    if name.endswith("_FILE") and path.startswith("/proc/self/fd/"):
        fd = int(path.rsplit("/", 1)[1])
        with open(path, "rb") as f:
            data = f.read()
        files[name] = {
            "fd": fd,
            "hex": data.hex(),
            "seals": fcntl.fcntl(fd, fcntl.F_GET_SEALS),
            "link": os.readlink(path),
            "cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
        }
fd3 = os.readlink("/proc/self/fd/3") if os.path.exists("/proc/self/fd/3") else None
json.dump({"files": files, "env": dict(os.environ), "fd3": fd3}, sys.stdout)
"#;

/// Starts the launcher with every descriptor above 2 closed, as a container's
/// entrypoint starts (the test harness passes pipes of its own), with, when
/// its first argument is `3` (else `-`), descriptor 3 open on /dev/null and
/// inheritable (as systemd passes a socket).
const CLEAN_START: &str = r#"
import os, sys
os.closerange(3, 1 << 16)
mode, args = sys.argv[1], sys.argv[2:]
if mode == "3":
    fd = os.open("/dev/null", os.O_RDONLY)
    assert fd == 3
    os.set_inheritable(fd, True)
os.execv(args[0], args)
"#;

/// `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`.
const SEALS: u64 = 0x1 | 0x2 | 0x4 | 0x8;

fn has_python() -> bool {
    let found = std::process::Command::new("python3")
        .arg("-c")
        .arg("import fcntl; fcntl.F_GET_SEALS")
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: no python3 with fcntl.F_GET_SEALS");
    }
    found
}

/// `svid-exec run ARGS -- python3 -c PROBE` against a fresh stack,
/// started clean ([`CLEAN_START`], with descriptor 3 open when `fd3`),
/// audited; the probe's report (`None`: skipped, no python3).
fn probe(fd3: bool, args: &[&str]) -> Option<Value> {
    if !has_python() {
        return None;
    }
    let stack = Stack::start();
    let mut launcher = Launcher::on(&stack);
    let mode = if fd3 { "3" } else { "-" };
    let out = launcher
        .via(&["python3", "-c", CLEAN_START, mode])
        .arg("run")
        .args(args)
        .args(["--", "python3", "-c", PROBE])
        .audited()
        .run();
    out.expect_code(0);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout_text(), out.stderr));
    Some(report)
}

/// `n` more secrets `K000…` (value `v`) in the stack's project.
fn add_secrets(stack: &Stack, n: usize) {
    for i in 0..n {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", &format!("K{i:03}"), "v");
    }
}

/// The hex form of `bytes`, as the probe prints it.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn each_secret_is_a_sealed_memfd_read_byte_for_byte_through_key_file() {
    let Some(report) = probe(false, &["--memfd"]) else {
        return;
    };
    let files = report["files"].as_object().expect("files");
    assert_eq!(files.len(), DEMO_SECRETS.len(), "{report}");
    let mut numbers = Vec::new();
    for (key, value) in DEMO_SECRETS {
        let file = &files[&format!("{key}_FILE")];
        assert_eq!(file["hex"], hex(value.as_bytes()), "{key}");
        let seals = file["seals"].as_u64().expect("seals");
        assert_eq!(seals & SEALS, SEALS, "{key}: seals {seals:#x}");
        let link = file["link"].as_str().expect("link");
        assert!(link.starts_with(&format!("/memfd:{key}")), "{key}: {link}");
        assert_eq!(file["cloexec"], false, "{key}");
        numbers.push(file["fd"].as_i64().expect("fd"));
    }
    // Name order from the first free number: 3, 4, 5.
    assert_eq!(numbers, [3, 4, 5]);
    // No value in the environment, nor the launcher's bootstrap variables.
    let env = report["env"].as_object().expect("env");
    let shown = serde_json::to_string(env).unwrap();
    assert_no_secret(&shown, &[]);
    for name in env.keys() {
        assert!(!name.starts_with("INFISICAL_"), "{name} inherited");
    }
}

#[test]
fn the_prefix_names_the_variables_and_inherited_descriptors_keep_their_numbers() {
    // Descriptor 3 is the launcher's parent's (as systemd passes sockets):
    // the memfds go above it and the program still has it.
    let Some(report) = probe(true, &["--memfd", "--env-prefix", "APP_"]) else {
        return;
    };
    let files = report["files"].as_object().expect("files");
    let mut numbers: Vec<i64> = DEMO_SECRETS
        .iter()
        .map(|(key, _)| files[&format!("APP_{key}_FILE")]["fd"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [4, 5, 6], "{report}");
    assert_eq!(report["fd3"], "/dev/null", "descriptor 3 was replaced");
}

#[test]
fn under_watch_a_program_that_cannot_start_is_still_127_with_many_memfds() {
    // The supervisor's own descriptors sit among the numbers the memfds are
    // given; the spawn's exec-error pipe must not land on a free one of
    // those, or a failed exec would look like a started program.
    let stack = Stack::start();
    add_secrets(&stack, 40);
    let out = Launcher::on(&stack)
        .via(&["python3", "-c", CLEAN_START, "-"])
        .args(["run", "--watch", "--memfd", "--", "no-such-program-xyz"])
        .audited()
        .run();
    out.expect_code(127).expect_stderr("no-such-program-xyz");
}

/// Every regular file on a tmpfs or ramfs mount (the mounts from
/// `/proc/self/mounts`), up to 1 MiB each.
fn tmpfs_files() -> BTreeMap<String, Vec<u8>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let mut found = BTreeMap::new();
    let mut dirs: Vec<std::path::PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(' ');
            let (_, at, kind) = (fields.next()?, fields.next()?, fields.next()?);
            matches!(kind, "tmpfs" | "ramfs").then(|| at.replace("\\040", " ").into())
        })
        .collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && entry.metadata().is_ok_and(|m| m.len() <= 1 << 20) {
                if let Ok(bytes) = std::fs::read(&path) {
                    found.insert(path.display().to_string(), bytes);
                }
            }
        }
    }
    found
}

#[test]
fn no_file_holding_a_secret_appears_on_any_tmpfs() {
    let stack = Stack::start();
    // A value no other test has, under a name no other test uses.
    let value = format!("memfd-only-{:016x}", fastrand::u64(..));
    let key = "MEMFD_ONLY_SECRET";
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", key, &value);
    let holding = |files: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        files
            .iter()
            .filter(|(path, bytes)| {
                path.contains(key) || bytes.windows(value.len()).any(|w| w == value.as_bytes())
            })
            .map(|(path, _)| path.clone())
            .collect()
    };
    assert!(holding(&tmpfs_files()).is_empty());
    let out = Launcher::on(&stack)
        .args(["run", "--memfd", "--", "sh", "-c"])
        .arg(format!("cat \"${key}_FILE\""))
        .audited()
        .run();
    out.expect_code(0);
    assert_eq!(out.stdout_text(), value, "the program read its value");
    let after = tmpfs_files();
    assert!(
        holding(&after).is_empty(),
        "a file holds the secret: {:?}",
        holding(&after)
    );
}

#[test]
fn under_watch_every_start_gets_fresh_memfds_and_the_supervisor_keeps_none() {
    let stack = stack_with((3600, 86_400), false);
    // Records the value and the memfd's inode at each start.
    let script = "printf '%s %s\\n' \"$(cat \"$WATCHED_FILE\")\" \
                  \"$(stat -L -c %i \"$WATCHED_FILE\")\" >> \"$D/memfds\"; exec sleep 120";
    let mut watched = watch_sh(&stack, &["--memfd"], script);
    let records = |n: usize| -> Vec<(String, String)> {
        lines_written(&watched, "memfds", n)
            .iter()
            .filter_map(|l| l.split_once(' '))
            .map(|(v, i)| (v.to_owned(), i.to_owned()))
            .collect()
    };
    let first = records(1);
    assert_eq!(first[0].0, "one");
    assert!(
        memfds_of(watched.pid()).is_empty(),
        "the supervisor keeps memfds: {:?}",
        memfds_of(watched.pid())
    );
    set(&stack, "WATCHED", "two");
    let both = records(2);
    assert_eq!(both[1].0, "two", "{}", watched.stderr());
    assert_ne!(both[0].1, both[1].1, "the same memfd twice");
    assert!(memfds_of(watched.pid()).is_empty());
    assert_eq!(watched.stop(), 128 + 15);
}

/// `run --watch --poll-interval 1s ARGS -- sh -c SCRIPT` on `stack`.
fn watch_sh(stack: &Stack, args: &[&str], script: &str) -> Watched {
    let command: Vec<&str> = ["run", "--watch", "--poll-interval", "1s"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--", "sh", "-c", script])
        .collect();
    Watched::start(stack, &command)
}

/// The lines the program appended to `$D/NAME` once there are `n` (one per
/// start of the program).
fn lines_written(watched: &Watched, name: &str, n: usize) -> Vec<String> {
    wait_for(&format!("{n} start(s)"), WAIT, || {
        let text = std::fs::read_to_string(watched.path(name)).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= n).then_some(lines)
    })
}

/// The memfds `pid` holds open.
fn memfds_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| l.starts_with("/memfd:"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn signal_on_change_and_contradicting_options_are_refused_before_anything_runs() {
    let stack = Stack::start();
    for args in [&["--watch", "--on-change", "signal:HUP"][..], &["--no-env"]] {
        let out = Launcher::on(&stack)
            .args(["run", "--memfd"])
            .args(args)
            .marked_program(stack.dir())
            .audited()
            .run();
        out.expect_refused(78, &["--memfd"]);
    }
    assert_eq!(stack.infisical.counters().logins, 0, "refused before login");
}

#[test]
fn more_secrets_than_the_cap_or_the_open_file_limit_allows_are_refused() {
    let stack = Stack::start();
    add_secrets(&stack, 513);
    let out = Launcher::on(&stack)
        .args(["run", "--memfd"])
        .marked_program(stack.dir())
        .audited()
        .run();
    out.expect_refused(78, &["at most 512 memfds"]);
    // Within the cap, but over what a low open-file limit leaves room for.
    let small = Stack::start();
    add_secrets(&small, 20);
    let out = Launcher::on(&small)
        .via(&["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .args(["run", "--memfd"])
        .marked_program(small.dir())
        .audited()
        .run();
    out.expect_refused(78, &["open-file limit of 64"])
        .expect_stderr("ulimit -n");
}

/// A template file in a scratch directory: `SRC` for `--template`.
fn template(text: &str) -> (Scratch, String) {
    let scratch = Scratch::temp();
    let src = scratch.path().join("app.conf.j2");
    std::fs::write(&src, text).unwrap();
    let src = src.display().to_string();
    (scratch, src)
}

/// What the template below renders from the demo secrets.
fn rendered() -> String {
    let greeting = DEMO_SECRETS
        .iter()
        .find(|(k, _)| *k == "GREETING")
        .unwrap()
        .1;
    format!("greeting = {greeting}\n")
}

const TEMPLATE: &str = "greeting = {{ GREETING }}\n";

#[test]
fn a_template_to_a_memfd_comes_after_the_secrets_memfds_named_by_name_file() {
    let (_dir, src) = template(TEMPLATE);
    let flag = format!("{src}:memfd:CONF");
    let Some(report) = probe(
        false,
        &["--memfd", "--env-prefix", "APP_", "--template", &flag],
    ) else {
        return;
    };
    let files = report["files"].as_object().expect("files");
    assert_eq!(files.len(), DEMO_SECRETS.len() + 1, "{report}");
    let conf = &files["APP_CONF_FILE"];
    assert_eq!(conf["hex"], hex(rendered().as_bytes()));
    assert_eq!(conf["fd"], 6, "after the secrets' 3, 4, 5");
    assert_eq!(conf["seals"].as_u64().unwrap() & SEALS, SEALS);
    assert!(conf["link"].as_str().unwrap().starts_with("/memfd:CONF"));
    assert_eq!(conf["cloexec"], false);
}

#[test]
fn a_template_to_a_memfd_needs_no_memfd_flag_and_writes_no_file() {
    let (_dir, src) = template(TEMPLATE);
    let flag = format!("{src}:memfd:CONF");
    let Some(report) = probe(false, &["--template", &flag]) else {
        return;
    };
    // The secrets are values in the environment; the rendering is the only
    // memfd, at the first free number.
    let files = report["files"].as_object().expect("files");
    assert_eq!(files.keys().collect::<Vec<_>>(), ["CONF_FILE"], "{report}");
    assert_eq!(files["CONF_FILE"]["fd"], 3);
    assert_eq!(files["CONF_FILE"]["hex"], hex(rendered().as_bytes()));
    assert_eq!(report["env"]["GREETING"], DEMO_SECRETS[1].1);
    assert!(!std::path::Path::new("memfd:CONF").exists());
}

#[test]
fn under_watch_a_changed_rendering_restarts_the_program_with_a_fresh_memfd() {
    let stack = stack_with((3600, 86_400), false);
    let (_dir, src) = template("w={{ WATCHED }}");
    let flag = format!("{src}:memfd:W");
    let script = "cat \"$W_FILE\" >> \"$D/renders\"; echo >> \"$D/renders\"; exec sleep 120";
    let mut watched = watch_sh(&stack, &["--template", &flag], script);
    let renders = |n: usize| lines_written(&watched, "renders", n);
    assert_eq!(renders(1), ["w=one"]);
    set(&stack, "WATCHED", "two");
    assert_eq!(renders(2), ["w=one", "w=two"], "{}", watched.stderr());
    assert!(memfds_of(watched.pid()).is_empty());
    assert_eq!(watched.stop(), 128 + 15);
}

#[test]
fn a_template_to_a_memfd_is_refused_where_no_program_could_get_it() {
    let stack = Stack::start();
    let (_dir, src) = template(TEMPLATE);
    let flag = format!("{src}:memfd:CONF");
    let refusals: &[(&[&str], &str)] = &[
        (&["write", "--template", &flag], "write starts no program"),
        (
            &["run", "--no-env", "--template", &flag],
            "which --no-env leaves out",
        ),
        (
            &[
                "run",
                "--watch",
                "--on-change",
                "signal:HUP",
                "--template",
                &flag,
            ],
            "cannot update what is delivered with --template memfd:NAME",
        ),
        (
            &["run", "--template", &format!("{src}:memfd:CONF:0400")],
            "must be a variable name",
        ),
        (
            &["run", "--template", &format!("{src}:memfd:my-conf")],
            "must be a variable name",
        ),
    ];
    for (args, says) in refusals {
        let mut launcher = Launcher::on(&stack);
        launcher.args(*args).audited();
        if args[0] == "run" {
            launcher
                .marked_program(stack.dir())
                .run()
                .expect_refused(78, &[says]);
        } else {
            launcher.run().expect_code(78).expect_stderr(says);
        }
    }
    assert_eq!(stack.infisical.counters().logins, 0, "refused before login");
    // A secret whose variable the template would also set: refused once
    // the set is known, before the program starts.
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "CONF_FILE", "x");
    let out = Launcher::on(&stack)
        .args(["run", "--template", &flag])
        .marked_program(stack.dir())
        .audited()
        .run();
    out.expect_refused(78, &["CONF_FILE would name both a secret and the memfd"]);
}

#[test]
fn templates_count_against_the_memfd_cap() {
    let stack = Stack::start();
    // 509 secrets + the 3 demo ones: the cap, reached; one template more
    // is over it.
    add_secrets(&stack, 509);
    let (_dir, src) = template(TEMPLATE);
    let flag = format!("{src}:memfd:CONF");
    let out = Launcher::on(&stack)
        .args(["run", "--memfd", "--template", &flag])
        .marked_program(stack.dir())
        .audited()
        .run();
    out.expect_refused(78, &["at most 512 memfds", "needs 513"]);
}
