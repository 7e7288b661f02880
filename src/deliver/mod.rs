//! Delivery: how fetched secrets reach the program. [`Delivery`] is built once
//! from the configuration and is the one door to every way of delivering
//! (environment, files) for `run`, `write`, `check` and the supervisor:
//!
//! - [`Delivery::preflight`] before anything is fetched (file targets);
//! - [`Delivery::accept`] on every fetched set before it is delivered: it
//!   applies the selection (`--only`, `--map`) once and returns the set that
//!   every way of delivering then uses; what `run` would refuse (empty, a
//!   `--require`d or selected key missing, names a target cannot carry, an
//!   environment `execve` would refuse) is refused the same way at start and
//!   on every poll;
//! - [`Delivery::write`] and [`Delivery::remove`] for the files;
//! - [`Delivery::env`], the child's environment as an [`EnvPlan`];
//! - [`Delivery::memfds`], the sealed memfds the program inherits (`--memfd`);
//! - [`Delivery::fallback`], the last good set kept for an outage (`--fallback-dir`).
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
pub mod fallback;
pub mod files;
pub mod memfd;
pub mod names;
pub mod steering;
pub mod template;

use std::cell::RefCell;
use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};

use crate::error::{ExitClass, Failure};
use crate::secrets::{Collision, SecretSet, Selection};
use env::{EnvError, EnvOptions, EnvPlan, EnvSource, ExecLimits};
use fallback::{FallbackError, FallbackOptions, Store};
use files::{FilesError, FilesOptions};
use memfd::{Layout, MemfdError};
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
    /// Keys that must be present (`--require`), as named in Infisical.
    pub require: Vec<String>,
    /// Which keys are delivered, under which names (`--only`, `--map`).
    pub selection: Selection,
    /// Accept an empty set (`--allow-empty`).
    pub allow_empty: bool,
    /// What was asked for, for messages ("project p, environment prod, path /").
    pub scope: String,
    /// Each secret as a sealed memfd inherited by the program (`--memfd`);
    /// the environment then names them (`KEY_FILE=/proc/self/fd/N`).
    pub memfd: bool,
    /// Keep the last good set for an outage (`--fallback-dir`).
    pub fallback: Option<FallbackOptions>,
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
    /// Keys that `--require`, `--only` or `--map` name are absent (each
    /// with the option that named it).
    #[error("required secrets are missing: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// `--map` would deliver two secrets under one name.
    #[error(transparent)]
    Collision(#[from] Collision),
    /// Secrets that a way of delivering cannot carry, all of them.
    #[error("{} cannot be delivered as asked: {}", plural_secrets(.0.len()), list(.0))]
    Unfit(Vec<names::Unfit>),
    /// The files cannot be written (or removed).
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The child's environment cannot be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The memfds cannot be made (`--memfd`).
    #[error(transparent)]
    Memfd(#[from] MemfdError),
    /// The fallback directory cannot be used (`--fallback-dir`).
    #[error(transparent)]
    Fallback(#[from] FallbackError),
    /// A template cannot be rendered or written.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl Failure for DeliverError {
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Empty { .. } | Self::MissingRequired(_) | Self::Collision(_) | Self::Unfit(_) => {
                ExitClass::Config
            }
            Self::Files(e) => e.exit_class(),
            Self::Env(e) => e.exit_class(),
            Self::Memfd(e) => e.exit_class(),
            Self::Fallback(e) => e.exit_class(),
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
            Self::Collision(_) => {
                Some("map one of them to another name, or leave one out with --only".to_owned())
            }
            Self::Unfit(unfit) => Some(names::hint(unfit)),
            Self::Files(e) => e.hint(),
            Self::Env(e) => e.hint(),
            Self::Memfd(e) => e.hint(),
            Self::Fallback(e) => e.hint(),
            Self::Template(e) => e.hint(),
        }
    }
}

