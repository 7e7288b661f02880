//! Templates (`--template SRC:DEST[:MODE]`): each SRC is a Jinja template
//! (minijinja, configured in `engine.rs`) read and parsed once, with the
//! configuration, so a syntax error or an unreadable SRC is refused before any
//! request; rendered in memory against every set before anything is written
//! (a name that is not a delivered secret fails the whole delivery, naming
//! the template, the line and the name); and written to DEST the way the
//! dotenv and JSON files are (`files::write_file`: a temp file created
//! exclusively, never through a link, in DEST's directory on tmpfs, at its
//! final mode and owner, fsynced, renamed over DEST).
//!
//! A DEST of `memfd:NAME` (`run` only) is written nowhere: the rendering
//! becomes a sealed memfd the program inherits, like a secret's with
//! `--memfd` (`deliver::memfd`), named by `NAME_FILE=/proc/self/fd/N`; every
//! file operation here passes it by.
//!
//! Rendering and writing are apart on purpose: a rendering is bytes in a
//! zeroizing buffer, and a target is where they go. A DEST whose bytes did not
//! change since this process last wrote it (same digest, same file still
//! there) is not rewritten, so `--watch` never touches a file, and so never
//! wakes a file watcher, for a change that does not show in it.

mod engine;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use minijinja::Environment;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{ExitClass, Failure};
use crate::secrets::SecretSet;

use super::files::{self, FilesError, FilesOptions};
use engine::{context, describe, ZeroizingWriter};

/// A template larger than this is refused: templates are config files, and
/// SRC could name a device that never ends.
const MAX_SOURCE: u64 = 1 << 20;

/// One `--template SRC:DEST[:MODE]` as given (DEST made absolute), or
/// `--template SRC:memfd:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The template file.
    pub src: PathBuf,
    /// Where its rendering goes: a file, or `memfd:NAME` as given (then
    /// `memfd` is set and no file is written).
    pub dest: PathBuf,
    /// DEST's mode; `None` for `--file-mode` (and for a memfd).
    pub mode: Option<u32>,
    /// NAME of a `memfd:NAME` DEST.
    pub memfd: Option<String>,
}

/// A rendering: the exact bytes for one DEST, wiped when dropped.
pub type Rendering = Zeroizing<Vec<u8>>;

/// One template and where it goes.
#[derive(Clone)]
struct Target {
    /// The template's name in the engine (its SRC).
    name: String,
    src: PathBuf,
    dest: PathBuf,
    /// How DEST is written: its mode, owner and the tmpfs rule.
    file: FilesOptions,
    /// NAME of a `memfd:NAME` DEST: nothing is written, `file` is unused.
    memfd: Option<String>,
}

impl Target {
    /// Written to a file (not a memfd).
    fn is_file(&self) -> bool {
        self.memfd.is_none()
    }
}

/// Every `--template`, parsed and checked. Empty when none is given.
#[derive(Clone, Default)]
pub struct Templates {
    engine: Arc<Environment<'static>>,
    targets: Vec<Target>,
}

impl PartialEq for Templates {
    fn eq(&self, other: &Self) -> bool {
        let key = |t: &Target| (t.src.clone(), t.dest.clone(), t.file.clone());
        self.targets
            .iter()
            .map(key)
            .eq(other.targets.iter().map(key))
    }
}

impl Eq for Templates {}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.targets.iter().map(|t| {
                format!(
                    "{} -> {} ({:04o})",
                    t.src.display(),
                    t.dest.display(),
                    t.file.mode
                )
            }))
            .finish()
    }
}

/// What this process last wrote to each DEST: a digest of the bytes and the
/// file's identity, so an unchanged rendering is not written again unless
/// the file was removed or replaced meanwhile.
#[derive(Clone, Default)]
pub struct Stamps(BTreeMap<PathBuf, Stamp>);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    digest: [u8; 32],
    dev: u64,
    ino: u64,
}

impl fmt::Debug for Stamps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digests of secret content stay out of Debug output.
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// How many DESTs a write replaced and how many it left alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCount {
    pub written: usize,
    pub unchanged: usize,
}

