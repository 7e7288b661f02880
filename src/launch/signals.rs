//! Signals for the supervisor: a typed [`Signal`] (parsed from `TERM`, `SIGTERM`,
//! `15` or `RTMIN+2`), the one place where the supervisor's own signals are read
//! (a dedicated thread in `sigwaitinfo`, feeding a channel), and forwarding.

use std::fmt;
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::signal::Signal as NixSignal;
use tokio::sync::mpsc;

use crate::sys;

/// A signal number, valid on this system (1..=SIGRTMAX). Real-time signals are
/// included, which is why this is not nix's enum.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    pub const HUP: Self = Self(nix::libc::SIGHUP);
    pub const INT: Self = Self(nix::libc::SIGINT);
    pub const QUIT: Self = Self(nix::libc::SIGQUIT);
    pub const KILL: Self = Self(nix::libc::SIGKILL);
    pub const USR1: Self = Self(nix::libc::SIGUSR1);
    pub const USR2: Self = Self(nix::libc::SIGUSR2);
    pub const TERM: Self = Self(nix::libc::SIGTERM);
    pub const CHLD: Self = Self(nix::libc::SIGCHLD);

    /// The signal with number `n`, if it exists on this system.
    pub fn from_raw(n: i32) -> Option<Self> {
        (1..=sys::max_signal()).contains(&n).then_some(Self(n))
    }

    /// The signal number.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Ok(named) = NixSignal::try_from(self.0) {
            return f.write_str(named.as_str());
        }
        let rtmin = sys::min_rt_signal();
        if self.0 >= rtmin {
            write!(f, "SIGRTMIN+{}", self.0 - rtmin)
        } else {
            write!(f, "signal {}", self.0)
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A signal name or number that does not name a signal on this system.
#[derive(Debug, thiserror::Error)]
#[error("unknown signal {0:?}")]
pub struct UnknownSignal(String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownSignal(text.to_owned());
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Ok(n) = name.parse::<i32>() {
            return Self::from_raw(n).ok_or_else(unknown);
        }
        let (base, offset) = if let Some(rest) = name.strip_prefix("RTMIN") {
            (sys::min_rt_signal(), rest)
        } else if let Some(rest) = name.strip_prefix("RTMAX") {
            (sys::max_signal(), rest)
        } else {
            let named = NixSignal::from_str(&format!("SIG{name}")).map_err(|_| unknown())?;
            return Ok(Self(named as i32));
        };
        let n = match offset.as_bytes().first() {
            None => base,
            Some(b'+') => base + offset[1..].parse::<i32>().map_err(|_| unknown())?,
            Some(b'-') => base - offset[1..].parse::<i32>().map_err(|_| unknown())?,
            Some(_) => return Err(unknown()),
        };
        if (sys::min_rt_signal()..=sys::max_signal()).contains(&n) {
            Ok(Self(n))
        } else {
            Err(unknown())
        }
    }
}

/// Where a signal goes: the child alone, or its whole process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `kill(pid, sig)`.
    Process(i32),
    /// `kill(-pgid, sig)`.
    Group(i32),
}

/// Sends `signal` to `target`. A target that no longer exists (ESRCH) is normal
/// (the child may have just exited) and only logged at debug level.
pub fn send(target: Target, signal: Signal) {
    let pid = match target {
        Target::Process(pid) => pid,
        Target::Group(pgid) => -pgid,
    };
    match sys::kill_raw(pid, signal.raw()) {
        Ok(()) => tracing::debug!(?target, %signal, "signal sent"),
        Err(Errno::ESRCH) => tracing::debug!(?target, %signal, "signal target already gone"),
        Err(err) => tracing::warn!(?target, %signal, %err, "could not send signal"),
    }
}

/// Whether process group `pgid` still has a member (`kill(-pgid, 0)`; a member
/// we may not signal still counts, and so does one that has exited but is
/// not reaped yet).
pub fn group_alive(pgid: i32) -> bool {
    !matches!(sys::kill_raw(-pgid, 0), Err(Errno::ESRCH))
}

/// Starts the one reader of the supervisor's signals: a thread blocked in
/// `sigwaitinfo` on every blocked signal, sending each to the returned channel.
/// [`sys::block_signals`] must have run before any thread was created.
pub fn spawn_reader() -> std::io::Result<mpsc::UnboundedReceiver<Signal>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let set = sys::supervised_signals();
    std::thread::Builder::new()
        .name("svid-exec-signals".into())
        .spawn(move || loop {
            match sys::wait_signal(&set) {
                Ok(n) => {
                    if tx.send(Signal(n)).is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::error!(%err, "sigwaitinfo failed; signals are no longer read");
                    return;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_or_without_prefix_and_numbers() {
        for (text, expected) in [
            ("TERM", Signal::TERM),
            ("SIGTERM", Signal::TERM),
            ("term", Signal::TERM),
            ("15", Signal::TERM),
            ("hup", Signal::HUP),
            ("SIGUSR1", Signal::USR1),
        ] {
            assert_eq!(text.parse::<Signal>().unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn parses_real_time_signals_relative_to_rtmin_and_rtmax() {
        let rt = "RTMIN+2".parse::<Signal>().unwrap();
        assert_eq!(rt.raw(), sys::min_rt_signal() + 2);
        assert_eq!(rt.to_string(), "SIGRTMIN+2");
        assert_eq!(
            "SIGRTMAX".parse::<Signal>().unwrap().raw(),
            sys::max_signal()
        );
    }

    #[test]
    fn rejects_unknown_names_and_out_of_range_numbers() {
        for text in ["", "TERMINATE", "0", "-1", "999", "RTMIN+999", "RTMINx"] {
            assert!(text.parse::<Signal>().is_err(), "{text}");
        }
    }

    #[test]
    fn displays_the_conventional_name() {
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
        assert_eq!(format!("{:?}", Signal::KILL), "SIGKILL");
    }
}
