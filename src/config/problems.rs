//! Configuration problems, collected: every part of the configuration is
//! read even when an earlier one failed, so one run reports every problem
//! (one exit 78), each naming where its value came from (the flag, the
//! variable or the default: [`Origins::label`]) and with its own hint.

use std::fmt;

use crate::cli::{Origins, ValueSource};
use crate::error::{ExitClass, Failure};
use crate::logging::LogOptions;

/// One thing wrong with the configuration, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    message: String,
    hint: String,
}

impl Problem {
    /// A problem; `message` names the option (with its origin), `hint` says
    /// what to do.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

/// Every problem of a configuration that cannot be used; exit 78.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
    /// The log options, when they were valid: the problems are then
    /// reported in the format asked for.
    log: Option<LogOptions>,
}

impl ConfigError {
    /// One problem.
    pub fn single(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
            log: None,
        }
    }

    /// The problems, in the order they were found (at least one).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The log options, if they were valid.
    pub fn log_options(&self) -> Option<LogOptions> {
        self.log
    }
}

impl fmt::Display for ConfigError {
    /// One problem: `invalid configuration: <message>`; several:
    /// `invalid configuration (2 problems): 1) <message>; 2) <message>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {}", one.message),
            all => {
                write!(f, "invalid configuration ({} problems): ", all.len())?;
                for (i, p) in all.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{}) {}", i + 1, p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Failure for ConfigError {
    /// Always [`ExitClass::Config`].
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    /// The problem's hint; with several, numbered as the problems are.
    fn hint(&self) -> Option<String> {
        match self.problems.as_slice() {
            [one] => Some(one.hint.clone()),
            all => Some(
                all.iter()
                    .enumerate()
                    .map(|(i, p)| format!("{}) {}", i + 1, p.hint))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

/// The problems found so far, and where each value came from.
#[derive(Debug)]
pub(super) struct Problems<'a> {
    origins: &'a Origins,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(origins: &'a Origins) -> Self {
        Self {
            origins,
            found: Vec::new(),
        }
    }

    /// Where the option with clap id `id` came from, for a message.
    pub(super) fn label(&self, id: &str) -> String {
        self.origins.label(id)
    }

    /// "neither --env nor `INFISICAL_ENVIRONMENT` is set" (or "none of …"
    /// for several options), for a missing value.
    pub(super) fn none_set(&self, ids: &[&str]) -> String {
        let ways: Vec<String> = ids.iter().flat_map(|id| self.origins.ways(id)).collect();
        match ways.as_slice() {
            [one] => format!("{one} is not given"),
            [a, b] => format!("neither {a} nor {b} is set"),
            all => format!("none of {} is set", all.join(", ")),
        }
    }

    /// Where the value of `id` came from (flag, variable, default).
    pub(super) fn source(&self, id: &str) -> Option<ValueSource> {
        self.origins.source(id)
    }

    /// Whether `id` was given (flag or variable).
    pub(super) fn given(&self, id: &str) -> bool {
        self.origins.given(id)
    }

    pub(super) fn push(&mut self, problem: Problem) {
        self.found.push(problem);
    }

    /// The value, or `None` with its problem recorded.
    pub(super) fn check<T>(&mut self, result: Result<T, Problem>) -> Option<T> {
        result.map_err(|p| self.push(p)).ok()
    }

    /// Parses the value of option `id` with `parse`, which gets the option's
    /// label for its message.
    pub(super) fn value<T>(
        &mut self,
        id: &str,
        parse: impl FnOnce(&str) -> Result<T, Problem>,
    ) -> Option<T> {
        let label = self.label(id);
        self.check(parse(&label))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The error: every problem found (at least one is expected; an empty
    /// list means a part failed without saying why, a bug).
    pub(super) fn into_error(self, log: Option<LogOptions>) -> ConfigError {
        let mut problems = self.found;
        if problems.is_empty() {
            problems.push(Problem::new(
                "a part of the configuration failed without a reason",
                crate::error::BUG_HINT,
            ));
        }
        ConfigError { problems, log }
    }
}
