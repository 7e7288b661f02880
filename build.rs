//! Build metadata for `--version`: the commit the binary was built from and
//! the Cargo features it was built with, so a bug report names the exact build.
//!
//! The commit comes from `SVID_EXEC_BUILD_COMMIT` when set (a packager or a
//! container build without `.git`), else from `git rev-parse` when this is a
//! git checkout and git is installed, else it is "unknown" (a source tarball):
//! a missing `.git` or `git` never fails the build.
//!
//! It also lays out the release binary's code: see [`symbol_order`].

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

    symbol_order();
}

/// Puts the functions a launch runs first in the release binary, in the order
/// they first run (`link/symbol-order.txt`, made by `bench/symbol-order.sh`),
/// so they sit together in a few hundred KiB instead of being spread over its
/// 4 MiB of code. Each page fault on a file maps 64 KiB around it: spread,
/// a launch had 4.0 of its 4.3 MiB of code resident; grouped, 2.3 MiB
/// (BENCHMARKS.md). The names carry hashes of the toolchain and the locked
/// dependencies: a name the build does not have is skipped silently, so a
/// stale list costs locality, never the build.
///
/// Only where the linker is known to be LLD, which reads the list: the
/// `x86_64` GNU target from Rust 1.90 (its default linker) with no linker
/// chosen by configuration or flags. GNU ld has no such option. Off with
/// `SVID_EXEC_SYMBOL_ORDER=off`.
fn symbol_order() {
    println!("cargo:rerun-if-env-changed=SVID_EXEC_SYMBOL_ORDER");
    let file = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", file.display());
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    let lld_by_default = env("TARGET") == "x86_64-unknown-linux-gnu"
        && rustc_minor().is_some_and(|minor| minor >= 90)
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|f| flags.contains(f));
    if env("PROFILE") == "release"
        && lld_by_default
        && env("SVID_EXEC_SYMBOL_ORDER") != "off"
        && file.is_file()
    {
        println!(
            "cargo:rustc-link-arg-bin=svid-exec=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        println!("cargo:rustc-link-arg-bin=svid-exec=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the compiler building us (`rustc -vV`'s `release:`).
fn rustc_minor() -> Option<u32> {
    let out = Command::new(std::env::var_os("RUSTC")?)
        .arg("-vV")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let release = text.lines().find_map(|l| l.strip_prefix("release: "))?;
    release.split('.').nth(1)?.parse().ok()
}

/// An environment variable of the build, empty when unset.
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
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
