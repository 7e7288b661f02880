//! The file system calls of the file writer, each relative to a directory
//! descriptor and never through a link someone else planted: [`TargetDir`],
//! the one way a target directory is resolved, created and checked (who owns
//! it and the links on its path, its filesystem, whether others can write
//! it); who made an entry; the write/ownership probe; listing; exclusive
//! file creation at the final mode and owner.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::libc::{dev_t, ino_t};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::sys::statfs::{self, FsType};
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};

use super::{FilesError, FilesOptions};

/// `ramfs` has no constant in nix; value from `linux/magic.h`.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Most links followed while resolving one target: the kernel's own limit.
const MAX_LINKS: usize = 40;

/// How [`TargetDir::open`] treats a target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirRules {
    /// Create a missing last component with exactly these permission bits:
    /// `fchmod` after `mkdir`, so the umask changes nothing (a setgid bit
    /// inherited from the parent, as under Kubernetes' `fsGroup`, is kept).
    /// `None`: a missing directory is [`FilesError::MissingParent`].
    pub create: Option<u32>,
    /// `--file-owner`: a directory svid-exec creates is given to this user,
    /// so one this user owns is accepted like our own.
    pub owner: Option<(Uid, Option<Gid>)>,
    /// Refuse a directory that is not on tmpfs/ramfs (and, before creating
    /// one, a parent that is not).
    pub memory_only: bool,
}

impl DirRules {
    /// The file writer's targets: created private (plus the search bits the
    /// file mode needs), on tmpfs unless `--allow-non-tmpfs`.
    pub(crate) fn files(opts: &FilesOptions) -> Self {
        Self {
            create: Some(0o700 | dir_search_bits(opts.mode)),
            owner: opts.owner,
            memory_only: !opts.allow_non_tmpfs,
        }
    }

    /// The file writer's targets when removing what was written: they must
    /// exist (a missing one has nothing to remove), whatever their filesystem.
    pub(crate) fn removal(opts: &FilesOptions) -> Self {
        Self {
            create: None,
            memory_only: false,
            ..Self::files(opts)
        }
    }
}

/// A resolved target directory: the descriptor every later call works
/// through (the path is kept for messages only), and what resolving it
/// learned.
#[derive(Debug)]
pub(crate) struct TargetDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Permission bits, setuid/setgid/sticky included.
    mode: u32,
    id: (dev_t, ino_t),
}

