//! The command line as clap types: every flag and environment variable of the
//! contract (`shared/reference/cli-contract.md`), raw, and [`parse_from`],
//! which reads them. Values are kept as strings here on purpose: `config.rs`
//! validates them, so an invalid value is a configuration error (exit 78) with
//! a hint, not a usage error (2). Where each option applies (command and
//! `--watch`) is the table in [`scope`].

mod origin;
pub mod scope;

pub use origin::{Origins, Rejected};

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::error::ErrorKind;
pub use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// `--version` of every command: the version, the commit it was built from
/// and the Cargo features it was built with (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SVID_EXEC_COMMIT"),
    ", features: ",
    env!("SVID_EXEC_FEATURES"),
    ")"
);

/// Text appended to the long help of every command.
const EXIT_STATUS: &str = "\
EXIT STATUS:
  run      the program's own exit status; a program killed by signal N gives 128+N
  0        write/check: success
  2        usage error from the command-line parser (unknown flag, `run` without `--`)
  69       unavailable: the Workload API or Infisical could not be reached before --startup-timeout,
           the agent answered a JWT-SVID that contradicts its answer, or a --jwt-file read did not end
  70       internal error (a bug: please report)
  77       refused: the JWT-SVID was rejected at login, or the identity may not read what was asked
  78       configuration: a missing required option, invalid value, an option that does not
           apply to the command, missing project/env/path, invalid secret name, a secret
           named like PATH or LD_* (--allow-env-name), environment too large for exec,
           non-tmpfs target, --mlock refused
  126      the command exists but could not be executed
  127      the command was not found";

/// Prove this workload's SPIFFE identity to Infisical, fetch a project's
/// secrets and hand them to a program as environment variables or tmpfs files.
#[derive(Debug, Parser)]
#[command(name = "svid-exec", version = VERSION, after_long_help = EXIT_STATUS, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each one's options are added only when it is built
/// (`defer`): a launch parses with `run`'s alone ([`parse_from`]); help, the
/// manual page and the completions build them all ([`command`]).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Inject the secrets, then exec the program (or supervise it with --watch).
    #[command(
        after_long_help = EXIT_STATUS,
        display_name = "svid-exec",
        override_usage = "svid-exec run [OPTIONS] -- <COMMAND>..."
    )]
    Run(RunArgs),
    /// Write the secrets as files and exit 0 (init container), or keep them fresh with --watch.
    #[command(after_long_help = EXIT_STATUS, display_name = "svid-exec")]
    Write(WriteArgs),
    /// Diagnose every step (identity, login, paths, targets); prints names, never values.
    // The report is check's output: its progress log lines (INFO) only when
    // asked for with --log-level.
    // Its --log-level defaults to warn ([`command`]: a deferred subcommand
    // has no argument to change before it is built).
    #[command(after_long_help = EXIT_STATUS, display_name = "svid-exec")]
    Check(CheckArgs),
    /// Print a shell completion script on stdout.
    #[command(display_name = "svid-exec")]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout: `svid-exec man | man -l -`.
    #[command(display_name = "svid-exec")]
    Man,
    /// Exit 0 when DIR holds a complete, current set of files written by
    /// svid-exec, 69 when not yet (saying why), 78 when DIR is not an svid-exec
    /// target: an exec probe (Kubernetes startupProbe/readinessProbe). Reads no
    /// secret and makes no network call.
    #[command(after_long_help = READY_EXIT_STATUS, display_name = "svid-exec")]
    Ready(ReadyArgs),
}

/// The exit status of `ready`.
const READY_EXIT_STATUS: &str = "\
EXIT STATUS:
  0        ready: DIR holds a complete generation written by svid-exec (fresh enough for --max-age)
  69       not yet: nothing written yet, an update being published, or older than --max-age
  78       DIR is not an svid-exec target (not a directory, a link, written by another user
           or by something else), no --dir, or an invalid --max-age";

