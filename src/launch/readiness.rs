//! Telling the platform that the secrets are in place: the `--ready-file`
//! ([`ReadyFile`]) and, under `--watch`, systemd's notifications
//! ([`Readiness`], which the supervisor's driver calls from the one place it
//! performs actions).
//!
//! The ready file says "the first complete delivery is done" to whatever
//! waits for a path (a Kubernetes exec probe with `test -e`, a script, a
//! systemd `ConditionPathExists=`). A stale one from an earlier run (a
//! restarted container keeps its `emptyDir`) is removed before anything is
//! fetched, so it never announces a delivery that has not happened.

use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use sd_notify::NotifyState;
use tokio::time::Instant;

use crate::error::{ExitClass, Failure};
use crate::notify;

/// The ready file cannot be prepared or created.
#[derive(Debug, thiserror::Error)]
#[error("--ready-file {}: cannot {op}", path.display())]
pub struct ReadyFileError {
    path: PathBuf,
    op: &'static str,
    #[source]
    source: io::Error,
}

impl Failure for ReadyFileError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        Some(
            "give a path in an existing directory this user may write (the ready file is \
             created empty, and is not a secret)"
                .to_owned(),
        )
    }
}

/// `--ready-file PATH`: created (empty) by [`ReadyFile::create`], removed by
/// [`ReadyFile::remove`] or when dropped, unless [`ReadyFile::keep`] (a
/// one-shot `write` leaves it in place).
#[derive(Debug)]
pub struct ReadyFile {
    path: PathBuf,
    created: bool,
}

impl ReadyFile {
    /// Removes a stale ready file and checks that its directory exists, before
    /// anything is fetched.
    pub fn prepare(path: &Path) -> Result<Self, ReadyFileError> {
        let error = |op, source| ReadyFileError {
            path: path.to_owned(),
            op,
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(error(
                    "use it",
                    io::Error::new(io::ErrorKind::IsADirectory, "it is a directory"),
                ))
            }
            Ok(_) => std::fs::remove_file(path).map_err(|e| error("remove the stale one", e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(error("inspect it", e)),
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(error(
                "be created",
                io::Error::new(io::ErrorKind::NotFound, "its directory does not exist"),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            created: false,
        })
    }

    /// Creates the file, empty (never through a link).
    pub fn create(&mut self) -> Result<(), ReadyFileError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(OFlag::O_NOFOLLOW.bits() | OFlag::O_CLOEXEC.bits())
            .open(&self.path)
            .map_err(|source| ReadyFileError {
                path: self.path.clone(),
                op: "be created",
                source,
            })?;
        self.created = true;
        tracing::debug!(path = %self.path.display(), "created the ready file");
        Ok(())
    }

    /// Removes the file, if this run created it.
    pub fn remove(&mut self) {
        if !std::mem::take(&mut self.created) {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(path = %self.path.display(), "removed the ready file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %self.path.display(), %err, "could not remove the ready file");
            }
        }
    }

    /// Leaves the file in place for good (one-shot `write`).
    pub fn keep(mut self) {
        self.created = false;
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// What the supervisor tells the platform about its lifecycle: the ready
/// file, and `READY=1`/`RELOADING=1`/`STOPPING=1`/`WATCHDOG=1` when systemd
/// asked for notifications ([`notify::enable`]). Every call is idempotent
/// where it should be: `ready` once per (re)load, `stopping` once.
#[derive(Debug, Default)]
pub struct Readiness {
    ready_file: Option<ReadyFile>,
    ready: bool,
    reloading: bool,
    stopping: bool,
    /// `WATCHDOG=1` every this long, next at that instant.
    watchdog: Option<(Duration, Instant)>,
}

impl Readiness {
    /// Readiness for one supervisor: `ready_file` (prepared) and the watchdog
    /// interval systemd asked for, if any.
    pub fn new(ready_file: Option<ReadyFile>) -> Self {
        let watchdog = notify::watchdog_period().map(|period| (period, Instant::now()));
        if let Some((period, _)) = watchdog {
            tracing::debug!(?period, "sending WATCHDOG=1 to systemd");
        }
        Self {
            ready_file,
            watchdog,
            ..Self::default()
        }
    }

    /// A complete delivery is in place (and the program started): the first
    /// time, create the ready file and send `READY=1`; after a change
    /// ([`Readiness::reloading`]), `READY=1` again. `status` says what runs.
    pub fn ready(&mut self, status: &str) {
        if self.stopping || (self.ready && !self.reloading) {
            return;
        }
        if !self.ready {
            if let Some(file) = &mut self.ready_file {
                if let Err(err) = file.create() {
                    tracing::error!(error = %crate::error::chain_and_hint(&err), "the ready file is missing");
                }
            }
        }
        self.ready = true;
        self.reloading = false;
        notify::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A change is being applied (files rewritten, program restarted or
    /// signalled): `RELOADING=1` until the next [`Readiness::ready`].
    pub fn reloading(&mut self) {
        if self.stopping || !self.ready || self.reloading {
            return;
        }
        self.reloading = true;
        notify::reloading("applying changed secrets");
    }

    /// Shutdown has begun: `STOPPING=1` and the ready file removed, once.
    pub fn stopping(&mut self) {
        if std::mem::replace(&mut self.stopping, true) {
            return;
        }
        if let Some(file) = &mut self.ready_file {
            file.remove();
        }
        notify::send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// When the next `WATCHDOG=1` is due (`None`: systemd did not ask, and
    /// the supervisor's timer has no deadline for it).
    pub fn watchdog_due(&self) -> Option<Instant> {
        self.watchdog.map(|(_, next)| next)
    }

    /// Sends `WATCHDOG=1` if it is due at `now`, and schedules the next one.
    pub fn watchdog(&mut self, now: Instant) {
        if let Some((period, next)) = &mut self.watchdog {
            if *next <= now {
                notify::send(&[NotifyState::Watchdog]);
                *next = now + *period;
            }
        }
    }
}
