//! Secrets -> files: one file per key in the Kubernetes atomic-writer layout,
//! a POSIX-quoted dotenv file and a JSON object; private modes, optional owner,
//! memory-backed filesystems only unless told otherwise. This file holds the
//! options, the errors and the checks made before anything is written;
//! `tree.rs` the per-key layout, `single.rs` the dotenv/JSON files,
//! `render.rs` their contents, `fs.rs` the descriptor-relative file system calls.
//!
//! Per-key layout inside DIR (what Kubernetes does for projected volumes, so
//! existing consumers and file watchers understand it):
//!
//! ```text
//! DIR/..2026_11_29_14_30_00.123456789_1a2b3c4d/KEY   the files of one generation
//! DIR/..data -> ..2026_11_29_14_30_00.123456789_1a2b3c4d
//! DIR/KEY    -> ..data/KEY
//! DIR/..svid-exec                                     svid-exec's state (`state.rs`)
//! ```
//!
//! A generation is complete (written, fsynced, final mode and owner) before the
//! single `rename("..data_tmp", "..data")` makes it visible, so `DIR/KEY` is
//! always a whole file of one generation, and a reader that opens `DIR/..data`
//! once and reads every key through that descriptor sees one generation only.
//!
//! Who may shape a target: every target directory is resolved by
//! `TargetDir::open` in `fs.rs` (a link on its path is followed only when ours or
//! root's; the directory must be ours, root's or `--file-owner`'s), and every
//! entry in it is opened with `O_NOFOLLOW`/`O_EXCL` relative to that
//! descriptor, so a planted symlink cannot redirect a write. A directory
//! others can write is accepted (an `emptyDir` is 0777), but nothing in it
//! that svid-exec did not make is adopted: a `..data`, `..data_tmp` or
//! per-key link must be our own link where the layout says, a dotenv/JSON
//! file our own regular file, else 78 naming it; another user's generation-
//! like directory is left alone. `..svid-exec` is svid-exec's own state file
//! and is never touched here. One writer per DIR at a time: this module
//! takes no lock.

// The fallback directory (`deliver::fallback`) is opened by the same rules.
pub(super) mod fs;
mod render;
mod single;
pub mod state;
mod tree;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use crate::error::{ExitClass, Failure};
use crate::secrets::SecretSet;
use fs::{probe, split_file_path};
pub(crate) use fs::{DirRules, TargetDir};
use render::{render_dotenv, render_json};

/// Default mode of written files: readable by the owner only.
pub const DEFAULT_FILE_MODE: u32 = 0o400;

/// Longest file name Linux accepts (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Where and how to write the secrets. Built by the CLI layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesOptions {
    /// One file per secret in this directory (atomic generation layout).
    pub dir: Option<PathBuf>,
    /// All secrets in one POSIX-quoted dotenv file.
    pub dotenv_file: Option<PathBuf>,
    /// All secrets in one JSON object.
    pub json_file: Option<PathBuf>,
    /// Permission bits of written files (`--file-mode`), at most `0o777`.
    pub mode: u32,
    /// Owner (and optionally group) of written files and generation directories.
    pub owner: Option<(Uid, Option<Gid>)>,
    /// Accept a disk-backed filesystem (`--allow-non-tmpfs`).
    pub allow_non_tmpfs: bool,
}

impl Default for FilesOptions {
    fn default() -> Self {
        Self {
            dir: None,
            dotenv_file: None,
            json_file: None,
            mode: DEFAULT_FILE_MODE,
            owner: None,
            allow_non_tmpfs: false,
        }
    }
}

impl FilesOptions {
    /// Whether any file output is asked for.
    pub fn is_empty(&self) -> bool {
        self.dir.is_none() && self.dotenv_file.is_none() && self.json_file.is_none()
    }
}

/// What [`write()`] produced: the paths a program should read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Each key's stable path, `DIR/KEY` (a link that always resolves to the
    /// current generation): the value for `KEY_FILE=` (`--env-file-refs`).
    pub files: BTreeMap<String, PathBuf>,
    /// The dotenv file, when asked for.
    pub dotenv_file: Option<PathBuf>,
    /// The JSON file, when asked for.
    pub json_file: Option<PathBuf>,
}

