//! Who may shape a file target, through the real binary: a target directory
//! or a symlink on its path owned by another user is refused (78, nothing
//! written), root's and our own links are followed; a directory others can
//! write (a Kubernetes `emptyDir` is 0777, `/dev/shm` 1777) is accepted with
//! one log line, and nothing in it that another user made is adopted (a
//! foreign `..data`, per-key link or dotenv file is refused, naming it); a
//! `--file-mode` with group/other write bits is refused; a directory created
//! in a setgid volume keeps its group (fsGroup). (Modes under any umask:
//! `cli.rs`.) A template's DEST is a target like the dotenv/JSON files: the
//! same directory rules, the same refusal of another user's file at DEST
//! (also when one replaces it under `write --watch`), the same mode check.
//!
//! The other user is `nobody` (uid 65534): its steps run through
//! `setpriv`, so these tests need root (as in CI) and skip, saying so,
//! without it.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use svid_exec_testkit::stack::{Stack, DEMO_SECRETS};

use super::{assert_no_request, entries, generations, mode_of};
use crate::util::{tmpfs_scratch, wait_for, Launcher, Outcome, Scratch};
use crate::watch::{set, stack_with, Watched, WAIT};

/// The other local user.
const NOBODY: u32 = 65534;

/// Every run is bounded: a stuck launcher is killed and the test fails.
const BOUND: Duration = Duration::from_secs(90);

/// What the log says, once, about a directory others can write.
const SHARED_LINE: &str = "others can write";

/// A generation directory's name, as another user could plant one.
const FOREIGN_GENERATION: &str = "..2020_01_01_00_00_00.000000000_0badf00d";

/// A tmpfs scratch directory others may pass through (0711), when the test
/// can act as another user (root, setpriv installed); else `None`, saying why.
fn scratch_as_root() -> Option<Scratch> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: acting as another user (uid {NOBODY}) needs root; CI runs as root");
        return None;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv(1) is not installed");
        return None;
    }
    let scratch = tmpfs_scratch()?;
    chmod(scratch.path(), 0o711);
    Some(scratch)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory in `scratch` with exactly `mode` (sticky bit included).
fn dir_with_mode(scratch: &Scratch, name: &str, mode: u32) -> PathBuf {
    let dir = scratch.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, mode);
    dir
}

/// Runs `argv` as `uid:uid` with no supplementary groups: whether it succeeded.
fn runs_as<S: AsRef<OsStr>>(uid: u32, argv: &[S]) -> bool {
    Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
        .status
        .success()
}

/// Runs `argv` as `uid:uid` with no supplementary groups; it must succeed.
fn as_user<S: AsRef<OsStr>>(uid: u32, argv: &[S]) {
    assert!(
        runs_as(uid, argv),
        "as uid {uid}: {:?}",
        argv.iter().map(AsRef::as_ref).collect::<Vec<_>>()
    );
}

/// `ln -s TARGET LINK` as `nobody`.
fn nobody_links(target: &str, link: &Path) {
    as_user(
        NOBODY,
        &[
            OsStr::new("ln"),
            "-s".as_ref(),
            target.as_ref(),
            link.as_os_str(),
        ],
    );
}

/// `svid-exec ARGS` against `stack`, bounded, its output audited.
fn svid_exec(stack: &Stack, args: &[&str]) -> Launcher {
    let mut launcher = Launcher::on(stack);
    launcher.args(args).limit(BOUND).audited();
    launcher
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `SRC:DEST` for a template of `text` written into `sources`, rendered to
/// `dest`.
fn template_of(text: &str, sources: &Path, dest: &Path) -> String {
    let src = sources.join("app.conf.j2");
    std::fs::write(&src, text).unwrap();
    format!("{}:{}", src.display(), dest.display())
}

/// [`template_of`] a template naming `GREETING`.
fn template_flag(sources: &Path, dest: &Path) -> String {
    template_of("greeting={{ GREETING }}\n", sources, dest)
}

/// Runs `args` and asserts a refusal with 78; a `run` gets a program (its
/// marker in `scratch`) that must not have started.
fn refused(stack: &Stack, args: &[&str], scratch: &Path) -> Outcome {
    let mut launcher = svid_exec(stack, args);
    if args[0] == "run" {
        let out = launcher.marked_program(scratch).run();
        out.expect_refused(78, &[]);
        out
    } else {
        let out = launcher.run();
        out.expect_code(78);
        out
    }
}

/// How many lines of `stderr` say that others can write a directory.
fn shared_lines(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains(SHARED_LINE)).count()
}

