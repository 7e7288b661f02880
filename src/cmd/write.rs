//! `svid-exec write` without `--watch` (an init container): fetch, write every
//! file target, create the `--ready-file` (left in place), exit 0.

use std::process::ExitCode;

use super::{fetch_once, CmdError};
use crate::config::Config;
use crate::launch::readiness::ReadyFile;

/// Fetches, writes the files and exits 0.
pub(super) fn write(config: &Config) -> Result<ExitCode, CmdError> {
    let delivery = config.delivery();
    // A stale ready file goes before anything is fetched.
    let ready_file = config
        .ready_file
        .as_deref()
        .map(ReadyFile::prepare)
        .transpose()?;
    let secrets = fetch_once(config, &delivery)?;
    delivery.write(&secrets)?;
    tracing::info!(count = secrets.len(), "secrets written");
    if let Some(mut file) = ready_file {
        file.create()?;
        file.keep();
    }
    Ok(ExitCode::SUCCESS)
}
