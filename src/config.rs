//! `Cli` -> `Config`: every value validated, normalised and typed once, so the
//! layers below never see an invalid combination. Each part of the contract is
//! its own struct, so a layer takes only the part it needs.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use reqwest::Url;

use crate::cli;
use crate::error::{ExitClass, Failure};
use crate::launch::signals::Signal;
/// `--on-change` and `--forward-to` are the supervisor's own types: what the
/// user may ask for is exactly what the supervisor can do.
pub use crate::launch::supervise::{ForwardTo, OnChange};
use crate::svid::EndpointOrigin;

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub command: CommandConfig,
    /// Who we are and whom we talk to.
    pub identity: IdentityConfig,
    /// The Infisical server.
    pub server: ServerConfig,
    /// What to fetch.
    pub fetch: FetchConfig,
    /// How secrets reach the program.
    pub delivery: DeliveryConfig,
    /// Supervision.
    pub watch: WatchConfig,
    /// Logs.
    pub output: OutputConfig,
    /// Things that are allowed but deserve a warning once logging is up.
    pub warnings: Vec<String>,
}

/// The command, with what only it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandConfig {
    /// Exec (or supervise) `program` with `args`.
    Run {
        /// The program as given (looked up in PATH when it has no `/`).
        program: OsString,
        /// Its arguments (never secrets).
        args: Vec<OsString>,
    },
    /// Write files and exit.
    Write,
    /// Diagnose.
    Check {
        /// Report format.
        output: CheckOutput,
    },
}

/// `check --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutput {
    /// One line per step.
    Text,
    /// One JSON document.
    Json,
}

/// Login method: the path segment of `POST /api/v1/auth/<method>/login`
/// (one type for the command line and the client).
pub use crate::infisical::AuthMethod;

/// Identity: how we obtain and present the JWT-SVID.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Infisical machine identity ID.
    pub identity_id: String,
    /// Login method.
    pub auth_method: AuthMethod,
    /// Sub-organization to log in to.
    pub organization_slug: Option<String>,
    /// Audiences requested for the JWT-SVID; never empty, no empty entries.
    pub audiences: Vec<String>,
    /// The SVID to pick when there are several.
    pub spiffe_id: Option<String>,
    /// Workload API address as given (`unix:///p`, `unix:/p` or `/p`).
    pub workload_api_socket: String,
    /// Where that address came from (flag, `SPIFFE_ENDPOINT_SOCKET`, default).
    pub workload_api_socket_origin: EndpointOrigin,
    /// Read the JWT from this file instead of the Workload API.
    pub jwt_file: Option<PathBuf>,
}

/// The Infisical server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Origin without trailing `/` or `/api`, e.g. `https://app.infisical.com`.
    pub api_url: Url,
    /// Plain HTTP to a non-loopback host was explicitly allowed.
    pub allow_insecure_http: bool,
    /// Extra trusted CA bundle.
    pub ca_cert: Option<PathBuf>,
    /// How long to keep retrying before giving up (exit 69).
    pub startup_timeout: Duration,
}

/// Which project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By ID.
    Id(String),
    /// By slug (resolved once).
    Slug(String),
}

/// What to fetch.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent switches of the contract
pub struct FetchConfig {
    /// The project.
    pub project: ProjectRef,
    /// Environment slug.
    pub environment: String,
    /// Folders, normalised (leading `/`, no trailing `/` except the root); later wins.
    pub paths: Vec<String>,
    /// Include sub-folders.
    pub recursive: bool,
    /// Include imported secrets.
    pub include_imports: bool,
    /// Expand `${...}` references.
    pub expand: bool,
    /// Only secrets with these tag slugs.
    pub tags: Vec<String>,
    /// Keys that must be present.
    pub require: Vec<String>,
    /// Accept an empty result.
    pub allow_empty: bool,
}

/// How secrets reach the program.
#[derive(Debug, Clone, Default)]
pub struct DeliveryConfig {
    /// Environment delivery; `None` for `write`, or `run --no-env`.
    pub env: Option<EnvDelivery>,
    /// File delivery; `None` when no files option is given.
    pub files: Option<FilesConfig>,
}

