//! A write that fails part-way leaves every output wholly old or wholly new,
//! never a mix, a partial file or a temp file. Failures are injected for real
//! with resource limits: `RLIMIT_NOFILE` lowered step by step (each descriptor
//! the writer opens fails in turn) and `RLIMIT_FSIZE` (a file write fails
//! half-way).
//!
//! A test binary of its own (not a module of `tests/integration`): resource
//! limits are process-wide, so every test running beside it in the same
//! process would fail to open files or write while they are lowered.

use std::fs;
use std::path::Path;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use secrecy::SecretString;
use svid_exec::deliver::files::{self, FilesOptions};
use svid_exec::secrets::SecretSet;

fn set(pairs: &[(&str, String)]) -> SecretSet {
    let mut s = SecretSet::new();
    for (k, v) in pairs {
        s.insert(*k, SecretString::from(v.clone()));
    }
    s
}

/// The limit under which exactly `n` more descriptors can be opened: the
/// kernel hands out the lowest free numbers, so open `n + 1` and take the last.
fn limit_allowing(n: usize) -> u64 {
    use std::os::fd::AsRawFd;
    let probes: Vec<fs::File> = (0..=n)
        .map(|_| fs::File::open("/dev/null").unwrap())
        .collect();
    let last = probes.last().unwrap().as_raw_fd();
    u64::try_from(last).unwrap()
}

fn generation_dirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..") && n.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
        .collect()
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum State {
    Old,
    New,
}

struct Scene {
    scratch: tempfile::TempDir,
    dir: std::path::PathBuf,
    opts: FilesOptions,
    old: SecretSet,
    new: SecretSet,
    old_generation: Vec<String>,
    old_dotenv: Vec<u8>,
    old_json: Vec<u8>,
    new_dotenv: Vec<u8>,
    new_json: Vec<u8>,
}

const OLD_KEYS: [&str; 4] = ["A", "B", "C", "GONE"];
const NEW_KEYS: [&str; 4] = ["A", "ADDED", "B", "C"];

fn new_value(key: &str) -> String {
    if key == "C" {
        // Big, and bigger still in JSON (every newline becomes two bytes).
        "line\n".repeat(800)
    } else {
        format!("new-{key}")
    }
}

impl Scene {
    fn new(shm: &Path) -> Self {
        let scratch = tempfile::tempdir_in(shm).unwrap();
        let dir = scratch.path().join("secrets");
        let opts = FilesOptions {
            dir: Some(dir.clone()),
            dotenv_file: Some(scratch.path().join("app.env")),
            json_file: Some(scratch.path().join("app.json")),
            ..FilesOptions::default()
        };
        let old = set(&OLD_KEYS.map(|k| (k, format!("old-{k}"))));
        let new = set(&NEW_KEYS.map(|k| (k, new_value(k))));
        files::write(&old, &opts).unwrap();
        let mut new_dotenv = Vec::new();
        let mut map = serde_json::Map::new();
        for k in NEW_KEYS {
            new_dotenv.extend_from_slice(format!("{k}='{}'\n", new_value(k)).as_bytes());
            map.insert(k.to_owned(), new_value(k).into());
        }
        let mut new_json = serde_json::to_vec(&map).unwrap();
        new_json.push(b'\n');
        Self {
            old_generation: generation_dirs(&dir),
            old_dotenv: fs::read(opts.dotenv_file.as_ref().unwrap()).unwrap(),
            old_json: fs::read(opts.json_file.as_ref().unwrap()).unwrap(),
            scratch,
            dir,
            opts,
            old,
            new,
            new_dotenv,
            new_json,
        }
    }

