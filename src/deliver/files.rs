//! Secrets -> files: one file per key in the Kubernetes atomic-writer layout,
//! a POSIX-quoted dotenv file and a JSON object; private modes, optional owner,
//! memory-backed filesystems only unless told otherwise.
//!
//! Per-key layout inside DIR (what Kubernetes does for projected volumes, so
//! existing consumers and file watchers understand it):
//!
//! ```text
//! DIR/..2026_11_29_14_30_00.123456789_1a2b3c4d/KEY   the files of one generation
//! DIR/..data -> ..2026_11_29_14_30_00.123456789_1a2b3c4d
//! DIR/KEY    -> ..data/KEY
//! ```
//!
//! A generation is complete (written, fsynced, final mode and owner) before the
//! single `rename("..data_tmp", "..data")` makes it visible, so `DIR/KEY` is
//! always a whole file of one generation, and a reader that opens `DIR/..data`
//! once and reads every key through that descriptor sees one generation only.
//! Every path is opened with `O_NOFOLLOW`/`O_EXCL` relative to a directory
//! descriptor, so a planted symlink cannot redirect a write. One writer per
//! DIR at a time: this module takes no lock.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::sys::statfs::{self, FsType};
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::error::ExitClass;
use crate::secrets::SecretSet;

/// Default mode of written files: readable by the owner only.
pub const DEFAULT_FILE_MODE: u32 = 0o400;

/// The symlink that names the current generation.
const DATA_LINK: &str = "..data";
/// Built beside `..data`, then renamed over it: the one atomic step of an update.
const DATA_LINK_TMP: &str = "..data_tmp";
/// `ramfs` has no constant in nix; value from `linux/magic.h`.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
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

/// What [`write`] produced: the paths a program should read.
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
    #[error("secret {name:?} cannot go in the dotenv file: {reason} (use --files-dir or --json-file for it)")]
    NotDotenvSafe { name: String, reason: &'static str },
    /// `--file-mode` out of range or useless.
    #[error("invalid file mode {mode:#o}: {reason}")]
    InvalidMode { mode: u32, reason: &'static str },
    /// Two outputs or an output and a key would be the same path.
    #[error("{path} would be written twice: {reason}")]
    Clash { path: PathBuf, reason: String },
    /// The target's filesystem keeps data on disk.
    #[error(
        "{path} is on a disk-backed filesystem (type {fs_type}), so secrets would reach the disk; \
         use a memory-backed directory (Kubernetes: an emptyDir with medium: Memory; \
         systemd: RuntimeDirectory=; or /dev/shm) or pass --allow-non-tmpfs"
    )]
    NotTmpfs { path: PathBuf, fs_type: String },
    /// A symlink where a real directory or file must be.
    #[error(
        "{path} is a symbolic link; refusing to write secrets through it (give the real path)"
    )]
    Symlink { path: PathBuf },
    /// A non-directory where the output directory must be.
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    /// The output directory's parent does not exist (only the last component is created).
    #[error("{path} does not exist; create it (only the last component of a target directory is created)")]
    MissingParent { path: PathBuf },
    /// Something that svid-exec did not write is in the way.
    #[error("{path} exists and was not written by svid-exec ({what}); refusing to replace it")]
    Conflict { path: PathBuf, what: &'static str },
    /// `--file-owner` cannot be applied by this process.
    #[error(
        "cannot give files in {path} to owner {owner}: not permitted \
         (changing the owner needs root or CAP_CHOWN; giving the group needs membership; \
         drop --file-owner or grant the capability)"
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

impl FilesError {
    /// The exit class of this failure. Everything here is about the target or
    /// the input (paths, filesystem, privileges, names), so it is configuration.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Self::InvalidName { .. }
            | Self::NotDotenvSafe { .. }
            | Self::InvalidMode { .. }
            | Self::Clash { .. }
            | Self::NotTmpfs { .. }
            | Self::Symlink { .. }
            | Self::NotADirectory { .. }
            | Self::MissingParent { .. }
            | Self::Conflict { .. }
            | Self::OwnerNotPermitted { .. }
            | Self::Io { .. } => ExitClass::Config,
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: impl Into<io::Error>) -> FilesError {
    FilesError::Io {
        op,
        path: path.to_owned(),
        source: source.into(),
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
        let fd = open_or_create_dir(dir, opts)?;
        probe(&fd, dir, opts)?;
    }
    for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
        let (parent, _) = split_file_path(file)?;
        check_not_symlink_file(file)?;
        let fd = open_or_create_dir(&parent, opts)?;
        probe(&fd, &parent, opts)?;
    }
    Ok(())
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

fn file_name_problem(name: &str) -> Option<&'static str> {
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
        precheck_single(file, opts)?;
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
        written.files = write_tree(dir, secrets, opts)?;
    }
    if let Some((path, content)) = &dotenv {
        write_single(path, content, opts)?;
        written.dotenv_file = Some((*path).clone());
    }
    if let Some((path, content)) = &json {
        write_single(path, content, opts)?;
        written.json_file = Some((*path).clone());
    }
    Ok(written)
}

