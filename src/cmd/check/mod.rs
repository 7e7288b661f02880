//! `svid-exec check`: runs every step of the flow once (configuration, Workload
//! API, SVIDs, login, project, paths, file targets, environment size, revoke)
//! and reports each as ok, warn, fail or skip, in text or one JSON document.
//!
//! The report carries names, paths, claims and the server's messages, never a
//! secret value, the JWT or the access token: values stay in the `SecretSet`
//! (used only to size the environment) and are dropped with it.

mod report;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{runtime, CmdError};
use crate::config::{CheckOutput, Config, ConfigError};
use crate::deliver::env::ExecLimits;
use crate::deliver::{files, DeliverError, Delivery};
use crate::error::{chain, Failure};
use crate::infisical::{AuthMethod, FetchSpec, ProjectRef};
use crate::secrets::SecretSet;
use crate::session::{Session, TokenTimes};
use crate::svid::{
    describe_endpoint, list_jwt_svids, SvidError, SvidSource, SvidSourceOptions, SvidSummary,
    WorkloadApiOptions,
};
use report::{emit, Report};

/// Longest time the final revoke may take: the token expires by itself anyway.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// "1 secret", "3 secrets".
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The steps after `configuration`, for a report that stops there.
const LATER_STEPS: &[&str] = &[
    "workload-api",
    "svid",
    "login",
    "project",
    "paths",
    "files",
    "environment",
    "revoke",
];

/// `check` with a configuration that did not validate: the first step fails
/// (78) and every other is skipped, in the requested format.
pub(super) fn config_failed(
    error: &ConfigError,
    output: CheckOutput,
) -> Result<ExitCode, CmdError> {
    let mut report = Report::default();
    report.fail_with("configuration", error);
    for name in LATER_STEPS {
        report.skip(*name, "the configuration is invalid");
    }
    emit(&report, output)
}

/// Runs every step and prints the report; the exit code is the first failure's.
pub(super) fn check(config: &Config, output: CheckOutput) -> Result<ExitCode, CmdError> {
    let report = runtime()?.block_on(steps(config));
    emit(&report, output)
}

async fn steps(config: &Config) -> Report {
    let mut report = Report::default();
    let deadline = Instant::now() + config.startup_timeout;
    configuration_step(&mut report, config);

    let mut session = if identity_steps(&mut report, config, deadline).await {
        login_step(&mut report, config, deadline).await
    } else {
        report.skip("login", "no JWT to log in with");
        None
    };
    let secrets = if let Some(session) = session.as_mut() {
        fetch_steps(&mut report, config, session, deadline).await
    } else {
        report.skip("project", "not logged in");
        report.skip("paths", "not logged in");
        None
    };
    let delivery = config.delivery();
    files_step(&mut report, &delivery);
    fallback_step(&mut report, &delivery);
    template_steps(&mut report, &delivery, secrets.as_ref());
    environment_step(&mut report, &delivery, secrets.as_ref());
    drop(secrets);
    match session.as_mut() {
        Some(session) => match session.revoke(Instant::now() + REVOKE_TIMEOUT).await {
            Ok(()) => report.ok("revoke", "revoked the access token this check obtained"),
            Err(e) => report.warn(
                "revoke",
                format!("could not revoke the access token: {}", chain(&e)),
                Some("it expires by itself at the end of its TTL".to_owned()),
            ),
        },
        None => report.skip("revoke", "no access token was obtained"),
    }
    report
}

fn configuration_step(report: &mut Report, config: &Config) {
    let detail = format!(
        "valid: identity {} ({}), {}, environment {}, paths {}, API {}",
        config.login.identity_id,
        config.login.method,
        config.fetch.project_id,
        config.fetch.environment,
        config.fetch.paths.join(","),
        config.client.api_url,
    );
    if config.warnings.is_empty() {
        report.ok("configuration", detail);
    } else {
        report.warn(
            "configuration",
            format!("{detail}; but: {}", config.warnings.join("; ")),
            None,
        );
    }
}

