//! The commands, and the only place that sees every layer: the flow is
//! cli -> config -> svid -> infisical -> session -> deliver -> launch, and
//! each file here wires it for one command (`run.rs`, `write.rs`, `check/`,
//! `watch.rs` for `--watch`, `man.rs` for the generated manual and
//! completions). This file holds `main`: the one error printer
//! (`svid-exec: <error>: <cause>…` and its hint, then the exit code), the panic
//! hook (exit 70 without a secret), and the one runtime builder.

mod check;
mod man;
mod ready;
mod run;
mod start;
mod watch;
mod write;

use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::time::Instant;

use crate::cli::{self, Command, Parsed};
use crate::config::{CheckOutput, Config, ConfigError, Task};
use crate::deliver::{DeliverError, Delivery};
use crate::error::{chain, ExitClass, Failure, BUG_HINT};
use crate::launch::exec::ExecError;
use crate::launch::supervise::SuperviseError;
use crate::logging::LogFormat;
use crate::secrets::SecretSet;
use crate::session::{Session, SessionError};

/// Every failure a command reports, each with its exit class and hint.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Getting the JWT-SVID, logging in or fetching failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The secrets cannot be delivered.
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    /// The program could not be executed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The supervisor could not be set up (`--watch`).
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    /// `ready`: the directory is not an svid-exec target, or `--max-age` is invalid.
    #[error(transparent)]
    Ready(#[from] ready::ReadyError),
    /// `--ready-file` cannot be prepared or created.
    #[error(transparent)]
    ReadyFile(#[from] crate::launch::readiness::ReadyFileError),
    /// Standard output could not be written.
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
    /// The async runtime could not start.
    #[error("internal error: cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl Failure for CmdError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Config(e) => e.exit_class(),
            Self::Session(e) => e.exit_class(),
            Self::Deliver(e) => e.exit_class(),
            Self::Exec(e) => e.exit_class(),
            Self::Supervise(e) => e.exit_class(),
            Self::Ready(e) => e.exit_class(),
            Self::ReadyFile(e) => e.exit_class(),
            Self::Runtime(_) | Self::Stdout(_) => ExitClass::Internal,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Config(e) => e.hint(),
            Self::Session(e) => e.hint(),
            Self::Deliver(e) => e.hint(),
            Self::Exec(e) => e.hint(),
            Self::Supervise(e) => e.hint(),
            Self::Ready(e) => e.hint(),
            Self::ReadyFile(e) => e.hint(),
            Self::Stdout(_) => {
                Some("check where standard output goes (a closed or full file?)".to_owned())
            }
            Self::Runtime(_) => Some(BUG_HINT.to_owned()),
        }
    }
}

