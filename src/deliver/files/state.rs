//! svid-exec's one state file inside a per-key directory, `DIR/..svid-exec`:
//! which generation svid-exec last published there, how many secrets it
//! holds, when it was written and when a poll last confirmed it unchanged.
//! `svid-exec ready` reads this file and `..data`, and nothing else in DIR
//! ([`inspect`]): a probe that runs every few seconds opens no secret.
//!
//! The format is small, versioned text, one `key value` per line after a
//! header, times in milliseconds since the Unix epoch (a probe is another
//! process, so only the wall clock is shared):
//!
//! ```text
//! svid-exec target state 1
//! generation ..2026_11_29_14_30_00.123456789_1a2b3c4d
//! secrets 3
//! written 1764426600123
//! confirmed 1764426660456
//! ```
//!
//! Unknown keys are ignored, so a later version may add lines; a different
//! header (another format version) is not read. It holds no secret and no
//! name of one, is written like every other file here (a temp file created
//! exclusively without following links, synced, renamed over the old one) and
//! stays owned by the writer whatever `--file-owner` says: it is svid-exec's,
//! not the program's. Mode 0444: nothing in it is private, and a probe running
//! as the same user reads it without privileges.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use super::fs::{io_err, kind_at, link_target, mode, DirRules, TargetDir};
use super::FilesError;

/// The state file's name: a reserved `..` name, so no secret can take it.
pub const STATE_FILE: &str = "..svid-exec";
/// Written beside it, then renamed over it.
const STATE_FILE_TMP: &str = "..svid-exec_tmp";
/// First line of format version 1.
const HEADER: &str = "svid-exec target state 1";
/// A state file is a few lines; anything larger is not ours.
const MAX_SIZE: u64 = 4096;
/// The link that names the current generation (see `tree.rs`).
const DATA_LINK: &str = "..data";

/// What the state file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// The generation directory svid-exec last published (`..data`'s target).
    pub generation: String,
    /// How many secrets it holds.
    pub secrets: usize,
    /// When it was published.
    pub written: SystemTime,
    /// When a poll last found the secrets unchanged, if one has.
    pub confirmed: Option<SystemTime>,
}

impl TargetState {
    /// The later of `written` and `confirmed`: when the content was last
    /// known to be current.
    pub fn fresh_at(&self) -> SystemTime {
        self.confirmed.map_or(self.written, |c| c.max(self.written))
    }

    fn render(&self) -> String {
        let mut out = format!(
            "{HEADER}\ngeneration {}\nsecrets {}\nwritten {}\n",
            self.generation,
            self.secrets,
            millis(self.written)
        );
        if let Some(confirmed) = self.confirmed {
            let _ = writeln!(out, "confirmed {}", millis(confirmed));
        }
        out
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let (mut generation, mut secrets, mut written, mut confirmed) = (None, None, None, None);
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "generation" => generation = Some(value.to_owned()),
                "secrets" => secrets = Some(value.parse().ok()?),
                "written" => written = Some(from_millis(value)?),
                "confirmed" => confirmed = Some(from_millis(value)?),
                _ => {}
            }
        }
        let generation = generation.filter(|g| is_generation_name(g))?;
        Some(Self {
            generation,
            secrets: secrets?,
            written: written?,
            confirmed,
        })
    }
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn from_millis(value: &str) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(value.parse().ok()?))
}

/// `..` followed by a digit, no `/`: the shape of `tree.rs`'s generation names.
fn is_generation_name(name: &str) -> bool {
    name.len() > 2
        && name.starts_with("..")
        && name.as_bytes()[2].is_ascii_digit()
        && !name.contains('/')
}

/// Records that `generation` (holding `secrets` secrets) was just published
/// in `dir`. Refuses to replace a `..svid-exec` that is not ours.
pub(super) fn record(
    dirfd: &OwnedFd,
    dir: &Path,
    generation: &str,
    secrets: usize,
) -> Result<(), FilesError> {
    check_ours(dirfd, dir)?;
    let state = TargetState {
        generation: generation.to_owned(),
        secrets,
        written: SystemTime::now(),
        confirmed: None,
    };
    replace(dirfd, dir, &state)
}

/// Records that a poll found the secrets in `dir` unchanged: the state file
/// keeps its generation and gets `confirmed` now. Nothing is done when DIR
/// holds no state of ours (nothing was written yet, or it was removed).
pub fn confirm(dir: &Path) -> Result<(), FilesError> {
    let dirfd = open_existing(dir)?;
    let Ok(mut state) = read_state(&dirfd) else {
        return Ok(());
    };
    state.confirmed = Some(SystemTime::now());
    replace(&dirfd, dir, &state)
}

