//! The command line as clap types, and nothing else: every flag and environment
//! variable of the contract (`shared/reference/cli-contract.md`), raw. Values are
//! kept as strings here on purpose: `config.rs` validates them, so an invalid
//! value is a configuration error (exit 78) with a hint, not a usage error (2).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
pub use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Text appended to the long help of every command.
const EXIT_STATUS: &str = "\
EXIT STATUS:
  run      the program's own exit status; a program killed by signal N gives 128+N
  0        write/check: success
  2        usage error (unknown flag, missing required option)
  69       unavailable: the Workload API or Infisical could not be reached before --startup-timeout
  70       internal error (a bug: please report)
  77       refused: the JWT-SVID was rejected at login, or the identity may not read what was asked
  78       configuration: invalid value, missing project/env/path, invalid secret name,
           a secret named like PATH or LD_* (--allow-env-name), environment too large
           for exec, non-tmpfs target, --mlock refused
  126      the command exists but could not be executed
  127      the command was not found";

/// Prove this workload's SPIFFE identity to Infisical, fetch a project's
/// secrets and hand them to a program as environment variables or tmpfs files.
#[derive(Debug, Parser)]
#[command(name = "svid-exec", version, after_long_help = EXIT_STATUS, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses `args` like [`Parser::try_parse_from`], and records in the
    /// command's [`CommonArgs::sources`] where each value came from (the
    /// command line, a variable, a default), which the parsed struct alone
    /// cannot tell.
    pub fn try_parse_with_sources<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Self::command();
        let mut matches = command.try_get_matches_from_mut(args)?;
        // Read before the values (and with them their sources) are taken out
        // of the matches below.
        let sources = matches
            .subcommand()
            .map(|(_, sub)| ValueSources::record(sub))
            .unwrap_or_default();
        let mut cli =
            Self::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))?;
        match &mut cli.command {
            Command::Run(RunArgs { common, .. })
            | Command::Write(WriteArgs { common, .. })
            | Command::Check(CheckArgs { common, .. }) => common.sources = sources,
            Command::Ready(_) | Command::Completions(_) | Command::Man => {}
        }
        Ok(cli)
    }
}

/// Where each argument's value came from, by clap argument id (the field's
/// name: `workload_api_socket`), so that a message can name the setting to
/// change: the flag, the environment variable, or neither (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueSources(BTreeMap<String, ValueSource>);

impl ValueSources {
    /// Every source in `matches`, read before the values are taken out of them.
    fn record(matches: &ArgMatches) -> Self {
        Self(
            matches
                .ids()
                .filter_map(|id| {
                    let id = id.as_str();
                    Some((id.to_owned(), matches.value_source(id)?))
                })
                .collect(),
        )
    }

    /// Where the value of argument `id` came from; `None` when it has no
    /// value, or when the command line was not parsed by
    /// [`Cli::try_parse_with_sources`].
    pub fn of(&self, id: &str) -> Option<ValueSource> {
        self.0.get(id).copied()
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inject the secrets, then exec the program (or supervise it with --watch).
    #[command(after_long_help = EXIT_STATUS)]
    Run(RunArgs),
    /// Write the secrets as files and exit 0 (init container), or keep them fresh with --watch.
    #[command(after_long_help = EXIT_STATUS)]
    Write(WriteArgs),
    /// Diagnose every step (identity, login, paths, targets); prints names, never values.
    // The report is check's output: its progress log lines (INFO) only when
    // asked for with --log-level.
    #[command(after_long_help = EXIT_STATUS, mut_arg("log_level", |a| a.default_value("warn")))]
    Check(CheckArgs),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout: `svid-exec man | man -l -`.
    Man,
    /// Exit 0 when DIR holds a complete, current set of files written by
    /// svid-exec, 69 when not yet (saying why), 78 when DIR is not an svid-exec
    /// target: an exec probe (Kubernetes startupProbe/readinessProbe). Reads no
    /// secret and makes no network call.
    #[command(after_long_help = READY_EXIT_STATUS)]
    Ready(ReadyArgs),
}

/// The exit status of `ready`.
const READY_EXIT_STATUS: &str = "\
EXIT STATUS:
  0        ready: DIR holds a complete generation written by svid-exec (fresh enough for --max-age)
  69       not yet: nothing written yet, an update being published, or older than --max-age
  78       DIR is not an svid-exec target (not a directory, a link, written by another user
           or by something else), or an invalid --max-age";

/// `svid-exec ready`.
#[derive(Debug, Args)]
pub struct ReadyArgs {
    /// The directory that `write --dir` or `--files-dir` fills.
    #[arg(
        long,
        env = "SVID_EXEC_FILES_DIR",
        value_name = "DIR",
        alias = "files-dir"
    )]
    pub dir: PathBuf,

    /// Also require the files to have been written, or confirmed unchanged by a
    /// poll (`--watch`), within this long (for a readinessProbe).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
}

