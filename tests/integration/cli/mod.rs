//! The command line: its surface without a server (`surface`: help, usage
//! errors, version, completions, man page), the configuration it accepts or
//! refuses before anything runs (`config`), and where each option applies
//! (`scope`).

mod config;
mod scope;
mod surface;

use svid_exec_testkit::stack::{OIDC_IDENTITY, PROJECT_ID};

/// A valid identity, project and environment, and a JWT file that does not
/// exist (waited for until `--startup-timeout`): a configuration that passes
/// validation and fails, if at all, only once it runs.
const VALID: &[&str] = &[
    "--identity-id",
    OIDC_IDENTITY,
    "--project-id",
    PROJECT_ID,
    "--env",
    "prod",
    "--jwt-file",
    "/nonexistent/jwt",
];
