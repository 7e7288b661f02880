//! What the stand-ins were asked.

use svid_exec_testkit::infisical::RequestRecord;
use svid_exec_testkit::stack::Stack;

/// Secret reads (`GET /api/v4/secrets`, `/api/v3/secrets/raw`) served so far.
pub fn secret_requests(stack: &Stack) -> Vec<RequestRecord> {
    stack
        .infisical
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v4/secrets") || r.path.starts_with("/api/v3/secrets"))
        .collect()
}

/// `FetchJWTSVID` calls the stand-in agent received so far.
pub fn agent_fetches(stack: &Stack) -> usize {
    stack
        .agent
        .calls()
        .iter()
        .filter(|c| c.method == "FetchJWTSVID")
        .count()
}

/// OIDC Auth logins (`POST /api/v1/auth/oidc-auth/login`) served so far.
pub fn oidc_logins(stack: &Stack) -> usize {
    stack
        .infisical
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/auth/oidc-auth/login")
        .count()
}