/// `workload-api` (or `jwt-file`) and one `svid` step per JWT-SVID. True when
/// a JWT could be obtained, i.e. a login can be tried.
async fn identity_steps(report: &mut Report, config: &Config, deadline: Instant) -> bool {
    let source = match SvidSource::new(config.svid.clone()) {
        Ok(s) => s,
        Err(e) => {
            report.fail_with("workload-api", &e);
            report.skip("svid", "no JWT source");
            return false;
        }
    };
    let name = match &config.svid {
        SvidSourceOptions::WorkloadApi(_) => "workload-api",
        SvidSourceOptions::File(_) => "jwt-file",
    };
    let method = config.login.method;
    let jwt = match (source.fetch(deadline).await, &config.svid) {
        (Ok(jwt), _) => jwt,
        // The agent answered, with a token that contradicts its answer: the
        // agent is reachable; which JWT-SVID is wrong, and how, is the `svid`
        // steps' to say.
        (Err(e @ SvidError::Contradicted { .. }), SvidSourceOptions::WorkloadApi(options)) => {
            report.ok(
                name,
                format!("reachable at {}", describe_endpoint(&options.endpoint)),
            );
            refused_svid_steps(report, options, &e, method, deadline).await;
            return false;
        }
        (Err(e), _) => {
            report.fail_with(name, &e);
            report.skip("svid", "no JWT-SVID");
            return false;
        }
    };
    let used = SvidSummary {
        claims: jwt.claims().clone(),
        ..SvidSummary::default()
    };
    drop(jwt);
    match &config.svid {
        SvidSourceOptions::WorkloadApi(options) => {
            report.ok(
                name,
                format!("reachable at {}", describe_endpoint(&options.endpoint)),
            );
            match list_jwt_svids(options, deadline).await {
                Ok(all) => {
                    for svid in &all {
                        let is_used = svid.claims.sub == used.claims.sub;
                        svid_step(report, svid, is_used, method);
                    }
                    if all.is_empty() {
                        svid_step(report, &used, true, method);
                    }
                }
                // The login step below tells whether the one JWT it needs still comes.
                Err(e) => {
                    report.warn("svid", format!("could not list the JWT-SVIDs: {e}"), None);
                    svid_step(report, &used, true, method);
                }
            }
        }
        SvidSourceOptions::File(path) => {
            report.ok(
                name,
                format!("{} is readable and holds a JWT", path.display()),
            );
            svid_step(report, &used, true, method);
        }
    }
    true
}

/// The `svid` steps after a fetch refused the agent's answer (`refused`):
/// every JWT-SVID the agent answers, each judged, the first (the one a login
/// uses) failing when it is refused. If the listing shows nothing wrong (the
/// agent answered differently this time) or fails, the fetch's refusal is
/// the step.
async fn refused_svid_steps(
    report: &mut Report,
    options: &WorkloadApiOptions,
    refused: &SvidError,
    method: AuthMethod,
    deadline: Instant,
) {
    let all = list_jwt_svids(options, deadline).await.unwrap_or_default();
    if all.iter().all(|svid| svid.refused.is_none()) {
        report.fail_with("svid", refused);
        return;
    }
    for (i, svid) in all.iter().enumerate() {
        svid_step(report, svid, i == 0, method);
    }
}

/// One `svid` line: SPIFFE ID, audience, time to expiry, `iss`; failed (when
/// used for login) or warned about when a fetch would refuse it.
fn svid_step(report: &mut Report, svid: &SvidSummary, used: bool, method: AuthMethod) {
    let claims = &svid.claims;
    let left = claims.remaining(SystemTime::now());
    let expiry = match left {
        Some(Duration::ZERO) => "expired".to_owned(),
        Some(left) => format!("expires in {}", humantime::format_duration(left)),
        None => "no exp claim".to_owned(),
    };
    let iss = claims
        .iss
        .as_deref()
        .map_or_else(|| "no iss claim".to_owned(), |iss| format!("iss {iss}"));
    let mut detail = format!(
        "{} (audience {}, {expiry}, {iss}",
        claims.sub.as_deref().unwrap_or("(no sub claim)"),
        claims.aud.join(","),
    );
    if let Some(hint) = &svid.hint {
        let _ = write!(detail, ", hint {hint}");
    }
    detail.push(')');
    match (used, &svid.refused) {
        (true, None) => detail.push_str(", used for login"),
        (true, Some(_)) => detail.push_str(", the one a login would use"),
        (false, _) => {}
    }
    if let Some(refused) = &svid.refused {
        let detail = format!("{detail}: {}", chain(refused));
        if used {
            report.fail("svid", detail, refused.hint(), refused.exit_class());
        } else {
            report.warn("svid", detail, refused.hint());
        }
    } else if used && claims.iss.is_none() && method == AuthMethod::Oidc {
        report.warn(
            "svid",
            detail,
            Some(
                "OIDC Auth needs an `iss` claim: set `jwt_issuer` in the SPIRE server \
                 configuration to the OIDC discovery provider's URL (the identity's bound issuer), \
                 or configure the identity with JWT Auth (--auth-method jwt-auth) or SPIFFE Auth"
                    .to_owned(),
            ),
        );
    } else if used && left == Some(Duration::ZERO) {
        report.warn(
            "svid",
            detail,
            Some("an expired JWT is refused at login; is its writer (spiffe-helper) or the agent still running?".to_owned()),
        );
    } else {
        report.ok("svid", detail);
    }
}

