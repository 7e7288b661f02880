//! `--fallback-dir` end to end: a first run against the stand-ins stores the
//! set; then Infisical goes down (503 on every route, or nothing listening)
//! and the next start uses the cached set, with a WARN saying so, but only
//! for the same SPIFFE ID, the same binding and within the maximum age; a
//! refusal deletes every set of the identity; `--watch` switches to fresh
//! secrets when the server answers again; the directory and file modes.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::stack::{Stack, DEMO_SECRETS, WORKLOAD};
use svid_exec_testkit::workload::Svid;

use crate::util::{tmpfs_scratch, Launcher, Outcome, Scratch};
use crate::watch::{set, stack_with, Watched, RECORDER};

/// The WARN line of a start from the cache.
const USED: &str = "starting with cached secrets of age";

/// A stack, a fallback directory on tmpfs, and the set a first run (which
/// reached the server) stored there.
struct Cached {
    stack: Stack,
    dir: PathBuf,
    scratch: Scratch,
}

impl Cached {
    /// On `stack`; `None` (the test is skipped) without a tmpfs.
    fn on(stack: Stack) -> Option<Self> {
        let scratch = tmpfs_scratch()?;
        let dir = scratch.path().join("fallback");
        store(&stack, &dir, &[]);
        Some(Self {
            stack,
            dir,
            scratch,
        })
    }

    /// On the default stack.
    fn start() -> Option<Self> {
        Self::on(Stack::start())
    }

    /// `run ARGS -- env -0` with this directory.
    fn run(&self, args: &[&str]) -> Outcome {
        run_env(&mut launcher(&self.stack, &self.dir), args)
    }
}

/// `svid-exec ARGS` against `stack` with `--fallback-dir DIR` and a short
/// start-up deadline (an outage is given up on after it), audited.
fn launcher(stack: &Stack, dir: &Path) -> Launcher {
    let mut launcher = Launcher::on(stack);
    launcher
        .env("SVID_EXEC_FALLBACK_DIR", dir)
        .env("SVID_EXEC_STARTUP_TIMEOUT", "2s")
        .audited();
    launcher
}

/// `run [ARGS] -- env -0`: the child prints its environment.
fn run_env(launcher: &mut Launcher, args: &[&str]) -> Outcome {
    launcher
        .arg("run")
        .args(args)
        .args(["--", "env", "-0"])
        .run()
}

/// A run that reaches the server and stores the set.
fn store(stack: &Stack, dir: &Path, args: &[&str]) {
    let out = run_env(&mut launcher(stack, dir), args);
    out.expect_code(0);
    assert!(!out.stderr.contains(USED), "{}", out.stderr);
    assert!(!sets(dir).is_empty(), "nothing stored");
}