/// `svid-exec ready`.
#[derive(Debug, Args)]
pub struct ReadyArgs {
    /// The directory that `write --dir` or `--files-dir` fills (required).
    #[arg(
        long,
        env = "SVID_EXEC_FILES_DIR",
        value_name = "DIR",
        visible_alias = "files-dir"
    )]
    pub dir: Option<PathBuf>,

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
    /// by a one-shot `write`.
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
        help_heading = "Delivery",
        visible_alias = "dir"
    )]
    pub files_dir: Option<PathBuf>,

    /// A program typed without `--` before it (`run env`): never run, but
    /// caught so the usage error can say where `--` goes ([`parse_from`]).
    #[arg(hide = true, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM")]
    pub without_dashes: Vec<OsString>,

    /// Readiness.
    #[command(flatten)]
    pub readiness: ReadinessArgs,

    /// The program to run and its arguments (after `--`). Found through PATH.
    #[arg(
        required_unless_present = "without_dashes",
        last = true,
        value_name = "COMMAND",
        num_args = 1..
    )]
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
        visible_alias = "files-dir"
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
        help_heading = "Delivery",
        visible_alias = "dir"
    )]
    pub files_dir: Option<PathBuf>,

    /// Readiness (taken as `run` and `write` take it; `check` creates no file).
    #[command(flatten)]
    pub readiness: ReadinessArgs,

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
        value_name = "URL",
        visible_alias = "domain"
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
    #[arg(
        long,
        env = "INFISICAL_PROJECT_ID",
        value_name = "ID",
        visible_alias = "projectId"
    )]
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
        value_name = "SLUG",
        visible_alias = "tags"
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
    /// Deliver only these keys, as named in Infisical (repeatable; env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_ONLY",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub only: Vec<String>,

    /// Deliver secret SRC under the name DST (repeatable; env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_MAP",
        value_delimiter = ',',
        value_name = "SRC=DST"
    )]
    pub map: Vec<String>,

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

    /// Keep the last good secrets in this private tmpfs directory, and start
    /// with them when Infisical is unavailable and the Workload API still
    /// vouches for this workload.
    #[arg(
        long,
        env = "SVID_EXEC_FALLBACK_DIR",
        value_name = "DIR",
        help_heading = "Where secrets may live"
    )]
    pub fallback_dir: Option<PathBuf>,

    /// Never start with cached secrets older than this.
    #[arg(
        long,
        env = "SVID_EXEC_FALLBACK_MAX_AGE",
        default_value = "24h",
        value_name = "DURATION",
        help_heading = "Where secrets may live"
    )]
    pub fallback_max_age: String,

    /// Give each secret to the program as a sealed memfd it inherits, named by
    /// `KEY_FILE=/proc/self/fd/N`, and no value in its environment.
    #[arg(
        long,
        env = "SVID_EXEC_MEMFD",
        value_parser = BoolishValueParser::new(),
        help_heading = "Where secrets may live"
    )]
    pub memfd: bool,

    /// Deliver a secret under this name although it changes how the program is found or loaded (`PATH`, `LD_*` and the like: refused by default); repeatable (env: comma-separated).
    #[arg(
        long,
        env = "SVID_EXEC_ALLOW_ENV_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allow_env_name: Vec<String>,

    /// Render the template file SRC (Jinja syntax) to DEST atomically, mode MODE (default --file-mode), or with run to a sealed memfd named by `NAME_FILE` (DEST `memfd:NAME`); an undefined name is exit 78 (repeatable; env: comma-separated).
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
        value_name = "DURATION",
        visible_alias = "watch-interval"
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
    #[arg(short, long, visible_alias = "silent")]
    pub quiet: bool,
}

/// The command line as parsed: the commands and their raw values, the
/// subcommand's matches (where each value came from: flag, variable or
/// default) and the options given where they do not apply ([`scope`]).
#[derive(Debug)]
pub struct Parsed {
    /// The command and its raw values. A variable of an option that does not
    /// apply here is left out: its option has its default.
    pub command: Command,
    /// Where each of the subcommand's values came from.
    pub origins: Origins,
    /// Options that do not apply to this command or mode, given by flag
    /// (refused) or by variable (ignored).
    pub out_of_place: Vec<scope::OutOfPlace>,
}

