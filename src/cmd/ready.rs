//! `svid-exec ready --dir DIR [--max-age DUR]`: the exec probe. It runs every
//! few seconds in every pod, so it does only what the answer needs: no
//! configuration beyond its two flags, no logging, no runtime, no network; it
//! reads DIR's `..svid-exec` and `..data` (`deliver::files::state::inspect`)
//! and never a secret. 0 ready, 69 not yet (one line on stdout saying why),
//! 78 not an svid-exec target (the error printer's message and hint).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::{print_stdout, CmdError};
use crate::cli::ReadyArgs;
use crate::deliver::files::state::{inspect, Inspection, TargetState};
use crate::error::{ExitClass, Failure};

/// Why `ready` cannot answer 0 or 69: exit 78.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// `--max-age` is not a duration.
    #[error("invalid --max-age {value:?}: {reason}")]
    MaxAge { value: String, reason: String },
    /// DIR is not a directory svid-exec writes.
    #[error("{0}")]
    NotATarget(String),
    /// No DIR (a missing required option is a configuration error, 78,
    /// like every other command's; clap would have answered 2).
    #[error("no directory to probe: neither --dir nor SVID_EXEC_FILES_DIR is set")]
    NoDir,
}

impl Failure for ReadyError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::MaxAge { .. } => "use a duration such as 90s, 5m or 1h".to_owned(),
            Self::NoDir => "give the directory that `write --dir` or --files-dir fills: \
                            ready --dir DIR"
                .to_owned(),
            Self::NotATarget(_) => "point --dir at the directory that `write --dir` or \
                                    --files-dir fills, and probe as the user svid-exec runs as"
                .to_owned(),
        })
    }
}

/// Answers the probe.
pub(super) fn ready(args: &ReadyArgs) -> Result<ExitCode, CmdError> {
    let max_age = args.max_age.as_deref().map(parse_max_age).transpose()?;
    let dir = args
        .dir
        .as_deref()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or(ReadyError::NoDir)?;
    let (code, line) = match inspect(dir) {
        Inspection::NotOurs(why) => return Err(ReadyError::NotATarget(why).into()),
        Inspection::NotYet(why) => (ExitClass::Unavailable.code(), format!("not ready: {why}")),
        Inspection::Current(state) => answer(&dir.display().to_string(), &state, max_age),
    };
    print_stdout(format!("{line}\n").as_bytes())?;
    Ok(ExitCode::from(code))
}

fn parse_max_age(raw: &str) -> Result<Duration, ReadyError> {
    let invalid = |reason: String| ReadyError::MaxAge {
        value: raw.to_owned(),
        reason,
    };
    let age = humantime::parse_duration(raw.trim()).map_err(|e| invalid(e.to_string()))?;
    if age.is_zero() {
        return Err(invalid("it must be longer than zero".to_owned()));
    }
    Ok(age)
}

/// 0 with what is there, or 69 when it is older than `max_age`.
fn answer(dir: &str, state: &TargetState, max_age: Option<Duration>) -> (u8, String) {
    let now = SystemTime::now();
    // A clock stepped back makes a time look as if it were in the future: that
    // is "just now", not "stale".
    let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    let ago = |t: SystemTime| {
        format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(age(t).as_secs()))
        )
    };
    let mut what = format!(
        "{dir} holds {} written {}",
        plural(state.secrets),
        ago(state.written)
    );
    if let Some(confirmed) = state.confirmed {
        let _ = write!(what, ", confirmed unchanged {}", ago(confirmed));
    }
    match max_age {
        Some(max) if age(state.fresh_at()) > max => (
            ExitClass::Unavailable.code(),
            format!(
                "not ready: {what}: older than --max-age {} (is svid-exec still running and \
                 reaching Infisical?)",
                humantime::format_duration(max)
            ),
        ),
        _ => (0, format!("ready: {what}")),
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 secret".to_owned()
    } else {
        format!("{n} secrets")
    }
}
