//! Delivery: how fetched secrets reach the program. [`Delivery`] is built once
//! from the configuration and is the one door to every way of delivering
//! (environment, files) for `run`, `write`, `check` and the supervisor:
//!
//! - [`Delivery::preflight`] before anything is fetched (file targets);
//! - [`Delivery::accept`] on every fetched set before it is delivered: what
//!   `run` would refuse (empty, a `--require`d key missing, a name that cannot
//!   be a file, an environment `execve` would refuse) is refused the same way
//!   at start and on every poll;
//! - [`Delivery::write`] and [`Delivery::remove`] for the files;
//! - [`Delivery::env`], the child's environment as an [`EnvPlan`].
//!
//! [`Delivery::accept`] also says what the set delivers, as a fingerprint:
//! the whole set when it goes to the environment or to the files, and each
//! template's rendering at its DEST. The supervisor compares those, so with
//! only templates (and `--no-env`) a change to a secret no template uses
//! rewrites nothing and disturbs nobody.
//!
//! A new way of delivering (a template, a memfd, a fallback cache) is one more
//! module here and one more part that `Delivery` composes in these calls.

pub mod env;
pub mod files;
pub mod steering;
pub mod template;

use std::cell::RefCell;
use std::ffi::OsString;

use crate::error::{ExitClass, Failure};
use crate::secrets::SecretSet;
use env::{EnvError, EnvOptions, EnvPlan, EnvSource, ExecLimits};
use files::{FilesError, FilesOptions};
use sha2::{Digest, Sha256};
use template::{Stamps, TemplateError, Templates};

/// What the configuration asks of delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Secrets in the child's environment; `None` for `write` and `--no-env`
    /// (the child then inherits our environment minus the bootstrap variables).
    pub env: Option<EnvOptions>,
    /// Secrets as files; `None` when no file target is given.
    pub files: Option<FilesOptions>,
    /// Templates rendered to files (`--template`); empty when none is given.
    pub templates: Templates,
    /// Keys that must be present (`--require`).
    pub require: Vec<String>,
    /// Accept an empty set (`--allow-empty`).
    pub allow_empty: bool,
    /// What was asked for, for messages ("project p, environment prod, path /").
    pub scope: String,
}

/// Why a set of secrets cannot be delivered. Messages name keys and paths,
/// never values.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The server returned no secrets and `--allow-empty` was not given.
    #[error("no secrets were found in {scope}")]
    Empty {
        /// What was asked for.
        scope: String,
    },
    /// `--require`d keys are absent.
    #[error("required secrets are missing: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// The files cannot be written (or removed).
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The child's environment cannot be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A template cannot be rendered or written.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl Failure for DeliverError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Empty { .. } | Self::MissingRequired(_) => ExitClass::Config,
            Self::Files(e) => e.exit_class(),
            Self::Env(e) => e.exit_class(),
            Self::Template(e) => e.exit_class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Empty { .. } => Some(
                "check --env and --path (some servers answer a mistyped environment or path with \
                 an empty list) and that the identity may read them; pass --allow-empty if empty \
                 is expected"
                    .to_owned(),
            ),
            Self::MissingRequired(_) => Some(
                "check the keys in Infisical, --path, --tag and the identity's access to imports"
                    .to_owned(),
            ),
            Self::Files(e) => e.hint(),
            Self::Env(e) => e.hint(),
            Self::Template(e) => e.hint(),
        }
    }
}

/// Every way the secrets reach the program, as configured.
#[derive(Debug, Clone)]
pub struct Delivery {
    options: DeliveryOptions,
    /// The program's command line (empty without a program): `execve` counts
    /// it with the environment against its limits.
    command_line: Vec<OsString>,
    /// What was last written to each template DEST, so an unchanged
    /// rendering is not written again.
    stamps: RefCell<Stamps>,
}

impl Delivery {
    /// A delivery for a program started with `command_line` (empty for
    /// `write` and `check`, which start none).
    pub fn new(options: DeliveryOptions, command_line: Vec<OsString>) -> Self {
        Self {
            options,
            command_line,
            stamps: RefCell::default(),
        }
    }

