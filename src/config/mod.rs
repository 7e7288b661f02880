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
//! the others; only `check_combinations` looks across parts. Every part is
//! read even when another failed, and every problem is reported together
//! (`problems.rs`), each naming where its value came from (flag, variable or
//! default). Options given where they do not apply were found by the parser
//! (`cli::scope`): a flag is a problem, a variable a debug note. Delivery's
//! options are read in `delivery.rs`, the value parsers are in `values.rs`.

mod delivery;
mod fallback;
mod problems;
mod values;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{self, ValueSource};
use crate::deliver::{Delivery, DeliveryOptions};
use crate::error::{Failure, BUG_HINT};
use crate::infisical::{ApiUrl, AuthMethod, Client, ClientOptions, FetchSpec, ProjectRef};
use crate::launch::supervise::{OnChange, Settings};
use crate::logging::{LogFormat, LogOptions};
use crate::session::{Session, SessionError, SessionOptions};
use crate::svid::{
    parse_endpoint, parse_spiffe_id, several_audiences, EndpointOrigin, SvidSource,
    SvidSourceOptions, WorkloadApiOptions, DEFAULT_PER_CALL_TIMEOUT,
};
use delivery::delivery_options;
use problems::Problems;
pub use problems::{ConfigError, Problem};
use values::{
    duration, is_uuid, list, non_empty, non_empty_path, normalise_secret_path, readable_file,
    signal,
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
    /// Things to log at debug level once logging is up (variables ignored
    /// because their option does not apply to this command or mode).
    pub notes: Vec<String>,
    /// Where each value came from: also for what is found wrong with a
    /// value only when a part is built from it ([`Config::session`]).
    pub origins: cli::Origins,
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

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl Config {
    /// Validates the parsed command line, reporting every problem at once.
    /// `completions` and `man` have no configuration and are handled before
    /// this (it refuses them).
    pub fn from_parsed(parsed: cli::Parsed) -> Result<Self> {
        let cli::Parsed {
            command,
            origins,
            out_of_place,
        } = parsed;
        let mut p = Problems::new(&origins);
        let mut notes = Vec::new();
        for o in &out_of_place {
            if o.variable.is_some() {
                notes.push(format!("{}; ignored", o.problem()));
            } else {
                p.push(Problem::new(o.problem(), o.hint()));
            }
        }
        for (id, value) in origins.rejected() {
            p.push(Problem::new(
                format!("{}: {value:?} is not a boolean", p.label(id)),
                "use true or false (or 1/0, yes/no, on/off); unset the variable for the default (off)",
            ));
        }
        let Some((task, common, dir, ready_file)) = task(command, &mut p) else {
            return Err(p.into_error(None));
        };
        let mut warnings = Vec::new();
        let log = log_options(&common.output, &mut p);
        let login = login_options(&common.identity, &mut p);
        let svid = svid_options(&common.identity, &mut warnings, &mut p);
        let client = client_options(&common.identity, &mut warnings, &mut p);
        let startup_timeout = p.value("startup_timeout", |l| {
            duration(l, &common.identity.startup_timeout)
        });
        let fetch = fetch_template(&common.fetch, &mut p);
        let delivery = delivery_options(&task, &common, dir, &mut p);
        let fallback = fallback::read(&common.delivery, &mut p);
        let settings = watch_settings(&common.watch, &mut p);
        let ready_file = p.value("ready_file", |l| non_empty_path(l, ready_file));
        let parts = (
            log,
            login,
            svid,
            client,
            startup_timeout,
            fetch,
            delivery,
            settings,
            ready_file,
            fallback,
        );
        let (
            Some(log),
            Some(login),
            Some(svid),
            Some(client),
            Some(startup_timeout),
            Some(fetch),
            Some(mut delivery),
            Some(settings),
            Some(ready_file),
            Some(fallback),
        ) = parts
        else {
            return Err(p.into_error(log));
        };
        delivery.scope = format!(
            "{}, environment {}, path {}",
            fetch.project_id,
            fetch.environment,
            fetch.paths.join(",")
        );
        let bound_to = fallback::Parts {
            svid: &svid,
            client: &client,
            login: &login,
            fetch: &fetch,
            delivery: &delivery,
        };
        delivery.fallback = fallback::options(fallback, &bound_to, &mut p);
        // Under --watch the supervisor revokes whatever --no-revoke says: the
        // scope table keeps the flag out of that mode.
        let revoke = !common.identity.no_revoke;
        let watch = common.watch.watch.then_some(settings);
        check_combinations(&delivery, watch.as_ref(), &mut p);
        if !p.is_empty() {
            return Err(p.into_error(Some(log)));
        }
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
            notes,
            origins,
            ready_file,
        })
    }

    /// A session (not logged in yet) for the configured identity: the JWT
    /// source, the Infisical client and who logs in. A configured file that
    /// proves unusable only now (a `--ca-cert` that holds no PEM
    /// certificate) is named as the user set it, like a problem found
    /// before: `SVID_EXEC_CA_CERT (--ca-cert): cannot use /x.pem: …`.
    pub fn session(&self) -> Result<Session, SessionError> {
        let client = Client::new(&self.client)
            .map_err(|e| e.naming_option(|flag| self.origins.label_of_flag(flag)))?;
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

/// The task, the options it shares with the others, its files directory
/// (`--files-dir`, or `--dir` for `write`) and its `--ready-file` (where it
/// does not apply, `cli::scope` has refused the flag and dropped the
/// variable). `None` only for a command without configuration (a bug: they
/// are handled before).
fn task(
    command: cli::Command,
    p: &mut Problems<'_>,
) -> Option<(Task, cli::CommonArgs, Option<PathBuf>, Option<PathBuf>)> {
    match command {
        cli::Command::Run(run) => {
            let mut command_line = run.command.into_iter();
            // clap requires at least one value after `--`; it may be empty.
            let program = command_line.next().unwrap_or_default();
            if program.is_empty() {
                p.push(Problem::new(
                    "the command to run is empty",
                    "put the program after `--`",
                ));
            }
            let args = command_line.collect();
            Some((
                Task::Run { program, args },
                run.common,
                run.files_dir,
                run.readiness.ready_file,
            ))
        }
        cli::Command::Write(a) => Some((Task::Write, a.common, a.dir, a.readiness.ready_file)),
        cli::Command::Check(a) => {
            let output = match a.output.as_str() {
                "text" => CheckOutput::Text,
                "json" => CheckOutput::Json,
                other => {
                    p.push(Problem::new(
                        format!("--output: {other:?} is not a report format"),
                        "use `text` or `json`",
                    ));
                    CheckOutput::Text
                }
            };
            Some((
                Task::Check { output },
                a.common,
                a.files_dir,
                a.readiness.ready_file,
            ))
        }
        cli::Command::Completions(_) | cli::Command::Man | cli::Command::Ready(_) => {
            p.push(Problem::new(
                "`completions`, `man` and `ready` take no configuration",
                BUG_HINT,
            ));
            None
        }
    }
}

fn log_options(args: &cli::OutputArgs, p: &mut Problems<'_>) -> Option<LogOptions> {
    let format = p.value("log_format", |l| {
        match args.log_format.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(Problem::new(
                format!("{l}: {other:?} is not a log format"),
                "use `text` or `json`",
            )),
        }
    });
    let level = p.value("log_level", |l| {
        match args.log_level.to_ascii_lowercase().as_str() {
            "error" => Ok(tracing::Level::ERROR),
            "warn" | "warning" => Ok(tracing::Level::WARN),
            "info" => Ok(tracing::Level::INFO),
            "debug" => Ok(tracing::Level::DEBUG),
            "trace" => Ok(tracing::Level::TRACE),
            other => Err(Problem::new(
                format!("{l}: {other:?} is not a log level"),
                "use one of error, warn, info, debug, trace",
            )),
        }
    });
    let level = if args.quiet {
        tracing::Level::ERROR
    } else {
        level?
    };
    Some(LogOptions {
        format: format?,
        level,
    })
}

