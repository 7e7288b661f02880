//! `--file-owner` that this process may not apply is refused by the preflight
//! with a clear error and exit 78, before anything is fetched or written.
//! As root (CI) the refusal is exercised in a copy of this test binary
//! re-run as `nobody` through `setpriv`; as non-root, directly.
//!
//! A test binary of its own (not a module of `tests/integration`): it
//! re-executes itself as another user, which should run this one test and
//! nothing else, with no stand-in to start and no other state to share.

use std::path::Path;
use std::process::Command;

use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use nix::unistd::{geteuid, Gid, Uid};
use svid_exec::deliver::files::{self, FilesError, FilesOptions};
use svid_exec::error::Failure;

const CHILD_DIR_VAR: &str = "SVID_EXEC_TEST_OWNER_CHILD_DIR";

/// Asserts that giving files to root is refused in `dir`, as an unprivileged user.
fn assert_owner_refused(dir: &Path) {
    let opts = FilesOptions {
        dir: Some(dir.to_owned()),
        owner: Some((Uid::from_raw(0), Some(Gid::from_raw(0)))),
        ..FilesOptions::default()
    };
    let err = files::preflight(&opts).unwrap_err();
    assert!(matches!(err, FilesError::OwnerNotPermitted { .. }), "{err}");
    assert_eq!(err.exit_class().code(), 78);
    let msg = format!("{err}; hint: {}", err.hint().unwrap_or_default());
    assert!(msg.contains("--file-owner"), "{msg}");
    assert!(msg.contains("CAP_CHOWN"), "{msg}");
    let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(leftovers.is_empty(), "the probe must not stay behind");
}

#[test]
fn an_owner_change_that_is_not_permitted_is_refused_before_writing() {
    // Re-run as an unprivileged user by the root branch below.
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        assert!(!geteuid().is_root());
        assert_owner_refused(Path::new(&dir));
        println!("OWNER_REFUSAL_CHECKED");
        return;
    }
    let shm = Path::new("/dev/shm");
    let scratch = if statfs(shm).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC) {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        eprintln!("skipped: /dev/shm is not a tmpfs on this machine");
        return;
    };
    if !geteuid().is_root() {
        assert_owner_refused(scratch.path());
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: running as root and setpriv(1) is not installed to drop privileges");
        return;
    }
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_owner_change_that_is_not_permitted_is_refused_before_writing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, scratch.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("failed to execute") {
        // E.g. the build directory is under /root, which nobody cannot enter.
        eprintln!("skipped: nobody cannot execute this test binary: {stderr}");
        return;
    }
    assert!(
        out.status.success() && stdout.contains("OWNER_REFUSAL_CHECKED"),
        "unprivileged re-run failed: {out:?}"
    );
}
