//! Scratch directories: on tmpfs (where svid-exec writes secret files by
//! default) or certainly disk-backed (where it refuses to), removed when
//! dropped even after svid-exec sealed its generation directories (0500).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// A temp dir that a non-root user can remove although svid-exec sealed its
/// generation directories read-only.
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// In the system temp dir, whatever its filesystem.
    ///
    /// # Panics
    /// If it cannot be created.
    pub fn temp() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut dirs = vec![self.0.path().to_owned()];
        while let Some(dir) = dirs.pop() {
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
    }
}

/// Whether `path` is on tmpfs or ramfs.
fn is_memory_backed(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

/// A scratch directory on tmpfs (`/dev/shm`), or `None` (with a message)
/// where there is none.
pub fn tmpfs_scratch() -> Option<Scratch> {
    let shm = Path::new("/dev/shm");
    if !is_memory_backed(shm) {
        eprintln!("skipped: /dev/shm is not a tmpfs on this machine");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("svid-exec-test")
        .tempdir_in(shm)
        .expect("temp dir in /dev/shm");
    Some(Scratch(dir))
}

/// A scratch directory on a disk-backed filesystem (cargo's target tmp, else
/// the system temp dir or `/var/tmp`), or `None` (with a message) where
/// there is none.
pub fn disk_scratch() -> Option<Scratch> {
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
    ];
    for base in &candidates {
        let _ = std::fs::create_dir_all(base);
        if base.exists() && !is_memory_backed(base) {
            if let Ok(dir) = tempfile::tempdir_in(base) {
                return Some(Scratch(dir));
            }
        }
    }
    eprintln!("skipped: no writable disk-backed directory among {candidates:?}");
    None
}