// ---------------------------------------------------------------------------
// Owners of the target and of the links on its path

/// A directory that `nobody` made (0777, so svid-exec could write into it)
/// is refused as every kind of target, before any request, with nothing
/// written and the program never started.
#[test]
fn a_target_directory_owned_by_another_user_is_refused_78_before_any_request() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let open = dir_with_mode(&scratch, "open", 0o777);
    let theirs = open.join("theirs");
    as_user(
        NOBODY,
        &[
            OsStr::new("mkdir"),
            "-m".as_ref(),
            "0777".as_ref(),
            theirs.as_os_str(),
        ],
    );
    let stack = Stack::start();
    let dotenv = theirs.join("app.env");
    let json = theirs.join("app.json");
    let template = template_flag(scratch.path(), &theirs.join("app.conf"));
    for args in [
        vec!["write", "--dir", path_arg(&theirs)],
        vec!["write", "--dotenv-file", path_arg(&dotenv)],
        vec!["write", "--json-file", path_arg(&json)],
        vec!["run", "--files-dir", path_arg(&theirs)],
        vec!["write", "--template", &template],
        vec!["run", "--template", &template],
    ] {
        let out = refused(&stack, &args, &open);
        out.expect_stderr(path_arg(&theirs))
            .expect_stderr(&format!("uid {NOBODY}"));
        assert!(
            entries(&theirs).is_empty(),
            "{args:?}: {:?}",
            entries(&theirs)
        );
    }
    assert_no_request(&stack);
}

/// A symlink on the way to the target that `nobody` planted is not
/// followed, wherever it is on the path: 78 naming it and its owner, and the
/// directories it points at stay empty.
#[test]
fn a_symlink_component_owned_by_another_user_is_refused_78() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let open = dir_with_mode(&scratch, "open", 0o777);
    let real = dir_with_mode(&scratch, "real", 0o700);
    let existing = real.join("existing");
    std::fs::create_dir(&existing).unwrap();
    let link = open.join("link");
    nobody_links(path_arg(&real), &link);
    let stack = Stack::start();
    let through = |rest: &str| format!("{}/{rest}", link.display());
    let template = template_flag(scratch.path(), Path::new(&through("existing/app.conf")));
    for args in [
        // The link deeper than the target's parent, then as its parent.
        vec!["write", "--dir", &through("existing")],
        vec!["write", "--dotenv-file", &through("existing/app.env")],
        vec!["write", "--json-file", &through("existing/app.json")],
        vec!["write", "--dir", &through("created")],
        vec!["write", "--dotenv-file", &through("app.env")],
        vec!["write", "--template", &template],
    ] {
        let out = refused(&stack, &args, &open);
        out.expect_stderr(path_arg(&link))
            .expect_stderr(&format!("uid {NOBODY}"));
        assert_eq!(entries(&real), ["existing"], "{args:?}");
        assert!(
            entries(&existing).is_empty(),
            "{args:?}: {:?}",
            entries(&existing)
        );
    }
    assert_no_request(&stack);
}

