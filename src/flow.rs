//! The network half of the flow, shared by `run`, `write`, `check` and the
//! supervisor: configuration -> JWT source + Infisical client -> session ->
//! resolved fetch request -> `SecretSet`.

use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Config, ProjectRef};
use crate::error::ExitClass;
use crate::infisical::{Client, ClientOptions, FetchOutcome, FetchSpec, InfisicalError};
use crate::secrets::SecretSet;
use crate::session::{Session, SessionError, SessionOptions};
use crate::svid::{
    parse_endpoint, parse_spiffe_id, SvidError, SvidSource, SvidSourceOptions, WorkloadApiOptions,
    DEFAULT_PER_CALL_TIMEOUT,
};

/// A failure of the network half, with its exit class.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The JWT source is misconfigured or failed.
    #[error(transparent)]
    Svid(#[from] SvidError),
    /// The Infisical client is misconfigured or a call failed.
    #[error(transparent)]
    Infisical(#[from] InfisicalError),
    /// A session step failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The first fetch answered "not modified", which cannot happen without an `ETag`.
    #[error("the server answered 304 Not Modified to a request without If-None-Match")]
    UnexpectedNotModified,
}

impl FlowError {
    /// The exit class.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Self::Svid(e) => e.class(),
            Self::Infisical(e) => e.class(),
            Self::Session(e) => e.class(),
            Self::UnexpectedNotModified => ExitClass::Unavailable,
        }
    }
}

/// Where JWTs come from: `--jwt-file`, else the Workload API.
pub fn svid_source(config: &Config) -> Result<SvidSource, FlowError> {
    let options = match &config.identity.jwt_file {
        Some(path) => SvidSourceOptions::File(path.clone()),
        None => SvidSourceOptions::WorkloadApi(workload_options(config)?),
    };
    Ok(SvidSource::new(options)?)
}

/// The Workload API options from the identity flags (`--jwt-file` aside).
pub fn workload_options(config: &Config) -> Result<WorkloadApiOptions, SvidError> {
    let identity = &config.identity;
    Ok(WorkloadApiOptions {
        endpoint: parse_endpoint(&identity.workload_api_socket)?,
        audiences: identity.audiences.clone(),
        spiffe_id: identity
            .spiffe_id
            .as_deref()
            .map(parse_spiffe_id)
            .transpose()?,
        per_call_timeout: DEFAULT_PER_CALL_TIMEOUT,
        origin: identity.workload_api_socket_origin,
    })
}

/// The Infisical client for `--api-url`, `--ca-cert`, `--allow-insecure-http`.
pub fn client(config: &Config) -> Result<Client, FlowError> {
    let server = &config.server;
    Ok(Client::new(&ClientOptions {
        api_url: server.api_url.as_str().to_owned(),
        ca_cert: server.ca_cert.clone(),
        allow_insecure_http: server.allow_insecure_http,
        ..ClientOptions::default()
    })?)
}

/// A session (not logged in yet) for the configured identity.
pub fn session(config: &Config) -> Result<Session, FlowError> {
    Ok(Session::new(
        Arc::new(client(config)?),
        Arc::new(svid_source(config)?),
        SessionOptions {
            method: config.identity.auth_method,
            identity_id: config.identity.identity_id.clone(),
            organization_slug: config.identity.organization_slug.clone(),
        },
    ))
}

/// What to fetch, with a `--project-slug` resolved to its ID (once).
pub async fn fetch_spec(
    session: &mut Session,
    config: &Config,
    deadline: Instant,
) -> Result<FetchSpec, FlowError> {
    let fetch = &config.fetch;
    let project_id = match &fetch.project {
        ProjectRef::Id(id) => id.clone(),
        ProjectRef::Slug(slug) => {
            // `Client::resolve_project_slug` logs the resolution.
            session.resolve_project_slug(slug, deadline).await?
        }
    };
    Ok(FetchSpec {
        project_id,
        environment: fetch.environment.clone(),
        paths: fetch.paths.clone(),
        recursive: fetch.recursive,
        include_imports: fetch.include_imports,
        expand: fetch.expand,
        tags: fetch.tags.clone(),
    })
}

/// Logs in with a fresh JWT-SVID and fetches every path once, all before
/// `--startup-timeout`. The session (and with it the token) is returned so a
/// supervisor can keep it; a one-shot caller drops it.
pub async fn fetch_once(config: &Config) -> Result<(SecretSet, Session, FetchSpec), FlowError> {
    let mut session = session(config)?;
    let (secrets, spec) = login_and_fetch(&mut session, config).await?;
    Ok((secrets, session, spec))
}

/// [`fetch_once`] on a session the caller owns, so a caller that abandons the
/// start-up half-way (a signal) still holds the token and can revoke it.
pub async fn login_and_fetch(
    session: &mut Session,
    config: &Config,
) -> Result<(SecretSet, FetchSpec), FlowError> {
    let deadline = Instant::now() + config.server.startup_timeout;
    session.login(deadline).await?;
    let spec = fetch_spec(session, config, deadline).await?;
    match session.fetch(&spec, None, deadline).await? {
        // `Client::fetch` has already warned about hidden values, on every fetch.
        FetchOutcome::Fetched(fetched) => Ok((fetched.secrets, spec)),
        FetchOutcome::NotModified => Err(FlowError::UnexpectedNotModified),
    }
}