/// Environment delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDelivery {
    /// Prepended to every name.
    pub prefix: String,
    /// Secrets replace inherited variables of the same name.
    pub override_inherited: bool,
    /// Deliver `KEY_FILE=<path>` instead of values (needs `files.targets.dir`).
    pub file_refs: bool,
}

/// Where files go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesTargets {
    /// One file per secret.
    pub dir: Option<PathBuf>,
    /// All secrets in one dotenv file.
    pub dotenv_file: Option<PathBuf>,
    /// All secrets in one JSON file.
    pub json_file: Option<PathBuf>,
}

/// File delivery (at least one target is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Targets.
    pub targets: FilesTargets,
    /// Mode of written files, within 0o777.
    pub mode: u32,
    /// Owner of written files.
    pub owner: Option<FileOwner>,
    /// Allow a disk-backed filesystem.
    pub allow_non_tmpfs: bool,
}

/// `--file-owner UID[:GID]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOwner {
    /// User ID.
    pub uid: u32,
    /// Group ID, when given.
    pub gid: Option<u32>,
}

/// Supervision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Stay resident.
    pub enabled: bool,
    /// Poll period.
    pub poll_interval: Duration,
    /// What to do on a change.
    pub on_change: OnChange,
    /// Signal used to stop the child.
    pub stop_signal: Signal,
    /// Grace period before SIGKILL.
    pub stop_timeout: Duration,
    /// Where forwarded signals go.
    pub forward_to: ForwardTo,
    /// Lock memory.
    pub mlock: bool,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `svid-exec: LEVEL message key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputConfig {
    /// Format.
    pub format: LogFormat,
    /// Most verbose level shown (`quiet` already folded in as `ERROR`).
    pub level: tracing::Level,
}

/// A value that cannot be used; exit 78.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {problem}")]
pub struct ConfigError {
    problem: String,
    hint: String,
}

impl ConfigError {
    fn new(problem: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    /// What to check.
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// Always [`ExitClass::Config`].
    pub const fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }
}

impl Failure for ConfigError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        Some(self.hint.clone())
    }
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl Config {
    /// Validates the parsed command line. `Completions` has no configuration
    /// and must be handled before this (it returns an error for it).
    pub fn from_cli(command: cli::Command) -> Result<Self> {
        let (kind, common, dir) = match command {
            cli::Command::Run(a) => {
                let mut argv = a.command.into_iter();
                let program = argv.next().ok_or_else(|| {
                    ConfigError::new("no command to run", "put the program after `--`")
                })?;
                if program.is_empty() {
                    return Err(ConfigError::new(
                        "the command to run is empty",
                        "put the program after `--`",
                    ));
                }
                let run = CommandConfig::Run {
                    program,
                    args: argv.collect(),
                };
                (run, a.common, a.files_dir)
            }
            cli::Command::Write(a) => (CommandConfig::Write, a.common, a.dir),
            cli::Command::Check(a) => {
                let output = match a.output.as_str() {
                    "text" => CheckOutput::Text,
                    "json" => CheckOutput::Json,
                    other => {
                        return Err(ConfigError::new(
                            format!("--output {other:?} is not a report format"),
                            "use `text` or `json`",
                        ))
                    }
                };
                (CommandConfig::Check { output }, a.common, a.files_dir)
            }
            cli::Command::Completions(_) | cli::Command::Man => {
                return Err(ConfigError::new(
                    "`completions` and `man` take no configuration",
                    "this is a bug in svid-exec, please report it",
                ))
            }
        };
        let mut warnings = Vec::new();
        let output = output_config(&common.output)?;
        let (identity, server) = identity_config(common.identity, &mut warnings)?;
        let fetch = fetch_config(common.fetch)?;
        let delivery = delivery_config(&kind, common.delivery, dir)?;
        let watch = watch_config(&common.watch)?;
        check_combinations(&kind, &delivery, &watch)?;
        Ok(Self {
            command: kind,
            identity,
            server,
            fetch,
            delivery,
            watch,
            output,
            warnings,
        })
    }
}

fn output_config(args: &cli::OutputArgs) -> Result<OutputConfig> {
    let format = match args.log_format.to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::new(
                format!("--log-format {other:?} is not a log format"),
                "use `text` or `json` (SVID_EXEC_LOG_FORMAT)",
            ))
        }
    };
    let level = match args.log_level.to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" | "warning" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            return Err(ConfigError::new(
                format!("--log-level {other:?} is not a log level"),
                "use one of error, warn, info, debug, trace (SVID_EXEC_LOG_LEVEL)",
            ))
        }
    };
    let level = if args.quiet {
        tracing::Level::ERROR
    } else {
        level
    };
    Ok(OutputConfig { format, level })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn identity_config(
    args: cli::IdentityArgs,
    warnings: &mut Vec<String>,
) -> Result<(IdentityConfig, ServerConfig)> {
    let identity_id = non_empty(args.identity_id).ok_or_else(|| {
        ConfigError::new(
            "no machine identity ID",
            "set --identity-id or INFISICAL_MACHINE_IDENTITY_ID to the ID of the Infisical machine identity",
        )
    })?;
    let auth_method: AuthMethod = args.auth_method.to_ascii_lowercase().parse().map_err(|_| {
        ConfigError::new(
            format!("--auth-method {:?} is not a login method", args.auth_method),
            "use oidc-auth, jwt-auth or spiffe-auth (INFISICAL_AUTH_METHOD)",
        )
    })?;
    let audiences: Vec<String> = args.audience.iter().map(|a| a.trim().to_owned()).collect();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            "an audience is empty",
            "give --audience a non-empty value (SVID_EXEC_AUDIENCE, comma-separated); the default is `infisical`",
        ));
    }
    let socket = args.workload_api_socket.trim().to_owned();
    if args.jwt_file.is_none() && socket.is_empty() {
        return Err(ConfigError::new(
            "the Workload API address is empty",
            "set --workload-api-socket or SPIFFE_ENDPOINT_SOCKET (e.g. unix:///run/spire/agent.sock), or use --jwt-file",
        ));
    }
    if let Some(path) = &args.jwt_file {
        if path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "--jwt-file is empty",
                "give the path of a file holding the JWT, or unset SVID_EXEC_JWT_FILE",
            ));
        }
    }
    let spiffe_id = non_empty(args.spiffe_id);
    if let Some(id) = &spiffe_id {
        if !id.starts_with("spiffe://") {
            return Err(ConfigError::new(
                format!("--spiffe-id {id:?} is not a SPIFFE ID"),
                "give the full ID, e.g. spiffe://example.org/ns/app/sa/web",
            ));
        }
    }
    let identity = IdentityConfig {
        identity_id,
        auth_method,
        organization_slug: non_empty(args.organization_slug),
        audiences,
        spiffe_id,
        workload_api_socket: socket,
        workload_api_socket_origin: match args.workload_api_socket_source {
            Some(ValueSource::EnvVariable) => EndpointOrigin::Env,
            Some(ValueSource::DefaultValue) => EndpointOrigin::Default,
            _ => EndpointOrigin::Flag,
        },
        jwt_file: args.jwt_file,
    };
    let api_url = api_url(&args.api_url, args.allow_insecure_http, warnings)?;
    let server = ServerConfig {
        api_url,
        allow_insecure_http: args.allow_insecure_http,
        ca_cert: args.ca_cert,
        startup_timeout: duration("--startup-timeout", &args.startup_timeout)?,
    };
    Ok((identity, server))
}

/// Parses and normalises `--api-url`: an origin (plus an optional base path),
/// without trailing `/` or `/api`; `http://` only to loopback unless allowed.
/// `--api-url`: normalised by the client's own rules (one definition of what a
/// valid instance URL is), then the plain-HTTP policy, with a warning when the
/// user allowed plain HTTP to a non-loopback host.
fn api_url(raw: &str, allow_insecure: bool, warnings: &mut Vec<String>) -> Result<Url> {
    let url = crate::infisical::normalize_api_url(raw).map_err(|e| {
        ConfigError::new(
            e.to_string(),
            "use the instance origin, e.g. https://app.infisical.com or https://infisical.example.com",
        )
    })?;
    if url.scheme() == "http" && !crate::infisical::is_loopback(&url) {
        let host = url.host_str().unwrap_or_default();
        if !allow_insecure {
            return Err(ConfigError::new(
                format!("--api-url uses plain http:// to a non-loopback host ({host})"),
                "use https://, or pass --allow-insecure-http if you really mean it (the token would cross the network in clear)",
            ));
        }
        warnings.push(format!(
            "--allow-insecure-http: talking plain HTTP to {host}; the access token and secrets cross the network in clear"
        ));
    }
    Ok(url)
}

