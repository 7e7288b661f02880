//! The raw process-level system calls: the launcher's hardening in every mode
//! (no core dumps, not ptrace-able) and the state it gives back to the program
//! at exec; `execve` over the program's candidate paths, with the descriptors
//! the program inherits at fixed numbers (`--memfd`); for the supervisor, the
//! signal mask, the signal wait, raw `kill`, subreaper, mlock, the child's
//! start (`fork`, its set-up, `execve`) and the timerfd behind its deadlines.
//!
//! This is the one module allowed `unsafe`; everything here is a thin, documented
//! wrapper so the rest of the crate stays safe.
#![allow(
    unsafe_code,
    reason = "sigwaitinfo, kill with raw (real-time) signal numbers, fork and the child's set-up before execve, dup2 onto a fixed number, and registering a raw fd with Tokio have no safe wrapper"
)]

use std::ffi::CStr;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd as _, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

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

/// The soft core-size limit the launcher started with (set by [`harden`]), given
/// back to the program: its owner may want its cores; only svid-exec holds back.
static ORIGINAL_CORE_SOFT: std::sync::OnceLock<libc::rlim_t> = std::sync::OnceLock::new();

/// No core dumps (they would hold the secrets, the JWT-SVID and the access
/// token) and not ptrace-able or readable through /proc by other processes of
/// the same user: `PR_SET_DUMPABLE 0` and a soft `RLIMIT_CORE` of 0. Called
/// first thing in `main`, before the arguments are parsed, in every mode. The
/// program gets both back: `execve` makes it dumpable again, and
/// [`exec_state`] (exec) or [`spawn`] (supervisor) restore the core limit.
/// Idempotent: the limit remembered is the one of the first call.
pub fn harden() -> Result<(), Errno> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    nix::sys::prctl::set_dumpable(false)?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_CORE)?;
    let _ = ORIGINAL_CORE_SOFT.set(soft);
    setrlimit(Resource::RLIMIT_CORE, 0, hard)
}

/// The process state around `run`'s exec: what the program must start with
/// (`for_program`), or the launcher's own state back after a failed exec.
///
/// - SIGPIPE: default for the program. Rust's runtime ignores it before
///   `main`, and an ignored disposition survives `execve`, so without the
///   reset the program gets `EPIPE` instead of dying quietly when its reader
///   goes away (`yes | head` printing "Broken pipe"). Ignored again after a
///   failed exec, so reporting the error on a closed stderr cannot kill us.
/// - `RLIMIT_CORE`: the soft limit the launcher started with for the
///   program, 0 again for the launcher.
///
/// `PR_SET_DUMPABLE` needs nothing: `execve` makes the program dumpable again
/// (except a set-ID or unreadable file, which the kernel keeps non-dumpable on
/// purpose).
pub fn exec_state(for_program: bool) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use nix::sys::signal::{signal, SigHandler};
    let handler = if for_program {
        SigHandler::SigDfl
    } else {
        SigHandler::SigIgn
    };
    // SAFETY: SIG_DFL and SIG_IGN install no handler, so no Rust code runs in
    // signal context.
    unsafe {
        let _ = signal(NixSignal::SIGPIPE, handler);
    }
    let soft = if for_program {
        ORIGINAL_CORE_SOFT.get().copied()
    } else {
        Some(0)
    };
    if let (Some(soft), Ok((_, hard))) = (soft, getrlimit(Resource::RLIMIT_CORE)) {
        let _ = setrlimit(Resource::RLIMIT_CORE, soft.min(hard), hard);
    }
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

