//! The per-key layout inside DIR (see the module docs of `files`): a new
//! generation directory, one rename of `..data` to publish it, stable
//! `DIR/KEY -> ..data/KEY` links, and the removal of old generations.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
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
    apply_owner, create_file_at, dir_search_bits, io_err, kind_at, link_target, list_dir, mode,
    open_dir_nofollow, open_or_create_dir,
};
use super::{FilesError, FilesOptions};
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

pub(super) fn write(
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
        files.insert(name.to_owned(), super::key_path(dir, name));
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

/// Removes what [`write`] made in `dir`; a missing `dir` is not an error.
pub(super) fn remove(dir: &Path) -> Result<(), FilesError> {
    match open_dir_nofollow(dir) {
        Ok(fd) => remove_tree(&fd, dir),
        Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
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
