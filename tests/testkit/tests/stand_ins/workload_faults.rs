//! The Workload API stand-in's fault knobs behave as a real SPIRE agent does
//! when a workload is not registered yet, cannot be attested, when the agent
//! is still starting, and when it crashes and comes back; and its bundle
//! stream delivers the JWKS. Seen through the real `spiffe` crate client.

use std::time::Duration;

use spiffe::transport::{GrpcStatusCode, TransportError};
use spiffe::workload_api::error::WorkloadApiError;
use spiffe::{TrustDomain, WorkloadApiClient};
use svid_exec_testkit::keys::KeyAlg;
use svid_exec_testkit::workload::{AgentConfig, FakeAgent};
use tokio_stream::StreamExt as _;

use crate::support::run;

fn status_code(err: &WorkloadApiError) -> Option<GrpcStatusCode> {
    match err {
        WorkloadApiError::Transport(TransportError::Status(s)) => Some(s.code()),
        _ => None,
    }
}

/// Whether `err` is a failed connect whose io cause has `kind`.
fn is_connect_error(err: &WorkloadApiError, kind: std::io::ErrorKind) -> bool {
    if !matches!(err, WorkloadApiError::Transport(TransportError::Connect(_))) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == kind;
        }
        source = e.source();
    }
    false
}

#[test]
fn deny_first_gives_that_many_no_identity_issued_then_an_svid() {
    let agent = FakeAgent::start(AgentConfig::default().deny_first(2));
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        for _ in 0..2 {
            let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
            assert!(
                matches!(err, WorkloadApiError::NoIdentityIssued),
                "got {err:?}"
            );
        }
        client.fetch_jwt_svid(["aud"], None).await.unwrap();

        agent.set_deny(1);
        let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
        assert!(
            matches!(err, WorkloadApiError::NoIdentityIssued),
            "got {err:?}"
        );
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
    });
    assert_eq!(agent.calls().len(), 5);
}

#[test]
fn unavailable_first_gives_that_many_unavailable_statuses_then_an_svid() {
    let agent = FakeAgent::start(AgentConfig::default().unavailable_first(1));
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
        assert_eq!(
            status_code(&err),
            Some(GrpcStatusCode::Unavailable),
            "{err:?}"
        );
        client.fetch_jwt_svid(["aud"], None).await.unwrap();

        agent.set_unavailable(2);
        for _ in 0..2 {
            let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
            assert_eq!(
                status_code(&err),
                Some(GrpcStatusCode::Unavailable),
                "{err:?}"
            );
        }
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
    });
}