/// For `run` without `--watch`: puts each `(descriptor, number)` at its
/// number in this process, without close-on-exec, for the `execve` that
/// follows (the last step before it). Each is first copied above every
/// number (close-on-exec, closed here), and the given descriptors are closed
/// before any is placed, so placing one can neither overwrite another's
/// source nor be closed later by a descriptor's owner that held that number.
pub fn place_for_exec(fds: Vec<(OwnedFd, RawFd)>) -> io::Result<()> {
    let above = fds
        .iter()
        .map(|(_, at)| *at)
        .max()
        .map_or(3, |m| m.max(2) + 1);
    let copies = fds
        .into_iter()
        .map(|(fd, at)| Ok((dup_above(fd.as_fd(), above)?, at)))
        .collect::<io::Result<Vec<_>>>()?;
    for (copy, at) in &copies {
        // SAFETY: dup2 of a descriptor we own onto a number nothing of ours
        // needs any more (the sources were closed above; anything else of
        // ours is close-on-exec and would close at the exec); it leaves
        // close-on-exec off.
        if unsafe { libc::dup2(copy.as_raw_fd(), *at) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a close-on-exec copy of `fd` at `min` or the
/// lowest free number above it.
fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> nix::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

// ---------------------------------------------------------------------------
// Starting the program: execvp's candidate loop (exec mode and the supervisor's
// child alike), and fork + execve for the supervisor.

/// A NULL-terminated array of pointers to C strings (`argv`, `envp`), built
/// before `fork`: the child must not allocate. Borrows the strings, so their
/// owner (a zeroizing `envp` included) outlives it.
pub struct CPtrs<'a> {
    ptrs: Vec<*const libc::c_char>,
    strings: PhantomData<&'a CStr>,
}

impl<'a> CPtrs<'a> {
    pub fn new(strings: impl IntoIterator<Item = &'a CStr>) -> Self {
        let mut ptrs: Vec<*const libc::c_char> = strings.into_iter().map(CStr::as_ptr).collect();
        ptrs.push(std::ptr::null());
        Self {
            ptrs,
            strings: PhantomData,
        }
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

/// Why no candidate could be executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    /// No candidate exists (each failed with `ENOENT` or the like).
    NotFound,
    /// `candidates[index]` failed with `errno`: the first definite failure,
    /// or the first `EACCES` when nothing else could be executed.
    Failed { index: usize, errno: Errno },
}

/// What to do after one candidate failed with `errno`, as glibc's `execvpe`:
/// `None` to try the next (the file is not there), `Some(true)` to remember
/// it and try the next (`EACCES`: 126 if nothing works), `Some(false)` to stop.
pub fn after_exec_failure(errno: Errno) -> Option<bool> {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT => None,
        Errno::EACCES => Some(true),
        _ => Some(false),
    }
}

/// `execve` on each of `candidates` in turn with `argv` and `envp`, as
/// `execvp` does over `PATH` ([`after_exec_failure`]). Returns only on
/// failure. Allocation-free, so [`spawn`]'s forked child runs it too.
pub fn exec_first(candidates: &[&CStr], argv: &CPtrs<'_>, envp: &CPtrs<'_>) -> ExecFailure {
    let mut denied = None;
    for (index, path) in candidates.iter().enumerate() {
        // SAFETY: `path` is a NUL-terminated string, `argv` and `envp` are
        // NULL-terminated arrays of NUL-terminated strings, all alive for the
        // call; execve only reads them.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let errno = Errno::last();
        match after_exec_failure(errno) {
            None => {}
            Some(true) => {
                denied.get_or_insert(ExecFailure::Failed { index, errno });
            }
            Some(false) => return ExecFailure::Failed { index, errno },
        }
    }
    denied.unwrap_or(ExecFailure::NotFound)
}

/// A descriptor the child inherits at a fixed number: `fd` here becomes
/// `at` in the child (not close-on-exec there), whatever its number here.
#[derive(Debug, Clone, Copy)]
pub struct InheritFd<'a> {
    pub fd: BorrowedFd<'a>,
    pub at: RawFd,
}

/// What [`spawn`] starts, and with what.
pub struct Spawn<'a> {
    /// The files to try, in order ([`exec_first`]).
    pub candidates: &'a [&'a CStr],
    pub argv: &'a CPtrs<'a>,
    pub envp: &'a CPtrs<'a>,
    /// Working directory (ours when `None`).
    pub cwd: Option<&'a CStr>,
    /// Descriptors to pass at fixed numbers (every other one of ours is
    /// close-on-exec, as Rust opens them).
    pub fds: &'a [InheritFd<'a>],
}