/// Why templates cannot be loaded, rendered or written. Messages name
/// templates, targets, lines and secret names, never a value.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// SRC cannot be read.
    #[error("cannot read template {src}")]
    Read {
        src: PathBuf,
        #[source]
        source: io::Error,
    },
    /// SRC is not a template file.
    #[error("template {src} {reason}")]
    Source { src: PathBuf, reason: String },
    /// SRC does not parse.
    #[error("template {src}, line {line}: {problem}")]
    Syntax {
        src: PathBuf,
        line: usize,
        problem: String,
    },
    /// Rendering failed: an undefined name, a failed filter, too much work.
    #[error("template {src} (for {dest}){}: {problem}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Render {
        src: PathBuf,
        dest: PathBuf,
        line: Option<usize>,
        problem: String,
        undefined: bool,
    },
    /// DEST's mode is refused.
    #[error("template {src}: mode {mode:04o} for {dest}: {reason}")]
    Mode {
        src: PathBuf,
        dest: PathBuf,
        mode: u32,
        reason: String,
    },
    /// DEST is also another output.
    #[error("{dest} would be written twice: {reason}")]
    Clash { dest: PathBuf, reason: String },
    /// DEST cannot be written (or removed).
    #[error(transparent)]
    Files(#[from] FilesError),
}

impl Failure for TemplateError {
    /// All of it is the configuration (a template, a target) or what the
    /// templates ask of the delivered set.
    fn exit_class(&self) -> ExitClass {
        match self {
            Self::Files(e) => e.exit_class(),
            _ => ExitClass::Config,
        }
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::Read { .. } | Self::Source { .. } => {
                "give --template the path of a readable template file (SRC:DEST[:MODE])"
            }
            Self::Syntax { .. } => {
                "templates use Jinja syntax ({{ KEY }}, {{ secrets[\"KEY\"] }}, {% if %}, {% for %}); \
                 include, import and extends are not available"
            }
            Self::Render {
                undefined: true, ..
            } => {
                "every name must be a delivered secret: check the key in Infisical, --path, --tag \
                 and --only/--map, use secrets[\"KEY\"] for a name that is not an identifier, or \
                 write {{ KEY | default(\"\") }} where a key is optional"
            }
            Self::Render { .. } => "fix the template (see docs/templates.md for the filters)",
            Self::Mode { .. } => {
                "give MODE as octal permission bits the owner can read, without group/other \
                 write, such as 0400 or 0440"
            }
            Self::Clash { .. } => "give each output a path of its own",
            Self::Files(e) => return e.hint(),
        };
        Some(hint.to_owned())
    }
}

