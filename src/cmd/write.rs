//! `svid-exec write` without `--watch` (an init container): fetch, write every
//! file target, exit 0.

use std::process::ExitCode;

use super::{fetch_once, CmdError};
use crate::config::Config;

/// Fetches, writes the files and exits 0.
pub(super) fn write(config: &Config) -> Result<ExitCode, CmdError> {
    let delivery = config.delivery();
    let secrets = fetch_once(config, &delivery)?;
    delivery.write(&secrets)?;
    tracing::info!(count = secrets.len(), "secrets written");
    Ok(ExitCode::SUCCESS)
}
