//! The fallback directory (opened by the target-directory rules, ours, 0700)
//! and the sets in it: atomic save, load, purge by identity.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};
use zeroize::Zeroizing;

use super::format::{parse, render, MAX_FILE_BYTES};
use super::FallbackOptions;
use crate::deliver::files::{fs as files_fs, DirRules, FilesError, FilesOptions, TargetDir};
use crate::error::{ExitClass, Failure};
use crate::secrets::SecretSet;

/// An unfinished write this old belongs to a launcher that died mid-write.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// Why the fallback directory or a set in it cannot be used. Messages name
/// paths, never values.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    /// The directory fails the target-directory rules (link, not a
    /// directory, missing parent, disk-backed), or a file system call failed.
    #[error("--fallback-dir: {0}")]
    Files(#[source] FilesError),
    /// The directory belongs to someone else.
    #[error("--fallback-dir {path} belongs to uid {uid}, not to this user (uid {ours})")]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Ours.
        ours: u32,
    },
    /// A stored set cannot be read back.
    #[error("{path} is not a cached secret set svid-exec can use ({reason})")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong (never its content).
        reason: &'static str,
    },
}

impl Failure for FallbackError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Files(e) => e.hint(),
            Self::NotOurs { .. } => Some(
                "give a directory of this user's own, or a path where one may be created \
                 (e.g. /run/svid-exec-fallback, a memory-backed emptyDir)"
                    .to_owned(),
            ),
            Self::Unreadable { .. } => None,
        }
    }
}

/// A set read back from DIR.
pub struct Entry {
    /// When it was fetched.
    pub fetched_at: SystemTime,
    /// The secrets.
    pub secrets: SecretSet,
}

/// The fallback directory and the sets in it.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) options: FallbackOptions,
}

