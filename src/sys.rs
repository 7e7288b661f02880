//! The raw process-level system calls of the supervisor: the signal mask, the
//! signal wait, raw `kill`, the child's set-up between fork and exec, and the
//! supervisor's own hardening (no core dumps, not ptrace-able, subreaper, mlock),
//! the timerfd behind the supervisor's deadlines, and the descriptors a program
//! inherits at fixed numbers (`--memfd`).
//!
//! This is the one module allowed `unsafe`; everything here is a thin, documented
//! wrapper so the rest of the crate stays safe.
#![allow(
    unsafe_code,
    reason = "sigwaitinfo, kill with raw (real-time) signal numbers, Command::pre_exec, dup2 onto a fixed number and registering a raw fd with Tokio have no safe wrapper"
)]

use std::io;
use std::os::fd::{AsFd as _, AsRawFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Synchronous fault signals: raised by the faulting thread itself, so blocking them
/// would only hide a crash. They keep their default action (tini does the same).
const FAULT_SIGNALS: [NixSignal; 7] = [
    NixSignal::SIGFPE,
    NixSignal::SIGILL,
    NixSignal::SIGSEGV,
    NixSignal::SIGBUS,
    NixSignal::SIGABRT,
    NixSignal::SIGTRAP,
    NixSignal::SIGSYS,
];

/// Every signal except the synchronous fault signals (includes the real-time ones).
pub fn supervised_signals() -> SigSet {
    let mut set = SigSet::all();
    for signal in FAULT_SIGNALS {
        set.remove(signal);
    }
    set
}

/// Blocks [`supervised_signals`] in the calling thread. Called first thing in `main`,
/// before any thread or runtime exists, so every later thread inherits the mask and
/// the only way a signal is consumed is [`wait_signal`].
///
/// SIGTTIN/SIGTTOU are blocked too: the kernel lets a blocked-SIGTTOU process write
/// to its terminal from the background, which is what tini gets by ignoring them,
/// without changing a disposition the child would inherit.
pub fn block_signals() -> Result<(), Errno> {
    supervised_signals().thread_block()
}

/// Waits for one of `set` (which must be blocked in every thread) and returns its
/// raw number. Raw, because nix's `SigSet::wait` cannot return real-time signals.
pub fn wait_signal(set: &SigSet) -> io::Result<i32> {
    let raw: &libc::sigset_t = set.as_ref();
    loop {
        // SAFETY: `raw` points to a valid, initialised sigset_t borrowed for the call;
        // a null siginfo pointer is allowed by sigwaitinfo(2).
        let n = unsafe { libc::sigwaitinfo(raw, std::ptr::null_mut()) };
        if n >= 0 {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `kill(pid, signal)` with a raw signal number (`pid < 0` addresses a process group).
/// `Errno::ESRCH` means nobody was there.
pub fn kill_raw(pid: i32, signal: i32) -> Result<(), Errno> {
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    Errno::result(rc).map(drop)
}

/// Prepares `command` so the child starts in a clean state: its own process group
/// (foreground of the terminal when stdin is one, as tini does), every signal
/// disposition back to default (std only resets SIGPIPE; an ignored SIGHUP from
/// `nohup` would otherwise be inherited) and an empty signal mask (std clears it).
pub fn isolate_child(command: &mut Command) {
    command.process_group(0);
    let hook = || {
        reset_child_signals();
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it only calls
    // async-signal-safe functions (isatty, getpgrp, tcsetpgrp, pthread_sigmask,
    // getrlimit/setrlimit, signal) and reads an already-initialised OnceLock; it
    // does not allocate or take locks.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Runs in the forked child (see [`isolate_child`]): async-signal-safe calls only.
fn reset_child_signals() {
    // SAFETY (whole function): only async-signal-safe libc calls on values owned by
    // this stack frame; errors are deliberately ignored (best effort, like tini).
    unsafe {
        // Take the terminal's foreground for our new group. A background group calling
        // tcsetpgrp gets SIGTTOU, so keep it blocked for the call (std cleared the mask).
        if libc::isatty(libc::STDIN_FILENO) == 1 {
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut ttou);
            libc::sigaddset(&raw mut ttou, libc::SIGTTOU);
            libc::pthread_sigmask(libc::SIG_BLOCK, &raw const ttou, std::ptr::null_mut());
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        }
        if let Some(&soft) = ORIGINAL_CORE_SOFT.get() {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_CORE, &raw mut limit) == 0 {
                limit.rlim_cur = soft.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_CORE, &raw const limit);
            }
        }
        // The raw system call, not libc's signal(): glibc refuses to touch its own
        // reserved signals (32, 33), yet glibc's posix_spawn leaves them *ignored* in
        // processes that Rust programs start, and an ignored disposition survives exec.
        // An all-zero kernel sigaction is SIG_DFL, no flags, empty mask (4 words cover
        // the layouts with and without sa_restorer).
        let default_action = [0_u64; 4];
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    libc::c_long::from(signal),
                    default_action.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
    }
}

/// SIGPIPE's disposition around `run`'s exec: `default` puts back the default
/// action, `!default` the "ignore" that Rust's runtime sets before `main`. An
/// ignored disposition survives `execve`, so without the reset the program gets
/// `EPIPE` instead of dying quietly when its reader goes away (`yes | head`
/// printing "Broken pipe"); `std::process::Command` does the same reset for the
/// children it spawns. If exec fails, "ignore" comes back so that reporting the
/// error on a closed stderr cannot kill us.
pub fn set_sigpipe_default(default: bool) {
    use nix::sys::signal::{signal, SigHandler};
    let handler = if default {
        SigHandler::SigDfl
    } else {
        SigHandler::SigIgn
    };
    // SAFETY: SIG_DFL and SIG_IGN install no handler, so no Rust code runs in
    // signal context.
    unsafe {
        let _ = signal(NixSignal::SIGPIPE, handler);
    }
}

/// The soft core-size limit we started with, restored in the child so the program
/// can still dump core if its owner wants that (only our own process holds back).
static ORIGINAL_CORE_SOFT: std::sync::OnceLock<libc::rlim_t> = std::sync::OnceLock::new();

/// No core dumps (they would hold the secrets) and not ptrace-able by other
/// processes of the same user: `PR_SET_DUMPABLE 0` (reset by the kernel when the
/// child execs) and a soft `RLIMIT_CORE` of 0 (restored in the child).
pub fn harden() -> Result<(), Errno> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    nix::sys::prctl::set_dumpable(false)?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_CORE)?;
    let _ = ORIGINAL_CORE_SOFT.set(soft);
    setrlimit(Resource::RLIMIT_CORE, 0, hard)
}

/// Registers as child subreaper, so orphaned descendants are re-parented to us and
/// reaped by our `waitpid(-1)` loop rather than by the host's init.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Locks current and future memory so secrets are never swapped out.
pub fn lock_memory() -> Result<(), Errno> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
}

