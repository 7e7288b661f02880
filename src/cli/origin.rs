//! Where each value came from (its flag, its environment variable or its
//! default), so that every configuration error can name the source the user
//! has to change: `SVID_EXEC_CA_CERT (--ca-cert): /etc/ca.pem does not exist`.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// One option: its names and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// `--ca-cert`.
    flag: String,
    /// `SVID_EXEC_CA_CERT`.
    variable: Option<String>,
    /// `None`: not given and no default.
    source: Option<ValueSource>,
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
