//! File delivery: through the real binary (`cli`), through the writer's
//! library API (`layout`), readers racing the writer (`concurrency`), and
//! who may shape a target: other users' directories, links and files
//! (`trust`).
//! Below, what they share for looking at a delivered directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use svid_exec_testkit::stack::Stack;

mod cli;
mod concurrency;
mod layout;
mod trust;

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The generation directories (`..<digits>…`) in `dir`, sorted.
fn generations(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n.starts_with("..") && n.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
        .collect()
}

/// The permission bits of `path` (of its target, for a link).
fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Asserts that nothing reached the stand-ins: refused before any request.
#[track_caller]
fn assert_no_request(stack: &Stack) {
    assert!(
        stack.infisical.requests().is_empty(),
        "requests were sent: {:?}",
        stack.infisical.requests()
    );
    assert!(
        stack.agent.calls().is_empty(),
        "the Workload API was called"
    );
}