/// The highest valid signal number.
pub fn max_signal() -> i32 {
    libc::SIGRTMAX()
}

/// The lowest real-time signal number usable by applications.
pub fn min_rt_signal() -> i32 {
    libc::SIGRTMIN()
}

/// `waitpid(-1, &status, WNOHANG)`: reaps one exited child, if any, and returns
/// its pid and raw wait status (`Ok(None)`: children exist but none has exited;
/// `Err(ECHILD)`: no children at all). Raw, because nix's `waitpid` decodes the
/// status through its signal enum, which has no real-time signals: for a child
/// killed by one it returns `EINVAL` after the kernel has already reaped it, and
/// that child's end would be lost.
pub fn wait_any_nohang() -> Result<Option<(i32, i32)>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid(2) writes one c_int through a pointer to a live local.
    let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
    match Errno::result(pid)? {
        0 => Ok(None),
        pid => Ok(Some((pid, status))),
    }
}

/// A non-blocking `CLOCK_MONOTONIC` timerfd (`AsyncFd` wants `AsRawFd`, which
/// nix's `TimerFd` does not implement).
pub struct Timer(TimerFd);

impl Timer {
    pub fn fd(&self) -> &TimerFd {
        &self.0
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A [`Timer`] registered for readability with the current Tokio runtime, which
/// must have its I/O driver enabled (Tokio panics otherwise).
pub fn async_timer() -> io::Result<AsyncFd<Timer>> {
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    // SAFETY: `Timer` owns the timerfd (the `OwnedFd` inside nix's `TimerFd`) and
    // never replaces or closes it, and the `AsyncFd` owns the `Timer`: the
    // descriptor `as_raw_fd` returns is open, and always the same one, for as long
    // as the registration lives.
    Ok(unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }?)
}

// ---------------------------------------------------------------------------
// Descriptors the program inherits at fixed numbers (`--memfd`)

/// The lowest descriptor number above every one the program inherits anyway:
/// 0-2 and whatever our own parent passed without close-on-exec (systemd's
/// socket-activation descriptors from 3 on, a shell's redirections). Numbers
/// from here on are svid-exec's to give. Everything svid-exec itself opens is
/// close-on-exec (as Rust opens every descriptor), so the answer does not
/// change while it runs. At least 3; 3 when `/proc` cannot be read.
pub fn first_unused_inherited_fd() -> RawFd {
    let mut first = 3;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return first;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: F_GETFD only reads the flags of a descriptor number (EBADF
        // for the directory's own, closed by now); no memory is involved.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            first = first.max(fd + 1);
        }
    }
    first
}