impl TargetDir {
    /// Resolves `path` one component at a time, each opened relative to the
    /// directory reached so far without following a link (`O_PATH |
    /// O_NOFOLLOW`). A symbolic link on the way is followed only when it is
    /// ours or root's (`/var/run -> /run` keeps working); one another user
    /// made is refused, naming its owner. The last component must be a real
    /// directory (a link there is refused, whoever made it), owned by us,
    /// root or `rules.owner`; when missing, it is created if `rules.create`
    /// says so. A directory others can write is accepted, and said once per
    /// process in the log.
    ///
    /// Not `openat2(RESOLVE_NO_SYMLINKS)`: it refuses root's links too, and
    /// none of its flags follows only the links of trusted owners.
    pub(crate) fn open(path: &Path, rules: &DirRules) -> Result<Self, FilesError> {
        let mut pending = components(path);
        let (mut at, mut walked) = start(path)?;
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            let here = walked.join(&name);
            let last = pending.is_empty();
            let entry = match fcntl::openat(
                &at,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if last && rules.create.is_some() => {
                    return Self::create(&at, &walked, &name, path, rules);
                }
                Err(Errno::ENOENT) => return Err(FilesError::MissingParent { path: here }),
                Err(e) => return Err(io_err("open", &here, e)),
            };
            let st = stat::fstat(&entry).map_err(|e| io_err("inspect", &here, e))?;
            match file_type(&st) {
                SFlag::S_IFDIR => {
                    at = entry;
                    walked = here;
                }
                SFlag::S_IFLNK if !is_ours_or_roots(st.st_uid) => {
                    return Err(FilesError::ForeignOwner {
                        path: here,
                        uid: st.st_uid,
                        what: "a symbolic link",
                    });
                }
                SFlag::S_IFLNK if last => return Err(FilesError::Symlink { path: here }),
                SFlag::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io_err("resolve", path, Errno::ELOOP));
                    }
                    // Read through the descriptor: the link read is the link checked.
                    let target = PathBuf::from(
                        fcntl::readlinkat(&entry, "")
                            .map_err(|e| io_err("read the link", &here, e))?,
                    );
                    if target.is_absolute() {
                        (at, walked) = start(&target)?;
                    }
                    for component in components(&target).into_iter().rev() {
                        pending.push_front(component);
                    }
                }
                _ => return Err(FilesError::NotADirectory { path: here }),
            }
        }
        let fd = fcntl::openat(
            &at,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open the directory", path, e))?;
        Self::checked(fd, path, rules)
    }

    /// Creates the missing last component `name` in `parent` (an `O_PATH`
    /// descriptor of `parent_path`), then checks it like any target.
    fn create(
        parent: &OwnedFd,
        parent_path: &Path,
        name: &OsStr,
        path: &Path,
        rules: &DirRules,
    ) -> Result<Self, FilesError> {
        let parent = fcntl::openat(
            parent,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open the directory", parent_path, e))?;
        // Refuse before creating anything on a disk-backed parent.
        if rules.memory_only {
            check_memory_backed(&parent, parent_path)?;
        }
        let created = match stat::mkdirat(&parent, name, mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(io_err("create the directory", path, e)),
        };
        let fd = fcntl::openat(
            &parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR if kind_at(&parent, name) == Some(SFlag::S_IFLNK) => {
                FilesError::Symlink {
                    path: path.to_owned(),
                }
            }
            Errno::ENOTDIR => FilesError::NotADirectory {
                path: path.to_owned(),
            },
            e => io_err("open the directory", path, e),
        })?;
        let mut target = Self::checked(fd, path, rules)?;
        if created {
            give_to(&target.fd, path, rules.owner)?;
            let bits = rules.create.unwrap_or(0o700) | (target.mode & Mode::S_ISGID.bits());
            stat::fchmod(&target.fd, mode(bits)).map_err(|e| io_err("set the mode of", path, e))?;
            target.mode = bits;
            unistd::fsync(&parent).map_err(|e| io_err("sync", parent_path, e))?;
        }
        Ok(target)
    }

    /// Who owns the directory `fd` is, and its filesystem, against `rules`.
    fn checked(fd: OwnedFd, path: &Path, rules: &DirRules) -> Result<Self, FilesError> {
        let st = stat::fstat(&fd).map_err(|e| io_err("inspect", path, e))?;
        let given = rules
            .owner
            .is_some_and(|(uid, _)| uid.as_raw() == st.st_uid);
        if !(is_ours_or_roots(st.st_uid) || given) {
            return Err(FilesError::ForeignOwner {
                path: path.to_owned(),
                uid: st.st_uid,
                what: "a directory",
            });
        }
        if rules.memory_only {
            check_memory_backed(&fd, path)?;
        }
        let target = Self {
            fd,
            path: path.to_owned(),
            mode: st.st_mode & 0o7777,
            id: (st.st_dev, st.st_ino),
        };
        if target.others_can_write() {
            target.report_shared();
        }
        Ok(target)
    }

    /// The directory, to work through.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The directory's descriptor, for a caller that needs nothing else.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The path it was resolved from, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Group or other write permission: users other than its owner can add
    /// entries (and, without the sticky bit, rename or remove ours).
    pub(crate) fn others_can_write(&self) -> bool {
        self.mode & 0o022 != 0
    }

    /// Says once per process and directory (a watch rewrites it at every
    /// change) that others can write it, and what that means.
    fn report_shared(&self) {
        /// Directories already reported, by device and inode.
        static REPORTED: Mutex<BTreeSet<(dev_t, ino_t)>> = Mutex::new(BTreeSet::new());
        let first = REPORTED
            .lock()
            .map_or(true, |mut reported| reported.insert(self.id));
        if !first {
            return;
        }
        let path = self.path.display();
        let mode = format!("{:04o}", self.mode);
        if self.mode & Mode::S_ISVTX.bits() != 0 {
            tracing::warn!(%path, %mode, "others can write this target directory: the sticky bit keeps them from replacing the files svid-exec writes, and nothing of theirs is adopted; a private subdirectory (created 0700 when missing) keeps them out entirely");
        } else {
            tracing::warn!(%path, %mode, "others can write this target directory, so they can replace the files svid-exec writes there (nothing of theirs is adopted); let only trusted processes write it (a read-only mount for the others)");
        }
    }
}

