//! The flow, one call per arrow: command line -> `Config` -> (JWT-SVID ->
//! access token -> `SecretSet`) -> delivery plan -> exec. Also the one place
//! where an error is printed (`svid-exec: <error>: <cause>…` and its hint) and
//! turned into an exit code, and where a panic becomes exit 70 without a secret.

use crate::error::chain;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::config::{CommandConfig, Config, ConfigError, FetchConfig, LogFormat};
use nix::unistd::{Gid, Uid};

use crate::deliver::env::{EnvError, EnvPlan, EnvSource, ExecLimits};
use crate::deliver::files::{self, FilesError, FilesOptions};
use crate::error::ExitClass;
use crate::flow::FlowError;
use crate::launch::exec::{self, ExecError};
use crate::secrets::SecretSet;

/// Every failure of the launcher itself, each with its exit class and hint.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The child's environment cannot be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The program could not be executed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Getting the JWT-SVID, logging in or fetching failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// Secrets could not be written to files.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The server returned no secrets.
    #[error("no secrets were found in {where_}")]
    Empty {
        /// Project, environment and paths asked for.
        where_: String,
    },
    /// `--require`d keys are absent.
    #[error("required secrets are missing: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// The supervisor could not be set up (`--watch`).
    #[error(transparent)]
    Supervise(#[from] crate::launch::supervise::SuperviseError),
    /// Standard output could not be written.
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
    /// The async runtime could not start.
    #[error("internal error: cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl AppError {
    /// The exit class of this failure.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Self::Config(e) => e.exit_class(),
            Self::Env(e) => e.exit_class(),
            Self::Exec(e) => e.exit_class(),
            Self::Files(e) => e.exit_class(),
            Self::Flow(e) => e.exit_class(),
            Self::Supervise(e) => e.exit_class(),
            Self::Empty { .. } | Self::MissingRequired(_) => ExitClass::Config,
            Self::Runtime(_) | Self::Stdout(_) => ExitClass::Internal,
        }
    }

    /// What to check, if there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Config(e) => Some(e.hint().to_owned()),
            Self::Env(e) => Some(e.hint()),
            Self::Exec(e) => Some(e.hint().to_owned()),
            Self::Files(_) | Self::Flow(_) => None,
            Self::Supervise(e) => match e.exit_class() {
                ExitClass::Internal => Some("this is a bug in svid-exec, please report it".to_owned()),
                _ => None,
            },
            Self::Empty { .. } => Some(
                "check --env and --path (some servers answer a mistyped environment or path with an \
                 empty list) and that the identity may read them; pass --allow-empty if empty is expected"
                    .to_owned(),
            ),
            Self::MissingRequired(_) => Some(
                "check the keys in Infisical, --path, --tag and the identity's access to imports".to_owned(),
            ),
            Self::Stdout(_) => Some("check where standard output goes (a closed or full file?)".to_owned()),
            Self::Runtime(_) => Some("this is a bug in svid-exec, please report it".to_owned()),
        }
    }
}

/// Runs the launcher: the body of the binary's `main`.
pub fn main() -> ExitCode {
    install_panic_hook();
    // Usage errors exit 2, `--help`/`--version` 0, both printed by clap.
    let cli = Cli::try_parse_with_sources(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match panic::catch_unwind(AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            report(&error);
            ExitCode::from(error.exit_class().code())
        }
        // The hook already printed the location.
        Err(_) => ExitCode::from(ExitClass::Internal.code()),
    }
}

/// A panic message could quote a value (an `expect` on a parse, an index into
/// a secret); print only where it happened.
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "an unknown location".to_owned(), ToString::to_string);
        eprintln!("svid-exec: internal error at {location}, please report it");
    }));
}

/// Prints the error with its cause chain and hint, once: as
/// `svid-exec: <chain>` / `svid-exec: hint: <hint>` lines, or as one JSON log
/// object when the user asked for JSON logs.
fn report(error: &AppError) {
    let message = chain(error);
    let hint = error.hint();
    if crate::logging::active_format() == Some(LogFormat::Json) {
        tracing::error!(
            exit_code = error.exit_class().code(),
            hint = hint.as_deref().unwrap_or(""),
            "{message}"
        );
        return;
    }
    eprintln!("svid-exec: {message}");
    if let Some(hint) = hint {
        eprintln!("svid-exec: hint: {hint}");
    }
}