/// Descriptors the program is to inherit at fixed numbers, each held here
/// (close-on-exec) either at its number already or above every such number.
/// Holding the free numbers matters for `std::process::Command`: its spawn
/// opens a pipe for exec errors at the lowest free number, and a number the
/// child is given must not be that pipe.
#[derive(Debug)]
pub struct InheritAt(Vec<(OwnedFd, RawFd)>);

impl InheritAt {
    /// Places each `(descriptor, number in the program)`; the numbers are
    /// distinct and above 2. The given descriptors are closed once placed.
    pub fn place(fds: Vec<(OwnedFd, RawFd)>) -> io::Result<Self> {
        let above = fds.iter().map(|(_, at)| *at).max().map_or(3, |m| m + 1);
        let mut placed = Vec::with_capacity(fds.len());
        for (fd, at) in fds {
            let source = if fd.as_raw_fd() == at {
                fd
            } else {
                // SAFETY: F_GETFD only reads the flags of a descriptor number
                // (it fails for a number nothing holds); no memory is involved.
                let free = unsafe { libc::fcntl(at, libc::F_GETFD) } < 0;
                match free.then(|| dup_at_least(&fd, at)).transpose()? {
                    Some(copy) if copy.as_raw_fd() == at => copy,
                    _ => dup_at_least(&fd, above)?,
                }
            };
            placed.push((source, at));
        }
        Ok(Self(placed))
    }

    /// Puts each descriptor at its number, without close-on-exec, in the
    /// process about to exec. Async-signal-safe: `fcntl` and `dup2` over a
    /// vector allocated before, no allocation.
    fn apply(&self) -> io::Result<()> {
        for (source, at) in &self.0 {
            let source = source.as_raw_fd();
            let rc = if source == *at {
                // SAFETY: F_SETFD 0 clears close-on-exec on a descriptor we own.
                unsafe { libc::fcntl(source, libc::F_SETFD, 0) }
            } else {
                // SAFETY: dup2 of a descriptor we own onto a number that holds
                // none of ours (see `place`); it leaves close-on-exec off.
                unsafe { libc::dup2(source, *at) }
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a close-on-exec copy of `fd` at `min` or the lowest free number above.
fn dup_at_least(fd: &OwnedFd, min: RawFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The spawn hook for extra descriptors: the child of `command` gets `fds` at
/// their numbers before exec. The command owns them: they are closed here
/// when it is dropped, after the spawn.
pub fn inherit_fds(command: &mut Command, fds: InheritAt) {
    // SAFETY: the hook runs in the forked child before exec; `apply` only
    // calls fcntl and dup2 (async-signal-safe) over memory allocated before
    // the fork, and does not allocate.
    unsafe {
        command.pre_exec(move || fds.apply());
    }
}

/// For `run` without `--watch`: puts `fds` at their numbers in this process,
/// for the `execve` that follows (the copies above stay close-on-exec).
pub fn inherit_fds_across_exec(fds: &InheritAt) -> io::Result<()> {
    fds.apply()
}
