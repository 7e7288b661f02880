//! Process set-up for supervise mode, before any thread exists (signals
//! blocked, one signal-reading thread, hardening, subreaper), and the spawn of
//! the child in its own process group with a clean signal state.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{Deliver, SuperviseError};
use crate::error::ExitClass;
use crate::launch::signals::{self, Signal};
use crate::secrets::SecretSet;
use crate::sys;

/// The supervisor's signals, read by one thread (see [`prepare`]).
pub struct SignalReader(pub(super) UnboundedReceiver<Signal>);

impl SignalReader {
    /// For the start-up phase (log in, first fetch), before there is a child:
    /// waits for a signal whose default action would have ended the process had
    /// it not been blocked (HUP, INT, QUIT, TERM) and returns it, so `docker stop`
    /// or Ctrl-C during a slow start-up is not held until supervision begins.
    /// Other signals are dropped: there is no child to forward them to yet.
    pub async fn until_terminated(&mut self) -> Signal {
        loop {
            match self.0.recv().await {
                Some(s) if [Signal::HUP, Signal::INT, Signal::QUIT, Signal::TERM].contains(&s) => {
                    return s;
                }
                Some(s) => tracing::debug!(signal = %s, "signal during start-up; no child yet"),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Process set-up for supervise mode. `main` calls this first, before any thread or
/// runtime exists: block signals, start the signal reader, turn off core dumps and
/// ptrace-ability, lock memory (`mlock`), register as subreaper (warn if that fails
/// and we are not PID 1: orphans would then not be reaped).
pub fn prepare(mlock: bool) -> Result<SignalReader, SuperviseError> {
    sys::block_signals().map_err(SuperviseError::BlockSignals)?;
    let reader = signals::spawn_reader().map_err(SuperviseError::SignalThread)?;
    if let Err(err) = sys::harden() {
        tracing::warn!(%err, "could not disable core dumps / ptrace for the supervisor");
    }
    if mlock {
        sys::lock_memory().map_err(SuperviseError::Mlock)?;
    }
    if std::process::id() != 1 {
        if let Err(err) = sys::become_subreaper() {
            tracing::warn!(%err, "not PID 1 and could not register as child subreaper (Linux >= 3.4?): orphaned processes will not be reaped");
        }
    }
    Ok(SignalReader(reader))
}

/// The program to supervise.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
}

/// Spawns the child: own process group, clean signal state, an explicit
/// environment. Only the pid is kept: the reaper owns the exit status. An exec
/// failure maps to 127 (not found), 126 (cannot execute) or, as in exec mode,
/// 78 for `E2BIG` (arguments + environment too large).
pub(super) fn spawn_child<D: Deliver>(
    child: &ChildCommand,
    delivery: &D,
    secrets: &SecretSet,
) -> Result<i32, u8> {
    let mut command = Command::new(&child.program);
    command
        .args(&child.args)
        .env_clear()
        .stdin(Stdio::inherit());
    if let Some(cwd) = &child.cwd {
        command.current_dir(cwd);
    }
    delivery.child_env(secrets, &mut command);
    sys::isolate_child(&mut command);
    match command.spawn() {
        // Dropping `Child` neither waits nor kills: the reaper owns it from here.
        Ok(spawned) => Ok(i32::try_from(spawned.id()).expect("UNWRAP: pids fit in i32")),
        Err(err) => {
            let program = child.program.to_string_lossy();
            let class = if err.raw_os_error() == Some(nix::libc::E2BIG) {
                // As in exec mode: a configuration problem, not an unusable program.
                tracing::error!("cannot execute {program}: arguments and environment are too large (E2BIG); deliver fewer or smaller secrets in the environment (e.g. --files-dir with --no-env)");
                ExitClass::Config
            } else if err.kind() == std::io::ErrorKind::NotFound {
                tracing::error!("exec {program}: {err}");
                ExitClass::CommandNotFound
            } else {
                tracing::error!("exec {program}: {err}");
                ExitClass::CannotExecute
            };
            Err(class.code())
        }
    }
}
