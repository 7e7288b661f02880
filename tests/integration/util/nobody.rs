//! Running as another user: uid 65534 (nobody), as an unprivileged attacker
//! on the machine, or a workload that is not root, would. Possible when the
//! tests run as root and setpriv(1) is there; tests skip their nobody steps
//! otherwise.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use svid_exec_testkit::stack::Stack;

/// The prefix that runs the rest of a command line as nobody, without
/// supplementary groups (and, for a non-root uid, without capabilities).
const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--",
];

/// A wrapper for [`crate::util::Launcher::via`] that runs `rest` (a command
/// that ends by running its arguments) as nobody when the tests run as root,
/// or as it is otherwise: the launcher then runs as a user other than root
/// either way. `None` (and a message: the test skips) as root without setpriv.
pub fn as_nobody_if_root<'a>(rest: &[&'a str]) -> Option<Vec<&'a str>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some(rest.to_vec());
    }
    if !can_become_nobody() {
        eprintln!("skipped: as root, setpriv(1) is needed to run as nobody");
        return None;
    }
    Some(AS_NOBODY.iter().chain(rest).copied().collect())
}

/// Runs `script` with `sh -c` as nobody when the tests run as root, as
/// ourselves otherwise; panics if it fails.
pub fn sh_as_nobody_if_root(script: &str) {
    let mut command = if can_become_nobody() {
        let mut c = Command::new(AS_NOBODY[0]);
        c.args(&AS_NOBODY[1..]).arg("sh");
        c
    } else {
        Command::new("sh")
    };
    let status = command.arg("-c").arg(script).status().expect("run sh");
    assert!(status.success(), "{script}: {status}");
}

/// Whether this test run can switch to nobody (root, with setpriv).
fn can_become_nobody() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A directory everyone may use (0777, removed when dropped) with copies of
/// the stack's CA and of a fresh JWT-SVID that nobody can read: the agent's
/// socket and the stack's own files are root's.
#[derive(Debug)]
pub struct Shared {
    dir: tempfile::TempDir,
    pub jwt: PathBuf,
    pub ca: PathBuf,
}

impl Shared {
    /// # Panics
    /// If the directory or the copies cannot be made.
    pub fn new(stack: &Stack) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        let readable = |from: &Path, name: &str| {
            let to = dir.path().join(name);
            fs::copy(from, &to).expect("copy");
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).expect("chmod");
            to
        };
        let jwt = readable(&stack.write_jwt_file(Duration::from_secs(600)), "jwt");
        let ca = readable(stack.ca_path(), "ca.pem");
        Self { dir, jwt, ca }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `--jwt-file` and `--ca-cert` pointing at the copies.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--jwt-file".to_owned(),
            self.jwt.display().to_string(),
            "--ca-cert".to_owned(),
            self.ca.display().to_string(),
        ]
    }
}
