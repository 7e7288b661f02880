//! The file system calls of the file writer, each relative to a directory
//! descriptor and never through a link (`O_NOFOLLOW`): opening or creating a
//! target directory, the tmpfs check, the write/ownership probe, exclusive
//! file creation at the final mode and owner.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::sys::statfs::{self, FsType};
use nix::unistd::{self, UnlinkatFlags};

use super::{FilesError, FilesOptions};

/// `ramfs` has no constant in nix; value from `linux/magic.h`.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

pub(super) fn io_err(op: &'static str, path: &Path, source: impl Into<io::Error>) -> FilesError {
    FilesError::Io {
        op,
        path: path.to_owned(),
        source: source.into(),
    }
}
pub(super) fn is_memory_backed(fs: FsType) -> bool {
    fs == statfs::TMPFS_MAGIC || fs == RAMFS_MAGIC
}

pub(super) fn check_tmpfs(
    fd: &OwnedFd,
    path: &Path,
    opts: &FilesOptions,
) -> Result<(), FilesError> {
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
pub(super) fn probe(fd: &OwnedFd, dir: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
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

pub(super) fn open_dir_nofollow(path: &Path) -> Result<OwnedFd, FilesError> {
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

pub(super) fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Opens `dir` refusing symlinks, creating its last component if missing
/// (private mode, given to `owner`), and checks its filesystem.
pub(super) fn open_or_create_dir(dir: &Path, opts: &FilesOptions) -> Result<OwnedFd, FilesError> {
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

/// What can be refused about a dotenv/JSON target without writing: a link or
/// non-file in its place, a disk-backed existing parent.
pub(super) fn check_not_symlink_file(file: &Path) -> Result<(), FilesError> {
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
pub(super) fn kind_at(dir: &OwnedFd, name: &OsStr) -> Option<SFlag> {
    stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

pub(super) fn link_target(dir: &OwnedFd, name: &OsStr) -> Option<std::ffi::OsString> {
    fcntl::readlinkat(dir, name).ok()
}

pub(super) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        names.push(PathBuf::from(entry.file_name()));
    }
    Ok(names)
}

/// Creates `name` in `dir` exclusively (never through a link) at `opts.mode`
/// from the start, gives it to the owner, writes `bytes` and syncs it.
pub(super) fn create_file_at(
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
