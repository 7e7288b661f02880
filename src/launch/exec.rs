//! Replace svid-exec with the program: `execvp` semantics over `execve`, so
//! nothing of the launcher runs after a successful exec. The program is looked
//! up in the launcher's own `PATH`, never the child's: what the user typed is
//! what runs, whatever `PATH` the secrets deliver. Failure maps to 127 (not
//! found) or 126 (found, not executable), as shells and tini do. The lookup and
//! the error mapping are shared with the supervisor's spawn.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::deliver::env::EnvPlan;
use crate::error::{ExitClass, Failure};
use crate::sys::{self, CPtrs, ExecFailure};

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
                "check the command's name, and that it is on svid-exec's own PATH (or give its full path)"
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

/// The program's command line as C strings (argv strings cannot hold NUL:
/// `None` is unreachable from a real command line).
pub fn argv(program: &OsStr, args: &[OsString]) -> Option<Vec<CString>> {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| CString::new(a.as_bytes()).ok())
        .collect()
}

/// The files to try for `program`, in order: the program itself when it has
/// a `/`, else each entry of svid-exec's own `PATH` joined with it (an empty
/// entry is the current directory). Never the child's `PATH`: a secret named
/// `PATH` must not decide which program runs.
pub fn candidates(program: &OsStr) -> Vec<CString> {
    let path = std::env::var_os("PATH");
    candidates_in(program.as_bytes(), path.as_deref().map(OsStr::as_bytes))
        .into_iter()
        .filter_map(|c| CString::new(c).ok())
        .collect()
}

/// The error to report for `failure`, `candidates` being what was tried.
pub fn exec_error(failure: ExecFailure, program: &OsStr, candidates: &[CString]) -> ExecError {
    let shown = program.to_string_lossy().into_owned();
    match failure {
        ExecFailure::NotFound => ExecError::NotFound { command: shown },
        ExecFailure::Failed {
            errno: Errno::E2BIG,
            ..
        } => ExecError::TooLarge { command: shown },
        ExecFailure::Failed { index, errno } => ExecError::CannotExecute {
            command: candidates
                .get(index)
                .map_or(shown, |c| c.to_string_lossy().into_owned()),
            errno,
        },
    }
}

/// Execs `program` with `args` and the planned environment. Returns only on
/// failure. Call it last: drop everything that holds secrets the child does not
/// need (the access token, the JWT) before; the `NAME=value` strings are built
/// here and zeroed if exec fails.
pub fn exec(program: &OsStr, args: &[OsString], env: &EnvPlan<'_>) -> ExecError {
    if program.is_empty() {
        return exec_error(ExecFailure::NotFound, program, &[]);
    }
    let Some(c_args) = argv(program, args) else {
        return ExecError::CannotExecute {
            command: program.to_string_lossy().into_owned(),
            errno: Errno::EINVAL,
        };
    };
    let candidates = candidates(program);
    let paths: Vec<&std::ffi::CStr> = candidates.iter().map(CString::as_c_str).collect();
    let envp = env.to_envp();
    let argv_ptrs = CPtrs::new(c_args.iter().map(CString::as_c_str));
    let envp_ptrs = CPtrs::new(envp.as_cstrs());
    sys::exec_state(true);
    let failure = sys::exec_first(&paths, &argv_ptrs, &envp_ptrs);
    sys::exec_state(false);
    exec_error(failure, program, &candidates)
}

/// The candidate files for `program` over `path_var` (`None`: glibc's default).
fn candidates_in(program: &[u8], path_var: Option<&[u8]>) -> Vec<Vec<u8>> {
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

    fn plan(set: &SecretSet) -> EnvPlan<'_> {
        EnvPlan::build(Vec::new(), set, &EnvOptions::default(), EnvSource::Values).unwrap()
    }

    #[test]
    fn candidates_follow_execvp() {
        assert_eq!(candidates_in(b"./x", Some(b"/bin")), [b"./x".to_vec()]);
        assert_eq!(
            candidates_in(b"ls", Some(b"/a::/b/")),
            [b"/a/ls".to_vec(), b"./ls".to_vec(), b"/b/ls".to_vec()]
        );
        assert_eq!(
            candidates_in(b"ls", None),
            [b"/bin/ls".to_vec(), b"/usr/bin/ls".to_vec()]
        );
    }

    #[test]
    fn missing_command_is_127_naming_it() {
        let set = SecretSet::new();
        let plan = plan(&set);
        let err = exec(OsStr::new("no-such-command-xyz"), &[], &plan);
        assert_eq!(err.exit_class(), ExitClass::CommandNotFound);
        assert!(err.to_string().contains("no-such-command-xyz"));
        let err = exec(OsStr::new("/nonexistent/dir/cmd"), &[], &plan);
        assert_eq!(err.exit_class(), ExitClass::CommandNotFound);
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
        let plan = plan(&set);
        // Root may execute a 0644 file only if some x bit is set, so EACCES holds for root too.
        for (cmd, what) in [
            (script.as_os_str(), "by path"),
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
    /// subprocess's own PATH with a planned environment. Returning from `exec` is a failure.
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
        use crate::sys::after_exec_failure;
        assert_eq!(after_exec_failure(Errno::ENOENT), None);
        assert_eq!(after_exec_failure(Errno::ENOTDIR), None);
        assert_eq!(after_exec_failure(Errno::EACCES), Some(true));
        assert_eq!(after_exec_failure(Errno::ENOEXEC), Some(false));
        assert_eq!(after_exec_failure(Errno::ETXTBSY), Some(false));
    }
}
