//! The dotenv and JSON targets: one file each, replaced by writing a temp
//! file beside it and renaming it over the target.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use nix::fcntl;
use nix::sys::stat::SFlag;
use nix::unistd::{self, UnlinkatFlags};

use super::fs::{
    check_not_symlink_file, check_tmpfs, create_file_at, io_err, kind_at, open_dir_nofollow,
    open_or_create_dir, split_file_path,
};
use super::{FilesError, FilesOptions};

/// What can be refused about a dotenv/JSON target without writing: a link or
/// non-file in its place, a disk-backed existing parent.
pub(super) fn precheck(file: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let (parent, _) = split_file_path(file)?;
    check_not_symlink_file(file)?;
    match open_dir_nofollow(&parent) {
        Ok(fd) => check_tmpfs(&fd, &parent, opts),
        // Created (and checked) when it is written.
        Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Temp file in the target's directory, then one rename over the target.
pub(super) fn write(path: &Path, content: &[u8], opts: &FilesOptions) -> Result<(), FilesError> {
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

/// Removes the file [`write`] wrote at `path`: only a regular file can be
/// ours; a link or anything else is left alone, and a missing one is fine.
pub(super) fn remove(path: &Path) -> Result<(), FilesError> {
    let (parent, name) = split_file_path(path)?;
    let fd = match open_dir_nofollow(&parent) {
        Ok(fd) => fd,
        Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    if kind_at(&fd, name.as_os_str()) == Some(SFlag::S_IFREG) {
        unistd::unlinkat(&fd, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err("remove", path, e))?;
        unistd::fsync(&fd).map_err(|e| io_err("sync", &parent, e))?;
    }
    Ok(())
}
