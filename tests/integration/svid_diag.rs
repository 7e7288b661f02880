//! The JWT-SVID sources' answers to the mistakes people make and to agents
//! that misbehave, each run with the real binary against the stand-ins
//! (`svid-exec run [args] -- touch MARKER`, as in `faults.rs`): the exit code,
//! the key words of the message, whether the program ran, and whether
//! anything reached the agent or Infisical.
//!
//! - the Workload API address: unset (the default is named), a directory (its
//!   sockets listed), a socket this user may not open (who owns what), the
//!   progress lines while waiting, several audiences;
//! - `--jwt-file`: a FIFO, a file above the size cap, a file others may read,
//!   one others may write or another user owns, a projected token's links;
//! - the agent's answer: a token whose `sub` or `aud` contradicts the answer.

use std::path::Path;
use std::time::Duration;

use svid_exec_testkit::stack::{Stack, StackOptions, WORKLOAD};
use svid_exec_testkit::workload::{AgentConfig, Lie};

use crate::util::{agent_fetches, oidc_logins, Launcher, Outcome, Scratch};

/// No launcher in this module may run longer than this; it is killed then.
const HARD_LIMIT: Duration = Duration::from_secs(90);
/// The SPIRE agent's default socket, svid-exec's default address.
const DEFAULT_SOCKET: &str = "/tmp/spire-agent/public/api.sock";