/// The components to resolve, in order: names and `..` (resolved by the
/// kernel, never through a link); the root and `.` need no step.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Where resolving `path` starts: `/` for an absolute path, else the
/// working directory; as a descriptor and as a path for messages.
fn start(path: &Path) -> Result<(OwnedFd, PathBuf), FilesError> {
    let from = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    };
    let at = if path.is_absolute() { "/" } else { "." };
    let fd = fcntl::open(
        at,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open the directory", Path::new(at), e))?;
    Ok((fd, from))
}

/// The process's user: the owner of everything svid-exec creates.
fn our_uid() -> u32 {
    unistd::geteuid().as_raw()
}

/// May be trusted on a target's path: ours or root's.
fn is_ours_or_roots(uid: u32) -> bool {
    uid == our_uid() || uid == 0
}

/// A link in a target that svid-exec made (links are never given away).
pub(super) fn is_our_link(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFLNK && st.st_uid == our_uid()
}

/// A file or directory in a target that svid-exec made: ours, or given to
/// `--file-owner`.
pub(super) fn made_by_us(st: &FileStat, opts: &FilesOptions) -> bool {
    st.st_uid == our_uid() || opts.owner.is_some_and(|(uid, _)| uid.as_raw() == st.st_uid)
}

/// The type bits of `st`.
pub(super) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn check_memory_backed(fd: &OwnedFd, path: &Path) -> Result<(), FilesError> {
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

pub(in crate::deliver) fn io_err(
    op: &'static str,
    path: &Path,
    source: impl Into<io::Error>,
) -> FilesError {
    FilesError::Io {
        op,
        path: path.to_owned(),
        source: source.into(),
    }
}
pub(super) fn is_memory_backed(fs: FsType) -> bool {
    fs == statfs::TMPFS_MAGIC || fs == RAMFS_MAGIC
}

/// Creates and removes an empty file in `dir`, applying `owner` to it: proves
/// that we may write there and change ownership there (root without
/// `CAP_CHOWN` is common in containers), before any secret is fetched.
pub(super) fn probe(target: &TargetDir, opts: &FilesOptions) -> Result<(), FilesError> {
    let (fd, dir) = (target.fd(), target.path());
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

pub(super) fn apply_owner(
    fd: &impl AsFd,
    path: &Path,
    opts: &FilesOptions,
) -> Result<(), FilesError> {
    give_to(fd, path, opts.owner)
}

/// Gives `fd` to `owner` (`--file-owner`), if any.
fn give_to(
    fd: &impl AsFd,
    path: &Path,
    owner: Option<(Uid, Option<Gid>)>,
) -> Result<(), FilesError> {
    let Some((uid, gid)) = owner else {
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

/// Directory mode for a generation (and a DIR we create): owner rwx while we
/// write (search-only afterwards for generations), group/other search only if
/// the file mode lets them read.
pub(super) fn dir_search_bits(file_mode: u32) -> u32 {
    let mut bits = 0;
    if file_mode & 0o040 != 0 {
        bits |= 0o010;
    }
    if file_mode & 0o004 != 0 {
        bits |= 0o001;
    }
    bits
}

pub(super) fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits)
}

/// `(parent, file name)` of a dotenv/JSON target; the name must be a plain component.
pub(super) fn split_file_path(path: &Path) -> Result<(PathBuf, PathBuf), FilesError> {
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

/// The entry `name` in `dir`, without following a link; `None` when there
/// is none (or it cannot be looked at).
pub(super) fn stat_at(dir: &OwnedFd, name: &OsStr) -> Option<FileStat> {
    stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

/// The type of the entry `name` in `dir`, without following a link.
pub(super) fn kind_at(dir: &OwnedFd, name: &OsStr) -> Option<SFlag> {
    stat_at(dir, name).map(|st| file_type(&st))
}

pub(super) fn link_target(dir: &OwnedFd, name: &OsStr) -> Option<std::ffi::OsString> {
    fcntl::readlinkat(dir, name).ok()
}

/// The names in the directory `dir` but `.` and `..`, read through a
/// descriptor of its own.
pub(super) fn list_at(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>, FilesError> {
    let mut listing = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("list", path, e))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| io_err("list", path, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// Creates `name` in `dir` exclusively (never through a link) at `opts.mode`
/// from the start, gives it to the owner, writes `bytes` and syncs it.
pub(in crate::deliver) fn create_file_at(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_search_bits_follow_the_file_mode() {
        assert_eq!(dir_search_bits(0o400), 0);
        assert_eq!(dir_search_bits(0o440), 0o010);
        assert_eq!(dir_search_bits(0o444), 0o011);
        assert_eq!(dir_search_bits(0o600), 0);
    }
}
