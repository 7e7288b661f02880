//! The file writer through its library API (the CLI is wired separately):
//! layout, exact bytes, modes, owner, tmpfs refusal, refused names and
//! planted links, removal.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use secrecy::SecretString;
use svid_exec::deliver::files::{self, FilesError, FilesOptions};
use svid_exec::error::{ExitClass, Failure};
use svid_exec::secrets::SecretSet;

use super::{entries, generations, mode_of};
use crate::util::{disk_scratch, tmpfs_scratch};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ\nQ0Fsb3RvZnRleHQ=\n-----END CERTIFICATE-----\n";

fn set(pairs: &[(&str, &str)]) -> SecretSet {
    let mut s = SecretSet::new();
    for (k, v) in pairs {
        s.insert(*k, SecretString::from((*v).to_owned()));
    }
    s
}

fn awkward() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TLS_PEM", PEM),
        ("NO_TRAILING_NL", "abc"),
        ("UNICODE", "pässwörd ✓ 🦀"),
        ("QUOTES", r#"'single' "double" \'"#),
        ("EQUALS", "k=v=="),
        ("DOLLAR", "$HOME $(id)"),
        ("EMPTY", ""),
    ]
}

fn opts_dir(dir: &Path) -> FilesOptions {
    FilesOptions {
        dir: Some(dir.to_owned()),
        ..FilesOptions::default()
    }
}

#[test]
fn per_key_files_hold_exact_bytes_at_0400_behind_the_data_link() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path().join("secrets");
    let opts = opts_dir(&dir);
    files::preflight(&opts).unwrap();
    let values = awkward();
    let written = files::write(&set(&values), &opts).unwrap();

    let gens = generations(&dir);
    assert_eq!(gens.len(), 1, "{:?}", entries(&dir));
    assert_eq!(
        fs::read_link(dir.join("..data")).unwrap(),
        PathBuf::from(&gens[0])
    );
    assert_eq!(mode_of(&dir.join(&gens[0])), 0o500);
    for (key, value) in &values {
        let link = dir.join(key);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!("..data/{key}"))
        );
        assert_eq!(fs::read(&link).unwrap(), value.as_bytes(), "{key}");
        assert_eq!(mode_of(&link), 0o400, "{key}");
        assert_eq!(written.path_of(key), Some(link.as_path()));
    }
    assert_eq!(written.files.len(), values.len());
    // Nothing else: no temp links, no leftovers.
    let mut want: Vec<String> = values.iter().map(|(k, _)| (*k).to_owned()).collect();
    want.push("..data".into());
    want.push("..svid-exec".into());
    want.push(gens[0].clone());
    want.sort();
    assert_eq!(entries(&dir), want);
}

#[test]
fn an_update_swaps_generations_and_drops_old_ones_and_gone_keys_only() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path();
    let opts = opts_dir(dir);
    fs::write(dir.join("README"), "not ours").unwrap();
    files::write(&set(&[("A", "a1"), ("B", "b1")]), &opts).unwrap();
    let first = generations(dir);
    files::write(&set(&[("A", "a2"), ("C", "c2")]), &opts).unwrap();
    let second = generations(dir);

    assert_eq!(second.len(), 1);
    assert_ne!(first, second);
    assert_eq!(fs::read(dir.join("A")).unwrap(), b"a2");
    assert_eq!(fs::read(dir.join("C")).unwrap(), b"c2");
    assert!(
        fs::symlink_metadata(dir.join("B")).is_err(),
        "B's link must go"
    );
    assert_eq!(fs::read(dir.join("README")).unwrap(), b"not ours");
    assert_eq!(
        entries(dir),
        vec![
            second[0].as_str(),
            "..data",
            "..svid-exec",
            "A",
            "C",
            "README"
        ]
    );
}

#[test]
fn dotenv_and_json_files_are_exact_private_and_leave_no_temp_files() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dotenv = tmp.path().join("app.env");
    let json = tmp.path().join("app.json");
    let opts = FilesOptions {
        dotenv_file: Some(dotenv.clone()),
        json_file: Some(json.clone()),
        ..FilesOptions::default()
    };
    files::preflight(&opts).unwrap();
    let values = awkward();
    let written = files::write(&set(&values), &opts).unwrap();
    assert_eq!(written.dotenv_file.as_deref(), Some(dotenv.as_path()));
    assert_eq!(written.json_file.as_deref(), Some(json.as_path()));
    assert_eq!(mode_of(&dotenv), 0o400);
    assert_eq!(mode_of(&json), 0o400);

    for (key, want) in &values {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(". \"$1\"; printf %s \"${key}\""))
            .arg("sh")
            .arg(&dotenv)
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, want.as_bytes(), "{key}");
    }
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(parsed.len(), values.len());
    for (key, want) in &values {
        assert_eq!(parsed[*key].as_str().unwrap(), *want);
    }

    // Rewrite over existing files: replaced, still exact, nothing left behind.
    files::write(&set(&[("ONLY", "x'y")]), &opts).unwrap();
    assert_eq!(fs::read(&dotenv).unwrap(), b"ONLY='x'\\''y'\n");
    assert_eq!(fs::read(&json).unwrap(), b"{\"ONLY\":\"x'y\"}\n");
    assert_eq!(entries(tmp.path()), vec!["app.env", "app.json"]);
}