#[test]
fn a_starting_agent_has_no_socket_until_its_delay_has_passed() {
    let agent = FakeAgent::start(AgentConfig::default().start_delay(Duration::from_millis(500)));
    let (early, attempts) = run(async {
        let early = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap_err();
        // Poll as a launcher would, until the agent is up.
        let mut attempts = 1;
        let client = loop {
            attempts += 1;
            match WorkloadApiClient::connect_to(agent.endpoint()).await {
                Ok(client) => break client,
                Err(e) => assert!(is_connect_error(&e, std::io::ErrorKind::NotFound), "{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
        (early, attempts)
    });
    assert!(
        is_connect_error(&early, std::io::ErrorKind::NotFound),
        "got {early:?}"
    );
    assert!(attempts > 1);
}

#[test]
fn a_crashed_agent_fails_existing_clients_with_unavailable_and_a_restart_serves_again() {
    let mut agent = FakeAgent::start(AgentConfig::default());
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client.fetch_jwt_svid(["aud"], None).await.unwrap();

        agent.stop();
        assert!(!agent.socket_path().exists(), "the socket is gone");
        assert!(!agent.is_running());
        // A call racing the client's discovery of the closed connection
        // fails with Unknown "transport error" (broken pipe), as against a
        // real agent; once it knows, reconnecting fails with Unavailable.
        let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
        assert!(
            matches!(
                status_code(&err),
                Some(GrpcStatusCode::Unavailable | GrpcStatusCode::Unknown)
            ),
            "{err:?}"
        );
        let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
        assert_eq!(
            status_code(&err),
            Some(GrpcStatusCode::Unavailable),
            "{err:?}"
        );
        let err = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap_err();
        assert!(
            is_connect_error(&err, std::io::ErrorKind::NotFound),
            "{err:?}"
        );

        agent.restart();
        assert!(agent.socket_path().exists());
        let fresh = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        fresh.fetch_jwt_svid(["aud"], None).await.unwrap();
        // The old client reconnects lazily to the same path.
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
    });
}

#[test]
fn the_bundle_stream_sends_the_jwks_at_once_and_again_after_a_key_rotation() {
    let agent = FakeAgent::start(AgentConfig::default());
    let td = TrustDomain::new("example.org").unwrap();
    let first_kid = agent.keys().current().kid().to_string();
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let set = client.fetch_jwt_bundles().await.unwrap();
        let bundle = set.get(&td).expect("bundle for example.org");
        assert!(bundle.find_jwt_authority(&first_kid).is_some());

        let mut stream = client.stream_jwt_bundles().await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.get(&td).unwrap().jwt_authorities().count(), 1);

        let new_kid = agent.keys().rotate(KeyAlg::Rs256).kid().to_string();
        let second = stream.next().await.unwrap().unwrap();
        let bundle = second.get(&td).unwrap();
        assert!(bundle.find_jwt_authority(&new_kid).is_some());
        assert!(bundle.find_jwt_authority(&first_kid).is_some());

        // A new token is signed by the new key.
        let svid = client.fetch_jwt_svid(["aud"], None).await.unwrap();
        assert_eq!(svid.key_id(), new_kid);
    });
    assert!(agent
        .calls()
        .iter()
        .any(|c| c.method == "FetchJWTBundles" && c.had_security_header));
}

#[test]
fn the_bundle_stream_is_refused_while_the_workload_has_no_identity() {
    let agent = FakeAgent::start(AgentConfig::default().deny_first(1));
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        let err = client.fetch_jwt_bundles().await.unwrap_err();
        assert!(
            matches!(err, WorkloadApiError::NoIdentityIssued),
            "got {err:?}"
        );
        // Refusing the bundles does not use up the SVID denials.
        let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
        assert!(
            matches!(err, WorkloadApiError::NoIdentityIssued),
            "got {err:?}"
        );
        client.fetch_jwt_bundles().await.unwrap();
    });
}

#[test]
fn a_stale_socket_left_by_a_crash_refuses_connections() {
    let mut agent = FakeAgent::start(AgentConfig::default());
    agent.stop_leaving_stale_socket();
    assert!(agent.socket_path().exists(), "the socket file stays");
    run(async {
        let err = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap_err();
        assert!(
            is_connect_error(&err, std::io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
    });
    agent.restart();
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
    });
}

#[test]
fn a_slow_agent_holds_the_call_until_its_latency_has_passed() {
    let agent = FakeAgent::start(AgentConfig::default().latency(Duration::from_secs(20)));
    run(async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        // A caller's own deadline fires first; the agent has seen the call.
        let held = tokio::time::timeout(
            Duration::from_millis(300),
            client.fetch_jwt_svid(["aud"], None),
        )
        .await;
        assert!(held.is_err(), "answered before its latency");
        assert_eq!(agent.calls().len(), 1);

        agent.set_latency(Duration::ZERO);
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
    });
}

#[tokio::test]
async fn the_agent_can_be_driven_from_inside_an_async_test() {
    // Its runtime lives on its own thread, so stopping or dropping it here
    // does not panic about blocking inside a runtime.
    let mut agent = FakeAgent::start(AgentConfig::default());
    let bounded = tokio::time::timeout(Duration::from_secs(30), async {
        let client = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap();
        client.fetch_jwt_svid(["aud"], None).await.unwrap();
        agent.restart();
        WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .unwrap()
            .fetch_jwt_svid(["aud"], None)
            .await
            .unwrap();
    });
    bounded.await.expect("test timed out");
    drop(agent);
}
