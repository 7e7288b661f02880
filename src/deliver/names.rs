//! Secret names (and NUL bytes in values) against what each configured way
//! of delivering can carry, all at once: one refusal lists every secret that
//! cannot be delivered as asked, where, and why, and suggests the `--map` that
//! renames them, instead of naming only the first. JSON carries any name, so a
//! JSON-only delivery refuses nothing here. The environment's non-portable
//! names (`my-key`) are not refused: they are delivered with one warning
//! ([`super::env::EnvPlan::warnings`]).

use secrecy::ExposeSecret;

use super::env::{is_portable_name, name_problem};
use super::files::file_name_problem;
use super::DeliveryOptions;
use crate::secrets::SecretSet;

/// One secret that a way of delivering cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    /// The key, as delivered (after `--map`).
    pub name: String,
    /// Where: "the environment", "the dotenv file", "--files-dir".
    pub target: &'static str,
    /// Why.
    pub reason: &'static str,
    /// Whether renaming fixes it (a NUL byte in the value is not fixed by a name).
    pub renamable: bool,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} in {}: {}", self.name, self.target, self.reason)
    }
}

/// Every secret of `secrets` that a configured way of delivering cannot carry.
pub fn unfit(secrets: &SecretSet, options: &DeliveryOptions) -> Vec<Unfit> {
    let mut found = Vec::new();
    let dir = options.files.as_ref().and_then(|f| f.dir.as_deref());
    let dotenv = options
        .files
        .as_ref()
        .is_some_and(|f| f.dotenv_file.is_some());
    for (key, value) in secrets.iter() {
        let has_nul = value.expose_secret().contains('\0');
        let mut push = |target, reason, renamable| {
            found.push(Unfit {
                name: key.to_owned(),
                target,
                reason,
                renamable,
            });
        };
        if let Some(env) = &options.env {
            let (name, values) = match (dir, env.file_refs) {
                (Some(_), true) => (format!("{}{key}_FILE", env.prefix), false),
                _ => (format!("{}{key}", env.prefix), true),
            };
            if let Some(reason) = name_problem(&name) {
                push("the environment", reason, true);
            } else if values && has_nul {
                push(
                    "the environment",
                    "its value contains a NUL byte, which a variable cannot carry",
                    false,
                );
            }
        }
        if dotenv {
            if !is_portable_name(key) {
                push(
                    "the dotenv file",
                    "it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    true,
                );
            } else if has_nul {
                push(
                    "the dotenv file",
                    "its value contains a NUL byte, which a shell variable cannot hold",
                    false,
                );
            }
        }
        if dir.is_some() {
            if let Some(reason) = file_name_problem(key) {
                push("--files-dir", reason, true);
            }
        }
    }
    found
}

/// What to do about `unfit`: the `--map` that renames the badly named ones
/// (and files for values with a NUL byte).
pub fn hint(unfit: &[Unfit]) -> String {
    let mut renamable: Vec<&str> = unfit
        .iter()
        .filter(|u| u.renamable)
        .map(|u| u.name.as_str())
        .collect();
    renamable.dedup();
    let mut parts = Vec::new();
    if !renamable.is_empty() {
        parts.push(format!(
            "rename with --map {} (or in Infisical), or deliver as files: --json-file carries \
             any name, --files-dir any name without `/`",
            suggest_map(&renamable)
        ));
    }
    if unfit.iter().any(|u| !u.renamable) {
        parts.push(
            "a value with a NUL byte can only be delivered as a file (--files-dir, --json-file)"
                .to_owned(),
        );
    }
    parts.join("; ")
}

/// `my-key=MY_KEY,db.password=DB_PASSWORD`: each name as a portable variable
/// name (upper case, `_` for anything else, `_` before a leading digit).
pub fn suggest_map(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let mut to: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if !to.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                to.insert(0, '_');
            }
            format!("{name}={to}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::deliver::env::EnvOptions;
    use crate::deliver::files::FilesOptions;

    fn options(env: bool, dotenv: bool, dir: bool) -> DeliveryOptions {
        let files = FilesOptions {
            dir: dir.then(|| PathBuf::from("/run/s")),
            dotenv_file: dotenv.then(|| PathBuf::from("/run/s.env")),
            json_file: Some(PathBuf::from("/run/s.json")),
            ..FilesOptions::default()
        };
        DeliveryOptions {
            env: env.then(EnvOptions::default),
            files: Some(files),
            ..DeliveryOptions::default()
        }
    }

    #[test]
    fn every_unfit_name_is_found_for_every_target_at_once() {
        let set = SecretSet::from_pairs(&[
            ("OK", "v"),
            ("my-key", "v"),
            ("db.password", "v"),
            ("a/b", "v"),
            ("A=B", "v"),
            ("NUL", "x\0y"),
        ]);
        let found: Vec<String> = unfit(&set, &options(true, true, true))
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            "\"A=B\" in the environment: it contains `=`",
            "\"A=B\" in the dotenv file: it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
            "\"NUL\" in the environment: its value contains a NUL byte, which a variable cannot carry",
            "\"NUL\" in the dotenv file: its value contains a NUL byte, which a shell variable cannot hold",
            "\"a/b\" in the dotenv file: it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
            "\"a/b\" in --files-dir: it contains '/'",
            "\"db.password\" in the dotenv file: it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
            "\"my-key\" in the dotenv file: it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
        ];
        assert_eq!(found, expected);
        // JSON alone carries every name; the environment alone warns about
        // non-portable names instead of refusing them.
        assert!(unfit(&set, &options(false, false, false)).is_empty());
        let env_only = unfit(&set, &options(true, false, false));
        assert_eq!(env_only.len(), 2, "{env_only:?}");
    }

    #[test]
    fn the_hint_suggests_one_map_for_all_renamable_names() {
        let set = SecretSet::from_pairs(&[("my-key", "v"), ("db.password", "v"), ("9x", "v")]);
        let found = unfit(&set, &options(false, true, false));
        assert_eq!(
            hint(&found),
            "rename with --map 9x=_9X,db.password=DB_PASSWORD,my-key=MY_KEY (or in \
             Infisical), or deliver as files: --json-file carries any name, --files-dir any \
             name without `/`"
        );
    }
}