/// Why [`spawn`] did not start the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No pipe, descriptor or process could be made (resources).
    Fork(Errno),
    /// The child's set-up before exec failed (working directory, descriptors).
    Setup(Errno),
    /// No candidate could be executed.
    Exec(ExecFailure),
}

/// The child's report on its pipe: kind, index, errno.
const REPORT_SETUP: i32 = 1;
const REPORT_NOT_FOUND: i32 = 2;
const REPORT_FAILED: i32 = 3;

/// Starts the supervisor's child with `fork` + `execve` and an `envp` the
/// caller owns (and zeroizes), rather than `std::process::Command`, which
/// copies every `NAME=value` into C strings of its own that are freed, never
/// zeroed, leaving a copy of each secret in the supervisor's heap.
///
/// The child, before exec: leads its own process group (set on both sides,
/// so the group exists when this returns), takes the terminal's foreground
/// when stdin is a terminal (as tini does), gets `SIGKILL` when the
/// supervisor dies (`PR_SET_PDEATHSIG`; the parent is checked again after
/// setting it, in case it died in between), the core limit the launcher
/// started with, its inherited descriptors at their numbers, every signal
/// disposition at default (std only resets SIGPIPE; an ignored SIGHUP from
/// `nohup` would otherwise be inherited) and an empty signal mask. An exec
/// failure comes back through a close-on-exec pipe, and the failed child is
/// reaped here; on success only the pid is returned (the reaper owns it).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked ends, not the
/// process: call this from the thread that lives as long as the supervisor
/// (the main thread, which runs the supervisor's runtime).
pub fn spawn(spec: &Spawn<'_>) -> Result<i32, SpawnError> {
    use nix::fcntl::OFlag;
    let fork_err = SpawnError::Fork;
    // Temporary descriptors go above every target, so placing one in the
    // child cannot overwrite another's source or the report pipe.
    let above = spec
        .fds
        .iter()
        .map(|f| f.at)
        .max()
        .map_or(3, |m| m.max(2) + 1);
    let sources = spec
        .fds
        .iter()
        .map(|f| dup_above(f.fd, above).map_err(fork_err))
        .collect::<Result<Vec<OwnedFd>, _>>()?;
    let placements: Vec<(RawFd, RawFd)> = sources
        .iter()
        .zip(spec.fds)
        .map(|(source, f)| (source.as_raw_fd(), f.at))
        .collect();
    let (report_read, pipe_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(fork_err)?;
    let report_write = dup_above(pipe_write.as_fd(), above).map_err(fork_err)?;
    // Only the child may hold a write end, or the read below never ends.
    drop(pipe_write);
    let parent = nix::unistd::getpid().as_raw();
    let core_soft = ORIGINAL_CORE_SOFT.get().copied();
    let child = ChildSetup {
        spec,
        placements: &placements,
        parent,
        core_soft,
        report: report_write.as_raw_fd(),
    };
    // SAFETY: fork(2) in a multi-threaded process: the child runs only
    // `in_child`, which makes async-signal-safe calls on memory prepared
    // above and never returns (exec or _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Fork(Errno::last()));
    }
    if pid == 0 {
        in_child(&child);
    }
    drop(report_write);
    drop(sources);
    let child_pid = nix::unistd::Pid::from_raw(pid);
    // EACCES once the child has exec'd: it set its group itself by then.
    let _ = nix::unistd::setpgid(child_pid, child_pid);
    match read_report(&report_read) {
        None => Ok(pid),
        Some(error) => {
            // Ours alone: nobody else knows this pid, and the reaper runs on
            // this same thread, later.
            let _ = nix::sys::wait::waitpid(child_pid, None);
            Err(error)
        }
    }
}

