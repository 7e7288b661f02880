//! The error contract: [`ExitClass`], the one place where a failure becomes an
//! exit code (`shared/reference/cli-contract.md`, "Exit status"), and
//! [`Failure`], what every module's error says about itself besides its
//! message: its exit class and, kept apart from the message, what to check.

/// The class of a failure that happened before (or instead of) the child's own exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitClass {
    /// Unknown flag or missing required option (clap's own code).
    Usage,
    /// The Workload API or Infisical could not be reached before the deadline.
    Unavailable,
    /// A bug in svid-exec.
    Internal,
    /// The JWT-SVID was rejected at login, or the identity may not read what was asked.
    Refused,
    /// Invalid value, missing project/env/path, invalid secret name, environment
    /// too large for exec, non-tmpfs target.
    Config,
    /// The command exists but could not be executed.
    CannotExecute,
    /// The command was not found.
    CommandNotFound,
}

impl ExitClass {
    /// The documented exit code of this class.
    pub const fn code(self) -> u8 {
        match self {
            Self::Usage => 2,
            Self::Unavailable => 69,
            Self::Internal => 70,
            Self::Refused => 77,
            Self::Config => 78,
            Self::CannotExecute => 126,
            Self::CommandNotFound => 127,
        }
    }
}

/// What every module error implements. The message (`Display`) says what
/// failed and why; the hint, never part of the message, says what to check,
/// so a report can show the two apart (`check`'s steps, the JSON log).
pub trait Failure: std::error::Error {
    /// The class of this failure, hence the exit code.
    fn exit_class(&self) -> ExitClass;

    /// What to check, when there is something to say.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// The hint of every [`ExitClass::Internal`] failure.
pub const BUG_HINT: &str = "this is a bug in svid-exec, please report it";

/// `a: b: c` for an error and its causes, skipping causes already quoted by their parent.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

/// The chain, then the hint: for a log line that carries a failure in one
/// string (the supervisor's reasons); reports print the two apart.
pub fn chain_and_hint(err: &(dyn Failure + 'static)) -> String {
    let mut out = chain(err);
    if let Some(hint) = err.hint() {
        out.push_str(" (hint: ");
        out.push_str(&hint);
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ExitClass;

    #[test]
    fn exit_codes_match_the_contract() {
        let table = [
            (ExitClass::Usage, 2),
            (ExitClass::Unavailable, 69),
            (ExitClass::Internal, 70),
            (ExitClass::Refused, 77),
            (ExitClass::Config, 78),
            (ExitClass::CannotExecute, 126),
            (ExitClass::CommandNotFound, 127),
        ];
        for (class, code) in table {
            assert_eq!(class.code(), code, "{class:?}");
        }
    }
}