/// Links that root or svid-exec's own user made are followed (`/var/run ->
/// /run` must keep working): as root, and as `nobody` through root's link
/// and through its own.
#[test]
fn root_owned_and_own_symlink_components_are_followed() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let stack = Stack::start();
    // As root: a link root made.
    let real = dir_with_mode(&scratch, "real", 0o700);
    let root_link = scratch.path().join("root-link");
    std::os::unix::fs::symlink(&real, &root_link).unwrap();
    let out = svid_exec(
        &stack,
        &[
            "write",
            "--dir",
            &format!("{}/secrets", root_link.display()),
        ],
    )
    .run();
    out.expect_code(0);
    assert_eq!(
        std::fs::read(real.join("secrets/GREETING")).unwrap(),
        DEMO_SECRETS[1].1.as_bytes()
    );

    // As nobody: its own directory, reached through root's link and its own.
    let open = dir_with_mode(&scratch, "open", 0o777);
    let home = open.join("home");
    as_user(NOBODY, &[OsStr::new("mkdir"), home.as_os_str()]);
    let root_link = open.join("root-link");
    std::os::unix::fs::symlink(&home, &root_link).unwrap();
    let own_link = open.join("own-link");
    nobody_links(path_arg(&home), &own_link);
    let readable = |from: &Path, name: &str| {
        let to = open.join(name);
        std::fs::copy(from, &to).unwrap();
        chmod(&to, 0o644);
        to
    };
    let jwt = readable(&stack.write_jwt_file(Duration::from_secs(600)), "jwt");
    let ca = readable(stack.ca_path(), "ca.pem");
    for (link, name) in [(&root_link, "a"), (&own_link, "b")] {
        let out = svid_exec(
            &stack,
            &[
                "write",
                "--jwt-file",
                path_arg(&jwt),
                "--ca-cert",
                path_arg(&ca),
                "--dir",
                &format!("{}/{name}", link.display()),
            ],
        )
        .via(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .env_remove("SVID_EXEC_CA_CERT")
        .current_dir(&open)
        .run();
        out.expect_code(0);
        let written = home.join(name).join("GREETING");
        assert_eq!(
            std::fs::read(&written).unwrap(),
            DEMO_SECRETS[1].1.as_bytes()
        );
        assert_eq!(std::fs::metadata(&written).unwrap().uid(), NOBODY);
    }
}

// ---------------------------------------------------------------------------
// Directories others can write

/// A 0777 (`emptyDir`) or 1777 (`/dev/shm`) target is accepted, the log says
/// once that others can write it, and what `nobody` left there (a link
/// shaped like a per-key link of a key that is gone, a directory named like
/// a generation) is neither adopted nor removed, on the first write or the
/// next; svid-exec's own `..svid-exec` state file is written. And what the log
/// line warns about holds: only the sticky bit keeps another user from
/// moving svid-exec's `..data` away afterwards.
#[test]
fn a_directory_others_can_write_is_accepted_with_one_log_line_and_nothing_foreign_adopted() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let stack = Stack::start();
    for mode in [0o777, 0o1777] {
        let shared = dir_with_mode(&scratch, &format!("shared-{mode:o}"), mode);
        nobody_links("..data/GONE", &shared.join("GONE"));
        let planted = shared.join(FOREIGN_GENERATION);
        as_user(NOBODY, &[OsStr::new("mkdir"), planted.as_os_str()]);
        as_user(
            NOBODY,
            &[OsStr::new("touch"), planted.join("GONE").as_os_str()],
        );

        for round in 0..2 {
            let out = svid_exec(&stack, &["write", "--dir", path_arg(&shared)]).run();
            out.expect_code(0);
            assert_eq!(
                shared_lines(&out.stderr),
                1,
                "{mode:o} round {round}:\n{}",
                out.stderr
            );
            assert!(out.stderr.contains(path_arg(&shared)), "{}", out.stderr);
            for (key, value) in DEMO_SECRETS {
                assert_eq!(std::fs::read(shared.join(key)).unwrap(), value.as_bytes());
            }
            assert_eq!(
                std::fs::read_link(shared.join("GONE")).unwrap(),
                PathBuf::from("..data/GONE"),
                "{mode:o}: nobody's link was removed"
            );
            assert_eq!(
                entries(&planted),
                ["GONE"],
                "{mode:o}: nobody's directory was touched"
            );
            // `..svid-exec` is svid-exec's own state file (for `ready`).
            let state = std::fs::symlink_metadata(shared.join("..svid-exec")).unwrap();
            assert!(
                state.is_file() && state.uid() == 0,
                "{mode:o}: ..svid-exec is ours"
            );
            let ours: Vec<String> = generations(&shared)
                .into_iter()
                .filter(|g| g != FOREIGN_GENERATION)
                .collect();
            assert_eq!(ours.len(), 1, "{mode:o}: {:?}", entries(&shared));
        }
        // What the log line says: without the sticky bit another user can
        // still move svid-exec's entries away after the write; with it, not.
        let data = shared.join("..data");
        let moved = runs_as(
            NOBODY,
            &[
                OsStr::new("mv"),
                data.as_os_str(),
                shared.join("..moved").as_os_str(),
            ],
        );
        assert_eq!(
            moved,
            mode & 0o1000 == 0,
            "{mode:o}: nobody moved ..data: {moved}"
        );
    }
}