/// A required value: trimmed, or a problem saying it is missing (or given
/// but blank) and how to set it.
fn required(
    p: &mut Problems<'_>,
    id: &str,
    value: Option<&String>,
    what: &str,
    hint: &str,
) -> Option<String> {
    let value = non_empty(value.cloned());
    if value.is_none() {
        let message = if p.given(id) {
            format!("{} is empty; {what} is required", p.label(id))
        } else {
            format!("no {what}: {}", p.none_set(&[id]))
        };
        p.push(Problem::new(message, hint));
    }
    value
}

/// `--identity-id` (a UUID, checked before any network call),
/// `--auth-method`, `--organization-slug`.
fn login_options(args: &cli::IdentityArgs, p: &mut Problems<'_>) -> Option<SessionOptions> {
    let identity_id = required(
        p,
        "identity_id",
        args.identity_id.as_ref(),
        "machine identity ID",
        "set it to the ID of the Infisical machine identity (Access Control > Machine Identities)",
    )
    .and_then(|id| {
        p.value("identity_id", |l| {
            if is_uuid(&id) {
                Ok(id.clone())
            } else {
                Err(Problem::new(
                    format!("{l}: {id:?} is not a machine identity ID (a UUID such as 1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0)"),
                    "copy the identity's ID from Infisical (Access Control > Machine Identities), not its name",
                ))
            }
        })
    });
    let method: Option<AuthMethod> = p.value("auth_method", |l| {
        args.auth_method.to_ascii_lowercase().parse().map_err(|_| {
            Problem::new(
                format!("{l}: {:?} is not a login method", args.auth_method),
                "use oidc-auth, jwt-auth or spiffe-auth",
            )
        })
    });
    Some(SessionOptions {
        method: method?,
        identity_id: identity_id?,
        organization_slug: non_empty(args.organization_slug.clone()),
    })
}

