//! How `run`, `write` and `--watch` start: log in, fetch and accept the
//! secrets, and keep them in the fallback directory; or, when that fails,
//! apply the fallback's rules (`deliver::fallback`): delete this identity's
//! cached sets after a refusal, start from the cached set during an outage
//! when the Workload API has just vouched for the same SPIFFE ID.

use std::time::SystemTime;

use tokio::time::Instant;

use super::CmdError;
use crate::config::Config;
use crate::deliver::fallback::{self, Cause, Decision, Store};
use crate::deliver::Delivery;
use crate::error::{chain, Failure as _};
use crate::infisical::FetchSpec;
use crate::secrets::SecretSet;
use crate::session::{Session, SessionError};

/// What a start produced: the set to deliver (selected by `--only`/`--map`),
/// the fingerprint of what delivering it gives the program, and the request
/// with its project resolved, or `None` when the set was read from the
/// fallback directory (Infisical is unavailable; the first poll resolves it).
pub(super) struct Started {
    /// The accepted, selected set.
    pub secrets: SecretSet,
    /// What [`Delivery::accept`] says the set delivers; only with
    /// [`Token::Keep`] (a one-shot compares it with nothing).
    pub fingerprint: Option<[u8; 32]>,
    /// The request, its project resolved; `None` for the cached set.
    pub spec: Option<FetchSpec>,
}

/// What a start does with the access token once the fetch is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// Keep it (`--watch`: the supervisor renews it and polls with it).
    Keep,
    /// End the one-shot's session (`run`, `write`): revoke it unless
    /// `--no-revoke`, whether the fetch worked or not, before anything is
    /// delivered or started (so before the program is exec'd, memfds or not).
    RevokeAfterFetch,
}

/// Logs in, resolves the project, fetches and accepts the set, all before
/// `--startup-timeout`, and keeps it for the fallback; on failure, the
/// fallback's rules.
pub(super) async fn start(
    config: &Config,
    delivery: &Delivery,
    session: &mut Session,
    token: Token,
) -> Result<Started, CmdError> {
    let attempt = Instant::now();
    let deadline = attempt + config.startup_timeout;
    let fetched = session.start(&config.fetch, deadline).await;
    let fingerprint = token == Token::Keep;
    if token == Token::RevokeAfterFetch {
        super::end_one_shot(config, session).await;
    }
    match fetched {
        Ok((fetched, spec)) => {
            let (secrets, fingerprint) = delivery.accept(fetched, fingerprint)?;
            remember(delivery, session, &secrets);
            Ok(Started {
                secrets,
                fingerprint,
                spec: Some(spec),
            })
        }
        Err(err) => {
            let (secrets, fingerprint) = recover(delivery, session, err, attempt, fingerprint)?;
            Ok(Started {
                secrets,
                fingerprint,
                spec: None,
            })
        }
    }
}

/// Keeps an accepted set (selected: what is delivered), fetched with the
/// session's last login, in the fallback directory. A failure is logged: it must not stop a program whose
/// secrets did arrive.
pub(super) fn remember(delivery: &Delivery, session: &Session, secrets: &SecretSet) {
    let Some(store) = delivery.fallback() else {
        return;
    };
    let Some(spiffe_id) = session.last_svid().and_then(|s| s.spiffe_id.as_deref()) else {
        tracing::warn!("the JWT-SVID that logged in has no SPIFFE ID; the secrets are not cached");
        return;
    };
    match store.save(spiffe_id, secrets, SystemTime::now()) {
        Ok(()) => tracing::debug!(dir = %store.dir().display(), "secrets cached for an outage"),
        Err(err) => tracing::warn!(
            error = %chain(&err),
            "could not cache the secrets in --fallback-dir; an outage will not find them"
        ),
    }
}

/// After a 304 (the server still has the set with `fingerprint`, fetched
/// earlier by this process): stores that set again with this time, so its age
/// counts from now, if it is the one in the fallback directory.
pub(super) fn reconfirm(delivery: &Delivery, session: &Session, fingerprint: [u8; 32]) {
    let Some(store) = delivery.fallback() else {
        return;
    };
    let Some(spiffe_id) = session.last_svid().and_then(|s| s.spiffe_id.as_deref()) else {
        return;
    };
    if let Ok(Some(entry)) = store.load(spiffe_id) {
        if entry.secrets.fingerprint() == fingerprint {
            remember(delivery, session, &entry.secrets);
        }
    }
}

/// The fallback's cause of `err`.
fn cause(err: &SessionError) -> Cause {
    // An access token refused (expired, used up) says nothing about the identity.
    let token_only = matches!(err, SessionError::Infisical(e) if e.needs_login());
    Cause::of(err.exit_class(), token_only)
}

/// After a refusal (exit 77: the identity was revoked, or its binding
/// changed), deletes every set this API URL and identity has in the fallback
/// directory, whatever SPIFFE ID it was stored for: fail closed.
pub(super) fn forget_if_refused(delivery: &Delivery, err: &SessionError) {
    if let (Some(store), Cause::Refused) = (delivery.fallback(), cause(err)) {
        purge(store);
    }
}

fn purge(store: &Store) {
    match store.purge() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            removed = n,
            "Infisical refused this identity; its cached secrets are deleted"
        ),
        Err(err) => tracing::error!(
            error = %chain(&err),
            "Infisical refused this identity, but its cached secrets could not be deleted"
        ),
    }
}

/// The failed start's way out: the cached set when the rules allow it (with
/// a warning saying so), else `err`.
fn recover(
    delivery: &Delivery,
    session: &Session,
    err: SessionError,
    attempt: Instant,
    fingerprint: bool,
) -> Result<(SecretSet, Option<[u8; 32]>), CmdError> {
    let Some(store) = delivery.fallback() else {
        return Err(err.into());
    };
    let cause = cause(&err);
    // Issued during this start: the agent attests this workload now.
    let fresh = session
        .last_svid()
        .filter(|s| s.at >= attempt)
        .and_then(|s| s.spiffe_id.as_deref());
    let entry = match (cause, fresh) {
        (Cause::Unavailable, Some(spiffe_id)) => match store.load(spiffe_id) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "a cached set cannot be read; it is not used");
                None
            }
        },
        _ => None,
    };
    let decision = fallback::decide(
        cause,
        fresh.is_some(),
        entry.as_ref().map(|e| e.fetched_at),
        SystemTime::now(),
        store.max_age(),
    );
    let Decision::Use { age } = decision else {
        if decision == Decision::Purge {
            purge(store);
        } else if cause == Cause::Unavailable {
            let why = decision.why_not(store.max_age()).unwrap_or_default();
            let others = store.count_for_identity();
            tracing::warn!(
                cached_for_this_identity = others,
                "Infisical is unavailable and the cached secrets cannot be used: {why}"
            );
        }
        return Err(err.into());
    };
    let entry = entry.expect("UNWRAP: decide uses only an entry that exists");
    let accepted = delivery.accept_cached(entry.secrets, fingerprint)?;
    tracing::warn!(
        dir = %store.dir().display(),
        secrets = accepted.0.len(),
        reason = %chain(&err),
        "Infisical is unavailable; starting with cached secrets of age {} (the Workload API \
         has just issued a JWT-SVID for the same SPIFFE ID)",
        fallback::show_age(age)
    );
    Ok(accepted)
}