#[test]
fn file_mode_is_applied_exactly_and_directories_open_only_as_far_as_needed() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let opts = FilesOptions {
        mode: 0o440,
        ..opts_dir(tmp.path())
    };
    files::write(&set(&[("K", "v")]), &opts).unwrap();
    assert_eq!(mode_of(&tmp.path().join("K")), 0o440);
    let generation = tmp.path().join(&generations(tmp.path())[0]);
    assert_eq!(mode_of(&generation), 0o510);

    let opts = FilesOptions {
        mode: 0o644,
        ..opts_dir(tmp.path())
    };
    files::write(&set(&[("K", "v")]), &opts).unwrap();
    assert_eq!(mode_of(&tmp.path().join("K")), 0o644);
}

#[test]
fn file_owner_is_applied_to_files_generation_and_single_files_when_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: changing owners needs root");
        return;
    }
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path().join("secrets");
    let dotenv = tmp.path().join("app.env");
    let opts = FilesOptions {
        dir: Some(dir.clone()),
        dotenv_file: Some(dotenv.clone()),
        owner: Some((Uid::from_raw(1000), Some(Gid::from_raw(1001)))),
        ..FilesOptions::default()
    };
    files::preflight(&opts).unwrap();
    files::write(&set(&[("K", "v")]), &opts).unwrap();
    for path in [
        dir.clone(),
        dir.join("K"),
        dir.join(&generations(&dir)[0]),
        dotenv,
    ] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{}", path.display());
    }
    assert_eq!(mode_of(&dir.join("K")), 0o400);
    // The directory we created is private to the owner.
    assert_eq!(mode_of(&dir), 0o700);
}

#[test]
fn disk_backed_targets_are_refused_unless_allowed() {
    let Some(disk) = disk_scratch() else { return };
    let dir = disk.path().join("secrets");
    let cases = [
        opts_dir(&dir),
        opts_dir(disk.path()),
        FilesOptions {
            dotenv_file: Some(disk.path().join("app.env")),
            ..FilesOptions::default()
        },
        FilesOptions {
            json_file: Some(disk.path().join("app.json")),
            ..FilesOptions::default()
        },
    ];
    for opts in &cases {
        let err = files::preflight(opts).unwrap_err();
        assert!(matches!(err, FilesError::NotTmpfs { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert_eq!(err.exit_class().code(), 78);
        let msg = format!("{err}; hint: {}", err.hint().unwrap_or_default());
        assert!(msg.contains("medium: Memory"), "{msg}");
        assert!(msg.contains("--allow-non-tmpfs"), "{msg}");
        let err = files::write(&set(&[("K", "v")]), opts).unwrap_err();
        assert!(matches!(err, FilesError::NotTmpfs { .. }), "{err}");
    }
    assert!(entries(disk.path()).is_empty(), "nothing may be written");

    for opts in cases {
        let opts = FilesOptions {
            allow_non_tmpfs: true,
            ..opts
        };
        files::preflight(&opts).unwrap();
        files::write(&set(&[("K", "v")]), &opts).unwrap();
    }
    assert_eq!(fs::read(dir.join("K")).unwrap(), b"v");
}

#[test]
fn tmpfs_targets_pass_preflight_and_a_missing_last_component_is_created_private() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path().join("new");
    files::preflight(&opts_dir(&dir)).unwrap();
    assert!(dir.is_dir());
    assert_eq!(mode_of(&dir), 0o700);
    assert!(entries(&dir).is_empty(), "preflight leaves no probe behind");

    let deep = tmp.path().join("missing/deeper");
    let err = files::preflight(&opts_dir(&deep)).unwrap_err();
    assert!(matches!(err, FilesError::MissingParent { .. }), "{err}");
    assert_eq!(err.exit_class(), ExitClass::Config);
}

#[test]
fn names_that_would_escape_or_break_the_layout_are_refused_with_nothing_written() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path().join("secrets");
    fs::create_dir(&dir).unwrap();
    let opts = opts_dir(&dir);
    for bad in [
        "../escape",
        "..",
        ".",
        "",
        "a/b",
        "/etc/passwd",
        "..data",
        "..2020_01_01",
        "nul\0",
    ] {
        let secrets = set(&[("GOOD", "g"), (bad, "v")]);
        let err = files::write(&secrets, &opts).unwrap_err();
        assert!(
            matches!(err, FilesError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
        assert_eq!(err.exit_class().code(), 78);
        assert!(
            entries(&dir).is_empty(),
            "{bad:?} wrote {:?}",
            entries(&dir)
        );
    }
    assert_eq!(entries(tmp.path()), vec!["secrets"]);
}

#[test]
fn a_symlinked_directory_or_file_target_is_refused() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("file"), "untouched").unwrap();
    let link_dir = tmp.path().join("linkdir");
    std::os::unix::fs::symlink(&victim, &link_dir).unwrap();
    let link_file = tmp.path().join("app.env");
    std::os::unix::fs::symlink(victim.join("file"), &link_file).unwrap();

    let by_dir = opts_dir(&link_dir);
    let by_file = FilesOptions {
        dotenv_file: Some(link_file.clone()),
        ..FilesOptions::default()
    };
    for opts in [by_dir, by_file] {
        let err = files::preflight(&opts).unwrap_err();
        assert!(matches!(err, FilesError::Symlink { .. }), "{err}");
        let err = files::write(&set(&[("K", "v")]), &opts).unwrap_err();
        assert!(matches!(err, FilesError::Symlink { .. }), "{err}");
        assert_eq!(err.exit_class().code(), 78);
    }
    // Refused before the per-key tree beside it is written.
    let both = FilesOptions {
        dotenv_file: Some(link_file.clone()),
        ..opts_dir(&tmp.path().join("secrets"))
    };
    let err = files::write(&set(&[("K", "v")]), &both).unwrap_err();
    assert!(matches!(err, FilesError::Symlink { .. }), "{err}");
    assert!(!tmp.path().join("secrets").exists());

    assert_eq!(entries(&victim), vec!["file"]);
    assert_eq!(fs::read(victim.join("file")).unwrap(), b"untouched");
}

#[test]
fn a_foreign_file_in_a_keys_place_fails_the_write_and_keeps_the_previous_generation() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path();
    let opts = opts_dir(dir);
    files::write(&set(&[("A", "old")]), &opts).unwrap();
    let before = generations(dir);
    fs::write(dir.join("B"), "planted").unwrap();

    let err = files::write(&set(&[("A", "new"), ("B", "new")]), &opts).unwrap_err();
    assert!(matches!(err, FilesError::Conflict { .. }), "{err}");
    assert_eq!(fs::read(dir.join("A")).unwrap(), b"old");
    assert_eq!(fs::read(dir.join("B")).unwrap(), b"planted");
    assert_eq!(generations(dir), before);
    assert!(fs::symlink_metadata(dir.join("..data_tmp")).is_err());
}

