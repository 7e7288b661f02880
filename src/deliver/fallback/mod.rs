//! `--fallback-dir`: the last good secret set, kept so that a restart during an
//! Infisical outage can still start the program, without weakening identity.
//!
//! After every successful fetch the delivered set is stored in DIR (a private
//! directory on a memory-backed filesystem), bound to everything that decided
//! what was fetched (API URL, identity, auth method, organization, project,
//! environment, paths, fetch flags, tags, `--require`, the selection) and to
//! the SPIFFE ID of the JWT-SVID that logged in, with the time of the fetch.
//! [`decide`] says when it may be used: only for an outage (the exit-69
//! class), only when the Workload API has just issued a JWT-SVID for the same
//! SPIFFE ID, only for the same binding (the file is found by its digest), and
//! only while younger than `--fallback-max-age`. A refusal deletes every set
//! this identity has in DIR.
//!
//! # The file
//!
//! `DIR/set-<identity>-<binding>`: `<identity>` is a digest of the API URL and
//! the identity (what a refusal deletes), `<binding>` the digest of the whole
//! binding with the SPIFFE ID, so several bindings live side by side. Mode
//! 0600 in a 0700 directory of ours; written to a temporary name, synced and
//! renamed over the old one, so a reader sees a whole set or none. Content:
//!
//! ```text
//! svid-exec fallback v1\n
//! binding <64 hex digits>\n
//! fetched-at <unix seconds>\n
//! count <N>\n
//! then N times: <name bytes> <value bytes>\n<name><value>\n
//! ```
//!
//! Values are stored as their bytes, so they come back byte for byte.
//!
//! Not encrypted: a key would have to be at hand when Infisical is not, so it
//! would sit beside the data or with the same user, who can read the
//! delivered secrets anyway; the protection is the file's mode in a private
//! directory on a memory-backed filesystem, as for the secret files
//! themselves (`docs/fallback.md` says what that does and does not cover).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::error::ExitClass;

mod format;
mod store;

pub use store::{Entry, FallbackError, Store};

/// `--fallback-max-age` when not given.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A fetch time at most this far in the future is taken as "now" (the clock
/// was set back a little); beyond it, the entry's age cannot be known.
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// What `--fallback-dir` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackOptions {
    /// The directory (created 0700 if missing; must be ours).
    pub dir: PathBuf,
    /// Sets older than this are not used (`--fallback-max-age`).
    pub max_age: Duration,
    /// Accept a disk-backed filesystem (`--allow-non-tmpfs`).
    pub allow_non_tmpfs: bool,
    /// What a stored set is bound to, besides the SPIFFE ID.
    pub binding: Binding,
}

/// Everything that decided what was fetched and delivered. A stored set is
/// used only when every field is the same (and the SPIFFE ID is too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// The API URL, normalised.
    pub api_url: String,
    /// The machine identity.
    pub identity_id: String,
    /// `oidc-auth`, `jwt-auth` or `spiffe-auth`.
    pub auth_method: String,
    /// The sub-organization, if any.
    pub organization: Option<String>,
    /// The project as configured (`id:…` or `slug:…`: a slug cannot be
    /// resolved while the server is down).
    pub project: String,
    /// The environment slug.
    pub environment: String,
    /// The paths, in order.
    pub paths: Vec<String>,
    /// `--recursive`, imports (`!--no-imports`), expansion (`!--no-expand`).
    pub flags: [bool; 3],
    /// `--tag`.
    pub tags: Vec<String>,
    /// `--require`.
    pub require: Vec<String>,
    /// The selection (`--only`, `--map`), one canonical line per rule.
    pub selection: Vec<String>,
}

impl Binding {
    /// The digest of the API URL and the identity: the part of a file's name
    /// that a refusal deletes by.
    pub fn identity_key(&self) -> String {
        let mut hasher = Sha256::new();
        for field in [&self.api_url, &self.identity_id] {
            update_field(&mut hasher, field.as_bytes());
        }
        hex(&hasher.finalize()[..16])
    }

