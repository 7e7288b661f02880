//! Keeps docs/options.md's configuration reference from drifting: every flag,
//! its environment variable, its default and where it applies (the commands
//! whose help lists it, or the help's own `[applies to: …]` line), as the
//! real binary's `--help` reports them, must be exactly the tables there
//! (between `<!-- options:begin -->` and `<!-- options:end -->`); where clap
//! has no default the table's cell is free text (not a `code` value). On a
//! mismatch the test prints the tables generated from `--help`, ready to paste.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

const COMMANDS: &[&str] = &["run", "write", "check"];
const BEGIN: &str = "<!-- options:begin -->";
const END: &str = "<!-- options:end -->";

/// One option as `--help` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opt {
    /// `-q`, `--quiet` or `--api-url`, as written in the README's first column.
    flag: String,
    env: Option<String>,
    default: Option<String>,
    /// Commands whose default differs from `default` (check's `--log-level`).
    other_defaults: Vec<(String, String)>,
    commands: Vec<String>,
    /// `run --watch`, from the help's `[applies to: …]` line.
    applies: Option<String>,
    heading: String,
    help: String,
}

impl Opt {
    /// The table's "commands" cell: where it applies if the help says so,
    /// else the commands whose help lists it.
    fn commands_cell(&self) -> String {
        self.applies
            .clone()
            .unwrap_or_else(|| self.commands.join(", "))
    }
}

fn help_of(command: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_svid-exec"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("COLUMNS", "100")
        .args([command, "--help"])
        .output()
        .expect("run svid-exec --help");
    assert!(out.status.success(), "`svid-exec {command} --help` failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// Parses clap's long help: headings (`Name:` at column 0), option lines
/// (indented, starting with `-`), their description, `[env: X=]` and
/// `[default: Y]`. `--help` and `--version` are clap's own and skipped.
fn parse_help(command: &str, text: &str) -> Vec<Opt> {
    let mut opts: Vec<Opt> = Vec::new();
    let mut heading = String::new();
    let mut current: Option<Opt> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if indent == 0 && trimmed.ends_with(':') {
            opts.extend(current.take());
            heading.clear();
            heading.push_str(trimmed.trim_end_matches(':'));
            if heading == "EXIT STATUS" {
                break;
            }
            continue;
        }
        if indent > 0 && indent < 10 && trimmed.starts_with('-') {
            opts.extend(current.take());
            let names: Vec<&str> = trimmed
                .split_whitespace()
                .take_while(|w| w.starts_with('-'))
                .map(|w| w.trim_end_matches(','))
                .collect();
            current = Some(Opt {
                flag: names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                env: None,
                default: None,
                other_defaults: Vec::new(),
                commands: vec![command.to_owned()],
                applies: None,
                heading: heading.clone(),
                help: String::new(),
            });
            continue;
        }
        if indent > 0 && indent < 10 {
            // A positional argument: not an option.
            opts.extend(current.take());
            continue;
        }
        let Some(opt) = current.as_mut() else {
            continue;
        };
        if let Some(env) = trimmed.strip_prefix("[env: ") {
            opt.env = Some(env.split('=').next().unwrap_or_default().to_owned());
        } else if let Some(applies) = trimmed.strip_prefix("[applies to: ") {
            opt.applies = Some(applies.trim_end_matches(']').to_owned());
        } else if let Some(default) = trimmed.strip_prefix("[default: ") {
            opt.default = Some(default.trim_end_matches(']').to_owned());
        } else if !trimmed.is_empty() && !trimmed.starts_with('[') {
            if !opt.help.is_empty() {
                opt.help.push(' ');
            }
            opt.help.push_str(trimmed);
        }
    }
    opts.extend(current);
    opts.retain(|o| o.flag != "`-h`, `--help`" && o.flag != "`-V`, `--version`");
    opts
}

/// Every option of run, write and check, merged by flag, in help order.
fn options_from_help() -> Vec<Opt> {
    let mut merged: Vec<Opt> = Vec::new();
    for command in COMMANDS {
        for opt in parse_help(command, &help_of(command)) {
            if let Some(seen) = merged.iter_mut().find(|o| o.flag == opt.flag) {
                assert_eq!(
                    (&seen.env, &seen.applies),
                    (&opt.env, &opt.applies),
                    "{}'s variable or scope differs between commands",
                    opt.flag
                );
                if seen.default != opt.default {
                    let other = opt.default.clone().expect("a default for every command");
                    seen.other_defaults.push(((*command).to_owned(), other));
                }
                seen.commands.push((*command).to_owned());
            } else {
                merged.push(opt);
            }
        }
    }
    merged
}

/// The default column: `` `info` ``, or `` `info`; `warn` for check `` when
/// a command has its own.
fn default_cell(opt: &Opt) -> String {
    let mut cell = opt
        .default
        .as_ref()
        .map_or(String::new(), |d| format!("`{d}`"));
    for (command, default) in &opt.other_defaults {
        let _ = write!(cell, "; `{default}` for {command}");
    }
    cell
}

fn render(opts: &[Opt]) -> String {
    let mut by_heading: BTreeMap<usize, (String, Vec<&Opt>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for opt in opts {
        let index = order
            .iter()
            .position(|h| *h == opt.heading)
            .unwrap_or_else(|| {
                order.push(opt.heading.clone());
                order.len() - 1
            });
        by_heading
            .entry(index)
            .or_insert_with(|| (opt.heading.clone(), Vec::new()))
            .1
            .push(opt);
    }
    let mut out = String::new();
    for (heading, rows) in by_heading.values() {
        let _ = writeln!(out, "\n### {heading}\n");
        let _ = writeln!(out, "| flag | env | default | commands | meaning |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for o in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                o.flag,
                o.env.as_ref().map_or("—".to_owned(), |e| format!("`{e}`")),
                if o.default.is_some() {
                    default_cell(o)
                } else {
                    "—".to_owned()
                },
                o.commands_cell(),
                o.help.replace('|', "\\|")
            );
        }
    }
    out
}

/// A README row: flag, env, default, commands (the meaning is free text).
fn readme_rows(readme: &str) -> Vec<(String, String, String, String)> {
    let start = readme
        .find(BEGIN)
        .expect("README has the options:begin marker");
    let end = readme.find(END).expect("README has the options:end marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `-"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            assert!(cells.len() >= 5, "README row has fewer than 5 cells: {l}");
            let env = if cells[1] == "—" {
                String::new()
            } else {
                cells[1].clone()
            };
            (cells[0].clone(), env, cells[2].clone(), cells[3].clone())
        })
        .collect()
}