#[test]
fn a_refused_name_leaves_the_previous_generation_intact() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path();
    let opts = opts_dir(dir);
    files::write(&set(&[("A", "old")]), &opts).unwrap();
    let before = entries(dir);
    let err = files::write(&set(&[("A", "new"), ("../x", "v")]), &opts).unwrap_err();
    assert_eq!(err.exit_class(), ExitClass::Config);
    assert_eq!(entries(dir), before);
    assert_eq!(fs::read(dir.join("A")).unwrap(), b"old");
}

#[test]
fn remove_deletes_what_was_written_and_nothing_else() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let dir = tmp.path().join("secrets");
    let opts = FilesOptions {
        dir: Some(dir.clone()),
        dotenv_file: Some(tmp.path().join("app.env")),
        json_file: Some(tmp.path().join("app.json")),
        ..FilesOptions::default()
    };
    files::write(&set(&[("A", "1"), ("B", "2")]), &opts).unwrap();
    files::write(&set(&[("A", "1"), ("B", "3")]), &opts).unwrap();
    fs::write(dir.join("mine"), "keep").unwrap();
    files::remove(&opts).unwrap();
    assert_eq!(entries(&dir), vec!["mine"]);
    assert_eq!(entries(tmp.path()), vec!["secrets"]);
    // Removing again is not an error.
    files::remove(&opts).unwrap();
}

#[test]
fn a_dotenv_file_inside_the_directory_may_not_share_a_keys_name() {
    let Some(tmp) = tmpfs_scratch() else { return };
    let opts = FilesOptions {
        dotenv_file: Some(tmp.path().join("A")),
        ..opts_dir(tmp.path())
    };
    let err = files::write(&set(&[("A", "v")]), &opts).unwrap_err();
    assert!(matches!(err, FilesError::Clash { .. }), "{err}");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn a_disk_backed_dotenv_target_is_refused_before_the_tree_beside_it_is_written() {
    let (Some(tmp), Some(disk)) = (tmpfs_scratch(), disk_scratch()) else {
        return;
    };
    let opts = FilesOptions {
        dotenv_file: Some(disk.path().join("app.env")),
        ..opts_dir(tmp.path())
    };
    let err = files::write(&set(&[("K", "v")]), &opts).unwrap_err();
    assert!(matches!(err, FilesError::NotTmpfs { .. }), "{err}");
    assert!(entries(tmp.path()).is_empty());
    assert!(entries(disk.path()).is_empty());
}
