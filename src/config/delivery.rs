//! Delivery's options from the command line: the file targets with their
//! mode and owner, the environment (`--env-prefix`, `--no-override`,
//! `--env-file-refs`, `--no-env`, `--allow-env-name`), the templates
//! (`--template`), what must be present (`--require`, `--allow-empty`), the
//! selection (`--only`, `--map`) and `--memfd`. A new way of delivering
//! reads its options here.

use std::path::PathBuf;

use super::problems::{Problem, Problems};
use super::values::{file_mode, file_owner, list, non_empty_path, renames, template_spec};
use super::Task;
use crate::cli;
use crate::deliver::env::EnvOptions;
use crate::deliver::files::FilesOptions;
use crate::deliver::template::Templates;
use crate::deliver::DeliveryOptions;
use crate::error::Failure as _;
use crate::secrets::Selection;

/// The file targets and their mode and owner, the environment options, the
/// templates, what must be present (`--require`, `--allow-empty`) and the
/// selection (`--only`, `--map`).
pub(super) fn delivery_options(
    task: &Task,
    common: &cli::CommonArgs,
    dir: Option<PathBuf>,
    p: &mut Problems<'_>,
) -> Option<DeliveryOptions> {
    let args = &common.delivery;
    let dir_id = if matches!(task, Task::Write) {
        "dir"
    } else {
        "files_dir"
    };
    let dir = p.value(dir_id, |l| non_empty_path(l, dir));
    let dotenv_file = p.value("dotenv_file", |l| {
        non_empty_path(l, args.dotenv_file.clone())
    });
    let json_file = p.value("json_file", |l| non_empty_path(l, args.json_file.clone()));
    // Checked even without a target, so a typo is not silently ignored.
    let mode = p.value("file_mode", |l| file_mode(l, &args.file_mode));
    let owner = p.value("file_owner", |l| {
        args.file_owner
            .as_deref()
            .map(|o| file_owner(l, o))
            .transpose()
    });
    // The targets as far as they are valid: the templates' DESTs are
    // checked against them, and written with their mode and owner.
    let targets = FilesOptions {
        dir: dir.clone().flatten(),
        dotenv_file: dotenv_file.clone().flatten(),
        json_file: json_file.clone().flatten(),
        mode: mode.unwrap_or(FilesOptions::default().mode),
        owner: owner.flatten(),
        allow_non_tmpfs: args.allow_non_tmpfs,
    };
    let templates = templates(&args.template, &targets, p);
    if let Some(templates) = &templates {
        memfd_templates(task, args, templates, p);
    }
    // A target given with an invalid value still counts as given here.
    let has_dir = dir.as_ref().is_none_or(Option::is_some);
    let has_target = has_dir
        || dotenv_file.as_ref().is_none_or(Option::is_some)
        || json_file.as_ref().is_none_or(Option::is_some)
        || !args.template.is_empty();
    let env = match task {
        Task::Write => {
            if !has_target {
                p.push(Problem::new(
                    "write has nothing to write: no --dir, --dotenv-file, --json-file or --template",
                    "give a target: --dir DIR (one file per secret), --dotenv-file, --json-file \
                     or --template SRC:DEST",
                ));
            }
            None
        }
        Task::Run { .. } | Task::Check { .. } => env_options(args, has_dir, p),
    };
    if matches!(task, Task::Run { .. }) && args.no_env && !has_target {
        p.push(Problem::new(
            format!(
                "{} without a files option delivers nothing",
                p.label("no_env")
            ),
            "add --files-dir, --dotenv-file, --json-file or --template, or drop --no-env",
        ));
    }
    let require = p.value("require", |l| list(l, &common.fetch.require));
    let selection = selection(args, p);
    // Every target valid: then `targets` holds exactly their values.
    if dir.is_none()
        || dotenv_file.is_none()
        || json_file.is_none()
        || mode.is_none()
        || owner.is_none()
    {
        return None;
    }
    let files = (!targets.is_empty()).then_some(targets);
    Some(DeliveryOptions {
        env,
        files,
        templates: templates?,
        require: require?,
        allow_empty: common.fetch.allow_empty,
        selection: selection?,
        memfd: args.memfd,
        ..DeliveryOptions::default()
    })
}

/// `--template`: each SRC read and parsed, each DEST checked against the
/// other outputs, before any network call (written with `files`' mode,
/// owner and tmpfs rule unless a template gives its own MODE). The first
/// template that fails is the problem, with its cause ("cannot read template
/// X: No such file or directory").
fn templates(raw: &[String], files: &FilesOptions, p: &mut Problems<'_>) -> Option<Templates> {
    let specs = p.value("template", |l| {
        raw.iter()
            .map(|r| template_spec(l, r))
            .collect::<Result<Vec<_>, _>>()
    })?;
    p.value("template", |l| {
        Templates::load(&specs, files).map_err(|e| {
            Problem::new(
                format!("{l}: {}", crate::error::chain(&e)),
                e.hint().unwrap_or_default(),
            )
        })
    })
}

