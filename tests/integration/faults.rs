//! The fault matrix: one test per failure the launcher meets at pod start
//! (SPIRE agent absent, late, denying, crashing; Infisical refusing, slow,
//! failing, throttling, answering garbage, too much or half a body; TLS
//! trust; refusals), each running the real binary against the stand-ins and
//! asserting the exit code, a message that says what happened, that nothing
//! secret reached stderr, and whether the program ran (it creates a marker
//! file: it must not exist after any failure). Also the bounded load test
//! (`#[ignore]`d here, run alone by `bench/load.sh`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::stack::{Stack, StackOptions, PROJECT_ID, SPIFFE_IDENTITY, WORKLOAD};
use svid_exec_testkit::workload::{AgentConfig, Svid};

use crate::util::{agent_fetches, assert_no_secret, Launcher, Outcome, Running};

const SECRETS_ROUTE: &str = "/api/v4/secrets";
const LOGIN_ROUTE: &str = "/api/v1/auth/oidc-auth/login";
/// No launcher in this file may run longer than this; it is killed then.
const HARD_LIMIT: Duration = Duration::from_secs(120);

/// A launcher to run against `stack`: `svid-exec run [args] -- touch MARKER`
/// with the environment a user exports (adjusted by the test), at trace level
/// (the audit of every outcome for secrets and panics then covers every log
/// line each failure path can print).
fn launch(stack: &Stack) -> Launcher {
    let mut launcher = Launcher::run_on(stack, HARD_LIMIT);
    launcher.env("SVID_EXEC_LOG_LEVEL", "trace");
    launcher
}

fn statuses(stack: &Stack, path: &str) -> Vec<u16> {
    stack
        .infisical
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.status)
        .collect()
}

/// A 127.0.0.1 port with nothing listening.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn stack_with_agent(agent: AgentConfig) -> Stack {
    Stack::start_with(StackOptions {
        agent,
        ..StackOptions::default()
    })
}

mod agent {
    use super::*;

    #[test]
    fn absent_until_the_deadline_exits_69_naming_the_socket_it_waited_for() {
        let stack = Stack::start();
        let socket = stack.dir().join("no-agent.sock");
        let out = launch(&stack)
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", socket.display()),
            )
            .arg("--startup-timeout=2s")
            .run();
        out.expect_refused(
            69,
            &[
                "no JWT-SVID from the Workload API",
                "no-agent.sock",
                "does not exist yet",
                "check that the SPIRE agent is running",
            ],
        );
        assert!(
            stack.infisical.requests().is_empty(),
            "no login without a JWT"
        );
    }

    #[test]
    fn refusing_connections_until_the_deadline_exits_69() {
        let mut stack = Stack::start();
        // A crashed agent's socket file, with nothing listening on it.
        stack.agent.stop_leaving_stale_socket();
        let out = launch(&stack).arg("--startup-timeout=2s").run();
        out.expect_refused(
            69,
            &["no JWT-SVID from the Workload API", "nothing is listening"],
        );
    }

    #[test]
    fn late_is_waited_for_then_the_program_runs() {
        let stack = stack_with_agent(AgentConfig::default().start_delay(Duration::from_secs(2)));
        let out = launch(&stack).arg("--startup-timeout=60s").run();
        out.expect_ran();
        out.expect_stderr("does not exist yet")
            .expect_stderr("waiting");
    }

    #[test]
    fn denying_the_first_calls_is_waited_for_then_the_program_runs() {
        let stack = stack_with_agent(AgentConfig::default().deny_first(3));
        let out = launch(&stack).arg("--startup-timeout=60s").run();
        out.expect_ran();
        out.expect_stderr("has not issued an identity for this workload yet");
        assert!(
            agent_fetches(&stack) >= 4,
            "3 denied calls, then one answered"
        );
    }

    #[test]
    fn unavailable_is_retried_then_the_program_runs() {
        let stack = stack_with_agent(AgentConfig::default().unavailable_first(2));
        let out = launch(&stack).arg("--startup-timeout=60s").run();
        out.expect_ran();
        out.expect_stderr("Unavailable");
    }

    #[test]
    fn crashing_mid_call_and_restarting_is_survived() {
        let mut stack = stack_with_agent(AgentConfig::default().latency(Duration::from_secs(30)));
        let running = launch(&stack).arg("--startup-timeout=60s").spawn();
        // Wait until the launcher's call is in the agent (held by the latency)…
        let asked = Instant::now();
        while agent_fetches(&stack) == 0 {
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "no call reached the agent"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // …then crash it (the connection drops mid-call, the socket goes) and
        // bring it back, healthy, a moment later.
        stack.agent.stop();
        stack.agent.set_latency(Duration::ZERO);
        stack.agent.restart_after(Duration::from_secs(1));
        let out = running.wait();
        out.expect_ran();
        out.expect_stderr("waiting");
        assert!(agent_fetches(&stack) >= 2, "the call was made again");
    }

    #[test]
    fn never_issuing_an_identity_exits_69_with_the_registration_hint() {
        let stack = stack_with_agent(AgentConfig::default().deny_first(u32::MAX));
        let out = launch(&stack).arg("--startup-timeout=2s").run();
        out.expect_refused(69, &["has not issued an identity", "registration entry"]);
    }

    #[test]
    fn an_invalid_spiffe_id_exits_78_before_asking_the_agent() {
        let stack = Stack::start();
        let out = launch(&stack)
            .arg("--spiffe-id=example.org/not-a-spiffe-id")
            .arg("--startup-timeout=60s")
            .run();
        out.expect_refused(78, &["--spiffe-id", "spiffe://"]);
        assert_eq!(agent_fetches(&stack), 0, "refused at once, no call made");
    }
}

