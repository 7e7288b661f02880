//! The assembled stack works end to end the way svid-exec will use it: the
//! real `spiffe` client fetches a JWT-SVID from the agent, and each identity
//! logs in with it over HTTPS (trusting the stack's CA) and reads the demo secrets.

use serde_json::{json, Value};
use spiffe::WorkloadApiClient;
use svid_exec_testkit::stack::{self, Stack};

#[test]
fn every_auth_method_logs_in_with_an_agent_svid_and_reads_the_demo_secrets() {
    let stack = Stack::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = stack.ca.reqwest_client();
    rt.block_on(async {
        let client = WorkloadApiClient::connect_to(stack.agent.endpoint())
            .await
            .unwrap();
        for (method, identity) in [
            ("oidc-auth", stack::OIDC_IDENTITY),
            ("jwt-auth", stack::JWT_IDENTITY),
            ("spiffe-auth", stack::SPIFFE_IDENTITY),
        ] {
            let svid = client
                .fetch_jwt_svid(&[stack::AUDIENCE], None)
                .await
                .unwrap();
            assert_eq!(svid.spiffe_id().to_string(), stack::WORKLOAD);
            let login: Value = http
                .post(format!(
                    "{}/api/v1/auth/{method}/login",
                    stack.infisical.url()
                ))
                .json(&json!({"identityId": identity, "jwt": svid.token()}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = login["accessToken"]
                .as_str()
                .unwrap_or_else(|| panic!("{method}: {login}"));
            let listed: Value = http
                .get(format!(
                    "{}/api/v4/secrets?projectId={}&environment={}&secretPath=/",
                    stack.infisical.url(),
                    stack::PROJECT_ID,
                    stack::ENVIRONMENT
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let keys: Vec<&str> = listed["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["secretKey"].as_str().unwrap())
                .collect();
            for (key, _) in stack::DEMO_SECRETS {
                assert!(keys.contains(key), "{method}: {keys:?}");
            }
        }
    });
}

#[test]
fn launcher_env_names_every_bootstrap_variable() {
    let stack = Stack::start();
    let names: Vec<String> = stack.launcher_env().into_iter().map(|(k, _)| k).collect();
    for name in [
        "SPIFFE_ENDPOINT_SOCKET",
        "INFISICAL_API_URL",
        "SVID_EXEC_CA_CERT",
        "INFISICAL_MACHINE_IDENTITY_ID",
        "INFISICAL_PROJECT_ID",
        "INFISICAL_ENVIRONMENT",
    ] {
        assert!(names.iter().any(|n| n == name), "{name}");
    }
    assert!(stack.ca_path().exists());
    let jwt =
        std::fs::read_to_string(stack.write_jwt_file(std::time::Duration::from_secs(60))).unwrap();
    assert_eq!(jwt.split('.').count(), 3);
}

/// `testkit-stack` is usable by hand: a real `--help` (exit 0), the project's
/// slug and commands to paste in its banner, and secrets changed while it
/// runs through lines on its standard input.
mod by_hand {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    const BIN: &str = env!("CARGO_BIN_EXE_testkit-stack");
    const WAIT: Duration = Duration::from_secs(60);

    #[test]
    fn help_exits_0_and_documents_the_options_and_the_stdin_commands() {
        let out = Command::new(BIN).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "--secrets",
            "--http",
            "--env-file",
            "--jwt-file",
            "set PATH KEY VALUE",
            "/app/db",
        ] {
            assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
        }
        assert!(out.stderr.is_empty());
    }

    #[test]
    fn banner_names_the_slug_and_set_on_stdin_changes_a_secret() {
        let mut child = Command::new(BIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let ended = loop {
            let Ok(line) = rx.recv_timeout(WAIT) else {
                break false;
            };
            let done = line.starts_with("# press Ctrl-C");
            banner.push(line);
            if done {
                break true;
            }
        };
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "set /app NEW_KEY new value").unwrap();
        writeln!(stdin, "bogus").unwrap();
        let answers: Vec<String> = (0..2).filter_map(|_| rx.recv_timeout(WAIT).ok()).collect();
        let _ = child.kill();
        let _ = child.wait();
        let banner = banner.join("\n");
        assert!(ended, "no end of the banner:\n{banner}");
        assert!(banner.contains("slug billing"), "{banner}");
        assert!(banner.contains("svid-exec run --watch"), "{banner}");
        assert!(banner.contains("export INFISICAL_API_URL="), "{banner}");
        assert_eq!(answers[0], "ok: set /app NEW_KEY", "{answers:?}");
        assert!(answers[1].contains("not understood"), "{answers:?}");
    }
}
