//! The per-key layout inside DIR (see the module docs of `files`): a new
//! generation directory, one rename of `..data` to publish it, stable
//! `DIR/KEY -> ..data/KEY` links, and the removal of old generations.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};
use secrecy::ExposeSecret;

use super::fs::{
    apply_owner, create_file_at, dir_search_bits, file_type, io_err, is_our_link, kind_at,
    link_target, list_at, made_by_us, mode, stat_at,
};
use super::{DirRules, FilesError, FilesOptions, TargetDir};
use crate::secrets::SecretSet;

/// The symlink that names the current generation.
const DATA_LINK: &str = "..data";
/// Built beside `..data`, then renamed over it: the one atomic step of an update.
const DATA_LINK_TMP: &str = "..data_tmp";

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

/// Removes the generation directory `name` in `dir` (path for messages),
/// if svid-exec made it: one another user made is left alone. Works through
/// descriptors only; failures are logged, not returned (an old generation
/// left behind is removed by the next write).
fn remove_generation(dir: &OwnedFd, dir_path: &Path, name: &OsStr, opts: &FilesOptions) {
    let path = dir_path.join(name);
    let Ok(fd) = fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    match stat::fstat(&fd) {
        Ok(st) if made_by_us(&st, opts) => {}
        _ => {
            tracing::debug!(path = %path.display(), "left alone: a generation-like directory svid-exec did not make");
            return;
        }
    }
    // A sealed generation is search-only: writable again so a non-root
    // writer can empty it.
    let _ = stat::fchmod(&fd, mode(0o700));
    let emptied = list_at(&fd, &path).and_then(|names| {
        names.iter().try_for_each(|file| {
            unistd::unlinkat(&fd, file.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove", &path.join(file), e))
        })
    });
    let removed = emptied.and_then(|()| {
        unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
            .map_err(|e| io_err("remove", &path, e))
    });
    if let Err(e) = removed {
        tracing::warn!(path = %path.display(), error = %e, "could not remove an old generation of secret files");
    }
}

pub(super) fn write(
    dir: &Path,
    secrets: &SecretSet,
    opts: &FilesOptions,
) -> Result<BTreeMap<String, PathBuf>, FilesError> {
    let target = TargetDir::open(dir, &DirRules::files(opts))?;
    let dirfd = target.fd();
    let previous = check_slots(dirfd, dir, secrets)?;

    // Build the new generation privately.
    let mut generation = create_generation(dirfd, dir)?;
    let gen_path = dir.join(&generation.name);
    let genfd = fcntl::openat(
        dirfd,
        generation.name.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open the directory", &gen_path, e))?;
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

    // Recorded before the rename, so a probe never sees a `..data` of ours
    // without the state file (it sees the old generation, or a mismatch).
    super::state::record(dirfd, dir, &generation.name, secrets.len())?;

    // Publish: one rename makes the whole generation current.
    match unistd::unlinkat(dirfd, DATA_LINK_TMP, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_err("remove", &dir.join(DATA_LINK_TMP), e)),
    }
    unistd::symlinkat(generation.name.as_str(), dirfd, DATA_LINK_TMP)
        .map_err(|e| io_err("create the link", &dir.join(DATA_LINK_TMP), e))?;
    if let Err(e) = fcntl::renameat(dirfd, DATA_LINK_TMP, dirfd, DATA_LINK) {
        let _ = unistd::unlinkat(dirfd, DATA_LINK_TMP, UnlinkatFlags::NoRemoveDir);
        return Err(io_err("replace the link", &dir.join(DATA_LINK), e));
    }
    generation.published = true;
    unistd::fsync(dirfd).map_err(|e| io_err("sync", dir, e))?;

    // Stable per-key links; drop links of keys that are gone.
    let mut files = BTreeMap::new();
    for name in secrets.names() {
        let os = OsStr::new(name);
        if kind_at(dirfd, os).is_none() {
            unistd::symlinkat(format!("{DATA_LINK}/{name}").as_str(), dirfd, os)
                .map_err(|e| io_err("create the link", &dir.join(name), e))?;
        }
        files.insert(name.to_owned(), super::key_path(dir, name));
    }
    let keep: BTreeSet<&str> = secrets.names().collect();
    for entry in list_at(dirfd, dir)? {
        let keep_it = entry.to_str().is_some_and(|n| keep.contains(n));
        if !keep_it && is_our_key_link(dirfd, &entry) {
            unistd::unlinkat(dirfd, entry.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove the link", &dir.join(&entry), e))?;
        }
    }
    unistd::fsync(dirfd).map_err(|e| io_err("sync", dir, e))?;

    // The old generation, and any left by an interrupted earlier run.
    if let Some(prev) = previous.filter(|p| *p != generation.name) {
        remove_generation(dirfd, dir, OsStr::new(&prev), opts);
    }
    for entry in list_at(dirfd, dir)? {
        let bytes = entry.as_bytes();
        if is_generation_name(bytes) && bytes != generation.name.as_bytes() {
            remove_generation(dirfd, dir, &entry, opts);
        }
    }
    Ok(files)
}

/// Checks, before anything is written, every name in DIR that the update
/// reuses or replaces: a key's slot is free or our link into `..data`;
/// `..data` is absent or our link to a generation (whose name is returned);
/// `..data_tmp` is absent or our link. Anything another user made there is
/// refused, naming it: svid-exec adopts nothing it did not make.
fn check_slots(
    dirfd: &OwnedFd,
    dir: &Path,
    secrets: &SecretSet,
) -> Result<Option<String>, FilesError> {
    let foreign = |name: &str, uid| FilesError::ForeignOwner {
        path: dir.join(name),
        uid,
        what: "a symbolic link",
    };
    for name in secrets.names() {
        let os = OsStr::new(name);
        match stat_at(dirfd, os) {
            None => {}
            Some(st) if file_type(&st) == SFlag::S_IFLNK && !is_our_link(&st) => {
                return Err(foreign(name, st.st_uid));
            }
            Some(_) if is_our_key_link(dirfd, os) => {}
            Some(_) => {
                return Err(FilesError::Conflict {
                    path: dir.join(name),
                    what: "not a link into ..data",
                })
            }
        }
    }
    let mut previous = None;
    for reserved in [DATA_LINK, DATA_LINK_TMP] {
        let Some(st) = stat_at(dirfd, OsStr::new(reserved)) else {
            continue;
        };
        if file_type(&st) != SFlag::S_IFLNK {
            return Err(FilesError::Conflict {
                path: dir.join(reserved),
                what: "not a symbolic link",
            });
        }
        if !is_our_link(&st) {
            return Err(foreign(reserved, st.st_uid));
        }
        if reserved == DATA_LINK {
            let target = link_target(dirfd, OsStr::new(reserved))
                .and_then(|t| t.into_string().ok())
                .filter(|t| is_generation_name(t.as_bytes()));
            if target.is_none() {
                return Err(FilesError::Conflict {
                    path: dir.join(reserved),
                    what: "a link that does not name a generation directory",
                });
            }
            previous = target;
        }
    }
    Ok(previous)
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

/// `name` in `dir` is a symlink we made to `..data/name`: a per-key link.
fn is_our_key_link(dir: &OwnedFd, name: &OsStr) -> bool {
    stat_at(dir, name).is_some_and(|st| is_our_link(&st))
        && link_target(dir, name).is_some_and(|t| {
            let t = t.as_bytes();
            t.strip_prefix(b"..data/") == Some(name.as_bytes())
        })
}

/// Removes what [`write`] made in `dir`; a missing `dir` is not an error.
pub(super) fn remove(dir: &Path, opts: &FilesOptions) -> Result<(), FilesError> {
    let target = match TargetDir::open(dir, &DirRules::removal(opts)) {
        Ok(target) => target,
        Err(FilesError::MissingParent { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let dirfd = target.fd();
    for entry in list_at(dirfd, dir)? {
        let os = entry.as_os_str();
        let bytes = os.as_bytes();
        let ours_link = (bytes == DATA_LINK.as_bytes() || bytes == DATA_LINK_TMP.as_bytes())
            && stat_at(dirfd, os).is_some_and(|st| is_our_link(&st));
        if ours_link || is_our_key_link(dirfd, os) {
            unistd::unlinkat(dirfd, os, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove", &dir.join(&entry), e))?;
        }
    }
    for entry in list_at(dirfd, dir)? {
        if is_generation_name(entry.as_bytes()) {
            remove_generation(dirfd, dir, &entry, opts);
        }
    }
    // Last: until it is gone, a probe sees "removed", not "not ours".
    super::state::remove(dirfd, dir)?;
    unistd::fsync(dirfd).map_err(|e| io_err("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