/// Runs the launcher: the body of the binary's `main`.
pub fn main() -> ExitCode {
    // First, in every mode and before the arguments are read: from here on
    // the process may hold the JWT-SVID, the access token and the secrets,
    // so it cannot dump core and is not readable by the user's other
    // processes (ptrace, /proc/PID/mem). The program gets both back at exec.
    let hardened = crate::sys::harden();
    install_panic_hook();
    // Usage errors exit 2, `--help`/`--version` 0, both printed by clap.
    let argv: Vec<_> = std::env::args_os().collect();
    let parsed = cli::parse_from(&argv).unwrap_or_else(|e| e.exit());
    match panic::catch_unwind(AssertUnwindSafe(|| dispatch(parsed, hardened))) {
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
/// object when the user asked for JSON logs. Several configuration problems
/// are printed as one such pair each, after a line that counts them.
fn report(error: &CmdError) {
    let code = error.exit_class().code();
    match error {
        CmdError::Config(e) if e.problems().len() > 1 => {
            let problems = e.problems();
            print_failure(
                code,
                &format!("invalid configuration ({} problems)", problems.len()),
                None,
            );
            for (i, problem) in problems.iter().enumerate() {
                print_failure(
                    code,
                    &format!("{}) {}", i + 1, problem.message()),
                    Some(problem.hint()),
                );
            }
        }
        _ => print_failure(code, &chain(error), error.hint().as_deref()),
    }
}

/// One failure line and its hint line, or one JSON object (no `hint` key
/// when there is none).
fn print_failure(exit_code: u8, message: &str, hint: Option<&str>) {
    let hint = hint.filter(|h| !h.is_empty());
    if crate::logging::active_format() == Some(LogFormat::Json) {
        if let Some(hint) = hint {
            tracing::error!(exit_code, hint, "{message}");
        } else {
            tracing::error!(exit_code, "{message}");
        }
        return;
    }
    // Escaped like every text log line: the chain can quote server text or names.
    eprintln!("svid-exec: {}", crate::logging::escape(message));
    if let Some(hint) = hint {
        eprintln!("svid-exec: hint: {}", crate::logging::escape(hint));
    }
}

/// The commands without configuration first (`man`, `completions`, `ready`),
/// then the configuration, logging (which reports a failed
/// [`crate::sys::harden`]), and the command.
fn dispatch(parsed: Parsed, hardened: Result<(), nix::errno::Errno>) -> Result<ExitCode, CmdError> {
    let command = &parsed.command;
    if let Some(text) = man::generate(command) {
        print_stdout(&text?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The probe: no configuration, no logging, nothing but its answer.
    if let Command::Ready(args) = command {
        return ready::ready(args);
    }
    let check_output = match command {
        Command::Check(args) if args.output == "json" => Some(CheckOutput::Json),
        Command::Check(_) => Some(CheckOutput::Text),
        _ => None,
    };
    let config = match Config::from_parsed(parsed) {
        Ok(config) => config,
        // `check` reports an invalid configuration as its first failed step
        // (stdout) and, like every command, as an error on stderr.
        Err(e) => {
            // The problems go out in the log format asked for, if that was valid.
            if let Some(log) = e.log_options() {
                crate::logging::init(log);
            }
            if let Some(output) = check_output {
                let code = check::config_failed(&e, output);
                report(&CmdError::Config(e));
                return code;
            }
            return Err(e.into());
        }
    };
    crate::logging::init(config.log);
    if let Err(err) = hardened {
        tracing::warn!(%err, "could not turn off core dumps and ptrace access for svid-exec");
    }
    for note in &config.notes {
        tracing::debug!("{note}");
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match (&config.task, &config.watch) {
        (Task::Run { program, args }, None) => run::exec(&config, program, args),
        (Task::Run { program, args }, Some(settings)) => {
            watch::supervise(&config, settings, Some((program, args.as_slice())))
        }
        (Task::Write, Some(settings)) => watch::supervise(&config, settings, None),
        (Task::Write, None) => write::write(&config),
        (Task::Check { output }, _) => check::check(&config, *output),
    }
}

/// The one runtime: current-thread (svid-exec does one thing at a time),
/// with I/O and time (the supervisor's timerfd needs I/O).
fn runtime() -> Result<Runtime, CmdError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CmdError::Runtime)
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is
/// not an error.
fn print_stdout(bytes: &[u8]) -> Result<(), CmdError> {
    match std::io::stdout().write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CmdError::Stdout(e)),
    }
}

/// How long a one-shot `run` or `write` spends revoking its access token at
/// most, retries included: on a live connection the revoke takes one round
/// trip; a server that does not answer must not hold the program for long
/// (the token then expires on its own).
const ONE_SHOT_REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The one-shot start of `run` and `write`: check the file targets, then log
/// in, fetch, revoke the access token (unless `--no-revoke`: Infisical's
/// default TTL is 30 days) and accept the set for delivery (or, during an
/// outage, take the cached one when the fallback's rules allow), all before
/// anything is written or started. The token is revoked whether the fetch
/// worked or not. The runtime, and with it every connection, the JWT-SVID
/// and the access token, is gone when this returns: only the secret set
/// survives.
fn fetch_once(config: &Config, delivery: &Delivery) -> Result<SecretSet, CmdError> {
    delivery.preflight()?;
    let start::Started { secrets, .. } = runtime()?.block_on(async {
        let mut session = config.session()?;
        start::start(
            config,
            delivery,
            &mut session,
            start::Token::RevokeAfterFetch,
        )
        .await
    })?;
    #[cfg(debug_assertions)]
    debug_panic_with_secrets(&secrets);
    Ok(secrets)
}

/// Ends a one-shot's session once the fetch is done: revokes its token
/// ([`revoke_once`]), or says that `--no-revoke` keeps it.
async fn end_one_shot(config: &Config, session: &mut Session) {
    if config.revoke {
        revoke_once(session).await;
    } else if session.token().is_some() {
        tracing::info!("--no-revoke: the access token stays valid until it expires");
    }
}

/// Revokes the one-shot's token, if it got one, on the connection it used,
/// within [`ONE_SHOT_REVOKE_TIMEOUT`]. A failure is a warning only: it never
/// stops the program nor changes the exit status.
async fn revoke_once(session: &mut Session) {
    if !session.holds_tokens() {
        return;
    }
    if let Err(err) = session
        .revoke(Instant::now() + ONE_SHOT_REVOKE_TIMEOUT)
        .await
    {
        tracing::warn!(
            reason = %chain(&err),
            "could not revoke the access token; it stays valid until it expires"
        );
    }
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
