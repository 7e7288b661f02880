//! A stand-in for SPIRE's OIDC discovery provider: `GET
//! /.well-known/openid-configuration` in the exact shape SPIRE serves (field
//! order, pretty-printed, issuer derived from the Host header unless one is
//! configured, no trailing slash) and `GET /keys` with the JWKS of a
//! [`KeyRing`] (keys without `use`, as SPIRE serves them by default).
//! Facts: `shared/reference/spiffe.md` §4.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::http::HttpServer;
use crate::keys::KeyRing;
use crate::tls::TestCa;

/// A running discovery provider.
#[derive(Debug)]
pub struct Discovery {
    server: HttpServer,
}

#[derive(Clone)]
struct Shared {
    keys: KeyRing,
    https: bool,
    jwt_issuer: Option<String>,
}

/// The discovery document; field order is SPIRE's.
#[derive(Serialize)]
struct Document<'a> {
    issuer: &'a str,
    jwks_uri: String,
    authorization_endpoint: &'static str,
    response_types_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: [&'static str; 3],
}

impl Discovery {
    /// Serves the keys of `keys` on 127.0.0.1, over HTTPS with `tls`.
    /// The issuer is `<scheme>://<Host header>`, as SPIRE derives it when no
    /// `jwt_issuer` is configured.
    pub fn start(keys: KeyRing, tls: Option<&TestCa>) -> Self {
        Self::start_with_issuer(keys, tls, None)
    }

    /// Like [`Discovery::start`], with a configured `jwt_issuer` that the
    /// document advertises whatever Host was used.
    pub fn start_with_issuer(
        keys: KeyRing,
        tls: Option<&TestCa>,
        jwt_issuer: Option<String>,
    ) -> Self {
        let shared = Arc::new(Shared {
            keys,
            https: tls.is_some(),
            jwt_issuer,
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(document))
            .route("/keys", get(jwks))
            .with_state(shared);
        let server = HttpServer::start(router, tls.map(TestCa::server_config));
        Self { server }
    }

    /// The base URL, which is also the issuer a client reaching it by this URL
    /// sees: `http(s)://127.0.0.1:PORT`, no trailing slash. Put it in the
    /// SVIDs' `iss` and in the Infisical identity's discovery URL and issuer.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Stops serving (the provider is down).
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn json_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn host_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
}

/// SPIRE's domain check: the Host (without port) must be a served domain.
fn allowed(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

async fn document(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(host) = host_of(&headers).filter(|h| allowed(h)) else {
        return (StatusCode::BAD_REQUEST, "domain not allowed\n").into_response();
    };
    let scheme = if shared.https { "https" } else { "http" };
    let derived = format!("{scheme}://{host}");
    let issuer = shared.jwt_issuer.clone().unwrap_or(derived.clone());
    let doc = Document {
        issuer: &issuer,
        jwks_uri: format!("{derived}/keys"),
        authorization_endpoint: "",
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256", "ES256", "ES384"],
    };
    json_response(serde_json::to_string_pretty(&doc).expect("serialise document"))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    let mut response =
        json_response(serde_json::to_string_pretty(&shared.keys.jwks()).expect("serialise JWKS"));
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    response
}
