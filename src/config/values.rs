//! The value parsers of the configuration: durations, lists, IDs, secret
//! paths, renames, file targets, modes and owners, signals and the
//! supervisor's actions. Each checks one value; its message starts with the
//! option's label (the flag, or the variable it came from: `Origins::label`).

use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::{Gid, Uid};

use super::problems::Problem;
use crate::deliver::template::TemplateSpec;
use crate::launch::signals::Signal;
use crate::launch::supervise::{ForwardTo, OnChange};

/// A trimmed value, `None` when absent or blank.
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A positive duration (`90s`, `5m`, `1h`).
pub(super) fn duration(label: &str, raw: &str) -> Result<Duration, Problem> {
    let value = humantime::parse_duration(raw.trim()).map_err(|e| {
        Problem::new(
            format!("{label}: {raw:?} is not a duration ({e})"),
            "use a humantime duration such as 90s, 5m or 1h",
        )
    })?;
    if value.is_zero() {
        return Err(Problem::new(
            format!("{label} must be longer than zero"),
            "use a humantime duration such as 90s, 5m or 1h",
        ));
    }
    Ok(value)
}

/// Trims a comma-separated list; an empty entry is a mistake (`a,,b`).
pub(super) fn list(label: &str, values: &[String]) -> Result<Vec<String>, Problem> {
    values
        .iter()
        .map(|v| {
            let v = v.trim().to_owned();
            if v.is_empty() {
                Err(Problem::new(
                    format!("{label} has an empty entry"),
                    "remove the empty item from the list (check for `,,` or a trailing comma)",
                ))
            } else {
                Ok(v)
            }
        })
        .collect()
}

/// Whether `raw` is a UUID (`8-4-4-4-12` hex digits, any case): the form of
/// every machine identity and project ID Infisical issues.
pub(super) fn is_uuid(raw: &str) -> bool {
    let groups: Vec<&str> = raw.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `--map` entries: `SRC=DST`, both non-empty; the last `=` separates them,
/// so a key that contains `=` (which no variable can carry) can be renamed.
pub(super) fn renames(label: &str, values: &[String]) -> Result<Vec<(String, String)>, Problem> {
    list(label, values)?
        .into_iter()
        .map(|entry| match entry.rsplit_once('=') {
            Some((src, dst)) if !src.trim().is_empty() && !dst.trim().is_empty() => {
                Ok((src.trim().to_owned(), dst.trim().to_owned()))
            }
            _ => Err(Problem::new(
                format!("{label}: {entry:?} is not SRC=DST"),
                "give the key as named in Infisical, `=`, and the name to deliver it under, \
                 e.g. --map db-password=DB_PASSWORD",
            )),
        })
        .collect()
}

/// `a/b/` -> `/a/b`; `//a//b` -> `/a/b`; empty -> error; `.` and `..` segments refused.
pub(super) fn normalise_secret_path(label: &str, raw: &str) -> Result<String, Problem> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Problem::new(
            format!("{label} is empty"),
            "use `/` for the root folder, or a folder such as /app/db",
        ));
    }
    let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(Problem::new(
            format!("{label}: {raw:?} contains `.` or `..`"),
            "give the folder as an absolute path, e.g. /app/db",
        ));
    }
    Ok(format!("/{}", segments.join("/")))
}

/// A file target, made absolute (against the current directory) so that
/// `KEY_FILE` paths given to the child and log lines are unambiguous.
pub(super) fn non_empty_path(
    label: &str,
    path: Option<PathBuf>,
) -> Result<Option<PathBuf>, Problem> {
    match path {
        Some(p) if p.as_os_str().is_empty() => Err(Problem::new(
            format!("{label} is empty"),
            "give a path, or unset its environment variable",
        )),
        Some(p) => std::path::absolute(&p).map(Some).map_err(|e| {
            Problem::new(
                format!("{label}: {}: cannot resolve the path ({e})", p.display()),
                "give an absolute path",
            )
        }),
        None => Ok(None),
    }
}

/// A file that must exist and be readable now (`--ca-cert`): checked with
/// the other values so a wrong path is reported with them, before any
/// connection. Its content is the client's to parse.
pub(super) fn readable_file(label: &str, path: &std::path::Path) -> Result<(), Problem> {
    let hint = "give the path of a readable PEM file (check the volume or secret it comes from)";
    let problem = |what: String| Problem::new(format!("{label}: {} {what}", path.display()), hint);
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(problem("does not exist".into())),
        Err(e) => Err(problem(format!("cannot be read ({e})"))),
        Ok(meta) if meta.is_dir() => Err(problem("is a directory, not a file".into())),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| problem(format!("cannot be read ({e})"))),
    }
}

/// `--file-mode`: octal permission bits within `0777`.
pub(super) fn file_mode(label: &str, raw: &str) -> Result<u32, Problem> {
    octal_mode(label, raw)
}