/// Readiness, for `run` and `write` (`ready` is a command of its own).
#[derive(Debug, Args)]
#[command(next_help_heading = "Readiness")]
pub struct ReadinessArgs {
    /// Create this empty file once the first delivery is complete (for `run
    /// --watch`: and the program started); removed at shutdown, left in place
    /// by a one-shot `write`. Not for `run` without --watch.
    #[arg(long, env = "SVID_EXEC_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// `svid-exec run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Options shared by run, write and check.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Write one file per secret, named by its key, into this directory (tmpfs).
    #[arg(
        long,
        env = "SVID_EXEC_FILES_DIR",
        value_name = "DIR",
        help_heading = "Delivery"
    )]
    pub files_dir: Option<PathBuf>,

    /// Readiness.
    #[command(flatten)]
    pub readiness: ReadinessArgs,

    /// The program to run and its arguments (after `--`). Found through PATH.
    #[arg(required = true, last = true, value_name = "COMMAND", num_args = 1..)]
    pub command: Vec<OsString>,
}

/// `svid-exec write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Options shared by run, write and check.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Write one file per secret, named by its key, into this directory (tmpfs).
    #[arg(
        long,
        env = "SVID_EXEC_FILES_DIR",
        value_name = "DIR",
        help_heading = "Delivery",
        alias = "files-dir",
        required_unless_present_any = ["dotenv_file", "json_file", "template"]
    )]
    pub dir: Option<PathBuf>,

    /// Readiness.
    #[command(flatten)]
    pub readiness: ReadinessArgs,
}

/// `svid-exec check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Options shared by run, write and check.
    #[command(flatten)]
    pub common: CommonArgs,

    /// File target to check: one file per secret in this directory.
    #[arg(
        long,
        env = "SVID_EXEC_FILES_DIR",
        value_name = "DIR",
        help_heading = "Delivery"
    )]
    pub files_dir: Option<PathBuf>,

    /// Report format: `text` (one line per step) or `json`.
    #[arg(
        long,
        default_value = "text",
        value_name = "FORMAT",
        help_heading = "Output"
    )]
    pub output: String,
}

/// `svid-exec completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Everything `run`, `write` and `check` share, by section of the contract.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Identity and server.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// What to fetch.
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Delivery.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Supervision.
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Output.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Where each value came from; set by [`Cli::try_parse_with_sources`].
    #[arg(skip)]
    pub sources: ValueSources,
}