/// What a refusal in a directory others can write must look like: 78, the
/// planted name in the message, and the directory exactly as before (no
/// generation, no link, no temp file).
fn assert_refused_in_shared_dir(stack: &Stack, shared: &Path, args: &[&str], name: &str) {
    let before = entries(shared);
    refused(stack, args, shared.parent().unwrap()).expect_stderr(name);
    assert_eq!(entries(shared), before, "{args:?}");
}

/// In a directory of `mode`, `nobody` makes the link `NAME -> TARGET`: a
/// `write --dir` (or `run --files-dir`, with `run`) there must refuse it.
fn refused_with_a_link_of_nobody(mode: u32, target: &str, name: &str, run: bool) {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let shared = dir_with_mode(&scratch, "shared", mode);
    if target == FOREIGN_GENERATION {
        as_user(
            NOBODY,
            &[OsStr::new("mkdir"), shared.join(target).as_os_str()],
        );
    }
    nobody_links(target, &shared.join(name));
    let stack = Stack::start();
    let args = if run {
        ["run", "--files-dir", path_arg(&shared)]
    } else {
        ["write", "--dir", path_arg(&shared)]
    };
    assert_refused_in_shared_dir(&stack, &shared, &args, name);
}

/// `..data` naming a generation directory that `nobody` made.
#[test]
fn a_data_link_planted_by_another_user_is_refused_78_naming_it() {
    refused_with_a_link_of_nobody(0o777, FOREIGN_GENERATION, "..data", true);
}

#[test]
fn a_data_tmp_link_planted_by_another_user_is_refused_78_naming_it() {
    refused_with_a_link_of_nobody(0o1777, "/etc", "..data_tmp", false);
}

/// A link exactly where and as our layout makes it (`TLS_KEY ->
/// ..data/TLS_KEY`), but made by `nobody`, is not adopted.
#[test]
fn a_per_key_link_planted_by_another_user_is_refused_78_naming_it() {
    refused_with_a_link_of_nobody(0o777, "..data/TLS_KEY", "TLS_KEY", false);
}

#[test]
fn a_data_link_of_ours_that_points_outside_the_layout_is_refused_78_naming_it() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let dir = dir_with_mode(&scratch, "secrets", 0o700);
    std::os::unix::fs::symlink("/etc", dir.join("..data")).unwrap();
    let stack = Stack::start();
    assert_refused_in_shared_dir(&stack, &dir, &["write", "--dir", path_arg(&dir)], "..data");
    assert_eq!(
        std::fs::read_link(dir.join("..data")).unwrap(),
        PathBuf::from("/etc")
    );
}

/// A dotenv/JSON file or a template's DEST that `nobody` put where ours goes
/// is not replaced.
#[test]
fn a_dotenv_json_or_template_file_of_another_user_is_refused_78_naming_it() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let shared = dir_with_mode(&scratch, "shared", 0o1777);
    let stack = Stack::start();
    let template = template_flag(scratch.path(), &shared.join("app.conf"));
    let dotenv = path_arg(&shared).to_owned() + "/app.env";
    let json = path_arg(&shared).to_owned() + "/app.json";
    for (flag, value, name) in [
        ("--dotenv-file", &dotenv, "app.env"),
        ("--json-file", &json, "app.json"),
        ("--template", &template, "app.conf"),
    ] {
        let file = shared.join(name);
        as_user(NOBODY, &[OsStr::new("touch"), file.as_os_str()]);
        assert_refused_in_shared_dir(&stack, &shared, &["write", flag, value], name);
        assert_eq!(std::fs::read(&file).unwrap(), b"", "{flag}");
    }
    assert_no_request(&stack);
}