fn duration(flag: &str, raw: &str) -> Result<Duration> {
    let value = humantime::parse_duration(raw.trim()).map_err(|e| {
        ConfigError::new(
            format!("{flag} {raw:?} is not a duration ({e})"),
            "use a humantime duration such as 90s, 5m or 1h",
        )
    })?;
    if value.is_zero() {
        return Err(ConfigError::new(
            format!("{flag} must be longer than zero"),
            "use a humantime duration such as 90s, 5m or 1h",
        ));
    }
    Ok(value)
}

fn fetch_config(args: cli::FetchArgs) -> Result<FetchConfig> {
    let project = match (non_empty(args.project_id), non_empty(args.project_slug)) {
        (Some(id), None) => ProjectRef::Id(id),
        (None, Some(slug)) => ProjectRef::Slug(slug),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "both --project-id and --project-slug are set",
                "give one of them (check INFISICAL_PROJECT_ID and INFISICAL_PROJECT_SLUG in the environment)",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                "no project",
                "set --project-id (INFISICAL_PROJECT_ID) or --project-slug (INFISICAL_PROJECT_SLUG)",
            ))
        }
    };
    let environment = non_empty(args.environment).ok_or_else(|| {
        ConfigError::new(
            "no environment",
            "set --env or INFISICAL_ENVIRONMENT to the environment slug, e.g. prod",
        )
    })?;
    let paths = args
        .path
        .iter()
        .map(|p| normalise_secret_path(p))
        .collect::<Result<Vec<_>>>()?;
    let paths = if paths.is_empty() {
        vec!["/".to_owned()]
    } else {
        paths
    };
    let tags = list("--tag", args.tag)?;
    let require = list("--require", args.require)?;
    Ok(FetchConfig {
        project,
        environment,
        paths,
        recursive: args.recursive,
        include_imports: !args.no_imports,
        expand: !args.no_expand,
        tags,
        require,
        allow_empty: args.allow_empty,
    })
}