/// Identity and server.
#[derive(Debug, Args)]
#[command(next_help_heading = "Identity and server")]
pub struct IdentityArgs {
    /// Infisical instance origin; a trailing `/api` or `/` is accepted. `http://` only to a loopback host.
    #[arg(
        long,
        env = "INFISICAL_API_URL",
        default_value = "https://app.infisical.com",
        value_name = "URL"
    )]
    pub api_url: String,

    /// Allow `http://` to a non-loopback host (dangerous: the token then crosses the network in clear).
    #[arg(long, env = "SVID_EXEC_ALLOW_INSECURE_HTTP", value_parser = BoolishValueParser::new())]
    pub allow_insecure_http: bool,

    /// Machine identity ID (required).
    #[arg(long, env = "INFISICAL_MACHINE_IDENTITY_ID", value_name = "ID")]
    pub identity_id: Option<String>,

    /// Login method: `oidc-auth`, `jwt-auth` or `spiffe-auth`.
    #[arg(
        long,
        env = "INFISICAL_AUTH_METHOD",
        default_value = "oidc-auth",
        value_name = "METHOD"
    )]
    pub auth_method: String,

    /// Sub-organization to log in to.
    #[arg(long, env = "INFISICAL_ORGANIZATION_SLUG", value_name = "SLUG")]
    pub organization_slug: Option<String>,

    /// Audience requested for the JWT-SVID (repeatable; env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_AUDIENCE",
        default_value = "infisical",
        value_delimiter = ',',
        value_name = "AUDIENCE"
    )]
    pub audience: Vec<String>,

    /// Pick this SVID when the workload has several.
    #[arg(long, env = "SVID_EXEC_SPIFFE_ID", value_name = "SPIFFE_ID")]
    pub spiffe_id: Option<String>,

    /// Workload API address: `unix:///path`, `unix:/path` or `/path`.
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///tmp/spire-agent/public/api.sock",
        value_name = "ADDR"
    )]
    pub workload_api_socket: String,

    /// Read the JWT from this file at every login instead of the Workload API.
    #[arg(long, env = "SVID_EXEC_JWT_FILE", value_name = "PATH")]
    pub jwt_file: Option<PathBuf>,

    /// PEM bundle trusted for the Infisical server (added to the system roots).
    #[arg(long, env = "SVID_EXEC_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// Trust only --ca-cert, not the built-in or system roots (pinning a private CA).
    #[arg(long, env = "SVID_EXEC_CA_CERT_ONLY", value_parser = BoolishValueParser::new())]
    pub ca_cert_only: bool,

    /// How long to keep retrying (agent not ready, server unavailable) before giving up.
    #[arg(
        long,
        env = "SVID_EXEC_STARTUP_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub startup_timeout: String,

    /// Keep the access token alive after `run` execs or `write` exits (by default it is revoked first).
    #[arg(long, env = "SVID_EXEC_NO_REVOKE", value_parser = BoolishValueParser::new())]
    pub no_revoke: bool,
}

/// What to fetch.
#[derive(Debug, Args)]
#[command(next_help_heading = "What to fetch")]
#[allow(clippy::struct_excessive_bools)] // clap flags
pub struct FetchArgs {
    /// Project (workspace) ID; required unless --project-slug.
    #[arg(long, env = "INFISICAL_PROJECT_ID", value_name = "ID")]
    pub project_id: Option<String>,

    /// Project slug, resolved to an ID once at start.
    #[arg(long, env = "INFISICAL_PROJECT_SLUG", value_name = "SLUG")]
    pub project_slug: Option<String>,

    /// Environment slug, e.g. `prod` (required).
    #[arg(long = "env", env = "INFISICAL_ENVIRONMENT", value_name = "SLUG")]
    pub environment: Option<String>,

    /// Secret folder; repeatable, later paths win on the same key (env: comma-separated).
    #[arg(
        long,
        env = "INFISICAL_SECRET_PATH",
        default_value = "/",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub path: Vec<String>,

    /// Include sub-folders.
    #[arg(long, env = "SVID_EXEC_RECURSIVE", value_parser = BoolishValueParser::new())]
    pub recursive: bool,

    /// Do not include imported secrets.
    #[arg(long, env = "SVID_EXEC_NO_IMPORTS", value_parser = BoolishValueParser::new())]
    pub no_imports: bool,

    /// Do not expand `${...}` references.
    #[arg(long, env = "SVID_EXEC_NO_EXPAND", value_parser = BoolishValueParser::new())]
    pub no_expand: bool,

    /// Only secrets with these tag slugs (repeatable; env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_TAGS",
        value_delimiter = ',',
        value_name = "SLUG"
    )]
    pub tag: Vec<String>,

    /// These keys must be present, else exit 78 before anything runs (repeatable; env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_REQUIRE",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub require: Vec<String>,

    /// Accept an empty result (by default zero secrets is exit 78).
    #[arg(long, env = "SVID_EXEC_ALLOW_EMPTY", value_parser = BoolishValueParser::new())]
    pub allow_empty: bool,
}

/// Delivery (the directory flag lives on each command: `--files-dir`, or `--dir` for write).
#[derive(Debug, Args)]
#[command(next_help_heading = "Delivery")]
#[allow(clippy::struct_excessive_bools)] // clap flags
pub struct DeliveryArgs {
    /// Do not put secrets in the child's environment.
    #[arg(long, env = "SVID_EXEC_NO_ENV", value_parser = BoolishValueParser::new())]
    pub no_env: bool,

