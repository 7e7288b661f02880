//! What a `--watch` supervisor's memory holds, read as root through
//! /proc/PID/maps and /proc/PID/mem (what a core dump taken as root would
//! hold): copies of a planted secret value, decoded and as the server sent
//! it (JSON-escaped), and of the access token, within the bounds that
//! docs/security.md records (read from its table, so the two cannot
//! differ). And `--mlock` refused when the memory-lock limit does not allow.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};

use svid_exec_testkit::stack::Stack;

use crate::util::{as_nobody_if_root, Launcher, Shared};
use crate::watch::{set, stack_with, Watched, RECORDER};

/// The writable or anonymous memory of `pid` (heap, stacks, anonymous
/// mappings, writable data): where a program's values live. Regions the
/// kernel will not read are skipped.
fn process_memory(pid: i32) -> Vec<u8> {
    let maps = BufReader::new(File::open(format!("/proc/{pid}/maps")).unwrap());
    let mut mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut all = Vec::new();
    for line in maps.lines() {
        let line = line.unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (range, perms) = (fields[0], fields[1]);
        let name = fields.get(5).copied().unwrap_or("");
        let anonymous = name.is_empty() || name == "[heap]" || name.starts_with("[stack");
        if !perms.starts_with('r') || !(anonymous || perms.as_bytes()[1] == b'w') {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0; usize::try_from(end - start).unwrap()];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut region).is_ok() {
            all.extend_from_slice(&region);
        }
    }
    all
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// The bound docs/security.md records in the row whose first cell is
/// `label`: the first number of its second cell.
fn documented(label: &str) -> usize {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("docs/security.md has no row {label:?}"));
    let cell = row.split('|').nth(2).unwrap();
    let digits: String = cell
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn a_watch_supervisor_holds_the_documented_copies_of_a_secret_and_its_token() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: reading another process's memory needs root");
        return;
    }
    let stack = stack_with((3600, 86_400), false);
    // Unique to this run; the quote is escaped in the server's JSON, so the
    // value as sent and the value decoded are told apart.
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .as_nanos()
    );
    let decoded = format!("planted-{nonce}\"end");
    let escaped = format!("planted-{nonce}\\\"end");
    set(&stack, "PLANTED", &decoded);
    let mut launcher = Watched::run(&stack, "60s", &[], RECORDER);
    launcher.wait_starts(1);
    let tokens = stack.infisical.live_token_strings();
    assert_eq!(tokens.len(), 1);
    let memory = process_memory(launcher.pid());
    let counts = [
        (
            "a secret value, decoded",
            count(&memory, decoded.as_bytes()),
        ),
        (
            "the same value as the server sent it",
            count(&memory, escaped.as_bytes()),
        ),
        ("the access token", count(&memory, tokens[0].as_bytes())),
    ];
    assert_eq!(launcher.stop(), 128 + 15);
    println!("copies in the supervisor's memory: {counts:?}");
    for (label, copies) in counts {
        let bound = documented(label);
        assert!(
            copies <= bound,
            "{label}: {copies} copies, docs/security.md says at most {bound}"
        );
    }
    // The program's environment must have been there, or nothing was measured.
    assert!(counts[0].1 >= 1, "the planted value was not found at all");
}

/// `--mlock` where the memory-lock limit is 0 (and, as nobody, no
/// `CAP_IPC_LOCK`): refused with 78 naming the limit, before logging in.
#[test]
fn mlock_refused_by_the_kernel_is_78_naming_the_limit_before_anything_runs() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit(1) (util-linux) is needed to lower RLIMIT_MEMLOCK");
        return;
    }
    let Some(via) = as_nobody_if_root(&["prlimit", "--memlock=0", "--"]) else {
        return;
    };
    let stack = Stack::start();
    let shared = Shared::new(&stack);
    Launcher::on(&stack)
        .via(&via)
        .current_dir(shared.path())
        .args(["run", "--watch", "--mlock"])
        .args(shared.flags())
        .marked_program(shared.path())
        .audited()
        .run()
        .expect_refused(
            78,
            &["--mlock", "RLIMIT_MEMLOCK is 0 bytes", "CAP_IPC_LOCK"],
        );
    assert_eq!(stack.infisical.counters().logins, 0);
}