mod server {
    use super::*;

    #[test]
    fn refusing_connections_until_the_deadline_exits_69() {
        let stack = Stack::start();
        let out = launch(&stack)
            .env(
                "INFISICAL_API_URL",
                format!("https://127.0.0.1:{}", closed_port()),
            )
            .arg("--startup-timeout=3s")
            .run();
        out.expect_refused(
            69,
            &[
                "gave up on Infisical after",
                "cannot reach Infisical",
                "--startup-timeout",
            ],
        );
        assert!(out.stderr.contains("retrying"), "{}", out.stderr);
    }

    #[test]
    fn slow_past_the_deadline_is_cut_at_the_deadline_and_exits_69() {
        let stack = Stack::start();
        stack
            .infisical
            .fail_next(LOGIN_ROUTE, 100, Fault::Latency(Duration::from_secs(90)));
        let out = launch(&stack).arg("--startup-timeout=3s").run();
        out.expect_refused(69, &["gave up on Infisical after", "timed out"]);
        // Bounded by --startup-timeout, not by the server's 90 s (generous bound).
        assert!(out.elapsed < Duration::from_secs(60), "{:?}", out.elapsed);
    }

    #[test]
    fn slow_past_the_request_timeout_is_retried_then_the_program_runs() {
        let stack = Stack::start();
        // One answer slower than the 30 s request timeout; the retry is served at once.
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 1, Fault::Latency(Duration::from_secs(45)));
        let out = launch(&stack).arg("--startup-timeout=100s").run();
        out.expect_ran();
        out.expect_stderr("timed out").expect_stderr("retrying");
        assert!(
            out.elapsed >= Duration::from_secs(29),
            "the first attempt was given the request timeout: {:?}",
            out.elapsed
        );
    }

    #[test]
    fn errors_500_502_503_are_retried_then_the_program_runs() {
        let stack = Stack::start();
        for status in [500, 502, 503] {
            stack
                .infisical
                .fail_next(SECRETS_ROUTE, 1, Fault::Status(status));
        }
        let out = launch(&stack).run();
        out.expect_ran();
        out.expect_stderr("HTTP 500")
            .expect_stderr("HTTP 502")
            .expect_stderr("HTTP 503")
            .expect_stderr("retrying");
        assert_eq!(statuses(&stack, SECRETS_ROUTE), [500, 502, 503, 200]);
    }

    #[test]
    fn errors_5xx_until_the_deadline_exit_69() {
        let stack = Stack::start();
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 10_000, Fault::Status(503));
        let out = launch(&stack).arg("--startup-timeout=3s").run();
        out.expect_refused(69, &["gave up on Infisical after", "HTTP 503"]);
    }

    fn rate_limited_once(header: bool) {
        let stack = Stack::start();
        stack.infisical.fail_next(
            SECRETS_ROUTE,
            1,
            Fault::RateLimited {
                retry_after_secs: 3,
                header,
            },
        );
        let out = launch(&stack).run();
        out.expect_ran();
        out.expect_stderr("HTTP 429").expect_stderr("retrying");
        assert_eq!(statuses(&stack, SECRETS_ROUTE), [429, 200]);
        // Measured, not a tight timing check: it cannot finish before the
        // 3 s the server asked for; the upper bound only catches a hang.
        assert!(
            out.elapsed >= Duration::from_secs(3),
            "retried before the server's 3 s: {:?}",
            out.elapsed
        );
        assert!(out.elapsed < Duration::from_secs(60), "{:?}", out.elapsed);
    }

    #[test]
    fn rate_limited_with_retry_after_waits_at_least_that_long() {
        rate_limited_once(true);
    }

    #[test]
    fn rate_limited_with_the_wait_only_in_the_message_waits_at_least_that_long() {
        rate_limited_once(false);
    }

    #[test]
    fn rate_limited_past_the_deadline_gives_up_at_once_with_69() {
        let stack = Stack::start();
        stack.infisical.fail_next(
            SECRETS_ROUTE,
            1,
            Fault::RateLimited {
                retry_after_secs: 600,
                header: true,
            },
        );
        let out = launch(&stack).arg("--startup-timeout=20s").run();
        out.expect_refused(69, &["HTTP 429", "gave up on Infisical after"]);
        assert_eq!(statuses(&stack, SECRETS_ROUTE), [429], "no pointless retry");
    }

    #[test]
    fn garbage_json_is_a_clear_error_not_a_panic() {
        let stack = Stack::start();
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 100, Fault::GarbageBody);
        let out = launch(&stack).run();
        out.expect_refused(69, &["not the expected JSON", "invalid JSON at line"]);
    }

    #[test]
    fn a_truncated_body_is_a_clear_error() {
        let stack = Stack::start();
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 100, Fault::TruncatedBody);
        let out = launch(&stack).run();
        out.expect_refused(69, &["not the expected JSON", "cut short"]);
    }

    #[test]
    fn a_huge_body_is_refused_at_the_cap_with_bounded_memory() {
        let stack = Stack::start();
        // 1 GiB, chunked (no Content-Length): the cap must hold while reading.
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 100, Fault::HugeBody(1 << 30));
        let out = launch(&stack).run();
        out.expect_refused(69, &["larger than 67108864 bytes", "refusing to read it"]);
        // The largest child this test process has reaped so far: had the
        // launcher kept reading, it would hold the whole GiB.
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
            .expect("getrusage");
        let max_rss_mib = usage.max_rss() / 1024;
        println!("largest child's peak RSS: {max_rss_mib} MiB");
        assert!(max_rss_mib < 400, "launcher peak RSS {max_rss_mib} MiB");
    }

    #[test]
    fn a_connection_dropped_mid_body_is_retried_then_the_program_runs() {
        let stack = Stack::start();
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 2, Fault::DropConnection);
        let out = launch(&stack).run();
        out.expect_ran();
        out.expect_stderr("cannot reach Infisical")
            .expect_stderr("retrying");
        assert_eq!(
            statuses(&stack, SECRETS_ROUTE).len(),
            3,
            "two cut, one whole"
        );
    }

    #[test]
    fn a_connection_dropped_until_the_deadline_exits_69() {
        let stack = Stack::start();
        stack
            .infisical
            .fail_next(SECRETS_ROUTE, 10_000, Fault::DropConnection);
        let out = launch(&stack).arg("--startup-timeout=3s").run();
        out.expect_refused(
            69,
            &["gave up on Infisical after", "cannot reach Infisical"],
        );
    }
}

