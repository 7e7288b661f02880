//! The stand-ins' own tests, in one test binary (one link of tonic, axum
//! and rsa instead of one per file): each stand-in behaves as the real
//! service does at the protocol level, and the assembled stack works end to
//! end. One module per stand-in area; `support` holds the shared helpers.

mod support;

mod discovery;
mod infisical_faults;
mod infisical_login;
mod infisical_secrets;
mod infisical_tokens;
mod stack;
mod workload_faults;
mod workload_fetch;
