//! Replace svid-exec with the program: `execvp` semantics (PATH lookup in the
//! *child's* environment, as the shell does) over `execve`, so nothing of the
//! launcher runs after a successful exec. Failure maps to 127 (not found) or
//! 126 (found, not executable), as shells and tini do.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::deliver::env::EnvPlan;
use crate::error::{ExitClass, Failure};

/// glibc's `PATH` when the variable is unset (`confstr(_CS_PATH)`).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// Why the program did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No candidate existed.
    #[error("command not found: {command}")]
    NotFound {
        /// The command as given.
        command: String,
    },
    /// A candidate existed but could not be executed.
    #[error("cannot execute {command}: {errno}")]
    CannotExecute {
        /// The command (resolved path when known).
        command: String,
        /// What `execve` said.
        errno: Errno,
    },
    /// The kernel refused the size of arguments + environment.
    #[error("cannot execute {command}: arguments and environment are too large (E2BIG)")]
    TooLarge {
        /// The command.
        command: String,
    },
}

impl Failure for ExecError {
    /// 127, 126, or 78 for `E2BIG`.
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::NotFound { .. } => ExitClass::CommandNotFound,
            Self::CannotExecute { .. } => ExitClass::CannotExecute,
            Self::TooLarge { .. } => ExitClass::Config,
        }
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::NotFound { .. } => {
                "check the command's name, and that it is on the child's PATH (or give its full path)"
            }
            Self::CannotExecute { errno: Errno::ENOEXEC, .. } => {
                "the file is not a binary the kernel can run: a script needs a `#!` line"
            }
            Self::CannotExecute { .. } => {
                "check the file's execute permission, its `#!` interpreter, and that it is not a directory"
            }
            Self::TooLarge { .. } => {
                "deliver large secrets as files (--files-dir DIR, with --no-env or --env-file-refs)"
            }
        };
        Some(hint.to_owned())
    }
}

/// What to do after one candidate failed, following glibc's `execvpe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Not there: try the next PATH entry.
    Continue,
    /// There but not permitted: remember, try the next entry (126 if none works).
    Denied,
    /// A definite failure for this file: stop.
    Stop,
}

fn after_failure(errno: Errno) -> Next {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT => {
            Next::Continue
        }
        Errno::EACCES => Next::Denied,
        _ => Next::Stop,
    }
}

/// Execs `program` with `args` and the planned environment. Returns only on
/// failure. Call it last: drop everything that holds secrets the child does not
/// need (the access token, the JWT) before; the `NAME=value` strings are built
/// here and zeroed if exec fails.
pub fn exec(program: &OsStr, args: &[OsString], env: &EnvPlan<'_>) -> ExecError {
    let shown = program.to_string_lossy().into_owned();
    let not_found = || ExecError::NotFound {
        command: shown.clone(),
    };
    if program.is_empty() {
        return not_found();
    }
    let Ok(c_args) = std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<CString>, _>>()
    else {
        // Unreachable from a real command line (argv strings cannot hold NUL).
        return ExecError::CannotExecute {
            command: shown,
            errno: Errno::EINVAL,
        };
    };
    let candidates = candidates(program.as_bytes(), env.path_var());
    let envp = env.to_envp();
    let envp = envp.as_cstrs();
    // The program must not inherit the SIGPIPE "ignore" of Rust's runtime.
    crate::sys::set_sigpipe_default(true);
    let error = try_candidates(candidates, &c_args, &envp, &shown);
    crate::sys::set_sigpipe_default(false);
    error
}

/// `execve` on each candidate in turn, as `execvp` does; returns the error to
/// report when none could be executed.
fn try_candidates(
    candidates: Vec<Vec<u8>>,
    c_args: &[CString],
    envp: &[&CStr],
    shown: &str,
) -> ExecError {
    let not_found = || ExecError::NotFound {
        command: shown.to_owned(),
    };
    let mut denied: Option<(String, Errno)> = None;
    for candidate in candidates {
        let Ok(path) = CString::new(candidate) else {
            continue;
        };
        let Err(errno) = nix::unistd::execve(path.as_c_str(), c_args, envp);
        match (errno, after_failure(errno)) {
            (Errno::E2BIG, _) => {
                return ExecError::TooLarge {
                    command: shown.to_owned(),
                }
            }
            (_, Next::Continue) => {}
            (_, Next::Denied) => {
                denied.get_or_insert_with(|| (display(&path), errno));
            }
            (_, Next::Stop) => {
                return ExecError::CannotExecute {
                    command: display(&path),
                    errno,
                }
            }
        }
    }
    match denied {
        Some((command, errno)) => ExecError::CannotExecute { command, errno },
        None => not_found(),
    }
}

fn display(path: &CStr) -> String {
    path.to_string_lossy().into_owned()
}