mod tls {
    use super::*;

    #[test]
    fn an_unknown_ca_exits_69_at_once_with_the_ca_cert_hint_and_the_whole_chain() {
        let stack = Stack::start();
        let out = launch(&stack)
            .env_remove("SVID_EXEC_CA_CERT")
            .arg("--startup-timeout=60s")
            .run();
        out.expect_refused(
            69,
            &["TLS with Infisical failed", "--ca-cert", "UnknownIssuer"],
        );
        assert!(
            !out.stderr.contains("retrying"),
            "a certificate problem is not retried"
        );
        assert!(stack.infisical.requests().is_empty());
    }

    #[test]
    fn ca_cert_makes_the_server_trusted() {
        let stack = Stack::start();
        let ca = stack.ca_path().display().to_string();
        let out = launch(&stack)
            .env_remove("SVID_EXEC_CA_CERT")
            .arg(format!("--ca-cert={ca}"))
            .run();
        out.expect_ran();
    }

    #[test]
    fn insecure_http_to_a_non_loopback_host_is_refused_78_unless_allowed_then_warned() {
        let stack = Stack::start_with(StackOptions {
            https: false,
            ..StackOptions::default()
        });
        // 0.0.0.0 reaches the local listener but is not a loopback name.
        let url = format!("http://0.0.0.0:{}", stack.infisical.addr().port());
        let out = launch(&stack).env("INFISICAL_API_URL", &url).run();
        out.expect_refused(78, &["--allow-insecure-http"]);
        assert!(stack.infisical.requests().is_empty());

        for _ in 0..2 {
            let out = launch(&stack)
                .env("INFISICAL_API_URL", &url)
                .arg("--allow-insecure-http")
                .run();
            out.expect_ran();
            out.expect_stderr("WARN")
                .expect_stderr("--allow-insecure-http")
                .expect_stderr("in clear");
        }
    }
}

