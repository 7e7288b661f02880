//! Secrets -> the child's environment, as a pure plan: inherited variables plus
//! secrets (override policy, prefix), the launcher's bootstrap variables
//! removed, names checked against what `execve` can carry and against the
//! names that would let a secret choose the program's code (`steering.rs`), and
//! the size checked against the kernel's limits before exec, so the user gets
//! a clear error instead of a bare `E2BIG`. Our own environment is never modified.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::steering::is_steering;
use crate::error::{ExitClass, Failure};
use crate::secrets::SecretSet;

/// How secrets become variables (`--env-prefix`, `--no-override`,
/// `--env-file-refs`, `--allow-env-name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOptions {
    /// Prepended to every name.
    pub prefix: String,
    /// Secrets replace inherited variables of the same name.
    pub override_inherited: bool,
    /// Deliver `KEY_FILE=<path>` instead of values (needs per-key files).
    pub file_refs: bool,
    /// Delivered names allowed although they are in [`STEERING`](super::steering::STEERING).
    pub allowed_names: BTreeSet<String>,
}

impl Default for EnvOptions {
    /// The contract's defaults: no prefix, secrets override, values, no
    /// steering name allowed.
    fn default() -> Self {
        Self {
            prefix: String::new(),
            override_inherited: true,
            file_refs: false,
            allowed_names: BTreeSet::new(),
        }
    }
}

/// The kernel's limit for one argv/envp string, NUL included
/// (`MAX_ARG_STRLEN` = 32 pages of 4 KiB).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Bootstrap variables: configuration of svid-exec itself, which the child
/// must not inherit (unless a secret of that exact name is delivered).
fn is_bootstrap(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b"INFISICAL_")
        || name.starts_with(b"SVID_EXEC_")
        || name == b"SPIFFE_ENDPOINT_SOCKET"
}

/// A portable shell identifier: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_portable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why `execve` cannot carry `name` as a variable name, if it cannot.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('=') {
        Some("it contains `=`")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    }
}

/// What a variable carries: what the child receives for each name.
#[derive(Debug, Clone, Copy)]
pub enum EnvSource<'a> {
    /// The secret values themselves.
    Values,
    /// `KEY_FILE=<path>` for each key: the path of its file in this per-key
    /// files directory.
    FileRefs(&'a Path),
    /// `KEY_FILE=/proc/self/fd/N` for each key: the descriptor its memfd is
    /// inherited at (`--memfd`).
    Memfd(crate::deliver::memfd::Layout),
}

/// One variable's value in the plan.
enum Value<'a> {
    Inherited(OsString),
    Secret(&'a SecretString),
    FilePath(PathBuf),
}

impl Value<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inherited(v) => v.as_bytes(),
            Self::Secret(s) => s.expose_secret().as_bytes(),
            Self::FilePath(p) => p.as_os_str().as_bytes(),
        }
    }
}

/// The child's environment, planned and checked, borrowing the secret values.
pub struct EnvPlan<'a> {
    vars: BTreeMap<OsString, Value<'a>>,
    /// Names that were delivered from secrets (after prefix).
    delivered: Vec<String>,
    /// Secret names kept out because an inherited variable won (`--no-override`).
    shadowed: Vec<String>,
    /// Non-portable names, delivered anyway.
    warnings: Vec<String>,
}

impl fmt::Debug for EnvPlan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvPlan")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .field("delivered", &self.delivered)
            .field("values", &"[redacted]")
            .finish()
    }
}

