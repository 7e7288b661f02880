//! Process set-up for supervise mode, before any thread exists (signals
//! blocked, one signal-reading thread, mlock, subreaper), and the spawn of
//! the child in its own process group with a clean signal state.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedReceiver;

use super::{Deliver, SuperviseError};
use crate::error::{ExitClass, Failure as _};
use crate::launch::exec;
use crate::launch::signals::{self, Signal};
use crate::secrets::SecretSet;
use crate::sys::{self, CPtrs, InheritFd, Spawn, SpawnError};

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

/// Process set-up for supervise mode, before any thread or runtime exists (`main`
/// has hardened the process already, before parsing the arguments): block signals,
/// start the signal reader, lock memory (`mlock`: refused, exit 78, when the kernel
/// says no, naming `RLIMIT_MEMLOCK`; a supervisor asked to keep its secrets out of
/// swap must not run without), register as subreaper (warn if that fails and we
/// are not PID 1: orphans would then not be reaped).
pub fn prepare(mlock: bool) -> Result<SignalReader, SuperviseError> {
    sys::block_signals().map_err(SuperviseError::BlockSignals)?;
    let reader = signals::spawn_reader().map_err(SuperviseError::SignalThread)?;
    if mlock {
        sys::lock_memory().map_err(|errno| {
            let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
                .ok()
                .map(|(soft, _)| soft);
            SuperviseError::Mlock { errno, limit }
        })?;
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

/// Spawns the child ([`sys::spawn`]: own process group, foreground of the
/// terminal, clean signal state, the launcher's core limit, `SIGKILL` when the
/// supervisor dies) with the environment the delivery plans, as zeroizing
/// `NAME=value` strings that are gone when this returns, and the descriptors
/// it passes at fixed numbers (closed here once the child has them). The
/// program is looked up in svid-exec's own `PATH`, as in exec mode. Only the
/// pid is kept: the reaper owns the exit status. An exec failure maps to 127
/// (not found), 126 (cannot execute, or its descriptors could not be made)
/// or, as in exec mode, 78 for `E2BIG` (arguments + environment too large).
pub(super) fn spawn_child<D: Deliver>(
    child: &ChildCommand,
    delivery: &D,
    secrets: &SecretSet,
) -> Result<i32, u8> {
    let program = child.program.to_string_lossy();
    let Some(argv) = exec::argv(&child.program, &child.args) else {
        tracing::error!("exec {program}: an argument contains a NUL byte");
        return Err(ExitClass::CannotExecute.code());
    };
    let cwd = match child
        .cwd
        .as_deref()
        .map(|d| CString::new(d.as_os_str().as_bytes()))
    {
        Some(Ok(cwd)) => Some(cwd),
        Some(Err(_)) => {
            tracing::error!("exec {program}: the working directory contains a NUL byte");
            return Err(ExitClass::CannotExecute.code());
        }
        None => None,
    };
    let candidates = exec::candidates(&child.program);
    let paths: Vec<&CStr> = candidates.iter().map(CString::as_c_str).collect();
    let envp = delivery.child_env(secrets);
    let fds = match delivery.child_fds(secrets) {
        Ok(fds) => fds,
        Err(err) => {
            tracing::error!("cannot start {program}: {err}");
            return Err(ExitClass::CannotExecute.code());
        }
    };
    let inherit: Vec<InheritFd<'_>> = fds
        .iter()
        .map(|(fd, at)| InheritFd {
            fd: fd.as_fd(),
            at: *at,
        })
        .collect();
    let argv_ptrs = CPtrs::new(argv.iter().map(CString::as_c_str));
    let envp_ptrs = CPtrs::new(envp.as_cstrs());
    let spawned = sys::spawn(&Spawn {
        candidates: &paths,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        cwd: cwd.as_deref(),
        fds: &inherit,
    });
    match spawned {
        Ok(pid) => Ok(pid),
        Err(SpawnError::Exec(failure)) => {
            let err = exec::exec_error(failure, &child.program, &candidates);
            tracing::error!(hint = err.hint().unwrap_or_default(), "{err}");
            Err(err.exit_class().code())
        }
        Err(SpawnError::Setup(errno) | SpawnError::Fork(errno)) => {
            tracing::error!("cannot start {program}: {errno}");
            Err(ExitClass::CannotExecute.code())
        }
    }
}
