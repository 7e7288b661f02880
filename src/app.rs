//! Entry point placeholder; replaced by the real flow.

/// Runs the launcher.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