/// The stored sets in `dir`.
fn sets(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("set-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every route answers 503.
fn fail_everything(stack: &Stack) {
    stack
        .infisical
        .fail_next("/*", u32::MAX, Fault::Status(503));
}

/// Asserts that the start failed as an outage (69) without the cache.
#[track_caller]
fn assert_not_used(out: &Outcome, why: &str) {
    out.expect_code(69)
        .expect_stderr("the cached secrets cannot be used")
        .expect_stderr(why);
    assert!(!out.stderr.contains(USED), "{}", out.stderr);
    assert!(out.child_env().is_empty(), "the program ran");
}

#[test]
fn a_server_answering_503_everywhere_starts_the_program_with_the_cached_set() {
    let Some(cached) = Cached::start() else {
        return;
    };
    assert_eq!(sets(&cached.dir).len(), 1);
    fail_everything(&cached.stack);
    let out = cached.run(&[]);
    out.expect_code(0)
        .expect_stderr(USED)
        .expect_stderr("HTTP 503")
        .expect_demo_env();
    // WARN, every time.
    cached.run(&[]).expect_code(0).expect_stderr(USED);
}

#[test]
fn a_server_refusing_connections_starts_the_program_and_write_with_the_cached_set() {
    let Some(mut cached) = Cached::start() else {
        return;
    };
    cached.stack.infisical.stop();
    cached
        .run(&[])
        .expect_code(0)
        .expect_stderr(USED)
        .expect_demo_env();
    // `write` (an init container restarted during the outage) too. Its
    // binding is the same: the targets are not part of it.
    let files = cached.scratch.path().join("files");
    let out = launcher(&cached.stack, &cached.dir)
        .args(["write", "--dir"])
        .arg(&files)
        .run();
    out.expect_code(0).expect_stderr(USED);
    for (key, value) in DEMO_SECRETS {
        assert_eq!(std::fs::read(files.join(key)).unwrap(), value.as_bytes());
    }
}

#[test]
fn a_different_spiffe_id_gets_nothing_from_the_cache() {
    let Some(cached) = Cached::start() else {
        return;
    };
    fail_everything(&cached.stack);
    cached
        .stack
        .agent
        .set_svids([Svid::new("spiffe://example.org/ns/prod/sa/other")]);
    assert_not_used(&cached.run(&[]), "no cached set for this SPIFFE ID");
}

#[test]
fn without_a_jwt_svid_from_the_workload_api_nothing_vouches_for_the_cache() {
    let Some(mut cached) = Cached::start() else {
        return;
    };
    fail_everything(&cached.stack);
    cached.stack.agent.stop();
    assert_not_used(&cached.run(&[]), "did not just issue a JWT-SVID");
}

#[test]
fn a_different_binding_gets_nothing_from_the_cache() {
    let Some(cached) = Cached::start() else {
        return;
    };
    fail_everything(&cached.stack);
    for args in [
        &["--path", "/app"][..],
        &["--tag", "db"],
        &["--require", "GREETING"],
        &["--recursive"],
        &["--auth-method", "jwt-auth"],
    ] {
        assert_not_used(&cached.run(args), "no cached set for this SPIFFE ID");
    }
    // The same binding still works.
    cached.run(&[]).expect_code(0).expect_stderr(USED);
}

#[test]
fn an_entry_older_than_the_maximum_age_is_not_used() {
    let Some(cached) = Cached::start() else {
        return;
    };
    fail_everything(&cached.stack);
    // Ages are whole seconds from the fetch's whole second: 1.1 s later the
    // set is at least 1 s old.
    std::thread::sleep(Duration::from_millis(1100));
    let out = cached.run(&["--fallback-max-age", "1s"]);
    assert_not_used(&out, "older than --fallback-max-age 1s");
}

#[test]
fn a_failure_that_is_not_an_outage_never_uses_the_cache() {
    let Some(cached) = Cached::start() else {
        return;
    };
    // The server rejects the request as invalid (a configuration error).
    for route in ["/api/v4/secrets*", "/api/v3/secrets*"] {
        cached
            .stack
            .infisical
            .fail_next(route, u32::MAX, Fault::Status(400));
    }
    let out = cached.run(&[]);
    out.expect_code(78).expect_stderr("rejected");
    assert!(!out.stderr.contains(USED), "{}", out.stderr);
    assert_eq!(
        sets(&cached.dir).len(),
        1,
        "a 400 does not delete the cache"
    );
}

#[test]
fn a_refused_login_deletes_every_set_of_the_identity_whatever_its_spiffe_id() {
    let Some(cached) = Cached::start() else {
        return;
    };
    store(&cached.stack, &cached.dir, &["--require", "GREETING"]);
    assert_eq!(sets(&cached.dir).len(), 2);
    // The identity's OIDC binding accepts spiffe://example.org/ns/prod/**
    // only: a workload now attested as another ID is refused at login.
    let agent = &cached.stack.agent;
    agent.set_svids([Svid::new("spiffe://example.org/ns/dev/sa/billing")]);
    cached
        .run(&[])
        .expect_code(77)
        .expect_stderr("its cached secrets are deleted");
    assert!(sets(&cached.dir).is_empty(), "{:?}", sets(&cached.dir));
    // During a later outage, with the old SPIFFE ID back, nothing is left.
    agent.set_svids([Svid::new(WORKLOAD)]);
    fail_everything(&cached.stack);
    assert_not_used(&cached.run(&[]), "no cached set");
}

#[test]
fn watch_starts_from_the_cache_and_switches_to_fresh_secrets_when_the_server_answers() {
    let Some(mut cached) = Cached::on(stack_with((3600, 86_400), false)) else {
        return;
    };
    cached.stack.infisical.stop();
    set(&cached.stack, "WATCHED", "two");
    let args = [
        "run",
        "--watch",
        "--poll-interval",
        "1s",
        "--",
        "sh",
        "-c",
        RECORDER,
    ];
    let mut watched = Watched::start_with(&cached.stack, &args, |l| {
        l.env("SVID_EXEC_FALLBACK_DIR", &cached.dir)
            .env("SVID_EXEC_STARTUP_TIMEOUT", "2s");
    });
    let first = watched.wait_starts(1);
    assert_eq!(first[0].1, "one", "{}", watched.stderr());
    assert!(watched.stderr().contains(USED), "{}", watched.stderr());
    cached.stack.infisical.restart();
    let starts = watched.wait_starts(2);
    assert_eq!(starts[1].1, "two", "{}", watched.stderr());
    let switched = "fresh secrets replace the cached ones";
    assert!(watched.stderr().contains(switched), "{}", watched.stderr());
    assert_eq!(watched.stop(), 128 + 15);
    // The fresh set is what is cached now.
    cached.stack.infisical.stop();
    let out = launcher(&cached.stack, &cached.dir)
        .args(["run", "--", "sh", "-c", "printf %s \"$WATCHED\""])
        .run();
    out.expect_code(0).expect_stderr(USED);
    assert_eq!(out.stdout_text(), "two");
}

#[test]
fn an_unfinished_write_of_a_killed_launcher_is_removed_by_the_next_save() {
    // A launcher killed between create and rename leaves a temp file holding a
    // whole set; nothing but a refusal's purge removed it, so they piled up.
    let Some(cached) = Cached::start() else {
        return;
    };
    let set = sets(&cached.dir).pop().expect("a stored set");
    let name = set.file_name().unwrap().to_string_lossy().into_owned();
    let key = name
        .strip_prefix("set-")
        .and_then(|rest| rest.split('-').next())
        .expect("set-<identity>-<binding>");
    let leftover = |name: &str, age: Duration| {
        let path = cached.dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    };
    let abandoned = leftover(
        &format!("tmp-{key}-00000000deadbeef"),
        Duration::from_secs(600),
    );
    // A write in flight right now (another launcher's) and another identity's
    // leftover are not this save's to remove.
    let in_flight = leftover(&format!("tmp-{key}-00000000cafef00d"), Duration::ZERO);
    let other = leftover(
        "tmp-0123456789abcdef0123456789abcdef-0000000000000001",
        Duration::from_secs(600),
    );
    store(&cached.stack, &cached.dir, &[]);
    assert!(!abandoned.exists(), "the abandoned write is still there");
    assert!(in_flight.exists(), "a write in flight was removed");
    assert!(other.exists(), "another identity's file was removed");
}

#[test]
fn the_directory_is_private_and_ours_and_the_files_0600() {
    let Some(cached) = Cached::start() else {
        return;
    };
    let (stack, scratch) = (&cached.stack, &cached.scratch);
    let private = |dir: &Path| {
        let meta = std::fs::metadata(dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{dir:?}");
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    };
    // Missing: created 0700; the set 0600.
    private(&cached.dir);
    for file in sets(&cached.dir) {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{file:?}");
        assert!(std::fs::read(&file)
            .unwrap()
            .starts_with(b"svid-exec fallback v1\n"));
    }
    // An existing directory others may read is made private.
    let open = scratch.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    store(stack, &open, &[]);
    private(&open);
    // A link in its place, or a directory on a disk: 78, nothing runs.
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(&cached.dir, &link).unwrap();
    let refused = |dir: &Path, message: &str| {
        let out = run_env(&mut launcher(stack, dir), &[]);
        out.expect_code(78).expect_stderr(message);
        assert!(out.child_env().is_empty(), "the program ran");
    };
    refused(&link, "symbolic link");
    if let Some(disk) = crate::util::disk_scratch() {
        refused(&disk.path().join("fb"), "disk-backed");
    }
    // Someone else's: 78 (only root can make one here). Another user's is
    // refused by the target-directory rules; root's, which those accept, by
    // the fallback's own: a set is read back only from a directory no one
    // else controls.
    if nix::unistd::geteuid().is_root() {
        let theirs = scratch.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        refused(&theirs, "a directory of another user (uid 65534)");
        let roots = scratch.path().join("roots");
        std::fs::create_dir(&roots).unwrap();
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let out = run_env(
            launcher(stack, &roots)
                .env_remove("SVID_EXEC_CA_CERT")
                .via(&[
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--",
                ]),
            &[],
        );
        out.expect_code(78)
            .expect_stderr("belongs to uid 0, not to this user (uid 65534)");
        assert!(out.child_env().is_empty(), "the program ran");
    }
}

#[test]
fn check_reports_the_directory_and_its_sets_and_never_starts_from_them() {
    let Some(cached) = Cached::start() else {
        return;
    };
    let check = |dir: &Path| launcher(&cached.stack, dir).arg("check").run();
    let step = |out: &Outcome, mark: &str| {
        let prefix = format!("{mark} fallback: ");
        out.stdout_text()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", out.stdout_text()))
            .to_owned()
    };
    let ok = check(&cached.dir);
    ok.expect_code(0);
    let said = step(&ok, "✓");
    assert!(said.contains("1 set of this identity"), "{said}");
    // A link in its place fails the step (78).
    let planted = cached.scratch.path().join("link");
    std::os::unix::fs::symlink(&cached.dir, &planted).unwrap();
    let refused = check(&planted);
    refused.expect_code(78);
    assert!(step(&refused, "✗").contains("symbolic link"));
    // During an outage it fails as a run without the cache would (69), and
    // the directory's step still says what is there.
    fail_everything(&cached.stack);
    let down = check(&cached.dir);
    down.expect_code(69);
    assert!(!down.stderr.contains(USED), "{}", down.stderr);
    step(&down, "✓");
}

#[test]
fn a_start_from_the_cache_after_a_login_still_revokes_the_token_before_the_program() {
    let Some(cached) = Cached::start() else {
        return;
    };
    // The login works; listing the secrets does not (503).
    for route in ["/api/v4/secrets*", "/api/v3/secrets*"] {
        cached
            .stack
            .infisical
            .fail_next(route, u32::MAX, Fault::Status(503));
    }
    let before = cached.stack.infisical.counters();
    let out = cached.run(&["--memfd"]);
    out.expect_code(0).expect_stderr(USED);
    let after = cached.stack.infisical.counters();
    assert_eq!(
        (
            after.logins - before.logins,
            after.revocations - before.revocations
        ),
        (1, 1),
        "{}",
        out.stderr
    );
    assert_eq!(cached.stack.infisical.live_tokens(), 0);
    // The program got the cached set as memfds (exec mode: whatever svid-exec
    // revoked, it revoked before it became the program).
    let env = out.child_env();
    let path = env.get("GREETING_FILE").expect("GREETING_FILE");
    assert!(path.starts_with(b"/proc/self/fd/"), "{path:?}");
}
