//! The Infisical client's trust rules (issue 11) and its misconfiguration
//! answers (issue 14), with the real binary against the stand-ins: proxies,
//! loopback decided from resolved addresses, log lines that cannot be forged,
//! scrubbed server messages, null answers refused, `--ca-cert-only`, a route
//! 404 told apart from an unknown identity, and the wrong scheme for the port
//! detected on the first try.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::proxy::RecordingProxy;
use svid_exec_testkit::stack::{Stack, StackOptions, ENVIRONMENT, PROJECT_ID};
use svid_exec_testkit::tls::REMOTE_NAME;

use crate::util::{assert_no_fragment, Launcher, Outcome};

/// `svid-exec run ARGS -- true`.
fn run_true(launcher: &mut Launcher, args: &[&str]) -> Outcome {
    launcher.arg("run").args(args).args(["--", "true"]).run()
}

/// The stand-ins with Infisical over plain HTTP.
fn plain_http_stack() -> Stack {
    Stack::start_with(StackOptions {
        https: false,
        ..StackOptions::default()
    })
}

// ---------------------------------------------------------------------------
// Log forging (issue 11 item 6)

/// No line of `stderr` may start with what an attacker planted after a newline.
#[track_caller]
fn assert_not_forged(stderr: &str, planted: &str) {
    assert!(
        !stderr.lines().any(|l| l.starts_with(planted)),
        "a forged line made it to stderr:\n{stderr}"
    );
}

#[test]
fn a_newline_in_a_server_sent_key_or_folder_cannot_forge_a_text_log_line() {
    let stack = Stack::start();
    let forged_key = "svid-exec: ERROR forged by a key";
    let forged_path = "svid-exec: ERROR forged by a folder";
    stack.infisical.set_secret(
        PROJECT_ID,
        ENVIRONMENT,
        "/",
        &format!("K\n{forged_key}"),
        "v",
    );
    // The same key in two sub-folders: the warning names both folders, as sent.
    for folder in ["/a", &format!("/b\n{forged_path}")] {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, folder, "DUP", "x");
    }
    let outcome = run_true(
        Launcher::on(&stack).audited(),
        &["--recursive", "--log-level", "debug"],
    );
    outcome
        .expect_code(0)
        .expect_stderr("the same key is in several sub-folders")
        .expect_stderr("K\\nsvid-exec: ERROR forged by a key");
    assert_not_forged(&outcome.stderr, forged_key);
    assert_not_forged(&outcome.stderr, forged_path);
}

#[test]
fn json_logs_keep_a_newline_inside_one_object() {
    let stack = Stack::start();
    stack.infisical.set_secret(
        PROJECT_ID,
        ENVIRONMENT,
        "/",
        "K\n{\"level\":\"ERROR\",\"message\":\"forged\"}",
        "v",
    );
    let outcome = run_true(
        Launcher::on(&stack).audited(),
        &["--log-format", "json", "--log-level", "debug"],
    );
    outcome.expect_code(0);
    for line in outcome.stderr.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert_ne!(parsed["message"], "forged", "{line}");
    }
}

// ---------------------------------------------------------------------------
// Scrubbing (issue 11 item 8)

#[test]
fn pieces_of_the_jwt_quoted_by_a_refusing_server_are_redacted() {
    let stack = Stack::start();
    let jwt_file = stack.write_jwt_file(Duration::from_secs(300));
    let jwt = std::fs::read_to_string(&jwt_file).unwrap();
    stack.infisical.fail_next(
        "/api/v1/auth/oidc-auth/login",
        1,
        Fault::EchoCredential(401),
    );
    let mut launcher = Launcher::on(&stack);
    launcher.audited().env("SVID_EXEC_JWT_FILE", &jwt_file);
    let outcome = run_true(&mut launcher, &[]);
    outcome
        .expect_code(77)
        .expect_stderr("rejected token starting [redacted]");
    assert_no_fragment(&outcome.stderr, jwt.trim());
}

#[test]
fn pieces_of_the_access_token_quoted_by_the_server_are_redacted() {
    let stack = Stack::start();
    stack
        .infisical
        .fail_next("/api/v4/secrets", 1, Fault::EchoCredential(400));
    let outcome = run_true(Launcher::on(&stack).audited(), &[]);
    outcome
        .expect_code(78)
        .expect_stderr("rejected token starting [redacted]");
    let tokens = stack.infisical.all_token_strings();
    assert!(!tokens.is_empty());
    for token in tokens {
        assert_no_fragment(&outcome.stderr, &token);
    }
}

// ---------------------------------------------------------------------------
// Nulls (issue 11 item 10)

