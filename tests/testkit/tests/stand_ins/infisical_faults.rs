//! The Infisical stand-in's test knobs: injected faults, rate limits, the
//! request log, counters, and restarts.

use std::time::{Duration, Instant};

use crate::support::*;
use svid_exec_testkit::infisical::{Fault, RateClass};

const LIST: &str = "/api/v4/secrets";

fn list_path() -> String {
    format!("{LIST}?projectId={PROJECT_ID}&environment={ENVIRONMENT}")
}

#[test]
fn a_429_fault_carries_the_wait_in_the_message_and_optionally_in_retry_after() {
    let stack = stand_ins();
    let token = stack.token();
    let inf = &stack.infisical;
    inf.fail_next(
        LIST,
        1,
        Fault::RateLimited {
            retry_after_secs: 7,
            header: true,
        },
    );
    inf.fail_next(
        LIST,
        1,
        Fault::RateLimited {
            retry_after_secs: 3,
            header: false,
        },
    );
    let first = stack.client().get(&list_path(), Some(&token));
    let body = first.error(429, "RateLimitExceeded");
    assert_eq!(
        body["message"],
        "Rate limit exceeded. Please try again in 7 seconds"
    );
    assert_eq!(first.headers["retry-after"], "7");
    let second = stack.client().get(&list_path(), Some(&token));
    let body = second.error(429, "RateLimitExceeded");
    assert_eq!(
        body["message"],
        "Rate limit exceeded. Please try again in 3 seconds"
    );
    assert!(second.headers.get("retry-after").is_none());
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
}

#[test]
fn status_faults_answer_like_the_server_or_a_proxy_then_recover() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.fail_next("/api/v1/auth/oidc-auth/login", 1, Fault::Status(500));
    inf.fail_next("/api/v1/auth/oidc-auth/login", 2, Fault::Status(502));
    let body = stack
        .client()
        .login("oidc", OIDC_IDENTITY, &stack.svid())
        .error(500, "InternalServerError");
    assert_eq!(body["message"], "Something went wrong");
    for _ in 0..2 {
        let r = stack.client().login("oidc", OIDC_IDENTITY, &stack.svid());
        assert_eq!(r.status, 502);
        assert!(r.text.contains("502 Bad Gateway"), "{}", r.text);
    }
    assert_eq!(
        inf.counters().logins,
        0,
        "faulted requests never reach the handler"
    );
    assert_eq!(
        stack
            .client()
            .login("oidc", OIDC_IDENTITY, &stack.svid())
            .status,
        200
    );
    // A prefix route with `*` covers every auth route.
    inf.fail_next("/api/v1/auth/*", 1, Fault::Status(503));
    assert_eq!(stack.client().renew("x").status, 503);
}

#[test]
fn body_faults_garble_truncate_or_drop_the_real_answer() {
    let stack = stand_ins();
    stack.infisical.set_secret(
        PROJECT_ID,
        ENVIRONMENT,
        "/",
        "A",
        "a value long enough to cut",
    );
    let token = stack.token();
    let inf = &stack.infisical;

    inf.fail_next(LIST, 1, Fault::GarbageBody);
    let garbage = stack.client().get(&list_path(), Some(&token));
    assert_eq!(garbage.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&garbage.text).is_err());

    inf.fail_next(LIST, 1, Fault::TruncatedBody);
    let truncated = stack.client().get(&list_path(), Some(&token));
    assert_eq!(truncated.status, 200);
    assert!(
        truncated.text.starts_with("{\"imports\":[]"),
        "{}",
        truncated.text
    );
    assert!(serde_json::from_str::<serde_json::Value>(&truncated.text).is_err());

    inf.fail_next(LIST, 1, Fault::DropConnection);
    let dropped = stack
        .client()
        .send(stack.client().get_request(&list_path(), Some(&token), None));
    assert!(dropped.is_err(), "the body read must fail: {dropped:?}");

    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
}

