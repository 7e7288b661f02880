//! The JWT-SVID sources' answers to the mistakes people make and to agents
//! that misbehave, each run with the real binary against the stand-ins
//! (`svid-exec run [args] -- touch MARKER`, as in `faults.rs`): the exit code,
//! the key words of the message, whether the program ran, and whether
//! anything reached the agent or Infisical.
//!
//! - the agent's answer: a token whose `sub` or `aud` contradicts the answer.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use svid_exec_testkit::stack::{Stack, StackOptions, WORKLOAD};
use svid_exec_testkit::workload::{AgentConfig, Lie};

/// No launcher in this file may run longer than this; it is killed then.
const HARD_LIMIT: Duration = Duration::from_secs(90);
const LOGIN_ROUTE: &str = "/api/v1/auth/oidc-auth/login";

/// What one launcher run did.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    ran: bool,
}

impl Outcome {
    fn assert_says(&self, needles: &[&str]) {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
    }

    /// A failure: the code, the message, and the program never started.
    fn assert_refused(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, Some(code), "exit code; stderr:\n{}", self.stderr);
        self.assert_says(needles);
        assert!(!self.ran, "the program ran despite the failure");
    }
}

/// `svid-exec run [args] -- touch MARKER` against `stack`, with the
/// environment a user exports, adjusted.
struct Launch<'a> {
    stack: &'a Stack,
    args: Vec<String>,
    marker: PathBuf,
}

impl<'a> Launch<'a> {
    fn new(stack: &'a Stack, name: &str) -> Self {
        Self {
            stack,
            args: Vec::new(),
            marker: stack.dir().join(format!("{name}.ran")),
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    fn run(&self) -> Outcome {
        let _ = std::fs::remove_file(&self.marker);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_svid-exec"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.stack.launcher_env())
            .arg("run")
            .args(&self.args)
            .arg("--")
            .arg("touch")
            .arg(&self.marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn svid-exec");
        let stderr = child.stderr.take().expect("stderr piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
            s
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > HARD_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("svid-exec still running after {HARD_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = reader.join().expect("stderr reader");
        // Shown with --nocapture, and by libtest when the test fails.
        println!("--- exit {:?}:\n{stderr}", status.code());
        assert!(!stderr.contains("eyJ"), "a JWT in stderr:\n{stderr}");
        assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
        Outcome {
            code: status.code(),
            stderr,
            ran: self.marker.exists(),
        }
    }
}

fn agent_fetches(stack: &Stack) -> usize {
    stack
        .agent
        .calls()
        .iter()
        .filter(|c| c.method == "FetchJWTSVID")
        .count()
}

fn logins(stack: &Stack) -> usize {
    stack
        .infisical
        .requests()
        .iter()
        .filter(|r| r.path == LOGIN_ROUTE)
        .count()
}

mod answer {
    use super::*;

    fn lying_stack(lie: Lie) -> Stack {
        Stack::start_with(StackOptions {
            agent: AgentConfig::default().lie(lie),
            ..StackOptions::default()
        })
    }

    #[test]
    fn a_token_whose_sub_is_not_the_answers_spiffe_id_is_refused_before_login() {
        let stack = lying_stack(Lie::Subject(
            "spiffe://example.org/ns/prod/sa/impostor".into(),
        ));
        let out = Launch::new(&stack, "sub")
            .arg("--startup-timeout=60s")
            .run();
        out.assert_refused(
            69,
            &[
                "contradicts its answer",
                &format!("the answer is for {WORKLOAD}"),
                "sub claim is spiffe://example.org/ns/prod/sa/impostor",
            ],
        );
        assert_eq!(agent_fetches(&stack), 1, "not retried");
        assert_eq!(logins(&stack), 0, "the token was not used");
    }

    #[test]
    fn a_token_whose_aud_lacks_the_requested_audience_is_refused_before_login() {
        let stack = lying_stack(Lie::Audience(vec!["vault".into()]));
        let out = Launch::new(&stack, "aud")
            .arg("--startup-timeout=60s")
            .run();
        out.assert_refused(
            69,
            &[
                "contradicts its answer",
                "asked for audience \"infisical\"",
                "aud claim is [\"vault\"]",
            ],
        );
        assert_eq!(logins(&stack), 0, "the token was not used");
    }
}
