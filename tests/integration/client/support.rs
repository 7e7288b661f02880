//! Shared helpers of the client tests: the stand-in stack as they use it
//! (Infisical over plain HTTP on 127.0.0.1, no demo secrets), a runtime per
//! test, and the client side (a client with a fast backoff, login, fetch).
//! Also used by the separate `client_logs` test binary.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "the client_logs binary uses a subset"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use svid_exec::error::Failure;
use svid_exec::infisical::{
    AccessToken, AuthMethod, Client, ClientOptions, FetchOutcome, FetchSpec, Fetched,
    InfisicalError,
};
use svid_exec::retry::Backoff;
use svid_exec::session::{Session, SessionOptions};
use svid_exec::svid::{Jwt, SvidSource, SvidSourceOptions};
use svid_exec_testkit::infisical::InfisicalConfig;
use svid_exec_testkit::stack::StackOptions;
pub use svid_exec_testkit::stack::{
    Stack, ENVIRONMENT, JWT_IDENTITY, OIDC_IDENTITY, PROJECT_ID, PROJECT_SLUG, SPIFFE_IDENTITY,
    WORKLOAD,
};
use tokio::time::Instant;

/// The stand-in stack as the client tests use it: Infisical (and the
/// discovery provider) over plain HTTP, no demo secrets, tokens living `ttl`
/// (TTL, max TTL).
pub fn stack_with(config: InfisicalConfig, ttl: (u64, u64)) -> Stack {
    Stack::start_with(StackOptions {
        infisical: config,
        https: false,
        token_ttl: Some(ttl),
        demo_secrets: false,
        ..StackOptions::default()
    })
}

/// The error as the user sees it: its message, then its hint.
pub fn shown(err: &impl Failure) -> String {
    format!("{err}; hint: {}", err.hint().unwrap_or_default())
}

/// [`stack_with`] the default server, tokens living an hour (a day at most).
pub fn stack() -> Stack {
    stack_with(InfisicalConfig::default(), (3600, 86400))
}

thread_local! {
    /// One runtime per test (libtest runs each on a thread of its own): a
    /// client's pooled connections live on the runtime that made them.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
}

/// Runs `f` on this test's runtime (the stand-ins run on their own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// The client side of the stack: JWT-SVIDs, a client with a fast backoff,
/// login and fetch.
pub trait ClientSide {
    fn jwt_for(&self, sub: &str, aud: &str, iss: Option<&str>) -> Jwt;
    /// The workload's JWT-SVID every identity accepts.
    fn jwt(&self) -> Jwt;
    fn client(&self) -> Client;
    /// Logs in with the OIDC identity.
    fn login(&self, client: &Client) -> AccessToken;
    /// Fetches without `ETag`s.
    fn fetch(
        &self,
        client: &Client,
        token: &AccessToken,
        spec: &FetchSpec,
    ) -> Result<Fetched, InfisicalError>;
    /// Sets a secret in the project's environment.
    fn set(&self, path: &str, key: &str, value: &str);
    /// A session of the OIDC identity reading its JWT-SVID from `jwt_file`.
    fn session_on(&self, jwt_file: PathBuf) -> Session;
    /// [`ClientSide::session_on`] `DIR/svid.jwt`, written with the
    /// workload's JWT-SVID.
    fn file_session(&self, dir: &Path) -> Session;
}

impl ClientSide for Stack {
    fn jwt_for(&self, sub: &str, aud: &str, iss: Option<&str>) -> Jwt {
        Jwt::new(SecretString::from(self.sign_svid(sub, aud, iss))).unwrap()
    }

    fn jwt(&self) -> Jwt {
        self.jwt_for(WORKLOAD, "infisical", Some(&self.discovery.url()))
    }

    fn client(&self) -> Client {
        Client::new(&ClientOptions {
            api_url: format!("{}/api/", self.infisical.url())
                .parse()
                .expect("the stand-in's URL"),
            ..ClientOptions::default()
        })
        .unwrap()
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            factor: 2.0,
        })
    }

    fn login(&self, client: &Client) -> AccessToken {
        block_on(client.login(
            AuthMethod::Oidc,
            OIDC_IDENTITY,
            None,
            &self.jwt(),
            within(20),
        ))
        .unwrap()
    }

    fn fetch(
        &self,
        client: &Client,
        token: &AccessToken,
        spec: &FetchSpec,
    ) -> Result<Fetched, InfisicalError> {
        match block_on(client.fetch(token, spec, None, within(20)))? {
            FetchOutcome::Fetched(f) => Ok(f),
            FetchOutcome::NotModified => panic!("not modified without ETags"),
        }
    }

    fn set(&self, path: &str, key: &str, value: &str) {
        self.infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, path, key, value);
    }

    fn session_on(&self, jwt_file: PathBuf) -> Session {
        let svid = Arc::new(SvidSource::new(SvidSourceOptions::File(jwt_file)).unwrap());
        Session::new(
            Arc::new(self.client()),
            svid,
            SessionOptions {
                method: AuthMethod::Oidc,
                identity_id: OIDC_IDENTITY.into(),
                organization_slug: None,
            },
        )
    }

    fn file_session(&self, dir: &Path) -> Session {
        let jwt_file = dir.join("svid.jwt");
        std::fs::write(
            &jwt_file,
            self.sign_svid(WORKLOAD, "infisical", Some(&self.discovery.url())),
        )
        .unwrap();
        self.session_on(jwt_file)
    }
}

pub fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

pub fn spec(paths: &[&str]) -> FetchSpec {
    FetchSpec {
        project_id: PROJECT_ID.into(),
        environment: ENVIRONMENT.into(),
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        recursive: false,
        include_imports: true,
        expand: true,
        tags: vec![],
    }
}

pub fn value(f: &Fetched, key: &str) -> String {
    f.secrets
        .get(key)
        .map(|v| v.expose_secret().to_owned())
        .unwrap_or_default()
}