/// Why the environment cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// `execve` cannot carry this name.
    #[error("secret {name:?} cannot be an environment variable name ({reason})")]
    InvalidName {
        /// The full variable name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// One variable is longer than the kernel accepts for one string.
    #[error(
        "variable {name} is {size} bytes, over the kernel's limit of {limit} bytes for one environment string"
    )]
    StringTooLong {
        /// The variable (or `argument N`).
        name: String,
        /// `NAME=value` plus NUL.
        size: usize,
        /// The per-string limit.
        limit: usize,
        /// The largest delivered secrets.
        largest: Vec<(String, usize)>,
    },
    /// Arguments and environment together exceed `ARG_MAX`.
    #[error(
        "the environment and arguments total {total} bytes, over the limit of {limit} bytes for exec (ARG_MAX)"
    )]
    TooLarge {
        /// Bytes needed.
        total: usize,
        /// `sysconf(_SC_ARG_MAX)`.
        limit: usize,
        /// The largest delivered secrets.
        largest: Vec<(String, usize)>,
    },
    /// A template's `NAME_FILE` (`--template SRC:memfd:NAME`) is also a
    /// secret's variable.
    #[error("{name} would name both a secret and the memfd of --template …:memfd:{template}")]
    Taken {
        /// The variable.
        name: String,
        /// The template's NAME.
        template: String,
    },
    /// Secrets whose delivered names decide which program runs or what it
    /// loads ([`STEERING`](super::steering::STEERING)), not allowed by
    /// `--allow-env-name`.
    #[error(
        "secrets would decide which program runs or what code it loads: {}",
        .0.join(", ")
    )]
    Steering(Vec<String>),
    /// A secret value with a NUL byte would be cut short by `execve`.
    #[error(
        "the value of secret {0:?} contains a NUL byte, which an environment variable cannot carry"
    )]
    NulInValue(String),
}

impl Failure for EnvError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::Config
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NulInValue(_) => {
                "deliver this secret as a file (--files-dir DIR --no-env), which keeps every byte"
                    .to_owned()
            }
            Self::Taken { .. } => {
                "give the template another NAME, or deliver the secret under another name (--map)"
                    .to_owned()
            }
            Self::Steering(names) => format!(
                "a secret must not choose the program's code; if the program is meant to get \
                 these, allow each by name with --allow-env-name {} \
                 (SVID_EXEC_ALLOW_ENV_NAMES, comma-separated); else rename them in Infisical, \
                 leave them out with --env-prefix, or deliver them as files (--files-dir with \
                 --no-env); see docs/security.md",
                names.join(" --allow-env-name ")
            ),
            Self::InvalidName { .. } => {
                "rename the secret in Infisical (a name cannot be empty or contain `=` or NUL), \
                 or deliver it as a file (--files-dir --no-env)"
                    .to_owned()
            }
            Self::StringTooLong { largest, .. } | Self::TooLarge { largest, .. } => {
                let list: Vec<String> = largest
                    .iter()
                    .map(|(name, size)| format!("{name} ({size} bytes)"))
                    .collect();
                format!(
                    "largest secrets: {}; deliver them as files instead (--files-dir DIR, with --no-env or --env-file-refs)",
                    list.join(", ")
                )
            }
        })
    }
}

/// The kernel's exec limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    /// `sysconf(_SC_ARG_MAX)`: argv + envp strings and pointers.
    pub arg_max: usize,
    /// `MAX_ARG_STRLEN`: one string, NUL included.
    pub max_strlen: usize,
}

impl ExecLimits {
    /// The running system's limits. `sysconf(_SC_ARG_MAX)` is a quarter of
    /// the stack rlimit, but the kernel also caps it at 3/4 of `_STK_LIM`
    /// (6 MiB) and never goes below 128 KiB (`bprm_stack_limits` in fs/exec.c).
    pub fn current() -> Self {
        const KERNEL_CAP: usize = 6 * 1024 * 1024;
        const KERNEL_FLOOR: usize = 128 * 1024;
        let arg_max = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
            .ok()
            .flatten()
            .and_then(|v| usize::try_from(v).ok())
            .map_or(KERNEL_FLOOR, |v| v.clamp(KERNEL_FLOOR, KERNEL_CAP));
        Self {
            arg_max,
            max_strlen: MAX_ARG_STRLEN,
        }
    }
}

