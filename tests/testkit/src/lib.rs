//! Stand-ins for the services svid-exec talks to, started in-process on
//! loopback and temp unix sockets: a SPIFFE Workload API (a fake SPIRE agent),
//! a SPIRE OIDC discovery provider, and an Infisical API.
//!
//! They imitate the real services at the protocol level (gRPC over a unix
//! socket, JSON over HTTP/HTTPS), so tests drive the real `svid-exec` binary
//! against them. Facts imitated are in `shared/reference/` (spiffe.md,
//! infisical-api.md).

pub mod http;
pub mod infisical;
pub mod proxy;
pub mod tls;

/// Generated Workload API messages and server stubs.
#[allow(clippy::pedantic, missing_docs, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("_");
}
pub mod discovery;
pub mod keys;
pub mod stack;
pub mod workload;