/// `--jwt-file`, else the Workload API: `--workload-api-socket` (and where
/// it came from), `--audience` (several are warned about), `--spiffe-id`
/// (the last two are checked either way).
fn svid_options(
    args: &cli::IdentityArgs,
    warnings: &mut Vec<String>,
    p: &mut Problems<'_>,
) -> Option<SvidSourceOptions> {
    let audiences = p.value("audience", |l| {
        let audiences: Vec<String> = args.audience.iter().map(|a| a.trim().to_owned()).collect();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            Err(Problem::new(
                format!("{l}: an audience is empty"),
                "give --audience a non-empty value (comma-separated in SVID_EXEC_AUDIENCE); the default is `infisical`",
            ))
        } else {
            Ok(audiences)
        }
    });
    let spiffe_id = p.value("spiffe_id", |l| {
        non_empty(args.spiffe_id.clone())
            .map(|id| parse_spiffe_id(&id))
            .transpose()
            .map_err(|e| part_problem(l, &e))
    });
    if let Some(path) = &args.jwt_file {
        let path = p.value("jwt_file", |l| {
            if path.as_os_str().is_empty() {
                Err(Problem::new(
                    format!("{l} is empty"),
                    "give the path of a file holding the JWT, or unset SVID_EXEC_JWT_FILE",
                ))
            } else {
                Ok(path.clone())
            }
        });
        return Some(SvidSourceOptions::File(path?));
    }
    let endpoint = p.value("workload_api_socket", |l| {
        if args.workload_api_socket.trim().is_empty() {
            return Err(Problem::new(
                format!("{l}: the Workload API address is empty"),
                "set --workload-api-socket or SPIFFE_ENDPOINT_SOCKET (e.g. unix:///run/spire/agent.sock), or use --jwt-file",
            ));
        }
        parse_endpoint(&args.workload_api_socket).map_err(|e| part_problem(l, &e))
    });
    // Where the address came from, for the Workload API's own messages
    // ("SPIFFE_ENDPOINT_SOCKET is unset … trying the default").
    let origin = match p.source("workload_api_socket") {
        Some(ValueSource::EnvVariable) => EndpointOrigin::Env,
        Some(ValueSource::DefaultValue) => EndpointOrigin::Default,
        _ => EndpointOrigin::Flag,
    };
    let audiences = audiences?;
    warnings.extend(several_audiences(&audiences));
    Some(SvidSourceOptions::WorkloadApi(WorkloadApiOptions {
        endpoint: endpoint?,
        audiences,
        spiffe_id: spiffe_id?,
        per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        origin,
    }))
}