/// Trims a comma-separated list; an empty entry is a mistake (`a,,b`).
fn list(flag: &str, values: Vec<String>) -> Result<Vec<String>> {
    values
        .into_iter()
        .map(|v| {
            let v = v.trim().to_owned();
            if v.is_empty() {
                Err(ConfigError::new(
                    format!("{flag} has an empty entry"),
                    "remove the empty item from the list (check for `,,` or a trailing comma)",
                ))
            } else {
                Ok(v)
            }
        })
        .collect()
}

/// `a/b/` -> `/a/b`; `//a//b` -> `/a/b`; empty -> error; `.` and `..` segments refused.
fn normalise_secret_path(raw: &str) -> Result<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::new(
            "--path is empty",
            "use `/` for the root folder, or a folder such as /app/db",
        ));
    }
    let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(ConfigError::new(
            format!("--path {raw:?} contains `.` or `..`"),
            "give the folder as an absolute path, e.g. /app/db",
        ));
    }
    Ok(format!("/{}", segments.join("/")))
}

fn delivery_config(
    kind: &CommandConfig,
    args: cli::DeliveryArgs,
    dir: Option<PathBuf>,
) -> Result<DeliveryConfig> {
    let targets = FilesTargets {
        dir: non_empty_path("--files-dir", dir)?,
        dotenv_file: non_empty_path("--dotenv-file", args.dotenv_file)?,
        json_file: non_empty_path("--json-file", args.json_file)?,
    };
    let any_file =
        targets.dir.is_some() || targets.dotenv_file.is_some() || targets.json_file.is_some();
    let files = if any_file {
        Some(FilesConfig {
            targets,
            mode: file_mode(&args.file_mode)?,
            owner: args.file_owner.as_deref().map(file_owner).transpose()?,
            allow_non_tmpfs: args.allow_non_tmpfs,
        })
    } else {
        // Still validate what was given, so a typo is not silently ignored.
        file_mode(&args.file_mode)?;
        args.file_owner.as_deref().map(file_owner).transpose()?;
        None
    };
    let prefix = args.env_prefix.unwrap_or_default();
    if prefix.contains('=') || prefix.contains('\0') {
        return Err(ConfigError::new(
            format!("--env-prefix {prefix:?} contains `=` or NUL"),
            "a variable name cannot contain `=`; use letters, digits and `_`",
        ));
    }
    if args.env_file_refs
        && files
            .as_ref()
            .and_then(|f| f.targets.dir.as_ref())
            .is_none()
    {
        return Err(ConfigError::new(
            "--env-file-refs needs --files-dir",
            "KEY_FILE=<path> points at one file per secret; add --files-dir DIR (a tmpfs)",
        ));
    }
    let env = match kind {
        CommandConfig::Write => None,
        CommandConfig::Run { .. } | CommandConfig::Check { .. } => {
            if args.no_env && args.env_file_refs {
                return Err(ConfigError::new(
                    "--no-env and --env-file-refs contradict each other",
                    "--env-file-refs puts KEY_FILE=<path> in the environment; drop one of them",
                ));
            }
            (!args.no_env).then_some(EnvDelivery {
                prefix,
                override_inherited: !args.no_override,
                file_refs: args.env_file_refs,
            })
        }
    };
    if matches!(kind, CommandConfig::Run { .. }) && env.is_none() && files.is_none() {
        return Err(ConfigError::new(
            "--no-env without a files option delivers nothing",
            "add --files-dir, --dotenv-file or --json-file, or drop --no-env",
        ));
    }
    Ok(DeliveryConfig { env, files })
}

