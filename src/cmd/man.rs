//! `svid-exec man` and `svid-exec completions`: text generated from the clap
//! definition, before (and without) any configuration.

use std::io::Write as _;

use clap::CommandFactory;

use super::CmdError;
use crate::cli::{Cli, Command};

/// The manual page or the completion script `command` asks for (`None` for
/// the other commands). Generated into memory first: `clap_complete` panics
/// on a write error, and a reader that stops early (`| head`) is not a bug.
pub(super) fn generate(command: &Command) -> Option<Result<Vec<u8>, CmdError>> {
    match command {
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "svid-exec", &mut script);
            Some(Ok(script))
        }
        Command::Man => Some(man_page().map_err(CmdError::Stdout)),
        Command::Run(_) | Command::Write(_) | Command::Check(_) => None,
    }
}

/// One manual page: the top-level page, then each command's synopsis,
/// options (with their environment variables and defaults) and exit status.
fn man_page() -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    let command = Cli::command();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("svid-exec {}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.clone());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        let man = clap_mangen::Man::new(sub);
        man.render_synopsis_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_extra_section(&mut page)?;
    }
    Ok(page)
}