#[test]
fn latency_delays_the_answer_at_least_that_long() {
    let stack = stand_ins();
    stack
        .infisical
        .fail_next("/api/status", 1, Fault::Latency(Duration::from_millis(300)));
    let start = Instant::now();
    assert_eq!(stack.client().get("/api/status", None).status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_per_minute_rate_limit_applies_to_its_route_class_only() {
    let stack = stand_ins();
    let token = stack.token();
    let inf = &stack.infisical;
    inf.set_rate_limit(RateClass::Secrets, Some(2));
    let first = stack.client().get(&list_path(), Some(&token));
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-ratelimit-limit"], "2");
    assert_eq!(first.headers["x-ratelimit-remaining"], "1");
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
    let limited = stack.client().get(&list_path(), Some(&token));
    let body = limited.error(429, "RateLimitExceeded");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Rate limit exceeded. Please try again in "));
    assert_eq!(limited.headers["x-ratelimit-limit"], "2");
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
    // Other classes and /api/status are not affected.
    assert_eq!(
        stack
            .client()
            .get(
                &format!("/api/v1/projects/slug/{PROJECT_SLUG}"),
                Some(&token)
            )
            .status,
        200
    );
    assert_eq!(stack.client().get("/api/status", None).status, 200);
    inf.set_rate_limit(RateClass::Secrets, None);
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
}

#[test]
fn a_total_rate_limit_counts_every_class_together_and_can_be_lifted() {
    let stack = stand_ins();
    let token = stack.token();
    let inf = &stack.infisical;
    inf.set_total_rate_limit(Some((2, Duration::from_secs(60))));
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
    let project = format!("/api/v1/projects/slug/{PROJECT_SLUG}");
    assert_eq!(stack.client().get(&project, Some(&token)).status, 200);
    // The third request, of either class, is over.
    let limited = stack.client().get(&project, Some(&token));
    limited.error(429, "RateLimitExceeded");
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
    assert_eq!(
        stack.client().get("/api/status", None).status,
        200,
        "exempt"
    );
    inf.set_total_rate_limit(None);
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
}

#[test]
fn a_huge_body_fault_streams_that_many_bytes_without_a_length() {
    let stack = stand_ins();
    let token = stack.token();
    stack
        .infisical
        .fail_next(LIST, 1, Fault::HugeBody(3 * 64 * 1024 + 5));
    let huge = stack.client().get(&list_path(), Some(&token));
    assert_eq!(huge.status, 200);
    assert!(huge.headers.get("content-length").is_none());
    assert_eq!(huge.text.len(), 3 * 64 * 1024 + 5);
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
}

#[test]
fn the_request_log_and_counters_record_what_happened() {
    let stack = stand_ins();
    let token = stack.token();
    let renewed = stack.client().renew(&token).json()["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    stack.client().get(&list_path(), Some(&renewed));
    stack.client().revoke(&renewed);
    let log = stack.infisical.requests();
    let summary: Vec<(&str, &str, u16, bool)> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.status,
                r.authorization_present,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("POST", "/api/v1/auth/oidc-auth/login", 200, false),
            ("POST", "/api/v1/auth/token/renew", 200, false),
            ("GET", LIST, 200, true),
            ("POST", "/api/v1/auth/token/revoke", 200, false),
        ]
    );
    assert_eq!(
        log[2].query,
        format!("projectId={PROJECT_ID}&environment={ENVIRONMENT}")
    );
    let counters = stack.infisical.counters();
    assert_eq!(
        (counters.logins, counters.renewals, counters.revocations),
        (1, 1, 1)
    );
}

#[test]
fn a_restart_keeps_state_and_tokens_on_the_same_port() {
    let mut stack = stand_ins();
    let token = stack.token();
    let url = stack.infisical.url();
    stack.infisical.stop();
    assert!(stack
        .client()
        .send(stack.client().get_request("/api/status", None, None))
        .is_err());
    stack.infisical.restart();
    assert_eq!(stack.infisical.url(), url);
    assert_eq!(stack.client().get(&list_path(), Some(&token)).status, 200);
}