/// Octal permission bits within `0777` (`0400`, `440`, `0o400`); the
/// message starts with `label`.
fn octal_mode(label: &str, raw: &str) -> Result<u32, Problem> {
    let digits = raw.trim();
    let digits = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
        .unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(Problem::new(
            format!("{label}: {raw:?} is not an octal mode within 0777"),
            "use an octal permission such as 0400 or 0440",
        )),
    }
}

/// `--template SRC:DEST[:MODE]`: SRC up to the first `:`; a last part made
/// of digits only is MODE (octal), anything else belongs to DEST. Both paths
/// are made absolute, like the other file targets.
pub(super) fn template_spec(label: &str, raw: &str) -> Result<TemplateSpec, Problem> {
    let bad = |why: &str| {
        Problem::new(
            format!("{label}: {raw:?}: {why}"),
            "write SRC:DEST or SRC:DEST:MODE, e.g. /etc/app/db.conf.j2:/run/app/db.conf:0440, \
             or SRC:memfd:NAME for a sealed memfd (SVID_EXEC_TEMPLATES: comma-separated)",
        )
    };
    let (src, rest) = raw
        .trim()
        .split_once(':')
        .ok_or_else(|| bad("no `:` between SRC and DEST"))?;
    if src.is_empty() {
        return Err(bad("SRC is empty"));
    }
    let absolute =
        |p: &str| std::path::absolute(p).map_err(|e| bad(&format!("cannot resolve {p} ({e})")));
    // A rendering delivered as a sealed memfd, named by NAME_FILE: NAME is
    // a variable name, and a sealed memfd has no mode.
    if let Some(name) = rest.strip_prefix("memfd:") {
        if !crate::deliver::env::is_portable_name(name) {
            return Err(bad(
                "NAME in memfd:NAME must be a variable name ([A-Za-z_][A-Za-z0-9_]*; no MODE: \
                 the memfd is sealed read-only)",
            ));
        }
        return Ok(TemplateSpec {
            src: absolute(src)?,
            dest: PathBuf::from(rest),
            mode: None,
            memfd: Some(name.to_owned()),
        });
    }
    let (dest, mode) = match rest.rsplit_once(':') {
        Some((dest, mode))
            if !mode.is_empty()
                && mode
                    .trim_start_matches("0o")
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            (dest, Some(octal_mode(&format!("{label} MODE"), mode)?))
        }
        _ => (rest, None),
    };
    if dest.is_empty() {
        return Err(bad("DEST is empty"));
    }
    Ok(TemplateSpec {
        src: absolute(src)?,
        dest: absolute(dest)?,
        mode,
        memfd: None,
    })
}

/// `--file-owner`: `UID[:GID]`, numeric.
pub(super) fn file_owner(label: &str, raw: &str) -> Result<(Uid, Option<Gid>), Problem> {
    let bad = || {
        Problem::new(
            format!("{label}: {raw:?} is not UID[:GID]"),
            "give numeric IDs, e.g. 1000 or 1000:1000",
        )
    };
    let (uid, gid) = match raw.trim().split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (raw.trim(), None),
    };
    let uid = uid.parse::<u32>().map_err(|_| bad())?;
    let gid = gid
        .map(|g| g.parse::<u32>().map_err(|_| bad()))
        .transpose()?;
    Ok((Uid::from_raw(uid), gid.map(Gid::from_raw)))
}

/// `TERM`, `SIGTERM`, `term`, `15` or a real-time signal such as `RTMIN+3`:
/// every signal the supervisor can send.
pub fn parse_signal(raw: &str) -> Option<Signal> {
    raw.parse().ok()
}

/// A signal flag's value, or the error naming the flag.
pub(super) fn signal(label: &str, raw: &str) -> Result<Signal, Problem> {
    parse_signal(raw).ok_or_else(|| {
        Problem::new(
            format!("{label}: {raw:?} is not a signal"),
            "use a name such as TERM, SIGTERM, HUP, RTMIN+3 or a number such as 15",
        )
    })
}

/// `--on-change`: `restart`, `signal:<SIG>` or `none` (case-insensitive).
pub fn parse_on_change(label: &str, raw: &str) -> Result<OnChange, Problem> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "restart" => Ok(OnChange::Restart),
        "none" => Ok(OnChange::None),
        other => match other.strip_prefix("signal:") {
            Some(sig) => Ok(OnChange::Signal(signal(&format!("{label} signal"), sig)?)),
            None => Err(Problem::new(
                format!("{label}: {raw:?} is not an action"),
                "use restart, signal:<SIG> (e.g. signal:HUP) or none",
            )),
        },
    }
}

/// `--forward-to`: `group` or `child` (case-insensitive).
pub fn parse_forward_to(label: &str, raw: &str) -> Result<ForwardTo, Problem> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "child" => Ok(ForwardTo::Child),
        "group" => Ok(ForwardTo::Group),
        _ => Err(Problem::new(
            format!("{label}: {raw:?} is not a target"),
            "use group (the child's process group) or child",
        )),
    }
}