impl<'a> EnvPlan<'a> {
    /// Plans the child's environment from the inherited variables and the secrets.
    pub fn build(
        inherited: impl IntoIterator<Item = (OsString, OsString)>,
        secrets: &'a SecretSet,
        options: &EnvOptions,
        source: EnvSource<'_>,
    ) -> Result<Self, EnvError> {
        let mut planned: Vec<(String, Value<'a>)> = Vec::with_capacity(secrets.len());
        let mut warnings = Vec::new();
        let mut not_portable = Vec::new();
        for (index, (key, value)) in secrets.iter().enumerate() {
            // Pushed, not `format!`ted: 10,000 names are a measurable share of a launch.
            let name = |suffix: &str| {
                let mut name =
                    String::with_capacity(options.prefix.len() + key.len() + suffix.len());
                name.push_str(&options.prefix);
                name.push_str(key);
                name.push_str(suffix);
                name
            };
            let (name, value) = match source {
                EnvSource::Values => (name(""), Value::Secret(value)),
                EnvSource::FileRefs(dir) => (
                    name("_FILE"),
                    Value::FilePath(crate::deliver::files::key_path(dir, key)),
                ),
                EnvSource::Memfd(layout) => (name("_FILE"), Value::FilePath(layout.path(index))),
            };
            if let Some(reason) = name_problem(&name) {
                return Err(EnvError::InvalidName { name, reason });
            }
            if value.as_bytes().contains(&0) {
                return Err(EnvError::NulInValue(name));
            }
            if !is_portable_name(&name) {
                not_portable.push(key);
            }
            planned.push((name, value));
        }
        if !not_portable.is_empty() {
            warnings.push(format!(
                "{} not portable shell variable names: {}; delivered anyway, but a shell \
                 (sh -c, entrypoint scripts) will not see them; to rename them: --map {}",
                if not_portable.len() == 1 {
                    "this secret's name is"
                } else {
                    "these secrets' names are"
                },
                not_portable.join(", "),
                crate::deliver::names::suggest_map(&not_portable)
            ));
        }
        let delivered: Vec<String> = planned.iter().map(|(n, _)| n.clone()).collect();

        let mut vars: BTreeMap<OsString, Value<'a>> = inherited
            .into_iter()
            .filter(|(name, _)| !is_bootstrap(name))
            .map(|(name, value)| (name, Value::Inherited(value)))
            .collect();
        let mut shadowed = Vec::new();
        let mut steering = Vec::new();
        let mut from_secrets = Vec::with_capacity(planned.len());
        for (name, value) in planned {
            if !options.override_inherited && vars.contains_key(OsStr::new(&name)) {
                shadowed.push(name);
                continue;
            }
            if is_steering(&name) && !options.allowed_names.contains(&name) {
                steering.push(name.clone());
            }
            from_secrets.push((OsString::from(name), value));
        }
        if !steering.is_empty() {
            return Err(EnvError::Steering(steering));
        }
        // Built in bulk from (nearly) sorted names, then merged (a secret
        // replaces the inherited variable of its name), instead of one insert
        // at a time, each comparing long shared prefixes at every level.
        let mut from_secrets: BTreeMap<OsString, Value<'a>> = from_secrets.into_iter().collect();
        vars.append(&mut from_secrets);
        Ok(Self {
            vars,
            delivered,
            shadowed,
            warnings,
        })
    }

    /// The inherited environment minus the bootstrap variables, no secrets
    /// (`--no-env`: secrets go to files only).
    pub fn inherited_only(inherited: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let vars = inherited
            .into_iter()
            .filter(|(name, _)| !is_bootstrap(name))
            .map(|(name, value)| (name, Value::Inherited(value)))
            .collect();
        Self {
            vars,
            delivered: Vec::new(),
            shadowed: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Adds `<PREFIX>NAME_FILE=<path>` for each `(NAME, path)`: a rendered
    /// template's memfd (`--template SRC:memfd:NAME`), by the secrets' rules
    /// (`--env-prefix`, `--no-override`). A name a secret already has is
    /// refused: the program would get one of the two.
    pub fn add_file_refs(
        &mut self,
        refs: impl IntoIterator<Item = (String, PathBuf)>,
        options: &EnvOptions,
    ) -> Result<(), EnvError> {
        for (template, path) in refs {
            let name = format!("{}{template}_FILE", options.prefix);
            if self.delivered.contains(&name) || self.shadowed.contains(&name) {
                return Err(EnvError::Taken { name, template });
            }
            let key = OsString::from(&name);
            if !options.override_inherited && self.vars.contains_key(&key) {
                self.shadowed.push(name);
                continue;
            }
            self.vars.insert(key, Value::FilePath(path));
            self.delivered.push(name);
        }
        Ok(())
    }

    /// Warnings to log (non-portable names).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Secret-derived names, after prefix.
    pub fn delivered_names(&self) -> &[String] {
        &self.delivered
    }

    /// Secret names not delivered because an inherited variable was kept.
    pub fn shadowed_names(&self) -> &[String] {
        &self.shadowed
    }

    /// All names of the child's environment.
    pub fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.vars.keys().map(OsString::as_os_str)
    }

    /// The value the child will see for `name` (tests and diagnostics; careful:
    /// this exposes secret bytes).
    pub fn value_bytes(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(OsStr::new(name)).map(Value::as_bytes)
    }

    /// Bytes `NAME=value\0` for each variable.
    fn sizes(&self) -> impl Iterator<Item = (&OsStr, usize)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.as_os_str(), n.len() + 1 + v.as_bytes().len() + 1))
    }

    /// Total environment size in bytes as `execve` counts it (strings with NULs
    /// plus one pointer each).
    pub fn exec_size(&self) -> usize {
        self.sizes()
            .map(|(_, s)| s + std::mem::size_of::<usize>())
            .sum()
    }

    fn largest_secrets(&self) -> Vec<(String, usize)> {
        let mut sizes: Vec<(String, usize)> = self
            .vars
            .iter()
            .filter(|(_, v)| !matches!(v, Value::Inherited(_)))
            .map(|(n, v)| (n.to_string_lossy().into_owned(), v.as_bytes().len()))
            .collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sizes.truncate(5);
        sizes
    }

    /// Refuses an environment (with `argv`) the kernel would reject with `E2BIG`.
    pub fn check_size(&self, argv: &[OsString], limits: ExecLimits) -> Result<(), EnvError> {
        let ptr = std::mem::size_of::<usize>();
        for (i, arg) in argv.iter().enumerate() {
            let size = arg.len() + 1;
            if size > limits.max_strlen {
                return Err(EnvError::StringTooLong {
                    name: format!("argument {i}"),
                    size,
                    limit: limits.max_strlen,
                    largest: self.largest_secrets(),
                });
            }
        }
        for (name, size) in self.sizes() {
            if size > limits.max_strlen {
                return Err(EnvError::StringTooLong {
                    name: name.to_string_lossy().into_owned(),
                    size,
                    limit: limits.max_strlen,
                    largest: self.largest_secrets(),
                });
            }
        }
        let argv_bytes: usize = argv.iter().map(|a| a.len() + 1 + ptr).sum();
        // argv and envp are each NULL-terminated.
        let total = argv_bytes + self.exec_size() + 2 * ptr;
        if total > limits.arg_max {
            return Err(EnvError::TooLarge {
                total,
                limit: limits.arg_max,
                largest: self.largest_secrets(),
            });
        }
        Ok(())
    }

    /// Logs what the program should know about its environment: names that a
    /// shell will not see, and secrets kept out by `--no-override`.
    pub fn log(&self) {
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
        if !self.shadowed.is_empty() {
            tracing::info!(
                names = ?self.shadowed,
                "--no-override: kept the inherited values of these variables"
            );
        }
    }

    /// Leaves `names` out of the child's environment unless a secret was
    /// delivered under that name: under `--watch` the supervisor keeps the
    /// service manager's variables (`NOTIFY_SOCKET`, …) to itself.
    pub fn withhold(&mut self, names: &[&str]) {
        for name in names {
            if !self.delivered.iter().any(|d| d == name) {
                self.vars.remove(OsStr::new(name));
            }
        }
    }

    /// Builds the `NAME=value\0` strings for `execve`, at the last moment; the
    /// buffers are zeroed when dropped (e.g. when exec fails).
    pub fn to_envp(&self) -> Envp {
        let strings = self
            .vars
            .iter()
            .map(|(name, value)| {
                let value = value.as_bytes();
                let mut s = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 2));
                s.extend_from_slice(name.as_bytes());
                s.push(b'=');
                s.extend_from_slice(value);
                s.push(0);
                s
            })
            .collect();
        Envp { strings }
    }
}

