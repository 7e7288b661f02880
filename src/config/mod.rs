//! `Cli` -> `Config`: every value validated, normalised and typed once, into
//! the option types of the parts that use it (ripgrep's low args -> high
//! args): the JWT source's [`SvidSourceOptions`] (a parsed endpoint and SPIFFE
//! ID), the client's [`ClientOptions`] (an [`ApiUrl`]), the session's
//! [`SessionOptions`], the fetch template (a [`FetchSpec`] whose project may
//! still be a slug), delivery's [`DeliveryOptions`], the supervisor's
//! [`Settings`] and logging's [`LogOptions`]. Nothing below validates them
//! again: [`Config::session`] and [`Config::delivery`] build the parts.
//!
//! Each part is read by its own function from its own flags, independently of
//! the others; only `check_combinations` looks across parts. The value
//! parsers are in `values.rs`.

mod values;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{self, ValueSource};
use crate::deliver::env::EnvOptions;
use crate::deliver::files::FilesOptions;
use crate::deliver::template::Templates;
use crate::deliver::{Delivery, DeliveryOptions};
use crate::error::{ExitClass, Failure, BUG_HINT};
use crate::infisical::{ApiUrl, AuthMethod, Client, ClientOptions, FetchSpec, ProjectRef};
use crate::launch::supervise::{OnChange, Settings};
use crate::logging::{LogFormat, LogOptions};
use crate::session::{Session, SessionError, SessionOptions};
use crate::svid::{
    parse_endpoint, parse_spiffe_id, several_audiences, EndpointOrigin, SvidSource,
    SvidSourceOptions, WorkloadApiOptions, DEFAULT_PER_CALL_TIMEOUT,
};
use values::{
    duration, file_mode, file_owner, list, non_empty, non_empty_path, normalise_secret_path,
    signal, template_spec,
};
pub use values::{parse_forward_to, parse_on_change, parse_signal};

/// A configuration that passed every check, as the parts' own options.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub task: Task,
    /// Where the JWT-SVID comes from.
    pub svid: SvidSourceOptions,
    /// How to reach Infisical.
    pub client: ClientOptions,
    /// Who logs in, and how.
    pub login: SessionOptions,
    /// What to fetch; the project is resolved to its ID once logged in.
    pub fetch: FetchSpec<ProjectRef>,
    /// How long to keep retrying at start before giving up (exit 69).
    pub startup_timeout: Duration,
    /// Revoke the access token before a one-shot `run` execs or `write`
    /// exits (off with `--no-revoke`). The supervisor always revokes.
    pub revoke: bool,
    /// How secrets reach the program (the command line that `execve` counts
    /// with the environment is the task's).
    pub delivery: DeliveryOptions,
    /// The supervisor's settings with `--watch`; `None` without.
    pub watch: Option<Settings>,
    /// Logs.
    pub log: LogOptions,
    /// Things that are allowed but deserve a warning once logging is up.
    pub warnings: Vec<String>,
    /// `--ready-file`: created once the first delivery is complete.
    pub ready_file: Option<PathBuf>,
}

/// The command, with what only it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Exec (or supervise) `program` with `args`.
    Run {
        /// The program as given (looked up in PATH when it has no `/`).
        program: OsString,
        /// Its arguments (never secrets).
        args: Vec<OsString>,
    },
    /// Write files and exit (or keep them fresh with `--watch`).
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

    /// A part's own validation failed: its message is the problem, its hint the hint.
    fn from_part(error: &dyn Failure) -> Self {
        Self::new(error.to_string(), error.hint().unwrap_or_default())
    }
}

