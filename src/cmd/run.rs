//! `svid-exec run` without `--watch`: fetch and accept the secrets, write the
//! files, make the memfds, then replace svid-exec with the program (`execve`).

use std::ffi::OsString;
use std::process::ExitCode;

use super::{fetch_once, CmdError};
use crate::config::Config;
use crate::deliver::memfd::MemfdError;
use crate::deliver::DeliverError;
use crate::error::chain;
use crate::launch::exec;
use crate::sys;

/// Fetches and accepts (the environment is checked before any file is
/// written), writes the files, execs. Returns only on failure, having removed
/// the files: no program will read them.
pub(super) fn exec(
    config: &Config,
    program: &OsString,
    args: &[OsString],
) -> Result<ExitCode, CmdError> {
    let delivery = config.delivery();
    let secrets = fetch_once(config, &delivery)?;
    let plan = delivery.env(&secrets)?;
    plan.log();
    delivery.write(&secrets)?;
    // Sealed and close-on-exec until placed at their numbers, the last step
    // before exec (the access token was revoked in `fetch_once`).
    sys::place_for_exec(delivery.memfds(&secrets)?)
        .map_err(|e| DeliverError::Memfd(MemfdError::Place(e)))?;
    tracing::info!(
        secrets = secrets.len(),
        in_environment = plan.delivered_names().len(),
        program = %program.to_string_lossy(),
        "starting the program"
    );
    tracing::debug!(names = ?plan.delivered_names(), "variables delivered");
    let error = exec::exec(program, args, &plan);
    if let Err(e) = delivery.remove() {
        tracing::warn!(
            error = %chain(&e),
            "could not remove the secret files after the program failed to start"
        );
    }
    Err(error.into())
}
