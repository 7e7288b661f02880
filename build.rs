//! Build metadata for `--version`: the commit the binary was built from and
//! the Cargo features it was built with, so a bug report names the exact build.
//!
//! The commit comes from `SVID_EXEC_BUILD_COMMIT` when set (a packager or a
//! container build without `.git`), else from `git rev-parse` when this is a
//! git checkout and git is installed, else it is "unknown" (a source tarball):
//! a missing `.git` or `git` never fails the build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SVID_EXEC_BUILD_COMMIT");
    let commit = std::env::var("SVID_EXEC_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SVID_EXEC_COMMIT={}", commit.trim());

    // Cargo sets CARGO_FEATURE_<NAME> for every enabled feature.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|f| f.to_ascii_lowercase().replace('_', "-"))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=SVID_EXEC_FEATURES={features}");
}

/// `git rev-parse --short=12 HEAD`, and the files whose change means a new
/// commit (HEAD, the branch's ref, packed-refs), so the build script reruns
/// only then rather than on every source change.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched {
        let path = PathBuf::from(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// One line of git's output, or `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(manifest)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.trim();
    (!line.is_empty()).then(|| line.to_owned())
}