/// "1 secret", "3 secrets".
fn plural_secrets(n: usize) -> String {
    if n == 1 {
        "1 secret".to_owned()
    } else {
        format!("{n} secrets")
    }
}

/// `"a" in the dotenv file: why; "b" in …`.
fn list(unfit: &[names::Unfit]) -> String {
    unfit
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every way the secrets reach the program, as configured.
#[derive(Debug, Clone)]
pub struct Delivery {
    options: DeliveryOptions,
    /// The program's command line (empty without a program): `execve` counts
    /// it with the environment against its limits.
    command_line: Vec<OsString>,
    /// The memfds' numbers, fixed for the whole run (`--memfd`).
    memfd: Option<Layout>,
    /// The fallback directory (`--fallback-dir`).
    fallback: Option<Store>,
    /// What was last written to each template DEST, so an unchanged
    /// rendering is not written again.
    stamps: RefCell<Stamps>,
}

impl Delivery {
    /// A delivery for a program started with `command_line` (empty for
    /// `write` and `check`, which start none).
    pub fn new(options: DeliveryOptions, command_line: Vec<OsString>) -> Self {
        let memfds = options.memfd || options.templates.memfd_names().next().is_some();
        let memfd = memfds.then(Layout::current);
        let fallback = options.fallback.clone().map(Store::new);
        Self {
            options,
            command_line,
            memfd,
            fallback,
            stamps: RefCell::default(),
        }
    }

    /// The fallback directory, with `--fallback-dir`.
    pub fn fallback(&self) -> Option<&Store> {
        self.fallback.as_ref()
    }

    /// The templates (empty when none is given).
    pub fn templates(&self) -> &Templates {
        &self.options.templates
    }

    /// Whether anything is written to files (file targets or templates).
    pub fn writes_files(&self) -> bool {
        self.files().is_some() || self.templates().writes_files()
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
    /// owner), the fallback directory (created, ours, 0700) and `/proc` for
    /// `--memfd`. The templates themselves were parsed with the configuration.
    pub fn preflight(&self) -> Result<(), DeliverError> {
        if let Some(files) = self.files() {
            files::preflight(files)?;
        }
        if let Some(store) = &self.fallback {
            store.prepare()?;
        }
        if self.memfd.is_some() {
            memfd::preflight()?;
        }
        Ok(self.templates().preflight()?)
    }

    /// The set to deliver, from a fetched set, or why nothing of it may be
    /// delivered: empty (unless allowed) or a `--require`d or selected key
    /// missing ([`Delivery::select`]); then what [`Delivery::deliverable`]
    /// refuses. Every way of delivering gets the set this returns, with the
    /// fingerprint of what delivering it gives the program when `fingerprint`
    /// asks for it (a supervisor compares them: equal fingerprints mean the
    /// program would see nothing different; a one-shot never does, and at
    /// 10,000 secrets hashing them was 15% of its instructions).
    pub fn accept(
        &self,
        fetched: SecretSet,
        fingerprint: bool,
    ) -> Result<(SecretSet, Option<[u8; 32]>), DeliverError> {
        let secrets = self.select(fetched)?;
        self.deliverable(secrets, fingerprint)
    }

    /// A set read back from the fallback directory: it was selected when it
    /// was stored, under the same binding (selection and `--require`
    /// included), so the selection is not applied again (a `--map`ped name
    /// is not in Infisical's terms any more); only emptiness (which
    /// `--allow-empty` decides) and what depends on this launch's targets
    /// ([`Delivery::deliverable`]) are checked again.
    pub fn accept_cached(
        &self,
        cached: SecretSet,
        fingerprint: bool,
    ) -> Result<(SecretSet, Option<[u8; 32]>), DeliverError> {
        if cached.is_empty() && !self.options.allow_empty {
            return Err(DeliverError::Empty {
                scope: self.options.scope.clone(),
            });
        }
        self.deliverable(cached, fingerprint)
    }

    /// The selected set, or what this launch's targets cannot take: names a
    /// target cannot carry, an environment the kernel would refuse with the
    /// program's command line, a template that does not render with it (an
    /// undefined name), more memfds than allowed; with the fingerprint of
    /// what delivering it gives the program if `fingerprint` asks for it.
    fn deliverable(
        &self,
        secrets: SecretSet,
        fingerprint: bool,
    ) -> Result<(SecretSet, Option<[u8; 32]>), DeliverError> {
        self.check_names(&secrets)?;
        let plan = self.env(&secrets)?;
        self.check_fits(&plan)?;
        if let Some(layout) = &self.memfd {
            layout.check_count(
                self.secret_memfds(&secrets) + self.templates().memfd_names().count(),
            )?;
        }
        let templates = self.templates();
        templates.check_clear_of_keys(self.files().and_then(|f| f.dir.as_deref()), &secrets)?;
        let rendered = templates.render(&secrets)?;
        if !fingerprint {
            return Ok((secrets, None));
        }
        let mut hasher = Sha256::new();
        // The environment and the file targets carry every selected secret.
        if self.to_env() || self.files().is_some() {
            hasher.update(b"set");
            hasher.update(secrets.fingerprint());
        }
        if !templates.is_empty() {
            hasher.update(b"templates");
            hasher.update(templates.digest(&rendered));
        }
        Ok((secrets, Some(hasher.finalize().into())))
    }

    /// The selected set (`--only`, `--map`), after refusing an empty fetched
    /// set (unless `--allow-empty`) and listing every key that `--require`,
    /// `--only` or `--map` names but the fetched set lacks. `--require` names
    /// keys as in Infisical, before renaming.
    pub fn select(&self, fetched: SecretSet) -> Result<SecretSet, DeliverError> {
        if fetched.is_empty() && !self.options.allow_empty {
            return Err(DeliverError::Empty {
                scope: self.options.scope.clone(),
            });
        }
        let mut missing: Vec<String> = self
            .options
            .require
            .iter()
            .filter(|key| !fetched.contains(key))
            .map(|key| format!("{key} (--require)"))
            .collect();
        missing.extend(self.options.selection.missing(&fetched));
        if !missing.is_empty() {
            return Err(DeliverError::MissingRequired(missing));
        }
        Ok(self.options.selection.apply(fetched)?)
    }

    /// Every secret whose name (or value) a configured target cannot carry,
    /// in one refusal: the environment (`=`, NUL), the dotenv file (not a
    /// shell name), per-key files (not a file name). JSON carries anything.
    pub fn check_names(&self, secrets: &SecretSet) -> Result<(), DeliverError> {
        let unfit = names::unfit(secrets, &self.options);
        if unfit.is_empty() {
            Ok(())
        } else {
            Err(DeliverError::Unfit(unfit))
        }
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
        let source = match (self.memfd.filter(|_| self.options.memfd), dir) {
            (Some(layout), _) => EnvSource::Memfd(layout),
            (None, Some(dir)) if options.file_refs => EnvSource::FileRefs(dir),
            _ => EnvSource::Values,
        };
        let mut plan = EnvPlan::build(inherited, secrets, options, source)?;
        if let Some(layout) = self.memfd {
            // The templates' memfds come after the secrets' (`--memfd`).
            let first = self.secret_memfds(secrets);
            let refs = self.templates().memfd_names().enumerate();
            let refs = refs.map(|(i, name)| (name.to_owned(), layout.path(first + i)));
            plan.add_file_refs(refs, options)?;
        }
        Ok(plan)
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
        if self.templates().writes_files() {
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

    /// The sealed memfds the program inherits, each with the number it is
    /// inherited at (what [`Delivery::env`] names): with `--memfd` one per
    /// secret, in name order, then one per `--template SRC:memfd:NAME`, in
    /// the order given, rendered from `secrets`. Close-on-exec here; the
    /// launcher places them and closes its copies once the program has them.
    /// Empty without either.
    pub fn memfds(&self, secrets: &SecretSet) -> Result<Vec<(OwnedFd, RawFd)>, DeliverError> {
        use secrecy::ExposeSecret as _;
        let Some(layout) = self.memfd else {
            return Ok(Vec::new());
        };
        let templates = self.templates();
        let rendered = if templates.memfd_names().next().is_some() {
            templates.render(secrets)?
        } else {
            Vec::new()
        };
        let values = secrets
            .iter()
            .take(self.secret_memfds(secrets))
            .map(|(key, value)| (key, value.expose_secret().as_bytes()));
        let items = values.chain(templates.memfd_renderings(&rendered));
        Ok(memfd::create(layout, items)?)
    }

    /// How many memfds carry secrets: every secret with `--memfd`, else none.
    fn secret_memfds(&self, secrets: &SecretSet) -> usize {
        if self.options.memfd {
            secrets.len()
        } else {
            0
        }
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
        let err = delivery(&[], false)
            .accept(empty.clone(), true)
            .unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(err.to_string().contains("environment prod"), "{err}");
        assert!(err.hint().unwrap().contains("--allow-empty"));
        delivery(&[], true).accept(empty, true).unwrap();
    }

    #[test]
    fn missing_required_keys_are_listed() {
        let set = SecretSet::from_pairs(&[("A", "1")]);
        let err = delivery(&["A", "B", "C"], false)
            .accept(set, true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "required secrets are missing: B (--require), C (--require)"
        );
        assert_eq!(err.exit_class(), ExitClass::Config);
    }

    #[test]
    fn require_names_keys_before_renaming_and_selection_misses_are_listed_with_it() {
        let set = SecretSet::from_pairs(&[("A", "1"), ("my-key", "2")]);
        let mut d = delivery(&["my-key", "R"], false);
        d.options.selection = Selection::new(
            vec!["A".into(), "O".into()],
            vec![("my-key".into(), "MY_KEY".into()), ("M".into(), "N".into())],
        );
        let err = d.accept(set.clone(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required secrets are missing: R (--require), O (--only), M (--map M=N)"
        );
        d.options.require = vec!["my-key".into()];
        d.options.selection =
            Selection::new(vec!["A".into()], vec![("my-key".into(), "MY_KEY".into())]);
        let names: Vec<String> = d
            .accept(set, true)
            .unwrap()
            .0
            .names()
            .map(str::to_owned)
            .collect();
        assert_eq!(names, ["A", "MY_KEY"]);
    }

    #[test]
    fn every_unfit_name_is_refused_at_once_with_a_map_to_fix_them() {
        let set = SecretSet::from_pairs(&[("my-key", "1"), ("db.password", "2"), ("OK", "3")]);
        let mut d = delivery(&[], false);
        d.options.files = Some(FilesOptions {
            dotenv_file: Some(PathBuf::from("/run/s.env")),
            ..FilesOptions::default()
        });
        let err = d.accept(set, true).unwrap_err();
        assert!(
            matches!(err, DeliverError::Unfit(ref u) if u.len() == 2),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("2 secrets cannot be delivered as asked"));
        assert!(err
            .to_string()
            .contains("\"db.password\" in the dotenv file"));
        assert!(err.to_string().contains("\"my-key\" in the dotenv file"));
        assert!(err
            .hint()
            .unwrap()
            .contains("--map db.password=DB_PASSWORD,my-key=MY_KEY"));
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
        d.accept(set.clone(), true).unwrap();
        d.options.files = Some(FilesOptions {
            dir: Some(PathBuf::from("/run/s")),
            ..FilesOptions::default()
        });
        let err = d.accept(set, true).unwrap_err();
        assert!(matches!(err, DeliverError::Unfit(_)), "{err}");
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