    /// The digest of every field and `spiffe_id`.
    pub fn digest(&self, spiffe_id: &str) -> String {
        let mut hasher = Sha256::new();
        update_field(&mut hasher, format::MAGIC);
        for field in [
            &self.api_url,
            &self.identity_id,
            &self.auth_method,
            &self.project,
            &self.environment,
        ] {
            update_field(&mut hasher, field.as_bytes());
        }
        update_field(
            &mut hasher,
            self.organization.as_deref().unwrap_or("\0none").as_bytes(),
        );
        for list in [&self.paths, &self.tags, &self.require, &self.selection] {
            hasher.update((list.len() as u64).to_le_bytes());
            for item in list {
                update_field(&mut hasher, item.as_bytes());
            }
        }
        hasher.update(self.flags.map(u8::from));
        update_field(&mut hasher, spiffe_id.as_bytes());
        hex(&hasher.finalize())
    }
}

fn update_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------------------
// The decision

/// What kind of failure the start ended in, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Infisical could not be reached or did not serve in time (exit 69).
    Unavailable,
    /// The login was refused, the identity is gone or may not read (exit 77).
    Refused,
    /// Anything else: a configuration error, a 404, a bug.
    Other,
}

impl Cause {
    /// The cause of a failure of `class`; `token_only` marks a refusal of the
    /// access token alone (expired, used up), which says nothing about the identity.
    pub fn of(class: ExitClass, token_only: bool) -> Self {
        match class {
            ExitClass::Unavailable => Self::Unavailable,
            ExitClass::Refused if !token_only => Self::Refused,
            _ => Self::Other,
        }
    }
}

/// What to do with the stored set after a failed start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start with it; it is this old.
    Use {
        /// Time since its fetch.
        age: Duration,
    },
    /// Delete every set of this identity: it was refused.
    Purge,
    /// Not an outage: the failure stands.
    NotAnOutage,
    /// The Workload API did not just issue a JWT-SVID (or not one with a SPIFFE ID).
    NoFreshSvid,
    /// No set for this binding and SPIFFE ID.
    NoEntry,
    /// Its fetch is older than `--fallback-max-age`.
    Expired {
        /// Time since its fetch.
        age: Duration,
    },
    /// Its fetch time is in the future: its age is unknown.
    FromTheFuture,
}

impl Decision {
    /// Why a set is not used, for the log (`None` for [`Decision::Use`]).
    pub fn why_not(&self, max_age: Duration) -> Option<String> {
        Some(match self {
            Self::Use { .. } => return None,
            Self::Purge => "the identity was refused; its cached sets are deleted".to_owned(),
            Self::NotAnOutage => "the failure is not an outage".to_owned(),
            Self::NoFreshSvid => {
                "the Workload API did not just issue a JWT-SVID, so nothing vouches for this \
                 workload now"
                    .to_owned()
            }
            Self::NoEntry => {
                "no cached set for this SPIFFE ID, API URL, identity, project, environment, \
                 paths and selection"
                    .to_owned()
            }
            Self::Expired { age } => format!(
                "the cached set is {} old, older than --fallback-max-age {}",
                show_age(*age),
                humantime::format_duration(max_age)
            ),
            Self::FromTheFuture => {
                "the cached set's fetch time is in the future, so its age is unknown".to_owned()
            }
        })
    }
}

/// Whether a stored set may be used after a start that failed with `cause`:
/// `fresh_svid` says whether the Workload API issued a JWT-SVID (with a
/// SPIFFE ID) during this start, `fetched_at` is the fetch time of the set
/// stored for this binding and that SPIFFE ID, if any.
pub fn decide(
    cause: Cause,
    fresh_svid: bool,
    fetched_at: Option<SystemTime>,
    now: SystemTime,
    max_age: Duration,
) -> Decision {
    match cause {
        Cause::Refused => return Decision::Purge,
        Cause::Other => return Decision::NotAnOutage,
        Cause::Unavailable => {}
    }
    if !fresh_svid {
        return Decision::NoFreshSvid;
    }
    let Some(fetched_at) = fetched_at else {
        return Decision::NoEntry;
    };
    let age = match now.duration_since(fetched_at) {
        Ok(age) => age,
        Err(ahead) if ahead.duration() <= CLOCK_SLACK => Duration::ZERO,
        Err(_) => return Decision::FromTheFuture,
    };
    if age >= max_age {
        Decision::Expired { age }
    } else {
        Decision::Use { age }
    }
}

/// An age for the log, in whole seconds.
pub fn show_age(age: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(age.as_secs()))
}

#[cfg(test)]
mod tests;