#[test]
fn readme_option_tables_match_the_binarys_help() {
    let opts = options_from_help();
    assert!(
        opts.len() > 30,
        "parsed only {} options from --help: the parser no longer understands clap's layout",
        opts.len()
    );
    let expected: Vec<(String, String, String, String)> = opts
        .iter()
        .map(|o| {
            (
                o.flag.clone(),
                o.env.as_ref().map_or(String::new(), |e| format!("`{e}`")),
                default_cell(o),
                o.commands_cell(),
            )
        })
        .collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/options.md"))
        .expect("read docs/options.md");
    // Where clap has no default the README may say what the absence means
    // ("off", "required", "system roots"), as long as it is not a `value`.
    let mut actual: Vec<_> = readme_rows(&readme)
        .into_iter()
        .map(|(flag, env, default, commands)| {
            let default = if default.starts_with('`') {
                default
            } else {
                String::new()
            };
            (flag, env, default, commands)
        })
        .collect();
    let mut sorted_expected = expected.clone();
    actual.sort();
    sorted_expected.sort();
    assert!(
        actual == sorted_expected,
        "docs/options.md's option tables differ from `svid-exec run|write|check --help`.\n\
         Missing from docs/options.md: {:#?}\nOnly in docs/options.md: {:#?}\n\
         Tables generated from --help (paste between the markers, then edit meanings if you like):\n{}",
        sorted_expected
            .iter()
            .filter(|r| !actual.contains(r))
            .collect::<Vec<_>>(),
        actual
            .iter()
            .filter(|r| !sorted_expected.contains(r))
            .collect::<Vec<_>>(),
        render(&opts)
    );
}

#[test]
fn help_parser_reads_env_default_and_repeated_headings() {
    let text = "Usage: x\n\nOptions:\n  -h, --help\n          Print help\n\nIdentity and server:\n      --api-url <URL>\n          The origin;\n          wrapped\n          \n          [env: INFISICAL_API_URL=]\n          [default: https://app.infisical.com]\n\n  -q, --quiet\n          Errors only\n          \n          [applies to: run --watch]\n\n  <COMMAND>...\n          The program\n\nEXIT STATUS:\n  2   usage\n";
    let opts = parse_help("run", text);
    assert_eq!(
        opts,
        vec![
            Opt {
                flag: "`--api-url`".into(),
                env: Some("INFISICAL_API_URL".into()),
                default: Some("https://app.infisical.com".into()),
                other_defaults: Vec::new(),
                commands: vec!["run".into()],
                applies: None,
                heading: "Identity and server".into(),
                help: "The origin; wrapped".into(),
            },
            Opt {
                flag: "`-q`, `--quiet`".into(),
                env: None,
                default: None,
                other_defaults: Vec::new(),
                commands: vec!["run".into()],
                applies: Some("run --watch".into()),
                heading: "Identity and server".into(),
                help: "Errors only".into(),
            },
        ]
    );
}