/// `NAME=value\0` strings, zeroed on drop: the one copy of the child's
/// environment that `execve` reads (exec mode and the supervisor's spawn
/// alike; `std::process::Command` would keep copies of its own, never zeroed).
#[derive(Default)]
pub struct Envp {
    strings: Vec<Zeroizing<Vec<u8>>>,
}

impl Envp {
    /// The strings as C strings. Inherited values cannot contain NUL (they came
    /// from a C environment) and secret values with NUL are refused earlier, so
    /// a string with an inner NUL is skipped rather than cut.
    pub fn as_cstrs(&self) -> Vec<&CStr> {
        self.strings
            .iter()
            .filter_map(|s| CStr::from_bytes_with_nul(s).ok())
            .collect()
    }
}

impl fmt::Debug for Envp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Envp([{} variables, redacted])", self.strings.len())
    }
}

/// Inherited variables, as given to a child: `std::env::vars_os()` (read, never written).
pub fn inherited() -> Vec<(OsString, OsString)> {
    std::env::vars_os().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> SecretSet {
        SecretSet::from_pairs(pairs)
    }

    fn inherited(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn opts(prefix: &str, override_inherited: bool) -> EnvOptions {
        EnvOptions {
            prefix: prefix.to_owned(),
            override_inherited,
            ..EnvOptions::default()
        }
    }

    fn value<'p>(plan: &'p EnvPlan<'_>, name: &str) -> Option<&'p str> {
        plan.value_bytes(name)
            .map(|b| std::str::from_utf8(b).unwrap())
    }

    #[test]
    fn template_memfds_are_named_by_the_secrets_rules_and_never_twice() {
        let set = secrets(&[("DB", "secret")]);
        let path = |n: &str| PathBuf::from(format!("/proc/self/fd/{n}"));
        let mut plan = EnvPlan::build(
            inherited(&[("APP_CONF_FILE", "kept"), ("APP_TLS_FILE", "old")]),
            &set,
            &opts("APP_", false),
            EnvSource::Values,
        )
        .unwrap();
        plan.add_file_refs(
            [
                ("CONF".to_owned(), path("3")),
                ("KEY".to_owned(), path("4")),
            ],
            &opts("APP_", false),
        )
        .unwrap();
        // --no-override keeps an inherited variable, as for a secret.
        assert_eq!(value(&plan, "APP_CONF_FILE"), Some("kept"));
        assert_eq!(value(&plan, "APP_KEY_FILE"), Some("/proc/self/fd/4"));
        assert_eq!(plan.delivered_names(), ["APP_DB", "APP_KEY_FILE"]);
        assert_eq!(plan.shadowed_names(), ["APP_CONF_FILE"]);
        // A secret that would be the same variable: refused, naming both.
        let clash = secrets(&[("CONF_FILE", "x")]);
        let mut plan =
            EnvPlan::build(inherited(&[]), &clash, &opts("", true), EnvSource::Values).unwrap();
        let err = plan
            .add_file_refs([("CONF".to_owned(), path("3"))], &opts("", true))
            .unwrap_err();
        assert!(
            matches!(&err, EnvError::Taken { name, template } if name == "CONF_FILE" && template == "CONF")
        );
        assert!(err.hint().unwrap().contains("--map"));
    }

    #[test]
    fn secrets_override_inherited_by_default() {
        let set = secrets(&[("DB", "secret"), ("NEW", "n")]);
        let plan = EnvPlan::build(
            inherited(&[("DB", "old"), ("HOME", "/root")]),
            &set,
            &opts("", true),
            EnvSource::Values,
        )
        .unwrap();
        assert_eq!(value(&plan, "DB"), Some("secret"));
        assert_eq!(value(&plan, "NEW"), Some("n"));
        assert_eq!(value(&plan, "HOME"), Some("/root"));
        assert!(plan.shadowed_names().is_empty());
    }

    #[test]
    fn no_override_keeps_inherited_values() {
        let set = secrets(&[("DB", "secret")]);
        let plan = EnvPlan::build(
            inherited(&[("DB", "old")]),
            &set,
            &opts("", false),
            EnvSource::Values,
        )
        .unwrap();
        assert_eq!(value(&plan, "DB"), Some("old"));
        assert_eq!(plan.shadowed_names(), ["DB"]);
    }

    #[test]
    fn prefix_applies_to_every_secret_name_only() {
        let set = secrets(&[("DB", "s")]);
        let plan = EnvPlan::build(
            inherited(&[("DB", "old")]),
            &set,
            &opts("APP_", true),
            EnvSource::Values,
        )
        .unwrap();
        assert_eq!(value(&plan, "APP_DB"), Some("s"));
        assert_eq!(value(&plan, "DB"), Some("old"));
        assert_eq!(plan.delivered_names(), ["APP_DB"]);
    }

    #[test]
    fn bootstrap_variables_are_removed_unless_delivered_as_secrets() {
        let set = secrets(&[("INFISICAL_API_URL", "from-secret")]);
        let plan = EnvPlan::build(
            inherited(&[
                ("INFISICAL_API_URL", "boot"),
                ("INFISICAL_MACHINE_IDENTITY_ID", "id"),
                ("SVID_EXEC_LOG_LEVEL", "debug"),
                ("SPIFFE_ENDPOINT_SOCKET", "unix:///x"),
                ("SPIFFE_OTHER", "kept"),
                ("PATH", "/bin"),
            ]),
            &set,
            &opts("", false),
            EnvSource::Values,
        )
        .unwrap();
        let names: Vec<_> = plan
            .names()
            .map(|n| n.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["INFISICAL_API_URL", "PATH", "SPIFFE_OTHER"]);
        assert_eq!(value(&plan, "INFISICAL_API_URL"), Some("from-secret"));
    }

    #[test]
    fn without_env_delivery_only_the_bootstrap_variables_are_removed() {
        let plan = EnvPlan::inherited_only(inherited(&[
            ("HOME", "/root"),
            ("SVID_EXEC_FILES_DIR", "/run/s"),
            ("INFISICAL_PROJECT_ID", "p"),
        ]));
        let names: Vec<_> = plan
            .names()
            .map(|n| n.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["HOME"]);
        assert!(plan.delivered_names().is_empty());
    }

    #[test]
    fn withheld_names_leave_unless_delivered_as_secrets() {
        let set = secrets(&[("WATCHDOG_USEC", "from-secret")]);
        let mut plan = EnvPlan::build(
            inherited(&[
                ("NOTIFY_SOCKET", "/run/notify"),
                ("WATCHDOG_USEC", "1000"),
                ("WATCHDOG_PID", "1"),
                ("HOME", "/root"),
            ]),
            &set,
            &opts("", true),
            EnvSource::Values,
        )
        .unwrap();
        plan.withhold(&["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]);
        let names: Vec<_> = plan
            .names()
            .map(|n| n.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["HOME", "WATCHDOG_USEC"]);
        assert_eq!(value(&plan, "WATCHDOG_USEC"), Some("from-secret"));
    }

    #[test]
    fn values_are_byte_exact() {
        let pem = "-----BEGIN KEY-----\nAAA=\n-----END KEY-----\n";
        let set = secrets(&[("PEM", pem), ("U", "héllo ✓ \"q\" 'x' a=b"), ("EMPTY", "")]);
        let plan = EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap();
        let envp = plan.to_envp();
        let strings: Vec<&[u8]> = envp.as_cstrs().iter().map(|c| c.to_bytes()).collect();
        assert!(strings.contains(&format!("PEM={pem}").as_bytes()));
        assert!(strings.contains(&"U=héllo ✓ \"q\" 'x' a=b".as_bytes()));
        assert!(strings.contains(&b"EMPTY=".as_slice()));
    }

    #[test]
    fn names_execve_cannot_carry_are_refused_and_odd_names_warned() {
        for bad in ["", "A=B", "A\0B"] {
            let set = secrets(&[(bad, "v")]);
            let err =
                EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap_err();
            assert!(matches!(err, EnvError::InvalidName { .. }), "{bad:?}");
            assert_eq!(err.exit_class(), ExitClass::Config);
        }
        let set = secrets(&[("my-key", "v"), ("1ST", "v"), ("OK_1", "v")]);
        let plan = EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap();
        assert_eq!(
            plan.warnings(),
            [
                "these secrets' names are not portable shell variable names: 1ST, my-key; \
              delivered anyway, but a shell (sh -c, entrypoint scripts) will not see them; \
              to rename them: --map 1ST=_1ST,my-key=MY_KEY"
            ],
            "one warning names them all and how to rename them"
        );
        assert_eq!(value(&plan, "my-key"), Some("v"));
    }

    #[test]
    fn nul_in_a_secret_value_is_refused() {
        let set = secrets(&[("A", "x\0y")]);
        let err = EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap_err();
        assert!(matches!(err, EnvError::NulInValue(ref n) if n == "A"));
        assert_eq!(err.exit_class(), ExitClass::Config);
    }

    #[test]
    fn file_refs_deliver_paths_not_values() {
        let set = secrets(&[("DB", "secret")]);
        let plan = EnvPlan::build(
            inherited(&[("DB", "old")]),
            &set,
            &opts("", true),
            EnvSource::FileRefs(Path::new("/run/s")),
        )
        .unwrap();
        assert_eq!(value(&plan, "DB_FILE"), Some("/run/s/DB"));
        assert_eq!(value(&plan, "DB"), Some("old"));
    }

    #[test]
    fn one_string_over_max_arg_strlen_is_refused_naming_the_largest() {
        let big = "x".repeat(MAX_ARG_STRLEN);
        let set = secrets(&[("BIG", &big), ("SMALL", "s")]);
        let plan = EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap();
        let limits = ExecLimits {
            arg_max: usize::MAX,
            max_strlen: MAX_ARG_STRLEN,
        };
        let err = plan.check_size(&["prog".into()], limits).unwrap_err();
        assert!(
            matches!(err, EnvError::StringTooLong { ref name, .. } if name == "BIG"),
            "{err}"
        );
        let hint = err.hint().unwrap();
        assert!(
            hint.contains(&format!("BIG ({MAX_ARG_STRLEN} bytes)")),
            "{hint}"
        );
        assert!(hint.contains("--files-dir"));
        assert!(!err.to_string().contains("xxxx"));
    }

    #[test]
    fn total_over_arg_max_is_refused_and_a_fitting_one_accepted() {
        let set = secrets(&[("A", &"a".repeat(600)), ("B", &"b".repeat(500))]);
        let plan = EnvPlan::build(
            inherited(&[("HOME", "/")]),
            &set,
            &opts("", true),
            EnvSource::Values,
        )
        .unwrap();
        let argv: Vec<OsString> = vec!["prog".into()];
        let needed = plan.exec_size() + "prog".len() + 1 + 3 * std::mem::size_of::<usize>();
        let fits = ExecLimits {
            arg_max: needed,
            max_strlen: MAX_ARG_STRLEN,
        };
        plan.check_size(&argv, fits).unwrap();
        let tight = ExecLimits {
            arg_max: needed - 1,
            ..fits
        };
        match plan.check_size(&argv, tight).unwrap_err() {
            EnvError::TooLarge { largest, total, .. } => {
                assert_eq!(total, needed);
                assert_eq!(largest, [("A".to_owned(), 600), ("B".to_owned(), 500)]);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn names_that_steer_the_program_are_refused_all_at_once_unless_allowed() {
        let set = secrets(&[
            ("PATH", "/tmp/evil"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("BASH_FUNC_true%%", "() { id; }"),
            ("NODE_OPTIONS", "--require /tmp/evil.js"),
            ("DB", "fine"),
        ]);
        let err = EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
        let EnvError::Steering(ref names) = err else {
            panic!("{err}");
        };
        assert_eq!(
            names,
            &["BASH_FUNC_true%%", "LD_PRELOAD", "NODE_OPTIONS", "PATH"]
        );
        assert!(err.hint().unwrap().contains("--allow-env-name LD_PRELOAD"));
        assert!(!err.to_string().contains("evil"), "no value in the message");

        let mut allowing = opts("", true);
        allowing.allowed_names = ["PATH", "LD_PRELOAD", "BASH_FUNC_true%%", "NODE_OPTIONS"]
            .map(str::to_owned)
            .into();
        let plan = EnvPlan::build(Vec::new(), &set, &allowing, EnvSource::Values).unwrap();
        assert_eq!(value(&plan, "PATH"), Some("/tmp/evil"));
    }

    #[test]
    fn the_rule_applies_to_the_delivered_name() {
        // A prefix makes the names harmless, or harmful.
        let set = secrets(&[("PATH", "x"), ("PRELOAD", "y")]);
        let plan =
            EnvPlan::build(Vec::new(), &set, &opts("APP_", true), EnvSource::Values).unwrap();
        assert_eq!(value(&plan, "APP_PATH"), Some("x"));
        let err =
            EnvPlan::build(Vec::new(), &set, &opts("LD_", true), EnvSource::Values).unwrap_err();
        assert!(matches!(err, EnvError::Steering(ref n) if n == &["LD_PATH", "LD_PRELOAD"]));
        // A secret kept out by --no-override is not delivered, so not refused.
        let set = secrets(&[("PATH", "/tmp/evil")]);
        let plan = EnvPlan::build(
            inherited(&[("PATH", "/usr/bin")]),
            &set,
            &opts("", false),
            EnvSource::Values,
        )
        .unwrap();
        assert_eq!(value(&plan, "PATH"), Some("/usr/bin"));
        // Inherited variables are the user's own: never refused.
        let none = SecretSet::new();
        let plan = EnvPlan::build(
            inherited(&[("LD_LIBRARY_PATH", "/opt/lib")]),
            &none,
            &opts("", true),
            EnvSource::Values,
        )
        .unwrap();
        assert_eq!(value(&plan, "LD_LIBRARY_PATH"), Some("/opt/lib"));
    }

    #[test]
    fn debug_never_shows_values() {
        let set = secrets(&[("DB", "hunter2")]);
        let plan = EnvPlan::build(Vec::new(), &set, &opts("", true), EnvSource::Values).unwrap();
        let shown = format!("{plan:?} {:?}", plan.to_envp());
        assert!(shown.contains("DB") && !shown.contains("hunter2"));
    }
}
