//! svid-exec: prove the workload's identity with its SPIFFE JWT-SVID, log in to
//! Infisical, fetch a project's secrets into zeroizing memory and hand them to a
//! program (environment or tmpfs files), then exec it or supervise it.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod deliver;
pub mod error;
pub mod infisical;
pub mod launch;
pub mod logging;
pub mod notify;
pub mod retry;
pub mod secrets;
pub mod session;
pub mod svid;
pub mod sys;