/// A file target, made absolute (against the current directory) so that
/// `KEY_FILE` paths given to the child and log lines are unambiguous.
fn non_empty_path(flag: &str, path: Option<PathBuf>) -> Result<Option<PathBuf>> {
    match path {
        Some(p) if p.as_os_str().is_empty() => Err(ConfigError::new(
            format!("{flag} is empty"),
            "give a path, or unset its environment variable",
        )),
        Some(p) => std::path::absolute(&p).map(Some).map_err(|e| {
            ConfigError::new(
                format!("{flag} {}: cannot resolve the path ({e})", p.display()),
                "give an absolute path",
            )
        }),
        None => Ok(None),
    }
}

fn file_mode(raw: &str) -> Result<u32> {
    let digits = raw.trim();
    let digits = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
        .unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(ConfigError::new(
            format!("--file-mode {raw:?} is not an octal mode within 0777"),
            "use an octal permission such as 0400 or 0440",
        )),
    }
}

fn file_owner(raw: &str) -> Result<FileOwner> {
    let bad = || {
        ConfigError::new(
            format!("--file-owner {raw:?} is not UID[:GID]"),
            "give numeric IDs, e.g. 1000 or 1000:1000",
        )
    };
    let (uid, gid) = match raw.trim().split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (raw.trim(), None),
    };
    let uid = uid.parse::<u32>().map_err(|_| bad())?;
    let gid = gid
        .map(|g| g.parse::<u32>().map_err(|_| bad()))
        .transpose()?;
    Ok(FileOwner { uid, gid })
}

/// `TERM`, `SIGTERM`, `term`, `15` or a real-time signal such as `RTMIN+3`:
/// every signal the supervisor can send.
pub fn parse_signal(raw: &str) -> Option<Signal> {
    raw.parse().ok()
}

fn signal(flag: &str, raw: &str) -> Result<Signal> {
    parse_signal(raw).ok_or_else(|| {
        ConfigError::new(
            format!("{flag} {raw:?} is not a signal"),
            "use a name such as TERM, SIGTERM, HUP, RTMIN+3 or a number such as 15",
        )
    })
}

/// `--on-change`: `restart`, `signal:<SIG>` or `none` (case-insensitive).
pub fn parse_on_change(raw: &str) -> Result<OnChange> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "restart" => Ok(OnChange::Restart),
        "none" => Ok(OnChange::None),
        other => match other.strip_prefix("signal:") {
            Some(sig) => Ok(OnChange::Signal(signal("--on-change signal:", sig)?)),
            None => Err(ConfigError::new(
                format!("--on-change {raw:?} is not an action"),
                "use restart, signal:<SIG> (e.g. signal:HUP) or none",
            )),
        },
    }
}

/// `--forward-to`: `group` or `child` (case-insensitive).
pub fn parse_forward_to(raw: &str) -> Result<ForwardTo> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "child" => Ok(ForwardTo::Child),
        "group" => Ok(ForwardTo::Group),
        _ => Err(ConfigError::new(
            format!("--forward-to {raw:?} is not a target"),
            "use group (the child's process group) or child",
        )),
    }
}

