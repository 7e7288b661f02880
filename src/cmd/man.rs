//! `svid-exec man` and `svid-exec completions`: text generated from the clap
//! definition, before (and without) any configuration.
//!
//! Both are generated from [`documented`], the parser's definition (each
//! command's options as `cli::scope` shows them) with what
//! only documentation needs: the values an option takes (so shells complete
//! `--auth-method` with `oidc-auth`, not with file names) and what kind of
//! value the others take (a path, a directory, a URL, or free text that
//! completes to nothing). The parser itself keeps taking any string there:
//! `config.rs` validates, so a wrong value is exit 78 with a hint, not
//! clap's usage error.

use std::io::Write as _;

use clap::builder::PossibleValuesParser;
use clap::{Arg, ValueHint};

use super::CmdError;
use crate::cli::{self, Command};

/// The options that take one of a few words, and the words.
const CHOICES: &[(&str, &[&str])] = &[
    ("auth_method", &["oidc-auth", "jwt-auth", "spiffe-auth"]),
    ("log_format", &["text", "json"]),
    ("log_level", &["error", "warn", "info", "debug", "trace"]),
    ("forward_to", &["group", "child"]),
    (
        "on_change",
        &["restart", "none", "signal:HUP", "signal:USR1"],
    ),
    ("output", &["text", "json"]),
];

/// The manual page or the completion script `command` asks for (`None` for
/// the other commands). Generated into memory first: `clap_complete` panics
/// on a write error, and a reader that stops early (`| head`) is not a bug.
pub(super) fn generate(command: &Command) -> Option<Result<Vec<u8>, CmdError>> {
    match command {
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut documented(), "svid-exec", &mut script);
            Some(Ok(script))
        }
        Command::Man => Some(man_page().map_err(CmdError::Stdout)),
        Command::Run(_) | Command::Write(_) | Command::Check(_) | Command::Ready(_) => None,
    }
}

/// The command line as documented: [`CHOICES`] as possible values, and a
/// value hint on every other option that takes a value.
fn documented() -> clap::Command {
    fn describe(arg: Arg) -> Arg {
        if !arg.get_action().takes_values() || arg.is_positional() {
            return arg;
        }
        if let Some((_, values)) = CHOICES.iter().find(|(id, _)| arg.get_id() == *id) {
            return arg
                .value_parser(PossibleValuesParser::new(values.iter()))
                .hide_possible_values(true);
        }
        let value_name = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(ToString::to_string);
        let hint = match value_name.as_deref() {
            Some("PATH") => ValueHint::FilePath,
            Some("DIR") => ValueHint::DirPath,
            Some("URL") => ValueHint::Url,
            _ => ValueHint::Other,
        };
        arg.value_hint(hint)
    }
    let cli = cli::command().mut_args(describe);
    let subcommands: Vec<String> = cli
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    subcommands.iter().fold(cli, |cli, name| {
        cli.mut_subcommand(name, |sub| sub.mut_args(describe))
    })
}

/// One manual page: the top-level page, then each command's synopsis and
/// options (with their environment variables and defaults), then one EXIT
/// STATUS section for all of them (`clap_mangen` would print each command's
/// `after_long_help` under a heading "EXTRA").
fn man_page() -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    let command = documented();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
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
    }
    writeln!(page, ".SH \"EXIT STATUS\"")?;
    for (sub, text) in command
        .get_subcommands()
        .filter_map(|s| Some((s.get_name(), s.get_after_long_help()?.to_string())))
    {
        if sub == "run" || sub == "ready" {
            // run, write and check share one table; ready has its own.
            if sub == "ready" {
                writeln!(page, ".PP\n\\fBsvid-exec ready\\fR:")?;
            }
            exit_status_entries(&mut page, &text)?;
        }
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// The `EXIT STATUS:` text of `--help` (`  CODE  meaning`, continuation lines
/// indented further) as `.TP` entries.
fn exit_status_entries(page: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    for line in text
        .lines()
        .skip_while(|l| l.trim() != "EXIT STATUS:")
        .skip(1)
    {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent <= 2 {
            let (code, meaning) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
            writeln!(
                page,
                ".TP\n\\fB{}\\fR\n{}",
                roff(code),
                roff(meaning.trim())
            )?;
        } else {
            writeln!(page, "{}", roff(trimmed))?;
        }
    }
    Ok(())
}

/// Text safe on a roff line: backslashes doubled, a leading `.` or `'` escaped.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\\\");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}