impl Failure for ConfigError {
    /// Always [`ExitClass::Config`].
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        Some(self.hint.clone())
    }
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl Config {
    /// Validates the parsed command line. `completions` and `man` have no
    /// configuration and are handled before this (it refuses them).
    pub fn from_cli(command: cli::Command) -> Result<Self> {
        let ready_file = ready_file(&command)?;
        let (task, common, dir) = task(command)?;
        let mut warnings = Vec::new();
        let log = log_options(&common.output)?;
        let login = login_options(&common.identity)?;
        let svid = svid_options(&common.identity, &common.sources, &mut warnings)?;
        let client = client_options(&common.identity, &mut warnings)?;
        let startup_timeout = duration("--startup-timeout", &common.identity.startup_timeout)?;
        let revoke = !common.identity.no_revoke;
        let fetch = fetch_template(&common.fetch)?;
        let mut delivery = delivery_options(&task, common.delivery, dir)?;
        delivery.require = list("--require", common.fetch.require)?;
        delivery.allow_empty = common.fetch.allow_empty;
        delivery.scope = format!(
            "{}, environment {}, path {}",
            fetch.project_id,
            fetch.environment,
            fetch.paths.join(",")
        );
        let settings = watch_settings(&common.watch)?;
        let watch = common.watch.watch.then_some(settings);
        if watch.is_some() && !revoke {
            warnings.push(
                "--no-revoke applies to one-shot run and write; the supervisor (--watch) \
                 revokes every token it replaces and the last one when it stops"
                    .to_owned(),
            );
        }
        check_combinations(&task, &delivery, watch.as_ref())?;
        Ok(Self {
            task,
            svid,
            client,
            login,
            fetch,
            startup_timeout,
            revoke,
            delivery,
            watch,
            log,
            warnings,
            ready_file,
        })
    }

    /// A session (not logged in yet) for the configured identity: the JWT
    /// source, the Infisical client and who logs in.
    pub fn session(&self) -> Result<Session, SessionError> {
        let client = Client::new(&self.client)?;
        let svid = SvidSource::new(self.svid.clone())?;
        Ok(Session::new(
            Arc::new(client),
            Arc::new(svid),
            self.login.clone(),
        ))
    }

    /// The one [`Delivery`] of this run, for everything that delivers:
    /// `run`'s program and its arguments count with the environment against
    /// `execve`'s limits; `write` and `check` start no program.
    pub fn delivery(&self) -> Delivery {
        let command_line = match &self.task {
            Task::Run { program, args } => std::iter::once(program).chain(args).cloned().collect(),
            Task::Write | Task::Check { .. } => Vec::new(),
        };
        Delivery::new(self.delivery.clone(), command_line)
    }
}

/// The task, the options it shares with the others, and its files directory
/// (`--files-dir`, or `--dir` for `write`).
fn task(command: cli::Command) -> Result<(Task, cli::CommonArgs, Option<PathBuf>)> {
    match command {
        cli::Command::Run(run) => {
            let mut command_line = run.command.into_iter();
            let program = command_line.next().ok_or_else(|| {
                ConfigError::new("no command to run", "put the program after `--`")
            })?;
            if program.is_empty() {
                return Err(ConfigError::new(
                    "the command to run is empty",
                    "put the program after `--`",
                ));
            }
            let args = command_line.collect();
            Ok((Task::Run { program, args }, run.common, run.files_dir))
        }
        cli::Command::Write(a) => Ok((Task::Write, a.common, a.dir)),
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
            Ok((Task::Check { output }, a.common, a.files_dir))
        }
        cli::Command::Completions(_) | cli::Command::Man | cli::Command::Ready(_) => {
            Err(ConfigError::new(
                "`completions`, `man` and `ready` take no configuration",
                BUG_HINT,
            ))
        }
    }
}

/// `--ready-file` (`run --watch` and `write`): without `--watch`, `run` execs
/// the program and is gone, so nothing would ever remove the file.
fn ready_file(command: &cli::Command) -> Result<Option<PathBuf>> {
    let (args, exec_mode) = match command {
        cli::Command::Run(run) => (&run.readiness, !run.common.watch.watch),
        cli::Command::Write(write) => (&write.readiness, false),
        _ => return Ok(None),
    };
    let path = non_empty_path("--ready-file", args.ready_file.clone())?;
    if exec_mode && path.is_some() {
        return Err(ConfigError::new(
            "--ready-file needs --watch with run",
            "without --watch svid-exec execs the program and is gone, so nothing would remove \
             the file: add --watch, or drop --ready-file (check SVID_EXEC_READY_FILE)",
        ));
    }
    Ok(path)
}

fn log_options(args: &cli::OutputArgs) -> Result<LogOptions> {
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
    Ok(LogOptions { format, level })
}

/// `--identity-id`, `--auth-method`, `--organization-slug`.
fn login_options(args: &cli::IdentityArgs) -> Result<SessionOptions> {
    let identity_id = non_empty(args.identity_id.clone()).ok_or_else(|| {
        ConfigError::new(
            "no machine identity ID",
            "set --identity-id or INFISICAL_MACHINE_IDENTITY_ID to the ID of the Infisical machine identity",
        )
    })?;
    let method: AuthMethod = args.auth_method.to_ascii_lowercase().parse().map_err(|_| {
        ConfigError::new(
            format!("--auth-method {:?} is not a login method", args.auth_method),
            "use oidc-auth, jwt-auth or spiffe-auth (INFISICAL_AUTH_METHOD)",
        )
    })?;
    Ok(SessionOptions {
        method,
        identity_id,
        organization_slug: non_empty(args.organization_slug.clone()),
    })
}