    /// The templates (empty when none is given).
    pub fn templates(&self) -> &Templates {
        &self.options.templates
    }

    /// Whether anything is written to files (file targets or templates).
    pub fn writes_files(&self) -> bool {
        self.files().is_some() || !self.templates().is_empty()
    }

    /// The file targets, if any.
    pub fn files(&self) -> Option<&FilesOptions> {
        self.options.files.as_ref()
    }

    /// Whether secrets go into the child's environment.
    pub fn to_env(&self) -> bool {
        self.options.env.is_some()
    }

    /// Checks what can be checked before anything is fetched: the file
    /// targets and the templates' DESTs (tmpfs, permissions, planted links,
    /// owner). The templates themselves were parsed with the configuration.
    pub fn preflight(&self) -> Result<(), DeliverError> {
        if let Some(files) = self.files() {
            files::preflight(files)?;
        }
        Ok(self.templates().preflight()?)
    }

    /// Refuses a set that must not be delivered, before any of it is: empty
    /// (unless allowed), a `--require`d key missing, an environment the
    /// kernel would refuse with the program's command line, a name that
    /// cannot be a file, a template that does not render with it (an
    /// undefined name). Returns the fingerprint of what it delivers: equal
    /// fingerprints mean the program would see nothing different.
    pub fn accept(&self, secrets: &SecretSet) -> Result<[u8; 32], DeliverError> {
        self.check_present(secrets)?;
        let plan = self.env(secrets)?;
        self.check_fits(&plan)?;
        self.check_file_names(secrets)?;
        let templates = self.templates();
        templates.check_clear_of_keys(self.files().and_then(|f| f.dir.as_deref()), secrets)?;
        let rendered = templates.render(secrets)?;
        let mut hasher = Sha256::new();
        // The environment and the file targets carry every secret.
        if self.to_env() || self.files().is_some() {
            hasher.update(b"set");
            hasher.update(secrets.fingerprint());
        }
        if !templates.is_empty() {
            hasher.update(b"templates");
            hasher.update(templates.digest(&rendered));
        }
        Ok(hasher.finalize().into())
    }

