//! Where each option applies: one table, flag -> the commands and modes
//! (`--watch` or not) in which it has an effect. An option not in the table
//! applies everywhere. The table decides three things, so they cannot drift
//! apart: a flag given where it cannot apply is refused (78, naming where it
//! does apply); a variable that cannot apply is ignored (so one environment
//! serves `run`, `write` and `check`); and a command's `--help` lists only
//! the options that apply to it in some mode.
//!
//! `check` diagnoses the configuration a `run` or `write` would use, so it
//! takes every option that applies to `run` or `write` in the same mode
//! (`check --watch` takes `--stop-signal`; `check` alone does not).

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use super::Rejected;

/// A set of the four things a configuration can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes(u8);

impl Modes {
    /// `run` without `--watch` (exec).
    pub const RUN_ONCE: Self = Self(1);
    /// `run --watch` (supervise a child).
    pub const RUN_WATCH: Self = Self(2);
    /// `write` without `--watch` (write and exit).
    pub const WRITE_ONCE: Self = Self(4);
    /// `write --watch` (keep files fresh, no child).
    pub const WRITE_WATCH: Self = Self(8);
    /// `run`, with or without `--watch`.
    pub const RUN: Self = Self::RUN_ONCE.or(Self::RUN_WATCH);
    /// `write`, with or without `--watch`.
    pub const WRITE: Self = Self::WRITE_ONCE.or(Self::WRITE_WATCH);
    /// `--watch`, with `run` or `write`.
    pub const WATCH: Self = Self::RUN_WATCH.or(Self::WRITE_WATCH);
    /// Everywhere.
    pub const ALL: Self = Self::RUN.or(Self::WRITE);

    /// The union.
    #[must_use]
    pub const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the two sets share a mode.
    pub const fn meets(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// "run --watch", "run or write --watch", "write without --watch"…
    pub fn describe(self) -> String {
        let one = |once: Self, watch: Self, name: &str| match (self.meets(once), self.meets(watch))
        {
            (true, true) => Some(name.to_owned()),
            (true, false) => Some(format!("{name} without --watch")),
            (false, true) => Some(format!("{name} --watch")),
            (false, false) => None,
        };
        let parts: Vec<String> = [
            one(Self::RUN_ONCE, Self::RUN_WATCH, "run"),
            one(Self::WRITE_ONCE, Self::WRITE_WATCH, "write"),
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join(" or ")
    }
}

/// Where each option applies, by its long name; an option not listed here
/// applies everywhere. Adding an option that does not apply everywhere is
/// one row (and `check` follows by itself).
pub const WHERE: &[(&str, Modes)] = &[
    // The program's environment: only `run` starts a program.
    ("no-env", Modes::RUN),
    ("env-prefix", Modes::RUN),
    ("no-override", Modes::RUN),
    ("env-file-refs", Modes::RUN),
    // Memfds are inherited by a program: only `run` starts one.
    ("memfd", Modes::RUN),
    // Not rows: `--fallback-dir` and `--fallback-max-age` apply everywhere.
    // `run`, `write` and both `--watch` modes store each fetched set and
    // start from the cached one during an outage. `check` takes them to
    // check the directory (created, ours, 0700, memory-backed) and never
    // starts from the cache: a check passing on cached secrets would hide
    // the outage it is there to find.
    // The supervisor: polling and memory locking for both `--watch` modes,
    // the child's handling only where there is a child.
    ("poll-interval", Modes::WATCH),
    ("mlock", Modes::WATCH),
    ("on-change", Modes::RUN_WATCH),
    ("stop-signal", Modes::RUN_WATCH),
    ("stop-timeout", Modes::RUN_WATCH),
    ("forward-to", Modes::RUN_WATCH),
    // Readiness: `run` without `--watch` execs the program and is gone, so
    // nothing would remove the file once the program ends.
    ("ready-file", Modes::RUN_WATCH.or(Modes::WRITE)),
    // The loader and shell hooks are refused in the program's environment.
    ("allow-env-name", Modes::RUN),
    // A one-shot token only: the supervisor revokes every token it replaces
    // and the last one when it stops, whatever the flag says.
    ("no-revoke", Modes::RUN_ONCE.or(Modes::WRITE_ONCE)),
];

/// Where the option with this long name applies.
pub fn modes_of(long: &str) -> Modes {
    WHERE
        .iter()
        .find(|(flag, _)| *flag == long)
        .map_or(Modes::ALL, |(_, modes)| *modes)
}

/// The command being configured and whether `--watch` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// `run`, `write` or `check`.
    pub command: &'static str,
    /// `--watch` (from its flag or `SVID_EXEC_WATCH`).
    pub watch: bool,
}

impl Context {
    /// The modes this context stands for: `check` for those of `run` and
    /// `write` alike.
    pub fn modes(self) -> Modes {
        let (once, watch) = match self.command {
            "run" => (Modes::RUN_ONCE, Modes::RUN_WATCH),
            "write" => (Modes::WRITE_ONCE, Modes::WRITE_WATCH),
            _ => (
                Modes::RUN_ONCE.or(Modes::WRITE_ONCE),
                Modes::RUN_WATCH.or(Modes::WRITE_WATCH),
            ),
        };
        if self.watch {
            watch
        } else {
            once
        }
    }