/// The files to try, in order: the command itself when it has a `/`, else each
/// PATH entry joined with it (an empty entry is the current directory).
fn candidates(program: &[u8], path_var: Option<&[u8]>) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    path_var
        .unwrap_or(DEFAULT_PATH)
        .split(|b| *b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut full = dir.to_vec();
            if !full.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend_from_slice(program);
            full
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::deliver::env::EnvOptions;
    use crate::deliver::env::EnvSource;
    use crate::secrets::SecretSet;

    fn plan_with_path<'a>(set: &'a SecretSet, path: &str) -> EnvPlan<'a> {
        let options = EnvOptions::default();
        EnvPlan::build(
            vec![("PATH".into(), path.into())],
            set,
            &options,
            EnvSource::Values,
        )
        .unwrap()
    }

    #[test]
    fn candidates_follow_execvp() {
        assert_eq!(candidates(b"./x", Some(b"/bin")), [b"./x".to_vec()]);
        assert_eq!(
            candidates(b"ls", Some(b"/a::/b/")),
            [b"/a/ls".to_vec(), b"./ls".to_vec(), b"/b/ls".to_vec()]
        );
        assert_eq!(
            candidates(b"ls", None),
            [b"/bin/ls".to_vec(), b"/usr/bin/ls".to_vec()]
        );
    }

    #[test]
    fn missing_command_is_127_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let set = SecretSet::new();
        let plan = plan_with_path(&set, dir.path().to_str().unwrap());
        let err = exec(OsStr::new("no-such-command-xyz"), &[], &plan);
        assert_eq!(err.exit_class(), ExitClass::CommandNotFound);
        assert!(err.to_string().contains("no-such-command-xyz"));
        let err = exec(OsStr::new("/nonexistent/dir/cmd"), &[], &plan);
        assert_eq!(err.exit_class(), ExitClass::CommandNotFound);
    }

    #[test]
    fn lookup_uses_the_childs_path_not_ours() {
        // `sh` exists on our PATH but not on the child's (an empty directory).
        let dir = tempfile::tempdir().unwrap();
        let set = SecretSet::new();
        let plan = plan_with_path(&set, dir.path().to_str().unwrap());
        assert_eq!(
            exec(OsStr::new("sh"), &[], &plan).exit_class(),
            ExitClass::CommandNotFound
        );
    }

    #[test]
    fn non_executable_file_directory_and_non_binary_are_126() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let set = SecretSet::new();
        let plan = plan_with_path(&set, dir.path().to_str().unwrap());
        // Root may execute a 0644 file only if some x bit is set, so EACCES holds for root too.
        for (cmd, what) in [
            (script.as_os_str(), "by path"),
            (OsStr::new("script"), "through PATH"),
            (garbage.as_os_str(), "not a binary"),
            (sub.as_os_str(), "a directory"),
        ] {
            let err = exec(cmd, &[], &plan);
            assert_eq!(err.exit_class(), ExitClass::CannotExecute, "{what}: {err}");
            assert!(err.to_string().contains("cannot execute"), "{what}: {err}");
        }
    }

    /// Set in the environment of the subprocess that runs [`exec_helper`].
    const HELPER: &str = "SVID_EXEC_TEST_EXEC_HELPER";
    const MARKER: &str = "--- exec ---";

    /// Runs in a subprocess (see the test below): execs `env -0` through the
    /// child's PATH with a planned environment. Returning from `exec` is a failure.
    #[test]
    #[ignore = "helper: run in a subprocess by exec_replaces_the_process_and_the_child_sees_exactly_the_plan"]
    fn exec_helper() {
        if std::env::var_os(HELPER).is_none() {
            return;
        }
        let mut set = SecretSet::new();
        set.insert(
            "PEM",
            secrecy::SecretString::from("-----BEGIN-----\nAB=\n-----END-----\n"),
        );
        set.insert("HOME", secrecy::SecretString::from("from-secret"));
        set.insert("UNICODE", secrecy::SecretString::from("héllo ✓ 'q' \"d\""));
        let options = EnvOptions::default();
        let plan = EnvPlan::build(
            crate::deliver::env::inherited(),
            &set,
            &options,
            EnvSource::Values,
        )
        .unwrap();
        // Everything after this marker on stdout is the exec'd program's.
        println!("\n{MARKER}");
        let err = exec(OsStr::new("env"), &[OsString::from("-0")], &plan);
        panic!("exec returned: {err}");
    }

    #[test]
    fn exec_replaces_the_process_and_the_child_sees_exactly_the_plan() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "launch::exec::tests::exec_helper",
                "--ignored",
                "--nocapture",
            ])
            .env_clear()
            .env(HELPER, "1")
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root")
            .env("INFISICAL_API_URL", "bootstrap")
            .env("SPIFFE_ENDPOINT_SOCKET", "unix:///x")
            .env("KEEP", "kept")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, env_output) = stdout
            .split_once(&format!("{MARKER}\n"))
            .expect("the helper ran");
        let mut vars: Vec<&str> = env_output.split('\0').filter(|v| !v.is_empty()).collect();
        vars.sort_unstable();
        assert_eq!(
            vars,
            [
                "HOME=from-secret",
                "KEEP=kept",
                "PATH=/usr/bin:/bin",
                "PEM=-----BEGIN-----\nAB=\n-----END-----\n",
                "UNICODE=héllo ✓ 'q' \"d\"",
            ]
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("exec returned"));
    }

    #[test]
    fn errno_classification_matches_execvp() {
        assert_eq!(after_failure(Errno::ENOENT), Next::Continue);
        assert_eq!(after_failure(Errno::ENOTDIR), Next::Continue);
        assert_eq!(after_failure(Errno::EACCES), Next::Denied);
        assert_eq!(after_failure(Errno::ENOEXEC), Next::Stop);
        assert_eq!(after_failure(Errno::ETXTBSY), Next::Stop);
    }
}