/// `--template SRC:memfd:NAME`: the memfd is inherited by a program and
/// named in its environment (`NAME_FILE`), so only `run` (or `check`, which
/// checks a run) without `--no-env` can deliver it.
fn memfd_templates(
    task: &Task,
    args: &cli::DeliveryArgs,
    templates: &Templates,
    p: &mut Problems<'_>,
) {
    let names: Vec<&str> = templates.memfd_names().collect();
    if names.is_empty() {
        return;
    }
    let given = format!("{} memfd:{}", p.label("template"), names.join(", memfd:"));
    if matches!(task, Task::Write) {
        p.push(Problem::new(
            format!("{given}: write starts no program to inherit a memfd"),
            "render to a file with write (SRC:DEST), or use run",
        ));
    } else if args.no_env {
        p.push(Problem::new(
            format!(
                "{given}: each memfd is named in the environment (NAME_FILE), which {} leaves out",
                p.label("no_env")
            ),
            "drop --no-env, or render to a file (SRC:DEST)",
        ));
    }
}

/// `--env-prefix`, `--no-override`, `--env-file-refs` (which needs per-key
/// files), `--allow-env-name`, or `None` with `--no-env`.
fn env_options(
    args: &cli::DeliveryArgs,
    has_dir: bool,
    p: &mut Problems<'_>,
) -> Option<EnvOptions> {
    let prefix = args.env_prefix.clone().unwrap_or_default();
    if prefix.contains('=') || prefix.contains('\0') {
        p.push(Problem::new(
            format!("{}: {prefix:?} contains `=` or NUL", p.label("env_prefix")),
            "a variable name cannot contain `=`; use letters, digits and `_`",
        ));
    }
    if args.env_file_refs && !has_dir {
        p.push(Problem::new(
            format!("{} needs --files-dir", p.label("env_file_refs")),
            "KEY_FILE=<path> points at one file per secret; add --files-dir DIR (a tmpfs)",
        ));
    }
    // Two options that both decide what the environment carries (`--memfd`
    // names each memfd there, `KEY_FILE`).
    let contradictions = [
        (
            args.no_env && args.env_file_refs,
            ("no_env", "env_file_refs", "contradict each other"),
            "--env-file-refs puts KEY_FILE=<path> in the environment; drop one of them",
        ),
        (
            args.memfd && args.no_env,
            ("memfd", "no_env", "contradict each other"),
            "--memfd puts KEY_FILE=/proc/self/fd/N in the environment (never a value); drop --no-env",
        ),
        (
            args.memfd && args.env_file_refs,
            ("memfd", "env_file_refs", "both decide what KEY_FILE names"),
            "drop one: --memfd names a memfd, --env-file-refs a file in --files-dir",
        ),
    ];
    for (given, (a, b, what), hint) in contradictions {
        if given {
            p.push(Problem::new(
                format!("{} and {} {what}", p.label(a), p.label(b)),
                hint,
            ));
        }
    }
    // A bad entry is a problem already pushed, which fails the whole
    // configuration: the empty set then stands in.
    let allowed_names = p
        .value("allow_env_name", |l| list(l, &args.allow_env_name))
        .unwrap_or_default()
        .into_iter()
        .collect();
    (!args.no_env).then_some(EnvOptions {
        prefix,
        override_inherited: !args.no_override,
        file_refs: args.env_file_refs,
        allowed_names,
    })
}

/// `--only` and `--map`; refuses what can be refused before fetching: two
/// keys mapped to one name, or a mapped name that `--only` also delivers.
fn selection(args: &cli::DeliveryArgs, p: &mut Problems<'_>) -> Option<Selection> {
    let only = p.value("only", |l| list(l, &args.only));
    let map = p.value("map", |l| renames(l, &args.map));
    let (only, map) = (only?, map?);
    let mut clashes = Vec::new();
    for (i, (src, dst)) in map.iter().enumerate() {
        if let Some((other, _)) = map[..i].iter().find(|(_, d)| d == dst) {
            clashes.push(format!("{dst} (from {other} and {src})"));
        } else if only.contains(dst) && !map.iter().any(|(s, _)| s == dst) {
            clashes.push(format!(
                "{dst} (from {src} and {dst}, which --only delivers)"
            ));
        }
    }
    if !clashes.is_empty() {
        p.push(Problem::new(
            format!(
                "{}: would deliver several secrets under one name: {}",
                p.label("map"),
                clashes.join("; ")
            ),
            "map each key to a name of its own",
        ));
        return None;
    }
    Some(Selection::new(only, map))
}
