//! The Infisical client's transport rules against real loopback servers from the
//! testkit: an unknown CA fails at once with the certificate problem and the
//! `--ca-cert` hint, `--ca-cert` makes the same server reachable, and a server
//! that is down is retried until the deadline, then reported unavailable.

use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use svid_exec::error::{ExitClass, Failure};
use svid_exec::infisical::{AuthMethod, Client, ClientOptions, InfisicalError};
use svid_exec::retry::Backoff;
use svid_exec::svid::Jwt;
use svid_exec_testkit::http::HttpServer;
use svid_exec_testkit::tls::TestCa;
use tokio::time::Instant;

use super::support::{block_on, shown};

fn jwt() -> Jwt {
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!(
        "{}.{}.c2lnbmF0dXJl",
        enc(r#"{"alg":"ES256","kid":"k","typ":"JWT"}"#),
        enc(r#"{"sub":"spiffe://example.org/web","aud":["infisical"],"exp":4000000000}"#)
    );
    Jwt::new(SecretString::from(token)).expect("test JWT")
}

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn options(url: &str) -> ClientOptions {
    ClientOptions {
        api_url: url.parse().expect("a loopback URL"),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        factor: 2.0,
    }
}

#[test]
fn unknown_ca_fails_at_once_naming_the_certificate_problem_and_ca_cert() {
    let ca = TestCa::new();
    let server = HttpServer::start(axum::Router::new(), Some(ca.server_config()));
    let client = Client::new(&options(&server.url()))
        .unwrap()
        .with_backoff(fast());
    let err =
        block_on(client.login(AuthMethod::Oidc, "id", None, &jwt(), deadline(20_000))).unwrap_err();
    assert!(matches!(err, InfisicalError::Tls { .. }), "{err}");
    let text = shown(&err);
    assert!(
        text.contains("UnknownIssuer"),
        "innermost cause kept: {text}"
    );
    assert!(text.contains("--ca-cert"), "{text}");
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
}

#[test]
fn ca_cert_makes_the_server_trusted() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(axum::Router::new(), Some(ca.server_config()));
    let mut opts = options(&server.url());
    opts.ca_cert = Some(ca.write_ca_pem(dir.path()));
    let client = Client::new(&opts).unwrap().with_backoff(fast());
    // The empty router answers 404: the TLS handshake succeeded and the login
    // reached the server, which has no such route.
    let err = block_on(client.login(AuthMethod::Jwt, "id-1", None, &jwt(), deadline(20_000)))
        .unwrap_err();
    assert!(
        matches!(err, InfisicalError::NotInfisicalApi { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("jwt-auth/login"), "{err}");
}

#[test]
fn a_server_that_is_down_is_retried_until_the_deadline_then_unavailable() {
    let mut server = HttpServer::start(axum::Router::new(), None);
    let url = server.url();
    server.stop();
    let client = Client::new(&options(&url)).unwrap().with_backoff(fast());
    let err =
        block_on(client.login(AuthMethod::Oidc, "id", None, &jwt(), deadline(500))).unwrap_err();
    assert!(matches!(err, InfisicalError::GaveUp { .. }), "{err}");
    assert_eq!(err.exit_class(), ExitClass::Unavailable);
    assert!(
        err.to_string()
            .contains("POST /api/v1/auth/oidc-auth/login"),
        "{err}"
    );
}