mod refusals {
    use super::*;

    #[test]
    fn a_wrong_identity_is_refused_without_retrying() {
        let stack = Stack::start();
        let out = launch(&stack)
            .env(
                "INFISICAL_MACHINE_IDENTITY_ID",
                "00000000-0000-4000-8000-000000000000",
            )
            .run();
        out.expect_refused(
            77,
            &["00000000-0000-4000-8000-000000000000", "--identity-id"],
        );
        assert_eq!(statuses(&stack, LOGIN_ROUTE).len(), 1, "not retried");
    }

    #[test]
    fn a_wrong_subject_is_refused_77_naming_the_subject() {
        let stack = Stack::start();
        stack
            .agent
            .set_svids([Svid::new("spiffe://example.org/ns/dev/sa/billing")]);
        let out = launch(&stack).run();
        out.expect_refused(
            77,
            &[
                "refused the oidc-auth login",
                "spiffe://example.org/ns/dev/sa/billing",
            ],
        );
        assert_eq!(statuses(&stack, LOGIN_ROUTE).len(), 1, "not retried");
        assert_ne!(WORKLOAD, "spiffe://example.org/ns/dev/sa/billing");
    }

    #[test]
    fn a_missing_project_exits_78_without_retrying() {
        let stack = Stack::start();
        assert_ne!(PROJECT_ID, "0badc0de-0000-4000-8000-000000000000");
        let out = launch(&stack)
            .env(
                "INFISICAL_PROJECT_ID",
                "0badc0de-0000-4000-8000-000000000000",
            )
            .run();
        out.expect_refused(
            78,
            &[
                "found nothing",
                "0badc0de-0000-4000-8000-000000000000",
                "--project-id",
            ],
        );
        assert_eq!(statuses(&stack, SECRETS_ROUTE).len(), 1, "not retried");
    }