fn run(cli: Cli) -> Result<ExitCode, AppError> {
    // Generated into memory first: clap_complete panics on a write error, and
    // a reader that stops early (`| head`) is not a bug.
    let generated = match &cli.command {
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "svid-exec", &mut script);
            Some(script)
        }
        Command::Man => Some(man_page().map_err(AppError::Stdout)?),
        _ => None,
    };
    if let Some(text) = generated {
        return match std::io::stdout().write_all(&text) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            Err(e) => Err(AppError::Stdout(e)),
        };
    }
    let check_json = matches!(&cli.command, Command::Check(a) if a.output == "json");
    let is_check = matches!(&cli.command, Command::Check(_));
    let config = match Config::from_cli(cli.command) {
        Ok(config) => config,
        // `check` reports an invalid configuration as its first failed step
        // (stdout) and, like every command, as an error on stderr.
        Err(e) if is_check => {
            let code = crate::check::config_failed(&e, check_json);
            report(&AppError::Config(e));
            return code;
        }
        Err(e) => return Err(e.into()),
    };
    crate::logging::init(config.output);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match &config.command {
        CommandConfig::Run { program, args } if !config.watch.enabled => {
            run_exec(&config, program, args)
        }
        CommandConfig::Run { program, args } => {
            crate::watch::run(&config, Some((program, args.as_slice())))
        }
        CommandConfig::Write if config.watch.enabled => crate::watch::run(&config, None),
        CommandConfig::Write => run_write(&config),
        CommandConfig::Check { output } => crate::check::run(&config, *output),
    }
}

/// One manual page: the top-level page, then each command's synopsis,
/// options (with their environment variables and defaults) and exit status.
fn man_page() -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    let command = Cli::command();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("svid-exec {}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.clone());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        let man = clap_mangen::Man::new(sub);
        man.render_synopsis_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_extra_section(&mut page)?;
    }
    Ok(page)
}

/// Fetches the secrets on a current-thread runtime that is gone when this
/// returns, and with it every connection, the JWT-SVID and the access token:
/// only the secret set survives.
fn fetch_blocking(config: &Config) -> Result<SecretSet, AppError> {
    preflight_files(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    let secrets = runtime.block_on(fetch_secrets(config))?;
    check_fetched(&config.fetch, &secrets)?;
    #[cfg(debug_assertions)]
    debug_panic_with_secrets(&secrets);
    Ok(secrets)
}

/// Debug builds only: `SVID_EXEC_DEBUG_PANIC=1` panics with every fetched
/// value in the panic message, so a test can prove that the panic hook prints
/// none of it and exits 70. Release builds do not contain this.
#[cfg(debug_assertions)]
fn debug_panic_with_secrets(secrets: &SecretSet) {
    use secrecy::ExposeSecret as _;
    if std::env::var_os("SVID_EXEC_DEBUG_PANIC").is_some() {
        let values: Vec<&str> = secrets.iter().map(|(_, v)| v.expose_secret()).collect();
        panic!("debug panic carrying the secrets: {values:?}");
    }
}

/// `write` without `--watch`: fetch, write every target, exit 0.
fn run_write(config: &Config) -> Result<ExitCode, AppError> {
    let secrets = fetch_blocking(config)?;
    write_files(config, &secrets)?;
    tracing::info!(count = secrets.len(), "secrets written");
    Ok(ExitCode::SUCCESS)
}

/// `run` without `--watch`: fetch, plan the environment (and refuse a bad
/// one) before writing any file, write files, exec. Returns only on failure.
fn run_exec(config: &Config, program: &OsString, args: &[OsString]) -> Result<ExitCode, AppError> {
    let secrets = fetch_blocking(config)?;
    let file_paths = per_key_paths(config, &secrets);
    let plan = env_plan(config, &secrets, &file_paths)?;
    let mut command_line = Vec::with_capacity(args.len() + 1);
    command_line.push(program.clone());
    command_line.extend_from_slice(args);
    plan.check_size(&command_line, ExecLimits::current())?;
    write_files(config, &secrets)?;
    tracing::info!(
        secrets = secrets.len(),
        in_environment = plan.delivered_names().len(),
        program = %program.to_string_lossy(),
        "starting the program"
    );
    tracing::debug!(names = %plan.delivered_names().join(","), "variables delivered");
    let error = exec::exec(program, args, &plan);
    // exec returned: no program will read the files, so none may stay on disk.
    if let Some(options) = files_options(config) {
        if let Err(e) = files::remove(&options) {
            tracing::warn!(
                error = %crate::error::chain(&e),
                "could not remove the secret files after the program failed to start"
            );
        }
    }
    Err(error.into())
}

/// Where each key's file is in the per-key layout (`DIR/KEY`, a link into
/// the current generation), for `--env-file-refs`.
pub(crate) fn per_key_paths(config: &Config, secrets: &SecretSet) -> BTreeMap<String, PathBuf> {
    let dir = config
        .delivery
        .files
        .as_ref()
        .and_then(|f| f.targets.dir.as_ref());
    dir.map(|dir| {
        secrets
            .names()
            .map(|name| (name.to_owned(), dir.join(name)))
            .collect()
    })
    .unwrap_or_default()
}

/// The child's environment: inherited minus bootstrap variables, plus the
/// secrets (or `KEY_FILE` paths) unless `--no-env`.
pub(crate) fn env_plan<'a>(
    config: &Config,
    secrets: &'a SecretSet,
    file_paths: &'a BTreeMap<String, PathBuf>,
) -> Result<EnvPlan<'a>, AppError> {
    let plan = build_env_plan(config, secrets, file_paths)?;
    for warning in plan.warnings() {
        tracing::warn!("{warning}");
    }
    if !plan.shadowed_names().is_empty() {
        tracing::info!(
            names = %plan.shadowed_names().join(","),
            "--no-override: kept the inherited values of these variables"
        );
    }
    Ok(plan)
}