/// `svid-exec run [args] -- touch MARKER` against `stack`, with the
/// environment a user exports (adjusted by the test), its every outcome
/// audited for secrets and panics.
fn launch(stack: &Stack) -> Launcher {
    Launcher::run_on(stack, HARD_LIMIT)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

mod address {
    use super::*;

    #[test]
    fn unset_says_so_and_names_the_default_it_tried_in_the_first_wait_and_the_error() {
        assert!(
            !Path::new(DEFAULT_SOCKET).exists(),
            "this test needs no SPIRE agent at {DEFAULT_SOCKET}"
        );
        let stack = Stack::start();
        let out = launch(&stack)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .arg("--startup-timeout=2s")
            .run();
        out.expect_refused(69, &["does not exist yet", DEFAULT_SOCKET]);
        let unset = "SPIFFE_ENDPOINT_SOCKET is unset";
        let waiting = out
            .stderr
            .lines()
            .find(|l| l.contains("waiting"))
            .expect("a waiting line");
        assert!(waiting.contains(unset), "{waiting}");
        let error = out
            .stderr
            .lines()
            .find(|l| l.contains("no JWT-SVID from the Workload API"))
            .expect("the final error");
        assert!(error.contains(unset), "{error}");
        out.expect_stderr("svid-exec: hint: SPIFFE_ENDPOINT_SOCKET is unset and --workload-api-socket was not given");
        assert_eq!(oidc_logins(&stack), 0);
    }

    #[test]
    fn set_by_the_variable_or_the_flag_is_named_by_where_it_came_from() {
        let stack = Stack::start();
        let absent = format!("unix://{}", stack.dir().join("absent.sock").display());
        let out = launch(&stack)
            .env("SPIFFE_ENDPOINT_SOCKET", absent.clone())
            .arg("--startup-timeout=1s")
            .run();
        out.expect_refused(69, &["absent.sock (from SPIFFE_ENDPOINT_SOCKET)"]);
        assert!(!out.stderr.contains("is unset"), "{}", out.stderr);
        let out = launch(&stack)
            .arg(format!("--workload-api-socket={absent}"))
            .arg("--startup-timeout=1s")
            .run();
        out.expect_refused(69, &["absent.sock (from --workload-api-socket)"]);
    }

    #[test]
    fn waiting_says_every_ten_seconds_what_it_still_waits_for() {
        let stack = Stack::start();
        let absent = format!("unix://{}", stack.dir().join("absent.sock").display());
        let out = launch(&stack)
            .env("SPIFFE_ENDPOINT_SOCKET", absent)
            .arg("--startup-timeout=12s")
            .run();
        out.expect_refused(69, &["still waiting for the SPIRE agent at unix://"]);
        let progress = out
            .stderr
            .lines()
            .find(|l| l.contains("still waiting for the SPIRE agent"))
            .unwrap();
        assert!(progress.contains("absent.sock"), "{progress}");
        assert!(progress.contains(" s of 12 s"), "{progress}");
        assert!(progress.contains("does not exist yet"), "{progress}");
    }

    #[test]
    fn a_directory_is_refused_at_once_listing_the_sockets_in_it() {
        let stack = Stack::start();
        let mount = stack.agent.socket_path().parent().unwrap().to_owned();
        let out = launch(&stack)
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", mount.display()),
            )
            .arg("--startup-timeout=60s")
            .run();
        out.expect_refused(
            78,
            &[
                "is a directory, not a socket",
                &format!("sockets in it: {}", stack.agent.endpoint()),
            ],
        );
        assert_eq!(agent_fetches(&stack), 0);
        assert_eq!(oidc_logins(&stack), 0);

        let empty = stack.dir().join("empty-mount");
        std::fs::create_dir(&empty).unwrap();
        let out = launch(&stack)
            .arg(format!("--workload-api-socket={}", empty.display()))
            .arg("--startup-timeout=60s")
            .run();
        out.expect_refused(78, &["is a directory, not a socket", "it holds no socket"]);
    }

    /// `setpriv(1)` as uid and gid 65534 without supplementary groups.
    const NOBODY: [&str; 5] = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];

    /// Runs the launcher as uid 65534 against a socket only root may open;
    /// `None` when this test cannot drop privileges here (not root, no
    /// setpriv, or a binary that nobody may execute).
    fn as_nobody(stack: &Stack) -> Option<Outcome> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to run the launcher as another user");
            return None;
        }
        let probe = std::process::Command::new(NOBODY[0])
            .args(&NOBODY[1..])
            .arg(env!("CARGO_BIN_EXE_svid-exec"))
            .arg("--version")
            .output();
        if !probe.is_ok_and(|p| p.status.success()) {
            eprintln!("skipped: nobody cannot run the test binary here (or no setpriv)");
            return None;
        }
        Some(
            launch(stack)
                .via(&NOBODY)
                // Plain HTTP on loopback: no CA file to read as nobody.
                .env_remove("SVID_EXEC_CA_CERT")
                .arg("--startup-timeout=2s")
                .run(),
        )
    }

    fn http_stack() -> Stack {
        Stack::start_with(StackOptions {
            https: false,
            ..StackOptions::default()
        })
    }

    #[test]
    fn permission_denied_names_us_and_the_sockets_owner_and_mode_and_is_retried() {
        let stack = http_stack();
        let socket = stack.agent.socket_path().to_owned();
        chmod(socket.parent().unwrap(), 0o755);
        chmod(&socket, 0o700);
        let Some(out) = as_nobody(&stack) else {
            return;
        };
        out.expect_refused(
            69,
            &[
                "no JWT-SVID from the Workload API",
                "permission denied",
                "svid-exec runs as uid 65534 gid 65534",
                "the socket is owned by uid 0 gid 0, mode 0700",
                "waiting",
            ],
        );
    }

    #[test]
    fn permission_denied_by_a_directory_on_the_way_names_that_directory() {
        let stack = http_stack();
        let socket = stack.agent.socket_path().to_owned();
        let dir = socket.parent().unwrap().to_owned();
        chmod(&dir, 0o700);
        let Some(out) = as_nobody(&stack) else {
            return;
        };
        out.expect_refused(
            69,
            &[
                "permission denied",
                "svid-exec runs as uid 65534 gid 65534",
                &format!(
                    "the directory {} (owned by uid 0 gid 0, mode 0700) does not let this user through",
                    dir.display()
                ),
            ],
        );
    }

    #[test]
    fn several_audiences_are_warned_about_at_start() {
        let stack = Stack::start();
        let out = launch(&stack)
            .arg("--audience=infisical")
            .arg("--audience=billing")
            .run();
        out.expect_ran();
        out.expect_stderr("several audiences requested (billing, infisical)")
            .expect_stderr("HTTP 500");

        let out = launch(&stack).run();
        out.expect_ran();
        assert!(!out.stderr.contains("several audiences"), "{}", out.stderr);
    }
}

mod jwt_file {
    use super::*;