/// A part's own validation failed: its message after the label (unless it
/// already names the option as the label does), its hint.
fn part_problem(label: &str, error: &dyn Failure) -> Problem {
    let message = error.to_string();
    let message = if message.contains(label) {
        message
    } else {
        format!("{label}: {message}")
    };
    Problem::new(message, error.hint().unwrap_or_default())
}

/// `--api-url` (by the client's own rules, [`ApiUrl`]: plain `http://` to a
/// non-loopback address only with `--allow-insecure-http`, and then with a
/// warning; a name is checked by the client on the addresses it resolves
/// to), `--ca-cert` (a readable file) and `--ca-cert-only` (only with it).
fn client_options(
    args: &cli::IdentityArgs,
    warnings: &mut Vec<String>,
    p: &mut Problems<'_>,
) -> Option<ClientOptions> {
    let api_url = p.value("api_url", |l| {
        if args.allow_insecure_http {
            ApiUrl::parse_allowing_plain_http(&args.api_url)
        } else {
            ApiUrl::parse(&args.api_url)
        }
        .map_err(|e| part_problem(l, &e))
    });
    if let Some(url) = api_url.as_ref().filter(|u| u.is_plain_http_to_remote()) {
        warnings.push(format!(
            "--allow-insecure-http: talking plain HTTP to {}; the access token and secrets cross the network in clear",
            url.host()
        ));
    }
    let ca_cert = p.value("ca_cert", |l| {
        let path = non_empty_path(l, args.ca_cert.clone())?;
        if let Some(path) = &path {
            readable_file(l, path)?;
        }
        Ok(path)
    });
    if args.ca_cert_only && args.ca_cert.is_none() {
        p.push(Problem::new(
            format!(
                "{} needs --ca-cert: without it nothing would be trusted",
                p.label("ca_cert_only")
            ),
            "pass the private CA's PEM bundle with --ca-cert (SVID_EXEC_CA_CERT)",
        ));
    }
    Some(ClientOptions {
        api_url: api_url?,
        ca_cert: ca_cert?,
        ca_cert_only: args.ca_cert_only,
        ..ClientOptions::default()
    })
}

