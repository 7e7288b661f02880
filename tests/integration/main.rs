//! The integration tests, in one test binary (tonic, axum and rsa are linked
//! once, and the areas run in parallel): the real `svid-exec` binary (and,
//! for the client and the file writer, the library) against the in-repo
//! stand-ins of `svid_exec_testkit`. One module per area; `util` holds what
//! they share.
//!
//! Separate test binaries remain only for what needs a process of its own,
//! each saying why in its header: `tests/files_failure.rs` (resource limits
//! on the test process), `tests/files_owner.rs` (re-runs itself as another
//! user), `tests/client_logs.rs` (a global log subscriber).

mod util;

mod check;
mod cli;
mod client;
mod fallback;
mod faults;
mod files;
mod memfd;
mod readiness;
mod readme;
mod run;
mod select;
mod supervise;
mod svid_diag;
mod templates;
mod trust;
mod watch;
