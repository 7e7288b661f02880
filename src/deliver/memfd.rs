//! `run --memfd`: each secret as a sealed memfd (`memfd_create`, written, then
//! sealed against writing, growing, shrinking and further sealing) that the
//! program inherits at a known descriptor number and finds through
//! `KEY_FILE=/proc/self/fd/N`. Nothing is written to any filesystem.
//!
//! The numbers are fixed per launch ([`Layout`]): from the first one above
//! every descriptor the program inherits anyway, one per secret in name order,
//! then one per template rendered to `memfd:NAME`, in the order given.
//! The memfds are created close-on-exec; the launcher puts them at their
//! numbers for the program only (`sys::spawn`'s descriptors under `--watch`,
//! `sys::place_for_exec` just before `execve`), and closes its own copies
//! once the program has them. A template rendered to a memfd (`--template
//! SRC:memfd:NAME`, also without `--memfd`) is one more `(NAME, bytes)` item
//! for [`create`], one more number in the layout and `NAME_FILE` in the
//! environment.

use std::ffi::CString;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::resource::{getrlimit, Resource};

use crate::error::{ExitClass, Failure};

/// At most this many memfds per launch (per start of the program under
/// `--watch`): each is a descriptor in the program, which it did not ask for
/// and shares with every process it starts.
pub const MAX_MEMFDS: usize = 512;

/// Descriptors left free below the open-file limit besides the memfds and
/// their temporary copies: the launcher's own, and the program's first few.
const FD_HEADROOM: u64 = 32;

/// The longest memfd name Linux keeps (`NAME_MAX` minus `memfd:`).
const MAX_NAME: usize = 249;

/// Where `/proc/self/fd` is: the program's paths point there.
const PROC_FD: &str = "/proc/self/fd";

/// The descriptor numbers of one launch: the `index`-th item (secrets in
/// name order) is inherited at `first + index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    first: RawFd,
}

impl Layout {
    /// The layout of this process: from the first number above every
    /// descriptor the program inherits anyway (normally 3).
    pub fn current() -> Self {
        Self::starting_at(crate::sys::first_unused_inherited_fd())
    }

    /// A layout from `first` on (at least 3).
    pub fn starting_at(first: RawFd) -> Self {
        Self {
            first: first.max(3),
        }
    }

    /// The number of the `index`-th item.
    pub fn number(&self, index: usize) -> RawFd {
        self.first + RawFd::try_from(index).unwrap_or(RawFd::MAX - self.first)
    }

    /// The path the program opens for the `index`-th item: `/proc/self/fd/N`.
    pub fn path(&self, index: usize) -> PathBuf {
        Path::new(PROC_FD).join(self.number(index).to_string())
    }

    /// Refuses more items than [`MAX_MEMFDS`], or than the open-file limit
    /// leaves room for (each memfd is briefly open twice while it is put at
    /// its number).
    pub fn check_count(&self, count: usize) -> Result<(), MemfdError> {
        if count > MAX_MEMFDS {
            return Err(MemfdError::TooMany { count });
        }
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((u64::MAX, u64::MAX));
        let first = u64::try_from(self.first).unwrap_or(u64::MAX);
        let needed = first + 2 * count as u64 + FD_HEADROOM;
        if needed > soft {
            return Err(MemfdError::FileLimit {
                count,
                needed,
                limit: soft,
            });
        }
        Ok(())
    }
}

/// Why memfds cannot be made. Messages name keys, never values.
#[derive(Debug, thiserror::Error)]
pub enum MemfdError {
    /// More memfds than one launch may pass as descriptors.
    #[error(
        "at most {MAX_MEMFDS} memfds (secrets with --memfd, templates to memfd:NAME) are passed \
         to a program, and this set needs {count}"
    )]
    TooMany {
        /// How many.
        count: usize,
    },
    /// The open-file limit leaves no room for them.
    #[error("{count} memfds need {needed} open files, over the open-file limit of {limit}")]
    FileLimit {
        /// How many memfds.
        count: usize,
        /// Descriptors needed.
        needed: u64,
        /// `RLIMIT_NOFILE` (soft).
        limit: u64,
    },
    /// `/proc/self/fd`, which the program's paths name, is not there.
    #[error("--memfd gives the program paths in {PROC_FD}, which does not exist here")]
    NoProc,
    /// The kernel refused to make, fill or seal one (`key`: the secret's
    /// name, or the template's NAME).
    #[error("cannot {op} the memfd of {key}: {source}")]
    Kernel {
        /// What failed.
        op: &'static str,
        /// The secret's name.
        key: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The memfds could not be put at their numbers for the program.
    #[error("cannot put the memfds at their descriptor numbers")]
    Place(#[source] std::io::Error),
}

impl Failure for MemfdError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        Some(
            match self {
                Self::TooMany { .. } => {
                    "deliver fewer secrets (--path, --tag, --only) or use --files-dir on a tmpfs"
                }
                Self::FileLimit { .. } => "raise the open-file limit (ulimit -n, LimitNOFILE=)",
                Self::NoProc => "mount /proc in the container, or use --files-dir on a tmpfs",
                Self::Kernel { .. } | Self::Place(_) => {
                    "check the open-file limit (ulimit -n), memory limits and vm.memfd_noexec"
                }
            }
            .to_owned(),
        )
    }
}