    /// Empty (unless `--allow-empty`) or a `--require`d key missing.
    pub fn check_present(&self, secrets: &SecretSet) -> Result<(), DeliverError> {
        if secrets.is_empty() && !self.options.allow_empty {
            return Err(DeliverError::Empty {
                scope: self.options.scope.clone(),
            });
        }
        let missing: Vec<String> = self
            .options
            .require
            .iter()
            .filter(|key| !secrets.contains(key))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DeliverError::MissingRequired(missing))
        }
    }

    /// Names that cannot be files, when (and only when) per-key files are
    /// asked for: a JSON-only target can carry any key.
    pub fn check_file_names(&self, secrets: &SecretSet) -> Result<(), DeliverError> {
        if self.files().is_some_and(|f| f.dir.is_some()) {
            files::validate_names(secrets)?;
        }
        Ok(())
    }

    /// The child's environment: inherited minus the bootstrap variables, plus
    /// the secrets (or their files' paths with `--env-file-refs`) unless
    /// secrets stay out of the environment.
    pub fn env<'s>(&self, secrets: &'s SecretSet) -> Result<EnvPlan<'s>, DeliverError> {
        let inherited = env::inherited();
        let Some(options) = &self.options.env else {
            return Ok(EnvPlan::inherited_only(inherited));
        };
        let dir = self.files().and_then(|f| f.dir.as_deref());
        let source = match dir {
            Some(dir) if options.file_refs => EnvSource::FileRefs(dir),
            _ => EnvSource::Values,
        };
        Ok(EnvPlan::build(inherited, secrets, options, source)?)
    }

    /// Refuses an environment that, with the program's command line, is more
    /// than `execve` accepts.
    pub fn check_fits(&self, plan: &EnvPlan<'_>) -> Result<(), DeliverError> {
        Ok(plan.check_size(&self.command_line, ExecLimits::current())?)
    }

    /// Writes every file target and every template's DEST (only the DESTs
    /// whose bytes changed since this process last wrote them) and logs what
    /// was written (names and counts, never values). Every template is
    /// rendered before anything is written.
    pub fn write(&self, secrets: &SecretSet) -> Result<(), DeliverError> {
        let rendered = self.templates().render(secrets)?;
        self.templates().precheck()?;
        if let Some(options) = self.files() {
            let written = files::write(secrets, options)?;
            tracing::info!(
                files = written.files.len(),
                dotenv = written.dotenv_file.is_some(),
                json = written.json_file.is_some(),
                "secrets written to files"
            );
        }
        if !self.templates().is_empty() {
            let count = self
                .templates()
                .write(&rendered, &mut self.stamps.borrow_mut())?;
            tracing::info!(
                written = count.written,
                unchanged = count.unchanged,
                "templates rendered"
            );
        }
        Ok(())
    }

    /// Records in the per-key directory's state file that a poll found the
    /// delivered secrets unchanged (what `svid-exec ready --max-age` reads).
    pub fn confirm(&self) -> Result<(), DeliverError> {
        match self.files().and_then(|f| f.dir.as_ref()) {
            Some(dir) => Ok(files::state::confirm(dir)?),
            None => Ok(()),
        }
    }

    /// Removes what [`Delivery::write`] wrote.
    pub fn remove(&self) -> Result<(), DeliverError> {
        if let Some(options) = self.files() {
            files::remove(options)?;
        }
        Ok(self.templates().remove(&mut self.stamps.borrow_mut())?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn delivery(require: &[&str], allow_empty: bool) -> Delivery {
        Delivery::new(
            DeliveryOptions {
                env: Some(EnvOptions::default()),
                require: require.iter().map(|s| (*s).to_owned()).collect(),
                allow_empty,
                scope: "project p, environment prod, path /".to_owned(),
                ..DeliveryOptions::default()
            },
            vec!["prog".into()],
        )
    }

    #[test]
    fn empty_result_is_refused_unless_allowed() {
        let empty = SecretSet::new();
        let err = delivery(&[], false).accept(&empty).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(err.to_string().contains("environment prod"), "{err}");
        assert!(err.hint().unwrap().contains("--allow-empty"));
        delivery(&[], true).accept(&empty).unwrap();
    }

    #[test]
    fn missing_required_keys_are_listed() {
        let set = SecretSet::from_pairs(&[("A", "1")]);
        let err = delivery(&["A", "B", "C"], false).accept(&set).unwrap_err();
        assert_eq!(err.to_string(), "required secrets are missing: B, C");
        assert_eq!(err.exit_class(), ExitClass::Config);
    }

    #[test]
    fn file_names_are_checked_only_for_per_key_files() {
        let set = SecretSet::from_pairs(&[("a/b", "1")]);
        let json_only = FilesOptions {
            json_file: Some(PathBuf::from("/run/s.json")),
            ..FilesOptions::default()
        };
        let mut d = delivery(&[], false);
        d.options.env = None;
        d.options.files = Some(json_only);
        d.accept(&set).unwrap();
        d.options.files = Some(FilesOptions {
            dir: Some(PathBuf::from("/run/s")),
            ..FilesOptions::default()
        });
        let err = d.accept(&set).unwrap_err();
        assert!(matches!(err, DeliverError::Files(_)), "{err}");
    }

    #[test]
    fn file_refs_name_each_keys_file_in_the_directory() {
        let set = SecretSet::from_pairs(&[("DB", "secret")]);
        let mut d = delivery(&[], false);
        d.options.env = Some(EnvOptions {
            file_refs: true,
            ..EnvOptions::default()
        });
        d.options.files = Some(FilesOptions {
            dir: Some(PathBuf::from("/run/s")),
            ..FilesOptions::default()
        });
        let plan = d.env(&set).unwrap();
        assert_eq!(plan.value_bytes("DB_FILE"), Some(b"/run/s/DB".as_slice()));
        assert_eq!(plan.delivered_names(), ["DB_FILE"]);
    }
}