    /// "run", "write --watch", "check without --watch"…
    pub fn describe(self) -> String {
        if self.watch {
            format!("{} --watch", self.command)
        } else if self.command == "write" || self.command == "run" {
            format!("{} without --watch", self.command)
        } else {
            self.command.to_owned()
        }
    }

    /// The same command with `--watch` flipped.
    #[must_use]
    pub fn toggled(self) -> Self {
        Self {
            watch: !self.watch,
            ..self
        }
    }

    /// The modes of this command with or without `--watch`.
    fn any_watch(self) -> Modes {
        self.modes().or(self.toggled().modes())
    }
}

/// An option given where it does not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfPlace {
    /// `--stop-signal`.
    pub flag: String,
    /// Its variable, when it came from there (then it is ignored).
    pub variable: Option<String>,
    /// Where it was given.
    pub context: Context,
    /// Where it applies.
    pub applies: Modes,
}

impl OutOfPlace {
    /// What is wrong: "--stop-signal does not apply to write without --watch
    /// (only to run --watch)".
    pub fn problem(&self) -> String {
        let given = match &self.variable {
            Some(variable) => format!("{variable} ({})", self.flag),
            None => self.flag.clone(),
        };
        // "write", not "write without --watch", when no mode of write would do.
        let context = if self.applies.meets(self.context.any_watch()) {
            self.context.describe()
        } else {
            self.context.command.to_owned()
        };
        format!(
            "{given} does not apply to {context} (only to {})",
            self.applies.describe()
        )
    }

    /// What to do: add or drop `--watch` when that is all it takes, else drop
    /// the flag.
    pub fn hint(&self) -> String {
        if self.applies.meets(self.context.toggled().modes()) {
            let change = if self.context.watch {
                "drop --watch"
            } else {
                "add --watch"
            };
            format!("{change}, or drop {}", self.flag)
        } else {
            format!("drop {} (it is for {})", self.flag, self.applies.describe())
        }
    }
}

/// The options of the matched subcommand that do not apply to it in its
/// mode (given by flag or by variable), and the ids of those given by
/// variable, which parsing drops. `rejected`: the variables that held no
/// valid value and were dropped before parsing; one whose option does not
/// apply is ignored like any variable that does not apply.
pub fn out_of_place(
    cmd: &Command,
    matches: &ArgMatches,
    rejected: &[Rejected],
) -> (Vec<OutOfPlace>, Vec<String>) {
    let mut found = Vec::new();
    let mut drop_env = Vec::new();
    let Some((name, sub_matches)) = matches.subcommand() else {
        return (found, drop_env);
    };
    let (Some(sub), Some(command)) = (
        cmd.find_subcommand(name),
        ["run", "write", "check"].into_iter().find(|c| *c == name),
    ) else {
        return (found, drop_env);
    };
    let context = Context {
        command,
        watch: sub_matches.get_flag("watch"),
    };
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let applies = modes_of(long);
        if applies.meets(context.modes()) {
            continue;
        }
        let id = arg.get_id().as_str();
        let variable = match sub_matches.value_source(id) {
            Some(ValueSource::CommandLine) => None,
            Some(ValueSource::EnvVariable) => {
                drop_env.push(id.to_owned());
                arg.get_env().map(|v| v.to_string_lossy().into_owned())
            }
            _ => match rejected.iter().find(|r| r.id == id) {
                Some(r) => Some(r.variable.clone()),
                None => continue,
            },
        };
        found.push(OutOfPlace {
            flag: format!("--{long}"),
            variable,
            context,
            applies,
        });
    }
    (found, drop_env)
}

/// `cmd` with the variables of `ids` (arguments of the matched subcommand)
/// no longer read.
pub fn without_env(cmd: Command, matches: &ArgMatches, ids: &[String]) -> Command {
    let Some((name, _)) = matches.subcommand() else {
        return cmd;
    };
    cmd.mut_subcommand(name, |sub| {
        ids.iter()
            .fold(sub, |sub, id| sub.mut_arg(id, |arg| arg.env(None)))
    })
}

