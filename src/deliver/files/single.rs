//! The dotenv and JSON targets: one file each, replaced by writing a temp
//! file beside it and renaming it over the target. Only a regular file
//! svid-exec wrote (owned by its user or given to `--file-owner`) is
//! replaced or removed.

use std::ffi::OsStr;
use std::path::Path;

use nix::fcntl;
use nix::sys::stat::SFlag;
use nix::unistd::{self, UnlinkatFlags};

use super::fs::{create_file_at, file_type, io_err, made_by_us, split_file_path, stat_at};
use super::{DirRules, FilesError, FilesOptions, TargetDir};

/// The checked directory of `file`, created if missing (only the last
/// component), with `file`'s own slot checked ([`check_slot`]).
pub(super) fn open_parent(file: &Path, opts: &FilesOptions) -> Result<TargetDir, FilesError> {
    let (parent, name) = split_file_path(file)?;
    let target = TargetDir::open(&parent, &DirRules::files(opts))?;
    check_slot(&target, name.as_os_str(), file, opts)?;
    Ok(target)
}

/// What can be refused about a dotenv/JSON target without writing or
/// creating anything: its directory (when it exists) and its slot.
pub(super) fn precheck(file: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let (parent, name) = split_file_path(file)?;
    let rules = DirRules {
        create: None,
        ..DirRules::files(opts)
    };
    match TargetDir::open(&parent, &rules) {
        Ok(target) => check_slot(&target, name.as_os_str(), file, opts),
        // Created (and checked) when it is written.
        Err(FilesError::MissingParent { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The target's name in its directory is free or a regular file svid-exec
/// wrote: never a link, never another user's file.
fn check_slot(
    dir: &TargetDir,
    name: &OsStr,
    path: &Path,
    opts: &FilesOptions,
) -> Result<(), FilesError> {
    let Some(st) = stat_at(dir.fd(), name) else {
        return Ok(());
    };
    match file_type(&st) {
        SFlag::S_IFLNK => Err(FilesError::Symlink {
            path: path.to_owned(),
        }),
        SFlag::S_IFREG if made_by_us(&st, opts) => Ok(()),
        SFlag::S_IFREG => Err(FilesError::ForeignOwner {
            path: path.to_owned(),
            uid: st.st_uid,
            what: "a file",
        }),
        _ => Err(FilesError::Conflict {
            path: path.to_owned(),
            what: "not a regular file",
        }),
    }
}

/// Temp file in the target's directory, then one rename over the target.
pub(super) fn write(path: &Path, content: &[u8], opts: &FilesOptions) -> Result<(), FilesError> {
    let (parent, name) = split_file_path(path)?;
    let dir = open_parent(path, opts)?;
    let pfd = dir.fd();
    let tmp = format!(".{}.tmp-{:016x}", name.display(), fastrand::u64(..));
    let tmp_path = parent.join(&tmp);
    let result = create_file_at(pfd, OsStr::new(&tmp), content, &tmp_path, opts).and_then(|()| {
        fcntl::renameat(pfd, tmp.as_str(), pfd, name.as_os_str())
            .map_err(|e| io_err("rename into place", path, e))
    });
    if let Err(e) = result {
        let _ = unistd::unlinkat(pfd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    unistd::fsync(pfd).map_err(|e| io_err("sync", &parent, e))
}

/// Removes the file [`write`] wrote at `path`: only a regular file svid-exec
/// made can be ours; anything else is left alone, and a missing one is fine.
pub(super) fn remove(path: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let (parent, name) = split_file_path(path)?;
    let dir = match TargetDir::open(&parent, &DirRules::removal(opts)) {
        Ok(dir) => dir,
        Err(FilesError::MissingParent { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let ours = stat_at(dir.fd(), name.as_os_str())
        .is_some_and(|st| file_type(&st) == SFlag::S_IFREG && made_by_us(&st, opts));
    if ours {
        unistd::unlinkat(dir.fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err("remove", path, e))?;
        unistd::fsync(dir.fd()).map_err(|e| io_err("sync", &parent, e))?;
    }
    Ok(())
}