    fn token(stack: &Stack) -> String {
        let path = stack.write_jwt_file(Duration::from_secs(300));
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_fifo_is_refused_at_once_without_waiting_for_a_writer() {
        let stack = Stack::start();
        let fifo = stack.dir().join("token.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let out = launch(&stack)
            .arg(format!("--jwt-file={}", fifo.display()))
            .arg("--startup-timeout=60s")
            .run();
        out.expect_refused(78, &["token.fifo", "FIFO", "not a regular file"]);
        assert_eq!(oidc_logins(&stack), 0);
    }

    #[test]
    fn a_file_above_the_cap_is_refused_even_when_it_starts_with_a_valid_jwt() {
        let stack = Stack::start();
        let path = stack.dir().join("padded.jwt");
        let jwt = token(&stack);
        std::fs::write(&path, format!("{jwt}{}", "\n".repeat(70 * 1024))).unwrap();
        chmod(&path, 0o600);
        let out = launch(&stack)
            .arg(format!("--jwt-file={}", path.display()))
            .run();
        out.expect_refused(78, &["padded.jwt", "larger than 64 KiB"]);
        assert_eq!(oidc_logins(&stack), 0);
    }

    #[test]
    fn a_file_others_may_read_is_used_with_a_warning() {
        let stack = Stack::start();
        let path = stack.dir().join("shared.jwt");
        std::fs::write(&path, token(&stack)).unwrap();
        chmod(&path, 0o644);
        let out = launch(&stack)
            .arg(format!("--jwt-file={}", path.display()))
            .run();
        out.expect_ran();
        out.expect_stderr("the JWT file is readable by group and others")
            .expect_stderr("0644");

        chmod(&path, 0o600);
        let out = launch(&stack)
            .arg(format!("--jwt-file={}", path.display()))
            .run();
        out.expect_ran();
        assert!(!out.stderr.contains("readable by"), "{}", out.stderr);
    }

    #[test]
    fn a_file_its_group_or_others_may_write_is_refused_before_any_login() {
        let stack = Stack::start();
        let path = stack.dir().join("writable.jwt");
        std::fs::write(&path, token(&stack)).unwrap();
        for (mode, who) in [(0o620, "its group"), (0o602, "others")] {
            chmod(&path, mode);
            let out = launch(&stack)
                .arg(format!("--jwt-file={}", path.display()))
                .run();
            out.expect_refused(
                78,
                &[
                    &format!("writable.jwt is writable by {who} (mode {mode:04o})"),
                    "svid-exec: hint: make the file owned by root or by the user svid-exec runs as",
                    "another identity's token",
                ],
            );
        }
        assert_eq!(oidc_logins(&stack), 0, "the token was not used");
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to give the file to another user");
            return;
        }
        let stack = Stack::start();
        let path = stack.dir().join("theirs.jwt");
        std::fs::write(&path, token(&stack)).unwrap();
        chmod(&path, 0o600);
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let out = launch(&stack)
            .arg(format!("--jwt-file={}", path.display()))
            .run();
        out.expect_refused(
            78,
            &["theirs.jwt is owned by uid 65534, neither root nor the user svid-exec runs as"],
        );
        assert_eq!(oidc_logins(&stack), 0, "the token was not used");
    }

    /// kubelet's projected service-account token: a sticky world-writable
    /// volume, the token (0644) in a timestamped directory, reached through
    /// the `..data` and `token` symbolic links.
    #[test]
    fn a_projected_token_behind_kubelets_links_is_used() {
        use std::os::unix::fs::symlink;
        let stack = Stack::start();
        let volume = Scratch::temp();
        let generation = volume.path().join("..2026_12_03_16_20_39.1");
        std::fs::create_dir(&generation).unwrap();
        std::fs::write(generation.join("token"), token(&stack)).unwrap();
        chmod(&generation.join("token"), 0o644);
        symlink("..2026_12_03_16_20_39.1", volume.path().join("..data")).unwrap();
        symlink("..data/token", volume.path().join("token")).unwrap();
        chmod(volume.path(), 0o1777);
        let out = launch(&stack)
            .arg(format!(
                "--jwt-file={}",
                volume.path().join("token").display()
            ))
            .run();
        out.expect_ran();
        out.expect_stderr("the JWT file is readable by group and others");
    }
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
        let out = launch(&stack).arg("--startup-timeout=60s").run();
        out.expect_refused(
            69,
            &[
                "contradicts its answer",
                &format!("the answer is for {WORKLOAD}"),
                "sub claim is spiffe://example.org/ns/prod/sa/impostor",
            ],
        );
        assert_eq!(agent_fetches(&stack), 1, "not retried");
        assert_eq!(oidc_logins(&stack), 0, "the token was not used");
    }

    #[test]
    fn a_token_whose_aud_lacks_the_requested_audience_is_refused_before_login() {
        let stack = lying_stack(Lie::Audience(vec!["vault".into()]));
        let out = launch(&stack).arg("--startup-timeout=60s").run();
        out.expect_refused(
            69,
            &[
                "contradicts its answer",
                "asked for audience \"infisical\"",
                "aud claim is [\"vault\"]",
            ],
        );
        assert_eq!(oidc_logins(&stack), 0, "the token was not used");
    }
}