impl Store {
    /// A store for `options`; nothing is touched until [`Store::prepare`].
    pub fn new(options: FallbackOptions) -> Self {
        Self { options }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// `--fallback-max-age`.
    pub fn max_age(&self) -> Duration {
        self.options.max_age
    }

    /// Opens DIR by the target-directory rules (`TargetDir::open`: created
    /// 0700 when missing; every link on its path ours or root's, none at the
    /// end; memory-backed unless allowed), refuses one that is not ours (the
    /// target rules also accept root's: not here, a set is read back only
    /// from a directory no one else controls), and sets it to 0700. Every use
    /// of DIR starts here.
    pub fn prepare(&self) -> Result<OwnedFd, FallbackError> {
        let dir = &self.options.dir;
        let rules = DirRules {
            create: Some(0o700),
            owner: None,
            memory_only: !self.options.allow_non_tmpfs,
        };
        let fd = TargetDir::open(dir, &rules)
            .map_err(FallbackError::Files)?
            .into_fd();
        let st = stat::fstat(&fd).map_err(|e| io_err("inspect", dir, e))?;
        let ours = unistd::geteuid().as_raw();
        if st.st_uid != ours {
            return Err(FallbackError::NotOurs {
                path: dir.clone(),
                uid: st.st_uid,
                ours,
            });
        }
        if st.st_mode & 0o7777 != 0o700 {
            stat::fchmod(&fd, Mode::S_IRWXU).map_err(|e| io_err("set the mode of", dir, e))?;
        }
        Ok(fd)
    }

    fn entry_name(&self, spiffe_id: &str) -> String {
        let binding = &self.options.binding;
        format!(
            "set-{}-{}",
            binding.identity_key(),
            binding.digest(spiffe_id)
        )
    }

    /// Stores `secrets`, fetched at `fetched_at` by a login with a JWT-SVID
    /// for `spiffe_id`, replacing the set of the same binding atomically.
    pub fn save(
        &self,
        spiffe_id: &str,
        secrets: &SecretSet,
        fetched_at: SystemTime,
    ) -> Result<(), FallbackError> {
        let dir = self.prepare()?;
        self.remove_abandoned_writes(&dir);
        let name = self.entry_name(spiffe_id);
        let content = render(&self.options.binding.digest(spiffe_id), fetched_at, secrets);
        let temp = format!(
            "tmp-{}-{:016x}",
            self.options.binding.identity_key(),
            fastrand::u64(..)
        );
        let path = self.options.dir.join(&name);
        let rules = FilesOptions {
            mode: 0o600,
            ..FilesOptions::default()
        };
        let written = files_fs::create_file_at(&dir, OsStr::new(&temp), &content, &path, &rules)
            .map_err(FallbackError::Files)
            .and_then(|()| {
                fcntl::renameat(&dir, temp.as_str(), &dir, name.as_str())
                    .map_err(|e| io_err("replace", &path, e))
            });
        if written.is_err() {
            let _ = unistd::unlinkat(&dir, temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        written?;
        unistd::fsync(&dir).map_err(|e| io_err("sync", &self.options.dir, e))
    }

    /// Removes this identity's unfinished writes that a launcher killed
    /// between create and rename left behind (each holds a whole set, so they
    /// must not pile up). A write in flight takes milliseconds: one older than
    /// [`ABANDONED_AFTER`] is no one's any more. Best effort: a name that
    /// cannot be inspected or removed stays for the next save or a purge.
    fn remove_abandoned_writes(&self, dir: &OwnedFd) {
        let temp = format!("tmp-{}-", self.options.binding.identity_key());
        let Ok(names) = self.names(&self.options.binding.identity_key()) else {
            return;
        };
        let now = SystemTime::now();
        for name in names.iter().filter(|n| n.starts_with(&temp)) {
            let Ok(st) = stat::fstatat(dir, name.as_str(), fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let modified = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0));
            let abandoned = now
                .duration_since(modified)
                .is_ok_and(|age| age >= ABANDONED_AFTER);
            if abandoned && st.st_uid == unistd::geteuid().as_raw() {
                match unistd::unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => {
                        tracing::debug!(name = %name, "removed an unfinished write of an earlier launch");
                    }
                    Err(e) => {
                        tracing::debug!(name = %name, error = %e, "could not remove an unfinished write");
                    }
                }
            }
        }
    }

    /// The set stored for this binding and `spiffe_id`, if there is one.
    pub fn load(&self, spiffe_id: &str) -> Result<Option<Entry>, FallbackError> {
        let dir = self.prepare()?;
        let name = self.entry_name(spiffe_id);
        let path = self.options.dir.join(&name);
        let fd = match fcntl::openat(
            &dir,
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let unreadable = |reason| FallbackError::Unreadable {
            path: path.clone(),
            reason,
        };
        let st = stat::fstat(&fd).map_err(|e| io_err("inspect", &path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(unreadable("not a regular file"));
        }
        if st.st_uid != unistd::geteuid().as_raw() {
            return Err(unreadable("not written by this user"));
        }
        let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
        if size > MAX_FILE_BYTES {
            return Err(unreadable("too large"));
        }
        // Sized once: a growing vector would leave copies it never zeroes.
        let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1));
        File::from(fd)
            .take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err("read", &path, e))?;
        let digest = self.options.binding.digest(spiffe_id);
        parse(&bytes, &digest).map(Some).map_err(unreadable)
    }

    /// Deletes every set (and unfinished write) of this API URL and identity,
    /// whatever SPIFFE ID and binding it was stored for. Returns how many.
    pub fn purge(&self) -> Result<usize, FallbackError> {
        let dir = self.prepare()?;
        let key = self.options.binding.identity_key();
        let mut removed = 0;
        for name in self.names(&key)? {
            match unistd::unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => removed += 1,
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(io_err("remove", &self.options.dir.join(&name), e)),
            }
        }
        if removed > 0 {
            unistd::fsync(&dir).map_err(|e| io_err("sync", &self.options.dir, e))?;
        }
        Ok(removed)
    }

    /// How many sets of this API URL and identity DIR holds, for any binding.
    pub fn count_for_identity(&self) -> usize {
        let key = self.options.binding.identity_key();
        self.names(&key).map_or(0, |names| {
            names.iter().filter(|n| n.starts_with("set-")).count()
        })
    }

    /// The names in DIR of this identity's sets and unfinished writes.
    fn names(&self, key: &str) -> Result<Vec<String>, FallbackError> {
        let (set, temp) = (format!("set-{key}-"), format!("tmp-{key}-"));
        let entries = std::fs::read_dir(&self.options.dir)
            .map_err(|e| io_err("list", &self.options.dir, e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&set) || n.starts_with(&temp))
            .collect())
    }
}

fn io_err(op: &'static str, path: &Path, source: impl Into<io::Error>) -> FallbackError {
    FallbackError::Files(files_fs::io_err(op, path, source))
}