/// Removes the state file (with the rest of the layout, see `tree::remove`).
pub(super) fn remove(dirfd: &OwnedFd, dir: &Path) -> Result<(), FilesError> {
    for name in [STATE_FILE, STATE_FILE_TMP] {
        if kind_at(dirfd, OsStr::new(name)) == Some(SFlag::S_IFREG) {
            unistd::unlinkat(dirfd, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove", &dir.join(name), e))?;
        }
    }
    Ok(())
}

/// A `..svid-exec` that exists must be a regular file owned by us.
fn check_ours(dirfd: &OwnedFd, dir: &Path) -> Result<(), FilesError> {
    match stat::fstatat(dirfd, STATE_FILE, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_err("inspect", &dir.join(STATE_FILE), e)),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG => {
            Err(FilesError::Conflict {
                path: dir.join(STATE_FILE),
                what: "not a regular file",
            })
        }
        Ok(st) if st.st_uid != unistd::geteuid().as_raw() => Err(FilesError::Conflict {
            path: dir.join(STATE_FILE),
            what: "owned by another user",
        }),
        Ok(_) => Ok(()),
    }
}

/// Writes `state` to a temp file and renames it over the state file.
fn replace(dirfd: &OwnedFd, dir: &Path, state: &TargetState) -> Result<(), FilesError> {
    let tmp_path = dir.join(STATE_FILE_TMP);
    match unistd::unlinkat(dirfd, STATE_FILE_TMP, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_err("remove", &tmp_path, e)),
    }
    let fd = fcntl::openat(
        dirfd,
        STATE_FILE_TMP,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode(0o444),
    )
    .map_err(|e| io_err("create", &tmp_path, e))?;
    // The umask may have narrowed it.
    stat::fchmod(&fd, mode(0o444)).map_err(|e| io_err("set the mode of", &tmp_path, e))?;
    let mut file = File::from(fd);
    let written = file
        .write_all(state.render().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", &tmp_path, e))
        .and_then(|()| {
            fcntl::renameat(dirfd, STATE_FILE_TMP, dirfd, STATE_FILE)
                .map_err(|e| io_err("rename into place", &dir.join(STATE_FILE), e))
        });
    if written.is_err() {
        let _ = unistd::unlinkat(dirfd, STATE_FILE_TMP, UnlinkatFlags::NoRemoveDir);
    }
    written?;
    unistd::fsync(dirfd).map_err(|e| io_err("sync", dir, e))
}

// ---------------------------------------------------------------------------
// Reading, for `svid-exec ready`

/// What [`inspect`] found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A complete generation written by svid-exec is current.
    Current(TargetState),
    /// Not yet (or not any more): why, in one line.
    NotYet(String),
    /// DIR is not a target svid-exec writes (not ours, a link, not a
    /// directory, or an unreadable state): why, in one line.
    NotOurs(String),
}

/// DIR as it already is (never created, any filesystem), resolved like every
/// target: through links of trusted owners only, owned by us or root.
fn open_existing(dir: &Path) -> Result<OwnedFd, FilesError> {
    let rules = DirRules {
        create: None,
        owner: None,
        memory_only: false,
    };
    TargetDir::open(dir, &rules).map(TargetDir::into_fd)
}

/// Why the state file could not be read.
enum ReadError {
    Missing,
    NotOurs(String),
}