fn watch_config(args: &cli::WatchArgs) -> Result<WatchConfig> {
    Ok(WatchConfig {
        enabled: args.watch,
        poll_interval: duration("--poll-interval", &args.poll_interval)?,
        on_change: parse_on_change(&args.on_change)?,
        stop_signal: signal("--stop-signal", &args.stop_signal)?,
        stop_timeout: duration("--stop-timeout", &args.stop_timeout)?,
        forward_to: parse_forward_to(&args.forward_to)?,
        mlock: args.mlock,
    })
}

fn check_combinations(
    kind: &CommandConfig,
    delivery: &DeliveryConfig,
    watch: &WatchConfig,
) -> Result<()> {
    if watch.enabled && matches!(kind, CommandConfig::Check { .. }) {
        return Err(ConfigError::new(
            "--watch does not apply to check",
            "use --watch with run or write (check SVID_EXEC_WATCH in the environment)",
        ));
    }
    let env_values = delivery.env.as_ref().is_some_and(|e| !e.file_refs);
    if watch.enabled && env_values && matches!(watch.on_change, OnChange::Signal(_)) {
        return Err(ConfigError::new(
            "--on-change signal:<SIG> cannot update secrets delivered in the environment",
            "a signal cannot change a running program's environment: use --on-change restart, \
             or deliver files (--files-dir with --no-env or --env-file-refs)",
        ));
    }
    Ok(())
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "project {id}"),
            Self::Slug(slug) => write!(f, "project slug {slug}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    const BASE: &[&str] = &[
        "svid-exec",
        "run",
        "--identity-id",
        "id-1",
        "--project-id",
        "p-1",
        "--env",
        "prod",
    ];

    /// Parses `BASE` + `extra` + `-- true` (or the given argv for other commands).
    fn run_with(extra: &[&str]) -> Result<Config> {
        let mut argv: Vec<&str> = BASE.to_vec();
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--", "true"]);
        parse(&argv)
    }

    fn parse(argv: &[&str]) -> Result<Config> {
        let cli = cli::Cli::try_parse_from(argv).expect("argv parses");
        Config::from_cli(cli.command)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = run_with(&[]).unwrap();
        assert_eq!(c.server.api_url.as_str(), "https://app.infisical.com/");
        assert_eq!(c.identity.auth_method, AuthMethod::Oidc);
        assert_eq!(c.identity.audiences, ["infisical"]);
        assert_eq!(c.server.startup_timeout, Duration::from_secs(60));
        assert_eq!(c.fetch.paths, ["/"]);
        assert!(c.fetch.include_imports && c.fetch.expand && !c.fetch.allow_empty);
        assert_eq!(
            c.delivery.env,
            Some(EnvDelivery {
                prefix: String::new(),
                override_inherited: true,
                file_refs: false
            })
        );
        assert!(c.delivery.files.is_none());
        assert_eq!(c.watch.on_change, OnChange::Restart);
        assert_eq!(c.watch.stop_signal, Signal::TERM);
        assert_eq!(c.watch.forward_to, ForwardTo::Group);
        assert_eq!(c.output.level, tracing::Level::INFO);
        assert_eq!(
            c.command,
            CommandConfig::Run {
                program: "true".into(),
                args: vec![]
            }
        );
    }

    #[test]
    fn invalid_values_are_refused_with_a_message_naming_them() {
        let table: &[(&[&str], &str)] = &[
            (
                &["--project-slug", "s"],
                "both --project-id and --project-slug",
            ),
            (&["--auth-method", "kerberos"], "--auth-method"),
            (&["--audience", ""], "audience is empty"),
            (&["--audience", "a,,b"], "audience is empty"),
            (&["--path", "/a/../b"], "`.` or `..`"),
            (&["--path", ""], "--path is empty"),
            (&["--file-mode", "0999"], "--file-mode"),
            (&["--file-mode", "01777"], "--file-mode"),
            (&["--file-mode", "rw"], "--file-mode"),
            (&["--file-owner", "root"], "--file-owner"),
            (&["--file-owner", "1:x"], "--file-owner"),
            (&["--on-change", "reload"], "--on-change"),
            (&["--on-change", "signal:NOPE"], "not a signal"),
            (&["--stop-signal", "99"], "--stop-signal"),
            (&["--forward-to", "parent"], "--forward-to"),
            (&["--startup-timeout", "soon"], "--startup-timeout"),
            (&["--poll-interval", "0s"], "longer than zero"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--log-format", "xml"], "--log-format"),
            (
                &["--api-url", "http://infisical.example.com"],
                "plain http://",
            ),
            (&["--api-url", "ftp://x"], "scheme"),
            (
                &["--api-url", "not a url"],
                "invalid --api-url \"not a url\"",
            ),
            (&["--env-file-refs"], "needs --files-dir"),
            (
                &["--env-file-refs", "--dotenv-file", "/run/s.env"],
                "needs --files-dir",
            ),
            (&["--no-env"], "delivers nothing"),
            (
                &["--watch", "--on-change", "signal:HUP"],
                "cannot update secrets delivered in the environment",
            ),
            (&["--env-prefix", "A=B"], "--env-prefix"),
            (&["--spiffe-id", "example.org/web"], "not a SPIFFE ID"),
        ];
        for (extra, expected) in table {
            let err = run_with(extra).expect_err(&format!("{extra:?} must be refused"));
            assert!(
                err.to_string().contains(expected),
                "{extra:?}: {err} does not mention {expected:?}"
            );
            assert!(!err.hint().is_empty(), "{extra:?} has a hint");
            assert_eq!(err.exit_class(), ExitClass::Config);
        }
    }

    #[test]
    fn missing_project_environment_or_identity_is_a_configuration_error() {
        let table: &[(&[&str], &str)] = &[
            (
                &[
                    "svid-exec",
                    "run",
                    "--identity-id",
                    "i",
                    "--env",
                    "e",
                    "--",
                    "x",
                ],
                "no project",
            ),
            (
                &[
                    "svid-exec",
                    "run",
                    "--identity-id",
                    "i",
                    "--project-id",
                    "p",
                    "--",
                    "x",
                ],
                "no environment",
            ),
            (
                &[
                    "svid-exec",
                    "run",
                    "--project-id",
                    "p",
                    "--env",
                    "e",
                    "--",
                    "x",
                ],
                "machine identity",
            ),
        ];
        for (argv, expected) in table {
            let err = parse(argv).unwrap_err();
            assert!(err.to_string().contains(expected), "{argv:?}: {err}");
        }
    }

    #[test]
    fn valid_values_are_typed() {
        let c = run_with(&[
            "--api-url",
            "http://127.0.0.1:8080/api/",
            "--auth-method",
            "spiffe-auth",
            "--path",
            "app/db/",
            "--path",
            "//x//y",
            "--tag",
            "a,b",
            "--audience",
            "one,two",
            "--files-dir",
            "/run/secrets",
            "--file-mode",
            "0440",
            "--file-owner",
            "1000:2000",
            "--env-file-refs",
            "--watch",
            "--on-change",
            "signal:hup",
            "--stop-signal",
            "15",
            "--forward-to",
            "child",
            "-q",
        ])
        .unwrap();
        assert_eq!(c.server.api_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(c.identity.auth_method, AuthMethod::Spiffe);
        assert_eq!(c.fetch.paths, ["/app/db", "/x/y"]);
        assert_eq!(c.fetch.tags, ["a", "b"]);
        assert_eq!(c.identity.audiences, ["one", "two"]);
        let files = c.delivery.files.unwrap();
        assert_eq!(files.mode, 0o440);
        assert_eq!(
            files.owner,
            Some(FileOwner {
                uid: 1000,
                gid: Some(2000)
            })
        );
        assert!(c.delivery.env.unwrap().file_refs);
        assert_eq!(c.watch.on_change, OnChange::Signal(Signal::HUP));
        assert_eq!(c.watch.stop_signal, Signal::TERM);
        assert_eq!(c.watch.forward_to, ForwardTo::Child);
        assert_eq!(c.output.level, tracing::Level::ERROR);
    }

    #[test]
    fn relative_file_targets_are_made_absolute() {
        let c = run_with(&["--files-dir", "run/s", "--dotenv-file", "./s.env"]).unwrap();
        let targets = c.delivery.files.unwrap().targets;
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(targets.dir.unwrap(), cwd.join("run/s"));
        assert!(targets.dotenv_file.unwrap().is_absolute());
    }

    #[test]
    fn signal_on_change_is_allowed_when_secrets_go_to_files_only() {
        let c = run_with(&[
            "--watch",
            "--on-change",
            "signal:USR1",
            "--no-env",
            "--files-dir",
            "/run/s",
        ])
        .unwrap();
        assert_eq!(c.watch.on_change, OnChange::Signal(Signal::USR1));
        assert!(c.delivery.env.is_none());
    }

    #[test]
    fn api_url_keeps_a_base_path_but_drops_trailing_api() {
        let mut w = Vec::new();
        let u = api_url("https://example.com/infisical/api", false, &mut w).unwrap();
        assert_eq!(u.as_str(), "https://example.com/infisical");
        let u = api_url("http://[::1]:9/", false, &mut w).unwrap();
        assert_eq!(u.as_str(), "http://[::1]:9/");
        assert!(w.is_empty());
        api_url("http://10.0.0.1", true, &mut w).unwrap();
        assert_eq!(w.len(), 1, "insecure http is allowed with a warning");
    }

    #[test]
    fn signal_names_numbers_and_prefixes_parse_alike() {
        for raw in ["TERM", "SIGTERM", "term", "15", " sigterm "] {
            assert_eq!(parse_signal(raw), Some(Signal::TERM), "{raw}");
        }
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }

    #[test]
    fn on_change_and_forward_to_parse_their_documented_forms() {
        assert_eq!(parse_on_change("restart").unwrap(), OnChange::Restart);
        assert_eq!(parse_on_change(" None ").unwrap(), OnChange::None);
        assert_eq!(
            parse_on_change("signal:HUP").unwrap(),
            OnChange::Signal(Signal::HUP)
        );
        assert!(parse_on_change("signal:NOPE").is_err());
        assert!(parse_on_change("reload").is_err());
        assert_eq!(parse_forward_to("group").unwrap(), ForwardTo::Group);
        assert_eq!(parse_forward_to("Child").unwrap(), ForwardTo::Child);
        assert!(parse_forward_to("pid").is_err());
    }

    #[test]
    fn real_time_signals_are_accepted_for_stop_signal_and_on_change() {
        let rt = |n| Signal::from_raw(crate::sys::min_rt_signal() + n).unwrap();
        let c = run_with(&[
            "--watch",
            "--stop-signal",
            "RTMIN+3",
            "--on-change",
            "signal:SIGRTMIN+1",
            "--no-env",
            "--files-dir",
            "/run/s",
        ])
        .unwrap();
        assert_eq!(c.watch.stop_signal, rt(3));
        assert_eq!(c.watch.on_change, OnChange::Signal(rt(1)));
    }

    #[test]
    fn bad_watch_values_are_config_errors_that_say_what_to_use() {
        for (args, says) in [
            (
                &["--stop-signal", "RTMIN+999"][..],
                "--stop-signal \"RTMIN+999\" is not a signal",
            ),
            (
                &["--on-change", "signal:NOPE"][..],
                "--on-change signal: \"nope\" is not a signal",
            ),
            (
                &["--on-change", "reload"][..],
                "--on-change \"reload\" is not an action",
            ),
            (
                &["--forward-to", "parent"][..],
                "--forward-to \"parent\" is not a target",
            ),
        ] {
            let err = run_with(args).unwrap_err();
            assert!(err.to_string().contains(says), "{args:?}: {err}");
            assert_eq!(err.exit_class().code(), 78, "{args:?}");
        }
    }

    #[test]
    fn watch_is_refused_for_check_and_write_gets_no_env_delivery() {
        let err = parse(&[
            "svid-exec",
            "check",
            "--identity-id",
            "i",
            "--project-id",
            "p",
            "--env",
            "e",
            "--watch",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--watch does not apply to check"));
        let c = parse(&[
            "svid-exec",
            "write",
            "--identity-id",
            "i",
            "--project-id",
            "p",
            "--env",
            "e",
            "--dir",
            "/run/s",
        ])
        .unwrap();
        assert!(c.delivery.env.is_none());
        assert_eq!(
            c.delivery.files.unwrap().targets.dir.unwrap(),
            Path::new("/run/s")
        );
    }
}