/// Under `write --watch`, `nobody` replaces the rendered DEST in a directory
/// others can write (0777, no sticky bit, as the log line warns): at the next
/// change the file of theirs is refused, said in the log and left alone,
/// also when the files are removed at shutdown.
#[test]
fn a_template_dest_another_user_replaced_under_watch_is_refused_and_left_alone() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let dest = dir_with_mode(&scratch, "shared", 0o777).join("app.conf");
    let template = template_of("w={{ WATCHED }}\n", scratch.path(), &dest);
    let stack = stack_with((3600, 86_400), false);
    let mut launcher = Watched::sidecar(&stack, "1s", &["--template", &template], |_| {});
    wait_for("the first rendering", WAIT, || {
        std::fs::read_to_string(&dest)
            .ok()
            .filter(|s| s == "w=one\n")
    });
    let replace = format!("rm -f '{0}' && echo theirs > '{0}'", dest.display());
    as_user(NOBODY, &["sh", "-c", &replace]);
    set(&stack, "WATCHED", "two");
    wait_for("the refusal in the log", WAIT, || {
        let stderr = launcher.stderr();
        (stderr.contains(path_arg(&dest)) && stderr.contains(&format!("uid {NOBODY}")))
            .then_some(())
    });
    assert_eq!(launcher.stop(), 0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "theirs\n");
    assert_eq!(std::fs::metadata(&dest).unwrap().uid(), NOBODY);
    assert_eq!(
        entries(dest.parent().unwrap()),
        ["app.conf"],
        "a temp file was left"
    );
}

// ---------------------------------------------------------------------------
// Modes

/// Files others than the owner could change would let them substitute values.
#[test]
fn a_file_mode_with_group_or_other_write_bits_is_refused_78_before_any_request() {
    let Some(scratch) = tmpfs_scratch() else {
        return;
    };
    let stack = Stack::start();
    let dir = scratch.path().join("secrets");
    let template = template_flag(scratch.path(), &dir.join("app.conf"));
    for file_mode in ["0420", "0402", "0660", "0666"] {
        // --file-mode, a template's MODE, and --file-mode as a template's default.
        let with_mode = format!("{template}:{file_mode}");
        for args in [
            ["--dir", path_arg(&dir), "--file-mode", file_mode],
            ["--template", &with_mode, "--file-mode", "0400"],
            ["--template", &template, "--file-mode", file_mode],
        ] {
            let out = svid_exec(&stack, &[&["write"], &args[..]].concat()).run();
            out.expect_code(78).expect_stderr("write bits");
            assert!(!dir.exists(), "{args:?}: the directory was created");
        }
    }
    assert_no_request(&stack);
}

/// Kubernetes `fsGroup`: the volume is setgid and owned by the group. A
/// private DIR svid-exec creates in it keeps the setgid bit and the group, so
/// with `--file-mode 0440` a reader of that group (and only such a reader)
/// can read the files.
#[test]
fn a_private_directory_in_a_setgid_volume_lets_its_group_read_with_0440() {
    let Some(scratch) = scratch_as_root() else {
        return;
    };
    let volume = scratch.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::os::unix::fs::chown(&volume, None, Some(NOBODY)).unwrap();
    chmod(&volume, 0o2777);
    let dir = volume.join("app");
    let stack = Stack::start();
    for umask in ["077", "022"] {
        let out = svid_exec(
            &stack,
            &["write", "--dir", path_arg(&dir), "--file-mode", "0440"],
        )
        .via(&["sh", "-c", &format!("umask {umask}; exec \"$0\" \"$@\"")])
        .run();
        out.expect_code(0);
        assert_eq!(
            shared_lines(&out.stderr),
            0,
            "only the volume is shared, not DIR"
        );
        assert_eq!(mode_of(&dir), 0o2710, "umask {umask}");
        assert_eq!(std::fs::metadata(&dir).unwrap().gid(), NOBODY);
        let key = dir.join("TLS_KEY");
        let read = |groups: &str| {
            Command::new("setpriv")
                .args(["--reuid=1001", "--regid=1001", groups, "--", "cat"])
                .arg(&key)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .output()
                .unwrap()
        };
        let member = read(&format!("--groups={NOBODY}"));
        assert!(member.status.success(), "a member of the group: {member:?}");
        assert_eq!(member.stdout, DEMO_SECRETS[2].1.as_bytes());
        let other = read("--clear-groups");
        assert!(!other.status.success(), "not a member: {other:?}");
    }
}