/// Looks at `dir` the way `svid-exec ready` does: only `..svid-exec` and
/// `..data` (and that the generation `..data` names is a directory), never a
/// secret file, and without following links.
pub fn inspect(dir: &Path) -> Inspection {
    let shown = dir.display();
    let dirfd = match open_existing(dir) {
        Ok(fd) => fd,
        Err(FilesError::MissingParent { .. }) => {
            return Inspection::NotYet(format!("{shown} does not exist yet"));
        }
        Err(FilesError::Symlink { .. }) => {
            return Inspection::NotOurs(format!(
                "{shown} is a symbolic link; svid-exec never writes through one"
            ));
        }
        Err(FilesError::NotADirectory { .. }) => {
            return Inspection::NotOurs(format!("{shown} is not a directory"));
        }
        Err(e) => return Inspection::NotOurs(crate::error::chain(&e)),
    };
    let state = match read_state(&dirfd) {
        Ok(state) => state,
        Err(ReadError::NotOurs(why)) => {
            return Inspection::NotOurs(format!("{shown}/{STATE_FILE} {why}"));
        }
        Err(ReadError::Missing) => {
            return if kind_at(&dirfd, OsStr::new(DATA_LINK)).is_some() {
                Inspection::NotOurs(format!(
                    "{shown} has {DATA_LINK} but no {STATE_FILE}: it was not written by svid-exec \
                     (a Kubernetes projected volume?)"
                ))
            } else {
                Inspection::NotYet(format!("nothing has been written to {shown} yet"))
            };
        }
    };
    match stat::fstatat(&dirfd, DATA_LINK, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(_) => {
            return Inspection::NotYet(format!(
                "{shown}/{DATA_LINK} is missing: the files were removed or are being replaced"
            ))
        }
        Ok(st) if st.st_uid != unistd::geteuid().as_raw() => {
            return Inspection::NotOurs(format!(
                "{shown}/{DATA_LINK} is owned by uid {}, not by this user",
                st.st_uid
            ))
        }
        Ok(_) => {}
    }
    let current = link_target(&dirfd, OsStr::new(DATA_LINK));
    if current.as_deref() != Some(OsStr::new(&state.generation)) {
        return Inspection::NotYet(format!(
            "{shown}/{DATA_LINK} does not point at the generation svid-exec recorded \
             ({}): an update is being published",
            state.generation
        ));
    }
    if kind_at(&dirfd, OsStr::new(&state.generation)) != Some(SFlag::S_IFDIR) {
        return Inspection::NotYet(format!(
            "the generation {} that {shown}/{DATA_LINK} names is missing",
            state.generation
        ));
    }
    Inspection::Current(state)
}

/// Reads and parses `..svid-exec` through `dirfd`, refusing a link, a
/// non-file, a file of another user or anything that does not parse.
fn read_state(dirfd: &OwnedFd) -> Result<TargetState, ReadError> {
    let fd = match fcntl::openat(
        dirfd,
        STATE_FILE,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        mode(0),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Err(ReadError::Missing),
        Err(Errno::ELOOP) => return Err(ReadError::NotOurs("is a symbolic link".into())),
        Err(Errno::EACCES) => {
            return Err(ReadError::NotOurs(
                "cannot be read by this user: it was written by another one".into(),
            ))
        }
        Err(e) => return Err(ReadError::NotOurs(format!("cannot be opened ({e})"))),
    };
    let st = stat::fstat(fd.as_fd()).map_err(|e| ReadError::NotOurs(format!("({e})")))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(ReadError::NotOurs("is not a regular file".into()));
    }
    let me = unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(ReadError::NotOurs(format!(
            "is owned by uid {}, not by this user (uid {me}): another user's svid-exec wrote it",
            st.st_uid
        )));
    }
    let mut text = String::new();
    File::from(fd)
        .take(MAX_SIZE)
        .read_to_string(&mut text)
        .map_err(|e| ReadError::NotOurs(format!("cannot be read ({e})")))?;
    TargetState::parse(&text).ok_or_else(|| {
        ReadError::NotOurs(
            "is not a state file this svid-exec understands (written by another version?)".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(confirmed: Option<u64>) -> TargetState {
        TargetState {
            generation: "..2026_11_29_14_30_00.123456789_1a2b3c4d".into(),
            secrets: 3,
            written: UNIX_EPOCH + Duration::from_millis(1_764_426_600_123),
            confirmed: confirmed.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    #[test]
    fn state_round_trips_through_its_text() {
        for s in [state(None), state(Some(1_764_426_660_456))] {
            assert_eq!(TargetState::parse(&s.render()), Some(s));
        }
    }

    #[test]
    fn state_text_is_versioned_and_strict_about_what_it_needs() {
        let good = state(None).render();
        assert!(good.starts_with("svid-exec target state 1\n"), "{good}");
        // Another version, a missing field, a generation that is not one.
        assert_eq!(
            TargetState::parse(&good.replace("state 1", "state 2")),
            None
        );
        assert_eq!(TargetState::parse(&good.replace("secrets 3\n", "")), None);
        assert_eq!(TargetState::parse(&good.replace("..2026", "../etc")), None);
        // A later minor addition is ignored.
        let extended = format!("{good}future thing\n");
        assert_eq!(TargetState::parse(&extended), Some(state(None)));
    }

    #[test]
    fn freshness_is_the_later_of_written_and_confirmed() {
        let s = state(Some(1_764_426_660_456));
        assert_eq!(
            s.fresh_at(),
            UNIX_EPOCH + Duration::from_millis(1_764_426_660_456)
        );
        assert_eq!(state(None).fresh_at(), state(None).written);
    }
}