    #[test]
    fn a_missing_path_answered_with_an_empty_list_exits_78_fail_closed() {
        let stack = Stack::start();
        let out = launch(&stack).arg("--path=/no/such/folder").run();
        out.expect_refused(
            78,
            &["no secrets were found", "/no/such/folder", "--allow-empty"],
        );
    }
}

/// A fleet restart: `LOAD_LAUNCHERS` launchers (1,000) started at once against
/// a server limited to `LOAD_RATE` requests/s (100) over all routes. Every
/// launcher must run its program, and the server must see at most 1.3 times
/// the minimum number of requests (one login, one listing and one revoke per
/// launcher):
/// the 429 policy spreads the herd instead of hammering the server. Heavy:
/// `bench/load.sh` runs it alone, bounded by `timeout`, and prints the
/// figures, including when the programs started (from the markers' mtimes).
/// `LOAD_BIN` runs another svid-exec binary (a release build) in the test's place.
#[test]
#[ignore = "load test: run by bench/load.sh"]
fn load_a_fleet_restart_against_a_rate_limited_server() {
    fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
    let launchers: usize = knob("LOAD_LAUNCHERS", 1000);
    let per_second: u32 = knob("LOAD_RATE", 100);
    let binary: PathBuf = knob("LOAD_BIN", PathBuf::from(env!("CARGO_BIN_EXE_svid-exec")));
    let stack = Stack::start();
    if per_second > 0 {
        stack
            .infisical
            .set_total_rate_limit(Some((per_second, Duration::from_secs(1))));
    }
    let t0 = std::time::SystemTime::now();
    let started = Instant::now();
    let runs: Vec<Running> = (0..launchers)
        .map(|_| {
            // SPIFFE Auth checks the JWT against a static bundle: the stand-in
            // then measures the launchers, not its own discovery fetches
            // (OIDC Auth fetches discovery + JWKS at every login, and those
            // fetches time out first on a 2-core machine under this load).
            launch(&stack)
                .binary(&binary)
                .env("INFISICAL_MACHINE_IDENTITY_ID", SPIFFE_IDENTITY)
                .env("INFISICAL_AUTH_METHOD", "spiffe-auth")
                .arg("--startup-timeout=100s")
                .spawn()
        })
        .collect();
    let spawned = started.elapsed();
    let markers: Vec<PathBuf> = runs
        .iter()
        .filter_map(|r| r.marker().map(Path::to_path_buf))
        .collect();
    let outcomes: Vec<Outcome> = runs.into_iter().map(Running::wait).collect();
    let wall = started.elapsed();
    let requests = stack.infisical.requests();
    let total = requests.len();
    // One login, one secrets listing and one revoke each (the revoke before
    // exec: a token the program never uses must not outlive the launcher).
    let minimum = launchers * 3;
    println!(
        "load: launchers={launchers} limit={per_second}/s requests={total} minimum={minimum} \
         ratio={:.2} throttled_429={} first_attempts_429={} (logins {}) floor={:.2} failed={} \
         wall={:.1}s spawned_in={:.1}s",
        ratio(total, minimum),
        requests.iter().filter(|r| r.status == 429).count(),
        first_attempt_refusals(&outcomes, ""),
        first_attempt_refusals(&outcomes, "/login"),
        ratio(minimum + first_attempt_refusals(&outcomes, ""), minimum),
        outcomes.iter().filter(|o| !ran_fine(o)).count(),
        wall.as_secs_f64(),
        spawned.as_secs_f64(),
    );
    let starts = start_times(&markers, t0);
    let at = |q: f64| quantile(&starts, q);
    let need = if per_second > 0 {
        ratio(minimum, per_second as usize)
    } else {
        0.0
    };
    println!(
        "load: programs started after p50={:.1}s p99={:.1}s max={:.1}s (the limit alone needs {need:.1}s for all)",
        at(0.5),
        at(0.99),
        at(1.0),
    );
    println!(
        "load: 429s per second since the first spawn: {:?}",
        per_second_429(&requests, t0)
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !ran_fine(o)).collect();
    if let Some(o) = failed.first() {
        panic!("{} launchers failed; first:\n{}", failed.len(), o.stderr);
    }
    // What the retry policy controls: requests beyond the minimum that were
    // not refused first attempts (a launcher knows nothing before its first
    // answer, so how tightly the herd arrives sets the floor; the 1.3x target
    // of issue 17 is judged by bench/load.sh --release in BENCHMARKS.md,
    // against that floor). Retries sent into a full window must stay rare.
    let unavoidable = first_attempt_refusals(&outcomes, "");
    let avoidable = total.saturating_sub(minimum + unavoidable);
    assert!(
        avoidable * 20 <= minimum,
        "{avoidable} retries beyond the floor for a minimum of {minimum} (more than 5%): \
         the herd is not spread"
    );
    assert!(
        total < 2 * minimum,
        "{total} requests for a minimum of {minimum}: the herd is not spread"
    );
}

