//! Readers racing the writer: while 1,000 generations are swapped in, a reader
//! never sees two generations in one snapshot, a partial file, a generation
//! older than one it has already seen, or a partial JSON file.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;
use secrecy::SecretString;
use svid_exec::deliver::files::{self, FilesOptions};
use svid_exec::secrets::SecretSet;

use crate::util::{tmpfs_scratch, Scratch};

const KEYS: [&str; 5] = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO"];
const GENERATIONS: u32 = 1_000;

/// Large enough that a torn write would show: the marker repeated, then an end mark.
fn value(generation: u32, key: &str) -> String {
    let unit = format!("{generation:06}:{key};");
    let mut v = unit.repeat(3000 / unit.len() + 1);
    v.push_str("END\n");
    v
}

/// The generation a file's content belongs to, if it is a whole file of one.
fn generation_of(content: &[u8], key: &str) -> Option<u32> {
    let text = std::str::from_utf8(content).ok()?;
    let generation: u32 = text.get(..6)?.parse().ok()?;
    (text == value(generation, key)).then_some(generation)
}

#[derive(Default, Debug)]
struct Tally {
    consistent_snapshots: u64,
    snapshots_retried: u64,
    torn_snapshots: u64,
    partial_files: u64,
    went_backwards: u64,
    direct_reads: u64,
    json_reads: u64,
    torn_json: u64,
}

fn read_fd(fd: std::os::fd::OwnedFd) -> Vec<u8> {
    let mut buf = Vec::new();
    File::from(fd).read_to_end(&mut buf).unwrap();
    buf
}

/// One pass the way a Kubernetes consumer does it: resolve `..data` once,
/// then read every key through that one directory descriptor.
fn snapshot(dir: &Path, tally: &mut Tally, last_seen: &mut u32) {
    let data = match open(
        &dir.join("..data"),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            tally.snapshots_retried += 1;
            return;
        }
        Err(e) => panic!("open ..data: {e}"),
    };
    let mut seen = BTreeSet::new();
    for key in KEYS {
        match openat(
            &data,
            key,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => match generation_of(&read_fd(fd), key) {
                Some(g) => {
                    seen.insert(g);
                }
                None => tally.partial_files += 1,
            },
            // The generation was removed after we resolved it: start over.
            Err(Errno::ENOENT) => {
                tally.snapshots_retried += 1;
                return;
            }
            Err(e) => panic!("open {key}: {e}"),
        }
    }
    match seen.len() {
        0 => {}
        1 => {
            let g = *seen.first().unwrap();
            if g < *last_seen {
                tally.went_backwards += 1;
            }
            *last_seen = g;
            tally.consistent_snapshots += 1;
        }
        _ => tally.torn_snapshots += 1,
    }
}

/// Each `DIR/KEY` on its own: whole or (between resolution and removal) absent.
fn direct_reads(dir: &Path, tally: &mut Tally) {
    for key in KEYS {
        match std::fs::read(dir.join(key)) {
            Ok(content) => {
                tally.direct_reads += 1;
                if generation_of(&content, key).is_none() {
                    tally.partial_files += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("read {key}: {e}"),
        }
    }
}

fn json_read(path: &Path, tally: &mut Tally) {
    let Ok(content) = std::fs::read(path) else {
        return;
    };
    tally.json_reads += 1;
    let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&content)
    else {
        tally.torn_json += 1;
        return;
    };
    let gens: BTreeSet<Option<u32>> = KEYS
        .iter()
        .map(|k| {
            map.get(*k)
                .and_then(|v| v.as_str())
                .and_then(|v| generation_of(v.as_bytes(), k))
        })
        .collect();
    if gens.len() != 1 || gens.contains(&None) {
        tally.torn_json += 1;
    }
}

#[test]
fn readers_never_see_two_generations_or_a_partial_file_across_1000_swaps() {
    let (scratch, on_tmpfs) = if let Some(scratch) = tmpfs_scratch() {
        (scratch, true)
    } else {
        eprintln!("note: racing on a disk-backed directory instead");
        (Scratch::temp(), false)
    };
    let dir = scratch.path().join("secrets");
    let json = scratch.path().join("secrets.json");
    let opts = FilesOptions {
        dir: Some(dir.clone()),
        json_file: Some(json.clone()),
        allow_non_tmpfs: !on_tmpfs,
        ..FilesOptions::default()
    };
    let secrets_for = |generation: u32| {
        let mut set = SecretSet::new();
        for key in KEYS {
            set.insert(key, SecretString::from(value(generation, key)));
        }
        set
    };
    files::write(&secrets_for(0), &opts).unwrap();

    let done = AtomicBool::new(false);
    let tally = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut tally = Tally::default();
            let mut last_seen = 0;
            // At least a few passes even if the writer finishes first.
            let mut passes = 0u64;
            while !done.load(Ordering::Acquire) || passes < 10 {
                snapshot(&dir, &mut tally, &mut last_seen);
                direct_reads(&dir, &mut tally);
                json_read(&json, &mut tally);
                passes += 1;
            }
            tally
        });
        for generation in 1..=GENERATIONS {
            files::write(&secrets_for(generation), &opts).unwrap();
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });

    eprintln!("{tally:?}");
    assert_eq!(tally.torn_snapshots, 0, "{tally:?}");
    assert_eq!(tally.partial_files, 0, "{tally:?}");
    assert_eq!(tally.went_backwards, 0, "{tally:?}");
    assert_eq!(tally.torn_json, 0, "{tally:?}");
    assert!(
        tally.consistent_snapshots > 0,
        "the reader never completed a pass: {tally:?}"
    );
    assert!(tally.direct_reads > 0 && tally.json_reads > 0, "{tally:?}");

    // After the race: exactly the last generation, and one generation directory.
    for key in KEYS {
        let content = std::fs::read(dir.join(key)).unwrap();
        assert_eq!(generation_of(&content, key), Some(GENERATIONS));
    }
    let generations = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.as_encoded_bytes();
            name.starts_with(b"..") && name.get(2).is_some_and(u8::is_ascii_digit)
        })
        .count();
    assert_eq!(generations, 1);
}