#[test]
fn a_null_secret_value_is_refused_naming_the_key_and_nothing_runs() {
    let stack = Stack::start();
    stack
        .infisical
        .fail_next("/api/v4/secrets", 1, Fault::NullField("secretValue".into()));
    Launcher::on(&stack)
        .audited()
        .arg("run")
        .marked_program(stack.dir())
        .run()
        .expect_refused(69, &["DATABASE_URL", "is null or missing"]);
}

#[test]
fn a_null_access_token_is_refused_and_never_sent_as_an_empty_bearer() {
    let stack = Stack::start();
    stack.infisical.fail_next(
        "/api/v1/auth/oidc-auth/login",
        1,
        Fault::NullField("accessToken".into()),
    );
    run_true(Launcher::on(&stack).audited(), &[])
        .expect_code(69)
        .expect_stderr("accessToken")
        .expect_stderr("is null or missing");
    let after_login: Vec<_> = stack
        .infisical
        .requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/login"))
        .collect();
    assert!(
        after_login.iter().all(|r| r.path.ends_with("/revoke")),
        "a request was made with the null token: {after_login:?}"
    );
}

// ---------------------------------------------------------------------------
// Proxies and the loopback rule (issue 11 item 2)

/// Runs with every variable that could route a request through a proxy
/// pointing at a recording one, and asserts that nothing reached it.
fn run_asserting_no_proxy_is_used(stack: &Stack) -> Outcome {
    let proxy = RecordingProxy::start();
    let mut launcher = Launcher::on(stack);
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        launcher.env(var, proxy.url());
    }
    let outcome = run_true(launcher.audited(), &[]);
    let log = proxy.log();
    assert!(
        log.requests.is_empty() && log.received.is_empty(),
        "the proxy was used: {:?}, received {:?}",
        log.requests,
        String::from_utf8_lossy(&log.received)
    );
    outcome
}

#[test]
fn plain_http_to_loopback_never_goes_through_a_proxy() {
    let stack = plain_http_stack();
    run_asserting_no_proxy_is_used(&stack)
        .expect_code(0)
        .expect_stderr("plain http:// never goes through a proxy");
}

#[test]
fn https_to_loopback_never_goes_through_a_proxy() {
    let stack = Stack::start();
    run_asserting_no_proxy_is_used(&stack)
        .expect_code(0)
        .expect_stderr("(loopback)");
}

/// The stand-in's `host:port` under a name that is not loopback (on the
/// stand-ins' certificate; only a proxy can reach it), and an audited
/// launcher with `--api-url` `https://` to it.
fn via_remote_name(stack: &Stack) -> (String, Launcher) {
    let authority = format!("{REMOTE_NAME}:{}", stack.infisical.addr().port());
    let mut launcher = Launcher::on(stack);
    launcher
        .audited()
        .env("INFISICAL_API_URL", format!("https://{authority}"));
    (authority, launcher)
}

#[test]
fn https_to_a_remote_name_goes_through_the_proxy_which_sees_only_ciphertext() {
    let stack = Stack::start();
    let proxy = RecordingProxy::start();
    let jwt_file = stack.write_jwt_file(Duration::from_secs(300));
    let jwt = std::fs::read_to_string(&jwt_file).unwrap();
    let (authority, mut launcher) = via_remote_name(&stack);
    launcher
        .env("SVID_EXEC_JWT_FILE", &jwt_file)
        .env(
            "HTTPS_PROXY",
            proxy.url_with_credentials("svc", "hunter2-proxy-pass"),
        )
        .env("HTTP_PROXY", "http://127.0.0.1:9");
    let outcome = run_true(&mut launcher, &[]);
    outcome
        .expect_code(0)
        .expect_stderr("connecting to Infisical through a proxy")
        .expect_stderr(&format!("{} (with credentials)", proxy.url()))
        .expect_stderr("HTTPS_PROXY");
    assert!(
        !outcome.stderr.contains("hunter2-proxy-pass"),
        "{}",
        outcome.stderr
    );
    let log = proxy.log();
    assert_eq!(
        log.requests,
        vec![format!("CONNECT {authority} HTTP/1.1")],
        "one tunnel, reused for every call"
    );
    assert_eq!(log.proxy_authorizations.len(), 1, "{log:?}");
    let received = String::from_utf8_lossy(&log.received);
    for part in jwt.trim().split('.') {
        assert!(!received.contains(part), "the proxy saw the JWT in clear");
    }
    for token in stack.infisical.all_token_strings() {
        assert!(!received.contains(&token), "the proxy saw the token");
    }
}