fn ran_fine(o: &Outcome) -> bool {
    o.status.code() == Some(0) && o.ran == Some(true)
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: usize, b: usize) -> f64 {
    a as f64 / b.max(1) as f64
}

/// Calls (whose log line contains `call`) refused at their first attempt (a
/// launcher logs `retry=1` after the first 429 of a call): no client policy
/// avoids those, the herd knows nothing before its first answer. The other
/// 429s are retries sent into a full window: those are the policy's.
fn first_attempt_refusals(outcomes: &[Outcome], call: &str) -> usize {
    outcomes
        .iter()
        .map(|o| {
            o.stderr
                .lines()
                .filter(|l| l.contains("HTTP 429") && l.contains(" retry=1 ") && l.contains(call))
                .count()
        })
        .sum()
}

/// When each program started, in seconds after `t0`, sorted: `touch` set
/// its marker's mtime.
fn start_times(markers: &[PathBuf], t0: std::time::SystemTime) -> Vec<f64> {
    let mut starts: Vec<f64> = markers
        .iter()
        .filter_map(|m| std::fs::metadata(m).and_then(|m| m.modified()).ok())
        .map(|t| t.duration_since(t0).unwrap_or_default().as_secs_f64())
        .collect();
    starts.sort_by(f64::total_cmp);
    starts
}

/// The `q` quantile (nearest rank) of sorted `values`; NaN when empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = (values.len() as f64 * q).ceil() as usize;
    values
        .get(rank.clamp(1, values.len().max(1)) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

/// How many 429s the server sent in each second after `t0`.
fn per_second_429(
    requests: &[svid_exec_testkit::infisical::RequestRecord],
    t0: std::time::SystemTime,
) -> Vec<u32> {
    let mut counts = Vec::new();
    for r in requests.iter().filter(|r| r.status == 429) {
        let second = usize::try_from(r.at.duration_since(t0).unwrap_or_default().as_secs())
            .unwrap_or(usize::MAX);
        if counts.len() <= second {
            counts.resize(second + 1, 0u32);
        }
        counts[second] += 1;
    }
    counts
}

/// A panic (a bug) exits 70 and prints where it happened, never the message:
/// the debug-only `SVID_EXEC_DEBUG_PANIC` hook panics with every fetched value
/// in its message, and none of them may reach stderr.
#[test]
fn a_panic_exits_70_without_printing_its_message() {
    let stack = Stack::start();
    let marker = stack.dir().join("panic.ran");
    let out = Launcher::on(&stack)
        .env("SVID_EXEC_DEBUG_PANIC", "1")
        .args(["run", "--log-level", "trace", "--", "touch"])
        .arg(&marker)
        .run();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("internal error at"), "{stderr}");
    assert!(
        !stderr.contains("debug panic"),
        "the panic message leaked:\n{stderr}"
    );
    assert_no_secret(stderr, &[]);
    assert!(!marker.exists(), "the program ran after a panic");
}