/// The clap definition with each command's help showing only the options
/// that apply to it, and where ([`scope::annotate`]); parsing, `--help`, the
/// manual page and the completions all use this one.
pub fn command() -> clap::Command {
    // The commands with their options now, not deferred to
    // their build: the annotations, the variables dropped before parsing and
    // `check`'s default change them, and a built command cannot be changed
    // (`mut_arg` on a built one leaves clap's index of its arguments stale).
    // The derive's deferred step is replaced by one that does nothing.
    // (`mut_subcommand` moves the command to the end: this order keeps the
    // one help, the manual and the completions have always listed.)
    let cmd = Cli::command()
        .mut_subcommand("completions", |c| expand(c, CompletionsArgs::augment_args))
        .mut_subcommand("man", |c| c)
        .mut_subcommand("ready", |c| expand(c, ReadyArgs::augment_args))
        .mut_subcommand("run", |c| expand(c, RunArgs::augment_args))
        .mut_subcommand("write", |c| expand(c, WriteArgs::augment_args))
        .mut_subcommand("check", |c| {
            expand(c, CheckArgs::augment_args).mut_arg("log_level", |a| a.default_value("warn"))
        });
    scope::annotate(cmd)
}

/// A deferred subcommand with its options added now. Its description stays
/// the variant's (the options' struct has one of its own, which the derive
/// applies first when it does not defer).
fn expand(sub: clap::Command, augment: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = sub.get_about().cloned();
    let long_about = sub.get_long_about().cloned();
    let sub = augment(sub.defer(|c| c));
    let sub = match about {
        Some(about) => sub.about(about),
        None => sub.about(None),
    };
    match long_about {
        Some(long_about) => sub.long_about(long_about),
        None => sub.long_about(None),
    }
}

/// Parses `argv` (the program name first). Usage errors (an unknown flag, a
/// program without `--` before it) are clap's errors, exit 2; everything else
/// is left to the configuration, which answers 78. A variable of an option
/// that does not apply to the command or mode is dropped by parsing again
/// without it, so its option has its default and its value is not checked:
/// one environment serves `run`, `write` and `check`. A boolean option's
/// variable that holds no boolean is dropped before parsing and recorded in
/// the origins ([`Origins::rejected`]), for the configuration to refuse.
pub fn parse_from(argv: &[OsString]) -> Result<Parsed, clap::Error> {
    match parse_usual(argv) {
        Some(parsed) => Ok(parsed),
        None => parse_with_every_command(argv),
    }
}

/// The usual `run` or `write`, parsed with the definition of that command
/// alone: the other commands are never built, nor the help's annotations
/// (building, annotating and dropping them all cost 0.65 M of a launch's
/// 5.72 M instructions, callgrind). `None`
/// whenever the full parse could answer differently, which then answers: a
/// clap error, help or version (rendered from the annotated tree), `run`
/// without `--`, a variable that does not apply here or a boolean variable
/// that holds no boolean (both parsed again without the variable). `check`
/// always takes the full parse (its --log-level default is set by
/// [`command`]). `tests::the_usual_parse_is_the_full_one` holds them equal.
fn parse_usual(argv: &[OsString]) -> Option<Parsed> {
    let name = argv.get(1)?.to_str()?;
    if name != "run" && name != "write" {
        return None;
    }
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(argv).ok()?;
    let (given, sub) = matches.subcommand()?;
    if given != name
        || (name == "run" && sub.get_many::<OsString>("without_dashes").is_some())
        // Only the matched command is built: its booleans are all there are.
        || !origin::rejected_booleans(&cmd).is_empty()
    {
        return None;
    }
    let (out_of_place, drop_env) = scope::out_of_place(&cmd, &matches, &[]);
    if !drop_env.is_empty() {
        return None;
    }
    let cli = Cli::from_arg_matches(&matches).ok()?;
    let origins = Origins::new(cmd.find_subcommand(name)?, sub);
    Some(Parsed {
        command: cli.command,
        origins,
        out_of_place,
    })
}