async fn login_step(report: &mut Report, config: &Config, deadline: Instant) -> Option<Session> {
    let mut session = match config.session() {
        Ok(s) => s,
        Err(e) => {
            report.fail_with("login", &e);
            return None;
        }
    };
    match session.login(deadline).await {
        Ok(token) => {
            let ttl = TokenTimes::from(token).expires_in;
            report.ok(
                "login",
                format!(
                    "logged in as identity {} with {}; the access token is valid for {}",
                    config.login.identity_id,
                    config.login.method,
                    humantime::format_duration(ttl)
                ),
            );
            Some(session)
        }
        Err(e) => {
            report.fail_with("login", &e);
            None
        }
    }
}

/// `project`, one `path …` step per path, then `secrets` (the merged set
/// against `--require` and `--allow-empty`). The merged set when every path was read.
async fn fetch_steps(
    report: &mut Report,
    config: &Config,
    session: &mut Session,
    deadline: Instant,
) -> Option<SecretSet> {
    let spec = match session.resolve(&config.fetch, deadline).await {
        Ok(spec) => spec,
        Err(e) => {
            report.fail_with("project", &e);
            report.skip("paths", "the project is unknown");
            return None;
        }
    };
    match &config.fetch.project_id {
        ProjectRef::Id(id) => report.ok(
            "project",
            format!("project ID {id} given (read access is checked per path below)"),
        ),
        ProjectRef::Slug(slug) => report.ok(
            "project",
            format!("slug {slug} is project {}", spec.project_id),
        ),
    }
    let mut merged = SecretSet::new();
    let mut all_read = true;
    for path in &spec.paths {
        let one = FetchSpec {
            paths: vec![path.clone()],
            ..spec.clone()
        };
        let name = format!("path {path}");
        match session.fetch_all(&one, deadline).await {
            Ok(fetched) => {
                let names: Vec<&str> = fetched.secrets.names().collect();
                let imported = fetched.paths.first().map_or(0, |p| p.imported);
                let mut detail = format!(
                    "readable in {}: {}",
                    spec.environment,
                    plural(names.len(), "secret")
                );
                if imported > 0 {
                    let _ = write!(detail, " ({imported} imported)");
                }
                if !names.is_empty() {
                    let _ = write!(detail, ": {}", names.join(", "));
                }
                if !fetched.hidden.is_empty() {
                    report.warn(
                        name,
                        format!("{detail}; values hidden from this identity (not delivered): {}", fetched.hidden.join(", ")),
                        Some("grant the identity a role that may read secret values (not only names)".to_owned()),
                    );
                } else if names.is_empty() {
                    report.warn(
                        name,
                        detail,
                        Some("check --env and --path (a mistyped environment or path can answer an empty list) and --tag".to_owned()),
                    );
                } else {
                    report.ok(name, detail);
                }
                merged.extend_overriding(fetched.secrets);
            }
            Err(e) => {
                report.fail_with(&name, &e);
                all_read = false;
            }
        }
    }
    if !all_read {
        return None;
    }
    secrets_step(report, config, merged)
}

/// The merged set as `run` and `write` would accept it: not empty (unless
/// `--allow-empty`), every `--require`d and selected key present, then
/// selected (`--only`, `--map`) and every name fit for every target. The
/// selected set, which the later steps check.
fn secrets_step(report: &mut Report, config: &Config, merged: SecretSet) -> Option<SecretSet> {
    let delivery = config.delivery();
    let total = merged.len();
    let selected = match delivery
        .select(merged)
        .and_then(|s| delivery.check_names(&s).map(|()| s))
    {
        Ok(selected) => selected,
        Err(e) => {
            report.fail_with("secrets", &e);
            return None;
        }
    };
    let mut detail = format!(
        "{} in total after merging the paths",
        plural(total, "secret")
    );
    if !config.delivery.require.is_empty() {
        let _ = write!(detail, "; every --require'd key is present");
    }
    if !config.delivery.selection.is_everything() {
        let names: Vec<&str> = selected.names().collect();
        let _ = write!(
            detail,
            "; {} selected (--only, --map): {}",
            plural(selected.len(), "secret"),
            names.join(", ")
        );
    }
    report.ok("secrets", detail);
    Some(selected)
}