/// What the forked child needs, all prepared before the fork.
struct ChildSetup<'a> {
    spec: &'a Spawn<'a>,
    /// (temporary descriptor, number in the child).
    placements: &'a [(RawFd, RawFd)],
    parent: libc::pid_t,
    core_soft: Option<libc::rlim_t>,
    report: RawFd,
}

/// The forked child: set up, exec, or report why not and `_exit`.
fn in_child(setup: &ChildSetup<'_>) -> ! {
    let report = |kind: i32, index: usize, errno: Errno| -> ! {
        let mut message = [0_u8; 12];
        message[..4].copy_from_slice(&kind.to_ne_bytes());
        message[4..8].copy_from_slice(&i32::try_from(index).unwrap_or(i32::MAX).to_ne_bytes());
        message[8..].copy_from_slice(&(errno as i32).to_ne_bytes());
        // SAFETY: write(2) and _exit(2) are async-signal-safe; `message` is a
        // live stack buffer of the length given.
        unsafe {
            libc::write(setup.report, message.as_ptr().cast(), message.len());
            libc::_exit(127)
        }
    };
    // SAFETY (whole block): only async-signal-safe libc calls on values owned by
    // this stack frame or prepared before the fork; no allocation, no locks.
    // Errors of the best-effort steps are ignored (as tini does).
    unsafe {
        libc::setpgid(0, 0);
        // Die with the supervisor. If it died before this, we were re-parented
        // already and nobody would ever send the signal: give up now.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9),
            0,
            0,
            0,
        );
        if libc::getppid() != setup.parent {
            libc::_exit(127);
        }
        // Take the terminal's foreground for our new group. A background group calling
        // tcsetpgrp gets SIGTTOU, so keep it blocked for the call (the mask is
        // still the supervisor's, which blocks it; it is emptied below).
        if libc::isatty(libc::STDIN_FILENO) == 1 {
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        }
        if let Some(soft) = setup.core_soft {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_CORE, &raw mut limit) == 0 {
                limit.rlim_cur = soft.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_CORE, &raw const limit);
            }
        }
        for &(source, at) in setup.placements {
            // dup2 leaves the new descriptor without close-on-exec.
            if libc::dup2(source, at) < 0 {
                report(REPORT_SETUP, 0, Errno::last());
            }
        }
        if let Some(cwd) = setup.spec.cwd {
            if libc::chdir(cwd.as_ptr()) < 0 {
                report(REPORT_SETUP, 0, Errno::last());
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
    match exec_first(setup.spec.candidates, setup.spec.argv, setup.spec.envp) {
        ExecFailure::NotFound => report(REPORT_NOT_FOUND, 0, Errno::ENOENT),
        ExecFailure::Failed { index, errno } => report(REPORT_FAILED, index, errno),
    }
}

/// Reads the child's report: `None` at end of file (it exec'd: the pipe was
/// closed on exec), else why it did not.
fn read_report(pipe: &OwnedFd) -> Option<SpawnError> {
    let mut message = [0_u8; 12];
    let mut filled = 0;
    while filled < message.len() {
        match nix::unistd::read(pipe, &mut message[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Some(SpawnError::Setup(errno)),
        }
    }
    if filled < message.len() {
        // Nothing (exec'd) or a torn report (the child died while writing).
        return (filled > 0).then_some(SpawnError::Setup(Errno::EIO));
    }
    let field = |i: usize| {
        i32::from_ne_bytes(
            message[i * 4..i * 4 + 4]
                .try_into()
                .expect("UNWRAP: four bytes"),
        )
    };
    let errno = Errno::from_raw(field(2));
    Some(match field(0) {
        REPORT_NOT_FOUND => SpawnError::Exec(ExecFailure::NotFound),
        REPORT_FAILED => SpawnError::Exec(ExecFailure::Failed {
            index: usize::try_from(field(1)).unwrap_or(usize::MAX),
            errno,
        }),
        _ => SpawnError::Setup(errno),
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::io::Read as _;

    use super::*;

    /// Spawns `sh -c script` with `fds` and no environment; returns its pid.
    fn sh(script: &str, fds: &[InheritFd<'_>]) -> Result<i32, SpawnError> {
        let argv: Vec<CString> = ["sh", "-c", script]
            .iter()
            .map(|a| CString::new(*a).unwrap())
            .collect();
        let argv = CPtrs::new(argv.iter().map(CString::as_c_str));
        let envp = CPtrs::new([]);
        spawn(&Spawn {
            candidates: &[c"/no/such/sh", c"/bin/sh"],
            argv: &argv,
            envp: &envp,
            cwd: None,
            fds,
        })
    }

    fn exit_status(pid: i32) -> i32 {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn descriptors_reach_the_child_at_their_numbers_even_when_they_cross() {
        // Two pipes whose write ends are passed at each other's numbers: a
        // naive dup2 of the first would close the second's source.
        let (mut read_a, write_a) = std::io::pipe().unwrap();
        let (mut read_b, write_b) = std::io::pipe().unwrap();
        let (a, b) = (write_a.as_raw_fd(), write_b.as_raw_fd());
        let fds = [
            InheritFd {
                fd: write_a.as_fd(),
                at: b,
            },
            InheritFd {
                fd: write_b.as_fd(),
                at: a,
            },
        ];
        let pid = sh(&format!("echo a >&{b}; echo b >&{a}"), &fds).unwrap();
        drop((write_a, write_b));
        assert_eq!(exit_status(pid), 0);
        let (mut got_a, mut got_b) = (String::new(), String::new());
        read_a.read_to_string(&mut got_a).unwrap();
        read_b.read_to_string(&mut got_b).unwrap();
        assert_eq!((got_a.as_str(), got_b.as_str()), ("a\n", "b\n"));
    }

    #[test]
    fn the_child_leads_its_own_group_with_a_clean_signal_state() {
        let (mut read, write) = std::io::pipe().unwrap();
        let fds = [InheritFd {
            fd: write.as_fd(),
            at: 7,
        }];
        // pid, process group (fields 1 and 5 of /proc/PID/stat), blocked and
        // ignored signals.
        let script = "set -- $(cat /proc/$$/stat); \
             echo $1 $5 $(grep -E '^Sig(Blk|Ign)' /proc/$$/status | tr -d '\\t') >&7";
        let pid = sh(script, &fds).unwrap();
        drop(write);
        assert_eq!(exit_status(pid), 0);
        let mut out = String::new();
        read.read_to_string(&mut out).unwrap();
        assert_eq!(
            out.trim(),
            format!("{pid} {pid} SigBlk:0000000000000000 SigIgn:0000000000000000")
        );
    }

    #[test]
    fn exec_and_set_up_failures_come_back_typed() {
        let argv = CPtrs::new([c"x"]);
        let envp = CPtrs::new([]);
        let spawned = spawn(&Spawn {
            candidates: &[c"/no/such/program", c"/no/such/either"],
            argv: &argv,
            envp: &envp,
            cwd: None,
            fds: &[],
        });
        assert_eq!(spawned, Err(SpawnError::Exec(ExecFailure::NotFound)));
        let spawned = spawn(&Spawn {
            candidates: &[c"/no/such/program", c"/"],
            argv: &argv,
            envp: &envp,
            cwd: None,
            fds: &[],
        });
        assert_eq!(
            spawned,
            Err(SpawnError::Exec(ExecFailure::Failed {
                index: 1,
                errno: Errno::EACCES
            }))
        );
        let spawned = spawn(&Spawn {
            candidates: &[c"/bin/true"],
            argv: &argv,
            envp: &envp,
            cwd: Some(c"/no/such/dir"),
            fds: &[],
        });
        assert_eq!(spawned, Err(SpawnError::Setup(Errno::ENOENT)));
    }
}
