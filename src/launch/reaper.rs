//! The one reaper: `waitpid(-1, WNOHANG)` until nothing is left, owning every
//! exit status, the main child's included (nobody else may wait on a pid, or this
//! loop would steal its status), and the mapping of a status to our exit code.

use nix::errno::Errno;

use super::signals::Signal;
use crate::sys;

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
/// SIGCHLD (signals coalesce, so one SIGCHLD may stand for many exits) and on
/// the driver's deadlines.
pub fn reap_all() -> Vec<Reaped> {
    let mut reaped = Vec::new();
    loop {
        match sys::wait_any_nohang() {
            Ok(Some((pid, status))) => {
                if let Some(end) = decode(status) {
                    reaped.push(Reaped { pid, end });
                }
            }
            Ok(None) | Err(Errno::ECHILD) => return reaped,
            Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::warn!(%err, "waitpid failed");
                return reaped;
            }
        }
    }
}

/// How a raw wait status ended the process: `WEXITSTATUS` for an exit, the
/// signal (any number, real-time ones included) for a kill. `None` for a
/// stop/continue report, which cannot arrive without WUNTRACED/WCONTINUED.
fn decode(status: i32) -> Option<ChildEnd> {
    use nix::libc;
    if libc::WIFEXITED(status) {
        Some(ChildEnd::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        let n = libc::WTERMSIG(status);
        Signal::from_raw(n).map(ChildEnd::Signaled).or_else(|| {
            // Not possible for a kernel-reported signal; still an end, never a hang.
            tracing::warn!(signal = n, "child killed by a signal beyond SIGRTMAX");
            Some(ChildEnd::Exited(128 + n))
        })
    } else {
        None
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

    #[test]
    fn raw_statuses_decode_to_exits_and_any_signal_real_time_included() {
        let rt = sys::min_rt_signal() + 3;
        // Linux encodings: exit code in bits 8..16; signal in bits 0..7 (0x80: core).
        assert_eq!(decode(42 << 8), Some(ChildEnd::Exited(42)));
        assert_eq!(decode(0), Some(ChildEnd::Exited(0)));
        assert_eq!(decode(15), Some(ChildEnd::Signaled(Signal::TERM)));
        assert_eq!(
            decode(0x0b | 0x80),
            Some(ChildEnd::Signaled(Signal::from_raw(11).unwrap()))
        );
        let end = decode(rt).unwrap();
        assert_eq!(end, ChildEnd::Signaled(Signal::from_raw(rt).unwrap()));
        assert_eq!(i32::from(end.exit_code()), 128 + rt);
        // Stopped (0x7f) is not an end.
        assert_eq!(decode((0x13 << 8) | 0x7f), None);
    }
}