    /// Asserts the invariants and says which side each output is on.
    fn check(&self, label: &str) -> (State, State, State) {
        let dir = &self.dir;
        let tree = if fs::read(dir.join("A")).unwrap() == b"new-A" {
            State::New
        } else {
            State::Old
        };
        match tree {
            State::Old => {
                assert_eq!(generation_dirs(dir), self.old_generation, "{label}");
                for k in OLD_KEYS {
                    assert_eq!(
                        fs::read(dir.join(k)).unwrap(),
                        format!("old-{k}").as_bytes()
                    );
                }
                assert!(fs::symlink_metadata(dir.join("ADDED")).is_err(), "{label}");
            }
            State::New => {
                for k in NEW_KEYS {
                    assert_eq!(fs::read(dir.join(k)).unwrap(), new_value(k).as_bytes());
                }
                // A gone key's link may linger after a failure, but never
                // shows an old value: it dangles into the new generation.
                assert!(fs::read(dir.join("GONE")).is_err(), "{label}");
            }
        }
        assert!(
            fs::symlink_metadata(dir.join("..data_tmp")).is_err(),
            "{label}"
        );

        let side = |path: &Option<std::path::PathBuf>, old: &[u8], new: &[u8]| match fs::read(
            path.as_ref().unwrap(),
        )
        .unwrap()
        {
            c if c == old => State::Old,
            c if c == new => State::New,
            c => panic!(
                "partial {} at {label}: {} bytes",
                path.as_ref().unwrap().display(),
                c.len()
            ),
        };
        let dotenv = side(&self.opts.dotenv_file, &self.old_dotenv, &self.new_dotenv);
        let json = side(&self.opts.json_file, &self.old_json, &self.new_json);
        // Outputs are written tree, dotenv, JSON: a later one is never ahead.
        if tree == State::Old {
            assert_eq!(dotenv, State::Old, "{label}");
        }
        if dotenv == State::Old {
            assert_eq!(json, State::Old, "{label}");
        }
        let stray: Vec<String> = fs::read_dir(self.scratch.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(stray.is_empty(), "temp files left at {label}: {stray:?}");
        (tree, dotenv, json)
    }
}

#[test]
fn a_write_failing_anywhere_leaves_each_output_wholly_old_or_wholly_new() {
    let shm = Path::new("/dev/shm");
    if !statfs(shm).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC) {
        eprintln!("skipped: /dev/shm is not a tmpfs on this machine");
        return;
    }

    // Phase 1: run out of descriptors at each open in turn.
    let scene = Scene::new(shm);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let mut failures = Vec::new();
    let mut succeeded = false;
    for extra in 0..64 {
        setrlimit(Resource::RLIMIT_NOFILE, limit_allowing(extra), hard).unwrap();
        let result = files::write(&scene.new, &scene.opts);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        let states = scene.check(&format!("descriptor limit +{extra}"));
        match result {
            Ok(_) => {
                assert_eq!(states, (State::New, State::New, State::New));
                succeeded = true;
                break;
            }
            Err(e) => failures.push((extra, states.0, e.to_string())),
        }
    }
    eprintln!("injected descriptor failures: {failures:#?}");
    assert!(succeeded, "the write never succeeded: {failures:#?}");
    assert!(
        failures.iter().any(|(_, tree, _)| *tree == State::Old),
        "no failure happened before the swap: {failures:#?}"
    );
    assert_eq!(
        generation_dirs(&scene.dir).len(),
        1,
        "old generations must go after success"
    );

    // Phase 2: a file write fails half-way (EFBIG). SIGXFSZ would kill us; it
    // is blocked in this thread so the write just fails.
    let mut xfsz = SigSet::empty();
    xfsz.add(Signal::SIGXFSZ);
    xfsz.thread_block().unwrap();
    let mut scene = Scene::new(shm);
    let c_len = new_value("C").len() as u64;
    let dotenv_len = scene.new_dotenv.len() as u64;
    let json_len = scene.new_json.len() as u64;
    assert!(c_len < dotenv_len && dotenv_len < json_len);
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    let steps = [
        // C's file is cut short: the generation is abandoned.
        (c_len - 1, (State::Old, State::Old, State::Old)),
        // The tree fits, the dotenv file does not.
        (dotenv_len - 1, (State::New, State::Old, State::Old)),
        // The dotenv file fits, the JSON file does not.
        (json_len - 1, (State::New, State::New, State::Old)),
    ];
    for (limit, want) in steps {
        files::write(&scene.old, &scene.opts).unwrap();
        scene.old_generation = generation_dirs(&scene.dir);
        setrlimit(Resource::RLIMIT_FSIZE, limit, hard).unwrap();
        let result = files::write(&scene.new, &scene.opts);
        setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
        assert!(
            result.is_err(),
            "file size limit {limit} should fail the write"
        );
        assert_eq!(scene.check(&format!("file size limit {limit}")), want);
    }
    files::write(&scene.new, &scene.opts).unwrap();
    assert_eq!(
        scene.check("no limit"),
        (State::New, State::New, State::New)
    );
    assert_eq!(generation_dirs(&scene.dir).len(), 1);
}
