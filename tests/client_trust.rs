//! Black-box tests of the Infisical client's trust rules (issue 11) and its
//! misconfiguration answers (issue 14), with the real binary against the
//! stand-ins: proxies, loopback decided from resolved addresses, log lines
//! that cannot be forged, scrubbed server messages, null answers refused,
//! `--ca-cert-only`, a route 404 told apart from an unknown identity, and the
//! wrong scheme for the port detected on the first try.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::proxy::RecordingProxy;
use svid_exec_testkit::stack::{Stack, StackOptions, ENVIRONMENT, PROJECT_ID};
use svid_exec_testkit::tls::REMOTE_NAME;

/// Every run is bounded: a hung launcher is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

struct Outcome {
    status: ExitStatus,
    #[allow(dead_code, reason = "not every test reads the program's output")]
    stdout: Vec<u8>,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {:?}\n{}", self.status, self.stderr))
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "stderr:\n{}", self.stderr);
        self
    }

    #[track_caller]
    fn expect_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr does not mention {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// The launcher with a clean environment: `PATH` and the stack's variables.
fn launcher(stack: &Stack) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_svid-exec"));
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(stack.launcher_env());
    command
}

fn run(mut command: Command) -> Outcome {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn svid-exec");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "svid-exec did not finish within {RUN_LIMIT:?}: {}",
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned(),
    }
}

/// `run [args] -- true`.
fn run_true(mut command: Command, args: &[&str]) -> Outcome {
    command.arg("run").args(args).args(["--", "true"]);
    run(command)
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
    let outcome = run_true(launcher(&stack), &["--recursive", "--log-level", "debug"]);
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
        launcher(&stack),
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

/// No run of 12 characters of `secret` may appear in `text`.
#[track_caller]
fn assert_no_fragment(text: &str, secret: &str) {
    assert!(secret.len() > 40, "the credential is a real one");
    for window in secret.as_bytes().windows(12) {
        let window = std::str::from_utf8(window).expect("ASCII credential");
        assert!(
            !text.contains(window),
            "a piece of a credential ({window}) was printed:\n{text}"
        );
    }
}

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
    let mut command = launcher(&stack);
    command.env("SVID_EXEC_JWT_FILE", &jwt_file);
    let outcome = run_true(command, &[]);
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
    let outcome = run_true(launcher(&stack), &[]);
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
    let marker = stack.dir().join("ran");
    let mut command = launcher(&stack);
    command.args(["run", "--", "touch"]).arg(&marker);
    let outcome = run(command);
    outcome
        .expect_code(69)
        .expect_stderr("DATABASE_URL")
        .expect_stderr("is null or missing");
    assert!(!marker.exists(), "the program ran with an empty value");
}

#[test]
fn a_null_access_token_is_refused_and_never_sent_as_an_empty_bearer() {
    let stack = Stack::start();
    stack.infisical.fail_next(
        "/api/v1/auth/oidc-auth/login",
        1,
        Fault::NullField("accessToken".into()),
    );
    let outcome = run_true(launcher(&stack), &[]);
    outcome
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

/// Every variable that could route a request through `proxy`.
fn all_proxy_vars(command: &mut Command, proxy: &str) {
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env(var, proxy);
    }
}

#[test]
fn plain_http_to_loopback_never_goes_through_a_proxy() {
    let stack = Stack::start_with(StackOptions {
        https: false,
        ..StackOptions::default()
    });
    let proxy = RecordingProxy::start();
    let mut command = launcher(&stack);
    all_proxy_vars(&mut command, &proxy.url());
    let outcome = run_true(command, &[]);
    let log = proxy.log();
    assert!(
        log.received.is_empty(),
        "the proxy received {:?}",
        String::from_utf8_lossy(&log.received)
    );
    outcome
        .expect_code(0)
        .expect_stderr("plain http:// never goes through a proxy");
}

#[test]
fn https_to_loopback_never_goes_through_a_proxy() {
    let stack = Stack::start();
    let proxy = RecordingProxy::start();
    let mut command = launcher(&stack);
    all_proxy_vars(&mut command, &proxy.url());
    let outcome = run_true(command, &[]);
    let log = proxy.log();
    assert!(
        log.requests.is_empty(),
        "the proxy was used: {:?}",
        log.requests
    );
    outcome.expect_code(0).expect_stderr("(loopback)");
}