/// `files`: each target exists (or can be created), is a real directory on
/// tmpfs, is writable, the mode and owner can be applied (the secret names
/// are checked against every target in the `secrets` step).
fn files_step(report: &mut Report, delivery: &Delivery) {
    let Some(options) = delivery.files() else {
        report.skip(
            "files",
            "no file target (--files-dir, --dotenv-file, --json-file)",
        );
        return;
    };
    // preflight creates a missing last component; say so rather than hide it.
    let existed: Vec<bool> = [&options.dir, &options.dotenv_file, &options.json_file]
        .into_iter()
        .flatten()
        .map(|p| options.dir.as_ref() != Some(p) || p.exists())
        .collect();
    // The files alone (each template's DEST has a step of its own; the
    // names were checked against every target in the `secrets` step).
    if let Err(e) = files::preflight(options).map_err(DeliverError::from) {
        report.fail_with("files", &e);
        return;
    }
    let targets: Vec<String> = [&options.dir, &options.dotenv_file, &options.json_file]
        .into_iter()
        .flatten()
        .zip(existed)
        .map(|(p, existed)| {
            if existed {
                p.display().to_string()
            } else {
                format!("{} (created)", p.display())
            }
        })
        .collect();
    let fs = if options.allow_non_tmpfs {
        "writable (--allow-non-tmpfs: the filesystem type is not checked)"
    } else {
        "on tmpfs, writable"
    };
    let mut detail = format!(
        "{}: {fs}; files mode {:04o}",
        targets.join(", "),
        options.mode
    );
    if let Some((uid, gid)) = options.owner {
        let _ = write!(detail, ", owner {uid}");
        if let Some(gid) = gid {
            let _ = write!(detail, ":{gid}");
        }
    }
    report.ok("files", detail);
}

/// `fallback` (with `--fallback-dir` only): the directory as a start would
/// use it (created 0700 when missing, ours, memory-backed unless allowed)
/// and how many sets this identity has cached there. `check` never starts
/// from them: a check that passed on cached secrets would hide the outage it
/// is there to find; whether one would be used depends on that outage.
fn fallback_step(report: &mut Report, delivery: &Delivery) {
    let Some(store) = delivery.fallback() else {
        return;
    };
    match store.prepare() {
        Ok(_) => report.ok(
            "fallback",
            format!(
                "{}: private (0700, ours); {} of this identity cached there, used only when \
                 Infisical is unavailable (never by check)",
                store.dir().display(),
                plural(store.count_for_identity(), "set")
            ),
        ),
        Err(e) => report.fail_with("fallback", &DeliverError::from(e)),
    }
}

/// One `template DEST` step per `--template`: DEST's directory is usable
/// (as for `files`), and the template renders with the fetched secrets, in
/// memory; the rendering is never shown, only "ok" or the exact error.
fn template_steps(report: &mut Report, delivery: &Delivery, secrets: Option<&SecretSet>) {
    for (src, dest, file, outcome) in delivery.templates().check_each(secrets) {
        let name = format!("template {}", dest.display());
        let target = if file {
            "the target is writable"
        } else {
            "the program would get it as a sealed memfd"
        };
        match (outcome, secrets) {
            (Err(e), _) => report.fail_with(name, &DeliverError::from(e)),
            (Ok(()), Some(_)) => report.ok(
                name,
                format!(
                    "{} renders with the fetched secrets; {target}",
                    src.display()
                ),
            ),
            (Ok(()), None) => report.skip(
                name,
                &format!(
                    "{} parses and {target}; not rendered: the secrets could not be read",
                    src.display()
                ),
            ),
        }
    }
}

/// `environment`: the child's environment (inherited + secrets) against the
/// exec limits, before the program's own arguments.
fn environment_step(report: &mut Report, delivery: &Delivery, secrets: Option<&SecretSet>) {
    if !delivery.to_env() {
        report.skip(
            "environment",
            "--no-env: secrets are not put in the environment",
        );
        return;
    }
    let Some(secrets) = secrets else {
        report.skip("environment", "no set of secrets to check it with");
        return;
    };
    // `check` starts no program: the size is checked without its arguments.
    let plan = match delivery
        .env(secrets)
        .and_then(|plan| delivery.check_fits(&plan).map(|()| plan))
    {
        Ok(plan) => plan,
        Err(e) => {
            report.fail_with("environment", &e);
            return;
        }
    };
    let limits = ExecLimits::current();
    let detail = format!(
        "{} variables from secrets; about {} of the {} bytes exec allows (ARG_MAX), before the program's arguments",
        plan.delivered_names().len(),
        plan.exec_size(),
        limits.arg_max
    );
    if plan.warnings().is_empty() {
        report.ok("environment", detail);
    } else {
        report.warn(
            "environment",
            format!("{detail}; {}", plan.warnings().join("; ")),
            None,
        );
    }
}