impl Written {
    /// The stable path of `key`'s file, if per-key files were written.
    pub fn path_of(&self, key: &str) -> Option<&Path> {
        self.files.get(key).map(PathBuf::as_path)
    }
}

/// Why secrets could not be written (or removed). Messages carry names and
/// paths, never values.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A key that cannot be a file name in DIR.
    #[error("secret name {name:?} cannot be a file name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A key or value the dotenv layout cannot carry byte-exactly.
    #[error("secret {name:?} cannot go in the dotenv file: {reason} ")]
    NotDotenvSafe { name: String, reason: &'static str },
    /// `--file-mode` out of range or useless.
    #[error("invalid file mode {mode:#o}: {reason}")]
    InvalidMode { mode: u32, reason: &'static str },
    /// Two outputs or an output and a key would be the same path.
    #[error("{path} would be written twice: {reason}")]
    Clash { path: PathBuf, reason: String },
    /// The target's filesystem keeps data on disk.
    #[error(
        "{path} is on a disk-backed filesystem (type {fs_type}), so secrets would reach the disk"
    )]
    NotTmpfs { path: PathBuf, fs_type: String },
    /// A symlink where a real directory or file must be.
    #[error("{path} is a symbolic link; refusing to write secrets through it")]
    Symlink { path: PathBuf },
    /// A non-directory where the output directory must be.
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    /// The output directory's parent does not exist (only the last component is created).
    #[error("{path} does not exist")]
    MissingParent { path: PathBuf },
    /// Something that svid-exec did not write is in the way.
    #[error("{path} exists and was not written by svid-exec ({what}); refusing to replace it")]
    Conflict { path: PathBuf, what: &'static str },
    /// A target directory, a link on its path or an entry in it belongs to
    /// another user, who could change what svid-exec writes or reads there.
    #[error("{path} is {what} of another user (uid {uid}); refusing to use it")]
    ForeignOwner {
        path: PathBuf,
        uid: u32,
        what: &'static str,
    },
    /// `--file-owner` cannot be applied by this process.
    #[error(
        "cannot give files in {path} to owner {owner}: not permitted \
         (changing the owner needs root or CAP_CHOWN; giving the group needs membership)"
    )]
    OwnerNotPermitted {
        path: PathBuf,
        owner: String,
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Failure for FilesError {
    /// Everything here is about the target or the input (paths, filesystem,
    /// privileges, names), so it is configuration. (A new variant is still
    /// looked at: [`Failure::hint`] below matches every one.)
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::InvalidName { .. } => {
                "rename the secret in Infisical, or deliver it with --json-file, which carries any name"
            }
            Self::NotDotenvSafe { .. } => "use --files-dir or --json-file for it",
            Self::InvalidMode { .. } => {
                "use permission bits the owner can read and only the owner can write, such as \
                 0400 or 0440"
            }
            Self::Clash { .. } => "give each output a path of its own",
            Self::NotTmpfs { .. } => {
                "use a memory-backed directory (Kubernetes: an emptyDir with medium: Memory; \
                 systemd: RuntimeDirectory=; or a private directory such as /dev/shm/app, \
                 which svid-exec creates 0700) or pass --allow-non-tmpfs"
            }
            Self::Symlink { .. } => "give the real path",
            Self::NotADirectory { .. } => "give a directory, or a path where one may be created",
            Self::MissingParent { .. } => {
                "create it (only the last component of a target directory is created)"
            }
            Self::Conflict { .. } => "move it away, or choose another target",
            Self::ForeignOwner { .. } => {
                "give a path of your own: a missing last component is created 0700 (a private \
                 subdirectory of a shared volume, say), owned by svid-exec's user; or remove \
                 what the other user left"
            }
            Self::OwnerNotPermitted { .. } => "drop --file-owner or grant the capability",
            Self::Io { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

/// Checks everything that can be checked before any secret is fetched: the
/// mode, that outputs do not collide, that each target directory exists or can
/// be created, is a real directory on tmpfs/ramfs (unless allowed), that we
/// may create files in it, and that `owner` can be applied there.
pub fn preflight(opts: &FilesOptions) -> Result<(), FilesError> {
    check_mode(opts.mode)?;
    check_outputs_distinct(opts)?;
    if let Some(dir) = &opts.dir {
        probe(&TargetDir::open(dir, &DirRules::files(opts))?, opts)?;
    }
    for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
        preflight_file(file, opts)?;
    }
    Ok(())
}

/// [`preflight`] for one single-file target (the dotenv and JSON files, a
/// template's DEST): its directory resolved by [`TargetDir::open`] (created
/// if only its last component is missing; ours, root's or `--file-owner`'s,
/// through trusted links only; on tmpfs unless allowed), `file`'s slot free
/// or our own regular file, and we may create files there and apply `owner`.
pub(crate) fn preflight_file(file: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    probe(&single::open_parent(file, opts)?, opts)
}

/// What can be refused about a single-file target without writing (see
/// `single::precheck`), for a target that is not the dotenv or JSON file.
pub(crate) fn precheck_file(file: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    single::precheck(file, opts)
}

/// Replaces `file` with `content` the way the dotenv and JSON files are
/// written: a temp file in its directory, created exclusively at `opts.mode`
/// and owner, fsynced, renamed over it.
pub(crate) fn write_file(
    file: &Path,
    content: &[u8],
    opts: &FilesOptions,
) -> Result<(), FilesError> {
    single::write(file, content, opts)
}

/// Removes a file [`write_file`] wrote (our own regular file only; anything
/// else is left alone, and a missing one is fine).
pub(crate) fn remove_file(file: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    single::remove(file, opts)
}

/// The stable path of `key`'s file in the per-key directory `dir`: `DIR/KEY`,
/// a link that always resolves into the current generation (what
/// `--env-file-refs` gives the child as `KEY_FILE`).
pub fn key_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(key)
}

/// Refuses any key that cannot safely be a file name in DIR: empty, `.`, `..`,
/// containing `/` or NUL, longer than `NAME_MAX`, or starting with `..` (the
/// layout's own `..data` and generation names).
pub fn validate_names(secrets: &SecretSet) -> Result<(), FilesError> {
    for name in secrets.names() {
        if let Some(reason) = file_name_problem(name) {
            return Err(FilesError::InvalidName {
                name: name.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

/// Why `name` cannot be a file name in a per-key directory, if it cannot.
pub fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a path component")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.starts_with("..") {
        Some("names starting with '..' are reserved for the atomic-update layout")
    } else if name.len() > NAME_MAX {
        Some("it is longer than 255 bytes")
    } else {
        None
    }
}

/// Writes every requested output. Everything that can be refused (names,
/// dotenv-safety, collisions, symlinks, filesystem type) is refused before the
/// first byte is written; a failure while writing leaves the previous
/// generation/file in place and removes what was partly written.
pub fn write(secrets: &SecretSet, opts: &FilesOptions) -> Result<Written, FilesError> {
    check_mode(opts.mode)?;
    check_outputs_distinct(opts)?;
    if opts.dir.is_some() {
        validate_names(secrets)?;
        check_keys_clear_of_single_files(secrets, opts)?;
    }
    // A refused dotenv/JSON target must not be found only after the tree is
    // already swapped in.
    for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
        single::precheck(file, opts)?;
    }
    let dotenv = match &opts.dotenv_file {
        Some(path) => Some((path, render_dotenv(secrets)?)),
        None => None,
    };
    let json = opts
        .json_file
        .as_ref()
        .map(|path| (path, render_json(secrets)));

    let mut written = Written::default();
    if let Some(dir) = &opts.dir {
        written.files = tree::write(dir, secrets, opts)?;
    }
    if let Some((path, content)) = &dotenv {
        single::write(path, content, opts)?;
        written.dotenv_file = Some((*path).clone());
    }
    if let Some((path, content)) = &json {
        single::write(path, content, opts)?;
        written.json_file = Some((*path).clone());
    }
    Ok(written)
}

/// Removes what [`write()`] wrote: per-key links, `..data`, every generation
/// directory, the dotenv and JSON files. Leaves DIR itself and anything in it
/// that svid-exec did not write. Missing targets are not an error.
pub fn remove(opts: &FilesOptions) -> Result<(), FilesError> {
    if let Some(dir) = &opts.dir {
        tree::remove(dir, opts)?;
    }
    for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
        single::remove(file, opts)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checks

/// `--file-mode` (and a template's MODE): permission bits only, readable by
/// someone, writable by no one but the owner.
pub(crate) fn check_mode(mode: u32) -> Result<(), FilesError> {
    if mode & !0o777 != 0 {
        return Err(FilesError::InvalidMode {
            mode,
            reason: "only permission bits (at most 0777) are allowed, no setuid/setgid/sticky",
        });
    }
    if mode & 0o444 == 0 {
        return Err(FilesError::InvalidMode {
            mode,
            reason: "nobody could read the files",
        });
    }
    if mode & 0o022 != 0 {
        return Err(FilesError::InvalidMode {
            mode,
            reason: "the group or others could change the secrets (write bits 0022)",
        });
    }
    Ok(())
}

fn check_outputs_distinct(opts: &FilesOptions) -> Result<(), FilesError> {
    if let (Some(a), Some(b)) = (&opts.dotenv_file, &opts.json_file) {
        if a == b {
            return Err(FilesError::Clash {
                path: a.clone(),
                reason: "--dotenv-file and --json-file name the same file".into(),
            });
        }
    }
    if let Some(dir) = &opts.dir {
        for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
            let (_, name) = split_file_path(file)?;
            if *file == *dir
                || (name.as_os_str().as_bytes().starts_with(b"..") && file.parent() == Some(dir))
            {
                return Err(FilesError::Clash {
                    path: file.clone(),
                    reason: "it is the files directory or one of its reserved '..' names".into(),
                });
            }
        }
    }
    Ok(())
}

/// A dotenv or JSON file inside DIR must not share a key's name.
fn check_keys_clear_of_single_files(
    secrets: &SecretSet,
    opts: &FilesOptions,
) -> Result<(), FilesError> {
    let Some(dir) = &opts.dir else { return Ok(()) };
    for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
        let (parent, name) = split_file_path(file)?;
        if parent == *dir && secrets.contains(&name.to_string_lossy()) {
            return Err(FilesError::Clash {
                path: file.clone(),
                reason: format!("it is also the file of secret {:?}", name.to_string_lossy()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> SecretSet {
        SecretSet::from_pairs(pairs)
    }

    #[test]
    fn names_that_cannot_be_file_names_are_refused() {
        let long = "x".repeat(256);
        let table: &[(&str, bool)] = &[
            ("DB_PASSWORD", true),
            ("tls.crt", true),
            (".hidden", true),
            ("a..b", true),
            ("with space", true),
            (&long[..255], true),
            ("", false),
            (".", false),
            ("..", false),
            ("../etc/passwd", false),
            ("a/b", false),
            ("/abs", false),
            ("nul\0byte", false),
            ("..data", false),
            ("..data_tmp", false),
            ("..2026_11_29_14_30_00.1", false),
            ("...", false),
            (&long, false),
        ];
        for (name, ok) in table {
            let result = validate_names(&set(&[(name, "v")]));
            assert_eq!(result.is_ok(), *ok, "{name:?}");
            if let Err(e) = result {
                assert_eq!(e.exit_class(), ExitClass::Config);
                assert!(matches!(e, FilesError::InvalidName { .. }));
            }
        }
    }

    #[test]
    fn modes_outside_permission_bits_or_unreadable_are_refused() {
        for bad in [
            0o4400,
            0o1400,
            0o000,
            0o200,
            0o1_000_000,
            0o420,
            0o402,
            0o666,
        ] {
            assert!(check_mode(bad).is_err(), "{bad:o}");
        }
        for good in [0o400, 0o440, 0o600, 0o644, 0o040] {
            assert!(check_mode(good).is_ok(), "{good:o}");
        }
    }

    /// Others can write `/dev/shm` itself (1777): only a private directory
    /// under it may be suggested.
    #[test]
    fn no_hint_suggests_dev_shm_itself_as_a_target() {
        let err = FilesError::NotTmpfs {
            path: PathBuf::from("/var/lib/app"),
            fs_type: "0xef53".into(),
        };
        let hint = err.hint().unwrap();
        assert!(hint.contains("/dev/shm/app"), "{hint}");
        for (at, shm) in hint.match_indices("/dev/shm") {
            assert!(hint[at + shm.len()..].starts_with('/'), "{hint}");
        }
    }

    #[test]
    fn errors_name_keys_but_never_values() {
        let err = validate_names(&set(&[("a/b", "SUPERSECRETVALUE")])).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("a/b"));
        assert!(!shown.contains("SUPERSECRETVALUE"));
    }
}