#[test]
fn https_to_a_remote_name_goes_through_the_proxy_which_sees_only_ciphertext() {
    let stack = Stack::start();
    let proxy = RecordingProxy::start();
    let jwt_file = stack.write_jwt_file(Duration::from_secs(300));
    let jwt = std::fs::read_to_string(&jwt_file).unwrap();
    let port = stack.infisical.addr().port();
    let mut command = launcher(&stack);
    command
        .env("INFISICAL_API_URL", format!("https://{REMOTE_NAME}:{port}"))
        .env("SVID_EXEC_JWT_FILE", &jwt_file)
        .env(
            "HTTPS_PROXY",
            proxy.url_with_credentials("svc", "hunter2-proxy-pass"),
        )
        .env("HTTP_PROXY", "http://127.0.0.1:9");
    let outcome = run_true(command, &[]);
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
        vec![format!("CONNECT {REMOTE_NAME}:{port} HTTP/1.1")],
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

/// Runs `command` with `/etc/hosts` replaced (in a private mount namespace) by
/// one that adds `lines`; `None` when this machine cannot do that (no root).
fn with_hosts(command: &Command, lines: &str, dir: &std::path::Path) -> Option<Command> {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare -m` is not permitted here");
        return None;
    }
    let hosts = dir.join("hosts");
    let system = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    std::fs::write(&hosts, format!("{lines}\n{system}")).unwrap();
    let mut wrapped = Command::new("unshare");
    wrapped
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(&hosts)
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear()
        .envs(
            command
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        );
    Some(wrapped)
}

#[test]
fn a_localhost_name_that_resolves_elsewhere_gets_no_plain_http() {
    let stack = Stack::start_with(StackOptions {
        https: false,
        ..StackOptions::default()
    });
    let port = stack.infisical.addr().port();
    let mut command = launcher(&stack);
    command
        .env("INFISICAL_API_URL", format!("http://evil.localhost:{port}"))
        .args(["run", "--", "true"]);
    // 0.0.0.0 is not loopback, though Linux would connect it to this machine.
    let Some(command) = with_hosts(&command, "0.0.0.0 evil.localhost", stack.dir()) else {
        return;
    };
    let outcome = run(command);
    outcome
        .expect_code(78)
        .expect_stderr("evil.localhost, which resolves to 0.0.0.0");
    assert!(
        stack.infisical.requests().is_empty(),
        "a request reached the server over plain http"
    );
}
#[test]
fn a_name_that_resolves_to_loopback_only_may_use_plain_http() {
    let stack = Stack::start_with(StackOptions {
        https: false,
        ..StackOptions::default()
    });
    let port = stack.infisical.addr().port();
    let mut command = launcher(&stack);
    command
        .env(
            "INFISICAL_API_URL",
            format!("http://infisical.internal:{port}"),
        )
        .args(["run", "--", "true"]);
    let Some(command) = with_hosts(&command, "127.0.0.1 infisical.internal", stack.dir()) else {
        return;
    };
    run(command).expect_code(0);
}

// ---------------------------------------------------------------------------
// Misconfigured --api-url (issue 14)

#[test]
fn a_versioned_route_prefix_in_the_api_url_is_normalised() {
    let stack = Stack::start();
    for suffix in ["/api/v1", "/api/v3/", "/api/v4"] {
        let mut command = launcher(&stack);
        command.env(
            "INFISICAL_API_URL",
            format!("{}{suffix}", stack.infisical.url()),
        );
        run_true(command, &["--startup-timeout", "20s"]).expect_code(0);
    }
}

#[test]
fn a_path_prefix_that_serves_no_api_is_78_with_the_url_to_try_not_an_unknown_identity() {
    let stack = Stack::start();
    let origin = stack.infisical.url();
    let mut command = launcher(&stack);
    command.env("INFISICAL_API_URL", format!("{origin}/infisical"));
    run_true(command, &["--startup-timeout", "20s"])
        .expect_code(78)
        .expect_stderr("does not serve the Infisical API")
        .expect_stderr(&format!("try --api-url {origin}"));
}

#[test]
fn an_unknown_identity_is_still_77_naming_the_identity() {
    let stack = Stack::start();
    let mut command = launcher(&stack);
    command.env(
        "INFISICAL_MACHINE_IDENTITY_ID",
        "99999999-9999-4999-8999-999999999999",
    );
    run_true(command, &["--startup-timeout", "20s"])
        .expect_code(77)
        .expect_stderr("check --identity-id");
}

#[test]
fn plain_http_to_a_tls_port_is_78_use_https_on_the_first_try() {
    let stack = Stack::start();
    let https = stack.infisical.url();
    let http = https.replacen("https://", "http://", 1);
    let mut command = launcher(&stack);
    command.env("INFISICAL_API_URL", &http);
    let outcome = run_true(command, &["--startup-timeout", "40s"]);
    outcome
        .expect_code(78)
        .expect_stderr(&format!("use {https}"));
    assert!(
        !outcome.stderr.contains("retrying") && !outcome.stderr.contains("gave up"),
        "not detected on the first try:\n{}",
        outcome.stderr
    );
}

#[test]
fn https_to_a_plain_http_port_is_78_use_http_on_the_first_try() {
    let stack = Stack::start_with(StackOptions {
        https: false,
        ..StackOptions::default()
    });
    let http = stack.infisical.url();
    let https = http.replacen("http://", "https://", 1);
    let mut command = launcher(&stack);
    command.env("INFISICAL_API_URL", &https);
    let outcome = run_true(command, &["--startup-timeout", "40s"]);
    outcome
        .expect_code(78)
        .expect_stderr(&format!("use {http}"));
    assert!(
        !outcome.stderr.contains("retrying") && !outcome.stderr.contains("gave up"),
        "not detected on the first try:\n{}",
        outcome.stderr
    );
}

// ---------------------------------------------------------------------------
// Trust roots (issue 11 item 11, issue 17)

/// The launcher without `SVID_EXEC_CA_CERT`, and with `SSL_CERT_FILE`.
fn without_ca_cert(stack: &Stack, system_bundle: &std::path::Path) -> Command {
    let mut command = launcher(stack);
    command
        .env_remove("SVID_EXEC_CA_CERT")
        .env("SSL_CERT_FILE", system_bundle);
    command
}

#[test]
fn the_system_bundle_named_by_ssl_cert_file_is_trusted() {
    let stack = Stack::start();
    run_true(without_ca_cert(&stack, stack.ca_path()), &[]).expect_code(0);
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
    let mut command = launcher(&stack);
    command.env("SSL_CERT_FILE", &broken);
    run_true(command, &[]).expect_code(0);
    // Needed, it is reported and left out: the certificate is then unknown.
    let outcome = run_true(without_ca_cert(&stack, &broken), &[]);
    outcome
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
    run_true(trusting_both, &[]).expect_code(0);
    let mut pinned = without_ca_cert(&stack, stack.ca_path());
    pinned.env("SVID_EXEC_CA_CERT", &other_pem);
    // (Both test CAs have the same name: the chain fails on its signature.)
    run_true(pinned, &["--ca-cert-only"])
        .expect_code(69)
        .expect_stderr("invalid peer certificate");
    let mut pinned_env = without_ca_cert(&stack, stack.ca_path());
    pinned_env
        .env("SVID_EXEC_CA_CERT", &other_pem)
        .env("SVID_EXEC_CA_CERT_ONLY", "true");
    run_true(pinned_env, &[]).expect_code(69);
    // Pinned to the right CA, it works.
    run_true(launcher(&stack), &["--ca-cert-only"]).expect_code(0);
}

#[test]
fn ca_cert_only_without_ca_cert_is_78_before_any_network_call() {
    let stack = Stack::start();
    let mut command = launcher(&stack);
    command.env_remove("SVID_EXEC_CA_CERT");
    run_true(command, &["--ca-cert-only"])
        .expect_code(78)
        .expect_stderr("--ca-cert-only needs --ca-cert");
    assert!(stack.agent.calls().is_empty() && stack.infisical.requests().is_empty());
}