impl Templates {
    /// Reads, parses and checks every template, and checks its DEST against
    /// the other outputs (`files`: the file targets, with the mode, owner and
    /// tmpfs rule DEST is written with).
    pub fn load(specs: &[TemplateSpec], files: &FilesOptions) -> Result<Self, TemplateError> {
        let mut engine = engine::environment();
        let mut targets: Vec<Target> = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.src.display().to_string();
            if engine.get_template(&name).is_err() {
                let source = read_source(&spec.src)?;
                engine
                    .add_template_owned(name.clone(), source)
                    .map_err(|e| {
                        let (line, problem) = describe(&e);
                        TemplateError::Syntax {
                            src: spec.src.clone(),
                            line: line.unwrap_or(1),
                            problem,
                        }
                    })?;
            }
            let mode = spec.mode.unwrap_or(files.mode);
            if spec.memfd.is_none() {
                check_mode(spec, mode)?;
            }
            check_dest(spec, files, &targets)?;
            targets.push(Target {
                name,
                src: spec.src.clone(),
                dest: spec.dest.clone(),
                file: FilesOptions {
                    dir: None,
                    dotenv_file: None,
                    json_file: None,
                    mode,
                    ..files.clone()
                },
                memfd: spec.memfd.clone(),
            });
        }
        Ok(Self {
            engine: Arc::new(engine),
            targets,
        })
    }

    /// Whether no template is given.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Whether a template renders to a file (not only to memfds).
    pub fn writes_files(&self) -> bool {
        self.targets.iter().any(Target::is_file)
    }

    /// NAME of each `memfd:NAME` DEST, in the order given.
    pub fn memfd_names(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().filter_map(|t| t.memfd.as_deref())
    }

    /// `(NAME, bytes)` of each `memfd:NAME` DEST, from `rendered` (what
    /// [`Templates::render`] returned), in the order given.
    pub fn memfd_renderings<'a>(
        &'a self,
        rendered: &'a [Rendering],
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.targets
            .iter()
            .zip(rendered)
            .filter_map(|(t, bytes)| Some((t.memfd.as_deref()?, &bytes[..])))
    }

    /// The templates written to files.
    fn files(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.is_file())
    }

    /// `(SRC, DEST, mode)` of each template, in the order given.
    pub fn targets(&self) -> impl Iterator<Item = (&Path, &Path, u32)> {
        self.targets
            .iter()
            .map(|t| (t.src.as_path(), t.dest.as_path(), t.file.mode))
    }

    /// Checks each DEST's directory before anything is fetched, as for the
    /// dotenv and JSON files: a real directory (created if only its last
    /// component is missing), on tmpfs unless allowed, where we may create
    /// files and apply the owner; no link or non-file at DEST.
    pub fn preflight(&self) -> Result<(), TemplateError> {
        for target in self.files() {
            files::preflight_file(&target.dest, &target.file)?;
        }
        Ok(())
    }

    /// Renders every template against `secrets`, in memory, in the order
    /// given; the first failure fails them all.
    pub fn render(&self, secrets: &SecretSet) -> Result<Vec<Rendering>, TemplateError> {
        if self.targets.is_empty() {
            return Ok(Vec::new());
        }
        // One copy of the set for all of them (its values are wiped on drop).
        let ctx = context(secrets);
        self.targets
            .iter()
            .map(|target| self.render_one(target, &ctx))
            .collect()
    }

    fn render_one(
        &self,
        target: &Target,
        ctx: &minijinja::Value,
    ) -> Result<Rendering, TemplateError> {
        let failed = |e: &minijinja::Error| {
            let (line, problem) = describe(e);
            TemplateError::Render {
                src: target.src.clone(),
                dest: target.dest.clone(),
                line,
                problem,
                undefined: e.kind() == minijinja::ErrorKind::UndefinedError,
            }
        };
        let template = self
            .engine
            .get_template(&target.name)
            .map_err(|e| failed(&e))?;
        let mut out = ZeroizingWriter::default();
        template
            .render_captured_to(ctx.clone(), &mut out)
            .map_err(|e| failed(&e))?;
        Ok(out.into_inner())
    }

    /// For `check`: each template with its DEST's preflight (a file's; a
    /// memfd has none) and, given the secrets, its rendering in memory
    /// (dropped at once): `(SRC, DEST, whether DEST is a file, outcome)` in
    /// the order given.
    pub fn check_each(
        &self,
        secrets: Option<&SecretSet>,
    ) -> Vec<(&Path, &Path, bool, Result<(), TemplateError>)> {
        let ctx = secrets.map(context);
        self.targets
            .iter()
            .map(|target| {
                let preflight = if target.is_file() {
                    files::preflight_file(&target.dest, &target.file)
                } else {
                    Ok(())
                };
                let outcome = preflight
                    .map_err(TemplateError::from)
                    .and_then(|()| match &ctx {
                        Some(ctx) => self.render_one(target, ctx).map(drop),
                        None => Ok(()),
                    });
                let (src, dest) = (target.src.as_path(), target.dest.as_path());
                (src, dest, target.is_file(), outcome)
            })
            .collect()
    }

    /// A DEST inside the per-key directory must not be a key's file.
    pub fn check_clear_of_keys(
        &self,
        dir: Option<&Path>,
        secrets: &SecretSet,
    ) -> Result<(), TemplateError> {
        let Some(dir) = dir else { return Ok(()) };
        for target in self.files() {
            let name = target.dest.file_name().map(|n| n.to_string_lossy());
            if target.dest.parent() == Some(dir) && name.is_some_and(|n| secrets.contains(&n)) {
                return Err(TemplateError::Clash {
                    dest: target.dest.clone(),
                    reason: "it is also the file of a secret in the files directory".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// One digest of every DEST with its rendering: equal digests mean the
    /// same bytes at the same places.
    pub fn digest(&self, rendered: &[Rendering]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for (target, bytes) in self.targets.iter().zip(rendered) {
            let dest = target.dest.as_os_str().as_encoded_bytes();
            hasher.update((dest.len() as u64).to_le_bytes());
            hasher.update(dest);
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes[..]);
        }
        hasher.finalize().into()
    }

    /// What can be refused about each DEST without writing (a link or a
    /// non-file in its place, a disk-backed directory): checked before any
    /// output of a delivery is written.
    pub fn precheck(&self) -> Result<(), TemplateError> {
        for target in self.files() {
            files::precheck_file(&target.dest, &target.file)?;
        }
        Ok(())
    }

    /// Writes each rendering to its DEST, skipping a DEST that already holds
    /// exactly these bytes from an earlier write of this process.
    pub fn write(
        &self,
        rendered: &[Rendering],
        stamps: &mut Stamps,
    ) -> Result<WriteCount, TemplateError> {
        let mut pending = Vec::new();
        let mut count = WriteCount::default();
        let written = self
            .targets
            .iter()
            .zip(rendered)
            .filter(|(t, _)| t.is_file());
        for (target, bytes) in written {
            let digest: [u8; 32] = Sha256::digest(&bytes[..]).into();
            let same = stamps.0.get(&target.dest).is_some_and(|s| {
                s.digest == digest && identity(&target.dest) == Some((s.dev, s.ino))
            });
            if same {
                count.unchanged += 1;
            } else {
                pending.push((target, bytes, digest));
            }
        }
        for (target, bytes, digest) in pending {
            stamps.0.remove(&target.dest);
            files::write_file(&target.dest, bytes, &target.file)?;
            if let Some((dev, ino)) = identity(&target.dest) {
                stamps
                    .0
                    .insert(target.dest.clone(), Stamp { digest, dev, ino });
            }
            count.written += 1;
        }
        Ok(count)
    }

    /// Removes every DEST (a regular file only; a missing one is fine).
    pub fn remove(&self, stamps: &mut Stamps) -> Result<(), TemplateError> {
        stamps.0.clear();
        for target in self.files() {
            files::remove_file(&target.dest, &target.file)?;
        }
        Ok(())
    }
}

/// `(device, inode)` of the file at `path`, not following a link.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| (m.dev(), m.ino()))
}

/// SRC's text: a regular file of at most [`MAX_SOURCE`] bytes of UTF-8.
fn read_source(src: &Path) -> Result<String, TemplateError> {
    let read_err = |source| TemplateError::Read {
        src: src.to_owned(),
        source,
    };
    let file = std::fs::File::open(src).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(TemplateError::Source {
            src: src.to_owned(),
            reason: "is not a regular file".to_owned(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SOURCE {
        return Err(TemplateError::Source {
            src: src.to_owned(),
            reason: format!("is larger than {} KiB", MAX_SOURCE >> 10),
        });
    }
    String::from_utf8(bytes).map_err(|_| TemplateError::Source {
        src: src.to_owned(),
        reason: "is not UTF-8 text".to_owned(),
    })
}

/// DEST's mode: permission bits someone can read, and no group/other write
/// (a file others may rewrite could be swapped for one they chose).
fn check_mode(spec: &TemplateSpec, mode: u32) -> Result<(), TemplateError> {
    let refused = |reason: String| TemplateError::Mode {
        src: spec.src.clone(),
        dest: spec.dest.clone(),
        mode,
        reason,
    };
    files::check_mode(mode).map_err(|e| match e {
        FilesError::InvalidMode { reason, .. } => refused(reason.to_owned()),
        other => refused(other.to_string()),
    })
}

/// DEST ends in a file name and is no other output: not the files
/// directory, a reserved `..` name in it, the dotenv or JSON file, or an
/// earlier template's DEST.
fn check_dest(
    spec: &TemplateSpec,
    files: &FilesOptions,
    earlier: &[Target],
) -> Result<(), TemplateError> {
    let dest = spec.dest.as_path();
    let clash = |reason: &str| {
        Err(TemplateError::Clash {
            dest: dest.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if spec.memfd.is_some() {
        return if earlier.iter().any(|t| t.dest == dest) {
            clash("two templates render to it")
        } else {
            Ok(())
        };
    }
    let Some(Component::Normal(name)) = dest.components().next_back() else {
        return clash("a template's DEST must end in a file name");
    };
    if files.dir.as_deref() == Some(dest) {
        return clash("it is the files directory");
    }
    if files.dir.as_deref() == dest.parent() && name.as_encoded_bytes().starts_with(b"..") {
        return clash("names starting with '..' in the files directory are reserved");
    }
    if files.dotenv_file.as_deref() == Some(dest) || files.json_file.as_deref() == Some(dest) {
        return clash("it is also the dotenv or JSON file");
    }
    if earlier.iter().any(|t| t.dest == dest) {
        return clash("two templates render to it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &Path, dest: &str, mode: Option<u32>) -> TemplateSpec {
        TemplateSpec {
            src: src.to_owned(),
            dest: PathBuf::from(dest),
            mode,
            memfd: None,
        }
    }

    fn source(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn load_refuses_syntax_errors_unreadable_sources_bad_modes_and_clashes() {
        let dir = tempfile::tempdir().unwrap();
        let good = source(dir.path(), "good", "{{ A }}\n");
        let bad = source(dir.path(), "bad", "line1\n{% if %}\n");
        let opts = FilesOptions::default();
        let err = Templates::load(&[spec(&bad, "/run/x", None)], &opts).unwrap_err();
        assert!(
            matches!(err, TemplateError::Syntax { line: 2, .. }),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Config);
        let missing = dir.path().join("missing");
        let err = Templates::load(&[spec(&missing, "/run/x", None)], &opts).unwrap_err();
        assert!(matches!(err, TemplateError::Read { .. }), "{err}");
        let err = Templates::load(&[spec(dir.path(), "/run/x", None)], &opts).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        for mode in [0o420, 0o402, 0o000, 0o4400] {
            let err = Templates::load(&[spec(&good, "/run/x", Some(mode))], &opts).unwrap_err();
            assert!(matches!(err, TemplateError::Mode { .. }), "{mode:o}: {err}");
        }
        let two = [spec(&good, "/run/x", None), spec(&good, "/run/x", None)];
        assert!(matches!(
            Templates::load(&two, &opts).unwrap_err(),
            TemplateError::Clash { .. }
        ));
        let with_dir = FilesOptions {
            dir: Some(PathBuf::from("/run/s")),
            json_file: Some(PathBuf::from("/run/s.json")),
            ..FilesOptions::default()
        };
        for dest in ["/run/s", "/run/s/..data", "/run/s.json"] {
            let err = Templates::load(&[spec(&good, dest, None)], &with_dir).unwrap_err();
            assert!(matches!(err, TemplateError::Clash { .. }), "{dest}: {err}");
        }
        let ok =
            Templates::load(&[spec(&good, "/run/s/app.conf", Some(0o440))], &with_dir).unwrap();
        assert_eq!(
            ok.targets().collect::<Vec<_>>(),
            [(good.as_path(), Path::new("/run/s/app.conf"), 0o440)]
        );
        let keys = SecretSet::from_pairs(&[("app.conf", "v")]);
        assert!(ok
            .check_clear_of_keys(Some(Path::new("/run/s")), &keys)
            .is_err());
    }

    #[test]
    fn render_is_byte_exact_and_an_undefined_name_names_template_line_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), "t", "a={{ A }}\nb={{ B }}\n");
        let t = Templates::load(&[spec(&src, "/run/out", None)], &FilesOptions::default()).unwrap();
        let set = SecretSet::from_pairs(&[("A", "é\n'\""), ("B", "")]);
        let out = t.render(&set).unwrap();
        assert_eq!(&out[0][..], "a=é\n'\"\nb=\n".as_bytes());
        let err = t.render(&SecretSet::from_pairs(&[("A", "x")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&src.display().to_string()), "{text}");
        assert!(
            text.contains("line 2") && text.contains("`B` is undefined"),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("default"), "{err:?}");
    }

    #[test]
    fn the_digest_follows_bytes_and_places() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), "t", "{{ A }}");
        let t = Templates::load(&[spec(&src, "/run/out", None)], &FilesOptions::default()).unwrap();
        let one = t
            .render(&SecretSet::from_pairs(&[("A", "1"), ("UNUSED", "x")]))
            .unwrap();
        let same = t
            .render(&SecretSet::from_pairs(&[("A", "1"), ("UNUSED", "y")]))
            .unwrap();
        let two = t.render(&SecretSet::from_pairs(&[("A", "2")])).unwrap();
        assert_eq!(t.digest(&one), t.digest(&same));
        assert_ne!(t.digest(&one), t.digest(&two));
    }

    #[test]
    fn debug_output_names_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), "t", "{{ A }}");
        let t = Templates::load(&[spec(&src, "/run/out", None)], &FilesOptions::default()).unwrap();
        let mut stamps = Stamps::default();
        stamps.0.insert(
            PathBuf::from("/run/out"),
            Stamp {
                digest: [7; 32],
                dev: 1,
                ino: 2,
            },
        );
        assert_eq!(
            format!("{t:?}"),
            format!("[\"{} -> /run/out (0400)\"]", src.display())
        );
        assert_eq!(format!("{stamps:?}"), "[\"/run/out\"]");
    }
}
