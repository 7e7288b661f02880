//! The one reaper: `waitpid(-1, WNOHANG)` until nothing is left, owning every
//! exit status, the main child's included (nobody else may wait on a pid, or this
//! loop would steal its status), and the mapping of a status to our exit code.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::signals::Signal;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by a signal.
    Signaled(Signal),
}

impl ChildEnd {
    /// Our exit code for this end: the code itself, or 128+N for signal N (as shells
    /// and tini report it), modulo 256.
    pub fn exit_code(self) -> u8 {
        let n = match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => 128 + signal.raw(),
        };
        u8::try_from(n.rem_euclid(256)).expect("UNWRAP: rem_euclid(256) is in 0..256")
    }
}

/// A reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    pub end: ChildEnd,
}

/// Reaps every exited child that is waiting, without blocking. Call on every
/// SIGCHLD (signals coalesce, so one SIGCHLD may stand for many exits) and now and
/// then as a safety net.
pub fn reap_all() -> Vec<Reaped> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => reaped.push(Reaped {
                pid: pid.as_raw(),
                end: ChildEnd::Exited(code),
            }),
            Ok(WaitStatus::Signaled(pid, signal, _core)) => reaped.push(Reaped {
                pid: pid.as_raw(),
                end: ChildEnd::Signaled(
                    Signal::from_raw(signal as i32).expect("UNWRAP: the kernel reported it"),
                ),
            }),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
            // Without WUNTRACED/WCONTINUED no stop/continue reports arrive; skip anything else.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::warn!(%err, "waitpid failed");
                return reaped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_through_and_signals_map_to_128_plus_n() {
        let table = [
            (ChildEnd::Exited(0), 0),
            (ChildEnd::Exited(1), 1),
            (ChildEnd::Exited(255), 255),
            (ChildEnd::Exited(256), 0),
            (ChildEnd::Signaled(Signal::TERM), 143),
            (ChildEnd::Signaled(Signal::KILL), 137),
            (ChildEnd::Signaled(Signal::HUP), 129),
        ];
        for (end, code) in table {
            assert_eq!(end.exit_code(), code, "{end:?}");
        }
    }
}