/// What to fetch: the project (ID or slug, resolved later), `--env`,
/// `--path` (normalised), `--recursive`, `--no-imports`, `--no-expand`, `--tag`.
fn fetch_template(args: &cli::FetchArgs, p: &mut Problems<'_>) -> Option<FetchSpec<ProjectRef>> {
    let project = project(args, p);
    let environment = required(
        p,
        "environment",
        args.environment.as_ref(),
        "environment",
        "set it to the environment's slug, e.g. prod",
    );
    let paths = p.value("path", |l| {
        let paths = args
            .path
            .iter()
            .map(|raw| normalise_secret_path(l, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if paths.is_empty() {
            vec!["/".to_owned()]
        } else {
            paths
        })
    });
    let tags = p.value("tag", |l| list(l, &args.tag));
    Some(FetchSpec {
        project_id: project?,
        environment: environment?,
        paths: paths?,
        recursive: args.recursive,
        include_imports: !args.no_imports,
        expand: !args.no_expand,
        tags: tags?,
    })
}

/// `--project-id` (a UUID) or `--project-slug`, exactly one.
fn project(args: &cli::FetchArgs, p: &mut Problems<'_>) -> Option<ProjectRef> {
    match (
        non_empty(args.project_id.clone()),
        non_empty(args.project_slug.clone()),
    ) {
        (Some(id), None) => p.value("project_id", |l| {
            if is_uuid(&id) {
                Ok(ProjectRef::Id(id.clone()))
            } else {
                Err(Problem::new(
                    format!("{l}: {id:?} is not a project ID (a UUID such as 7c1d9a4e-5b2f-4e8a-9c3d-2f6b8e1a4d70)"),
                    format!("did you mean --project-slug {id}? (INFISICAL_PROJECT_SLUG); a project's ID is in its settings in Infisical"),
                ))
            }
        }),
        (None, Some(slug)) => Some(ProjectRef::Slug(slug)),
        (Some(_), Some(_)) => {
            p.push(Problem::new(
                format!(
                    "both {} and {} are set",
                    p.label("project_id"),
                    p.label("project_slug")
                ),
                "give one of them",
            ));
            None
        }
        (None, None) => {
            p.push(Problem::new(
                format!(
                    "no project: {}",
                    p.none_set(&["project_id", "project_slug"])
                ),
                "set the project's ID (--project-id) or its slug (--project-slug)",
            ));
            None
        }
    }
}

/// The supervisor's settings, checked whether or not `--watch` is given
/// (unless their variables were dropped as not applying: then defaults).
fn watch_settings(args: &cli::WatchArgs, p: &mut Problems<'_>) -> Option<Settings> {
    let poll = p.value("poll_interval", |l| duration(l, &args.poll_interval));
    let on_change = p.value("on_change", |l| parse_on_change(l, &args.on_change));
    let stop_signal = p.value("stop_signal", |l| signal(l, &args.stop_signal));
    let stop_timeout = p.value("stop_timeout", |l| duration(l, &args.stop_timeout));
    let forward_to = p.value("forward_to", |l| parse_forward_to(l, &args.forward_to));
    let mut settings = Settings::new(poll?);
    settings.on_change = on_change?;
    settings.stop_signal = stop_signal?;
    settings.stop_timeout = stop_timeout?;
    settings.forward_to = forward_to?;
    settings.mlock = args.mlock;
    Some(settings)
}

/// What is valid alone but not together.
fn check_combinations(delivery: &DeliveryOptions, watch: Option<&Settings>, p: &mut Problems<'_>) {
    let Some(watch) = watch else {
        return;
    };
    let memfd_template = delivery.templates.memfd_names().next().is_some();
    if (delivery.memfd || memfd_template) && matches!(watch.on_change, OnChange::Signal(_)) {
        let what = if delivery.memfd {
            p.label("memfd")
        } else {
            format!("{} memfd:NAME", p.label("template"))
        };
        p.push(Problem::new(
            format!(
                "{} signal:<SIG> cannot update what is delivered with {what}",
                p.label("on_change"),
            ),
            "a sealed memfd cannot change: use --on-change restart (fresh memfds at each start) \
             or none",
        ));
        return;
    }
    let env_values = delivery.env.as_ref().is_some_and(|e| !e.file_refs);
    if env_values && matches!(watch.on_change, OnChange::Signal(_)) {
        p.push(Problem::new(
            format!(
                "{} signal:<SIG> cannot update secrets delivered in the environment",
                p.label("on_change")
            ),
            "a signal cannot change a running program's environment: use --on-change restart, \
             or deliver files (--files-dir with --no-env or --env-file-refs)",
        ));
    }
}

#[cfg(test)]
mod tests;