/// Refuses `--memfd` where the program could not open what it is given.
pub fn preflight() -> Result<(), MemfdError> {
    if Path::new(PROC_FD).is_dir() {
        Ok(())
    } else {
        Err(MemfdError::NoProc)
    }
}

/// A sealed, close-on-exec memfd per item, in order, each with its number in
/// the program.
pub fn create<'a>(
    layout: Layout,
    items: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<(OwnedFd, RawFd)>, MemfdError> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, (key, bytes))| Ok((sealed(key, bytes)?, layout.number(index))))
        .collect()
}

/// One memfd holding `bytes`, named after `key` (what `ls -l /proc/PID/fd`
/// shows: `/memfd:KEY (deleted)`), sealed so nobody can change it.
fn sealed(key: &str, bytes: &[u8]) -> Result<OwnedFd, MemfdError> {
    let kernel = |op: &'static str| {
        move |source: std::io::Error| MemfdError::Kernel {
            op,
            key: key.to_owned(),
            source,
        }
    };
    let name = memfd_name(key);
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    // Not executable, sealed so (Linux 6.3; older kernels refuse the flag,
    // and a memfd is then as executable as any file of ours).
    let noexec = MFdFlags::from_bits_retain(nix::libc::MFD_NOEXEC_SEAL);
    let fd = match memfd_create(name.as_c_str(), flags | noexec) {
        Err(Errno::EINVAL) => memfd_create(name.as_c_str(), flags),
        other => other,
    }
    .map_err(|e| kernel("create")(e.into()))?;
    let mut file = File::from(fd);
    file.write_all(bytes).map_err(kernel("write"))?;
    let fd = OwnedFd::from(file);
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| kernel("seal")(e.into()))?;
    debug_assert!(fd.as_raw_fd() > 2);
    Ok(fd)
}

/// The memfd's name: the key, cut to what the kernel keeps, without NUL.
fn memfd_name(key: &str) -> CString {
    let mut end = key.len().min(MAX_NAME);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let name: Vec<u8> = key.as_bytes()[..end]
        .iter()
        .map(|b| if *b == 0 { b'_' } else { *b })
        .collect();
    CString::new(name).expect("UNWRAP: NUL bytes were replaced")
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Seek as _};

    use super::*;

    #[test]
    fn numbers_follow_the_order_from_the_first_free_one() {
        let layout = Layout::starting_at(5);
        assert_eq!(layout.number(0), 5);
        assert_eq!(layout.number(2), 7);
        assert_eq!(layout.path(1), PathBuf::from("/proc/self/fd/6"));
        assert_eq!(Layout::starting_at(0).number(0), 3, "never 0-2");
    }

    #[test]
    fn more_than_the_cap_is_refused_as_configuration() {
        let layout = Layout::starting_at(3);
        let err = layout.check_count(MAX_MEMFDS + 1).unwrap_err();
        assert!(matches!(err, MemfdError::TooMany { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Config);
        let far = Layout::starting_at(RawFd::MAX / 2);
        assert!(matches!(
            far.check_count(1),
            Err(MemfdError::FileLimit { .. })
        ));
    }

    #[test]
    fn a_memfd_holds_the_bytes_and_refuses_every_change() {
        let value = b"line one\nline two\0with NUL \xff";
        let mut made = create(Layout::starting_at(3), [("DB", value.as_slice())]).unwrap();
        let (fd, at) = made.pop().unwrap();
        assert_eq!(at, 3);
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).unwrap();
        let want = SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_SEAL;
        assert_eq!(seals & want.bits(), want.bits());
        let mut file = File::from(fd);
        let mut read = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, value);
        assert!(file.write_all(b"x").is_err(), "written through the seal");
        assert!(file.set_len(1).is_err(), "shrunk through the seal");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("/memfd:DB"), "{link:?}");
    }

    #[test]
    fn names_are_cut_at_a_character_and_lose_nul() {
        let long = "é".repeat(200);
        let name = memfd_name(&long);
        assert!(name.as_bytes().len() <= MAX_NAME);
        assert!(std::str::from_utf8(name.as_bytes()).is_ok());
        assert_eq!(memfd_name("a\0b").as_bytes(), b"a_b");
    }
}