/// [`parse_from`] with every command built and annotated.
fn parse_with_every_command(argv: &[OsString]) -> Result<Parsed, clap::Error> {
    // Built once (a second build only to parse again without some variables).
    let definition = command();
    let rejected = origin::rejected_booleans(&definition);
    let parser = || origin::without_rejected(command(), &rejected);
    let mut cmd = origin::without_rejected(definition, &rejected);
    let matches = cmd.try_get_matches_from_mut(argv)?;
    if let Some(("run", run)) = matches.subcommand() {
        if let Some(typed) = run.get_many::<OsString>("without_dashes") {
            let typed: Vec<String> = typed.map(|a| a.to_string_lossy().into_owned()).collect();
            let mut run_cmd = cmd.find_subcommand_mut("run").cloned().unwrap_or_default();
            return Err(run_cmd.error(
                ErrorKind::UnknownArgument,
                format!(
                    "put -- before the program: svid-exec run [OPTIONS] -- {}",
                    typed.join(" ")
                ),
            ));
        }
    }
    let (out_of_place, drop_env) = scope::out_of_place(&cmd, &matches, &rejected);
    let matches = if drop_env.is_empty() {
        matches
    } else {
        scope::without_env(parser(), &matches, &drop_env).try_get_matches_from(argv)?
    };
    let cli = Cli::from_arg_matches(&matches)?;
    let mut origins = match matches.subcommand() {
        Some((name, sub)) => cmd
            .find_subcommand(name)
            .map(|def| Origins::new(def, sub))
            .unwrap_or_default(),
        None => Origins::default(),
    };
    // Those that apply here are refused; the others were found out of place,
    // and a flag on the command line wins over its variable, whatever it holds.
    for r in rejected {
        let ignored = out_of_place
            .iter()
            .any(|o| o.variable.is_some() && Some(&o.flag) == origins.flag(&r.id));
        if !ignored && origins.source(&r.id) != Some(ValueSource::CommandLine) {
            origins.reject(r);
        }
    }
    Ok(Parsed {
        command: cli.command,
        origins,
        out_of_place,
    })
}

#[cfg(test)]
mod tests {
    use super::{command, parse_usual, parse_with_every_command};
    use std::ffi::OsString;

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    /// The usual parse gives what the full one gives, and declines (so the
    /// full one answers) every case it must not answer. No variable of ours
    /// is set in the test process.
    #[test]
    fn the_usual_parse_is_the_full_one() {
        let argv = |args: &[&str]| -> Vec<OsString> {
            std::iter::once("svid-exec")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect()
        };
        for args in [
            &["run", "--", "/bin/true"][..],
            &[
                "run",
                "-q",
                "--project-id",
                "p",
                "--env",
                "prod",
                "--",
                "app",
                "-x",
            ],
            &["run", "--watch", "--poll-interval", "30s", "--", "app"],
            &["run", "--dir", "/run/s", "--", "app"],
            &["run", "--files-dir", "/run/s", "--no-env", "--", "app"],
            &[
                "run",
                "--json-file",
                "/run/s/x.json",
                "--allow-non-tmpfs",
                "--",
                "app",
            ],
            &["write", "--dir", "/run/s"],
            &[
                "write",
                "--dir",
                "/run/s",
                "--watch",
                "--on-change",
                "signal:HUP",
            ],
            &[
                "run",
                "--poll-interval",
                "30s",
                "--tag",
                "a,b",
                "--path",
                "/x",
                "--",
                "app",
            ],
            &["run", "--no-revoke", "--recursive", "--mlock", "--", "app"],
            &["write", "--dir", "/run/s", "--env-prefix", "APP_"],
        ] {
            let full = parse_with_every_command(&argv(args));
            let usual = parse_usual(&argv(args));
            match (full, usual) {
                (Ok(full), Some(usual)) => {
                    assert_eq!(format!("{usual:?}"), format!("{full:?}"), "{args:?}");
                }
                (full, usual) => panic!("{args:?}: full {full:?}, usual {usual:?}"),
            }
        }
        for args in [
            &["run", "/bin/true"][..],
            &["run", "--help"],
            &["run", "--version"],
            &["run", "--nope", "--", "app"],
            &["write", "--help"],
            &["check"],
            &["ready", "--dir", "/run/s"],
            &["--help"],
        ] {
            assert!(parse_usual(&argv(args)).is_none(), "{args:?}");
        }
    }
}