/// The child's environment, without logging: the secrets' values, or their
/// files' paths with `--env-file-refs`; inherited only with `--no-env`.
pub(crate) fn build_env_plan<'a>(
    config: &Config,
    secrets: &'a SecretSet,
    file_paths: &'a BTreeMap<String, PathBuf>,
) -> Result<EnvPlan<'a>, EnvError> {
    let inherited = crate::deliver::env::inherited();
    match &config.delivery.env {
        Some(options) => {
            let source = if options.file_refs {
                EnvSource::FileRefs(file_paths)
            } else {
                EnvSource::Values
            };
            EnvPlan::build(inherited, secrets, options, source)
        }
        None => Ok(EnvPlan::inherited_only(inherited)),
    }
}

/// Fail closed on what the server returned: an empty set (unless allowed) and
/// missing `--require`d keys are configuration errors, before anything runs.
pub(crate) fn check_fetched(fetch: &FetchConfig, secrets: &SecretSet) -> Result<(), AppError> {
    if secrets.is_empty() && !fetch.allow_empty {
        return Err(AppError::Empty {
            where_: format!(
                "{}, environment {}, path {}",
                fetch.project,
                fetch.environment,
                fetch.paths.join(",")
            ),
        });
    }
    let missing: Vec<String> = fetch
        .require
        .iter()
        .filter(|key| !secrets.contains(key))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AppError::MissingRequired(missing))
    }
}

/// Config -> JWT-SVID -> access token -> `SecretSet`. The session (JWT source,
/// client, token) is dropped here: only the secret set leaves, and the token
/// is never handed to the child.
async fn fetch_secrets(config: &Config) -> Result<SecretSet, AppError> {
    let (secrets, session, _spec) = crate::flow::fetch_once(config).await?;
    drop(session);
    Ok(secrets)
}

/// The file writer's options for this configuration, when files are asked for.
pub(crate) fn files_options(config: &Config) -> Option<FilesOptions> {
    config.delivery.files.as_ref().map(|files| FilesOptions {
        dir: files.targets.dir.clone(),
        dotenv_file: files.targets.dotenv_file.clone(),
        json_file: files.targets.json_file.clone(),
        mode: files.mode,
        owner: files
            .owner
            .map(|o| (Uid::from_raw(o.uid), o.gid.map(Gid::from_raw))),
        allow_non_tmpfs: files.allow_non_tmpfs,
    })
}

/// Checks the file targets (tmpfs, permissions, planted links) before
/// anything is fetched, so a bad target fails without contacting anyone.
pub(crate) fn preflight_files(config: &Config) -> Result<(), AppError> {
    match files_options(config) {
        Some(options) => Ok(files::preflight(&options)?),
        None => Ok(()),
    }
}

/// Writes the configured targets (`config.delivery.files`); the per-key
/// layout keeps `DIR/KEY` as the path of KEY's file, which
/// `--env-file-refs` hands to the child.
fn write_files(config: &Config, secrets: &SecretSet) -> Result<(), AppError> {
    let Some(options) = files_options(config) else {
        return Ok(());
    };
    Ok(write_and_log(secrets, &options)?)
}

/// Writes every target of `options` and logs what was written (names and
/// counts, never values): one place for `run`, `write` and the supervisor.
/// `files::write` refuses names that cannot be files when (and only when)
/// per-key files are asked for: a JSON-only target can carry any key.
pub(crate) fn write_and_log(secrets: &SecretSet, options: &FilesOptions) -> Result<(), FilesError> {
    let written = files::write(secrets, options)?;
    tracing::info!(
        files = written.files.len(),
        dotenv = written.dotenv_file.is_some(),
        json = written.json_file.is_some(),
        "secrets written to files"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::config::ProjectRef;

    fn fetch(require: &[&str], allow_empty: bool) -> FetchConfig {
        FetchConfig {
            project: ProjectRef::Id("p".into()),
            environment: "prod".into(),
            paths: vec!["/".into()],
            recursive: false,
            include_imports: true,
            expand: true,
            tags: vec![],
            require: require.iter().map(|s| (*s).to_owned()).collect(),
            allow_empty,
        }
    }

    #[test]
    fn empty_result_is_refused_unless_allowed() {
        let empty = SecretSet::new();
        let err = check_fetched(&fetch(&[], false), &empty).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(err.to_string().contains("environment prod"));
        check_fetched(&fetch(&[], true), &empty).unwrap();
    }

    #[test]
    fn missing_required_keys_are_listed() {
        let mut set = SecretSet::new();
        set.insert("A", SecretString::from("1"));
        let err = check_fetched(&fetch(&["A", "B", "C"], false), &set).unwrap_err();
        assert_eq!(err.to_string(), "required secrets are missing: B, C");
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
}