#[test]
fn all_proxy_carries_https_when_https_proxy_is_unset() {
    // As curl: the catch-all variable serves https:// too (never plain http://).
    let stack = Stack::start();
    let proxy = RecordingProxy::start();
    let (authority, mut launcher) = via_remote_name(&stack);
    launcher.env("ALL_PROXY", proxy.url());
    run_true(&mut launcher, &[])
        .expect_code(0)
        .expect_stderr("connecting to Infisical through a proxy")
        .expect_stderr("ALL_PROXY");
    assert_eq!(
        proxy.log().requests,
        vec![format!("CONNECT {authority} HTTP/1.1")]
    );
}

#[test]
fn an_unsupported_proxy_is_78_naming_the_variable_without_its_credentials() {
    let stack = Stack::start();
    let (_, mut launcher) = via_remote_name(&stack);
    launcher.env(
        "HTTPS_PROXY",
        "socks5://svc:hunter2-proxy-pass@127.0.0.1:1080",
    );
    let outcome = run_true(&mut launcher, &[]);
    outcome
        .expect_code(78)
        .expect_stderr("HTTPS_PROXY socks5://127.0.0.1:1080 (with credentials)")
        .expect_stderr("hint: fix or unset the proxy variable");
    assert!(
        !outcome.stderr.contains("hunter2-proxy-pass"),
        "{}",
        outcome.stderr
    );
    assert!(stack.infisical.requests().is_empty());
}

