//! The no-secret audit of the client at trace level, in its own test binary:
//! it installs a global tracing subscriber, which would capture (and be
//! disturbed by) every other test running in parallel in the same process.

#[path = "integration/client/support.rs"]
mod client_support;

use std::sync::Arc;

use client_support::*;
use secrecy::ExposeSecret;
use svid_exec::infisical::AuthMethod;
use svid_exec_testkit::infisical::Fault;

/// Collects everything logged, for the no-secret audit.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn nothing_secret_is_logged_or_shown_at_trace_level_even_on_failures() {
    let s = stack();
    let value = "v4lue-that-must-never-be-logged";
    s.set("/", "K", value);
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("svid.jwt");
    let jwt_text = s.sign_svid(WORKLOAD, "infisical", Some(&s.discovery.url()));
    std::fs::write(&jwt_file, &jwt_text).unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let mut shown: Vec<String> = Vec::new();
    let mut tokens = Vec::new();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    {
        let mut session = s.session_on(jwt_file.clone());
        s.infisical.fail_next(
            "/api/v4/secrets",
            1,
            Fault::RateLimited {
                retry_after_secs: 0,
                header: true,
            },
        );
        s.infisical
            .fail_next("/api/v4/secrets", 1, Fault::Status(502));
        let f = block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
        shown.push(format!("{f:?}"));
        tokens.push(session.token().unwrap().secret().expose_secret().to_owned());
        shown.push(format!("{:?}", session.token().unwrap()));
        block_on(
            session
                .client()
                .revoke(session.token().unwrap(), within(20)),
        )
        .unwrap();
        block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap();
        tokens.push(session.token().unwrap().secret().expose_secret().to_owned());
        block_on(session.refresh(within(20))).unwrap();
        tokens.push(session.token().unwrap().secret().expose_secret().to_owned());
        s.infisical
            .fail_next("/api/v4/secrets", 1, Fault::GarbageBody);
        let err = block_on(session.fetch(&spec(&["/"]), None, within(20))).unwrap_err();
        shown.push(format!("{err} {err:?}"));
        block_on(session.revoke(within(20))).unwrap();
        // A refused login's error, with the server's message.
        let wrong = s.jwt_for(
            "spiffe://example.org/other",
            "infisical",
            Some(&s.discovery.url()),
        );
        let err =
            block_on(
                s.client()
                    .login(AuthMethod::Oidc, OIDC_IDENTITY, None, &wrong, within(20)),
            )
            .unwrap_err();
        shown.push(format!("{err} {err:?} {wrong:?}"));
        tokens.push(wrong.token().expose_secret().to_owned());
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("logged in to Infisical"),
        "the capture works: {logs}"
    );
    assert!(logs.contains("retrying"), "failures were logged: {logs}");
    let everything = format!("{logs}\n{}", shown.join("\n"));
    assert!(!everything.contains(value), "a secret value leaked");
    for secret in tokens.iter().chain([&jwt_text]) {
        for part in secret.split('.').filter(|p| p.len() > 16) {
            assert!(!everything.contains(part), "a JWT or token part leaked");
        }
    }
}
