//! Where each value came from (its flag, its environment variable or its
//! default), so that every configuration error can name the source the user
//! has to change: `SVID_EXEC_CA_CERT (--ca-cert): /etc/ca.pem does not exist`.
//! A boolean option's variable that holds no boolean (`SVID_EXEC_WATCH=maybe`)
//! is recorded here too, as its origin with the value that was refused
//! ([`rejected_booleans`]), so that it is a configuration problem (78) naming
//! the variable, like every other invalid value, rather than clap's usage
//! error (2), which stays for the command line.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use clap::builder::{BoolishValueParser, TypedValueParser as _};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// One option: its names and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// `--ca-cert`.
    flag: String,
    /// `SVID_EXEC_CA_CERT`.
    variable: Option<String>,
    /// `None`: not given and no default.
    source: Option<ValueSource>,
    /// The variable's value, when it was refused ([`Rejected`]).
    rejected: Option<String>,
}

/// A boolean option whose variable is set to something that is not a
/// boolean (clap's `BoolishValueParser` refuses it: `maybe`, `2`, `enabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The clap id (`watch`).
    pub id: String,
    /// `SVID_EXEC_WATCH`.
    pub variable: String,
    /// The value, as text.
    pub value: String,
}

/// The boolean options of `run`, `write` and `check` whose variable holds no
/// boolean. Read before parsing (which would stop at the first with clap's
/// usage error); parsing then goes on without those variables (as if unset),
/// and the configuration reports each one. An empty variable counts as unset,
/// as clap has it.
pub fn rejected_booleans(cmd: &Command) -> Vec<Rejected> {
    // Usually no boolean variable is set: then nothing is cloned or built.
    let set = |arg: &clap::Arg| {
        matches!(arg.get_action(), ArgAction::SetTrue)
            && arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| !v.is_empty())
    };
    let any_set = ["run", "write", "check"]
        .iter()
        .filter_map(|name| cmd.find_subcommand(name))
        .any(|sub| sub.get_arguments().any(set));
    if !any_set {
        return Vec::new();
    }
    // clap's parser describes the argument in its error, which needs it built.
    let mut cmd = cmd.clone();
    cmd.build();
    let mut found: Vec<Rejected> = Vec::new();
    for sub in ["run", "write", "check"]
        .iter()
        .filter_map(|name| cmd.find_subcommand(name))
    {
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            let (ArgAction::SetTrue, Some(variable)) = (arg.get_action(), arg.get_env()) else {
                continue;
            };
            let Some(value) = std::env::var_os(variable).filter(|v| !v.is_empty()) else {
                continue;
            };
            let parsed = BoolishValueParser::new().parse_ref(sub, Some(arg), OsStr::new(&value));
            if parsed.is_err() && found.iter().all(|r| r.id != id) {
                found.push(Rejected {
                    id: id.to_owned(),
                    variable: variable.to_string_lossy().into_owned(),
                    value: value.to_string_lossy().into_owned(),
                });
            }
        }
    }
    found
}

/// `cmd` with the variables of `rejected` no longer read, by every command.
pub fn without_rejected(cmd: Command, rejected: &[Rejected]) -> Command {
    if rejected.is_empty() {
        return cmd;
    }
    ["run", "write", "check"].iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| {
            rejected.iter().fold(sub, |sub, r| {
                if sub.get_arguments().any(|a| a.get_id() == r.id.as_str()) {
                    sub.mut_arg(&r.id, |arg| arg.env(None))
                } else {
                    sub
                }
            })
        })
    })
}

/// The origin of every option of one command, by clap id (the field name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    by_id: BTreeMap<String, Origin>,
}

impl Origins {
    /// The origins of `matches`, the matches of the subcommand `cmd`.
    pub fn new(cmd: &Command, matches: &ArgMatches) -> Self {
        let by_id = cmd
            .get_arguments()
            .filter_map(|arg| {
                let long = arg.get_long()?;
                let id = arg.get_id().as_str();
                let origin = Origin {
                    flag: format!("--{long}"),
                    variable: arg.get_env().map(|v| v.to_string_lossy().into_owned()),
                    source: matches.value_source(id),
                    rejected: None,
                };
                Some((id.to_owned(), origin))
            })
            .collect();
        Self { by_id }
    }

    /// The option as the user set it, for messages: `--file-mode` (the
    /// command line), `SVID_EXEC_FILE_MODE (--file-mode)` (the environment)
    /// or `--file-mode (default)`. An unknown id is shown as `--id`.
    pub fn label(&self, id: &str) -> String {
        match self.by_id.get(id) {
            Some(o) => match (&o.source, &o.variable) {
                (Some(ValueSource::EnvVariable), Some(variable)) => {
                    format!("{variable} ({})", o.flag)
                }
                (Some(ValueSource::DefaultValue), _) => format!("{} (default)", o.flag),
                _ => o.flag.clone(),
            },
            None => format!("--{}", id.replace('_', "-")),
        }
    }

    /// [`Origins::label`] of the option whose flag is `flag` (`--ca-cert`),
    /// for a part that names its options by flag; an unknown flag as is.
    pub fn label_of_flag(&self, flag: &str) -> String {
        self.by_id
            .iter()
            .find(|(_, o)| o.flag == flag)
            .map_or_else(|| flag.to_owned(), |(id, _)| self.label(id))
    }

    /// The ways to set the option, for a value that is missing:
    /// `["--identity-id", "INFISICAL_MACHINE_IDENTITY_ID"]`.
    pub fn ways(&self, id: &str) -> Vec<String> {
        match self.by_id.get(id) {
            Some(o) => std::iter::once(o.flag.clone())
                .chain(o.variable.clone())
                .collect(),
            None => vec![format!("--{}", id.replace('_', "-"))],
        }
    }

    /// Where the option's value came from; `None` when it has none.
    pub fn source(&self, id: &str) -> Option<ValueSource> {
        self.by_id.get(id).and_then(|o| o.source)
    }

    /// The option's flag (`--watch`), if the command has it.
    pub fn flag(&self, id: &str) -> Option<&String> {
        self.by_id.get(id).map(|o| &o.flag)
    }

    /// Records that the variable of `rejected` held a value that is not
    /// valid for it (parsing went on without it: the option has its default).
    pub fn reject(&mut self, rejected: Rejected) {
        if let Some(o) = self.by_id.get_mut(&rejected.id) {
            o.source = Some(ValueSource::EnvVariable);
            o.variable = Some(rejected.variable);
            o.rejected = Some(rejected.value);
        }
    }

    /// The options whose variable was refused, with the value it held, by id.
    pub fn rejected(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_id
            .iter()
            .filter_map(|(id, o)| Some((id.as_str(), o.rejected.as_deref()?)))
    }

    /// Whether the option was given at all (flag or variable), even empty.
    pub fn given(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|o| {
            matches!(
                o.source,
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
    }
}