/// `--jwt-file`, else the Workload API: `--workload-api-socket` (and where
/// it came from), `--audience` (several are warned about), `--spiffe-id`
/// (the last two are checked either way).
fn svid_options(
    args: &cli::IdentityArgs,
    sources: &cli::ValueSources,
    warnings: &mut Vec<String>,
) -> Result<SvidSourceOptions> {
    let audiences: Vec<String> = args.audience.iter().map(|a| a.trim().to_owned()).collect();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            "an audience is empty",
            "give --audience a non-empty value (SVID_EXEC_AUDIENCE, comma-separated); the default is `infisical`",
        ));
    }
    let spiffe_id = non_empty(args.spiffe_id.clone())
        .map(|id| parse_spiffe_id(&id))
        .transpose()
        .map_err(|e| ConfigError::from_part(&e))?;
    if let Some(path) = &args.jwt_file {
        if path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "--jwt-file is empty",
                "give the path of a file holding the JWT, or unset SVID_EXEC_JWT_FILE",
            ));
        }
        return Ok(SvidSourceOptions::File(path.clone()));
    }
    if args.workload_api_socket.trim().is_empty() {
        return Err(ConfigError::new(
            "the Workload API address is empty",
            "set --workload-api-socket or SPIFFE_ENDPOINT_SOCKET (e.g. unix:///run/spire/agent.sock), or use --jwt-file",
        ));
    }
    let endpoint =
        parse_endpoint(&args.workload_api_socket).map_err(|e| ConfigError::from_part(&e))?;
    let origin = match sources.of("workload_api_socket") {
        Some(ValueSource::EnvVariable) => EndpointOrigin::Env,
        Some(ValueSource::DefaultValue) => EndpointOrigin::Default,
        // The command line, or not recorded (a caller that parsed without sources).
        _ => EndpointOrigin::Flag,
    };
    warnings.extend(several_audiences(&audiences));
    Ok(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
        endpoint,
        audiences,
        spiffe_id,
        per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        origin,
    }))
}

/// `--api-url` (by the client's own rules, [`ApiUrl`]: plain `http://` to a
/// non-loopback address only with `--allow-insecure-http`, and then with a
/// warning; a name is checked by the client on the addresses it resolves
/// to), `--ca-cert` and `--ca-cert-only`.
fn client_options(args: &cli::IdentityArgs, warnings: &mut Vec<String>) -> Result<ClientOptions> {
    let api_url = if args.allow_insecure_http {
        ApiUrl::parse_allowing_plain_http(&args.api_url)
    } else {
        ApiUrl::parse(&args.api_url)
    }
    .map_err(|e| ConfigError::from_part(&e))?;
    if api_url.is_plain_http_to_remote() {
        warnings.push(format!(
            "--allow-insecure-http: talking plain HTTP to {}; the access token and secrets cross the network in clear",
            api_url.host()
        ));
    }
    if args.ca_cert_only && args.ca_cert.is_none() {
        return Err(ConfigError::new(
            "--ca-cert-only needs --ca-cert: without it nothing would be trusted",
            "pass the private CA's PEM bundle with --ca-cert (SVID_EXEC_CA_CERT)",
        ));
    }
    Ok(ClientOptions {
        api_url,
        ca_cert: args.ca_cert.clone(),
        ca_cert_only: args.ca_cert_only,
        ..ClientOptions::default()
    })
}