    /// Prepend this to every variable name.
    #[arg(long, env = "SVID_EXEC_ENV_PREFIX", value_name = "PREFIX")]
    pub env_prefix: Option<String>,

    /// Keep inherited variables that clash with a secret (by default secrets override).
    #[arg(long, env = "SVID_EXEC_NO_OVERRIDE", value_parser = BoolishValueParser::new())]
    pub no_override: bool,

    /// Write all secrets to one dotenv file (safe to `source`).
    #[arg(long, env = "SVID_EXEC_DOTENV_FILE", value_name = "PATH")]
    pub dotenv_file: Option<PathBuf>,

    /// Write all secrets to one JSON object file.
    #[arg(long, env = "SVID_EXEC_JSON_FILE", value_name = "PATH")]
    pub json_file: Option<PathBuf>,

    /// Mode of written files (octal).
    #[arg(
        long,
        env = "SVID_EXEC_FILE_MODE",
        default_value = "0400",
        value_name = "MODE"
    )]
    pub file_mode: String,

    /// Owner of written files, `UID[:GID]` (default: the current user).
    #[arg(long, env = "SVID_EXEC_FILE_OWNER", value_name = "UID[:GID]")]
    pub file_owner: Option<String>,

    /// Allow writing secrets to a disk-backed filesystem.
    #[arg(long, env = "SVID_EXEC_ALLOW_NON_TMPFS", value_parser = BoolishValueParser::new())]
    pub allow_non_tmpfs: bool,

    /// With --files-dir: give the child `KEY_FILE=<path>` instead of the value.
    #[arg(long, env = "SVID_EXEC_ENV_FILE_REFS", value_parser = BoolishValueParser::new())]
    pub env_file_refs: bool,

    /// Deliver a secret under this name although it changes how the program is found or loaded (`PATH`, `LD_*` and the like: refused by default); repeatable (env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_ALLOW_ENV_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allow_env_name: Vec<String>,

    /// Render the template file SRC (Jinja syntax) to DEST atomically, mode MODE (default --file-mode); an undefined name is exit 78 (repeatable; env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_TEMPLATES",
        value_delimiter = ',',
        value_name = "SRC:DEST[:MODE]"
    )]
    pub template: Vec<String>,
}

/// Supervision (`--watch`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Supervision")]
pub struct WatchArgs {
    /// Stay resident: renew credentials, poll, restart/signal on change.
    #[arg(long, env = "SVID_EXEC_WATCH", value_parser = BoolishValueParser::new())]
    pub watch: bool,

    /// How often to check for changed secrets (jittered).
    #[arg(
        long,
        env = "SVID_EXEC_POLL_INTERVAL",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub poll_interval: String,

    /// On change: `restart`, `signal:<SIG>` (e.g. `signal:HUP`) or `none`.
    #[arg(
        long,
        env = "SVID_EXEC_ON_CHANGE",
        default_value = "restart",
        value_name = "ACTION"
    )]
    pub on_change: String,

    /// Signal used to stop the child on restart/shutdown: a name (`TERM`,
    /// `SIGQUIT`), a real-time signal (`RTMIN+3`) or a number.
    #[arg(
        long,
        env = "SVID_EXEC_STOP_SIGNAL",
        default_value = "TERM",
        value_name = "SIG"
    )]
    pub stop_signal: String,

    /// Grace period before SIGKILL.
    #[arg(
        long,
        env = "SVID_EXEC_STOP_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub stop_timeout: String,

    /// Forward signals to the child's process `group` or to the `child` alone.
    #[arg(
        long,
        env = "SVID_EXEC_FORWARD_TO",
        default_value = "group",
        value_name = "TARGET"
    )]
    pub forward_to: String,

    /// Lock the supervisor's memory so secrets are never swapped (exit 78 if the kernel refuses).
    #[arg(long, env = "SVID_EXEC_MLOCK", value_parser = BoolishValueParser::new())]
    pub mlock: bool,
}

/// Output.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Log format on stderr: `text` or `json` (one object per line).
    #[arg(
        long,
        env = "SVID_EXEC_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: String,

    /// Log level: `error`, `warn`, `info`, `debug`, `trace`; no level ever prints a secret.
    #[arg(
        long,
        env = "SVID_EXEC_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: String,

    /// Errors only.
    #[arg(short, long)]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