/// Removes what [`write`] wrote: per-key links, `..data`, every generation
/// directory, the dotenv and JSON files. Leaves DIR itself and anything in it
/// that svid-exec did not write. Missing targets are not an error.
pub fn remove(opts: &FilesOptions) -> Result<(), FilesError> {
    if let Some(dir) = &opts.dir {
        match open_dir_nofollow(dir) {
            Ok(fd) => remove_tree(&fd, dir)?,
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    for file in [&opts.dotenv_file, &opts.json_file].into_iter().flatten() {
        let (parent, name) = split_file_path(file)?;
        let fd = match open_dir_nofollow(&parent) {
            Ok(fd) => fd,
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        // Only a regular file can be ours; a link or anything else is left alone.
        if kind_at(&fd, name.as_os_str()) == Some(SFlag::S_IFREG) {
            unistd::unlinkat(&fd, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove", file, e))?;
            unistd::fsync(&fd).map_err(|e| io_err("sync", &parent, e))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checks

fn check_mode(mode: u32) -> Result<(), FilesError> {
    if mode & !0o777 != 0 {
        return Err(FilesError::InvalidMode {
            mode,
            reason: "only permission bits (at most 0777) are allowed, no setuid/setgid/sticky",
        });
    }
    if mode & 0o444 == 0 {
        return Err(FilesError::InvalidMode {
            mode,
            reason: "nobody could read the files; give at least the owner read (e.g. 0400)",
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

fn is_memory_backed(fs: FsType) -> bool {
    fs == statfs::TMPFS_MAGIC || fs == RAMFS_MAGIC
}

fn check_tmpfs(fd: &OwnedFd, path: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    if opts.allow_non_tmpfs {
        return Ok(());
    }
    let st = statfs::fstatfs(fd).map_err(|e| io_err("check the filesystem of", path, e))?;
    let fs = st.filesystem_type();
    if is_memory_backed(fs) {
        Ok(())
    } else {
        Err(FilesError::NotTmpfs {
            path: path.to_owned(),
            fs_type: format!("{:#x}", fs.0),
        })
    }
}

/// Creates and removes an empty file in `dir`, applying `owner` to it: proves
/// that we may write there and change ownership there (root without
/// `CAP_CHOWN` is common in containers), before any secret is fetched.
fn probe(fd: &OwnedFd, dir: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let name = format!("..probe_{:016x}", fastrand::u64(..));
    let file = fcntl::openat(
        fd,
        name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::S_IRUSR,
    )
    .map_err(|e| io_err("create files in", dir, e))?;
    let owned = apply_owner(&file, dir, opts);
    drop(file);
    let removed = unistd::unlinkat(fd, name.as_str(), UnlinkatFlags::NoRemoveDir)
        .map_err(|e| io_err("remove a probe file in", dir, e));
    owned.and(removed)
}

fn apply_owner(fd: &impl AsFd, path: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let Some((uid, gid)) = opts.owner else {
        return Ok(());
    };
    unistd::fchown(fd, Some(uid), gid).map_err(|e| {
        let source = io::Error::from(e);
        let owner = match gid {
            Some(g) => format!("{uid}:{g}"),
            None => uid.to_string(),
        };
        if matches!(e, Errno::EPERM | Errno::EACCES) {
            FilesError::OwnerNotPermitted {
                path: path.to_owned(),
                owner,
                source,
            }
        } else {
            FilesError::Io {
                op: "change the owner of",
                path: path.to_owned(),
                source,
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Directories

/// Directory mode for a generation (and a DIR we create): owner rwx while we
/// write (search-only afterwards for generations), group/other search only if
/// the file mode lets them read.
fn dir_search_bits(file_mode: u32) -> u32 {
    let mut bits = 0;
    if file_mode & 0o040 != 0 {
        bits |= 0o010;
    }
    if file_mode & 0o004 != 0 {
        bits |= 0o001;
    }
    bits
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits)
}

fn open_dir_nofollow(path: &Path) -> Result<OwnedFd, FilesError> {
    fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP => FilesError::Symlink {
            path: path.to_owned(),
        },
        Errno::ENOTDIR if is_symlink(path) => FilesError::Symlink {
            path: path.to_owned(),
        },
        Errno::ENOTDIR => FilesError::NotADirectory {
            path: path.to_owned(),
        },
        e => io_err("open the directory", path, e),
    })
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Opens `dir` refusing symlinks, creating its last component if missing
/// (private mode, given to `owner`), and checks its filesystem.
fn open_or_create_dir(dir: &Path, opts: &FilesOptions) -> Result<OwnedFd, FilesError> {
    match open_dir_nofollow(dir) {
        Ok(fd) => {
            check_tmpfs(&fd, dir, opts)?;
            return Ok(fd);
        }
        Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = dir.file_name().ok_or_else(|| FilesError::NotADirectory {
        path: dir.to_owned(),
    })?;
    let pfd = match open_dir_nofollow(&parent) {
        Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(FilesError::MissingParent { path: parent });
        }
        other => other?,
    };
    // Refuse before creating anything on a disk-backed parent.
    check_tmpfs(&pfd, &parent, opts)?;
    match stat::mkdirat(&pfd, name, mode(0o700 | dir_search_bits(opts.mode))) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io_err("create the directory", dir, e)),
    }
    let fd = open_dir_nofollow(dir)?;
    check_tmpfs(&fd, dir, opts)?;
    apply_owner(&fd, dir, opts)?;
    unistd::fsync(&pfd).map_err(|e| io_err("sync", &parent, e))?;
    Ok(fd)
}

/// `(parent, file name)` of a dotenv/JSON target; the name must be a plain component.
fn split_file_path(path: &Path) -> Result<(PathBuf, PathBuf), FilesError> {
    match path.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            Ok((parent, PathBuf::from(name)))
        }
        _ => Err(FilesError::InvalidName {
            name: path.display().to_string(),
            reason: "a dotenv/JSON target must end in a file name",
        }),
    }
}

/// What can be refused about a dotenv/JSON target without writing: a link or
/// non-file in its place, a disk-backed existing parent.
fn precheck_single(file: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let (parent, _) = split_file_path(file)?;
    check_not_symlink_file(file)?;
    match open_dir_nofollow(&parent) {
        Ok(fd) => check_tmpfs(&fd, &parent, opts),
        // Created (and checked) when it is written.
        Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn check_not_symlink_file(file: &Path) -> Result<(), FilesError> {
    let Ok(meta) = std::fs::symlink_metadata(file) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        Err(FilesError::Symlink {
            path: file.to_owned(),
        })
    } else if !meta.file_type().is_file() {
        Err(FilesError::Conflict {
            path: file.to_owned(),
            what: "not a regular file",
        })
    } else {
        Ok(())
    }
}

/// The type of the entry `name` in `dir`, without following a link.
fn kind_at(dir: &OwnedFd, name: &OsStr) -> Option<SFlag> {
    stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

fn link_target(dir: &OwnedFd, name: &OsStr) -> Option<std::ffi::OsString> {
    fcntl::readlinkat(dir, name).ok()
}

fn is_generation_name(name: &[u8]) -> bool {
    name.len() > 2 && name.starts_with(b"..") && name[2].is_ascii_digit() && !name.contains(&b'/')
}

/// `..2026_11_29_14_30_00.123456789_1a2b3c4d`: sortable, like Kubernetes', plus
/// a random tail so two writes in one nanosecond never share a name.
fn generation_name(now: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_nanos(now)
        .to_string()
        .chars()
        .filter(|c| *c != 'Z')
        .map(|c| if matches!(c, '-' | 'T' | ':') { '_' } else { c })
        .collect();
    format!("..{stamp}_{:08x}", fastrand::u32(..))
}

// ---------------------------------------------------------------------------
// Per-key tree

/// A generation directory being built: removed on drop unless published.
/// Cleanup unlinks the files it created by name relative to DIR's descriptor,
/// so it needs no new descriptor and works even when they have run out.
struct Generation<'a> {
    dirfd: &'a OwnedFd,
    name: String,
    created: Vec<String>,
    published: bool,
}

impl Drop for Generation<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // It may be sealed (search-only) already; a non-root writer needs
        // write permission back to empty it. Never chmod through a link.
        if kind_at(self.dirfd, OsStr::new(&self.name)) == Some(SFlag::S_IFDIR) {
            let _ = stat::fchmodat(
                self.dirfd,
                self.name.as_str(),
                mode(0o700),
                stat::FchmodatFlags::FollowSymlink,
            );
        }
        for file in &self.created {
            let _ = unistd::unlinkat(
                self.dirfd,
                format!("{}/{file}", self.name).as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        let _ = unistd::unlinkat(self.dirfd, self.name.as_str(), UnlinkatFlags::RemoveDir);
    }
}

fn remove_generation(dir: &Path, name: &str) {
    let path = dir.join(name);
    // A sealed generation is search-only; make it writable again so a
    // non-root writer can empty it. O_NOFOLLOW: never chmod through a link.
    if let Ok(fd) = fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        let _ = stat::fchmod(&fd, mode(0o700));
    }
    if let Err(e) = std::fs::remove_dir_all(&path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an old generation of secret files");
        }
    }
}

fn write_tree(
    dir: &Path,
    secrets: &SecretSet,
    opts: &FilesOptions,
) -> Result<BTreeMap<String, PathBuf>, FilesError> {
    let dirfd = open_or_create_dir(dir, opts)?;

    // Every key's slot in DIR must be free or already our link.
    for name in secrets.names() {
        let os = OsStr::new(name);
        match kind_at(&dirfd, os) {
            None => {}
            Some(SFlag::S_IFLNK) if is_our_key_link(&dirfd, os) => {}
            Some(_) => {
                return Err(FilesError::Conflict {
                    path: dir.join(name),
                    what: "not a link into ..data",
                })
            }
        }
    }
    for reserved in [DATA_LINK, DATA_LINK_TMP] {
        match kind_at(&dirfd, OsStr::new(reserved)) {
            None | Some(SFlag::S_IFLNK) => {}
            Some(_) => {
                return Err(FilesError::Conflict {
                    path: dir.join(reserved),
                    what: "not a symbolic link",
                })
            }
        }
    }
    let previous = link_target(&dirfd, OsStr::new(DATA_LINK));

    // Build the new generation privately.
    let mut generation = create_generation(&dirfd, dir)?;
    let gen_path = dir.join(&generation.name);
    let genfd = open_dir_nofollow(&gen_path)?;
    for (name, value) in secrets.iter() {
        // Recorded before creation: a file that exists half-written is removed too.
        generation.created.push(name.to_owned());
        create_file_at(
            &genfd,
            OsStr::new(name),
            value.expose_secret().as_bytes(),
            &gen_path.join(name),
            opts,
        )?;
    }
    apply_owner(&genfd, &gen_path, opts)?;
    stat::fchmod(&genfd, mode(0o500 | dir_search_bits(opts.mode)))
        .map_err(|e| io_err("set the mode of", &gen_path, e))?;
    unistd::fsync(&genfd).map_err(|e| io_err("sync", &gen_path, e))?;
    drop(genfd);

    // Publish: one rename makes the whole generation current.
    match unistd::unlinkat(&dirfd, DATA_LINK_TMP, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_err("remove", &dir.join(DATA_LINK_TMP), e)),
    }
    unistd::symlinkat(generation.name.as_str(), &dirfd, DATA_LINK_TMP)
        .map_err(|e| io_err("create the link", &dir.join(DATA_LINK_TMP), e))?;
    if let Err(e) = fcntl::renameat(&dirfd, DATA_LINK_TMP, &dirfd, DATA_LINK) {
        let _ = unistd::unlinkat(&dirfd, DATA_LINK_TMP, UnlinkatFlags::NoRemoveDir);
        return Err(io_err("replace the link", &dir.join(DATA_LINK), e));
    }
    generation.published = true;
    unistd::fsync(&dirfd).map_err(|e| io_err("sync", dir, e))?;

    // Stable per-key links; drop links of keys that are gone.
    let mut files = BTreeMap::new();
    for name in secrets.names() {
        let os = OsStr::new(name);
        if kind_at(&dirfd, os).is_none() {
            unistd::symlinkat(format!("{DATA_LINK}/{name}").as_str(), &dirfd, os)
                .map_err(|e| io_err("create the link", &dir.join(name), e))?;
        }
        files.insert(name.to_owned(), dir.join(name));
    }
    let keep: BTreeSet<&str> = secrets.names().collect();
    for entry in list_dir(dir)? {
        let keep_it = entry.to_str().is_some_and(|n| keep.contains(n));
        if !keep_it && is_our_key_link(&dirfd, entry.as_os_str()) {
            unistd::unlinkat(&dirfd, entry.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove the link", &dir.join(&entry), e))?;
        }
    }
    unistd::fsync(&dirfd).map_err(|e| io_err("sync", dir, e))?;

    // The old generation, and any left by an interrupted earlier run.
    if let Some(prev) = previous.as_ref().and_then(|p| p.to_str()) {
        if is_generation_name(prev.as_bytes()) && prev != generation.name {
            remove_generation(dir, prev);
        }
    }
    for entry in list_dir(dir)? {
        let bytes = entry.as_os_str().as_bytes();
        if is_generation_name(bytes)
            && bytes != generation.name.as_bytes()
            && kind_at(&dirfd, entry.as_os_str()) == Some(SFlag::S_IFDIR)
        {
            remove_generation(dir, &entry.to_string_lossy());
        }
    }
    Ok(files)
}

fn create_generation<'a>(dirfd: &'a OwnedFd, dir: &Path) -> Result<Generation<'a>, FilesError> {
    loop {
        let name = generation_name(SystemTime::now());
        match stat::mkdirat(dirfd, name.as_str(), mode(0o700)) {
            Ok(()) => {
                return Ok(Generation {
                    dirfd,
                    name,
                    created: Vec::new(),
                    published: false,
                })
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_err("create a generation directory in", dir, e)),
        }
    }
}

/// `name` in `dir` is a symlink to `..data/name`: a per-key link we made.
fn is_our_key_link(dir: &OwnedFd, name: &OsStr) -> bool {
    link_target(dir, name).is_some_and(|t| {
        let t = t.as_bytes();
        t.strip_prefix(b"..data/") == Some(name.as_bytes())
    })
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        names.push(PathBuf::from(entry.file_name()));
    }
    Ok(names)
}

/// Creates `name` in `dir` exclusively (never through a link) at `opts.mode`
/// from the start, gives it to the owner, writes `bytes` and syncs it.
fn create_file_at(
    dir: &OwnedFd,
    name: &OsStr,
    bytes: &[u8],
    path: &Path,
    opts: &FilesOptions,
) -> Result<(), FilesError> {
    let fd = fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode(opts.mode),
    )
    .map_err(|e| io_err("create", path, e))?;
    apply_owner(&fd, path, opts)?;
    // The umask may have narrowed the mode; set exactly what was asked (it
    // can only widen back up to `opts.mode`, never beyond).
    stat::fchmod(&fd, mode(opts.mode)).map_err(|e| io_err("set the mode of", path, e))?;
    let mut file = File::from(fd);
    file.write_all(bytes)
        .map_err(|e| io_err("write", path, e))?;
    file.sync_all().map_err(|e| io_err("sync", path, e))?;
    Ok(())
}

fn remove_tree(dirfd: &OwnedFd, dir: &Path) -> Result<(), FilesError> {
    for entry in list_dir(dir)? {
        let os = entry.as_os_str();
        let bytes = os.as_bytes();
        let ours_link = (bytes == DATA_LINK.as_bytes() || bytes == DATA_LINK_TMP.as_bytes())
            && kind_at(dirfd, os) == Some(SFlag::S_IFLNK);
        if ours_link || is_our_key_link(dirfd, os) {
            unistd::unlinkat(dirfd, os, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove", &dir.join(&entry), e))?;
        }
    }
    for entry in list_dir(dir)? {
        let os = entry.as_os_str();
        if is_generation_name(os.as_bytes()) && kind_at(dirfd, os) == Some(SFlag::S_IFDIR) {
            remove_generation(dir, &os.to_string_lossy());
        }
    }
    unistd::fsync(dirfd).map_err(|e| io_err("sync", dir, e))
}

// ---------------------------------------------------------------------------
// Single files (dotenv, JSON)

/// Temp file in the target's directory, then one rename over the target.
fn write_single(path: &Path, content: &[u8], opts: &FilesOptions) -> Result<(), FilesError> {
    let (parent, name) = split_file_path(path)?;
    let pfd = open_or_create_dir(&parent, opts)?;
    match kind_at(&pfd, name.as_os_str()) {
        None | Some(SFlag::S_IFREG) => {}
        Some(SFlag::S_IFLNK) => {
            return Err(FilesError::Symlink {
                path: path.to_owned(),
            })
        }
        Some(_) => {
            return Err(FilesError::Conflict {
                path: path.to_owned(),
                what: "not a regular file",
            })
        }
    }
    let tmp = format!(".{}.tmp-{:016x}", name.display(), fastrand::u64(..));
    let tmp_path = parent.join(&tmp);
    let result = create_file_at(&pfd, OsStr::new(&tmp), content, &tmp_path, opts).and_then(|()| {
        fcntl::renameat(&pfd, tmp.as_str(), &pfd, name.as_os_str())
            .map_err(|e| io_err("rename into place", path, e))
    });
    if let Err(e) = result {
        let _ = unistd::unlinkat(&pfd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    unistd::fsync(&pfd).map_err(|e| io_err("sync", &parent, e))
}

fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// `NAME='value'` lines in name order. Inside single quotes the shell takes
/// every byte literally except `'`, written as `'\''`; so `. FILE` restores
/// each value byte for byte, newlines included. The buffer is sized for the
/// worst case up front so it never reallocates (a reallocation would leave an
/// unzeroed copy behind).
fn render_dotenv(secrets: &SecretSet) -> Result<Zeroizing<Vec<u8>>, FilesError> {
    let mut capacity = 0;
    for (name, value) in secrets.iter() {
        if !is_shell_name(name) {
            return Err(FilesError::NotDotenvSafe {
                name: name.to_owned(),
                reason: "it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
            });
        }
        let value = value.expose_secret();
        if value.contains('\0') {
            return Err(FilesError::NotDotenvSafe {
                name: name.to_owned(),
                reason: "its value contains a NUL byte, which a shell variable cannot hold",
            });
        }
        capacity += name.len() + 4 + 4 * value.len();
    }
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    for (name, value) in secrets.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        for &b in value.expose_secret().as_bytes() {
            if b == b'\'' {
                out.extend_from_slice(b"'\\''");
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"'\n");
    }
    debug_assert!(out.len() <= capacity);
    Ok(out)
}

/// One JSON object, names in order, followed by a newline. Escaped by hand so
/// the buffer can be sized for the worst case (`\u00XX`, 6 bytes per byte)
/// and never reallocates.
fn render_json(secrets: &SecretSet) -> Zeroizing<Vec<u8>> {
    let capacity = 3 + secrets
        .iter()
        .map(|(n, v)| 6 * (n.len() + v.expose_secret().len()) + 6)
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.push(b'{');
    for (i, (name, value)) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(&mut out, name);
        out.push(b':');
        push_json_string(&mut out, value.expose_secret());
    }
    out.extend_from_slice(b"}\n");
    debug_assert!(out.len() <= capacity);
    out
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            // UTF-8 is valid JSON as is.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn set(pairs: &[(&str, &str)]) -> SecretSet {
        let mut s = SecretSet::new();
        for (k, v) in pairs {
            s.insert(*k, SecretString::from((*v).to_owned()));
        }
        s
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";

    fn awkward_values() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PEM", PEM),
            ("PEM_NO_NL", PEM.trim_end()),
            ("UNICODE", "héllo wörld ✓ 日本語 🦀"),
            ("QUOTES", r#"it's "quoted" '' ' "#),
            ("EQUALS", "a=b=c=="),
            ("DOLLAR", "$HOME ${PATH} $(id) `id` $$"),
            ("BACKSLASH", r"C:\path\to\n\\x \'"),
            ("TRAILING_NL", "value\n\n"),
            ("EMPTY", ""),
            ("SPACES", "  lead and trail  "),
            ("GLOB", "* ? [a-z] ~ # ; & | < > ( ) { }"),
        ]
    }

    #[test]
    fn dotenv_round_trips_every_value_byte_exactly_through_sh() {
        let values = awkward_values();
        let rendered = render_dotenv(&set(&values)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        std::fs::write(&file, &*rendered).unwrap();
        for (key, want) in values {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(". \"$1\"; printf %s \"${key}\""))
                .arg("sh")
                .arg(&file)
                .env_clear()
                .output()
                .unwrap();
            assert!(out.status.success(), "sh failed for {key}: {out:?}");
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                want,
                "{key} did not round-trip"
            );
        }
    }

    #[test]
    fn dotenv_quotes_single_quotes_and_nothing_else() {
        let got = render_dotenv(&set(&[("A", "x'y\n$z"), ("B", "")])).unwrap();
        assert_eq!(&*got, b"A='x'\\''y\n$z'\nB=''\n");
    }

    #[test]
    fn dotenv_refuses_names_sh_cannot_assign_and_nul_values() {
        for name in ["1A", "A-B", "A.B", "A B", "", "É"] {
            let err = render_dotenv(&set(&[(name, "v")])).unwrap_err();
            assert!(matches!(err, FilesError::NotDotenvSafe { .. }), "{name:?}");
            assert_eq!(err.exit_class(), ExitClass::Config);
        }
        let err = render_dotenv(&set(&[("A", "x\0y")])).unwrap_err();
        assert!(err.to_string().contains("NUL"));
        assert!(!err.to_string().contains("x\0y"));
    }

    #[test]
    fn json_is_one_object_in_name_order_with_exact_values() {
        let values = awkward_values();
        let rendered = render_json(&set(&values));
        let parsed: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
        let obj = parsed.as_object().unwrap();
        assert_eq!(obj.len(), values.len());
        for (k, v) in &values {
            assert_eq!(obj[*k].as_str().unwrap(), *v, "{k}");
        }
        let keys: Vec<&String> = obj.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(
            &*render_json(&set(&[("B", "2\"\\\n\u{1}"), ("A", "é")])),
            "{\"A\":\"é\",\"B\":\"2\\\"\\\\\\n\\u0001\"}\n".as_bytes()
        );
        assert_eq!(&*render_json(&SecretSet::new()), b"{}\n");
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
    fn generation_names_look_like_kubernetes_and_are_recognised() {
        let name = generation_name(SystemTime::UNIX_EPOCH);
        assert!(
            name.starts_with("..1970_01_01_00_00_00.000000000_"),
            "{name}"
        );
        assert!(is_generation_name(name.as_bytes()));
        assert!(!is_generation_name(b"..data"));
        assert!(!is_generation_name(b"..data_tmp"));
        assert!(!is_generation_name(b"KEY"));
        assert_ne!(name, generation_name(SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn modes_outside_permission_bits_or_unreadable_are_refused() {
        for bad in [0o4400, 0o1400, 0o000, 0o200, 0o1_000_000] {
            assert!(check_mode(bad).is_err(), "{bad:o}");
        }
        for good in [0o400, 0o440, 0o600, 0o644, 0o040] {
            assert!(check_mode(good).is_ok(), "{good:o}");
        }
    }

    #[test]
    fn directory_search_bits_follow_the_file_mode() {
        assert_eq!(dir_search_bits(0o400), 0);
        assert_eq!(dir_search_bits(0o440), 0o010);
        assert_eq!(dir_search_bits(0o444), 0o011);
        assert_eq!(dir_search_bits(0o600), 0);
    }

    #[test]
    fn errors_name_keys_but_never_values() {
        let err = validate_names(&set(&[("a/b", "SUPERSECRETVALUE")])).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("a/b"));
        assert!(!shown.contains("SUPERSECRETVALUE"));
    }
}