/// Puts the table into each command's help: an option that applies to the
/// command in no mode is hidden (`write --help` does not list `--env-prefix`;
/// it is still parsed, so that giving one is refused with a message saying
/// where it applies), and an option that applies only in some places says
/// where (`[applies to: run --watch]`, a line the docs' drift test reads).
pub fn annotate(cmd: Command) -> Command {
    let mut cmd = cmd;
    for command in ["run", "write", "check"] {
        let context = Context {
            command,
            watch: false,
        };
        // One pass over the arguments, in place: folding `mut_arg` over the
        // limited ones moved the whole subcommand by value once per argument
        // (15% of a launch's instructions, callgrind, twice per launch).
        cmd = cmd.mut_subcommand(command, |sub| {
            sub.mut_args(|arg| {
                let Some(modes) = arg.get_long().map(modes_of) else {
                    return arg;
                };
                if modes == Modes::ALL {
                    return arg;
                }
                if !modes.meets(context.any_watch()) {
                    return arg.hide(true);
                }
                let help = arg
                    .get_long_help()
                    .or_else(|| arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let note = format!("[applies to: {}]", modes.describe());
                arg.long_help(format!("{help}\n\n{note}"))
            })
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(command: &'static str, watch: bool) -> Context {
        Context { command, watch }
    }

    #[test]
    fn every_row_names_an_option_of_run_write_or_check() {
        let cli = crate::cli::command();
        for (flag, _) in WHERE {
            let known = ["run", "write", "check"].iter().any(|name| {
                cli.find_subcommand(name)
                    .is_some_and(|s| s.get_arguments().any(|a| a.get_long() == Some(flag)))
            });
            assert!(known, "the table names --{flag}, which no command has");
        }
    }

    /// The table as a table: each option of the table (and some that are
    /// not in it, which apply everywhere) in each of the six contexts.
    #[test]
    fn where_each_option_applies() {
        let contexts = [
            ctx("run", false),
            ctx("run", true),
            ctx("write", false),
            ctx("write", true),
            ctx("check", false),
            ctx("check", true),
        ];
        // run, run --watch, write, write --watch, check, check --watch
        let expected: &[(&str, [bool; 6])] = &[
            ("api-url", [true; 6]),
            ("only", [true; 6]),
            ("watch", [true; 6]),
            ("no-env", [true, true, false, false, true, true]),
            ("env-prefix", [true, true, false, false, true, true]),
            ("no-override", [true, true, false, false, true, true]),
            ("env-file-refs", [true, true, false, false, true, true]),
            ("poll-interval", [false, true, false, true, false, true]),
            ("mlock", [false, true, false, true, false, true]),
            ("on-change", [false, true, false, false, false, true]),
            ("stop-signal", [false, true, false, false, false, true]),
            ("stop-timeout", [false, true, false, false, false, true]),
            ("forward-to", [false, true, false, false, false, true]),
            ("ready-file", [false, true, true, true, true, true]),
            ("ca-cert-only", [true; 6]),
            ("workload-api-socket", [true; 6]),
            ("template", [true; 6]),
            ("memfd", [true, true, false, false, true, true]),
            ("fallback-dir", [true; 6]),
            ("fallback-max-age", [true; 6]),
            ("allow-env-name", [true, true, false, false, true, true]),
            ("no-revoke", [true, false, true, false, true, false]),
        ];
        for (flag, row) in expected {
            for (context, applies) in contexts.iter().zip(row) {
                assert_eq!(
                    modes_of(flag).meets(context.modes()),
                    *applies,
                    "--{flag} in {context:?}"
                );
            }
        }
        assert_eq!(
            WHERE.len(),
            expected.iter().filter(|(_, row)| *row != [true; 6]).count(),
            "a new row of WHERE needs a line in this test"
        );
    }

    #[test]
    fn messages_name_where_an_option_applies_and_what_to_change() {
        let stop = OutOfPlace {
            flag: "--stop-signal".into(),
            variable: None,
            context: ctx("write", false),
            applies: modes_of("stop-signal"),
        };
        assert_eq!(
            stop.problem(),
            "--stop-signal does not apply to write (only to run --watch)"
        );
        assert_eq!(stop.hint(), "drop --stop-signal (it is for run --watch)");
        let poll = OutOfPlace {
            flag: "--poll-interval".into(),
            variable: Some("SVID_EXEC_POLL_INTERVAL".into()),
            context: ctx("run", false),
            applies: modes_of("poll-interval"),
        };
        assert_eq!(
            poll.problem(),
            "SVID_EXEC_POLL_INTERVAL (--poll-interval) does not apply to run without --watch \
             (only to run --watch or write --watch)"
        );
        assert_eq!(poll.hint(), "add --watch, or drop --poll-interval");
        let ready = OutOfPlace {
            flag: "--ready-file".into(),
            variable: None,
            context: ctx("run", false),
            applies: modes_of("ready-file"),
        };
        assert_eq!(
            ready.problem(),
            "--ready-file does not apply to run without --watch (only to run --watch or write)"
        );
        assert_eq!(ready.hint(), "add --watch, or drop --ready-file");
        assert_eq!(Modes::RUN.describe(), "run");
        assert_eq!(Modes::ALL.describe(), "run or write");
        assert_eq!(
            Modes::RUN_ONCE.or(Modes::WRITE).describe(),
            "run without --watch or write"
        );
    }
}
