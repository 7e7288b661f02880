//! The flow, one call per arrow: command line -> `Config` -> (JWT-SVID ->
//! access token -> `SecretSet`) -> delivery plan -> exec. Also the one place
//! where an error is printed (`svid-exec: <error>: <cause>…` and its hint) and
//! turned into an exit code, and where a panic becomes exit 70 without a secret.

use crate::error::chain;
use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError, Task};
use crate::deliver::{DeliverError, Delivery};
use crate::error::{ExitClass, Failure, BUG_HINT};
use crate::launch::exec::{self, ExecError};
use crate::logging::LogFormat;
use crate::secrets::SecretSet;
use crate::session::SessionError;

/// Every failure of the launcher itself, each with its exit class and hint.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The secrets cannot be delivered.
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    /// The program could not be executed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Getting the JWT-SVID, logging in or fetching failed.
    #[error(transparent)]
    Session(#[from] SessionError),
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

impl Failure for AppError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Config(e) => e.exit_class(),
            Self::Deliver(e) => e.exit_class(),
            Self::Exec(e) => e.exit_class(),
            Self::Session(e) => e.exit_class(),
            Self::Supervise(e) => e.exit_class(),
            Self::Runtime(_) | Self::Stdout(_) => ExitClass::Internal,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Config(e) => e.hint(),
            Self::Deliver(e) => e.hint(),
            Self::Exec(e) => e.hint(),
            Self::Session(e) => e.hint(),
            Self::Supervise(e) => e.hint(),
            Self::Stdout(_) => {
                Some("check where standard output goes (a closed or full file?)".to_owned())
            }
            Self::Runtime(_) => Some(BUG_HINT.to_owned()),
        }
    }
}

/// Runs the launcher: the body of the binary's `main`.
pub fn main() -> ExitCode {
    install_panic_hook();
    // Usage errors exit 2, `--help`/`--version` 0, both printed by clap.
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
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
    crate::logging::init(config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match (&config.task, &config.watch) {
        (Task::Run { program, args }, None) => run_exec(&config, program, args),
        (Task::Run { program, args }, Some(settings)) => {
            crate::watch::run(&config, settings, Some((program, args.as_slice())))
        }
        (Task::Write, Some(settings)) => crate::watch::run(&config, settings, None),
        (Task::Write, None) => run_write(&config),
        (Task::Check { output }, _) => crate::check::run(&config, *output),
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
/// only the secret set survives, accepted for delivery.
fn fetch_blocking(config: &Config, delivery: &Delivery) -> Result<SecretSet, AppError> {
    delivery.preflight()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    let secrets = runtime.block_on(fetch_secrets(config))?;
    delivery.accept(&secrets)?;
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
    let delivery = config.delivery();
    let secrets = fetch_blocking(config, &delivery)?;
    delivery.write(&secrets)?;
    tracing::info!(count = secrets.len(), "secrets written");
    Ok(ExitCode::SUCCESS)
}

/// `run` without `--watch`: fetch and accept (the environment is checked
/// before any file is written), write the files, exec. Returns only on failure.
fn run_exec(config: &Config, program: &OsString, args: &[OsString]) -> Result<ExitCode, AppError> {
    let delivery = config.delivery();
    let secrets = fetch_blocking(config, &delivery)?;
    let plan = delivery.env(&secrets)?;
    plan.log();
    delivery.write(&secrets)?;
    tracing::info!(
        secrets = secrets.len(),
        in_environment = plan.delivered_names().len(),
        program = %program.to_string_lossy(),
        "starting the program"
    );
    tracing::debug!(names = %plan.delivered_names().join(","), "variables delivered");
    let error = exec::exec(program, args, &plan);
    // exec returned: no program will read the files, so none may stay on disk.
    if let Err(e) = delivery.remove() {
        tracing::warn!(
            error = %crate::error::chain(&e),
            "could not remove the secret files after the program failed to start"
        );
    }
    Err(error.into())
}

/// Config -> JWT-SVID -> access token -> `SecretSet`. The session (JWT source,
/// client, token) is dropped here: only the secret set leaves, and the token
/// is never handed to the child.
async fn fetch_secrets(config: &Config) -> Result<SecretSet, AppError> {
    let mut session = config.session()?;
    let deadline = tokio::time::Instant::now() + config.startup_timeout;
    let (secrets, _spec) = session.start(&config.fetch, deadline).await?;
    drop(session);
    Ok(secrets)
}