/// What to fetch: the project (ID or slug, resolved later), `--env`,
/// `--path` (normalised), `--recursive`, `--no-imports`, `--no-expand`, `--tag`.
fn fetch_template(args: &cli::FetchArgs) -> Result<FetchSpec<ProjectRef>> {
    let project = match (
        non_empty(args.project_id.clone()),
        non_empty(args.project_slug.clone()),
    ) {
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
    let environment = non_empty(args.environment.clone()).ok_or_else(|| {
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
    Ok(FetchSpec {
        project_id: project,
        environment,
        paths,
        recursive: args.recursive,
        include_imports: !args.no_imports,
        expand: !args.no_expand,
        tags: list("--tag", args.tag.clone())?,
    })
}

/// The file targets and their mode and owner, and the environment options.
/// `--require` and `--allow-empty` (what-to-fetch flags that delivery
/// enforces) are added by [`Config::from_cli`].
fn delivery_options(
    task: &Task,
    args: cli::DeliveryArgs,
    dir: Option<PathBuf>,
) -> Result<DeliveryOptions> {
    let mut targets = FilesOptions {
        dir: non_empty_path("--files-dir", dir)?,
        dotenv_file: non_empty_path("--dotenv-file", args.dotenv_file)?,
        json_file: non_empty_path("--json-file", args.json_file)?,
        ..FilesOptions::default()
    };
    // Checked even without a target, so a typo is not silently ignored.
    targets.mode = file_mode(&args.file_mode)?;
    targets.owner = args.file_owner.as_deref().map(file_owner).transpose()?;
    targets.allow_non_tmpfs = args.allow_non_tmpfs;
    let templates = templates(&args.template, &targets)?;
    let files = (!targets.is_empty()).then_some(targets);
    let allowed_names = list("--allow-env-name", args.allow_env_name)?
        .into_iter()
        .collect();
    let prefix = args.env_prefix.unwrap_or_default();
    if prefix.contains('=') || prefix.contains('\0') {
        return Err(ConfigError::new(
            format!("--env-prefix {prefix:?} contains `=` or NUL"),
            "a variable name cannot contain `=`; use letters, digits and `_`",
        ));
    }
    if args.env_file_refs && files.as_ref().and_then(|f| f.dir.as_ref()).is_none() {
        return Err(ConfigError::new(
            "--env-file-refs needs --files-dir",
            "KEY_FILE=<path> points at one file per secret; add --files-dir DIR (a tmpfs)",
        ));
    }
    let env = match task {
        Task::Write => None,
        Task::Run { .. } | Task::Check { .. } => {
            if args.no_env && args.env_file_refs {
                return Err(ConfigError::new(
                    "--no-env and --env-file-refs contradict each other",
                    "--env-file-refs puts KEY_FILE=<path> in the environment; drop one of them",
                ));
            }
            (!args.no_env).then_some(EnvOptions {
                prefix,
                override_inherited: !args.no_override,
                file_refs: args.env_file_refs,
                allowed_names,
            })
        }
    };
    if matches!(task, Task::Run { .. }) && env.is_none() && files.is_none() && templates.is_empty()
    {
        return Err(ConfigError::new(
            "--no-env without a files option delivers nothing",
            "add --files-dir, --dotenv-file, --json-file or --template, or drop --no-env",
        ));
    }
    Ok(DeliveryOptions {
        env,
        files,
        templates,
        ..DeliveryOptions::default()
    })
}

/// `--template`: each SRC read and parsed, each DEST checked against the
/// other outputs, before any network call (written with `files`' mode,
/// owner and tmpfs rule unless a template gives its own MODE).
fn templates(raw: &[String], files: &FilesOptions) -> Result<Templates> {
    let specs = raw
        .iter()
        .map(|r| template_spec(r))
        .collect::<Result<Vec<_>>>()?;
    // With its cause: "cannot read template X: No such file or directory".
    Templates::load(&specs, files)
        .map_err(|e| ConfigError::new(crate::error::chain(&e), e.hint().unwrap_or_default()))
}

/// The supervisor's settings, checked whether or not `--watch` is given.
fn watch_settings(args: &cli::WatchArgs) -> Result<Settings> {
    let mut settings = Settings::new(duration("--poll-interval", &args.poll_interval)?);
    settings.on_change = parse_on_change(&args.on_change)?;
    settings.stop_signal = signal("--stop-signal", &args.stop_signal)?;
    settings.stop_timeout = duration("--stop-timeout", &args.stop_timeout)?;
    settings.forward_to = parse_forward_to(&args.forward_to)?;
    settings.mlock = args.mlock;
    Ok(settings)
}

/// What is valid alone but not together.
fn check_combinations(
    task: &Task,
    delivery: &DeliveryOptions,
    watch: Option<&Settings>,
) -> Result<()> {
    let Some(watch) = watch else {
        return Ok(());
    };
    if matches!(task, Task::Check { .. }) {
        return Err(ConfigError::new(
            "--watch does not apply to check",
            "use --watch with run or write (check SVID_EXEC_WATCH in the environment)",
        ));
    }
    let env_values = delivery.env.as_ref().is_some_and(|e| !e.file_refs);
    if env_values && matches!(watch.on_change, OnChange::Signal(_)) {
        return Err(ConfigError::new(
            "--on-change signal:<SIG> cannot update secrets delivered in the environment",
            "a signal cannot change a running program's environment: use --on-change restart, \
             or deliver files (--files-dir with --no-env or --env-file-refs)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