/// `launcher` run with `/etc/hosts` replaced (in a private mount namespace)
/// by one that adds `lines`; `false` when this machine cannot do that (no
/// root), and the test is skipped.
fn with_hosts(launcher: &mut Launcher, lines: &str, dir: &Path) -> bool {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare -m` is not permitted here");
        return false;
    }
    let hosts = dir.join("hosts");
    let system = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    std::fs::write(&hosts, format!("{lines}\n{system}")).unwrap();
    let hosts = hosts.to_str().expect("a UTF-8 scratch path");
    launcher.via(&[
        "unshare",
        "-m",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        hosts,
    ]);
    true
}

#[test]
fn a_localhost_name_that_resolves_elsewhere_gets_no_plain_http() {
    let stack = plain_http_stack();
    let port = stack.infisical.addr().port();
    let mut launcher = Launcher::on(&stack);
    launcher.env("INFISICAL_API_URL", format!("http://evil.localhost:{port}"));
    // 0.0.0.0 is not loopback, though Linux would connect it to this machine.
    if !with_hosts(&mut launcher, "0.0.0.0 evil.localhost", stack.dir()) {
        return;
    }
    run_true(&mut launcher, &[])
        .expect_code(78)
        .expect_stderr("evil.localhost, which resolves to 0.0.0.0");
    assert!(
        stack.infisical.requests().is_empty(),
        "a request reached the server over plain http"
    );
}

#[test]
fn a_name_that_resolves_to_loopback_only_may_use_plain_http() {
    let stack = plain_http_stack();
    let port = stack.infisical.addr().port();
    let mut launcher = Launcher::on(&stack);
    launcher.env(
        "INFISICAL_API_URL",
        format!("http://infisical.internal:{port}"),
    );
    if !with_hosts(&mut launcher, "127.0.0.1 infisical.internal", stack.dir()) {
        return;
    }
    run_true(&mut launcher, &[]).expect_code(0);
}

// ---------------------------------------------------------------------------
// Misconfigured --api-url (issue 14)

#[test]
fn a_versioned_route_prefix_in_the_api_url_is_normalised() {
    let stack = Stack::start();
    for suffix in ["/api/v1", "/api/v3/", "/api/v4"] {
        let mut launcher = Launcher::on(&stack);
        launcher.env(
            "INFISICAL_API_URL",
            format!("{}{suffix}", stack.infisical.url()),
        );
        run_true(&mut launcher, &["--startup-timeout", "20s"]).expect_code(0);
    }
}

#[test]
fn a_path_prefix_that_serves_no_api_is_78_with_the_url_to_try_not_an_unknown_identity() {
    let stack = Stack::start();
    let origin = stack.infisical.url();
    let mut launcher = Launcher::on(&stack);
    launcher.env("INFISICAL_API_URL", format!("{origin}/infisical"));
    run_true(&mut launcher, &["--startup-timeout", "20s"])
        .expect_code(78)
        .expect_stderr("does not serve the Infisical API")
        .expect_stderr(&format!("hint: try --api-url {origin}"));
}

#[test]
fn an_unknown_identity_is_still_77_naming_the_identity() {
    let stack = Stack::start();
    let mut launcher = Launcher::on(&stack);
    launcher.env(
        "INFISICAL_MACHINE_IDENTITY_ID",
        "99999999-9999-4999-8999-999999999999",
    );
    run_true(&mut launcher, &["--startup-timeout", "20s"])
        .expect_code(77)
        .expect_stderr("check --identity-id");
}

/// Runs with `--api-url` `given`, whose scheme the stand-in's port does not
/// speak: 78 on the first attempt (no retry), naming what the port speaks and
/// the URL to use instead, `right`.
fn assert_wrong_scheme_found_at_once(stack: &Stack, given: &str, right: &str, speaks: &str) {
    let mut launcher = Launcher::on(stack);
    launcher.env("INFISICAL_API_URL", given);
    let outcome = run_true(&mut launcher, &["--startup-timeout", "40s"]);
    outcome
        .expect_code(78)
        .expect_stderr(&format!("answers in {speaks}"))
        .expect_stderr(&format!("hint: use {right}"));
    assert!(
        !outcome.stderr.contains("retrying") && !outcome.stderr.contains("gave up"),
        "not detected on the first try:\n{}",
        outcome.stderr
    );
}

#[test]
fn plain_http_to_a_tls_port_is_78_use_https_on_the_first_try() {
    let stack = Stack::start();
    let https = stack.infisical.url();
    let http = https.replacen("https://", "http://", 1);
    assert_wrong_scheme_found_at_once(&stack, &http, &https, "TLS");
}

#[test]
fn https_to_a_plain_http_port_is_78_use_http_on_the_first_try() {
    let stack = plain_http_stack();
    let http = stack.infisical.url();
    let https = http.replacen("http://", "https://", 1);
    assert_wrong_scheme_found_at_once(&stack, &https, &http, "plain HTTP");
}

// ---------------------------------------------------------------------------
// Trust roots (issue 11 item 11, issue 17)

/// The launcher without `SVID_EXEC_CA_CERT`, and with `SSL_CERT_FILE`.
fn without_ca_cert(stack: &Stack, system_bundle: &Path) -> Launcher {
    let mut launcher = Launcher::on(stack);
    launcher
        .env_remove("SVID_EXEC_CA_CERT")
        .env("SSL_CERT_FILE", system_bundle);
    launcher
}

#[test]
fn the_system_bundle_named_by_ssl_cert_file_is_trusted() {
    let stack = Stack::start();
    run_true(&mut without_ca_cert(&stack, stack.ca_path()), &[]).expect_code(0);
}

#[test]
fn a_broken_system_bundle_does_not_stop_a_server_trusted_otherwise() {
    let stack = Stack::start();
    let broken = stack.dir().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut launcher = Launcher::on(&stack);
    launcher.env("SSL_CERT_FILE", &broken);
    run_true(&mut launcher, &[]).expect_code(0);
    // Needed, it is reported and left out: the certificate is then unknown.
    run_true(&mut without_ca_cert(&stack, &broken), &[])
        .expect_code(69)
        .expect_stderr("ignoring the system CA bundle")
        .expect_stderr("UnknownIssuer");
}

#[test]
fn ca_cert_only_trusts_the_ca_cert_and_nothing_else() {
    let stack = Stack::start();
    // The stand-ins' CA as the "system" bundle, another CA as --ca-cert.
    let other = svid_exec_testkit::tls::TestCa::new();
    let other_dir = stack.dir().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other_pem = other.write_ca_pem(&other_dir);
    let mut trusting_both = without_ca_cert(&stack, stack.ca_path());
    trusting_both.env("SVID_EXEC_CA_CERT", &other_pem);
    run_true(&mut trusting_both, &[]).expect_code(0);
    let mut pinned = without_ca_cert(&stack, stack.ca_path());
    pinned.env("SVID_EXEC_CA_CERT", &other_pem);
    // (Both test CAs have the same name: the chain fails on its signature.)
    run_true(&mut pinned, &["--ca-cert-only"])
        .expect_code(69)
        .expect_stderr("invalid peer certificate");
    let mut pinned_env = without_ca_cert(&stack, stack.ca_path());
    pinned_env
        .env("SVID_EXEC_CA_CERT", &other_pem)
        .env("SVID_EXEC_CA_CERT_ONLY", "true");
    run_true(&mut pinned_env, &[]).expect_code(69);
    // Pinned to the right CA, it works.
    run_true(&mut Launcher::on(&stack), &["--ca-cert-only"]).expect_code(0);
}

#[test]
fn ca_cert_only_without_ca_cert_is_78_before_any_network_call() {
    let stack = Stack::start();
    let mut launcher = Launcher::on(&stack);
    launcher.env_remove("SVID_EXEC_CA_CERT");
    run_true(&mut launcher, &["--ca-cert-only"])
        .expect_code(78)
        .expect_stderr("--ca-cert-only needs --ca-cert")
        .expect_stderr("hint: pass the private CA's PEM bundle with --ca-cert");
    assert!(stack.agent.calls().is_empty() && stack.infisical.requests().is_empty());
}
